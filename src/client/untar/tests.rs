use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use tar::{EntryType, Header};

use super::*;

/// One crafted entry: names and link targets are written into the header raw, so hostile
/// names that `Header::set_path` would refuse can be built.
struct Raw<'a> {
    name: &'a str,
    kind: EntryType,
    mode: u32,
    data: &'a [u8],
    link: &'a str,
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> Raw<'a> {
    Raw {
        name,
        kind: EntryType::Regular,
        mode: 0o644,
        data,
        link: "",
    }
}

fn dir(name: &str) -> Raw<'_> {
    Raw {
        name,
        kind: EntryType::Directory,
        mode: 0o755,
        data: b"",
        link: "",
    }
}

fn link<'a>(name: &'a str, kind: EntryType, target: &'a str) -> Raw<'a> {
    Raw {
        name,
        kind,
        mode: 0o777,
        data: b"",
        link: target,
    }
}

fn tar_of(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..e.name.len()].copy_from_slice(e.name.as_bytes());
            old.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        }
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_size(e.data.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append(&h, e.data).unwrap();
    }
    b.into_inner().unwrap()
}

/// A scratch area: `work/` is where copies go, `outside/` must never be touched.
struct Scratch {
    _tmp: tempfile::TempDir,
    work: PathBuf,
    outside: PathBuf,
}

fn scratch() -> Scratch {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let outside = tmp.path().join("outside");
    fs::create_dir(&work).unwrap();
    fs::create_dir(&outside).unwrap();
    Scratch {
        _tmp: tmp,
        work,
        outside,
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn extract(s: &Scratch, tar: &[u8], opts: UntarOptions) -> Result<Extracted, UntarError> {
    extract_to(tar, &s.work.join("dest"), opts)
}

/// After a refused archive: nothing at the destination, no staging directory left, nothing
/// outside.
fn assert_untouched(s: &Scratch) {
    assert_eq!(listing(&s.work), Vec::<String>::new());
    assert_eq!(listing(&s.outside), Vec::<String>::new());
}

#[test]
fn a_good_archive_is_copied_with_modes_links_and_new_name() {
    let s = scratch();
    let tar = tar_of(&[
        dir("site/"),
        Raw {
            mode: 0o750,
            ..file("site/run.sh", b"#!/bin/sh\n")
        },
        dir("site/sub/"),
        file("site/sub/a.txt", b"hello"),
        link("site/latest", EntryType::Symlink, "sub/a.txt"),
        link("site/abs", EntryType::Symlink, "/etc/passwd"),
        link("site/hard", EntryType::Link, "site/sub/a.txt"),
        Raw {
            mode: 0o500,
            ..dir("site/ro/")
        },
        file("site/ro/inside", b"x"),
    ]);
    let sum = extract(&s, &tar, UntarOptions::default()).unwrap();
    let d = s.work.join("dest");
    assert_eq!(sum.path, d);
    assert_eq!(sum.entries, 9);
    assert_eq!(sum.bytes, 10 + 5 + 1);
    assert_eq!(listing(&s.work), vec!["dest"]);
    assert_eq!(fs::read(d.join("sub/a.txt")).unwrap(), b"hello");
    assert_eq!(
        fs::metadata(d.join("run.sh")).unwrap().permissions().mode() & 0o7777,
        0o750
    );
    assert_eq!(
        fs::read_link(d.join("latest")).unwrap(),
        Path::new("sub/a.txt")
    );
    assert_eq!(
        fs::read_link(d.join("abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        fs::metadata(d.join("hard")).unwrap().ino(),
        fs::metadata(d.join("sub/a.txt")).unwrap().ino()
    );
    assert_eq!(
        fs::metadata(d.join("ro")).unwrap().permissions().mode() & 0o7777,
        0o500
    );
    assert_eq!(
        fs::metadata(d.join("sub/a.txt")).unwrap().mtime(),
        1_700_000_000
    );
}

#[test]
fn an_existing_directory_receives_the_copy_under_its_own_name() {
    let s = scratch();
    fs::create_dir(s.work.join("dest")).unwrap();
    let tar = tar_of(&[dir("log/"), file("log/syslog", b"x")]);
    let sum = extract(&s, &tar, UntarOptions::default()).unwrap();
    assert_eq!(sum.path, s.work.join("dest/log"));
    assert_eq!(fs::read(s.work.join("dest/log/syslog")).unwrap(), b"x");
    assert_eq!(listing(&s.work.join("dest")), vec!["log"]);
    // Twice: the directory is there now, and is not merged into.
    let e = extract(&s, &tar, UntarOptions::default()).unwrap_err();
    assert!(matches!(e, UntarError::Exists { .. }), "{e}");
    assert_eq!(listing(&s.work.join("dest")), vec!["log"]);
}

#[test]
fn a_file_replaces_a_file_but_not_a_directory() {
    let s = scratch();
    fs::write(s.work.join("dest"), b"old").unwrap();
    let tar = tar_of(&[file("f", b"new")]);
    extract(&s, &tar, UntarOptions::default()).unwrap();
    assert_eq!(fs::read(s.work.join("dest")).unwrap(), b"new");
    assert_eq!(listing(&s.work), vec!["dest"]);
}

#[test]
fn absolute_names_are_refused() {
    let s = scratch();
    let evil = format!("{}/pwned", s.outside.display());
    let e = extract(&s, &tar_of(&[file(&evil, b"x")]), UntarOptions::default()).unwrap_err();
    assert!(
        matches!(
            e,
            UntarError::UnsafeName {
                reason: "absolute name",
                ..
            }
        ),
        "{e}"
    );
    assert_untouched(&s);
}

#[test]
fn dot_dot_is_refused() {
    let s = scratch();
    for name in ["top/../../outside/pwned", "../outside/pwned", "top/.."] {
        let tar = tar_of(&[dir("top/"), file(name, b"x")]);
        let e = extract(&s, &tar, UntarOptions::default()).unwrap_err();
        assert!(matches!(e, UntarError::UnsafeName { .. }), "{name}: {e}");
        assert_untouched(&s);
    }
}

#[test]
fn entries_outside_the_top_entry_are_refused() {
    let s = scratch();
    let tar = tar_of(&[dir("top/"), file("other/x", b"x")]);
    let e = extract(&s, &tar, UntarOptions::default()).unwrap_err();
    assert!(matches!(e, UntarError::OutsideTop { .. }), "{e}");
    assert_untouched(&s);
}

#[test]
fn writing_through_a_symlink_from_the_same_archive_is_refused() {
    let s = scratch();
    let out = s.outside.display().to_string();
    // A directory symlink, then a file and a directory through it.
    for second in [file("top/esc/pwned", b"x"), dir("top/esc/sub/")] {
        let tar = tar_of(&[
            dir("top/"),
            link("top/esc", EntryType::Symlink, &out),
            second,
        ]);
        let e = extract(&s, &tar, UntarOptions::default()).unwrap_err();
        assert!(matches!(e, UntarError::ThroughSymlink { .. }), "{e}");
        assert_untouched(&s);
    }
    // A relative one that climbs out.
    let tar = tar_of(&[
        dir("top/"),
        link("top/up", EntryType::Symlink, "../../outside"),
        file("top/up/pwned", b"x"),
    ]);
    let e = extract(&s, &tar, UntarOptions::default()).unwrap_err();
    assert!(matches!(e, UntarError::ThroughSymlink { .. }), "{e}");
    assert_untouched(&s);
}

#[test]
fn a_file_over_a_symlink_replaces_the_link_instead_of_following_it() {
    let s = scratch();
    let target = s.outside.join("victim");
    fs::write(&target, b"precious").unwrap();
    let tar = tar_of(&[
        dir("top/"),
        link("top/f", EntryType::Symlink, &target.display().to_string()),
        file("top/f", b"overwritten?"),
    ]);
    extract(&s, &tar, UntarOptions::default()).unwrap();
    assert_eq!(fs::read(&target).unwrap(), b"precious");
    let f = s.work.join("dest/f");
    assert!(fs::symlink_metadata(&f).unwrap().is_file());
    assert_eq!(fs::read(f).unwrap(), b"overwritten?");
}

#[test]
fn hard_links_out_of_the_copy_are_refused() {
    let s = scratch();
    let victim = s.outside.join("victim");
    fs::write(&victim, b"precious").unwrap();
    for target in [
        victim.display().to_string(),
        "top/../../outside/victim".to_string(),
        "elsewhere/victim".to_string(),
    ] {
        let tar = tar_of(&[dir("top/"), link("top/h", EntryType::Link, &target)]);
        let e = extract(&s, &tar, UntarOptions::default()).unwrap_err();
        assert!(matches!(e, UntarError::BadLink { .. }), "{target}: {e}");
        assert_eq!(listing(&s.work), Vec::<String>::new());
    }
    // Through a symlink of the archive to the outside.
    let tar = tar_of(&[
        dir("top/"),
        link(
            "top/esc",
            EntryType::Symlink,
            &s.outside.display().to_string(),
        ),
        link("top/h", EntryType::Link, "top/esc/victim"),
    ]);
    let e = extract(&s, &tar, UntarOptions::default()).unwrap_err();
    assert!(matches!(e, UntarError::BadLink { .. }), "{e}");
    assert_eq!(fs::metadata(&victim).unwrap().nlink(), 1);
}

#[test]
fn devices_and_fifos_are_skipped() {
    let s = scratch();
    let tar = tar_of(&[
        dir("top/"),
        Raw {
            kind: EntryType::Char,
            ..file("top/null", b"")
        },
        Raw {
            kind: EntryType::Block,
            ..file("top/sda", b"")
        },
        Raw {
            kind: EntryType::Fifo,
            ..file("top/pipe", b"")
        },
        file("top/ok", b"1"),
    ]);
    let sum = extract(&s, &tar, UntarOptions::default()).unwrap();
    assert_eq!(sum.skipped.len(), 3, "{:?}", sum.skipped);
    assert_eq!(listing(&s.work.join("dest")), vec!["ok"]);
}

#[test]
fn setuid_and_setgid_are_dropped_unless_kept() {
    for (keep, want) in [(false, 0o755), (true, 0o6755)] {
        let s = scratch();
        let tar = tar_of(&[Raw {
            mode: 0o6755,
            ..file("suid", b"x")
        }]);
        let opts = UntarOptions {
            keep_setuid: keep,
            ..UntarOptions::default()
        };
        extract(&s, &tar, opts).unwrap();
        let mode = fs::metadata(s.work.join("dest"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, want, "keep={keep}");
    }
}

#[test]
fn streams_over_the_limit_are_refused() {
    let s = scratch();
    let big = vec![7u8; 64 * 1024];
    let tar = tar_of(&[dir("top/"), file("top/a", &big), file("top/b", &big)]);
    let opts = UntarOptions {
        max_bytes: 100 * 1024,
        ..UntarOptions::default()
    };
    let e = extract(&s, &tar, opts).unwrap_err();
    assert!(matches!(e, UntarError::TooLarge { max: 102_400 }), "{e}");
    assert_untouched(&s);
    // The limit counts the stream, so the same archive passes under a larger one.
    let opts = UntarOptions {
        max_bytes: tar.len() as u64,
        ..UntarOptions::default()
    };
    extract(&s, &tar, opts).unwrap();
}

#[test]
fn truncated_streams_are_errors() {
    let s = scratch();
    let tar = tar_of(&[
        dir("top/"),
        file("top/a", &[1u8; 2000]),
        file("top/b", b"b"),
    ]);
    // At an entry boundary (before top/b's header), mid-file, and without the end blocks.
    let b_header = 512 + 512 + 2048;
    for cut in [b_header, 512 + 512 + 1000, tar.len() - 1024, 700] {
        let e = extract(&s, &tar[..cut], UntarOptions::default()).unwrap_err();
        assert!(
            matches!(e, UntarError::Truncated { .. }),
            "cut at {cut}: {e}"
        );
        assert_untouched(&s);
    }
}

#[test]
fn a_stream_that_fails_after_the_end_block_is_an_error() {
    struct FailAtEnd<'a>(&'a [u8]);
    impl Read for FailAtEnd<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::other("connection reset"));
            }
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let s = scratch();
    let tar = tar_of(&[file("f", b"x")]);
    let e = extract_to(
        FailAtEnd(&tar),
        &s.work.join("dest"),
        UntarOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, UntarError::Truncated { .. }), "{e}");
    assert_untouched(&s);
}

#[test]
fn data_after_the_end_block_is_refused() {
    let s = scratch();
    let mut tar = tar_of(&[file("f", b"x")]);
    tar.extend_from_slice(b"smuggled");
    let e = extract(&s, &tar, UntarOptions::default()).unwrap_err();
    assert!(matches!(e, UntarError::TrailingData), "{e}");
    assert_untouched(&s);
}

#[test]
fn a_missing_parent_is_refused() {
    let s = scratch();
    let e = extract_to(
        &tar_of(&[file("f", b"x")])[..],
        &s.work.join("no/such"),
        UntarOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, UntarError::NoParent { .. }), "{e}");
    assert_untouched(&s);
}
