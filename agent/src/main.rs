//! hearth-agent: the guest agent binary. See the library docs and `docs/agent.md`.

use std::os::unix::net::UnixListener;

use anyhow::Context;
use std::sync::Arc;

use hearth_agent::{parse_args, serve_connection, Conn, Listen, Table};

fn main() -> anyhow::Result<()> {
    let args = match parse_args(std::env::args().skip(1)) {
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
    let table = Arc::new(Table::new());
    match args.listen {
        Listen::Vsock { port } => {
            let listener = vsock::VsockListener::bind_with_cid_port(vsock::VMADDR_CID_ANY, port)
                .with_context(|| format!("Binding vsock port {port}"))?;
            eprintln!(
                "hearth-agent {} listening on vsock port {port}",
                env!("CARGO_PKG_VERSION")
            );
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => spawn_serve(stream, table.clone()),
                    Err(e) => eprintln!("hearth-agent: accept failed: {e}"),
                }
            }
        }
        Listen::Unix { path } => {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("Removing {}", path.display())),
            }
            let listener =
                UnixListener::bind(&path).with_context(|| format!("Binding {}", path.display()))?;
            eprintln!(
                "hearth-agent {} listening on {}",
                env!("CARGO_PKG_VERSION"),
                path.display()
            );
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => spawn_serve(stream, table.clone()),
                    Err(e) => eprintln!("hearth-agent: accept failed: {e}"),
                }
            }
        }
    }
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

fn spawn_serve<S: Conn>(stream: S, table: Arc<Table>) {
    std::thread::spawn(move || {
        if let Err(e) = serve_connection(stream, &table) {
            eprintln!("hearth-agent: connection ended: {e}");
        }
    });
}
