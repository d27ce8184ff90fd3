//! The VMM's log and metrics outputs. Like Firecracker, log lines go to stdout until
//! `--log-path`/`PUT /logger` names a target, and targets (log and metrics) are opened
//! `O_RDWR|O_NONBLOCK|O_CREAT`, so a FIFO without a reader never blocks the VMM.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{SystemTime, UNIX_EPOCH};

use hearth_proto::firecracker::LogLevel;

/// Opens a log or metrics target the way Firecracker does.
pub fn open_target(path: &str) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

/// The human-readable log.
#[derive(Debug)]
pub struct Log {
    id: String,
    target: Option<File>,
    level: LogLevel,
    show_level: bool,
}

fn rank(l: LogLevel) -> u8 {
    match l {
        LogLevel::Off => 0,
        LogLevel::Error => 1,
        LogLevel::Warning => 2,
        LogLevel::Info => 3,
        LogLevel::Debug => 4,
        LogLevel::Trace => 5,
    }
}

impl Log {
    /// A log writing to stdout at `Info` for instance `id`.
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            target: None,
            level: LogLevel::Info,
            show_level: false,
        }
    }

    /// Applies a logger configuration (`--log-path`/`--level` or `PUT /logger`).
    pub fn configure(
        &mut self,
        path: Option<&str>,
        level: Option<LogLevel>,
        show_level: Option<bool>,
    ) -> io::Result<()> {
        if let Some(p) = path {
            self.target = Some(open_target(p)?);
        }
        if let Some(l) = level {
            self.level = l;
        }
        if let Some(s) = show_level {
            self.show_level = s;
        }
        Ok(())
    }

    /// Writes one line if `level` is enabled. Write errors (a full FIFO) lose the line, as in
    /// Firecracker.
    pub fn write(&mut self, level: LogLevel, thread: &str, msg: &str) {
        if level == LogLevel::Off || rank(level) > rank(self.level) {
            return;
        }
        let lvl = if self.show_level {
            format!(":{}", level.as_str().to_uppercase())
        } else {
            String::new()
        };
        let line = format!("{} [{}:{}{}] {}\n", timestamp(), self.id, thread, lvl, msg);
        let _ = match &mut self.target {
            Some(f) => f.write_all(line.as_bytes()),
            None => io::stdout().write_all(line.as_bytes()),
        };
    }

    /// `Info` line from the VMM thread.
    pub fn info(&mut self, msg: &str) {
        self.write(LogLevel::Info, "fc_vmm", msg);
    }

    /// `Error` line from the VMM thread.
    pub fn error(&mut self, msg: &str) {
        self.write(LogLevel::Error, "fc_vmm", msg);
    }
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnn` in UTC, like Firecracker's log timestamps.
pub fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The metrics target: JSON lines, written on `FlushMetrics`.
#[derive(Debug)]
pub struct MetricsSink {
    file: File,
    emit_id: bool,
    id: String,
    flushes: u64,
}

impl MetricsSink {
    /// Opens the target.
    pub fn open(path: &str, emit_id: bool, id: &str) -> io::Result<Self> {
        Ok(Self {
            file: open_target(path)?,
            emit_id,
            id: id.to_owned(),
            flushes: 0,
        })
    }

    /// Writes one metrics line.
    pub fn flush(&mut self, api_requests: u64) -> io::Result<()> {
        self.flushes += 1;
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let mut v = serde_json::json!({
            "utc_timestamp_ms": ts,
            "api_server": {"process_startup_time_us": 0, "sync_response_fails": 0},
            "sim": {"api_requests": api_requests, "flushes": self.flushes},
        });
        if self.emit_id {
            v["id"] = serde_json::Value::String(self.id.clone());
        }
        let mut line = v.to_string();
        line.push('\n');
        self.file.write_all(line.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
        assert_eq!(timestamp().len(), 29);
    }

    #[test]
    fn levels_filter_and_targets_append_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut log = Log::new("vm1");
        log.configure(
            Some(path.to_str().unwrap()),
            Some(LogLevel::Warning),
            Some(true),
        )
        .unwrap();
        log.info("hidden");
        log.error("shown");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("hidden"));
        assert!(text.contains("[vm1:fc_vmm:ERROR] shown"), "{text}");
    }
}
