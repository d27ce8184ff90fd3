//! [`ApiError`]: every way a request can fail, and the one place that maps each to an HTTP
//! status and a stable error code. Every non-2xx answer has the body
//! `{"error":{"code","message"}}` ([`ErrorBody`]).

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use hearth_actors::firecracker::FirecrackerError;
use hearth_actors::guest::GuestError;
use hearth_actors::host::disks::DisksError;
use hearth_actors::nat::NatError;
use hearth_actors::snapshot::SnapshotError;
use hearth_actors::supervisor::{StepCause, SupervisorError};
use hearth_actors::tap_pool::TapPoolError;
use hearth_proto::api::{ErrorBody, ErrorDetail};

use crate::images::ImagesError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The supervisor refused or failed the operation.
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    /// The image store refused or failed the operation.
    #[error(transparent)]
    Images(#[from] ImagesError),
    /// Talking to the guest agent failed (its own error, unreachable, protocol violation).
    #[error(transparent)]
    Guest(GuestError),
    /// A query parameter, path segment or header is invalid.
    #[error("Invalid `{param}`: {reason}")]
    InvalidParam {
        /// The parameter's name.
        param: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The body is not valid JSON for this request (the message names the bad field).
    #[error("Invalid request body: {message}")]
    InvalidBody {
        /// The parser's message.
        message: String,
    },
    /// The body is larger than the limit.
    #[error("Request body is larger than {limit} bytes")]
    TooLarge {
        /// The limit, bytes.
        limit: usize,
    },
    /// The client did not send the whole body in time.
    #[error("The request body did not arrive within {secs} s")]
    BodyTimeout {
        /// The deadline, seconds.
        secs: f64,
    },
    /// The body is not `application/json`.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// An archive upload declares a type other than a tar stream.
    #[error("Content-Type must be application/x-tar")]
    NotTar,
    /// The TCP listener needs a bearer token and the request lacks the right one.
    #[error("Missing or wrong bearer token")]
    Unauthorized,
    /// No route has this path.
    #[error("No such endpoint: {path}")]
    NoRoute {
        /// The path asked for.
        path: String,
    },
    /// The path exists but not with this method.
    #[error("Method {method} is not allowed on {path} (allowed: {})", allow.join(", "))]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The path.
        path: String,
        /// The methods the path has (the `Allow` header).
        allow: Vec<String>,
    },
    /// The supervisor's mailbox is closed (hearthd is shutting down).
    #[error("The supervisor is not answering")]
    SupervisorGone,
    /// The image store is not configured.
    #[error("No image store is configured")]
    NoImageStore,
    /// A blocking task of the server failed.
    #[error("Internal error: {what}")]
    Internal {
        /// What failed.
        what: String,
    },
}

impl From<GuestError> for ApiError {
    /// The supervisor's part of a guest error (unknown VM, not running) maps as its own.
    fn from(e: GuestError) -> Self {
        match e {
            GuestError::Vm(e) => ApiError::Supervisor(e),
            other => ApiError::Guest(other),
        }
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(_: actix::MailboxError) -> Self {
        ApiError::SupervisorGone
    }
}

impl ApiError {
    /// The HTTP status and the stable error code of this error. The one place where domain
    /// errors meet HTTP.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use SupervisorError as S;
        match self {
            ApiError::Supervisor(e) => match e {
                S::InvalidField(_) => (StatusCode::BAD_REQUEST, "invalid_field"),
                S::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
                S::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
                S::InvalidState { .. } => (StatusCode::CONFLICT, "invalid_state"),
                S::UnknownImage { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_image"),
                S::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
                S::Cordoned { .. } => (StatusCode::SERVICE_UNAVAILABLE, "cordoned"),
                S::Timeout { .. } => (StatusCode::REQUEST_TIMEOUT, "timeout"),
                S::Step { source, .. } => step_status(source),
                S::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage"),
                S::SnapshotNotFound { .. } | S::NotPublished { .. } => {
                    (StatusCode::NOT_FOUND, "not_found")
                }
                S::SnapshotInUse { .. } => (StatusCode::CONFLICT, "in_use"),
            },
            ApiError::Images(e) => match e {
                ImagesError::InvalidName { .. } => (StatusCode::BAD_REQUEST, "invalid_field"),
                ImagesError::Exists { .. } => (StatusCode::CONFLICT, "conflict"),
                ImagesError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
                ImagesError::InUse { .. } => (StatusCode::CONFLICT, "in_use"),
                // The request is well formed; what its path names cannot be imported.
                ImagesError::Source { .. } | ImagesError::NotAFile { .. } => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "invalid_source")
                }
                ImagesError::NotAKernel { .. }
                | ImagesError::NotExt4 { .. }
                | ImagesError::NotSectors { .. } => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "invalid_image")
                }
                ImagesError::SourceChanged { .. } => (StatusCode::CONFLICT, "conflict"),
                ImagesError::Io { .. } | ImagesError::Meta { .. } => {
                    (StatusCode::INTERNAL_SERVER_ERROR, "storage")
                }
            },
            ApiError::Guest(e) => guest_status(e),
            ApiError::InvalidParam { .. } => (StatusCode::BAD_REQUEST, "invalid_parameter"),
            ApiError::InvalidBody { .. } => (StatusCode::BAD_REQUEST, "invalid_body"),
            ApiError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::BodyTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            ApiError::UnsupportedMediaType | ApiError::NotTar => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NoRoute { .. } => (StatusCode::NOT_FOUND, "no_route"),
            ApiError::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
            ApiError::SupervisorGone | ApiError::NoImageStore => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            ApiError::Internal { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// The message shown to clients: the error and, for image source errors, its cause
    /// (e.g. "No such file or directory"), which the top-level message leaves out.
    fn message(&self) -> String {
        match self {
            ApiError::Images(ImagesError::Source { source, .. }) => {
                format!("Invalid `path`: {self}: {source}")
            }
            ApiError::Images(ImagesError::NotAFile { .. }) => format!("Invalid `path`: {self}"),
            ApiError::Images(ImagesError::InvalidName { .. }) => format!("Invalid `name`: {self}"),
            _ => self.to_string(),
        }
    }

    /// The JSON error body of this error.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.status_and_code().1.to_owned(),
                message: self.message(),
            },
        }
    }
}

/// The status of a guest agent failure: the agent's own error codes map to what they mean
/// for the request (no such session or path 404, refused 403, bad archive 400); an agent that
/// cannot be reached, fails, or breaks the protocol is an upstream failure (502).
fn guest_status(e: &GuestError) -> (StatusCode, &'static str) {
    use hearth_proto::agent::codes;
    match e {
        GuestError::Vm(_) | GuestError::WrongOp { .. } => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        }
        GuestError::Unreachable { .. } => (StatusCode::BAD_GATEWAY, "agent_unreachable"),
        GuestError::Protocol { .. } => (StatusCode::BAD_GATEWAY, "agent_protocol"),
        GuestError::Stream { .. } => (StatusCode::BAD_GATEWAY, "agent_stream"),
        GuestError::Busy { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_connections"),
        GuestError::Gone => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        GuestError::Agent { code, .. } => match code.as_str() {
            codes::NO_SUCH_SESSION => (StatusCode::NOT_FOUND, "no_such_session"),
            codes::NOT_FOUND => (StatusCode::NOT_FOUND, "not_found"),
            codes::NOT_A_DIRECTORY => (StatusCode::BAD_REQUEST, "not_a_directory"),
            codes::ARCHIVE => (StatusCode::BAD_REQUEST, "archive"),
            codes::BAD_REQUEST => (StatusCode::BAD_REQUEST, "bad_request"),
            codes::PERMISSION_DENIED => (StatusCode::FORBIDDEN, "permission_denied"),
            codes::TOO_MANY_SESSIONS => (StatusCode::TOO_MANY_REQUESTS, "too_many_sessions"),
            // The guest's agent predates the op (e.g. a v1 agent): the VM, not hearthd, lacks
            // it, and a retry will not help until the guest's agent is updated.
            codes::UNKNOWN_OP | codes::UNSUPPORTED_VERSION => {
                (StatusCode::CONFLICT, "agent_unsupported")
            }
            _ => (StatusCode::BAD_GATEWAY, "agent_error"),
        },
    }
}

/// The status of a failed lifecycle step, from its typed cause: a dependency that is
/// exhausted, missing or shutting down is 503 (retry later or elsewhere), a request the disk
/// backend refuses is the client's (400/422), anything else is hearth's failure (500).
fn step_status(cause: &StepCause) -> (StatusCode, &'static str) {
    const UNAVAILABLE: (StatusCode, &str) = (StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    const FAILED: (StatusCode, &str) = (StatusCode::INTERNAL_SERVER_ERROR, "step_failed");
    match cause {
        StepCause::ActorGone(_) => UNAVAILABLE,
        StepCause::Pool(e) => match **e {
            TapPoolError::IpsExhausted { .. }
            | TapPoolError::BridgeFull { .. }
            | TapPoolError::NamesExhausted { .. }
            | TapPoolError::NotInitialized
            | TapPoolError::TornDown => UNAVAILABLE,
            _ => FAILED,
        },
        StepCause::Nat(e) => match **e {
            NatError::NoEgress | NatError::EgressMissing { .. } | NatError::NotReady { .. } => {
                UNAVAILABLE
            }
            _ => FAILED,
        },
        StepCause::Vmm(e) => match **e {
            FirecrackerError::BinaryNotFound { .. }
            | FirecrackerError::BinaryNotExecutable { .. } => UNAVAILABLE,
            // The snapshot needs another Firecracker than this host's: not hearth's failure.
            FirecrackerError::IncompatibleSnapshot { .. } => {
                (StatusCode::CONFLICT, "incompatible_snapshot")
            }
            _ => FAILED,
        },
        StepCause::Disk(e) => match &**e {
            SnapshotError::InvalidRequest { source, .. } => match source {
                DisksError::TooSmall { .. } | DisksError::SizeNotSectors { .. } => {
                    (StatusCode::BAD_REQUEST, "invalid_field")
                }
                DisksError::BaseNotSectors { .. } => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "invalid_image")
                }
                _ => FAILED,
            },
            _ => FAILED,
        },
        StepCause::Dns(_)
        | StepCause::NoVsockCid(_)
        | StepCause::Replay(_)
        | StepCause::Files { .. }
        | StepCause::Guest(_) => FAILED,
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized => {
                res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            // The rest of the body may still come: the connection cannot be reused.
            ApiError::BodyTimeout { .. } => {
                res.force_close();
            }
            ApiError::MethodNotAllowed { allow, .. } => {
                res.insert_header((header::ALLOW, allow.join(", ")));
            }
            _ => {}
        }
        res.json(self.body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_actors::supervisor::store::VmStoreError;
    use hearth_proto::api::{FieldError, VmState};

    #[test]
    #[expect(clippy::too_many_lines, reason = "one case per error variant, a table")]
    fn supervisor_errors_map_to_their_status() {
        let cases: Vec<(SupervisorError, u16, &str)> = vec![
            (
                FieldError {
                    field: "vcpus",
                    reason: "0 is outside 1..=32".into(),
                }
                .into(),
                400,
                "invalid_field",
            ),
            (
                SupervisorError::NotFound { name: "a".into() },
                404,
                "not_found",
            ),
            (
                SupervisorError::Conflict {
                    message: "taken".into(),
                },
                409,
                "conflict",
            ),
            (
                SupervisorError::InvalidState {
                    name: "a".into(),
                    state: VmState::Stopped,
                    op: "stop",
                },
                409,
                "invalid_state",
            ),
            (
                SupervisorError::UnknownImage {
                    kind: "kernel",
                    image: "k".into(),
                },
                422,
                "unknown_image",
            ),
            (
                SupervisorError::Unavailable {
                    what: "No free address".into(),
                },
                503,
                "unavailable",
            ),
            (
                SupervisorError::Cordoned {
                    reason: "kernel upgrade".into(),
                },
                503,
                "cordoned",
            ),
            (
                SupervisorError::Timeout {
                    name: "a".into(),
                    state: VmState::Running,
                },
                408,
                "timeout",
            ),
            (
                SupervisorError::step(
                    "disk",
                    SnapshotError::Remove {
                        vm: "a".into(),
                        source: DisksError::Io {
                            op: "remove",
                            path: "/d/a.img".into(),
                            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
                        },
                    },
                ),
                500,
                "step_failed",
            ),
            (
                SupervisorError::step(
                    "network lease",
                    TapPoolError::IpsExhausted {
                        cidr: "172.31.240.0/29".parse().unwrap(),
                        leased: 5,
                    },
                ),
                503,
                "unavailable",
            ),
            (
                SupervisorError::step("nat", NatError::NoEgress),
                503,
                "unavailable",
            ),
            (
                SupervisorError::step("spawn", actix::MailboxError::Closed),
                503,
                "unavailable",
            ),
            (
                SupervisorError::step(
                    "disk",
                    SnapshotError::InvalidRequest {
                        vm: "a".into(),
                        source: DisksError::TooSmall {
                            requested: 512,
                            base: 1024,
                        },
                    },
                ),
                400,
                "invalid_field",
            ),
            (
                VmStoreError::Storage("disk I/O".into()).into(),
                500,
                "storage",
            ),
        ];
        for (err, status, code) in cases {
            let api = ApiError::from(err.clone());
            assert_eq!(api.status_and_code().0.as_u16(), status, "{err:?}");
            let body = api.body();
            assert_eq!(body.error.code, code, "{err:?}");
            assert_eq!(body.error.message, err.to_string());
        }
    }

    #[test]
    fn step_messages_carry_the_whole_cause() {
        let err = SupervisorError::step(
            "disk",
            SnapshotError::Create {
                vm: "a".into(),
                source: DisksError::Io {
                    op: "copy",
                    path: "/d/a.img".into(),
                    // ENOSPC on Linux.
                    source: std::io::Error::from_raw_os_error(28),
                },
            },
        );
        let msg = ApiError::from(err).body().error.message;
        assert!(
            msg.starts_with("disk failed: Cannot create the disk of VM a: Cannot copy /d/a.img: "),
            "{msg}"
        );
        assert!(msg.contains("No space left on device"), "{msg}");
    }

    #[test]
    fn field_errors_name_the_field() {
        let api = ApiError::from(SupervisorError::from(FieldError {
            field: "memory_mib",
            reason: "too small".into(),
        }));
        assert!(api.body().error.message.contains("`memory_mib`"));
    }

    #[test]
    fn image_source_errors_name_the_path_and_cause() {
        let err = ApiError::from(ImagesError::Source {
            path: "/nope".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
        assert_eq!(
            err.status_and_code(),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_source")
        );
        let msg = err.body().error.message;
        assert!(msg.contains("`path`") && msg.contains("/nope"), "{msg}");
    }
}
