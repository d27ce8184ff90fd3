//! `PUT` and `GET /v1/vms/{name}/archive?path=`: tar streams into and out of the guest, as
//! Docker's archive API does them, proxied to the agent's `put_archive`/`get_archive` frames;
//! `HEAD` answers the path's stat alone (the agent's `stat`).
//!
//! Both directions stream: the request body goes to the agent as `DATA` frames as it arrives,
//! the agent's `DATA` frames go out as the response body as the client reads it, so memory
//! stays at a frame or two whatever the size. Both stop at the configured maximum: a larger
//! upload is refused with 413 (and an `ERROR` frame tells the agent to discard it); a larger
//! download is cut, and the client sees a truncated (aborted) body, never a complete-looking
//! short archive.

use actix_web::http::header::{self, HeaderValue};
use actix_web::web::{Bytes, Data, Path, Payload};
use actix_web::{HttpRequest, HttpResponse};
use futures::future::{select, Either};
use futures::StreamExt;
use hearth_actors::guest::{AgentCall, FrameReader, FrameWriter, GuestError, OpenStream, Opened};
use hearth_proto::agent::files::check_guest_path;
use hearth_proto::agent::frame::{Frame, FrameKind};
use hearth_proto::agent::{
    codes, ArchiveRequest, Empty, ErrorBody, PathStat, Request, StatRequest,
};
use hearth_proto::api_exec::PATH_STAT_HEADER;
use slog::warn;

use super::exec::ExecApi;
use super::query::Params;
use super::{ApiError, ApiState};

/// The media types a `PUT` body may declare (a missing `Content-Type` is taken as tar).
const TAR_TYPES: [&str; 2] = ["application/x-tar", "application/octet-stream"];

fn guest_path(req: &HttpRequest) -> Result<String, ApiError> {
    let params = Params::parse(req.query_string(), &["path"])?;
    let path = params.get("path").ok_or_else(|| ApiError::InvalidParam {
        param: "path".into(),
        reason: "required: the guest path (absolute)".into(),
    })?;
    check_guest_path(path).map_err(|reason| ApiError::InvalidParam {
        param: "path".into(),
        reason,
    })?;
    Ok(path.to_owned())
}

/// Why an upload stopped before `END`.
enum UploadEnd {
    TooLarge,
    Stalled,
    Client(String),
    Agent(GuestError),
}

/// `PUT /v1/vms/{name}/archive?path=DIR`: extracts the tar body into the guest directory
/// `DIR`; 200 with the agent's `ArchiveSummary`. The body may take as long as it needs but
/// may not stall: 408 when no bytes come for the body deadline.
///
/// # Errors
///
/// The request's [`ApiError`], rendered as its status and JSON body.
pub async fn put(
    exec: Data<ExecApi>,
    state: Data<ApiState>,
    req: HttpRequest,
    name: Path<String>,
    mut body: Payload,
) -> Result<HttpResponse, ApiError> {
    let path = guest_path(&req)?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if let Some(t) = content_type {
        let t = t.split(';').next().unwrap_or("").trim();
        if !TAR_TYPES.iter().any(|ok| t.eq_ignore_ascii_case(ok)) {
            return Err(ApiError::NotTar);
        }
    }
    let limit = exec.settings.max_archive_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let opened: Opened<Empty> = exec
        .guest
        .send(OpenStream::new(
            name.into_inner(),
            Request::PutArchive(ArchiveRequest { path }),
        ))
        .await??;
    let (mut reader, mut writer) = opened.stream.into_split();
    // A body may take long in all, but not stall: each chunk has the body deadline.
    let stall = state.body_timeout;
    let upload = Box::pin(async {
        let mut sent: u64 = 0;
        loop {
            let Ok(next) = tokio::time::timeout(stall, body.next()).await else {
                abort(&mut writer, "the client's upload stalled").await;
                return Err(UploadEnd::Stalled);
            };
            let Some(chunk) = next else { break };
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    abort(&mut writer, "the client's upload failed").await;
                    return Err(UploadEnd::Client(e.to_string()));
                }
            };
            sent += chunk.len() as u64;
            if sent > limit {
                abort(&mut writer, &format!("the archive is over {limit} bytes")).await;
                return Err(UploadEnd::TooLarge);
            }
            writer
                .send_chunked(FrameKind::Data, &chunk)
                .await
                .map_err(UploadEnd::Agent)?;
        }
        writer
            .send(&Frame::empty(FrameKind::End))
            .await
            .map_err(UploadEnd::Agent)?;
        Ok(())
    });
    // The agent may end the stream early (a bad archive): watch for its answer while sending.
    let answer = Box::pin(reader.next());
    let frame = match select(upload, answer).await {
        Either::Left((Ok(()), answer)) => answer.await?,
        Either::Left((Err(UploadEnd::TooLarge), _)) => return Err(too_large(limit)),
        Either::Left((Err(UploadEnd::Stalled), _)) => {
            return Err(ApiError::BodyTimeout {
                secs: stall.as_secs_f64(),
            })
        }
        Either::Left((Err(UploadEnd::Client(message)), _)) => {
            return Err(ApiError::InvalidBody { message })
        }
        // Writing failed: the agent's answer (an ERROR, usually) says why.
        Either::Left((Err(UploadEnd::Agent(e)), answer)) => match answer.await {
            Ok(Some(f)) => Some(f),
            _ => return Err(e.into()),
        },
        Either::Right((frame, _)) => frame?,
    };
    match frame {
        Some(f) if f.kind == FrameKind::Done => {
            let summary = f
                .as_done()
                .map_err(|e| GuestError::protocol(e.to_string()))?;
            Ok(HttpResponse::Ok().json(summary))
        }
        Some(f) if f.kind == FrameKind::Error => Err(agent_error(&f).into()),
        Some(f) => Err(GuestError::protocol(format!(
            "unexpected {:?} frame answering an upload",
            f.kind
        ))
        .into()),
        None => Err(GuestError::stream("the agent closed the stream without an answer").into()),
    }
}

fn too_large(limit: u64) -> ApiError {
    ApiError::TooLarge {
        limit: usize::try_from(limit).unwrap_or(usize::MAX),
    }
}

/// Tells the agent to discard the upload (best effort: it may be gone already).
async fn abort(writer: &mut FrameWriter, why: &str) {
    let _ = writer
        .send(&Frame::error(&ErrorBody::new(codes::ARCHIVE, why)))
        .await;
}

fn agent_error(f: &Frame) -> GuestError {
    match f.as_error() {
        Ok(e) => GuestError::Agent {
            code: e.code,
            message: e.message,
        },
        Err(e) => GuestError::protocol(e.to_string()),
    }
}

/// JSON with every non-ASCII character escaped, so it fits in a header value.
fn ascii_json(value: &impl serde::Serialize) -> String {
    let json = serde_json::to_string(value).unwrap_or_default();
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                use std::fmt::Write as _;
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{u:04x}");
            }
        }
    }
    out
}

/// `HEAD /v1/vms/{name}/archive?path=P`: only `P`'s `PathStat` in the `X-Hearth-Path-Stat`
/// header (404 when nothing is there), as Docker's stat of a container path.
///
/// # Errors
///
/// The request's [`ApiError`], rendered as its status and JSON body.
pub async fn stat(
    exec: Data<ExecApi>,
    req: HttpRequest,
    name: Path<String>,
) -> Result<HttpResponse, ApiError> {
    let path = guest_path(&req)?;
    let stat: PathStat = exec
        .guest
        .send(AgentCall::new(
            name.into_inner(),
            Request::Stat(StatRequest { path }),
        ))
        .await??;
    let stat = HeaderValue::from_str(&ascii_json(&stat))
        .map_err(|e| GuestError::protocol(format!("path stat: {e}")))?;
    Ok(HttpResponse::Ok()
        .insert_header((PATH_STAT_HEADER, stat))
        .finish())
}

/// `GET /v1/vms/{name}/archive?path=P`: `P` as a tar stream, its `PathStat` in the
/// `X-Hearth-Path-Stat` header. Failures after the headers abort the body instead.
///
/// # Errors
///
/// The request's [`ApiError`], rendered as its status and JSON body.
pub async fn get(
    exec: Data<ExecApi>,
    state: Data<ApiState>,
    req: HttpRequest,
    name: Path<String>,
) -> Result<HttpResponse, ApiError> {
    let path = guest_path(&req)?;
    let name = name.into_inner();
    let opened: Opened<PathStat> = exec
        .guest
        .send(OpenStream::new(
            name.clone(),
            Request::GetArchive(ArchiveRequest { path: path.clone() }),
        ))
        .await??;
    let stat = HeaderValue::from_str(&ascii_json(&opened.reply))
        .map_err(|e| GuestError::protocol(format!("path stat: {e}")))?;
    let (reader, writer) = opened.stream.into_split();
    let log = state.log.new(slog::o!("vm" => name, "path" => path));
    let body = download(reader, writer, exec.settings.max_archive_bytes, log);
    Ok(HttpResponse::Ok()
        .content_type("application/x-tar")
        .insert_header((PATH_STAT_HEADER, stat))
        .streaming(body))
}

/// The agent's `DATA` frames as body chunks, until `END`; any failure (or passing `limit`)
/// ends the body with an error, which aborts the response.
fn download(
    reader: FrameReader,
    writer: FrameWriter,
    limit: u64,
    log: slog::Logger,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    // The writer stays open for the whole download: closing it would tell the agent the host
    // went away.
    futures::stream::unfold(Some((reader, writer, 0u64)), move |state| {
        let log = log.clone();
        async move {
            let (mut reader, writer, sent) = state?;
            let fail = |why: String| {
                warn!(log, "archive download cut"; "error" => &why);
                Some((Err(std::io::Error::other(why)), None))
            };
            match reader.next().await {
                Ok(Some(f)) if f.kind == FrameKind::Data => {
                    let sent = sent + f.payload.len() as u64;
                    if sent > limit {
                        return fail(format!("the archive is over {limit} bytes"));
                    }
                    Some((Ok(Bytes::from(f.payload)), Some((reader, writer, sent))))
                }
                Ok(Some(f)) if f.kind == FrameKind::End => None,
                Ok(Some(f)) if f.kind == FrameKind::Error => fail(agent_error(&f).to_string()),
                Ok(Some(f)) => fail(format!(
                    "The agent broke the protocol: unexpected {:?} frame in a download",
                    f.kind
                )),
                Ok(None) => fail("the agent closed the stream before END".into()),
                Err(e) => fail(e.to_string()),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_json_is_ascii() {
        let s = ascii_json(&serde_json::json!({"name": "caf\u{e9} \u{1f600}"}));
        assert!(s.is_ascii());
        let back: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back["name"], "caf\u{e9} \u{1f600}");
    }
}
