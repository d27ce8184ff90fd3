//! The restart policy at work: after a VMM exits without being asked to, the decision
//! ([`policy::decide_restart`]) is recorded (attempt count in the store, an event with reason
//! `policy`) before anything acts on it; the restart itself waits for its due time on the
//! supervisor's [`Clock`] (a timer sends the check through the mailbox, and so does every
//! [`PolicyTick`]) and then runs the same start saga as `vm start`, under the VM's lock.
//! A user stop or delete cancels a pending restart. On `Open`, VMs found crashed (their
//! process gone, e.g. after a host reboot) are started again the same way, oldest first, at
//! most `autostart_parallelism` at once, while the supervisor keeps serving.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use actix::fut::ActorFutureExt;
use actix::{AsyncContext, Context, Handler, MessageResult};
use futures::FutureExt;
use hearth_proto::api::{EventReason, VmInfo, VmState};
use hearth_proto::api_policy::RestartPolicy;
use hearth_proto::api_snapshot::SnapshotState;
use slog::{info, warn};

use super::handlers::Saga;
use super::policy::{decide_restart, ExitCause, RestartDecision};
use super::{Change, PolicyTick, SupervisorError, TickReport, VmAction, VmSupervisor};

/// A restart the policy decided on and that has not run yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PendingRestart {
    /// When it is due, on the supervisor's clock.
    pub due: SystemTime,
    /// Its number in the current crash loop.
    pub attempt: u32,
    /// Its start is waiting for the VM's lock.
    pub launched: bool,
}

/// The supervisor's policy bookkeeping that lives in memory only (what it rebuilds from the
/// store on `Open`).
#[derive(Debug, Default)]
pub(super) struct PolicyRuntime {
    /// Restarts decided and not yet made, by VM.
    pub pending: std::collections::BTreeMap<String, PendingRestart>,
    /// VMs found crashed on `Open`, waiting for an autostart slot.
    pub autostart_queue: VecDeque<String>,
    /// Autostarts running now.
    pub autostarts_running: usize,
    /// VMs whose time limit is being acted on.
    pub expiring: std::collections::BTreeSet<String>,
    /// VMs a drain or an expiry is stopping, with the reason their stop is recorded with
    /// (`park.rs`).
    pub acting: std::collections::BTreeMap<String, EventReason>,
    /// How often the loop ran and what it decided (`/metrics`, `GET /v1/node`).
    pub counters: super::metrics::PolicyCounters,
}

/// Whole seconds, rounded up (a delay of 300 ms is announced as 1 s, not 0 s).
fn secs_ceil(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl VmSupervisor {
    /// Applies the restart policy to `name`, whose VMM just exited for `cause` (the exit is
    /// already recorded). Records the decision, then schedules the restart.
    pub(super) fn after_exit(&mut self, name: &str, cause: ExitCause, ctx: &mut Context<Self>) {
        let Some(entry) = self.vms.get(name) else {
            return;
        };
        let now = self.clock.now();
        let state = entry.record.state;
        let mut record = entry.record.policy;
        match decide_restart(entry.record.spec.restart, cause, record.history(), now) {
            RestartDecision::Leave => self.policy_rt.counters.left += 1,
            RestartDecision::Restart { delay, attempt } => {
                self.policy_rt.counters.restarts += 1;
                record.attempts = attempt;
                record.restart_due = Some(now + delay);
                // The store first: a hearthd killed now finds the count (and the VM crashed,
                // which its next `Open` restarts).
                if let Err(e) = self.apply(name, Change::Policy(record)) {
                    warn!(self.log, "restart not recorded, so not made"; "vm" => name, "error" => %e);
                    return;
                }
                let detail = format!("restarting in {}s (attempt {attempt})", secs_ceil(delay));
                info!(self.log, "restart scheduled"; "vm" => name, "attempt" => attempt, "delay_ms" => delay.as_millis());
                self.publish(name, state, EventReason::Policy, Some(&detail));
                self.policy_rt.pending.insert(
                    name.to_owned(),
                    PendingRestart {
                        due: now + delay,
                        attempt,
                        launched: false,
                    },
                );
                ctx.run_later(delay, |act, ctx| {
                    act.run_due_restarts(ctx);
                });
            }
            RestartDecision::GiveUp { attempts } => {
                self.policy_rt.counters.give_ups += 1;
                let detail = format!(
                    "restart policy {} gave up after {attempts} restarts",
                    entry.record.spec.restart
                );
                warn!(self.log, "restart policy gave up"; "vm" => name, "attempts" => attempts);
                self.publish(name, state, EventReason::Policy, Some(&detail));
            }
        }
    }

    /// Starts every pending restart whose due time has come on the clock.
    pub(super) fn run_due_restarts(&mut self, ctx: &mut Context<Self>) -> Vec<String> {
        let now = self.clock.now();
        let due: Vec<(String, u32)> = self
            .policy_rt
            .pending
            .iter_mut()
            .filter(|(_, p)| !p.launched && p.due <= now)
            .map(|(name, p)| {
                p.launched = true;
                (name.clone(), p.attempt)
            })
            .collect();
        let mut started = Vec::with_capacity(due.len());
        for (name, attempt) in due {
            started.push(name.clone());
            self.restart_now(name, Some(attempt), ctx);
        }
        started
    }

    /// Runs the start saga for a policy restart (`attempt`) or an autostart (`None`), under
    /// the VM's lock. A start that fails counts as another failure of the crash loop.
    fn restart_now(&mut self, name: String, attempt: Option<u32>, ctx: &mut Context<Self>) {
        let n = name.clone();
        let fut = self.locked(
            &name,
            move |act, ctx| {
                // A user stop or delete since the decision removed it: nothing to do.
                if attempt.is_some() && act.policy_rt.pending.remove(&n).is_none() {
                    return Ok(async { Ok(()) }.boxed_local());
                }
                let entry = act.entry(&n)?;
                if !entry.record.state.can_start() {
                    return Ok(async { Ok(()) }.boxed_local());
                }
                let state = entry.record.state;
                let mut record = entry.record.policy;
                record.last_start = Some(act.clock.now());
                record.restart_due = None;
                act.apply(&n, Change::Policy(record))?;
                let detail = match attempt {
                    Some(k) => format!("restart attempt {k}"),
                    None => "autostart: its process was gone when hearthd started".to_owned(),
                };
                act.publish(&n, state, EventReason::Policy, Some(&detail));
                act.start_action(&n, VmAction::Start, ctx)
            },
            |_| Ok(()),
        );
        ctx.spawn(fut.map(move |res, act, ctx| {
            if attempt.is_none() {
                act.policy_rt.autostarts_running -= 1;
                act.pump_autostarts(ctx);
            }
            if let Err(e) = res {
                warn!(act.log, "policy start failed"; "vm" => &name, "error" => %e);
                // The boot failed (the VM is `failed`): the crash loop goes on, backing off.
                if act
                    .vms
                    .get(&name)
                    .is_some_and(|e| e.record.state == VmState::Failed)
                {
                    act.after_exit(&name, ExitCause::Crash, ctx);
                }
            }
        }));
    }

    /// Called by a user action before it runs: a stop, kill or delete cancels a pending
    /// restart. Answers the saga that records the cancellation when the VM is not running
    /// (a `crashed` VM waiting for its restart is then `stopped`, as the user asked).
    pub(super) fn cancel_restart(
        &mut self,
        name: &str,
        action: Option<VmAction>,
    ) -> Option<Result<Saga, SupervisorError>> {
        let cancelled = self.policy_rt.pending.remove(name).is_some();
        if cancelled {
            self.forget_restart_due(name);
        }
        let action = action?;
        let state = self.vms.get(name)?.record.state;
        let stop = matches!(action, VmAction::Stop | VmAction::Kill);
        if !(cancelled && stop && !state.can_stop()) {
            return None;
        }
        let by = match self.policy_rt.acting.get(name) {
            Some(EventReason::Drain) => "by a drain",
            Some(EventReason::Expired) => "at its time limit",
            _ => "by the user",
        };
        let detail = format!("stopped {by}; the pending restart is cancelled");
        let error = self
            .apply(
                name,
                Change::State {
                    state: VmState::Stopped,
                    error: Some(detail),
                    reason: EventReason::User,
                },
            )
            .err();
        Some(match error {
            Some(e) => Err(e),
            None => Ok(async { Ok(()) }.boxed_local()),
        })
    }

    /// A user start resets the crash loop: the history counts from this start.
    pub(super) fn user_started(&mut self, name: &str) {
        let Some(entry) = self.vms.get(name) else {
            return;
        };
        let mut record = entry.record.policy;
        record.attempts = 0;
        record.last_start = Some(self.clock.now());
        record.restart_due = None;
        if let Err(e) = self.apply(name, Change::Policy(record)) {
            warn!(self.log, "restart history not reset"; "vm" => name, "error" => %e);
        }
    }

    /// Removes the stored due time of a cancelled restart (a later `Open` must not make it).
    fn forget_restart_due(&mut self, name: &str) {
        let Some(entry) = self.vms.get(name) else {
            return;
        };
        let mut record = entry.record.policy;
        if record.restart_due.take().is_some() {
            if let Err(e) = self.apply(name, Change::Policy(record)) {
                warn!(self.log, "cancelled restart not recorded"; "vm" => name, "error" => %e);
            }
        }
    }

    /// After `Open`: a restart that was pending when hearthd stopped and is not due yet waits
    /// for its stored due time (the backoff goes on where it was); the other VMs found
    /// crashed whose policy restarts them are queued, oldest first.
    pub(super) fn queue_autostarts(&mut self, ctx: &mut Context<Self>) -> Vec<String> {
        let now = self.clock.now();
        let waiting: Vec<(String, SystemTime, u32)> = self
            .vms
            .values()
            .filter(|e| e.record.state.can_start() && e.record.spec.restart != RestartPolicy::No)
            .filter_map(|e| {
                let due = e.record.policy.restart_due.filter(|d| *d > now)?;
                Some((e.record.spec.name.clone(), due, e.record.policy.attempts))
            })
            .collect();
        for (name, due, attempt) in waiting {
            info!(self.log, "restart still pending from before"; "vm" => &name, "attempt" => attempt);
            self.policy_rt.pending.insert(
                name,
                PendingRestart {
                    due,
                    attempt,
                    launched: false,
                },
            );
            ctx.run_later(super::policy::time_left(due, now), |act, ctx| {
                act.run_due_restarts(ctx);
            });
        }
        if self.drain.as_ref().is_some_and(|d| !d.done) {
            // A drain cut short by a restart of hearthd is resumed: nothing is started (it
            // would be stopped again), and an overdue restart is cancelled, as the drain
            // cancels the pending ones.
            let overdue: Vec<String> = self
                .vms
                .values()
                .filter(|e| e.record.policy.restart_due.is_some())
                .filter(|e| !self.policy_rt.pending.contains_key(&e.record.spec.name))
                .map(|e| e.record.spec.name.clone())
                .collect();
            for name in overdue {
                self.forget_restart_due(&name);
            }
            return Vec::new();
        }
        let mut wanted: Vec<(Option<SystemTime>, String)> = self
            .vms
            .values()
            .filter(|e| !self.policy_rt.pending.contains_key(&e.record.spec.name))
            .filter(|e| {
                // A restart decided before hearthd stopped and overdue now is made, whatever
                // the count says (it counted this attempt already).
                let overdue = e.record.policy.restart_due.is_some()
                    && e.record.state.can_start()
                    && e.record.spec.restart != RestartPolicy::No;
                overdue
                    || (e.record.state == VmState::Crashed
                        && matches!(
                            decide_restart(
                                e.record.spec.restart,
                                ExitCause::Crash,
                                e.record.policy.history(),
                                now
                            ),
                            RestartDecision::Restart { .. }
                        ))
            })
            .map(|e| (e.record.policy.created, e.record.spec.name.clone()))
            .collect();
        // `None` (made before policies were recorded) sorts first: those are the oldest.
        wanted.sort();
        let names: Vec<String> = wanted.into_iter().map(|(_, n)| n).collect();
        self.policy_rt.counters.autostarts += names.len() as u64;
        self.policy_rt.autostart_queue.extend(names.iter().cloned());
        self.pump_autostarts(ctx);
        names
    }

    /// Starts queued autostarts while fewer than the limit run.
    fn pump_autostarts(&mut self, ctx: &mut Context<Self>) {
        let limit = self.settings.policy.autostart_parallelism.max(1);
        while self.policy_rt.autostarts_running < limit {
            let Some(name) = self.policy_rt.autostart_queue.pop_front() else {
                break;
            };
            self.policy_rt.autostarts_running += 1;
            self.restart_now(name, None, ctx);
        }
    }

    /// Fills in the policy fields of `info` that depend on the clock.
    pub(super) fn with_policy(&self, mut info: VmInfo) -> VmInfo {
        let now = self.clock.now();
        if let Some(p) = self.policy_rt.pending.get(&info.name) {
            info.restart_in_secs = Some(secs_ceil(super::policy::time_left(p.due, now)));
        }
        if let Some(deadline) = self
            .vms
            .get(&info.name)
            .and_then(|e| e.record.policy.deadline)
        {
            info.time_left_secs = Some(secs_ceil(super::policy::time_left(deadline, now)));
        }
        info.parked_snapshot = self
            .snapshots
            .values()
            .filter(|r| r.source_vm == info.name && r.state == SnapshotState::Ready)
            .filter(|r| super::policy::is_policy_snapshot_name(&r.name))
            .max_by_key(|r| r.created_at_ms)
            .map(|r| r.name.clone());
        info
    }
}

impl Handler<PolicyTick> for VmSupervisor {
    type Result = MessageResult<PolicyTick>;

    fn handle(&mut self, _msg: PolicyTick, ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.policy_tick(ctx))
    }
}

impl VmSupervisor {
    /// One pass of the policy loop: due restarts, then time limits, each set in motion (it
    /// runs on under its VM's lock), then counted: a count read through the mailbox after it
    /// means this pass has looked at every VM.
    fn policy_tick(&mut self, ctx: &mut Context<Self>) -> TickReport {
        let report = TickReport {
            restarts: self.run_due_restarts(ctx),
            expiries: self.check_expiries(ctx),
        };
        self.policy_rt.counters.ticks += 1;
        report
    }

    /// After `Open`: autostarts, then the periodic check (deadlines were loaded with the
    /// records, so a time limit runs on across a restart of hearthd).
    /// Answers the VMs queued for autostart.
    pub(super) fn start_policies(&mut self, ctx: &mut Context<Self>) -> Vec<String> {
        let queued = self.queue_autostarts(ctx);
        let tick = self.settings.policy.tick;
        if !tick.is_zero() {
            ctx.run_interval(tick, |act, ctx| {
                act.policy_tick(ctx);
            });
        }
        queued
    }

    /// The policy record of a VM being created: its creation time, the start of its restart
    /// history, and the deadline of its time limit.
    pub(super) fn policy_at_create(
        &self,
        spec: &hearth_proto::api::CreateVm,
    ) -> super::PolicyState {
        let now = self.clock.now();
        super::PolicyState {
            attempts: 0,
            last_start: Some(now),
            // Checked by `validate` before this: a bad `ttl` never gets here.
            deadline: spec
                .ttl
                .as_deref()
                .and_then(|t| hearth_proto::api_policy::parse_ttl(t).ok())
                .map(|d| now + d),
            created: Some(now),
            restart_due: None,
        }
    }
}
