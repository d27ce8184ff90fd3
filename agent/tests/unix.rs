//! The agent binary in `--unix` mode answers pings, errors and the diagnostic `resolve` and
//! `connect` ops (against a local TCP server on 127.0.0.1) over one connection.
#![expect(
    clippy::disallowed_methods,
    reason = "tests drive the agent binary directly"
)]

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use hearth_proto::agent::{
    codes, decode_response, encode_request, read_line, read_response_line, AgentProtoError,
    ConnectReply, ConnectRequest, PingReply, Request, ResolveReply, ResolveRequest,
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

#[test]
fn resolves_and_connects_over_a_unix_socket() {
    use std::io::Read;
    use std::net::{Ipv4Addr, TcpListener};

    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let _agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_hearth-agent"))
            .arg("--unix")
            .arg(&sock)
            .spawn()
            .unwrap(),
    );
    // One connection, answering "<peer>|<what it got>" and closing.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        s.write_all(format!("{peer}|{got}").as_bytes()).unwrap();
    });
    let mut stream = connect(&sock);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut ask = |req: Request| {
        stream.write_all(&encode_request(&req)).unwrap();
        read_response_line(&mut reader).unwrap().unwrap()
    };

    let line = ask(Request::Resolve(ResolveRequest {
        name: "localhost".into(),
        timeout_ms: 5000,
    }));
    let reply: ResolveReply = decode_response(&line).unwrap();
    assert!(reply.addrs.contains(&Ipv4Addr::LOCALHOST), "{reply:?}");

    let line = ask(Request::Connect(ConnectRequest {
        addr: Ipv4Addr::LOCALHOST,
        port,
        send: "hello".into(),
        timeout_ms: 5000,
    }));
    let reply: ConnectReply = decode_response(&line).unwrap();
    let (peer, got) = reply.received.split_once('|').unwrap();
    assert!(peer.starts_with("127.0.0.1:"), "{peer}");
    assert_eq!(got, "hello");
    server.join().unwrap();

    // The server is gone: the port refuses.
    let line = ask(Request::Connect(ConnectRequest {
        addr: Ipv4Addr::LOCALHOST,
        port,
        send: String::new(),
        timeout_ms: 2000,
    }));
    match decode_response::<ConnectReply>(&line) {
        Err(AgentProtoError::Remote { code, .. }) => assert_eq!(code, codes::CONNECT_REFUSED),
        other => panic!("unexpected {other:?}"),
    }
    // Bad arguments are answered, and the connection stays usable.
    stream
        .write_all(b"{\"v\":1,\"op\":\"connect\",\"addr\":\"nowhere\",\"port\":1}\n")
        .unwrap();
    match decode_response::<ConnectReply>(&read_line(&mut reader).unwrap().unwrap()) {
        Err(AgentProtoError::Remote { code, .. }) => assert_eq!(code, codes::BAD_REQUEST),
        other => panic!("unexpected {other:?}"),
    }
    stream.write_all(&encode_request(&Request::Ping)).unwrap();
    decode_response::<PingReply>(&read_line(&mut reader).unwrap().unwrap()).unwrap();
}
