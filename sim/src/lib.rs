//! firecracker-sim as a library: the pieces the `firecracker-sim` binary is built from, and the
//! userspace guest network stack that tests use to put real packets on a TAP.

pub mod netstack;
