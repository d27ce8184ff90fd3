//! The `[images]` section: OCI images pulled from registries and imported from archives.
//! The registry keys (credentials, insecure registries) and the bounds on what a registry
//! or an archive may make hearthd read live here; the root filesystem builder's keys join
//! them in this section.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::images::oci::limits::OciLimits;
use crate::images::oci::reference::ImageRef;
use crate::images::oci::rootfs::RootfsOptions;
use crate::images::oci::OciSettings;

/// OCI images.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesConfig {
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
    /// The most layers an image may have (default 128, at most 1024).
    pub max_layers: usize,
    /// The largest compressed layer, bytes (default 16 GiB).
    pub max_layer_bytes: u64,
    /// The largest sum of an image's compressed layers, bytes (default 64 GiB).
    pub max_total_bytes: u64,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        let l = OciLimits::default();
        ImagesConfig {
            credentials: None,
            insecure_registries: Vec::new(),
            max_manifest_bytes: l.max_manifest_bytes,
            max_config_bytes: l.max_config_bytes,
            max_layers: l.max_layers,
            max_layer_bytes: l.max_layer_bytes,
            max_total_bytes: l.max_total_bytes,
        }
    }
}

impl ImagesConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason| Err(ConfigError::Invalid { field, reason });
        if let Some(p) = &self.credentials {
            if !p.is_absolute() {
                return invalid(
                    "images.credentials",
                    format!("{} must be an absolute path", p.display()),
                );
            }
        }
        for r in &self.insecure_registries {
            // A registry is valid when a reference on it parses to it.
            let ok = ImageRef::parse(&format!("{r}/x")).is_ok_and(|p| p.registry == *r);
            if !ok {
                return invalid(
                    "images.insecure_registries",
                    format!("{r:?} is not a registry host[:port]"),
                );
            }
        }
        for (field, value, max) in [
            (
                "images.max_manifest_bytes",
                self.max_manifest_bytes,
                64 << 20,
            ),
            ("images.max_config_bytes", self.max_config_bytes, 64 << 20),
            ("images.max_layers", self.max_layers as u64, 1024),
            ("images.max_layer_bytes", self.max_layer_bytes, 1 << 40),
            ("images.max_total_bytes", self.max_total_bytes, 1 << 42),
        ] {
            if value == 0 || value > max {
                return invalid(field, format!("{value} is not in 1..={max}"));
            }
        }
        Ok(())
    }

    /// The puller's settings from this section, with `rootfs` for the filesystem builder.
    pub fn oci_settings(&self, rootfs: RootfsOptions) -> OciSettings {
        OciSettings {
            insecure_registries: self.insecure_registries.clone(),
            credentials: self.credentials.clone(),
            limits: self.limits(),
            rootfs,
        }
    }

    /// The bounds of pulls and imports.
    pub fn limits(&self) -> OciLimits {
        OciLimits {
            max_manifest_bytes: self.max_manifest_bytes,
            max_config_bytes: self.max_config_bytes,
            max_layers: self.max_layers,
            max_layer_bytes: self.max_layer_bytes,
            max_total_bytes: self.max_total_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        ImagesConfig::default().validate().unwrap();
        assert_eq!(ImagesConfig::default().limits(), OciLimits::default());
        let ok = ImagesConfig {
            insecure_registries: vec!["127.0.0.1:5000".into(), "reg.local".into()],
            credentials: Some("/etc/hearth/auth.json".into()),
            ..ImagesConfig::default()
        };
        ok.validate().unwrap();
        for (c, field) in [
            (
                ImagesConfig {
                    credentials: Some("auth.json".into()),
                    ..ImagesConfig::default()
                },
                "images.credentials",
            ),
            (
                ImagesConfig {
                    insecure_registries: vec!["http://reg:5000".into()],
                    ..ImagesConfig::default()
                },
                "images.insecure_registries",
            ),
            (
                ImagesConfig {
                    max_layers: 0,
                    ..ImagesConfig::default()
                },
                "images.max_layers",
            ),
            (
                ImagesConfig {
                    max_manifest_bytes: 1 << 30,
                    ..ImagesConfig::default()
                },
                "images.max_manifest_bytes",
            ),
        ] {
            match c.validate() {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{c:?}: {other:?}"),
            }
        }
    }
}
