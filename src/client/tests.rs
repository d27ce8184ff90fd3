use super::*;
use std::io::Write;
use std::os::unix::net::UnixListener;
use std::sync::mpsc;
use std::time::Duration;

/// A one-shot server on a fresh socket: reads the request head, then runs `answer` on the
/// connection; returns the client and the request head it saw.
fn serve(
    answer: impl FnOnce(&mut std::os::unix::net::UnixStream) + Send + 'static,
) -> (tempfile::TempDir, Client, std::thread::JoinHandle<String>) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("hearthd.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut r = BufReader::new(conn.try_clone().unwrap());
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        answer(&mut conn);
        head
    });
    (dir, Client::new(sock), server)
}

#[test]
fn sends_typed_requests_and_reads_answers() {
    let (_d, c, server) = serve(|conn| {
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b c\r\n\r\n[]")
            .unwrap();
    });
    let path = ApiPath::new("/v1/vms")
        .segment("a b/c")
        .query("label", "role=web");
    let r = c
        .request(Method::DELETE, path, &[("Idempotency-Key", "k1")], None)
        .unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"[]"[..]));
    assert_eq!(r.header("x-a"), Some("b c"));
    let head = server.join().unwrap().to_ascii_lowercase();
    assert!(
        head.starts_with("delete /v1/vms/a%20b%2fc?label=role%3dweb http/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("idempotency-key: k1\r\n"), "{head}");
    assert!(head.contains("connection: close\r\n"), "{head}");
}

#[test]
fn bad_paths_and_headers_are_refused_before_connecting() {
    // No server: getting as far as connecting would be NotRunning.
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new(dir.path().join("none.sock"));
    for path in ["v1/vms", "/v1/a b", "http://x/v1"] {
        let e = c.request(Method::GET, path, &[], None).unwrap_err();
        assert!(matches!(e, ClientError::InvalidRequest(_)), "{path}: {e}");
    }
    let e = c
        .request(Method::GET, "/v1/vms", &[("X-A", "a\r\nb")], None)
        .unwrap_err();
    assert!(matches!(e, ClientError::InvalidRequest(_)), "{e}");
}

#[test]
fn refuses_a_declared_oversized_answer() {
    let (_d, c, server) = serve(|conn| {
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", 1u64 << 40);
        let _ = conn.write_all(head.as_bytes());
    });
    let e = c.request(Method::GET, "/v1/vms", &[], None).unwrap_err();
    assert!(
        matches!(e, ClientError::TooLarge { limit: MAX_BODY }),
        "{e}"
    );
    server.join().unwrap();
}

#[test]
fn stops_reading_an_endless_answer_at_the_limit() {
    let (tx, rx) = mpsc::channel();
    let (_d, c, server) = serve(move |conn| {
        conn.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        let chunk = [
            format!("{:x}\r\n", 1 << 16).into_bytes(),
            vec![b'x'; 1 << 16],
            b"\r\n".to_vec(),
        ]
        .concat();
        let mut sent = 0usize;
        // Ten times the limit, unless the client hangs up first.
        while sent < 10 * MAX_BODY && conn.write_all(&chunk).is_ok() {
            sent += 1 << 16;
        }
        tx.send(sent).unwrap();
    });
    let e = c.request(Method::GET, "/v1/vms", &[], None).unwrap_err();
    assert!(matches!(e, ClientError::TooLarge { .. }), "{e}");
    drop(c);
    let sent = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(sent < 10 * MAX_BODY, "the server sent all {sent} bytes");
    server.join().unwrap();
}

#[test]
fn streams_events_as_they_arrive() {
    let (go_on, wait) = mpsc::channel::<()>();
    let (_d, c, server) = serve(move |conn| {
        conn.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n\
              11\r\nid: 1\ndata: one\n\n\r\n",
        )
        .unwrap();
        // The second event only after the client has read the first: a client that waited
        // for the whole body would hang here.
        wait.recv().unwrap();
        conn.write_all(b"11\r\nid: 2\ndata: two\n\n\r\n0\r\n\r\n")
            .unwrap();
    });
    let s = c
        .stream(Method::GET, "/v1/events/stream", &[], None)
        .unwrap();
    assert_eq!(s.status, 200);
    let mut events = SseReader::new(s.body);
    assert_eq!(events.next().unwrap().unwrap().data, "one");
    go_on.send(()).unwrap();
    assert_eq!(events.next().unwrap().unwrap().id.as_deref(), Some("2"));
    assert!(events.next().is_none());
    server.join().unwrap();
}

#[test]
fn a_garbage_answer_is_a_protocol_error() {
    let (_d, c, server) = serve(|conn| {
        conn.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").unwrap();
    });
    let e = c.request(Method::GET, "/v1/health", &[], None).unwrap_err();
    assert!(matches!(e, ClientError::Protocol(_)), "{e:?}");
    assert!(
        e.to_string().starts_with("Malformed answer from hearthd"),
        "{e}"
    );
    server.join().unwrap();
}

#[test]
fn a_hang_up_before_the_answer_is_an_io_error() {
    let (_d, c, server) = serve(|_| {});
    let e = c.request(Method::GET, "/v1/health", &[], None).unwrap_err();
    assert!(matches!(e, ClientError::Io(_)), "{e:?}");
    server.join().unwrap();
}

#[test]
fn lines_are_bounded() {
    let long = "x".repeat(MAX_LINE + 1);
    let raw = format!("{{\"a\":1}}\r\n{long}\n");
    let mut lines = BoundedLines::new(raw.as_bytes());
    assert_eq!(lines.next().unwrap().unwrap(), "{\"a\":1}");
    assert_eq!(
        lines.next().unwrap().unwrap_err().kind(),
        io::ErrorKind::InvalidData
    );
    let sse = format!("data: {long}\n\n");
    assert!(SseReader::new(sse.as_bytes()).next().unwrap().is_err());
    let half = "y".repeat(MAX_LINE / 2 + 1);
    let sse = format!("data: {half}\ndata: {half}\n\n");
    assert!(SseReader::new(sse.as_bytes()).next().unwrap().is_err());
}

#[test]
fn paths_encode_their_parts() {
    assert_eq!(
        ApiPath::new("/v1/vms")
            .segment("a")
            .segment("wait")
            .query("state", "running")
            .query("timeout", "30s")
            .as_str(),
        "/v1/vms/a/wait?state=running&timeout=30s"
    );
    assert_eq!(encode("role=web x/y"), "role%3Dweb%20x%2Fy");
    assert_eq!(encode("é"), "%C3%A9");
}

#[test]
fn splits_sse() {
    let raw = ": hi\n\nid: 1\ndata: {\"a\":1}\n\nid: 2\ndata: x\ndata: y\n\n: keepalive\n\n";
    let events: Vec<_> = SseReader::new(raw.as_bytes()).map(Result::unwrap).collect();
    assert_eq!(
        events,
        [
            SseEvent {
                id: Some("1".into()),
                data: "{\"a\":1}".into()
            },
            SseEvent {
                id: Some("2".into()),
                data: "x\ny".into()
            }
        ]
    );
}

#[test]
fn error_bodies_become_api_errors() {
    let r = Response {
        status: 404,
        headers: vec![],
        body: br#"{"error":{"code":"not_found","message":"No VM named \"a\""}}"#.to_vec(),
    };
    match r.ok().unwrap_err() {
        ClientError::Api { status, code, .. } => {
            assert_eq!((status, code.as_str()), (404, "not_found"));
        }
        e => panic!("{e}"),
    }
}

#[test]
fn missing_socket_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new(dir.path().join("none.sock"));
    let e = c.request(Method::GET, "/v1/health", &[], None).unwrap_err();
    assert!(e.is_unreachable());
    assert!(
        e.to_string()
            .starts_with("hearthd is not running (no socket at "),
        "{e}"
    );
}
