//! File transfer: `stat`, and tar streams out of (`get_archive`) and into (`put_archive`) the
//! guest, carried in `DATA` frames ([`hearth_proto::agent::files`]).

pub mod data;
pub mod get;
pub mod journal;
pub mod put;

use std::io;
use std::path::Path;

use hearth_proto::agent::{codes, ErrorBody, PathKind, PathStat};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

/// What is at `path`, without following a symlink there.
///
/// # Errors
///
/// `not_found`, `permission_denied`, or `archive` for other I/O failures.
pub fn stat(path: &Path) -> Result<PathStat, ErrorBody> {
    let md = std::fs::symlink_metadata(path).map_err(|e| io_error(path, &e))?;
    let ft = md.file_type();
    let kind = if ft.is_symlink() {
        PathKind::Symlink
    } else if ft.is_dir() {
        PathKind::Dir
    } else if ft.is_file() {
        PathKind::File
    } else {
        debug_assert!(
            ft.is_fifo() || ft.is_socket() || ft.is_block_device() || ft.is_char_device()
        );
        PathKind::Other
    };
    let link_target = if ft.is_symlink() {
        Some(
            std::fs::read_link(path)
                .map_err(|e| io_error(path, &e))?
                .to_string_lossy()
                .into_owned(),
        )
    } else {
        None
    };
    Ok(PathStat {
        name: top_name(path),
        kind,
        size: md.len(),
        mode: md.mode() & 0o7777,
        link_target,
    })
}

/// The path's last component (`/` for the root).
#[must_use]
pub fn top_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(|| "/".to_string(), |n| n.to_string_lossy().into_owned())
}

/// The protocol error for an I/O failure on `path`.
#[must_use]
pub fn io_error(path: &Path, e: &io::Error) -> ErrorBody {
    let code = match e.kind() {
        io::ErrorKind::NotFound => codes::NOT_FOUND,
        io::ErrorKind::PermissionDenied => codes::PERMISSION_DENIED,
        _ if e.raw_os_error() == Some(libc::ENOTDIR) => codes::NOT_FOUND,
        _ => codes::ARCHIVE,
    };
    ErrorBody::new(code, format!("{}: {e}", path.display()))
}
