//! `PUT /network-interfaces/{iface_id}` ([`NetworkInterface`]) and
//! `PATCH /network-interfaces/{iface_id}` ([`PartialNetworkInterface`]).

use serde::{Deserialize, Deserializer, Serialize};

use super::{check_id, RateLimiter, ValidationError};

/// Deserialises an optional MAC, refusing a malformed one with Firecracker's text.
fn checked_mac<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let mac = Option::<String>::deserialize(d)?;
    if let Some(m) = &mac {
        parse_mac(m)
            .map_err(|_| serde::de::Error::custom("The provided MAC address is invalid."))?;
    }
    Ok(mac)
}

/// The smallest MTU Firecracker accepts.
pub const MIN_MTU: u32 = 68;
/// The largest MTU Firecracker accepts.
pub const MAX_MTU: u32 = 65535;

/// Defines a network interface. Firecracker opens the TAP `host_dev_name` when the request
/// arrives.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    /// The interface's ID; must equal the ID in the request path.
    pub iface_id: String,
    /// Host level path for the guest network interface (the TAP name, at most 15 bytes).
    pub host_dev_name: String,
    /// The guest's MAC address, `xx:xx:xx:xx:xx:xx`. Checked while deserialising, as
    /// Firecracker does (so a bad one is a body error with its position).
    #[serde(
        default,
        deserialize_with = "checked_mac",
        skip_serializing_if = "Option::is_none"
    )]
    pub guest_mac: Option<String>,
    /// MTU to advertise to the guest via `VIRTIO_NET_F_MTU`. When set, a compatible guest
    /// driver will configure the interface with this MTU. When absent, `VIRTIO_NET_F_MTU` is
    /// not advertised and the guest uses its default MTU. Range 68..=65535.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Rate limiter for received traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    /// Rate limiter for transmitted traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

impl NetworkInterface {
    /// Checks the ID charset, the MAC format, the MTU range and the rate limiters.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_id(&self.iface_id)?;
        if let Some(mac) = &self.guest_mac {
            parse_mac(mac)?;
        }
        if let Some(mtu) = self.mtu {
            if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
                return Err(ValidationError::InvalidMtu { mtu });
            }
        }
        for rl in [&self.rx_rate_limiter, &self.tx_rate_limiter]
            .into_iter()
            .flatten()
        {
            rl.validate()?;
        }
        Ok(())
    }
}

/// Defines a partial network interface structure, used to update the rate limiters for that
/// interface, after microvm start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialNetworkInterface {
    /// The interface's ID; must equal the ID in the request path.
    pub iface_id: String,
    /// New rate limiter for received traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    /// New rate limiter for transmitted traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

impl PartialNetworkInterface {
    /// Checks the ID charset and the rate limiters.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_id(&self.iface_id)?;
        for rl in [&self.rx_rate_limiter, &self.tx_rate_limiter]
            .into_iter()
            .flatten()
        {
            rl.validate()?;
        }
        Ok(())
    }
}

/// Parses a MAC address written as six `:`-separated pairs of hex digits.
pub fn parse_mac(text: &str) -> Result<[u8; 6], ValidationError> {
    let bad = || ValidationError::InvalidMac {
        mac: text.to_owned(),
    };
    let mut out = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut out {
        let part = parts.next().ok_or_else(bad)?;
        if part.len() != 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface() -> NetworkInterface {
        NetworkInterface {
            iface_id: "eth0".into(),
            host_dev_name: "tap0".into(),
            ..Default::default()
        }
    }

    #[test]
    fn mtu_range() {
        let mut n = iface();
        for (mtu, ok) in [
            (67, false),
            (68, true),
            (1500, true),
            (65535, true),
            (65536, false),
        ] {
            n.mtu = Some(mtu);
            assert_eq!(n.validate().is_ok(), ok, "mtu {mtu}");
        }
    }

    #[test]
    fn mac_format() {
        assert_eq!(
            parse_mac("06:00:AC:10:00:02").unwrap(),
            [6, 0, 0xac, 0x10, 0, 2]
        );
        for bad in [
            "",
            "06:00:ac:10:00",
            "06:00:ac:10:00:02:03",
            "6:0:ac:10:0:2",
            "zz:00:ac:10:00:02",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
        let mut n = iface();
        n.guest_mac = Some("nope".into());
        assert!(n.validate().is_err());
    }

    #[test]
    fn patch_takes_rate_limiters_only() {
        assert!(serde_json::from_str::<PartialNetworkInterface>(
            r#"{"iface_id":"eth0","host_dev_name":"tap0"}"#
        )
        .is_err());
        let p: PartialNetworkInterface = serde_json::from_str(r#"{"iface_id":"eth0"}"#).unwrap();
        assert!(p.validate().is_ok());
    }
}
