//! Benchmark of the HTTP control endpoint itself (not of VM lifecycles): hearthctl's client
//! against the API over the in-memory fake supervisor on a Unix socket. Prints round-trip
//! latencies (one connection per request, as hearthctl does), list cost with 1000 VMs, and the
//! event stream's replay rate. Run: `cargo run --release --example bench_api`.

use std::time::{Duration, Instant};

use hearth::api::testing::TestServer;
use hearth::client::{Client, Method, SseReader};
use hearth_proto::api::VmInfo;

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let p = |q: f64| us(samples[((samples.len() - 1) as f64 * q).round() as usize]);
    (
        p(0.5),
        p(0.99),
        us(samples.iter().sum::<Duration>()) / samples.len() as f64,
    )
}

fn report(what: &str, samples: Vec<Duration>) {
    let n = samples.len();
    let total: Duration = samples.iter().sum();
    let (p50, p99, mean) = percentiles(samples);
    println!(
        "{what:<34} n={n:<5} p50 {p50:>8.1} us  p99 {p99:>8.1} us  mean {mean:>8.1} us  {:>7.0} req/s (sequential)",
        n as f64 / total.as_secs_f64()
    );
}

fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = TestServer::start(dir.path(), |c| c.workers = 2).expect("API server");
    let c = Client::new(&server.socket);

    let mut health = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        let r = c
            .request(Method::GET, "/v1/health", &[], None)
            .expect("health");
        assert_eq!(r.status, 200);
        health.push(t.elapsed());
    }
    report("GET /v1/health", health);

    let mut creates = Vec::new();
    for i in 0..1000 {
        let body =
            format!(r#"{{"name":"vm-{i}","kernel":"k","rootfs":"r","labels":{{"n":"{i}"}}}}"#);
        let key = format!("key-{i}");
        let t = Instant::now();
        let r = c
            .request(
                Method::POST,
                "/v1/vms",
                &[("Idempotency-Key", &key)],
                Some(body.as_bytes()),
            )
            .expect("create");
        assert_eq!(r.status, 201);
        creates.push(t.elapsed());
    }
    report("POST /v1/vms (fake, with key)", creates);

    let mut lists = Vec::new();
    let mut size = 0;
    for _ in 0..100 {
        let t = Instant::now();
        let r = c.request(Method::GET, "/v1/vms", &[], None).expect("list");
        let vms: Vec<VmInfo> = r.json().expect("list body");
        lists.push(t.elapsed());
        assert_eq!(vms.len(), 1000);
        size = r.body.len();
    }
    report("GET /v1/vms (1000 VMs, parsed)", lists);
    println!("  list body: {} KiB", size / 1024);

    let mut waits = Vec::new();
    for i in 0..1000 {
        let t = Instant::now();
        let r = c
            .request(
                Method::GET,
                format!("/v1/vms/vm-{i}/wait?state=running&timeout=1s"),
                &[],
                None,
            )
            .expect("wait");
        assert_eq!(r.status, 200);
        waits.push(t.elapsed());
    }
    report("GET /v1/vms/{name}/wait (ready)", waits);

    // 1000 creates made 2000 events: replay them all through the SSE stream.
    let t = Instant::now();
    let stream = c
        .stream(Method::GET, "/v1/events/stream?since=0", &[], None)
        .expect("stream");
    let mut n = 0;
    for e in SseReader::new(stream.body) {
        e.expect("event");
        n += 1;
        if n == 2000 {
            break;
        }
    }
    let took = t.elapsed();
    println!(
        "SSE replay of {n} events              {:.1} ms  {:.0} events/s",
        took.as_secs_f64() * 1e3,
        f64::from(n) / took.as_secs_f64()
    );

    let t = Instant::now();
    let r = c
        .request(Method::GET, "/v1/events?since=0&limit=1000", &[], None)
        .expect("events");
    let page: Vec<serde_json::Value> = r.json().expect("events body");
    println!(
        "GET /v1/events (1000 events)       {:.2} ms  {} KiB",
        t.elapsed().as_secs_f64() * 1e3,
        r.body.len() / 1024
    );
    assert_eq!(page.len(), 1000);
}
