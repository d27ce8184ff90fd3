//! The messages [`DnsActor`](super::DnsActor) answers.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

use actix::Message;

use super::DnsError;

/// Starts serving DNS on `listen` (UDP and TCP), typically the bridge gateway and port 53.
///
/// Returns the address actually bound (port 0 picks a free port). When already serving on
/// another address, the new address is bound first and the old one released only then, so a
/// failed rebind leaves the old server running; the same address again is a no-op.
#[derive(Debug, Message)]
#[rtype(result = "Result<SocketAddr, DnsError>")]
pub struct Start {
    /// The address and port to serve on.
    pub listen: SocketAddr,
}

/// Stops serving; resolves once both ports are closed (so they can be bound again at once).
/// Stopping a stopped server does nothing.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), DnsError>")]
pub struct Stop;

/// Replaces the whole name table with `records` atomically: queries see the old table or
/// the new one, never a mix. A bad name or address rejects the whole map, and the table
/// in use stays as it was.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), DnsError>")]
pub struct ReplaceRecords {
    /// VM name (one DNS label, case-insensitive) -> guest IPv4 address; answered as
    /// `<name>.<zone>`. Several names may share an IP; its PTR then lists them all.
    pub records: HashMap<String, Ipv4Addr>,
}

/// Convenience for callers holding a `HashMap<String, Ipv4Addr>` built elsewhere.
impl From<HashMap<String, Ipv4Addr>> for ReplaceRecords {
    fn from(records: HashMap<String, Ipv4Addr>) -> Self {
        Self { records }
    }
}
