//! The warm pool of jailed VMMs in the supervisor (`[jailer] warm_pool = N`): up to N idle
//! members ([`WarmMember`]), each holding a uid leased under a name no VM can have, started
//! in the background once `Open` is done and refilled after every take, off the create path.
//!
//! - Take: a create of a VM that holds no uid takes the oldest live member in `boot_plan`;
//!   the member's uid is recorded as the VM's (`Change::Uid`, store first) and the member
//!   goes into the VM's `VmJail`, whose spawn takes it (or falls back to the jailer). The uid
//!   stays leased under the member's name until the create ends: then it moves to the VM if
//!   the VM still records it, else (the create failed and its undo forgot the uid) the
//!   member, if no spawn took it, is killed with its jail and only then is the uid freed.
//! - Crash: members are never recorded, so `Open`'s jail sweep kills them and removes their
//!   jails; their uids were never in the store.
//! - `Close`: the idle members are killed and their jails removed; one still starting when
//!   hearthd exits is left to the next `Open`'s sweep.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use actix::{ActorFutureExt, AsyncContext, Context, Handler, Message, WrapFuture};
use slog::{info, warn};

use super::{Change, VmSupervisor};
use crate::firecracker::jailed::DiscardWarmMember;
use crate::firecracker::jailer::{JailLayout, JailLimits};
use crate::firecracker::warm_pool::{
    finish_member, remove_fifo_dir, start_member, MemberSpec, WarmMember, FIFO_DIR,
};

/// How long the pool waits before trying again after a member failed to start, or found no
/// free uid (a uid a VM gives back wakes it at once: [`VmSupervisor::warm_uid_freed`]). An
/// hour in unit tests, so that a refill they see was not the timer's.
const RETRY_AFTER: Duration = if cfg!(test) {
    Duration::from_secs(3600)
} else {
    Duration::from_secs(5)
};

/// The pool's state (empty and idle when jailing is off or `warm_pool` is 0).
#[derive(Default)]
pub(super) struct WarmPool {
    /// Members ready to be taken, oldest first, with the name their uid is leased under.
    ready: VecDeque<(String, WarmMember)>,
    /// Members being started.
    starting: usize,
    /// For the lease names.
    next: u64,
    /// Creates in flight that took a member: VM name → (lease name, uid).
    taken: BTreeMap<String, (String, u32)>,
    /// Members taken by creates whose actor is not made yet, by VM name
    /// (`VmSupervisor::jail_actor` hands each to its actor).
    handing: BTreeMap<String, WarmMember>,
    /// Set by `Open` once done: members start only then (its sweep would kill them).
    opened: bool,
    /// A retry is scheduled.
    retrying: bool,
    /// The last start found no free uid (said once, until one is free again).
    starved: bool,
    /// The supervisor, for a refill when a VM gives a uid back (set by `Open`; weak, so the
    /// pool does not keep its own actor alive).
    me: Option<actix::WeakAddr<VmSupervisor>>,
}

impl WarmPool {
    /// The member handed to `vm`'s actor being made, if any.
    pub(super) fn take_handing(&mut self, vm: &str) -> Option<WarmMember> {
        self.handing.remove(vm)
    }
}

/// How full the warm pool is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, actix::MessageResponse)]
pub struct WarmPoolStatus {
    /// `[jailer] warm_pool` (0 when jailing is off).
    pub target: usize,
    /// Members ready to be taken.
    pub ready: usize,
    /// Members being started.
    pub starting: usize,
}

/// Asks how full the warm pool is (tests and benchmarks wait for it to fill).
#[derive(Debug, Message)]
#[rtype(result = "WarmPoolStatus")]
pub struct GetWarmPool {}

impl Handler<GetWarmPool> for VmSupervisor {
    type Result = WarmPoolStatus;

    fn handle(&mut self, _msg: GetWarmPool, _ctx: &mut Context<Self>) -> WarmPoolStatus {
        WarmPoolStatus {
            target: self.warm_target(),
            ready: self.warm.ready.len(),
            starting: self.warm.starting,
        }
    }
}

/// Refills the pool now (sent by the supervisor to itself when a VM gives a uid back while
/// the pool waits for one).
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct RefillWarmPool {}

impl Handler<RefillWarmPool> for VmSupervisor {
    type Result = ();

    fn handle(&mut self, _msg: RefillWarmPool, ctx: &mut Context<Self>) {
        self.warm_refill(ctx);
    }
}

impl VmSupervisor {
    /// A VM gave its uid back: a pool waiting for one refills now, not at its next retry.
    pub(super) fn warm_uid_freed(&self) {
        if !self.warm.starved {
            return;
        }
        if let Some(me) = self.warm.me.as_ref().and_then(actix::WeakAddr::upgrade) {
            me.do_send(RefillWarmPool {});
        }
    }

    fn warm_target(&self) -> usize {
        self.vmm.jail.as_ref().map_or(0, |j| j.warm_pool)
    }

    fn member_spec(&self) -> Option<MemberSpec> {
        let js = self.vmm.jail.as_ref()?;
        let binary = self.vmm.binary.as_ref()?;
        Some(MemberSpec {
            jailer: js.jailer.clone(),
            exec_file: binary.path.clone(),
            fifo_dir: self.vmm.settings.run_base.join(FIFO_DIR),
            jails: js.jails.clone(),
            processes: self.vmm.processes.clone(),
            cgroup_version: js.cgroup_version,
            limits: JailLimits::for_warm(&js.limits),
            log_level: self.vmm.settings.log_level,
            timeout: self.vmm.settings.api_timeout,
        })
    }

    /// Called at the end of `Open`: the pool may start.
    pub(super) fn warm_open(&mut self, ctx: &mut Context<Self>) {
        self.warm.opened = true;
        self.warm.me = Some(ctx.address().downgrade());
        self.warm_refill(ctx);
    }

    /// Starts members until ready and starting ones make the target. The synchronous part of
    /// each (jail, FIFO, the jailer started) runs here; the wait for the jailer and its VMM
    /// runs in the background.
    pub(super) fn warm_refill(&mut self, ctx: &mut Context<Self>) {
        if !self.warm.opened || self.closing {
            return;
        }
        while self.warm.ready.len() + self.warm.starting < self.warm_target() {
            if !self.warm_start_one(ctx) {
                self.warm_retry_later(ctx);
                return;
            }
        }
    }

    fn warm_retry_later(&mut self, ctx: &mut Context<Self>) {
        if std::mem::replace(&mut self.warm.retrying, true) {
            return;
        }
        ctx.run_later(RETRY_AFTER, |act, ctx| {
            act.warm.retrying = false;
            act.warm_refill(ctx);
        });
    }

    /// Starts one member; `false` when it could not be (logged).
    fn warm_start_one(&mut self, ctx: &mut Context<Self>) -> bool {
        let (Some(spec), Some(base)) = (
            self.member_spec(),
            self.vmm.jail.as_ref().map(|j| j.chroot_base.clone()),
        ) else {
            return false;
        };
        self.warm.next += 1;
        let lease = format!("warm pool member {}", self.warm.next);
        let uid = match self.uids.acquire(&lease) {
            Ok(uid) => uid,
            // VMs hold every uid the pool does not: it waits (one line, not one a retry).
            Err(e) => {
                if !std::mem::replace(&mut self.warm.starved, true) {
                    info!(self.log, "warm pool paused: no free uid"; "error" => %e);
                }
                return false;
            }
        };
        if std::mem::take(&mut self.warm.starved) {
            info!(self.log, "warm pool refilling: a uid is free again");
        }
        let started = JailLayout::new(&base, &spec.exec_file, &JailLayout::id_for_uid(uid))
            .and_then(|layout| Ok((start_member(&spec, &layout, uid)?, layout)));
        let (jailer, layout) = match started {
            Ok(s) => s,
            Err(e) => {
                self.uids.release(&lease);
                warn!(self.log, "warm VMM not started"; "uid" => uid, "error" => %e);
                return false;
            }
        };
        self.warm.starting += 1;
        ctx.spawn(
            finish_member(spec, layout, uid, jailer, self.log.clone())
                .into_actor(self)
                .map(move |res, act, ctx| {
                    act.warm.starting -= 1;
                    match res {
                        Ok(member) if act.closing => act.warm_discard(lease, member, ctx),
                        Ok(member) => {
                            info!(act.log, "warm VMM ready"; "uid" => uid, "pid" => member.pid());
                            act.warm.ready.push_back((lease, member));
                        }
                        Err(e) => {
                            act.uids.release(&lease);
                            warn!(act.log, "warm VMM not started"; "uid" => uid, "error" => %e);
                            act.warm_retry_later(ctx);
                        }
                    }
                }),
        );
        true
    }

    /// For the create of `name` (which holds no uid): the uid of a live member, recorded as
    /// `name`'s, the member kept for its actor. `None` when the pool has none (or recording
    /// failed): the create leases a uid and runs the jailer as without a pool.
    pub(super) fn warm_take(&mut self, name: &str, ctx: &mut Context<Self>) -> Option<u32> {
        if self.vmm.jail.is_none() || self.entry(name).ok()?.record.uid.is_some() {
            return None;
        }
        let taken = loop {
            let (lease, member) = self.warm.ready.pop_front()?;
            if !member.has_exited() {
                break (lease, member);
            }
            warn!(self.log, "warm VMM found dead"; "uid" => member.uid());
            self.warm_discard(lease, member, ctx);
        };
        let (lease, member) = taken;
        let uid = member.uid();
        if let Err(e) = self.apply(name, Change::Uid(Some(uid))) {
            warn!(self.log, "warm VMM not taken"; "vm" => name, "error" => %e);
            self.warm.ready.push_front((lease, member));
            return None;
        }
        info!(self.log, "uid leased from the warm pool"; "vm" => name, "uid" => uid);
        self.warm.handing.insert(name.to_string(), member);
        self.warm.taken.insert(name.to_string(), (lease, uid));
        // After this handler: a member's start (jail, FIFO, `posix_spawn` of the jailer)
        // stays out of this create's own steps.
        ctx.run_later(Duration::ZERO, Self::warm_refill);
        Some(uid)
    }

    /// For a VM that needs a uid when none is free: the newest idle member is given up (its
    /// VMM killed, its jail removed) and its uid freed for the VM. `false` when the pool has
    /// no idle member. Its uid is freed even if the jail could not be removed yet (its VMM
    /// still exiting): the VM's own jail is prepared under that uid, which removes a jail of
    /// that id first and fails the VM's boot cleanly if it cannot.
    pub(super) fn warm_yield_uid(&mut self) -> bool {
        let Some((lease, member)) = self.warm.ready.pop_back() else {
            return false;
        };
        let uid = member.uid();
        if let Err(e) = member.discard_now() {
            warn!(self.log, "warm VMM's jail not removed yet"; "uid" => uid, "error" => %e);
        }
        self.uids.release(&lease);
        info!(self.log, "warm VMM given up: no other uid free"; "uid" => uid);
        true
    }

    /// Kills `member`, removes its jail, then frees its uid ([`Self::warm_free`]).
    fn warm_discard(&mut self, lease: String, member: WarmMember, ctx: &mut Context<Self>) {
        let uid = member.uid();
        ctx.spawn(member.discard().into_actor(self).map(move |res, act, _| {
            act.warm_free(&lease, uid, res.is_ok());
        }));
    }

    /// After a member's discard: its uid is freed if its jail is gone. Otherwise it is
    /// quarantined ([`UidPool::quarantine`](crate::host::jails::uids::UidPool::quarantine)):
    /// a VM given it would find the old jail (and perhaps the old VMM) in the way. The next
    /// `Open`'s sweep removes that jail, and the quarantine ends with the process.
    fn warm_free(&mut self, lease: &str, uid: u32, removed: bool) {
        self.uids.release(lease);
        if !removed {
            self.uids.quarantine(uid);
            warn!(self.log, "warm VMM's jail not removed: its uid is kept out of use until the next Open";
                "uid" => uid);
        }
    }

    /// When the create of `name` has ended: the uid of the member it took moves to `name` if
    /// `name` records it; otherwise the member, if no spawn took it, is killed with its jail
    /// and the uid is freed after that.
    pub(super) fn warm_create_ended(&mut self, name: &str, ctx: &mut Context<Self>) {
        let Some((lease, uid)) = self.warm.taken.remove(name) else {
            return;
        };
        let unhanded = self.warm.take_handing(name);
        let recorded = self.vms.get(name).and_then(|e| e.record.uid) == Some(uid);
        if recorded {
            self.uids.release(&lease);
            if let Err(e) = self.uids.restore(uid, name) {
                warn!(self.log, "uid lease not moved to the VM"; "vm" => name, "error" => %e);
            }
            if let Some(m) = unhanded {
                // Recorded but never handed to an actor: the next boot spawns through the
                // jailer in the same jail, so this VMM must go now, and at once: a removal
                // finishing later could take the jail that boot made. One that fails (the
                // VMM still exiting) is done again by that boot's prepare of the jail.
                if let Err(e) = m.discard_now() {
                    warn!(self.log, "warm VMM's jail not removed yet"; "vm" => name, "error" => %e);
                }
            }
            return;
        }
        let vmm = self.vms.get(name).and_then(|e| e.vmm.clone());
        let unused = async move {
            let mut removed = true;
            if let Some(m) = unhanded {
                removed &= m.discard().await.is_ok();
            }
            if let Some(vmm) = vmm {
                // An actor gone has nothing left to discard.
                removed &= vmm.send(DiscardWarmMember {}).await.unwrap_or(true);
            }
            removed
        };
        ctx.spawn(unused.into_actor(self).map(move |removed, act, _| {
            act.warm_free(&lease, uid, removed);
        }));
    }

    /// At `Close`: the idle members, their uids freed. The answer discards them all at once
    /// (each may wait up to 2 s for its VMM to exit), then removes the FIFO directory if that
    /// left it empty.
    pub(super) fn warm_close(&mut self) -> impl std::future::Future<Output = ()> {
        let members: Vec<(String, WarmMember)> = self.warm.ready.drain(..).collect();
        let members: Vec<WarmMember> = members
            .into_iter()
            .map(|(lease, m)| {
                self.uids.release(&lease);
                m
            })
            .collect();
        let fifo_dir = self.vmm.settings.run_base.join(FIFO_DIR);
        async move {
            futures::future::join_all(members.into_iter().map(WarmMember::discard)).await;
            remove_fifo_dir(&fifo_dir);
        }
    }
}
