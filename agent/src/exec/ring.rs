//! A bounded byte ring addressed by absolute stream offsets, so a reader that remembers how far
//! it got never loses nor repeats a byte, whatever was dropped from the front meanwhile.

use std::collections::VecDeque;

/// One output stream's kept bytes: at most `cap` of them, the newest.
#[derive(Debug)]
pub struct Ring {
    buf: VecDeque<u8>,
    cap: usize,
    /// The absolute offset of `buf[0]` in the stream.
    start: u64,
}

impl Ring {
    /// An empty ring keeping at most `cap` bytes.
    #[must_use]
    pub fn new(cap: usize) -> Self {
        Ring {
            buf: VecDeque::new(),
            cap,
            start: 0,
        }
    }

    /// The absolute offset of the oldest kept byte.
    #[must_use]
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The absolute offset just past the newest byte (bytes ever written).
    #[must_use]
    pub fn end(&self) -> u64 {
        self.start + self.buf.len() as u64
    }

    /// Room left before the ring is full.
    #[must_use]
    pub fn room(&self) -> usize {
        self.cap - self.buf.len()
    }

    /// Appends `data`, dropping the oldest bytes beyond the capacity.
    pub fn push_overwriting(&mut self, data: &[u8]) {
        let data = if data.len() > self.cap {
            // Only the newest `cap` bytes can be kept; the rest count as dropped.
            self.start += (self.buf.len() + data.len() - self.cap) as u64;
            self.buf.clear();
            &data[data.len() - self.cap..]
        } else {
            let excess = (self.buf.len() + data.len()).saturating_sub(self.cap);
            self.drop_front(excess);
            data
        };
        self.buf.extend(data);
    }

    /// Appends as much of `data` as fits without dropping anything; returns how much.
    pub fn push_within(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.room());
        self.buf.extend(&data[..n]);
        n
    }

    /// Drops the bytes before absolute offset `upto` (no further than the end).
    pub fn drop_until(&mut self, upto: u64) {
        let n = usize::try_from(upto.saturating_sub(self.start)).unwrap_or(usize::MAX);
        self.drop_front(n.min(self.buf.len()));
    }

    fn drop_front(&mut self, n: usize) {
        self.buf.drain(..n);
        self.start += n as u64;
    }

    /// Copies up to `max` bytes starting at absolute offset `from` (clamped to what is kept).
    #[must_use]
    pub fn read_at(&self, from: u64, max: usize) -> Vec<u8> {
        let from = from.max(self.start);
        let skip = usize::try_from(from - self.start).unwrap_or(usize::MAX);
        let (a, b) = self.buf.as_slices();
        let (a_from, b_from) = if skip < a.len() {
            (skip, 0)
        } else {
            (a.len(), (skip - a.len()).min(b.len()))
        };
        let mut out = Vec::with_capacity(max.min(self.buf.len().saturating_sub(skip)));
        for part in [&a[a_from..], &b[b_from..]] {
            let take = part.len().min(max - out.len());
            out.extend_from_slice(&part[..take]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overwriting_keeps_the_newest_and_counts_offsets() {
        let mut r = Ring::new(4);
        r.push_overwriting(b"abc");
        r.push_overwriting(b"def");
        assert_eq!((r.start(), r.end()), (2, 6));
        assert_eq!(r.read_at(0, 10), b"cdef");
        assert_eq!(r.read_at(4, 10), b"ef");
        r.push_overwriting(b"0123456789");
        assert_eq!((r.start(), r.end()), (12, 16));
        assert_eq!(r.read_at(0, 10), b"6789");
    }

    #[test]
    fn within_never_drops_and_drop_until_frees() {
        let mut r = Ring::new(4);
        assert_eq!(r.push_within(b"abcdef"), 4);
        assert_eq!(r.push_within(b"x"), 0);
        r.drop_until(2);
        assert_eq!(r.push_within(b"xyz"), 2);
        assert_eq!(r.read_at(0, 10), b"cdxy");
        r.drop_until(100);
        assert_eq!((r.start(), r.end()), (6, 6));
    }

    #[test]
    fn reads_across_the_wrap_match_a_plain_model() {
        let mut r = Ring::new(7);
        let mut all = Vec::new();
        for i in 0u8..200 {
            let chunk: Vec<u8> = (0..(i % 5)).map(|k| i.wrapping_add(k)).collect();
            r.push_overwriting(&chunk);
            all.extend_from_slice(&chunk);
            let kept = &all[all.len() - (all.len().min(7))..];
            assert_eq!(r.read_at(0, 100), kept);
            let from = r.start() + 2;
            assert_eq!(
                r.read_at(from, 3),
                &all[usize::try_from(from).unwrap().min(all.len())..]
                    [..kept.len().saturating_sub(2).min(3)]
            );
        }
    }
}
