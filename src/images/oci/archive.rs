//! Importing images from files on hearthd's host: a `docker save` tar (its `manifest.json`,
//! legacy `<id>/layer.tar` layers or OCI blobs), an OCI archive (a tar of an OCI layout), or
//! an OCI layout directory (`oci-layout`, `index.json`, `blobs/sha256/`). They are told apart
//! by their content, not their name.
//!
//! A tar is read once, streamed: each file entry goes into the blob cache (an entry at
//! `blobs/sha256/<hex>` must hash to its name; any other file is stored under the digest it
//! hashes to), the small metadata files (`index.json`, `manifest.json`, `oci-layout`) are
//! kept in memory, bounded. A directory is read blob by blob as the manifests name them.
//! Then the image is resolved like a pull (index, platform, manifest; every blob's digest and
//! size checked), and built by [`super::pull::Puller`]'s second half.
//!
//! The archive is untrusted: entry counts, path lengths and metadata sizes are bounded, a
//! path naming a blob may not leave the archive (`..`, absolute, symlinks are not followed
//! out of it), and a blob missing or differing from its manifest is refused.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::blobs::{BlobCache, BlobError};
use super::digest::Digest;
use super::limits::OciLimits;
use super::manifest::{self, Descriptor, ImageManifest, Parsed, Platform};

/// The most entries a tar archive may have.
pub const MAX_ENTRIES: usize = 100_000;
/// The longest path inside an archive, bytes.
pub const MAX_PATH: usize = 4096;
const METADATA: &[&str] = &["index.json", "manifest.json", "oci-layout", "repositories"];
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Errors reading an archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The path cannot be read.
    #[error("Cannot read {path}")]
    Read {
        /// The archive.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Neither an OCI layout nor a `docker save` archive.
    #[error("{path} is not an OCI layout, OCI archive or docker-save archive: {reason}")]
    NotAnArchive {
        /// The archive.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// Something in the archive is malformed or out of bounds.
    #[error("Malformed archive {path}: {reason}")]
    Malformed {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A blob the manifest names is absent.
    #[error("Archive {path} lacks {what}")]
    Missing {
        /// The archive.
        path: PathBuf,
        /// The blob or file.
        what: String,
    },
    /// The manifest or index is unusable.
    #[error("Archive {path}: {source}")]
    Manifest {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        source: manifest::ManifestError,
    },
    /// A blob failed verification or could not be stored.
    #[error("Archive {path}: {source}")]
    Blob {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        source: BlobError,
    },
}

/// An archive's image, its blobs in the cache (verified).
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The manifest's digest (for a legacy `docker save`, which has no manifest blob: the
    /// config's digest, the image ID).
    pub manifest_digest: Digest,
    /// The manifest.
    pub manifest: ImageManifest,
}

/// Where an archive's files are.
enum Files {
    /// A tar already streamed into the cache: path -> (digest, size), symlinks, metadata.
    Tar {
        blobs: HashMap<String, (Digest, u64)>,
        links: HashMap<String, String>,
        metadata: HashMap<String, Vec<u8>>,
    },
    /// A directory.
    Dir(PathBuf),
}

struct Archive<'a> {
    path: PathBuf,
    files: Files,
    cache: &'a BlobCache,
    limits: OciLimits,
}

/// Reads the archive or layout at `path` into `cache` and resolves its image for
/// `platform`.
pub fn read(
    path: &Path,
    tag: Option<&str>,
    cache: &BlobCache,
    limits: &OciLimits,
    platform: &Platform,
    mut progress: impl FnMut(u64, u64),
) -> Result<Resolved, ArchiveError> {
    let read_err = |source| ArchiveError::Read {
        path: path.into(),
        source,
    };
    let md = fs::symlink_metadata(path).map_err(read_err)?;
    let files = if md.is_dir() {
        Files::Dir(path.to_path_buf())
    } else if md.is_file() {
        let file = File::open(path).map_err(read_err)?;
        let total = md.len();
        let counted = Counted {
            inner: file,
            done: 0,
            total,
            progress: &mut progress,
        };
        stream_tar(path, counted, cache, limits)?
    } else {
        return Err(ArchiveError::NotAnArchive {
            path: path.into(),
            reason: "neither a regular file nor a directory".into(),
        });
    };
    let archive = Archive {
        path: path.into(),
        files,
        cache,
        limits: *limits,
    };
    archive.resolve(tag, platform)
}

/// A reader that reports how far it got.
struct Counted<'p, R, P: FnMut(u64, u64)> {
    inner: R,
    done: u64,
    total: u64,
    progress: &'p mut P,
}

impl<R: Read, P: FnMut(u64, u64)> Read for Counted<'_, R, P> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let before = self.done >> 20;
        self.done += n as u64;
        if self.done >> 20 != before || n == 0 {
            (self.progress)(self.done, self.total);
        }
        Ok(n)
    }
}

/// A path inside an archive, normalised (`./a//b` -> `a/b`); `None` if it leaves the root.
fn clean(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

fn stream_tar(
    path: &Path,
    input: impl Read,
    cache: &BlobCache,
    limits: &OciLimits,
) -> Result<Files, ArchiveError> {
    let malformed = |reason: String| ArchiveError::Malformed {
        path: path.into(),
        reason,
    };
    let mut blobs = HashMap::new();
    let mut links = HashMap::new();
    let mut metadata = HashMap::new();
    let mut tar = tar::Archive::new(input);
    let entries = tar.entries().map_err(|e| malformed(e.to_string()))?;
    for (i, entry) in entries.enumerate() {
        if i >= MAX_ENTRIES {
            return Err(malformed(format!("more than {MAX_ENTRIES} entries")));
        }
        let mut entry = entry.map_err(|e| malformed(format!("entry {i}: {e}")))?;
        let raw = entry.path_bytes();
        if raw.len() > MAX_PATH {
            return Err(malformed(format!(
                "entry {i}: path longer than {MAX_PATH} bytes"
            )));
        }
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir() || kind.is_pax_global_extensions() {
            continue;
        }
        let Some(name) = clean(&raw) else {
            return Err(malformed(format!("entry {raw:?} leaves the archive")));
        };
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()
                .ok()
                .flatten()
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            // A symlink is relative to its directory, a hard link to the archive's root.
            let joined = if kind.is_symlink() {
                match name.rsplit_once('/') {
                    Some((dir, _)) => format!("{dir}/{target}"),
                    None => target,
                }
            } else {
                target
            };
            if let Some(t) = clean(&joined) {
                links.insert(name, t);
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let size = entry.size();
        if METADATA.contains(&name.as_str()) {
            if size > limits.max_manifest_bytes {
                return Err(malformed(format!(
                    "{name} is {size} bytes, more than {}",
                    limits.max_manifest_bytes
                )));
            }
            let mut body = Vec::with_capacity(size as usize);
            entry
                .read_to_end(&mut body)
                .map_err(|e| malformed(format!("{name}: {e}")))?;
            metadata.insert(name, body);
            continue;
        }
        let blob_err = |source| ArchiveError::Blob {
            path: path.into(),
            source,
        };
        let named = name
            .strip_prefix("blobs/sha256/")
            .and_then(Digest::from_hex);
        let digest = match named {
            Some(d) => {
                if !cache.has(&d, size) {
                    cache
                        .insert_from(&d, size, &mut entry, |_| {})
                        .map_err(blob_err)?;
                }
                d
            }
            None => cache.insert_hashing(size, &mut entry).map_err(blob_err)?,
        };
        blobs.insert(name, (digest, size));
    }
    Ok(Files::Tar {
        blobs,
        links,
        metadata,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    layers: Vec<String>,
    #[serde(default)]
    repo_tags: Vec<String>,
}

impl Archive<'_> {
    fn malformed(&self, reason: impl Into<String>) -> ArchiveError {
        ArchiveError::Malformed {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    fn missing(&self, what: impl Into<String>) -> ArchiveError {
        ArchiveError::Missing {
            path: self.path.clone(),
            what: what.into(),
        }
    }

    /// A metadata file at the archive's root.
    fn metadata(&self, name: &str) -> Result<Option<Vec<u8>>, ArchiveError> {
        match &self.files {
            Files::Tar { metadata, .. } => Ok(metadata.get(name).cloned()),
            Files::Dir(dir) => {
                let p = dir.join(name);
                match open_inside(&p) {
                    Ok(f) => {
                        let mut body = Vec::new();
                        f.take(self.limits.max_manifest_bytes + 1)
                            .read_to_end(&mut body)
                            .map_err(|source| ArchiveError::Read { path: p, source })?;
                        if body.len() as u64 > self.limits.max_manifest_bytes {
                            return Err(self.malformed(format!("{name} is too large")));
                        }
                        Ok(Some(body))
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                    Err(source) => Err(ArchiveError::Read { path: p, source }),
                }
            }
        }
    }

    /// Makes sure blob `desc` is in the cache, verified.
    fn ensure(&self, desc: &Descriptor) -> Result<(), ArchiveError> {
        if self.cache.has(&desc.digest, desc.size) {
            return Ok(());
        }
        match &self.files {
            Files::Tar { .. } => {
                Err(self.missing(format!("blob {} ({} bytes)", desc.digest, desc.size)))
            }
            Files::Dir(dir) => {
                let p = dir.join("blobs/sha256").join(desc.digest.hex());
                let mut f = open_inside(&p).map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound => self.missing(format!("blob {}", desc.digest)),
                    _ => ArchiveError::Read {
                        path: p.clone(),
                        source: e,
                    },
                })?;
                self.cache
                    .insert_from(&desc.digest, desc.size, &mut f, |_| {})
                    .map_err(|source| ArchiveError::Blob {
                        path: self.path.clone(),
                        source,
                    })
            }
        }
    }

    /// The blob a `docker save` manifest names by path: its digest and size.
    fn by_path(&self, name: &str) -> Result<(Digest, u64), ArchiveError> {
        let Some(mut name) = clean(name) else {
            return Err(self.malformed(format!("{name:?} leaves the archive")));
        };
        match &self.files {
            Files::Tar { blobs, links, .. } => {
                for _ in 0..16 {
                    if let Some(found) = blobs.get(&name) {
                        return Ok(found.clone());
                    }
                    match links.get(&name) {
                        Some(target) => name.clone_from(target),
                        None => break,
                    }
                }
                Err(self.missing(name))
            }
            Files::Dir(dir) => {
                let p = dir.join(&name);
                let mut f = open_inside(&p).map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound => self.missing(name.clone()),
                    _ => ArchiveError::Read {
                        path: p.clone(),
                        source: e,
                    },
                })?;
                let size = f
                    .metadata()
                    .map_err(|source| ArchiveError::Read {
                        path: p.clone(),
                        source,
                    })?
                    .len();
                let d = self.cache.insert_hashing(size, &mut f).map_err(|source| {
                    ArchiveError::Blob {
                        path: self.path.clone(),
                        source,
                    }
                })?;
                Ok((d, size))
            }
        }
    }

    fn parse(&self, bytes: &[u8]) -> Result<Parsed, ArchiveError> {
        manifest::parse(bytes, &self.limits).map_err(|source| ArchiveError::Manifest {
            path: self.path.clone(),
            source,
        })
    }

    fn resolve(&self, tag: Option<&str>, platform: &Platform) -> Result<Resolved, ArchiveError> {
        if let Some(index) = self.metadata("index.json")? {
            return self.resolve_oci(&index, tag, platform);
        }
        if let Some(list) = self.metadata("manifest.json")? {
            return self.resolve_docker(&list, tag);
        }
        Err(ArchiveError::NotAnArchive {
            path: self.path.clone(),
            reason: "it has neither index.json nor manifest.json".into(),
        })
    }

    /// An OCI layout: `index.json` -> (an index ->) a manifest.
    fn resolve_oci(
        &self,
        index: &[u8],
        tag: Option<&str>,
        platform: &Platform,
    ) -> Result<Resolved, ArchiveError> {
        let mut entries = match self.parse(index)? {
            Parsed::Index(entries) => entries,
            Parsed::Manifest(_) => {
                return Err(self.malformed("index.json is a manifest, not an index"))
            }
        };
        let ref_name = |e: &Descriptor| e.annotations.get(manifest::REF_NAME).cloned();
        if let Some(tag) = tag {
            entries.retain(|e| ref_name(e).as_deref() == Some(tag));
            if entries.is_empty() {
                return Err(self.missing(format!("an image tagged {tag:?} in index.json")));
            }
        } else if entries.len() > 1 && entries.iter().all(|e| e.platform.is_none()) {
            let names: Vec<String> = entries.iter().filter_map(ref_name).collect();
            return Err(self.malformed(format!(
                "index.json holds {} images ({}); choose one with a tag",
                entries.len(),
                names.join(", ")
            )));
        }
        // Two levels at most: index.json may point at an image's own index.
        for _ in 0..2 {
            let entry = match entries.as_slice() {
                [] => return Err(self.malformed("the index lists no image")),
                [one] => one.clone(),
                many => manifest::choose(many, platform)
                    .map_err(|source| ArchiveError::Manifest {
                        path: self.path.clone(),
                        source,
                    })?
                    .clone(),
            };
            if entry.size > self.limits.max_manifest_bytes {
                return Err(self.malformed(format!("manifest {} is too large", entry.digest)));
            }
            self.ensure(&entry)?;
            let body = self
                .cache
                .read_small(&entry.digest, self.limits.max_manifest_bytes)
                .map_err(|source| ArchiveError::Blob {
                    path: self.path.clone(),
                    source,
                })?;
            match self.parse(&body)? {
                Parsed::Manifest(manifest) => {
                    for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
                        self.ensure(blob)?;
                    }
                    return Ok(Resolved {
                        manifest_digest: entry.digest,
                        manifest,
                    });
                }
                Parsed::Index(next) => entries = next,
            }
        }
        Err(self.malformed("indexes nested more than two deep"))
    }

    /// A `docker save` archive: `manifest.json`, one image.
    fn resolve_docker(&self, list: &[u8], tag: Option<&str>) -> Result<Resolved, ArchiveError> {
        let mut images: Vec<DockerEntry> = serde_json::from_slice(list)
            .map_err(|e| self.malformed(format!("manifest.json: {e}")))?;
        if let Some(tag) = tag {
            // RepoTags are `repo:tag`; a bare tag matches any repository's.
            images.retain(|i| {
                i.repo_tags
                    .iter()
                    .any(|t| t == tag || t.rsplit_once(':').is_some_and(|(_, t)| t == tag))
            });
            if images.is_empty() {
                return Err(self.missing(format!("an image tagged {tag:?} in manifest.json")));
            }
        }
        let [image] = images.as_slice() else {
            return Err(self.malformed(format!(
                "manifest.json lists {} images; choose one with a tag",
                images.len()
            )));
        };
        let (config_digest, config_size) = self.by_path(&image.config)?;
        let config = Descriptor {
            media_type: DOCKER_CONFIG.into(),
            digest: config_digest.clone(),
            size: config_size,
            platform: None,
            annotations: std::collections::BTreeMap::new(),
        };
        let mut layers = Vec::new();
        for layer in &image.layers {
            let (digest, size) = self.by_path(layer)?;
            let media_type = self.sniff(&digest)?;
            layers.push(Descriptor {
                media_type: media_type.into(),
                digest,
                size,
                platform: None,
                annotations: std::collections::BTreeMap::new(),
            });
        }
        manifest::check_image(&config, &layers, &self.limits).map_err(|source| {
            ArchiveError::Manifest {
                path: self.path.clone(),
                source,
            }
        })?;
        Ok(Resolved {
            manifest_digest: config_digest,
            manifest: ImageManifest { config, layers },
        })
    }

    /// The media type of a `docker save` layer, from its first bytes (gzip, zstd or a plain
    /// tar: newer Docker versions compress them).
    fn sniff(&self, digest: &Digest) -> Result<&'static str, ArchiveError> {
        let mut head = [0u8; 4];
        let p = self.cache.path(digest);
        let n = File::open(&p)
            .and_then(|mut f| f.read(&mut head))
            .map_err(|source| ArchiveError::Read { path: p, source })?;
        Ok(match &head[..n] {
            [0x1f, 0x8b, ..] => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            [0x28, 0xb5, 0x2f, 0xfd] => "application/vnd.oci.image.layer.v1.tar+zstd",
            _ => "application/vnd.docker.image.rootfs.diff.tar",
        })
    }
}

/// Opens a regular file of a layout directory without following a symlink at its last
/// component (the directory is the operator's; its files may still be a hostile image's).
fn open_inside(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_keeps_paths_inside() {
        assert_eq!(
            clean("./blobs//sha256/ab").as_deref(),
            Some("blobs/sha256/ab")
        );
        assert_eq!(clean("a/../b").as_deref(), Some("b"));
        assert_eq!(clean("../x"), None);
        assert_eq!(clean("/etc/passwd"), None);
        assert_eq!(clean("."), None);
    }
}
