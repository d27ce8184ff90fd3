//! Lifecycle policies as they cross the API: a VM's restart policy and time limit.
//!
//! Their text forms are the ones users type (`--restart on-failure:3`, `--ttl 30m`,
//! `--ttl +15m`), parsed here so that hearthctl and hearthd refuse the same input with the same
//! words.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The longest time limit a VM can be given (one year): a typo such as `30000d` is refused
/// rather than stored as a deadline nobody meant.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// The highest `on-failure:N` retry count.
pub const MAX_RESTART_RETRIES: u32 = 10_000;

/// What hearthd does when a VM's VMM exits without being asked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// Leave it `crashed` (the default).
    #[default]
    No,
    /// Restart after a crash (not after the guest shut itself down), at most `max_retries`
    /// times in a row when given.
    OnFailure {
        /// Consecutive attempts before giving up; `None` means no limit.
        max_retries: Option<u32>,
    },
    /// Restart after any exit the user did not ask for, a guest shutdown included.
    Always,
}

/// A restart policy or time limit that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyParseError {
    /// Not `no`, `always`, `on-failure` or `on-failure:N`.
    #[error("restart policy {0:?} is not one of no, on-failure, on-failure:N, always")]
    RestartPolicy(String),
    /// The retry count after `on-failure:` is not a number in range.
    #[error("restart retries {0:?} is not a number from 1 to {MAX_RESTART_RETRIES}")]
    Retries(String),
    /// Not a duration such as `90s`, `30m` or `1h 30m`.
    #[error("time limit {0:?} is not a duration such as 90s, 30m or 1h30m: {1}")]
    Duration(String, String),
    /// Zero or longer than [`MAX_TTL`].
    #[error("time limit {0:?} must be more than 0 and at most 365 days")]
    DurationRange(String),
}

impl RestartPolicy {
    /// The default, `no` (lets serde leave it out).
    #[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
    pub fn is_no(&self) -> bool {
        *self == Self::No
    }
}

impl FromStr for RestartPolicy {
    type Err = PolicyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "no" => Ok(Self::No),
            "always" => Ok(Self::Always),
            "on-failure" => Ok(Self::OnFailure { max_retries: None }),
            _ => {
                let Some(n) = s.strip_prefix("on-failure:") else {
                    return Err(PolicyParseError::RestartPolicy(s.to_owned()));
                };
                match n.parse::<u32>() {
                    Ok(n) if (1..=MAX_RESTART_RETRIES).contains(&n) => Ok(Self::OnFailure {
                        max_retries: Some(n),
                    }),
                    _ => Err(PolicyParseError::Retries(n.to_owned())),
                }
            }
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::No => f.write_str("no"),
            Self::Always => f.write_str("always"),
            Self::OnFailure { max_retries: None } => f.write_str("on-failure"),
            Self::OnFailure {
                max_retries: Some(n),
            } => write!(f, "on-failure:{n}"),
        }
    }
}

// On the wire the policy is its text form, as users type it.
impl Serialize for RestartPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RestartPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What happens to a VM when its time limit is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExpiry {
    /// Stop it; the disk stays until it is deleted (the default).
    #[default]
    Stop,
    /// Delete it with everything it owns.
    Delete,
    /// Pause it to disk: snapshot it (memory, VMM state and disk) as
    /// `<vm>-expired-<deadline, Unix ms>`, then stop it. `vm create --from-snapshot` resumes
    /// it where it was; `vm start` boots it cold from its disk. If the snapshot fails, it is
    /// stopped all the same and the event says why.
    Snapshot,
}

impl OnExpiry {
    /// The default, `stop` (lets serde leave it out).
    #[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
    pub fn is_stop(&self) -> bool {
        *self == Self::Stop
    }
}

/// A time limit as given by a user: a duration from now, or an extension of the current one
/// (`+15m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlChange {
    /// The VM expires this long from now.
    Set(Duration),
    /// The current deadline moves this much later (from now when the VM has none).
    Extend(Duration),
}

impl FromStr for TtlChange {
    type Err = PolicyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix('+') {
            Some(rest) => parse_ttl(rest).map(Self::Extend),
            None => parse_ttl(s).map(Self::Set),
        }
    }
}

/// Parses a time limit (`90s`, `30m`, `1h 30m`, `2d`), refusing zero and anything beyond
/// [`MAX_TTL`].
pub fn parse_ttl(s: &str) -> Result<Duration, PolicyParseError> {
    let d = humantime::parse_duration(s)
        .map_err(|e| PolicyParseError::Duration(s.to_owned(), e.to_string()))?;
    if d.is_zero() || d > MAX_TTL {
        return Err(PolicyParseError::DurationRange(s.to_owned()));
    }
    Ok(d)
}

/// `POST /v1/node/cordon` and `POST /v1/node/drain`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CordonRequest {
    /// Why (shown in refusals, `/v1/health` and `hearthctl node`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a drain does to each running VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrainMode {
    /// Stop it (the default).
    #[default]
    Stop,
    /// Snapshot it as `<vm>-drained-<its last start, Unix ms>`, then stop it (stopped only,
    /// with the reason in its event, if the snapshot fails).
    Snapshot,
}

/// `POST /v1/node/drain`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    /// Why (the cordon's reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Stop or snapshot each running VM; absent or `null`: stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<DrainMode>,
}

/// `PATCH /v1/vms/{name}`: what can change on a live VM; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateVm {
    /// The new labels (replacing the whole set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    /// The new restart policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPolicy>,
    /// A new time limit from now (`30m`) or an extension of the current one (`+15m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// What happens at the time limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_expiry: Option<OnExpiry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policy_round_trips_its_text() {
        for text in [
            "no",
            "always",
            "on-failure",
            "on-failure:1",
            "on-failure:10000",
        ] {
            let p: RestartPolicy = text.parse().unwrap();
            assert_eq!(p.to_string(), text);
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<RestartPolicy>(&json).unwrap(), p);
        }
        assert_eq!(RestartPolicy::default(), RestartPolicy::No);
    }

    #[test]
    fn restart_policy_refuses_what_it_cannot_mean() {
        for bad in [
            "",
            "yes",
            "on-failure:",
            "on-failure:0",
            "on-failure:-1",
            "on-failure:x",
        ] {
            let err = bad.parse::<RestartPolicy>().unwrap_err();
            assert!(err
                .to_string()
                .contains(bad.trim_start_matches("on-failure:")));
        }
        assert!(matches!(
            "on-failure:10001".parse::<RestartPolicy>(),
            Err(PolicyParseError::Retries(_))
        ));
        assert!(serde_json::from_str::<RestartPolicy>("\"sometimes\"").is_err());
    }

    #[test]
    fn drain_takes_old_bodies_and_a_mode() {
        let old: DrainRequest = serde_json::from_str(r#"{"reason":"x"}"#).unwrap();
        assert_eq!(old.mode, None);
        let empty: DrainRequest = serde_json::from_str(r#"{"mode":null}"#).unwrap();
        assert_eq!(empty, DrainRequest::default());
        let snap: DrainRequest = serde_json::from_str(r#"{"mode":"snapshot"}"#).unwrap();
        assert_eq!(snap.mode, Some(DrainMode::Snapshot));
        for bad in [r#"{"mode":"pause"}"#, r#"{"mode":1}"#, r#"{"x":1}"#] {
            assert!(serde_json::from_str::<DrainRequest>(bad).is_err(), "{bad}");
        }
        let e: OnExpiry = serde_json::from_str(r#""snapshot""#).unwrap();
        assert_eq!(e, OnExpiry::Snapshot);
    }

    #[test]
    fn ttl_parses_set_and_extend() {
        assert_eq!(
            "30m".parse::<TtlChange>().unwrap(),
            TtlChange::Set(Duration::from_secs(1800))
        );
        assert_eq!(
            "+1h 30m".parse::<TtlChange>().unwrap(),
            TtlChange::Extend(Duration::from_secs(5400))
        );
        assert_eq!(parse_ttl("365d").unwrap(), MAX_TTL);
    }

    #[test]
    fn ttl_refuses_zero_huge_and_garbage() {
        assert!(matches!(
            parse_ttl("0s"),
            Err(PolicyParseError::DurationRange(_))
        ));
        assert!(matches!(
            parse_ttl("366d"),
            Err(PolicyParseError::DurationRange(_))
        ));
        for bad in ["", "soon", "-5m", "+", "5 parsecs"] {
            assert!(bad.parse::<TtlChange>().is_err(), "{bad:?} accepted");
        }
    }
}
