//! Progress of a pull or archive import, as [`PullUpdate`] events for a sink (the API turns
//! them into NDJSON lines). Byte counts of a layer are thinned out: one event per MiB or per
//! 100 ms, whichever comes first, plus the last one, so a fast local pull does not emit an
//! event per network chunk.

use std::time::{Duration, Instant};

use hearth_proto::api_pull::PullUpdate;

use super::digest::Digest;

const EVERY_BYTES: u64 = 1 << 20;
const EVERY: Duration = Duration::from_millis(100);

/// Where progress goes.
pub type Sink<'a> = &'a mut (dyn FnMut(PullUpdate) + Send);

/// Thins one layer's byte counts into [`PullUpdate::Layer`] events.
#[derive(Debug)]
pub struct LayerProgress {
    digest: String,
    total: u64,
    last_bytes: u64,
    last_at: Instant,
    sent_any: bool,
}

impl LayerProgress {
    /// Progress of blob `digest` of `total` bytes.
    pub fn new(digest: &Digest, total: u64) -> Self {
        LayerProgress {
            digest: digest.to_string(),
            total,
            last_bytes: 0,
            last_at: Instant::now(),
            sent_any: false,
        }
    }

    /// `done` bytes have arrived: an event when enough changed since the last one.
    pub fn update(&mut self, done: u64) -> Option<PullUpdate> {
        let due = done == self.total
            || done - self.last_bytes.min(done) >= EVERY_BYTES
            || self.last_at.elapsed() >= EVERY
            || !self.sent_any;
        if !due || (self.sent_any && done == self.last_bytes) {
            return None;
        }
        self.last_bytes = done;
        self.last_at = Instant::now();
        self.sent_any = true;
        Some(PullUpdate::Layer {
            digest: self.digest.clone(),
            done,
            total: self.total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thins_out_small_steps_and_always_reports_the_end() {
        let d = Digest::of(b"x");
        let total = 10 << 20;
        let mut p = LayerProgress::new(&d, total);
        let mut events = 0;
        let mut last = None;
        for done in (0..=total).step_by(16 << 10) {
            if let Some(e) = p.update(done) {
                events += 1;
                last = Some(e);
            }
        }
        // 640 chunks of 16 KiB: about one event per MiB (plus time-based ones on a slow run).
        assert!((10..200).contains(&events), "{events} events");
        assert!(
            matches!(last, Some(PullUpdate::Layer { done, .. }) if done == total),
            "{last:?}"
        );
        assert_eq!(p.update(total), None, "the end is reported once");
    }
}
