//! Who is speaking, and who is *the* speaker, from the audio-level header extension
//! (RFC 6464).
//!
//! Browsers put the level of every audio packet in its RTP header: 0 is the loudest
//! (0 dBov), 127 is silence; Chromium adds its own voice-activity flag. The server never
//! decodes audio; these are all it knows.
//!
//! Three questions get three answers with different speeds:
//! - *Is this person speaking?* (the indicator on their tile): on after about 0.4 s of
//!   speech, off after half a second without any; a cough or a dropped pen is too short
//!   to light it for long.
//! - *Which microphones do listeners hear?* (the audio slots, last-N): the few most active
//!   ones, by a fast score, replaced only by someone clearly more active
//!   ([`update_top`]), so equal voices do not trade places every tick.
//! - *Who is the active speaker?* (the large tile): by a slow score, held at least a
//!   second, taken over only by someone clearly louder for longer ([`Dominant`]).

use std::time::{Duration, Instant};

/// When a track counts as speaking.
#[derive(Debug, Clone, Copy)]
pub struct SpeakerConfig {
    /// A packet at this level (dBov below full scale) or louder counts as speech, unless
    /// the sender's own voice-activity flag says it is not voice (keyboards, fans). 50
    /// keeps normal speech into a headset or laptop microphone (typically 20–45) and
    /// leaves out room noise (typically 60 and quieter).
    pub threshold_dbov: u8,
    /// A track stays speaking this long after its last loud packet, so pauses between
    /// words do not make the indicator flicker.
    pub hold: Duration,
    /// The active speaker keeps the floor at least this long.
    pub dominant_min_hold: Duration,
    /// A challenger's slow score must beat the active speaker's by this much.
    pub dominant_margin: f32,
    /// A listener's audio slot changes hands only to someone this much more active.
    pub audio_margin: f32,
}

impl Default for SpeakerConfig {
    fn default() -> Self {
        SpeakerConfig {
            threshold_dbov: 50,
            hold: Duration::from_millis(500),
            dominant_min_hold: Duration::from_secs(1),
            dominant_margin: 0.15,
            audio_margin: 0.2,
        }
    }
}

/// Share of loud packets, averaged: per 100 ms tick the fast score moves 30 % of the way
/// (about 0.3 s), the slow one 8 % (about 1.2 s).
const FAST: f32 = 0.3;
const SLOW: f32 = 0.08;
/// The fast score at which the speaking indicator turns on (about 0.4 s of speech).
const SPEAKING_ON: f32 = 0.7;

/// One audio track's recent activity. Fed per packet, scored per tick.
#[derive(Debug, Clone, Copy, Default)]
pub struct VoiceActivity {
    packets: u32,
    loud: u32,
    fast: f32,
    slow: f32,
    last_loud: Option<Instant>,
    speaking: bool,
    /// The sender has set the voice-activity flag at least once, so it runs a voice
    /// detector and a clear flag means "not voice". Stacks without one (aiortc, many
    /// WHIP encoders) always send it clear; for them the level alone decides.
    detects_voice: bool,
}

impl VoiceActivity {
    /// A packet arrived with this level and voice-activity flag (either may be missing).
    pub fn handle_packet(
        &mut self,
        level: Option<u8>,
        voice: Option<bool>,
        now: Instant,
        config: &SpeakerConfig,
    ) {
        self.detects_voice |= voice == Some(true);
        let loud = match level {
            Some(level) => {
                level <= config.threshold_dbov && (voice != Some(false) || !self.detects_voice)
            }
            None => voice == Some(true),
        };
        self.packets = self.packets.saturating_add(1);
        if loud {
            self.loud = self.loud.saturating_add(1);
            self.last_loud = Some(now);
        }
    }

    /// Closes a tick: updates the scores and the speaking state. Returns true when the
    /// speaking state changed.
    pub fn tick(&mut self, now: Instant, config: &SpeakerConfig) -> bool {
        let share = if self.packets == 0 {
            0.0
        } else {
            self.loud as f32 / self.packets as f32
        };
        self.packets = 0;
        self.loud = 0;
        self.fast += FAST * (share - self.fast);
        self.slow += SLOW * (share - self.slow);
        let recent = self
            .last_loud
            .is_some_and(|at| now.saturating_duration_since(at) <= config.hold);
        let speaking = if self.speaking {
            recent
        } else {
            recent && self.fast >= SPEAKING_ON
        };
        let changed = speaking != self.speaking;
        self.speaking = speaking;
        changed
    }

    pub fn is_speaking(&self) -> bool {
        self.speaking
    }

    /// The fast score, 0..=1: share of recent packets that were speech.
    pub fn fast(&self) -> f32 {
        self.fast
    }

    /// The slow score, 0..=1.
    pub fn slow(&self) -> f32 {
        self.slow
    }

    /// When the track was last loud, if ever.
    pub fn last_loud(&self) -> Option<Instant> {
        self.last_loud
    }
}

/// The active speaker of a room, with hysteresis.
#[derive(Debug, Clone)]
pub struct Dominant<K> {
    current: Option<K>,
    since: Option<Instant>,
}

impl<K> Default for Dominant<K> {
    fn default() -> Self {
        Dominant {
            current: None,
            since: None,
        }
    }
}

impl<K: Copy + PartialEq> Dominant<K> {
    pub fn current(&self) -> Option<K> {
        self.current
    }

    /// The current speaker left the room.
    pub fn forget(&mut self, key: K) {
        if self.current == Some(key) {
            self.current = None;
            self.since = None;
        }
    }

    /// Re-decides from `(key, slow score, speaking)` of every track; returns true when the
    /// active speaker changed. Nobody speaking keeps the last speaker.
    pub fn update(
        &mut self,
        tracks: impl Iterator<Item = (K, f32, bool)>,
        now: Instant,
        config: &SpeakerConfig,
    ) -> bool {
        let mut best: Option<(K, f32)> = None;
        let mut current_score: Option<(f32, bool)> = None;
        for (key, score, speaking) in tracks {
            if Some(key) == self.current {
                current_score = Some((score, speaking));
                continue;
            }
            if speaking && best.is_none_or(|(_, s)| score > s) {
                best = Some((key, score));
            }
        }
        let Some((challenger, score)) = best else {
            return false;
        };
        let take = match (self.current, current_score) {
            (None, _) | (Some(_), None) => true,
            (Some(_), Some((current, current_speaking))) => {
                let held = self
                    .since
                    .is_none_or(|at| now.saturating_duration_since(at) >= config.dominant_min_hold);
                held && (score > current + config.dominant_margin
                    || (!current_speaking && score > current))
            }
        };
        if take {
            self.current = Some(challenger);
            self.since = Some(now);
        }
        take
    }
}

/// Keeps `top` the (at most) `k` most active of `candidates` — `(key, fast score,
/// speaking)` — changing as little as possible: a member is replaced only by a speaking
/// candidate that is more active by `margin`, or when the member is silent. Returns true
/// when `top` changed. Positions of members that stay do not move. Free places go to
/// speaking candidates first, then the most active, then the earliest in `candidates`.
pub fn update_top<K: Copy + PartialEq>(
    top: &mut Vec<K>,
    k: usize,
    candidates: &[(K, f32, bool)],
    margin: f32,
) -> bool {
    let before = top.len();
    let mut changed = false;
    top.retain(|m| candidates.iter().any(|c| c.0 == *m));
    changed |= top.len() != before;
    while top.len() > k {
        top.pop();
        changed = true;
    }
    let info = |key: K| candidates.iter().find(|c| c.0 == key).copied();
    // Fill free places: speaking first, then the most active, then the earliest listed.
    while top.len() < k {
        let mut next: Option<&(K, f32, bool)> = None;
        for c in candidates.iter().filter(|c| !top.contains(&c.0)) {
            if next.is_none_or(|n| (c.2, c.1) > (n.2, n.1)) {
                next = Some(c);
            }
        }
        match next {
            Some(c) => {
                top.push(c.0);
                changed = true;
            }
            None => break,
        }
    }
    // Replace weak members with clearly more active speakers, at most k at a time.
    for _ in 0..k {
        let challenger = candidates
            .iter()
            .filter(|c| c.2 && !top.contains(&c.0))
            .max_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal));
        let Some(&(ck, cscore, _)) = challenger else {
            break;
        };
        let weakest = top
            .iter()
            .enumerate()
            .filter_map(|(i, m)| info(*m).map(|c| (i, c)))
            .min_by(|a, b| {
                (a.1.2, a.1.1)
                    .partial_cmp(&(b.1.2, b.1.1))
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
        let Some((i, (_, wscore, wspeaking))) = weakest else {
            break;
        };
        if !wspeaking || cscore > wscore + margin {
            top[i] = ck;
            changed = true;
        } else {
            break;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(100);

    /// Feeds `ms` of 20 ms packets at `level`, ticking every 100 ms.
    fn feed(v: &mut VoiceActivity, t: &mut Instant, ms: u64, level: u8, vad: bool) -> Vec<bool> {
        let c = SpeakerConfig::default();
        let mut states = Vec::new();
        for i in 0..ms / 20 {
            v.handle_packet(Some(level), Some(vad), *t, &c);
            *t += Duration::from_millis(20);
            if (i + 1) % 5 == 0 {
                v.tick(*t, &c);
                states.push(v.is_speaking());
            }
        }
        states
    }

    #[test]
    fn speech_turns_the_indicator_on_and_pauses_do_not_turn_it_off() {
        let mut v = VoiceActivity::default();
        let mut t = Instant::now();
        feed(&mut v, &mut t, 1000, 127, false);
        assert!(!v.is_speaking());
        let on = feed(&mut v, &mut t, 1000, 30, true);
        let first = on.iter().position(|s| *s).expect("speech is seen");
        assert!(
            (2..=5).contains(&first),
            "on after {} ms: {on:?}",
            (first + 1) * 100
        );
        // A 300 ms pause between sentences keeps it on.
        let pause = feed(&mut v, &mut t, 300, 127, false);
        assert!(pause.iter().all(|s| *s), "{pause:?}");
        feed(&mut v, &mut t, 500, 30, true);
        assert!(v.is_speaking());
        // Silence turns it off after the hold.
        let off = feed(&mut v, &mut t, 1000, 127, false);
        assert!(!off.last().unwrap());
    }

    #[test]
    fn coughs_and_keyboards_are_not_speech() {
        let mut v = VoiceActivity::default();
        let mut t = Instant::now();
        // A 200 ms cough.
        let cough = feed(&mut v, &mut t, 200, 20, true);
        feed(&mut v, &mut t, 800, 127, false);
        assert!(cough.iter().all(|s| !s), "{cough:?}");
        assert!(!v.is_speaking());
        // Loud typing the browser does not call voice.
        let keys = feed(&mut v, &mut t, 2000, 40, false);
        assert!(keys.iter().all(|s| !s), "{keys:?}");
    }

    #[test]
    fn a_sender_that_never_flags_voice_is_judged_by_its_level() {
        // aiortc and many WHIP encoders send the level with the flag always clear.
        let mut v = VoiceActivity::default();
        let mut t = Instant::now();
        let on = feed(&mut v, &mut t, 1000, 15, false);
        assert!(on.last().unwrap(), "{on:?}");
        let off = feed(&mut v, &mut t, 1500, 127, false);
        assert!(!off.last().unwrap(), "{off:?}");
        // Once a sender has flagged voice, a clear flag means "not voice" again.
        feed(&mut v, &mut t, 200, 30, true);
        feed(&mut v, &mut t, 1000, 127, false);
        let keys = feed(&mut v, &mut t, 2000, 40, false);
        assert!(keys.iter().all(|s| !s), "{keys:?}");
    }

    #[test]
    fn the_active_speaker_does_not_flap() {
        let c = SpeakerConfig::default();
        let mut d: Dominant<u32> = Dominant::default();
        let mut a = VoiceActivity::default();
        let mut b = VoiceActivity::default();
        let mut t = Instant::now();
        let mut changes = Vec::new();
        // A speaks for 3 s while B coughs twice and says "mm" once.
        for tick in 0..30u64 {
            for p in 0..5u64 {
                let now = t + Duration::from_millis(20 * p);
                a.handle_packet(Some(30), Some(true), now, &c);
                let b_loud = matches!(tick, 8 | 9 | 15 | 22..=24);
                b.handle_packet(Some(if b_loud { 20 } else { 127 }), Some(b_loud), now, &c);
            }
            t += TICK;
            a.tick(t, &c);
            b.tick(t, &c);
            let tracks = [
                (1, a.slow(), a.is_speaking()),
                (2, b.slow(), b.is_speaking()),
            ];
            if d.update(tracks.into_iter(), t, &c) {
                changes.push((tick, d.current()));
            }
        }
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(d.current(), Some(1));
        // Then A stops and B talks: B takes over within a few seconds.
        let mut took = None;
        for tick in 30..80u64 {
            for p in 0..5u64 {
                let now = t + Duration::from_millis(20 * p);
                a.handle_packet(Some(127), Some(false), now, &c);
                b.handle_packet(Some(25), Some(true), now, &c);
            }
            t += TICK;
            a.tick(t, &c);
            b.tick(t, &c);
            let tracks = [
                (1, a.slow(), a.is_speaking()),
                (2, b.slow(), b.is_speaking()),
            ];
            if d.update(tracks.into_iter(), t, &c) && took.is_none() {
                took = Some(tick - 30);
            }
        }
        assert_eq!(d.current(), Some(2));
        let took = took.unwrap();
        assert!(took <= 20, "B took the floor after {} ms", took * 100);
    }

    #[test]
    fn equal_voices_keep_their_audio_places() {
        let mut top = Vec::new();
        let all: Vec<(u32, f32, bool)> = (0..10).map(|i| (i, 0.9, true)).collect();
        assert!(update_top(&mut top, 4, &all, 0.2));
        assert_eq!(top.len(), 4);
        let before = top.clone();
        for _ in 0..50 {
            assert!(!update_top(&mut top, 4, &all, 0.2));
        }
        assert_eq!(top, before);
        // Someone clearly more active than a silent member takes that member's place,
        // and the others keep theirs.
        let mut mixed = all.clone();
        mixed[before[2] as usize] = (before[2], 0.0, false);
        mixed[9] = (9, 0.95, true);
        assert!(update_top(&mut top, 4, &mixed, 0.2));
        assert_eq!(top[0], before[0]);
        assert_eq!(top[1], before[1]);
        assert_ne!(top[2], before[2]);
        assert_eq!(top[3], before[3]);
        // Members that left are dropped and replaced.
        let fewer: Vec<_> = mixed.iter().copied().filter(|c| c.0 != top[0]).collect();
        assert!(update_top(&mut top, 4, &fewer, 0.2));
        assert_eq!(top.len(), 4);
        assert!(top.iter().all(|m| fewer.iter().any(|c| c.0 == *m)));
    }
}
