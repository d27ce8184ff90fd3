//! Placement by kube-scheduler: each MicroVM gets a placeholder Pod requesting its vCPUs and
//! memory plus the VMM's overhead, selecting and tolerating hearth nodes. The Pod runs only
//! the pause image; whichever node the scheduler binds it to runs the VM. hearth adds no
//! placement logic of its own. [`placeholder_pod`] builds the Pod (pure);
//! [`placement_status`] says what the MicroVM's status should show about it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::{MicroVM, MicroVmCondition, MicroVmStatus};

/// Pod label holding the MicroVM's uid (node agents select their Pods by it).
pub const PLACEHOLDER_UID_LABEL: &str = "hearth.dev/microvm-uid";
/// Node label the placeholder selects: set it on the nodes that run hearthd.
pub const NODE_LABEL: &str = "hearth.dev/node";
/// Taint key the placeholder tolerates, so hearth nodes can be kept for MicroVMs.
pub const TAINT_KEY: &str = "hearth.dev/microvms";
/// The image the placeholder runs: it only holds the reservation.
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";

/// Why a placeholder cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlacementError {
    /// The object has no uid or name yet (not read from the API server).
    #[error("MicroVM has no {0}: it was not read from the API server")]
    Unsaved(&'static str),
}

/// The placeholder Pod's name for the MicroVM with `uid`.
pub fn pod_name(uid: &str) -> String {
    format!("microvm-{uid}")
}

/// The placeholder Pod for `mvm`, requesting its resources plus `overhead_mib` of memory for
/// the VMM (Firecracker's own footprint, hearth's per-VM processes). Requests equal limits,
/// so the Pod is in the `Guaranteed` `QoS` class and is evicted last.
pub fn placeholder_pod(mvm: &MicroVM, overhead_mib: u32) -> Result<Pod, PlacementError> {
    let uid = mvm.uid().ok_or(PlacementError::Unsaved("uid"))?;
    let name = mvm
        .metadata
        .name
        .clone()
        .ok_or(PlacementError::Unsaved("name"))?;
    let owner = OwnerReference {
        api_version: MicroVM::api_version(&()).into_owned(),
        kind: MicroVM::kind(&()).into_owned(),
        name: name.clone(),
        uid: uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let memory = u64::from(mvm.spec.memory_mib) + u64::from(overhead_mib);
    let resources: BTreeMap<String, Quantity> = [
        ("cpu".to_owned(), Quantity(mvm.spec.vcpus.to_string())),
        ("memory".to_owned(), Quantity(format!("{memory}Mi"))),
    ]
    .into();
    let labels: BTreeMap<String, String> = [
        (PLACEHOLDER_UID_LABEL.to_owned(), uid.clone()),
        ("hearth.dev/microvm".to_owned(), name),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "hearth-operator".to_owned(),
        ),
    ]
    .into();
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(&uid)),
            namespace: mvm.namespace(),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "placeholder".into(),
                image: Some(PAUSE_IMAGE.into()),
                resources: Some(ResourceRequirements {
                    requests: Some(resources.clone()),
                    limits: Some(resources),
                    ..ResourceRequirements::default()
                }),
                ..Container::default()
            }],
            node_selector: Some([(NODE_LABEL.to_owned(), "true".to_owned())].into()),
            tolerations: Some(vec![Toleration {
                key: Some(TAINT_KEY.into()),
                operator: Some("Exists".into()),
                effect: Some("NoSchedule".into()),
                ..Toleration::default()
            }]),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            ..PodSpec::default()
        }),
        status: None,
    })
}

/// Whether a placeholder no longer holds a place (evicted, failed, being deleted): it is
/// replaced by a new one, which the scheduler places anew.
pub fn is_spent(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_some() || matches!(phase, Some("Failed" | "Succeeded"))
}

/// The status the controller wants for a MicroVM whose placeholder is `pod`, or `None` when
/// the current one is right (once bound, the node agent owns the rest of the status).
pub fn placement_status(current: &MicroVmStatus, pod: Option<&Pod>) -> Option<MicroVmStatus> {
    let node = pod
        .filter(|p| !is_spent(p))
        .and_then(|p| p.spec.as_ref())
        .and_then(|s| s.node_name.clone());
    match node {
        Some(node) if current.node.as_deref() == Some(node.as_str()) => None,
        Some(node) => Some(MicroVmStatus {
            phase: Some("Scheduled".into()),
            node: Some(node.clone()),
            conditions: vec![MicroVmCondition {
                type_: "Scheduled".into(),
                status: "True".into(),
                reason: Some("Bound".into()),
                message: Some(format!("Placed on {node}")),
            }],
            lost: current.lost,
            ..MicroVmStatus::default()
        }),
        None => {
            // Not placed (yet): say why, from the Pod's PodScheduled condition if it has one.
            let message = pod
                .and_then(|p| p.status.as_ref())
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
                .and_then(|c| c.message.clone());
            let want = MicroVmStatus {
                phase: Some("Pending".into()),
                conditions: vec![MicroVmCondition {
                    type_: "Scheduled".into(),
                    status: "False".into(),
                    reason: Some("Unschedulable".into()),
                    message,
                }],
                lost: current.lost,
                ..MicroVmStatus::default()
            };
            (want.phase != current.phase
                || want.conditions != current.conditions
                || current.node.is_some())
            .then_some(want)
        }
    }
}

/// Whether the controller may take the node agent's finalizer off a MicroVM being deleted:
/// no live placeholder is bound (so no agent claims it by binding) and its status names no
/// node (so no agent claims it by status). A VM left on a node that comes back is an orphan
/// there and deleted by that node's agent.
pub fn may_release(status: &MicroVmStatus, pod: Option<&Pod>) -> bool {
    let bound = pod
        .filter(|p| !is_spent(p))
        .and_then(|p| p.spec.as_ref())
        .is_some_and(|s| s.node_name.is_some());
    !bound && status.node.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MicroVmSpec;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};

    fn mvm() -> MicroVM {
        let mut m = MicroVM::new(
            "web",
            MicroVmSpec {
                kernel: "vmlinux".into(),
                rootfs: "base".into(),
                vcpus: 2,
                memory_mib: 512,
                disk_size: None,
                boot_args: None,
                nat: false,
                labels: BTreeMap::new(),
                ready_probe: true,
                init: None,
                running: true,
                restart: None,
            },
        );
        m.metadata.namespace = Some("ns1".into());
        m.metadata.uid = Some("u-1".into());
        m
    }

    #[test]
    fn placeholder_requests_vm_resources_plus_overhead() {
        let pod = placeholder_pod(&mvm(), 64).unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("microvm-u-1"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("ns1"));
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("MicroVM", "u-1")
        );
        assert_eq!(owner.api_version, "hearth.dev/v1alpha1");
        assert_eq!(owner.controller, Some(true));
        let spec = pod.spec.unwrap();
        let res = spec.containers[0].resources.clone().unwrap();
        let req = res.requests.unwrap();
        assert_eq!(req["cpu"].0, "2");
        assert_eq!(req["memory"].0, "576Mi");
        assert_eq!(
            res.limits.unwrap(),
            req,
            "Guaranteed QoS: limits = requests"
        );
        assert_eq!(spec.node_selector.unwrap()[NODE_LABEL], "true");
        assert_eq!(spec.tolerations.unwrap()[0].key.as_deref(), Some(TAINT_KEY));
        assert_eq!(pod.metadata.labels.unwrap()[PLACEHOLDER_UID_LABEL], "u-1");
    }

    #[test]
    fn unsaved_object_is_refused() {
        let mut m = mvm();
        m.metadata.uid = None;
        assert_eq!(placeholder_pod(&m, 0), Err(PlacementError::Unsaved("uid")));
    }

    fn bound(node: Option<&str>, phase: &str) -> Pod {
        let mut p = placeholder_pod(&mvm(), 0).unwrap();
        p.spec.as_mut().unwrap().node_name = node.map(str::to_owned);
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                message: Some("0/3 nodes are available: 3 Insufficient memory.".into()),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        });
        p
    }

    #[test]
    fn status_follows_binding() {
        let empty = MicroVmStatus::default();
        let pending = placement_status(&empty, Some(&bound(None, "Pending"))).unwrap();
        assert_eq!(pending.phase.as_deref(), Some("Pending"));
        assert_eq!(
            pending.conditions[0].message.as_deref(),
            Some("0/3 nodes are available: 3 Insufficient memory.")
        );
        // Written once, not again.
        assert_eq!(
            placement_status(&pending, Some(&bound(None, "Pending"))),
            None
        );
        let scheduled = placement_status(&pending, Some(&bound(Some("n1"), "Running"))).unwrap();
        assert_eq!(scheduled.node.as_deref(), Some("n1"));
        assert_eq!(scheduled.phase.as_deref(), Some("Scheduled"));
        // Once bound, the node agent's status is left alone.
        let mut running = scheduled.clone();
        running.phase = Some("Running".into());
        assert_eq!(
            placement_status(&running, Some(&bound(Some("n1"), "Running"))),
            None
        );
        // Evicted: pending again, the node cleared.
        let evicted = placement_status(&running, Some(&bound(Some("n1"), "Failed"))).unwrap();
        assert_eq!(
            (evicted.phase.as_deref(), evicted.node),
            (Some("Pending"), None)
        );
    }

    #[test]
    fn release_only_when_no_node_can_hold_the_vm() {
        let unplaced = MicroVmStatus::default();
        let placed = MicroVmStatus {
            node: Some("n1".into()),
            ..MicroVmStatus::default()
        };
        assert!(may_release(&unplaced, None));
        assert!(may_release(&unplaced, Some(&bound(None, "Pending"))));
        assert!(may_release(&unplaced, Some(&bound(Some("n1"), "Failed"))));
        assert!(!may_release(&unplaced, Some(&bound(Some("n1"), "Running"))));
        assert!(!may_release(&placed, None));
    }
}
