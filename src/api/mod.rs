//! hearthd's HTTP control endpoint: a JSON API under `/v1` (VMs, images, events, health),
//! Prometheus metrics at `/metrics` and an OpenAPI document at `/v1/openapi.json`.
//!
//! Requests flow one way: a handler parses and checks the request (body size, content type,
//! unknown fields, query parameters), turns it into one supervisor message, sends it through
//! [`SupervisorPorts`] and renders the answer. Every error, whatever its source, becomes
//! [`ApiError`], which alone decides the HTTP status and the `{"error":{"code","message"}}` body.
//! Image endpoints call the image store (`crate::images`) on the blocking pool.
//!
//! [`server`] owns the listeners: a Unix socket by default, and an optional TCP listener that
//! requires a bearer token. [`fake`] and [`testing`] hold an in-memory supervisor and a
//! ready-made server over it, for the tests of this API and of hearthctl (only with the
//! `testing` feature, so release binaries carry no fake).

pub mod archive;
pub mod attach;
pub mod body;
pub mod egress;
pub mod error;
pub mod events;
pub mod exec;
#[cfg(any(test, doc, feature = "testing"))]
pub mod fake;
pub mod image_pull;
pub mod images;
pub mod metrics;
mod metrics_egress;
mod metrics_snapshot;
pub mod node;
pub mod openapi;
pub mod openapi_egress;
pub mod openapi_exec;
#[cfg(test)]
mod openapi_nulls;
pub mod openapi_oci;
pub mod openapi_policy;
pub mod openapi_publish;
pub mod openapi_snapshot;
pub mod policy;
pub mod ports;
pub mod publish;
pub mod query;
pub mod routes;
pub mod server;
pub mod snapshots;
pub mod sse;
#[cfg(any(test, doc, feature = "testing"))]
pub mod testing;
pub mod vms;

pub use error::ApiError;
pub use ports::SupervisorPorts;
pub use server::{ApiServer, ApiServerError, ApiSettings};
pub use snapshots::SnapshotPorts;

use crate::images::ImageStore;

/// Default maximum size of a JSON request body, bytes.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Default time a client has to send a whole request body once its headers are in.
pub const DEFAULT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What every handler shares: the way to the supervisor and the image store.
#[derive(Clone)]
pub struct ApiState {
    /// The supervisor's mailboxes.
    pub ports: SupervisorPorts,
    /// The image store; `None` makes the image endpoints answer 503.
    pub images: Option<ImageStore>,
    /// The supervisor's snapshot mailboxes; `None` makes the snapshot endpoints (pause and
    /// resume excepted) answer 503.
    pub snapshots: Option<SnapshotPorts>,
    /// OCI pulls and archive imports into that store; `None` makes them answer 503.
    pub oci: Option<crate::images::oci::Puller>,
    /// Whether hearthd's VMMs run jailed, shown by `/v1/node`; `None` leaves it out (test
    /// servers, which decide nothing).
    pub jailing: Option<node::JailStatus>,
    /// Maximum size of a JSON request body, bytes.
    pub body_limit: usize,
    /// Time a client has to send a whole request body ([`DEFAULT_BODY_TIMEOUT`]).
    pub body_timeout: std::time::Duration,
    /// The access log: one line per request (debug for successes, info for client errors,
    /// warn for server errors).
    pub log: slog::Logger,
}

impl ApiState {
    /// State over `ports` and `images` with the default body limit and no log.
    pub fn new(ports: SupervisorPorts, images: Option<ImageStore>) -> Self {
        ApiState {
            ports,
            images,
            snapshots: None,
            oci: None,
            jailing: None,
            body_limit: DEFAULT_BODY_LIMIT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            log: slog::Logger::root(slog::Discard, slog::o!()),
        }
    }

    /// The same state, serving the snapshot endpoints through `ports`.
    #[must_use]
    pub fn with_snapshots(mut self, ports: SnapshotPorts) -> Self {
        self.snapshots = Some(ports);
        self
    }

    /// The same state, with OCI pulls and imports through `puller`.
    #[must_use]
    pub fn with_oci(mut self, puller: crate::images::oci::Puller) -> Self {
        self.oci = Some(puller);
        self
    }

    /// The same state, reporting `jailing` in `/v1/node`.
    #[must_use]
    pub fn with_jailing(mut self, jailing: node::JailStatus) -> Self {
        self.jailing = Some(jailing);
        self
    }

    /// The same state, logging requests to `log`.
    #[must_use]
    pub fn with_logger(mut self, log: slog::Logger) -> Self {
        self.log = log.new(slog::o!("component" => "api"));
        self
    }
}
