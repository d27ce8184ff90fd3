//! The content-addressed blob cache: layers and configs under
//! `<data_dir>/images/.blobs/sha256/<hex>`, shared by every image pulled or imported. The
//! directory starts with `.`, which no image name may, so the image store never takes it for
//! an image.
//!
//! A blob enters only verified: it is streamed into `.blobs/tmp/` while hashed and counted,
//! cut off the moment it passes its declared size, and renamed into place only when both its
//! size and its digest are the ones the manifest declared. Anything else removes the
//! temporary file and reports what differed. Temporaries left by a crash are removed by
//! [`BlobCache::open`] (those whose process is gone).
//!
//! Blobs are a cache, never an image's data (an image is its built ext4 file), so losing one
//! costs a download, nothing more; [`super::gc`] removes those no image refers to.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use sha2::{Digest as _, Sha256};

use super::digest::Digest;

/// The cache's directory name under `<data_dir>/images/`.
pub const BLOBS_DIR: &str = ".blobs";
const TMP_DIR: &str = "tmp";
const SHA256_DIR: &str = "sha256";

static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// Errors of the blob cache.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// More bytes came than the manifest declared.
    #[error("Blob {digest} is larger than the {expected} bytes its manifest declares")]
    TooLarge {
        /// The blob.
        digest: Digest,
        /// Its declared size.
        expected: u64,
    },
    /// Fewer bytes came than the manifest declared.
    #[error("Blob {digest} is truncated: {got} of the {expected} bytes its manifest declares")]
    Truncated {
        /// The blob.
        digest: Digest,
        /// Bytes received.
        got: u64,
        /// Its declared size.
        expected: u64,
    },
    /// The content does not hash to its digest.
    #[error("Blob {expected} has the wrong content: it hashes to {actual}")]
    DigestMismatch {
        /// The digest declared.
        expected: Digest,
        /// The digest of what came.
        actual: Digest,
    },
    /// A file operation failed.
    #[error("Cannot {op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BlobError {
    let path = path.to_path_buf();
    move |source| BlobError::Io { op, path, source }
}

/// The blob cache. Clones share one lock: pulls hold it shared while they add and use blobs,
/// garbage collection holds it exclusively, so a collection never removes a blob a pull in
/// this process is about to use.
#[derive(Debug, Clone)]
pub struct BlobCache {
    dir: PathBuf,
    lock: Arc<RwLock<()>>,
}

impl BlobCache {
    /// Opens (creating) the cache in `images_dir` (the image store's directory), removing
    /// temporaries of processes that are gone.
    pub fn open(images_dir: &Path) -> Result<Self, BlobError> {
        let dir = images_dir.join(BLOBS_DIR);
        for sub in [TMP_DIR, SHA256_DIR] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).map_err(io_err("create", &d))?;
        }
        let tmp = dir.join(TMP_DIR);
        for entry in fs::read_dir(&tmp).map_err(io_err("read", &tmp))?.flatten() {
            let name = entry.file_name();
            let pid = name.to_str().and_then(|n| n.split('-').nth(1));
            let alive = pid.is_some_and(|p| {
                p.parse::<u32>().is_ok() && hearth_actors::host::procfs::exists(p)
            });
            if !alive {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(BlobCache {
            dir,
            lock: Arc::default(),
        })
    }

    /// The cache's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where blob `digest` lives (whether or not it is there).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(SHA256_DIR).join(digest.hex())
    }

    /// Whether blob `digest` is in the cache with `size` bytes. Only verified blobs are
    /// renamed into place, so presence with the right size means verified content.
    pub fn has(&self, digest: &Digest, size: u64) -> bool {
        fs::symlink_metadata(self.path(digest)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// Every blob in the cache, with its size.
    pub fn list(&self) -> Result<Vec<(Digest, u64)>, BlobError> {
        let dir = self.dir.join(SHA256_DIR);
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("read", &dir))? {
            let entry = entry.map_err(io_err("read", &dir))?;
            let name = entry.file_name();
            let Some(d) = name.to_str().and_then(Digest::from_hex) else {
                continue;
            };
            let len = entry.metadata().map_or(0, |m| m.len());
            out.push((d, len));
        }
        out.sort();
        Ok(out)
    }

    /// Removes blob `digest` (absent is fine).
    pub fn remove(&self, digest: &Digest) -> Result<(), BlobError> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", &path)(e)),
            _ => Ok(()),
        }
    }

    /// Shared use of the cache: held while a pull adds and reads blobs.
    pub fn shared(&self) -> RwLockReadGuard<'_, ()> {
        self.lock
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Exclusive use of the cache: held by garbage collection.
    pub fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.lock
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts adding blob `digest` of `size` bytes: write its content to the writer, then
    /// [`BlobWriter::finish`].
    pub fn writer(&self, digest: &Digest, size: u64) -> Result<BlobWriter, BlobError> {
        let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(TMP_DIR).join(format!(
            "{}-{}-{n}",
            &digest.hex()[..16],
            std::process::id()
        ));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        Ok(BlobWriter {
            file: Some(io::BufWriter::with_capacity(256 << 10, file)),
            tmp,
            dest: self.path(digest),
            digest: digest.clone(),
            expected: size,
            written: 0,
            hasher: Sha256::new(),
        })
    }

    /// Adds blob `digest` of `size` bytes from `input`, calling `progress(bytes so far)` as it
    /// goes. Nothing is added unless the content matches.
    pub fn insert_from(
        &self,
        digest: &Digest,
        size: u64,
        input: &mut impl Read,
        mut progress: impl FnMut(u64),
    ) -> Result<(), BlobError> {
        let mut w = self.writer(digest, size)?;
        let mut buf = vec![0u8; 256 << 10];
        loop {
            // Read at most one byte past the declared size: enough to know it is too large.
            let room = (size + 1).saturating_sub(w.written).min(buf.len() as u64) as usize;
            let n = match input.read(&mut buf[..room.max(1)]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(BlobError::Io {
                        op: "read the source of",
                        path: w.dest.clone(),
                        source,
                    })
                }
            };
            w.write(&buf[..n])?;
            progress(w.written);
        }
        w.finish()
    }

    /// Adds the `size` bytes of `input` under the digest they hash to (for content not named
    /// by its digest, e.g. a `docker save` layer at `<id>/layer.tar`); that digest.
    pub fn insert_hashing(&self, size: u64, input: &mut impl Read) -> Result<Digest, BlobError> {
        let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(TMP_DIR)
            .join(format!("anon-{}-{n}", std::process::id()));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        let guard = TempFile(tmp.clone());
        let mut out = io::BufWriter::with_capacity(256 << 10, file);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 << 10];
        let mut got: u64 = 0;
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err("read the source of", &tmp)(e)),
            };
            got += n as u64;
            if got > size {
                return Err(BlobError::Io {
                    op: "read (longer than declared)",
                    path: tmp,
                    source: io::ErrorKind::InvalidData.into(),
                });
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io_err("write", &tmp))?;
        }
        let digest = Digest::from_hasher(hasher);
        if got != size {
            return Err(BlobError::Truncated {
                digest,
                got,
                expected: size,
            });
        }
        let file = out
            .into_inner()
            .map_err(|e| io_err("write", &tmp)(e.into_error()))?;
        file.sync_all().map_err(io_err("sync", &tmp))?;
        fs::rename(&tmp, self.path(&digest)).map_err(io_err("rename", &tmp))?;
        drop(guard);
        Ok(digest)
    }

    /// Reads blob `digest` whole, if it has at most `max` bytes (configs, small manifests).
    pub fn read_small(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, BlobError> {
        let path = self.path(digest);
        let f = File::open(&path).map_err(io_err("open", &path))?;
        let mut out = Vec::new();
        f.take(max + 1)
            .read_to_end(&mut out)
            .map_err(io_err("read", &path))?;
        if out.len() as u64 > max {
            return Err(BlobError::TooLarge {
                digest: digest.clone(),
                expected: max,
            });
        }
        Ok(out)
    }
}

/// A blob being added: hashed and counted as written; [`BlobWriter::finish`] checks and
/// renames it into place. Dropped unfinished, it removes its temporary file.
#[derive(Debug)]
pub struct BlobWriter {
    file: Option<io::BufWriter<File>>,
    tmp: PathBuf,
    dest: PathBuf,
    digest: Digest,
    expected: u64,
    written: u64,
    hasher: Sha256,
}

impl BlobWriter {
    /// Appends `bytes`; fails (and the blob will not be added) past the declared size.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        let after = self.written + bytes.len() as u64;
        if after > self.expected {
            return Err(BlobError::TooLarge {
                digest: self.digest.clone(),
                expected: self.expected,
            });
        }
        self.hasher.update(bytes);
        if let Some(f) = self.file.as_mut() {
            f.write_all(bytes).map_err(io_err("write", &self.tmp))?;
        }
        self.written = after;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks the size and digest, syncs, and renames the blob into place.
    pub fn finish(mut self) -> Result<(), BlobError> {
        if self.written != self.expected {
            return Err(BlobError::Truncated {
                digest: self.digest.clone(),
                got: self.written,
                expected: self.expected,
            });
        }
        let actual = Digest::from_hasher(std::mem::take(&mut self.hasher));
        if actual != self.digest {
            return Err(BlobError::DigestMismatch {
                expected: self.digest.clone(),
                actual,
            });
        }
        let Some(buffered) = self.file.take() else {
            return Err(io_err("write", &self.tmp)(io::ErrorKind::BrokenPipe.into()));
        };
        let file = buffered
            .into_inner()
            .map_err(|e| io_err("write", &self.tmp)(e.into_error()))?;
        file.sync_all().map_err(io_err("sync", &self.tmp))?;
        fs::rename(&self.tmp, &self.dest).map_err(io_err("rename", &self.tmp))?;
        Ok(())
    }
}

/// A temporary file removed when dropped (renamed away first when kept).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Finished: renamed away, so this fails harmlessly with NotFound.
        let _ = fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> (tempfile::TempDir, BlobCache) {
        let dir = tempfile::tempdir().unwrap();
        let c = BlobCache::open(dir.path()).unwrap();
        (dir, c)
    }

    fn tmp_is_empty(c: &BlobCache) -> bool {
        fs::read_dir(c.dir().join(TMP_DIR))
            .unwrap()
            .next()
            .is_none()
    }

    #[test]
    fn a_verified_blob_is_added_once() {
        let (_d, c) = cache();
        let data = vec![7u8; 600_000];
        let d = Digest::of(&data);
        assert!(!c.has(&d, data.len() as u64));
        let mut seen = Vec::new();
        c.insert_from(&d, data.len() as u64, &mut &data[..], |n| seen.push(n))
            .unwrap();
        assert!(c.has(&d, data.len() as u64));
        assert_eq!(seen.last(), Some(&(data.len() as u64)));
        assert_eq!(fs::read(c.path(&d)).unwrap(), data);
        assert_eq!(c.list().unwrap(), vec![(d.clone(), data.len() as u64)]);
        assert_eq!(c.read_small(&d, 1 << 20).unwrap(), data);
        assert!(matches!(
            c.read_small(&d, 10),
            Err(BlobError::TooLarge { .. })
        ));
        assert!(tmp_is_empty(&c));
    }

    #[test]
    fn wrong_digest_truncated_and_oversized_blobs_leave_nothing() {
        let (_d, c) = cache();
        let data = b"hello world".to_vec();
        let d = Digest::of(&data);
        let n = data.len() as u64;
        // Same size, different content.
        let e = c
            .insert_from(&d, n, &mut &b"HELLO WORLD"[..], |_| {})
            .unwrap_err();
        assert!(matches!(e, BlobError::DigestMismatch { .. }), "{e}");
        assert!(e.to_string().contains("wrong content"), "{e}");
        let e = c.insert_from(&d, n, &mut &data[..5], |_| {}).unwrap_err();
        assert!(
            e.to_string().contains("truncated: 5 of the 11 bytes"),
            "{e}"
        );
        let e = c
            .insert_from(&d, n - 1, &mut &data[..], |_| {})
            .unwrap_err();
        assert!(matches!(e, BlobError::TooLarge { .. }), "{e}");
        assert!(!c.has(&d, n));
        assert!(c.list().unwrap().is_empty());
        assert!(tmp_is_empty(&c));
    }

    #[test]
    fn open_removes_temporaries_of_dead_processes_only() {
        let (d, c) = cache();
        let tmp = c.dir().join(TMP_DIR);
        fs::write(tmp.join("abcd-999999999-0"), b"x").unwrap();
        let mine = tmp.join(format!("abcd-{}-0", std::process::id()));
        fs::write(&mine, b"x").unwrap();
        let c = BlobCache::open(d.path()).unwrap();
        let left: Vec<_> = fs::read_dir(c.dir().join(TMP_DIR))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(left, vec![mine]);
    }
}
