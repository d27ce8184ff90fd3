//! The UDP hairpin proxy: each guest address and port is a flow with its own socket
//! connected to the guest behind the published port; the answers go back from the proxy's
//! socket, so conntrack gives them the published address as their source.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::{Id, JoinSet};

use super::{allowed_peer, Budget, HairpinSpec, Held, Shares, UDP_QUEUE};

/// The largest datagram (an IPv4 payload): the size of a receive buffer, which exists only
/// while a datagram is read (what is kept is a copy of the datagram's own size).
const MAX_DATAGRAM: usize = 65_535;

/// A flow the proxy holds: where its datagrams go, and which task serves it.
struct Flow {
    datagrams: mpsc::Sender<Vec<u8>>,
    task: Id,
}

/// Serves `socket` until aborted (which ends every flow). Datagrams are dropped when their
/// sender is outside the guest subnet, or their flow would be one too many for the proxy, its
/// guest's share or the `budget` of all proxies, or their flow's queue is full.
pub(super) async fn serve(socket: UdpSocket, spec: HairpinSpec, budget: Budget) {
    let socket = Arc::new(socket);
    let mut flows: HashMap<SocketAddrV4, Flow> = HashMap::new();
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut peers: HashMap<Id, SocketAddrV4> = HashMap::new();
    let per_guest = Shares::new(spec.limits.udp_per_guest);
    loop {
        tokio::select! {
            received = receive(&socket) => {
                let Some((datagram, from)) = received else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let Some(peer) = allowed_peer(from, spec.peers) else { continue };
                let datagram = match flows.get(&peer) {
                    // A full queue drops the datagram, as a full socket buffer would.
                    Some(flow) => match flow.datagrams.try_send(datagram) {
                        Err(TrySendError::Closed(d)) => d,
                        _ => continue,
                    },
                    None => datagram,
                };
                // No flow, or one that just ended (idle) and is not reaped yet: a new one.
                if let Some(old) = flows.remove(&peer) {
                    peers.remove(&old.task);
                }
                if flows.len() >= spec.limits.udp_flows {
                    continue;
                }
                let Some(held) = budget.take(false, *peer.ip(), &per_guest) else { continue };
                let (tx, rx) = mpsc::channel(UDP_QUEUE);
                let _ = tx.try_send(datagram);
                let task = tasks
                    .spawn(flow(Arc::clone(&socket), peer, spec, rx, held))
                    .id();
                flows.insert(peer, Flow { datagrams: tx, task });
                peers.insert(task, peer);
            }
            Some(ended) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let task = match ended {
                    Ok((task, ())) => task,
                    Err(e) => e.id(),
                };
                // Only the flow this task served (a newer one may hold the peer now).
                if let Some(peer) = peers.remove(&task) {
                    if flows.get(&peer).is_some_and(|f| f.task == task) {
                        flows.remove(&peer);
                    }
                }
            }
        }
    }
}

/// The next datagram and its sender; `None` on an error other than "nothing to read".
async fn receive(socket: &UdpSocket) -> Option<(Vec<u8>, std::net::SocketAddr)> {
    loop {
        socket.readable().await.ok()?;
        let mut buf = vec![0u8; MAX_DATAGRAM];
        match socket.try_recv_from(&mut buf) {
            Ok((n, from)) => return Some((buf[..n].to_vec(), from)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => return None,
        }
    }
}

/// One guest's flow: its datagrams to the target, the target's answers back to it, until
/// the idle limit passes without either. `held` goes back to the budgets when it ends.
async fn flow(
    proxy: Arc<UdpSocket>,
    peer: SocketAddrV4,
    spec: HairpinSpec,
    mut datagrams: mpsc::Receiver<Vec<u8>>,
    held: Held,
) {
    let upstream = match UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).await {
        Ok(s) if s.connect(spec.target).await.is_ok() => s,
        _ => return,
    };
    loop {
        tokio::select! {
            datagram = datagrams.recv() => match datagram {
                Some(d) => { let _ = upstream.send(&d).await; }
                None => break,
            },
            readable = upstream.readable() => {
                if readable.is_err() {
                    break;
                }
                let mut buf = vec![0u8; MAX_DATAGRAM];
                // An error is a spurious wake-up or the target's ICMP (port unreachable): the
                // flow stays.
                if let Ok(n) = upstream.try_recv(&mut buf) {
                    let _ = proxy.send_to(&buf[..n], peer).await;
                }
            }
            () = tokio::time::sleep(spec.limits.udp_idle) => break,
        }
    }
    drop(held);
}
