//! The host as a whole: cordon (refuse new VMs, with a reason, persisted so a restart of
//! hearthd keeps it) and drain (cordon, then stop every running VM, a few at a time, through
//! the same stop as `vm stop`, or first snapshot it (`park.rs`); its progress is readable
//! while it runs, and each VM gets `drain` events: when its turn comes, and its outcome).
//! A drain is recorded in the store (`node` key `drain`: mode, reason, start) before its
//! first stop and forgotten when it is done, so a hearthd killed mid-way resumes it on `Open`
//! (still cordoned): VMs already stopped are skipped, and a snapshot already taken (named
//! after the VM's last start) is found, not taken twice.

use actix::fut::{ActorFutureExt, WrapFuture};
use actix::{AsyncContext, Context, Handler, Message, ResponseActFuture};
use futures::StreamExt;
use slog::{info, warn};

use hearth_proto::api::EventReason;
use hearth_proto::api_policy::DrainMode;

use super::park::{park, stop_if_running, Parked};
use super::policy::{policy_snapshot_name, DRAINED_TAG};
use super::{SupervisorError, VmSupervisor};

/// How many VMs a drain stops at once.
pub const DRAIN_PARALLELISM: usize = 4;

/// The store key (`node` table) of the drain that runs.
const DRAIN_KEY: &str = "drain";

/// What is stored of a running drain, so that a hearthd killed mid-way resumes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct DrainRecord {
    mode: DrainMode,
    reason: String,
    /// When it was asked for, Unix ms.
    started_ms: u64,
}

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
    /// Passes the policy loop made since hearthd started (each checks due restarts and time
    /// limits): once it has grown by a few after an event, the policies had their chance to
    /// act on it.
    pub policy_ticks: u64,
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
    /// Whether it was resumed by a start of hearthd after the one that began it had stopped
    /// (then `total` counts the VMs that still ran).
    pub resumed: bool,
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
            policy_ticks: self.policy_rt.counters.ticks,
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
        if let Err(e) = self.check_open() {
            return Box::pin(actix::fut::ready(Err(e)));
        }
        let previous = self.cordon.clone();
        if let Err(e) = self.set_cordon(Some(msg.reason.clone())) {
            return Box::pin(actix::fut::ready(Err(e)));
        }
        // Recorded before any VM is touched: a hearthd killed from here on resumes it.
        let started_ms = self
            .clock
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let record = DrainRecord {
            mode: msg.mode,
            reason: msg.reason,
            started_ms,
        };
        if let Err(e) = self.put_drain_record(Some(&record)) {
            if let Err(undo) = self.set_cordon(previous) {
                warn!(self.log, "cordon not put back after a failed drain"; "error" => %undo);
            }
            return Box::pin(actix::fut::ready(Err(e)));
        }
        let finish = self.run_drain(msg.mode, false, ctx);
        if msg.wait {
            return Box::pin(finish.map(|status, _, _| Ok(status)));
        }
        ctx.spawn(finish.map(|_, _, _| ()));
        Box::pin(actix::fut::ready(Ok(self.node_status())))
    }
}

impl VmSupervisor {
    /// Records the drain that runs, or with `None` that none does.
    fn put_drain_record(&mut self, record: Option<&DrainRecord>) -> Result<(), SupervisorError> {
        let text = record
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| super::VmStoreError::Storage(format!("drain record: {e}")))?;
        self.store.put_node_value(DRAIN_KEY, text.as_deref())?;
        Ok(())
    }

    /// On `Open`, before the autostarts: the mode of the drain a killed hearthd left
    /// unfinished, now marked running (so that no autostart is made: a host being drained
    /// starts nothing); [`VmSupervisor::resume_drain`] then carries it on.
    pub(super) fn unfinished_drain(&mut self) -> Option<DrainMode> {
        let text = match self.store.node_value(DRAIN_KEY) {
            Ok(text) => text?,
            Err(e) => {
                warn!(self.log, "cannot read the drain record"; "error" => %e);
                return None;
            }
        };
        let record: DrainRecord = match serde_json::from_str(&text) {
            Ok(r) => r,
            Err(e) => {
                // Nothing can be done with it: dropped so that it does not come back.
                warn!(self.log, "unreadable drain record dropped"; "record" => &text, "error" => %e);
                if let Err(e) = self.store.put_node_value(DRAIN_KEY, None) {
                    warn!(self.log, "drain record not cleared"; "error" => %e);
                }
                return None;
            }
        };
        info!(self.log, "resuming an unfinished drain";
            "mode" => ?record.mode, "reason" => &record.reason, "started_ms" => record.started_ms);
        self.drain = Some(DrainProgress {
            mode: record.mode,
            resumed: true,
            ..DrainProgress::default()
        });
        Some(record.mode)
    }

    /// After `Open` (pending restarts loaded): resumes an unfinished drain in `mode` on the
    /// VMs that still run, in the background.
    pub(super) fn resume_drain(&mut self, mode: DrainMode, ctx: &mut Context<Self>) {
        let finish = self.run_drain(mode, true, ctx);
        ctx.spawn(finish.map(|_, _, _| ()));
    }

    /// Stops (or snapshots and stops) every VM that runs, [`DRAIN_PARALLELISM`] at a time,
    /// its progress in `self.drain`; when all are done, forgets the drain's record. Resolves
    /// to the host's state then.
    fn run_drain(
        &mut self,
        mode: DrainMode,
        resumed: bool,
        ctx: &mut Context<Self>,
    ) -> impl actix::ActorFuture<Self, Output = NodeStatus> + 'static {
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
                // restart of hearthd is resumed.
                let snapshot =
                    (mode == DrainMode::Snapshot && e.record.state.can_snapshot()).then(|| {
                        let run = e.record.policy.last_start.or(e.record.policy.created);
                        policy_snapshot_name(&name, DRAINED_TAG, run.unwrap_or(now))
                    });
                (name, snapshot)
            })
            .collect();
        self.drain = Some(DrainProgress {
            mode,
            total: work.len(),
            resumed,
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
        steps.into_actor(self).map(move |outcomes, act, _| {
            // The whole outcome, whatever progress steps are still in the mailbox.
            let total = act.drain.as_ref().map_or(outcomes.len(), |d| d.total);
            let mut progress = DrainProgress {
                mode,
                total,
                done: true,
                resumed,
                ..DrainProgress::default()
            };
            for (name, res) in outcomes {
                progress.count(name, res);
            }
            act.drain = Some(progress);
            let marked: Vec<String> = act
                .policy_rt
                .acting
                .iter()
                .filter(|(_, r)| **r == EventReason::Drain)
                .map(|(vm, _)| vm.clone())
                .collect();
            for vm in marked {
                act.done_for(&vm, EventReason::Drain);
            }
            // Done (VMs whose stop failed are in `failed`): nothing left to resume.
            if let Err(e) = act.put_drain_record(None) {
                warn!(act.log, "drain record not cleared: the next start resumes it"; "error" => %e);
            }
            act.node_status()
        })
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
        // Sent before its first message to stop the VM, and after its last.
        match msg.outcome {
            None => self.act_for(&msg.name, EventReason::Drain),
            Some(_) => self.done_for(&msg.name, EventReason::Drain),
        }
        if let (Some(d), Some(res)) = (self.drain.as_mut().filter(|d| !d.done), msg.outcome) {
            d.count(msg.name, res);
        }
    }
}

/// Tests: the drain record as stored.
#[cfg(test)]
#[derive(Debug, Message)]
#[rtype(result = "Option<String>")]
pub(super) struct StoredDrain;

#[cfg(test)]
impl Handler<StoredDrain> for VmSupervisor {
    type Result = Option<String>;

    fn handle(&mut self, _msg: StoredDrain, _ctx: &mut Context<Self>) -> Option<String> {
        self.store.node_value(DRAIN_KEY).unwrap()
    }
}
