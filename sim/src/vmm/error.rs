//! Why the VMM refused an action. Each `Display` is the `fault_message` Firecracker returns for
//! the same mistake (its `VmmActionError` prefix included), so texts repeat their source on
//! purpose: fidelity to Firecracker comes first.

use std::io;

use hearth_proto::firecracker::ValidationError;

use crate::api::RequestError;
use crate::tap::TapError;

/// A refused action.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The request did not parse (see [`RequestError`]).
    #[error("{source}")]
    Request {
        /// The parse error.
        source: RequestError,
    },
    /// A pre-boot-only call after `InstanceStart`.
    #[error("The requested operation is not supported after starting the microVM.")]
    NotSupportedPostBoot,
    /// A post-boot-only call before `InstanceStart`.
    #[error("The requested operation is not supported before starting the microVM.")]
    NotSupportedPreBoot,
    /// An endpoint or feature the simulator does not model.
    #[error("The requested operation is not supported: firecracker-sim does not simulate {what}.")]
    NotSimulated {
        /// What was asked for.
        what: String,
    },
    /// A machine configuration breaking the vCPU or memory rules.
    #[error("Machine config error: {source}")]
    MachineConfig {
        /// The broken rule.
        source: ValidationError,
    },
    /// The kernel image cannot be opened.
    #[error("Boot source error: The kernel file cannot be opened: {source}")]
    KernelFile {
        /// The open error.
        source: io::Error,
    },
    /// The initrd cannot be opened.
    #[error("Boot source error: The initrd file cannot be opened due to invalid path or invalid permissions. {source}")]
    InitrdFile {
        /// The open error.
        source: io::Error,
    },
    /// `InstanceStart` with a kernel image the loader refuses (see [`crate::kernel`]).
    #[error("Start microvm error: System configuration error: {why}")]
    KernelRefused {
        /// The loader's reason.
        why: String,
    },
    /// `InstanceStart` without `PUT /boot-source`.
    #[error("Start microvm error: Cannot start microvm without kernel configuration.")]
    MissingKernel,
    /// A drive body breaking a rule.
    #[error("Drive config error: {source}")]
    DriveConfig {
        /// The broken rule.
        source: ValidationError,
    },
    /// A drive with neither a backing file nor a vhost-user socket (or both).
    #[error("Drive config error: Unable to create the virtio block device: Invalid block config.")]
    InvalidBlockConfig,
    /// A second root device.
    #[error("Drive config error: A root block device already exists!")]
    RootDeviceExists,
    /// The drive's backing file cannot be opened.
    #[error("Drive config error: Unable to create the virtio block device: Virtio backend error: Error manipulating the backing file: {source} {path}")]
    DriveFile {
        /// The backing file.
        path: String,
        /// The open error.
        source: io::Error,
    },
    /// `PATCH /drives/{id}` for a drive that does not exist.
    #[error("Drive config error: Unable to patch the block device: Failed perform action on device: Device not found Please verify the request arguments.")]
    DriveNotFound {
        /// The drive ID.
        drive_id: String,
    },
    /// The new backing file of a `PATCH /drives/{id}` cannot be opened.
    #[error("Drive config error: Unable to patch the block device: Block: Virtio backend error: Error manipulating the backing file: {source} {path} Please verify the request arguments.")]
    DrivePatchFile {
        /// The backing file.
        path: String,
        /// The open error.
        source: io::Error,
    },
    /// A network interface body breaking a rule.
    #[error("Network config error: {source}")]
    NetConfig {
        /// The broken rule.
        source: ValidationError,
    },
    /// Another interface already uses this guest MAC.
    #[error("Network config error: The MAC address is already in use: {mac}")]
    MacInUse {
        /// The MAC, as given.
        mac: String,
    },
    /// The TAP cannot be attached.
    #[error("Network config error: Could not create the network device: Open tap device failed: {source}")]
    OpenTap {
        /// Why.
        source: TapError,
    },
    /// `PATCH /network-interfaces/{id}` for an interface that does not exist.
    #[error("Network config error: Unable to update the net device: Failed perform action on device: Device not found")]
    NetNotFound {
        /// The interface ID.
        iface_id: String,
    },
    /// `uds_path` cannot be bound (an existing file, a path too long...).
    #[error("Vsock config error: Cannot create backend for vsock device: Error binding to the host-side Unix socket: {source}")]
    VsockBind {
        /// The socket path.
        path: String,
        /// The bind error.
        source: io::Error,
    },
    /// `FC_SIM_AGENT_BIN` names an agent that cannot be started (a simulator-only error).
    #[error("Simulator error: Cannot start the guest agent {path}: {source}")]
    AgentSpawn {
        /// The agent binary.
        path: String,
        /// The spawn error.
        source: io::Error,
    },
    /// The log target cannot be opened.
    #[error("Logger error: Failed to open target file: {source}")]
    LoggerFile {
        /// The open error.
        source: io::Error,
    },
    /// Metrics were already initialised.
    #[error("Metrics error: Cannot initialize the metrics system due to bad user input: Reinitialization of metrics not allowed.")]
    MetricsTwice,
    /// An MTU outside 68..=65535 (checked when the device is built, hence the prefix).
    #[error("Network config error: Could not create the network device: MTU {mtu} is out of range [68, 65535]")]
    MtuOutOfRange {
        /// The rejected MTU.
        mtu: u32,
    },
    /// `PUT /snapshot/create` failed (the VM runs, a file cannot be written...).
    #[error("Create snapshot error: {why}")]
    CreateSnapshot {
        /// Firecracker's reason.
        why: String,
    },
    /// `PUT /snapshot/load` on a process that already has boot resources (the process lives).
    #[error("Load snapshot error: Loading a microVM snapshot not allowed after configuring boot-specific resources.")]
    LoadAfterConfig,
    /// `PUT /snapshot/load` failed; the process then exits.
    #[error("Load snapshot error: Failed to restore from snapshot: {why}")]
    LoadSnapshot {
        /// Firecracker's reason.
        why: String,
    },
    /// A drive or network interface added after boot: a hot-plug, which needs `--enable-pci`.
    #[error("PCI is not enabled")]
    PciNotEnabled,
    /// The metrics target cannot be opened.
    #[error("Metrics error: Cannot initialize the metrics system due to bad user input: {source}")]
    MetricsFile {
        /// The open error.
        source: io::Error,
    },
}
