//! Per-interface sysctls, written from the calling thread: `/proc/sys/net` shows the network
//! namespace of the task that opens it, so this runs on the backend thread, which lives in
//! the namespace the backend was created in.

use super::{check_ifname, LinksError};

/// Turns IPv6 off on `name` (`net.ipv6.conf.<name>.disable_ipv6 = 1`): the interface gets no
/// link-local address and the host's IPv6 stack ignores what arrives on it. A kernel without
/// IPv6 (no `/proc/sys/net/ipv6`) has nothing to turn off.
pub(super) fn disable_ipv6(name: &str) -> Result<(), LinksError> {
    check_ifname(name)?;
    if !std::path::Path::new("/proc/sys/net/ipv6").exists() {
        return Ok(());
    }
    let path = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    std::fs::write(&path, "1\n").map_err(|source| LinksError::Sysctl { path, source })
}
