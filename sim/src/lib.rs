//! firecracker-sim as a library: the pieces the `firecracker-sim` binary is built from, and the
//! userspace guest network stack that tests use to put real packets on a TAP.
//!
//! Flow: `main` parses the command line ([`cli`]) and knobs ([`knobs`]), binds the API
//! socket, and runs the [`vmm::Vmm`] on its own thread. Connection threads read HTTP
//! ([`http`]), turn requests into actions ([`api`]) and send them to the VMM thread, which
//! answers each in turn and fires its timers (guest boot, reboot, crash). After boot the
//! simulated guest ([`guest`]) serves hybrid vsock and hearth's agent protocol.

pub mod api;
pub mod cli;
pub mod guest;
pub mod http;
pub mod kernel;
pub mod knobs;
pub mod log;
pub mod netstack;
pub mod real_agent;
pub mod server;
pub mod tap;
pub mod vmm;
