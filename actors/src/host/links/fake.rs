//! An in-memory [`Links`] for unit tests: a table of links, a log of calls, injectable
//! failures and an optional delay on TAP creation (to observe work running in the background).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::LocalBoxFuture;

use crate::mac::MacAddr;

use super::{BridgeSpec, LinkEntry, LinkKind, Links, LinksError, LinksFuture, PortSpec, TapSpec};

/// One call made to the fake, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinksCall {
    /// `ensure_bridge(name)`.
    EnsureBridge(String),
    /// `create_tap(name)`.
    CreateTap(String),
    /// `attach_port(name, ..)`.
    AttachPort(String),
    /// `delete_link(name)`.
    DeleteLink(String),
    /// `delete_links(names)`.
    DeleteLinks(Vec<String>),
    /// `list_links(prefix)`.
    ListLinks(String),
    /// `pin_neighbour(bridge, port, ip, mac)`.
    PinNeighbour(u32, String, Ipv4Addr, MacAddr),
    /// `unpin_neighbour(bridge, port, ip, mac)`.
    UnpinNeighbour(u32, String, Ipv4Addr, MacAddr),
    /// `pinned_neighbours(index)`.
    PinnedNeighbours(u32),
}

/// The operations a failure can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeOp {
    /// [`Links::ensure_bridge`].
    EnsureBridge,
    /// [`Links::create_tap`].
    CreateTap,
    /// [`Links::attach_port`].
    AttachPort,
    /// [`Links::delete_link`].
    DeleteLink,
    /// [`Links::list_links`].
    ListLinks,
    /// [`Links::pin_neighbour`] (matched by the IP as text).
    PinNeighbour,
    /// [`Links::unpin_neighbour`] (matched by the IP as text).
    UnpinNeighbour,
}

/// A link in the fake's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeLink {
    /// Interface index.
    pub index: u32,
    /// Link kind.
    pub kind: LinkKind,
    /// Master index, if enslaved.
    pub master: Option<u32>,
    /// Administratively up.
    pub up: bool,
    /// MTU.
    pub mtu: u32,
    /// Isolated bridge port.
    pub isolated: bool,
    /// IPv4 addresses with prefix lengths.
    pub addresses: Vec<(Ipv4Addr, u8)>,
    /// TAP owner uid.
    pub owner: Option<u32>,
    /// TAP group gid.
    pub group: Option<u32>,
    /// IPv6 turned off (true for what the backend creates or adopts as a bridge).
    pub ipv6_off: bool,
}

#[derive(Debug)]
struct Failure {
    op: FakeOp,
    name: Option<String>,
    remaining: usize,
}

#[derive(Debug, Default)]
struct State {
    links: BTreeMap<String, FakeLink>,
    next_index: u32,
    calls: Vec<LinksCall>,
    failures: Vec<Failure>,
    create_delay: Option<Duration>,
    neighbours: BTreeMap<(u32, Ipv4Addr), MacAddr>,
    /// Static forwarding entries: MAC -> port name.
    fdb: BTreeMap<MacAddr, String>,
}

impl State {
    /// Consumes one matching injected failure, if any.
    fn injected(&mut self, op: FakeOp, name: &str) -> Result<(), LinksError> {
        let hit = self
            .failures
            .iter_mut()
            .find(|f| f.op == op && f.remaining > 0 && f.name.as_deref().is_none_or(|n| n == name));
        match hit {
            Some(f) => {
                f.remaining -= 1;
                Err(LinksError::Injected {
                    op: op_name(op),
                    name: name.into(),
                })
            }
            None => Ok(()),
        }
    }

    fn add(&mut self, name: &str, kind: LinkKind, mtu: u32) -> u32 {
        self.next_index += 1;
        let index = self.next_index + 100;
        self.links.insert(
            name.into(),
            FakeLink {
                index,
                kind,
                master: None,
                up: false,
                mtu,
                isolated: false,
                addresses: Vec::new(),
                owner: None,
                group: None,
                ipv6_off: false,
            },
        );
        index
    }
}

fn op_name(op: FakeOp) -> &'static str {
    match op {
        FakeOp::EnsureBridge => "ensure_bridge",
        FakeOp::CreateTap => "create_tap",
        FakeOp::AttachPort => "attach_port",
        FakeOp::DeleteLink => "delete_link",
        FakeOp::ListLinks => "list_links",
        FakeOp::PinNeighbour => "pin_neighbour",
        FakeOp::UnpinNeighbour => "unpin_neighbour",
    }
}

/// The recording fake. Clones share one table, so a test keeps a clone to inspect.
#[derive(Debug, Clone, Default)]
pub struct FakeLinks {
    state: Arc<Mutex<State>>,
}

impl FakeLinks {
    /// An empty host.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the table from the others.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<LinksCall> {
        self.lock().calls.clone()
    }

    /// Forgets the calls recorded so far.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// The current table of links.
    pub fn links(&self) -> BTreeMap<String, FakeLink> {
        self.lock().links.clone()
    }

    /// One link, if present.
    pub fn link(&self, name: &str) -> Option<FakeLink> {
        self.lock().links.get(name).cloned()
    }

    /// Plants a link (a stray TAP, a foreign interface...) as if someone else made it;
    /// returns its index.
    pub fn plant(&self, name: &str, kind: LinkKind) -> u32 {
        self.lock().add(name, kind, 1500)
    }

    /// Makes the next `times` calls of `op` (on `name`, or on any name) fail.
    pub fn fail(&self, op: FakeOp, name: Option<&str>, times: usize) {
        self.lock().failures.push(Failure {
            op,
            name: name.map(str::to_owned),
            remaining: times,
        });
    }

    /// Removes all injected failures.
    pub fn clear_failures(&self) {
        self.lock().failures.clear();
    }

    /// The pinned neighbour entries, by (link index, IP).
    pub fn neighbours(&self) -> BTreeMap<(u32, Ipv4Addr), MacAddr> {
        self.lock().neighbours.clone()
    }

    /// The static bridge forwarding entries pinned (MAC -> port).
    pub fn forwarding(&self) -> BTreeMap<MacAddr, String> {
        self.lock().fdb.clone()
    }

    /// Plants a pinned neighbour entry as if an earlier run (or someone else) made it.
    pub fn plant_neighbour(&self, index: u32, ip: Ipv4Addr, mac: MacAddr) {
        self.lock().neighbours.insert((index, ip), mac);
    }

    /// Makes each TAP creation take `delay` before it completes.
    pub fn set_create_delay(&self, delay: Option<Duration>) {
        self.lock().create_delay = delay;
    }
}

impl Links for FakeLinks {
    fn ensure_bridge(&self, spec: BridgeSpec) -> LinksFuture<u32> {
        let this = self.clone();
        Box::pin(async move {
            let mut s = this.lock();
            s.calls.push(LinksCall::EnsureBridge(spec.name.clone()));
            s.injected(FakeOp::EnsureBridge, &spec.name)?;
            let index = match s.links.get(&spec.name) {
                Some(link) if link.kind == LinkKind::Bridge => link.index,
                Some(_) => return Err(LinksError::NotABridge { name: spec.name }),
                None => s.add(&spec.name, LinkKind::Bridge, spec.mtu),
            };
            let link = s.links.get_mut(&spec.name).expect("just ensured");
            link.ipv6_off = true;
            link.up = true;
            link.mtu = spec.mtu;
            if !link.addresses.contains(&(spec.gateway, spec.prefix_len)) {
                link.addresses.push((spec.gateway, spec.prefix_len));
            }
            Ok(index)
        })
    }

    fn create_tap(&self, spec: TapSpec) -> LinksFuture<u32> {
        let this = self.clone();
        Box::pin(async move {
            let delay = this.lock().create_delay;
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            let mut s = this.lock();
            s.calls.push(LinksCall::CreateTap(spec.name.clone()));
            s.injected(FakeOp::CreateTap, &spec.name)?;
            if s.links.contains_key(&spec.name) {
                return Err(LinksError::Exists { name: spec.name });
            }
            let index = s.add(&spec.name, LinkKind::Tap, 1500);
            let link = s.links.get_mut(&spec.name).expect("just added");
            link.owner = spec.owner;
            link.group = spec.group;
            link.ipv6_off = true;
            Ok(index)
        })
    }

    fn attach_port(&self, name: &str, index: u32, spec: PortSpec) -> LinksFuture<()> {
        let this = self.clone();
        let name = name.to_owned();
        Box::pin(async move {
            let mut s = this.lock();
            s.calls.push(LinksCall::AttachPort(name.clone()));
            s.injected(FakeOp::AttachPort, &name)?;
            match s.links.get_mut(&name) {
                Some(link) if link.index == index => {
                    link.master = Some(spec.bridge_index);
                    link.mtu = spec.mtu;
                    link.up = true;
                    link.isolated = spec.isolated;
                    Ok(())
                }
                _ => Err(LinksError::NotFound { name }),
            }
        })
    }

    fn delete_link(&self, name: &str) -> LinksFuture<()> {
        let this = self.clone();
        let name = name.to_owned();
        Box::pin(async move {
            let mut s = this.lock();
            s.calls.push(LinksCall::DeleteLink(name.clone()));
            s.injected(FakeOp::DeleteLink, &name)?;
            if let Some(link) = s.links.remove(&name) {
                // The kernel drops a link's neighbour and forwarding entries with it.
                s.neighbours.retain(|(index, _), _| *index != link.index);
                s.fdb.retain(|_, port| *port != name);
            }
            Ok(())
        })
    }

    fn delete_links(
        &self,
        names: Vec<String>,
    ) -> LocalBoxFuture<'static, Vec<(String, LinksError)>> {
        let this = self.clone();
        Box::pin(async move {
            let mut s = this.lock();
            s.calls.push(LinksCall::DeleteLinks(names.clone()));
            let mut failed = Vec::new();
            for name in names {
                // A failure injected for `delete_link` applies to batch members too.
                if let Err(e) = s.injected(FakeOp::DeleteLink, &name) {
                    failed.push((name, e));
                    continue;
                }
                if let Some(link) = s.links.remove(&name) {
                    s.neighbours.retain(|(index, _), _| *index != link.index);
                    s.fdb.retain(|_, port| *port != name);
                }
            }
            failed
        })
    }

    fn list_links(&self, prefix: &str) -> LinksFuture<Vec<LinkEntry>> {
        let this = self.clone();
        let prefix = prefix.to_owned();
        Box::pin(async move {
            let mut s = this.lock();
            s.calls.push(LinksCall::ListLinks(prefix.clone()));
            s.injected(FakeOp::ListLinks, &prefix)?;
            Ok(s.links
                .iter()
                .filter(|(name, _)| name.starts_with(&prefix))
                .map(|(name, link)| LinkEntry {
                    name: name.clone(),
                    index: link.index,
                    kind: link.kind,
                    master: link.master,
                })
                .collect())
        })
    }

    fn pin_neighbour(
        &self,
        bridge: u32,
        port: &str,
        ip: Ipv4Addr,
        mac: MacAddr,
    ) -> LinksFuture<()> {
        let this = self.clone();
        let port = port.to_owned();
        Box::pin(async move {
            let mut s = this.lock();
            s.calls
                .push(LinksCall::PinNeighbour(bridge, port.clone(), ip, mac));
            s.injected(FakeOp::PinNeighbour, &ip.to_string())?;
            if !s.links.contains_key(&port) {
                return Err(LinksError::NotFound { name: port });
            }
            s.neighbours.insert((bridge, ip), mac);
            s.fdb.insert(mac, port);
            Ok(())
        })
    }

    fn unpin_neighbour(
        &self,
        bridge: u32,
        port: &str,
        ip: Ipv4Addr,
        mac: MacAddr,
    ) -> LinksFuture<()> {
        let this = self.clone();
        let port = port.to_owned();
        Box::pin(async move {
            let mut s = this.lock();
            s.calls
                .push(LinksCall::UnpinNeighbour(bridge, port.clone(), ip, mac));
            s.injected(FakeOp::UnpinNeighbour, &ip.to_string())?;
            s.neighbours.remove(&(bridge, ip));
            if s.fdb.get(&mac) == Some(&port) {
                s.fdb.remove(&mac);
            }
            Ok(())
        })
    }

    fn pinned_neighbours(&self, index: u32) -> LinksFuture<Vec<(Ipv4Addr, MacAddr)>> {
        let this = self.clone();
        Box::pin(async move {
            let mut s = this.lock();
            s.calls.push(LinksCall::PinnedNeighbours(index));
            Ok(s.neighbours
                .iter()
                .filter(|((i, _), _)| *i == index)
                .map(|((_, ip), mac)| (*ip, *mac))
                .collect())
        })
    }
}
