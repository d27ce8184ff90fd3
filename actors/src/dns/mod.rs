//! `DnsActor`: the DNS server on the bridge gateway, and the name -> IP table it answers from.
//!
//! Guests ask the gateway for `<vm>.<zone>` (an A record, short TTL), for the PTR of a guest
//! IP, or for any other name, which is forwarded to the upstream resolvers. The supervisor
//! rebuilds the whole map from the VMs alive and sends it as [`ReplaceRecords`]; the actor
//! builds a new immutable [`table::RecordTable`] off to the side and swaps it in
//! with one atomic pointer store, so the request handler (on its own threads, see
//! `server.rs`) only ever reads a complete snapshot and never takes a lock.
//!
//! Flow: [`Start`] binds UDP + TCP on the listen address and starts the worker threads;
//! [`Stop`] stops them and resolves once the ports are free; [`ReplaceRecords`] swaps the
//! table whether or not the server runs.
//!
//! Files: `messages.rs` (the messages), this file (options, errors, the actor),
//! `handlers.rs` (its message handlers), `table.rs` (the pure table: validation, building,
//! resolution), `request.rs` (turning a resolution into a reply; hickory's `RequestHandler`), `forward.rs` (upstream
//! forwarding), `cache.rs` (the bounded cache of upstream answers), `server.rs` (sockets and worker threads), `tests.rs` (actor tests).
//!
//! The sockets are the only host effect and need no privilege on loopback, so the actor is
//! tested against the real thing (`tests.rs`) rather than behind a fake.

mod batch;
mod cache;
pub mod egress;
mod forward;
mod handlers;
mod messages;
mod names;
mod request;
mod server;
pub mod table;

#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use arc_swap::ArcSwap;
use ipnet::Ipv4Net;
use slog::{info, Logger};

pub use self::egress::{SetEgressDomains, SetEgressLearner};
pub use self::forward::ForwardError;
pub use self::messages::{ReplaceRecords, Start, Stop};
pub use self::names::{RemoveName, SetName};

use self::egress::EgressGuests;
use self::forward::Forwarder;
use self::request::DnsRequestHandler;
use self::server::RunningServer;
use self::table::{RecordTable, ZoneConfig};

/// Errors of the DNS actor.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A VM name is not a valid DNS label.
    #[error("Invalid VM name {name:?} for DNS: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two VM names are the same once lower-cased.
    #[error("Duplicate VM name {name:?} for DNS (names are case-insensitive)")]
    DuplicateName {
        /// The name, lower case.
        name: String,
    },
    /// A VM's address cannot be a guest address.
    #[error("Invalid address {ip} for VM name {name:?}")]
    InvalidAddress {
        /// The VM name.
        name: String,
        /// The address given.
        ip: Ipv4Addr,
    },
    /// The configured zone is not a valid domain name.
    #[error("Invalid DNS zone {zone:?}: {reason}")]
    InvalidZone {
        /// The zone as configured.
        zone: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The listen address could not be bound (address not on this host, port in use...).
    #[error("Cannot bind DNS {protocol} socket on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// `udp` or `tcp`.
        protocol: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// An egress domain pattern is invalid; nothing was changed.
    #[error(transparent)]
    InvalidEgressDomain(#[from] egress::PatternError),
    /// A worker thread or its runtime could not be started.
    #[error("Cannot start DNS worker thread")]
    Spawn {
        /// The OS error.
        source: std::io::Error,
    },
}

/// Settings of the DNS actor; the listen address comes with [`Start`].
#[derive(Debug, Clone)]
pub struct DnsOptions {
    /// The zone whose names are VMs: `<vm>.<zone>`.
    pub zone: String,
    /// Resolvers for every other name, tried in order.
    pub upstreams: Vec<SocketAddr>,
    /// The guest subnet: PTR queries for it are answered here (NXDOMAIN for unknown IPs).
    /// Without it only known guest IPs get a PTR and other reverse names are forwarded.
    pub guest_subnet: Option<Ipv4Net>,
    /// TTL of VM records, and the negative-caching TTL of the zone.
    pub ttl: u32,
    /// How long to wait for one upstream answer.
    pub upstream_timeout: Duration,
    /// How many times the list of upstreams is tried before answering SERVFAIL.
    pub upstream_rounds: u32,
    /// Worker threads serving queries (each with its own socket on the shared port).
    pub workers: usize,
    /// Forwarded UDP queries each worker keeps in flight (each holds a socket); beyond
    /// that, SERVFAIL at once.
    pub max_forwards: usize,
    /// Upstream answers kept (see `cache.rs`); 0 disables the cache.
    pub cache_entries: usize,
}

/// Two workers, or one where the calling thread may run on a single CPU (its affinity or
/// cgroup quota, as `available_parallelism` reads them; threads inherit the affinity): two
/// workers taking turns on one CPU only add switches between them (measured: pinned to one
/// CPU, two workers served 0.94-0.97x of dnsmasq's single thread; see BENCHMARKS.md).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(2))
}

impl DnsOptions {
    /// Options with defaults: TTL 5 s, 1 s per upstream attempt, 2 rounds, 2 workers (1
    /// where this thread may run on one CPU only: [`default_workers`]), 256 forwarded queries
    /// in flight per worker, 10 000 cached upstream answers.
    pub fn new(zone: impl Into<String>, upstreams: Vec<SocketAddr>) -> Self {
        Self {
            zone: zone.into(),
            upstreams,
            guest_subnet: None,
            ttl: 5,
            upstream_timeout: Duration::from_secs(1),
            upstream_rounds: 2,
            workers: default_workers(),
            max_forwards: 256,
            cache_entries: cache::DEFAULT_CAPACITY,
        }
    }
}

/// The DNS actor: owns the server threads and the table they read.
pub struct DnsActor {
    zone: ZoneConfig,
    /// The snapshot the request handlers read; only this actor stores into it.
    table: Arc<ArcSwap<RecordTable>>,
    forwarder: Arc<Forwarder>,
    workers: usize,
    max_forwards: usize,
    /// Incremented per table, the SOA serial.
    serial: u32,
    server: Option<RunningServer>,
    /// Egress domain patterns per guest and their learner, read by the request handlers.
    egress: Arc<EgressGuests>,
    /// The map the table was last built from (lower-cased names), for per-name updates.
    names: std::collections::HashMap<String, Ipv4Addr>,
    logger: Logger,
}

impl DnsActor {
    /// A stopped DNS actor with an empty table. Fails when the zone is not a valid name.
    pub fn new(options: DnsOptions, logger: Logger) -> Result<Self, DnsError> {
        let zone = ZoneConfig::new(&options.zone, options.ttl, options.guest_subnet)?;
        let table = Arc::new(ArcSwap::from_pointee(RecordTable::empty(&zone)));
        let forwarder = Arc::new(
            Forwarder::new(
                options.upstreams,
                options.upstream_timeout,
                options.upstream_rounds,
            )
            .with_cache(options.cache_entries),
        );
        Ok(Self {
            zone,
            table,
            forwarder,
            workers: options.workers.max(1),
            max_forwards: options.max_forwards.max(1),
            serial: 0,
            server: None,
            egress: Arc::default(),
            names: std::collections::HashMap::new(),
            logger,
        })
    }

    /// Binds `listen` and starts serving; returns the old server (to be stopped) if any.
    fn start_server(
        &mut self,
        listen: SocketAddr,
    ) -> Result<(SocketAddr, Option<RunningServer>), DnsError> {
        let sockets = server::bind(listen, self.workers)?;
        let local = sockets.local_addr();
        let handler = DnsRequestHandler::new(
            self.table.clone(),
            self.forwarder.clone(),
            self.max_forwards,
        )
        .with_egress(self.egress.clone());
        let running = RunningServer::spawn(sockets, handler, &self.logger)?;
        info!(self.logger, "DNS serving"; "listen" => %local, "workers" => self.workers);
        Ok((local, self.server.replace(running)))
    }
}

impl Actor for DnsActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        // Dropping the server signals its workers to close their sockets.
        self.server = None;
    }
}
