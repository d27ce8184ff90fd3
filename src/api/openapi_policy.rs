//! The lifecycle-policy part of the `OpenAPI` document ([`super::openapi`]): `PATCH
//! /v1/vms/{name}`, the policy fields of `CreateVm` and `VmInfo`, and the event reasons.

use serde_json::{json, Value};

use super::openapi::{json_body, json_response, responses, schema, vm_name_param, BODY};

/// Time limits every value of which the server takes (one unit, at most 365 days): what the
/// schema promises. The server also takes forms such as `1h 30m`.
const CREATE_TTL: &str = "^([1-9][0-9]{0,4}[sm]|[1-9][0-9]{0,2}h|[1-9][0-9]?d)$";
/// [`CREATE_TTL`], or an extension of the current limit with a leading `+`.
const UPDATE_TTL: &str = "^\\+?([1-9][0-9]{0,4}[sm]|[1-9][0-9]{0,2}h|[1-9][0-9]?d)$";

const RESTART: &str = "^(no|always|on-failure(:([1-9][0-9]{0,3}|10000))?)$";

/// `no`, `on-failure`, `on-failure:N` (1-10000) or `always`.
fn restart_schema() -> Value {
    json!({"type": "string", "pattern": RESTART,
        "description": "What hearthd does when the VMM exits unasked: no (default), \
                        on-failure[:N] (crashes, at most N in a row), always (also a guest \
                        shutdown). Backoff 1 s doubling to 5 min; reset after 10 stable minutes"})
}

fn on_expiry_schema() -> Value {
    json!({"type": "string", "enum": ["stop", "delete", "snapshot"], "default": "stop",
        "description": "At the time limit: stop, delete, or snapshot (as \
                        <vm>-expired-<deadline ms>) then stop; a failed snapshot stops it all \
                        the same"})
}

/// Adds the policy parts to the core document `doc`.
pub fn extend(doc: &mut Value) {
    let mut with_body: Vec<(&str, &str)> = vec![
        ("400", "Invalid body, field or query parameter"),
        ("404", "No such VM"),
        ("409", "The VM is being deleted"),
        ("500", "Internal error"),
    ];
    with_body.extend(BODY);
    doc["paths"]["/v1/vms/{name}"]["patch"] = json!({
        "operationId": "updateVm",
        "summary": "Change a VM's labels, restart policy or time limit (running or not)",
        "parameters": [vm_name_param()],
        "requestBody": json_body("UpdateVm"),
        "responses": responses(&[("200", json_response("The VM", schema("VmInfo")))], &with_body),
    });
    node_paths(doc);
    let schemas = &mut doc["components"]["schemas"];
    schemas["CordonRequest"] = json!({
        "type": "object", "additionalProperties": false,
        "properties": {"reason": {"type": ["string", "null"], "maxLength": 1024}}
    });
    schemas["DrainRequest"] = json!({
        "type": "object", "additionalProperties": false,
        "properties": {
            "reason": {"type": ["string", "null"], "maxLength": 1024},
            "mode": {"type": ["string", "null"], "enum": ["stop", "snapshot", null],
                "default": "stop",
                "description": "stop each running VM, or snapshot it (as \
                                <vm>-drained-<its last start, ms>) then stop it"},
        }
    });
    schemas["NodeStatus"] = node_status();
    if let Some(health) = schemas["Health"]["properties"].as_object_mut() {
        health.insert("cordoned".into(), json!({"type": "boolean"}));
        health.insert("cordon_reason".into(), json!({"type": "string"}));
    }
    schemas["UpdateVm"] = json!({
        "type": "object", "additionalProperties": false,
        "properties": {
            "labels": {"type": "object",
                "propertyNames": {"minLength": 1, "maxLength": 63, "pattern": "^[^=]*$"},
                "additionalProperties": {"type": "string", "maxLength": 255},
                "description": "Replaces the whole set"},
            "restart": restart_schema(),
            "ttl": {"type": "string", "pattern": UPDATE_TTL,
                "description": "A time limit from now (30m, 1h30m) or, with a leading +, an \
                                extension of the current one; more than 0, at most 365 days \
                                (the pattern is the part of that any value matches)"},
            "on_expiry": on_expiry_schema(),
        }
    });
    let create = &mut schemas["CreateVm"]["properties"];
    create["restart"] = restart_schema();
    create["ttl"] = json!({"type": "string", "pattern": CREATE_TTL,
        "description": "A time limit from creation (30m, 1h30m), at most 365 days (the \
                        pattern is the part of that any value matches)"});
    create["on_expiry"] = on_expiry_schema();
    let info = &mut schemas["VmInfo"]["properties"];
    info["restart_attempts"] = json!({"type": "integer", "minimum": 0,
        "description": "Restarts made since the VM last ran stably"});
    info["restart_in_secs"] = json!({"type": "integer", "minimum": 0,
        "description": "Seconds until a scheduled restart"});
    info["expires_at"] = json!({"type": "integer",
        "description": "The time limit's deadline, Unix seconds"});
    info["time_left_secs"] = json!({"type": "integer", "minimum": 0});
    info["parked_snapshot"] = json!({"type": "string",
        "description": "The newest snapshot an expiry or drain took of it (while it exists)"});
    if let Some(reasons) = schemas["Event"]["properties"]["reason"]["enum"].as_array_mut() {
        reasons.extend([json!("policy"), json!("expired"), json!("drain")]);
    }
}

/// `GET /v1/node`'s answer (and cordon's, uncordon's and drain's).
fn node_status() -> Value {
    json!({
        "type": "object", "required": ["cordoned", "policy_ticks"],
        "properties": {
            "cordoned": {"type": "boolean"},
            "policy_ticks": {"type": "integer", "minimum": 0,
                "description": "passes the policy loop made since hearthd started (each checks \
                                due restarts and time limits; also hearth_policy_ticks_total): \
                                once it has grown by a few after an event, the policies had \
                                their chance to act on it"},
            "reason": {"type": "string"},
            "drain": {"type": "object",
                "required": ["mode", "total", "stopped", "snapshots", "failed", "done"],
                "properties": {
                    "mode": {"type": "string", "enum": ["stop", "snapshot"]},
                    "total": {"type": "integer", "minimum": 0},
                    "stopped": {"type": "integer", "minimum": 0},
                    "snapshots": {"type": "array", "description": "[VM name, snapshot] pairs",
                        "items": {"type": "array", "items": {"type": "string"},
                                  "minItems": 2, "maxItems": 2}},
                    "failed": {"type": "array", "description": "[VM name, why] pairs",
                        "items": {"type": "array", "items": {"type": "string"},
                                  "minItems": 2, "maxItems": 2}},
                    "done": {"type": "boolean"},
                    "resumed": {"type": "boolean",
                        "description": "resumed by a start of hearthd after the one that \
                                        began it stopped; total counts the VMs still running then"},
                }},
            "jailed": {"type": "boolean",
                "description": "whether every VMM runs through Firecracker's jailer, decided at \
                                hearthd's start from [jailer] enabled (true, false or \"auto\": \
                                jailed where this host can); always given by hearthd"},
            "unjailed_reasons": {"type": "array", "items": {"type": "string"},
                "description": "when jailed is false: why, one line each (a blocker \"auto\" \
                                found, with its fix, or [jailer] enabled = false)"},
        }
    })
}

/// `/v1/node` and its cordon, uncordon and drain.
fn node_paths(doc: &mut Value) {
    let ok = || json_response("The host's state", schema("NodeStatus"));
    let mut with_body: Vec<(&str, &str)> = vec![
        ("400", "Invalid body, field or query parameter"),
        ("500", "Internal error"),
    ];
    with_body.extend(BODY);
    let paths = &mut doc["paths"];
    paths["/v1/node"] = json!({"get": {
        "operationId": "getNode",
        "summary": "Whether the host is cordoned, the running or last drain's progress, and whether its VMMs run jailed (and if not, why)",
        "responses": responses(&[("200", ok())], &[]),
    }});
    paths["/v1/node/cordon"] = json!({"post": {
        "operationId": "cordonNode",
        "summary": "Refuse new VMs (503 cordoned) until uncordoned; kept across restarts",
        "requestBody": json_body("CordonRequest"),
        "responses": responses(&[("200", ok())], &with_body),
    }});
    paths["/v1/node/uncordon"] = json!({"post": {
        "operationId": "uncordonNode",
        "summary": "Take new VMs again",
        "responses": responses(&[("200", ok())], &[("500", "Internal error")]),
    }});
    paths["/v1/node/drain"] = json!({"post": {
        "operationId": "drainNode",
        "summary": "Cordon, then stop (or snapshot and stop) every running VM, four at a \
                    time; answers when done, or at once with wait=false",
        "parameters": [{"name": "wait", "in": "query", "required": false,
            "schema": {"type": "boolean", "default": true},
            "description": "false: answer 202 as soon as the drain has started; GET /v1/node \
                            shows its progress"}],
        "requestBody": json_body("DrainRequest"),
        "responses": responses(&[("200", ok()), ("202", json_response("The drain started",
            schema("NodeStatus")))], &{
            let mut v = with_body.clone();
            v.push(("409", "A drain is already running"));
            v
        }),
    }});
}
