//! ting patch: a pacer that sends media as soon as it is queued and paces only BWE probes.
//!
//! Media goes through a [`NullPacer`]: every queued packet leaves on the next timeout, as
//! with the BWE off. While a probe cluster runs, a [`LeakyBucketPacer`] takes over and
//! paces what is queued (media and probe padding) at the probe's rate, so the probe's
//! packets are spread as the estimator expects. Media that `Rtc::poll_stream_tx` sends at
//! once goes beside the probe ([`ProbesOnlyPacer::register_send_beside_probe`]): only the
//! probe's padding then pays one timeout per packet, not every forwarded packet of the
//! connection for as long as the cluster runs.

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

    pub(crate) fn check_probe_complete(&mut self, now: Instant) -> Option<TwccClusterId> {
        self.probe.check_probe_complete(now)
    }

    /// ting patch: media sent at once while a probe cluster runs (`Rtc::poll_stream_tx`).
    /// It is not the probe's: the cluster stays untouched and is made of the padding the
    /// leaky bucket asks for, tagged and spaced at the probe's rate. Counting this media
    /// into the cluster would end it early with too few tagged packets.
    pub(crate) fn register_send_beside_probe(
        &mut self,
        now: Instant,
        packet_size: DataSize,
        from: MidRid,
    ) {
        self.media.register_send(now, packet_size, from);
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

#[cfg(test)]
mod test {
    use std::time::Duration;

    use super::*;
    use crate::bwe_::ProbeKind;
    use crate::pacer::QueueSnapshot;

    fn queue(now: Instant) -> QueueState {
        QueueState {
            midrid: MidRid("v".into(), None),
            unpaced: false,
            use_for_padding: true,
            snapshot: QueueSnapshot {
                created_at: now,
                ..Default::default()
            },
        }
    }

    /// Media sent beside a running probe neither ends the cluster nor takes its place:
    /// the cluster still asks for its own padding, tagged with its id, until it has sent
    /// what it needs.
    #[test]
    fn media_beside_a_probe_leaves_the_cluster_to_its_padding() {
        let now = Instant::now();
        let mut pacer = ProbesOnlyPacer::new(Bitrate::kbps(300));
        pacer.handle_timeout(now, std::iter::once(queue(now)));
        pacer.start_probe(ProbeClusterConfig::new(
            7.into(),
            Bitrate::kbps(2000),
            ProbeKind::Initial,
        ));
        assert_eq!(pacer.active_cluster(), Some(7.into()));

        // A second's worth of forwarded video at once: it would have completed the
        // cluster, had it been counted into it.
        for i in 0..100 {
            let t = now + Duration::from_micros(i);
            pacer.register_send_beside_probe(t, 1200_usize.into(), MidRid("v".into(), None));
        }
        assert_eq!(pacer.check_probe_complete(now), None);
        assert_eq!(pacer.active_cluster(), Some(7.into()));

        // The cluster runs on padding, tagged, one packet per timeout, until complete.
        let mut t = now;
        let mut padded = 0;
        for _ in 0..1000 {
            if let Some(request) = pacer.handle_timeout(t, std::iter::once(queue(t))) {
                let (midrid, cluster) = pacer.poll_queue().expect("a padding packet to send");
                assert_eq!(cluster, Some(7.into()));
                pacer.register_send(t, request.padding.into(), midrid);
                padded += 1;
            }
            if pacer.check_probe_complete(t) == Some(7.into()) {
                break;
            }
            t = pacer
                .poll_timeout()
                .0
                .unwrap_or(t + Duration::from_millis(1))
                .max(t);
        }
        assert!(padded >= 5, "the cluster sent {padded} padding packets");
        assert_eq!(pacer.active_cluster(), None, "the cluster completed");
    }
}
