//! `PUT /vsock`, `definitions/Vsock`.

use serde::{Deserialize, Serialize};

use super::ValidationError;

/// Defines a vsock device, backed by a set of Unix Domain Sockets, on the host side. For
/// host-initiated connections, Firecracker will be listening on the Unix socket identified by
/// the path `uds_path`. Firecracker will create this socket, bind and listen on it.
/// Host-initiated connections will be performed by connection to this socket and issuing a
/// connection forwarding request to the desired guest-side vsock port (i.e. `CONNECT 52\n`, to
/// connect to port 52). For guest-initiated connections, Firecracker will expect host software
/// to be bound and listening on Unix sockets at `uds_path_<PORT>`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vsock {
    /// Guest Vsock CID (at least 3).
    pub guest_cid: u32,
    /// Path to UNIX domain socket, used to proxy vsock connections.
    pub uds_path: String,
    /// This parameter has been deprecated and it will be removed in future Firecracker release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_id: Option<String>,
}

impl Vsock {
    /// Checks that the CID is not one of the reserved 0, 1, 2.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.guest_cid < 3 {
            return Err(ValidationError::InvalidGuestCid {
                guest_cid: self.guest_cid,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cid_at_least_three() {
        let mut v = Vsock {
            guest_cid: 2,
            uds_path: "/v.sock".into(),
            vsock_id: None,
        };
        assert!(v.validate().is_err());
        v.guest_cid = 3;
        assert!(v.validate().is_ok());
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"guest_cid":3,"uds_path":"/v.sock"}"#
        );
    }
}
