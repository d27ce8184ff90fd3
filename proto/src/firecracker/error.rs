//! The error body of every failed Firecracker API call (`definitions/Error`), and the
//! validation errors that `validate()` on the request bodies reports.

use serde::{Deserialize, Serialize};

/// The body of a 4xx response: `{"fault_message": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultBody {
    /// A description of the error condition.
    pub fault_message: String,
}

impl FaultBody {
    /// A fault body carrying `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            fault_message: message.into(),
        }
    }
}

/// A request body that parsed but breaks one of Firecracker's rules. The `Display` text is
/// the `fault_message` Firecracker itself returns for the same mistake.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A resource ID is empty.
    #[error("The ID cannot be empty.")]
    EmptyId,
    /// A resource ID holds a character other than alphanumerics and `_`.
    #[error("API Resource IDs can only contain alphanumeric characters and underscores.")]
    InvalidId {
        /// The rejected ID.
        id: String,
    },
    /// The ID in the request path differs from the ID in the body.
    #[error("The id from the path does not match the id from the body!")]
    IdMismatch {
        /// The ID in the URL path.
        path_id: String,
        /// The ID in the JSON body.
        body_id: String,
    },
    /// vCPU count outside 1..=32, or odd (and not 1) with SMT.
    #[error("The number of vCPUs must be greater than 0, less than 32 and must be 1 or an even number if SMT is enabled.")]
    InvalidVcpuCount {
        /// The rejected count.
        vcpu_count: u8,
        /// Whether SMT was requested.
        smt: bool,
    },
    /// Memory size is zero, or not a multiple of the huge page size.
    #[error("The memory size (MiB) is either 0, or not a multiple of the configured page size.")]
    InvalidMemorySize {
        /// The rejected size.
        mem_size_mib: u64,
    },
    /// An MTU outside 68..=65535.
    #[error("Invalid MTU {mtu}: must be between 68 and 65535.")]
    InvalidMtu {
        /// The rejected MTU.
        mtu: u32,
    },
    /// A guest MAC that is not six `:`-separated hex octets.
    #[error("Invalid guest MAC address: {mac}")]
    InvalidMac {
        /// The rejected text.
        mac: String,
    },
    /// A vsock guest CID below 3 (0, 1 and 2 are reserved).
    #[error("Invalid guest CID {guest_cid}: must be at least 3.")]
    InvalidGuestCid {
        /// The rejected CID.
        guest_cid: u32,
    },
    /// A token bucket whose refill time overflows when converted to nanoseconds.
    #[error("Invalid token bucket: refill_time {refill_time} ms is too large.")]
    InvalidTokenBucket {
        /// The rejected refill time in milliseconds.
        refill_time: u64,
    },
    /// A drive that names both or neither of `path_on_host` (virtio-block) and `socket`
    /// (vhost-user-block).
    #[error("Drive {drive_id}: exactly one of path_on_host and socket must be given.")]
    DriveBackend {
        /// The drive's ID.
        drive_id: String,
    },
    /// A PATCH body that changes nothing.
    #[error("Empty PATCH request.")]
    EmptyUpdate {
        /// The resource being patched.
        what: &'static str,
    },
}
