//! Root filesystems hearth built itself (from OCI images): a working directory inside the
//! store for the build, and the all-or-nothing commit of the built ext4 file with its origin.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use hearth_proto::api_images::{ImageFormat, ImageKind};

use super::meta::OciSource;
use super::{
    check, copy_sparse_hashing, io_err, now_unix, open_regular, ImageMeta, ImageStore, ImagesError,
    DATA_FILE, NEXT_TEMP, TEMP_PREFIX,
};

impl ImageStore {
    /// A new empty directory inside the store for building image `name` (scratch tree, built
    /// file): on the store's filesystem, so [`ImageStore::commit_built`] moves the result in
    /// by a rename. The caller removes it when done; one left by a crash is removed by
    /// [`ImageStore::open`] like an import's temporary.
    pub fn build_dir(&self, name: &str) -> Result<PathBuf, ImagesError> {
        let final_dir = self.checked_dir(name)?;
        if final_dir.symlink_metadata().is_ok() {
            return Err(ImagesError::Exists { name: name.into() });
        }
        let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .dir
            .join(format!("{TEMP_PREFIX}{name}-{}-{n}", std::process::id()));
        fs::create_dir(&dir).map_err(io_err("create", &dir))?;
        Ok(dir)
    }

    /// Records the ext4 file `built` (made by [`super::oci::rootfs::build_rootfs`]) as root
    /// filesystem image `name` built from `source`: checks it is a whole ext4 image, hashes
    /// it, and makes it visible atomically with its metadata. `built` is moved into the store
    /// (hard-linked when on the same filesystem, else copied; then unlinked). On any error nothing is
    /// left in the store and `built` is left where it was.
    #[expect(
        clippy::disallowed_methods,
        reason = "the image store is the one owner of its directory tree"
    )]
    pub fn commit_built(
        &self,
        name: &str,
        built: &Path,
        source: OciSource,
    ) -> Result<ImageMeta, ImagesError> {
        let final_dir = self.checked_dir(name)?;
        if final_dir.symlink_metadata().is_ok() {
            return Err(ImagesError::Exists { name: name.into() });
        }
        let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!("{TEMP_PREFIX}{name}-{}-{n}", std::process::id()));
        fs::create_dir(&tmp).map_err(io_err("create", &tmp))?;
        let result = self.fill_built(&tmp, &final_dir, name, built, source);
        match &result {
            Ok(_) => {
                let _ = fs::remove_file(built);
            }
            Err(_) => {
                let _ = fs::remove_dir_all(&tmp);
            }
        }
        result
    }

    /// Records image `name`, built from `source`, as a second name for image `from`'s file,
    /// which was built from the same inputs (the same `build_key`): a hard link, since an
    /// image's file is never written once it is made (VM disks are copies of it). The data is
    /// not read again: `from`'s size, format and digest carry over, after checking the linked
    /// file still has `from`'s size. On any error nothing is left in the store.
    #[expect(
        clippy::disallowed_methods,
        reason = "the image store is the one owner of its directory tree"
    )]
    pub fn commit_reused(
        &self,
        name: &str,
        from: &ImageMeta,
        source: OciSource,
    ) -> Result<ImageMeta, ImagesError> {
        let final_dir = self.checked_dir(name)?;
        if final_dir.symlink_metadata().is_ok() {
            return Err(ImagesError::Exists { name: name.into() });
        }
        let original = self.path(&from.name)?;
        let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!("{TEMP_PREFIX}{name}-{}-{n}", std::process::id()));
        fs::create_dir(&tmp).map_err(io_err("create", &tmp))?;
        let result = (|| {
            let data = tmp.join(DATA_FILE);
            fs::hard_link(&original, &data).map_err(io_err("link", &original))?;
            let len = fs::symlink_metadata(&data)
                .map_err(io_err("read", &data))?
                .len();
            if len != from.size {
                return Err(ImagesError::Io {
                    op: "reuse",
                    path: original.clone(),
                    source: std::io::Error::other(format!(
                        "it holds {len} bytes, its record says {}",
                        from.size
                    )),
                });
            }
            let meta = ImageMeta {
                name: name.into(),
                kind: ImageKind::Rootfs,
                format: from.format,
                size: from.size,
                sha256: from.sha256.clone(),
                source: PathBuf::from(&source.reference),
                imported_unix: now_unix(),
                oci: Some(source),
            };
            self.publish(&tmp, &final_dir, meta)
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    fn fill_built(
        &self,
        tmp: &Path,
        final_dir: &Path,
        name: &str,
        built: &Path,
        source: OciSource,
    ) -> Result<ImageMeta, ImagesError> {
        let data = tmp.join(DATA_FILE);
        let input = open_regular(built)?;
        let total = input
            .metadata()
            .map_err(|source| ImagesError::Source {
                path: built.into(),
                source,
            })?
            .len();
        // Same filesystem: the data is the built file itself (a hard link); hash it in place.
        let sha256 = if fs::hard_link(built, &data).is_ok() {
            hash_file(&input, total, built)?
        } else {
            let out = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&data)
                .map_err(io_err("create", &data))?;
            let sha = copy_sparse_hashing(&input, &out, total, built, &data, &mut |_, _| {})?;
            out.sync_all().map_err(io_err("sync", &data))?;
            sha
        };
        let mut header = vec![0u8; super::detect::HEADER_LEN.min(total as usize)];
        File::open(&data)
            .and_then(|mut f| f.read_exact(&mut header))
            .map_err(io_err("read", &data))?;
        let format = check(ImageKind::Rootfs, built, &header, total)?;
        debug_assert_eq!(format, ImageFormat::Ext4);
        File::open(&data)
            .and_then(|f| f.sync_all())
            .map_err(io_err("sync", &data))?;
        let meta = ImageMeta {
            name: name.into(),
            kind: ImageKind::Rootfs,
            format,
            size: total,
            sha256,
            source: PathBuf::from(&source.reference),
            imported_unix: now_unix(),
            oci: Some(source),
        };
        self.publish(tmp, final_dir, meta)
    }
}

/// The hex sha256 of the first `total` bytes of `file`.
fn hash_file(file: &File, total: u64, path: &Path) -> Result<String, ImagesError> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::FileExt;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < total {
        let want = (total - pos).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..want], pos)
            .map_err(io_err("read", path))?;
        hasher.update(&buf[..want]);
        pos += want as u64;
    }
    Ok(format!("{:x}", hasher.finalize()))
}

#[cfg(test)]
#[expect(
    clippy::disallowed_methods,
    reason = "the tests make their ext4 with mkfs and remove their build directory"
)]
mod tests {
    use super::*;
    use crate::images::meta::META_FILE;
    use hearth_proto::image_config::{ImageConfig, InitMode};

    fn mkfs(path: &Path) {
        let out = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(path)
            .arg("8M")
            .output()
            .expect("run mkfs.ext4");
        assert!(out.status.success());
    }

    fn source() -> OciSource {
        OciSource {
            reference: "docker.io/library/alpine:3.20".into(),
            manifest_digest: "sha256:abc".into(),
            config: ImageConfig {
                cmd: vec!["/bin/sh".into()],
                ..ImageConfig::default()
            },
            init: InitMode::Hearth,
            build_key: None,
        }
    }

    #[test]
    fn commit_built_moves_the_file_in_with_its_origin() {
        let data = tempfile::tempdir().unwrap();
        let store = ImageStore::open(data.path()).unwrap();
        let work = store.build_dir("alpine").unwrap();
        assert!(work.starts_with(store.dir()));
        let built = work.join("out.ext4");
        mkfs(&built);
        let meta = store.commit_built("alpine", &built, source()).unwrap();
        assert!(!built.exists());
        assert_eq!(meta.kind, ImageKind::Rootfs);
        assert_eq!(meta.format, ImageFormat::Ext4);
        assert_eq!(meta.size, 8 << 20);
        assert_eq!(meta.oci, Some(source()));
        assert_eq!(store.get("alpine").unwrap(), meta);
        assert!(store.resolve(ImageKind::Rootfs, "alpine").is_some());
        // A second image of that name is refused, and the file stays with the caller.
        mkfs(&built);
        assert!(matches!(
            store.commit_built("alpine", &built, source()),
            Err(ImagesError::Exists { .. })
        ));
        assert!(built.exists());
        // Not ext4: refused, nothing stored, the file left where it was.
        fs::write(&built, vec![0u8; 1 << 20]).unwrap();
        assert!(matches!(
            store.commit_built("other", &built, source()),
            Err(ImagesError::NotExt4 { .. })
        ));
        assert!(built.exists());
        fs::remove_dir_all(&work).unwrap();
        let names: Vec<_> = fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["alpine"]);
    }

    #[test]
    fn metadata_without_an_oci_source_still_reads() {
        let data = tempfile::tempdir().unwrap();
        let store = ImageStore::open(data.path()).unwrap();
        let dir = store.dir().join("old");
        fs::create_dir(&dir).unwrap();
        fs::write(
            dir.join(META_FILE),
            br#"{"name":"old","kind":"rootfs","format":"ext4","size":512,"sha256":"ab","source":"/x","imported_unix":1}"#,
        )
        .unwrap();
        let m = store.get("old").unwrap();
        assert_eq!((m.name.as_str(), m.oci), ("old", None));
    }
}
