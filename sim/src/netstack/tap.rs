//! Opening a TAP the way Firecracker does (`IFF_TAP | IFF_NO_PI`, plus `IFF_VNET_HDR` and
//! `TUNSETVNETHDRSZ` when a header is wanted), for tests that run a guest stack on a TAP
//! without the simulator. Opening a name that does not exist creates a non-persistent TAP in
//! the calling thread's network namespace; opening a persistent one attaches to it.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};

use super::{NetstackError, VnetHdr};

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags (the rest is padding).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens (or creates) TAP `name` with the framing `vnet` describes and returns its fd.
pub fn open_tap(name: &str, vnet: VnetHdr) -> Result<OwnedFd, NetstackError> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
        return Err(NetstackError::InvalidConfig {
            reason: format!("TAP name {name:?} is not 1..=15 bytes without '/', ' ' or NUL"),
        });
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|source| NetstackError::Tap {
            op: "open /dev/net/tun",
            source,
        })?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    if !vnet.is_empty() {
        req.flags |= libc::IFF_VNET_HDR as libc::c_short;
    }
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `req` lays out (40 bytes,
    // name first, flags at offset 16) and which lives for the whole call.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
        return Err(NetstackError::Tap {
            op: "TUNSETIFF",
            source: std::io::Error::last_os_error(),
        });
    }
    if !vnet.is_empty() {
        let len = vnet.len() as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, valid for the call.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &len) } < 0 {
            return Err(NetstackError::Tap {
                op: "TUNSETVNETHDRSZ",
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(file.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }

    #[test]
    fn rejects_bad_names_before_any_syscall() {
        for name in ["", "a-name-that-is-too-long", "a/b"] {
            assert!(matches!(
                open_tap(name, VnetHdr::None),
                Err(NetstackError::InvalidConfig { .. })
            ));
        }
    }
}
