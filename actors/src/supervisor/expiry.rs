//! Time limits: each [`super::PolicyTick`] compares the stored deadlines with the supervisor's
//! clock. An expired VM gets an `expired` event, then is stopped, deleted or paused to disk
//! (snapshot, then stop: `park.rs`) through the same messages a user sends. Its deadline is
//! cleared only once the action is done (a delete removes it with the VM), so a hearthd
//! killed in between acts again on its next start — on a VM that is by then stopped, which
//! only clears the deadline, or whose snapshot (named after the deadline) is found taken,
//! which only stops it: the action is never made twice.

use actix::fut::{ActorFutureExt, WrapFuture};
use actix::{AsyncContext, Context};
use hearth_proto::api::EventReason;
use hearth_proto::api_policy::OnExpiry;
use slog::{info, warn};

use std::time::UNIX_EPOCH;

use super::park::park;
use super::policy::{policy_snapshot_name, EXPIRED_TAG};
use super::{Change, DeleteVm, RunAction, SupervisorError, VmAction, VmSupervisor};

impl VmSupervisor {
    /// Acts on every deadline that has passed and is not already being acted on.
    pub(super) fn check_expiries(&mut self, ctx: &mut Context<Self>) -> Vec<String> {
        let now = self.clock.now();
        let due: Vec<(String, OnExpiry)> = self
            .vms
            .values()
            .filter(|e| e.record.policy.deadline.is_some_and(|d| d <= now))
            .filter(|e| !self.policy_rt.expiring.contains(&e.record.spec.name))
            .map(|e| (e.record.spec.name.clone(), e.record.spec.on_expiry))
            .collect();
        let acted: Vec<String> = due
            .into_iter()
            .filter(|(name, on_expiry)| self.expire(name.clone(), *on_expiry, ctx))
            .map(|(name, _)| name)
            .collect();
        self.policy_rt.counters.expiries += acted.len() as u64;
        acted
    }

    /// Acts on `name`'s passed deadline; answers whether it did (not: gone, or busy until a
    /// later tick).
    fn expire(&mut self, name: String, on_expiry: OnExpiry, ctx: &mut Context<Self>) -> bool {
        let Some(entry) = self.vms.get(&name) else {
            return false;
        };
        let state = entry.record.state;
        let deadline = entry.record.policy.deadline;
        let pending_restart = self.policy_rt.pending.contains_key(&name);
        let act = match on_expiry {
            // A VM in the middle of a create or another delete: next tick.
            OnExpiry::Delete if !state.can_delete() => return false,
            OnExpiry::Delete => "deleting it",
            OnExpiry::Snapshot if state.can_snapshot() => "snapshotting it",
            OnExpiry::Stop | OnExpiry::Snapshot if state.can_stop() || pending_restart => {
                "stopping it"
            }
            // Already not running: nothing to stop.
            OnExpiry::Stop | OnExpiry::Snapshot => "it was not running",
        };
        info!(self.log, "time limit reached"; "vm" => &name, "action" => act);
        self.publish(
            &name,
            state,
            EventReason::Expired,
            Some(&format!("time limit reached: {act}")),
        );
        if act == "it was not running" {
            self.clear_deadline(&name);
            return true;
        }
        self.policy_rt.expiring.insert(name.clone());
        // Its stop or delete is recorded as the expiry's, not a user's.
        self.act_for(&name, EventReason::Expired);
        let me = ctx.address();
        let n = name.clone();
        let snapshot = (act == "snapshotting it").then(|| {
            // Named after the deadline, stored until the action is done: the same name if
            // a hearthd killed mid-way acts again.
            policy_snapshot_name(&n, EXPIRED_TAG, deadline.unwrap_or(UNIX_EPOCH))
        });
        let done = async move {
            let mailbox = |e| SupervisorError::step("expiry", e);
            match (on_expiry, snapshot) {
                (OnExpiry::Delete, _) => me
                    .send(DeleteVm { name: n })
                    .await
                    .map_err(mailbox)?
                    .map(|()| None),
                (_, Some(snapshot)) => park(me, n, snapshot).await.map(Some),
                (_, None) => me
                    .send(RunAction {
                        name: n,
                        action: VmAction::Stop,
                        idempotency: None,
                    })
                    .await
                    .map_err(mailbox)?
                    .map(|_| None),
            }
        };
        ctx.spawn(done.into_actor(self).map(move |res, act, _| {
            act.policy_rt.expiring.remove(&name);
            act.done_for(&name, EventReason::Expired);
            match res {
                Ok(parked) => {
                    if let Some(parked) = parked {
                        let state = act.vms.get(&name).map(|e| e.record.state);
                        let detail = format!("time limit reached: {}", parked.detail());
                        act.publish(
                            &name,
                            state.unwrap_or(hearth_proto::api::VmState::Stopped),
                            EventReason::Expired,
                            Some(&detail),
                        );
                    }
                    if on_expiry != OnExpiry::Delete {
                        act.clear_deadline(&name);
                    }
                }
                // Tried again at the next tick.
                Err(e) => warn!(act.log, "expiry action failed"; "vm" => &name, "error" => %e),
            }
        }));
        true
    }

    fn clear_deadline(&mut self, name: &str) {
        let Some(entry) = self.vms.get(name) else {
            return;
        };
        let mut record = entry.record.policy;
        record.deadline = None;
        if let Err(e) = self.apply(name, Change::Policy(record)) {
            warn!(self.log, "deadline not cleared"; "vm" => name, "error" => %e);
        }
    }
}
