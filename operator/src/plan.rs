//! The node agent's decisions, as a pure function: [`plan`] takes the MicroVMs bound to this
//! node ([`Desired`]) and what hearthd runs ([`Observed`]) and returns the [`Action`]s that
//! bring the two together. No I/O here; `node.rs` carries the actions out.
//!
//! Rules: a finalizer goes on before any VM is made; a VM is replaced (deleted, then created
//! on the next pass) when its machine differs from the spec; `running` is met with start and
//! stop; hearthd's VMs that carry the operator's uid label but match no object are deleted;
//! while hearthd is down nothing is done but say so in the status (a finalizer is never
//! removed on a guess).

use std::collections::{BTreeMap, BTreeSet};

use hearth_proto::api::{CreateVm, VmState};
use hearth_proto::api_policy::{OnExpiry, RestartPolicy};

use crate::crd::{GuestInit, MicroVmCondition, MicroVmSpec, MicroVmStatus};

/// hearthd label holding the MicroVM's uid.
pub const UID_LABEL: &str = "hearth.dev/microvm-uid";
/// hearthd label holding the generation the VM was created from.
pub const GENERATION_LABEL: &str = "hearth.dev/generation";
/// hearthd label holding the digest of the machine the VM was created as.
pub const SPEC_LABEL: &str = "hearth.dev/spec";

/// One MicroVM bound to this node.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// The object's identity.
    pub object: ObjectRef,
    /// `metadata.generation`.
    pub generation: i64,
    /// The spec.
    pub spec: MicroVmSpec,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// The object carries [`crate::crd::FINALIZER`].
    pub has_finalizer: bool,
    /// The status as stored.
    pub status: MicroVmStatus,
}

/// A MicroVM's identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
}

/// One VM on hearthd.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedVm {
    /// hearthd's name for it.
    pub name: String,
    /// Its state.
    pub state: VmState,
    /// The guest's address.
    pub guest_ip: Option<std::net::Ipv4Addr>,
    /// What it was created from (labels included).
    pub spec: CreateVm,
}

impl ObservedVm {
    /// The MicroVM uid it was made for, if the operator made it.
    pub fn uid(&self) -> Option<&str> {
        self.spec.labels.get(UID_LABEL).map(String::as_str)
    }
}

/// What hearthd runs, or why that is unknown.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// hearthd answered the list.
    Up(Vec<ObservedVm>),
    /// hearthd could not be asked; the reason, for the status.
    Down(String),
}

/// Why a VM is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    /// Its MicroVM is being deleted (the finalizer waits for this).
    Finalizing,
    /// Its machine no longer matches the spec; it is created again afterwards.
    Replaced,
    /// No MicroVM bound here claims it (deleted while the agent was away, or moved).
    Orphaned,
}

/// One step the node agent takes.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Put the finalizer on the object.
    AddFinalizer(ObjectRef),
    /// Take the finalizer off: the VM is gone, the object may go.
    RemoveFinalizer(ObjectRef),
    /// `POST /v1/vms` with `Idempotency-Key: key`.
    Create {
        /// The object it is for.
        object: ObjectRef,
        /// The body.
        spec: Box<CreateVm>,
        /// The idempotency key.
        key: String,
    },
    /// `POST /v1/vms/{vm}/start`.
    Start {
        /// hearthd's VM name.
        vm: String,
        /// The idempotency key.
        key: String,
    },
    /// `POST /v1/vms/{vm}/stop`.
    Stop {
        /// hearthd's VM name.
        vm: String,
        /// The idempotency key.
        key: String,
    },
    /// `DELETE /v1/vms/{vm}`.
    Delete {
        /// hearthd's VM name.
        vm: String,
        /// Why.
        reason: DeleteReason,
    },
    /// Replace the object's status.
    SetStatus {
        /// The object.
        object: ObjectRef,
        /// The new status.
        status: Box<MicroVmStatus>,
    },
}

/// hearthd's name for the VM of the MicroVM with `uid`: a DNS label, unique per object (a
/// recreated object with the same name gets a new uid, so never meets its predecessor's VM).
pub fn vm_name(uid: &str) -> String {
    let clean: String = uid
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .map(|c| c.to_ascii_lowercase())
        .take(60)
        .collect();
    format!("k-{}", clean.trim_end_matches('-'))
}

/// The `CreateVm` body for a MicroVM. The restart policy was checked by the CRD's pattern;
/// one that still does not parse is left at `no` (hearthd's default) rather than failing.
pub fn create_body(d: &Desired) -> CreateVm {
    let mut labels = d.spec.labels.clone();
    labels.retain(|k, _| !k.starts_with("hearth.dev/"));
    labels.insert(UID_LABEL.into(), d.object.uid.clone());
    // For people reading hearthd's VM list; hearthd caps label values at 255 characters.
    let object: String = format!("{}.{}", d.object.namespace, d.object.name)
        .chars()
        .take(255)
        .collect();
    labels.insert("hearth.dev/microvm".into(), object);
    let mut body = CreateVm {
        name: vm_name(&d.object.uid),
        kernel: d.spec.kernel.clone(),
        rootfs: d.spec.rootfs.clone(),
        vcpus: d.spec.vcpus,
        memory_mib: d.spec.memory_mib,
        disk_size: d.spec.disk_size,
        boot_args: d.spec.boot_args.clone(),
        init: d.spec.init.map(GuestInit::mode),
        nat: d.spec.nat,
        ready_probe: d.spec.ready_probe,
        labels,
        from_snapshot: None,
        restart: d
            .spec
            .restart
            .as_deref()
            .and_then(|r| r.parse::<RestartPolicy>().ok())
            .unwrap_or_default(),
        ttl: None,
        on_expiry: OnExpiry::default(),
        // Host ports are a node's resource the scheduler does not see: not offered in the
        // MicroVM spec until placement accounts for them (docs/multi-host.md).
        publish: Vec::new(),
        // Not in the MicroVM spec yet (v1alpha1 predates it): hearthd's default, allow.
        egress: None,
    };
    let digest = machine_digest(&body);
    body.labels.insert(SPEC_LABEL.into(), digest);
    body.labels
        .insert(GENERATION_LABEL.into(), d.generation.to_string());
    body
}

/// A digest of everything a VM is made from (before the two labels that carry it and the
/// generation): FNV-1a (64 bits) of the body's JSON, whose field order is fixed by the struct.
/// hearthd records a normalised spec (e.g. `init=` added to the boot arguments of an OCI
/// image), so the VM's own fields cannot be compared with the spec; this label can.
fn machine_digest(body: &CreateVm) -> String {
    let json = serde_json::to_vec(body).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in json {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The idempotency key of a create: the object's uid and generation, the machine's digest
/// (an operator upgrade that changes the body at the same generation must not meet the
/// earlier create's key, which hearthd would refuse as used with another request), and how
/// many times the VM was lost (a VM made again must not replay the earlier answer).
pub fn create_key(body: &CreateVm, lost: u32) -> String {
    let uid = body.labels.get(UID_LABEL).map_or("", String::as_str);
    let generation = body.labels.get(GENERATION_LABEL).map_or("", String::as_str);
    let digest = body.labels.get(SPEC_LABEL).map_or("", String::as_str);
    format!("{uid}.{generation}.{digest}.create.{lost}")
}

/// Whether the VM hearthd runs was made from the spec `want`: same machine digest (a spec
/// change that leaves the machine alone, such as `running`, keeps the VM).
fn same_machine(have: &CreateVm, want: &CreateVm) -> bool {
    have.labels.contains_key(SPEC_LABEL)
        && have.labels.get(SPEC_LABEL) == want.labels.get(SPEC_LABEL)
}

/// The status phase for a VM state.
pub fn phase_of(state: VmState) -> &'static str {
    match state {
        VmState::Creating | VmState::Starting => "Creating",
        VmState::Running => "Running",
        VmState::Unready => "Unready",
        VmState::Stopping | VmState::Stopped => "Stopped",
        VmState::Crashed => "Crashed",
        VmState::Failed => "Failed",
        VmState::Deleting => "Deleting",
        VmState::Paused => "Paused",
    }
}

fn condition(type_: &str, status: &str, reason: &str, message: Option<String>) -> MicroVmCondition {
    MicroVmCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message,
    }
}

/// The status to show for `d` given its VM (`vm`) or hearthd's absence (`down`).
fn status_for(
    node: &str,
    d: &Desired,
    phase: &str,
    vm: Option<&ObservedVm>,
    ready: (&str, &str, Option<String>),
) -> MicroVmStatus {
    let mut s = d.status.clone();
    s.phase = Some(phase.into());
    s.node = Some(node.into());
    if let Some(vm) = vm {
        s.vm = Some(vm.name.clone());
        s.guest_ip = vm.guest_ip.map(|ip| ip.to_string());
    }
    s.observed_generation = Some(d.generation);
    s.conditions = vec![
        condition(
            "Scheduled",
            "True",
            "Bound",
            Some(format!("Placed on {node}")),
        ),
        condition("Ready", ready.0, ready.1, ready.2),
    ];
    s
}

/// The actions that bring hearthd on `node` to what `desired` asks.
pub fn plan(node: &str, desired: &[Desired], observed: &Observed) -> Vec<Action> {
    let mut actions = Vec::new();
    let vms: BTreeMap<&str, &ObservedVm> = match observed {
        Observed::Up(vms) => vms.iter().filter_map(|v| Some((v.uid()?, v))).collect(),
        Observed::Down(_) => BTreeMap::new(),
    };
    let mut claimed = BTreeSet::new();
    for d in desired {
        claimed.insert(d.object.uid.as_str());
        let vm = vms.get(d.object.uid.as_str()).copied();
        plan_one(node, d, vm, observed, &mut actions);
    }
    // VMs the operator made whose object is gone from this node.
    for (uid, vm) in &vms {
        if !claimed.contains(uid) && vm.state != VmState::Deleting {
            actions.push(Action::Delete {
                vm: vm.name.clone(),
                reason: DeleteReason::Orphaned,
            });
        }
    }
    actions
}

fn plan_one(
    node: &str,
    d: &Desired,
    vm: Option<&ObservedVm>,
    observed: &Observed,
    actions: &mut Vec<Action>,
) {
    let obj = &d.object;
    if let Observed::Down(why) = observed {
        // Nothing can be checked: no create, no delete, and the finalizer stays.
        if !d.deleting {
            let s = status_for(
                node,
                d,
                "Unknown",
                None,
                ("Unknown", "HearthdUnreachable", Some(why.clone())),
            );
            set_status(actions, d, s);
        }
        return;
    }
    if d.deleting {
        match vm {
            Some(vm) if vm.state != VmState::Deleting => actions.push(Action::Delete {
                vm: vm.name.clone(),
                reason: DeleteReason::Finalizing,
            }),
            Some(_) => {}
            None if d.has_finalizer => actions.push(Action::RemoveFinalizer(obj.clone())),
            None => {}
        }
        return;
    }
    if !d.has_finalizer {
        actions.push(Action::AddFinalizer(obj.clone()));
    }
    plan_vm(node, d, vm, actions);
}

/// Adds a status update when `status` differs from the stored one (no patch storms).
fn set_status(actions: &mut Vec<Action>, d: &Desired, status: MicroVmStatus) {
    if status != d.status {
        actions.push(Action::SetStatus {
            object: d.object.clone(),
            status: Box::new(status),
        });
    }
}

/// The VM's side for an object that stays: create, replace, start, stop, and its status.
fn plan_vm(node: &str, d: &Desired, vm: Option<&ObservedVm>, actions: &mut Vec<Action>) {
    let obj = &d.object;
    let want = create_body(d);
    let gen = d.generation;
    if vm.is_none() {
        // What the CRD's schema cannot say (label keys, boot argument characters) hearthd
        // would refuse on every pass: refuse it here, once, in the status.
        if let Err(e) = want.validate() {
            let message = Some(format!("{}: {}", e.field, e.reason));
            let s = status_for(node, d, "Invalid", None, ("False", "InvalidSpec", message));
            set_status(actions, d, s);
            return;
        }
    }
    match vm {
        None => {
            let mut status = d.status.clone();
            // The status names a VM on this node that hearthd no longer has: lost.
            let lost = status.vm.is_some() && status.node.as_deref() == Some(node);
            if lost {
                status.lost += 1;
                status.vm = None;
                status.guest_ip = None;
            }
            actions.push(Action::Create {
                object: obj.clone(),
                key: create_key(&want, status.lost),
                spec: Box::new(want),
            });
            let base = Desired {
                status,
                ..d.clone()
            };
            let (phase, reason) = if lost {
                ("Lost", "VmLost")
            } else {
                ("Creating", "Creating")
            };
            let message =
                lost.then(|| "The VM vanished from hearthd; creating it again".to_owned());
            set_status(
                actions,
                d,
                status_for(node, &base, phase, None, ("False", reason, message)),
            );
        }
        Some(vm) if vm.state == VmState::Deleting => {
            set_status(
                actions,
                d,
                status_for(node, d, "Deleting", Some(vm), ("False", "Deleting", None)),
            );
        }
        Some(vm) if !same_machine(&vm.spec, &want) => {
            actions.push(Action::Delete {
                vm: vm.name.clone(),
                reason: DeleteReason::Replaced,
            });
            // The VM is going on purpose: the next pass creates, it does not count a loss.
            let mut s = status_for(node, d, "Replacing", None, ("False", "SpecChanged", None));
            s.vm = None;
            s.guest_ip = None;
            set_status(actions, d, s);
        }
        Some(vm) => {
            let key = |verb: &str| format!("{}.{gen}.{verb}", obj.uid);
            match vm.state {
                VmState::Stopped if d.spec.running => actions.push(Action::Start {
                    vm: vm.name.clone(),
                    key: key("start"),
                }),
                VmState::Running | VmState::Unready | VmState::Starting | VmState::Paused
                    if !d.spec.running =>
                {
                    actions.push(Action::Stop {
                        vm: vm.name.clone(),
                        key: key("stop"),
                    });
                }
                _ => {}
            }
            let phase = phase_of(vm.state);
            let ready = if vm.state == VmState::Running {
                ("True", "Running", None)
            } else {
                ("False", phase, None)
            };
            set_status(actions, d, status_for(node, d, phase, Some(vm), ready));
        }
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
