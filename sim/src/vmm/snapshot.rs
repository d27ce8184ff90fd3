//! `PUT /snapshot/create` and `PUT /snapshot/load` in the simulator, with the real binary's
//! rules and texts (probed on v1.17.0-dev; see `docs/sim.md`, "Snapshots").
//!
//! The state file is the simulator's own JSON ([`SimSnapshot`]): what a load needs to rebuild
//! the VM (machine config, boot source, drives, interfaces, vsock) and the guest (its boot id,
//! uptime and network identity). The memory file is sparse, of the guest's size: nothing is
//! in it, but its size is checked on load as Firecracker checks it. A real binary's snapshot
//! does not load here, nor the other way round (each reports its deserialisation error).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_proto::firecracker::{
    net::parse_mac, BootSource, Drive, InstanceState, LogLevel, MachineConfig, MemBackendType,
    MemoryBackend, NetworkInterface, SnapshotCreateParams, SnapshotLoadParams, Vsock,
};
use serde::{Deserialize, Serialize};

use super::{open_backing, DriveDev, NetDev, Timer, Vmm, VmmError};
use crate::guest::Guest;
use crate::netstack::{NetConfig, VnetHdr};
use crate::tap::open_tap;

/// The first field of every state file the simulator writes.
pub const STATE_MAGIC: &str = "firecracker-sim snapshot v1";
/// The largest state file read (real ones are ~15 KiB; the simulator's are smaller).
const MAX_STATE: u64 = 1 << 20;

/// Firecracker's text for a state file it cannot decode.
const BAD_STATE: &str = "Failed to get snapshot state from file: Failed to load snapshot state \
                         from file: An error occurred during bitcode serialization: bitcode error";

/// Firecracker's text (after `Failed to restore from snapshot: `) for `clock_realtime` on a
/// snapshot whose KVM clock state has no realtime reference; seen intermittently on the real
/// v1.17.0-dev here (it depends on the host's KVM clock when the snapshot was taken).
pub const CLOCK_REALTIME_MISSING: &str = "Failed to build microVM from snapshot: Failed to \
     restore microVM state: clock_realtime requested but not present in the snapshot state";

/// The simulator's VM state file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimSnapshot {
    /// [`STATE_MAGIC`].
    pub magic: String,
    /// The simulator version that wrote it.
    pub vmm_version: String,
    /// The machine configuration.
    pub machine: MachineConfig,
    /// The boot source (reported by `GET /vm/config` after a load, as the real binary does).
    pub boot_source: Option<BootSource>,
    /// The drives; their files are opened again on load.
    pub drives: Vec<Drive>,
    /// The network interfaces; their TAPs (or the overrides) are opened on load.
    pub nets: Vec<NetworkInterface>,
    /// The vsock device; its socket (or the override) is bound on load.
    pub vsock: Option<Vsock>,
    /// The guest.
    pub guest: GuestImage,
}

/// The guest as the snapshot froze it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GuestImage {
    /// The boot id: a restore continues the same boot.
    pub boot_id: String,
    /// How long it had been up, if it had booted.
    pub uptime_ms: Option<u64>,
    /// Its network identity on the first interface, if its network stack ran.
    pub net: Option<GuestIdentity>,
}

/// A guest's network identity: a restored guest keeps its source's until told otherwise.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GuestIdentity {
    /// MAC, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// IPv4 address.
    pub ip: Ipv4Addr,
    /// Prefix length.
    pub prefix_len: u8,
    /// Default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// DNS server.
    pub dns: Option<Ipv4Addr>,
}

impl GuestIdentity {
    fn of(c: &NetConfig) -> Self {
        let m = c.mac;
        GuestIdentity {
            mac: format!(
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            ),
            ip: c.ip,
            prefix_len: c.prefix_len,
            gateway: c.gateway,
            dns: c.dns,
        }
    }

    /// The network stack configuration with this identity.
    pub fn net_config(&self) -> Result<NetConfig, String> {
        let mac = parse_mac(&self.mac).map_err(|e| e.to_string())?;
        let mut c = NetConfig::new(mac, self.ip, self.prefix_len);
        c.gateway = self.gateway;
        c.dns = self.dns;
        c.vnet_hdr = VnetHdr::V1Len12;
        Ok(c)
    }
}

impl Vmm {
    /// `PUT /snapshot/create`: the VM must be started and paused. Writes the state file,
    /// then the (sparse) memory file, and resets the guest's vsock connections.
    pub(super) fn create_snapshot(
        &mut self,
        p: &SnapshotCreateParams,
    ) -> Result<Option<String>, VmmError> {
        self.post_boot()?;
        if self.state == InstanceState::Running {
            return Err(create_err(
                "Cannot save the microVM state: Operation not allowed: save/restore unavailable \
                 while running",
            ));
        }
        let image = SimSnapshot {
            magic: STATE_MAGIC.into(),
            vmm_version: super::SIM_VERSION.into(),
            machine: self.machine.clone(),
            boot_source: self.boot_source().cloned(),
            drives: self.drives.iter().map(|d| d.config.clone()).collect(),
            nets: self.nets.iter().map(|n| n.config.clone()).collect(),
            vsock: self.vsock.as_ref().map(|(v, _)| v.clone()),
            guest: GuestImage {
                boot_id: self.guest.boot_id().to_owned(),
                uptime_ms: self
                    .guest
                    .uptime()
                    .map(|u| u64::try_from(u.as_millis()).unwrap_or(u64::MAX)),
                net: self.guest_identity.clone().or_else(|| {
                    self.guest_net
                        .as_ref()
                        .map(|g| GuestIdentity::of(g.0.config()))
                }),
            },
        };
        let json = serde_json::to_vec(&image).map_err(|e| create_err(&e.to_string()))?;
        let mut state = create_file(&p.snapshot_path).map_err(|e| {
            create_err(&format!(
                "Cannot perform open on the snapshot backing file: {e}"
            ))
        })?;
        state
            .write_all(&json)
            .map_err(|e| create_err(&format!("Cannot write the microVM state: {e}")))?;
        let mem = create_file(&p.mem_file_path).map_err(|e| {
            create_err(&format!(
                "Cannot perform open on the memory backing file: {e}"
            ))
        })?;
        // Sparse: the simulated guest has no memory contents, only a size.
        mem.set_len(self.machine.mem_size_mib << 20)
            .map_err(|e| create_err(&format!("Cannot write memory file: {e}")))?;
        self.guest.reset_vsock();
        Ok(None)
    }

    /// `PUT /snapshot/load`: only on a fresh process. Parse errors and the freshness rule
    /// leave the process running; any later failure ends it (exit code 1), as in Firecracker.
    pub(super) fn load_snapshot(
        &mut self,
        p: &SnapshotLoadParams,
        mem: &MemoryBackend,
    ) -> Result<Option<String>, VmmError> {
        self.pre_boot()?;
        if self.boot_configured {
            return Err(VmmError::LoadAfterConfig);
        }
        if mem.backend_type == MemBackendType::Uffd {
            return Err(VmmError::NotSimulated {
                what: "Uffd memory backends".into(),
            });
        }
        match self.restore(p, mem) {
            Ok(()) => Ok(None),
            Err(why) => {
                self.log.write(
                    LogLevel::Error,
                    "main",
                    "RunWithApiError error: Failed to build MicroVM: Loading snapshot failed..",
                );
                self.log.write(
                    LogLevel::Error,
                    "main",
                    "Firecracker exiting with error. exit_code=1",
                );
                eprintln!("Error: RunWithApi(BuildMicroVmError(Restore))");
                self.exit.get_or_insert(1);
                Err(VmmError::LoadSnapshot { why })
            }
        }
    }

    /// Rebuilds the VM from the state file; the error is the text after
    /// `Failed to restore from snapshot: `.
    fn restore(&mut self, p: &SnapshotLoadParams, mem: &MemoryBackend) -> Result<(), String> {
        let image = read_state(&p.snapshot_path)?;
        let overrides = p.network_overrides.as_deref().unwrap_or_default();
        for o in overrides {
            if !image.nets.iter().any(|n| n.iface_id == o.iface_id) {
                return Err(
                    "Failed to get snapshot state from file: Unknown Network Device.".into(),
                );
            }
        }
        if p.vsock_override.is_some() && image.vsock.is_none() {
            return Err("Failed to get snapshot state from file: Unknown Vsock Device.".into());
        }
        let mem_file = open_memory(&mem.backend_path, image.machine.mem_size_mib)?;
        let (drives, nets, vsock) = restore_devices(&image, p)?;
        if p.clock_realtime == Some(true) && self.knobs.no_clock_realtime {
            return Err(CLOCK_REALTIME_MISSING.into());
        }
        let uptime = image.guest.uptime_ms.map(Duration::from_millis);
        let guest = Arc::new(Guest::restored(image.guest.boot_id.clone(), uptime));
        self.watch_identity();
        if let Some(bin) = self.knobs.agent_bin.clone() {
            self.start_real_agent(&bin, &guest)
                .map_err(|e| e.to_string())?;
        }
        let mut machine = image.machine;
        if let Some(t) = p.track_dirty_pages.or(p.enable_diff_snapshots) {
            machine.track_dirty_pages = Some(t);
        }
        self.machine = machine;
        self.restored_boot = image.boot_source;
        self.drives = drives;
        self.nets = nets;
        self.vsock = vsock;
        self.mem_file = Some(mem_file);
        self.guest = guest;
        self.guest_identity = image.guest.net;
        let resume = p.resume_vm.unwrap_or(false);
        self.state = if resume {
            InstanceState::Running
        } else {
            InstanceState::Paused
        };
        self.guest.set_paused(!resume);
        let now = Instant::now();
        self.started_at = Some(now);
        if self.guest.booted() {
            self.boot_done();
        } else {
            // Snapshotted while booting: the boot goes on from the start.
            self.timers
                .push((now + self.knobs.boot_delay, Timer::BootDone));
        }
        self.log.info(&format!(
            "Loaded snapshot {} (clock_realtime: {})",
            p.snapshot_path,
            p.clock_realtime.unwrap_or(false)
        ));
        Ok(())
    }
}

/// Opens the memory file and checks it covers guest memory; the error is Firecracker's text.
fn open_memory(path: &str, mem_size_mib: u64) -> Result<File, String> {
    let mem_prefix = "Failed to load guest memory: Error creating guest memory from file:";
    let mem_file =
        File::open(path).map_err(|e| format!("{mem_prefix} Failed to load guest memory: {e}"))?;
    let len = mem_file
        .metadata()
        .map_err(|e| format!("{mem_prefix} Failed to load guest memory: {e}"))?
        .len();
    if len < mem_size_mib << 20 {
        return Err(format!(
            "{mem_prefix} Failed to restore guest memory: Total sum of memory regions \
                 exceeds largest possible file offset"
        ));
    }
    Ok(mem_file)
}

type Devices = (Vec<DriveDev>, Vec<NetDev>, Option<(Vsock, UnixListener)>);

/// Opens the drives' files and the TAPs and binds the vsock socket, with the overrides; the
/// error is Firecracker's text.
fn restore_devices(image: &SimSnapshot, p: &SnapshotLoadParams) -> Result<Devices, String> {
    let overrides = p.network_overrides.as_deref().unwrap_or_default();
    let dev = "Failed to build microVM from snapshot: Failed to restore devices: Error \
                   restoring MMIO devices:";
    let mut drives = Vec::new();
    for d in &image.drives {
        let path = d.path_on_host.clone().unwrap_or_default();
        let file = open_backing(&path, d.is_read_only.unwrap_or(false)).map_err(|e| {
            format!(
                "{dev} Block: Virtio backend error: Error manipulating the backing file: \
                     {e} {path}"
            )
        })?;
        drives.push(DriveDev {
            config: d.clone(),
            _file: file,
        });
    }
    let mut nets = Vec::new();
    for n in &image.nets {
        let mut config = n.clone();
        // Firecracker applies every matching override in turn; the last one wins.
        for o in overrides.iter().filter(|o| o.iface_id == n.iface_id) {
            config.host_dev_name.clone_from(&o.host_dev_name);
        }
        let tap = open_tap(&config.host_dev_name).map_err(|e| {
            format!("{dev} Net: Failed to create a network device: Open tap device failed: {e}")
        })?;
        nets.push(NetDev { config, tap });
    }
    let vsock = match &image.vsock {
        Some(v) => {
            let mut v = v.clone();
            if let Some(o) = &p.vsock_override {
                v.uds_path.clone_from(&o.uds_path);
            }
            let l = UnixListener::bind(&v.uds_path).map_err(|e| {
                format!("{dev} VsockUnixBackend: Error binding to the host-side Unix socket: {e}")
            })?;
            Some((v, l))
        }
        None => None,
    };
    Ok((drives, nets, vsock))
}

fn create_err(why: &str) -> VmmError {
    VmmError::CreateSnapshot { why: why.into() }
}

/// Creates or truncates a snapshot file, as Firecracker does.
fn create_file(path: &str) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

fn read_state(path: &str) -> Result<SimSnapshot, String> {
    let f = File::open(path).map_err(|e| {
        format!("Failed to get snapshot state from file: Failed to open snapshot file: {e}")
    })?;
    let mut raw = Vec::new();
    f.take(MAX_STATE)
        .read_to_end(&mut raw)
        .map_err(|_| BAD_STATE.to_owned())?;
    let image: SimSnapshot = serde_json::from_slice(&raw).map_err(|_| BAD_STATE.to_owned())?;
    if image.magic != STATE_MAGIC {
        return Err(BAD_STATE.into());
    }
    Ok(image)
}
