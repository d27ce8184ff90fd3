//! The OpenAPI 3 document of the API, written by hand next to the handlers. A test checks that
//! its operations are exactly the routes registered in [`super::routes`].

use serde_json::{json, Value};

use super::body::MAX_KEY_LEN;
use super::events::MAX_LIMIT;
use super::query::MAX_SEQ;
use hearth_proto::api;

pub(super) fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    })
}

pub(super) fn json_response(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

pub(super) fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

pub(super) fn json_body(name: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema(name)}}})
}

/// The pattern of a VM name (a DNS label); `hearth_proto::api::validate_vm_name` enforces it.
pub(super) const VM_NAME: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";
/// A snapshot name as a VM's spec records it: a user's (as [`VM_NAME`]), or a fork's own
/// `<vm>.fork`, which a create cannot name (refused with 400 `invalid_field`).
const FROM_SNAPSHOT: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\\.fork)?$";
/// The pattern of an image name; `crate::images::detect::name_problem` enforces it.
const IMAGE_NAME: &str = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$";

pub(super) fn vm_name_param() -> Value {
    json!({"name": "name", "in": "path", "required": true,
           "schema": {"type": "string", "pattern": VM_NAME}})
}

fn image_name_param() -> Value {
    json!({"name": "name", "in": "path", "required": true,
           "schema": {"type": "string", "pattern": IMAGE_NAME}})
}

pub(super) fn idempotency_param() -> Value {
    json!({
        "name": "Idempotency-Key", "in": "header", "required": false,
        "description": "Makes a retried request a no-op: the same key with the same request \
                        returns the first answer; with another request, 409. 1-255 visible \
                        ASCII characters (else 400).",
        "schema": {"type": "string", "pattern": format!("^[!-~]{{1,{MAX_KEY_LEN}}}$")}
    })
}

/// Error statuses most operations can answer besides their own: 400 for an unknown or
/// repeated query parameter, 401 on the TCP listener without the token, 503 while hearthd
/// shuts down (the supervisor no longer answers).
const COMMON: [(&str, &str); 3] = [
    (
        "400",
        "Invalid query parameter (unknown, repeated or malformed)",
    ),
    ("401", "Missing or wrong bearer token (TCP listener only)"),
    (
        "503",
        "hearthd is shutting down, or a dependency is missing or exhausted",
    ),
];

/// Statuses of an operation that reads a JSON body: 408 when the body does not arrive in
/// time, 413 above the size limit, 415 when it is not application/json.
pub(super) const BODY: [(&str, &str); 3] = [
    ("408", "The body did not arrive within the deadline"),
    ("413", "Body too large"),
    ("415", "Not application/json"),
];

/// A responses object: `ok` as given, [`COMMON`] errors, then `errors` (which win over
/// [`COMMON`] descriptions).
pub(super) fn responses(ok: &[(&str, Value)], errors: &[(&str, &str)]) -> Value {
    let mut out = serde_json::Map::new();
    for (code, v) in ok {
        out.insert((*code).to_owned(), v.clone());
    }
    for (code, description) in COMMON.iter().chain(errors) {
        out.insert((*code).to_owned(), error_response(description));
    }
    Value::Object(out)
}

/// Links from a response carrying a VM to every operation on it (for clients and for
/// stateful testing).
fn vm_links() -> Value {
    let name = json!({"name": "$response.body#/name"});
    let mut links = serde_json::Map::new();
    for op in [
        "getVm",
        "deleteVm",
        "startVm",
        "stopVm",
        "killVm",
        "restartVm",
        "setNat",
        "waitVm",
    ] {
        links.insert(
            op.to_owned(),
            json!({"operationId": op, "parameters": name}),
        );
    }
    Value::Object(links)
}

pub(super) fn action(verb: &str, summary: &str) -> Value {
    let mut ok = json_response("The VM after the action", schema("VmInfo"));
    ok["links"] = vm_links();
    json!({"post": {
        "operationId": format!("{verb}Vm"),
        "summary": summary,
        "parameters": [vm_name_param(), idempotency_param()],
        "responses": responses(&[("200", ok)], &[
            ("400", "Invalid query parameter or Idempotency-Key"),
            ("404", "No such VM"),
            ("409", "Not allowed in the VM's state, or the idempotency key was used for \
                     another request"),
            ("500", "A step failed and was undone"),
        ]),
    }})
}

/// The document served at `GET /v1/openapi.json`.
pub fn document() -> Value {
    let mut doc = core_document();
    if let Some(paths) = doc["paths"].as_object_mut() {
        paths.extend(super::openapi_exec::paths());
        paths.extend(super::openapi_snapshot::paths());
        paths.extend(super::openapi_oci::paths());
    }
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        schemas.extend(super::openapi_exec::schemas());
        schemas.extend(super::openapi_snapshot::schemas());
        schemas.extend(super::openapi_oci::schemas());
    }
    super::openapi_policy::extend(&mut doc);
    super::openapi_publish::extend(&mut doc);
    super::openapi_egress::extend(&mut doc);
    nullable_options(&mut doc["components"]["schemas"]);
    doc
}

/// The optional body properties that are `Option`s in Rust: serde takes `null` for them as
/// "left out", so the document says they may be `null` (`openapi_nulls` checks this list
/// against the parsers, both ways).
const NULL_AS_ABSENT: &[(&str, &[&str])] = &[
    (
        "CreateVm",
        &[
            "boot_args",
            "disk_size",
            "egress",
            "from_snapshot",
            "init",
            "ttl",
        ],
    ),
    ("PullImage", &["platform"]),
    ("ImportArchive", &["platform"]),
    ("ExecCreate", &["size", "timeout_secs", "user", "workdir"]),
    ("UpdateVm", &["labels", "on_expiry", "restart", "ttl"]),
    ("PortMapping", &["host_addr"]),
];

fn nullable_options(schemas: &mut Value) {
    for (schema, properties) in NULL_AS_ABSENT {
        for property in *properties {
            let slot = &mut schemas[*schema]["properties"][*property];
            *slot = nullable(slot.take());
        }
    }
}

/// `schema`, also admitting `null`.
fn nullable(mut schema: Value) -> Value {
    let Some(object) = schema.as_object_mut() else {
        return json!({"anyOf": [schema, {"type": "null"}]});
    };
    let types = match object.get("type") {
        Some(Value::String(t)) => vec![json!(t)],
        Some(Value::Array(types)) => types.clone(),
        // A `$ref`, or a schema without a type: a union, its description kept outside.
        _ => {
            let description = object.remove("description");
            let mut out = json!({"anyOf": [schema, {"type": "null"}]});
            if let Some(d) = description {
                out["description"] = d;
            }
            return out;
        }
    };
    let mut types = types;
    if !types.contains(&json!("null")) {
        types.push(json!("null"));
    }
    object.insert("type".into(), Value::Array(types));
    if let Some(Value::Array(values)) = object.get_mut("enum") {
        if !values.contains(&Value::Null) {
            values.push(Value::Null);
        }
    }
    schema
}

fn core_document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": info(),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "Required on the TCP listener only."}},
            "schemas": schemas(),
        },
        "security": [{"bearer": []}],
        "paths": paths(),
    })
}

/// The `info` object: title, version and the rules every operation shares.
fn info() -> Value {
    json!({
        "title": "hearthd control API",
        "version": env!("CARGO_PKG_VERSION"),
        "description": format!("Every error has the body {{\"error\":{{\"code\",\"message\"}}}}. \
                        JSON bodies are objects, limited to 64 KiB, must be sent as \
                        application/json (else 415) within {}s of the headers (else \
                        408), and unknown fields are refused (400). Unknown or repeated \
                        query parameters are refused (400). A method a path does not \
                        have answers 405 with an Allow header. On the Unix socket no \
                        token is needed; on the TCP listener every request needs the \
                        bearer token (else 401).", super::DEFAULT_BODY_TIMEOUT.as_secs())
    })
}

/// The named entries of one group: path items under their path, or schemas under their name.
type Entries = Vec<(&'static str, Value)>;

/// One JSON object holding the entries of every group.
fn object(groups: impl IntoIterator<Item = Entries>) -> Value {
    Value::Object(
        groups
            .into_iter()
            .flatten()
            .map(|(name, value)| (name.to_owned(), value))
            .collect(),
    )
}

/// The `paths` object: every group of paths; a new group is one more entry here.
fn paths() -> Value {
    object([vm_paths(), image_paths(), event_paths(), service_paths()])
}

/// `/v1/vms` and everything under it.
fn vm_paths() -> Entries {
    vec![
        ("/v1/vms", vm_collection()),
        ("/v1/vms/{name}", vm_item()),
        (
            "/v1/vms/{name}/start",
            action("start", "Start a stopped, crashed or failed VM"),
        ),
        (
            "/v1/vms/{name}/stop",
            action("stop", "Stop: Ctrl+Alt+Del, then SIGTERM, then SIGKILL"),
        ),
        (
            "/v1/vms/{name}/kill",
            action("kill", "SIGKILL the VMM at once"),
        ),
        (
            "/v1/vms/{name}/restart",
            action("restart", "Stop (if running), then start"),
        ),
        ("/v1/vms/{name}/nat", vm_nat()),
        ("/v1/vms/{name}/wait", vm_wait()),
    ]
}

/// `/v1/vms`: create and list.
fn vm_collection() -> Value {
    let mut vm_created = json_response("The VM", schema("VmInfo"));
    vm_created["links"] = vm_links();
    json!({
        "post": {
            "operationId": "createVm",
            "summary": "Create and boot a VM; answers once it is running, unready or failed",
            "parameters": [idempotency_param()],
            "requestBody": json_body("CreateVm"),
            "responses": responses(&[("201", vm_created)], &[
                ("400", "Invalid body, field, query parameter or Idempotency-Key"),
                ("404", "No snapshot of the name `from_snapshot` gives"),
                ("409", "Name taken, idempotency key reused, or the snapshot `from_snapshot` names is not ready, is lost (its memory file is gone), or was taken with [jailer] otherwise than now"),
                ("422", "Unknown image"),
                ("500", "A step failed and was undone"),
            ].into_iter().chain(BODY).collect::<Vec<_>>()),
        },
        "get": {
            "operationId": "listVms",
            "summary": "List VMs, ordered by name",
            "parameters": [{"name": "label", "in": "query", "required": false,
                "description": "Only VMs carrying this label, as key=value",
                "schema": {"type": "string", "pattern": "^[^=]+=.*$"}}],
            "responses": responses(
                &[("200", json_response("The VMs",
                    json!({"type": "array", "items": schema("VmInfo")})))],
                &[]),
        }
    })
}

/// `/v1/vms/{name}`: get and delete.
fn vm_item() -> Value {
    json!({
        "get": {
            "operationId": "getVm",
            "summary": "One VM",
            "parameters": [vm_name_param()],
            "responses": responses(&[("200", json_response("The VM", schema("VmInfo")))],
                &[("404", "No such VM")]),
        },
        "delete": {
            "operationId": "deleteVm",
            "summary": "Stop the VM if needed and free everything it holds",
            "parameters": [vm_name_param()],
            "responses": responses(&[("204", json!({"description": "Deleted"}))], &[
                ("404", "No such VM"),
                ("409", "A lifecycle step is in flight"),
                ("500", "A step failed; the VM is left to retry the delete"),
            ]),
        }
    })
}

/// `/v1/vms/{name}/nat`: switch outbound NAT.
fn vm_nat() -> Value {
    json!({
        "put": {
            "operationId": "setNat",
            "summary": "Switch outbound NAT",
            "parameters": [vm_name_param()],
            "requestBody": json_body("SetNat"),
            "responses": responses(&[("200", json_response("The VM", schema("VmInfo")))], &[
                ("400", "Invalid body or query parameter"),
                ("404", "No such VM"),
                ("409", "The VM holds no network lease in its state"),
                ("500", "The firewall change failed"),
                ("503", "NAT is unavailable (no egress interface), or hearthd is \
                         shutting down"),
            ].into_iter().chain(BODY).collect::<Vec<_>>()),
        }
    })
}

/// `/v1/vms/{name}/wait`: long poll for a state.
fn vm_wait() -> Value {
    json!({
        "get": {
            "operationId": "waitVm",
            "summary": "Long poll until the VM is in a state",
            "parameters": [
                vm_name_param(),
                {"name": "state", "in": "query", "required": true,
                 "schema": schema("VmState")},
                {"name": "timeout", "in": "query", "required": false,
                 "description": "Like 500ms, 30s or 2m (a bare number is seconds); \
                                 default 30s, at most 10m",
                 "schema": {"type": "string", "pattern": WAIT_TIMEOUT}},
            ],
            "responses": responses(
                &[("200", json_response("The VM, in the state", schema("VmInfo")))], &[
                ("400", "Invalid or missing parameter"),
                ("404", "No such VM"),
                ("408", "Timed out"),
                ("409", "The state can no longer come"),
            ]),
        }
    })
}

/// `/v1/images` and `/v1/images/{name}`.
fn image_paths() -> Entries {
    vec![
        ("/v1/images", image_collection()),
        ("/v1/images/{name}", image_item()),
    ]
}

/// `/v1/images`: import and list.
fn image_collection() -> Value {
    let mut image_created = json_response("The image", schema("ImageInfo"));
    image_created["links"] = json!({"deleteImage": {"operationId": "deleteImage",
        "parameters": {"name": "$response.body#/name"}}});
    json!({
        "post": {
            "operationId": "importImage",
            "summary": "Import a file on hearthd's host into the image store",
            "description": "With `Accept: application/x-ndjson` the answer is 200 at \
                            once and streams ImportUpdate lines: progress, then the \
                            image or the error. Only regular files are imported: a \
                            FIFO, device, socket, directory or symlink is 422.",
            "requestBody": json_body("ImportImage"),
            "responses": responses(&[
                ("200", json!({"description": "Streamed import (Accept: application/x-ndjson)",
                    "content": {"application/x-ndjson":
                        {"schema": schema("ImportUpdate")}}})),
                ("201", image_created),
            ], &[
                ("400", "Invalid name, relative path or unknown field"),
                ("409", "An image of that name exists, or the source changed"),
                ("422", "The path cannot be read or is not a regular file (invalid_source), or \
                         the file is not a kernel or ext4 image (invalid_image)"),
                ("500", "The store failed to write"),
                ("503", "No image store is configured"),
            ].into_iter().chain(BODY).collect::<Vec<_>>()),
        },
        "get": {
            "operationId": "listImages",
            "summary": "List images, sorted by name",
            "responses": responses(&[("200", json_response("The images",
                json!({"type": "array", "items": schema("ImageInfo")})))],
                &[("500", "The store failed to read"),
                  ("503", "No image store is configured")]),
        }
    })
}

/// `/v1/images/{name}`: get and remove.
fn image_item() -> Value {
    json!({
        "get": {
            "operationId": "getImage",
            "summary": "One image, with its OCI source and config when built from an OCI image",
            "parameters": [image_name_param()],
            "responses": responses(&[("200", json_response("The image", schema("ImageInfo")))], &[
                ("400", "Invalid image name or query parameter"),
                ("404", "No such image"),
                ("500", "The store failed to read"),
                ("503", "No image store is configured"),
            ]),
        },
        "delete": {
            "operationId": "deleteImage",
            "summary": "Remove an image no VM uses",
            "parameters": [image_name_param()],
            "responses": responses(&[("204", json!({"description": "Removed"}))], &[
                ("400", "Invalid image name or query parameter"),
                ("404", "No such image"),
                ("409", "A VM uses it"),
                ("500", "The store failed to remove it"),
                ("503", "No image store is configured, or hearthd is shutting down"),
            ]),
        }
    })
}

/// `/v1/events` and its server-sent-event stream.
fn event_paths() -> Entries {
    let list = json!({
        "get": {
            "operationId": "listEvents",
            "summary": "Persisted lifecycle events after a sequence number",
            "parameters": [
                {"name": "since", "in": "query", "required": false,
                 "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SEQ}},
                {"name": "limit", "in": "query", "required": false,
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}},
            ],
            "responses": responses(&[("200", json_response("The events",
                json!({"type": "array", "items": schema("Event")})))],
                &[("400", "Invalid since or limit, or unknown parameter"),
                  ("500", "The event log cannot be read")]),
        }
    });
    let stream = json!({
        "get": {
            "operationId": "streamEvents",
            "summary": "Server-sent events: persisted events after `since` (or \
                        Last-Event-ID), then live ones; each frame has `id: <seq>` \
                        and one `data:` line holding an Event",
            "parameters": [
                {"name": "since", "in": "query", "required": false,
                 "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SEQ}},
                {"name": "Last-Event-ID", "in": "header", "required": false,
                 "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SEQ}},
            ],
            "responses": responses(&[("200", json!({"description": "The stream",
                "content": {"text/event-stream": {"schema": {"type": "string"}}}}))],
                &[("400", "Invalid since or Last-Event-ID, or unknown parameter")]),
        }
    });
    vec![("/v1/events", list), ("/v1/events/stream", stream)]
}

/// The service's own paths: health, this document, metrics.
fn service_paths() -> Entries {
    let health = json!({
        "get": {
            "operationId": "health",
            "summary": "hearthd is up and its supervisor answers",
            "responses": responses(&[("200", json_response("Healthy", schema("Health")))],
                &[("503", "The supervisor is not answering")]),
        }
    });
    let openapi = json!({
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "responses": {
                "200": {"description": "The OpenAPI document",
                    "content": {"application/json": {"schema": {"type": "object"}}}},
                "401": error_response("Missing or wrong bearer token (TCP listener only)"),
            }
        }
    });
    let metrics = json!({
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics: VMs by state, create-phase latency \
                        histograms, errors by operation, dropped log records",
            "responses": responses(&[("200", json!({"description": "Text exposition format 0.0.4",
                "content": {"text/plain": {"schema": {"type": "string"}}}}))], &[]),
        }
    });
    vec![
        ("/v1/health", health),
        ("/v1/openapi.json", openapi),
        ("/metrics", metrics),
    ]
}

/// The `wait` timeout as a pattern: only values up to [`super::query::MAX_WAIT`] (10m)
/// match (`0`-`99999ms`, `0`-`599` or `600` seconds, `0`-`10m`), so a generated client never
/// sends one the server refuses for its length.
const WAIT_TIMEOUT: &str = "^([0-9]{1,5}ms|[0-5]?[0-9]{1,2}s?|600s?|[0-9]m|10m)$";

/// The `components.schemas` object: every group of schemas.
fn schemas() -> Value {
    object([vm_schemas(), image_schemas(), service_schemas()])
}

/// The schemas of VMs and their events.
fn vm_schemas() -> Entries {
    let states: Vec<&str> = hearth_proto::api::VmState::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    vec![
        ("VmState", json!({"type": "string", "enum": states})),
        ("CreateVm", create_vm_schema()),
        (
            "VmInfo",
            json!({
                "type": "object",
                "required": ["name", "state", "spec", "nat"],
                "properties": {
                    "name": {"type": "string"},
                    "state": schema("VmState"),
                    "spec": schema("CreateVm"),
                    "guest_ip": {"type": "string", "format": "ipv4"},
                    "tap": {"type": "string"},
                    "pid": {"type": "integer"},
                    "nat": {"type": "boolean"},
                    "last_error": {"type": "string"},
                    "exit_status": schema("ExitReport"),
                }
            }),
        ),
        (
            "SetNat",
            json!({
                "type": "object", "additionalProperties": false, "required": ["enabled"],
                "properties": {"enabled": {"type": "boolean"}}
            }),
        ),
        (
            "Event",
            json!({
                "type": "object",
                "required": ["seq", "at_ms", "vm", "state", "reason"],
                "properties": {
                    "seq": {"type": "integer"},
                    "at_ms": {"type": "integer"},
                    "vm": {"type": "string"},
                    "state": schema("VmState"),
                    "reason": {"type": "string",
                        "enum": ["user", "crash", "restart", "readiness_timeout", "error",
                                 "snapshot"]},
                    "detail": {"type": "string"},
                    "exit_status": schema("ExitReport"),
                }
            }),
        ),
        (
            "ExitReport",
            json!({
                "description": "How the image's command ended (hearth's init): exited with a code, or killed by a signal",
                "oneOf": [
                    {"type": "object", "additionalProperties": false, "required": ["exited"],
                     "properties": {"exited": {"type": "object", "additionalProperties": false,
                        "required": ["code"], "properties": {"code": {"type": "integer"}}}}},
                    {"type": "object", "additionalProperties": false, "required": ["signaled"],
                     "properties": {"signaled": {"type": "object", "additionalProperties": false,
                        "required": ["signal"], "properties": {"signal": {"type": "integer"}}}}}
                ]
            }),
        ),
    ]
}

/// The `CreateVm` body, with the limits `hearth_proto::api` enforces.
fn create_vm_schema() -> Value {
    json!({
        "type": "object", "additionalProperties": false,
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "pattern": VM_NAME},
            "kernel": {"type": "string", "pattern": IMAGE_NAME,
                "description": "Kernel image name; required unless from_snapshot is given \
                                (then it must be left out)"},
            "rootfs": {"type": "string", "pattern": IMAGE_NAME,
                "description": "Root filesystem image name; required unless from_snapshot \
                                is given (then it must be left out)"},
            "from_snapshot": {"type": "string", "pattern": FROM_SNAPSHOT,
                "description": "Restore this snapshot as the new VM: its machine is the \
                                snapshot's source's; the VM gets its own lease, vsock, disk \
                                and name"},
            "vcpus": {"type": "integer", "minimum": 1, "maximum": api::MAX_VCPUS,
                "default": 1},
            "memory_mib": {"type": "integer", "minimum": api::MIN_MEMORY_MIB,
                "maximum": api::MAX_MEMORY_MIB, "default": 128},
            "disk_size": {"type": "integer", "minimum": api::SECTOR,
                "maximum": api::MAX_DISK_SIZE, "multipleOf": api::SECTOR,
                "description": "Root disk size in bytes, whole 512-byte sectors, at least \
                                the root filesystem image's size (else 400); default: \
                                the image's size"},
            "boot_args": {"type": "string", "maxLength": api::MAX_BOOT_ARGS,
                "pattern": "^[ -~]*$",
                "description": "Extra kernel arguments, printable ASCII"},
            "init": {"type": "string", "enum": ["hearth", "image"],
                "description": "For a root filesystem built from an OCI image: hearth's \
                                init (adds init=/sbin/hearth-init) or the image's own; \
                                default: what the image was built for (422 for hearth on \
                                an image built without it)"},
            "nat": {"type": "boolean", "default": false},
            "ready_probe": {"type": "boolean", "default": true},
            "labels": {"type": "object",
                "propertyNames": {"minLength": 1, "maxLength": 63, "pattern": "^[^=]*$"},
                "additionalProperties": {"type": "string", "maxLength": 255}},
        }
    })
}

/// The schemas of the image store.
fn image_schemas() -> Entries {
    let import = json!({
        "type": "object", "additionalProperties": false,
        "required": ["name", "kind", "path"],
        "properties": {
            "name": {"type": "string", "pattern": IMAGE_NAME},
            "kind": {"type": "string", "enum": ["kernel", "rootfs"]},
            "path": {"type": "string", "pattern": "^/",
                "description": "Absolute path of a regular file on hearthd's host"},
        }
    });
    let info = json!({
        "type": "object",
        "required": ["name", "kind", "format", "size", "sha256", "source", "imported_unix"],
        "properties": {
            "name": {"type": "string"},
            "kind": {"type": "string", "enum": ["kernel", "rootfs"]},
            "format": {"type": "string", "enum": ["elf", "bzimage", "ext4"]},
            "size": {"type": "integer"},
            "sha256": {"type": "string"},
            "source": {"type": "string"},
            "imported_unix": {"type": "integer"},
            "oci": {"type": "object", "required": ["reference", "manifest_digest"],
                "description": "Set when the image was built from an OCI image",
                "properties": {
                    "reference": {"type": "string"},
                    "manifest_digest": {"type": "string"},
                    "init": {"type": "string", "enum": ["hearth", "image"]},
                    "config": {"type": "object", "properties": {
                        "entrypoint": {"type": "array", "items": {"type": "string"}},
                        "cmd": {"type": "array", "items": {"type": "string"}},
                        "env": {"type": "array", "items": {"type": "string"}},
                        "working_dir": {"type": ["string", "null"]},
                        "user": {"type": ["string", "null"]},
                        "exposed_ports": {"type": "array", "items": {"type": "string"}},
                        "labels": {"type": "object",
                            "additionalProperties": {"type": "string"}},
                    }},
                }},
        }
    });
    let update = json!({
        "description": "One line of a streamed import",
        "oneOf": [
            {"type": "object", "required": ["progress"], "properties": {"progress": {
                "type": "object", "required": ["copied", "total"],
                "properties": {"copied": {"type": "integer"}, "total": {"type": "integer"}}}}},
            {"type": "object", "required": ["image"],
             "properties": {"image": schema("ImageInfo")}},
            {"type": "object", "required": ["error"],
             "properties": {"error": {"type": "object", "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
        ]
    });
    vec![
        ("ImportImage", import),
        ("ImageInfo", info),
        ("ImportUpdate", update),
    ]
}

/// The schemas every part of the API shares: health and the error body.
fn service_schemas() -> Entries {
    let health = json!({
        "type": "object", "required": ["status", "version", "vms"],
        "properties": {
            "status": {"type": "string"},
            "version": {"type": "string"},
            "vms": {"type": "integer"},
        }
    });
    let error = json!({
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}}
        }}
    });
    vec![("Health", health), ("ErrorBody", error)]
}

/// Every (method, path) the document describes, methods upper-case.
pub fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            if let Some(item) = item.as_object() {
                for method in item.keys() {
                    out.push((method.to_uppercase(), path.clone()));
                }
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_matches_the_registered_routes() {
        let mut registered: Vec<(String, String)> = super::super::routes::registered()
            .into_iter()
            .map(|(m, p)| (m.to_string(), p.to_owned()))
            .collect();
        registered.sort();
        assert_eq!(operations(&document()), registered);
    }

    /// Issue 9: the document declares what the server answers: 401 everywhere (TCP), 400
    /// wherever query parameters are parsed, the body statuses on operations with a body.
    #[test]
    fn every_operation_declares_its_error_statuses() {
        let doc = document();
        assert_eq!(doc["security"], json!([{"bearer": []}]));
        for (method, path) in operations(&doc) {
            let op = &doc["paths"][&path][method.to_lowercase()];
            let has = |code: &str| op["responses"][code].is_object();
            assert!(has("401"), "{method} {path}");
            if path != "/v1/openapi.json" {
                assert!(has("400") && has("503"), "{method} {path}");
            }
            if op["requestBody"].is_object() {
                for code in ["408", "413", "415"] {
                    assert!(has(code), "{method} {path} {code}");
                }
            }
        }
        let create = &doc["components"]["schemas"]["CreateVm"]["properties"];
        assert_eq!(create["disk_size"]["maximum"], json!(api::MAX_DISK_SIZE));
        assert_eq!(create["boot_args"]["maxLength"], json!(api::MAX_BOOT_ARGS));
    }

    /// Every `type` is a name or a list of names and every `enum` a list: a `null` there
    /// (an `IndexMut` on a missing key inserts one) makes the whole document unusable.
    #[test]
    fn keywords_have_their_shapes() {
        fn walk(v: &Value, at: &str) {
            match v {
                Value::Object(o) => {
                    if let Some(t) = o.get("type") {
                        assert!(t.is_string() || t.is_array(), "{at}/type: {t}");
                    }
                    if let Some(e) = o.get("enum") {
                        assert!(e.is_array(), "{at}/enum: {e}");
                    }
                    for (k, sub) in o {
                        walk(sub, &format!("{at}/{k}"));
                    }
                }
                Value::Array(items) => {
                    for (i, sub) in items.iter().enumerate() {
                        walk(sub, &format!("{at}/{i}"));
                    }
                }
                _ => {}
            }
        }
        walk(&document(), "");
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &piece[..piece.find('"').unwrap()];
            assert!(doc["components"]["schemas"][name].is_object(), "{name}");
        }
    }
}
