//! Pure rule and set computation: given the configuration (and the current `iptables -S`
//! listings, to fix up jump rules), which `iptables-restore` and `ipset restore` texts make
//! the host hold exactly hearth's desired state. No I/O here.
//!
//! Rules are written in the canonical form `iptables -S` prints them back (`/32` on host
//! addresses, explicit `-m udp`), so the installed chains can be compared line by line with
//! [`chain_rules`].

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::{GuestSpec, NatConfig};
use crate::host::firewall::{PortLease, SetEntry, Table};

/// hearth's chain in the nat table, jumped to from `POSTROUTING`.
pub const CHAIN_POSTROUTING: &str = "HEARTH-POSTROUTING";
/// hearth's chain in the filter table, jumped to from `FORWARD`.
pub const CHAIN_FORWARD: &str = "HEARTH-FORWARD";
/// hearth's chain in the filter table, jumped to from `INPUT`.
pub const CHAIN_INPUT: &str = "HEARTH-INPUT";
/// The `hash:ip` set of guests whose traffic is masqueraded out.
pub const NAT_SET: &str = "hearth-nat";
/// The `bitmap:ip,mac` set of (lease IP, lease MAC) pairs, for anti-spoofing.
pub const GUEST_SET: &str = "hearth-guests";

/// hearth's chain in the nat table, jumped to from `PREROUTING` (published ports).
pub const CHAIN_PREROUTING: &str = "HEARTH-PREROUTING";
/// hearth's chain in the nat table, jumped to from `OUTPUT` (published ports, from the host).
pub const CHAIN_OUTPUT: &str = "HEARTH-OUTPUT";

/// Each of hearth's chains with its table and the built-in chain that jumps to it.
pub const HOOKS: [(Table, &str, &str); 5] = [
    (Table::Nat, "PREROUTING", CHAIN_PREROUTING),
    (Table::Nat, "OUTPUT", CHAIN_OUTPUT),
    (Table::Nat, "POSTROUTING", CHAIN_POSTROUTING),
    (Table::Filter, "FORWARD", CHAIN_FORWARD),
    (Table::Filter, "INPUT", CHAIN_INPUT),
];

/// The name of the scratch set a rebuild of `set` fills before swapping it in.
#[must_use]
pub fn temp_set(set: &str) -> String {
    format!("{set}-tmp")
}

/// The `iptables -S` listings of the tables hearth writes to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listings {
    /// `iptables -t nat -S`.
    pub nat: String,
    /// `iptables -t filter -S`.
    pub filter: String,
}

impl Listings {
    fn of(&self, table: Table) -> &str {
        match table {
            Table::Nat => &self.nat,
            Table::Filter => &self.filter,
        }
    }
}

/// The rules of hearth's chain `chain`, as `iptables -S <chain>` prints them (without the
/// `-N` line). `egress` is the interface masqueraded traffic leaves by; without one, no guest
/// traffic is masqueraded or forwarded out (everything else is the same).
#[must_use]
pub fn chain_rules(config: &NatConfig, egress: Option<&str>, chain: &str) -> Vec<String> {
    let br = &config.bridge;
    let cidr = config.cidr.trunc();
    let gw = config.gateway;
    let anti_spoof = format!("-A {chain} -i {br} -m set ! --match-set {GUEST_SET} src,src -j DROP");
    let mut rules = Vec::new();
    match chain {
        CHAIN_POSTROUTING => {
            rules.extend(egress.map(|egress| {
                format!(
                    "-A {chain} -s {cidr} -o {egress} -m set --match-set {NAT_SET} src -j MASQUERADE"
                )
            }));
        }
        CHAIN_FORWARD => {
            if config.anti_spoofing {
                rules.push(anti_spoof);
            }
            rules.extend(super::publish::forward_rules(config));
            if let Some(egress) = egress {
                // Replies to NAT guests' connections.
                rules.push(format!(
                    "-A {chain} -i {egress} -o {br} -m set --match-set {NAT_SET} dst \
                     -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
                ));
                // NAT guests out to the egress interface, nowhere else.
                rules.push(format!(
                    "-A {chain} -i {br} -o {egress} -m set --match-set {NAT_SET} src -j ACCEPT"
                ));
            }
            // Guest to guest routed through the gateway.
            let hairpin = if config.isolate_guests {
                "DROP"
            } else {
                "ACCEPT"
            };
            rules.push(format!("-A {chain} -i {br} -o {br} -j {hairpin}"));
            // Everything else from guests, and anything unasked into the guest subnet.
            rules.push(format!("-A {chain} -i {br} -j DROP"));
            rules.push(format!("-A {chain} -o {br} -j DROP"));
        }
        CHAIN_INPUT => {
            if config.anti_spoofing {
                rules.push(anti_spoof);
            }
            if config.block_guest_to_host {
                for proto in ["udp", "tcp"] {
                    rules.push(format!(
                        "-A {chain} -d {gw}/32 -i {br} -p {proto} -m {proto} --dport 53 -j ACCEPT"
                    ));
                }
                // Guests to published ports through a host address, which hearth's publish
                // table translated to its hairpin proxies (see `host::hairpin`): only when the
                // socket reached is a proxy's (marked), so no other translation of guests'
                // packets to the host, nor a program on a dead proxy's port, is let in. For
                // UDP every datagram, before the accept of established flows: a flow the
                // kernel still tracks outlives a dead proxy.
                let mark = crate::host::hairpin::SOCKET_MARK;
                let translated = "-m conntrack --ctstate DNAT --ctdir ORIGINAL";
                let to_a_proxy = format!("-m socket --restore-skmark -m mark --mark {mark:#x}");
                rules.push(format!(
                    "-A {chain} -i {br} -p udp {translated} {to_a_proxy} -j ACCEPT"
                ));
                rules.push(format!("-A {chain} -i {br} -p udp {translated} -j DROP"));
                rules.push(format!(
                    "-A {chain} -i {br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
                ));
                rules.push(format!(
                    "-A {chain} -i {br} {translated} {to_a_proxy} -j ACCEPT"
                ));
                // A SYN that meets a proxy connection's TIME_WAIT remnant (the guest reused
                // its port): no mark to read there, but the proxies' transparency is kept.
                rules.push(format!(
                    "-A {chain} -i {br} -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN \
                     {translated} -m socket --transparent -j ACCEPT"
                ));
                rules.push(format!("-A {chain} -i {br} -j DROP"));
            }
        }
        // HEARTH-PREROUTING/OUTPUT: published ports are translated in nftables (`publish.rs`).
        _ => {}
    }
    rules
}

/// The `-D` lines that remove every rule of `builtin` jumping to `chain`, read from a table
/// listing (a duplicated jump yields one line per copy).
fn jump_deletions(listing: &str, builtin: &str, chain: &str) -> Vec<String> {
    let prefix = format!("-A {builtin} ");
    let suffix = format!("-j {chain}");
    listing
        .lines()
        .map(str::trim_end)
        .filter_map(|line| line.strip_prefix(&prefix))
        .filter(|spec| *spec == suffix || spec.ends_with(&format!(" {suffix}")))
        .map(|spec| format!("-D {builtin} {spec}"))
        .collect()
}

/// Whether a listing declares the user chain `chain`.
fn has_chain(listing: &str, chain: &str) -> bool {
    listing
        .lines()
        .any(|line| line.trim_end() == format!("-N {chain}"))
}

/// The `iptables-restore --noflush` text that makes hearth's chains hold exactly
/// [`chain_rules`] and each built-in chain jump to its hearth chain exactly once, first.
/// Rules hearth did not make are not touched.
#[must_use]
pub fn restore_text(config: &NatConfig, egress: Option<&str>, current: &Listings) -> String {
    restore_text_with(config, egress, current, &[])
}

/// [`restore_text`] with hearth's former published-port chain holding exactly `publish` (its
/// `-A` lines), in the same nat transaction. hearth itself passes none: published ports are
/// nftables map elements now (`publish.rs`), and the chain is only declared so it is emptied.
#[must_use]
pub fn restore_text_with(
    config: &NatConfig,
    egress: Option<&str>,
    current: &Listings,
    publish: &[String],
) -> String {
    let mut text = String::new();
    for table in [Table::Nat, Table::Filter] {
        let hooks = HOOKS.iter().filter(|(t, _, _)| *t == table);
        let _ = writeln!(text, "*{table}");
        if table == Table::Nat {
            // Declared (so flushed) first: the hook chains jump to it.
            let _ = writeln!(text, ":{} - [0:0]", super::publish::CHAIN_PUBLISH);
            for rule in publish {
                let _ = writeln!(text, "{rule}");
            }
        }
        for (_, _, chain) in hooks.clone() {
            // Declaring a user chain with --noflush creates it, or flushes it if it exists.
            let _ = writeln!(text, ":{chain} - [0:0]");
        }
        for (_, builtin, chain) in hooks {
            for rule in chain_rules(config, egress, chain) {
                let _ = writeln!(text, "{rule}");
            }
            for line in jump_deletions(current.of(table), builtin, chain) {
                let _ = writeln!(text, "{line}");
            }
            let _ = writeln!(text, "-I {builtin} 1 -j {chain}");
        }
        text.push_str("COMMIT\n");
    }
    text
}

/// The `iptables-restore --noflush` text that removes every jump to hearth's chains and the
/// chains themselves, or `None` when nothing of hearth's is left.
#[must_use]
pub fn teardown_text(current: &Listings) -> Option<String> {
    let mut text = String::new();
    for table in [Table::Nat, Table::Filter] {
        let listing = current.of(table);
        let mut lines = Vec::new();
        let hooks = HOOKS.iter().filter(|(t, _, _)| *t == table);
        for (_, builtin, chain) in hooks.clone() {
            lines.extend(jump_deletions(listing, builtin, chain));
        }
        for (_, _, chain) in hooks {
            if has_chain(listing, chain) {
                lines.push(format!("-F {chain}"));
                lines.push(format!("-X {chain}"));
            }
        }
        // Only hearth's hook chains jump to it: it goes once they are gone.
        let publish = super::publish::CHAIN_PUBLISH;
        if table == Table::Nat && has_chain(listing, publish) {
            lines.push(format!("-F {publish}"));
            lines.push(format!("-X {publish}"));
        }
        if !lines.is_empty() {
            let _ = writeln!(text, "*{table}");
            for line in lines {
                let _ = writeln!(text, "{line}");
            }
            text.push_str("COMMIT\n");
        }
    }
    (!text.is_empty()).then_some(text)
}

/// The members the NAT set and the guest set must hold for `desired`.
#[must_use]
pub fn set_members(desired: &[GuestSpec]) -> (BTreeSet<SetEntry>, BTreeSet<SetEntry>) {
    let nat = desired
        .iter()
        .filter(|g| g.nat)
        .map(|g| SetEntry::Ip(g.ip))
        .collect();
    let guests = desired
        .iter()
        .map(|g| SetEntry::IpMac(g.ip, g.mac))
        .collect();
    (nat, guests)
}

/// The `ipset restore` text that rebuilds `set` to hold exactly `members`: create the set if
/// it is not among `existing`, fill a fresh scratch set (destroying one a crash left behind),
/// swap it in atomically (rules referencing the set see the old or the new members, never a
/// mix; a swap keeps working when the bitmap's range changed) and destroy the scratch.
#[must_use]
pub fn set_rebuild_text(
    set: &str,
    kind: &str,
    members: &BTreeSet<SetEntry>,
    existing: &[String],
) -> String {
    let tmp = temp_set(set);
    let mut text = String::new();
    if !existing.iter().any(|s| s == set) {
        let _ = writeln!(text, "create {set} {kind}");
    }
    if existing.contains(&tmp) {
        let _ = writeln!(text, "destroy {tmp}");
    }
    let _ = writeln!(text, "create {tmp} {kind}");
    for member in members {
        let _ = writeln!(text, "add {tmp} {member}");
    }
    let _ = writeln!(text, "swap {tmp} {set}");
    let _ = writeln!(text, "destroy {tmp}");
    text
}

/// hearth's table in the nftables `bridge` family: filters the frames guests' ports send
/// into the bridge (prerouting: before the bridge learns their source MAC, forwards them or
/// hands them to the host).
pub const BRIDGE_TABLE: &str = "hearth";
/// The set of leases in [`BRIDGE_TABLE`]: (TAP, MAC, IPv4) each guest port may send from.
pub const LEASE_SET: &str = "leases";

/// One element of [`LEASE_SET`]: the guest's TAP, MAC and IP.
#[must_use]
pub fn lease_element(guest: &GuestSpec) -> PortLease {
    PortLease {
        port: guest.tap.clone(),
        mac: guest.mac,
        ip: guest.ip,
    }
}

/// The `nft -f` text that replaces hearth's bridge table as one transaction (creating it
/// first makes the delete valid when it does not exist yet). From a port named
/// `<guest_ports>*`:
/// - every frame that is neither IPv4 nor ARP is dropped (guests are IPv4-only: no IPv6 to
///   the host's link-local addresses, no other protocols);
/// - under anti-spoofing, an ARP frame whose Ethernet source, ARP sender MAC and sender IP
///   are not the port's lease is dropped, and so is an IPv4 frame whose Ethernet source and
///   source IP are not (which also keeps a guest from moving another guest's MAC to its port
///   in the bridge's forwarding table).
#[must_use]
pub fn bridge_table_text(config: &NatConfig, desired: &[GuestSpec]) -> String {
    let ports = &config.guest_ports;
    let mut text = format!(
        "table bridge {BRIDGE_TABLE}\ndelete table bridge {BRIDGE_TABLE}\n\
         table bridge {BRIDGE_TABLE} {{\n\
         \tset {LEASE_SET} {{\n\t\ttype ifname . ether_addr . ipv4_addr\n"
    );
    if config.anti_spoofing && !desired.is_empty() {
        let elements: Vec<String> = desired
            .iter()
            .map(|g| lease_element(g).to_string())
            .collect();
        let _ = writeln!(text, "\t\telements = {{ {} }}", elements.join(", "));
    }
    text.push_str("\t}\n");
    text.push_str(
        "\tchain prerouting {\n\t\ttype filter hook prerouting priority filter; policy accept;\n",
    );
    let _ = writeln!(text, "\t\tiifname != \"{ports}*\" return");
    text.push_str("\t\tether type != { ip, arp } drop\n");
    if config.anti_spoofing {
        text.push_str(
            "\t\tether type arp iifname . ether saddr . arp saddr ip != @leases drop\n\
             \t\tether type arp iifname . arp saddr ether . arp saddr ip != @leases drop\n\
             \t\tether type ip iifname . ether saddr . ip saddr != @leases drop\n",
        );
    }
    text.push_str("\t}\n}\n");
    text
}

/// The `nft -f` text that removes hearth's bridge table, present or not.
#[must_use]
pub fn bridge_teardown_text() -> String {
    format!("table bridge {BRIDGE_TABLE}\ndelete table bridge {BRIDGE_TABLE}\n")
}

/// The ipset type (with creation options) of the NAT set.
#[must_use]
pub fn nat_set_kind() -> String {
    "hash:ip family inet".to_owned()
}

/// The ipset type (with creation options) of the guest set: a bitmap over the bridge subnet
/// (this kernel family also lacks `hash:ip,mac`; a bitmap is also faster and bounded).
#[must_use]
pub fn guest_set_kind(config: &NatConfig) -> String {
    format!("bitmap:ip,mac range {}", config.cidr.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::MacAddr;
    use std::net::Ipv4Addr;

    fn config() -> NatConfig {
        NatConfig {
            bridge: "hearth0".into(),
            cidr: "172.31.240.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(172, 31, 240, 1),
            egress: Some("eth0".into()),
            guest_ports: "hth".into(),
            isolate_guests: true,
            block_guest_to_host: true,
            anti_spoofing: true,
        }
    }

    #[test]
    fn forward_chain_has_every_switch_on() {
        assert_eq!(
            chain_rules(&config(), Some("eth0"), CHAIN_FORWARD),
            [
                "-A HEARTH-FORWARD -i hearth0 -m set ! --match-set hearth-guests src,src -j DROP",
                "-A HEARTH-FORWARD ! -i hearth0 -o hearth0 -m conntrack --ctstate DNAT -j ACCEPT",
                "-A HEARTH-FORWARD -i hearth0 -m conntrack --ctstate DNAT --ctdir REPLY -j ACCEPT",
                "-A HEARTH-FORWARD -i eth0 -o hearth0 -m set --match-set hearth-nat dst -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                "-A HEARTH-FORWARD -i hearth0 -o eth0 -m set --match-set hearth-nat src -j ACCEPT",
                "-A HEARTH-FORWARD -i hearth0 -o hearth0 -j DROP",
                "-A HEARTH-FORWARD -i hearth0 -j DROP",
                "-A HEARTH-FORWARD -o hearth0 -j DROP",
            ]
        );
    }

    #[test]
    fn input_chain_allows_dns_to_the_gateway_and_translated_hairpins() {
        assert_eq!(
            chain_rules(&config(), Some("eth0"), CHAIN_INPUT),
            [
                "-A HEARTH-INPUT -i hearth0 -m set ! --match-set hearth-guests src,src -j DROP",
                "-A HEARTH-INPUT -d 172.31.240.1/32 -i hearth0 -p udp -m udp --dport 53 -j ACCEPT",
                "-A HEARTH-INPUT -d 172.31.240.1/32 -i hearth0 -p tcp -m tcp --dport 53 -j ACCEPT",
                "-A HEARTH-INPUT -i hearth0 -p udp -m conntrack --ctstate DNAT --ctdir ORIGINAL -m socket --restore-skmark -m mark --mark 0x2068 -j ACCEPT",
                "-A HEARTH-INPUT -i hearth0 -p udp -m conntrack --ctstate DNAT --ctdir ORIGINAL -j DROP",
                "-A HEARTH-INPUT -i hearth0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                "-A HEARTH-INPUT -i hearth0 -m conntrack --ctstate DNAT --ctdir ORIGINAL -m socket --restore-skmark -m mark --mark 0x2068 -j ACCEPT",
                "-A HEARTH-INPUT -i hearth0 -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate DNAT --ctdir ORIGINAL -m socket --transparent -j ACCEPT",
                "-A HEARTH-INPUT -i hearth0 -j DROP",
            ]
        );
    }

    #[test]
    fn switches_off_drop_their_rules() {
        let c = NatConfig {
            isolate_guests: false,
            block_guest_to_host: false,
            anti_spoofing: false,
            ..config()
        };
        assert!(chain_rules(&c, Some("eth0"), CHAIN_INPUT).is_empty());
        let fwd = chain_rules(&c, Some("eth0"), CHAIN_FORWARD);
        assert!(fwd.iter().all(|r| !r.contains(GUEST_SET)));
        assert!(fwd.contains(&"-A HEARTH-FORWARD -i hearth0 -o hearth0 -j ACCEPT".to_owned()));
    }

    #[test]
    fn bridge_table_drops_non_ipv4_and_binds_ports_to_leases() {
        let ip = Ipv4Addr::new(172, 31, 240, 7);
        let g = GuestSpec {
            tap: "hth3".into(),
            ip,
            mac: MacAddr::for_guest(ip),
            nat: false,
        };
        let text = bridge_table_text(&config(), std::slice::from_ref(&g));
        assert!(text.starts_with(
            "table bridge hearth\ndelete table bridge hearth\ntable bridge hearth {\n"
        ));
        for line in [
            "elements = { \"hth3\" . 06:00:ac:1f:f0:07 . 172.31.240.7 }",
            "iifname != \"hth*\" return",
            "ether type != { ip, arp } drop",
            "ether type arp iifname . ether saddr . arp saddr ip != @leases drop",
            "ether type arp iifname . arp saddr ether . arp saddr ip != @leases drop",
            "ether type ip iifname . ether saddr . ip saddr != @leases drop",
        ] {
            assert!(text.contains(line), "{line} not in {text}");
        }
        // Without anti-spoofing, only the protocol wall stays.
        let open = NatConfig {
            anti_spoofing: false,
            ..config()
        };
        let text = bridge_table_text(&open, &[g]);
        assert!(text.contains("ether type != { ip, arp } drop"));
        assert!(
            !text.contains("@leases") && !text.contains("elements"),
            "{text}"
        );
    }

    #[test]
    fn without_egress_nothing_is_masqueraded_or_forwarded_out() {
        // Nothing is masqueraded (guests reach published ports through hairpin proxies, not
        // through a translation between guests).
        let post = chain_rules(&config(), None, CHAIN_POSTROUTING);
        assert!(post.is_empty(), "{post:?}");
        let fwd = chain_rules(&config(), None, CHAIN_FORWARD);
        let accepts = fwd.iter().filter(|r| r.contains("ACCEPT"));
        assert!(
            accepts.clone().all(|r| r.contains("--ctstate DNAT")),
            "{fwd:?}"
        );
        assert!(fwd.contains(&"-A HEARTH-FORWARD -i hearth0 -j DROP".to_owned()));
    }

    #[test]
    fn masquerade_only_for_nat_set_out_of_egress() {
        assert_eq!(
            chain_rules(&config(), Some("eth0"), CHAIN_POSTROUTING),
            [
                "-A HEARTH-POSTROUTING -s 172.31.240.0/24 -o eth0 -m set --match-set hearth-nat src -j MASQUERADE",
            ]
        );
    }

    #[test]
    fn restore_text_declares_chains_and_one_jump_each() {
        let text = restore_text(&config(), Some("eth0"), &Listings::default());
        assert!(
            text.starts_with(
                "*nat\n:HEARTH-PUBLISH - [0:0]\n:HEARTH-PREROUTING - [0:0]\n\
                 :HEARTH-OUTPUT - [0:0]\n:HEARTH-POSTROUTING - [0:0]\n"
            ),
            "{text}"
        );
        assert!(text.contains("*filter\n:HEARTH-FORWARD - [0:0]\n:HEARTH-INPUT - [0:0]\n"));
        for (_, builtin, chain) in HOOKS {
            assert_eq!(
                text.matches(&format!("-I {builtin} 1 -j {chain}\n"))
                    .count(),
                1
            );
        }
        assert!(!text.contains("-D "));
        assert_eq!(text.matches("COMMIT\n").count(), 2);
    }

    #[test]
    fn duplicated_jumps_are_all_deleted_before_the_single_insert() {
        let current = Listings {
            nat: String::new(),
            filter: "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-N HEARTH-FORWARD\n\
                     -A FORWARD -j HEARTH-FORWARD\n-A FORWARD -s 10.1.1.1/32 -j ACCEPT\n\
                     -A FORWARD -j HEARTH-FORWARD\n-A FORWARD -j HEARTH-FORWARDX\n\
                     -A INPUT -i hearth0 -j HEARTH-INPUT\n"
                .into(),
        };
        let text = restore_text(&config(), Some("eth0"), &current);
        assert_eq!(text.matches("-D FORWARD -j HEARTH-FORWARD\n").count(), 2);
        assert!(text.contains("-D INPUT -i hearth0 -j HEARTH-INPUT\n"));
        // Foreign rules and look-alike chain names are not touched.
        assert!(!text.contains("10.1.1.1"));
        assert!(!text.contains("HEARTH-FORWARDX"));
        let del = text.find("-D FORWARD").unwrap();
        let ins = text.find("-I FORWARD 1").unwrap();
        assert!(del < ins);
    }

    #[test]
    fn teardown_removes_jumps_then_chains_and_nothing_else() {
        let current = Listings {
            nat: "-P POSTROUTING ACCEPT\n-N HEARTH-POSTROUTING\n-A POSTROUTING -j HEARTH-POSTROUTING\n\
                  -A POSTROUTING -o eth0 -j MASQUERADE\n-A HEARTH-POSTROUTING -j RETURN\n"
                .into(),
            filter: "-N HEARTH-INPUT\n".into(),
        };
        let text = teardown_text(&current).unwrap();
        assert_eq!(
            text,
            "*nat\n-D POSTROUTING -j HEARTH-POSTROUTING\n-F HEARTH-POSTROUTING\n-X HEARTH-POSTROUTING\nCOMMIT\n\
             *filter\n-F HEARTH-INPUT\n-X HEARTH-INPUT\nCOMMIT\n"
        );
        assert_eq!(teardown_text(&Listings::default()), None);
    }

    #[test]
    fn sets_are_rebuilt_through_a_swapped_scratch_set() {
        let ip = Ipv4Addr::new(172, 31, 240, 7);
        let desired = [
            GuestSpec {
                tap: "hth7".into(),
                ip,
                mac: MacAddr::for_guest(ip),
                nat: true,
            },
            GuestSpec {
                tap: "hth8".into(),
                ip: Ipv4Addr::new(172, 31, 240, 8),
                mac: MacAddr::for_guest(Ipv4Addr::new(172, 31, 240, 8)),
                nat: false,
            },
        ];
        let (nat, guests) = set_members(&desired);
        assert_eq!(nat, BTreeSet::from([SetEntry::Ip(ip)]));
        assert_eq!(guests.len(), 2);
        assert_eq!(
            set_rebuild_text(NAT_SET, &nat_set_kind(), &nat, &[]),
            "create hearth-nat hash:ip family inet\n\
             create hearth-nat-tmp hash:ip family inet\n\
             add hearth-nat-tmp 172.31.240.7\nswap hearth-nat-tmp hearth-nat\ndestroy hearth-nat-tmp\n"
        );
        // An existing set is kept (swapped into); a crash's scratch set is replaced.
        let existing = [NAT_SET.to_owned(), temp_set(NAT_SET)];
        assert_eq!(
            set_rebuild_text(NAT_SET, &nat_set_kind(), &BTreeSet::new(), &existing),
            "destroy hearth-nat-tmp\ncreate hearth-nat-tmp hash:ip family inet\n\
             swap hearth-nat-tmp hearth-nat\ndestroy hearth-nat-tmp\n"
        );
        assert_eq!(
            guest_set_kind(&config()),
            "bitmap:ip,mac range 172.31.240.0/24"
        );
    }
}
