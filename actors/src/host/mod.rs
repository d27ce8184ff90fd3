//! Host backends: every side effect an actor has on the host goes through one of these traits,
//! each with a real Linux implementation and a recording fake for unit tests.

pub mod disks;
pub mod firewall;
pub mod hairpin;
pub mod jails;
pub mod links;
pub mod processes;
pub mod procfs;
