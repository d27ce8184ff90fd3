//! Exec sessions: the agent's table of them and the ops that reach it (`exec`, `attach`,
//! `execs`, `exec_info`, `signal`). A session lives in the table, not in a connection: it keeps
//! running when its host goes away, and the next `attach` replays its kept output.
//!
//! The table is bounded: at most [`MAX_RUNNING`] running sessions (`exec` answers
//! `too_many_sessions` beyond), and the newest [`MAX_EXITED`] exited ones are kept.

pub mod reaper;
pub mod ring;
pub mod session;
pub mod spawn;
pub mod stream;

use std::sync::{Arc, Mutex, PoisonError};

use hearth_proto::agent::{codes, ErrorBody, ExecInfo, ExecRequest, SessionId};

pub use session::Session;

use crate::freeze::{FreezeBackend, Freezer};
use crate::net::identity::{GuestIdentity, IdentityBackend};

/// The most sessions running at once.
pub const MAX_RUNNING: usize = 256;
/// The most exited sessions kept (the newest).
pub const MAX_EXITED: usize = 64;

/// The agent's sessions, oldest first, and the backend `reconfigure` applies identities with
/// (chosen at launch: the guest's own network, or the simulator's file).
#[derive(Debug)]
pub struct Table {
    sessions: Mutex<Vec<Arc<Session>>>,
    identity: Box<dyn IdentityBackend>,
    freezer: Freezer,
}

impl Default for Table {
    fn default() -> Self {
        Self::with_identity(Box::new(GuestIdentity::default()))
    }
}

impl Table {
    /// An empty table; `reconfigure` changes this guest ([`GuestIdentity`]).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty table whose `reconfigure` goes to `identity`.
    #[must_use]
    pub fn with_identity(identity: Box<dyn IdentityBackend>) -> Self {
        Table {
            sessions: Mutex::new(Vec::new()),
            identity,
            freezer: Freezer::default(),
        }
    }

    /// This table with `freeze`/`thaw` going to `backend` (the simulator's file) instead of
    /// this guest's filesystems.
    #[must_use]
    pub fn with_freeze_backend(mut self, backend: Box<dyn FreezeBackend>) -> Self {
        self.freezer = Freezer::new(backend);
        self
    }

    /// The filesystems `freeze` froze, and their deadlines.
    pub fn freezer(&self) -> &Freezer {
        &self.freezer
    }

    /// The backend `reconfigure` uses.
    pub fn identity(&self) -> &dyn IdentityBackend {
        self.identity.as_ref()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a session for `req`; with `attach`, its first attachment (generation 0) is
    /// reserved for the caller.
    ///
    /// # Errors
    ///
    /// `too_many_sessions` when [`MAX_RUNNING`] run already; `internal` when the process
    /// cannot be started (pipes, PTY, fork). An exec failure is not an error: the session
    /// exits 126 or 127.
    pub fn exec(&self, req: &ExecRequest, attach: bool) -> Result<Arc<Session>, ErrorBody> {
        let session = {
            let mut all = self.lock();
            prune(&mut all);
            let running = all.iter().filter(|s| !s.has_exited()).count();
            if running >= MAX_RUNNING {
                return Err(ErrorBody::new(
                    codes::TOO_MANY_SESSIONS,
                    format!("{running} sessions already run (at most {MAX_RUNNING})"),
                ));
            }
            let session = Session::new(new_id(), req, attach);
            all.push(session.clone());
            session
        };
        if let Err(e) = session.start(req) {
            self.lock().retain(|s| !Arc::ptr_eq(s, &session));
            return Err(ErrorBody::new(
                codes::INTERNAL,
                format!("Cannot start {:?}: {e}", req.argv[0]),
            ));
        }
        Ok(session)
    }

    /// The session with this id.
    ///
    /// # Errors
    ///
    /// `no_such_session`.
    pub fn get(&self, id: &SessionId) -> Result<Arc<Session>, ErrorBody> {
        self.lock()
            .iter()
            .find(|s| &s.id == id)
            .cloned()
            .ok_or_else(|| ErrorBody::new(codes::NO_SUCH_SESSION, format!("No session {id}")))
    }

    /// Every kept session, oldest first.
    pub fn list(&self) -> Vec<ExecInfo> {
        let all: Vec<Arc<Session>> = {
            let mut all = self.lock();
            prune(&mut all);
            all.clone()
        };
        all.iter().map(|s| s.info()).collect()
    }

    /// Signals a session's process group.
    ///
    /// # Errors
    ///
    /// `no_such_session` when there is no such session or it has exited.
    pub fn signal(&self, id: &SessionId, signal: i32) -> Result<(), ErrorBody> {
        if self.get(id)?.signal(signal) {
            Ok(())
        } else {
            Err(ErrorBody::new(
                codes::NO_SUCH_SESSION,
                format!("Session {id} has exited"),
            ))
        }
    }
}

/// Drops the oldest exited sessions beyond [`MAX_EXITED`].
fn prune(all: &mut Vec<Arc<Session>>) {
    let exited = all.iter().filter(|s| s.has_exited()).count();
    let mut extra = exited.saturating_sub(MAX_EXITED);
    all.retain(|s| {
        if extra > 0 && s.has_exited() {
            extra -= 1;
            false
        } else {
            true
        }
    });
}

/// A fresh random id: `x` and 16 hex digits.
fn new_id() -> SessionId {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 8 {
        // No entropy (very early boot): time and a counter are unique enough for ids.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let c = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Only the low bits vary between calls; the truncation is the point.
        #[expect(clippy::cast_possible_truncation, reason = "low 64 bits of the time")]
        let t = t as u64;
        b = (t ^ c.rotate_left(32)).to_be_bytes();
    }
    let hex: String = b.iter().fold(String::new(), |mut h, x| {
        use std::fmt::Write as _;
        let _ = write!(h, "{x:02x}");
        h
    });
    SessionId::parse(&format!("x{hex}")).unwrap_or_else(|_| unreachable!("hex ids are valid"))
}
