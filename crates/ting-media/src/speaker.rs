//! Who is speaking, from the audio-level header extension (RFC 6464).
//!
//! Browsers put the level of every audio packet in its RTP header: 0 is the loudest
//! (0 dBov), 127 is silence. The server never decodes audio; this level is all it knows.

use std::time::{Duration, Instant};

/// When a track counts as speaking.
#[derive(Debug, Clone, Copy)]
pub struct SpeakerConfig {
    /// A packet at this level (dBov below full scale) or louder counts as speech. 50 keeps
    /// normal speech into a headset or laptop microphone (typically 20–45) and leaves out
    /// room noise (typically 60 and quieter).
    pub threshold_dbov: u8,
    /// A track stays speaking this long after its last loud packet, so pauses between
    /// words do not make the indicator flicker.
    pub hold: Duration,
}

impl Default for SpeakerConfig {
    fn default() -> Self {
        SpeakerConfig {
            threshold_dbov: 50,
            hold: Duration::from_millis(500),
        }
    }
}

/// One audio track's recent activity.
#[derive(Debug, Clone, Copy, Default)]
pub struct VoiceActivity {
    last_loud: Option<Instant>,
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
        let loud = match level {
            Some(level) => level <= config.threshold_dbov,
            None => voice == Some(true),
        };
        if loud {
            self.last_loud = Some(now);
        }
    }

    pub fn is_speaking(&self, now: Instant, config: &SpeakerConfig) -> bool {
        self.last_loud
            .is_some_and(|at| now.saturating_duration_since(at) <= config.hold)
    }

    /// When the track was last loud, if ever.
    pub fn last_loud(&self) -> Option<Instant> {
        self.last_loud
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loud_packets_start_and_hold_speech() {
        let c = SpeakerConfig::default();
        let t0 = Instant::now();
        let mut v = VoiceActivity::default();
        v.handle_packet(Some(127), Some(false), t0, &c);
        assert!(!v.is_speaking(t0, &c));
        v.handle_packet(Some(30), None, t0, &c);
        assert!(v.is_speaking(t0 + Duration::from_millis(499), &c));
        v.handle_packet(Some(90), None, t0 + Duration::from_millis(300), &c);
        assert!(!v.is_speaking(t0 + Duration::from_millis(501), &c));
        // Without a level, the voice-activity flag decides.
        v.handle_packet(None, Some(true), t0 + Duration::from_secs(2), &c);
        assert!(v.is_speaking(t0 + Duration::from_secs(2), &c));
    }
}
