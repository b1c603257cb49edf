//! Forwarding a packet allocates nothing: the router's per-packet path reuses its buffers
//! and shares the payload. Counted with this test binary's allocator, after warm-up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ting_media::{
    Codec, EndpointId, LayerId, Router, RouterConfig, RtpIn, SlotKind, Source, TrackId, TrackInfo,
};

#[path = "../benches/support/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

#[test]
fn forwarding_audio_and_video_to_250_allocates_nothing() {
    let t0 = Instant::now();
    let mut r = Router::new(RouterConfig::default());
    let cam = TrackId::new(EndpointId(1), Source::Camera);
    let mic = TrackId::new(EndpointId(1), Source::Microphone);
    r.add_track(
        cam,
        TrackInfo {
            codec: Codec::Vp8,
            local: true,
            layers: 1,
        },
        t0,
    )
    .unwrap();
    r.add_track(
        mic,
        TrackInfo {
            codec: Codec::Opus,
            local: true,
            layers: 1,
        },
        t0,
    )
    .unwrap();
    for s in 0..250 {
        r.add_subscriber(
            EndpointId(100 + s),
            &[SlotKind::Audio, SlotKind::Camera],
            t0,
        )
        .unwrap();
    }
    while r.poll_output().is_some() {}
    // VP8 with a 15-bit picture id, so the picture-id rewriting is on the path too.
    let key: Arc<[u8]> =
        Arc::from(&[0x90u8, 0x80, 0x80, 0x01, 0x10, 0x00, 0x00, 0x9d, 0x01, 0x2a][..]);
    let mut delta = vec![0x90u8, 0x80, 0x80, 0x01, 0x11];
    delta.resize(1100, 0x10);
    let delta: Arc<[u8]> = Arc::from(delta);
    let audio: Arc<[u8]> = Arc::from(vec![0xfcu8; 80]);
    let mut video = RtpIn {
        track: cam,
        layer: LayerId(0),
        seq: 1,
        timestamp: 0,
        marker: false,
        audio_level: None,
        voice_activity: None,
        payload: key,
    };
    let mut sound = RtpIn {
        track: mic,
        payload: audio,
        audio_level: Some(30),
        ..video.clone()
    };
    // Warm up: the first keyframe opens the slots and sizes the buffers.
    assert_eq!(r.handle_rtp(&video, t0).len(), 250);
    assert_eq!(r.handle_rtp(&sound, t0).len(), 250);
    video.payload = delta;

    let (forwarded, allocations) = counting_alloc::count(|| {
        let mut forwarded = 0;
        for i in 1..=1000u64 {
            let now = t0 + Duration::from_micros(i * 50);
            video.seq += 1;
            video.timestamp += 3000;
            sound.seq += 1;
            sound.timestamp += 960;
            forwarded += r.handle_rtp(&video, now).len();
            forwarded += r.handle_rtp(&sound, now).len();
        }
        forwarded
    });
    assert_eq!(forwarded, 500_000);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations for {forwarded} forwards"
    );
}
