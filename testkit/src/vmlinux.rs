//! A guest "kernel" made in the test: the smallest x86-64 ELF `vmlinux` that Firecracker's
//! loader accepts (`firecracker_sim::kernel::minimal_vmlinux`: one `PT_LOAD` segment at 1 MiB
//! holding `cli; hlt; jmp`, the entry point there), so the real binary reaches `Running` with
//! no package download and offline, and the simulator, which refuses what the real loader
//! refuses, accepts it too.
//!
//! Why generated rather than Debian's `linux-image-*-cloud-amd64`: no guest kernel boots on
//! this project's machines anyway (nested KVM), so a real kernel would buy nothing but a
//! download; and a kernel that provably does nothing (it halts with interrupts masked, so the
//! vCPU sleeps inside KVM and never reacts to the i8042 Ctrl+Alt+Del interrupt) makes "the
//! guest ignores Ctrl+Alt+Del" a fact of the test rather than of the machine.
//!
//! Only with the `sim` feature (the bytes come from `firecracker-sim`).

use std::path::Path;

/// The bytes of the minimal `vmlinux`.
pub fn minimal_vmlinux() -> Vec<u8> {
    firecracker_sim::kernel::minimal_vmlinux()
}

/// Writes [`minimal_vmlinux`] to `path`.
pub fn write_minimal_vmlinux(path: &Path) {
    std::fs::write(path, minimal_vmlinux())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
