//! `GET /` ([`InstanceInfo`]) and `GET /version` ([`FirecrackerVersion`]).

use serde::{Deserialize, Serialize};

/// The current detailed state of the Firecracker instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceState {
    /// Before `InstanceStart`.
    #[serde(rename = "Not started")]
    NotStarted,
    /// Booted and running.
    Running,
    /// Paused with `PATCH /vm`.
    Paused,
}

/// Describes MicroVM instance information.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceInfo {
    // In Firecracker's order, so serialised bodies match its byte for byte.
    /// MicroVM / instance ID.
    pub id: String,
    /// The current detailed state (Not started, Running, Paused) of the Firecracker instance.
    /// This value is read-only for the control-plane.
    pub state: InstanceState,
    /// MicroVM hypervisor build version.
    pub vmm_version: String,
    /// Application name (`Firecracker`).
    pub app_name: String,
}

/// Describes the Firecracker version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirecrackerVersion {
    /// Firecracker build version.
    pub firecracker_version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_match_spec() {
        let i = InstanceInfo {
            app_name: "Firecracker".into(),
            id: "vm1".into(),
            state: InstanceState::NotStarted,
            vmm_version: "1.17.0".into(),
        };
        let s = serde_json::to_string(&i).unwrap();
        assert!(s.contains(r#""state":"Not started""#), "{s}");
        assert_eq!(serde_json::from_str::<InstanceInfo>(&s).unwrap(), i);
    }
}
