//! One `Handler` per message of `TapPoolActor`, and the host work of `Initialize`.

use std::rc::Rc;

use actix::fut::{self, ActorFutureExt, WrapFuture};
use actix::{AsyncContext, AtomicResponse, Context, Handler, MessageResult, ResponseActFuture};
use futures::channel::oneshot;
use slog::{info, warn, Logger};

use super::plan::{plan_initialize, validate_used, TapNames};
use super::{
    pin, provision, AcquireTap, GetStatus, Initialize, Phase, PoolStatus, ReleaseTap, TapPoolActor,
    TapPoolConfig, TapPoolError, Teardown, TeardownReport,
};
use crate::host::links::{BridgeSpec, Links, BRIDGE_MAX_PORTS};
use crate::lease::NetLease;

/// Why an on-demand TAP could not be leased.
enum OnDemand {
    /// Making the TAP failed (nothing left of it, or `keeps_name` says what is).
    Provision(TapPoolError),
    /// The TAP was made and attached, but its lease's neighbour entry could not be pinned.
    Pin(PinFailed),
}

/// A pin failure after a successful provision.
struct PinFailed(TapPoolError);

impl From<TapPoolError> for OnDemand {
    fn from(err: TapPoolError) -> Self {
        OnDemand::Provision(err)
    }
}

impl From<PinFailed> for OnDemand {
    fn from(err: PinFailed) -> Self {
        OnDemand::Pin(err)
    }
}

/// What the host work of `Initialize` hands back to be committed.
struct InitOutcome {
    bridge_index: u32,
    free: Vec<String>,
    names: TapNames,
}

impl Handler<Initialize> for TapPoolActor {
    // Atomic: nothing else may run against a half-built pool.
    type Result = AtomicResponse<Self, Result<PoolStatus, TapPoolError>>;

    fn handle(&mut self, msg: Initialize, _ctx: &mut Context<Self>) -> Self::Result {
        let refused = match self.phase {
            Phase::New => validate_used(&self.config, &msg.used).err(),
            Phase::Ready => Some(TapPoolError::AlreadyInitialized),
            Phase::TornDown => Some(TapPoolError::TornDown),
        };
        if let Some(err) = refused {
            return AtomicResponse::new(Box::pin(fut::ready(Err(err))));
        }
        let work = initialize_host(
            self.links.clone(),
            self.config.clone(),
            msg.used.clone(),
            self.log.clone(),
        );
        AtomicResponse::new(Box::pin(work.into_actor(self).map(move |res, act, ctx| {
            let outcome = res?;
            act.bridge_index = outcome.bridge_index;
            act.names = outcome.names;
            act.free = outcome.free.into();
            for lease in msg.used {
                // Validated above: cannot fail.
                let _ = act.ips.mark_used(lease.guest_ip);
                act.leased.insert(lease.tap.clone(), lease);
            }
            act.phase = Phase::Ready;
            let status = act.status();
            info!(act.log, "TAP pool initialised"; "free_taps" => status.free_taps,
                      "leased" => status.leased, "free_ips" => status.free_ips);
            act.refill(ctx);
            Ok(status)
        })))
    }
}

impl Handler<AcquireTap> for TapPoolActor {
    type Result = ResponseActFuture<Self, Result<NetLease, TapPoolError>>;

    fn handle(&mut self, _msg: AcquireTap, ctx: &mut Context<Self>) -> Self::Result {
        self.acquire(ctx)
    }
}

impl TapPoolActor {
    /// `AcquireTap`; called again when it had to wait for ports a deletion frees.
    fn acquire(
        &mut self,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<NetLease, TapPoolError>> {
        match self.phase {
            Phase::New => return Box::pin(fut::ready(Err(TapPoolError::NotInitialized))),
            Phase::TornDown => return Box::pin(fut::ready(Err(TapPoolError::TornDown))),
            Phase::Ready => {}
        }
        let Some(ip) = self.ips.allocate() else {
            return Box::pin(fut::ready(Err(TapPoolError::IpsExhausted {
                cidr: self.config.cidr,
                leased: self.ips.leased_count(),
            })));
        };
        // A TAP queued for deletion (not yet handed to the kernel) is as good as a free one,
        // and costs neither a creation nor a port.
        if self.free.is_empty() {
            self.reprieve_doomed();
        }
        if let Some(tap) = self.free.pop_front() {
            // Warm pool: one netlink message (the neighbour pin); TAP and IP stay reserved
            // (neither free nor leased) until it is done.
            let lease = self.lease_for(tap, ip);
            self.refill(ctx);
            let work = {
                let (links, index, lease) = (self.links.clone(), self.bridge_index, lease.clone());
                async move { pin(links, index, &lease).await }
            };
            return Box::pin(work.into_actor(self).map(move |res, act, ctx| match res {
                Ok(()) => {
                    act.leased.insert(lease.tap.clone(), lease.clone());
                    Ok(lease)
                }
                Err(err) => {
                    act.ips.release(ip);
                    act.return_free(lease.tap, ctx);
                    Err(err)
                }
            }));
        }
        // Empty pool: make a TAP on demand; IP and name are reserved now, committed or given
        // back when the TAP is ready or has failed.
        if self.bridge_full() {
            self.ips.release(ip);
            if self.deleting {
                // Ports are on their way back (a mass release is being deleted): wait for
                // that batch, then try again.
                let (tx, rx) = oneshot::channel();
                self.deleted_waiters.push(tx);
                return Box::pin(rx.into_actor(self).then(|_, act, ctx| act.acquire(ctx)));
            }
            return Box::pin(fut::ready(Err(self.bridge_full_error())));
        }
        let Some(name) = self.names.reserve_next() else {
            self.ips.release(ip);
            return Box::pin(fut::ready(Err(TapPoolError::NamesExhausted {
                prefix: self.config.tap_prefix.clone(),
            })));
        };
        self.in_flight += 1;
        let lease = self.lease_for(name.clone(), ip);
        let work = {
            let links = self.links.clone();
            let (tap, port) = (
                self.config.tap_spec(&name),
                self.config.port_spec(self.bridge_index),
            );
            let (index, lease) = (self.bridge_index, lease.clone());
            async move {
                provision(links.clone(), tap, port).await?;
                // Made, but not pinned: the TAP exists and goes back to the pool.
                pin(links, index, &lease).await.map_err(PinFailed)?;
                Ok(())
            }
        };
        Box::pin(
            work.into_actor(self)
                .map(move |res: Result<(), OnDemand>, act, ctx| {
                    act.in_flight -= 1;
                    let out = match res {
                        Ok(()) if act.phase == Phase::Ready => {
                            act.leased.insert(lease.tap.clone(), lease.clone());
                            Ok(lease)
                        }
                        Ok(()) => {
                            act.ips.release(ip);
                            act.delete_in_background(name, ctx);
                            Err(TapPoolError::TornDown)
                        }
                        Err(OnDemand::Pin(PinFailed(err))) => {
                            act.ips.release(ip);
                            act.return_free(name, ctx);
                            Err(err)
                        }
                        Err(OnDemand::Provision(err)) => {
                            act.ips.release(ip);
                            act.forget_failed_name(&name, &err);
                            Err(err)
                        }
                    };
                    act.notify_if_idle();
                    act.refill(ctx);
                    out
                }),
        )
    }
}

impl Handler<ReleaseTap> for TapPoolActor {
    type Result = ResponseActFuture<Self, Result<(), TapPoolError>>;

    fn handle(&mut self, msg: ReleaseTap, ctx: &mut Context<Self>) -> Self::Result {
        let lease = msg.lease;
        if self.phase == Phase::New {
            return Box::pin(fut::ready(Err(TapPoolError::NotInitialized)));
        }
        if self.leased.get(&lease.tap) != Some(&lease) {
            return Box::pin(fut::ready(Err(TapPoolError::UnknownLease {
                tap: lease.tap,
                guest_ip: lease.guest_ip,
            })));
        }
        self.leased.remove(&lease.tap);
        // Replies at once. The address is free again only once its pinned entries are gone
        // (so an unpin can never remove the pin of the address's next lease); TAP likewise.
        // Counted as background work, so `Teardown` waits for it.
        self.in_flight += 1;
        let work =
            self.links
                .unpin_neighbour(self.bridge_index, &lease.tap, lease.guest_ip, lease.mac);
        ctx.spawn(work.into_actor(self).map(move |res, act, ctx| {
            act.in_flight -= 1;
            if let Err(err) = res {
                // Left pinned: it holds the MAC the address's next lease gets anyway, and the
                // next `Initialize` removes it if the address is not leased then.
                warn!(act.log, "cannot unpin neighbour entry"; "ip" => %lease.guest_ip, "error" => %err);
            }
            act.ips.release(lease.guest_ip);
            act.return_free(lease.tap, ctx);
            act.notify_if_idle();
        }));
        Box::pin(fut::ready(Ok(())))
    }
}

impl Handler<Teardown> for TapPoolActor {
    // Not atomic: background creations must be able to finish (and be deleted) meanwhile.
    type Result = ResponseActFuture<Self, Result<TeardownReport, TapPoolError>>;

    fn handle(&mut self, msg: Teardown, _ctx: &mut Context<Self>) -> Self::Result {
        if self.phase == Phase::New {
            return Box::pin(fut::ready(Err(TapPoolError::NotInitialized)));
        }
        self.phase = Phase::TornDown;
        let taps: Vec<String> = self.free.drain(..).collect();
        let links = self.links.clone();
        let delete_free = async move {
            let failed = links.delete_links(taps.clone()).await;
            let deleted = taps
                .into_iter()
                .filter(|tap| !failed.iter().any(|(f, _)| f == tap))
                .collect::<Vec<_>>();
            (deleted, failed)
        };
        let remove_bridge = msg.remove_bridge;
        Box::pin(
            delete_free
                .into_actor(self)
                .then(|(deleted, failed), act, _ctx| {
                    for tap in &deleted {
                        act.names.release(tap);
                    }
                    for (tap, err) in &failed {
                        warn!(act.log, "teardown cannot delete TAP"; "tap" => tap, "error" => %err);
                    }
                    let idle = (act.in_flight > 0).then(|| {
                        let (tx, rx) = oneshot::channel();
                        act.idle_waiters.push(tx);
                        rx
                    });
                    async move {
                        if let Some(idle) = idle {
                            let _ = idle.await;
                        }
                        (deleted, failed)
                    }
                    .into_actor(act)
                })
                .then(move |(deleted, failed), act, _ctx| {
                    let remove = remove_bridge && act.leased.is_empty() && failed.is_empty();
                    let links = act.links.clone();
                    let bridge = act.config.bridge.clone();
                    async move {
                        let removed = if remove {
                            links.delete_link(&bridge).await.map(|()| true)
                        } else {
                            Ok(false)
                        };
                        (deleted, failed, removed)
                    }
                    .into_actor(act)
                })
                .map(|(deleted, failed, removed), act, _ctx| {
                    if !failed.is_empty() {
                        return Err(TapPoolError::TeardownIncomplete {
                            failed: failed.into_iter().map(|(tap, _)| tap).collect(),
                        });
                    }
                    let bridge_removed =
                        removed.map_err(TapPoolError::host("delete bridge", &act.config.bridge))?;
                    info!(act.log, "TAP pool torn down"; "deleted" => deleted.len(),
                          "leased_kept" => act.leased.len(), "bridge_removed" => bridge_removed);
                    Ok(TeardownReport {
                        deleted_taps: deleted,
                        leased_kept: act.leased.len(),
                        bridge_removed,
                    })
                }),
        )
    }
}

impl Handler<GetStatus> for TapPoolActor {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _msg: GetStatus, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.status())
    }
}

/// The host side of `Initialize`: bridge, leased TAPs, strays, and the initial fill. Touches
/// no actor state; the caller commits the outcome.
async fn initialize_host(
    links: Rc<dyn Links>,
    config: TapPoolConfig,
    used: Vec<NetLease>,
    log: Logger,
) -> Result<InitOutcome, TapPoolError> {
    let bridge = BridgeSpec {
        name: config.bridge.clone(),
        gateway: super::ips::IpPool::new(config.cidr).gateway(),
        prefix_len: config.cidr.prefix_len(),
        mtu: config.mtu,
        mac: crate::lease::MacAddr::for_gateway(super::ips::IpPool::new(config.cidr).gateway()),
    };
    let bridge_index = links
        .ensure_bridge(bridge)
        .await
        .map_err(TapPoolError::host("set up bridge", &config.bridge))?;
    let existing = links
        .list_links(&config.tap_prefix)
        .await
        .map_err(TapPoolError::host("list links", &config.tap_prefix))?;
    let plan = plan_initialize(&config, &used, &existing)?;
    let port = config.port_spec(bridge_index);

    let mut names = TapNames::new(&config.tap_prefix);
    for link in &existing {
        names.take(&link.name);
    }
    for lease in &used {
        names.take(&lease.tap);
    }

    for (tap, index) in &plan.reattach {
        links
            .attach_port(tap, *index, port)
            .await
            .map_err(TapPoolError::host("re-attach leased TAP", tap))?;
    }
    for tap in &plan.recreate {
        provision(links.clone(), config.tap_spec(tap), port).await?;
        info!(log, "re-created missing leased TAP"; "tap" => tap);
    }
    // Every leased TAP exists again: pin the leases on their ports.
    reconcile_pins(&links, (&config.bridge, bridge_index), &used, &log).await?;
    let mut free = Vec::new();
    for (tap, index) in plan.reclaim {
        match links.attach_port(&tap, index, port).await {
            Ok(()) => free.push(tap),
            Err(err) => {
                warn!(log, "cannot reclaim stray TAP; deleting it"; "tap" => &tap, "error" => %err);
                if links.delete_link(&tap).await.is_ok() {
                    names.release(&tap);
                }
            }
        }
    }
    if !free.is_empty() {
        info!(log, "reclaimed stray TAPs into the pool"; "taps" => ?free);
    }
    for tap in plan.delete {
        match links.delete_link(&tap).await {
            Ok(()) => names.release(&tap),
            Err(err) => warn!(log, "cannot delete stray TAP"; "tap" => &tap, "error" => %err),
        }
    }
    let target = usize::try_from(config.pool_size).unwrap_or(usize::MAX);
    // Never past the bridge's port limit (see `TapPoolActor::bridge_full`).
    while free.len() < target && names.len() < BRIDGE_MAX_PORTS {
        let Some(tap) = names.reserve_next() else {
            break;
        };
        match provision(links.clone(), config.tap_spec(&tap), port).await {
            Ok(()) => free.push(tap),
            Err(err) => {
                // Leave the rest to the background refill, which backs off.
                if !super::keeps_name(&err) {
                    names.release(&tap);
                }
                warn!(log, "initial pool fill stopped"; "tap" => &tap, "error" => %err);
                break;
            }
        }
    }
    Ok(InitOutcome {
        bridge_index,
        free,
        names,
    })
}

/// Makes the bridge's pinned neighbour entries exactly those of the leases in use: removes
/// the ones a crash left behind (released addresses, wrong MACs), pins the rest.
async fn reconcile_pins(
    links: &Rc<dyn Links>,
    (bridge, bridge_index): (&str, u32),
    used: &[NetLease],
    log: &Logger,
) -> Result<(), TapPoolError> {
    let pinned = links
        .pinned_neighbours(bridge_index)
        .await
        .map_err(TapPoolError::host(
            "list the pinned neighbour entries of",
            bridge,
        ))?;
    for (ip, mac) in pinned {
        if !used.iter().any(|l| l.guest_ip == ip && l.mac == mac) {
            // Its forwarding entry, if any, is on a TAP this run may not know: the pin of the
            // address's next lease moves it (same MAC), and it goes with its TAP.
            links
                .unpin_neighbour(bridge_index, "", ip, mac)
                .await
                .map_err(TapPoolError::host(
                    "unpin stale neighbour entry",
                    &ip.to_string(),
                ))?;
            info!(log, "removed stale pinned neighbour entry"; "ip" => %ip, "mac" => %mac);
        }
    }
    for lease in used {
        pin(links.clone(), bridge_index, lease).await?;
    }
    Ok(())
}
