//! Integration tests of `FirecrackerActor` that only the simulator can run: a guest agent that
//! answers, guest reboots, crashes and ignored signals on demand (the `FC_SIM_*` knobs), and
//! the actor's own refusals. Behaviour both VMMs share is tested against both in
//! `tests/vmm.rs`. Build the simulator first: `cargo build -p firecracker-sim` (see
//! `hearth_testkit::fc_sim`). Tests that put a TAP on the VM need root and run in their own
//! network namespace; the others run unprivileged in a temporary run directory.
//!
//! The VM is brought up as the supervisor's saga does (`SpawnProcess`, `ConfigureVm`,
//! `StartVm`, `ProbeReady`): that is the only boot pipeline.
#![expect(
    clippy::disallowed_methods,
    reason = "tests drive real tools and binaries (ip, mkfs, hearthd, hearthctl) and clean up their own directories"
)]

mod common;
use hearth_testkit::fc_sim;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use hearth_actors::firecracker::binary::{self, FirecrackerBinary};
use hearth_actors::firecracker::{
    AdoptProcess, ConfigureVm, FirecrackerActor, FirecrackerError, FirecrackerSettings,
    GetVmmProcess, KillStray, KillVm, ProbeOutcome, ProbeReady, RemoveRunDir, SpawnProcess,
    StartVm, StopPlan, StopRung, StopVm, VmConfig, VmProcessEvent, VmmProcess,
};
use hearth_actors::host::processes::{ExitStatus, LinuxProcesses};
use hearth_actors::lease::{MacAddr, NetLease};

use common::actor::{alive, next_event, Fixture};

const MS: Duration = Duration::from_millis(1);

fn lease(tap: &str) -> NetLease {
    let ip = Ipv4Addr::new(172, 31, 240, 5);
    NetLease {
        tap: tap.into(),
        mac: MacAddr::for_guest(ip),
        guest_ip: ip,
        gateway: Ipv4Addr::new(172, 31, 240, 1),
        prefix_len: 24,
    }
}

/// Brings the VM up as the saga does (see [`common::actor::bring_up`]), then probes the
/// agent on port 52 for up to `probe` when given.
async fn bring_up(
    vm: &actix::Addr<FirecrackerActor>,
    config: VmConfig,
    probe: Option<Duration>,
) -> (VmmProcess, Option<ProbeOutcome>) {
    let record = common::actor::bring_up(vm, config).await;
    let outcome = match probe {
        Some(timeout) => Some(
            vm.send(ProbeReady { port: 52, timeout })
                .await
                .unwrap()
                .unwrap(),
        ),
        None => None,
    };
    (record, outcome)
}

#[test]
fn boots_to_agent_ready_and_stops_by_ctrl_alt_del() {
    require_privileged!();
    let ns = common::NetNs::new("fc-boot");
    ns.exec_ok(&["ip", "tuntap", "add", "dev", "hth0", "mode", "tap"]);
    let fx = Fixture::new("fc");
    ns.block_on(|| async {
        let (vm, mut events) = fx.actor("vm-1", fx.binary(fc_sim::sim_binary()));
        let cfg = fx.config(Some(lease("hth0")));
        let (record, probed) = bring_up(&vm, cfg, Some(Duration::from_secs(5))).await;
        let agent = probed.expect("agent reply").reply;
        assert_eq!(agent.boot_id.len(), 36, "{agent:?}");
        assert!(alive(record.pid));
        assert_eq!(
            vm.send(GetVmmProcess {}).await.unwrap(),
            Some(record.clone())
        );
        let rd = fx.path().join("vms/vm-1");
        assert!(rd.join("api.sock").exists());
        assert!(rd.join("v.sock").exists());
        assert!(rd.join("console.log").exists());

        let out = vm
            .send(StopVm {
                plan: StopPlan::default(),
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (out.rung, out.status),
            (StopRung::CtrlAltDel, ExitStatus::Code(0))
        );
        match next_event(&mut events).await {
            VmProcessEvent::Stopped {
                rung, status, pid, ..
            } => {
                assert_eq!(
                    (rung, status, pid),
                    (StopRung::CtrlAltDel, ExitStatus::Code(0), record.pid)
                );
            }
            e => panic!("unexpected {e:?}"),
        }
        assert!(
            !rd.join("api.sock").exists(),
            "sockets are removed after exit"
        );
        assert!(!rd.join("v.sock").exists());
    });
}

#[actix::test]
async fn ignored_sigterm_escalates_to_sigkill() {
    let fx = Fixture::new("fc");
    let bin = fx.wrapper("fc-stubborn", &[("FC_SIM_IGNORE_CTRL_ALT_DEL", "1")], true);
    let (vm, mut events) = fx.actor("vm-kill", bin);
    bring_up(&vm, fx.config(None), None).await;
    let plan = StopPlan {
        ctrl_alt_del_grace: Some(MS * 100),
        term_grace: Some(MS * 200),
    };
    let out = vm.send(StopVm { plan }).await.unwrap().unwrap();
    assert_eq!(
        (out.rung, out.status),
        (StopRung::Sigkill, ExitStatus::Signal(libc::SIGKILL))
    );
    assert!(matches!(
        next_event(&mut events).await,
        VmProcessEvent::Stopped {
            rung: StopRung::Sigkill,
            ..
        }
    ));
}

#[actix::test]
async fn unexpected_exit_is_reported() {
    let fx = Fixture::new("fc");
    let bin = fx.wrapper(
        "fc-crash",
        &[("FC_SIM_CRASH_AFTER_MS", "100"), ("FC_SIM_CRASH_CODE", "2")],
        false,
    );
    let (vm, mut events) = fx.actor("vm-crash", bin);
    let (record, _) = bring_up(&vm, fx.config(None), None).await;
    match next_event(&mut events).await {
        VmProcessEvent::ExitedUnexpectedly {
            pid,
            status,
            vm_id,
            guest_exit,
        } => {
            assert_eq!(
                (pid, status, vm_id.as_str(), guest_exit),
                (record.pid, ExitStatus::Code(2), "vm-crash", None)
            );
        }
        e => panic!("unexpected {e:?}"),
    }
    // Nothing left to stop; a new process can be spawned.
    assert!(matches!(
        vm.send(KillVm {}).await.unwrap(),
        Err(FirecrackerError::InvalidState { .. })
    ));
    vm.send(SpawnProcess {}).await.unwrap().unwrap();
    vm.send(KillVm {}).await.unwrap().unwrap();
}

/// hearth's init prints how the image's command ended, then reboots the guest (the VMM exits
/// 0): the event carries that report, read from the console as the pump copied it.
#[actix::test]
async fn the_guest_inits_exit_line_is_reported_with_the_exit() {
    let fx = Fixture::new("fc");
    let bin = fx.wrapper(
        "fc-init-exit",
        &[
            ("FC_SIM_CRASH_AFTER_MS", "100"),
            ("FC_SIM_CRASH_CODE", "0"),
            (
                "FC_SIM_CONSOLE_AT_EXIT",
                "hearth-init: command exited status=3",
            ),
        ],
        false,
    );
    let (vm, mut events) = fx.actor("vm-init-exit", bin);
    let (record, _) = bring_up(&vm, fx.config(None), None).await;
    match next_event(&mut events).await {
        VmProcessEvent::ExitedUnexpectedly {
            pid,
            status,
            guest_exit,
            ..
        } => {
            assert_eq!(
                (pid, status, guest_exit),
                (
                    record.pid,
                    ExitStatus::Code(0),
                    Some(hearth_proto::init::ExitReport::Exited { code: 3 })
                )
            );
        }
        e => panic!("unexpected {e:?}"),
    }
}

/// A requested stop of a guest run by hearth's init: Ctrl+Alt+Del, the command ends, init
/// prints its line and reboots; the stop's outcome carries the report. Without the line (any
/// other guest) there is none.
#[actix::test]
async fn a_ctrl_alt_del_stop_reports_the_guest_inits_exit_line() {
    let fx = Fixture::new("fc");
    for (line, want) in [
        (
            "hearth-init: command exited signal=15",
            Some(hearth_proto::init::ExitReport::Signaled { signal: 15 }),
        ),
        ("reboot: Restarting system", None),
    ] {
        let bin = fx.wrapper("fc-init-stop", &[("FC_SIM_CONSOLE_AT_EXIT", line)], false);
        let (vm, _events) = fx.actor("vm-init-stop", bin);
        bring_up(&vm, fx.config(None), None).await;
        let out = vm
            .send(StopVm {
                plan: StopPlan::default(),
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (out.rung, out.status, out.guest_exit),
            (StopRung::CtrlAltDel, ExitStatus::Code(0), want),
            "{line}"
        );
        vm.send(RemoveRunDir {}).await.unwrap().unwrap();
    }
}

/// A VMM whose actor is gone (the process runs on, as after a crash of hearthd between spawn
/// and record) is killed as a stray by a new actor for the same VM, which then removes the run
/// directory; a process that does not use that run directory is refused and left running.
#[actix::test]
async fn a_stray_vmm_is_killed_by_the_actor_owning_its_run_directory() {
    let fx = Fixture::new("fc");
    let bin = fx.binary(fc_sim::sim_binary());
    let (vm, _events) = fx.actor("vm-stray", bin.clone());
    let (record, _) = bring_up(&vm, fx.config(None), None).await;
    drop(vm);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(alive(record.pid));

    let (owner, mut events) = fx.actor("vm-stray", bin);
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let wait = Duration::from_secs(5);
    match owner
        .send(KillStray {
            pid: sleeper.id(),
            wait,
        })
        .await
        .unwrap()
    {
        Err(FirecrackerError::NotAStray { reason, .. }) => {
            assert!(reason.contains("does not use"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(alive(sleeper.id()), "a refused process is not signalled");
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();

    owner
        .send(KillStray {
            pid: record.pid,
            wait,
        })
        .await
        .unwrap()
        .unwrap();
    assert!(!alive(record.pid));
    assert!(events.try_recv().is_err(), "a stray is not this actor's VM");
    owner.send(RemoveRunDir {}).await.unwrap().unwrap();
    assert!(!fx.path().join("vms/vm-stray").exists());
}

#[actix::test]
async fn adopts_after_the_actor_is_recreated_and_refuses_a_reused_pid() {
    let fx = Fixture::new("fc");
    let bin = fx.binary(fc_sim::sim_binary());
    let (vm, _events) = fx.actor("vm-adopt", bin.clone());
    let (record, _) = bring_up(&vm, fx.config(None), None).await;
    drop(vm);
    // Let the old actor stop (its exit waiter is aborted, the VM keeps running).
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(alive(record.pid));

    let (vm2, mut events2) = fx.actor("vm-adopt", bin.clone());
    // A recycled pid: same pid, different start time. Refused, and not signalled.
    let mut wrong = record.clone();
    wrong.start_time += 1;
    match vm2.send(AdoptProcess { record: wrong }).await.unwrap() {
        Err(FirecrackerError::AdoptMismatch { reason, .. }) => {
            assert!(reason.contains("start time"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(alive(record.pid));
    // Another VM's socket in the record is refused too.
    let mut other = record.clone();
    other.api_socket = fx.path().join("vms/other/api.sock");
    assert!(matches!(
        vm2.send(AdoptProcess { record: other }).await.unwrap(),
        Err(FirecrackerError::AdoptMismatch { .. })
    ));

    let info = vm2
        .send(AdoptProcess {
            record: record.clone(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        info.vmm_state,
        hearth_proto::firecracker::InstanceState::Running
    );
    assert_eq!(
        vm2.send(GetVmmProcess {}).await.unwrap(),
        Some(record.clone())
    );
    // The adopted VM answers the API and stops by the ladder.
    let out = vm2.send(KillVm {}).await.unwrap().unwrap();
    assert_eq!(out.rung, StopRung::Sigkill);
    assert!(matches!(
        next_event(&mut events2).await,
        VmProcessEvent::Stopped {
            rung: StopRung::Sigkill,
            ..
        }
    ));
    assert!(!alive(record.pid));
}

#[actix::test]
async fn sockets_are_given_to_the_configured_group() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let fx = Fixture::new("fc");
    // Root can hand the sockets to any group (1 = daemon); others only to their own.
    let gid = if nix::unistd::geteuid().is_root() {
        1
    } else {
        nix::unistd::getegid().as_raw()
    };
    let mut settings = fx.settings();
    settings.socket_group = Some(gid);
    let (events, _rx) = fc_sim::event_sink();
    let vm = FirecrackerActor::new(
        "vm-group",
        fx.binary(fc_sim::sim_binary()),
        Arc::new(LinuxProcesses),
        settings,
        events,
        common::test_logger(),
    )
    .unwrap()
    .start();
    bring_up(&vm, fx.config(None), None).await;
    for name in ["api.sock", "v.sock"] {
        let md = std::fs::metadata(fx.path().join("vms/vm-group").join(name)).unwrap();
        assert_eq!(
            (md.gid(), md.permissions().mode() & 0o777),
            (gid, 0o660),
            "{name}"
        );
    }
    vm.send(KillVm {}).await.unwrap().unwrap();
}

#[actix::test]
async fn socket_path_too_long_is_refused_up_front() {
    let fx = Fixture::new("fc");
    let base = fx.path().join("x".repeat(90));
    let (events, _rx) = fc_sim::event_sink();
    let err = FirecrackerActor::new(
        "vm-1",
        fx.binary(fc_sim::sim_binary()),
        Arc::new(LinuxProcesses),
        FirecrackerSettings::new(&base),
        events,
        common::test_logger(),
    )
    .err()
    .expect("too long");
    assert!(
        matches!(err, FirecrackerError::SocketPathTooLong { max: 107, .. }),
        "{err}"
    );
    assert!(!base.exists(), "nothing was created");
}

#[actix::test]
async fn missing_binary_is_a_clear_error() {
    let fx = Fixture::new("fc");
    let err = binary::resolve(Some(&fx.path().join("firecracker")), &LinuxProcesses).unwrap_err();
    assert!(
        matches!(err, FirecrackerError::BinaryNotExecutable { .. }),
        "{err}"
    );
    // A binary that vanished after resolution fails at spawn, leaving nothing running.
    let gone = FirecrackerBinary {
        path: fx.path().join("gone"),
        version: binary::MIN_VERSION,
    };
    let (vm, _events) = fx.actor("vm-gone", gone);
    match vm.send(SpawnProcess {}).await.unwrap() {
        Err(FirecrackerError::Process { source }) => {
            assert!(source.to_string().contains("gone"), "{source}");
        }
        other => panic!("unexpected {other:?}"),
    }
    // A binary printing something else is refused at resolution.
    let liar = fx.path().join("liar");
    hearth_testkit::fc_sim::write_executable(&liar, "#!/bin/sh\necho 'Firecracker v0.25.0'\n");
    assert!(matches!(
        binary::resolve(Some(&liar), &LinuxProcesses),
        Err(FirecrackerError::VersionTooOld { .. })
    ));
}

#[actix::test]
async fn readiness_timeout_is_clean_and_leaves_the_vm_running() {
    let fx = Fixture::new("fc");
    let bin = fx.wrapper("fc-silent", &[("FC_SIM_AGENT_SILENT", "1")], false);
    let (vm, _events) = fx.actor("vm-silent", bin);
    vm.send(SpawnProcess {}).await.unwrap().unwrap();
    vm.send(ConfigureVm {
        config: fx.config(None),
    })
    .await
    .unwrap()
    .unwrap();
    vm.send(StartVm {}).await.unwrap().unwrap();
    let err = vm
        .send(ProbeReady {
            port: 52,
            timeout: MS * 300,
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, FirecrackerError::ReadinessTimeout { .. }),
        "{err}"
    );
    let pid = vm.send(GetVmmProcess {}).await.unwrap().unwrap().pid;
    assert!(alive(pid));
    vm.send(KillVm {}).await.unwrap().unwrap();

    // A VMM with no agent listening on the port: the probe times out naming why (the VMM
    // refused the CONNECT), and the VM is left running as well (the saga marks it `unready`).
    let bin = fx.wrapper("fc-noagent", &[("FC_SIM_NO_AGENT", "1")], false);
    let (vm, mut events) = fx.actor("vm-noagent", bin);
    let (record, _) = bring_up(&vm, fx.config(None), None).await;
    let err = vm
        .send(ProbeReady {
            port: 52,
            timeout: MS * 300,
        })
        .await
        .unwrap()
        .unwrap_err();
    match err {
        FirecrackerError::ReadinessTimeout { last_error, .. } => {
            assert!(last_error.contains("no OK"), "{last_error}");
        }
        e => panic!("unexpected {e}"),
    }
    assert!(alive(record.pid));
    assert!(events.try_recv().is_err(), "no exit was reported");
    vm.send(KillVm {}).await.unwrap().unwrap();
    assert!(matches!(
        next_event(&mut events).await,
        VmProcessEvent::Stopped {
            rung: StopRung::Sigkill,
            ..
        }
    ));
}
