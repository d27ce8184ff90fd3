//! The one place hearth reads `/proc` from (outside the process backend's own reads): the
//! kernel's view of processes, routes and namespaces is host state like any other, so it is
//! read here, where a test can find every such read. `tests/house_rules.rs` fails when a
//! `/proc` path appears in product code anywhere else.

use std::io;
use std::path::PathBuf;

/// The path of `/proc/<relative>`.
fn path(relative: &str) -> PathBuf {
    PathBuf::from("/proc").join(relative)
}

/// Reads `/proc/<relative>` whole, e.g. `net/route` or `thread-self/net/route`.
pub fn read_to_string(relative: &str) -> io::Result<String> {
    std::fs::read_to_string(path(relative))
}

/// The metadata of `/proc/<relative>`, following its last link: e.g. `<pid>/root/` is the
/// root directory that process sees (a jailed VMM's chroot).
pub fn metadata(relative: &str) -> io::Result<std::fs::Metadata> {
    std::fs::metadata(path(relative))
}

/// The path that names `name` inside the directory this process holds open as `fd`,
/// through `/proc/self/fd`: how calls without an `*at` form (`lsetxattr`, `read_dir`) reach a
/// file relative to an open directory without resolving any other path.
pub fn fd_path(fd: std::os::fd::RawFd, name: Option<&std::ffi::OsStr>) -> PathBuf {
    let mut p = path(&format!("self/fd/{fd}"));
    if let Some(name) = name {
        p.push(name);
    }
    p
}

/// Whether `/proc/<relative>` exists, e.g. `1234` for a process that has not been reaped.
pub fn exists(relative: &str) -> bool {
    path(relative).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        assert!(exists(&std::process::id().to_string()));
        assert!(read_to_string("self/stat")
            .unwrap()
            .starts_with(&format!("{} (", std::process::id())));
        assert!(!exists("not-a-proc-entry"));
        let dir = std::fs::File::open("/").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&dir);
        let p = fd_path(fd, Some(std::ffi::OsStr::new("etc")));
        assert_eq!(p, PathBuf::from(format!("/proc/self/fd/{fd}/etc")));
        assert!(metadata(&format!("{}/root/", std::process::id()))
            .unwrap()
            .is_dir());
    }
}
