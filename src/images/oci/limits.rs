//! Bounds on what a registry or an archive may make hearthd read: everything it serves is
//! untrusted input, so every size and count has a ceiling, checked while reading (a blob is
//! cut off at its declared size, a manifest at its bound), never after buffering it whole.

use serde::{Deserialize, Serialize};

/// The ceilings of one pull or import; `[images]` in hearthd's configuration sets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OciLimits {
    /// The largest manifest or index, bytes (default 4 MiB).
    pub max_manifest_bytes: u64,
    /// The largest image config blob, bytes (default 4 MiB).
    pub max_config_bytes: u64,
    /// The most layers an image may have (default 128).
    pub max_layers: usize,
    /// The largest single layer blob (compressed), bytes (default 16 GiB).
    pub max_layer_bytes: u64,
    /// The largest sum of an image's layer blobs, bytes (default 64 GiB).
    pub max_total_bytes: u64,
}

impl Default for OciLimits {
    fn default() -> Self {
        OciLimits {
            max_manifest_bytes: 4 << 20,
            max_config_bytes: 4 << 20,
            max_layers: 128,
            max_layer_bytes: 16 << 30,
            max_total_bytes: 64 << 30,
        }
    }
}
