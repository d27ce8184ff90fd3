//! The guest's network configuration: MAC, address/prefix, gateway and DNS server, the TAP's
//! virtio-net header length, and the timeouts of the blocking helpers. Also parses the kernel
//! `ip=` boot argument hearth gives a guest, so the simulated guest configures itself exactly
//! as a real one would.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::NetstackError;

/// Length of a TAP's virtio-net header, set by the opener with `IFF_VNET_HDR` and
/// `TUNSETVNETHDRSZ`. Every frame read from or written to the TAP starts with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VnetHdr {
    /// The TAP was opened without `IFF_VNET_HDR`: frames are plain Ethernet.
    None,
    /// The legacy 10-byte `virtio_net_hdr` (the kernel default with `IFF_VNET_HDR`).
    Legacy10,
    /// The 12-byte `virtio_net_hdr_v1` (with `num_buffers`), as Firecracker sets it.
    V1Len12,
}

impl VnetHdr {
    /// The header's length in bytes.
    pub fn len(self) -> usize {
        match self {
            VnetHdr::None => 0,
            VnetHdr::Legacy10 => 10,
            VnetHdr::V1Len12 => 12,
        }
    }

    /// True when frames carry no header.
    pub fn is_empty(self) -> bool {
        self == VnetHdr::None
    }

    /// The header for a length given to `TUNSETVNETHDRSZ` (0 meaning no header).
    pub fn from_len(len: usize) -> Result<Self, NetstackError> {
        match len {
            0 => Ok(VnetHdr::None),
            10 => Ok(VnetHdr::Legacy10),
            12 => Ok(VnetHdr::V1Len12),
            _ => Err(NetstackError::InvalidConfig {
                reason: format!("Virtio-net header length {len} is not 0, 10 or 12"),
            }),
        }
    }
}

/// Everything the simulated guest needs to be on the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// The guest interface's MAC (the one given to Firecracker, not the TAP's own).
    pub mac: [u8; 6],
    /// The guest's IPv4 address.
    pub ip: Ipv4Addr,
    /// Prefix length of the guest's subnet (1..=32).
    pub prefix_len: u8,
    /// The default gateway, if any.
    pub gateway: Option<Ipv4Addr>,
    /// The DNS server [`GuestStack::resolve`](super::GuestStack::resolve) asks, if any.
    pub dns: Option<Ipv4Addr>,
    /// The virtio-net header framing of the TAP fd.
    pub vnet_hdr: VnetHdr,
    /// How long the blocking helpers wait before giving up with a timeout error.
    pub timeout: Duration,
}

impl NetConfig {
    /// A configuration with no gateway or DNS server, no virtio-net header and a 5 s timeout.
    pub fn new(mac: [u8; 6], ip: Ipv4Addr, prefix_len: u8) -> Self {
        NetConfig {
            mac,
            ip,
            prefix_len,
            gateway: None,
            dns: None,
            vnet_hdr: VnetHdr::None,
            timeout: Duration::from_secs(5),
        }
    }

    /// The configuration a guest with `mac` takes from its kernel `ip=` argument (see
    /// [`parse_kernel_ip_arg`]); `cmdline` may be the argument alone or a whole command line.
    pub fn from_kernel_cmdline(mac: [u8; 6], cmdline: &str) -> Result<Self, NetstackError> {
        let k = parse_kernel_ip_arg(cmdline)?;
        Ok(NetConfig {
            gateway: k.gateway,
            dns: k.dns,
            ..NetConfig::new(mac, k.ip, k.prefix_len)
        })
    }

    /// Checks the cross-field rules: a unicast MAC, a usable address and prefix, and a
    /// gateway inside the subnet.
    pub fn validate(&self) -> Result<(), NetstackError> {
        let bad = |reason: String| Err(NetstackError::InvalidConfig { reason });
        if self.mac[0] & 1 != 0 || self.mac == [0; 6] {
            return bad(format!("Guest MAC {:02x?} is not unicast", self.mac));
        }
        if !(1..=32).contains(&self.prefix_len) {
            return bad(format!(
                "Prefix length {} is not in 1..=32",
                self.prefix_len
            ));
        }
        if self.ip.is_unspecified() || self.ip.is_broadcast() || self.ip.is_multicast() {
            return bad(format!(
                "Guest address {} is not a unicast address",
                self.ip
            ));
        }
        if let Some(gw) = self.gateway {
            let mask = prefix_mask(self.prefix_len);
            if u32::from(gw) & mask != u32::from(self.ip) & mask || gw == self.ip {
                return bad(format!(
                    "Gateway {gw} is not another address in {}/{}",
                    self.ip, self.prefix_len
                ));
            }
        }
        if self.timeout.is_zero() {
            return bad("Timeout is zero".into());
        }
        Ok(())
    }
}

/// What a kernel `ip=<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>:<dns0>`
/// argument configures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelIpConfig {
    /// The client (guest) address.
    pub ip: Ipv4Addr,
    /// The prefix length the netmask stands for.
    pub prefix_len: u8,
    /// The default gateway, when given.
    pub gateway: Option<Ipv4Addr>,
    /// The first DNS server, when given.
    pub dns: Option<Ipv4Addr>,
    /// The hostname, when given.
    pub hostname: Option<String>,
    /// The device name (`eth0`), when given.
    pub device: Option<String>,
}

/// Parses the kernel's static `ip=` argument, e.g.
/// `ip=172.31.240.5::172.31.240.1:255.255.255.0::eth0:off:172.31.240.1`.
///
/// `input` may be the argument alone (with or without `ip=`) or a whole kernel command line,
/// whose first `ip=` word is used. Only static configuration is accepted (autoconf `off`,
/// `none` or empty); the client address and netmask are required.
pub fn parse_kernel_ip_arg(input: &str) -> Result<KernelIpConfig, NetstackError> {
    let arg = if input.contains(char::is_whitespace) || input.contains('=') {
        input
            .split_whitespace()
            .find_map(|w| w.strip_prefix("ip="))
            .ok_or_else(|| bad_ip_arg(input, "no ip= argument"))?
    } else {
        input
    };
    let fields: Vec<&str> = arg.split(':').collect();
    if fields.len() > 10 {
        return Err(bad_ip_arg(arg, "more than 10 fields"));
    }
    let field = |i: usize| fields.get(i).copied().unwrap_or("");
    let addr = |i: usize, what: &str| -> Result<Option<Ipv4Addr>, NetstackError> {
        match field(i) {
            "" => Ok(None),
            s => s
                .parse()
                .map(Some)
                .map_err(|_| bad_ip_arg(arg, &format!("{what} {s:?} is not an IPv4 address"))),
        }
    };
    let ip = addr(0, "client address")?.ok_or_else(|| bad_ip_arg(arg, "no client address"))?;
    let gateway = addr(2, "gateway")?;
    let mask = addr(3, "netmask")?.ok_or_else(|| bad_ip_arg(arg, "no netmask"))?;
    let prefix_len = mask_to_prefix(mask)
        .ok_or_else(|| bad_ip_arg(arg, &format!("netmask {mask} is not contiguous")))?;
    let autoconf = field(6);
    if !matches!(autoconf, "" | "off" | "none") {
        return Err(bad_ip_arg(
            arg,
            &format!("autoconf {autoconf:?} is not supported (only off)"),
        ));
    }
    let dns = addr(7, "DNS server")?;
    let text = |i: usize| Some(field(i)).filter(|s| !s.is_empty()).map(String::from);
    Ok(KernelIpConfig {
        ip,
        prefix_len,
        gateway,
        dns,
        hostname: text(4),
        device: text(5),
    })
}

fn bad_ip_arg(arg: &str, reason: &str) -> NetstackError {
    NetstackError::InvalidKernelIpArg {
        arg: arg.to_string(),
        reason: reason.to_string(),
    }
}

/// The netmask's prefix length, or None when its one bits are not contiguous.
fn mask_to_prefix(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    (ones > 0 && m.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

/// The netmask of a prefix length, as a host-order integer.
pub(crate) fn prefix_mask(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len.min(32)))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hearths_ip_arg() {
        let k = parse_kernel_ip_arg(
            "ip=172.31.240.5::172.31.240.1:255.255.255.0::eth0:off:172.31.240.1",
        )
        .unwrap();
        assert_eq!(k.ip, Ipv4Addr::new(172, 31, 240, 5));
        assert_eq!(k.prefix_len, 24);
        assert_eq!(k.gateway, Some(Ipv4Addr::new(172, 31, 240, 1)));
        assert_eq!(k.dns, Some(Ipv4Addr::new(172, 31, 240, 1)));
        assert_eq!(k.device.as_deref(), Some("eth0"));
        assert_eq!(k.hostname, None);
    }

    #[test]
    fn finds_ip_arg_in_a_command_line_and_without_prefix() {
        let line = "console=ttyS0 reboot=k ip=10.0.0.2::10.0.0.1:255.255.0.0:vm1:eth0:off: quiet";
        let k = parse_kernel_ip_arg(line).unwrap();
        assert_eq!(k.prefix_len, 16);
        assert_eq!(k.dns, None);
        assert_eq!(k.hostname.as_deref(), Some("vm1"));
        let bare = parse_kernel_ip_arg("10.0.0.2::10.0.0.1:255.255.255.252").unwrap();
        assert_eq!(bare.prefix_len, 30);
        assert_eq!(bare.gateway, Some(Ipv4Addr::new(10, 0, 0, 1)));
    }

    #[test]
    fn rejects_bad_ip_args_with_the_reason() {
        for (arg, reason) in [
            ("console=ttyS0", "no ip="),
            ("ip=::10.0.0.1:255.255.255.0", "no client address"),
            ("ip=10.0.0.2::10.0.0.1", "no netmask"),
            ("ip=10.0.0.2::10.0.0.1:255.0.255.0", "not contiguous"),
            ("ip=10.0.0.2::10.0.0.1:0.0.0.0", "not contiguous"),
            ("ip=10.0.0.x::10.0.0.1:255.255.255.0", "client address"),
            ("ip=10.0.0.2::10.0.0.1:255.255.255.0::eth0:dhcp", "autoconf"),
            (
                "ip=10.0.0.2::10.0.0.1:255.255.255.0::eth0:off:nope",
                "DNS server",
            ),
        ] {
            match parse_kernel_ip_arg(arg) {
                Err(NetstackError::InvalidKernelIpArg { reason: r, .. }) => {
                    assert!(r.contains(reason), "{arg}: {r}");
                }
                other => panic!("{arg}: {other:?}"),
            }
        }
    }

    #[test]
    fn config_from_cmdline_validates() {
        let mac = [0x06, 0, 10, 0, 0, 2];
        let c = NetConfig::from_kernel_cmdline(
            mac,
            "ip=10.0.0.2::10.0.0.1:255.255.255.0::eth0:off:10.0.0.1",
        )
        .unwrap();
        assert!(c.validate().is_ok());
        let mut off_subnet = c.clone();
        off_subnet.gateway = Some(Ipv4Addr::new(10, 0, 1, 1));
        assert!(off_subnet.validate().is_err());
        let mut multicast_mac = c.clone();
        multicast_mac.mac[0] = 1;
        assert!(multicast_mac.validate().is_err());
        let mut bad_prefix = c;
        bad_prefix.prefix_len = 33;
        assert!(bad_prefix.validate().is_err());
    }

    #[test]
    fn vnet_header_lengths() {
        assert_eq!(VnetHdr::from_len(12).unwrap().len(), 12);
        assert_eq!(VnetHdr::from_len(10).unwrap(), VnetHdr::Legacy10);
        assert!(VnetHdr::from_len(0).unwrap().is_empty());
        assert!(VnetHdr::from_len(11).is_err());
    }
}
