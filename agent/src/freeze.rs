//! `freeze` and `thaw` ([`hearth_proto::agent::freeze`]): quiesce a filesystem around a
//! snapshot. [`Freezer`] keeps which filesystems this agent froze and arms each freeze's
//! deadline, after which it thaws on its own (hearthd may die between freeze and thaw, and a
//! root filesystem frozen for good hangs every writer in the guest).
//!
//! The backend is chosen at launch and passed in, never guessed: [`GuestFreeze`] syncs and
//! freezes for real (`FIFREEZE`/`FITHAW`); [`SimFreezeFile`] (`--sim-freeze-file PATH`, for an
//! agent the simulator runs on the host) only appends each request to a file, so the host's
//! own root filesystem is never frozen.

use std::collections::HashMap;
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hearth_proto::agent::{codes, ErrorBody, FreezeRequest, ThawReply, ThawRequest};

/// Why a filesystem is thawed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThawCause {
    /// A `thaw` request.
    Request,
    /// The freeze's deadline passed without one.
    Deadline,
}

impl ThawCause {
    /// The word the simulator's record uses.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ThawCause::Request => "request",
            ThawCause::Deadline => "deadline",
        }
    }
}

/// Freezes and thaws filesystems.
pub trait FreezeBackend: Send + Sync + std::fmt::Debug {
    /// Flushes and freezes the filesystem holding `path` (not frozen by this agent now).
    ///
    /// # Errors
    ///
    /// `freeze_failed` (or `not_found`) saying why; nothing stays frozen.
    fn freeze(&self, path: &Path, thaw_after_ms: u64) -> Result<(), ErrorBody>;

    /// Thaws the filesystem holding `path`; answers whether it was frozen.
    ///
    /// # Errors
    ///
    /// `freeze_failed` (or `not_found`) saying why.
    fn thaw(&self, path: &Path, cause: ThawCause) -> Result<bool, ErrorBody>;
}

fn failed(what: &str, path: &Path, e: &std::io::Error) -> ErrorBody {
    let code = if e.kind() == std::io::ErrorKind::NotFound {
        codes::NOT_FOUND
    } else {
        codes::FREEZE_FAILED
    };
    ErrorBody::new(code, format!("{what} {}: {e}", path.display()))
}

/// `_IOWR('X', 119, int)`.
const FIFREEZE: libc::c_ulong = 0xC004_5877;
/// `_IOWR('X', 120, int)`.
const FITHAW: libc::c_ulong = 0xC004_5878;

/// The real guest: `syncfs` then `FIFREEZE`; `FITHAW` (needs `CAP_SYS_ADMIN`).
#[derive(Debug, Default, Clone, Copy)]
pub struct GuestFreeze;

fn open_dir_or_file(path: &Path) -> std::io::Result<std::fs::File> {
    // O_RDONLY works for directories and files alike; the ioctls act on the superblock.
    std::fs::File::open(path)
}

impl FreezeBackend for GuestFreeze {
    fn freeze(&self, path: &Path, _thaw_after_ms: u64) -> Result<(), ErrorBody> {
        let f = open_dir_or_file(path).map_err(|e| failed("open", path, &e))?;
        // FIFREEZE syncs too, but an explicit syncfs first keeps the frozen window short and
        // reports a write-back error as such.
        // SAFETY: syncfs and the ioctl take a valid open fd; FIFREEZE ignores its argument.
        if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
            return Err(failed("sync", path, &std::io::Error::last_os_error()));
        }
        // SAFETY: as above.
        if unsafe { libc::ioctl(f.as_raw_fd(), FIFREEZE, 0) } != 0 {
            return Err(failed("freeze", path, &std::io::Error::last_os_error()));
        }
        Ok(())
    }

    fn thaw(&self, path: &Path, _cause: ThawCause) -> Result<bool, ErrorBody> {
        let f = open_dir_or_file(path).map_err(|e| failed("open", path, &e))?;
        // SAFETY: a valid open fd; FITHAW ignores its argument.
        if unsafe { libc::ioctl(f.as_raw_fd(), FITHAW, 0) } == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        // EINVAL: not frozen, i.e. thawed already.
        if e.raw_os_error() == Some(libc::EINVAL) {
            return Ok(false);
        }
        Err(failed("thaw", path, &e))
    }
}

/// The simulator's backend: appends `{"op":"freeze","path":..,"thaw_after_ms":..}` and
/// `{"op":"thaw","path":..,"cause":"request"|"deadline"}` lines to a file; freezes nothing,
/// but remembers what it would have frozen, as a kernel would.
#[derive(Debug)]
pub struct SimFreezeFile {
    path: PathBuf,
    frozen: Mutex<std::collections::HashSet<PathBuf>>,
}

impl SimFreezeFile {
    /// A backend recording to `path` (created when missing).
    #[must_use]
    pub fn new(path: PathBuf) -> Self {
        SimFreezeFile {
            path,
            frozen: Mutex::default(),
        }
    }

    fn frozen(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<PathBuf>> {
        self.frozen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, line: &serde_json::Value) -> Result<(), ErrorBody> {
        let mut text = line.to_string();
        text.push('\n');
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| failed("record to", &self.path, &e))
    }
}

impl FreezeBackend for SimFreezeFile {
    fn freeze(&self, path: &Path, thaw_after_ms: u64) -> Result<(), ErrorBody> {
        self.record(&serde_json::json!({
            "op": "freeze",
            "path": path.to_string_lossy(),
            "thaw_after_ms": thaw_after_ms,
        }))?;
        self.frozen().insert(path.to_path_buf());
        Ok(())
    }

    fn thaw(&self, path: &Path, cause: ThawCause) -> Result<bool, ErrorBody> {
        self.record(&serde_json::json!({
            "op": "thaw",
            "path": path.to_string_lossy(),
            "cause": cause.as_str(),
        }))?;
        Ok(self.frozen().remove(path))
    }
}

/// One filesystem this agent froze: the freeze's number (a deadline thaws only its own).
#[derive(Debug)]
struct Frozen {
    generation: u64,
    path: PathBuf,
}

#[derive(Debug, Default)]
struct State {
    /// Frozen filesystems by device number.
    frozen: HashMap<u64, Frozen>,
    next_generation: u64,
}

/// The filesystems this agent froze, each with its deadline; see the module docs.
#[derive(Debug, Clone)]
pub struct Freezer {
    backend: Arc<dyn FreezeBackend>,
    state: Arc<Mutex<State>>,
}

impl Default for Freezer {
    fn default() -> Self {
        Self::new(Box::new(GuestFreeze))
    }
}

fn device_of(path: &Path) -> Result<u64, ErrorBody> {
    std::fs::metadata(path)
        .map(|m| m.dev())
        .map_err(|e| failed("stat", path, &e))
}

impl Freezer {
    /// A freezer over `backend`, with nothing frozen.
    #[must_use]
    pub fn new(backend: Box<dyn FreezeBackend>) -> Self {
        Freezer {
            backend: Arc::from(backend),
            state: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `freeze`: sync and freeze `req.path`'s filesystem, and arm its deadline. A filesystem
    /// this agent froze already stays frozen with the new deadline (it cannot be synced
    /// while frozen, and nothing was written to it since).
    ///
    /// # Errors
    ///
    /// The backend's error; nothing is frozen then.
    pub fn freeze(&self, req: &FreezeRequest) -> Result<(), ErrorBody> {
        let path = Path::new(&req.path);
        let dev = device_of(path)?;
        let generation = {
            let mut st = self.lock();
            if !st.frozen.contains_key(&dev) {
                self.backend.freeze(path, req.thaw_after_ms)?;
            }
            st.next_generation += 1;
            let generation = st.next_generation;
            st.frozen.insert(
                dev,
                Frozen {
                    generation,
                    path: path.to_path_buf(),
                },
            );
            generation
        };
        let me = self.clone();
        let after = Duration::from_millis(req.thaw_after_ms);
        let spawned = std::thread::Builder::new()
            .name("auto-thaw".into())
            .spawn(move || {
                std::thread::sleep(after);
                me.deadline(dev, generation);
            });
        if let Err(e) = spawned {
            // No deadline, no freeze: undo it rather than risk a guest frozen for good.
            let _ = self.thaw_dev(dev, ThawCause::Request);
            return Err(ErrorBody::new(
                codes::FREEZE_FAILED,
                format!("cannot arm the thaw deadline: {e}"),
            ));
        }
        Ok(())
    }

    /// `thaw`: thaws `req.path`'s filesystem. One this agent did not freeze is thawed too
    /// (e.g. frozen by an agent that died); one that is not frozen is success.
    ///
    /// # Errors
    ///
    /// The backend's error.
    pub fn thaw(&self, req: &ThawRequest) -> Result<ThawReply, ErrorBody> {
        let path = Path::new(&req.path);
        let dev = device_of(path)?;
        let ours = self.thaw_dev(dev, ThawCause::Request)?;
        if let Some(was_frozen) = ours {
            return Ok(ThawReply { was_frozen });
        }
        // Not frozen by us: the simulator's file says nothing was; the guest's kernel knows.
        let _st = self.lock();
        let was_frozen = self.backend.thaw(path, ThawCause::Request)?;
        Ok(ThawReply { was_frozen })
    }

    /// Whether this agent holds a freeze of `path`'s filesystem now.
    #[must_use]
    pub fn is_frozen(&self, path: &Path) -> bool {
        device_of(path).is_ok_and(|dev| self.lock().frozen.contains_key(&dev))
    }

    /// Thaws `dev` if this agent froze it: `Some(was_frozen)`, or `None` when it did not.
    fn thaw_dev(&self, dev: u64, cause: ThawCause) -> Result<Option<bool>, ErrorBody> {
        let mut st = self.lock();
        let Some(f) = st.frozen.get(&dev) else {
            return Ok(None);
        };
        let was = self.backend.thaw(&f.path, cause)?;
        st.frozen.remove(&dev);
        Ok(Some(was))
    }

    /// A deadline passed: thaw `dev` if freeze `generation` still holds it.
    fn deadline(&self, dev: u64, generation: u64) {
        let mut st = self.lock();
        let Some(f) = st.frozen.get(&dev) else { return };
        if f.generation != generation {
            return;
        }
        match self.backend.thaw(&f.path, ThawCause::Deadline) {
            Ok(_) => {
                eprintln!(
                    "hearth-agent: thawed {} on its own: no thaw came before the deadline",
                    f.path.display()
                );
                st.frozen.remove(&dev);
            }
            Err(e) => eprintln!(
                "hearth-agent: the deadline could not thaw {}: {}",
                f.path.display(),
                e.message
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn sim() -> (tempfile::TempDir, PathBuf, Freezer) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("freeze.log");
        let f = Freezer::new(Box::new(SimFreezeFile::new(file.clone())));
        (dir, file, f)
    }

    #[test]
    fn the_sim_backend_records_freeze_and_thaw_and_freezes_nothing() {
        let (dir, file, f) = sim();
        let p = dir.path().to_string_lossy().into_owned();
        f.freeze(&FreezeRequest {
            path: p.clone(),
            thaw_after_ms: 60_000,
        })
        .unwrap();
        assert!(f.is_frozen(dir.path()));
        // The host's filesystem is still writable: nothing was frozen for real.
        std::fs::write(dir.path().join("x"), b"still writable").unwrap();
        let r = f.thaw(&ThawRequest { path: p.clone() }).unwrap();
        assert!(r.was_frozen);
        assert!(!f.is_frozen(dir.path()));
        let rec = records(&file);
        assert_eq!(rec.len(), 2, "{rec:?}");
        assert_eq!(rec[0]["op"], "freeze");
        assert_eq!(rec[0]["path"], p.as_str());
        assert_eq!(rec[0]["thaw_after_ms"], 60_000);
        assert_eq!(rec[1]["op"], "thaw");
        assert_eq!(rec[1]["cause"], "request");
    }

    #[test]
    fn the_deadline_thaws_only_its_own_freeze() {
        let (dir, file, f) = sim();
        let p = dir.path().to_string_lossy().into_owned();
        f.freeze(&FreezeRequest {
            path: p.clone(),
            thaw_after_ms: 50,
        })
        .unwrap();
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while f.is_frozen(dir.path()) && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            !f.is_frozen(dir.path()),
            "the deadline did not thaw within 5 s"
        );
        let rec = records(&file);
        assert_eq!(rec.len(), 2, "{rec:?}");
        assert_eq!(rec[1]["cause"], "deadline");
        // A thaw after the deadline is still success, and says nothing was frozen.
        assert!(!f.thaw(&ThawRequest { path: p.clone() }).unwrap().was_frozen);
        // Freeze, thaw, freeze again: the first freeze's deadline leaves the second alone.
        f.freeze(&FreezeRequest {
            path: p.clone(),
            thaw_after_ms: 100,
        })
        .unwrap();
        f.thaw(&ThawRequest { path: p.clone() }).unwrap();
        f.freeze(&FreezeRequest {
            path: p.clone(),
            thaw_after_ms: 60_000,
        })
        .unwrap();
        // A negative check: no state shows that the stale 100 ms timer has run, so wait past
        // it (with room for a loaded machine) and see the new freeze still in place.
        std::thread::sleep(Duration::from_millis(400));
        assert!(
            f.is_frozen(dir.path()),
            "an old deadline thawed a new freeze"
        );
        f.thaw(&ThawRequest { path: p }).unwrap();
    }

    #[test]
    fn a_missing_path_is_not_found_and_records_nothing() {
        let (dir, file, f) = sim();
        let e = f
            .freeze(&FreezeRequest {
                path: dir.path().join("nope").to_string_lossy().into_owned(),
                thaw_after_ms: 100,
            })
            .unwrap_err();
        assert_eq!(e.code, codes::NOT_FOUND);
        assert!(e.message.contains("nope"), "{}", e.message);
        assert!(records(&file).is_empty());
    }
}
