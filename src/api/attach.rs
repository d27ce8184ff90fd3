//! `GET /v1/vms/{name}/execs/{id}/attach`: a WebSocket speaking Kubernetes' exec framing
//! (`v5.channel.k8s.io`), proxied to the agent's session stream.
//!
//! The request is checked (a WebSocket upgrade offering the subprotocol, a valid id and
//! query) and the agent attached *before* the upgrade, so an unknown VM, a stopped VM or an
//! unknown session answer with their usual HTTP error. Then one task pumps both ways:
//!
//! - agent -> client: `STDOUT`/`STDERR` frames become binary messages `[1|2][bytes]`; `EXIT`
//!   becomes a Kubernetes `Status` on channel 3 and a normal close; an agent `ERROR`, a frame
//!   that breaks the protocol, or the agent going away becomes a `Status` `InternalError`,
//!   then a close. hearthd itself is never affected.
//! - client -> agent: channel 0 becomes `STDIN` frames (at most 64 KiB each), 4 a `RESIZE`
//!   (JSON `{"Width","Height"}`), 255 with payload `[0]` a `STDIN_EOF`; anything else closes
//!   the WebSocket with a protocol error. A client that goes away detaches: the session keeps
//!   running in the agent, its output kept for the next attach.
//!
//! Backpressure both ways: each send is awaited before the next frame or message is read, and
//! incoming messages are bounded ([`MAX_MESSAGE`]).

use actix_web::http::header::{self, HeaderValue};
use actix_web::web::{Data, Path, Payload};
use actix_web::{HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Session};
use futures::future::{select, Either};
use hearth_actors::guest::{FrameReader, FrameWriter, OpenStream, Opened};
use hearth_proto::agent::frame::{Frame, FrameKind};
use hearth_proto::agent::{AttachRequest, ExecInfo, ExitStatus, Request, WindowSize};
use hearth_proto::api_exec::{channel, Status, TerminalSize, SUBPROTOCOL};
use slog::{debug, warn};

use super::exec::{session_id, ExecApi};
use super::query::Params;
use super::{ApiError, ApiState};

/// The largest WebSocket message accepted from a client (1 MiB; stdin is forwarded in
/// 64 KiB frames).
pub const MAX_MESSAGE: usize = 1 << 20;

/// `GET .../execs/{id}/attach?stdin=true|false`.
///
/// # Errors
///
/// The request's [`ApiError`], rendered as its status and JSON body.
pub async fn attach(
    exec: Data<ExecApi>,
    state: Data<ApiState>,
    req: HttpRequest,
    path: Path<(String, String)>,
    body: Payload,
) -> Result<HttpResponse, ApiError> {
    let params = Params::parse(req.query_string(), &["stdin"])?;
    let stdin = match params.get("stdin") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::InvalidParam {
                param: "stdin".into(),
                reason: format!("{other:?} is not true or false"),
            })
        }
    };
    let (name, id) = path.into_inner();
    let id = session_id(&id)?;
    check_upgrade(&req)?;
    let opened: Opened<ExecInfo> = exec
        .guest
        .send(OpenStream::new(
            name.clone(),
            Request::Attach(AttachRequest {
                id: id.clone(),
                stdin,
            }),
        ))
        .await??;
    let (mut response, session, messages) =
        actix_ws::handle(&req, body).map_err(|e| ApiError::InvalidParam {
            param: "Upgrade".into(),
            reason: e.to_string(),
        })?;
    response.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOL),
    );
    let messages = messages
        .max_frame_size(MAX_MESSAGE)
        .aggregate_continuations()
        .max_continuation_size(MAX_MESSAGE);
    let log = state
        .log
        .new(slog::o!("vm" => name, "session" => id.to_string()));
    let (reader, writer) = opened.stream.into_split();
    actix_web::rt::spawn(pump(reader, writer, session, messages, log));
    Ok(response)
}

fn bad_upgrade(reason: &str) -> ApiError {
    ApiError::InvalidParam {
        param: "Upgrade".into(),
        reason: format!("{reason} (attach is a WebSocket endpoint, subprotocol {SUBPROTOCOL})"),
    }
}

fn header_has(req: &HttpRequest, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Refuses a request that is not a WebSocket upgrade offering [`SUBPROTOCOL`], before the
/// agent is touched (attaching takes the session over from another client).
fn check_upgrade(req: &HttpRequest) -> Result<(), ApiError> {
    if !header_has(req, header::UPGRADE, "websocket") {
        return Err(bad_upgrade("not a WebSocket upgrade request"));
    }
    if !header_has(req, header::CONNECTION, "upgrade") {
        return Err(bad_upgrade("`Connection: upgrade` is missing"));
    }
    if req.headers().get(header::SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13")) {
        return Err(bad_upgrade("`Sec-WebSocket-Version: 13` is missing"));
    }
    if req.headers().get(header::SEC_WEBSOCKET_KEY).is_none() {
        return Err(bad_upgrade("`Sec-WebSocket-Key` is missing"));
    }
    if !header_has(req, header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL) {
        return Err(bad_upgrade("the client does not offer the subprotocol"));
    }
    Ok(())
}

/// How the agent side of a session ended.
enum AgentEnd {
    /// The process exited.
    Exit(ExitStatus),
    /// The stream failed or the agent broke the protocol.
    Failed(String),
    /// The client went away while output was being sent.
    ClientGone,
}

/// How the client side ended.
enum ClientEnd {
    /// The client closed (or dropped) the WebSocket: detach.
    Closed,
    /// The client broke the framing.
    Violation(String),
    /// Writing to the agent failed.
    AgentGone(String),
}

async fn pump(
    reader: FrameReader,
    writer: FrameWriter,
    session: Session,
    messages: AggregatedMessageStream,
    log: slog::Logger,
) {
    let out = Box::pin(agent_to_client(reader, session.clone()));
    let inp = Box::pin(client_to_agent(messages, writer, session.clone()));
    match select(out, inp).await {
        Either::Left((end, _)) => {
            let status = match end {
                AgentEnd::Exit(exit) => Status::from_exit(&exit),
                AgentEnd::Failed(reason) => {
                    warn!(log, "session stream failed"; "error" => &reason);
                    Status::internal_error(reason)
                }
                AgentEnd::ClientGone => return,
            };
            send_status(session, &status).await;
        }
        Either::Right((end, _)) => match end {
            ClientEnd::Closed => {
                debug!(log, "client detached");
                let _ = session.close(None).await;
            }
            ClientEnd::Violation(reason) => {
                debug!(log, "client broke the framing"; "error" => &reason);
                let _ = session
                    .close(Some(CloseReason {
                        code: CloseCode::Protocol,
                        description: Some(reason),
                    }))
                    .await;
            }
            ClientEnd::AgentGone(reason) => {
                warn!(log, "session stream failed"; "error" => &reason);
                send_status(session, &Status::internal_error(reason)).await;
            }
        },
    }
}

async fn send_status(mut session: Session, status: &Status) {
    let mut msg = vec![channel::STATUS];
    // A plain struct of strings: serialising cannot fail.
    msg.extend(serde_json::to_vec(status).unwrap_or_default());
    if session.binary(msg).await.is_ok() {
        let _ = session
            .close(Some(CloseReason {
                code: CloseCode::Normal,
                description: None,
            }))
            .await;
    }
}

async fn agent_to_client(mut reader: FrameReader, mut session: Session) -> AgentEnd {
    loop {
        let frame = match reader.next().await {
            Ok(Some(f)) => f,
            Ok(None) => return AgentEnd::Failed("the agent closed the session stream".into()),
            Err(e) => return AgentEnd::Failed(e.to_string()),
        };
        let ch = match frame.kind {
            FrameKind::Stdout => channel::STDOUT,
            FrameKind::Stderr => channel::STDERR,
            FrameKind::Exit => {
                return match frame.as_exit() {
                    Ok(exit) => AgentEnd::Exit(exit),
                    Err(e) => AgentEnd::Failed(format!("The agent broke the protocol: {e}")),
                }
            }
            FrameKind::Error => {
                return AgentEnd::Failed(match frame.as_error() {
                    Ok(e) => format!("The agent failed: {}: {}", e.code, e.message),
                    Err(e) => format!("The agent broke the protocol: {e}"),
                })
            }
            other => {
                return AgentEnd::Failed(format!(
                    "The agent broke the protocol: unexpected {other:?} frame in a session"
                ))
            }
        };
        let mut msg = Vec::with_capacity(1 + frame.payload.len());
        msg.push(ch);
        msg.extend_from_slice(&frame.payload);
        if session.binary(msg).await.is_err() {
            return AgentEnd::ClientGone;
        }
    }
}

/// Turns one client message into the frame for the agent, or a framing violation.
fn client_frame(msg: &[u8]) -> Result<Option<Frame>, String> {
    let Some((&ch, data)) = msg.split_first() else {
        return Err("empty message (no channel byte)".into());
    };
    match ch {
        channel::STDIN => Ok(Some(Frame::new(FrameKind::Stdin, data.to_vec()))),
        channel::RESIZE => {
            let size: TerminalSize = serde_json::from_slice(data)
                .map_err(|e| format!("resize payload is not {{\"Width\",\"Height\"}}: {e}"))?;
            if size.width == 0 || size.height == 0 {
                return Err(format!("resize to {}x{}", size.width, size.height));
            }
            Ok(Some(Frame::resize(WindowSize {
                rows: size.height,
                cols: size.width,
            })))
        }
        channel::CLOSE if data == [channel::STDIN] => Ok(Some(Frame::empty(FrameKind::StdinEof))),
        channel::CLOSE => Err("only channel 0 (stdin) can be closed".into()),
        other => Err(format!("channel {other} cannot be written by a client")),
    }
}

async fn client_to_agent(
    mut messages: AggregatedMessageStream,
    mut writer: FrameWriter,
    mut session: Session,
) -> ClientEnd {
    while let Some(msg) = messages.recv().await {
        match msg {
            Ok(AggregatedMessage::Binary(bytes)) => match client_frame(&bytes) {
                Ok(Some(frame)) => {
                    let sent = if frame.kind == FrameKind::Stdin {
                        writer.send_chunked(FrameKind::Stdin, &frame.payload).await
                    } else {
                        writer.send(&frame).await
                    };
                    if let Err(e) = sent {
                        return ClientEnd::AgentGone(e.to_string());
                    }
                }
                Ok(None) => {}
                Err(reason) => return ClientEnd::Violation(reason),
            },
            Ok(AggregatedMessage::Text(_)) => {
                return ClientEnd::Violation(format!(
                    "text messages are not part of {SUBPROTOCOL}: send binary ones"
                ))
            }
            Ok(AggregatedMessage::Ping(p)) => {
                if session.pong(&p).await.is_err() {
                    return ClientEnd::Closed;
                }
            }
            Ok(AggregatedMessage::Pong(_)) => {}
            Ok(AggregatedMessage::Close(_)) => return ClientEnd::Closed,
            Err(e) => return ClientEnd::Violation(e.to_string()),
        }
    }
    ClientEnd::Closed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_map_to_frames_or_violations() {
        let f = client_frame(b"\x00hi").unwrap().unwrap();
        assert_eq!(
            (f.kind, f.payload.as_slice()),
            (FrameKind::Stdin, &b"hi"[..])
        );
        let f = client_frame(b"\x04{\"Width\":80,\"Height\":24}")
            .unwrap()
            .unwrap();
        assert_eq!(f.as_resize().unwrap(), WindowSize { rows: 24, cols: 80 });
        let f = client_frame(&[255, 0]).unwrap().unwrap();
        assert_eq!(f.kind, FrameKind::StdinEof);
        for bad in [
            &b""[..],
            b"\x04{\"Width\":0,\"Height\":24}",
            b"\x04junk",
            &[255, 1],
            b"\x01out",
            b"\x03status",
            b"\x07x",
        ] {
            assert!(client_frame(bad).is_err(), "{bad:?}");
        }
    }
}
