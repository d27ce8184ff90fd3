//! OCI images: from a registry ([`registry`], [`auth`]) or an archive on the host
//! ([`archive`]), through the content-addressed blob cache ([`blobs`], collected by [`gc`]),
//! to a root filesystem ([`rootfs`], with the image's [`config`]) recorded in the image store.
//! [`pull::Puller`] orchestrates both; everything it reads is untrusted and bounded
//! ([`limits`]).

pub mod archive;
pub mod auth;
pub mod blobs;
pub mod config;
pub mod digest;
pub mod gc;
pub mod limits;
pub mod manifest;
pub mod progress;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod rootfs;

pub use self::pull::{OciSettings, PullError, PullOptions, Puller};
