//! The serving side: binding the UDP and TCP sockets on the listen address and running the
//! hickory [`Server`] on dedicated threads, off the actix thread.
//!
//! Each worker thread has its own current-thread tokio runtime and its own UDP socket; the
//! sockets share the port through `SO_REUSEPORT`, so the kernel spreads queries over the
//! workers without any shared queue. Worker 0 also serves TCP. Threads are spawned from the
//! actor's thread, so they inherit its network namespace. Sockets are bound synchronously by
//! [`bind`] (so a bind error is returned to the caller); [`RunningServer::stop`] ends the
//! workers and resolves once every socket is closed.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_server::Server;
use slog::{error, Logger};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::oneshot;

use super::handler::DnsRequestHandler;
use super::DnsError;

/// How long a TCP client may stay idle before its connection is closed.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;
/// Attempts at finding a port free for both UDP and TCP when port 0 is asked for.
const EPHEMERAL_ATTEMPTS: usize = 16;

/// The sockets of one server, bound but not yet served.
#[derive(Debug)]
pub struct BoundSockets {
    udp: Vec<std::net::UdpSocket>,
    tcp: std::net::TcpListener,
    local: SocketAddr,
}

impl BoundSockets {
    /// The address actually bound (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

/// Binds `workers` UDP sockets and one TCP listener on `listen`. With port 0 a port free for
/// both protocols is picked.
pub fn bind(listen: SocketAddr, workers: usize) -> Result<BoundSockets, DnsError> {
    let workers = workers.max(1);
    let attempts = if listen.port() == 0 {
        EPHEMERAL_ATTEMPTS
    } else {
        1
    };
    let mut last = None;
    for _ in 0..attempts {
        match bind_once(listen, workers) {
            Ok(bound) => return Ok(bound),
            Err(e) => last = Some(e),
        }
    }
    let (protocol, source) =
        last.unwrap_or_else(|| ("udp", io::Error::other("no bind attempt made")));
    Err(DnsError::Bind {
        addr: listen,
        protocol,
        source,
    })
}

fn bind_once(
    listen: SocketAddr,
    workers: usize,
) -> Result<BoundSockets, (&'static str, io::Error)> {
    let first = udp_socket(listen).map_err(|e| ("udp", e))?;
    let local = first.local_addr().map_err(|e| ("udp", e))?;
    let mut udp = vec![first];
    for _ in 1..workers {
        udp.push(udp_socket(local).map_err(|e| ("udp", e))?);
    }
    let tcp = tcp_listener(local).map_err(|e| ("tcp", e))?;
    Ok(BoundSockets { udp, tcp, local })
}

fn udp_socket(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // SO_REUSEADDR: rebinding right after a Stop must not fail on TIME_WAIT connections.
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// A server being served by its worker threads. Dropping it stops the workers too, without
/// waiting for them.
#[derive(Debug)]
pub struct RunningServer {
    local: SocketAddr,
    stop: Vec<oneshot::Sender<()>>,
    done: Vec<oneshot::Receiver<()>>,
}

impl RunningServer {
    /// Starts one worker thread per UDP socket in `sockets`, each serving with `handler`.
    pub fn spawn(
        sockets: BoundSockets,
        handler: DnsRequestHandler,
        logger: &Logger,
    ) -> Result<Self, DnsError> {
        let local = sockets.local;
        let mut tcp = Some(sockets.tcp);
        let mut server = RunningServer {
            local,
            stop: Vec::new(),
            done: Vec::new(),
        };
        for (i, udp) in sockets.udp.into_iter().enumerate() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| DnsError::Spawn { source })?;
            let (stop_tx, stop_rx) = oneshot::channel();
            let (done_tx, done_rx) = oneshot::channel();
            let worker = Worker {
                udp,
                tcp: tcp.take(),
                handler: handler.clone(),
                logger: logger.new(slog::o!("dns_worker" => i)),
            };
            std::thread::Builder::new()
                .name(format!("hearth-dns-{i}"))
                .spawn(move || {
                    runtime.block_on(worker.serve(stop_rx));
                    // Dropping the runtime drops every task and so closes every socket.
                    drop(runtime);
                    let _ = done_tx.send(());
                })
                .map_err(|source| DnsError::Spawn { source })?;
            // Pushed only once the thread runs: if a later spawn fails, dropping `server`
            // stops the workers already started.
            server.stop.push(stop_tx);
            server.done.push(done_rx);
        }
        Ok(server)
    }

    /// The address served.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops every worker; resolves when all of them have closed their sockets.
    pub async fn stop(self) {
        let RunningServer { stop, done, .. } = self;
        for tx in stop {
            let _ = tx.send(());
        }
        for rx in done {
            // An error means the worker ended on its own (and so closed its socket already).
            let _ = rx.await;
        }
    }
}

struct Worker {
    udp: std::net::UdpSocket,
    tcp: Option<std::net::TcpListener>,
    handler: DnsRequestHandler,
    logger: Logger,
}

impl Worker {
    async fn serve(self, stop: oneshot::Receiver<()>) {
        let mut server = Server::new(self.handler);
        match tokio::net::UdpSocket::from_std(self.udp) {
            Ok(socket) => server.register_socket(socket),
            Err(e) => {
                error!(self.logger, "Cannot serve UDP socket"; "error" => %e);
                return;
            }
        }
        if let Some(tcp) = self.tcp {
            match tokio::net::TcpListener::from_std(tcp) {
                Ok(listener) => {
                    server.register_listener(listener, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER)
                }
                Err(e) => error!(self.logger, "Cannot serve TCP listener"; "error" => %e),
            }
        }
        tokio::select! {
            // Either a Stop, or the RunningServer was dropped.
            _ = stop => {}
            result = server.block_until_done() => {
                if let Err(e) = result {
                    error!(self.logger, "DNS server ended"; "error" => %e);
                }
                return;
            }
        }
        server.shutdown_token().cancel();
        if let Err(e) = server.block_until_done().await {
            error!(self.logger, "DNS server shutdown failed"; "error" => %e);
        }
    }
}
