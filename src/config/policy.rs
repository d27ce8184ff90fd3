//! The `[policy]` section: how often lifecycle policies are checked and how many VMs come back
//! at once after a host reboot.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use hearth_actors::supervisor::PolicySettings;

/// The longest `tick_ms` accepted (one minute): a longer tick makes time limits late by it.
pub const MAX_TICK_MS: u64 = 60_000;
/// The most autostarts at once.
pub const MAX_AUTOSTART_PARALLELISM: usize = 64;

/// Lifecycle-policy settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// How often due restarts and time limits are checked, ms (default 1000, 10..=60000).
    pub tick_ms: u64,
    /// How many VMs found crashed when hearthd starts (after a host reboot) are started at
    /// once (default 4, 1..=64).
    pub autostart_parallelism: usize,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            tick_ms: 1_000,
            autostart_parallelism: 4,
        }
    }
}

impl PolicyConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the first bad field and its range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(10..=MAX_TICK_MS).contains(&self.tick_ms) {
            return Err(ConfigError::Invalid {
                field: "policy.tick_ms",
                reason: format!("{} is not in 10..={MAX_TICK_MS}", self.tick_ms),
            });
        }
        if !(1..=MAX_AUTOSTART_PARALLELISM).contains(&self.autostart_parallelism) {
            return Err(ConfigError::Invalid {
                field: "policy.autostart_parallelism",
                reason: format!(
                    "{} is not in 1..={MAX_AUTOSTART_PARALLELISM}",
                    self.autostart_parallelism
                ),
            });
        }
        Ok(())
    }

    /// The supervisor's form of these settings.
    pub fn settings(&self) -> PolicySettings {
        PolicySettings {
            tick: Duration::from_millis(self.tick_ms),
            autostart_parallelism: self.autostart_parallelism,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bounds_are_named() {
        PolicyConfig::default().validate().unwrap();
        let bad = PolicyConfig {
            autostart_parallelism: 0,
            ..PolicyConfig::default()
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("policy.autostart_parallelism"), "{err}");
        let bad = PolicyConfig {
            tick_ms: 0,
            ..PolicyConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("policy.tick_ms"));
    }
}
