//! Pure checks on image names and image headers: is this a kernel Firecracker can boot (an
//! `x86_64` ELF `vmlinux`, or a `bzImage`), is this an ext4 root filesystem, is this name safe
//! as a file name. Tested on crafted bytes.

use serde::{Deserialize, Serialize};

/// Bytes of an image's beginning the checks need (the ext4 superblock ends at 2048; the
/// 64-bit block count lies inside it).
pub const HEADER_LEN: usize = 4096;

/// Longest image name.
pub const MAX_NAME: usize = 64;

/// Names `/v1/images/{name}` cannot reach: the API's own paths under `/v1/images/`.
const RESERVED_NAMES: [&str; 2] = ["pull", "import"];

/// Why `name` cannot name an image, or `None` when it can: 1-64 of `[A-Za-z0-9._-]`, not
/// starting with `.` (so never `.`, `..`, a hidden or temporary file, nor a path), and not
/// one of the API's paths (`pull`, `import`).
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("empty")
    } else if name.len() > MAX_NAME {
        Some("longer than 64 characters")
    } else if name.starts_with('.') {
        Some("starts with '.'")
    } else if RESERVED_NAMES.contains(&name) {
        // `/v1/images/pull` and `/v1/images/import` are the API's, not an image's.
        Some("reserved: 'pull' and 'import' name API paths")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("only letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    }
}

/// The format of a kernel image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelFormat {
    /// An uncompressed `x86_64` ELF `vmlinux`.
    Elf,
    /// A `bzImage` (Linux x86 boot protocol).
    BzImage,
}

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EM_X86_64: u16 = 62;
const BZIMAGE_MAGIC_AT: usize = 0x202;

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// The kernel format of an image starting with `header`, or why it is not a kernel.
pub fn detect_kernel(header: &[u8]) -> Result<KernelFormat, String> {
    if header.starts_with(ELF_MAGIC) {
        let class = header.get(4).copied();
        if class != Some(ELFCLASS64) {
            return Err(format!(
                "ELF class {class:?} is not 64-bit (expected an x86_64 vmlinux)"
            ));
        }
        if header.get(5).copied() != Some(ELFDATA2LSB) {
            return Err("ELF file is not little-endian (expected an x86_64 vmlinux)".into());
        }
        // `/proc/kcore` is an x86_64 ELF too, "sized" as the kernel's whole address space:
        // importing it would copy terabytes.
        if u16_at(header, 16) == Some(ET_CORE) {
            return Err("ELF core file (such as /proc/kcore), not a kernel".into());
        }
        return match u16_at(header, 18) {
            Some(EM_X86_64) => Ok(KernelFormat::Elf),
            Some(m) => Err(format!(
                "ELF machine {m} is not x86_64 ({EM_X86_64}): wrong architecture"
            )),
            None => Err("ELF header is truncated".into()),
        };
    }
    if header.get(BZIMAGE_MAGIC_AT..BZIMAGE_MAGIC_AT + 4) == Some(b"HdrS") {
        return Ok(KernelFormat::BzImage);
    }
    Err("neither an ELF vmlinux (no \\x7fELF magic) nor a bzImage (no \"HdrS\" at 0x202)".into())
}

/// ELF `e_type` of a core file.
const ET_CORE: u16 = 4;

const SB: usize = 1024;
const EXT_MAGIC: u16 = 0xEF53;
const INCOMPAT_EXTENTS: u32 = 0x40;
const INCOMPAT_64BIT: u32 = 0x80;

/// What the ext4 superblock says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ext4Info {
    /// Filesystem block size in bytes.
    pub block_size: u64,
    /// Filesystem size in bytes (blocks × block size).
    pub fs_bytes: u64,
}

/// Checks that an image of `len` bytes starting with `header` is an ext4 filesystem that fits
/// in the image, or says why not. (Whole sectors are checked by the caller, separately.)
pub fn check_ext4(header: &[u8], len: u64) -> Result<Ext4Info, String> {
    let magic = u16_at(header, SB + 56)
        .ok_or_else(|| format!("{len} bytes is too small for an ext4 superblock"))?;
    if magic != EXT_MAGIC {
        return Err(format!(
            "no ext4 superblock (magic {magic:#06x} at offset 1080, expected 0xef53)"
        ));
    }
    let field = |off| u32_at(header, SB + off).ok_or("ext4 superblock is truncated");
    let log_block = field(0x18)?;
    if log_block > 6 {
        return Err(format!("ext4 block size 2^(10+{log_block}) is invalid"));
    }
    let block_size = 1024u64 << log_block;
    let incompat = field(0x60)?;
    if incompat & INCOMPAT_EXTENTS == 0 {
        return Err("ext2/ext3 filesystem (no extents feature): expected ext4".into());
    }
    let mut blocks = u64::from(field(0x04)?);
    if incompat & INCOMPAT_64BIT != 0 {
        blocks |= u64::from(field(0x150)?) << 32;
    }
    let fs_bytes = blocks.saturating_mul(block_size);
    if fs_bytes > len {
        return Err(format!(
            "truncated: the filesystem is {fs_bytes} bytes but the image only {len}"
        ));
    }
    Ok(Ext4Info {
        block_size,
        fs_bytes,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn elf(class: u8, machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(ELF_MAGIC);
        h[4] = class;
        h[5] = ELFDATA2LSB;
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h
    }

    pub(crate) fn bzimage() -> Vec<u8> {
        let mut h = vec![0u8; 1024];
        h[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
        h[0x202..0x206].copy_from_slice(b"HdrS");
        h
    }

    /// An ext4 superblock for `blocks` blocks of 4 KiB.
    pub(crate) fn ext4(blocks: u64, incompat: u32) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN];
        h[SB + 4..SB + 8].copy_from_slice(&(blocks as u32).to_le_bytes());
        h[SB + 0x18..SB + 0x1c].copy_from_slice(&2u32.to_le_bytes());
        h[SB + 56..SB + 58].copy_from_slice(&EXT_MAGIC.to_le_bytes());
        h[SB + 0x60..SB + 0x64].copy_from_slice(&incompat.to_le_bytes());
        h[SB + 0x150..SB + 0x154].copy_from_slice(&((blocks >> 32) as u32).to_le_bytes());
        h
    }

    #[test]
    fn names() {
        for ok in [
            "vmlinux",
            "rootfs.ext4",
            "ubuntu-22.04_min",
            &"a".repeat(64),
        ] {
            assert_eq!(name_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "../x",
            "a b",
            "ü",
            &"a".repeat(65),
            "pull",
            "import",
        ] {
            assert!(name_problem(bad).is_some(), "{bad:?} accepted");
        }
    }

    #[test]
    fn kernels() {
        assert_eq!(detect_kernel(&elf(2, 62)), Ok(KernelFormat::Elf));
        assert_eq!(detect_kernel(&bzimage()), Ok(KernelFormat::BzImage));
        let e = detect_kernel(&elf(1, 62)).unwrap_err();
        assert!(e.contains("64-bit"), "{e}");
        let e = detect_kernel(&elf(2, 183)).unwrap_err();
        assert!(e.contains("183") && e.contains("x86_64"), "{e}");
        let e = detect_kernel(b"\x7fELF").unwrap_err();
        assert!(e.contains("64-bit"), "{e}");
        let mut core = elf(2, 62);
        core[16] = 4; // ET_CORE, as /proc/kcore
        let e = detect_kernel(&core).unwrap_err();
        assert!(e.contains("core"), "{e}");
        let e = detect_kernel(&elf(2, 62)[..18]).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        let e = detect_kernel(&[0u8; 4096]).unwrap_err();
        assert!(e.contains("HdrS"), "{e}");
        assert!(detect_kernel(&[]).is_err());
    }

    #[test]
    fn ext4_superblocks() {
        let info = check_ext4(&ext4(256, INCOMPAT_EXTENTS), 1 << 20).unwrap();
        assert_eq!(info.block_size, 4096);
        assert_eq!(info.fs_bytes, 1 << 20);
        // 64-bit block counts use the high word.
        let big = ext4((1 << 32) + 1, INCOMPAT_EXTENTS | INCOMPAT_64BIT);
        let e = check_ext4(&big, 1 << 20).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        let e = check_ext4(&ext4(512, INCOMPAT_EXTENTS), 1 << 20).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        let e = check_ext4(&ext4(256, 0), 1 << 20).unwrap_err();
        assert!(e.contains("ext2/ext3"), "{e}");
        let e = check_ext4(&vec![0u8; HEADER_LEN], 1 << 20).unwrap_err();
        assert!(e.contains("0xef53"), "{e}");
        let e = check_ext4(&[0u8; 100], 100).unwrap_err();
        assert!(e.contains("too small"), "{e}");
    }
}
