//! Benchmark of `TapPoolActor` and its Linux backend against the real kernel.
//!
//! Runs entirely inside a fresh network namespace that its worker thread creates with
//! `unshare(CLONE_NEWNET)` (never on the host's interfaces), so it needs root. Prints:
//! - TAP create: `create_tap` (TUN ioctls) + `attach_port` (2 netlink requests) per TAP,
//!   and `delete_link`;
//! - `AcquireTap` round trips from a warm pool, with the refill idle and back to back (while
//!   the background refill runs on the same thread);
//! - `Initialize` filling a pool from nothing.
//!
//! Run: `cargo run --release --example bench_tap_pool [-- <iterations>]` (default 300).

use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use hearth_actors::host::links::linux::LinuxLinks;
use hearth_actors::host::links::{BridgeSpec, Links, PortSpec, TapSpec};
use hearth_actors::tap_pool::{
    AcquireTap, GetStatus, Initialize, ReleaseTap, TapPoolActor, TapPoolConfig, Teardown,
};

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("bench_tap_pool needs root: it creates a private network namespace");
        std::process::exit(2);
    }
    let iterations: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    let worker = std::thread::spawn(move || {
        // This thread (and only it) moves to a new, empty network namespace.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        actix::System::new().block_on(run(iterations));
    });
    worker.join().expect("benchmark thread");
}

async fn run(n: usize) {
    println!("bench_tap_pool: {n} iterations, private network namespace");
    tap_create(n).await;
    acquire(n).await;
}

/// TAP creation through the backend: what a cold Acquire or a refill step costs.
async fn tap_create(n: usize) {
    let links = LinuxLinks::new().expect("netlink");
    let bridge_index = links
        .ensure_bridge(BridgeSpec {
            name: "hbench0".into(),
            gateway: "10.123.0.1".parse().unwrap(),
            prefix_len: 16,
            mtu: 1500,
            mac: hearth_actors::lease::MacAddr::for_gateway("10.123.0.1".parse().unwrap()),
        })
        .await
        .expect("bridge");
    let port = PortSpec {
        bridge_index,
        mtu: 1500,
        isolated: true,
    };
    let (mut create, mut attach, mut total, mut delete) = (vec![], vec![], vec![], vec![]);
    for i in 0..n {
        let name = format!("hbt{i}");
        let t0 = Instant::now();
        let index = links
            .create_tap(TapSpec {
                name: name.clone(),
                owner: None,
                group: None,
            })
            .await
            .expect("create tap");
        let t1 = Instant::now();
        links.attach_port(&name, index, port).await.expect("attach");
        let t2 = Instant::now();
        create.push(t1 - t0);
        attach.push(t2 - t1);
        total.push(t2 - t0);
    }
    for i in 0..n {
        let t0 = Instant::now();
        links.delete_link(&format!("hbt{i}")).await.expect("delete");
        delete.push(t0.elapsed());
    }
    links.delete_link("hbench0").await.expect("delete bridge");
    report("TAP create (ioctls)", &mut create);
    report("TAP attach (2 netlink)", &mut attach);
    report("TAP create + attach", &mut total);
    report("TAP delete (netlink)", &mut delete);
}

async fn acquire(n: usize) {
    let pool_size = u32::try_from(n).unwrap_or(u32::MAX).min(1000);
    let config = TapPoolConfig {
        bridge: "hbench1".into(),
        cidr: "10.124.0.0/16".parse().unwrap(),
        tap_prefix: "hbp".into(),
        pool_size,
        ..TapPoolConfig::default()
    };
    let links = Rc::new(LinuxLinks::new().expect("netlink"));
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let addr = TapPoolActor::new(config, links, log)
        .expect("config")
        .start();

    let t0 = Instant::now();
    let s = addr
        .send(Initialize { used: vec![] })
        .await
        .unwrap()
        .expect("initialize");
    let init = t0.elapsed();
    println!(
        "{:<34} {} TAPs in {:.1} ms ({:.0} us per TAP)",
        "Initialize (fill from empty)",
        s.free_taps,
        init.as_secs_f64() * 1e3,
        init.as_secs_f64() * 1e6 / s.free_taps.max(1) as f64
    );

    // Warm pool, refill idle before each acquire.
    let mut idle = Vec::new();
    let mut leases = Vec::new();
    for _ in 0..n / 2 {
        wait_idle(&addr).await;
        let t = Instant::now();
        let lease = addr.send(AcquireTap {}).await.unwrap().expect("acquire");
        idle.push(t.elapsed());
        leases.push(lease);
    }
    // Baseline: a no-op message round trip under the same conditions.
    let mut noop = Vec::new();
    for _ in 0..n / 2 {
        wait_idle(&addr).await;
        let t = Instant::now();
        addr.send(GetStatus {}).await.unwrap();
        noop.push(t.elapsed());
    }
    // Warm pool, back to back: the refill keeps running on the same thread meanwhile.
    wait_idle(&addr).await;
    let mut busy = Vec::new();
    for _ in 0..n / 2 {
        let t = Instant::now();
        let lease = addr.send(AcquireTap {}).await.unwrap().expect("acquire");
        busy.push(t.elapsed());
        leases.push(lease);
    }
    let left = addr.send(GetStatus {}).await.unwrap();
    report("GetStatus round trip (baseline)", &mut noop);
    report("Acquire, warm pool, refill idle", &mut idle);
    report("Acquire, warm pool, back to back", &mut busy);
    println!(
        "{:<34} {} free TAPs left (pool never ran dry: {})",
        "",
        left.free_taps,
        left.free_taps > 0
    );

    let mut release = Vec::new();
    for lease in leases {
        let t = Instant::now();
        addr.send(ReleaseTap { lease })
            .await
            .unwrap()
            .expect("release");
        release.push(t.elapsed());
    }
    report("Release (deletes in background)", &mut release);
    let t = Instant::now();
    addr.send(Teardown {
        remove_bridge: true,
    })
    .await
    .unwrap()
    .expect("teardown");
    println!(
        "{:<34} {:.1} ms (waits for the background deletions)",
        "Teardown",
        t.elapsed().as_secs_f64() * 1e3
    );
}

async fn wait_idle(addr: &Addr<TapPoolActor>) {
    loop {
        let s = addr.send(GetStatus {}).await.unwrap();
        if s.pending == 0 && s.refill_failures == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let pct = |p: usize| samples[(samples.len() * p / 100).min(samples.len() - 1)];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{what:<34} n={:<5} p50 {:>8.1} us   p99 {:>8.1} us   max {:>8.1} us",
        samples.len(),
        us(pct(50)),
        us(pct(99)),
        us(samples[samples.len() - 1])
    );
}
