//! What the agent reports about the guest: its boot id and uptime, read from /proc.

use std::io;
use std::path::Path;

/// The kernel's per-boot random id.
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";
/// Seconds since boot (first field).
pub const UPTIME_PATH: &str = "/proc/uptime";

/// Reads the boot id (trimmed).
pub fn boot_id(path: &Path) -> io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

/// Reads the uptime in milliseconds.
pub fn uptime_ms(path: &Path) -> io::Result<u64> {
    parse_uptime_ms(&std::fs::read_to_string(path)?).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("Unparseable {}", path.display()),
        )
    })
}

/// Parses `/proc/uptime` content (`"12345.67 2345.00\n"`) into milliseconds.
pub fn parse_uptime_ms(content: &str) -> Option<u64> {
    let first = content.split_whitespace().next()?;
    let (secs, frac) = first.split_once('.').unwrap_or((first, "0"));
    let secs: u64 = secs.parse().ok()?;
    // Hundredths in practice; accept any number of fractional digits.
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(3).collect();
    let frac_ms: u64 = digits.parse().ok()?;
    secs.checked_mul(1000)?.checked_add(frac_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_parses() {
        assert_eq!(parse_uptime_ms("12345.67 2345.00\n"), Some(12_345_670));
        assert_eq!(parse_uptime_ms("1.5 0"), Some(1_500));
        assert_eq!(parse_uptime_ms("3 0"), Some(3_000));
        assert_eq!(parse_uptime_ms("0.1234 0"), Some(123));
        assert_eq!(parse_uptime_ms(""), None);
        assert_eq!(parse_uptime_ms("x.1 0"), None);
    }

    #[test]
    fn reads_this_hosts_proc() {
        assert_eq!(boot_id(Path::new(BOOT_ID_PATH)).unwrap().len(), 36);
        assert!(uptime_ms(Path::new(UPTIME_PATH)).unwrap() > 0);
    }
}
