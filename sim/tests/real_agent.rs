//! `FC_SIM_AGENT_BIN`: the simulator runs the real `hearth-agent` as its guest agent, routes
//! `CONNECT <agent port>` to it through the hybrid vsock socket, and kills it when the VMM
//! exits (or when the simulator is `SIGKILL`ed).

use hearth_testkit::bodies;
mod support;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use hearth_proto::agent::frame::{read_frame, write_frame, Frame, FrameKind};
use hearth_proto::agent::{self, ExecRequest, ExecStarted, PingReply, Request};
use support::{vsock_connect, wait_until, Sim};

/// The agent binary of this build, (re)built so the test never runs a stale one.
fn agent_bin() -> PathBuf {
    hearth_testkit::fc_sim::agent_binary()
}

/// The pids of processes running `bin` whose parent is `parent`.
fn agents_of(parent: u32, bin: &std::path::Path) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let exe = std::fs::read_link(e.path().join("exe")).ok();
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // The fields after the command's closing parenthesis: state, ppid, ...
        let their_parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if exe.as_deref() == Some(bin) && their_parent == Some(parent) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn the_real_agent_serves_exec_through_hybrid_vsock() {
    let bin = agent_bin();
    let mut sim = Sim::start(&[], &[("FC_SIM_AGENT_BIN", bin.to_str().unwrap())]);
    let d = sim.dir.path().to_str().unwrap().to_owned();
    sim.ok("PUT", "/vsock", &bodies::valid("Vsock", 0, &d));
    sim.boot();
    let uds = sim.path("v.sock");
    let (mut r, ok) = vsock_connect(&uds, 52);
    assert!(ok.unwrap().starts_with("OK "));
    r.get_mut()
        .write_all(&agent::encode_request(&Request::Ping))
        .unwrap();
    let reply: PingReply =
        agent::decode_response(&agent::read_line(&mut r).unwrap().unwrap()).unwrap();
    // The real agent reports the host's boot id (it runs on the host), not a simulated one.
    let host_boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(reply.boot_id, host_boot_id.trim());

    // An attached exec with stdin: frames pass both ways until the agent closes after EXIT.
    let mut req = ExecRequest::new(vec!["cat".into()]);
    req.stdin = true;
    req.attach = true;
    let (mut r, ok) = vsock_connect(&uds, 52);
    assert!(ok.is_some());
    r.get_mut()
        .write_all(&agent::encode_request(&Request::Exec(req)))
        .unwrap();
    let _: ExecStarted =
        agent::decode_response(&agent::read_line(&mut r).unwrap().unwrap()).unwrap();
    write_frame(
        r.get_mut(),
        &Frame::new(FrameKind::Stdin, b"through vsock\n".to_vec()),
    )
    .unwrap();
    write_frame(r.get_mut(), &Frame::empty(FrameKind::StdinEof)).unwrap();
    let mut out = Vec::new();
    loop {
        let f = read_frame(&mut r)
            .unwrap()
            .expect("stream ended before EXIT");
        match f.kind {
            FrameKind::Stdout => out.extend_from_slice(&f.payload),
            FrameKind::Exit => {
                assert_eq!(f.as_exit().unwrap().code, 0);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(out, b"through vsock\n");
    assert!(read_frame(&mut r).unwrap().is_none());
    // Other ports still have nobody listening.
    assert_eq!(vsock_connect(&uds, 1234).1, None);

    // SIGKILL the simulator: PR_SET_PDEATHSIG takes the agent with it.
    let sim_pid = sim.child.id();
    assert_eq!(agents_of(sim_pid, &bin).len(), 1);
    let agent_pid = agents_of(sim_pid, &bin)[0];
    sim.child.kill().unwrap();
    let _ = sim.child.wait();
    assert!(
        wait_until(Duration::from_secs(5), || gone(agent_pid)),
        "the agent outlived a SIGKILLed simulator"
    );
}

/// Whether `pid` no longer runs (gone, or a zombie waiting for its reaper).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

#[test]
fn the_agent_is_stopped_when_the_vmm_exits() {
    let bin = agent_bin();
    let mut sim = Sim::start(
        &[],
        &[
            ("FC_SIM_AGENT_BIN", bin.to_str().unwrap()),
            ("FC_SIM_CRASH_AFTER_MS", "2000"),
        ],
    );
    let d = sim.dir.path().to_str().unwrap().to_owned();
    sim.ok("PUT", "/vsock", &bodies::valid("Vsock", 0, &d));
    sim.boot();
    let agents = agents_of(sim.child.id(), &bin);
    assert_eq!(agents.len(), 1);
    let status = sim
        .wait_exit(Duration::from_secs(10))
        .expect("the crash knob");
    assert_eq!(status.code(), Some(1));
    assert!(
        wait_until(Duration::from_secs(5), || gone(agents[0])),
        "the agent outlived the VMM"
    );
}

#[test]
fn a_missing_agent_binary_fails_instance_start() {
    let sim = Sim::start(&[], &[("FC_SIM_AGENT_BIN", "/nonexistent/hearth-agent")]);
    let d = sim.dir.path().to_str().unwrap().to_owned();
    sim.ok("PUT", "/vsock", &bodies::valid("Vsock", 0, &d));
    sim.ok(
        "PUT",
        "/boot-source",
        &format!(r#"{{"kernel_image_path":"{}"}}"#, sim.kernel()),
    );
    let fault = sim.fault(
        "PUT",
        "/actions",
        Some(r#"{"action_type":"InstanceStart"}"#),
    );
    assert!(fault.contains("Cannot start the guest agent"), "{fault}");
}

/// `reconfigure` through the simulator reaches the real agent, which (started with
/// `--sim-identity-file`) writes the identity where the simulated guest reads it, and changes
/// nothing on the host it runs on.
#[test]
fn the_real_agents_reconfigure_lands_in_the_sims_identity_file() {
    let bin = agent_bin();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("identity.json");
    let sim = Sim::start(
        &[],
        &[
            ("FC_SIM_AGENT_BIN", bin.to_str().unwrap()),
            ("FC_SIM_IDENTITY_FILE", file.to_str().unwrap()),
        ],
    );
    let d = sim.dir.path().to_str().unwrap().to_owned();
    sim.ok("PUT", "/vsock", &bodies::valid("Vsock", 0, &d));
    sim.boot();
    let identity = agent::Reconfigure {
        ip_cidr: "172.31.240.9/24".into(),
        gateway: "172.31.240.1".parse().unwrap(),
        mac: "06:00:ac:1f:f0:09".into(),
        hostname: "fork-1".into(),
        dns: "172.31.240.1".parse().unwrap(),
        clock_unix_ns: None,
        rng_seed: agent::RngSeed([3; 32]),
    };
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let (mut r, ok) = vsock_connect(&sim.path("v.sock"), 52);
    assert!(ok.unwrap().starts_with("OK "));
    r.get_mut()
        .write_all(&agent::encode_request(&Request::Reconfigure(
            identity.clone(),
        )))
        .unwrap();
    let _: agent::Empty =
        agent::decode_response(&agent::read_line(&mut r).unwrap().unwrap()).unwrap();
    let written: agent::Reconfigure =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(written, identity);
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_name,
        "the host's hostname changed"
    );
}

/// `freeze` through the simulator reaches the real agent, which (always started with
/// `--sim-freeze-file`) records it beside the API socket and never freezes the host's root.
#[test]
fn the_real_agents_freeze_is_recorded_never_applied() {
    let bin = agent_bin();
    let sim = Sim::start(&[], &[("FC_SIM_AGENT_BIN", bin.to_str().unwrap())]);
    let d = sim.dir.path().to_str().unwrap().to_owned();
    sim.ok("PUT", "/vsock", &bodies::valid("Vsock", 0, &d));
    sim.boot();
    let (mut r, ok) = vsock_connect(&sim.path("v.sock"), 52);
    assert!(ok.unwrap().starts_with("OK "));
    for req in [
        Request::Freeze(agent::FreezeRequest::root()),
        Request::Thaw(agent::ThawRequest::root()),
    ] {
        r.get_mut().write_all(&agent::encode_request(&req)).unwrap();
        let line = agent::read_line(&mut r).unwrap().unwrap();
        let _: serde_json::Value = agent::decode_response(&line).unwrap();
        // The host's root is still writable between the two.
        std::fs::write(sim.path("probe"), b"x").unwrap();
    }
    let record = std::fs::read_to_string(sim.path("sim-freeze.log")).unwrap();
    let ops: Vec<String> = record
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["op"].to_string())
        .collect();
    assert_eq!(ops, ["\"freeze\"", "\"thaw\""], "{record}");
}
