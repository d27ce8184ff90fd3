//! `PUT /logger`, `definitions/Logger`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Log level. The possible values are case-insensitive on input; they serialise as in the spec.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warning,
    /// Informational messages (Firecracker's default).
    #[default]
    Info,
    /// Debug messages.
    Debug,
    /// Everything.
    Trace,
    /// Nothing.
    Off,
}

impl LogLevel {
    /// All levels, in the spec's order.
    pub const ALL: [LogLevel; 6] = [
        LogLevel::Error,
        LogLevel::Warning,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
        LogLevel::Off,
    ];

    /// The spec's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "Error",
            LogLevel::Warning => "Warning",
            LogLevel::Info => "Info",
            LogLevel::Debug => "Debug",
            LogLevel::Trace => "Trace",
            LogLevel::Off => "Off",
        }
    }

    /// Parses a level, ignoring case.
    pub fn parse(text: &str) -> Option<LogLevel> {
        Self::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(text))
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        // Firecracker's own text for an unknown level (its `LevelFilter` parse error).
        LogLevel::parse(&text).ok_or_else(|| serde::de::Error::custom("Invalid LevelFilter"))
    }
}

/// Describes the configuration option for the logging capability.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logger {
    /// Path to the named pipe or file for the human readable log output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<String>,
    /// Set the level. The possible values are case-insensitive. Default `Info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    /// Whether or not to output the level in the logs. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
    /// Whether or not to include the file path and line number of the log's origin. Default
    /// false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_log_origin: Option<bool>,
    /// The module path to filter log messages by (e.g. `api_server::request`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_is_case_insensitive() {
        let l: Logger = serde_json::from_str(r#"{"level":"wArNiNg"}"#).unwrap();
        assert_eq!(l.level, Some(LogLevel::Warning));
        assert_eq!(serde_json::to_string(&l).unwrap(), r#"{"level":"Warning"}"#);
        assert!(serde_json::from_str::<Logger>(r#"{"level":"loud"}"#).is_err());
    }
}
