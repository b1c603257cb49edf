//! Keeps an outgoing RTP stream continuous while the source behind it changes.
//!
//! A subscriber's slot is one outgoing RTP stream (one SSRC) whose source changes: another
//! participant takes the slot, or the simulcast layer changes. The receiver must see one
//! stream: sequence numbers that continue by one, timestamps that keep advancing in step
//! with real time. [`Rewriter`] holds the offsets that map the current source's numbers onto
//! the outgoing stream, and re-bases them at each switch.

use std::time::{Duration, Instant};

/// Rewrites sequence numbers and timestamps of one outgoing stream.
#[derive(Debug, Clone)]
pub struct Rewriter {
    clock_rate: u32,
    /// Offsets for the current source; `None` until the first packet after a switch.
    base: Option<Base>,
    /// The highest sequence number sent and the timestamp and time it was sent with.
    last: Option<Last>,
    /// The newest source sequence number handled (sent or skipped) since the switch.
    newest: Option<u64>,
    /// Source packets left out since the switch ([`Rewriter::skip`]).
    skips: Skips,
}

/// How many skipped source numbers a stream remembers, so that a packet arriving late from
/// before them is still numbered as it would have been.
const REMEMBERED_SKIPS: usize = 32;

/// Source numbers an outgoing stream left out on purpose (a temporal layer its receiver
/// does not get). Each moves the numbers of the packets after it down by one; a packet
/// that arrives late, from before some of them, must not be moved by those.
#[derive(Debug, Clone)]
pub(crate) struct Skips {
    ring: [u64; REMEMBERED_SKIPS],
    /// How many were pushed since the last clear.
    count: usize,
}

impl Default for Skips {
    fn default() -> Self {
        Skips {
            ring: [0; REMEMBERED_SKIPS],
            count: 0,
        }
    }
}

impl Skips {
    pub(crate) fn clear(&mut self) {
        self.count = 0;
    }

    pub(crate) fn contains(&self, v: u64) -> bool {
        self.ring[..self.count.min(REMEMBERED_SKIPS)].contains(&v)
    }

    pub(crate) fn push(&mut self, v: u64) {
        self.ring[self.count % REMEMBERED_SKIPS] = v;
        self.count += 1;
    }

    /// How many skipped numbers are newer than `v` by `newer(skipped, v)`; `None` when
    /// every remembered one is and older ones, forgotten, might be too.
    pub(crate) fn newer_than(&self, v: u64, newer: impl Fn(u64, u64) -> bool) -> Option<u64> {
        let kept = self.count.min(REMEMBERED_SKIPS);
        let n = self.ring[..kept].iter().filter(|&&s| newer(s, v)).count();
        if self.count > REMEMBERED_SKIPS && n == kept {
            return None;
        }
        Some(n as u64)
    }
}

#[derive(Debug, Clone, Copy)]
struct Base {
    /// Added (wrapping) to the source's extended sequence number.
    seq_delta: u64,
    /// Added (wrapping) to the source's timestamp.
    ts_delta: u32,
    /// Packets of the source older than this came before the switch and are not sent.
    first_seq: u64,
}

#[derive(Debug, Clone, Copy)]
struct Last {
    seq: u64,
    ts: u32,
    at: Instant,
}

impl Rewriter {
    pub fn new(clock_rate: u32) -> Self {
        Rewriter {
            clock_rate,
            base: None,
            last: None,
            newest: None,
            skips: Skips::default(),
        }
    }

    /// The source behind the stream changes; the next packet re-bases the offsets.
    pub fn switch_source(&mut self) {
        self.base = None;
        self.newest = None;
        self.skips.clear();
    }

    /// The source packet `seq` is left out of this stream on purpose (it belongs to a
    /// temporal layer the receiver does not get): the packets after it move down by one,
    /// so the receiver sees no gap and asks for no retransmission.
    ///
    /// A packet skipped after a newer one was already handled (reordered on the way in)
    /// leaves a gap instead: the newer one's number is already out.
    /// Skips every source packet after the newest one handled and before `seq`: the
    /// start of a new frame shows that the packets between belong to the frame before it,
    /// which was left out, even if they have not arrived yet. At most 64.
    pub fn skip_before(&mut self, seq: u64) {
        let Some(newest) = self.newest else {
            return;
        };
        let from = newest + 1;
        for s in from..seq.min(from + 64) {
            self.skip(s);
        }
    }

    pub fn skip(&mut self, seq: u64) {
        let Some(base) = &mut self.base else {
            // Nothing of this source sent yet: its first packet continues the stream.
            return;
        };
        if seq < base.first_seq || self.newest.is_some_and(|n| seq <= n) {
            return;
        }
        base.seq_delta = base.seq_delta.wrapping_sub(1);
        self.newest = Some(seq);
        self.skips.push(seq);
    }

    /// Whether anything was sent on this stream yet.
    pub fn has_sent(&self) -> bool {
        self.last.is_some()
    }

    /// Maps a source packet's extended sequence number and timestamp onto the outgoing
    /// stream, or `None` when the packet predates the current source's first packet.
    ///
    /// The first packet of a new stream keeps its source's 16-bit sequence number (so the
    /// outgoing SRTP rollover counter starts at 0) and its timestamp. The first packet after
    /// a switch continues at the last sequence number plus one and at the last timestamp
    /// plus the wall-clock time since then (at least one tick), so a receiver's jitter
    /// buffer sees time moving on as it did.
    pub fn rewrite(&mut self, seq: u64, ts: u32, now: Instant) -> Option<(u64, u32)> {
        let base = match self.base {
            Some(base) => base,
            None => {
                let (out_seq, out_ts) = match self.last {
                    None => (seq & 0xffff, ts),
                    Some(last) => {
                        let elapsed = now.saturating_duration_since(last.at);
                        let ticks = ticks(elapsed, self.clock_rate).max(1);
                        (last.seq + 1, last.ts.wrapping_add(ticks))
                    }
                };
                let base = Base {
                    seq_delta: out_seq.wrapping_sub(seq),
                    ts_delta: out_ts.wrapping_sub(ts),
                    first_seq: seq,
                };
                self.base = Some(base);
                base
            }
        };
        if seq < base.first_seq {
            return None;
        }
        let mut delta = base.seq_delta;
        match self.newest {
            Some(n) if seq < n => {
                // Late: the skips after it do not move it.
                delta = delta.wrapping_add(self.skips.newer_than(seq, |s, v| s > v)?);
            }
            _ => self.newest = Some(seq),
        }
        let out_seq = seq.wrapping_add(delta);
        let out_ts = ts.wrapping_add(base.ts_delta);
        match self.last {
            Some(last) if out_seq <= last.seq => {}
            _ => {
                self.last = Some(Last {
                    seq: out_seq,
                    ts: out_ts,
                    at: now,
                })
            }
        }
        Some((out_seq, out_ts))
    }
}

/// `elapsed` in RTP ticks at `clock_rate`, saturating at what fits a timestamp step.
fn ticks(elapsed: Duration, clock_rate: u32) -> u32 {
    let t = elapsed.as_micros() * u128::from(clock_rate) / 1_000_000;
    t.min(u128::from(u32::MAX / 2)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_source_passes_through_its_own_numbers() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000);
        assert_eq!(r.rewrite(70_000, 1000, t0), Some((70_000 & 0xffff, 1000)));
        assert_eq!(
            r.rewrite(70_001, 4000, t0),
            Some(((70_000 & 0xffff) + 1, 4000))
        );
    }

    #[test]
    fn switch_continues_sequence_and_advances_time() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(48_000);
        for i in 0..10u64 {
            let now = t0 + Duration::from_millis(20 * i);
            assert_eq!(
                r.rewrite(500 + i, 960 * i as u32, now),
                Some((500 + i, 960 * i as u32))
            );
        }
        // Last sent: seq 509, ts 8640 at t0+180ms. A new source 100 ms later.
        r.switch_source();
        let now = t0 + Duration::from_millis(280);
        let (seq, ts) = r.rewrite(40_000, 123_456, now).unwrap();
        assert_eq!(seq, 510);
        assert_eq!(ts, 8640 + 4800);
        let (seq, ts) = r.rewrite(40_001, 123_456 + 960, now).unwrap();
        assert_eq!((seq, ts), (511, 8640 + 4800 + 960));
        // A late packet of the new source from before its first one is not sent.
        assert_eq!(r.rewrite(39_999, 0, now), None);
    }

    #[test]
    fn timestamps_wrap_and_late_packets_keep_their_place() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000);
        assert_eq!(r.rewrite(10, u32::MAX - 10, t0), Some((10, u32::MAX - 10)));
        assert_eq!(r.rewrite(12, 20, t0), Some((12, 20)));
        // Reordered packet: mapped with the same offsets, does not move `last`.
        assert_eq!(r.rewrite(11, 5, t0), Some((11, 5)));
        r.switch_source();
        // Immediate switch still advances by at least one tick.
        assert_eq!(r.rewrite(1_000_000, 7, t0), Some((13, 21)));
    }

    #[test]
    fn skipped_packets_leave_no_gap_and_late_ones_keep_their_place() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000);
        assert_eq!(r.rewrite(100, 0, t0), Some((100, 0)));
        r.skip(101);
        r.skip(102);
        assert_eq!(r.rewrite(103, 3000, t0), Some((101, 3000)));
        r.skip(105);
        // 104 arrives after 105 was left out: it keeps the number it had before the skip.
        assert_eq!(r.rewrite(106, 6000, t0), Some((103, 6000)));
        assert_eq!(r.rewrite(104, 3000, t0), Some((102, 3000)));
        // A skip of a packet older than the newest handled changes nothing after it.
        r.skip(99);
        assert_eq!(r.rewrite(107, 9000, t0), Some((104, 9000)));
        // A switch forgets the skips and continues after the last number sent.
        r.switch_source();
        assert_eq!(r.rewrite(5000, 1, t0).unwrap().0, 105);
        for s in 5001..5001 + 40 {
            r.skip(s);
        }
        assert_eq!(r.rewrite(5000 + 41, 2, t0).unwrap().0, 106);
        // A late packet from before more skips than are remembered cannot be placed: it
        // is not sent rather than sent under a wrong number.
        assert_eq!(r.rewrite(5000, 1, t0), None);
    }
}
