//! Ethernet MAC addresses: a leaf value type used both by the actors (leases) and by the host
//! backends (links, firewall), so neither layer imports the other for it.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The guest MAC hearth gives the guest at `ip`: `06:00:<ip octets>`, a locally
    /// administered unicast address (bit 1 of the first octet set, bit 0 clear) that is unique
    /// per guest IP and needs no allocation table.
    pub fn for_guest(ip: Ipv4Addr) -> Self {
        let o = ip.octets();
        MacAddr([0x06, 0x00, o[0], o[1], o[2], o[3]])
    }

    /// The MAC hearth gives its bridge (the guests' gateway at `gateway`): `0a:00:<ip octets>`,
    /// locally administered unicast, never a guest's (those start `06:00`). Set explicitly,
    /// because a bridge left to pick its own MAC takes its lowest port's and changes it as
    /// TAPs come and go, which breaks guests' cached ARP entry for the gateway.
    pub fn for_gateway(gateway: Ipv4Addr) -> Self {
        let o = gateway.octets();
        MacAddr([0x0a, 0x00, o[0], o[1], o[2], o[3]])
    }

    /// True for a locally administered unicast address.
    pub fn is_local_unicast(&self) -> bool {
        self.0[0] & 0b11 == 0b10
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// A MAC address that is not six colon-separated hex octets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid MAC address {0:?}: expected six hex octets separated by ':'")]
pub struct ParseMacError(pub String);

impl FromStr for MacAddr {
    type Err = ParseMacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(|| ParseMacError(s.into()))?;
            if part.len() != 2 {
                return Err(ParseMacError(s.into()));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| ParseMacError(s.into()))?;
        }
        if parts.next().is_some() {
            return Err(ParseMacError(s.into()));
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_mac_is_local_unicast_and_encodes_ip() {
        let mac = MacAddr::for_guest(Ipv4Addr::new(172, 31, 240, 5));
        assert!(mac.is_local_unicast());
        assert_eq!(mac.to_string(), "06:00:ac:1f:f0:05");
        assert_eq!("06:00:ac:1f:f0:05".parse::<MacAddr>().unwrap(), mac);
    }

    #[test]
    fn gateway_mac_is_local_unicast_and_never_a_guests() {
        let ip = Ipv4Addr::new(172, 31, 240, 1);
        let gw = MacAddr::for_gateway(ip);
        assert!(gw.is_local_unicast());
        assert_ne!(gw, MacAddr::for_guest(ip));
        assert_eq!(gw.to_string(), "0a:00:ac:1f:f0:01");
    }

    #[test]
    fn bad_macs_are_rejected() {
        for s in [
            "",
            "06:00",
            "06:00:ac:1f:f0:05:07",
            "zz:00:00:00:00:00",
            "6:0:0:0:0:0",
        ] {
            assert!(s.parse::<MacAddr>().is_err(), "{s}");
        }
    }
}
