//! The TCP hairpin proxy: each accepted guest connection is spliced to a new connection to
//! the guest behind the published port.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::io::copy_bidirectional_with_sizes;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::{
    allowed_peer, Budget, HairpinSpec, Held, Shares, CONNECT_TIMEOUT, KEEPALIVE_INTERVAL,
    KEEPALIVE_PROBES, KEEPALIVE_TIME,
};

/// Each direction's buffer: 32 KiB carries a stream about twice as fast as tokio's default
/// 8 KiB (`bench_hairpin`), and all proxies' connections together hold at most 64 MiB.
const BUFFER: usize = 32 * 1024;

/// Serves `listener` until aborted (which ends every connection). A connection is refused
/// (closed at once) when its peer is outside the guest subnet, or the proxy, its guest's
/// share or the `budget` of all proxies is full.
pub(super) async fn serve(listener: TcpListener, spec: HairpinSpec, budget: Budget) {
    let mut connections = JoinSet::new();
    let per_guest = Shares::new(spec.limits.tcp_per_guest);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    let Some(peer) = allowed_peer(peer, spec.peers) else { continue };
                    if connections.len() >= spec.limits.tcp_connections {
                        continue;
                    }
                    if let Some(held) = budget.take(true, *peer.ip(), &per_guest) {
                        connections.spawn(splice(client, spec, held));
                    }
                }
                // Out of descriptors or memory: let connections end before accepting again.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Copies both ways between `client` and a new connection to the target, half-closes
/// included, until both sides are done or either fails (a side gone silent ends by
/// keepalive). `held` goes back to the budgets when it ends.
async fn splice(mut client: TcpStream, spec: HairpinSpec, held: Held) {
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(spec.target));
    let Ok(Ok(mut upstream)) = connect.await else {
        // The guest behind the port does not answer: the client sees its connection reset.
        let _ = client.set_zero_linger();
        return;
    };
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_TIME)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    for stream in [&client, &upstream] {
        let _ = stream.set_nodelay(true);
        let _ = SockRef::from(stream).set_tcp_keepalive(&keepalive);
    }
    let _ = copy_bidirectional_with_sizes(&mut client, &mut upstream, BUFFER, BUFFER).await;
    drop(held);
}
