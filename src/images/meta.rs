//! Image metadata, one `meta.json` per image directory, written atomically (temp file,
//! `fsync`, rename). This is the only part of the store that knows how metadata is kept, so
//! it can move to the SQLite store without touching the rest.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use hearth_proto::api_images::{ImageFormat, ImageKind};
pub use hearth_proto::image_config::OciSource;

use super::{io_err, ImagesError};

/// File name of an image's metadata inside its directory.
pub const META_FILE: &str = "meta.json";
const META_TMP: &str = ".meta.json.tmp";

/// What the store records about an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageMeta {
    /// The image's name.
    pub name: String,
    /// Kernel or root filesystem.
    pub kind: ImageKind,
    /// The format it was recognised as.
    pub format: ImageFormat,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
    /// The path it was imported from.
    pub source: PathBuf,
    /// When it was imported, seconds since the Unix epoch.
    pub imported_unix: u64,
    /// For a root filesystem built from an OCI image: where from, its config, its init.
    /// Absent in images imported from a file (and in `meta.json` files older than it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<OciSource>,
}

/// Writes `meta` into the image directory `dir` atomically.
pub fn write(dir: &Path, meta: &ImageMeta) -> Result<(), ImagesError> {
    let tmp = dir.join(META_TMP);
    let path = dir.join(META_FILE);
    let body = serde_json::to_vec_pretty(meta).map_err(|source| ImagesError::Meta {
        path: path.clone(),
        source,
    })?;
    let result = (|| {
        let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
        f.write_all(&body).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("sync", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads the metadata of the image directory `dir`; `None` when there is none.
pub fn read(dir: &Path) -> Result<Option<ImageMeta>, ImagesError> {
    let path = dir.join(META_FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| ImagesError::Meta { path, source }),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(source) => Err(ImagesError::Io {
            op: "read",
            path,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let m = ImageMeta {
            name: "k".into(),
            kind: ImageKind::Kernel,
            format: ImageFormat::Elf,
            size: 42,
            sha256: "ab".into(),
            source: "/src/vmlinux".into(),
            imported_unix: 1,
            oci: None,
        };
        write(dir.path(), &m).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(m));
        assert!(!dir.path().join(META_TMP).exists());
        fs::write(dir.path().join(META_FILE), b"{").unwrap();
        assert!(matches!(read(dir.path()), Err(ImagesError::Meta { .. })));
    }
}
