//! Helpers for tests and examples that run `firecracker-sim` under `FirecrackerActor`:
//! locating the simulator binary, wrapping it with per-VM knobs, and (feature `actors`)
//! collecting VM events.
//!
//! The simulator is found at `$HEARTH_FC_SIM` if set, else next to the running test or example
//! binary (`target/<profile>/firecracker-sim`, two levels above `target/<profile>/deps/..` or
//! one above `target/<profile>/examples/..`). Build it first with
//! `cargo build -p firecracker-sim` (add `--release` for release-profile runs).
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[cfg(feature = "actors")]
pub use sink::{event_sink, EventSink};

/// The path of the `firecracker-sim` binary; panics with instructions when it is missing.
pub fn sim_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("HEARTH_FC_SIM") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if matches!(
        dir.file_name().and_then(|n| n.to_str()),
        Some("deps" | "examples")
    ) {
        dir.pop();
    }
    let sim = dir.join("firecracker-sim");
    assert!(
        sim.exists(),
        "{} not found: run `cargo build -p firecracker-sim` (with --release for release runs) \
         or set HEARTH_FC_SIM",
        sim.display()
    );
    sim
}

/// The `hearth-agent` binary beside [`sim_binary`] (debug or release, as the simulator is),
/// built first with `cargo build -p hearth-agent`, so a test never runs a stale agent. For
/// `FC_SIM_AGENT_BIN` and the tests that run the real agent.
///
/// # Panics
///
/// When the build fails or leaves no binary (a test fixture: failing loudly is its job).
#[must_use]
pub fn agent_binary() -> PathBuf {
    // Built once per test binary: a no-op `cargo build` still costs a few hundred ms.
    static AGENT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    AGENT.get_or_init(build_agent).clone()
}

fn build_agent() -> PathBuf {
    let sim = sim_binary();
    #[expect(
        clippy::disallowed_methods,
        reason = "test support builds the agent with cargo"
    )]
    let mut cmd = std::process::Command::new(env!("CARGO"));
    cmd.args(["build", "-q", "-p", "hearth-agent"]);
    if sim.components().any(|c| c.as_os_str() == "release") {
        cmd.arg("--release");
    }
    assert!(
        cmd.status().expect("running cargo").success(),
        "building hearth-agent failed"
    );
    let bin = sim.with_file_name("hearth-agent");
    assert!(bin.exists(), "{} is missing", bin.display());
    bin
}

/// The static `hearth-agent` (`scripts/build-agent-static.sh`, built once per test binary), or
/// `HEARTH_STATIC_AGENT` when set: what a guest root filesystem gets as `/sbin/hearth-init`.
///
/// # Panics
///
/// When the build fails (a test fixture: failing loudly is its job).
#[must_use]
pub fn static_agent_binary() -> PathBuf {
    static AGENT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    AGENT
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("HEARTH_STATIC_AGENT") {
                return PathBuf::from(p);
            }
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-agent-static.sh");
            #[expect(
                clippy::disallowed_methods,
                reason = "test support builds the static agent with its script"
            )]
            let out = std::process::Command::new(script)
                .stderr(std::process::Stdio::inherit())
                .output()
                .expect("running scripts/build-agent-static.sh");
            assert!(out.status.success(), "the static agent build failed");
            let stdout = String::from_utf8(out.stdout).expect("a path");
            PathBuf::from(
                stdout
                    .lines()
                    .last()
                    .expect("the script prints a path")
                    .trim(),
            )
        })
        .clone()
}

/// Writes an executable wrapper `dir/<name>` that sets `env` (the simulator's `FC_SIM_*`
/// knobs) and execs the simulator, optionally with SIGTERM ignored (inherited across exec).
/// Same pid, no extra process: what the actor spawns is the simulator itself.
pub fn sim_wrapper(dir: &Path, name: &str, env: &[(&str, &str)], ignore_sigterm: bool) -> PathBuf {
    let mut script = String::from("#!/bin/sh\n");
    if ignore_sigterm {
        script.push_str("trap '' TERM\n");
    }
    for (k, v) in env {
        script.push_str(&format!("export {k}='{v}'\n"));
    }
    script.push_str(&format!("exec '{}' \"$@\"\n", sim_binary().display()));
    let path = dir.join(name);
    write_executable(&path, &script);
    path
}

/// Writes an executable file that may be run at once. Not written by this process: a test
/// thread forking a child at the moment this process held the file open for writing would
/// pass that descriptor on until the child's exec, and running the file meanwhile fails with
/// ETXTBSY ("Text file busy", seen in CI). `cp` holds the only writer and has exited.
pub fn write_executable(path: &Path, contents: &str) {
    let mut draft = path.as_os_str().to_owned();
    draft.push(".draft");
    std::fs::write(&draft, contents).expect("write draft");
    let copied = std::process::Command::new("cp")
        .arg(&draft)
        .arg(path)
        .status()
        .expect("run cp");
    assert!(copied.success(), "cp to {} failed", path.display());
    std::fs::remove_file(&draft).expect("remove draft");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// The event sink, which needs `hearth-actors`.
#[cfg(feature = "actors")]
mod sink {
    use actix::{Actor, Context, Handler};
    use hearth_actors::firecracker::VmProcessEvent;
    use tokio::sync::mpsc;

    /// An actor that forwards `VmProcessEvent`s into a channel.
    pub struct EventSink(pub mpsc::UnboundedSender<VmProcessEvent>);

    impl Actor for EventSink {
        type Context = Context<Self>;
    }

    impl Handler<VmProcessEvent> for EventSink {
        type Result = ();
        fn handle(&mut self, ev: VmProcessEvent, _: &mut Context<Self>) {
            let _ = self.0.send(ev);
        }
    }

    /// A started sink and the receiving end of its events.
    pub fn event_sink() -> (
        actix::Recipient<VmProcessEvent>,
        mpsc::UnboundedReceiver<VmProcessEvent>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        (EventSink(tx).start().recipient(), rx)
    }
}
