//! Layers per viewer, in virtual time: what a tile shows decides the layer, the estimate
//! caps it, switches happen only at keyframes, and what nobody watches is paused at the
//! sender and comes back when someone looks. The simulated subscribers in `sim` check
//! every forwarded packet for continuity (sequence numbers, timestamps, VP8 picture ids,
//! TL0PICIDX and KEYIDX).

mod sim;

use std::collections::BTreeSet;

use sim::{Sim, browser_slots};
use ting_media::{
    EndpointId, LayerId, LayerSet, LayoutSpec, RouterConfig, SlotKind, TileSpec, View,
};

fn e(n: u64) -> EndpointId {
    EndpointId(n)
}

fn show(tiles: &[(Option<u64>, u16)], view: View) -> LayoutSpec {
    LayoutSpec {
        view,
        tiles: tiles
            .iter()
            .map(|&(who, height)| TileSpec {
                endpoint: who.map(EndpointId),
                height,
            })
            .collect(),
    }
}

/// One publisher with three layers (and three temporal layers with `temporal`), one viewer
/// showing it large (720 px, speaker view) and one showing it small (180 px, grid).
fn large_and_small(temporal: bool) -> (Sim, EndpointId, EndpointId, EndpointId) {
    large_and_small_with(RouterConfig::default(), temporal)
}

/// [`large_and_small`] with the router set up as `config` says.
fn large_and_small_with(
    config: RouterConfig,
    temporal: bool,
) -> (Sim, EndpointId, EndpointId, EndpointId) {
    let mut sim = Sim::new(config);
    sim.temporal = temporal;
    let publisher = sim.join(1, 3, &[]);
    let large = sim.join(2, 3, &browser_slots(4));
    let small = sim.join(3, 3, &browser_slots(4));
    sim.set_layout(large, Some(show(&[(Some(1), 720)], View::Speaker)));
    sim.set_layout(small, Some(show(&[(Some(1), 180)], View::Grid)));
    (sim, publisher, large, small)
}

#[test]
fn the_same_camera_large_and_small_arrives_in_different_layers() {
    let (mut sim, publisher, large, small) = large_and_small(false);
    sim.run(4000);
    let big = sim.subs[&large].camera_slot(publisher).unwrap().clone();
    let little = sim.subs[&small].camera_slot(publisher).unwrap().clone();
    assert!(big.per_layer[2] > 100 && big.per_layer[0] == 0, "{big:?}");
    assert!(
        little.per_layer[0] > 20 && little.per_layer[2] == 0,
        "{little:?}"
    );
    // Nobody shows the middle layer: it is paused at the sender, the others flow.
    assert_eq!(sim.sending(publisher), LayerSet(0b101));

    // The small viewer enlarges the tile: it moves up, at a keyframe, without a gap.
    sim.set_layout(small, Some(show(&[(Some(1), 360)], View::Grid)));
    sim.run(1500);
    let little = sim.subs[&small].camera_slot(publisher).unwrap().clone();
    assert!(little.per_layer[1] > 10, "{little:?}");
    assert_eq!(little.layer_switches, 1);
    assert!(
        sim.sending(publisher).contains(LayerId(1)),
        "the middle layer resumed"
    );
}

#[test]
fn a_falling_estimate_keeps_audio_and_the_speaker_and_drops_thumbnails_first() {
    let mut sim = Sim::new(RouterConfig::default());
    for n in 1..=10 {
        sim.join(n, 3, &[]);
    }
    let viewer = sim.join(100, 3, &browser_slots(10));
    // Speaker 1 large, nine thumbnails.
    let mut tiles = vec![(Some(1), 720)];
    tiles.extend((2..=10).map(|n| (Some(n), 180)));
    sim.set_layout(viewer, Some(show(&tiles, View::Speaker)));
    sim.set_speaking(e(1), true);
    sim.run(2000);
    // The slot of each tile, in layout order.
    let slots: Vec<u16> = (1..=10)
        .map(|n| {
            sim.subs[&viewer]
                .camera_slot_index(e(n))
                .expect("every tile has a slot")
        })
        .collect();
    let target = |sim: &Sim, tile: usize| sim.layers_of(viewer, slots[tile]).1;
    let full = |sim: &Sim| -> (Option<LayerId>, usize) {
        let thumbs = (1..10).filter(|i| target(sim, *i).is_some()).count();
        (target(sim, 0), thumbs)
    };
    assert_eq!(full(&sim), (Some(LayerId(2)), 9));

    // The estimate falls step by step; after each step, audio still flows and the speaker
    // keeps the best layer the rest allows.
    let mut last_thumbs = 9;
    for (bps, want_speaker) in [
        (2_600_000, Some(2)),
        (2_000_000, Some(2)),
        (1_400_000, Some(1)),
        (700_000, Some(1)),
        (350_000, Some(0)),
    ] {
        sim.set_estimate(viewer, Some(bps));
        let audio_before: u64 = sim.subs[&viewer].slots[..3].iter().map(|s| s.packets).sum();
        sim.run(1500);
        let audio_after: u64 = sim.subs[&viewer].slots[..3].iter().map(|s| s.packets).sum();
        assert!(
            audio_after - audio_before >= 3 * 70,
            "audio starved at {bps}"
        );
        let (speaker, thumbs) = full(&sim);
        assert_eq!(speaker, want_speaker.map(LayerId), "speaker at {bps}");
        assert!(
            thumbs <= last_thumbs,
            "thumbnails came back while the estimate fell"
        );
        last_thumbs = thumbs;
        // Paused thumbnails are the last ones of the layout.
        for (i, &slot) in slots.iter().enumerate().skip(1) {
            if target(&sim, i).is_none() {
                assert!(
                    (i + 1..10).all(|j| target(&sim, j).is_none()),
                    "thumbnail {i} paused before a later one at {bps}"
                );
                assert!(sim.slot(viewer, slot).paused, "the viewer was told");
            }
        }
    }
    assert_eq!(last_thumbs, 0);
    // Bandwidth comes back: after the hold, thumbnails and then the speaker recover.
    sim.set_estimate(viewer, Some(5_000_000));
    sim.run(8000);
    assert_eq!(full(&sim), (Some(LayerId(2)), 9));
    // The router asked the estimator to probe for what the layout would use: the
    // speaker's top layer, nine bottom layers and the audio, as measured.
    let cam = |n: u64, l: u8| {
        sim.router
            .layer_bps(
                ting_media::TrackId::new(e(n), ting_media::Source::Camera),
                LayerId(l),
            )
            .unwrap()
    };
    let audio: u64 = sim.subs[&viewer]
        .audio_from()
        .iter()
        .map(|who| {
            sim.router
                .layer_bps(
                    ting_media::TrackId::new(*who, ting_media::Source::Microphone),
                    LayerId(0),
                )
                .unwrap()
        })
        .sum();
    let want = audio + cam(1, 2) + (2..=10).map(|n| cam(n, 0)).sum::<u64>();
    let desired = sim.subs[&viewer].desired.unwrap();
    assert!(
        desired.abs_diff(want) * 10 <= want,
        "asked for {desired}, the layout uses {want}"
    );
}

#[test]
fn paused_layers_resume_when_a_viewer_appears() {
    let config = RouterConfig::default();
    let pause_after = config.pause_after;
    let mut sim = Sim::new(config);
    let publisher = sim.join(1, 3, &[]);
    let viewer = sim.join(2, 3, &browser_slots(4));
    sim.set_layout(viewer, Some(show(&[(Some(1), 180)], View::Grid)));
    sim.run(500);
    assert_eq!(
        sim.sending(publisher),
        LayerSet(0b111),
        "new publishers send everything"
    );
    sim.run(pause_after.as_millis() as u64 + 500);
    assert_eq!(
        sim.sending(publisher),
        LayerSet(0b001),
        "unwatched layers paused"
    );
    let top_before = sim.pubs[&publisher].sent(2);
    sim.run(1000);
    assert_eq!(
        sim.pubs[&publisher].sent(2),
        top_before,
        "paused means nothing sent"
    );

    // Someone shows the publisher large.
    let late = sim.join(3, 3, &browser_slots(4));
    sim.set_layout(late, Some(show(&[(Some(1), 720)], View::Speaker)));
    sim.run(1000);
    assert!(sim.sending(publisher).contains(LayerId(2)));
    let got = sim.subs[&late].camera_slot(publisher).unwrap().clone();
    assert!(got.per_layer[2] > 20, "{got:?}");
    // Nobody watches the publisher at all: everything pauses.
    sim.set_layout(viewer, Some(show(&[], View::Grid)));
    sim.set_layout(late, Some(show(&[], View::Grid)));
    sim.run(pause_after.as_millis() as u64 + 500);
    assert_eq!(sim.sending(publisher), LayerSet::EMPTY);
}

#[test]
fn a_speaker_tile_follows_the_active_speaker() {
    let mut sim = Sim::new(RouterConfig::default());
    for n in 1..=6 {
        sim.join(n, 3, &browser_slots(3));
    }
    let viewer = e(6);
    sim.set_layout(
        viewer,
        Some(show(&[(None, 720), (Some(5), 180)], View::Speaker)),
    );
    sim.set_speaking(e(2), true);
    sim.run(3000);
    assert_eq!(sim.active_speaker, Some(e(2)));
    let slot = sim.subs[&viewer].camera_slot(e(2)).unwrap().clone();
    assert!(slot.per_layer[2] > 50, "{slot:?}");
    // The floor passes to 3.
    sim.set_speaking(e(2), false);
    sim.set_speaking(e(3), true);
    sim.run(4000);
    assert_eq!(sim.active_speaker, Some(e(3)));
    let slot = sim.subs[&viewer].camera_slot(e(3)).unwrap().clone();
    assert!(slot.per_layer[2] > 50, "{slot:?}");
    assert!(
        sim.subs[&viewer].camera_slot(e(5)).is_some(),
        "the pinned tile stays"
    );
    // A viewer never gets its own camera, even as the active speaker.
    sim.set_speaking(e(3), false);
    sim.set_speaking(viewer, true);
    sim.run(4000);
    assert_eq!(sim.active_speaker, Some(viewer));
    assert!(sim.subs[&viewer].camera_slot(viewer).is_none());
    assert!(
        sim.subs[&viewer].camera_slot(e(3)).is_some(),
        "the speaker tile shows the previous speaker"
    );
}

#[test]
fn without_a_layout_thumbnails_follow_the_most_recent_speakers_not_the_join_order() {
    let mut sim = Sim::new(RouterConfig::default());
    // The viewer joins first and reports no layout: its four camera slots get the
    // server's default, the active speaker large and three thumbnails. Eleven people join
    // after it, in order.
    let viewer = sim.join(1, 3, &browser_slots(4));
    for n in 2..=12 {
        sim.join(n, 3, &[]);
        sim.run(20);
    }
    sim.run(1000);
    // Who the viewer's camera slots carry, and who is in the large one (the slot that
    // gets the top layer: the large tile is 720 px, thumbnails 180).
    let shown = |sim: &Sim| -> (BTreeSet<u64>, Vec<u64>) {
        let sub = &sim.subs[&viewer];
        let mut all = BTreeSet::new();
        let mut large = Vec::new();
        for (i, (slot, kind)) in sub.slots.iter().zip(&sub.kinds).enumerate() {
            if let (SlotKind::Camera, Some(track)) = (kind, slot.track) {
                all.insert(track.endpoint.0);
                if sim.layers_of(viewer, i as u16).1 == Some(LayerId(2)) {
                    large.push(track.endpoint.0);
                }
            }
        }
        (all, large)
    };
    // Nobody has spoken: the newest cameras, not the first to join.
    assert_eq!(
        shown(&sim).0,
        BTreeSet::from([9, 10, 11, 12]),
        "before anyone speaks"
    );

    // People from the middle of the join order speak in turn. Neither the first joiners
    // (2, 3, 4) nor the newest cameras (9 to 12) are what the viewer should end up with.
    let turns = [7u64, 5, 10, 6, 8];
    for (i, &who) in turns.iter().enumerate() {
        if i > 0 {
            sim.set_speaking(e(turns[i - 1]), false);
        }
        sim.set_speaking(e(who), true);
        sim.run(3000);
        assert_eq!(sim.active_speaker, Some(e(who)), "turn {i}");
        let (all, large) = shown(&sim);
        assert_eq!(
            large,
            vec![who],
            "turn {i}: the large tile shows {large:?}, not the speaker {who}"
        );
        // The speakers before, most recent first, take the thumbnails; while there have
        // been fewer than three, the newest cameras fill the rest.
        let recent: Vec<u64> = turns[..i].iter().rev().take(3).copied().collect();
        for r in &recent {
            assert!(
                all.contains(r),
                "turn {i}: recent speaker {r} has no thumbnail, the viewer sees {all:?}"
            );
        }
        assert_eq!(all.len(), 4, "turn {i}: {all:?}");
        assert!(
            !all.iter().any(|n| (2..=4).contains(n)),
            "turn {i}: a first joiner, who never spoke, has a tile: {all:?}"
        );
    }
    // The last four speakers, and only them: the first speaker (7) has been pushed out by
    // more recent ones, the first joiners never came in.
    let (all, large) = shown(&sim);
    assert_eq!(
        all,
        BTreeSet::from([5, 6, 8, 10]),
        "the viewer sees {all:?} after the turns {turns:?}"
    );
    assert_eq!(large, vec![8]);
    // And the tiles carry media: the speaker at the top layer, the thumbnails at the
    // bottom one.
    let before: Vec<[u64; 3]> = [8, 10, 6, 5]
        .iter()
        .map(|&n| sim.subs[&viewer].camera_slot(e(n)).unwrap().per_layer)
        .collect();
    sim.run(1000);
    for (&n, was) in [8u64, 10, 6, 5].iter().zip(&before) {
        let now = sim.subs[&viewer].camera_slot(e(n)).unwrap().per_layer;
        let layer = if n == 8 { 2 } else { 0 };
        assert!(
            now[layer] > was[layer] + 10,
            "{n}'s tile got {was:?} -> {now:?} packets per layer in a second"
        );
    }
}

#[test]
fn screen_shares_come_first_and_largest() {
    let mut sim = Sim::new(RouterConfig::default());
    let viewer = sim.join(1, 3, &[SlotKind::Audio, SlotKind::Camera, SlotKind::Screen]);
    sim.join(2, 3, &[]);
    // 2 shares a single-layer screen.
    sim.router
        .add_track(
            ting_media::TrackId::new(e(2), ting_media::Source::Screen),
            ting_media::TrackInfo {
                codec: ting_media::Codec::Vp8,
                local: true,
                layers: 1,
            },
            sim.now,
        )
        .unwrap();
    sim.drain();
    assert_eq!(
        sim.router.slot_track(viewer, ting_media::SlotId(2)),
        Some(ting_media::TrackId::new(e(2), ting_media::Source::Screen))
    );
    // With room for the screen (nominally 1.5 M) and not the camera's top layer, the
    // screen is served first.
    sim.set_estimate(viewer, Some(1_900_000));
    let (_, screen) = sim.layers_of(viewer, 2);
    let (_, camera) = sim.layers_of(viewer, 1);
    assert_eq!(screen, Some(LayerId(0)));
    assert!(camera.is_some_and(|l| l < LayerId(2)), "{camera:?}");
}

#[test]
fn a_camera_whose_network_comes_back_is_shown_again_at_once() {
    let mut sim = Sim::new(RouterConfig::default());
    let publisher = sim.join(1, 1, &[]);
    let viewer = sim.join(2, 3, &browser_slots(4));
    sim.set_layout(viewer, Some(show(&[(Some(1), 360)], View::Grid)));
    sim.run(2000);
    assert!(sim.subs[&viewer].camera_slot(publisher).unwrap().packets > 20);

    // Its network is gone long enough for the router to give up on the layer.
    sim.pubs.get_mut(&publisher).unwrap().silent = true;
    sim.run(11_000);
    let before = sim.subs[&viewer]
        .camera_slot(publisher)
        .map_or(0, |s| s.packets);
    sim.pubs.get_mut(&publisher).unwrap().silent = false;
    let now = sim.now;
    sim.router.publisher_back(publisher, now);
    sim.drain();
    // Back: a keyframe is asked for and the camera shows within a second, not when the
    // router's retry of a failed layer comes round.
    sim.run(1000);
    let after = sim.subs[&viewer]
        .camera_slot(publisher)
        .map_or(0, |s| s.packets);
    assert!(after > before + 5, "{before} -> {after}");
}

#[test]
fn without_a_screen_slot_the_screen_share_takes_the_speaker_tile() {
    let mut sim = Sim::new(RouterConfig::default());
    // A viewer with one audio and one camera slot, as a WHEP viewer has.
    let viewer = sim.join(1, 3, &[SlotKind::Audio, SlotKind::Camera]);
    let presenter = sim.join(2, 3, &[]);
    sim.run(1000);
    let camera = ting_media::TrackId::new(presenter, ting_media::Source::Camera);
    let screen = ting_media::TrackId::new(presenter, ting_media::Source::Screen);
    assert_eq!(
        sim.router.slot_track(viewer, ting_media::SlotId(1)),
        Some(camera)
    );
    sim.router
        .add_track(
            screen,
            ting_media::TrackInfo {
                codec: ting_media::Codec::Vp8,
                local: true,
                layers: 1,
            },
            sim.now,
        )
        .unwrap();
    sim.drain();
    assert_eq!(
        sim.router.slot_track(viewer, ting_media::SlotId(1)),
        Some(screen),
        "the share is shown while there is one"
    );
    let now = sim.now;
    sim.router.remove_track(screen, now);
    sim.drain();
    sim.run(500);
    assert_eq!(
        sim.router.slot_track(viewer, ting_media::SlotId(1)),
        Some(camera),
        "and the speaker again after it"
    );
    // A browser, with its screen slot, keeps the speaker in its camera slot.
    let browser = sim.join(3, 3, &[SlotKind::Audio, SlotKind::Camera, SlotKind::Screen]);
    sim.router
        .add_track(
            screen,
            ting_media::TrackInfo {
                codec: ting_media::Codec::Vp8,
                local: true,
                layers: 1,
            },
            sim.now,
        )
        .unwrap();
    sim.drain();
    assert_eq!(
        sim.router.slot_track(browser, ting_media::SlotId(1)),
        Some(camera)
    );
    assert_eq!(
        sim.router.slot_track(browser, ting_media::SlotId(2)),
        Some(screen)
    );
}

/// Where frames of temporal layer `tid` return among `frames` (tid, sync, keyframe): the
/// first of them must need only what the receiver has, a layer-sync frame or a keyframe.
fn comes_back_at_sync(frames: &[(u8, bool, bool)], tid: u8) -> usize {
    let first = frames
        .iter()
        .position(|f| f.0 == tid)
        .unwrap_or_else(|| panic!("layer-{tid} frames come back: {frames:?}"));
    assert!(frames[first].1 || frames[first].2, "{:?}", frames[first]);
    first
}

/// Frames received on a slot, by temporal layer.
fn frames_by_tid(log: &sim::SlotLog) -> [usize; 3] {
    let mut n = [0; 3];
    for &(tid, _, _) in &log.frames {
        n[usize::from(tid.min(2))] += 1;
    }
    n
}

#[test]
fn thumbnails_get_half_the_frame_rate_and_large_tiles_all_of_it() {
    let (mut sim, publisher, large, small) = large_and_small(true);
    // The sim checks every forwarded packet: sequence numbers and picture ids continue by
    // one across the frames left out.
    sim.run(4000);
    let big = frames_by_tid(sim.subs[&large].camera_slot(publisher).unwrap());
    let little = frames_by_tid(sim.subs[&small].camera_slot(publisher).unwrap());
    assert!(big[0] > 10 && big[1] > 10 && big[2] > 20, "{big:?}");
    assert!(little[0] > 10 && little[1] > 10, "{little:?}");
    assert_eq!(little[2], 0, "a thumbnail gets no layer-2 frames");
    let (b, l) = (big.iter().sum::<usize>(), little.iter().sum::<usize>());
    assert!(l * 2 <= b + 4 && l * 2 + 4 >= b, "{l} frames against {b}");

    // A mid-sized tile takes the middle layer at half the rate; grown a little, the same
    // layer at the full rate: the layer-2 frames come back at a sync frame, which needs
    // only what the viewer has, without waiting for a keyframe.
    sim.set_layout(small, Some(show(&[(Some(1), 300)], View::Grid)));
    sim.run(1500);
    let log = sim.subs[&small].camera_slot(publisher).unwrap();
    assert_eq!(log.last_layer, Some(1));
    let mark = log.frames.len();
    let switches = log.layer_switches;
    sim.set_layout(small, Some(show(&[(Some(1), 360)], View::Grid)));
    sim.run(1500);
    let log = sim.subs[&small].camera_slot(publisher).unwrap();
    assert_eq!(log.layer_switches, switches, "no spatial switch");
    let after = &log.frames[mark..];
    let first = comes_back_at_sync(after, 2);
    assert!(after[first..].iter().filter(|f| f.0 == 2).count() > 8);
    assert!(
        !after[..first].iter().any(|f| f.2),
        "no keyframe was needed: {after:?}"
    );
}

#[test]
fn thumbnails_set_to_the_base_temporal_layer_get_a_quarter_of_the_frames() {
    // `media.thumbnail_temporal_layers = 1`: thumbnails get layer 0 only, the large tile
    // is untouched. The sim checks that sequence numbers and picture ids continue by one
    // across the three frames in four left out.
    let config = RouterConfig {
        thumbnail_temporal_layer: 0,
        ..RouterConfig::default()
    };
    let (mut sim, publisher, large, small) = large_and_small_with(config, true);
    sim.run(4000);
    let big = frames_by_tid(sim.subs[&large].camera_slot(publisher).unwrap());
    let little = frames_by_tid(sim.subs[&small].camera_slot(publisher).unwrap());
    assert!(big[0] > 10 && big[1] > 10 && big[2] > 20, "{big:?}");
    assert!(little[0] > 10, "{little:?}");
    assert_eq!(
        (little[1], little[2]),
        (0, 0),
        "only layer-0 frames: {little:?}"
    );
    let (b, l) = (big.iter().sum::<usize>(), little.iter().sum::<usize>());
    assert!(l * 4 <= b + 8 && l * 4 + 8 >= b, "{l} frames against {b}");
}

#[test]
fn a_worker_that_sheds_load_takes_thumbnails_to_the_base_layer_and_back() {
    // What a saturated worker does to every room on it (`ting_media::load`): thumbnails
    // go to layer 0 at the next frame, the large tile keeps every frame; when the load
    // has gone, layer 1 comes back at a sync frame, without a keyframe. The sim checks
    // that sequence numbers and picture ids stay continuous throughout.
    let (mut sim, publisher, large, small) = large_and_small(true);
    sim.run(3000);
    let little = sim.subs[&small].camera_slot(publisher).unwrap();
    assert!(frames_by_tid(little)[1] > 10, "{little:?}");
    let (mark_small, mark_large) = (
        little.frames.len(),
        sim.subs[&large]
            .camera_slot(publisher)
            .unwrap()
            .frames
            .len(),
    );
    let keyframes_before = sim.subs[&small]
        .camera_slot(publisher)
        .unwrap()
        .frames
        .iter()
        .filter(|f| f.2)
        .count();

    sim.router.set_thumbnail_temporal_layer(0);
    sim.run(3000);
    let little = sim.subs[&small].camera_slot(publisher).unwrap();
    let shed = &little.frames[mark_small..];
    assert!(shed.len() > 10, "{shed:?}");
    // The frame under way when the cap fell may finish; after it, only layer 0.
    assert!(shed[1..].iter().all(|f| f.0 == 0), "{shed:?}");
    let big = &sim.subs[&large].camera_slot(publisher).unwrap().frames[mark_large..];
    assert!(
        big.iter().filter(|f| f.0 == 2).count() > 20,
        "the large tile is untouched"
    );
    assert!(
        big.len() > shed.len() * 3,
        "{} against {}",
        big.len(),
        shed.len()
    );

    let mark = little.frames.len();
    sim.router.set_thumbnail_temporal_layer(1);
    sim.run(3000);
    let little = sim.subs[&small].camera_slot(publisher).unwrap();
    let back = &little.frames[mark..];
    let first = comes_back_at_sync(back, 1);
    assert!(back[first..].iter().filter(|f| f.0 == 1).count() > 8);
    assert!(back.iter().all(|f| f.0 <= 1), "{back:?}");
    let keyframes = little.frames.iter().filter(|f| f.2).count();
    assert_eq!(
        keyframes, keyframes_before,
        "no keyframe was needed: {back:?}"
    );
}

#[test]
fn a_thumbnail_at_half_the_frame_rate_costs_half_in_the_allocation() {
    // The same room and the same estimate, with cameras that send temporal layers and
    // with cameras that do not: thumbnails that get half the frames cost about half, so
    // about twice as many fit.
    let served = |temporal: bool| {
        let mut sim = Sim::new(RouterConfig::default());
        sim.temporal = temporal;
        for n in 1..=10 {
            sim.join(n, 3, &[]);
        }
        let viewer = sim.join(100, 3, &browser_slots(10));
        let tiles: Vec<_> = (1..=10).map(|n| (Some(n), 180)).collect();
        sim.set_layout(viewer, Some(show(&tiles, View::Grid)));
        sim.set_speaking(e(1), true);
        sim.run(3000);
        sim.set_estimate(viewer, Some(800_000));
        sim.run(3000);
        let slots: Vec<u16> = (1..=10)
            .filter_map(|n| sim.subs[&viewer].camera_slot_index(e(n)))
            .collect();
        assert_eq!(slots.len(), 10);
        let low = sim
            .router
            .layer_bps(
                ting_media::TrackId::new(e(2), ting_media::Source::Camera),
                LayerId(0),
            )
            .unwrap();
        let n = slots
            .iter()
            .filter(|&&s| sim.layers_of(viewer, s).1.is_some())
            .count();
        (n, low)
    };
    let (full, low_full) = served(false);
    let (thin, low_thin) = served(true);
    // The layer's own rate is the same either way: only what a thumbnail takes differs.
    assert!(
        low_full.abs_diff(low_thin) * 10 < low_full,
        "{low_full} vs {low_thin}"
    );
    assert!((2..10).contains(&full), "{full} thumbnails at full rate");
    assert!(
        thin >= full * 3 / 2 && thin > full,
        "{thin} at half rate, {full} at full"
    );
}
