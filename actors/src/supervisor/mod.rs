//! `VmSupervisor`: owns the VM table and orchestrates lifecycles (being written).

mod error;
pub mod images;
pub mod ledger;
mod messages;
pub mod metrics;

pub use error::SupervisorError;
pub use messages::*;
