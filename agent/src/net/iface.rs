//! Static IPv4 configuration of the guest's interfaces through the classic `SIOC*` ioctls
//! (no netlink dependency in the static agent): link up/down, MAC, address and netmask, the
//! default route; plus the hostname and `/etc/resolv.conf`. Used by init (from the kernel
//! `ip=` argument) and by the `reconfigure` op (a new identity after a snapshot restore).
//!
//! Taking the link down drops its neighbour (ARP) entries and its routes, which is what a new
//! identity needs: [`apply`] always re-adds the default route after bringing the link up.

use std::fmt::Write as _;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// A static IPv4 setup for one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticIpv4 {
    /// The interface (e.g. `eth0`).
    pub device: String,
    /// Its address.
    pub addr: Ipv4Addr,
    /// Its prefix length (0-32).
    pub prefix_len: u8,
    /// The default gateway, if any.
    pub gateway: Option<Ipv4Addr>,
    /// A new MAC address, if it should change.
    pub mac: Option<[u8; 6]>,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn with_context(what: String) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// An `AF_INET` datagram socket: the handle the interface ioctls go through.
fn ctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket returns a new fd or -1.
    let fd = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An `ifreq` naming `device`.
fn ifreq(device: &str) -> io::Result<libc::ifreq> {
    if device.is_empty() || device.len() >= libc::IFNAMSIZ || device.contains(['/', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{device:?} is not an interface name"),
        ));
    }
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(device.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::sa_family_t::try_from(libc::AF_INET).unwrap_or_default(),
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; the kernel reads it as sockaddr_in.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl(sock: &OwnedFd, request: libc::c_ulong, req: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: every request used here reads or writes one ifreq.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), request, std::ptr::from_mut(req)) }).map(|_| ())
}

/// Brings `device` up or down.
///
/// # Errors
///
/// The interface does not exist, or the ioctl failed.
pub fn set_link(device: &str, up: bool) -> io::Result<()> {
    let sock = ctl_socket()?;
    let mut req = ifreq(device)?;
    ioctl(&sock, libc::SIOCGIFFLAGS, &mut req)
        .map_err(with_context(format!("Reading {device}'s flags")))?;
    // SAFETY: SIOCGIFFLAGS filled the flags member.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    let up_flag = libc::c_short::try_from(libc::IFF_UP).unwrap_or_default();
    let new = if up {
        flags | up_flag
    } else {
        flags & !up_flag
    };
    req.ifr_ifru.ifru_flags = new;
    ioctl(&sock, libc::SIOCSIFFLAGS, &mut req).map_err(with_context(format!(
        "Bringing {device} {}",
        if up { "up" } else { "down" }
    )))
}

/// Sets `device`'s MAC address (the link should be down).
///
/// # Errors
///
/// The ioctl's.
pub fn set_mac(device: &str, mac: [u8; 6]) -> io::Result<()> {
    let sock = ctl_socket()?;
    let mut req = ifreq(device)?;
    // SAFETY: all zeroes is a valid sockaddr.
    let mut hw: libc::sockaddr = unsafe { std::mem::zeroed() };
    hw.sa_family = libc::ARPHRD_ETHER;
    for (dst, src) in hw.sa_data.iter_mut().zip(mac) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_hwaddr = hw;
    ioctl(&sock, libc::SIOCSIFHWADDR, &mut req)
        .map_err(with_context(format!("Setting {device}'s MAC")))
}

/// Sets `device`'s IPv4 address and netmask (replacing its primary address).
///
/// # Errors
///
/// The ioctls'.
pub fn set_ipv4(device: &str, addr: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
    if prefix_len > 32 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("Prefix length {prefix_len} is more than 32"),
        ));
    }
    let sock = ctl_socket()?;
    let mut req = ifreq(device)?;
    req.ifr_ifru.ifru_addr = sockaddr_in(addr);
    ioctl(&sock, libc::SIOCSIFADDR, &mut req)
        .map_err(with_context(format!("Setting {device}'s address {addr}")))?;
    let mask = Ipv4Addr::from(
        u32::MAX
            .checked_shl(32 - u32::from(prefix_len))
            .unwrap_or(0),
    );
    let mut req = ifreq(device)?;
    req.ifr_ifru.ifru_netmask = sockaddr_in(mask);
    ioctl(&sock, libc::SIOCSIFNETMASK, &mut req)
        .map_err(with_context(format!("Setting {device}'s netmask {mask}")))
}

/// The kernel's `struct rtentry` (`SIOCADDRT`); glibc's libc bindings do not carry it.
#[repr(C)]
#[expect(clippy::struct_field_names, reason = "the kernel's field names")]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

/// Adds the default route through `gateway` on `device`; an existing identical route is fine.
///
/// # Errors
///
/// The ioctl's (e.g. the gateway is not on the interface's subnet).
pub fn add_default_route(device: &str, gateway: Ipv4Addr) -> io::Result<()> {
    let sock = ctl_socket()?;
    ifreq(device)?;
    let name = std::ffi::CString::new(device)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let route = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr_in(Ipv4Addr::UNSPECIFIED),
        rt_gateway: sockaddr_in(gateway),
        rt_genmask: sockaddr_in(Ipv4Addr::UNSPECIFIED),
        rt_flags: libc::RTF_UP | libc::RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: name.as_ptr().cast_mut(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    // SAFETY: SIOCADDRT reads one rtentry and the NUL-terminated name it points at, both alive.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCADDRT, &raw const route) };
    match cvt(r) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(with_context(format!(
            "Adding the default route via {gateway} on {device}"
        ))(e)),
    }
}

/// Configures one interface: down (dropping its neighbours and routes) when the MAC changes,
/// the MAC, the address, up, then the default route.
///
/// # Errors
///
/// The first step that failed, naming it.
pub fn apply(setup: &StaticIpv4) -> io::Result<()> {
    if let Some(mac) = setup.mac {
        set_link(&setup.device, false)?;
        set_mac(&setup.device, mac)?;
    }
    set_ipv4(&setup.device, setup.addr, setup.prefix_len)?;
    set_link(&setup.device, true)?;
    if let Some(gw) = setup.gateway {
        add_default_route(&setup.device, gw)?;
    }
    Ok(())
}

/// Brings the loopback interface up (the kernel gives it 127.0.0.1 when it comes up).
///
/// # Errors
///
/// The ioctl's.
pub fn loopback_up() -> io::Result<()> {
    set_link("lo", true)
}

/// Whether `name` is a valid hostname for `sethostname`: 1-64 bytes of letters, digits, `-`
/// and `.`.
pub fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Sets the kernel hostname and writes `<etc>/hostname`.
///
/// # Errors
///
/// An invalid name (nothing changed), or the syscall or the write failed.
pub fn set_hostname(name: &str, etc: &Path) -> io::Result<()> {
    if !valid_hostname(name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a valid hostname"),
        ));
    }
    // SAFETY: sethostname reads `len` bytes from the pointer.
    cvt(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })
        .map_err(with_context(format!("Setting the hostname to {name:?}")))?;
    write_etc(etc, "hostname", &format!("{name}\n"))
}

/// Writes `<etc>/resolv.conf` with this name server.
///
/// # Errors
///
/// The write's.
pub fn write_resolv_conf(etc: &Path, nameserver: Ipv4Addr) -> io::Result<()> {
    let mut s = String::from("# Written by hearth-init: hearth's DNS listens on the gateway.\n");
    let _ = writeln!(s, "nameserver {nameserver}");
    write_etc(etc, "resolv.conf", &s)
}

/// Replaces `<etc>/<name>` (a dangling symlink such as Debian's resolv.conf link is replaced
/// by a file rather than followed out of the tree).
fn write_etc(etc: &Path, name: &str, content: &str) -> io::Result<()> {
    std::fs::create_dir_all(etc).map_err(with_context(format!("Creating {}", etc.display())))?;
    let path = etc.join(name);
    let tmp = etc.join(format!(".{name}.hearth-tmp"));
    std::fs::write(&tmp, content).map_err(with_context(format!("Writing {}", tmp.display())))?;
    std::fs::rename(&tmp, &path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        with_context(format!("Replacing {}", path.display()))(e)
    })
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(
            parse_mac("06:00:ac:1f:f0:05"),
            Some([6, 0, 0xac, 0x1f, 0xf0, 5])
        );
        for bad in [
            "",
            "06:00:ac:1f:f0",
            "06:00:ac:1f:f0:05:01",
            "6:00:ac:1f:f0:05",
            "zz:00:ac:1f:f0:05",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn hostnames_and_names_are_checked() {
        assert!(valid_hostname("web-1.example"));
        assert!(!valid_hostname(""));
        assert!(!valid_hostname("a b"));
        assert!(!valid_hostname(&"a".repeat(65)));
        assert!(ifreq("eth0").is_ok());
        assert!(ifreq("").is_err());
        assert!(ifreq("averyveryverylongname").is_err());
        assert!(set_ipv4("eth0", Ipv4Addr::LOCALHOST, 33).is_err());
    }

    #[test]
    fn etc_files_are_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        write_resolv_conf(&etc, Ipv4Addr::new(172, 31, 240, 1)).unwrap();
        let r = std::fs::read_to_string(etc.join("resolv.conf")).unwrap();
        assert!(r.ends_with("nameserver 172.31.240.1\n"), "{r}");
        // A dangling symlink is replaced, not followed.
        std::os::unix::fs::symlink("/nonexistent/x", etc.join("hostname")).unwrap();
        write_etc(&etc, "hostname", "web\n").unwrap();
        assert!(!etc.join("hostname").is_symlink());
        assert_eq!(
            std::fs::read_to_string(etc.join("hostname")).unwrap(),
            "web\n"
        );
    }
}
