//! slog setup for hearth's binaries: a human terminal format when stderr is a TTY, JSON lines
//! otherwise (journald, files, log shippers).

use std::io::IsTerminal;

use slog::{o, Drain, Level, Logger};

/// Builds the root logger writing to stderr at `level` and above.
pub fn root_logger(level: Level) -> Logger {
    if std::io::stderr().is_terminal() {
        let decorator = slog_term::TermDecorator::new().stderr().build();
        let drain = slog_term::FullFormat::new(decorator).build().fuse();
        let drain = slog_async::Async::new(drain)
            .build()
            .filter_level(level)
            .fuse();
        Logger::root(drain, o!())
    } else {
        let drain = slog_json::Json::new(std::io::stderr())
            .add_default_keys()
            .build()
            .fuse();
        let drain = slog_async::Async::new(drain)
            .build()
            .filter_level(level)
            .fuse();
        Logger::root(drain, o!())
    }
}

/// Parses a level name as used by `--log-level` / `HEARTH_LOG` (`error`, `warn`, `info`,
/// `debug`, `trace`).
pub fn parse_level(name: &str) -> Result<Level, String> {
    match name.to_ascii_lowercase().as_str() {
        "critical" => Ok(Level::Critical),
        "error" => Ok(Level::Error),
        "warn" | "warning" => Ok(Level::Warning),
        "info" => Ok(Level::Info),
        "debug" => Ok(Level::Debug),
        "trace" => Ok(Level::Trace),
        other => Err(format!(
            "unknown log level {other:?} (use error, warn, info, debug or trace)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_bad_names_are_named() {
        assert_eq!(parse_level("WARN").unwrap(), Level::Warning);
        assert_eq!(parse_level("trace").unwrap(), Level::Trace);
        assert!(parse_level("loud").unwrap_err().contains("loud"));
    }
}
