//! The simulated guest's built-in agent as a test client: a request over the VM's hybrid
//! vsock socket (`<run>/<vm>/v.sock`, `CONNECT 52`), as the readiness probe speaks it. With
//! the guest stack (`FC_SIM_NETSTACK=1`), `connect` opens a TCP connection *from the guest*.
//!
//! Use with `mod common; use common::{daemon, guest_agent};`.

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use hearth_proto::agent::{
    decode_response, encode_request, read_response_line, AgentProtoError, ConnectReply,
    ConnectRequest, Request, DEFAULT_PORT,
};

use super::daemon::HearthHost;

/// A request to `vm`'s agent; `Err` carries the agent's error code and message.
///
/// # Panics
/// When the socket, the muxer or the reply is not what the protocol promises.
pub fn ask<T: serde::de::DeserializeOwned>(
    h: &HearthHost,
    vm: &str,
    req: &Request,
) -> Result<T, (String, String)> {
    let uds = h.path(&format!("run/{vm}/v.sock"));
    let mut stream =
        UnixStream::connect(&uds).unwrap_or_else(|e| panic!("connect {}: {e}", uds.display()));
    // Longer than any request's own timeout: the agent always answers first.
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    stream
        .write_all(format!("CONNECT {DEFAULT_PORT}\n").as_bytes())
        .expect("CONNECT");
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut ok = String::new();
    reader.read_line(&mut ok).expect("muxer answer");
    assert!(ok.starts_with("OK "), "{vm}: no OK from the muxer: {ok:?}");
    stream.write_all(&encode_request(req)).expect("request");
    let line = read_response_line(&mut reader)
        .expect("agent reply")
        .unwrap_or_else(|| panic!("{vm}: the agent closed without answering {req:?}"));
    match decode_response::<T>(&line) {
        Ok(reply) => Ok(reply),
        Err(AgentProtoError::Remote { code, message }) => Err((code, message)),
        Err(e) => panic!("{vm}: bad reply {:?}: {e}", String::from_utf8_lossy(&line)),
    }
}

/// A TCP exchange from `vm`'s guest to `addr:port`: sends `send`, half-closes, and answers
/// what came back until the peer closed (or the agent's error code and message).
pub fn connect(
    h: &HearthHost,
    vm: &str,
    addr: Ipv4Addr,
    port: u16,
    send: &str,
    timeout_ms: u64,
) -> Result<String, (String, String)> {
    let req = Request::Connect(ConnectRequest {
        addr,
        port,
        send: send.into(),
        timeout_ms,
    });
    ask::<ConnectReply>(h, vm, &req).map(|r| r.received)
}
