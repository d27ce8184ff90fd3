//! Reading one layer blob: its compression from its media type, and a metered reader between
//! the decompressor and the tar parser that bounds what the parser may buffer (long names and
//! pax records are read whole into memory by the `tar` crate) and notes where the stream ended.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::rc::Rc;

use super::{LayerBlob, RootfsError};

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (`+gzip`, Docker's `.tar.gzip`).
    Gzip,
    /// zstd (`+zstd`).
    Zstd,
}

impl Compression {
    /// The compression of a layer media type; `None` for a media type that is not a layer.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        let rest = media_type
            .strip_prefix("application/vnd.oci.image.layer.")
            .or_else(|| media_type.strip_prefix("application/vnd.docker.image.rootfs."))?;
        if rest.ends_with("tar+gzip") || rest.ends_with("tar.gzip") {
            Some(Compression::Gzip)
        } else if rest.ends_with("tar+zstd") {
            Some(Compression::Zstd)
        } else if rest.ends_with("tar") {
            Some(Compression::None)
        } else {
            None
        }
    }

    /// The compression a blob's first bytes show (for archives whose manifests carry no media
    /// types, e.g. `docker save`).
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// The largest zstd window accepted (2^27 = 128 MiB, zstd's own default limit): bounds the
/// decoder's memory whatever the frame asks for.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// Opens `layer` and wraps it in the decompressor its media type names.
pub fn open(layer: &LayerBlob) -> Result<Box<dyn Read>, RootfsError> {
    let compression =
        Compression::from_media_type(&layer.media_type).ok_or_else(|| RootfsError::MediaType {
            digest: layer.digest.clone(),
            media_type: layer.media_type.clone(),
        })?;
    let file = File::open(&layer.path).map_err(|source| RootfsError::Io {
        op: "open",
        path: layer.path.clone(),
        source,
    })?;
    Ok(match compression {
        Compression::None => Box::new(BufReader::with_capacity(1 << 16, file)),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))),
        Compression::Zstd => {
            let mut d =
                zstd::stream::read::Decoder::new(file).map_err(|e| RootfsError::Malformed {
                    digest: layer.digest.clone(),
                    reason: format!("zstd: {e}"),
                })?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|e| RootfsError::Malformed {
                    digest: layer.digest.clone(),
                    reason: format!("zstd: {e}"),
                })?;
            Box::new(d)
        }
    })
}

/// What the meter saw, shared with the reader the tar parser owns.
#[derive(Debug, Default)]
pub struct MeterState {
    /// Bytes the parser may still read before the next entry is handed out (`None`: while an
    /// entry's content is being copied, bounded by the content limits instead).
    header_budget: Cell<Option<u64>>,
    /// The header budget ran out.
    pub headers_over: Cell<bool>,
    /// The decompressed stream ended (a read answered 0).
    pub eof: Cell<bool>,
}

impl MeterState {
    /// Until [`Self::content`], the parser may read at most `budget` bytes.
    pub fn headers(&self, budget: u64) {
        self.header_budget.set(Some(budget));
    }

    /// An entry's content is being read: no header budget.
    pub fn content(&self) {
        self.header_budget.set(None);
    }
}

/// The reader between decompressor and parser.
pub struct Meter {
    inner: Box<dyn Read>,
    state: Rc<MeterState>,
}

impl Meter {
    /// Meters `inner`, reporting into `state`.
    pub fn new(inner: Box<dyn Read>, state: Rc<MeterState>) -> Self {
        Meter { inner, state }
    }
}

impl Read for Meter {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.state.eof.set(true);
        }
        if let Some(left) = self.state.header_budget.get() {
            let Some(left) = left.checked_sub(n as u64) else {
                self.state.headers_over.set(true);
                return Err(io::Error::other("tar headers over their size limit"));
            };
            self.state.header_budget.set(Some(left));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        let c = Compression::from_media_type;
        assert_eq!(
            c("application/vnd.oci.image.layer.v1.tar"),
            Some(Compression::None)
        );
        assert_eq!(
            c("application/vnd.oci.image.layer.v1.tar+gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            c("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(Compression::Zstd)
        );
        assert_eq!(
            c("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            c("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            c("application/vnd.docker.image.rootfs.diff.tar"),
            Some(Compression::None)
        );
        assert_eq!(c("application/vnd.oci.image.config.v1+json"), None);
        assert_eq!(c("application/vnd.oci.image.layer.v1.tar+bzip2"), None);
        assert_eq!(c("text/plain"), None);
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"etc/"), Compression::None);
    }

    #[test]
    fn the_meter_bounds_headers_only() {
        let state = Rc::new(MeterState::default());
        let mut m = Meter::new(Box::new(io::Cursor::new(vec![0u8; 100])), state.clone());
        let mut buf = [0u8; 40];
        state.headers(50);
        assert_eq!(m.read(&mut buf).unwrap(), 40);
        assert!(m.read(&mut buf).is_err());
        assert!(state.headers_over.get());
        state.content();
        assert_eq!(m.read(&mut buf).unwrap(), 20);
        assert_eq!(m.read(&mut buf).unwrap(), 0);
        assert!(state.eof.get());
    }
}
