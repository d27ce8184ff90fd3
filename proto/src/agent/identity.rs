//! `reconfigure` (v2): gives a restored or forked guest its new identity. A snapshot restores
//! the source guest's IP, MAC, hostname, RNG state and clock; hearth leases new ones and
//! tells the agent before the VM counts as running.
//!
//! ```text
//! -> {"v":2,"op":"reconfigure","ip_cidr":"172.31.240.9/24","gateway":"172.31.240.1",
//!     "mac":"06:00:ac:1f:f0:09","hostname":"fork-1","dns":"172.31.240.1",
//!     "clock_unix_ns":1764460800000000000,"rng_seed":"00..(64 hex digits)"}
//! <- {"v":2,"ok":{}}
//! ```
//!
//! The agent sets the MAC (link down, which also drops neighbour entries and routes), the
//! address, brings the link up, re-adds the default route, writes the hostname and
//! `/etc/resolv.conf`, mixes `rng_seed` into the kernel's entropy pool, and sets the clock when
//! `clock_unix_ns` is given (when Firecracker could not, i.e. no `clock_realtime` on load).

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The interface a reconfigure applies to: the guest's only one (hearth's `eth0`).
pub const GUEST_DEVICE: &str = "eth0";

/// 32 bytes of fresh randomness from the host, hex on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RngSeed(pub [u8; 32]);

impl fmt::Debug for RngSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A seed is a secret of the guest's RNG: never in logs.
        f.write_str("RngSeed(..)")
    }
}

impl RngSeed {
    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 64 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(RngSeed(out))
    }

    /// The 64 hex digits.
    pub fn to_hex(&self) -> String {
        use std::fmt::Write as _;
        self.0.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }
}

impl Serialize for RngSeed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for RngSeed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RngSeed::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("rng_seed is not 64 hex digits"))
    }
}

/// The arguments of `reconfigure`: the guest's new identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reconfigure {
    /// The new address with its prefix, e.g. `172.31.240.9/24`.
    pub ip_cidr: String,
    /// The default gateway (inside `ip_cidr`'s subnet).
    pub gateway: Ipv4Addr,
    /// The new MAC, `aa:bb:cc:dd:ee:ff` (unicast, not all zeroes).
    pub mac: String,
    /// The new hostname (1-63 of letters, digits, `-`, `.`).
    pub hostname: String,
    /// The name server for `/etc/resolv.conf` (hearth's DNS on the gateway).
    pub dns: Ipv4Addr,
    /// The wall clock to set, in nanoseconds since the Unix epoch; left alone when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_unix_ns: Option<u64>,
    /// Fresh randomness for the guest's RNG, so forks of one snapshot diverge.
    pub rng_seed: RngSeed,
}

/// A [`Reconfigure`]'s fields, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedIdentity {
    /// The address.
    pub addr: Ipv4Addr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// The MAC's bytes.
    pub mac: [u8; 6],
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

impl Reconfigure {
    /// Checks every field and answers the parsed address and MAC, or what is wrong.
    pub fn validate(&self) -> Result<ParsedIdentity, String> {
        let (addr, prefix) = self
            .ip_cidr
            .split_once('/')
            .ok_or_else(|| format!("ip_cidr {:?} is not <address>/<prefix>", self.ip_cidr))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("ip_cidr address {addr:?} is not IPv4"))?;
        let prefix_len: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (1..=32).contains(p))
            .ok_or_else(|| format!("ip_cidr prefix {prefix:?} is not 1..=32"))?;
        if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() {
            return Err(format!("ip_cidr address {addr} is not a host address"));
        }
        let mask = u32::MAX << (32 - u32::from(prefix_len));
        if u32::from(self.gateway) & mask != u32::from(addr) & mask || self.gateway == addr {
            return Err(format!(
                "gateway {} is not another address of {}",
                self.gateway, self.ip_cidr
            ));
        }
        let mac = parse_mac(&self.mac)
            .ok_or_else(|| format!("mac {:?} is not aa:bb:cc:dd:ee:ff", self.mac))?;
        if mac[0] & 1 == 1 || mac == [0; 6] {
            return Err(format!("mac {} is not a unicast address", self.mac));
        }
        let h = &self.hostname;
        if h.is_empty()
            || h.len() > 63
            || !h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(format!(
                "hostname {h:?} is not 1-63 letters, digits, '-' or '.'"
            ));
        }
        Ok(ParsedIdentity {
            addr,
            prefix_len,
            mac,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn identity() -> Reconfigure {
        Reconfigure {
            ip_cidr: "172.31.240.9/24".into(),
            gateway: Ipv4Addr::new(172, 31, 240, 1),
            mac: "06:00:ac:1f:f0:09".into(),
            hostname: "fork-1".into(),
            dns: Ipv4Addr::new(172, 31, 240, 1),
            clock_unix_ns: Some(1_764_460_800_000_000_000),
            rng_seed: RngSeed([0xab; 32]),
        }
    }

    #[test]
    fn a_good_identity_parses() {
        let p = identity().validate().unwrap();
        assert_eq!(p.addr, Ipv4Addr::new(172, 31, 240, 9));
        assert_eq!(p.prefix_len, 24);
        assert_eq!(p.mac, [6, 0, 0xac, 0x1f, 0xf0, 9]);
    }

    #[test]
    fn bad_fields_are_named() {
        type Breaker = fn(&mut Reconfigure);
        let cases: Vec<(Breaker, &str)> = vec![
            (|r| r.ip_cidr = "172.31.240.9".into(), "ip_cidr"),
            (|r| r.ip_cidr = "x/24".into(), "ip_cidr"),
            (|r| r.ip_cidr = "172.31.240.9/33".into(), "ip_cidr"),
            (|r| r.ip_cidr = "172.31.240.9/0".into(), "ip_cidr"),
            (|r| r.ip_cidr = "0.0.0.0/24".into(), "ip_cidr"),
            (|r| r.gateway = Ipv4Addr::new(10, 0, 0, 1), "gateway"),
            (|r| r.gateway = Ipv4Addr::new(172, 31, 240, 9), "gateway"),
            (|r| r.mac = "06:00:ac:1f:f0".into(), "mac"),
            (|r| r.mac = "07:00:ac:1f:f0:09".into(), "unicast"),
            (|r| r.mac = "00:00:00:00:00:00".into(), "unicast"),
            (|r| r.hostname = String::new(), "hostname"),
            (|r| r.hostname = "a b".into(), "hostname"),
            (|r| r.hostname = "a".repeat(64), "hostname"),
        ];
        for (break_it, word) in cases {
            let mut r = identity();
            break_it(&mut r);
            let e = r.validate().unwrap_err();
            assert!(e.contains(word), "{e} should name {word}");
        }
    }

    #[test]
    fn the_op_round_trips_and_bad_identities_are_bad_requests() {
        use crate::agent::{codes, decode_request, encode_request, Request};
        let req = Request::Reconfigure(identity());
        let line = encode_request(&req);
        assert!(line.starts_with(b"{\"v\":2,\"op\":\"reconfigure\","));
        assert_eq!(decode_request(&line).unwrap(), req);
        let mut bad = identity();
        bad.mac = "ff:ff:ff:ff:ff:ff".into();
        let e = decode_request(&encode_request(&Request::Reconfigure(bad))).unwrap_err();
        assert_eq!(e.to_error_body().code, codes::BAD_REQUEST);
        assert!(e.to_string().contains("unicast"), "{e}");
        // v1 does not have it.
        let v1 = String::from_utf8(line)
            .unwrap()
            .replace("\"v\":2", "\"v\":1");
        assert!(decode_request(v1.as_bytes()).is_err());
    }

    #[test]
    fn seeds_are_hex_and_never_printed() {
        let json = serde_json::to_value(identity()).unwrap();
        assert_eq!(json["rng_seed"], "ab".repeat(32));
        let back: Reconfigure = serde_json::from_value(json).unwrap();
        assert_eq!(back, identity());
        assert!(!format!("{back:?}").contains("abab"));
        for bad in [
            "",
            "ab",
            &"zz".repeat(32),
            &"ab".repeat(33),
            &"é".repeat(32),
        ] {
            assert!(RngSeed::from_hex(bad).is_none(), "{bad}");
        }
        let mut json = serde_json::to_value(identity()).unwrap();
        json["rng_seed"] = "00".into();
        assert!(serde_json::from_value::<Reconfigure>(json).is_err());
    }
}
