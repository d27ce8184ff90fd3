//! Whether VMMs can be jailed here, and why not: the jailer binary, a statically linked
//! Firecracker (the jailer's chroot holds no shared libraries), the cgroup controllers the
//! limits need, and whether the VM files can be hard-linked into the jails (else they are
//! bind-mounted, which works but adds a mount per file per VM). [`decide_jailing`] turns those
//! findings and `[jailer] enabled` into hearthd's one decision at start.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use hearth_actors::host::jails::cgroups;

use super::{check, find_in_path, Finding, Severity};
use crate::config::{JailerConfig, JailerMode};

/// One jailing check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailCheck {
    /// What was checked, e.g. `jailer binary`.
    pub what: String,
    /// `None` when fine, else what is wrong and how to fix it.
    pub problem: Option<String>,
    /// Whether that problem makes jailing impossible (else it only costs bind mounts).
    pub blocks: bool,
}

/// What hearthd does with its VMMs, decided once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JailDecision {
    /// Every VMM runs through the jailer.
    Jailed,
    /// VMMs run unjailed (as root, the host's filesystem in view): on purpose
    /// (`enabled = false`) or because `"auto"` found jailing impossible; each reason names
    /// the problem and its fix.
    Unjailed {
        /// Why, one line each.
        reasons: Vec<String>,
    },
    /// `enabled = true` on a host that cannot jail: hearthd must not start.
    Refused {
        /// What stands in the way, one line each.
        reasons: Vec<String>,
    },
}

impl JailDecision {
    /// One line per fact, for `hearthd --check`.
    pub fn summary(&self) -> String {
        match self {
            JailDecision::Jailed => "VMMs run jailed".into(),
            JailDecision::Unjailed { reasons } => format!(
                "VMMs run UNJAILED (as root, less isolated):\n{}",
                bullets(reasons)
            ),
            JailDecision::Refused { reasons } => format!(
                "hearthd refuses to start: jailing is required but impossible here:\n{}",
                bullets(reasons)
            ),
        }
    }
}

fn bullets(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| format!("  - {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The reason given when jailing is off on purpose.
pub const OFF_REASON: &str = "[jailer] enabled = false";

/// Decides from `mode` and the host's checks: `true` jails or refuses, `false` never jails,
/// `"auto"` jails when no check blocks it and otherwise falls back naming every blocker.
pub fn decide_jailing(mode: JailerMode, checks: &[JailCheck]) -> JailDecision {
    let reasons: Vec<String> = checks
        .iter()
        .filter(|c| c.blocks)
        .filter_map(|c| Some(format!("{}: {}", c.what, c.problem.as_ref()?)))
        .collect();
    match mode {
        JailerMode::Off => JailDecision::Unjailed {
            reasons: vec![OFF_REASON.into()],
        },
        _ if reasons.is_empty() => JailDecision::Jailed,
        JailerMode::On => JailDecision::Refused { reasons },
        JailerMode::Auto => JailDecision::Unjailed { reasons },
    }
}

/// `"auto"` must not fall back while VMs whose VMMs were started jailed (`jailed_vmms`) may
/// still run: unjailed, hearthd could not adopt them (it checks unjailed identities) and would
/// record them crashed, leaving them running. Such a fallback becomes a refusal naming them
/// and the way out; every other decision is kept.
pub fn keep_jailed_vmms(
    mode: JailerMode,
    decision: JailDecision,
    jailed_vmms: &[String],
) -> JailDecision {
    match decision {
        JailDecision::Unjailed { mut reasons }
            if mode == JailerMode::Auto && !jailed_vmms.is_empty() =>
        {
            reasons.push(format!(
                "VMs started jailed may still run ({}): unjailed, hearthd could not adopt \
                 them; fix the reasons above, or set [jailer] enabled = false to start \
                 unjailed anyway (those VMMs are then left running, unadopted)",
                jailed_vmms.join(", ")
            ));
            JailDecision::Refused { reasons }
        }
        other => other,
    }
}

/// The jailing checks as `hearthd --check` prints them: a blocker is fatal when jailing is
/// required (`enabled = true`), and otherwise degraded with what hearthd does instead.
pub fn check_jailing(
    cfg: &JailerConfig,
    firecracker: Option<&Path>,
    data_dir: &Path,
) -> Vec<Finding> {
    jailing_findings(cfg.enabled, &probe_jailing(cfg, firecracker, data_dir))
}

/// [`JailCheck`]s as findings under `mode`.
pub fn jailing_findings(mode: JailerMode, checks: &[JailCheck]) -> Vec<Finding> {
    let (severity, consequence) = match mode {
        JailerMode::On => (Severity::Fatal, ""),
        JailerMode::Auto => (
            Severity::Degraded,
            " (jailer.enabled = \"auto\": VMMs run unjailed, as root, less isolated)",
        ),
        JailerMode::Off => (
            Severity::Degraded,
            " (jailer.enabled = false: VMMs run as root, less isolated)",
        ),
    };
    checks
        .iter()
        .map(|c| match &c.problem {
            None => check(&c.what, true, severity, ""),
            Some(why) if c.blocks => {
                check(&c.what, false, severity, &format!("{why}{consequence}"))
            }
            Some(why) => check(&c.what, false, Severity::Degraded, why),
        })
        .collect()
}

/// Probes this host for what jailing needs, given the configured Firecracker (`None`: the one
/// in `PATH`, unchecked when there is none) and the data directory (hard links).
pub fn probe_jailing(
    cfg: &JailerConfig,
    firecracker: Option<&Path>,
    data_dir: &Path,
) -> Vec<JailCheck> {
    let mut out = Vec::new();
    let jailer = match &cfg.jailer_bin {
        Some(p) => p.is_file().then(|| p.clone()),
        None => find_in_path("jailer"),
    };
    let jailer_problem = match &cfg.jailer_bin {
        Some(p) => format!("{} is not a file (fix jailer.jailer_bin)", p.display()),
        None => {
            "no `jailer` in PATH (install Firecracker's jailer or set jailer.jailer_bin)".into()
        }
    };
    out.push(blocker(
        "jailer binary",
        jailer.is_none().then_some(jailer_problem),
    ));
    let fc: Option<PathBuf> = match firecracker {
        Some(p) => p.is_file().then(|| p.to_owned()),
        None => find_in_path("firecracker"),
    };
    if let Some(fc) = fc {
        let why = match is_static_elf(&fc) {
            Ok(true) => None,
            Ok(false) => Some(format!(
                "{} is dynamically linked: it cannot run in the jailer's chroot (use a \
                 statically linked Firecracker, e.g. an official release, as firecracker_bin)",
                fc.display()
            )),
            Err(e) => Some(format!("cannot read {}: {e}", fc.display())),
        };
        out.push(blocker("firecracker statically linked", why));
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
    out.push(match cg {
        Ok(v) => blocker(
            &format!("cgroup v{} controllers memory, cpu, pids", v.as_arg()),
            None,
        ),
        Err(e) => blocker(
            "cgroup controllers memory, cpu, pids",
            Some(format!(
                "{e} (mount the memory, cpu and pids controllers, and run hearthd where it \
                 sees the host's /sys/fs/cgroup)"
            )),
        ),
    });
    let same_fs = same_filesystem(data_dir, &cfg.chroot_base_dir);
    out.push(JailCheck {
        what: "VM files hard-linkable into jails".into(),
        problem: (same_fs != Some(true)).then(|| {
            format!(
                "{} and {} are on different filesystems (or unreadable): kernels and disks \
                 are bind-mounted into each jail instead",
                data_dir.display(),
                cfg.chroot_base_dir.display()
            )
        }),
        blocks: false,
    });
    out
}

/// A check whose problem, if any, makes jailing impossible.
fn blocker(what: &str, problem: Option<String>) -> JailCheck {
    JailCheck {
        what: what.to_owned(),
        problem,
        blocks: true,
    }
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
    fn missing_jailer_is_fatal_only_when_required() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = JailerConfig {
            jailer_bin: Some(dir.path().join("jailer")),
            ..JailerConfig::default()
        };
        let find = |f: &[Finding]| f.iter().find(|f| f.what == "jailer binary").cloned();
        for (mode, severity, says) in [
            (JailerMode::Off, Severity::Degraded, "less isolated"),
            (JailerMode::Auto, Severity::Degraded, "VMMs run unjailed"),
            (JailerMode::On, Severity::Fatal, "jailer.jailer_bin"),
        ] {
            cfg.enabled = mode;
            let f = find(&check_jailing(&cfg, None, dir.path())).unwrap();
            assert!(
                matches!(&f.problem, Some((s, w)) if *s == severity && w.contains(says)),
                "{mode}: {f}"
            );
        }
    }

    #[test]
    fn a_dynamic_firecracker_is_reported() {
        let cfg = JailerConfig::default();
        let dir = tempfile::tempdir().unwrap();
        let checks = probe_jailing(&cfg, Some(Path::new("/bin/sh")), dir.path());
        let fc = checks
            .iter()
            .find(|c| c.what == "firecracker statically linked")
            .unwrap();
        assert!(fc.blocks);
        assert!(matches!(&fc.problem, Some(w) if w.contains("dynamically linked")));
    }

    fn checks(problems: &[(&str, Option<&str>, bool)]) -> Vec<JailCheck> {
        problems
            .iter()
            .map(|(what, problem, blocks)| JailCheck {
                what: (*what).into(),
                problem: problem.map(str::to_owned),
                blocks: *blocks,
            })
            .collect()
    }

    #[test]
    fn jailing_is_decided_from_the_blockers() {
        let fine = checks(&[
            ("jailer binary", None, true),
            ("cgroups", None, true),
            ("hard links", Some("bind mounts instead"), false),
        ]);
        let blocked = checks(&[
            ("jailer binary", Some("no `jailer` in PATH"), true),
            (
                "firecracker statically linked",
                Some("dynamically linked"),
                true,
            ),
            ("cgroups", None, true),
            ("hard links", Some("bind mounts instead"), false),
        ]);
        let reasons = vec![
            "jailer binary: no `jailer` in PATH".to_owned(),
            "firecracker statically linked: dynamically linked".to_owned(),
        ];
        // A non-blocking problem never stops jailing.
        assert_eq!(
            decide_jailing(JailerMode::Auto, &fine),
            JailDecision::Jailed
        );
        assert_eq!(decide_jailing(JailerMode::On, &fine), JailDecision::Jailed);
        assert_eq!(
            decide_jailing(JailerMode::Auto, &blocked),
            JailDecision::Unjailed {
                reasons: reasons.clone()
            }
        );
        assert_eq!(
            decide_jailing(JailerMode::On, &blocked),
            JailDecision::Refused { reasons }
        );
        // Off is unjailed whatever the host offers, saying it was asked for.
        for c in [&fine, &blocked] {
            assert_eq!(
                decide_jailing(JailerMode::Off, c),
                JailDecision::Unjailed {
                    reasons: vec![OFF_REASON.into()]
                }
            );
        }
    }

    #[test]
    fn auto_never_falls_back_under_jailed_vmms() {
        let unjailed = || JailDecision::Unjailed {
            reasons: vec!["jailer binary: gone".into()],
        };
        let vms = ["a".to_owned(), "b".to_owned()];
        match keep_jailed_vmms(JailerMode::Auto, unjailed(), &vms) {
            JailDecision::Refused { reasons } => {
                assert_eq!(reasons[0], "jailer binary: gone");
                assert!(reasons[1].contains("(a, b)"), "{reasons:?}");
                assert!(reasons[1].contains("enabled = false"), "{reasons:?}");
            }
            other => panic!("{other:?}"),
        }
        // No such VMs, or jailing off on purpose, or jailed anyway: unchanged.
        assert_eq!(
            keep_jailed_vmms(JailerMode::Auto, unjailed(), &[]),
            unjailed()
        );
        let off = JailDecision::Unjailed {
            reasons: vec![OFF_REASON.into()],
        };
        assert_eq!(keep_jailed_vmms(JailerMode::Off, off.clone(), &vms), off);
        assert_eq!(
            keep_jailed_vmms(JailerMode::Auto, JailDecision::Jailed, &vms),
            JailDecision::Jailed
        );
    }

    #[test]
    fn the_simulator_makes_auto_fall_back() {
        // A dynamically linked "Firecracker" (the simulator is one) blocks jailing even when a
        // jailer is there: auto falls back naming it, true refuses.
        let dir = tempfile::tempdir().unwrap();
        let jailer = dir.path().join("jailer");
        std::fs::write(&jailer, b"").unwrap();
        let cfg = JailerConfig {
            jailer_bin: Some(jailer),
            chroot_base_dir: dir.path().join("jails"),
            ..JailerConfig::default()
        };
        let probe = probe_jailing(&cfg, Some(Path::new("/bin/sh")), dir.path());
        match decide_jailing(JailerMode::Auto, &probe) {
            JailDecision::Unjailed { reasons } => assert!(
                reasons
                    .iter()
                    .any(|r| r.contains("/bin/sh is dynamically linked")),
                "{reasons:?}"
            ),
            other => panic!("auto with a dynamic firecracker: {other:?}"),
        }
        assert!(matches!(
            decide_jailing(JailerMode::On, &probe),
            JailDecision::Refused { .. }
        ));
    }
}
