//! The image store on a real filesystem (a temporary data directory; no root needed): import,
//! list and remove of kernels and `mkfs.ext4` root filesystems, every validation error, and
//! that a failed import leaves nothing behind.
#![expect(
    clippy::disallowed_methods,
    reason = "tests drive real tools and binaries (ip, mkfs, hearthd, hearthctl) and clean up their own directories"
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use hearth::images::{ImageStore, ImagesError};
use hearth_proto::api_images::{ImageFormat, ImageKind};

const MIB: u64 = 1 << 20;

fn mkfs(kind: &str, path: &Path, size: &str) {
    let out = Command::new(format!("mkfs.{kind}"))
        .args(["-F", "-q"])
        .arg(path)
        .arg(size)
        .output()
        .expect("run mkfs (e2fsprogs)");
    assert!(
        out.status.success(),
        "mkfs.{kind}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An `x86_64` ELF header (what `vmlinux` starts with), padded to `len`.
fn vmlinux(path: &Path, machine: u16, class: u8, len: usize) {
    let mut b = vec![0u8; len];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = class;
    b[5] = 1;
    b[16] = 2;
    b[18..20].copy_from_slice(&machine.to_le_bytes());
    fs::write(path, b).unwrap();
}

/// A bzImage header (`HdrS` at 0x202), padded to `len`.
fn bzimage(path: &Path, len: usize) {
    let mut b = vec![0u8; len];
    b[0x1fe] = 0x55;
    b[0x1ff] = 0xaa;
    b[0x202..0x206].copy_from_slice(b"HdrS");
    fs::write(path, b).unwrap();
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Everything under the store's directory, hidden temporaries included.
fn contents(store: &ImageStore) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![store.dir().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

struct Setup {
    dir: tempfile::TempDir,
    store: ImageStore,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&dir.path().join("data")).unwrap();
    Setup { dir, store }
}

impl Setup {
    fn src(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[test]
fn import_list_remove() {
    let s = setup();
    let rootfs = s.src("rootfs.ext4");
    mkfs("ext4", &rootfs, "32M");
    let kernel = s.src("vmlinux");
    vmlinux(&kernel, 62, 2, 3 * MIB as usize + 17);
    let bz = s.src("bzImage");
    bzimage(&bz, 64 * 1024);

    let mut seen = Vec::new();
    let root = s
        .store
        .import("ubuntu-22.04", ImageKind::Rootfs, &rootfs, |c, t| {
            seen.push((c, t));
        })
        .unwrap();
    assert_eq!(root.kind, ImageKind::Rootfs);
    assert_eq!(root.format, ImageFormat::Ext4);
    assert_eq!(root.size, 32 * MIB);
    assert_eq!(root.sha256, sha256(&rootfs));
    assert_eq!(seen.len(), 32);
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(seen.last(), Some(&(32 * MIB, 32 * MIB)));

    let k = s
        .store
        .import("vmlinux-6.1", ImageKind::Kernel, &kernel, |_, _| {})
        .unwrap();
    assert_eq!(k.format, ImageFormat::Elf);
    assert_eq!(k.sha256, sha256(&kernel));
    let b = s
        .store
        .import("bz", ImageKind::Kernel, &bz, |_, _| {})
        .unwrap();
    assert_eq!(b.format, ImageFormat::BzImage);

    let names: Vec<_> = s
        .store
        .list()
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["bz", "ubuntu-22.04", "vmlinux-6.1"]);
    let data = s.store.path("ubuntu-22.04").unwrap();
    assert!(data.starts_with(s.store.dir()));
    assert_eq!(sha256(&data), sha256(&rootfs));
    assert_eq!(s.store.get("vmlinux-6.1").unwrap(), k);

    // Importing an existing name is a conflict and changes nothing.
    let before = contents(&s.store);
    let err = s
        .store
        .import("bz", ImageKind::Kernel, &kernel, |_, _| {})
        .unwrap_err();
    assert!(matches!(err, ImagesError::Exists { .. }), "{err}");
    assert_eq!(contents(&s.store), before);
    assert_eq!(s.store.get("bz").unwrap(), b);

    // Removal is refused while in use, then removes everything.
    let err = s
        .store
        .remove("ubuntu-22.04", |n| n == "ubuntu-22.04")
        .unwrap_err();
    assert!(matches!(err, ImagesError::InUse { .. }), "{err}");
    assert_eq!(err.to_string(), "Image ubuntu-22.04 is in use");
    assert!(s.store.get("ubuntu-22.04").is_ok());
    s.store.remove("ubuntu-22.04", |_| false).unwrap();
    assert!(matches!(
        s.store.get("ubuntu-22.04"),
        Err(ImagesError::NotFound { .. })
    ));
    assert!(matches!(
        s.store.remove("ubuntu-22.04", |_| false),
        Err(ImagesError::NotFound { .. })
    ));
    s.store.remove("bz", |_| false).unwrap();
    s.store.remove("vmlinux-6.1", |_| false).unwrap();
    assert!(contents(&s.store).is_empty(), "{:?}", contents(&s.store));

    // The same name can be imported again after removal.
    s.store
        .import("bz", ImageKind::Kernel, &bz, |_, _| {})
        .unwrap();
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "a table of invalid imports, each checked to leave nothing"
)]
fn every_validation_error_leaves_nothing() {
    let s = setup();
    let good_root = s.src("good.ext4");
    mkfs("ext4", &good_root, "8M");
    let good_kernel = s.src("good-vmlinux");
    vmlinux(&good_kernel, 62, 2, 8192);
    // One image already there, so "nothing written" also means "nothing else touched".
    s.store
        .import("existing", ImageKind::Kernel, &good_kernel, |_, _| {})
        .unwrap();
    let before = contents(&s.store);

    let arm = s.src("arm-vmlinux");
    vmlinux(&arm, 183, 2, 8192);
    let elf32 = s.src("elf32");
    vmlinux(&elf32, 3, 1, 8192);
    let zeros = s.src("zeros");
    fs::write(&zeros, vec![0u8; MIB as usize]).unwrap();
    let ragged = s.src("ragged.ext4");
    fs::copy(&good_root, &ragged).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(&ragged)
        .unwrap()
        .set_len(8 * MIB + 100)
        .unwrap();
    let truncated = s.src("truncated.ext4");
    fs::copy(&good_root, &truncated).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap()
        .set_len(4 * MIB)
        .unwrap();
    let ext2 = s.src("old.ext2");
    mkfs("ext2", &ext2, "8M");
    let tiny = s.src("tiny");
    fs::write(&tiny, b"abc").unwrap();
    let empty = s.src("empty");
    fs::write(&empty, b"").unwrap();

    let long = "x".repeat(65);
    type Check = fn(&ImagesError) -> bool;
    let cases: Vec<(&str, ImageKind, PathBuf, Check, &str)> = vec![
        (
            "",
            ImageKind::Kernel,
            good_kernel.clone(),
            |e| matches!(e, ImagesError::InvalidName { .. }),
            "empty",
        ),
        (
            "../up",
            ImageKind::Kernel,
            good_kernel.clone(),
            |e| matches!(e, ImagesError::InvalidName { .. }),
            "'.'",
        ),
        (
            "a/b",
            ImageKind::Kernel,
            good_kernel.clone(),
            |e| matches!(e, ImagesError::InvalidName { .. }),
            "letters",
        ),
        (
            ".hidden",
            ImageKind::Kernel,
            good_kernel.clone(),
            |e| matches!(e, ImagesError::InvalidName { .. }),
            "'.'",
        ),
        (
            "..",
            ImageKind::Kernel,
            good_kernel.clone(),
            |e| matches!(e, ImagesError::InvalidName { .. }),
            "'.'",
        ),
        (
            &long,
            ImageKind::Kernel,
            good_kernel.clone(),
            |e| matches!(e, ImagesError::InvalidName { .. }),
            "64",
        ),
        (
            "existing",
            ImageKind::Kernel,
            good_kernel.clone(),
            |e| matches!(e, ImagesError::Exists { .. }),
            "already exists",
        ),
        (
            "k",
            ImageKind::Kernel,
            s.src("missing"),
            |e| matches!(e, ImagesError::Source { .. }),
            "Cannot read",
        ),
        (
            "k",
            ImageKind::Kernel,
            s.dir.path().to_path_buf(),
            |e| matches!(e, ImagesError::NotAFile { .. }),
            "not a regular file",
        ),
        (
            "k",
            ImageKind::Kernel,
            arm.clone(),
            |e| matches!(e, ImagesError::NotAKernel { .. }),
            "x86_64",
        ),
        (
            "k",
            ImageKind::Kernel,
            elf32.clone(),
            |e| matches!(e, ImagesError::NotAKernel { .. }),
            "64-bit",
        ),
        (
            "k",
            ImageKind::Kernel,
            good_root.clone(),
            |e| matches!(e, ImagesError::NotAKernel { .. }),
            "HdrS",
        ),
        (
            "k",
            ImageKind::Kernel,
            empty.clone(),
            |e| matches!(e, ImagesError::NotAKernel { .. }),
            "HdrS",
        ),
        (
            "r",
            ImageKind::Rootfs,
            zeros.clone(),
            |e| matches!(e, ImagesError::NotExt4 { .. }),
            "0xef53",
        ),
        (
            "r",
            ImageKind::Rootfs,
            good_kernel.clone(),
            |e| matches!(e, ImagesError::NotExt4 { .. }),
            "superblock",
        ),
        (
            "r",
            ImageKind::Rootfs,
            ragged.clone(),
            |e| matches!(e, ImagesError::NotSectors { .. }),
            "512-byte sectors",
        ),
        (
            "r",
            ImageKind::Rootfs,
            truncated.clone(),
            |e| matches!(e, ImagesError::NotExt4 { .. }),
            "truncated",
        ),
        (
            "r",
            ImageKind::Rootfs,
            ext2.clone(),
            |e| matches!(e, ImagesError::NotExt4 { .. }),
            "ext2/ext3",
        ),
        (
            "r",
            ImageKind::Rootfs,
            tiny.clone(),
            |e| matches!(e, ImagesError::NotSectors { .. }),
            "512-byte sectors",
        ),
        (
            "r",
            ImageKind::Rootfs,
            empty.clone(),
            |e| matches!(e, ImagesError::NotExt4 { .. }),
            "too small",
        ),
    ];
    for (name, kind, src, check, words) in cases {
        let err = s.store.import(name, kind, &src, |_, _| {}).unwrap_err();
        let text = format!("{err}");
        assert!(
            check(&err),
            "{name:?} {kind:?} {}: wrong error {err:?}",
            src.display()
        );
        assert!(
            text.contains(words),
            "{name:?} {}: {text:?} lacks {words:?}",
            src.display()
        );
        assert_eq!(
            contents(&s.store),
            before,
            "{name:?} {} left files",
            src.display()
        );
    }
}

#[test]
fn open_sweeps_temporaries_left_by_a_crash() {
    let s = setup();
    let k = s.src("vmlinux");
    vmlinux(&k, 62, 2, 4096);
    s.store
        .import("k", ImageKind::Kernel, &k, |_, _| {})
        .unwrap();
    // Temporaries of a dead process go; those of a live one (this test's) stay.
    let dead = u32::MAX;
    let live = s
        .store
        .dir()
        .join(format!(".import-k3-{}-7", std::process::id()));
    fs::create_dir(&live).unwrap();
    let crashed = s.store.dir().join(format!(".import-k2-{dead}-0"));
    fs::create_dir(&crashed).unwrap();
    fs::write(crashed.join("image"), b"half").unwrap();
    let removing = s.store.dir().join(format!(".remove-old-{dead}-1"));
    fs::create_dir(&removing).unwrap();
    assert_eq!(
        s.store.list().unwrap().len(),
        1,
        "temporaries are never listed"
    );
    let store = ImageStore::open(&s.dir.path().join("data")).unwrap();
    assert!(!crashed.exists() && !removing.exists());
    assert!(live.exists(), "a live process's import was swept");
    assert_eq!(store.list().unwrap().len(), 1);
}
