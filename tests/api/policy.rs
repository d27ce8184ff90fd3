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
