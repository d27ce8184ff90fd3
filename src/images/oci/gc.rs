//! Which images use which blobs, and the garbage collection of blobs no image uses.
//!
//! Each image made from OCI content has a refs file `.blobs/refs/<image>.json` listing the
//! blobs (config and layers) it was built from, written after the image is committed and
//! while the pull still holds the cache shared. Collection holds the cache exclusively, keeps
//! the blobs of refs files whose image still exists, removes the refs files of images that are
//! gone, then every blob left over. A crash between an image's commit and its refs file costs
//! only a later re-download: blobs are a cache, an image is its ext4 file.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::blobs::{BlobCache, BlobError};
use super::digest::Digest;

const REFS_DIR: &str = "refs";

/// What one image was built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRefs {
    /// The image manifest's digest.
    pub manifest: Digest,
    /// The config and layer blobs.
    pub blobs: Vec<Digest>,
}

/// What a collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Blobs removed.
    pub blobs: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Blobs kept (used by an image).
    pub kept: usize,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BlobError {
    let path = path.to_path_buf();
    move |source| BlobError::Io { op, path, source }
}

/// Records that image `name` (a valid image name) uses `refs`.
pub fn record(cache: &BlobCache, name: &str, refs: &ImageRefs) -> Result<(), BlobError> {
    let dir = cache.dir().join(REFS_DIR);
    fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    let path = dir.join(format!("{name}.json"));
    let tmp = dir.join(format!(".{name}.json.tmp"));
    let body = serde_json::to_vec(refs).unwrap_or_default();
    let result = (|| {
        let mut f = fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
        f.write_all(&body).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("sync", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes every blob no existing image uses; `image_exists(name)` says whether an image is
/// still in the store.
pub fn collect(
    cache: &BlobCache,
    image_exists: impl Fn(&str) -> bool,
) -> Result<GcReport, BlobError> {
    let _exclusive = cache.exclusive();
    let dir = cache.dir().join(REFS_DIR);
    let mut used = BTreeSet::new();
    if let Ok(entries) = fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let file = entry.file_name();
            let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".json")) else {
                continue;
            };
            let path = entry.path();
            if name.starts_with('.') || !image_exists(name) {
                let _ = fs::remove_file(&path);
                continue;
            }
            // An unreadable refs file keeps nothing: its image loses only cached blobs.
            let refs = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<ImageRefs>(&b).ok());
            if let Some(refs) = refs {
                used.extend(refs.blobs);
            }
        }
    }
    let mut report = GcReport::default();
    for (digest, size) in cache.list()? {
        if used.contains(&digest) {
            report.kept += 1;
        } else {
            cache.remove(&digest)?;
            report.blobs += 1;
            report.bytes += size;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_blobs_of_existing_images_only() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        let add = |data: &[u8]| {
            let d = Digest::of(data);
            cache
                .insert_from(&d, data.len() as u64, &mut &data[..], |_| {})
                .unwrap();
            d
        };
        let (shared, only_a, only_b, orphan) = (add(b"shared"), add(b"a"), add(b"bb"), add(b"ccc"));
        let refs = |blobs: Vec<Digest>| ImageRefs {
            manifest: Digest::of(b"m"),
            blobs,
        };
        record(&cache, "a", &refs(vec![shared.clone(), only_a.clone()])).unwrap();
        record(&cache, "b", &refs(vec![shared.clone(), only_b.clone()])).unwrap();
        let report = collect(&cache, |n| n == "a" || n == "b").unwrap();
        assert_eq!(
            report,
            GcReport {
                blobs: 1,
                bytes: 3,
                kept: 3
            }
        );
        assert!(!cache.has(&orphan, 3));
        // Image b removed: its own blob goes, the shared one stays for a.
        let report = collect(&cache, |n| n == "a").unwrap();
        assert_eq!(
            report,
            GcReport {
                blobs: 1,
                bytes: 2,
                kept: 2
            }
        );
        assert!(cache.has(&shared, 6) && cache.has(&only_a, 1) && !cache.has(&only_b, 2));
        assert!(!cache.dir().join(REFS_DIR).join("b.json").exists());
        let report = collect(&cache, |_| false).unwrap();
        assert_eq!(report.kept, 0);
        assert!(cache.list().unwrap().is_empty());
    }
}
