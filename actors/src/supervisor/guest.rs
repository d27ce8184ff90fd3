//! The supervisor's answer to "where is this VM's agent?" ([`GuestEndpoint`]), asked by
//! `GuestActor` before each agent connection. Only a `running` VM has an agent to talk to,
//! and a VM being restored (for the restore's own identity step).

use actix::{Context, Handler};
use hearth_proto::api::VmState;

use super::{AgentEndpoint, GuestEndpoint, SupervisorError, VmSupervisor};
use crate::firecracker::RunDir;

impl Handler<GuestEndpoint> for VmSupervisor {
    type Result = Result<AgentEndpoint, SupervisorError>;

    fn handle(&mut self, msg: GuestEndpoint, _ctx: &mut Context<Self>) -> Self::Result {
        let record = &self.entry(&msg.name)?.record;
        let state = record.state;
        // A VM being restored has a guest (loaded from its snapshot) that the restore must
        // give its new identity before the VM counts as running.
        let restoring = state == VmState::Creating
            && record.spec.from_snapshot.is_some()
            && record.process.as_ref().is_some_and(|p| p.pid.is_some());
        if state != VmState::Running && !restoring {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::testing::supervisor_over_fakes;
    use crate::supervisor::{MemoryVmStore, Open, VmStore};

    /// The running case (a socket under the run directory) is covered end to end in
    /// `tests/exec_e2e.rs`, where a VMM really runs.
    #[actix::test]
    async fn unknown_and_stopped_vms_have_no_agent_endpoint() {
        let mut store = MemoryVmStore::default();
        let spec = serde_json::from_value(
            serde_json::json!({"name": "off", "kernel": "vmlinux", "rootfs": "base"}),
        )
        .unwrap();
        store.insert_vm(&spec).unwrap();
        store.set_state("off", VmState::Stopped, None).unwrap();
        let (sup, _disks) = supervisor_over_fakes(false, store);
        sup.send(Open {}).await.unwrap().unwrap();
        let e = sup
            .send(GuestEndpoint { name: "off".into() })
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(
                e,
                SupervisorError::InvalidState {
                    state: VmState::Stopped,
                    op: "reach the agent of",
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "Cannot reach the agent of VM \"off\" while it is stopped"
        );
        let e = sup
            .send(GuestEndpoint {
                name: "nope".into(),
            })
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(e, SupervisorError::NotFound { .. }), "{e:?}");
    }
}
