//! The host as a whole: cordon (refuse new VMs, with a reason, persisted so a restart of
//! hearthd keeps it) and drain (cordon, then stop every running VM, a few at a time, through
//! the same stop as `vm stop`, or first snapshot it (`park.rs`); its progress is readable
//! while it runs, and each VM gets `drain` events: when its turn comes, and its outcome).
//! A drain itself is not persisted: after a restart of hearthd (still cordoned), drain
//! again; VMs already stopped are skipped, and a snapshot already taken (named after the
//! VM's last start) is found, not taken twice.

use actix::fut::{ActorFutureExt, WrapFuture};
use actix::{AsyncContext, Context, Handler, Message, ResponseActFuture};
use futures::StreamExt;

use hearth_proto::api::EventReason;
use hearth_proto::api_policy::DrainMode;

use super::park::{park, stop_if_running, Parked};
use super::policy::{policy_snapshot_name, DRAINED_TAG};
use super::{SupervisorError, VmSupervisor};

/// How many VMs a drain stops at once.
pub const DRAIN_PARALLELISM: usize = 4;

/// The host's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct NodeStatus {
    /// Whether it refuses new VMs.
    pub cordoned: bool,
    /// Why, when it is cordoned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The running or last drain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainProgress>,
}

/// How far a drain got.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DrainProgress {
    /// What it does to each VM.
    pub mode: DrainMode,
    /// VMs it set out to stop.
    pub total: usize,
    /// Stopped so far (snapshotted first or not).
    pub stopped: usize,
    /// `[VM, snapshot]` for each VM a `snapshot` drain snapshotted.
    pub snapshots: Vec<(String, String)>,
    /// Whose stop failed, or (a `snapshot` drain) whose snapshot failed before its stop,
    /// with why.
    pub failed: Vec<(String, String)>,
    /// Whether it has finished.
    pub done: bool,
}

/// Cordons the host (`Some` reason) or uncordons it (`None`); answers with its state.
#[derive(Debug, Message)]
#[rtype(result = "Result<NodeStatus, SupervisorError>")]
pub struct SetCordon {
    /// Why; `None` uncordons.
    pub reason: Option<String>,
}

/// The host's state.
#[derive(Debug, Message)]
#[rtype(result = "NodeStatus")]
pub struct GetNode;

/// Cordons the host, then stops (or snapshots and stops) every VM that runs.
#[derive(Debug, Message)]
#[rtype(result = "Result<NodeStatus, SupervisorError>")]
pub struct Drain {
    /// The cordon's reason.
    pub reason: String,
    /// Stop, or snapshot then stop.
    pub mode: DrainMode,
    /// Answer when every VM is done (`true`), or as soon as the drain has started, its
    /// progress then readable with [`GetNode`].
    pub wait: bool,
}

impl VmSupervisor {
    /// The host's state now.
    pub(super) fn node_status(&self) -> NodeStatus {
        NodeStatus {
            cordoned: self.cordon.is_some(),
            reason: self.cordon.clone(),
            drain: self.drain.clone(),
        }
    }

    /// Refuses a create while cordoned.
    pub(super) fn check_cordon(&self) -> Result<(), SupervisorError> {
        match &self.cordon {
            Some(reason) => Err(SupervisorError::Cordoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn set_cordon(&mut self, reason: Option<String>) -> Result<(), SupervisorError> {
        if reason.as_deref().is_some_and(|r| r.len() > 1024) {
            return Err(SupervisorError::InvalidField(
                hearth_proto::api::FieldError {
                    field: "reason",
                    reason: "at most 1024 bytes".into(),
                },
            ));
        }
        self.store.put_cordon(reason.as_deref())?;
        self.cordon = reason;
        Ok(())
    }
}

impl Handler<SetCordon> for VmSupervisor {
    type Result = Result<NodeStatus, SupervisorError>;

    fn handle(&mut self, msg: SetCordon, _ctx: &mut Context<Self>) -> Self::Result {
        self.set_cordon(msg.reason)?;
        Ok(self.node_status())
    }
}

impl Handler<GetNode> for VmSupervisor {
    type Result = actix::MessageResult<GetNode>;

    fn handle(&mut self, _msg: GetNode, _ctx: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(self.node_status())
    }
}

impl Handler<Drain> for VmSupervisor {
    type Result = ResponseActFuture<Self, Result<NodeStatus, SupervisorError>>;

    fn handle(&mut self, msg: Drain, ctx: &mut Context<Self>) -> Self::Result {
        if self.drain.as_ref().is_some_and(|d| !d.done) {
            return Box::pin(actix::fut::ready(Err(SupervisorError::Conflict {
                message: "A drain is already running".into(),
            })));
        }
        if let Err(e) = self
            .check_open()
            .and_then(|()| self.set_cordon(Some(msg.reason)))
        {
            return Box::pin(actix::fut::ready(Err(e)));
        }
        let now = self.clock.now();
        let work: Vec<(String, Option<String>)> = self
            .vms
            .values()
            .filter(|e| {
                e.record.state.can_stop()
                    || self.policy_rt.pending.contains_key(&e.record.spec.name)
            })
            .map(|e| {
                let name = e.record.spec.name.clone();
                // Named after the run's start: the same name if a drain cut short by a
                // restart of hearthd is made again.
                let snapshot = (msg.mode == DrainMode::Snapshot && e.record.state.can_snapshot())
                    .then(|| {
                        let run = e.record.policy.last_start.or(e.record.policy.created);
                        policy_snapshot_name(&name, DRAINED_TAG, run.unwrap_or(now))
                    });
                (name, snapshot)
            })
            .collect();
        self.drain = Some(DrainProgress {
            mode: msg.mode,
            total: work.len(),
            ..DrainProgress::default()
        });
        let me = ctx.address();
        let steps = futures::stream::iter(work.into_iter().map(move |(name, snapshot)| {
            let me = me.clone();
            async move {
                me.do_send(DrainStep {
                    name: name.clone(),
                    outcome: None,
                    snapshotting: snapshot.is_some(),
                });
                let res = match snapshot {
                    Some(snapshot) => park(me.clone(), name.clone(), snapshot).await,
                    None => stop_if_running(&me, &name)
                        .await
                        .map(|()| Parked::StoppedOnly(String::new())),
                };
                let res = res.map_err(|e| e.to_string());
                // Counted as it comes, so `GetNode` shows the progress.
                me.do_send(DrainStep {
                    name: name.clone(),
                    outcome: Some(res.clone()),
                    snapshotting: false,
                });
                (name, res)
            }
        }))
        .buffer_unordered(DRAIN_PARALLELISM)
        .collect::<Vec<_>>();
        let finish = steps.into_actor(self).map(|outcomes, act, _| {
            // The whole outcome, whatever progress steps are still in the mailbox.
            let (mode, total) = act
                .drain
                .as_ref()
                .map_or((DrainMode::Stop, outcomes.len()), |d| (d.mode, d.total));
            let mut progress = DrainProgress {
                mode,
                total,
                done: true,
                ..DrainProgress::default()
            };
            for (name, res) in outcomes {
                progress.count(name, res);
            }
            act.drain = Some(progress);
            act.node_status()
        });
        if msg.wait {
            return Box::pin(finish.map(|status, _, _| Ok(status)));
        }
        ctx.spawn(finish.map(|_, _, _| ()));
        Box::pin(actix::fut::ready(Ok(self.node_status())))
    }
}

impl DrainProgress {
    /// Counts one VM's outcome.
    fn count(&mut self, name: String, res: Result<Parked, String>) {
        match res {
            Ok(Parked::Snapshot(snapshot)) => {
                self.stopped += 1;
                self.snapshots.push((name, snapshot));
            }
            Ok(Parked::StoppedOnly(why)) => {
                self.stopped += 1;
                if !why.is_empty() {
                    self.failed.push((name, format!("snapshot failed: {why}")));
                }
            }
            Err(e) => self.failed.push((name, e)),
        }
    }
}

/// Internal: a drained VM's turn (`outcome: None`) or outcome.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct DrainStep {
    name: String,
    outcome: Option<Result<Parked, String>>,
    snapshotting: bool,
}

impl Handler<DrainStep> for VmSupervisor {
    type Result = ();

    fn handle(&mut self, msg: DrainStep, _ctx: &mut Context<Self>) {
        let state = self.vms.get(&msg.name).map(|e| e.record.state);
        let detail = match &msg.outcome {
            None if msg.snapshotting => "drain: snapshotting it".to_owned(),
            None => "drain: stopping it".to_owned(),
            Some(Ok(Parked::StoppedOnly(why))) if why.is_empty() => "drain: stopped".to_owned(),
            Some(Ok(parked)) => format!("drain: {}", parked.detail()),
            Some(Err(e)) => format!("drain: not stopped: {e}"),
        };
        if let Some(state) = state {
            self.publish(&msg.name, state, EventReason::Drain, Some(&detail));
        }
        if let (Some(d), Some(res)) = (self.drain.as_mut().filter(|d| !d.done), msg.outcome) {
            d.count(msg.name, res);
        }
    }
}
