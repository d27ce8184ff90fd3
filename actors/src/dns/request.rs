//! The request handler the hickory server calls for every query: it reads the current table
//! snapshot (never a lock), answers hearth's names from it, and hands every other name to the
//! [`Forwarder`]. Replies are built from records already in the table, so a zone answer
//! allocates nothing beyond what hickory itself does per request.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, Message, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::op::{LowerQuery, MessageType};
use hickory_server::proto::rr::rdata::PTR;
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::proto::serialize::binary::{
    BinDecodable, BinDecoder, BinEncodable, BinEncoder,
};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};

use super::cache::CacheKey;
use super::egress::{cap_learned_ttls, EgressGuests, LearnPlan};
use super::forward::Forwarder;
use super::table::{RecordTable, Resolution};

/// The largest UDP payload hearth advertises in its own EDNS record.
const MAX_UDP_PAYLOAD: u16 = 4096;

/// Answers queries from the current [`RecordTable`] snapshot, forwarding the rest.
#[derive(Clone)]
pub struct DnsRequestHandler {
    table: Arc<ArcSwap<RecordTable>>,
    forwarder: Arc<Forwarder>,
    max_forwards: usize,
    egress: Arc<EgressGuests>,
}

impl DnsRequestHandler {
    /// A handler reading `table` (swapped by the actor) and forwarding through `forwarder`,
    /// at most `max_forwards` UDP queries at a time per worker.
    pub fn new(
        table: Arc<ArcSwap<RecordTable>>,
        forwarder: Arc<Forwarder>,
        max_forwards: usize,
    ) -> Self {
        Self {
            table,
            forwarder,
            max_forwards,
            egress: Arc::default(),
        }
    }

    /// The same handler learning egress allowances through `egress` (see `egress.rs`).
    #[must_use]
    pub fn with_egress(mut self, egress: Arc<EgressGuests>) -> Self {
        self.egress = egress;
        self
    }

    /// How many forwarded UDP queries one worker keeps in flight; beyond, SERVFAIL at once.
    pub fn max_forwards(&self) -> usize {
        self.max_forwards
    }
}

/// The response code and sections of a reply from hearth's own zones; `ptrs` are the
/// records made by [`ptr_records`] for a [`Resolution::Ptr`].
pub fn zone_reply<'t>(
    resolution: &Resolution<'t>,
    ptrs: &'t [Record],
) -> (ResponseCode, &'t [Record], Option<&'t Record>) {
    match resolution {
        Resolution::Answer(records) => (ResponseCode::NoError, records, None),
        Resolution::Ptr(_) => (ResponseCode::NoError, ptrs, None),
        Resolution::NoData(soa) => (ResponseCode::NoError, &[], *soa),
        Resolution::NxDomain(soa) => (ResponseCode::NXDomain, &[], Some(*soa)),
        Resolution::Forward => (ResponseCode::ServFail, &[], None),
    }
}

/// One PTR record per name, owned by the query name `qname` (as asked, lower-cased).
pub fn ptr_records(qname: &LowerName, names: &[Name], ttl: u32) -> Vec<Record> {
    let owner = Name::from(qname);
    names
        .iter()
        .map(|name| Record::from_rdata(owner.clone(), ttl, RData::PTR(PTR(name.clone()))))
        .collect()
}

/// The EDNS record of a reply: present only when the query had one (RFC 6891), with the
/// client's payload size (at least 512, at most [`MAX_UDP_PAYLOAD`]).
fn reply_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref()?;
    let mut edns = Edns::new();
    edns.set_max_payload(request.max_payload().min(MAX_UDP_PAYLOAD));
    Some(edns)
}

fn serve_failed(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

/// What [`DnsRequestHandler::answer_udp`] did with a datagram.
pub enum UdpAnswer {
    /// The reply is in the output buffer.
    Reply,
    /// Not hearth's name: answer later with [`DnsRequestHandler::forward_udp`].
    Forward(Box<Request>),
    /// Not a query (too short, or a response): no reply at all.
    Ignore,
}

impl DnsRequestHandler {
    /// The UDP fast path: parses `raw` and, unless it must be forwarded, encodes the reply
    /// into `out` synchronously, without a task: hearth's names from the table snapshot (no
    /// lock), other names from the answer cache when the asker need not wait for the egress
    /// learner (one short lock).
    pub fn answer_udp(&self, raw: &[u8], src: SocketAddr, out: &mut Vec<u8>) -> UdpAnswer {
        let Ok(header) = Header::read(&mut BinDecoder::new(raw)) else {
            return UdpAnswer::Ignore;
        };
        if header.metadata.message_type != MessageType::Query {
            return UdpAnswer::Ignore;
        }
        let Ok(request) = Request::from_bytes(raw.to_vec(), src, Protocol::Udp) else {
            encode_header_only(&header.metadata, ResponseCode::FormErr, out);
            return UdpAnswer::Reply;
        };
        let edns = reply_edns(&request);
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let meta = &request.metadata;
        let max_size = udp_max_size(&request);
        let query = match single_query(&request) {
            Ok(query) => query,
            Err(code) => {
                encode(builder.error_msg(meta, code), max_size, meta, out);
                return UdpAnswer::Reply;
            }
        };
        let table = self.table.load();
        let resolution = table.resolve(query.name(), query.query_type(), query.query_class());
        if resolution == Resolution::Forward {
            if let Some(upstream) = self.cached_for(&request, query) {
                let reply = forwarded_reply(builder, meta, &upstream);
                encode(reply, max_size, meta, out);
                return UdpAnswer::Reply;
            }
            return UdpAnswer::Forward(Box::new(request));
        }
        let ptrs = match &resolution {
            Resolution::Ptr(names) => ptr_records(query.name(), names, table.ttl()),
            _ => Vec::new(),
        };
        let (code, answers, soa) = zone_reply(&resolution, &ptrs);
        let reply = builder.build(
            zone_metadata(meta, code),
            answers.iter(),
            std::iter::empty(),
            soa,
            std::iter::empty(),
        );
        encode(reply, max_size, meta, out);
        UdpAnswer::Reply
    }

    /// A cached answer to `query` that may leave at once: the asker has no pattern for the
    /// name, or its allowlist already holds the answer's addresses (TTLs then capped). `None`
    /// when the answer is not cached or the learner must be asked first (a task does that).
    fn cached_for(&self, request: &Request, query: &LowerQuery) -> Option<Message> {
        let mut upstream = self.forwarder.cached(&cache_key(request, query))?;
        match self
            .egress
            .plan(request.src().ip(), query.name(), &upstream.answers)
        {
            LearnPlan::Nothing => {}
            LearnPlan::Known(secs) => cap_learned_ttls(&mut upstream.answers, secs),
            LearnPlan::Ask(_) => return None,
        }
        Some(upstream)
    }

    /// Forwards a request [`answer_udp`](Self::answer_udp) handed back and encodes the reply
    /// (the upstream's answer, or SERVFAIL) into `out`.
    pub async fn forward_udp(&self, request: &Request, out: &mut Vec<u8>) {
        let edns = reply_edns(request);
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let meta = &request.metadata;
        let max_size = udp_max_size(request);
        let Ok(query) = single_query(request) else {
            encode(
                builder.error_msg(meta, ResponseCode::FormErr),
                max_size,
                meta,
                out,
            );
            return;
        };
        if let Some(upstream) = self.forwarded(request, query).await {
            let reply = forwarded_reply(builder, meta, &upstream);
            encode(reply, max_size, meta, out);
        } else {
            encode(
                builder.error_msg(meta, ResponseCode::ServFail),
                max_size,
                meta,
                out,
            );
        }
    }

    /// The upstream's (or the cache's) answer to `query`, its addresses allowed first for a
    /// deny-mode guest whose pattern the name matches (and its TTLs then capped at what the
    /// allowlist keeps); `None` when the reply must be SERVFAIL (no upstream answer, or the
    /// guest's allowlist could not take the addresses).
    async fn forwarded(&self, request: &Request, query: &LowerQuery) -> Option<Message> {
        let mut upstream = self
            .forwarder
            .forward(request.as_slice(), &cache_key(request, query))
            .await
            .ok()?;
        // The guest's allowlist holds the answer before the answer leaves.
        let learned = self
            .egress
            .learn(request.src().ip(), query.name(), &upstream.answers)
            .await
            .ok()?;
        if let Some(secs) = learned {
            cap_learned_ttls(&mut upstream.answers, secs);
        }
        Some(upstream)
    }
}

impl DnsRequestHandler {
    /// Encodes a bare error reply (e.g. SERVFAIL when too many queries are being forwarded)
    /// to a request [`answer_udp`](Self::answer_udp) handed back.
    #[expect(
        clippy::unused_self,
        reason = "a method like `answer_udp`, whose reply it replaces"
    )]
    pub fn fail_udp(&self, request: &Request, code: ResponseCode, out: &mut Vec<u8>) {
        let edns = reply_edns(request);
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let meta = &request.metadata;
        encode(
            builder.error_msg(meta, code),
            udp_max_size(request),
            meta,
            out,
        );
    }
}

/// The one question of a standard query, or the response code refusing it.
fn single_query(request: &Request) -> Result<&LowerQuery, ResponseCode> {
    if request.metadata.op_code != OpCode::Query {
        return Err(ResponseCode::NotImp);
    }
    match request.queries.queries() {
        [query] => Ok(query),
        _ => Err(ResponseCode::FormErr),
    }
}

/// What a forwarded answer to `query` depends on: the question and the bits forwarded with it.
fn cache_key(request: &Request, query: &LowerQuery) -> CacheKey {
    CacheKey::new(
        query.name().clone(),
        query.query_type(),
        query.query_class(),
        &request.metadata,
        request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
    )
}

/// Header of a reply from hearth's own zones.
fn zone_metadata(request: &Metadata, code: ResponseCode) -> Metadata {
    let mut meta = Metadata::response_from_request(request);
    meta.authoritative = true;
    meta.recursion_available = true;
    meta.response_code = code;
    meta
}

/// Header of a forwarded reply: the upstream's, with the client's ID and RD bit.
fn forwarded_metadata(request: &Metadata, upstream: &Message) -> Metadata {
    let mut meta = upstream.metadata;
    meta.id = request.id;
    meta.recursion_desired = request.recursion_desired;
    meta.recursion_available = true;
    meta
}

/// A forwarded reply: the upstream's records under [`forwarded_metadata`].
fn forwarded_reply<'q, 'a>(
    builder: MessageResponseBuilder<'q>,
    request: &Metadata,
    upstream: &'a Message,
) -> MessageResponse<
    'q,
    'a,
    std::slice::Iter<'a, Record>,
    std::slice::Iter<'a, Record>,
    std::iter::Empty<&'a Record>,
    std::slice::Iter<'a, Record>,
> {
    builder.build(
        forwarded_metadata(request, upstream),
        upstream.answers.iter(),
        upstream.authorities.iter(),
        std::iter::empty(),
        upstream.additionals.iter(),
    )
}

/// The largest UDP reply the client accepts (RFC 6891; 512 without EDNS).
fn udp_max_size(request: &Request) -> u16 {
    match &request.edns {
        Some(_) => request.max_payload().min(MAX_UDP_PAYLOAD),
        None => 512,
    }
}

/// Encodes `response` into `out` (truncated, with TC set, beyond `max_size`); a reply that
/// cannot be encoded becomes a bare SERVFAIL.
fn encode<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    max_size: u16,
    request: &Metadata,
    out: &mut Vec<u8>,
) {
    out.clear();
    let mut encoder = BinEncoder::new(out);
    encoder.set_max_size(max_size);
    if response.destructive_emit(&mut encoder).is_err() {
        encode_header_only(request, ResponseCode::ServFail, out);
    }
}

fn encode_header_only(request: &Metadata, code: ResponseCode, out: &mut Vec<u8>) {
    out.clear();
    let mut metadata = Metadata::response_from_request(request);
    metadata.response_code = code;
    let header = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    // A 12-byte header always fits.
    let _ = header.emit(&mut BinEncoder::new(out));
}

#[async_trait::async_trait]
impl RequestHandler for DnsRequestHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let edns = reply_edns(request);
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let meta = &request.metadata;
        let query = match single_query(request) {
            Ok(query) => query,
            Err(code) => {
                return response
                    .send_response(builder.error_msg(meta, code))
                    .await
                    .unwrap_or_else(|_| serve_failed(request));
            }
        };

        let table = self.table.load_full();
        let resolution = table.resolve(query.name(), query.query_type(), query.query_class());
        if resolution != Resolution::Forward {
            let ptrs = match &resolution {
                Resolution::Ptr(names) => ptr_records(query.name(), names, table.ttl()),
                _ => Vec::new(),
            };
            let (code, answers, soa) = zone_reply(&resolution, &ptrs);
            let reply = builder.build(
                zone_metadata(meta, code),
                answers.iter(),
                std::iter::empty(),
                soa,
                std::iter::empty(),
            );
            return response
                .send_response(reply)
                .await
                .unwrap_or_else(|_| serve_failed(request));
        }
        // Not held while waiting for upstreams: a replaced table is freed promptly.
        drop(table);

        let Some(upstream) = self.forwarded(request, query).await else {
            return response
                .send_response(builder.error_msg(meta, ResponseCode::ServFail))
                .await
                .unwrap_or_else(|_| serve_failed(request));
        };
        let reply = forwarded_reply(builder, meta, &upstream);
        response
            .send_response(reply)
            .await
            .unwrap_or_else(|_| serve_failed(request))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::Ipv4Addr;

    use hickory_server::proto::rr::{DNSClass, RecordType};

    use super::*;
    use crate::dns::table::ZoneConfig;

    fn table() -> RecordTable {
        let config = ZoneConfig::new("vm.internal", 5, Some("10.0.0.0/24".parse().unwrap()));
        let records: HashMap<String, Ipv4Addr> = [
            ("web".to_string(), Ipv4Addr::new(10, 0, 0, 2)),
            ("db".to_string(), Ipv4Addr::new(10, 0, 0, 2)),
        ]
        .into();
        RecordTable::build(&config.unwrap(), &records, 1).unwrap()
    }

    fn lower(name: &str) -> LowerName {
        LowerName::new(&Name::from_ascii(name).unwrap())
    }

    #[test]
    fn zone_replies_carry_code_answers_and_soa() {
        let table = table();
        let reply = |name: &str, qtype| {
            let resolution = table.resolve(&lower(name), qtype, DNSClass::IN);
            let (code, answers, soa) = zone_reply(&resolution, &[]);
            (
                code,
                answers.len(),
                soa.map(hickory_proto::rr::Record::record_type),
            )
        };
        assert_eq!(
            reply("web.vm.internal.", RecordType::A),
            (ResponseCode::NoError, 1, None)
        );
        assert_eq!(
            reply("web.vm.internal.", RecordType::AAAA),
            (ResponseCode::NoError, 0, Some(RecordType::SOA))
        );
        assert_eq!(
            reply("nope.vm.internal.", RecordType::A),
            (ResponseCode::NXDomain, 0, Some(RecordType::SOA))
        );
    }

    #[test]
    fn ptr_records_are_owned_by_the_query_name() {
        let table = table();
        let qname = lower("2.0.0.10.in-addr.arpa.");
        let Resolution::Ptr(names) = table.resolve(&qname, RecordType::PTR, DNSClass::IN) else {
            panic!("no PTR");
        };
        let records = ptr_records(&qname, names, table.ttl());
        let (code, answers, soa) = zone_reply(&Resolution::Ptr(names), &records);
        assert_eq!((code, soa), (ResponseCode::NoError, None));
        let targets: Vec<String> = answers
            .iter()
            .map(|r| {
                assert_eq!(r.name.to_ascii(), "2.0.0.10.in-addr.arpa.");
                assert_eq!(r.ttl, 5);
                match &r.data {
                    RData::PTR(PTR(name)) => name.to_ascii(),
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        assert_eq!(targets, ["db.vm.internal.", "web.vm.internal."]);
    }

    fn handler() -> DnsRequestHandler {
        let forwarder = Forwarder::new(vec![], std::time::Duration::from_millis(10), 1);
        DnsRequestHandler::new(
            Arc::new(ArcSwap::from_pointee(table())),
            Arc::new(forwarder),
            1,
        )
    }

    fn query_bytes(name: &str, qtype: RecordType, edit: impl FnOnce(&mut Message)) -> Vec<u8> {
        let mut msg = Message::new(42, MessageType::Query, OpCode::Query);
        msg.add_query(hickory_server::proto::op::Query::query(
            Name::from_ascii(name).unwrap(),
            qtype,
        ));
        edit(&mut msg);
        msg.to_vec().unwrap()
    }

    fn answer(raw: &[u8]) -> Option<Message> {
        let mut out = Vec::new();
        let src = "127.0.0.1:5000".parse().unwrap();
        match handler().answer_udp(raw, src, &mut out) {
            UdpAnswer::Reply => Some(Message::from_vec(&out).unwrap()),
            UdpAnswer::Forward(_) => panic!("forwarded"),
            UdpAnswer::Ignore => None,
        }
    }

    #[test]
    fn udp_fast_path_answers_and_echoes_edns() {
        let reply = answer(&query_bytes("web.vm.internal.", RecordType::A, |m| {
            m.metadata.recursion_desired = true;
            let mut edns = Edns::new();
            edns.set_max_payload(1232);
            m.set_edns(edns);
        }))
        .unwrap();
        assert_eq!(reply.metadata.id, 42);
        assert_eq!(reply.metadata.message_type, MessageType::Response);
        assert!(reply.metadata.authoritative && reply.metadata.recursion_desired);
        assert_eq!(reply.answers.len(), 1);
        assert_eq!(reply.edns.map(|e| e.max_payload()), Some(1232));

        let plain = answer(&query_bytes("web.vm.internal.", RecordType::A, |_| {})).unwrap();
        assert!(plain.edns.is_none());
    }

    #[test]
    fn udp_fast_path_refuses_what_it_cannot_answer() {
        // Not a standard query: NOTIMP.
        let notify = answer(&query_bytes("web.vm.internal.", RecordType::A, |m| {
            m.metadata.op_code = OpCode::Notify;
        }))
        .unwrap();
        assert_eq!(notify.metadata.response_code, ResponseCode::NotImp);
        // Two questions: FORMERR.
        let two = answer(&query_bytes("web.vm.internal.", RecordType::A, |m| {
            m.add_query(hickory_server::proto::op::Query::query(
                Name::from_ascii("db.vm.internal.").unwrap(),
                RecordType::A,
            ));
        }))
        .unwrap();
        assert_eq!(two.metadata.response_code, ResponseCode::FormErr);
        // A header followed by garbage: FORMERR with the query's ID.
        let mut garbage = query_bytes("web.vm.internal.", RecordType::A, |_| {});
        garbage.truncate(15);
        let bad = answer(&garbage).unwrap();
        assert_eq!(
            (bad.metadata.id, bad.metadata.response_code),
            (42, ResponseCode::FormErr)
        );
        // Responses and runts get no reply at all (no reflection loops).
        let response = query_bytes("web.vm.internal.", RecordType::A, |m| {
            m.metadata.message_type = MessageType::Response;
        });
        assert!(answer(&response).is_none());
        assert!(answer(&[1, 2, 3]).is_none());
    }
}
