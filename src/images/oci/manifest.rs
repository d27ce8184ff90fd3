//! Image manifests and indexes (OCI and Docker v2 schema 2), reduced to what a pull needs:
//! the config and layer descriptors of a manifest, the platform entries of an index. Parsing
//! checks every digest's syntax, the media types hearth can unpack, and the limits (layer
//! count, layer and total sizes) before anything is fetched.

use std::fmt;

use serde::Deserialize;

use super::digest::Digest;
use super::limits::OciLimits;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (a multi-platform index).
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Every manifest media type a pull accepts, for the `Accept` header.
pub const ACCEPTED: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// Layer media types hearth unpacks (uncompressed, gzip, zstd; OCI and Docker names).
pub const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
];

/// Errors in a manifest or index.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON of a manifest or index.
    #[error("Malformed {what}: {source}")]
    Malformed {
        /// "manifest", "index"...
        what: &'static str,
        /// The parser's message.
        source: serde_json::Error,
    },
    /// A schema or media type hearth does not handle.
    #[error("Unsupported {what}: {media_type}")]
    Unsupported {
        /// "manifest media type", "layer media type"...
        what: &'static str,
        /// The type found.
        media_type: String,
    },
    /// A bound in [`OciLimits`] was passed.
    #[error("Image exceeds a limit: {what} is {value}, at most {limit} allowed")]
    Limit {
        /// Which bound.
        what: &'static str,
        /// The image's value.
        value: u64,
        /// The bound.
        limit: u64,
    },
    /// The platform string is not `os/arch[/variant]`.
    #[error("Invalid platform {0:?}: expected os/arch[/variant], e.g. linux/amd64")]
    BadPlatform(String),
    /// No entry of the index is for the platform wanted.
    #[error("The image has no {wanted} variant (it has: {available})")]
    NoPlatform {
        /// The platform asked for (`os/arch[/variant]`).
        wanted: String,
        /// What the index offers.
        available: String,
    },
}

/// A platform: `linux/amd64`, `linux/arm64/v8`...
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`...
    pub architecture: String,
    /// `v8`, `v7`... when the architecture has variants.
    #[serde(default)]
    pub variant: Option<String>,
}

impl Default for Platform {
    fn default() -> Self {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl Platform {
    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Self, ManifestError> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &&str| {
            !p.is_empty()
                && p.len() <= 32
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(ok) {
            return Err(ManifestError::BadPlatform(s.chars().take(100).collect()));
        }
        Ok(Platform {
            os: parts[0].into(),
            architecture: parts[1].into(),
            variant: parts.get(2).map(|v| (*v).to_owned()),
        })
    }

    /// Whether an index entry for `entry` serves this platform (a variant asked for must
    /// match; none asked for accepts any).
    fn accepts(&self, entry: &Platform) -> bool {
        self.os == entry.os
            && self.architecture == entry.architecture
            && (self.variant.is_none() || self.variant == entry.variant)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A content descriptor: what a blob or manifest is, its digest and size.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Its media type.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// For an index entry: the platform it is for.
    #[serde(default)]
    pub platform: Option<Platform>,
    /// Annotations (an OCI layout names its images with `org.opencontainers.image.ref.name`).
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// The annotation naming an image in an OCI layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An image manifest: the config blob and the layers, bottom first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageManifest {
    /// The config blob.
    pub config: Descriptor,
    /// The layers, applied in order.
    pub layers: Vec<Descriptor>,
}

/// What a manifest request returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A single-platform image.
    Manifest(ImageManifest),
    /// A multi-platform index: its entries.
    Index(Vec<Descriptor>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

/// Parses a manifest or index and checks it against `limits`.
pub fn parse(bytes: &[u8], limits: &OciLimits) -> Result<Parsed, ManifestError> {
    if bytes.len() as u64 > limits.max_manifest_bytes {
        return Err(ManifestError::Limit {
            what: "the manifest's size",
            value: bytes.len() as u64,
            limit: limits.max_manifest_bytes,
        });
    }
    let raw: Raw = serde_json::from_slice(bytes).map_err(|source| ManifestError::Malformed {
        what: "manifest",
        source,
    })?;
    if raw.schema_version != 2 {
        return Err(ManifestError::Unsupported {
            what: "manifest schema version",
            media_type: raw.schema_version.to_string(),
        });
    }
    match raw.media_type.as_deref() {
        None | Some(OCI_MANIFEST | OCI_INDEX | DOCKER_MANIFEST | DOCKER_LIST) => {}
        Some(other) => {
            return Err(ManifestError::Unsupported {
                what: "manifest media type",
                media_type: other.into(),
            })
        }
    }
    match (raw.manifests, raw.config, raw.layers) {
        (Some(entries), None, None) => {
            if entries.len() > 1024 {
                return Err(ManifestError::Limit {
                    what: "the index's entry count",
                    value: entries.len() as u64,
                    limit: 1024,
                });
            }
            Ok(Parsed::Index(entries))
        }
        (None, Some(config), Some(layers)) => {
            check_image(&config, &layers, limits)?;
            Ok(Parsed::Manifest(ImageManifest { config, layers }))
        }
        _ => Err(ManifestError::Unsupported {
            what: "manifest shape",
            media_type: "neither an image manifest (config, layers) nor an index (manifests)"
                .into(),
        }),
    }
}

/// Checks a manifest's config and layers: media types hearth unpacks, and the limits.
pub fn check_image(
    config: &Descriptor,
    layers: &[Descriptor],
    limits: &OciLimits,
) -> Result<(), ManifestError> {
    let limit = |what, value: u64, limit: u64| {
        if value > limit {
            Err(ManifestError::Limit { what, value, limit })
        } else {
            Ok(())
        }
    };
    limit("the config's size", config.size, limits.max_config_bytes)?;
    limit(
        "the layer count",
        layers.len() as u64,
        limits.max_layers as u64,
    )?;
    let mut total: u64 = 0;
    for layer in layers {
        if !LAYER_TYPES.contains(&layer.media_type.as_str()) {
            return Err(ManifestError::Unsupported {
                what: "layer media type",
                media_type: layer.media_type.clone(),
            });
        }
        limit("a layer's size", layer.size, limits.max_layer_bytes)?;
        total = total.saturating_add(layer.size);
    }
    limit("the layers' total size", total, limits.max_total_bytes)
}

/// The entry of `index` for `wanted`: the first that matches.
pub fn choose<'a>(
    index: &'a [Descriptor],
    wanted: &Platform,
) -> Result<&'a Descriptor, ManifestError> {
    index
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| wanted.accepts(p)))
        .ok_or_else(|| ManifestError::NoPlatform {
            wanted: wanted.to_string(),
            available: {
                let list: Vec<String> = index
                    .iter()
                    .filter_map(|d| d.platform.as_ref().map(ToString::to_string))
                    .collect();
                if list.is_empty() {
                    "no platform entries".into()
                } else {
                    list.join(", ")
                }
            },
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn desc(media_type: &str, content: &[u8]) -> String {
        format!(
            r#"{{"mediaType":"{media_type}","digest":"{}","size":{}}}"#,
            Digest::of(content),
            content.len()
        )
    }

    fn manifest(layers: &[String]) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":[{}]}}"#,
            desc("application/vnd.oci.image.config.v1+json", b"{}"),
            layers.join(",")
        )
    }

    #[test]
    fn parses_a_manifest_and_checks_limits() {
        let l = desc("application/vnd.oci.image.layer.v1.tar+gzip", b"layer");
        let m = manifest(&[l.clone(), l.clone()]);
        let Parsed::Manifest(img) = parse(m.as_bytes(), &OciLimits::default()).unwrap() else {
            panic!("not a manifest")
        };
        assert_eq!(img.layers.len(), 2);
        assert_eq!(img.layers[0].size, 5);
        let tight = OciLimits {
            max_layers: 1,
            ..OciLimits::default()
        };
        let e = parse(m.as_bytes(), &tight).unwrap_err();
        assert!(e.to_string().contains("layer count is 2, at most 1"), "{e}");
        let tight = OciLimits {
            max_total_bytes: 9,
            ..OciLimits::default()
        };
        assert!(parse(m.as_bytes(), &tight).is_err());
        let tight = OciLimits {
            max_manifest_bytes: 10,
            ..OciLimits::default()
        };
        assert!(parse(m.as_bytes(), &tight).is_err());
    }

    #[test]
    fn refuses_unknown_layers_and_bad_digests() {
        let foreign = desc(
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            b"x",
        );
        let e = parse(manifest(&[foreign]).as_bytes(), &OciLimits::default()).unwrap_err();
        assert!(e.to_string().contains("foreign"), "{e}");
        let bad = r#"{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:../x","size":1}"#;
        let e = parse(manifest(&[bad.into()]).as_bytes(), &OciLimits::default()).unwrap_err();
        assert!(e.to_string().contains("Malformed"), "{e}");
        let e = parse(b"{\"schemaVersion\":1}", &OciLimits::default()).unwrap_err();
        assert!(e.to_string().contains("schema"), "{e}");
    }

    #[test]
    fn chooses_the_platform_from_an_index() {
        let entry = |arch: &str, variant: Option<&str>, content: &[u8]| {
            let v = variant.map_or(String::new(), |v| format!(r#","variant":"{v}""#));
            format!(
                r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"{arch}"{v}}}}}"#,
                Digest::of(content)
            )
        };
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{},{}]}}"#,
            entry("arm64", Some("v8"), b"arm"),
            entry("amd64", None, b"amd")
        );
        let Parsed::Index(entries) = parse(index.as_bytes(), &OciLimits::default()).unwrap() else {
            panic!("not an index")
        };
        let amd = choose(&entries, &Platform::default()).unwrap();
        assert_eq!(amd.digest, Digest::of(b"amd"));
        let arm = choose(&entries, &Platform::parse("linux/arm64").unwrap()).unwrap();
        assert_eq!(arm.digest, Digest::of(b"arm"));
        let e = choose(&entries, &Platform::parse("linux/s390x").unwrap()).unwrap_err();
        assert!(
            e.to_string()
                .contains("no linux/s390x variant (it has: linux/arm64/v8, linux/amd64)"),
            "{e}"
        );
        for bad in ["linux", "linux/", "a/b/c/d", "linux/amd 64"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }
}
