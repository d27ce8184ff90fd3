//! The real [`Links`]: rtnetlink for links, addresses and bridge ports, TUN ioctls for TAPs.
//! Everything acts in the network namespace of the thread that created the [`LinuxLinks`]:
//! the system calls run on a backend thread it spawns, and threads inherit their creator's
//! namespace.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::mpsc;

use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec};

use crate::mac::MacAddr;

use super::{
    check_ifname, sysctl, tun, BridgeSpec, LinkEntry, LinkKind, Links, LinksError, LinksFuture,
    PortSpec, TapSpec,
};

/// [`Links`] over a netlink socket and `/dev/net/tun`.
#[derive(Clone)]
pub struct LinuxLinks {
    handle: Handle,
    worker: Worker,
}

type Job = Box<dyn FnOnce() + Send>;

/// The backend's own thread. The kernel does its work inside our system calls: registering a
/// TAP (TUNSETIFF) or deleting a link (`RTM_DELLINK`, which waits for an RCU grace period)
/// blocks the calling thread for up to tens of milliseconds. So the netlink socket and its
/// connection task, and the TUN ioctls, all live on this thread, never on the actor's. It is
/// spawned by the thread creating [`LinuxLinks`] and so shares its network namespace; it
/// exits when the last clone is dropped.
#[derive(Clone)]
struct Worker {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
}

impl Worker {
    /// Starts the thread with a netlink connection on it; returns the worker and the handle.
    fn start() -> Result<(Self, Handle), LinksError> {
        let (jobs, mut queue) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("hearth-links".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => return drop(ready_tx.send(Err(e))),
                };
                runtime.block_on(async move {
                    // The socket is created here, in this runtime (and namespace).
                    let (connection, handle, _) = match rtnetlink::new_connection() {
                        Ok(c) => c,
                        Err(e) => return drop(ready_tx.send(Err(e))),
                    };
                    tokio::spawn(connection);
                    let _ = ready_tx.send(Ok(handle));
                    while let Some(job) = queue.recv().await {
                        job();
                    }
                });
            })
            .map_err(|source| LinksError::Socket { source })?;
        let handle = ready_rx
            .recv()
            .map_err(|_| LinksError::Socket {
                source: std::io::Error::other("backend thread died"),
            })?
            .map_err(|source| LinksError::Socket { source })?;
        Ok((Self { jobs }, handle))
    }

    /// Runs the blocking `f` on the backend thread; `None` if the thread is gone.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> impl std::future::Future<Output = Option<T>> {
        let (tx, rx) = oneshot::channel();
        let sent = self.jobs.send(Box::new(move || {
            let _ = tx.send(f());
        }));
        async move {
            sent.ok()?;
            rx.await.ok()
        }
    }
}

impl LinuxLinks {
    /// Starts the backend thread (netlink socket + TUN ioctls) in the calling thread's
    /// network namespace. Needs no runtime; the futures it returns can be polled on any
    /// executor.
    pub fn new() -> Result<Self, LinksError> {
        let (worker, handle) = Worker::start()?;
        Ok(Self { handle, worker })
    }
}

impl std::fmt::Debug for LinuxLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxLinks").finish_non_exhaustive()
    }
}

impl Links for LinuxLinks {
    fn pin_neighbour(
        &self,
        bridge: u32,
        port: &str,
        ip: Ipv4Addr,
        mac: MacAddr,
    ) -> LinksFuture<()> {
        let handle = self.handle.clone();
        let port = port.to_owned();
        Box::pin(async move {
            let netlink = |op: &'static str| {
                let link = format!("{ip} ({mac}) on {port}");
                move |source| LinksError::Netlink {
                    op,
                    link,
                    source: Box::new(source),
                }
            };
            let port_index = link_by_name(&handle, &port)
                .await?
                .ok_or_else(|| LinksError::NotFound { name: port.clone() })?
                .header
                .index;
            // The forwarding entry first: from the moment the host stops asking ARP, its
            // frames for `mac` go to this port only.
            handle
                .neighbours()
                .add_bridge(port_index, &mac.0)
                .state(NeighbourState::Noarp)
                .flags(NeighbourFlags::Controller | NeighbourFlags::Sticky)
                .replace()
                .execute()
                .await
                .map_err(netlink("pin bridge forwarding entry"))?;
            handle
                .neighbours()
                .add(bridge, IpAddr::V4(ip))
                .link_layer_address(&mac.0)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(netlink("pin neighbour"))
        })
    }

    fn unpin_neighbour(
        &self,
        bridge: u32,
        port: &str,
        ip: Ipv4Addr,
        mac: MacAddr,
    ) -> LinksFuture<()> {
        let handle = self.handle.clone();
        let port = port.to_owned();
        Box::pin(async move {
            let absent_ok = |op: &'static str, res: Result<(), rtnetlink::Error>| match res {
                Ok(()) => Ok(()),
                Err(e) if matches!(errno(&e), libc::ENOENT | libc::ENODEV | libc::EINVAL) => Ok(()),
                Err(source) => Err(LinksError::Netlink {
                    op,
                    link: format!("{ip} ({mac}) on {port}"),
                    source: Box::new(source),
                }),
            };
            let mut message = NeighbourMessage::default();
            message.header.family = AddressFamily::Inet;
            message.header.ifindex = bridge;
            message
                .attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
            absent_ok(
                "unpin neighbour",
                handle.neighbours().del(message).execute().await,
            )?;
            if port.is_empty() {
                return Ok(());
            }
            if let Some(link) = link_by_name(&handle, &port).await? {
                let mut message = NeighbourMessage::default();
                message.header.family = AddressFamily::Bridge;
                message.header.ifindex = link.header.index;
                message.header.flags = NeighbourFlags::Controller;
                message
                    .attributes
                    .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
                absent_ok(
                    "unpin bridge forwarding entry",
                    handle.neighbours().del(message).execute().await,
                )?;
            }
            Ok(())
        })
    }

    fn pinned_neighbours(&self, index: u32) -> LinksFuture<Vec<(Ipv4Addr, MacAddr)>> {
        let handle = self.handle.clone();
        Box::pin(async move {
            let entries: Vec<NeighbourMessage> = handle
                .neighbours()
                .get()
                .set_address_family(AddressFamily::Inet)
                .execute()
                .try_collect()
                .await
                .map_err(|source| LinksError::Netlink {
                    op: "list neighbours",
                    link: format!("link {index}"),
                    source: Box::new(source),
                })?;
            Ok(entries
                .iter()
                .filter(|n| {
                    n.header.ifindex == index && n.header.state == NeighbourState::Permanent
                })
                .filter_map(|n| {
                    let ip = n.attributes.iter().find_map(|a| match a {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
                        _ => None,
                    })?;
                    let mac = n.attributes.iter().find_map(|a| match a {
                        NeighbourAttribute::LinkLayerAddress(b) => {
                            <[u8; 6]>::try_from(b.as_slice()).ok()
                        }
                        _ => None,
                    })?;
                    Some((ip, MacAddr(mac)))
                })
                .collect())
        })
    }

    fn ensure_bridge(&self, spec: BridgeSpec) -> LinksFuture<u32> {
        let handle = self.handle.clone();
        let worker = self.worker.clone();
        Box::pin(async move {
            check_ifname(&spec.name)?;
            let (index, created) = match link_by_name(&handle, &spec.name).await? {
                Some(link) if kind_of(&link) == LinkKind::Bridge => (link.header.index, false),
                Some(_) => return Err(LinksError::NotABridge { name: spec.name }),
                None => {
                    let add = handle
                        .link()
                        .add(LinkBridge::new(&spec.name).mtu(spec.mtu).build())
                        .execute()
                        .await;
                    let created = match add {
                        Ok(()) => true,
                        // Lost a race with someone creating it: adopt below if it is a bridge.
                        Err(e) if errno(&e) == libc::EEXIST => false,
                        Err(source) => {
                            return Err(LinksError::Netlink {
                                op: "add bridge",
                                link: spec.name,
                                source: Box::new(source),
                            })
                        }
                    };
                    match link_by_name(&handle, &spec.name).await? {
                        Some(link) if kind_of(&link) == LinkKind::Bridge => {
                            (link.header.index, created)
                        }
                        Some(_) => return Err(LinksError::NotABridge { name: spec.name }),
                        None => return Err(LinksError::NotFound { name: spec.name }),
                    }
                }
            };
            // IPv6 off before `configure_bridge` brings the bridge up (a new bridge is down).
            let name = spec.name.clone();
            let ipv6_off = worker
                .run(move || sysctl::disable_ipv6(&name))
                .await
                .unwrap_or_else(|| {
                    Err(LinksError::WorkerGone {
                        name: spec.name.clone(),
                    })
                });
            let configured = match ipv6_off {
                Ok(()) => configure_bridge(&handle, index, &spec).await,
                Err(e) => Err(e),
            };
            if configured.is_err() && created {
                // Undo our creation; the original error is what matters.
                let _ = handle.link().del(index).execute().await;
            }
            configured.map(|()| index)
        })
    }

    fn create_tap(&self, spec: TapSpec) -> LinksFuture<u32> {
        let name = spec.name.clone();
        let work = self.worker.run(move || {
            tun::create_persistent_tap(&spec)?;
            nix::net::if_::if_nametoindex(spec.name.as_str())
                .map_err(|_| LinksError::NotFound { name: spec.name })
        });
        Box::pin(async move { work.await.unwrap_or(Err(LinksError::WorkerGone { name })) })
    }

    fn attach_port(&self, name: &str, index: u32, spec: PortSpec) -> LinksFuture<()> {
        let handle = self.handle.clone();
        let name = name.to_owned();
        Box::pin(async move {
            handle
                .link()
                .change(
                    LinkUnspec::new_with_index(index)
                        .controller(spec.bridge_index)
                        .mtu(spec.mtu)
                        .up()
                        .build(),
                )
                .execute()
                .await
                .map_err(|source| match errno(&source) {
                    libc::EXFULL => LinksError::BridgeFull { name: name.clone() },
                    _ => LinksError::Netlink {
                        op: "attach to bridge",
                        link: name.clone(),
                        source: Box::new(source),
                    },
                })?;
            // Port attributes need the port enslaved first: the kernel hands them to the
            // current master's slave_changelink.
            handle
                .link()
                .set_port(LinkBridgePort::new(index).isolated(spec.isolated).build())
                .execute()
                .await
                .map_err(|source| LinksError::Netlink {
                    op: "set bridge port isolation",
                    link: name,
                    source: Box::new(source),
                })
        })
    }

    fn delete_link(&self, name: &str) -> LinksFuture<()> {
        let handle = self.handle.clone();
        let name = name.to_owned();
        Box::pin(async move { delete_one(&handle, &name).await })
    }

    fn delete_links(
        &self,
        names: Vec<String>,
    ) -> LocalBoxFuture<'static, Vec<(String, LinksError)>> {
        let handle = self.handle.clone();
        Box::pin(async move {
            // Move the links into a link group of their own, then delete the group with one
            // RTM_DELLINK: the kernel unregisters them together (one grace period).
            let group = next_delete_group();
            let mut grouped = Vec::new();
            let mut failed = Vec::new();
            for name in names {
                let link = match link_by_name(&handle, &name).await {
                    Ok(Some(link)) => link,
                    Ok(None) => continue,
                    Err(e) => {
                        failed.push((name, e));
                        continue;
                    }
                };
                let index = link.header.index;
                let set = handle
                    .link()
                    .change(LinkUnspec::new_with_index(index).link_group(group).build())
                    .execute()
                    .await;
                match set {
                    Ok(()) => grouped.push(name),
                    Err(e) if errno(&e) == libc::ENODEV => {}
                    Err(source) => failed.push((
                        name,
                        LinksError::Netlink {
                            op: "move to the deletion group",
                            link: format!("link {index}"),
                            source: Box::new(source),
                        },
                    )),
                }
            }
            if grouped.is_empty() {
                return failed;
            }
            let mut del = handle.link().del(0);
            del.message_mut()
                .attributes
                .push(LinkAttribute::Group(group));
            if del.execute().await.is_err() {
                // The group delete failed (e.g. a link of the group is not deletable): one
                // at a time, so each failure is named.
                for name in grouped {
                    let res = delete_one(&handle, &name).await;
                    if let Err(e) = res {
                        failed.push((name, e));
                    }
                }
            }
            failed
        })
    }

    fn list_links(&self, prefix: &str) -> LinksFuture<Vec<LinkEntry>> {
        let handle = self.handle.clone();
        let prefix = prefix.to_owned();
        Box::pin(async move {
            let links: Vec<LinkMessage> = handle
                .link()
                .get()
                .execute()
                .try_collect()
                .await
                .map_err(|source| LinksError::Netlink {
                    op: "list links",
                    link: format!("{prefix}*"),
                    source: Box::new(source),
                })?;
            Ok(links
                .iter()
                .filter_map(|link| {
                    let name = name_of(link)?;
                    name.starts_with(&prefix).then(|| LinkEntry {
                        name,
                        index: link.header.index,
                        kind: kind_of(link),
                        master: master_of(link),
                    })
                })
                .collect())
        })
    }
}

/// Deletes the link called `name`; an absent link is not an error.
async fn delete_one(handle: &Handle, name: &str) -> Result<(), LinksError> {
    let Some(link) = link_by_name(handle, name).await? else {
        return Ok(());
    };
    match handle.link().del(link.header.index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == libc::ENODEV => Ok(()),
        Err(source) => Err(LinksError::Netlink {
            op: "delete link",
            link: name.to_owned(),
            source: Box::new(source),
        }),
    }
}

/// A link group number for one batch deletion: `0x4854` ("HT") in the high half, so hearth's
/// groups stay clear of the small numbers administrators use, and a per-process counter with
/// the pid in the low half, so two batches (or two hearth processes) never share one.
fn next_delete_group() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let low = (std::process::id().wrapping_mul(97).wrapping_add(n)) & 0xffff;
    0x4854_0000 | low.max(1)
}

/// MTU up, link up, gateway address present.
async fn configure_bridge(
    handle: &Handle,
    index: u32,
    spec: &BridgeSpec,
) -> Result<(), LinksError> {
    let netlink = |op: &'static str| {
        let link = spec.name.clone();
        move |source| LinksError::Netlink {
            op,
            link,
            source: Box::new(source),
        }
    };
    handle
        .link()
        .change(
            LinkUnspec::new_with_index(index)
                .mtu(spec.mtu)
                .address(spec.mac.0.to_vec())
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(netlink("set bridge mtu, address and up"))?;
    let addresses: Vec<_> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(netlink("list addresses"))?;
    let wanted = IpAddr::V4(spec.gateway);
    let present = addresses.iter().any(|a| {
        a.header.index == index
            && a.header.prefix_len == spec.prefix_len
            && a.attributes.iter().any(|attr| {
                matches!(attr, AddressAttribute::Local(ip) | AddressAttribute::Address(ip) if *ip == wanted)
            })
    });
    if present {
        return Ok(());
    }
    match handle
        .address()
        .add(index, wanted, spec.prefix_len)
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == libc::EEXIST => Ok(()),
        Err(e) => Err(netlink("add address")(e)),
    }
}

/// The link called `name`, or `None` if there is none.
async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, LinksError> {
    check_ifname(name)?;
    let mut links = handle.link().get().match_name(name).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if errno(&e) == libc::ENODEV => Ok(None),
        Err(source) => Err(LinksError::Netlink {
            op: "get link",
            link: name.into(),
            source: Box::new(source),
        }),
    }
}

/// The positive errno of a netlink error, or 0 for other errors.
fn errno(e: &rtnetlink::Error) -> i32 {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.raw_code().abs(),
        _ => 0,
    }
}

fn name_of(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })
}

fn master_of(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(index) if *index != 0 => Some(*index),
        _ => None,
    })
}

fn kind_of(link: &LinkMessage) -> LinkKind {
    let kind = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(kind) => Some(kind.clone()),
            _ => None,
        }),
        _ => None,
    });
    match kind {
        Some(InfoKind::Tun) => LinkKind::Tap,
        Some(InfoKind::Bridge) => LinkKind::Bridge,
        _ => LinkKind::Other,
    }
}
