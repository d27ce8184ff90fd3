//! `/v1/vms` handlers: each parses the request, sends one supervisor message and renders the
//! answer.

use actix_web::web::{Data, Path};
use actix_web::{HttpRequest, HttpResponse};
use hearth_actors::supervisor::{self as sup, VmAction};
use hearth_proto::api;

use super::body::{idempotency, JsonBody};
use super::query::{self, Params};
use super::{ApiError, ApiState};

/// `POST /v1/vms`: creates a VM; answers 201 with it once the create has finished.
pub async fn create(
    state: Data<ApiState>,
    req: HttpRequest,
    body: JsonBody<api::CreateVm>,
) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    body.value.validate().map_err(sup::SupervisorError::from)?;
    check_disk_fits(&state, &body.value).await?;
    let idempotency = idempotency(&req, &body.raw)?;
    let spec = apply_image_init(&state, body.value).await?;
    let info = state
        .ports
        .create
        .send(sup::CreateVm { spec, idempotency })
        .await??;
    Ok(HttpResponse::Created().json(info))
}

/// Adds `init=/sbin/hearth-init` to the boot arguments when the root filesystem image was
/// built with hearth's init ([`crate::images::boot::boot_args_for`]). An unknown image is left
/// to the supervisor, which answers 422 for it.
async fn apply_image_init(
    state: &ApiState,
    mut spec: api::CreateVm,
) -> Result<api::CreateVm, ApiError> {
    let Some(store) = state.images.clone() else {
        return Ok(spec);
    };
    let rootfs = spec.rootfs.clone();
    let meta = actix_web::web::block(move || store.get(&rootfs).ok())
        .await
        .map_err(|e| ApiError::Internal {
            what: format!("image task: {e}"),
        })?;
    if let Some(meta) = meta {
        spec.boot_args =
            crate::images::boot::boot_args_for(&meta, spec.init, spec.boot_args.as_deref())
                .map_err(sup::SupervisorError::from)?;
    }
    Ok(spec)
}

/// Refuses a `disk_size` smaller than the root filesystem image (the disk is a copy of it).
/// An unknown image is left to the supervisor, which answers 422 for it.
async fn check_disk_fits(state: &ApiState, spec: &api::CreateVm) -> Result<(), ApiError> {
    let (Some(size), Some(store)) = (spec.disk_size, state.images.clone()) else {
        return Ok(());
    };
    let rootfs = spec.rootfs.clone();
    let meta = actix_web::web::block(move || store.get(&rootfs).ok())
        .await
        .map_err(|e| ApiError::Internal {
            what: format!("image task: {e}"),
        })?;
    match meta {
        Some(meta) if size < meta.size => Err(sup::SupervisorError::from(api::FieldError {
            field: "disk_size",
            reason: format!(
                "{size} is smaller than the root filesystem image {} ({} bytes); allowed: \
                 a multiple of {} in {}..={}",
                meta.name,
                meta.size,
                api::SECTOR,
                meta.size,
                api::MAX_DISK_SIZE
            ),
        })
        .into()),
        _ => Ok(()),
    }
}

/// `GET /v1/vms[?label=key=value]`: every VM, ordered by name.
pub async fn list(state: Data<ApiState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let params = Params::parse(req.query_string(), &["label"])?;
    let label = params
        .get("label")
        .map(api::parse_label)
        .transpose()
        .map_err(|reason| ApiError::InvalidParam {
            param: "label".into(),
            reason,
        })?;
    let vms = state.ports.list.send(sup::ListVms { label }).await?;
    Ok(HttpResponse::Ok().json(vms))
}

/// `GET /v1/vms/{name}`.
pub async fn get(
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
    Ok(HttpResponse::Ok().json(info))
}

async fn run(
    state: Data<ApiState>,
    req: HttpRequest,
    name: Path<String>,
    action: VmAction,
) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let idempotency = idempotency(&req, b"")?;
    let info = state
        .ports
        .action
        .send(sup::RunAction {
            name: name.into_inner(),
            action,
            idempotency,
        })
        .await??;
    Ok(HttpResponse::Ok().json(info))
}

/// `POST /v1/vms/{name}/start`.
pub async fn start(
    state: Data<ApiState>,
    req: HttpRequest,
    name: Path<String>,
) -> Result<HttpResponse, ApiError> {
    run(state, req, name, VmAction::Start).await
}

/// `POST /v1/vms/{name}/stop`.
pub async fn stop(
    state: Data<ApiState>,
    req: HttpRequest,
    name: Path<String>,
) -> Result<HttpResponse, ApiError> {
    run(state, req, name, VmAction::Stop).await
}

/// `POST /v1/vms/{name}/kill`.
pub async fn kill(
    state: Data<ApiState>,
    req: HttpRequest,
    name: Path<String>,
) -> Result<HttpResponse, ApiError> {
    run(state, req, name, VmAction::Kill).await
}

/// `POST /v1/vms/{name}/restart`.
pub async fn restart(
    state: Data<ApiState>,
    req: HttpRequest,
    name: Path<String>,
) -> Result<HttpResponse, ApiError> {
    run(state, req, name, VmAction::Restart).await
}

/// `DELETE /v1/vms/{name}`: answers 204 once the VM and everything it held are gone.
pub async fn delete(
    state: Data<ApiState>,
    req: HttpRequest,
    name: Path<String>,
) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    state
        .ports
        .delete
        .send(sup::DeleteVm {
            name: name.into_inner(),
        })
        .await??;
    Ok(HttpResponse::NoContent().finish())
}

/// `PUT /v1/vms/{name}/nat` with `{"enabled": bool}`.
pub async fn set_nat(
    state: Data<ApiState>,
    req: HttpRequest,
    name: Path<String>,
    body: JsonBody<api::SetNat>,
) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let info = state
        .ports
        .nat
        .send(sup::SetNat {
            name: name.into_inner(),
            enabled: body.value.enabled,
        })
        .await??;
    Ok(HttpResponse::Ok().json(info))
}

/// `GET /v1/vms/{name}/wait?state=S&timeout=T`: long poll; 200 with the VM once it is in
/// state `S`, 408 after `T` (default 30s, at most 10m).
pub async fn wait(
    state: Data<ApiState>,
    req: HttpRequest,
    name: Path<String>,
) -> Result<HttpResponse, ApiError> {
    let params = Params::parse(req.query_string(), &["state", "timeout"])?;
    let want = query::wait_state(params.get("state"))?;
    let timeout = query::wait_timeout(params.get("timeout"))?;
    let info = state
        .ports
        .wait
        .send(sup::WaitForState {
            name: name.into_inner(),
            state: want,
            timeout,
        })
        .await??;
    Ok(HttpResponse::Ok().json(info))
}
