//! `PUT /drives/{drive_id}` ([`Drive`]) and `PATCH /drives/{drive_id}` ([`PartialDrive`]),
//! `definitions/Drive` and `definitions/PartialDrive`.

use serde::{Deserialize, Serialize};

use super::{check_id, RateLimiter, ValidationError};

/// Represents the caching strategy for the block device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    /// Flushes are not forwarded to the host (default).
    #[default]
    Unsafe,
    /// Flushes are forwarded to the host (fsync).
    Writeback,
}

/// Type of the IO engine used by the device. "Async" is supported on host kernels newer than
/// 5.10.51.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoEngine {
    /// Synchronous IO (default).
    #[default]
    Sync,
    /// `io_uring` based IO.
    Async,
}

/// A block device: virtio-block (`path_on_host`, `is_read_only`, ...) or vhost-user-block
/// (`socket`). Firecracker opens `path_on_host` when the request arrives.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    /// The drive's ID; must equal the ID in the request path.
    pub drive_id: String,
    /// Whether this is the root device. Only one drive may be.
    pub is_root_device: bool,
    /// Represents the unique id of the boot partition of this device. It is optional and it
    /// will be taken into account only if the `is_root_device` field is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    /// Represents the caching strategy for the block device. Default `Unsafe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_type: Option<CacheType>,
    /// Is block read only. This field is required for virtio-block config and should be
    /// omitted for vhost-user-block configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_read_only: Option<bool>,
    /// Host level path for the guest drive. This field is required for virtio-block config
    /// and should be omitted for vhost-user-block configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<String>,
    /// IO rate limiter for the drive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
    /// Type of the IO engine used by the device. Default `Sync`. Omit for vhost-user-block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<IoEngine>,
    /// Path to the socket of vhost-user-block backend. This field is required for
    /// vhost-user-block config should be omitted for virtio-block configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
}

impl Drive {
    /// Checks the ID charset, that exactly one backend (`path_on_host` or `socket`) is given,
    /// and the rate limiter.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_id(&self.drive_id)?;
        if self.path_on_host.is_some() == self.socket.is_some() {
            return Err(ValidationError::DriveBackend {
                drive_id: self.drive_id.clone(),
            });
        }
        if let Some(rl) = &self.rate_limiter {
            rl.validate()?;
        }
        Ok(())
    }
}

/// Body of `PATCH /drives/{drive_id}`: a new backing file and/or rate limiter, before or
/// after boot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialDrive {
    /// The drive's ID; must equal the ID in the request path.
    pub drive_id: String,
    /// Host level path for the guest drive. This field is optional for virtio-block config
    /// and should be omitted for vhost-user-block configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<String>,
    /// New IO rate limiter for the drive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

impl PartialDrive {
    /// Checks the ID charset and the rate limiter.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_id(&self.drive_id)?;
        if let Some(rl) = &self.rate_limiter {
            rl.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtio_drive_round_trips_and_validates() {
        let body = r#"{"drive_id":"rootfs","is_root_device":true,"is_read_only":false,"path_on_host":"/img","cache_type":"Writeback","io_engine":"Async"}"#;
        let d: Drive = serde_json::from_str(body).unwrap();
        assert!(d.validate().is_ok());
        assert_eq!(d.cache_type, Some(CacheType::Writeback));
        let back: Drive = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn backend_must_be_exactly_one() {
        let mut d = Drive {
            drive_id: "d".into(),
            ..Default::default()
        };
        assert!(d.validate().is_err());
        d.socket = Some("/s".into());
        assert!(d.validate().is_ok());
        d.path_on_host = Some("/p".into());
        assert!(d.validate().is_err());
    }

    #[test]
    fn patch_rejects_put_only_fields() {
        assert!(serde_json::from_str::<PartialDrive>(
            r#"{"drive_id":"d","path_on_host":"/p","is_read_only":false}"#
        )
        .is_err());
        let p: PartialDrive = serde_json::from_str(r#"{"drive_id":"d"}"#).unwrap();
        assert!(p.validate().is_ok());
    }
}
