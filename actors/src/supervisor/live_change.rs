//! A live change of what a VM's capabilities are given — `SetNat`, `SetEgress`,
//! `PublishPort`, `UnpublishPort` — in one shape. Under the VM's lock: the new spec is made
//! and checked whole; a live VM's capabilities are reconfigured from the recorded spec to the
//! new one (one that fails puts back those before it: nothing changed); then the change is
//! recorded, and when recording fails the host goes back to the recorded spec. A VM that is
//! not alive only has its record changed: its next boot applies it.

use actix::{AsyncContext, Context, Handler, Message, ResponseActFuture};
use futures::FutureExt;
use hearth_proto::api::{CreateVm, VmState};

use super::hooks::{self, spec_with_nat};
use super::{Change, SupervisorError, VmSupervisor};

/// How a live change is recorded.
pub(super) enum Record {
    /// The NAT flag (kept apart from the spec in the store).
    Nat(bool),
    /// An edit of the spec, applied to the spec as it is when recorded, so that a change the
    /// mailbox made meanwhile (`UpdateVm`'s labels, which take no lock) is kept. `Send`
    /// because it travels in `CommitLive` through `Addr::send`, which actix requires of
    /// every message.
    Spec(Box<dyn FnOnce(&mut CreateVm) + Send>),
}

/// What a live change asks: made from the VM's recorded spec (NAT flag included).
pub(super) struct LiveChange {
    /// What the capabilities are to be given.
    pub next: CreateVm,
    /// What they are told they had: the recorded spec, unless a switch must be asked again
    /// even when it does not change (`SetNat` of what is on already).
    pub from: Option<CreateVm>,
    /// How the store records it.
    pub record: Record,
}

/// Internal: records a live change.
#[derive(Message)]
#[rtype(result = "Result<(), SupervisorError>")]
struct CommitLive {
    vm: String,
    record: Record,
}

impl Handler<CommitLive> for VmSupervisor {
    type Result = Result<(), SupervisorError>;

    fn handle(&mut self, msg: CommitLive, _: &mut Context<Self>) -> Self::Result {
        match msg.record {
            Record::Nat(on) => self.apply(&msg.vm, Change::Nat(on)),
            Record::Spec(edit) => {
                let mut spec = self.entry(&msg.vm)?.record.spec.clone();
                edit(&mut spec);
                self.apply(&msg.vm, Change::Spec(Box::new(spec)))
            }
        }
    }
}

impl VmSupervisor {
    /// Runs the live change `plan` makes of `name`'s recorded spec (`op` names it in a refusal),
    /// then answers with `answer`.
    pub(super) fn change_live<T: 'static>(
        &mut self,
        name: String,
        op: &'static str,
        plan: impl FnOnce(&CreateVm) -> Result<LiveChange, SupervisorError> + 'static,
        answer: impl FnOnce(&Self, &str) -> Result<T, SupervisorError> + 'static,
    ) -> ResponseActFuture<Self, Result<T, SupervisorError>> {
        let n = name.clone();
        self.locked(
            &name.clone(),
            move |act, ctx| {
                act.check_open()?;
                let entry = act.entry(&n)?;
                if entry.record.state == VmState::Deleting {
                    return Err(SupervisorError::InvalidState {
                        name: n.clone(),
                        state: entry.record.state,
                        op,
                    });
                }
                let recorded = spec_with_nat(&entry.record.spec, entry.record.nat);
                let change = plan(&recorded)?;
                // Checked whole before anything changes. A restored VM's spec names its
                // snapshot (a fork's `<vm>.fork` is no name a user could give), which no live
                // change touches: checked as the restore checked it, without that name.
                CreateVm {
                    from_snapshot: None,
                    ..change.next.clone()
                }
                .validate()?;
                // Only a live VM has its capabilities on the host.
                let lease = entry
                    .record
                    .lease
                    .clone()
                    .filter(|_| entry.record.state.is_alive());
                let ports = act.ports(ctx);
                let me = ctx.address();
                let n = n.clone();
                Ok(async move {
                    let LiveChange { next, from, record } = change;
                    let from = from.unwrap_or_else(|| recorded.clone());
                    if next == from {
                        return Ok(());
                    }
                    hooks::reconfigure(&ports, &n, lease.as_ref(), &from, &next).await?;
                    let commit = CommitLive {
                        vm: n.clone(),
                        record,
                    };
                    let recorded_ok = me
                        .send(commit)
                        .await
                        .map_err(|e| SupervisorError::step("record state", e))
                        .and_then(|r| r);
                    if let Err(e) = recorded_ok {
                        // Not recorded: the host goes back to what the record says.
                        let _ =
                            hooks::reconfigure(&ports, &n, lease.as_ref(), &next, &recorded).await;
                        return Err(e);
                    }
                    Ok(())
                }
                .boxed_local())
            },
            move |act| answer(act, &name),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hearth_proto::api::{CreateVm, VmState};
    use hearth_proto::api_egress::{EgressMode, EgressPolicy};
    use hearth_proto::api_publish::PortMapping;

    use crate::supervisor::store::VmStore;
    use crate::supervisor::{GetVm, MemoryVmStore, Open, PublishPort, SetEgress, SetNat, UpdateVm};

    fn stopped(name: &str) -> MemoryVmStore {
        let mut store = MemoryVmStore::default();
        let spec: CreateVm = serde_json::from_value(
            serde_json::json!({"name": name, "kernel": "vmlinux", "rootfs": "base"}),
        )
        .unwrap();
        store.insert_vm(&spec).unwrap();
        store.set_state(name, VmState::Stopped, None).unwrap();
        store
    }

    /// Four changes sent at once, three of them live changes of one VM, all end up recorded.
    /// (A stopped VM's reconfigure does not wait, so this does not force a label change
    /// between a live change's read and its record; `Record::Spec` is why that is safe too.)
    #[actix::test]
    async fn concurrent_changes_of_one_vm_are_all_kept() {
        let (sup, _) = crate::supervisor::testing::supervisor_over_fakes(true, stopped("a"));
        sup.send(Open {}).await.unwrap().unwrap();
        let deny = EgressPolicy {
            mode: EgressMode::Deny,
            ..EgressPolicy::default()
        };
        let labels = BTreeMap::from([("team".to_owned(), "x".to_owned())]);
        let port: PortMapping = "8080:80".parse().unwrap();
        let (egress, update, publish, nat) = futures::join!(
            sup.send(SetEgress {
                name: "a".into(),
                policy: Some(deny.clone()),
            }),
            sup.send(UpdateVm {
                name: "a".into(),
                labels: Some(labels.clone()),
                ..UpdateVm::default()
            }),
            sup.send(PublishPort {
                name: "a".into(),
                mapping: port,
            }),
            sup.send(SetNat {
                name: "a".into(),
                enabled: true,
            }),
        );
        egress.unwrap().unwrap();
        update.unwrap().unwrap();
        publish.unwrap().unwrap();
        nat.unwrap().unwrap();
        let info = sup.send(GetVm { name: "a".into() }).await.unwrap().unwrap();
        assert_eq!(info.spec.labels, labels);
        assert_eq!(info.spec.egress, Some(deny));
        assert_eq!(info.spec.publish, vec![port]);
        assert!(info.nat);
    }
}
