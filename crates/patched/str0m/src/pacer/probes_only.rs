//! ting patch: a pacer that sends media as soon as it is queued and paces only BWE probes.
//!
//! Media goes through a [`NullPacer`]: every queued packet leaves on the next timeout, as
//! with the BWE off. While a probe cluster runs, a [`LeakyBucketPacer`] takes over and
//! paces everything (media and probe padding) at the probe's rate, so the probe's packets
//! are spread as the estimator expects. A probe lasts tens of milliseconds, so the cost of
//! one timeout per packet is paid only then.

use std::time::Instant;

use super::{LeakyBucketPacer, NullPacer, Pacer, PaddingRequest, QueueState};
use crate::Reason;
use crate::bwe_::ProbeClusterConfig;
use crate::rtp_::{Bitrate, DataSize, MidRid, TwccClusterId};

pub struct ProbesOnlyPacer {
    media: NullPacer,
    probe: LeakyBucketPacer,
    /// The queue states of the last timeout, reused so a pass allocates nothing.
    states: Vec<QueueState>,
}

impl ProbesOnlyPacer {
    pub fn new(initial_pacing_bitrate: Bitrate) -> Self {
        Self {
            media: NullPacer::default(),
            probe: LeakyBucketPacer::new(initial_pacing_bitrate),
            states: Vec::new(),
        }
    }

    fn probing(&self) -> bool {
        self.probe.active_cluster().is_some()
    }

    pub(crate) fn start_probe(&mut self, config: ProbeClusterConfig) {
        self.probe.start_probe(config);
    }

    pub(crate) fn active_cluster(&self) -> Option<TwccClusterId> {
        self.probe.active_cluster()
    }

    pub(crate) fn drop_queued_probes(&mut self) {
        self.probe.drop_queued_probes();
    }

    pub(crate) fn check_probe_complete(&mut self, now: Instant) -> Option<TwccClusterId> {
        self.probe.check_probe_complete(now)
    }
}

impl Pacer for ProbesOnlyPacer {
    fn set_pacing_rate(&mut self, pacing_bitrate: Bitrate) {
        self.probe.set_pacing_rate(pacing_bitrate);
    }

    fn set_padding_rate(&mut self, _padding_bitrate: Bitrate) {
        // No padding outside probes: the point of this pacer is to not spend timeouts on
        // anything but media and probes.
    }

    fn poll_timeout(&self) -> (Option<Instant>, Reason) {
        if self.probing() {
            self.probe.poll_timeout()
        } else {
            self.media.poll_timeout()
        }
    }

    fn handle_timeout(
        &mut self,
        now: Instant,
        iter: impl Iterator<Item = QueueState>,
    ) -> Option<PaddingRequest> {
        if !self.probing() {
            self.media.handle_timeout(now, iter);
            // Keep the leaky bucket's clock current so a probe starts from now.
            self.probe.idle(now);
            return None;
        }
        self.states.clear();
        self.states.extend(iter);
        self.media.handle_timeout(now, self.states.iter().copied());
        self.probe.handle_timeout(now, self.states.iter().copied())
    }

    fn poll_queue(&mut self) -> Option<(MidRid, Option<TwccClusterId>)> {
        if self.probing() {
            self.probe.poll_queue()
        } else {
            self.media.poll_queue()
        }
    }

    fn register_send(&mut self, now: Instant, packet_size: DataSize, from: MidRid) {
        self.media.register_send(now, packet_size, from);
        if self.probing() {
            self.probe.register_send(now, packet_size, from);
        }
    }
}
