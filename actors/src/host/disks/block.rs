//! Block-device effects of the `dm` backend behind [`BlockOps`]: loop devices (`loopdev-3`,
//! `LOOP_CTL_GET_FREE` + `LOOP_CONFIGURE`) and device-mapper (`devicemapper`, the dm ioctls on
//! `/dev/mapper/control`), never `losetup`/`dmsetup`. [`LinuxBlock`] is the real one; the
//! recording fake is [`super::fake::FakeBlock`].

use std::fs;
use std::path::{Path, PathBuf};

use devicemapper::{DevId, DmFlags, DmName, DmOptions, DM};
use loopdev::{LoopControl, LoopDevice};

use super::table::{DevNum, TargetLine, DM_PREFIX};
use super::DisksError;

/// A loop device attached to a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopDev {
    /// Its node, `/dev/loopN`.
    pub path: PathBuf,
    /// Its device number.
    pub dev: DevNum,
    /// Attached read-only.
    pub read_only: bool,
}

/// The kernel block-device operations the `dm` backend needs.
pub trait BlockOps: Send {
    /// Attaches `file` to a free loop device, read-only or not.
    fn attach_loop(&mut self, file: &Path, read_only: bool) -> Result<LoopDev, DisksError>;

    /// Detaches the loop device `dev`.
    fn detach_loop(&mut self, dev: &LoopDev) -> Result<(), DisksError>;

    /// The loop devices whose backing file is `file` (found in sysfs, so also those attached
    /// before a daemon restart).
    fn find_loops(&mut self, file: &Path) -> Result<Vec<LoopDev>, DisksError>;

    /// Creates the dm device `name` with `table` and activates it; returns its device number.
    fn dm_create(&mut self, name: &str, table: &[TargetLine]) -> Result<DevNum, DisksError>;

    /// Removes the dm device `name` (retrying while it is busy); `false` if it did not exist.
    fn dm_remove(&mut self, name: &str) -> Result<bool, DisksError>;

    /// The dm devices whose name starts with hearth's prefix (`hearth-`), with their numbers.
    fn dm_list(&mut self) -> Result<Vec<(String, DevNum)>, DisksError>;
}

/// Checks that device-mapper can be used: `/dev/mapper/control` opens and answers the version
/// ioctl. The error names what is missing.
pub fn probe_dm() -> Result<(), String> {
    let dm = DM::new().map_err(|e| {
        let in_kernel = fs::read_to_string("/proc/misc").is_ok_and(|m| m.contains("device-mapper"));
        if in_kernel {
            format!("cannot open /dev/mapper/control: {e}")
        } else {
            format!(
                "the kernel has no device-mapper (CONFIG_BLK_DEV_DM; no \"device-mapper\" in \
                 /proc/misc) and /dev/mapper/control cannot be opened: {e}"
            )
        }
    })?;
    dm.version()
        .map(|_| ())
        .map_err(|e| format!("device-mapper version ioctl failed: {e}"))
}

/// Real loop and device-mapper operations.
#[derive(Default)]
pub struct LinuxBlock {
    dm: Option<DM>,
}

impl std::fmt::Debug for LinuxBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxBlock")
            .field("dm_open", &self.dm.is_some())
            .finish()
    }
}

impl LinuxBlock {
    /// Opens nothing yet: `/dev/mapper/control` is opened on first use.
    pub fn new() -> Self {
        LinuxBlock { dm: None }
    }

    fn dm(&mut self) -> Result<&DM, DisksError> {
        match &mut self.dm {
            Some(dm) => Ok(dm),
            slot @ None => Ok(
                slot.insert(DM::new().map_err(|e| DisksError::DmUnavailable {
                    reason: e.to_string(),
                })?),
            ),
        }
    }
}

fn dm_err(op: &'static str, name: &str) -> impl FnOnce(devicemapper::DmError) -> DisksError {
    let name = name.to_string();
    move |e| DisksError::Dm {
        op,
        name,
        message: e.to_string(),
    }
}

fn dm_name<'a>(op: &'static str, name: &'a str) -> Result<&'a DmName, DisksError> {
    DmName::new(name).map_err(dm_err(op, name))
}

fn loop_num(dev: &LoopDevice, path: &Path) -> Result<DevNum, DisksError> {
    let err = |source| DisksError::Loop {
        op: "query",
        path: path.into(),
        source,
    };
    Ok(DevNum {
        major: dev.major().map_err(err)?,
        minor: dev.minor().map_err(err)?,
    })
}

impl BlockOps for LinuxBlock {
    fn attach_loop(&mut self, file: &Path, read_only: bool) -> Result<LoopDev, DisksError> {
        let err = |op| {
            let path = file.to_path_buf();
            move |source| DisksError::Loop { op, path, source }
        };
        let control = LoopControl::open().map_err(err("open /dev/loop-control for"))?;
        // Another process may take the free device between LOOP_CTL_GET_FREE and LOOP_SET_FD
        // (EBUSY): ask for another one a few times.
        let mut attempts = 0;
        let dev = loop {
            let dev = control.next_free().map_err(err("find a free"))?;
            match dev.with().read_only(read_only).attach(file) {
                Ok(()) => break dev,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempts < 5 => attempts += 1,
                Err(e) => return Err(err("attach")(e)),
            }
        };
        let path = dev.path().unwrap_or_default();
        match loop_num(&dev, file) {
            Ok(num) => Ok(LoopDev {
                path,
                dev: num,
                read_only,
            }),
            Err(e) => {
                let _ = dev.detach();
                Err(e)
            }
        }
    }

    fn detach_loop(&mut self, dev: &LoopDev) -> Result<(), DisksError> {
        let err = |source| DisksError::Loop {
            op: "detach",
            path: dev.path.clone(),
            source,
        };
        LoopDevice::open(&dev.path)
            .map_err(err)?
            .detach()
            .map_err(err)
    }

    fn find_loops(&mut self, file: &Path) -> Result<Vec<LoopDev>, DisksError> {
        let want = fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir("/sys/block") else {
            return Ok(out);
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("loop") {
                continue;
            }
            let sys = entry.path();
            let Ok(backing) = fs::read_to_string(sys.join("loop/backing_file")) else {
                continue;
            };
            if Path::new(backing.trim_end()) != want {
                continue;
            }
            let Some(dev) = fs::read_to_string(sys.join("dev"))
                .ok()
                .and_then(|s| parse_dev(s.trim()))
            else {
                continue;
            };
            let read_only = fs::read_to_string(sys.join("ro")).is_ok_and(|ro| ro.trim() == "1");
            out.push(LoopDev {
                path: Path::new("/dev").join(&name),
                dev,
                read_only,
            });
        }
        Ok(out)
    }

    fn dm_create(&mut self, name: &str, table: &[TargetLine]) -> Result<DevNum, DisksError> {
        let dm = self.dm()?;
        let dm_name = dm_name("create", name)?;
        let id = DevId::Name(dm_name);
        dm.device_create(dm_name, None, DmOptions::default())
            .map_err(dm_err("create", name))?;
        let targets: Vec<(u64, u64, String, String)> = table
            .iter()
            .map(|l| (l.start, l.length, l.target.clone(), l.params.clone()))
            .collect();
        let activated = dm
            .table_load(&id, &targets, DmOptions::default())
            .map_err(dm_err("load table of", name))
            .and_then(|_| {
                // Resuming (suspend without DM_SUSPEND) makes the loaded table live.
                dm.device_suspend(&id, DmOptions::default())
                    .map_err(dm_err("resume", name))
            });
        match activated {
            Ok(info) => Ok(DevNum {
                major: info.device().major,
                minor: info.device().minor,
            }),
            Err(e) => {
                let _ = dm.device_remove(&id, DmOptions::default());
                Err(e)
            }
        }
    }

    fn dm_remove(&mut self, name: &str) -> Result<bool, DisksError> {
        let dm = self.dm()?;
        let id = DevId::Name(dm_name("remove", name)?);
        if dm.device_info(&id).is_err() {
            return Ok(false);
        }
        // `device_remove` itself retries while the device is busy (EBUSY).
        dm.device_remove(&id, DmOptions::default().set_flags(DmFlags::empty()))
            .map(|_| true)
            .map_err(dm_err("remove", name))
    }

    fn dm_list(&mut self) -> Result<Vec<(String, DevNum)>, DisksError> {
        let dm = self.dm()?;
        Ok(dm
            .list_devices()
            .map_err(dm_err("list", "*"))?
            .into_iter()
            .map(|(name, dev, _)| {
                let num = DevNum {
                    major: dev.major,
                    minor: dev.minor,
                };
                (name.to_string(), num)
            })
            .filter(|(n, _)| n.starts_with(DM_PREFIX))
            .collect())
    }
}

/// Parses a sysfs `dev` file (`major:minor`).
pub fn parse_dev(s: &str) -> Option<DevNum> {
    let (major, minor) = s.split_once(':')?;
    Some(DevNum {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
    })
}

/// The device node path of a dm device: `/dev/dm-<minor>`, which devtmpfs creates without
/// udev (hearth does not rely on udev's `/dev/mapper/<name>` links).
pub fn dm_node(dev: DevNum) -> PathBuf {
    PathBuf::from(format!("/dev/dm-{}", dev.minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sysfs_dev() {
        assert_eq!(parse_dev("7:3"), Some(DevNum { major: 7, minor: 3 }));
        assert_eq!(
            parse_dev("253:10"),
            Some(DevNum {
                major: 253,
                minor: 10
            })
        );
        assert_eq!(parse_dev("7"), None);
        assert_eq!(parse_dev("a:b"), None);
    }

    #[test]
    fn dm_node_uses_devtmpfs_name() {
        assert_eq!(
            dm_node(DevNum {
                major: 253,
                minor: 4
            }),
            Path::new("/dev/dm-4")
        );
    }
}
