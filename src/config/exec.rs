//! The `[exec]` section: exec sessions and file transfer through the guest agent.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::api::exec::{ExecSettings, DEFAULT_MAX_ARCHIVE_BYTES};
use hearth_proto::agent::exec::{DEFAULT_RING_BYTES, MAX_RING_BYTES};

/// The largest `max_archive_bytes` accepted (1 TiB).
pub const MAX_ARCHIVE_BYTES_LIMIT: u64 = 1 << 40;
/// The longest `connect_timeout_ms` accepted (one minute).
pub const MAX_CONNECT_TIMEOUT_MS: u64 = 60_000;

/// Exec sessions and file transfer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ExecConfig {
    /// Bytes of output the agent keeps per stream (stdout, stderr) of a session while no
    /// client is attached; `attach` replays them. 1 MiB by default, at most 64 MiB.
    pub ring_bytes: u64,
    /// The largest tar stream `vm cp` moves either way (`PUT`/`GET .../archive`), bytes.
    /// 1 GiB by default: an upload past it is refused with 413, a download is cut.
    pub max_archive_bytes: u64,
    /// How long a guest agent has to accept a connection and answer a request, ms
    /// (default 5000, 1..=60000).
    pub connect_timeout_ms: u64,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            ring_bytes: DEFAULT_RING_BYTES,
            max_archive_bytes: DEFAULT_MAX_ARCHIVE_BYTES,
            connect_timeout_ms: 5_000,
        }
    }
}

impl ExecConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the first bad field and its range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason| Err(ConfigError::Invalid { field, reason });
        if self.ring_bytes == 0 || self.ring_bytes > MAX_RING_BYTES {
            return invalid(
                "exec.ring_bytes",
                format!("{} is not in 1..={MAX_RING_BYTES}", self.ring_bytes),
            );
        }
        if self.max_archive_bytes == 0 || self.max_archive_bytes > MAX_ARCHIVE_BYTES_LIMIT {
            return invalid(
                "exec.max_archive_bytes",
                format!(
                    "{} is not in 1..={MAX_ARCHIVE_BYTES_LIMIT}",
                    self.max_archive_bytes
                ),
            );
        }
        if self.connect_timeout_ms == 0 || self.connect_timeout_ms > MAX_CONNECT_TIMEOUT_MS {
            return invalid(
                "exec.connect_timeout_ms",
                format!(
                    "{} is not in 1..={MAX_CONNECT_TIMEOUT_MS}",
                    self.connect_timeout_ms
                ),
            );
        }
        Ok(())
    }

    /// The API's settings from this section.
    #[must_use]
    pub fn settings(&self) -> ExecSettings {
        ExecSettings {
            ring_bytes: self.ring_bytes,
            max_archive_bytes: self.max_archive_bytes,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bounds_are_named() {
        ExecConfig::default().validate().unwrap();
        assert_eq!(ExecConfig::default().settings(), ExecSettings::default());
        for (c, field) in [
            (
                ExecConfig {
                    ring_bytes: 0,
                    ..ExecConfig::default()
                },
                "exec.ring_bytes",
            ),
            (
                ExecConfig {
                    ring_bytes: MAX_RING_BYTES + 1,
                    ..ExecConfig::default()
                },
                "exec.ring_bytes",
            ),
            (
                ExecConfig {
                    max_archive_bytes: 0,
                    ..ExecConfig::default()
                },
                "exec.max_archive_bytes",
            ),
            (
                ExecConfig {
                    connect_timeout_ms: 60_001,
                    ..ExecConfig::default()
                },
                "exec.connect_timeout_ms",
            ),
        ] {
            match c.validate() {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{c:?}: {other:?}"),
            }
        }
    }
}
