//! Checks `hearth_proto::firecracker` against the official Firecracker API spec
//! (`firecracker.yaml`, swagger 2.0): the swagger `definitions` become a
//! draft-4 JSON schema (with `additionalProperties: false`, since Firecracker denies unknown
//! fields), and
//! - every body our types produce (a maximal and a minimal example of each) validates;
//! - every body the simulator's tests send validates, and the ones meant to be rejected don't;
//! - our types require exactly the spec's `required` fields, know every spec property, accept
//!   every spec enum value and nothing else, and reject unknown fields.
//!
//! The spec lies outside the repository, so these tests need `HEARTH_FIRECRACKER_SPEC` to
//! name it (`.ci/run` sets it to `../shared/firecracker/firecracker.yaml`). Unset, each test
//! prints a SKIP line saying so and passes; set to a file that cannot be read, it fails.

use hearth_testkit::bodies;

use std::collections::BTreeMap;
use std::path::PathBuf;

use hearth_proto::firecracker::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

/// Names the Firecracker OpenAPI spec (`firecracker.yaml`).
const SPEC_VAR: &str = "HEARTH_FIRECRACKER_SPEC";

/// The spec's path, or `None` (after a SKIP line naming the calling test) when unset.
fn spec_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(SPEC_VAR).filter(|p| !p.is_empty()) {
        Some(p.into())
    } else {
        let test = std::thread::current()
            .name()
            .unwrap_or("spec test")
            .to_owned();
        hearth_testkit::skip!(
            "SKIP: {test}: set {SPEC_VAR}=/path/to/firecracker.yaml (Firecracker's OpenAPI \
             spec) to check the API types against it"
        );
        None
    }
}

/// The spec's `definitions`, as JSON; `None` when the spec is not configured.
fn definitions() -> Option<serde_json::Map<String, Value>> {
    let path = spec_path()?;
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the spec at {} ({SPEC_VAR}): {e}",
            path.display()
        )
    });
    let yaml: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let defs = yaml
        .get("definitions")
        .expect("spec has definitions")
        .clone();
    match serde_json::to_value(defs).unwrap() {
        Value::Object(m) => Some(m),
        other => panic!("definitions is not a map: {other}"),
    }
}

/// Adds `additionalProperties: false` to every object schema with `properties`, walking the
/// schema structure (a property may itself be named `properties`).
fn close_objects(schema: &mut Value) {
    let Value::Object(m) = schema else { return };
    if let Some(Value::Object(props)) = m.get_mut("properties") {
        props.values_mut().for_each(close_objects);
        if !m.contains_key("additionalProperties") {
            m.insert("additionalProperties".into(), Value::Bool(false));
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = m.get_mut(key) {
            close_objects(child);
        }
    }
}

struct Spec {
    defs: serde_json::Map<String, Value>,
}

impl Spec {
    /// The spec, or `None` (the test skips) when it is not configured.
    fn load() -> Option<Spec> {
        let mut defs = definitions()?;
        for (_, d) in &mut defs {
            close_objects(d);
        }
        Some(Spec { defs })
    }

    fn def(&self, name: &str) -> &Value {
        self.defs
            .get(name)
            .unwrap_or_else(|| panic!("no definition {name}"))
    }

    /// Validates `body` against definition `name`; `name#patch` drops `required` (the spec
    /// reuses `MachineConfiguration` for `PATCH /machine-config`, whose fields are optional).
    fn check(&self, name: &str, body: &Value) -> Result<(), String> {
        let (base, patch) = match name.strip_suffix("#patch") {
            Some(b) => (b, true),
            None => (name, false),
        };
        let mut defs = self.defs.clone();
        if patch {
            if let Some(Value::Object(d)) = defs.get_mut(base) {
                d.remove("required");
            }
        }
        let schema = json!({
            "$schema": "http://json-schema.org/draft-04/schema#",
            "definitions": defs,
            "allOf": [{"$ref": format!("#/definitions/{base}")}],
        });
        let validator = jsonschema::draft4::new(&schema).map_err(|e| e.to_string())?;
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    fn properties(&self, name: &str) -> BTreeMap<String, Value> {
        self.def(name)["properties"]
            .as_object()
            .map(|m| m.clone().into_iter().collect())
            .unwrap_or_default()
    }

    fn required(&self, name: &str) -> Vec<String> {
        self.def(name)["required"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    }
}

/// Round-trips JSON through our type `T`.
fn through<T: Serialize + DeserializeOwned>(v: &Value) -> Result<Value, String> {
    let t: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(t).map_err(|e| e.to_string())
}

type RoundTrip = fn(&Value) -> Result<Value, String>;

/// One spec definition, our type for it, and examples of what the type produces.
struct Case {
    def: &'static str,
    round_trip: RoundTrip,
    max: Value,
    min: Value,
    /// Spec properties our type leaves out on purpose.
    omitted: &'static [&'static str],
    /// Fields our type requires although the spec does not.
    extra_required: &'static [&'static str],
}

fn tb() -> TokenBucket {
    TokenBucket {
        size: 1000,
        one_time_burst: Some(10),
        refill_time: 100,
    }
}

fn rl() -> RateLimiter {
    RateLimiter {
        bandwidth: Some(tb()),
        ops: Some(tb()),
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "the table of request bodies checked against the spec"
)]
fn cases() -> Vec<Case> {
    fn v<T: Serialize>(t: T) -> Value {
        serde_json::to_value(t).unwrap()
    }
    vec![
        Case {
            def: "MachineConfiguration",
            round_trip: through::<MachineConfig>,
            max: v(MachineConfig {
                vcpu_count: 2,
                mem_size_mib: 256,
                smt: Some(true),
                track_dirty_pages: Some(true),
                huge_pages: Some(HugePages::Hugetlbfs2M),
                cpu_template: Some(CpuTemplate::T2),
            }),
            min: v(MachineConfig::default()),
            omitted: &[],
            extra_required: &[],
        },
        Case {
            def: "BootSource",
            round_trip: through::<BootSource>,
            max: v(BootSource {
                kernel_image_path: "/vmlinux".into(),
                boot_args: Some("console=ttyS0".into()),
                initrd_path: Some("/initrd".into()),
            }),
            min: v(BootSource {
                kernel_image_path: "/vmlinux".into(),
                ..Default::default()
            }),
            omitted: &[],
            extra_required: &[],
        },
        Case {
            def: "Drive",
            round_trip: through::<Drive>,
            max: v(Drive {
                drive_id: "rootfs".into(),
                is_root_device: true,
                partuuid: Some("0eaa91a0-01".into()),
                cache_type: Some(CacheType::Writeback),
                is_read_only: Some(true),
                path_on_host: Some("/rootfs.ext4".into()),
                rate_limiter: Some(rl()),
                io_engine: Some(IoEngine::Async),
                socket: Some("/vhost.sock".into()),
            }),
            min: v(Drive {
                drive_id: "rootfs".into(),
                ..Default::default()
            }),
            omitted: &[],
            extra_required: &[],
        },
        Case {
            def: "PartialDrive",
            round_trip: through::<PartialDrive>,
            max: v(PartialDrive {
                drive_id: "rootfs".into(),
                path_on_host: Some("/new.ext4".into()),
                rate_limiter: Some(rl()),
            }),
            min: v(PartialDrive {
                drive_id: "rootfs".into(),
                ..Default::default()
            }),
            omitted: &[],
            extra_required: &[],
        },
        Case {
            def: "NetworkInterface",
            round_trip: through::<NetworkInterface>,
            max: v(NetworkInterface {
                iface_id: "eth0".into(),
                host_dev_name: "tap0".into(),
                guest_mac: Some("06:00:ac:10:00:02".into()),
                mtu: Some(1500),
                rx_rate_limiter: Some(rl()),
                tx_rate_limiter: Some(rl()),
            }),
            min: v(NetworkInterface {
                iface_id: "eth0".into(),
                host_dev_name: "tap0".into(),
                ..Default::default()
            }),
            omitted: &[],
            extra_required: &[],
        },
        Case {
            def: "PartialNetworkInterface",
            round_trip: through::<PartialNetworkInterface>,
            max: v(PartialNetworkInterface {
                iface_id: "eth0".into(),
                rx_rate_limiter: Some(rl()),
                tx_rate_limiter: Some(rl()),
            }),
            min: v(PartialNetworkInterface {
                iface_id: "eth0".into(),
                ..Default::default()
            }),
            omitted: &[],
            extra_required: &[],
        },
        Case {
            def: "Vsock",
            round_trip: through::<Vsock>,
            max: v(Vsock {
                guest_cid: 3,
                uds_path: "/v.sock".into(),
                vsock_id: Some("vsock0".into()),
            }),
            min: v(Vsock {
                guest_cid: 3,
                uds_path: "/v.sock".into(),
                vsock_id: None,
            }),
            omitted: &[],
            extra_required: &[],
        },
        Case {
            def: "InstanceActionInfo",
            round_trip: through::<InstanceActionInfo>,
            max: v(InstanceActionInfo::new(ActionType::InstanceStart)),
            min: v(InstanceActionInfo::new(ActionType::SendCtrlAltDel)),
            omitted: &[],
            extra_required: &[],
        },
        Case {
            def: "InstanceInfo",
            round_trip: through::<InstanceInfo>,
            max: v(InstanceInfo {
                app_name: "Firecracker".into(),
                id: "vm1".into(),
                state: InstanceState::NotStarted,
                vmm_version: "1.17.0".into(),
            }),
            min: v(InstanceInfo {
                app_name: "Firecracker".into(),
                id: "vm1".into(),
                state: InstanceState::Paused,
                vmm_version: "1.17.0".into(),
            }),
            omitted: &[],
            extra_required: &[],
        },
        Case {
            def: "FirecrackerVersion",
            round_trip: through::<FirecrackerVersion>,
            max: v(FirecrackerVersion {
                firecracker_version: "1.17.0".into(),
            }),
            min: v(FirecrackerVersion {
                firecracker_version: "1.17.0".into(),
            }),
            omitted: &[],
            extra_required: &[],
        },
        Case {
            def: "Logger",
            round_trip: through::<Logger>,
            max: v(Logger {
                log_path: Some("/log".into()),
                level: Some(LogLevel::Trace),
                show_level: Some(true),
                show_log_origin: Some(true),
                module: Some("api_server::request".into()),
            }),
            min: v(Logger::default()),
            omitted: &[],
            extra_required: &[],
        },
        Case {
            def: "Metrics",
            round_trip: through::<Metrics>,
            max: v(Metrics {
                metrics_path: "/metrics".into(),
                emit_id: Some(true),
                properties: Some([("team".to_owned(), "hearth".to_owned())].into()),
            }),
            min: v(Metrics {
                metrics_path: "/metrics".into(),
                ..Default::default()
            }),
            omitted: &[],
            extra_required: &[],
        },
        Case {
            def: "Vm",
            round_trip: through::<Vm>,
            max: v(Vm {
                state: VmPauseState::Paused,
            }),
            min: v(Vm {
                state: VmPauseState::Resumed,
            }),
            omitted: &[],
            extra_required: &[],
        },
        Case {
            def: "RateLimiter",
            round_trip: through::<RateLimiter>,
            max: v(rl()),
            min: v(RateLimiter::default()),
            omitted: &[],
            extra_required: &[],
        },
        Case {
            def: "TokenBucket",
            round_trip: through::<TokenBucket>,
            max: v(tb()),
            min: v(TokenBucket {
                size: 0,
                one_time_burst: None,
                refill_time: 0,
            }),
            omitted: &[],
            extra_required: &[],
        },
        Case {
            def: "Error",
            round_trip: through::<FaultBody>,
            max: v(FaultBody::new("The ID cannot be empty.")),
            min: v(FaultBody::new("")),
            omitted: &[],
            // Firecracker always sends it; an error body without it is not one.
            extra_required: &["fault_message"],
        },
        Case {
            def: "FullVmConfiguration",
            round_trip: through::<VmConfigFile>,
            max: json!({
                "boot-source": {"kernel_image_path": "/vmlinux", "boot_args": "console=ttyS0"},
                "drives": [{"drive_id": "rootfs", "is_root_device": true, "path_on_host": "/r"}],
                "machine-config": {"vcpu_count": 2, "mem_size_mib": 256},
                "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0"}],
                "vsock": {"guest_cid": 3, "uds_path": "/v.sock"},
                "logger": {"level": "Info"},
                "metrics": {"metrics_path": "/m"},
                "balloon": {"amount_mib": 0, "deflate_on_oom": false},
                "cpu-config": {"kvm_capabilities": ["!56"]},
                "memory-hotplug": {"total_size_mib": 1024},
                "mmds-config": {"network_interfaces": ["eth0"]},
                "pmem": [{"id": "pmem0", "path_on_host": "/p"}],
                "entropy": {}
            }),
            min: v(VmConfigFile::default()),
            omitted: &[],
            extra_required: &[],
        },
    ]
}

#[test]
fn examples_of_every_type_validate_and_round_trip() {
    let Some(spec) = Spec::load() else { return };
    for case in cases() {
        for (which, body) in [("max", &case.max), ("min", &case.min)] {
            if let Err(e) = spec.check(case.def, body) {
                panic!("{} {which} {body} violates the spec: {e}", case.def);
            }
            let back = (case.round_trip)(body)
                .unwrap_or_else(|e| panic!("{} {which} does not parse back: {e}", case.def));
            assert_eq!(&back, body, "{} {which} round trip", case.def);
        }
    }
}

#[test]
fn types_cover_spec_properties_exactly() {
    let Some(spec) = Spec::load() else { return };
    for case in cases() {
        let spec_props: Vec<String> = spec
            .properties(case.def)
            .into_keys()
            .filter(|k| !case.omitted.contains(&k.as_str()))
            .collect();
        let mut ours: Vec<String> = case.max.as_object().unwrap().keys().cloned().collect();
        ours.sort();
        let mut want = spec_props.clone();
        want.sort();
        assert_eq!(
            ours, want,
            "{}: the maximal example must use every spec property",
            case.def
        );
    }
}

#[test]
fn types_require_exactly_the_spec_required_fields() {
    let Some(spec) = Spec::load() else { return };
    for case in cases() {
        let required = spec.required(case.def);
        for key in case.max.as_object().unwrap().keys() {
            let mut body = case.max.clone();
            body.as_object_mut().unwrap().remove(key);
            let parsed = (case.round_trip)(&body);
            if required.contains(key) {
                assert!(
                    parsed.is_err(),
                    "{}: `{key}` is required by the spec",
                    case.def
                );
                assert!(spec.check(case.def, &body).is_err());
            } else if case.extra_required.contains(&key.as_str()) {
                assert!(parsed.is_err(), "{}: we require `{key}`", case.def);
            } else {
                assert!(
                    parsed.is_ok(),
                    "{}: `{key}` is optional in the spec: {parsed:?}",
                    case.def
                );
            }
        }
    }
}

#[test]
fn enums_match_the_spec() {
    let Some(spec) = Spec::load() else { return };
    for case in cases() {
        for (key, prop) in spec.properties(case.def) {
            let Some(values) = prop["enum"].as_array() else {
                continue;
            };
            if !case.max.as_object().unwrap().contains_key(&key) {
                continue;
            }
            for value in values {
                let mut body = case.max.clone();
                body[&key] = value.clone();
                let back = (case.round_trip)(&body)
                    .unwrap_or_else(|e| panic!("{}.{key} = {value}: {e}", case.def));
                assert_eq!(&back[&key], value, "{}.{key}", case.def);
            }
            let mut body = case.max.clone();
            body[&key] = json!("NotInTheSpec");
            assert!((case.round_trip)(&body).is_err(), "{}.{key}", case.def);
        }
    }
    // Enums in $ref'd definitions: CpuTemplate.
    for value in spec.def("CpuTemplate")["enum"].as_array().unwrap() {
        let t: CpuTemplate = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(&serde_json::to_value(t).unwrap(), value);
    }
}

#[test]
fn unknown_fields_are_rejected_by_types_and_closed_schema() {
    let Some(spec) = Spec::load() else { return };
    for case in cases() {
        let mut body = case.max.clone();
        body["x_unknown"] = json!(1);
        assert!((case.round_trip)(&body).is_err(), "{}", case.def);
        assert!(spec.check(case.def, &body).is_err(), "{}", case.def);
    }
}

#[test]
fn simulator_test_bodies_conform() {
    let Some(spec) = Spec::load() else { return };
    for (def, body) in bodies::VALID {
        let v: Value = serde_json::from_str(&body.replace("@DIR@", "/tmp/sim")).unwrap();
        if let Err(e) = spec.check(def, &v) {
            panic!("{def} {body}: {e}");
        }
    }
    for (def, body) in bodies::SCHEMA_INVALID {
        let v: Value = serde_json::from_str(&body.replace("@DIR@", "/tmp/sim")).unwrap();
        assert!(
            spec.check(def, &v).is_err(),
            "{def} {body} should be rejected"
        );
    }
}
