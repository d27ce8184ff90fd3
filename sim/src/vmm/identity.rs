//! The guest's network identity file (`FC_SIM_IDENTITY_FILE`): where the real agent's
//! `reconfigure` lands when the simulator runs it on the host (`--sim-identity-file`), since
//! it must never change the host's interfaces. The VMM thread polls the file; a new valid
//! identity replaces the guest network stack's address, prefix, gateway, DNS server and MAC
//! (the stack is restarted on the same TAP), and is what a later snapshot records.

use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::snapshot::GuestIdentity;
use super::{Timer, Vmm};
use crate::knobs::IdentityFile;

/// How often the file is checked.
pub const POLL: Duration = Duration::from_millis(20);
/// The largest identity file read.
const MAX_FILE: u64 = 64 * 1024;

/// The fields of a `reconfigure` request the guest network stack uses; the others (hostname,
/// clock, RNG seed) have nothing to act on in the simulated guest.
#[derive(Debug, Deserialize)]
struct Written {
    ip_cidr: String,
    gateway: Option<Ipv4Addr>,
    mac: String,
    dns: Option<Ipv4Addr>,
}

/// Parses an identity file's content.
pub fn parse(raw: &[u8]) -> Result<GuestIdentity, String> {
    let w: Written = serde_json::from_slice(raw).map_err(|e| e.to_string())?;
    let (ip, prefix) = w
        .ip_cidr
        .split_once('/')
        .ok_or_else(|| format!("ip_cidr {:?} is not <address>/<prefix>", w.ip_cidr))?;
    let ip: Ipv4Addr = ip
        .parse()
        .map_err(|_| format!("ip_cidr address {ip:?} is not IPv4"))?;
    let prefix_len: u8 = prefix
        .parse()
        .ok()
        .filter(|p| (1..=32).contains(p))
        .ok_or_else(|| format!("ip_cidr prefix {prefix:?} is not 1..=32"))?;
    hearth_proto::firecracker::net::parse_mac(&w.mac).map_err(|e| e.to_string())?;
    Ok(GuestIdentity {
        mac: w.mac.to_ascii_lowercase(),
        ip,
        prefix_len,
        gateway: w.gateway,
        dns: w.dns,
    })
}

impl Vmm {
    /// The identity file, if the knob is set.
    pub(super) fn identity_path(&self) -> Option<PathBuf> {
        match self.knobs.identity_file.as_ref()? {
            IdentityFile::At(p) => Some(p.clone()),
            IdentityFile::BesideApiSocket => Some(
                Path::new(&self.opts.api_sock)
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join("sim-identity.json"),
            ),
        }
    }

    /// At `InstanceStart` or a load: forget an identity file left by an earlier process, and
    /// start polling.
    pub(super) fn watch_identity(&mut self) {
        if let Some(path) = self.identity_path() {
            let _ = std::fs::remove_file(path);
            self.identity_seen = None;
            self.identity_pending = None;
            self.timers
                .push((Instant::now() + POLL, Timer::IdentityPoll));
        }
    }

    /// Adopts a new identity from the file, if it changed.
    pub(super) fn poll_identity(&mut self) {
        self.timers
            .push((Instant::now() + POLL, Timer::IdentityPoll));
        let Some(path) = self.identity_path() else {
            return;
        };
        let mut raw = Vec::new();
        let read = std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_FILE).read_to_end(&mut raw).map(|_| ()));
        if read.is_err() || self.identity_seen.as_deref() == Some(&raw[..]) {
            return;
        }
        if !self.knobs.identity_delay.is_zero() {
            // A slow guest: the new content is acted on once it has stood this long.
            match &self.identity_pending {
                Some((pending, since)) if *pending == raw => {
                    if since.elapsed() < self.knobs.identity_delay {
                        return;
                    }
                }
                _ => {
                    self.identity_pending = Some((raw, Instant::now()));
                    return;
                }
            }
        }
        self.identity_pending = None;
        self.identity_seen = Some(raw.clone());
        match parse(&raw) {
            Ok(id) => {
                self.log.info(&format!(
                    "Guest adopted identity {}/{} {}",
                    id.ip, id.prefix_len, id.mac
                ));
                self.guest_identity = Some(id);
                if self.guest_net.take().is_some() {
                    if let Err(e) = self.start_guest_net() {
                        self.log
                            .error(&format!("Cannot restart the guest network stack: {e}"));
                    }
                }
            }
            Err(e) => self
                .log
                .error(&format!("Ignoring identity file {}: {e}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_reconfigure_request() {
        let id = parse(
            br#"{"ip_cidr":"172.31.240.9/24","gateway":"172.31.240.1","mac":"06:00:AC:1F:F0:09","hostname":"f","dns":"172.31.240.1","rng_seed":"00"}"#,
        )
        .unwrap();
        assert_eq!(id.ip, Ipv4Addr::new(172, 31, 240, 9));
        assert_eq!(id.prefix_len, 24);
        assert_eq!(id.mac, "06:00:ac:1f:f0:09");
        assert_eq!(id.gateway, Some(Ipv4Addr::new(172, 31, 240, 1)));
        assert!(parse(br#"{"ip_cidr":"172.31.240.9","mac":"06:00:ac:1f:f0:09"}"#).is_err());
        assert!(parse(br#"{"ip_cidr":"172.31.240.9/40","mac":"06:00:ac:1f:f0:09"}"#).is_err());
        assert!(parse(br#"{"ip_cidr":"172.31.240.9/24","mac":"nope"}"#).is_err());
        assert!(parse(b"not json").is_err());
    }
}
