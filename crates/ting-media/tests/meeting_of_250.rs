//! A meeting of 250 in virtual time, the way ting is meant to carry it.
//!
//! 250 people join within five seconds, every one publishing a microphone and a
//! three-layer camera and subscribing like the browser client (3 audio slots, 25 camera
//! slots, 1 screen slot). Half use the speaker view (the active speaker large, eight
//! thumbnails following the most recent speakers), half a 5x5 grid page. People speak in
//! turns. The simulated subscribers check every forwarded packet (see `sim`); this test
//! checks what the room as a whole costs: each subscriber gets what its layout shows and
//! no more, everyone hears the current speakers, and upstream only the layers somebody
//! watches flow.

mod sim;

use sim::{FRAME_MS, Sim, browser_slots};
use ting_media::{EndpointId, LayerId, LayoutSpec, RouterConfig, TileSpec, View};

const PEOPLE: u64 = 250;

fn speaker_view() -> LayoutSpec {
    let mut tiles = vec![TileSpec {
        endpoint: None,
        height: 720,
    }];
    tiles.extend((0..8).map(|_| TileSpec {
        endpoint: None,
        height: 180,
    }));
    LayoutSpec {
        view: View::Speaker,
        tiles,
    }
}

fn grid_page(own: u64) -> LayoutSpec {
    LayoutSpec {
        view: View::Grid,
        tiles: (1..=26)
            .filter(|n| *n != own)
            .take(25)
            .map(|n| TileSpec {
                endpoint: Some(EndpointId(n)),
                height: 170,
            })
            .collect(),
    }
}

#[test]
fn meeting_of_250_in_virtual_time() {
    let mut sim = Sim::new(RouterConfig::default());
    for n in 1..=PEOPLE {
        sim.join(n, 3, &browser_slots(25));
        let layout = if n % 2 == 0 {
            speaker_view()
        } else {
            grid_page(n)
        };
        sim.set_layout(EndpointId(n), Some(layout));
        sim.run(20);
    }
    // Speakers in turns: every two seconds a new one, for twelve seconds.
    let turns = [7u64, 120, 33, 201, 7, 88];
    let mut heard_checks = 0;
    for (i, &who) in turns.iter().enumerate() {
        if i > 0 {
            sim.set_speaking(EndpointId(turns[i - 1]), false);
        }
        sim.set_speaking(EndpointId(who), true);
        sim.run(1800);
        // Everyone else hears the speaker by now, and the speaker is the active speaker.
        assert_eq!(sim.active_speaker, Some(EndpointId(who)), "turn {i}");
        for sub in sim.subs.values().filter(|s| s.id.0 != who) {
            assert!(
                sub.audio_from().contains(&EndpointId(who)),
                "{} does not hear {who}",
                sub.id
            );
            assert!(sub.audio_from().len() <= 3);
        }
        heard_checks += 1;
        sim.run(200);
    }
    assert_eq!(heard_checks, turns.len());
    // Each turn hands the floor over once (every turn's speaker differs from the one
    // before): a few more changes than turns would be the floor flapping between the
    // speaker going and the one coming, or to someone who is not speaking.
    let turns_changes = sim.speaker_changes;
    assert!(
        turns_changes <= turns.len() as u64 + 1,
        "the active speaker changed {turns_changes} times in {} turns",
        turns.len()
    );
    let speaker = EndpointId(*turns.last().unwrap());

    let window_ms = 1000;
    let sent_before: u64 = sim
        .pubs
        .values()
        .map(|p| p.sent(0) + p.sent(1) + p.sent(2))
        .sum();
    let before: Vec<(EndpointId, Vec<u64>)> = sim
        .subs
        .values()
        .map(|s| (s.id, s.slots.iter().map(|l| l.packets).collect()))
        .collect();
    sim.run(window_ms);
    assert_eq!(
        sim.speaker_changes, turns_changes,
        "the active speaker changed while {speaker} kept speaking"
    );

    // Every subscriber receives what its layout shows, bounded by it.
    for (id, packets_before) in &before {
        let sub = &sim.subs[id];
        let flowing = sub
            .slots
            .iter()
            .zip(packets_before)
            .filter(|(s, b)| s.packets > **b)
            .count();
        let cameras = sub.slots[3..28]
            .iter()
            .filter(|s| s.track.is_some())
            .count();
        if id.0 % 2 == 0 {
            // Speaker view: 9 tiles; the speaker large, at the top layer.
            assert_eq!(cameras, 9, "{id}");
            if *id != speaker {
                let big = sub.camera_slot(speaker).expect("the speaker is shown");
                assert!(
                    big.per_layer[2] > 0,
                    "{id} sees the speaker at {:?}",
                    big.per_layer
                );
            }
            // The thumbnails follow the most recent speakers: all five who spoke fit.
            for who in turns.iter().filter(|w| **w != id.0) {
                assert!(
                    sub.camera_slot(EndpointId(*who)).is_some(),
                    "{id} has no tile for {who}, who spoke recently"
                );
            }
            assert!(flowing <= 3 + 9, "{id}: {flowing} streams");
        } else {
            // Grid: 25 tiles at the lowest layer.
            assert_eq!(cameras, 25, "{id}");
            for s in sub.slots[3..28].iter().filter(|s| s.track.is_some()) {
                assert_eq!(
                    s.per_layer[1] + s.per_layer[2],
                    0,
                    "{id}: thumbnails are small"
                );
            }
            assert!(flowing <= 3 + 25, "{id}: {flowing} streams");
        }
    }

    // Upstream: only what somebody watches flows. The grid pages show the first 26
    // people small; speaker views show recent speakers; the speaker's top layer flows.
    let sending: Vec<(EndpointId, u8)> = sim
        .pubs
        .values()
        .map(|p| (p.id, sim.sending(p.id).0))
        .collect();
    let shown: std::collections::BTreeSet<EndpointId> = sim
        .subs
        .values()
        .flat_map(|s| {
            s.slots[3..28]
                .iter()
                .filter_map(|l| l.track.map(|t| t.endpoint))
        })
        .collect();
    let flowing: std::collections::BTreeSet<EndpointId> = sending
        .iter()
        .filter(|(_, s)| *s != 0)
        .map(|(id, _)| *id)
        .collect();
    assert!(shown.is_subset(&flowing), "a shown camera is paused");
    // What is no longer shown stops after the pause delay: at most the last speaker's
    // thumbnails linger.
    assert!(
        flowing.len() <= shown.len() + 2,
        "{} cameras flow, {} are shown",
        flowing.len(),
        shown.len()
    );
    assert!(shown.len() < 50, "{} cameras shown", shown.len());
    let top = sending.iter().filter(|(_, s)| s & 0b100 != 0).count();
    assert!(top <= 2, "{top} top layers flow");
    assert!(sim.sending(speaker).contains(LayerId(2)));
    // Compared with everyone sending all three layers (per frame 1 + 2 + 6 packets), in
    // the last window: a tenth or less.
    let sent: u64 = sim
        .pubs
        .values()
        .map(|p| p.sent(0) + p.sent(1) + p.sent(2))
        .sum::<u64>()
        - sent_before;
    let all_layers = PEOPLE * (window_ms / FRAME_MS) * 9;
    assert!(
        sent * 10 < all_layers,
        "{sent} video packets upstream in {window_ms} ms, {all_layers} with every layer flowing"
    );

    // Keyframe requests stay few: merged per track and layer.
    let worst = sim.keyframe_requests.values().max().copied().unwrap_or(0);
    let seconds = sim.ms / 1000;
    assert!(
        worst <= seconds * 4,
        "a layer was asked for {worst} keyframes in {seconds} s"
    );
}
