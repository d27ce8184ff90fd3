//! One `impl Handler` per supervisor message. Lifecycle handlers take the VM's operation lock
//! first ([`VmSupervisor::locked`]), check the state once they hold it, then run a saga.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use actix::fut::{ready, ActorFutureExt, WrapFuture};
use actix::{Addr, AsyncContext, Context, Handler, ResponseActFuture, ResponseFuture};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use hearth_proto::api::{Event, VmInfo, VmState};
use hearth_proto::api_images::ImageKind;
use slog::{info, warn};

use super::open::{execute, plan_repairs, Adoption};
use super::policy::ExitCause;
use super::saga::{self, BootPlan, Ports};
use super::{
    Change, Close, Commit, CreateVm, DeleteVm, EventsSince, ExpectExit, GetMetrics, GetVm,
    Idempotency, ListVms, ObservePhase, Open, OpenReport, PoolOccupancy, RemoveUnownedRunDir,
    RunAction, RunDirOwner, SetNat, Subscribe, SupervisorError, SupervisorMetrics, UnownedRunDir,
    VmAction, VmEntry, VmSupervisor, VmmProcessRecord, WaitForState, Waiter,
};
use crate::firecracker::{AdoptProcess, FirecrackerActor, RunDir, VmProcessEvent, VmmProcess};
use crate::host::processes::ExitStatus;

pub(super) type Saga = LocalBoxFuture<'static, Result<(), SupervisorError>>;

fn fail<T: 'static>(
    e: SupervisorError,
) -> ResponseActFuture<VmSupervisor, Result<T, SupervisorError>> {
    Box::pin(ready(Err(e)))
}

impl VmSupervisor {
    pub(super) fn ports(&self, ctx: &mut Context<Self>) -> Ports {
        Ports {
            me: ctx.address(),
            deps: self.deps.clone(),
            settings: self.settings.clone(),
            log: self.log.clone(),
        }
    }

    /// Waits for `name`'s operation lock, then calls `start` (which checks the state and
    /// returns the saga to run), runs it, and answers with `finish`. The lock is held until
    /// the saga ends, so operations on one VM never overlap.
    pub(super) fn locked<T: 'static>(
        &mut self,
        name: &str,
        start: impl FnOnce(&mut Self, &mut Context<Self>) -> Result<Saga, SupervisorError> + 'static,
        finish: impl FnOnce(&mut Self) -> Result<T, SupervisorError> + 'static,
    ) -> ResponseActFuture<Self, Result<T, SupervisorError>> {
        let lock = match self.entry(name) {
            Ok(e) => e.lock.clone(),
            Err(e) => return fail(e),
        };
        Box::pin(
            async move { lock.lock_owned().await }
                .into_actor(self)
                .then(move |guard, act, ctx| {
                    let fut: ResponseActFuture<Self, Result<T, SupervisorError>> =
                        match start(act, ctx) {
                            Ok(saga) => Box::pin(saga.into_actor(act).map(move |res, act, _| {
                                drop(guard);
                                res.and_then(|()| finish(act))
                            })),
                            Err(e) => fail(e),
                        };
                    fut
                }),
        )
    }

    pub(super) fn info_of(&self, name: &str) -> Result<VmInfo, SupervisorError> {
        self.entry(name)
            .map(super::VmEntry::info)
            .map(|i| self.with_policy(i))
    }

    /// The boot plan of `name` as it stands (images resolved, a fresh process actor).
    fn boot_plan(
        &mut self,
        name: &str,
        ctx: &mut Context<Self>,
    ) -> Result<BootPlan, SupervisorError> {
        let entry = self.entry(name)?;
        let spec = entry.record.spec.clone();
        let disk = entry.record.disk.as_ref().map(|d| d.path.clone());
        let creating = entry.record.state == VmState::Creating;
        let stale_lease = entry.record.lease.clone();
        let kernel = self.resolve_image(ImageKind::Kernel, &spec.kernel)?;
        let rootfs_base = self.resolve_image(ImageKind::Rootfs, &spec.rootfs)?;
        let binary = self
            .vmm
            .binary
            .as_ref()
            .map(|b| b.path.clone())
            .ok_or_else(SupervisorError::no_firecracker_binary)?;
        // Jailed (issue 16): the VM's uid, leased at its first boot; it names the jail.
        // A create takes a warm VMM's uid (and the VMM) when the pool has one. Only a create
        // (`CreateVm` settles the uid's lease when it ends: `warm_create_ended`); a VM in
        // `creating` cannot be started otherwise.
        let warm = if creating {
            self.warm_take(name, ctx)
        } else {
            None
        };
        let jail = match warm {
            Some(uid) => Some((uid, true)),
            None => self.lease_uid(name)?,
        };
        let made = self
            .api_socket_of(name, jail.map(|(uid, _)| uid))
            .and_then(|api_socket| {
                // A fresh process actor per boot: the previous one may still be winding down.
                if let Some(e) = self.vms.get_mut(name) {
                    e.vmm = None;
                }
                Ok((api_socket, self.vmm_for(name, ctx)?))
            });
        let (api_socket, vmm) = match made {
            Ok(made) => made,
            Err(e) => {
                if let Some((_, true)) = jail {
                    if let Err(undo) = self.apply(name, super::Change::Uid(None)) {
                        slog::warn!(self.log, "uid lease not given back"; "vm" => name, "error" => %undo);
                    }
                }
                return Err(e);
            }
        };
        Ok(BootPlan {
            jail_uid: jail.map(|(uid, _)| uid),
            uid_fresh: jail.is_some_and(|(_, fresh)| fresh),
            spec,
            kernel,
            rootfs_base,
            disk,
            creating,
            stale_lease,
            vmm,
            api_socket,
            binary,
        })
    }

    fn resolve_image(
        &self,
        kind: ImageKind,
        name: &str,
    ) -> Result<std::path::PathBuf, SupervisorError> {
        self.catalog
            .resolve(kind, name)
            .ok_or_else(|| SupervisorError::UnknownImage {
                kind: kind.as_str(),
                image: name.to_owned(),
            })
    }

    /// `Some(answer)` when the key was seen with the same request; a conflict when it was
    /// seen with another or is still running; `None` when it is new (now marked in flight).
    pub(super) fn idempotent_replay(
        &mut self,
        key: Option<&Idempotency>,
    ) -> Result<Option<VmInfo>, SupervisorError> {
        self.idempotent_replay_as(key)
    }

    /// [`Self::idempotent_replay`] of a request whose answer is a `T` (a snapshot's).
    pub(super) fn idempotent_replay_as<T: serde::de::DeserializeOwned>(
        &mut self,
        key: Option<&Idempotency>,
    ) -> Result<Option<T>, SupervisorError> {
        let Some(k) = key else { return Ok(None) };
        if self.keys_in_flight.contains(&k.key) {
            return Err(SupervisorError::Conflict {
                message: "A request with this Idempotency-Key is still in progress".into(),
            });
        }
        match self.store.idempotent_response(&k.key)? {
            Some((hash, response)) if hash == k.request_hash => serde_json::from_str(&response)
                .map(Some)
                .map_err(|e| SupervisorError::step("idempotent replay", e)),
            Some(_) => Err(SupervisorError::Conflict {
                message: "This Idempotency-Key was used with a different request".into(),
            }),
            None => {
                self.keys_in_flight.insert(k.key.clone());
                Ok(None)
            }
        }
    }

    /// Stores the answer to a keyed request (success only: a failed request may be retried).
    pub(super) fn idempotent_store(
        &mut self,
        key: Option<Idempotency>,
        answer: &Result<VmInfo, SupervisorError>,
    ) {
        self.idempotent_store_as(key, answer);
    }

    /// [`Self::idempotent_store`] of a request whose answer is a `T` (a snapshot's).
    pub(super) fn idempotent_store_as<T: serde::Serialize>(
        &mut self,
        key: Option<Idempotency>,
        answer: &Result<T, SupervisorError>,
    ) {
        let Some(k) = key else { return };
        self.keys_in_flight.remove(&k.key);
        if let Ok(info) = answer {
            let json = serde_json::to_string(info).expect("API answers serialise");
            if let Err(e) = self
                .store
                .put_idempotent_response(&k.key, &k.request_hash, &json)
            {
                slog::warn!(self.log, "idempotency key not stored"; "error" => %e);
            }
        }
    }

    pub(super) fn check_open(&self) -> Result<(), SupervisorError> {
        if self.closing {
            return Err(SupervisorError::Unavailable {
                what: "hearthd is shutting down".into(),
            });
        }
        Ok(())
    }
}

impl Handler<CreateVm> for VmSupervisor {
    type Result = ResponseActFuture<Self, Result<VmInfo, SupervisorError>>;

    fn handle(&mut self, msg: CreateVm, _ctx: &mut Context<Self>) -> Self::Result {
        if msg.spec.from_snapshot.is_some() {
            return self.restore(msg.spec, msg.idempotency, true);
        }
        let name = msg.spec.name.clone();
        let key = msg.idempotency;
        let prepared = (|| {
            self.check_open()?;
            self.check_cordon()?;
            msg.spec.validate()?;
            if let Some(info) = self.idempotent_replay(key.as_ref())? {
                return Ok(Err(info));
            }
            Ok(Ok(()))
        })();
        match prepared {
            Err(e) => return fail(e),
            Ok(Err(replayed)) => return Box::pin(ready(Ok(replayed))),
            Ok(Ok(())) => {}
        }
        let started = (|| {
            if self.vms.contains_key(&name) {
                return Err(SupervisorError::Conflict {
                    message: format!("A VM named {name:?} already exists"),
                });
            }
            // Refuse before recording anything when the images or the binary are missing.
            self.resolve_image(ImageKind::Kernel, &msg.spec.kernel)?;
            self.resolve_image(ImageKind::Rootfs, &msg.spec.rootfs)?;
            if self.vmm.binary.is_none() {
                return Err(SupervisorError::no_firecracker_binary());
            }
            self.apply(&name, Change::Insert(Box::new(msg.spec.clone())))?;
            let policy = self.policy_at_create(&msg.spec);
            self.apply(&name, Change::Policy(policy))
        })();
        if let Err(e) = started {
            self.idempotent_store(key, &Err(e.clone()));
            self.count_error("create");
            return fail(e);
        }
        let n = name.clone();
        let info_name = name.clone();
        Box::pin(
            self.locked(
                &name.clone(),
                move |act, ctx| {
                    let plan = act.boot_plan(&n, ctx);
                    let ports = act.ports(ctx);
                    match plan {
                        Ok(plan) => {
                            Ok(saga::boot(ports, plan).map(|r| r.map(|_| ())).boxed_local())
                        }
                        Err(e) => {
                            let n = n.clone();
                            Ok(async move {
                                ports
                                    .set_state(
                                        &n,
                                        VmState::Failed,
                                        Some(e.to_string()),
                                        hearth_proto::api::EventReason::Error,
                                    )
                                    .await?;
                                Err(e)
                            }
                            .boxed_local())
                        }
                    }
                },
                move |act| act.info_of(&name),
            )
            .map(move |res, act, ctx| {
                act.warm_create_ended(&info_name, ctx);
                if res.is_err() {
                    act.count_error("create");
                }
                act.idempotent_store(key, &res);
                res
            }),
        )
    }
}

impl Handler<RunAction> for VmSupervisor {
    type Result = ResponseActFuture<Self, Result<VmInfo, SupervisorError>>;

    fn handle(&mut self, msg: RunAction, _ctx: &mut Context<Self>) -> Self::Result {
        let key = msg.idempotency;
        let replay = self
            .check_open()
            .and_then(|()| self.idempotent_replay(key.as_ref()));
        match replay {
            Err(e) => return fail(e),
            Ok(Some(info)) => return Box::pin(ready(Ok(info))),
            Ok(None) => {}
        }
        let name = msg.name.clone();
        let action = msg.action;
        let n = name.clone();
        let op = action.as_str();
        Box::pin(
            self.locked(
                &name.clone(),
                move |act, ctx| {
                    if let Some(cancelled) = act.cancel_restart(&n, Some(action)) {
                        return cancelled;
                    }
                    let saga = act.start_action(&n, action, ctx)?;
                    if matches!(action, VmAction::Start | VmAction::Restart) {
                        act.user_started(&n);
                    }
                    Ok(saga)
                },
                move |act| act.info_of(&name),
            )
            .map(move |res, act, _| {
                if res.is_err() {
                    act.count_error(op);
                }
                act.idempotent_store(key, &res);
                res
            }),
        )
    }
}

impl VmSupervisor {
    /// Checks that `action` is allowed now and returns its saga. Runs under the VM's lock.
    pub(super) fn start_action(
        &mut self,
        name: &str,
        action: VmAction,
        ctx: &mut Context<Self>,
    ) -> Result<Saga, SupervisorError> {
        let entry = self.entry(name)?;
        let state = entry.record.state;
        let allowed = match action {
            VmAction::Start => state.can_start(),
            VmAction::Stop | VmAction::Kill => state.can_stop(),
            VmAction::Restart => state.can_restart(),
            VmAction::Pause => state.can_pause(),
            VmAction::Resume => state.can_resume(),
        };
        if !allowed {
            return Err(SupervisorError::InvalidState {
                name: name.to_owned(),
                state,
                op: action.as_str(),
            });
        }
        let ports = self.ports(ctx);
        let lease = entry.record.lease.clone();
        let vmm = entry.vmm.clone();
        let pid = entry.record.process.as_ref().and_then(|p| p.pid);
        let n = name.to_owned();
        let frozen = action == VmAction::Resume && self.left_frozen(name);
        if let Some(saga) =
            super::pause::action_saga(&ports, name, action, state, vmm.clone(), frozen)?
        {
            return Ok(saga);
        }
        // A paused VM is resumed first, so its guest can shut down cleanly.
        let resume_first = (state == VmState::Paused && action != VmAction::Kill)
            .then(|| (ports.clone(), n.clone(), vmm.clone()));
        let stop_first = matches!(action, VmAction::Stop | VmAction::Kill)
            || (action == VmAction::Restart && state.can_stop());
        let kill = action == VmAction::Kill;
        let stop_saga =
            stop_first.then(|| saga::stop(ports.clone(), n.clone(), vmm, pid, lease, kill, state));
        let boot_plan = match action {
            VmAction::Start | VmAction::Restart => {
                let mut plan = self.boot_plan(name, ctx)?;
                if stop_first {
                    // The stop gives the current lease back (or fails, and no boot follows).
                    plan.stale_lease = None;
                }
                Some(plan)
            }
            _ => None,
        };
        Ok(async move {
            if let Some((ports, n, vmm)) = resume_first {
                super::pause::resume_before_stop(&ports, &n, vmm.as_ref()).await;
            }
            if let Some(stop) = stop_saga {
                stop.await?;
            }
            if let Some(plan) = boot_plan {
                saga::boot(ports, plan).await?;
            }
            Ok(())
        }
        .boxed_local())
    }
}

impl Handler<DeleteVm> for VmSupervisor {
    type Result = ResponseActFuture<Self, Result<(), SupervisorError>>;

    fn handle(&mut self, msg: DeleteVm, _ctx: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.check_open() {
            return fail(e);
        }
        let name = msg.name;
        let n = name.clone();
        self.locked(
            &name,
            move |act, ctx| {
                let entry = act.entry(&n)?;
                let state = entry.record.state;
                if !state.can_delete() {
                    return Err(SupervisorError::InvalidState {
                        name: n.clone(),
                        state,
                        op: "delete",
                    });
                }
                act.policy_rt.pending.remove(&n);
                let entry = act.entry(&n)?;
                let ports = act.ports(ctx);
                let lease = entry.record.lease.clone();
                let has_disk = entry.record.disk.is_some();
                let vmm = entry.vmm.clone();
                let running = state.has_process();
                let pid = entry.record.process.as_ref().and_then(|p| p.pid);
                let vmm = if running { vmm } else { None };
                let fork_snapshot = act.internal_snapshot_of(&n);
                let me = ctx.address();
                let n = n.clone();
                Ok(async move {
                    if state == VmState::Paused {
                        super::pause::resume_before_stop(&ports, &n, vmm.as_ref()).await;
                    }
                    saga::delete(ports, n, vmm, pid, lease, has_disk, state).await?;
                    // A fork's own snapshot goes with the last VM restored from it.
                    if let Some(name) = fork_snapshot {
                        let _ = me.send(super::DeleteSnapshot { name }).await;
                    }
                    Ok(())
                }
                .boxed_local())
            },
            |_| Ok(()),
        )
    }
}

impl Handler<SetNat> for VmSupervisor {
    type Result = ResponseActFuture<Self, Result<VmInfo, SupervisorError>>;

    fn handle(&mut self, msg: SetNat, _ctx: &mut Context<Self>) -> Self::Result {
        let enabled = msg.enabled;
        self.change_live(
            msg.name,
            "set NAT",
            move |recorded| {
                // Switching on what is already on still asks NatActor (idempotently), so that
                // a host that lost its egress interface answers 503 rather than "on": the NAT
                // switch acts on a change of the flag, so it is told it was off. Only that
                // capability looks at `nat`.
                let from =
                    (recorded.nat && enabled).then(|| super::hooks::spec_with_nat(recorded, false));
                Ok(super::live_change::LiveChange {
                    next: super::hooks::spec_with_nat(recorded, enabled),
                    from,
                    record: super::live_change::Record::Nat(enabled),
                })
            },
            VmSupervisor::info_of,
        )
    }
}

impl Handler<GetVm> for VmSupervisor {
    type Result = Result<VmInfo, SupervisorError>;

    fn handle(&mut self, msg: GetVm, _ctx: &mut Context<Self>) -> Self::Result {
        self.info_of(&msg.name)
    }
}

impl Handler<ListVms> for VmSupervisor {
    type Result = actix::MessageResult<ListVms>;

    fn handle(&mut self, msg: ListVms, _ctx: &mut Context<Self>) -> Self::Result {
        let list = self
            .vms
            .values()
            .filter(|e| match &msg.label {
                Some((k, v)) => e.record.spec.labels.get(k) == Some(v),
                None => true,
            })
            .map(super::VmEntry::info)
            .map(|i| self.with_policy(i))
            .collect();
        actix::MessageResult(list)
    }
}

impl Handler<WaitForState> for VmSupervisor {
    type Result = ResponseFuture<Result<VmInfo, SupervisorError>>;

    fn handle(&mut self, msg: WaitForState, _ctx: &mut Context<Self>) -> Self::Result {
        let info = match self.info_of(&msg.name) {
            Ok(info) => info,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        if info.state == msg.state {
            return Box::pin(async move { Ok(info) });
        }
        if super::unreachable_from(info.state, msg.state) {
            return Box::pin(async move {
                Err(SupervisorError::InvalidState {
                    name: info.name,
                    state: info.state,
                    op: "wait for that state",
                })
            });
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiters.push(Waiter {
            name: msg.name.clone(),
            state: msg.state,
            tx,
        });
        Box::pin(async move {
            match tokio::time::timeout(msg.timeout, rx).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) => Err(SupervisorError::Unavailable {
                    what: "The supervisor stopped".into(),
                }),
                Err(_) => Err(SupervisorError::Timeout {
                    name: msg.name,
                    state: msg.state,
                }),
            }
        })
    }
}

impl Handler<EventsSince> for VmSupervisor {
    type Result = Result<Vec<Event>, SupervisorError>;

    fn handle(&mut self, msg: EventsSince, _ctx: &mut Context<Self>) -> Self::Result {
        Ok(self.store.events_since(msg.since, msg.limit)?)
    }
}

impl Handler<Subscribe> for VmSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _ctx: &mut Context<Self>) {
        self.subscribers.push(msg.subscriber);
    }
}

impl Handler<GetMetrics> for VmSupervisor {
    type Result = ResponseFuture<SupervisorMetrics>;

    fn handle(&mut self, _msg: GetMetrics, _ctx: &mut Context<Self>) -> Self::Result {
        let mut counts: HashMap<VmState, u64> = HashMap::new();
        for e in self.vms.values() {
            *counts.entry(e.record.state).or_default() += 1;
        }
        let mut phase_seconds: Vec<_> = self.phases.iter().map(|(k, v)| (*k, v.clone())).collect();
        phase_seconds.sort_by_key(|(k, _)| *k);
        let mut errors: Vec<_> = self.errors.iter().map(|(k, v)| (*k, *v)).collect();
        errors.sort_unstable();
        let mut metrics = SupervisorMetrics {
            vms_by_state: VmState::ALL
                .into_iter()
                .map(|s| (s, counts.get(&s).copied().unwrap_or(0)))
                .collect(),
            phase_seconds,
            errors,
            snapshots: self
                .snapshots
                .values()
                .map(|r| (r.name.clone(), r.disk_bytes, r.mem_file_bytes))
                .collect(),
            pool: None,
            cordoned: self.cordon.is_some(),
            policy: self.policy_rt.counters,
            egress_denied: Vec::new(),
        };
        let pool = self.deps.tap_pool.send(crate::tap_pool::GetStatus {});
        let egress = self.egress_denied_counters();
        Box::pin(async move {
            metrics.egress_denied = egress.await;
            // The pool's status is a memory read; a pool that is gone just leaves it out.
            metrics.pool = pool.await.ok().map(|s| PoolOccupancy {
                free_taps: s.free_taps as u64,
                leased: s.leased as u64,
                free_ips: u64::from(s.free_ips),
            });
            metrics
        })
    }
}

impl Handler<VmProcessEvent> for VmSupervisor {
    type Result = ();

    fn handle(&mut self, msg: VmProcessEvent, ctx: &mut Context<Self>) {
        let VmProcessEvent::ExitedUnexpectedly {
            vm_id,
            pid,
            status,
            guest_exit,
        } = msg
        else {
            // A requested stop: its saga records the outcome.
            return;
        };
        let Some(entry) = self.vms.get(&vm_id) else {
            return;
        };
        if entry.stopping_pid == Some(pid) {
            return;
        }
        slog::warn!(self.log, "VMM exited unexpectedly"; "vm" => &vm_id, "pid" => pid, "status" => %status);
        let n = vm_id.clone();
        // What the restart policy is told once the exit is recorded.
        let cause = std::rc::Rc::new(std::cell::Cell::new(None));
        let cause_out = cause.clone();
        let fut = self.locked(
            &vm_id,
            move |act, ctx| {
                let entry = act.entry(&n)?;
                let current = entry.record.process.as_ref().and_then(|p| p.pid);
                // Already handled (a saga undid it, or a newer process runs).
                if current != Some(pid) || !entry.record.state.has_process() {
                    return Ok(async { Ok(()) }.boxed_local());
                }
                let ports = act.ports(ctx);
                let lease = entry.record.lease.clone();
                let n = n.clone();
                // The guest shut itself down (reboot=k), or a VM being stopped ended: a stop,
                // not a crash.
                let stopped = match (status, entry.record.state) {
                    // hearth's init reported the command's end, then rebooted: the event's
                    // detail carries its line, which `exit_status` is parsed from.
                    (_, _) if guest_exit.is_some() => guest_exit.map(|r| {
                        format!("the guest shut down: {}", hearth_proto::init::exit_line(r))
                    }),
                    (ExitStatus::Code(0), _) => Some("the guest shut down".to_owned()),
                    (status, VmState::Stopping) => {
                        Some(format!("the VMM exited while stopping: {status}"))
                    }
                    _ => None,
                };
                cause.set(Some(match (&stopped, entry.record.state) {
                    (_, VmState::Stopping) => ExitCause::Requested,
                    (Some(_), _) => ExitCause::GuestShutdown,
                    (None, _) => ExitCause::Crash,
                }));
                Ok(async move {
                    if let Some(detail) = stopped {
                        saga::stopped_network(&ports, &n, lease).await?;
                        ports.commit(&n, Change::Process(None)).await?;
                        ports
                            .set_state(
                                &n,
                                VmState::Stopped,
                                Some(detail),
                                hearth_proto::api::EventReason::Crash,
                            )
                            .await?;
                        Ok(())
                    } else {
                        saga::crashed(ports, n, lease, format!("VMM exited: {status}")).await
                    }
                }
                .boxed_local())
            },
            |_| Ok(()),
        );
        ctx.spawn(fut.map(move |res, act, ctx| match res {
            Err(e) => {
                slog::error!(act.log, "crash handling failed"; "vm" => &vm_id, "error" => %e);
            }
            Ok(()) => {
                if let Some(cause) = cause_out.get() {
                    act.after_exit(&vm_id, cause, ctx);
                }
            }
        }));
    }
}

impl Handler<Commit> for VmSupervisor {
    type Result = Result<(), SupervisorError>;

    fn handle(&mut self, msg: Commit, _ctx: &mut Context<Self>) -> Self::Result {
        self.apply(&msg.vm, msg.change)
    }
}

impl Handler<ExpectExit> for VmSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ExpectExit, _ctx: &mut Context<Self>) {
        if let Some(e) = self.vms.get_mut(&msg.vm) {
            e.stopping_pid = msg.pid;
        }
    }
}

impl Handler<RunDirOwner> for VmSupervisor {
    type Result = Result<Addr<FirecrackerActor>, SupervisorError>;

    fn handle(&mut self, msg: RunDirOwner, ctx: &mut Context<Self>) -> Self::Result {
        match self.vms.get(&msg.vm).and_then(|e| e.vmm.clone()) {
            Some(addr) => Ok(addr),
            None => self.new_vmm(&msg.vm, ctx),
        }
    }
}

impl Handler<RemoveUnownedRunDir> for VmSupervisor {
    type Result = Result<UnownedRunDir, SupervisorError>;

    fn handle(&mut self, msg: RemoveUnownedRunDir, _ctx: &mut Context<Self>) -> Self::Result {
        let has_actor = self.vms.get(&msg.vm).is_some_and(|e| e.vmm.is_some());
        if self.vmm.binary.is_some() || has_actor {
            return Ok(UnownedRunDir::HasOwner);
        }
        // In the mailbox: no `RunDirOwner` (the only way an actor for it is made) interleaves.
        let base = self.vmm.settings.run_base.to_string_lossy().into_owned();
        let pids = match self.vmm.processes.list() {
            Ok(pids) => pids,
            Err(e) => {
                return Ok(UnownedRunDir::Unchecked {
                    reason: e.to_string(),
                })
            }
        };
        let user = pids.into_iter().find(|pid| {
            // A process that exits meanwhile has no identity: it uses nothing any more.
            self.vmm.processes.identity(*pid).is_ok_and(|id| {
                super::open::owner_vm(&id.cmdline, &base).as_deref() == Some(msg.vm.as_str())
            })
        });
        if let Some(pid) = user {
            return Ok(UnownedRunDir::InUse { pid });
        }
        RunDir::new(&self.vmm.settings.run_base, &msg.vm)
            .and_then(|dir| dir.remove_unowned())
            .map_err(|e| SupervisorError::step("remove run directory", e))?;
        Ok(UnownedRunDir::Removed)
    }
}

impl Handler<ObservePhase> for VmSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ObservePhase, _ctx: &mut Context<Self>) {
        self.observe(msg.phase, msg.took);
    }
}

impl Handler<Open> for VmSupervisor {
    type Result = ResponseActFuture<Self, Result<OpenReport, SupervisorError>>;

    fn handle(&mut self, _msg: Open, ctx: &mut Context<Self>) -> Self::Result {
        let records = match self.store.load_all() {
            Ok(r) => r,
            Err(e) => return Box::pin(actix::fut::ready(Err(e.into()))),
        };
        match self.store.load_snapshots() {
            Ok(snaps) => {
                self.snapshots = snaps.into_iter().map(|s| (s.name.clone(), s)).collect();
            }
            Err(e) => return Box::pin(actix::fut::ready(Err(e.into()))),
        }
        match self.store.cordon() {
            Ok(c) => self.cordon = c,
            Err(e) => return Box::pin(actix::fut::ready(Err(e.into()))),
        }
        let mut candidates: Vec<(String, Addr<FirecrackerActor>, VmmProcess)> = Vec::new();
        for r in &records {
            self.vms
                .insert(r.spec.name.clone(), VmEntry::new(r.clone()));
        }
        // Before any actor is made: a VM's recorded uid names its jail.
        self.restore_uids();
        for r in &records {
            let Some(process) = r.process.as_ref().and_then(VmmProcessRecord::spawned) else {
                continue;
            };
            match self.vmm_for(&r.spec.name, ctx) {
                Ok(addr) => candidates.push((r.spec.name.clone(), addr, process)),
                Err(e) => warn!(self.log, "cannot adopt"; "vm" => &r.spec.name, "error" => %e),
            }
        }
        let log = self.log.clone();
        // Each VM's actor verifies and pings its own process: all at once, so a restart
        // with many VMs waits for the slowest answer, not for the sum of them.
        let adopt =
            futures::future::join_all(candidates.into_iter().map(move |(name, addr, record)| {
                let log = log.clone();
                async move {
                    let adoption = match addr.send(AdoptProcess { record }).await {
                        Ok(Ok(info)) => Adoption::Adopted {
                            vmm_state: info.vmm_state,
                        },
                        Ok(Err(e)) => {
                            info!(log, "not adopted"; "vm" => &name, "why" => %e);
                            Adoption::Gone
                        }
                        Err(e) => {
                            warn!(log, "not adopted"; "vm" => &name, "why" => %e);
                            Adoption::Gone
                        }
                    };
                    (name, adoption)
                }
            }))
            .map(|found| found.into_iter().collect::<BTreeMap<_, _>>());
        Box::pin(adopt.into_actor(self).then(move |adoptions, act, ctx| {
            let plan = plan_repairs(&records, &adoptions);
            // Jails (issue 16): only those of VMs whose VMM lives on are kept.
            let jail_sweep = act.jail_sweep_plan(&plan.alive);
            let ports = act.ports(ctx);
            let vmms: BTreeMap<String, Addr<FirecrackerActor>> = act
                .vms
                .iter()
                .filter_map(|(n, e)| e.vmm.clone().map(|a| (n.clone(), a)))
                .collect();
            let known: BTreeSet<String> = act.vms.keys().cloned().collect();
            let run_base = act.vmm.settings.run_base.clone();
            let processes = act.vmm.processes.clone();
            execute(ports, plan, vmms, known, run_base, processes, jail_sweep)
                .boxed_local()
                .into_actor(act)
                .then(|res, act, ctx| {
                    // At once: handlers running while the snapshots are repaired must not
                    // lease a uid whose processes survived the sweep.
                    if let Ok((report, _)) = &res {
                        act.quarantine_uids(&report.quarantined_uids);
                    }
                    let snapshots = act.repair_snapshots(ctx);
                    async move {
                        let (mut report, stops) = res?;
                        let fixed = snapshots.await;
                        report.repaired.extend(fixed.repaired);
                        report.swept.extend(fixed.swept);
                        Ok((report, stops))
                    }
                    .into_actor(act)
                })
                .map(|res: Result<_, SupervisorError>, act, ctx| {
                    let (mut report, stops) = res?;
                    for name in stops {
                        act.finish_interrupted_stop(name, ctx);
                    }
                    // Before the autostarts, which a drain being resumed prevents.
                    let drain = act.unfinished_drain();
                    report.autostarts = act.start_policies(ctx);
                    if let Some(mode) = drain {
                        act.resume_drain(mode, ctx);
                    }
                    // After the sweep, which would kill them: the warm pool fills.
                    act.warm_open(ctx);
                    Ok(report)
                })
        }))
    }
}

impl Handler<Close> for VmSupervisor {
    type Result = ResponseActFuture<Self, Result<(), SupervisorError>>;

    fn handle(&mut self, msg: Close, ctx: &mut Context<Self>) -> Self::Result {
        self.closing = true;
        let locks: Vec<_> = self.vms.values().map(|e| e.lock.clone()).collect();
        let to_stop: Vec<_> = if msg.stop_vms {
            self.vms
                .values()
                .filter(|e| e.record.state.can_stop())
                .map(|e| {
                    (
                        e.record.spec.name.clone(),
                        e.vmm.clone(),
                        e.record.lease.clone(),
                        e.record.process.as_ref().and_then(|p| p.pid),
                        e.record.state,
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        let ports = self.ports(ctx);
        // The idle warm VMMs go with hearthd (killed, their jails removed).
        let warm = self.warm_close();
        Box::pin(
            async move {
                warm.await;
                // In-flight operations finish first.
                for lock in locks {
                    drop(lock.lock_owned().await);
                }
                for (name, vmm, lease, pid, state) in to_stop {
                    super::saga::stop(ports.clone(), name, vmm, pid, lease, false, state).await?;
                }
                Ok(())
            }
            .into_actor(self),
        )
    }
}
