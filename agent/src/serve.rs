//! Serving one connection: read a request line, answer one response line, until the peer
//! closes. Malformed lines get an error response; an over-long line closes the connection.

use std::io::{BufReader, Read, Write};
use std::path::Path;

use hearth_proto::agent::{
    codes, decode_envelope, encode_error, encode_error_in, encode_ok_in, read_line,
    AgentProtoError, ErrorBody, PingReply, Request,
};

use crate::{net, sysinfo};

/// Answers one request line with one response line (`\n` included), in the request's version.
pub fn handle_request(line: &[u8]) -> Vec<u8> {
    let envelope = match decode_envelope(line) {
        Ok(e) => e,
        Err(e) => return encode_error(&e.to_error_body()),
    };
    let v = envelope.v;
    match envelope.request {
        Request::Ping => match ping() {
            Ok(reply) => encode_ok_in(v, &reply),
            Err(e) => encode_error_in(
                v,
                &ErrorBody {
                    code: codes::INTERNAL.into(),
                    message: e.to_string(),
                },
            ),
        },
        Request::Resolve(r) => match net::resolve(&r) {
            Ok(reply) => encode_ok_in(v, &reply),
            Err(e) => encode_error_in(v, &e),
        },
        Request::Connect(c) => match net::connect(&c) {
            Ok(reply) => encode_ok_in(v, &reply),
            Err(e) => encode_error_in(v, &e),
        },
        // Sessions and files: not served by this build yet (issue 11 in progress).
        other => encode_error_in(
            v,
            &ErrorBody::new(
                codes::UNKNOWN_OP,
                format!("op {:?} is not served by this agent", other.op()),
            ),
        ),
    }
}

fn ping() -> std::io::Result<PingReply> {
    Ok(PingReply {
        version: env!("CARGO_PKG_VERSION").to_string(),
        boot_id: sysinfo::boot_id(Path::new(sysinfo::BOOT_ID_PATH))?,
        uptime_ms: sysinfo::uptime_ms(Path::new(sysinfo::UPTIME_PATH))?,
    })
}

/// Serves requests on `stream` until the peer closes it or an I/O error happens.
pub fn serve_connection<S: Read + Write>(stream: S) -> Result<(), AgentProtoError> {
    let mut reader = BufReader::new(stream);
    loop {
        let line = match read_line(&mut reader) {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(()),
            Err(e @ AgentProtoError::LineTooLong { .. }) => {
                let _ = reader
                    .get_mut()
                    .write_all(&encode_error(&e.to_error_body()));
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let reply = handle_request(&line);
        reader
            .get_mut()
            .write_all(&reply)
            .and_then(|()| reader.get_mut().flush())
            .map_err(|source| AgentProtoError::Io { source })?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_proto::agent::{decode_response, encode_request};
    use std::os::unix::net::UnixStream;

    #[test]
    fn ping_is_answered_with_boot_id_and_uptime() {
        let reply: PingReply =
            decode_response(&handle_request(&encode_request(&Request::Ping))).unwrap();
        assert_eq!(reply.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(reply.boot_id.len(), 36);
        assert!(reply.uptime_ms > 0);
    }

    #[test]
    fn errors_are_answered_not_dropped() {
        let err = decode_response::<PingReply>(&handle_request(b"{\"v\":1,\"op\":\"nope\"}\n"))
            .unwrap_err();
        assert!(
            matches!(err, AgentProtoError::Remote { ref code, .. } if code == codes::UNKNOWN_OP)
        );
    }

    #[test]
    fn serves_several_requests_on_one_connection() {
        let (mut client, server) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || serve_connection(server));
        let mut reader = BufReader::new(client.try_clone().unwrap());
        for _ in 0..3 {
            client.write_all(&encode_request(&Request::Ping)).unwrap();
            let line = read_line(&mut reader).unwrap().unwrap();
            decode_response::<PingReply>(&line).unwrap();
        }
        client.write_all(b"garbage\n").unwrap();
        let line = read_line(&mut reader).unwrap().unwrap();
        assert!(decode_response::<PingReply>(&line).is_err());
        drop(client);
        drop(reader);
        t.join().unwrap().unwrap();
    }
}
