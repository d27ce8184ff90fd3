//! The simulator's snapshots as a process: a failed load answers first and then the process
//! exits 1 (as Firecracker's), a refused load on a configured process leaves it running, a
//! snapshot resets the guest's vsock connections, and a loaded VM serves the overridden vsock
//! socket with the same guest (boot id). Texts are checked in `sim/src/api.rs` and, against the
//! real binary too, in `tests/vmm_snapshot.rs`.

mod support;

use std::io::{BufRead, Read, Write};
use std::time::Duration;

use hearth_proto::agent::{self, PingReply, Request};
use support::{vsock_connect, Sim};

fn env() -> [(&'static str, &'static str); 1] {
    [("FC_SIM_BOOT_DELAY_MS", "0")]
}

/// A booted VM with a vsock, paused and snapshotted; returns the paths of the files.
fn snapshot(sim: &Sim) -> (String, String) {
    let vsock = sim.path("v.sock");
    sim.ok(
        "PUT",
        "/vsock",
        &format!(r#"{{"guest_cid":3,"uds_path":"{}"}}"#, vsock.display()),
    );
    sim.boot();
    sim.ok("PATCH", "/vm", r#"{"state":"Paused"}"#);
    let (state, mem) = (sim.path("state"), sim.path("mem"));
    let (state, mem) = (state.to_str().unwrap(), mem.to_str().unwrap());
    sim.ok(
        "PUT",
        "/snapshot/create",
        &format!(r#"{{"snapshot_path":"{state}","mem_file_path":"{mem}"}}"#),
    );
    (state.to_owned(), mem.to_owned())
}

fn ping(conn: &mut std::io::BufReader<std::os::unix::net::UnixStream>) -> PingReply {
    conn.get_mut()
        .write_all(&agent::encode_request(&Request::Ping))
        .unwrap();
    let line = agent::read_line(conn).unwrap().unwrap();
    agent::decode_response(&line).unwrap()
}

#[test]
fn failed_load_answers_then_exits_1() {
    let mut sim = Sim::start(&[], &env());
    let body = format!(
        r#"{{"snapshot_path":"{}","mem_backend":{{"backend_type":"File","backend_path":"/m"}}}}"#,
        sim.path("missing").display()
    );
    let fault = sim.fault("PUT", "/snapshot/load", Some(&body));
    assert!(
        fault.ends_with("Failed to open snapshot file: No such file or directory (os error 2)"),
        "{fault}"
    );
    let status = sim.wait_exit(Duration::from_secs(5)).expect("exited");
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    sim.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("Error: RunWithApi(BuildMicroVmError(Restore))"),
        "{err}"
    );
}

#[test]
fn load_on_a_configured_process_is_refused_and_it_lives() {
    let mut sim = Sim::start(&[], &env());
    sim.ok(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count":1,"mem_size_mib":64}"#,
    );
    let fault = sim.fault(
        "PUT",
        "/snapshot/load",
        Some(r#"{"snapshot_path":"/s","mem_backend":{"backend_type":"File","backend_path":"/m"}}"#),
    );
    assert_eq!(
        fault,
        "Load snapshot error: Loading a microVM snapshot not allowed after configuring \
         boot-specific resources."
    );
    // A body error does not end the process either.
    sim.fault("PUT", "/snapshot/load", Some(r#"{"snapshot_path":"/s"}"#));
    assert!(sim.wait_exit(Duration::from_millis(200)).is_none());
}

#[test]
fn snapshot_resets_vsock_and_a_load_continues_the_same_guest() {
    let source = Sim::start(&[], &env());
    let vsock = source.path("v.sock");
    source.ok(
        "PUT",
        "/vsock",
        &format!(r#"{{"guest_cid":3,"uds_path":"{}"}}"#, vsock.display()),
    );
    source.boot();
    let (mut conn, ok) = vsock_connect(&vsock, agent::DEFAULT_PORT);
    assert!(ok.is_some());
    let before = ping(&mut conn);
    source.ok("PATCH", "/vm", r#"{"state":"Paused"}"#);
    let (state, mem) = (source.path("state"), source.path("mem"));
    source.ok(
        "PUT",
        "/snapshot/create",
        &format!(
            r#"{{"snapshot_path":"{}","mem_file_path":"{}"}}"#,
            state.display(),
            mem.display()
        ),
    );
    // The transport reset: the host side of the connection is closed.
    let mut rest = String::new();
    let eof = conn.read_line(&mut rest);
    assert!(matches!(eof, Ok(0)), "{eof:?} {rest}");
    // Sparse: the size of guest memory (128 MiB by default), nothing allocated.
    let meta = std::fs::metadata(&mem).unwrap();
    assert_eq!(meta.len(), 128 << 20);
    assert_eq!(std::os::unix::fs::MetadataExt::blocks(&meta), 0);

    let copy = Sim::start(&[], &env());
    let new_vsock = copy.path("v2.sock");
    copy.ok(
        "PUT",
        "/snapshot/load",
        &format!(
            r#"{{"snapshot_path":"{}","mem_backend":{{"backend_type":"File","backend_path":"{}"}},"vsock_override":{{"uds_path":"{}"}},"resume_vm":true}}"#,
            state.display(),
            mem.display(),
            new_vsock.display()
        ),
    );
    let (mut conn, ok) = vsock_connect(&new_vsock, agent::DEFAULT_PORT);
    assert!(ok.is_some());
    assert_eq!(ping(&mut conn).boot_id, before.boot_id);
    let (status, info) = copy.req("GET", "/", None);
    assert_eq!(status, 200);
    assert!(info.contains(r#""state":"Running""#), "{info}");
}

#[test]
fn created_files_load_only_into_a_fresh_process() {
    let sim = Sim::start(&[], &env());
    let (state, mem) = snapshot(&sim);
    let fault = sim.fault(
        "PUT",
        "/snapshot/load",
        Some(&format!(
            r#"{{"snapshot_path":"{state}","mem_backend":{{"backend_type":"File","backend_path":"{mem}"}}}}"#
        )),
    );
    assert_eq!(
        fault,
        "The requested operation is not supported after starting the microVM."
    );
}
