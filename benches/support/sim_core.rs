//! One media worker's core on an in-memory network, without sockets, and the simulated
//! participants (`ting_bench::SimPeer`) it accepts: the set-up shared by the benchmarks and
//! the tests that drive a core in virtual time.
//!
//! Use: `#[path = "…/sim_core.rs"] mod sim_core;`, then `SimCore::new(..)`, `connect` a
//! participant per offer, `add_track` what they publish, and move datagrams between
//! `SimCore::core` and the peers yourself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ting_bench::{SimPeer, SimPeerConfig};
use ting_media::{Codec, EndpointId, LayoutSpec, RouterConfig, Source, TrackId};
use ting_server::metrics::WorkerCounters;
use ting_server::outbox::{OutboxRx, outbox};
use ting_server::setup::PeerFactory;
use ting_server::udp::SendResult;
use ting_server::worker::peer::SlotLimits;
use ting_server::worker::{
    ConnectReq, CoreSetup, MediaCore, RoomKey, TrackDesc, WorkerCmd, WorkerEvent, WorkerHandle,
    WorkerId, standalone_cores,
};
use tokio::sync::mpsc::UnboundedReceiver;

/// The core's address on the in-memory network.
pub const SERVER: &str = "10.0.0.1:5000";

/// The room every participant joins.
const ROOM: RoomKey = RoomKey(1);

/// Datagrams a participant's outbox holds: the core's own, not a socket's.
const OUTBOX_CAPACITY: usize = 1 << 16;

/// A media worker's core and what it needs to accept connections.
pub struct SimCore {
    pub core: MediaCore,
    pub handles: Arc<[WorkerHandle]>,
    /// What the core tells the conductor (answers, quality, departures).
    pub events: UnboundedReceiver<WorkerEvent>,
    factory: PeerFactory,
    /// Kept so that the connections' outboxes stay open.
    outboxes: Vec<OutboxRx>,
}

impl SimCore {
    /// A core whose connections offer `video_slots` camera slots (3 audio, 1 screen), with
    /// or without str0m's bandwidth estimate, keeping a connection without media for
    /// `media_grace`.
    pub fn new(video_slots: u16, estimate_bandwidth: bool, media_grace: Duration) -> SimCore {
        SimCore::with_shedding(video_slots, estimate_bandwidth, media_grace, false)
    }

    /// As [`SimCore::new`], with `media.load_shedding` on: the test reports the load
    /// (`MediaCore::observe_load`), since the thread's CPU time says nothing of virtual time.
    pub fn with_shedding(
        video_slots: u16,
        estimate_bandwidth: bool,
        media_grace: Duration,
        load_shedding: bool,
    ) -> SimCore {
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .expect("certificate");
        let (events_tx, events) = tokio::sync::mpsc::unbounded_channel();
        let factory = PeerFactory {
            cert,
            limits: SlotLimits {
                audio: 3,
                video: video_slots,
                screen: 1,
            },
            estimate_bandwidth,
            opus_dtx: true,
        };
        let setup = CoreSetup {
            id: WorkerId(0),
            candidate: SERVER.parse().unwrap(),
            events: events_tx,
            counters: Arc::new(WorkerCounters::default()),
            media_grace,
            router: RouterConfig::default(),
            load_shedding,
        };
        let (handles, mut cores) = standalone_cores(vec![setup]).expect("core");
        SimCore {
            core: cores.remove(0),
            handles,
            events,
            factory,
            outboxes: Vec::new(),
        }
    }

    /// Connects a simulated participant at `addr`: the core accepts its offer and the
    /// participant its answer (the handshakes follow as datagrams flow).
    pub fn connect(
        &mut self,
        cfg: SimPeerConfig,
        addr: SocketAddr,
        layout: Option<LayoutSpec>,
        now: Instant,
    ) -> SimPeer {
        let pid = u64::from(cfg.id);
        let (mut peer, offer) = SimPeer::new(cfg, addr, now).expect("peer");
        let (outbox, rx) = outbox(OUTBOX_CAPACITY);
        self.outboxes.push(rx);
        let accepted = self
            .factory
            .accept(pid, ROOM, &offer, SERVER.parse().unwrap(), outbox, now)
            .expect("offer accepted");
        self.handles[0].command(WorkerCmd::Connect(Box::new(ConnectReq {
            pid,
            room: ROOM,
            accepted: Box::new(accepted),
            tracks: Vec::new(),
            workers: vec![WorkerId(0)],
            layout,
        })));
        while self.core.handle_commands(now) {}
        let answer = match self.events.try_recv() {
            Ok(WorkerEvent::Connected { answer, .. }) => answer,
            other => panic!("the core did not accept the offer: {other:?}"),
        };
        peer.accept_answer(&answer, now).expect("answer");
        peer
    }

    /// The signalling messages queued for the `i`-th participant connected (JSON text),
    /// taken out of its outbox.
    pub fn take_messages(&mut self, i: usize) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(rx) = self.outboxes.get_mut(i) {
            while let Some(m) = rx.try_recv() {
                out.push(m.text.to_string());
            }
        }
        out
    }

    /// One step of virtual time: every peer's due timeout and datagrams into the core, the
    /// core's passes and sends, and its datagrams delivered to the peers they are for.
    pub fn exchange(&mut self, peers: &mut [SimPeer], now: Instant) {
        for p in peers.iter_mut() {
            if p.poll_timeout() <= now {
                p.handle_timeout(now);
            }
            let from = p.local_addr();
            while let Some(t) = p.poll_transmit() {
                self.core.handle_datagram(from, &t.contents, now);
            }
        }
        while self.core.handle_commands(now) {}
        self.core.handle_timeout(now);
        self.core.flush_connections(now);
        let sent = self.core.transmits().len();
        for t in self.core.transmits() {
            if let Some(p) = peers.iter_mut().find(|p| p.local_addr() == t.destination) {
                p.handle_receive(SERVER.parse().unwrap(), &t.contents, now);
            }
        }
        self.core.finish_send(
            SendResult {
                sent,
                ..Default::default()
            },
            now,
        );
    }

    /// Announces a single-layer track of participant `pid`.
    pub fn add_track(&mut self, pid: u64, source: Source, codec: Codec, now: Instant) {
        self.handles[0].command(WorkerCmd::TrackAdded {
            room: ROOM,
            track: TrackDesc {
                id: TrackId::new(EndpointId(pid), source),
                codec,
                layers: 1,
                worker: WorkerId(0),
            },
        });
        while self.core.handle_commands(now) {}
    }
}
