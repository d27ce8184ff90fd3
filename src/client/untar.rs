//! Hostile-safe tar extraction for `hearthctl vm cp NAME:PATH DEST`: the stream comes from the
//! guest, which is untrusted, so every entry is checked before anything is written.
//!
//! The rules, each with a unit test below:
//! - names are relative and `..`-free, and all sit under one top entry (the copied path);
//! - nothing is written through a symlink, including one an earlier entry of the same archive
//!   created: every directory is opened one component at a time with `O_NOFOLLOW`, files are
//!   created with `O_EXCL | O_NOFOLLOW` (an entry replaces a symlink; it never follows it);
//! - hard links may only point at entries inside the extraction;
//! - device nodes and FIFOs are skipped (reported in [`Extracted::skipped`]), never created;
//! - setuid and setgid bits are dropped unless [`UntarOptions::keep_setuid`];
//! - the stream may be at most [`UntarOptions::max_bytes`] long;
//! - a stream without tar's end-of-archive block (cut off, e.g. hearthd hit its limit) or with
//!   non-zero bytes after it is an error.
//!
//! [`extract_to`] extracts into a hidden staging directory beside the destination and renames
//! the result into place only when the whole archive was good, so a failure leaves nothing
//! behind that could pass for a finished copy. Owners are not restored (files belong to the
//! user running hearthctl).

use std::cell::Cell;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{fchmod, fstatat, futimens, mkdirat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{linkat, symlinkat, unlinkat, UnlinkatFlags};
use tar::EntryType;

use crate::safe_path::{self, WalkError};

/// The default bound on a copied stream's size (4 GiB).
pub const DEFAULT_MAX_BYTES: u64 = 4 << 30;

/// The most bytes of zero padding read after the end-of-archive block.
const MAX_TRAILER: u64 = 1 << 20;

/// How to extract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UntarOptions {
    /// The most bytes the tar stream may hold (headers included).
    pub max_bytes: u64,
    /// Keep setuid and setgid bits (dropped otherwise).
    pub keep_setuid: bool,
}

impl Default for UntarOptions {
    fn default() -> Self {
        UntarOptions {
            max_bytes: DEFAULT_MAX_BYTES,
            keep_setuid: false,
        }
    }
}

/// What an extraction wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    /// Entries written (files, directories, links).
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Entries skipped, with why (device nodes, FIFOs, unknown types).
    pub skipped: Vec<String>,
    /// Where the copy now is.
    pub path: PathBuf,
}

/// Why an extraction failed. Nothing is left at the destination when it does.
#[derive(Debug, thiserror::Error)]
pub enum UntarError {
    /// An entry's name is absolute, holds `..`, or is empty.
    #[error("Refused entry {entry:?}: {reason}")]
    UnsafeName {
        /// The entry's name.
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An entry is not under the archive's top entry.
    #[error("Refused entry {entry:?}: not under the copied path {top:?}")]
    OutsideTop {
        /// The entry's name.
        entry: String,
        /// The top entry's name.
        top: String,
    },
    /// Writing the entry would go through a symlink (or a non-directory).
    #[error("Refused entry {entry:?}: its path goes through a symlink or a non-directory")]
    ThroughSymlink {
        /// The entry's name.
        entry: String,
    },
    /// A hard link whose target is not an earlier entry of the extraction.
    #[error("Refused hard link {entry:?}: target {target:?} is not inside the copy")]
    BadLink {
        /// The entry's name.
        entry: String,
        /// The link's target.
        target: String,
    },
    /// The stream is longer than allowed.
    #[error("Archive larger than the limit of {max} bytes (raise it with --max-bytes)")]
    TooLarge {
        /// The limit.
        max: u64,
    },
    /// The stream ended before tar's end-of-archive block, or broke off (hearthd cut it at
    /// its limit, the connection failed).
    #[error("Archive truncated: {reason}")]
    Truncated {
        /// How it ended.
        reason: String,
    },
    /// Non-zero bytes after the end-of-archive block.
    #[error("Archive has data after its end-of-archive block")]
    TrailingData,
    /// The archive holds no entry.
    #[error("Archive is empty")]
    Empty,
    /// The destination already holds what the copy would create.
    #[error("{} already exists (as a directory, or as another kind of file); remove it first", path.display())]
    Exists {
        /// The path.
        path: PathBuf,
    },
    /// The destination's parent directory does not exist.
    #[error("Parent directory of {} does not exist", path.display())]
    NoParent {
        /// The destination.
        path: PathBuf,
    },
    /// Reading the stream or writing a file failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>, source: impl Into<io::Error>) -> UntarError {
    UntarError::Io {
        what: what.into(),
        source: source.into(),
    }
}

/// The stream's reader: counts bytes against the limit and notes whether the end of the
/// stream was reached (tar's parser stops at the end-of-archive block without reading on, so
/// reaching the end while parsing means the stream was cut short).
struct Counted<R> {
    inner: R,
    state: Rc<CountState>,
}

#[derive(Default)]
struct CountState {
    read: Cell<u64>,
    max: Cell<u64>,
    over: Cell<bool>,
    eof: Cell<bool>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.state.eof.set(true);
        }
        let total = self.state.read.get() + n as u64;
        self.state.read.set(total);
        if total > self.state.max.get() {
            self.state.over.set(true);
            return Err(io::Error::other("archive over the size limit"));
        }
        Ok(n)
    }
}

/// Splits an entry name into checked components (`.` and empty ones dropped).
fn components(name: &[u8]) -> Result<Vec<OsString>, UntarError> {
    let refuse = |reason| UntarError::UnsafeName {
        entry: String::from_utf8_lossy(name).into_owned(),
        reason,
    };
    let out = safe_path::split_name(name).map_err(refuse)?;
    if out.is_empty() {
        return Err(refuse("empty name"));
    }
    Ok(out)
}

/// Opens (creating when `create`) the directory `comps` under `root`, one component at a time
/// without following symlinks.
fn open_dir(
    root: &OwnedFd,
    comps: &[OsString],
    create: bool,
    entry: &str,
) -> Result<OwnedFd, UntarError> {
    let mode = create.then(|| Mode::from_bits_truncate(0o700));
    safe_path::open_dir(root, comps, mode).map_err(|e| match e {
        WalkError::ThroughSymlink => UntarError::ThroughSymlink {
            entry: entry.to_owned(),
        },
        WalkError::Io(e) => io_err(format!("Opening a directory for {entry} failed"), e),
    })
}

/// Removes what sits at `name` in `dir` unless it is a directory, so a new entry replaces it
/// (a symlink is removed, not followed). `Err(Exists)`-like when it is a directory.
fn clear_slot(dir: &OwnedFd, name: &OsStr, entry: &str) -> Result<(), UntarError> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(io_err(format!("Checking {entry} failed"), e)),
        Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR => {
            Err(UntarError::ThroughSymlink {
                entry: entry.to_owned(),
            })
        }
        Ok(_) => unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)
            .map_err(|e| io_err(format!("Replacing {entry} failed"), e)),
    }
}

/// Extracts `reader` into the open directory `root`. Every entry must sit under one top entry
/// (the first entry's first component), which is returned with the summary.
///
/// # Errors
/// Any broken rule of the module's list; what was written so far is left for the caller to
/// remove.
pub fn extract_into(
    reader: impl Read,
    root: &OwnedFd,
    opts: UntarOptions,
) -> Result<(OsString, Extracted), UntarError> {
    let state = Rc::new(CountState::default());
    state.max.set(opts.max_bytes);
    let mut archive = tar::Archive::new(Counted {
        inner: reader,
        state: state.clone(),
    });
    let mut top: Option<OsString> = None;
    let mut sum = Extracted::default();
    let mut dirs: Vec<(Vec<OsString>, u32, u64)> = Vec::new();
    let map_read = |e: io::Error| stream_error(&state, &e);
    let entries = archive.entries().map_err(map_read)?;
    for entry in entries {
        let mut entry = entry.map_err(map_read)?;
        let name_bytes = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&name_bytes).into_owned();
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            continue;
        }
        let comps = components(&name_bytes)?;
        match &top {
            None => top = Some(comps[0].clone()),
            Some(t) if *t != comps[0] => {
                return Err(UntarError::OutsideTop {
                    entry: name,
                    top: t.to_string_lossy().into_owned(),
                })
            }
            Some(_) => {}
        }
        if entry.size() > opts.max_bytes.saturating_sub(state.read.get()) {
            return Err(UntarError::TooLarge {
                max: opts.max_bytes,
            });
        }
        let mut mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        if !opts.keep_setuid {
            mode &= !0o6000;
        }
        let mtime = entry.header().mtime().unwrap_or(0);
        let Some((leaf, parents)) = comps.split_last() else {
            continue; // `components` never answers an empty list
        };
        match kind {
            EntryType::Directory => {
                write_dir(root, &comps, &name)?;
                dirs.push((comps.clone(), mode, mtime));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let parent = open_dir(root, parents, true, &name)?;
                let size = entry.size();
                let n = write_file(&parent, leaf, &name, &mut entry, mode, mtime, &map_read)?;
                if n != size {
                    return Err(ended_early());
                }
                sum.bytes += n;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| UntarError::UnsafeName {
                        entry: name.clone(),
                        reason: "symlink without a target",
                    })?;
                let parent = open_dir(root, parents, true, &name)?;
                clear_slot(&parent, leaf, &name)?;
                symlinkat(OsStr::from_bytes(&target), &parent, leaf.as_os_str())
                    .map_err(|e| io_err(format!("Creating symlink {name} failed"), e))?;
            }
            EntryType::Link => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                let top = top.as_ref().unwrap_or(&comps[0]);
                write_hard_link(root, &comps, &name, &target, top)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                sum.skipped
                    .push(format!("{name}: device node or FIFO, not created"));
                continue;
            }
            other => {
                sum.skipped
                    .push(format!("{name}: unsupported entry type {other:?}, skipped"));
                continue;
            }
        }
        sum.entries += 1;
    }
    if state.eof.get() {
        return Err(ended_early());
    }
    let mut rest = archive.into_inner();
    drain_trailer(&mut rest, &state)?;
    let top = top.ok_or(UntarError::Empty)?;
    apply_dir_modes(root, &dirs)?;
    Ok((top, sum))
}

/// Creates the regular file `leaf` in `parent` (replacing a non-directory, never following a
/// symlink) with `entry`'s content; answers the bytes written.
fn write_file(
    parent: &OwnedFd,
    leaf: &OsStr,
    name: &str,
    entry: &mut impl Read,
    mode: u32,
    mtime: u64,
    map_read: &impl Fn(io::Error) -> UntarError,
) -> Result<u64, UntarError> {
    clear_slot(parent, leaf, name)?;
    let fd = openat(
        parent,
        leaf,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| io_err(format!("Creating {name} failed"), e))?;
    let mut file = File::from(fd);
    let n = copy_entry(entry, &mut file, name, map_read)?;
    fchmod(file.as_fd(), Mode::from_bits_truncate(mode))
        .map_err(|e| io_err(format!("Setting the mode of {name} failed"), e))?;
    let t = TimeSpec::new(i64::try_from(mtime).unwrap_or(0), 0);
    // Best effort, as tar does: a time the file system refuses is not worth failing the copy.
    let _ = futimens(file.as_fd(), &t, &t);
    Ok(n)
}

/// Creates the hard link `comps` to `target`, which must name an entry already extracted
/// under `top` (reached without following symlinks).
fn write_hard_link(
    root: &OwnedFd,
    comps: &[OsString],
    name: &str,
    target_bytes: &[u8],
    top: &OsString,
) -> Result<(), UntarError> {
    let bad = || UntarError::BadLink {
        entry: name.to_owned(),
        target: String::from_utf8_lossy(target_bytes).into_owned(),
    };
    let tcomps = components(target_bytes).map_err(|_| bad())?;
    if tcomps[0] != *top {
        return Err(bad());
    }
    let (Some((tleaf, tparents)), Some((leaf, parents))) =
        (tcomps.split_last(), comps.split_last())
    else {
        return Err(bad());
    };
    let tparent = open_dir(root, tparents, false, name).map_err(|_| bad())?;
    let parent = open_dir(root, parents, true, name)?;
    clear_slot(&parent, leaf, name)?;
    linkat(
        &tparent,
        tleaf.as_os_str(),
        &parent,
        leaf.as_os_str(),
        AtFlags::empty(),
    )
    .map_err(|e| match e {
        Errno::ENOENT => bad(),
        e => io_err(format!("Creating hard link {name} failed"), e),
    })
}

/// Sets the directories' modes, last and deepest first, so a read-only directory did not stop
/// its children from being written.
fn apply_dir_modes(root: &OwnedFd, dirs: &[(Vec<OsString>, u32, u64)]) -> Result<(), UntarError> {
    for (comps, mode, _) in dirs.iter().rev() {
        let name = comps
            .iter()
            .map(|c| c.to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let fd = open_dir(root, comps, false, &name)?;
        fchmod(fd.as_fd(), Mode::from_bits_truncate(*mode))
            .map_err(|e| io_err(format!("Setting the mode of {name} failed"), e))?;
    }
    Ok(())
}

/// What a failed read of the stream means: over the limit, cut short, or broken off.
fn stream_error(state: &CountState, e: &io::Error) -> UntarError {
    if state.over.get() {
        UntarError::TooLarge {
            max: state.max.get(),
        }
    } else if state.eof.get() || e.kind() == io::ErrorKind::UnexpectedEof {
        ended_early()
    } else {
        UntarError::Truncated {
            reason: format!("the stream broke off ({e})"),
        }
    }
}

/// Creates the directory `comps`; an existing directory is reused, anything else in the way
/// is refused (it is opened as a directory without following it).
fn write_dir(root: &OwnedFd, comps: &[OsString], name: &str) -> Result<(), UntarError> {
    let Some((leaf, parents)) = comps.split_last() else {
        return Ok(());
    };
    let parent = open_dir(root, parents, true, name)?;
    match mkdirat(&parent, leaf.as_os_str(), Mode::from_bits_truncate(0o700)) {
        Ok(()) => Ok(()),
        Err(Errno::EEXIST) => open_dir(root, comps, false, name).map(drop),
        Err(e) => Err(io_err(format!("Creating {name} failed"), e)),
    }
}

fn ended_early() -> UntarError {
    UntarError::Truncated {
        reason: "the stream ended before its end-of-archive block".into(),
    }
}

/// Copies an entry's content into `file`, telling the stream's failures (mapped by
/// `map_read`) from the file's.
fn copy_entry(
    entry: &mut impl Read,
    file: &mut File,
    name: &str,
    map_read: &impl Fn(io::Error) -> UntarError,
) -> Result<u64, UntarError> {
    use std::io::Write as _;
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        let got = match entry.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(map_read(e)),
        };
        file.write_all(&buf[..got])
            .map_err(|e| io_err(format!("Writing {name} failed"), e))?;
        n += got as u64;
    }
}

/// Reads what follows the end-of-archive block: zero padding only, and the stream must end
/// cleanly (a body cut off by hearthd fails here).
fn drain_trailer<R: Read>(r: &mut Counted<R>, state: &CountState) -> Result<(), UntarError> {
    let mut buf = [0u8; 8192];
    let mut seen = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(n) => n,
            Err(_) if state.over.get() => {
                return Err(UntarError::TooLarge {
                    max: state.max.get(),
                })
            }
            Err(e) => {
                return Err(UntarError::Truncated {
                    reason: format!("the stream broke off ({e})"),
                })
            }
        };
        if n == 0 {
            return Ok(());
        }
        seen += n as u64;
        if buf[..n].iter().any(|b| *b != 0) || seen > MAX_TRAILER {
            return Err(UntarError::TrailingData);
        }
    }
}

/// Extracts a copied path's tar stream to `dest` as `docker cp` does: into `dest` when it is
/// an existing directory (the copy keeps its name), else as `dest` itself (its parent must
/// exist). An existing file at the final path is replaced by a file; an existing directory is
/// refused. Extraction goes through a staging directory beside the result, removed on error.
///
/// # Errors
/// See [`UntarError`].
pub fn extract_to(
    reader: impl Read,
    dest: &Path,
    opts: UntarOptions,
) -> Result<Extracted, UntarError> {
    let (parent, rename_to) = if dest.is_dir() {
        (dest.to_path_buf(), None)
    } else {
        let name = dest
            .file_name()
            .ok_or_else(|| UntarError::NoParent {
                path: dest.to_path_buf(),
            })?
            .to_os_string();
        let parent = match dest.parent() {
            Some(p) if p.as_os_str().is_empty() => PathBuf::from("."),
            Some(p) => p.to_path_buf(),
            None => PathBuf::from("."),
        };
        if !parent.is_dir() {
            return Err(UntarError::NoParent {
                path: dest.to_path_buf(),
            });
        }
        (parent, Some(name))
    };
    let parent_fd: OwnedFd = File::open(&parent)
        .map_err(|e| io_err(format!("Opening {} failed", parent.display()), e))?
        .into();
    let stage_name = format!(".hearth-cp-{}-{}", std::process::id(), rand_suffix());
    let stage_path = parent.join(&stage_name);
    mkdirat(
        &parent_fd,
        stage_name.as_str(),
        Mode::from_bits_truncate(0o700),
    )
    .map_err(|e| io_err(format!("Creating {} failed", stage_path.display()), e))?;
    let result = (|| {
        let stage_fd = open_dir(
            &parent_fd,
            &[OsString::from(&stage_name)],
            false,
            &stage_name,
        )?;
        let (top, mut sum) = extract_into(reader, &stage_fd, opts)?;
        let final_name = rename_to.unwrap_or_else(|| top.clone());
        place(&stage_fd, &top, &parent_fd, &final_name, &parent)?;
        sum.path = parent.join(&final_name);
        Ok(sum)
    })();
    // The staging directory is empty after a success; after a failure it holds the partial
    // copy, removed without following any symlink in it.
    #[expect(
        clippy::disallowed_methods,
        reason = "the extractor owns its staging directory; std's remove_dir_all does not follow symlinks"
    )]
    let _ = std::fs::remove_dir_all(&stage_path);
    result
}

/// Moves the extracted top entry to its final name: a new name, or a file over a file.
fn place(
    stage: &OwnedFd,
    top: &OsStr,
    parent: &OwnedFd,
    final_name: &OsStr,
    parent_path: &Path,
) -> Result<(), UntarError> {
    let is_dir = |fd: &OwnedFd, n: &OsStr| {
        fstatat(fd, n, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
    };
    match is_dir(parent, final_name) {
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(io_err("Checking the destination failed", e)),
        Ok(existing_dir) => {
            let new_dir = is_dir(stage, top).map_err(|e| io_err("Checking the copy failed", e))?;
            if existing_dir || new_dir {
                return Err(UntarError::Exists {
                    path: parent_path.join(final_name),
                });
            }
        }
    }
    renameat(stage, top, parent, final_name)
        .map_err(|e| io_err("Moving the copy into place failed", e))
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    #[allow(clippy::cast_possible_truncation)]
    let t = t as u64;
    t ^ (u64::from(std::process::id()) << 32)
}

#[cfg(test)]
mod tests;
