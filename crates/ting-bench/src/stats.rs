//! What simulated participants count: per receive slot, per peer, and latency histograms.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::payload::{self, Stamp};

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
///
/// Every packet is counted from its RTP header, which SRTP leaves in clear: sequence
/// numbers give duplicates and gaps (the server numbers each slot's stream continuously
/// whatever it carries, so a gap is a packet lost after the server). A sample of packets
/// is decrypted too ([`SlotStats::record_sample`]): their stamp names the sender, the
/// simulcast layer and the sender's running number, which checks the slot carries whom
/// the server said, measures latency, and, on pairs of consecutive packets, finds packets
/// lost before the server renumbered them. A stream that goes quiet while the server still
/// says the slot carries it is counted as loss at the rate it was flowing
/// ([`SlotStats::check_silence`]): a server that stops sending is loss, not a quiet room.
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
    /// Packets decrypted and checked (the sample).
    pub sampled: u64,
    /// Sampled packets whose payload was not what the sender wrote.
    pub corrupt: u64,
    /// Sampled packets without a readable stamp.
    pub unstamped: u64,
    /// Senders seen in this slot, in order of first appearance (at most 16 kept).
    pub senders: Vec<u32>,
    /// Times the sender or its layer changed (between samples).
    pub switches: u64,
    /// Of those, times only the simulcast layer changed.
    pub layer_switches: u64,
    pub current: Option<(u32, u8)>,
    /// Packets by the simulcast layer they belong to (as the last sample showed).
    pub per_layer: [u64; 3],
    /// What the server's slot table says this slot carries (participant id, source).
    pub mapped_to: Option<(String, String)>,
    /// The server says it sends nothing in this slot for now (bandwidth).
    pub paused: bool,
    /// Sampled packets whose sender was not the participant the slot table named.
    pub mismatched: u64,
    /// Pairs of consecutive packets of one stream sampled, and the packets their senders
    /// sent between them that never reached the slot (lost before the server renumbered
    /// them).
    pub pairs: u64,
    pub pair_dropped: u64,
    /// Packets that arrived after a later one of the same stream (reordered or repaired).
    pub late: u64,
    /// Packets expected while the stream was quiet (committed when it stayed quiet).
    pub silent: u64,
    #[serde(skip)]
    window: u128,
    #[serde(skip)]
    last_arrival: Option<Instant>,
    /// Mean time between packets while flowing, microseconds.
    #[serde(skip)]
    interval_us: f64,
    /// Quiet since, and the packets expected in the quiet so far.
    #[serde(skip)]
    silence: Option<(Instant, u64)>,
    /// The previous packet, if it was sampled: (sequence number, sender, layer, counter).
    #[serde(skip)]
    last_sampled: Option<(u64, Stamp)>,
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
                    self.late += 1;
                    if seq < first {
                        self.first_seq = Some(seq);
                    }
                }
            }
        }
        self.packets += 1;
        true
    }

    /// A packet with this sequence number and payload size arrived at `at` (kernel time).
    /// Returns false for a duplicate (nothing else is counted then).
    pub fn record_arrival(&mut self, seq: u64, bytes: usize, at: Instant) -> bool {
        if !self.record_seq(seq) {
            return false;
        }
        self.bytes += bytes as u64;
        if self.kind != "audio"
            && let Some((_, layer)) = self.current
        {
            self.per_layer[usize::from(layer.min(2))] += 1;
        }
        if let Some(last) = self.last_arrival
            && at > last
        {
            let gap = at.duration_since(last).as_micros() as f64;
            self.interval_us = if self.interval_us == 0.0 {
                gap
            } else {
                self.interval_us * 0.95 + gap * 0.05
            };
        }
        self.last_arrival = Some(self.last_arrival.map_or(at, |l| l.max(at)));
        // Media again: whatever went missing shows as a gap in the sequence numbers.
        self.silence = None;
        true
    }

    /// The stamp of a sampled (decrypted) packet with sequence number `seq`.
    pub fn record_sample(&mut self, seq: u64, stamp: &Stamp) {
        let (sender, layer) = (stamp.sender, stamp.layer);
        self.sampled += 1;
        if let Some((last_seq, last)) = &self.last_sampled
            && seq == last_seq + 1
            && (last.sender, last.layer) == (sender, layer)
            && let Some(step) = payload::counter_step(last, stamp)
        {
            self.pairs += 1;
            self.pair_dropped += step - 1;
        }
        self.last_sampled = Some((seq, *stamp));
        if self.current != Some((sender, layer)) {
            if self.current.is_some() {
                self.switches += 1;
                if self.current.map(|c| c.0) == Some(sender) {
                    self.layer_switches += 1;
                }
            }
            self.current = Some((sender, layer));
        }
        if !self.senders.contains(&sender) && self.senders.len() < 16 {
            self.senders.push(sender);
        }
    }

    /// The server's slot table changed for this slot.
    pub fn set_mapping(&mut self, mapped_to: Option<(String, String)>, paused: bool) {
        if mapped_to != self.mapped_to || paused != self.paused {
            // Silence that ends with the stream being taken away was not loss, and a stream
            // that starts (or resumes) waits for a keyframe first: its silence counts from
            // its first packet, as a viewer's tile shows nothing new until then either.
            self.silence = None;
            self.last_sampled = None;
            self.last_arrival = None;
            // The new stream's pace is its own: a speaker's 50 packets a second say
            // nothing about a silent microphone's few.
            self.interval_us = 0.0;
        }
        self.mapped_to = mapped_to;
        self.paused = paused;
    }

    /// Counts the packets a mapped, unpaused stream should have brought since it went
    /// quiet. Quiet means nothing for five packet intervals and at least 300 ms (audio:
    /// 1 s, as DTX leaves up to 400 ms between packets of silence).
    pub fn check_silence(&mut self, now: Instant) {
        if self.mapped_to.is_none() || self.paused {
            self.silence = None;
            return;
        }
        let (Some(last), true) = (self.last_arrival, self.interval_us > 0.0) else {
            return;
        };
        let quiet = now.saturating_duration_since(last);
        // Audio under Opus DTX pauses for up to 400 ms between packets of silence, so it
        // is quiet only after more than two of those went missing.
        let floor = Duration::from_millis(if self.kind == "audio" { 1000 } else { 300 });
        let threshold = Duration::from_micros((self.interval_us * 5.0) as u64).max(floor);
        if quiet < threshold {
            self.silence = None;
            return;
        }
        let expected = (quiet.as_micros() as f64 / self.interval_us.max(1.0)) as u64;
        self.silence = Some((last, expected));
    }

    /// Sequence numbers between the first and the highest that never arrived.
    pub fn missing(&self) -> u64 {
        match self.first_seq {
            None => 0,
            Some(first) => (self.max_seq - first + 1).saturating_sub(self.packets),
        }
    }

    /// Packets lost before the server renumbered them, estimated from the sampled pairs.
    pub fn dropped(&self) -> u64 {
        if self.pairs == 0 {
            return 0;
        }
        // Each pair checks one step of the stream; the stream took `packets` steps.
        (self.pair_dropped as f64 * self.packets as f64 / self.pairs as f64) as u64
    }

    /// Everything this slot should have received and did not: after the server (gaps),
    /// before it (sampled pairs), and while the stream went quiet.
    pub fn lost(&self) -> u64 {
        self.missing() + self.dropped() + self.silent + self.silence.map_or(0, |s| s.1)
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

    fn stamp(sender: u32, layer: u8, counter: u64) -> Stamp {
        Stamp {
            sender,
            kind: crate::payload::StreamKind::Video,
            layer,
            tid: None,
            counter,
            sent_us: 0,
        }
    }

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
        s.record_sample(1, &stamp(1, 0, 10));
        s.record_sample(2, &stamp(1, 0, 11));
        s.record_sample(3, &stamp(1, 2, 500));
        s.record_sample(4, &stamp(2, 2, 7));
        assert_eq!(s.switches, 2);
        assert_eq!(s.layer_switches, 1);
        assert_eq!(s.senders, vec![1, 2]);
        assert_eq!((s.pairs, s.pair_dropped), (1, 0), "switches are not loss");
    }

    #[test]
    fn drops_before_the_server_show_in_sampled_pairs() {
        let t0 = Instant::now();
        let mut s = SlotStats::new("3".into(), "audio");
        for seq in 1..=100u64 {
            s.record_arrival(seq, 100, t0 + Duration::from_millis(20 * seq));
        }
        // Two pairs sampled: one whole, one where the sender's running number jumps by 3
        // between consecutive sequence numbers (two packets never got a number).
        s.record_sample(10, &stamp(9, 0, 500));
        s.record_sample(11, &stamp(9, 0, 501));
        s.record_sample(50, &stamp(9, 0, 540));
        s.record_sample(51, &stamp(9, 0, 543));
        assert_eq!((s.pairs, s.pair_dropped), (2, 2));
        assert_eq!(s.dropped(), 100, "2 per 2 checked steps, over 100 steps");
        assert_eq!(s.missing(), 0);
    }

    #[test]
    fn a_stream_that_goes_quiet_is_loss_until_it_returns() {
        let t0 = Instant::now();
        let mut s = SlotStats::new("3".into(), "audio");
        s.set_mapping(Some(("p".into(), "microphone".into())), false);
        for i in 0..50u64 {
            s.record_arrival(i, 80, t0 + Duration::from_millis(20 * i));
        }
        let last = t0 + Duration::from_millis(20 * 49);
        s.check_silence(last + Duration::from_millis(100));
        assert_eq!(s.lost(), 0, "a short pause is not silence");
        s.check_silence(last + Duration::from_millis(900));
        assert_eq!(s.lost(), 0, "nor is the pause between two packets of DTX");
        s.check_silence(last + Duration::from_secs(2));
        let quiet = s.lost();
        assert!((95..=105).contains(&quiet), "2 s at 50/s: {quiet}");
        // The stream comes back: what was missing shows as a gap instead.
        s.record_arrival(150, 80, last + Duration::from_secs(2));
        assert_eq!(s.lost(), 100);
        // A new source in the slot: nothing counts until its first packet.
        s.set_mapping(Some(("q".into(), "microphone".into())), false);
        s.check_silence(last + Duration::from_secs(5));
        assert_eq!(s.lost(), 100);
        s.record_arrival(151, 80, last + Duration::from_secs(5));
        // A stream the server takes away is not lost.
        s.set_mapping(None, false);
        s.check_silence(last + Duration::from_secs(10));
        assert_eq!(s.lost(), 100);
        // Nor one it pauses for bandwidth.
        s.set_mapping(Some(("p".into(), "camera".into())), true);
        s.check_silence(last + Duration::from_secs(20));
        assert_eq!(s.lost(), 100);
    }
}
