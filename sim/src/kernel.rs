//! The guest kernel at `InstanceStart`: what Firecracker's kernel loader refuses, with its texts,
//! and the smallest x86-64 ELF `vmlinux` it accepts (for tests, here and in hearth).
//!
//! The simulator loads nothing, but it refuses what the real binary refuses. The rules and
//! texts below were observed on the real Firecracker v1.17.0-dev with hand-made images: an
//! ELF is tried first (a file too short for an ELF header fails there); a file without the ELF
//! magic is tried as a bzImage. For an ELF: little-endian, 56-byte program headers at or after
//! the ELF header, an entry point at or above 1 MiB, program headers inside the file, note
//! headers readable, `PT_LOAD` segments inside the file and inside guest memory. The class and
//! machine fields are not checked. For a bzImage: `HdrS` at 0x202, boot protocol 2.00 or
//! later, the kernel loaded high (`loadflags` bit 0) from 1 MiB or above (`code32_start`),
//! and a 64-bit entry point (`xloadflags` bit 0).

use std::fs::File;
use std::os::unix::fs::FileExt;

/// Where segments and the entry point must be at least: the x86-64 high-memory start.
pub const HIMEM_START: u64 = 0x10_0000;

const EHDR_SIZE: u64 = 64;
const PHDR_SIZE: u64 = 56;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const NOTE_HEADER_SIZE: u64 = 12;

/// Why Firecracker refuses to start with this kernel: the text after its
/// `Start microvm error: System configuration error: ` prefix.
pub fn check(file: &File, mem_size_mib: u64) -> Result<(), String> {
    check_loadable(file, mem_size_mib).map_err(|why| {
        if why == NO_64BIT_ENTRY {
            why.clone()
        } else {
            format!(
                "Cannot load kernel due to invalid memory configuration or invalid kernel \
                 image: {why}"
            )
        }
    })
}

/// The one refusal that is not the loader's.
const NO_64BIT_ENTRY: &str = "bzImage does not provide a 64-bit entry point";

fn check_loadable(file: &File, mem_size_mib: u64) -> Result<(), String> {
    let len = file.metadata().map_err(|e| elf(&e.to_string()))?.len();
    let mut ehdr = [0u8; EHDR_SIZE as usize];
    if len < EHDR_SIZE || file.read_exact_at(&mut ehdr, 0).is_err() {
        return Err(elf("Unable to read elf header"));
    }
    if &ehdr[..4] != b"\x7fELF" {
        return check_bzimage(file);
    }
    if ehdr[5] != 1 {
        return Err(elf(
            "Trying to load big-endian binary on little-endian machine",
        ));
    }
    let u16_at = |o: usize| u16::from_le_bytes([ehdr[o], ehdr[o + 1]]);
    let u64_at = |o: usize| u64::from_le_bytes(ehdr[o..o + 8].try_into().unwrap_or_default());
    let (entry, phoff, phentsize, phnum) = (u64_at(24), u64_at(32), u16_at(54), u16_at(56));
    if u64::from(phentsize) != PHDR_SIZE {
        return Err(elf("Invalid program header size"));
    }
    if phoff < EHDR_SIZE {
        return Err(elf("Invalid program header offset"));
    }
    if entry < HIMEM_START {
        return Err(elf("Invalid entry address"));
    }
    let table_len = u64::from(phnum) * PHDR_SIZE;
    let mut table = vec![0u8; table_len as usize];
    if phoff.checked_add(table_len).is_none_or(|end| end > len)
        || file.read_exact_at(&mut table, phoff).is_err()
    {
        return Err(elf("Unable to read program header"));
    }
    let mem = mem_size_mib << 20;
    for ph in table.chunks_exact(PHDR_SIZE as usize) {
        let word = |o: usize| u64::from_le_bytes(ph[o..o + 8].try_into().unwrap_or_default());
        let p_type = u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]);
        let (offset, paddr, filesz, memsz) = (word(8), word(24), word(32), word(40));
        let past = |a: u64, b: u64, limit: u64| a.checked_add(b).is_none_or(|end| end > limit);
        match p_type {
            PT_NOTE if past(offset, NOTE_HEADER_SIZE, len) => {
                return Err(elf("Unable to read note header"));
            }
            PT_LOAD if past(offset, filesz, len) || past(paddr, memsz.max(filesz), mem) => {
                return Err(elf("Unable to read kernel image"));
            }
            _ => {}
        }
    }
    Ok(())
}

fn elf(why: &str) -> String {
    format!("Kernel Loader: failed to load ELF kernel image: Kernel Loader: {why}")
}

fn check_bzimage(file: &File) -> Result<(), String> {
    // The setup header, from 0x200 to past `xloadflags` (0x236).
    let mut hdr = [0u8; 0x38];
    let read = file.read_exact_at(&mut hdr, 0x200).is_ok();
    let at = |o: usize| u16::from_le_bytes([hdr[o - 0x200], hdr[o - 0x200 + 1]]);
    let ok = read && &hdr[2..6] == b"HdrS" && at(0x206) >= 0x0200 && hdr[0x211 - 0x200] & 1 == 1;
    if !ok {
        return Err(
            "Kernel Loader: failed to load bzImage kernel image: Kernel Loader: Invalid bzImage"
                .into(),
        );
    }
    let code32_start = u32::from_le_bytes(hdr[0x14..0x18].try_into().unwrap_or_default());
    if u64::from(code32_start) < HIMEM_START {
        return Err("Kernel Loader: invalid kernel start address".into());
    }
    if at(0x236) & 1 == 0 {
        return Err(NO_64BIT_ENTRY.into());
    }
    Ok(())
}

/// `cli; hlt; jmp back to hlt`: with interrupts masked the vCPU halts for good.
const HALT: [u8; 4] = [0xfa, 0xf4, 0xeb, 0xfd];
/// The segment's file offset, page aligned as a linker would place it.
const CODE_OFFSET: u64 = 0x1000;

/// The smallest x86-64 ELF `vmlinux` Firecracker loads and starts: one `PT_LOAD` segment at
/// 1 MiB holding `cli; hlt; jmp` and the entry point there. Its guest halts at once, uses no
/// CPU and never reacts to Ctrl+Alt+Del, like a guest that does not boot.
pub fn minimal_vmlinux() -> Vec<u8> {
    let mut f = Vec::with_capacity(CODE_OFFSET as usize + HALT.len());
    // ELF header: magic, ELFCLASS64, little endian, version 1, System V ABI, padding.
    f.extend_from_slice(b"\x7fELF\x02\x01\x01\x00");
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    f.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: x86-64
    f.extend_from_slice(&1u32.to_le_bytes()); // e_version
    f.extend_from_slice(&HIMEM_START.to_le_bytes()); // e_entry
    f.extend_from_slice(&EHDR_SIZE.to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no sections
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    f.extend_from_slice(&(EHDR_SIZE as u16).to_le_bytes()); // e_ehsize
    f.extend_from_slice(&(PHDR_SIZE as u16).to_le_bytes()); // e_phentsize
    f.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    f.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
                                  // One PT_LOAD program header, readable and executable.
    f.extend_from_slice(&PT_LOAD.to_le_bytes());
    f.extend_from_slice(&5u32.to_le_bytes()); // p_flags: R + X
    f.extend_from_slice(&CODE_OFFSET.to_le_bytes()); // p_offset
    f.extend_from_slice(&HIMEM_START.to_le_bytes()); // p_vaddr
    f.extend_from_slice(&HIMEM_START.to_le_bytes()); // p_paddr
    f.extend_from_slice(&(HALT.len() as u64).to_le_bytes()); // p_filesz
    f.extend_from_slice(&(HALT.len() as u64).to_le_bytes()); // p_memsz
    f.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    f.resize(CODE_OFFSET as usize, 0);
    f.extend_from_slice(&HALT);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn checked(bytes: &[u8], mem_mib: u64) -> Result<(), String> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        check(&f, mem_mib)
    }

    fn patched(at: usize, bytes: &[u8]) -> Vec<u8> {
        let mut k = minimal_vmlinux();
        k[at..at + bytes.len()].copy_from_slice(bytes);
        k
    }

    /// Each case's text is what the real binary answered for the same image.
    #[test]
    fn refusals_match_the_real_loader() {
        assert_eq!(checked(&minimal_vmlinux(), 128), Ok(()));
        let full = |why: String| {
            Err(format!(
                "Cannot load kernel due to invalid memory configuration or invalid kernel \
                 image: {why}"
            ))
        };
        let elf_err = |why: &str| full(elf(why));
        assert_eq!(checked(b"", 128), elf_err("Unable to read elf header"));
        assert_eq!(
            checked(&minimal_vmlinux()[..40], 128),
            elf_err("Unable to read elf header")
        );
        assert_eq!(
            checked(&patched(5, &[2]), 128),
            elf_err("Trying to load big-endian binary on little-endian machine")
        );
        // An ELF header alone (no program header size) is refused.
        let mut hdr_only = vec![0u8; 4096];
        hdr_only[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
        assert_eq!(
            checked(&hdr_only, 128),
            elf_err("Invalid program header size")
        );
        assert_eq!(
            checked(&patched(32, &8u64.to_le_bytes()), 128),
            elf_err("Invalid program header offset")
        );
        assert_eq!(
            checked(&patched(24, &0x1000u64.to_le_bytes()), 128),
            elf_err("Invalid entry address")
        );
        assert_eq!(
            checked(&patched(56, &200u16.to_le_bytes()), 128),
            elf_err("Unable to read program header")
        );
        assert_eq!(
            checked(&patched(64, &PT_NOTE.to_le_bytes()), 128),
            elf_err("Unable to read note header")
        );
        assert_eq!(
            checked(&patched(64 + 8, &0x10_0000u64.to_le_bytes()), 128),
            elf_err("Unable to read kernel image")
        );
        assert_eq!(
            checked(&patched(64 + 24, &0x4000_0000u64.to_le_bytes()), 128),
            elf_err("Unable to read kernel image"),
            "a segment beyond 128 MiB of guest memory"
        );
        // Not checked by the real loader: class and machine.
        assert_eq!(checked(&patched(4, &[1]), 128), Ok(()));
        assert_eq!(checked(&patched(18, &[0x28]), 128), Ok(()));
        let bz = full(
            "Kernel Loader: failed to load bzImage kernel image: Kernel Loader: Invalid bzImage"
                .into(),
        );
        assert_eq!(checked(&[b'x'; 100], 128), bz);
        let mut image = vec![0u8; 8192];
        image[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(checked(&image, 128), bz);
        image[0x206..0x208].copy_from_slice(&0x01ffu16.to_le_bytes());
        image[0x211] = 1;
        assert_eq!(checked(&image, 128), bz, "boot protocol before 2.00");
        image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        assert_eq!(
            checked(&image, 128),
            full("Kernel Loader: invalid kernel start address".into())
        );
        image[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
        assert_eq!(checked(&image, 128), Err(NO_64BIT_ENTRY.into()));
        image[0x236] = 1;
        assert_eq!(checked(&image, 128), Ok(()));
    }
}
