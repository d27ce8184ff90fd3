//! Firecracker's command line (`src/firecracker/src/main.rs` + `utils::arg_parser`): the same
//! flags, the same `--flag value` / `--flag=value` forms, the same parse errors (exit 153).
//! Flags the simulator accepts but ignores are listed in `docs/sim.md`.

use std::fmt;

/// Firecracker's default API socket path.
pub const DEFAULT_API_SOCK: &str = "/run/firecracker.socket";
/// Firecracker's default instance ID.
pub const DEFAULT_ID: &str = "anonymous-instance";

/// Flags taking a value.
const VALUE_FLAGS: &[&str] = &[
    "api-sock",
    "id",
    "seccomp-filter",
    "start-time-us",
    "start-time-cpu-us",
    "parent-cpu-time-us",
    "config-file",
    "metadata",
    "log-path",
    "level",
    "module",
    "metrics-path",
    "describe-snapshot",
    "http-api-max-payload-size",
    "mmds-size-limit",
];
/// Flags without a value.
const BOOL_FLAGS: &[&str] = &[
    "no-seccomp",
    "no-api",
    "show-level",
    "show-log-origin",
    "boot-timer",
    "version",
    "snapshot-version",
    "enable-pci",
    "help",
];

/// What the command line asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Args {
    /// `--api-sock`.
    pub api_sock: String,
    /// `--id`.
    pub id: String,
    /// `--config-file`.
    pub config_file: Option<String>,
    /// `--no-api`.
    pub no_api: bool,
    /// `--log-path`.
    pub log_path: Option<String>,
    /// `--level`.
    pub level: Option<String>,
    /// `--show-level`.
    pub show_level: bool,
    /// `--show-log-origin`.
    pub show_log_origin: bool,
    /// `--metrics-path`.
    pub metrics_path: Option<String>,
    /// `--boot-timer`.
    pub boot_timer: bool,
    /// `--enable-pci` (then `pci=off` is not added to the kernel command line).
    pub enable_pci: bool,
    /// `--version`.
    pub version: bool,
    /// `--help`.
    pub help: bool,
    /// `--snapshot-version`.
    pub snapshot_version: bool,
}

/// Firecracker's `UtilsArgParserError`; `Debug` prints like Firecracker's `Error: ...` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgError {
    /// A flag that `requires` another was given without it.
    MissingArgument(String),
    /// A value flag at the end, or followed by another flag.
    MissingValue(String),
    /// An unknown flag (this includes `--seccomp-level`, removed in v1.0.0).
    UnexpectedArgument(String),
    /// A flag given twice.
    DuplicateArgument(String),
    /// Two flags that exclude each other.
    ForbiddenArgument(String, String),
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::MissingArgument(a) => write!(f, "Argument '{a}' required, but not found."),
            ArgError::MissingValue(a) => write!(
                f,
                "The argument '{a}' requires a value, but none was supplied."
            ),
            ArgError::UnexpectedArgument(a) => write!(
                f,
                "Found argument '{a}' which wasn't expected, or isn't valid in this context."
            ),
            ArgError::DuplicateArgument(a) => {
                write!(f, "The argument '{a}' was provided more than once.")
            }
            ArgError::ForbiddenArgument(a, b) => write!(
                f,
                "Argument '{a}' cannot be used together with argument '{b}'."
            ),
        }
    }
}

impl std::error::Error for ArgError {}

/// Parses `argv` (without the program name).
pub fn parse(argv: &[String]) -> Result<Args, ArgError> {
    // Everything after `--` is extra arguments, ignored by Firecracker.
    let argv = match argv.iter().position(|a| a == "--") {
        Some(i) => &argv[..i],
        None => argv,
    };
    let mut args = Args {
        api_sock: DEFAULT_API_SOCK.to_owned(),
        id: DEFAULT_ID.to_owned(),
        ..Args::default()
    };
    // `--help` and `--version` short-circuit the rest of the parsing.
    if argv.iter().any(|a| a == "--help") {
        args.help = true;
        return Ok(args);
    }
    if argv.iter().any(|a| a == "--version") {
        args.version = true;
        return Ok(args);
    }
    let mut seen: Vec<String> = Vec::new();
    let mut iter = argv.iter();
    while let Some(raw) = iter.next() {
        let Some(flag) = raw.strip_prefix("--") else {
            return Err(ArgError::UnexpectedArgument(raw.clone()));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (flag, None),
        };
        let takes_value = VALUE_FLAGS.contains(&name);
        if !takes_value && !BOOL_FLAGS.contains(&name) {
            return Err(ArgError::UnexpectedArgument(name.to_owned()));
        }
        if seen.iter().any(|s| s == name) {
            return Err(ArgError::DuplicateArgument(name.to_owned()));
        }
        seen.push(name.to_owned());
        if !takes_value {
            if inline.is_some() {
                return Err(ArgError::UnexpectedArgument(flag.to_owned()));
            }
            set_flag(&mut args, name);
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => iter
                .next()
                .filter(|v| !v.starts_with("--"))
                .cloned()
                .ok_or_else(|| ArgError::MissingValue(name.to_owned()))?,
        };
        set_value(&mut args, name, value);
    }
    let has = |n: &str| seen.iter().any(|s| s == n);
    if has("no-api") && !has("config-file") {
        return Err(ArgError::MissingArgument("config-file".into()));
    }
    if has("no-seccomp") && has("seccomp-filter") {
        return Err(ArgError::ForbiddenArgument(
            "no-seccomp".into(),
            "seccomp-filter".into(),
        ));
    }
    Ok(args)
}

fn set_flag(args: &mut Args, name: &str) {
    match name {
        "no-api" => args.no_api = true,
        "show-level" => args.show_level = true,
        "show-log-origin" => args.show_log_origin = true,
        "boot-timer" => args.boot_timer = true,
        "snapshot-version" => args.snapshot_version = true,
        "enable-pci" => args.enable_pci = true,
        // no-seccomp: the simulator installs no seccomp filter either way.
        _ => {}
    }
}

fn set_value(args: &mut Args, name: &str, value: String) {
    match name {
        "api-sock" => args.api_sock = value,
        "id" => args.id = value,
        "config-file" => args.config_file = Some(value),
        "log-path" => args.log_path = Some(value),
        "level" => args.level = Some(value),
        "metrics-path" => args.metrics_path = Some(value),
        // Accepted and ignored: seccomp-filter, start-time-*, parent-cpu-time-us, metadata,
        // module, describe-snapshot, http-api-max-payload-size, mmds-size-limit.
        _ => {}
    }
}

/// Why an instance ID is invalid (`utils::validators::validate_instance_id`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdError {
    /// Not 1 to 64 characters.
    InvalidLen(usize, usize, usize),
    /// A character other than alphanumerics and `-`, at this position.
    InvalidChar(char, usize),
}

/// Checks an instance ID: 1-64 characters, alphanumeric or `-`.
pub fn validate_instance_id(id: &str) -> Result<(), IdError> {
    let len = id.chars().count();
    if !(1..=64).contains(&len) {
        return Err(IdError::InvalidLen(len, 1, 64));
    }
    for (i, c) in id.chars().enumerate() {
        if !(c == '-' || c.is_alphanumeric()) {
            return Err(IdError::InvalidChar(c, i));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Args, ArgError> {
        parse(
            &args
                .iter()
                .map(std::string::ToString::to_string)
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn defaults_and_both_value_forms() {
        let a = p(&[]).unwrap();
        assert_eq!(a.api_sock, DEFAULT_API_SOCK);
        assert_eq!(a.id, DEFAULT_ID);
        let a = p(&["--api-sock", "/tmp/a.sock", "--id=vm-1", "--boot-timer"]).unwrap();
        assert_eq!(a.api_sock, "/tmp/a.sock");
        assert_eq!(a.id, "vm-1");
        assert!(a.boot_timer);
    }

    #[test]
    fn jailer_flags_are_accepted() {
        assert!(p(&["--id=x", "--start-time-us=1", "--start-time-cpu-us=2"]).is_ok());
    }

    #[test]
    fn errors_match_firecracker() {
        assert_eq!(
            p(&["--seccomp-level", "2"]).unwrap_err(),
            ArgError::UnexpectedArgument("seccomp-level".into())
        );
        assert_eq!(
            p(&["--no-api"]).unwrap_err().to_string(),
            "Argument 'config-file' required, but not found."
        );
        assert_eq!(
            p(&["--api-sock"]).unwrap_err(),
            ArgError::MissingValue("api-sock".into())
        );
        assert_eq!(
            p(&["--id", "a", "--id", "b"]).unwrap_err(),
            ArgError::DuplicateArgument("id".into())
        );
        assert!(p(&["stray"]).is_err());
        assert!(p(&["--no-seccomp", "--seccomp-filter", "f"]).is_err());
    }

    #[test]
    fn version_short_circuits() {
        assert!(p(&["--bogus", "--version"]).unwrap().version);
    }

    #[test]
    fn instance_id_rules() {
        assert!(validate_instance_id("anonymous-instance").is_ok());
        assert!(validate_instance_id("").is_err());
        assert!(validate_instance_id(&"a".repeat(65)).is_err());
        assert_eq!(
            validate_instance_id("a_b"),
            Err(IdError::InvalidChar('_', 1))
        );
    }
}
