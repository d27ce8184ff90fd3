//! `POST /v1/images/pull` and `POST /v1/images/import`: root filesystem images from OCI
//! registries and archives ([`crate::images::oci::Puller`]).
//!
//! What can be checked without work (the name's syntax and that it is free, the reference's
//! and platform's syntax, an absolute path) fails with a plain HTTP error. Then the answer is
//! 200 with NDJSON: [`PullUpdate`] lines (what will be fetched, bytes per layer, building),
//! and last the image or the error. The pull runs on a thread of its own with a
//! current-thread runtime (it downloads, hashes and builds a filesystem; none of that may
//! block the server's workers). A client that disconnects does not cancel it: the image is
//! stored all the same, or nothing is.

use std::path::PathBuf;

use actix_web::http::header;
use actix_web::web::{Bytes, Data};
use actix_web::{HttpRequest, HttpResponse};
use futures::{SinkExt, StreamExt};
use hearth_proto::api::ErrorDetail;
use hearth_proto::api_images::NDJSON;
use hearth_proto::api_pull::{ImportArchive, PullImage, PullUpdate};

use super::body::JsonBody;
use super::images::info;
use super::query::Params;
use super::{ApiError, ApiState};
use crate::images::oci::manifest::Platform;
use crate::images::oci::reference::ImageRef;
use crate::images::oci::{PullError, PullOptions, Puller};
use crate::images::{self, ImageMeta};

fn puller(state: &ApiState) -> Result<Puller, ApiError> {
    state.oci.clone().ok_or(ApiError::NoImageStore)
}

fn check_name(puller: &Puller, name: &str) -> Result<(), ApiError> {
    if let Some(reason) = images::detect::name_problem(name) {
        return Err(ApiError::InvalidParam {
            param: "name".into(),
            reason: format!("{name:?}: {reason}"),
        });
    }
    match puller.store().get(name) {
        Ok(_) => Err(images::ImagesError::Exists { name: name.into() }.into()),
        Err(images::ImagesError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn platform(p: Option<&str>) -> Result<Platform, ApiError> {
    p.map_or(Ok(Platform::default()), |p| {
        Platform::parse(p).map_err(|e| ApiError::InvalidParam {
            param: "platform".into(),
            reason: e.to_string(),
        })
    })
}

/// `POST /v1/images/pull` with [`PullImage`].
pub async fn pull(
    state: Data<ApiState>,
    req: HttpRequest,
    body: JsonBody<PullImage>,
) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let puller = puller(&state)?;
    let request = body.value;
    check_name(&puller, &request.name)?;
    ImageRef::parse(&request.reference).map_err(|e| ApiError::InvalidParam {
        param: "reference".into(),
        reason: e.to_string(),
    })?;
    let opts = PullOptions {
        platform: platform(request.platform.as_deref())?,
        insecure: request.insecure,
        size: request.size,
        init: request.init,
    };
    let log = state.log.clone();
    Ok(streamed(move |sink| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                PullError::Images(images::ImagesError::Io {
                    op: "start a runtime for",
                    path: PathBuf::from(&request.reference),
                    source: e,
                })
            })?;
        let r = rt.block_on(puller.pull(&request.reference, &request.name, &opts, sink));
        log_outcome(&log, "pull", &request.reference, &request.name, &r);
        r
    }))
}

/// `POST /v1/images/import` with [`ImportArchive`].
pub async fn import(
    state: Data<ApiState>,
    req: HttpRequest,
    body: JsonBody<ImportArchive>,
) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let puller = puller(&state)?;
    let request = body.value;
    check_name(&puller, &request.name)?;
    if !request.path.is_absolute() {
        return Err(ApiError::InvalidParam {
            param: "path".into(),
            reason: format!("{} is not an absolute path", request.path.display()),
        });
    }
    let opts = PullOptions {
        platform: platform(request.platform.as_deref())?,
        insecure: false,
        size: request.size,
        init: request.init,
    };
    let log = state.log.clone();
    Ok(streamed(move |sink| {
        let r = puller.import_archive(
            &request.path,
            request.tag.as_deref(),
            &request.name,
            &opts,
            sink,
        );
        let source = request.path.display().to_string();
        log_outcome(&log, "import", &source, &request.name, &r);
        r
    }))
}

/// Removes the cached blobs no image uses any more (after an image is removed). A failure
/// is logged, not reported: the removal itself succeeded, and the next one collects again.
pub async fn collect_garbage(puller: Puller, log: slog::Logger) {
    match actix_web::web::block(move || puller.collect_garbage()).await {
        Ok(Ok(r)) if r.blobs > 0 => slog::info!(log, "blobs collected";
            "blobs" => r.blobs, "bytes" => r.bytes, "kept" => r.kept),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => slog::warn!(log, "blob collection failed"; "error" => %e),
        Err(e) => slog::warn!(log, "blob collection failed"; "error" => %e),
    }
}

fn log_outcome(
    log: &slog::Logger,
    op: &str,
    source: &str,
    name: &str,
    r: &Result<ImageMeta, PullError>,
) {
    match r {
        Ok(m) => slog::info!(log, "image built"; "op" => op, "source" => source,
            "name" => name, "bytes" => m.size),
        Err(e) => slog::info!(log, "image not built"; "op" => op, "source" => source,
            "name" => name, "error" => e.full_message()),
    }
}

/// Runs `work` on a thread of its own, answering with its progress and outcome as NDJSON.
fn streamed<F>(work: F) -> HttpResponse
where
    F: FnOnce(&mut (dyn FnMut(PullUpdate) + Send)) -> Result<ImageMeta, PullError> + Send + 'static,
{
    // Progress lines may be dropped when the client reads slowly (later ones supersede
    // them); the last line is always delivered.
    let (tx, rx) = futures::channel::mpsc::channel::<PullUpdate>(64);
    let mut progress = tx.clone();
    let mut last = tx;
    let spawned = std::thread::Builder::new()
        .name("image-pull".into())
        .spawn(move || {
            let mut sink = move |u: PullUpdate| {
                let _ = progress.try_send(u);
            };
            let update = match work(&mut sink) {
                Ok(meta) => PullUpdate::Image(Box::new(info(meta))),
                Err(e) => PullUpdate::Error(ErrorDetail {
                    code: e.code().into(),
                    message: e.full_message(),
                }),
            };
            let _ = futures::executor::block_on(last.send(update));
        });
    if let Err(e) = spawned {
        let line = PullUpdate::Error(ErrorDetail {
            code: "internal".into(),
            message: format!("Cannot start the pull's thread: {e}"),
        });
        return ndjson(futures::stream::iter([line]).boxed());
    }
    ndjson(rx.boxed())
}

fn ndjson(updates: futures::stream::BoxStream<'static, PullUpdate>) -> HttpResponse {
    let lines = updates.map(|update| {
        let mut line = serde_json::to_vec(&update).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(line))
    });
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, NDJSON))
        .streaming(lines)
}
