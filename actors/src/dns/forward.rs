//! Forwarding names outside hearth's zones to the upstream resolvers: the client's query is
//! sent as is (with a fresh random ID) over UDP from a fresh socket with a random source port,
//! one upstream after the other, for a number of rounds; a truncated UDP answer is retried over
//! TCP with the same upstream. An upstream that answers SERVFAIL or REFUSED is skipped for the
//! next one; when nobody gives a usable answer the caller answers SERVFAIL. Clean answers are
//! kept in an [`AnswerCache`] and handed out from it until their TTL runs out.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::LowerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{timeout, timeout_at, Instant};

use super::cache::{AnswerCache, CacheKey};

/// Why a forwarded query got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No upstream resolvers are configured.
    #[error("No upstream resolvers configured")]
    NoUpstreams,
    /// The query is too short to carry a DNS header.
    #[error("Query too short to forward")]
    ShortQuery,
    /// Every attempt timed out, failed, or was answered with SERVFAIL/REFUSED.
    #[error("No upstream answered")]
    NoAnswer,
}

/// Why one exchange with one upstream failed.
#[derive(Debug, thiserror::Error)]
enum ExchangeError {
    #[error("I/O error")]
    Io(#[from] std::io::Error),
    #[error("Timed out")]
    Timeout,
    #[error("Malformed reply")]
    Malformed,
}

/// Forwards queries to a fixed list of upstream resolvers.
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    attempt_timeout: Duration,
    rounds: u32,
    cache: AnswerCache,
}

impl Forwarder {
    /// A forwarder trying each of `upstreams` in order, `rounds` times over, waiting
    /// `attempt_timeout` for each answer, without a cache.
    pub fn new(upstreams: Vec<SocketAddr>, attempt_timeout: Duration, rounds: u32) -> Self {
        Self {
            upstreams,
            attempt_timeout,
            rounds: rounds.max(1),
            cache: AnswerCache::new(0),
        }
    }

    /// The same forwarder keeping up to `entries` answers (0: none).
    #[must_use]
    pub fn with_cache(mut self, entries: usize) -> Self {
        self.cache = AnswerCache::new(entries);
        self
    }

    /// Answers the raw `query` (whose question and flags are `key`) from the cache, or sends
    /// it upstream and returns the first usable answer. The answer's ID is not the asker's:
    /// the caller answers with its own.
    pub async fn forward(&self, query: &[u8], key: &CacheKey) -> Result<Message, ForwardError> {
        if let Some(cached) = self.cached(key) {
            return Ok(cached);
        }
        let (reply, wire_len) = self.ask_upstreams(query, key.name()).await?;
        self.cache
            .insert(key.clone(), &reply, wire_len, std::time::Instant::now());
        Ok(reply)
    }

    /// The cached answer for `key`, if any (with its TTLs lowered by the time it was held),
    /// without waiting for anything: what the UDP fast path answers inline.
    pub fn cached(&self, key: &CacheKey) -> Option<Message> {
        self.cache
            .get(key, std::time::Instant::now())
            .map(|hit| hit.message())
    }

    /// The first usable upstream answer to `query` and its length on the wire.
    async fn ask_upstreams(
        &self,
        query: &[u8],
        qname: &LowerName,
    ) -> Result<(Message, usize), ForwardError> {
        if self.upstreams.is_empty() {
            return Err(ForwardError::NoUpstreams);
        }
        if query.len() < 12 {
            return Err(ForwardError::ShortQuery);
        }
        let mut packet = query.to_vec();
        let mut fallback = None;
        for _ in 0..self.rounds {
            for upstream in &self.upstreams {
                let id: u16 = rand::random();
                packet[..2].copy_from_slice(&id.to_be_bytes());
                let reply = match self.udp_exchange(*upstream, &packet, id, qname).await {
                    Ok(reply) if reply.0.metadata.truncation => {
                        match self.tcp_exchange(*upstream, &packet, id, qname).await {
                            Ok(full) => full,
                            Err(_) => reply,
                        }
                    }
                    Ok(reply) => reply,
                    Err(_) => continue,
                };
                match reply.0.metadata.response_code {
                    ResponseCode::ServFail | ResponseCode::Refused => fallback = Some(reply),
                    _ => return Ok(reply),
                }
            }
        }
        fallback.ok_or(ForwardError::NoAnswer)
    }

    async fn udp_exchange(
        &self,
        upstream: SocketAddr,
        packet: &[u8],
        id: u16,
        qname: &LowerName,
    ) -> Result<(Message, usize), ExchangeError> {
        let local: SocketAddr = match upstream {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local).await?;
        // Connected: the kernel drops datagrams from anyone else, and an ICMP port-unreachable
        // surfaces as ECONNREFUSED at once instead of a timeout.
        socket.connect(upstream).await?;
        socket.send(packet).await?;
        let deadline = Instant::now() + self.attempt_timeout;
        let mut buf = vec![0u8; 65535];
        loop {
            let len = timeout_at(deadline, socket.recv(&mut buf))
                .await
                .map_err(|_| ExchangeError::Timeout)??;
            // Stray or spoofed datagrams (wrong ID, wrong question) are ignored.
            if let Some(reply) = parse_reply(&buf[..len], id, qname) {
                return Ok((reply, len));
            }
        }
    }

    async fn tcp_exchange(
        &self,
        upstream: SocketAddr,
        packet: &[u8],
        id: u16,
        qname: &LowerName,
    ) -> Result<(Message, usize), ExchangeError> {
        let exchange = async {
            let mut stream = TcpStream::connect(upstream).await?;
            let len = u16::try_from(packet.len()).map_err(|_| ExchangeError::Malformed)?;
            let mut framed = Vec::with_capacity(packet.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(packet);
            stream.write_all(&framed).await?;
            let len = usize::from(stream.read_u16().await?);
            let mut buf = vec![0u8; len];
            stream.read_exact(&mut buf).await?;
            let reply = parse_reply(&buf, id, qname).ok_or(ExchangeError::Malformed)?;
            Ok((reply, len))
        };
        timeout(self.attempt_timeout, exchange)
            .await
            .map_err(|_| ExchangeError::Timeout)?
    }
}

/// Parses an upstream reply and checks it answers our query: a response, with our ID, for our
/// question name.
fn parse_reply(bytes: &[u8], id: u16, qname: &LowerName) -> Option<Message> {
    let reply = Message::from_vec(bytes).ok()?;
    let ours = reply.metadata.message_type == MessageType::Response
        && reply.metadata.id == id
        && reply.queries.len() == 1
        && LowerName::new(reply.queries[0].name()) == *qname;
    ours.then_some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};

    fn query_for(name: &str) -> (Vec<u8>, LowerName) {
        let name = Name::from_ascii(name).unwrap();
        let mut msg = Message::new(1, MessageType::Query, OpCode::Query);
        msg.add_query(Query::query(name.clone(), RecordType::A));
        (msg.to_vec().unwrap(), LowerName::new(&name))
    }

    fn key_for(name: &LowerName) -> CacheKey {
        use hickory_proto::rr::DNSClass;
        let header = Message::new(1, MessageType::Query, OpCode::Query).metadata;
        CacheKey::new(name.clone(), RecordType::A, DNSClass::IN, &header, false)
    }

    #[test]
    fn replies_must_match_id_and_question() {
        let (_, qname) = query_for("example.test.");
        let mut reply = Message::new(7, MessageType::Response, OpCode::Query);
        reply.add_query(Query::query(
            Name::from_ascii("EXAMPLE.test.").unwrap(),
            RecordType::A,
        ));
        let bytes = reply.to_vec().unwrap();
        assert!(parse_reply(&bytes, 7, &qname).is_some());
        assert!(parse_reply(&bytes, 8, &qname).is_none());
        let (_, other) = query_for("other.test.");
        assert!(parse_reply(&bytes, 7, &other).is_none());
        assert!(parse_reply(&bytes[..5], 7, &qname).is_none());
    }

    #[tokio::test]
    async fn no_upstreams_is_an_error() {
        let (q, name) = query_for("example.test.");
        let fwd = Forwarder::new(vec![], Duration::from_millis(50), 1);
        assert!(matches!(
            fwd.forward(&q, &key_for(&name)).await,
            Err(ForwardError::NoUpstreams)
        ));
    }

    #[tokio::test]
    async fn silent_upstream_times_out_and_closed_port_fails_fast() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let closed = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        };
        let (q, name) = query_for("example.test.");
        let fwd = Forwarder::new(
            vec![closed, silent.local_addr().unwrap()],
            Duration::from_millis(50),
            2,
        );
        assert!(matches!(
            fwd.forward(&q, &key_for(&name)).await,
            Err(ForwardError::NoAnswer)
        ));
    }
}
