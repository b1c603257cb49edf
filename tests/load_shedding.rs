//! A media worker whose core stays full sheds load (`media.load_shedding`): its thumbnails
//! get the base temporal layer only, a quarter of a camera's frames, and their usual
//! frames again once the core has room; its connections stop probing for bandwidth until
//! then. Driven in virtual time through a real worker core
//! and real str0m peers; the load the worker loop would measure is reported by the test.

use std::time::{Duration, Instant};

use ting_bench::{SimPeer, SimPeerConfig};
use ting_media::{Codec, EndpointId, LayoutSpec, Source, TileSpec, View};
use ting_server::metrics::TickCause;

#[path = "../benches/support/sim_core.rs"]
#[allow(dead_code)] // each user needs a part of it
mod sim_core;

use sim_core::SimCore;

const STEP: Duration = Duration::from_millis(5);

/// Participant 1: a camera of one VP8 layer in three temporal layers at `bps`, nothing else.
fn camera(bps: u32) -> SimPeerConfig {
    let mut c = SimPeerConfig::new(1);
    c.audio = false;
    c.video_bps = vec![bps];
    c.audio_slots = 0;
    c.video_slots = 0;
    c.screen_slots = 0;
    c
}

/// Participant 2: sends nothing, shows one camera.
fn viewer() -> SimPeerConfig {
    let mut c = SimPeerConfig::new(2);
    c.audio = false;
    c.video_bps = Vec::new();
    c.audio_slots = 0;
    c.video_slots = 1;
    c.screen_slots = 0;
    c
}

struct Room {
    sim: SimCore,
    peers: Vec<SimPeer>,
    now: Instant,
}

impl Room {
    /// A publisher with one VP8 layer in three temporal layers, and a viewer that shows
    /// it as a 180-pixel thumbnail in grid view.
    fn new() -> Room {
        let now = Instant::now();
        let mut sim = SimCore::with_shedding(9, false, Duration::from_secs(20), true);
        let layout = LayoutSpec {
            view: View::Grid,
            tiles: vec![TileSpec {
                endpoint: Some(EndpointId(1)),
                height: 180,
            }],
        };
        let peers = vec![
            sim.connect(camera(300_000), "10.0.1.1:1000".parse().unwrap(), None, now),
            sim.connect(
                viewer(),
                "10.0.2.1:2000".parse().unwrap(),
                Some(layout),
                now,
            ),
        ];
        sim.add_track(1, Source::Camera, Codec::Vp8, now);
        Room { sim, peers, now }
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += STEP;
            self.sim.exchange(&mut self.peers, self.now);
        }
    }

    fn received(&self) -> u64 {
        self.peers[1].stats().received_video.packets
    }

    /// Video packets the viewer receives over `d`.
    fn received_over(&mut self, d: Duration) -> u64 {
        let before = self.received();
        self.run_for(d);
        self.received() - before
    }

    /// Reports `busy` once a second for `secs` seconds.
    fn load(&mut self, busy: f32, secs: u32) {
        for _ in 0..secs {
            self.sim.core.observe_load(busy, self.now);
            self.run_for(Duration::from_secs(1));
        }
    }

    fn shedding(&self) -> (u64, u64) {
        let s = self.sim.core.stats();
        (s.shedding, s.sheds)
    }
}

#[test]
fn a_full_core_sheds_thumbnail_frames_and_takes_them_back_when_it_has_room() {
    let mut room = Room::new();
    room.run_for(Duration::from_secs(3));
    assert!(room.received() > 30, "the thumbnail shows the camera");
    let usual = room.received_over(Duration::from_secs(4));

    // A busy second is not a full core; two in a row are.
    room.load(1.0, 1);
    room.load(0.5, 1);
    room.load(1.0, 2);
    assert_eq!(room.shedding(), (0, 0));
    room.load(1.0, 1);
    assert_eq!(room.shedding(), (1, 1), "shedding after two full seconds");
    let shed = room.received_over(Duration::from_secs(4));
    assert!(
        shed > 10 && shed * 10 <= usual * 7,
        "{shed} packets in 4 s while shedding against {usual} before"
    );

    // Still busy, though below full: it holds.
    room.load(0.8, 15);
    assert_eq!(room.shedding(), (1, 1));
    // Ten seconds with room: the usual frames come back (at a layer-sync frame).
    room.load(0.3, 11);
    assert_eq!(room.shedding(), (0, 1));
    let back = room.received_over(Duration::from_secs(4));
    assert!(
        back * 10 >= usual * 8,
        "{back} packets in 4 s after shedding against {usual} before"
    );

    // Throughout, the viewer's stream had no gap: the frames left out were renumbered
    // away, not lost.
    let slot = room.peers[1]
        .stats()
        .slots
        .iter()
        .find(|s| s.kind == "video")
        .expect("a camera slot");
    assert!(slot.packets > 100, "{slot:?}");
    assert_eq!(slot.missing(), 0, "{slot:?}");
}

/// Timeout passes a probe cluster causes so far: the pacer's, and those that send media
/// held back while a cluster runs.
fn probe_passes(sim: &SimCore) -> u64 {
    let t = &sim.core.stats().ticks;
    t[TickCause::Pacer as usize] + t[TickCause::Written as usize]
}

/// A camera and a viewer on a core with bandwidth estimation on.
struct Probing {
    sim: SimCore,
    peers: Vec<SimPeer>,
    now: Instant,
}

impl Probing {
    /// The core, shedding from the start or not, before anyone joins.
    fn new(full_core: bool) -> Probing {
        let mut p = Probing {
            sim: SimCore::with_shedding(9, true, Duration::from_secs(20), true),
            peers: Vec::new(),
            now: Instant::now(),
        };
        if full_core {
            p.load(1.0, 3);
            assert_eq!(p.sim.core.stats().shedding, 1, "a full core sheds");
        }
        p
    }

    fn join(&mut self) {
        let now = self.now;
        self.peers = vec![
            self.sim
                .connect(camera(600_000), "10.0.1.1:1000".parse().unwrap(), None, now),
            self.sim
                .connect(viewer(), "10.0.2.1:2000".parse().unwrap(), None, now),
        ];
        self.sim.add_track(1, Source::Camera, Codec::Vp8, now);
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += STEP;
            self.sim.exchange(&mut self.peers, self.now);
        }
    }

    /// Reports `busy` once a second for `secs` seconds, media flowing meanwhile.
    fn load(&mut self, busy: f32, secs: u32) {
        for _ in 0..secs {
            self.run_for(Duration::from_secs(1));
            self.sim.core.observe_load(busy, self.now);
        }
    }

    /// Probe passes over the next three seconds.
    fn probes_over_3s(&mut self) -> u64 {
        let before = probe_passes(&self.sim);
        self.run_for(Duration::from_secs(3));
        probe_passes(&self.sim) - before
    }
}

#[test]
fn a_full_core_does_not_probe_for_bandwidth_and_probes_again_when_it_has_room() {
    let mut room = Probing::new(false);
    room.join();
    let probing = room.probes_over_3s();
    assert!(
        probing >= 10,
        "a joining viewer's connection probes its downlink: {probing} probe passes"
    );
    assert!(room.peers[1].stats().received_video.packets > 100);

    let mut full = Probing::new(true);
    full.join();
    let paused = full.probes_over_3s();
    assert!(
        paused * 10 <= probing,
        "{paused} probe passes on a full core against {probing} on one with room"
    );
    assert!(
        full.peers[1].stats().received_video.packets > 100,
        "the viewer sees the camera all the same"
    );

    // Ten seconds with room: the connections there probe again, from the estimate they
    // have (it did not change meanwhile).
    full.load(0.3, 11);
    assert_eq!(full.sim.core.stats().shedding, 0);
    let resumed = full.probes_over_3s();
    assert!(
        resumed >= 5,
        "{resumed} probe passes in the three seconds after the core had room again"
    );

    // Full again: the connections stop probing, even when their estimator starts over
    // (the viewer's network was out for three seconds: its estimate is reset 2.5 s after
    // it is heard again, and a new estimator probes at once).
    full.load(1.0, 3);
    assert_eq!(full.sim.core.stats().shedding, 1);
    full.now += Duration::from_secs(3);
    full.run_for(Duration::from_millis(2600));
    let after_outage = full.probes_over_3s();
    assert!(
        after_outage * 10 <= probing,
        "{after_outage} probe passes after an outage on a full core"
    );
}
