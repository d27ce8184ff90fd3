//! The port-publishing part of the `OpenAPI` document ([`super::openapi`]):
//! `/v1/vms/{name}/ports` and the `publish` field of `CreateVm`.

use serde_json::{json, Value};

use super::openapi::{json_body, json_response, responses, schema, vm_name_param, BODY};

/// Adds the publishing parts to the core document `doc`.
pub fn extend(doc: &mut Value) {
    let list = json!({"type": "array", "items": schema("PortMapping")});
    let mut change: Vec<(&str, &str)> = vec![
        (
            "400",
            "Invalid body, or the port cannot be used: an unspecified, multicast or \
                 broadcast host address, or a host port another of the VM's ports takes",
        ),
        ("404", "No such VM (or, for DELETE, no such published port)"),
        (
            "409",
            "The host port is taken (the message names the owner: another VM's \
                 port, hearth's DNS, or a socket on the host), or the VM is being deleted",
        ),
        ("500", "The firewall change failed"),
        ("503", "hearthd is shutting down"),
    ];
    change.extend(BODY);
    doc["paths"]["/v1/vms/{name}/ports"] = json!({
        "get": {
            "operationId": "listPorts",
            "summary": "A VM's published ports",
            "parameters": [vm_name_param()],
            "responses": responses(&[("200", json_response("The ports", list.clone()))], &[
                ("400", "Invalid query parameter"),
                ("404", "No such VM"),
            ]),
        },
        "post": {
            "operationId": "publishPort",
            "summary": "Publish a guest port on the host (running or not)",
            "parameters": [vm_name_param()],
            "requestBody": json_body("PortMapping"),
            "responses": responses(&[("200", json_response("The VM's ports", list.clone()))],
                &change),
        },
        "delete": {
            "operationId": "unpublishPort",
            "summary": "Withdraw a published port",
            "parameters": [vm_name_param()],
            "requestBody": json_body("PortMapping"),
            "responses": responses(&[("200", json_response("The VM's ports", list))], &change),
        },
    });
    let schemas = &mut doc["components"]["schemas"];
    schemas["PortMapping"] = json!({
        "type": "object", "additionalProperties": false,
        "required": ["host_port", "guest_port"],
        "properties": {
            "host_addr": {"type": "string", "format": "ipv4",
                "description": "A unicast address of the host; left out: every address"},
            "host_port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "guest_port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "protocol": {"type": "string", "enum": ["tcp", "udp"], "default": "tcp"},
        }
    });
    schemas["CreateVm"]["properties"]["publish"] = json!({
        "type": "array", "items": schema("PortMapping"),
        "maxItems": hearth_proto::api_publish::MAX_PUBLISHED,
        "description": "Guest ports published on the host; no two may take the same host \
                        port (else 400)"});
}
