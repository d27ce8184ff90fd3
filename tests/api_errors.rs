//! The HTTP status of a failed lifecycle step follows its typed cause: the real
//! `VmSupervisor` over fake host backends behind the real API server. An exhausted address
//! pool once answered 500 `step_failed` (its cause was flattened to a string); it is a
//! dependency that is exhausted, so 503 `unavailable`.

use hearth::api::testing::TestServer;
use hearth::api::SupervisorPorts;
use hearth::client::{Client, Method};
use hearth_actors::supervisor::testing::supervisor_with_pool;
use hearth_actors::supervisor::{GetVm, MemoryVmStore, Open};
use hearth_actors::tap_pool::{AcquireTap, TapPoolConfig};
use hearth_proto::api::{ErrorBody, VmState};
use serde_json::json;

#[test]
fn an_exhausted_address_pool_answers_503_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(
        dir.path(),
        |_| {},
        move || {
            let pool = TapPoolConfig {
                cidr: "172.31.240.0/29".parse().unwrap(),
                pool_size: 1,
                ..Default::default()
            };
            let (sup, _disks, tap_pool) =
                supervisor_with_pool(true, MemoryVmStore::default(), pool);
            (SupervisorPorts::new(&sup), (sup, tap_pool))
        },
    )
    .unwrap();
    let (sup, tap_pool) = &s.supervisor;
    futures::executor::block_on(async {
        sup.send(Open {}).await.unwrap().unwrap();
        // Someone else holds every guest address of the /29.
        while tap_pool.send(AcquireTap {}).await.unwrap().is_ok() {}
    });

    let c = Client::new(&s.socket);
    let body = json!({"name": "a", "kernel": "vmlinux", "rootfs": "base", "ready_probe": false});
    let r = c
        .request(
            Method::POST,
            "/v1/vms",
            &[],
            Some(body.to_string().as_bytes()),
        )
        .unwrap();
    let err: ErrorBody = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (r.status, err.error.code.as_str()),
        (503, "unavailable"),
        "{}",
        err.error.message
    );
    assert!(
        err.error.message.contains("network lease")
            && err.error.message.contains("No free guest IP"),
        "{}",
        err.error.message
    );
    // The create was undone and the VM left `failed` with the cause.
    let info = futures::executor::block_on(sup.send(GetVm { name: "a".into() }))
        .unwrap()
        .unwrap();
    assert_eq!(info.state, VmState::Failed);
}
