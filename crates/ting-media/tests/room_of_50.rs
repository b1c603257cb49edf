//! A meeting of 50 in virtual time: people join one by one, talk in turns, some leave.
//!
//! Every participant publishes a microphone (Opus-like packets every 20 ms with an audio
//! level) and a camera (30 frames/s, 3 packets a frame, a keyframe when asked), and
//! subscribes with 3 audio slots, 9 camera slots and 1 screen slot. Publishers answer
//! keyframe requests at their next frame, as browsers do. The test checks what each
//! subscriber receives, per slot: nothing of its own, continuous sequence numbers,
//! timestamps that only move forward, video only from a keyframe on, and the current
//! speakers in its audio slots; and that keyframe requests stay few.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ting_media::{
    Codec, EndpointId, LayerId, Router, RouterConfig, RouterOutput, RtpIn, SlotId, SlotKind,
    Source, TrackId, TrackInfo,
};

const PEOPLE: u64 = 50;
const AUDIO_SLOTS: usize = 3;
const CAMERA_SLOTS: usize = 9;

struct Publisher {
    id: EndpointId,
    audio_seq: u64,
    video_seq: u64,
    frame: u32,
    keyframe_due: bool,
    left: bool,
}

#[derive(Default)]
struct SlotLog {
    last_seq: Option<u64>,
    last_ts: Option<u32>,
    packets: u64,
    track: Option<TrackId>,
    /// Video: the first packet after the slot (re)started must begin a keyframe.
    expect_keyframe: bool,
}

fn slots() -> Vec<SlotKind> {
    let mut s = vec![SlotKind::Audio; AUDIO_SLOTS];
    s.extend(std::iter::repeat_n(SlotKind::Camera, CAMERA_SLOTS));
    s.push(SlotKind::Screen);
    s
}

/// Applies what the router asked for: publishers answer keyframe requests at their next
/// frame; slot changes are recorded for checking what arrives in each slot.
fn drain(
    router: &mut Router,
    pubs: &mut [Publisher],
    logs: &mut HashMap<(EndpointId, SlotId), SlotLog>,
    keyframe_requests: &mut HashMap<TrackId, u32>,
) {
    while let Some(out) = router.poll_output() {
        match out {
            RouterOutput::RequestKeyframe {
                track,
                layer,
                local,
            } => {
                assert!(local);
                assert_eq!(layer, LayerId(0));
                *keyframe_requests.entry(track).or_default() += 1;
                if let Some(p) = pubs.iter_mut().find(|p| p.id == track.endpoint) {
                    p.keyframe_due = true;
                }
            }
            RouterOutput::SlotChanged {
                subscriber,
                slot,
                track,
            } => {
                let log = logs.entry((subscriber, slot)).or_default();
                log.track = track;
                log.expect_keyframe = track.is_some_and(|t| t.source == Source::Camera);
            }
            RouterOutput::SpeakingChanged { .. } => {}
        }
    }
}

#[test]
fn meeting_of_50_in_virtual_time() {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(50);
    let mut router = Router::new(RouterConfig::default());
    let mut pubs: Vec<Publisher> = Vec::new();
    let mut logs: HashMap<(EndpointId, SlotId), SlotLog> = HashMap::new();
    let mut keyframe_requests: HashMap<TrackId, u32> = HashMap::new();
    let mut speakers: Vec<EndpointId> = Vec::new();
    let mut checked_speaker_rounds = 0;
    let key_payload: Arc<[u8]> = Arc::from(&[0x10u8, 0x00, 0x9d, 0x01, 0x2a][..]);
    let delta_payload: Arc<[u8]> = Arc::from(&[0x10u8, 0x01, 0x00, 0x00][..]);
    let cont_payload: Arc<[u8]> = Arc::from(&[0x00u8, 0x00, 0x00][..]);
    let audio_payload: Arc<[u8]> = Arc::from(&[0xfcu8; 80][..]);

    let end_ms = 12_000u64;
    for ms in 0..end_ms {
        let now = t0 + Duration::from_millis(ms);

        // One joins every 100 ms; five leave at 8 s.
        if ms % 100 == 0 && (ms / 100) < PEOPLE {
            let id = EndpointId(ms / 100 + 1);
            let audio = TrackInfo {
                codec: Codec::Opus,
                local: true,
            };
            let video = TrackInfo {
                codec: Codec::Vp8,
                local: true,
            };
            router
                .add_track(TrackId::new(id, Source::Microphone), audio, now)
                .unwrap();
            router
                .add_track(TrackId::new(id, Source::Camera), video, now)
                .unwrap();
            router.add_subscriber(id, &slots(), now).unwrap();
            pubs.push(Publisher {
                id,
                audio_seq: 1000 * id.0,
                video_seq: 70_000 + 1000 * id.0,
                frame: 0,
                keyframe_due: true,
                left: false,
            });
        }
        if ms == 8_000 {
            for p in pubs.iter_mut().filter(|p| p.id.0 % 10 == 3) {
                p.left = true;
                router.remove_track(TrackId::new(p.id, Source::Microphone), now);
                router.remove_track(TrackId::new(p.id, Source::Camera), now);
                router.remove_subscriber(p.id);
                logs.retain(|(sub, _), _| *sub != p.id);
            }
        }
        drain(&mut router, &mut pubs, &mut logs, &mut keyframe_requests);

        // Every 2 s two new people speak.
        if ms % 2_000 == 0 {
            let present: Vec<EndpointId> = pubs.iter().filter(|p| !p.left).map(|p| p.id).collect();
            speakers = (0..2)
                .map(|_| present[rng.random_range(0..present.len())])
                .collect();
        }

        let mut packets: Vec<(RtpIn, bool)> = Vec::new();
        for p in pubs.iter_mut().filter(|p| !p.left) {
            if ms % 20 == p.id.0 % 20 {
                p.audio_seq += 1;
                let level = if speakers.contains(&p.id) { 25 } else { 110 };
                packets.push((
                    RtpIn {
                        track: TrackId::new(p.id, Source::Microphone),
                        layer: LayerId(0),
                        seq: p.audio_seq,
                        timestamp: (p.audio_seq as u32).wrapping_mul(960),
                        marker: false,
                        audio_level: Some(level),
                        voice_activity: None,
                        payload: audio_payload.clone(),
                    },
                    false,
                ));
            }
            if ms % 33 == p.id.0 % 33 {
                p.frame += 1;
                let key = std::mem::take(&mut p.keyframe_due) || p.frame % 300 == 0;
                for i in 0..3 {
                    p.video_seq += 1;
                    let payload = match (i, key) {
                        (0, true) => key_payload.clone(),
                        (0, false) => delta_payload.clone(),
                        _ => cont_payload.clone(),
                    };
                    packets.push((
                        RtpIn {
                            track: TrackId::new(p.id, Source::Camera),
                            layer: LayerId(0),
                            seq: p.video_seq,
                            timestamp: p.frame.wrapping_mul(3000),
                            marker: i == 2,
                            audio_level: None,
                            voice_activity: None,
                            payload,
                        },
                        i == 0 && key,
                    ));
                }
            }
        }

        for (pkt, is_key) in &packets {
            let forwards = router.handle_rtp(pkt, now).to_vec();
            for f in forwards {
                assert_ne!(f.subscriber, pkt.track.endpoint, "own track sent back");
                let log = logs.entry((f.subscriber, f.slot)).or_default();
                assert_eq!(
                    log.track,
                    Some(pkt.track),
                    "slot {:?} of {} got {} but was told it carries {:?}",
                    f.slot,
                    f.subscriber,
                    pkt.track,
                    log.track
                );
                if let Some(last) = log.last_seq {
                    assert_eq!(
                        f.seq,
                        last + 1,
                        "gap or repeat on {:?}",
                        (f.subscriber, f.slot)
                    );
                }
                if let Some(last) = log.last_ts {
                    assert!(
                        f.timestamp.wrapping_sub(last) < u32::MAX / 2,
                        "timestamp went back on {:?}",
                        (f.subscriber, f.slot)
                    );
                }
                if log.expect_keyframe {
                    assert!(*is_key, "video slot started without a keyframe");
                    log.expect_keyframe = false;
                }
                log.last_seq = Some(f.seq);
                log.last_ts = Some(f.timestamp);
                log.packets += 1;
            }
        }

        if router.poll_timeout().is_some_and(|t| t <= now) {
            router.handle_timeout(now);
        }
        drain(&mut router, &mut pubs, &mut logs, &mut keyframe_requests);

        // Shortly before speakers change, everyone hears the current speakers.
        if ms % 2_000 == 1_900 && ms > 5_000 {
            checked_speaker_rounds += 1;
            for p in pubs.iter().filter(|p| !p.left) {
                let heard: Vec<EndpointId> = (0..AUDIO_SLOTS as u16)
                    .filter_map(|s| router.slot_track(p.id, SlotId(s)))
                    .map(|t| t.endpoint)
                    .collect();
                for s in speakers.iter().filter(|s| **s != p.id) {
                    assert!(heard.contains(s), "{} does not hear speaker {s}", p.id);
                }
            }
        }
    }

    assert!(checked_speaker_rounds >= 3);
    let present: Vec<&Publisher> = pubs.iter().filter(|p| !p.left).collect();
    assert_eq!(present.len(), 45);
    for p in &present {
        // Every camera slot is filled (44 others, 9 slots) and carried video.
        for s in AUDIO_SLOTS..AUDIO_SLOTS + CAMERA_SLOTS {
            let log = &logs[&(p.id, SlotId(s as u16))];
            assert!(log.track.is_some(), "{} slot {s} empty", p.id);
            assert!(
                log.packets > 30,
                "{} slot {s} got {} packets",
                p.id,
                log.packets
            );
        }
    }
    // 49 others joined while each camera was published, yet few requests reached it:
    // at most one per 250 ms of the meeting, far fewer than one per joiner and PLI.
    for (track, n) in &keyframe_requests {
        assert!(*n <= 48, "{track} was asked for {n} keyframes");
    }
    let total: u32 = keyframe_requests.values().sum();
    assert!(total > 0);
}
