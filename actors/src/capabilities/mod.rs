//! Per-VM network capabilities: what a VM's spec asks of the host's network services (NAT,
//! a DNS name, published ports, an egress policy), each one a [`Capability`] in its own file.
//!
//! The supervisor knows no capability by name. It builds a VM's capabilities from its spec
//! with [`for_spec`] and calls the same hooks on each at its lifecycle points, inside its
//! sagas: a hook that fails fails the saga, whose undo then runs [`Capability::stopped`] on
//! every capability whose setup hook (`booted`, `restored`, `adopted`) had succeeded. A hook
//! reaches the host only through the [`CapabilityHost`] it is given: typed messages to
//! `NatActor`, `DnsActor` and `TapPoolActor`, and nothing of the supervisor's state. Its
//! configuration is a field of the VM's spec (`hearth_proto::api::CreateVm`), so it is
//! stored with the VM and given back to `adopted` after a hearthd restart.
//!
//! Hook order over a VM's life (see `docs/capabilities.md`):
//! `booted` (the VMM started the machine; the lease exists) -> `running` (the VM reached
//! `running` or `unready`) -> `stopping` (a stop or delete begins) -> `stopped` (the process is
//! gone, before the lease is released; also after a crash and as the undo of a setup hook)
//! -> `deleted` (the VM's record goes). A restore or fork calls `restored` in place of
//! `booted`; `Open` calls `adopted` for each VM it re-adopts alive; a change of the
//! capability's configuration on a live VM calls `reconfigure`. Every hook must be
//! idempotent: a retried stop or delete calls it again.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use hearth_proto::api::CreateVm;

use crate::dns::DnsError;
use crate::lease::NetLease;
use crate::nat::NatError;
use crate::supervisor::{StepCause, SupervisorError};
use crate::tap_pool::TapPoolError;

mod dns_name;
mod egress;
mod host;
mod nat_switch;
mod publish;

pub use dns_name::DnsName;
pub use egress::Egress;
pub use host::CapabilityHost;
pub use nat_switch::NatSwitch;
pub use publish::Publish;

/// What a hook's future answers. Boxed and local (not `Send`): hooks run on the supervisor's
/// arbiter, and a boxed future keeps the trait object-safe.
pub type HookFuture<'a> = Pin<Box<dyn Future<Output = Result<(), CapabilityError>> + 'a>>;

/// A hook with nothing to do.
#[must_use]
pub fn done<'a>() -> HookFuture<'a> {
    Box::pin(std::future::ready(Ok(())))
}

/// What a hook sees of a VM: its name, its lease when it holds one, and its spec (which holds
/// every capability's configuration). Nothing else of the supervisor's state.
#[derive(Debug, Clone, Copy)]
pub struct VmView<'a> {
    /// The VM's name.
    pub name: &'a str,
    /// Its network lease (`None` when it holds none, e.g. a stopped VM being deleted).
    pub lease: Option<&'a NetLease>,
    /// Its spec as stored.
    pub spec: &'a CreateVm,
}

/// Why a capability's hook failed.
#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    /// The firewall refused a change.
    #[error("{capability}: firewall")]
    Nat {
        /// The capability.
        capability: &'static str,
        /// `NatActor`'s error.
        source: NatError,
    },
    /// The DNS server refused a change.
    #[error("{capability}: DNS")]
    Dns {
        /// The capability.
        capability: &'static str,
        /// `DnsActor`'s error.
        source: DnsError,
    },
    /// The TAP pool refused a request.
    #[error("{capability}: TAP pool")]
    TapPool {
        /// The capability.
        capability: &'static str,
        /// `TapPoolActor`'s error.
        source: TapPoolError,
    },
    /// An actor a hook needs is gone (hearthd is shutting down).
    #[error("{capability}: {actor} unavailable")]
    ActorGone {
        /// The capability.
        capability: &'static str,
        /// The actor.
        actor: &'static str,
    },
    /// The configuration collides with something another owner holds (HTTP 409); nothing
    /// was changed.
    #[error("{capability}: {message}")]
    Conflict {
        /// The capability.
        capability: &'static str,
        /// What collides, naming the other owner.
        message: String,
    },
    /// The configuration cannot be used (HTTP 400); nothing was changed.
    #[error("{reason}")]
    Invalid {
        /// The capability (its spec field).
        capability: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The hook needs the VM's lease and it has none.
    #[error("{capability}: VM {vm:?} has no network lease")]
    NoLease {
        /// The capability.
        capability: &'static str,
        /// The VM.
        vm: String,
    },
}

impl From<CapabilityError> for SupervisorError {
    fn from(e: CapabilityError) -> Self {
        match e {
            CapabilityError::Nat { source, .. } if source.is_unavailable() => {
                SupervisorError::Unavailable {
                    what: source.to_string(),
                }
            }
            CapabilityError::Nat { source, .. } => {
                SupervisorError::step("capability", StepCause::Nat(Arc::new(source)))
            }
            CapabilityError::Dns { source, .. } => {
                SupervisorError::step("capability", StepCause::Dns(Arc::new(source)))
            }
            CapabilityError::TapPool { source, .. } => {
                SupervisorError::step("capability", StepCause::Pool(Arc::new(source)))
            }
            CapabilityError::Invalid { capability, reason } => {
                SupervisorError::InvalidField(hearth_proto::api::FieldError {
                    field: capability,
                    reason,
                })
            }
            e @ CapabilityError::Conflict { .. } => SupervisorError::Conflict {
                message: e.to_string(),
            },
            e @ (CapabilityError::ActorGone { .. } | CapabilityError::NoLease { .. }) => {
                SupervisorError::Unavailable {
                    what: e.to_string(),
                }
            }
        }
    }
}

/// One per-VM network capability. Every hook defaults to doing nothing; a capability
/// implements the ones it needs. Hooks must be idempotent (retries call them again) and must
/// leave nothing behind after `stopped` that `booted`/`restored`/`adopted` made.
pub trait Capability {
    /// Its name, for logs and errors (e.g. `nat`, `dns-name`, `publish`).
    fn name(&self) -> &'static str;

    /// The VMM started the machine (a create or a start): the lease exists, the process runs.
    /// Undone by [`Capability::stopped`].
    fn booted<'a>(&'a self, _host: &'a CapabilityHost, _vm: VmView<'a>) -> HookFuture<'a> {
        done()
    }

    /// The VM reached `running` or `unready` (after `booted` or `restored`).
    fn running<'a>(&'a self, _host: &'a CapabilityHost, _vm: VmView<'a>) -> HookFuture<'a> {
        done()
    }

    /// A stop or delete of a live VM begins; the process still runs.
    fn stopping<'a>(&'a self, _host: &'a CapabilityHost, _vm: VmView<'a>) -> HookFuture<'a> {
        done()
    }

    /// The VM's process is gone (stopped, crashed, or a setup saga undone); the lease is
    /// still the VM's until after this hook. Removes whatever the setup hooks made.
    fn stopped<'a>(&'a self, _host: &'a CapabilityHost, _vm: VmView<'a>) -> HookFuture<'a> {
        done()
    }

    /// The VM is being deleted (after `stopped` when it ran): remove anything kept across
    /// stops.
    fn deleted<'a>(&'a self, _host: &'a CapabilityHost, _vm: VmView<'a>) -> HookFuture<'a> {
        done()
    }

    /// The VM was restored from a snapshot or forked (in place of `booted`): the lease is
    /// its own, new one. Undone by [`Capability::stopped`].
    fn restored<'a>(&'a self, host: &'a CapabilityHost, vm: VmView<'a>) -> HookFuture<'a> {
        self.booted(host, vm)
    }

    /// `Open` re-adopted the live VM after a hearthd restart: re-apply runtime state from the
    /// spec (after the firewall's atomic `Reconcile`, which rebuilt hearth's static rules).
    fn adopted<'a>(&'a self, _host: &'a CapabilityHost, _vm: VmView<'a>) -> HookFuture<'a> {
        done()
    }

    /// The user changed this capability's configuration on a live VM: `vm.spec` is the new
    /// spec, `previous` the old one. On error nothing may have changed.
    fn reconfigure<'a>(
        &'a self,
        _host: &'a CapabilityHost,
        _vm: VmView<'a>,
        _previous: &'a CreateVm,
    ) -> HookFuture<'a> {
        done()
    }
}

/// The capabilities of a VM with this spec, in the order their setup hooks run (teardown
/// runs in reverse). A new capability adds one line here.
///
/// The egress policy comes first: it is in place before NAT or a published port opens
/// anything for the guest (which already runs when `booted` and `restored` are called) and
/// goes last, after them, so a deny-mode guest is never reachable or routed without it.
#[must_use]
pub fn for_spec(spec: &CreateVm) -> Vec<Box<dyn Capability>> {
    let _ = spec;
    vec![
        Box::new(Egress),
        Box::new(NatSwitch),
        Box::new(Publish),
        Box::new(DnsName),
    ]
}

#[cfg(test)]
mod tests;
