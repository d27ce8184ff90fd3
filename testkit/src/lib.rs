//! Test support shared by hearth's crates (a dev-dependency only, never in a release binary):
//!
//! - [`NetNs`], [`veth`], [`privileged`]: the harness for privileged tests, which run inside
//!   network namespaces they create;
//! - [`wait_until`]: the one polling helper, a condition and a deadline;
//! - [`bridge_world`]: hearth's bridge with guests and an outside, for published-port tests;
//! - [`bodies`]: every Firecracker request body the simulator's tests send, also validated
//!   against the spec by `hearth-proto`'s tests;
//! - [`guest`] (feature `sim`): a simulated guest's config and the servers data-plane tests
//!   talk to;
//! - [`fc_sim`]: the `firecracker-sim` binary for tests and examples that spawn it, and
//!   (feature `actors`) a sink for a `FirecrackerActor`'s events;
//! - [`vmlinux`] (feature `sim`): the smallest guest kernel Firecracker's loader accepts.
#![expect(
    clippy::missing_panics_doc,
    reason = "test support: a set-up that fails panics, failing the test that asked for it"
)]
#![expect(
    clippy::disallowed_methods,
    reason = "test support: it runs ip, dnsmasq and the simulator, and removes what it made"
)]

pub mod bodies;
pub mod bridge_world;
pub mod fc_sim;
#[cfg(feature = "sim")]
pub mod guest;
mod netns;
pub mod skip;
#[cfg(feature = "sim")]
pub mod vmlinux;
mod wait;

pub use netns::{privileged, test_logger, veth, NetNs};
pub use wait::wait_until;

/// Skips the calling test (returns from it) unless it is privileged; see [`privileged`].
#[macro_export]
macro_rules! require_privileged {
    () => {
        if !$crate::privileged(module_path!()) {
            return;
        }
    };
}
