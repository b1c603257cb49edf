//! How a participant's connection fares, as the three states a person understands: good,
//! poor (their network struggles: loss, a long round trip, too little bandwidth for what
//! they watch), and lost (nothing arrives from them). Shown on their tile to everyone, so
//! a meeting can tell whose network is the problem.
//!
//! A [`QualityMeter`] per connection takes one [`QualitySample`] a second of what the
//! server measures. A connection turns poor after a few bad seconds in a row and good again
//! only after more good ones, so one burst of loss does not make a tile blink; it turns
//! lost at once, and comes back from lost at once (as good: the outage it just had is not a
//! reason to call it poor).

use std::time::Duration;

/// What the tile says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quality {
    Good,
    Poor,
    /// Nothing arrives from the participant: its network dropped (it may come back).
    Lost,
}

/// One second of what the server measured of a connection.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QualitySample {
    /// Fraction of what the participant sent that did not arrive (its uplink).
    pub ingress_loss: Option<f32>,
    /// How many packets that fraction is of.
    pub ingress_packets: u64,
    /// Fraction of what the server sent it that it reports lost (its downlink).
    pub egress_loss: Option<f32>,
    /// How many packets that fraction is of.
    pub egress_packets: u64,
    /// Round trip between the server and the participant.
    pub rtt: Option<Duration>,
    /// The server's estimate of the participant's downlink, if it estimates one.
    pub estimate_bps: Option<u64>,
    /// What the participant's layout asks the downlink to carry.
    pub desired_bps: u64,
    /// Nothing heard from the participant for a while, or ICE reports the path lost.
    pub silent: bool,
}

/// Where poor begins and good resumes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityConfig {
    /// Loss either way from which a second counts as bad.
    pub poor_loss: f32,
    /// Loss both ways below which a second counts as good.
    pub good_loss: f32,
    pub poor_rtt: Duration,
    pub good_rtt: Duration,
    /// A downlink estimate below this, and below half of what the layout asks for, is too
    /// little: the tiles it shows get low layers or none.
    pub short_estimate_bps: u64,
    /// Bad seconds in a row that make a good connection poor.
    pub poor_after: u8,
    /// Good seconds in a row that make a poor connection good again.
    pub good_after: u8,
    /// Loss measured over fewer packets than this in a second says nothing either way: a
    /// muted participant with its camera off sends a few a second (Opus DTX), and one of
    /// them lost is not a poor connection.
    pub min_loss_packets: u64,
}

impl Default for QualityConfig {
    fn default() -> Self {
        QualityConfig {
            poor_loss: 0.05,
            good_loss: 0.02,
            poor_rtt: Duration::from_millis(400),
            good_rtt: Duration::from_millis(250),
            short_estimate_bps: 500_000,
            poor_after: 2,
            good_after: 5,
            min_loss_packets: 20,
        }
    }
}

/// The state of one connection.
#[derive(Debug, Clone)]
pub struct QualityMeter {
    config: QualityConfig,
    state: Quality,
    bad_run: u8,
    good_run: u8,
}

/// How one second looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Bad,
    Good,
    /// Neither: keeps the state, breaks both runs.
    Middling,
}

impl QualityMeter {
    /// A new connection: good until measured otherwise.
    pub fn new(config: QualityConfig) -> Self {
        QualityMeter {
            config,
            state: Quality::Good,
            bad_run: 0,
            good_run: 0,
        }
    }

    pub fn state(&self) -> Quality {
        self.state
    }

    /// Takes one second's sample; returns the new state when it changed.
    pub fn sample(&mut self, s: &QualitySample) -> Option<Quality> {
        let before = self.state;
        if s.silent {
            self.state = Quality::Lost;
            self.bad_run = 0;
            self.good_run = 0;
            return (before != Quality::Lost).then_some(Quality::Lost);
        }
        let verdict = self.verdict(s);
        self.state = match (self.state, verdict) {
            // Back from lost: good at once. The first second back counts the outage itself
            // as loss; a network that stays bad turns poor after its run like any other.
            (Quality::Lost, _) => Quality::Good,
            (Quality::Good, Verdict::Bad) => {
                self.bad_run = self.bad_run.saturating_add(1);
                if self.bad_run >= self.config.poor_after {
                    Quality::Poor
                } else {
                    Quality::Good
                }
            }
            (Quality::Poor, Verdict::Good) => {
                self.good_run = self.good_run.saturating_add(1);
                if self.good_run >= self.config.good_after {
                    Quality::Good
                } else {
                    Quality::Poor
                }
            }
            (state, _) => state,
        };
        if verdict != Verdict::Bad || self.state != before {
            self.bad_run = 0;
        }
        if verdict != Verdict::Good || self.state != before {
            self.good_run = 0;
        }
        (self.state != before).then_some(self.state)
    }

    fn verdict(&self, s: &QualitySample) -> Verdict {
        let c = &self.config;
        let counted =
            |loss: Option<f32>, packets: u64| loss.filter(|_| packets >= c.min_loss_packets);
        let losses = [
            counted(s.ingress_loss, s.ingress_packets),
            counted(s.egress_loss, s.egress_packets),
        ];
        let short = s.estimate_bps.is_some_and(|e| {
            s.desired_bps > 0 && e < c.short_estimate_bps && e.saturating_mul(2) < s.desired_bps
        });
        let bad = short
            || losses.iter().flatten().any(|l| *l >= c.poor_loss)
            || s.rtt.is_some_and(|r| r >= c.poor_rtt);
        if bad {
            return Verdict::Bad;
        }
        let good = losses.iter().flatten().all(|l| *l < c.good_loss)
            && s.rtt.is_none_or(|r| r < c.good_rtt);
        if good {
            Verdict::Good
        } else {
            Verdict::Middling
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean() -> QualitySample {
        QualitySample {
            ingress_loss: Some(0.0),
            ingress_packets: 100,
            egress_loss: Some(0.0),
            egress_packets: 100,
            rtt: Some(Duration::from_millis(30)),
            estimate_bps: Some(2_000_000),
            desired_bps: 1_000_000,
            silent: false,
        }
    }

    fn lossy(loss: f32) -> QualitySample {
        QualitySample {
            ingress_loss: Some(loss),
            ..clean()
        }
    }

    fn run(m: &mut QualityMeter, s: QualitySample, n: usize) -> Vec<Quality> {
        (0..n).filter_map(|_| m.sample(&s)).collect()
    }

    #[test]
    fn a_clean_connection_stays_good() {
        let mut m = QualityMeter::new(QualityConfig::default());
        assert_eq!(run(&mut m, clean(), 30), vec![]);
        assert_eq!(m.state(), Quality::Good);
        // Nothing measured yet (no media, no feedback) is no reason for alarm either.
        assert_eq!(run(&mut m, QualitySample::default(), 5), vec![]);
    }

    #[test]
    fn one_bad_second_does_not_make_a_tile_blink() {
        let mut m = QualityMeter::new(QualityConfig::default());
        for _ in 0..10 {
            assert_eq!(m.sample(&lossy(0.2)), None);
            assert_eq!(m.sample(&clean()), None);
        }
        assert_eq!(m.state(), Quality::Good);
    }

    #[test]
    fn lasting_loss_either_way_makes_it_poor_and_recovery_takes_longer() {
        let c = QualityConfig::default();
        let mut m = QualityMeter::new(c);
        assert_eq!(m.sample(&lossy(0.08)), None);
        assert_eq!(m.sample(&lossy(0.08)), Some(Quality::Poor));
        // Good again only after `good_after` good seconds in a row; a bad one restarts.
        assert_eq!(run(&mut m, clean(), 4), vec![]);
        assert_eq!(m.sample(&lossy(0.08)), None);
        assert_eq!(run(&mut m, clean(), 4), vec![]);
        assert_eq!(m.sample(&clean()), Some(Quality::Good));

        let mut m = QualityMeter::new(c);
        let down = QualitySample {
            egress_loss: Some(0.1),
            ..clean()
        };
        assert_eq!(run(&mut m, down, 2), vec![Quality::Poor]);
    }

    #[test]
    fn middling_seconds_neither_spoil_nor_mend() {
        let mut m = QualityMeter::new(QualityConfig::default());
        // 3 % loss: not bad enough to turn poor, not clean enough to turn good.
        assert_eq!(run(&mut m, lossy(0.03), 20), vec![]);
        assert_eq!(run(&mut m, lossy(0.1), 2), vec![Quality::Poor]);
        assert_eq!(run(&mut m, lossy(0.03), 20), vec![]);
        assert_eq!(m.state(), Quality::Poor);
    }

    #[test]
    fn a_long_round_trip_or_too_little_bandwidth_is_poor() {
        let slow = QualitySample {
            rtt: Some(Duration::from_millis(600)),
            ..clean()
        };
        let mut m = QualityMeter::new(QualityConfig::default());
        assert_eq!(run(&mut m, slow, 2), vec![Quality::Poor]);

        let starved = QualitySample {
            estimate_bps: Some(200_000),
            desired_bps: 1_500_000,
            ..clean()
        };
        let mut m = QualityMeter::new(QualityConfig::default());
        assert_eq!(run(&mut m, starved, 2), vec![Quality::Poor]);

        // A small estimate for a layout that asks for little is just that.
        let modest = QualitySample {
            estimate_bps: Some(200_000),
            desired_bps: 150_000,
            ..clean()
        };
        let mut m = QualityMeter::new(QualityConfig::default());
        assert_eq!(run(&mut m, modest, 10), vec![]);
    }

    #[test]
    fn silence_is_lost_at_once_and_return_is_immediate() {
        let mut m = QualityMeter::new(QualityConfig::default());
        let gone = QualitySample {
            silent: true,
            ..Default::default()
        };
        assert_eq!(m.sample(&gone), Some(Quality::Lost));
        assert_eq!(m.sample(&gone), None);
        assert_eq!(m.sample(&clean()), Some(Quality::Good));
        // The first second back measures the outage as loss: not held against it...
        assert_eq!(m.sample(&gone), Some(Quality::Lost));
        assert_eq!(m.sample(&lossy(0.9)), Some(Quality::Good));
        // ...but a network that stays bad is poor after its run.
        assert_eq!(m.sample(&lossy(0.3)), None);
        assert_eq!(m.sample(&lossy(0.3)), Some(Quality::Poor));
    }

    #[test]
    fn a_lost_packet_of_a_few_is_not_a_poor_connection() {
        // Muted, camera off: four packets a second up, one of them lost every second.
        let quiet = QualitySample {
            ingress_loss: Some(0.25),
            ingress_packets: 4,
            ..clean()
        };
        let mut m = QualityMeter::new(QualityConfig::default());
        assert_eq!(run(&mut m, quiet, 10), vec![]);
        // Nor does it keep a poor connection from mending.
        assert_eq!(run(&mut m, lossy(0.1), 2), vec![Quality::Poor]);
        assert_eq!(run(&mut m, quiet, 5), vec![Quality::Good]);
        // The same share of enough packets is loss, either way.
        let down = QualitySample {
            egress_loss: Some(0.25),
            egress_packets: 40,
            ..clean()
        };
        assert_eq!(run(&mut m, down, 2), vec![Quality::Poor]);
        let few_down = QualitySample {
            egress_loss: Some(0.25),
            egress_packets: 8,
            ..clean()
        };
        let mut m = QualityMeter::new(QualityConfig::default());
        assert_eq!(run(&mut m, few_down, 10), vec![]);
    }
}
