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
    }
}
