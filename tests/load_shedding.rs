//! A media worker whose core stays full sheds load (`media.load_shedding`): its thumbnails
//! get the base temporal layer only, a quarter of a camera's frames, and their usual
//! frames again once the core has room. Driven in virtual time through a real worker core
//! and real str0m peers; the load the worker loop would measure is reported by the test.

use std::time::{Duration, Instant};

use ting_bench::{SimPeer, SimPeerConfig};
use ting_media::{Codec, EndpointId, LayoutSpec, Source, TileSpec, View};

#[path = "../benches/support/sim_core.rs"]
#[allow(dead_code)] // each user needs a part of it
mod sim_core;

use sim_core::SimCore;

const STEP: Duration = Duration::from_millis(5);

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
        let mut publisher = SimPeerConfig::new(1);
        publisher.audio = false;
        publisher.video_bps = vec![300_000];
        publisher.audio_slots = 0;
        publisher.video_slots = 0;
        publisher.screen_slots = 0;
        let mut viewer = SimPeerConfig::new(2);
        viewer.audio = false;
        viewer.video_bps = Vec::new();
        viewer.audio_slots = 0;
        viewer.video_slots = 1;
        viewer.screen_slots = 0;
        let layout = LayoutSpec {
            view: View::Grid,
            tiles: vec![TileSpec {
                endpoint: Some(EndpointId(1)),
                height: 180,
            }],
        };
        let peers = vec![
            sim.connect(publisher, "10.0.1.1:1000".parse().unwrap(), None, now),
            sim.connect(viewer, "10.0.2.1:2000".parse().unwrap(), Some(layout), now),
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
