//! Every type that crosses a process boundary in hearth, shared by both ends: Firecracker API
//! bodies (hearth's client and `firecracker-sim`), the guest agent protocol (the agent and the
//! readiness probe), and hearth's own HTTP bodies (hearthd and hearthctl).
#![warn(missing_docs)]

pub mod agent;
pub mod api;
pub mod api_egress;
pub mod api_exec;
pub mod api_health;
pub mod api_images;
pub mod api_policy;
pub mod api_publish;
pub mod api_pull;
pub mod api_snapshot;
pub mod firecracker;
pub mod image_config;
pub mod init;
