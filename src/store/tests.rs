//! Store tests: each resource row round-trips, names are unique, migrations are idempotent and
//! refuse a newer schema, and state survives reopening the file.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use hearth_actors::lease::{MacAddr, NetLease};
use hearth_proto::api::{CreateVm, EventReason, VmState};

use super::*;

fn spec(name: &str) -> CreateVm {
    serde_json::from_value(serde_json::json!({"name": name, "kernel": "k", "rootfs": "r"})).unwrap()
}

fn lease(n: u8) -> NetLease {
    let ip = Ipv4Addr::new(172, 31, 240, n);
    NetLease {
        tap: format!("hth{n}"),
        mac: MacAddr::for_guest(ip),
        guest_ip: ip,
        gateway: Ipv4Addr::new(172, 31, 240, 1),
        prefix_len: 24,
    }
}

fn process() -> VmmProcessRecord {
    VmmProcessRecord {
        pid: Some(4242),
        start_time: Some(123_456),
        api_socket: PathBuf::from("/run/hearth/vms/a/api.sock"),
        binary: PathBuf::from("/usr/bin/firecracker"),
        vsock_cid: 3,
        left_frozen: false,
    }
}

/// The backend column is parsed where it is read: a value hearth does not know (a
/// hand-edited or newer database) is refused with a message naming the VM and the value.
#[test]
fn an_unknown_disk_backend_is_refused_at_load_naming_it() {
    let s = Store::open_in_memory().unwrap();
    s.insert_vm(&spec("a")).unwrap();
    s.put_disk(
        "a",
        &DiskRecord {
            path: "/d/a.img".into(),
            backend: hearth_actors::host::disks::BackendKind::Dm,
        },
    )
    .unwrap();
    assert_eq!(
        s.load_all().unwrap()[0].disk.as_ref().unwrap().backend,
        hearth_actors::host::disks::BackendKind::Dm
    );
    s.conn
        .execute("UPDATE disks SET backend = 'zfs' WHERE vm = 'a'", [])
        .unwrap();
    let err = s.load_all().unwrap_err().to_string();
    assert!(
        err.contains("\"a\"") && err.contains("zfs") && err.contains("expected dm or copy"),
        "{err}"
    );
}

#[test]
fn resource_rows_round_trip() {
    let s = Store::open_in_memory().unwrap();
    s.insert_vm(&spec("a")).unwrap();
    s.put_lease("a", &lease(5)).unwrap();
    s.put_disk(
        "a",
        &DiskRecord {
            path: "/var/lib/hearth/disks/a.img".into(),
            backend: hearth_actors::host::disks::BackendKind::Copy,
        },
    )
    .unwrap();
    s.put_process("a", &process()).unwrap();
    s.set_state("a", VmState::Running, None).unwrap();
    s.set_nat("a", true).unwrap();

    let all = s.load_all().unwrap();
    assert_eq!(all.len(), 1);
    let vm = &all[0];
    assert_eq!(vm.spec.name, "a");
    assert_eq!(vm.state, VmState::Running);
    assert!(vm.nat);
    assert_eq!(vm.lease.as_ref(), Some(&lease(5)));
    assert_eq!(
        vm.disk.as_ref().unwrap().backend,
        hearth_actors::host::disks::BackendKind::Copy
    );
    assert_eq!(vm.process.as_ref(), Some(&process()));
    // A removed snapshot's thaw marker, kept on the process record.
    let frozen = VmmProcessRecord {
        left_frozen: true,
        ..process()
    };
    s.put_process("a", &frozen).unwrap();
    assert_eq!(s.load_all().unwrap()[0].process.as_ref(), Some(&frozen));

    s.clear_lease("a").unwrap();
    s.clear_process("a").unwrap();
    s.clear_disk("a").unwrap();
    let vm = &s.load_all().unwrap()[0];
    assert!(vm.lease.is_none() && vm.process.is_none() && vm.disk.is_none());
}

#[test]
fn names_are_unique_and_missing_vms_are_named() {
    let s = Store::open_in_memory().unwrap();
    s.insert_vm(&spec("a")).unwrap();
    assert!(matches!(s.insert_vm(&spec("a")), Err(StoreError::Exists(n)) if n == "a"));
    assert!(matches!(
        s.set_state("zz", VmState::Stopped, None),
        Err(StoreError::NotFound(n)) if n == "zz"
    ));
    assert!(matches!(s.delete_vm("zz"), Err(StoreError::NotFound(_))));
}

#[test]
fn two_vms_cannot_hold_the_same_ip_or_tap() {
    let s = Store::open_in_memory().unwrap();
    s.insert_vm(&spec("a")).unwrap();
    s.insert_vm(&spec("b")).unwrap();
    s.put_lease("a", &lease(5)).unwrap();
    assert!(s.put_lease("b", &lease(5)).is_err());
    // The clash changed nothing: a keeps its lease, b has none.
    let all = s.load_all().unwrap();
    assert_eq!(all[0].lease, Some(lease(5)));
    assert_eq!(all[1].lease, None);
    // Updating a's own lease works.
    s.put_lease("a", &lease(6)).unwrap();
    assert_eq!(s.load_all().unwrap()[0].lease, Some(lease(6)));
}

#[test]
fn delete_removes_resource_rows() {
    let s = Store::open_in_memory().unwrap();
    s.insert_vm(&spec("a")).unwrap();
    s.put_lease("a", &lease(5)).unwrap();
    s.put_process("a", &process()).unwrap();
    s.delete_vm("a").unwrap();
    assert!(s.load_all().unwrap().is_empty());
    // The freed IP can be recorded for another VM.
    s.insert_vm(&spec("b")).unwrap();
    s.put_lease("b", &lease(5)).unwrap();
}

#[test]
fn events_are_sequenced_and_resumable() {
    let s = Store::open_in_memory().unwrap();
    let e1 = s
        .append_event("a", VmState::Creating, EventReason::User, None)
        .unwrap();
    let e2 = s
        .append_event(
            "a",
            VmState::Crashed,
            EventReason::Crash,
            Some("exit code 1"),
        )
        .unwrap();
    assert!(e2.seq > e1.seq);
    let after = s.events_since(e1.seq, 100).unwrap();
    assert_eq!(after, vec![e2.clone()]);
    assert_eq!(s.events_since(0, 1).unwrap(), vec![e1]);
}

/// Issue 9, finding 1: a `since` above `i64::MAX` wrapped negative and returned the log from
/// its start, which made an event stream ask for the same page forever.
#[test]
fn events_since_beyond_i64_is_empty() {
    let s = Store::open_in_memory().unwrap();
    for _ in 0..3 {
        s.append_event("a", VmState::Creating, EventReason::User, None)
            .unwrap();
    }
    for since in [i64::MAX as u64 + 1, u64::MAX] {
        assert_eq!(s.events_since(since, 2).unwrap(), vec![], "{since}");
    }
    assert_eq!(s.events_since(i64::MAX as u64, 2).unwrap(), vec![]);
}

#[test]
fn idempotency_keys_store_request_hash_and_response() {
    let s = Store::open_in_memory().unwrap();
    assert_eq!(s.idempotent_response("k").unwrap(), None);
    s.put_idempotent_response("k", "h1", "{}").unwrap();
    assert_eq!(
        s.idempotent_response("k").unwrap(),
        Some(("h1".to_owned(), "{}".to_owned()))
    );
}

#[test]
fn state_survives_reopen_and_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let s = Store::open(&path).unwrap();
        s.insert_vm(&spec("a")).unwrap();
        s.put_lease("a", &lease(7)).unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.load_all().unwrap()[0].lease, Some(lease(7)));
    drop(s);

    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    assert!(matches!(
        Store::open(&path),
        Err(StoreError::TooNew { found: 99, .. })
    ));
}

#[test]
fn durability_sets_the_sqlite_synchronous_mode() {
    let dir = tempfile::tempdir().unwrap();
    for (durability, expected) in [(Durability::Normal, 1), (Durability::Full, 2)] {
        let s = Store::open_with(&dir.path().join("s.db"), durability).unwrap();
        let mode: i64 = s
            .conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, expected, "{durability:?}");
        let journal: String = s
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(journal, "wal");
    }
}

#[test]
fn corrupt_rows_are_reported_not_panicked_on() {
    let s = Store::open_in_memory().unwrap();
    s.insert_vm(&spec("a")).unwrap();
    s.conn
        .execute("UPDATE vms SET state = 'zombie' WHERE name = 'a'", [])
        .unwrap();
    let err = s.load_all().unwrap_err().to_string();
    assert!(err.contains("zombie") && err.contains("\"a\""), "{err}");
}

fn snapshot(name: &str) -> SnapshotRecord {
    SnapshotRecord {
        name: name.into(),
        state: hearth_proto::api_snapshot::SnapshotState::Creating,
        source_vm: "a".into(),
        source_spec: spec("a"),
        source_was: VmState::Running,
        leave: hearth_proto::api_snapshot::SnapshotLeave::Running,
        dir: std::path::PathBuf::from("/data/snapshots").join(name),
        created_at_ms: 1,
        internal: false,
        fc_version: String::new(),
        cpu_template: hearth_proto::firecracker::CpuTemplate::None,
        vcpus: 1,
        mem_size_mib: 128,
        vsock_cid: 3,
        disk_bytes: 0,
        mem_file_bytes: 0,
        left_frozen: None,
        mem_file: None,
    }
}

/// Snapshot records: recorded before their files, updated when ready, names unique, kept
/// across a reopen (migration 2 applies to a database made by migration 1 alone).
#[test]
fn snapshots_are_recorded_updated_unique_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        // A database of the first schema, as an older hearthd left it.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE vms (name TEXT PRIMARY KEY, spec TEXT NOT NULL, state TEXT NOT NULL, nat INTEGER NOT NULL, last_error TEXT, created_ms INTEGER NOT NULL); CREATE TABLE leases (vm TEXT PRIMARY KEY); CREATE TABLE disks (vm TEXT PRIMARY KEY); CREATE TABLE processes (vm TEXT PRIMARY KEY); CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT); CREATE TABLE idempotency (key TEXT PRIMARY KEY);").unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
    }
    {
        let s = Store::open(&path).unwrap();
        s.insert_snapshot(&snapshot("b")).unwrap();
        s.insert_snapshot(&snapshot("a")).unwrap();
        assert!(matches!(
            s.insert_snapshot(&snapshot("a")),
            Err(StoreError::SnapshotExists(n)) if n == "a"
        ));
        let mut ready = snapshot("a");
        ready.state = hearth_proto::api_snapshot::SnapshotState::Ready;
        ready.fc_version = "1.17.0".into();
        s.put_snapshot(&ready).unwrap();
        assert!(matches!(
            s.put_snapshot(&snapshot("zz")),
            Err(StoreError::SnapshotNotFound(_))
        ));
    }
    let s = Store::open(&path).unwrap();
    let all = s.load_snapshots().unwrap();
    assert_eq!(
        all.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(all[0].fc_version, "1.17.0");
    assert_eq!(all[1], snapshot("b"));
    s.delete_snapshot("a").unwrap();
    assert!(matches!(
        s.delete_snapshot("a"),
        Err(StoreError::SnapshotNotFound(_))
    ));
    assert_eq!(s.load_snapshots().unwrap().len(), 1);
}

/// The policy bookkeeping (a time limit's deadline above all) survives reopening the file,
/// a changed spec (restart policy) too, and a delete removes the row with the VM.
#[test]
fn policy_state_and_spec_survive_reopening_and_go_with_the_vm() {
    use std::time::{Duration, UNIX_EPOCH};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let at = |s: u64| UNIX_EPOCH + Duration::from_millis(s);
    let policy = PolicyState {
        attempts: 3,
        last_start: Some(at(1_700_000_000_123)),
        deadline: Some(at(1_700_000_900_000)),
        created: Some(at(1_600_000_000_000)),
        restart_due: Some(at(1_700_000_000_456)),
    };
    {
        let s = Store::open(&path).unwrap();
        s.insert_vm(&spec("a")).unwrap();
        s.insert_vm(&spec("b")).unwrap();
        s.put_policy("a", &PolicyState::default()).unwrap();
        s.put_policy("a", &policy).unwrap();
        let mut changed = spec("a");
        changed.restart = "on-failure:5".parse().unwrap();
        s.put_spec("a", &changed).unwrap();
        assert!(matches!(
            s.put_policy("nope", &policy),
            Err(StoreError::NotFound(_))
        ));
    }
    let s = Store::open(&path).unwrap();
    let all = s.load_all().unwrap();
    assert_eq!(all[0].policy, policy);
    assert_eq!(all[0].spec.restart.to_string(), "on-failure:5");
    assert_eq!(all[1].policy, PolicyState::default());
    s.delete_vm("a").unwrap();
    let rows: i64 = s
        .conn
        .query_row("SELECT COUNT(*) FROM vm_policy", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0);
}

#[test]
fn the_cordon_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    {
        let s = Store::open(&path).unwrap();
        assert_eq!(s.cordon().unwrap(), None);
        s.put_cordon(Some("first")).unwrap();
        s.put_cordon(Some("kernel upgrade")).unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.cordon().unwrap().as_deref(), Some("kernel upgrade"));
    s.put_cordon(None).unwrap();
    assert_eq!(s.cordon().unwrap(), None);
}

/// The host's settings by key (a running drain's record): kept across a reopen, replaced,
/// removed, and independent of the cordon stored in the same table.
#[test]
fn node_values_survive_reopening_and_are_independent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    {
        let s = Store::open(&path).unwrap();
        assert_eq!(s.node_value("drain").unwrap(), None);
        s.put_node_value("drain", Some("first")).unwrap();
        s.put_node_value("drain", Some(r#"{"mode":"stop"}"#))
            .unwrap();
        s.put_cordon(Some("maintenance")).unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(
        s.node_value("drain").unwrap().as_deref(),
        Some(r#"{"mode":"stop"}"#)
    );
    s.put_node_value("drain", None).unwrap();
    assert_eq!(s.node_value("drain").unwrap(), None);
    assert_eq!(s.cordon().unwrap().as_deref(), Some("maintenance"));
    assert_eq!(
        s.node_value("cordon").unwrap().as_deref(),
        Some("maintenance")
    );
}

/// Jailed VMs' uids (issue 16): recorded per VM, never two VMs on one uid, gone with the VM,
/// kept across a reopen; an unknown VM is named.
#[test]
fn jail_uids_are_unique_per_vm_and_go_with_the_vm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let s = Store::open(&path).unwrap();
        s.insert_vm(&spec("a")).unwrap();
        s.insert_vm(&spec("b")).unwrap();
        s.put_uid("a", Some(900_000)).unwrap();
        assert!(s.put_uid("b", Some(900_000)).is_err(), "one uid, one VM");
        assert!(matches!(
            s.put_uid("nope", Some(900_001)),
            Err(StoreError::NotFound(n)) if n == "nope"
        ));
        s.put_uid("b", Some(900_001)).unwrap();
    }
    let s = Store::open(&path).unwrap();
    let uids: Vec<_> = s.load_all().unwrap().iter().map(|r| r.uid).collect();
    assert_eq!(uids, [Some(900_000), Some(900_001)]);
    s.put_uid("b", None).unwrap();
    s.delete_vm("a").unwrap();
    assert_eq!(s.load_all().unwrap()[0].uid, None);
    // a's uid is free with a gone.
    s.insert_vm(&spec("c")).unwrap();
    s.put_uid("c", Some(900_000)).unwrap();
}
