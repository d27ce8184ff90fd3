//! The record table: the immutable snapshot the request handler reads. A table is built whole
//! from a name -> IPv4 map (validating every name first), then swapped in atomically by the
//! actor, so a query sees either the old table or the new one, never a half-built one.
//!
//! Everything here is pure: building, label validation, PTR name parsing, and [`RecordTable::resolve`],
//! which decides what a query gets (an answer, NODATA, NXDOMAIN or forwarding).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::Ipv4Addr;

use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use ipnet::Ipv4Net;

use super::DnsError;

/// SOA timers (seconds) for hearth's zones: nothing transfers them, so only `minimum` (the
/// negative-caching TTL, set to the record TTL) matters to clients.
const SOA_REFRESH: i32 = 3600;
const SOA_RETRY: i32 = 600;
const SOA_EXPIRE: i32 = 86400;

/// The zone settings that do not change between tables.
#[derive(Debug, Clone)]
pub struct ZoneConfig {
    /// The forward zone, fully qualified and lower case (`vm.internal.`).
    zone: Name,
    /// TTL of every record hearth serves.
    ttl: u32,
    /// The guest subnet: PTR queries inside it are answered here (NXDOMAIN when unknown);
    /// others are forwarded.
    reverse: Option<Ipv4Net>,
}

impl ZoneConfig {
    /// Validates `zone` (dot-separated valid labels, an optional trailing dot) and returns the
    /// settings.
    pub fn new(zone: &str, ttl: u32, reverse: Option<Ipv4Net>) -> Result<Self, DnsError> {
        let trimmed = zone.strip_suffix('.').unwrap_or(zone);
        if trimmed.is_empty() {
            return Err(DnsError::InvalidZone {
                zone: zone.to_owned(),
                reason: "the zone is empty".into(),
            });
        }
        let mut labels = Vec::new();
        for label in trimmed.split('.') {
            let label = validate_label(label).map_err(|reason| DnsError::InvalidZone {
                zone: zone.to_owned(),
                reason: format!("label {label:?}: {reason}"),
            })?;
            labels.push(label);
        }
        let mut name = Name::from_labels(labels.iter().map(std::string::String::as_bytes))
            .map_err(|e| DnsError::InvalidZone {
                zone: zone.to_owned(),
                reason: e.to_string(),
            })?;
        name.set_fqdn(true);
        Ok(Self {
            zone: name,
            ttl,
            reverse,
        })
    }

    /// The forward zone, fully qualified.
    pub fn zone(&self) -> &Name {
        &self.zone
    }
}

/// Checks one DNS label as hearth accepts it for a VM name: 1-63 characters of `[a-z0-9-]`
/// (any case), not starting or ending with `-`. Returns it in lower case.
pub fn validate_label(label: &str) -> Result<String, String> {
    if label.is_empty() {
        return Err("empty".into());
    }
    if label.len() > 63 {
        return Err(format!("{} characters, at most 63 allowed", label.len()));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(format!("character {c:?} is not one of [a-z0-9-]"));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("starts or ends with '-'".into());
    }
    Ok(label.to_ascii_lowercase())
}

/// Parses a reverse-lookup name `d.c.b.a.in-addr.arpa.` into `a.b.c.d`. Any other name, or
/// octets that are not plain decimal 0-255, gives `None`.
pub fn ptr_name_to_ipv4(name: &Name) -> Option<Ipv4Addr> {
    if name.num_labels() != 6 {
        return None;
    }
    let mut octets = [0u8; 4];
    for (i, label) in name.iter().enumerate() {
        match i {
            0..=3 => octets[3 - i] = parse_octet(label)?,
            4 if label.eq_ignore_ascii_case(b"in-addr") => {}
            5 if label.eq_ignore_ascii_case(b"arpa") => {}
            _ => return None,
        }
    }
    Some(Ipv4Addr::from(octets))
}

fn parse_octet(label: &[u8]) -> Option<u8> {
    // No leading zeros ("01"), as in the canonical form every resolver sends.
    if label.is_empty() || label.len() > 3 || (label.len() > 1 && label[0] == b'0') {
        return None;
    }
    let mut value: u16 = 0;
    for &b in label {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u16::from(b - b'0');
    }
    u8::try_from(value).ok()
}

/// The reverse zone that holds `net`'s PTR names: the in-addr.arpa name of its prefix
/// rounded down to whole octets (`172.31.240.0/24` -> `240.31.172.in-addr.arpa.`).
pub fn reverse_zone_name(net: Ipv4Net) -> Name {
    let whole_octets = usize::from(net.prefix_len() / 8);
    let octets = net.network().octets();
    let mut labels: Vec<String> = octets[..whole_octets]
        .iter()
        .rev()
        .map(std::string::ToString::to_string)
        .collect();
    labels.push("in-addr".into());
    labels.push("arpa".into());
    let mut name = Name::from_labels(labels.iter().map(std::string::String::as_bytes))
        .unwrap_or_else(|_| Name::root());
    name.set_fqdn(true);
    name
}

/// The names that have one IP: nearly always one, which then needs no allocation of its own.
#[derive(Debug)]
enum PtrNames {
    One([Name; 1]),
    Many(Vec<Name>),
}

impl PtrNames {
    fn push(&mut self, name: Name) {
        match self {
            PtrNames::One([first]) => {
                *self = PtrNames::Many(vec![first.clone(), name]);
            }
            PtrNames::Many(names) => names.push(name),
        }
    }

    fn as_slice(&self) -> &[Name] {
        match self {
            PtrNames::One(one) => one,
            PtrNames::Many(many) => many,
        }
    }
}

/// FNV-1a: a fast hash for the table's short keys. Flooding is not a concern: the keys are
/// the supervisor's VM names and guest IPs; clients only look names up.
#[derive(Debug, Clone, Copy, Default)]
struct FnvBuildHasher;

impl BuildHasher for FnvBuildHasher {
    type Hasher = FnvHasher;

    fn build_hasher(&self) -> FnvHasher {
        FnvHasher(0xcbf2_9ce4_8422_2325)
    }
}

/// The state of one FNV-1a hash.
#[derive(Debug)]
struct FnvHasher(u64);

impl Hasher for FnvHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// What a query gets from the table.
#[derive(Debug, PartialEq)]
pub enum Resolution<'t> {
    /// NOERROR with these answers (authoritative).
    Answer(&'t [Record]),
    /// NOERROR with one PTR record per name, owned by the query name.
    Ptr(&'t [Name]),
    /// NOERROR without answers: the name exists but has no record of the asked type. Carries
    /// the zone's SOA for the authority section when there is one.
    NoData(Option<&'t Record>),
    /// The name is in one of hearth's zones but does not exist.
    NxDomain(&'t Record),
    /// Not hearth's name: ask the upstream resolvers.
    Forward,
}

/// One immutable generation of the name table.
#[derive(Debug)]
pub struct RecordTable {
    /// The forward zone, lower case, fully qualified.
    zone: LowerName,
    zone_labels: u8,
    ttl: u32,
    /// VM label (lower case) -> its A record.
    hosts: HashMap<Box<[u8]>, [Record; 1], FnvBuildHasher>,
    /// Guest IP -> the names that have it, sorted. PTR records are made per query, with the
    /// query's own name as owner: building 1000 reverse names up front would double the cost
    /// of a table.
    ptrs: HashMap<Ipv4Addr, PtrNames, FnvBuildHasher>,
    /// The forward zone's SOA.
    soa: [Record; 1],
    /// The guest subnet and its reverse zone's SOA.
    reverse: Option<(Ipv4Net, Record)>,
}

impl RecordTable {
    /// An empty table: every name in the zone is NXDOMAIN.
    pub fn empty(config: &ZoneConfig) -> Self {
        // An empty map cannot fail validation.
        match Self::build(config, &HashMap::new(), 0) {
            Ok(table) => table,
            Err(_) => unreachable!("an empty record map is always valid"),
        }
    }

    /// Builds a table from `records` (VM name -> guest IP). The first invalid entry fails the
    /// whole build (the table in use is not touched by a build).
    ///
    /// Names are single DNS labels, case-insensitive. Two names that differ only in case are
    /// rejected. Duplicate IPs are allowed (A records are per name); the PTR of such an IP
    /// answers with every name that has it, sorted. The unspecified, broadcast and multicast
    /// addresses are rejected. `serial` becomes the SOA serial.
    pub fn build(
        config: &ZoneConfig,
        records: &HashMap<String, Ipv4Addr>,
        serial: u32,
    ) -> Result<Self, DnsError> {
        let ttl = config.ttl;
        let zone = &config.zone;
        let mut hosts = HashMap::with_capacity_and_hasher(records.len(), FnvBuildHasher);
        let mut ptrs: HashMap<Ipv4Addr, PtrNames, FnvBuildHasher> =
            HashMap::with_capacity_and_hasher(records.len(), FnvBuildHasher);
        for (name, ip) in records {
            let label = validate_label(name).map_err(|reason| DnsError::InvalidName {
                name: name.clone(),
                reason,
            })?;
            if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
                return Err(DnsError::InvalidAddress {
                    name: name.clone(),
                    ip: *ip,
                });
            }
            let fqdn = zone
                .prepend_label(label.as_bytes())
                .map_err(|e| DnsError::InvalidName {
                    name: name.clone(),
                    reason: e.to_string(),
                })?;
            match ptrs.entry(*ip) {
                Entry::Vacant(slot) => {
                    slot.insert(PtrNames::One([fqdn.clone()]));
                }
                Entry::Occupied(mut slot) => slot.get_mut().push(fqdn.clone()),
            }
            let a = [Record::from_rdata(fqdn, ttl, RData::A(A(*ip)))];
            if hosts
                .insert(label.into_bytes().into_boxed_slice(), a)
                .is_some()
            {
                return Err(DnsError::DuplicateName {
                    name: name.to_ascii_lowercase(),
                });
            }
        }
        for names in ptrs.values_mut() {
            if let PtrNames::Many(names) = names {
                names.sort_unstable_by(hickory_proto::rr::Name::cmp_case);
            }
        }

        let soa = soa_record(zone.clone(), zone, ttl, serial);
        let reverse = config
            .reverse
            .map(|net| (net, soa_record(reverse_zone_name(net), zone, ttl, serial)));
        Ok(Self {
            zone: LowerName::new(zone),
            zone_labels: zone.num_labels(),
            ttl,
            hosts,
            ptrs,
            soa: [soa],
            reverse,
        })
    }

    /// The TTL of every record in the table.
    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// How many names the table holds.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// True when the table holds no names.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Decides what a query for `name`/`qtype`/`qclass` gets. Allocation-free.
    pub fn resolve(&self, name: &LowerName, qtype: RecordType, qclass: DNSClass) -> Resolution<'_> {
        if self.zone.zone_of(name) {
            return self.resolve_forward_zone(name, qtype, qclass);
        }
        if let Some(ip) = ptr_name_to_ipv4(name) {
            if let Some(names) = self.ptrs.get(&ip).map(PtrNames::as_slice) {
                return match (qclass, qtype) {
                    (DNSClass::IN, RecordType::PTR | RecordType::ANY) => Resolution::Ptr(names),
                    _ => Resolution::NoData(self.reverse.as_ref().map(|(_, soa)| soa)),
                };
            }
            if let Some((net, soa)) = &self.reverse {
                if net.contains(&ip) {
                    return Resolution::NxDomain(soa);
                }
            }
        }
        Resolution::Forward
    }

    fn resolve_forward_zone(
        &self,
        name: &LowerName,
        qtype: RecordType,
        qclass: DNSClass,
    ) -> Resolution<'_> {
        let soa = &self.soa[0];
        let labels = name.num_labels();
        if labels == self.zone_labels {
            return match (qclass, qtype) {
                (DNSClass::IN, RecordType::SOA | RecordType::ANY) => Resolution::Answer(&self.soa),
                _ => Resolution::NoData(Some(soa)),
            };
        }
        if labels != self.zone_labels + 1 {
            return Resolution::NxDomain(soa);
        }
        let Some(first) = name.iter().next() else {
            return Resolution::NxDomain(soa);
        };
        match self.hosts.get(first) {
            None => Resolution::NxDomain(soa),
            Some(a) => match (qclass, qtype) {
                (DNSClass::IN, RecordType::A | RecordType::ANY) => Resolution::Answer(a),
                _ => Resolution::NoData(Some(soa)),
            },
        }
    }
}

fn soa_record(owner: Name, zone: &Name, ttl: u32, serial: u32) -> Record {
    let rname = zone
        .prepend_label("hostmaster")
        .unwrap_or_else(|_| zone.clone());
    Record::from_rdata(
        owner,
        ttl,
        RData::SOA(SOA::new(
            zone.clone(),
            rname,
            serial,
            SOA_REFRESH,
            SOA_RETRY,
            SOA_EXPIRE,
            ttl,
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ZoneConfig {
        ZoneConfig::new("vm.internal", 5, Some("10.0.0.0/24".parse().unwrap())).unwrap()
    }

    fn records(pairs: &[(&str, [u8; 4])]) -> HashMap<String, Ipv4Addr> {
        pairs
            .iter()
            .map(|(n, ip)| (n.to_string(), Ipv4Addr::from(*ip)))
            .collect()
    }

    fn lower(name: &str) -> LowerName {
        LowerName::new(&Name::from_ascii(name).unwrap())
    }

    #[test]
    fn labels_are_validated() {
        assert_eq!(validate_label("web-1").unwrap(), "web-1");
        assert_eq!(validate_label("WeB").unwrap(), "web");
        assert_eq!(validate_label(&"a".repeat(63)).unwrap().len(), 63);
        for bad in ["", "-a", "a-", "a.b", "a_b", "é", "a b", &"a".repeat(64)] {
            assert!(validate_label(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn zone_is_validated() {
        assert_eq!(
            ZoneConfig::new("VM.Internal.", 5, None)
                .unwrap()
                .zone()
                .to_ascii(),
            "vm.internal."
        );
        for bad in ["", ".", "a..b", "-x.internal", "a_b.internal"] {
            assert!(
                matches!(
                    ZoneConfig::new(bad, 5, None),
                    Err(DnsError::InvalidZone { .. })
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn ptr_names_map_to_ipv4() {
        let parse = |s: &str| ptr_name_to_ipv4(&Name::from_ascii(s).unwrap());
        assert_eq!(
            parse("4.3.2.1.in-addr.arpa."),
            Some(Ipv4Addr::new(1, 2, 3, 4))
        );
        assert_eq!(
            parse("255.0.31.172.IN-ADDR.ARPA"),
            Some(Ipv4Addr::new(172, 31, 0, 255))
        );
        for bad in [
            "3.2.1.in-addr.arpa.",
            "5.4.3.2.1.in-addr.arpa.",
            "256.3.2.1.in-addr.arpa.",
            "04.3.2.1.in-addr.arpa.",
            "a.3.2.1.in-addr.arpa.",
            "4.3.2.1.ip6.arpa.",
            "4.3.2.1.in-addr.example.",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        // The name hickory builds for an IP parses back to it.
        let ip = Ipv4Addr::new(10, 0, 0, 7);
        assert_eq!(ptr_name_to_ipv4(&Name::from(ip)), Some(ip));
    }

    #[test]
    fn reverse_zone_rounds_to_octets() {
        let name = |s: &str| reverse_zone_name(s.parse().unwrap()).to_ascii();
        assert_eq!(name("172.31.240.0/24"), "240.31.172.in-addr.arpa.");
        assert_eq!(name("10.1.0.0/20"), "1.10.in-addr.arpa.");
        assert_eq!(name("10.0.0.0/8"), "10.in-addr.arpa.");
    }

    #[test]
    fn build_answers_a_and_ptr() {
        let table = RecordTable::build(&config(), &records(&[("Web", [10, 0, 0, 2])]), 7).unwrap();
        assert_eq!(table.len(), 1);
        let Resolution::Answer(a) =
            table.resolve(&lower("web.vm.internal."), RecordType::A, DNSClass::IN)
        else {
            panic!("no A answer");
        };
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].name.to_ascii(), "web.vm.internal.");
        assert_eq!(a[0].ttl, 5);
        assert_eq!(a[0].data, RData::A(A(Ipv4Addr::new(10, 0, 0, 2))));

        let Resolution::Ptr(ptr) = table.resolve(
            &lower("2.0.0.10.in-addr.arpa."),
            RecordType::PTR,
            DNSClass::IN,
        ) else {
            panic!("no PTR answer");
        };
        assert_eq!(ptr, [Name::from_ascii("web.vm.internal.").unwrap()]);
    }

    #[test]
    fn resolve_covers_every_case() {
        let table = RecordTable::build(&config(), &records(&[("web", [10, 0, 0, 2])]), 1).unwrap();
        let r = |n: &str, t| table.resolve(&lower(n), t, DNSClass::IN);
        assert!(matches!(
            r("web.vm.internal.", RecordType::AAAA),
            Resolution::NoData(Some(_))
        ));
        assert!(matches!(
            r("other.vm.internal.", RecordType::A),
            Resolution::NxDomain(_)
        ));
        assert!(matches!(
            r("a.web.vm.internal.", RecordType::A),
            Resolution::NxDomain(_)
        ));
        assert!(matches!(
            r("vm.internal.", RecordType::SOA),
            Resolution::Answer(_)
        ));
        assert!(matches!(
            r("vm.internal.", RecordType::A),
            Resolution::NoData(Some(_))
        ));
        assert_eq!(r("example.com.", RecordType::A), Resolution::Forward);
        assert_eq!(r("internal.", RecordType::A), Resolution::Forward);
        // Unknown guest IP inside the subnet: ours, NXDOMAIN; outside: forwarded.
        assert!(matches!(
            r("9.0.0.10.in-addr.arpa.", RecordType::PTR),
            Resolution::NxDomain(_)
        ));
        assert_eq!(
            r("8.8.8.8.in-addr.arpa.", RecordType::PTR),
            Resolution::Forward
        );
        // Without a configured subnet an unknown PTR is forwarded.
        let no_rev = ZoneConfig::new("vm.internal", 5, None).unwrap();
        let table = RecordTable::build(&no_rev, &records(&[("web", [10, 0, 0, 2])]), 1).unwrap();
        assert_eq!(
            table.resolve(
                &lower("9.0.0.10.in-addr.arpa."),
                RecordType::PTR,
                DNSClass::IN
            ),
            Resolution::Forward
        );
    }

    #[test]
    fn bad_names_are_rejected_by_name() {
        let err = RecordTable::build(
            &config(),
            &records(&[("ok", [10, 0, 0, 2]), ("bad_name", [10, 0, 0, 3])]),
            1,
        )
        .unwrap_err();
        assert!(
            matches!(&err, DnsError::InvalidName { name, .. } if name == "bad_name"),
            "{err}"
        );
        assert!(err.to_string().contains("bad_name"));
    }

    #[test]
    fn case_duplicates_and_bad_addresses_are_rejected() {
        let err = RecordTable::build(
            &config(),
            &records(&[("Web", [10, 0, 0, 2]), ("web", [10, 0, 0, 3])]),
            1,
        )
        .unwrap_err();
        assert!(matches!(&err, DnsError::DuplicateName { name } if name == "web"));
        for ip in [[0, 0, 0, 0], [255, 255, 255, 255], [224, 0, 0, 1]] {
            let err = RecordTable::build(&config(), &records(&[("web", ip)]), 1).unwrap_err();
            assert!(matches!(err, DnsError::InvalidAddress { .. }));
        }
    }

    #[test]
    fn duplicate_ips_get_every_name_in_the_ptr() {
        let table = RecordTable::build(
            &config(),
            &records(&[("b", [10, 0, 0, 2]), ("a", [10, 0, 0, 2])]),
            1,
        )
        .unwrap();
        let Resolution::Ptr(ptr) = table.resolve(
            &lower("2.0.0.10.in-addr.arpa."),
            RecordType::PTR,
            DNSClass::IN,
        ) else {
            panic!("no PTR answer");
        };
        let names: Vec<_> = ptr.iter().map(Name::to_ascii).collect();
        assert_eq!(names, ["a.vm.internal.", "b.vm.internal."]);
    }
}
