//! A real `hearth-agent` on a Unix socket, and a small host-side client for its v2 ops.
#![expect(
    clippy::disallowed_methods,
    reason = "tests and benchmarks drive real binaries and tools and clean up their own directories"
)]
#![allow(dead_code, reason = "each test file uses a part")]

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use hearth_proto::agent::frame::{read_frame, write_frame, Frame, FrameKind};
use hearth_proto::agent::{
    decode_response, encode_request, read_response_line, AgentProtoError, ExecInfo, ExecRequest,
    ExecStarted, ExitStatus, Request,
};
use serde::de::DeserializeOwned;

/// An agent process, killed on drop.
pub struct Agent {
    child: Child,
    pub sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    pub fn start() -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        // HEARTH_AGENT_BIN runs the tests against another build (e.g. the static release one).
        let bin = std::env::var_os("HEARTH_AGENT_BIN").map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_hearth-agent")),
            PathBuf::from,
        );
        let child = Command::new(bin).arg("--unix").arg(&sock).spawn().unwrap();
        let a = Agent {
            child,
            sock,
            _dir: dir,
        };
        drop(a.connect());
        a
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn connect(&self) -> Conn {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match UnixStream::connect(&self.sock) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                    return Conn {
                        w: s.try_clone().unwrap(),
                        r: BufReader::new(s),
                    };
                }
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("agent never listened: {e}"),
            }
        }
    }

    /// One request on a fresh connection.
    pub fn call<T: DeserializeOwned>(&self, req: &Request) -> Result<T, AgentProtoError> {
        self.connect().call(req)
    }

    /// Polls `exec_info` until the session has exited.
    pub fn wait_exit(&self, id: &hearth_proto::agent::SessionId) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let info: ExecInfo = self
                .call(&Request::ExecInfo(hearth_proto::agent::SessionRef {
                    id: id.clone(),
                }))
                .unwrap();
            if let Some(e) = info.exit {
                return e;
            }
            assert!(Instant::now() < deadline, "session {id} never exited");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `argv` attached with pipes and no stdin; returns (stdout, stderr, exit).
    pub fn run(&self, req: ExecRequest) -> (Vec<u8>, Vec<u8>, ExitStatus) {
        let mut req = req;
        req.attach = true;
        let mut c = self.connect();
        let _: ExecStarted = c.call(&Request::Exec(req)).unwrap();
        c.collect()
    }
}

/// One connection to the agent.
pub struct Conn {
    pub w: UnixStream,
    pub r: BufReader<UnixStream>,
}

impl Conn {
    pub fn call<T: DeserializeOwned>(&mut self, req: &Request) -> Result<T, AgentProtoError> {
        self.w.write_all(&encode_request(req)).unwrap();
        let line = read_response_line(&mut self.r)?.expect("agent closed without answering");
        decode_response(&line)
    }

    pub fn send(&mut self, f: &Frame) {
        write_frame(&mut self.w, f).unwrap();
    }

    pub fn frame(&mut self) -> Option<Frame> {
        read_frame(&mut self.r).unwrap()
    }

    /// Reads frames until `EXIT`; stdout, stderr and the status.
    pub fn collect(&mut self) -> (Vec<u8>, Vec<u8>, ExitStatus) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        loop {
            let f = self.frame().expect("stream ended before EXIT");
            match f.kind {
                FrameKind::Stdout => out.extend_from_slice(&f.payload),
                FrameKind::Stderr => err.extend_from_slice(&f.payload),
                FrameKind::Exit => {
                    let exit = f.as_exit().unwrap();
                    // EXIT is the last frame: the agent closes the stream.
                    assert!(self.frame().is_none());
                    return (out, err, exit);
                }
                other => panic!(
                    "unexpected {other:?} frame: {}",
                    String::from_utf8_lossy(&f.payload)
                ),
            }
        }
    }
}

pub fn argv(v: &[&str]) -> Vec<String> {
    v.iter().map(ToString::to_string).collect()
}

pub fn sh(script: &str) -> ExecRequest {
    ExecRequest::new(argv(&["sh", "-c", script]))
}

/// Whether privileged tests may run: root, or a skip (a failure under
/// `HEARTH_REQUIRE_PRIVILEGED=1`).
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("HEARTH_REQUIRE_PRIVILEGED").is_none(),
        "{test} needs root"
    );
    eprintln!("SKIP {test}: needs root");
    false
}

pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(data))
}
