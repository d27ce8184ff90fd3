//! TUN/TAP ioctls on `/dev/net/tun`: create a persistent TAP in the calling thread's network
//! namespace, with the flags Firecracker opens it with.

use std::os::fd::AsRawFd;

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

use super::{check_ifname, LinksError, TapSpec};

// TUNSETIFF is declared `_IOW('T', 202, int)` but takes a `struct ifreq *`, hence "bad".
nix::ioctl_write_ptr_bad!(tun_set_iff, libc::TUNSETIFF, libc::ifreq);
nix::ioctl_write_int!(tun_set_persist, b'T', 203);
nix::ioctl_write_int!(tun_set_owner, b'T', 204);
nix::ioctl_write_int!(tun_set_group, b'T', 206);

/// The flags Firecracker opens its TAP with; `IFF_TUN_EXCL` makes creation fail on a taken
/// name instead of attaching to an existing device.
const CREATE_FLAGS: libc::c_int =
    libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | libc::IFF_TUN_EXCL;

/// Creates the persistent TAP `spec.name`. Until `TUNSETPERSIST` succeeds the device lives
/// only as long as our descriptor, so any failure leaves nothing behind.
pub(super) fn create_persistent_tap(spec: &TapSpec) -> Result<(), LinksError> {
    check_ifname(&spec.name)?;
    let tun_err = |op: &'static str| {
        let name = spec.name.clone();
        move |source| LinksError::Tun { op, name, source }
    };
    let fd = open(
        "/dev/net/tun",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(tun_err("open /dev/net/tun"))?;

    // SAFETY: an all-zero ifreq is valid (name of NULs, union of integers/null pointers).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(spec.name.bytes()) {
        *dst = src as libc::c_char;
    }
    // The flag word is a short in the kernel ABI; all our flags fit in 16 bits.
    req.ifr_ifru.ifru_flags = CREATE_FLAGS as libc::c_short;

    // SAFETY: fd is an open /dev/net/tun descriptor and req a valid ifreq that outlives the call.
    match unsafe { tun_set_iff(fd.as_raw_fd(), &raw const req) } {
        Ok(_) => {}
        Err(nix::Error::EBUSY | nix::Error::EEXIST) => {
            return Err(LinksError::Exists {
                name: spec.name.clone(),
            })
        }
        Err(e) => return Err(tun_err("TUNSETIFF")(e)),
    }
    if let Some(uid) = spec.owner {
        // SAFETY: integer-argument ioctl on our open tun descriptor.
        unsafe { tun_set_owner(fd.as_raw_fd(), libc::c_ulong::from(uid)) }
            .map_err(tun_err("TUNSETOWNER"))?;
    }
    if let Some(gid) = spec.group {
        // SAFETY: as above.
        unsafe { tun_set_group(fd.as_raw_fd(), libc::c_ulong::from(gid)) }
            .map_err(tun_err("TUNSETGROUP"))?;
    }
    // Before the TAP is persistent (a failure still takes it away with our descriptor) and
    // before anything brings it up: it never gets an IPv6 link-local address.
    super::sysctl::disable_ipv6(&spec.name)?;
    // SAFETY: as above.
    unsafe { tun_set_persist(fd.as_raw_fd(), 1) }.map_err(tun_err("TUNSETPERSIST"))?;
    // Dropping fd detaches us; the persistent device stays.
    Ok(())
}
