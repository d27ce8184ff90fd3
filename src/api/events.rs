//! `/v1/events` handlers: the persisted event log as a JSON page, and as a server-sent event
//! stream that resumes after `?since=` or the `Last-Event-ID` header.

use actix_web::http::header;
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use hearth_actors::supervisor as sup;

use super::query::{self, Params};
use super::{sse, ApiError, ApiState};

/// Most events one `GET /v1/events` returns.
pub const MAX_LIMIT: u64 = 1000;

/// `GET /v1/events?since=N&limit=M`: events after `N` (default 0), oldest first, at most `M`
/// (default and maximum 1000).
pub async fn list(state: Data<ApiState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let params = Params::parse(req.query_string(), &["since", "limit"])?;
    let since = params.seq_or("since", 0)?;
    let limit = params.u64_or("limit", MAX_LIMIT)?;
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::InvalidParam {
            param: "limit".into(),
            reason: format!("{limit} is outside 1..={MAX_LIMIT}"),
        });
    }
    let events = state
        .ports
        .events
        .send(sup::EventsSince {
            since,
            limit: limit as u32,
        })
        .await??;
    Ok(HttpResponse::Ok().json(events))
}

/// The resume point of a stream: `Last-Event-ID` (a reconnecting client's last id) wins over
/// `?since=`.
fn resume_point(req: &HttpRequest, params: &Params) -> Result<u64, ApiError> {
    match req.headers().get("Last-Event-ID") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| ApiError::InvalidParam {
                param: "Last-Event-ID".into(),
                reason: "must be an event sequence number".into(),
            })
            .and_then(|n| query::check_seq("Last-Event-ID", n)),
        None => params.seq_or("since", 0),
    }
}

/// `GET /v1/events/stream?since=N`: server-sent events, replaying persisted events after the
/// resume point, then live ones.
pub async fn stream(state: Data<ApiState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let params = Params::parse(req.query_string(), &["since"])?;
    let since = resume_point(&req, &params)?;
    let shutdown = req.app_data::<sse::StreamShutdown>().cloned();
    let body = sse::event_stream(state.ports.clone(), since, shutdown).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .streaming(body))
}
