//! The request handler the hickory server calls for every query: it reads the current table
//! snapshot (never a lock), answers hearth's names from it, and hands every other name to the
//! [`Forwarder`]. Replies are built from records already in the table, so a zone answer
//! allocates nothing beyond what hickory itself does per request.

use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, Message, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::rdata::PTR;
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::forward::Forwarder;
use super::table::{RecordTable, Resolution};

/// The largest UDP payload hearth advertises in its own EDNS record.
const MAX_UDP_PAYLOAD: u16 = 4096;

/// Answers queries from the current [`RecordTable`] snapshot, forwarding the rest.
#[derive(Clone)]
pub struct DnsRequestHandler {
    table: Arc<ArcSwap<RecordTable>>,
    forwarder: Arc<Forwarder>,
}

impl DnsRequestHandler {
    /// A handler reading `table` (swapped by the actor) and forwarding through `forwarder`.
    pub fn new(table: Arc<ArcSwap<RecordTable>>, forwarder: Arc<Forwarder>) -> Self {
        Self { table, forwarder }
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

        if meta.op_code != OpCode::Query {
            let reply = builder.error_msg(meta, ResponseCode::NotImp);
            return response
                .send_response(reply)
                .await
                .unwrap_or_else(|_| serve_failed(request));
        }
        let Ok(info) = request.request_info() else {
            // Not exactly one question.
            let reply = builder.error_msg(meta, ResponseCode::FormErr);
            return response
                .send_response(reply)
                .await
                .unwrap_or_else(|_| serve_failed(request));
        };
        let query = info.query;

        let table = self.table.load_full();
        let resolution = table.resolve(query.name(), query.query_type(), query.query_class());
        if resolution != Resolution::Forward {
            let ptrs = match &resolution {
                Resolution::Ptr(names) => ptr_records(query.name(), names, table.ttl()),
                _ => Vec::new(),
            };
            let (code, answers, soa) = zone_reply(&resolution, &ptrs);
            let mut reply_meta = Metadata::response_from_request(meta);
            reply_meta.authoritative = true;
            reply_meta.recursion_available = true;
            reply_meta.response_code = code;
            let reply = builder.build(
                reply_meta,
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

        let upstream: Message = match self
            .forwarder
            .forward(request.as_slice(), query.name())
            .await
        {
            Ok(reply) => reply,
            Err(_) => {
                let reply = builder.error_msg(meta, ResponseCode::ServFail);
                return response
                    .send_response(reply)
                    .await
                    .unwrap_or_else(|_| serve_failed(request));
            }
        };
        let mut reply_meta = upstream.metadata;
        reply_meta.id = meta.id;
        reply_meta.recursion_desired = meta.recursion_desired;
        reply_meta.recursion_available = true;
        let reply = builder.build(
            reply_meta,
            upstream.answers.iter(),
            upstream.authorities.iter(),
            std::iter::empty(),
            upstream.additionals.iter(),
        );
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
            (code, answers.len(), soa.map(|r| r.record_type()))
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
}
