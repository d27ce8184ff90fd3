//! The messages [`super::GuestActor`] answers.

use std::marker::PhantomData;

use actix::Message;
use hearth_proto::agent::Request;
use serde::de::DeserializeOwned;

use super::{AgentStream, GuestError};

/// Sends one request/response op to a VM's agent and answers its decoded `ok` (`T`: the op's
/// reply type, e.g. `ExecStarted`, `ExecList`, `Empty`). Streaming ops are refused
/// ([`GuestError::WrongOp`]): use [`OpenStream`].
#[derive(Debug)]
pub struct AgentCall<T> {
    /// The VM.
    pub vm: String,
    /// The request.
    pub request: Request,
    /// The reply type.
    pub reply: PhantomData<fn() -> T>,
}

impl<T> AgentCall<T> {
    /// A call of `request` to `vm`'s agent.
    pub fn new(vm: impl Into<String>, request: Request) -> Self {
        AgentCall {
            vm: vm.into(),
            request,
            reply: PhantomData,
        }
    }
}

impl<T: DeserializeOwned + Send + 'static> Message for AgentCall<T> {
    type Result = Result<T, GuestError>;
}

/// Sends a streaming op (`attach`, `get_archive`, `put_archive`) to a VM's agent and answers
/// its decoded `ok` with the connected stream, for the caller to drive.
#[derive(Debug)]
pub struct OpenStream<T> {
    /// The VM.
    pub vm: String,
    /// The request.
    pub request: Request,
    /// The reply type.
    pub reply: PhantomData<fn() -> T>,
}

impl<T> OpenStream<T> {
    /// A stream of `request` to `vm`'s agent.
    pub fn new(vm: impl Into<String>, request: Request) -> Self {
        OpenStream {
            vm: vm.into(),
            request,
            reply: PhantomData,
        }
    }
}

/// The answer to [`OpenStream`].
#[derive(Debug)]
pub struct Opened<T> {
    /// The agent's `ok`.
    pub reply: T,
    /// The connection, now carrying frames.
    pub stream: AgentStream,
}

impl<T: DeserializeOwned + Send + 'static> Message for OpenStream<T> {
    type Result = Result<Opened<T>, GuestError>;
}

/// How many agent connections are open to `vm` now (for tests and metrics).
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct OpenConnections {
    /// The VM.
    pub vm: String,
}

/// Internal: a connection to `vm` closed; its slot is free again.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(super) struct ReleaseSlot {
    pub(super) vm: String,
}
