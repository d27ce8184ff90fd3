//! File transfer (protocol v2): tar streams into and out of the guest, as Docker's archive API
//! does them.
//!
//! ```text
//! -> {"v":2,"op":"stat","path":"/srv/www"}
//! <- {"v":2,"ok":{"name":"www","kind":"dir","size":4096,"mode":493}}
//! -> {"v":2,"op":"get_archive","path":"/var/log"}
//! <- {"v":2,"ok":{"name":"log","kind":"dir",...}}     then DATA frames (a tar stream whose
//!                                                       top entry is `log`), then END
//! -> {"v":2,"op":"put_archive","path":"/srv"}
//! <- {"v":2,"ok":{}}                                   then the host sends DATA frames and END;
//!                                                       the agent answers DONE {ArchiveSummary}
//!                                                       or ERROR
//! ```
//!
//! `put_archive` extracts into an existing directory; entries whose names are absolute or hold
//! `..` are refused, as are links that would point a later entry outside the directory. Either
//! side may end a stream early with an `ERROR` frame.

use serde::{Deserialize, Serialize};

/// The longest guest path an op accepts, in bytes.
pub const MAX_PATH: usize = 4096;

/// Checks a guest path argument: absolute, no NUL, at most [`MAX_PATH`] bytes.
pub fn check_guest_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("path {path:?} is not absolute"));
    }
    if path.contains('\0') {
        return Err("path contains a NUL byte".into());
    }
    if path.len() > MAX_PATH {
        return Err(format!("path of {} bytes is over {MAX_PATH}", path.len()));
    }
    Ok(())
}

/// The arguments of `stat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatRequest {
    /// The guest path (absolute).
    pub path: String,
}

/// The arguments of `get_archive` and `put_archive`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveRequest {
    /// `get_archive`: the file or directory to send; `put_archive`: the existing directory to
    /// extract into.
    pub path: String,
}

/// What kind of file a path names (symlinks are not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else (device, FIFO, socket).
    Other,
}

/// What `stat` (and `get_archive`) report about a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathStat {
    /// The path's last component (the top entry's name in a `get_archive` stream).
    pub name: String,
    /// What it is.
    pub kind: PathKind,
    /// Its size in bytes.
    pub size: u64,
    /// Its permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Where it points, for a symlink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
}

/// What a `put_archive` wrote (the `DONE` frame's payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveSummary {
    /// Entries extracted.
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{decode_request, encode_request, AgentProtoError, Request};

    #[test]
    fn archive_requests_round_trip() {
        for req in [
            Request::PutArchive(ArchiveRequest {
                path: "/srv".into(),
            }),
            Request::GetArchive(ArchiveRequest {
                path: "/var/log".into(),
            }),
            Request::Stat(StatRequest { path: "/".into() }),
        ] {
            assert_eq!(decode_request(&encode_request(&req)).unwrap(), req);
        }
        assert!(Request::PutArchive(ArchiveRequest { path: "/".into() }).switches_to_frames());
        assert!(!Request::Stat(StatRequest { path: "/".into() }).switches_to_frames());
    }

    #[test]
    fn relative_or_odd_paths_are_refused() {
        for line in [
            r#"{"v":2,"op":"stat","path":"etc"}"#,
            r#"{"v":2,"op":"get_archive","path":""}"#,
            r#"{"v":2,"op":"put_archive","path":"/a\u0000b"}"#,
        ] {
            assert!(matches!(
                decode_request(line.as_bytes()),
                Err(AgentProtoError::InvalidArguments { .. })
            ));
        }
        let long = format!("/{}", "a".repeat(MAX_PATH));
        assert!(check_guest_path(&long).is_err());
    }

    #[test]
    fn path_stat_wire_format() {
        let s = PathStat {
            name: "www".into(),
            kind: PathKind::Dir,
            size: 4096,
            mode: 0o755,
            link_target: None,
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"name":"www","kind":"dir","size":4096,"mode":493}"#
        );
    }
}
