//! [`ReconfigureGuest`]: gives a restored or forked VM's guest its new identity through the
//! agent's `reconfigure` op ([`hearth_proto::agent::identity`]). The identity is checked here
//! first, with the agent's own rules, so a bad one never reaches the guest; the exchange is
//! then an ordinary call ([`AgentCall`]), bounded by the connect timeout.

use actix::fut::ready;
use actix::{Context, Handler, Message, ResponseFuture};
use hearth_proto::agent::{codes, Empty, Reconfigure, Request};

use super::{AgentCall, GuestActor, GuestError};

/// Tells `vm`'s agent its new identity; answers once the guest applied all of it.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), GuestError>")]
pub struct ReconfigureGuest {
    /// The VM.
    pub vm: String,
    /// Its new address, MAC, hostname, DNS server, RNG seed and (optionally) clock.
    pub identity: Reconfigure,
}

impl Handler<ReconfigureGuest> for GuestActor {
    type Result = ResponseFuture<Result<(), GuestError>>;

    fn handle(&mut self, msg: ReconfigureGuest, ctx: &mut Context<Self>) -> Self::Result {
        if let Err(reason) = msg.identity.validate() {
            // What the agent would answer, without a round trip to it.
            return Box::pin(ready(Err(GuestError::Agent {
                code: codes::BAD_REQUEST.to_owned(),
                message: format!("Invalid identity: {reason}"),
            })));
        }
        let call = AgentCall::<Empty>::new(msg.vm, Request::Reconfigure(msg.identity));
        let answer = <Self as Handler<AgentCall<Empty>>>::handle(self, call, ctx);
        Box::pin(async move { answer.await.map(|Empty {}| ()) })
    }
}
