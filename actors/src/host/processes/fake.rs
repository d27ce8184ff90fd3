//! A recording fake process backend: processes are records whose reaction to each signal is
//! scripted, and whose exit can be triggered by the test.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::watch;

use super::{ExitStatus, Process, ProcessError, ProcessIdentity, Processes, Signal, SpawnSpec};

/// One call recorded by the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeCall {
    /// `spawn(spec)`.
    Spawn(SpawnSpec),
    /// `open(pid)`.
    Open(u32),
    /// A signal sent to `pid`.
    Signal {
        /// The target.
        pid: u32,
        /// The signal.
        signal: Signal,
    },
    /// `version_output(program)`.
    Version(std::path::PathBuf),
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<FakeCall>,
    next_pid: u32,
    identities: HashMap<u32, ProcessIdentity>,
    /// What each signal does to newly spawned processes; a missing entry = ignored.
    reactions: HashMap<Signal, ExitStatus>,
    version: Option<String>,
    fail_spawn: Option<String>,
    processes: HashMap<u32, watch::Sender<Option<ExitStatus>>>,
    /// `uids(pid)`; a registered process without an entry runs as root.
    uids: HashMap<u32, u32>,
    /// A process that appears when another is sent SIGKILL (a child forked just before).
    appear_on_kill: HashMap<u32, (u32, ProcessIdentity)>,
    /// Processes that have exited but are not reaped: listed, and exited once opened.
    zombies: std::collections::HashSet<u32>,
}

/// The fake backend; clones share state.
#[derive(Debug, Clone)]
pub struct FakeProcesses {
    state: Arc<Mutex<State>>,
}

impl Default for FakeProcesses {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeProcesses {
    /// Processes die on SIGTERM (signal 15) and SIGKILL (signal 9); pids start at 1000.
    pub fn new() -> Self {
        let mut reactions = HashMap::new();
        reactions.insert(Signal::Term, ExitStatus::Signal(libc::SIGTERM));
        reactions.insert(Signal::Kill, ExitStatus::Signal(libc::SIGKILL));
        FakeProcesses {
            state: Arc::new(Mutex::new(State {
                next_pid: 1000,
                reactions,
                version: Some("Firecracker v1.16.1\n\n".into()),
                ..State::default()
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes `signal` do nothing (e.g. a VMM that ignores SIGTERM).
    pub fn ignore(&self, signal: Signal) {
        self.lock().reactions.remove(&signal);
    }

    /// Sets the `--version` output, or makes it fail with `None`.
    pub fn set_version_output(&self, out: Option<&str>) {
        self.lock().version = out.map(str::to_string);
    }

    /// Makes the next spawns fail.
    pub fn fail_spawn(&self, why: &str) {
        self.lock().fail_spawn = Some(why.into());
    }

    /// Registers what /proc says about `pid`.
    pub fn set_identity(&self, pid: u32, identity: ProcessIdentity) {
        self.lock().identities.insert(pid, identity);
    }

    /// Makes `pid` run as `uid` (all four of its user ids).
    pub fn set_uid(&self, pid: u32, uid: u32) {
        self.lock().uids.insert(pid, uid);
    }

    /// Makes `pid` a zombie: /proc still shows it, and a handle opened on it has exited.
    pub fn set_zombie(&self, pid: u32) {
        self.lock().zombies.insert(pid);
    }

    /// Makes process `child` (with `identity`) appear when `pid` is sent SIGKILL: a child it
    /// forked just before dying, which a single scan of the process list would miss.
    pub fn appear_on_kill(&self, pid: u32, child: u32, identity: ProcessIdentity) {
        self.lock().appear_on_kill.insert(pid, (child, identity));
    }

    /// Makes `pid` exit now with `status`.
    pub fn exit(&self, pid: u32, status: ExitStatus) {
        if let Some(tx) = self.lock().processes.get(&pid) {
            tx.send_replace(Some(status));
        }
    }

    /// Everything called so far.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.lock().calls.clone()
    }

    /// The signals sent so far, in order.
    pub fn signals(&self) -> Vec<Signal> {
        self.lock()
            .calls
            .iter()
            .filter_map(|c| match c {
                FakeCall::Signal { signal, .. } => Some(*signal),
                _ => None,
            })
            .collect()
    }

    /// The pids sent SIGKILL so far, in order.
    pub fn killed(&self) -> Vec<u32> {
        self.lock()
            .calls
            .iter()
            .filter_map(|c| match c {
                FakeCall::Signal {
                    pid,
                    signal: Signal::Kill,
                } => Some(*pid),
                _ => None,
            })
            .collect()
    }

    fn new_process(&self, pid: u32, child: bool) -> Arc<dyn Process> {
        let (tx, rx) = watch::channel(None);
        self.lock().processes.insert(pid, tx);
        Arc::new(FakeProcess {
            pid,
            child,
            exit: rx,
            backend: self.clone(),
        })
    }
}

/// A fake process.
#[derive(Debug)]
pub struct FakeProcess {
    pid: u32,
    child: bool,
    exit: watch::Receiver<Option<ExitStatus>>,
    backend: FakeProcesses,
}

impl Process for FakeProcess {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn is_child(&self) -> bool {
        self.child
    }

    fn signal(&self, signal: Signal) -> Result<(), ProcessError> {
        let mut st = self.backend.lock();
        st.calls.push(FakeCall::Signal {
            pid: self.pid,
            signal,
        });
        if let Some(status) = st.reactions.get(&signal).copied() {
            if let Some(tx) = st.processes.get(&self.pid) {
                if tx.borrow().is_none() {
                    tx.send_replace(Some(status));
                }
            }
        }
        if signal == Signal::Kill {
            if let Some((child, identity)) = st.appear_on_kill.remove(&self.pid) {
                st.identities.insert(child, identity);
            }
        }
        Ok(())
    }

    fn wait(&self) -> BoxFuture<'static, Result<ExitStatus, ProcessError>> {
        let mut rx = self.exit.clone();
        let child = self.child;
        async move {
            let status = rx
                .wait_for(Option::is_some)
                .await
                .map_err(|_| ProcessError::Injected("fake process dropped".into()))?;
            let status = status.unwrap_or(ExitStatus::Unknown);
            Ok(if child { status } else { ExitStatus::Unknown })
        }
        .boxed()
    }

    fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }
}

impl Processes for FakeProcesses {
    fn spawn(&self, spec: &SpawnSpec) -> Result<Arc<dyn Process>, ProcessError> {
        let pid = {
            let mut st = self.lock();
            st.calls.push(FakeCall::Spawn(spec.clone()));
            if let Some(why) = st.fail_spawn.clone() {
                return Err(ProcessError::Injected(why));
            }
            st.next_pid += 1;
            let pid = st.next_pid;
            let mut cmdline = vec![spec.program.display().to_string()];
            cmdline.extend(spec.args.iter().map(|a| a.to_string_lossy().into_owned()));
            st.identities.insert(
                pid,
                ProcessIdentity {
                    start_time: u64::from(pid) * 10,
                    cmdline,
                },
            );
            pid
        };
        Ok(self.new_process(pid, true))
    }

    fn open(&self, pid: u32) -> Result<Arc<dyn Process>, ProcessError> {
        self.lock().calls.push(FakeCall::Open(pid));
        if !self.lock().identities.contains_key(&pid) {
            return Err(ProcessError::NoSuchProcess { pid });
        }
        let process = self.new_process(pid, false);
        if self.lock().zombies.contains(&pid) {
            self.exit(pid, ExitStatus::Unknown);
        }
        Ok(process)
    }

    fn identity(&self, pid: u32) -> Result<ProcessIdentity, ProcessError> {
        self.lock()
            .identities
            .get(&pid)
            .cloned()
            .ok_or(ProcessError::NoSuchProcess { pid })
    }

    fn list(&self) -> Result<Vec<u32>, ProcessError> {
        let st = self.lock();
        // Every process /proc would show: registered or spawned, and not exited (or a zombie).
        let mut pids: Vec<u32> = st
            .identities
            .keys()
            .copied()
            .filter(|pid| {
                st.zombies.contains(pid)
                    || st.processes.get(pid).is_none_or(|tx| tx.borrow().is_none())
            })
            .collect();
        pids.sort_unstable();
        Ok(pids)
    }

    fn uids(&self, pid: u32) -> Result<[u32; 4], ProcessError> {
        let st = self.lock();
        if !st.identities.contains_key(&pid) {
            return Err(ProcessError::NoSuchProcess { pid });
        }
        Ok([st.uids.get(&pid).copied().unwrap_or(0); 4])
    }

    fn version_output(&self, program: &Path) -> Result<String, ProcessError> {
        let mut st = self.lock();
        st.calls.push(FakeCall::Version(program.to_path_buf()));
        st.version.clone().ok_or_else(|| ProcessError::Version {
            program: program.to_path_buf(),
            detail: "exit status: 1".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix::test]
    async fn scripted_reactions() {
        let fake = FakeProcesses::new();
        fake.ignore(Signal::Term);
        let spec = SpawnSpec {
            program: "/fc".into(),
            args: vec!["--id".into(), "a".into()],
            cwd: "/".into(),
            stdio: "/dev/null".into(),
        };
        let p = fake.spawn(&spec).unwrap();
        assert_eq!(
            fake.identity(p.pid()).unwrap().cmdline,
            vec!["/fc", "--id", "a"]
        );
        p.signal(Signal::Term).unwrap();
        assert!(!p.has_exited());
        p.signal(Signal::Kill).unwrap();
        assert!(p.has_exited());
        assert_eq!(p.wait().await.unwrap(), ExitStatus::Signal(libc::SIGKILL));
        assert_eq!(fake.signals(), vec![Signal::Term, Signal::Kill]);
    }

    #[actix::test]
    async fn list_shows_registered_and_running_processes() {
        let fake = FakeProcesses::new();
        fake.set_identity(
            7,
            ProcessIdentity {
                start_time: 1,
                cmdline: vec!["/x".into()],
            },
        );
        let spec = SpawnSpec {
            program: "/fc".into(),
            args: vec![],
            cwd: "/".into(),
            stdio: "/dev/null".into(),
        };
        let a = fake.spawn(&spec).unwrap();
        let b = fake.spawn(&spec).unwrap();
        assert_eq!(fake.list().unwrap(), vec![7, a.pid(), b.pid()]);
        fake.exit(a.pid(), ExitStatus::Code(0));
        assert_eq!(fake.list().unwrap(), vec![7, b.pid()]);
    }
}
