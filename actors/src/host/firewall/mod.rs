//! The firewall backend of `NatActor`: iptables rules and kernel ipsets.
//!
//! Two kinds of operations, with very different costs:
//! - setup and reconcile, rare and atomic: [`Firewall::restore_rules`] feeds a whole ruleset to
//!   `iptables-restore --noflush` and [`Firewall::restore_sets`] feeds `ipset restore`; these
//!   are the only places a process is spawned;
//! - per-VM changes, frequent and cheap: [`Firewall::add_to_set`] and
//!   [`Firewall::remove_from_set`] talk to the kernel in-process over netlink (libipset), so
//!   enabling NAT for a guest costs no process and no rule, whatever the number of guests.
//!
//! Below IP, hearth's `bridge`-family nftables table filters what guests' ports send (ARP,
//! non-IPv4 frames). The same split holds there: [`Firewall::apply_nft`] feeds a whole table to
//! `nft -f -` (one atomic transaction; setup, reconcile, teardown), while a guest's lease
//! element is added or removed by [`Firewall::update_port_leases`] in-process over netlink
//! (one transaction, one socket round trip, no process).
//!
//! [`linux::LinuxFirewall`] is the real backend, [`fake::FakeFirewall`] the recording fake.

use std::fmt;
use std::net::Ipv4Addr;

use crate::host::hairpin::HairpinSpec;
use crate::mac::MacAddr;

#[cfg(any(test, doc, feature = "testing"))]
pub mod fake;
pub mod linux;
pub mod nft_egress;
pub mod nft_json;
pub mod nft_netlink;
pub mod nft_publish;
pub mod port_probe;

pub use nft_publish::{HairpinElement, PublishChange, PublishElement};
pub use port_probe::PortProbe;

/// Errors of the firewall backend. Each names the command or operation that failed and
/// carries the tool's or kernel's own error text.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// A program could not be started (usually: not installed).
    #[error("Cannot run `{command}` (is it installed?)")]
    Spawn {
        /// The command line.
        command: String,
        /// The spawn error.
        source: std::io::Error,
    },
    /// A program ran and reported failure.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it wrote to stderr, trimmed.
        stderr: String,
    },
    /// An in-process ipset operation failed (libipset's message, e.g. a missing kernel
    /// feature or a set that does not exist).
    #[error("ipset {op} failed: {message}")]
    Ipset {
        /// The operation, e.g. `add 172.31.240.5 to hearth-nat`.
        op: String,
        /// libipset's message.
        message: String,
    },
    /// Writing an interface's sysctl failed.
    #[error("Cannot write {path}")]
    InterfaceSysctl {
        /// The /proc/sys path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Reading or writing a sysctl failed.
    #[error("Cannot access {path}")]
    Sysctl {
        /// The /proc/sys path.
        path: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Probing a host port by binding it failed for another reason than its being taken.
    #[error("Cannot probe host port {what}")]
    PortProbe {
        /// The address, port and protocol.
        what: String,
        /// The bind error.
        source: std::io::Error,
    },
    /// An in-process change to an nftables set failed; none of it was applied.
    #[error("Cannot update nftables set {set}")]
    Nftables {
        /// The set, e.g. `bridge hearth leases`.
        set: String,
        /// What failed (names the refused element and carries the kernel's errno).
        source: nft_netlink::NftError,
    },
    /// A hairpin proxy could not be started (`host::hairpin`).
    #[error("Cannot start the hairpin proxy {what}")]
    Hairpin {
        /// The protocol and target.
        what: String,
        /// The socket or thread error.
        source: std::io::Error,
    },
    /// Looking up a network interface failed for another reason than its absence.
    #[error("Cannot look up interface {name}")]
    Interface {
        /// The interface name.
        name: String,
        /// The error of `if_nametoindex`.
        source: nix::Error,
    },
}

/// An iptables table hearth writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// The `nat` table (masquerading).
    Nat,
    /// The `filter` table (forwarding and input policy).
    Filter,
}

impl Table {
    /// The table's name as iptables spells it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Table::Nat => "nat",
            Table::Filter => "filter",
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One member of a set hearth manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetEntry {
    /// An address, in a `hash:ip` set.
    Ip(Ipv4Addr),
    /// An address and the MAC it must come from, in a `bitmap:ip,mac` set.
    IpMac(Ipv4Addr, MacAddr),
}

impl SetEntry {
    /// The entry's IP address.
    #[must_use]
    pub fn ip(&self) -> Ipv4Addr {
        match *self {
            SetEntry::Ip(ip) | SetEntry::IpMac(ip, _) => ip,
        }
    }
}

impl fmt::Display for SetEntry {
    /// The entry as `ipset` writes it: `ip` or `ip,mac`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetEntry::Ip(ip) => write!(f, "{ip}"),
            SetEntry::IpMac(ip, mac) => write!(f, "{ip},{mac}"),
        }
    }
}

/// An element of a `bridge`-family nftables set of type `ifname . ether_addr . ipv4_addr`:
/// the bridge port a guest sends from, with the MAC and IPv4 address it may send from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortLease {
    /// The bridge port (the guest's TAP), 1-15 bytes.
    pub port: String,
    /// The guest's MAC.
    pub mac: MacAddr,
    /// The guest's IPv4 address.
    pub ip: Ipv4Addr,
}

impl fmt::Display for PortLease {
    /// The element as `nft` writes it: `"<port>" . <mac> . <ip>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\" . {} . {}", self.port, self.mac, self.ip)
    }
}

/// One change to a set of [`PortLease`]s.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LeaseChange {
    /// Add the element (adding a present one is a no-op).
    Add(PortLease),
    /// Remove the element (removing an absent one is a no-op).
    Remove(PortLease),
}

/// The host side of the firewall. Implementations act on the network namespace of the
/// calling thread.
pub trait Firewall {
    /// Whether a network interface of that name exists.
    ///
    /// # Errors
    /// The backend's [`FirewallError`], naming the command or operation.
    fn interface_exists(&mut self, name: &str) -> Result<bool, FirewallError>;

    /// Whether IPv4 forwarding is on (`/proc/sys/net/ipv4/ip_forward`, per namespace).
    ///
    /// # Errors
    /// The backend's [`FirewallError`], naming the command or operation.
    fn ip_forward(&mut self) -> Result<bool, FirewallError>;

    /// Turns IPv4 forwarding on or off.
    ///
    /// # Errors
    /// The backend's [`FirewallError`], naming the command or operation.
    fn set_ip_forward(&mut self, on: bool) -> Result<(), FirewallError>;

    /// Lets `interface` route packets with loopback addresses, or stops it
    /// (`/proc/sys/net/ipv4/conf/<interface>/route_localnet`): a port published on 127.0.0.1
    /// then reaches a guest from the host.
    ///
    /// # Errors
    /// The backend's [`FirewallError`], naming the command or operation.
    fn set_route_localnet(&mut self, interface: &str, on: bool) -> Result<(), FirewallError>;

    /// The rules of a table as `iptables -S` prints them.
    ///
    /// # Errors
    /// The backend's [`FirewallError`], naming the command or operation.
    fn list_rules(&mut self, table: Table) -> Result<String, FirewallError>;

    /// Applies an `iptables-restore` text with `--noflush`, atomically per table.
    ///
    /// # Errors
    /// The backend's [`FirewallError`], naming the command or operation.
    fn restore_rules(&mut self, text: &str) -> Result<(), FirewallError>;

    /// The names of the existing sets (`ipset list -n`).
    ///
    /// # Errors
    /// The backend's [`FirewallError`], naming the command or operation.
    fn list_sets(&mut self) -> Result<Vec<String>, FirewallError>;

    /// Applies an `ipset restore` text.
    ///
    /// # Errors
    /// The backend's [`FirewallError`], naming the command or operation.
    fn restore_sets(&mut self, text: &str) -> Result<(), FirewallError>;

    /// Adds an entry to a set, in-process. Adding a present entry succeeds; for an
    /// `ip,mac` entry whose IP is present with another MAC, the MAC is replaced.
    ///
    /// # Errors
    /// The backend's [`FirewallError`], naming the command or operation.
    fn add_to_set(&mut self, set: &str, entry: SetEntry) -> Result<(), FirewallError>;

    /// Removes an entry from a set, in-process. Removing an absent entry succeeds.
    ///
    /// # Errors
    /// The backend's [`FirewallError`], naming the command or operation.
    fn remove_from_set(&mut self, set: &str, entry: SetEntry) -> Result<(), FirewallError>;

    /// Destroys a set, in-process. Destroying an absent set succeeds.
    ///
    /// # Errors
    /// The backend's [`FirewallError`], naming the command or operation.
    fn destroy_set(&mut self, set: &str) -> Result<(), FirewallError>;

    /// Applies an `nft -f` text as one transaction (all of it or nothing).
    ///
    /// # Errors
    /// The backend's [`FirewallError`], naming the command or operation.
    fn apply_nft(&mut self, text: &str) -> Result<(), FirewallError>;

    /// Applies `changes`, in order, to the set `set` of the `bridge`-family nftables table
    /// `table`, in-process, as one transaction (all of them or none). Returns once the
    /// kernel has committed them.
    ///
    /// # Errors
    /// The backend's [`FirewallError`], naming the command or operation.
    fn update_port_leases(
        &mut self,
        table: &str,
        set: &str,
        changes: &[LeaseChange],
    ) -> Result<(), FirewallError>;

    /// Applies `changes`, in order, to the maps of hearth's `ip hearth-publish` nftables
    /// table ([`nft_publish`]), in-process, as one transaction (all of them or none).
    ///
    /// # Errors
    /// The backend's [`FirewallError`], naming the command or operation.
    fn update_published(&mut self, changes: &[PublishChange]) -> Result<(), FirewallError>;
    /// Applies `changes` to the sets of the `ip`-family nftables table `table` (hearth's
    /// egress policy), in-process, as one transaction (all of them or none).
    ///
    /// # Errors
    /// The backend's [`FirewallError`], naming the set and the refused element.
    fn update_egress(
        &mut self,
        table: &str,
        changes: &[nft_egress::EgressChange],
    ) -> Result<(), FirewallError>;

    /// `nft -j list <object>` (e.g. `table ip hearth-egress`): the JSON listing, or `None`
    /// when the object does not exist.
    ///
    /// # Errors
    /// The backend's [`FirewallError`], naming the command.
    fn list_nft(&mut self, object: &str) -> Result<Option<String>, FirewallError>;

    /// Whether a socket on the host holds `addr:port` (any address when `None`) for
    /// `protocol`, or the address is not the host's.
    ///
    /// # Errors
    /// The backend's [`FirewallError`] when it cannot tell.
    fn probe_port(
        &mut self,
        protocol: hearth_proto::api_publish::Protocol,
        addr: Option<Ipv4Addr>,
        port: u16,
    ) -> Result<PortProbe, FirewallError>;

    /// Whether a socket holds `port` of `protocol` on one of the host's addresses other than
    /// `beside` (where hearth's own hairpin proxies listen), or on every address.
    ///
    /// # Errors
    /// The backend's [`FirewallError`] when it cannot tell.
    fn probe_port_beside(
        &mut self,
        protocol: hearth_proto::api_publish::Protocol,
        port: u16,
        beside: Ipv4Addr,
    ) -> Result<PortProbe, FirewallError>;

    /// Starts a hairpin proxy (`host::hairpin`) for `spec` on `port` (`0`: one the kernel
    /// chooses); answers the port it listens on.
    ///
    /// # Errors
    /// [`FirewallError::Hairpin`] when its socket cannot be made or `port` is taken.
    fn open_hairpin(&mut self, spec: &HairpinSpec, port: u16) -> Result<u16, FirewallError>;

    /// Stops the hairpin proxy on `port` of `protocol`, with its connections. Idempotent.
    fn close_hairpin(&mut self, protocol: hearth_proto::api_publish::Protocol, port: u16);
}

impl<F: Firewall + ?Sized> Firewall for Box<F> {
    fn interface_exists(&mut self, name: &str) -> Result<bool, FirewallError> {
        (**self).interface_exists(name)
    }
    fn ip_forward(&mut self) -> Result<bool, FirewallError> {
        (**self).ip_forward()
    }
    fn set_ip_forward(&mut self, on: bool) -> Result<(), FirewallError> {
        (**self).set_ip_forward(on)
    }
    fn set_route_localnet(&mut self, interface: &str, on: bool) -> Result<(), FirewallError> {
        (**self).set_route_localnet(interface, on)
    }
    fn list_rules(&mut self, table: Table) -> Result<String, FirewallError> {
        (**self).list_rules(table)
    }
    fn restore_rules(&mut self, text: &str) -> Result<(), FirewallError> {
        (**self).restore_rules(text)
    }
    fn list_sets(&mut self) -> Result<Vec<String>, FirewallError> {
        (**self).list_sets()
    }
    fn restore_sets(&mut self, text: &str) -> Result<(), FirewallError> {
        (**self).restore_sets(text)
    }
    fn add_to_set(&mut self, set: &str, entry: SetEntry) -> Result<(), FirewallError> {
        (**self).add_to_set(set, entry)
    }
    fn remove_from_set(&mut self, set: &str, entry: SetEntry) -> Result<(), FirewallError> {
        (**self).remove_from_set(set, entry)
    }
    fn destroy_set(&mut self, set: &str) -> Result<(), FirewallError> {
        (**self).destroy_set(set)
    }
    fn apply_nft(&mut self, text: &str) -> Result<(), FirewallError> {
        (**self).apply_nft(text)
    }
    fn update_port_leases(
        &mut self,
        table: &str,
        set: &str,
        changes: &[LeaseChange],
    ) -> Result<(), FirewallError> {
        (**self).update_port_leases(table, set, changes)
    }
    fn update_published(&mut self, changes: &[PublishChange]) -> Result<(), FirewallError> {
        (**self).update_published(changes)
    }
    fn update_egress(
        &mut self,
        table: &str,
        changes: &[nft_egress::EgressChange],
    ) -> Result<(), FirewallError> {
        (**self).update_egress(table, changes)
    }
    fn list_nft(&mut self, object: &str) -> Result<Option<String>, FirewallError> {
        (**self).list_nft(object)
    }
    fn probe_port(
        &mut self,
        protocol: hearth_proto::api_publish::Protocol,
        addr: Option<Ipv4Addr>,
        port: u16,
    ) -> Result<PortProbe, FirewallError> {
        (**self).probe_port(protocol, addr, port)
    }
    fn probe_port_beside(
        &mut self,
        protocol: hearth_proto::api_publish::Protocol,
        port: u16,
        beside: Ipv4Addr,
    ) -> Result<PortProbe, FirewallError> {
        (**self).probe_port_beside(protocol, port, beside)
    }
    fn open_hairpin(&mut self, spec: &HairpinSpec, port: u16) -> Result<u16, FirewallError> {
        (**self).open_hairpin(spec, port)
    }
    fn close_hairpin(&mut self, protocol: hearth_proto::api_publish::Protocol, port: u16) {
        (**self).close_hairpin(protocol, port);
    }
}
