//! Unit tests of `FirecrackerActor`.

use super::*;
use crate::host::processes::{FakeProcesses, ProcessIdentity, Signal};
use actix::{Actor, Addr, Context, Handler};
use tokio::sync::mpsc;

struct Sink(mpsc::UnboundedSender<VmProcessEvent>);
impl Actor for Sink {
    type Context = Context<Self>;
}
impl Handler<VmProcessEvent> for Sink {
    type Result = ();
    fn handle(&mut self, ev: VmProcessEvent, _: &mut Context<Self>) {
        let _ = self.0.send(ev);
    }
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

struct Setup {
    fake: FakeProcesses,
    vm: Addr<FirecrackerActor>,
    events: mpsc::UnboundedReceiver<VmProcessEvent>,
    dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProcesses::new();
    let (tx, events) = mpsc::unbounded_channel();
    let mut settings = FirecrackerSettings::new(dir.path());
    settings.api_timeout = Duration::from_millis(30);
    let binary = FirecrackerBinary {
        path: "/usr/bin/firecracker".into(),
        version: binary::MIN_VERSION,
    };
    let vm = FirecrackerActor::new(
        "vm-1",
        binary,
        Arc::new(fake.clone()),
        settings,
        Sink(tx).start().recipient(),
        logger(),
    )
    .unwrap()
    .start();
    Setup {
        fake,
        vm,
        events,
        dir,
    }
}

#[test]
fn state_predicates() {
    use VmmState::*;
    let all = [
        Idle, Spawning, Spawned, Configured, Running, Stopping, Exited,
    ];
    let pick = |f: fn(VmmState) -> bool| all.iter().copied().filter(|s| f(*s)).collect::<Vec<_>>();
    assert_eq!(pick(VmmState::can_spawn), [Idle, Exited]);
    assert_eq!(pick(VmmState::can_configure), [Spawned]);
    assert_eq!(pick(VmmState::can_start), [Configured]);
    assert_eq!(pick(VmmState::is_running), [Running]);
    assert_eq!(
        pick(VmmState::can_stop),
        [Spawning, Spawned, Configured, Running]
    );
}

#[actix::test]
async fn operations_out_of_order_are_refused() {
    let s = setup();
    for err in [
        s.vm.send(StartVm {}).await.unwrap().unwrap_err(),
        s.vm.send(KillVm {}).await.unwrap().unwrap_err(),
        s.vm.send(SendCtrlAltDel {}).await.unwrap().unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                FirecrackerError::InvalidState {
                    state: VmmState::Idle,
                    ..
                }
            ),
            "{err}"
        );
    }
    assert!(s.fake.calls().is_empty());
}

#[actix::test]
async fn failed_spawn_changes_nothing() {
    let s = setup();
    s.fake.fail_spawn("no fork for you");
    let err = s.vm.send(SpawnProcess {}).await.unwrap().unwrap_err();
    assert!(matches!(err, FirecrackerError::Process { .. }), "{err}");
    assert_eq!(s.vm.send(GetVmmProcess {}).await.unwrap(), None);
    // It can be retried: the state is still Idle.
    let err = s.vm.send(SpawnProcess {}).await.unwrap().unwrap_err();
    assert!(matches!(err, FirecrackerError::Process { .. }));
}

#[actix::test]
async fn api_socket_timeout_kills_the_process() {
    let mut s = setup();
    let err = s.vm.send(SpawnProcess {}).await.unwrap().unwrap_err();
    assert!(
        matches!(err, FirecrackerError::ApiSocketTimeout { .. }),
        "{err}"
    );
    assert_eq!(s.fake.signals(), vec![Signal::Kill]);
    match s.events.recv().await.unwrap() {
        VmProcessEvent::Stopped { rung, .. } => assert_eq!(rung, StopRung::Sigkill),
        e => panic!("unexpected {e:?}"),
    }
    // The spawn used the run directory's paths.
    let spawn = s.fake.calls().into_iter().find_map(|c| match c {
        crate::host::processes::fake::FakeCall::Spawn(spec) => Some(spec),
        _ => None,
    });
    let spec = spawn.unwrap();
    assert_eq!(spec.stdio, s.dir.path().join("vm-1/console.fifo"));
    assert_eq!(
        spec.args[1],
        s.dir.path().join("vm-1/api.sock").into_os_string()
    );
}

#[actix::test]
async fn early_exit_is_reported_as_unexpected() {
    let mut s = setup();
    let fake = s.fake.clone();
    let pending = s.vm.send(SpawnProcess {});
    // The first fake pid is 1001; let it die before its API socket appears.
    while fake.calls().is_empty() {
        tokio::task::yield_now().await;
    }
    fake.exit(1001, crate::host::processes::ExitStatus::Code(1));
    let err = pending.await.unwrap().unwrap_err();
    assert!(matches!(err, FirecrackerError::ExitedEarly { .. }), "{err}");
    assert!(
        s.fake.signals().is_empty(),
        "a dead process is not signalled"
    );
    assert!(matches!(
        s.events.recv().await.unwrap(),
        VmProcessEvent::ExitedUnexpectedly { pid: 1001, .. }
    ));
}

#[actix::test]
async fn adoption_refuses_mismatches_without_signalling() {
    let s = setup();
    let api = s.dir.path().join("vm-1/api.sock");
    let cmdline = vec![
        "/usr/bin/firecracker".to_string(),
        "--api-sock".into(),
        api.display().to_string(),
    ];
    s.fake.set_identity(
        77,
        ProcessIdentity {
            start_time: 500,
            cmdline: cmdline.clone(),
        },
    );
    s.fake.set_identity(
        78,
        ProcessIdentity {
            start_time: 600,
            cmdline: vec!["/usr/bin/sleep".into(), api.display().to_string()],
        },
    );
    let record = |pid, start_time| VmmProcess {
        pid,
        start_time,
        api_socket: api.clone(),
        binary: "/usr/bin/firecracker".into(),
    };
    for (rec, why) in [
        (record(77, 499), "start time"),
        (record(78, 600), "does not run"),
        (record(79, 1), "No process"),
    ] {
        match s.vm.send(AdoptProcess { record: rec }).await.unwrap() {
            Err(FirecrackerError::AdoptMismatch { reason, .. }) => {
                assert!(reason.contains(why), "{reason} lacks {why}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(s.fake.signals().is_empty());
    assert_eq!(s.vm.send(GetVmmProcess {}).await.unwrap(), None);
}

fn fc_identity(pid: u32, args: &[String]) -> (u32, ProcessIdentity) {
    let mut cmdline = vec!["/usr/bin/firecracker".to_string()];
    cmdline.extend(args.iter().cloned());
    (
        pid,
        ProcessIdentity {
            start_time: 1,
            cmdline,
        },
    )
}

#[actix::test]
async fn only_a_vmm_using_this_run_directory_is_killed_as_a_stray() {
    let s = setup();
    let api = s.dir.path().join("vm-1/api.sock").display().to_string();
    for (pid, id) in [
        fc_identity(77, &["--api-sock".into(), api.clone()]),
        fc_identity(78, &["--api-sock".into(), "/elsewhere/api.sock".into()]),
        fc_identity(80, &[format!("--api-sock={api}")]),
    ] {
        s.fake.set_identity(pid, id);
    }
    let kill = |pid| KillStray {
        pid,
        wait: Duration::from_secs(1),
    };
    for (pid, why) in [(78, "does not use"), (79, "No process")] {
        match s.vm.send(kill(pid)).await.unwrap() {
            Err(FirecrackerError::NotAStray { reason, .. }) => {
                assert!(reason.contains(why), "{reason} lacks {why}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        s.fake.signals().is_empty(),
        "refused pids are not signalled"
    );
    s.vm.send(kill(77)).await.unwrap().unwrap();
    s.vm.send(kill(80)).await.unwrap().unwrap();
    let killed: Vec<_> = s
        .fake
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            crate::host::processes::fake::FakeCall::Signal { pid, signal } => Some((pid, signal)),
            _ => None,
        })
        .collect();
    assert_eq!(killed, vec![(77, Signal::Kill), (80, Signal::Kill)]);
}

#[actix::test]
async fn run_directory_is_cleaned_only_once_the_process_is_gone() {
    let mut s = setup();
    let pending = s.vm.send(SpawnProcess {});
    while s.fake.calls().is_empty() {
        tokio::task::yield_now().await;
    }
    // Something listening on the API socket is all the fake VMM needs to be "up".
    let api = s.dir.path().join("vm-1/api.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&api).unwrap();
    let pid = pending.await.unwrap().unwrap().record.pid;
    let log = s.dir.path().join("vm-1/firecracker.log");
    std::fs::write(&log, b"kept until the directory goes").unwrap();

    for err in [
        s.vm.send(RemoveRunDir {}).await.unwrap().unwrap_err(),
        s.vm.send(RemoveStaleSockets {}).await.unwrap().unwrap_err(),
    ] {
        assert!(
            matches!(err, FirecrackerError::InvalidState { .. }),
            "{err}"
        );
    }
    let own =
        s.vm.send(KillStray {
            pid,
            wait: Duration::from_secs(1),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(own, FirecrackerError::NotAStray { .. }), "{own}");
    assert!(
        api.exists() && log.exists(),
        "nothing removed while it runs"
    );
    assert!(s.fake.signals().is_empty());

    s.vm.send(KillVm {}).await.unwrap().unwrap();
    assert!(matches!(
        s.events.recv().await.unwrap(),
        VmProcessEvent::Stopped { .. }
    ));
    std::os::unix::net::UnixListener::bind(&api).unwrap();
    s.vm.send(RemoveStaleSockets {}).await.unwrap().unwrap();
    assert!(!api.exists() && log.exists(), "sockets go, logs stay");
    s.vm.send(RemoveRunDir {}).await.unwrap().unwrap();
    assert!(!s.dir.path().join("vm-1").exists());
    assert!(s.dir.path().exists());
    // Idempotent: a missing directory is fine.
    s.vm.send(RemoveRunDir {}).await.unwrap().unwrap();
}
