//! `/v1/vms/{name}/egress`: a VM's egress policy. `GET` answers it (with the packets dropped
//! for the guest in deny mode), `PUT` replaces it (an `EgressPolicy` body), running or not: a
//! live VM's firewall and DNS change at once, for new connections.

use actix_web::web::{Data, Path};
use actix_web::{HttpRequest, HttpResponse};
use hearth_actors::supervisor as sup;
use hearth_proto::api_egress::{EgressPolicy, EgressStatus};

use super::body::JsonBody;
use super::query::Params;
use super::{ApiError, ApiState};

/// `GET /v1/vms/{name}/egress`: the VM's policy and denied-packet count.
pub async fn get(
    state: Data<ApiState>,
    req: HttpRequest,
    name: Path<String>,
) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let status = state
        .ports
        .get_egress
        .send(sup::GetEgress {
            name: name.into_inner(),
        })
        .await??;
    Ok(HttpResponse::Ok().json(status))
}

/// `PUT /v1/vms/{name}/egress`: replaces the VM's policy; answers it.
pub async fn put(
    state: Data<ApiState>,
    req: HttpRequest,
    name: Path<String>,
    body: JsonBody<EgressPolicy>,
) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let policy = body.value;
    // Allow mode without lists is stored as no policy at all (the default).
    let stored = (policy != EgressPolicy::default()).then_some(policy);
    let info = state
        .ports
        .egress
        .send(sup::SetEgress {
            name: name.into_inner(),
            policy: stored,
        })
        .await??;
    Ok(HttpResponse::Ok().json(EgressStatus {
        policy: info.spec.egress.unwrap_or_default(),
        denied_packets: None,
    }))
}
