//! Pause, snapshot and restore through `FirecrackerActor`, against the real Firecracker binary
//! where present (`--firecracker`, else `HEARTH_FIRECRACKER_REAL`, else
//! `../shared/firecracker/bin/firecracker`), else `firecracker-sim`. Prints:
//!
//! - `PauseVm` + `ResumeVm` p50 (each a `PATCH /vm` through the actor);
//! - `CreateVmSnapshot` of a paused 128 MiB and 1 GiB VM: the actor's total next to
//!   Firecracker's own `PUT /snapshot/create` time; the difference is hearth's share (the
//!   `GET /version` and `GET /vm/config` it records, the actor round trip);
//! - restore: `RestoreVm` (fresh process + `PUT /snapshot/load`, until the actor answers) next
//!   to a bare baseline run interleaved with it (fork/exec the same command line, a connect
//!   loop retrying every 50 µs, one raw `PUT /snapshot/load` on a blocking socket), and their
//!   ratio (issue 12's target: ≤ 1.2×).
//!
//! - `--fork`: fork end to end through the API ([`fork_figures`]): hearthd (the `hearthd`
//!   binary of the same profile) in a private network namespace with this VMM, the copy disk
//!   backend on a loop-mounted XFS with reflink, `POST /v1/vms/src/fork` of a 128 MiB VM until
//!   it answers (issue 12's target: <= 150 ms).
//!
//! The VMs have no network interface (no TAP, nothing touches the host's network) and a
//! vsock. The kernel is the generated minimal `vmlinux` (no guest boots under the real
//! binary here; its vCPUs run). Needs root for the real binary (`/dev/kvm`). The simulator's
//! memory file is sparse, so its create figures say nothing about disk speed.
//!
//! ```text
//! cargo run --release --example bench_snapshot -- --iterations 20
//! cargo build --release --bin hearthd && cargo run --release --example bench_snapshot -- --fork
//! cargo run --release --example bench_snapshot -- --fork-only --fork-memory disk,tmpfs,tmpfs-huge
//! ```
#![expect(
    clippy::disallowed_methods,
    reason = "examples drive real binaries directly and clean up their own directories"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use anyhow::{bail, Context};
use clap::Parser;
use hearth_actors::firecracker::api_client;
use hearth_actors::firecracker::command::LaunchArgs;
use hearth_actors::firecracker::snapshot_handlers::load_body;
use hearth_actors::firecracker::{
    binary, cid_for_guest_ip, ConfigureVm, CreateVmSnapshot, FirecrackerActor, FirecrackerSettings,
    KillVm, PauseVm, RestoreVm, ResumeVm, RunDir, SpawnProcess, StartVm, VmConfig, VmProcessEvent,
    VmmSnapshotInfo,
};
use hearth_actors::host::processes::LinuxProcesses;
use hearth_proto::firecracker::LogLevel;
use hearth_testkit::{fc_sim, vmlinux};
use tokio::sync::mpsc::UnboundedReceiver;

#[derive(Parser, Debug)]
struct Args {
    /// Pause/resume pairs and restores per variant.
    #[arg(long, default_value_t = 20)]
    iterations: usize,
    /// Snapshots of the 128 MiB VM.
    #[arg(long, default_value_t = 5)]
    creates_small: usize,
    /// Snapshots of the 1 GiB VM.
    #[arg(long, default_value_t = 3)]
    creates_large: usize,
    /// The VMM binary (default: the real one if found, else firecracker-sim).
    #[arg(long)]
    firecracker: Option<PathBuf>,
    /// Run against firecracker-sim even when a real binary is found.
    #[arg(long)]
    sim: bool,
    /// Where run directories go (tmpfs, like hearth's /run/hearth).
    #[arg(long, default_value = "/dev/shm")]
    work_dir: PathBuf,
    /// Where snapshot files go (a disk, like hearth's `data_dir/snapshots`).
    #[arg(long, default_value = "/var/tmp")]
    snap_dir: PathBuf,
    /// Also measure fork end to end through hearthd's API (root; needs the `hearthd` binary
    /// of the same profile and `mkfs.xfs`; the XFS image goes under `--snap-dir`).
    #[arg(long)]
    fork: bool,
    /// Forks measured (after one warm-up fork).
    #[arg(long, default_value_t = 20)]
    fork_rounds: usize,
    /// With `--fork`: mount a tmpfs on hearthd's `data_dir/snapshots` (memory files, state
    /// files and disk checkpoints in RAM; the VMs' disks stay on the XFS), to show what the
    /// disk costs a fork.
    #[arg(long)]
    fork_snapshots_on_tmpfs: bool,
    /// With `--fork`: where forks' memory files go, one hearthd per setting, in this order
    /// (comma-separated): `disk` (default: with the snapshot on the XFS), `tmpfs`
    /// (`[snapshots] fork_memory_dir` on a tmpfs mounted under a temporary directory),
    /// `tmpfs-huge` (the same, mounted `huge=always`). Repeat a setting to alternate runs.
    #[arg(long, value_delimiter = ',', default_value = "disk")]
    fork_memory: Vec<ForkMemory>,
    /// Only the fork benchmark (skip pause, create and restore).
    #[arg(long)]
    fork_only: bool,
}

/// Where the fork benchmark's hearthd keeps forks' memory files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ForkMemory {
    /// With the snapshot's other files, on the XFS data dir.
    Disk,
    /// `fork_memory_dir` on a tmpfs.
    Tmpfs,
    /// `fork_memory_dir` on a tmpfs mounted `huge=always`.
    TmpfsHuge,
}

impl ForkMemory {
    /// The tmpfs mount options, if on a tmpfs.
    fn tmpfs_options(self) -> Option<&'static str> {
        match self {
            ForkMemory::Disk => None,
            ForkMemory::Tmpfs => Some("size=1g,mode=0700"),
            ForkMemory::TmpfsHuge => Some("size=1g,mode=0700,huge=always"),
        }
    }

    /// A temporary directory, with this setting's tmpfs mounted on it if any.
    fn mount(self) -> anyhow::Result<(tempfile::TempDir, Option<TmpfsMount>)> {
        let dir = tempfile::Builder::new().prefix("bfm").tempdir_in("/tmp")?;
        let mount = self
            .tmpfs_options()
            .map(|o| TmpfsMount::new(dir.path(), o))
            .transpose()?;
        Ok((dir, mount))
    }

    /// As the figures' heading says it.
    fn describe(self) -> String {
        self.tmpfs_options()
            .map_or("with the snapshot".to_string(), |o| {
                format!("fork_memory_dir on a tmpfs ({o})")
            })
    }
}

fn logger() -> slog::Logger {
    use slog::Drain;
    let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
    let drain = slog_term::FullFormat::new(decorator).build().fuse();
    slog::Logger::root(
        slog::LevelFilter::new(drain, slog::Level::Warning).fuse(),
        slog::o!(),
    )
}

fn pick_binary(args: &Args) -> PathBuf {
    if args.sim {
        return fc_sim::sim_binary();
    }
    let shared =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/firecracker/bin/firecracker");
    args.firecracker
        .clone()
        .or_else(|| std::env::var_os("HEARTH_FIRECRACKER_REAL").map(PathBuf::from))
        .or_else(|| shared.exists().then_some(shared))
        .unwrap_or_else(fc_sim::sim_binary)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn p50(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

struct Bench {
    dir: tempfile::TempDir,
    snaps: tempfile::TempDir,
    bin: binary::FirecrackerBinary,
    log: slog::Logger,
}

type Events = UnboundedReceiver<VmProcessEvent>;

impl Bench {
    fn actor(&self, vm: &str) -> anyhow::Result<(Addr<FirecrackerActor>, Events)> {
        let (events, rx) = fc_sim::event_sink();
        let mut settings = FirecrackerSettings::new(self.dir.path().join("vms"));
        settings.log_level = LogLevel::Error;
        let actor = FirecrackerActor::new(
            vm,
            self.bin.clone(),
            Arc::new(LinuxProcesses),
            settings,
            events,
            self.log.clone(),
        )?;
        Ok((actor.start(), rx))
    }

    fn config(&self, mem_size_mib: u64) -> VmConfig {
        VmConfig {
            vcpu_count: 1,
            mem_size_mib,
            kernel: self.dir.path().join("vmlinux"),
            initrd: None,
            extra_boot_args: String::new(),
            rootfs: self.dir.path().join("rootfs"),
            rootfs_read_only: false,
            rootfs_rate_limiter: None,
            net: None,
            vsock_cid: cid_for_guest_ip(std::net::Ipv4Addr::new(172, 31, 240, 5)),
        }
    }

    async fn boot(&self, vm: &str, mem: u64) -> anyhow::Result<(Addr<FirecrackerActor>, Events)> {
        let (a, rx) = self.actor(vm)?;
        a.send(SpawnProcess {}).await??;
        a.send(ConfigureVm {
            config: self.config(mem),
        })
        .await??;
        a.send(StartVm {}).await??;
        Ok((a, rx))
    }
}

async fn kill(vm: &Addr<FirecrackerActor>, events: &mut Events) -> anyhow::Result<()> {
    vm.send(KillVm {}).await??;
    // The exit event means the actor has seen the exit: it may spawn again.
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .context("no exit event")?;
    Ok(())
}

async fn pause_resume(b: &Bench, n: usize) -> anyhow::Result<()> {
    let (vm, mut ev) = b.boot("pr", 128).await?;
    let (mut pause, mut resume) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        vm.send(PauseVm {}).await??;
        pause.push(t.elapsed());
        let t = Instant::now();
        vm.send(ResumeVm {}).await??;
        resume.push(t.elapsed());
    }
    println!(
        "pause p50 {:.3} ms, resume p50 {:.3} ms ({n} pairs)",
        ms(p50(&mut pause)),
        ms(p50(&mut resume))
    );
    kill(&vm, &mut ev).await
}

/// Snapshots of a paused `mem` MiB VM; returns the last snapshot's files and info.
async fn creates(
    b: &Bench,
    mem: u64,
    n: usize,
) -> anyhow::Result<(PathBuf, PathBuf, VmmSnapshotInfo)> {
    let (vm, mut ev) = b.boot(&format!("c{mem}"), mem).await?;
    vm.send(PauseVm {}).await??;
    let state = b.snaps.path().join(format!("state-{mem}"));
    let memf = b.snaps.path().join(format!("mem-{mem}"));
    let (mut total, mut fc, mut share) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..n.max(1) {
        // A fresh file each time, as hearth writes a new snapshot's files.
        let _ = std::fs::remove_file(&memf);
        let t = Instant::now();
        let info = vm
            .send(CreateVmSnapshot {
                snapshot_path: state.clone(),
                mem_path: memf.clone(),
            })
            .await??;
        let all = t.elapsed();
        total.push(all);
        fc.push(info.create);
        share.push(all.saturating_sub(info.create));
        last = Some(info);
    }
    println!(
        "snapshot create {mem} MiB: hearth {:.1} ms p50, Firecracker's PUT {:.1} ms p50, \
         hearth's share {:.2} ms p50 ({} runs; memory file {} MiB allocated)",
        ms(p50(&mut total)),
        ms(p50(&mut fc)),
        ms(p50(&mut share)),
        n.max(1),
        allocated_mib(&memf)
    );
    vm.send(ResumeVm {}).await??;
    kill(&vm, &mut ev).await?;
    Ok((state, memf, last.context("no snapshot")?))
}

fn allocated_mib(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).map_or(0, |m| (m.blocks() * 512) >> 20)
}

async fn restores(
    b: &Bench,
    state: &Path,
    memf: &Path,
    info: &VmmSnapshotInfo,
    n: usize,
) -> anyhow::Result<()> {
    let (vm, mut ev) = b.actor("rs")?;
    let (mut total, mut load, mut bare) = (Vec::new(), Vec::new(), Vec::new());
    let rd = RunDir::new(&b.dir.path().join("vms"), "bare")?;
    // Interleaved, so a change in the machine's load affects both alike.
    for _ in 0..n {
        bare.push(bare_restore(&b.bin.path, &rd, state, memf)?);
        let t = Instant::now();
        let r = vm
            .send(RestoreVm {
                snapshot_path: state.to_path_buf(),
                mem_path: memf.to_path_buf(),
                compat: info.compat.clone(),
                network_overrides: Vec::new(),
                vsock_uds_path: None,
                resume: true,
                clock_realtime: false,
            })
            .await??;
        total.push(t.elapsed());
        load.push(r.load);
        kill(&vm, &mut ev).await?;
    }
    let (h, f) = (p50(&mut total), p50(&mut bare));
    println!(
        "restore {} MiB: hearth RestoreVm {:.1} ms p50 (of which PUT /snapshot/load {:.1} ms), \
         bare spawn+load {:.1} ms p50, ratio {:.2}x ({n} runs)",
        info.mem_size_mib,
        ms(h),
        ms(p50(&mut load)),
        ms(f),
        h.as_secs_f64() / f.as_secs_f64().max(1e-9)
    );
    Ok(())
}

/// Fork/exec the VMM with hearth's command line, connect in a tight loop, one raw
/// `PUT /snapshot/load`; the time until its 204. Kills and reaps the process after.
fn bare_restore(bin: &Path, rd: &RunDir, state: &Path, memf: &Path) -> anyhow::Result<Duration> {
    std::fs::create_dir_all(rd.path())?;
    for s in [rd.api_socket(), rd.vsock_socket()] {
        let _ = std::fs::remove_file(s);
    }
    let body = serde_json::to_vec(&load_body(
        state,
        memf,
        &[],
        &rd.vsock_socket(),
        true,
        false,
    )?)?;
    let t = Instant::now();
    let mut child = Command::new(bin)
        .args(LaunchArgs::for_run_dir(rd, "bare", LogLevel::Error).args())
        .current_dir(rd.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let sock = loop {
        if let Ok(s) = UnixStream::connect(rd.api_socket()) {
            break s;
        }
        if t.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            bail!("API socket did not come up");
        }
        // hearth's first retry delay: a busier loop would take the CPU from the starting
        // VMM on a small machine.
        std::thread::sleep(api_client::SOCKET_BACKOFF_FIRST);
    };
    let mut req = format!(
        "PUT /snapshot/load HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let mut conn = BufReader::new(sock);
    conn.get_mut().write_all(&req)?;
    let mut line = String::new();
    conn.read_line(&mut line)?;
    let took = t.elapsed();
    let ok = line.contains(" 204 ");
    let mut rest = Vec::new();
    let _ = conn
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(50)));
    let _ = conn.read_to_end(&mut rest);
    let _ = child.kill();
    let _ = child.wait();
    if !ok {
        bail!(
            "bare load failed: {line} {}",
            String::from_utf8_lossy(&rest)
        );
    }
    Ok(took)
}

/// A loop-mounted XFS made with `reflink=1` in a temporary directory under `parent`: the
/// data directory of the fork benchmark, so the copy disk backend reflinks. Unmounted (and
/// its image removed) on drop.
struct XfsMount {
    _dir: tempfile::TempDir,
    mnt: PathBuf,
}

impl XfsMount {
    fn new(parent: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir_in(parent)?;
        let img = dir.path().join("xfs.img");
        std::fs::File::create(&img)?.set_len(2 << 30)?;
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt)?;
        let ok = |c: &mut Command| c.status().is_ok_and(|s| s.success());
        if !ok(Command::new("mkfs.xfs")
            .args(["-q", "-m", "reflink=1"])
            .arg(&img))
        {
            bail!("mkfs.xfs -m reflink=1 failed (Debian package xfsprogs)");
        }
        if !ok(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt))
        {
            bail!("mount -o loop of {} failed", img.display());
        }
        Ok(XfsMount { _dir: dir, mnt })
    }
}

impl Drop for XfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

/// A tmpfs mounted on a directory of the bench's own XFS, unmounted on drop.
struct TmpfsMount(PathBuf);

impl TmpfsMount {
    /// Mounted at `at` if `wanted`.
    fn when(wanted: bool, at: &Path) -> anyhow::Result<Option<Self>> {
        wanted.then(|| Self::new(at, "size=2g")).transpose()
    }

    fn new(at: &Path, options: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(at)?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            bail!("mount -t tmpfs on {} failed", at.display());
        }
        Ok(TmpfsMount(at.to_path_buf()))
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// hearthd, killed on drop.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `name`'s binary next to this example's (`target/<profile>/<name>`), or `$env`.
fn sibling(name: &str, env: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(p.into());
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("exe dir")?.to_path_buf();
    if dir.file_name().and_then(|n| n.to_str()) == Some("examples") {
        dir.pop();
    }
    let bin = dir.join(name);
    if !bin.exists() {
        bail!("{} not found: build it or set {env}", bin.display());
    }
    Ok(bin)
}

/// The p50 of the snapshot and restore totals hearthd logged (JSON lines, `ms` fields).
fn print_logged(log: &Path) {
    // The split, from hearthd's own log lines (JSON, `ms` fields), warm-up included.
    let text = std::fs::read_to_string(log).unwrap_or_default();
    for (what, msg) in [
        ("snapshot (pause..ready)", "snapshot taken"),
        ("restore (disk..running)", "VM restored"),
    ] {
        let mut v: Vec<Duration> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["msg"] == msg)
            .filter_map(|l| l["ms"].as_f64())
            .map(|m| Duration::from_secs_f64(m / 1e3))
            .collect();
        println!(
            "  of which {what}: p50 {:.1} ms ({} logged)",
            ms(p50(&mut v)),
            v.len()
        );
    }
}

/// hearthd's `/metrics` text.
fn metrics_text(client: &hearth::client::Client) -> anyhow::Result<String> {
    let metrics = client.request(http::Method::GET, "/metrics", &[], None)?;
    Ok(String::from_utf8_lossy(&metrics.body).into_owned())
}

/// The value of the metric line starting with `key` in `text` (0 if absent).
fn metric(text: &str, key: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The mean of each snapshot and restore phase over the forks made between the metrics
/// `before` and `after` (hearthd's histograms), in ms, by family and phase.
fn phase_means(before: &str, after: &str) -> Vec<(&'static str, String, f64)> {
    let mut out = Vec::new();
    for family in ["snapshot", "restore"] {
        let prefix = format!("hearth_{family}_phase_seconds_sum{{phase=\"");
        for l in after.lines() {
            let Some((phase, _)) = l.strip_prefix(&prefix).and_then(|r| r.split_once('"')) else {
                continue;
            };
            let sum_key = format!("{prefix}{phase}\"}}");
            let count_key = format!("hearth_{family}_phase_seconds_count{{phase=\"{phase}\"}}");
            let count = metric(after, &count_key) - metric(before, &count_key);
            let sum = metric(after, &sum_key) - metric(before, &sum_key);
            if count > 0.0 {
                out.push((family, phase.to_owned(), sum / count * 1e3));
            }
        }
    }
    out
}

/// Prints the phase means (counted forks only: the warm-up is before `before`) and the fork
/// p50 less the two waits on a guest that never boots here (the freeze request's timeout and
/// the identity step's), which no answering guest would cost.
fn print_phase_means(before: &str, after: &str, p50_ms: f64) {
    let means = phase_means(before, after);
    for family in ["snapshot", "restore"] {
        let phases: Vec<String> = means
            .iter()
            .filter(|(f, _, _)| *f == family)
            .map(|(_, p, m)| format!("{p} {m:.1}"))
            .collect();
        println!("  {family} phases, mean ms: {}", phases.join(", "));
    }
    let wait = |family: &str, phase: &str| {
        means
            .iter()
            .find(|(f, p, _)| *f == family && p == phase)
            .map_or(0.0, |(_, _, m)| *m)
    };
    let waits = wait("snapshot", "freeze") + wait("restore", "identity");
    println!(
        "  fork without the guest waits (p50 less the freeze and identity means, {waits:.1} ms): {:.1} ms (target <= 150 ms)",
        p50_ms - waits
    );
}

/// `rounds` forks of VM `src` after one warm-up (first reflink, page cache), each deleted
/// after it answered: their times, and hearthd's metrics before the first counted one.
fn fork_rounds(
    client: &hearth::client::Client,
    rounds: usize,
) -> anyhow::Result<(Vec<Duration>, String)> {
    use http::Method;
    let mut took = Vec::with_capacity(rounds);
    let mut before = String::new();
    for i in 0..=rounds {
        if i == 1 {
            before = metrics_text(client)?;
        }
        let name = format!("f{i}");
        let t0 = Instant::now();
        let fork: serde_json::Value = client.send_json(
            Method::POST,
            "/v1/vms/src/fork",
            &[],
            &serde_json::json!({ "name": name }),
        )?;
        let elapsed = t0.elapsed();
        let state = fork["state"].as_str().unwrap_or_default();
        if state != "running" && state != "unready" {
            bail!("fork {name} is {state}: {fork}");
        }
        if i > 0 {
            took.push(elapsed);
        }
        client.request(Method::DELETE, format!("/v1/vms/{name}"), &[], None)?;
    }
    Ok((took, before))
}

/// Fork end to end through the API: hearthd (the sibling binary) in a private network
/// namespace (`VmHost`), `vmm` as its Firecracker, the copy disk backend, its data directory
/// on a loop-mounted XFS with reflink under `parent`. A 128 MiB VM `src` is booted (no ready
/// probe), then each round times `POST /v1/vms/src/fork` until it answers (the fork
/// `running`, or `unready` where no guest boots) and deletes the fork. Prints p50, min, max
/// and the snapshot/restore split hearthd logs. `on_tmpfs`: a tmpfs on `data_dir/snapshots`;
/// `memory`: where forks' memory files go (a tmpfs mounted under a temporary directory).
fn fork_figures(
    vmm: &Path,
    parent: &Path,
    rounds: usize,
    on_tmpfs: bool,
    memory: ForkMemory,
) -> anyhow::Result<()> {
    use hearth::client::Client;
    use http::Method;

    let hearthd = sibling("hearthd", "HEARTHD")?;
    let xfs = XfsMount::new(parent)?;
    let data = xfs.mnt.join("data");
    let mut host = hearth::vm_host::VmHost::with_data_dir("hbfk", 64, Some(&data))?;
    let tmpfs = TmpfsMount::when(on_tmpfs, &data.join("snapshots"))?;
    let (mem_dir, mem_mount) = memory.mount()?;
    if mem_mount.is_some() {
        host.config.snapshots.fork_memory_dir = Some(mem_dir.path().join("forks"));
    }
    let socket = host.dir.path().join("hearthd.sock");
    host.config.api.socket.clone_from(&socket);
    host.config.network.pool_size = 2;
    host.config.firecracker_bin = Some(vmm.to_path_buf());
    host.config.vm.disk_backend = "copy".into();
    host.config.validate()?;
    let config_path = host.dir.path().join("hearthd.toml");
    std::fs::write(&config_path, toml::to_string(&host.config)?)?;
    let log = host.dir.path().join("hearthd.log");
    let daemon = Daemon(
        Command::new("ip")
            .args(["netns", "exec", host.ns.name()])
            .arg(&hearthd)
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("spawn hearthd")?,
    );
    let client = Client::new(&socket);
    let run = || -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while client
            .request(Method::GET, "/v1/health", &[], None)
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("hearthd did not come up");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let spec = serde_json::json!({"name": "src", "kernel": hearth::vm_host::KERNEL,
            "rootfs": hearth::vm_host::ROOTFS, "memory_mib": 128, "ready_probe": false});
        let vm: serde_json::Value = client.send_json(Method::POST, "/v1/vms", &[], &spec)?;
        println!(
            "fork: source {} {} (128 MiB), data dir on {} (XFS, reflink=1), disk backend copy{}; fork memory: {}",
            vm["name"],
            vm["state"],
            xfs.mnt.display(),
            tmpfs
                .as_ref()
                .map_or("", |_| "; data_dir/snapshots on a tmpfs"),
            memory.describe()
        );
        let (mut took, before) = fork_rounds(&client, rounds)?;
        let (min, max) = (
            took.iter().min().copied().unwrap_or_default(),
            took.iter().max().copied().unwrap_or_default(),
        );
        let median = ms(p50(&mut took));
        println!(
            "fork end to end (API, to running/unready), {rounds} rounds: p50 {median:.1} ms, min {:.1} ms, max {:.1} ms",
            ms(min),
            ms(max)
        );
        print_logged(&log);
        print_phase_means(&before, &metrics_text(&client)?, median);
        client.request(Method::DELETE, "/v1/vms/src", &[], None)?;
        Ok(())
    };
    let result = run();
    if result.is_err() {
        eprintln!(
            "--- hearthd log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    drop(daemon);
    drop(host);
    drop(tmpfs);
    drop(mem_mount);
    drop(xfs);
    result
}

/// `/proc/loadavg`'s three averages (other work on the machine skews the figures).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let path = pick_binary(&args);
    let bin = binary::resolve(Some(&path), &LinuxProcesses)
        .with_context(|| format!("{} is not a usable VMM", path.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("bsn")
        .tempdir_in(&args.work_dir)?;
    let snaps = tempfile::Builder::new()
        .prefix("bench-snap")
        .tempdir_in(&args.snap_dir)?;
    vmlinux::write_minimal_vmlinux(&dir.path().join("vmlinux"));
    std::fs::File::create(dir.path().join("rootfs"))?.set_len(1 << 20)?;
    let sim = path.file_name().is_some_and(|n| n == "firecracker-sim");
    println!(
        "VMM: {} {} ({}); run dirs under {}, snapshots under {}",
        if sim {
            "firecracker-sim"
        } else {
            "Firecracker"
        },
        bin.version,
        path.display(),
        args.work_dir.display(),
        args.snap_dir.display()
    );
    let b = Bench {
        dir,
        snaps,
        bin,
        log: logger(),
    };
    if !args.fork_only {
        actix::System::new().block_on(async {
            pause_resume(&b, args.iterations).await?;
            let (state, memf, info) = creates(&b, 128, args.creates_small).await?;
            restores(&b, &state, &memf, &info, args.iterations).await?;
            let (_s, big, _i) = creates(&b, 1024, args.creates_large).await?;
            // Free the disk at once: a GiB per run adds up.
            let _ = std::fs::remove_file(big);
            anyhow::Ok(())
        })?;
    }
    if args.fork || args.fork_only {
        for memory in &args.fork_memory {
            println!("load average: {}", load_average());
            fork_figures(
                &path,
                &args.snap_dir,
                args.fork_rounds,
                args.fork_snapshots_on_tmpfs,
                *memory,
            )?;
        }
        println!("load average: {}", load_average());
    }
    Ok(())
}
