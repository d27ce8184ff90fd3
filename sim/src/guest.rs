//! The simulated guest as seen from the host through hybrid vsock (`docs/vsock.md`,
//! `devices/virtio/vsock/unix/muxer.rs`): once the guest has booted, connections to `uds_path`
//! are accepted; the host writes `CONNECT <port>\n`; if the guest agent listens on that port
//! the muxer answers `OK <host_port>\n` (host ports count up from 2^30) and the connection
//! then speaks hearth's agent protocol (`hearth_proto::agent`); otherwise it is closed
//! without `OK`. The diagnostic `resolve` and `connect` ops use the userspace guest network
//! stack (`FC_SIM_NETSTACK=1`, [`Guest::set_net`]); without it they answer `no_network`.

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use hearth_proto::agent::{
    self, codes, AgentProtoError, ConnectReply, ConnectRequest, ErrorBody, PingReply, Request,
    ResolveReply, ResolveRequest,
};

use crate::knobs::Knobs;
use crate::netstack::{GuestStack, NetstackError};

/// The first host-side port the muxer hands out.
pub const FIRST_HOST_PORT: u32 = 1 << 30;
/// How long a host may take to send `CONNECT`, and how long the muxer waits for the guest.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest `CONNECT` line accepted.
const MAX_CONNECT_LINE: usize = 32;

/// Guest state the VMM thread writes and the vsock threads read.
#[derive(Debug)]
pub struct Guest {
    /// When the guest finished booting.
    booted_at: OnceLock<Instant>,
    /// Whether the vCPUs are paused (`PATCH /vm`).
    paused: AtomicBool,
    /// A fresh boot id, as `/proc/sys/kernel/random/boot_id` would give.
    boot_id: String,
    /// The guest's network stack, once it runs.
    net: RwLock<Option<GuestNet>>,
    /// The real agent's socket (`FC_SIM_AGENT_BIN`), once it was started.
    real_agent: OnceLock<PathBuf>,
    /// Host-side streams of the vsock connections the muxer accepted, so a snapshot can
    /// reset them.
    conns: Mutex<HashMap<u64, UnixStream>>,
    /// The next key of [`Guest::conns`].
    next_conn: AtomicU64,
}

/// A tracked vsock connection; untracked (its clone closed) when dropped, so tracking never
/// keeps a finished connection open.
struct Tracked<'a> {
    guest: &'a Guest,
    key: u64,
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.guest
            .conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.key);
    }
}

/// The guest network stack as the agent uses it.
struct GuestNet(Arc<GuestStack>);

impl std::fmt::Debug for GuestNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GuestNet({})", self.0.config().ip)
    }
}

impl Default for Guest {
    fn default() -> Self {
        Self::new()
    }
}

impl Guest {
    /// A guest that has not booted.
    pub fn new() -> Self {
        Self::with_boot_id(random_boot_id())
    }

    /// The guest of a loaded snapshot: the same boot (its boot id), booted `uptime` ago
    /// when it had booted at the snapshot.
    pub fn restored(boot_id: String, uptime: Option<Duration>) -> Self {
        let g = Self::with_boot_id(boot_id);
        if let Some(at) = uptime.and_then(|u| Instant::now().checked_sub(u)) {
            let _ = g.booted_at.set(at);
        }
        g
    }

    /// The boot id (`/proc/sys/kernel/random/boot_id`).
    pub fn boot_id(&self) -> &str {
        &self.boot_id
    }

    /// How long ago the guest booted, if it has.
    pub fn uptime(&self) -> Option<Duration> {
        self.booted_at.get().map(Instant::elapsed)
    }

    /// Resets every vsock connection (the transport reset Firecracker sends at a snapshot):
    /// the host side sees its stream closed.
    pub fn reset_vsock(&self) {
        let conns = self
            .conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for c in conns.values() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    fn track(&self, stream: &UnixStream) -> Option<Tracked<'_>> {
        let clone = stream.try_clone().ok()?;
        let key = self.next_conn.fetch_add(1, Ordering::SeqCst);
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, clone);
        Some(Tracked { guest: self, key })
    }

    fn with_boot_id(boot_id: String) -> Self {
        Self {
            booted_at: OnceLock::new(),
            paused: AtomicBool::new(false),
            boot_id,
            net: RwLock::new(None),
            real_agent: OnceLock::new(),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
        }
    }
}

fn random_boot_id() -> String {
    {
        let r: [u8; 16] = rand::random();
        let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }
}

impl Guest {
    /// Marks the guest booted (once).
    pub fn set_booted(&self) {
        let _ = self.booted_at.set(Instant::now());
    }

    /// Whether the guest has booted.
    pub fn booted(&self) -> bool {
        self.booted_at.get().is_some()
    }

    /// Routes the agent port to a real agent listening on `socket` (once).
    pub fn set_real_agent(&self, socket: PathBuf) {
        let _ = self.real_agent.set(socket);
    }

    /// Gives the agent the guest's network stack, replacing any earlier one (a guest that
    /// adopted a new identity runs a new stack).
    pub fn set_net(&self, stack: Arc<GuestStack>) {
        *self
            .net
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(GuestNet(stack));
    }

    /// `resolve` through the guest stack's DNS client.
    fn resolve(&self, req: &ResolveRequest) -> Result<ResolveReply, ErrorBody> {
        let net = self.network()?;
        let addr = net
            .resolve_within(&req.name, req.timeout())
            .map_err(to_error_body)?;
        Ok(ResolveReply { addrs: vec![addr] })
    }

    /// `connect` through the guest stack's TCP.
    fn connect(&self, req: &ConnectRequest) -> Result<ConnectReply, ErrorBody> {
        let net = self.network()?;
        let received = net
            .tcp_connect_within(req.addr, req.port, req.send.as_bytes(), req.timeout())
            .map_err(to_error_body)?;
        Ok(ConnectReply::from_bytes(&received))
    }

    fn network(&self) -> Result<Arc<GuestStack>, ErrorBody> {
        let net = self
            .net
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        net.as_ref().map(|n| n.0.clone()).ok_or_else(|| {
            ErrorBody::new(
                codes::NO_NETWORK,
                "The guest has no network (set FC_SIM_NETSTACK=1 and configure an interface)",
            )
        })
    }

    /// Pauses or resumes the vCPUs.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    /// Whether the vCPUs are paused.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Waits until the guest runs (not paused), up to `timeout`.
    fn wait_running(&self, timeout: Duration) -> bool {
        let end = Instant::now().checked_add(timeout);
        while self.paused() {
            if end.is_some_and(|end| Instant::now() >= end) {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
        true
    }

    fn ping_reply(&self) -> PingReply {
        let uptime = self
            .booted_at
            .get()
            .map(std::time::Instant::elapsed)
            .unwrap_or_default();
        PingReply {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            boot_id: self.boot_id.clone(),
            uptime_ms: uptime.as_millis() as u64,
        }
    }
}

/// The agent protocol's error for a failed guest stack operation.
pub fn to_error_body(e: NetstackError) -> ErrorBody {
    let code = match &e {
        NetstackError::Timeout { .. } => codes::TIMEOUT,
        NetstackError::ConnectionRefused { .. } => codes::CONNECT_REFUSED,
        NetstackError::ConnectionReset { .. } => codes::CONNECT_FAILED,
        NetstackError::InvalidName { .. }
        | NetstackError::NoDnsServer
        | NetstackError::NameNotFound { .. }
        | NetstackError::DnsRcode { .. }
        | NetstackError::DnsMalformed { .. } => codes::RESOLVE_FAILED,
        _ => codes::INTERNAL,
    };
    ErrorBody::new(code, e.to_string())
}

/// Answers one decoded request, in the version it was asked in. The built-in agent answers the
/// probe and the diagnostic ops; sessions and files need the real agent (`FC_SIM_AGENT`).
fn answer(guest: &Guest, request: Result<agent::Envelope, AgentProtoError>) -> Vec<u8> {
    let (v, request) = match request {
        Ok(e) => (e.v, e.request),
        Err(e) => return agent::encode_error(&e.to_error_body()),
    };
    let result = match request {
        Request::Ping => return agent::encode_ok_in(v, &guest.ping_reply()),
        Request::Resolve(r) => guest.resolve(&r).map(|r| agent::encode_ok_in(v, &r)),
        Request::Connect(c) => guest.connect(&c).map(|c| agent::encode_ok_in(v, &c)),
        other => Err(ErrorBody::new(
            codes::UNKNOWN_OP,
            format!(
                "op {:?} needs the real agent (FC_SIM_AGENT_BIN); the simulator's own agent answers only ping, resolve and connect",
                other.op()
            ),
        )),
    };
    result.unwrap_or_else(|e| agent::encode_error_in(v, &e))
}

/// Parses `CONNECT <port>` (case-insensitive keyword), without the newline.
pub fn parse_connect(line: &str) -> Option<u32> {
    let mut parts = line.trim_end_matches('\r').split(' ');
    let kw = parts.next()?;
    let port = parts.next()?;
    if !kw.eq_ignore_ascii_case("connect") || parts.next().is_some() {
        return None;
    }
    port.parse().ok()
}

/// Serves host-initiated connections on the vsock listener, on a thread of its own, from
/// the moment the guest has booted until the process exits.
pub fn spawn_muxer(listener: UnixListener, guest: Arc<Guest>, knobs: Knobs) {
    let next_port = Arc::new(AtomicU32::new(FIRST_HOST_PORT));
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(stream) = conn else { continue };
            let (guest, knobs, next_port) = (guest.clone(), knobs.clone(), next_port.clone());
            thread::spawn(move || serve_connection(stream, &guest, &knobs, &next_port));
        }
    });
}

/// Reads the `CONNECT` line byte by byte, so nothing after the newline is consumed.
fn read_connect_line(stream: &mut UnixStream) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() <= MAX_CONNECT_LINE {
        match stream.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => return String::from_utf8(line).ok(),
            Ok(1) => line.push(byte[0]),
            _ => return None,
        }
    }
    None
}

fn serve_connection(mut stream: UnixStream, guest: &Guest, knobs: &Knobs, next_port: &AtomicU32) {
    if stream.set_read_timeout(Some(CONNECT_TIMEOUT)).is_err() {
        return;
    }
    let Some(port) = read_connect_line(&mut stream)
        .as_deref()
        .and_then(parse_connect)
    else {
        return;
    };
    // Nobody listens on that guest port: the guest answers RST and the muxer closes the
    // host stream without `OK`. A paused guest never answers: the request times out.
    if knobs.no_agent || port != knobs.agent_port || !guest.wait_running(CONNECT_TIMEOUT) {
        return;
    }
    // The real agent: connect first, so a dead agent looks like nothing listening.
    let real = match guest.real_agent.get() {
        Some(socket) => match crate::real_agent::connect(socket, CONNECT_TIMEOUT) {
            Ok(s) => Some(s),
            Err(_) => return,
        },
        None => None,
    };
    let host_port = next_port.fetch_add(1, Ordering::SeqCst);
    let _tracked = guest.track(&stream);
    if stream
        .write_all(format!("OK {host_port}\n").as_bytes())
        .is_err()
        || stream.set_read_timeout(None).is_err()
    {
        return;
    }
    match real {
        Some(agent) => crate::real_agent::splice(stream, agent),
        None => serve_agent(stream, guest, knobs),
    }
}

/// hearth's agent protocol, one request line and one response line at a time.
fn serve_agent(stream: UnixStream, guest: &Guest, knobs: &Knobs) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let line = match agent::read_line(&mut reader) {
            Ok(Some(line)) => line,
            Ok(None) | Err(AgentProtoError::Io { .. }) => return,
            Err(e) => {
                let _ = writer.write_all(&agent::encode_error(&e.to_error_body()));
                return;
            }
        };
        if knobs.agent_silent {
            continue;
        }
        // A paused guest answers once it runs again.
        guest.wait_running(Duration::MAX);
        let out = answer(guest, agent::decode_envelope(&line));
        if writer.write_all(&out).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufRead;

    use super::*;

    #[test]
    fn connect_lines() {
        assert_eq!(parse_connect("CONNECT 52"), Some(52));
        assert_eq!(parse_connect("connect 1024\r"), Some(1024));
        assert_eq!(parse_connect("CONNECT"), None);
        assert_eq!(parse_connect("CONNECT x"), None);
        assert_eq!(parse_connect("CONNECT 52 53"), None);
        assert_eq!(parse_connect("OPEN 52"), None);
    }

    fn exchange(knobs: Knobs, port: u32) -> (Option<String>, UnixStream, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let guest = Arc::new(Guest::new());
        guest.set_booted();
        spawn_muxer(listener, guest, knobs);
        let mut s = UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(format!("CONNECT {port}\n").as_bytes()).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        let got = match r.read_line(&mut line) {
            Ok(n) if n > 0 => Some(line),
            _ => None,
        };
        (got, s, dir)
    }

    #[test]
    fn agent_port_gets_ok_and_answers_ping() {
        let (ok, mut s, _dir) = exchange(Knobs::default(), 52);
        assert_eq!(ok.as_deref(), Some("OK 1073741824\n"));
        s.write_all(&agent::encode_request(&Request::Ping)).unwrap();
        let mut r = BufReader::new(s);
        let line = agent::read_line(&mut r).unwrap().unwrap();
        let reply: PingReply = agent::decode_response(&line).unwrap();
        assert_eq!(reply.boot_id.len(), 36);
    }

    #[test]
    fn other_ports_are_closed_without_ok() {
        let (got, _s, _dir) = exchange(Knobs::default(), 53);
        assert_eq!(got, None);
        let knobs = Knobs {
            no_agent: true,
            ..Knobs::default()
        };
        let (got, _s, _dir) = exchange(knobs, 52);
        assert_eq!(got, None);
    }

    #[test]
    fn diagnostics_without_a_network_answer_no_network() {
        let (ok, mut s, _dir) = exchange(Knobs::default(), 52);
        assert!(ok.is_some());
        let mut r = BufReader::new(s.try_clone().unwrap());
        let requests = [
            Request::Resolve(ResolveRequest {
                name: "db.vm.internal".into(),
                timeout_ms: 100,
            }),
            Request::Connect(ConnectRequest {
                addr: std::net::Ipv4Addr::new(10, 0, 0, 1),
                port: 80,
                send: String::new(),
                timeout_ms: 100,
            }),
        ];
        for req in requests {
            s.write_all(&agent::encode_request(&req)).unwrap();
            let line = agent::read_response_line(&mut r).unwrap().unwrap();
            match agent::decode_response::<ConnectReply>(&line) {
                Err(AgentProtoError::Remote { code, .. }) => assert_eq!(code, codes::NO_NETWORK),
                other => panic!("unexpected {other:?}"),
            }
        }
        // A bad request is answered and the connection stays open.
        s.write_all(b"{\"v\":1,\"op\":\"connect\",\"port\":1}\n")
            .unwrap();
        let line = agent::read_line(&mut r).unwrap().unwrap();
        assert!(matches!(
            agent::decode_response::<ConnectReply>(&line),
            Err(AgentProtoError::Remote { ref code, .. }) if code == codes::BAD_REQUEST
        ));
    }

    #[test]
    fn stack_errors_map_to_codes() {
        let peer = "10.0.0.1:80".parse().unwrap();
        let code = |e| to_error_body(e).code;
        assert_eq!(
            code(NetstackError::Timeout {
                op: "x".into(),
                after: Duration::from_millis(1)
            }),
            codes::TIMEOUT
        );
        assert_eq!(
            code(NetstackError::ConnectionRefused { addr: peer }),
            codes::CONNECT_REFUSED
        );
        assert_eq!(
            code(NetstackError::ConnectionReset { addr: peer }),
            codes::CONNECT_FAILED
        );
        assert_eq!(
            code(NetstackError::NameNotFound { name: "a".into() }),
            codes::RESOLVE_FAILED
        );
        assert_eq!(code(NetstackError::Stopped), codes::INTERNAL);
    }
}
