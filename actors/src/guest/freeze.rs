//! [`FreezeGuest`] and [`ThawGuest`]: quiesce a VM's root filesystem around a snapshot
//! through the agent's `freeze` and `thaw` ops ([`hearth_proto::agent::freeze`]). Each is an
//! ordinary call ([`AgentCall`]), bounded by the connect timeout; the freeze carries the
//! deadline after which the agent thaws on its own if no thaw comes.

use std::time::Duration;

use actix::fut::ready;
use actix::{Context, Handler, Message, ResponseFuture};
use hearth_proto::agent::freeze::MAX_THAW_AFTER_MS;
use hearth_proto::agent::{codes, Empty, FreezeRequest, Request, ThawReply, ThawRequest};

use super::{AgentCall, GuestActor, GuestError};

/// Syncs and freezes `vm`'s root filesystem; answers once it is frozen. The agent thaws it on
/// its own after `thaw_after` unless a [`ThawGuest`] comes first.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), GuestError>")]
pub struct FreezeGuest {
    /// The VM.
    pub vm: String,
    /// The deadline (1 ms ..= 60 s).
    pub thaw_after: Duration,
}

/// Thaws `vm`'s root filesystem; answers whether it was still frozen (false: the deadline
/// thawed it already, or it never was).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<bool, GuestError>")]
pub struct ThawGuest {
    /// The VM.
    pub vm: String,
}

impl Handler<FreezeGuest> for GuestActor {
    type Result = ResponseFuture<Result<(), GuestError>>;

    fn handle(&mut self, msg: FreezeGuest, ctx: &mut Context<Self>) -> Self::Result {
        let ms = u64::try_from(msg.thaw_after.as_millis()).unwrap_or(u64::MAX);
        let req = FreezeRequest {
            thaw_after_ms: ms,
            ..FreezeRequest::root()
        };
        if let Err(reason) = req.validate() {
            // What the agent would answer, without a round trip to it.
            return Box::pin(ready(Err(GuestError::Agent {
                code: codes::BAD_REQUEST.to_owned(),
                message: format!(
                    "Invalid freeze (deadline at most {MAX_THAW_AFTER_MS} ms): {reason}"
                ),
            })));
        }
        let call = AgentCall::<Empty>::new(msg.vm, Request::Freeze(req));
        let answer = <Self as Handler<AgentCall<Empty>>>::handle(self, call, ctx);
        Box::pin(async move { answer.await.map(|Empty {}| ()) })
    }
}

impl Handler<ThawGuest> for GuestActor {
    type Result = ResponseFuture<Result<bool, GuestError>>;

    fn handle(&mut self, msg: ThawGuest, ctx: &mut Context<Self>) -> Self::Result {
        let call = AgentCall::<ThawReply>::new(msg.vm, Request::Thaw(ThawRequest::root()));
        let answer = <Self as Handler<AgentCall<ThawReply>>>::handle(self, call, ctx);
        Box::pin(async move { answer.await.map(|r| r.was_frozen) })
    }
}
