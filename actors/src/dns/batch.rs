//! Batched UDP I/O for a DNS worker: up to [`BATCH`] queries taken by one `recvmmsg` and
//! their replies sent by one `sendmmsg`, so the per-packet cost is the kernel's packet work
//! rather than two syscalls and two trips through the reactor.
//!
//! Both calls are non-blocking and run through tokio's readiness ([`UdpSocket::async_io`]):
//! a worker sleeps in epoll only when its socket is empty (or its send buffer full). The
//! datagram buffers are allocated once per worker and bounded: [`BATCH`] queries of at most
//! [`MAX_QUERY_SIZE`] bytes each (a longer datagram is cut and then fails to parse), and
//! [`BATCH`] replies of at most the largest UDP payload hearth answers with. Only the small
//! vectors of pointers a `recvmmsg`/`sendmmsg` call takes are made per call.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use socket2::SockAddr;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams taken by one `recvmmsg` (and at most as many replies per `sendmmsg`).
pub const BATCH: usize = 32;
/// Queries larger than this are cut (and then fail to parse): real queries are far smaller.
pub const MAX_QUERY_SIZE: usize = 4096;
/// Initial capacity of a reply buffer (most replies fit; a buffer grows to at most the
/// largest reply, 4096 bytes, and is reused).
const REPLY_CAPACITY: usize = 512;

/// One worker's receive and send buffers.
pub struct Batch {
    headers: MultiHeaders<SockaddrStorage>,
    queries: Vec<Vec<u8>>,
    /// Length and source of each datagram of the last receive.
    received: Vec<(usize, Option<SocketAddr>)>,
    replies: Vec<Vec<u8>>,
    /// Destination of each queued reply (`replies[..dests.len()]`).
    dests: Vec<SockAddr>,
}

impl Batch {
    /// Empty buffers for [`BATCH`] datagrams each way.
    pub fn new() -> Self {
        Self {
            headers: MultiHeaders::preallocate(BATCH, None),
            queries: vec![vec![0; MAX_QUERY_SIZE]; BATCH],
            received: Vec::with_capacity(BATCH),
            replies: (0..BATCH)
                .map(|_| Vec::with_capacity(REPLY_CAPACITY))
                .collect(),
            dests: Vec::with_capacity(BATCH),
        }
    }

    /// Waits until `socket` has datagrams and takes up to [`BATCH`] of them; returns how
    /// many ([`Self::query`] reads each).
    pub async fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let fd = socket.as_raw_fd();
        socket
            .async_io(Interest::READABLE, || self.try_receive(fd))
            .await
    }

    fn try_receive(&mut self, fd: RawFd) -> io::Result<usize> {
        self.received.clear();
        let mut slices: Vec<[IoSliceMut<'_>; 1]> = self
            .queries
            .iter_mut()
            .map(|buf| [IoSliceMut::new(buf)])
            .collect();
        let messages = recvmmsg(
            fd,
            &mut self.headers,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )?;
        for message in messages {
            let source = message.address.as_ref().and_then(socket_addr);
            self.received
                .push((message.bytes.min(MAX_QUERY_SIZE), source));
        }
        Ok(self.received.len())
    }

    /// Datagram `i` of the last receive, its source, and the buffer of the next reply (to
    /// be queued with [`Self::queue`] once written).
    pub fn query_and_reply(&mut self, i: usize) -> (&[u8], Option<SocketAddr>, &mut Vec<u8>) {
        let (len, source) = self.received[i];
        let next = self.dests.len();
        (&self.queries[i][..len], source, &mut self.replies[next])
    }

    /// Queues the reply just written into the buffer [`Self::query_and_reply`] gave, for `to`.
    pub fn queue(&mut self, to: SocketAddr) {
        self.dests.push(SockAddr::from(to));
    }

    /// Sends every queued reply (one `sendmmsg` when the socket takes them all). A reply the
    /// kernel refuses is dropped, as a failed `send_to` would be, and the rest still go.
    pub async fn flush(&mut self, socket: &UdpSocket, logger: &slog::Logger) {
        let fd = socket.as_raw_fd();
        let count = self.dests.len();
        let mut from = 0;
        while from < count {
            let (replies, dests) = (&self.replies[from..count], &self.dests[from..count]);
            match socket
                .async_io(Interest::WRITABLE, || send_batch(fd, replies, dests))
                .await
            {
                Ok(sent) => from += sent.max(1),
                Err(e) => {
                    slog::debug!(logger, "UDP send failed";
                        "to" => ?dests[0].as_socket(), "error" => %e);
                    from += 1;
                }
            }
        }
        self.dests.clear();
    }
}

/// The socket address of a datagram's source, if it is IPv4 or IPv6.
fn socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::from(*v4));
    }
    address.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
}

/// One `sendmmsg` of `replies[i]` to `dests[i]`: how many were sent (the first one failing
/// is the error).
///
/// Called directly through libc: nix's `sendmmsg` result can only be counted by reading
/// source addresses that a send never writes.
fn send_batch(fd: RawFd, replies: &[Vec<u8>], dests: &[SockAddr]) -> io::Result<usize> {
    let mut iovecs: Vec<libc::iovec> = replies
        .iter()
        .map(|reply| libc::iovec {
            iov_base: reply.as_ptr().cast_mut().cast(),
            iov_len: reply.len(),
        })
        .collect();
    let mut headers: Vec<libc::mmsghdr> = iovecs
        .iter_mut()
        .zip(dests)
        .map(|(iovec, dest)| {
            // SAFETY: `msghdr` is a C struct of integers and pointers, for which all zeroes
            // is a valid value (no name, no data, no control messages).
            let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
            header.msg_name = dest.as_ptr().cast_mut().cast();
            header.msg_namelen = dest.len();
            header.msg_iov = std::ptr::from_mut(iovec);
            header.msg_iovlen = 1;
            libc::mmsghdr {
                msg_hdr: header,
                msg_len: 0,
            }
        })
        .collect();
    let count = u32::try_from(headers.len()).unwrap_or(u32::MAX);
    // SAFETY: `headers` holds `count` initialised entries whose name and iovec pointers point
    // into `dests`, `iovecs` and `replies`, all borrowed (and so alive and unmoved) for the
    // length of the call; the kernel only reads them and writes each `msg_len`.
    let sent = unsafe { libc::sendmmsg(fd, headers.as_mut_ptr(), count, libc::MSG_DONTWAIT) };
    usize::try_from(sent).map_err(|_| io::Error::last_os_error())
}
