//! The same server over the real `VmSupervisor` with fake host backends and no Firecracker
//! binary: proves the ports fit the real actor and its answers map as documented.

use hearth::api::testing::TestServer;
use hearth::api::SupervisorPorts;
use hearth::client::{Client, Method, SseReader};
use hearth_actors::supervisor::testing::supervisor_over_fakes;
use hearth_actors::supervisor::{MemoryVmStore, Open, VmStore};
use hearth_proto::api::{CreateVm, EventReason, VmInfo, VmState};
use serde_json::json;

use super::{error_of, post};

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario against the real supervisor, read top to bottom"
)]
fn real_supervisor_answers_map_as_documented() {
    let mut store = MemoryVmStore::default();
    let spec: CreateVm =
        serde_json::from_value(json!({"name": "old", "kernel": "vmlinux", "rootfs": "base"}))
            .unwrap();
    store.insert_vm(&spec).unwrap();
    store.set_state("old", VmState::Stopped, None).unwrap();
    store
        .append_event("old", VmState::Stopped, EventReason::User, None)
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(
        dir.path(),
        |_| {},
        move || {
            let (sup, _disks) = supervisor_over_fakes(false, store);
            (SupervisorPorts::new(&sup), sup)
        },
    )
    .unwrap();
    futures::executor::block_on(s.supervisor.send(Open {}))
        .unwrap()
        .unwrap();
    let c = Client::new(&s.socket);

    let vms: Vec<VmInfo> = c.get("/v1/vms").unwrap();
    assert_eq!(vms.len(), 1);
    assert_eq!(
        (vms[0].name.as_str(), vms[0].state),
        ("old", VmState::Stopped)
    );

    let r = c
        .request(Method::POST, "/v1/vms/old/stop", &[], None)
        .unwrap();
    assert_eq!(
        (r.status, error_of(&r).error.code.as_str()),
        (409, "invalid_state")
    );
    let r = c.request(Method::GET, "/v1/vms/nope", &[], None).unwrap();
    assert_eq!(
        (r.status, error_of(&r).error.code.as_str()),
        (404, "not_found")
    );
    let r = post(
        &c,
        "/v1/vms",
        &[],
        json!({"name": "new", "kernel": "nokernel", "rootfs": "base"}),
    );
    assert_eq!(
        (r.status, error_of(&r).error.code.as_str()),
        (422, "unknown_image")
    );
    let r = post(
        &c,
        "/v1/vms",
        &[],
        json!({"name": "old", "kernel": "vmlinux", "rootfs": "base"}),
    );
    assert_eq!(
        (r.status, error_of(&r).error.code.as_str()),
        (409, "conflict")
    );
    let r = c
        .request(
            Method::GET,
            "/v1/vms/old/wait?state=stopped&timeout=1s",
            &[],
            None,
        )
        .unwrap();
    assert_eq!(r.status, 200);
    // `running` cannot come from `stopped` without a start: refused at once.
    let r = c
        .request(
            Method::GET,
            "/v1/vms/old/wait?state=running&timeout=10s",
            &[],
            None,
        )
        .unwrap();
    assert_eq!(
        (r.status, error_of(&r).error.code.as_str()),
        (409, "invalid_state")
    );
    // Issue 9, finding 7: `creating` never comes back once left: 409 at once, not 408
    // when the timeout runs out (which it did before, after the 5 s).
    let r = c
        .request(
            Method::GET,
            "/v1/vms/old/wait?state=creating&timeout=5s",
            &[],
            None,
        )
        .unwrap();
    assert_eq!(
        (r.status, error_of(&r).error.code.as_str()),
        (409, "invalid_state")
    );
    // `deleting` could come: the long poll runs out.
    let r = c
        .request(
            Method::GET,
            "/v1/vms/old/wait?state=deleting&timeout=100ms",
            &[],
            None,
        )
        .unwrap();
    assert_eq!(
        (r.status, error_of(&r).error.code.as_str()),
        (408, "timeout")
    );

    let events: Vec<hearth_proto::api::Event> = c.get("/v1/events").unwrap();
    assert_eq!(events[0].seq, 1);
    let stream = c
        .stream(Method::GET, "/v1/events/stream?since=0", &[], None)
        .unwrap();
    let first = SseReader::new(stream.body).next().unwrap().unwrap();
    assert_eq!(first.id.as_deref(), Some("1"));

    let metrics = c.request(Method::GET, "/metrics", &[], None).unwrap();
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(text.contains("hearth_vms{state=\"stopped\"} 1\n"), "{text}");

    // No Firecracker binary: a valid create is refused as unavailable (503).
    let r = post(
        &c,
        "/v1/vms",
        &[("Idempotency-Key", "k1")],
        json!({"name": "fresh", "kernel": "vmlinux", "rootfs": "base"}),
    );
    let e = error_of(&r).error;
    assert_eq!(
        (r.status, e.code.as_str()),
        (503, "unavailable"),
        "{}",
        e.message
    );
    assert!(e.message.contains("Firecracker"), "{}", e.message);

    assert_eq!(
        c.request(Method::DELETE, "/v1/vms/old", &[], None)
            .unwrap()
            .status,
        204
    );
    let vms: Vec<VmInfo> = c.get("/v1/vms").unwrap();
    assert!(vms.is_empty());
}
