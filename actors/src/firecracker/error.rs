//! [`FirecrackerError`]: everything that can go wrong driving one Firecracker process.

use std::path::PathBuf;
use std::time::Duration;

use crate::host::processes::{ExitStatus, ProcessError};

use super::binary::VmmVersion;

/// Errors of the Firecracker actor and its helpers.
#[derive(Debug, thiserror::Error)]
pub enum FirecrackerError {
    /// No Firecracker binary was configured and none is on PATH.
    #[error("Firecracker binary {name:?} not found on PATH")]
    BinaryNotFound {
        /// The name that was looked up.
        name: String,
    },
    /// The configured binary does not exist or is not executable.
    #[error("Firecracker binary {path} is missing or not executable")]
    BinaryNotExecutable {
        /// The configured path.
        path: PathBuf,
    },
    /// `--version` could not be run.
    #[error("Cannot check the version of {path}")]
    VersionCheck {
        /// The binary.
        path: PathBuf,
        /// Why.
        #[source]
        source: ProcessError,
    },
    /// `--version` printed something that is not `Firecracker vX.Y.Z`.
    #[error("Cannot parse the version of {path} from {output:?}: expected \"Firecracker vX.Y.Z\"")]
    UnparseableVersion {
        /// The binary.
        path: PathBuf,
        /// What it printed (first line).
        output: String,
    },
    /// The binary is older than hearth supports.
    #[error("Firecracker {found} at {path} is too old: hearth needs at least {min}")]
    VersionTooOld {
        /// The binary.
        path: PathBuf,
        /// Its version.
        found: VmmVersion,
        /// The minimum.
        min: VmmVersion,
    },
    /// A VM id Firecracker would reject.
    #[error("Invalid VM id {id:?}: use 1-64 ASCII letters, digits or '-'")]
    InvalidId {
        /// The id.
        id: String,
    },
    /// A socket path that does not fit in `sun_path`.
    #[error(
        "Socket path {path} is {len} bytes; the limit is {max} (choose a shorter run directory)"
    )]
    SocketPathTooLong {
        /// The path (for the vsock port sockets, the longest possible one).
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Making, using or removing the VM's jail failed.
    #[error("Jail failure")]
    Jail {
        /// What failed.
        #[source]
        source: crate::host::jails::JailError,
    },
    /// Preparing the run directory or its files failed.
    #[error("Cannot prepare {path}")]
    RunDir {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Removing (part of) the run directory after the process is gone failed.
    #[error("Cannot remove {path}")]
    RunDirRemoval {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A process operation failed.
    #[error("Process operation failed")]
    Process {
        /// Why.
        #[source]
        source: ProcessError,
    },
    /// Firecracker exited before it was ready.
    #[error("Firecracker exited ({status}) before {phase}; see {console}")]
    ExitedEarly {
        /// What it was doing.
        phase: &'static str,
        /// How it ended.
        status: ExitStatus,
        /// The console log with its last words.
        console: PathBuf,
    },
    /// The API socket did not come up in time.
    #[error("API socket {path} not ready after {waited:?}")]
    ApiSocketTimeout {
        /// The socket.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// Firecracker answered an API call with an error.
    #[error("{method} {uri} failed with HTTP {status}: {fault_message}")]
    Api {
        /// The method.
        method: http::Method,
        /// The request path.
        uri: String,
        /// The HTTP status.
        status: u16,
        /// Firecracker's `fault_message` (or the raw body).
        fault_message: String,
    },
    /// The API connection failed.
    #[error("{method} {uri}: API connection failed")]
    ApiIo {
        /// The method.
        method: http::Method,
        /// The request path.
        uri: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Firecracker's answer was not what the API promises.
    #[error("{method} {uri}: unexpected response: {detail}")]
    ApiProtocol {
        /// The method.
        method: http::Method,
        /// The request path.
        uri: String,
        /// What was wrong.
        detail: String,
    },
    /// The VM configuration is invalid; nothing was sent.
    #[error("Invalid VM configuration ({what}): {detail}")]
    InvalidConfig {
        /// Which part.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The operation is not allowed in the VMM process's current state.
    #[error("Cannot {op} a VM that is {state}")]
    InvalidState {
        /// The current state.
        state: super::VmmState,
        /// The attempted operation.
        op: &'static str,
    },
    /// After `InstanceStart` the VM did not report Running.
    #[error("VM state is {state:?} after InstanceStart, not Running (waited {waited:?})")]
    NotRunning {
        /// The last reported state.
        state: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The agent did not answer in time.
    #[error("Guest agent not ready after {waited:?} ({attempts} attempts; last: {last_error})")]
    ReadinessTimeout {
        /// How long we tried.
        waited: Duration,
        /// How many connection attempts.
        attempts: u32,
        /// The last attempt's failure.
        last_error: String,
    },
    /// The process to adopt is not the recorded one; it was not touched.
    #[error("Refusing to adopt pid {pid}: {reason}")]
    AdoptMismatch {
        /// The pid.
        pid: u32,
        /// What did not match.
        reason: String,
    },
    /// The process to kill as a stray is not one: it is this VM's own process, or it does not
    /// use this VM's run directory (any more); it was not touched.
    #[error("Refusing to kill pid {pid} as a stray: {reason}")]
    NotAStray {
        /// The pid.
        pid: u32,
        /// Why it is not a stray of this VM.
        reason: String,
    },
    /// Changing a socket's owner or mode failed.
    #[error("Cannot set group/mode of {path}")]
    SocketAccess {
        /// The socket.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The process survived SIGKILL for too long.
    #[error("Pid {pid} did not exit {waited:?} after SIGKILL")]
    DidNotDie {
        /// The pid.
        pid: u32,
        /// How long we waited.
        waited: Duration,
    },
    /// A snapshot taken by another VMM than this actor's would run it; nothing was started.
    #[error(
        "Snapshot {snapshot} was taken with Firecracker {snapshot_version} (CPU template \
         {snapshot_template:?}); this VMM is Firecracker {vmm_version} (CPU template \
         {vmm_template:?}): {mismatch} differs"
    )]
    IncompatibleSnapshot {
        /// The snapshot's state file.
        snapshot: PathBuf,
        /// The version the snapshot records (as `GET /version` said).
        snapshot_version: String,
        /// The CPU template the snapshot records.
        snapshot_template: hearth_proto::firecracker::CpuTemplate,
        /// This actor's binary's version.
        vmm_version: VmmVersion,
        /// The CPU template the restore would use.
        vmm_template: hearth_proto::firecracker::CpuTemplate,
        /// What differs: `version` or `CPU template`.
        mismatch: &'static str,
    },
}

impl FirecrackerError {
    /// Whether a restore failed only because the snapshot has no realtime clock reference for
    /// `clock_realtime` (Firecracker: "`clock_realtime` requested but not present in the
    /// snapshot state", which depends on the host's KVM clock when the snapshot was taken).
    /// The restore can be retried without `clock_realtime`, setting the guest clock through
    /// the agent instead.
    pub fn is_clock_realtime_unavailable(&self) -> bool {
        matches!(self, FirecrackerError::Api { fault_message, .. }
            if fault_message.contains("clock_realtime requested but not present"))
    }
}

impl From<ProcessError> for FirecrackerError {
    fn from(source: ProcessError) -> Self {
        FirecrackerError::Process { source }
    }
}
