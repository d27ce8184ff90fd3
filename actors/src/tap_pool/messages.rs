//! The messages `TapPoolActor` answers, and the reports it returns.

use actix::Message;

use crate::lease::NetLease;

use super::TapPoolError;

/// Sets up the bridge and the pool around the leases live VMs hold (after a restart; empty on
/// a fresh start): their IPs and TAPs are marked leased (missing TAPs re-created), unleased
/// TAPs with hearth's prefix are reclaimed into the pool or deleted beyond its size, and the
/// pool is filled. Must come first; a second `Initialize` is refused. If it fails, the actor
/// stays uninitialised and `Initialize` may be retried: it adopts whatever the failed attempt
/// left on the host.
#[derive(Debug, Message)]
#[rtype(result = "Result<PoolStatus, TapPoolError>")]
pub struct Initialize {
    /// The leases live VMs hold.
    pub used: Vec<NetLease>,
}

/// Leases a TAP (attached to the bridge, up) with a fresh guest IP and its MAC, its
/// neighbour and forwarding entries pinned. From a warm pool that pin is the only host work
/// (a few netlink requests); from an empty pool a TAP is made on demand.
#[derive(Debug, Message)]
#[rtype(result = "Result<NetLease, TapPoolError>")]
pub struct AcquireTap {}

/// Gives a lease back; replies at once. In the background, its pinned neighbour and
/// forwarding entries are removed, then its IP is freed and its TAP returns to the pool, or,
/// when the pool is full, is deleted (batched with other deletions; `GetStatus::pending`
/// counts all of it; `Teardown` waits for it). A lease this actor does not hold is refused
/// and changes nothing.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), TapPoolError>")]
pub struct ReleaseTap {
    /// The lease, exactly as `AcquireTap` (or `Initialize`) returned it.
    pub lease: NetLease,
}

/// Deletes the unleased pool TAPs, waits for background work to finish, and optionally
/// deletes the bridge (only when no lease is outstanding). Afterwards `AcquireTap` is refused;
/// `ReleaseTap` still works and deletes the TAP.
#[derive(Debug, Message)]
#[rtype(result = "Result<TeardownReport, TapPoolError>")]
pub struct Teardown {
    /// Also delete the bridge if no TAP is leased.
    pub remove_bridge: bool,
}

/// A cheap snapshot of the pool for metrics; never touches the host.
#[derive(Debug, Message)]
#[rtype(result = "PoolStatus")]
pub struct GetStatus {}

/// The pool's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    /// `Initialize` succeeded and `Teardown` has not run.
    pub ready: bool,
    /// Unleased TAPs ready to hand out.
    pub free_taps: usize,
    /// TAPs currently leased.
    pub leased: usize,
    /// Guest addresses still free.
    pub free_ips: u32,
    /// TAP creations and deletions still running in the background.
    pub pending: usize,
    /// Background refills that failed in a row (0 when the last one worked).
    pub refill_failures: u32,
}

/// What `Teardown` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeardownReport {
    /// Pool TAPs deleted.
    pub deleted_taps: Vec<String>,
    /// Leases still outstanding (their TAPs are kept).
    pub leased_kept: usize,
    /// Whether the bridge was deleted.
    pub bridge_removed: bool,
}
