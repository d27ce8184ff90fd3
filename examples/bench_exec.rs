//! Benchmark of exec sessions and file copies through hearth: the real `hearthctl` → real
//! `hearthd` → `firecracker-sim`'s hybrid vsock → the real `hearth-agent`
//! (`FC_SIM_AGENT_BIN`), against the same agent reached directly over the VM's vsock Unix
//! socket in the same run.
//!
//! 1. `hearthctl vm exec web -- true` round trip, p50/p99, against one raw vsock
//!    connect + `CONNECT 52` handshake (target: exec p50 ≤ raw p50 + 5 ms); `hearthctl health`
//!    is printed too, as the cost of starting hearthctl at all.
//! 2. Throughput of `vm exec web -- cat FILE` (stdout), `vm cp web:FILE DEST` and
//!    `vm cp FILE web:DIR`, each against the same transfer made raw over the vsock socket
//!    (an attached `exec` / `get_archive` / `put_archive` spoken directly to the agent);
//!    target ≥ 50% of raw.
//! 3. hearthd's RSS with `--sessions` concurrent sessions each streaming `cat /dev/zero` to a
//!    hearthctl that discards it.
//!
//! Needs root. Build first:
//! ```text
//! cargo build --release --bin hearthd --bin hearthctl -p hearth-agent -p firecracker-sim
//! sudo cargo run --release --example bench_exec -- --rounds 200 --mib 256 --sessions 100
//! ```
#![expect(
    clippy::disallowed_methods,
    reason = "tests and benchmarks drive real binaries and tools and clean up their own directories"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use hearth::client::{Client, Method};
use hearth::vm_host::{self, VmHost};
use hearth_proto::agent::frame::{read_frame, write_frame, Frame, FrameKind, MAX_PAYLOAD};
use hearth_proto::agent::{
    encode_request, ArchiveRequest, ExecList, ExecRequest, Request, DEFAULT_PORT,
};
use hearth_proto::api::VmInfo;

#[derive(Parser, Debug)]
struct Args {
    /// `exec true` round trips (and raw handshakes) to time.
    #[arg(long, default_value_t = 200)]
    rounds: usize,
    /// Size of the transferred file, MiB.
    #[arg(long, default_value_t = 256)]
    mib: usize,
    /// Concurrent streaming sessions for the memory figure.
    #[arg(long, default_value_t = 100)]
    sessions: usize,
}

/// A binary next to this example (`target/<profile>/<name>`), or `$<env>`.
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
        bail!(
            "{} not found: build it (see the header) or set {env}",
            bin.display()
        );
    }
    Ok(bin)
}

#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "an index from a fraction of a small count"
)]
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[allow(clippy::cast_precision_loss, reason = "a printed figure")]
fn mibps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / f64::from(1u32 << 20) / d.as_secs_f64()
}

/// Connects to the agent through the VM's hybrid vsock socket (`CONNECT`, `OK`).
fn raw_connect(vsock: &Path) -> anyhow::Result<BufReader<UnixStream>> {
    let mut s = UnixStream::connect(vsock)?;
    s.write_all(format!("CONNECT {DEFAULT_PORT}\n").as_bytes())?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    if !line.starts_with("OK ") {
        bail!("vsock handshake answered {line:?}");
    }
    Ok(r)
}

/// Sends one request over a raw connection and checks its `ok` line.
fn raw_request(r: &mut BufReader<UnixStream>, req: &Request) -> anyhow::Result<()> {
    r.get_mut().write_all(&encode_request(req))?;
    let mut line = String::new();
    r.read_line(&mut line)?;
    if !line.contains("\"ok\"") {
        bail!("agent answered {line:?}");
    }
    Ok(())
}

/// Reads frames until the last one; answers the bytes of `kind` frames.
fn raw_drain(r: &mut BufReader<UnixStream>, kind: FrameKind) -> anyhow::Result<u64> {
    raw_drain_into(r, kind, &mut std::io::sink())
}

/// [`raw_drain`], writing the `kind` bytes to `out`.
fn raw_drain_into(
    r: &mut BufReader<UnixStream>,
    kind: FrameKind,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    let mut n = 0u64;
    while let Some(f) = read_frame(r)? {
        match f.kind {
            k if k == kind => {
                n += f.payload.len() as u64;
                out.write_all(&f.payload)?;
            }
            FrameKind::Exit | FrameKind::End | FrameKind::Done => return Ok(n),
            FrameKind::Error => bail!("agent error: {}", String::from_utf8_lossy(&f.payload)),
            _ => {}
        }
    }
    bail!("stream ended without its last frame")
}

/// The raw `cat FILE` through an attached exec: stdout bytes.
fn raw_exec_cat(vsock: &Path, file: &Path) -> anyhow::Result<u64> {
    let mut r = raw_connect(vsock)?;
    let mut req = ExecRequest::new(vec!["cat".into(), file.display().to_string()]);
    req.attach = true;
    raw_request(&mut r, &Request::Exec(req))?;
    raw_drain(&mut r, FrameKind::Stdout)
}

/// The raw download of `path` as a tar stream, written to `out` as it comes (the copy's
/// disk writes are part of what hearthctl does too): bytes of tar.
fn raw_get_archive(vsock: &Path, path: &Path, out: &Path) -> anyhow::Result<u64> {
    let mut r = raw_connect(vsock)?;
    raw_request(
        &mut r,
        &Request::GetArchive(ArchiveRequest {
            path: path.display().to_string(),
        }),
    )?;
    let mut f = std::fs::File::create(out)?;
    raw_drain_into(&mut r, FrameKind::Data, &mut f)
}

/// Frames written bytes as `DATA` frames of at most [`MAX_PAYLOAD`] bytes.
struct DataFrames<'a>(&'a mut UnixStream);

impl Write for DataFrames<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(MAX_PAYLOAD);
        write_frame(self.0, &Frame::new(FrameKind::Data, buf[..n].to_vec()))?;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The raw upload of `file` into guest directory `dir` under `name`.
fn raw_put_archive(vsock: &Path, file: &Path, dir: &Path, name: &str) -> anyhow::Result<()> {
    let mut r = raw_connect(vsock)?;
    raw_request(
        &mut r,
        &Request::PutArchive(ArchiveRequest {
            path: dir.display().to_string(),
        }),
    )?;
    {
        let mut sock = r.get_ref().try_clone()?;
        let w = std::io::BufWriter::with_capacity(MAX_PAYLOAD, DataFrames(&mut sock));
        let mut b = tar::Builder::new(w);
        b.append_path_with_name(file, name)?;
        b.into_inner()?.flush()?;
        write_frame(&mut sock, &Frame::empty(FrameKind::End))?;
    }
    raw_drain(&mut r, FrameKind::Data)?;
    Ok(())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !nix::unistd::geteuid().is_root() {
        bail!("bench_exec needs root: it creates network namespaces, a bridge and TAPs");
    }
    let hearthd = sibling("hearthd", "HEARTHD")?;
    let hearthctl = sibling("hearthctl", "HEARTHCTL")?;
    let agent = sibling("hearth-agent", "HEARTH_AGENT")?;
    let mut host = VmHost::new("hbex", 16)?;
    let socket = host.dir.path().join("hearthd.sock");
    host.config.api.socket.clone_from(&socket);
    host.config.network.pool_size = 2;
    host.config.validate()?;
    let config_path = host.dir.path().join("hearthd.toml");
    std::fs::write(&config_path, toml::to_string(&host.config)?)?;
    let log = host.dir.path().join("hearthd.log");
    let child = Command::new("ip")
        .args(["netns", "exec", host.ns.name()])
        .arg(&hearthd)
        .arg("--config")
        .arg(&config_path)
        .env("FC_SIM_AGENT_BIN", &agent)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("spawn hearthd")?;
    let daemon = Daemon(child);
    let result = run(&args, &host, &socket, &hearthctl, daemon.0.id());
    if result.is_err() {
        eprintln!(
            "--- hearthd log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    drop(daemon);
    drop(host);
    result
}

fn run(
    args: &Args,
    host: &VmHost,
    socket: &Path,
    hearthctl: &Path,
    hearthd_pid: u32,
) -> anyhow::Result<()> {
    let client = Client::new(socket);
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
    let spec =
        serde_json::json!({"name": "web", "kernel": vm_host::KERNEL, "rootfs": vm_host::ROOTFS});
    let vm: VmInfo = client.send_json(Method::POST, "/v1/vms", &[], &spec)?;
    println!(
        "bench_exec: VM {} {}, hearthctl {}",
        vm.name,
        vm.state,
        hearthctl.display()
    );
    let vsock = std::fs::read_dir(&host.config.run_dir)?
        .filter_map(Result::ok)
        .map(|e| e.path().join("v.sock"))
        .find(|p| p.exists())
        .context("no v.sock under the run directory")?;
    let b = Bench {
        hearthctl,
        socket,
        vsock,
    };
    latency(args, &b)?;
    throughput(args, &b, &host.dir.path().join("xfer"))?;
    memory(args, &b, &client, hearthd_pid)
}

/// What the three parts share.
struct Bench<'a> {
    hearthctl: &'a Path,
    socket: &'a Path,
    vsock: PathBuf,
}

impl Bench<'_> {
    /// `hearthctl --socket S <args>`, not run yet.
    fn ctl(&self, a: &[&str]) -> Command {
        let mut c = Command::new(self.hearthctl);
        c.arg("--socket").arg(self.socket).args(a);
        c
    }
}

/// 1. `exec true` round trips against raw vsock handshakes.
fn latency(args: &Args, b: &Bench<'_>) -> anyhow::Result<()> {
    let ctl = |a: &[&str]| b.ctl(a);
    let vsock = &b.vsock;
    let mut exec = Vec::new();
    let mut raw = Vec::new();
    let mut health = Vec::new();
    for _ in 0..args.rounds {
        let t = Instant::now();
        let st = ctl(&["vm", "exec", "web", "--", "true"]).status()?;
        exec.push(t.elapsed());
        if !st.success() {
            bail!("exec true failed: {st}");
        }
        let t = Instant::now();
        drop(raw_connect(vsock)?);
        raw.push(t.elapsed());
        let t = Instant::now();
        ctl(&["health"]).stdout(Stdio::null()).status()?;
        health.push(t.elapsed());
    }
    for v in [&mut exec, &mut raw, &mut health] {
        v.sort();
    }
    let (e50, r50) = (percentile(&exec, 0.5), percentile(&raw, 0.5));
    println!(
        "exec true round trip ({} rounds): p50 {:.2} ms p99 {:.2} ms | raw vsock connect+CONNECT p50 {:.3} ms p99 {:.3} ms | hearthctl health p50 {:.2} ms",
        args.rounds,
        ms(e50),
        ms(percentile(&exec, 0.99)),
        ms(r50),
        ms(percentile(&raw, 0.99)),
        ms(percentile(&health, 0.5)),
    );
    let over = ms(e50) - ms(r50);
    println!(
        "  exec p50 over raw: {over:.2} ms (target <= 5 ms: {})",
        if over <= 5.0 { "met" } else { "MISSED" }
    );

    Ok(())
}

/// 2. Throughput of exec stdout and cp each way against the same transfers raw.
fn throughput(args: &Args, b: &Bench<'_>, dir: &Path) -> anyhow::Result<()> {
    let ctl = |a: &[&str]| b.ctl(a);
    let vsock = &b.vsock;
    let bytes = (args.mib as u64) << 20;
    std::fs::create_dir_all(dir.join("guest"))?;
    let file = dir.join("big.bin");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file)?);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..args.mib {
            for b in &mut block {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x.to_le_bytes()[3];
            }
            f.write_all(&block)?;
        }
    }
    let report = |what: &str, hearth: Duration, raw: Duration| {
        let (h, r) = (mibps(bytes, hearth), mibps(bytes, raw));
        let share = h / r * 100.0;
        println!(
            "{what}: hearth {h:.0} MiB/s, raw {r:.0} MiB/s = {share:.0}% (target >= 50%: {})",
            if share >= 50.0 { "met" } else { "MISSED" }
        );
    };
    let t = Instant::now();
    let mut c = ctl(&["vm", "exec", "web", "--", "cat", file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()?;
    let got = std::io::copy(&mut c.stdout.take().unwrap(), &mut std::io::sink())?;
    c.wait()?;
    let hearth = t.elapsed();
    if got != bytes {
        bail!("exec cat gave {got} bytes, not {bytes}");
    }
    let t = Instant::now();
    let got = raw_exec_cat(vsock, &file)?;
    let rawd = t.elapsed();
    if got != bytes {
        bail!("raw exec cat gave {got} bytes, not {bytes}");
    }
    report("exec stdout", hearth, rawd);

    let dest = dir.join("back.bin");
    let t = Instant::now();
    let st = ctl(&[
        "vm",
        "cp",
        &format!("web:{}", file.display()),
        dest.to_str().unwrap(),
    ])
    .status()?;
    let hearth = t.elapsed();
    if !st.success() || std::fs::metadata(&dest)?.len() != bytes {
        bail!("cp from the guest failed: {st}");
    }
    std::fs::remove_file(&dest)?;
    let t = Instant::now();
    raw_get_archive(vsock, &file, &dest)?;
    std::fs::remove_file(&dest)?;
    report("cp from guest", hearth, t.elapsed());

    let guest = dir.join("guest");
    let t = Instant::now();
    let st = ctl(&[
        "vm",
        "cp",
        file.to_str().unwrap(),
        &format!("web:{}", guest.display()),
    ])
    .status()?;
    let hearth = t.elapsed();
    if !st.success() || std::fs::metadata(guest.join("big.bin"))?.len() != bytes {
        bail!("cp to the guest failed: {st}");
    }
    std::fs::remove_file(guest.join("big.bin"))?;
    let t = Instant::now();
    raw_put_archive(vsock, &file, &guest, "raw.bin")?;
    report("cp to guest", hearth, t.elapsed());
    std::fs::remove_file(&file)?;

    Ok(())
}

/// 3. hearthd's memory with concurrent streaming sessions.
#[allow(clippy::cast_precision_loss, reason = "printed figures")]
fn memory(args: &Args, b: &Bench<'_>, client: &Client, hearthd_pid: u32) -> anyhow::Result<()> {
    let ctl = |a: &[&str]| b.ctl(a);
    let idle = rss_kib(hearthd_pid);
    let mut clients = Vec::new();
    for _ in 0..args.sessions {
        clients.push(
            ctl(&[
                "vm",
                "exec",
                "--timeout",
                "30",
                "web",
                "--",
                "cat",
                "/dev/zero",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?,
        );
        // A ramp, not a burst: the figure is memory while they stream, not a create storm.
        std::thread::sleep(Duration::from_millis(30));
    }
    std::thread::sleep(Duration::from_secs(5));
    let mut peak = 0;
    for _ in 0..10 {
        peak = peak.max(rss_kib(hearthd_pid));
        std::thread::sleep(Duration::from_millis(200));
    }
    // Under this load the agent may be slow to answer: a failed listing is reported, not fatal.
    let list: ExecList = client.get("/v1/vms/web/execs").unwrap_or_else(|e| {
        println!("  listing the sessions failed: {e}");
        ExecList { execs: Vec::new() }
    });
    let running = list.execs.iter().filter(|e| e.exit.is_none()).count();
    let mut failed = 0;
    let mut first_failure = None;
    for c in &mut clients {
        if let Some(st) = c.try_wait()? {
            if !st.success() {
                failed += 1;
                if first_failure.is_none() {
                    let mut err = String::new();
                    c.stderr.take().unwrap().read_to_string(&mut err)?;
                    first_failure = Some(err.trim().to_owned());
                }
            }
        }
    }
    println!(
        "hearthd RSS: idle {:.1} MiB, with {} streaming sessions ({running} running in the agent, {failed} clients failed) peak {:.1} MiB",
        idle as f64 / 1024.0,
        args.sessions,
        peak as f64 / 1024.0
    );
    if let Some(e) = first_failure {
        println!("  first failure: {e}");
    }
    for c in &mut clients {
        let _ = c.kill();
        let _ = c.wait();
    }
    for e in list.execs.iter().filter(|e| e.exit.is_none()) {
        let _ = client.request(
            Method::POST,
            format!("/v1/vms/web/execs/{}/signal", e.id),
            &[],
            Some(br#"{"signal":"KILL"}"#),
        );
    }
    Ok(())
}
