//! Egress policy: which destinations a guest in `deny` mode may reach.
//!
//! Where: an `ip`-family nftables table `hearth-egress`, beside hearth's iptables chains. Its
//! base chains hook `forward` and `input` at priority `filter - 1`, and `prerouting` just
//! before destination NAT (for connections to the host's own addresses, judged by the address
//! and port asked for before hearth's publish table sends them to a hairpin proxy); they only
//! ever drop or return: a packet they let through still meets `HEARTH-FORWARD`/`HEARTH-INPUT`
//! (NAT, isolation, anti-spoofing), so a policy can only take connectivity away. Why nftables and
//! not ipsets: the pairs (guest, destination) need `hash:ip,ip`/`hash:net,net`, which the
//! kernels hearth runs on may lack (this development kernel has neither), while nftables'
//! concatenated sets give (guest . network) keys and per-element timeouts everywhere
//! `nf_tables` runs; the bridge table already needs `nf_tables`.
//!
//! The rules are static and shared by every guest; a guest's policy is set elements only, so
//! a per-VM change is one in-process netlink transaction whatever the number of VMs:
//! - `deny`: guests in deny mode (everyone else returns at once);
//! - `denied`: the same guests, with a counter: the last rule counts what it drops per guest;
//! - `nets<P>` (`guest . network`) and `ports<P>` (`guest . proto . port . network`), one of
//!   each per prefix length P: allowed CIDRs. Hash sets, not one interval set: nftables
//!   rebuilds an interval set of concatenations whole on every change (measured: 3.8 ms per
//!   change at 1000 guests against 0.1 ms at 10), a hash set changes in constant time. The
//!   price is one lookup per prefix length for a deny-mode guest's new connections;
//! - `learned` (`guest . address`, timeout): addresses hearth's DNS answered to that guest
//!   for an allowed domain, expiring with the record's TTL.
//!
//! A deny-mode guest reaches: hearth's DNS on the gateway (TCP and UDP 53), replies of
//! connections already established, its allowed CIDRs and learned addresses. DNS (port 53)
//! to anyone else is dropped even inside an allowed CIDR, so names resolve only through
//! hearth (which is what keeps `learned` honest). Of the host's own addresses it reaches only
//! DNS on the gateway and, when the address and port are allowed, published ports (hairpin).
//!
//! Reconcile rewrites the table in one `nft -f` transaction and keeps runtime state: learned
//! addresses of guests still in deny mode stay (with their expiry) and the denied counters of
//! guests still in deny mode keep counting.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use actix::{Context, Handler, Message};
use ipnet::Ipv4Net;
use slog::{debug, info};

use super::{step, NatActor, NatConfig, NatError};
use crate::host::firewall::nft_egress::{EgressChange, EgressElement, EgressOp};
use crate::host::firewall::nft_json;

/// hearth's `ip`-family table of egress policy.
pub const EGRESS_TABLE: &str = "hearth-egress";
/// Guests in deny mode.
pub const DENY_SET: &str = "deny";
/// Guests in deny mode, each with a counter of the packets dropped for it.
pub const DENIED_SET: &str = "denied";
/// (guest . destination network) allowed: the family of sets `nets0`..`nets32`.
pub const NETS_SET: &str = "nets";
/// (guest . protocol . port . destination network) allowed: `ports0`..`ports32`.
pub const PORTS_SET: &str = "ports";
/// (guest . address) learned from DNS, with timeouts.
pub const LEARNED_SET: &str = "learned";

/// The shortest life of a learned address, in seconds: a record with TTL 0 or 1 must still
/// let the guest's connect (right after the answer) through.
pub const MIN_LEARNED_SECS: u32 = 2;
/// The longest life of a learned address, in seconds (a huge TTL must not allow an address
/// for days after the name moved).
pub const MAX_LEARNED_SECS: u32 = 3600;

/// How long an address answered with record TTL `ttl` stays learned:
/// [`MIN_LEARNED_SECS`]..=[`MAX_LEARNED_SECS`].
pub fn learned_secs(ttl: u32) -> u32 {
    ttl.clamp(MIN_LEARNED_SECS, MAX_LEARNED_SECS)
}

/// IP protocol numbers of the transports a port allowance covers.
const TCP: u8 = 6;
const UDP: u8 = 17;

/// What a guest in deny mode may reach besides hearth's DNS.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EgressRules {
    /// Destination ranges, every port.
    pub nets: BTreeSet<Ipv4Net>,
    /// Destination ranges on one port (TCP and UDP).
    pub ports: BTreeSet<(Ipv4Net, u16)>,
    /// The domain patterns hearth's DNS learns addresses for (`api.github.com`, `*.pypi.org`);
    /// the actor uses them to forget what was learned for a pattern that goes away.
    pub domains: BTreeSet<String>,
}

impl EgressRules {
    fn elements(&self, guest: Ipv4Addr) -> BTreeMap<&'static str, BTreeSet<EgressElement>> {
        let mut out: BTreeMap<&'static str, BTreeSet<EgressElement>> = BTreeMap::new();
        for guest_set in [DENY_SET, DENIED_SET] {
            out.entry(guest_set)
                .or_default()
                .insert(EgressElement::Guest(guest));
        }
        for net in &self.nets {
            out.entry(NETS_SET)
                .or_default()
                .insert(EgressElement::Net(guest, net.trunc()));
        }
        for (net, port) in &self.ports {
            for proto in [TCP, UDP] {
                out.entry(PORTS_SET)
                    .or_default()
                    .insert(EgressElement::Port(guest, proto, *port, net.trunc()));
            }
        }
        out
    }
}

/// Puts a guest in deny mode with these rules (`Some`), or back to allow mode (`None`: every
/// element of the guest goes, learned addresses included). Takes effect for new connections
/// at once; one netlink transaction, whatever the number of guests. Idempotent.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), NatError>")]
pub struct SetEgressPolicy {
    /// The guest's IPv4 address.
    pub guest: Ipv4Addr,
    /// The rules, or `None` for allow mode.
    pub rules: Option<EgressRules>,
}

/// Addresses hearth's DNS answered to a deny-mode guest for an allowed domain: each is
/// allowed for its record's TTL (clamped to [`MIN_LEARNED_SECS`]..=[`MAX_LEARNED_SECS`]).
/// Answers how many were allowed (0 when the guest is not in deny mode or the pattern is no
/// longer among its domains).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<usize, NatError>")]
pub struct AllowLearned {
    /// The guest that asked.
    pub guest: Ipv4Addr,
    /// The allowed pattern the name matched.
    pub pattern: String,
    /// The A records' addresses and TTLs (seconds).
    pub addrs: Vec<(Ipv4Addr, u32)>,
}

/// Rewrites the egress table to hold exactly `policies` (one `nft -f` transaction), keeping
/// learned addresses and counters of guests that stay in deny mode. Needs a successful
/// `Reconcile` first (the bridge and gateway it names are the actor's).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), NatError>")]
pub struct ReconcileEgress {
    /// Every deny-mode guest with its rules.
    pub policies: BTreeMap<Ipv4Addr, EgressRules>,
}

/// The packets dropped per deny-mode guest since it entered deny mode (or since the
/// counter's set was created).
#[derive(Debug, Message)]
#[rtype(result = "Result<BTreeMap<Ipv4Addr, u64>, NatError>")]
pub struct GetEgressDenied;

/// The egress part of `NatActor`'s state.
#[derive(Debug, Default)]
pub struct EgressState {
    /// `ReconcileEgress` succeeded (the table exists).
    ready: bool,
    /// Deny-mode guests and their rules.
    policies: BTreeMap<Ipv4Addr, EgressRules>,
    /// Learned addresses per guest: expiry and the patterns they were learned for (empty
    /// when read back from the kernel after a restart).
    learned: BTreeMap<Ipv4Addr, BTreeMap<Ipv4Addr, (Instant, BTreeSet<String>)>>,
}

/// The `nft -f` text that creates the egress table if needed and makes its rules and policy
/// sets exactly what `policies` says, in one transaction. `current` is what the kernel holds
/// now (from [`parse_listing`]): its learned elements of guests leaving deny mode are deleted,
/// the others kept.
#[must_use]
pub fn table_text(
    config: &NatConfig,
    policies: &BTreeMap<Ipv4Addr, EgressRules>,
    current: &Listed,
) -> String {
    let t = format!("ip {EGRESS_TABLE}");
    let mut text = format!("add table {t}\n");
    let sets = [
        (DENY_SET, "type ipv4_addr;"),
        (DENIED_SET, "type ipv4_addr; counter;"),
        (LEARNED_SET, "type ipv4_addr . ipv4_addr; flags timeout;"),
    ];
    for (set, def) in sets {
        let _ = writeln!(text, "add set {t} {set} {{ {def} }}");
    }
    for p in 0..=32 {
        let _ = writeln!(
            text,
            "add set {t} {NETS_SET}{p} {{ type ipv4_addr . ipv4_addr; }}"
        );
        let _ = writeln!(
            text,
            "add set {t} {PORTS_SET}{p} {{ type ipv4_addr . inet_proto . inet_service . ipv4_addr; }}"
        );
    }
    // `prerouting` before the publish table's translations (`dstnat`), the others before
    // hearth's iptables filter chains.
    for (hook, priority) in [
        ("prerouting", "dstnat - 1"),
        ("forward", "filter - 1"),
        ("input", "filter - 1"),
    ] {
        let _ = writeln!(
            text,
            "add chain {t} {hook} {{ type filter hook {hook} priority {priority}; policy accept; }}"
        );
        let _ = writeln!(text, "flush chain {t} {hook}");
    }
    let _ = writeln!(text, "flush set {t} {DENY_SET}");
    for p in 0..=32 {
        let _ = writeln!(text, "flush set {t} {NETS_SET}{p}");
        let _ = writeln!(text, "flush set {t} {PORTS_SET}{p}");
    }
    rules_text(&mut text, config);
    let mut wanted: BTreeMap<&'static str, BTreeSet<EgressElement>> = BTreeMap::new();
    for (guest, rules) in policies {
        for (set, elements) in rules.elements(*guest) {
            wanted.entry(set).or_default().extend(elements);
        }
    }
    // Counters of guests that stay are kept: only leavers are deleted, adding is a no-op
    // for present elements.
    let leavers: Vec<String> = current
        .denied
        .keys()
        .filter(|g| !policies.contains_key(g))
        .map(ToString::to_string)
        .collect();
    if !leavers.is_empty() {
        let _ = writeln!(
            text,
            "delete element {t} {DENIED_SET} {{ {} }}",
            leavers.join(", ")
        );
    }
    let mut by_set: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (base, elements) in &wanted {
        for e in elements {
            by_set
                .entry(e.set_for(base))
                .or_default()
                .push(e.to_string());
        }
    }
    for (set, list) in &by_set {
        let _ = writeln!(text, "add element {t} {set} {{ {} }}", list.join(", "));
    }
    let stale: Vec<String> = current
        .learned
        .iter()
        .filter(|(g, _, _)| !policies.contains_key(g))
        .map(|(g, a, _)| EgressElement::Addr(*g, *a).to_string())
        .collect();
    if !stale.is_empty() {
        let _ = writeln!(
            text,
            "delete element {t} {LEARNED_SET} {{ {} }}",
            stale.join(", ")
        );
    }
    text
}

/// The static rules of the egress table's two chains, appended to `text`.
fn rules_text(text: &mut String, config: &NatConfig) {
    let t = format!("ip {EGRESS_TABLE}");
    let br = &config.bridge;
    let gw = config.gateway;
    let head = [
        format!("iifname != \"{br}\" return"),
        format!("ip saddr != @{DENY_SET} return"),
    ];
    // One hash lookup per prefix length (a CIDR is its network address in the set of its
    // length), only for new connections of deny-mode guests.
    let mut forward = vec![
        "ct state established,related return".to_owned(),
        format!("meta l4proto {{ tcp, udp }} th dport 53 ip saddr @{DENIED_SET} drop"),
    ];
    for p in (0..=32u8).rev() {
        let mask = prefix_mask(p);
        forward.push(format!(
            "ip saddr . ip daddr & {mask} @{NETS_SET}{p} return"
        ));
        forward.push(format!(
            "ip saddr . meta l4proto . th dport . ip daddr & {mask} @{PORTS_SET}{p} return"
        ));
    }
    forward.extend([
        format!("ip saddr . ip daddr @{LEARNED_SET} return"),
        format!("ip saddr @{DENIED_SET} drop"),
        "drop".to_owned(),
    ]);
    // New connections to the host's own addresses are judged before the publish table
    // translates them (to hairpin proxies), by the address and port the guest asked for: a
    // published port through a host address is reachable when that address is allowed.
    let dns = format!("ip daddr {gw} meta l4proto {{ tcp, udp }} th dport 53 return");
    let prerouting = ["fib daddr type != local return".to_owned(), dns.clone()]
        .into_iter()
        .chain(forward.iter().cloned());
    let input = [
        dns,
        "ct state established,related return".to_owned(),
        // Judged at `prerouting`, before the translation to a hairpin proxy (only those: a
        // translation by another table to another socket is not let through).
        format!(
            "ct direction original ct status dnat socket mark {:#x} return",
            crate::host::hairpin::SOCKET_MARK
        ),
        // A SYN meeting a proxy connection's TIME_WAIT remnant (see `rules.rs`).
        "ct direction original ct status dnat tcp flags & (fin | syn | rst | ack) == syn \
         socket transparent 1 return"
            .to_owned(),
        format!("ip saddr @{DENIED_SET} drop"),
        "drop".to_owned(),
    ];
    for rule in head.iter().cloned().chain(prerouting) {
        let _ = writeln!(text, "add rule {t} prerouting {rule}");
    }
    for rule in head.iter().chain(&forward) {
        let _ = writeln!(text, "add rule {t} forward {rule}");
    }
    for rule in head.iter().chain(&input) {
        let _ = writeln!(text, "add rule {t} input {rule}");
    }
}

/// The netmask of a prefix length, as nft writes it.
fn prefix_mask(prefix: u8) -> Ipv4Addr {
    let bits = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    Ipv4Addr::from(bits)
}

/// The prefix length of a per-prefix set `<base><p>`.
fn prefix_of(name: &str, base: &str) -> Option<u8> {
    name.strip_prefix(base)?.parse().ok().filter(|p| *p <= 32)
}

/// The `nft -f` text that removes the egress table, present or not.
#[must_use]
pub fn teardown_text() -> String {
    format!("table ip {EGRESS_TABLE}\ndelete table ip {EGRESS_TABLE}\n")
}

/// What [`parse_listing`] reads from `nft -j list table ip hearth-egress`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listed {
    /// Members of the denied-counter set, with their packet counts.
    pub denied: BTreeMap<Ipv4Addr, u64>,
    /// Learned (guest, address, seconds left).
    pub learned: Vec<(Ipv4Addr, Ipv4Addr, u64)>,
    /// The deny-mode guests with the CIDR and port allowances the kernel holds for them
    /// (domains are not in the kernel: empty).
    pub policies: BTreeMap<Ipv4Addr, EgressRules>,
}

/// An address or `{"prefix": {"addr": .., "len": ..}}` of an `nft -j` listing.
fn json_net(v: &serde_json::Value) -> Option<Ipv4Net> {
    if let Some(s) = v.as_str() {
        return Ipv4Net::new(s.parse().ok()?, 32).ok();
    }
    let p = v.get("prefix")?;
    let addr = p.get("addr")?.as_str()?.parse().ok()?;
    let len = u8::try_from(p.get("len")?.as_u64()?).ok()?;
    Ipv4Net::new(addr, len).ok()
}

/// A network read from a per-prefix set: the set's prefix length, not the address's /32.
fn with_prefix(net: Ipv4Net, prefix: Option<u8>) -> Ipv4Net {
    prefix
        .and_then(|p| Ipv4Net::new(net.addr(), p).ok())
        .map_or(net, |n| n.trunc())
}

/// A `denied` element: `{"elem": {"val": "1.2.3.4", "counter": {"packets": n, ..}}}`.
fn denied_element(elem: &serde_json::Value) -> Option<(Ipv4Addr, u64)> {
    let inner = elem.get("elem").unwrap_or(elem);
    let ip = inner.get("val").unwrap_or(inner).as_str()?.parse().ok()?;
    let packets = inner
        .get("counter")
        .and_then(|c| c.get("packets"))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    Some((ip, packets))
}

/// A `learned` element: `{"elem": {"val": {"concat": [guest, addr]}, "expires": secs}}`.
fn learned_element(elem: &serde_json::Value) -> Option<(Ipv4Addr, Ipv4Addr, u64)> {
    let inner = elem.get("elem")?;
    let pair = inner.get("val")?.get("concat")?.as_array()?;
    let addrs: Vec<Ipv4Addr> = pair
        .iter()
        .filter_map(|v| v.as_str()?.parse().ok())
        .collect();
    let left = inner
        .get("expires")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    match addrs[..] {
        [guest, addr] => Some((guest, addr, left)),
        _ => None,
    }
}

/// Reads the denied counters and learned elements from an `nft -j list` output; elements
/// it does not understand are skipped (they are not hearth's).
#[must_use]
pub fn parse_listing(json: &str) -> Listed {
    let mut listed = Listed::default();
    let (mut nets, mut ports) = (Vec::new(), Vec::new());
    for (name, elems) in nft_json::elements(json, "set") {
        let name = Some(name.as_str());
        for elem in elems {
            let nets_prefix = name.and_then(|n| prefix_of(n, NETS_SET));
            let ports_prefix = name.and_then(|n| prefix_of(n, PORTS_SET));
            let name = match (nets_prefix, ports_prefix) {
                (Some(_), _) => Some(NETS_SET),
                (_, Some(_)) => Some(PORTS_SET),
                _ => name,
            };
            match name {
                Some(DENIED_SET) => {
                    if let Some((ip, packets)) = denied_element(&elem) {
                        listed.denied.insert(ip, packets);
                    }
                }
                Some(DENY_SET) => {
                    let val = elem.get("elem").and_then(|e| e.get("val")).unwrap_or(&elem);
                    if let Some(ip) = val.as_str().and_then(|s| s.parse().ok()) {
                        listed.policies.entry(ip).or_default();
                    }
                }
                Some(NETS_SET) => {
                    if let Some([guest, net]) = nft_json::concat(&elem).map(Vec::as_slice) {
                        if let (Some(g), Some(net)) =
                            (guest.as_str().and_then(|s| s.parse().ok()), json_net(net))
                        {
                            nets.push((g, with_prefix(net, nets_prefix)));
                        }
                    }
                }
                Some(PORTS_SET) => {
                    if let Some([guest, _, port, net]) = nft_json::concat(&elem).map(Vec::as_slice)
                    {
                        let g = guest.as_str().and_then(|s| s.parse().ok());
                        let port = port.as_u64().and_then(|p| u16::try_from(p).ok());
                        if let (Some(g), Some(port), Some(net)) = (g, port, json_net(net)) {
                            ports.push((g, with_prefix(net, ports_prefix), port));
                        }
                    }
                }
                Some(LEARNED_SET) => listed.learned.extend(learned_element(&elem)),
                _ => {}
            }
        }
    }
    for (g, net) in nets {
        if let Some(rules) = listed.policies.get_mut(&g) {
            rules.nets.insert(net);
        }
    }
    for (g, net, port) in ports {
        if let Some(rules) = listed.policies.get_mut(&g) {
            rules.ports.insert((net, port));
        }
    }
    listed
}

/// Checks the rules of a policy before anything is touched.
fn check_rules(guest: Ipv4Addr, rules: &EgressRules) -> Result<(), NatError> {
    if let Some((_, port)) = rules.ports.iter().find(|(_, port)| *port == 0) {
        return Err(NatError::InvalidGuest {
            ip: guest,
            reason: format!("egress port {port} is not a port"),
        });
    }
    Ok(())
}

impl NatActor {
    fn egress_ready(&self, op: &'static str) -> Result<(), NatError> {
        if self.egress_policy.ready {
            Ok(())
        } else {
            Err(NatError::NotReady { op })
        }
    }

    fn reconcile_egress(
        &mut self,
        policies: BTreeMap<Ipv4Addr, EgressRules>,
    ) -> Result<(), NatError> {
        if !self.ready {
            return Err(NatError::NotReady {
                op: "set up egress policy",
            });
        }
        for (guest, rules) in &policies {
            self.config.check_guest(*guest)?;
            check_rules(*guest, rules)?;
        }
        let current = self.list_egress()?;
        self.install_egress(policies, &current)
    }

    /// What the kernel's egress table holds now (empty when there is none).
    fn list_egress(&mut self) -> Result<Listed, NatError> {
        Ok(self
            .firewall
            .list_nft(&format!("table ip {EGRESS_TABLE}"))
            .map_err(step("list hearth's egress table"))?
            .map(|json| parse_listing(&json))
            .unwrap_or_default())
    }

    /// Rewrites the egress table for `policies` (see [`ReconcileEgress`]), already checked,
    /// over `current`, the kernel's table as just listed (one listing per rewrite).
    fn install_egress(
        &mut self,
        policies: BTreeMap<Ipv4Addr, EgressRules>,
        current: &Listed,
    ) -> Result<(), NatError> {
        let text = table_text(&self.config, &policies, current);
        self.firewall
            .apply_nft(&text)
            .map_err(step("install hearth's egress table"))?;
        let now = Instant::now();
        let mut learned: BTreeMap<Ipv4Addr, BTreeMap<_, _>> = BTreeMap::new();
        for (guest, addr, left) in &current.learned {
            if policies.contains_key(guest) {
                learned
                    .entry(*guest)
                    .or_default()
                    .insert(*addr, (now + Duration::from_secs(*left), BTreeSet::new()));
            }
        }
        let state = &mut self.egress_policy;
        state.ready = true;
        state.learned = learned;
        state.policies = policies;
        info!(self.log, "egress policy reconciled"; "deny_guests" => state.policies.len(),
            "kept_counters" => state.policies.keys().filter(|g| current.denied.contains_key(g)).count());
        Ok(())
    }

    /// `Reconcile`'s part: the egress table installed, keeping the kernel's policies of
    /// the guests in `guests` (re-applied in full by their capability's `adopted` hook after a
    /// restart) and dropping everyone else's.
    pub(super) fn reconcile_egress_keeping(
        &mut self,
        guests: &BTreeSet<Ipv4Addr>,
    ) -> Result<(), NatError> {
        let current = self.list_egress()?;
        let mut policies = current.policies.clone();
        policies.retain(|g, _| guests.contains(g));
        // Rules the kernel held for a guest but the actor cannot re-validate are dropped.
        policies.retain(|g, r| check_rules(*g, r).is_ok() && self.config.check_guest(*g).is_ok());
        self.install_egress(policies, &current)
    }

    fn set_egress_policy(
        &mut self,
        guest: Ipv4Addr,
        rules: Option<EgressRules>,
    ) -> Result<(), NatError> {
        self.config.check_guest(guest)?;
        if let Some(rules) = &rules {
            check_rules(guest, rules)?;
        }
        self.egress_ready("change an egress policy")?;
        let old = self.egress_policy.policies.get(&guest);
        let before = old.map(|r| r.elements(guest)).unwrap_or_default();
        let after = rules
            .as_ref()
            .map(|r| r.elements(guest))
            .unwrap_or_default();
        let mut changes = Vec::new();
        for (set, elements) in &before {
            let keep = after.get(set);
            for element in elements {
                if !keep.is_some_and(|k| k.contains(element)) {
                    changes.push(EgressChange {
                        set,
                        element: *element,
                        op: EgressOp::Remove,
                    });
                }
            }
        }
        for (set, elements) in &after {
            let had = before.get(set);
            for element in elements {
                if !had.is_some_and(|h| h.contains(element)) {
                    changes.push(EgressChange {
                        set,
                        element: *element,
                        op: EgressOp::Add(None),
                    });
                }
            }
        }
        // Learned addresses go with the pattern they were learned for (all of them when the
        // guest leaves deny mode; those of unknown pattern, read back after a restart, stay
        // until they expire while the guest stays in deny mode). Each address kept so far has
        // a pattern among the old domains (or none), so a change that keeps every old domain
        // keeps them all: only a change dropping a domain looks at them (a scan of the guest's
        // learned addresses, which otherwise made each change cost with their number).
        let drops_a_domain = match (old, &rules) {
            (Some(old), Some(new)) => !old.domains.is_subset(&new.domains),
            _ => true,
        };
        let mut forgotten = BTreeSet::new();
        let learned = if drops_a_domain {
            self.egress_policy.learned.get(&guest)
        } else {
            None
        };
        if let Some(learned) = learned {
            for (addr, (_, patterns)) in learned {
                let gone = match &rules {
                    None => true,
                    Some(r) => !patterns.is_empty() && patterns.is_disjoint(&r.domains),
                };
                // Also when it looks expired: the kernel's clock for it may run a little later.
                if gone {
                    forgotten.insert(*addr);
                    changes.push(EgressChange {
                        set: LEARNED_SET,
                        element: EgressElement::Addr(guest, *addr),
                        op: EgressOp::Remove,
                    });
                }
            }
        }
        self.firewall
            .update_egress(EGRESS_TABLE, &changes)
            .map_err(step(format!("change the egress policy of {guest}")))?;
        if let Some(rules) = rules {
            self.egress_policy.policies.insert(guest, rules);
            if let Some(learned) = self.egress_policy.learned.get_mut(&guest) {
                // Expired ones are dropped by `allow_learned`, which adds them.
                for addr in &forgotten {
                    learned.remove(addr);
                }
            }
        } else {
            self.egress_policy.policies.remove(&guest);
            self.egress_policy.learned.remove(&guest);
        }
        debug!(self.log, "egress policy changed"; "guest" => %guest, "changes" => changes.len());
        Ok(())
    }

    fn allow_learned(&mut self, msg: AllowLearned) -> Result<usize, NatError> {
        self.egress_ready("allow learned addresses")?;
        let Some(rules) = self.egress_policy.policies.get(&msg.guest) else {
            return Ok(0);
        };
        if !rules.domains.contains(&msg.pattern) {
            return Ok(0);
        }
        let now = Instant::now();
        let learned = self.egress_policy.learned.entry(msg.guest).or_default();
        let mut changes = Vec::new();
        let mut updates = Vec::new();
        for (addr, ttl) in &msg.addrs {
            let secs = learned_secs(*ttl);
            let expiry = now + Duration::from_secs(u64::from(secs));
            // An address already allowed for longer needs no kernel round trip.
            match learned.get(addr) {
                Some((until, patterns)) if *until >= expiry && patterns.contains(&msg.pattern) => {}
                _ => changes.push(EgressChange {
                    set: LEARNED_SET,
                    element: EgressElement::Addr(msg.guest, *addr),
                    op: EgressOp::Add(Some(secs)),
                }),
            }
            updates.push((*addr, expiry));
        }
        self.firewall
            .update_egress(EGRESS_TABLE, &changes)
            .map_err(step(format!("allow learned addresses for {}", msg.guest)))?;
        for (addr, expiry) in updates {
            let entry = learned
                .entry(addr)
                .or_insert_with(|| (expiry, BTreeSet::new()));
            entry.0 = entry.0.max(expiry);
            entry.1.insert(msg.pattern.clone());
        }
        // Expired entries are dropped from memory here, so it stays as small as the kernel set.
        learned.retain(|_, (expiry, _)| *expiry > now);
        Ok(msg.addrs.len())
    }

    fn egress_denied(&mut self) -> Result<BTreeMap<Ipv4Addr, u64>, NatError> {
        self.egress_ready("read egress counters")?;
        let json = self
            .firewall
            .list_nft(&format!("set ip {EGRESS_TABLE} {DENIED_SET}"))
            .map_err(step("read the denied-packet counters"))?;
        Ok(json.map(|j| parse_listing(&j).denied).unwrap_or_default())
    }

    /// Takes a guest out of deny mode if it is in it (part of `UnregisterGuest`).
    pub(super) fn forget_egress(&mut self, guest: Ipv4Addr) -> Result<(), NatError> {
        if self.egress_policy.policies.contains_key(&guest) {
            self.set_egress_policy(guest, None)?;
        }
        Ok(())
    }

    /// Removes the egress table (part of `Teardown`).
    pub(super) fn teardown_egress(&mut self) -> Result<(), NatError> {
        self.firewall
            .apply_nft(&teardown_text())
            .map_err(step("remove hearth's egress table"))?;
        self.egress_policy = EgressState::default();
        Ok(())
    }
}

impl Handler<SetEgressPolicy> for NatActor {
    type Result = Result<(), NatError>;

    fn handle(&mut self, msg: SetEgressPolicy, _: &mut Context<Self>) -> Self::Result {
        self.set_egress_policy(msg.guest, msg.rules)
    }
}

impl Handler<AllowLearned> for NatActor {
    type Result = Result<usize, NatError>;

    fn handle(&mut self, msg: AllowLearned, _: &mut Context<Self>) -> Self::Result {
        self.allow_learned(msg)
    }
}

impl Handler<ReconcileEgress> for NatActor {
    type Result = Result<(), NatError>;

    fn handle(&mut self, msg: ReconcileEgress, _: &mut Context<Self>) -> Self::Result {
        self.reconcile_egress(msg.policies)
    }
}

impl Handler<GetEgressDenied> for NatActor {
    type Result = Result<BTreeMap<Ipv4Addr, u64>, NatError>;

    fn handle(&mut self, _: GetEgressDenied, _: &mut Context<Self>) -> Self::Result {
        self.egress_denied()
    }
}

#[cfg(test)]
#[path = "egress_tests.rs"]
mod tests;
