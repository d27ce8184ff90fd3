//! The `OpenAPI` document and the request parsers agree on `null`: a body property that
//! serde takes as `null` (an `Option` field, "left out") must say so in the document, and
//! one the document calls nullable must parse as `null`. The API fuzz found one that did
//! not (`PortMapping.host_addr`, stop 21); this test checks every property of every request
//! body, nested objects included, instead of waiting for the fuzz to draw each.

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::body::parse;
use super::openapi::document;
use hearth_proto::{api, api_egress, api_exec, api_images, api_policy, api_publish};
use hearth_proto::{api_pull, api_snapshot};

fn parses<T: DeserializeOwned>(body: &Value) -> bool {
    parse::<T>(body.to_string().as_bytes()).is_ok()
}

/// A request body schema's name, whether its parser accepts a body, and a body it accepts.
type Body = (&'static str, fn(&Value) -> bool, Value);

/// The parser of each request body schema, and a body it accepts that holds every nested
/// object whose properties are to be checked too.
fn bodies() -> Vec<Body> {
    vec![
        (
            "CreateVm",
            parses::<api::CreateVm>,
            json!({"name": "a", "kernel": "k", "rootfs": "r",
                   "egress": {"mode": "deny"},
                   "publish": [{"host_port": 1, "guest_port": 1}]}),
        ),
        ("SetNat", parses::<api::SetNat>, json!({"enabled": true})),
        (
            "ImportImage",
            parses::<api_images::ImportImage>,
            json!({"name": "a", "kind": "kernel", "path": "/k"}),
        ),
        (
            "PullImage",
            parses::<api_pull::PullImage>,
            json!({"reference": "a:1", "name": "a"}),
        ),
        (
            "ImportArchive",
            parses::<api_pull::ImportArchive>,
            json!({"name": "a", "kind": "oci", "path": "/a"}),
        ),
        (
            "EgressPolicy",
            parses::<api_egress::EgressPolicy>,
            json!({"mode": "deny"}),
        ),
        (
            "ExecCreate",
            parses::<api_exec::ExecCreate>,
            json!({"command": ["x"], "size": {"rows": 1, "cols": 1}}),
        ),
        (
            "ExecSignal",
            parses::<api_exec::ExecSignal>,
            json!({"signal": "TERM"}),
        ),
        ("UpdateVm", parses::<api_policy::UpdateVm>, json!({})),
        (
            "CordonRequest",
            parses::<api_policy::CordonRequest>,
            json!({}),
        ),
        (
            "DrainRequest",
            parses::<api_policy::DrainRequest>,
            json!({}),
        ),
        (
            "PortMapping",
            parses::<api_publish::PortMapping>,
            json!({"host_port": 1, "guest_port": 1}),
        ),
        (
            "SnapshotCreate",
            parses::<api_snapshot::SnapshotCreate>,
            json!({"name": "a"}),
        ),
        (
            "ForkVm",
            parses::<api_snapshot::ForkVm>,
            json!({"name": "a"}),
        ),
    ]
}

/// `schema` with a `$ref` followed.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// Whether the document lets `schema` be `null`.
fn allows_null(doc: &Value, schema: &Value) -> bool {
    let schema = resolve(doc, schema);
    let by_type = match &schema["type"] {
        Value::String(t) => t == "null",
        Value::Array(types) => types.iter().any(|t| t == "null"),
        _ => false,
    };
    let by_union = ["anyOf", "oneOf"].iter().any(|k| {
        schema[*k]
            .as_array()
            .is_some_and(|alts| alts.iter().any(|alt| allows_null(doc, alt)))
    });
    by_type || by_union
}

/// The object schema among `schema`'s alternatives (a nullable `$ref` is `anyOf`).
fn object_schema<'a>(doc: &'a Value, schema: &'a Value) -> Option<&'a Value> {
    let schema = resolve(doc, schema);
    if schema["properties"].is_object() {
        return Some(schema);
    }
    ["anyOf", "oneOf"].iter().find_map(|k| {
        schema[*k]
            .as_array()
            .and_then(|alts| alts.iter().find_map(|alt| object_schema(doc, alt)))
    })
}

/// Checks each optional property of the object at `pointer` in `base`, then the objects
/// nested in it; the mismatches go to `out`.
fn check_object(
    doc: &Value,
    name: &str,
    parses: fn(&Value) -> bool,
    base: &Value,
    pointer: &str,
    schema: &Value,
    out: &mut Vec<String>,
) {
    let Some(schema) = object_schema(doc, schema) else {
        return;
    };
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let properties = schema["properties"].as_object().expect("an object schema");
    for (property, sub) in properties {
        let here = format!("{pointer}/{property}");
        if !required.contains(&property.as_str()) {
            let mut body = base.clone();
            body.pointer_mut(pointer)
                .expect("the base holds the object")[property] = Value::Null;
            let accepted = parses(&body);
            let documented = allows_null(doc, sub);
            if accepted != documented {
                out.push(format!(
                    "{name}{here}: the parser {} null, the document {}",
                    if accepted { "accepts" } else { "refuses" },
                    if documented { "allows it" } else { "does not" }
                ));
            }
        }
        match base.pointer(&here) {
            Some(Value::Object(_)) => check_object(doc, name, parses, base, &here, sub, out),
            Some(Value::Array(items)) if items.first().is_some_and(Value::is_object) => {
                let item = &resolve(doc, sub)["items"];
                check_object(doc, name, parses, base, &format!("{here}/0"), item, out);
            }
            _ => {}
        }
    }
}

#[test]
fn nullable_properties_are_the_ones_the_parsers_take_as_null() {
    let doc = document();
    let mut mismatches = Vec::new();
    for (name, parses, base) in bodies() {
        assert!(parses(&base), "{name}: the base body must parse: {base}");
        let schema = &doc["components"]["schemas"][name];
        assert!(schema.is_object(), "{name} is not in the document");
        check_object(&doc, name, parses, &base, "", schema, &mut mismatches);
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// Every request body of the document is in [`bodies`], so a new one cannot be missed.
#[test]
fn every_request_body_is_checked() {
    let doc = document();
    let checked: Vec<&str> = bodies().iter().map(|(n, _, _)| *n).collect();
    for path in doc["paths"].as_object().unwrap().values() {
        for op in path.as_object().unwrap().values() {
            let schema = &op["requestBody"]["content"]["application/json"]["schema"]["$ref"];
            if let Some(r) = schema.as_str() {
                let name = r.trim_start_matches("#/components/schemas/");
                assert!(checked.contains(&name), "{name} is not checked");
            }
        }
    }
}
