//! Restart storm: one VM whose every start fails at once (`always`; the fake VMM spawn fails,
//! so each attempt is a whole start saga and its failure), driven through N crash-restart
//! cycles as fast as the supervisor can go: the clock is a manual one moved past each
//! backoff, so the 1 s..5 min delays (what bounds a storm's CPU in real time) are skipped
//! and what is measured is the cost of one cycle. Meanwhile a reader asks for another VM
//! (`GetVm`) in a loop; its latency with and without the storm shows whether the storm
//! slows other VMs' operations. Prints figures, asserts nothing.
//!
//! ```text
//! cargo run --release --example bench_restart_storm -- 1000
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::Addr;
use hearth_actors::host::processes::FakeProcesses;
use hearth_actors::supervisor::policy::ManualClock;
use hearth_actors::supervisor::testing::supervisor_with_clock;
use hearth_actors::supervisor::{
    EventsSince, GetVm, MemoryVmStore, Open, PolicyTick, VmStore, VmSupervisor,
};
use hearth_proto::api::{self, EventReason, VmState};

fn spec(name: &str, restart: &str) -> api::CreateVm {
    serde_json::from_value(serde_json::json!({
        "name": name, "kernel": "vmlinux", "rootfs": "base", "restart": restart
    }))
    .expect("a valid spec")
}

/// CPU time (user + system) of this process so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command name.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

async fn restarts_made(sup: &Addr<VmSupervisor>) -> usize {
    let mut since = 0;
    let mut n = 0;
    loop {
        let page = sup
            .send(EventsSince {
                since,
                limit: 10_000,
            })
            .await
            .expect("supervisor answers")
            .expect("events");
        let Some(last) = page.last() else { return n };
        since = last.seq;
        n += page
            .iter()
            .filter(|e| e.reason == EventReason::Policy)
            .filter(|e| {
                e.detail
                    .as_deref()
                    .is_some_and(|d| d.starts_with("restart attempt"))
            })
            .count();
    }
}

/// `GetVm` round trips for `other` until `stop` is set.
async fn reader(
    sup: Addr<VmSupervisor>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<Duration> {
    let mut lat = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let t = Instant::now();
        let _ = sup
            .send(GetVm {
                name: "other".into(),
            })
            .await;
        lat.push(t.elapsed());
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    lat
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    v.get(((v.len() as f64 - 1.0) * p) as usize)
        .copied()
        .unwrap_or_default()
}

#[actix::main]
async fn main() {
    let cycles: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let clock = ManualClock::new(SystemTime::now());
    let mut store = MemoryVmStore::default();
    store.insert_vm(&spec("storm", "always")).expect("insert");
    store
        .set_state("storm", VmState::Crashed, Some("VMM exited: signal 9"))
        .expect("state");
    store.insert_vm(&spec("other", "no")).expect("insert");
    store
        .set_state("other", VmState::Stopped, None)
        .expect("state");
    let processes = FakeProcesses::new();
    processes.fail_spawn("the VMM crashes at once");
    let runs = tempfile::tempdir().expect("a temporary directory");
    let sup = supervisor_with_clock(
        store,
        processes,
        Arc::new(clock.clone()),
        4,
        runs.path().join("vms"),
    );
    sup.send(Open {}).await.expect("open").expect("open");

    // Baseline: the reader alone.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r = tokio::task::spawn_local(reader(sup.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut quiet = r.await.expect("reader");

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r = tokio::task::spawn_local(reader(sup.clone(), stop.clone()));
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let mut made = 0;
    while made < cycles {
        // Past the longest backoff: the pending restart is due at this tick.
        clock.advance(Duration::from_secs(301));
        sup.send(PolicyTick).await.expect("tick");
        // Wait for the attempt to fail and the next one to be scheduled.
        let before = made;
        for _ in 0..1000 {
            made = restarts_made(&sup).await;
            if made > before {
                break;
            }
            tokio::task::yield_now().await;
        }
        if made == before {
            eprintln!("no progress after {made} restarts");
            break;
        }
    }
    let wall = t0.elapsed();
    let cpu = cpu_time().saturating_sub(cpu0);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut storm = r.await.expect("reader");
    println!("restart storm: {made} crash-restart cycles in {wall:.2?} wall, {cpu:.2?} CPU");
    println!(
        "  per cycle: {:.0?} wall, {:.0?} CPU",
        wall / made.max(1) as u32,
        cpu / made.max(1) as u32
    );
    println!(
        "  GetVm of another VM, quiet:  p50 {:.0?} p99 {:.0?} ({} calls)",
        pct(&mut quiet, 0.5),
        pct(&mut quiet, 0.99),
        quiet.len()
    );
    println!(
        "  GetVm of another VM, storm:  p50 {:.0?} p99 {:.0?} ({} calls)",
        pct(&mut storm, 0.5),
        pct(&mut storm, 0.99),
        storm.len()
    );
    println!(
        "  in real time the backoff (1 s doubling to 5 min) spaces the cycles: after the \
         first 9, one per 300 s"
    );
}
