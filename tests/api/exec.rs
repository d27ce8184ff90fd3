//! Exec sessions and file transfer through the HTTP API: a real server over the fake
//! supervisor, whose VM "web" has the REAL `hearth-agent` (`--unix` mode) behind a
//! hybrid-vsock stand-in (`CONNECT <port>` -> `OK`, then spliced to the agent), so real
//! commands run through hearthd's `GuestActor`, its WebSocket and archive proxies. The "guest"
//! is this host: commands and files stay inside a temporary directory. A scripted hostile
//! agent stands behind a second VM. Privileged end-to-end runs through firecracker-sim are
//! in the hearthctl tests.
#![expect(
    clippy::disallowed_methods,
    reason = "tests and benchmarks drive real binaries and tools and clean up their own directories"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use hearth::api::fake::{ForceState, SetAgentSocket};
use hearth::api::testing::TestServer;
use hearth::client::{Client, Method, Response};
use hearth_proto::agent::frame::{Frame, FrameKind};
use hearth_proto::agent::{encode_ok, ExecInfo, ExecList};
use hearth_proto::api::VmState;
use hearth_proto::api_exec::{channel, ExecCreated, PathStat, Status, PATH_STAT_HEADER};
use serde_json::json;
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

use super::{create, error_of, post};

/// The agent binary of this build, (re)built so the test never runs a stale one.
fn agent_bin() -> PathBuf {
    hearth_testkit::fc_sim::agent_binary()
}

/// Reads the `CONNECT <port>\n` line byte by byte (nothing past it is consumed).
fn read_connect(s: &mut UnixStream) -> Option<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 64 {
        if s.read(&mut b).ok()? == 0 {
            return None;
        }
        line.push(b[0]);
        if b[0] == b'\n' {
            return String::from_utf8(line).ok();
        }
    }
    None
}

/// A hybrid-vsock stand-in at `uds` splicing every `CONNECT 52` to the agent at `agent`.
fn splice_muxer(uds: &Path, agent: PathBuf) {
    let listener = UnixListener::bind(uds).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut host) = conn else { return };
            let agent = agent.clone();
            std::thread::spawn(move || {
                if read_connect(&mut host).as_deref() != Some("CONNECT 52\n") {
                    return;
                }
                let Ok(guest) = UnixStream::connect(&agent) else {
                    return; // closed without OK, as Firecracker does
                };
                host.write_all(b"OK 1073741824\n").unwrap();
                let (mut h2, mut g2) = (host.try_clone().unwrap(), guest.try_clone().unwrap());
                let up = std::thread::spawn(move || {
                    let mut host = host;
                    let mut guest = guest;
                    let _ = std::io::copy(&mut host, &mut guest);
                    let _ = guest.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(&mut g2, &mut h2);
                let _ = h2.shutdown(std::net::Shutdown::Write);
                let _ = up.join();
            });
        }
    });
}

/// A hybrid-vsock stand-in whose agent answers every request with `answer`, then waits for
/// the host to close.
fn hostile_muxer(uds: &Path, answer: Vec<u8>) {
    let listener = UnixListener::bind(uds).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut host) = conn else { return };
            let answer = answer.clone();
            std::thread::spawn(move || {
                if read_connect(&mut host).is_none() {
                    return;
                }
                host.write_all(b"OK 1073741824\n").unwrap();
                let mut r = BufReader::new(host.try_clone().unwrap());
                let mut req = Vec::new();
                let _ = r.read_until(b'\n', &mut req);
                let _ = host.write_all(&answer);
                let mut sink = Vec::new();
                let _ = r.read_to_end(&mut sink);
            });
        }
    });
}

/// The API with VM "web" backed by the real agent, and a work directory for its files.
struct Guest {
    /// `None` once a test stopped it.
    server: Option<TestServer>,
    client: Client,
    agent: Child,
    /// Inside the test directory: where the guest's files go.
    work: PathBuf,
    dir: tempfile::TempDir,
}

impl Guest {
    fn srv(&self) -> &TestServer {
        self.server.as_ref().expect("server running")
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

fn guest(max_archive_bytes: u64) -> Guest {
    let dir = tempfile::Builder::new()
        .prefix("hx")
        .tempdir_in("/tmp")
        .unwrap();
    let server = TestServer::start(dir.path(), |c| {
        c.exec.max_archive_bytes = max_archive_bytes;
        c.exec.connect_timeout = Duration::from_secs(5);
    })
    .unwrap();
    let client = Client::new(&server.socket);
    create(&client, "web");
    let agent_sock = dir.path().join("agent.sock");
    let agent = Command::new(agent_bin())
        .arg("--unix")
        .arg(&agent_sock)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(&agent_sock).is_err() {
        assert!(Instant::now() < deadline, "the agent did not listen");
        std::thread::sleep(Duration::from_millis(5));
    }
    let uds = dir.path().join("v.sock");
    splice_muxer(&uds, agent_sock);
    futures::executor::block_on(server.supervisor.send(SetAgentSocket {
        name: "web".into(),
        uds,
    }))
    .unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    Guest {
        server: Some(server),
        client,
        agent,
        work,
        dir,
    }
}

fn exec(c: &Client, vm: &str, body: serde_json::Value) -> String {
    let r = post(c, &format!("/v1/vms/{vm}/exec"), &[], body);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json::<ExecCreated>().unwrap().id.to_string()
}

type Ws = tungstenite::WebSocket<UnixStream>;

fn attach(socket: &Path, vm: &str, id: &str, stdin: bool) -> Ws {
    let mut req = format!("ws://localhost/v1/vms/{vm}/execs/{id}/attach?stdin={stdin}")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v5.channel.k8s.io".parse().unwrap(),
    );
    let stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (ws, resp) = tungstenite::client::client(req, stream).unwrap();
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        Some("v5.channel.k8s.io")
    );
    ws
}

/// What a session sent until its status and the close.
#[derive(Debug, Default)]
struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    status: Option<Status>,
    closed: bool,
}

fn follow(ws: &mut Ws) -> Output {
    let mut out = Output::default();
    loop {
        match ws.read() {
            Ok(Message::Binary(b)) => match b[0] {
                channel::STDOUT => out.stdout.extend_from_slice(&b[1..]),
                channel::STDERR => out.stderr.extend_from_slice(&b[1..]),
                channel::STATUS => out.status = Some(serde_json::from_slice(&b[1..]).unwrap()),
                other => panic!("unexpected channel {other}"),
            },
            Ok(Message::Close(_)) => {
                out.closed = true;
            }
            Ok(_) => {}
            Err(_) => return out,
        }
    }
}

#[test]
fn exec_output_is_kept_until_attach_and_the_exit_code_is_the_status() {
    let g = guest(1 << 20);
    let id = exec(
        &g.client,
        "web",
        json!({"command": ["sh", "-c", "echo out; echo err >&2; exit 3"]}),
    );
    // The process runs to its end before anyone attaches.
    assert!(
        hearth_testkit::wait_until(Duration::from_secs(10), || {
            g.client
                .get::<ExecInfo>(format!("/v1/vms/web/execs/{id}").as_str())
                .is_ok_and(|i| i.exit.is_some())
        }),
        "session {id} never exited"
    );
    let mut ws = attach(&g.srv().socket, "web", &id, false);
    let out = follow(&mut ws);
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    let status = out.status.expect("a status");
    assert_eq!(status.exit_code(), Some(3), "{status:?}");
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    assert!(out.closed);

    let ok = exec(&g.client, "web", json!({"command": ["true"]}));
    let out = follow(&mut attach(&g.srv().socket, "web", &ok, false));
    assert_eq!(out.status.unwrap().status, "Success");
    let list: ExecList = g.client.get("/v1/vms/web/execs").unwrap();
    assert!(list.execs.iter().any(|e| e.id.as_str() == id));
    let info: ExecInfo = g
        .client
        .get(format!("/v1/vms/web/execs/{id}").as_str())
        .unwrap();
    assert_eq!(info.exit.unwrap().code, 3);
}

#[test]
fn stdin_is_forwarded_and_its_eof_ends_cat() {
    let g = guest(1 << 20);
    let id = exec(&g.client, "web", json!({"command": ["cat"], "stdin": true}));
    let mut ws = attach(&g.srv().socket, "web", &id, true);
    let mut msg = vec![channel::STDIN];
    msg.extend(vec![b'x'; 200_000]); // over one agent frame: split by hearthd
    ws.send(Message::Binary(msg.into())).unwrap();
    ws.send(Message::Binary(vec![channel::CLOSE, channel::STDIN].into()))
        .unwrap();
    let out = follow(&mut ws);
    assert_eq!(out.stdout.len(), 200_000);
    assert_eq!(out.status.unwrap().exit_code(), Some(0));
}

#[test]
fn signal_kills_the_process_group() {
    let g = guest(1 << 20);
    let id = exec(&g.client, "web", json!({"command": ["sleep", "30"]}));
    let r = post(
        &g.client,
        &format!("/v1/vms/web/execs/{id}/signal"),
        &[],
        json!({"signal": "TERM"}),
    );
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    let out = follow(&mut attach(&g.srv().socket, "web", &id, false));
    assert_eq!(out.status.unwrap().exit_code(), Some(143));
    let r = post(
        &g.client,
        &format!("/v1/vms/web/execs/{id}/signal"),
        &[],
        json!({"signal": "NOPE"}),
    );
    assert_eq!(r.status, 400);
    assert!(error_of(&r).error.message.contains("NOPE"));
}

#[test]
fn a_pty_session_follows_resizes() {
    let g = guest(1 << 20);
    let id = exec(
        &g.client,
        "web",
        json!({"command": ["sh", "-c", "stty size; read x; stty size"], "tty": true,
               "stdin": true, "size": {"rows": 24, "cols": 80}}),
    );
    let mut ws = attach(&g.srv().socket, "web", &id, true);
    // The first size is printed before the resize is sent (the shell may start late).
    let mut first = Vec::new();
    while !String::from_utf8_lossy(&first).contains("24 80") {
        match ws.read().unwrap() {
            Message::Binary(b) if b[0] == channel::STDOUT => first.extend_from_slice(&b[1..]),
            other => panic!("unexpected {other:?} before the first size"),
        }
    }
    let mut resize = vec![channel::RESIZE];
    resize.extend(br#"{"Width":100,"Height":40}"#);
    ws.send(Message::Binary(resize.into())).unwrap();
    let mut line = vec![channel::STDIN];
    line.extend(b"go\n");
    ws.send(Message::Binary(line.into())).unwrap();
    let out = follow(&mut ws);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("40 100"), "{text}");
    assert!(!text.contains("24 80"), "{text}");
    assert!(out.stderr.is_empty(), "a PTY merges stderr");
    assert_eq!(out.status.unwrap().exit_code(), Some(0));
}

#[test]
fn client_framing_errors_close_the_websocket_and_detach() {
    let g = guest(1 << 20);
    let id = exec(&g.client, "web", json!({"command": ["sleep", "30"]}));
    let mut ws = attach(&g.srv().socket, "web", &id, false);
    ws.send(Message::Binary(vec![9u8, 1, 2].into())).unwrap();
    let mut code = None;
    while let Ok(m) = ws.read() {
        if let Message::Close(Some(f)) = m {
            code = Some(u16::from(f.code));
        }
    }
    assert_eq!(code, Some(1002), "protocol error close");
    // The session still runs in the agent.
    let info: ExecInfo = g
        .client
        .get(format!("/v1/vms/web/execs/{id}").as_str())
        .unwrap();
    assert!(info.exit.is_none());
}

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        // Raw name bytes: the builder would refuse the hostile ones this test needs.
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o640);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn put(c: &Client, vm: &str, dir: &Path, body: &[u8]) -> Response {
    c.request(
        Method::PUT,
        format!("/v1/vms/{vm}/archive?path={}", dir.display()),
        &[("Content-Type", "application/x-tar")],
        Some(body),
    )
    .unwrap()
}

#[test]
fn archives_go_in_and_out() {
    let g = guest(1 << 20);
    let data = vec![7u8; 100_000];
    let r = put(
        &g.client,
        "web",
        &g.work,
        &tar_of(&[("a/hello.bin", &data)]),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(std::fs::read(g.work.join("a/hello.bin")).unwrap(), data);

    let file = g.work.join("a/hello.bin");
    let r = g
        .client
        .request(
            Method::GET,
            format!("/v1/vms/web/archive?path={}", file.display()),
            &[],
            None,
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let stat: PathStat =
        serde_json::from_str(r.header(&PATH_STAT_HEADER.to_ascii_lowercase()).unwrap()).unwrap();
    assert_eq!((stat.name.as_str(), stat.size), ("hello.bin", 100_000));
    let mut archive = tar::Archive::new(&r.body[..]);
    let mut entries = archive.entries().unwrap();
    let mut e = entries.next().unwrap().unwrap();
    assert_eq!(e.path().unwrap().to_str(), Some("hello.bin"));
    let mut got = Vec::new();
    e.read_to_end(&mut got).unwrap();
    assert_eq!(got, data);

    let r = g
        .client
        .request(
            Method::HEAD,
            format!("/v1/vms/web/archive?path={}", g.work.display()),
            &[],
            None,
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let r = g
        .client
        .request(
            Method::HEAD,
            format!("/v1/vms/web/archive?path={}/none", g.work.display()),
            &[],
            None,
        )
        .unwrap();
    assert_eq!(r.status, 404);

    // The agent's refusals map to statuses: a missing directory, a hostile entry.
    let r = put(
        &g.client,
        "web",
        &g.work.join("nope"),
        &tar_of(&[("x", b"1")]),
    );
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    let r = put(&g.client, "web", &g.work, &tar_of(&[("../escape", b"1")]));
    assert_eq!(
        (r.status, error_of(&r).error.code.as_str()),
        (400, "archive"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert!(!g.dir.path().join("escape").exists());
    let r = g
        .client
        .request(
            Method::PUT,
            format!("/v1/vms/web/archive?path={}", g.work.display()),
            &[("Content-Type", "application/json")],
            Some(b"{}"),
        )
        .unwrap();
    assert_eq!(r.status, 415);
    let r = put(&g.client, "web", Path::new("relative"), b"");
    assert_eq!(r.status, 400);
}

/// Sends a chunked upload of `body` by hand (no Content-Length), returns status and text.
fn chunked_put(socket: &Path, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = UnixStream::connect(socket).unwrap();
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    for piece in body.chunks(4096) {
        if s.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .is_err()
            || s.write_all(piece).is_err()
            || s.write_all(b"\r\n").is_err()
        {
            break; // the server answered early and closed
        }
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

#[test]
fn archives_over_the_limit_are_refused_or_cut() {
    let g = guest(16 * 1024);
    let big = tar_of(&[("big.bin", &vec![1u8; 64 * 1024])]);
    // Declared too large: refused before the agent is asked.
    let r = put(&g.client, "web", &g.work, &big);
    assert_eq!(
        (r.status, error_of(&r).error.code.as_str()),
        (413, "too_large")
    );
    // Streamed (chunked) past the limit: cut, 413, the agent told to discard it.
    let (status, out) = chunked_put(
        &g.srv().socket,
        &format!("/v1/vms/web/archive?path={}", g.work.display()),
        &big,
    );
    assert_eq!(status, 413, "{out}");
    // A download past the limit is aborted: no chunked terminator reaches the client.
    // Another name than the aborted upload's, which the agent may still be discarding.
    std::fs::write(g.work.join("dl.bin"), vec![1u8; 64 * 1024]).unwrap();
    let mut s = UnixStream::connect(&g.srv().socket).unwrap();
    write!(
        s,
        "GET /v1/vms/web/archive?path={}/dl.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        g.work.display()
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    // actix aborts the connection on the body's error: the client gets the headers and a
    // cut body, or (when the cut comes before the first flush) nothing at all; never a
    // chunked body with its terminator.
    let text = String::from_utf8_lossy(&raw);
    let tail = String::from_utf8_lossy(&raw[raw.len().saturating_sub(16)..]);
    assert!(
        raw.is_empty() || text.starts_with("HTTP/1.1 200"),
        "{}",
        &text[..text.len().min(200)]
    );
    assert!(
        raw.len() < 64 * 1024,
        "cut near the limit: {} bytes",
        raw.len()
    );
    assert!(
        !raw.ends_with(b"\r\n0\r\n\r\n"),
        "the body must not look complete: {} bytes, ending {tail:?}",
        raw.len()
    );
    // hearthd still serves.
    let id = exec(&g.client, "web", json!({"command": ["true"]}));
    assert!(!id.is_empty());
}

#[test]
fn vm_state_session_and_upgrade_errors_have_their_statuses() {
    let g = guest(1 << 20);
    let r = post(
        &g.client,
        "/v1/vms/nope/exec",
        &[],
        json!({"command": ["true"]}),
    );
    assert_eq!(
        (r.status, error_of(&r).error.code.as_str()),
        (404, "not_found")
    );
    let r = g
        .client
        .request(Method::GET, "/v1/vms/web/execs/nosuch", &[], None)
        .unwrap();
    assert_eq!(
        (r.status, error_of(&r).error.code.as_str()),
        (404, "no_such_session")
    );
    let r = g
        .client
        .request(Method::GET, "/v1/vms/web/execs/bad..id", &[], None)
        .unwrap();
    assert_eq!(r.status, 400);
    // A plain GET of the WebSocket endpoint: a clear 400, the agent not touched.
    let id = exec(&g.client, "web", json!({"command": ["sleep", "30"]}));
    let r = g
        .client
        .request(
            Method::GET,
            format!("/v1/vms/web/execs/{id}/attach"),
            &[],
            None,
        )
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(
        error_of(&r).error.message.contains("WebSocket"),
        "{:?}",
        error_of(&r)
    );
    let r = post(&g.client, "/v1/vms/web/exec", &[], json!({"command": []}));
    assert_eq!(r.status, 400);
    // A VM that is not running: 409, whatever the agent would say.
    futures::executor::block_on(g.srv().supervisor.send(ForceState {
        name: "web".into(),
        state: VmState::Stopped,
    }))
    .unwrap()
    .unwrap();
    let r = post(
        &g.client,
        "/v1/vms/web/exec",
        &[],
        json!({"command": ["true"]}),
    );
    assert_eq!(
        (r.status, error_of(&r).error.code.as_str()),
        (409, "invalid_state")
    );
    let r = g
        .client
        .request(Method::GET, "/v1/vms/web/execs", &[], None)
        .unwrap();
    assert_eq!(r.status, 409);
}

#[test]
fn a_hostile_agent_ends_its_request_never_hearthd() {
    let g = guest(1 << 20);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\x00\xffnot json at all\n".to_vec()),
        ("huge", vec![b'{'; 2 << 20]),
        ("frames", {
            // A valid attach answer, then a frame claiming 4 GiB.
            let mut v = encode_ok(&json!({"id": "s1", "argv": ["x"], "tty": false,
                "stdin_open": false, "pid": 1, "started_uptime_ms": 1, "attached": true}));
            v.extend(Frame::new(FrameKind::Stdout, b"ok".to_vec()).to_bytes());
            v.extend([1u8, 0xff, 0xff, 0xff, 0xff]);
            v
        }),
    ];
    for (i, (what, answer)) in cases.into_iter().enumerate() {
        let vm = format!("bad{i}");
        create(&g.client, &vm);
        let uds = g.dir.path().join(format!("bad{i}.sock"));
        hostile_muxer(&uds, answer);
        futures::executor::block_on(g.srv().supervisor.send(SetAgentSocket {
            name: vm.clone(),
            uds,
        }))
        .unwrap();
        if what == "frames" {
            let mut ws = attach(&g.srv().socket, &vm, "s1", false);
            let out = follow(&mut ws);
            assert_eq!(out.stdout, b"ok");
            let status = out.status.expect("a status");
            assert_eq!(
                status.reason.as_deref(),
                Some("InternalError"),
                "{status:?}"
            );
            assert!(status.message.unwrap().contains("protocol"));
            // The archive download from the same agent is cut, not complete.
            let r = g.client.request(
                Method::GET,
                format!("/v1/vms/{vm}/archive?path=/x"),
                &[],
                None,
            );
            assert!(!r.is_ok_and(|r| r.status < 400), "{what}");
        } else {
            let r = post(
                &g.client,
                &format!("/v1/vms/{vm}/exec"),
                &[],
                json!({"command": ["true"]}),
            );
            assert_eq!(
                (r.status, error_of(&r).error.code.as_str()),
                (502, "agent_protocol"),
                "{what}"
            );
        }
    }
    // hearthd and the good agent still serve.
    let id = exec(&g.client, "web", json!({"command": ["true"]}));
    let out = follow(&mut attach(&g.srv().socket, "web", &id, false));
    assert_eq!(out.status.unwrap().exit_code(), Some(0));
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

#[test]
fn a_hundred_mib_each_way_keeps_every_byte() {
    const SIZE: usize = 100 << 20;
    let g = guest(1 << 30);
    // Not compressible, not periodic at any frame size.
    let mut data = vec![0u8; SIZE];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let src = g.dir.path().join("src.bin");
    std::fs::write(&src, &data).unwrap();
    let want = sha256(&data);

    // Binary stdout through the agent, hearthd's WebSocket and the client.
    // The output starts once attached: before the first attach only the ring (1 MiB) keeps it.
    let id = exec(
        &g.client,
        "web",
        json!({"command": ["sh", "-c", "read go; exec cat \"$0\"", src.to_str().unwrap()],
               "stdin": true}),
    );
    let mut ws = attach(&g.srv().socket, "web", &id, true);
    ws.send(Message::Binary(vec![channel::STDIN, b'\n'].into()))
        .unwrap();
    let out = follow(&mut ws);
    assert_eq!(out.stdout.len(), SIZE);
    assert_eq!(sha256(&out.stdout), want);
    assert_eq!(out.status.unwrap().exit_code(), Some(0));

    // A file in, then out again.
    let r = put(&g.client, "web", &g.work, &tar_of(&[("in.bin", &data)]));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(sha256(&std::fs::read(g.work.join("in.bin")).unwrap()), want);
    let r = g
        .client
        .stream(
            Method::GET,
            format!("/v1/vms/web/archive?path={}/in.bin", g.work.display()),
            &[],
            None,
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let mut archive = tar::Archive::new(r.body);
    let mut e = archive.entries().unwrap().next().unwrap().unwrap();
    let mut got = Vec::with_capacity(SIZE);
    e.read_to_end(&mut got).unwrap();
    assert_eq!(sha256(&got), want);
}

#[test]
fn a_stalled_upload_is_408_and_frees_its_agent_connection() {
    let g = guest(1 << 20);
    let mut s = UnixStream::connect(&g.srv().socket).unwrap();
    write!(
        s,
        "PUT /v1/vms/web/archive?path={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n",
        g.work.display()
    )
    .unwrap();
    // Nothing more: the server's body deadline (5 s) ends it.
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(out.contains("body_timeout"), "{out}");
    // The VM's agent still answers.
    exec(&g.client, "web", json!({"command": ["true"]}));
}

#[test]
fn stopping_hearthd_closes_attached_sessions_as_going_away() {
    let g = guest(1 << 20);
    let id = exec(&g.client, "web", json!({"command": ["sleep", "30"]}));
    let mut ws = attach(&g.srv().socket, "web", &id, false);
    let reader = std::thread::spawn(move || {
        let mut code = None;
        while let Ok(m) = ws.read() {
            if let Message::Close(Some(f)) = m {
                code = Some(u16::from(f.code));
            }
        }
        code
    });
    let mut g = g;
    drop(g.server.take());
    assert_eq!(reader.join().unwrap(), Some(1001));
}
