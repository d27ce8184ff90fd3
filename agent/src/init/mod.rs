//! hearth-agent as the guest's init (PID 1), for images hearth builds
//! ([`hearth_proto::init`] is the contract with the host).
//!
//! In order: block the forwarded signals ([`signals`], before any thread exists), mount the
//! virtual file systems ([`mounts`]), give fds 0-2 the console when the kernel left them
//! closed, configure `lo` and the interface of the kernel `ip=` argument, `/etc/resolv.conf`
//! (the `ip=` DNS server, else the gateway: hearth's DNS listens there) and the hostname
//! (`hearth.hostname=`), start the agent's server on a thread, then run the command of
//! [`INIT_SPEC_PATH`] as a supervised child ([`child`]). Signals are forwarded to it
//! ([`signals::to_forward`]: Ctrl-Alt-Del's `SIGINT` becomes `SIGTERM`); every
//! process that ends is reaped by the agent's one reaper ([`crate::exec::reaper`]). When the
//! command exits, init prints [`exit_line`] on the console and powers off ([`shutdown`]).
//!
//! A missing or bad spec, an unknown user, or a network that cannot be configured is reported
//! on the console and init keeps serving the agent, so a user can still `exec` in to look;
//! `SIGTERM` or `SIGINT` (Ctrl-Alt-Del) then powers off. Every step that fails is reported and
//! the next one still runs: a PID 1 must neither exit nor stop half-way.

pub mod child;
pub mod mounts;
pub mod shutdown;
pub mod signals;
pub mod user;

use std::io::Write as _;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use hearth_proto::init::{
    cmdline_value, exit_line, parse_kernel_ip, ExitReport, InitSpec, HOSTNAME_ARG, INIT_SPEC_PATH,
    MAX_SPEC_BYTES,
};

use crate::exec::reaper::reaper;
use crate::net::iface;
use crate::{parse_args, Args, Listen, Table};

/// The longest kernel command line read.
const MAX_CMDLINE: u64 = 64 * 1024;

/// Writes one line on the console (init's stdout).
fn console_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Writes one `hearth-init: ` line on the console.
pub fn say(msg: &str) {
    console_line(&format!("{}{msg}", hearth_proto::init::CONSOLE_PREFIX));
}

/// Runs as the guest's init with these arguments (after argv\[0\]). Never returns.
pub fn run(args: Vec<String>) -> ! {
    let forwarded = signals::block();
    // A peer that vanishes mid-write must not kill PID 1.
    // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    for (target, outcome) in mounts::mount_all() {
        if let mounts::MountOutcome::Failed(e) = outcome {
            say(&format!("mounting {target} failed: {e}"));
        }
    }
    console_fds();
    let cmdline = read_bounded("/proc/cmdline", MAX_CMDLINE).unwrap_or_else(|e| {
        say(&format!("reading /proc/cmdline failed: {e}"));
        String::new()
    });
    configure_network(&cmdline, Path::new("/etc"));
    // Orphans are reparented to PID 1: the reaper must run even if no command ever starts.
    let _ = reaper();
    let table = Arc::new(Table::new());
    let listen = listen_args(args);
    let serving = std::thread::Builder::new()
        .name("listen".into())
        .spawn(move || {
            if let Err(e) = crate::listen::serve_forever(&listen.listen, &table) {
                say(&format!("the agent cannot serve: {e}"));
            }
        });
    if let Err(e) = serving {
        say(&format!("cannot start the agent's server: {e}"));
    }
    let report = match load_command(Path::new(INIT_SPEC_PATH), Path::new("/etc")) {
        Ok(prep) => supervise(&prep, forwarded),
        Err(e) => {
            say(&format!("{e}; serving the agent only (SIGTERM powers off)"));
            idle(forwarded);
            None
        }
    };
    if let Some(report) = report {
        console_line(&exit_line(report));
    }
    shutdown::power_off()
}

/// The agent's listening options from init's arguments; anything else on the kernel command
/// line that reached init is reported and ignored (the default vsock port is used).
fn listen_args(args: Vec<String>) -> Args {
    parse_args(args).unwrap_or_else(|e| {
        say(&format!(
            "ignoring init arguments: {}",
            e.lines().next().unwrap_or("")
        ));
        Args {
            listen: Listen::Vsock {
                port: hearth_proto::agent::DEFAULT_PORT,
            },
            sim_identity_file: None,
            sim_freeze_file: None,
        }
    })
}

fn read_bounded(path: &str, max: u64) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut s = String::new();
    std::fs::File::open(path)?
        .take(max)
        .read_to_string(&mut s)?;
    Ok(s)
}

/// Fills any closed fd of 0-2 with the console (the kernel opens it for init only when the
/// root has `/dev/console`, which exists once devtmpfs is mounted), else /dev/null.
fn console_fds() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries; open returns a new fd, the lowest free one.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) < 0
                && libc::open(c"/dev/console".as_ptr(), libc::O_RDWR | libc::O_NOCTTY) < 0
            {
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            }
        }
    }
}

/// `lo` up; the `ip=` interface, resolv.conf and the hostname from the kernel command line.
/// Failures are reported, never fatal.
pub fn configure_network(cmdline: &str, etc: &Path) {
    if let Err(e) = iface::loopback_up() {
        say(&format!("bringing lo up failed: {e}"));
    }
    match parse_kernel_ip(cmdline) {
        None => {}
        Some(Err(e)) => say(&format!("not configuring the network: {e}")),
        Some(Ok(ip)) => {
            let setup = iface::StaticIpv4 {
                device: ip.device.clone(),
                addr: ip.client,
                prefix_len: ip.prefix_len,
                gateway: ip.gateway,
                mac: None,
            };
            if let Err(e) = iface::apply(&setup) {
                say(&format!("configuring {} failed: {e}", ip.device));
            }
            if let Some(dns) = ip.dns.or(ip.gateway) {
                if let Err(e) = iface::write_resolv_conf(etc, dns) {
                    say(&format!("writing resolv.conf failed: {e}"));
                }
            }
        }
    }
    if let Some(name) = cmdline_value(cmdline, HOSTNAME_ARG) {
        if let Err(e) = iface::set_hostname(name, etc) {
            say(&format!("setting the hostname failed: {e}"));
        }
    }
}

/// Reads, validates and prepares the command.
///
/// # Errors
///
/// A message for the console: what is missing or wrong, naming the file.
pub fn load_command(spec_path: &Path, etc: &Path) -> Result<child::Prepared, String> {
    let shown = spec_path.display();
    let meta = std::fs::metadata(spec_path).map_err(|e| format!("no command: {shown}: {e}"))?;
    if meta.len() > MAX_SPEC_BYTES as u64 {
        return Err(format!(
            "{shown} is {} bytes, more than the {MAX_SPEC_BYTES} allowed",
            meta.len()
        ));
    }
    let bytes = read_bounded(&spec_path.to_string_lossy(), MAX_SPEC_BYTES as u64 + 1)
        .map_err(|e| format!("reading {shown} failed: {e}"))?;
    let spec = InitSpec::from_json(bytes.as_bytes()).map_err(|e| format!("{shown}: {e}"))?;
    child::prepare(&spec, etc).map_err(|e| format!("{shown}: {e}"))
}

/// The report for a raw wait status.
fn report(status: libc::c_int) -> ExitReport {
    if libc::WIFSIGNALED(status) {
        ExitReport::Signaled {
            signal: libc::WTERMSIG(status),
        }
    } else {
        ExitReport::Exited {
            code: libc::WEXITSTATUS(status),
        }
    }
}

/// Starts the command and forwards signals to it until it exits; `None` when it could not be
/// started (then init idles, serving the agent).
fn supervise(prep: &child::Prepared, forwarded: signals::Forwarded) -> Option<ExitReport> {
    let (tx, rx) = mpsc::channel();
    let pid = match child::spawn(
        prep,
        Box::new(move |status| {
            let _ = tx.send(status);
        }),
    ) {
        Ok(pid) => pid,
        Err(e) => {
            say(&format!(
                "cannot start the command: {e}; serving the agent only"
            ));
            idle(forwarded);
            return None;
        }
    };
    loop {
        if let Some(sig) = forwarded.wait(Duration::from_millis(100)) {
            // SAFETY: kill with a pid we started (not yet reaped: its status has not arrived).
            unsafe { libc::kill(pid, signals::to_forward(sig)) };
        }
        match rx.try_recv() {
            Ok(status) => return Some(report(status)),
            Err(mpsc::TryRecvError::Empty) => {}
            Err(mpsc::TryRecvError::Disconnected) => return None,
        }
    }
}

/// Serves the agent with no command, until `SIGTERM` or `SIGINT` asks to power off.
fn idle(forwarded: signals::Forwarded) {
    loop {
        if let Some(sig) = forwarded.wait(Duration::from_secs(3600)) {
            if sig == libc::SIGTERM || sig == libc::SIGINT {
                say("powering off");
                return;
            }
        }
    }
}
