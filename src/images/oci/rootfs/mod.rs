//! From verified layer blobs to a bootable ext4 root filesystem: the layers are flattened into
//! a scratch tree (untrusted input: every path stays inside the tree, every size is bounded),
//! hearth's agent is injected as the guest's init with the image's command in an init spec,
//! and `mkfs.ext4 -d` builds the filesystem from the tree, sized from its content plus
//! headroom. Nothing here mounts anything.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::ImageConfig;

mod ext4;
mod flatten;
mod inject;
mod layer;
mod tree;
mod whiteout;

pub use ext4::LABEL;
pub use inject::{check_static, init_spec, DEFAULT_PATH};
pub use layer::Compression;

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

/// Errors of building a root filesystem. Layer errors name the layer's digest and, where
/// one is to blame, the entry.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// More layers than [`FlattenLimits::max_layers`].
    #[error("Image has {count} layers, more than the {max} allowed")]
    TooManyLayers {
        /// Layers given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A layer's media type is not a tar (plain, gzip or zstd).
    #[error("Layer {digest} has media type {media_type:?}, not a tar, tar+gzip or tar+zstd layer")]
    MediaType {
        /// The layer.
        digest: String,
        /// Its media type.
        media_type: String,
    },
    /// An entry would escape the tree or is otherwise refused.
    #[error("Layer {digest}: refused entry {entry:?}: {reason}")]
    UnsafeEntry {
        /// The layer.
        digest: String,
        /// The entry's name.
        entry: String,
        /// Why.
        reason: String,
    },
    /// A bound of [`FlattenLimits`] was passed.
    #[error("Layer {digest}: more {what} than the limit of {max}")]
    Limit {
        /// The layer where it was passed.
        digest: String,
        /// What was counted.
        what: &'static str,
        /// The limit.
        max: u64,
    },
    /// The layer is not a valid (compressed) tar stream: truncated, corrupt, trailing data.
    #[error("Layer {digest} is malformed: {reason}")]
    Malformed {
        /// The layer.
        digest: String,
        /// What is wrong.
        reason: String,
    },
    /// Writing an entry into the tree failed.
    #[error("Layer {digest}: cannot {op} {entry:?}")]
    Entry {
        /// The layer.
        digest: String,
        /// The entry's name.
        entry: String,
        /// What was being done.
        op: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A file operation outside the layers failed.
    #[error("Cannot {op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The agent cannot be the guest's init.
    #[error("Agent {path} cannot be the guest's init: {reason}")]
    Agent {
        /// The configured agent binary (`[images] agent_bin`).
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Injecting the agent or its spec failed.
    #[error("Cannot {op} {path} in the image")]
    Inject {
        /// The guest path.
        path: String,
        /// What was being done.
        op: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The image has no command for hearth's init to run.
    #[error("Image has no command: its Entrypoint and Cmd are both empty (use --init image to boot its own init)")]
    NoCommand,
    /// The image's command does not make a valid init spec.
    #[error("Image's command cannot be run by hearth's init: {0}")]
    Spec(#[from] hearth_proto::init::InitSpecError),
    /// The explicit size is too small for the content.
    #[error("Size {size} bytes is too small: the image's content needs at least {needed} bytes")]
    TooSmall {
        /// The size asked for.
        size: u64,
        /// What the content needs (without headroom).
        needed: u64,
    },
    /// `mkfs.ext4` failed.
    #[error("mkfs.ext4 failed ({status}): {stderr}")]
    Mkfs {
        /// Its exit status.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// The built file is not a whole ext4 image (a bug, or mkfs misbehaving).
    #[error("The built filesystem {path} fails its check: {reason}")]
    Check {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The scratch directory is missing or not empty.
    #[error("Scratch directory {path} must be an existing empty directory")]
    Scratch {
        /// The directory.
        path: PathBuf,
    },
    /// The output file exists already.
    #[error("Output {path} exists already")]
    OutExists {
        /// The file.
        path: PathBuf,
    },
}

/// The name of the tree inside the scratch directory.
const TREE: &str = "rootfs";

/// Builds the ext4 root filesystem `out` from `layers` (applied in order) and `config`:
/// flattens them into `scratch` (an empty directory this uses and empties again), injects
/// the agent per `opts.init`, and runs `mkfs.ext4 -d`. On error `out` does not exist and
/// `scratch` is empty. Blocking: run it on a blocking thread.
pub fn build_rootfs(
    layers: &[LayerBlob],
    config: &ImageConfig,
    opts: &RootfsOptions,
    scratch: &Path,
    out: &Path,
) -> Result<RootfsReport, RootfsError> {
    let scratch_err = || RootfsError::Scratch {
        path: scratch.to_path_buf(),
    };
    let mut listing = std::fs::read_dir(scratch).map_err(|_| scratch_err())?;
    if listing.next().is_some() {
        return Err(scratch_err());
    }
    if out.symlink_metadata().is_ok() {
        return Err(RootfsError::OutExists {
            path: out.to_path_buf(),
        });
    }
    let tree = scratch.join(TREE);
    std::fs::create_dir(&tree).map_err(|source| RootfsError::Io {
        op: "create",
        path: tree.clone(),
        source,
    })?;
    let result = build_in(layers, config, opts, &tree, out);
    let cleaned = remove_tree(scratch);
    if result.is_err() {
        let _ = std::fs::remove_file(out);
    }
    let report = result?;
    cleaned.map_err(|source| {
        let _ = std::fs::remove_file(out);
        RootfsError::Io {
            op: "clean",
            path: tree,
            source,
        }
    })?;
    Ok(report)
}

fn build_in(
    layers: &[LayerBlob],
    config: &ImageConfig,
    opts: &RootfsOptions,
    tree: &Path,
    out: &Path,
) -> Result<RootfsReport, RootfsError> {
    flatten::flatten(layers, tree, &opts.limits)?;
    if opts.init == InitMode::Hearth {
        inject::inject(tree, &opts.agent_bin, config)?;
    }
    let usage = ext4::usage(tree)?;
    let layout = ext4::layout(
        &usage,
        opts.size,
        opts.headroom_percent,
        opts.min_headroom_bytes,
    )?;
    ext4::mkfs(tree, out, &layout)?;
    check_built(out)?;
    Ok(RootfsReport {
        content_bytes: usage.content_bytes,
        files: usage.entries,
        fs_bytes: layout.bytes,
    })
}

/// Checks the built file as an import would (ext4 magic, whole filesystem in the file).
fn check_built(out: &Path) -> Result<(), RootfsError> {
    use std::io::Read;
    let io = |source| RootfsError::Io {
        op: "read",
        path: out.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(out).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let mut header = vec![0u8; crate::images::detect::HEADER_LEN];
    f.read_exact(&mut header).map_err(io)?;
    crate::images::detect::check_ext4(&header, len)
        .map(drop)
        .map_err(|reason| RootfsError::Check {
            path: out.to_path_buf(),
            reason,
        })
}

/// Removes the tree from `scratch`, never following a symlink in it.
fn remove_tree(scratch: &Path) -> std::io::Result<()> {
    let fd: std::os::fd::OwnedFd = std::fs::File::open(scratch)?.into();
    match tree::remove_all(&fd, std::ffi::OsStr::new(TREE)) {
        Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
