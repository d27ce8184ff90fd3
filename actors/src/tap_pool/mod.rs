//! `TapPoolActor` owns hearth's bridge, a pool of pre-created persistent TAPs attached to it,
//! and the guest IP/MAC leases.
//!
//! Message flow: [`Initialize`] (once, with the leases live VMs hold) sets up the bridge,
//! adopts or cleans up the TAPs found on the host and fills the pool; [`AcquireTap`] hands out
//! a free TAP with the next guest IP (in memory from a warm pool; an empty pool makes a TAP on
//! demand), [`ReleaseTap`] takes it back; [`GetStatus`] reads counters; [`Teardown`] removes
//! what the pool made. After each acquire the pool is refilled in the background, one TAP at
//! a time, with the name reserved synchronously and committed when the TAP is ready, so
//! neither `AcquireTap` nor anything else waits on it.
//!
//! The host's neighbour entry of every leased address is pinned on the bridge (permanent,
//! so a guest's ARP cannot redirect the host's traffic for another guest's address): pinned
//! before `AcquireTap` answers, removed before a released address can be leased again, and
//! made to match the leases in use by `Initialize`.
//!
//! A Linux bridge takes at most [`BRIDGE_MAX_PORTS`] ports, shared by leased TAPs, free ones
//! and those being made or deleted: the pool stays below its size rather than exceed it, an
//! acquire with the pool empty takes back a TAP queued for deletion or waits for a running
//! deletion to free ports, and is otherwise refused with [`TapPoolError::BridgeFull`].
//!
//! All host effects go through [`Links`]; the pure decisions (IPs, names, start-up plan) live
//! in `ips` and `plan` and are tested on their own.

mod handlers;
pub mod ips;
mod messages;
pub mod plan;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::time::Duration;

use actix::fut::ActorFutureExt;
use actix::{Actor, AsyncContext, Context};
use futures::channel::oneshot;
use ipnet::Ipv4Net;
use slog::{debug, warn, Logger};

use self::ips::IpPool;
pub use self::messages::{
    AcquireTap, GetStatus, Initialize, PoolStatus, ReleaseTap, Teardown, TeardownReport,
};
use self::plan::{tap_number, TapNames};
use crate::host::links::{check_ifname, Links, LinksError, PortSpec, TapSpec, BRIDGE_MAX_PORTS};
use crate::lease::NetLease;

/// What the pool is configured with (the daemon fills it from `NetworkConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapPoolConfig {
    /// Bridge name (at most 15 bytes).
    pub bridge: String,
    /// The bridge subnet; the gateway is its first host address, guests get the rest.
    pub cidr: Ipv4Net,
    /// Prefix of the TAP names (`<prefix><n>`), 1 to 8 bytes.
    pub tap_prefix: String,
    /// How many unleased TAPs to keep ready.
    pub pool_size: u32,
    /// MTU of the bridge and TAPs.
    pub mtu: u32,
    /// Owner uid of the TAPs, so a non-root Firecracker can open them.
    pub tap_owner: Option<u32>,
    /// Owner gid of the TAPs.
    pub tap_group: Option<u32>,
    /// Make every TAP an isolated bridge port, so guests cannot reach each other at L2.
    pub isolate: bool,
}

impl Default for TapPoolConfig {
    fn default() -> Self {
        Self {
            bridge: "hearth0".into(),
            cidr: Ipv4Net::new(Ipv4Addr::new(172, 31, 240, 0), 24).expect("valid prefix"),
            tap_prefix: "hth".into(),
            pool_size: 16,
            mtu: 1500,
            tap_owner: None,
            tap_group: None,
            isolate: true,
        }
    }
}

impl TapPoolConfig {
    /// Checks the fields this actor relies on.
    pub fn validate(&self) -> Result<(), TapPoolError> {
        let invalid =
            |field: &'static str, reason: String| TapPoolError::InvalidConfig { field, reason };
        check_ifname(&self.bridge).map_err(|_| {
            invalid(
                "bridge",
                format!("{:?} is not a valid interface name", self.bridge),
            )
        })?;
        if self.tap_prefix.is_empty()
            || self.tap_prefix.len() > 8
            || check_ifname(&self.tap_prefix).is_err()
        {
            return Err(invalid(
                "tap_prefix",
                format!("{:?} must be 1 to 8 interface-name bytes", self.tap_prefix),
            ));
        }
        if tap_number(&self.tap_prefix, &self.bridge).is_some() {
            return Err(invalid(
                "bridge",
                format!(
                    "{:?} looks like a TAP name of prefix {:?}",
                    self.bridge, self.tap_prefix
                ),
            ));
        }
        if self.cidr.prefix_len() > 29 || self.cidr.network() != self.cidr.addr() {
            return Err(invalid(
                "cidr",
                format!(
                    "{} must be a network address with prefix /29 or wider",
                    self.cidr
                ),
            ));
        }
        if !(68..=65535).contains(&self.mtu) {
            return Err(invalid(
                "mtu",
                format!("{} is outside 68..=65535", self.mtu),
            ));
        }
        let guests = IpPool::new(self.cidr).free_count();
        if self.pool_size > guests {
            return Err(invalid(
                "pool_size",
                format!(
                    "{} exceeds the {guests} guest addresses of {}",
                    self.pool_size, self.cidr
                ),
            ));
        }
        Ok(())
    }

    fn tap_spec(&self, name: &str) -> TapSpec {
        TapSpec {
            name: name.into(),
            owner: self.tap_owner,
            group: self.tap_group,
        }
    }

    fn port_spec(&self, bridge_index: u32) -> PortSpec {
        PortSpec {
            bridge_index,
            mtu: self.mtu,
            isolated: self.isolate,
        }
    }
}

/// Errors of the TAP pool.
#[derive(Debug, thiserror::Error)]
pub enum TapPoolError {
    /// The configuration cannot be used.
    #[error("Invalid TAP pool config `{field}`: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A message other than `Initialize`/`GetStatus` came before `Initialize`.
    #[error("TAP pool is not initialised")]
    NotInitialized,
    /// `Initialize` came twice.
    #[error("TAP pool is already initialised")]
    AlreadyInitialized,
    /// `AcquireTap` after `Teardown`.
    #[error("TAP pool has been torn down")]
    TornDown,
    /// Every guest address of the subnet is leased.
    #[error("No free guest IP left in {cidr} ({leased} leased)")]
    IpsExhausted {
        /// The bridge subnet.
        cidr: Ipv4Net,
        /// How many addresses are leased.
        leased: usize,
    },
    /// The bridge holds as many ports as a Linux bridge takes: every one is a leased TAP, a
    /// free one, or one being made or deleted.
    #[error("Bridge {bridge} is full: a Linux bridge takes at most {max} ports ({leased} leased)")]
    BridgeFull {
        /// The bridge.
        bridge: String,
        /// The kernel's limit, [`BRIDGE_MAX_PORTS`].
        max: usize,
        /// How many TAPs are leased.
        leased: usize,
    },
    /// No TAP name fits in 15 bytes any more.
    #[error("No free TAP name with prefix {prefix:?}")]
    NamesExhausted {
        /// The TAP prefix.
        prefix: String,
    },
    /// `ReleaseTap` with a lease this pool does not hold (nothing was changed).
    #[error("Unknown lease of TAP {tap} with IP {guest_ip}")]
    UnknownLease {
        /// The TAP named by the lease.
        tap: String,
        /// The IP named by the lease.
        guest_ip: Ipv4Addr,
    },
    /// A lease handed to `Initialize` cannot be adopted.
    #[error("Cannot adopt lease of TAP {tap}: {reason}")]
    InvalidUsedLease {
        /// The TAP named by the lease.
        tap: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A host operation failed.
    #[error("Cannot {op} {name}")]
    Host {
        /// What was being done, e.g. `"create TAP"`.
        op: &'static str,
        /// The interface concerned.
        name: String,
        /// The backend's error.
        source: LinksError,
    },
    /// A new TAP could not be attached and deleting it failed too: it is left on the host
    /// (a later `Initialize` adopts or deletes it).
    #[error("Cannot attach TAP {tap} to the bridge, nor delete it")]
    AttachUndoFailed {
        /// The TAP left behind.
        tap: String,
        /// The attach error.
        source: LinksError,
    },
    /// `Teardown` could not delete some TAPs (they were left in place).
    #[error("Teardown could not delete {failed:?}")]
    TeardownIncomplete {
        /// The TAPs still present.
        failed: Vec<String>,
    },
}

impl TapPoolError {
    fn host(op: &'static str, name: &str) -> impl FnOnce(LinksError) -> Self {
        let name = name.to_owned();
        move |source| TapPoolError::Host { op, name, source }
    }
}

/// Where the actor is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for `Initialize`.
    New,
    /// Handing out leases.
    Ready,
    /// After `Teardown`: no new leases; released TAPs are deleted.
    TornDown,
}

/// The actor: see the module documentation.
pub struct TapPoolActor {
    config: TapPoolConfig,
    links: Rc<dyn Links>,
    log: Logger,
    phase: Phase,
    bridge_index: u32,
    ips: IpPool,
    /// Unleased TAPs attached to the bridge and up, handed out oldest first.
    free: VecDeque<String>,
    /// Leases by TAP name.
    leased: BTreeMap<String, NetLease>,
    /// Every name in use (free, leased, being made or deleted, foreign).
    names: TapNames,
    /// A background refill is creating a TAP.
    refilling: bool,
    /// A refill retry is scheduled after a failure.
    retry_scheduled: bool,
    /// Consecutive background refill failures.
    refill_failures: u32,
    /// Background TAP creations and deletions not yet finished.
    in_flight: usize,
    /// TAPs waiting for the next batch deletion.
    doomed: Vec<String>,
    /// A batch deletion is running.
    deleting: bool,
    /// Acquires waiting for a batch deletion to free ports of a full bridge.
    deleted_waiters: Vec<oneshot::Sender<()>>,
    /// `Teardown`s waiting for `in_flight` to reach 0.
    idle_waiters: Vec<oneshot::Sender<()>>,
}

impl TapPoolActor {
    /// A pool over `links`; nothing touches the host until [`Initialize`].
    pub fn new(
        config: TapPoolConfig,
        links: Rc<dyn Links>,
        log: Logger,
    ) -> Result<Self, TapPoolError> {
        config.validate()?;
        Ok(Self {
            ips: IpPool::new(config.cidr),
            names: TapNames::new(&config.tap_prefix),
            log: log.new(slog::o!("actor" => "tap_pool", "bridge" => config.bridge.clone())),
            config,
            links,
            phase: Phase::New,
            bridge_index: 0,
            free: VecDeque::new(),
            leased: BTreeMap::new(),
            refilling: false,
            retry_scheduled: false,
            refill_failures: 0,
            in_flight: 0,
            doomed: Vec::new(),
            deleting: false,
            deleted_waiters: Vec::new(),
            idle_waiters: Vec::new(),
        })
    }

    fn status(&self) -> PoolStatus {
        PoolStatus {
            ready: self.phase == Phase::Ready,
            free_taps: self.free.len(),
            leased: self.leased.len(),
            free_ips: self.ips.free_count(),
            pending: self.in_flight,
            refill_failures: self.refill_failures,
        }
    }

    fn lease_for(&self, tap: String, guest_ip: Ipv4Addr) -> NetLease {
        NetLease {
            tap,
            mac: crate::lease::MacAddr::for_guest(guest_ip),
            guest_ip,
            gateway: self.ips.gateway(),
            prefix_len: self.config.cidr.prefix_len(),
        }
    }

    /// Pool size as usize.
    fn target(&self) -> usize {
        usize::try_from(self.config.pool_size).unwrap_or(usize::MAX)
    }

    /// True when one more TAP would not fit on the bridge: every name taken is a port (or
    /// about to be one, or on its way out). The pool then stays below its size rather than
    /// run into the kernel's limit; it refills as ports are freed.
    fn bridge_full(&self) -> bool {
        self.names.len() >= BRIDGE_MAX_PORTS
    }

    fn bridge_full_error(&self) -> TapPoolError {
        TapPoolError::BridgeFull {
            bridge: self.config.bridge.clone(),
            max: BRIDGE_MAX_PORTS,
            leased: self.leased.len(),
        }
    }

    /// Starts creating one TAP in the background if the pool is short and nothing is being
    /// made; the completion commits it and calls `refill` again until the pool is full.
    fn refill(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Ready
            || self.refilling
            || self.retry_scheduled
            || self.free.len() >= self.target()
            || self.bridge_full()
        {
            return;
        }
        let Some(name) = self.names.reserve_next() else {
            warn!(self.log, "no TAP name left for the pool");
            return;
        };
        self.refilling = true;
        self.in_flight += 1;
        let links = self.links.clone();
        let tap = self.config.tap_spec(&name);
        let port = self.config.port_spec(self.bridge_index);
        let work = async move {
            // Let the reply that triggered this refill reach its caller before the backend
            // is handed work.
            tokio::task::yield_now().await;
            provision(links, tap, port).await
        };
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(work).map(move |res, act, ctx| {
                act.refilling = false;
                act.in_flight -= 1;
                match res {
                    Ok(()) if act.phase == Phase::Ready && act.free.len() < act.target() => {
                        debug!(act.log, "pool TAP ready"; "tap" => &name);
                        act.refill_failures = 0;
                        act.free.push_back(name);
                        act.refill(ctx);
                    }
                    // Torn down, or releases filled the pool meanwhile.
                    Ok(()) => act.delete_in_background(name, ctx),
                    Err(err) => {
                        act.forget_failed_name(&name, &err);
                        act.refill_failures += 1;
                        let backoff = refill_backoff(act.refill_failures);
                        warn!(act.log, "pool refill failed"; "tap" => &name, "error" => %err,
                          "retry_in_ms" => backoff.as_millis());
                        act.retry_scheduled = true;
                        ctx.run_later(backoff, |act, ctx| {
                            act.retry_scheduled = false;
                            act.refill(ctx);
                        });
                    }
                }
                act.notify_if_idle();
            }),
        );
    }

    /// After a failed creation the name is free again, unless a link now holds it.
    fn forget_failed_name(&mut self, name: &str, err: &TapPoolError) {
        if !keeps_name(err) {
            self.names.release(name);
        }
    }

    /// Deletes a TAP nobody holds, in the background; its name stays taken until it is gone.
    /// Deletions are batched: while one batch is in the kernel, later ones queue up and go
    /// together in the next, so a mass release (1000 VMs deleted) costs a few batches (one
    /// RCU grace period each) instead of ~16 ms per TAP ahead of the creates that follow.
    /// Nothing waits on them: not the mailbox, not a warm acquire.
    fn delete_in_background(&mut self, name: String, ctx: &mut Context<Self>) {
        self.in_flight += 1;
        self.doomed.push(name);
        self.delete_doomed(ctx);
    }

    /// Takes the newest TAP queued for deletion back into the pool, if one is queued (those
    /// already handed to the kernel are past saving).
    fn reprieve_doomed(&mut self) {
        if let Some(tap) = self.doomed.pop() {
            self.in_flight -= 1;
            self.free.push_back(tap);
            self.notify_if_idle();
        }
    }

    /// Starts deleting the queued TAPs as one batch, unless a batch is running.
    fn delete_doomed(&mut self, ctx: &mut Context<Self>) {
        if self.deleting || self.doomed.is_empty() {
            return;
        }
        self.deleting = true;
        let batch = std::mem::take(&mut self.doomed);
        let work = self.links.delete_links(batch.clone());
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(work).map(move |failed, act, ctx| {
                act.deleting = false;
                act.in_flight -= batch.len();
                for name in &batch {
                    if !failed.iter().any(|(f, _)| f == name) {
                        act.names.release(name);
                    }
                }
                for (name, err) in failed {
                    // Still attached and usable: keep it in the pool (over its size if need
                    // be; acquires use it up).
                    if act.phase == Phase::Ready {
                        warn!(act.log, "cannot delete TAP; keeping it in the pool"; "tap" => &name, "error" => %err);
                        act.free.push_back(name);
                    } else {
                        warn!(act.log, "cannot delete TAP; left in place"; "tap" => &name, "error" => %err);
                    }
                }
                // Ports were freed: acquires waiting for them take them (each retry refills
                // after itself); else a pool held below its size by a full bridge refills.
                let waiting = !act.deleted_waiters.is_empty();
                for waiter in act.deleted_waiters.drain(..) {
                    let _ = waiter.send(());
                }
                act.delete_doomed(ctx);
                if !waiting {
                    act.refill(ctx);
                }
                act.notify_if_idle();
            }),
        );
    }

    /// Takes an unleased, attached TAP back: into the pool when it is short, else deleted
    /// in the background. A refill in flight is not counted: if the pool turns out full when
    /// it lands, the refilled TAP is the one deleted (never a good TAP lost to a refill that
    /// fails).
    fn return_free(&mut self, tap: String, ctx: &mut Context<Self>) {
        if self.phase == Phase::Ready && self.free.len() < self.target() {
            self.free.push_back(tap);
        } else {
            // Deleting a netdev waits for an RCU grace period (tens of ms); its name stays
            // taken until it is gone.
            self.delete_in_background(tap, ctx);
        }
    }

    fn notify_if_idle(&mut self) {
        if self.in_flight == 0 {
            for waiter in self.idle_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }
}

impl Actor for TapPoolActor {
    type Context = Context<Self>;
}

/// Creates a TAP and attaches it to the bridge; if the attach fails, the TAP is deleted again.
async fn provision(links: Rc<dyn Links>, tap: TapSpec, port: PortSpec) -> Result<(), TapPoolError> {
    let index = links
        .create_tap(tap.clone())
        .await
        .map_err(TapPoolError::host("create TAP", &tap.name))?;
    if let Err(source) = links.attach_port(&tap.name, index, port).await {
        // The undo; if it fails too, the TAP stays and its name must stay taken.
        if links.delete_link(&tap.name).await.is_err() {
            return Err(TapPoolError::AttachUndoFailed {
                tap: tap.name,
                source,
            });
        }
        return Err(TapPoolError::Host {
            op: "attach TAP to bridge",
            name: tap.name,
            source,
        });
    }
    Ok(())
}

/// Pins the host's neighbour entry for a lease on the bridge, so no ARP a guest sends can
/// redirect the host's traffic for that address (see `host::links::Links::pin_neighbour`).
async fn pin(
    links: Rc<dyn Links>,
    bridge_index: u32,
    lease: &NetLease,
) -> Result<(), TapPoolError> {
    links
        .pin_neighbour(bridge_index, &lease.tap, lease.guest_ip, lease.mac)
        .await
        .map_err(TapPoolError::host(
            "pin the neighbour entry of",
            &lease.guest_ip.to_string(),
        ))
}

/// True if a failed creation left a link holding the name (someone else's, or ours that
/// could not be deleted), so the name must never be handed out.
fn keeps_name(err: &TapPoolError) -> bool {
    matches!(
        err,
        TapPoolError::AttachUndoFailed { .. }
            | TapPoolError::Host {
                source: LinksError::Exists { .. },
                ..
            }
    )
}

/// Delay before retrying a failed refill: 50 ms doubling up to 5 s.
fn refill_backoff(failures: u32) -> Duration {
    let ms = 50u64.saturating_mul(1u64 << failures.saturating_sub(1).min(7));
    Duration::from_millis(ms.min(5_000))
}
