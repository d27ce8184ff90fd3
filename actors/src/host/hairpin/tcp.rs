//! The TCP hairpin proxy: each accepted guest connection is spliced to a new connection to
//! the guest behind the published port.

use std::time::Duration;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::{allowed_peer, HairpinSpec, CONNECT_TIMEOUT};

/// Serves the listening socket `listener` until aborted (which ends every connection).
pub(super) async fn serve(listener: std::net::TcpListener, spec: HairpinSpec) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        return;
    };
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    // Refused (closed at once): a peer outside the guest subnet, or one too many.
                    if allowed_peer(peer, spec.peers).is_some()
                        && connections.len() < spec.limits.tcp_connections
                    {
                        connections.spawn(splice(client, spec));
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
/// included, until both sides are done or either fails.
async fn splice(mut client: TcpStream, spec: HairpinSpec) {
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(spec.target));
    let Ok(Ok(mut upstream)) = connect.await else {
        // The guest behind the port does not answer: the client sees its connection reset.
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let _ = copy_bidirectional(&mut client, &mut upstream).await;
}
