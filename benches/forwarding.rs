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
//! `meeting_grid` runs a whole grid meeting in virtual time (many publishers, viewers with
//! a tile for each, their feedback and the core's timeout passes) and prints, besides the
//! core's time per forward, how that time divides between routing, feedback and passes.

// Benchmarks report on stdout, like criterion itself.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ting_bench::{SimPeer, SimPeerConfig};
use ting_media::{Codec, EndpointId, LayoutSpec, Source, TileSpec, View};
use ting_server::udp::SendResult;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
#[path = "support/sim_core.rs"]
#[allow(dead_code)] // each user needs a part of it
mod sim_core;

use sim_core::{SERVER, SimCore};

/// The core every benchmark here drives: 32 camera slots per connection, str0m's bandwidth
/// estimate only with `TING_BENCH_BWE` set.
fn server() -> SimCore {
    let estimate = std::env::var_os("TING_BENCH_BWE").is_some();
    SimCore::new(32, estimate, Duration::from_secs(20))
}

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

/// A subscriber's address: up to 200 per /24.
fn subscriber_addr(i: usize) -> SocketAddr {
    format!("10.0.2.{}:{}", i / 200 + 1, 2000 + i % 200)
        .parse()
        .unwrap()
}

/// A worker core, one publisher and its subscribers on an in-memory network.
struct Room {
    srv: SimCore,
    publisher: SimPeer,
    /// The publisher's own clock: it runs ahead of real time so it can produce packets
    /// faster than 30 frames a second.
    publisher_now: Instant,
    subscribers: Vec<SimPeer>,
    by_addr: HashMap<SocketAddr, usize>,
}

impl Room {
    fn new(n: usize) -> Room {
        Room::with_slots(n, 1)
    }

    /// `n` subscribers with one audio slot and `slots` video slots each.
    fn with_slots(n: usize, slots: u16) -> Room {
        let now = Instant::now();
        let mut srv = server();
        let mut pub_cfg = SimPeerConfig::new(1);
        pub_cfg.video_bps = vec![1_000_000];
        pub_cfg.audio_slots = 0;
        pub_cfg.video_slots = 0;
        pub_cfg.screen_slots = 0;
        pub_cfg.keyframe_interval = Duration::from_secs(3600);
        let publisher = srv.connect(pub_cfg, "10.0.1.1:1000".parse().unwrap(), None, now);
        let mut subscribers = Vec::new();
        let mut by_addr = HashMap::new();
        for i in 0..n {
            let mut cfg = SimPeerConfig::new(1000 + i as u32);
            cfg.audio = false;
            cfg.video_bps = Vec::new();
            cfg.audio_slots = 1;
            cfg.video_slots = slots;
            cfg.screen_slots = 0;
            let addr = subscriber_addr(i);
            by_addr.insert(addr, i);
            subscribers.push(srv.connect(cfg, addr, None, now));
        }
        srv.add_track(1, Source::Microphone, Codec::Opus, now);
        srv.add_track(1, Source::Camera, Codec::Vp8, now);
        let mut room = Room {
            srv,
            publisher,
            publisher_now: now,
            subscribers,
            by_addr,
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
            self.srv.core.handle_datagram(from, &t.contents, now);
        }
        for s in &mut self.subscribers {
            if s.poll_timeout() <= now {
                s.handle_timeout(now);
            }
            let from = s.local_addr();
            while let Some(t) = s.poll_transmit() {
                self.srv.core.handle_datagram(from, &t.contents, now);
            }
        }
        self.srv.core.handle_timeout(now);
        self.srv.core.flush_connections(now);
        let mut to_publisher = Vec::new();
        let mut to_subscribers = Vec::new();
        for t in self.srv.core.transmits() {
            if t.destination == from {
                to_publisher.push(t.contents.to_vec());
            } else if let Some(&i) = self.by_addr.get(&t.destination) {
                to_subscribers.push((i, t.contents.to_vec()));
            }
        }
        let sent = to_publisher.len() + to_subscribers.len();
        self.srv.core.finish_send(
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
                    self.srv.core.handle_datagram(from, &t.contents, now);
                }
            }
            self.srv.core.flush_connections(now);
            let replies: Vec<Vec<u8>> = self
                .srv
                .core
                .transmits()
                .iter()
                .filter(|t| t.destination == from)
                .map(|t| t.contents.to_vec())
                .collect();
            let sent = self.srv.core.transmits().len();
            self.srv.core.finish_send(
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
            self.srv.core.handle_datagram(from, d, now);
            self.srv.core.flush_connections(now);
            let n = self.srv.core.transmits().len();
            produced += n as u64;
            self.srv.core.finish_send(
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

/// A meeting in virtual time: publishers sending a camera each, viewers showing all of
/// them as grid tiles. Unlike [`Room`] (one stream fanned out), each viewer's packets
/// come from many publishers through a connection of many send streams, so the core
/// works over the state of a whole meeting, as a live server does; viewers read what they
/// receive and send their feedback, so connections stay as they are live (no NACK storms).
struct Meeting {
    srv: SimCore,
    /// The publishers, then the viewers.
    peers: Vec<SimPeer>,
    by_addr: HashMap<SocketAddr, usize>,
    /// Virtual time: everything here runs on it; only the core's work is timed in real time.
    now: Instant,
    /// Datagrams on their way to the core, with their senders (reused between steps).
    inbound: Vec<(SocketAddr, Vec<u8>)>,
    /// How many of `peers` publish (they come first).
    publishers: usize,
    /// The core's time by part since the last [`Meeting::report_parts`]: publishers' packets
    /// (routing them writes and encrypts the forwards), viewers' packets (their feedback),
    /// timeout passes, flushing and sending.
    parts: [Duration; 4],
    /// Media datagrams sent to viewers since the last [`Meeting::report_parts`].
    forwards: u64,
}

impl Meeting {
    /// `publishers` cameras (one 150 kbit/s layer at 30 frames a second in three temporal
    /// layers, of which a 180-pixel tile gets 15) shown by each of `viewers` in a grid.
    fn grid(publishers: usize, viewers: usize) -> Meeting {
        let mut now = Instant::now();
        let mut srv = server();
        let mut peers = Vec::new();
        let mut by_addr = HashMap::new();
        for p in 0..publishers {
            let mut cfg = SimPeerConfig::new(1 + p as u32);
            cfg.audio = false;
            cfg.video_bps = vec![150_000];
            cfg.audio_slots = 0;
            cfg.video_slots = 0;
            cfg.screen_slots = 0;
            let addr: SocketAddr = format!("10.0.1.1:{}", 1000 + p).parse().unwrap();
            by_addr.insert(addr, peers.len());
            peers.push(srv.connect(cfg, addr, None, now));
            srv.add_track(1 + p as u64, Source::Camera, Codec::Vp8, now);
        }
        let layout = LayoutSpec {
            view: View::Grid,
            tiles: (0..publishers)
                .map(|p| TileSpec {
                    endpoint: Some(EndpointId(1 + p as u64)),
                    height: 180,
                })
                .collect(),
        };
        for i in 0..viewers {
            let mut cfg = SimPeerConfig::new(1000 + i as u32);
            cfg.audio = false;
            cfg.video_bps = Vec::new();
            cfg.audio_slots = 0;
            cfg.video_slots = publishers as u16;
            cfg.screen_slots = 0;
            cfg.sample_every = 32;
            let addr = subscriber_addr(i);
            by_addr.insert(addr, peers.len());
            peers.push(srv.connect(cfg, addr, Some(layout.clone()), now));
        }
        let mut meeting = Meeting {
            srv,
            peers,
            by_addr,
            now,
            inbound: Vec::new(),
            publishers,
            parts: [Duration::ZERO; 4],
            forwards: 0,
        };
        // Handshakes, then every tile of every viewer receiving (virtual time; a bound in
        // real time too, in case something never connects).
        let deadline = Instant::now() + Duration::from_secs(120);
        let viewing = |m: &Meeting| {
            m.peers[publishers..]
                .iter()
                .all(|v| v.stats().slots.iter().filter(|s| s.packets > 0).count() >= publishers)
        };
        while !viewing(&meeting) {
            assert!(
                Instant::now() < deadline,
                "viewers never received every tile"
            );
            meeting.step(Duration::from_millis(5));
            now = meeting.now;
        }
        // A few seconds of the meeting before any measurement: queues, caches and
        // estimates in their steady state.
        while meeting.now < now + Duration::from_secs(3) {
            meeting.step(Duration::from_millis(1));
        }
        meeting.parts = [Duration::ZERO; 4];
        meeting.forwards = 0;
        meeting
    }

    /// Prints where the core's time per forward went since the last call.
    fn report_parts(&mut self, what: &str) {
        if self.forwards == 0 {
            // Not measured (filtered out).
            return;
        }
        let per = |d: Duration| d.as_nanos() as f64 / self.forwards.max(1) as f64 / 1000.0;
        let [publishers, viewers, timeouts, sending] = self.parts;
        eprintln!(
            "{what}: per forward {:.2} µs: publishers' packets (routed, forwards \
             written and encrypted) {:.2}, viewers' feedback {:.2}, timeout passes {:.2}, \
             flush and send {:.2} ({} forwards)",
            per(publishers + viewers + timeouts + sending),
            per(publishers),
            per(viewers),
            per(timeouts),
            per(sending),
            self.forwards,
        );
        self.parts = [Duration::ZERO; 4];
        self.forwards = 0;
    }

    /// Advances virtual time by `dt`: participants send what is due, the core takes it in,
    /// runs its timers and sends, participants receive. Returns the real time the core
    /// spent and the media datagrams it sent to viewers.
    fn step(&mut self, dt: Duration) -> (Duration, u64) {
        self.now += dt;
        let now = self.now;
        let mut inbound = std::mem::take(&mut self.inbound);
        for p in &mut self.peers {
            if p.poll_timeout() <= now {
                p.handle_timeout(now);
            }
            let from = p.local_addr();
            while let Some(t) = p.poll_transmit() {
                inbound.push((from, t.contents.to_vec()));
            }
        }
        let core = &mut self.srv.core;
        // Publishers' datagrams first, then the viewers' (their feedback), each part timed.
        let t0 = Instant::now();
        for (from, d) in &inbound {
            if self.by_addr[from] < self.publishers {
                core.handle_datagram(*from, d, now);
            }
        }
        let t1 = Instant::now();
        for (from, d) in &inbound {
            if self.by_addr[from] >= self.publishers {
                core.handle_datagram(*from, d, now);
            }
        }
        let t2 = Instant::now();
        if core.next_deadline().is_some_and(|at| at <= now) {
            core.handle_timeout(now);
        }
        let t3 = Instant::now();
        core.flush_connections(now);
        let t4 = Instant::now();
        self.parts[0] += t1 - t0;
        self.parts[1] += t2 - t1;
        self.parts[2] += t3 - t2;
        self.parts[3] += t4 - t3;
        let mut spent = t4 - t0;
        inbound.clear();
        self.inbound = inbound;

        let mut out = Vec::with_capacity(core.transmits().len());
        let mut media = 0u64;
        for t in core.transmits() {
            if let Some(&i) = self.by_addr.get(&t.destination) {
                let rtp = t.contents.first().is_some_and(|b| b >> 6 == 2)
                    && !(200..=204).contains(&t.contents.get(1).copied().unwrap_or(0));
                media += u64::from(rtp);
                out.push((i, t.contents.to_vec()));
            }
        }
        let sent = core.transmits().len();
        let start = Instant::now();
        core.finish_send(
            SendResult {
                sent,
                ..Default::default()
            },
            now,
        );
        let finish = start.elapsed();
        self.parts[3] += finish;
        spent += finish;
        self.forwards += media;
        let server: SocketAddr = SERVER.parse().unwrap();
        for (i, d) in out {
            self.peers[i].handle_receive(server, &d, now);
        }
        (spent, media)
    }
}

/// The core's time per packet sent to a viewer in a grid meeting, by the number of
/// viewers: the same publishers and tiles, a growing working set.
fn meeting_grid(c: &mut Criterion) {
    let mut g = c.benchmark_group("meeting_grid");
    g.measurement_time(Duration::from_secs(6));
    g.sample_size(20);
    let publishers = 25;
    for viewers in [25usize, 250] {
        let mut meeting = Meeting::grid(publishers, viewers);
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(
            BenchmarkId::new(format!("{publishers}_tiles_viewers"), viewers),
            &viewers,
            |b, _| {
                b.iter_custom(|iters| {
                    let (mut spent, mut media) = (Duration::ZERO, 0u64);
                    while media < iters {
                        let (s, m) = meeting.step(Duration::from_millis(1));
                        spent += s;
                        media += m;
                    }
                    // The time of exactly `iters` packets, at the measured rate.
                    spent.mul_f64(iters as f64 / media as f64)
                });
            },
        );
        meeting.report_parts(&format!(
            "meeting_grid {publishers} tiles, {viewers} viewers"
        ));
    }
    g.finish();
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
                    room.srv.core.tick_all(now);
                    let n = room.srv.core.transmits().len();
                    room.srv.core.finish_send(
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

criterion_group!(benches, full_path, timeout_pass, meeting_grid);
criterion_main!(benches);
