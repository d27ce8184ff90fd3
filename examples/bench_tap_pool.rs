//! Benchmark of `TapPoolActor` and its Linux backend against the real kernel.
//!
//! Runs entirely inside a fresh network namespace that its worker thread creates with
//! `unshare(CLONE_NEWNET)` (never on the host's interfaces), so it needs root. Prints:
//! - TAP create: `create_tap` (TUN ioctls) + `attach_port` (2 netlink requests) per TAP,
//!   and `delete_link`;
//! - `AcquireTap` round trips from a warm pool, with the refill idle and back to back (while
//!   the background refill runs on the same thread);
//! - `Initialize` filling a pool from nothing;
//! - deleting N TAPs one by one against one batch (`delete_links`), and, through the actor,
//!   a mass release (N VMs deleted at once, pool full) followed right away by acquires that
//!   must create TAPs: how long those creates take while the deletions are still running.
//!
//! Run: `cargo run --release --example bench_tap_pool [-- <iterations> [mass]]` (default 300;
//! `mass` runs only the batch delete and the mass releases). One bridge holds at most 1023
//! ports: the pool stays below its size rather than exceed that, and a mass release with N
//! over 1023 stops at the first acquire refused with `BridgeFull`.

use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use hearth_actors::host::links::linux::LinuxLinks;
use std::net::Ipv4Addr;

use futures::future::{join_all, LocalBoxFuture};
use hearth_actors::host::links::{
    BridgeSpec, LinkEntry, Links, LinksError, LinksFuture, PortSpec, TapSpec, BRIDGE_MAX_PORTS,
};
use hearth_actors::lease::MacAddr;
use hearth_actors::tap_pool::{
    AcquireTap, GetStatus, Initialize, PoolStatus, ReleaseTap, TapPoolActor, TapPoolConfig,
    TapPoolError, Teardown,
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
    let only_mass = std::env::args().nth(2).as_deref() == Some("mass");
    let worker = std::thread::spawn(move || {
        // This thread (and only it) moves to a new, empty network namespace.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        actix::System::new().block_on(run(iterations, only_mass));
    });
    worker.join().expect("benchmark thread");
}

async fn run(n: usize, only_mass: bool) {
    println!("bench_tap_pool: {n} iterations, private network namespace");
    if !only_mass {
        tap_create(n).await;
    }
    batch_delete(n).await;
    if !only_mass {
        acquire(n).await;
    }
    mass_release(n, false).await;
    mass_release(n, true).await;
}

/// [`LinuxLinks`] deleting a batch the way the pool did before batching: one `delete_link`
/// per TAP, all started at once (each waits for its own RCU grace period, in turn).
struct OneByOne(LinuxLinks);

impl Links for OneByOne {
    fn ensure_bridge(&self, spec: BridgeSpec) -> LinksFuture<u32> {
        self.0.ensure_bridge(spec)
    }
    fn create_tap(&self, spec: TapSpec) -> LinksFuture<u32> {
        self.0.create_tap(spec)
    }
    fn attach_port(&self, name: &str, index: u32, spec: PortSpec) -> LinksFuture<()> {
        self.0.attach_port(name, index, spec)
    }
    fn delete_link(&self, name: &str) -> LinksFuture<()> {
        self.0.delete_link(name)
    }
    fn delete_links(
        &self,
        names: Vec<String>,
    ) -> LocalBoxFuture<'static, Vec<(String, LinksError)>> {
        let deletes: Vec<_> = names
            .iter()
            .map(|n| {
                let name = n.clone();
                let del = self.0.delete_link(n);
                async move { del.await.err().map(|e| (name, e)) }
            })
            .collect();
        Box::pin(async move { join_all(deletes).await.into_iter().flatten().collect() })
    }
    fn list_links(&self, prefix: &str) -> LinksFuture<Vec<LinkEntry>> {
        self.0.list_links(prefix)
    }
    fn pin_neighbour(
        &self,
        bridge: u32,
        port: &str,
        ip: Ipv4Addr,
        mac: MacAddr,
    ) -> LinksFuture<()> {
        self.0.pin_neighbour(bridge, port, ip, mac)
    }
    fn unpin_neighbour(
        &self,
        bridge: u32,
        port: &str,
        ip: Ipv4Addr,
        mac: MacAddr,
    ) -> LinksFuture<()> {
        self.0.unpin_neighbour(bridge, port, ip, mac)
    }
    fn pinned_neighbours(&self, index: u32) -> LinksFuture<Vec<(Ipv4Addr, MacAddr)>> {
        self.0.pinned_neighbours(index)
    }
}

/// Makes `n` TAPs `<prefix><i>` attached to a new bridge; returns the bridge's name.
async fn make_taps(links: &LinuxLinks, bridge: &str, prefix: &str, n: usize) {
    let bridge_index = links
        .ensure_bridge(BridgeSpec {
            name: bridge.into(),
            gateway: "10.125.0.1".parse().unwrap(),
            prefix_len: 16,
            mtu: 1500,
            mac: hearth_actors::lease::MacAddr::for_gateway("10.125.0.1".parse().unwrap()),
        })
        .await
        .expect("bridge");
    let port = PortSpec {
        bridge_index,
        mtu: 1500,
        isolated: true,
    };
    for i in 0..n {
        let name = format!("{prefix}{i}");
        let index = links
            .create_tap(TapSpec {
                name: name.clone(),
                owner: None,
                group: None,
            })
            .await
            .expect("create tap");
        links.attach_port(&name, index, port).await.expect("attach");
    }
}

/// `n` attached TAPs deleted in one `delete_links` batch (compare with `n` × the per-TAP
/// delete above).
async fn batch_delete(n: usize) {
    // All on one bridge.
    let n = n.min(BRIDGE_MAX_PORTS);
    let links = LinuxLinks::new().expect("netlink");
    make_taps(&links, "hbench2", "hbd", n).await;
    let names: Vec<String> = (0..n).map(|i| format!("hbd{i}")).collect();
    let t = Instant::now();
    let failed = links.delete_links(names).await;
    let took = t.elapsed();
    assert!(failed.is_empty(), "{failed:?}");
    links.delete_link("hbench2").await.expect("delete bridge");
    println!(
        "{:<34} {n} TAPs in {:.1} ms ({:.0} us per TAP)",
        "TAP delete, one batch (netlink)",
        took.as_secs_f64() * 1e3,
        took.as_secs_f64() * 1e6 / n.max(1) as f64
    );
}

/// A pool of 16 with `n` leases out (most TAPs made on demand, at most a bridge's 1023); all
/// released back to back (all but 16 deleted in the background), then 100 acquires right away:
/// past the 16 warm TAPs, each takes back a TAP still queued for deletion, or creates one
/// (waiting for a running deletion to free ports if the bridge is full).
async fn mass_release(n: usize, one_by_one: bool) {
    let config = TapPoolConfig {
        bridge: "hbench3".into(),
        cidr: "10.126.0.0/16".parse().unwrap(),
        tap_prefix: "hbm".into(),
        pool_size: 16,
        ..TapPoolConfig::default()
    };
    let linux = LinuxLinks::new().expect("netlink");
    let lister = linux.clone();
    let links: Rc<dyn Links> = if one_by_one {
        Rc::new(OneByOne(linux))
    } else {
        Rc::new(linux)
    };
    let how = if one_by_one {
        "one by one (before)"
    } else {
        "batched"
    };
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let addr = TapPoolActor::new(config, links, log)
        .expect("config")
        .start();
    addr.send(Initialize { used: vec![] })
        .await
        .unwrap()
        .expect("initialize");
    // A bridge holds at most 1023 ports: past that many leases the pool is empty and the
    // next acquire is refused with `BridgeFull` (the free TAPs made way for leases before).
    let mut leases = Vec::new();
    for _ in 0..n {
        match addr.send(AcquireTap {}).await.unwrap() {
            Ok(lease) => leases.push(lease),
            Err(e @ TapPoolError::BridgeFull { .. }) => {
                println!("  acquire {} refused: {e}", leases.len() + 1);
                break;
            }
            Err(e) => panic!("acquire: {e}"),
        }
    }
    let n = leases.len();
    let s = wait_idle(&addr).await;
    let taps = lister.list_links("hbm").await.expect("list").len();
    println!(
        "  {n} leases out, {} free, {taps} TAPs on the bridge (at most {BRIDGE_MAX_PORTS})",
        s.free_taps
    );

    let t0 = Instant::now();
    for lease in leases {
        addr.send(ReleaseTap { lease })
            .await
            .unwrap()
            .expect("release");
    }
    let released = t0.elapsed();
    let after = 100usize;
    let mut creates = Vec::new();
    let mut leases = Vec::new();
    let t1 = Instant::now();
    for _ in 0..after {
        let t = Instant::now();
        leases.push(addr.send(AcquireTap {}).await.unwrap().expect("acquire"));
        creates.push(t.elapsed());
    }
    let acquired = t1.elapsed();
    wait_idle(&addr).await;
    let drained = t0.elapsed();
    println!("Mass release, deletions {how}:");
    println!(
        "{:<34} {n} releases in {:.1} ms; background deletions done {:.1} ms after the first",
        "  release all (pool of 16)",
        released.as_secs_f64() * 1e3,
        drained.as_secs_f64() * 1e3
    );
    println!(
        "{:<34} {after} acquires in {:.1} ms ({:.0}/s; past the 16 warm TAPs: one queued for deletion, or a new one)",
        "  acquire right after",
        acquired.as_secs_f64() * 1e3,
        after as f64 / acquired.as_secs_f64()
    );
    report("  each of those acquires", &mut creates);
    for lease in leases {
        addr.send(ReleaseTap { lease })
            .await
            .unwrap()
            .expect("release");
    }
    addr.send(Teardown {
        remove_bridge: true,
    })
    .await
    .unwrap()
    .expect("teardown");
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

async fn wait_idle(addr: &Addr<TapPoolActor>) -> PoolStatus {
    loop {
        let s = addr.send(GetStatus {}).await.unwrap();
        if s.pending == 0 && s.refill_failures == 0 {
            return s;
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
