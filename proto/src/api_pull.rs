//! hearth's HTTP bodies for OCI images: `POST /v1/images/pull` (from a registry) and
//! `POST /v1/images/import` (a `docker save` / OCI archive or an OCI layout directory on
//! hearthd's host). Both answer with NDJSON: [`PullUpdate`] lines, the last one the image or
//! the error.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::api::ErrorDetail;
use crate::api_images::ImageInfo;
use crate::image_config::InitMode;

/// `POST /v1/images/pull`: pull `reference` and build root filesystem image `name` from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullImage {
    /// The image reference, e.g. `alpine:3.20` or `ghcr.io/org/app@sha256:...`.
    pub reference: String,
    /// The image's name in hearth's store.
    pub name: String,
    /// The filesystem's size in bytes; default: content plus headroom.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::api::whole::optional"
    )]
    pub size: Option<u64>,
    /// `os/arch[/variant]` to choose from a multi-platform image; default `linux/amd64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Speak plain HTTP to this reference's registry (and only it).
    #[serde(default)]
    pub insecure: bool,
    /// Which init the guest boots; default `hearth` (the agent runs the image's command).
    #[serde(default)]
    pub init: InitMode,
}

/// What an archive import reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveKind {
    /// A `docker save` tar, an OCI archive tar, or an OCI layout directory (told apart by
    /// their content).
    Oci,
}

/// `POST /v1/images/import`: build root filesystem image `name` from the archive at `path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportArchive {
    /// The image's name in hearth's store.
    pub name: String,
    /// What `path` holds.
    pub kind: ArchiveKind,
    /// Absolute path of the archive file or layout directory, as hearthd sees it.
    pub path: PathBuf,
    /// Which image of several in it: an OCI layout's ref name (`v1`), a `docker save`
    /// `RepoTags` entry (`repo:tag`) or tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The filesystem's size in bytes; default: content plus headroom.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::api::whole::optional"
    )]
    pub size: Option<u64>,
    /// `os/arch[/variant]` to choose from a multi-platform image; default `linux/amd64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Which init the guest boots; default `hearth`.
    #[serde(default)]
    pub init: InitMode,
}

/// A layer as a pull reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerStatus {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Its size (compressed), bytes.
    pub size: u64,
    /// Already in hearthd's blob cache: it will not be downloaded.
    pub cached: bool,
}

/// One line of a pull's or archive import's NDJSON answer: progress lines, then exactly one
/// `image` or `error` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullUpdate {
    /// The manifest was found: what will be fetched.
    Resolved {
        /// The reference (canonical form) or the archive's path.
        reference: String,
        /// The image manifest's digest.
        manifest_digest: String,
        /// The layers, bottom first.
        layers: Vec<LayerStatus>,
    },
    /// Bytes of one layer received so far.
    Layer {
        /// The layer's digest.
        digest: String,
        /// Bytes received.
        done: u64,
        /// Its size.
        total: u64,
    },
    /// Bytes of an archive read so far (an import of a tar).
    Reading {
        /// Bytes read.
        done: u64,
        /// The archive's size.
        total: u64,
    },
    /// Every blob is verified; the root filesystem is being built.
    Building,
    /// Done: the image (boxed: it is much larger than the progress lines).
    Image(Box<ImageInfo>),
    /// Failed; no image was stored.
    Error(ErrorDetail),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_take_defaults_and_refuse_unknown_fields() {
        let p: PullImage = serde_json::from_str(r#"{"reference":"alpine","name":"a"}"#).unwrap();
        assert_eq!(
            (p.size, p.insecure, p.init),
            (None, false, InitMode::Hearth)
        );
        assert!(
            serde_json::from_str::<PullImage>(r#"{"reference":"a","name":"a","x":1}"#).is_err()
        );
        let i: ImportArchive =
            serde_json::from_str(r#"{"name":"a","kind":"oci","path":"/a.tar"}"#).unwrap();
        assert_eq!(i.kind, ArchiveKind::Oci);
        assert!(serde_json::from_str::<ImportArchive>(
            r#"{"name":"a","kind":"rootfs","path":"/a"}"#
        )
        .is_err());
        let line = serde_json::to_string(&PullUpdate::Layer {
            digest: "sha256:x".into(),
            done: 1,
            total: 2,
        })
        .unwrap();
        assert_eq!(
            line,
            r#"{"layer":{"digest":"sha256:x","done":1,"total":2}}"#
        );
    }
}
