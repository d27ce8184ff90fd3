//! In-process changes to an nftables set over netlink (`NETLINK_NETFILTER`, subsystem
//! `nf_tables`), so that a guest's element of hearth's bridge table costs one socket round trip
//! instead of an `nft` process (~5-20 ms, growing with the table).
//!
//! A call sends one nfnetlink batch (`BATCH_BEGIN`, the element messages, `BATCH_END`), which
//! the kernel commits as one transaction: all of it or nothing. Every element message asks for
//! an acknowledgement, so the call returns only once the kernel has answered each one, i.e.
//! once the elements really are (or are not) in the set.
//!
//! Only what hearth needs is encoded here: `NEWSETELEM`/`DELSETELEM` of
//! `ifname . ether_addr . ipv4_addr` keys in a `bridge`-family table. Whole tables are still
//! written by `nft -f` (rare: reconcile, teardown).
//!
//! Why not a crate: `rustables` (the pure-Rust `nf_tables` library) is GPL-3.0, which an
//! Apache-2.0 hearth cannot take on, and calls itself rough-edged; `nftnl` binds the GPL C
//! library libnftnl; the `nftables` crate drives the `nft` binary (a process per change, the
//! cost this module removes). Two message types over a socket `nix` already gives us are small
//! enough to own, with the kernel's answer checked by the tests in `tests/nat.rs`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    self, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use nix::sys::time::{TimeVal, TimeValLike};

use super::{LeaseChange, PortLease};

/// The nfnetlink subsystem of `nf_tables` (`NFNL_SUBSYS_NFTABLES`).
pub(super) const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFNL_MSG_BATCH_BEGIN` / `_END` (`NLMSG_MIN_TYPE` and the next).
pub(super) const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub(super) const NFNL_MSG_BATCH_END: u16 = 0x11;
/// `enum nf_tables_msg_types`.
pub(super) const NFT_MSG_NEWSETELEM: u16 = 12;
pub(super) const NFT_MSG_DELSETELEM: u16 = 14;

const NLMSG_ERROR: u16 = 2;
pub(super) const NLM_F_REQUEST: u16 = 0x1;
pub(super) const NLM_F_ACK: u16 = 0x4;
pub(super) const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_HDRLEN: usize = 16;

/// `NFPROTO_BRIDGE`: the table family hearth's L2 filter lives in.
const NFPROTO_BRIDGE: u8 = 7;

/// `enum nft_set_elem_list_attributes`, `nft_list_attributes`, `nft_set_elem_attributes`,
/// `nft_data_attributes`.
pub(super) const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub(super) const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub(super) const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub(super) const NFTA_LIST_ELEM: u16 = 1;
pub(super) const NFTA_SET_ELEM_KEY: u16 = 1;
pub(super) const NFTA_DATA_VALUE: u16 = 1;

/// An interface name in a key: `IFNAMSIZ` bytes, NUL-padded.
const IFNAMSIZ: usize = 16;
/// A concatenated key: each part padded to a 4-byte register (`ifname` 16, `ether_addr`
/// 6 + 2, `ipv4_addr` 4), as nft lays out `ifname . ether_addr . ipv4_addr`.
pub const LEASE_KEY_LEN: usize = IFNAMSIZ + 8 + 4;

/// The protocol constants the egress encoder ([`super::nft_egress`]) shares.
pub(super) mod pub_attrs {
    pub(in crate::host::firewall) use super::{
        NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END, NFNL_SUBSYS_NFTABLES, NFTA_DATA_VALUE,
        NFTA_LIST_ELEM, NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_LIST_SET,
        NFTA_SET_ELEM_LIST_TABLE, NFT_MSG_DELSETELEM, NFT_MSG_NEWSETELEM, NLM_F_ACK, NLM_F_CREATE,
        NLM_F_REQUEST,
    };
}

/// How long a call waits for the kernel's answers before giving up, in seconds.
const ANSWER_SECS: i64 = 5;

/// The set key of a lease.
///
/// # Errors
/// Why it has none: a port name that no interface can have.
pub fn lease_key(lease: &PortLease) -> Result<[u8; LEASE_KEY_LEN], String> {
    let name = lease.port.as_bytes();
    if name.is_empty() || name.len() >= IFNAMSIZ || name.contains(&0) {
        return Err(format!(
            "port name {:?} must be 1-15 bytes without NUL",
            lease.port
        ));
    }
    let mut key = [0u8; LEASE_KEY_LEN];
    key[..name.len()].copy_from_slice(name);
    key[IFNAMSIZ..IFNAMSIZ + 6].copy_from_slice(&lease.mac.0);
    key[IFNAMSIZ + 8..].copy_from_slice(&lease.ip.octets());
    Ok(key)
}

/// Appends one attribute (header, payload, padding to 4 bytes).
pub(super) fn put_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = u16::try_from(4 + payload.len()).expect("netlink attribute payloads are small");
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    pad(buf);
}

/// Appends a nested attribute whose content `fill` writes.
pub(super) fn put_nested(buf: &mut Vec<u8>, kind: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    fill(buf);
    let len = u16::try_from(buf.len() - start).expect("netlink attributes are small");
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    buf[start + 2..start + 4].copy_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
}

/// A NUL-terminated string attribute.
pub(super) fn put_str(buf: &mut Vec<u8>, kind: u16, text: &str) {
    let mut payload = Vec::with_capacity(text.len() + 1);
    payload.extend_from_slice(text.as_bytes());
    payload.push(0);
    put_attr(buf, kind, &payload);
}

fn pad(buf: &mut Vec<u8>) {
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
}

/// Appends one netlink message with an nfgenmsg header (`family`, version 0, `res_id`);
/// `fill` writes the attributes.
pub(super) fn put_message(
    buf: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    (family, res_id): (u8, u16),
    fill: impl FnOnce(&mut Vec<u8>),
) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]); // length, patched below
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    buf.push(family);
    buf.push(0); // NFNETLINK_V0
    buf.extend_from_slice(&res_id.to_be_bytes());
    fill(buf);
    let len = u32::try_from(buf.len() - start).expect("netlink messages are small");
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

/// What one element message of a batch does, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The message's sequence number.
    pub seq: u32,
    /// E.g. `add "hth3" . 06:00:ac:1f:f0:07 . 172.31.240.7`.
    pub what: String,
}

/// A batch that applies `changes` in order to `table`'s set `set`, numbered from `seq`:
/// the bytes to send and the element messages the kernel will acknowledge. Removing an
/// element first adds it, so that removing an absent element is valid (kernels before 6.3
/// have no `DESTROYSETELEM`).
///
/// # Errors
/// A lease without a key ([`lease_key`]); nothing is encoded then.
pub fn batch(
    table: &str,
    set: &str,
    changes: &[LeaseChange],
    seq: u32,
) -> Result<(Vec<u8>, Vec<Step>), String> {
    let mut buf = Vec::with_capacity(128 + changes.len() * 160);
    let mut steps = Vec::new();
    let mut seq = seq;
    let nftables = (0u8, NFNL_SUBSYS_NFTABLES); // AF_UNSPEC, the subsystem
    put_message(
        &mut buf,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        nftables,
        |_| {},
    );
    let mut element = |buf: &mut Vec<u8>, kind: u16, flags: u16, key: &[u8], what: String| {
        seq = seq.wrapping_add(1);
        // An nfnetlink message type carries its subsystem in the high byte.
        let kind = (NFNL_SUBSYS_NFTABLES << 8) | kind;
        put_message(buf, kind, flags, seq, (NFPROTO_BRIDGE, 0), |b| {
            put_str(b, NFTA_SET_ELEM_LIST_TABLE, table);
            put_str(b, NFTA_SET_ELEM_LIST_SET, set);
            put_nested(b, NFTA_SET_ELEM_LIST_ELEMENTS, |b| {
                put_nested(b, NFTA_LIST_ELEM, |b| {
                    put_nested(b, NFTA_SET_ELEM_KEY, |b| put_attr(b, NFTA_DATA_VALUE, key));
                });
            });
        });
        steps.push(Step { seq, what });
    };
    // Without NLM_F_EXCL, adding a present element is not an error.
    let add = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK;
    let del = NLM_F_REQUEST | NLM_F_ACK;
    for change in changes {
        match change {
            LeaseChange::Add(lease) => {
                let key = lease_key(lease)?;
                element(
                    &mut buf,
                    NFT_MSG_NEWSETELEM,
                    add,
                    &key,
                    format!("add {lease}"),
                );
            }
            LeaseChange::Remove(lease) => {
                let key = lease_key(lease)?;
                let what = format!("remove {lease}");
                element(&mut buf, NFT_MSG_NEWSETELEM, add, &key, what.clone());
                element(&mut buf, NFT_MSG_DELSETELEM, del, &key, what);
            }
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
    Ok((buf, steps))
}

/// One answer read from the socket: the sequence number it answers and the error
/// (0: acknowledged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The sequence number of the message answered.
    pub seq: u32,
    /// The negated errno the kernel reported, 0 for success.
    pub error: i32,
}

/// The `NLMSG_ERROR` answers (acknowledgements included) in a datagram; other messages and
/// a truncated tail are skipped.
#[must_use]
pub fn answers(mut data: &[u8]) -> Vec<Answer> {
    let mut out = Vec::new();
    while data.len() >= NLMSG_HDRLEN {
        let word =
            |at: usize| u32::from_ne_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        let len = word(0) as usize;
        if len < NLMSG_HDRLEN || len > data.len() {
            break;
        }
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        if kind == NLMSG_ERROR && len >= NLMSG_HDRLEN + 4 {
            out.push(Answer {
                seq: word(8),
                error: i32::from_ne_bytes([data[16], data[17], data[18], data[19]]),
            });
        }
        let next = (len + 3) & !3;
        data = &data[next.min(data.len())..];
    }
    out
}

/// A netlink socket to `nf_tables`, bound to the network namespace of the thread that opened it.
pub struct NftSocket {
    fd: OwnedFd,
    seq: u32,
}

impl NftSocket {
    /// Opens the socket (close-on-exec, with a receive timeout so a lost answer cannot hang
    /// the caller).
    ///
    /// # Errors
    /// The socket, bind or setsockopt error (e.g. no netlink in this kernel).
    pub fn open() -> io::Result<Self> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        let timeout = TimeVal::seconds(ANSWER_SECS);
        socket::setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)?;
        // Answers are matched to messages by sequence number; each socket has its own.
        Ok(Self { fd, seq: 1 })
    }

    /// Applies `changes` to `table`'s set `set` as one transaction and waits for the
    /// kernel's answer to each message. On failure, nothing of the batch was applied and the
    /// error names the first change the kernel refused.
    ///
    /// # Errors
    /// [`NftError::BadElement`] (nothing sent), [`NftError::Refused`] (the kernel's errno for
    /// the first refused change), [`NftError::Io`] (the socket failed or no answer came).
    pub fn apply(
        &mut self,
        table: &str,
        set: &str,
        changes: &[LeaseChange],
    ) -> Result<(), NftError> {
        if changes.is_empty() {
            return Ok(());
        }
        let (buf, steps) = batch(table, set, changes, self.seq).map_err(NftError::BadElement)?;
        self.send_batch(&buf, &steps)
    }

    /// Sends a batch built (by the caller) from [`NftSocket::next_seq`] and waits for the
    /// kernel's answer to each of `steps`; the same guarantees as [`NftSocket::apply`].
    ///
    /// # Errors
    /// As [`NftSocket::apply`].
    pub fn send_batch(&mut self, buf: &[u8], steps: &[Step]) -> Result<(), NftError> {
        // Begin, the steps, end.
        let first = self.seq;
        self.seq = self
            .seq
            .wrapping_add(u32::try_from(steps.len()).unwrap_or(u32::MAX))
            .wrapping_add(2);
        let written =
            socket::send(self.fd.as_raw_fd(), buf, MsgFlags::empty()).map_err(io::Error::from);
        match written {
            Ok(n) if n == buf.len() => {}
            Ok(n) => {
                return Err(NftError::Io {
                    what: "send".into(),
                    source: io::Error::other(format!("short write: {n} of {} bytes", buf.len())),
                })
            }
            Err(source) => {
                return Err(NftError::Io {
                    what: "send".into(),
                    source,
                })
            }
        }
        self.collect(first, steps)
    }

    /// The sequence number the next batch starts from (its `BATCH_BEGIN`).
    #[must_use]
    pub fn next_seq(&self) -> u32 {
        self.seq
    }

    /// Reads answers until every step has one (or the batch itself was refused).
    fn collect(&mut self, begin: u32, steps: &[Step]) -> Result<(), NftError> {
        let mut pending: Vec<&Step> = steps.iter().collect();
        let mut refused: Option<(String, i32)> = None;
        let mut buf = vec![0u8; 16 * 1024];
        while !pending.is_empty() {
            let n = match socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => n,
                Err(nix::Error::EINTR) => continue,
                Err(nix::Error::EAGAIN) => {
                    return Err(NftError::Io {
                        what: format!("wait for the kernel's answer to {}", pending[0].what),
                        source: io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no answer within the timeout",
                        ),
                    })
                }
                Err(e) => {
                    return Err(NftError::Io {
                        what: "receive".into(),
                        source: e.into(),
                    })
                }
            };
            for answer in answers(&buf[..n]) {
                if answer.seq == begin && answer.error != 0 {
                    // The batch as a whole was refused (e.g. nf_tables unavailable).
                    return Err(NftError::Refused {
                        what: "begin the transaction".into(),
                        source: io::Error::from_raw_os_error(answer.error.saturating_neg()),
                    });
                }
                if let Some(at) = pending.iter().position(|s| s.seq == answer.seq) {
                    let step = pending.swap_remove(at);
                    if answer.error != 0 && refused.is_none() {
                        refused = Some((step.what.clone(), answer.error));
                    }
                }
                // Anything else answers an earlier, timed-out batch: skip it.
            }
        }
        match refused {
            None => Ok(()),
            Some((what, error)) => Err(NftError::Refused {
                what,
                source: io::Error::from_raw_os_error(error.saturating_neg()),
            }),
        }
    }
}

/// Errors of [`NftSocket`].
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// An element that cannot be encoded (nothing was sent).
    #[error("Bad set element: {0}")]
    BadElement(String),
    /// The socket failed.
    #[error("Cannot {what}")]
    Io {
        /// What was being done.
        what: String,
        /// The socket error.
        source: io::Error,
    },
    /// The kernel refused a change; nothing of the batch was applied.
    #[error("The kernel refused to {what}")]
    Refused {
        /// The refused change.
        what: String,
        /// The kernel's errno.
        source: io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mac::MacAddr;
    use std::net::Ipv4Addr;

    fn lease() -> PortLease {
        let ip = Ipv4Addr::new(172, 31, 240, 7);
        PortLease {
            port: "hth3".into(),
            mac: MacAddr::for_guest(ip),
            ip,
        }
    }

    #[test]
    fn key_pads_each_part_to_a_register() {
        let key = lease_key(&lease()).unwrap();
        let mut want = [0u8; 28];
        want[..4].copy_from_slice(b"hth3");
        want[16..22].copy_from_slice(&[6, 0, 0xac, 0x1f, 0xf0, 7]);
        want[24..].copy_from_slice(&[172, 31, 240, 7]);
        assert_eq!(key, want);
    }

    #[test]
    fn port_names_no_interface_can_have_are_refused() {
        for port in ["", "a-name-of-16-byt", "a\0b"] {
            let l = PortLease {
                port: port.into(),
                ..lease()
            };
            let err = lease_key(&l).unwrap_err();
            assert!(err.contains("1-15 bytes"), "{err}");
            let err = batch("hearth", "leases", &[LeaseChange::Add(l)], 1).unwrap_err();
            assert!(err.contains("port name"), "{err}");
        }
    }

    /// Splits a datagram into (type, flags, seq, payload after the nfgenmsg header).
    fn messages(mut data: &[u8]) -> Vec<(u16, u16, u32, u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let len = u32::from_ne_bytes(data[..4].try_into().unwrap()) as usize;
            assert_eq!(len % 4, 0, "messages stay aligned");
            let kind = u16::from_ne_bytes(data[4..6].try_into().unwrap());
            let flags = u16::from_ne_bytes(data[6..8].try_into().unwrap());
            let seq = u32::from_ne_bytes(data[8..12].try_into().unwrap());
            out.push((kind, flags, seq, data[16], data[20..len].to_vec()));
            data = &data[len..];
        }
        out
    }

    #[test]
    fn batch_frames_each_change_and_a_removal_adds_first() {
        let l = lease();
        let changes = [LeaseChange::Remove(l.clone()), LeaseChange::Add(l.clone())];
        let (buf, steps) = batch("hearth", "leases", &changes, 100).unwrap();
        let msgs = messages(&buf);
        let kinds: Vec<u16> = msgs.iter().map(|m| m.0).collect();
        let newelem = 0x0a0c; // NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSETELEM
        let delelem = 0x0a0e; // ... | NFT_MSG_DELSETELEM
        assert_eq!(kinds, [0x10, newelem, delelem, newelem, 0x11]);
        assert_eq!(
            msgs.iter().map(|m| m.2).collect::<Vec<_>>(),
            [100, 101, 102, 103, 104]
        );
        // Every element message asks for an answer, in the bridge family; adds never EXCL.
        for m in &msgs[1..4] {
            assert_ne!(m.1 & NLM_F_ACK, 0);
            assert_eq!(m.1 & 0x200, 0, "no NLM_F_EXCL");
            assert_eq!(m.3, NFPROTO_BRIDGE);
        }
        assert_eq!(
            steps.iter().map(|s| s.seq).collect::<Vec<_>>(),
            [101, 102, 103]
        );
        assert_eq!(
            steps[2].what,
            "add \"hth3\" . 06:00:ac:1f:f0:07 . 172.31.240.7"
        );
        // The attributes: table, set, then elements > elem > key > value (28 bytes).
        let payload = &msgs[3].4;
        assert_eq!(&payload[..4], &[11, 0, 1, 0]);
        assert_eq!(&payload[4..11], b"hearth\0");
        assert_eq!(&payload[12..16], &[11, 0, 2, 0]);
        assert_eq!(&payload[16..23], b"leases\0");
        let key = lease_key(&l).unwrap();
        assert!(payload.ends_with(&key));
        let value_header = &payload[payload.len() - 32..payload.len() - 28];
        assert_eq!(value_header, &[32, 0, 1, 0]);
    }

    #[test]
    fn answers_are_read_from_error_messages_only() {
        let mut data = Vec::new();
        for (seq, error) in [(7u32, 0i32), (8, -2)] {
            data.extend_from_slice(&36u32.to_ne_bytes());
            data.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            data.extend_from_slice(&0u16.to_ne_bytes());
            data.extend_from_slice(&seq.to_ne_bytes());
            data.extend_from_slice(&0u32.to_ne_bytes());
            data.extend_from_slice(&error.to_ne_bytes());
            data.extend_from_slice(&[0; 16]);
        }
        // A message of another type, then a truncated one.
        data.extend_from_slice(&16u32.to_ne_bytes());
        data.extend_from_slice(&[3, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
        data.extend_from_slice(&[200, 0, 0, 0, 2, 0]);
        assert_eq!(
            answers(&data),
            [Answer { seq: 7, error: 0 }, Answer { seq: 8, error: -2 }]
        );
    }
}
