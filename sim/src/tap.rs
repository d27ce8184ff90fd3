//! Opens a TAP the way Firecracker's `Tap::open_named` does (`devices/virtio/net/tap.rs`):
//! `open("/dev/net/tun", O_RDWR|O_NONBLOCK|O_CLOEXEC)`, `TUNSETIFF` with
//! `IFF_TAP|IFF_NO_PI|IFF_VNET_HDR` (single queue), then `TUNSETVNETHDRSZ`. So a TAP already
//! attached to another fd fails with EBUSY, and a missing TAP is created (down) when the
//! process has `CAP_NET_ADMIN`, exactly as with the real VMM.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `_IOW('T', 216, int)`.
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
/// `sizeof(struct virtio_net_hdr_v1)`, what Firecracker sets.
const VNET_HDR_LEN: libc::c_int = 12;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// `struct ifreq` with the name and the flags member of the union; padded to 40 bytes.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Why a TAP could not be opened. `Display` is the text Firecracker puts after
/// `Open tap device failed: `.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name does not fit in `IFNAMSIZ` (15 bytes + NUL).
    #[error("Invalid interface name")]
    InvalidIfname,
    /// Opening `/dev/net/tun` failed.
    #[error("Error while opening the tun device: {0}")]
    OpenTun(io::Error),
    /// `TUNSETIFF` failed (EBUSY: the TAP is attached elsewhere; EPERM: no `CAP_NET_ADMIN`).
    #[error("Error while creating ifreq structure: {0}. Invalid TUN/TAP Backend provided by {1}. Check our documentation on setting up the network devices.")]
    IfreqExecuteError(io::Error, String),
    /// `TUNSETVNETHDRSZ` failed.
    #[error("Error while setting the vnet header size: {0}")]
    SetSizeOfVnetHdr(io::Error),
}

/// An open TAP; closing it detaches the VMM from the interface.
#[derive(Debug)]
pub struct Tap {
    /// The `/dev/net/tun` file attached to the interface.
    pub file: File,
    /// The interface name.
    pub name: String,
}

/// Opens (attaches to) the TAP `name`.
pub fn open_tap(name: &str) -> Result<Tap, TapError> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(TapError::InvalidIfname);
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(TapError::OpenTun)?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `file` is an open tun fd and `req` is a properly sized, initialised ifreq that
    // outlives the call; TUNSETIFF only reads and writes within it.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &raw mut req) };
    if rc < 0 {
        return Err(TapError::IfreqExecuteError(
            io::Error::last_os_error(),
            name.to_owned(),
        ));
    }
    let size: libc::c_int = VNET_HDR_LEN;
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which is valid for the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETVNETHDRSZ as _, &raw const size) };
    if rc < 0 {
        return Err(TapError::SetSizeOfVnetHdr(io::Error::last_os_error()));
    }
    Ok(Tap {
        file,
        name: name.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_is_40_bytes() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }

    #[test]
    fn long_names_are_rejected_before_any_syscall() {
        assert!(matches!(
            open_tap("a-very-long-tap-name"),
            Err(TapError::InvalidIfname)
        ));
    }
}
