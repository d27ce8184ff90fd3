//! Processes: spawning Firecracker, and signalling and waiting for a process through a pidfd
//! so that a recycled PID can never be hit. [`linux::LinuxProcesses`] is the real backend,
//! [`fake::FakeProcesses`] a recording fake for the actor's unit tests.
//!
//! A [`Process`] is a handle on one process, obtained by [`Processes::spawn`] (a child) or
//! [`Processes::open`] (any process, for adoption). Its pidfd pins the identity: signals go
//! through `pidfd_send_signal`, exit is observed as pidfd readiness, and for a child the exit
//! status is collected with `waitid(P_PIDFD)`.

#[cfg(any(test, doc, feature = "testing"))]
pub mod fake;
pub mod linux;
pub mod spawn;

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;

#[cfg(any(test, doc, feature = "testing"))]
pub use fake::FakeProcesses;
pub use linux::LinuxProcesses;

/// How to start a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnSpec {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments (without argv\[0\]).
    pub args: Vec<OsString>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Where stdout and stderr go: opened read-write and non-blocking, so a FIFO here never
    /// blocks the child and never raises SIGPIPE in it (see `firecracker::console`).
    pub stdio: PathBuf,
}

/// The signals hearth sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// SIGTERM: polite termination.
    Term,
    /// SIGKILL: cannot be caught.
    Kill,
}

impl Signal {
    /// The signal number.
    pub fn number(self) -> i32 {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal number.
    Signal(i32),
    /// It ended, but it was not our child, so its status cannot be known.
    Unknown,
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {s}"),
            ExitStatus::Unknown => write!(f, "unknown status (not a child)"),
        }
    }
}

/// Errors from the process backend.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program could not be started.
    #[error("Cannot spawn {program}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The program ran but `--version` failed.
    #[error("Running {program} --version failed: {detail}")]
    Version {
        /// The program.
        program: PathBuf,
        /// What went wrong (exit status, stderr).
        detail: String,
    },
    /// The process does not exist (any more).
    #[error("No process with pid {pid}")]
    NoSuchProcess {
        /// The pid.
        pid: u32,
    },
    /// A system call on a process failed.
    #[error("{op} on pid {pid} failed")]
    Sys {
        /// What was attempted (`pidfd_open`, `pidfd_send_signal`, `waitid`, reading /proc...).
        op: &'static str,
        /// The pid.
        pid: u32,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The host's processes could not be listed.
    #[error("Cannot list processes")]
    List {
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An injected failure (fake backend only).
    #[error("Injected failure: {0}")]
    Injected(String),
}

/// Facts about a live process read from /proc, used to recognise it again after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessIdentity {
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
    /// The command line, argv\[0\] first.
    pub cmdline: Vec<String>,
}

/// A handle on one process (child or adopted), pinned by its pidfd.
pub trait Process: Send + Sync + fmt::Debug {
    /// The process id (informational: every operation goes through the pidfd).
    fn pid(&self) -> u32;
    /// Whether it is our child (its exit status can be collected).
    fn is_child(&self) -> bool;
    /// Sends a signal through the pidfd. A process that already exited is not an error.
    fn signal(&self, signal: Signal) -> Result<(), ProcessError>;
    /// Resolves when the process has exited; reaps a child. Call it once per process.
    fn wait(&self) -> BoxFuture<'static, Result<ExitStatus, ProcessError>>;
    /// Whether the process has already exited (without reaping it).
    fn has_exited(&self) -> bool;
}

/// The host's processes.
pub trait Processes: Send + Sync {
    /// Starts a process in its own process group (so signals aimed at hearthd's group miss it), with
    /// stdin from /dev/null, stdout/stderr to `spec.stdio`, and no other descriptor of hearthd's.
    fn spawn(&self, spec: &SpawnSpec) -> Result<Arc<dyn Process>, ProcessError>;
    /// Opens a handle on an existing process (for adoption). The returned handle refers to
    /// whatever process has `pid` now; check [`Processes::identity`] before trusting it.
    fn open(&self, pid: u32) -> Result<Arc<dyn Process>, ProcessError>;
    /// Reads a process's start time and command line.
    fn identity(&self, pid: u32) -> Result<ProcessIdentity, ProcessError>;
    /// The pids of the host's processes now, ascending (a snapshot: any may exit at once, so
    /// read [`Processes::identity`] and pin with [`Processes::open`] before acting on one).
    fn list(&self) -> Result<Vec<u32>, ProcessError>;
    /// A process's user ids: real, effective, saved and filesystem (`Uid:` in
    /// `/proc/<pid>/status`).
    fn uids(&self, pid: u32) -> Result<[u32; 4], ProcessError>;
    /// Runs `program --version` and returns its stdout.
    fn version_output(&self, program: &std::path::Path) -> Result<String, ProcessError>;
}
