//! The node agent's side of hearthd's HTTP API on its Unix socket, through hearthctl's
//! client (`hearth::client`), which blocks: each call runs on tokio's blocking pool so the
//! agent's watch loop keeps running.

use std::path::PathBuf;

use hearth::client::{ApiPath, Client, ClientError, Method};
use hearth_proto::api::{CreateVm, Event, VmInfo};

use crate::plan::ObservedVm;

/// The header hearthd reads idempotency keys from.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// Why a call to hearthd failed.
#[derive(Debug, thiserror::Error)]
pub enum HearthdError {
    /// The client failed or hearthd answered with an error.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The blocking task was cancelled or panicked.
    #[error("hearthd call did not complete: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl HearthdError {
    /// Whether hearthd could not be reached (as opposed to refusing a request).
    pub fn is_unreachable(&self) -> bool {
        match self {
            HearthdError::Client(e) => {
                e.is_unreachable() || matches!(e, ClientError::Io(_) | ClientError::Protocol(_))
            }
            HearthdError::Join(_) => false,
        }
    }

    /// Whether hearthd answered 404.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            HearthdError::Client(ClientError::Api { status: 404, .. })
        )
    }
}

/// hearthd on this node.
#[derive(Debug, Clone)]
pub struct Hearthd {
    client: Client,
}

impl Hearthd {
    /// hearthd listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Hearthd {
            client: Client::new(socket),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Client) -> Result<T, ClientError> + Send + 'static,
    ) -> Result<T, HearthdError> {
        let client = self.client.clone();
        Ok(tokio::task::spawn_blocking(move || f(&client)).await??)
    }

    /// Every VM hearthd has.
    pub async fn list(&self) -> Result<Vec<ObservedVm>, HearthdError> {
        let vms: Vec<VmInfo> = self.run(|c| c.get("/v1/vms")).await?;
        Ok(vms
            .into_iter()
            .map(|v| ObservedVm {
                name: v.name,
                state: v.state,
                guest_ip: v.guest_ip,
                spec: v.spec,
            })
            .collect())
    }

    /// `POST /v1/vms` with an idempotency key.
    pub async fn create(&self, spec: CreateVm, key: String) -> Result<VmInfo, HearthdError> {
        self.run(move |c| c.send_json(Method::POST, "/v1/vms", &[(IDEMPOTENCY_KEY, &key)], &spec))
            .await
    }

    /// `POST /v1/vms/{vm}/start` or `/stop`, with an idempotency key.
    pub async fn lifecycle(
        &self,
        vm: String,
        verb: &'static str,
        key: String,
    ) -> Result<VmInfo, HearthdError> {
        self.run(move |c| {
            let path = ApiPath::new("/v1/vms").segment(&vm).segment(verb);
            c.request(Method::POST, path, &[(IDEMPOTENCY_KEY, &key)], None)?
                .ok()?
                .json()
        })
        .await
    }

    /// `DELETE /v1/vms/{vm}`; a VM that is already gone counts as deleted.
    pub async fn delete(&self, vm: String) -> Result<(), HearthdError> {
        let res = self
            .run(move |c| {
                let path = ApiPath::new("/v1/vms").segment(&vm);
                c.request(Method::DELETE, path, &[], None)?.ok().map(|_| ())
            })
            .await;
        match res {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    /// Lifecycle events after sequence number `since`, oldest first.
    pub async fn events_since(&self, since: u64) -> Result<Vec<Event>, HearthdError> {
        self.run(move |c| c.get(ApiPath::new("/v1/events").query("since", since)))
            .await
    }
}
