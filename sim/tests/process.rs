//! The simulator as a process: command line, exit codes, the API socket rules, guest reboot
//! on Ctrl+Alt+Del, the crash knob, `--config-file`/`--no-api`, and hybrid vsock with the
//! agent protocol.
#![expect(
    clippy::disallowed_methods,
    reason = "tests drive the simulator binary and real tools directly"
)]

use hearth_testkit::bodies;
mod support;

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use hearth_proto::agent::{self, PingReply, Request};
use support::{vsock_connect, wait_until, Sim, SIM};

fn run(args: &[&str]) -> std::process::Output {
    Command::new(SIM).args(args).output().unwrap()
}

#[test]
fn version_is_printed_like_firecracker() {
    let out = run(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "Firecracker v1.17.0-sim\n\n"
    );
}

#[test]
fn argument_errors_exit_153() {
    for args in [
        &["--seccomp-level", "2"][..],
        &["--bogus"][..],
        &["--no-api"][..],
        &["--api-sock"][..],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(153), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.starts_with("Error: ParseArguments("), "{err}");
    }
    let out = run(&["--seccomp-level", "2"]);
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("Found argument 'seccomp-level' which wasn't expected"));
}

#[test]
fn invalid_instance_id_aborts() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let out = Command::new(SIM)
        .args(["--id", "bad_id", "--api-sock"])
        .arg(&sock)
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGABRT));
    assert!(!sock.exists());
}

#[test]
fn existing_api_socket_exits_1_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    std::fs::write(&sock, b"stale").unwrap();
    let out = Command::new(SIM)
        .arg("--api-sock")
        .arg(&sock)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(&format!(
            "Failed to open the API socket at: {}. Check that it is not already used.",
            sock.display()
        )),
        "{stdout}"
    );
    assert_eq!(std::fs::read(&sock).unwrap(), b"stale");
}

#[test]
fn ctrl_alt_del_reboots_the_guest_and_the_process_exits_0() {
    let mut sim = Sim::start(&[], &[("FC_SIM_BOOT_DELAY_MS", "20")]);
    sim.boot();
    sim.ok("PUT", "/actions", r#"{"action_type":"SendCtrlAltDel"}"#);
    let status = sim
        .wait_exit(Duration::from_secs(10))
        .expect("sim did not exit");
    assert_eq!(status.code(), Some(0));
    // Firecracker never unlinks its API socket.
    assert!(sim.sock.exists());
}

#[test]
fn ignore_knob_keeps_the_process_alive() {
    let mut sim = Sim::start(
        &[],
        &[
            ("FC_SIM_IGNORE_CTRL_ALT_DEL", "1"),
            ("FC_SIM_REBOOT_DELAY_MS", "0"),
        ],
    );
    sim.boot();
    sim.ok("PUT", "/actions", r#"{"action_type":"SendCtrlAltDel"}"#);
    // Give a reboot every chance to happen, then check the VM still answers.
    std::thread::sleep(Duration::from_millis(300));
    assert!(sim.child.try_wait().unwrap().is_none());
    let (status, body) = sim.req("GET", "/", None);
    assert_eq!(status, 200);
    assert!(body.contains("Running"), "{body}");
    // SIGTERM has no handler in Firecracker: default action.
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(sim.child.id() as i32, libc::SIGTERM) };
    let status = sim.wait_exit(Duration::from_secs(10)).unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM));
}

#[test]
fn crash_knob_exits_with_the_given_code() {
    let mut sim = Sim::start(
        &[],
        &[
            ("FC_SIM_CRASH_AFTER_MS", "50"),
            ("FC_SIM_CRASH_CODE", "150"),
        ],
    );
    sim.boot();
    let status = sim.wait_exit(Duration::from_secs(10)).expect("no crash");
    assert_eq!(status.code(), Some(150));
}

#[test]
fn vsock_connect_ok_and_agent_ping() {
    let sim = Sim::start(&[], &[("FC_SIM_BOOT_DELAY_MS", "100")]);
    let d = sim.dir.path().to_str().unwrap().to_owned();
    sim.ok("PUT", "/vsock", &bodies::valid("Vsock", 0, &d));
    sim.boot();
    let uds = sim.path("v.sock");
    // Connections made before the guest has booted wait for it.
    let (mut r, ok) = vsock_connect(&uds, 52);
    assert_eq!(ok.as_deref(), Some("OK 1073741824\n"));
    r.get_mut()
        .write_all(&agent::encode_request(&Request::Ping))
        .unwrap();
    let line = agent::read_line(&mut r).unwrap().unwrap();
    let reply: PingReply = agent::decode_response(&line).unwrap();
    assert!(!reply.boot_id.is_empty());
    // Host ports count up.
    let (_r2, ok) = vsock_connect(&uds, 52);
    assert_eq!(ok.as_deref(), Some("OK 1073741825\n"));
    // No listener on that guest port: closed without OK.
    let (_r3, ok) = vsock_connect(&uds, 1234);
    assert_eq!(ok, None);
}

#[test]
fn agent_knobs_port_and_silence() {
    let sim = Sim::start(
        &[],
        &[("FC_SIM_AGENT_PORT", "1024"), ("FC_SIM_AGENT_SILENT", "1")],
    );
    let d = sim.dir.path().to_str().unwrap().to_owned();
    sim.ok("PUT", "/vsock", &bodies::valid("Vsock", 0, &d));
    sim.boot();
    let uds = sim.path("v.sock");
    let (_r, ok) = vsock_connect(&uds, 52);
    assert_eq!(ok, None);
    let (mut r, ok) = vsock_connect(&uds, 1024);
    assert!(ok.unwrap().starts_with("OK "));
    r.get_mut()
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    r.get_mut()
        .write_all(&agent::encode_request(&Request::Ping))
        .unwrap();
    // A silent agent never answers: the read times out.
    assert!(agent::read_line(&mut r).is_err());
}

#[test]
fn config_file_boots_without_api() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    std::fs::write(
        dir.path().join("vmlinux"),
        firecracker_sim::kernel::minimal_vmlinux(),
    )
    .unwrap();
    std::fs::write(dir.path().join("rootfs.ext4"), b"r").unwrap();
    let cfg = format!(
        r#"{{"boot-source":{},"drives":[{}],"machine-config":{},"vsock":{}}}"#,
        bodies::valid("BootSource", 0, d),
        bodies::valid("Drive", 0, d),
        bodies::valid("MachineConfiguration", 0, d),
        bodies::valid("Vsock", 0, d),
    );
    let cfg_path = dir.path().join("vm.json");
    std::fs::write(&cfg_path, cfg).unwrap();
    let mut child = Command::new(SIM)
        .args(["--no-api", "--config-file"])
        .arg(&cfg_path)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let uds = dir.path().join("v.sock");
    assert!(wait_until(Duration::from_secs(10), || uds.exists()));
    let (_r, ok) = vsock_connect(&uds, 52);
    assert!(ok.unwrap().starts_with("OK "));
    assert!(!dir.path().join("api.sock").exists());
    child.kill().unwrap();
    child.wait().unwrap();

    // A bad config file is a startup error, exit 1.
    std::fs::write(
        &cfg_path,
        r#"{"boot-source":{"kernel_image_path":"/nonexistent"}}"#,
    )
    .unwrap();
    let out = Command::new(SIM)
        .args(["--no-api", "--config-file"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn bad_log_level_exits_152_and_log_path_gets_the_log() {
    let out = run(&["--level", "Loud"]);
    assert_eq!(out.status.code(), Some(152));

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("fc.log");
    let sim = Sim::start_in(
        dir,
        &["--id", "vm-log", "--log-path", log.to_str().unwrap()],
        &[],
        None,
    );
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("[vm-log:main] Running Firecracker v1.17.0-sim")
    }));
    // API errors are logged too.
    let _ = sim.fault("PUT", "/drives", Some("{}"));
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("Message: The ID cannot be empty.")
    }));
    // Every call is logged as Firecracker describes it.
    assert!(std::fs::read_to_string(&log).unwrap().contains(
        r#"[vm-log:fc_api] The API server received a Put request on "/drives" with body "{}"."#
    ));
}

#[test]
fn eleventh_connection_gets_503() {
    let sim = Sim::start(&[], &[]);
    let clients: Vec<_> = (0..10)
        .map(|_| {
            let mut c = sim.client();
            // Make sure each connection is being served before opening the next.
            assert_eq!(c.req("GET", "/", None).0, 200);
            c
        })
        .collect();
    let (status, body) = sim.req("GET", "/", None);
    assert_eq!(status, 503, "{body}");
    drop(clients);
    assert!(wait_until(Duration::from_secs(5), || sim
        .req("GET", "/", None)
        .0
        == 200));
}

#[test]
fn config_file_with_api_boots_and_reports_running() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("vmlinux"),
        firecracker_sim::kernel::minimal_vmlinux(),
    )
    .unwrap();
    let cfg = dir.path().join("vm.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"boot-source":{},"drives":[]}}"#,
            bodies::valid("BootSource", 0, dir.path().to_str().unwrap())
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap().to_owned();
    let sim = Sim::start_in(dir, &["--config-file", &cfg], &[], None);
    assert!(wait_until(Duration::from_secs(5), || sim
        .req("GET", "/", None)
        .1
        .contains(r#""state":"Running""#)));
    assert_eq!(
        sim.fault(
            "PUT",
            "/actions",
            Some(r#"{"action_type":"InstanceStart"}"#)
        ),
        "The requested operation is not supported after starting the microVM."
    );
}
