//! The agent binary in `--unix` mode answers pings and errors over one connection.

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use hearth_proto::agent::{
    codes, decode_response, encode_request, read_line, AgentProtoError, PingReply, Request,
};

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn connect(path: &std::path::Path) -> UnixStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("agent never listened on {}: {e}", path.display()),
        }
    }
}

#[test]
fn answers_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    // A stale file at the path is replaced.
    std::fs::write(&sock, b"stale").unwrap();
    let _agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_hearth-agent"))
            .arg("--unix")
            .arg(&sock)
            .spawn()
            .unwrap(),
    );
    let mut stream = connect(&sock);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    stream.write_all(&encode_request(&Request::Ping)).unwrap();
    let reply: PingReply = decode_response(&read_line(&mut reader).unwrap().unwrap()).unwrap();
    assert_eq!(reply.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(reply.boot_id.len(), 36);
    stream.write_all(b"{\"v\":7,\"op\":\"ping\"}\n").unwrap();
    match decode_response::<PingReply>(&read_line(&mut reader).unwrap().unwrap()) {
        Err(AgentProtoError::Remote { code, .. }) => assert_eq!(code, codes::UNSUPPORTED_VERSION),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn bad_arguments_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_hearth-agent"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unknown argument"));
}
