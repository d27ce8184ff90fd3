//! File transfer through the real agent: `stat`, `get_archive`/`put_archive` round trips (a
//! 100 MiB file with sha256 checks), and hostile archives refused by `put_archive`.

mod common;

use std::io::{self, Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use common::{sha256, Agent, Conn};
use hearth_proto::agent::frame::{write_frame, Frame, FrameKind, MAX_PAYLOAD};
use hearth_proto::agent::{
    codes, AgentProtoError, ArchiveRequest, Empty, PathKind, PathStat, Request, StatRequest,
};

/// Writes bytes to the agent as DATA frames.
struct Frames<'a>(&'a mut Conn);

impl Write for Frames<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(MAX_PAYLOAD);
        write_frame(
            &mut self.0.w,
            &Frame::new(FrameKind::Data, data[..n].to_vec()),
        )?;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads the agent's DATA frames until END.
struct Data<'a>(&'a mut Conn, Vec<u8>, usize);

impl Read for Data<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.2 == self.1.len() {
            let f = self.0.frame().expect("stream ended before END");
            match f.kind {
                FrameKind::Data => {
                    self.1 = f.payload;
                    self.2 = 0;
                }
                FrameKind::End => return Ok(0),
                other => panic!(
                    "unexpected {other:?}: {}",
                    String::from_utf8_lossy(&f.payload)
                ),
            }
        }
        let n = out.len().min(self.1.len() - self.2);
        out[..n].copy_from_slice(&self.1[self.2..self.2 + n]);
        self.2 += n;
        Ok(n)
    }
}

/// Sends `tar` bytes (already a tar stream, possibly hostile) to `put_archive` into `dir`;
/// returns the final frame.
fn put_raw(agent: &Agent, dir: &Path, tar: &[u8]) -> Frame {
    let mut c = agent.connect();
    let _: Empty = c
        .call(&Request::PutArchive(ArchiveRequest {
            path: dir.to_str().unwrap().into(),
        }))
        .unwrap();
    for chunk in tar.chunks(MAX_PAYLOAD) {
        c.send(&Frame::new(FrameKind::Data, chunk.to_vec()));
    }
    c.send(&Frame::empty(FrameKind::End));
    let last = c.frame().expect("no final frame");
    assert!(c.frame().is_none(), "the final frame is the last");
    last
}

/// Deterministic pseudo-random bytes (xorshift), written to `path`.
fn random_file(path: &Path, len: usize) {
    let mut f = io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut left = len;
    while left > 0 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        let n = left.min(8);
        f.write_all(&b[..n]).unwrap();
        left -= n;
    }
    f.flush().unwrap();
}

fn sha256_file(path: &Path) -> String {
    sha256(&std::fs::read(path).unwrap())
}

#[test]
fn stat_reports_kinds_without_following_symlinks() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"12345").unwrap();
    std::fs::set_permissions(dir.path().join("f"), std::fs::Permissions::from_mode(0o640)).unwrap();
    symlink("/etc/hostname", dir.path().join("l")).unwrap();
    let stat = |p: &Path| {
        agent.call::<PathStat>(&Request::Stat(StatRequest {
            path: p.to_str().unwrap().into(),
        }))
    };
    let f = stat(&dir.path().join("f")).unwrap();
    assert_eq!(
        (f.name.as_str(), f.kind, f.size, f.mode),
        ("f", PathKind::File, 5, 0o640)
    );
    let l = stat(&dir.path().join("l")).unwrap();
    assert_eq!(
        (l.kind, l.link_target.as_deref()),
        (PathKind::Symlink, Some("/etc/hostname"))
    );
    assert_eq!(stat(dir.path()).unwrap().kind, PathKind::Dir);
    let e = stat(&dir.path().join("missing")).unwrap_err();
    assert!(matches!(e, AgentProtoError::Remote { ref code, .. } if code == codes::NOT_FOUND));
}

#[test]
fn a_100_mib_file_goes_in_and_out_intact() {
    let agent = Agent::start();
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let big = src.path().join("big.bin");
    random_file(&big, 100 << 20);
    let want = sha256_file(&big);
    // In: a tar stream of the file (plus a symlink and a subdirectory), as the host sends it.
    std::fs::create_dir(src.path().join("sub")).unwrap();
    std::fs::write(src.path().join("sub/small"), b"small\n").unwrap();
    std::fs::set_permissions(
        src.path().join("sub/small"),
        std::fs::Permissions::from_mode(0o751),
    )
    .unwrap();
    symlink("../big.bin", src.path().join("sub/link")).unwrap();
    let mut c = agent.connect();
    let _: Empty = c
        .call(&Request::PutArchive(ArchiveRequest {
            path: dst.path().to_str().unwrap().into(),
        }))
        .unwrap();
    {
        let mut b = tar::Builder::new(Frames(&mut c));
        b.follow_symlinks(false);
        b.append_dir_all("tree", src.path()).unwrap();
        b.into_inner().unwrap();
    }
    c.send(&Frame::empty(FrameKind::End));
    let done = c.frame().unwrap();
    let summary = done.as_done().unwrap_or_else(|_| panic!("{done:?}"));
    assert_eq!(summary.bytes, (100 << 20) + 6);
    assert_eq!(
        summary.entries, 5,
        "tree, big.bin, sub, sub/small, sub/link"
    );
    let put = dst.path().join("tree");
    assert_eq!(sha256_file(&put.join("big.bin")), want);
    assert_eq!(
        std::fs::read_link(put.join("sub/link")).unwrap(),
        Path::new("../big.bin")
    );
    let mode = std::fs::metadata(put.join("sub/small"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o751);

    // Out: the file alone, then the tree; the top entry is the path's last component.
    let mut c = agent.connect();
    let stat: PathStat = c
        .call(&Request::GetArchive(ArchiveRequest {
            path: put.join("big.bin").to_str().unwrap().into(),
        }))
        .unwrap();
    assert_eq!((stat.kind, stat.size), (PathKind::File, 100 << 20));
    let mut ar = tar::Archive::new(Data(&mut c, Vec::new(), 0));
    {
        let mut entries = ar.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(e.path().unwrap(), Path::new("big.bin"));
        let mut got = Vec::new();
        e.read_to_end(&mut got).unwrap();
        assert_eq!(sha256(&got), want);
        drop(e);
        assert!(entries.next().is_none());
    }
    // The tar end marker, then END, then the agent closes.
    io::copy(&mut ar.into_inner(), &mut io::sink()).unwrap();
    assert!(c.frame().is_none(), "END is the last frame");

    let mut c = agent.connect();
    let _: PathStat = c
        .call(&Request::GetArchive(ArchiveRequest {
            path: put.join("sub").to_str().unwrap().into(),
        }))
        .unwrap();
    let mut names = Vec::new();
    let mut ar = tar::Archive::new(Data(&mut c, Vec::new(), 0));
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let name = e
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        if name == "sub/link" {
            assert!(
                e.header().entry_type().is_symlink(),
                "symlinks are not followed"
            );
        }
        names.push(name);
    }
    names.sort();
    assert_eq!(names, ["sub", "sub/link", "sub/small"]);
    // A missing path is refused before any frame.
    let e = agent
        .call::<PathStat>(&Request::GetArchive(ArchiveRequest {
            path: "/nonexistent/x".into(),
        }))
        .unwrap_err();
    assert!(matches!(e, AgentProtoError::Remote { ref code, .. } if code == codes::NOT_FOUND));
}

/// A tar entry with any name bytes (the tar crate's builder refuses hostile names).
fn raw_entry(name: &str, kind: tar::EntryType, link: &str, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn tar_of(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = entries.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn assert_refused(last: &Frame, code: &str, what: &str) {
    assert_eq!(last.kind, FrameKind::Error, "{what}: {last:?}");
    let e = last.as_error().unwrap();
    assert_eq!(e.code, code, "{what}: {e:?}");
}

#[test]
fn hostile_archives_are_refused() {
    use tar::EntryType as T;
    let agent = Agent::start();
    let root = tempfile::tempdir().unwrap();
    let dst = root.path().join("dst");
    let outside = root.path().join("outside");
    std::fs::create_dir(&dst).unwrap();
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("victim"), b"original").unwrap();

    // (what, archive, a word the refusal names)
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dot-dot",
            tar_of(&[raw_entry("../outside/new", T::Regular, "", b"x")]),
            "\"..\"",
        ),
        (
            "absolute",
            tar_of(&[raw_entry(
                outside.join("abs").to_str().unwrap(),
                T::Regular,
                "",
                b"x",
            )]),
            "absolute",
        ),
        (
            "through an archived symlink",
            tar_of(&[
                raw_entry("esc", T::Symlink, outside.to_str().unwrap(), b""),
                raw_entry("esc/victim", T::Regular, "", b"pwned"),
            ]),
            "symlink",
        ),
        (
            "hard link out",
            tar_of(&[raw_entry("hl", T::Link, "../outside/victim", b"")]),
            "\"..\"",
        ),
        (
            "hard link absolute",
            tar_of(&[raw_entry(
                "hl2",
                T::Link,
                outside.join("victim").to_str().unwrap(),
                b"",
            )]),
            "absolute",
        ),
    ];
    for (what, tar, word) in &cases {
        let last = put_raw(&agent, &dst, tar);
        assert_refused(&last, codes::ARCHIVE, what);
        let msg = last.as_error().unwrap().message;
        assert!(msg.contains(word), "{what}: {msg}");
    }
    // A symlink already in the directory is not written through either.
    symlink(&outside, dst.join("pre")).unwrap();
    let t = tar_of(&[raw_entry("pre/victim", T::Regular, "", b"pwned")]);
    let last = put_raw(&agent, &dst, &t);
    assert_refused(&last, codes::ARCHIVE, "existing symlink");
    assert!(last
        .as_error()
        .unwrap()
        .message
        .contains("through the symlink"));
    // A file entry over a symlink replaces the link, never its target.
    symlink(outside.join("victim"), dst.join("over")).unwrap();
    let t = tar_of(&[raw_entry("over", T::Regular, "", b"new")]);
    let last = put_raw(&agent, &dst, &t);
    assert_eq!(last.kind, FrameKind::Done, "{last:?}");
    assert_eq!(std::fs::read(dst.join("over")).unwrap(), b"new");
    // Not a tar at all.
    assert_refused(
        &put_raw(&agent, &dst, &[7u8; 4096]),
        codes::ARCHIVE,
        "garbage",
    );
    // Nothing escaped.
    assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"original");
    let mut names: Vec<String> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["victim"]);
    assert!(!root.path().join("new").exists());
    // Refused archives were undone: only what the test put there and the one good archive.
    let mut left: Vec<String> = std::fs::read_dir(&dst)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["over", "pre"]);
}

#[test]
fn archive_streams_and_targets_are_checked() {
    let agent = Agent::start();
    let root = tempfile::tempdir().unwrap();
    let dst = root.path().join("dst");
    let outside = root.path().join("outside");
    std::fs::create_dir(&dst).unwrap();
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("victim"), b"original").unwrap();
    // A frame that does not belong in an archive stream.
    let mut c = agent.connect();
    let _: Empty = c
        .call(&Request::PutArchive(ArchiveRequest {
            path: dst.to_str().unwrap().into(),
        }))
        .unwrap();
    c.send(&Frame::new(FrameKind::Stdout, b"x".to_vec()));
    assert_refused(&c.frame().unwrap(), codes::BAD_FRAME, "stdout frame");
    // Targets that are not directories are refused before the stream.
    for (path, code) in [
        (outside.join("victim"), codes::NOT_A_DIRECTORY),
        (root.path().join("missing"), codes::NOT_FOUND),
    ] {
        let e = agent
            .call::<Empty>(&Request::PutArchive(ArchiveRequest {
                path: path.to_str().unwrap().into(),
            }))
            .unwrap_err();
        assert!(
            matches!(e, AgentProtoError::Remote { code: ref c, .. } if c == code),
            "{e:?}"
        );
    }
}

/// Names and content digests below `d`, sorted (hidden files included). Paths that vanish
/// while it reads (the agent may be undoing meanwhile) show as `<gone>`.
fn snapshot(d: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(d) else {
        return vec![(d.to_string_lossy().into_owned(), "<gone>".into())];
    };
    for e in entries {
        let Ok(e) = e else { continue };
        let name = e.path().to_string_lossy().into_owned();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            out.push((name, "<dir>".into()));
            out.extend(snapshot(&e.path()));
        } else if ft.is_symlink() {
            let target = std::fs::read_link(e.path())
                .map_or("<gone>".into(), |t| format!("-> {}", t.display()));
            out.push((name, target));
        } else {
            let digest = std::fs::read(e.path()).map_or("<gone>".into(), |c| sha256(&c));
            out.push((name, digest));
        }
    }
    out.sort();
    out
}

#[test]
fn an_aborted_or_refused_archive_is_undone() {
    use tar::EntryType as T;
    let agent = Agent::start();
    let root = tempfile::tempdir().unwrap();
    let dst = root.path().join("dst");
    std::fs::create_dir_all(dst.join("sub")).unwrap();
    std::fs::write(dst.join("keep"), b"original").unwrap();
    symlink("keep", dst.join("sub/link")).unwrap();
    let before = snapshot(&dst);
    let good = [
        raw_entry("newdir/", T::Directory, "", b""),
        raw_entry("newdir/a", T::Regular, "", &vec![1u8; 100_000]),
        raw_entry("keep", T::Regular, "", b"replaced"),
        raw_entry("sub/link", T::Regular, "", b"no longer a link"),
        raw_entry("sub/deeper/b", T::Regular, "", b"b"),
    ]
    .concat();
    let big = raw_entry("big", T::Regular, "", &vec![2u8; 1 << 20]);

    // The host aborts part way through "big" with an ERROR frame (as hearthd does at its
    // size limit).
    let mut c = agent.connect();
    let _: Empty = c
        .call(&Request::PutArchive(ArchiveRequest {
            path: dst.to_str().unwrap().into(),
        }))
        .unwrap();
    let mut partial = good.clone();
    partial.extend_from_slice(&big[..600_000]);
    for chunk in partial.chunks(MAX_PAYLOAD) {
        c.send(&Frame::new(FrameKind::Data, chunk.to_vec()));
    }
    c.send(&Frame::error(&hearth_proto::agent::ErrorBody::new(
        codes::ARCHIVE,
        "over the limit",
    )));
    let last = c.frame().unwrap();
    assert_refused(&last, codes::ARCHIVE, "aborted by the host");
    assert!(
        last.as_error().unwrap().message.contains("aborted"),
        "{last:?}"
    );
    assert_eq!(snapshot(&dst), before, "the aborted archive was not undone");

    // A refused entry after good ones: the good ones go too.
    let mut t = good.clone();
    t.extend(raw_entry("../escape", T::Regular, "", b"x"));
    let last = put_raw(&agent, &dst, &tar_of(&[t]));
    assert_refused(&last, codes::ARCHIVE, "refused late");
    assert_eq!(snapshot(&dst), before, "the refused archive was not undone");

    // The host vanishes mid-stream: nobody to answer, but the directory is restored.
    let mut c = agent.connect();
    let _: Empty = c
        .call(&Request::PutArchive(ArchiveRequest {
            path: dst.to_str().unwrap().into(),
        }))
        .unwrap();
    for chunk in partial.chunks(MAX_PAYLOAD) {
        c.send(&Frame::new(FrameKind::Data, chunk.to_vec()));
    }
    drop(c);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while snapshot(&dst) != before {
        assert!(
            std::time::Instant::now() < deadline,
            "never undone: {:?}",
            snapshot(&dst)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // The same archive complete: applied, no moved-aside file left behind.
    let mut t = good;
    t.extend(big);
    let last = put_raw(&agent, &dst, &tar_of(&[t]));
    assert_eq!(last.kind, FrameKind::Done, "{last:?}");
    assert_eq!(std::fs::read(dst.join("keep")).unwrap(), b"replaced");
    assert_eq!(
        std::fs::read(dst.join("sub/link")).unwrap(),
        b"no longer a link"
    );
    assert_eq!(std::fs::metadata(dst.join("big")).unwrap().len(), 1 << 20);
    let hidden: Vec<_> = snapshot(&dst)
        .into_iter()
        .filter(|(n, _)| n.contains(".hearth-put-"))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
}
