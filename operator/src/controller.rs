//! The controller (`hearth-operator controller`, one per cluster): keeps one placeholder Pod
//! per MicroVM ([`crate::placement`]), replaces spent ones, and reports the placement in the
//! MicroVM's status. Deleted MicroVMs' Pods go by Kubernetes' garbage collection (the Pod is
//! owned by the MicroVM), after the node agent's finalizer let the MicroVM go; a MicroVM
//! deleted while no node holds it has that finalizer taken off here.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::crd::{MicroVM, FINALIZER};
use crate::finalizer::finalizer_patch;
use crate::node::status_patch;
use crate::placement::{
    is_spent, may_release, placeholder_pod, placement_status, PLACEHOLDER_UID_LABEL,
};
use crate::trigger::Trigger;

/// Why a controller pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ControllerReport {
    /// Placeholder Pods created (`namespace/name`).
    pub created: Vec<String>,
    /// Spent placeholder Pods deleted.
    pub replaced: Vec<String>,
    /// MicroVMs whose status was updated.
    pub status_updates: Vec<String>,
    /// MicroVMs being deleted whose finalizer was taken off (no node held them).
    pub released: Vec<String>,
    /// Failures, with why.
    pub failed: Vec<String>,
}

/// The cluster-wide controller.
pub struct Controller {
    client: Client,
    overhead_mib: u32,
    log: slog::Logger,
}

impl Controller {
    /// A controller adding `overhead_mib` of memory to each placeholder.
    pub fn new(client: Client, overhead_mib: u32, log: slog::Logger) -> Self {
        Controller {
            client,
            overhead_mib,
            log,
        }
    }

    /// One pass over every MicroVM.
    pub async fn reconcile_once(&self) -> Result<ControllerReport, ControllerError> {
        let mvms: Api<MicroVM> = Api::all(self.client.clone());
        let pods: Api<Pod> = Api::all(self.client.clone());
        let placeholders: BTreeMap<String, Pod> = pods
            .list(&ListParams::default().labels(PLACEHOLDER_UID_LABEL))
            .await?
            .items
            .into_iter()
            .filter_map(|p| Some((p.labels().get(PLACEHOLDER_UID_LABEL)?.clone(), p)))
            .collect();
        let mut report = ControllerReport::default();
        for m in mvms.list(&ListParams::default()).await?.items {
            let (Some(uid), Some(ns)) = (m.uid(), m.namespace()) else {
                continue;
            };
            let id = format!("{ns}/{}", m.name_any());
            if m.metadata.deletion_timestamp.is_some() {
                self.release(&m, &ns, placeholders.get(&uid), &mut report)
                    .await;
                continue;
            }
            let ns_pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            let mut pod = placeholders.get(&uid);
            if let Some(p) = pod.filter(|p| is_spent(p)) {
                // Evicted or failed: delete it; the next pass creates a new one.
                if p.metadata.deletion_timestamp.is_none() {
                    match ns_pods
                        .delete(&p.name_any(), &DeleteParams::default())
                        .await
                    {
                        Ok(_) => report.replaced.push(id.clone()),
                        Err(e) => report.failed.push(format!("delete placeholder {id}: {e}")),
                    }
                }
            } else if pod.is_none() {
                match placeholder_pod(&m, self.overhead_mib) {
                    Ok(p) => match ns_pods.create(&PostParams::default(), &p).await {
                        Ok(_) => report.created.push(id.clone()),
                        Err(e) => report.failed.push(format!("create placeholder {id}: {e}")),
                    },
                    Err(e) => report.failed.push(format!("{id}: {e}")),
                }
                pod = None;
            }
            let current = m.status.clone().unwrap_or_default();
            if let Some(status) = placement_status(&current, pod) {
                let patch = json!({ "status": status_patch(&status) });
                let api: Api<MicroVM> = Api::namespaced(self.client.clone(), &ns);
                match api
                    .patch_status(
                        &m.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    Ok(_) => report.status_updates.push(id),
                    Err(e) => report.failed.push(format!("status of {id}: {e}")),
                }
            }
        }
        for f in &report.failed {
            slog::warn!(self.log, "controller action failed"; "error" => f);
        }
        Ok(report)
    }

    /// Takes the node agent's finalizer off a MicroVM being deleted that no node holds
    /// ([`may_release`]): otherwise an object deleted while unplaced would stay forever.
    async fn release(
        &self,
        m: &MicroVM,
        ns: &str,
        pod: Option<&Pod>,
        report: &mut ControllerReport,
    ) {
        let status = m.status.clone().unwrap_or_default();
        if !m.finalizers().iter().any(|f| f == FINALIZER) || !may_release(&status, pod) {
            return;
        }
        let api: Api<MicroVM> = Api::namespaced(self.client.clone(), ns);
        let id = format!("{ns}/{}", m.name_any());
        let patch = finalizer_patch(m, false);
        match api
            .patch(
                &m.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => report.released.push(id),
            Err(e) => report.failed.push(format!("release {id}: {e}")),
        }
    }

    /// Reconciles on every MicroVM or placeholder change, and every `resync` regardless.
    pub async fn run(self, resync: Duration) -> Result<(), ControllerError> {
        let mvms: Api<MicroVM> = Api::all(self.client.clone());
        let pods: Api<Pod> = Api::all(self.client.clone());
        let pod_cfg = watcher::Config::default().labels(PLACEHOLDER_UID_LABEL);
        let mut trigger = Trigger::new(mvms, pods, pod_cfg, resync);
        loop {
            trigger.next().await;
            if let Err(e) = self.reconcile_once().await {
                slog::warn!(self.log, "controller pass failed"; "error" => %e);
            }
        }
    }
}
