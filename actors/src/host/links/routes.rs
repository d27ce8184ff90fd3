//! Route events over netlink: a stream that yields each time the IPv4 routing table of the
//! calling thread's network namespace changes (a default route appears, an interface goes
//! away...), so hearthd can pick up an egress interface that was missing at start-up.

use futures::{Stream, StreamExt};
use rtnetlink::MulticastGroup;

use super::LinksError;

/// Subscribes to IPv4 route changes (`RTNLGRP_IPV4_ROUTE`) and spawns the netlink connection
/// on the current runtime (call it inside the actix system). The stream yields `()` per
/// change message and ends when the socket closes; what changed is for the caller to read.
pub fn ipv4_route_changes() -> Result<impl Stream<Item = ()> + Unpin, LinksError> {
    let (connection, _handle, messages) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Ipv4Route])
            .map_err(|source| LinksError::Socket { source })?;
    tokio::task::spawn_local(connection);
    Ok(messages.map(drop))
}
