//! The uid/gid leases of jailed VMs: each VM runs as its own uid, with the gid of the same
//! number, taken from a configured range. Pure bookkeeping: the supervisor records a lease in
//! the store and gives it back on delete; after a restart the recorded leases are
//! [`UidPool::restore`]d before any new one is handed out.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;

/// Errors of the uid pool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UidError {
    /// Every uid of the range is leased.
    #[error("No free uid in {start}..={end} ({leased} leased)")]
    Exhausted {
        /// First uid of the range.
        start: u32,
        /// Last uid of the range.
        end: u32,
        /// How many are leased.
        leased: usize,
    },
    /// A recorded lease lies outside the range (the range was changed).
    #[error("Uid {uid} of VM {vm} is outside the range {start}..={end}")]
    OutOfRange {
        /// The uid.
        uid: u32,
        /// Its VM.
        vm: String,
        /// First uid of the range.
        start: u32,
        /// Last uid of the range.
        end: u32,
    },
    /// A recorded lease is already held by another VM.
    #[error("Uid {uid} is leased to both {held_by} and {vm}")]
    Conflict {
        /// The uid.
        uid: u32,
        /// The VM holding it.
        held_by: String,
        /// The VM that claims it.
        vm: String,
    },
}

/// Leases of uids from a range, one per VM.
#[derive(Debug, Clone)]
pub struct UidPool {
    range: RangeInclusive<u32>,
    leased: BTreeMap<u32, String>,
    /// uids a process that would not die still runs as: never leased.
    quarantined: BTreeSet<u32>,
}

/// The lowest uid a VM may get: below it are system and login users.
pub const MIN_VM_UID: u32 = 1_000;

impl UidPool {
    /// An empty pool over `range`.
    pub fn new(range: RangeInclusive<u32>) -> Self {
        UidPool {
            range,
            leased: BTreeMap::new(),
            quarantined: BTreeSet::new(),
        }
    }

    /// Leases the lowest free uid to `vm` (its existing lease, if it has one).
    pub fn acquire(&mut self, vm: &str) -> Result<u32, UidError> {
        if let Some(uid) = self.lease_of(vm) {
            return Ok(uid);
        }
        let exhausted = || UidError::Exhausted {
            start: *self.range.start(),
            end: *self.range.end(),
            // Once each: a restored lease may be quarantined too.
            leased: self.leased.len()
                + self
                    .quarantined
                    .iter()
                    .filter(|u| !self.leased.contains_key(u))
                    .count(),
        };
        // The lowest uid neither leased nor quarantined.
        let mut candidate = *self.range.start();
        while self.leased.contains_key(&candidate) || self.quarantined.contains(&candidate) {
            candidate = candidate.checked_add(1).ok_or_else(exhausted)?;
        }
        if !self.range.contains(&candidate) {
            return Err(exhausted());
        }
        self.leased.insert(candidate, vm.to_string());
        Ok(candidate)
    }

    /// Keeps `uid` out of use (a process that would not die runs as it): never leased again
    /// by this pool. A VM that holds it keeps its lease; its boot must check
    /// [`UidPool::is_quarantined`].
    pub fn quarantine(&mut self, uid: u32) {
        self.quarantined.insert(uid);
    }

    /// Whether `uid` is kept out of use.
    pub fn is_quarantined(&self, uid: u32) -> bool {
        self.quarantined.contains(&uid)
    }

    /// Records a lease read back from the store.
    pub fn restore(&mut self, uid: u32, vm: &str) -> Result<(), UidError> {
        if !self.range.contains(&uid) {
            return Err(UidError::OutOfRange {
                uid,
                vm: vm.into(),
                start: *self.range.start(),
                end: *self.range.end(),
            });
        }
        match self.leased.get(&uid) {
            Some(held) if held != vm => Err(UidError::Conflict {
                uid,
                held_by: held.clone(),
                vm: vm.into(),
            }),
            _ => {
                self.leased.insert(uid, vm.to_string());
                Ok(())
            }
        }
    }

    /// Gives back `vm`'s lease; returns the uid it held.
    pub fn release(&mut self, vm: &str) -> Option<u32> {
        let uid = self.lease_of(vm)?;
        self.leased.remove(&uid);
        Some(uid)
    }

    /// The uid leased to `vm`.
    pub fn lease_of(&self, vm: &str) -> Option<u32> {
        self.leased
            .iter()
            .find(|(_, v)| v.as_str() == vm)
            .map(|(u, _)| *u)
    }

    /// How many uids are leased.
    pub fn leased(&self) -> usize {
        self.leased.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quarantined_uid_is_never_leased() {
        let mut p = UidPool::new(100..=102);
        p.quarantine(100);
        assert_eq!(p.acquire("a"), Ok(101));
        p.restore(102, "b").unwrap();
        assert!(p.is_quarantined(100) && !p.is_quarantined(101));
        assert!(
            matches!(p.acquire("c"), Err(UidError::Exhausted { leased: 3, .. })),
            "100 quarantined, 101 and 102 leased"
        );
        // A VM recorded with a quarantined uid keeps its lease (its boot is refused above).
        let mut q = UidPool::new(100..=101);
        q.quarantine(100);
        q.restore(100, "d").unwrap();
        assert_eq!(q.lease_of("d"), Some(100));
        assert_eq!(q.release("d"), Some(100));
        assert_eq!(
            q.acquire("e"),
            Ok(101),
            "still quarantined after its VM let it go"
        );
    }

    #[test]
    fn leases_lowest_free_and_reuses_released() {
        let mut p = UidPool::new(100..=102);
        assert_eq!(p.acquire("a"), Ok(100));
        assert_eq!(p.acquire("b"), Ok(101));
        assert_eq!(p.acquire("a"), Ok(100), "same VM, same lease");
        assert_eq!(p.release("a"), Some(100));
        assert_eq!(p.acquire("c"), Ok(100));
        assert_eq!(p.acquire("d"), Ok(102));
        assert!(matches!(
            p.acquire("e"),
            Err(UidError::Exhausted { leased: 3, .. })
        ));
        assert_eq!(p.release("nobody"), None);
    }

    #[test]
    fn restore_checks_range_and_conflicts() {
        let mut p = UidPool::new(100..=200);
        p.restore(150, "a").unwrap();
        p.restore(150, "a").unwrap();
        assert!(matches!(
            p.restore(150, "b"),
            Err(UidError::Conflict { .. })
        ));
        assert!(matches!(
            p.restore(99, "c"),
            Err(UidError::OutOfRange { .. })
        ));
        assert_eq!(p.acquire("d"), Ok(100));
        assert_eq!(p.lease_of("a"), Some(150));
        assert_eq!(p.leased(), 2);
    }

    #[test]
    fn range_ending_at_u32_max_does_not_overflow() {
        let mut p = UidPool::new(u32::MAX - 1..=u32::MAX);
        assert_eq!(p.acquire("a"), Ok(u32::MAX - 1));
        assert_eq!(p.acquire("b"), Ok(u32::MAX));
        assert!(p.acquire("c").is_err());
    }
}
