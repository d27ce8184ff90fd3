//! The HTTP API end to end: a real server on a temporary Unix socket (and TCP on loopback)
//! over the fake supervisor, driven with hearth's client and with raw HTTP. Image endpoints
//! are in `images.rs`; the same server over the real `VmSupervisor` in `supervisor.rs`.

mod exec;
mod hostile;
mod images;
mod policy;
mod snapshots;
mod supervisor;

use std::io::{BufRead, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use hearth::api::fake::{CountWaits, FailNext, ForceState};
use hearth::api::openapi;
use hearth::api::testing::TestServer;
use hearth::api::ApiServerError;
use hearth::client::{Client, ClientError, Method, Response, SseReader};
use hearth_actors::supervisor::store::VmStoreError;
use hearth_actors::supervisor::SupervisorError;
use hearth_proto::api::{ErrorBody, Event, FieldError, VmInfo, VmState};
use hearth_proto::api_health::Health;
use serde_json::json;

fn server() -> (tempfile::TempDir, TestServer, Client) {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), |_| {}).unwrap();
    let c = Client::new(&s.socket);
    (dir, s, c)
}

fn post(c: &Client, path: &str, headers: &[(&str, &str)], body: serde_json::Value) -> Response {
    c.request(
        Method::POST,
        path,
        headers,
        Some(body.to_string().as_bytes()),
    )
    .unwrap()
}

fn create(c: &Client, name: &str) -> VmInfo {
    let r = post(
        c,
        "/v1/vms",
        &[],
        json!({"name": name, "kernel": "k", "rootfs": "r"}),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json().unwrap()
}

fn error_of(r: &Response) -> ErrorBody {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&r.body)))
}

/// Sends `raw` as is and returns the status line and the rest.
fn raw(socket: &std::path::Path, raw: &[u8]) -> (u16, String) {
    let mut s = UnixStream::connect(socket).unwrap();
    s.write_all(raw).unwrap();
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
fn vm_lifecycle_round_trip() {
    let (_d, s, c) = server();
    let r = post(
        &c,
        "/v1/vms",
        &[],
        json!({"name": "web", "kernel": "k", "rootfs": "r", "vcpus": 2, "labels": {"role": "front"}}),
    );
    assert_eq!(r.status, 201);
    let vm: VmInfo = r.json().unwrap();
    assert_eq!((vm.state, vm.spec.vcpus), (VmState::Running, 2));
    create(&c, "db");

    let got: VmInfo = c.get("/v1/vms/web").unwrap();
    assert_eq!(got, vm);
    let all: Vec<VmInfo> = c.get("/v1/vms").unwrap();
    assert_eq!(
        all.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        ["db", "web"]
    );
    let front: Vec<VmInfo> = c.get("/v1/vms?label=role=front").unwrap();
    assert_eq!(front.len(), 1);
    let front: Vec<VmInfo> = c.get("/v1/vms?label=role%3Dfront").unwrap();
    assert_eq!(front.len(), 1);

    let stopped: VmInfo = c
        .request(Method::POST, "/v1/vms/web/stop", &[], None)
        .unwrap()
        .ok()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(stopped.state, VmState::Stopped);
    let again = c
        .request(Method::POST, "/v1/vms/web/stop", &[], None)
        .unwrap();
    assert_eq!(
        (again.status, error_of(&again).error.code.as_str()),
        (409, "invalid_state")
    );
    for action in ["start", "restart", "kill"] {
        let r = c
            .request(Method::POST, format!("/v1/vms/web/{action}"), &[], None)
            .unwrap();
        assert_eq!(r.status, 200, "{action}");
    }
    let nat: VmInfo = c
        .send_json(
            Method::PUT,
            "/v1/vms/web/nat",
            &[],
            &json!({"enabled": true}),
        )
        .unwrap();
    assert!(nat.nat);
    let del = c.request(Method::DELETE, "/v1/vms/web", &[], None).unwrap();
    assert_eq!(del.status, 204);
    assert!(del.body.is_empty());
    let gone = c.request(Method::GET, "/v1/vms/web", &[], None).unwrap();
    assert_eq!(
        (gone.status, error_of(&gone).error.code.as_str()),
        (404, "not_found")
    );

    let health: Health = c.get("/v1/health").unwrap();
    assert_eq!((health.status.as_str(), health.vms), ("ok", 1));
    drop(s);
}

#[test]
fn every_supervisor_error_has_its_status() {
    let (_d, s, c) = server();
    create(&c, "a");
    let cases: Vec<(SupervisorError, u16, &str)> = vec![
        (
            FieldError {
                field: "vcpus",
                reason: "bad".into(),
            }
            .into(),
            400,
            "invalid_field",
        ),
        (
            SupervisorError::NotFound { name: "a".into() },
            404,
            "not_found",
        ),
        (
            SupervisorError::Conflict {
                message: "taken".into(),
            },
            409,
            "conflict",
        ),
        (
            SupervisorError::InvalidState {
                name: "a".into(),
                state: VmState::Creating,
                op: "get",
            },
            409,
            "invalid_state",
        ),
        (
            SupervisorError::UnknownImage {
                kind: "kernel",
                image: "k".into(),
            },
            422,
            "unknown_image",
        ),
        (
            SupervisorError::Unavailable {
                what: "No free address".into(),
            },
            503,
            "unavailable",
        ),
        (
            SupervisorError::Timeout {
                name: "a".into(),
                state: VmState::Running,
            },
            408,
            "timeout",
        ),
        (
            SupervisorError::step(
                "network lease",
                hearth_actors::tap_pool::TapPoolError::IpsExhausted {
                    cidr: "172.31.240.0/29".parse().unwrap(),
                    leased: 5,
                },
            ),
            503,
            "unavailable",
        ),
        (VmStoreError::Storage("I/O".into()).into(), 500, "storage"),
    ];
    for (error, status, code) in cases {
        let message = error.to_string();
        futures::executor::block_on(s.supervisor.send(FailNext { error })).unwrap();
        let r = c.request(Method::GET, "/v1/vms/a", &[], None).unwrap();
        assert_eq!(r.status, status, "{code}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        let body = error_of(&r);
        assert_eq!(
            (body.error.code.as_str(), body.error.message),
            (code, message)
        );
    }
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "a table of bad bodies and their answers"
)]
fn bodies_are_checked() {
    let (_d, s, c) = server();
    // Unknown field: 400 naming it; nothing created.
    let r = post(
        &c,
        "/v1/vms",
        &[],
        json!({"name": "a", "kernel": "k", "rootfs": "r", "cpus": 2}),
    );
    assert_eq!(r.status, 400);
    let e = error_of(&r).error;
    assert_eq!(e.code, "invalid_body");
    assert!(e.message.contains("unknown field `cpus`"), "{}", e.message);
    // A bad value: 400 naming the field.
    let r = post(
        &c,
        "/v1/vms",
        &[],
        json!({"name": "a", "kernel": "k", "rootfs": "r", "vcpus": 0}),
    );
    let e = error_of(&r).error;
    assert_eq!((r.status, e.code.as_str()), (400, "invalid_field"));
    assert!(e.message.contains("`vcpus`"), "{}", e.message);
    // `rootfs` may be left out only with `from_snapshot`: without it, 400 naming it.
    let r = post(&c, "/v1/vms", &[], json!({"name": "a", "kernel": "k"}));
    let e = error_of(&r).error;
    assert_eq!((r.status, e.code.as_str()), (400, "invalid_field"));
    assert!(e.message.contains("`rootfs`"), "{}", e.message);
    let r = c
        .request(Method::POST, "/v1/vms", &[], Some(b"{not json"))
        .unwrap();
    assert_eq!(
        (r.status, error_of(&r).error.code.as_str()),
        (400, "invalid_body")
    );
    let r = c.send_json::<_, VmInfo>(
        Method::PUT,
        "/v1/vms/a/nat",
        &[],
        &json!({"enabled": "yes"}),
    );
    assert!(
        matches!(r, Err(ClientError::Api { status: 400, .. })),
        "{r:?}"
    );

    // Wrong content type: 415.
    let body = r#"{"name":"a","kernel":"k","rootfs":"r"}"#;
    let (status, out) = raw(
        &s.socket,
        format!(
            "POST /v1/vms HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(status, 415, "{out}");
    assert!(out.contains("\"unsupported_media_type\""), "{out}");
    let (status, _) = raw(
        &s.socket,
        format!(
            "POST /v1/vms HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(status, 415);

    // Too large, by Content-Length and by a chunked body that grows past the limit.
    let big = format!(
        r#"{{"name":"a","kernel":"k","rootfs":"r","boot_args":"{}"}}"#,
        "x".repeat(70_000)
    );
    let r = c
        .request(Method::POST, "/v1/vms", &[], Some(big.as_bytes()))
        .unwrap();
    assert_eq!(
        (r.status, error_of(&r).error.code.as_str()),
        (413, "too_large")
    );
    let mut chunked = b"POST /v1/vms HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in big.as_bytes().chunks(8192) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, _) = raw(&s.socket, &chunked);
    assert_eq!(status, 413);

    let all: Vec<VmInfo> = c.get("/v1/vms").unwrap();
    assert!(all.is_empty(), "a refused request created nothing");

    // Query parameters and routes.
    let r = c
        .request(Method::GET, "/v1/vms?lable=a=b", &[], None)
        .unwrap();
    let e = error_of(&r).error;
    assert_eq!((r.status, e.code.as_str()), (400, "invalid_parameter"));
    assert!(e.message.contains("`lable`"), "{}", e.message);
    let r = c
        .request(Method::GET, "/v1/vms?label=nolabel", &[], None)
        .unwrap();
    assert!(error_of(&r).error.message.contains("`label`"));
    let r = c.request(Method::GET, "/v1/nothing", &[], None).unwrap();
    assert_eq!(
        (r.status, error_of(&r).error.code.as_str()),
        (404, "no_route")
    );
    let r = c.request(Method::PATCH, "/v1/vms", &[], None).unwrap();
    assert_eq!(
        (r.status, error_of(&r).error.code.as_str()),
        (405, "method_not_allowed")
    );
}

#[test]
fn idempotent_create_and_actions() {
    let (_d, s, c) = server();
    let body = json!({"name": "a", "kernel": "k", "rootfs": "r"});
    let key = [("Idempotency-Key", "req-1")];
    let first = post(&c, "/v1/vms", &key, body.clone());
    assert_eq!(first.status, 201);
    // The retry replays the first answer instead of failing with "exists".
    let again = post(&c, "/v1/vms", &key, body.clone());
    assert_eq!(again.status, 201);
    assert_eq!(
        again.json::<VmInfo>().unwrap(),
        first.json::<VmInfo>().unwrap()
    );
    let events: Vec<Event> = c.get("/v1/events").unwrap();
    assert_eq!(events.len(), 2, "one create happened: {events:?}");
    // Same key, other request: 409.
    let other = post(
        &c,
        "/v1/vms",
        &key,
        json!({"name": "b", "kernel": "k", "rootfs": "r"}),
    );
    let e = error_of(&other).error;
    assert_eq!((other.status, e.code.as_str()), (409, "conflict"));
    assert!(e.message.contains("req-1"), "{}", e.message);
    // Without a key, a second create of the same name is a conflict.
    let dup = post(&c, "/v1/vms", &[], body);
    assert_eq!(dup.status, 409);

    let stop_key = [("Idempotency-Key", "stop-1")];
    let r = c
        .request(Method::POST, "/v1/vms/a/stop", &stop_key, None)
        .unwrap();
    assert_eq!(r.status, 200);
    let r = c
        .request(Method::POST, "/v1/vms/a/stop", &stop_key, None)
        .unwrap();
    assert_eq!(r.status, 200, "a retried stop replays, not invalid_state");
    let r = c
        .request(Method::POST, "/v1/vms/a/kill", &stop_key, None)
        .unwrap();
    assert_eq!(r.status, 409, "the key was bound to stop");
    let r = c
        .request(
            Method::POST,
            "/v1/vms/a/start",
            &[("Idempotency-Key", "bad key")],
            None,
        )
        .unwrap();
    assert!(error_of(&r).error.message.contains("Idempotency-Key"));
    drop(s);
}

/// `Idempotency-Key` on `POST /v1/vms/{name}/snapshots` and `/fork`, as on create: the
/// retry answers the first result and makes nothing more; the key with another request (or
/// on another endpoint) is 409.
#[test]
fn idempotent_snapshots_and_forks() {
    let (_d, s, c) = server();
    create(&c, "a");
    let key = [("Idempotency-Key", "snap-1")];
    let body = json!({"name": "s1"});
    let first = post(&c, "/v1/vms/a/snapshots", &key, body.clone());
    assert_eq!(first.status, 201);
    let again = post(&c, "/v1/vms/a/snapshots", &key, body);
    assert_eq!(again.status, 201, "not `name taken`");
    assert_eq!(again.body, first.body);
    let other = post(&c, "/v1/vms/a/snapshots", &key, json!({"name": "s2"}));
    assert_eq!(
        (other.status, error_of(&other).error.code.as_str()),
        (409, "conflict")
    );
    let all: Vec<serde_json::Value> = c.get("/v1/snapshots").unwrap();
    assert_eq!(all.len(), 1, "{all:?}");

    let key = [("Idempotency-Key", "fork-1")];
    let first = post(&c, "/v1/vms/a/fork", &key, json!({"name": "b"}));
    assert_eq!(first.status, 201);
    let again = post(&c, "/v1/vms/a/fork", &key, json!({"name": "b"}));
    assert_eq!(again.status, 201, "not `name taken`");
    assert_eq!(
        again.json::<VmInfo>().unwrap(),
        first.json::<VmInfo>().unwrap()
    );
    let vms: Vec<VmInfo> = c.get("/v1/vms").unwrap();
    assert_eq!(vms.len(), 2, "one fork");
    for (path, body) in [
        ("/v1/vms/a/fork", json!({"name": "c"})),
        ("/v1/vms/b/fork", json!({"name": "b"})),
        ("/v1/vms/a/snapshots", json!({"name": "b"})),
    ] {
        let r = post(&c, path, &key, body);
        assert_eq!(
            (r.status, error_of(&r).error.code.as_str()),
            (409, "conflict"),
            "{path}"
        );
    }
    // Without a key, a second fork of the same name is refused.
    let dup = post(&c, "/v1/vms/a/fork", &[], json!({"name": "b"}));
    assert_eq!(dup.status, 409);
    drop(s);
}

#[test]
fn wait_answers_or_times_out() {
    let (_d, s, c) = server();
    create(&c, "a");
    let r = c
        .request(
            Method::GET,
            "/v1/vms/a/wait?state=running&timeout=1s",
            &[],
            None,
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let r = c
        .request(
            Method::GET,
            "/v1/vms/a/wait?state=stopped&timeout=100ms",
            &[],
            None,
        )
        .unwrap();
    assert_eq!(
        (r.status, error_of(&r).error.code.as_str()),
        (408, "timeout")
    );
    for (query, param) in [
        ("state=stopped&timeout=soon", "`timeout`"),
        ("state=stopped&timeout=11m", "`timeout`"),
        ("timeout=1s", "`state`"),
        ("state=sleeping", "`state`"),
    ] {
        let r = c
            .request(Method::GET, format!("/v1/vms/a/wait?{query}"), &[], None)
            .unwrap();
        assert_eq!(r.status, 400, "{query}");
        assert!(error_of(&r).error.message.contains(param), "{query}");
    }
    // A waiter answers when the state comes.
    let waiter = {
        let c = c.clone();
        std::thread::spawn(move || {
            c.request(
                Method::GET,
                "/v1/vms/a/wait?state=crashed&timeout=20s",
                &[],
                None,
            )
        })
    };
    // Change the state only once the long poll is waiting, so the waiting path is what
    // answers (not an already-reached state).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while futures::executor::block_on(s.supervisor.send(CountWaits)).unwrap() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the wait never reached the supervisor"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    futures::executor::block_on(s.supervisor.send(ForceState {
        name: "a".into(),
        state: VmState::Crashed,
    }))
    .unwrap()
    .unwrap();
    let r = waiter.join().unwrap().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json::<VmInfo>().unwrap().state, VmState::Crashed);
}

#[test]
fn event_stream_replays_then_follows_and_resumes() {
    let (_d, s, c) = server();
    create(&c, "a"); // events 1 (creating), 2 (running)
    create(&c, "b"); // events 3, 4
    let page: Vec<Event> = c.get("/v1/events?since=1&limit=2").unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
    let r = c
        .request(Method::GET, "/v1/events?limit=0", &[], None)
        .unwrap();
    assert_eq!(r.status, 400);

    let stream = c
        .stream(Method::GET, "/v1/events/stream?since=2", &[], None)
        .unwrap();
    assert_eq!(stream.status, 200);
    assert!(stream
        .headers
        .iter()
        .any(|(k, v)| k == "content-type" && v.starts_with("text/event-stream")));
    let mut events = SseReader::new(stream.body);
    let mut next = || {
        let e = events.next().unwrap().unwrap();
        let parsed: Event = serde_json::from_str(&e.data).unwrap();
        assert_eq!(e.id, Some(parsed.seq.to_string()));
        parsed
    };
    assert_eq!((next().seq, next().seq), (3, 4));
    // Live events follow the replay.
    let c2 = c.clone();
    std::thread::spawn(move || create(&c2, "c")).join().unwrap();
    let live = next();
    assert_eq!(
        (live.seq, live.vm.as_str(), live.state),
        (5, "c", VmState::Creating)
    );
    assert_eq!(next().seq, 6);

    // A reconnecting client resumes from Last-Event-ID (it wins over ?since=).
    let stream = c
        .stream(
            Method::GET,
            "/v1/events/stream?since=0",
            &[("Last-Event-ID", "5")],
            None,
        )
        .unwrap();
    let mut events = SseReader::new(stream.body);
    let e = events.next().unwrap().unwrap();
    assert_eq!(e.id.as_deref(), Some("6"));
    let r = c
        .request(
            Method::GET,
            "/v1/events/stream",
            &[("Last-Event-ID", "x")],
            None,
        )
        .unwrap();
    assert_eq!(r.status, 400);
    // Stopping the server ends open streams cleanly (they do not hold up the shutdown).
    drop(s);
    assert!(events.next().is_none());
}

#[test]
fn metrics_are_prometheus_text() {
    let (_d, _s, c) = server();
    create(&c, "a");
    let r = c.request(Method::GET, "/metrics", &[], None).unwrap();
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.contains("# TYPE hearth_vms gauge\n"), "{text}");
    assert!(text.contains("hearth_vms{state=\"running\"} 1\n"), "{text}");
    assert!(text.contains("# TYPE hearth_create_phase_seconds histogram\n"));
    assert!(text.contains("hearth_create_phase_seconds_bucket{phase=\"create\",le=\"+Inf\"} 1\n"));
    assert!(text.contains("hearth_errors_total{op=\"create\"} 0\n"));
}

#[test]
fn openapi_lists_exactly_the_served_routes() {
    let (_d, _s, c) = server();
    let doc: serde_json::Value = c.get("/v1/openapi.json").unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut registered: Vec<(String, String)> = hearth::api::routes::registered()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_owned()))
        .collect();
    registered.sort();
    assert_eq!(openapi::operations(&doc), registered);
    // Every documented operation is routed (never the 404/405 fallbacks).
    for (method, path) in registered {
        if path.ends_with("/stream") {
            continue; // never ends; covered by the stream test
        }
        let path = path.replace("{name}", "nope");
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let r = c.request(m, &path, &[], None).unwrap();
        // HEAD answers carry no body to read a code from.
        let code = if r.status >= 400 && method != "HEAD" {
            error_of(&r).error.code
        } else {
            String::new()
        };
        assert!(
            !matches!(code.as_str(), "no_route" | "method_not_allowed"),
            "{method} {path}: {code}"
        );
    }
}

#[test]
fn unix_socket_mode_stale_and_live_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    // A stale socket (nobody listening) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let s = TestServer::start(dir.path(), |c| c.socket = path.clone()).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let _: Health = Client::new(&path).get("/v1/health").unwrap();
    // A second server refuses the live socket and leaves it alone.
    let other = tempfile::tempdir().unwrap();
    let err = TestServer::start(other.path(), |c| c.socket = path.clone())
        .err()
        .unwrap();
    assert!(matches!(err, ApiServerError::SocketInUse { .. }), "{err}");
    let _: Health = Client::new(&path).get("/v1/health").unwrap();
    drop(s);
    assert!(!path.exists(), "the socket is removed on stop");
}

fn tcp_request(addr: std::net::SocketAddr, auth: Option<&str>) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n"
    )
    .unwrap();
    let mut r = std::io::BufReader::new(s);
    let mut out = String::new();
    r.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let _ = r.fill_buf();
    (status, out)
}

#[test]
fn tcp_listener_requires_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let err = TestServer::start(dir.path(), |c| c.tcp = Some("127.0.0.1:0".parse().unwrap()))
        .err()
        .unwrap();
    assert!(matches!(err, ApiServerError::NoToken { .. }), "{err}");
    assert!(
        !dir.path().join("hearthd.sock").exists(),
        "nothing left behind"
    );
    let err = TestServer::start(dir.path(), |c| {
        c.tcp = Some("127.0.0.1:0".parse().unwrap());
        c.token = Some("  ".into());
    })
    .err()
    .unwrap();
    assert!(matches!(err, ApiServerError::NoToken { .. }), "{err}");

    let s = TestServer::start(dir.path(), |c| {
        c.tcp = Some("127.0.0.1:0".parse().unwrap());
        c.token = Some("s3cret-token".into());
    })
    .unwrap();
    let addr = s.tcp.unwrap();
    let (status, out) = tcp_request(addr, None);
    assert_eq!(status, 401);
    assert!(out.contains("\"unauthorized\""), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{out}"
    );
    assert_eq!(tcp_request(addr, Some("Bearer wrong")).0, 401);
    assert_eq!(tcp_request(addr, Some("Basic czNjcmV0LXRva2Vu")).0, 401);
    assert_eq!(tcp_request(addr, Some("Bearer s3cret-token")).0, 200);
    // The Unix socket needs no token.
    let _: Health = Client::new(&s.socket).get("/v1/health").unwrap();
}

#[test]
fn socket_group_by_name_or_gid() {
    use std::os::unix::fs::MetadataExt;
    // As root, a group the process is not in (daemon, gid 1); otherwise the process's own.
    let gid = if nix::unistd::geteuid().is_root() {
        1
    } else {
        nix::unistd::getegid().as_raw()
    };
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), |c| c.socket_group = Some(gid.to_string())).unwrap();
    assert_eq!(std::fs::metadata(&s.socket).unwrap().gid(), gid);
    drop(s);
    if let Ok(Some(group)) = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
        let s =
            TestServer::start(dir.path(), |c| c.socket_group = Some(group.name.clone())).unwrap();
        assert_eq!(std::fs::metadata(&s.socket).unwrap().gid(), gid);
    }
    let err = TestServer::start(dir.path(), |c| {
        c.socket_group = Some("no-such-group-hearth".into());
    })
    .err()
    .unwrap();
    assert!(matches!(err, ApiServerError::UnknownGroup { .. }), "{err}");
    assert!(
        !dir.path().join("hearthd.sock").exists(),
        "nothing left behind"
    );
}
