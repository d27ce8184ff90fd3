//! Firecracker's HTTP API bodies, mirroring `firecracker.yaml` (swagger 2.0, v1.17.0-dev), one
//! module per resource. hearth's Firecracker client serialises these and `firecracker-sim`
//! deserialises them, so both ends share one definition.
//!
//! Conventions: every body is `#[serde(deny_unknown_fields)]` like Firecracker's own; optional
//! fields are `Option` and skipped when `None`; PUT and PATCH bodies are separate structs; rules
//! that serde cannot express live in `validate()`, whose errors carry Firecracker's wording.
//! IDs in request paths are checked with [`check_id`] and compared with the body's ID by
//! [`check_path_id`].

pub mod actions;
pub mod boot_source;
pub mod config_file;
pub mod drive;
pub mod error;
pub mod instance_info;
pub mod logger;
pub mod machine_config;
pub mod metrics;
pub mod net;
pub mod rate_limiter;
pub mod snapshot;
pub mod vm;
pub mod vsock;

pub use actions::{ActionType, InstanceActionInfo};
pub use boot_source::{BootSource, DEFAULT_BOOT_ARGS};
pub use config_file::VmConfigFile;
pub use drive::{CacheType, Drive, IoEngine, PartialDrive};
pub use error::{FaultBody, ValidationError};
pub use instance_info::{FirecrackerVersion, InstanceInfo, InstanceState};
pub use logger::{LogLevel, Logger};
pub use machine_config::{CpuTemplate, HugePages, MachineConfig, MachineConfigUpdate};
pub use metrics::Metrics;
pub use net::{NetworkInterface, PartialNetworkInterface};
pub use rate_limiter::{RateLimiter, TokenBucket};
pub use snapshot::{
    LoadHugePages, MemBackendType, MemoryBackend, NetworkOverride, SnapshotCreateParams,
    SnapshotLoadParams, SnapshotType, VsockOverride,
};
pub use vm::{Vm, VmPauseState};
pub use vsock::Vsock;

/// Checks an API resource ID (drive, network interface) the way Firecracker's `checked_id`
/// does: not empty, and only alphanumerics and `_` (no hyphen). Alphanumeric is
/// `char::is_alphanumeric`, as in Firecracker, so non-ASCII letters pass too.
pub fn check_id(id: &str) -> Result<(), ValidationError> {
    if id.is_empty() {
        return Err(ValidationError::EmptyId);
    }
    if !id.chars().all(|c| c == '_' || c.is_alphanumeric()) {
        return Err(ValidationError::InvalidId { id: id.to_owned() });
    }
    Ok(())
}

/// Checks the ID in a request path (`/drives/{id}`) and that the body's ID equals it.
pub fn check_path_id(path_id: &str, body_id: &str) -> Result<(), ValidationError> {
    check_id(path_id)?;
    if path_id != body_id {
        return Err(ValidationError::IdMismatch {
            path_id: path_id.to_owned(),
            body_id: body_id.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_allow_alphanumerics_and_underscore_only() {
        assert!(check_id("rootfs").is_ok());
        assert!(check_id("eth_0").is_ok());
        assert_eq!(check_id(""), Err(ValidationError::EmptyId));
        assert!(matches!(
            check_id("eth-0"),
            Err(ValidationError::InvalidId { .. })
        ));
        assert!(matches!(
            check_id("a/b"),
            Err(ValidationError::InvalidId { .. })
        ));
        // Firecracker uses `char::is_alphanumeric`, so non-ASCII letters pass, as there.
        assert!(check_id("disk_é").is_ok());
    }

    #[test]
    fn path_id_must_equal_body_id() {
        assert!(check_path_id("eth0", "eth0").is_ok());
        let err = check_path_id("eth0", "eth1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "The id from the path does not match the id from the body!"
        );
        assert!(check_path_id("eth-0", "eth-0").is_err());
    }
}
