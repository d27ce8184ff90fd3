//! `GuestActor` against a scripted agent behind a hybrid-vsock stand-in on a Unix socket.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use actix::{Actor, Addr, Context, Handler};
use hearth_proto::agent::frame::{Frame, FrameKind};
use hearth_proto::agent::{
    decode_request, encode_error, encode_ok, AttachRequest, Empty, ErrorBody, ExecInfo, ExecList,
    ExecRequest, ExecStarted, Request, SessionId, MAX_RESPONSE_LINE,
};
use hearth_proto::api::VmState;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

use super::*;
use crate::supervisor::{AgentEndpoint, GuestEndpoint, SupervisorError};

/// Answers `GuestEndpoint` from a fixed table: (state, socket) per VM.
struct Endpoints(HashMap<String, (VmState, PathBuf)>);

impl Actor for Endpoints {
    type Context = Context<Self>;
}

impl Handler<GuestEndpoint> for Endpoints {
    type Result = Result<AgentEndpoint, SupervisorError>;
    fn handle(&mut self, msg: GuestEndpoint, _: &mut Context<Self>) -> Self::Result {
        match self.0.get(&msg.name) {
            None => Err(SupervisorError::NotFound { name: msg.name }),
            Some((state, _)) if *state != VmState::Running => Err(SupervisorError::InvalidState {
                name: msg.name,
                state: *state,
                op: "reach the agent of",
            }),
            Some((_, uds)) => Ok(AgentEndpoint {
                uds: uds.clone(),
                port: 52,
            }),
        }
    }
}

/// What the scripted agent does with one request line: bytes to write back, then whether to
/// keep the connection open until the host closes it.
type Script = fn(&[u8]) -> Vec<u8>;

/// A hybrid-vsock muxer with a scripted agent behind it. `ack: false` closes every
/// connection without `OK` (nothing listens in the guest).
fn spawn_agent(uds: &Path, ack: bool, script: Script) {
    let listener = UnixListener::bind(uds).unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut r = BufReader::new(s);
                let mut line = String::new();
                r.read_line(&mut line).await.unwrap();
                assert_eq!(line, "CONNECT 52\n");
                if !ack {
                    return;
                }
                r.get_mut().write_all(b"OK 1073741824\n").await.unwrap();
                let mut req = Vec::new();
                r.read_until(b'\n', &mut req).await.unwrap();
                let out = script(&req);
                if r.get_mut().write_all(&out).await.is_err() {
                    return;
                }
                // Keep the connection until the host closes it.
                let mut sink = Vec::new();
                let _ = r.read_to_end(&mut sink).await;
            });
        }
    });
}

fn actor(
    dir: &Path,
    vms: &[(&str, VmState)],
    settings: GuestSettings,
) -> (Addr<GuestActor>, PathBuf) {
    let uds = dir.join("v.sock");
    let table = vms
        .iter()
        .map(|(n, s)| (n.to_string(), (*s, uds.clone())))
        .collect();
    let endpoints = Endpoints(table).start();
    let log = slog::Logger::root(slog::Discard, slog::o!());
    (
        GuestActor::new(endpoints.recipient(), settings, &log).start(),
        uds,
    )
}

fn exec_started(_: &[u8]) -> Vec<u8> {
    encode_ok(&ExecStarted {
        id: SessionId::parse("s1").unwrap(),
        pid: 7,
    })
}

fn info() -> ExecInfo {
    ExecInfo {
        id: SessionId::parse("s1").unwrap(),
        argv: vec!["cat".into()],
        tty: false,
        stdin_open: true,
        pid: 7,
        started_uptime_ms: 1,
        attached: true,
        exit: None,
    }
}

fn exec_request() -> Request {
    Request::Exec(ExecRequest::new(vec!["true".into()]))
}

#[actix::test]
async fn a_call_answers_the_agents_ok_and_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (guest, uds) = actor(
        dir.path(),
        &[("web", VmState::Running)],
        GuestSettings::default(),
    );
    spawn_agent(&uds, true, |req| match decode_request(req).unwrap() {
        Request::Exec(_) => exec_started(req),
        _ => encode_error(&ErrorBody::new("no_such_session", "No session \"x\"")),
    });
    let started: ExecStarted = guest
        .send(AgentCall::new("web", exec_request()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((started.id.as_str(), started.pid), ("s1", 7));
    let err = guest
        .send(AgentCall::<ExecList>::new("web", Request::Execs))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, GuestError::Agent { ref code, .. } if code == "no_such_session"),
        "{err:?}"
    );
}

#[actix::test]
async fn unknown_and_stopped_vms_are_the_supervisors_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (guest, _uds) = actor(
        dir.path(),
        &[("off", VmState::Stopped)],
        GuestSettings::default(),
    );
    let err = guest
        .send(AgentCall::<ExecStarted>::new("off", exec_request()))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err,
            GuestError::Vm(SupervisorError::InvalidState {
                state: VmState::Stopped,
                ..
            })
        ),
        "{err:?}"
    );
    let err = guest
        .send(AgentCall::<ExecStarted>::new("nope", exec_request()))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, GuestError::Vm(SupervisorError::NotFound { .. })),
        "{err:?}"
    );
}

#[actix::test]
async fn missing_silent_or_absent_agents_are_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let settings = GuestSettings {
        connect_timeout: Duration::from_millis(200),
        ..GuestSettings::default()
    };
    // No socket at all.
    let (guest, uds) = actor(dir.path(), &[("web", VmState::Running)], settings);
    let err = guest
        .send(AgentCall::<ExecStarted>::new("web", exec_request()))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, GuestError::Unreachable { .. }), "{err:?}");
    // Nothing listens in the guest: CONNECT is closed without OK.
    spawn_agent(&uds, false, exec_started);
    let err = guest
        .send(AgentCall::<ExecStarted>::new("web", exec_request()))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, GuestError::Unreachable { ref reason, .. } if reason.contains("OK")),
        "{err:?}"
    );
    // An agent that never answers: cut by the timeout.
    let dir2 = tempfile::tempdir().unwrap();
    let (guest, uds) = actor(dir2.path(), &[("web", VmState::Running)], settings);
    spawn_agent(&uds, true, |_| Vec::new());
    let err = guest
        .send(AgentCall::<ExecStarted>::new("web", exec_request()))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, GuestError::Unreachable { ref reason, .. } if reason.contains("within")),
        "{err:?}"
    );
}

#[actix::test]
async fn hostile_answers_are_protocol_errors() {
    for script in [
        (|_: &[u8]| b"not json\n".to_vec()) as Script,
        |_| b"{\"v\":2,\"ok\":{\"id\":\"../x\",\"pid\":1}}\n".to_vec(),
        |_| b"{\"v\":9,\"ok\":{}}\n".to_vec(),
        |_| vec![b'x'; MAX_RESPONSE_LINE + 10],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (guest, uds) = actor(
            dir.path(),
            &[("web", VmState::Running)],
            GuestSettings::default(),
        );
        spawn_agent(&uds, true, script);
        let err = guest
            .send(AgentCall::<ExecStarted>::new("web", exec_request()))
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, GuestError::Protocol { .. }), "{err:?}");
    }
}

fn attach() -> Request {
    Request::Attach(AttachRequest {
        id: SessionId::parse("s1").unwrap(),
        stdin: true,
    })
}

#[actix::test]
async fn a_stream_keeps_frames_sent_with_the_ok_line() {
    let dir = tempfile::tempdir().unwrap();
    let (guest, uds) = actor(
        dir.path(),
        &[("web", VmState::Running)],
        GuestSettings::default(),
    );
    // The ok line and the first frames in one write: none may be lost to line buffering.
    spawn_agent(&uds, true, |_| {
        let mut out = encode_ok(&info());
        out.extend(Frame::new(FrameKind::Stdout, b"hello".to_vec()).to_bytes());
        out.extend(Frame::exit(&hearth_proto::agent::ExitStatus::exited(3)).to_bytes());
        out
    });
    let opened = guest
        .send(OpenStream::<ExecInfo>::new("web", attach()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(opened.reply, info());
    let (mut reader, _writer) = opened.stream.into_split();
    let f = reader.next().await.unwrap().unwrap();
    assert_eq!(
        (f.kind, f.payload.as_slice()),
        (FrameKind::Stdout, &b"hello"[..])
    );
    let f = reader.next().await.unwrap().unwrap();
    assert_eq!(f.as_exit().unwrap().code, 3);
}

#[actix::test]
async fn oversized_or_unknown_frames_are_protocol_errors() {
    for script in [
        (|_: &[u8]| {
            let mut out = encode_ok(&info());
            out.extend([1u8, 0xff, 0xff, 0xff, 0xff]);
            out
        }) as Script,
        |_| {
            let mut out = encode_ok(&info());
            out.extend([42u8, 0, 0, 0, 1, 0]);
            out
        },
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (guest, uds) = actor(
            dir.path(),
            &[("web", VmState::Running)],
            GuestSettings::default(),
        );
        spawn_agent(&uds, true, script);
        let opened = guest
            .send(OpenStream::<ExecInfo>::new("web", attach()))
            .await
            .unwrap()
            .unwrap();
        let (mut reader, _w) = opened.stream.into_split();
        let err = reader.next().await.unwrap_err();
        assert!(matches!(err, GuestError::Protocol { .. }), "{err:?}");
    }
}

#[actix::test]
async fn connections_per_vm_are_bounded_and_given_back() {
    let dir = tempfile::tempdir().unwrap();
    let settings = GuestSettings {
        max_connections_per_vm: 1,
        ..GuestSettings::default()
    };
    let (guest, uds) = actor(dir.path(), &[("web", VmState::Running)], settings);
    spawn_agent(&uds, true, |req| match decode_request(req).unwrap() {
        Request::Attach(_) => encode_ok(&info()),
        _ => encode_ok(&Empty {}),
    });
    let opened = guest
        .send(OpenStream::<ExecInfo>::new("web", attach()))
        .await
        .unwrap()
        .unwrap();
    let count = guest
        .send(OpenConnections { vm: "web".into() })
        .await
        .unwrap();
    assert_eq!(count, 1);
    let err = guest
        .send(AgentCall::<ExecList>::new("web", Request::Execs))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, GuestError::Busy { limit: 1, .. }), "{err:?}");
    // A streaming op sent as a call is refused without using a slot.
    let err = guest
        .send(AgentCall::<ExecInfo>::new("web", attach()))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, GuestError::WrongOp { op: "attach" }),
        "{err:?}"
    );
    drop(opened);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while guest
        .send(OpenConnections { vm: "web".into() })
        .await
        .unwrap()
        != 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "slot never given back"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let _: Empty = guest
        .send(AgentCall::new(
            "web",
            Request::Signal(hearth_proto::agent::SignalRequest {
                id: SessionId::parse("s1").unwrap(),
                signal: 15,
            }),
        ))
        .await
        .unwrap()
        .unwrap();
}

fn identity() -> hearth_proto::agent::Reconfigure {
    hearth_proto::agent::Reconfigure {
        ip_cidr: "172.31.240.9/24".into(),
        gateway: std::net::Ipv4Addr::new(172, 31, 240, 1),
        mac: "06:00:ac:1f:f0:09".into(),
        hostname: "fork-1".into(),
        dns: std::net::Ipv4Addr::new(172, 31, 240, 1),
        clock_unix_ns: None,
        rng_seed: hearth_proto::agent::RngSeed([9; 32]),
    }
}

#[actix::test]
async fn reconfigure_sends_the_identity_and_refuses_a_bad_one_without_calling() {
    let dir = tempfile::tempdir().unwrap();
    let (guest, uds) = actor(
        dir.path(),
        &[("web", VmState::Running)],
        GuestSettings::default(),
    );
    // The agent answers {} only to the identity the test sent.
    spawn_agent(&uds, true, |req| match decode_request(req).unwrap() {
        Request::Reconfigure(r) if r == identity() => encode_ok(&Empty {}),
        other => encode_error(&ErrorBody::new("bad_request", format!("{other:?}"))),
    });
    guest
        .send(ReconfigureGuest {
            vm: "web".into(),
            identity: identity(),
        })
        .await
        .unwrap()
        .unwrap();
    let mut bad = identity();
    bad.gateway = std::net::Ipv4Addr::new(10, 0, 0, 1);
    let err = guest
        .send(ReconfigureGuest {
            vm: "web".into(),
            identity: bad,
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, GuestError::Agent { ref code, ref message } if code == "bad_request" && message.contains("gateway")),
        "{err:?}"
    );
    assert_eq!(
        guest
            .send(OpenConnections { vm: "web".into() })
            .await
            .unwrap(),
        0
    );
}

#[actix::test]
async fn freeze_carries_its_deadline_thaw_answers_was_frozen_and_a_bad_deadline_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (guest, uds) = actor(
        dir.path(),
        &[("web", VmState::Running)],
        GuestSettings::default(),
    );
    // The agent answers a root freeze with a 7 s deadline, and any root thaw.
    spawn_agent(&uds, true, |req| match decode_request(req).unwrap() {
        Request::Freeze(f) if f.path == "/" && f.thaw_after_ms == 7_000 => encode_ok(&Empty {}),
        Request::Thaw(t) if t.path == "/" => {
            encode_ok(&hearth_proto::agent::ThawReply { was_frozen: true })
        }
        other => encode_error(&ErrorBody::new("bad_request", format!("{other:?}"))),
    });
    guest
        .send(FreezeGuest {
            vm: "web".into(),
            thaw_after: Duration::from_secs(7),
        })
        .await
        .unwrap()
        .unwrap();
    assert!(guest
        .send(ThawGuest { vm: "web".into() })
        .await
        .unwrap()
        .unwrap());
    for bad in [Duration::ZERO, Duration::from_secs(61)] {
        let err = guest
            .send(FreezeGuest {
                vm: "web".into(),
                thaw_after: bad,
            })
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(err, GuestError::Agent { ref code, ref message } if code == "bad_request" && message.contains("thaw_after_ms")),
            "{err:?}"
        );
    }
}
