//! How fast a stream flows: bits per second over recent windows.
//!
//! The allocator spends a subscriber's bandwidth on layers by what they cost, so each
//! simulcast layer's rate is measured as it arrives, on the wire (payload plus the
//! headers each packet carries), once per packet, with no allocation.

use std::time::{Duration, Instant};

/// Bytes a forwarded packet costs on the wire beyond its payload: IPv4 (20) + UDP (8) +
/// RTP (12) + header extensions (about 12) + SRTP tag (16).
pub const PACKET_OVERHEAD_BYTES: u64 = 68;

/// How long one measuring window is.
const WINDOW: Duration = Duration::from_millis(500);

/// A smoothed rate: each closed window moves the estimate a quarter of the way, so a
/// keyframe burst in one window does not double a layer's price.
#[derive(Debug, Clone, Default)]
pub struct RateMeter {
    window_start: Option<Instant>,
    window_bytes: u64,
    /// Bits per second, once a window closed.
    rate: Option<u64>,
}

impl RateMeter {
    /// A packet of `payload` bytes arrived at `now`.
    pub fn record(&mut self, payload: usize, now: Instant) {
        self.roll(now);
        if self.window_start.is_none() {
            self.window_start = Some(now);
        }
        self.window_bytes += payload as u64 + PACKET_OVERHEAD_BYTES;
    }

    /// Closes windows that ended before `now`.
    pub fn roll(&mut self, now: Instant) {
        let Some(start) = self.window_start else {
            return;
        };
        let elapsed = now.saturating_duration_since(start);
        if elapsed < WINDOW {
            return;
        }
        if elapsed >= 2 * WINDOW {
            // The stream stopped (paused, or its publisher went): keep the last rate and
            // start the next window at the next packet.
            self.window_bytes = 0;
            self.window_start = None;
            return;
        }
        let bps = self.window_bytes * 8 * 1_000_000 / elapsed.as_micros().max(1) as u64;
        self.rate = Some(match self.rate {
            None => bps,
            Some(r) => (r * 3 + bps) / 4,
        });
        self.window_bytes = 0;
        self.window_start = Some(now);
    }

    /// The rate in bits per second, once known. A stream that stopped keeps its last rate:
    /// it is what resuming it will cost.
    pub fn bps(&self) -> Option<u64> {
        self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_steady_stream_with_its_overhead() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        assert_eq!(m.bps(), None);
        // 100 packets/s of 932 bytes: (932 + 68) * 8 * 100 = 800 kbit/s.
        for i in 0..300u64 {
            m.record(932, t0 + Duration::from_millis(10 * i));
        }
        let bps = m.bps().unwrap();
        assert!((780_000..=820_000).contains(&bps), "{bps}");
    }

    #[test]
    fn a_burst_moves_the_rate_only_part_of_the_way() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        for i in 0..100u64 {
            m.record(432, t0 + Duration::from_millis(10 * i));
        }
        let steady = m.bps().unwrap();
        // One window with ten times the bytes.
        for i in 100..150u64 {
            m.record(4932, t0 + Duration::from_millis(10 * i));
        }
        m.roll(t0 + Duration::from_millis(1500));
        let after = m.bps().unwrap();
        assert!(after > steady && after < steady * 4, "{steady} -> {after}");
        // A stream that stopped keeps its price.
        m.roll(t0 + Duration::from_secs(60));
        assert_eq!(m.bps(), Some(after));
    }
}
