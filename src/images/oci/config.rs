//! The OCI image configuration (the "config" blob a manifest points at): what hearth keeps
//! of it (Entrypoint, Cmd, Env, WorkingDir, User, ExposedPorts, Labels) and the platform it
//! was built for. The blob is untrusted: its size is bounded before parsing and every field is
//! bounded after.

use serde::{Deserialize, Serialize};

/// The largest config blob accepted, bytes (real ones are a few KiB; history can grow them).
pub const MAX_CONFIG_BYTES: usize = 4 << 20;
/// The most strings in one list (Entrypoint + Cmd, Env, ExposedPorts) or labels.
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

/// Parses an OCI (or Docker v2) image config blob: the runtime config and the platform.
/// Unknown fields are ignored (the spec grows); missing ones are empty.
pub fn parse_image_config(json: &[u8]) -> Result<(ImageConfig, Platform), ConfigError> {
    if json.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge { size: json.len() });
    }
    let _ = json;
    unimplemented!("parse_image_config: in progress on branch rootfs")
}
