//! The packet path of a media worker, without the socket. See the module docs of
//! [`super`] for the loop it is driven by.

use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use rustc_hash::FxHashMap;
use str0m::bwe::{Bitrate, BweKind};
use str0m::media::KeyframeRequestKind;
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::rtp::{Vp8Descriptor, Vp8Patch};
use str0m::{Event, IceConnectionState, Input, Output};
use ting_media::{
    EndpointId, Forward, LATE_WAIT, LayerId, LoadConfig, LoadShedder, MediaKind, Quality,
    QualitySample, Router, RouterConfig, RouterOutput, RtpIn, SlotId, Source, TrackId, TrackInfo,
    Vp8Out,
};
use ting_proto::{ErrorCode, ErrorMsg, ParticipantRef, ServerMsg};
use tokio::sync::mpsc;
use tracing::{debug, info, trace, warn};

use super::peer::{INITIAL_ESTIMATE_BPS, Peer, PeerEnd};
use super::stun;
use super::{
    COMMAND_BUDGET, ConnectReq, ForwardExt, MediaMsg, OutMsg, RECV_BUDGET, RoomKey, WorkerCmd,
    WorkerEvent, WorkerHandle, WorkerId,
};
use crate::metrics::{
    DropReason, KindIndex, PUBLISH_INTERVAL, TickCause, WorkerCounters, WorkerStats, thread_cpu_ns,
};
use crate::outbox::Outbox;
use crate::udp;

/// What a [`MediaCore`] needs to know about its place.
pub struct CoreSetup {
    pub id: WorkerId,
    /// The address browsers send to (the advertised IP with the socket's port).
    pub candidate: SocketAddr,
    pub events: mpsc::UnboundedSender<WorkerEvent>,
    pub counters: Arc<WorkerCounters>,
    /// How long a connection whose ICE reports it lost may take to come back (an ICE
    /// restart after a network change, a burst of loss) before it is ended.
    pub media_grace: Duration,
    /// How each room's router picks what to forward (`Config::router_config`).
    pub router: RouterConfig,
    /// Whether thumbnails drop to the base temporal layer while the core is full
    /// (`media.load_shedding`; the worker loop reports the load, [`MediaCore::observe_load`]).
    pub load_shedding: bool,
}

impl std::fmt::Debug for CoreSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreSetup")
            .field("id", &self.id)
            .field("candidate", &self.candidate)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for MediaCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaCore")
            .field("id", &self.id)
            .field("connections", &self.by_pid.len())
            .finish_non_exhaustive()
    }
}

/// A room as seen from one worker.
struct RoomState {
    router: Router,
    /// The other workers hosting the room: each gets this worker's publishers' packets.
    others: Vec<WorkerId>,
    /// Which worker each track's publisher is on.
    track_workers: FxHashMap<TrackId, WorkerId>,
    /// This worker's connections in the room.
    peers: Vec<usize>,
}

/// Everything on a worker's packet path, without the socket: datagrams and time in,
/// datagrams to send out. The worker thread ([`super::Worker`]) owns one and does the I/O;
/// benchmarks and tests drive one directly.
pub struct MediaCore {
    id: WorkerId,
    candidate: SocketAddr,
    commands: Receiver<WorkerCmd>,
    media: Receiver<MediaMsg>,
    handles: Arc<[WorkerHandle]>,
    events: mpsc::UnboundedSender<WorkerEvent>,
    counters: Arc<WorkerCounters>,
    stats: WorkerStats,

    peers: Vec<Option<Peer>>,
    free: Vec<usize>,
    by_pid: FxHashMap<u64, usize>,
    by_addr: FxHashMap<SocketAddr, usize>,
    by_ufrag: HashMap<String, usize>,
    rooms: FxHashMap<RoomKey, RoomState>,

    timers: BinaryHeap<std::cmp::Reverse<(Instant, usize)>>,
    dirty: Vec<usize>,
    /// RTP received in the current step, to route once the receiving connection is drained.
    pending: Pending,
    /// Connections that want their slot table sent.
    slot_updates: Vec<usize>,
    /// Datagrams to send, and for each forwarded packet among them when it was received.
    transmits: Vec<str0m::net::Transmit>,
    forwarded_at: Vec<(Instant, KindIndex)>,
    /// Forwarded packets written to connections that were not ticked since.
    unflushed: usize,
    /// How far `dirty` has been ticked.
    dirty_at: usize,
    /// Workers pushed to in this step, woken once at its end.
    wake: Vec<bool>,
    pub(super) shutdown: bool,
    media_grace: Duration,
    router_config: RouterConfig,
    /// `None` with `media.load_shedding` off.
    shedder: Option<LoadShedder>,
    next_publish: Instant,
    next_quality: Instant,
    /// When the datagram being handled left the kernel.
    received: Instant,
    /// The socket's running count of datagrams the kernel dropped for a full receive
    /// buffer, as last reported.
    receive_overflows: u32,
    /// Datagrams read since the last load sample, and of them those read late
    /// (`ting_media::load::LATE_WAIT`).
    reads: u64,
    late_reads: u64,
    /// The packets of the batch being routed, and their forwards in sending order.
    batch_pkts: Vec<BatchPacket>,
    batch: Vec<BatchForward>,
    batch_at: usize,
}

/// A received packet being routed.
struct BatchPacket {
    pkt: RtpIn,
    ext: ForwardExt,
    received: Instant,
    /// Its VP8 descriptor, parsed once for every subscriber's patch.
    descriptor: Option<Vp8Descriptor>,
}

/// One packet to one subscriber's slot.
#[derive(Clone, Copy)]
struct BatchForward {
    /// Index into the batch's packets.
    pkt: u32,
    /// Its packet is video (or a screen share): it sorts after the batch's audio.
    video: bool,
    forward: Forward,
}

/// Adds what `peer`'s send streams dropped as stale since the last count to `stats`
/// (`SEND_QUEUE_MAX_AGE`; a walk over its slots, done once a second and at removal).
fn count_stale(peer: &mut Peer, stats: &mut WorkerStats) {
    let mut api = peer.rtc.direct_api();
    let total: u64 = peer
        .slots
        .iter()
        .filter_map(|s| api.stream_tx(&s.ssrc).map(|tx| tx.send_queue_dropped()))
        .sum();
    let new = total.saturating_sub(peer.stale_dropped);
    if new > 0 {
        debug!(pid = %format_args!("{:016x}", peer.pid), dropped = new, "stale packets dropped unsent");
    }
    stats.drop(DropReason::Stale, new);
    peer.stale_dropped = total;
}

/// The str0m patch that writes a forward's rewritten VP8 fields into the payload; `None`
/// when the descriptor lacks a field the router would write (both parsed the same bytes,
/// so this does not happen; if it did, the packet would go unpatched).
fn vp8_patch(d: &Vp8Descriptor, v: Vp8Out) -> Option<Vp8Patch> {
    let mut b = d.patch();
    if let Some(p) = v.picture_id {
        b = b.picture_id(p);
    }
    if let Some(t) = v.tl0picidx {
        b = b.tl0_pic_idx(t);
    }
    if let Some(k) = v.keyidx {
        b = b.key_idx(k);
    }
    b.build().ok()
}

impl MediaCore {
    pub fn new(
        setup: CoreSetup,
        commands: Receiver<WorkerCmd>,
        media: Receiver<MediaMsg>,
        handles: Arc<[WorkerHandle]>,
    ) -> MediaCore {
        let n = handles.len();
        MediaCore {
            id: setup.id,
            candidate: setup.candidate,
            commands,
            media,
            handles,
            events: setup.events,
            counters: setup.counters,
            stats: WorkerStats::default(),
            peers: Vec::new(),
            free: Vec::new(),
            by_pid: FxHashMap::default(),
            by_addr: FxHashMap::default(),
            by_ufrag: HashMap::new(),
            rooms: FxHashMap::default(),
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            pending: Pending::default(),
            slot_updates: Vec::new(),
            transmits: Vec::new(),
            forwarded_at: Vec::new(),
            unflushed: 0,
            dirty_at: 0,
            wake: vec![false; n],
            shutdown: false,
            media_grace: setup.media_grace,
            router_config: setup.router,
            shedder: setup.load_shedding.then(|| {
                LoadShedder::new(LoadConfig::default(), setup.router.thumbnail_temporal_layer)
            }),
            next_publish: Instant::now(),
            next_quality: Instant::now(),
            received: Instant::now(),
            receive_overflows: 0,
            reads: 0,
            late_reads: 0,
            batch_pkts: Vec::new(),
            batch: Vec::new(),
            batch_at: 0,
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|r| r.0.0);
        let router = self
            .rooms
            .values()
            .filter_map(|r| r.router.poll_timeout())
            .min();
        match (timer, router) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes each connection's quality sample for the second past, and tells the conductor
    /// of those that changed.
    fn sample_quality(&mut self, now: Instant) {
        let (mut poor, mut lost) = (0, 0);
        for peer in self.peers.iter_mut().flatten() {
            if !peer.connected {
                continue;
            }
            count_stale(peer, &mut self.stats);
            let measured = peer.rtc.transport_quality(now);
            let silent = peer.disconnected_since.is_some()
                || peer
                    .last_heard
                    .is_none_or(|at| now.saturating_duration_since(at) >= OUTAGE);
            let sample = QualitySample {
                ingress_loss: measured.ingress_loss,
                ingress_packets: measured.ingress_packets,
                egress_loss: measured.egress_loss,
                egress_packets: measured.egress_packets,
                rtt: measured.rtt,
                estimate_bps: peer.estimate_bps,
                desired_bps: peer.desired_bps,
                silent,
            };
            if let Some(quality) = peer.quality.sample(&sample) {
                debug!(pid = %format_args!("{:016x}", peer.pid), ?quality, ?sample, "connection quality");
                let _ = self.events.send(WorkerEvent::Quality {
                    pid: peer.pid,
                    quality,
                });
            }
            match peer.quality.state() {
                Quality::Good => {}
                Quality::Poor => poor += 1,
                Quality::Lost => lost += 1,
            }
        }
        self.stats.poor_connections = poor;
        self.stats.lost_connections = lost;
    }

    fn end_lost_connections(&mut self, now: Instant) {
        let grace = self.media_grace;
        let lost: Vec<usize> = self
            .peers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let p = p.as_ref()?;
                // Lost by ICE's verdict (which comes late for an ICE-lite server: it only
                // hears checks, never sends them), or silent for as long.
                let over = |since: Instant| now.saturating_duration_since(since) >= grace;
                (p.disconnected_since.is_some_and(over) || p.last_heard.is_some_and(over))
                    .then_some(i)
            })
            .collect();
        for pi in lost {
            if let Some(peer) = self.peers.get_mut(pi).and_then(Option::as_mut) {
                peer.ended = Some(PeerEnd::MediaFailed);
            }
            self.remove_peer(pi);
        }
    }

    // ---- commands ------------------------------------------------------------------

    pub fn id(&self) -> WorkerId {
        self.id
    }

    /// The address browsers send this worker's media to.
    pub fn candidate(&self) -> SocketAddr {
        self.candidate
    }

    /// This worker's own handle.
    pub fn handle(&self) -> &WorkerHandle {
        &self.handles[self.id.0]
    }

    /// Handles commands from the conductor: returns false once the queue is empty, true
    /// when its share of the loop was used with more waiting.
    pub fn handle_commands(&mut self, now: Instant) -> bool {
        for _ in 0..COMMAND_BUDGET {
            match self.commands.try_recv() {
                Ok(cmd) => self.handle_command(cmd, now),
                Err(TryRecvError::Empty) => return false,
                Err(TryRecvError::Disconnected) => {
                    self.shutdown = true;
                    return false;
                }
            }
        }
        !self.commands.is_empty()
    }

    fn handle_command(&mut self, cmd: WorkerCmd, now: Instant) {
        match cmd {
            WorkerCmd::Connect(req) => self.connect(*req, now),
            WorkerCmd::Disconnect { pid } => {
                if let Some(&pi) = self.by_pid.get(&pid) {
                    self.remove_peer(pi);
                }
            }
            WorkerCmd::TrackAdded { room, track } => {
                if let Some(rs) = self.rooms.get_mut(&room) {
                    let info = TrackInfo {
                        codec: track.codec,
                        local: track.worker == self.id,
                        layers: track.layers,
                    };
                    if rs.router.add_track(track.id, info, now).is_ok() {
                        rs.track_workers.insert(track.id, track.worker);
                    }
                    self.drain_router(room, now);
                }
            }
            WorkerCmd::TrackRemoved { room, track } => {
                if let Some(rs) = self.rooms.get_mut(&room) {
                    rs.router.remove_track(track, now);
                    rs.track_workers.remove(&track);
                    self.drain_router(room, now);
                }
            }
            WorkerCmd::RoomWorkers { room, workers } => {
                let me = self.id;
                if let Some(rs) = self.rooms.get_mut(&room) {
                    let tags: Vec<u32> = workers.iter().map(|w| worker_tag(*w)).collect();
                    rs.others = workers.into_iter().filter(|w| *w != me).collect();
                    // Workers that left the room use nothing of its tracks any more.
                    rs.router.retain_remote(&tags, now);
                    self.drain_router(room, now);
                }
            }
            WorkerCmd::Layout { pid, layout } => {
                if let Some(&pi) = self.by_pid.get(&pid)
                    && let Some(peer) = self.peers.get_mut(pi).and_then(Option::as_mut)
                {
                    peer.layout = layout.clone();
                    let (room, endpoint, connected) = (peer.room, peer.endpoint, peer.connected);
                    if connected && let Some(rs) = self.rooms.get_mut(&room) {
                        let _ = rs.router.set_layout(endpoint, layout, now);
                        self.drain_router(room, now);
                    }
                }
            }
            WorkerCmd::Resync { pid } => {
                if let Some(&pi) = self.by_pid.get(&pid)
                    && let Some(peer) = self.peers.get(pi).and_then(Option::as_ref)
                    && peer.connected
                {
                    let _ = peer.outbox.send(OutMsg::new(&ServerMsg::Slots {
                        slots: peer.slot_message(),
                    }));
                    if let Some(rs) = self.rooms.get(&peer.room) {
                        tell_speakers(&peer.outbox, &rs.router, true);
                    }
                }
            }
            WorkerCmd::IceRestart { pid, sdp, reply } => {
                let _ = reply.send(self.restart_ice(pid, &sdp, now));
            }
            WorkerCmd::Shutdown => self.shutdown = true,
            #[cfg(feature = "test-hooks")]
            WorkerCmd::Crash { pid } => {
                if let Some(&pi) = self.by_pid.get(&pid) {
                    if let Some(peer) = self.peers.get_mut(pi).and_then(Option::as_mut) {
                        peer.crash = true;
                    }
                    self.drain_peer(pi, now);
                }
            }
        }
    }

    fn connect(&mut self, req: ConnectReq, now: Instant) {
        let ConnectReq {
            pid,
            room,
            accepted,
            tracks,
            workers,
            layout,
        } = req;
        if let Some(&old) = self.by_pid.get(&pid) {
            self.remove_peer(old);
        }
        let accepted = *accepted;
        let published = accepted
            .peer
            .published
            .iter()
            .map(|p| super::PublishedTrack {
                source: p.source,
                codec: p.codec,
                layers: p.rids.len().clamp(1, LayerId::MAX) as u8,
            })
            .collect();
        let mut accepted = accepted;
        accepted.peer.layout = layout;
        let ufrag = accepted.peer.ufrag.clone();
        let pi = match self.free.pop() {
            Some(i) => {
                self.peers[i] = Some(accepted.peer);
                i
            }
            None => {
                self.peers.push(Some(accepted.peer));
                self.peers.len() - 1
            }
        };
        self.by_pid.insert(pid, pi);
        self.by_ufrag.insert(ufrag, pi);
        self.handles[self.id.0].load.fetch_add(1, Ordering::Relaxed);
        if self.shedding()
            && let Some(peer) = self.peers.get_mut(pi).and_then(Option::as_mut)
        {
            // A full core probes for no bandwidth (see `MediaCore::observe_load`).
            peer.rtc.bwe().set_probing_paused(true);
        }

        let me = self.id;
        let rs = self.rooms.entry(room).or_insert_with(|| RoomState {
            router: Router::new(self.router_config),
            others: Vec::new(),
            track_workers: FxHashMap::default(),
            peers: Vec::new(),
        });
        rs.others = workers.into_iter().filter(|w| *w != me).collect();
        for t in tracks {
            let info = TrackInfo {
                codec: t.codec,
                local: t.worker == me,
                layers: t.layers,
            };
            if rs.router.add_track(t.id, info, now).is_ok() {
                rs.track_workers.insert(t.id, t.worker);
            }
        }
        rs.peers.push(pi);
        // Who speaks now, with the answer: a joiner knows it before its media connects,
        // however long the handshakes take on a busy core.
        if let Some(peer) = self.peers.get(pi).and_then(Option::as_ref) {
            tell_speakers(&peer.outbox, &rs.router, false);
        }
        let _ = self.events.send(WorkerEvent::Connected {
            pid,
            worker: me,
            answer: accepted.answer,
            published,
        });
        self.drain_router(room, now);
        self.drain_peer(pi, now);
    }

    /// Accepts a client's ICE restart: the connection answers with new credentials of its
    /// own, which the demultiplexer learns in place of the old ones; the addresses already
    /// learnt stay until the connection is gone (the old path may still carry media while
    /// the new one is checked).
    fn restart_ice(&mut self, pid: u64, sdp: &str, now: Instant) -> Result<String, ErrorMsg> {
        let not_here = || ErrorMsg {
            code: ErrorCode::NotConnected,
            message: "there is no media connection to restart: send offer to make one".into(),
            fatal: false,
        };
        let pi = *self.by_pid.get(&pid).ok_or_else(not_here)?;
        let peer = self
            .peers
            .get_mut(pi)
            .and_then(Option::as_mut)
            .ok_or_else(not_here)?;
        let old = peer.ufrag.clone();
        let answer = match catch_unwind(AssertUnwindSafe(|| peer.restart_ice(sdp))) {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                debug!(pid = %format_args!("{pid:016x}"), error = e.kind(), "ICE restart refused");
                return Err(ErrorMsg {
                    code: ErrorCode::BadOffer,
                    message: e.to_string(),
                    fatal: false,
                });
            }
            Err(_) => {
                warn!(pid = %format_args!("{pid:016x}"), "connection panicked on an ICE restart; closing it");
                peer.ended = Some(PeerEnd::Crashed);
                self.drain_peer(pi, now);
                return Err(ErrorMsg {
                    code: ErrorCode::Internal,
                    message: "the media connection failed on the ICE restart".into(),
                    fatal: false,
                });
            }
        };
        self.stats.ice_restarts += 1;
        debug!(pid = %format_args!("{pid:016x}"), "ICE restarted");
        if self.by_ufrag.get(&old) == Some(&pi) {
            self.by_ufrag.remove(&old);
        }
        self.by_ufrag.insert(peer.ufrag.clone(), pi);
        // A new path is a new network: its capacity is not the old one's.
        peer.bwe_reset_at = Some(now);
        let (room, publisher) = (peer.room, peer.endpoint);
        self.publisher_back(room, publisher, now);
        self.drain_peer(pi, now);
        Ok(answer)
    }

    /// A publisher's network came back: every router of its room gives the layers it gave
    /// up on meanwhile another chance.
    fn publisher_back(&mut self, room: RoomKey, publisher: EndpointId, now: Instant) {
        if let Some(rs) = self.rooms.get_mut(&room) {
            rs.router.publisher_back(publisher, now);
            for w in &rs.others {
                if self.handles[w.0].push_media(MediaMsg::PublisherBack { room, publisher }) {
                    self.wake[w.0] = true;
                }
            }
            self.drain_router(room, now);
        }
    }

    fn remove_peer(&mut self, pi: usize) {
        let Some(mut peer) = self.peers.get_mut(pi).and_then(Option::take) else {
            return;
        };
        count_stale(&mut peer, &mut self.stats);
        self.free.push(pi);
        self.unflushed -= peer.written.len();
        self.by_pid.remove(&peer.pid);
        self.by_ufrag.remove(&peer.ufrag);
        for a in &peer.addrs {
            if self.by_addr.get(a) == Some(&pi) {
                self.by_addr.remove(a);
            }
        }
        self.handles[self.id.0].load.fetch_sub(1, Ordering::Relaxed);
        if let Some(rs) = self.rooms.get_mut(&peer.room) {
            rs.router.remove_subscriber(peer.endpoint);
            rs.peers.retain(|p| *p != pi);
            if rs.peers.is_empty() {
                self.rooms.remove(&peer.room);
            }
        }
        if let Some(end) = peer.ended {
            debug!(pid = %format_args!("{:016x}", peer.pid), ?end, "media connection ended");
            let _ = self.events.send(WorkerEvent::MediaFailed { pid: peer.pid });
        }
    }

    // ---- media from other workers ----------------------------------------------------

    /// Handles media from other workers: returns false once the queue is empty, true when
    /// it stopped with more possibly waiting (its share of the loop was used, or enough was
    /// forwarded that it should be sent first).
    pub fn handle_media_queue(&mut self, now: Instant) -> bool {
        // As much as one turn of the socket reads, so neither starves the other.
        for _ in 0..RECV_BUDGET {
            let Ok(msg) = self.media.try_recv() else {
                return false;
            };
            match msg {
                MediaMsg::Rtp {
                    room,
                    pkt,
                    ext,
                    received,
                } => self.route(room, &pkt, &ext, received, now),
                MediaMsg::PublisherBack { room, publisher } => {
                    if let Some(rs) = self.rooms.get_mut(&room) {
                        rs.router.publisher_back(publisher, now);
                        self.drain_router(room, now);
                    }
                }
                MediaMsg::KeyframeRequest { room, track, layer } => {
                    if let Some(rs) = self.rooms.get_mut(&room) {
                        rs.router.request_keyframe(track, layer, now);
                        self.drain_router(room, now);
                    }
                }
                MediaMsg::Demand {
                    room,
                    track,
                    from,
                    layers,
                } => {
                    if let Some(rs) = self.rooms.get_mut(&room) {
                        rs.router
                            .handle_remote_demand(track, worker_tag(from), layers, now);
                        self.drain_router(room, now);
                    }
                }
            }
            if self.pending_forwards() >= super::FLUSH_FORWARDS {
                return true;
            }
        }
        !self.media.is_empty()
    }

    /// A datagram arrived; `now` is both when it left the kernel and the time now. Routes
    /// what it carried at once (see [`MediaCore::route_some`] for the batched way).
    pub fn handle_datagram(&mut self, source: SocketAddr, data: &[u8], now: Instant) {
        self.handle_datagram_received(source, data, now, now);
        while self.route_some(now, usize::MAX) {}
    }

    /// What the socket said of a receive batch: how long each datagram waited in its queue,
    /// and its running count of datagrams dropped for a full buffer (a 32-bit counter that
    /// wraps; counted here from 0, the count of a new socket).
    pub fn observe_receive(
        &mut self,
        waited: impl Iterator<Item = Duration>,
        overflows: Option<u32>,
    ) {
        for w in waited {
            self.stats
                .observe_receive_wait(w.as_nanos().min(u128::from(u64::MAX)) as u64);
            self.reads += 1;
            self.late_reads += u64::from(w >= LATE_WAIT);
        }
        if let Some(count) = overflows {
            let new = count.wrapping_sub(self.receive_overflows);
            self.receive_overflows = count;
            self.stats
                .drop(DropReason::ReceiveBufferFull, u64::from(new));
        }
    }

    /// A datagram that left the kernel at `received` (the start of its receive batch, which
    /// the forwarding latency counts from) is handled at `now`. The media it carries waits
    /// for [`MediaCore::route_some`], so the packets of a whole receive batch are routed
    /// together.
    pub fn handle_datagram_received(
        &mut self,
        source: SocketAddr,
        data: &[u8],
        received: Instant,
        now: Instant,
    ) {
        self.received = received;
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += data.len() as u64;
        let pi = match self.by_addr.get(&source) {
            Some(&pi) => pi,
            None => match stun::binding_request_ufrag(data).and_then(|u| self.by_ufrag.get(u)) {
                Some(&pi) => pi,
                None => {
                    self.stats.drop(DropReason::UnknownSource, 1);
                    return;
                }
            },
        };
        let Ok(receive) = Receive::new(Protocol::Udp, source, self.candidate, data) else {
            self.stats.drop(DropReason::Malformed, 1);
            return;
        };
        let Some(peer) = self.peers.get_mut(pi).and_then(Option::as_mut) else {
            return;
        };
        let gap = peer
            .last_heard
            .map(|at| now.saturating_duration_since(at))
            .filter(|gap| *gap >= OUTAGE);
        peer.last_heard = Some(now);
        if let Some(gap) = gap {
            // The client's network came back (the same path, or a new one after an ICE
            // restart): what was estimated and given up on during the outage is stale.
            debug!(pid = %format_args!("{:016x}", peer.pid), ?gap, "heard again after an outage");
            peer.bwe_reset_at = Some(now + BWE_SETTLE);
            let (room, publisher) = (peer.room, peer.endpoint);
            self.publisher_back(room, publisher, now);
        }
        let Some(peer) = self.peers.get_mut(pi).and_then(Option::as_mut) else {
            return;
        };
        // SRTP and SRTCP of a connection that is up skip the timeout pass str0m runs after
        // each datagram (every stream's timers); the connection's own deadlines still get
        // their passes from the timer heap (crates/patched/str0m/PATCHES.md).
        let media = peer.connected && matches!(data.first(), Some(128..=191));
        let rtcp = media && matches!(data.get(1), Some(192..=223));
        let rejected_before = (peer.rtc.srtp_rejected(), peer.rtc.rtp_no_stream());
        match catch_unwind(AssertUnwindSafe(|| {
            if media {
                peer.rtc.handle_receive(now, receive)
            } else {
                peer.rtc.handle_input(Input::Receive(now, receive))
            }
        })) {
            Ok(Ok(())) => {
                // What str0m dropped unread: forged or corrupt SRTP from this address, or
                // streams the connection never negotiated.
                let forged = peer.rtc.srtp_rejected() - rejected_before.0;
                if forged > 0 {
                    self.stats.drop(DropReason::Unauthenticated, forged);
                }
                let unknown = peer.rtc.rtp_no_stream() - rejected_before.1;
                if unknown > 0 {
                    self.stats.drop(DropReason::UnknownStream, unknown);
                }
                if rtcp {
                    // Repairs a subscriber's NACK asked for go out now, not at the next pass.
                    while let Some(t) = peer.rtc.poll_resend_tx(now) {
                        self.transmits.push(t);
                    }
                }
            }
            Ok(Err(e)) => {
                self.stats.drop(DropReason::Rejected, 1);
                debug!(error = %e, "datagram rejected by its connection");
            }
            Err(_) => {
                warn!(pid = %format_args!("{:016x}", peer.pid), "connection panicked; closing it");
                peer.ended = Some(PeerEnd::Crashed);
            }
        }
        self.drain_peer(pi, now);
    }

    // ---- connections -------------------------------------------------------------------

    /// Drains a connection's output, then acts on what it produced.
    fn drain_peer(&mut self, pi: usize, now: Instant) {
        let Some(peer) = self.peers.get_mut(pi).and_then(Option::as_mut) else {
            return;
        };
        if peer.ended.is_none() {
            let stats = &mut self.stats;
            let transmits = &mut self.transmits;
            let by_addr = &mut self.by_addr;
            let pending = &mut self.pending;
            let received = self.received.min(now);
            let result = catch_unwind(AssertUnwindSafe(|| {
                #[cfg(feature = "test-hooks")]
                if peer.crash {
                    panic!("test hook: this connection's handling panics");
                }
                loop {
                    match peer.rtc.poll_output() {
                        Ok(Output::Timeout(t)) => {
                            peer.next_timeout = coalesce(t, peer.last_tick, &peer.rtc);
                            break;
                        }
                        Ok(Output::Transmit(t)) => {
                            if let std::collections::hash_map::Entry::Vacant(e) =
                                by_addr.entry(t.destination)
                            {
                                // str0m only sends to addresses whose STUN it verified.
                                e.insert(pi);
                                if peer.addrs.len() >= MAX_ADDRS {
                                    // A client that keeps moving (or forges checks from
                                    // many ports with its own credentials) replaces its
                                    // oldest address rather than growing the table.
                                    let old = peer.addrs.remove(0);
                                    if by_addr.get(&old) == Some(&pi) {
                                        by_addr.remove(&old);
                                    }
                                }
                                peer.addrs.push(t.destination);
                            }
                            transmits.push(t);
                        }
                        Ok(Output::Event(e)) => {
                            handle_event(peer, e, now, received, stats, pending)
                        }
                        Err(e) => {
                            debug!(error = %e, "connection error");
                            peer.ended = Some(PeerEnd::MediaFailed);
                            break;
                        }
                    }
                }
            }));
            if result.is_err() {
                warn!(pid = %format_args!("{:016x}", peer.pid), "connection panicked; closing it");
                peer.ended = Some(PeerEnd::Crashed);
            }
        }
        if peer.ended.is_some() {
            let endpoint = peer.endpoint;
            self.remove_peer(pi);
            // What the ended connection produced goes nowhere; the batch's other media does.
            self.pending.forget(endpoint);
            return;
        }
        let room = peer.room;
        let endpoint = peer.endpoint;
        let timeout = peer.next_timeout;
        let newly_connected = !peer.connected && peer.rtc.is_connected();
        let kinds: Vec<_> = if newly_connected {
            peer.connected = true;
            peer.slots.iter().map(|s| s.kind).collect()
        } else {
            Vec::new()
        };
        self.schedule(pi, timeout);
        if newly_connected {
            // Only now can it receive: add it to the router, which maps its slots and asks
            // the publishers it will see for keyframes.
            let layout = self
                .peers
                .get(pi)
                .and_then(Option::as_ref)
                .and_then(|p| p.layout.clone());
            if let Some(rs) = self.rooms.get_mut(&room) {
                let _ = rs
                    .router
                    .add_subscriber_with_layout(endpoint, &kinds, layout, now);
                // Who speaks now, again: it may have changed since the answer.
                if let Some(peer) = self.peers.get(pi).and_then(Option::as_ref) {
                    tell_speakers(&peer.outbox, &rs.router, false);
                }
            }
            debug!(pid = %format_args!("{:016x}", endpoint.0), "media connected");
            self.drain_router(room, now);
        }
        self.process_pending(now);
    }

    /// Routes the media received since the last call, a part at a time: returns true when
    /// `transmits` datagrams are ready and more is left (send them, then call again).
    ///
    /// Forwards are ordered audio first, then by subscriber and slot, not by arrival: the
    /// packets of one frame to one subscriber then leave back to back, which the kernel
    /// takes as one GSO message instead of one send each. Order within a stream is kept.
    pub fn route_some(&mut self, now: Instant, transmits: usize) -> bool {
        if self.batch_at >= self.batch.len() {
            self.batch.clear();
            self.batch_at = 0;
            if self.pending.rtp.is_empty() {
                return false;
            }
            self.plan_batch(now);
        }
        while self.batch_at < self.batch.len() {
            let b = self.batch[self.batch_at];
            self.batch_at += 1;
            self.write_forward(&b, now);
            if self.transmits.len() >= transmits {
                return self.batch_at < self.batch.len() || !self.pending.rtp.is_empty();
            }
        }
        self.batch.clear();
        self.batch_at = 0;
        self.batch_pkts.clear();
        !self.pending.rtp.is_empty()
    }

    /// Decides where every received packet goes (other workers, this worker's
    /// subscribers) and orders the forwards for sending.
    fn plan_batch(&mut self, now: Instant) {
        let mut rtp = std::mem::take(&mut self.pending.rtp);
        self.batch_pkts.clear();
        for (room, pkt, ext, received) in rtp.drain(..) {
            if let Some(rs) = self.rooms.get(&room) {
                for w in &rs.others {
                    let msg = MediaMsg::Rtp {
                        room,
                        pkt: pkt.clone(),
                        ext,
                        received,
                    };
                    if self.handles[w.0].push_media(msg) {
                        self.wake[w.0] = true;
                    } else {
                        self.stats.drop(DropReason::QueueFull, 1);
                    }
                }
            }
            let Some(rs) = self.rooms.get_mut(&room) else {
                continue;
            };
            let ix = self.batch_pkts.len() as u32;
            let forwards = rs.router.handle_rtp(&pkt, now);
            #[cfg(debug_assertions)]
            super::tap::forwarded(&pkt, forwards.len());
            let descriptor = if forwards.iter().any(|f| f.vp8.is_some()) {
                Vp8Descriptor::parse(&pkt.payload).ok()
            } else {
                None
            };
            let video = pkt.track.source.kind() != MediaKind::Audio;
            self.batch.extend(forwards.iter().map(|f| BatchForward {
                pkt: ix,
                video,
                forward: *f,
            }));
            self.batch_pkts.push(BatchPacket {
                pkt,
                ext,
                received,
                descriptor,
            });
            self.drain_router(room, now);
        }
        self.pending.rtp = rtp;
        // Audio first: a voice packet read with a keyframe's burst leaves before the burst's
        // fan-out, not after up to a whole batch of it (a frame waits for its last packet in
        // the receiver's jitter buffer anyway; a voice packet is played as it comes). Stable:
        // a stream's packets stay in the order they came.
        self.batch
            .sort_by_key(|b| (b.video, b.forward.subscriber, b.forward.slot));
    }

    /// Writes one planned forward to its subscriber and sends what it can at once.
    fn write_forward(&mut self, b: &BatchForward, now: Instant) {
        let Some(p) = self.batch_pkts.get(b.pkt as usize) else {
            return;
        };
        let f = &b.forward;
        let Some(&si) = self.by_pid.get(&f.subscriber.0) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(si).and_then(Option::as_mut) else {
            return;
        };
        let Some(slot) = peer.slots.get(usize::from(f.slot.0)) else {
            return;
        };
        let kind = p.pkt.track.source.kind();
        let k = usize::from(kind == MediaKind::Video);
        let (ssrc, pt) = (slot.ssrc, slot.pt);
        let mut api = peer.rtc.direct_api();
        let Some(tx) = api.stream_tx(&ssrc) else {
            return;
        };
        let mut write = RtpWrite::new(pt, f.seq.into(), f.timestamp, now, p.pkt.payload.clone())
            .marker(f.marker)
            .nackable(kind == MediaKind::Video)
            .ext_vals(p.ext.values());
        if let (Some(d), Some(v)) = (&p.descriptor, f.vp8)
            && let Some(patch) = vp8_patch(d, v)
        {
            write = write.vp8_patch(patch);
        }
        tx.write_rtp(write);
        self.stats.forwarded[k] += 1;
        self.stats.forwarded_bytes[k] += p.pkt.payload.len() as u64;
        let mut sent = false;
        while let Some(t) = peer.rtc.poll_stream_tx(now, ssrc) {
            self.transmits.push(t);
            sent = true;
        }
        if sent {
            self.forwarded_at.push((p.received, k));
        } else {
            self.stats.forwarded_deferred[k] += 1;
            peer.written.push((p.received, k));
            self.unflushed += 1;
            if !peer.dirty {
                peer.dirty = true;
                self.dirty.push(si);
            }
        }
    }

    fn process_pending(&mut self, now: Instant) {
        let keyframes = std::mem::take(&mut self.pending.keyframes);
        for (room, sub, slot) in &keyframes {
            if let Some(rs) = self.rooms.get_mut(room) {
                rs.router.handle_keyframe_request(*sub, *slot, now);
                self.drain_router(*room, now);
            }
        }
        self.pending.keyframes = keyframes;
        self.pending.keyframes.clear();
        for (room, track, layer, paused) in self.pending.paused.drain(..) {
            if let Some(rs) = self.rooms.get_mut(&room) {
                rs.router.handle_layer_paused(track, layer, paused);
            }
        }
        let estimates = std::mem::take(&mut self.pending.estimates);
        for &(room, endpoint, bps) in &estimates {
            trace!(participant = %format_args!("{:016x}", endpoint.0), ?bps, "downlink estimate");
            if let Some(rs) = self.rooms.get_mut(&room) {
                rs.router.set_estimate(endpoint, bps, now);
                self.drain_router(room, now);
            }
        }
        self.pending.estimates = estimates;
        self.pending.estimates.clear();
    }

    /// Writes one packet to every subscriber on this worker the router picks.
    fn route(
        &mut self,
        room: RoomKey,
        pkt: &RtpIn,
        ext: &ForwardExt,
        received: Instant,
        now: Instant,
    ) {
        let Some(rs) = self.rooms.get_mut(&room) else {
            return;
        };
        let kind = pkt.track.source.kind();
        let k = usize::from(kind == MediaKind::Video);
        let forwards = rs.router.handle_rtp(pkt, now);
        #[cfg(debug_assertions)]
        super::tap::forwarded(pkt, forwards.len());
        // Parsed once per packet, patched per subscriber as it is written out (str0m
        // applies the patch while it copies the payload into the datagram anyway).
        let descriptor = if forwards.iter().any(|f| f.vp8.is_some()) {
            Vp8Descriptor::parse(&pkt.payload).ok()
        } else {
            None
        };
        for f in forwards {
            let Some(&si) = self.by_pid.get(&f.subscriber.0) else {
                continue;
            };
            let Some(peer) = self.peers.get_mut(si).and_then(Option::as_mut) else {
                continue;
            };
            let Some(slot) = peer.slots.get(usize::from(f.slot.0)) else {
                continue;
            };
            let (ssrc, pt) = (slot.ssrc, slot.pt);
            let mut api = peer.rtc.direct_api();
            let Some(tx) = api.stream_tx(&ssrc) else {
                continue;
            };
            let mut write = RtpWrite::new(pt, f.seq.into(), f.timestamp, now, pkt.payload.clone())
                .marker(f.marker)
                .nackable(kind == MediaKind::Video)
                .ext_vals(ext.values());
            if let (Some(d), Some(v)) = (&descriptor, f.vp8)
                && let Some(patch) = vp8_patch(d, v)
            {
                write = write.vp8_patch(patch);
            }
            tx.write_rtp(write);
            self.stats.forwarded[k] += 1;
            self.stats.forwarded_bytes[k] += pkt.payload.len() as u64;
            // Encrypt and hand it out now, rather than in a timeout pass over every stream
            // of the connection (crates/patched/str0m/PATCHES.md).
            let mut sent = false;
            while let Some(t) = peer.rtc.poll_stream_tx(now, ssrc) {
                self.transmits.push(t);
                sent = true;
            }
            if sent {
                self.forwarded_at.push((received, k));
            } else {
                // Not yet sendable this way (the stream's first timeout is still to come):
                // the connection's next tick sends it.
                self.stats.forwarded_deferred[k] += 1;
                peer.written.push((received, k));
                self.unflushed += 1;
                if !peer.dirty {
                    peer.dirty = true;
                    self.dirty.push(si);
                }
            }
        }
        self.drain_router(room, now);
    }

    /// Acts on what a room's router asks for.
    fn drain_router(&mut self, room: RoomKey, _now: Instant) {
        let Some(rs) = self.rooms.get_mut(&room) else {
            return;
        };
        while let Some(out) = rs.router.poll_output() {
            match out {
                RouterOutput::RequestKeyframe {
                    track,
                    layer,
                    local,
                } => {
                    if local {
                        let Some(&pi) = self.by_pid.get(&track.endpoint.0) else {
                            continue;
                        };
                        let Some(peer) = self.peers.get_mut(pi).and_then(Option::as_mut) else {
                            continue;
                        };
                        let Some((mid, rid)) = peer.stream_for(track.source, layer) else {
                            continue;
                        };
                        if let Some(rx) = peer.rtc.direct_api().stream_rx_by_mid(mid, rid) {
                            rx.request_keyframe(KeyframeRequestKind::Pli);
                            if !peer.dirty {
                                peer.dirty = true;
                                self.dirty.push(pi);
                            }
                        }
                    } else if let Some(w) = rs.track_workers.get(&track) {
                        let msg = MediaMsg::KeyframeRequest { room, track, layer };
                        if self.handles[w.0].push_media(msg) {
                            self.wake[w.0] = true;
                        }
                    }
                }
                RouterOutput::SlotChanged {
                    subscriber,
                    slot,
                    track,
                    paused,
                } => {
                    let Some(&pi) = self.by_pid.get(&subscriber.0) else {
                        continue;
                    };
                    if let Some(peer) = self.peers.get_mut(pi).and_then(Option::as_mut)
                        && let Some(t) = peer.slot_tracks.get_mut(usize::from(slot.0))
                    {
                        *t = track.map(|t| (t, paused));
                        if !peer.slots_changed {
                            peer.slots_changed = true;
                            self.slot_updates.push(pi);
                        }
                    }
                }
                RouterOutput::SpeakingChanged { speaking } => {
                    let msg = OutMsg::new(&ServerMsg::Speaking {
                        participants: speaking.iter().map(|e| participant_ref(*e)).collect(),
                    });
                    tell_connected(&self.peers, &rs.peers, &msg);
                }
                RouterOutput::ActiveSpeaker { endpoint } => {
                    let msg = OutMsg::new(&ServerMsg::ActiveSpeaker {
                        participant: endpoint.map(participant_ref),
                    });
                    tell_connected(&self.peers, &rs.peers, &msg);
                }
                RouterOutput::SendLayers {
                    track,
                    layers,
                    count,
                } => {
                    let Some(peer) = self
                        .by_pid
                        .get(&track.endpoint.0)
                        .and_then(|&pi| self.peers.get(pi))
                        .and_then(Option::as_ref)
                    else {
                        continue;
                    };
                    let source = match track.source {
                        Source::Microphone => continue,
                        Source::Camera => ting_proto::Source::Camera,
                        Source::Screen => ting_proto::Source::Screen,
                    };
                    self.stats.layer_changes += 1;
                    let _ = peer.outbox.send(OutMsg::new(&ServerMsg::SendLayers {
                        source,
                        active: layers.flags(count),
                    }));
                }
                RouterOutput::RemoteDemand { track, layers } => {
                    if let Some(w) = rs.track_workers.get(&track) {
                        let msg = MediaMsg::Demand {
                            room,
                            track,
                            from: self.id,
                            layers,
                        };
                        if self.handles[w.0].push_media(msg) {
                            self.wake[w.0] = true;
                        }
                    }
                }
                RouterOutput::DesiredBitrate {
                    subscriber,
                    bps,
                    probe,
                } => {
                    if let Some(peer) = self
                        .by_pid
                        .get(&subscriber.0)
                        .and_then(|&pi| self.peers.get_mut(pi))
                        .and_then(Option::as_mut)
                    {
                        // Probing toward what the layout would use lets the estimate grow
                        // past what is sent now. str0m probes when the desired bitrate
                        // rises, so a repeated ask first dips it a little; the next ask
                        // raises it back, which probes.
                        let set = if probe && peer.desired_bps == bps {
                            bps - bps / 64
                        } else {
                            bps
                        };
                        peer.desired_bps = set;
                        peer.rtc.bwe().set_bitrate(Bitrate::ZERO, Bitrate::bps(set));
                    }
                }
            }
        }
    }

    // ---- time --------------------------------------------------------------------------

    fn schedule(&mut self, pi: usize, at: Instant) {
        let Some(peer) = self.peers.get_mut(pi).and_then(Option::as_mut) else {
            return;
        };
        if peer.scheduled.is_none_or(|s| at < s) {
            peer.scheduled = Some(at);
            self.timers.push(std::cmp::Reverse((at, pi)));
        }
    }

    fn expire_timers(&mut self, now: Instant) {
        while let Some(&std::cmp::Reverse((at, pi))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(peer) = self.peers.get_mut(pi).and_then(Option::as_mut) else {
                continue;
            };
            if peer.scheduled != Some(at) {
                continue; // superseded by an earlier deadline
            }
            peer.scheduled = None;
            if peer.next_timeout <= now {
                let cause = TickCause::of(peer.rtc.last_timeout_reason());
                self.tick(pi, now, cause);
            } else {
                let next = peer.next_timeout;
                self.schedule(pi, next);
            }
        }
    }

    fn tick(&mut self, pi: usize, now: Instant, cause: TickCause) {
        let Some(peer) = self.peers.get_mut(pi).and_then(Option::as_mut) else {
            return;
        };
        self.stats.ticks[cause as usize] += 1;
        peer.dirty = false;
        peer.last_tick = Some(now);
        // What was written to it leaves with this tick's output.
        self.unflushed -= peer.written.len();
        self.forwarded_at.append(&mut peer.written);
        let reset_bwe = peer.bwe_reset_at.is_some_and(|at| at <= now);
        if reset_bwe {
            peer.bwe_reset_at = None;
        }
        match catch_unwind(AssertUnwindSafe(|| {
            if reset_bwe {
                peer.rtc.bwe().reset(Bitrate::bps(INITIAL_ESTIMATE_BPS));
            }
            peer.rtc.handle_input(Input::Timeout(now))
        })) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                debug!(error = %e, "connection timeout handling failed");
                peer.ended = Some(PeerEnd::MediaFailed);
            }
            Err(_) => peer.ended = Some(PeerEnd::Crashed),
        }
        self.drain_peer(pi, now);
    }

    fn expire_routers(&mut self, now: Instant) {
        let due: Vec<RoomKey> = self
            .rooms
            .iter()
            .filter(|(_, r)| r.router.poll_timeout().is_some_and(|t| t <= now))
            .map(|(k, _)| *k)
            .collect();
        for room in due {
            if let Some(rs) = self.rooms.get_mut(&room) {
                rs.router.handle_timeout(now);
            }
            self.drain_router(room, now);
        }
    }

    /// Ticks every connection once, due or not (benchmarks: what one timeout pass of each
    /// connection costs). Afterwards [`MediaCore::transmits`] holds what to send.
    pub fn tick_all(&mut self, now: Instant) {
        for pi in 0..self.peers.len() {
            if self.peers[pi].is_some() {
                self.tick(pi, now, TickCause::Other);
            }
        }
    }

    /// Ticks every connection written to; afterwards [`MediaCore::transmits`] holds what
    /// to send.
    pub fn flush_connections(&mut self, now: Instant) {
        while self.flush_some(now, usize::MAX) {}
    }

    /// Ticks connections written to, in the order they were written, until at least
    /// `datagrams` are waiting to be sent. Returns true when connections are left to tick:
    /// send [`MediaCore::transmits`], then call again. Sending between connections lets the
    /// first subscribers of a burst get their packets without waiting for the last ones'.
    pub fn flush_some(&mut self, now: Instant, datagrams: usize) -> bool {
        while self.dirty_at < self.dirty.len() {
            let pi = self.dirty[self.dirty_at];
            self.dirty_at += 1;
            self.tick(pi, now, TickCause::Written);
            if self.transmits.len() >= datagrams {
                return self.dirty_at < self.dirty.len();
            }
        }
        self.dirty.clear();
        self.dirty_at = 0;
        false
    }

    /// Forwarded packets not yet handed to the socket: written to connections and not yet
    /// ticked out, or encrypted and waiting in [`MediaCore::transmits`]. The worker sends
    /// once this reaches [`super::FLUSH_FORWARDS`].
    pub fn pending_forwards(&self) -> usize {
        self.unflushed + self.transmits.len()
    }

    /// The datagrams to send.
    pub fn transmits(&self) -> &[str0m::net::Transmit] {
        &self.transmits
    }

    /// The datagrams were handed to the socket at `sent` with `result`: count them, time
    /// the forwarded packets among them, tell clients of slot changes, wake other workers.
    pub fn finish_send(&mut self, result: udp::SendResult, sent: Instant) {
        let bytes: usize = self.transmits.iter().map(|t| t.contents.len()).sum();
        self.stats.datagrams_out += result.sent as u64;
        self.stats.bytes_out += bytes as u64;
        self.stats
            .drop(DropReason::SendFailed, result.failed as u64);
        self.stats
            .drop(DropReason::SendBufferFull, result.dropped as u64);
        self.transmits.clear();
        for (at, k) in self.forwarded_at.drain(..) {
            let ns = sent.saturating_duration_since(at).as_nanos() as u64;
            self.stats.observe_latency(k, ns);
        }
        for pi in std::mem::take(&mut self.slot_updates) {
            if let Some(peer) = self.peers.get_mut(pi).and_then(Option::as_mut) {
                peer.slots_changed = false;
                let _ = peer.outbox.send(OutMsg::new(&ServerMsg::Slots {
                    slots: peer.slot_message(),
                }));
            }
        }
        for (w, wake) in self.wake.iter_mut().enumerate() {
            if std::mem::take(wake) {
                self.handles[w].wake();
            }
        }
    }

    /// Time passed: connections and routers whose deadlines are due, lost connections,
    /// and the periodic publishing of counters.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire_timers(now);
        self.expire_routers(now);
        if now >= self.next_quality {
            self.sample_quality(now);
            self.next_quality = now + QUALITY_INTERVAL;
        }
        if now >= self.next_publish {
            self.end_lost_connections(now);
            self.stats.cpu_ns = thread_cpu_ns();
            self.stats.connections = self.by_pid.len() as u64;
            self.counters.publish(&self.stats);
            self.next_publish = now + PUBLISH_INTERVAL;
        }
    }

    /// The share of its core the worker's thread used since the last call (the worker
    /// loop reports it about once a second): a core that stays full, or a socket whose
    /// datagrams are read late (counted since the last call from what
    /// [`MediaCore::observe_receive`] saw), sheds thumbnail frames in every room on this
    /// worker; one that has room again restores them (`ting_media::load`).
    pub fn observe_load(&mut self, busy: f32, now: Instant) {
        let late = if self.reads == 0 {
            0.0
        } else {
            self.late_reads as f32 / self.reads as f32
        };
        (self.reads, self.late_reads) = (0, 0);
        let Some(shedder) = self.shedder.as_mut() else {
            return;
        };
        let Some(cap) = shedder.observe(busy, late, now) else {
            return;
        };
        let shedding = shedder.is_shedding();
        if shedding {
            self.stats.sheds += 1;
            warn!(
                worker = self.id.0,
                busy = format_args!("{:.0} %", busy * 100.0),
                read_late = format_args!("{:.0} %", late * 100.0),
                "media worker's core is full: thumbnails drop to the base temporal layer and connections stop probing until it is not"
            );
        } else {
            info!(
                worker = self.id.0,
                busy = format_args!("{:.0} %", busy * 100.0),
                "media worker has room again: thumbnails get their usual frames and connections probe again"
            );
        }
        self.stats.shedding = u64::from(shedding);
        self.router_config.thumbnail_temporal_layer = cap;
        for rs in self.rooms.values_mut() {
            rs.router.set_thumbnail_temporal_layer(cap);
        }
        // Nor do its connections probe for more bandwidth: the core, not the path, limits
        // what they can be sent, and a probe cluster's paced padding and held-back media
        // cost timeout passes. Probing starts over when the core has room again.
        for peer in self.peers.iter_mut().flatten() {
            peer.rtc.bwe().set_probing_paused(shedding);
        }
    }

    /// Whether the worker's core is full and it sheds load (`media.load_shedding`).
    fn shedding(&self) -> bool {
        self.shedder.as_ref().is_some_and(LoadShedder::is_shedding)
    }

    /// Whether commands or media from other workers wait.
    pub fn has_queued(&self) -> bool {
        !self.commands.is_empty() || !self.media.is_empty()
    }

    /// The counters so far (benchmarks read them directly).
    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }
}

/// The shortest time between two timeout passes of a connection for timers that can
/// wait: transport-wide feedback (due every 50 ms), the bandwidth estimator's update (every
/// 25 ms), NACK, reports. One pass then serves all that fell due, instead of a pass over
/// every stream of the connection for each.
/// How often each connection's quality is sampled.
const QUALITY_INTERVAL: Duration = Duration::from_secs(1);
/// Silence from a client after which it is taken to have had an outage when heard again
/// (media and consent checks come far more often than this).
const OUTAGE: Duration = Duration::from_secs(2);
/// How long after an outage the bandwidth estimate starts afresh.
const BWE_SETTLE: Duration = Duration::from_millis(2500);
/// Remote addresses remembered per connection: its current path, the one it moved from,
/// and room for a few ICE restarts in between.
const MAX_ADDRS: usize = 4;
const SOFT_TICK_GAP: std::time::Duration = std::time::Duration::from_millis(50);

/// When to give a connection its next timeout pass, given the deadline it asks for.
/// Handshakes and the pacer's probe clusters (whose packets must be spaced as planned) get
/// their exact times; other timers are served at most every [`SOFT_TICK_GAP`].
fn coalesce(deadline: Instant, last_tick: Option<Instant>, rtc: &str0m::Rtc) -> Instant {
    use str0m::Reason;
    let exact = matches!(
        rtc.last_timeout_reason(),
        Reason::DTLS | Reason::Ice | Reason::Pacer(_) | Reason::NotHappening
    );
    match last_tick {
        Some(last) if !exact => deadline.max(last + SOFT_TICK_GAP),
        _ => deadline,
    }
}

/// Tells one participant who speaks now and who the active speaker is, as a room's
/// `speaking` and `active_speaker` messages would: to a joiner, so that it does not wait
/// for the next change, and after a `resume`. With `always` false, says nothing of an
/// empty set or of no speaker yet (what a fresh client assumes anyway).
fn tell_speakers(outbox: &Outbox, router: &Router, always: bool) {
    let speaking = router.speaking();
    if always || !speaking.is_empty() {
        let _ = outbox.send(OutMsg::new(&ServerMsg::Speaking {
            participants: speaking.iter().map(|e| participant_ref(*e)).collect(),
        }));
    }
    let active = router.active_speaker();
    if always || active.is_some() {
        let _ = outbox.send(OutMsg::new(&ServerMsg::ActiveSpeaker {
            participant: active.map(participant_ref),
        }));
    }
}

/// A participant id as the protocol writes it.
fn participant_ref(e: EndpointId) -> ParticipantRef {
    ParticipantRef(format!("{:016x}", e.0))
}

/// The tag a router knows another worker by.
fn worker_tag(w: WorkerId) -> u32 {
    w.0 as u32
}

/// Sends `msg` to every connected peer of `room_peers`.
fn tell_connected(peers: &[Option<Peer>], room_peers: &[usize], msg: &OutMsg) {
    for &pi in room_peers {
        if let Some(peer) = peers.get(pi).and_then(Option::as_ref)
            && peer.connected
        {
            let _ = peer.outbox.send(msg.clone());
        }
    }
}

/// What draining a connection produced that concerns others: acted on after the drain.
#[derive(Debug, Default)]
struct Pending {
    /// RTP received (with when), to route once the receive batch is read.
    rtp: Vec<(RoomKey, RtpIn, ForwardExt, Instant)>,
    /// Subscribers' keyframe requests (PLI/FIR) by slot.
    keyframes: Vec<(RoomKey, EndpointId, SlotId)>,
    /// Publishers' streams that stopped or resumed.
    paused: Vec<(RoomKey, TrackId, LayerId, bool)>,
    /// Subscribers' new bandwidth estimates.
    estimates: Vec<(RoomKey, EndpointId, Option<u64>)>,
}

impl Pending {
    /// Drops what `endpoint`'s connection produced.
    fn forget(&mut self, endpoint: EndpointId) {
        self.rtp.retain(|r| r.1.track.endpoint != endpoint);
        self.keyframes.retain(|k| k.1 != endpoint);
        self.paused.retain(|p| p.1.endpoint != endpoint);
        self.estimates.retain(|e| e.1 != endpoint);
    }
}

/// One event of a connection, handled while it is drained. Anything that needs another
/// connection is queued and done after the drain.
fn handle_event(
    peer: &mut Peer,
    event: Event,
    now: Instant,
    received: Instant,
    stats: &mut WorkerStats,
    pending: &mut Pending,
) {
    match event {
        Event::RtpPacket(p) => {
            let Some((track, layer)) = peer.track_of(p.header.ssrc) else {
                stats.drop(DropReason::UnknownStream, 1);
                return;
            };
            let k = usize::from(track.source.kind() == MediaKind::Video);
            stats.rtp_in[k] += 1;
            stats.rtp_in_bytes[k] += p.payload.len() as u64;
            let ext = p.header.ext_vals;
            let pkt = RtpIn {
                track,
                layer,
                seq: *p.seq_no,
                timestamp: p.header.timestamp,
                marker: p.header.marker,
                audio_level: super::peer::audio_level(&ext),
                voice_activity: ext.voice_activity,
                payload: p.payload,
            };
            let forward_ext = ForwardExt {
                audio_level: ext.audio_level,
                voice_activity: ext.voice_activity,
                video_orientation: ext.video_orientation,
            };
            pending.rtp.push((peer.room, pkt, forward_ext, received));
        }
        Event::KeyframeRequest(req) => {
            if let Some(i) = peer.slots.iter().position(|s| s.mid == req.mid) {
                pending
                    .keyframes
                    .push((peer.room, peer.endpoint, SlotId(i as u16)));
            }
        }
        Event::StreamPaused(p) => {
            if let Some(pb) = peer.published.iter().find(|pb| pb.mid == p.mid) {
                let layer = match p.rid {
                    None => Some(0),
                    Some(rid) => pb.rids.iter().position(|r| *r == rid),
                };
                if let Some(layer) = layer.filter(|l| *l < LayerId::MAX) {
                    pending.paused.push((
                        peer.room,
                        TrackId::new(peer.endpoint, pb.source),
                        LayerId(layer as u8),
                        p.paused,
                    ));
                }
            }
        }
        Event::EgressBitrateEstimate(BweKind::Twcc {
            estimate,
            can_probe,
        }) => {
            // Without transport-wide feedback from the client there is no estimate: the
            // router then chooses layers by tile size alone.
            let bps = can_probe.then(|| estimate.as_u64());
            peer.estimate_bps = bps;
            pending.estimates.push((peer.room, peer.endpoint, bps));
        }
        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
            peer.disconnected_since.get_or_insert(now);
        }
        Event::IceConnectionStateChange(_) => peer.disconnected_since = None,
        Event::Closed => peer.ended = Some(PeerEnd::MediaFailed),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::standalone_cores;
    use ting_media::{EndpointId, LayerId, RouterConfig, Source, TrackId};

    fn core() -> (Arc<[WorkerHandle]>, MediaCore) {
        core_with(false)
    }

    fn core_with(load_shedding: bool) -> (Arc<[WorkerHandle]>, MediaCore) {
        let (events, _) = mpsc::unbounded_channel();
        let setup = CoreSetup {
            id: WorkerId(0),
            candidate: "127.0.0.1:40000".parse().unwrap(),
            events,
            counters: Arc::new(WorkerCounters::default()),
            media_grace: Duration::from_secs(5),
            router: RouterConfig::default(),
            load_shedding,
        };
        let (handles, mut cores) = standalone_cores(vec![setup]).expect("core");
        (handles, cores.remove(0))
    }

    #[test]
    fn a_socket_read_late_sheds_load_though_the_thread_has_room() {
        let (_h, mut core) = core_with(true);
        let t = Instant::now();
        let second = |i: u64| t + Duration::from_secs(i);
        let reads = |late: usize| {
            let mut w = vec![Duration::from_micros(50); 100 - late];
            w.extend(vec![LATE_WAIT + Duration::from_millis(5); late]);
            w.into_iter()
        };
        // The thread at 80 % of its core, reads on time: nothing to shed.
        for i in 0..4 {
            core.observe_receive(reads(0), None);
            core.observe_load(0.8, second(i));
        }
        assert_eq!(core.stats().shedding, 0);
        // A tenth of each second's reads late, the thread still at 80 %: it sheds once the
        // hold has passed.
        for i in 4..7 {
            core.observe_receive(reads(10), None);
            core.observe_load(0.8, second(i));
        }
        assert_eq!(core.stats().shedding, 1);
        assert_eq!(core.stats().sheds, 1);
        // The late share is per sample: a quiet second with no reads counts as none late,
        // but the thread's share still holds it.
        for i in 7..20 {
            core.observe_load(0.7, second(i));
        }
        assert_eq!(core.stats().shedding, 1);
    }

    #[test]
    fn the_sockets_drop_count_is_counted_once_and_across_its_wrap() {
        let (_h, mut core) = core();
        let drops = |c: &MediaCore| c.stats().drops[DropReason::ReceiveBufferFull as usize];
        let ms = Duration::from_millis;
        core.observe_receive([ms(2), ms(300)].into_iter(), None);
        assert_eq!(drops(&core), 0);
        assert_eq!(core.stats().receive_wait_count, 2);
        core.observe_receive(std::iter::empty(), Some(7));
        core.observe_receive(std::iter::empty(), Some(7));
        assert_eq!(drops(&core), 7, "a count repeated adds nothing");
        core.observe_receive(std::iter::empty(), Some(u32::MAX));
        core.observe_receive(std::iter::empty(), Some(3));
        assert_eq!(
            drops(&core),
            u64::from(u32::MAX) + 4,
            "the 32-bit count wrapped"
        );
    }

    /// How many turns of the worker loop a queue takes to empty.
    fn turns(mut handle: impl FnMut() -> bool) -> usize {
        let mut turns = 1;
        while handle() {
            turns += 1;
            assert!(turns < 1000, "the queue never empties");
        }
        turns
    }

    #[test]
    fn a_flood_from_other_workers_is_handled_a_share_per_turn() {
        let (handles, mut core) = core();
        let track = TrackId::new(EndpointId(7), Source::Camera);
        for _ in 0..2 * RECV_BUDGET + 1 {
            assert!(handles[0].push_media(MediaMsg::KeyframeRequest {
                room: RoomKey(1),
                track,
                layer: LayerId(0),
            }));
        }
        let now = Instant::now();
        assert!(core.handle_media_queue(now), "the whole flood in one turn");
        assert_eq!(core.media.len(), RECV_BUDGET + 1);
        assert_eq!(turns(|| core.handle_media_queue(now)), 2);
        assert!(!core.has_queued());
    }

    #[test]
    fn a_burst_of_commands_is_handled_a_share_per_turn() {
        let (handles, mut core) = core();
        for pid in 0..2 * COMMAND_BUDGET as u64 + 1 {
            handles[0].command(WorkerCmd::Disconnect { pid });
        }
        let now = Instant::now();
        assert!(core.handle_commands(now), "the whole burst in one turn");
        assert_eq!(core.commands.len(), COMMAND_BUDGET + 1);
        assert_eq!(turns(|| core.handle_commands(now)), 2);
        assert!(!core.has_queued());
        assert!(!core.shutdown);
    }
}
