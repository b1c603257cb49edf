//! What simulated participants count: per receive slot, per peer, and latency histograms.

use serde::Serialize;

/// A latency histogram in microseconds: 10 µs buckets up to 10 ms, 1 ms buckets up to 1 s,
/// one bucket above. Fixed memory, O(1) recording, mergeable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    fine: Vec<u64>,
    coarse: Vec<u64>,
    over: u64,
    count: u64,
    sum_us: u64,
    max_us: u64,
}

const FINE_STEP: u64 = 10;
const FINE_END: u64 = 10_000;
const COARSE_STEP: u64 = 1_000;
const COARSE_END: u64 = 1_000_000;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            fine: vec![0; (FINE_END / FINE_STEP) as usize],
            coarse: vec![0; ((COARSE_END - FINE_END) / COARSE_STEP) as usize],
            over: 0,
            count: 0,
            sum_us: 0,
            max_us: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, us: u64) {
        if us < FINE_END {
            self.fine[(us / FINE_STEP) as usize] += 1;
        } else if us < COARSE_END {
            self.coarse[((us - FINE_END) / COARSE_STEP) as usize] += 1;
        } else {
            self.over += 1;
        }
        self.count += 1;
        self.sum_us += us;
        self.max_us = self.max_us.max(us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.fine.iter_mut().zip(&other.fine) {
            *a += b;
        }
        for (a, b) in self.coarse.iter_mut().zip(&other.coarse) {
            *a += b;
        }
        self.over += other.over;
        self.count += other.count;
        self.sum_us += other.sum_us;
        self.max_us = self.max_us.max(other.max_us);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    pub fn mean_us(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum_us as f64 / self.count as f64
        }
    }

    /// The value below which a fraction `q` (0..=1) of the samples lie: the upper edge of
    /// the bucket holding that sample (at most the maximum seen). 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.fine.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return ((i as u64 + 1) * FINE_STEP).min(self.max_us);
            }
        }
        for (i, n) in self.coarse.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return (FINE_END + (i as u64 + 1) * COARSE_STEP).min(self.max_us);
            }
        }
        self.max_us
    }

    /// Forgets everything (for per-interval series).
    pub fn clear(&mut self) {
        *self = Histogram::default();
    }

    /// What was recorded since `earlier` (an older copy of this histogram).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let sub = |a: &[u64], b: &[u64]| -> Vec<u64> {
            a.iter().zip(b).map(|(x, y)| x.saturating_sub(*y)).collect()
        };
        let fine = sub(&self.fine, &earlier.fine);
        let coarse = sub(&self.coarse, &earlier.coarse);
        // The maximum of the interval: the upper edge of the highest non-empty bucket.
        let max_us = if self.over > earlier.over {
            self.max_us
        } else if let Some(i) = coarse.iter().rposition(|n| *n > 0) {
            (FINE_END + (i as u64 + 1) * COARSE_STEP).min(self.max_us)
        } else if let Some(i) = fine.iter().rposition(|n| *n > 0) {
            ((i as u64 + 1) * FINE_STEP).min(self.max_us)
        } else {
            0
        };
        Histogram {
            fine,
            coarse,
            over: self.over - earlier.over.min(self.over),
            count: self.count.saturating_sub(earlier.count),
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
            max_us,
        }
    }
}

/// What one receive slot got.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SlotStats {
    pub mid: String,
    pub kind: &'static str,
    pub packets: u64,
    pub bytes: u64,
    /// Lowest and highest extended sequence number seen.
    pub first_seq: Option<u64>,
    pub max_seq: u64,
    /// Packets seen twice (within a 128-packet window).
    pub duplicates: u64,
    /// Packets whose payload was not what the sender wrote.
    pub corrupt: u64,
    /// Packets without a readable stamp.
    pub unstamped: u64,
    /// Senders seen in this slot, in order of first appearance (at most 16 kept).
    pub senders: Vec<u32>,
    /// Times the sender or its layer changed.
    pub switches: u64,
    /// Of those, times only the simulcast layer changed.
    pub layer_switches: u64,
    pub current: Option<(u32, u8)>,
    /// What the server's slot table says this slot carries (participant id, source).
    pub mapped_to: Option<(String, String)>,
    /// Packets whose sender was not the participant the slot table named at the time.
    pub mismatched: u64,
    /// Packets of the stream the slot carries that never arrived (gaps in the senders'
    /// running numbers, whatever hop lost them), less those that came late.
    pub lost: u64,
    /// Packets that arrived after a later one of the same stream (reordered or repaired).
    pub late: u64,
    #[serde(skip)]
    window: u128,
    #[serde(skip)]
    last_counter: Option<u64>,
}

impl SlotStats {
    pub fn new(mid: String, kind: &'static str) -> SlotStats {
        SlotStats {
            mid,
            kind,
            ..Default::default()
        }
    }

    /// Records a packet's sequence number. Returns false for a duplicate.
    pub fn record_seq(&mut self, seq: u64) -> bool {
        match self.first_seq {
            None => {
                self.first_seq = Some(seq);
                self.max_seq = seq;
                self.window = 1;
            }
            Some(first) => {
                if seq > self.max_seq {
                    let shift = seq - self.max_seq;
                    self.window = if shift >= 128 {
                        0
                    } else {
                        self.window << shift
                    };
                    self.window |= 1;
                    self.max_seq = seq;
                } else {
                    let back = self.max_seq - seq;
                    if back < 128 {
                        if self.window & (1 << back) != 0 {
                            self.duplicates += 1;
                            return false;
                        }
                        self.window |= 1 << back;
                    }
                    if seq < first {
                        self.first_seq = Some(seq);
                    }
                }
            }
        }
        self.packets += 1;
        true
    }

    /// Sequence numbers between the first and the highest that never arrived.
    pub fn missing(&self) -> u64 {
        match self.first_seq {
            None => 0,
            Some(first) => (self.max_seq - first + 1).saturating_sub(self.packets),
        }
    }

    /// Records the stamp of a packet: who sent it, which layer, its running number.
    pub fn record_sender(&mut self, sender: u32, layer: u8, counter: u64) {
        if self.current == Some((sender, layer)) {
            match self.last_counter {
                Some(last) if counter > last => {
                    self.lost += counter - last - 1;
                    self.last_counter = Some(counter);
                }
                Some(_) => {
                    self.late += 1;
                    self.lost = self.lost.saturating_sub(1);
                }
                None => self.last_counter = Some(counter),
            }
        } else {
            if self.current.is_some() {
                self.switches += 1;
                if self.current.map(|c| c.0) == Some(sender) {
                    self.layer_switches += 1;
                }
            }
            self.last_counter = Some(counter);
        }
        self.current = Some((sender, layer));
        if !self.senders.contains(&sender) && self.senders.len() < 16 {
            self.senders.push(sender);
        }
    }
}

/// Packets and bytes of one kind.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Flow {
    pub packets: u64,
    pub bytes: u64,
}

impl Flow {
    pub fn add(&mut self, bytes: usize) {
        self.packets += 1;
        self.bytes += bytes as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_the_bucket_edge() {
        let mut h = Histogram::default();
        for us in 1..=100 {
            h.record(us * 10);
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile_us(0.5), 510);
        assert_eq!(h.quantile_us(0.99), 1000);
        assert_eq!(h.quantile_us(1.0), 1000);
        assert!((h.mean_us() - 505.0).abs() < 1e-9);
        h.record(50_000);
        h.record(5_000_000);
        assert_eq!(h.max_us(), 5_000_000);
        assert_eq!(h.quantile_us(1.0), 5_000_000);
        let mut m = Histogram::default();
        m.merge(&h);
        m.merge(&h);
        assert_eq!(m.count(), 204);
        let d = m.since(&h);
        assert_eq!(d.count(), 102);
        assert_eq!(
            d.quantile_us(0.5),
            520,
            "51st of 102 samples: 510, bucket edge 520"
        );
        assert_eq!(Histogram::default().quantile_us(0.99), 0);
    }

    #[test]
    fn sequence_tracking_finds_gaps_and_duplicates() {
        let mut s = SlotStats::new("3".into(), "audio");
        for seq in [10, 11, 13, 12, 12, 15] {
            s.record_seq(seq);
        }
        assert_eq!(s.packets, 5);
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.missing(), 1, "14 never came");
        // A jump larger than the window does not panic and is counted as missing.
        s.record_seq(1000);
        assert_eq!(s.missing(), 1000 - 10 + 1 - 6);
    }

    #[test]
    fn switches_count_sender_and_layer_changes() {
        let mut s = SlotStats::new("6".into(), "video");
        s.record_sender(1, 0, 10);
        s.record_sender(1, 0, 11);
        s.record_sender(1, 2, 500);
        s.record_sender(2, 2, 7);
        assert_eq!(s.switches, 2);
        assert_eq!(s.layer_switches, 1);
        assert_eq!(s.senders, vec![1, 2]);
        assert_eq!(s.lost, 0, "switches are not loss");
    }

    #[test]
    fn loss_is_counted_from_running_numbers_and_late_arrivals_repay_it() {
        let mut s = SlotStats::new("3".into(), "audio");
        for c in [1, 2, 5, 6] {
            s.record_sender(9, 0, c);
        }
        assert_eq!(s.lost, 2, "3 and 4 missing");
        s.record_sender(9, 0, 3);
        assert_eq!((s.lost, s.late), (1, 1));
        s.record_sender(9, 0, 7);
        assert_eq!(s.lost, 1);
    }
}
