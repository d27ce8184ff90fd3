//! Pause, resume, snapshot and fork handlers (`POST /v1/vms/{name}/pause|resume|snapshots|fork`,
//! `GET|DELETE /v1/snapshots[/{name}]`); a restore is `POST /v1/vms` with `from_snapshot`
//! (`vms::create`). Pause and resume are lifecycle actions through the usual action port; the
//! rest go through [`SnapshotPorts`].

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, Recipient};
use actix_web::web::{Data, Path};
use actix_web::{HttpRequest, HttpResponse};
use hearth_actors::supervisor::{self as sup, VmAction};
use hearth_proto::api_snapshot;

use super::body::{idempotency, JsonBody};
use super::query::Params;
use super::{ApiError, ApiState};

/// The supervisor's snapshot mailboxes.
#[derive(Clone)]
pub struct SnapshotPorts {
    /// `POST /v1/vms/{name}/snapshots`.
    pub create: Recipient<sup::CreateSnapshot>,
    /// `GET /v1/snapshots`.
    pub list: Recipient<sup::ListSnapshots>,
    /// `GET /v1/snapshots/{name}`.
    pub get: Recipient<sup::GetSnapshot>,
    /// `DELETE /v1/snapshots/{name}`.
    pub delete: Recipient<sup::DeleteSnapshot>,
    /// `POST /v1/vms/{name}/fork`.
    pub fork: Recipient<sup::ForkVm>,
}

impl SnapshotPorts {
    /// The ports of `addr`.
    pub fn new<A>(addr: &Addr<A>) -> Self
    where
        A: Actor
            + Handler<sup::CreateSnapshot>
            + Handler<sup::ListSnapshots>
            + Handler<sup::GetSnapshot>
            + Handler<sup::DeleteSnapshot>
            + Handler<sup::ForkVm>,
        A::Context: ToEnvelope<A, sup::CreateSnapshot>
            + ToEnvelope<A, sup::ListSnapshots>
            + ToEnvelope<A, sup::GetSnapshot>
            + ToEnvelope<A, sup::DeleteSnapshot>
            + ToEnvelope<A, sup::ForkVm>,
    {
        SnapshotPorts {
            create: addr.clone().recipient(),
            list: addr.clone().recipient(),
            get: addr.clone().recipient(),
            delete: addr.clone().recipient(),
            fork: addr.clone().recipient(),
        }
    }
}

fn ports(state: &ApiState) -> Result<&SnapshotPorts, ApiError> {
    state.snapshots.as_ref().ok_or_else(|| {
        ApiError::Supervisor(sup::SupervisorError::Unavailable {
            what: "This server has no snapshot support".into(),
        })
    })
}

/// `POST /v1/vms/{name}/pause`: 200 with the VM, now `paused`.
pub async fn pause(
    state: Data<ApiState>,
    req: HttpRequest,
    name: Path<String>,
) -> Result<HttpResponse, ApiError> {
    super::vms::run(state, req, name, VmAction::Pause).await
}

/// `POST /v1/vms/{name}/resume`: 200 with the VM, `running` again.
pub async fn resume(
    state: Data<ApiState>,
    req: HttpRequest,
    name: Path<String>,
) -> Result<HttpResponse, ApiError> {
    super::vms::run(state, req, name, VmAction::Resume).await
}

/// `POST /v1/vms/{name}/snapshots`: 201 with the snapshot once it is complete. With an
/// `Idempotency-Key`, a retry answers the first snapshot again.
pub async fn create(
    state: Data<ApiState>,
    req: HttpRequest,
    name: Path<String>,
    body: JsonBody<api_snapshot::SnapshotCreate>,
) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let idempotency = idempotency(&req, &body.raw)?;
    body.value.validate().map_err(sup::SupervisorError::from)?;
    let info = ports(&state)?
        .create
        .send(sup::CreateSnapshot {
            vm: name.into_inner(),
            spec: body.value,
            idempotency,
        })
        .await??;
    Ok(HttpResponse::Created().json(info))
}

/// `POST /v1/vms/{name}/fork`: 201 with the new VM once it runs. With an `Idempotency-Key`,
/// a retry answers the first fork's VM again.
pub async fn fork(
    state: Data<ApiState>,
    req: HttpRequest,
    name: Path<String>,
    body: JsonBody<api_snapshot::ForkVm>,
) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let idempotency = idempotency(&req, &body.raw)?;
    body.value.validate().map_err(sup::SupervisorError::from)?;
    let info = ports(&state)?
        .fork
        .send(sup::ForkVm {
            source: name.into_inner(),
            spec: body.value,
            idempotency,
        })
        .await??;
    Ok(HttpResponse::Created().json(info))
}

/// `GET /v1/snapshots`: every snapshot, ordered by name.
pub async fn list(state: Data<ApiState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let all = ports(&state)?.list.send(sup::ListSnapshots {}).await?;
    Ok(HttpResponse::Ok().json(all))
}

/// `GET /v1/snapshots/{name}`.
pub async fn get(
    state: Data<ApiState>,
    req: HttpRequest,
    name: Path<String>,
) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let info = ports(&state)?
        .get
        .send(sup::GetSnapshot {
            name: name.into_inner(),
        })
        .await??;
    Ok(HttpResponse::Ok().json(info))
}

/// `DELETE /v1/snapshots/{name}`: 204 once its files are gone; 409 `in_use` naming the VMs
/// restored from it while any exists.
pub async fn delete(
    state: Data<ApiState>,
    req: HttpRequest,
    name: Path<String>,
) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    ports(&state)?
        .delete
        .send(sup::DeleteSnapshot {
            name: name.into_inner(),
        })
        .await??;
    Ok(HttpResponse::NoContent().finish())
}
