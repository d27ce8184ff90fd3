//! Whether VMMs can be jailed here, and why not: the jailer binary, a statically linked
//! Firecracker (the jailer's chroot holds no shared libraries), the cgroup controllers the
//! limits need, and whether the VM files can be hard-linked into the jails (else they are
//! bind-mounted, which works but adds a mount per file per VM).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use hearth_actors::host::jails::cgroups;

use super::{check, find_in_path, Finding, Severity};
use crate::config::JailerConfig;

/// The jailing checks. They are fatal when jailing is enabled, informational otherwise.
pub fn check_jailing(
    cfg: &JailerConfig,
    firecracker: Option<&Path>,
    data_dir: &Path,
) -> Vec<Finding> {
    let severity = if cfg.enabled {
        Severity::Fatal
    } else {
        Severity::Degraded
    };
    let off = if cfg.enabled {
        ""
    } else {
        " (jailer.enabled = false: VMMs run as root, less isolated)"
    };
    let mut out = Vec::new();
    let jailer = match &cfg.jailer_bin {
        Some(p) => p.is_file().then(|| p.clone()),
        None => find_in_path("jailer"),
    };
    out.push(check(
        "jailer binary",
        jailer.is_some(),
        severity,
        &format!("not found (set jailer.jailer_bin){off}"),
    ));
    let fc: Option<PathBuf> = match firecracker {
        Some(p) => p.is_file().then(|| p.to_owned()),
        None => find_in_path("firecracker"),
    };
    if let Some(fc) = fc {
        let why = match is_static_elf(&fc) {
            Ok(true) => String::new(),
            Ok(false) => format!(
                "{} is dynamically linked: it cannot run in the jailer's chroot{off}",
                fc.display()
            ),
            Err(e) => format!("cannot read {}: {e}{off}", fc.display()),
        };
        out.push(check(
            "firecracker statically linked",
            why.is_empty(),
            severity,
            &why,
        ));
    }
    let cg = match cfg.cgroup_version.as_str() {
        "auto" => cgroups::detect_host().map(|h| h.version),
        wanted => cgroups::detect_host().and_then(|h| {
            if h.version.as_arg() == wanted {
                Ok(h.version)
            } else {
                Err(format!(
                    "jailer.cgroup_version = {wanted}, but this host offers memory, cpu and \
                     pids only in cgroup v{}",
                    h.version.as_arg()
                ))
            }
        }),
    };
    let (what, why) = match &cg {
        Ok(v) => (
            format!("cgroup v{} controllers memory, cpu, pids", v.as_arg()),
            String::new(),
        ),
        Err(e) => (
            "cgroup controllers memory, cpu, pids".into(),
            format!("{e}{off}"),
        ),
    };
    out.push(check(&what, cg.is_ok(), severity, &why));
    let same_fs = same_filesystem(data_dir, &cfg.chroot_base_dir);
    out.push(check(
        "VM files hard-linkable into jails",
        same_fs == Some(true),
        Severity::Degraded,
        &format!(
            "{} and {} are on different filesystems (or unreadable): kernels and disks are \
             bind-mounted into each jail instead",
            data_dir.display(),
            cfg.chroot_base_dir.display()
        ),
    ));
    out
}

/// Whether `path` is an ELF file without a `PT_INTERP` program header (no dynamic loader).
pub fn is_static_elf(path: &Path) -> std::io::Result<bool> {
    let data = std::fs::read(path)?;
    Ok(elf_is_static(&data).unwrap_or(false))
}

/// `Some(static?)` for a 64-bit little-endian ELF, `None` for anything else.
fn elf_is_static(d: &[u8]) -> Option<bool> {
    if d.get(..4)? != b"\x7fELF" || *d.get(4)? != 2 || *d.get(5)? != 1 {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(d.get(o..o + 2)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(d.get(o..o + 8)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        let p_type = u32::from_le_bytes(
            d.get(phoff + i * phentsize..phoff + i * phentsize + 4)?
                .try_into()
                .ok()?,
        );
        if p_type == 3 {
            return Some(false);
        }
    }
    Some(true)
}

/// Whether `a` and `b` (or their nearest existing ancestors) are on one filesystem.
fn same_filesystem(a: &Path, b: &Path) -> Option<bool> {
    let dev = |p: &Path| {
        p.ancestors()
            .find_map(|q| q.metadata().ok())
            .map(|m| m.dev())
    };
    Some(dev(a)? == dev(b)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_and_static_binaries_are_told_apart() {
        // /bin/sh is dynamically linked on every distribution hearth runs on.
        assert!(!is_static_elf(Path::new("/bin/sh")).unwrap());
        assert_eq!(elf_is_static(b"#!/bin/sh\n"), None);
        assert_eq!(elf_is_static(b"\x7fELF"), None);
        if let Some(fc) = std::env::var_os("HEARTH_FIRECRACKER_REAL") {
            assert!(is_static_elf(Path::new(&fc)).unwrap());
        }
    }

    #[test]
    fn missing_jailer_is_fatal_only_when_enabled() {
        let mut cfg = JailerConfig {
            jailer_bin: Some("/nonexistent/jailer".into()),
            ..JailerConfig::default()
        };
        let find = |f: &[Finding]| f.iter().find(|f| f.what == "jailer binary").cloned();
        let off = find(&check_jailing(&cfg, None, Path::new("/tmp"))).unwrap();
        assert!(
            matches!(off.problem, Some((Severity::Degraded, ref w)) if w.contains("less isolated"))
        );
        cfg.enabled = true;
        let on = find(&check_jailing(&cfg, None, Path::new("/tmp"))).unwrap();
        assert!(matches!(on.problem, Some((Severity::Fatal, _))));
    }

    #[test]
    fn a_dynamic_firecracker_is_reported() {
        let cfg = JailerConfig::default();
        let f = check_jailing(&cfg, Some(Path::new("/bin/sh")), Path::new("/tmp"));
        let fc = f
            .iter()
            .find(|f| f.what == "firecracker statically linked")
            .unwrap();
        assert!(matches!(&fc.problem, Some((_, w)) if w.contains("dynamically linked")));
    }
}
