//! One `impl Handler` per [`super::GuestActor`] message. Calls and stream openings run as
//! `ResponseFuture`s that touch no actor state: the only state, the per-VM connection count,
//! is reserved synchronously in the handler and given back through [`ReleaseSlot`].

use std::time::Duration;

use actix::fut::ready;
use actix::{AsyncContext, Context, Handler, Recipient, ResponseFuture};
use hearth_proto::agent::{decode_response, encode_request, Request, MAX_RESPONSE_LINE};
use serde::de::DeserializeOwned;
use slog::debug;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::messages::ReleaseSlot;
use super::stream::SlotGuard;
use super::vsock::{self, VsockError};
use super::{AgentCall, AgentStream, GuestActor, GuestError, OpenConnections, OpenStream, Opened};
use crate::supervisor::GuestEndpoint;

impl GuestActor {
    /// Takes one of `vm`'s connection slots; the guard gives it back when dropped.
    fn reserve(&mut self, vm: &str, ctx: &mut Context<Self>) -> Result<SlotGuard, GuestError> {
        let limit = self.settings.max_connections_per_vm;
        let open = self.open.get(vm).copied().unwrap_or(0);
        if open >= limit {
            debug!(self.log, "agent connections exhausted"; "vm" => vm, "limit" => limit);
            return Err(GuestError::Busy {
                vm: vm.to_owned(),
                limit,
            });
        }
        self.open.insert(vm.to_owned(), open + 1);
        let me = ctx.address();
        let vm = vm.to_owned();
        Ok(SlotGuard(Box::new(move || {
            me.do_send(ReleaseSlot { vm: vm.clone() });
        })))
    }
}

/// An error and its sources, joined by ": ".
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

/// Asks the supervisor for `vm`'s agent, connects, sends `request` and reads the response
/// line, all within `timeout`. Answers the line and the connection (positioned after it).
async fn exchange(
    endpoints: Recipient<GuestEndpoint>,
    vm: String,
    request: Request,
    timeout: Duration,
) -> Result<(Vec<u8>, BufReader<UnixStream>), GuestError> {
    let endpoint = endpoints
        .send(GuestEndpoint { name: vm.clone() })
        .await
        .map_err(|_| GuestError::Gone)??;
    let unreachable = |reason: String| GuestError::Unreachable {
        vm: vm.clone(),
        reason,
    };
    let talk = async {
        let mut conn = vsock::connect(&endpoint.uds, endpoint.port)
            .await
            .map_err(|e| unreachable(chain(&e)))?;
        conn.get_mut()
            .write_all(&encode_request(&request))
            .await
            .map_err(|e| unreachable(format!("writing the request: {e}")))?;
        let line = vsock::read_line(&mut conn, MAX_RESPONSE_LINE, "the agent's answer")
            .await
            .map_err(|e| match e {
                VsockError::LineTooLong { .. } => GuestError::protocol(e.to_string()),
                other => unreachable(chain(&other)),
            })?;
        Ok((line, conn))
    };
    match tokio::time::timeout(timeout, talk).await {
        Ok(res) => res,
        Err(_) => Err(unreachable(format!(
            "no answer within {} ms",
            timeout.as_millis()
        ))),
    }
}

impl<T: DeserializeOwned + Send + 'static> Handler<AgentCall<T>> for GuestActor {
    type Result = ResponseFuture<Result<T, GuestError>>;

    fn handle(&mut self, msg: AgentCall<T>, ctx: &mut Context<Self>) -> Self::Result {
        if msg.request.switches_to_frames() {
            return Box::pin(ready(Err(GuestError::WrongOp {
                op: msg.request.op(),
            })));
        }
        let slot = match self.reserve(&msg.vm, ctx) {
            Ok(s) => s,
            Err(e) => return Box::pin(ready(Err(e))),
        };
        let endpoints = self.endpoints.clone();
        let timeout = self.settings.connect_timeout;
        Box::pin(async move {
            // Held until the answer is read; the connection closes with it.
            let _slot = slot;
            let (line, _conn) = exchange(endpoints, msg.vm, msg.request, timeout).await?;
            decode_response::<T>(&line).map_err(GuestError::from_answer)
        })
    }
}

impl<T: DeserializeOwned + Send + 'static> Handler<OpenStream<T>> for GuestActor {
    type Result = ResponseFuture<Result<Opened<T>, GuestError>>;

    fn handle(&mut self, msg: OpenStream<T>, ctx: &mut Context<Self>) -> Self::Result {
        if !msg.request.switches_to_frames() {
            return Box::pin(ready(Err(GuestError::WrongOp {
                op: msg.request.op(),
            })));
        }
        let slot = match self.reserve(&msg.vm, ctx) {
            Ok(s) => s,
            Err(e) => return Box::pin(ready(Err(e))),
        };
        let endpoints = self.endpoints.clone();
        let timeout = self.settings.connect_timeout;
        Box::pin(async move {
            let (line, conn) = exchange(endpoints, msg.vm, msg.request, timeout).await?;
            let reply = decode_response::<T>(&line).map_err(GuestError::from_answer)?;
            Ok(Opened {
                reply,
                stream: AgentStream::new(conn, slot),
            })
        })
    }
}

impl Handler<ReleaseSlot> for GuestActor {
    type Result = ();

    fn handle(&mut self, msg: ReleaseSlot, _ctx: &mut Context<Self>) {
        if let Some(n) = self.open.get_mut(&msg.vm) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.open.remove(&msg.vm);
            }
        }
    }
}

impl Handler<OpenConnections> for GuestActor {
    type Result = usize;

    fn handle(&mut self, msg: OpenConnections, _ctx: &mut Context<Self>) -> usize {
        self.open.get(&msg.vm).copied().unwrap_or(0)
    }
}
