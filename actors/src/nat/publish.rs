//! Published ports: `NatActor`'s DNAT of a host port to a guest port.
//!
//! Static part (rebuilt by every `Reconcile`, see `rules.rs`): `HEARTH-PREROUTING` (traffic
//! arriving from outside, and from guests: hairpin) and `HEARTH-OUTPUT` (traffic the host
//! itself originates) jump to `HEARTH-PUBLISH` for packets addressed to one of the host's own
//! addresses; `HEARTH-FORWARD` accepts connections hearth DNATed (both directions) before its
//! drops, so a published port is the only way into a guest; `HEARTH-POSTROUTING` masquerades
//! guest-to-guest hairpin connections, so the answer comes back through the host.
//!
//! Per-mapping part: one `DNAT` rule in `HEARTH-PUBLISH` per published port, added and removed
//! by one `iptables-restore --noflush` of only those lines (a cost that does not depend on
//! the number of VMs), and written again whole, atomically with the static rules, by
//! `Reconcile`. The actor keeps the table of published ports (by protocol and host port) and
//! refuses a port another VM holds or a socket on the host holds, naming that owner.
//! Not covered: publishing on a loopback address (`127.0.0.1:...`) reaches the guest only
//! from outside the host's loopback (the kernel does not route 127/8 to the bridge without
//! `route_localnet`, which hearth does not set).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use actix::{Context, Handler, Message};
use hearth_proto::api_publish::{validate_publish, PortMapping, Protocol};
use slog::debug;

use super::{step, NatActor, NatConfig, NatError};
use crate::host::firewall::PortProbe;

/// hearth's chain in the nat table holding one DNAT rule per published port.
pub const CHAIN_PUBLISH: &str = "HEARTH-PUBLISH";

/// The jump from a hook chain (`HEARTH-PREROUTING`, `HEARTH-OUTPUT`) into the published
/// ports, for packets to one of the host's own addresses.
#[must_use]
pub fn jump_rule(chain: &str) -> String {
    format!("-A {chain} -m addrtype --dst-type LOCAL -j {CHAIN_PUBLISH}")
}

/// Hairpin: a guest reaching a published port through a host address is masqueraded to the
/// gateway, so the guest that answers sends its reply back through the host.
#[must_use]
pub fn hairpin_rule(config: &NatConfig) -> String {
    format!(
        "-A {} -s {} -o {} -m conntrack --ctstate DNAT -j MASQUERADE",
        super::rules::CHAIN_POSTROUTING,
        config.cidr.trunc(),
        config.bridge
    )
}

/// The forward rules letting connections hearth DNATed to a guest (and their replies) pass
/// before `HEARTH-FORWARD`'s drops.
#[must_use]
pub fn forward_rules(config: &NatConfig) -> [String; 2] {
    let (chain, br) = (super::rules::CHAIN_FORWARD, &config.bridge);
    [
        format!("-A {chain} -o {br} -m conntrack --ctstate DNAT -j ACCEPT"),
        format!("-A {chain} -i {br} -m conntrack --ctstate DNAT -j ACCEPT"),
    ]
}

/// The rule spec (without `-A`/`-D` and chain) of one published port.
fn rule_spec(m: &PortMapping, guest_ip: Ipv4Addr) -> String {
    let mut spec = String::new();
    if let Some(addr) = m.host_addr {
        let _ = write!(spec, "-d {addr}/32 ");
    }
    let proto = m.protocol.as_str();
    let _ = write!(
        spec,
        "-p {proto} -m {proto} --dport {} -j DNAT --to-destination {guest_ip}:{}",
        m.host_port, m.guest_port
    );
    spec
}

/// The `-A` line that publishes `m` to `guest_ip`.
#[must_use]
pub fn dnat_rule(m: &PortMapping, guest_ip: Ipv4Addr) -> String {
    format!("-A {CHAIN_PUBLISH} {}", rule_spec(m, guest_ip))
}

/// An `iptables-restore --noflush` text of `op` (`-A` or `-D`) lines in the nat table.
fn nat_text<'a>(op: &str, rules: impl Iterator<Item = (&'a PortMapping, Ipv4Addr)>) -> String {
    let mut text = String::from("*nat\n");
    for (m, ip) in rules {
        let _ = writeln!(text, "{op} {CHAIN_PUBLISH} {}", rule_spec(m, ip));
    }
    text.push_str("COMMIT\n");
    text
}

/// One published port and who holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedPort {
    /// The VM.
    pub vm: String,
    /// Its guest address (the DNAT target).
    pub guest_ip: Ipv4Addr,
    /// The mapping.
    pub mapping: PortMapping,
}

/// The published ports, by (protocol, host port): the ones that can collide.
pub(super) type PublishTable = BTreeMap<(Protocol, u16), Vec<PublishedPort>>;

/// The `-A` lines of every published port (for `Reconcile`).
pub(super) fn all_rules(table: &PublishTable) -> Vec<String> {
    table
        .values()
        .flatten()
        .map(|p| dnat_rule(&p.mapping, p.guest_ip))
        .collect()
}

/// Publishes `mappings` of `vm` (guest address `guest_ip`): all of them or none. A mapping the
/// VM already has is kept; one that takes a host port another VM, the VM itself (another
/// mapping), hearth's DNS or a host socket holds is refused with [`NatError::PortConflict`].
#[derive(Debug, Message)]
#[rtype(result = "Result<(), NatError>")]
pub struct PublishPorts {
    /// The VM the ports are published for.
    pub vm: String,
    /// Its guest address.
    pub guest_ip: Ipv4Addr,
    /// The ports.
    pub mappings: Vec<PortMapping>,
}

/// Withdraws `vm`'s published ports: the ones listed, or all with `None`. Idempotent.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), NatError>")]
pub struct UnpublishPorts {
    /// The VM.
    pub vm: String,
    /// The ports to withdraw; `None` for all of the VM's.
    pub mappings: Option<Vec<PortMapping>>,
}

/// Lists every published port (all VMs), in (protocol, host port) order.
#[derive(Debug, Message)]
#[rtype(result = "Vec<PublishedPort>")]
pub struct ListPublished;

impl NatActor {
    /// Who holds the host port `m` wants, other than `vm`'s identical mapping.
    fn port_owner(&mut self, vm: &str, m: &PortMapping) -> Result<Option<String>, NatError> {
        if let Some(other) = self
            .published
            .get(&(m.protocol, m.host_port))
            .into_iter()
            .flatten()
            .find(|p| p.mapping.overlaps(m) && !(p.vm == vm && p.mapping == *m))
        {
            return Ok(Some(format!("VM {:?} ({})", other.vm, other.mapping)));
        }
        // Guests ask the gateway on port 53, TCP and UDP: that port stays hearth's.
        if m.host_port == 53 && m.host_addr.is_none_or(|a| a == self.config.gateway) {
            return Ok(Some("hearth's DNS server on the gateway".into()));
        }
        let mine = self
            .published
            .get(&(m.protocol, m.host_port))
            .is_some_and(|v| v.iter().any(|p| p.vm == vm && p.mapping == *m));
        if mine {
            return Ok(None);
        }
        match self
            .firewall
            .probe_port(m.protocol, m.host_addr, m.host_port)
            .map_err(step(format!("probe host port {m}")))?
        {
            PortProbe::Free => Ok(None),
            PortProbe::Bound => Ok(Some("a socket already bound on the host".into())),
            PortProbe::NotLocal => Err(NatError::InvalidPublish {
                mapping: m.to_string(),
                reason: "the host address is not one of this host's".into(),
            }),
        }
    }

    pub(super) fn publish(&mut self, msg: PublishPorts) -> Result<(), NatError> {
        self.config.check_guest(msg.guest_ip)?;
        validate_publish("publish", &msg.mappings).map_err(|e| NatError::InvalidPublish {
            mapping: msg
                .mappings
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" "),
            reason: e.reason,
        })?;
        if !self.ready {
            return Err(NatError::NotReady {
                op: "publish ports",
            });
        }
        let mut added = Vec::new();
        for m in &msg.mappings {
            if let Some(owner) = self.port_owner(&msg.vm, m)? {
                return Err(NatError::PortConflict {
                    mapping: m.to_string(),
                    owner,
                });
            }
            let held = self.published.get(&(m.protocol, m.host_port));
            let same = held.and_then(|v| v.iter().find(|p| p.vm == msg.vm && p.mapping == *m));
            match same {
                Some(p) if p.guest_ip == msg.guest_ip => {}
                // Published before with another address (an older lease): replaced.
                Some(p) => {
                    return Err(NatError::PortConflict {
                        mapping: m.to_string(),
                        owner: format!("VM {:?} at {} (unpublish it first)", p.vm, p.guest_ip),
                    })
                }
                None => added.push(*m),
            }
        }
        if added.is_empty() {
            return Ok(());
        }
        let text = nat_text("-A", added.iter().map(|m| (m, msg.guest_ip)));
        self.firewall
            .restore_rules(&text)
            .map_err(step(format!("publish ports of VM {}", msg.vm)))?;
        for m in added {
            self.published
                .entry((m.protocol, m.host_port))
                .or_default()
                .push(PublishedPort {
                    vm: msg.vm.clone(),
                    guest_ip: msg.guest_ip,
                    mapping: m,
                });
        }
        debug!(self.log, "ports published"; "vm" => &msg.vm, "guest" => %msg.guest_ip);
        Ok(())
    }

    pub(super) fn unpublish(&mut self, msg: &UnpublishPorts) -> Result<(), NatError> {
        let wanted = |p: &PublishedPort| {
            p.vm == msg.vm
                && msg
                    .mappings
                    .as_ref()
                    .is_none_or(|ms| ms.contains(&p.mapping))
        };
        let going: Vec<PublishedPort> = self
            .published
            .values()
            .flatten()
            .filter(|p| wanted(p))
            .cloned()
            .collect();
        if going.is_empty() {
            return Ok(());
        }
        if self.ready {
            let text = nat_text("-D", going.iter().map(|p| (&p.mapping, p.guest_ip)));
            self.firewall
                .restore_rules(&text)
                .map_err(step(format!("unpublish ports of VM {}", msg.vm)))?;
        }
        for list in self.published.values_mut() {
            list.retain(|p| !wanted(p));
        }
        self.published.retain(|_, v| !v.is_empty());
        debug!(self.log, "ports unpublished"; "vm" => &msg.vm, "count" => going.len());
        Ok(())
    }
}

impl Handler<PublishPorts> for NatActor {
    type Result = Result<(), NatError>;

    fn handle(&mut self, msg: PublishPorts, _: &mut Context<Self>) -> Self::Result {
        self.publish(msg)
    }
}

impl Handler<UnpublishPorts> for NatActor {
    type Result = Result<(), NatError>;

    fn handle(&mut self, msg: UnpublishPorts, _: &mut Context<Self>) -> Self::Result {
        self.unpublish(&msg)
    }
}

impl Handler<ListPublished> for NatActor {
    type Result = Vec<PublishedPort>;

    fn handle(&mut self, _: ListPublished, _: &mut Context<Self>) -> Self::Result {
        self.published.values().flatten().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use actix::{Actor, Addr};

    use super::*;
    use crate::host::firewall::fake::{FakeCall, FakeFirewall};
    use crate::nat::{Reconcile, Teardown};

    fn config() -> NatConfig {
        NatConfig {
            bridge: "hearth0".into(),
            cidr: "172.31.240.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(172, 31, 240, 1),
            egress: Some("eth0".into()),
            guest_ports: "hth".into(),
            isolate_guests: true,
            block_guest_to_host: true,
            anti_spoofing: false,
        }
    }

    async fn actor() -> (Addr<NatActor>, FakeFirewall) {
        let fw = FakeFirewall::new();
        fw.add_interface("eth0");
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let nat = NatActor::new(config(), Box::new(fw.clone()), log)
            .unwrap()
            .start();
        nat.send(Reconcile { desired: vec![] })
            .await
            .unwrap()
            .unwrap();
        (nat, fw)
    }

    fn m(s: &str) -> PortMapping {
        s.parse().unwrap()
    }

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(172, 31, 240, last)
    }

    fn publish(vm: &str, last: u8, ms: &[&str]) -> PublishPorts {
        PublishPorts {
            vm: vm.into(),
            guest_ip: ip(last),
            mappings: ms.iter().map(|s| m(s)).collect(),
        }
    }

    fn restores(fw: &FakeFirewall) -> Vec<String> {
        fw.restored_rules()
    }

    #[actix::test]
    async fn publishing_adds_one_dnat_rule_per_port_and_is_idempotent() {
        let (nat, fw) = actor().await;
        let before = restores(&fw).len();
        nat.send(publish("web", 5, &["8080:80", "127.0.0.1:5353:53/udp"]))
            .await
            .unwrap()
            .unwrap();
        let texts = restores(&fw);
        assert_eq!(texts.len(), before + 1, "one restore for both ports");
        let text = texts.last().unwrap();
        assert!(text.contains(
            "-A HEARTH-PUBLISH -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.31.240.5:80"
        ), "{text}");
        assert!(text.contains(
            "-A HEARTH-PUBLISH -d 127.0.0.1/32 -p udp -m udp --dport 5353 -j DNAT --to-destination 172.31.240.5:53"
        ), "{text}");
        // Again: nothing new on the host.
        nat.send(publish("web", 5, &["8080:80"]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(restores(&fw).len(), before + 1);
        let listed = nat.send(ListPublished).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|p| p.vm == "web" && p.guest_ip == ip(5)));
    }

    #[actix::test]
    async fn a_port_someone_holds_is_refused_naming_the_owner_and_nothing_changes() {
        let (nat, fw) = actor().await;
        nat.send(publish("web", 5, &["8080:80"]))
            .await
            .unwrap()
            .unwrap();
        fw.state().bound_ports.insert((Protocol::Tcp, 9000));
        let calls = fw.call_count();
        for (req, owner) in [
            (
                publish("db", 6, &["9001:1", "10.0.0.1:8080:81"]),
                "VM \"web\" (8080:80/tcp)",
            ),
            (
                publish("db", 6, &["9001:1", "9000:90"]),
                "a socket already bound on the host",
            ),
            (publish("db", 6, &["53:53/udp"]), "hearth's DNS"),
            (publish("db", 6, &["172.31.240.1:53:53"]), "hearth's DNS"),
        ] {
            let err = nat.send(req).await.unwrap().unwrap_err();
            assert!(
                matches!(&err, NatError::PortConflict { owner: o, .. } if o.contains(owner)),
                "{err}"
            );
        }
        assert!(
            !fw.state().calls[calls..]
                .iter()
                .any(|c| matches!(c, FakeCall::RestoreRules(_))),
            "a refused publish changes no rule"
        );
        // Another protocol or another address of the same port is free.
        nat.send(publish("db", 6, &["8080:80/udp", "10.0.0.1:53:53"]))
            .await
            .unwrap()
            .unwrap();
    }

    #[actix::test]
    async fn unpublish_removes_the_rules_and_reconcile_and_teardown_keep_the_table() {
        let (nat, fw) = actor().await;
        nat.send(publish("web", 5, &["8080:80", "8443:443"]))
            .await
            .unwrap()
            .unwrap();
        nat.send(publish("db", 6, &["5432:5432"]))
            .await
            .unwrap()
            .unwrap();
        nat.send(UnpublishPorts {
            vm: "web".into(),
            mappings: Some(vec![m("8443:443")]),
        })
        .await
        .unwrap()
        .unwrap();
        let text = restores(&fw).last().unwrap().clone();
        assert_eq!(
            text,
            "*nat\n-D HEARTH-PUBLISH -p tcp -m tcp --dport 8443 -j DNAT --to-destination 172.31.240.5:443\nCOMMIT\n"
        );
        // Reconcile writes the chain whole, with what is still published.
        nat.send(Reconcile { desired: vec![] })
            .await
            .unwrap()
            .unwrap();
        let full = restores(&fw).last().unwrap().clone();
        assert!(full.contains(":HEARTH-PUBLISH - [0:0]\n"), "{full}");
        assert!(full.contains("--dport 8080 -j DNAT"), "{full}");
        assert!(full.contains("--dport 5432 -j DNAT"), "{full}");
        assert!(!full.contains("--dport 8443"), "{full}");
        assert!(
            full.contains("-A HEARTH-PREROUTING -m addrtype --dst-type LOCAL -j HEARTH-PUBLISH")
        );
        assert!(full.contains("-A HEARTH-OUTPUT -m addrtype --dst-type LOCAL -j HEARTH-PUBLISH"));
        // All of a VM's, then idempotent.
        for _ in 0..2 {
            nat.send(UnpublishPorts {
                vm: "web".into(),
                mappings: None,
            })
            .await
            .unwrap()
            .unwrap();
        }
        let left = nat.send(ListPublished).await.unwrap();
        assert_eq!(
            left.iter().map(|p| p.vm.as_str()).collect::<Vec<_>>(),
            ["db"]
        );
        nat.send(Teardown).await.unwrap().unwrap();
        assert!(nat.send(ListPublished).await.unwrap().is_empty());
    }

    #[test]
    fn teardown_removes_the_publish_chain_after_the_hook_chains() {
        let listing = super::super::rules::Listings {
            nat: "-N HEARTH-PREROUTING\n-N HEARTH-PUBLISH\n-A PREROUTING -j HEARTH-PREROUTING\n"
                .into(),
            filter: String::new(),
        };
        let text = super::super::rules::teardown_text(&listing).unwrap();
        let pre = text.find("-X HEARTH-PREROUTING").unwrap();
        let publish = text.find("-X HEARTH-PUBLISH").unwrap();
        assert!(
            text.contains("-D PREROUTING -j HEARTH-PREROUTING"),
            "{text}"
        );
        assert!(pre < publish, "{text}");
    }

    #[actix::test]
    async fn bad_mappings_and_a_guest_outside_the_subnet_are_refused() {
        let (nat, _fw) = actor().await;
        let err = nat
            .send(publish("web", 5, &["8080:80", "8080:81"]))
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, NatError::InvalidPublish { .. }), "{err}");
        let err = nat
            .send(PublishPorts {
                vm: "web".into(),
                guest_ip: Ipv4Addr::new(10, 0, 0, 5),
                mappings: vec![m("8080:80")],
            })
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, NatError::InvalidGuest { .. }), "{err}");
        assert!(nat.send(ListPublished).await.unwrap().is_empty());
    }
}
