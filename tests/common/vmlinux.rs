//! A guest "kernel" made in the test: the smallest x86-64 ELF `vmlinux` that Firecracker's
//! loader accepts, so the real binary reaches `Running` with no package download and offline.
//!
//! Why generated rather than Debian's `linux-image-*-cloud-amd64`: no guest kernel boots on
//! this project's machines anyway (nested KVM), so a real kernel would buy nothing but a
//! download; and a kernel that provably does nothing makes "the guest ignores Ctrl+Alt+Del"
//! a fact of the test rather than of the machine.
//!
//! What the loader checks (linux-loader's x86-64 ELF loader, as Firecracker uses it): the ELF
//! magic, 64-bit class, little-endian data, program headers inside the file and after the ELF
//! header, an entry point and `PT_LOAD` segments at or above the high-memory start (1 MiB),
//! and segments that fit in guest memory. One `PT_LOAD` segment at 1 MiB holds the code.
//!
//! The code is `cli; hlt; jmp -3`: with interrupts masked the vCPU halts for good, inside KVM
//! (the in-kernel irqchip handles HLT), so the guest uses no CPU and never reacts to the
//! i8042 Ctrl+Alt+Del interrupt, exactly like a guest that does not boot.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the helpers"
)]

use std::path::Path;

/// Where the segment and the entry point live: the x86-64 high-memory start (1 MiB).
pub const LOAD_ADDR: u64 = 0x10_0000;

/// `cli; hlt; jmp back to hlt`.
const CODE: [u8; 4] = [0xfa, 0xf4, 0xeb, 0xfd];

const EHDR_SIZE: u16 = 64;
const PHDR_SIZE: u16 = 56;
/// The segment's file offset: page aligned, like a linker would place it.
const CODE_OFFSET: u64 = 0x1000;

/// The bytes of the minimal `vmlinux`.
pub fn minimal_vmlinux() -> Vec<u8> {
    let mut f = Vec::with_capacity(CODE_OFFSET as usize + CODE.len());
    // ELF header.
    f.extend_from_slice(b"\x7fELF");
    f.push(2); // EI_CLASS: ELFCLASS64
    f.push(1); // EI_DATA: little endian
    f.push(1); // EI_VERSION: current
    f.push(0); // EI_OSABI: System V
    f.extend_from_slice(&[0; 8]); // ABI version + padding
    f.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    f.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: x86-64
    f.extend_from_slice(&1u32.to_le_bytes()); // e_version
    f.extend_from_slice(&LOAD_ADDR.to_le_bytes()); // e_entry
    f.extend_from_slice(&u64::from(EHDR_SIZE).to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no sections
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    f.extend_from_slice(&EHDR_SIZE.to_le_bytes()); // e_ehsize
    f.extend_from_slice(&PHDR_SIZE.to_le_bytes()); // e_phentsize
    f.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    f.extend_from_slice(&0u16.to_le_bytes()); // e_shentsize
    f.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    f.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    assert_eq!(f.len(), usize::from(EHDR_SIZE));
    // One PT_LOAD program header.
    f.extend_from_slice(&1u32.to_le_bytes()); // p_type: PT_LOAD
    f.extend_from_slice(&5u32.to_le_bytes()); // p_flags: R + X
    f.extend_from_slice(&CODE_OFFSET.to_le_bytes()); // p_offset
    f.extend_from_slice(&LOAD_ADDR.to_le_bytes()); // p_vaddr
    f.extend_from_slice(&LOAD_ADDR.to_le_bytes()); // p_paddr
    f.extend_from_slice(&(CODE.len() as u64).to_le_bytes()); // p_filesz
    f.extend_from_slice(&(CODE.len() as u64).to_le_bytes()); // p_memsz
    f.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    assert_eq!(f.len(), usize::from(EHDR_SIZE + PHDR_SIZE));
    f.resize(CODE_OFFSET as usize, 0);
    f.extend_from_slice(&CODE);
    f
}

/// Writes [`minimal_vmlinux`] to `path`.
pub fn write_minimal_vmlinux(path: &Path) {
    std::fs::write(path, minimal_vmlinux())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

