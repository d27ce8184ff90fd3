//! Host prerequisites, checked before hearthd touches anything, so a missing piece is reported
//! plainly ("no /dev/kvm", "iptables not found") instead of as an obscure failure later.

mod jailer;
pub use jailer::{
    check_jailing, decide_jailing, is_static_elf, jailing_findings, keep_jailed_vmms,
    probe_jailing, JailCheck, JailDecision, OFF_REASON,
};

use std::fmt;
use std::path::{Path, PathBuf};

/// How much a missing prerequisite matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// hearthd cannot do its main job without it.
    Fatal,
    /// Some feature is unavailable (e.g. VMs cannot boot, NAT is off).
    Degraded,
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What was checked, e.g. `/dev/kvm`.
    pub what: String,
    /// `None` when present and usable, else what is wrong and how bad it is.
    pub problem: Option<(Severity, String)>,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            None => write!(f, "ok       {}", self.what),
            Some((Severity::Fatal, why)) => write!(f, "MISSING  {}: {why}", self.what),
            Some((Severity::Degraded, why)) => write!(f, "degraded {}: {why}", self.what),
        }
    }
}

/// Runs every check. `firecracker_bin` is the configured binary, if any (else PATH is searched).
pub fn check_host(firecracker_bin: Option<&Path>) -> Vec<Finding> {
    let mut out = vec![
        check(
            "root (CAP_NET_ADMIN)",
            nix::unistd::geteuid().is_root(),
            Severity::Fatal,
            "hearthd creates bridges, TAPs and firewall rules; run it as root",
        ),
        check(
            "/dev/net/tun",
            Path::new("/dev/net/tun").exists(),
            Severity::Fatal,
            "the TUN/TAP driver is not available (modprobe tun)",
        ),
        check(
            "/dev/kvm",
            Path::new("/dev/kvm").exists(),
            Severity::Degraded,
            "KVM is not available: Firecracker cannot boot guests",
        ),
    ];
    for tool in ["iptables", "iptables-restore", "ipset", "nft"] {
        out.push(check(
            tool,
            find_in_path(tool).is_some(),
            Severity::Fatal,
            "not found in PATH (apt-get install iptables ipset nftables)",
        ));
    }
    if nix::unistd::geteuid().is_root() && find_in_path("iptables").is_some() {
        out.push(iptables_works());
    }
    let fc = match firecracker_bin {
        Some(p) => p.is_file().then(|| p.to_owned()),
        None => find_in_path("firecracker"),
    };
    out.push(check(
        "firecracker binary",
        fc.is_some(),
        Severity::Degraded,
        "not found (set firecracker_bin in the config): VMs cannot be started",
    ));
    out
}

/// Whether iptables can read the filter table here (kernel modules, nft/legacy backends): the
/// `iptables` crate runs the real binary, as hearth's firewall setup will.
pub fn iptables_works() -> Finding {
    let what = "iptables usable (filter table)";
    let result = iptables::new(false)
        .and_then(|ipt| ipt.chain_exists("filter", "FORWARD"))
        .map_err(|e| e.to_string());
    match result {
        Ok(true) => check(what, true, Severity::Fatal, ""),
        Ok(false) => check(
            what,
            false,
            Severity::Fatal,
            "the filter table has no FORWARD chain",
        ),
        Err(e) => check(
            what,
            false,
            Severity::Fatal,
            &format!("iptables failed: {e}"),
        ),
    }
}

fn check(what: &str, ok: bool, severity: Severity, why: &str) -> Finding {
    Finding {
        what: what.to_owned(),
        problem: (!ok).then(|| (severity, why.to_owned())),
    }
}

/// The first executable file called `name` in `$PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_render_plainly() {
        let ok = check("x", true, Severity::Fatal, "why");
        assert_eq!(ok.to_string(), "ok       x");
        let bad = check("/dev/kvm", false, Severity::Degraded, "no kvm");
        assert_eq!(bad.to_string(), "degraded /dev/kvm: no kvm");
    }

    #[test]
    fn path_search_finds_sh_and_not_nonsense() {
        assert!(find_in_path("sh").is_some());
        assert!(find_in_path("definitely-not-a-binary-hearth").is_none());
    }

    #[test]
    fn missing_configured_firecracker_is_reported() {
        let findings = check_host(Some(Path::new("/nonexistent/firecracker")));
        let fc = findings
            .iter()
            .find(|f| f.what == "firecracker binary")
            .unwrap();
        assert!(matches!(fc.problem, Some((Severity::Degraded, _))));
    }
}
