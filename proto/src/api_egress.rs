//! Egress policy as it crosses the API: where a guest may connect. `allow` mode (the default)
//! is today's behaviour; `deny` mode lets the guest reach only hearth's DNS, the `allow` CIDRs
//! (`CIDR` or `CIDR:PORT`, the port for TCP and UDP) and the addresses hearth's DNS answered
//! it for an `allow_domains` pattern (`name` exactly, `*.name` for subdomains only). Parsed
//! and validated here so that hearthctl and hearthd refuse the same input with the same words.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::api::FieldError;

/// Most `allow` entries one VM may have.
pub const MAX_ALLOW: usize = 64;
/// Most `allow_domains` patterns one VM may have.
pub const MAX_ALLOW_DOMAINS: usize = 64;

/// `allow` (default: anything NAT reaches) or `deny` (only what the policy allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressMode {
    /// No egress restriction.
    #[default]
    Allow,
    /// Only hearth's DNS, `allow` and `allow_domains`.
    Deny,
}

impl EgressMode {
    /// `allow` or `deny`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            EgressMode::Allow => "allow",
            EgressMode::Deny => "deny",
        }
    }
}

impl FromStr for EgressMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "allow" => Ok(EgressMode::Allow),
            "deny" => Ok(EgressMode::Deny),
            other => Err(format!("egress mode {other:?} is neither allow nor deny")),
        }
    }
}

/// A VM's egress policy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressPolicy {
    /// `allow` (default) or `deny`.
    #[serde(default)]
    pub mode: EgressMode,
    /// `CIDR` or `CIDR:PORT` a deny-mode guest may reach (at most 64).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Domain patterns whose addresses (as hearth's DNS answers them to the guest) a deny-mode
    /// guest may reach: `api.github.com`, or `*.pypi.org` for subdomains only (at most 64).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_domains: Vec<String>,
}

impl EgressPolicy {
    /// Whether this policy restricts anything.
    #[must_use]
    pub fn is_deny(&self) -> bool {
        self.mode == EgressMode::Deny
    }

    /// The parsed `allow` entries.
    ///
    /// # Errors
    /// The first entry that does not parse.
    pub fn allow_rules(&self) -> Result<Vec<AllowRule>, String> {
        self.allow.iter().map(|a| a.parse()).collect()
    }
}

/// A VM's egress policy as `GET /v1/vms/{name}/egress` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EgressStatus {
    /// The policy (allow mode when the VM has none).
    #[serde(flatten)]
    pub policy: EgressPolicy,
    /// Packets dropped for the guest since its deny policy was applied (deny mode, while the
    /// VM holds a network lease).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied_packets: Option<u64>,
}

/// One `allow` entry: a CIDR, optionally one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AllowRule {
    /// The range's address (host bits may be set; the range is the network they belong to).
    pub addr: Ipv4Addr,
    /// The prefix length, 0-32 (32 when the entry names an address).
    pub prefix: u8,
    /// The one port allowed (TCP and UDP), or every port.
    pub port: Option<u16>,
}

impl fmt::Display for AllowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

impl FromStr for AllowRule {
    type Err = String;

    /// `A.B.C.D[/N][:PORT]`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("{s:?} is not CIDR[:PORT]: {why}");
        let (net, port) = match s.split_once(':') {
            Some((net, port)) => {
                let port: u16 = port
                    .parse()
                    .map_err(|_| bad("the port must be a number 1-65535"))?;
                if port == 0 {
                    return Err(bad("the port must be a number 1-65535"));
                }
                (net, Some(port))
            }
            None => (s, None),
        };
        let (addr, prefix) = match net.split_once('/') {
            Some((addr, prefix)) => {
                let prefix: u8 = prefix
                    .parse()
                    .ok()
                    .filter(|p| *p <= 32)
                    .ok_or_else(|| bad("the prefix length must be 0-32"))?;
                (addr, prefix)
            }
            None => (net, 32),
        };
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| bad("the address must be IPv4 like 10.20.0.0"))?;
        Ok(AllowRule { addr, prefix, port })
    }
}

/// Checks a domain pattern: a domain name (labels of 1-63 letters, digits, `-` or `_`, not
/// starting or ending with `-`, at most 253 bytes, a trailing dot allowed), optionally
/// prefixed by `*.` (subdomains only).
///
/// # Errors
/// What is wrong with it.
pub fn check_domain(pattern: &str) -> Result<(), String> {
    let domain = pattern.strip_prefix("*.").unwrap_or(pattern);
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() || domain.len() > 253 {
        return Err("must be a domain name of 1-253 bytes".into());
    }
    for label in domain.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each label must be 1-63 bytes".into());
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("labels hold letters, digits, '-' and '_' ('*.' only as a prefix)".into());
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("labels must not start or end with '-'".into());
        }
    }
    Ok(())
}

/// Validates a policy as field `field`.
///
/// # Errors
/// [`FieldError`] naming the first problem.
pub fn validate_egress(field: &'static str, policy: &EgressPolicy) -> Result<(), FieldError> {
    let err = |reason: String| FieldError { field, reason };
    if policy.mode == EgressMode::Allow
        && !(policy.allow.is_empty() && policy.allow_domains.is_empty())
    {
        return Err(err(
            "allow and allow_domains need mode deny (mode allow reaches everything)".into(),
        ));
    }
    if policy.allow.len() > MAX_ALLOW {
        return Err(err(format!("at most {MAX_ALLOW} allow entries")));
    }
    if policy.allow_domains.len() > MAX_ALLOW_DOMAINS {
        return Err(err(format!(
            "at most {MAX_ALLOW_DOMAINS} allow_domains patterns"
        )));
    }
    policy.allow_rules().map_err(err)?;
    for d in &policy.allow_domains {
        check_domain(d).map_err(|why| err(format!("allow_domains {d:?}: {why}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_entries_parse_and_bad_ones_are_named() {
        let r: AllowRule = "10.20.0.0/16:443".parse().unwrap();
        assert_eq!(r.to_string(), "10.20.0.0/16:443");
        let r: AllowRule = "1.2.3.4".parse().unwrap();
        assert_eq!((r.prefix, r.port), (32, None));
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0/8:0",
            "10.0.0.0/8:http",
            "host",
            "",
            "::1/64",
        ] {
            let e = bad.parse::<AllowRule>().unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn policies_are_validated_whole() {
        let deny = |allow: &[&str], domains: &[&str]| EgressPolicy {
            mode: EgressMode::Deny,
            allow: allow.iter().map(ToString::to_string).collect(),
            allow_domains: domains.iter().map(ToString::to_string).collect(),
        };
        assert!(validate_egress("egress", &deny(&["10.0.0.0/8"], &["*.pypi.org"])).is_ok());
        assert!(validate_egress("egress", &deny(&[], &[])).is_ok());
        let e = validate_egress("egress", &deny(&[], &["a..b"])).unwrap_err();
        assert!(e.reason.contains("a..b"), "{}", e.reason);
        let allow_with_lists = EgressPolicy {
            allow: vec!["10.0.0.0/8".into()],
            ..EgressPolicy::default()
        };
        assert!(validate_egress("egress", &allow_with_lists).is_err());
        let many = deny(&vec!["10.0.0.0/8"; MAX_ALLOW + 1], &[]);
        assert!(validate_egress("egress", &many).is_err());
        let json: EgressPolicy = serde_json::from_str(r#"{"mode":"deny"}"#).unwrap();
        assert!(json.is_deny() && json.allow.is_empty());
        assert!(serde_json::from_str::<EgressPolicy>(r#"{"mode":"block"}"#).is_err());
    }
}
