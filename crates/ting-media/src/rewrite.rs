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
        }
    }

    /// The source behind the stream changes; the next packet re-bases the offsets.
    pub fn switch_source(&mut self) {
        self.base = None;
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
        let out_seq = seq.wrapping_add(base.seq_delta);
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
}
