//! Benchmark of the hairpin: a guest reaching another guest's published port through the
//! host's address goes through hearthd's hairpin proxy (in userspace), while a client outside
//! the host reaches the same port through the kernel's translation alone. For both: the latency
//! of a connection with a one-byte exchange (p50/p99), and the throughput of one stream.
//!
//! Runs as root in namespaces it creates (hearth's bridge with two guests on isolated ports, an
//! outside on the uplink; the host's own network is never touched), with `NatActor` over the
//! real firewall, and removes them at the end.
//! `cargo run --release --example bench_hairpin [-- <iterations> <MiB>]` (default: 200
//! connections, a 256 MiB stream).
use hearth_testkit as common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use actix::Actor;
use common::bridge_world::{guest_ip, BridgeWorld, GATEWAY, HOST_IP};
use hearth_actors::host::firewall::linux::{IptablesFlavor, LinuxFirewall};
use hearth_actors::lease::MacAddr;
use hearth_actors::nat::{GuestSpec, NatActor, NatConfig, PublishPorts, Reconcile, Teardown};

fn config() -> NatConfig {
    NatConfig {
        bridge: "hearth0".into(),
        cidr: "172.31.240.0/24".parse().expect("literal"),
        gateway: GATEWAY,
        egress: Some("wan0".into()),
        guest_ports: "hth".into(),
        isolate_guests: true,
        block_guest_to_host: true,
        // The guests' veth MACs are not hearth's leases.
        anti_spoofing: false,
    }
}

/// web's server: each connection is read to its end and answered with the byte count.
fn serve(listener: &TcpListener) {
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let mut s = stream;
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            let _ = write!(s, "{total}");
        });
    }
}

/// Sends `bytes` (in 256 KiB writes) over a new connection to `to`, half-closes and reads the
/// server's count; answers the time it took, checked against the count.
fn exchange(to: SocketAddr, bytes: u64) -> Duration {
    let started = Instant::now();
    let mut s = TcpStream::connect(to).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let chunk = vec![7u8; 256 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left.min(chunk.len() as u64)).expect("small");
        s.write_all(&chunk[..n]).expect("write");
        left -= n as u64;
    }
    s.shutdown(Shutdown::Write).expect("half-close");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("answer");
    assert_eq!(answer, bytes.to_string(), "the server counted another size");
    started.elapsed()
}

/// p50 and p99 of samples, in milliseconds.
fn percentiles(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at = |q: usize| samples[(samples.len() * q / 100).min(samples.len() - 1)];
    (at(50).as_secs_f64() * 1e3, at(99).as_secs_f64() * 1e3)
}

fn measure(what: &str, ns: &common::NetNs, iterations: usize, mib: u64) {
    let to = SocketAddr::from((HOST_IP, 8080));
    let (mut samples, stream) = ns.run(move || {
        let samples: Vec<Duration> = (0..iterations).map(|_| exchange(to, 1)).collect();
        (samples, exchange(to, mib << 20))
    });
    let (p50, p99) = percentiles(&mut samples);
    #[expect(clippy::cast_precision_loss, reason = "a figure to print")]
    let rate = mib as f64 / stream.as_secs_f64();
    println!(
        "{what:<34} connect+exchange p50 {p50:>6.3} ms  p99 {p99:>6.3} ms  (n={iterations})   {mib} MiB stream {rate:>7.0} MiB/s"
    );
}

fn main() {
    if !common::privileged("bench_hairpin") {
        return;
    }
    let arg = |n: usize, default: u64| {
        std::env::args()
            .nth(n)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let iterations = usize::try_from(arg(1, 200)).expect("a count");
    let mib = arg(2, 256);
    let world = BridgeWorld::new("hbhp", &[5, 6], true);
    let server = world.guests[0]
        .run(|| TcpListener::bind((guest_ip(5), 80)))
        .expect("bind web's server");
    std::thread::spawn(move || serve(&server));
    let w = &world;
    w.host.block_on(move || async move {
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let fw = Box::new(LinuxFirewall::new(IptablesFlavor::System));
        let nat = NatActor::new(config(), fw, log).expect("valid config").start();
        let desired = [5u8, 6]
            .iter()
            .map(|n| GuestSpec {
                tap: format!("hth{n}"),
                ip: guest_ip(*n),
                mac: MacAddr::for_guest(guest_ip(*n)),
                nat: false,
            })
            .collect();
        nat.send(Reconcile { desired }).await.expect("mailbox").expect("reconcile");
        nat.send(PublishPorts {
            vm: "web".into(),
            guest_ip: guest_ip(5),
            mappings: vec!["8080:80".parse().expect("literal")],
        })
        .await
        .expect("mailbox")
        .expect("publish");
        println!("bench_hairpin: web publishes 8080:80; isolated bridge ports, br_netfilter as the host has it");
        measure("outside -> host:8080 (kernel DNAT)", &w.outside, iterations, mib);
        measure("guest -> host:8080 (hairpin proxy)", &w.guests[1], iterations, mib);
        nat.send(Teardown).await.expect("mailbox").expect("teardown");
    });
}
