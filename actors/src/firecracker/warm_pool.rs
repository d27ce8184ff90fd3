//! Warm jailed VMMs: Firecracker started by the jailer ahead of any create, idle on its API
//! socket, each in its own jail under its own uid ([`WarmMember`]). A jailed create takes one
//! instead of running the jailer (see `FirecrackerActor`'s take in `jailed.rs`), which moves
//! the jailer's own work (copying the binary, the first cgroup attach, `unshare`,
//! `pivot_root`, exec) off the create path; it does not make that work faster.
//!
//! A member is what a fresh jailed spawn makes, minus the VM's files and limits: the same
//! jail id (its uid), the same jailer arguments but the limits of [`JailLimits::for_warm`],
//! so the jailer creates every cgroup and a take only writes the VM's values into them. Its
//! console FIFO is `<run base>/.warm/<uid>.fifo` (the VMM holds it as its stdio): on the run
//! directories' filesystem, so a take's rename into the VM's run directory (where the console
//! capture and an adoption after a restart find it) never crosses filesystems, as it would
//! from the jail (the chroot base is usually on disk, the run base on tmpfs: `EXDEV`).
//!
//! Nothing records a member: after a crash, `Open`'s sweep finds its jail (an id no VM holds),
//! kills its VMM (identity checked) and removes the jail and cgroups, and empties `.warm`;
//! its uid was never recorded, so it is free.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hearth_proto::firecracker::LogLevel;

use super::console::ensure_fifo;
use super::jailed::{find_jailed_vmm, JailerRun};
use super::jailer::{CgroupVersion, JailLayout, JailLimits, JailerArgs};
use super::FirecrackerError;
use crate::host::jails::{JailError, JailPlan, Jails};
use crate::host::processes::{Process, Processes, Signal, SpawnSpec};

/// The directory of the members' console FIFOs, under the run base. Never a run directory:
/// a VM id cannot start with a dot.
pub const FIFO_DIR: &str = ".warm";

/// The console FIFO of member `uid` in `fifo_dir` ([`FIFO_DIR`] under the run base).
pub fn member_fifo(fifo_dir: &Path, uid: u32) -> PathBuf {
    fifo_dir.join(format!("{uid}.fifo"))
}

/// Empties `fifo_dir` of member FIFOs (at `Open`, before any member starts), then removes it
/// if nothing else is in it: answers the FIFOs removed. A missing directory is empty.
pub fn sweep_fifos(fifo_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(fifo_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other?,
    };
    let mut removed = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "fifo") {
            remove_fifo(&path)?;
            removed.push(path);
        }
    }
    remove_fifo_dir(fifo_dir);
    Ok(removed)
}

/// Removes `fifo_dir` if it is empty (at `Close`, once the members are discarded); a
/// directory still holding something is left, and so is any error (the next sweep retries).
pub fn remove_fifo_dir(fifo_dir: &Path) {
    let _ = std::fs::remove_dir(fifo_dir);
}

fn remove_fifo(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// How long a discarded member's VMM has to exit after SIGKILL before its jail is removed
/// anyway (the cgroups of a VMM still exiting are then left for the next sweep).
const KILL_WAIT: Duration = Duration::from_secs(2);

/// How to start members: the settings of a fresh jailed spawn that do not depend on a VM.
#[derive(Clone)]
pub struct MemberSpec {
    /// The jailer binary.
    pub jailer: PathBuf,
    /// The Firecracker binary (`--exec-file`).
    pub exec_file: PathBuf,
    /// The host side of jails.
    pub jails: Arc<dyn Jails>,
    /// The process backend.
    pub processes: Arc<dyn Processes>,
    /// Where members' console FIFOs go: [`FIFO_DIR`] under the run base.
    pub fifo_dir: PathBuf,
    /// The host's cgroup hierarchy.
    pub cgroup_version: CgroupVersion,
    /// The limits members start with ([`JailLimits::for_warm`]).
    pub limits: JailLimits,
    /// Firecracker's log level (on the console, as for a fresh spawn).
    pub log_level: LogLevel,
    /// How long the jailer, then its VMM, may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for MemberSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberSpec")
            .field("jailer", &self.jailer)
            .field("exec_file", &self.exec_file)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// One idle jailed VMM. Dropped without [`WarmMember::discard`] or a take, its VMM is
/// killed with `SIGKILL` (its jail is left for the next prepare of that id or `Open`'s sweep).
pub struct WarmMember {
    uid: u32,
    layout: JailLayout,
    fifo: PathBuf,
    process: Option<Arc<dyn Process>>,
    start_time: u64,
    jails: Arc<dyn Jails>,
}

impl std::fmt::Debug for WarmMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmMember")
            .field("uid", &self.uid)
            .field("pid", &self.process.as_ref().map(|p| p.pid()))
            .finish_non_exhaustive()
    }
}

impl WarmMember {
    /// The member's uid (and gid): its jail id, and the lease of the VM that takes it.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Its jail.
    pub fn layout(&self) -> &JailLayout {
        &self.layout
    }

    /// Its VMM's pid.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.pid())
    }

    /// Its VMM's start time (as read at its spawn).
    pub fn start_time(&self) -> u64 {
        self.start_time
    }

    /// Its console FIFO (the VMM's stdio), on the run directories' filesystem.
    pub fn fifo(&self) -> &Path {
        &self.fifo
    }

    /// Whether its VMM has exited.
    pub fn has_exited(&self) -> bool {
        self.process.as_ref().is_none_or(|p| p.has_exited())
    }

    /// Hands the VMM over to the VM taking it: its pidfd and start time. The member is
    /// spent (its drop kills nothing).
    pub(super) fn take_process(mut self) -> Option<(Arc<dyn Process>, u64)> {
        let start = self.start_time;
        self.process.take().map(|p| (p, start))
    }

    /// Kills the VMM (through its pidfd), waits for it to exit (at most 2 s), then removes
    /// its FIFO (if no take moved it), the jail and its cgroups.
    pub async fn discard(mut self) -> Result<(), JailError> {
        if let Some(p) = self.kill() {
            let _ = tokio::time::timeout(KILL_WAIT, p.wait()).await;
        }
        // A FIFO left behind is harmless (the next start of this uid replaces it) and swept.
        let _ = remove_fifo(&self.fifo);
        self.jails.remove(&self.layout)
    }
}

impl WarmMember {
    /// Gives the member up at once, for a VM that needs its uid now: `SIGKILL` to its VMM
    /// (not waited for), then its FIFO, jail and cgroups removed. A removal failing while
    /// the VMM is still exiting (its cgroups busy) is answered; the jail of that uid is
    /// removed again by the next prepare of that id (every jailed spawn's first step).
    pub fn discard_now(mut self) -> Result<(), JailError> {
        self.kill();
        let _ = remove_fifo(&self.fifo);
        self.jails.remove(&self.layout)
    }
}

impl WarmMember {
    /// Takes the VMM from the member and sends it `SIGKILL` (through its pidfd) if it still
    /// runs; answers it, to wait for, when it did.
    fn kill(&mut self) -> Option<Arc<dyn Process>> {
        let p = self.process.take().filter(|p| !p.has_exited())?;
        let _ = p.signal(Signal::Kill);
        Some(p)
    }
}

impl Drop for WarmMember {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The synchronous part of starting member `uid` in `layout`: an empty jail (a stale one of
/// that id removed first), its console FIFO, and the jailer started on it. Answers the
/// jailer; on failure the jail is removed again.
pub fn start_member(
    spec: &MemberSpec,
    layout: &JailLayout,
    uid: u32,
) -> Result<Arc<dyn Process>, FirecrackerError> {
    let jail_err = |source| FirecrackerError::Jail { source };
    spec.jails
        .prepare(&JailPlan {
            layout: layout.clone(),
            uid,
            gid: uid,
            files: Vec::new(),
        })
        .map_err(jail_err)?;
    let fifo = member_fifo(&spec.fifo_dir, uid);
    let started = (|| {
        let dir = layout.jail_dir();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FirecrackerError::RunDir { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        std::fs::create_dir_all(&spec.fifo_dir).map_err(io(&spec.fifo_dir))?;
        ensure_fifo(&fifo).map_err(io(&fifo))?;
        let args = JailerArgs::for_vm(
            layout,
            &spec.exec_file,
            uid,
            uid,
            spec.cgroup_version,
            spec.limits,
            spec.log_level,
        );
        Ok::<_, FirecrackerError>(spec.processes.spawn(&SpawnSpec {
            program: spec.jailer.clone(),
            args: args.args(),
            cwd: dir,
            stdio: fifo.clone(),
        })?)
    })();
    started.inspect_err(|_| {
        let _ = remove_fifo(&fifo);
        let _ = spec.jails.remove(layout);
    })
}

/// After [`start_member`]: the jailer's exit, the VMM's pid and identity, exactly as for a
/// fresh jailed spawn. On failure the VMM found (if any) is killed and the jail removed.
pub async fn finish_member(
    spec: MemberSpec,
    layout: JailLayout,
    uid: u32,
    jailer: Arc<dyn Process>,
    log: slog::Logger,
) -> Result<WarmMember, FirecrackerError> {
    let fifo = member_fifo(&spec.fifo_dir, uid);
    let run = JailerRun {
        jailer,
        jails: spec.jails.clone(),
        layout: layout.clone(),
        uid,
    };
    let found = find_jailed_vmm(run, log, spec.processes.clone(), spec.timeout, fifo.clone()).await;
    match found {
        Ok((process, start_time)) => Ok(WarmMember {
            uid,
            layout,
            fifo,
            process: Some(process),
            start_time,
            jails: spec.jails,
        }),
        Err(e) => {
            let _ = remove_fifo(&fifo);
            let _ = spec.jails.remove(&layout);
            Err(e)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::firecracker::jailer::LimitPolicy;
    use crate::host::jails::FakeJails;
    use crate::host::processes::fake::{FakeCall, FakeProcesses};
    use crate::host::processes::{ExitStatus, ProcessIdentity};
    use std::path::Path;

    fn discard() -> slog::Logger {
        slog::Logger::root(slog::Discard, slog::o!())
    }

    /// Live pids whose root is `/`: a fake VMM needs one, since the jail's root is compared
    /// with `/proc/<pid>/root` for real (the test's jail roots are symlinks to `/`).
    pub(crate) fn real_pids(n: usize) -> Vec<u32> {
        let mut pids: Vec<u32> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|pid: &u32| {
                std::fs::canonicalize(format!("/proc/{pid}/root"))
                    .is_ok_and(|r| r == Path::new("/"))
            })
            .collect();
        pids.sort_unstable();
        assert!(pids.len() >= n, "not enough processes rooted at /");
        pids.truncate(n);
        pids
    }

    /// Makes jail `uid`'s root a symlink to `/` so a fake VMM (a real pid rooted at `/`)
    /// passes the root check.
    pub(crate) fn root_at_slash(layout: &JailLayout) {
        std::fs::create_dir_all(layout.jail_dir()).unwrap();
        let _ = std::fs::remove_file(layout.root());
        std::os::unix::fs::symlink("/", layout.root()).unwrap();
    }

    /// Plays the jailer of `layout`: the VMM `pid` with its jailed command line, the pid
    /// file, then the jailer's exit 0.
    pub(crate) fn play_jailer(
        fake: &FakeProcesses,
        jails: &FakeJails,
        layout: &JailLayout,
        jailer_pid: u32,
        pid: u32,
    ) {
        fake.set_identity(
            pid,
            ProcessIdentity {
                start_time: 77,
                cmdline: [
                    "/firecracker",
                    "--id",
                    layout.id(),
                    "--api-sock",
                    "/run/api.sock",
                ]
                .map(String::from)
                .to_vec(),
            },
        );
        jails.write_pid(layout.id(), pid);
        fake.exit(jailer_pid, ExitStatus::Code(0));
    }

    fn spec(fake: &FakeProcesses, jails: Arc<FakeJails>, run_base: &Path) -> MemberSpec {
        MemberSpec {
            jailer: "/usr/bin/jailer".into(),
            exec_file: "/fc/firecracker".into(),
            fifo_dir: run_base.join(FIFO_DIR),
            jails,
            processes: Arc::new(fake.clone()),
            cgroup_version: CgroupVersion::V1,
            limits: JailLimits::for_warm(&LimitPolicy::default()),
            log_level: LogLevel::Warning,
            timeout: Duration::from_secs(5),
        }
    }

    #[actix::test]
    async fn a_member_is_the_jailed_vmm_and_discarding_it_kills_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeProcesses::new();
        let jails = Arc::new(FakeJails::new());
        let s = spec(&fake, jails.clone(), &dir.path().join("vms"));
        let layout = JailLayout::new(&dir.path().join("j"), &s.exec_file, "900001").unwrap();
        root_at_slash(&layout);
        let jailer = start_member(&s, &layout, 900_001).unwrap();
        // The jailer got the member's FIFO (in the run base, not the jail) as its stdio and
        // the warm (placeholder) limits.
        let FakeCall::Spawn(spawned) = fake.calls().remove(0) else {
            panic!("no spawn")
        };
        let fifo = dir.path().join("vms/.warm/900001.fifo");
        assert_eq!(spawned.stdio, fifo);
        assert!(is_fifo(&fifo));
        let args: Vec<String> = spawned
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(
            args.contains(&"memory.limit_in_bytes=67108864".to_string()),
            "{args:?}"
        );
        let pid = real_pids(1)[0];
        play_jailer(&fake, &jails, &layout, jailer.pid(), pid);
        let m = finish_member(s, layout.clone(), 900_001, jailer, discard())
            .await
            .unwrap();
        assert_eq!((m.uid(), m.pid()), (900_001, Some(pid)));
        assert!(!m.has_exited());
        assert_eq!(jails.jails(), ["900001"]);
        m.discard().await.unwrap();
        assert_eq!(fake.signals(), [Signal::Kill]);
        assert!(jails.jails().is_empty());
        assert!(!fifo.exists(), "the discard removed its FIFO");
    }

    fn is_fifo(p: &Path) -> bool {
        use std::os::unix::fs::FileTypeExt;
        std::fs::metadata(p).is_ok_and(|m| m.file_type().is_fifo())
    }

    #[test]
    fn the_sweep_empties_the_fifo_dir_and_tolerates_none() {
        let dir = tempfile::tempdir().unwrap();
        let fifos = dir.path().join(FIFO_DIR);
        assert!(sweep_fifos(&fifos).unwrap().is_empty());
        std::fs::create_dir_all(&fifos).unwrap();
        ensure_fifo(&member_fifo(&fifos, 7)).unwrap();
        std::fs::write(fifos.join("notes"), b"kept").unwrap();
        assert_eq!(sweep_fifos(&fifos).unwrap(), [fifos.join("7.fifo")]);
        assert!(fifos.join("notes").exists(), "only member FIFOs go");
        std::fs::remove_file(fifos.join("notes")).unwrap();
        ensure_fifo(&member_fifo(&fifos, 8)).unwrap();
        assert_eq!(sweep_fifos(&fifos).unwrap(), [fifos.join("8.fifo")]);
        assert!(!fifos.exists(), "an emptied directory goes too");
    }

    #[actix::test]
    async fn a_failed_jailer_leaves_no_member_and_no_jail() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeProcesses::new();
        let jails = Arc::new(FakeJails::new());
        let s = spec(&fake, jails.clone(), &dir.path().join("vms"));
        let layout = JailLayout::new(&dir.path().join("j"), &s.exec_file, "900001").unwrap();
        let jailer = start_member(&s, &layout, 900_001).unwrap();
        fake.exit(jailer.pid(), ExitStatus::Code(1));
        let err = finish_member(s, layout, 900_001, jailer, discard())
            .await
            .unwrap_err();
        assert!(
            matches!(err, FirecrackerError::ExitedEarly { .. }),
            "{err:?}"
        );
        assert!(jails.jails().is_empty());
        assert!(!dir.path().join("vms/.warm/900001.fifo").exists());
        assert!(fake.signals().is_empty(), "no VMM to kill");
    }

    #[actix::test]
    async fn a_failed_prepare_or_spawn_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeProcesses::new();
        let jails = Arc::new(FakeJails::new());
        let s = spec(&fake, jails.clone(), &dir.path().join("vms"));
        let layout = JailLayout::new(&dir.path().join("j"), &s.exec_file, "900001").unwrap();
        jails.fail_next("prepare");
        assert!(start_member(&s, &layout, 900_001).is_err());
        fake.fail_spawn("no jailer");
        assert!(start_member(&s, &layout, 900_001).is_err());
        assert!(jails.jails().is_empty());
    }

    #[test]
    fn dropping_an_unused_member_kills_its_vmm() {
        let fake = FakeProcesses::new();
        let pid = real_pids(1)[0];
        fake.set_identity(
            pid,
            ProcessIdentity {
                start_time: 1,
                cmdline: vec![],
            },
        );
        let process = fake.open(pid).unwrap();
        let layout =
            JailLayout::new(Path::new("/srv/j"), Path::new("/fc/firecracker"), "900001").unwrap();
        drop(WarmMember {
            uid: 900_001,
            layout,
            fifo: PathBuf::from("/srv/j/900001.fifo"),
            process: Some(process),
            start_time: 1,
            jails: Arc::new(FakeJails::new()),
        });
        assert_eq!(fake.signals(), [Signal::Kill]);
    }
}
