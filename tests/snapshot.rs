//! `SnapshotActor` against the real host: the `copy` backend on the filesystem of a temporary
//! directory (no root or namespace needed: it only makes files), with base images made by
//! `mkfs.ext4 -d` for realism; and the `dm` backend, which needs root and a kernel with
//! device-mapper, and otherwise skips naming the missing feature.
#![expect(
    clippy::disallowed_methods,
    reason = "tests drive real tools and binaries (ip, mkfs, hearthd, hearthctl) and clean up their own directories"
)]

mod common;

use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use actix::Addr;
use hearth_actors::host::disks::block::{probe_dm, BlockOps, LinuxBlock};
use hearth_actors::host::disks::copy::{CopyDisks, CopyMethod};
use hearth_actors::host::disks::dm::DmDisks;
use hearth_actors::host::disks::layout::{DiskManifest, DisksDir, FileRole};
use hearth_actors::host::disks::{open_backend, BackendChoice, BackendKind, DiskState, Disks};
use hearth_actors::snapshot::{CreateDisk, ListDisks, RemoveDisk, SnapshotActor, SnapshotError};

const MIB: u64 = 1 << 20;

/// A 64 MiB ext4 image holding 8 MiB of incompressible data (`mkfs.ext4 -d`).
fn make_base(dir: &Path) -> PathBuf {
    let content = dir.join("content");
    fs::create_dir_all(content.join("etc")).unwrap();
    fs::write(content.join("etc/hostname"), b"base\n").unwrap();
    let mut data = vec![0u8; 8 * MIB as usize];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in &mut data {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    fs::write(content.join("blob"), &data).unwrap();
    let base = dir.join("base.ext4");
    let out = Command::new("mkfs.ext4")
        .args(["-F", "-q", "-d"])
        .arg(&content)
        .arg(&base)
        .arg("64M")
        .output()
        .expect("run mkfs.ext4 (e2fsprogs)");
    assert!(
        out.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    base
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn allocated(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

fn fsck_ok(path: &Path) {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "e2fsck {}: {}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Setup {
    _dir: tempfile::TempDir,
    base: PathBuf,
    disks: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let base = make_base(dir.path());
    let disks = dir.path().join("data/disks");
    fs::create_dir_all(&disks).unwrap();
    Setup {
        _dir: dir,
        base,
        disks,
    }
}

fn start_copy(disks: &Path) -> Addr<SnapshotActor> {
    let backend = Box::new(CopyDisks::new(disks));
    SnapshotActor::new(backend, common::test_logger()).start_dedicated()
}

fn create(vm: &str, base: &Path, size: Option<u64>) -> CreateDisk {
    CreateDisk {
        vm: vm.into(),
        image: base.into(),
        size,
    }
}

#[actix::test]
async fn copy_disk_is_writable_private_sparse_and_removable() {
    let s = setup();
    let base_hash = sha256(&s.base);
    let base_alloc = allocated(&s.base);
    let addr = start_copy(&s.disks);

    let size = 96 * MIB;
    let disk = addr
        .send(create("web", &s.base, Some(size)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(disk.backend, BackendKind::Copy);
    assert_eq!(disk.size, size);
    assert_eq!(disk.path, s.disks.join("web.img"));
    assert_eq!(fs::metadata(&disk.path).unwrap().len(), size);
    fsck_ok(&disk.path);

    // Holes stay holes: the copy allocates about what the base does, far less than its size.
    let disk_alloc = allocated(&disk.path);
    assert!(
        disk_alloc <= base_alloc + MIB,
        "disk allocates {disk_alloc} bytes, base {base_alloc}"
    );
    assert!(
        disk_alloc < size / 4,
        "disk allocates {disk_alloc} of {size}"
    );

    // The disk is writable, also beyond the base's end, and writes do not reach the base.
    let f = fs::OpenOptions::new().write(true).open(&disk.path).unwrap();
    f.write_all_at(&[0x5A; 4096], 10 * MIB).unwrap();
    f.write_all_at(&[0xA5; 4096], 80 * MIB).unwrap();
    f.sync_all().unwrap();
    let mut back = [0u8; 4096];
    File::open(&disk.path)
        .unwrap()
        .read_exact_at(&mut back, 80 * MIB)
        .unwrap();
    assert_eq!(back, [0xA5; 4096]);
    assert_eq!(sha256(&s.base), base_hash, "a write reached the base");
    assert_ne!(sha256(&disk.path), base_hash);

    let list = addr.send(ListDisks {}).await.unwrap().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].vm, "web");
    assert_eq!(list[0].state, DiskState::Ready);
    assert_eq!(list[0].size, Some(size));

    assert!(addr
        .send(RemoveDisk { vm: "web".into() })
        .await
        .unwrap()
        .unwrap());
    assert!(!addr
        .send(RemoveDisk { vm: "web".into() })
        .await
        .unwrap()
        .unwrap());
    assert_eq!(
        fs::read_dir(&s.disks).unwrap().count(),
        0,
        "removal left files"
    );
    assert!(addr.send(ListDisks {}).await.unwrap().unwrap().is_empty());
    assert_eq!(sha256(&s.base), base_hash);
}

#[actix::test]
async fn two_vms_from_one_base_are_independent() {
    let s = setup();
    let addr = start_copy(&s.disks);
    let a = addr
        .send(create("a", &s.base, None))
        .await
        .unwrap()
        .unwrap();
    let b = addr
        .send(create("b", &s.base, None))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(a.path, b.path);
    fs::OpenOptions::new()
        .write(true)
        .open(&a.path)
        .unwrap()
        .write_all_at(b"only in a", 0)
        .unwrap();
    assert_eq!(sha256(&b.path), sha256(&s.base), "a's write reached b");
    let err = addr
        .send(create("a", &s.base, None))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, SnapshotError::DiskExists { .. }), "{err}");
    let vms: Vec<_> = addr
        .send(ListDisks {})
        .await
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|e| e.vm)
        .collect();
    assert_eq!(vms, ["a", "b"]);
    for vm in ["a", "b"] {
        assert!(addr
            .send(RemoveDisk { vm: vm.into() })
            .await
            .unwrap()
            .unwrap());
    }
    assert_eq!(fs::read_dir(&s.disks).unwrap().count(), 0);
}

#[actix::test]
async fn bad_requests_fail_clearly_and_leave_nothing() {
    let s = setup();
    let addr = start_copy(&s.disks);
    let base_len = fs::metadata(&s.base).unwrap().len();
    let cases = [
        create("web", &s.base, Some(base_len - 512)),
        create("web", &s.base, Some(base_len + 100)),
        create("web", &s.disks.join("missing.ext4"), None),
        create("../escape", &s.base, None),
        create("", &s.base, None),
    ];
    for msg in cases {
        let what = format!("{msg:?}");
        let err = addr.send(msg).await.unwrap().unwrap_err();
        assert!(
            matches!(err, SnapshotError::InvalidRequest { .. }),
            "{what}: {err}"
        );
        assert_eq!(
            fs::read_dir(&s.disks).unwrap().count(),
            0,
            "{what} left files"
        );
    }
    let msg = format!(
        "{}",
        addr.send(create("web", &s.base, Some(base_len - 512)))
            .await
            .unwrap()
            .unwrap_err()
    );
    assert!(msg.contains("web"), "{msg}");
}

#[actix::test]
async fn half_made_disk_from_a_crash_is_listed_and_removed() {
    let s = setup();
    // What a crash in the middle of the copy leaves: the manifest and a partial copy.
    let dir = DisksDir::new(&s.disks);
    dir.write(&DiskManifest {
        vm: "crashed".into(),
        backend: BackendKind::Copy,
        base: s.base.clone(),
        size: 64 * MIB,
    })
    .unwrap();
    fs::write(dir.path("crashed", FileRole::Part), vec![1u8; 4096]).unwrap();
    // And a stray copy with no manifest at all.
    fs::write(dir.path("stray", FileRole::Image), b"x").unwrap();

    let addr = start_copy(&s.disks);
    let list = addr.send(ListDisks {}).await.unwrap().unwrap();
    let states: Vec<_> = list.iter().map(|e| (e.vm.as_str(), e.state)).collect();
    assert_eq!(
        states,
        [
            ("crashed", DiskState::Partial),
            ("stray", DiskState::Partial)
        ]
    );
    let err = addr
        .send(create("crashed", &s.base, None))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, SnapshotError::DiskExists { .. }), "{err}");
    for vm in ["crashed", "stray"] {
        assert!(addr
            .send(RemoveDisk { vm: vm.into() })
            .await
            .unwrap()
            .unwrap());
    }
    assert_eq!(fs::read_dir(&s.disks).unwrap().count(), 0);
    addr.send(create("crashed", &s.base, None))
        .await
        .unwrap()
        .unwrap();
}

#[actix::test]
async fn auto_backend_says_which_and_works() {
    let s = setup();
    let probe = probe_dm();
    let backend = open_backend(BackendChoice::Auto, &s.disks, &common::test_logger()).unwrap();
    let expect = if probe.is_ok() {
        BackendKind::Dm
    } else {
        BackendKind::Copy
    };
    assert_eq!(backend.backend(), expect, "probe: {probe:?}");
    if let Err(reason) = &probe {
        assert!(reason.contains("/dev/mapper/control"), "{reason}");
        assert!(matches!(
            open_backend(BackendChoice::Dm, &s.disks, &common::test_logger()),
            Err(hearth_actors::host::disks::DisksError::DmUnavailable { .. })
        ));
    }
    if expect == BackendKind::Copy {
        let addr = SnapshotActor::new(backend, common::test_logger()).start_dedicated();
        let disk = addr
            .send(create("a", &s.base, None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(disk.backend, BackendKind::Copy);
        assert!(addr
            .send(RemoveDisk { vm: "a".into() })
            .await
            .unwrap()
            .unwrap());
    }
}

/// A loop-mounted XFS with reflink support in a temporary directory, unmounted on drop (the
/// loop device is auto-cleared by the unmount, the image removed with the directory).
struct XfsMount {
    _dir: tempfile::TempDir,
    mnt: PathBuf,
}

impl XfsMount {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("xfs.img");
        File::create(&img).unwrap().set_len(512 * MIB).unwrap();
        let out = Command::new("mkfs.xfs")
            .args(["-q", "-m", "reflink=1"])
            .arg(&img)
            .output()
            .expect("run mkfs.xfs (xfsprogs)");
        assert!(
            out.status.success(),
            "mkfs.xfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        let out = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        XfsMount { _dir: dir, mnt }
    }
}

impl Drop for XfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

fn free_bytes(path: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(path).unwrap();
    st.blocks_free() * st.fragment_size()
}

#[test]
fn copy_backend_reflinks_where_the_filesystem_can() {
    require_privileged!();
    if Command::new("mkfs.xfs").arg("-V").output().is_err() {
        let msg = "copy_backend_reflinks_where_the_filesystem_can: mkfs.xfs (xfsprogs) is missing";
        assert!(
            std::env::var("HEARTH_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
            "{msg}; install xfsprogs"
        );
        hearth_testkit::skip!("SKIP {msg}");
        return;
    }
    let xfs = XfsMount::new();
    let base = make_base(&xfs.mnt);
    let base_hash = sha256(&base);
    let disks = xfs.mnt.join("disks");
    fs::create_dir(&disks).unwrap();
    let mut backend = CopyDisks::new(&disks);
    let free_before = free_bytes(&xfs.mnt);
    let disk = backend
        .create(&hearth_actors::host::disks::DiskSpec {
            vm: "web".into(),
            base: base.clone(),
            size: Some(128 * MIB),
        })
        .unwrap();
    assert_eq!(backend.last_method(), Some(CopyMethod::Reflink));
    // Shared extents: the 8 MiB of data in the base were not copied.
    let used = free_before.saturating_sub(free_bytes(&xfs.mnt));
    assert!(used < 2 * MIB, "reflink used {used} bytes");
    assert_eq!(fs::metadata(&disk.path).unwrap().len(), 128 * MIB);
    fsck_ok(&disk.path);
    let f = fs::OpenOptions::new().write(true).open(&disk.path).unwrap();
    f.write_all_at(&vec![0x5A; 65536], 4 * MIB).unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(
        sha256(&base),
        base_hash,
        "a write to the reflink reached the base"
    );
    assert!(backend.remove("web").unwrap());
    assert_eq!(fs::read_dir(&disks).unwrap().count(), 0);
}

/// The loop-device half of the `dm` backend, for real (loop devices exist even where
/// device-mapper does not): a read-only attach of the base that reads back the base and refuses
/// writes, a read-write attach of a sparse COW file, both found again from sysfs by backing
/// file (as after a daemon restart), then detached.
#[test]
fn loop_devices_attach_find_and_detach() {
    require_privileged!();
    let s = setup();
    let base_hash = sha256(&s.base);
    let cow = s.disks.join("web.cow");
    File::create(&cow).unwrap().set_len(8 * MIB).unwrap();
    let mut block = LinuxBlock::new();
    let base_loop = block.attach_loop(&s.base, true).unwrap();
    let cow_loop = match block.attach_loop(&cow, false) {
        Ok(l) => l,
        Err(e) => {
            block.detach_loop(&base_loop).unwrap();
            panic!("attach cow: {e}");
        }
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert!(base_loop.read_only && !cow_loop.read_only);
        assert_eq!(
            LinuxBlock::new().find_loops(&s.base).unwrap(),
            std::slice::from_ref(&base_loop)
        );
        assert_eq!(
            LinuxBlock::new().find_loops(&cow).unwrap(),
            std::slice::from_ref(&cow_loop)
        );
        assert_eq!(sha256(&base_loop.path), base_hash);
        let w = fs::OpenOptions::new().write(true).open(&base_loop.path);
        let refused = match w {
            Err(_) => true,
            Ok(f) => f
                .write_all_at(&[1; 512], 0)
                .and_then(|()| f.sync_all())
                .is_err(),
        };
        assert!(refused, "the base's loop device accepted a write");
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&cow_loop.path)
            .unwrap();
        f.write_all_at(&[0x77; 4096], MIB).unwrap();
        f.sync_all().unwrap();
    }));
    block.detach_loop(&cow_loop).unwrap();
    block.detach_loop(&base_loop).unwrap();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
    let mut back = [0u8; 4096];
    File::open(&cow)
        .unwrap()
        .read_exact_at(&mut back, MIB)
        .unwrap();
    assert_eq!(
        back, [0x77; 4096],
        "write through the loop device did not reach the file"
    );
    assert_eq!(sha256(&s.base), base_hash);
    assert!(common::wait_until(
        std::time::Duration::from_secs(5),
        || {
            LinuxBlock::new().find_loops(&s.base).unwrap().is_empty()
                && LinuxBlock::new().find_loops(&cow).unwrap().is_empty()
        }
    ));
}

/// True when device-mapper works; otherwise prints the one allowed SKIP of this file (also
/// under `HEARTH_REQUIRE_PRIVILEGED=1`), naming the missing kernel feature.
fn dm_or_skip(test: &str) -> bool {
    match probe_dm() {
        Ok(()) => true,
        Err(reason) => {
            // Written to the stderr handle, not with eprintln!, so that the test runner's
            // output capture cannot hide it.
            let line = format!(
                "SKIP {test}: missing kernel feature device-mapper (CONFIG_BLK_DEV_DM): \
                 {reason}. This is the one skip allowed under HEARTH_REQUIRE_PRIVILEGED=1.\n"
            );
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            false
        }
    }
}

#[test]
fn dm_snapshots_share_the_base_and_tear_down() {
    require_privileged!();
    if !dm_or_skip("dm_snapshots_share_the_base_and_tear_down") {
        return;
    }
    let s = setup();
    let base_hash = sha256(&s.base);
    let base_len = fs::metadata(&s.base).unwrap().len();
    let mut d = DmDisks::new(&s.disks, LinuxBlock::new(), common::test_logger());
    let spec = |vm: &str, size| hearth_actors::host::disks::DiskSpec {
        vm: format!("test-{}-{vm}", std::process::id()),
        base: s.base.clone(),
        size,
    };
    let a = d.create(&spec("a", None)).unwrap();
    let b = d.create(&spec("b", Some(base_len + 32 * MIB))).unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_eq!(a.backend, BackendKind::Dm);
        // Both devices are block devices of the right size, readable as the base...
        let dev_len = |p: &Path| {
            let f = File::open(p).unwrap();
            nix::unistd::lseek(&f, 0, nix::unistd::Whence::SeekEnd).unwrap() as u64
        };
        assert_eq!(dev_len(&a.path), base_len);
        assert_eq!(dev_len(&b.path), base_len + 32 * MIB);
        assert_eq!(sha256(&a.path), base_hash);
        fsck_ok(&a.path);
        // ...writable, privately: neither the base nor the other VM sees the write.
        let f = fs::OpenOptions::new().write(true).open(&a.path).unwrap();
        f.write_all_at(&[0x5A; 4096], MIB).unwrap();
        f.sync_all().unwrap();
        drop(f);
        assert_eq!(sha256(&s.base), base_hash);
        let mut head = vec![0u8; base_len as usize];
        File::open(&b.path)
            .unwrap()
            .read_exact_at(&mut head, 0)
            .unwrap();
        assert_eq!(head, fs::read(&s.base).unwrap());
        // One shared read-only loop device for the base.
        assert_eq!(LinuxBlock::new().find_loops(&s.base).unwrap().len(), 1);
        assert_eq!(d.list().unwrap().len(), 2);
    }));
    let ra = d.remove(&a.vm);
    let rb = d.remove(&b.vm);
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
    assert!(ra.unwrap() && rb.unwrap());
    assert!(LinuxBlock::new().find_loops(&s.base).unwrap().is_empty());
    assert!(d.list().unwrap().is_empty());
    assert_eq!(fs::read_dir(&s.disks).unwrap().count(), 0);
}
