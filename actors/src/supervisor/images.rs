//! The supervisor's image port: turns the image names a VM spec carries into files. hearthd
//! implements it with its image store (`hearth::images`); tests use [`StaticImages`].

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The two kinds of image a VM boots from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ImageKind {
    /// A guest kernel.
    Kernel,
    /// A base root filesystem.
    Rootfs,
}

impl ImageKind {
    /// `kernel` or `rootfs`.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageKind::Kernel => "kernel",
            ImageKind::Rootfs => "rootfs",
        }
    }
}

/// Resolves image names.
pub trait ImageCatalog {
    /// The file of image `name` of `kind`, or `None` if there is no such image.
    fn resolve(&self, kind: ImageKind, name: &str) -> Option<PathBuf>;
}

/// A fixed name -> path map.
#[derive(Debug, Clone, Default)]
pub struct StaticImages(pub BTreeMap<(ImageKind, String), PathBuf>);

impl ImageCatalog for StaticImages {
    fn resolve(&self, kind: ImageKind, name: &str) -> Option<PathBuf> {
        self.0.get(&(kind, name.to_owned())).cloned()
    }
}
