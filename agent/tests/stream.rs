//! Output volume and backpressure through the real agent: 100 MiB of binary stdout arrives
//! intact, and a host that reads slowly slows the process down instead of growing the agent.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{sh, sha256, Agent};
use hearth_proto::agent::frame::{Frame, FrameKind};
use hearth_proto::agent::{ExecRequest, ExecStarted, Request};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_100_mib_binary_stdout_arrives_intact() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob");
    // Every byte value, in a pattern that is not periodic at frame or ring sizes.
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut x: u32 = 1;
    for _ in 0..(100 << 20) / 4 {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        f.write_all(&x.to_le_bytes()).unwrap();
    }
    f.flush().unwrap();
    drop(f);
    let want = sha256(&std::fs::read(&path).unwrap());
    let start = Instant::now();
    let (out, err, exit) = agent.run(ExecRequest::new(vec![
        "cat".into(),
        path.to_str().unwrap().into(),
    ]));
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(exit.code, 0, "{}", String::from_utf8_lossy(&err));
    assert_eq!(out.len(), 100 << 20);
    assert_eq!(sha256(&out), want);
    eprintln!(
        "100 MiB of stdout through the agent (Unix socket, agent {}): {:.1} MiB/s",
        std::env::var("HEARTH_AGENT_BIN").unwrap_or_else(|_| "debug build".into()),
        100.0 / secs
    );
}

#[test]
fn a_slow_reader_slows_the_process_and_bounds_the_agent() {
    let agent = Agent::start();
    let before = rss_kib(agent.pid());
    // The process counts what it managed to write; with backpressure it cannot get far.
    let mut req = sh("head -c 2000000000 /dev/zero");
    req.attach = true;
    let mut c = agent.connect();
    let _: ExecStarted = c.call(&Request::Exec(req)).unwrap();
    let mut got = 0usize;
    let start = Instant::now();
    // Read one frame every 10 ms for 2 s: at most ~200 frames (~13 MiB) get through.
    while start.elapsed() < Duration::from_secs(2) {
        let f = c.frame().unwrap();
        assert_eq!(f.kind, FrameKind::Stdout);
        got += f.payload.len();
        std::thread::sleep(Duration::from_millis(10));
    }
    let during = rss_kib(agent.pid());
    eprintln!(
        "slow reader: {} KiB read in 2 s; agent RSS {before} KiB before, {during} KiB while a \
         2 GB writer was throttled (ring 1 MiB)",
        got / 1024
    );
    // A 1 MiB ring per stream, a pipe and a frame buffer: far below the 2 GB the process
    // would have written without backpressure.
    assert!(
        during < before + 16 * 1024,
        "agent grew from {before} to {during} KiB"
    );
    assert!(
        got < 64 << 20,
        "the reader got {got} bytes: no backpressure?"
    );
    c.send(&Frame::signal(9));
    // Drain what is queued, then EXIT says the process was killed, not finished.
    let exit = loop {
        let f = c.frame().unwrap();
        if f.kind == FrameKind::Exit {
            break f.as_exit().unwrap();
        }
    };
    assert_eq!(exit.code, 137);
}
