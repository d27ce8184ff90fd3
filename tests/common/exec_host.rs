//! A hearth host whose guests run the real `hearth-agent` (`FC_SIM_AGENT_BIN`), for the
//! `vm exec` and `vm cp` end-to-end tests: real hearthd, firecracker-sim, real agent, real
//! hearthctl. The simulated guest's agent runs on this machine, so a guest path is a path
//! here too (tests check the guest side directly).
#![expect(
    clippy::disallowed_methods,
    reason = "tests drive real binaries (cargo, hearthctl) and clean up their own directories"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

use super::daemon::HearthHost;
use hearth_testkit::fc_sim;

/// The agent binary of this build, (re)built so a test never runs a stale one.
pub fn agent_bin() -> PathBuf {
    fc_sim::agent_binary()
}

/// Starts hearthd whose VMs run `agent` as their agent, and creates the running VM `web`.
pub fn start_with_agent(agent: &Path) -> HearthHost {
    start_configured(agent, "")
}

/// [`start_with_agent`] with extra config text after the `[vm]` section (it may open other
/// sections, e.g. `[exec]`).
pub fn start_configured(agent: &Path, config: &str) -> HearthHost {
    let agent = agent.display().to_string();
    let h = HearthHost::start(&[("FC_SIM_AGENT_BIN", agent.as_str())], config);
    let web = h.ctl_ok(&[
        "vm", "create", "web", "--kernel", "vmlinux", "--rootfs", "base",
    ]);
    assert_eq!(web["state"], "running", "{web}");
    h
}

/// [`start_with_agent`] with the real agent.
pub fn start() -> HearthHost {
    start_with_agent(&agent_bin())
}

/// `hearthctl --socket <h's socket> <args>`, not run yet.
pub fn ctl(h: &HearthHost, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hearthctl"));
    c.arg("--socket").arg(h.path("hearthd.sock")).args(args);
    c
}

/// Runs hearthctl and returns its output.
pub fn run(h: &HearthHost, args: &[&str]) -> Output {
    ctl(h, args).output().expect("run hearthctl")
}

/// Asserts hearthctl ended with `code`, showing its output and hearthd's log when not.
pub fn expect_code(h: &HearthHost, out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}\n--- hearthd log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        h.log()
    );
}

/// The SHA-256 of `data`, hex.
pub fn sha256(data: &[u8]) -> String {
    use std::fmt::Write as _;
    Sha256::digest(data)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// `len` bytes that are not all alike and not text (every byte value occurs).
pub fn binary_data(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[3]
        })
        .collect()
}
