//! hearth-agent: the guest agent binary. See the library docs and `docs/agent.md`.

use std::os::unix::net::UnixListener;

use anyhow::Context;
use hearth_agent::{parse_args, serve_connection, Listen};

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
                    Ok(stream) => spawn_serve(stream),
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
                    Ok(stream) => spawn_serve(stream),
                    Err(e) => eprintln!("hearth-agent: accept failed: {e}"),
                }
            }
        }
    }
    Ok(())
}

fn spawn_serve<S: std::io::Read + std::io::Write + Send + 'static>(stream: S) {
    std::thread::spawn(move || {
        if let Err(e) = serve_connection(stream) {
            eprintln!("hearth-agent: connection ended: {e}");
        }
    });
}
