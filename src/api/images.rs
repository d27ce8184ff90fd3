//! `/v1/images` handlers over the image store. Imports read a file on hearthd's host (the
//! body names it); the copy and hash run on the blocking pool. Removal is refused while a VM's
//! spec names the image, or while a create that resolved it may not be listed yet
//! ([`ImageStore::begin_removal`]).
//!
//! An import asked for with `Accept: application/x-ndjson` answers 200 at once and streams
//! [`ImportUpdate`] lines: progress after every MiB copied (the store's progress callback),
//! then the image or the error. Checks that need no copying (name syntax, absolute path,
//! store configured) still fail with a plain HTTP error first. A client that disconnects does
//! not cancel the copy; the image is stored all the same.

use std::collections::BTreeSet;

use actix_web::http::header;
use actix_web::web::{self, Bytes, Data, Path};
use actix_web::{HttpRequest, HttpResponse};
use futures::{SinkExt, StreamExt};
use hearth_actors::supervisor as sup;
use hearth_proto::api_images::{ImageInfo, ImageKind, ImportImage, ImportUpdate, NDJSON};

use super::body::JsonBody;
use super::query::Params;
use super::{ApiError, ApiState};
use crate::images::{self, ImageMeta, ImageStore};

/// The wire form of an image's metadata.
pub fn info(meta: ImageMeta) -> ImageInfo {
    ImageInfo {
        name: meta.name,
        kind: meta.kind,
        format: meta.format,
        size: meta.size,
        sha256: meta.sha256,
        source: meta.source,
        imported_unix: meta.imported_unix,
        oci: meta.oci.map(Box::new),
    }
}

fn store(state: &ApiState) -> Result<ImageStore, ApiError> {
    state.images.clone().ok_or(ApiError::NoImageStore)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, images::ImagesError> + Send + 'static,
) -> Result<T, ApiError> {
    web::block(f)
        .await
        .map_err(|e| ApiError::Internal {
            what: format!("image task: {e}"),
        })?
        .map_err(ApiError::from)
}

/// `POST /v1/images` with `{name, kind, path}`: imports the file; 201 with the image.
pub async fn import(
    state: Data<ApiState>,
    req: HttpRequest,
    body: JsonBody<ImportImage>,
) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let store = store(&state)?;
    let ImportImage { name, kind, path } = body.value;
    if !path.is_absolute() {
        return Err(ApiError::InvalidParam {
            param: "path".into(),
            reason: format!("{} is not an absolute path", path.display()),
        });
    }
    if let Some(reason) = images::detect::name_problem(&name) {
        return Err(ApiError::InvalidParam {
            param: "name".into(),
            reason: format!("{name:?}: {reason}"),
        });
    }
    if wants_ndjson(&req) {
        return Ok(import_streamed(store, name, kind, path));
    }
    let meta = blocking(move || store.import(&name, kind, &path, |_, _| {})).await?;
    Ok(HttpResponse::Created().json(info(meta)))
}

/// Whether the client accepts the streamed form of an import.
fn wants_ndjson(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept.split(',').any(|t| {
                t.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case(NDJSON))
            })
        })
}

/// Runs the import on the blocking pool and answers with its updates as they come.
fn import_streamed(
    store: ImageStore,
    name: String,
    kind: ImageKind,
    path: std::path::PathBuf,
) -> HttpResponse {
    // Progress lines may be dropped when the client reads slowly (the next one supersedes
    // them); the final line is always delivered.
    let (tx, rx) = futures::channel::mpsc::channel::<ImportUpdate>(16);
    let mut progress = tx.clone();
    let mut last = tx;
    actix_web::rt::spawn(async move {
        let result = blocking(move || {
            store.import(&name, kind, &path, |copied, total| {
                let _ = progress.try_send(ImportUpdate::Progress { copied, total });
            })
        })
        .await;
        let update = match result {
            Ok(meta) => ImportUpdate::Image(info(meta)),
            Err(e) => ImportUpdate::Error(e.body().error),
        };
        let _ = last.send(update).await;
    });
    let lines = rx.map(|update| {
        let mut line = serde_json::to_vec(&update).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(line))
    });
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, NDJSON))
        .streaming(lines)
}

/// `GET /v1/images`: every image, sorted by name.
pub async fn list(state: Data<ApiState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let store = store(&state)?;
    let list = blocking(move || store.list()).await?;
    let list: Vec<ImageInfo> = list.into_iter().map(info).collect();
    Ok(HttpResponse::Ok().json(list))
}

/// `GET /v1/images/{name}`: one image, with its OCI source and config when it was built from
/// an OCI image.
pub async fn get(
    state: Data<ApiState>,
    req: HttpRequest,
    name: Path<String>,
) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let store = store(&state)?;
    let name = name.into_inner();
    let meta = blocking(move || store.get(&name)).await?;
    Ok(HttpResponse::Ok().json(info(meta)))
}

/// `DELETE /v1/images/{name}`: 204, or 409 while a VM was made from it.
pub async fn delete(
    state: Data<ApiState>,
    req: HttpRequest,
    name: Path<String>,
) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let store = store(&state)?;
    let name = name.into_inner();
    // Begin before listing: a create that resolves the image after this point makes the
    // removal fail as in use even if its VM is not in the list (issue 8).
    let removal = blocking(move || store.begin_removal(&name)).await?;
    let vms = state.ports.list.send(sup::ListVms { label: None }).await?;
    let used: BTreeSet<String> = vms
        .into_iter()
        .flat_map(|vm| [vm.spec.kernel, vm.spec.rootfs])
        .collect();
    blocking(move || removal.finish(|n| used.contains(n))).await?;
    if let Some(puller) = state.oci.clone() {
        super::image_pull::collect_garbage(puller, state.log.clone()).await;
    }
    Ok(HttpResponse::NoContent().finish())
}
