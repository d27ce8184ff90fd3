//! Serving one connection: read a request line, answer one response line, until the peer
//! closes. Malformed lines get an error response; an over-long line closes the connection.
//! `exec` (attached), `attach`, `get_archive` and `put_archive` switch the connection to
//! frames after their `ok` line ([`crate::exec::stream`], [`crate::files`]); it ends with them.

use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use hearth_proto::agent::{
    codes, decode_envelope, encode_error, encode_error_in, encode_ok_in, read_line,
    AgentProtoError, Empty, ErrorBody, ExecList, ExecStarted, PingReply, Request,
};

use crate::conn::Conn;
use crate::exec::{stream, Table};
use crate::{files, net, sysinfo};

/// Answers one request line that stays a request/response exchange, in the request's version.
/// Ops that switch to frames are answered `bad_request` here (they need a connection).
pub fn handle_request(line: &[u8], table: &Table) -> Vec<u8> {
    let envelope = match decode_envelope(line) {
        Ok(e) => e,
        Err(e) => return encode_error(&e.to_error_body()),
    };
    answer_line(envelope.v, envelope.request, table)
}

fn answer_line(v: u32, request: Request, table: &Table) -> Vec<u8> {
    fn reply<T: serde::Serialize>(v: u32, r: Result<T, ErrorBody>) -> Vec<u8> {
        match r {
            Ok(ok) => encode_ok_in(v, &ok),
            Err(e) => encode_error_in(v, &e),
        }
    }
    match request {
        Request::Ping => reply(
            v,
            ping().map_err(|e| ErrorBody::new(codes::INTERNAL, e.to_string())),
        ),
        Request::Resolve(r) => reply(v, net::resolve(&r)),
        Request::Connect(c) => reply(v, net::connect(&c)),
        Request::Execs => reply(
            v,
            Ok(ExecList {
                execs: table.list(),
            }),
        ),
        Request::ExecInfo(r) => reply(v, table.get(&r.id).map(|s| s.info())),
        Request::Signal(s) => reply(v, table.signal(&s.id, s.signal).map(|()| Empty {})),
        Request::Stat(s) => reply(v, files::stat(Path::new(&s.path))),
        Request::Reconfigure(r) => reply(v, table.identity().apply(&r).map(|()| Empty {})),
        Request::Freeze(f) => reply(v, table.freezer().freeze(&f).map(|()| Empty {})),
        Request::Thaw(t) => reply(v, table.freezer().thaw(&t)),
        Request::Exec(e) => reply(
            v,
            table.exec(&e, false).map(|s| ExecStarted {
                id: s.id.clone(),
                pid: s.pid().unsigned_abs(),
            }),
        ),
        other => encode_error_in(
            v,
            &ErrorBody::new(
                codes::BAD_REQUEST,
                format!("op {:?} needs a connection of its own", other.op()),
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

fn io_err(source: std::io::Error) -> AgentProtoError {
    AgentProtoError::Io { source }
}

/// Serves requests on `stream` until the peer closes it, an I/O error happens, or a request
/// switched it to frames and that stream ended.
///
/// # Errors
///
/// An over-long line (answered, then the connection is closed) or an I/O failure.
pub fn serve_connection<S: Conn>(stream: S, table: &Arc<Table>) -> Result<(), AgentProtoError> {
    let mut writer = stream.try_clone_conn().map_err(io_err)?;
    let mut reader = BufReader::new(stream);
    loop {
        let line = match read_line(&mut reader) {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(()),
            Err(e @ AgentProtoError::LineTooLong { .. }) => {
                let _ = writer.write_all(&encode_error(&e.to_error_body()));
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let envelope = match decode_envelope(&line) {
            Ok(e) => e,
            Err(e) => {
                writer
                    .write_all(&encode_error(&e.to_error_body()))
                    .map_err(io_err)?;
                continue;
            }
        };
        let v = envelope.v;
        if envelope.request.switches_to_frames() {
            return serve_frames(v, envelope.request, table, writer, reader);
        }
        let reply = answer_line(v, envelope.request, table);
        writer
            .write_all(&reply)
            .and_then(|()| writer.flush())
            .map_err(io_err)?;
    }
}

/// The ops that answer a line and then carry frames until their stream ends.
fn serve_frames<S: Conn, R: Read>(
    v: u32,
    request: Request,
    table: &Arc<Table>,
    mut writer: S,
    reader: R,
) -> Result<(), AgentProtoError> {
    let refuse = |writer: &mut S, e: &ErrorBody| writer.write_all(&encode_error_in(v, e));
    match request {
        Request::Exec(e) => {
            let session = match table.exec(&e, true) {
                Ok(s) => s,
                Err(err) => return refuse(&mut writer, &err).map_err(io_err),
            };
            let started = ExecStarted {
                id: session.id.clone(),
                pid: session.pid().unsigned_abs(),
            };
            if let Err(err) = writer.write_all(&encode_ok_in(v, &started)) {
                // Nobody to stream to: the session goes on, detached.
                session.lock().attach = None;
                session.notify();
                return Err(io_err(err));
            }
            stream::run(&session, 0, writer, reader, e.stdin);
            Ok(())
        }
        Request::Attach(a) => {
            let session = match table.get(&a.id) {
                Ok(s) => s,
                Err(err) => return refuse(&mut writer, &err).map_err(io_err),
            };
            let gen = stream::attach(&session);
            // The info after the attach, so it says `attached`.
            let info = session.info();
            if let Err(err) = writer.write_all(&encode_ok_in(v, &info)) {
                let mut st = session.lock();
                if st.attach.as_ref().is_some_and(|x| x.gen == gen) {
                    st.attach = None;
                }
                drop(st);
                session.notify();
                return Err(io_err(err));
            }
            stream::run(&session, gen, writer, reader, a.stdin);
            Ok(())
        }
        Request::GetArchive(a) => {
            let path = Path::new(&a.path);
            let stat = match files::stat(path) {
                Ok(s) => s,
                Err(err) => return refuse(&mut writer, &err).map_err(io_err),
            };
            writer.write_all(&encode_ok_in(v, &stat)).map_err(io_err)?;
            files::get::send(path, &stat, &mut writer);
            Ok(())
        }
        Request::PutArchive(a) => {
            let path = Path::new(&a.path);
            // Follows a symlink at the target itself, as `cd` would: it names the directory.
            let check = match std::fs::metadata(path) {
                Ok(md) if md.is_dir() => Ok(()),
                Ok(_) => Err(ErrorBody::new(
                    codes::NOT_A_DIRECTORY,
                    format!("{} is not a directory", path.display()),
                )),
                Err(e) => Err(files::io_error(path, &e)),
            };
            if let Err(err) = check {
                return refuse(&mut writer, &err).map_err(io_err);
            }
            writer
                .write_all(&encode_ok_in(v, &Empty {}))
                .map_err(io_err)?;
            files::put::receive(path, reader, &mut writer);
            Ok(())
        }
        other => refuse(
            &mut writer,
            &ErrorBody::new(
                codes::INTERNAL,
                format!("op {:?} has no stream", other.op()),
            ),
        )
        .map_err(io_err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_proto::agent::{decode_response, encode_request};
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn ping_is_answered_with_boot_id_and_uptime() {
        let reply: PingReply = decode_response(&handle_request(
            &encode_request(&Request::Ping),
            &Table::new(),
        ))
        .unwrap();
        assert_eq!(reply.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(reply.boot_id.len(), 36);
        assert!(reply.uptime_ms > 0);
    }

    #[test]
    fn errors_are_answered_not_dropped() {
        let err = decode_response::<PingReply>(&handle_request(
            b"{\"v\":1,\"op\":\"nope\"}\n",
            &Table::new(),
        ))
        .unwrap_err();
        assert!(
            matches!(err, AgentProtoError::Remote { ref code, .. } if code == codes::UNKNOWN_OP)
        );
    }

    #[test]
    fn serves_several_requests_on_one_connection() {
        let (mut client, server) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || serve_connection(server, &Arc::new(Table::new())));
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
