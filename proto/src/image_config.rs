//! What hearth keeps of an OCI image, as the API reports it (`GET /v1/images/{name}`): where it
//! came from, its config (how to run it) and which init the guest boots. The image store's
//! `meta.json` spells these the same way.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What hearth keeps of an image's config blob: how to run it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    /// `Entrypoint`: the command's first words.
    pub entrypoint: Vec<String>,
    /// `Cmd`: default arguments (or the command, without an entrypoint).
    pub cmd: Vec<String>,
    /// `Env`: `KEY=VALUE` strings.
    pub env: Vec<String>,
    /// `WorkingDir`, absolute; `None` means `/`.
    pub working_dir: Option<String>,
    /// `User`: `uid[:gid]` or names resolved in the image's `/etc/passwd`.
    pub user: Option<String>,
    /// `ExposedPorts`, e.g. `80/tcp`, sorted.
    pub exposed_ports: Vec<String>,
    /// `Labels`.
    pub labels: BTreeMap<String, String>,
}

/// Which program the guest kernel starts as PID 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitMode {
    /// hearth's agent, injected as `/sbin/hearth-init`, runs the image's command; the boot
    /// arguments get `init=/sbin/hearth-init`.
    #[default]
    Hearth,
    /// The image's own init (e.g. systemd); the boot arguments are left alone.
    Image,
}

impl InitMode {
    /// `hearth` or `image`.
    pub fn as_str(self) -> &'static str {
        match self {
            InitMode::Hearth => "hearth",
            InitMode::Image => "image",
        }
    }
}

impl std::str::FromStr for InitMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hearth" => Ok(InitMode::Hearth),
            "image" => Ok(InitMode::Image),
            _ => Err(format!("unknown init {s:?} (hearth or image)")),
        }
    }
}

/// Where an image built from an OCI image came from, and how it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciSource {
    /// The reference it was pulled or imported as, e.g. `docker.io/library/alpine:3.20` or
    /// the archive's path.
    pub reference: String,
    /// The manifest's digest, `sha256:<hex>`.
    pub manifest_digest: String,
    /// The image's config.
    #[serde(default)]
    pub config: ImageConfig,
    /// The init the filesystem was built for.
    #[serde(default)]
    pub init: InitMode,
    /// A digest of everything the filesystem was built from (manifest, init, size, headroom,
    /// the injected agent): another pull with the same key reuses this image's file instead of
    /// building it again. Absent on images recorded before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_key: Option<String>,
}
