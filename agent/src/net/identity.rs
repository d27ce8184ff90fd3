//! Applying a `reconfigure` ([`hearth_proto::agent::identity`]): the guest's new identity
//! after a snapshot restore. The backend is chosen at launch and passed in, never guessed:
//! [`GuestIdentity`] changes the guest (interface, routes, hostname, resolv.conf, RNG, clock);
//! [`SimIdentityFile`] (`--sim-identity-file PATH`, for an agent the simulator runs on the
//! host) only writes the request to a file, so the host's own network is never touched.

use std::io::{self, Write as _};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use hearth_proto::agent::identity::GUEST_DEVICE;
use hearth_proto::agent::{codes, ErrorBody, Reconfigure};

use super::iface::{self, StaticIpv4};

/// Applies a new identity.
pub trait IdentityBackend: Send + Sync + std::fmt::Debug {
    /// Applies `identity` (already validated by the protocol decoder).
    ///
    /// # Errors
    ///
    /// `reconfigure_failed` naming the step that failed; steps before it stay applied (a
    /// guest half re-identified is told so, and hearth does not count it as running).
    fn apply(&self, identity: &Reconfigure) -> Result<(), ErrorBody>;
}

fn failed(step: &str, e: impl std::fmt::Display) -> ErrorBody {
    ErrorBody::new(codes::RECONFIGURE_FAILED, format!("{step}: {e}"))
}

/// The real guest: `eth0`, `/etc`, `/dev/urandom` and the realtime clock.
#[derive(Debug, Clone)]
pub struct GuestIdentity {
    /// Where `hostname` and `resolv.conf` are written (`/etc`).
    pub etc: PathBuf,
}

impl Default for GuestIdentity {
    fn default() -> Self {
        GuestIdentity {
            etc: PathBuf::from("/etc"),
        }
    }
}

/// `RNDADDENTROPY`'s argument: entropy bits, byte count, then the bytes.
#[repr(C)]
struct RandPoolInfo {
    entropy_count: libc::c_int,
    buf_size: libc::c_int,
    buf: [u8; 32],
}

/// `_IOW('R', 0x03, int[2])`.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;

/// Mixes `seed` into the kernel's pool, credited as entropy (`RNDADDENTROPY`, needs
/// `CAP_SYS_ADMIN`); without the capability it is still mixed in by a plain write, uncredited.
///
/// # Errors
///
/// Opening or writing /dev/urandom failed.
pub fn reseed(seed: &[u8; 32]) -> io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")?;
    let info = RandPoolInfo {
        entropy_count: 256,
        buf_size: 32,
        buf: *seed,
    };
    // SAFETY: RNDADDENTROPY reads one rand_pool_info of buf_size bytes from the pointer.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), RNDADDENTROPY, &raw const info) };
    if r < 0 {
        f.write_all(seed)?;
    }
    Ok(())
}

/// Sets the realtime clock.
///
/// # Errors
///
/// `clock_settime`'s (e.g. no `CAP_SYS_TIME`).
pub fn set_clock(unix_ns: u64) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(unix_ns / 1_000_000_000)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
        tv_nsec: libc::c_long::try_from(unix_ns % 1_000_000_000).unwrap_or_default(),
    };
    // SAFETY: clock_settime reads one timespec.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &raw const ts) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl IdentityBackend for GuestIdentity {
    fn apply(&self, identity: &Reconfigure) -> Result<(), ErrorBody> {
        let parsed = identity
            .validate()
            .map_err(|e| ErrorBody::new(codes::BAD_REQUEST, e))?;
        // Fresh randomness first: anything after may use it (e.g. TCP ISNs, sequence ids).
        reseed(&identity.rng_seed.0).map_err(|e| failed("reseeding the RNG", e))?;
        if let Some(ns) = identity.clock_unix_ns {
            set_clock(ns).map_err(|e| failed("setting the clock", e))?;
        }
        iface::apply(&StaticIpv4 {
            device: GUEST_DEVICE.to_string(),
            addr: parsed.addr,
            prefix_len: parsed.prefix_len,
            gateway: Some(identity.gateway),
            mac: Some(parsed.mac),
        })
        .map_err(|e| failed("configuring the network", e))?;
        iface::set_hostname(&identity.hostname, &self.etc)
            .map_err(|e| failed("setting the hostname", e))?;
        iface::write_resolv_conf(&self.etc, identity.dns)
            .map_err(|e| failed("writing resolv.conf", e))
    }
}

/// The simulator's backend: the request, as JSON, replaces the file at `path` (atomically:
/// the simulator's guest reads it to adopt the new address and MAC). Nothing else changes.
#[derive(Debug, Clone)]
pub struct SimIdentityFile {
    /// The file.
    pub path: PathBuf,
}

impl IdentityBackend for SimIdentityFile {
    fn apply(&self, identity: &Reconfigure) -> Result<(), ErrorBody> {
        identity
            .validate()
            .map_err(|e| ErrorBody::new(codes::BAD_REQUEST, e))?;
        let json = serde_json::to_vec(identity).map_err(|e| failed("encoding", e))?;
        write_atomically(&self.path, &json)
            .map_err(|e| failed(&format!("writing {}", self.path.display()), e))
    }
}

fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_proto::agent::RngSeed;
    use std::net::Ipv4Addr;

    fn identity() -> Reconfigure {
        Reconfigure {
            ip_cidr: "172.31.240.9/24".into(),
            gateway: Ipv4Addr::new(172, 31, 240, 1),
            mac: "06:00:ac:1f:f0:09".into(),
            hostname: "fork-1".into(),
            dns: Ipv4Addr::new(172, 31, 240, 1),
            clock_unix_ns: None,
            rng_seed: RngSeed([7; 32]),
        }
    }

    #[test]
    fn the_sim_backend_writes_the_request_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.json");
        let b = SimIdentityFile { path: path.clone() };
        b.apply(&identity()).unwrap();
        let back: Reconfigure = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, identity());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
        // A bad identity changes nothing.
        let mut bad = identity();
        bad.ip_cidr = "nope".into();
        assert_eq!(b.apply(&bad).unwrap_err().code, codes::BAD_REQUEST);
        let still: Reconfigure = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(still, identity());
        // An unwritable place is a reconfigure failure naming the file.
        let b = SimIdentityFile {
            path: dir.path().join("missing/identity.json"),
        };
        let e = b.apply(&identity()).unwrap_err();
        assert_eq!(e.code, codes::RECONFIGURE_FAILED);
        assert!(e.message.contains("missing/identity.json"), "{}", e.message);
    }

    #[test]
    fn reseeding_mixes_into_the_pool() {
        // Unprivileged: falls back to the plain write; privileged: credited. Either succeeds.
        reseed(&[1; 32]).unwrap();
    }
}
