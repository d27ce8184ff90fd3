//! Fixed-bucket latency histograms (Prometheus style): constant memory whatever the number of
//! observations; and the lifecycle policies' counters.

use std::time::Duration;

/// Upper bounds of the buckets, in seconds.
pub const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A cumulative histogram of durations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Observations at or below each of [`BUCKETS`] (not cumulative here; rendering sums them).
    pub counts: [u64; BUCKETS.len()],
    /// Observations above the last bucket.
    pub overflow: u64,
    /// Sum of all observations, seconds.
    pub sum: f64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        self.sum += s;
        match BUCKETS.iter().position(|b| s <= *b) {
            Some(i) => self.counts[i] += 1,
            None => self.overflow += 1,
        }
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum::<u64>() + self.overflow
    }
}

/// How often the policy loop ran and what the policies decided, since hearthd started. A
/// tick is one pass of the loop (due restarts, then time limits); that it advances is what
/// lets a client (or a test) know the loop had its chance to act after some event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyCounters {
    /// Passes of the policy loop (the periodic check and each `PolicyTick`).
    pub ticks: u64,
    /// Restarts the restart policy decided on (each one is scheduled with its backoff).
    pub restarts: u64,
    /// Crash loops the restart policy gave up on.
    pub give_ups: u64,
    /// Unexpected exits the restart policy left alone (policy `no`, or a guest shutdown
    /// under `on-failure`).
    pub left: u64,
    /// VMs queued for autostart by a start of hearthd.
    pub autostarts: u64,
    /// Time limits acted on.
    pub expiries: u64,
}

impl PolicyCounters {
    /// The decision counters by the label they carry in `/metrics`.
    pub fn decisions(&self) -> [(&'static str, u64); 5] {
        [
            ("restart", self.restarts),
            ("give_up", self.give_ups),
            ("leave", self.left),
            ("autostart", self.autostarts),
            ("expire", self.expiries),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(400));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(9));
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[3], 1);
        assert_eq!(h.overflow, 1);
        assert_eq!(h.count(), 3);
        assert!((h.sum - 9.0034).abs() < 1e-9);
    }
}
