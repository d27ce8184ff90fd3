//! `hearthctl vm exec`: create a session (`POST /v1/vms/{name}/exec`), then follow it over the
//! attach WebSocket ([`super::ws`]) until its `Status`, streaming this process's stdin to it
//! and its output to this process's stdout and stderr.
//!
//! With a terminal ([`AttachOptions::raw`]) the local terminal is in raw mode for the
//! session and restored on every way out; SIGWINCH sends the new size. SIGINT, SIGTERM and
//! SIGHUP to hearthctl detach (the session keeps running in the guest; `vm exec kill` stops
//! it) and hearthctl exits with 128 + the signal.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::AsFd;

use futures::{SinkExt, StreamExt};
use hearth_proto::api_exec::{ExecCreate, ExecCreated, ExecInfo, ExecList, ExecSignal, Status};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use super::term::{window_size, RawMode};
use super::ws::{self, Incoming};
use super::{runtime, ApiPath, Client, ClientError, Method};

/// hearthctl's exit code when the session could not be run or followed (hearthd or the agent
/// failed, the connection broke, no status came): Docker's code for its own failures.
pub const EXIT_EXEC_FAILED: u8 = 125;

/// How a session is followed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttachOptions {
    /// Stream this process's stdin to the session, then close it at end of file.
    pub stdin: bool,
    /// The session runs on a terminal: forward this terminal's size changes.
    pub tty: bool,
    /// Put the local terminal (stdin) in raw mode for the session.
    pub raw: bool,
}

/// Why a session could not be followed to its end.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// hearthd refused, failed, or could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The local terminal could not be set up.
    #[error("Terminal setup failed: {0}")]
    Terminal(#[source] io::Error),
    /// Writing the session's output here failed (a closed pipe).
    #[error("Writing the output failed: {0}")]
    Output(#[source] io::Error),
    /// The connection ended without the session's status.
    #[error("Connection to hearthd ended before the session did (it may still run: vm exec ls)")]
    NoStatus,
    /// hearthctl got a signal and detached; the session keeps running.
    #[error("Detached on signal {0}; the session keeps running in the guest")]
    Signalled(i32),
}

impl ExecError {
    /// The exit code hearthctl ends with.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            ExecError::Signalled(s) => u8::try_from(128 + s).unwrap_or(EXIT_EXEC_FAILED),
            _ => EXIT_EXEC_FAILED,
        }
    }
}

/// The `exec` path of VM `vm`.
fn vm_path(vm: &str) -> ApiPath {
    ApiPath::new("/v1/vms").segment(vm)
}

/// Creates a session; `size` is filled from the local terminal for a `tty` session.
///
/// # Errors
/// hearthd's answer, or no answer.
pub fn create(client: &Client, vm: &str, mut body: ExecCreate) -> Result<ExecCreated, ClientError> {
    if body.tty && body.size.is_none() {
        body.size = window_size(io::stdin()).or_else(|| window_size(io::stdout()));
    }
    client.send_json(Method::POST, vm_path(vm).segment("exec"), &[], &body)
}

/// The VM's sessions.
///
/// # Errors
/// hearthd's answer, or no answer.
pub fn list(client: &Client, vm: &str) -> Result<ExecList, ClientError> {
    client.get(vm_path(vm).segment("execs"))
}

/// One session.
///
/// # Errors
/// hearthd's answer, or no answer.
pub fn info(client: &Client, vm: &str, id: &str) -> Result<ExecInfo, ClientError> {
    client.get(vm_path(vm).segment("execs").segment(id))
}

/// Signals a session's process group.
///
/// # Errors
/// hearthd's answer, or no answer.
pub fn kill(client: &Client, vm: &str, id: &str, signal: &str) -> Result<(), ClientError> {
    let body = serde_json::to_vec(&ExecSignal {
        signal: signal.to_owned(),
    })?;
    client
        .request(
            Method::POST,
            vm_path(vm).segment("execs").segment(id).segment("signal"),
            &[],
            Some(&body),
        )?
        .ok()?;
    Ok(())
}

/// Whether raw mode can be used: stdin is a terminal.
#[must_use]
pub fn stdin_is_terminal() -> bool {
    io::stdin().is_terminal()
}

/// Follows session `id` until it ends and returns its status.
///
/// # Errors
/// See [`ExecError`]; the terminal is restored before this returns either way.
pub fn attach(
    client: &Client,
    vm: &str,
    id: &str,
    opts: AttachOptions,
) -> Result<Status, ExecError> {
    let rt = runtime()?;
    rt.block_on(follow(client, vm, id, opts))
}

async fn follow(
    client: &Client,
    vm: &str,
    id: &str,
    opts: AttachOptions,
) -> Result<Status, ExecError> {
    // Handlers first: from here on, these signals end the loop (and restore the terminal)
    // instead of killing hearthctl where it stands.
    let sig = |k| signal(k).map_err(ExecError::Terminal);
    let mut sigint = sig(SignalKind::interrupt())?;
    let mut sigterm = sig(SignalKind::terminate())?;
    let mut sighup = sig(SignalKind::hangup())?;
    let mut winch = sig(SignalKind::window_change())?;
    let mut sock = ws::connect(client, &ws::attach_path(vm, id, opts.stdin)).await?;
    let _raw = if opts.raw {
        Some(RawMode::enter(io::stdin().as_fd()).map_err(ExecError::Terminal)?)
    } else {
        None
    };
    if opts.tty {
        // The size may have changed since the create, and an attach has sent none.
        if let Some(size) = window_size(io::stdin()).or_else(|| window_size(io::stdout())) {
            send(&mut sock, ws::resize(size)).await?;
        }
    }
    let mut stdin_rx = opts.stdin.then(spawn_stdin_reader);
    let mut out = dup_file(&io::stdout())?;
    let mut err = dup_file(&io::stderr())?;
    loop {
        tokio::select! {
            msg = sock.next() => {
                let msg = match msg {
                    None => return Err(ExecError::NoStatus),
                    Some(m) => m.map_err(ws::ws_error)?,
                };
                match ws::decode(msg)? {
                    Incoming::Stdout(b) => out.write_all(&b).map_err(ExecError::Output)?,
                    Incoming::Stderr(b) => err.write_all(&b).map_err(ExecError::Output)?,
                    Incoming::Status(s) => {
                        let _ = sock.close(None).await;
                        return Ok(s);
                    }
                    Incoming::Closed => return Err(ExecError::NoStatus),
                    Incoming::Ignored => {}
                }
            }
            chunk = recv(&mut stdin_rx) => {
                if let Some(data) = chunk {
                    send(&mut sock, ws::stdin(&data)).await?;
                } else {
                    stdin_rx = None;
                    send(&mut sock, ws::stdin_eof()).await?;
                }
            }
            Some(()) = winch.recv(), if opts.tty => {
                if let Some(size) = window_size(io::stdin()).or_else(|| window_size(io::stdout())) {
                    send(&mut sock, ws::resize(size)).await?;
                }
            }
            _ = sigint.recv() => return Err(ExecError::Signalled(libc::SIGINT)),
            _ = sigterm.recv() => return Err(ExecError::Signalled(libc::SIGTERM)),
            _ = sighup.recv() => return Err(ExecError::Signalled(libc::SIGHUP)),
        }
    }
}

async fn send(sock: &mut ws::Socket, msg: ws::Message) -> Result<(), ExecError> {
    sock.send(msg)
        .await
        .map_err(|e| ExecError::Client(ws::ws_error(e)))
}

/// The next stdin chunk; never ready once stdin is done (`None` channel).
async fn recv(rx: &mut Option<mpsc::Receiver<Vec<u8>>>) -> Option<Vec<u8>> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Reads stdin on a thread (a blocking read cannot be cancelled; the thread ends with the
/// process). The channel is bounded: a session that does not read its stdin stops this.
fn spawn_stdin_reader() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(4);
    std::thread::spawn(move || {
        let mut stdin = io::stdin().lock();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// An unbuffered handle on stdout or stderr (output is binary: no line buffering).
fn dup_file(f: &impl AsFd) -> Result<File, ExecError> {
    Ok(File::from(
        f.as_fd().try_clone_to_owned().map_err(ExecError::Output)?,
    ))
}

/// The exit code for a session's end: its command's code (as Docker reports it, 0..=255) or
/// [`EXIT_EXEC_FAILED`] for a failure without one.
#[must_use]
pub fn status_exit_code(status: &Status) -> u8 {
    status
        .exit_code()
        .and_then(|c| u8::try_from(c).ok())
        .unwrap_or(EXIT_EXEC_FAILED)
}
