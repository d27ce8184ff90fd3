//! The registry client: manifests and blobs from an OCI distribution registry, over
//! `oci-client` (which does the HTTP, Docker Hub's bearer-token flow and basic auth).
//! hearth decides the rest itself: which manifest of an index to use ([`manifest::choose`]),
//! the bounds on what it reads, and the verification of every blob (streamed into the
//! [`BlobCache`], checked against the manifest's digest and size before it is kept).
//!
//! Plain HTTP is used only for registries explicitly named insecure; every other registry is
//! spoken to over HTTPS with the system's roots.

use std::sync::Once;

use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;

use super::auth::Credentials;
use super::blobs::{BlobCache, BlobError};
use super::digest::Digest;
use super::limits::OciLimits;
use super::manifest::{self, Descriptor, ImageManifest, ManifestError, Parsed, Platform};
use super::reference::ImageRef;

/// Errors talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry refused the credentials (or wants some and none were given).
    #[error("Registry {registry} refused access to {repository}: {detail}")]
    Unauthorized {
        /// The registry.
        registry: String,
        /// The repository asked for.
        repository: String,
        /// What it said.
        detail: String,
    },
    /// The manifest or blob does not exist.
    #[error("Not found at {registry}: {what}")]
    NotFound {
        /// The registry.
        registry: String,
        /// What was asked for.
        what: String,
    },
    /// Any other failure of the request (connection, TLS, HTTP status).
    #[error("Request to registry {registry} failed: {detail}")]
    Request {
        /// The registry.
        registry: String,
        /// The client's message.
        detail: String,
    },
    /// The manifest served is not what it should be.
    #[error("Registry {registry} served a bad manifest for {reference}")]
    Manifest {
        /// The registry.
        registry: String,
        /// The reference.
        reference: String,
        /// What is wrong.
        source: ManifestError,
    },
    /// An index that points at another index.
    #[error("The index entry {digest} for {platform} is itself an index")]
    NestedIndex {
        /// The entry.
        digest: Digest,
        /// The platform chosen (`os/arch[/variant]`).
        platform: String,
    },
    /// A blob failed verification, or could not be stored.
    #[error(transparent)]
    Blob(#[from] BlobError),
}

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Registries (`host[:port]`, as in references) spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// Credentials for the registry of this pull, if any.
    pub credentials: Option<Credentials>,
    /// The bounds of this pull.
    pub limits: OciLimits,
}

/// A resolved image: the manifest for the chosen platform.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The digest of the image manifest (the platform's, when the reference named an index).
    pub manifest_digest: Digest,
    /// The digest of the index the reference named, if it named one.
    pub index_digest: Option<Digest>,
    /// The manifest.
    pub manifest: ImageManifest,
}

/// A client for the registry of one reference.
pub struct Registry {
    client: oci_client::Client,
    auth: RegistryAuth,
    reference: ImageRef,
    limits: OciLimits,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("reference", &self.reference)
            .finish_non_exhaustive()
    }
}

static CRYPTO: Once = Once::new();
/// How long connecting to a registry may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a registry may leave a response without a byte.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

impl Registry {
    /// A client for `reference`'s registry.
    pub fn new(reference: &ImageRef, opts: &RegistryOptions) -> Result<Self, RegistryError> {
        // rustls with ring (not aws-lc: no cmake, shorter builds); installed once per process.
        CRYPTO.call_once(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let insecure: Vec<String> = opts
            .insecure
            .iter()
            .map(|r| match ImageRef::parse(&format!("{r}/x")) {
                Ok(parsed) => parsed.host().to_owned(),
                Err(_) => r.clone(),
            })
            .collect();
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(insecure),
            // A registry that stops answering fails the pull instead of hanging it.
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            ..ClientConfig::default()
        };
        let client = oci_client::Client::try_from(config).map_err(|e| RegistryError::Request {
            registry: reference.registry.clone(),
            detail: e.to_string(),
        })?;
        let auth = match &opts.credentials {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        Ok(Registry {
            client,
            auth,
            reference: reference.clone(),
            limits: opts.limits,
        })
    }

    fn error(&self, what: &str, e: OciDistributionError) -> RegistryError {
        let registry = self.reference.registry.clone();
        match e {
            OciDistributionError::UnauthorizedError { .. } => RegistryError::Unauthorized {
                registry,
                repository: self.reference.repository.clone(),
                detail: "401 Unauthorized".into(),
            },
            OciDistributionError::AuthenticationFailure(detail) => RegistryError::Unauthorized {
                registry,
                repository: self.reference.repository.clone(),
                detail: detail.chars().take(300).collect(),
            },
            OciDistributionError::ServerError { code: 404, .. } => RegistryError::NotFound {
                registry,
                what: what.into(),
            },
            OciDistributionError::RegistryError { envelope, .. }
                if envelope.errors.iter().any(|e| {
                    use oci_client::errors::OciErrorCode as C;
                    matches!(
                        e.code,
                        C::ManifestUnknown | C::BlobUnknown | C::NameUnknown | C::NotFound
                    )
                }) =>
            {
                RegistryError::NotFound {
                    registry,
                    what: what.into(),
                }
            }
            OciDistributionError::RegistryError { envelope, .. }
                if envelope.errors.iter().any(|e| {
                    use oci_client::errors::OciErrorCode as C;
                    matches!(e.code, C::Unauthorized | C::Denied)
                }) =>
            {
                RegistryError::Unauthorized {
                    registry,
                    repository: self.reference.repository.clone(),
                    detail: envelope
                        .errors
                        .iter()
                        .map(|e| e.message.clone())
                        .collect::<Vec<_>>()
                        .join("; "),
                }
            }
            other => RegistryError::Request {
                registry,
                detail: format!("{what}: {other}"),
            },
        }
    }

    /// Fetches the manifest (or index) `reference` names, bounded and checked against the
    /// digest when the reference has one.
    async fn fetch_manifest(
        &self,
        reference: &ImageRef,
    ) -> Result<(Vec<u8>, Digest), RegistryError> {
        let what = reference.to_string();
        let (body, _header_digest) = self
            .client
            .pull_manifest_raw(&reference.to_client(), &self.auth, manifest::ACCEPTED)
            .await
            .map_err(|e| self.error(&what, e))?;
        let bad = |source| RegistryError::Manifest {
            registry: self.reference.registry.clone(),
            reference: what.clone(),
            source,
        };
        if body.len() as u64 > self.limits.max_manifest_bytes {
            return Err(bad(ManifestError::Limit {
                what: "the manifest's size",
                value: body.len() as u64,
                limit: self.limits.max_manifest_bytes,
            }));
        }
        // oci-client verified the body against the reference's digest (when it has one) and
        // the registry's digest header; hearth's digest is always of the bytes received.
        let actual = Digest::of(&body);
        if let Some(want) = &reference.digest {
            if *want != actual {
                return Err(RegistryError::Blob(BlobError::DigestMismatch {
                    expected: want.clone(),
                    actual,
                }));
            }
        }
        Ok((body.to_vec(), actual))
    }

    /// Resolves the reference to the image manifest for `platform` (choosing from an index).
    pub async fn resolve(&self, platform: &Platform) -> Result<Resolved, RegistryError> {
        let parse = |bytes: &[u8], what: String| {
            manifest::parse(bytes, &self.limits).map_err(|source| RegistryError::Manifest {
                registry: self.reference.registry.clone(),
                reference: what,
                source,
            })
        };
        let (body, digest) = self.fetch_manifest(&self.reference).await?;
        match parse(&body, self.reference.to_string())? {
            Parsed::Manifest(manifest) => Ok(Resolved {
                manifest_digest: digest,
                index_digest: None,
                manifest,
            }),
            Parsed::Index(entries) => {
                let entry = manifest::choose(&entries, platform).map_err(|source| {
                    RegistryError::Manifest {
                        registry: self.reference.registry.clone(),
                        reference: self.reference.to_string(),
                        source,
                    }
                })?;
                let pinned = self.reference.with_digest(&entry.digest);
                let (body, manifest_digest) = self.fetch_manifest(&pinned).await?;
                match parse(&body, pinned.to_string())? {
                    Parsed::Manifest(manifest) => Ok(Resolved {
                        manifest_digest,
                        index_digest: Some(digest),
                        manifest,
                    }),
                    Parsed::Index(_) => Err(RegistryError::NestedIndex {
                        digest: entry.digest.clone(),
                        platform: platform.to_string(),
                    }),
                }
            }
        }
    }

    /// Downloads blob `desc` into `cache`, verified; `progress(bytes so far)` after each
    /// chunk. Nothing is kept unless the size and digest match `desc`.
    pub async fn fetch_blob(
        &self,
        desc: &Descriptor,
        cache: &BlobCache,
        mut progress: impl FnMut(u64),
    ) -> Result<(), RegistryError> {
        let what = format!("blob {}", desc.digest);
        let layer = OciDescriptor {
            media_type: desc.media_type.clone(),
            digest: desc.digest.to_string(),
            size: i64::try_from(desc.size).unwrap_or(i64::MAX),
            ..OciDescriptor::default()
        };
        let mut stream = self
            .client
            .pull_blob_stream(&self.reference.to_client(), &layer)
            .await
            .map_err(|e| self.error(&what, e))?;
        let mut writer = cache.writer(&desc.digest, desc.size)?;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => {
                    writer.write(&bytes)?;
                    progress(writer.written());
                }
                // oci-client's own check fails at the end of a blob whose content is wrong,
                // and a connection may drop midway: either way hearth's check below says
                // what came (a short blob, or the digest it really has).
                Err(_) => break,
            }
        }
        writer.finish()?;
        Ok(())
    }
}
