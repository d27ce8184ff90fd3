//! An in-memory [`Firewall`] for unit tests: records every call, keeps set membership (it
//! understands the `ipset restore` lines hearth writes, and the bridge table's lease elements
//! of the `nft` texts hearth writes), serves canned `iptables -S` listings, and fails chosen
//! operations on demand. Clones share one state, so a test keeps a clone to
//! inspect what the actor did.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Firewall, FirewallError, LeaseChange, PortLease, PublishChange, SetEntry, Table};
use crate::host::hairpin::HairpinSpec;
use crate::mac::MacAddr;

/// The operations of the trait, to choose which one fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FakeOp {
    /// [`Firewall::interface_exists`].
    InterfaceExists,
    /// [`Firewall::ip_forward`] and [`Firewall::set_ip_forward`].
    IpForward,
    /// [`Firewall::set_route_localnet`].
    RouteLocalnet,
    /// [`Firewall::list_rules`].
    ListRules,
    /// [`Firewall::restore_rules`].
    RestoreRules,
    /// [`Firewall::list_sets`].
    ListSets,
    /// [`Firewall::restore_sets`].
    RestoreSets,
    /// [`Firewall::add_to_set`].
    AddToSet,
    /// [`Firewall::remove_from_set`].
    RemoveFromSet,
    /// [`Firewall::destroy_set`].
    DestroySet,
    /// [`Firewall::apply_nft`].
    ApplyNft,
    /// [`Firewall::update_port_leases`].
    UpdatePortLeases,
    /// [`Firewall::update_published`].
    UpdatePublished,
    /// [`Firewall::update_egress`].
    UpdateEgress,
    /// [`Firewall::list_nft`].
    ListNft,
    /// [`Firewall::open_hairpin`].
    OpenHairpin,
}

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeCall {
    /// `interface_exists(name)`.
    InterfaceExists(String),
    /// `set_ip_forward(on)`.
    SetIpForward(bool),
    /// `set_route_localnet(interface, on)`.
    SetRouteLocalnet(String, bool),
    /// `list_rules(table)`.
    ListRules(Table),
    /// `restore_rules(text)`.
    RestoreRules(String),
    /// `list_sets()`.
    ListSets,
    /// `restore_sets(text)`.
    RestoreSets(String),
    /// `add_to_set(set, entry)`.
    AddToSet(String, SetEntry),
    /// `remove_from_set(set, entry)`.
    RemoveFromSet(String, SetEntry),
    /// `destroy_set(set)`.
    DestroySet(String),
    /// `apply_nft(text)`.
    ApplyNft(String),
    /// `update_egress(table, changes)`.
    UpdateEgress(String, Vec<super::nft_egress::EgressChange>),
    /// `list_nft(object)`.
    ListNft(String),
    /// `update_port_leases(table, set, changes)`.
    UpdatePortLeases {
        /// The bridge-family table.
        table: String,
        /// The set.
        set: String,
        /// The changes, in order.
        changes: Vec<LeaseChange>,
    },
    /// `update_published(changes)`.
    UpdatePublished(Vec<PublishChange>),
    /// `open_hairpin(spec, port)`.
    OpenHairpin(HairpinSpec, u16),
    /// `close_hairpin(protocol, port)`.
    CloseHairpin(hearth_proto::api_publish::Protocol, u16),
}

/// What the fake holds.
#[derive(Debug, Default)]
pub struct FakeState {
    /// Every call, in order (also the failed ones).
    pub calls: Vec<FakeCall>,
    /// Interfaces that exist.
    pub interfaces: HashSet<String>,
    /// IPv4 forwarding.
    pub ip_forward: bool,
    /// Interfaces with `route_localnet` on.
    pub route_localnet: BTreeSet<String>,
    /// What `list_rules` returns per table (empty when unset).
    pub listings: HashMap<Table, String>,
    /// Sets and their members.
    pub sets: BTreeMap<String, BTreeSet<SetEntry>>,
    /// The elements of the bridge-family nftables sets, by (table, set).
    pub port_leases: BTreeMap<(String, String), BTreeSet<PortLease>>,
    /// The elements of the egress table's sets, by set name (timeouts not modelled).
    pub egress: BTreeMap<String, BTreeSet<super::nft_egress::EgressElement>>,
    /// Operations that fail, with the error text they report.
    pub failures: HashMap<FakeOp, String>,
    /// Host ports a socket other than a hairpin proxy holds, for `probe_port` (any address).
    pub bound_ports: BTreeSet<(hearth_proto::api_publish::Protocol, u16)>,
    /// Running hairpin proxies by (protocol, port); ports are handed out from 40000 up.
    pub hairpins: BTreeMap<(hearth_proto::api_publish::Protocol, u16), HairpinSpec>,
    /// `apply_nft` fails for a text containing this (to fail one table of several).
    pub refuse_nft_with: Option<String>,
    /// Ports the fake kernel hands out next to hairpin proxies asking for any.
    pub next_hairpin_ports: std::collections::VecDeque<u16>,
    /// What `list_nft` answers, by object (`None` for others, as for a missing object).
    pub nft_listings: BTreeMap<String, String>,
    /// The last hairpin port handed out (0: none yet).
    pub last_hairpin_port: u16,
}

/// The fake backend; clones share state.
#[derive(Debug, Clone, Default)]
pub struct FakeFirewall {
    state: Arc<Mutex<FakeState>>,
}

impl FakeFirewall {
    /// An empty fake: no interfaces, no sets, forwarding off.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Locks and returns the shared state, to arrange or inspect it.
    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        // A panic while holding the lock can only come from a failing test; keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes an interface exist.
    pub fn add_interface(&self, name: &str) {
        self.state().interfaces.insert(name.to_owned());
    }

    /// Makes `op` fail with `message` until [`FakeFirewall::heal`] is called.
    pub fn fail(&self, op: FakeOp, message: &str) {
        self.state().failures.insert(op, message.to_owned());
    }

    /// Makes every operation succeed again.
    pub fn heal(&self) {
        self.state().failures.clear();
    }

    /// The members of a set, or `None` when it does not exist.
    #[must_use]
    pub fn set(&self, name: &str) -> Option<BTreeSet<SetEntry>> {
        self.state().sets.get(name).cloned()
    }

    /// The texts given to `apply_nft`, in order.
    #[must_use]
    pub fn applied_nft(&self) -> Vec<String> {
        self.state()
            .calls
            .iter()
            .filter_map(|c| match c {
                FakeCall::ApplyNft(t) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }

    /// The elements of a bridge-family nftables set, or `None` when it does not exist.
    #[must_use]
    pub fn port_leases(&self, table: &str, set: &str) -> Option<BTreeSet<PortLease>> {
        self.state()
            .port_leases
            .get(&(table.to_owned(), set.to_owned()))
            .cloned()
    }

    /// The change lists given to `update_published`, in order.
    #[must_use]
    pub fn publish_updates(&self) -> Vec<Vec<PublishChange>> {
        self.state()
            .calls
            .iter()
            .filter_map(|c| match c {
                FakeCall::UpdatePublished(changes) => Some(changes.clone()),
                _ => None,
            })
            .collect()
    }

    /// The change lists given to `update_port_leases`, in order.
    #[must_use]
    pub fn lease_updates(&self) -> Vec<Vec<LeaseChange>> {
        self.state()
            .calls
            .iter()
            .filter_map(|c| match c {
                FakeCall::UpdatePortLeases { changes, .. } => Some(changes.clone()),
                _ => None,
            })
            .collect()
    }

    /// The texts given to `restore_rules`, in order.
    #[must_use]
    pub fn restored_rules(&self) -> Vec<String> {
        self.state()
            .calls
            .iter()
            .filter_map(|c| match c {
                FakeCall::RestoreRules(t) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }

    /// How many calls were recorded.
    #[must_use]
    pub fn call_count(&self) -> usize {
        self.state().calls.len()
    }

    fn enter(
        &self,
        op: FakeOp,
        call: FakeCall,
    ) -> Result<MutexGuard<'_, FakeState>, FirewallError> {
        let mut state = self.state();
        state.calls.push(call);
        match state.failures.get(&op) {
            Some(message) => Err(FirewallError::Command {
                command: format!("fake {op:?}"),
                status: "exit status: 1".into(),
                stderr: message.clone(),
            }),
            None => Ok(state),
        }
    }
}

/// Parses an `ipset` entry: `ip` or `ip,mac`.
fn parse_entry(text: &str) -> Option<SetEntry> {
    match text.split_once(',') {
        None => text.parse::<Ipv4Addr>().ok().map(SetEntry::Ip),
        Some((ip, mac)) => Some(SetEntry::IpMac(
            ip.parse().ok()?,
            mac.parse::<MacAddr>().ok()?,
        )),
    }
}

/// Adds with the kernel's `-exist` semantics (an `ip,mac` entry replaces the IP's MAC).
fn add_entry(members: &mut BTreeSet<SetEntry>, entry: SetEntry) {
    if let SetEntry::IpMac(ip, _) = entry {
        members.retain(|e| e.ip() != ip);
    }
    members.insert(entry);
}

fn apply_set_line(state: &mut FakeState, line: &str) -> Result<(), String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let missing = |name: &str| format!("The set with the given name does not exist: {name}");
    match words.as_slice() {
        [] => Ok(()),
        ["create", name, ..] => {
            let exist = words.contains(&"-exist");
            if state.sets.contains_key(*name) && !exist {
                return Err(format!(
                    "Set cannot be created: set with the same name already exists: {name}"
                ));
            }
            state.sets.entry((*name).to_owned()).or_default();
            Ok(())
        }
        ["add", name, entry, ..] => {
            let entry = parse_entry(entry).ok_or_else(|| format!("Bad entry {entry}"))?;
            let members = state.sets.get_mut(*name).ok_or_else(|| missing(name))?;
            add_entry(members, entry);
            Ok(())
        }
        ["swap", a, b] => {
            let sa = state.sets.remove(*a).ok_or_else(|| missing(a))?;
            let Some(sb) = state.sets.remove(*b) else {
                state.sets.insert((*a).to_owned(), sa);
                return Err(missing(b));
            };
            state.sets.insert((*a).to_owned(), sb);
            state.sets.insert((*b).to_owned(), sa);
            Ok(())
        }
        ["destroy", name] => state
            .sets
            .remove(*name)
            .map(drop)
            .ok_or_else(|| missing(name)),
        ["flush", name] => {
            state
                .sets
                .get_mut(*name)
                .ok_or_else(|| missing(name))?
                .clear();
            Ok(())
        }
        _ => Err(format!("Unknown ipset line {line:?}")),
    }
}

/// Parses an element as `nft` writes it: `"<port>" . <mac> . <ip>`.
fn parse_port_lease(text: &str) -> Option<PortLease> {
    let mut parts = text.split(" . ");
    let port = parts.next()?.trim().strip_prefix('"')?.strip_suffix('"')?;
    let mac = parts.next()?.trim().parse().ok()?;
    let ip = parts.next()?.trim().parse().ok()?;
    Some(PortLease {
        port: port.to_owned(),
        mac,
        ip,
    })
}

/// Applies what the fake understands of an `nft -f` text: `delete table bridge T` drops T's
/// sets; `table bridge T {` ... `set S {` ... `elements = { .. }` declares S with those
/// elements (a set declared without elements is empty).
fn apply_nft_text(state: &mut FakeState, text: &str) {
    let mut table = None;
    let mut set = None;
    for line in text.lines().map(str::trim) {
        if let Some(t) = line.strip_prefix("delete table bridge ") {
            state.port_leases.retain(|(owner, _), _| owner != t.trim());
        } else if let Some(t) = line.strip_prefix("table bridge ") {
            table = t.strip_suffix('{').map(|t| t.trim().to_owned());
        } else if let (Some(t), Some(s)) = (&table, line.strip_prefix("set ")) {
            let key = (t.clone(), s.trim_end_matches('{').trim().to_owned());
            state.port_leases.insert(key.clone(), BTreeSet::new());
            set = Some(key);
        } else if let (Some(key), Some(list)) = (&set, line.strip_prefix("elements = {")) {
            let elements = list.trim_end_matches('}').split(", ");
            if let Some(members) = state.port_leases.get_mut(key) {
                members.extend(elements.filter_map(parse_port_lease));
            }
        }
    }
}

impl Firewall for FakeFirewall {
    fn update_egress(
        &mut self,
        table: &str,
        changes: &[super::nft_egress::EgressChange],
    ) -> Result<(), FirewallError> {
        let mut state = self.enter(
            FakeOp::UpdateEgress,
            FakeCall::UpdateEgress(table.into(), changes.to_vec()),
        )?;
        for change in changes {
            let members = state.egress.entry(change.set.to_owned()).or_default();
            match change.op {
                super::nft_egress::EgressOp::Add(_) => members.insert(change.element),
                super::nft_egress::EgressOp::Remove => members.remove(&change.element),
            };
        }
        Ok(())
    }

    fn list_nft(&mut self, object: &str) -> Result<Option<String>, FirewallError> {
        let state = self.enter(FakeOp::ListNft, FakeCall::ListNft(object.into()))?;
        Ok(state.nft_listings.get(object).cloned())
    }

    fn interface_exists(&mut self, name: &str) -> Result<bool, FirewallError> {
        let state = self.enter(
            FakeOp::InterfaceExists,
            FakeCall::InterfaceExists(name.into()),
        )?;
        Ok(state.interfaces.contains(name))
    }

    fn ip_forward(&mut self) -> Result<bool, FirewallError> {
        let state = self.state();
        if let Some(message) = state.failures.get(&FakeOp::IpForward) {
            return Err(FirewallError::Command {
                command: "fake IpForward".into(),
                status: "exit status: 1".into(),
                stderr: message.clone(),
            });
        }
        Ok(state.ip_forward)
    }

    fn set_ip_forward(&mut self, on: bool) -> Result<(), FirewallError> {
        let mut state = self.enter(FakeOp::IpForward, FakeCall::SetIpForward(on))?;
        state.ip_forward = on;
        Ok(())
    }

    fn set_route_localnet(&mut self, interface: &str, on: bool) -> Result<(), FirewallError> {
        let call = FakeCall::SetRouteLocalnet(interface.to_owned(), on);
        let mut state = self.enter(FakeOp::RouteLocalnet, call)?;
        if on {
            state.route_localnet.insert(interface.to_owned());
        } else {
            state.route_localnet.remove(interface);
        }
        Ok(())
    }

    fn list_rules(&mut self, table: Table) -> Result<String, FirewallError> {
        let state = self.enter(FakeOp::ListRules, FakeCall::ListRules(table))?;
        Ok(state.listings.get(&table).cloned().unwrap_or_default())
    }

    fn restore_rules(&mut self, text: &str) -> Result<(), FirewallError> {
        self.enter(FakeOp::RestoreRules, FakeCall::RestoreRules(text.into()))
            .map(drop)
    }

    fn list_sets(&mut self) -> Result<Vec<String>, FirewallError> {
        let state = self.enter(FakeOp::ListSets, FakeCall::ListSets)?;
        Ok(state.sets.keys().cloned().collect())
    }

    fn restore_sets(&mut self, text: &str) -> Result<(), FirewallError> {
        let mut state = self.enter(FakeOp::RestoreSets, FakeCall::RestoreSets(text.into()))?;
        // Like `ipset restore`, lines before a failing one stay applied.
        for (n, line) in text.lines().enumerate() {
            apply_set_line(&mut state, line).map_err(|e| FirewallError::Command {
                command: "fake ipset restore".into(),
                status: "exit status: 1".into(),
                stderr: format!("Error in line {}: {e}", n + 1),
            })?;
        }
        Ok(())
    }

    fn add_to_set(&mut self, set: &str, entry: SetEntry) -> Result<(), FirewallError> {
        let mut state = self.enter(FakeOp::AddToSet, FakeCall::AddToSet(set.into(), entry))?;
        let members = state
            .sets
            .get_mut(set)
            .ok_or_else(|| FirewallError::Ipset {
                op: format!("add {entry} to {set}"),
                message: "The set with the given name does not exist".into(),
            })?;
        add_entry(members, entry);
        Ok(())
    }

    fn remove_from_set(&mut self, set: &str, entry: SetEntry) -> Result<(), FirewallError> {
        let mut state = self.enter(
            FakeOp::RemoveFromSet,
            FakeCall::RemoveFromSet(set.into(), entry),
        )?;
        let members = state
            .sets
            .get_mut(set)
            .ok_or_else(|| FirewallError::Ipset {
                op: format!("del {entry} from {set}"),
                message: "The set with the given name does not exist".into(),
            })?;
        members.retain(|e| e.ip() != entry.ip());
        Ok(())
    }

    fn destroy_set(&mut self, set: &str) -> Result<(), FirewallError> {
        let mut state = self.enter(FakeOp::DestroySet, FakeCall::DestroySet(set.into()))?;
        state.sets.remove(set);
        Ok(())
    }

    fn probe_port(
        &mut self,
        protocol: hearth_proto::api_publish::Protocol,
        _addr: Option<std::net::Ipv4Addr>,
        port: u16,
    ) -> Result<super::PortProbe, FirewallError> {
        // Like a bind: the fake's own hairpin proxies hold their ports too.
        let state = self.state();
        Ok(
            if state.bound_ports.contains(&(protocol, port))
                || state.hairpins.contains_key(&(protocol, port))
            {
                super::PortProbe::Bound
            } else {
                super::PortProbe::Free
            },
        )
    }

    fn probe_port_beside(
        &mut self,
        protocol: hearth_proto::api_publish::Protocol,
        port: u16,
        _beside: std::net::Ipv4Addr,
    ) -> Result<super::PortProbe, FirewallError> {
        // The proxies stand on the gateway (`beside`); `bound_ports` are other programs'.
        Ok(if self.state().bound_ports.contains(&(protocol, port)) {
            super::PortProbe::Bound
        } else {
            super::PortProbe::Free
        })
    }

    fn apply_nft(&mut self, text: &str) -> Result<(), FirewallError> {
        let mut state = self.enter(FakeOp::ApplyNft, FakeCall::ApplyNft(text.into()))?;
        if let Some(needle) = state.refuse_nft_with.as_ref().filter(|n| text.contains(*n)) {
            return Err(FirewallError::Command {
                command: "fake nft -f".into(),
                status: "exit status: 1".into(),
                stderr: format!("refused: holds {needle:?}"),
            });
        }
        apply_nft_text(&mut state, text);
        Ok(())
    }

    fn update_published(&mut self, changes: &[PublishChange]) -> Result<(), FirewallError> {
        self.enter(
            FakeOp::UpdatePublished,
            FakeCall::UpdatePublished(changes.to_vec()),
        )
        .map(drop)
    }

    fn open_hairpin(&mut self, spec: &HairpinSpec, port: u16) -> Result<u16, FirewallError> {
        let mut state = self.enter(FakeOp::OpenHairpin, FakeCall::OpenHairpin(*spec, port))?;
        let port = if port == 0 {
            // The fake kernel hands out ports from 40000 up, or the ones in `next_hairpin_ports`.
            if let Some(p) = state.next_hairpin_ports.pop_front() {
                p
            } else {
                let p = state.last_hairpin_port.max(39_999) + 1;
                state.last_hairpin_port = p;
                p
            }
        } else {
            port
        };
        if state.hairpins.contains_key(&(spec.protocol, port)) {
            return Err(FirewallError::Hairpin {
                what: format!("{}/{} on port {port}", spec.target, spec.protocol),
                source: std::io::ErrorKind::AddrInUse.into(),
            });
        }
        state.hairpins.insert((spec.protocol, port), *spec);
        Ok(port)
    }

    fn close_hairpin(&mut self, protocol: hearth_proto::api_publish::Protocol, port: u16) {
        let mut state = self.state();
        state.calls.push(FakeCall::CloseHairpin(protocol, port));
        state.hairpins.remove(&(protocol, port));
    }

    fn update_port_leases(
        &mut self,
        table: &str,
        set: &str,
        changes: &[LeaseChange],
    ) -> Result<(), FirewallError> {
        let mut state = self.enter(
            FakeOp::UpdatePortLeases,
            FakeCall::UpdatePortLeases {
                table: table.into(),
                set: set.into(),
                changes: changes.to_vec(),
            },
        )?;
        // Like the kernel: a missing set fails the whole transaction, nothing is applied.
        let members = state
            .port_leases
            .get_mut(&(table.to_owned(), set.to_owned()))
            .ok_or_else(|| FirewallError::Nftables {
                set: format!("bridge {table} {set}"),
                source: super::nft_netlink::NftError::Refused {
                    what: "find the set".into(),
                    source: std::io::Error::from_raw_os_error(libc::ENOENT),
                },
            })?;
        for change in changes {
            match change {
                LeaseChange::Add(lease) => members.insert(lease.clone()),
                LeaseChange::Remove(lease) => members.remove(lease),
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, n)
    }

    #[test]
    fn restore_lines_build_and_swap_sets() {
        let mut fw = FakeFirewall::new();
        fw.restore_sets(
            "create s hash:ip -exist\ncreate t hash:ip\nadd t 10.0.0.2\nswap t s\ndestroy t\n",
        )
        .unwrap();
        assert_eq!(fw.set("s").unwrap(), BTreeSet::from([SetEntry::Ip(ip(2))]));
        assert!(fw.set("t").is_none());
    }

    #[test]
    fn ip_mac_add_replaces_the_mac_and_del_is_idempotent() {
        let mut fw = FakeFirewall::new();
        fw.restore_sets("create g bitmap:ip,mac range 10.0.0.0/24\n")
            .unwrap();
        let a = MacAddr::for_guest(ip(2));
        let b = MacAddr([6, 0, 0, 0, 0, 9]);
        fw.add_to_set("g", SetEntry::IpMac(ip(2), a)).unwrap();
        fw.add_to_set("g", SetEntry::IpMac(ip(2), b)).unwrap();
        assert_eq!(
            fw.set("g").unwrap(),
            BTreeSet::from([SetEntry::IpMac(ip(2), b)])
        );
        fw.remove_from_set("g", SetEntry::IpMac(ip(2), b)).unwrap();
        fw.remove_from_set("g", SetEntry::IpMac(ip(2), b)).unwrap();
        assert!(fw.set("g").unwrap().is_empty());
    }

    #[test]
    fn injected_failure_is_reported_and_recorded() {
        let mut fw = FakeFirewall::new();
        fw.fail(FakeOp::RestoreRules, "boom");
        let err = fw.restore_rules("*nat\nCOMMIT\n").unwrap_err();
        assert!(err.to_string().contains("boom"));
        assert_eq!(fw.call_count(), 1);
        fw.heal();
        fw.restore_rules("*nat\nCOMMIT\n").unwrap();
    }
}
