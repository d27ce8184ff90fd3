//! A bounded cache of upstream answers, shared by the worker threads of one DNS server.
//!
//! Keyed by what changes an upstream's answer: the question (name lower-cased, type, class)
//! and the query's RD, AD, CD and DO bits (each forwarded as is; an upstream may answer
//! differently for each, e.g. AD=1 asks a validating resolver to report authenticity). Only clean answers are kept: NOERROR with records
//! (for the smallest TTL among them), and NXDOMAIN or NODATA that carry an SOA (negatively,
//! for the SOA's TTL and minimum, whichever is smaller, RFC 2308). SERVFAIL, REFUSED,
//! truncated or signed replies, replies with a TTL of 0, and replies larger than
//! [`MAX_CACHED_WIRE_LEN`] are never kept. TTLs are capped ([`MAX_TTL`], [`MAX_NEGATIVE_TTL`]),
//! never raised: an answer is never served past the TTL of any of its records, and a cached
//! answer handed out has its TTLs lowered by the whole seconds (rounded up) it spent here.
//!
//! Memory: at most `capacity` entries, each an answer of at most [`MAX_CACHED_WIRE_LEN`]
//! bytes on the wire (parsed, a few times that); the default 10 000 entries of typical
//! answers (100-300 bytes) is a few MB. When full, the oldest insertion is evicted (FIFO):
//! O(1) amortised, and an expired entry is dropped when it is next asked for.
//!
//! The clock is passed in (`now`), so tests control time without sleeping.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Metadata, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName, RData, Record, RecordType};

/// Longest time a positive answer is kept, seconds.
pub const MAX_TTL: u32 = 3600;
/// Longest time a negative answer (NXDOMAIN, NODATA) is kept, seconds.
pub const MAX_NEGATIVE_TTL: u32 = 300;
/// Largest upstream reply (bytes on the wire) that is cached; bounds an entry's memory.
pub const MAX_CACHED_WIRE_LEN: usize = 4096;
/// Default number of entries.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// What an upstream answer depends on besides the resolver itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    name: LowerName,
    qtype: RecordType,
    qclass: DNSClass,
    /// RD, AD, CD and DO bits of the query (the query is forwarded with them as is).
    flags: u8,
}

impl CacheKey {
    /// The key of a query for `name`/`qtype`/`qclass` with the header `query` (its RD, AD
    /// and CD bits) and the EDNS DO bit `dnssec_ok`.
    pub fn new(
        name: LowerName,
        qtype: RecordType,
        qclass: DNSClass,
        query: &Metadata,
        dnssec_ok: bool,
    ) -> Self {
        let flags = u8::from(query.recursion_desired)
            | u8::from(query.checking_disabled) << 1
            | u8::from(dnssec_ok) << 2
            | u8::from(query.authentic_data) << 3;
        Self {
            name,
            qtype,
            qclass,
            flags,
        }
    }

    /// The question name.
    pub fn name(&self) -> &LowerName {
        &self.name
    }
}

struct Entry {
    /// Shared, so a hit clones a pointer under the lock, not the message.
    message: Arc<Message>,
    stored: Instant,
    ttl: u32,
    /// Insertion number, to tell this entry from an older one of the same key in `order`.
    seq: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<CacheKey, Entry>,
    /// Keys in insertion order with their insertion number (stale pairs are skipped).
    order: VecDeque<(CacheKey, u64)>,
    next_seq: u64,
}

/// The answer cache; `capacity` 0 disables it.
pub struct AnswerCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl AnswerCache {
    /// An empty cache holding at most `capacity` answers.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::default(),
        }
    }

    /// How many entries are held (expired ones included until asked for or evicted).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached answer for `key` at `now` ([`Cached::message`] gives it with its TTLs
    /// lowered by the time it was held). Only a pointer is copied under the lock.
    pub fn get(&self, key: &CacheKey, now: Instant) -> Option<Cached> {
        if self.capacity == 0 {
            return None;
        }
        let mut inner = self.lock();
        let entry = inner.entries.get(key)?;
        let held = ceil_secs(now.saturating_duration_since(entry.stored));
        if held >= u64::from(entry.ttl) {
            inner.entries.remove(key);
            return None;
        }
        // `held` < ttl <= u32::MAX.
        let held = u32::try_from(held).unwrap_or(u32::MAX);
        Some(Cached {
            shared: Arc::clone(&entry.message),
            held,
        })
    }

    /// Keeps `reply` (of `wire_len` bytes) for `key` when it may be cached (see the module
    /// docs); returns whether it was kept.
    pub fn insert(&self, key: CacheKey, reply: &Message, wire_len: usize, now: Instant) -> bool {
        if self.capacity == 0 || wire_len > MAX_CACHED_WIRE_LEN {
            return false;
        }
        let Some(ttl) = cacheable_ttl(&key, reply) else {
            return false;
        };
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let entry = Entry {
            message: Arc::new(reply.clone()),
            stored: now,
            ttl,
            seq,
        };
        inner.entries.insert(key.clone(), entry);
        inner.order.push_back((key, seq));
        while inner.entries.len() > self.capacity {
            let Some((old, old_seq)) = inner.order.pop_front() else {
                break;
            };
            if inner.entries.get(&old).is_some_and(|e| e.seq == old_seq) {
                inner.entries.remove(&old);
            }
        }
        // Re-inserted keys leave stale pairs behind: compact once they are half the queue.
        if inner.order.len() > 2 * self.capacity {
            let Inner { entries, order, .. } = &mut *inner;
            order.retain(|(k, s)| entries.get(k).is_some_and(|e| e.seq == *s));
        }
        true
    }
}

/// A cache hit: the shared answer and the whole seconds (rounded up) it was held.
pub struct Cached {
    shared: Arc<Message>,
    held: u32,
}

impl Cached {
    /// The answer with every record's TTL lowered by the time it was held (a copy, made
    /// outside the cache's lock). The message ID is whatever upstream used: the caller
    /// answers with the asker's.
    pub fn message(&self) -> Message {
        let mut message = Message::clone(&self.shared);
        for record in message
            .answers
            .iter_mut()
            .chain(message.authorities.iter_mut())
            .chain(message.additionals.iter_mut())
        {
            record.ttl = record.ttl.saturating_sub(self.held);
        }
        message
    }
}

/// Whole seconds, rounded up (so a TTL is never overstated).
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// How long `reply` may be cached for `key`, or `None` when it must not be.
fn cacheable_ttl(key: &CacheKey, reply: &Message) -> Option<u32> {
    let meta = &reply.metadata;
    if meta.truncation || reply.signature.is_some() {
        return None;
    }
    let [question] = reply.queries.as_slice() else {
        return None;
    };
    if LowerName::new(question.name()) != key.name
        || question.query_type() != key.qtype
        || question.query_class() != key.qclass
    {
        return None;
    }
    let records = || {
        reply
            .answers
            .iter()
            .chain(reply.authorities.iter())
            .chain(reply.additionals.iter())
    };
    let min_ttl = records().map(|r| r.ttl).min();
    let ttl = match meta.response_code {
        ResponseCode::NoError if !reply.answers.is_empty() => min_ttl?.min(MAX_TTL),
        ResponseCode::NoError | ResponseCode::NXDomain => {
            let soa = negative_ttl(&reply.authorities)?;
            soa.min(min_ttl?).min(MAX_NEGATIVE_TTL)
        }
        _ => return None,
    };
    (ttl > 0).then_some(ttl)
}

/// The negative-caching TTL an SOA in `authorities` gives (its TTL or minimum, the smaller).
fn negative_ttl(authorities: &[Record]) -> Option<u32> {
    authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::Name;

    fn name(n: &str) -> Name {
        Name::from_ascii(n).unwrap()
    }

    /// The header bits a key depends on: RD, AD, CD.
    fn bits(rd: bool, ad: bool, cd: bool) -> Metadata {
        let mut m = Metadata::new(1, MessageType::Query, OpCode::Query);
        m.recursion_desired = rd;
        m.authentic_data = ad;
        m.checking_disabled = cd;
        m
    }

    fn key(n: &str) -> CacheKey {
        CacheKey::new(
            LowerName::new(&name(n)),
            RecordType::A,
            DNSClass::IN,
            &bits(true, false, false),
            false,
        )
    }

    fn reply(n: &str, code: ResponseCode, answers: &[(u32, [u8; 4])]) -> Message {
        let mut m = Message::new(77, MessageType::Response, OpCode::Query);
        m.metadata.response_code = code;
        m.add_query(Query::query(name(n), RecordType::A));
        for (ttl, ip) in answers {
            m.answers.push(Record::from_rdata(
                name(n),
                *ttl,
                RData::A(A::new(ip[0], ip[1], ip[2], ip[3])),
            ));
        }
        m
    }

    fn with_soa(mut m: Message, ttl: u32, minimum: u32) -> Message {
        let soa = SOA::new(name("ns.test."), name("h.test."), 1, 60, 60, 600, minimum);
        m.authorities
            .push(Record::from_rdata(name("test."), ttl, RData::SOA(soa)));
        m
    }

    #[test]
    fn hit_within_ttl_with_ttls_lowered_and_expiry() {
        let cache = AnswerCache::new(10);
        let t0 = Instant::now();
        let r = reply(
            "a.test.",
            ResponseCode::NoError,
            &[(30, [192, 0, 2, 1]), (10, [192, 0, 2, 2])],
        );
        assert!(cache.insert(key("a.test."), &r, 100, t0));
        // Case-insensitive on the name.
        let hit = cache
            .get(&key("A.Test."), t0 + Duration::from_millis(2500))
            .unwrap()
            .message();
        // 2.5 s held counts as 3: never overstated.
        let ttls: Vec<u32> = hit.answers.iter().map(|r| r.ttl).collect();
        assert_eq!(ttls, [27, 7]);
        // The smallest TTL (10 s) bounds the entry: at 9 s one second is left; just after,
        // it counts as 10 s held and is gone (a TTL 0 record is never handed out).
        assert!(cache
            .get(&key("a.test."), t0 + Duration::from_secs(9))
            .is_some());
        assert!(cache
            .get(&key("a.test."), t0 + Duration::from_millis(9001))
            .is_none());
        assert_eq!(cache.len(), 0, "an expired entry is dropped when asked for");
    }

    #[test]
    fn hits_share_the_cached_answer() {
        let cache = AnswerCache::new(10);
        let t0 = Instant::now();
        let r = reply("a.test.", ResponseCode::NoError, &[(30, [192, 0, 2, 1])]);
        assert!(cache.insert(key("a.test."), &r, 100, t0));
        let first = cache.get(&key("a.test."), t0).unwrap();
        let second = cache
            .get(&key("a.test."), t0 + Duration::from_secs(2))
            .unwrap();
        // One answer in memory, whatever the number of hits; each copy made has its own TTLs.
        assert!(Arc::ptr_eq(&first.shared, &second.shared));
        assert_eq!(first.message().answers[0].ttl, 30);
        assert_eq!(second.message().answers[0].ttl, 28);
        assert_eq!(
            first.shared.answers[0].ttl, 30,
            "the shared answer is never lowered"
        );
    }

    #[test]
    fn other_flags_type_or_class_miss() {
        let cache = AnswerCache::new(10);
        let t0 = Instant::now();
        let r = reply("a.test.", ResponseCode::NoError, &[(30, [192, 0, 2, 1])]);
        assert!(cache.insert(key("a.test."), &r, 100, t0));
        let n = LowerName::new(&name("a.test."));
        let (a, aaaa, ch) = (RecordType::A, RecordType::AAAA, DNSClass::CH);
        let rd = bits(true, false, false);
        for other in [
            // CD, DO, AD, no RD.
            CacheKey::new(n.clone(), a, DNSClass::IN, &bits(true, false, true), false),
            CacheKey::new(n.clone(), a, DNSClass::IN, &rd, true),
            CacheKey::new(n.clone(), a, DNSClass::IN, &bits(true, true, false), false),
            CacheKey::new(
                n.clone(),
                a,
                DNSClass::IN,
                &bits(false, false, false),
                false,
            ),
            CacheKey::new(n.clone(), aaaa, DNSClass::IN, &rd, false),
            CacheKey::new(n, a, ch, &rd, false),
        ] {
            assert!(cache.get(&other, t0).is_none(), "{other:?}");
        }
    }

    #[test]
    fn negative_answers_are_kept_for_the_soa_minimum_capped() {
        let cache = AnswerCache::new(10);
        let t0 = Instant::now();
        let nx = with_soa(reply("nx.test.", ResponseCode::NXDomain, &[]), 900, 20);
        assert!(cache.insert(key("nx.test."), &nx, 100, t0));
        let hit = cache
            .get(&key("nx.test."), t0 + Duration::from_secs(5))
            .unwrap()
            .message();
        assert_eq!(hit.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(hit.authorities[0].ttl, 895);
        assert!(cache
            .get(&key("nx.test."), t0 + Duration::from_secs(20))
            .is_none());
        // NODATA, with a huge minimum: capped.
        let nodata = with_soa(reply("nd.test.", ResponseCode::NoError, &[]), 86400, 86400);
        assert!(cache.insert(key("nd.test."), &nodata, 100, t0));
        let late = t0 + Duration::from_secs(u64::from(MAX_NEGATIVE_TTL));
        let before = t0 + Duration::from_secs(u64::from(MAX_NEGATIVE_TTL - 1));
        assert!(cache.get(&key("nd.test."), before).is_some());
        assert!(cache.get(&key("nd.test."), late).is_none());
        // Without an SOA a negative answer is not kept.
        let bare = reply("b.test.", ResponseCode::NXDomain, &[]);
        assert!(!cache.insert(key("b.test."), &bare, 100, t0));
    }

    #[test]
    fn failures_truncation_mismatches_and_zero_ttls_are_not_kept() {
        let cache = AnswerCache::new(10);
        let t0 = Instant::now();
        let ok = || reply("a.test.", ResponseCode::NoError, &[(30, [192, 0, 2, 1])]);
        let mut servfail = ok();
        servfail.metadata.response_code = ResponseCode::ServFail;
        let mut refused = ok();
        refused.metadata.response_code = ResponseCode::Refused;
        let mut truncated = ok();
        truncated.metadata.truncation = true;
        let zero = reply("a.test.", ResponseCode::NoError, &[(0, [192, 0, 2, 1])]);
        let other = reply("b.test.", ResponseCode::NoError, &[(30, [192, 0, 2, 1])]);
        for bad in [servfail, refused, truncated, zero, other] {
            assert!(!cache.insert(key("a.test."), &bad, 100, t0));
        }
        assert!(!cache.insert(key("a.test."), &ok(), MAX_CACHED_WIRE_LEN + 1, t0));
        assert!(cache.get(&key("a.test."), t0).is_none());
        // Positive TTLs are capped.
        let long = reply("a.test.", ResponseCode::NoError, &[(86400, [192, 0, 2, 1])]);
        assert!(cache.insert(key("a.test."), &long, 100, t0));
        let cap = t0 + Duration::from_secs(u64::from(MAX_TTL));
        assert!(cache.get(&key("a.test."), cap).is_none());
        // Disabled.
        let off = AnswerCache::new(0);
        assert!(!off.insert(key("a.test."), &ok(), 100, t0));
    }

    #[test]
    fn the_bound_evicts_the_oldest() {
        let cache = AnswerCache::new(3);
        let t0 = Instant::now();
        let names: Vec<String> = (0..5).map(|i| format!("n{i}.test.")).collect();
        for n in &names {
            let r = reply(n, ResponseCode::NoError, &[(30, [192, 0, 2, 1])]);
            assert!(cache.insert(key(n), &r, 100, t0));
            assert!(cache.len() <= 3);
        }
        assert!(cache.get(&key(&names[0]), t0).is_none());
        assert!(cache.get(&key(&names[1]), t0).is_none());
        for n in &names[2..] {
            assert!(cache.get(&key(n), t0).is_some(), "{n}");
        }
        // Re-inserting one key many times keeps the order queue bounded too.
        let r = reply(&names[4], ResponseCode::NoError, &[(30, [192, 0, 2, 1])]);
        for _ in 0..100 {
            cache.insert(key(&names[4]), &r, 100, t0);
        }
        assert!(cache.lock().order.len() <= 6);
        assert_eq!(cache.len(), 3);
    }
}
