//! hearth's published ports as nftables maps, so that publishing or withdrawing a port is one
//! in-process netlink transaction whose cost does not depend on how many ports or VMs there
//! are (an `iptables-restore` of even one line re-reads and rewrites the whole nat table).
//!
//! The table `ip hearth-publish` holds two maps from the destination a packet asks for to the
//! guest address and port it is translated to (and two for guests, below): `addr` (`ip daddr . l4proto . dport`, for
//! ports published on one host address) and `any` (`l4proto . dport`, for every address of
//! the host). Two base chains at the nat hooks (`prerouting`: from outside; `output`: from
//! the host itself) look a packet to one of the host's own addresses up in `addr`, then in
//! `any`; a miss leaves the packet alone.
//!
//! Packets from guests (arriving on the bridge) are looked up instead in `hairpin_addr` and
//! `hairpin_any`, whose elements lead to the ports' hairpin proxies on the gateway
//! (`host::hairpin`), and are never translated to a guest (`HEARTH-INPUT` lets such a
//! translated packet in only to a socket carrying [`crate::host::hairpin::SOCKET_MARK`]).
//!
//! Ports on the loopback (`127.0.0.1:...`, or any address asked for as `localhost`) reach a
//! guest from the host because the bridge routes loopback addresses (`route_localnet`, which
//! `NatActor` sets): `postrouting` masquerades packets leaving on the bridge from 127/8 to the
//! gateway, so the guest's answer comes back through the host, and `localnet` (before
//! conntrack) drops what `route_localnet` would otherwise let in: packets arriving on the
//! bridge to or from 127/8, so no guest reaches the host's loopback services. The table is written whole
//! by `nft -f` ([`table_text`], setup and reconcile, atomically with its elements) and removed
//! by [`teardown_text`]; its elements change through [`batch`] over [`super::nft_netlink`].
//!
//! Priority -100 (`dstnat`) is the nat tables' own, for both iptables flavours: the kernel
//! runs nat chains of one hook in turn until one binds the connection, and hearth's iptables
//! nat chains no longer translate destinations, so the order between them does not matter.

use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4};

use hearth_proto::api_publish::{PortMapping, Protocol};

use super::nft_netlink::{
    put_attr, put_message, put_nested, put_str, Step, NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END,
    NFNL_SUBSYS_NFTABLES, NFTA_DATA_VALUE, NFTA_LIST_ELEM, NFTA_SET_ELEM_KEY,
    NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_TABLE,
    NFT_MSG_DELSETELEM, NFT_MSG_NEWSETELEM, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST,
};

/// hearth's `ip`-family table of published ports.
pub const TABLE: &str = "hearth-publish";
/// The map of ports published on one host address.
pub const MAP_ADDR: &str = "addr";
/// The map of ports published on every host address.
pub const MAP_ANY: &str = "any";
/// The map of ports published on one host address, for guests: to their hairpin proxies.
pub const MAP_HAIRPIN_ADDR: &str = "hairpin_addr";
/// The map of ports published on every host address, for guests: to their hairpin proxies.
pub const MAP_HAIRPIN_ANY: &str = "hairpin_any";

/// `NFPROTO_IPV4`.
const NFPROTO_IPV4: u8 = 2;
/// `enum nft_set_elem_attributes`: `NFTA_SET_ELEM_DATA`.
const NFTA_SET_ELEM_DATA: u16 = 2;

/// One published port as a map element: the mapping and the guest address it leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublishElement {
    /// The mapping (host address, host port, guest port, protocol).
    pub mapping: PortMapping,
    /// The guest address (the DNAT target).
    pub guest_ip: Ipv4Addr,
}

impl PublishElement {
    /// The map the element belongs to.
    #[must_use]
    pub fn map(&self) -> &'static str {
        map_of(&self.mapping, MAP_ADDR, MAP_ANY)
    }

    /// The key, as the kernel lays out a concatenation: each part padded to a 4-byte
    /// register (`ipv4_addr` 4, `inet_proto` 1 + 3, `inet_service` 2 + 2, big-endian).
    #[must_use]
    pub fn key(&self) -> Vec<u8> {
        mapping_key(&self.mapping)
    }

    /// The data: `ipv4_addr . inet_service`, laid out like the key.
    #[must_use]
    pub fn data(&self) -> [u8; 8] {
        address_data(SocketAddrV4::new(self.guest_ip, self.mapping.guest_port))
    }
}

/// One published port as an element of the hairpin maps: the mapping and the hairpin proxy
/// (`host::hairpin`) that guests' packets to it are translated to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HairpinElement {
    /// The mapping.
    pub mapping: PortMapping,
    /// The proxy's address (the gateway) and port.
    pub proxy: SocketAddrV4,
}

impl HairpinElement {
    /// The map the element belongs to.
    #[must_use]
    pub fn map(&self) -> &'static str {
        map_of(&self.mapping, MAP_HAIRPIN_ADDR, MAP_HAIRPIN_ANY)
    }
}

impl fmt::Display for HairpinElement {
    /// The element as `nft` writes it, e.g. `tcp . 8080 : 172.31.240.1 . 40001`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_element(f, &self.mapping, self.proxy)
    }
}

/// `addr` for a mapping on one host address, `any` for one on every address.
fn map_of(m: &PortMapping, addr: &'static str, any: &'static str) -> &'static str {
    if m.host_addr.is_some() {
        addr
    } else {
        any
    }
}

/// An element as `nft` writes it: `[host address . ]protocol . port : address . port`.
fn write_element(f: &mut fmt::Formatter<'_>, m: &PortMapping, to: SocketAddrV4) -> fmt::Result {
    if let Some(addr) = m.host_addr {
        write!(f, "{addr} . ")?;
    }
    write!(
        f,
        "{} . {} : {} . {}",
        m.protocol.as_str(),
        m.host_port,
        to.ip(),
        to.port()
    )
}

/// A mapping's key in the maps: see [`PublishElement::key`].
fn mapping_key(m: &PortMapping) -> Vec<u8> {
    let mut key = Vec::with_capacity(12);
    if let Some(addr) = m.host_addr {
        key.extend_from_slice(&addr.octets());
    }
    key.extend_from_slice(&[proto_number(m.protocol), 0, 0, 0]);
    key.extend_from_slice(&m.host_port.to_be_bytes());
    key.extend_from_slice(&[0, 0]);
    key
}

/// An address and port as map data: see [`PublishElement::data`].
fn address_data(to: SocketAddrV4) -> [u8; 8] {
    let mut data = [0u8; 8];
    data[..4].copy_from_slice(&to.ip().octets());
    data[4..6].copy_from_slice(&to.port().to_be_bytes());
    data
}

impl fmt::Display for PublishElement {
    /// The element as `nft` writes it, e.g. `10.0.0.1 . tcp . 8080 : 172.31.240.5 . 80`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_element(
            f,
            &self.mapping,
            SocketAddrV4::new(self.guest_ip, self.mapping.guest_port),
        )
    }
}

/// The IP protocol number.
fn proto_number(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
    }
}

/// One change to the published ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PublishChange {
    /// Publish the port (adding a present, identical element is a no-op).
    Add(PublishElement),
    /// Withdraw it (withdrawing an absent one is a no-op).
    Remove(PublishElement),
    /// Send guests' packets to the port to its hairpin proxy.
    AddHairpin(HairpinElement),
    /// Stop doing so.
    RemoveHairpin(HairpinElement),
}

/// What a batch needs of a change.
struct ElementParts {
    adds: bool,
    map: &'static str,
    key: Vec<u8>,
    data: [u8; 8],
    /// The step's text, e.g. `add tcp . 8080 : 172.31.240.5 . 80`.
    what: String,
}

impl PublishChange {
    fn parts(&self) -> ElementParts {
        let adds = matches!(self, PublishChange::Add(_) | PublishChange::AddHairpin(_));
        let verb = if adds { "add" } else { "remove" };
        match self {
            PublishChange::Add(e) | PublishChange::Remove(e) => ElementParts {
                adds,
                map: e.map(),
                key: e.key(),
                data: e.data(),
                what: format!("{verb} {e}"),
            },
            PublishChange::AddHairpin(e) | PublishChange::RemoveHairpin(e) => ElementParts {
                adds,
                map: e.map(),
                key: mapping_key(&e.mapping),
                data: address_data(e.proxy),
                what: format!("{verb} hairpin {e}"),
            },
        }
    }
}

/// The `nft -f` text that replaces hearth's publish table with one holding exactly
/// `elements` and `hairpins`, as one transaction (creating the table first, so deleting it
/// cannot fail); `bridge` is the guests' bridge, whose loopback traffic the table guards and
/// masquerades and whose packets to published ports go to hairpin proxies.
#[must_use]
pub fn table_text<'a>(
    bridge: &str,
    elements: impl IntoIterator<Item = &'a PublishElement>,
    hairpins: impl IntoIterator<Item = &'a HairpinElement>,
) -> String {
    let (mut addr, mut any) = (Vec::new(), Vec::new());
    for e in elements {
        let list = if e.mapping.host_addr.is_some() {
            &mut addr
        } else {
            &mut any
        };
        list.push(e.to_string());
    }
    let (mut hairpin_addr, mut hairpin_any) = (Vec::new(), Vec::new());
    for e in hairpins {
        let list = if e.mapping.host_addr.is_some() {
            &mut hairpin_addr
        } else {
            &mut hairpin_any
        };
        list.push(e.to_string());
    }
    let map = |name: &str, key: &str, elements: &[String]| {
        let mut text = format!("  map {name} {{\n    type {key} : ipv4_addr . inet_service\n");
        if !elements.is_empty() {
            let _ = writeln!(text, "    elements = {{ {} }}", elements.join(", "));
        }
        text.push_str("  }\n");
        text
    };
    // A packet to one of the host's addresses: first the port on that address, then the
    // port on every address. A miss in a map lookup ends the rule, not the chain.
    let lookups = |only: &str, addr: &str, any: &str| {
        format!(
            "    {only}fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @{addr}\n    \
             {only}fib daddr type local dnat ip to meta l4proto . th dport map @{any}\n"
        )
    };
    let chain = |name: &str, hook: &str, first: &str| {
        format!(
            "  chain {name} {{\n    type nat hook {hook} priority -100; policy accept;\n{first}{}  }}\n",
            lookups("", MAP_ADDR, MAP_ANY)
        )
    };
    // Guests' packets go to the ports' hairpin proxies, never to the guests behind them (see
    // `host::hairpin` for why), and nothing else here translates them.
    let from_guests = format!(
        "{}    iifname \"{bridge}\" return\n",
        lookups(
            &format!("iifname \"{bridge}\" "),
            MAP_HAIRPIN_ADDR,
            MAP_HAIRPIN_ANY
        )
    );
    let addr_key = "ipv4_addr . inet_proto . inet_service";
    let any_key = "inet_proto . inet_service";
    let mut text = format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n");
    text += &map(MAP_ADDR, addr_key, &addr);
    text += &map(MAP_ANY, any_key, &any);
    text += &map(MAP_HAIRPIN_ADDR, addr_key, &hairpin_addr);
    text += &map(MAP_HAIRPIN_ANY, any_key, &hairpin_any);
    text += &chain("prerouting", "prerouting", &from_guests);
    text += &chain("output", "output", "");
    // Priority -300 (raw): before conntrack, so a dropped packet leaves no entry.
    let _ = write!(
        text,
        "  chain localnet {{\n    type filter hook prerouting priority -300; policy accept;\n    \
         iifname \"{bridge}\" ip daddr 127.0.0.0/8 drop\n    \
         iifname \"{bridge}\" ip saddr 127.0.0.0/8 drop\n  }}\n  \
         chain postrouting {{\n    type nat hook postrouting priority 100; policy accept;\n    \
         oifname \"{bridge}\" ip saddr 127.0.0.0/8 masquerade\n  }}\n"
    );
    text.push_str("}\n");
    text
}

/// Where a hairpin element of the kernel's table leads: its key (protocol, host address if
/// any, host port) and the proxy's port.
pub type ListedHairpin = ((Protocol, Option<Ipv4Addr>, u16), u16);

/// The hairpin elements of `nft -j list table ip hearth-publish` output; what cannot be read
/// is left out (the table is hearth's own, so that is nothing in practice).
#[must_use]
pub fn parse_hairpins(json: &str) -> Vec<ListedHairpin> {
    let mut found = Vec::new();
    for (name, elems) in super::nft_json::elements(json, "map") {
        let with_addr = match name.as_str() {
            MAP_HAIRPIN_ADDR => true,
            MAP_HAIRPIN_ANY => false,
            _ => continue,
        };
        for elem in &elems {
            let (Some(key), Some(data)) = (
                super::nft_json::concat(&elem[0]),
                super::nft_json::concat(&elem[1]),
            ) else {
                continue;
            };
            let (addr, rest) = if with_addr {
                let Some(addr) = key.first().and_then(|a| a.as_str()?.parse().ok()) else {
                    continue;
                };
                (Some(addr), &key[1..])
            } else {
                (None, &key[..])
            };
            let protocol = match rest.first().and_then(serde_json::Value::as_str) {
                Some("tcp") => Protocol::Tcp,
                Some("udp") => Protocol::Udp,
                _ => continue,
            };
            let port = |v: Option<&serde_json::Value>| v?.as_u64()?.try_into().ok();
            if let (Some(host_port), Some(proxy)) = (port(rest.get(1)), port(data.get(1))) {
                found.push(((protocol, addr, host_port), proxy));
            }
        }
    }
    found
}

/// The `nft -f` text that removes hearth's publish table, present or not.
#[must_use]
pub fn teardown_text() -> String {
    format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\n")
}

/// A batch applying `changes` in order to hearth's publish maps, numbered from `seq` (its
/// `BATCH_BEGIN`): the bytes to send and the element messages the kernel will answer. A
/// removal first adds the element (with the same data), so that removing an absent one is
/// valid on kernels without `DESTROYSETELEM`.
#[must_use]
pub fn batch(changes: &[PublishChange], seq: u32) -> (Vec<u8>, Vec<Step>) {
    let mut buf = Vec::with_capacity(64 + changes.len() * 200);
    let mut steps = Vec::new();
    let mut seq = seq;
    let nftables = (0u8, NFNL_SUBSYS_NFTABLES);
    put_message(
        &mut buf,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        nftables,
        |_| {},
    );
    let mut element = |buf: &mut Vec<u8>, kind: u16, flags: u16, parts: &ElementParts| {
        seq = seq.wrapping_add(1);
        let kind = (NFNL_SUBSYS_NFTABLES << 8) | kind;
        let with_data = kind & 0xff == NFT_MSG_NEWSETELEM;
        put_message(buf, kind, flags, seq, (NFPROTO_IPV4, 0), |b| {
            put_str(b, NFTA_SET_ELEM_LIST_TABLE, TABLE);
            put_str(b, NFTA_SET_ELEM_LIST_SET, parts.map);
            put_nested(b, NFTA_SET_ELEM_LIST_ELEMENTS, |b| {
                put_nested(b, NFTA_LIST_ELEM, |b| {
                    put_nested(b, NFTA_SET_ELEM_KEY, |b| {
                        put_attr(b, NFTA_DATA_VALUE, &parts.key);
                    });
                    if with_data {
                        put_nested(b, NFTA_SET_ELEM_DATA, |b| {
                            put_attr(b, NFTA_DATA_VALUE, &parts.data);
                        });
                    }
                });
            });
        });
        steps.push(Step {
            seq,
            what: parts.what.clone(),
        });
    };
    // Without NLM_F_EXCL, adding an identical present element is not an error.
    let add = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK;
    let del = NLM_F_REQUEST | NLM_F_ACK;
    for change in changes {
        let parts = change.parts();
        element(&mut buf, NFT_MSG_NEWSETELEM, add, &parts);
        if !parts.adds {
            element(&mut buf, NFT_MSG_DELSETELEM, del, &parts);
        }
    }
    seq = seq.wrapping_add(1);
    put_message(
        &mut buf,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq,
        nftables,
        |_| {},
    );
    (buf, steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn element(mapping: &str, last: u8) -> PublishElement {
        PublishElement {
            mapping: mapping.parse().unwrap(),
            guest_ip: Ipv4Addr::new(172, 31, 240, last),
        }
    }

    #[test]
    fn keys_and_data_are_laid_out_in_registers() {
        // As `nft --debug=netlink add element ...` shows them.
        let any = element("8081:81", 6);
        assert_eq!(any.map(), MAP_ANY);
        assert_eq!(any.key(), [6, 0, 0, 0, 0x1f, 0x91, 0, 0]);
        assert_eq!(any.data(), [172, 31, 240, 6, 0, 81, 0, 0]);
        let addr = element("127.0.0.1:5353:53/udp", 5);
        assert_eq!(addr.map(), MAP_ADDR);
        assert_eq!(addr.key(), [127, 0, 0, 1, 17, 0, 0, 0, 0x14, 0xe9, 0, 0]);
        assert_eq!(
            addr.to_string(),
            "127.0.0.1 . udp . 5353 : 172.31.240.5 . 53"
        );
    }

    #[test]
    fn the_table_text_holds_each_element_in_its_map() {
        let hairpin = HairpinElement {
            mapping: "8080:80".parse().unwrap(),
            proxy: "172.31.240.1:40001".parse().unwrap(),
        };
        let text = table_text(
            "hearth0",
            &[element("8080:80", 5), element("10.0.0.1:53:53/udp", 6)],
            &[hairpin],
        );
        assert!(text.starts_with(
            "table ip hearth-publish {}\ndelete table ip hearth-publish\ntable ip hearth-publish {\n"
        ));
        assert!(
            text.contains("elements = { 10.0.0.1 . udp . 53 : 172.31.240.6 . 53 }"),
            "{text}"
        );
        assert!(
            text.contains("elements = { tcp . 8080 : 172.31.240.5 . 80 }"),
            "{text}"
        );
        assert!(
            text.contains("type nat hook output priority -100;"),
            "{text}"
        );
        // Loopback traffic of the bridge: martians dropped before conntrack, the host's own
        // masqueraded to the gateway.
        assert!(
            text.contains("iifname \"hearth0\" ip daddr 127.0.0.0/8 drop\n"),
            "{text}"
        );
        assert!(
            text.contains("iifname \"hearth0\" ip saddr 127.0.0.0/8 drop\n"),
            "{text}"
        );
        assert!(
            text.contains("oifname \"hearth0\" ip saddr 127.0.0.0/8 masquerade\n"),
            "{text}"
        );
        // Guests' packets go to hairpin proxies, before and instead of the translations to
        // guests; only sockets of hearth's proxies receive them.
        assert!(
            text.contains("map hairpin_any {\n    type inet_proto . inet_service : ipv4_addr . inet_service\n    elements = { tcp . 8080 : 172.31.240.1 . 40001 }"),
            "{text}"
        );
        let prerouting = text
            .split("chain prerouting {")
            .nth(1)
            .and_then(|c| c.split("  }\n").next())
            .unwrap();
        let rules: Vec<&str> = prerouting.lines().skip(2).map(str::trim).collect();
        assert_eq!(
            rules,
            [
                "iifname \"hearth0\" fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @hairpin_addr",
                "iifname \"hearth0\" fib daddr type local dnat ip to meta l4proto . th dport map @hairpin_any",
                "iifname \"hearth0\" return",
                "fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @addr",
                "fib daddr type local dnat ip to meta l4proto . th dport map @any",
            ],
            "{text}"
        );
        assert!(
            !text
                .split("chain output {")
                .nth(1)
                .unwrap()
                .split("  }\n")
                .next()
                .unwrap()
                .contains("hairpin"),
            "{text}"
        );
        // Without elements, the maps are declared empty.
        assert!(!table_text("hearth0", &[], &[]).contains("elements"));
    }

    #[test]
    fn the_kernels_hairpin_elements_are_read_back() {
        // As `nft -j list table ip hearth-publish` (nft 1.0.6) prints them.
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "ip", "name": "hearth-publish", "handle": 1}},
            {"map": {"family": "ip", "name": "any", "table": "hearth-publish", "elem": [[{"concat": ["tcp", 8080]}, {"concat": ["172.31.240.5", 80]}]]}},
            {"map": {"family": "ip", "name": "hairpin_addr", "table": "hearth-publish", "elem": [[{"concat": ["10.98.0.1", "udp", 5353]}, {"concat": ["172.31.240.1", 40002]}]]}},
            {"map": {"family": "ip", "name": "hairpin_any", "table": "hearth-publish", "elem": [[{"concat": ["tcp", 8080]}, {"concat": ["172.31.240.1", 40001]}], [{"concat": ["sctp", 1]}, {"concat": ["172.31.240.1", 2]}]]}}]}"#;
        assert_eq!(
            parse_hairpins(json),
            [
                (
                    (Protocol::Udp, Some(Ipv4Addr::new(10, 98, 0, 1)), 5353),
                    40002
                ),
                ((Protocol::Tcp, None, 8080), 40001),
            ]
        );
        assert!(parse_hairpins("not json").is_empty());
    }

    #[test]
    fn a_batch_adds_with_data_and_removes_after_adding() {
        let e = element("8080:80", 5);
        let (buf, steps) = batch(&[PublishChange::Remove(e), PublishChange::Add(e)], 40);
        assert_eq!(
            steps.iter().map(|s| s.seq).collect::<Vec<_>>(),
            [41, 42, 43]
        );
        assert_eq!(steps[0].what, "remove tcp . 8080 : 172.31.240.5 . 80");
        // Walk the messages: begin, new, del, new, end; family IPv4 for the elements.
        let mut kinds = Vec::new();
        let mut data = &buf[..];
        while !data.is_empty() {
            let len = u32::from_ne_bytes(data[..4].try_into().unwrap()) as usize;
            kinds.push((u16::from_ne_bytes([data[4], data[5]]), data[16]));
            let body = &data[20..len];
            let has_data = body.windows(8).any(|w| w == e.data());
            if kinds.last().unwrap().0 == 0x0a0e {
                assert!(!has_data, "a deletion carries only the key");
            } else if kinds.last().unwrap().0 == 0x0a0c {
                assert!(has_data && body.windows(8).any(|w| w == e.key()));
            }
            data = &data[len..];
        }
        assert_eq!(
            kinds,
            [(0x10, 0), (0x0a0c, 2), (0x0a0e, 2), (0x0a0c, 2), (0x11, 0)]
        );
    }
}
