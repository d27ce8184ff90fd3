//! `FirecrackerActor`'s pause, resume, snapshot and restore (issue 12) against both VMMs: every
//! test runs against `firecracker-sim` (`…::sim`) and the real Firecracker binary named by
//! `HEARTH_FIRECRACKER_REAL` (`…::real`; a SKIP line without it). Both run as root in a
//! network namespace of their own (the VMs use TAPs). Error texts are asserted exactly, so the
//! two VMMs are held to the same words.
//!
//! The real binary's guest never boots here (nested KVM; the generated kernel only halts), but
//! its vCPUs run, so pause, snapshot and load behave as in production. Guest-side checks (the
//! agent answering over the restored vsock) run against the simulator only.

mod common;
use common::actor::{alive, bring_up, next_event, Fixture};
use common::tuntap;
use common::vmm::Vmm;
use common::NetNs;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use actix::Addr;
use hearth_actors::firecracker::api_client::Endpoint;
use hearth_actors::firecracker::config::ROOT_DRIVE_ID;
use hearth_actors::firecracker::{
    AdoptProcess, ApiClient, CreateVmSnapshot, FirecrackerActor, FirecrackerError, GetVmmProcess,
    KillVm, NetworkOverride, PauseVm, ProbeReady, RestoreInfo, RestoreVm, ResumeVm, RunDir,
    SnapshotCompat, SpawnProcess, StopPlan, StopRung, StopVm, UpdateDrivePath, VmProcessEvent,
    VmmSnapshotInfo,
};
use hearth_actors::lease::{MacAddr, NetLease};
use hearth_proto::firecracker::{CpuTemplate, FirecrackerVersion};
use serde_json::Value;

const GUEST_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 240, 5);
const MIB: u64 = 1 << 20;

/// Kills whatever still runs from the fixture's directory when a test fails half-way (an
/// actor that goes away never kills its VMM, so it can be adopted).
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in vmm_pids(&self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Live processes whose command line names a path under `dir`.
fn vmm_pids(dir: &Path) -> Vec<i32> {
    let needle = format!("{}/", dir.display());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(&needle)
                && alive(u32::try_from(*pid).unwrap_or_default())
        })
        .collect()
}

fn net(tap: &str) -> NetLease {
    NetLease {
        tap: tap.into(),
        mac: MacAddr::for_guest(GUEST_IP),
        guest_ip: GUEST_IP,
        gateway: Ipv4Addr::new(172, 31, 240, 1),
        prefix_len: 24,
    }
}

fn run_dir(fx: &Fixture, vm: &str) -> RunDir {
    RunDir::new(&fx.path().join("vms"), vm).unwrap()
}

async fn get(api: &Path, endpoint: Endpoint<'_>) -> Value {
    ApiClient::new(api).get(endpoint).await.expect("GET")
}

async fn vm_state(api: &Path) -> String {
    get(api, Endpoint::Instance).await["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The status and `fault_message` of a refused call.
fn fault<T: std::fmt::Debug>(r: Result<T, FirecrackerError>) -> (u16, String) {
    match r {
        Err(FirecrackerError::Api {
            status,
            fault_message,
            ..
        }) => (status, fault_message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A source VM on TAP `hth0`, booted, and its snapshot files' paths.
struct Source {
    vm: Addr<FirecrackerActor>,
    api: PathBuf,
    snap: PathBuf,
    mem: PathBuf,
}

async fn boot_source(fx: &Fixture, vmm: &Vmm, ns: &NetNs) -> Source {
    ns.exec_ok(&["ip", "tuntap", "add", "dev", "hth0", "mode", "tap"]);
    let (vm, _events) = fx.actor("src", fx.binary(vmm.binary()));
    bring_up(&vm, fx.config(Some(net("hth0")))).await;
    let snaps = fx.path().join("snaps");
    std::fs::create_dir_all(&snaps).unwrap();
    Source {
        vm,
        api: run_dir(fx, "src").api_socket(),
        snap: snaps.join("state"),
        mem: snaps.join("mem"),
    }
}

async fn snapshot(src: &Source) -> VmmSnapshotInfo {
    src.vm.send(PauseVm {}).await.unwrap().expect("pause");
    src.vm
        .send(CreateVmSnapshot {
            snapshot_path: src.snap.clone(),
            mem_path: src.mem.clone(),
        })
        .await
        .unwrap()
        .expect("snapshot")
}

fn restore_msg(src: &Source, info: &VmmSnapshotInfo, tap: &str) -> RestoreVm {
    RestoreVm {
        snapshot_path: src.snap.clone(),
        mem_path: src.mem.clone(),
        compat: info.compat.clone(),
        network_overrides: vec![NetworkOverride {
            iface_id: "eth0".into(),
            host_dev_name: tap.into(),
        }],
        vsock_uds_path: None,
        resume: true,
        // The real binary refuses it intermittently here (see `clock_realtime_unavailable`).
        clock_realtime: false,
    }
}

/// Pause and resume: Firecracker reports each state; pausing twice and resuming a running VM
/// are accepted (as Firecracker accepts them); before `InstanceStart` the actor refuses
/// without a call, and Firecracker's own refusal has the same text in both VMMs.
async fn pause_and_resume(vmm: Vmm, ns: &NetNs) {
    let fx = Fixture::new("snp");
    let _reaper = Reaper(fx.path().to_path_buf());
    let src = boot_source(&fx, &vmm, ns).await;
    src.vm.send(PauseVm {}).await.unwrap().expect("pause");
    assert_eq!(vm_state(&src.api).await, "Paused");
    src.vm.send(PauseVm {}).await.unwrap().expect("pause again");
    src.vm.send(ResumeVm {}).await.unwrap().expect("resume");
    assert_eq!(vm_state(&src.api).await, "Running");
    src.vm
        .send(ResumeVm {})
        .await
        .unwrap()
        .expect("resume again");
    src.vm.send(KillVm {}).await.unwrap().unwrap();

    let (fresh, _events) = fx.actor("fresh", fx.binary(vmm.binary()));
    fresh.send(SpawnProcess {}).await.unwrap().unwrap();
    let err = fresh.send(PauseVm {}).await.unwrap().unwrap_err();
    assert!(
        matches!(err, FirecrackerError::InvalidState { op: "pause", .. }),
        "{err}"
    );
    let raw = ApiClient::new(&run_dir(&fx, "fresh").api_socket())
        .patch(
            Endpoint::Vm,
            &hearth_proto::firecracker::Vm {
                state: hearth_proto::firecracker::VmPauseState::Paused,
            },
        )
        .await;
    assert_eq!(
        fault(raw),
        (
            400,
            "The requested operation is not supported before starting the microVM.".into()
        )
    );
    fresh.send(KillVm {}).await.unwrap().unwrap();
}
vmm_test!(pause_and_resume, pause_and_resume, net);

/// A running VM cannot be snapshotted: Firecracker's 400 and text, no files. A paused one
/// gives a Full snapshot: the state file, a memory file of the guest's size, and what a
/// restore is checked against (version as `GET /version` says, vCPUs, memory, no template).
async fn snapshot_needs_a_paused_vm(vmm: Vmm, ns: &NetNs) {
    let fx = Fixture::new("snp");
    let _reaper = Reaper(fx.path().to_path_buf());
    let src = boot_source(&fx, &vmm, ns).await;
    let refused = src
        .vm
        .send(CreateVmSnapshot {
            snapshot_path: src.snap.clone(),
            mem_path: src.mem.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        fault(refused),
        (
            400,
            "Create snapshot error: Cannot save the microVM state: Operation not allowed: \
             save/restore unavailable while running"
                .into()
        )
    );
    assert!(!src.snap.exists() && !src.mem.exists());
    let relative = src
        .vm
        .send(CreateVmSnapshot {
            snapshot_path: "state".into(),
            mem_path: src.mem.clone(),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(relative, FirecrackerError::InvalidConfig { .. }),
        "{relative}"
    );

    let info = snapshot(&src).await;
    let version: FirecrackerVersion = ApiClient::new(&src.api)
        .get(Endpoint::Version)
        .await
        .unwrap();
    assert_eq!(
        info.compat,
        SnapshotCompat {
            fc_version: version.firecracker_version,
            cpu_template: CpuTemplate::None,
        }
    );
    assert_eq!((info.vcpus, info.mem_size_mib), (1, 128));
    assert_eq!(std::fs::metadata(&src.mem).unwrap().len(), 128 * MIB);
    assert!(std::fs::metadata(&src.snap).unwrap().len() > 0);
    // The VM stays paused after the snapshot; hearth decides what happens next.
    assert_eq!(vm_state(&src.api).await, "Paused");
    src.vm.send(ResumeVm {}).await.unwrap().unwrap();
    src.vm.send(KillVm {}).await.unwrap().unwrap();
}
vmm_test!(snapshot_needs_a_paused_vm, snapshot_needs_a_paused_vm, net);

/// A restore runs a fresh process on a different TAP and vsock socket while the source keeps
/// running on its own: the new VMM holds the new TAP (busy for anyone else), reports the
/// overrides in `GET /vm/config`, runs (`resume`), and is then tracked like a booted VMM: it
/// pauses, snapshots again, is adopted by a new actor after a "restart", and stops.
async fn restore_into_a_fresh_process(vmm: Vmm, ns: &NetNs) {
    let fx = Fixture::new("snp");
    let _reaper = Reaper(fx.path().to_path_buf());
    let src = boot_source(&fx, &vmm, ns).await;
    let info = snapshot(&src).await;
    src.vm.send(ResumeVm {}).await.unwrap().unwrap();
    ns.exec_ok(&["ip", "tuntap", "add", "dev", "hth1", "mode", "tap"]);

    let (copy, mut events) = fx.actor("copy", fx.binary(vmm.binary()));
    let restored: RestoreInfo = copy
        .send(restore_msg(&src, &info, "hth1"))
        .await
        .unwrap()
        .expect("restore");
    let rd = run_dir(&fx, "copy");
    assert!(alive(restored.spawn.record.pid));
    assert_eq!(restored.spawn.record.api_socket, rd.api_socket());
    assert_eq!(vm_state(&rd.api_socket()).await, "Running");
    assert_eq!(vm_state(&src.api).await, "Running", "the source runs on");
    let config = get(&rd.api_socket(), Endpoint::VmConfig).await;
    assert_eq!(
        config["network-interfaces"][0]["host_dev_name"], "hth1",
        "{config}"
    );
    assert_eq!(
        config["network-interfaces"][0]["guest_mac"],
        MacAddr::for_guest(GUEST_IP).to_string(),
        "the guest keeps its MAC"
    );
    assert_eq!(
        config["vsock"]["uds_path"],
        rd.vsock_socket().display().to_string()
    );
    assert!(rd.vsock_socket().exists());
    let busy = tuntap::try_open_tap("hth1").map(drop).unwrap_err();
    assert_eq!(
        busy.raw_os_error(),
        Some(libc::EBUSY),
        "the copy holds hth1"
    );

    // Tracked like a booted VMM: pause and snapshot it too.
    copy.send(PauseVm {}).await.unwrap().expect("pause copy");
    copy.send(CreateVmSnapshot {
        snapshot_path: fx.path().join("snaps/state2"),
        mem_path: fx.path().join("snaps/mem2"),
    })
    .await
    .unwrap()
    .expect("snapshot of the copy");
    copy.send(ResumeVm {}).await.unwrap().unwrap();

    // hearthd "restarts": a new actor adopts the restored process by its record.
    let record = copy.send(GetVmmProcess {}).await.unwrap().expect("record");
    drop(copy);
    let (adopter, mut adopted_events) = fx.actor("copy", fx.binary(vmm.binary()));
    let adopted = adopter
        .send(AdoptProcess {
            record: record.clone(),
        })
        .await
        .unwrap()
        .expect("adopt the restored VMM");
    assert_eq!(
        adopted.vmm_state,
        hearth_proto::firecracker::InstanceState::Running
    );
    let stopped = adopter.send(KillVm {}).await.unwrap().expect("kill");
    assert_eq!(stopped.rung, StopRung::Sigkill);
    match next_event(&mut adopted_events).await {
        VmProcessEvent::Stopped { pid, .. } => assert_eq!(pid, record.pid),
        e => panic!("unexpected {e:?}"),
    }
    assert!(
        events.try_recv().is_err(),
        "the first actor reported nothing"
    );
    src.vm.send(KillVm {}).await.unwrap().unwrap();
}
vmm_test!(
    restore_into_a_fresh_process,
    restore_into_a_fresh_process,
    net
);

/// A failed load answers Firecracker's error (the same text from both VMMs), and by the
/// time it does the process is gone and its sockets and FIFO are removed; its exit is
/// reported as stopped by hearth. The actor can then restore again. An incompatible snapshot
/// is refused before anything is spawned.
async fn failed_restore_leaves_no_process(vmm: Vmm, ns: &NetNs) {
    let fx = Fixture::new("snp");
    let _reaper = Reaper(fx.path().to_path_buf());
    let src = boot_source(&fx, &vmm, ns).await;
    let info = snapshot(&src).await;
    ns.exec_ok(&["ip", "tuntap", "add", "dev", "hth1", "mode", "tap"]);
    let (copy, mut events) = fx.actor("copy", fx.binary(vmm.binary()));
    let rd = run_dir(&fx, "copy");
    let prefix = "Load snapshot error: Failed to restore from snapshot: ";

    let incompatible = RestoreVm {
        compat: SnapshotCompat {
            fc_version: "1.2.3".into(),
            cpu_template: CpuTemplate::None,
        },
        ..restore_msg(&src, &info, "hth1")
    };
    let err = copy.send(incompatible).await.unwrap().unwrap_err();
    assert!(
        matches!(
            &err,
            FirecrackerError::IncompatibleSnapshot {
                mismatch: "version",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("1.2.3"), "{err}");
    assert!(!rd.path().exists(), "nothing was spawned");

    let cases = [
        (
            RestoreVm {
                snapshot_path: fx.path().join("snaps/missing"),
                ..restore_msg(&src, &info, "hth1")
            },
            "Failed to get snapshot state from file: Failed to open snapshot file: No such file \
             or directory (os error 2)",
        ),
        (
            RestoreVm {
                network_overrides: vec![NetworkOverride {
                    iface_id: "eth9".into(),
                    host_dev_name: "hth1".into(),
                }],
                ..restore_msg(&src, &info, "hth1")
            },
            "Failed to get snapshot state from file: Unknown Network Device.",
        ),
        (
            // The source still holds its TAP.
            restore_msg(&src, &info, "hth0"),
            "Failed to build microVM from snapshot: Failed to restore devices: Error restoring \
             MMIO devices: Net: Failed to create a network device: Open tap device failed: \
             Error while creating ifreq structure: Device or resource busy (os error 16). \
             Invalid TUN/TAP Backend provided by hth0. Check our documentation on setting up \
             the network devices.",
        ),
    ];
    for (msg, want) in cases {
        let res = copy.send(msg).await.unwrap();
        assert_eq!(fault(res), (400, format!("{prefix}{want}")));
        assert!(vmm_pids(rd.path()).is_empty(), "no VMM left after: {want}");
        assert!(!rd.api_socket().exists() && !rd.console_fifo().exists());
        assert!(!rd.vsock_socket().exists());
        match next_event(&mut events).await {
            VmProcessEvent::Stopped { rung, .. } => assert_eq!(rung, StopRung::Sigkill),
            e => panic!("unexpected {e:?}"),
        }
    }
    // The actor is free again: a good restore works.
    copy.send(restore_msg(&src, &info, "hth1"))
        .await
        .unwrap()
        .expect("restore after failures");
    copy.send(KillVm {}).await.unwrap().unwrap();
    src.vm.send(KillVm {}).await.unwrap().unwrap();
}
vmm_test!(
    failed_restore_leaves_no_process,
    failed_restore_leaves_no_process,
    net
);

/// Simulator only (no guest runs under the real binary here): the restored guest answers the
/// agent probe on the new vsock socket, with the source's boot id (the same boot goes on); a
/// paused guest does not answer.
#[test]
fn restored_sim_guest_answers_on_the_new_vsock() {
    hearth_testkit::require_privileged!();
    let ns = NetNs::new("vmm");
    ns.block_on(|| async {
        let vmm = Vmm::Sim;
        let fx = Fixture::new("snp");
        let _reaper = Reaper(fx.path().to_path_buf());
        let src = boot_source(&fx, &vmm, &ns).await;
        let probe = ProbeReady {
            port: hearth_proto::agent::DEFAULT_PORT,
            timeout: Duration::from_secs(5),
        };
        let before = src.vm.send(probe).await.unwrap().expect("source probe");
        let info = snapshot(&src).await;
        let paused = src
            .vm
            .send(ProbeReady {
                port: hearth_proto::agent::DEFAULT_PORT,
                timeout: Duration::from_millis(300),
            })
            .await
            .unwrap();
        assert!(
            matches!(paused, Err(FirecrackerError::ReadinessTimeout { .. })),
            "a paused guest answers nothing: {paused:?}"
        );
        ns.exec_ok(&["ip", "tuntap", "add", "dev", "hth1", "mode", "tap"]);
        let (copy, _events) = fx.actor("copy", fx.binary(vmm.binary()));
        copy.send(restore_msg(&src, &info, "hth1"))
            .await
            .unwrap()
            .expect("restore");
        let after = copy
            .send(ProbeReady {
                port: hearth_proto::agent::DEFAULT_PORT,
                timeout: Duration::from_secs(5),
            })
            .await
            .unwrap()
            .expect("restored probe");
        assert_eq!(after.reply.boot_id, before.reply.boot_id);
        copy.send(KillVm {}).await.unwrap().unwrap();
        src.vm.send(KillVm {}).await.unwrap().unwrap();
    });
}

/// Simulator only, with its userspace guest stack (`FC_SIM_NETSTACK=1`): a guest restored on a
/// new TAP answers with its source's identity (IP and MAC), and only while it runs: restored
/// paused, or paused again, it answers nothing. Traffic is a ping inside the test's namespace.
#[test]
fn restored_sim_guest_keeps_its_identity_and_freezes_when_paused() {
    hearth_testkit::require_privileged!();
    let ns = NetNs::new("vmm");
    ns.block_on(|| async {
        let fx = Fixture::new("snp");
        let _reaper = Reaper(fx.path().to_path_buf());
        let bin = fx.wrapper("fc-net", &[("FC_SIM_NETSTACK", "1")], false);
        ns.exec_ok(&["ip", "tuntap", "add", "dev", "hth0", "mode", "tap"]);
        let (src, _events) = fx.actor("src", bin.clone());
        bring_up(&src, fx.config(Some(net("hth0")))).await;
        let snaps = fx.path().join("snaps");
        std::fs::create_dir_all(&snaps).unwrap();
        src.send(PauseVm {}).await.unwrap().unwrap();
        let info = src
            .send(CreateVmSnapshot {
                snapshot_path: snaps.join("state"),
                mem_path: snaps.join("mem"),
            })
            .await
            .unwrap()
            .unwrap();
        ns.exec_ok(&["ip", "tuntap", "add", "dev", "hth1", "mode", "tap"]);
        ns.exec_ok(&["ip", "addr", "add", "172.31.240.1/24", "dev", "hth1"]);
        ns.exec_ok(&["ip", "link", "set", "hth1", "up"]);
        let (copy, _events) = fx.actor("copy", bin);
        copy.send(RestoreVm {
            snapshot_path: snaps.join("state"),
            mem_path: snaps.join("mem"),
            compat: info.compat,
            network_overrides: vec![NetworkOverride {
                iface_id: "eth0".into(),
                host_dev_name: "hth1".into(),
            }],
            vsock_uds_path: None,
            resume: false,
            clock_realtime: false,
        })
        .await
        .unwrap()
        .expect("restore paused");
        let ping = || {
            ns.exec(&["ping", "-c", "1", "-W", "1", "172.31.240.5"])
                .status
                .success()
        };
        if ping() {
            let rd = run_dir(&fx, "copy");
            panic!(
                "a guest restored paused answers nothing; state {}; log: {}",
                vm_state(&rd.api_socket()).await,
                std::fs::read_to_string(rd.firecracker_log()).unwrap_or_default()
            );
        }
        copy.send(ResumeVm {}).await.unwrap().unwrap();
        assert!(
            common::wait_until(Duration::from_secs(5), ping),
            "the running copy answers as 172.31.240.5"
        );
        let neigh = ns.exec_ok(&["ip", "neigh", "show", "172.31.240.5", "dev", "hth1"]);
        assert!(
            neigh.contains(&MacAddr::for_guest(GUEST_IP).to_string()),
            "with the source's MAC: {neigh}"
        );
        copy.send(PauseVm {}).await.unwrap().unwrap();
        assert!(!ping(), "paused again, it answers nothing");
        copy.send(KillVm {}).await.unwrap().unwrap();
        src.send(KillVm {}).await.unwrap().unwrap();
    });
}

/// Simulator only: the guest adopts the identity the agent's `reconfigure` writes to its
/// identity file (`FC_SIM_IDENTITY_FILE=1`: `sim-identity.json` in the run directory; written
/// here directly, as `hearth-agent --sim-identity-file` writes it): the restored copy stops
/// answering as its source and answers with the new IP and MAC.
#[test]
fn sim_guest_adopts_the_identity_the_agent_writes() {
    hearth_testkit::require_privileged!();
    let ns = NetNs::new("vmm");
    ns.block_on(|| async {
        let fx = Fixture::new("snp");
        let _reaper = Reaper(fx.path().to_path_buf());
        let bin = fx.wrapper(
            "fc-id",
            &[("FC_SIM_NETSTACK", "1"), ("FC_SIM_IDENTITY_FILE", "1")],
            false,
        );
        ns.exec_ok(&["ip", "tuntap", "add", "dev", "hth0", "mode", "tap"]);
        let (src, _events) = fx.actor("src", bin.clone());
        bring_up(&src, fx.config(Some(net("hth0")))).await;
        let snaps = fx.path().join("snaps");
        std::fs::create_dir_all(&snaps).unwrap();
        src.send(PauseVm {}).await.unwrap().unwrap();
        let info = src
            .send(CreateVmSnapshot {
                snapshot_path: snaps.join("state"),
                mem_path: snaps.join("mem"),
            })
            .await
            .unwrap()
            .unwrap();
        ns.exec_ok(&["ip", "tuntap", "add", "dev", "hth1", "mode", "tap"]);
        ns.exec_ok(&["ip", "addr", "add", "172.31.240.1/24", "dev", "hth1"]);
        ns.exec_ok(&["ip", "link", "set", "hth1", "up"]);
        let (copy, _events) = fx.actor("copy", bin);
        copy.send(RestoreVm {
            vsock_uds_path: None,
            ..restore_msg(
                &Source {
                    vm: src.clone(),
                    api: PathBuf::new(),
                    snap: snaps.join("state"),
                    mem: snaps.join("mem"),
                },
                &info,
                "hth1",
            )
        })
        .await
        .unwrap()
        .expect("restore");
        let ping = |ip: &str| {
            ns.exec(&["ping", "-c", "1", "-W", "1", ip])
                .status
                .success()
        };
        assert!(
            common::wait_until(Duration::from_secs(5), || ping("172.31.240.5")),
            "the copy first answers as its source"
        );
        let new_mac = MacAddr::for_guest(Ipv4Addr::new(172, 31, 240, 9)).to_string();
        let file = run_dir(&fx, "copy").path().join("sim-identity.json");
        std::fs::write(
            &file,
            format!(
                r#"{{"ip_cidr":"172.31.240.9/24","gateway":"172.31.240.1","mac":"{new_mac}","hostname":"copy","dns":"172.31.240.1","rng_seed":"{}"}}"#,
                "0".repeat(64)
            ),
        )
        .unwrap();
        assert!(
            common::wait_until(Duration::from_secs(5), || ping("172.31.240.9")),
            "the copy answers with its new address"
        );
        let neigh = ns.exec_ok(&["ip", "neigh", "show", "172.31.240.9", "dev", "hth1"]);
        assert!(neigh.contains(&new_mac), "and its new MAC: {neigh}");
        ns.exec_ok(&["ip", "neigh", "flush", "dev", "hth1"]);
        assert!(!ping("172.31.240.5"), "the old address is gone");
        copy.send(KillVm {}).await.unwrap().unwrap();
        src.send(KillVm {}).await.unwrap().unwrap();
    });
}

/// Stopping a paused VM skips Ctrl+Alt+Del (a paused guest cannot act on it, so its grace
/// would only be waited out): Firecracker's own log shows the pause and no `SendCtrlAltDel`.
/// The same holds for a copy restored paused.
async fn stopping_a_paused_vm_skips_ctrl_alt_del(vmm: Vmm, ns: &NetNs) {
    let fx = Fixture::new("snp");
    let _reaper = Reaper(fx.path().to_path_buf());
    let src = boot_source(&fx, &vmm, ns).await;
    let info = snapshot(&src).await;
    ns.exec_ok(&["ip", "tuntap", "add", "dev", "hth1", "mode", "tap"]);
    let mut settings = fx.settings();
    settings.log_level = hearth_proto::firecracker::LogLevel::Info;
    let (events, _rx) = hearth_testkit::fc_sim::event_sink();
    let copy = actix::Actor::start(
        FirecrackerActor::new(
            "copy",
            fx.binary(vmm.binary()),
            std::sync::Arc::new(hearth_actors::host::processes::LinuxProcesses),
            settings,
            events,
            hearth_testkit::test_logger(),
        )
        .unwrap(),
    );
    copy.send(RestoreVm {
        resume: false,
        ..restore_msg(&src, &info, "hth1")
    })
    .await
    .unwrap()
    .expect("restore paused");
    let rd = run_dir(&fx, "copy");
    assert_eq!(vm_state(&rd.api_socket()).await, "Paused");
    let plan = StopPlan {
        ctrl_alt_del_grace: Some(Duration::from_secs(30)),
        term_grace: Some(Duration::from_secs(5)),
    };
    let stopped = copy.send(StopVm { plan }).await.unwrap().expect("stop");
    assert_ne!(stopped.rung, StopRung::CtrlAltDel);
    let log = std::fs::read_to_string(rd.firecracker_log()).unwrap();
    assert!(
        log.contains("/snapshot/load"),
        "the log records requests: {log}"
    );
    assert!(!log.contains("SendCtrlAltDel"), "{log}");
    // The source was paused by PauseVm: the same.
    let stopped = src.vm.send(StopVm { plan }).await.unwrap().expect("stop");
    assert_ne!(stopped.rung, StopRung::CtrlAltDel);
}
vmm_test!(
    stopping_a_paused_vm_skips_ctrl_alt_del,
    stopping_a_paused_vm_skips_ctrl_alt_del,
    net
);

/// Simulator only (the real binary's refusal depends on the host's KVM clock, seen here now
/// and then): a load with `clock_realtime` on a snapshot without a realtime clock reference
/// fails with Firecracker's text, the error says so (`is_clock_realtime_unavailable`), and a
/// restore without it works.
#[test]
fn clock_realtime_unavailable_is_recognised_and_a_retry_without_it_works() {
    hearth_testkit::require_privileged!();
    let ns = NetNs::new("vmm");
    ns.block_on(|| async {
        let fx = Fixture::new("snp");
        let _reaper = Reaper(fx.path().to_path_buf());
        let bin = fx.wrapper("fc-clk", &[("FC_SIM_NO_CLOCK_REALTIME", "1")], false);
        ns.exec_ok(&["ip", "tuntap", "add", "dev", "hth0", "mode", "tap"]);
        ns.exec_ok(&["ip", "tuntap", "add", "dev", "hth1", "mode", "tap"]);
        let (vm, _events) = fx.actor("src", bin.clone());
        bring_up(&vm, fx.config(Some(net("hth0")))).await;
        let snaps = fx.path().join("snaps");
        std::fs::create_dir_all(&snaps).unwrap();
        let src = Source {
            vm,
            api: run_dir(&fx, "src").api_socket(),
            snap: snaps.join("state"),
            mem: snaps.join("mem"),
        };
        let info = snapshot(&src).await;
        let (copy, _events) = fx.actor("copy", bin);
        let err = copy
            .send(RestoreVm {
                clock_realtime: true,
                ..restore_msg(&src, &info, "hth1")
            })
            .await
            .unwrap()
            .unwrap_err();
        assert!(err.is_clock_realtime_unavailable(), "{err}");
        assert_eq!(
            fault::<()>(Err(err)).1,
            "Load snapshot error: Failed to restore from snapshot: Failed to build microVM from \
             snapshot: Failed to restore microVM state: clock_realtime requested but not present \
             in the snapshot state"
        );
        copy.send(restore_msg(&src, &info, "hth1"))
            .await
            .unwrap()
            .expect("restore without clock_realtime");
        copy.send(KillVm {}).await.unwrap().unwrap();
        src.vm.send(KillVm {}).await.unwrap().unwrap();
    });
}

/// The regular files process `pid` holds open (`/proc/<pid>/fd`).
fn open_files(pid: u32) -> Vec<PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default()
}

fn pid_of(api: &Path) -> u32 {
    let needle = api.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmd).contains(&needle)
        })
        .expect("the VMM's pid")
}

fn move_root(path: &Path) -> UpdateDrivePath {
    UpdateDrivePath {
        drive_id: ROOT_DRIVE_ID.into(),
        path: path.to_path_buf(),
    }
}

/// Before `InstanceStart` the actor refuses a drive update without a call, and Firecracker's
/// own refusal has the same text in both VMMs.
async fn refused_before_start(fx: &Fixture, vmm: &Vmm, own: &Path) {
    let (fresh, _fresh_events) = fx.actor("fresh", fx.binary(vmm.binary()));
    fresh.send(SpawnProcess {}).await.unwrap().unwrap();
    let err = fresh.send(move_root(own)).await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            FirecrackerError::InvalidState {
                op: "update a drive of",
                ..
            }
        ),
        "{err}"
    );
    let raw = ApiClient::new(&run_dir(fx, "fresh").api_socket())
        .patch(
            Endpoint::Drive(ROOT_DRIVE_ID),
            &serde_json::json!({"drive_id": ROOT_DRIVE_ID, "path_on_host": own}),
        )
        .await;
    assert_eq!(
        fault(raw),
        (
            400,
            "The requested operation is not supported before starting the microVM.".into()
        )
    );
    fresh.send(KillVm {}).await.unwrap().unwrap();
}

/// An unknown drive and a missing file: Firecracker's 400 with the same texts in both VMMs,
/// and the drive keeps its file.
async fn refused_on_a_started_vm(src: &Source, own: &Path, checkpoint: &Path, pid: u32) {
    let unknown = src
        .vm
        .send(UpdateDrivePath {
            drive_id: "nodrive".into(),
            path: own.to_path_buf(),
        })
        .await
        .unwrap();
    assert_eq!(
        fault(unknown),
        (
            400,
            "Drive config error: Unable to patch the block device: Failed perform action on \
             device: Device not found Please verify the request arguments."
                .into()
        )
    );
    let missing = src.vm.send(move_root(checkpoint)).await.unwrap();
    assert_eq!(
        fault(missing),
        (
            400,
            format!(
                "Drive config error: Unable to patch the block device: Block: Virtio backend \
                 error: Error manipulating the backing file: No such file or directory (os \
                 error 2) {} Please verify the request arguments.",
                checkpoint.display()
            )
        )
    );
    assert!(
        open_files(pid).contains(&own.to_path_buf()),
        "the drive kept its file"
    );
}

/// `PATCH /drives/{id}` (`UpdateDrivePath`), the way hearth snapshots and restores a disk: the
/// VMM opens the new file and lets the old one go (seen in `/proc/<pid>/fd`), paused or not;
/// a snapshot records the file the drive has at that moment, so a load opens that file (and
/// nothing of the source's), even once the source's disk is gone; a loaded VMM moved to its
/// own disk before it resumes never holds the checkpoint again. Refusals (before start, an
/// unknown drive, a missing file) have the same texts in both VMMs and leave the drive as it
/// was.
async fn drive_follows_update_drive_path(vmm: Vmm, ns: &NetNs) {
    let fx = Fixture::new("snp");
    let _reaper = Reaper(fx.path().to_path_buf());
    let own = fx.path().join("rootfs.ext4");

    refused_before_start(&fx, &vmm, &own).await;

    let src = boot_source(&fx, &vmm, ns).await;
    let pid = pid_of(&src.api);
    assert!(open_files(pid).contains(&own));
    let checkpoint = fx.path().join("snaps/disk");
    refused_on_a_started_vm(&src, &own, &checkpoint, pid).await;

    // The snapshot as hearth takes it: paused, the drive on the checkpoint, then back.
    src.vm.send(PauseVm {}).await.unwrap().expect("pause");
    std::fs::copy(&own, &checkpoint).unwrap();
    src.vm
        .send(move_root(&checkpoint))
        .await
        .unwrap()
        .expect("to the checkpoint, paused");
    let files = open_files(pid);
    assert!(
        files.contains(&checkpoint) && !files.contains(&own),
        "{files:?}"
    );
    let info = src
        .vm
        .send(CreateVmSnapshot {
            snapshot_path: src.snap.clone(),
            mem_path: src.mem.clone(),
        })
        .await
        .unwrap()
        .expect("snapshot");
    src.vm.send(move_root(&own)).await.unwrap().expect("back");
    let files = open_files(pid);
    assert!(
        files.contains(&own) && !files.contains(&checkpoint),
        "{files:?}"
    );
    src.vm.send(ResumeVm {}).await.unwrap().unwrap();
    assert_eq!(vm_state(&src.api).await, "Running");

    // The source and its disk go; the snapshot still loads, on the checkpoint.
    src.vm.send(KillVm {}).await.unwrap().unwrap();
    std::fs::remove_file(&own).unwrap();
    ns.exec_ok(&["ip", "tuntap", "add", "dev", "hth1", "mode", "tap"]);
    let (copy, _events) = fx.actor("copy", fx.binary(vmm.binary()));
    let restored = copy
        .send(RestoreVm {
            resume: false,
            ..restore_msg(&src, &info, "hth1")
        })
        .await
        .unwrap()
        .expect("load with the source's disk gone");
    let pid = restored.spawn.record.pid;
    let files = open_files(pid);
    assert!(files.contains(&checkpoint), "{files:?}");
    let copy_disk = fx.path().join("copy.ext4");
    std::fs::copy(&checkpoint, &copy_disk).unwrap();
    copy.send(move_root(&copy_disk))
        .await
        .unwrap()
        .expect("to its own disk, paused after the load");
    let files = open_files(pid);
    assert!(
        files.contains(&copy_disk) && !files.contains(&checkpoint),
        "{files:?}"
    );
    copy.send(ResumeVm {}).await.unwrap().expect("resume");
    let rd = run_dir(&fx, "copy");
    assert_eq!(vm_state(&rd.api_socket()).await, "Running");
    let config = get(&rd.api_socket(), Endpoint::VmConfig).await;
    assert_eq!(
        config["drives"][0]["path_on_host"],
        copy_disk.display().to_string(),
        "{config}"
    );
    copy.send(KillVm {}).await.unwrap().unwrap();
}
vmm_test!(
    drive_follows_update_drive_path,
    drive_follows_update_drive_path,
    net
);
