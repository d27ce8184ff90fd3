//! The harness for privileged tests: private network namespaces, veth links between them,
//! and the root check that skips loudly, or fails under `HEARTH_REQUIRE_PRIVILEGED=1`.
//!
//! Network namespaces belong to threads, so [`NetNs::run`] runs a closure on a fresh thread that
//! has entered the namespace; start the actix system (a current-thread runtime) inside that
//! closure and everything it spawns, threads and child processes, lives in the namespace too.

use std::fs::File;
use std::os::fd::AsFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// True when the test may touch the kernel (running as root). Otherwise prints a loud SKIP
/// line and returns false, or panics when `HEARTH_REQUIRE_PRIVILEGED=1` (CI), so privileged
/// tests can never skip silently there.
pub fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("HEARTH_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
        "{test}: needs root, and HEARTH_REQUIRE_PRIVILEGED=1 forbids skipping"
    );
    crate::skip!(
        "SKIP {test}: needs root (set HEARTH_REQUIRE_PRIVILEGED=1 to make this a failure)"
    );
    false
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A named network namespace (`ip netns add`), deleted when dropped, also on panic.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a fresh namespace named `<prefix>-<pid>-<n>` with loopback up.
    pub fn new(prefix: &str) -> Self {
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = NetNs { name };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on a new thread inside this namespace and returns its result; a panic in `f`
    /// is resumed on the caller's thread.
    pub fn run<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            let handle = s.spawn(move || {
                let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {path}: {e}"));
                f()
            });
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Runs a future on an actix system (current-thread runtime) inside this namespace.
    pub fn block_on<F, Fut, R>(&self, f: F) -> R
    where
        F: FnOnce() -> Fut + Send,
        Fut: std::future::Future<Output = R>,
        R: Send,
    {
        self.run(|| actix::System::new().block_on(f()))
    }

    /// Runs a command inside the namespace (`ip netns exec`).
    pub fn exec(&self, argv: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .output()
            .unwrap_or_else(|e| panic!("spawn {argv:?} in {}: {e}", self.name))
    }

    /// Runs a command inside the namespace and panics with its stderr when it fails.
    pub fn exec_ok(&self, argv: &[&str]) -> String {
        let out = self.exec(argv);
        assert!(
            out.status.success(),
            "{argv:?} in {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace destroys every interface in it; iptables state goes with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Connects two namespaces with a veth pair and gives each end an address (CIDR notation).
pub fn veth(a: &NetNs, a_if: &str, a_addr: &str, b: &NetNs, b_if: &str, b_addr: &str) {
    a.exec_ok(&[
        "ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ]);
    a.exec_ok(&["ip", "addr", "add", a_addr, "dev", a_if]);
    a.exec_ok(&["ip", "link", "set", a_if, "up"]);
    b.exec_ok(&["ip", "addr", "add", b_addr, "dev", b_if]);
    b.exec_ok(&["ip", "link", "set", b_if, "up"]);
}

/// A logger for tests: terminal format to stderr, shown by the test runner on failure.
pub fn test_logger() -> slog::Logger {
    use slog::Drain;
    let decorator = slog_term::PlainSyncDecorator::new(slog_term::TestStdoutWriter);
    let drain = slog_term::FullFormat::new(decorator).build().fuse();
    slog::Logger::root(drain, slog::o!())
}

fn run_ok(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
