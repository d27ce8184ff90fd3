//! The OpenAPI 3 document of the API, written by hand next to the handlers. A test checks that
//! its operations are exactly the routes registered in [`super::routes`].

use serde_json::{json, Value};

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    })
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn json_body(name: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema(name)}}})
}

fn name_param() -> Value {
    json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}})
}

fn idempotency_param() -> Value {
    json!({
        "name": "Idempotency-Key", "in": "header", "required": false,
        "description": "Makes a retried request a no-op: the same key with the same request \
                        returns the first answer; with another request, 409.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255}
    })
}

fn action(verb: &str, summary: &str) -> Value {
    json!({"post": {
        "operationId": format!("{verb}Vm"),
        "summary": summary,
        "parameters": [name_param(), idempotency_param()],
        "responses": {
            "200": json_response("The VM after the action", schema("VmInfo")),
            "404": error_response("No such VM"),
            "409": error_response("Not allowed in the VM's state, or key reused"),
            "500": error_response("A step failed and was undone"),
        }
    }})
}

/// The document served at `GET /v1/openapi.json`.
pub fn document() -> Value {
    let vm = schema("VmInfo");
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "hearthd control API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every error has the body {\"error\":{\"code\",\"message\"}}. JSON \
                            bodies are limited to 64 KiB, must be sent as application/json \
                            (else 415), and unknown fields are refused (400)."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "Required on the TCP listener only."}},
            "schemas": schemas(),
        },
        "paths": {
            "/v1/vms": {
                "post": {
                    "operationId": "createVm",
                    "summary": "Create and boot a VM; answers once it is running, unready or failed",
                    "parameters": [idempotency_param()],
                    "requestBody": json_body("CreateVm"),
                    "responses": {
                        "201": json_response("The VM", vm.clone()),
                        "400": error_response("Invalid body or field"),
                        "409": error_response("Name taken, or idempotency key reused"),
                        "413": error_response("Body too large"),
                        "415": error_response("Not application/json"),
                        "422": error_response("Unknown image"),
                        "503": error_response("A dependency is missing or exhausted"),
                    }
                },
                "get": {
                    "operationId": "listVms",
                    "summary": "List VMs, ordered by name",
                    "parameters": [{"name": "label", "in": "query", "required": false,
                        "description": "Only VMs carrying this label, as key=value",
                        "schema": {"type": "string"}}],
                    "responses": {
                        "200": json_response("The VMs", json!({"type": "array", "items": vm})),
                        "400": error_response("Invalid parameter"),
                    }
                }
            },
            "/v1/vms/{name}": {
                "get": {
                    "operationId": "getVm",
                    "summary": "One VM",
                    "parameters": [name_param()],
                    "responses": {
                        "200": json_response("The VM", vm.clone()),
                        "404": error_response("No such VM"),
                    }
                },
                "delete": {
                    "operationId": "deleteVm",
                    "summary": "Stop the VM if needed and free everything it holds",
                    "parameters": [name_param()],
                    "responses": {
                        "204": {"description": "Deleted"},
                        "404": error_response("No such VM"),
                        "409": error_response("A lifecycle step is in flight"),
                    }
                }
            },
            "/v1/vms/{name}/start": action("start", "Start a stopped, crashed or failed VM"),
            "/v1/vms/{name}/stop": action("stop", "Stop: Ctrl+Alt+Del, then SIGTERM, then SIGKILL"),
            "/v1/vms/{name}/kill": action("kill", "SIGKILL the VMM at once"),
            "/v1/vms/{name}/restart": action("restart", "Stop (if running), then start"),
            "/v1/vms/{name}/nat": {
                "put": {
                    "operationId": "setNat",
                    "summary": "Switch outbound NAT",
                    "parameters": [name_param()],
                    "requestBody": json_body("SetNat"),
                    "responses": {
                        "200": json_response("The VM", vm.clone()),
                        "400": error_response("Invalid body"),
                        "404": error_response("No such VM"),
                    }
                }
            },
            "/v1/vms/{name}/wait": {
                "get": {
                    "operationId": "waitVm",
                    "summary": "Long poll until the VM is in a state",
                    "parameters": [
                        name_param(),
                        {"name": "state", "in": "query", "required": true,
                         "schema": schema("VmState")},
                        {"name": "timeout", "in": "query", "required": false,
                         "description": "Like 500ms, 30s or 2m; default 30s, at most 10m",
                         "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": json_response("The VM, in the state", vm),
                        "400": error_response("Invalid parameter"),
                        "404": error_response("No such VM"),
                        "408": error_response("Timed out"),
                        "409": error_response("The state can no longer come"),
                    }
                }
            },
            "/v1/images": {
                "post": {
                    "operationId": "importImage",
                    "summary": "Import a file on hearthd's host into the image store",
                    "description": "With `Accept: application/x-ndjson` the answer is 200 at \
                                    once and streams ImportUpdate lines: progress, then the \
                                    image or the error.",
                    "requestBody": json_body("ImportImage"),
                    "responses": {
                        "200": {"description": "Streamed import (Accept: application/x-ndjson)",
                            "content": {"application/x-ndjson":
                                {"schema": schema("ImportUpdate")}}},
                        "201": json_response("The image", schema("ImageInfo")),
                        "400": error_response("Invalid name or path"),
                        "409": error_response("An image of that name exists"),
                        "422": error_response("Not a kernel or ext4 image"),
                    }
                },
                "get": {
                    "operationId": "listImages",
                    "summary": "List images, sorted by name",
                    "responses": {"200": json_response("The images",
                        json!({"type": "array", "items": schema("ImageInfo")}))}
                }
            },
            "/v1/images/{name}": {
                "delete": {
                    "operationId": "deleteImage",
                    "summary": "Remove an image no VM uses",
                    "parameters": [name_param()],
                    "responses": {
                        "204": {"description": "Removed"},
                        "404": error_response("No such image"),
                        "409": error_response("A VM uses it"),
                    }
                }
            },
            "/v1/events": {
                "get": {
                    "operationId": "listEvents",
                    "summary": "Persisted lifecycle events after a sequence number",
                    "parameters": [
                        {"name": "since", "in": "query", "required": false,
                         "schema": {"type": "integer", "minimum": 0}},
                        {"name": "limit", "in": "query", "required": false,
                         "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                    ],
                    "responses": {"200": json_response("The events",
                        json!({"type": "array", "items": schema("Event")}))}
                }
            },
            "/v1/events/stream": {
                "get": {
                    "operationId": "streamEvents",
                    "summary": "Server-sent events: persisted events after `since` (or \
                                Last-Event-ID), then live ones; each frame has `id: <seq>` \
                                and one `data:` line holding an Event",
                    "parameters": [
                        {"name": "since", "in": "query", "required": false,
                         "schema": {"type": "integer", "minimum": 0}},
                        {"name": "Last-Event-ID", "in": "header", "required": false,
                         "schema": {"type": "integer", "minimum": 0}},
                    ],
                    "responses": {"200": {"description": "The stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}}}}
                }
            },
            "/v1/health": {
                "get": {
                    "operationId": "health",
                    "summary": "hearthd is up and its supervisor answers",
                    "responses": {
                        "200": json_response("Healthy", schema("Health")),
                        "503": error_response("The supervisor is not answering"),
                    }
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {"200": {"description": "The OpenAPI document"}}
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics: VMs by state, create-phase latency \
                                histograms, errors by operation",
                    "responses": {"200": {"description": "Text exposition format 0.0.4",
                        "content": {"text/plain": {"schema": {"type": "string"}}}}}
                }
            }
        }
    })
}

fn schemas() -> Value {
    let states: Vec<&str> = hearth_proto::api::VmState::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    json!({
        "VmState": {"type": "string", "enum": states},
        "CreateVm": {
            "type": "object", "additionalProperties": false,
            "required": ["name", "kernel", "rootfs"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"},
                "kernel": {"type": "string", "description": "Kernel image name"},
                "rootfs": {"type": "string", "description": "Root filesystem image name"},
                "vcpus": {"type": "integer", "minimum": 1, "maximum": 32, "default": 1},
                "memory_mib": {"type": "integer", "minimum": 16, "default": 128},
                "disk_size": {"type": "integer", "minimum": 0},
                "boot_args": {"type": "string"},
                "nat": {"type": "boolean", "default": false},
                "ready_probe": {"type": "boolean", "default": true},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            }
        },
        "VmInfo": {
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
            }
        },
        "SetNat": {
            "type": "object", "additionalProperties": false, "required": ["enabled"],
            "properties": {"enabled": {"type": "boolean"}}
        },
        "Event": {
            "type": "object",
            "required": ["seq", "at_ms", "vm", "state", "reason"],
            "properties": {
                "seq": {"type": "integer"},
                "at_ms": {"type": "integer"},
                "vm": {"type": "string"},
                "state": schema("VmState"),
                "reason": {"type": "string",
                    "enum": ["user", "crash", "restart", "readiness_timeout", "error"]},
                "detail": {"type": "string"},
            }
        },
        "ImportImage": {
            "type": "object", "additionalProperties": false,
            "required": ["name", "kind", "path"],
            "properties": {
                "name": {"type": "string", "pattern": "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$"},
                "kind": {"type": "string", "enum": ["kernel", "rootfs"]},
                "path": {"type": "string", "description": "Absolute path on hearthd's host"},
            }
        },
        "ImageInfo": {
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
            }
        },
        "ImportUpdate": {
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
        },
        "Health": {
            "type": "object", "required": ["status", "version", "vms"],
            "properties": {
                "status": {"type": "string"},
                "version": {"type": "string"},
                "vms": {"type": "integer"},
            }
        },
        "ErrorBody": {
            "type": "object", "required": ["error"],
            "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}}
            }}
        }
    })
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
