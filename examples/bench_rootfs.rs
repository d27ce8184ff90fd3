//! Benchmark of building a root filesystem from OCI layers: hearth's `build_rootfs` (flatten
//! the gzip layers, then `mkfs.ext4 -d`) against the reference path, `umoci unpack` of the
//! same image then `mkfs.ext4 -d` of its rootfs at the same size, in the same run. The image
//! is made here: `--layers` layers (default 5) of incompressible files, `--mib` MiB in all
//! (default 100) in files of `--file-kib` KiB (default 256), plus a layer of whiteouts, each added with `umoci raw add-layer` (gzip).
//! Prints both times and their ratio (target, issue 13: hearth / reference ≤ 1.0; the pull
//! itself is measured by `bench_pull`). Needs root (owners) and umoci; scratch under /tmp.
//!
//! ```text
//! sudo cargo run --release --example bench_rootfs -- --mib 100 --layers 5
//! ```
#![expect(
    clippy::disallowed_methods,
    reason = "examples drive real tools (umoci, mkfs.ext4) and clean up their own directories"
)]

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use hearth::images::oci::config::ImageConfig;
use hearth::images::oci::rootfs::{
    build_rootfs, FlattenLimits, InitMode, LayerBlob, RootfsOptions,
};
use rand::RngCore;

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run a tool");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

/// A tar of `files` files of `size` random bytes under `dir{layer}/`.
fn layer_tar(path: &Path, layer: usize, files: usize, size: usize) {
    let mut b = tar::Builder::new(fs::File::create(path).unwrap());
    let mut rng = rand::rng();
    let mut data = vec![0u8; size];
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, format!("dir{layer}/"), &[][..])
        .unwrap();
    for f in 0..files {
        rng.fill_bytes(&mut data);
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(size as u64);
        b.append_data(&mut h, format!("dir{layer}/f{f}"), &data[..])
            .unwrap();
    }
    b.finish().unwrap();
}

fn main() {
    let mib = arg("--mib", 100);
    let layers = arg("--layers", 5).max(1);
    let work = tempfile::Builder::new()
        .prefix("bench-rootfs")
        .tempdir_in("/tmp")
        .unwrap();
    let w = work.path();
    let layout = w.join("oci");
    let image = format!("{}:b", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    let file_size = arg("--file-kib", 256) << 10;
    let files = (mib << 20) / file_size / layers;
    for l in 0..layers {
        let tar = w.join(format!("l{l}.tar"));
        layer_tar(&tar, l, files, file_size);
        run(Command::new("umoci")
            .args(["raw", "add-layer", "--image", &image])
            .arg(&tar));
        fs::remove_file(&tar).unwrap();
    }
    // A last layer deleting a few files of the first.
    let mut b = tar::Builder::new(Vec::new());
    for f in 0..files.min(10) {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(0);
        b.append_data(&mut h, format!("dir0/.wh.f{f}"), &[][..])
            .unwrap();
    }
    let wh = w.join("wh.tar");
    fs::write(&wh, b.into_inner().unwrap()).unwrap();
    run(Command::new("umoci")
        .args(["raw", "add-layer", "--image", &image])
        .arg(&wh));

    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let blobs: Vec<LayerBlob> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| LayerBlob {
            path: blob(l["digest"].as_str().unwrap()),
            media_type: l["mediaType"].as_str().unwrap().into(),
            digest: l["digest"].as_str().unwrap().into(),
            size: l["size"].as_u64().unwrap(),
        })
        .collect();
    let compressed: u64 = blobs.iter().map(|b| b.size).sum();

    let opts = RootfsOptions {
        size: None,
        headroom_percent: 25,
        min_headroom_bytes: 256 << 20,
        init: InitMode::Image,
        agent_bin: "/nonexistent".into(),
        limits: FlattenLimits::default(),
    };
    let scratch = w.join("scratch");
    fs::create_dir(&scratch).unwrap();
    let out = w.join("hearth.ext4");
    let t = Instant::now();
    let report = build_rootfs(&blobs, &ImageConfig::default(), &opts, &scratch, &out).unwrap();
    let ours = t.elapsed().as_secs_f64();
    fs::remove_file(&out).unwrap();

    let bundle = w.join("bundle");
    let reference = w.join("reference.ext4");
    let t = Instant::now();
    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle));
    fs::File::create(&reference)
        .unwrap()
        .set_len(report.fs_bytes)
        .unwrap();
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-d"])
        .arg(bundle.join("rootfs"))
        .arg(&reference));
    let theirs = t.elapsed().as_secs_f64();

    println!(
        "image: {} layers, {:.1} MiB of content ({:.1} MiB compressed), {} files; filesystem {:.1} MiB",
        blobs.len(),
        report.content_bytes as f64 / f64::from(1 << 20),
        compressed as f64 / f64::from(1 << 20),
        report.files,
        report.fs_bytes as f64 / f64::from(1 << 20),
    );
    println!("hearth build_rootfs (flatten + mkfs.ext4 -d): {ours:.2} s");
    println!("umoci unpack + mkfs.ext4 -d:                 {theirs:.2} s");
    println!(
        "ratio hearth / reference: {:.2} (target <= 1.0)",
        ours / theirs
    );
}
