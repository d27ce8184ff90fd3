//! `/v1/node`: the host's cordon and drain, and whether its VMMs run jailed.

use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use hearth_actors::supervisor as sup;
use hearth_proto::api_policy::{CordonRequest, DrainRequest};

use super::body::JsonBody;
use super::query::Params;
use super::{ApiError, ApiState};

/// The reason used when a cordon or drain gives none.
const NO_REASON: &str = "cordoned by an operator";

/// Whether hearthd runs its VMMs jailed (decided once at start, `crate::daemon`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailStatus {
    /// Every VMM runs through Firecracker's jailer.
    pub jailed: bool,
    /// When not: why, one line each (the blockers `[jailer] enabled = "auto"` found, or that
    /// jailing is off).
    pub reasons: Vec<String>,
}

/// The supervisor's `node` with hearthd's jailing added (`jailed`, and `unjailed_reasons`
/// when not jailed); as it is when the server was given none (test servers).
#[derive(serde::Serialize)]
struct NodeView<'a> {
    #[serde(flatten)]
    node: &'a sup::NodeStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    jailed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unjailed_reasons: Option<&'a [String]>,
}

fn render<'a>(state: &'a ApiState, node: &'a sup::NodeStatus) -> NodeView<'a> {
    let jailing = state.jailing.as_ref();
    NodeView {
        node,
        jailed: jailing.map(|j| j.jailed),
        unjailed_reasons: jailing.filter(|j| !j.jailed).map(|j| j.reasons.as_slice()),
    }
}

/// `GET /v1/node`: cordoned or not, the running or last drain's progress, jailed or not.
pub async fn get(state: Data<ApiState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let node = state.ports.node.send(sup::GetNode).await?;
    Ok(HttpResponse::Ok().json(render(&state, &node)))
}

/// `POST /v1/node/cordon {"reason"?}`: refuse new VMs from now on (persisted).
pub async fn cordon(
    state: Data<ApiState>,
    req: HttpRequest,
    body: JsonBody<CordonRequest>,
) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let reason = body.value.reason.unwrap_or_else(|| NO_REASON.into());
    let node = state
        .ports
        .cordon
        .send(sup::SetCordon {
            reason: Some(reason),
        })
        .await??;
    Ok(HttpResponse::Ok().json(render(&state, &node)))
}

/// `POST /v1/node/uncordon`: take new VMs again.
pub async fn uncordon(state: Data<ApiState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let node = state
        .ports
        .cordon
        .send(sup::SetCordon { reason: None })
        .await??;
    Ok(HttpResponse::Ok().json(render(&state, &node)))
}

/// `POST /v1/node/drain[?wait=false] {"reason"?, "mode"?: "stop"|"snapshot"}`: cordon, then
/// stop (or snapshot and stop) every running VM, a few at a time. Answers when all are done,
/// with the outcome, or with `wait=false` as soon as it has started (`202`); `GET /v1/node`
/// shows the progress meanwhile.
pub async fn drain(
    state: Data<ApiState>,
    req: HttpRequest,
    body: JsonBody<DrainRequest>,
) -> Result<HttpResponse, ApiError> {
    let params = Params::parse(req.query_string(), &["wait"])?;
    let wait = match params.get("wait") {
        None | Some("true") => true,
        Some("false") => false,
        Some(v) => {
            return Err(ApiError::InvalidParam {
                param: "wait".into(),
                reason: format!("{v:?} is not true or false"),
            })
        }
    };
    let reason = body.value.reason.unwrap_or_else(|| NO_REASON.into());
    let node = state
        .ports
        .drain
        .send(sup::Drain {
            reason,
            mode: body.value.mode.unwrap_or_default(),
            wait,
        })
        .await??;
    let node = render(&state, &node);
    Ok(if wait {
        HttpResponse::Ok().json(node)
    } else {
        HttpResponse::Accepted().json(node)
    })
}
