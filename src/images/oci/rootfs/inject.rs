//! Making hearth's agent the guest's init: the static agent binary goes to
//! [`INIT_PATH`](hearth_proto::init::INIT_PATH) and the image's command, as an [`InitSpec`],
//! to [`INIT_SPEC_PATH`](hearth_proto::init::INIT_SPEC_PATH).
//!
//! The directories on the way (`/sbin`, `/etc/hearth`) are resolved *inside* the tree: an image
//! whose `/sbin` is a symlink (usrmerge: `/sbin -> usr/sbin`) gets the agent in `usr/sbin`, as
//! the guest will see it, and a symlink can never lead out of the tree (an absolute target or
//! `..` stops at the tree's root, like the guest's own `/`). Missing directories, including a
//! dangling symlink's target, are created (`0755`, root-owned).
//!
//! Only for [`InitMode::Hearth`](super::InitMode): an image built for its own init gets
//! nothing injected; it is booted as its layers made it.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use hearth_proto::init::{InitSpec, INIT_PATH, INIT_SPEC_PATH, MAX_SPEC_BYTES};
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, mkdirat, Mode, SFlag};

use super::tree::{self, Meta};
use super::{ImageConfig, RootfsError};

/// The `PATH` given to the command when the image's `Env` has none (Docker's default).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The most symlinks followed while resolving one directory (Linux's own limit).
const MAX_SYMLINKS: u32 = 40;
/// The largest agent binary accepted.
const MAX_AGENT_BYTES: u64 = 256 << 20;

/// The init spec for `config`: `Entrypoint` + `Cmd` as argv, `Env` (with a default `PATH`
/// when it has none), `WorkingDir`, `User`. Refused when there is no command.
pub fn init_spec(config: &ImageConfig) -> Result<InitSpec, RootfsError> {
    let argv: Vec<String> = config
        .entrypoint
        .iter()
        .chain(&config.cmd)
        .cloned()
        .collect();
    if argv.is_empty() {
        return Err(RootfsError::NoCommand);
    }
    let mut env = config.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_owned());
    }
    let spec = InitSpec {
        argv,
        env,
        working_dir: config.working_dir.clone(),
        user: config.user.clone(),
    };
    spec.validate()?;
    Ok(spec)
}

/// Checks that `agent` is a static `x86_64` ELF executable (an init cannot rely on the image's
/// dynamic loader and libc, which may be musl, missing, or another version).
pub fn check_static(agent: &Path, bytes: &[u8]) -> Result<(), RootfsError> {
    let bad = |reason: &str| RootfsError::Agent {
        path: agent.to_path_buf(),
        reason: reason.to_owned(),
    };
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return Err(bad("not an ELF file"));
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err(bad("not a 64-bit little-endian ELF"));
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    if u16_at(18) != 62 {
        return Err(bad("not an x86_64 binary"));
    }
    let mut off = [0u8; 8];
    off.copy_from_slice(&bytes[32..40]);
    let phoff = u64::from_le_bytes(off);
    let phentsize = u64::from(u16_at(54));
    let phnum = u64::from(u16_at(56));
    if phentsize < 4 {
        return Err(bad("malformed program headers"));
    }
    for i in 0..phnum {
        let start = phoff
            .checked_add(i * phentsize)
            .and_then(|s| usize::try_from(s).ok())
            .filter(|s| s + phentsize as usize <= bytes.len())
            .ok_or_else(|| bad("malformed program headers"))?;
        let p_type = u32::from_le_bytes([
            bytes[start],
            bytes[start + 1],
            bytes[start + 2],
            bytes[start + 3],
        ]);
        const PT_INTERP: u32 = 3;
        if p_type == PT_INTERP {
            return Err(bad(
                "dynamically linked (it names an interpreter); build it static with \
                 scripts/build-agent-static.sh",
            ));
        }
    }
    Ok(())
}

/// Injects the agent and the init spec into the tree at `root`.
pub fn inject(root: &Path, agent: &Path, config: &ImageConfig) -> Result<(), RootfsError> {
    let spec = init_spec(config)?;
    let body = serde_json::to_vec_pretty(&spec).map_err(|e| RootfsError::Agent {
        path: agent.to_path_buf(),
        reason: format!("cannot encode the init spec: {e}"),
    })?;
    if body.len() > MAX_SPEC_BYTES {
        return Err(RootfsError::Spec(
            hearth_proto::init::InitSpecError::TooLarge {
                len: body.len(),
                max: MAX_SPEC_BYTES,
            },
        ));
    }
    let agent_bytes = read_agent(agent)?;
    check_static(agent, &agent_bytes)?;
    let root_fd: OwnedFd = File::open(root)
        .map_err(|source| RootfsError::Io {
            op: "open",
            path: root.to_path_buf(),
            source,
        })?
        .into();
    put_file(&root_fd, INIT_PATH, &agent_bytes, 0o755)?;
    put_file(&root_fd, INIT_SPEC_PATH, &body, 0o644)
}

fn read_agent(agent: &Path) -> Result<Vec<u8>, RootfsError> {
    let io = |source| RootfsError::Io {
        op: "read the agent",
        path: agent.to_path_buf(),
        source,
    };
    let f = File::open(agent).map_err(io)?;
    let md = f.metadata().map_err(io)?;
    if !md.is_file() {
        return Err(RootfsError::Agent {
            path: agent.to_path_buf(),
            reason: "not a regular file".into(),
        });
    }
    if md.len() > MAX_AGENT_BYTES {
        return Err(RootfsError::Agent {
            path: agent.to_path_buf(),
            reason: format!("larger than {MAX_AGENT_BYTES} bytes"),
        });
    }
    let mut bytes = Vec::with_capacity(md.len() as usize);
    f.take(MAX_AGENT_BYTES)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    Ok(bytes)
}

/// Writes `bytes` as the root-owned file `guest_path` (absolute, as the guest sees it),
/// replacing a non-directory there.
fn put_file(root: &OwnedFd, guest_path: &str, bytes: &[u8], mode: u32) -> Result<(), RootfsError> {
    let fail = |op: &'static str| {
        move |e: Errno| RootfsError::Inject {
            path: guest_path.to_owned(),
            op,
            source: e.into(),
        }
    };
    let (dir, leaf) = guest_path.rsplit_once('/').unwrap_or(("", guest_path));
    let dir_fd = resolve_dir(root, dir.as_bytes()).map_err(fail("create the directory of"))?;
    let leaf = OsStr::new(leaf);
    if tree::clear(&dir_fd, leaf, true).map_err(fail("replace"))? {
        return Err(fail("replace")(Errno::EISDIR));
    }
    let fd = openat(
        &dir_fd,
        leaf,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(fail("create"))?;
    let mut file = File::from(fd);
    file.write_all(bytes)
        .map_err(|e| fail("write")(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))))?;
    drop(file);
    let meta = Meta {
        mode,
        mtime: 0,
        ..Meta::default()
    };
    tree::set_meta(&dir_fd, leaf, &meta, false).map_err(fail("set the metadata of"))?;
    // A time of 0 says nothing; keep the file's own (now).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    tree::set_mtime(&dir_fd, leaf, now).map_err(fail("set the time of"))
}

/// Opens the directory `path` of the guest, resolving symlinks as the guest would but never
/// above the tree's root, creating what is missing.
fn resolve_dir(root: &OwnedFd, path: &[u8]) -> Result<OwnedFd, Errno> {
    let dir_flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let open_root = || openat(root, ".", dir_flags, Mode::empty());
    // The directories walked so far, from the root (`..` pops; never past the root).
    let mut stack: Vec<OwnedFd> = vec![open_root()?];
    let mut todo: Vec<OsString> = components(path);
    todo.reverse();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let cur = stack.last().ok_or(Errno::EINVAL)?;
        match fstatat(cur, c.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => {
                mkdirat(cur, c.as_os_str(), Mode::from_bits_truncate(0o755))?;
                let fd = openat(cur, c.as_os_str(), dir_flags, Mode::empty())?;
                tree::set_meta(
                    &fd,
                    OsStr::new("."),
                    &Meta {
                        mode: 0o755,
                        ..Meta::default()
                    },
                    false,
                )?;
                stack.push(fd);
            }
            Err(e) => return Err(e),
            Ok(st) => match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
                SFlag::S_IFDIR => {
                    let fd = openat(cur, c.as_os_str(), dir_flags, Mode::empty())?;
                    stack.push(fd);
                }
                SFlag::S_IFLNK => {
                    hops += 1;
                    if hops > MAX_SYMLINKS {
                        return Err(Errno::ELOOP);
                    }
                    let target = readlinkat(cur, c.as_os_str())?;
                    let bytes = target.as_bytes();
                    if bytes.first() == Some(&b'/') {
                        stack.truncate(1);
                    }
                    let mut more = components(bytes);
                    more.reverse();
                    todo.extend(more);
                }
                _ => return Err(Errno::ENOTDIR),
            },
        }
    }
    stack.pop().ok_or(Errno::EINVAL)
}

/// A path's components, `.` and empty ones dropped, `..` kept (resolved by the caller).
fn components(path: &[u8]) -> Vec<OsString> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| OsStr::from_bytes(c).to_os_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt};

    fn cfg(entrypoint: &[&str], cmd: &[&str], env: &[&str]) -> ImageConfig {
        let v = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect();
        ImageConfig {
            entrypoint: v(entrypoint),
            cmd: v(cmd),
            env: v(env),
            working_dir: Some("/srv".into()),
            user: Some("1000:1000".into()),
            ..ImageConfig::default()
        }
    }

    #[test]
    fn spec_from_config() {
        let s = init_spec(&cfg(&["/bin/app"], &["--port", "80"], &["A=1"])).unwrap();
        assert_eq!(s.argv, ["/bin/app", "--port", "80"]);
        assert_eq!(s.env, [DEFAULT_PATH, "A=1"]);
        assert_eq!(s.working_dir.as_deref(), Some("/srv"));
        assert_eq!(s.user.as_deref(), Some("1000:1000"));
        let s = init_spec(&cfg(&[], &["sh"], &["PATH=/x"])).unwrap();
        assert_eq!(s.env, ["PATH=/x"]);
        assert!(matches!(
            init_spec(&cfg(&[], &[], &[])),
            Err(RootfsError::NoCommand)
        ));
    }

    #[test]
    fn static_check() {
        // A minimal ELF header: x86_64, program headers at 64, one PT_LOAD (or PT_INTERP).
        let elf = |p_type: u32| {
            let mut b = vec![0u8; 64 + 56];
            b[..4].copy_from_slice(b"\x7fELF");
            b[4] = 2;
            b[5] = 1;
            b[18] = 62;
            b[32] = 64;
            b[54] = 56;
            b[56] = 1;
            b[64..68].copy_from_slice(&p_type.to_le_bytes());
            b
        };
        check_static(Path::new("static"), &elf(1)).unwrap();
        assert!(check_static(Path::new("dynamic"), &elf(3)).is_err());
        let mut cut = elf(1);
        cut.truncate(70);
        assert!(check_static(Path::new("cut"), &cut).is_err());
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        let err = check_static(Path::new("me"), &me).unwrap_err().to_string();
        assert!(err.contains("dynamically linked"), "{err}");
        assert!(check_static(Path::new("x"), b"#!/bin/sh\n").is_err());
        assert!(check_static(Path::new("x"), &[0u8; 100]).is_err());
    }

    #[test]
    fn usrmerge_sbin_is_resolved_inside_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("usr")).unwrap();
        // Dangling and absolute: the guest's /usr/sbin, not the host's.
        symlink("/usr/sbin", root.join("sbin")).unwrap();
        symlink("../../../../etc-elsewhere", root.join("etc")).unwrap();
        let fd: OwnedFd = File::open(root).unwrap().into();
        put_file(&fd, "/sbin/hearth-init", b"agent", 0o755).unwrap();
        put_file(&fd, "/etc/hearth/init.json", b"{}", 0o644).unwrap();
        let md = fs::metadata(root.join("usr/sbin/hearth-init")).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o755);
        assert_eq!((md.uid(), md.gid()), (0, 0));
        assert_eq!(
            fs::read(root.join("etc-elsewhere/hearth/init.json")).unwrap(),
            b"{}"
        );
        assert!(root.join("usr/sbin").is_dir());
        // A loop of symlinks is an error, not a hang.
        symlink("b", root.join("a")).unwrap();
        symlink("a", root.join("b")).unwrap();
        assert_eq!(resolve_dir(&fd, b"/a").err(), Some(Errno::ELOOP));
        // A directory in the way of the file is refused.
        fs::create_dir_all(root.join("usr/sbin/hearth-dir")).unwrap();
        assert!(put_file(&fd, "/sbin/hearth-dir", b"x", 0o755).is_err());
    }
}
