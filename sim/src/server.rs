//! The API server: one thread accepting on the API socket, one thread per connection (at most
//! [`MAX_CONNECTIONS`], like micro-http; more get 503), each sending parsed actions to the VMM
//! thread and waiting for its answer, so API calls are synchronous as in Firecracker.

use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use crate::api::{self, Action};
use crate::http::{write_response, HttpError, Request, RequestReader, Response};

/// micro-http's connection limit.
pub const MAX_CONNECTIONS: usize = 10;

/// One API call for the VMM thread.
#[derive(Debug)]
pub struct VmmRequest {
    /// What to do.
    pub action: Action,
    /// How Firecracker describes the request in its log
    /// (`Put request on "/drives/rootfs" with body "{...}"`).
    pub describe: String,
    /// Where to send the response.
    pub reply: mpsc::Sender<Response>,
    /// Ends (a message or a hang-up) once the response was written or the connection is gone:
    /// a VMM about to exit (a failed snapshot load) waits on it, so the client gets the
    /// answer first, as from Firecracker.
    pub written: mpsc::Receiver<()>,
}

/// Firecracker's description of a request for its log (`parsed_request.rs` `describe`).
pub fn describe(req: &Request) -> String {
    let mut method = req.method.to_ascii_lowercase();
    if let Some(first) = method.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    match &req.body {
        None => format!("{method} request on {:?}", req.path),
        Some(body) => format!(
            "{method} request on {:?} with body {:?}",
            req.path,
            String::from_utf8_lossy(body)
        ),
    }
}

/// The text Firecracker logs when the API socket cannot be bound.
pub fn bind_error_message(path: &str) -> String {
    format!("Failed to open the API socket at: {path}. Check that it is not already used.")
}

/// Binds the API socket. Like Firecracker, an existing file at `path` is an error
/// (`AddrInUse`) and is never removed.
pub fn bind(path: &str) -> io::Result<UnixListener> {
    UnixListener::bind(path)
}

/// Serves the API on `listener` from a thread of its own.
pub fn spawn(listener: UnixListener, vmm: mpsc::Sender<VmmRequest>, api_delay: Duration) {
    let open = Arc::new(AtomicUsize::new(0));
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut stream) = conn else { continue };
            if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                open.fetch_sub(1, Ordering::SeqCst);
                // Read the request first, so a client that writes before reading sees the
                // 503 rather than a broken pipe.
                thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                    if let Ok(reader) = stream.try_clone() {
                        let _ = RequestReader::new(reader).next_request();
                    }
                    let _ = write_response(
                        &mut stream,
                        &Response::fault(503, "Too many open connections."),
                    );
                });
                continue;
            }
            let (vmm, open) = (vmm.clone(), open.clone());
            thread::spawn(move || {
                serve_connection(stream, &vmm, api_delay);
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
}

fn serve_connection(stream: UnixStream, vmm: &mpsc::Sender<VmmRequest>, api_delay: Duration) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = RequestReader::new(stream);
    loop {
        let req = match reader.next_request() {
            Ok(req) => req,
            Err(HttpError::Malformed { reason }) => {
                let _ = write_response(&mut writer, &Response::fault(400, &reason));
                return;
            }
            Err(HttpError::Closed | HttpError::Io { .. }) => return,
        };
        if !api_delay.is_zero() {
            thread::sleep(api_delay);
        }
        // Rejected requests go to the VMM thread too, which owns the log.
        let action = api::parse(&req).unwrap_or_else(Action::Rejected);
        let (reply, rx) = mpsc::channel();
        let (written_tx, written) = mpsc::channel();
        let call = VmmRequest {
            action,
            describe: describe(&req),
            reply,
            written,
        };
        if vmm.send(call).is_err() {
            return;
        }
        let Ok(resp) = rx.recv() else { return };
        let ok = write_response(&mut writer, &resp).is_ok();
        let _ = written_tx.send(());
        if !ok || req.close {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_requests_like_firecracker() {
        let mut req = Request {
            method: "PUT".into(),
            path: "/actions".into(),
            body: Some(br#"{"action_type":"InstanceStart"}"#.to_vec()),
            close: false,
        };
        assert_eq!(
            describe(&req),
            r#"Put request on "/actions" with body "{\"action_type\":\"InstanceStart\"}""#
        );
        req.method = "GET".into();
        req.body = None;
        assert_eq!(describe(&req), r#"Get request on "/actions""#);
    }
}
