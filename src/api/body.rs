//! Request bodies and headers: [`JsonBody`] reads a JSON body with a size limit, a content-type
//! check and serde's strict parsing (unknown fields are refused by name), keeping the raw bytes
//! so [`idempotency`] can digest the request.

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{FromRequest, HttpRequest};
use futures::future::LocalBoxFuture;
use futures::StreamExt;
use hearth_actors::supervisor::Idempotency;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::{ApiError, ApiState, DEFAULT_BODY_LIMIT, DEFAULT_BODY_TIMEOUT};

/// Name of the header carrying a client's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// Longest idempotency key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// A JSON request body parsed into `T`, with the bytes it came as.
#[derive(Debug)]
pub struct JsonBody<T> {
    /// The parsed body.
    pub value: T,
    /// The body as received.
    pub raw: Bytes,
}

/// Whether a `Content-Type` value is JSON (`application/json`, any parameters).
pub fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// Parses `raw` as `T`; the error message is serde's, which names unknown or mistyped fields.
/// Bodies are JSON objects only: serde would also take an array as a struct's fields in
/// order (`["name","k","r"]`), which no client means.
pub fn parse<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    let first = raw.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|&b| b != b'{') {
        return Err(ApiError::InvalidBody {
            message: "the body must be a JSON object".into(),
        });
    }
    serde_json::from_slice(raw).map_err(|e| ApiError::InvalidBody {
        message: e.to_string(),
    })
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let state = req.app_data::<actix_web::web::Data<ApiState>>();
        let limit = state.map_or(DEFAULT_BODY_LIMIT, |s| s.body_limit);
        let deadline = state.map_or(DEFAULT_BODY_TIMEOUT, |s| s.body_timeout);
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let json = is_json(content_type);
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if !json {
                return Err(ApiError::UnsupportedMediaType);
            }
            if declared.is_some_and(|n| n > limit) {
                return Err(ApiError::TooLarge { limit });
            }
            let read = async {
                let mut buf = BytesMut::new();
                while let Some(chunk) = payload.next().await {
                    let chunk = chunk.map_err(|e| ApiError::InvalidBody {
                        message: e.to_string(),
                    })?;
                    if buf.len() + chunk.len() > limit {
                        return Err(ApiError::TooLarge { limit });
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(buf)
            };
            // A client that sends part of a body and stalls would otherwise hold the
            // connection (and a worker's attention) for ever.
            let buf = tokio::time::timeout(deadline, read).await.map_err(|_| {
                ApiError::BodyTimeout {
                    secs: deadline.as_secs_f64(),
                }
            })??;
            let raw = buf.freeze();
            let value = parse(&raw)?;
            Ok(JsonBody { value, raw })
        })
    }
}

/// The digest of a request that an idempotency key is bound to: sha256 over the method, the
/// path and the body, lowercase hex.
pub fn request_hash(method: &str, path: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update(b"\n");
    h.update(path.as_bytes());
    h.update(b"\n");
    h.update(body);
    format!("{:x}", h.finalize())
}

/// Checks an idempotency key: 1-255 visible ASCII characters.
pub fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::InvalidParam {
            param: IDEMPOTENCY_KEY.into(),
            reason: format!("must be 1-{MAX_KEY_LEN} visible ASCII characters"),
        });
    }
    Ok(())
}

/// The request's idempotency key with the digest of the request, if it carries a key.
pub fn idempotency(req: &HttpRequest, body: &[u8]) -> Result<Option<Idempotency>, ApiError> {
    let Some(value) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value.to_str().map_err(|_| ApiError::InvalidParam {
        param: IDEMPOTENCY_KEY.into(),
        reason: "must be visible ASCII".into(),
    })?;
    check_key(key)?;
    Ok(Some(Idempotency {
        key: key.to_owned(),
        request_hash: request_hash(req.method().as_str(), req.path(), body),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
        assert!(!is_json("application/jsonx"));
    }

    #[test]
    fn hash_covers_method_path_and_body() {
        let a = request_hash("POST", "/v1/vms", b"{}");
        assert_eq!(a.len(), 64);
        assert_eq!(a, request_hash("POST", "/v1/vms", b"{}"));
        assert_ne!(a, request_hash("PUT", "/v1/vms", b"{}"));
        assert_ne!(a, request_hash("POST", "/v1/vm", b"{}"));
        assert_ne!(a, request_hash("POST", "/v1/vms", b"{ }"));
        // The separator keeps path and body apart.
        assert_ne!(
            request_hash("POST", "/a", b"b"),
            request_hash("POST", "/a\nb", b"")
        );
    }

    #[test]
    fn keys_are_checked() {
        check_key("abc-123_x").unwrap();
        for bad in ["", "has space", &"k".repeat(256), "é"] {
            let err = check_key(bad).unwrap_err();
            assert!(err.to_string().contains(IDEMPOTENCY_KEY), "{err}");
        }
    }

    /// Issue 9, finding 4: `["name","k","r"]` created a VM.
    #[test]
    fn bodies_are_objects_only() {
        for bad in [
            &br#"["a","k","r"]"#[..],
            b" [true]",
            b"true",
            b"1",
            b"\"x\"",
            b"null",
        ] {
            let err = parse::<hearth_proto::api::CreateVm>(bad).unwrap_err();
            assert!(err.to_string().contains("JSON object"), "{err}");
        }
        let err = parse::<hearth_proto::api::SetNat>(b"[true]").unwrap_err();
        assert!(err.to_string().contains("JSON object"), "{err}");
        parse::<hearth_proto::api::SetNat>(b" {\"enabled\": true}").unwrap();
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = parse::<hearth_proto::api::SetNat>(br#"{"enabled":true,"nope":1}"#).unwrap_err();
        assert!(err.to_string().contains("`nope`"), "{err}");
    }
}
