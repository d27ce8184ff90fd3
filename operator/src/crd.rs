//! The `MicroVM` custom resource (`microvms.hearth.dev`, `v1alpha1`, namespaced): its spec is
//! what hearthd's `CreateVm` takes, its status what the node agent saw on hearthd. The CRD's
//! OpenAPI schema is generated from these types ([`crd`]); `deploy/kubernetes/crd.yaml` is
//! that output, checked in.

use std::collections::BTreeMap;

use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group.
pub const GROUP: &str = "hearth.dev";
/// The finalizer the node agent puts on every MicroVM it runs: the object stays until the VM
/// is deleted from hearthd.
pub const FINALIZER: &str = "hearth.dev/vm";

/// What a MicroVM is made of and whether it should run.
#[derive(CustomResource, Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "hearth.dev",
    version = "v1alpha1",
    kind = "MicroVM",
    plural = "microvms",
    singular = "microvm",
    shortname = "mvm",
    namespaced,
    status = "MicroVmStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".status.node"}"#,
    printcolumn = r#"{"name":"IP","type":"string","jsonPath":".status.guestIp"}"#,
    printcolumn = r#"{"name":"vCPUs","type":"integer","jsonPath":".spec.vcpus"}"#,
    printcolumn = r#"{"name":"Memory","type":"integer","jsonPath":".spec.memoryMib","description":"Guest memory in MiB"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
// Unknown fields are not refused: the API server prunes them, and an older agent must read
// objects written for a newer CRD.
#[serde(rename_all = "camelCase")]
pub struct MicroVmSpec {
    /// Name of a kernel image in each node's hearthd image store.
    #[schemars(length(min = 1, max = 253))]
    pub kernel: String,
    /// Name of a root filesystem image in each node's hearthd image store (an imported
    /// ext4 image, or an OCI image pulled there under this name).
    #[schemars(length(min = 1, max = 253))]
    pub rootfs: String,
    /// Number of vCPUs (1-32); also the placeholder Pod's CPU request.
    #[serde(default = "default_vcpus")]
    #[schemars(range(min = 1, max = hearth_proto::api::MAX_VCPUS))]
    pub vcpus: u8,
    /// Guest memory in MiB (at least 16); with the VMM's overhead, the placeholder Pod's
    /// memory request.
    #[serde(default = "default_memory")]
    #[schemars(range(min = hearth_proto::api::MIN_MEMORY_MIB, max = hearth_proto::api::MAX_MEMORY_MIB))]
    pub memory_mib: u32,
    /// Root disk size in bytes, a multiple of 512; default: the image's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = hearth_proto::api::SECTOR, max = hearth_proto::api::MAX_DISK_SIZE))]
    #[schemars(extend("multipleOf" = 512))]
    pub disk_size: Option<u64>,
    /// Extra kernel command-line arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = hearth_proto::api::MAX_BOOT_ARGS))]
    pub boot_args: Option<String>,
    /// Give the guest outbound access through NAT.
    #[serde(default)]
    pub nat: bool,
    /// Labels given to the VM on hearthd (besides the operator's own `hearth.dev/*` ones).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Wait for the guest agent before calling the VM running.
    #[serde(default = "default_true")]
    pub ready_probe: bool,
    /// For a root filesystem built from an OCI image, which init the guest boots: `hearth`
    /// (hearth's agent runs the image's command) or `image` (the image's own init); default:
    /// the one the image was built for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "init_schema")]
    pub init: Option<GuestInit>,
    /// Whether the VM should run (`false`: created and kept stopped).
    #[serde(default = "default_true")]
    pub running: bool,
    /// hearthd's restart policy: `no`, `on-failure`, `on-failure:N` (N in 1-10000) or
    /// `always`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(no|always|on-failure(:([1-9][0-9]{0,3}|10000))?)$"))]
    pub restart: Option<String>,
}

/// Which init a guest boots (hearthd's `init`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GuestInit {
    /// hearth's agent as PID 1, running the image's command.
    Hearth,
    /// The image's own init.
    Image,
}

impl GuestInit {
    /// hearthd's value.
    pub fn mode(self) -> hearth_proto::image_config::InitMode {
        match self {
            GuestInit::Hearth => hearth_proto::image_config::InitMode::Hearth,
            GuestInit::Image => hearth_proto::image_config::InitMode::Image,
        }
    }
}

/// `init`'s schema written out: the generated one for an optional enum is an `anyOf` with
/// types inside, which a structural schema may not have.
fn init_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "For a root filesystem built from an OCI image, which init the guest boots: `hearth` (hearth's agent runs the image's command) or `image` (the image's own init); default: the one the image was built for.",
        "type": "string",
        "enum": ["hearth", "image"],
        "nullable": true,
    })
}

fn default_vcpus() -> u8 {
    1
}

fn default_memory() -> u32 {
    128
}

fn default_true() -> bool {
    true
}

/// Where a MicroVM is, as the controller and node agent last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MicroVmStatus {
    /// `Pending` (not placed yet), `Scheduled` (placed, VM not made yet), `Creating`,
    /// `Running`, `Unready`, `Paused`, `Stopped`, `Crashed`, `Failed` (from hearthd),
    /// `Invalid` (hearthd would refuse the spec), `Lost` (the VM vanished from its node),
    /// `Replacing` (spec changed), `Deleting` or `Unknown` (hearthd unreachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The node kube-scheduler bound the placeholder Pod to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The VM's name on that node's hearthd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    /// The guest's IPv4 address on its node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_ip: Option<String>,
    /// The generation of the spec the node agent last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How many times the VM vanished from its node and was created again (part of the
    /// create's idempotency key, so a new VM is made rather than the old answer replayed).
    #[serde(default)]
    pub lost: u32,
    /// `Scheduled` and `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<MicroVmCondition>,
    /// The last request hearthd refused for this MicroVM, with its reason (cleared by the
    /// next one it accepts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The last lifecycle event hearthd reported for the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event: Option<LastEvent>,
}

/// A condition, as Kubernetes objects carry them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MicroVmCondition {
    /// `Scheduled` or `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A hearthd lifecycle event, as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastEvent {
    /// The VM state entered (`running`, `stopped`, `crashed`...).
    pub state: String,
    /// Why (`user`, `crash`, `policy`...).
    pub reason: String,
    /// Detail, e.g. an error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Unix time in milliseconds.
    pub at_ms: u64,
}

/// The CRD object, generated from the types above.
pub fn crd(
) -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    MicroVM::crd()
}

/// The CRD as the YAML document `deploy/kubernetes/crd.yaml` holds.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let body = serde_yaml::to_string(&crd())?;
    Ok(format!(
        "# Generated by `hearth-operator crd`; do not edit (operator/tests/crd.rs checks it).\n{body}"
    ))
}
