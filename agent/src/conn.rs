//! What a connection must offer beyond `Read + Write`: a second handle (a session's output is
//! written by one thread while another reads the host's frames) and a shutdown that wakes a
//! thread blocked on either.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

/// A host connection (a Unix socket in tests and the simulator, vsock in a guest).
pub trait Conn: Read + Write + AsFd + Send + Sized + 'static {
    /// Another handle to the same connection.
    ///
    /// # Errors
    ///
    /// The duplication's (out of fds).
    fn try_clone_conn(&self) -> io::Result<Self>;
    /// Shuts both directions down (errors ignored: the peer may be gone already).
    fn shutdown_conn(&self);
}

impl Conn for UnixStream {
    fn try_clone_conn(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn shutdown_conn(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
}

impl Conn for vsock::VsockStream {
    fn try_clone_conn(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn shutdown_conn(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
}
