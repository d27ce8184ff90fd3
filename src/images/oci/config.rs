//! The OCI image configuration (the "config" blob a manifest points at): what hearth keeps
//! of it (`Entrypoint`, `Cmd`, `Env`, `WorkingDir`, `User`, `ExposedPorts`, `Labels`) and the platform it
//! was built for. The blob is untrusted: its size is bounded before parsing and every field is
//! bounded after.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The largest config blob accepted, bytes (real ones are a few KiB; history can grow them).
pub const MAX_CONFIG_BYTES: usize = 4 << 20;
/// The most strings in one list (`Entrypoint` + `Cmd`, `Env`, `ExposedPorts`) or labels.
pub const MAX_CONFIG_ITEMS: usize = 4096;
/// The longest single string (an argument, a variable, a label value), bytes.
pub const MAX_CONFIG_STRING: usize = 128 << 10;

/// Errors of parsing an image config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The blob is larger than [`MAX_CONFIG_BYTES`].
    #[error("Image config is {size} bytes, more than the {MAX_CONFIG_BYTES} allowed")]
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// The blob is not a JSON image config.
    #[error("Image config is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A field is out of bounds or malformed.
    #[error("Image config field {field}: {reason}")]
    Invalid {
        /// The field, as named in the OCI spec (e.g. `config.Env`).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

pub use hearth_proto::image_config::ImageConfig;

/// The platform an image was built for (`os`, `architecture`, optional `variant`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// e.g. `linux`.
    pub os: String,
    /// e.g. `amd64`.
    pub architecture: String,
    /// e.g. `v8` for `arm64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// The parts of the config blob hearth reads; everything else is ignored.
#[derive(Deserialize)]
struct RawImage {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    config: Option<RawConfig>,
}

/// The runtime part (`config`); Docker writes `null` for absent lists, hence the options.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

/// Parses an OCI (or Docker v2) image config blob: the runtime config and the platform.
/// Unknown fields are ignored (the spec grows); missing or `null` ones are empty. Every list,
/// string and the blob itself are bounded; `Env` entries must be `KEY=VALUE`, `WorkingDir`
/// absolute, and no string may hold a NUL byte (none could reach `execve`).
pub fn parse_image_config(json: &[u8]) -> Result<(ImageConfig, Platform), ConfigError> {
    if json.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge { size: json.len() });
    }
    let raw: RawImage = serde_json::from_slice(json)?;
    let c = raw.config.unwrap_or(RawConfig {
        entrypoint: None,
        cmd: None,
        env: None,
        working_dir: None,
        user: None,
        exposed_ports: None,
        labels: None,
    });
    let empty_none = |s: Option<String>| s.filter(|s| !s.is_empty());
    let config = ImageConfig {
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
        env: c.env.unwrap_or_default(),
        working_dir: empty_none(c.working_dir),
        user: empty_none(c.user),
        exposed_ports: c.exposed_ports.unwrap_or_default().into_keys().collect(),
        labels: c.labels.unwrap_or_default(),
    };
    check(&config)?;
    let platform = Platform {
        os: raw.os,
        architecture: raw.architecture,
        variant: empty_none(raw.variant),
    };
    check_strings("architecture", [&platform.os, &platform.architecture])?;
    Ok((config, platform))
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Bounds the count and length of `items` and refuses NUL bytes.
fn check_strings<'a>(
    field: &'static str,
    items: impl IntoIterator<Item = &'a String>,
) -> Result<(), ConfigError> {
    for (n, s) in items.into_iter().enumerate() {
        if n >= MAX_CONFIG_ITEMS {
            return Err(invalid(
                field,
                format!("more than {MAX_CONFIG_ITEMS} entries"),
            ));
        }
        if s.len() > MAX_CONFIG_STRING {
            return Err(invalid(
                field,
                format!("an entry is longer than {MAX_CONFIG_STRING} bytes"),
            ));
        }
        if s.contains('\0') {
            return Err(invalid(field, "an entry holds a NUL byte"));
        }
    }
    Ok(())
}

fn check(c: &ImageConfig) -> Result<(), ConfigError> {
    check_strings("config.Entrypoint", &c.entrypoint)?;
    check_strings("config.Cmd", &c.cmd)?;
    check_strings("config.Env", &c.env)?;
    check_strings("config.ExposedPorts", &c.exposed_ports)?;
    check_strings("config.Labels", c.labels.keys().chain(c.labels.values()))?;
    check_strings("config.WorkingDir", &c.working_dir)?;
    check_strings("config.User", &c.user)?;
    if let Some(bad) = c
        .env
        .iter()
        .find(|e| !matches!(e.split_once('='), Some((k, _)) if !k.is_empty()))
    {
        return Err(invalid("config.Env", format!("{bad:?} is not KEY=VALUE")));
    }
    if let Some(dir) = c.working_dir.as_ref().filter(|d| !d.starts_with('/')) {
        return Err(invalid(
            "config.WorkingDir",
            format!("{dir:?} is not absolute"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_docker_config_with_nulls_and_extras() {
        let json = br#"{"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z",
            "config":{"Entrypoint":null,"Cmd":["/bin/sh","-c","echo hi"],"Env":["PATH=/bin","A=b=c"],
              "WorkingDir":"","User":"1000:1000","ExposedPorts":{"80/tcp":{},"53/udp":{}},
              "Labels":{"org.example":"yes"},"Volumes":null,"OnBuild":null},
            "rootfs":{"type":"layers","diff_ids":[]},"history":[]}"#;
        let (c, p) = parse_image_config(json).unwrap();
        assert!(c.entrypoint.is_empty());
        assert_eq!(c.cmd, ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(c.env, ["PATH=/bin", "A=b=c"]);
        assert_eq!(c.working_dir, None);
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.exposed_ports, ["53/udp", "80/tcp"]);
        assert_eq!(c.labels["org.example"], "yes");
        assert_eq!(
            p,
            Platform {
                os: "linux".into(),
                architecture: "amd64".into(),
                variant: None
            }
        );
    }

    #[test]
    fn a_config_without_runtime_part_is_empty() {
        let (c, p) =
            parse_image_config(br#"{"architecture":"arm64","os":"linux","variant":"v8"}"#).unwrap();
        assert_eq!(c, ImageConfig::default());
        assert_eq!(p.variant.as_deref(), Some("v8"));
    }

    #[test]
    fn refuses_bad_configs() {
        let too_big = vec![b' '; MAX_CONFIG_BYTES + 1];
        assert!(matches!(
            parse_image_config(&too_big),
            Err(ConfigError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_image_config(b"{"),
            Err(ConfigError::Json(_))
        ));
        assert!(matches!(
            parse_image_config(br#"{"config":{"Cmd":"sh"}}"#),
            Err(ConfigError::Json(_))
        ));
        let cases: [(&[u8], &str); 4] = [
            (br#"{"config":{"Env":["NOEQUALS"]}}"#, "config.Env"),
            (br#"{"config":{"Env":["=x"]}}"#, "config.Env"),
            (
                br#"{"config":{"WorkingDir":"relative"}}"#,
                "config.WorkingDir",
            ),
            (br#"{"config":{"Cmd":["a\u0000b"]}}"#, "config.Cmd"),
        ];
        for (json, want) in cases {
            match parse_image_config(json) {
                Err(ConfigError::Invalid { field, .. }) => assert_eq!(field, want),
                other => panic!("{}: {other:?}", String::from_utf8_lossy(json)),
            }
        }
        let many: Vec<String> = (0..=MAX_CONFIG_ITEMS).map(|i| format!("\"{i}\"")).collect();
        let json = format!(r#"{{"config":{{"Cmd":[{}]}}}}"#, many.join(","));
        assert!(matches!(
            parse_image_config(json.as_bytes()),
            Err(ConfigError::Invalid {
                field: "config.Cmd",
                ..
            })
        ));
    }
}
