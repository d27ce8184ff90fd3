//! hearth-agent: the guest agent binary. See the library docs and `docs/agent.md`.

use std::sync::Arc;

use hearth_agent::freeze::SimFreezeFile;
use hearth_agent::net::identity::SimIdentityFile;
use hearth_agent::{parse_args, Table};

fn main() -> anyhow::Result<()> {
    let mut raw = std::env::args();
    let argv0 = raw.next().unwrap_or_default();
    let pid = std::process::id();
    if hearth_proto::init::runs_as_init(&argv0, pid) {
        if pid != 1 {
            // Init mounts, configures interfaces, kills every process and reboots: never on
            // a machine it was merely started on by name.
            eprintln!(
                "{argv0}: hearth-init must run as PID 1 (the guest's init); it is pid {pid}, refusing"
            );
            std::process::exit(2);
        }
        hearth_agent::init::run(raw.collect());
    }
    let args = match parse_args(raw) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    // A peer that vanishes mid-write must not kill the agent.
    // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    ensure_std_fds();
    // Orphans of session processes become ours, as they would if we ran as PID 1: the reaper
    // reaps them, and this path is exercised outside a guest too.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let mut table = match &args.sim_identity_file {
        Some(path) => Table::with_identity(Box::new(SimIdentityFile { path: path.clone() })),
        None => Table::new(),
    };
    if let Some(path) = &args.sim_freeze_file {
        table = table.with_freeze_backend(Box::new(SimFreezeFile::new(path.clone())));
    }
    let table = Arc::new(table);
    hearth_agent::listen::serve_forever(&args.listen, &table)?;
    Ok(())
}

/// Fills any of fds 0..=2 that is closed (an init may start the agent so) with /dev/null, or a
/// pipe where there is no /dev/null, so pipes made for sessions never land there.
fn ensure_std_fds() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries; open and pipe return new fds we deliberately leak.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) < 0
                && libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) < 0
            {
                let mut p = [0; 2];
                libc::pipe(p.as_mut_ptr());
            }
        }
    }
}
