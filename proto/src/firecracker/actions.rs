//! `PUT /actions`, `definitions/InstanceActionInfo`.

use serde::{Deserialize, Serialize};

/// Enumeration indicating what type of action is contained in the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    /// Flush the metrics to the metrics target.
    FlushMetrics,
    /// Boot the microVM. Succeeds only once.
    InstanceStart,
    /// Queue Ctrl+Alt+Del in the emulated i8042 keyboard (`x86_64`; after boot only).
    SendCtrlAltDel,
}

/// Variant wrapper containing the real action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceActionInfo {
    /// Enumeration indicating what type of action is contained in the payload.
    pub action_type: ActionType,
}

impl InstanceActionInfo {
    /// The body for `action_type`.
    pub fn new(action_type: ActionType) -> Self {
        Self { action_type }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        let a = InstanceActionInfo::new(ActionType::SendCtrlAltDel);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"action_type":"SendCtrlAltDel"}"#
        );
        assert!(serde_json::from_str::<InstanceActionInfo>(r#"{"action_type":"Reboot"}"#).is_err());
    }
}
