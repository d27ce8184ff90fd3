//! The agent's accept loop: vsock in a guest, a Unix socket for local tests; one thread per
//! connection. Shared by the plain agent and init (which runs it on a thread of its own).

use std::io;
use std::os::unix::net::UnixListener;
use std::sync::Arc;

use crate::{serve_connection, Conn, Listen, Table};

/// Binds `listen` and serves connections until accepting fails for good (never, normally).
///
/// # Errors
///
/// Binding failed (or a stale Unix socket could not be removed), with the address in the
/// message.
pub fn serve_forever(listen: &Listen, table: &Arc<Table>) -> io::Result<()> {
    let ctx = |what: String| move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    match listen {
        Listen::Vsock { port } => {
            let listener = vsock::VsockListener::bind_with_cid_port(vsock::VMADDR_CID_ANY, *port)
                .map_err(ctx(format!("Binding vsock port {port}")))?;
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
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ctx(format!("Removing {}", path.display()))(e)),
            }
            let listener =
                UnixListener::bind(path).map_err(ctx(format!("Binding {}", path.display())))?;
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

fn spawn_serve<S: Conn>(stream: S, table: Arc<Table>) {
    std::thread::spawn(move || {
        if let Err(e) = serve_connection(stream, &table) {
            eprintln!("hearth-agent: connection ended: {e}");
        }
    });
}
