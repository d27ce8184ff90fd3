//! Network links hearth owns on the host: its bridge and its persistent TAP devices.
//!
//! [`Links`] is the narrow interface `TapPoolActor` uses; [`linux::LinuxLinks`] implements it
//! with rtnetlink and the TUN ioctls (never by spawning `ip`), [`fake::FakeLinks`] in memory
//! for unit tests. Every method is idempotent where the kernel allows it, so a restarted
//! daemon can re-run them over what it finds.
//!
//! The futures are `!Send`: they are polled on the actor's thread, whose network namespace the
//! backend was created in.

#[cfg(any(test, doc, feature = "testing"))]
pub mod fake;
pub mod linux;
pub mod routes;
mod sysctl;
mod tun;

use std::net::Ipv4Addr;

use crate::mac::MacAddr;

use futures::future::LocalBoxFuture;

/// What the bridge must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSpec {
    /// Interface name (at most 15 bytes).
    pub name: String,
    /// The address the bridge carries: the guests' gateway.
    pub gateway: Ipv4Addr,
    /// Prefix length of the bridge subnet.
    pub prefix_len: u8,
    /// MTU of the bridge.
    pub mtu: u32,
    /// The bridge's MAC, set explicitly so it does not follow its ports (see
    /// [`crate::mac::MacAddr::for_gateway`]).
    pub mac: crate::mac::MacAddr,
}

/// How to create a persistent TAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapSpec {
    /// Interface name (at most 15 bytes). Creation fails if the name is taken.
    pub name: String,
    /// Owner uid allowed to open the TAP (TUNSETOWNER), if any.
    pub owner: Option<u32>,
    /// Group gid allowed to open the TAP (TUNSETGROUP), if any.
    pub group: Option<u32>,
}

/// How a TAP is attached to the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortSpec {
    /// Interface index of the bridge.
    pub bridge_index: u32,
    /// MTU of the port.
    pub mtu: u32,
    /// Whether the port is an isolated bridge port (`IFLA_BRPORT_ISOLATED`): isolated ports
    /// cannot exchange frames with each other, only with non-isolated ports (the bridge itself).
    pub isolated: bool,
}

/// What kind of link an existing interface is, as far as hearth cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// A TUN/TAP device.
    Tap,
    /// A Linux bridge.
    Bridge,
    /// Anything else (veth, dummy, physical, ...).
    Other,
}

/// An interface found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEntry {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub index: u32,
    /// Link kind.
    pub kind: LinkKind,
    /// Index of the master (bridge) it is enslaved to, if any.
    pub master: Option<u32>,
}

/// The most ports one Linux bridge takes: the kernel numbers ports in `BR_MAX_PORTS` (1024)
/// with number 0 reserved, and refuses the next port with `EXFULL`.
pub const BRIDGE_MAX_PORTS: usize = 1023;

/// Errors of the link backends.
#[derive(Debug, thiserror::Error)]
pub enum LinksError {
    /// A netlink request failed.
    #[error("Netlink {op} failed for {link}")]
    Netlink {
        /// What was being done, e.g. `"add address"`.
        op: &'static str,
        /// The interface concerned.
        link: String,
        /// The netlink error (boxed: it can carry a whole message).
        source: Box<rtnetlink::Error>,
    },
    /// The netlink socket could not be opened.
    #[error("Cannot open a netlink socket")]
    Socket {
        /// The I/O error.
        source: std::io::Error,
    },
    /// A link with the bridge's name exists but is not a bridge.
    #[error("Link {name} exists but is not a bridge")]
    NotABridge {
        /// The interface name.
        name: String,
    },
    /// The interface name is already taken.
    #[error("Link {name} already exists")]
    Exists {
        /// The interface name.
        name: String,
    },
    /// The bridge has no port number left for the link (the kernel's `EXFULL`: a Linux bridge
    /// takes at most [`BRIDGE_MAX_PORTS`] ports).
    #[error("Bridge has no port left for {name} (a Linux bridge takes at most {BRIDGE_MAX_PORTS} ports)")]
    BridgeFull {
        /// The link that could not be attached.
        name: String,
    },
    /// The interface does not exist.
    #[error("Link {name} does not exist")]
    NotFound {
        /// The interface name.
        name: String,
    },
    /// The interface name is empty, too long or contains a NUL byte.
    #[error("Invalid interface name {name:?}")]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// A TUN/TAP system call failed.
    #[error("TUN {op} failed for {name}")]
    Tun {
        /// The step, e.g. `"TUNSETIFF"`.
        op: &'static str,
        /// The TAP name.
        name: String,
        /// The errno.
        source: nix::Error,
    },
    /// Writing a per-interface sysctl failed (e.g. turning IPv6 off).
    #[error("Cannot write {path}")]
    Sysctl {
        /// The /proc/sys path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The backend thread is gone (it panicked).
    #[error("Link backend thread is gone; cannot create {name}")]
    WorkerGone {
        /// The TAP name.
        name: String,
    },
    /// A failure injected into the fake backend.
    #[error("Injected failure of {op} on {name}")]
    Injected {
        /// The fake operation.
        op: &'static str,
        /// The interface name.
        name: String,
    },
}

/// A future returned by a [`Links`] method; runs on the caller's thread (and namespace).
pub type LinksFuture<T> = LocalBoxFuture<'static, Result<T, LinksError>>;

/// The host operations on hearth's bridge and TAPs.
pub trait Links {
    /// Creates the bridge if missing (up, MTU, gateway address) or adopts an existing one,
    /// bringing it up and adding the address if missing. Returns the bridge's index.
    /// IPv6 is turned off on it (guests are IPv4-only: no link-local address for them to
    /// reach the host by), before it comes up when this call creates it.
    /// An existing non-bridge link with that name is [`LinksError::NotABridge`].
    /// If this call created the bridge and a later step fails, it deletes it again.
    fn ensure_bridge(&self, spec: BridgeSpec) -> LinksFuture<u32>;

    /// Creates a persistent TAP (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`), down and detached,
    /// with IPv6 turned off (before anything brings it up), and returns its index. Fails with [`LinksError::Exists`] if the name is taken; on
    /// failure nothing is left behind.
    fn create_tap(&self, spec: TapSpec) -> LinksFuture<u32>;

    /// Attaches the link (`name`, `index`) to the bridge, sets its MTU and isolation, and
    /// brings it up. Idempotent.
    fn attach_port(&self, name: &str, index: u32, spec: PortSpec) -> LinksFuture<()>;

    /// Deletes the link; a link that does not exist is not an error.
    fn delete_link(&self, name: &str) -> LinksFuture<()>;

    /// Deletes many links at once; links that do not exist are not errors. Returns the links
    /// that could not be deleted, with why (empty: all gone). Deleting a netdev waits for an
    /// RCU grace period (~16 ms); this pays it once for the whole batch where the kernel
    /// allows it, instead of once per link.
    fn delete_links(
        &self,
        names: Vec<String>,
    ) -> LocalBoxFuture<'static, Vec<(String, LinksError)>>;

    /// Lists the links whose name starts with `prefix`.
    fn list_links(&self, prefix: &str) -> LinksFuture<Vec<LinkEntry>>;

    /// Pins a guest's address on the bridge `bridge`: the host's neighbour entry for `ip`
    /// becomes `mac`, permanently (ARP cannot change it), and the bridge's forwarding entry
    /// for `mac` points at the port `port`, statically and sticky (it neither ages out, which
    /// would flood the host's frames for a quiet guest to every port, nor moves to another
    /// port). Replaces whatever entries were there.
    fn pin_neighbour(&self, bridge: u32, port: &str, ip: Ipv4Addr, mac: MacAddr)
        -> LinksFuture<()>;

    /// Removes what [`Links::pin_neighbour`] made; absent entries (or an absent port) are not
    /// errors. An empty `port` removes only the neighbour entry.
    fn unpin_neighbour(
        &self,
        bridge: u32,
        port: &str,
        ip: Ipv4Addr,
        mac: MacAddr,
    ) -> LinksFuture<()>;

    /// The permanent IPv4 neighbour entries on the link `index`.
    fn pinned_neighbours(&self, index: u32) -> LinksFuture<Vec<(Ipv4Addr, MacAddr)>>;
}

/// Checks an interface name hearth uses or is given (bridge, TAP names and prefix, egress):
/// 1 to 15 bytes of ASCII letters, digits, `-`, `_`, `.` and `@`, not `.` or `..`.
///
/// The one validator for interface names: the configuration, every actor and the backends
/// call it, so a name accepted at one step is never refused at another. It is stricter than
/// the kernel (which takes any byte but NUL, `/`, `:` and whitespace) because the names end
/// up in iptables-restore and nft texts, where `+` is a wildcard, `*` a glob, `!` a negation
/// and quotes or `#` change the parse.
pub fn check_ifname(name: &str) -> Result<(), LinksError> {
    let ok = !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(LinksError::InvalidName { name: name.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked() {
        for good in ["hth0", "hearth0", "a", "abcdefghijklmno", "br-1_x.2", "v@1"] {
            assert!(check_ifname(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "abcdefghijklmnop",
            "a/b",
            "a b",
            "a:b",
            ".",
            "..",
            "a\0b",
            "eth+",
            "br*",
            "a!b",
            "a\"b",
            "a#b",
            "a,b",
        ] {
            assert!(check_ifname(bad).is_err(), "{bad:?}");
        }
    }
}
