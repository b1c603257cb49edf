//! Shedding load when a media worker's core is full: thumbnails drop to the base VP8
//! temporal layer (a quarter of a 30-frame camera's frames) while the core stays saturated,
//! and come back once it has room for them again.
//!
//! A full core loses packets for everyone: the speaker's video, the audio, the screen share.
//! Fewer frames in the thumbnails cost the meeting least: in grid view at 250 they are most
//! of the forwards, and a 180-pixel tile at 7.5 frames a second is still a face. The
//! decision is per worker, from the share of the core its thread used over the last
//! second and from how many of the datagrams it read had waited in its socket, with two
//! thresholds and a hold on each so that it does not flap: shedding brings the load down,
//! and the way back has to leave room for the frames that return.
//!
//! The wait is the direct sign: a worker whose thread is busy 85 % of the time can still
//! fall behind when other threads take the rest of the core (joins, signalling, a
//! neighbour), and then only its socket's queue shows it.

use std::time::{Duration, Instant};

/// A datagram that waited this long in the socket before the worker read it was read late.
/// A worker that keeps up reads within a millisecond or two; bursts (a keyframe's fan-out)
/// hold a few for several.
pub const LATE_WAIT: Duration = Duration::from_millis(20);

/// When to shed and when to stop.
#[derive(Debug, Clone, Copy)]
pub struct LoadConfig {
    /// A share of the core at or above this, held for `shed_after`, sheds.
    pub high: f32,
    /// A share at or below this, held for `restore_after`, restores. Shedding removes
    /// about a quarter to a third of a grid meeting's forwards (docs/performance.md), so
    /// restoring below `high × 0.65` does not bring the core straight back to `high`.
    pub low: f32,
    /// A share of the datagrams read late ([`LATE_WAIT`]) at or above this is full too,
    /// when the thread itself uses at least `late_busy` of the core: then its own work is
    /// what falls behind, and shedding some of it helps. (A thread that is mostly idle and
    /// still reads late is kept from its core by something else, which shedding would not
    /// cure.)
    pub late_high: f32,
    pub late_busy: f32,
    /// Restoring also needs the late share at or below this.
    pub late_low: f32,
    pub shed_after: Duration,
    pub restore_after: Duration,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            high: 0.95,
            low: 0.6,
            late_high: 0.05,
            late_busy: 0.5,
            late_low: 0.01,
            shed_after: Duration::from_secs(2),
            restore_after: Duration::from_secs(10),
        }
    }
}

/// The highest temporal layer a worker's thumbnails get, from its load.
#[derive(Debug, Clone)]
pub struct LoadShedder {
    config: LoadConfig,
    /// The configured cap (`media.thumbnail_temporal_layers` − 1).
    normal: u8,
    shedding: bool,
    /// Since when the load has been on the side that would change the state.
    over_since: Option<Instant>,
}

impl LoadShedder {
    pub fn new(config: LoadConfig, normal: u8) -> LoadShedder {
        LoadShedder {
            config,
            normal,
            shedding: false,
            over_since: None,
        }
    }

    /// The cap thumbnails get now.
    pub fn cap(&self) -> u8 {
        if self.shedding { 0 } else { self.normal }
    }

    pub fn is_shedding(&self) -> bool {
        self.shedding
    }

    /// Takes the share of the core the worker's thread used since the last sample, and the
    /// share of the datagrams it read in that time that were read late (both 0.0–1.0; more
    /// is read as full, a value that is not a number as none); returns the cap when
    /// shedding starts or ends. With thumbnails at the base layer already (`normal` 0) the
    /// cap stays 0, but the state still changes: the worker sheds other work too (its
    /// connections stop probing for bandwidth).
    pub fn observe(&mut self, busy: f32, late: f32, now: Instant) -> Option<u8> {
        let busy = if busy.is_nan() { 0.0 } else { busy };
        let late = if late.is_nan() { 0.0 } else { late };
        let c = &self.config;
        let (towards, hold) = if self.shedding {
            (busy <= c.low && late <= c.late_low, c.restore_after)
        } else {
            (
                busy >= c.high || (late >= c.late_high && busy >= c.late_busy),
                c.shed_after,
            )
        };
        if !towards {
            self.over_since = None;
            return None;
        }
        let since = *self.over_since.get_or_insert(now);
        if now.saturating_duration_since(since) < hold {
            return None;
        }
        self.shedding = !self.shedding;
        self.over_since = None;
        Some(self.cap())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds one sample a second from `loads`; returns the cap after each.
    fn run(s: &mut LoadShedder, start: Instant, from_sec: u64, loads: &[f32]) -> Vec<u8> {
        loads
            .iter()
            .enumerate()
            .map(|(i, &busy)| {
                s.observe(busy, 0.0, start + Duration::from_secs(from_sec + i as u64));
                s.cap()
            })
            .collect()
    }

    #[test]
    fn sheds_only_when_the_core_stays_full() {
        let t = Instant::now();
        let mut s = LoadShedder::new(LoadConfig::default(), 1);
        // A busy second between quieter ones is not saturation.
        assert_eq!(run(&mut s, t, 0, &[0.5, 0.99, 0.7, 0.99, 0.9]), [1; 5]);
        // Two seconds and more at the top is.
        assert_eq!(run(&mut s, t, 5, &[0.97, 1.0, 1.0]), [1, 1, 0]);
        assert!(s.is_shedding());
    }

    #[test]
    fn comes_back_only_when_there_is_room_and_does_not_flap() {
        let t = Instant::now();
        let mut s = LoadShedder::new(LoadConfig::default(), 1);
        assert_eq!(run(&mut s, t, 0, &[1.0, 1.0, 1.0]), [1, 1, 0]);
        // Shedding brought the core down to 70–90 %: between the thresholds, it holds,
        // however long.
        let middle: Vec<f32> = (0..60).map(|i| 0.7 + (i % 3) as f32 * 0.1).collect();
        assert!(run(&mut s, t, 3, &middle).iter().all(|&c| c == 0));
        // People leave: ten seconds at or below 60 % restore, and a blip above resets
        // the count.
        let mut low = vec![0.5; 9];
        low.push(0.8);
        low.extend([0.4; 11]);
        let caps = run(&mut s, t, 63, &low);
        assert!(caps[..20].iter().all(|&c| c == 0), "{caps:?}");
        assert_eq!(caps[20], 1, "{caps:?}");
        assert!(!s.is_shedding());
    }

    #[test]
    fn datagrams_read_late_shed_whatever_the_threads_share_and_hold_the_way_back() {
        let t = Instant::now();
        let at = |i: u64| t + Duration::from_secs(i);
        let mut s = LoadShedder::new(LoadConfig::default(), 1);
        // The thread at 80 % (other threads take the rest of the core), one late second
        // between timely ones: not yet.
        assert_eq!(s.observe(0.8, 0.2, at(0)), None);
        assert_eq!(s.observe(0.8, 0.0, at(1)), None);
        // Two seconds and more with a twentieth or more of the reads late: shed.
        assert_eq!(s.observe(0.8, 0.06, at(2)), None);
        assert_eq!(s.observe(0.8, 0.3, at(3)), None);
        assert_eq!(s.observe(0.8, 0.05, at(4)), Some(0));
        // Idle thread but reads still late: no way back however long.
        for i in 5..30 {
            assert_eq!(s.observe(0.3, 0.02, at(i)), None);
        }
        // Both low for the restore hold: back.
        let back: Vec<_> = (30..42)
            .filter_map(|i| s.observe(0.3, 0.005, at(i)))
            .collect();
        assert_eq!(back, [1]);
        // A sample that is not a number reads as no late reads.
        let mut s = LoadShedder::new(LoadConfig::default(), 1);
        for i in 0..5 {
            assert_eq!(s.observe(0.5, f32::NAN, at(i)), None);
        }
        // A thread that is mostly idle and reads late is held back by something else
        // (another process on its core): its own work is not what to shed.
        for i in 5..15 {
            assert_eq!(s.observe(0.2, 0.5, at(i)), None);
        }
        assert!(!s.is_shedding());
    }

    #[test]
    fn thumbnails_at_the_base_layer_stay_there_and_bad_samples_are_idle() {
        let t = Instant::now();
        let mut s = LoadShedder::new(LoadConfig::default(), 0);
        // Nothing left to cut from the thumbnails, but the worker still sheds (and says
        // so once): its connections stop probing.
        let changes: Vec<_> = (0..10)
            .filter_map(|i| s.observe(1.0, 0.0, t + Duration::from_secs(i)))
            .collect();
        assert_eq!(changes, [0]);
        assert!(s.is_shedding());
        assert_eq!(s.cap(), 0);
        let mut s = LoadShedder::new(LoadConfig::default(), 2);
        assert_eq!(run(&mut s, t, 0, &[f32::NAN; 5]), [2; 5]);
        // Above 1.0 (a sample over a short window) counts as full.
        assert_eq!(run(&mut s, t, 5, &[1.4, 3.0, 1.2]), [2, 2, 0]);
    }
}
