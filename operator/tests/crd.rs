//! The generated CRD and the manifests in `deploy/kubernetes/`: the checked-in CRD is what
//! the binary prints, its schema follows the API server's structural-schema rules, every
//! manifest parses (here, and with `kubectl` when it is installed), and RBAC grants what the
//! code uses.
#![expect(
    clippy::disallowed_methods,
    reason = "runs the hearth-operator binary and kubectl"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use hearth_operator::crd::{crd_yaml, MicroVM};
use serde::Deserialize;
use serde_json::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

fn docs(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(deploy().join(file)).expect(file);
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{file}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn checked_in_crd_is_up_to_date() {
    let checked_in = std::fs::read_to_string(deploy().join("crd.yaml")).unwrap();
    assert!(
        checked_in == crd_yaml().unwrap(),
        "deploy/kubernetes/crd.yaml is stale: run `cargo run -p hearth-operator -- crd > deploy/kubernetes/crd.yaml`"
    );
    // The binary prints the same.
    let out = Command::new(env!("CARGO_BIN_EXE_hearth-operator"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), checked_in);
}

/// The fields `JSONSchemaProps` has (apiextensions.k8s.io/v1); anything else is refused or
/// silently dropped by the API server.
const KNOWN: &[&str] = &[
    "description",
    "type",
    "format",
    "title",
    "default",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "multipleOf",
    "enum",
    "maxProperties",
    "minProperties",
    "required",
    "items",
    "allOf",
    "oneOf",
    "anyOf",
    "not",
    "properties",
    "additionalProperties",
    "externalDocs",
    "example",
    "nullable",
];

/// Checks the structural-schema rules at `node`, collecting violations.
fn structural(node: &Value, path: &str, in_junctor: bool, errors: &mut Vec<String>) {
    let Some(map) = node.as_object() else {
        errors.push(format!("{path}: not an object"));
        return;
    };
    for key in map.keys() {
        if !KNOWN.contains(&key.as_str()) && !key.starts_with("x-kubernetes-") {
            errors.push(format!("{path}: field {key:?} is not part of a CRD schema"));
        }
    }
    let preserve = map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
        || map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    if in_junctor {
        // Inside allOf/anyOf/oneOf/not only value validations are allowed.
        for key in [
            "type",
            "description",
            "default",
            "additionalProperties",
            "nullable",
        ] {
            if map.contains_key(key) {
                errors.push(format!("{path}: {key:?} inside a junctor"));
            }
        }
    } else if !preserve
        && map
            .get("type")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        errors.push(format!("{path}: no type"));
    }
    if map.contains_key("properties") && map.contains_key("additionalProperties") {
        errors.push(format!("{path}: both properties and additionalProperties"));
    }
    for key in ["exclusiveMaximum", "exclusiveMinimum"] {
        if map.get(key).is_some_and(|v| !v.is_boolean()) {
            errors.push(format!("{path}: {key} must be a boolean in OpenAPI v3.0"));
        }
    }
    if map.get("uniqueItems") == Some(&Value::Bool(true)) {
        errors.push(format!("{path}: uniqueItems: true is forbidden"));
    }
    if let Some(Value::Object(props)) = map.get("properties") {
        for (k, v) in props {
            structural(v, &format!("{path}.{k}"), in_junctor, errors);
        }
        if let Some(Value::Array(req)) = map.get("required") {
            for r in req {
                if !props.contains_key(r.as_str().unwrap_or_default()) {
                    errors.push(format!("{path}: required {r} is not a property"));
                }
            }
        }
    }
    if let Some(items) = map.get("items") {
        structural(items, &format!("{path}[]"), in_junctor, errors);
    }
    if let Some(ap @ Value::Object(_)) = map.get("additionalProperties") {
        structural(ap, &format!("{path}{{}}"), in_junctor, errors);
    }
    for j in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(list)) = map.get(j) {
            for (i, s) in list.iter().enumerate() {
                structural(s, &format!("{path}.{j}[{i}]"), true, errors);
            }
        }
    }
    if let Some(not) = map.get("not") {
        structural(not, &format!("{path}.not"), true, errors);
    }
}

fn crd_version() -> Value {
    let crd = docs("crd.yaml").remove(0);
    assert_eq!(crd["kind"], "CustomResourceDefinition");
    assert_eq!(crd["metadata"]["name"], "microvms.hearth.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let versions = crd["spec"]["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1);
    versions[0].clone()
}

#[test]
fn crd_schema_is_structural() {
    let v = crd_version();
    assert_eq!(v["name"], "v1alpha1");
    assert_eq!(v["served"], true);
    assert_eq!(v["storage"], true);
    assert!(
        v["subresources"]["status"].is_object(),
        "status subresource"
    );
    let schema = &v["schema"]["openAPIV3Schema"];
    let mut errors = Vec::new();
    structural(schema, "", false, &mut errors);
    assert!(errors.is_empty(), "not structural:\n{}", errors.join("\n"));
    // The rules above do catch violations.
    let bad = serde_json::json!({"type": "object", "properties": {
        "a": {"description": "no type"},
        "b": {"type": "string", "$ref": "#/x"},
        "c": {"type": "object", "anyOf": [{"type": "string"}]},
    }});
    let mut errors = Vec::new();
    structural(&bad, "", false, &mut errors);
    assert_eq!(errors.len(), 3, "{errors:?}");
}

#[test]
fn printer_columns_point_into_the_schema() {
    let v = crd_version();
    let schema = &v["schema"]["openAPIV3Schema"];
    let columns = v["additionalPrinterColumns"].as_array().unwrap();
    let names: Vec<&str> = columns
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Phase", "Node", "IP", "vCPUs", "Memory", "Age"]);
    for c in columns {
        let path = c["jsonPath"].as_str().unwrap();
        if path == ".metadata.creationTimestamp" {
            continue;
        }
        let mut node = schema;
        for part in path.trim_start_matches('.').split('.') {
            node = &node["properties"][part];
            assert!(node.is_object(), "{path}: {part} is not in the schema");
        }
        assert_eq!(node["type"], c["type"], "{path}");
    }
}

#[test]
fn example_microvm_parses_as_the_rust_type() {
    let doc = docs("example-microvm.yaml").remove(0);
    let m: MicroVM = serde_json::from_value(doc).expect("example is a MicroVM");
    assert_eq!((m.spec.vcpus, m.spec.memory_mib), (2, 512));
    assert_eq!(m.spec.restart.as_deref(), Some("on-failure:3"));
}

/// Every verb the code uses, per role; the roles grant exactly these.
#[test]
fn rbac_grants_what_the_code_uses_and_no_more() {
    let roles = docs("rbac.yaml");
    let rules = |name: &str| -> Vec<(String, String, Vec<String>)> {
        let role = roles
            .iter()
            .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("role {name}"));
        let mut out = Vec::new();
        for r in role["rules"].as_array().unwrap() {
            for g in r["apiGroups"].as_array().unwrap() {
                for res in r["resources"].as_array().unwrap() {
                    let mut verbs: Vec<String> = r["verbs"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_str().unwrap().to_owned())
                        .collect();
                    verbs.sort();
                    out.push((
                        g.as_str().unwrap().to_owned(),
                        res.as_str().unwrap().to_owned(),
                        verbs,
                    ));
                }
            }
        }
        out.sort();
        out
    };
    let s = |g: &str, r: &str, v: &[&str]| {
        (
            g.to_owned(),
            r.to_owned(),
            v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        rules("hearth-controller"),
        vec![
            s("", "pods", &["create", "delete", "list", "watch"]),
            s("hearth.dev", "microvms", &["list", "patch", "watch"]),
            s("hearth.dev", "microvms/finalizers", &["update"]),
            s("hearth.dev", "microvms/status", &["patch"]),
        ]
    );
    assert_eq!(
        rules("hearth-node"),
        vec![
            s("", "pods", &["list", "watch"]),
            s("hearth.dev", "microvms", &["get", "list", "patch", "watch"]),
            s("hearth.dev", "microvms/status", &["patch"]),
        ]
    );
    for d in &roles {
        assert_ne!(d["kind"], "Role", "no namespaced roles expected");
        if let Some(rules) = d["rules"].as_array() {
            for r in rules {
                let text = r.to_string();
                assert!(!text.contains("\"*\""), "wildcard in {text}");
            }
        }
    }
}

/// `kubectl` parses every manifest. `apply --dry-run=client` needs an API server even with
/// `--validate=false` (it maps kinds to resources through discovery), so this uses the
/// server-less `annotate --local -o name`, which decodes each document as kubectl would.
#[test]
fn kubectl_parses_every_manifest() {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("HEARTH_REQUIRE_KUBECTL").as_deref() != Ok("1"),
            "kubectl is missing and HEARTH_REQUIRE_KUBECTL=1 forbids skipping"
        );
        hearth_testkit::skip!("SKIP kubectl_parses_every_manifest: kubectl is not installed (Debian package kubernetes-client)");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    let kubectl = |file: &Path| {
        Command::new("kubectl")
            // No configuration: nothing may be read from or sent to a cluster.
            .env("KUBECONFIG", home.path().join("none"))
            .env("HOME", home.path())
            .args(["annotate", "--local", "-o", "name", "-f"])
            .arg(file)
            .arg("hearth.dev/checked=true")
            .output()
            .unwrap()
    };
    for f in &files {
        let out = kubectl(f);
        assert!(
            out.status.success(),
            "kubectl refused {}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let names = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            names.lines().count(),
            docs(f.file_name().unwrap().to_str().unwrap()).len(),
            "{names}"
        );
    }
    // And it does refuse a broken one.
    let bad = home.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: v1\nkind: Pod\nmetadata: [\n").unwrap();
    assert!(!kubectl(&bad).status.success());
}

/// Resources a stand-in API server advertises: (group/version, plural, kind, namespaced).
const DISCOVERY: &[(&str, &str, &str, bool)] = &[
    ("v1", "namespaces", "Namespace", false),
    ("v1", "serviceaccounts", "ServiceAccount", true),
    ("v1", "pods", "Pod", true),
    ("apps/v1", "deployments", "Deployment", true),
    ("apps/v1", "daemonsets", "DaemonSet", true),
    (
        "rbac.authorization.k8s.io/v1",
        "clusterroles",
        "ClusterRole",
        false,
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
    ),
    (
        "apiextensions.k8s.io/v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
    ),
];

/// The discovery answer for `path`, or `None` (404: no such object, so `apply` creates).
/// The MicroVM resource is advertised as the generated CRD names it.
fn discovery(path: &str) -> Option<Value> {
    let crd = hearth_operator::crd::crd();
    let gv = format!("{}/{}", crd.spec.group, crd.spec.versions[0].name);
    let mut table: Vec<(String, String, String, bool)> = DISCOVERY
        .iter()
        .map(|(g, p, k, n)| ((*g).to_owned(), (*p).to_owned(), (*k).to_owned(), *n))
        .collect();
    table.push((
        gv,
        crd.spec.names.plural.clone(),
        crd.spec.names.kind.clone(),
        crd.spec.scope == "Namespaced",
    ));
    let resources = |gv: &str| -> Value {
        let list: Vec<Value> = table
            .iter()
            .filter(|t| t.0 == gv)
            .map(|(_, plural, kind, namespaced)| {
                serde_json::json!({"name": plural, "singularName": "", "namespaced": namespaced,
                    "kind": kind, "verbs": ["create", "get", "list", "patch", "delete"]})
            })
            .collect();
        serde_json::json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list})
    };
    match path {
        "/api" => Some(
            serde_json::json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        ),
        "/apis" => {
            let mut groups: Vec<&str> = table
                .iter()
                .map(|t| t.0.as_str())
                .filter(|g| g.contains('/'))
                .collect();
            groups.dedup();
            let groups: Vec<Value> = groups
                .iter()
                .map(|gv| {
                    let (g, v) = gv.split_once('/').unwrap();
                    let version = serde_json::json!({"groupVersion": gv, "version": v});
                    serde_json::json!({"name": g, "versions": [version], "preferredVersion": version})
                })
                .collect();
            Some(serde_json::json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        }
        "/api/v1" => Some(resources("v1")),
        p => p
            .strip_prefix("/apis/")
            .filter(|gv| table.iter().any(|t| t.0 == *gv))
            .map(resources),
    }
}

/// A stand-in API server on loopback that only answers discovery (and 404 for objects):
/// enough for `kubectl apply --dry-run=client`, which needs discovery to map kinds to
/// resources but sends nothing. Any write is answered 500 and recorded, so the test can
/// check that none came. Returns the address and the recorded requests.
fn discovery_server() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let mut parts = request.split_whitespace();
            let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            log.lock().unwrap().push(format!("{method} {target}"));
            let path = target.split('?').next().unwrap_or("");
            let (status, body) = match (method, discovery(path)) {
                ("GET", Some(v)) => ("200 OK", v),
                ("GET", None) => (
                    "404 Not Found",
                    serde_json::json!({"kind": "Status", "apiVersion": "v1",
                    "status": "Failure", "reason": "NotFound", "code": 404}),
                ),
                _ => ("500 Internal Server Error", serde_json::json!({})),
            };
            let body = body.to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, seen)
}

/// `kubectl apply --dry-run=client --validate=false` of every manifest, with a stand-in
/// discovery server on loopback: kubectl decodes each document, maps its kind to a resource
/// (the MicroVM example through the generated CRD's names) and reports it would create it.
#[test]
fn kubectl_apply_dry_run_client_with_discovery_only() {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("HEARTH_REQUIRE_KUBECTL").as_deref() != Ok("1"),
            "kubectl is missing and HEARTH_REQUIRE_KUBECTL=1 forbids skipping"
        );
        hearth_testkit::skip!(
            "SKIP kubectl_apply_dry_run_client_with_discovery_only: kubectl is not installed"
        );
        return;
    }
    let (addr, seen) = discovery_server();
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config");
    std::fs::write(
        &config,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster:\n    server: http://{addr}\n\
             contexts:\n- name: stand-in\n  context: {{cluster: stand-in, namespace: default}}\ncurrent-context: stand-in\n"
        ),
    )
    .unwrap();
    let apply = |path: &Path| {
        Command::new("kubectl")
            .env("KUBECONFIG", &config)
            .env("HOME", home.path())
            .args(["apply", "--dry-run=client", "--validate=false", "-f"])
            .arg(path)
            .output()
            .unwrap()
    };
    let out = apply(&deploy());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "customresourcedefinition.apiextensions.k8s.io/microvms.hearth.dev created (dry run)",
        "microvm.hearth.dev/web created (dry run)",
        "clusterrole.rbac.authorization.k8s.io/hearth-node created (dry run)",
        "daemonset.apps/hearth-node created (dry run)",
        "deployment.apps/hearth-controller created (dry run)",
    ] {
        assert!(stdout.contains(want), "{want} missing from:\n{stdout}");
    }
    assert!(
        seen.lock().unwrap().iter().all(|r| r.starts_with("GET ")),
        "a dry run sent a write: {:?}",
        seen.lock().unwrap()
    );
    // A kind nobody serves is refused: the mapping is real.
    let bad = home.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: hearth.dev/v1alpha1\nkind: MicroVm\nmetadata: {name: x}\n",
    )
    .unwrap();
    assert!(!apply(&bad).status.success());
}
