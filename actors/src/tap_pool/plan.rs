//! Pure decisions of the TAP pool: TAP names, checking the leases handed to `Initialize`, and
//! what to do with each link found on the host at start-up.

use std::collections::{BTreeMap, BTreeSet};

use crate::host::links::{check_ifname, LinkEntry, LinkKind};
use crate::lease::{MacAddr, NetLease};

use super::ips::{IpPool, IpReject};
use super::{TapPoolConfig, TapPoolError};

/// The number of a pool TAP name (`<prefix><decimal>`, no leading zeros), if `name` is one.
pub fn tap_number(prefix: &str, name: &str) -> Option<u32> {
    let digits = name.strip_prefix(prefix)?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    canonical.then(|| digits.parse().ok()).flatten()
}

/// The names the pool must not hand out again: its own TAPs (free, leased, being made or
/// deleted) and foreign links that happen to carry the prefix.
#[derive(Debug, Clone)]
pub struct TapNames {
    prefix: String,
    taken: BTreeSet<String>,
    /// No number below this one is free: the search starts here, so reserving costs O(1)
    /// amortised instead of a walk over every name in use.
    hint: u32,
}

impl TapNames {
    /// No name taken yet.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.into(),
            taken: BTreeSet::new(),
            hint: 0,
        }
    }

    /// Takes the lowest-numbered free name; `None` if no name fits in 15 bytes.
    #[expect(
        clippy::maybe_infinite_iter,
        reason = "take_while ends it: names grow longer than an interface name can be"
    )]
    pub fn reserve_next(&mut self) -> Option<String> {
        let (n, name) = (self.hint..)
            .map(|n| (n, format!("{}{n}", self.prefix)))
            .take_while(|(_, name)| check_ifname(name).is_ok())
            .find(|(_, name)| !self.taken.contains(name))?;
        self.taken.insert(name.clone());
        self.hint = n.saturating_add(1);
        Some(name)
    }

    /// Marks `name` as taken.
    pub fn take(&mut self, name: &str) {
        self.taken.insert(name.into());
    }

    /// Frees `name` for reuse.
    pub fn release(&mut self, name: &str) {
        self.taken.remove(name);
        if let Some(n) = tap_number(&self.prefix, name) {
            self.hint = self.hint.min(n);
        }
    }

    /// True if `name` is taken.
    pub fn is_taken(&self, name: &str) -> bool {
        self.taken.contains(name)
    }

    /// How many names are taken: every TAP of the pool that is, or is about to be, a port of
    /// the bridge (and foreign links with the prefix, so never fewer).
    #[must_use]
    pub fn len(&self) -> usize {
        self.taken.len()
    }

    /// True if no name is taken.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.taken.is_empty()
    }
}

/// Checks the leases live VMs hold before anything is touched: each must be a lease this pool
/// could have made (guest address of the subnet, its gateway, prefix and MAC, a valid TAP
/// name) and no two may share a TAP or an address.
pub fn validate_used(config: &TapPoolConfig, used: &[NetLease]) -> Result<(), TapPoolError> {
    let mut ips = IpPool::new(config.cidr);
    let mut taps = BTreeSet::new();
    for lease in used {
        let bad = |reason: String| TapPoolError::InvalidUsedLease {
            tap: lease.tap.clone(),
            reason,
        };
        if check_ifname(&lease.tap).is_err() {
            return Err(bad("not a valid interface name".into()));
        }
        if lease.tap == config.bridge {
            return Err(bad("is the bridge's name".into()));
        }
        if !taps.insert(lease.tap.as_str()) {
            return Err(bad("TAP is listed twice".into()));
        }
        match ips.mark_used(lease.guest_ip) {
            Ok(()) => {}
            Err(IpReject::NotGuestAddress) => {
                return Err(bad(format!(
                    "{} is not a guest address of {}",
                    lease.guest_ip, config.cidr
                )))
            }
            Err(IpReject::AlreadyLeased) => {
                return Err(bad(format!("{} is leased twice", lease.guest_ip)))
            }
        }
        if lease.gateway != ips.gateway() || lease.prefix_len != config.cidr.prefix_len() {
            return Err(bad(format!(
                "gateway {}/{} differs from the bridge's {}/{}",
                lease.gateway,
                lease.prefix_len,
                ips.gateway(),
                config.cidr.prefix_len()
            )));
        }
        if lease.mac != MacAddr::for_guest(lease.guest_ip) {
            return Err(bad(format!(
                "MAC {} is not the one for {}",
                lease.mac, lease.guest_ip
            )));
        }
    }
    Ok(())
}

/// What to do with the links found at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitPlan {
    /// Leased TAPs that exist: re-attach (name, index) to make sure of bridge, MTU, isolation.
    pub reattach: Vec<(String, u32)>,
    /// Leased TAPs that are missing: create and attach.
    pub recreate: Vec<String>,
    /// Unleased pool TAPs to keep as free TAPs (name, index), lowest numbers first.
    pub reclaim: Vec<(String, u32)>,
    /// Unleased pool TAPs beyond the pool size: delete.
    pub delete: Vec<String>,
    /// Prefixed links that are not pool TAPs (not TAPs, or not `<prefix><n>`): leave alone,
    /// but never reuse their names.
    pub foreign: Vec<String>,
}

/// Decides, from the leases in use and the prefixed links present, what `Initialize` does.
/// A leased TAP name held by a link that is not a TAP is an error.
pub fn plan_initialize(
    config: &TapPoolConfig,
    used: &[NetLease],
    existing: &[LinkEntry],
) -> Result<InitPlan, TapPoolError> {
    let by_name: BTreeMap<&str, &LinkEntry> =
        existing.iter().map(|l| (l.name.as_str(), l)).collect();
    let mut plan = InitPlan::default();
    for lease in used {
        match by_name.get(lease.tap.as_str()) {
            Some(link) if link.kind == LinkKind::Tap => {
                plan.reattach.push((link.name.clone(), link.index));
            }
            Some(_) => {
                return Err(TapPoolError::InvalidUsedLease {
                    tap: lease.tap.clone(),
                    reason: "a link with that name exists and is not a TAP".into(),
                })
            }
            None => plan.recreate.push(lease.tap.clone()),
        }
    }
    let leased: BTreeSet<&str> = used.iter().map(|l| l.tap.as_str()).collect();
    let mut strays: Vec<(u32, &LinkEntry)> = Vec::new();
    for link in existing {
        if leased.contains(link.name.as_str()) || link.name == config.bridge {
            continue;
        }
        match tap_number(&config.tap_prefix, &link.name) {
            Some(n) if link.kind == LinkKind::Tap => strays.push((n, link)),
            _ => plan.foreign.push(link.name.clone()),
        }
    }
    strays.sort_by_key(|(n, _)| *n);
    let keep = usize::try_from(config.pool_size).unwrap_or(usize::MAX);
    for (i, (_, link)) in strays.into_iter().enumerate() {
        if i < keep {
            plan.reclaim.push((link.name.clone(), link.index));
        } else {
            plan.delete.push(link.name.clone());
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn config() -> TapPoolConfig {
        TapPoolConfig {
            cidr: "10.9.0.0/24".parse().unwrap(),
            pool_size: 2,
            ..TapPoolConfig::default()
        }
    }

    fn lease(tap: &str, last: u8) -> NetLease {
        let ip = Ipv4Addr::new(10, 9, 0, last);
        NetLease {
            tap: tap.into(),
            mac: MacAddr::for_guest(ip),
            guest_ip: ip,
            gateway: Ipv4Addr::new(10, 9, 0, 1),
            prefix_len: 24,
        }
    }

    fn link(name: &str, index: u32, kind: LinkKind) -> LinkEntry {
        LinkEntry {
            name: name.into(),
            index,
            kind,
            master: None,
        }
    }

    #[test]
    fn tap_numbers_are_canonical_decimals() {
        assert_eq!(tap_number("hth", "hth0"), Some(0));
        assert_eq!(tap_number("hth", "hth42"), Some(42));
        for not in ["hth", "hth01", "hthx", "hth-br", "xyz1", "hth99999999999"] {
            assert_eq!(tap_number("hth", not), None, "{not}");
        }
    }

    #[test]
    fn names_are_lowest_free_and_fit_ifnamsiz() {
        let mut names = TapNames::new("hth");
        names.take("hth1");
        assert_eq!(names.reserve_next().as_deref(), Some("hth0"));
        assert_eq!(names.reserve_next().as_deref(), Some("hth2"));
        names.release("hth0");
        assert_eq!(names.reserve_next().as_deref(), Some("hth0"));
        assert_eq!(names.reserve_next().as_deref(), Some("hth3"));
        names.take("hth4");
        names.release("hth2");
        names.release("hth1");
        let next: Vec<_> = std::iter::from_fn(|| names.reserve_next())
            .take(3)
            .collect();
        assert_eq!(next, ["hth1", "hth2", "hth5"]);
        let mut long = TapNames::new("abcdefghijklmn");
        let all: Vec<_> = std::iter::from_fn(|| long.reserve_next()).collect();
        assert_eq!(all.len(), 10, "one digit fits after a 14-byte prefix");
    }

    #[test]
    fn used_leases_are_validated() {
        let c = config();
        assert!(validate_used(&c, &[lease("hth0", 2), lease("hth5", 3)]).is_ok());
        let mut wrong_mac = lease("hth0", 2);
        wrong_mac.mac = MacAddr([6, 0, 0, 0, 0, 1]);
        let mut wrong_gw = lease("hth0", 2);
        wrong_gw.gateway = Ipv4Addr::new(10, 9, 0, 254);
        for (bad, needle) in [
            (vec![lease("hth0", 2), lease("hth0", 3)], "twice"),
            (vec![lease("hth0", 2), lease("hth1", 2)], "leased twice"),
            (vec![lease("hth0", 1)], "not a guest address"),
            (vec![lease("hth0", 255)], "not a guest address"),
            (vec![lease("bad/name", 2)], "interface name"),
            (vec![lease("hearth0", 2)], "bridge"),
            (vec![wrong_mac], "MAC"),
            (vec![wrong_gw], "gateway"),
        ] {
            let err = validate_used(&c, &bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn plan_sorts_links_into_reattach_recreate_reclaim_delete_foreign() {
        let c = config();
        let used = [lease("hth3", 2), lease("hth7", 3)];
        let existing = [
            link("hth3", 13, LinkKind::Tap),
            link("hth9", 19, LinkKind::Tap),
            link("hth1", 11, LinkKind::Tap),
            link("hth2", 12, LinkKind::Tap),
            link("hth4", 14, LinkKind::Other),
            link("hthfoo", 20, LinkKind::Tap),
        ];
        let plan = plan_initialize(&c, &used, &existing).unwrap();
        assert_eq!(plan.reattach, vec![("hth3".to_string(), 13)]);
        assert_eq!(plan.recreate, vec!["hth7".to_string()]);
        assert_eq!(
            plan.reclaim,
            vec![("hth1".to_string(), 11), ("hth2".to_string(), 12)]
        );
        assert_eq!(plan.delete, vec!["hth9".to_string()]);
        assert_eq!(plan.foreign, vec!["hth4".to_string(), "hthfoo".to_string()]);
    }

    #[test]
    fn leased_name_held_by_a_non_tap_is_an_error() {
        let err = plan_initialize(
            &config(),
            &[lease("hth3", 2)],
            &[link("hth3", 3, LinkKind::Bridge)],
        )
        .unwrap_err();
        assert!(err.to_string().contains("not a TAP"), "{err}");
    }
}
