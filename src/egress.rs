//! Follows the egress interface NAT needs while hearthd runs. Without a configured interface,
//! the default route's interface is used: a host with no default route (offline, air-gapped, a
//! fresh network namespace) serves without NAT, NAT starts working when a default route
//! appears, moves its rules when the route moves to another interface, and is refused again
//! (no masquerade rule left) when the route goes away. A configured interface is used while it
//! exists and refused while it does not. Woken by route and link events over netlink; each
//! burst of events re-reads the host and tells `NatActor` (`SetEgress`) when what it uses is
//! not what it should.

use actix::Addr;
use futures::{FutureExt, StreamExt};
use hearth_actors::host::links::routes::route_changes;
use hearth_actors::nat::{GetStatus, NatActor, SetEgress};
use slog::{info, warn, Logger};

use crate::config::default_route_interface;

/// What the follower sees of the host at one wake-up.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sight {
    /// The interface NAT should use: the configured one, else the default route's.
    target: Option<String>,
    /// `target` if it exists now (what NAT ends up using after `SetEgress { target }`).
    usable: Option<String>,
}

impl Sight {
    /// Reads this thread's network namespace (thread-self: the namespace the actors run in).
    fn look(fixed: Option<&str>) -> Self {
        let read = |what: &str| {
            hearth_actors::host::procfs::read_to_string(&format!("thread-self/net/{what}"))
        };
        let target = match fixed {
            Some(name) => Some(name.to_owned()),
            None => read("route")
                .ok()
                .and_then(|table| default_route_interface(&table)),
        };
        let devices = read("dev").unwrap_or_default();
        Self::of(target, &devices)
    }

    /// The sight of `target` on a host whose `/proc/net/dev` reads `devices`.
    fn of(target: Option<String>, devices: &str) -> Self {
        let usable = target
            .clone()
            .filter(|name| interfaces(devices).any(|i| i == name));
        Self { target, usable }
    }

    /// The `SetEgress` that corrects NAT using `active`, or `None` when it is right.
    fn correction(&self, active: Option<&str>) -> Option<SetEgress> {
        (self.usable.as_deref() != active).then(|| SetEgress {
            interface: self.target.clone(),
        })
    }
}

/// The interface names of a `/proc/net/dev` table (two header lines, then `name: counters`).
fn interfaces(proc_net_dev: &str) -> impl Iterator<Item = &str> {
    proc_net_dev
        .lines()
        .skip(2)
        .filter_map(|line| line.split_once(':').map(|(name, _)| name.trim()))
}

/// Starts following routes on the current actix system. `fixed` is the egress interface the
/// configuration names: it is the one used while it exists. Without it, the default route's
/// interface is used, whichever it is at the time.
pub fn follow(nat: Addr<NatActor>, fixed: Option<String>, log: Logger) {
    let mut changes = match route_changes() {
        Ok(changes) => changes,
        Err(e) => {
            warn!(log, "cannot watch routes: the egress interface is not followed"; "error" => %e);
            return;
        }
    };
    actix::spawn(async move {
        // What NAT was last brought in line with (`None`: check at the next event).
        let mut handled: Option<Sight> = None;
        let mut last_error: Option<String> = None;
        // Once now (a route may have changed since start-up), then after every burst of events.
        loop {
            let sight = Sight::look(fixed.as_deref());
            if handled.as_ref() != Some(&sight) {
                let status = nat.send(GetStatus).await;
                let Ok(status) = status else { return };
                let active = status.ok().and_then(|s| s.egress);
                handled = Some(sight.clone());
                if let Some(set) = sight.correction(active.as_deref()) {
                    let to = set.interface.clone();
                    match nat.send(set).await {
                        Ok(Ok(())) => {
                            info!(log, "egress interface set"; "egress" => ?to, "was" => ?active);
                            last_error = None;
                        }
                        Ok(Err(e)) => {
                            // Tried again at the next event; said once per distinct failure.
                            let text = e.to_string();
                            if last_error.as_ref() != Some(&text) {
                                warn!(log, "cannot change the egress interface"; "egress" => ?to, "error" => %e);
                            }
                            last_error = Some(text);
                            handled = None;
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
            // A burst (a TAP pool refill is many link events) needs one look, not one per event.
            while let Some(event) = changes.next().now_or_never() {
                if event.is_none() {
                    warn!(
                        log,
                        "route events ended: the egress interface is no longer followed"
                    );
                    return;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = "Inter-|   Receive                            |  Transmit\n \
        face |bytes    packets errs drop fifo frame compressed multicast|bytes\n    \
        lo:       0       0    0    0    0     0          0         0        0\n  \
        wan0:    1234      10    0    0    0     0          0         0     5678\n";

    #[test]
    fn interfaces_are_read_from_proc_net_dev() {
        assert_eq!(interfaces(DEV).collect::<Vec<_>>(), ["lo", "wan0"]);
        assert_eq!(interfaces("").count(), 0);
    }

    #[test]
    fn a_target_is_usable_only_while_it_exists() {
        let present = Sight::of(Some("wan0".into()), DEV);
        assert_eq!(present.usable.as_deref(), Some("wan0"));
        let gone = Sight::of(Some("wan1".into()), DEV);
        assert_eq!(gone.usable, None);
        assert_eq!(gone.target.as_deref(), Some("wan1"));
        assert_eq!(Sight::of(None, DEV).usable, None);
    }

    /// The `SetEgress` interfaces sent (none, or one) for `target` while NAT uses `active`.
    fn sent(target: Option<&str>, active: Option<&str>) -> Vec<Option<String>> {
        Sight::of(target.map(str::to_owned), DEV)
            .correction(active)
            .map(|s| s.interface)
            .into_iter()
            .collect()
    }

    #[test]
    fn nat_is_corrected_when_the_route_appears_moves_or_goes_away() {
        // Appears, moves, goes away.
        assert_eq!(sent(Some("wan0"), None), [Some("wan0".to_owned())]);
        assert_eq!(sent(Some("wan0"), Some("wan1")), [Some("wan0".to_owned())]);
        assert_eq!(sent(None, Some("wan0")), [None]);
        // Already right: nothing is sent.
        assert!(sent(Some("wan0"), Some("wan0")).is_empty());
        assert!(sent(None, None).is_empty());
    }

    #[test]
    fn a_missing_target_is_sent_so_nat_refuses_it_by_name() {
        // NatActor re-checks the interface and refuses NAT naming it.
        assert_eq!(sent(Some("wan1"), Some("wan1")), [Some("wan1".to_owned())]);
        // Already refused: nothing is sent.
        assert!(sent(Some("wan1"), None).is_empty());
    }
}
