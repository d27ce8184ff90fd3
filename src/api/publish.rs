//! `/v1/vms/{name}/ports`: a VM's published ports. `GET` lists them, `POST` publishes one
//! more (a `PortMapping` body), `DELETE` withdraws one (the same body). Running or not: a
//! live VM's host rules change at once, conflicts answer 409 naming the other owner.

use actix_web::web::{Data, Path};
use actix_web::{HttpRequest, HttpResponse};
use hearth_actors::supervisor as sup;
use hearth_proto::api_publish::PortMapping;

use super::body::JsonBody;
use super::query::Params;
use super::{ApiError, ApiState};

/// `GET /v1/vms/{name}/ports`: the VM's published ports.
pub async fn list(
    state: Data<ApiState>,
    req: HttpRequest,
    name: Path<String>,
) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let info = state
        .ports
        .get
        .send(sup::GetVm {
            name: name.into_inner(),
        })
        .await??;
    Ok(HttpResponse::Ok().json(info.spec.publish))
}

/// `POST /v1/vms/{name}/ports`: publishes one more port; answers the VM's ports.
pub async fn publish(
    state: Data<ApiState>,
    req: HttpRequest,
    name: Path<String>,
    body: JsonBody<PortMapping>,
) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let ports = state
        .ports
        .publish
        .send(sup::PublishPort {
            name: name.into_inner(),
            mapping: body.value,
        })
        .await??;
    Ok(HttpResponse::Ok().json(ports))
}

/// `DELETE /v1/vms/{name}/ports`: withdraws one port; answers the VM's ports.
pub async fn unpublish(
    state: Data<ApiState>,
    req: HttpRequest,
    name: Path<String>,
    body: JsonBody<PortMapping>,
) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let ports = state
        .ports
        .unpublish
        .send(sup::UnpublishPort {
            name: name.into_inner(),
            mapping: body.value,
        })
        .await??;
    Ok(HttpResponse::Ok().json(ports))
}
