//! Query strings: strict parsing (unknown parameters are refused by name) and durations such
//! as `500ms`, `30s` or `2m`; label filters are a wire rule, `hearth_proto::api::parse_label`.
//! Plain functions, unit-tested.

use std::time::Duration;

use hearth_proto::api::VmState;

use super::ApiError;

/// Longest `wait` timeout accepted.
pub const MAX_WAIT: Duration = Duration::from_secs(600);
/// `wait` timeout when none is given.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// A query string's parameters, checked against the names an endpoint accepts.
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

fn invalid(param: &str, reason: impl Into<String>) -> ApiError {
    ApiError::InvalidParam {
        param: param.to_owned(),
        reason: reason.into(),
    }
}

impl Params {
    /// Parses `query` (percent-decoded), refusing parameters not in `allowed` and repeats.
    pub fn parse(query: &str, allowed: &[&str]) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = actix_web::web::Query::from_query(query)
            .map(|q: actix_web::web::Query<Vec<(String, String)>>| q.into_inner())
            .map_err(|e| invalid("query", e.to_string()))?;
        for (i, (k, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&k.as_str()) {
                let reason = if allowed.is_empty() {
                    "this endpoint takes no query parameters".to_owned()
                } else {
                    format!(
                        "unknown parameter (expected one of: {})",
                        allowed.join(", ")
                    )
                };
                return Err(invalid(k, reason));
            }
            if pairs[..i].iter().any(|(p, _)| p == k) {
                return Err(invalid(k, "given more than once"));
            }
        }
        Ok(Params(pairs))
    }

    /// The value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `name` as an event sequence number (0..=[`MAX_SEQ`]), or `default`. Sequence numbers
    /// are stored as SQLite integers (`i64`); a larger value could only wrap.
    pub fn seq_or(&self, name: &str, default: u64) -> Result<u64, ApiError> {
        let n = self.u64_or(name, default)?;
        check_seq(name, n)
    }

    /// `name` as an unsigned number, or `default`.
    pub fn u64_or(&self, name: &str, default: u64) -> Result<u64, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| invalid(name, format!("{v:?} is not a non-negative integer"))),
        }
    }
}

/// Largest event sequence number a client may name (`since`, `Last-Event-ID`).
pub const MAX_SEQ: u64 = i64::MAX as u64;

/// Refuses a sequence number above [`MAX_SEQ`], naming `param`.
pub fn check_seq(param: &str, n: u64) -> Result<u64, ApiError> {
    if n > MAX_SEQ {
        return Err(invalid(param, format!("{n} is outside 0..={MAX_SEQ}")));
    }
    Ok(n)
}

/// Parses a duration: a number followed by `ms`, `s`, `m` or `h` (`500ms`, `30s`, `2m`);
/// a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 30s or 2m"))?;
    let ms = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(format!("{s:?} has unknown unit {unit:?} (ms, s, m or h)")),
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// The `wait` timeout: [`DEFAULT_WAIT`] if absent, refused above [`MAX_WAIT`].
pub fn wait_timeout(value: Option<&str>) -> Result<Duration, ApiError> {
    let Some(v) = value else {
        return Ok(DEFAULT_WAIT);
    };
    let d = parse_duration(v).map_err(|r| invalid("timeout", r))?;
    if d > MAX_WAIT {
        return Err(invalid(
            "timeout",
            format!("{v} is longer than the maximum of {}s", MAX_WAIT.as_secs()),
        ));
    }
    Ok(d)
}

/// The `state` a wait is for (required).
pub fn wait_state(value: Option<&str>) -> Result<VmState, ApiError> {
    let v = value.ok_or_else(|| invalid("state", "is required"))?;
    v.parse().map_err(|e: String| invalid("state", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_proto::api::parse_label;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        for bad in [
            "",
            "s",
            "-1s",
            "1.5s",
            "3d",
            "10 s",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("18446744073709551615h")
            .unwrap_err()
            .contains("too long"));
    }

    #[test]
    fn wait_parameters() {
        assert_eq!(wait_timeout(None).unwrap(), DEFAULT_WAIT);
        assert_eq!(wait_timeout(Some("10m")).unwrap(), MAX_WAIT);
        let e = wait_timeout(Some("11m")).unwrap_err().to_string();
        assert!(e.contains("`timeout`"), "{e}");
        let e = wait_timeout(Some("soon")).unwrap_err().to_string();
        assert!(e.contains("`timeout`"), "{e}");
        assert_eq!(wait_state(Some("running")).unwrap(), VmState::Running);
        assert!(wait_state(None)
            .unwrap_err()
            .to_string()
            .contains("`state`"));
        assert!(wait_state(Some("up"))
            .unwrap_err()
            .to_string()
            .contains("`state`"));
    }

    #[test]
    fn params_are_strict() {
        let p = Params::parse("since=5&limit=10", &["since", "limit"]).unwrap();
        assert_eq!(p.u64_or("since", 0).unwrap(), 5);
        assert_eq!(p.u64_or("other", 7).unwrap(), 7);
        let e = Params::parse("sinse=5", &["since"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`sinse`"), "{e}");
        let e = Params::parse("since=1&since=2", &["since"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than once"), "{e}");
        let p = Params::parse("since=x", &["since"]).unwrap();
        assert!(p
            .u64_or("since", 0)
            .unwrap_err()
            .to_string()
            .contains("`since`"));
        let p = Params::parse("since=9223372036854775807", &["since"]).unwrap();
        assert_eq!(p.seq_or("since", 0).unwrap(), MAX_SEQ);
        for big in ["9223372036854775808", "18446744073709551615"] {
            let p = Params::parse(&format!("since={big}"), &["since"]).unwrap();
            let e = p.seq_or("since", 0).unwrap_err().to_string();
            assert!(e.contains("`since`") && e.contains("outside"), "{e}");
        }
        let p = Params::parse("label=role%3Dweb", &["label"]).unwrap();
        assert_eq!(
            parse_label(p.get("label").unwrap()).unwrap(),
            ("role".into(), "web".into())
        );
    }
}
