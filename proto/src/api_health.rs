//! hearth's `GET /v1/health` answer, shared by hearthd and hearthctl.

use serde::{Deserialize, Serialize};

/// `GET /v1/health`: hearthd is up and its supervisor answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `ok` when the endpoint answers 200.
    pub status: String,
    /// hearthd's version.
    pub version: String,
    /// How many VMs the supervisor knows.
    pub vms: u64,
    /// Whether the host is cordoned (refuses new VMs).
    #[serde(default)]
    pub cordoned: bool,
    /// Why, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cordon_reason: Option<String>,
}
