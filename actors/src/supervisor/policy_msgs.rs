//! The messages of the lifecycle policies: the periodic check and the change of a live VM's
//! labels, restart policy and time limit.

use std::collections::BTreeMap;

use actix::Message;
use hearth_proto::api::VmInfo;
use hearth_proto::api_policy::{OnExpiry, RestartPolicy, TtlChange};

use super::SupervisorError;

/// Checks due restarts and expired time limits against the supervisor's clock. hearthd sends
/// it every `[policy] tick`; tests send it after moving a manual clock.
#[derive(Debug, Clone, Copy, Default, Message)]
#[rtype(result = "TickReport")]
pub struct PolicyTick;

/// What one [`PolicyTick`] set in motion (each runs on after the answer, under its VM's lock).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// VMs whose due restart was started.
    pub restarts: Vec<String>,
    /// VMs whose time limit was acted on.
    pub expiries: Vec<String>,
}

/// Changes what can change on a live VM (`PATCH /v1/vms/{name}`); `None` leaves a field.
#[derive(Debug, Clone, Default, Message)]
#[rtype(result = "Result<VmInfo, SupervisorError>")]
pub struct UpdateVm {
    /// The VM.
    pub name: String,
    /// Its new labels (the whole set).
    pub labels: Option<BTreeMap<String, String>>,
    /// Its new restart policy.
    pub restart: Option<RestartPolicy>,
    /// A new time limit from now, or an extension of the current one.
    pub ttl: Option<TtlChange>,
    /// What happens at the time limit.
    pub on_expiry: Option<OnExpiry>,
}
