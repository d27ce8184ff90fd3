//! The test harness for privileged tests: the network-namespace harness and polling from
//! `hearth-testkit`, re-exported so tests say `common::NetNs`, plus a
//! `require_privileged!` in scope for every test file that declares `mod common;`, and the
//! fixtures hearth's own integration tests share: [`actor`] (a `FirecrackerActor` in a test),
//! [`daemon`] (a whole `hearthd` host), [`guest_agent`] (a simulated guest's agent as a
//! client), [`hearth_net`] (the network actors and simulated guests), [`tuntap`] (holding a
//! TAP busy) and [`vmm`] (simulator or real Firecracker).
// `allow`, not `expect` (the house rule elsewhere): whether anything here goes unused depends
// on the test binary that includes this module, so an `expect` would fail in some of them.
#![allow(
    dead_code,
    unused_imports,
    reason = "each test binary uses a different part of the harness"
)]

pub mod actor;
pub mod daemon;
pub mod exec_host;
pub mod guest_agent;
pub mod hearth_net;
pub mod jails;
pub mod publish_maps;
pub mod registry;
pub mod tuntap;
pub mod vmm;

pub use hearth_testkit::{privileged, test_logger, veth, wait_until, NetNs};

/// Skips the calling test (returns from it) unless it is privileged. Forwards to
/// `hearth_testkit::require_privileged!` so tests can call it unqualified after `mod common;`.
#[macro_export]
macro_rules! require_privileged {
    () => {
        hearth_testkit::require_privileged!()
    };
}
