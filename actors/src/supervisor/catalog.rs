//! The supervisor's image *catalog* port: turns the image names a VM spec carries into files.
//! hearthd implements it with its image *store* (`hearth::images::ImageStore`, which imports,
//! checks and removes images); tests use [`StaticImages`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use hearth_proto::api_images::ImageKind;

/// Resolves image names.
///
/// The supervisor resolves a create's images in the same handler that records the VM, so a
/// VM whose images resolved is in every VM list asked for afterwards. An implementation whose
/// images can be removed must serialize removals with `resolve` so that a removal that read
/// the VM list before such a create does not remove the image after it (hearthd's image store
/// does: `ImageStore::begin_removal`).
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
