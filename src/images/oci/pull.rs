//! The orchestration of a pull (and, sharing its second half, of an archive import):
//! resolve the manifest for the platform wanted, fetch the config and the layers that are not
//! cached yet into the blob cache (each verified against the manifest), build the root
//! filesystem from them ([`super::rootfs::build_rootfs`]), record it in the image store
//! ([`ImageStore::commit_built`]), and note which blobs it used ([`super::gc::record`]).
//!
//! All or nothing: on any failure no image exists and the build directory is gone; blobs
//! already verified stay in the cache (a retry need not download them; garbage collection
//! removes them if no image comes to use them). The blob cache is held shared throughout, so
//! a collection never removes a blob this pull is about to use.
//!
//! A pull is async (the registry client is) but does blocking file work and builds the
//! filesystem in line: run it on a thread of its own with a current-thread runtime, as the
//! API does, not on a shared executor.

use std::path::{Path, PathBuf};

use hearth_proto::api_pull::{LayerStatus, PullUpdate};
use hearth_proto::image_config::{InitMode, OciSource};

use super::archive::{self, ArchiveError};
use super::auth::{self, AuthError};
use super::blobs::{BlobCache, BlobError};
use super::config::{self, ConfigError};
use super::digest::Digest;
use super::gc::{self, ImageRefs};
use super::limits::OciLimits;
use super::manifest::{ImageManifest, ManifestError, Platform};
use super::progress::{LayerProgress, Sink};
use super::reference::{ImageRef, ReferenceError};
use super::registry::{Registry, RegistryError, RegistryOptions};
use super::rootfs::{self, LayerBlob, RootfsError, RootfsOptions};
use crate::images::{ImageMeta, ImageStore, ImagesError};

/// Errors of a pull or archive import.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The reference cannot be used.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// The registry refused or failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The manifest is unusable or out of bounds.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A blob failed verification or could not be stored.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The credentials file is unusable.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The archive is unusable.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The image config is unusable.
    #[error("Bad image config: {0}")]
    Config(#[from] ConfigError),
    /// The image is for another platform than the one wanted.
    #[error("The image is for {found}, not {wanted}")]
    WrongPlatform {
        /// The platform asked for (`os/arch[/variant]`).
        wanted: String,
        /// What the image's config says.
        found: String,
    },
    /// Building the root filesystem failed.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    /// The image store refused or failed.
    #[error(transparent)]
    Images(#[from] ImagesError),
}

impl PullError {
    /// The message with its causes (`outer: cause: cause`), for users: the API's error line,
    /// hearthctl.
    pub fn full_message(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            let text = e.to_string();
            // `transparent` variants repeat their source's message.
            if !out.ends_with(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            source = e.source();
        }
        out
    }

    /// A stable machine-readable code for the API's error line.
    pub fn code(&self) -> &'static str {
        match self {
            PullError::Reference(_) => "invalid_field",
            PullError::Registry(RegistryError::Unauthorized { .. }) => "unauthorized",
            PullError::Registry(RegistryError::NotFound { .. }) => "not_found",
            PullError::Registry(RegistryError::Blob(_)) | PullError::Blob(_) => "bad_blob",
            PullError::Registry(_) => "registry_error",
            PullError::Manifest(_) | PullError::WrongPlatform { .. } => "bad_image",
            PullError::Config(_) | PullError::Archive(_) => "bad_image",
            PullError::Auth(_) => "bad_credentials",
            PullError::Rootfs(_) => "build_failed",
            PullError::Images(ImagesError::Exists { .. }) => "conflict",
            PullError::Images(ImagesError::InvalidName { .. }) => "invalid_field",
            PullError::Images(_) => "store_error",
        }
    }
}

/// How hearthd reaches registries and builds images: its `[images]` settings.
#[derive(Debug, Clone)]
pub struct OciSettings {
    /// Registries (`host[:port]`) spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// A Docker `config.json` with registry credentials.
    pub credentials: Option<PathBuf>,
    /// Bounds on manifests, configs and layers.
    pub limits: OciLimits,
    /// How root filesystems are built (`size` and `init` are set per image).
    pub rootfs: RootfsOptions,
}

/// What one pull or import asks for.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// The platform to choose from an index.
    pub platform: Platform,
    /// Plain HTTP to this reference's registry.
    pub insecure: bool,
    /// The filesystem's size, bytes; `None`: content plus headroom.
    pub size: Option<u64>,
    /// Which init the guest boots.
    pub init: InitMode,
}

/// Pulls and imports OCI images into one image store.
#[derive(Debug, Clone)]
pub struct Puller {
    store: ImageStore,
    cache: BlobCache,
    settings: OciSettings,
}

/// An image whose blobs are all in the cache, verified: what the build needs.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The reference (or archive path) it came from.
    pub source: String,
    /// The image manifest's digest.
    pub manifest_digest: Digest,
    /// The manifest.
    pub manifest: ImageManifest,
}

impl Puller {
    /// A puller for `store`, its blob cache in the store's directory.
    pub fn new(store: ImageStore, settings: OciSettings) -> Result<Self, BlobError> {
        let cache = BlobCache::open(store.dir())?;
        Ok(Puller {
            store,
            cache,
            settings,
        })
    }

    /// The blob cache.
    pub fn cache(&self) -> &BlobCache {
        &self.cache
    }

    /// The image store.
    pub fn store(&self) -> &ImageStore {
        &self.store
    }

    /// Removes the cached blobs no image uses.
    pub fn collect_garbage(&self) -> Result<gc::GcReport, BlobError> {
        gc::collect(&self.cache, |name| self.store.get(name).is_ok())
    }

    /// Refuses early (before any download) a name that is taken or invalid.
    pub(crate) fn check_name(&self, name: &str) -> Result<(), PullError> {
        match self.store.get(name) {
            Ok(_) => Err(ImagesError::Exists { name: name.into() }.into()),
            Err(ImagesError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Pulls `reference` from its registry and stores it as root filesystem image `name`.
    #[expect(
        clippy::await_holding_lock,
        reason = "a pull runs on a thread and runtime of its own; only garbage collection, on \
                  other threads, takes the cache's lock exclusively, and it must wait for the pull"
    )]
    pub async fn pull(
        &self,
        reference: &str,
        name: &str,
        opts: &PullOptions,
        progress: Sink<'_>,
    ) -> Result<ImageMeta, PullError> {
        self.check_name(name)?;
        let _shared = self.cache.shared();
        let fetched = self.fetch_unlocked(reference, opts, progress).await?;
        self.build(name, &fetched, opts, progress)
    }

    /// The first half of a pull: resolves `reference` and brings its config and layers into
    /// the blob cache, verified (downloading only those not cached yet).
    #[expect(
        clippy::await_holding_lock,
        reason = "as in pull: a thread and runtime of its own, only GC takes the lock exclusively"
    )]
    pub async fn fetch(
        &self,
        reference: &str,
        opts: &PullOptions,
        progress: Sink<'_>,
    ) -> Result<Fetched, PullError> {
        let _shared = self.cache.shared();
        self.fetch_unlocked(reference, opts, progress).await
    }

    async fn fetch_unlocked(
        &self,
        reference: &str,
        opts: &PullOptions,
        progress: Sink<'_>,
    ) -> Result<Fetched, PullError> {
        let reference = ImageRef::parse(reference)?;
        let credentials = match &self.settings.credentials {
            Some(path) => auth::lookup(path, &reference.registry)?,
            None => None,
        };
        let mut insecure = self.settings.insecure_registries.clone();
        if opts.insecure {
            insecure.push(reference.registry.clone());
        }
        let registry = Registry::new(
            &reference,
            &RegistryOptions {
                insecure,
                credentials,
                limits: self.settings.limits,
            },
        )?;
        let resolved = registry.resolve(&opts.platform).await?;
        let manifest = resolved.manifest;
        progress(self.resolved_event(&reference.to_string(), &resolved.manifest_digest, &manifest));
        let config = &manifest.config;
        if !self.cache.has(&config.digest, config.size) {
            registry.fetch_blob(config, &self.cache, |_| {}).await?;
        }
        for layer in &manifest.layers {
            if self.cache.has(&layer.digest, layer.size) {
                continue;
            }
            let mut thin = LayerProgress::new(&layer.digest, layer.size);
            registry
                .fetch_blob(layer, &self.cache, |done| {
                    if let Some(e) = thin.update(done) {
                        progress(e);
                    }
                })
                .await?;
        }
        Ok(Fetched {
            source: reference.to_string(),
            manifest_digest: resolved.manifest_digest,
            manifest,
        })
    }

    /// Imports the `docker save` / OCI archive or OCI layout directory at `path` as root
    /// filesystem image `name`; `tag` chooses among several images in it (an OCI layout's
    /// `org.opencontainers.image.ref.name`, a `docker save` `RepoTags` entry or its tag).
    pub fn import_archive(
        &self,
        path: &Path,
        tag: Option<&str>,
        name: &str,
        opts: &PullOptions,
        progress: Sink<'_>,
    ) -> Result<ImageMeta, PullError> {
        self.check_name(name)?;
        let _shared = self.cache.shared();
        let resolved = archive::read(
            path,
            tag,
            &self.cache,
            &self.settings.limits,
            &opts.platform,
            |done, total| progress(PullUpdate::Reading { done, total }),
        )?;
        let source = path.display().to_string();
        progress(self.resolved_event(&source, &resolved.manifest_digest, &resolved.manifest));
        let fetched = Fetched {
            source,
            manifest_digest: resolved.manifest_digest,
            manifest: resolved.manifest,
        };
        self.build(name, &fetched, opts, progress)
    }

    /// The `resolved` event: the layers and which are cached.
    pub(crate) fn resolved_event(
        &self,
        source: &str,
        digest: &Digest,
        manifest: &ImageManifest,
    ) -> PullUpdate {
        PullUpdate::Resolved {
            reference: source.into(),
            manifest_digest: digest.to_string(),
            layers: manifest
                .layers
                .iter()
                .map(|l| LayerStatus {
                    digest: l.digest.to_string(),
                    size: l.size,
                    cached: self.cache.has(&l.digest, l.size),
                })
                .collect(),
        }
    }

    /// Builds and stores image `name` from `fetched`, whose blobs are all cached. The caller
    /// holds the cache shared.
    pub(crate) fn build(
        &self,
        name: &str,
        fetched: &Fetched,
        opts: &PullOptions,
        progress: Sink<'_>,
    ) -> Result<ImageMeta, PullError> {
        let manifest = &fetched.manifest;
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if !self.cache.has(&blob.digest, blob.size) {
                return Err(BlobError::Truncated {
                    digest: blob.digest.clone(),
                    got: 0,
                    expected: blob.size,
                }
                .into());
            }
        }
        let config_bytes = self.cache.read_small(
            &manifest.config.digest,
            self.settings.limits.max_config_bytes,
        )?;
        let (image_config, platform) = config::parse_image_config(&config_bytes)?;
        let wanted = &opts.platform;
        if platform.os != wanted.os || platform.architecture != wanted.architecture {
            return Err(PullError::WrongPlatform {
                wanted: wanted.to_string(),
                found: format!("{}/{}", platform.os, platform.architecture),
            });
        }
        progress(PullUpdate::Building);
        let layers: Vec<LayerBlob> = manifest
            .layers
            .iter()
            .map(|l| LayerBlob {
                path: self.cache.path(&l.digest),
                media_type: l.media_type.clone(),
                digest: l.digest.to_string(),
                size: l.size,
            })
            .collect();
        let mut rootfs_opts = self.settings.rootfs.clone();
        rootfs_opts.size = opts.size;
        rootfs_opts.init = opts.init;
        let source = OciSource {
            reference: fetched.source.clone(),
            manifest_digest: fetched.manifest_digest.to_string(),
            config: image_config.clone(),
            init: opts.init,
            build_key: build_key(&fetched.manifest_digest.to_string(), &rootfs_opts),
        };
        let refs = ImageRefs {
            manifest: fetched.manifest_digest.clone(),
            blobs: std::iter::once(&manifest.config)
                .chain(&manifest.layers)
                .map(|d| d.digest.clone())
                .collect(),
        };
        if let Some(meta) = self.reuse(name, &source) {
            let _ = gc::record(&self.cache, name, &refs);
            return Ok(meta);
        }
        let work = self.store.build_dir(name)?;
        let result = (|| {
            let scratch = work.join("tree");
            std::fs::create_dir(&scratch).map_err(|source| ImagesError::Io {
                op: "create",
                path: scratch.clone(),
                source,
            })?;
            let out = work.join("rootfs.ext4");
            rootfs::build_rootfs(&layers, &image_config, &rootfs_opts, &scratch, &out)?;
            let meta = self.store.commit_built(name, &out, source)?;
            Ok::<_, PullError>(meta)
        })();
        remove_tree(&work);
        let meta = result?;
        // The image exists now; without its refs only its cached blobs are at risk.
        let _ = gc::record(&self.cache, name, &refs);
        Ok(meta)
    }
}

impl Puller {
    /// Image `name` as a second name for an image already built from the same inputs
    /// (`source.build_key`), when there is one; `None` means build it.
    fn reuse(&self, name: &str, source: &OciSource) -> Option<ImageMeta> {
        let key = source.build_key.as_deref()?;
        let twin = self.store.list().ok()?.into_iter().find(|m| {
            m.oci
                .as_ref()
                .is_some_and(|o| o.build_key.as_deref() == Some(key))
        })?;
        // Any failure (the twin removed meanwhile, another filesystem) falls back to a build.
        self.store.commit_reused(name, &twin, source.clone()).ok()
    }
}

/// A digest of everything a root filesystem is built from: the manifest (hence every layer
/// and the config), the init mode, the size asked for, the headroom, and the agent injected
/// (its content's digest). `None` when the agent cannot be read: such a build is never reused.
fn build_key(manifest_digest: &str, opts: &RootfsOptions) -> Option<String> {
    use sha2::{Digest as _, Sha256};
    let agent = match opts.init {
        InitMode::Hearth => {
            let bytes = std::fs::read(&opts.agent_bin).ok()?;
            format!("{:x}", Sha256::digest(&bytes))
        }
        InitMode::Image => String::new(),
    };
    let inputs = format!(
        "hearth-rootfs-v1\n{manifest_digest}\n{:?}\n{:?}\n{}\n{}\n{agent}\n",
        opts.init, opts.size, opts.headroom_percent, opts.min_headroom_bytes
    );
    Some(format!("sha256:{:x}", Sha256::digest(inputs.as_bytes())))
}

/// Removes the build directory (the store's temporary, inside its own tree).
#[expect(
    clippy::disallowed_methods,
    reason = "the build directory is the image store's temporary, owned by this pull"
)]
fn remove_tree(dir: &std::path::Path) {
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::oci::rootfs::FlattenLimits;

    fn opts(agent: &Path, init: InitMode, size: Option<u64>) -> RootfsOptions {
        RootfsOptions {
            size,
            headroom_percent: 20,
            min_headroom_bytes: 16 << 20,
            init,
            agent_bin: agent.to_path_buf(),
            limits: FlattenLimits::default(),
        }
    }

    #[test]
    fn the_build_key_changes_with_every_input() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("agent");
        std::fs::write(&agent, b"agent v1").unwrap();
        let m1 = "sha256:11";
        let base = build_key(m1, &opts(&agent, InitMode::Hearth, None)).unwrap();
        assert_eq!(
            build_key(m1, &opts(&agent, InitMode::Hearth, None)).as_ref(),
            Some(&base)
        );
        let mut others = vec![
            build_key("sha256:22", &opts(&agent, InitMode::Hearth, None)),
            build_key(m1, &opts(&agent, InitMode::Image, None)),
            build_key(m1, &opts(&agent, InitMode::Hearth, Some(1 << 30))),
        ];
        let mut more = opts(&agent, InitMode::Hearth, None);
        more.headroom_percent = 50;
        others.push(build_key(m1, &more));
        std::fs::write(&agent, b"agent v2").unwrap();
        others.push(build_key(m1, &opts(&agent, InitMode::Hearth, None)));
        for k in &others {
            assert_ne!(k.as_ref(), Some(&base));
        }
        // An image with its own init does not depend on the agent, even an unreadable one.
        let gone = dir.path().join("gone");
        assert!(build_key(m1, &opts(&gone, InitMode::Image, None)).is_some());
        assert_eq!(build_key(m1, &opts(&gone, InitMode::Hearth, None)), None);
    }
}
