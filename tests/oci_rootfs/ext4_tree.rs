//! Reading a built ext4 image without mounting it, through `debugfs` (e2fsprogs): one inode's
//! `stat`, a file's content, and the whole tree (names, types, modes, owners, sizes, link
//! targets, content hashes, hard-link counts) to compare with a directory on the host.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Runs one debugfs request on `img`; its standard output.
pub fn debugfs(img: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(img)
        .output()
        .expect("run debugfs (e2fsprogs)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What `debugfs stat` says of one inode.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stat {
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u32,
    pub link_dest: Option<String>,
    pub device: Option<String>,
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text.find(key)? + key.len();
    text[at..].split_whitespace().next()
}

/// `debugfs stat PATH`, or `None` when there is no such file.
pub fn stat(img: &Path, path: &str) -> Option<Stat> {
    let text = debugfs(img, &format!("stat {path}"));
    let kind = field(&text, "Type:")?.to_owned();
    Some(Stat {
        kind,
        mode: u32::from_str_radix(field(&text, "Mode:")?, 8).ok()?,
        uid: field(&text, "User:")?.parse().ok()?,
        gid: field(&text, "Group:")?.parse().ok()?,
        size: field(&text, "Size:")?.parse().ok()?,
        links: field(&text, "Links:")?.parse().ok()?,
        link_dest: text
            .split_once("Fast link dest: \"")
            .and_then(|(_, r)| r.split_once('"'))
            .map(|(d, _)| d.to_owned()),
        device: text
            .split_once("Device major/minor number: ")
            .and_then(|(_, r)| r.split_whitespace().next())
            .map(str::to_owned),
    })
}

/// A file's content, dumped with debugfs.
pub fn cat(img: &Path, path: &str) -> Vec<u8> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(img)
        .output()
        .expect("run debugfs");
    out.stdout
}

/// One name in a tree, as compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// `d`, `f`, `l`, `c`, `b`, `p`, `s`.
    pub kind: char,
    /// Permission bits incl. setuid, setgid, sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Size of a regular file (0 otherwise).
    pub size: u64,
    /// Names of this inode in the tree (regular files; 1 otherwise).
    pub nlink: u32,
    /// A symlink's target.
    pub target: Option<String>,
    /// sha256 of a regular file's content.
    pub sha: Option<String>,
}

fn kind_of(mode: u32) -> char {
    match mode & 0o170_000 {
        0o040_000 => 'd',
        0o100_000 => 'f',
        0o120_000 => 'l',
        0o020_000 => 'c',
        0o060_000 => 'b',
        0o010_000 => 'p',
        0o140_000 => 's',
        _ => '?',
    }
}

fn sha(path: &Path) -> String {
    let mut h = Sha256::new();
    h.update(fs::read(path).unwrap());
    format!("{:x}", h.finalize())
}

/// The tree under `root` on the host (not following symlinks), by path relative to it.
pub fn host_tree(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut work = vec![PathBuf::new()];
    while let Some(rel) = work.pop() {
        for e in fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let rel = rel.join(e.file_name());
            let path = root.join(&rel);
            let md = fs::symlink_metadata(&path).unwrap();
            let kind = kind_of(md.mode());
            if kind == 'd' {
                work.push(rel.clone());
            }
            out.insert(
                rel.to_string_lossy().into_owned(),
                Node {
                    kind,
                    mode: md.mode() & 0o7777,
                    uid: md.uid(),
                    gid: md.gid(),
                    size: if kind == 'f' { md.len() } else { 0 },
                    nlink: if kind == 'f' { md.nlink() as u32 } else { 1 },
                    target: (kind == 'l')
                        .then(|| fs::read_link(&path).unwrap().to_string_lossy().into_owned()),
                    sha: (kind == 'f').then(|| sha(&path)),
                },
            );
        }
    }
    out
}

/// The tree of the ext4 image `img` (without `lost+found`): structure from `ls -p` of every
/// directory (inode numbers give the hard links), content and link targets from `rdump`.
pub fn ext4_tree(img: &Path, scratch: &Path) -> BTreeMap<String, Node> {
    let dump = scratch.join("rdump");
    fs::create_dir_all(&dump).unwrap();
    debugfs(img, &format!("rdump / {}", dump.display()));
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<u64, Vec<String>> = HashMap::new();
    let mut work = vec![String::new()];
    while let Some(dir) = work.pop() {
        let listing = debugfs(img, &format!("ls -p /{dir}"));
        for line in listing.lines() {
            // /inode/mode/uid/gid/name/size/
            let parts: Vec<&str> = line.split('/').collect();
            if parts.len() < 7 {
                continue;
            }
            let name = parts[5];
            if name == "." || name == ".." || (dir.is_empty() && name == "lost+found") {
                continue;
            }
            let rel = if dir.is_empty() {
                name.to_owned()
            } else {
                format!("{dir}/{name}")
            };
            let ino: u64 = parts[1].parse().unwrap();
            let mode = u32::from_str_radix(parts[2], 8).unwrap();
            let kind = kind_of(mode);
            if kind == 'd' {
                work.push(rel.clone());
            }
            if kind == 'f' {
                inodes.entry(ino).or_default().push(rel.clone());
            }
            let host = dump.join(&rel);
            out.insert(
                rel,
                Node {
                    kind,
                    mode: mode & 0o7777,
                    uid: parts[3].parse().unwrap(),
                    gid: parts[4].parse().unwrap(),
                    size: if kind == 'f' {
                        parts[6].parse().unwrap()
                    } else {
                        0
                    },
                    nlink: 1,
                    target: (kind == 'l')
                        .then(|| fs::read_link(&host).unwrap().to_string_lossy().into_owned()),
                    sha: (kind == 'f').then(|| sha(&host)),
                },
            );
        }
    }
    for names in inodes.values() {
        for n in names {
            out.get_mut(n).unwrap().nlink = names.len() as u32;
        }
    }
    out
}
