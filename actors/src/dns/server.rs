//! The serving side: binding the UDP and TCP sockets on the listen address and running the
//! hickory [`Server`] on dedicated threads, off the actix thread.
//!
//! Each worker thread has its own current-thread tokio runtime and its own UDP socket; the
//! sockets share the port through `SO_REUSEPORT`, so the kernel spreads queries over the
//! workers without any shared queue. UDP queries are taken in batches (`recvmmsg`, see
//! `batch.rs`); hearth's names, and cached answers that need no wait for the egress learner,
//! are answered inline by the worker's loop (no task, no channel) and leave together
//! (`sendmmsg`); other forwarded queries become tasks. Worker 0 also
//! serves TCP through hickory's [`Server`], with the same [`RequestHandler`] logic.
//!
//! Threads are spawned from the actor's thread, so they inherit its network namespace. Sockets
//! are bound synchronously by [`bind`] (so a bind error is returned to the caller);
//! [`RunningServer::stop`] ends the workers and resolves once every socket is closed.
//!
//! [`RequestHandler`]: hickory_server::server::RequestHandler

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::proto::op::ResponseCode;
use hickory_server::Server;
use slog::{error, Logger};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{oneshot, Semaphore};

use super::batch::Batch;
use super::request::{DnsRequestHandler, UdpAnswer};
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
    async fn serve(self, mut stop: oneshot::Receiver<()>) {
        let udp = match tokio::net::UdpSocket::from_std(self.udp) {
            Ok(socket) => Arc::new(socket),
            Err(e) => {
                error!(self.logger, "Cannot serve UDP socket"; "error" => %e);
                return;
            }
        };
        // TCP goes through hickory's server, with the same request handler.
        let mut tcp_server = None;
        if let Some(tcp) = self.tcp {
            match tokio::net::TcpListener::from_std(tcp) {
                Ok(listener) => {
                    let mut server = Server::new(self.handler.clone());
                    server.register_listener(listener, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
                    tcp_server = Some(server);
                }
                Err(e) => error!(self.logger, "Cannot serve TCP listener"; "error" => %e),
            }
        }
        tokio::select! {
            // Either a Stop, or the RunningServer was dropped.
            _ = &mut stop => {}
            () = serve_udp(udp, self.handler, &self.logger) => {}
        }
        if let Some(mut server) = tcp_server {
            server.shutdown_token().cancel();
            if let Err(e) = server.block_until_done().await {
                error!(self.logger, "DNS TCP server shutdown failed"; "error" => %e);
            }
        }
    }
}

/// The UDP loop of one worker: each batch of queries (see `batch.rs`) is answered inline,
/// one datagram after the other, and the replies leave together; forwarded queries that must
/// wait for an upstream or the egress learner become tasks, so they never hold up the rest.
async fn serve_udp(
    socket: Arc<tokio::net::UdpSocket>,
    handler: DnsRequestHandler,
    logger: &Logger,
) {
    let mut batch = Batch::new();
    let forwards = Arc::new(Semaphore::new(handler.max_forwards().max(1)));
    loop {
        let received = match batch.receive(&socket).await {
            Ok(received) => received,
            Err(e) => {
                // ICMP errors from earlier replies surface here; they concern one client.
                slog::debug!(logger, "UDP receive failed"; "error" => %e);
                continue;
            }
        };
        for i in 0..received {
            let (query, src, out) = batch.query_and_reply(i);
            let Some(src) = src.filter(|src| src.port() != 0) else {
                continue;
            };
            match handler.answer_udp(query, src, out) {
                UdpAnswer::Ignore => {}
                UdpAnswer::Reply => batch.queue(src),
                UdpAnswer::Forward(request) => {
                    // Each forwarded query holds a socket until answered: bound them, so a
                    // flood from a guest costs SERVFAILs, not the process's file descriptors.
                    let Ok(permit) = forwards.clone().try_acquire_owned() else {
                        handler.fail_udp(&request, ResponseCode::ServFail, out);
                        batch.queue(src);
                        continue;
                    };
                    let (socket, handler, logger) =
                        (socket.clone(), handler.clone(), logger.clone());
                    tokio::spawn(async move {
                        let mut out = Vec::with_capacity(512);
                        handler.forward_udp(&request, &mut out).await;
                        send(&socket, &out, src, &logger).await;
                        drop(permit);
                    });
                }
            }
        }
        batch.flush(&socket, logger).await;
    }
}

async fn send(socket: &tokio::net::UdpSocket, reply: &[u8], to: SocketAddr, logger: &Logger) {
    // Nearly always ready: try without a trip through the reactor first.
    let result = match socket.try_send_to(reply, to) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => socket.send_to(reply, to).await,
        other => other,
    };
    if let Err(e) = result {
        slog::debug!(logger, "UDP send failed"; "to" => %to, "error" => %e);
    }
}
