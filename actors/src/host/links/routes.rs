//! Route and link events over netlink: a stream that yields each time the IPv4 routing table or
//! an interface of the calling thread's network namespace changes (a default route appears,
//! moves or goes away, an interface goes down or away...), so hearthd can follow the egress
//! interface NAT uses.

use futures::{Stream, StreamExt};
use rtnetlink::MulticastGroup;

use super::LinksError;

/// Subscribes to IPv4 route changes (`RTNLGRP_IPV4_ROUTE`) and link changes (`RTNLGRP_LINK`)
/// and spawns the netlink connection on the current runtime (call it inside the actix system).
/// Links too because the kernel drops the IPv4 routes of an interface that goes down or is
/// deleted without a route message. The stream yields `()` per message (an overrun of the
/// socket buffer included) and ends when the socket closes; what changed is for the caller
/// to read.
///
/// # Errors
///
/// [`LinksError::Socket`] when the netlink socket cannot be opened.
pub fn route_changes() -> Result<impl Stream<Item = ()> + Unpin, LinksError> {
    let (connection, _handle, messages) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Ipv4Route, MulticastGroup::Link])
            .map_err(|source| LinksError::Socket { source })?;
    tokio::task::spawn_local(connection);
    Ok(messages.map(drop))
}
