//! The UDP hairpin proxy: each guest address and port is a flow with its own socket
//! connected to the guest behind the published port; the answers go back from the proxy's
//! socket, so conntrack gives them the published address as their source.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{allowed_peer, HairpinSpec, UDP_QUEUE};

/// The largest datagram (an IPv4 payload).
const MAX_DATAGRAM: usize = 65_535;

/// Serves the bound socket `socket` until aborted (which ends every flow).
pub(super) async fn serve(socket: std::net::UdpSocket, spec: HairpinSpec) {
    let Ok(socket) = UdpSocket::from_std(socket) else {
        return;
    };
    let socket = Arc::new(socket);
    let mut flows: HashMap<SocketAddrV4, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = received else { continue };
                let Some(peer) = allowed_peer(from, spec.peers) else { continue };
                let datagram = buf[..n].to_vec();
                if let Some(flow) = flows.get(&peer) {
                    // A full queue drops the datagram, as a full socket buffer would.
                    let _ = flow.try_send(datagram);
                } else if flows.len() < spec.limits.udp_flows {
                    let (tx, rx) = mpsc::channel(UDP_QUEUE);
                    let _ = tx.try_send(datagram);
                    flows.insert(peer, tx);
                    tasks.spawn(flow(Arc::clone(&socket), peer, spec, rx));
                }
            }
            Some(Ok(peer)) = tasks.join_next(), if !tasks.is_empty() => {
                flows.remove(&peer);
            }
        }
    }
}

/// One guest's flow: its datagrams to the target, the target's answers back to it, until
/// the idle limit passes without either. Answers the guest's address (to forget the flow).
async fn flow(
    proxy: Arc<UdpSocket>,
    peer: SocketAddrV4,
    spec: HairpinSpec,
    mut datagrams: mpsc::Receiver<Vec<u8>>,
) -> SocketAddrV4 {
    let upstream = match UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).await {
        Ok(s) if s.connect(spec.target).await.is_ok() => s,
        _ => return peer,
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            datagram = datagrams.recv() => match datagram {
                Some(d) => { let _ = upstream.send(&d).await; }
                None => break,
            },
            answer = upstream.recv(&mut buf) => {
                // An error here is the target's ICMP (port unreachable): the flow stays.
                if let Ok(n) = answer {
                    let _ = proxy.send_to(&buf[..n], peer).await;
                }
            }
            () = tokio::time::sleep(spec.limits.udp_idle) => break,
        }
    }
    peer
}
