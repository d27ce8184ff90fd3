//! hearth: the daemon (`hearthd`) and CLI (`hearthctl`) around the actors of `hearth-actors`.
//! This crate holds what the binaries share: configuration, logging, and (later) the store,
//! the HTTP API and the daemon's wiring.
#![warn(missing_docs)]

pub mod api;
pub mod client;
pub mod config;
pub mod daemon;
pub mod egress;
pub mod images;
pub mod logging;
pub mod preflight;
pub mod safe_path;
pub mod store;
#[cfg(feature = "testing")]
pub mod vm_host;
