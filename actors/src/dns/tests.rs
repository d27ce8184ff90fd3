//! Actor tests on 127.0.0.1 with random ports (no root needed): real queries over UDP and TCP
//! against the running server, a fake upstream resolver, start/stop/rebind, and the
//! atomicity of [`ReplaceRecords`].

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::*;

fn logger() -> Logger {
    Logger::root(slog::Discard, slog::o!())
}

fn options(upstreams: Vec<SocketAddr>) -> DnsOptions {
    let mut options = DnsOptions::new("vm.internal", upstreams);
    options.guest_subnet = Some("10.0.0.0/24".parse().unwrap());
    options.upstream_timeout = Duration::from_millis(200);
    options
}

fn records(pairs: &[(&str, Ipv4Addr)]) -> ReplaceRecords {
    ReplaceRecords {
        records: pairs.iter().map(|(n, ip)| (n.to_string(), *ip)).collect(),
    }
}

fn request(name: &str, qtype: RecordType) -> Message {
    let mut msg = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    msg
}

/// One query over UDP with a blocking socket (the server runs on its own threads).
pub(super) fn query_udp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let msg = request(name, qtype);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket.send_to(&msg.to_vec().unwrap(), server).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let (len, _) = socket.recv_from(&mut buf).expect("DNS reply within 5 s");
        let reply = Message::from_vec(&buf[..len]).unwrap();
        if reply.metadata.id == msg.metadata.id {
            return reply;
        }
    }
}

fn query_tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    use std::io::{Read, Write};
    let msg = request(name, qtype).to_vec().unwrap();
    let mut stream = std::net::TcpStream::connect(server).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(&(msg.len() as u16).to_be_bytes()).unwrap();
    stream.write_all(&msg).unwrap();
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).unwrap();
    Message::from_vec(&buf).unwrap()
}

fn a_answers(reply: &Message) -> Vec<Ipv4Addr> {
    reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(A(ip)) => Some(*ip),
            _ => None,
        })
        .collect()
}

fn soa_in_authority(reply: &Message) -> bool {
    reply
        .authorities
        .iter()
        .any(|r| r.record_type() == RecordType::SOA)
}

async fn start(upstreams: Vec<SocketAddr>) -> (Addr<DnsActor>, SocketAddr) {
    let actor = DnsActor::new(options(upstreams), logger()).unwrap().start();
    let addr = actor
        .send(Start {
            listen: "127.0.0.1:0".parse().unwrap(),
        })
        .await
        .unwrap()
        .unwrap();
    (actor, addr)
}

/// Runs a blocking client call off the actix thread.
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[actix::test]
async fn answers_a_aaaa_ptr_and_nxdomain() {
    let (actor, server) = start(vec![]).await;
    let web = Ipv4Addr::new(10, 0, 0, 2);
    actor.send(records(&[("Web", web)])).await.unwrap().unwrap();

    let (a, a_upper, aaaa, nx, ptr, ptr_unknown, tcp) = blocking(move || {
        (
            query_udp(server, "web.vm.internal.", RecordType::A),
            query_udp(server, "WEB.VM.Internal.", RecordType::A),
            query_udp(server, "web.vm.internal.", RecordType::AAAA),
            query_udp(server, "nope.vm.internal.", RecordType::A),
            query_udp(server, "2.0.0.10.in-addr.arpa.", RecordType::PTR),
            query_udp(server, "9.0.0.10.in-addr.arpa.", RecordType::PTR),
            query_tcp(server, "web.vm.internal.", RecordType::A),
        )
    })
    .await;

    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert!(a.metadata.authoritative);
    assert_eq!(a_answers(&a), [web]);
    assert_eq!(a.answers[0].ttl, 5);
    assert_eq!(a.answers[0].name.to_ascii(), "web.vm.internal.");
    assert_eq!(a_answers(&a_upper), [web]);

    assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
    assert!(aaaa.answers.is_empty());
    assert!(soa_in_authority(&aaaa));

    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(nx.answers.is_empty());
    assert!(soa_in_authority(&nx));

    assert_eq!(ptr.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        ptr.answers.iter().map(|r| &r.data).collect::<Vec<_>>(),
        [&RData::PTR(PTR(
            Name::from_ascii("web.vm.internal.").unwrap()
        ))]
    );
    assert_eq!(ptr_unknown.metadata.response_code, ResponseCode::NXDomain);

    assert_eq!(a_answers(&tcp), [web]);
    actor.send(Stop).await.unwrap().unwrap();
}

#[actix::test]
async fn bad_names_are_rejected_and_table_unchanged() {
    let (actor, server) = start(vec![]).await;
    let web = Ipv4Addr::new(10, 0, 0, 2);
    actor.send(records(&[("web", web)])).await.unwrap().unwrap();

    for bad in ["bad_name", "-x", "a.b", ""] {
        let err = actor
            .send(records(&[("db", Ipv4Addr::new(10, 0, 0, 3)), (bad, web)]))
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(&err, DnsError::InvalidName { name, .. } if name == bad),
            "{err}"
        );
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
    }
    let (web_reply, db_reply) = blocking(move || {
        (
            query_udp(server, "web.vm.internal.", RecordType::A),
            query_udp(server, "db.vm.internal.", RecordType::A),
        )
    })
    .await;
    assert_eq!(a_answers(&web_reply), [web]);
    assert_eq!(db_reply.metadata.response_code, ResponseCode::NXDomain);
}

/// Every generation holds the same 50 names, each with an IP encoding (generation, index).
/// A client querying in a loop while the tables are replaced must always get an answer
/// (never NXDOMAIN from a half-built table), for the right index, and never see a
/// generation older than one it has already seen.
#[actix::test]
async fn replace_records_is_atomic() {
    const NAMES: u8 = 50;
    const GENERATIONS: u8 = 200;
    let (actor, server) = start(vec![]).await;
    let generation = |g: u8| ReplaceRecords {
        records: (0..NAMES)
            .map(|i| (format!("n{i}"), Ipv4Addr::new(10, 0, g, i)))
            .collect::<HashMap<_, _>>(),
    };
    actor.send(generation(0)).await.unwrap().unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let client = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut seen = 0u8;
            let mut queries = 0u32;
            let mut i = 0u8;
            while !done.load(Ordering::Relaxed) {
                let reply = query_udp(server, &format!("n{i}.vm.internal."), RecordType::A);
                let ips = a_answers(&reply);
                assert_eq!(ips.len(), 1, "n{i}: {reply:?}");
                let [_, _, g, idx] = ips[0].octets();
                assert_eq!(idx, i, "answer for the wrong name");
                assert!(g >= seen, "saw generation {g} after {seen}");
                seen = g;
                queries += 1;
                i = (i + 1) % NAMES;
            }
            (queries, seen)
        })
    };
    for g in 1..=GENERATIONS {
        actor.send(generation(g)).await.unwrap().unwrap();
        tokio::task::yield_now().await;
    }
    done.store(true, Ordering::Relaxed);
    let (queries, last) = blocking(move || client.join().unwrap()).await;
    assert!(queries > 0);
    assert!(last <= GENERATIONS);
}

#[actix::test]
async fn stop_frees_ports_and_start_rebinds() {
    let (actor, first) = start(vec![]).await;
    actor
        .send(records(&[("web", Ipv4Addr::new(10, 0, 0, 2))]))
        .await
        .unwrap()
        .unwrap();

    // Same address again: nothing changes.
    let again = actor.send(Start { listen: first }).await.unwrap().unwrap();
    assert_eq!(again, first);

    // A new address: the old one is released, the new one serves.
    let second = actor
        .send(Start {
            listen: "127.0.0.2:0".parse().unwrap(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.ip(), Ipv4Addr::new(127, 0, 0, 2));
    assert!(UdpSocket::bind(first).is_ok(), "old UDP port still bound");
    assert!(TcpListener::bind(first).is_ok(), "old TCP port still bound");
    let reply = blocking(move || query_udp(second, "web.vm.internal.", RecordType::A)).await;
    assert_eq!(a_answers(&reply), [Ipv4Addr::new(10, 0, 0, 2)]);

    // Stop: both ports can be bound by someone else (no SO_REUSEPORT) right away.
    actor.send(Stop).await.unwrap().unwrap();
    let udp = UdpSocket::bind(second).expect("UDP port freed by Stop");
    let tcp = TcpListener::bind(second).expect("TCP port freed by Stop");
    drop((udp, tcp));
    // Stopping twice is harmless; starting on the same address works again.
    actor.send(Stop).await.unwrap().unwrap();
    let third = actor.send(Start { listen: second }).await.unwrap().unwrap();
    assert_eq!(third, second);
    actor.send(Stop).await.unwrap().unwrap();
}

#[actix::test]
async fn bind_errors_name_the_address_and_keep_the_old_server() {
    let (actor, server) = start(vec![]).await;

    // A port held by someone else.
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let err = actor
        .send(Start { listen: taken_addr })
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(&err, DnsError::Bind { addr, .. } if *addr == taken_addr));
    assert!(err.to_string().contains(&taken_addr.to_string()), "{err}");

    // An address not on this host.
    let absent: SocketAddr = "192.0.2.1:5353".parse().unwrap();
    let err = actor
        .send(Start { listen: absent })
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("192.0.2.1:5353"), "{err}");

    // The server started first still answers.
    let reply = blocking(move || query_udp(server, "x.vm.internal.", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
}

/// A fake upstream resolver on 127.0.0.1: answers every A query with 10.9.9.9 over TCP; over
/// UDP too, unless `truncate`, when it answers with TC set and no records.
fn fake_upstream(truncate: bool) -> SocketAddr {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = TcpListener::bind(addr).unwrap();
    let answer = move |query: &[u8], tc: bool| -> Vec<u8> {
        let query = Message::from_vec(query).unwrap();
        let mut reply = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
        reply.metadata.recursion_available = true;
        reply.add_queries(query.queries.clone());
        if tc {
            reply.metadata.truncation = true;
        } else {
            reply.add_answer(Record::from_rdata(
                query.queries[0].name().clone(),
                60,
                RData::A(A(Ipv4Addr::new(10, 9, 9, 9))),
            ));
        }
        reply.to_vec().unwrap()
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((len, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&answer(&buf[..len], truncate), from);
        }
    });
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut stream in tcp.incoming().flatten() {
            let mut len = [0u8; 2];
            if stream.read_exact(&mut len).is_err() {
                continue;
            }
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if stream.read_exact(&mut buf).is_err() {
                continue;
            }
            let reply = answer(&buf, false);
            let _ = stream.write_all(&(reply.len() as u16).to_be_bytes());
            let _ = stream.write_all(&reply);
        }
    });
    addr
}

#[actix::test]
async fn other_names_are_forwarded() {
    let upstream = fake_upstream(false);
    let (_actor, server) = start(vec![upstream]).await;
    let (reply, outside_ptr) = blocking(move || {
        (
            query_udp(server, "example.test.", RecordType::A),
            query_udp(server, "8.8.8.8.in-addr.arpa.", RecordType::A),
        )
    })
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(!reply.metadata.authoritative);
    assert!(reply.metadata.recursion_available);
    assert_eq!(a_answers(&reply), [Ipv4Addr::new(10, 9, 9, 9)]);
    assert_eq!(reply.answers[0].name.to_ascii(), "example.test.");
    // Reverse names outside the guest subnet are not ours either.
    assert_eq!(a_answers(&outside_ptr), [Ipv4Addr::new(10, 9, 9, 9)]);
}

#[actix::test]
async fn truncated_upstream_answer_is_retried_over_tcp() {
    let upstream = fake_upstream(true);
    let (_actor, server) = start(vec![upstream]).await;
    let reply = blocking(move || query_udp(server, "big.example.test.", RecordType::A)).await;
    assert!(!reply.metadata.truncation);
    assert_eq!(a_answers(&reply), [Ipv4Addr::new(10, 9, 9, 9)]);
}

#[actix::test]
async fn no_upstream_answer_is_servfail() {
    // One upstream that never answers, one closed port.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let closed = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (_actor, server) = start(vec![silent.local_addr().unwrap(), closed]).await;
    let started = Instant::now();
    let reply = blocking(move || query_udp(server, "example.test.", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    // 2 rounds x 200 ms for the silent one; the closed one fails at once. Generous bound:
    // the point is that the client gets SERVFAIL rather than its own timeout.
    assert!(started.elapsed() < Duration::from_secs(4));

    // Without any upstream: SERVFAIL at once.
    let (_actor, server) = start(vec![]).await;
    let reply = blocking(move || query_udp(server, "example.test.", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
}

#[actix::test]
async fn invalid_zone_is_rejected() {
    let err = DnsActor::new(DnsOptions::new("bad_zone.internal", vec![]), logger())
        .err()
        .unwrap();
    assert!(err.to_string().contains("bad_zone.internal"), "{err}");
}

#[actix::test]
async fn forwards_in_flight_are_bounded() {
    // One worker, one forward at a time, an upstream that never answers: while the first
    // query waits for it, a second one gets SERVFAIL at once instead of a socket.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut options = options(vec![silent.local_addr().unwrap()]);
    options.workers = 1;
    options.max_forwards = 1;
    options.upstream_timeout = Duration::from_secs(2);
    options.upstream_rounds = 1;
    let actor = DnsActor::new(options, logger()).unwrap().start();
    let server = actor
        .send(Start {
            listen: "127.0.0.1:0".parse().unwrap(),
        })
        .await
        .unwrap()
        .unwrap();
    let (first, second, elapsed) = blocking(move || {
        let first = std::thread::spawn(move || query_udp(server, "one.test.", RecordType::A));
        // Wait until the first query is at the upstream, i.e. holds the only permit.
        let mut buf = [0u8; 512];
        silent.recv_from(&mut buf).unwrap();
        let started = Instant::now();
        let second = query_udp(server, "two.test.", RecordType::A);
        let elapsed = started.elapsed();
        (first.join().unwrap(), second, elapsed)
    })
    .await;
    assert_eq!(second.metadata.response_code, ResponseCode::ServFail);
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    assert_eq!(first.metadata.response_code, ResponseCode::ServFail);
}

/// A fake upstream counting the queries it gets: `nx*` names are NXDOMAIN (with an SOA of
/// minimum 30 s), `fail*` names SERVFAIL, `long*` names a CNAME to `edge.cdn.test.` whose A
/// record is 10.9.9.9, both with TTL one day; every other A query 10.9.9.9 with TTL 60.
fn counting_upstream() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use hickory_proto::rr::rdata::SOA;
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = udp.local_addr().unwrap();
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = asked.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((len, from)) = udp.recv_from(&mut buf) {
            count.fetch_add(1, Ordering::SeqCst);
            let query = Message::from_vec(&buf[..len]).unwrap();
            let mut reply = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
            reply.metadata.recursion_available = true;
            reply.add_queries(query.queries.clone());
            let name = query.queries[0].name().clone();
            let label = name.to_ascii();
            if label.starts_with("nx") {
                reply.metadata.response_code = ResponseCode::NXDomain;
                let soa = SOA::new(
                    Name::from_ascii("ns.test.").unwrap(),
                    Name::from_ascii("h.test.").unwrap(),
                    1,
                    60,
                    60,
                    600,
                    30,
                );
                reply.add_authority(Record::from_rdata(
                    Name::from_ascii("test.").unwrap(),
                    300,
                    RData::SOA(soa),
                ));
            } else if label.starts_with("fail") {
                reply.metadata.response_code = ResponseCode::ServFail;
            } else if label.starts_with("long") {
                let edge = Name::from_ascii("edge.cdn.test.").unwrap();
                reply.add_answer(Record::from_rdata(
                    name,
                    86400,
                    RData::CNAME(hickory_proto::rr::rdata::CNAME(edge.clone())),
                ));
                reply.add_answer(Record::from_rdata(
                    edge,
                    86400,
                    RData::A(A(Ipv4Addr::new(10, 9, 9, 9))),
                ));
            } else {
                reply.add_answer(Record::from_rdata(
                    name,
                    60,
                    RData::A(A(Ipv4Addr::new(10, 9, 9, 9))),
                ));
            }
            let _ = udp.send_to(&reply.to_vec().unwrap(), from);
        }
    });
    (addr, asked)
}

/// `query_udp` from a chosen loopback source address (a "guest").
fn query_udp_from(src: Ipv4Addr, server: SocketAddr, name: &str, id: u16) -> Message {
    let mut msg = request(name, RecordType::A);
    msg.metadata.id = id;
    let socket = UdpSocket::bind((src, 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket.send_to(&msg.to_vec().unwrap(), server).unwrap();
    let mut buf = [0u8; 4096];
    let (len, _) = socket.recv_from(&mut buf).expect("DNS reply within 5 s");
    Message::from_vec(&buf[..len]).unwrap()
}

#[actix::test]
async fn upstream_answers_are_cached_with_the_askers_id() {
    let (upstream, asked) = counting_upstream();
    let (_actor, server) = start(vec![upstream]).await;
    let local = Ipv4Addr::LOCALHOST;
    let (first, second, upper) = blocking(move || {
        (
            query_udp_from(local, server, "cached.test.", 1111),
            query_udp_from(local, server, "cached.test.", 2222),
            query_udp_from(local, server, "CACHED.Test.", 3333),
        )
    })
    .await;
    assert_eq!(asked.load(Ordering::SeqCst), 1, "upstream asked once");
    for (reply, id) in [(&first, 1111), (&second, 2222), (&upper, 3333)] {
        assert_eq!(reply.metadata.id, id);
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(a_answers(reply), [Ipv4Addr::new(10, 9, 9, 9)]);
        assert!(reply.answers[0].ttl <= 60);
    }
    // Over TCP, the same cache.
    let tcp = blocking(move || query_tcp(server, "cached.test.", RecordType::A)).await;
    assert_eq!(a_answers(&tcp), [Ipv4Addr::new(10, 9, 9, 9)]);
    assert_eq!(asked.load(Ordering::SeqCst), 1);
}

#[actix::test]
async fn nxdomain_is_cached_and_servfail_is_not() {
    let (upstream, asked) = counting_upstream();
    let (_actor, server) = start(vec![upstream]).await;
    let local = Ipv4Addr::LOCALHOST;
    let (nx1, nx2) = blocking(move || {
        (
            query_udp_from(local, server, "nx.test.", 1),
            query_udp_from(local, server, "nx.test.", 2),
        )
    })
    .await;
    assert_eq!(nx1.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(nx2.metadata.response_code, ResponseCode::NXDomain);
    assert!(soa_in_authority(&nx2));
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    // SERVFAIL: asked again each time (2 rounds per query, one upstream).
    let (f1, f2) = blocking(move || {
        (
            query_udp_from(local, server, "fail.test.", 3),
            query_udp_from(local, server, "fail.test.", 4),
        )
    })
    .await;
    assert_eq!(f1.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(f2.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(asked.load(Ordering::SeqCst), 1 + 2 + 2);
}

/// A learner recording what it is asked to allow.
struct RecordingLearner(Arc<std::sync::Mutex<Vec<crate::nat::egress::AllowLearned>>>);

impl Actor for RecordingLearner {
    type Context = Context<Self>;
}

impl Handler<crate::nat::egress::AllowLearned> for RecordingLearner {
    type Result = Result<usize, crate::nat::NatError>;

    fn handle(
        &mut self,
        msg: crate::nat::egress::AllowLearned,
        _: &mut Context<Self>,
    ) -> Self::Result {
        let n = msg.addrs.len();
        self.0.lock().unwrap().push(msg);
        Ok(n)
    }
}

#[actix::test]
async fn a_cache_hit_teaches_the_asking_guest_only() {
    let (upstream, asked) = counting_upstream();
    let (actor, server) = start(vec![upstream]).await;
    let learned = Arc::new(std::sync::Mutex::new(Vec::new()));
    let learner = RecordingLearner(learned.clone()).start();
    actor
        .send(SetEgressLearner {
            learner: Some(learner.recipient()),
        })
        .await
        .unwrap();
    let (guest_a, guest_b, free) = (
        Ipv4Addr::new(127, 0, 0, 2),
        Ipv4Addr::new(127, 0, 0, 3),
        Ipv4Addr::new(127, 0, 0, 4),
    );
    for guest in [guest_a, guest_b] {
        actor
            .send(SetEgressDomains {
                guest,
                domains: Some(vec!["api.example.test".into()]),
            })
            .await
            .unwrap()
            .unwrap();
    }
    let seen = |learned: &Arc<std::sync::Mutex<Vec<crate::nat::egress::AllowLearned>>>| {
        learned
            .lock()
            .unwrap()
            .iter()
            .map(|m| (m.guest, m.addrs.clone()))
            .collect::<Vec<_>>()
    };
    let nine = Ipv4Addr::new(10, 9, 9, 9);
    // Guest A asks: forwarded, learned for A only.
    blocking(move || query_udp_from(guest_a, server, "api.example.test.", 1)).await;
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    let after_a = seen(&learned);
    assert_eq!(after_a.len(), 1);
    assert_eq!(after_a[0].0, guest_a);
    assert_eq!(after_a[0].1[0].0, nine);
    // A source without a policy gets the cached answer and teaches nobody.
    let reply = blocking(move || query_udp_from(free, server, "api.example.test.", 2)).await;
    assert_eq!(a_answers(&reply), [nine]);
    assert_eq!(seen(&learned).len(), 1);
    // Guest B asks: a cache hit, learned for B, with the remaining TTL, before the reply.
    let reply = blocking(move || query_udp_from(guest_b, server, "api.example.test.", 3)).await;
    assert_eq!(asked.load(Ordering::SeqCst), 1, "served from the cache");
    assert_eq!(a_answers(&reply), [nine]);
    let after_b = seen(&learned);
    assert_eq!(after_b.len(), 2);
    assert_eq!(after_b[1].0, guest_b);
    assert_eq!(after_b[1].1, [(nine, reply.answers[0].ttl)]);
    assert!(reply.answers[0].ttl <= 60);
    // After a change of B's patterns, B's next hit is learned again (never skipped on the
    // strength of a confirmation from before the change).
    actor
        .send(SetEgressDomains {
            guest: guest_b,
            domains: Some(vec!["api.example.test".into(), "other.test".into()]),
        })
        .await
        .unwrap()
        .unwrap();
    blocking(move || query_udp_from(guest_b, server, "api.example.test.", 4)).await;
    let after_change = seen(&learned);
    assert_eq!(after_change.len(), 3);
    assert_eq!(after_change[2].0, guest_b);
    assert_eq!(asked.load(Ordering::SeqCst), 1);
}

#[actix::test]
async fn learned_answers_carry_ttls_no_longer_than_the_allowlist_keeps_them() {
    use crate::nat::egress::MAX_LEARNED_SECS;
    let (upstream, _asked) = counting_upstream();
    let (actor, server) = start(vec![upstream]).await;
    let learned = Arc::new(std::sync::Mutex::new(Vec::new()));
    let learner = RecordingLearner(learned.clone()).start();
    actor
        .send(SetEgressLearner {
            learner: Some(learner.recipient()),
        })
        .await
        .unwrap();
    let (guest, free) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 4));
    actor
        .send(SetEgressDomains {
            guest,
            domains: Some(vec!["long.example.test".into()]),
        })
        .await
        .unwrap()
        .unwrap();
    let ttls = |reply: &Message| reply.answers.iter().map(|r| r.ttl).collect::<Vec<_>>();
    // First asked by the guest (forwarded), then again (a cache hit, already confirmed).
    for id in [1, 2] {
        let reply = blocking(move || query_udp_from(guest, server, "long.example.test.", id)).await;
        assert_eq!(a_answers(&reply), [Ipv4Addr::new(10, 9, 9, 9)]);
        assert_eq!(ttls(&reply).len(), 2, "the CNAME and the A record");
        assert!(
            ttls(&reply).iter().all(|ttl| *ttl <= MAX_LEARNED_SECS),
            "{:?}",
            ttls(&reply)
        );
    }
    assert_eq!(learned.lock().unwrap().len(), 1);
    // A source without a policy learns nothing and gets the upstream's TTLs.
    let reply = blocking(move || query_udp_from(free, server, "long.example.test.", 3)).await;
    assert!(
        ttls(&reply).iter().all(|ttl| *ttl > MAX_LEARNED_SECS),
        "{:?}",
        ttls(&reply)
    );
}

#[actix::test]
async fn a_burst_of_queries_is_answered_in_full_past_malformed_and_oversized_ones() {
    let (upstream, _asked) = counting_upstream();
    let (actor, server) = start(vec![upstream]).await;
    let (web, db, nine) = (
        Ipv4Addr::new(10, 0, 0, 2),
        Ipv4Addr::new(10, 0, 0, 3),
        Ipv4Addr::new(10, 9, 9, 9),
    );
    actor
        .send(records(&[("web", web), ("db", db)]))
        .await
        .unwrap()
        .unwrap();
    const QUERIES: u16 = 200;
    const MALFORMED: u16 = 100;
    // What each ID must be answered with: hearth's names, forwarded names (a few upstream
    // asks, the rest cache hits), NXDOMAIN; `MALFORMED` is cut short (FORMERR with its ID),
    // and a runt right after it gets no reply at all.
    let expected = |id: u16| -> (ResponseCode, Vec<Ipv4Addr>) {
        match id % 4 {
            _ if id == MALFORMED => (ResponseCode::FormErr, vec![]),
            0 => (ResponseCode::NoError, vec![web]),
            1 => (ResponseCode::NoError, vec![db]),
            2 => (ResponseCode::NoError, vec![nine]),
            _ => (ResponseCode::NXDomain, vec![]),
        }
    };
    let name = |id: u16| match id % 4 {
        0 => "web.vm.internal.".to_owned(),
        1 => "db.vm.internal.".to_owned(),
        2 => format!("fwd{}.test.", id % 5),
        _ => "nope.vm.internal.".to_owned(),
    };
    let replies = blocking(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // Room for every reply before the first is read (the default buffer is close to
        // 200 replies' kernel overhead): past rmem_max where allowed (root), else its maximum.
        use nix::sys::socket::{setsockopt, sockopt};
        if setsockopt(&socket, sockopt::RcvBufForce, &(4 << 20)).is_err() {
            let _ = setsockopt(&socket, sockopt::RcvBuf, &(4 << 20));
        }
        // Sent back to back, before reading anything: the server takes them in batches.
        for id in 0..QUERIES {
            let mut msg = request(&name(id), RecordType::A);
            msg.metadata.id = id;
            let mut bytes = msg.to_vec().unwrap();
            if id == MALFORMED {
                bytes.truncate(15);
                socket.send_to(&bytes, server).unwrap();
                socket.send_to(&[1, 2, 3], server).unwrap();
                // Longer than any query hearth takes (cut at MAX_QUERY_SIZE): whatever it
                // gets (FORMERR under ID 0xffff, or nothing), the batch goes on.
                socket.send_to(&[0xff; 6000], server).unwrap();
                continue;
            }
            socket.send_to(&bytes, server).unwrap();
        }
        let mut replies = HashMap::new();
        let mut buf = [0u8; 4096];
        while replies.len() < usize::from(QUERIES) {
            let Ok((len, _)) = socket.recv_from(&mut buf) else {
                break;
            };
            let reply = Message::from_vec(&buf[..len]).unwrap();
            let id = reply.metadata.id;
            if id == 0xffff {
                continue; // the oversized datagram's
            }
            assert!(replies.insert(id, reply).is_none(), "two replies for {id}");
        }
        replies
    })
    .await;
    assert_eq!(replies.len(), usize::from(QUERIES), "every query answered");
    for (id, reply) in &replies {
        let (code, addrs) = expected(*id);
        assert_eq!(reply.metadata.response_code, code, "id {id}");
        assert_eq!(a_answers(reply), addrs, "id {id}");
        if *id != MALFORMED {
            assert_eq!(
                reply.queries[0].name().to_ascii(),
                name(*id),
                "id {id} answers its own question"
            );
        }
    }
    actor.send(Stop).await.unwrap().unwrap();
}

/// One worker where the thread may use one CPU only, else two (this test changes only its own
/// thread's affinity, and puts it back).
#[test]
fn one_worker_on_one_cpu() {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    let before = sched_getaffinity(Pid::from_raw(0)).unwrap();
    let first = (0..CpuSet::count())
        .find(|&c| before.is_set(c).unwrap_or(false))
        .unwrap();
    let mut one = CpuSet::new();
    one.set(first).unwrap();
    sched_setaffinity(Pid::from_raw(0), &one).unwrap();
    let pinned = super::default_workers();
    let options = DnsOptions::new("vm.test", vec![]).workers;
    sched_setaffinity(Pid::from_raw(0), &before).unwrap();
    assert_eq!((pinned, options), (1, 1));
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(super::default_workers(), cpus.min(2));
}
