//! The DNS side of egress policy: per guest source address, the domain patterns it may reach,
//! and the learner (`NatActor`) that allows the addresses answered for them.
//!
//! When a guest in deny mode asks for a name matching one of its patterns (`api.github.com`
//! exactly, or `*.pypi.org`: subdomains only, not `pypi.org` itself), every A record of the
//! answer reachable from the name asked through the answer's CNAME chain is sent to the
//! learner, and the reply leaves only once the learner has put them in the guest's allowlist
//! (so the guest's first connect is not raced). If the learner fails, the guest gets SERVFAIL
//! rather than an address it could not reach. Names of hearth's own zone are not learned:
//! allow the guest subnet as a CIDR instead.
//!
//! Lookups take a read lock on a map keyed by guest address; a per-guest change replaces one
//! entry (O(1) in the number of guests).
//!
//! The TTLs of such an answer are capped at what the learner keeps (at most
//! [`MAX_LEARNED_SECS`]): a guest caching the answer longer would lose the address while it
//! still trusts the name. A guest without a policy costs one map lookup per answer, nothing
//! more (no name is converted or lower-cased for it).
//!
//! The learner's confirmations are remembered per guest (address -> until when it is surely
//! allowed), so a repeated answer (e.g. from the cache) whose addresses the guest already has
//! for at least their remaining TTL skips the round trip. Skipping never allows anything: at
//! worst a stale memory withholds an allowance. It is forgotten for a guest whenever its
//! patterns change (the learner drops learned addresses only on a policy change, which comes
//! with one), and for everyone when the learner changes; a confirmation that raced with such
//! a change is not remembered.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use actix::{Handler, Message, Recipient};
use hickory_proto::rr::{LowerName, Name, RData, Record};

use super::{DnsActor, DnsError};
use crate::nat::egress::{learned_secs, AllowLearned, MAX_LEARNED_SECS};

/// How long a reply waits for the learner before the guest gets SERVFAIL.
const LEARN_TIMEOUT: Duration = Duration::from_secs(2);
/// A confirmation of an address whose TTL the learner caps is used until this many seconds
/// of it are left (see `allowed_for`).
const REFRESH_SLACK_SECS: u32 = 60;
/// How much shorter than an answer's TTL a confirmation may be and still be used (the
/// answer's TTLs are then lowered to it).
const ROUNDING_SECS: u32 = 1;
/// CNAME hops followed from the name asked (loops and absurd chains end here).
const MAX_CNAME_HOPS: usize = 16;

/// Why a domain pattern is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid egress domain {pattern:?}: {reason}")]
pub struct PatternError {
    /// The pattern as given.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Normalises a name for matching: ASCII lower case, no trailing dot.
fn normal(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Checks a pattern (the API's rule: `hearth_proto::api_egress::check_domain`).
///
/// # Errors
/// [`PatternError`] naming what is wrong.
pub fn check_pattern(pattern: &str) -> Result<(), PatternError> {
    hearth_proto::api_egress::check_domain(pattern).map_err(|reason| PatternError {
        pattern: pattern.to_owned(),
        reason,
    })
}

/// The patterns of one guest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainPatterns {
    /// Names allowed exactly (normalised) -> the pattern as given.
    exact: HashMap<String, String>,
    /// Suffixes `.x` whose subdomains are allowed (normalised) -> the pattern as given.
    wildcards: Vec<(String, String)>,
}

impl DomainPatterns {
    /// Parses patterns (see [`check_pattern`]).
    ///
    /// # Errors
    /// The first pattern that is invalid.
    pub fn new(patterns: &[String]) -> Result<Self, PatternError> {
        let mut out = Self::default();
        for p in patterns {
            check_pattern(p)?;
            match p.strip_prefix("*.") {
                Some(domain) => out
                    .wildcards
                    .push((format!(".{}", normal(domain)), p.clone())),
                None => {
                    out.exact.insert(normal(p), p.clone());
                }
            }
        }
        Ok(out)
    }

    /// The pattern `name` matches, if any (exact names first).
    #[must_use]
    pub fn matching(&self, name: &str) -> Option<&str> {
        let name = normal(name);
        if let Some(p) = self.exact.get(&name) {
            return Some(p);
        }
        self.wildcards
            .iter()
            .find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix.as_str()))
            .map(|(_, p)| p.as_str())
    }
}

/// The A records of `answers` that answer `qname`: owned by it or by a name its CNAME chain
/// (in `answers`) leads to. Returns (address, TTL).
#[must_use]
pub fn chain_addresses(qname: &Name, answers: &[Record]) -> Vec<(Ipv4Addr, u32)> {
    let mut chain: HashSet<String> = HashSet::new();
    let mut current = normal(&qname.to_ascii());
    for _ in 0..MAX_CNAME_HOPS {
        if !chain.insert(current.clone()) {
            break;
        }
        let next = answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if normal(&r.name.to_ascii()) == current => {
                Some(normal(&target.0.to_ascii()))
            }
            _ => None,
        });
        match next {
            Some(next) => current = next,
            None => break,
        }
    }
    answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) if chain.contains(&normal(&r.name.to_ascii())) => Some((a.0, r.ttl)),
            _ => None,
        })
        .collect()
}

/// Why learned addresses could not be allowed.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    /// No learner is set although the guest has a policy.
    #[error("No egress learner set")]
    NoLearner,
    /// The learner did not answer in time or its mailbox is gone.
    #[error("Egress learner unavailable: {0}")]
    Unavailable(String),
    /// The learner refused (the firewall failed).
    #[error("Egress learner failed: {0}")]
    Failed(String),
}

/// Per-guest patterns and the learner, shared by the actor (writes) and the request handlers
/// (reads).
#[derive(Default)]
pub struct EgressGuests {
    guests: RwLock<HashMap<Ipv4Addr, Arc<DomainPatterns>>>,
    learner: RwLock<Option<Recipient<AllowLearned>>>,
    /// Per guest: addresses the learner confirmed, and until when (see the module docs).
    confirmed: RwLock<HashMap<Ipv4Addr, HashMap<Ipv4Addr, Instant>>>,
    /// Bumped by every change that forgets confirmations; a confirmation that answers a
    /// request sent under an older value is not remembered.
    epoch: AtomicU64,
}

impl EgressGuests {
    /// Sets (`Some`) or clears (`None`) a guest's patterns.
    pub fn set(&self, guest: Ipv4Addr, patterns: Option<DomainPatterns>) {
        let mut guests = self.guests.write().unwrap_or_else(PoisonError::into_inner);
        match patterns {
            Some(p) => guests.insert(guest, Arc::new(p)),
            None => guests.remove(&guest),
        };
        self.forget(guest);
    }

    /// Forgets what the learner confirmed for `guest` (its firewall side may have changed).
    pub fn forget(&self, guest: Ipv4Addr) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.confirmed
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&guest);
    }

    /// Sets the learner.
    pub fn set_learner(&self, learner: Option<Recipient<AllowLearned>>) {
        *self.learner.write().unwrap_or_else(PoisonError::into_inner) = learner;
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.confirmed
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Whether the learner confirmed each of `addrs` for `guest` long enough from `now`: for
    /// its TTL, or for a TTL beyond what the learner keeps, for all but [`REFRESH_SLACK_SECS`]
    /// of [`MAX_LEARNED_SECS`]. Returns the whole seconds left of the shortest confirmation
    /// (what the answer's TTLs must then be capped at).
    fn allowed_for(&self, guest: Ipv4Addr, addrs: &[(Ipv4Addr, u32)], now: Instant) -> Option<u32> {
        let confirmed = self
            .confirmed
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let known = confirmed.get(&guest)?;
        let mut left = MAX_LEARNED_SECS;
        for (addr, ttl) in addrs {
            let until = known.get(addr)?;
            let secs = until.saturating_duration_since(now).as_secs();
            let secs = u32::try_from(secs)
                .unwrap_or(u32::MAX)
                .min(MAX_LEARNED_SECS);
            // A TTL the learner caps would otherwise never be covered by a confirmation made
            // earlier: it is re-learned once per slack instead of on every answer. One second
            // of tolerance, because the TTL and the confirmation round to whole seconds
            // differently: without it about every other second's hits took a round trip. The
            // answer's TTLs are capped at `left`, so the guest never trusts it for longer.
            let needed = (*ttl).min(MAX_LEARNED_SECS - REFRESH_SLACK_SECS);
            if secs == 0 || secs.saturating_add(ROUNDING_SECS) < needed {
                return None;
            }
            left = left.min(secs);
        }
        Some(left)
    }

    #[cfg(test)]
    fn already_allowed(&self, guest: Ipv4Addr, addrs: &[(Ipv4Addr, u32)], now: Instant) -> bool {
        self.allowed_for(guest, addrs, now).is_some()
    }

    /// Remembers that `addrs` were allowed for `guest` by a request sent at `sent` under
    /// `epoch` (the learner keeps each for its TTL, at most [`MAX_LEARNED_SECS`]).
    fn remember(&self, guest: Ipv4Addr, addrs: &[(Ipv4Addr, u32)], sent: Instant, epoch: u64) {
        let mut confirmed = self
            .confirmed
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if self.epoch.load(Ordering::SeqCst) != epoch {
            return;
        }
        let known = confirmed.entry(guest).or_default();
        for (addr, ttl) in addrs {
            let until = sent + Duration::from_secs(u64::from((*ttl).min(MAX_LEARNED_SECS)));
            let entry = known.entry(*addr).or_insert(until);
            *entry = (*entry).max(until);
        }
        // Expired ones go here, so the memory stays as small as the guest's learned set.
        known.retain(|_, until| *until > sent);
    }

    /// The patterns of the guest at `src`, if it has a policy (one map lookup: the only egress
    /// work an answer to a guest without a policy costs).
    pub fn patterns_of(&self, src: IpAddr) -> Option<Arc<DomainPatterns>> {
        let IpAddr::V4(ip) = src else { return None };
        let guests = self.guests.read().unwrap_or_else(PoisonError::into_inner);
        guests.get(&ip).cloned()
    }

    /// What `answers` to `src`'s question for `qname` mean for its allowlist, without waiting:
    /// nothing, already allowed, or a round trip to the learner ([`Self::allow`]).
    pub fn plan(&self, src: IpAddr, qname: &LowerName, answers: &[Record]) -> LearnPlan {
        // Checked first: a guest without a policy costs no name conversion at all.
        let Some(patterns) = self.patterns_of(src) else {
            return LearnPlan::Nothing;
        };
        let IpAddr::V4(guest) = src else {
            return LearnPlan::Nothing;
        };
        let Some(pattern) = patterns.matching(&qname.to_ascii()) else {
            return LearnPlan::Nothing;
        };
        let addrs = chain_addresses(qname, answers);
        if addrs.is_empty() {
            return LearnPlan::Nothing;
        }
        let sent = Instant::now();
        if let Some(left) = self.allowed_for(guest, &addrs, sent) {
            return LearnPlan::Known(left);
        }
        LearnPlan::Ask(PendingLearn {
            msg: AllowLearned {
                guest,
                pattern: pattern.to_owned(),
                addrs,
            },
            sent,
            epoch: self.epoch.load(Ordering::SeqCst),
        })
    }

    /// Sends a [`LearnPlan::Ask`] to the learner and waits until the addresses are allowed.
    ///
    /// # Errors
    /// [`LearnError`] when the addresses could not be allowed.
    pub async fn allow(&self, pending: PendingLearn) -> Result<(), LearnError> {
        let PendingLearn { msg, sent, epoch } = pending;
        let learner = self
            .learner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(LearnError::NoLearner)?;
        let (guest, addrs) = (msg.guest, msg.addrs.clone());
        match tokio::time::timeout(LEARN_TIMEOUT, learner.send(msg)).await {
            Err(_) => Err(LearnError::Unavailable("timed out".into())),
            Ok(Err(e)) => Err(LearnError::Unavailable(e.to_string())),
            Ok(Ok(Err(e))) => Err(LearnError::Failed(e.to_string())),
            Ok(Ok(Ok(allowed))) => {
                // Fewer means the learner's policy no longer has the pattern: nothing to keep.
                if allowed == addrs.len() {
                    self.remember(guest, &addrs, sent, epoch);
                }
                Ok(())
            }
        }
    }

    /// If `src` is a guest with a pattern matching `qname`, allows the addresses `answers`
    /// give for it and waits until they are allowed. Returns for how long they are surely
    /// allowed, in seconds (the answer's TTLs must then be capped at it, see
    /// [`cap_learned_ttls`]); nothing to do is `Ok(None)`.
    ///
    /// # Errors
    /// [`LearnError`] when the addresses could not be allowed.
    pub async fn learn(
        &self,
        src: IpAddr,
        qname: &LowerName,
        answers: &[Record],
    ) -> Result<Option<u32>, LearnError> {
        match self.plan(src, qname, answers) {
            LearnPlan::Nothing => Ok(None),
            LearnPlan::Known(left) => Ok(Some(left)),
            LearnPlan::Ask(pending) => self.allow(pending).await.map(|()| Some(MAX_LEARNED_SECS)),
        }
    }
}

/// What an answer means for the asking guest's allowlist ([`EgressGuests::plan`]).
pub enum LearnPlan {
    /// Nothing to learn: no policy, no matching pattern, or no address for the name asked.
    Nothing,
    /// The addresses are allowed long enough already: answer at once, with the TTLs capped
    /// at these seconds ([`cap_learned_ttls`]).
    Known(u32),
    /// The learner must allow them before the answer leaves ([`EgressGuests::allow`]).
    Ask(PendingLearn),
}

/// A request to the learner, made by [`EgressGuests::plan`].
pub struct PendingLearn {
    msg: AllowLearned,
    sent: Instant,
    epoch: u64,
}

/// Caps the TTLs of an answer whose addresses were learned at `secs`, how long the learner
/// surely keeps them (at most [`MAX_LEARNED_SECS`]): a guest trusting an answer longer would
/// lose the address while it still uses it. Every answer record is capped, CNAMEs included,
/// and no record outlives the shortest-kept address: the learner keeps each address for its
/// own TTL ([`learned_secs`] of it), and a guest still trusting a CNAME after its
/// target's address expired would ask for the target name, which matches no pattern, so its
/// address would not be learned again.
pub fn cap_learned_ttls(answers: &mut [Record], secs: u32) {
    let shortest_address = answers
        .iter()
        .filter(|r| matches!(r.data, RData::A(_)))
        .map(|r| learned_secs(r.ttl))
        .min()
        .unwrap_or(secs);
    let bound = secs.min(shortest_address);
    for record in answers {
        record.ttl = record.ttl.min(bound);
    }
}

/// Sets (`Some`) or clears (`None`) the domain patterns of a guest in deny mode: its queries
/// for a matching name allow the answered addresses (see the module docs). One map entry,
/// whatever the number of guests. A bad pattern changes nothing.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), DnsError>")]
pub struct SetEgressDomains {
    /// The guest's IPv4 address (the source of its queries).
    pub guest: Ipv4Addr,
    /// The patterns (`api.github.com`, `*.pypi.org`), or `None` when the guest has no policy.
    pub domains: Option<Vec<String>>,
}

/// Sets who allows learned addresses (hearthd: the `NatActor`).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetEgressLearner {
    /// The learner, or `None` (then a guest with patterns gets SERVFAIL for matching names).
    pub learner: Option<Recipient<AllowLearned>>,
}

impl Handler<SetEgressDomains> for DnsActor {
    type Result = Result<(), DnsError>;

    fn handle(&mut self, msg: SetEgressDomains, _: &mut Self::Context) -> Self::Result {
        // Even when refused: the learner's side may have changed and been put back (the egress
        // capability's undo), dropping addresses the confirmations still vouch for.
        self.egress.forget(msg.guest);
        let patterns = msg
            .domains
            .as_deref()
            .map(DomainPatterns::new)
            .transpose()?;
        self.egress.set(msg.guest, patterns);
        slog::debug!(self.logger, "egress domains set"; "guest" => %msg.guest,
            "domains" => msg.domains.as_ref().map_or(0, Vec::len));
        Ok(())
    }
}

impl Handler<SetEgressLearner> for DnsActor {
    type Result = ();

    fn handle(&mut self, msg: SetEgressLearner, _: &mut Self::Context) {
        self.egress.set_learner(msg.learner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, CNAME};

    fn patterns(p: &[&str]) -> DomainPatterns {
        DomainPatterns::new(&p.iter().map(ToString::to_string).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn wildcards_match_subdomains_only_and_names_exactly() {
        let p = patterns(&["api.github.com", "*.pypi.org"]);
        assert_eq!(p.matching("api.github.com."), Some("api.github.com"));
        assert_eq!(p.matching("API.GitHub.com"), Some("api.github.com"));
        assert_eq!(p.matching("x.api.github.com"), None);
        assert_eq!(p.matching("files.pypi.org."), Some("*.pypi.org"));
        assert_eq!(p.matching("a.b.pypi.org"), Some("*.pypi.org"));
        assert_eq!(p.matching("pypi.org"), None);
        assert_eq!(p.matching("evilpypi.org"), None);
    }

    #[test]
    fn bad_patterns_are_named() {
        for bad in [
            "",
            "*",
            "*.",
            "a..b",
            "a.*.b",
            "-a.b",
            "a b",
            "**.x",
            &"a".repeat(64),
        ] {
            let err = check_pattern(bad).unwrap_err();
            assert_eq!(err.pattern, bad);
        }
        assert!(check_pattern("*.pypi.org").is_ok());
        assert!(check_pattern("example.com.").is_ok());
    }

    #[test]
    fn confirmations_skip_only_what_is_allowed_long_enough_and_are_forgotten_on_change() {
        let guests = EgressGuests::default();
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3));
        let x = Ipv4Addr::new(192, 0, 2, 1);
        let y = Ipv4Addr::new(192, 0, 2, 2);
        let t0 = Instant::now();
        let epoch = guests.epoch.load(Ordering::SeqCst);
        guests.remember(a, &[(x, 60)], t0, epoch);
        // Within what was confirmed, for that guest only.
        assert!(guests.already_allowed(a, &[(x, 60)], t0));
        assert!(guests.already_allowed(a, &[(x, 30)], t0 + Duration::from_secs(30)));
        // One second of rounding tolerance (the answer's TTLs are then capped at 30).
        assert_eq!(
            guests.allowed_for(a, &[(x, 31)], t0 + Duration::from_secs(30)),
            Some(30)
        );
        assert!(!guests.already_allowed(a, &[(x, 32)], t0 + Duration::from_secs(30)));
        assert!(!guests.already_allowed(a, &[(x, 10), (y, 10)], t0));
        assert!(!guests.already_allowed(b, &[(x, 1)], t0));
        // The learner keeps an address at most MAX_LEARNED_SECS.
        guests.remember(b, &[(x, u32::MAX)], t0, epoch);
        let max = u64::from(MAX_LEARNED_SECS);
        assert!(guests.already_allowed(b, &[(x, MAX_LEARNED_SECS)], t0));
        assert!(!guests.already_allowed(b, &[(x, 1)], t0 + Duration::from_secs(max)));
        // A TTL beyond what the learner keeps is covered until the slack is reached, and what
        // is left of the confirmation is the cap for the answer's TTLs.
        let later = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(guests.allowed_for(b, &[(x, 86400)], later(30)), Some(3570));
        let slack = u64::from(REFRESH_SLACK_SECS);
        assert_eq!(
            guests.allowed_for(b, &[(x, 86400)], later(slack)),
            Some(3540)
        );
        assert_eq!(
            guests.allowed_for(b, &[(x, 86400)], later(slack + 1)),
            Some(3539)
        );
        assert_eq!(guests.allowed_for(b, &[(x, 86400)], later(slack + 2)), None);
        // A pattern change forgets the guest's confirmations, and a confirmation answering a
        // request sent before it is not remembered.
        guests.set(a, Some(patterns(&["api.github.com"])));
        assert!(!guests.already_allowed(a, &[(x, 1)], t0));
        assert!(guests.already_allowed(b, &[(x, 1)], t0));
        guests.remember(a, &[(x, 60)], t0, epoch);
        assert!(!guests.already_allowed(a, &[(x, 1)], t0));
        // A new learner forgets everyone's.
        guests.set_learner(None);
        assert!(!guests.already_allowed(b, &[(x, 1)], t0));
    }

    fn rec(name: &str, ttl: u32, data: RData) -> Record {
        Record::from_rdata(Name::from_ascii(name).unwrap(), ttl, data)
    }

    #[test]
    fn no_capped_record_outlives_the_shortest_kept_address() {
        let cname = || RData::CNAME(CNAME(Name::from_ascii("edge.cdn.net.").unwrap()));
        let a = || RData::A(A(Ipv4Addr::new(10, 0, 0, 1)));
        // A long CNAME before a short A: the CNAME goes no further than the A.
        let mut answers = [
            rec("api.example.com.", 86_400, cname()),
            rec("edge.cdn.net.", 60, a()),
        ];
        cap_learned_ttls(&mut answers, MAX_LEARNED_SECS);
        assert_eq!(answers.map(|r| r.ttl), [60, 60]);
        // Long records: capped at what the learner keeps.
        let mut answers = [
            rec("api.example.com.", 86_400, cname()),
            rec("edge.cdn.net.", 86_400, a()),
        ];
        cap_learned_ttls(&mut answers, 1000);
        assert_eq!(answers.map(|r| r.ttl), [1000, 1000]);
        // An address kept at least MIN_LEARNED_SECS bounds the chain there, not below.
        let mut answers = [
            rec("api.example.com.", 300, cname()),
            rec("edge.cdn.net.", 0, a()),
        ];
        cap_learned_ttls(&mut answers, MAX_LEARNED_SECS);
        assert_eq!(
            answers.map(|r| r.ttl),
            [crate::nat::egress::MIN_LEARNED_SECS, 0]
        );
    }

    #[test]
    fn cname_chains_count_for_the_name_asked_and_strangers_do_not() {
        let q = Name::from_ascii("api.example.com.").unwrap();
        let answers = [
            rec(
                "api.example.com.",
                300,
                RData::CNAME(CNAME(Name::from_ascii("edge.cdn.net.").unwrap())),
            ),
            rec(
                "edge.cdn.net.",
                60,
                RData::CNAME(CNAME(Name::from_ascii("a1.cdn.net.").unwrap())),
            ),
            rec("a1.cdn.net.", 20, RData::A(A::new(192, 0, 2, 1))),
            rec("a1.cdn.net.", 20, RData::A(A::new(192, 0, 2, 2))),
            // Not on the chain: an upstream's stray additional-style answer.
            rec("other.net.", 20, RData::A(A::new(192, 0, 2, 99))),
        ];
        assert_eq!(
            chain_addresses(&q, &answers),
            [
                (Ipv4Addr::new(192, 0, 2, 1), 20),
                (Ipv4Addr::new(192, 0, 2, 2), 20)
            ]
        );
        // A CNAME loop ends.
        let looped = [
            rec(
                "api.example.com.",
                5,
                RData::CNAME(CNAME(Name::from_ascii("b.example.com.").unwrap())),
            ),
            rec(
                "b.example.com.",
                5,
                RData::CNAME(CNAME(Name::from_ascii("api.example.com.").unwrap())),
            ),
        ];
        assert!(chain_addresses(&q, &looped).is_empty());
    }
}
