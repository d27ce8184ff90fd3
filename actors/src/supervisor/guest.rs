//! The supervisor's answer to "where is this VM's agent?" ([`GuestEndpoint`]), asked by
//! `GuestActor` before each agent connection. Only a `running` VM has an agent to talk to.

use actix::{Context, Handler};
use hearth_proto::api::VmState;

use super::{AgentEndpoint, GuestEndpoint, SupervisorError, VmSupervisor};
use crate::firecracker::RunDir;

impl Handler<GuestEndpoint> for VmSupervisor {
    type Result = Result<AgentEndpoint, SupervisorError>;

    fn handle(&mut self, msg: GuestEndpoint, _ctx: &mut Context<Self>) -> Self::Result {
        let state = self.entry(&msg.name)?.record.state;
        if state != VmState::Running {
            return Err(SupervisorError::InvalidState {
                name: msg.name,
                state,
                op: "reach the agent of",
            });
        }
        let uds = RunDir::new(&self.vmm.settings.run_base, &msg.name)
            .map_err(|e| SupervisorError::step("run directory", e))?
            .vsock_socket();
        Ok(AgentEndpoint {
            uds,
            port: self.settings.agent_port,
        })
    }
}
