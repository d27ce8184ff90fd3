//! The snapshot endpoints over the real `VmSupervisor` (fake host backends, no Firecracker
//! binary) with a real snapshot directory: answers map as documented, bad input changes
//! nothing, a snapshot in use cannot be removed, and `Open` repairs what a crash left
//! (a half-made snapshot, one half-removed, files no record names).

use std::path::PathBuf;

use hearth::api::testing::TestServer;
use hearth::api::{SnapshotPorts, SupervisorPorts};
use hearth::client::{Client, Method};
use hearth_actors::supervisor::testing::supervisor_with_settings;
use hearth_actors::supervisor::{MemoryVmStore, Open, SnapshotRecord, SupervisorSettings, VmStore};
use hearth_actors::tap_pool::TapPoolConfig;
use hearth_proto::api::{CreateVm, VmState};
use hearth_proto::api_snapshot::{SnapshotInfo, SnapshotLeave, SnapshotState};
use serde_json::json;

use super::{error_of, post};

fn spec(value: serde_json::Value) -> CreateVm {
    serde_json::from_value(value).unwrap()
}

fn record(name: &str, state: SnapshotState, base: &std::path::Path) -> SnapshotRecord {
    SnapshotRecord {
        name: name.into(),
        state,
        source_vm: "src".into(),
        source_spec: spec(json!({"name": "src", "kernel": "vmlinux", "rootfs": "base"})),
        source_was: VmState::Running,
        leave: SnapshotLeave::Running,
        dir: base.join(name),
        created_at_ms: 1_700_000_000_000,
        internal: false,
        fc_version: "1.17.0-dev".into(),
        cpu_template: hearth_proto::firecracker::CpuTemplate::None,
        vcpus: 1,
        mem_size_mib: 128,
        vsock_cid: 3,
        disk_bytes: 4096,
        mem_file_bytes: 8192,
        left_frozen: None,
        mem_file: None,
    }
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario against the real supervisor, read top to bottom"
)]
fn snapshot_endpoints_over_the_real_supervisor() {
    let dir = tempfile::tempdir().unwrap();
    let snaps: PathBuf = dir.path().join("snapshots");
    for name in ["s1", "half", "gone", "leak", "x.fork"] {
        std::fs::create_dir_all(snaps.join(name)).unwrap();
        std::fs::write(snaps.join(name).join("memory"), b"x").unwrap();
    }
    let mut store = MemoryVmStore::default();
    store
        .insert_snapshot(&record("s1", SnapshotState::Ready, &snaps))
        .unwrap();
    // A crash left one half-made and one half-removed; `leak` has no record at all.
    store
        .insert_snapshot(&record("half", SnapshotState::Creating, &snaps))
        .unwrap();
    store
        .insert_snapshot(&record("gone", SnapshotState::Deleting, &snaps))
        .unwrap();
    // A fork cut short after its snapshot, before its VM was recorded.
    let mut orphan = record("x.fork", SnapshotState::Ready, &snaps);
    orphan.internal = true;
    store.insert_snapshot(&orphan).unwrap();
    // A stopped VM restored from s1, and a stopped plain VM.
    store
        .insert_vm(&spec(
            json!({"name": "b", "kernel": "vmlinux", "rootfs": "base",
            "from_snapshot": "s1"}),
        ))
        .unwrap();
    store.set_state("b", VmState::Stopped, None).unwrap();
    store
        .insert_vm(&spec(
            json!({"name": "old", "kernel": "vmlinux", "rootfs": "base"}),
        ))
        .unwrap();
    store.set_state("old", VmState::Stopped, None).unwrap();

    let settings = SupervisorSettings {
        snapshot_dir: snaps.clone(),
        ..SupervisorSettings::default()
    };
    let s = TestServer::start_with_snapshots(
        dir.path(),
        |_| {},
        move || {
            let (sup, _disks, _pool) = supervisor_with_settings(
                false,
                store,
                TapPoolConfig::default(),
                hearth_actors::host::processes::fake::FakeProcesses::new(),
                PathBuf::from("/nonexistent/hearth-test/vms"),
                settings,
            );
            (
                SupervisorPorts::new(&sup),
                Some(SnapshotPorts::new(&sup)),
                sup,
            )
        },
    )
    .unwrap();
    let report = futures::executor::block_on(s.supervisor.send(Open {}))
        .unwrap()
        .unwrap();
    assert!(
        report.repaired.contains(&"snapshot half".to_owned())
            && report.repaired.contains(&"snapshot gone".to_owned())
            && report.repaired.contains(&"snapshot x.fork".to_owned()),
        "{report:?}"
    );
    assert_eq!(report.swept, ["snapshot files leak"], "{report:?}");
    let mut left: Vec<_> = std::fs::read_dir(&snaps)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["s1"], "only the ready snapshot's files are left");
    let c = Client::new(&s.socket);

    let all: Vec<SnapshotInfo> = c.get("/v1/snapshots").unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(
        (all[0].name.as_str(), all[0].state, all[0].in_use_by.clone()),
        ("s1", SnapshotState::Ready, vec!["b".to_owned()])
    );
    let one: SnapshotInfo = c.get("/v1/snapshots/s1").unwrap();
    assert_eq!(one, all[0]);
    let r = c
        .request(Method::GET, "/v1/snapshots/nope", &[], None)
        .unwrap();
    assert_eq!(
        (r.status, error_of(&r).error.code.as_str()),
        (404, "not_found")
    );

    // In use: 409 naming the VM; nothing removed.
    let r = c
        .request(Method::DELETE, "/v1/snapshots/s1", &[], None)
        .unwrap();
    let e = error_of(&r).error;
    assert_eq!((r.status, e.code.as_str()), (409, "in_use"));
    assert!(
        e.message.contains("\"s1\"") && e.message.contains('b'),
        "{}",
        e.message
    );
    assert!(snaps.join("s1/memory").exists());

    // Bad requests: each names its problem and records nothing.
    for (path, body, status, code) in [
        (
            "/v1/vms/old/snapshots",
            json!({"name": "Bad"}),
            400,
            "invalid_field",
        ),
        (
            "/v1/vms/old/snapshots",
            json!({"name": "x", "leave": "gone"}),
            400,
            "invalid_body",
        ),
        (
            "/v1/vms/old/snapshots",
            json!({"name": "x"}),
            409,
            "invalid_state",
        ),
        (
            "/v1/vms/nope/snapshots",
            json!({"name": "x"}),
            404,
            "not_found",
        ),
        (
            "/v1/vms/old/snapshots",
            json!({"name": "s1"}),
            409,
            "invalid_state",
        ),
        ("/v1/vms/old/fork", json!({"name": "b"}), 409, "conflict"),
        (
            "/v1/vms/old/fork",
            json!({"name": "-x"}),
            400,
            "invalid_field",
        ),
        (
            "/v1/vms",
            json!({"name": "c", "from_snapshot": "nope"}),
            404,
            "not_found",
        ),
        (
            "/v1/vms",
            json!({"name": "c", "kernel": "vmlinux", "from_snapshot": "s1"}),
            400,
            "invalid_field",
        ),
        (
            "/v1/vms",
            json!({"name": "b", "from_snapshot": "s1"}),
            409,
            "conflict",
        ),
    ] {
        let r = post(&c, path, &[], body.clone());
        assert_eq!(
            (r.status, error_of(&r).error.code.as_str()),
            (status, code),
            "{path} {body}"
        );
    }
    // Idempotency-Key: a malformed key is refused first, naming the header.
    for path in ["/v1/vms/old/snapshots", "/v1/vms/old/fork"] {
        let r = post(
            &c,
            path,
            &[("Idempotency-Key", "bad key")],
            json!({"name": "k"}),
        );
        let e = error_of(&r).error;
        assert_eq!(
            (r.status, e.code.as_str()),
            (400, "invalid_parameter"),
            "{path}"
        );
        assert!(e.message.contains("Idempotency-Key"), "{}", e.message);
    }
    // A keyed request that fails is neither remembered nor left in progress: the same key
    // serves the next request, which gets its own answer (not a replay, not a conflict).
    let key = [("Idempotency-Key", "k-1")];
    let r = post(&c, "/v1/vms/old/fork", &key, json!({"name": "b"}));
    assert_eq!(
        (r.status, error_of(&r).error.code.as_str()),
        (409, "conflict")
    );
    assert!(error_of(&r).error.message.contains("\"b\""));
    for _ in 0..2 {
        let r = post(&c, "/v1/vms/old/snapshots", &key, json!({"name": "x"}));
        assert_eq!(
            (r.status, error_of(&r).error.code.as_str()),
            (409, "invalid_state")
        );
    }
    let r = post(&c, "/v1/vms/old/fork", &key, json!({"name": "f"}));
    assert_eq!(
        (r.status, error_of(&r).error.code.as_str()),
        (409, "invalid_state"),
        "a stopped VM cannot be forked"
    );
    assert_eq!(
        c.request(Method::GET, "/v1/vms/f", &[], None)
            .unwrap()
            .status,
        404
    );

    // No binary: a restore of a ready snapshot is refused before anything is recorded.
    let r = post(
        &c,
        "/v1/vms",
        &[],
        json!({"name": "c", "from_snapshot": "s1"}),
    );
    assert_eq!(
        (r.status, error_of(&r).error.code.as_str()),
        (503, "unavailable")
    );
    let r = c.request(Method::GET, "/v1/vms/c", &[], None).unwrap();
    assert_eq!(r.status, 404);
    // Pause and resume answer 409 for a stopped VM.
    for verb in ["pause", "resume"] {
        let r = c
            .request(Method::POST, format!("/v1/vms/old/{verb}"), &[], None)
            .unwrap();
        assert_eq!(
            (r.status, error_of(&r).error.code.as_str()),
            (409, "invalid_state"),
            "{verb}"
        );
    }

    // Its size is in the metrics.
    let r = c.request(Method::GET, "/metrics", &[], None).unwrap();
    let text = String::from_utf8_lossy(&r.body).into_owned();
    assert!(
        text.contains("hearth_snapshot_bytes{snapshot=\"s1\",file=\"memory\"} 8192"),
        "{text}"
    );

    // Once the VM restored from it is gone, the snapshot can go.
    let r = c.request(Method::DELETE, "/v1/vms/b", &[], None).unwrap();
    assert_eq!(r.status, 204);
    let r = c
        .request(Method::DELETE, "/v1/snapshots/s1", &[], None)
        .unwrap();
    assert_eq!(r.status, 204);
    assert!(!snaps.join("s1").exists());
    let all: Vec<SnapshotInfo> = c.get("/v1/snapshots").unwrap();
    assert!(all.is_empty());
}
