//! The stop ladder: `SendCtrlAltDel` -> grace -> SIGTERM -> grace -> SIGKILL. Which rungs apply
//! is decided by the pure [`rungs`]; [`run_ladder`] climbs them against a [`Process`] (signals
//! go through its pidfd) and an exit watch, and reports the rung that ended the process.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::host::processes::{ExitStatus, Process, Signal};

use super::FirecrackerError;

/// How long to wait for the kernel to finish a process after SIGKILL before giving up.
pub const KILL_WAIT: Duration = Duration::from_secs(5);

/// A rung of the ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopRung {
    /// The process was already gone when the stop began.
    AlreadyExited,
    /// The guest shut down after Ctrl+Alt+Del (Firecracker exits 0 on guest reboot).
    CtrlAltDel,
    /// SIGTERM ended it.
    Sigterm,
    /// SIGKILL ended it.
    Sigkill,
}

impl fmt::Display for StopRung {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopRung::AlreadyExited => "already exited",
            StopRung::CtrlAltDel => "Ctrl+Alt+Del",
            StopRung::Sigterm => "SIGTERM",
            StopRung::Sigkill => "SIGKILL",
        })
    }
}

/// How to stop: the grace after each polite rung; `None` skips the rung.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopPlan {
    /// Grace after `SendCtrlAltDel`.
    pub ctrl_alt_del_grace: Option<Duration>,
    /// Grace after SIGTERM.
    pub term_grace: Option<Duration>,
}

impl StopPlan {
    /// Straight to SIGKILL.
    pub const KILL: StopPlan = StopPlan {
        ctrl_alt_del_grace: None,
        term_grace: None,
    };
}

impl Default for StopPlan {
    /// 10 s for the guest to shut down, then 2 s after SIGTERM.
    fn default() -> Self {
        StopPlan {
            ctrl_alt_del_grace: Some(Duration::from_secs(10)),
            term_grace: Some(Duration::from_secs(2)),
        }
    }
}

/// The result of a stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopOutcome {
    /// The rung that ended the process.
    pub rung: StopRung,
    /// How it ended.
    pub status: ExitStatus,
    /// How long the stop took.
    pub elapsed: Duration,
    /// Rungs that could not be attempted, and why (e.g. the API refused `SendCtrlAltDel`).
    pub notes: Vec<String>,
    /// How the image's command ended, when hearth's init reported it on the console before
    /// the guest shut down ([`hearth_proto::init::exit_line`]).
    pub guest_exit: Option<hearth_proto::init::ExitReport>,
}

/// The rungs to climb, each with how long to wait for an exit after it. Ctrl+Alt+Del needs a
/// started guest (Firecracker refuses it before boot), so `guest_started` gates it.
pub fn rungs(plan: &StopPlan, guest_started: bool) -> Vec<(StopRung, Duration)> {
    let mut out = Vec::with_capacity(3);
    if let (Some(grace), true) = (plan.ctrl_alt_del_grace, guest_started) {
        out.push((StopRung::CtrlAltDel, grace));
    }
    if let Some(grace) = plan.term_grace {
        out.push((StopRung::Sigterm, grace));
    }
    out.push((StopRung::Sigkill, KILL_WAIT));
    out
}

async fn exited_within(
    exit: &mut watch::Receiver<Option<ExitStatus>>,
    grace: Duration,
) -> Option<ExitStatus> {
    match tokio::time::timeout(grace, exit.wait_for(Option::is_some)).await {
        Ok(Ok(status)) => *status,
        // The watch sender is gone: the waiter ended without a status; treat as exited.
        Ok(Err(_)) => Some(ExitStatus::Unknown),
        Err(_) => None,
    }
}

/// Climbs `steps` until the process exits. `ctrl_alt_del` sends the API action; if it fails,
/// the ladder moves to the next rung at once (noted in the outcome).
pub async fn run_ladder<F, Fut>(
    steps: &[(StopRung, Duration)],
    process: &dyn Process,
    mut exit: watch::Receiver<Option<ExitStatus>>,
    ctrl_alt_del: F,
) -> Result<StopOutcome, FirecrackerError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), FirecrackerError>>,
{
    let start = Instant::now();
    let mut notes = Vec::new();
    let done = |rung, status, notes| StopOutcome {
        rung,
        status,
        elapsed: start.elapsed(),
        notes,
        guest_exit: None,
    };
    if let Some(status) = *exit.borrow() {
        return Ok(done(StopRung::AlreadyExited, status, notes));
    }
    let mut cad = Some(ctrl_alt_del);
    for &(rung, grace) in steps {
        let sent = match rung {
            StopRung::CtrlAltDel => match cad.take() {
                Some(f) => f().await.map_err(|e| e.to_string()),
                None => Err("Ctrl+Alt+Del already sent".into()),
            },
            StopRung::Sigterm => process.signal(Signal::Term).map_err(|e| e.to_string()),
            StopRung::Sigkill => process.signal(Signal::Kill).map_err(|e| e.to_string()),
            StopRung::AlreadyExited => continue,
        };
        if let Err(e) = sent {
            notes.push(format!("{rung}: {e}"));
            if rung != StopRung::Sigkill {
                continue;
            }
        }
        if let Some(status) = exited_within(&mut exit, grace).await {
            return Ok(done(rung, status, notes));
        }
    }
    Err(FirecrackerError::DidNotDie {
        pid: process.pid(),
        waited: start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::processes::{FakeProcesses, Processes, SpawnSpec};
    use std::sync::Arc;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn rung_selection() {
        let plan = StopPlan {
            ctrl_alt_del_grace: Some(MS * 100),
            term_grace: Some(MS * 50),
        };
        assert_eq!(
            rungs(&plan, true),
            vec![
                (StopRung::CtrlAltDel, MS * 100),
                (StopRung::Sigterm, MS * 50),
                (StopRung::Sigkill, KILL_WAIT)
            ]
        );
        assert_eq!(rungs(&plan, false)[0].0, StopRung::Sigterm);
        assert_eq!(
            rungs(&StopPlan::KILL, true),
            vec![(StopRung::Sigkill, KILL_WAIT)]
        );
    }

    fn spawn(
        fake: &FakeProcesses,
    ) -> (
        Arc<dyn crate::host::processes::Process>,
        watch::Receiver<Option<ExitStatus>>,
    ) {
        let p = fake
            .spawn(&SpawnSpec {
                program: "/fc".into(),
                args: vec![],
                cwd: "/".into(),
                stdio: "/dev/null".into(),
            })
            .unwrap();
        let (tx, rx) = watch::channel(None);
        let wait = p.wait();
        tokio::spawn(async move {
            let status = wait.await.unwrap_or(ExitStatus::Unknown);
            tx.send_replace(Some(status));
        });
        (p, rx)
    }

    fn plan() -> StopPlan {
        StopPlan {
            ctrl_alt_del_grace: Some(MS * 30),
            term_grace: Some(MS * 30),
        }
    }

    #[actix::test]
    async fn guest_that_obeys_ctrl_alt_del() {
        let fake = FakeProcesses::new();
        let (p, rx) = spawn(&fake);
        let pid = p.pid();
        let f2 = fake.clone();
        let out = run_ladder(&rungs(&plan(), true), &*p, rx, || async move {
            f2.exit(pid, ExitStatus::Code(0));
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(
            (out.rung, out.status),
            (StopRung::CtrlAltDel, ExitStatus::Code(0))
        );
        assert!(fake.signals().is_empty());
    }

    #[actix::test]
    async fn ignored_ctrl_alt_del_escalates_to_sigterm() {
        let fake = FakeProcesses::new();
        let (p, rx) = spawn(&fake);
        let out = run_ladder(&rungs(&plan(), true), &*p, rx, || async { Ok(()) })
            .await
            .unwrap();
        assert_eq!(out.rung, StopRung::Sigterm);
        assert_eq!(out.status, ExitStatus::Signal(libc::SIGTERM));
        assert_eq!(fake.signals(), vec![Signal::Term]);
    }

    #[actix::test]
    async fn ignored_sigterm_escalates_to_sigkill() {
        let fake = FakeProcesses::new();
        fake.ignore(Signal::Term);
        let (p, rx) = spawn(&fake);
        let out = run_ladder(&rungs(&plan(), true), &*p, rx, || async { Ok(()) })
            .await
            .unwrap();
        assert_eq!(out.rung, StopRung::Sigkill);
        assert_eq!(fake.signals(), vec![Signal::Term, Signal::Kill]);
    }

    #[actix::test]
    async fn refused_ctrl_alt_del_is_noted_and_skipped() {
        let fake = FakeProcesses::new();
        let (p, rx) = spawn(&fake);
        let out = run_ladder(&rungs(&plan(), true), &*p, rx, || async {
            Err(FirecrackerError::InvalidConfig {
                what: "test",
                detail: "refused".into(),
            })
        })
        .await
        .unwrap();
        assert_eq!(out.rung, StopRung::Sigterm);
        assert!(out.notes[0].starts_with("Ctrl+Alt+Del"));
    }

    #[actix::test]
    async fn already_exited_sends_nothing() {
        let fake = FakeProcesses::new();
        let (p, mut rx) = spawn(&fake);
        fake.exit(p.pid(), ExitStatus::Code(3));
        rx.wait_for(Option::is_some).await.unwrap();
        let out = run_ladder(&rungs(&plan(), true), &*p, rx, || async { Ok(()) })
            .await
            .unwrap();
        assert_eq!(
            (out.rung, out.status),
            (StopRung::AlreadyExited, ExitStatus::Code(3))
        );
        assert!(fake.signals().is_empty());
    }

    #[actix::test]
    async fn kill_goes_straight_to_sigkill() {
        let fake = FakeProcesses::new();
        let (p, rx) = spawn(&fake);
        let out = run_ladder(&rungs(&StopPlan::KILL, true), &*p, rx, || async { Ok(()) })
            .await
            .unwrap();
        assert_eq!(out.rung, StopRung::Sigkill);
        assert_eq!(fake.signals(), vec![Signal::Kill]);
    }
}
