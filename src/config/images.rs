//! The `[images]` section: building root filesystems from OCI images — the static agent
//! injected as the guest's init, the free space added to each filesystem, and the bounds on
//! what untrusted layers may hold (`[images.limits]`) — and reaching registries
//! (`[images.registry]`: credentials, plain-HTTP registries, bounds on manifests and blobs).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::images::oci::limits::OciLimits;
use crate::images::oci::reference::ImageRef;
use crate::images::oci::rootfs::{FlattenLimits, InitMode, RootfsOptions};
use crate::images::oci::OciSettings;

/// The largest `headroom_percent` accepted.
pub const MAX_HEADROOM_PERCENT: u32 = 1000;
/// The largest `min_headroom_mib` accepted (1 TiB).
pub const MAX_MIN_HEADROOM_MIB: u64 = 1 << 20;
/// The agent's file name, looked for next to hearthd and in `PATH`.
pub const AGENT_NAME: &str = "hearth-agent";

/// Building root filesystems from OCI images.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesConfig {
    /// The static `hearth-agent` injected as `/sbin/hearth-init` (build it with
    /// `scripts/build-agent-static.sh`). Default: `hearth-agent` next to the hearthd
    /// executable, else in `PATH`.
    pub agent_bin: Option<PathBuf>,
    /// Free space added to a built filesystem, as a percentage of its content (default 25,
    /// at most 1000).
    pub headroom_percent: u32,
    /// At least this much free space, MiB (default 256).
    pub min_headroom_mib: u64,
    /// Bounds on the layers of one image.
    pub limits: FlattenLimits,
    /// Registries and the bounds on what they (and archives) serve.
    pub registry: RegistryConfig,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            agent_bin: None,
            headroom_percent: 25,
            min_headroom_mib: 256,
            limits: FlattenLimits::default(),
            registry: RegistryConfig::default(),
        }
    }
}

impl ImagesConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the first bad field and its range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason| Err(ConfigError::Invalid { field, reason });
        if let Some(p) = &self.agent_bin {
            if !p.is_absolute() {
                return invalid(
                    "images.agent_bin",
                    format!("{} is not an absolute path", p.display()),
                );
            }
        }
        if self.headroom_percent > MAX_HEADROOM_PERCENT {
            return invalid(
                "images.headroom_percent",
                format!(
                    "{} is not in 0..={MAX_HEADROOM_PERCENT}",
                    self.headroom_percent
                ),
            );
        }
        if self.min_headroom_mib > MAX_MIN_HEADROOM_MIB {
            return invalid(
                "images.min_headroom_mib",
                format!(
                    "{} is not in 0..={MAX_MIN_HEADROOM_MIB}",
                    self.min_headroom_mib
                ),
            );
        }
        let l = &self.limits;
        let checks: [(&'static str, u64, u64); 7] = [
            ("images.limits.max_layers", l.max_layers as u64, 4096),
            ("images.limits.max_entries", l.max_entries, 100_000_000),
            ("images.limits.max_total_bytes", l.max_total_bytes, 1 << 44),
            ("images.limits.max_file_bytes", l.max_file_bytes, 1 << 44),
            (
                "images.limits.max_path_bytes",
                l.max_path_bytes as u64,
                65_536,
            ),
            (
                "images.limits.max_xattrs_per_entry",
                l.max_xattrs_per_entry as u64,
                1024,
            ),
            (
                "images.limits.max_xattr_bytes",
                l.max_xattr_bytes as u64,
                1 << 20,
            ),
        ];
        for (field, value, max) in checks {
            if value == 0 || value > max {
                return invalid(field, format!("{value} is not in 1..={max}"));
            }
        }
        self.registry.validate()
    }

    /// The puller's settings: the registry keys, the manifest bounds (the layer count is
    /// `limits.max_layers`) and `rootfs` for the builder.
    pub fn oci_settings(&self, rootfs: RootfsOptions) -> OciSettings {
        let r = &self.registry;
        OciSettings {
            insecure_registries: r.insecure_registries.clone(),
            credentials: r.credentials.clone(),
            limits: OciLimits {
                max_manifest_bytes: r.max_manifest_bytes,
                max_config_bytes: r.max_config_bytes,
                max_layers: self.limits.max_layers,
                max_layer_bytes: r.max_layer_bytes,
                max_total_bytes: r.max_total_bytes,
            },
            rootfs,
        }
    }

    /// The agent to inject: `agent_bin`, else `hearth-agent` next to `hearthd_exe`, else in
    /// `PATH`; `None` when there is none.
    pub fn resolve_agent_bin(&self, hearthd_exe: Option<&Path>) -> Option<PathBuf> {
        if let Some(p) = &self.agent_bin {
            return Some(p.clone());
        }
        hearthd_exe
            .and_then(Path::parent)
            .map(|d| d.join(AGENT_NAME))
            .filter(|p| p.is_file())
            .or_else(|| crate::preflight::find_in_path(AGENT_NAME))
    }

    /// The options of one build: these settings, the explicit `size` and `init`, the agent.
    pub fn rootfs_options(
        &self,
        size: Option<u64>,
        init: InitMode,
        agent_bin: PathBuf,
    ) -> RootfsOptions {
        RootfsOptions {
            size,
            headroom_percent: self.headroom_percent,
            min_headroom_bytes: self.min_headroom_mib << 20,
            init,
            agent_bin,
            limits: self.limits.clone(),
        }
    }
}

/// `[images.registry]`: how hearthd reaches OCI registries, and the bounds on what a registry
/// or an archive may make it read (the layer count is `[images.limits] max_layers`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// A credentials file in Docker's `config.json` format (`{"auths": {"<registry>":
    /// {"auth": base64("user:password")}}}`); none by default (anonymous pulls only).
    pub credentials: Option<PathBuf>,
    /// Registries (`host[:port]`) spoken to over plain HTTP instead of HTTPS. Empty by
    /// default; a pull's `insecure` flag adds its own registry for that pull only.
    pub insecure_registries: Vec<String>,
    /// The largest manifest or index, bytes (default 4 MiB, at most 64 MiB).
    pub max_manifest_bytes: u64,
    /// The largest image config blob, bytes (default 4 MiB, at most 64 MiB).
    pub max_config_bytes: u64,
    /// The largest compressed layer, bytes (default 16 GiB).
    pub max_layer_bytes: u64,
    /// The largest sum of an image's compressed layers, bytes (default 64 GiB).
    pub max_total_bytes: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        let l = OciLimits::default();
        RegistryConfig {
            credentials: None,
            insecure_registries: Vec::new(),
            max_manifest_bytes: l.max_manifest_bytes,
            max_config_bytes: l.max_config_bytes,
            max_layer_bytes: l.max_layer_bytes,
            max_total_bytes: l.max_total_bytes,
        }
    }
}

impl RegistryConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason| Err(ConfigError::Invalid { field, reason });
        if let Some(p) = &self.credentials {
            if !p.is_absolute() {
                return invalid(
                    "images.registry.credentials",
                    format!("{} must be an absolute path", p.display()),
                );
            }
        }
        for r in &self.insecure_registries {
            // A registry is valid when a reference on it parses to it.
            let ok = ImageRef::parse(&format!("{r}/x")).is_ok_and(|p| p.registry == *r);
            if !ok {
                return invalid(
                    "images.registry.insecure_registries",
                    format!("{r:?} is not a registry host[:port]"),
                );
            }
        }
        for (field, value, max) in [
            (
                "images.registry.max_manifest_bytes",
                self.max_manifest_bytes,
                64 << 20,
            ),
            (
                "images.registry.max_config_bytes",
                self.max_config_bytes,
                64 << 20,
            ),
            (
                "images.registry.max_layer_bytes",
                self.max_layer_bytes,
                1 << 44,
            ),
            (
                "images.registry.max_total_bytes",
                self.max_total_bytes,
                1 << 46,
            ),
        ] {
            if value == 0 || value > max {
                return invalid(field, format!("{value} is not in 1..={max}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        ImagesConfig::default().validate().unwrap();
        let field_of = |c: ImagesConfig| match c.validate() {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let c = ImagesConfig {
            agent_bin: Some("relative/agent".into()),
            ..ImagesConfig::default()
        };
        assert_eq!(field_of(c), "images.agent_bin");
        let c = ImagesConfig {
            headroom_percent: 1001,
            ..ImagesConfig::default()
        };
        assert_eq!(field_of(c), "images.headroom_percent");
        let mut c = ImagesConfig::default();
        c.limits.max_entries = 0;
        assert_eq!(field_of(c), "images.limits.max_entries");
        let c = ImagesConfig {
            min_headroom_mib: MAX_MIN_HEADROOM_MIB + 1,
            ..ImagesConfig::default()
        };
        assert_eq!(field_of(c), "images.min_headroom_mib");
    }

    #[test]
    fn parses_from_toml_and_resolves_the_agent() {
        let c: ImagesConfig = toml::from_str(
            "agent_bin = \"/opt/hearth-agent\"\nheadroom_percent = 50\n[limits]\nmax_layers = 3\n",
        )
        .unwrap();
        assert_eq!(c.limits.max_layers, 3);
        assert_eq!(c.limits.max_entries, FlattenLimits::default().max_entries);
        assert_eq!(
            c.resolve_agent_bin(None),
            Some(PathBuf::from("/opt/hearth-agent"))
        );
        let o = c.rootfs_options(Some(1 << 30), InitMode::Image, "/a".into());
        assert_eq!((o.headroom_percent, o.min_headroom_bytes), (50, 256 << 20));
        assert!(toml::from_str::<ImagesConfig>("bogus = 1").is_err());
        // Next to hearthd wins over PATH.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(AGENT_NAME), b"").unwrap();
        let exe = dir.path().join("hearthd");
        assert_eq!(
            ImagesConfig::default().resolve_agent_bin(Some(&exe)),
            Some(dir.path().join(AGENT_NAME))
        );
    }

    #[test]
    fn registry_keys_are_checked_and_reach_the_puller() {
        let c: ImagesConfig = toml::from_str(
            "[registry]\ninsecure_registries = [\"127.0.0.1:5000\", \"reg.local\"]\n\
             credentials = \"/etc/hearth/auth.json\"\nmax_layer_bytes = 1024\n\
             [limits]\nmax_layers = 7\n",
        )
        .unwrap();
        c.validate().unwrap();
        let s = c.oci_settings(c.rootfs_options(None, InitMode::Hearth, "/a".into()));
        assert_eq!(s.insecure_registries, ["127.0.0.1:5000", "reg.local"]);
        assert_eq!((s.limits.max_layers, s.limits.max_layer_bytes), (7, 1024));
        let field_of = |r: RegistryConfig| match r.validate() {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let bad = |f: fn(&mut RegistryConfig)| {
            let mut r = RegistryConfig::default();
            f(&mut r);
            field_of(r)
        };
        assert_eq!(
            bad(|r| r.credentials = Some("auth.json".into())),
            "images.registry.credentials"
        );
        assert_eq!(
            bad(|r| r.insecure_registries = vec!["http://reg:5000".into()]),
            "images.registry.insecure_registries"
        );
        assert_eq!(
            bad(|r| r.max_manifest_bytes = 0),
            "images.registry.max_manifest_bytes"
        );
        assert_eq!(
            bad(|r| r.max_config_bytes = 1 << 30),
            "images.registry.max_config_bytes"
        );
    }
}
