//! `hearthctl vm cp SRC DEST`, one side `NAME:PATH` in the guest, with `docker cp`'s rules:
//! a copy to an existing directory lands inside it under its own name; a copy to a path that
//! does not exist (its parent does) is created under that name; a file may replace a file.
//!
//! To the guest, a tar stream of the local path (modes kept, symlinks kept as symlinks, never
//! followed) is built while it is sent (`PUT .../archive?path=DIR`); where it goes is decided
//! from the guest path's stat ([`stat`]: the `X-Hearth-Path-Stat` header of
//! `HEAD .../archive?path=`). From the guest, `GET .../archive?path=` is extracted by the
//! hostile-safe [`super::untar`].

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use hearth_proto::api_exec::{ArchiveSummary, PathKind, PathStat, PATH_STAT_HEADER};

use super::untar::{self, Extracted, UntarError, UntarOptions};
use super::upload::{send_stream, UploadError};
use super::{ApiPath, Client, ClientError, Method};

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Side {
    /// A path on this host.
    Local(PathBuf),
    /// `NAME:PATH`: an absolute path in VM `vm`.
    Guest {
        /// The VM.
        vm: String,
        /// The guest path.
        path: String,
    },
}

/// Reads `NAME:PATH` as a guest side when `NAME` is a plausible VM name (no `/`, not empty)
/// and anything else as a local path (write `./a:b` for a local name with a colon).
#[must_use]
pub fn parse_side(s: &str) -> Side {
    match s.split_once(':') {
        Some((vm, path)) if !vm.is_empty() && !vm.contains('/') && !vm.starts_with('.') => {
            Side::Guest {
                vm: vm.to_owned(),
                path: path.to_owned(),
            }
        }
        _ => Side::Local(PathBuf::from(s)),
    }
}

/// Why a copy failed.
#[derive(Debug, thiserror::Error)]
pub enum CpError {
    /// The arguments do not describe a copy (both sides local, both in guests...).
    #[error("{0}")]
    Usage(String),
    /// hearthd refused or failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The upload failed.
    #[error(transparent)]
    Upload(#[from] UploadError),
    /// The guest's archive was refused or could not be written here.
    #[error(transparent)]
    Untar(#[from] UntarError),
    /// The local source could not be read.
    #[error("{what}: {source}")]
    Local {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// What a copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Copied {
    /// To the guest: what the agent wrote.
    ToGuest(ArchiveSummary),
    /// From the guest: what was extracted here.
    FromGuest(Extracted),
}

/// Copies `src` to `dest` (see the module's rules).
///
/// # Errors
/// See [`CpError`].
pub fn copy(client: &Client, src: &str, dest: &str, opts: UntarOptions) -> Result<Copied, CpError> {
    match (parse_side(src), parse_side(dest)) {
        (Side::Local(src), Side::Guest { vm, path }) => {
            check_guest_path(&path)?;
            to_guest(client, &src, &vm, &path).map(Copied::ToGuest)
        }
        (Side::Guest { vm, path }, Side::Local(dest)) => {
            check_guest_path(&path)?;
            from_guest(client, &vm, &path, &dest, opts).map(Copied::FromGuest)
        }
        (Side::Local(_), Side::Local(_)) => Err(CpError::Usage(
            "one side of vm cp must be in a guest: NAME:PATH".into(),
        )),
        (Side::Guest { .. }, Side::Guest { .. }) => Err(CpError::Usage(
            "vm cp copies between this host and one guest, not between guests".into(),
        )),
    }
}

fn check_guest_path(path: &str) -> Result<(), CpError> {
    hearth_proto::agent::files::check_guest_path(path)
        .map_err(|e| CpError::Usage(format!("guest {e}")))
}

fn archive_path(vm: &str, path: &str) -> ApiPath {
    ApiPath::new("/v1/vms")
        .segment(vm)
        .segment("archive")
        .query("path", path)
}

/// What is at a guest path (`HEAD .../archive`'s stat header); `None` when nothing is.
///
/// # Errors
/// hearthd's answer, or no answer.
pub fn stat(client: &Client, vm: &str, path: &str) -> Result<Option<PathStat>, ClientError> {
    let resp = client.request(Method::HEAD, archive_path(vm, path), &[], None)?;
    if resp.status == 404 {
        return Ok(None);
    }
    let resp = resp.ok()?;
    let header = resp
        .header(&PATH_STAT_HEADER.to_ascii_lowercase())
        .ok_or_else(|| ClientError::Protocol(format!("stat answer without {PATH_STAT_HEADER}")))?;
    Ok(Some(serde_json::from_str(header)?))
}

/// The guest path's parent and last component.
fn split_guest(path: &str) -> Result<(String, String), CpError> {
    let p = Path::new(path);
    match (p.parent(), p.file_name()) {
        (Some(parent), Some(name)) => Ok((
            parent.to_string_lossy().into_owned(),
            name.to_string_lossy().into_owned(),
        )),
        _ => Err(CpError::Usage(format!(
            "guest path {path:?} has no last component to copy to"
        ))),
    }
}

/// The name a local path is copied under (`.` and `..` resolved).
fn local_name(src: &Path) -> Result<OsString, CpError> {
    if let Some(n) = src.file_name() {
        return Ok(n.to_os_string());
    }
    let abs = src.canonicalize().map_err(|e| CpError::Local {
        what: format!("Resolving {}", src.display()),
        source: e,
    })?;
    abs.file_name()
        .map(std::ffi::OsStr::to_os_string)
        .ok_or_else(|| CpError::Usage(format!("cannot copy {} (no name)", src.display())))
}

fn to_guest(client: &Client, src: &Path, vm: &str, dest: &str) -> Result<ArchiveSummary, CpError> {
    let meta = src.symlink_metadata().map_err(|e| CpError::Local {
        what: format!("Reading {}", src.display()),
        source: e,
    })?;
    let (dir, name) = match stat(client, vm, dest)? {
        Some(s) if s.kind == PathKind::Dir => (dest.to_owned(), local_name(src)?),
        Some(_) if meta.is_dir() => {
            return Err(CpError::Usage(format!(
                "cannot copy directory {} onto {vm}:{dest}, which is not a directory",
                src.display()
            )))
        }
        _ => {
            let (parent, name) = split_guest(dest)?;
            (parent, OsString::from(name))
        }
    };
    let src = src.to_path_buf();
    let resp = send_stream(
        client,
        Method::PUT,
        &archive_path(vm, &dir),
        "application/x-tar",
        move |w| {
            let mut b = tar::Builder::new(w);
            b.follow_symlinks(false);
            b.mode(tar::HeaderMode::Complete);
            if meta.is_dir() {
                b.append_dir_all(&name, &src)?;
            } else {
                b.append_path_with_name(&src, &name)?;
            }
            b.finish()
        },
    )?;
    Ok(resp.ok()?.json()?)
}

fn from_guest(
    client: &Client,
    vm: &str,
    src: &str,
    dest: &Path,
    opts: UntarOptions,
) -> Result<Extracted, CpError> {
    let resp = client.stream(
        Method::GET,
        archive_path(vm, src),
        &[("accept", "application/x-tar")],
        None,
    )?;
    if !(200..300).contains(&resp.status) {
        resp.into_response()?.ok()?;
        return Err(ClientError::Protocol("error answer without an error".into()).into());
    }
    Ok(untar::extract_to(resp.body, dest, opts)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_parse_as_docker_cp_does() {
        assert_eq!(
            parse_side("web:/srv/www"),
            Side::Guest {
                vm: "web".into(),
                path: "/srv/www".into()
            }
        );
        assert_eq!(parse_side("./site"), Side::Local("./site".into()));
        assert_eq!(parse_side("./a:b"), Side::Local("./a:b".into()));
        assert_eq!(parse_side("dir/a:b"), Side::Local("dir/a:b".into()));
        assert_eq!(parse_side(":x"), Side::Local(":x".into()));
    }

    #[test]
    fn bad_copies_are_usage_errors_before_any_request() {
        // No hearthd at this socket: a usage error must come first.
        let c = Client::new("/nonexistent/hearthd.sock");
        let opts = UntarOptions::default();
        for (s, d) in [
            ("a", "b"),
            ("web:/a", "db:/b"),
            ("./x", "web:relative"),
            ("web:", "./x"),
        ] {
            let e = copy(&c, s, d, opts).unwrap_err();
            assert!(matches!(e, CpError::Usage(_)), "{s} {d}: {e}");
        }
        assert!(split_guest("/").is_err());
        assert_eq!(
            split_guest("/srv/www").unwrap(),
            ("/srv".to_owned(), "www".to_owned())
        );
    }
}
