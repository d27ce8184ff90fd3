use super::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

/// Reads one request (head up to the blank line, then `Content-Length` bytes); `None` at EOF.
async fn read_request(conn: &mut BufReader<UnixStream>) -> Option<String> {
    let mut req = String::new();
    let mut len = 0;
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line).await.unwrap() == 0 {
            return None;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap();
            }
        }
        req.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; len];
    conn.read_exact(&mut body).await.unwrap();
    req.push_str(std::str::from_utf8(&body).unwrap());
    Some(req)
}

/// A canned server: answers each request with the next canned response, on one connection.
async fn serve(listener: UnixListener, responses: Vec<&'static str>) -> Vec<String> {
    let (stream, _) = listener.accept().await.unwrap();
    let mut conn = BufReader::new(stream);
    let mut seen = Vec::new();
    for resp in responses {
        seen.push(read_request(&mut conn).await.unwrap());
        conn.get_mut().write_all(resp.as_bytes()).await.unwrap();
    }
    seen
}

fn socket() -> (tempfile::TempDir, PathBuf, UnixListener) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    (dir, sock, listener)
}

#[actix::test]
async fn keep_alive_and_faults() {
    let (_dir, sock, listener) = socket();
    let server = tokio::spawn(serve(
        listener,
        vec![
            "HTTP/1.1 204 No Content\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 27\r\n\r\n{\"fault_message\":\"No way.\"}",
            "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{\"a\":\"b c\"}\n",
        ],
    ));
    let mut client = ApiClient::new(&sock);
    client
        .put(Endpoint::Vsock, &serde_json::json!({"x": 1}))
        .await
        .unwrap();
    match client
        .put(Endpoint::Drive("a"), &serde_json::json!({}))
        .await
    {
        Err(FirecrackerError::Api {
            method,
            uri,
            status,
            fault_message,
        }) => assert_eq!(
            (method, uri.as_str(), status, fault_message.as_str()),
            (Method::PUT, "/drives/a", 400, "No way.")
        ),
        other => panic!("unexpected {other:?}"),
    }
    let v: serde_json::Value = client.get(Endpoint::Instance).await.unwrap();
    assert_eq!(v["a"], "b c");
    // All three on the one connection `serve` accepted.
    let seen = server.await.unwrap();
    assert!(
        seen[0].starts_with("PUT /vsock HTTP/1.1\r\n"),
        "{}",
        seen[0]
    );
    assert!(seen[0].ends_with("\r\n\r\n{\"x\":1}"), "{}", seen[0]);
    assert!(seen[2].starts_with("GET / HTTP/1.1\r\n"), "{}", seen[2]);
}

#[actix::test]
async fn reconnects_after_firecracker_closes_the_connection() {
    let (_dir, sock, listener) = socket();
    let server = tokio::spawn(async move {
        for _ in 0..2 {
            let (stream, _) = listener.accept().await.unwrap();
            let mut conn = BufReader::new(stream);
            read_request(&mut conn).await.unwrap();
            conn.get_mut()
                .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
        }
    });
    let mut client = ApiClient::new(&sock);
    let body = serde_json::json!({});
    client.put(Endpoint::Actions, &body).await.unwrap();
    // Let the connection task see the close (it runs on this thread).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !matches!(&client.conn, Conn::Http(s) if s.is_closed()) {
        assert!(Instant::now() < deadline, "the close was never seen");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    client.put(Endpoint::Actions, &body).await.unwrap();
    server.await.unwrap();
}

/// Answers the first request with `head` and then `body_bytes` bytes of `x`, slowly enough
/// that a client reading without a bound would have buffered them all.
async fn serve_large(listener: UnixListener, head: &'static str, body_bytes: usize) -> usize {
    let (stream, _) = listener.accept().await.unwrap();
    let mut conn = BufReader::new(stream);
    read_request(&mut conn).await.unwrap();
    conn.get_mut().write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    while sent < body_bytes {
        let n = chunk.len().min(body_bytes - sent);
        let framed = if head.contains("chunked") {
            [format!("{n:x}\r\n").as_bytes(), &chunk[..n], b"\r\n"].concat()
        } else {
            chunk[..n].to_vec()
        };
        if conn.get_mut().write_all(&framed).await.is_err() {
            break; // the client hung up: what a bounded reader does
        }
        sent += n;
    }
    sent
}

#[actix::test]
async fn refuses_a_declared_oversized_body_without_reading_it() {
    let (_dir, sock, listener) = socket();
    let head = "HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n";
    let server = tokio::spawn(serve_large(listener, head, 1 << 30));
    let err = ApiClient::new(&sock)
        .get::<serde_json::Value>(Endpoint::Instance)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FirecrackerError::ApiProtocol { detail, .. } if detail.contains("larger than")),
        "{err}"
    );
    let sent = server.await.unwrap();
    assert!(sent < 1 << 30, "the server sent everything: {sent} bytes");
}

#[actix::test]
async fn stops_reading_an_unframed_body_at_the_limit() {
    let (_dir, sock, listener) = socket();
    let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    let server = tokio::spawn(serve_large(listener, head, 64 << 20));
    let err = ApiClient::new(&sock)
        .get::<serde_json::Value>(Endpoint::Instance)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FirecrackerError::ApiProtocol { detail, .. } if detail.contains("larger than")),
        "{err}"
    );
    let sent = server.await.unwrap();
    assert!(sent < 64 << 20, "the server sent everything: {sent} bytes");
}

#[actix::test]
async fn a_garbage_answer_is_a_protocol_error() {
    let (_dir, sock, listener) = socket();
    let server = tokio::spawn(serve(listener, vec!["SSH-2.0-OpenSSH_9.6\r\n\r\n"]));
    let err = ApiClient::new(&sock)
        .put(Endpoint::Actions, &serde_json::json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, FirecrackerError::ApiProtocol { .. }),
        "{err:?}"
    );
    server.await.unwrap();
}

#[actix::test]
async fn refuses_an_endless_header() {
    let (_dir, sock, listener) = socket();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut conn = BufReader::new(stream);
        read_request(&mut conn).await.unwrap();
        conn.get_mut()
            .write_all(b"HTTP/1.1 200 OK\r\nX-Long: ")
            .await
            .unwrap();
        let chunk = vec![b'a'; 64 * 1024];
        let mut sent = 0usize;
        while sent < 64 << 20 && conn.get_mut().write_all(&chunk).await.is_ok() {
            sent += chunk.len();
        }
        sent
    });
    let err = ApiClient::new(&sock)
        .get::<serde_json::Value>(Endpoint::Instance)
        .await
        .unwrap_err();
    assert!(
        matches!(err, FirecrackerError::ApiProtocol { .. }),
        "{err:?}"
    );
    let sent = server.await.unwrap();
    assert!(sent < 64 << 20, "the server sent everything: {sent} bytes");
}

#[test]
fn endpoint_paths() {
    assert_eq!(Endpoint::Instance.path().unwrap(), "/");
    assert_eq!(Endpoint::Drive("rootfs").path().unwrap(), "/drives/rootfs");
    assert_eq!(
        Endpoint::NetworkInterface("eth_0").path().unwrap(),
        "/network-interfaces/eth_0"
    );
    for bad in ["", "../actions", "a b", "a?b", "é"] {
        assert!(
            matches!(
                Endpoint::Drive(bad).path(),
                Err(FirecrackerError::InvalidConfig { .. })
            ),
            "{bad:?}"
        );
    }
}

#[actix::test]
async fn a_bad_device_id_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // No listener: a request that got as far as connecting would fail with ApiIo.
    let mut client = ApiClient::new(&dir.path().join("none.sock"));
    let err = client
        .put(Endpoint::Drive("../actions"), &serde_json::json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, FirecrackerError::InvalidConfig { .. }),
        "{err:?}"
    );
}

#[actix::test]
async fn socket_wait_times_out_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let err = wait_for_socket(&sock, Duration::from_millis(20), || None)
        .await
        .unwrap_err();
    assert!(matches!(err, FirecrackerError::ApiSocketTimeout { .. }));
}
