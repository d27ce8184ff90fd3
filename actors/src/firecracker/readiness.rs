//! The readiness probe: reach the guest agent through Firecracker's hybrid vsock socket and
//! ping it with the agent protocol. One attempt is: connect to the vsock UDS, send
//! `CONNECT <port>\n` in one write, expect `OK <host port>\n`, send a ping line, read the
//! reply. Attempts repeat with a short precise backoff ([`PROBE_BACKOFF_FIRST`] doubling to
//! [`PROBE_BACKOFF_MAX`]) until the deadline.

use std::path::Path;
use std::time::{Duration, Instant};

use hearth_proto::agent::{decode_response, encode_request, PingReply, Request, MAX_LINE};
use tokio::io::AsyncWriteExt;

use super::backoff::Backoff;
use super::FirecrackerError;
use crate::guest::vsock::{self, VsockError};

/// Firecracker gives up on a host-initiated connection after 2 s; one attempt waits a bit
/// longer for the `OK`, so a slow guest is not cut off early.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(2500);

/// First retry delay of the probe.
pub const PROBE_BACKOFF_FIRST: Duration = Duration::from_micros(100);
/// Largest retry delay of the probe (a real guest takes 100+ ms to boot; a few attempts per
/// 10 ms cost nothing and bound the detection lag).
pub const PROBE_BACKOFF_MAX: Duration = Duration::from_millis(5);

/// A successful probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOutcome {
    /// The agent's answer.
    pub reply: PingReply,
    /// How many attempts it took.
    pub attempts: u32,
    /// How long it took.
    pub elapsed: Duration,
}

pub use crate::guest::vsock::parse_ok_line;

/// One probe attempt.
///
/// # Errors
///
/// Why the attempt failed, as text for the final timeout error.
pub async fn attempt(uds: &Path, port: u32) -> Result<PingReply, String> {
    let mut reader = vsock::connect(uds, port).await.map_err(|e| match e {
        VsockError::Connect { source, .. } => format!("connect {}: {source}", uds.display()),
        VsockError::BadAck { .. } => e.to_string(),
        other => format!("no OK for port {port} ({other}): is the agent listening?"),
    })?;
    reader
        .get_mut()
        .write_all(&encode_request(&Request::Ping))
        .await
        .map_err(|e| format!("write ping: {e}"))?;
    let line = vsock::read_line(&mut reader, MAX_LINE, "the ping reply")
        .await
        .map_err(|e| format!("ping reply: {e}"))?;
    decode_response::<PingReply>(&line).map_err(|e| format!("ping reply: {e}"))
}

/// Probes until the agent answers or `timeout` passes.
///
/// # Errors
///
/// [`FirecrackerError::ReadinessTimeout`] with the last attempt's error.
pub async fn probe(
    uds: &Path,
    port: u32,
    timeout: Duration,
) -> Result<ProbeOutcome, FirecrackerError> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut backoff = Backoff::new(PROBE_BACKOFF_FIRST, PROBE_BACKOFF_MAX);
    let mut attempts = 0;
    let mut last_error: Option<String> = None;
    loop {
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let cut_by_deadline = left < ATTEMPT_TIMEOUT;
        match tokio::time::timeout(left.min(ATTEMPT_TIMEOUT), attempt(uds, port)).await {
            Ok(Ok(reply)) => {
                return Ok(ProbeOutcome {
                    reply,
                    attempts,
                    elapsed: start.elapsed(),
                })
            }
            Ok(Err(e)) => last_error = Some(e),
            // An attempt cut short by the overall deadline says less than the one before it.
            Err(_) if cut_by_deadline && last_error.is_some() => {}
            Err(_) => last_error = Some("attempt timed out waiting for the agent".to_string()),
        }
        let now = Instant::now();
        if now + backoff.current() >= deadline {
            return Err(FirecrackerError::ReadinessTimeout {
                waited: start.elapsed(),
                attempts,
                last_error: last_error.unwrap_or_default(),
            });
        }
        backoff.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_proto::agent::encode_ok;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::UnixListener;

    /// A hybrid-vsock stand-in: the first `refuse` connections are closed without OK.
    async fn fake_muxer(listener: UnixListener, refuse: usize, silent: bool) {
        let mut n = 0;
        loop {
            let (s, _) = listener.accept().await.unwrap();
            let mut r = BufReader::new(s);
            let mut line = String::new();
            r.read_line(&mut line).await.unwrap();
            assert_eq!(line, "CONNECT 52\n");
            n += 1;
            if n <= refuse {
                continue;
            }
            r.get_mut().write_all(b"OK 1073741824\n").await.unwrap();
            if silent {
                std::future::pending::<()>().await;
            }
            let mut req = String::new();
            r.read_line(&mut req).await.unwrap();
            let reply = PingReply {
                version: "t".into(),
                boot_id: "b".into(),
                uptime_ms: 5,
            };
            r.get_mut().write_all(&encode_ok(&reply)).await.unwrap();
        }
    }

    #[actix::test]
    async fn retries_until_the_agent_answers() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let listener = UnixListener::bind(&uds).unwrap();
        tokio::spawn(fake_muxer(listener, 3, false));
        let out = probe(&uds, 52, Duration::from_secs(5)).await.unwrap();
        assert_eq!(out.attempts, 4);
        assert_eq!(out.reply.uptime_ms, 5);
    }

    #[actix::test]
    async fn silent_agent_times_out_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let listener = UnixListener::bind(&uds).unwrap();
        tokio::spawn(fake_muxer(listener, 0, true));
        match probe(&uds, 52, Duration::from_millis(100)).await {
            Err(FirecrackerError::ReadinessTimeout { last_error, .. }) => {
                assert!(last_error.contains("timed out"), "{last_error}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[actix::test]
    async fn missing_socket_times_out_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let err = probe(&dir.path().join("none"), 52, Duration::from_millis(30))
            .await
            .unwrap_err();
        assert!(matches!(err, FirecrackerError::ReadinessTimeout { attempts, .. } if attempts > 1));
    }
}
