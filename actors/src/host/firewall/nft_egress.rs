//! In-process changes to the sets of hearth's egress-policy table (an `ip`-family nftables
//! table, see `nat::egress`): the same one-batch, one-transaction netlink exchange as the
//! bridge table's leases ([`super::nft_netlink`]), for keys made of IPv4 addresses, CIDR
//! ranges, protocols and ports, with an optional per-element timeout.
//!
//! Keys are laid out as nft lays out the concatenations hearth declares: each part padded to a
//! 4-byte register. A CIDR is its network address in the set of its prefix length.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::nft_netlink::{
    pub_attrs as a, put_attr, put_message, put_nested, put_str, NftError, NftSocket, Step,
};

/// `NFPROTO_IPV4`: the family of the egress table.
const NFPROTO_IPV4: u8 = 2;
/// `NFTA_SET_ELEM_TIMEOUT` (u64, milliseconds, big endian).
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;

/// One element of an egress set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EgressElement {
    /// A guest (`ipv4_addr`): membership of the deny-mode and the denied-counter sets.
    Guest(Ipv4Addr),
    /// A guest and a destination network (`ipv4_addr . ipv4_addr`, in the set of its prefix).
    Net(Ipv4Addr, Ipv4Net),
    /// A guest, a protocol (6 or 17), a destination port and range
    /// (`ipv4_addr . inet_proto . inet_service . ipv4_addr`, in the set of its prefix).
    Port(Ipv4Addr, u8, u16, Ipv4Net),
    /// A guest and one destination address (`ipv4_addr . ipv4_addr`).
    Addr(Ipv4Addr, Ipv4Addr),
}

impl EgressElement {
    /// The element's key. A range is keyed by its network address in the set of its prefix
    /// length (see [`EgressElement::set_for`]): hash sets, so a change costs the same whatever
    /// the number of elements (interval sets of concatenations are rebuilt whole per change).
    #[must_use]
    pub fn key(&self) -> Vec<u8> {
        let cat = |parts: &[[u8; 4]]| parts.concat();
        match *self {
            EgressElement::Guest(g) => g.octets().to_vec(),
            EgressElement::Addr(g, d) => cat(&[g.octets(), d.octets()]),
            EgressElement::Net(g, net) => cat(&[g.octets(), net.trunc().network().octets()]),
            EgressElement::Port(g, proto, port, net) => {
                let [hi, lo] = port.to_be_bytes();
                cat(&[
                    g.octets(),
                    [proto, 0, 0, 0],
                    [hi, lo, 0, 0],
                    net.trunc().network().octets(),
                ])
            }
        }
    }

    /// The set the element lives in, from the set family `base`: ranges go to
    /// `<base><prefix length>` (e.g. `nets16`), everything else to `base`.
    #[must_use]
    pub fn set_for(&self, base: &str) -> String {
        match self {
            EgressElement::Net(_, net) | EgressElement::Port(_, _, _, net) => {
                format!("{base}{}", net.prefix_len())
            }
            EgressElement::Guest(_) | EgressElement::Addr(..) => base.to_owned(),
        }
    }
}

impl fmt::Display for EgressElement {
    /// The element as `nft` writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EgressElement::Guest(g) => write!(f, "{g}"),
            EgressElement::Addr(g, d) => write!(f, "{g} . {d}"),
            EgressElement::Net(g, n) => write!(f, "{g} . {}", n.trunc().network()),
            EgressElement::Port(g, p, port, n) => {
                let proto = match p {
                    6 => "tcp".to_owned(),
                    17 => "udp".to_owned(),
                    other => other.to_string(),
                };
                write!(f, "{g} . {proto} . {port} . {}", n.trunc().network())
            }
        }
    }
}

/// One change to an egress set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EgressChange {
    /// The set (in the egress table).
    pub set: &'static str,
    /// The element.
    pub element: EgressElement,
    /// Add (with this timeout in seconds, if any; an element already present gets the new
    /// timeout) or remove (removing an absent element is a no-op).
    pub op: EgressOp,
}

/// What an [`EgressChange`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EgressOp {
    /// Add the element, expiring after this many seconds when `Some`.
    Add(Option<u32>),
    /// Remove the element.
    Remove,
}

/// The batch applying `changes` to `table`, numbered from `seq`. A removal first adds the
/// element (removing an absent one is then valid on every kernel); an add with a timeout
/// first removes the element, so a present one gets the new timeout.
#[must_use]
pub fn batch(table: &str, changes: &[EgressChange], seq: u32) -> (Vec<u8>, Vec<Step>) {
    let mut buf = Vec::with_capacity(64 + changes.len() * 3 * 96);
    let mut steps = Vec::new();
    let mut seq = seq;
    let nftables = (0u8, a::NFNL_SUBSYS_NFTABLES);
    put_message(
        &mut buf,
        a::NFNL_MSG_BATCH_BEGIN,
        a::NLM_F_REQUEST,
        seq,
        nftables,
        |_| {},
    );
    let add_flags = a::NLM_F_REQUEST | a::NLM_F_CREATE | a::NLM_F_ACK;
    let del_flags = a::NLM_F_REQUEST | a::NLM_F_ACK;
    for change in changes {
        let key = change.element.key();
        let set = change.element.set_for(change.set);
        let what = match change.op {
            EgressOp::Add(_) => format!("add {} to {set}", change.element),
            EgressOp::Remove => format!("remove {} from {set}", change.element),
        };
        let mut message = |buf: &mut Vec<u8>, kind: u16, flags: u16, timeout: Option<u32>| {
            seq = seq.wrapping_add(1);
            let kind = (a::NFNL_SUBSYS_NFTABLES << 8) | kind;
            put_message(buf, kind, flags, seq, (NFPROTO_IPV4, 0), |b| {
                put_str(b, a::NFTA_SET_ELEM_LIST_TABLE, table);
                put_str(b, a::NFTA_SET_ELEM_LIST_SET, &set);
                put_nested(b, a::NFTA_SET_ELEM_LIST_ELEMENTS, |b| {
                    put_nested(b, a::NFTA_LIST_ELEM, |b| {
                        put_nested(b, a::NFTA_SET_ELEM_KEY, |b| {
                            put_attr(b, a::NFTA_DATA_VALUE, &key);
                        });
                        if let Some(secs) = timeout {
                            let ms = u64::from(secs) * 1000;
                            put_attr(b, NFTA_SET_ELEM_TIMEOUT, &ms.to_be_bytes());
                        }
                    });
                });
            });
            steps.push(Step {
                seq,
                what: what.clone(),
            });
        };
        match change.op {
            EgressOp::Add(None) => message(&mut buf, a::NFT_MSG_NEWSETELEM, add_flags, None),
            EgressOp::Add(Some(secs)) => {
                message(&mut buf, a::NFT_MSG_NEWSETELEM, add_flags, Some(secs));
                message(&mut buf, a::NFT_MSG_DELSETELEM, del_flags, None);
                message(&mut buf, a::NFT_MSG_NEWSETELEM, add_flags, Some(secs));
            }
            EgressOp::Remove => {
                message(&mut buf, a::NFT_MSG_NEWSETELEM, add_flags, None);
                message(&mut buf, a::NFT_MSG_DELSETELEM, del_flags, None);
            }
        }
    }
    seq = seq.wrapping_add(1);
    put_message(
        &mut buf,
        a::NFNL_MSG_BATCH_END,
        a::NLM_F_REQUEST,
        seq,
        nftables,
        |_| {},
    );
    (buf, steps)
}

/// Applies `changes` to `table` over `socket` as one transaction.
///
/// # Errors
/// The kernel's refusal of the first change it refused (nothing applied), or a socket error.
pub fn apply(
    socket: &mut NftSocket,
    table: &str,
    changes: &[EgressChange],
) -> Result<(), NftError> {
    if changes.is_empty() {
        return Ok(());
    }
    let (buf, steps) = batch(table, changes, socket.next_seq());
    socket.send_batch(&buf, &steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_pad_each_part_to_a_register_and_ranges_go_to_their_prefix_set() {
        let g = Ipv4Addr::new(172, 31, 240, 5);
        let port = EgressElement::Port(g, 6, 443, "10.20.0.0/16".parse().unwrap());
        assert_eq!(
            port.key(),
            [172, 31, 240, 5, 6, 0, 0, 0, 1, 187, 0, 0, 10, 20, 0, 0]
        );
        assert_eq!(port.set_for("ports"), "ports16");
        let addr = EgressElement::Addr(g, Ipv4Addr::new(1, 2, 3, 4));
        assert_eq!(addr.key(), [172, 31, 240, 5, 1, 2, 3, 4]);
        assert_eq!(addr.set_for("learned"), "learned");
        // A range given with host bits set is the network it names.
        let net = EgressElement::Net(g, "10.0.0.9/24".parse().unwrap());
        assert_eq!(net.key()[4..], [10, 0, 0, 0]);
        assert_eq!(net.set_for("nets"), "nets24");
        assert_eq!(net.to_string(), "172.31.240.5 . 10.0.0.0");
    }

    #[test]
    fn timed_adds_replace_and_removals_add_first() {
        let g = Ipv4Addr::new(172, 31, 240, 5);
        let changes = [
            EgressChange {
                set: "learned",
                element: EgressElement::Addr(g, Ipv4Addr::new(1, 2, 3, 4)),
                op: EgressOp::Add(Some(30)),
            },
            EgressChange {
                set: "deny",
                element: EgressElement::Guest(g),
                op: EgressOp::Remove,
            },
        ];
        let (_, steps) = batch("hearth-egress", &changes, 7);
        let seqs: Vec<u32> = steps.iter().map(|s| s.seq).collect();
        assert_eq!(seqs, [8, 9, 10, 11, 12]);
        assert_eq!(steps[0].what, "add 172.31.240.5 . 1.2.3.4 to learned");
        assert_eq!(steps[4].what, "remove 172.31.240.5 from deny");
    }
}
