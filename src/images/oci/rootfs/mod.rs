//! From verified layer blobs to a bootable ext4 root filesystem: the layers are flattened into
//! a scratch tree (untrusted input: every path stays inside the tree, every size is bounded),
//! hearth's agent is injected as the guest's init with the image's command in an init spec,
//! and `mkfs.ext4 -d` builds the filesystem from the tree, sized from its content plus
//! headroom. Nothing here mounts anything.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::ImageConfig;

/// One layer to apply, already verified (digest and size) by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    /// The blob's file (in the blob cache).
    pub path: PathBuf,
    /// Its media type (`application/vnd.oci.image.layer.v1.tar[+gzip|+zstd]` or Docker's).
    pub media_type: String,
    /// Its digest, `sha256:<hex>` (for error messages).
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
}

pub use hearth_proto::image_config::InitMode;

/// Bounds on what the layers may hold (they are untrusted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlattenLimits {
    /// The most layers in one image.
    pub max_layers: usize,
    /// The most tar entries in all layers together.
    pub max_entries: u64,
    /// The most bytes of file content in all layers together (uncompressed).
    pub max_total_bytes: u64,
    /// The largest single file, bytes.
    pub max_file_bytes: u64,
    /// The longest entry path, bytes.
    pub max_path_bytes: usize,
    /// The most extended attributes on one entry.
    pub max_xattrs_per_entry: usize,
    /// The largest extended attribute value, bytes.
    pub max_xattr_bytes: usize,
}

impl Default for FlattenLimits {
    fn default() -> Self {
        FlattenLimits {
            max_layers: 128,
            max_entries: 1_000_000,
            max_total_bytes: 64 << 30,
            max_file_bytes: 16 << 30,
            max_path_bytes: 4096,
            max_xattrs_per_entry: 64,
            max_xattr_bytes: 64 << 10,
        }
    }
}

/// How to build the root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsOptions {
    /// The filesystem's size in bytes when given explicitly (`--size`); refused if the content
    /// does not fit. `None`: content plus headroom.
    pub size: Option<u64>,
    /// Free space to add, as a percentage of the content.
    pub headroom_percent: u32,
    /// At least this much free space, bytes.
    pub min_headroom_bytes: u64,
    /// Whether hearth's agent becomes the guest's init.
    pub init: InitMode,
    /// The static `hearth-agent` binary to inject.
    pub agent_bin: PathBuf,
    /// Bounds on the layers.
    pub limits: FlattenLimits,
}

/// What [`build_rootfs`] made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsReport {
    /// Bytes of file content in the flattened tree.
    pub content_bytes: u64,
    /// Entries (files, directories, links, nodes) in the flattened tree.
    pub files: u64,
    /// The filesystem's size in bytes (the size of `out`).
    pub fs_bytes: u64,
}

/// Errors of building a root filesystem.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// Placeholder until the builder lands.
    #[error("Not yet built: {0}")]
    Unfinished(&'static str),
}

/// Builds the ext4 root filesystem `out` from `layers` (applied in order) and `config`:
/// flattens them into `scratch` (an empty directory this uses and empties again), injects
/// the agent per `opts.init`, and runs `mkfs.ext4 -d`. On error `out` does not exist and
/// `scratch` is empty.
pub fn build_rootfs(
    layers: &[LayerBlob],
    config: &ImageConfig,
    opts: &RootfsOptions,
    scratch: &Path,
    out: &Path,
) -> Result<RootfsReport, RootfsError> {
    let _ = (layers, config, opts, scratch, out);
    Err(RootfsError::Unfinished("build_rootfs"))
}
