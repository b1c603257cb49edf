//! A participant's network, seen from a media worker, in virtual time over an in-memory
//! network: a participant whose network goes quiet and comes back at another address
//! restarts ICE (`ice_restart`) and its media flows again on the same connection (same
//! participant, same tracks, same subscriptions of the others); an ICE restart that would
//! change the connection is refused without harming it; a connection that never comes back
//! ends after the grace period; lasting loss shows as a poor connection, and an outage as a
//! lost one, each back to good when it passes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ting_bench::{SimPeer, SimPeerConfig};
use ting_media::{Codec, Quality, Source};
use ting_proto::{ErrorCode, ErrorMsg};
use ting_server::udp::SendResult;
use ting_server::worker::{WorkerCmd, WorkerEvent};

#[path = "../benches/support/sim_core.rs"]
#[allow(dead_code)] // each user needs a part of it
mod sim_core;

use sim_core::{SERVER, SimCore};

const STEP: Duration = Duration::from_millis(5);
const PUBLISHER: u64 = 1;
const SUBSCRIBER: u64 = 2;

/// One worker core, a publisher and a subscriber, and the wire between them.
struct Net {
    sim: SimCore,
    peers: Vec<SimPeer>,
    /// The peers whose datagrams (both ways) the network drops.
    cut: Vec<bool>,
    /// Per peer: drop every n-th datagram it sends (`None`: none), and how many it sent.
    drop_every: Vec<Option<u32>>,
    sent: Vec<u32>,
    /// Per peer: drop every n-th datagram the server sends it, and how many it sent.
    drop_to_every: Vec<Option<u32>>,
    sent_to: Vec<u32>,
    /// What the core told the conductor so far.
    log: Vec<WorkerEvent>,
    now: Instant,
}

impl Net {
    fn new(media_grace: Duration) -> Net {
        let now = Instant::now();
        let mut net = Net {
            sim: SimCore::new(9, false, media_grace),
            peers: Vec::new(),
            cut: Vec::new(),
            drop_every: Vec::new(),
            sent: Vec::new(),
            drop_to_every: Vec::new(),
            sent_to: Vec::new(),
            log: Vec::new(),
            now,
        };

        let mut publisher = SimPeerConfig::new(PUBLISHER as u32);
        publisher.video_bps = vec![300_000];
        publisher.audio_slots = 0;
        publisher.video_slots = 0;
        publisher.screen_slots = 0;
        let mut subscriber = SimPeerConfig::new(SUBSCRIBER as u32);
        subscriber.audio = false;
        subscriber.video_bps = Vec::new();
        subscriber.audio_slots = 1;
        subscriber.video_slots = 1;
        subscriber.screen_slots = 0;
        for (cfg, addr) in [(publisher, "10.0.1.1:1000"), (subscriber, "10.0.2.1:2000")] {
            let peer = net.sim.connect(cfg, addr.parse().unwrap(), None, now);
            net.peers.push(peer);
            net.cut.push(false);
            net.drop_every.push(None);
            net.sent.push(0);
            net.drop_to_every.push(None);
            net.sent_to.push(0);
        }
        net.sim
            .add_track(PUBLISHER, Source::Microphone, Codec::Opus, now);
        net.sim
            .add_track(PUBLISHER, Source::Camera, Codec::Vp8, now);
        net
    }

    /// A net whose video has flowed for three seconds, both connections good so far.
    fn flowing() -> Net {
        let mut net = Net::new(Duration::from_secs(20));
        net.run_until("first video", Duration::from_secs(20), |n| {
            n.video_received() > 30
        });
        net.run_for(Duration::from_secs(3));
        for pid in [PUBLISHER, SUBSCRIBER] {
            assert_eq!(net.quality_of(pid), vec![], "a clean network is good");
        }
        net
    }

    fn video_received(&self) -> u64 {
        self.peers[1].stats().received_video.packets
    }

    /// Moves every datagram one hop and advances every clock by one step.
    fn step(&mut self) {
        self.now += STEP;
        let now = self.now;
        for (i, p) in self.peers.iter_mut().enumerate() {
            if p.poll_timeout() <= now {
                p.handle_timeout(now);
            }
            let from = p.local_addr();
            while let Some(t) = p.poll_transmit() {
                self.sent[i] += 1;
                let dropped = self.drop_every[i].is_some_and(|n| self.sent[i].is_multiple_of(n));
                if !self.cut[i] && !dropped {
                    self.sim.core.handle_datagram(from, &t.contents, now);
                }
            }
        }
        while self.sim.core.handle_commands(now) {}
        self.sim.core.handle_timeout(now);
        self.sim.core.flush_connections(now);
        let by_addr: HashMap<SocketAddr, usize> = self
            .peers
            .iter()
            .enumerate()
            .map(|(i, p)| (p.local_addr(), i))
            .collect();
        let mut deliver = Vec::new();
        for t in self.sim.core.transmits() {
            // Datagrams to an address nobody has any more are lost on the way.
            if let Some(&i) = by_addr.get(&t.destination)
                && !self.cut[i]
            {
                self.sent_to[i] += 1;
                let n = self.sent_to[i];
                if !self.drop_to_every[i].is_some_and(|every| n.is_multiple_of(every)) {
                    deliver.push((i, t.contents.to_vec()));
                }
            }
        }
        let sent = self.sim.core.transmits().len();
        self.sim.core.finish_send(
            SendResult {
                sent,
                ..Default::default()
            },
            now,
        );
        let server: SocketAddr = SERVER.parse().unwrap();
        for (i, d) in deliver {
            self.peers[i].handle_receive(server, &d, now);
        }
    }

    /// Steps until `done` holds, for at most `limit` of virtual time; returns how long it
    /// took.
    fn run_until(
        &mut self,
        what: &str,
        limit: Duration,
        mut done: impl FnMut(&mut Net) -> bool,
    ) -> Duration {
        let start = self.now;
        while !done(self) {
            assert!(
                self.now - start < limit,
                "{what}: not within {limit:?} of virtual time"
            );
            self.step();
        }
        self.now - start
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    /// Sends `ice_restart` for `pid` to the core and returns its reply.
    fn ice_restart(&mut self, pid: u64, sdp: String) -> Result<String, ErrorMsg> {
        let (reply, mut rx) = tokio::sync::oneshot::channel();
        self.sim.handles[0].command(WorkerCmd::IceRestart { pid, sdp, reply });
        while self.sim.core.handle_commands(self.now) {}
        rx.try_recv()
            .expect("the core answers an ICE restart at once")
    }

    fn take_events(&mut self) {
        while let Ok(e) = self.sim.events.try_recv() {
            self.log.push(e);
        }
    }

    /// Whose media connections ended so far.
    fn media_failed(&mut self) -> Vec<u64> {
        self.take_events();
        self.log
            .iter()
            .filter_map(|e| match e {
                WorkerEvent::MediaFailed { pid } => Some(*pid),
                _ => None,
            })
            .collect()
    }

    /// How `pid`'s connection quality changed so far, in order.
    fn quality_of(&mut self, pid: u64) -> Vec<Quality> {
        self.take_events();
        self.log
            .iter()
            .filter_map(|e| match e {
                WorkerEvent::Quality { pid: p, quality } if *p == pid => Some(*quality),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn a_participant_whose_network_drops_and_moves_comes_back_by_ice_restart() {
    let mut net = Net::new(Duration::from_secs(20));
    net.run_until("first video", Duration::from_secs(20), |n| {
        n.video_received() > 30
    });

    // The publisher's network is gone for 10 s; it then has a new address.
    net.cut[0] = true;
    net.run_for(Duration::from_secs(10));
    let during = net.video_received();
    net.run_for(Duration::from_secs(1));
    assert_eq!(
        net.video_received(),
        during,
        "nothing arrives while the publisher is cut off"
    );
    let moved: SocketAddr = "10.0.1.99:1999".parse().unwrap();
    let offer = net.peers[0].restart_ice(moved).expect("restart offer");
    let answer = net
        .ice_restart(PUBLISHER, offer)
        .expect("ICE restart accepted");
    let now = net.now;
    net.peers[0].accept_answer(&answer, now).expect("answer");
    net.cut[0] = false;

    let before = net.video_received();
    // The camera is asked for again at once (the router had given up on it while
    // nothing came), not when its retry comes round ten seconds later.
    let first = net.run_until("first video after the move", Duration::from_secs(2), |n| {
        n.video_received() > before
    });
    eprintln!("first video {first:?} (virtual) after the ICE restart's answer");
    let back = net.run_until(
        "video from the moved publisher",
        Duration::from_secs(5),
        |n| n.video_received() > before + 30,
    );
    eprintln!("media back {back:?} (virtual) after the ICE restart's answer");
    assert_eq!(net.sim.core.stats().ice_restarts, 1);
    assert_eq!(
        net.media_failed(),
        Vec::<u64>::new(),
        "no connection ended: the publisher came back within the grace"
    );
    // The new path stays up (consent checks keep passing on it).
    let before = net.video_received();
    net.run_for(Duration::from_secs(10));
    assert!(net.video_received() > before + 100);
    assert_eq!(net.media_failed(), Vec::<u64>::new());
}

#[test]
fn an_ice_restart_that_would_change_the_connection_is_refused_and_harms_nothing() {
    let mut net = Net::new(Duration::from_secs(20));
    net.run_until("first video", Duration::from_secs(20), |n| {
        n.video_received() > 30
    });

    // Not an SDP; an SDP with other m-lines (another client's whole offer); nobody's.
    let e = net.ice_restart(PUBLISHER, "v=0".into()).unwrap_err();
    assert_eq!(e.code, ErrorCode::BadOffer);
    assert!(e.message.contains("m-lines"), "{}", e.message);
    let mut other = SimPeerConfig::new(9);
    other.video_slots = 3;
    let (_, other_offer) =
        SimPeer::new(other, "10.0.9.9:9".parse().unwrap(), net.now).expect("peer");
    let e = net.ice_restart(PUBLISHER, other_offer.sdp).unwrap_err();
    assert_eq!(e.code, ErrorCode::BadOffer);
    assert!(
        e.message.contains("keeps the connection's m-lines"),
        "{}",
        e.message
    );
    let e = net.ice_restart(77, "v=0".into()).unwrap_err();
    assert_eq!(e.code, ErrorCode::NotConnected);
    assert_eq!(net.sim.core.stats().ice_restarts, 0);

    let before = net.video_received();
    net.run_for(Duration::from_secs(3));
    assert!(
        net.video_received() > before + 30,
        "the publisher's media goes on after the refused restarts"
    );
    assert_eq!(net.media_failed(), Vec::<u64>::new());
}

#[test]
fn a_connection_that_never_comes_back_ends_after_the_grace() {
    let grace = Duration::from_secs(4);
    let mut net = Net::new(grace);
    net.run_until("first video", Duration::from_secs(20), |n| {
        n.video_received() > 30
    });
    net.cut[0] = true;
    let mut failed = Vec::new();
    let took = net.run_until("the lost connection to end", Duration::from_secs(60), |n| {
        !n.media_failed().is_empty()
    });
    failed.extend(net.media_failed());
    assert_eq!(failed, vec![PUBLISHER]);
    assert!(
        took >= grace,
        "ended after {took:?}, before the {grace:?} grace"
    );
    eprintln!("a silent connection ended {took:?} after it went quiet (grace {grace:?})");
}

#[test]
fn lasting_loss_shows_as_a_poor_connection_and_an_outage_as_a_lost_one() {
    let mut net = Net::flowing();

    // One datagram in eight lost on the publisher's uplink.
    net.drop_every[0] = Some(8);
    let poor = net.run_until(
        "the publisher to show as poor",
        Duration::from_secs(10),
        |n| n.quality_of(PUBLISHER) == [Quality::Poor],
    );
    eprintln!("12.5 % uplink loss showed as poor after {poor:?}");
    assert!(
        poor >= Duration::from_secs(1),
        "not on the first bad second: {poor:?}"
    );
    net.drop_every[0] = None;
    let good = net.run_until(
        "the publisher to show as good again",
        Duration::from_secs(15),
        |n| n.quality_of(PUBLISHER) == [Quality::Poor, Quality::Good],
    );
    eprintln!("and as good again {good:?} after the loss stopped");

    // Its network goes away: lost within a few seconds; back when it returns.
    net.cut[0] = true;
    let lost = net.run_until(
        "the publisher to show as lost",
        Duration::from_secs(10),
        |n| n.quality_of(PUBLISHER).last() == Some(&Quality::Lost),
    );
    eprintln!("an outage showed as lost after {lost:?}");
    assert!(lost <= Duration::from_secs(4), "{lost:?}");
    net.cut[0] = false;
    net.run_until(
        "the publisher to show as good after the outage",
        Duration::from_secs(5),
        |n| n.quality_of(PUBLISHER).last() == Some(&Quality::Good),
    );
    // The subscriber's own connection was fine throughout.
    assert_eq!(net.quality_of(SUBSCRIBER), vec![]);
}

#[test]
fn loss_on_a_viewers_downlink_shows_from_its_transport_wide_feedback() {
    // The server learns of loss on the way to a viewer only from the feedback the viewer
    // sends: the load harness's participants take theirs from str0m without a timeout
    // pass (`Rtc::poll_twcc_feedback`), and it must report what did not arrive.
    let mut net = Net::flowing();

    // One datagram in eight lost on the way to the subscriber.
    net.drop_to_every[1] = Some(8);
    let poor = net.run_until(
        "the subscriber to show as poor",
        Duration::from_secs(10),
        |n| n.quality_of(SUBSCRIBER) == [Quality::Poor],
    );
    eprintln!("12.5 % downlink loss showed as poor after {poor:?}");
    net.drop_to_every[1] = None;
    net.run_until(
        "the subscriber to show as good again",
        Duration::from_secs(15),
        |n| n.quality_of(SUBSCRIBER) == [Quality::Poor, Quality::Good],
    );
    // The publisher's own connection was fine throughout.
    assert_eq!(net.quality_of(PUBLISHER), vec![]);
}
