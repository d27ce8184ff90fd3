//! Jails: what Firecracker's jailer needs around it, done by hearth. Before a spawn the jail
//! root is made and the VM's files put in it ([`Jails::prepare`]: hard links, a read-only bind
//! mount for a file on another filesystem, a device node for a device-mapper disk), the TAP is
//! given to the VM's uid ([`Jails::set_tap_owner`]); after the jailer ran, the VMM's pid is read
//! from the jail's pid file ([`Jails::read_pid`]); on delete or in a sweep after a crash the
//! jail directory and the VMM's cgroups go ([`Jails::remove`], [`Jails::list`]).
//!
//! [`linux::LinuxJails`] is the real backend, [`fake::FakeJails`] a recording fake. The pure
//! parts are [`cgroups`] (which hierarchy) and [`uids`] (the uid leases).

pub mod cgroups;
#[cfg(any(test, doc, feature = "testing"))]
pub mod fake;
pub mod handoff;
pub mod linux;
pub mod sweep;
pub mod uids;

use std::path::{Path, PathBuf};

#[cfg(any(test, doc, feature = "testing"))]
pub use fake::FakeJails;
pub use linux::LinuxJails;

use crate::firecracker::jailer::JailLayout;

/// One file the VMM must open, put into the jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailFile {
    /// The file on the host (a regular file or a block device).
    pub source: PathBuf,
    /// Its name in the jail root (a single component: the VMM sees `/<name>`).
    pub name: String,
    /// Whether the VMM may write it: a writable file is given to the VM's uid, a read-only one
    /// keeps its owner and must be readable by others (a kernel shared by VMs).
    pub writable: bool,
}

/// What to build for one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailPlan {
    /// The jail's paths.
    pub layout: JailLayout,
    /// The VM's uid.
    pub uid: u32,
    /// The VM's gid.
    pub gid: u32,
    /// The files to put in.
    pub files: Vec<JailFile>,
}

/// Errors of the jails backend.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// A file name for the jail is not a single plain component.
    #[error("Invalid file name {name:?} for the jail: use one path component")]
    BadName {
        /// The name.
        name: String,
    },
    /// A step on a path failed.
    #[error("Cannot {op} {path}")]
    Io {
        /// What was attempted (`create`, `hard-link`, `bind-mount`, `remove`...).
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The pid file holds no pid.
    #[error("Pid file {path} holds {content:?}, not a pid")]
    BadPidFile {
        /// The pid file.
        path: PathBuf,
        /// What it holds.
        content: String,
    },
    /// A TAP ioctl failed.
    #[error("{op} on TAP {name} failed")]
    Tap {
        /// The ioctl.
        op: &'static str,
        /// The TAP.
        name: String,
        /// The OS error.
        #[source]
        source: nix::Error,
    },
    /// The jailer did not exit in time (it was killed).
    #[error("The jailer did not finish within {waited:?}")]
    JailerHung {
        /// How long it was given.
        waited: std::time::Duration,
    },
    /// An injected failure (fake backend only).
    #[error("Injected failure: {0}")]
    Injected(String),
}

/// The host side of jails.
pub trait Jails: Send + Sync {
    /// Makes the jail root (removing a stale jail of the same id first: the jailer refuses to
    /// reuse one) and puts `plan.files` in it. On failure, removes what it made.
    fn prepare(&self, plan: &JailPlan) -> Result<(), JailError>;
    /// The VMM's pid from the jail's pid file.
    fn read_pid(&self, layout: &JailLayout) -> Result<u32, JailError>;
    /// Gives the TAP `name` to `uid`/`gid` (`TUNSETOWNER`/`TUNSETGROUP`), so the unprivileged
    /// VMM may attach to it and no other VM's uid may; `None` gives it back to root only.
    fn set_tap_owner(&self, name: &str, owner: Option<(u32, u32)>) -> Result<(), JailError>;
    /// Removes the jail: unmounts what [`Jails::prepare`] bind-mounted, deletes the jail
    /// directory and the VMM's cgroups. Missing pieces are not an error. Call it only when
    /// the VMM has exited (a cgroup with a live task cannot be removed).
    fn remove(&self, layout: &JailLayout) -> Result<(), JailError>;
    /// The ids of the jails present for `exec_name` (for the sweep after a crash).
    fn list(&self, exec_name: &str) -> Result<Vec<String>, JailError>;
    /// Hard-links host file `source` into the jail as `/<name>` and gives it to `owner` (the
    /// inode is shared: the VMM may open it read-write) until [`Jails::unlend`]; answers the
    /// path the VMM sees. Both must be on one filesystem.
    fn lend(
        &self,
        layout: &JailLayout,
        source: &Path,
        name: &str,
        owner: (u32, u32),
    ) -> Result<PathBuf, JailError>;
    /// Removes `/<name>` from the jail and gives `source` back to root (mode 0600); a missing
    /// link or source is fine.
    fn unlend(&self, layout: &JailLayout, source: &Path, name: &str) -> Result<(), JailError>;
    /// Moves `/<name>`, written by the VMM, out of the jail to `dest`, root-owned, mode 0600.
    fn take_out(&self, layout: &JailLayout, name: &str, dest: &Path) -> Result<(), JailError>;
    /// Removes `/<name>` from the jail; a missing one is fine.
    fn discard(&self, layout: &JailLayout, name: &str) -> Result<(), JailError>;
    /// Puts `plan.files` into the jail of a VMM that already runs (a warm pool member,
    /// `firecracker::warm_pool`): hard links and device nodes only. A file on another
    /// filesystem is refused (`op` `hard-link`, `EXDEV`): a bind mount made now would not
    /// reach the VMM's own mount namespace. On failure, removes what it added.
    fn add_files(&self, plan: &JailPlan) -> Result<(), JailError>;
    /// Writes `limits` into the cgroups the jailer made for the jail (a warm pool member
    /// started with placeholder limits gets its VM's).
    fn set_limits(
        &self,
        layout: &JailLayout,
        limits: &crate::firecracker::jailer::JailLimits,
    ) -> Result<(), JailError>;
    /// Makes a snapshot's `files` readable and never writable by VMs' uids (root-owned, mode
    /// 0444), so a restore can hard-link them into a jail, and their directory `dir` root's
    /// alone (mode 0700), so no uid reaches them but through a jail they are linked into.
    fn share_read_only(&self, dir: &Path, files: &[PathBuf]) -> Result<(), JailError>;
}

/// Checks that `name` is one plain path component.
pub fn check_name(name: &str) -> Result<(), JailError> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0');
    if ok {
        Ok(())
    } else {
        Err(JailError::BadName { name: name.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_components() {
        assert!(check_name("vmlinux").is_ok());
        for bad in ["", ".", "..", "a/b", "/etc", "a\0"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
