//! Exec session endpoints (`/v1/vms/{name}/exec`, `/v1/vms/{name}/execs...`): each checks the
//! request, sends one message to `GuestActor` (which asks the supervisor where the VM's agent
//! is: 404 unknown VM, 409 not running) and renders the agent's answer. Sessions live in the
//! agent; hearthd keeps nothing about them. The WebSocket `attach` is in [`super::attach`],
//! file transfer in [`super::archive`].

use std::time::Duration;

use actix::{Actor, Addr, Recipient};
use actix_web::web::{Data, Path};
use actix_web::{HttpRequest, HttpResponse};
use hearth_actors::guest::{AgentCall, GuestActor, GuestSettings};
use hearth_actors::supervisor::{GuestEndpoint, SupervisorError};
use hearth_proto::agent::SessionId;
use hearth_proto::agent::{
    Empty, ExecInfo, ExecList, ExecRequest, ExecStarted, Request, SessionRef, SignalRequest,
};
use hearth_proto::api::FieldError;
use hearth_proto::api_exec::{
    parse_signal, parse_user, ExecCreate, ExecCreated, ExecSignal, ATTACH_HOLD_MS,
};

use super::body::JsonBody;
use super::query::Params;
use super::ApiError;

/// The default largest archive moved in either direction (1 GiB).
pub const DEFAULT_MAX_ARCHIVE_BYTES: u64 = 1 << 30;

/// The exec and archive endpoints' settings (the config file's `[exec]` section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecSettings {
    /// Bytes of output the agent keeps per stream of a session while no client is attached.
    pub ring_bytes: u64,
    /// The largest tar stream accepted by `PUT .../archive` or sent by `GET .../archive`.
    pub max_archive_bytes: u64,
    /// How long an agent has to accept a connection and answer a request.
    pub connect_timeout: Duration,
}

impl Default for ExecSettings {
    fn default() -> Self {
        ExecSettings {
            ring_bytes: hearth_proto::agent::exec::DEFAULT_RING_BYTES,
            max_archive_bytes: DEFAULT_MAX_ARCHIVE_BYTES,
            connect_timeout: GuestSettings::default().connect_timeout,
        }
    }
}

/// What the exec and archive handlers share: the guest connections' owner and the settings.
pub struct ExecApi {
    /// The actor that opens agent connections.
    pub guest: Addr<GuestActor>,
    /// The settings.
    pub settings: ExecSettings,
}

impl ExecApi {
    /// Starts a `GuestActor` asking `endpoints` (the supervisor) where agents are. Must run
    /// inside the actix system.
    #[must_use]
    pub fn start(
        settings: ExecSettings,
        endpoints: Recipient<GuestEndpoint>,
        log: &slog::Logger,
    ) -> Self {
        let guest = GuestActor::new(
            endpoints,
            GuestSettings {
                connect_timeout: settings.connect_timeout,
                ..GuestSettings::default()
            },
            log,
        )
        .start();
        ExecApi { guest, settings }
    }
}

fn invalid(field: &'static str, reason: String) -> ApiError {
    SupervisorError::from(FieldError { field, reason }).into()
}

/// The agent's `exec` request for an API body: always detached, with the configured ring.
///
/// # Errors
///
/// 400 naming the bad field (`user`, `timeout_secs`) or the body's problem.
pub fn agent_exec(body: &ExecCreate, ring_bytes: u64) -> Result<ExecRequest, ApiError> {
    let (uid, gid) = match &body.user {
        Some(u) => {
            let (uid, gid) = parse_user(u).map_err(|r| invalid("user", r))?;
            (Some(uid), gid)
        }
        None => (None, None),
    };
    let timeout_ms = body
        .timeout_secs
        .map(|s| {
            s.checked_mul(1000)
                .ok_or_else(|| invalid("timeout_secs", format!("{s} is too large")))
        })
        .transpose()?;
    let request = ExecRequest {
        argv: body.command.clone(),
        env: body.env.clone(),
        workdir: body.workdir.clone(),
        uid,
        gid,
        tty: body.tty,
        size: body.size,
        stdin: body.stdin,
        timeout_ms,
        ring_bytes: Some(ring_bytes),
        attach: false,
        // A client that will attach next gets every byte; a detached one the ring's newest.
        hold_ms: (!body.detach).then_some(ATTACH_HOLD_MS),
    };
    request.validate().map_err(|reason| ApiError::InvalidBody {
        message: reason
            .replace("argv", "command")
            .replace("timeout_ms", "timeout (ms)"),
    })?;
    Ok(request)
}

/// Parses a session id path segment.
///
/// # Errors
///
/// 400 `invalid_parameter` naming `id`.
pub fn session_id(id: &str) -> Result<SessionId, ApiError> {
    SessionId::parse(id).map_err(|reason| ApiError::InvalidParam {
        param: "id".into(),
        reason,
    })
}

/// `POST /v1/vms/{name}/exec`: starts a detached session; 201 with its id.
///
/// # Errors
///
/// The request's [`ApiError`], rendered as its status and JSON body.
pub async fn create(
    exec: Data<ExecApi>,
    req: HttpRequest,
    name: Path<String>,
    body: JsonBody<ExecCreate>,
) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let request = agent_exec(&body.value, exec.settings.ring_bytes)?;
    let started: ExecStarted = exec
        .guest
        .send(AgentCall::new(name.into_inner(), Request::Exec(request)))
        .await??;
    Ok(HttpResponse::Created().json(ExecCreated { id: started.id }))
}

/// `GET /v1/vms/{name}/execs`: the agent's sessions.
///
/// # Errors
///
/// The request's [`ApiError`], rendered as its status and JSON body.
pub async fn list(
    exec: Data<ExecApi>,
    req: HttpRequest,
    name: Path<String>,
) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let list: ExecList = exec
        .guest
        .send(AgentCall::new(name.into_inner(), Request::Execs))
        .await??;
    Ok(HttpResponse::Ok().json(list))
}

/// `GET /v1/vms/{name}/execs/{id}`: one session.
///
/// # Errors
///
/// The request's [`ApiError`], rendered as its status and JSON body.
pub async fn get(
    exec: Data<ExecApi>,
    req: HttpRequest,
    path: Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let (name, id) = path.into_inner();
    let id = session_id(&id)?;
    let info: ExecInfo = exec
        .guest
        .send(AgentCall::new(name, Request::ExecInfo(SessionRef { id })))
        .await??;
    Ok(HttpResponse::Ok().json(info))
}

/// `POST /v1/vms/{name}/execs/{id}/signal`: signals the session's process group; 204.
///
/// # Errors
///
/// The request's [`ApiError`], rendered as its status and JSON body.
pub async fn signal(
    exec: Data<ExecApi>,
    req: HttpRequest,
    path: Path<(String, String)>,
    body: JsonBody<ExecSignal>,
) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let (name, id) = path.into_inner();
    let id = session_id(&id)?;
    let signal = parse_signal(&body.value.signal).map_err(|r| invalid("signal", r))?;
    let _: Empty = exec
        .guest
        .send(AgentCall::new(
            name,
            Request::Signal(SignalRequest { id, signal }),
        ))
        .await??;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: serde_json::Value) -> ExecCreate {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn api_bodies_become_detached_agent_requests() {
        let r = agent_exec(
            &body(
                serde_json::json!({"command": ["ls", "-l"], "user": "1000:100",
                "timeout_secs": 5, "tty": true, "stdin": true}),
            ),
            4096,
        )
        .unwrap();
        assert_eq!(r.argv, ["ls", "-l"]);
        assert_eq!((r.uid, r.gid), (Some(1000), Some(100)));
        assert_eq!(r.timeout_ms, Some(5000));
        assert_eq!(r.ring_bytes, Some(4096));
        assert!(r.tty && r.stdin && !r.attach);
    }

    #[test]
    fn bad_bodies_name_the_problem() {
        for (v, needle) in [
            (serde_json::json!({"command": []}), "command"),
            (
                serde_json::json!({"command": ["x"], "user": "root"}),
                "`user`",
            ),
            (
                serde_json::json!({"command": ["x"], "workdir": "rel"}),
                "workdir",
            ),
            (
                serde_json::json!({"command": ["x"], "env": ["NOEQUALS"]}),
                "KEY=VALUE",
            ),
            (
                serde_json::json!({"command": ["x"], "timeout_secs": 0}),
                "timeout",
            ),
            (
                serde_json::json!({"command": ["x"], "timeout_secs": u64::MAX}),
                "`timeout_secs`",
            ),
            (
                serde_json::json!({"command": ["x"], "size": {"rows": 0, "cols": 80}}),
                "zero",
            ),
        ] {
            let e = agent_exec(&body(v.clone()), 1).unwrap_err();
            assert_eq!(e.status_and_code().0, 400, "{v}");
            assert!(e.to_string().contains(needle), "{v}: {e}");
        }
        assert!(session_id("../x").is_err());
    }
}
