//! The WebSocket side of `attach`: a connection to hearthd over its Unix socket speaking
//! Kubernetes' channel framing ([`SUBPROTOCOL`]), and that framing's messages.

use hearth_proto::api::ErrorBody;
use hearth_proto::api_exec::{channel, Status, TerminalSize, WindowSize, SUBPROTOCOL};
use http::HeaderValue;
use tokio::net::UnixStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
pub use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{ApiPath, Client, ClientError};

/// The largest message hearthctl accepts from hearthd (hearthd sends at most 64 KiB of output
/// per message; a status is far smaller).
pub const MAX_MESSAGE: usize = 1 << 20;

/// An attached session's connection.
pub type Socket = WebSocketStream<UnixStream>;

/// One message from hearthd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Bytes of the process's stdout (its terminal's output with a PTY).
    Stdout(bytes::Bytes),
    /// Bytes of the process's stderr.
    Stderr(bytes::Bytes),
    /// The session's end.
    Status(Status),
    /// A message this client does not use (pings, text, unknown channels).
    Ignored,
    /// hearthd closed the connection.
    Closed,
}

/// Decodes one WebSocket message.
///
/// # Errors
/// A status that is not a Kubernetes `Status`.
pub fn decode(msg: Message) -> Result<Incoming, ClientError> {
    let bin = match msg {
        Message::Binary(b) => b,
        Message::Close(_) => return Ok(Incoming::Closed),
        _ => return Ok(Incoming::Ignored),
    };
    let Some(&ch) = bin.first() else {
        return Ok(Incoming::Ignored);
    };
    let payload = bin.slice(1..);
    Ok(match ch {
        channel::STDOUT => Incoming::Stdout(payload),
        channel::STDERR => Incoming::Stderr(payload),
        channel::STATUS => {
            Incoming::Status(serde_json::from_slice(&payload).map_err(|e| {
                ClientError::Protocol(format!("status message is not a Status: {e}"))
            })?)
        }
        _ => Incoming::Ignored,
    })
}

/// A `STDIN` message carrying `data`.
#[must_use]
pub fn stdin(data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel::STDIN);
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

/// The `CLOSE` message for stdin: the process sees end of file.
#[must_use]
pub fn stdin_eof() -> Message {
    Message::Binary(vec![channel::CLOSE, channel::STDIN].into())
}

/// A `RESIZE` message.
#[must_use]
pub fn resize(size: WindowSize) -> Message {
    let body = TerminalSize {
        width: size.cols,
        height: size.rows,
    };
    let mut v = vec![channel::RESIZE];
    v.extend_from_slice(&serde_json::to_vec(&body).unwrap_or_default());
    Message::Binary(v.into())
}

/// The `attach` target of session `id` of VM `vm`.
#[must_use]
pub fn attach_path(vm: &str, id: &str, with_stdin: bool) -> ApiPath {
    ApiPath::new("/v1/vms")
        .segment(vm)
        .segment("execs")
        .segment(id)
        .segment("attach")
        .query("stdin", with_stdin)
}

/// Opens the WebSocket of `path` on hearthd.
///
/// # Errors
/// hearthd is not reachable, refused the upgrade (its error body is returned as
/// [`ClientError::Api`]), or did not agree on [`SUBPROTOCOL`].
pub async fn connect(client: &Client, path: &ApiPath) -> Result<Socket, ClientError> {
    let stream = UnixStream::connect(client.socket())
        .await
        .map_err(|e| client.connect_error(e))?;
    let mut req = format!("ws://hearthd{}", path.as_str())
        .into_client_request()
        .map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let (ws, resp) = tokio_tungstenite::client_async_with_config(req, stream, Some(config))
        .await
        .map_err(ws_error)?;
    let proto = resp
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok());
    if proto != Some(SUBPROTOCOL) {
        return Err(ClientError::Protocol(format!(
            "hearthd answered the attach with subprotocol {proto:?}, not {SUBPROTOCOL}"
        )));
    }
    Ok(ws)
}

/// Maps a WebSocket failure, turning a refused upgrade into hearthd's API error.
#[must_use]
pub fn ws_error(e: tungstenite::Error) -> ClientError {
    match e {
        tungstenite::Error::Http(resp) => {
            let status = resp.status().as_u16();
            let body = resp.body().as_deref().unwrap_or_default();
            match serde_json::from_slice::<ErrorBody>(body) {
                Ok(b) => ClientError::Api {
                    status,
                    code: b.error.code,
                    message: b.error.message,
                },
                Err(_) => ClientError::Api {
                    status,
                    code: "unknown".into(),
                    message: String::from_utf8_lossy(body).trim().to_owned(),
                },
            }
        }
        tungstenite::Error::Io(e) => ClientError::Io(e),
        e => ClientError::Protocol(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_follow_the_channel_framing() {
        assert_eq!(stdin(b"hi"), Message::Binary(vec![0, b'h', b'i'].into()));
        assert_eq!(stdin_eof(), Message::Binary(vec![255, 0].into()));
        let Message::Binary(r) = resize(WindowSize { rows: 24, cols: 80 }) else {
            panic!("not binary");
        };
        assert_eq!(r[0], 4);
        assert_eq!(&r[1..], br#"{"Width":80,"Height":24}"#);
    }

    #[test]
    fn incoming_messages_decode_by_channel() {
        let m = |v: &[u8]| Message::Binary(v.to_vec().into());
        assert_eq!(
            decode(m(b"\x01out")).unwrap(),
            Incoming::Stdout("out".into())
        );
        assert_eq!(
            decode(m(b"\x02err")).unwrap(),
            Incoming::Stderr("err".into())
        );
        let mut st = vec![3u8];
        st.extend_from_slice(br#"{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#);
        let Incoming::Status(s) = decode(m(&st)).unwrap() else {
            panic!("not a status");
        };
        assert_eq!(s.exit_code(), Some(3));
        assert!(decode(m(b"\x03not json")).is_err());
        assert_eq!(decode(m(b"")).unwrap(), Incoming::Ignored);
        assert_eq!(decode(m(b"\x09x")).unwrap(), Incoming::Ignored);
        assert_eq!(decode(Message::Close(None)).unwrap(), Incoming::Closed);
    }

    #[test]
    fn attach_path_encodes_its_parts() {
        assert_eq!(
            attach_path("web", "x1", true).as_str(),
            "/v1/vms/web/execs/x1/attach?stdin=true"
        );
        assert_eq!(
            attach_path("a/b", "x", false).as_str(),
            "/v1/vms/a%2Fb/execs/x/attach?stdin=false"
        );
    }
}
