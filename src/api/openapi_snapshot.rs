//! The pause, resume, snapshot and fork part of the `OpenAPI` document ([`super::openapi`]):
//! paths and schemas, with the constraints `hearth_proto::api_snapshot` enforces.

use serde_json::{json, Map, Value};

use super::openapi::VM_NAME;
use super::openapi::{
    action, idempotency_param, json_body, json_response, responses, schema, vm_name_param, BODY,
};

fn snapshot_name_param() -> Value {
    json!({"name": "name", "in": "path", "required": true,
           "schema": {"type": "string", "pattern": VM_NAME}})
}

fn with_body(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    extra.iter().copied().chain(BODY).collect()
}

/// The snapshot paths.
pub fn paths() -> Map<String, Value> {
    let mut out = Map::new();
    out.insert(
        "/v1/vms/{name}/pause".into(),
        action("pause", "Pause a running VM's vCPUs (state paused)"),
    );
    out.insert(
        "/v1/vms/{name}/resume".into(),
        action("resume", "Resume a paused VM (state running)"),
    );
    out.insert(
        "/v1/vms/{name}/snapshots".into(),
        json!({"post": {
            "operationId": "createSnapshot",
            "summary": "Snapshot a running or paused VM: memory, VMM state and root disk at one \
                        paused instant; the VM is then left as `leave` asks",
            "parameters": [vm_name_param(), idempotency_param()],
            "requestBody": json_body("SnapshotCreate"),
            "responses": responses(
                &[("201", json_response("The snapshot", schema("SnapshotInfo")))],
                &with_body(&[
                    ("400", "Invalid body, field, query parameter or Idempotency-Key"),
                    ("404", "No such VM"),
                    ("409", "The VM is not running or paused (invalid_state), the name is \
                             taken, or the idempotency key was used for another request or \
                             is in progress (conflict)"),
                    ("500", "A step failed; the files were removed and the VM put back"),
                ])),
        }}),
    );
    out.insert(
        "/v1/vms/{name}/fork".into(),
        json!({"post": {
            "operationId": "forkVm",
            "summary": "Snapshot the VM (it keeps running) and restore the snapshot as a new VM",
            "parameters": [vm_name_param(), idempotency_param()],
            "requestBody": json_body("ForkVm"),
            "responses": responses(
                &[("201", json_response("The new VM", schema("VmInfo")))],
                &with_body(&[
                    ("400", "Invalid body, field, query parameter or Idempotency-Key"),
                    ("404", "No such VM"),
                    ("409", "The VM cannot be snapshotted in its state, the new name is \
                             taken, or the idempotency key was used for another request or \
                             is in progress"),
                    ("500", "A step failed and was undone"),
                ])),
        }}),
    );
    out.insert(
        "/v1/snapshots".into(),
        json!({"get": {
            "operationId": "listSnapshots",
            "summary": "Every snapshot, ordered by name",
            "responses": responses(
                &[("200", json_response("The snapshots",
                    json!({"type": "array", "items": schema("SnapshotInfo")})))],
                &[]),
        }}),
    );
    out.insert(
        "/v1/snapshots/{name}".into(),
        json!({
            "get": {
                "operationId": "getSnapshot",
                "summary": "One snapshot",
                "parameters": [snapshot_name_param()],
                "responses": responses(
                    &[("200", json_response("The snapshot", schema("SnapshotInfo")))],
                    &[("404", "No such snapshot")]),
            },
            "delete": {
                "operationId": "deleteSnapshot",
                "summary": "Remove a snapshot's files; refused while VMs restored from it exist",
                "parameters": [snapshot_name_param()],
                "responses": responses(&[("204", json!({"description": "Removed"}))], &[
                    ("404", "No such snapshot"),
                    ("409", "VMs restored from it exist, or it is being taken (in_use)"),
                    ("500", "Its files could not be removed; retry"),
                ]),
            }
        }),
    );
    out
}

/// The snapshot schemas.
pub fn schemas() -> Map<String, Value> {
    let mut out = Map::new();
    out.insert(
        "SnapshotCreate".into(),
        json!({
            "type": "object", "additionalProperties": false,
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": VM_NAME},
                "leave": {"type": "string", "enum": ["paused", "running", "stopped"],
                    "default": "running"},
            }
        }),
    );
    out.insert(
        "ForkVm".into(),
        json!({
            "type": "object", "additionalProperties": false,
            "required": ["name"],
            "properties": {"name": {"type": "string", "pattern": VM_NAME}}
        }),
    );
    out.insert(
        "SnapshotInfo".into(),
        json!({
            "type": "object",
            "required": ["name", "state", "source_vm", "created_at", "mem_size_mib", "vcpus",
                         "fc_version", "disk_bytes", "mem_file_bytes", "in_use_by"],
            "properties": {
                "name": {"type": "string"},
                "state": {"type": "string", "enum": ["creating", "ready", "deleting", "lost"]},
                "source_vm": {"type": "string"},
                "created_at": {"type": "integer", "description": "Unix milliseconds"},
                "mem_size_mib": {"type": "integer"},
                "vcpus": {"type": "integer"},
                "fc_version": {"type": "string"},
                "disk_bytes": {"type": "integer"},
                "mem_file_bytes": {"type": "integer"},
                "in_use_by": {"type": "array", "items": {"type": "string"}},
            }
        }),
    );
    out
}
