//! Published ports: `NatActor`'s DNAT of a host port to a guest port.
//!
//! The translation itself lives in hearth's nftables table `ip hearth-publish`
//! (`host::firewall::nft_publish`): two maps from the destination asked for (host address or
//! any of the host's, protocol, port) to the guest address and port, looked up at the nat
//! hooks for prerouting (from outside) and output (from the host itself), for packets
//! addressed to one of the host's own addresses. `Reconcile` writes the table whole with every
//! published port, atomically (`nft -f`); `Teardown` removes it.
//!
//! Guests reaching a published port through a host address (hairpin) are translated to the
//! port's hairpin proxy instead (`host::hairpin`, which says why): two more maps of the same
//! keys lead to a proxy on the gateway, which hearthd runs for each port guests can reach and
//! which opens its own connection to the guest behind the port. The actor starts a port's
//! proxy before its translations and stops it after they are gone; `Reconcile` starts the
//! proxies of ports that have none (after a restart, all of them) and writes their elements.
//!
//! Per mapping: one map element (and one hairpin element), added or removed in-process by one
//! `nf_tables` netlink transaction, a cost that does not depend on the number of VMs or ports
//! (an `iptables-restore` of even one line rewrites the whole nat table, whose size grows with
//! them).
//!
//! Still iptables rules, in hearth's static ruleset (`rules.rs`): `HEARTH-FORWARD` accepts
//! connections translated into the bridge from outside it (conntrack's DNAT state, whichever
//! table did it) and their replies, before its drops, so a published port is the only way
//! into a guest; `HEARTH-INPUT` accepts guests' translated packets only to a socket of the
//! hairpin proxies (marked; see `host::hairpin`). The iptables chain
//! `HEARTH-PUBLISH` of earlier versions is still declared (so emptied) by every reconcile and
//! removed by teardown, but nothing jumps to it.
//!
//! The actor keeps the table of published ports (by protocol and host port) and refuses a
//! port another VM holds or a socket on the host holds, naming that owner.
//! Ports published on a loopback address (`127.0.0.1:...`, reachable from the host only,
//! as with Docker), and ports on every address asked for at `127.0.0.1`, reach the guest:
//! `Reconcile` turns `route_localnet` on for the bridge once the publish table guards it
//! (dropping packets from guests to or from 127/8, masquerading the host's to the gateway);
//! `Teardown` turns it off again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use actix::{Context, Handler, Message};
use hearth_proto::api_publish::{validate_publish, PortMapping, Protocol};
use slog::{debug, warn};

use super::{step, NatActor, NatConfig, NatError};
use crate::host::firewall::{HairpinElement, PortProbe, PublishChange, PublishElement};
use crate::host::hairpin::{HairpinLimits, HairpinSpec};

/// hearth's iptables nat chain of earlier versions' published ports: declared empty (so
/// flushed) by every reconcile, removed by teardown, jumped to by nothing.
pub const CHAIN_PUBLISH: &str = "HEARTH-PUBLISH";

/// The forward rules letting connections translated (DNAT) to a guest, and their replies,
/// pass before `HEARTH-FORWARD`'s drops: from outside the bridge into it, and replies back. A
/// guest's own connection that another table translated is not forwarded for it (hearth's
/// own translations never lead a guest to a guest: see `host::hairpin`).
#[must_use]
pub fn forward_rules(config: &NatConfig) -> [String; 2] {
    let (chain, br) = (super::rules::CHAIN_FORWARD, &config.bridge);
    [
        format!("-A {chain} ! -i {br} -o {br} -m conntrack --ctstate DNAT -j ACCEPT"),
        format!("-A {chain} -i {br} -m conntrack --ctstate DNAT --ctdir REPLY -j ACCEPT"),
    ]
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

/// Where a published port can collide with another: its protocol and host port.
type PortKey = (Protocol, u16);

/// The published ports, by (protocol, host port), with each VM's keys so that withdrawing a
/// VM's ports looks at those only (a cost that does not grow with other VMs' ports).
#[derive(Debug, Default)]
pub(super) struct PublishTable {
    by_port: BTreeMap<PortKey, Vec<PublishedPort>>,
    by_vm: BTreeMap<String, BTreeSet<PortKey>>,
}

impl PublishTable {
    /// An empty table.
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// Forgets every port.
    pub(super) fn clear(&mut self) {
        self.by_port.clear();
        self.by_vm.clear();
    }

    /// The ports holding `key`.
    fn holders(&self, key: PortKey) -> &[PublishedPort] {
        self.by_port.get(&key).map_or(&[], Vec::as_slice)
    }

    /// Every published port, in (protocol, host port) order.
    fn all(&self) -> impl Iterator<Item = &PublishedPort> {
        self.by_port.values().flatten()
    }

    /// `vm`'s ports.
    fn of_vm<'a>(&'a self, vm: &'a str) -> impl Iterator<Item = &'a PublishedPort> {
        self.by_vm
            .get(vm)
            .into_iter()
            .flatten()
            .flat_map(|key| self.holders(*key))
            .filter(move |p| p.vm == vm)
    }

    fn insert(&mut self, port: PublishedPort) {
        let key = (port.mapping.protocol, port.mapping.host_port);
        self.by_vm.entry(port.vm.clone()).or_default().insert(key);
        self.by_port.entry(key).or_default().push(port);
    }

    /// Removes `vm`'s ports for which `going` holds.
    fn remove(&mut self, vm: &str, going: impl Fn(&PublishedPort) -> bool) {
        let Some(keys) = self.by_vm.remove(vm) else {
            return;
        };
        let mut kept = BTreeSet::new();
        for key in keys {
            if let Some(list) = self.by_port.get_mut(&key) {
                list.retain(|p| p.vm != vm || !going(p));
                if list.iter().any(|p| p.vm == vm) {
                    kept.insert(key);
                }
                if list.is_empty() {
                    self.by_port.remove(&key);
                }
            }
        }
        if !kept.is_empty() {
            self.by_vm.insert(vm.to_owned(), kept);
        }
    }
}

/// A running hairpin proxy: its element of the hairpin maps and where it leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Proxy {
    element: HairpinElement,
    target: SocketAddrV4,
}

/// The hairpin proxies of published ports, by mapping (a mapping is one VM's).
#[derive(Debug, Default)]
pub(super) struct Hairpins {
    by_mapping: BTreeMap<PortMapping, Proxy>,
    /// Proxies no port needs any more, which the kernel's table may still lead guests to:
    /// stopped once a table without them is written.
    retired: Vec<Proxy>,
    /// The kernel's table was read for the ports of a previous hearthd's proxies.
    read_earlier: bool,
    /// Those ports, by key (protocol, host address, host port): a port's new proxy takes its
    /// old one, so that the UDP flows conntrack still sends there go on to the same port.
    earlier: BTreeMap<(Protocol, Option<Ipv4Addr>, u16), u16>,
    /// Ports of a previous hearthd's proxies that no proxy of the same key took: the flows
    /// conntrack still sends there must not reach another port's proxy, so no new proxy
    /// takes them.
    avoid: BTreeSet<(Protocol, u16)>,
}

impl Hairpins {
    /// No proxy.
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// Records `proxy`; one it replaces is retired (the kernel may still lead guests to it).
    fn insert(&mut self, proxy: Proxy) {
        if let Some(old) = self.by_mapping.insert(proxy.element.mapping, proxy) {
            if old != proxy {
                self.retired.push(old);
            }
        }
    }

    /// Whether a proxy listens on `port` of `protocol`.
    fn holds(&self, protocol: Protocol, port: u16) -> bool {
        self.by_mapping
            .values()
            .any(|p| p.element.mapping.protocol == protocol && p.element.proxy.port() == port)
    }

    /// Every proxy's map element.
    fn elements(&self) -> Vec<HairpinElement> {
        self.by_mapping.values().map(|p| p.element).collect()
    }
}

/// The map element of every published port (for `Reconcile`).
pub(super) fn all_elements(table: &PublishTable) -> Vec<PublishElement> {
    table.all().map(PublishedPort::element).collect()
}

impl PublishedPort {
    /// Its element of hearth's publish maps.
    fn element(&self) -> PublishElement {
        PublishElement {
            mapping: self.mapping,
            guest_ip: self.guest_ip,
        }
    }
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

/// The ports the VMs of a restarted hearthd hold (from its store), given before `Reconcile`:
/// they become the actor's table, so the publish table `Reconcile` writes holds them from the
/// start and a published port never goes missing across a restart (the `adopted` hooks that
/// publish them again then find them there). Changes nothing on the host; ports whose guest
/// address is outside the subnet are left out.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SeedPublished {
    /// The ports, with their VMs and guest addresses.
    pub ports: Vec<PublishedPort>,
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
            .holders((m.protocol, m.host_port))
            .iter()
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
            .holders((m.protocol, m.host_port))
            .iter()
            .any(|p| p.vm == vm && p.mapping == *m);
        if mine {
            return Ok(None);
        }
        let mut probe = self.probe(m)?;
        // The socket may be one of hearth's own hairpin proxies, on the gateway and a port
        // the kernel chose. It stands in no one's way (guests reach it only through its own
        // translation, which a published port's does not change): only other sockets count.
        if probe == PortProbe::Bound
            && m.host_addr.is_none_or(|a| a == self.config.gateway)
            && self.hairpins.holds(m.protocol, m.host_port)
        {
            probe = match m.host_addr {
                Some(_) => PortProbe::Free,
                None => self
                    .firewall
                    .probe_port_beside(m.protocol, m.host_port, self.config.gateway)
                    .map_err(step(format!("probe host port {m}")))?,
            };
        }
        match probe {
            PortProbe::Free => Ok(None),
            PortProbe::Bound => Ok(Some("a socket already bound on the host".into())),
            PortProbe::NotLocal => Err(NatError::AddressNotLocal {
                mapping: m.to_string(),
                addr: m.host_addr.unwrap_or(Ipv4Addr::UNSPECIFIED),
            }),
        }
    }

    fn probe(&mut self, m: &PortMapping) -> Result<PortProbe, NatError> {
        self.firewall
            .probe_port(m.protocol, m.host_addr, m.host_port)
            .map_err(step(format!("probe host port {m}")))
    }

    /// The hairpin proxy a published port needs: none for a port on a loopback address,
    /// which guests cannot reach.
    fn hairpin_spec(&self, port: &PublishedPort) -> Option<HairpinSpec> {
        if port.mapping.host_addr.is_some_and(|a| a.is_loopback()) {
            return None;
        }
        Some(HairpinSpec {
            protocol: port.mapping.protocol,
            bind: self.config.gateway,
            target: SocketAddrV4::new(port.guest_ip, port.mapping.guest_port),
            peers: self.config.cidr.trunc(),
            limits: HairpinLimits::default(),
        })
    }

    /// Starts the proxy of `spec` for `mapping`: on the port a previous hearthd's proxy of the
    /// same key had if it can, else on one the kernel chooses that no previous proxy had.
    fn open_proxy(&mut self, mapping: PortMapping, spec: &HairpinSpec) -> Result<Proxy, NatError> {
        let key = (mapping.protocol, mapping.host_addr, mapping.host_port);
        let proxy = |port| Proxy {
            element: HairpinElement {
                mapping,
                proxy: SocketAddrV4::new(spec.bind, port),
            },
            target: spec.target,
        };
        if let Some(port) = self.hairpins.earlier.remove(&key) {
            match self.firewall.open_hairpin(spec, port) {
                Ok(port) => {
                    self.hairpins.avoid.remove(&(mapping.protocol, port));
                    return Ok(proxy(port));
                }
                Err(e) => {
                    debug!(self.log, "a hairpin proxy's earlier port is taken"; "mapping" => %mapping, "port" => port, "error" => %e);
                }
            }
        }
        // A port to avoid is held aside (so the kernel hands out another) and let go after.
        // After eight in a row the ninth is kept anyway, logged: the avoided ports are the
        // previous hearthd's few, so that means the kernel has little else to give.
        let mut set_aside = Vec::new();
        let opened = loop {
            match self.firewall.open_hairpin(spec, 0) {
                Ok(port) if self.hairpins.avoid.contains(&(mapping.protocol, port)) => {
                    if set_aside.len() < 8 {
                        set_aside.push(port);
                        continue;
                    }
                    warn!(self.log, "a hairpin proxy took a previous proxy's port"; "mapping" => %mapping, "port" => port);
                    break Ok(port);
                }
                other => break other,
            }
        };
        for port in set_aside {
            self.firewall.close_hairpin(mapping.protocol, port);
        }
        let port = opened.map_err(step(format!("start the hairpin proxy of {mapping}")))?;
        Ok(proxy(port))
    }

    /// Reads the ports of a previous hearthd's proxies from the kernel's publish table, once
    /// (before the first `Reconcile` rewrites it). A table that cannot be read is logged: its
    /// ports are then not kept.
    pub(super) fn read_earlier_hairpins(&mut self) {
        if std::mem::replace(&mut self.hairpins.read_earlier, true) {
            return;
        }
        let listed = match self.firewall.list_nft(&format!(
            "table ip {}",
            crate::host::firewall::nft_publish::TABLE
        )) {
            Ok(json) => json
                .map(|j| crate::host::firewall::nft_publish::parse_hairpins(&j))
                .unwrap_or_default(),
            Err(e) => {
                warn!(self.log, "cannot read the previous hairpin proxies' ports"; "error" => %e);
                Vec::new()
            }
        };
        for (key, port) in listed {
            self.hairpins.earlier.insert(key, port);
            self.hairpins.avoid.insert((key.0, port));
        }
    }

    /// Starts the proxies `ports` need: all of them or none.
    fn open_proxies(&mut self, ports: &[PublishedPort]) -> Result<Vec<Proxy>, NatError> {
        let mut opened = Vec::new();
        for port in ports {
            let Some(spec) = self.hairpin_spec(port) else {
                continue;
            };
            match self.open_proxy(port.mapping, &spec) {
                Ok(proxy) => opened.push(proxy),
                Err(e) => {
                    self.close_proxies(&opened);
                    return Err(e);
                }
            }
        }
        Ok(opened)
    }

    fn close_proxies(&mut self, proxies: &[Proxy]) {
        for p in proxies {
            self.firewall
                .close_hairpin(p.element.mapping.protocol, p.element.proxy.port());
        }
    }

    /// Stops every hairpin proxy (teardown).
    pub(super) fn close_hairpins(&mut self) {
        let all: Vec<Proxy> = self.hairpins.by_mapping.values().copied().collect();
        self.close_proxies(&all);
        self.hairpins.by_mapping.clear();
        self.close_retired();
    }

    /// For `Reconcile`: starts a proxy for every published port that needs one and has none,
    /// retires the proxies no port needs any more, and answers the hairpin maps' elements to
    /// write. Retired proxies are stopped only once the table without them is written
    /// ([`NatActor::close_retired`]): until then the kernel still sends guests to them, and a
    /// port of theirs must not be handed to another proxy. A proxy that cannot start is logged
    /// and left out (the port still answers from outside and from the host).
    pub(super) fn sync_hairpins(&mut self) -> Vec<HairpinElement> {
        let wanted: BTreeMap<PortMapping, HairpinSpec> = self
            .published
            .all()
            .filter_map(|p| Some((p.mapping, self.hairpin_spec(p)?)))
            .collect();
        let stale: Vec<Proxy> = self
            .hairpins
            .by_mapping
            .values()
            .filter(|p| {
                wanted
                    .get(&p.element.mapping)
                    .is_none_or(|spec| spec.target != p.target)
            })
            .copied()
            .collect();
        for p in stale {
            self.hairpins.by_mapping.remove(&p.element.mapping);
            self.hairpins.retired.push(p);
        }
        for (mapping, spec) in wanted {
            if self.hairpins.by_mapping.contains_key(&mapping) {
                continue;
            }
            match self.open_proxy(mapping, &spec) {
                Ok(proxy) => self.hairpins.insert(proxy),
                Err(e) => {
                    warn!(self.log, "guests will not reach a published port through the host"; "mapping" => %mapping, "error" => %e);
                }
            }
        }
        self.hairpins.elements()
    }

    /// Stops the retired proxies, once a table without them is written.
    pub(super) fn close_retired(&mut self) {
        let retired = std::mem::take(&mut self.hairpins.retired);
        self.close_proxies(&retired);
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
            let held = self.published.holders((m.protocol, m.host_port));
            let same = held.iter().find(|p| p.vm == msg.vm && p.mapping == *m);
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
        let added: Vec<PublishedPort> = added
            .into_iter()
            .map(|mapping| PublishedPort {
                vm: msg.vm.clone(),
                guest_ip: msg.guest_ip,
                mapping,
            })
            .collect();
        let proxies = self.open_proxies(&added)?;
        let changes: Vec<PublishChange> = added
            .iter()
            .map(|p| PublishChange::Add(p.element()))
            .chain(proxies.iter().map(|p| PublishChange::AddHairpin(p.element)))
            .collect();
        if let Err(e) = self.firewall.update_published(&changes) {
            self.close_proxies(&proxies);
            return Err(step(format!("publish ports of VM {}", msg.vm))(e));
        }
        for port in added {
            self.published.insert(port);
        }
        for proxy in proxies {
            self.hairpins.insert(proxy);
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
            .of_vm(&msg.vm)
            .filter(|p| wanted(p))
            .cloned()
            .collect();
        if going.is_empty() {
            return Ok(());
        }
        let proxies: Vec<Proxy> = going
            .iter()
            .filter_map(|p| self.hairpins.by_mapping.get(&p.mapping).copied())
            .collect();
        if self.ready {
            let changes: Vec<PublishChange> = going
                .iter()
                .map(|p| PublishChange::Remove(p.element()))
                .chain(
                    proxies
                        .iter()
                        .map(|p| PublishChange::RemoveHairpin(p.element)),
                )
                .collect();
            self.firewall
                .update_published(&changes)
                .map_err(step(format!("unpublish ports of VM {}", msg.vm)))?;
        }
        self.published.remove(&msg.vm, wanted);
        // After the translations to them are gone: their connections end.
        self.close_proxies(&proxies);
        for p in &proxies {
            self.hairpins.by_mapping.remove(&p.element.mapping);
        }
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

impl Handler<SeedPublished> for NatActor {
    type Result = ();

    fn handle(&mut self, msg: SeedPublished, _: &mut Context<Self>) -> Self::Result {
        self.published.clear();
        for port in msg.ports {
            if self.config.check_guest(port.guest_ip).is_ok() {
                self.published.insert(port);
            }
        }
    }
}

impl Handler<ListPublished> for NatActor {
    type Result = Vec<PublishedPort>;

    fn handle(&mut self, _: ListPublished, _: &mut Context<Self>) -> Self::Result {
        self.published.all().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use actix::{Actor, Addr};

    use super::*;
    use crate::host::firewall::fake::{FakeCall, FakeFirewall, FakeOp};
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

    /// The error `msg` is refused with.
    async fn refused(nat: &Addr<NatActor>, msg: PublishPorts) -> NatError {
        nat.send(msg).await.unwrap().unwrap_err()
    }

    fn add(mapping: &str, last: u8) -> PublishChange {
        PublishChange::Add(PublishElement {
            mapping: m(mapping),
            guest_ip: ip(last),
        })
    }

    /// A hairpin element of `mapping` to the proxy on the gateway's `port`.
    fn hairpin(mapping: &str, port: u16) -> HairpinElement {
        HairpinElement {
            mapping: m(mapping),
            proxy: SocketAddrV4::new(ip(1), port),
        }
    }

    /// The running fake proxies: (protocol, port) and target.
    fn proxies(fw: &FakeFirewall) -> Vec<((Protocol, u16), SocketAddrV4)> {
        fw.state()
            .hairpins
            .iter()
            .map(|(k, spec)| (*k, spec.target))
            .collect()
    }

    #[actix::test]
    async fn publishing_adds_one_map_element_per_port_and_is_idempotent() {
        let (nat, fw) = actor().await;
        let restores = fw.restored_rules().len();
        nat.send(publish("web", 5, &["8080:80", "127.0.0.1:5353:53/udp"]))
            .await
            .unwrap()
            .unwrap();
        // The port guests can reach through the host gets a hairpin proxy (the loopback one
        // does not), its translation in the same transaction.
        assert_eq!(
            fw.publish_updates(),
            [vec![
                add("8080:80", 5),
                add("127.0.0.1:5353:53/udp", 5),
                PublishChange::AddHairpin(hairpin("8080:80", 40000)),
            ]],
            "one transaction for both ports"
        );
        let spec = fw.state().hairpins[&(Protocol::Tcp, 40000)];
        assert_eq!(
            (spec.bind, spec.target, spec.peers),
            (
                ip(1),
                SocketAddrV4::new(ip(5), 80),
                "172.31.240.0/24".parse().unwrap()
            )
        );
        assert_eq!(fw.restored_rules().len(), restores, "no iptables-restore");
        // Again: nothing new on the host.
        nat.send(publish("web", 5, &["8080:80"]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(fw.publish_updates().len(), 1);
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
                .any(|c| matches!(c, FakeCall::UpdatePublished(_))),
            "a refused publish changes no rule"
        );
        // Another protocol or another address of the same port is free.
        nat.send(publish("db", 6, &["8080:80/udp", "10.0.0.1:53:53"]))
            .await
            .unwrap()
            .unwrap();
    }

    #[actix::test]
    async fn unpublish_removes_elements_and_reconcile_rewrites_the_table_and_teardown_drops_it() {
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
        let remove = |mapping: &str, last: u8| {
            PublishChange::Remove(PublishElement {
                mapping: m(mapping),
                guest_ip: ip(last),
            })
        };
        // web's two ports and db's: proxies 40000-40002.
        assert_eq!(
            fw.publish_updates().last().unwrap(),
            &[
                remove("8443:443", 5),
                PublishChange::RemoveHairpin(hairpin("8443:443", 40001))
            ]
        );
        let last = FakeCall::UpdatePublished(fw.publish_updates().last().unwrap().clone());
        let closed = FakeCall::CloseHairpin(Protocol::Tcp, 40001);
        assert!(
            fw.state().calls.ends_with(&[last, closed]),
            "the proxy stops after its translation is gone"
        );
        // Reconcile writes the publish table whole, with what is still published, and no
        // iptables rule translates or jumps to the old chain.
        nat.send(Reconcile { desired: vec![] })
            .await
            .unwrap()
            .unwrap();
        // Reconcile applies the bridge, publish and egress tables: the publish one is checked.
        let full = fw
            .applied_nft()
            .into_iter()
            .rev()
            .find(|t| t.contains("table ip hearth-publish {\n"))
            .expect("Reconcile writes the publish table");
        assert!(full.contains("tcp . 8080 : 172.31.240.5 . 80"), "{full}");
        assert!(full.contains("tcp . 5432 : 172.31.240.6 . 5432"), "{full}");
        assert!(!full.contains("8443"), "{full}");
        // The running proxies are kept, and written.
        assert!(
            full.contains("tcp . 5432 : 172.31.240.1 . 40002, tcp . 8080 : 172.31.240.1 . 40000"),
            "{full}"
        );
        assert_eq!(proxies(&fw).len(), 2);
        let rules = fw.restored_rules().last().unwrap().clone();
        assert!(rules.contains(":HEARTH-PUBLISH - [0:0]\n"), "{rules}");
        assert!(!rules.contains("-j HEARTH-PUBLISH"), "{rules}");
        assert!(!rules.contains("DNAT --to"), "{rules}");
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
        // A withdrawal touches only the VM's own elements.
        assert_eq!(
            fw.publish_updates().last().unwrap(),
            &[
                remove("8080:80", 5),
                PublishChange::RemoveHairpin(hairpin("8080:80", 40000))
            ]
        );
        nat.send(Teardown).await.unwrap().unwrap();
        assert!(nat.send(ListPublished).await.unwrap().is_empty());
        assert!(proxies(&fw).is_empty(), "teardown stops every proxy");
        let applied = fw.applied_nft();
        assert!(
            applied
                .iter()
                .any(|t| t == "table ip hearth-publish {}\ndelete table ip hearth-publish\n"),
            "{applied:?}"
        );
    }

    #[test]
    fn the_table_withdraws_one_vms_ports_and_keeps_others_on_the_same_port() {
        let port = |vm: &str, mapping: &str| PublishedPort {
            vm: vm.into(),
            guest_ip: ip(5),
            mapping: m(mapping),
        };
        let mut table = PublishTable::new();
        for p in [
            port("a", "10.0.0.1:8080:80"),
            port("b", "10.0.0.2:8080:80"),
            port("a", "10.0.0.3:8080:81"),
            port("a", "9000:90"),
        ] {
            table.insert(p);
        }
        let a = |t: &PublishTable| {
            t.of_vm("a")
                .map(|p| p.mapping.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(a(&table).len(), 3);
        // One of a's two on port 8080: the key stays a's, b's port stays.
        table.remove("a", |p| p.mapping == m("10.0.0.1:8080:80"));
        assert_eq!(a(&table), ["10.0.0.3:8080:81/tcp", "9000:90/tcp"]);
        assert_eq!(table.holders((Protocol::Tcp, 8080)).len(), 2);
        table.remove("a", |_| true);
        assert!(a(&table).is_empty() && !table.by_vm.contains_key("a"));
        assert!(table.holders((Protocol::Tcp, 9000)).is_empty());
        assert_eq!(
            table.all().map(|p| p.vm.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        // Removing what is not there changes nothing.
        table.remove("zz", |_| true);
        assert_eq!(table.all().count(), 1);
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

    /// After a restart of hearthd: the ports seeded from the store are in the very table
    /// `Reconcile` writes (never a table without them), the `adopted` hook's publish of the
    /// same port changes nothing, and another VM is refused the port at once.
    #[actix::test]
    async fn seeded_ports_are_written_by_the_reconcile_itself() {
        let fw = FakeFirewall::new();
        fw.add_interface("eth0");
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let nat = NatActor::new(config(), Box::new(fw.clone()), log)
            .unwrap()
            .start();
        let seeded = PublishedPort {
            vm: "web".into(),
            guest_ip: ip(5),
            mapping: m("8080:80"),
        };
        let outside = PublishedPort {
            vm: "odd".into(),
            guest_ip: Ipv4Addr::new(10, 9, 9, 9),
            mapping: m("9090:90"),
        };
        nat.send(SeedPublished {
            ports: vec![seeded.clone(), outside],
        })
        .await
        .unwrap();
        assert!(
            fw.state().calls.is_empty(),
            "seeding changes nothing on the host"
        );
        nat.send(Reconcile { desired: vec![] })
            .await
            .unwrap()
            .unwrap();
        let tables: Vec<String> = fw
            .state()
            .calls
            .iter()
            .filter_map(|c| match c {
                FakeCall::ApplyNft(t) if t.contains("hearth-publish") => Some(t.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(tables.len(), 1, "{tables:?}");
        assert!(tables[0].contains("172.31.240.5"), "{}", tables[0]);
        assert!(!tables[0].contains("10.9.9.9"), "{}", tables[0]);
        assert_eq!(nat.send(ListPublished).await.unwrap(), vec![seeded]);

        let before = fw.state().calls.len();
        nat.send(publish("web", 5, &["8080:80"]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(fw.state().calls.len(), before, "already there");
        let err = refused(&nat, publish("db", 6, &["8080:80"])).await;
        assert!(err.to_string().contains("\"web\""), "{err}");
    }

    #[actix::test]
    async fn the_bridge_routes_loopback_only_after_the_guarding_table_and_until_teardown() {
        let fw = FakeFirewall::new();
        fw.add_interface("eth0");
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let nat = NatActor::new(config(), Box::new(fw.clone()), log)
            .unwrap()
            .start();
        // No bridge yet: nothing to set, and the reconcile still succeeds.
        nat.send(Reconcile { desired: vec![] })
            .await
            .unwrap()
            .unwrap();
        assert!(fw.state().route_localnet.is_empty());
        fw.add_interface("hearth0");
        nat.send(Reconcile { desired: vec![] })
            .await
            .unwrap()
            .unwrap();
        let calls = fw.state().calls.clone();
        let on = calls
            .iter()
            .position(|c| *c == FakeCall::SetRouteLocalnet("hearth0".into(), true))
            .expect("route_localnet set");
        let guard = calls
            .iter()
            .position(
                |c| matches!(c, FakeCall::ApplyNft(t) if t.contains("ip daddr 127.0.0.0/8 drop")),
            )
            .expect("the publish table applied");
        assert!(guard < on, "{calls:?}");
        // A failure to set it fails the reconcile, naming the step.
        fw.fail(FakeOp::RouteLocalnet, "read-only /proc");
        let err = nat
            .send(Reconcile { desired: vec![] })
            .await
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("route_localnet"), "{err}");
        fw.state().failures.clear();

        nat.send(Teardown).await.unwrap().unwrap();
        assert!(fw.state().route_localnet.is_empty());
    }

    #[actix::test]
    async fn a_refused_transaction_publishes_nothing_and_a_failed_withdrawal_keeps_the_port() {
        let (nat, fw) = actor().await;
        fw.fail(FakeOp::UpdatePublished, "kernel says no");
        let err = refused(&nat, publish("web", 5, &["8080:80"])).await;
        assert!(err.to_string().contains("publish ports of VM web"), "{err}");
        assert!(nat.send(ListPublished).await.unwrap().is_empty());
        fw.heal();
        nat.send(publish("web", 5, &["8080:80"]))
            .await
            .unwrap()
            .unwrap();
        fw.fail(FakeOp::UpdatePublished, "kernel says no");
        let unpublish = UnpublishPorts {
            vm: "web".into(),
            mappings: None,
        };
        assert!(nat.send(unpublish).await.unwrap().is_err());
        // Still published (the kernel still has it), so still refused to others.
        assert_eq!(nat.send(ListPublished).await.unwrap().len(), 1);
        fw.heal();
        let err = refused(&nat, publish("db", 6, &["8080:80"])).await;
        assert!(matches!(err, NatError::PortConflict { .. }), "{err}");
    }

    #[actix::test]
    async fn bad_mappings_and_a_guest_outside_the_subnet_are_refused() {
        let (nat, _fw) = actor().await;
        let err = refused(&nat, publish("web", 5, &["8080:80", "8080:81"])).await;
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

    #[actix::test]
    async fn a_proxy_that_cannot_start_or_a_refused_transaction_leaves_no_proxy() {
        let (nat, fw) = actor().await;
        fw.fail(FakeOp::OpenHairpin, "no descriptors");
        let err = refused(&nat, publish("web", 5, &["8080:80"])).await;
        assert!(
            err.to_string().contains("hairpin proxy of 8080:80"),
            "{err}"
        );
        assert!(fw.publish_updates().is_empty(), "nothing translated");
        fw.heal();
        // The second proxy fails: the first one opened is stopped again.
        fw.fail(FakeOp::UpdatePublished, "kernel says no");
        let err = refused(&nat, publish("web", 5, &["8080:80", "8081:81/udp"])).await;
        assert!(err.to_string().contains("publish ports of VM web"), "{err}");
        assert!(proxies(&fw).is_empty(), "{:?}", fw.state().calls);
        assert!(nat.send(ListPublished).await.unwrap().is_empty());
    }

    /// After a restart: the seeded ports get new proxies at the reconcile, in the very table it
    /// writes; a reconcile without the port (it was unpublished while hearthd was down)
    /// stops the proxy, once the table without it is written.
    #[actix::test]
    async fn reconcile_starts_the_proxies_of_seeded_ports_and_stops_stale_ones() {
        let fw = FakeFirewall::new();
        fw.add_interface("eth0");
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let nat = NatActor::new(config(), Box::new(fw.clone()), log)
            .unwrap()
            .start();
        let seeded = |mapping: &str| PublishedPort {
            vm: "web".into(),
            guest_ip: ip(5),
            mapping: m(mapping),
        };
        nat.send(SeedPublished {
            ports: vec![seeded("8080:80"), seeded("127.0.0.1:9090:90")],
        })
        .await
        .unwrap();
        nat.send(Reconcile { desired: vec![] })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            proxies(&fw),
            [((Protocol::Tcp, 40000), SocketAddrV4::new(ip(5), 80))]
        );
        let table = fw
            .applied_nft()
            .into_iter()
            .rev()
            .find(|t| t.contains("hairpin_any"))
            .unwrap();
        assert!(
            table.contains("tcp . 8080 : 172.31.240.1 . 40000"),
            "{table}"
        );
        // Again: the same proxy.
        nat.send(Reconcile { desired: vec![] })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(proxies(&fw).len(), 1);
        nat.send(SeedPublished { ports: vec![] }).await.unwrap();
        // The table cannot be written: the kernel still leads guests to the proxy, which
        // keeps running (and its port stays its own).
        fw.state().refuse_nft_with = Some("table ip hearth-publish {\n".into());
        let err = nat
            .send(Reconcile { desired: vec![] })
            .await
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("publish table"), "{err}");
        assert_eq!(proxies(&fw).len(), 1);
        fw.state().refuse_nft_with = None;
        nat.send(Reconcile { desired: vec![] })
            .await
            .unwrap()
            .unwrap();
        assert!(proxies(&fw).is_empty());
        assert!(fw
            .state()
            .calls
            .contains(&FakeCall::CloseHairpin(Protocol::Tcp, 40000)));
    }

    /// A port the kernel gave one of hearth's proxies (on the gateway) is still free for a VM
    /// to publish, on every address or on the gateway: the proxy stays, and only other
    /// programs' sockets count.
    #[actix::test]
    async fn a_port_a_hairpin_proxy_holds_is_still_free_to_publish() {
        let (nat, fw) = actor().await;
        nat.send(publish("web", 5, &["8080:80"]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(proxies(&fw)[0].0, (Protocol::Tcp, 40000));
        nat.send(publish(
            "db",
            6,
            &["40000:4000", "172.31.240.1:40000:4001/udp"],
        ))
        .await
        .unwrap()
        .unwrap();
        let listed = nat.send(ListPublished).await.unwrap();
        assert_eq!(listed.len(), 3, "{listed:?}");
        assert!(
            proxies(&fw).contains(&((Protocol::Tcp, 40000), SocketAddrV4::new(ip(5), 80))),
            "the proxy stays where it was"
        );
        // Another program's socket on the port still refuses it.
        fw.state().bound_ports.insert((Protocol::Tcp, 40001));
        let err = refused(&nat, publish("db", 6, &["40001:4002"])).await;
        assert!(
            matches!(&err, NatError::PortConflict { owner, .. } if owner.contains("socket")),
            "{err}"
        );
    }

    /// After a restart, a port's new proxy takes the port its proxy had before (UDP flows
    /// conntrack still sends there go on to the same port), and no other port's proxy takes a
    /// previous proxy's port (those flows must not reach another VM).
    #[actix::test]
    async fn a_restarted_actor_keeps_earlier_proxy_ports_and_gives_none_to_another_port() {
        let fw = FakeFirewall::new();
        fw.add_interface("eth0");
        let listing = r#"{"nftables": [{"map": {"family": "ip", "name": "hairpin_any", "table": "hearth-publish", "elem": [
            [{"concat": ["tcp", 8080]}, {"concat": ["172.31.240.1", 41000]}],
            [{"concat": ["tcp", 9090]}, {"concat": ["172.31.240.1", 41001]}]]}}]}"#;
        fw.state()
            .nft_listings
            .insert("table ip hearth-publish".into(), listing.into());
        // The kernel would hand the old 9090 proxy's port to the next proxy asking for any.
        fw.state().next_hairpin_ports.extend([41001, 45000]);
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let nat = NatActor::new(config(), Box::new(fw.clone()), log)
            .unwrap()
            .start();
        nat.send(SeedPublished {
            ports: vec![PublishedPort {
                vm: "web".into(),
                guest_ip: ip(5),
                mapping: m("8080:80"),
            }],
        })
        .await
        .unwrap();
        nat.send(Reconcile { desired: vec![] })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            proxies(&fw),
            [((Protocol::Tcp, 41000), SocketAddrV4::new(ip(5), 80))]
        );
        nat.send(publish("db", 6, &["7070:70"]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            proxies(&fw),
            [
                ((Protocol::Tcp, 41000), SocketAddrV4::new(ip(5), 80)),
                ((Protocol::Tcp, 45000), SocketAddrV4::new(ip(6), 70)),
            ]
        );
        assert!(fw
            .state()
            .calls
            .contains(&FakeCall::CloseHairpin(Protocol::Tcp, 41001)));
    }
}
