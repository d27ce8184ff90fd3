//! Which VMM a test runs against: `firecracker-sim`, or the real Firecracker binary named by
//! `HEARTH_FIRECRACKER_REAL`. Tests written once over [`Vmm`] run against both.
//!
//! Without `HEARTH_FIRECRACKER_REAL` the real-binary cases print one SKIP line saying how to
//! enable them and pass; with `HEARTH_REQUIRE_REAL_FIRECRACKER=1` (CI) a missing or unusable
//! binary is a failure instead. The real binary needs `/dev/kvm`, so its cases are also
//! privileged (root).
//!
//! Use with `mod common; use common::vmm;`.

use std::path::{Path, PathBuf};

use hearth_testkit::fc_sim;

/// Names the real Firecracker binary.
pub const REAL_VAR: &str = "HEARTH_FIRECRACKER_REAL";
/// `1` makes a missing real binary a failure rather than a skip.
pub const REQUIRE_REAL_VAR: &str = "HEARTH_REQUIRE_REAL_FIRECRACKER";

/// A VMM under test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vmm {
    /// `firecracker-sim`: its guest "boots" at once and honours Ctrl+Alt+Del.
    Sim,
    /// The real Firecracker binary at this path: no guest boots here (nested KVM, and the
    /// tests' kernel only halts), so Ctrl+Alt+Del is ignored and no agent answers.
    Real(PathBuf),
}

impl Vmm {
    /// `sim` or `real`, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Vmm::Sim => "sim",
            Vmm::Real(_) => "real",
        }
    }

    /// Whether this is the real binary.
    pub fn is_real(&self) -> bool {
        matches!(self, Vmm::Real(_))
    }

    /// The binary to run.
    pub fn binary(&self) -> PathBuf {
        match self {
            Vmm::Sim => fc_sim::sim_binary(),
            Vmm::Real(p) => p.clone(),
        }
    }

    /// A binary whose guest ignores Ctrl+Alt+Del: the real one as it is (its guest never
    /// boots); the simulator behind a wrapper setting `FC_SIM_IGNORE_CTRL_ALT_DEL`.
    pub fn binary_ignoring_ctrl_alt_del(&self, dir: &Path) -> PathBuf {
        match self {
            Vmm::Sim => fc_sim::sim_wrapper(
                dir,
                "fc-nocad",
                &[("FC_SIM_IGNORE_CTRL_ALT_DEL", "1")],
                false,
            ),
            Vmm::Real(p) => p.clone(),
        }
    }
}

/// The real binary, or `None` after printing why the calling test skips. Panics when
/// `HEARTH_REQUIRE_REAL_FIRECRACKER=1` and the binary is missing or not executable.
pub fn real_firecracker(test: &str) -> Option<PathBuf> {
    let required = std::env::var(REQUIRE_REAL_VAR).as_deref() == Ok("1");
    let Some(path) = std::env::var_os(REAL_VAR).filter(|p| !p.is_empty()) else {
        assert!(
            !required,
            "{test}: {REQUIRE_REAL_VAR}=1 but {REAL_VAR} is not set"
        );
        hearth_testkit::skip!(
            "SKIP: {test}: no real Firecracker binary; set {REAL_VAR}=/path/to/firecracker \
             to run against the real binary"
        );
        return None;
    };
    let path = PathBuf::from(path);
    let executable = std::fs::metadata(&path)
        .is_ok_and(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0);
    if !executable {
        assert!(
            !required,
            "{test}: {REAL_VAR}={} is not an executable file",
            path.display()
        );
        hearth_testkit::skip!(
            "SKIP: {test}: {REAL_VAR}={} is not an executable file; set \
             {REAL_VAR}=/path/to/firecracker to run against the real binary",
            path.display()
        );
        return None;
    }
    Some(path)
}

/// Defines `mod $name { sim, real }`: two tests running `$body(vmm: Vmm)` (an async fn) on an
/// actix system, against the simulator and against the real binary. With `net`, both run as
/// root inside a fresh network namespace (`$body` gets it as its second argument); without,
/// the simulator case runs unprivileged and the real one (which needs `/dev/kvm`) as root.
#[macro_export]
macro_rules! vmm_test {
    ($name:ident, $body:path) => {
        mod $name {
            use super::*;

            #[test]
            fn sim() {
                actix::System::new().block_on($body($crate::common::vmm::Vmm::Sim));
            }

            #[test]
            fn real() {
                let Some(bin) = $crate::common::vmm::real_firecracker(module_path!()) else {
                    return;
                };
                $crate::require_privileged!();
                actix::System::new().block_on($body($crate::common::vmm::Vmm::Real(bin)));
            }
        }
    };
    ($name:ident, $body:path, net) => {
        mod $name {
            use super::*;

            #[test]
            fn sim() {
                $crate::require_privileged!();
                let ns = $crate::common::NetNs::new("vmm");
                ns.block_on(|| $body($crate::common::vmm::Vmm::Sim, &ns));
            }

            #[test]
            fn real() {
                let Some(bin) = $crate::common::vmm::real_firecracker(module_path!()) else {
                    return;
                };
                $crate::require_privileged!();
                let ns = $crate::common::NetNs::new("vmm");
                ns.block_on(|| $body($crate::common::vmm::Vmm::Real(bin), &ns));
            }
        }
    };
}
