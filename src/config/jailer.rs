//! The `[jailer]` section: running each VM's Firecracker through Firecracker's jailer, as its
//! own uid/gid, in a chroot, a new pid namespace and cgroups with limits derived from its size.
//!
//! `enabled` is `"auto"` by default: hearthd jails every VMM when this host can (a jailer
//! binary, a statically linked Firecracker, usable cgroups: `crate::preflight::check_jailing`)
//! and otherwise runs them unjailed, warning at start with each reason and its fix. The
//! simulator (`firecracker-sim`) is not statically linked, so hosts that only have it fall back.
//! `true` refuses to start where jailing is impossible; `false` runs unjailed on purpose. Unjailed
//! VMMs run as root with the host's filesystem in view (hearthd logs that they are less isolated).

use std::fmt;
use std::path::PathBuf;

use hearth_actors::firecracker::jailer::{JailLayout, LimitPolicy};
use std::sync::Arc;

use hearth_actors::host::jails::uids::MIN_VM_UID;
use hearth_actors::host::jails::{cgroups, LinuxJails};
use hearth_actors::supervisor::JailSettings;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ConfigError;

/// The longest jail id: a uid in decimal (`JailLayout::id_for_uid`).
const MAX_JAIL_ID: usize = 10;

/// Jailing settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct JailerConfig {
    /// Run every VMM through the jailer (each VM its own uid, chroot, pid namespace and
    /// cgroups): `true`, `false` or `"auto"` (the default: jailed when this host can, see the
    /// module docs). `hearthd --check` says whether the host can.
    pub enabled: JailerMode,
    /// The jailer binary. Default: `jailer` in `PATH`.
    pub jailer_bin: Option<PathBuf>,
    /// The uids (and gids of the same numbers) VMs get, one each, inclusive: `[first, last]`.
    /// hearth's alone: at `Open`, a process running as one of them that no live VM holds is
    /// killed (docs/jailer.md).
    pub uid_range: [u32; 2],
    /// The jailer's `--chroot-base-dir`. Keep it short: the VM's sockets live in its jail and
    /// must fit in 108 bytes.
    pub chroot_base_dir: PathBuf,
    /// `auto` (v2 when its controllers are available, else v1), `1` or `2`.
    pub cgroup_version: String,
    /// MiB the VMM may use beyond the guest's memory.
    pub mem_overhead_mib: u64,
    /// CPU quota per vCPU, in CPUs (e.g. 0.5 = half a core per vCPU).
    pub cpu_per_vcpu: f64,
    /// Tasks (threads) allowed per VMM.
    pub pids_max: u64,
    /// Largest file the VMM may write, bytes (`RLIMIT_FSIZE`); none by default (snapshots).
    pub fsize: Option<u64>,
    /// Open files per VMM (`RLIMIT_NOFILE`).
    pub no_file: u64,
    /// Idle jailed VMMs kept ready, each in its own jail with its own uid from `uid_range`:
    /// a create takes one instead of running the jailer (docs/jailer.md). 0 (the default):
    /// none. At most [`MAX_WARM_POOL`].
    pub warm_pool: usize,
}

/// `[jailer] enabled`: whether VMMs run jailed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JailerMode {
    /// `true`: jailed; hearthd refuses to start where jailing is impossible.
    On,
    /// `false`: unjailed on purpose.
    Off,
    /// `"auto"` (the default): jailed where possible, else unjailed with a warning naming why.
    #[default]
    Auto,
}

/// The values `jailer.enabled` takes, for error messages.
const MODES: &str = "true, false or \"auto\"";

impl fmt::Display for JailerMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JailerMode::On => "true",
            JailerMode::Off => "false",
            JailerMode::Auto => "\"auto\"",
        })
    }
}

impl Serialize for JailerMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            JailerMode::On => s.serialize_bool(true),
            JailerMode::Off => s.serialize_bool(false),
            JailerMode::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for JailerMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ModeVisitor)
    }
}

/// Takes a boolean or the string `"auto"`; anything else names the key and what it takes.
struct ModeVisitor;

impl serde::de::Visitor<'_> for ModeVisitor {
    type Value = JailerMode;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "jailer.enabled: {MODES}")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<JailerMode, E> {
        Ok(if v { JailerMode::On } else { JailerMode::Off })
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<JailerMode, E> {
        if v == "auto" {
            Ok(JailerMode::Auto)
        } else {
            Err(E::custom(format!(
                "jailer.enabled: {v:?} is not one of {MODES}"
            )))
        }
    }
}

/// The largest `warm_pool`: each member is an idle VMM (a few MiB of RSS) and a jail.
pub const MAX_WARM_POOL: usize = 64;

impl Default for JailerConfig {
    fn default() -> Self {
        let limits = LimitPolicy::default();
        JailerConfig {
            enabled: JailerMode::Auto,
            jailer_bin: None,
            uid_range: [900_000, 965_535],
            chroot_base_dir: "/srv/hearth".into(),
            cgroup_version: "auto".into(),
            mem_overhead_mib: limits.mem_overhead_mib,
            cpu_per_vcpu: limits.cpu_per_vcpu,
            pids_max: limits.pids_max,
            fsize: limits.fsize,
            no_file: 2048,
            warm_pool: 0,
        }
    }
}

impl JailerConfig {
    /// Checks every field, whether or not jailing is enabled (a bad value is a mistake
    /// either way).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason| Err(ConfigError::Invalid { field, reason });
        let [first, last] = self.uid_range;
        if first < MIN_VM_UID || first > last {
            return invalid(
                "jailer.uid_range",
                format!("[{first}, {last}] must be ascending and start at {MIN_VM_UID} or above"),
            );
        }
        if first == u32::MAX || last == u32::MAX {
            return invalid(
                "jailer.uid_range",
                "must not include 4294967295 (the kernel's invalid uid)".into(),
            );
        }
        if let Some(bin) = &self.jailer_bin {
            if !bin.is_absolute() {
                return invalid(
                    "jailer.jailer_bin",
                    format!("{} must be an absolute path", bin.display()),
                );
            }
        }
        if !self.chroot_base_dir.is_absolute() {
            return invalid(
                "jailer.chroot_base_dir",
                format!(
                    "{} must be an absolute path",
                    self.chroot_base_dir.display()
                ),
            );
        }
        // The exec file is copied in under its own name; `firecracker` is the usual one.
        let max = JailLayout::max_base_len("firecracker", MAX_JAIL_ID);
        let len = self.chroot_base_dir.as_os_str().len();
        if len > max {
            return invalid(
                "jailer.chroot_base_dir",
                format!(
                    "{} is {len} bytes; at most {max} keep a VM's jailed sockets \
                     (<base>/firecracker/<uid>/root/run/v.sock_<port>) within 107 bytes",
                    self.chroot_base_dir.display()
                ),
            );
        }
        if !["auto", "1", "2"].contains(&self.cgroup_version.as_str()) {
            return invalid(
                "jailer.cgroup_version",
                format!("{:?} is not one of auto, 1, 2", self.cgroup_version),
            );
        }
        if !(self.cpu_per_vcpu.is_finite() && self.cpu_per_vcpu > 0.0 && self.cpu_per_vcpu <= 64.0)
        {
            return invalid(
                "jailer.cpu_per_vcpu",
                format!("{} is not in (0, 64]", self.cpu_per_vcpu),
            );
        }
        if self.pids_max < 8 {
            return invalid(
                "jailer.pids_max",
                format!(
                    "{} is too few for a VMM's threads (at least 8)",
                    self.pids_max
                ),
            );
        }
        if self.no_file < 64 {
            return invalid(
                "jailer.no_file",
                format!("{} is too few for a VMM (at least 64)", self.no_file),
            );
        }
        if self.fsize == Some(0) {
            return invalid("jailer.fsize", "must not be 0".into());
        }
        let uids = u64::from(last - first) + 1;
        if self.warm_pool > MAX_WARM_POOL || self.warm_pool as u64 > uids {
            return invalid(
                "jailer.warm_pool",
                format!(
                    "{} is more than {MAX_WARM_POOL} or than the {uids} uids of uid_range",
                    self.warm_pool
                ),
            );
        }
        Ok(())
    }

    /// What the supervisor needs to jail every VMM, read from this host (the jailer binary,
    /// the cgroup hierarchy), whatever `enabled` says: the caller decided to jail
    /// (`crate::preflight::decide_jailing`).
    ///
    /// # Errors
    ///
    /// A message naming what is missing: no jailer binary, or no usable cgroup hierarchy
    /// (or not the version asked for).
    pub fn settings(&self) -> Result<JailSettings, String> {
        let jailer = match &self.jailer_bin {
            Some(p) if p.is_file() => p.clone(),
            Some(p) => return Err(format!("jailer.jailer_bin {} is not a file", p.display())),
            None => crate::preflight::find_in_path("jailer")
                .ok_or("no `jailer` in PATH (set jailer.jailer_bin)")?,
        };
        let host = cgroups::detect_host()?;
        if self.cgroup_version != "auto" && host.version.as_arg() != self.cgroup_version {
            return Err(format!(
                "jailer.cgroup_version = {}, but this host offers memory, cpu and pids only \
                 in cgroup v{}",
                self.cgroup_version,
                host.version.as_arg()
            ));
        }
        let [first, last] = self.uid_range;
        Ok(JailSettings {
            jailer,
            cgroup_version: host.version,
            jails: Arc::new(LinuxJails::new(&self.chroot_base_dir, host)),
            chroot_base: self.chroot_base_dir.clone(),
            limits: self.limit_policy(),
            uid_range: first..=last,
            warm_pool: self.warm_pool,
        })
    }

    /// The limit policy for `hearth_actors::firecracker::jailer::JailLimits::for_vm`.
    pub fn limit_policy(&self) -> LimitPolicy {
        LimitPolicy {
            mem_overhead_mib: self.mem_overhead_mib,
            cpu_per_vcpu: self.cpu_per_vcpu,
            pids_max: self.pids_max,
            fsize: self.fsize,
            no_file: Some(self.no_file),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(c: &JailerConfig) -> &'static str {
        match c.validate() {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn default_is_auto_and_valid() {
        let c = JailerConfig::default();
        assert_eq!(c.enabled, JailerMode::Auto);
        c.validate().unwrap();
        let parsed: JailerConfig = toml::from_str("").unwrap();
        assert_eq!(parsed.enabled, JailerMode::Auto);
    }

    #[test]
    fn enabled_takes_true_false_and_auto() {
        for (text, want) in [
            ("enabled = true", JailerMode::On),
            ("enabled = false", JailerMode::Off),
            ("enabled = \"auto\"", JailerMode::Auto),
        ] {
            let c: JailerConfig = toml::from_str(text).unwrap();
            assert_eq!(c.enabled, want, "{text}");
            // Written back as it was read (`hearthd --check` prints the effective config).
            let again: JailerConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
            assert_eq!(again.enabled, want);
        }
    }

    #[test]
    fn other_enabled_values_name_the_key_and_the_choices() {
        for bad in ["\"yes\"", "\"Auto\"", "\"true\"", "1", "[]", "\"\""] {
            let err = toml::from_str::<JailerConfig>(&format!("enabled = {bad}"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("jailer.enabled") && err.contains("true, false or \"auto\""),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn settings_name_a_missing_jailer() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("jailer");
        let c = JailerConfig {
            enabled: JailerMode::On,
            jailer_bin: Some(missing.clone()),
            ..JailerConfig::default()
        };
        let err = c.settings().unwrap_err();
        assert!(err.contains(&missing.display().to_string()), "{err}");
    }

    #[test]
    fn parses_from_toml() {
        let c: JailerConfig = toml::from_str(
            "enabled = true\nuid_range = [200000, 200999]\nchroot_base_dir = \"/srv/j\"\n\
             cgroup_version = \"1\"\ncpu_per_vcpu = 0.5\nfsize = 1073741824\nwarm_pool = 64\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.warm_pool, MAX_WARM_POOL);
        assert_eq!(c.enabled, JailerMode::On);
        assert!((c.limit_policy().cpu_per_vcpu - 0.5).abs() < f64::EPSILON);
        assert_eq!(c.limit_policy().fsize, Some(1 << 30));
        assert!(toml::from_str::<JailerConfig>("nope = 1").is_err());
    }

    #[test]
    fn bad_values_name_their_field() {
        let d = JailerConfig::default;
        let cases: Vec<(JailerConfig, &str)> = vec![
            (
                JailerConfig {
                    uid_range: [10, 20],
                    ..d()
                },
                "jailer.uid_range",
            ),
            (
                JailerConfig {
                    uid_range: [5000, 4000],
                    ..d()
                },
                "jailer.uid_range",
            ),
            (
                JailerConfig {
                    uid_range: [5000, u32::MAX],
                    ..d()
                },
                "jailer.uid_range",
            ),
            (
                JailerConfig {
                    jailer_bin: Some("jailer".into()),
                    ..d()
                },
                "jailer.jailer_bin",
            ),
            (
                JailerConfig {
                    chroot_base_dir: "srv".into(),
                    ..d()
                },
                "jailer.chroot_base_dir",
            ),
            (
                JailerConfig {
                    chroot_base_dir: format!("/{}", "x".repeat(60)).into(),
                    ..d()
                },
                "jailer.chroot_base_dir",
            ),
            (
                JailerConfig {
                    cgroup_version: "3".into(),
                    ..d()
                },
                "jailer.cgroup_version",
            ),
            (
                JailerConfig {
                    cpu_per_vcpu: 0.0,
                    ..d()
                },
                "jailer.cpu_per_vcpu",
            ),
            (
                JailerConfig {
                    cpu_per_vcpu: f64::NAN,
                    ..d()
                },
                "jailer.cpu_per_vcpu",
            ),
            (JailerConfig { pids_max: 2, ..d() }, "jailer.pids_max"),
            (JailerConfig { no_file: 3, ..d() }, "jailer.no_file"),
            (
                JailerConfig {
                    fsize: Some(0),
                    ..d()
                },
                "jailer.fsize",
            ),
            (
                JailerConfig {
                    warm_pool: MAX_WARM_POOL + 1,
                    ..d()
                },
                "jailer.warm_pool",
            ),
            (
                JailerConfig {
                    uid_range: [MIN_VM_UID, MIN_VM_UID + 1],
                    warm_pool: 3,
                    ..d()
                },
                "jailer.warm_pool",
            ),
        ];
        for (c, field) in cases {
            assert_eq!(field_of(&c), field, "{c:?}");
        }
    }
}
