//! hearth's HTTP bodies for the image store (`/v1/images`), shared by hearthd and hearthctl.
//! Images are imported server-side from a path on the host: the body names the file, hearthd
//! copies it into its store.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What an image is for. The one image kind of hearth: the API, the image store (whose
/// `meta.json` spells it the same way) and the supervisor's image catalog all use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    /// A guest kernel (`vmlinux` or `bzImage`).
    Kernel,
    /// A base root filesystem (ext4).
    Rootfs,
}

impl ImageKind {
    /// `kernel` or `rootfs`.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageKind::Kernel => "kernel",
            ImageKind::Rootfs => "rootfs",
        }
    }
}

impl std::str::FromStr for ImageKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kernel" => Ok(ImageKind::Kernel),
            "rootfs" => Ok(ImageKind::Rootfs),
            _ => Err(format!("unknown image kind {s:?} (kernel or rootfs)")),
        }
    }
}

/// The format an image was recognised as on import; also what the image store's `meta.json`
/// records, spelled the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// An `x86_64` ELF `vmlinux`.
    Elf,
    /// A `bzImage`.
    BzImage,
    /// An ext4 filesystem image.
    Ext4,
}

impl ImageFormat {
    /// `elf`, `bzimage` or `ext4`.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Elf => "elf",
            ImageFormat::BzImage => "bzimage",
            ImageFormat::Ext4 => "ext4",
        }
    }
}

impl std::fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /v1/images`: import the file at `path` (on hearthd's host) as image `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportImage {
    /// The image's name: 1-64 of `[A-Za-z0-9._-]`, not starting with `.`.
    pub name: String,
    /// Kernel or root filesystem.
    pub kind: ImageKind,
    /// Absolute path of the source file, as hearthd sees it.
    pub path: PathBuf,
}

/// An image as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// The image's name.
    pub name: String,
    /// Kernel or root filesystem.
    pub kind: ImageKind,
    /// The format it was recognised as: `elf`, `bzimage` or `ext4`.
    pub format: ImageFormat,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
    /// The path it was imported from.
    pub source: PathBuf,
    /// When it was imported, seconds since the Unix epoch.
    pub imported_unix: u64,
    /// For a root filesystem built from an OCI image: its reference, digest, config and init.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<Box<crate::image_config::OciSource>>,
}

/// The media type of a streamed import: one JSON [`ImportUpdate`] per line.
pub const NDJSON: &str = "application/x-ndjson";

/// One line of a streamed `POST /v1/images` (asked for with `Accept: application/x-ndjson`):
/// progress lines, then exactly one `image` or `error` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportUpdate {
    /// Bytes copied so far out of the total.
    Progress {
        /// Bytes copied.
        copied: u64,
        /// The source's size.
        total: u64,
    },
    /// The import finished: the image.
    Image(ImageInfo),
    /// The import failed; nothing was stored.
    Error(crate::api::ErrorDetail),
}
