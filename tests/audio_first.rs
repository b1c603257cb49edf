//! A voice packet read in the same batch as a camera's frames leaves before their fan-out:
//! a media worker routes a batch's audio to every subscriber first, then the video. Driven
//! in virtual time through a real worker core and real str0m peers; the batch is handed
//! out one datagram at a time, each a millisecond after the last, and the core's own
//! forwarding-latency figures (by kind) tell when each copy left.

use std::time::{Duration, Instant};

use ting_bench::SimPeerConfig;
use ting_media::{Codec, Source};
use ting_server::udp::SendResult;

#[path = "../benches/support/sim_core.rs"]
#[allow(dead_code)] // each user needs a part of it
mod sim_core;

use sim_core::SimCore;

const STEP: Duration = Duration::from_millis(5);
const VIEWERS: u32 = 12;

#[test]
fn a_batchs_audio_reaches_every_subscriber_before_its_video() {
    let mut now = Instant::now();
    let mut sim = SimCore::new(9, false, Duration::from_secs(20));
    let mut publisher = SimPeerConfig::new(1);
    publisher.video_bps = vec![600_000];
    publisher.speaking = true;
    publisher.audio_slots = 0;
    publisher.video_slots = 0;
    publisher.screen_slots = 0;
    let mut peers = vec![sim.connect(publisher, "10.0.1.1:1000".parse().unwrap(), None, now)];
    for v in 0..VIEWERS {
        let mut viewer = SimPeerConfig::new(2 + v);
        viewer.audio = false;
        viewer.video_bps = Vec::new();
        viewer.audio_slots = 1;
        viewer.video_slots = 1;
        viewer.screen_slots = 0;
        let addr = format!("10.0.2.{}:2000", v + 1).parse().unwrap();
        peers.push(sim.connect(viewer, addr, None, now));
    }
    sim.add_track(1, Source::Microphone, Codec::Opus, now);
    sim.add_track(1, Source::Camera, Codec::Vp8, now);
    for _ in 0..600 {
        now += STEP;
        sim.exchange(&mut peers, now);
    }
    for p in &peers[1..] {
        let s = p.stats();
        assert!(
            s.received_audio.packets > 20 && s.received_video.packets > 20,
            "every viewer hears and sees the publisher first: {} audio, {} video",
            s.received_audio.packets,
            s.received_video.packets
        );
    }

    // What the publisher sends over 100 ms (five voice packets, three frames), read by the
    // worker in one batch.
    let mut held = Vec::new();
    let from = peers[0].local_addr();
    for _ in 0..20 {
        now += STEP;
        if peers[0].poll_timeout() <= now {
            peers[0].handle_timeout(now);
        }
        while let Some(t) = peers[0].poll_transmit() {
            held.push(t.contents.to_vec());
        }
    }
    let before = sim.core.stats().clone();
    for d in &held {
        sim.core.handle_datagram_received(from, d, now, now);
    }
    let mut sent_at = now;
    let mut send = |core: &mut ting_server::worker::MediaCore| {
        sent_at += Duration::from_millis(1);
        let sent = core.transmits().len();
        core.finish_send(
            SendResult {
                sent,
                ..Default::default()
            },
            sent_at,
        );
    };
    while sim.core.route_some(now, 1) {
        send(&mut sim.core);
    }
    send(&mut sim.core);

    let after = sim.core.stats();
    let copies = |k: usize| after.latency_count[k] - before.latency_count[k];
    let mean_ms = |k: usize| {
        (after.latency_sum_ns[k] - before.latency_sum_ns[k]) as f64 / 1e6 / copies(k) as f64
    };
    let (audio, video) = (copies(0), copies(1));
    assert!(
        audio >= 3 * u64::from(VIEWERS),
        "the batch's voice packets went to every viewer: {audio} copies"
    );
    assert!(
        video >= 3 * u64::from(VIEWERS),
        "the batch's frames went to every viewer: {video} copies"
    );
    // One copy a millisecond: the audio first takes the first `audio` milliseconds, the
    // video the rest. Mixed in subscriber order, both would average about the middle.
    let (a, v) = (mean_ms(0), mean_ms(1));
    let all = (audio + video) as f64;
    assert!(
        a <= audio as f64 / 2.0 + 3.0 && v >= audio as f64 + video as f64 / 2.0 - 3.0,
        "audio copies left after {a:.1} ms on average, video after {v:.1} ms, of {all} ms"
    );
}
