//! Helpers for the simulator's integration tests: spawn the built `firecracker-sim` binary in
//! a temporary directory, wait for its API socket, and speak HTTP/1.1 to it over the Unix
//! socket (keep-alive), plus the hybrid-vsock handshake.
#![expect(
    clippy::disallowed_methods,
    reason = "tests drive the simulator binary and real tools directly"
)]
// `allow`, not `expect` (the house rule elsewhere): whether anything here goes unused depends
// on the test binary that includes this module, so an `expect` would fail in some of them.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the helpers"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

pub use hearth_testkit::wait_until;

/// The simulator binary under test.
pub const SIM: &str = env!("CARGO_BIN_EXE_firecracker-sim");

/// A running simulator, killed on drop.
pub struct Sim {
    /// The child process.
    pub child: Child,
    /// Its API socket.
    pub sock: PathBuf,
    /// The temporary directory it works in (kept alive with it).
    pub dir: tempfile::TempDir,
}

impl Sim {
    /// Starts the simulator with `--api-sock <dir>/api.sock`, the extra `args` and `env`
    /// knobs, and waits for the API socket.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, args, env, None)
    }

    /// Like [`Sim::start`], in `dir`, optionally prefixed by `wrapper` (e.g. `ip netns exec`).
    pub fn start_in(
        dir: tempfile::TempDir,
        args: &[&str],
        env: &[(&str, &str)],
        wrapper: Option<&[&str]>,
    ) -> Sim {
        let sock = dir.path().join("api.sock");
        let mut cmd = match wrapper {
            Some(w) => {
                let mut c = Command::new(w[0]);
                c.args(&w[1..]).arg(SIM);
                c
            }
            None => Command::new(SIM),
        };
        cmd.arg("--api-sock")
            .arg(&sock)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd.spawn().expect("spawn firecracker-sim");
        let mut sim = Sim { child, sock, dir };
        // The socket file appears at bind(2), before listen(2), as with Firecracker: wait
        // until it accepts connections.
        assert!(
            wait_until(Duration::from_secs(10), || UnixStream::connect(&sim.sock)
                .is_ok()
                || sim.child.try_wait().unwrap().is_some()),
            "API socket never accepted connections"
        );
        assert!(sim.child.try_wait().unwrap().is_none(), "sim exited early");
        sim
    }

    /// A path inside the working directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Creates a file with some bytes in the working directory and returns its path.
    pub fn file(&self, name: &str) -> String {
        let p = self.path(name);
        std::fs::write(&p, b"0123456789").unwrap();
        p.to_str().unwrap().to_owned()
    }

    /// Writes the minimal kernel Firecracker's loader accepts to `vmlinux` and returns its path.
    pub fn kernel(&self) -> String {
        let p = self.path("vmlinux");
        std::fs::write(&p, firecracker_sim::kernel::minimal_vmlinux()).unwrap();
        p.to_str().unwrap().to_owned()
    }

    /// A new API connection.
    pub fn client(&self) -> Client {
        Client::connect(&self.sock)
    }

    /// One request on a fresh connection.
    pub fn req(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.client().req(method, path, body)
    }

    /// Asserts a 204.
    pub fn ok(&self, method: &str, path: &str, body: &str) {
        let (status, text) = self.req(method, path, Some(body));
        assert_eq!(status, 204, "{method} {path} {body}: {text}");
    }

    /// Asserts a 400 and returns its `fault_message`.
    pub fn fault(&self, method: &str, path: &str, body: Option<&str>) -> String {
        let (status, text) = self.req(method, path, body);
        assert_eq!(status, 400, "{method} {path}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["fault_message"].as_str().unwrap().to_owned()
    }

    /// Configures a kernel and starts the VM.
    pub fn boot(&self) {
        let kernel = self.kernel();
        self.ok(
            "PUT",
            "/boot-source",
            &format!(
                r#"{{"kernel_image_path":"{kernel}","boot_args":"console=ttyS0 reboot=k panic=1"}}"#
            ),
        );
        self.ok("PUT", "/actions", r#"{"action_type":"InstanceStart"}"#);
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP/1.1 client on one keep-alive connection.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects to an API socket.
    pub fn connect(path: &Path) -> Client {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
        }
    }

    /// Sends one request and reads its response: (status, body).
    pub fn req(&mut self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.writer.write_all(head.as_bytes()).unwrap();
        self.writer.write_all(body.as_bytes()).unwrap();
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).unwrap();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap();
                }
            }
        }
        let mut buf = vec![0u8; len];
        self.reader.read_exact(&mut buf).unwrap();
        (status, String::from_utf8(buf).unwrap())
    }
}

/// Connects to a hybrid vsock socket and sends `CONNECT <port>`; returns the stream and the
/// muxer's answer line (`None` when the stream was closed without one).
pub fn vsock_connect(uds: &Path, port: u32) -> (BufReader<UnixStream>, Option<String>) {
    // Like the API socket, the vsock socket exists from bind(2), just before listen(2).
    let mut conn = None;
    wait_until(Duration::from_secs(5), || {
        conn = UnixStream::connect(uds).ok();
        conn.is_some()
    });
    let mut s = conn.expect("vsock socket never accepted connections");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("CONNECT {port}\n").as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    let got = match r.read_line(&mut line) {
        Ok(n) if n > 0 => Some(line),
        _ => None,
    };
    (r, got)
}
