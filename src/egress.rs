//! Follows the egress interface NAT needs while hearthd runs: a host with no default route at
//! start-up (offline, air-gapped, a fresh network namespace) serves without NAT, and NAT starts
//! working when a default route appears. Woken by IPv4 route events over netlink; each event
//! re-reads the default route and tells `NatActor` (`SetEgress`) when what it uses differs.

use actix::Addr;
use futures::StreamExt;
use hearth_actors::host::links::routes::ipv4_route_changes;
use hearth_actors::nat::{GetStatus, NatActor, SetEgress};
use slog::{info, warn, Logger};

use crate::config::default_route_interface;

/// The interface of this thread's network namespace's IPv4 default route, if any.
fn current_default_route() -> Option<String> {
    // thread-self: the namespace of this thread, which is the one the actors run in.
    hearth_actors::host::procfs::read_to_string("thread-self/net/route")
        .ok()
        .and_then(|table| default_route_interface(&table))
}

/// Starts following routes on the current actix system. `fixed` is the egress interface the
/// configuration names (or hearthd found at start-up): it is the one used, re-checked on route
/// events while it does not exist; without it, the default route's interface is used.
pub fn follow(nat: Addr<NatActor>, fixed: Option<String>, log: Logger) {
    let mut changes = match ipv4_route_changes() {
        Ok(changes) => changes,
        Err(e) => {
            warn!(log, "cannot watch routes: the egress interface is not picked up later"; "error" => %e);
            return;
        }
    };
    actix::spawn(async move {
        // Once now (a route may have appeared since start-up), then on every change.
        loop {
            let wanted = fixed.clone().or_else(current_default_route);
            if let Some(interface) = wanted {
                let current = nat.send(GetStatus).await.ok().and_then(Result::ok);
                let active = current.and_then(|s| s.egress);
                if active.as_deref() != Some(interface.as_str()) {
                    match nat
                        .send(SetEgress {
                            interface: Some(interface.clone()),
                        })
                        .await
                    {
                        Ok(Ok(())) => {
                            info!(log, "egress interface set"; "egress" => &interface);
                        }
                        Ok(Err(e)) => {
                            warn!(log, "cannot use egress interface"; "egress" => &interface, "error" => %e);
                        }
                        Err(_) => return,
                    }
                }
            }
            if changes.next().await.is_none() {
                warn!(
                    log,
                    "route events ended: the egress interface is no longer followed"
                );
                return;
            }
        }
    });
}
