//! Guest IP allocation in the bridge subnet: never the network, gateway (first host) or
//! broadcast address, and round-robin after the last address handed out, so an address that
//! was just freed is the last to be reused (stale ARP caches age out meanwhile).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Why an address cannot be marked as used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpReject {
    /// Not a guest address of the subnet (outside it, or network/gateway/broadcast).
    NotGuestAddress,
    /// Already leased.
    AlreadyLeased,
}

/// The guest addresses of one subnet and which of them are leased.
#[derive(Debug, Clone)]
pub struct IpPool {
    net: Ipv4Net,
    /// First guest address (network + 2), as u32.
    first: u32,
    /// Last guest address (broadcast - 1), as u32.
    last: u32,
    leased: BTreeSet<u32>,
    /// The address handed out last; the search starts after it.
    cursor: u32,
}

impl IpPool {
    /// The pool of `net`'s guest addresses, all free. `net` must leave at least one guest
    /// address (prefix /29 or wider is what the config allows; /30 leaves one).
    pub fn new(net: Ipv4Net) -> Self {
        let net = net.trunc();
        let first = u32::from(net.network()).saturating_add(2);
        let last = u32::from(net.broadcast()).saturating_sub(1);
        Self {
            net,
            first,
            last,
            leased: BTreeSet::new(),
            cursor: last,
        }
    }

    /// The gateway: the subnet's first host address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.net.network()).saturating_add(1))
    }

    /// The subnet.
    pub fn net(&self) -> Ipv4Net {
        self.net
    }

    /// True if `ip` is one the pool may hand to a guest.
    pub fn is_guest_address(&self, ip: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&u32::from(ip))
    }

    /// Leases the next free address after the last one handed out, wrapping around;
    /// `None` when every guest address is leased (nothing changes then).
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let after = self.cursor.checked_add(1).filter(|a| *a <= self.last);
        let found = after
            .and_then(|from| self.first_free(from, self.last))
            .or_else(|| self.first_free(self.first, self.cursor.min(self.last)))?;
        self.leased.insert(found);
        self.cursor = found;
        Some(Ipv4Addr::from(found))
    }

    /// Marks `ip` as leased (a lease that survived a restart). Round-robin continues after
    /// the highest address so marked.
    pub fn mark_used(&mut self, ip: Ipv4Addr) -> Result<(), IpReject> {
        let raw = u32::from(ip);
        if !self.is_guest_address(ip) {
            return Err(IpReject::NotGuestAddress);
        }
        if !self.leased.insert(raw) {
            return Err(IpReject::AlreadyLeased);
        }
        if self.leased.len() == 1 || raw > self.cursor {
            self.cursor = raw;
        }
        Ok(())
    }

    /// Frees `ip`; false if it was not leased.
    pub fn release(&mut self, ip: Ipv4Addr) -> bool {
        self.leased.remove(&u32::from(ip))
    }

    /// Number of leased addresses.
    pub fn leased_count(&self) -> usize {
        self.leased.len()
    }

    /// Number of free guest addresses.
    pub fn free_count(&self) -> u32 {
        let total = self.last.saturating_sub(self.first).saturating_add(1);
        let leased = u32::try_from(self.leased.len()).unwrap_or(u32::MAX);
        if self.last < self.first {
            0
        } else {
            total.saturating_sub(leased)
        }
    }

    /// The lowest free address in `from..=to`, walking only the leased run that starts at
    /// `from` (cost proportional to that run, not to the subnet).
    fn first_free(&self, from: u32, to: u32) -> Option<u32> {
        if from > to || from < self.first {
            return None;
        }
        let mut candidate = from;
        for &taken in self.leased.range(from..=to) {
            if taken != candidate {
                break;
            }
            candidate = candidate.checked_add(1)?;
        }
        (candidate <= to).then_some(candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(cidr: &str) -> IpPool {
        IpPool::new(cidr.parse().unwrap())
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn never_hands_out_network_gateway_or_broadcast() {
        let mut p = pool("10.0.0.0/29");
        assert_eq!(p.gateway(), ip("10.0.0.1"));
        let got: Vec<_> = std::iter::from_fn(|| p.allocate()).collect();
        assert_eq!(
            got,
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"].map(ip)
        );
        assert_eq!(p.free_count(), 0);
        for reserved in ["10.0.0.0", "10.0.0.1", "10.0.0.7", "10.0.1.2"] {
            assert_eq!(p.mark_used(ip(reserved)), Err(IpReject::NotGuestAddress));
        }
    }

    #[test]
    fn exhaustion_changes_nothing_and_release_makes_room() {
        let mut p = pool("10.0.0.0/29");
        while p.allocate().is_some() {}
        assert_eq!(p.allocate(), None);
        assert_eq!(p.leased_count(), 5);
        assert!(p.release(ip("10.0.0.4")));
        assert!(!p.release(ip("10.0.0.4")));
        assert_eq!(p.allocate(), Some(ip("10.0.0.4")));
    }

    #[test]
    fn freed_address_is_not_reused_immediately() {
        let mut p = pool("10.0.0.0/24");
        let a = p.allocate().unwrap();
        let b = p.allocate().unwrap();
        assert_eq!((a, b), (ip("10.0.0.2"), ip("10.0.0.3")));
        p.release(a);
        // Round-robin goes on after b rather than back to a.
        assert_eq!(p.allocate(), Some(ip("10.0.0.4")));
    }

    #[test]
    fn allocation_wraps_around_to_freed_addresses() {
        let mut p = pool("10.0.0.0/29");
        let all: Vec<_> = std::iter::from_fn(|| p.allocate()).collect();
        p.release(all[1]);
        p.release(all[3]);
        assert_eq!(p.allocate(), Some(all[1]));
        assert_eq!(p.allocate(), Some(all[3]));
        assert_eq!(p.allocate(), None);
    }

    #[test]
    fn mark_used_rejects_duplicates_and_moves_the_cursor() {
        let mut p = pool("10.0.0.0/24");
        p.mark_used(ip("10.0.0.9")).unwrap();
        p.mark_used(ip("10.0.0.5")).unwrap();
        assert_eq!(p.mark_used(ip("10.0.0.5")), Err(IpReject::AlreadyLeased));
        assert_eq!(p.allocate(), Some(ip("10.0.0.10")));
        assert_eq!(p.leased_count(), 3);
        assert_eq!(p.free_count(), 253 - 3);
    }

    #[test]
    fn wide_subnet_walks_only_the_leased_run() {
        let mut p = pool("10.0.0.0/16");
        for _ in 0..1000 {
            p.allocate().unwrap();
        }
        assert_eq!(p.allocate(), Some(ip("10.0.3.234")));
    }
}
