//! Opening a TAP the way Firecracker does, to hold it busy in tests.

use std::os::fd::{AsRawFd, OwnedFd};

/// Opens TAP `name` with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` (as Firecracker does); the TAP
/// stays busy (EBUSY for any other opener) while the returned fd lives.
pub fn open_tap(name: &str) -> OwnedFd {
    try_open_tap(name).unwrap_or_else(|e| panic!("TUNSETIFF {name}: {e}"))
}

/// Like [`open_tap`], returning the error (EBUSY when another process holds the TAP).
pub fn try_open_tap(name: &str) -> std::io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let mut req = IfReq {
        name: [0; 16],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
        _pad: [0; 22],
    };
    assert!(name.len() < 16, "TAP name {name} too long");
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF with a properly sized, initialised ifreq.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), libc::TUNSETIFF as _, &mut req) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(f.into())
}
