//! Makes, writes, lists and removes the root disks of two VMs made from one base image, with
//! `SnapshotActor` and the backend `auto` picks (device-mapper where it works, else copies),
//! printing sizes and timings.
//!
//! ```text
//! cargo run --release --example snapshot [auto|copy|dm] [DIR]
//! ```
//!
//! DIR (default: a temporary directory) receives `base.ext4` and `disks/`; everything made is
//! removed at the end.
#![expect(
    clippy::disallowed_methods,
    reason = "examples drive real tools and binaries directly and clean up their own directories"
)]

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use hearth_actors::host::disks::{open_backend, BackendChoice};
use hearth_actors::snapshot::{CreateDisk, ListDisks, RemoveDisk, SnapshotActor};
use slog::Drain;

const MIB: u64 = 1 << 20;

fn logger() -> slog::Logger {
    let decorator = slog_term::TermDecorator::new().stderr().build();
    let drain = slog_term::CompactFormat::new(decorator).build().fuse();
    let drain = slog_async::Async::new(drain).build().fuse();
    slog::Logger::root(drain, slog::o!())
}

/// A 256 MiB ext4 image holding 32 MiB of data, made with `mkfs.ext4 -d`.
fn make_base(dir: &Path) -> PathBuf {
    let content = dir.join("content");
    fs::create_dir_all(&content).unwrap();
    let mut data = vec![0u8; 32 * MIB as usize];
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for b in &mut data {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    fs::write(content.join("data.bin"), &data).unwrap();
    let base = dir.join("base.ext4");
    let status = Command::new("mkfs.ext4")
        .args(["-F", "-q", "-d"])
        .arg(&content)
        .arg(&base)
        .arg("256M")
        .status()
        .expect("run mkfs.ext4");
    assert!(status.success(), "mkfs.ext4 failed");
    fs::remove_dir_all(&content).unwrap();
    base
}

fn sizes(path: &Path) -> String {
    match fs::metadata(path) {
        Ok(m) if m.is_file() => format!(
            "{} MiB apparent, {:.1} MiB allocated",
            m.len() / MIB,
            (m.blocks() * 512) as f64 / MIB as f64
        ),
        Ok(_) => "block device".into(),
        Err(e) => format!("({e})"),
    }
}

fn ms(t: Instant) -> String {
    format!("{:.2} ms", t.elapsed().as_secs_f64() * 1e3)
}

#[actix::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let choice: BackendChoice = args
        .next()
        .unwrap_or_else(|| "auto".into())
        .parse()
        .expect("backend");
    let tmp = tempfile::tempdir().unwrap();
    let dir = args
        .next()
        .map_or_else(|| tmp.path().to_path_buf(), PathBuf::from);
    fs::create_dir_all(&dir).unwrap();
    let log = logger();

    let t = Instant::now();
    let base = make_base(&dir);
    println!(
        "base {}: {} (made in {})",
        base.display(),
        sizes(&base),
        ms(t)
    );

    let backend = open_backend(choice, &dir.join("disks"), &log).expect("open backend");
    println!("backend: {}", backend.backend());
    let addr = SnapshotActor::new(backend, log.clone()).start_dedicated();

    let vms = [("vm-a", None), ("vm-b", Some(512 * MIB))];
    for (vm, size) in vms {
        let t = Instant::now();
        let disk = addr
            .send(CreateDisk {
                vm: vm.into(),
                image: base.clone(),
                size,
            })
            .await
            .unwrap()
            .expect("create disk");
        println!(
            "create {vm}: {} -> {} ({} MiB to the guest; {})",
            ms(t),
            disk.path.display(),
            disk.size / MIB,
            sizes(&disk.path)
        );
        let t = Instant::now();
        let f = fs::OpenOptions::new().write(true).open(&disk.path).unwrap();
        f.write_all_at(&vec![0xEE; 8 * MIB as usize], 100 * MIB)
            .unwrap();
        f.sync_all().unwrap();
        println!(
            "write 8 MiB into {vm}: {} (now {})",
            ms(t),
            sizes(&disk.path)
        );
    }
    println!("base after the writes: {}", sizes(&base));

    let t = Instant::now();
    let list = addr.send(ListDisks {}).await.unwrap().expect("list");
    println!("list: {} ({} disks)", ms(t), list.len());
    for e in &list {
        println!(
            "  {} {:?} {} {:?} {} MiB",
            e.vm,
            e.state,
            e.backend,
            e.path,
            e.size.unwrap_or(0) / MIB
        );
    }
    for (vm, _) in vms {
        let t = Instant::now();
        let removed = addr
            .send(RemoveDisk { vm: vm.into() })
            .await
            .unwrap()
            .expect("remove");
        println!("remove {vm}: {} (removed: {removed})", ms(t));
    }
    let left = addr.send(ListDisks {}).await.unwrap().expect("list");
    println!("left after removal: {} disks", left.len());
    fs::remove_file(&base).unwrap();
}
