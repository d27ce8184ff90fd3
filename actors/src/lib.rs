//! hearth's actors. Each concern is an actix actor that owns its state exclusively; the only
//! way in is a typed message to its mailbox (see `DESIGN.md`). Host side effects go through the
//! small traits in [`host`], with a real (Linux) and an in-memory (fake) implementation each.
#![warn(missing_docs)]

pub mod capabilities;
pub mod dns;
pub mod firecracker;
pub mod guest;
#[expect(
    clippy::disallowed_methods,
    reason = "the host backends are where processes are spawned and trees removed (clippy.toml)"
)]
pub mod host;
pub mod lease;
pub mod mac;
pub mod nat;
pub mod snapshot;
pub mod supervisor;
pub mod tap_pool;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
