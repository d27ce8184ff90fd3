//! `PATCH /v1/vms/{name}` and the policy fields of a create, over the fake supervisor: what is
//! accepted, and bad input refused naming the field with nothing changed.

use hearth::client::Method;
use hearth_proto::api::VmInfo;
use hearth_proto::api_policy::RestartPolicy;
use serde_json::json;

use super::{create, error_of, post, server};

fn patch(
    c: &hearth::client::Client,
    path: &str,
    body: serde_json::Value,
) -> hearth::client::Response {
    c.request(Method::PATCH, path, &[], Some(body.to_string().as_bytes()))
        .unwrap()
}

#[test]
fn patch_changes_restart_labels_and_ttl() {
    let (_d, _s, c) = server();
    create(&c, "job");
    let r = patch(
        &c,
        "/v1/vms/job",
        json!({"restart": "on-failure:3", "labels": {"team": "a"}, "ttl": "+15m"}),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let vm: VmInfo = r.json().unwrap();
    assert_eq!(
        vm.spec.restart,
        RestartPolicy::OnFailure {
            max_retries: Some(3)
        }
    );
    assert_eq!(vm.spec.labels.get("team").map(String::as_str), Some("a"));
    assert_eq!(vm.time_left_secs, Some(900));
}

#[test]
fn bad_policy_input_is_refused_naming_it_and_changes_nothing() {
    let (_d, _s, c) = server();
    create(&c, "job");
    for (body, names) in [
        (json!({"ttl": "soon"}), "soon"),
        (json!({"ttl": "0s"}), "0s"),
        (json!({"restart": "sometimes"}), "sometimes"),
        (json!({"restart": "always", "labels": {"a=b": "c"}}), "a=b"),
        (json!({"colour": "red"}), "colour"),
    ] {
        let r = patch(&c, "/v1/vms/job", body.clone());
        assert_eq!(r.status, 400, "{body}");
        let e = error_of(&r);
        assert!(
            e.error.message.contains(names),
            "{body}: {}",
            e.error.message
        );
    }
    let r = c.request(Method::GET, "/v1/vms/job", &[], None).unwrap();
    let vm: VmInfo = r.json().unwrap();
    assert_eq!(vm.spec.restart, RestartPolicy::No);
    assert!(vm.spec.labels.is_empty());
    assert_eq!(patch(&c, "/v1/vms/nope", json!({})).status, 404);

    let r = post(
        &c,
        "/v1/vms",
        &[],
        json!({"name": "x", "kernel": "k", "rootfs": "r", "ttl": "366d"}),
    );
    assert_eq!(r.status, 400);
    assert!(error_of(&r).error.message.contains("ttl"));
    let r = post(
        &c,
        "/v1/vms",
        &[],
        json!({"name": "y", "kernel": "k", "rootfs": "r", "restart": "always", "ttl": "30m",
               "on_expiry": "delete"}),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}

#[test]
fn cordon_refuses_creates_shows_in_health_and_metrics_and_drain_stops_vms() {
    let (_d, _s, c) = server();
    create(&c, "web");
    let r = post(
        &c,
        "/v1/node/cordon",
        &[],
        json!({"reason": "kernel upgrade"}),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = post(
        &c,
        "/v1/vms",
        &[],
        json!({"name": "x", "kernel": "k", "rootfs": "r"}),
    );
    assert_eq!(r.status, 503);
    let e = error_of(&r);
    assert_eq!(e.error.code, "cordoned");
    assert!(
        e.error.message.contains("kernel upgrade"),
        "{}",
        e.error.message
    );

    let health: serde_json::Value = c
        .request(Method::GET, "/v1/health", &[], None)
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        (
            health["cordoned"].as_bool(),
            health["cordon_reason"].as_str()
        ),
        (Some(true), Some("kernel upgrade"))
    );
    let metrics = c.request(Method::GET, "/metrics", &[], None).unwrap();
    assert!(String::from_utf8_lossy(&metrics.body).contains("hearth_node_cordoned 1"));
    assert_eq!(
        post(&c, "/v1/node/cordon", &[], json!({"why": "x"})).status,
        400
    );

    let r = post(&c, "/v1/node/drain", &[], json!({}));
    assert_eq!(r.status, 200);
    let node: serde_json::Value = r.json().unwrap();
    assert_eq!(node["drain"]["stopped"], 1, "{node}");
    let vm: VmInfo = c
        .request(Method::GET, "/v1/vms/web", &[], None)
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(vm.state, hearth_proto::api::VmState::Stopped);

    assert_eq!(post(&c, "/v1/node/uncordon", &[], json!({})).status, 200);
    let node: serde_json::Value = c
        .request(Method::GET, "/v1/node", &[], None)
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(node["cordoned"], false);
}

#[test]
fn drain_takes_a_mode_and_can_answer_at_once() {
    let (_d, _s, c) = server();
    create(&c, "web");
    for (path, body, names) in [
        ("/v1/node/drain", json!({"mode": "pause"}), "pause"),
        ("/v1/node/drain", json!({"mode": "Stop"}), "Stop"),
        ("/v1/node/drain?wait=maybe", json!({}), "wait"),
        ("/v1/node/drain?later=1", json!({}), "later"),
    ] {
        let r = post(&c, path, &[], body.clone());
        assert_eq!(r.status, 400, "{path} {body}");
        let e = error_of(&r);
        assert!(
            e.error.message.contains(names),
            "{body}: {}",
            e.error.message
        );
    }
    // Refused whole: nothing cordoned, nothing stopped.
    let node: serde_json::Value = c
        .request(Method::GET, "/v1/node", &[], None)
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(node["cordoned"], false, "{node}");

    let r = post(
        &c,
        "/v1/node/drain?wait=false",
        &[],
        json!({"reason": "swap disks", "mode": "snapshot"}),
    );
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let node: serde_json::Value = r.json().unwrap();
    assert_eq!(node["reason"], "swap disks");
    assert_eq!(node["drain"]["mode"], "snapshot", "{node}");
    let snap = node["drain"]["snapshots"][0][1].as_str().unwrap();
    assert!(snap.starts_with("web-drained-"), "{node}");
}
