//! The console capture and exit reporting of a VMM spawned by `FirecrackerActor` with the real
//! process backend, end to end: what the VMM writes to stdout/stderr reaches `console.log`
//! while it runs and after it exits, the exit status is reported, and an adopting actor
//! resumes the pump where the FIFO kept the output nobody read. The pumps are tasks on the
//! actor's runtime (no thread per VM: see `actors/src/firecracker/console.rs`).
//!
//! The "VMM" is a shell script around `firecracker-sim` (build it first:
//! `cargo build -p firecracker-sim`), so that it writes to the console before and after the
//! simulator runs. Unprivileged.

mod common;
use hearth_testkit::fc_sim;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hearth_actors::firecracker::{AdoptProcess, KillVm, StopRung, VmProcessEvent};
use hearth_actors::host::processes::ExitStatus;

use common::actor::{alive, bring_up, next_event, Fixture};

/// A script that answers `--version` as the simulator, otherwise runs `body` (with `$SIM`
/// the simulator).
fn script(fx: &Fixture, name: &str, body: &str) -> PathBuf {
    let path = fx.path().join(name);
    let text = format!(
        "#!/bin/sh\nSIM='{}'\ncase \"$1\" in --version) exec \"$SIM\" \"$@\";; esac\n{body}\n",
        fc_sim::sim_binary().display()
    );
    fc_sim::write_executable(&path, &text);
    path
}

/// Waits (without blocking the runtime, which runs the pump) until `log` contains `needle`.
async fn log_contains(log: &Path, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return true;
        }
        if Instant::now() >= deadline {
            eprintln!("{} holds: {text:?}", log.display());
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[actix::test]
async fn console_is_logged_while_the_vmm_runs_and_drained_after_it_exits() {
    let fx = Fixture::new("fcc");
    // The simulator crashes 1.5 s after InstanceStart with code 7; the script then writes its
    // last words and exits 3, which is the status the actor reports (the script is the VMM).
    let vmm = script(
        &fx,
        "fc-console",
        "echo 'console: early words'\n\
         FC_SIM_CRASH_AFTER_MS=1500 FC_SIM_CRASH_CODE=7 \"$SIM\" \"$@\"\n\
         rc=$?\n\
         echo \"console: last words after exit $rc\" >&2\n\
         exit 3",
    );
    let (vm, mut events) = fx.actor("vm-con", fx.binary(vmm.clone()));
    let record = bring_up(&vm, fx.config(None)).await;
    let log = fx.path().join("vms/vm-con/console.log");
    assert!(
        log_contains(&log, "console: early words", Duration::from_secs(5)).await,
        "output written while the VMM runs reaches the log"
    );
    assert!(alive(record.pid), "it was logged while running");
    match next_event(&mut events).await {
        VmProcessEvent::ExitedUnexpectedly { pid, status, .. } => {
            assert_eq!((pid, status), (record.pid, ExitStatus::Code(3)));
        }
        e => panic!("unexpected {e:?}"),
    }
    assert!(
        log_contains(
            &log,
            "console: last words after exit 7",
            Duration::from_secs(5)
        )
        .await,
        "output written just before the exit is drained into the log"
    );
}

#[actix::test]
async fn adopting_actor_resumes_the_console_pump() {
    let fx = Fixture::new("fcc");
    // The simulator itself: adoption checks the command line against the binary.
    let vmm = fc_sim::sim_binary();
    let (vm, _events) = fx.actor("vm-ado", fx.binary(vmm.clone()));
    let record = bring_up(&vm, fx.config(None)).await;
    drop(vm);
    // Let the old actor stop: its pump stops with it, the VM keeps running.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(alive(record.pid));
    let run_dir = fx.path().join("vms/vm-ado");
    // Written while nobody pumps (as the VMM would while hearthd is down): the FIFO keeps it.
    let mut writer = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(run_dir.join("console.fifo"))
        .unwrap();
    writer.write_all(b"console: while nobody pumped\n").unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let log = run_dir.join("console.log");
    let before = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !before.contains("while nobody pumped"),
        "the old pump stopped with its actor"
    );

    let (vm2, mut events2) = fx.actor("vm-ado", fx.binary(vmm.clone()));
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
    assert!(
        log_contains(&log, "console: while nobody pumped", Duration::from_secs(5)).await,
        "the adopter copies what the FIFO kept"
    );
    writer.write_all(b"console: after adoption\n").unwrap();
    assert!(log_contains(&log, "console: after adoption", Duration::from_secs(5)).await);
    drop(writer);

    let out = vm2.send(KillVm {}).await.unwrap().unwrap();
    assert_eq!(
        (out.rung, out.status),
        (StopRung::Sigkill, ExitStatus::Signal(libc::SIGKILL))
    );
    assert!(matches!(
        next_event(&mut events2).await,
        VmProcessEvent::Stopped {
            rung: StopRung::Sigkill,
            ..
        }
    ));
}
