//! CreateDisk/RemoveDisk latency of `SnapshotActor` with the `copy` backend, side by side with
//! `cp --reflink=auto --sparse=always` of the same base (and `rm` of the copy), in the same
//! run, rounds interleaved.
//!
//! ```text
//! cargo run --release --example bench_disk [-- --rounds N] [--dir DIR] [--xfs]
//! ```
//!
//! The base is a 1 GiB ext4 image holding 100 MiB of incompressible data (`mkfs.ext4 -d`).
//! Caches are not dropped: the base is read once and one untimed round of each side runs
//! first, so both start equally warm. `--dir` puts the base and disks on the filesystem of DIR
//! (default: a temporary directory under the current one). `--xfs` (root, `mkfs.xfs` from
//! xfsprogs) also runs the same rounds on a loop-mounted XFS made with `-m reflink=1`, where
//! both sides reflink; it is unmounted and removed afterwards.
#![expect(
    clippy::disallowed_methods,
    reason = "examples drive real tools and binaries directly and clean up their own directories"
)]

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use actix::Addr;
use hearth_actors::host::disks::copy::{clone_or_copy, CopyDisks, CopyMethod};
use hearth_actors::snapshot::{CreateDisk, RemoveDisk, SnapshotActor};

const MIB: u64 = 1 << 20;

struct Args {
    rounds: usize,
    dir: Option<PathBuf>,
    xfs: bool,
}

fn args() -> Args {
    let mut a = Args {
        rounds: 15,
        dir: None,
        xfs: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rounds" => a.rounds = it.next().and_then(|n| n.parse().ok()).expect("--rounds N"),
            "--dir" => a.dir = Some(it.next().expect("--dir DIR").into()),
            "--xfs" => a.xfs = true,
            other => panic!("unknown argument {other:?}"),
        }
    }
    a
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A 1 GiB ext4 image holding 100 MiB of incompressible data.
fn make_base(dir: &Path) -> PathBuf {
    let content = dir.join("content");
    fs::create_dir_all(&content).unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..10 {
        let mut data = vec![0u8; 10 * MIB as usize];
        for b in &mut data {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        fs::write(content.join(format!("file{i}")), &data).unwrap();
    }
    let base = dir.join("base.ext4");
    run(Command::new("mkfs.ext4")
        .args(["-F", "-q", "-d"])
        .arg(&content)
        .arg(&base)
        .arg("1G"));
    fs::remove_dir_all(&content).unwrap();
    base
}

fn warm(path: &Path) {
    let mut buf = vec![0u8; MIB as usize];
    let mut f = File::open(path).unwrap();
    while f.read(&mut buf).unwrap() > 0 {}
}

fn probe_method(dir: &Path, base: &Path) -> CopyMethod {
    let dst_path = dir.join("probe.img");
    let dst = File::create(&dst_path).unwrap();
    let method = clone_or_copy(&File::open(base).unwrap(), &dst).unwrap();
    fs::remove_file(&dst_path).unwrap();
    method
}

fn p50(v: &mut [Duration]) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

#[derive(Default)]
struct Times {
    create: Vec<Duration>,
    remove: Vec<Duration>,
}

async fn hearth_round(addr: &Addr<SnapshotActor>, base: &Path, t: &mut Times) {
    let start = Instant::now();
    addr.send(CreateDisk {
        vm: "bench".into(),
        image: base.into(),
        size: None,
    })
    .await
    .unwrap()
    .expect("create");
    t.create.push(start.elapsed());
    let start = Instant::now();
    assert!(addr
        .send(RemoveDisk { vm: "bench".into() })
        .await
        .unwrap()
        .expect("remove"));
    t.remove.push(start.elapsed());
}

fn cp_round(base: &Path, dst: &Path, t: &mut Times) {
    let start = Instant::now();
    run(Command::new("cp")
        .args(["--reflink=auto", "--sparse=always"])
        .arg(base)
        .arg(dst));
    t.create.push(start.elapsed());
    let start = Instant::now();
    run(Command::new("rm").arg("-f").arg(dst));
    t.remove.push(start.elapsed());
}

async fn bench(label: &str, dir: &Path, rounds: usize) {
    fs::create_dir_all(dir).unwrap();
    let base = make_base(dir);
    let method = probe_method(dir, &base);
    let disks = dir.join("disks");
    fs::create_dir_all(&disks).unwrap();
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let addr = SnapshotActor::new(Box::new(CopyDisks::new(&disks)), log).start_dedicated();
    let dst = dir.join("cp.img");

    warm(&base);
    let (mut hearth, mut cp) = (Times::default(), Times::default());
    hearth_round(&addr, &base, &mut Times::default()).await;
    cp_round(&base, &dst, &mut Times::default());
    for _ in 0..rounds {
        hearth_round(&addr, &base, &mut hearth).await;
        cp_round(&base, &dst, &mut cp);
    }
    let (hc, hr) = (p50(&mut hearth.create), p50(&mut hearth.remove));
    let (cc, cr) = (p50(&mut cp.create), p50(&mut cp.remove));
    println!(
        "== {label}: {} ({method:?} copy), {rounds} rounds, p50",
        dir.display()
    );
    println!("{:<34} {:>10} {:>10}", "", "create ms", "remove ms");
    println!(
        "{:<34} {hc:>10.2} {hr:>10.2}",
        "hearth CreateDisk/RemoveDisk"
    );
    println!(
        "{:<34} {cc:>10.2} {cr:>10.2}",
        "cp --reflink=auto --sparse=always / rm"
    );
    println!(
        "ratio hearth/cp: create {:.2}, create+remove {:.2}",
        hc / cc,
        (hc + hr) / (cc + cr)
    );
    fs::remove_file(&base).unwrap();
    let _ = fs::remove_file(&dst);
}

/// A loop-mounted XFS with reflink, unmounted (and its image removed) on drop.
struct XfsMount {
    _dir: tempfile::TempDir,
    mnt: PathBuf,
}

impl XfsMount {
    fn new() -> Self {
        let dir = tempfile::tempdir_in(".").unwrap();
        let img = dir.path().join("xfs.img");
        File::create(&img).unwrap().set_len(4 << 30).unwrap();
        run(Command::new("mkfs.xfs")
            .args(["-q", "-m", "reflink=1"])
            .arg(&img));
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt));
        XfsMount { _dir: dir, mnt }
    }
}

impl Drop for XfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

#[actix::main]
async fn main() {
    let a = args();
    let tmp = tempfile::tempdir_in(".").unwrap();
    let dir = a.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let fs_type = Command::new("findmnt")
        .args(["-n", "-o", "FSTYPE", "-T"])
        .arg(&dir)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    bench(
        &format!("filesystem {fs_type}"),
        &dir.join("bench"),
        a.rounds,
    )
    .await;
    if a.xfs {
        let xfs = XfsMount::new();
        bench(
            "loop-mounted XFS, reflink=1",
            &xfs.mnt.join("bench"),
            a.rounds,
        )
        .await;
    }
}
