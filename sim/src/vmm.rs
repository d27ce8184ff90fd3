//! The simulated VMM: the state behind the API, owned by one thread (like Firecracker's VMM
//! thread) that handles one [`Action`] at a time and fires timers (guest boot, reboot, crash).
//! Pre-boot and post-boot rules, file opening at PUT time, TAP and vsock setup, and the error
//! texts follow `firecracker/NOTES.md`.

use std::fs::{File, OpenOptions};
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::Instant;

use hearth_proto::firecracker::{
    net::parse_mac, ActionType, BootSource, Drive, FirecrackerVersion, HugePages, InstanceInfo,
    InstanceState, Logger, MachineConfig, Metrics, NetworkInterface, PartialDrive,
    PartialNetworkInterface, Vm, VmPauseState, Vsock, DEFAULT_BOOT_ARGS,
};

use crate::api::Action;
use crate::guest::{self, Guest};
use crate::http::Response;
use crate::knobs::Knobs;
use crate::log::{Log, MetricsSink};
use crate::netstack::{GuestStack, NetConfig, VnetHdr};
use crate::real_agent::RealAgent;
use crate::tap::{open_tap, Tap};

mod announce;
mod error;
pub mod identity;
pub mod snapshot;
mod vm_config;
pub use error::VmmError;

/// The version the simulator reports (`GET /version`, `GET /`, `--version`).
pub const SIM_VERSION: &str = "1.17.0-sim";

/// The file beside the API socket where a real agent (`FC_SIM_AGENT_BIN`) records the
/// `freeze`/`thaw` requests it gets (`--sim-freeze-file`): on the host it freezes nothing.
pub const SIM_FREEZE_FILE: &str = "sim-freeze.log";

/// Something scheduled on the VMM thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// The guest has booted: agent up, vsock served.
    BootDone,
    /// The guest rebooted after Ctrl+Alt+Del (`reboot=k`): exit 0.
    Reboot,
    /// The VMM dies (`FC_SIM_CRASH_AFTER_MS`).
    Crash,
    /// Check the guest's identity file (`FC_SIM_IDENTITY_FILE`).
    IdentityPoll,
}

/// Startup options from the command line that the VMM needs.
#[derive(Clone, Debug, Default)]
pub struct VmmOptions {
    /// `--id`.
    pub id: String,
    /// `--api-sock`.
    pub api_sock: String,
    /// `--boot-timer`.
    pub boot_timer: bool,
    /// `--enable-pci`.
    pub enable_pci: bool,
}

/// A configured drive and its open backing file.
#[derive(Debug)]
struct DriveDev {
    config: Drive,
    _file: File,
}

/// A configured network interface and its attached TAP.
#[derive(Debug)]
struct NetDev {
    config: NetworkInterface,
    tap: Tap,
}

/// The running guest network stack (`FC_SIM_NETSTACK=1`), kept alive with the VMM.
struct GuestNet(Arc<GuestStack>);

impl std::fmt::Debug for GuestNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GuestNet({})", self.0.config().ip)
    }
}

/// The VMM state.
#[derive(Debug)]
pub struct Vmm {
    opts: VmmOptions,
    knobs: Knobs,
    state: InstanceState,
    machine: MachineConfig,
    boot: Option<(BootSource, File, Option<File>)>,
    drives: Vec<DriveDev>,
    nets: Vec<NetDev>,
    vsock: Option<(Vsock, UnixListener)>,
    logger: Option<Logger>,
    metrics_cfg: Option<Metrics>,
    metrics: Option<MetricsSink>,
    /// The log; `main` configures it from the command line.
    pub log: Log,
    guest: Arc<Guest>,
    guest_net: Option<GuestNet>,
    /// The real agent (`FC_SIM_AGENT_BIN`), from `InstanceStart` on.
    real_agent: Option<RealAgent>,
    started_at: Option<Instant>,
    ctrl_alt_del_pending: bool,
    /// A boot resource (machine config, boot source, drive, interface, vsock) was set: a
    /// snapshot can no longer be loaded.
    boot_configured: bool,
    /// The boot source a loaded snapshot recorded (its kernel is not opened again).
    restored_boot: Option<BootSource>,
    /// The guest memory file of a loaded snapshot, held open as Firecracker maps it.
    mem_file: Option<File>,
    /// The guest's network identity when it is not the kernel command line's (a restored
    /// guest keeps its source's).
    guest_identity: Option<snapshot::GuestIdentity>,
    /// The identity file's content last acted on.
    identity_seen: Option<Vec<u8>>,
    /// New identity file content and when it was first seen, while
    /// `FC_SIM_IDENTITY_DELAY_MS` holds it back.
    identity_pending: Option<(Vec<u8>, Instant)>,
    timers: Vec<(Instant, Timer)>,
    api_requests: u64,
    exit: Option<i32>,
}

fn filled(m: MachineConfig) -> MachineConfig {
    MachineConfig {
        smt: Some(m.smt.unwrap_or(false)),
        track_dirty_pages: Some(m.track_dirty_pages.unwrap_or(false)),
        huge_pages: Some(m.huge_pages.unwrap_or(HugePages::None)),
        ..m
    }
}

impl Vmm {
    /// A fresh, not started VMM.
    pub fn new(opts: VmmOptions, knobs: Knobs) -> Self {
        let log = Log::new(&opts.id);
        Self {
            opts,
            knobs,
            state: InstanceState::NotStarted,
            machine: filled(MachineConfig::default()),
            boot: None,
            drives: Vec::new(),
            nets: Vec::new(),
            vsock: None,
            logger: None,
            metrics_cfg: None,
            metrics: None,
            log,
            guest: Arc::new(Guest::new()),
            guest_net: None,
            real_agent: None,
            started_at: None,
            ctrl_alt_del_pending: false,
            boot_configured: false,
            restored_boot: None,
            mem_file: None,
            guest_identity: None,
            identity_seen: None,
            identity_pending: None,
            timers: Vec::new(),
            api_requests: 0,
            exit: None,
        }
    }

    /// The shared guest state.
    pub fn guest(&self) -> Arc<Guest> {
        self.guest.clone()
    }

    /// The exit code, once the VMM has stopped.
    pub fn exit_code(&self) -> Option<i32> {
        self.exit
    }

    /// When the next timer fires.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.iter().map(|(t, _)| *t).min()
    }

    /// The kernel command line the guest sees: `boot_args` (or the default), with `pci=off`
    /// added unless `--enable-pci`.
    pub fn kernel_cmdline(&self) -> Option<String> {
        let args = self
            .boot_source()
            .map(|b| b.boot_args.as_deref().unwrap_or(DEFAULT_BOOT_ARGS))?;
        Some(
            if self.opts.enable_pci || args.split(' ').any(|a| a == "pci=off") {
                args.to_owned()
            } else {
                format!("{args} pci=off")
            },
        )
    }

    /// The boot source: the one configured, or the one a loaded snapshot recorded.
    fn boot_source(&self) -> Option<&BootSource> {
        self.boot
            .as_ref()
            .map(|(b, _, _)| b)
            .or(self.restored_boot.as_ref())
    }

    /// The TAP file descriptors and names, in configuration order (for a guest netstack).
    pub fn taps(&self) -> impl Iterator<Item = &Tap> {
        self.nets.iter().map(|n| &n.tap)
    }

    /// Handles one API action; the response is what Firecracker would answer.
    pub fn handle(&mut self, action: Action) -> Response {
        self.api_requests += 1;
        let boot_resource = matches!(
            action,
            Action::PutMachineConfig(_)
                | Action::PatchMachineConfig(_)
                | Action::PutBootSource(_)
                | Action::PutDrive(_)
                | Action::PutNet(_)
                | Action::PutVsock(_)
        );
        let result = self.dispatch(action);
        if boot_resource && result.is_ok() {
            self.boot_configured = true;
        }
        match result {
            Ok(None) => Response::no_content(),
            Ok(Some(body)) => Response::ok(body),
            Err(err) => {
                let msg = err.to_string();
                self.log.error(&format!(
                    "Received Error. Status code: 400 Bad Request. Message: {msg}"
                ));
                Response::fault(400, &msg)
            }
        }
    }

    fn started(&self) -> bool {
        self.state != InstanceState::NotStarted
    }

    fn pre_boot(&self) -> Result<(), VmmError> {
        if self.started() {
            return Err(VmmError::NotSupportedPostBoot);
        }
        Ok(())
    }

    fn post_boot(&self) -> Result<(), VmmError> {
        if !self.started() {
            return Err(VmmError::NotSupportedPreBoot);
        }
        Ok(())
    }

    /// `PATCH /drives/{id}`: after boot, a new backing file or rate limiter.
    #[expect(
        clippy::used_underscore_binding,
        reason = "`_file` only holds the backing file open; replacing it is its one use"
    )]
    fn patch_drive(&mut self, p: PartialDrive) -> Result<Option<String>, VmmError> {
        self.post_boot()?;
        p.validate()
            .map_err(|source| VmmError::DriveConfig { source })?;
        let idx = self
            .drives
            .iter()
            .position(|d| d.config.drive_id == p.drive_id)
            .ok_or_else(|| VmmError::DriveNotFound {
                drive_id: p.drive_id.clone(),
            })?;
        if let Some(path) = &p.path_on_host {
            let read_only = self.drives[idx].config.is_read_only.unwrap_or(false);
            let file =
                open_backing(path, read_only).map_err(|source| VmmError::DrivePatchFile {
                    path: path.clone(),
                    source,
                })?;
            self.drives[idx]._file = file;
            self.drives[idx].config.path_on_host = Some(path.clone());
        }
        if p.rate_limiter.is_some() {
            self.drives[idx].config.rate_limiter = p.rate_limiter;
        }
        Ok(None)
    }

    /// `PATCH /network-interfaces/{id}`: after boot, new rate limiters.
    fn patch_net(&mut self, p: PartialNetworkInterface) -> Result<Option<String>, VmmError> {
        self.post_boot()?;
        p.validate()
            .map_err(|source| VmmError::NetConfig { source })?;
        let dev = self
            .nets
            .iter_mut()
            .find(|d| d.config.iface_id == p.iface_id)
            .ok_or_else(|| VmmError::NetNotFound {
                iface_id: p.iface_id.clone(),
            })?;
        if p.rx_rate_limiter.is_some() {
            dev.config.rx_rate_limiter = p.rx_rate_limiter;
        }
        if p.tx_rate_limiter.is_some() {
            dev.config.tx_rate_limiter = p.tx_rate_limiter;
        }
        Ok(None)
    }

    /// `PATCH /vm`: pause or resume the guest.
    fn patch_vm(&mut self, vm: Vm) -> Result<Option<String>, VmmError> {
        self.post_boot()?;
        match vm.state {
            VmPauseState::Paused => {
                self.state = InstanceState::Paused;
                self.guest.set_paused(true);
            }
            VmPauseState::Resumed => {
                self.state = InstanceState::Running;
                self.guest.set_paused(false);
                self.maybe_schedule_reboot();
            }
        }
        if let Some(net) = &self.guest_net {
            net.0.set_frozen(self.guest.paused());
        }
        Ok(None)
    }

    /// `PUT /logger`: before boot, where and what to log.
    fn put_logger(&mut self, l: Logger) -> Result<Option<String>, VmmError> {
        self.pre_boot()?;
        self.log
            .configure(l.log_path.as_deref(), l.level, l.show_level)
            .map_err(|source| VmmError::LoggerFile { source })?;
        self.logger = Some(l);
        Ok(None)
    }

    fn dispatch(&mut self, action: Action) -> Result<Option<String>, VmmError> {
        let json = |v: &dyn erased::Ser| Ok(Some(v.to_json()));
        match action {
            Action::GetInstanceInfo => json(&InstanceInfo {
                app_name: "Firecracker".into(),
                id: self.opts.id.clone(),
                state: self.state,
                vmm_version: SIM_VERSION.into(),
            }),
            Action::GetVersion => json(&FirecrackerVersion {
                firecracker_version: SIM_VERSION.into(),
            }),
            Action::GetMachineConfig => json(&self.machine),
            Action::GetVmConfig => json(&vm_config::FullVmConfig::new(
                self.boot_source(),
                self.drives.iter().map(|d| &d.config),
                &self.machine,
                self.nets.iter().map(|n| &n.config),
                self.vsock.as_ref().map(|(v, _)| v),
            )),
            Action::PutMachineConfig(m) => {
                self.pre_boot()?;
                m.validate()
                    .map_err(|source| VmmError::MachineConfig { source })?;
                self.machine = filled(m);
                Ok(None)
            }
            Action::PatchMachineConfig(u) => {
                self.pre_boot()?;
                let next = self.machine.apply(&u);
                next.validate()
                    .map_err(|source| VmmError::MachineConfig { source })?;
                self.machine = filled(next);
                Ok(None)
            }
            Action::PutBootSource(b) => self.put_boot_source(b),
            Action::PutDrive(d) => self.put_drive(d),
            Action::PatchDrive(p) => self.patch_drive(p),
            Action::PutNet(n) => self.put_net(n),
            Action::PatchNet(p) => self.patch_net(p),
            Action::PutVsock(v) => self.put_vsock(v),
            Action::Action(a) => self.action(a.action_type),
            Action::PatchVm(vm) => self.patch_vm(vm),
            Action::CreateSnapshot(p) => self.create_snapshot(&p),
            Action::LoadSnapshot(p, mem) => self.load_snapshot(&p, &mem),
            Action::PutLogger(l) => self.put_logger(l),
            Action::PutMetrics(m) => {
                self.pre_boot()?;
                self.init_metrics(m)?;
                Ok(None)
            }
            Action::Rejected(source) => Err(VmmError::Request { source }),
            Action::NotSimulated(what) => Err(VmmError::NotSimulated { what }),
        }
    }

    /// Initialises metrics (`--metrics-path` or `PUT /metrics`); only once.
    pub fn init_metrics(&mut self, m: Metrics) -> Result<(), VmmError> {
        if self.metrics.is_some() {
            // Firecracker opens (creates) the target before refusing the second init.
            let _ = OpenOptions::new()
                .append(true)
                .create(true)
                .open(&m.metrics_path);
            return Err(VmmError::MetricsTwice);
        }
        let sink = MetricsSink::open(&m.metrics_path, m.emit_id.unwrap_or(false), &self.opts.id)
            .map_err(|source| VmmError::MetricsFile { source })?;
        self.metrics = Some(sink);
        self.metrics_cfg = Some(m);
        Ok(())
    }

    fn put_boot_source(&mut self, b: BootSource) -> Result<Option<String>, VmmError> {
        self.pre_boot()?;
        let kernel =
            File::open(&b.kernel_image_path).map_err(|source| VmmError::KernelFile { source })?;
        let initrd = match &b.initrd_path {
            Some(p) => Some(File::open(p).map_err(|source| VmmError::InitrdFile { source })?),
            None => None,
        };
        self.boot = Some((b, kernel, initrd));
        Ok(None)
    }

    /// After boot, a new drive or interface is a hot-plug: refused before anything else
    /// unless `--enable-pci` (and then not simulated); other pre-boot calls are refused
    /// outright.
    fn hot_plug(&self) -> Result<(), VmmError> {
        if !self.started() {
            return Ok(());
        }
        if !self.opts.enable_pci {
            return Err(VmmError::PciNotEnabled);
        }
        Err(VmmError::NotSimulated {
            what: "PCI hot-plug".into(),
        })
    }

    fn put_drive(&mut self, d: Drive) -> Result<Option<String>, VmmError> {
        self.hot_plug()?;
        if d.path_on_host.is_some() == d.socket.is_some() {
            return Err(VmmError::InvalidBlockConfig);
        }
        d.validate()
            .map_err(|source| VmmError::DriveConfig { source })?;
        let existing = self
            .drives
            .iter()
            .position(|x| x.config.drive_id == d.drive_id);
        let other_root = self
            .drives
            .iter()
            .any(|x| x.config.is_root_device && x.config.drive_id != d.drive_id);
        if d.is_root_device && other_root {
            return Err(VmmError::RootDeviceExists);
        }
        let Some(path) = &d.path_on_host else {
            return Err(VmmError::NotSimulated {
                what: "vhost-user-block drives".into(),
            });
        };
        let file = open_backing(path, d.is_read_only.unwrap_or(false)).map_err(|source| {
            VmmError::DriveFile {
                path: path.clone(),
                source,
            }
        })?;
        let dev = DriveDev {
            config: d,
            _file: file,
        };
        match existing {
            Some(i) => self.drives[i] = dev,
            None => self.drives.push(dev),
        }
        Ok(None)
    }

    fn put_net(&mut self, n: NetworkInterface) -> Result<Option<String>, VmmError> {
        self.hot_plug()?;
        // Firecracker checks the MTU when it builds the device, with its own text.
        if let Some(mtu) = n.mtu.filter(|m| !(68..=65535).contains(m)) {
            return Err(VmmError::MtuOutOfRange { mtu });
        }
        n.validate()
            .map_err(|source| VmmError::NetConfig { source })?;
        if let Some(mac) = &n.guest_mac {
            let want = parse_mac(mac).map_err(|source| VmmError::NetConfig { source })?;
            let clash = self.nets.iter().any(|d| {
                d.config.iface_id != n.iface_id
                    && d.config
                        .guest_mac
                        .as_deref()
                        .and_then(|m| parse_mac(m).ok())
                        == Some(want)
            });
            if clash {
                return Err(VmmError::MacInUse { mac: mac.clone() });
            }
        }
        // A re-PUT replaces the device: the old TAP is closed first, as in Firecracker.
        self.nets.retain(|d| d.config.iface_id != n.iface_id);
        let tap = open_tap(&n.host_dev_name).map_err(|source| VmmError::OpenTap { source })?;
        self.nets.push(NetDev { config: n, tap });
        Ok(None)
    }

    fn put_vsock(&mut self, v: Vsock) -> Result<Option<String>, VmmError> {
        self.pre_boot()?;
        // No CID check: the spec says >= 3, but Firecracker accepts any u32 (0, 1 and 2 too).
        // Firecracker drops the old device and removes its socket before creating the new one.
        if let Some((old, _listener)) = self.vsock.take() {
            let _ = std::fs::remove_file(&old.uds_path);
        }
        let listener = UnixListener::bind(&v.uds_path).map_err(|source| VmmError::VsockBind {
            path: v.uds_path.clone(),
            source,
        })?;
        self.vsock = Some((v, listener));
        Ok(None)
    }

    fn action(&mut self, action: ActionType) -> Result<Option<String>, VmmError> {
        match action {
            ActionType::InstanceStart => {
                self.pre_boot()?;
                let Some((_, kernel, _)) = &self.boot else {
                    return Err(VmmError::MissingKernel);
                };
                // Refused as the real loader refuses it; the VM stays "Not started".
                crate::kernel::check(kernel, self.machine.mem_size_mib)
                    .map_err(|why| VmmError::KernelRefused { why })?;
                self.watch_identity();
                if let Some(bin) = self.knobs.agent_bin.clone() {
                    let guest = self.guest.clone();
                    self.start_real_agent(&bin, &guest)?;
                }
                let now = Instant::now();
                self.state = InstanceState::Running;
                self.started_at = Some(now);
                self.timers
                    .push((now + self.knobs.boot_delay, Timer::BootDone));
                if let Some(after) = self.knobs.crash_after {
                    self.timers.push((now + after, Timer::Crash));
                }
                let cmdline = self.kernel_cmdline().unwrap_or_default();
                self.log
                    .info(&format!("Starting microVM, kernel command line: {cmdline}"));
                Ok(None)
            }
            ActionType::SendCtrlAltDel => {
                self.post_boot()?;
                if !self.knobs.ignore_ctrl_alt_del {
                    self.ctrl_alt_del_pending = true;
                    self.maybe_schedule_reboot();
                }
                Ok(None)
            }
            ActionType::FlushMetrics => {
                self.post_boot()?;
                if let Some(m) = &mut self.metrics {
                    // A full FIFO loses the line, as in Firecracker.
                    let _ = m.flush(self.api_requests);
                }
                Ok(None)
            }
        }
    }

    /// Starts the real agent (`FC_SIM_AGENT_BIN`) for `guest`.
    fn start_real_agent(&mut self, bin: &std::path::Path, guest: &Guest) -> Result<(), VmmError> {
        let identity = self.identity_path();
        // Where the agent records `freeze`/`thaw` (one file per VM, beside the API socket).
        let freeze = std::path::Path::new(&self.opts.api_sock)
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(SIM_FREEZE_FILE);
        let agent = RealAgent::spawn(bin, identity.as_deref(), &freeze).map_err(|source| {
            VmmError::AgentSpawn {
                path: bin.display().to_string(),
                source,
            }
        })?;
        guest.set_real_agent(agent.socket().to_path_buf());
        self.real_agent = Some(agent);
        Ok(())
    }

    /// Schedules the reboot once a pending Ctrl+Alt+Del can reach a running guest.
    fn maybe_schedule_reboot(&mut self) {
        let scheduled = self.timers.iter().any(|(_, t)| *t == Timer::Reboot);
        if self.ctrl_alt_del_pending && self.guest.booted() && !self.guest.paused() && !scheduled {
            self.timers
                .push((Instant::now() + self.knobs.reboot_delay, Timer::Reboot));
        }
    }

    /// Stops what runs beside the VMM (the real agent) before the process exits.
    pub fn shutdown_guest(&mut self) {
        if let Some(mut agent) = self.real_agent.take() {
            agent.stop();
        }
    }

    /// Fires the timers that are due.
    pub fn fire_timers(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self.timers.drain(..).partition(|(t, _)| *t <= now);
        self.timers = later;
        for (_, timer) in due {
            match timer {
                Timer::BootDone => self.boot_done(),
                Timer::Reboot => {
                    if self.guest.paused() {
                        continue;
                    }
                    self.print_console_at_exit();
                    self.log.info("Vmm is stopping.");
                    self.exit.get_or_insert(0);
                }
                Timer::IdentityPoll => self.poll_identity(),
                Timer::Crash => {
                    self.print_console_at_exit();
                    self.log.error(&format!(
                        "Firecracker exiting with error. exit_code={}",
                        self.knobs.crash_code
                    ));
                    self.exit.get_or_insert(self.knobs.crash_code);
                }
            }
        }
    }

    /// The guest's last console line (`FC_SIM_CONSOLE_AT_EXIT`), on stdout like ttyS0.
    fn print_console_at_exit(&self) {
        if let Some(line) = &self.knobs.console_at_exit {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(format!("{line}\r\n").as_bytes());
            let _ = out.flush();
        }
    }

    fn boot_done(&mut self) {
        self.guest.set_booted();
        if self.opts.boot_timer {
            let us = self.started_at.map_or(0, |t| t.elapsed().as_micros());
            self.log.info(&format!(
                "Guest-boot-time = {us:>6} us {} ms, {:>6} CPU us {} CPU ms",
                us / 1000,
                0,
                0
            ));
        }
        if let Some((_, listener)) = &self.vsock {
            match listener.try_clone() {
                Ok(l) => guest::spawn_muxer(l, self.guest.clone(), self.knobs.clone()),
                Err(e) => self.log.error(&format!("Cannot serve vsock: {e}")),
            }
        }
        if self.knobs.netstack {
            if let Err(e) = self.start_guest_net() {
                self.log
                    .error(&format!("Cannot start the guest network stack: {e}"));
            }
        }
        self.maybe_schedule_reboot();
    }

    /// Runs the userspace guest network stack on the first TAP, configured from the kernel's
    /// `ip=` argument and the interface's guest MAC (random when not given, as a guest would).
    fn start_guest_net(&mut self) -> Result<(), String> {
        let dev = self.nets.first().ok_or("no network interface configured")?;
        let config = match &self.guest_identity {
            Some(id) => id.net_config()?,
            None => self.boot_identity(dev)?,
        };
        let fd = dev.tap.file.try_clone().map_err(|e| e.to_string())?;
        // A paused guest's stack starts frozen: it must not answer a single frame.
        let stack = Arc::new(
            GuestStack::spawn_serving(fd.into(), config, self.guest.paused(), &self.knobs.serve)
                .map_err(|e| e.to_string())?,
        );
        let serving: Vec<String> = self.knobs.serve.iter().map(ToString::to_string).collect();
        self.log.info(&format!(
            "Guest network stack up on {} as {}{}",
            dev.tap.name,
            stack.config().ip,
            if serving.is_empty() {
                String::new()
            } else {
                format!(", serving {}", serving.join(","))
            }
        ));
        if self.knobs.announce {
            announce::spawn(&stack);
        }
        self.guest.set_net(stack.clone());
        self.guest_net = Some(GuestNet(stack));
        Ok(())
    }

    /// The guest's network identity at boot: the kernel's `ip=` argument and the interface's
    /// guest MAC (random when not given, as a guest would pick one).
    fn boot_identity(&self, dev: &NetDev) -> Result<NetConfig, String> {
        let cmdline = self.kernel_cmdline().unwrap_or_default();
        let mac = if let Some(m) = dev.config.guest_mac.as_deref() {
            parse_mac(m).map_err(|e| e.to_string())?
        } else {
            let mut m: [u8; 6] = rand::random();
            m[0] = (m[0] & 0xfe) | 0x02;
            m
        };
        let mut config =
            NetConfig::from_kernel_cmdline(mac, &cmdline).map_err(|e| e.to_string())?;
        config.vnet_hdr = VnetHdr::V1Len12;
        Ok(config)
    }
}

fn open_backing(path: &str, read_only: bool) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(!read_only).open(path)
}

/// Serialising a body for a 200 response without making `dispatch` generic.
mod erased {
    /// A serialisable response body.
    pub trait Ser {
        /// The JSON text.
        fn to_json(&self) -> String;
    }

    impl<T: serde::Serialize> Ser for T {
        fn to_json(&self) -> String {
            serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
        }
    }
}

#[cfg(test)]
mod tests;
