//! `UpdateVm`: a live change of labels, restart policy or time limit. Only records change (no
//! saga), in the mailbox: the spec and the deadline are written to the store, then memory.

use actix::{Context, Handler};
use hearth_proto::api::VmState;

use super::policy::apply_ttl;
use super::{Change, SupervisorError, UpdateVm, VmSupervisor};

impl Handler<UpdateVm> for VmSupervisor {
    type Result = Result<hearth_proto::api::VmInfo, SupervisorError>;

    fn handle(&mut self, msg: UpdateVm, _ctx: &mut Context<Self>) -> Self::Result {
        self.check_open()?;
        let entry = self.entry(&msg.name)?;
        if entry.record.state == VmState::Deleting {
            return Err(SupervisorError::InvalidState {
                name: msg.name.clone(),
                state: entry.record.state,
                op: "update",
            });
        }
        let (old_spec, old_policy) = (entry.record.spec.clone(), entry.record.policy);
        let mut spec = old_spec.clone();
        let mut policy = old_policy;
        if let Some(labels) = msg.labels {
            spec.labels = labels;
        }
        if let Some(restart) = msg.restart {
            spec.restart = restart;
        }
        if let Some(on_expiry) = msg.on_expiry {
            spec.on_expiry = on_expiry;
        }
        if let Some(change) = msg.ttl {
            policy.deadline = Some(apply_ttl(change, policy.deadline, self.clock.now()));
        }
        // Checked whole before anything is written: a bad label changes nothing. A restored
        // VM's spec names its snapshot (a fork's `<vm>.fork` is no name a user could give)
        // next to the machine copied from it, which no PATCH changes: checked as the restore
        // checked it, without that name.
        hearth_proto::api::CreateVm {
            from_snapshot: None,
            ..spec.clone()
        }
        .validate()?;
        if spec != old_spec {
            self.apply(&msg.name, Change::Spec(Box::new(spec)))?;
        }
        if policy != old_policy {
            self.apply(&msg.name, Change::Policy(policy))?;
        }
        self.info_of(&msg.name)
    }
}
