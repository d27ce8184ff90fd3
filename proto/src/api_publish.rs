//! Published ports as they cross the API: a guest port reachable through a port of the host
//! (`--publish [HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|udp]`). Parsed and validated here so that
//! hearthctl and hearthd refuse the same input with the same words.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::api::FieldError;

/// Most published ports one VM may have.
pub const MAX_PUBLISHED: usize = 64;

/// The transport protocol of a published port.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (the default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One published port: traffic to `host_addr:host_port` (any of the host's addresses when
/// `host_addr` is left out) is forwarded to the guest's `guest_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortMapping {
    /// The host address it listens on; left out: every address of the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_addr: Option<Ipv4Addr>,
    /// The host port (1-65535).
    #[serde(deserialize_with = "crate::api::whole::number")]
    pub host_port: u16,
    /// The guest port (1-65535).
    #[serde(deserialize_with = "crate::api::whole::number")]
    pub guest_port: u16,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: Protocol,
}

impl PortMapping {
    /// Whether the two take the same host port: same protocol and port, and the same host
    /// address or either of them on every address.
    #[must_use]
    pub fn overlaps(&self, other: &PortMapping) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && match (self.host_addr, other.host_addr) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    /// Why this mapping cannot be used, if it cannot.
    fn problem(&self) -> Option<String> {
        if self.host_port == 0 || self.guest_port == 0 {
            return Some(format!("{self}: ports must be 1-65535"));
        }
        match self.host_addr {
            Some(a) if a.is_unspecified() => Some(format!(
                "{self}: leave the host address out to listen on every address"
            )),
            Some(a) if a.is_multicast() || a.is_broadcast() => {
                Some(format!("{self}: {a} is not a unicast address"))
            }
            _ => None,
        }
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(a) = self.host_addr {
            write!(f, "{a}:")?;
        }
        write!(
            f,
            "{}:{}/{}",
            self.host_port, self.guest_port, self.protocol
        )
    }
}

/// A `--publish` value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not [HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|udp]: {reason}")]
pub struct ParsePublishError {
    /// The text given.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FromStr for PortMapping {
    type Err = ParsePublishError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| ParsePublishError {
            value: s.to_owned(),
            reason,
        };
        let (ports, protocol) = match s.rsplit_once('/') {
            Some((ports, "tcp")) => (ports, Protocol::Tcp),
            Some((ports, "udp")) => (ports, Protocol::Udp),
            Some((_, other)) => return Err(fail(format!("protocol {other:?} is not tcp or udp"))),
            None => (s, Protocol::Tcp),
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (addr, host, guest) = match parts.as_slice() {
            [host, guest] => (None, *host, *guest),
            [addr, host, guest] => (Some(*addr), *host, *guest),
            _ => return Err(fail("expected two or three ':'-separated parts".into())),
        };
        let host_addr = addr
            .map(|a| {
                a.parse::<Ipv4Addr>()
                    .map_err(|_| fail(format!("{a:?} is not an IPv4 address")))
            })
            .transpose()?;
        let port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| fail(format!("{p:?} is not a port (1-65535)")))
        };
        let mapping = PortMapping {
            host_addr,
            host_port: port(host)?,
            guest_port: port(guest)?,
            protocol,
        };
        match mapping.problem() {
            Some(reason) => Err(fail(reason)),
            None => Ok(mapping),
        }
    }
}

/// Checks a VM's published ports (`field` names them in the error): each usable, at most
/// [`MAX_PUBLISHED`], no two taking the same host port.
///
/// # Errors
/// A [`FieldError`] naming the first bad mapping.
pub fn validate_publish(field: &'static str, publish: &[PortMapping]) -> Result<(), FieldError> {
    if publish.len() > MAX_PUBLISHED {
        return Err(FieldError {
            field,
            reason: format!("at most {MAX_PUBLISHED} published ports per VM"),
        });
    }
    let mut seen: BTreeSet<&PortMapping> = BTreeSet::new();
    for m in publish {
        if let Some(reason) = m.problem() {
            return Err(FieldError { field, reason });
        }
        if let Some(other) = seen.iter().find(|o| o.overlaps(m)) {
            return Err(FieldError {
                field,
                reason: format!("{m} and {other} take the same host port"),
            });
        }
        seen.insert(m);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> PortMapping {
        s.parse().unwrap()
    }

    #[test]
    fn parses_the_forms_users_type() {
        assert_eq!(
            m("8080:80"),
            PortMapping {
                host_addr: None,
                host_port: 8080,
                guest_port: 80,
                protocol: Protocol::Tcp
            }
        );
        let udp = m("127.0.0.1:5353:53/udp");
        assert_eq!(udp.host_addr, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(udp.protocol, Protocol::Udp);
        assert_eq!(udp.to_string(), "127.0.0.1:5353:53/udp");
        assert_eq!(m("1:2/tcp").to_string(), "1:2/tcp");
    }

    #[test]
    fn refuses_bad_text_naming_the_problem() {
        for (text, words) in [
            ("80", "two or three"),
            ("0:80", "\"0\" is not a port"),
            ("70000:80", "not a port"),
            ("8080:80/sctp", "protocol \"sctp\""),
            ("host:8080:80", "not an IPv4 address"),
            ("0.0.0.0:8080:80", "leave the host address out"),
            ("224.0.0.1:8080:80", "not a unicast"),
            ("1:2:3:4", "two or three"),
        ] {
            let err = text.parse::<PortMapping>().unwrap_err().to_string();
            assert!(err.contains(words), "{text}: {err}");
        }
    }

    #[test]
    fn overlapping_host_ports_are_refused() {
        let ok = [
            m("8080:80"),
            m("8080:80/udp"),
            m("127.0.0.1:8081:80"),
            m("127.0.0.2:8081:80"),
        ];
        validate_publish("publish", &ok).unwrap();
        for pair in [
            [m("8080:80"), m("8080:81")],
            [m("127.0.0.1:8080:80"), m("8080:81")],
            [m("127.0.0.1:9:80/udp"), m("127.0.0.1:9:81/udp")],
        ] {
            let err = validate_publish("publish", &pair).unwrap_err();
            assert!(err.reason.contains("same host port"), "{err}");
        }
    }

    #[test]
    fn zero_ports_and_too_many_are_refused() {
        let zero = PortMapping {
            host_addr: None,
            host_port: 0,
            guest_port: 80,
            protocol: Protocol::Tcp,
        };
        assert!(validate_publish("publish", &[zero]).is_err());
        let many: Vec<_> = (1..=u16::try_from(MAX_PUBLISHED).unwrap() + 1)
            .map(|p| m(&format!("{p}:80")))
            .collect();
        let err = validate_publish("publish", &many).unwrap_err();
        assert!(err.reason.contains("at most"), "{err}");
    }

    #[test]
    fn serde_form_defaults_to_tcp_and_refuses_unknown_fields() {
        let v: PortMapping = serde_json::from_str(r#"{"host_port":8080,"guest_port":80}"#).unwrap();
        assert_eq!(v, m("8080:80"));
        // Integral floats are integers (as JSON Schema has them); fractions are not.
        let v: PortMapping =
            serde_json::from_str(r#"{"host_port":8080.0,"guest_port":80}"#).unwrap();
        assert_eq!(v, m("8080:80"));
        assert!(
            serde_json::from_str::<PortMapping>(r#"{"host_port":80.5,"guest_port":80}"#).is_err()
        );
        assert!(
            serde_json::from_str::<PortMapping>(r#"{"host_port":8080,"guest_port":80,"x":1}"#)
                .is_err()
        );
    }
}
