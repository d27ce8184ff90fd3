//! Disk checkpoints for snapshots: a copy of a VM's root disk as it is at one instant (the VM
//! is paused, so nothing writes it), kept in the snapshot's directory and later used as the
//! base of the disks restored from it. A file disk (`copy` backend) is reflinked where the
//! filesystem shares extents, else copied sparsely; a block device (`dm` backend) is read
//! whole, and runs of zeros are left as holes so the checkpoint stays sparse.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::Path;

use super::copy::clone_or_copy;
use super::layout::DisksDir;
use super::DisksError;

/// Chunk size for copying a block device (whole chunks of zeros stay holes).
const CHUNK: usize = 1 << 20;

/// Copies the disk at `src` (a file or a block device) to the new file `dest`, which must not
/// exist. On error `dest` is removed. Answers the bytes `dest` occupies on the host.
pub fn copy_disk(src: &Path, dest: &Path) -> Result<u64, DisksError> {
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| DisksError::Io { op, path, source }
    };
    let from = File::open(src).map_err(io("open disk", src))?;
    let kind = from
        .metadata()
        .map_err(io("inspect disk", src))?
        .file_type();
    let to = DisksDir::create_new(dest)?;
    let copied = if kind.is_block_device() {
        copy_device(&from, &to).map_err(io("copy disk into", dest))
    } else {
        clone_or_copy(&from, &to)
            .map(|_| ())
            .map_err(io("copy disk into", dest))
    };
    let used = copied.and_then(|()| {
        to.metadata()
            .map(|m| m.blocks() * 512)
            .map_err(io("inspect", dest))
    });
    if used.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    used
}

/// Copies a block device chunk by chunk, skipping chunks of zeros, then sets the length.
fn copy_device(src: &File, dst: &File) -> io::Result<()> {
    let len = (&*src).seek(SeekFrom::End(0))?;
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    while off < len {
        let want = usize::try_from((len - off).min(CHUNK as u64)).unwrap_or(CHUNK);
        src.read_exact_at(&mut buf[..want], off)?;
        if buf[..want].iter().any(|b| *b != 0) {
            dst.write_all_at(&buf[..want], off)?;
        }
        off += want as u64;
    }
    dst.set_len(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_a_file_keeping_data_and_length_and_refuses_an_existing_destination() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("disk.img");
        let f = File::create(&src).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(b"hello", 4 << 20).unwrap();
        let dest = dir.path().join("checkpoint.img");
        let used = copy_disk(&src, &dest).unwrap();
        let copy = std::fs::read(&dest).unwrap();
        assert_eq!(copy.len(), 8 << 20);
        assert_eq!(&copy[4 << 20..(4 << 20) + 5], b"hello");
        assert!(used < 8 << 20, "the copy keeps holes: {used} bytes used");
        let e = copy_disk(&src, &dest).unwrap_err();
        assert!(e.to_string().contains("checkpoint.img"), "{e}");
        // The existing destination is left as it was.
        assert_eq!(std::fs::read(&dest).unwrap(), copy);
    }

    #[test]
    fn a_missing_source_leaves_no_destination() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("c.img");
        let e = copy_disk(&dir.path().join("nope"), &dest).unwrap_err();
        assert!(
            matches!(
                e,
                DisksError::Io {
                    op: "open disk",
                    ..
                }
            ),
            "{e}"
        );
        assert!(!dest.exists());
    }
}
