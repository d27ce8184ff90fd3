//! Benchmark of OCI pulls: a ~100 MiB image of 5 layers (default) in Debian's
//! `docker-registry`, on the loopback of a private network namespace, pulled and converted to
//! an ext4 root filesystem by hearth (`Puller::pull`, in this process) against the same job
//! done by `skopeo copy` + `umoci unpack` + `mkfs.ext4 -d` in the same run; then a re-pull of
//! the same image under another name (every blob cached: no blob requests, counted in the
//! registry's access log), and the peak RSS of this process during a pull (streaming: it must
//! stay far below the image's size).
//!
//! Needs root and the packages `docker-registry skopeo umoci busybox-static e2fsprogs`.
//!
//! ```text
//! sudo cargo run --release --example bench_pull            # 5 layers x 20 MiB
//! sudo cargo run --release --example bench_pull -- --layers 5 --mib 20 --rounds 3
//! ```
#![expect(
    clippy::disallowed_methods,
    reason = "a benchmark drives real tools (docker-registry, skopeo, umoci, mkfs.ext4)"
)]

#[path = "../tests/common/registry.rs"]
#[allow(
    dead_code,
    reason = "the tests' registry fixture; this benchmark uses part of it"
)]
mod registry;

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use hearth::images::oci::limits::OciLimits;
use hearth::images::oci::rootfs::{FlattenLimits, InitMode, RootfsOptions};
use hearth::images::oci::{OciSettings, PullOptions, Puller};
use hearth::images::ImageStore;
use hearth_proto::api_pull::PullUpdate;
use hearth_testkit::NetNs;
use registry::{TestRegistry, ADDR};

#[derive(Parser)]
struct Args {
    /// Layers in the image.
    #[arg(long, default_value_t = 5)]
    layers: usize,
    /// MiB of file content per layer (incompressible).
    #[arg(long, default_value_t = 20)]
    mib: usize,
    /// Rounds of each measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// Fills `path` with `len` pseudo-random bytes (xorshift: incompressible, reproducible).
fn noise(path: &Path, len: usize, seed: u64) {
    let mut x = seed | 1;
    let mut f = std::io::BufWriter::new(fs::File::create(path).unwrap());
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
}

/// An OCI layout tag `bench`: busybox + `layers` layers of `mib` MiB each.
fn build_image(dir: &Path, layers: usize, mib: usize) -> std::path::PathBuf {
    let layout = dir.join("layout");
    let bundle = dir.join("bundle");
    let (l, b) = (layout.to_str().unwrap(), bundle.to_str().unwrap());
    registry::umoci(&["init", "--layout", l]);
    registry::umoci(&["new", "--image", &format!("{l}:bench")]);
    registry::umoci(&["unpack", "--image", &format!("{l}:bench"), b]);
    let root = bundle.join("rootfs");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    for i in 0..layers {
        let d = root.join(format!("data{i}"));
        fs::create_dir_all(&d).unwrap();
        // A few files per layer, so the flattening has entries to walk too.
        for j in 0..4 {
            noise(
                &d.join(format!("f{j}")),
                (mib << 20) / 4,
                (i * 16 + j) as u64 + 7,
            );
        }
        registry::umoci(&[
            "repack",
            "--refresh-bundle",
            "--image",
            &format!("{l}:bench"),
            b,
        ]);
    }
    registry::umoci(&[
        "config",
        "--image",
        &format!("{l}:bench"),
        "--config.cmd",
        "/bin/sh",
    ]);
    layout
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Peak resident set of this process since the last reset, KiB (`VmHWM`).
fn peak_rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resets `VmHWM` to the current RSS (`/proc/self/clear_refs`, value 5).
fn reset_peak_rss() {
    let _ = fs::write("/proc/self/clear_refs", "5");
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Timed {
    total: Duration,
    fetch: Duration,
    bytes: u64,
}

fn hearth_pull(ns: &NetNs, puller: &Puller, reference: &str, name: &str) -> Timed {
    ns.run(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let start = Instant::now();
        let mut fetched_at = None;
        let meta = rt
            .block_on(
                puller.pull(reference, name, &PullOptions::default(), &mut |e| {
                    if matches!(e, PullUpdate::Building) {
                        fetched_at = Some(start.elapsed());
                    }
                }),
            )
            .unwrap_or_else(|e| panic!("pull: {}", e.full_message()));
        Timed {
            total: start.elapsed(),
            fetch: fetched_at.unwrap_or_default(),
            bytes: meta.size,
        }
    })
}

fn baseline(ns: &NetNs, dir: &Path, reference: &str, fs_bytes: u64) -> (Duration, [Duration; 3]) {
    let layout = dir.join("skopeo");
    let bundle = dir.join("unpacked");
    let out = dir.join("baseline.ext4");
    let start = Instant::now();
    run(Command::new("ip").args([
        "netns",
        "exec",
        ns.name(),
        "skopeo",
        "copy",
        "-q",
        "--src-tls-verify=false",
        &format!("docker://{reference}"),
        &format!("oci:{}:bench", layout.display()),
    ]));
    let copied = start.elapsed();
    run(Command::new("umoci").args([
        "unpack",
        "--image",
        &format!("{}:bench", layout.display()),
        bundle.to_str().unwrap(),
    ]));
    let unpacked = start.elapsed();
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(bundle.join("rootfs"))
        .arg(&out)
        .arg(format!("{}k", fs_bytes / 1024)));
    let total = start.elapsed();
    let _ = fs::remove_dir_all(&layout);
    let _ = fs::remove_dir_all(&bundle);
    let _ = fs::remove_file(&out);
    (
        total,
        [
            copied,
            unpacked.saturating_sub(copied),
            total.saturating_sub(unpacked),
        ],
    )
}

/// A puller over a fresh data directory (kept alive by the returned guard).
fn fresh_puller() -> (tempfile::TempDir, Puller) {
    let data = tempfile::tempdir_in("/var/tmp").unwrap();
    let store = ImageStore::open(data.path()).unwrap();
    let settings = OciSettings {
        insecure_registries: vec![ADDR.into()],
        credentials: None,
        limits: OciLimits::default(),
        rootfs: RootfsOptions {
            size: None,
            headroom_percent: 25,
            min_headroom_bytes: 64 << 20,
            init: InitMode::Image,
            agent_bin: "/bin/busybox".into(),
            limits: FlattenLimits::default(),
        },
    };
    (data, Puller::new(store, settings).unwrap())
}

fn main() {
    let args = Args::parse();
    if !hearth_testkit::privileged("bench_pull") || !registry::tools_present("bench_pull") {
        std::process::exit(1);
    }
    let ns = NetNs::new("bpull");
    let reg = TestRegistry::start(&ns, None);
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    println!(
        "building a {}-layer image of {} MiB of content with umoci ...",
        args.layers,
        args.layers * args.mib
    );
    let layout = build_image(work.path(), args.layers, args.mib);
    reg.push(&layout, "bench", "bench/big");
    let reference = format!("{ADDR}/bench/big:bench");

    let mut firsts = Vec::new();
    let mut first_fetches = Vec::new();
    let mut repulls = Vec::new();
    let mut repull_fetches = Vec::new();
    let mut bases = Vec::new();
    let mut phases = Vec::new();
    let mut peak_kib = 0;
    let mut repull_blob_gets = 0;
    let mut fs_bytes = 0;
    for round in 0..args.rounds {
        // A fresh data directory each round: the first pull downloads everything.
        let (_data, puller) = fresh_puller();
        reset_peak_rss();
        let before = peak_rss_kib();
        let first = hearth_pull(&ns, &puller, &reference, "first");
        peak_kib = peak_kib.max(peak_rss_kib());
        let gets = reg.blob_gets().len();
        let again = hearth_pull(&ns, &puller, &reference, "again");
        repull_blob_gets += reg.blob_gets().len() - gets;
        fs_bytes = first.bytes;
        let (base, phase) = baseline(&ns, work.path(), &reference, first.bytes);
        println!(
            "round {round}: hearth pull+convert {} (fetch {}), re-pull {} (fetch {}), \
             skopeo+umoci+mkfs {} (copy {}, unpack {}, mkfs {}); RSS {} -> peak {} MiB",
            ms(first.total),
            ms(first.fetch),
            ms(again.total),
            ms(again.fetch),
            ms(base),
            ms(phase[0]),
            ms(phase[1]),
            ms(phase[2]),
            before / 1024,
            peak_rss_kib() / 1024,
        );
        firsts.push(first.total);
        first_fetches.push(first.fetch);
        repulls.push(again.total);
        repull_fetches.push(again.fetch);
        bases.push(base);
        phases.push(phase);
    }
    let (first, base) = (median(firsts), median(bases));
    let (repull, repull_fetch, first_fetch) = (
        median(repulls),
        median(repull_fetches),
        median(first_fetches),
    );
    println!(
        "--- medians of {} rounds ({} layers x {} MiB, fs {} MiB)",
        args.rounds,
        args.layers,
        args.mib,
        fs_bytes >> 20
    );
    println!(
        "pull + convert: hearth {} vs skopeo copy + umoci unpack + mkfs.ext4 -d {} = {:.2}x (target <= 1.0)",
        ms(first),
        ms(base),
        first.as_secs_f64() / base.as_secs_f64()
    );
    println!(
        "re-pull sharing all layers: {} blob requests (target 0); {} = {:.0}% of the first pull \
         (its fetch phase {} = {:.1}% of the first's {}; the rest links the first image's ext4: same build key)",
        repull_blob_gets,
        ms(repull),
        100.0 * repull.as_secs_f64() / first.as_secs_f64(),
        ms(repull_fetch),
        100.0 * repull_fetch.as_secs_f64() / first_fetch.as_secs_f64(),
        ms(first_fetch)
    );
    println!(
        "peak RSS of this process during the pulls: {} MiB for a {} MiB image",
        peak_kib / 1024,
        args.layers * args.mib
    );
}
