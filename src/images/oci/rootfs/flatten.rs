//! Applying layers, in order, to the scratch tree. Each entry's path is checked
//! ([`safe_path::split_name`]: relative, no `..`) and reached one directory at a time without
//! following symlinks, so an entry can neither name nor write through anything outside the
//! tree; an existing symlink at the entry's own name is replaced, never followed. Symlinks are
//! created as given (they are only ever followed inside the guest). Hard links must name a
//! non-directory already in the tree. Owners, modes (setuid, setgid, sticky), device nodes,
//! FIFOs, extended attributes and times are restored. Every count and size is bounded by
//! [`FlattenLimits`].

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{mkdirat, mknodat, Mode, SFlag};
use nix::unistd::{linkat, symlinkat};
use tar::{Entry, EntryType};

use super::layer::{self, Meter, MeterState};
use super::tree::{self, Meta, Slot};
use super::whiteout::{self, LayerPaths};
use super::{FlattenLimits, LayerBlob, RootfsError};
use crate::safe_path::{self, WalkError};

/// The most bytes of zero padding read after a layer's end-of-archive block.
const MAX_TRAILER: u64 = 1 << 20;
/// Header bytes allowed per entry besides long names and extended attributes.
const HEADER_SLACK: u64 = 64 << 10;
/// The most bytes of paths remembered while flattening (which paths the current layer made,
/// for whiteouts; directory times): bounds memory whatever the layers hold.
pub const MAX_TRACKED_PATH_BYTES: u64 = 256 << 20;
/// Mode of directories an entry implies without listing them.
const IMPLIED_DIR_MODE: u32 = 0o755;

/// What flattening wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flattened {
    /// Tar entries read, all layers together (whiteouts included).
    pub entries: u64,
    /// Bytes of file content written, all layers together.
    pub bytes: u64,
}

/// Flattens `layers` into the empty directory `root`.
pub fn flatten(
    layers: &[LayerBlob],
    root: &Path,
    limits: &FlattenLimits,
) -> Result<Flattened, RootfsError> {
    if layers.len() > limits.max_layers {
        return Err(RootfsError::TooManyLayers {
            count: layers.len(),
            max: limits.max_layers,
        });
    }
    let root_fd: OwnedFd = File::open(root)
        .map_err(|source| RootfsError::Io {
            op: "open",
            path: root.to_path_buf(),
            source,
        })?
        .into();
    let mut f = Flattener {
        root: root_fd,
        limits,
        sum: Flattened::default(),
        dir_times: HashMap::new(),
        dir_bytes: 0,
    };
    for layer in layers {
        f.layer(layer)?;
    }
    f.finish_dir_times();
    Ok(f.sum)
}

struct Flattener<'a> {
    root: OwnedFd,
    limits: &'a FlattenLimits,
    sum: Flattened,
    /// Directory mtimes, set last (creating children changes them), deepest first.
    dir_times: HashMap<Vec<u8>, i64>,
    /// Bytes of the keys of `dir_times`.
    dir_bytes: u64,
}

/// One entry being applied, for error messages.
struct At<'a> {
    digest: &'a str,
    entry: String,
}

impl At<'_> {
    fn refuse(&self, reason: impl Into<String>) -> RootfsError {
        RootfsError::UnsafeEntry {
            digest: self.digest.to_owned(),
            entry: self.entry.clone(),
            reason: reason.into(),
        }
    }

    fn limit(&self, what: &'static str, max: u64) -> RootfsError {
        RootfsError::Limit {
            digest: self.digest.to_owned(),
            what,
            max,
        }
    }

    fn fs(&self, op: &'static str) -> impl FnOnce(Errno) -> RootfsError + '_ {
        move |e| RootfsError::Entry {
            digest: self.digest.to_owned(),
            entry: self.entry.clone(),
            op,
            source: e.into(),
        }
    }

    fn walk(&self, e: WalkError) -> RootfsError {
        match e {
            WalkError::ThroughSymlink => {
                self.refuse("its path goes through a symlink or a non-directory")
            }
            WalkError::Io(e) => self.fs("open the directory of")(e),
        }
    }
}

fn malformed(layer: &LayerBlob, reason: impl Into<String>) -> RootfsError {
    RootfsError::Malformed {
        digest: layer.digest.clone(),
        reason: reason.into(),
    }
}

/// What a failed read of a layer means: headers over their budget, the stream cut short, or
/// broken (bad compression, bad tar).
fn stream_error(layer: &LayerBlob, state: &MeterState, budget: u64, e: &io::Error) -> RootfsError {
    if state.headers_over.get() {
        RootfsError::Limit {
            digest: layer.digest.clone(),
            what: "bytes of tar headers (long names, pax records) for one entry",
            max: budget,
        }
    } else if state.eof.get() || e.kind() == io::ErrorKind::UnexpectedEof {
        malformed(
            layer,
            "truncated: the stream ends before its end-of-archive block",
        )
    } else {
        malformed(layer, e.to_string())
    }
}

impl Flattener<'_> {
    fn header_budget(&self) -> u64 {
        let l = self.limits;
        // A long name and a long link name, each possibly twice (GNU and pax), plus xattrs.
        4 * l.max_path_bytes as u64
            + l.max_xattrs_per_entry as u64 * (l.max_xattr_bytes as u64 + 512)
            + HEADER_SLACK
    }

    fn layer(&mut self, layer: &LayerBlob) -> Result<(), RootfsError> {
        let state = Rc::new(MeterState::default());
        let budget = self.header_budget();
        let mut archive = tar::Archive::new(Meter::new(layer::open(layer)?, state.clone()));
        let mut ours = LayerPaths::default();
        let mut ours_bytes = 0u64;
        state.headers(budget);
        let mut entries = archive
            .entries()
            .map_err(|e| stream_error(layer, &state, budget, &e))?;
        loop {
            state.headers(budget);
            let Some(entry) = entries.next() else { break };
            let mut entry = entry.map_err(|e| stream_error(layer, &state, budget, &e))?;
            state.content();
            self.sum.entries += 1;
            if self.sum.entries > self.limits.max_entries {
                return Err(RootfsError::Limit {
                    digest: layer.digest.clone(),
                    what: "tar entries in all layers",
                    max: self.limits.max_entries,
                });
            }
            ours_bytes += self.entry(layer, &mut entry, &mut ours, &state, budget)?;
            if ours_bytes + self.dir_bytes > MAX_TRACKED_PATH_BYTES {
                return Err(RootfsError::Limit {
                    digest: layer.digest.clone(),
                    what: "bytes of paths remembered while flattening",
                    max: MAX_TRACKED_PATH_BYTES,
                });
            }
            // Data an entry carries but does not use (e.g. on a symlink) still counts.
            let rest = self.copy_content(layer, &mut entry, &mut io::sink(), &state, budget)?;
            self.sum.bytes += rest;
        }
        if state.eof.get() {
            return Err(malformed(
                layer,
                "truncated: the stream ends before its end-of-archive block",
            ));
        }
        state.content();
        drain_trailer(layer, &mut archive.into_inner(), &state, budget)
    }

    /// Copies an entry's content into `out`, within the content limits; answers the bytes.
    fn copy_content(
        &self,
        layer: &LayerBlob,
        entry: &mut impl Read,
        out: &mut impl Write,
        state: &MeterState,
        budget: u64,
    ) -> Result<u64, RootfsError> {
        let mut buf = vec![0u8; 64 << 10];
        let mut n = 0u64;
        loop {
            let got = match entry.read(&mut buf) {
                Ok(0) => return Ok(n),
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(stream_error(layer, state, budget, &e)),
            };
            n += got as u64;
            if self.sum.bytes + n > self.limits.max_total_bytes {
                return Err(RootfsError::Limit {
                    digest: layer.digest.clone(),
                    what: "bytes of file content in all layers",
                    max: self.limits.max_total_bytes,
                });
            }
            out.write_all(&buf[..got])
                .map_err(|source| RootfsError::Io {
                    op: "write a file of",
                    path: layer.path.clone(),
                    source,
                })?;
        }
    }

    #[expect(clippy::too_many_lines, reason = "one match over the entry types")]
    fn entry<R: Read>(
        &mut self,
        layer: &LayerBlob,
        entry: &mut Entry<'_, R>,
        ours: &mut LayerPaths,
        state: &MeterState,
        budget: u64,
    ) -> Result<u64, RootfsError> {
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            return Ok(0);
        }
        let name = entry.path_bytes().into_owned();
        let at = At {
            digest: &layer.digest,
            entry: String::from_utf8_lossy(&name).into_owned(),
        };
        if name.len() > self.limits.max_path_bytes {
            return Err(at.limit(
                "bytes in an entry's path",
                self.limits.max_path_bytes as u64,
            ));
        }
        let comps = safe_path::split_name(&name).map_err(|r| at.refuse(r))?;
        let Some((leaf, parents)) = comps.split_last() else {
            // `./`: the root directory itself.
            if kind != EntryType::Directory {
                return Err(at.refuse("the root is not a directory"));
            }
            let meta = self.meta(&at, entry)?;
            tree::set_meta(&self.root, OsStr::new("."), &meta, false)
                .map_err(at.fs("set the metadata of"))?;
            self.dir_times.insert(Vec::new(), meta.mtime);
            return Ok(0);
        };
        if let Some(w) = whiteout::parse(leaf) {
            let w = w.map_err(|r| at.refuse(r))?;
            return whiteout::apply(&self.root, parents, &w, ours)
                .map(|()| 0)
                .map_err(|e| match e {
                    whiteout::WhiteoutError::ThroughSymlink => {
                        at.refuse("its path goes through a symlink or a non-directory")
                    }
                    whiteout::WhiteoutError::Io(e) => at.fs("apply the whiteout")(e),
                });
        }
        let meta = self.meta(&at, entry)?;
        let parent = safe_path::open_dir(
            &self.root,
            parents,
            Some(Mode::from_bits_truncate(IMPLIED_DIR_MODE)),
        )
        .map_err(|e| at.walk(e))?;
        let remembered = ours.add(&comps);
        let leaf = leaf.as_os_str();
        match kind {
            EntryType::Directory => {
                let kept = tree::clear(&parent, leaf, true).map_err(at.fs("replace"))?;
                if !kept {
                    mkdirat(&parent, leaf, Mode::from_bits_truncate(0o700))
                        .map_err(at.fs("create"))?;
                }
                tree::set_meta(&parent, leaf, &meta, false)
                    .map_err(at.fs("set the metadata of"))?;
                let k = whiteout::key(&comps);
                let len = k.len() as u64;
                if self.dir_times.insert(k, meta.mtime).is_none() {
                    self.dir_bytes += len;
                }
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let size = entry.size();
                if size > self.limits.max_file_bytes {
                    return Err(at.limit("bytes in one file", self.limits.max_file_bytes));
                }
                tree::clear(&parent, leaf, false).map_err(at.fs("replace"))?;
                let fd = openat(
                    &parent,
                    leaf,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(at.fs("create"))?;
                let mut file = File::from(fd);
                let n = self.copy_content(layer, entry, &mut file, state, budget)?;
                if n != size {
                    return Err(malformed(
                        layer,
                        format!("truncated: {} holds {n} of its {size} bytes", at.entry),
                    ));
                }
                self.sum.bytes += n;
                drop(file);
                tree::set_meta(&parent, leaf, &meta, false)
                    .map_err(at.fs("set the metadata of"))?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| at.refuse("symlink without a target"))?
                    .into_owned();
                if target.len() > self.limits.max_path_bytes || target.is_empty() {
                    return Err(at.refuse("symlink target empty or too long"));
                }
                if target.contains(&0) {
                    return Err(at.refuse("symlink target holds a NUL byte"));
                }
                tree::clear(&parent, leaf, false).map_err(at.fs("replace"))?;
                symlinkat(OsStr::from_bytes(&target), &parent, leaf).map_err(at.fs("create"))?;
                tree::set_meta(&parent, leaf, &meta, true).map_err(at.fs("set the metadata of"))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| at.refuse("hard link without a target"))?
                    .into_owned();
                self.hard_link(&at, &parent, &comps, &target)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (sflag, dev) = if kind == EntryType::Fifo {
                    (SFlag::S_IFIFO, 0)
                } else {
                    let major = entry.header().device_major().ok().flatten().unwrap_or(0);
                    let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
                    let flag = if kind == EntryType::Char {
                        SFlag::S_IFCHR
                    } else {
                        SFlag::S_IFBLK
                    };
                    (flag, libc::makedev(major, minor))
                };
                tree::clear(&parent, leaf, false).map_err(at.fs("replace"))?;
                mknodat(&parent, leaf, sflag, Mode::from_bits_truncate(0o600), dev)
                    .map_err(at.fs("create"))?;
                tree::set_meta(&parent, leaf, &meta, false)
                    .map_err(at.fs("set the metadata of"))?;
            }
            other => return Err(at.refuse(format!("unsupported entry type {other:?}"))),
        }
        Ok(remembered)
    }

    /// Links `comps` (in `parent`) to `target`, which must be a non-directory in the tree.
    fn hard_link(
        &self,
        at: &At<'_>,
        parent: &OwnedFd,
        comps: &[OsString],
        target: &[u8],
    ) -> Result<(), RootfsError> {
        let shown = String::from_utf8_lossy(target);
        if target.len() > self.limits.max_path_bytes {
            return Err(at.limit(
                "bytes in an entry's path",
                self.limits.max_path_bytes as u64,
            ));
        }
        let tcomps = safe_path::split_name(target)
            .map_err(|r| at.refuse(format!("hard link target {shown:?}: {r}")))?;
        let Some((tleaf, tparents)) = tcomps.split_last() else {
            return Err(at.refuse("hard link to the root"));
        };
        if tcomps == comps {
            return Ok(());
        }
        let missing = || at.refuse(format!("hard link target {shown:?} is not in the image"));
        let tparent = match safe_path::open_dir(&self.root, tparents, None) {
            Ok(fd) => fd,
            Err(WalkError::Io(Errno::ENOENT)) => return Err(missing()),
            Err(e) => return Err(at.walk(e)),
        };
        match tree::slot(&tparent, tleaf).map_err(at.fs("check the target of"))? {
            Slot::Empty => return Err(missing()),
            Slot::Dir => return Err(at.refuse(format!("hard link to the directory {shown:?}"))),
            Slot::Other => {}
        }
        let leaf = comps.last().map_or(OsStr::new(""), OsString::as_os_str);
        tree::clear(parent, leaf, false).map_err(at.fs("replace"))?;
        // linkat without AT_SYMLINK_FOLLOW links a symlink itself, never what it points to.
        linkat(&tparent, tleaf.as_os_str(), parent, leaf, AtFlags::empty()).map_err(at.fs("create"))
    }

    /// The entry's owner, mode, mtime and extended attributes (pax `SCHILY.xattr.*`), bounded.
    fn meta<R: Read>(&self, at: &At<'_>, entry: &mut Entry<'_, R>) -> Result<Meta, RootfsError> {
        let h = entry.header();
        // An empty (unparsable) id field is 0, as Go's archive/tar (umoci, Docker) reads it.
        let id = |v: io::Result<u64>, what| {
            u32::try_from(v.unwrap_or(0))
                .map_err(|_| at.refuse(format!("{what} is not a 32-bit id")))
        };
        let uid = id(h.uid(), "owner")?;
        let gid = id(h.gid(), "group")?;
        let mode = h.mode().map_err(|_| at.refuse("unreadable mode"))? & 0o7777;
        let mtime = h
            .mtime()
            .ok()
            .and_then(|t| i64::try_from(t).ok())
            .unwrap_or(0);
        let mut xattrs = Vec::new();
        if let Some(exts) = entry
            .pax_extensions()
            .map_err(|_| at.refuse("unreadable pax records"))?
        {
            for ext in exts {
                let ext = ext.map_err(|_| at.refuse("malformed pax record"))?;
                let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
                    continue;
                };
                if xattrs.len() >= self.limits.max_xattrs_per_entry {
                    return Err(at.limit(
                        "extended attributes on one entry",
                        self.limits.max_xattrs_per_entry as u64,
                    ));
                }
                let value = ext.value_bytes();
                if value.len() > self.limits.max_xattr_bytes {
                    return Err(at.limit(
                        "bytes in one extended attribute",
                        self.limits.max_xattr_bytes as u64,
                    ));
                }
                if name.is_empty() || name.len() > 255 || name.contains(&0) {
                    return Err(at.refuse("bad extended attribute name"));
                }
                xattrs.push((name.to_vec(), value.to_vec()));
            }
        }
        Ok(Meta {
            uid,
            gid,
            mode,
            mtime,
            xattrs,
        })
    }

    /// Sets the directories' mtimes, deepest first; ones removed by a later layer are skipped.
    fn finish_dir_times(&mut self) {
        let mut dirs: Vec<_> = self.dir_times.drain().collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.0.len()));
        for (k, mtime) in dirs {
            let comps: Vec<OsString> = if k.is_empty() {
                Vec::new()
            } else {
                k.split(|b| *b == b'/')
                    .map(|c| OsStr::from_bytes(c).to_os_string())
                    .collect()
            };
            // Best effort, as tar does: a time is not worth failing the image for.
            let Some((leaf, parents)) = comps.split_last() else {
                let _ = tree::set_mtime(&self.root, OsStr::new("."), mtime);
                continue;
            };
            let Ok(parent) = safe_path::open_dir(&self.root, parents, None) else {
                continue;
            };
            if tree::slot(&parent, leaf) == Ok(Slot::Dir) {
                let _ = tree::set_mtime(&parent, leaf, mtime);
            }
        }
    }
}

/// Reads what follows the end-of-archive block: zero padding only, then the end of the
/// stream (which makes a compressed stream check its own trailer, e.g. gzip's CRC).
fn drain_trailer(
    layer: &LayerBlob,
    r: &mut impl Read,
    state: &MeterState,
    budget: u64,
) -> Result<(), RootfsError> {
    let mut buf = [0u8; 8192];
    let mut seen = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(stream_error(layer, state, budget, &e)),
        };
        if n == 0 {
            return Ok(());
        }
        seen += n as u64;
        if buf[..n].iter().any(|b| *b != 0) || seen > MAX_TRAILER {
            return Err(malformed(layer, "data after the end-of-archive block"));
        }
    }
}
