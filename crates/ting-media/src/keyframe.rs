//! Coalescing of keyframe requests to one publisher's stream.
//!
//! Keyframes are expensive: many times the bits of a delta frame, sent at once. When twenty
//! people join in the same second, or several subscribers lose the same packet, the
//! publisher should be asked once, not twenty times. A [`KeyframeGate`] passes the first
//! request at once, holds the ones that follow within `min_interval` as one pending request,
//! and drops that pending request if a keyframe arrives meanwhile.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct KeyframeGate {
    last_sent: Option<Instant>,
    pending: bool,
}

impl Default for KeyframeGate {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyframeGate {
    pub fn new() -> Self {
        KeyframeGate {
            last_sent: None,
            pending: false,
        }
    }

    /// Someone needs a keyframe. Returns true when the request should go out now.
    pub fn request(&mut self, now: Instant, min_interval: Duration) -> bool {
        match self.last_sent {
            Some(at) if now.saturating_duration_since(at) < min_interval => {
                self.pending = true;
                false
            }
            _ => {
                self.last_sent = Some(now);
                self.pending = false;
                true
            }
        }
    }

    /// A keyframe arrived: whatever was pending is answered.
    pub fn handle_keyframe(&mut self) {
        self.pending = false;
    }

    /// When a held request is due, if any.
    pub fn poll_timeout(&self, min_interval: Duration) -> Option<Instant> {
        match (self.pending, self.last_sent) {
            (true, Some(at)) => Some(at + min_interval),
            _ => None,
        }
    }

    /// Returns true when a held request is due now and should go out.
    pub fn handle_timeout(&mut self, now: Instant, min_interval: Duration) -> bool {
        match self.poll_timeout(min_interval) {
            Some(due) if due <= now => {
                self.pending = false;
                self.last_sent = Some(now);
                true
            }
            _ => false,
        }
    }

    /// When a request last went out.
    pub fn last_sent(&self) -> Option<Instant> {
        self.last_sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: Duration = Duration::from_millis(250);

    #[test]
    fn burst_of_requests_goes_out_twice_at_most() {
        let t0 = Instant::now();
        let mut g = KeyframeGate::new();
        assert!(g.request(t0, I));
        for ms in 1..200 {
            assert!(!g.request(t0 + Duration::from_millis(ms), I));
        }
        assert_eq!(g.poll_timeout(I), Some(t0 + I));
        assert!(!g.handle_timeout(t0 + Duration::from_millis(249), I));
        assert!(g.handle_timeout(t0 + I, I));
        assert_eq!(g.poll_timeout(I), None);
    }

    #[test]
    fn keyframe_answers_pending_request() {
        let t0 = Instant::now();
        let mut g = KeyframeGate::new();
        assert!(g.request(t0, I));
        assert!(!g.request(t0 + Duration::from_millis(10), I));
        g.handle_keyframe();
        assert_eq!(g.poll_timeout(I), None);
        assert!(!g.handle_timeout(t0 + I, I));
        // After the interval a new request passes at once.
        assert!(g.request(t0 + I, I));
    }
}
