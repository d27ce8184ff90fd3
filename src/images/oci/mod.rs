//! OCI images: registry, blob cache, archive import (owner: the `oci` work) and, from verified
//! layers, the root filesystem ([`rootfs`]) and the image config ([`config`]).

pub mod config;
pub mod rootfs;
