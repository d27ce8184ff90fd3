//! The contract between hearth and `hearth-agent` running as a guest's init (PID 1).
//!
//! Images built by hearth carry the static agent at [`INIT_PATH`] and the image's command at
//! [`INIT_SPEC_PATH`] (an [`InitSpec`] as JSON). The kernel starts it with
//! `init=/sbin/hearth-init`; it then prepares the guest (mounts, network from the kernel `ip=`
//! argument, hostname from [`HOSTNAME_ARG`]), serves the agent protocol, runs the command as a
//! supervised child, and when that child ends prints [`exit_line`] on the console and reboots,
//! which ends the Firecracker process (`reboot=k`). hearthd reads that line from the console log
//! with [`parse_exit_line`] and puts the [`ExitReport`] in the VM's `stopped` event.
//!
//! # When the agent is init
//!
//! [`runs_as_init`]: when its pid is 1, or when it was started under the name [`INIT_NAME`]
//! (argv\[0\]'s basename). The name alone lets a test run the init path under another PID 1
//! (e.g. `unshare --pid --fork` where the test's shell would be PID 1); the pid alone makes an
//! agent the kernel starts as `init=/usr/bin/hearth-agent` behave as an init, because a PID 1
//! that serves only vsock and never reaps or reboots would leave a broken guest.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Where hearth puts the static agent in images it builds: the guest's init.
pub const INIT_PATH: &str = "/sbin/hearth-init";

/// Where hearth puts the image's command ([`InitSpec`] as JSON) in images it builds.
pub const INIT_SPEC_PATH: &str = "/etc/hearth/init.json";

/// The program name (argv\[0\] basename) that makes the agent run as init.
pub const INIT_NAME: &str = "hearth-init";

/// The kernel command line argument carrying the VM's name, which init makes the guest's
/// hostname: `hearth.hostname=<name>`.
pub const HOSTNAME_ARG: &str = "hearth.hostname";

/// The largest init spec file init reads; a bigger one is refused.
pub const MAX_SPEC_BYTES: usize = 256 * 1024;

/// The most argv or env entries an [`InitSpec`] may have.
pub const MAX_SPEC_ENTRIES: usize = 4096;

/// The prefix of every line init writes on the console, so they are easy to find in the log.
pub const CONSOLE_PREFIX: &str = "hearth-init: ";

/// What init runs: the image's command, resolved from its `Entrypoint` + `Cmd`, with its
/// `Env`, `WorkingDir` and `User`. Unknown fields are ignored so a newer hearth can add some.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitSpec {
    /// The command and its arguments; `argv[0]` is looked up in the `PATH` of [`Self::env`]
    /// when it has no `/`. Never empty.
    pub argv: Vec<String>,
    /// The environment, `KEY=VALUE` each.
    #[serde(default)]
    pub env: Vec<String>,
    /// The working directory (absolute); `/` when absent.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// The OCI `User`: `uid`, `uid:gid`, `name`, `name:group` (names resolved in the guest's
    /// `/etc/passwd` and `/etc/group`); root when absent.
    #[serde(default)]
    pub user: Option<String>,
}

/// Why an init spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitSpecError {
    /// The file is larger than [`MAX_SPEC_BYTES`].
    #[error("Init spec is {len} bytes, more than the {max} allowed")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not JSON of the expected shape.
    #[error("Init spec is not valid JSON: {reason}")]
    Malformed {
        /// The JSON error.
        reason: String,
    },
    /// A field's value is not allowed.
    #[error("Init spec field {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> InitSpecError {
    InitSpecError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl InitSpec {
    /// Parses and validates a spec file's bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, InitSpecError> {
        if bytes.len() > MAX_SPEC_BYTES {
            return Err(InitSpecError::TooLarge {
                len: bytes.len(),
                max: MAX_SPEC_BYTES,
            });
        }
        let spec: InitSpec =
            serde_json::from_slice(bytes).map_err(|e| InitSpecError::Malformed {
                reason: e.to_string(),
            })?;
        spec.validate()?;
        Ok(spec)
    }

    /// The cross-field rules: a non-empty argv, `KEY=VALUE` env entries, an absolute working
    /// directory, no NUL bytes anywhere (they cannot reach `execve`).
    pub fn validate(&self) -> Result<(), InitSpecError> {
        if self.argv.is_empty() || self.argv[0].is_empty() {
            return Err(invalid("argv", "the command is empty"));
        }
        if self.argv.len() > MAX_SPEC_ENTRIES {
            return Err(invalid(
                "argv",
                format!("more than {MAX_SPEC_ENTRIES} entries"),
            ));
        }
        if self.env.len() > MAX_SPEC_ENTRIES {
            return Err(invalid(
                "env",
                format!("more than {MAX_SPEC_ENTRIES} entries"),
            ));
        }
        if self.argv.iter().any(|a| a.contains('\0')) {
            return Err(invalid("argv", "contains a NUL byte"));
        }
        for e in &self.env {
            match e.split_once('=') {
                Some((k, _)) if !k.is_empty() && !e.contains('\0') => {}
                _ => return Err(invalid("env", format!("{e:?} is not KEY=VALUE"))),
            }
        }
        if let Some(dir) = &self.working_dir {
            if !dir.starts_with('/') || dir.contains('\0') {
                return Err(invalid("working_dir", format!("{dir:?} is not absolute")));
            }
        }
        if let Some(user) = &self.user {
            if user.is_empty() || user.contains('\0') || user.split(':').count() > 2 {
                return Err(invalid("user", format!("{user:?} is not user[:group]")));
            }
        }
        Ok(())
    }
}

/// How the image's command ended, as init reports it on the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ExitReport {
    /// It exited with this code (126: could not be executed, 127: not found, as a shell says).
    Exited {
        /// The exit code (0-255).
        code: i32,
    },
    /// A signal killed it.
    Signaled {
        /// The signal number.
        signal: i32,
    },
}

impl ExitReport {
    /// The conventional shell exit code: the code, or `128 + signal`.
    pub fn code(self) -> i32 {
        match self {
            ExitReport::Exited { code } => code,
            ExitReport::Signaled { signal } => 128 + signal,
        }
    }
}

impl fmt::Display for ExitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReport::Exited { code } => write!(f, "status={code}"),
            ExitReport::Signaled { signal } => write!(f, "signal={signal}"),
        }
    }
}

const EXIT_LINE_HEAD: &str = "hearth-init: command exited ";

/// The console line init prints when the command ends (without the newline):
/// `hearth-init: command exited status=<code>` or `... signal=<n>`.
pub fn exit_line(report: ExitReport) -> String {
    format!("{EXIT_LINE_HEAD}{report}")
}

/// Parses one console line (a trailing `\r`/`\n` and kernel noise before the prefix are
/// tolerated: the serial console may interleave) back into the [`ExitReport`] of
/// [`exit_line`]; `None` for any other line.
pub fn parse_exit_line(line: &str) -> Option<ExitReport> {
    let at = line.rfind(EXIT_LINE_HEAD)?;
    let rest = line[at + EXIT_LINE_HEAD.len()..].trim_end_matches(['\r', '\n']);
    let (key, value) = rest.split_once('=')?;
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i32 = value.parse().ok()?;
    match key {
        "status" if n <= 255 => Some(ExitReport::Exited { code: n }),
        "signal" if (1..=64).contains(&n) => Some(ExitReport::Signaled { signal: n }),
        _ => None,
    }
}

/// Whether the agent should run as init: its pid is 1, or `argv0`'s basename is
/// [`INIT_NAME`] (see the module docs).
pub fn runs_as_init(argv0: &str, pid: u32) -> bool {
    pid == 1 || argv0.rsplit('/').next() == Some(INIT_NAME)
}

/// The guest's static IPv4 configuration from the kernel `ip=` argument hearth builds:
/// `ip=<client>::<gw>:<netmask>::<dev>:off[:<dns0>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelIp {
    /// The guest's address.
    pub client: Ipv4Addr,
    /// The default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// The prefix length from the netmask.
    pub prefix_len: u8,
    /// The device (`eth0` when empty).
    pub device: String,
    /// The DNS server, if given.
    pub dns: Option<Ipv4Addr>,
}

/// Finds `ip=` on a kernel command line and parses it. `None` when absent; `Some(Err)` with a
/// reason when present but not the static form above (`ip=dhcp` and friends are refused:
/// init only configures static addresses).
pub fn parse_kernel_ip(cmdline: &str) -> Option<Result<KernelIp, String>> {
    let value = cmdline_value(cmdline, "ip")?;
    Some(parse_ip_value(value))
}

/// The value of the last `key=value` word of a kernel command line.
pub fn cmdline_value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .next_back()
}

fn opt_addr(field: &str, s: &str) -> Result<Option<Ipv4Addr>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| format!("ip= {field} {s:?} is not an IPv4 address"))
}

fn parse_ip_value(v: &str) -> Result<KernelIp, String> {
    let f: Vec<&str> = v.split(':').collect();
    if f.len() < 7 {
        return Err(format!(
            "ip={v:?} is not <client>::<gw>:<netmask>::<dev>:off (only static addresses)"
        ));
    }
    let client = opt_addr("client", f[0])?.ok_or_else(|| format!("ip={v:?} has no address"))?;
    let gateway = opt_addr("gateway", f[2])?;
    let mask = opt_addr("netmask", f[3])?.map_or(u32::MAX, u32::from);
    if mask.leading_ones() + mask.trailing_zeros() != 32 {
        return Err(format!("ip= netmask {:?} is not contiguous", f[3]));
    }
    let prefix_len = u8::try_from(mask.leading_ones()).unwrap_or(32);
    if !matches!(f[6], "off" | "none" | "") {
        return Err(format!(
            "ip= autoconf {:?} is not supported (use off)",
            f[6]
        ));
    }
    let device = if f[5].is_empty() { "eth0" } else { f[5] };
    if device.len() > 15 || device.contains('/') {
        return Err(format!("ip= device {device:?} is not an interface name"));
    }
    let dns = match f.get(7) {
        Some(s) => opt_addr("dns", s)?,
        None => None,
    };
    Ok(KernelIp {
        client,
        gateway,
        prefix_len,
        device: device.to_string(),
        dns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_lines_round_trip() {
        for r in [
            ExitReport::Exited { code: 0 },
            ExitReport::Exited { code: 255 },
            ExitReport::Signaled { signal: 15 },
        ] {
            assert_eq!(parse_exit_line(&exit_line(r)), Some(r));
            assert_eq!(parse_exit_line(&format!("{}\r\n", exit_line(r))), Some(r));
        }
        assert_eq!(
            exit_line(ExitReport::Exited { code: 3 }),
            "hearth-init: command exited status=3"
        );
        assert_eq!(
            parse_exit_line("[    1.2] random: hearth-init: command exited signal=9"),
            Some(ExitReport::Signaled { signal: 9 })
        );
        assert_eq!(ExitReport::Signaled { signal: 9 }.code(), 137);
    }

    #[test]
    fn other_lines_are_not_exit_lines() {
        for l in [
            "",
            "hearth-init: command exited",
            "hearth-init: command exited status=",
            "hearth-init: command exited status=-1",
            "hearth-init: command exited status=256",
            "hearth-init: command exited status=1x",
            "hearth-init: command exited signal=0",
            "hearth-init: command exited signal=65",
            "hearth-init: command exited code=1",
            "hearth-init: command exited status=99999999999999",
            "login: root",
        ] {
            assert_eq!(parse_exit_line(l), None, "{l:?}");
        }
    }

    #[test]
    fn init_is_pid_1_or_the_name() {
        assert!(runs_as_init("/usr/bin/hearth-agent", 1));
        assert!(runs_as_init("/sbin/hearth-init", 7));
        assert!(runs_as_init("hearth-init", 7));
        assert!(!runs_as_init("/usr/bin/hearth-agent", 7));
        assert!(!runs_as_init("/sbin/hearth-init-x", 7));
    }

    #[test]
    fn spec_parses_and_ignores_unknown_fields() {
        let s = InitSpec::from_json(
            br#"{"argv":["/bin/sh","-c","x"],"env":["A=1","B="],"working_dir":"/srv","user":"1000:1000","future":1}"#,
        )
        .unwrap();
        assert_eq!(s.argv, ["/bin/sh", "-c", "x"]);
        assert_eq!(s.env, ["A=1", "B="]);
        assert_eq!(s.working_dir.as_deref(), Some("/srv"));
        assert_eq!(s.user.as_deref(), Some("1000:1000"));
        let min = InitSpec::from_json(br#"{"argv":["true"]}"#).unwrap();
        assert_eq!(min.env, Vec::<String>::new());
        assert_eq!(min.working_dir, None);
    }

    #[test]
    fn bad_specs_are_refused_with_the_field() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"argv":[]}"#, "argv"),
            (br#"{"argv":[""]}"#, "argv"),
            (br#"{"argv":["a\u0000b"]}"#, "argv"),
            (br#"{"argv":["a"],"env":["NOEQUALS"]}"#, "env"),
            (br#"{"argv":["a"],"env":["=v"]}"#, "env"),
            (br#"{"argv":["a"],"working_dir":"rel"}"#, "working_dir"),
            (br#"{"argv":["a"],"user":""}"#, "user"),
            (br#"{"argv":["a"],"user":"a:b:c"}"#, "user"),
        ];
        for (json, field) in cases {
            match InitSpec::from_json(json) {
                Err(InitSpecError::Invalid { field: f, .. }) => assert_eq!(f, *field),
                other => panic!("{}: {other:?}", String::from_utf8_lossy(json)),
            }
        }
        assert!(matches!(
            InitSpec::from_json(b"{"),
            Err(InitSpecError::Malformed { .. })
        ));
        assert!(matches!(
            InitSpec::from_json(b"{}"),
            Err(InitSpecError::Malformed { .. })
        ));
        let big = vec![b' '; MAX_SPEC_BYTES + 1];
        assert!(matches!(
            InitSpec::from_json(&big),
            Err(InitSpecError::TooLarge { .. })
        ));
    }

    #[test]
    fn kernel_ip_as_hearth_builds_it() {
        let c = "console=ttyS0 reboot=k panic=1 \
                 ip=172.31.240.5::172.31.240.1:255.255.255.0::eth0:off:172.31.240.1 quiet";
        let ip = parse_kernel_ip(c).unwrap().unwrap();
        assert_eq!(
            ip,
            KernelIp {
                client: Ipv4Addr::new(172, 31, 240, 5),
                gateway: Some(Ipv4Addr::new(172, 31, 240, 1)),
                prefix_len: 24,
                device: "eth0".into(),
                dns: Some(Ipv4Addr::new(172, 31, 240, 1)),
            }
        );
        let ip = parse_kernel_ip("ip=10.0.0.2:::255.255.255.252:::off").unwrap();
        assert_eq!(ip.unwrap().prefix_len, 30);
        assert!(parse_kernel_ip("console=ttyS0").is_none());
    }

    #[test]
    fn bad_kernel_ip_is_an_error() {
        for c in [
            "ip=dhcp",
            "ip=1.2.3.4::1.2.3.1:255.0.255.0::eth0:off",
            "ip=x::1.2.3.1:255.255.255.0::eth0:off",
            "ip=::1.2.3.1:255.255.255.0::eth0:off",
            "ip=1.2.3.4::1.2.3.1:255.255.255.0::eth0:dhcp",
            "ip=1.2.3.4::1.2.3.1:255.255.255.0::averyveryverylongname:off",
        ] {
            assert!(parse_kernel_ip(c).unwrap().is_err(), "{c}");
        }
    }

    #[test]
    fn cmdline_value_takes_the_last() {
        let c = "a=1 hearth.hostname=web b hearth.hostname=db";
        assert_eq!(cmdline_value(c, HOSTNAME_ARG), Some("db"));
        assert_eq!(cmdline_value(c, "b"), None);
    }
}
