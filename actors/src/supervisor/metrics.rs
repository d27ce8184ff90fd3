//! Fixed-bucket latency histograms (Prometheus style): constant memory whatever the number of
//! observations.

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
