//! What the jail costs: spawn → `Running` of a jailed VMM (Firecracker's jailer, own uid,
//! chroot, new pid namespace, cgroups with limits) next to an unjailed one, same run, real
//! binaries, driven through `FirecrackerActor` as the saga drives it (`SpawnProcess`,
//! `ConfigureVm`, `StartVm`). Then 20 VMs at once, jailed and unjailed, to see whether jailed
//! spawns serialize; then the same again with 500 other jails present, each holding a
//! read-only bind mount of the kernel (500 extra mounts in hearthd's mount namespace, the
//! pessimistic case of a kernel on another filesystem; the jailer's doc warns that its
//! `pivot_root` slows down with many mounts).
//!
//! Jailed spawns run twice, alternating: with hearth's attach warm-up (the default: the
//! cgroup-v1 attach grace period started while the jail is made, see
//! `LinuxJails::start_attach_grace_period`) and without it ("cold"). A direct breakdown
//! (no actor) then times each step on its own: hearth's `prepare`, the jailer process from
//! spawn to exit (the jailer's own work: binary copy, cgroups, namespaces, chroot, mknod,
//! fork), the VMM's API socket after that, and `remove`.
//!
//! The warm pool (`[jailer] warm_pool`): a fourth variant takes a member, a VMM the jailer
//! started beforehand (untimed, as hearthd's pool does in the background), so the timed part
//! is the take (the VM's files linked into its jail, its limits written into its cgroups,
//! the console FIFO moved) and configure/start. Bursts run with a pool as large as the burst
//! and with a smaller one (`--small-pool`; the rest run the jailer), and the idle members'
//! resident memory is read from `/proc`. The pool moves the jailer's work off the create
//! path; it does not make the jailer faster.
//!
//! `--sweep-only` times `Open`'s jail process sweep instead (one scan of every host process,
//! nothing to kill), over the host's processes and with `--present` idle ones added.
//!
//! Target (issue 16): the jail costs ≤ 10 ms per VM at p50, and 20 parallel jailed spawns
//! do not serialize. The kernel is the generated minimal `vmlinux` (no guest boots here),
//! no network device. Needs root, `/dev/kvm`, the real binaries:
//!
//! ```text
//! cargo run --release --example bench_jailer -- \
//!     --firecracker ../shared/firecracker/bin/firecracker --jailer ../shared/firecracker/bin/jailer
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use anyhow::{bail, Context};
use clap::Parser;
use hearth_actors::firecracker::jailer::{JailLayout, JailLimits, JailerArgs, LimitPolicy};
use hearth_actors::firecracker::warm_pool::{finish_member, start_member, MemberSpec, WarmMember};
use hearth_actors::firecracker::{
    binary, cid_for_guest_ip, ConfigureVm, FirecrackerActor, FirecrackerBinary,
    FirecrackerSettings, KillVm, RemoveRunDir, SpawnProcess, StartVm, VmConfig, VmJail,
};
use hearth_actors::host::jails::cgroups::{detect_host, CgroupHost};
use hearth_actors::host::jails::{JailFile, JailPlan, Jails, LinuxJails};
use hearth_actors::host::processes::LinuxProcesses;
use hearth_testkit::{fc_sim, vmlinux};

#[derive(Parser, Debug)]
struct Args {
    /// The real Firecracker (statically linked). Default: `HEARTH_FIRECRACKER_REAL`.
    #[arg(long)]
    firecracker: Option<PathBuf>,
    /// The jailer. Default: `jailer` beside the Firecracker binary.
    #[arg(long)]
    jailer: Option<PathBuf>,
    /// Sequential boots per variant.
    #[arg(long, default_value_t = 30)]
    boots: usize,
    /// VMs spawned at once in the parallel phase.
    #[arg(long, default_value_t = 20)]
    parallel: usize,
    /// Other jails present in the last phase.
    #[arg(long, default_value_t = 500)]
    present: usize,
    /// The pool smaller than the burst (its other VMs run the jailer).
    #[arg(long, default_value_t = 5)]
    small_pool: usize,
    /// Only the cgroup attach probe (no VMs).
    #[arg(long)]
    attach_only: bool,
    /// Only the time of `Open`'s process scan (`kill_jail_processes` over this host's
    /// processes, nothing to kill), with `--present` idle processes added.
    #[arg(long)]
    sweep_only: bool,
}

/// `Open`'s jail process sweep when nothing is to be killed: one scan of every process's
/// identity and uids. Measured over the host's processes as they are, then with `extra`
/// more (`sleep`s, as a host with many VMs has VMMs), `rounds` times each.
#[expect(
    clippy::disallowed_methods,
    reason = "starts idle stand-in processes for the scan to read"
)]
async fn sweep_probe(extra: usize, rounds: usize) -> anyhow::Result<()> {
    use hearth_actors::host::jails::sweep::{kill_jail_processes, JailProcesses};
    use hearth_actors::host::processes::Processes;
    let which = JailProcesses {
        base: Path::new("/nonexistent-hearth-bench"),
        exec_name: "firecracker",
        uids: 4_000_000_000..=4_000_000_009,
    };
    let mut children = Sleepers(Vec::new());
    for (phase, add) in [
        ("the host's processes", 0),
        ("with the extra processes", extra),
    ] {
        for _ in 0..add {
            children
                .0
                .push(std::process::Command::new("sleep").arg("600").spawn()?);
        }
        let count = LinuxProcesses.list()?.len();
        let mut times = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let t0 = Instant::now();
            let report = kill_jail_processes(&LinuxProcesses, &which, |_| true).await?;
            times.push(t0.elapsed());
            anyhow::ensure!(report.killed.is_empty() && report.left.is_empty());
        }
        println!(
            "Open's process scan, {phase} ({count} processes): p50 {:.2} ms, p90 {:.2} ms \
             ({rounds} scans)",
            pct(&times, 0.5),
            pct(&times, 0.9)
        );
    }
    Ok(())
}

/// The stand-in processes, killed and reaped when dropped (also when the probe fails).
struct Sleepers(Vec<std::process::Child>);

impl Drop for Sleepers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Where the jailer's cgroup time goes: per VM, `mkdir` of its cgroup under the (existing)
/// `hearth` parent in each hierarchy, then the first and the further writes of a pid into
/// `cgroup.procs`, `rounds` times with 200 ms idle between (as between creates). Shows
/// whether pre-creating cgroups would save anything: only the first attach is slow.
fn attach_probe(cgroups: &CgroupHost, rounds: usize) -> anyhow::Result<()> {
    let (mut mkdirs, mut first, mut rest) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds {
        let dirs: Vec<PathBuf> = cgroups
            .mounts
            .iter()
            .map(|m| m.join("hearth").join(format!("bench-attach-{i}")))
            .collect();
        let t0 = Instant::now();
        for d in &dirs {
            std::fs::create_dir_all(d).with_context(|| format!("mkdir {}", d.display()))?;
        }
        mkdirs.push(t0.elapsed());
        #[expect(
            clippy::disallowed_methods,
            reason = "a bare process to move between cgroups"
        )]
        let mut child = std::process::Command::new("sleep").arg("5").spawn()?;
        let pid = child.id().to_string();
        for (n, d) in dirs.iter().enumerate() {
            let t0 = Instant::now();
            std::fs::write(d.join("cgroup.procs"), &pid)?;
            if n == 0 {
                first.push(t0.elapsed());
            } else {
                rest.push(t0.elapsed());
            }
        }
        child.kill()?;
        child.wait()?;
        for d in &dirs {
            std::fs::remove_dir(d)?;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "cgroup attach probe ({rounds} rounds, {} hierarchies): mkdir of a VM's cgroups p50 \
         {:.2} ms; first pid write p50 {:.2} ms (p90 {:.2}); further writes p50 {:.3} ms",
        cgroups.mounts.len(),
        pct(&mkdirs, 0.5),
        pct(&first, 0.5),
        pct(&first, 0.9),
        pct(&rest, 0.5)
    );
    Ok(())
}

/// Everything the boots share.
struct Bench {
    dir: tempfile::TempDir,
    fc: FirecrackerBinary,
    jailer: PathBuf,
    cgroups: CgroupHost,
    jails: Arc<LinuxJails>,
    /// The same without the attach warm-up.
    cold: Arc<LinuxJails>,
}

/// How one VM is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Plain,
    Jailed,
    /// Jailed without the attach warm-up.
    Cold,
    /// Jailed by taking a warm pool member (started by the jailer beforehand, untimed).
    Warm,
}

/// The chroot base, short for the socket paths.
fn base(dir: &Path) -> PathBuf {
    dir.join("j")
}

impl Bench {
    fn kernel(&self) -> PathBuf {
        self.dir.path().join("vmlinux")
    }

    fn config(&self, disk: &Path) -> VmConfig {
        VmConfig {
            vcpu_count: 1,
            mem_size_mib: 128,
            kernel: self.kernel(),
            initrd: None,
            extra_boot_args: String::new(),
            rootfs: disk.to_path_buf(),
            rootfs_read_only: false,
            rootfs_rate_limiter: None,
            net: None,
            vsock_cid: cid_for_guest_ip(std::net::Ipv4Addr::new(172, 31, 0, 5)),
        }
    }

    /// The uid (and jail id) of VM `n`.
    fn uid(n: u32) -> u32 {
        950_000 + n
    }

    /// A warm pool member for VM `n`, as hearthd's pool starts one: the jailer run with the
    /// warm limits, then its VMM's API socket up (so it is idle when taken).
    async fn member(&self, n: u32) -> anyhow::Result<WarmMember> {
        let uid = Self::uid(n);
        let spec = MemberSpec {
            jailer: self.jailer.clone(),
            exec_file: self.fc.path.clone(),
            jails: self.jails.clone(),
            processes: Arc::new(LinuxProcesses),
            fifo_dir: self
                .dir
                .path()
                .join("vms")
                .join(hearth_actors::firecracker::warm_pool::FIFO_DIR),
            cgroup_version: self.cgroups.version,
            limits: JailLimits::for_warm(&LimitPolicy::default()),
            log_level: hearth_proto::firecracker::LogLevel::Warning,
            timeout: Duration::from_secs(5),
        };
        let layout = JailLayout::new(
            &base(self.dir.path()),
            &self.fc.path,
            &JailLayout::id_for_uid(uid),
        )?;
        let jailer = start_member(&spec, &layout, uid)?;
        let m = finish_member(
            spec,
            layout.clone(),
            uid,
            jailer,
            slog::Logger::root(slog::Discard, slog::o!()),
        )
        .await?;
        let t0 = Instant::now();
        while !layout.api_socket().exists() {
            if t0.elapsed() > Duration::from_secs(5) {
                bail!("member {uid}: no API socket");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(m)
    }

    /// `count` members for VMs `first..`, started at once.
    async fn members(&self, count: usize, first: u32) -> anyhow::Result<Vec<WarmMember>> {
        futures::future::join_all((0..count).map(|i| self.member(first + i as u32)))
            .await
            .into_iter()
            .collect()
    }

    /// One VM: spawn → Running timed, then killed and removed (jail included).
    async fn boot(
        &self,
        v: Variant,
        n: u32,
        member: Option<WarmMember>,
    ) -> anyhow::Result<Duration> {
        Ok(self.boot_with(v, n, member).await?.total)
    }

    /// One VM, with its phases; a `Warm` one starts its member first (untimed).
    async fn boot_phases(&self, v: Variant, n: u32) -> anyhow::Result<Phases> {
        let member = match v {
            Variant::Warm => Some(self.member(n).await?),
            _ => None,
        };
        self.boot_with(v, n, member).await
    }

    /// One VM, with its phases, taking `member` if given.
    async fn boot_with(
        &self,
        v: Variant,
        n: u32,
        member: Option<WarmMember>,
    ) -> anyhow::Result<Phases> {
        let name = format!("b{n}");
        let disk = self.dir.path().join(format!("{name}.ext4"));
        std::fs::write(&disk, vec![0u8; 1 << 20])?;
        let (events, _rx) = fc_sim::event_sink();
        let mut actor = FirecrackerActor::new(
            &name,
            self.fc.clone(),
            Arc::new(LinuxProcesses),
            FirecrackerSettings::new(self.dir.path().join("vms")),
            events,
            slog::Logger::root(slog::Discard, slog::o!()),
        )?;
        if v != Variant::Plain {
            let uid = Self::uid(n);
            let jails = if v == Variant::Cold {
                self.cold.clone()
            } else {
                self.jails.clone()
            };
            let layout = JailLayout::new(
                &base(self.dir.path()),
                &self.fc.path,
                &JailLayout::id_for_uid(uid),
            )?;
            let jail = VmJail::new(
                self.jailer.clone(),
                jails,
                layout,
                uid,
                uid,
                self.cgroups.version,
                JailLimits::for_vm(1, 128, &LimitPolicy::default()),
                vec![
                    JailFile {
                        source: self.kernel(),
                        name: "vmlinux".into(),
                        writable: false,
                    },
                    JailFile {
                        source: disk.clone(),
                        name: "rootfs.ext4".into(),
                        writable: true,
                    },
                ],
            );
            actor = actor.jailed(match member {
                Some(m) => jail.with_member(m),
                None => jail,
            });
        }
        let vm = actor.start();
        let t0 = Instant::now();
        let spawned = vm.send(SpawnProcess {}).await?.context("spawn")?;
        vm.send(ConfigureVm {
            config: self.config(&disk),
        })
        .await?
        .context("configure")?;
        vm.send(StartVm {}).await?.context("start")?;
        let total = t0.elapsed();
        vm.send(KillVm {}).await?.context("kill")?;
        let t1 = Instant::now();
        vm.send(RemoveRunDir {}).await?.context("remove")?;
        let remove = t1.elapsed();
        std::fs::remove_file(&disk)?;
        Ok(Phases {
            total,
            spawn: spawned.spawn,
            api_ready: spawned.api_ready,
            remove,
        })
    }

    /// `count` boots one after the other, alternating unjailed, jailed and jailed cold so all
    /// see the same machine load.
    async fn sequential(&self, count: usize, first: u32) -> anyhow::Result<Samples> {
        let mut s = Samples::default();
        for i in 0..count {
            let n = first + i as u32;
            let p = self.boot_phases(Variant::Plain, n).await?;
            s.plain.push(p.total);
            s.plain_phases.push(p);
            let j = self.boot_phases(Variant::Jailed, n).await?;
            s.jailed.push(j.total);
            s.jailed_phases.push(j);
            let c = self.boot_phases(Variant::Cold, n).await?;
            s.cold.push(c.total);
            s.cold_phases.push(c);
            let w = self.boot_phases(Variant::Warm, n).await?;
            s.warm.push(w.total);
            s.warm_phases.push(w);
        }
        Ok(s)
    }

    /// The steps of one jailed spawn timed on their own, without the actor: hearth's
    /// `prepare`, the jailer from spawn to exit, then the VMM's API socket, and `remove`.
    fn breakdown(&self, v: Variant, n: u32) -> anyhow::Result<[Duration; 4]> {
        let uid = 970_000 + n;
        let jails = if v == Variant::Cold {
            &self.cold
        } else {
            &self.jails
        };
        let layout = JailLayout::new(
            &base(self.dir.path()),
            &self.fc.path,
            &JailLayout::id_for_uid(uid),
        )?;
        let plan = JailPlan {
            layout: layout.clone(),
            uid,
            gid: uid,
            files: vec![JailFile {
                source: self.kernel(),
                name: "vmlinux".into(),
                writable: false,
            }],
        };
        let args = JailerArgs::for_vm(
            &layout,
            &self.fc.path,
            uid,
            uid,
            self.cgroups.version,
            JailLimits::for_vm(1, 128, &LimitPolicy::default()),
            hearth_proto::firecracker::LogLevel::Warning,
        );
        let t0 = Instant::now();
        jails.prepare(&plan)?;
        let prepare = t0.elapsed();
        let t1 = Instant::now();
        #[expect(
            clippy::disallowed_methods,
            reason = "the jailer alone, timed from spawn to exit"
        )]
        let status = std::process::Command::new(&self.jailer)
            .args(args.args())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()?;
        let jailer = t1.elapsed();
        if !status.success() {
            jails.remove(&layout)?;
            bail!("jailer failed: {status}");
        }
        let pid = jails.read_pid(&layout)?;
        let t2 = Instant::now();
        let socket = layout.api_socket();
        let connected = loop {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                break true;
            }
            if t2.elapsed() > Duration::from_secs(2) {
                break false;
            }
            std::thread::sleep(Duration::from_micros(100));
        };
        let api = t2.elapsed();
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        // Not our child (the jailer forked it into its pid namespace): wait until it is gone
        // so its cgroups can be removed.
        while nix::sys::signal::kill(pid, None).is_ok() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let t3 = Instant::now();
        let mut removed = jails.remove(&layout);
        for _ in 0..100 {
            if removed.is_ok() {
                break;
            }
            // A cgroup stays busy for a moment after its last task died.
            std::thread::sleep(Duration::from_millis(5));
            removed = jails.remove(&layout);
        }
        removed?;
        let remove = t3.elapsed();
        if !connected {
            bail!("no API socket at {}", socket.display());
        }
        Ok([prepare, jailer, api, remove])
    }

    /// `count` boots at once, per variant; answers each VM's time and the wall time. `Warm`:
    /// the first `pool` VMs take members started (untimed) before the burst, the others run
    /// the jailer (as a create finding the pool empty does).
    async fn parallel(
        &self,
        v: Variant,
        count: usize,
        first: u32,
        pool: usize,
    ) -> anyhow::Result<(Vec<Duration>, Duration)> {
        let mut members = match v {
            Variant::Warm => self.members(pool.min(count), first).await?,
            _ => Vec::new(),
        }
        .into_iter();
        let t0 = Instant::now();
        let boots = (0..count).map(|i| {
            let m = members.next();
            let v = if v == Variant::Warm && m.is_none() {
                Variant::Jailed
            } else {
                v
            };
            self.boot(v, first + i as u32, m)
        });
        let each = futures::future::join_all(boots)
            .await
            .into_iter()
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((each, t0.elapsed()))
    }
}

/// One boot's times.
struct Phases {
    /// Spawn → Running.
    total: Duration,
    /// Until the VMM process exists (jailed: jail made, jailer run, VMM exec'd).
    spawn: Duration,
    /// Then until its API socket accepts.
    api_ready: Duration,
    /// Removing the run directory (jailed: and the jail, cgroups).
    remove: Duration,
}

#[derive(Default)]
struct Samples {
    plain: Vec<Duration>,
    jailed: Vec<Duration>,
    cold: Vec<Duration>,
    warm: Vec<Duration>,
    plain_phases: Vec<Phases>,
    jailed_phases: Vec<Phases>,
    cold_phases: Vec<Phases>,
    warm_phases: Vec<Phases>,
}

fn phase_p50s(v: &[Phases]) -> String {
    let of = |f: fn(&Phases) -> Duration| pct(&v.iter().map(f).collect::<Vec<_>>(), 0.5);
    format!(
        "spawn {:.1} ms, api_ready {:.1} ms, remove {:.1} ms",
        of(|p| p.spawn),
        of(|p| p.api_ready),
        of(|p| p.remove)
    )
}

fn pct(v: &[Duration], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

fn report(what: &str, s: &Samples) {
    let (p, j, c) = (pct(&s.plain, 0.5), pct(&s.jailed, 0.5), pct(&s.cold, 0.5));
    println!(
        "{what}: spawn→Running p50 unjailed {p:.1} ms, jailed {j:.1} ms, jailed cold {c:.1} ms \
         (p90 {:.1} / {:.1} / {:.1}); jail cost {:.1} ms per VM ({:.1} cold)",
        pct(&s.plain, 0.9),
        pct(&s.jailed, 0.9),
        pct(&s.cold, 0.9),
        j - p,
        c - p
    );
    println!("  p50 phases unjailed:    {}", phase_p50s(&s.plain_phases));
    println!("  p50 phases jailed:      {}", phase_p50s(&s.jailed_phases));
    println!("  p50 phases jailed cold: {}", phase_p50s(&s.cold_phases));
    let w = pct(&s.warm, 0.5);
    println!(
        "  jailed from the warm pool: p50 {w:.1} ms (p90 {:.1}); jail cost {:.1} ms per VM; \
         phases: {}",
        pct(&s.warm, 0.9),
        w - p,
        phase_p50s(&s.warm_phases)
    );
}

/// `rounds` direct breakdowns per variant, alternating, 200 ms idle between (as between
/// creates, so each cold attach waits its own grace period).
fn report_breakdown(b: &Bench, what: &str, rounds: usize) -> anyhow::Result<()> {
    for v in [Variant::Jailed, Variant::Cold] {
        let mut steps: [Vec<Duration>; 4] = Default::default();
        for i in 0..rounds {
            let r = b.breakdown(v, i as u32)?;
            for (k, d) in r.into_iter().enumerate() {
                steps[k].push(d);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        println!(
            "{what}: breakdown {v:?} ({rounds} rounds), p50: hearth prepare {:.2} ms, jailer \
             spawn→exit {:.1} ms (p90 {:.1}), then API socket {:.2} ms; remove {:.1} ms",
            pct(&steps[0], 0.5),
            pct(&steps[1], 0.5),
            pct(&steps[1], 0.9),
            pct(&steps[2], 0.5),
            pct(&steps[3], 0.5)
        );
    }
    Ok(())
}

async fn report_parallel(
    b: &Bench,
    what: &str,
    count: usize,
    first: u32,
    small_pool: usize,
) -> anyhow::Result<()> {
    let mut line = format!("{what}: {count} at once:");
    let runs = [
        (Variant::Plain, 0, "Plain".to_string()),
        (Variant::Jailed, 0, "Jailed".to_string()),
        (Variant::Cold, 0, "Cold".to_string()),
        (Variant::Warm, count, format!("Warm (pool {count})")),
        (
            Variant::Warm,
            small_pool,
            format!("Warm (pool {small_pool})"),
        ),
    ];
    for (v, pool, label) in runs {
        let (each, wall) = b.parallel(v, count, first, pool).await?;
        line.push_str(&format!(
            "\n  {label} p50 {:.1} ms, max {:.1} ms, wall {:.1} ms;",
            pct(&each, 0.5),
            pct(&each, 1.0),
            wall.as_secs_f64() * 1e3,
        ));
    }
    println!("{line}");
    Ok(())
}

/// What idle members cost: the resident memory of `count` of them (`VmRSS` of each VMM).
async fn report_member_rss(b: &Bench, count: usize, first: u32) -> anyhow::Result<()> {
    let members = b.members(count, first).await?;
    // Let them settle as idle members would.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut kib = Vec::new();
    for m in &members {
        let pid = m.pid().context("member without a pid")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no VmRSS")?;
        kib.push(rss);
    }
    for m in members {
        m.discard().await?;
    }
    kib.sort_unstable();
    println!(
        "{count} idle warm members: VmRSS p50 {:.1} MiB, max {:.1} MiB, total {:.1} MiB",
        kib[kib.len() / 2] as f64 / 1024.0,
        *kib.last().unwrap_or(&0) as f64 / 1024.0,
        kib.iter().sum::<u64>() as f64 / 1024.0
    );
    Ok(())
}

/// `count` idle jails, each with the kernel bind-mounted read-only from tmpfs.
fn make_present(b: &Bench, count: usize) -> anyhow::Result<(tempfile::TempDir, Vec<JailLayout>)> {
    let shm = tempfile::Builder::new()
        .prefix("bj")
        .tempdir_in("/dev/shm")?;
    let kernel = shm.path().join("vmlinux");
    vmlinux::write_minimal_vmlinux(&kernel);
    let mut made = Vec::new();
    for i in 0..count {
        let uid = 960_000 + i as u32;
        let layout = JailLayout::new(
            &base(b.dir.path()),
            &b.fc.path,
            &JailLayout::id_for_uid(uid),
        )?;
        b.jails.prepare(&JailPlan {
            layout: layout.clone(),
            uid,
            gid: uid,
            files: vec![JailFile {
                source: kernel.clone(),
                name: "vmlinux".into(),
                writable: false,
            }],
        })?;
        made.push(layout);
    }
    Ok((shm, made))
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.sweep_only {
        return sweep_probe(args.present, args.boots).await;
    }
    let fc_path = args
        .firecracker
        .or_else(|| std::env::var_os("HEARTH_FIRECRACKER_REAL").map(PathBuf::from))
        .context("give --firecracker or set HEARTH_FIRECRACKER_REAL")?;
    let jailer = match args.jailer {
        Some(j) => j,
        None => fc_path
            .parent()
            .map(|d| d.join("jailer"))
            .context("no directory for the jailer")?,
    };
    if !jailer.is_file() {
        bail!("no jailer at {}", jailer.display());
    }
    let fc = binary::resolve(Some(&fc_path), &LinuxProcesses)?;
    let cgroups = detect_host().map_err(anyhow::Error::msg)?;
    attach_probe(&cgroups, args.boots)?;
    if args.attach_only {
        return Ok(());
    }
    let dir = tempfile::Builder::new().prefix("bj").tempdir_in("/tmp")?;
    vmlinux::write_minimal_vmlinux(&dir.path().join("vmlinux"));
    let jails = LinuxJails::new(base(dir.path()), cgroups.clone());
    let cold = Arc::new(jails.clone().without_attach_warmup());
    let b = Bench {
        dir,
        fc,
        jailer,
        cgroups,
        jails: Arc::new(jails),
        cold,
    };
    println!(
        "cgroup v{}, {} sequential boots per variant, {} in parallel, {} jails present",
        b.cgroups.version.as_arg(),
        args.boots,
        args.parallel,
        args.present
    );
    // Warm-up (page cache, the binary's first copy into a jail).
    b.sequential(2, 0).await?;
    report_breakdown(&b, "no other jails", args.boots)?;
    report("no other jails", &b.sequential(args.boots, 100).await?);
    report_parallel(&b, "no other jails", args.parallel, 200, args.small_pool).await?;
    report_member_rss(&b, args.parallel, 500).await?;

    let t0 = Instant::now();
    let (_shm, present) = make_present(&b, args.present)?;
    println!(
        "made {} jails with a bind-mounted kernel in {:.0} ms",
        present.len(),
        t0.elapsed().as_secs_f64() * 1e3
    );
    let res = async {
        report_breakdown(&b, &format!("{} jails present", args.present), args.boots)?;
        report(
            &format!("{} jails present", args.present),
            &b.sequential(args.boots, 300).await?,
        );
        report_parallel(
            &b,
            &format!("{} jails present", args.present),
            args.parallel,
            400,
            args.small_pool,
        )
        .await
    }
    .await;
    let t0 = Instant::now();
    for layout in &present {
        b.jails.remove(layout)?;
    }
    println!("removed them in {:.0} ms", t0.elapsed().as_secs_f64() * 1e3);
    res
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    actix::System::new().block_on(run(args))
}
