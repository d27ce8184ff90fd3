//! The TCP hairpin proxy: each accepted guest connection is spliced to a new connection to
//! the guest behind the published port.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::{allowed_peer, HairpinSpec, PerGuest, CONNECT_TIMEOUT};

/// Serves `listener` until aborted (which ends every connection). A connection is refused
/// (closed at once) when its peer is outside the guest subnet, or the proxy, its guest's
/// share or all proxies' `budget` is full.
pub(super) async fn serve(listener: TcpListener, spec: HairpinSpec, budget: Arc<Semaphore>) {
    let mut connections: JoinSet<Ipv4Addr> = JoinSet::new();
    let mut per_guest = PerGuest::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    let Some(peer) = allowed_peer(peer, spec.peers) else { continue };
                    if connections.len() >= spec.limits.tcp_connections {
                        continue;
                    }
                    let Ok(permit) = Arc::clone(&budget).try_acquire_owned() else { continue };
                    if per_guest.take(*peer.ip(), spec.limits.tcp_per_guest) {
                        connections.spawn(splice(client, *peer.ip(), spec, permit));
                    }
                }
                // Out of descriptors or memory: let connections end before accepting again.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            },
            Some(ended) = connections.join_next(), if !connections.is_empty() => {
                // A splice does not panic; were one to, its guest's count would stay taken.
                if let Ok(guest) = ended {
                    per_guest.give(guest);
                }
            }
        }
    }
}

/// Copies both ways between `client` and a new connection to the target, half-closes
/// included, until both sides are done or either fails; answers the guest's address.
async fn splice(
    mut client: TcpStream,
    guest: Ipv4Addr,
    spec: HairpinSpec,
    _permit: OwnedSemaphorePermit,
) -> Ipv4Addr {
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(spec.target));
    let Ok(Ok(mut upstream)) = connect.await else {
        // The guest behind the port does not answer: the client sees its connection reset.
        let _ = client.set_zero_linger();
        return guest;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let _ = copy_bidirectional(&mut client, &mut upstream).await;
    guest
}
