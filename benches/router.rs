//! The forwarding decision in `ting-media`: one publisher's packet through a room's router
//! to 1, 25 and 250 subscribers, and the heap allocations it costs.
//!
//! `cargo bench --bench router` prints criterion's time per packet and, before it, the
//! allocations per forwarded packet counted by this binary's allocator.

// Benchmarks report on stdout, like criterion itself.
#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ting_media::{
    Codec, EndpointId, LayerId, Router, RouterConfig, RtpIn, SlotKind, Source, TrackId, TrackInfo,
};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

const CAMERA: TrackId = TrackId {
    endpoint: EndpointId(1),
    source: Source::Camera,
};

/// A room with one camera and `n` subscribers showing it, past the first keyframe.
fn room(n: u64) -> (Router, RtpIn, Instant) {
    let t0 = Instant::now();
    let mut r = Router::new(RouterConfig::default());
    r.add_track(
        CAMERA,
        TrackInfo {
            codec: Codec::Vp8,
            local: true,
            layers: 1,
        },
        t0,
    )
    .unwrap();
    for s in 0..n {
        r.add_subscriber(
            EndpointId(100 + s),
            &[SlotKind::Audio, SlotKind::Camera],
            t0,
        )
        .unwrap();
    }
    while r.poll_output().is_some() {}
    let mut pkt = RtpIn {
        track: CAMERA,
        layer: LayerId(0),
        seq: 1000,
        timestamp: 0,
        marker: false,
        audio_level: None,
        voice_activity: None,
        payload: Arc::from(&[0x10u8, 0x00, 0x9d, 0x01, 0x2a][..]),
    };
    assert_eq!(
        r.handle_rtp(&pkt, t0).len() as u64,
        n,
        "keyframe opens every slot"
    );
    pkt.payload = Arc::from(vec![0x00u8; 1100]);
    (r, pkt, t0)
}

fn allocations_per_forward(n: u64) -> f64 {
    let (mut r, mut pkt, t0) = room(n);
    let (forwarded, allocs) = counting_alloc::count(|| {
        let mut forwarded = 0u64;
        for i in 0..10_000u64 {
            pkt.seq += 1;
            pkt.timestamp = (i as u32) * 3000;
            forwarded += r.handle_rtp(&pkt, t0 + Duration::from_micros(i)).len() as u64;
        }
        forwarded
    });
    allocs as f64 / forwarded as f64
}

fn decide(c: &mut Criterion) {
    for n in [1u64, 25, 250] {
        println!(
            "router: {:.4} heap allocations per forwarded packet at fan-out {n}",
            allocations_per_forward(n)
        );
    }
    let mut g = c.benchmark_group("router_decision");
    for n in [1u64, 25, 250] {
        let (mut r, mut pkt, t0) = room(n);
        g.throughput(Throughput::Elements(n));
        g.bench_with_input(BenchmarkId::new("fanout", n), &n, |b, _| {
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                pkt.seq += 1;
                pkt.timestamp = pkt.timestamp.wrapping_add(3000);
                let fw = r.handle_rtp(black_box(&pkt), t0 + Duration::from_nanos(i));
                black_box(fw.len())
            });
        });
    }
    g.finish();
}

criterion_group!(benches, decide);
criterion_main!(benches);
