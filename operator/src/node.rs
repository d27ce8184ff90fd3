//! The node agent (`hearth-operator node --node NAME`): one [`NodeAgent::reconcile_once`]
//! lists the MicroVMs whose placeholder Pod is bound to this node, lists hearthd's VMs, asks
//! [`plan`] what to do and does it; [`NodeAgent::run`] repeats that on every change seen by
//! the watches and on a timer (the timer catches hearthd-side changes, such as a VM that
//! vanished). The last lifecycle event of each VM, read from hearthd's event log since the
//! previous pass, goes into its MicroVM's status.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

use crate::crd::{LastEvent, MicroVM, MicroVmStatus, FINALIZER};
use crate::finalizer::finalizer_patch;
use crate::hearthd::{Hearthd, HearthdError};
use crate::placement::PLACEHOLDER_UID_LABEL;
use crate::plan::{plan, vm_name, Action, Desired, ObjectRef, Observed};
use crate::trigger::Trigger;

/// Why a reconcile pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// hearthd refused or failed a request.
    #[error("hearthd: {0}")]
    Hearthd(#[from] HearthdError),
}

/// What one pass did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PassReport {
    /// The actions planned, in order.
    pub planned: Vec<Action>,
    /// Actions that failed, with why (the pass goes on with the other objects).
    pub failed: Vec<String>,
}

/// The agent of one node.
pub struct NodeAgent {
    client: Client,
    hearthd: Hearthd,
    node: String,
    log: slog::Logger,
    /// hearthd's event log is read after this sequence number.
    events_seen: u64,
    /// The last event per hearthd VM name, kept until its MicroVM's status shows it.
    last_events: BTreeMap<String, LastEvent>,
}

impl NodeAgent {
    /// An agent for `node` talking to `client` and `hearthd`.
    pub fn new(client: Client, hearthd: Hearthd, node: String, log: slog::Logger) -> Self {
        NodeAgent {
            client,
            hearthd,
            node,
            log,
            events_seen: 0,
            last_events: BTreeMap::new(),
        }
    }

    /// The MicroVMs this node is responsible for: those whose placeholder Pod is bound here,
    /// and those being deleted whose status names this node and which still carry the
    /// finalizer (their Pod may already be gone).
    async fn desired(&self) -> Result<Vec<Desired>, NodeError> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let lp = ListParams::default()
            .fields(&format!("spec.nodeName={}", self.node))
            .labels(PLACEHOLDER_UID_LABEL);
        let bound: Vec<String> = pods
            .list(&lp)
            .await?
            .items
            .iter()
            .filter(|p| {
                // An evicted or failed placeholder no longer holds the VM's place.
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                !matches!(phase, Some("Failed" | "Succeeded"))
                    && p.metadata.deletion_timestamp.is_none()
            })
            .filter_map(|p| p.labels().get(PLACEHOLDER_UID_LABEL).cloned())
            .collect();
        let mvms: Api<MicroVM> = Api::all(self.client.clone());
        let mut out = Vec::new();
        for m in mvms.list(&ListParams::default()).await?.items {
            let uid = m.uid().unwrap_or_default();
            let status = m.status.clone().unwrap_or_default();
            let has_finalizer = m.finalizers().iter().any(|f| f == FINALIZER);
            let deleting = m.metadata.deletion_timestamp.is_some();
            let mine = bound.contains(&uid)
                || (deleting && has_finalizer && status.node.as_deref() == Some(&self.node));
            if !mine || uid.is_empty() {
                continue;
            }
            out.push(Desired {
                object: ObjectRef {
                    namespace: m.namespace().unwrap_or_default(),
                    name: m.name_any(),
                    uid,
                },
                generation: m.metadata.generation.unwrap_or(0),
                spec: m.spec.clone(),
                deleting,
                has_finalizer,
                status,
            });
        }
        Ok(out)
    }

    /// Reads hearthd's events since the last pass, keeping the last one per VM.
    async fn read_events(&mut self) -> Result<(), HearthdError> {
        loop {
            let page = self.hearthd.events_since(self.events_seen).await?;
            let Some(last) = page.last() else { break };
            self.events_seen = last.seq;
            for e in page {
                self.last_events.insert(
                    e.vm.clone(),
                    LastEvent {
                        state: e.state.as_str().to_owned(),
                        reason: serde_json::to_value(e.reason)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        detail: e.detail,
                        at_ms: e.at_ms,
                    },
                );
            }
        }
        Ok(())
    }

    /// One pass: observe both sides, plan, act.
    pub async fn reconcile_once(&mut self) -> Result<PassReport, NodeError> {
        let desired = self.desired().await?;
        let observed = match self.hearthd.list().await {
            Ok(vms) => Observed::Up(vms),
            Err(e) if e.is_unreachable() => Observed::Down(e.to_string()),
            Err(e) => return Err(e.into()),
        };
        if matches!(observed, Observed::Up(_)) {
            if let Err(e) = self.read_events().await {
                slog::warn!(self.log, "reading hearthd events failed"; "error" => %e);
            }
        }
        let mut planned = plan(&self.node, &desired, &observed);
        with_events(&mut planned, &desired, &self.last_events);
        let mut report = PassReport {
            planned: planned.clone(),
            failed: Vec::new(),
        };
        // After a failure, later actions on the same object but status updates wait for the
        // next pass (a create must not run when its finalizer could not be added).
        let mut blocked: Vec<String> = Vec::new();
        // The outcome of each object's last hearthd request, for `status.lastError`.
        let mut outcomes: BTreeMap<String, Option<String>> = BTreeMap::new();
        for action in planned {
            let uid = action_uid(&action);
            let is_status = matches!(action, Action::SetStatus { .. });
            if !is_status && uid.as_ref().is_some_and(|u| blocked.contains(u)) {
                continue;
            }
            let result = self.apply(&action).await;
            if let Some(d) = hearthd_request_for(&action, &desired) {
                let outcome = result.as_ref().err().map(ToString::to_string);
                outcomes.insert(d.object.uid.clone(), outcome);
            }
            if let Err(e) = result {
                slog::warn!(self.log, "action failed"; "action" => ?action, "error" => %e);
                report.failed.push(format!("{action:?}: {e}"));
                blocked.extend(uid);
            }
        }
        for d in &desired {
            let Some(outcome) = outcomes.get(&d.object.uid) else {
                continue;
            };
            if d.status.last_error != *outcome && !d.deleting {
                let patch = json!({ "status": { "lastError": outcome } });
                let api = Api::<MicroVM>::namespaced(self.client.clone(), &d.object.namespace);
                if let Err(e) = api
                    .patch_status(
                        &d.object.name,
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    report
                        .failed
                        .push(format!("lastError of {}: {e}", d.object.name));
                }
            }
        }
        Ok(report)
    }

    async fn apply(&self, action: &Action) -> Result<(), NodeError> {
        let api = |o: &ObjectRef| Api::<MicroVM>::namespaced(self.client.clone(), &o.namespace);
        match action {
            Action::AddFinalizer(o) | Action::RemoveFinalizer(o) => {
                let add = matches!(action, Action::AddFinalizer(_));
                // Read, then write with the resourceVersion read (see `finalizer`).
                let current = api(o).get(&o.name).await?;
                let patch = finalizer_patch(&current, add);
                api(o)
                    .patch(&o.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
            Action::SetStatus { object, status } => {
                let patch = json!({ "status": status_patch(status) });
                api(object)
                    .patch_status(&object.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
            Action::Create { spec, key, .. } => {
                self.hearthd.create((**spec).clone(), key.clone()).await?;
            }
            Action::Start { vm, key } => {
                self.hearthd
                    .lifecycle(vm.clone(), "start", key.clone())
                    .await?;
            }
            Action::Stop { vm, key } => {
                self.hearthd
                    .lifecycle(vm.clone(), "stop", key.clone())
                    .await?;
            }
            Action::Delete { vm, .. } => self.hearthd.delete(vm.clone()).await?,
        }
        slog::info!(self.log, "done"; "action" => ?action);
        Ok(())
    }

    /// Reconciles on every MicroVM or placeholder change, and every `resync` regardless.
    pub async fn run(mut self, resync: Duration) -> Result<(), NodeError> {
        let mvms: Api<MicroVM> = Api::all(self.client.clone());
        let pods: Api<Pod> = Api::all(self.client.clone());
        let pod_cfg = watcher::Config::default()
            .fields(&format!("spec.nodeName={}", self.node))
            .labels(PLACEHOLDER_UID_LABEL);
        let mut trigger = Trigger::new(mvms, pods, pod_cfg, resync);
        loop {
            trigger.next().await;
            match self.reconcile_once().await {
                Ok(r) if !r.planned.is_empty() => {
                    slog::debug!(self.log, "pass"; "actions" => r.planned.len(), "failed" => r.failed.len());
                }
                Ok(_) => {}
                Err(e) => slog::warn!(self.log, "pass failed"; "error" => %e),
            }
        }
    }
}

/// The object a hearthd request is made for (`None` for orphans and Kubernetes writes).
fn hearthd_request_for<'a>(a: &Action, desired: &'a [Desired]) -> Option<&'a Desired> {
    let vm = match a {
        Action::Create { object, .. } => return desired.iter().find(|d| d.object == *object),
        Action::Start { vm, .. } | Action::Stop { vm, .. } | Action::Delete { vm, .. } => vm,
        Action::AddFinalizer(_) | Action::RemoveFinalizer(_) | Action::SetStatus { .. } => {
            return None
        }
    };
    desired.iter().find(|d| vm_name(&d.object.uid) == *vm)
}

fn action_uid(a: &Action) -> Option<String> {
    match a {
        Action::AddFinalizer(o) | Action::RemoveFinalizer(o) => Some(o.uid.clone()),
        Action::Create { object, .. } | Action::SetStatus { object, .. } => {
            Some(object.uid.clone())
        }
        Action::Start { .. } | Action::Stop { .. } | Action::Delete { .. } => None,
    }
}

/// The status as a merge patch: fields that are unset become `null`, so the patch clears
/// them instead of leaving old values behind.
pub fn status_patch(status: &MicroVmStatus) -> Value {
    let mut v = serde_json::to_value(status).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut v {
        for key in [
            "phase",
            "node",
            "vm",
            "guestIp",
            "observedGeneration",
            "lastEvent",
        ] {
            map.entry(key).or_insert(Value::Null);
        }
        map.entry("conditions").or_insert_with(|| json!([]));
    }
    v
}

/// Puts the last hearthd event of each object's VM into its status, merging with a status
/// update `plan` already made or adding one.
pub fn with_events(
    actions: &mut Vec<Action>,
    desired: &[Desired],
    events: &BTreeMap<String, LastEvent>,
) {
    for d in desired.iter().filter(|d| !d.deleting) {
        let Some(event) = events.get(&vm_name(&d.object.uid)) else {
            continue;
        };
        if d.status.last_event.as_ref() == Some(event) {
            continue;
        }
        let existing = actions.iter_mut().find_map(|a| match a {
            Action::SetStatus { object, status } if *object == d.object => Some(status),
            _ => None,
        });
        if let Some(status) = existing {
            status.last_event = Some(event.clone());
        } else {
            let mut status = d.status.clone();
            status.last_event = Some(event.clone());
            actions.push(Action::SetStatus {
                object: d.object.clone(),
                status: Box::new(status),
            });
        }
    }
}
