//! The OCI part of the `OpenAPI` document ([`super::openapi`]): `POST /v1/images/pull` and
//! `POST /v1/images/import`, and their bodies and NDJSON lines (`hearth_proto::api_pull`).

use serde_json::{json, Map, Value};

use super::openapi::{json_body, responses, schema, BODY};

const IMAGE_NAME: &str = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$";
const PLATFORM: &str = "^[A-Za-z0-9_]{1,32}/[A-Za-z0-9_]{1,32}(/[A-Za-z0-9_]{1,32})?$";

fn streamed(summary: &str, body: &str, errors: &[(&'static str, &'static str)]) -> Value {
    let mut errs: Vec<(&str, &str)> = errors.to_vec();
    errs.extend(BODY);
    errs.push(("503", "No image store is configured"));
    json!({"post": {
        "operationId": if body == "PullImage" { "pullImage" } else { "importArchive" },
        "summary": summary,
        "description": "The answer is 200 with PullUpdate lines (NDJSON): resolved, layer \
                        byte counts, reading (archives), building, and last the image or \
                        the error (nothing is stored then). A client that disconnects does \
                        not cancel the work.",
        "requestBody": json_body(body),
        "responses": responses(&[("200", json!({"description": "Progress, then the outcome",
            "content": {"application/x-ndjson": {"schema": schema("PullUpdate")}}}))], &errs),
    }})
}

/// The paths.
pub fn paths() -> Map<String, Value> {
    let mut out = Map::new();
    out.insert(
        "/v1/images/pull".into(),
        streamed(
            "Pull an image from an OCI registry and build a root filesystem image from it",
            "PullImage",
            &[
                (
                    "400",
                    "Invalid name, reference or platform, or unknown field",
                ),
                ("409", "An image of that name exists"),
            ],
        ),
    );
    out.insert(
        "/v1/images/import".into(),
        streamed(
            "Build a root filesystem image from a docker-save or OCI archive, or an OCI \
             layout directory, on hearthd's host",
            "ImportArchive",
            &[
                (
                    "400",
                    "Invalid name, relative path, bad platform or unknown field",
                ),
                ("409", "An image of that name exists"),
            ],
        ),
    );
    out
}

/// The schemas.
pub fn schemas() -> Map<String, Value> {
    let common = |extra: Value| {
        let mut props = json!({
            "name": {"type": "string", "pattern": IMAGE_NAME},
            "size": {"type": ["integer", "null"], "minimum": 1,
                "description": "Filesystem size in bytes; default: content plus headroom"},
            "platform": {"type": "string", "pattern": PLATFORM,
                "description": "os/arch[/variant]; default linux/amd64"},
            "init": {"type": "string", "enum": ["hearth", "image"]},
        });
        if let (Some(p), Some(e)) = (props.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        props
    };
    let pull = json!({"type": "object", "additionalProperties": false,
    "required": ["reference", "name"],
    "properties": common(json!({
        "reference": {"type": "string", "minLength": 1, "maxLength": 512,
            "description": "e.g. alpine:3.20, ghcr.io/org/app@sha256:<hex>"},
        "insecure": {"type": "boolean",
            "description": "Plain HTTP to this reference's registry only"},
    }))});
    let import = json!({"type": "object", "additionalProperties": false,
    "required": ["name", "kind", "path"],
    "properties": common(json!({
        "kind": {"type": "string", "enum": ["oci"]},
        "path": {"type": "string", "pattern": "^/",
            "description": "Absolute path of the archive or layout directory"},
    }))});
    let int = json!({"type": "integer"});
    let line = |name: &str, body: Value| json!({"type": "object", "required": [name], "properties": {(name): body}});
    let update = json!({"description": "One line of a pull or archive import", "oneOf": [
        line("resolved", json!({"type": "object",
            "required": ["reference", "manifest_digest", "layers"],
            "properties": {"reference": {"type": "string"},
                "manifest_digest": {"type": "string"},
                "layers": {"type": "array", "items": {"type": "object",
                    "required": ["digest", "size", "cached"],
                    "properties": {"digest": {"type": "string"}, "size": int,
                        "cached": {"type": "boolean"}}}}}})),
        line("layer", json!({"type": "object", "required": ["digest", "done", "total"],
            "properties": {"digest": {"type": "string"}, "done": int, "total": int}})),
        line("reading", json!({"type": "object", "required": ["done", "total"],
            "properties": {"done": int, "total": int}})),
        {"type": "string", "enum": ["building"]},
        line("image", schema("ImageInfo")),
        line("error", json!({"type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}}})),
    ]});
    let mut out = Map::new();
    out.insert("PullImage".into(), pull);
    out.insert("ImportArchive".into(), import);
    out.insert("PullUpdate".into(), update);
    out
}
