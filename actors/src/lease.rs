//! The network lease a VM holds: its TAP, guest MAC and IP, and the bridge gateway. Made by
//! `TapPoolActor`, consumed by `FirecrackerActor` (interface + `ip=` boot argument), `NatActor`
//! (per-guest rules) and the supervisor's store.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

// MAC addresses are a leaf value type shared with the host backends; re-exported so callers
// keep importing them from here.
pub use crate::mac::{MacAddr, ParseMacError};

/// What a VM needs to be on hearth's bridge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NetLease {
    /// The TAP device name (at most 15 bytes), already attached to the bridge and up.
    pub tap: String,
    /// The MAC the guest's interface gets (given to Firecracker, not to the TAP).
    pub mac: MacAddr,
    /// The guest's IPv4 address.
    pub guest_ip: Ipv4Addr,
    /// The bridge's address: the guest's default gateway and DNS server.
    pub gateway: Ipv4Addr,
    /// Prefix length of the bridge subnet.
    pub prefix_len: u8,
}

impl NetLease {
    /// The kernel `ip=` boot argument that configures the guest's eth0 statically:
    /// `ip=<client>::<gw>:<netmask>::eth0:off:<dns>`.
    pub fn kernel_ip_arg(&self) -> String {
        let mask = Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(self.prefix_len))
                .unwrap_or(0),
        );
        format!(
            "ip={}::{}:{}::eth0:off:{}",
            self.guest_ip, self.gateway, mask, self.gateway
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_ip_arg_has_mask_and_dns() {
        let lease = NetLease {
            tap: "hth0".into(),
            mac: MacAddr::for_guest(Ipv4Addr::new(172, 31, 240, 5)),
            guest_ip: Ipv4Addr::new(172, 31, 240, 5),
            gateway: Ipv4Addr::new(172, 31, 240, 1),
            prefix_len: 24,
        };
        assert_eq!(
            lease.kernel_ip_arg(),
            "ip=172.31.240.5::172.31.240.1:255.255.255.0::eth0:off:172.31.240.1"
        );
    }
}
