//! `PATCH /v1/vms/{name}`: changes a live VM's labels, restart policy and time limit.

use actix_web::web::{Data, Path};
use actix_web::{HttpRequest, HttpResponse};
use hearth_actors::supervisor as sup;
use hearth_proto::api::FieldError;
use hearth_proto::api_policy::{TtlChange, UpdateVm};

use super::body::JsonBody;
use super::query::Params;
use super::{ApiError, ApiState};

/// `PATCH /v1/vms/{name}`: answers with the VM as changed.
pub async fn update(
    state: Data<ApiState>,
    req: HttpRequest,
    name: Path<String>,
    body: JsonBody<UpdateVm>,
) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let body = body.value;
    let ttl = body
        .ttl
        .as_deref()
        .map(str::parse::<TtlChange>)
        .transpose()
        .map_err(|e| {
            sup::SupervisorError::from(FieldError {
                field: "ttl",
                reason: e.to_string(),
            })
        })?;
    let info = state
        .ports
        .update
        .send(sup::UpdateVm {
            name: name.into_inner(),
            labels: body.labels,
            restart: body.restart,
            ttl,
            on_expiry: body.on_expiry,
        })
        .await??;
    Ok(HttpResponse::Ok().json(info))
}
