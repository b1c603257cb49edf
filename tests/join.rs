//! A joiner is told who speaks with its answer, before its media connects: on a busy core
//! the handshakes can take seconds, and a person should not wait that long to see who has
//! the floor. Driven in virtual time through a real worker core and real str0m peers.

use std::time::{Duration, Instant};

use ting_bench::SimPeerConfig;
use ting_media::{Codec, Source};

#[path = "../benches/support/sim_core.rs"]
#[allow(dead_code)] // each user needs a part of it
mod sim_core;

use sim_core::SimCore;

const STEP: Duration = Duration::from_millis(5);

/// The participant named by the `active_speaker` messages among `msgs`, last first.
fn active_speakers(msgs: &[String]) -> Vec<Option<String>> {
    msgs.iter()
        .filter_map(|m| serde_json::from_str::<serde_json::Value>(m).ok())
        .filter(|v| v["type"] == "active_speaker")
        .map(|v| v["participant"].as_str().map(str::to_string))
        .rev()
        .collect()
}

#[test]
fn a_joiner_learns_the_active_speaker_before_its_media_connects() {
    let mut now = Instant::now();
    let mut sim = SimCore::new(9, false, Duration::from_secs(20));
    let mut speaker = SimPeerConfig::new(1);
    speaker.speaking = true;
    speaker.video_bps = Vec::new();
    let viewer = |id| {
        let mut c = SimPeerConfig::new(id);
        c.audio = false;
        c.video_bps = Vec::new();
        c
    };
    let mut peers = vec![
        sim.connect(speaker, "10.0.1.1:1000".parse().unwrap(), None, now),
        sim.connect(viewer(2), "10.0.1.2:1000".parse().unwrap(), None, now),
    ];
    sim.add_track(1, Source::Microphone, Codec::Opus, now);
    // The first viewer is told once the speaker has held the floor.
    let mut told = Vec::new();
    let deadline = now + Duration::from_secs(10);
    while now < deadline {
        now += STEP;
        sim.exchange(&mut peers, now);
        told.extend(sim.take_messages(1));
        if active_speakers(&told).first().is_some_and(Option::is_some) {
            break;
        }
    }
    let floor = active_speakers(&told)
        .first()
        .cloned()
        .flatten()
        .expect("the room has an active speaker");

    // A second viewer joins; nothing of its handshakes has happened yet.
    let late = sim.connect(viewer(3), "10.0.1.3:1000".parse().unwrap(), None, now);
    assert!(
        late.stats().connected_after_ms.is_none(),
        "its media is not connected yet"
    );
    let msgs = sim.take_messages(2);
    assert_eq!(
        active_speakers(&msgs).first(),
        Some(&Some(floor)),
        "told with its answer: {msgs:?}"
    );
}
