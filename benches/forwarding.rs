//! The full forwarding step through str0m, without syscalls: a publisher's SRTP datagram
//! into a media worker's core (decrypt, demultiplex, route) and out as N encrypted
//! datagrams for N subscribers' connections.
//!
//! The core and the simulated participants are real: real str0m connections, real ICE
//! and DTLS handshakes, over an in-memory network instead of sockets. Only the worker
//! thread's `recvmmsg`/`sendmmsg` are left out; `benches/floor.rs` measures those.
//!
//! `cargo bench --bench forwarding` prints criterion's time per forwarded packet and the
//! heap allocations per forwarded packet on the whole path (str0m's included).

// Benchmarks report on stdout, like criterion itself.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ting_bench::{SimPeer, SimPeerConfig};
use ting_media::{Codec, EndpointId, Source, TrackId};
use ting_server::metrics::WorkerCounters;
use ting_server::outbox::{OutboxRx, outbox};
use ting_server::setup::PeerFactory;
use ting_server::udp::SendResult;
use ting_server::worker::peer::SlotLimits;
use ting_server::worker::{
    ConnectReq, CoreSetup, MediaCore, RoomKey, TrackDesc, WorkerCmd, WorkerEvent, WorkerHandle,
    WorkerId, standalone_cores,
};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

const SERVER: &str = "10.0.0.1:5000";

/// A worker core and its participants on an in-memory network.
struct Room {
    core: MediaCore,
    _handles: Arc<[WorkerHandle]>,
    publisher: SimPeer,
    /// The publisher's own clock: it runs ahead of real time so it can produce packets
    /// faster than 30 frames a second.
    publisher_now: Instant,
    subscribers: Vec<SimPeer>,
    by_addr: HashMap<SocketAddr, usize>,
    _events: tokio::sync::mpsc::UnboundedReceiver<WorkerEvent>,
    _outboxes: Vec<OutboxRx>,
}

impl Room {
    fn new(n: usize) -> Room {
        Room::with_slots(n, 1)
    }

    /// `n` subscribers with one audio slot and `slots` video slots each.
    fn with_slots(n: usize, slots: u16) -> Room {
        let now = Instant::now();
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .expect("certificate");
        let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let factory = PeerFactory {
            cert,
            limits: SlotLimits {
                audio: 3,
                video: 32,
                screen: 1,
            },
            estimate_bandwidth: std::env::var_os("TING_BENCH_BWE").is_some(),
            opus_dtx: true,
        };
        let setup = CoreSetup {
            id: WorkerId(0),
            candidate: SERVER.parse().unwrap(),
            events: events_tx,
            counters: Arc::new(WorkerCounters::default()),
            media_grace: Duration::from_secs(20),
        };
        let (handles, mut cores) = standalone_cores(vec![setup]).expect("core");
        let mut core = cores.remove(0);
        let mut outboxes = Vec::new();
        let mut connect = |core: &mut MediaCore, cfg: SimPeerConfig, addr: SocketAddr| {
            let (mut peer, offer) = SimPeer::new(cfg.clone(), addr, now).expect("peer");
            let (outbox, rx) = outbox(1 << 16);
            outboxes.push(rx);
            let pid = u64::from(cfg.id);
            let accepted = factory
                .accept(
                    pid,
                    RoomKey(1),
                    &offer,
                    SERVER.parse().unwrap(),
                    outbox,
                    now,
                )
                .expect("offer accepted");
            handles[0].command(WorkerCmd::Connect(Box::new(ConnectReq {
                pid,
                room: RoomKey(1),
                accepted: Box::new(accepted),
                tracks: Vec::new(),
                workers: vec![WorkerId(0)],
                layout: None,
            })));
            core.handle_commands(now);
            let sdp = match events.try_recv() {
                Ok(WorkerEvent::Connected { answer, .. }) => answer,
                other => panic!("the core did not accept the offer: {other:?}"),
            };
            peer.accept_answer(&sdp, now).expect("accept");
            peer
        };
        let mut pub_cfg = SimPeerConfig::new(1);
        pub_cfg.video_bps = vec![1_000_000];
        pub_cfg.audio_slots = 0;
        pub_cfg.video_slots = 0;
        pub_cfg.screen_slots = 0;
        pub_cfg.keyframe_interval = Duration::from_secs(3600);
        let publisher = connect(&mut core, pub_cfg, "10.0.1.1:1000".parse().unwrap());
        let mut subscribers = Vec::new();
        let mut by_addr = HashMap::new();
        for i in 0..n {
            let mut cfg = SimPeerConfig::new(1000 + i as u32);
            cfg.audio = false;
            cfg.video_bps = Vec::new();
            cfg.audio_slots = 1;
            cfg.video_slots = slots;
            cfg.screen_slots = 0;
            let addr: SocketAddr = format!("10.0.2.{}:{}", i / 200 + 1, 2000 + i % 200)
                .parse()
                .unwrap();
            by_addr.insert(addr, i);
            subscribers.push(connect(&mut core, cfg, addr));
        }
        for (source, codec) in [
            (Source::Microphone, Codec::Opus),
            (Source::Camera, Codec::Vp8),
        ] {
            handles[0].command(WorkerCmd::TrackAdded {
                room: RoomKey(1),
                track: TrackDesc {
                    id: TrackId::new(EndpointId(1), source),
                    codec,
                    layers: 1,
                    worker: WorkerId(0),
                },
            });
        }
        core.handle_commands(now);
        let mut room = Room {
            core,
            _handles: handles,
            publisher,
            publisher_now: now,
            subscribers,
            by_addr,
            _events: events,
            _outboxes: outboxes,
        };
        // Handshakes and the first keyframe, in real time (the network is instant).
        let deadline = Instant::now() + Duration::from_secs(60);
        while room
            .subscribers
            .iter()
            .any(|s| s.stats().received_video.packets == 0)
        {
            assert!(Instant::now() < deadline, "subscribers never got video");
            room.pump(Instant::now(), true);
        }
        room
    }

    /// Moves every datagram one hop and advances every clock to `now`.
    fn pump(&mut self, now: Instant, publish: bool) {
        self.publisher_now = self.publisher_now.max(now);
        if publish {
            self.publisher.handle_timeout(self.publisher_now);
        } else if self.publisher.poll_timeout() <= now {
            self.publisher.set_sending(false);
            self.publisher.handle_timeout(now);
            self.publisher.set_sending(true);
        }
        let from = self.publisher.local_addr();
        while let Some(t) = self.publisher.poll_transmit() {
            self.core.handle_datagram(from, &t.contents, now);
        }
        for s in &mut self.subscribers {
            if s.poll_timeout() <= now {
                s.handle_timeout(now);
            }
            let from = s.local_addr();
            while let Some(t) = s.poll_transmit() {
                self.core.handle_datagram(from, &t.contents, now);
            }
        }
        self.core.handle_timeout(now);
        self.core.flush_connections(now);
        let mut to_publisher = Vec::new();
        let mut to_subscribers = Vec::new();
        for t in self.core.transmits() {
            if t.destination == from {
                to_publisher.push(t.contents.to_vec());
            } else if let Some(&i) = self.by_addr.get(&t.destination) {
                to_subscribers.push((i, t.contents.to_vec()));
            }
        }
        let sent = to_publisher.len() + to_subscribers.len();
        self.core.finish_send(
            SendResult {
                sent,
                ..Default::default()
            },
            now,
        );
        let server: SocketAddr = SERVER.parse().unwrap();
        for d in to_publisher {
            self.publisher
                .handle_receive(server, &d, self.publisher_now);
        }
        for (i, d) in to_subscribers {
            self.subscribers[i].handle_receive(server, &d, now);
        }
    }

    /// The publisher's next `n` datagrams of media (not timed: done before measuring).
    /// Its STUN and RTCP go to the core, and the core's answers back, so its connection
    /// stays alive while its clock runs ahead.
    fn next_datagrams(&mut self, n: u64) -> Vec<Vec<u8>> {
        let mut out = Vec::with_capacity(n as usize);
        let from = self.publisher.local_addr();
        let server: SocketAddr = SERVER.parse().unwrap();
        let mut idle_rounds = 0;
        while (out.len() as u64) < n {
            self.publisher_now += Duration::from_millis(5);
            self.publisher.handle_timeout(self.publisher_now);
            let before = out.len();
            let now = Instant::now();
            while let Some(t) = self.publisher.poll_transmit() {
                // Media: RTP (version 2, not an RTCP payload type 200-204).
                let pt = t.contents.get(1).map_or(0, |b| b & 0x7f);
                if t.contents.first().is_some_and(|b| b >> 6 == 2) && !(72..=76).contains(&pt) {
                    out.push(t.contents.to_vec());
                } else {
                    self.core.handle_datagram(from, &t.contents, now);
                }
            }
            self.core.flush_connections(now);
            let replies: Vec<Vec<u8>> = self
                .core
                .transmits()
                .iter()
                .filter(|t| t.destination == from)
                .map(|t| t.contents.to_vec())
                .collect();
            let sent = self.core.transmits().len();
            self.core.finish_send(
                SendResult {
                    sent,
                    ..Default::default()
                },
                now,
            );
            for d in replies {
                self.publisher
                    .handle_receive(server, &d, self.publisher_now);
            }
            idle_rounds = if out.len() == before {
                idle_rounds + 1
            } else {
                0
            };
            assert!(
                idle_rounds < 2000,
                "the publisher stopped sending media (connection lost?)"
            );
        }
        out.truncate(n as usize);
        out
    }

    /// Forwards `datagrams` through the core; returns the datagrams it produced.
    fn forward(&mut self, datagrams: &[Vec<u8>]) -> u64 {
        let from = self.publisher.local_addr();
        let mut produced = 0u64;
        for d in datagrams {
            let now = Instant::now();
            self.core.handle_datagram(from, d, now);
            self.core.flush_connections(now);
            let n = self.core.transmits().len();
            produced += n as u64;
            self.core.finish_send(
                SendResult {
                    sent: n,
                    ..Default::default()
                },
                now,
            );
        }
        produced
    }
}

fn full_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("forwarding_step");
    g.measurement_time(Duration::from_secs(4));
    for n in [1usize, 25, 250] {
        let mut room = Room::new(n);
        // Allocations per forwarded packet over a warm run.
        let warm = room.next_datagrams(200);
        room.forward(&warm);
        let batch = room.next_datagrams(2000);
        let (produced, allocs) = counting_alloc::count(|| room.forward(&batch));
        println!(
            "forwarding step: {:.2} heap allocations per forwarded packet at fan-out {n} ({produced} datagrams)",
            allocs as f64 / produced.max(1) as f64
        );
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("fanout", n), &n, |b, _| {
            b.iter_custom(|iters| {
                // Keep every connection alive between measurements (not timed).
                room.pump(Instant::now(), false);
                let input = room.next_datagrams(iters);
                let start = Instant::now();
                room.forward(&input);
                start.elapsed()
            });
        });
    }
    g.finish();
}

/// One timeout pass of a subscriber's connection with nothing to send, by how many
/// receive slots it has: what every timer of a connection (reports, NACK, feedback) costs.
fn timeout_pass(c: &mut Criterion) {
    let mut g = c.benchmark_group("timeout_pass");
    g.measurement_time(Duration::from_secs(3));
    for slots in [1u16, 9, 25] {
        let mut room = Room::with_slots(10, slots);
        g.throughput(Throughput::Elements(11));
        g.bench_with_input(BenchmarkId::new("slots", slots), &slots, |b, _| {
            b.iter_custom(|iters| {
                room.pump(Instant::now(), false);
                let start = Instant::now();
                for _ in 0..iters {
                    let now = Instant::now();
                    room.core.tick_all(now);
                    let n = room.core.transmits().len();
                    room.core.finish_send(
                        SendResult {
                            sent: n,
                            ..Default::default()
                        },
                        now,
                    );
                }
                start.elapsed()
            });
        });
    }
    g.finish();
}

criterion_group!(benches, full_path, timeout_pass);
criterion_main!(benches);
