//! `PUT /metrics`, `definitions/Metrics`. Metrics can be initialised only once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Describes the configuration option for the metrics capability.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Path to the named pipe or file where the JSON-formatted metrics are flushed.
    pub metrics_path: String,
    /// Whether to emit the microVM instance id (the value passed to the jailer "--id") as a
    /// top-level "id" field on each metrics line. Default false (unreleased, spec 1.17.0-dev).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emit_id: Option<bool>,
    /// Operator-defined key-value pairs emitted under a top-level "properties" field on each
    /// metrics line (unreleased, spec 1.17.0-dev).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<BTreeMap<String, String>>,
}
