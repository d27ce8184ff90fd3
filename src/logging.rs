//! slog setup for hearth's binaries: a human terminal format when stderr is a TTY, JSON lines
//! otherwise (journald, files, log shippers).
//!
//! Records go to a writer thread through a channel of [`LOG_CHANNEL`] records (slog-async's
//! default of 128 overflowed under a burst of 2,000 long polls). When it is full anyway the
//! record is dropped rather than stalling the thread that logs (an API worker, the
//! supervisor), and counted: [`dropped`], exported as `hearth_log_dropped_total` on /metrics.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

use slog::{o, Drain, Level, Logger, OwnedKVList, Record};
use slog_async::{AsyncCore, AsyncError};

/// Records the writer thread may be behind by before records are dropped.
pub const LOG_CHANNEL: usize = 16 * 1024;

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Log records dropped so far because the writer thread was [`LOG_CHANNEL`] records behind.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// An async drain that counts the records it drops when its channel is full.
pub struct CountingAsync {
    core: AsyncCore,
    dropped: &'static AtomicU64,
}

impl CountingAsync {
    /// Writes through `drain` on its own thread, with a channel of `chan_size` records,
    /// counting drops in `dropped`.
    pub fn new<D>(drain: D, chan_size: usize, dropped: &'static AtomicU64) -> Self
    where
        D: Drain<Err = slog::Never, Ok = ()> + Send + 'static,
    {
        let core = AsyncCore::custom(drain)
            .chan_size(chan_size)
            .blocking(false)
            .thread_name("hearth-log".into())
            .build();
        CountingAsync { core, dropped }
    }
}

impl Drain for CountingAsync {
    type Ok = ();
    type Err = AsyncError;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), AsyncError> {
        match self.core.log(record, values) {
            Err(AsyncError::Full) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            other => other,
        }
    }
}

/// Builds the root logger writing to stderr at `level` and above.
pub fn root_logger(level: Level) -> Logger {
    let drain = if std::io::stderr().is_terminal() {
        let decorator = slog_term::TermDecorator::new().stderr().build();
        CountingAsync::new(
            slog_term::FullFormat::new(decorator).build().fuse(),
            LOG_CHANNEL,
            &DROPPED,
        )
    } else {
        let json = slog_json::Json::new(std::io::stderr())
            .add_default_keys()
            .build()
            .fuse();
        CountingAsync::new(json, LOG_CHANNEL, &DROPPED)
    };
    Logger::root(drain.filter_level(level).fuse(), o!())
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

    /// A drain slow enough that a burst outruns it; counts what it wrote.
    struct Slow(std::sync::Arc<AtomicU64>);

    impl Drain for Slow {
        type Ok = ();
        type Err = slog::Never;

        fn log(&self, _: &Record, _: &OwnedKVList) -> Result<(), slog::Never> {
            std::thread::sleep(std::time::Duration::from_micros(50));
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }

    fn burst(chan_size: usize, dropped: &'static AtomicU64, n: u64) -> u64 {
        let written = std::sync::Arc::new(AtomicU64::new(0));
        {
            let drain = CountingAsync::new(Slow(written.clone()), chan_size, dropped);
            let log = Logger::root(drain.fuse(), o!());
            for i in 0..n {
                slog::info!(log, "request"; "i" => i);
            }
            // Dropping the logger joins the writer thread once it has drained the channel.
        }
        written.load(Ordering::Relaxed)
    }

    /// Issue 9, finding 8: a burst of 2,000 access-log lines overflowed slog-async's default
    /// channel (128) and lost lines. The channel now holds the burst; when it does not,
    /// every dropped line is counted.
    #[test]
    fn bursts_are_kept_and_drops_counted() {
        static NONE: AtomicU64 = AtomicU64::new(0);
        assert_eq!(burst(LOG_CHANNEL, &NONE, 2000), 2000);
        assert_eq!(NONE.load(Ordering::Relaxed), 0);

        static SOME: AtomicU64 = AtomicU64::new(0);
        let written = burst(8, &SOME, 2000);
        let dropped = SOME.load(Ordering::Relaxed);
        assert!(dropped > 0, "a channel of 8 kept up with a burst of 2000");
        assert_eq!(written + dropped, 2000);
    }

    #[test]
    fn levels_parse_and_bad_names_are_named() {
        assert_eq!(parse_level("WARN").unwrap(), Level::Warning);
        assert_eq!(parse_level("trace").unwrap(), Level::Trace);
        assert!(parse_level("loud").unwrap_err().contains("loud"));
    }
}
