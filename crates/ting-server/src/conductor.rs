//! The conductor: one task that owns the rooms (`ting_control::Rooms`), places
//! participants on media workers, and tells everyone what changed.
//!
//! WebSocket sessions send it [`ConductorCmd`]s; workers send it [`WorkerEvent`]s. It is the
//! only writer of room membership and of the track lists the workers' routers hold, so the
//! workers see every room change in one order: a new worker of a room gets a snapshot of the
//! room's tracks with its first connection, then every later change.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Instant;

use ting_control::{
    ControlEvent, JoinError, LeaveReason, MediaState, ParticipantId, RoomName, Rooms, RoomsConfig,
};
use ting_media::{EndpointId, LayoutSpec, Source, TileSpec, TrackId};
use ting_proto::{
    ErrorCode, ErrorMsg, Limits, Offer, PROTOCOL_VERSION, ParticipantInfo, ParticipantRef,
    ServerMsg, Welcome,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, info_span};

use crate::config::Config;
use crate::metrics::{Limit, Metrics};
use crate::ratelimit::TokenBucket;
use crate::setup::{SetupDone, SetupJob};
use crate::worker::{
    ConnectReq, OutMsg, Outbox, PublishedTrack, RoomKey, TrackDesc, WorkerCmd, WorkerEvent,
    WorkerHandle, WorkerId,
};

/// What sessions ask of the conductor.
#[derive(Debug)]
pub enum ConductorCmd {
    Join {
        room: String,
        name: String,
        /// The client's IP address, for per-address limits; never logged.
        address: IpAddr,
        outbox: Outbox,
        reply: oneshot::Sender<Result<(ParticipantId, Welcome), ErrorMsg>>,
    },
    /// Answered with the SDP answer, or with the error (the offer's, or the room's).
    Offer {
        pid: ParticipantId,
        offer: Offer,
        reply: oneshot::Sender<Result<String, ErrorMsg>>,
    },
    Media {
        pid: ParticipantId,
        media: ting_proto::MediaState,
    },
    /// What the client shows; answered with an error when it is not acceptable.
    Layout {
        pid: ParticipantId,
        layout: ting_proto::Layout,
        reply: oneshot::Sender<Result<(), ErrorMsg>>,
    },
    Seen {
        pid: ParticipantId,
    },
    Leave {
        pid: ParticipantId,
        reason: LeaveReason,
    },
}

impl ConductorCmd {
    /// The participant a command comes from, once joined.
    fn participant(&self) -> Option<ParticipantId> {
        match self {
            ConductorCmd::Join { .. } => None,
            ConductorCmd::Offer { pid, .. }
            | ConductorCmd::Media { pid, .. }
            | ConductorCmd::Layout { pid, .. }
            | ConductorCmd::Seen { pid }
            | ConductorCmd::Leave { pid, .. } => Some(*pid),
        }
    }
}

/// Test hooks: a participant whose display name is one of these makes the conductor, or its
/// media worker, panic while handling it.
#[cfg(feature = "test-hooks")]
pub const PANIC_IN_CONDUCTOR: &str = "test-hook: panic in conductor";
#[cfg(feature = "test-hooks")]
pub const PANIC_IN_WORKER: &str = "test-hook: panic in worker";

struct Member {
    outbox: Outbox,
    room: RoomName,
    key: RoomKey,
    worker: Option<WorkerId>,
    /// Its offer is being built into a connection (`crate::setup`).
    connecting: bool,
    /// What the media connection publishes, once connected.
    published: Vec<PublishedTrack>,
    /// The client's layout, kept for its connection's router.
    layout: Option<LayoutSpec>,
    /// The tracks the workers' routers were told of.
    announced: Vec<Source>,
    media: MediaState,
}

pub struct Conductor {
    rooms: Rooms,
    config: Arc<Config>,
    workers: Arc<[WorkerHandle]>,
    metrics: Arc<Metrics>,
    members: HashMap<ParticipantId, Member>,
    keys: HashMap<RoomName, RoomKey>,
    next_key: u64,
    /// Per room, how many of its participants each worker holds.
    room_workers: HashMap<RoomKey, BTreeMap<WorkerId, usize>>,
    /// Offers handed to a worker and not answered yet.
    pending_offers: HashMap<ParticipantId, oneshot::Sender<Result<String, ErrorMsg>>>,
    ready: Arc<AtomicBool>,
    /// Who opened each open room, and how many open rooms each address opened
    /// (`limits.max_rooms_per_address`).
    room_openers: HashMap<RoomName, IpAddr>,
    rooms_by_address: HashMap<IpAddr, usize>,
    /// Joins per address (`limits.joins_per_second_per_address`).
    join_buckets: HashMap<IpAddr, TokenBucket>,
    /// Where offers go to be built into connections.
    setup: std::sync::mpsc::Sender<SetupJob>,
}

impl std::fmt::Debug for Conductor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conductor")
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}

fn to_proto_media(m: MediaState) -> ting_proto::MediaState {
    ting_proto::MediaState {
        audio: m.audio,
        video: m.video,
        screen: m.screen,
    }
}

fn pref(id: ParticipantId) -> ParticipantRef {
    ParticipantRef(id.to_string())
}

/// A participant id as clients write it: 16 hex digits. Anything else names nobody.
fn parse_pid(r: &ParticipantRef) -> Option<EndpointId> {
    let s = r.0.as_str();
    if s.len() != 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok().map(EndpointId)
}

/// The tallest tile a layout may ask for (8K); larger heights mean the same.
const MAX_TILE_HEIGHT: u32 = 4320;

/// A client's layout as the router takes it. Tiles naming nobody in this server's id
/// form are dropped (the participant may have just left, or the client is confused; a
/// layout is a wish, not a command). Too many tiles is an error the client should see.
pub fn layout_spec(layout: &ting_proto::Layout) -> Result<LayoutSpec, String> {
    if layout.tiles.len() > LayoutSpec::MAX_TILES {
        return Err(format!(
            "the layout has {} tiles; at most {} are read",
            layout.tiles.len(),
            LayoutSpec::MAX_TILES
        ));
    }
    let tiles = layout
        .tiles
        .iter()
        .filter_map(|t| {
            let endpoint = match &t.participant {
                None => None,
                Some(r) => Some(parse_pid(r)?),
            };
            Some(TileSpec {
                endpoint,
                height: t.height.min(MAX_TILE_HEIGHT) as u16,
            })
        })
        .collect();
    Ok(LayoutSpec {
        view: match layout.view {
            ting_proto::View::Speaker => ting_media::View::Speaker,
            ting_proto::View::Grid => ting_media::View::Grid,
        },
        tiles,
    })
}

impl Conductor {
    pub fn new(
        config: Arc<Config>,
        workers: Arc<[WorkerHandle]>,
        metrics: Arc<Metrics>,
        ready: Arc<AtomicBool>,
        setup: std::sync::mpsc::Sender<SetupJob>,
        seed: u64,
    ) -> Conductor {
        let rooms = Rooms::new(
            RoomsConfig {
                max_rooms: config.limits.max_rooms,
                max_participants_per_room: config.limits.max_participants_per_room,
                participant_timeout: config.participant_timeout(),
            },
            seed,
        );
        Conductor {
            rooms,
            config,
            workers,
            metrics,
            members: HashMap::new(),
            keys: HashMap::new(),
            next_key: 1,
            room_workers: HashMap::new(),
            pending_offers: HashMap::new(),
            ready,
            room_openers: HashMap::new(),
            rooms_by_address: HashMap::new(),
            join_buckets: HashMap::new(),
            setup,
        }
    }

    /// Runs until `shutdown` resolves, then tells everyone and stops the workers.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<ConductorCmd>,
        mut events: mpsc::UnboundedReceiver<WorkerEvent>,
        mut built: mpsc::UnboundedReceiver<SetupDone>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            let deadline = self.rooms.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.handle_command_contained(cmd),
                    None => break,
                },
                Some(ev) = events.recv() => self.handle_worker_event(ev),
                Some(done) = built.recv() => self.connection_built(done),
                _ = sleep => self.rooms.handle_timeout(Instant::now()),
                _ = &mut shutdown => break,
            }
            self.dispatch_events();
        }
        self.shut_down();
    }

    /// Handles a command; a panic while handling it removes the participant it came from
    /// (its session then ends) and leaves everyone else as they were.
    fn handle_command_contained(&mut self, cmd: ConductorCmd) {
        let pid = cmd.participant();
        let handled =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handle_command(cmd)));
        if handled.is_err() {
            tracing::error!(
                participant = ?pid,
                "handling a participant's command panicked; removing that participant"
            );
            if let Some(pid) = pid {
                self.rooms.handle_leave(pid, LeaveReason::MediaFailed);
            }
        }
    }

    fn handle_command(&mut self, cmd: ConductorCmd) {
        let now = Instant::now();
        match cmd {
            ConductorCmd::Join {
                room,
                name,
                address,
                outbox,
                reply,
            } => {
                let _ = reply.send(self.join(&room, &name, address, outbox, now));
            }
            ConductorCmd::Offer { pid, offer, reply } => {
                self.rooms.handle_seen(pid, now);
                match self.offer(pid, offer) {
                    Ok(()) => {
                        self.pending_offers.insert(pid, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            ConductorCmd::Media { pid, media } => {
                self.rooms.handle_seen(pid, now);
                #[cfg(feature = "test-hooks")]
                self.test_hook(pid);
                self.rooms.handle_media(
                    pid,
                    MediaState {
                        audio: media.audio,
                        video: media.video,
                        screen: media.screen,
                    },
                );
            }
            ConductorCmd::Layout { pid, layout, reply } => {
                self.rooms.handle_seen(pid, now);
                #[cfg(feature = "test-hooks")]
                self.test_hook(pid);
                let _ = reply.send(self.layout(pid, &layout));
            }
            ConductorCmd::Seen { pid } => self.rooms.handle_seen(pid, now),
            ConductorCmd::Leave { pid, reason } => self.rooms.handle_leave(pid, reason),
        }
    }

    /// Panics, or makes the participant's worker panic, for a participant named as a hook.
    #[cfg(feature = "test-hooks")]
    fn test_hook(&self, pid: ParticipantId) {
        let Some(p) = self.rooms.participant(pid) else {
            return;
        };
        if p.name.expose() == PANIC_IN_CONDUCTOR {
            panic!("test hook: the conductor panics handling this participant");
        }
        if p.name.expose() == PANIC_IN_WORKER
            && let Some(w) = self.members.get(&pid).and_then(|m| m.worker)
        {
            self.workers[w.0].command(WorkerCmd::Crash { pid: pid.0 });
        }
    }

    /// Keeps a participant's layout and hands it to its media connection.
    fn layout(&mut self, pid: ParticipantId, layout: &ting_proto::Layout) -> Result<(), ErrorMsg> {
        let spec = layout_spec(layout).map_err(|message| ErrorMsg {
            code: ErrorCode::BadMessage,
            message,
            fatal: false,
        })?;
        let Some(m) = self.members.get_mut(&pid) else {
            return Err(ErrorMsg {
                code: ErrorCode::NotJoined,
                message: "send join before layout".into(),
                fatal: false,
            });
        };
        m.layout = Some(spec.clone());
        if let Some(w) = m.worker {
            self.workers[w.0].command(WorkerCmd::Layout {
                pid: pid.0,
                layout: Some(spec),
            });
        }
        Ok(())
    }

    /// Takes a join from `address`'s budget. Buckets of addresses that stopped joining are
    /// forgotten once there are many, so the table stays as small as the active joiners.
    fn join_allowed(&mut self, address: IpAddr, now: Instant) -> bool {
        let rate = f64::from(self.config.limits.joins_per_second_per_address);
        if self.join_buckets.len() >= 4096 {
            self.join_buckets.retain(|_, b| !b.is_full(now));
        }
        self.join_buckets
            .entry(address)
            .or_insert_with(|| TokenBucket::new(rate, rate * 10.0, now))
            .allow(now)
    }

    fn join(
        &mut self,
        room: &str,
        name: &str,
        address: IpAddr,
        outbox: Outbox,
        now: Instant,
    ) -> Result<(ParticipantId, Welcome), ErrorMsg> {
        if !self.ready.load(Relaxed) {
            return Err(ErrorMsg {
                code: ErrorCode::Unavailable,
                message: "the server is shutting down; try again in a moment".into(),
                fatal: true,
            });
        }
        if !self.join_allowed(address, now) {
            self.metrics.control.joins_refused.fetch_add(1, Relaxed);
            self.metrics.control.limited(Limit::JoinsPerAddress);
            return Err(ErrorMsg {
                code: ErrorCode::RateLimited,
                message: format!(
                    "more than {} joins a second from this address \
                     (limits.joins_per_second_per_address); join again in a moment",
                    self.config.limits.joins_per_second_per_address
                ),
                fatal: false,
            });
        }
        // A join that would open a room counts against its address's rooms.
        let opens = RoomName::parse(room)
            .ok()
            .filter(|r| !self.keys.contains_key(r));
        if opens.is_some() {
            let limit = self.config.limits.max_rooms_per_address;
            if self.rooms_by_address.get(&address).copied().unwrap_or(0) >= limit {
                self.metrics.control.joins_refused.fetch_add(1, Relaxed);
                self.metrics.control.limited(Limit::RoomsPerAddress);
                return Err(ErrorMsg {
                    code: ErrorCode::TooManyRooms,
                    message: format!(
                        "joins from this address have opened {limit} rooms that are still \
                         open (limits.max_rooms_per_address); join an open room or wait"
                    ),
                    fatal: false,
                });
            }
        }
        let joined = self.rooms.handle_join(room, name, now).map_err(|e| {
            self.metrics.control.joins_refused.fetch_add(1, Relaxed);
            let code = match e {
                JoinError::BadRoomName(_) => ErrorCode::BadRoom,
                JoinError::BadDisplayName(_) => ErrorCode::BadName,
                JoinError::RoomFull { .. } => ErrorCode::RoomFull,
                JoinError::TooManyRooms { .. } => ErrorCode::TooManyRooms,
            };
            ErrorMsg {
                code,
                message: e.to_string(),
                fatal: false,
            }
        })?;
        self.metrics.control.joins.fetch_add(1, Relaxed);
        let key = match self.keys.get(&joined.room) {
            Some(k) => *k,
            None => {
                let k = RoomKey(self.next_key);
                self.next_key += 1;
                self.keys.insert(joined.room.clone(), k);
                self.room_openers.insert(joined.room.clone(), address);
                *self.rooms_by_address.entry(address).or_insert(0) += 1;
                k
            }
        };
        info_span!("room", room = key.0).in_scope(|| {
            info!(participant = %joined.participant, "joined");
        });
        self.members.insert(
            joined.participant,
            Member {
                outbox,
                room: joined.room.clone(),
                key,
                worker: None,
                connecting: false,
                published: Vec::new(),
                layout: None,
                announced: Vec::new(),
                media: MediaState::default(),
            },
        );
        let s = &self.config.slots;
        let welcome = Welcome {
            protocol: PROTOCOL_VERSION,
            participant: pref(joined.participant),
            room: joined.room.to_string(),
            participants: joined
                .others
                .iter()
                .map(|p| ParticipantInfo {
                    id: pref(p.id),
                    name: p.name.expose().to_owned(),
                    media: to_proto_media(p.media),
                })
                .collect(),
            limits: Limits {
                audio_slots: s.audio,
                video_slots: s.video,
                screen_slots: s.screen,
                max_message_bytes: self.config.limits.max_message_bytes as u32,
                ping_interval_ms: (self.config.limits.ping_interval_secs * 1000) as u32,
                max_participants: self.config.limits.max_participants_per_room as u32,
            },
        };
        Ok((joined.participant, welcome))
    }

    /// Sends the offer to be built into a connection on the worker it will live on.
    fn offer(&mut self, pid: ParticipantId, offer: Offer) -> Result<(), ErrorMsg> {
        let Some(member) = self.members.get(&pid) else {
            return Err(ErrorMsg {
                code: ErrorCode::NotJoined,
                message: "send join before offer".into(),
                fatal: false,
            });
        };
        if member.worker.is_some() || member.connecting {
            return Err(ErrorMsg {
                code: ErrorCode::AlreadyConnected,
                message: "this session already has a media connection; protocol 1 does not \
                          renegotiate (receive slots are fixed, so it never needs to)"
                    .into(),
                fatal: false,
            });
        }
        let key = member.key;
        let worker = self.place(key, &member.room).ok_or_else(|| ErrorMsg {
            code: ErrorCode::Internal,
            message: "no media worker is running".into(),
            fatal: false,
        })?;
        let job = SetupJob {
            pid: pid.0,
            room: key,
            worker,
            candidate: self.workers[worker.0].addr,
            offer,
            outbox: member.outbox.clone(),
        };
        if self.setup.send(job).is_err() {
            return Err(ErrorMsg {
                code: ErrorCode::Unavailable,
                message: "the server is shutting down".into(),
                fatal: true,
            });
        }
        if let Some(m) = self.members.get_mut(&pid) {
            m.connecting = true;
        }
        Ok(())
    }

    /// A connection was built from an offer: hand it to its worker with the room's tracks as
    /// they are now, or tell the client why its offer was refused.
    fn connection_built(&mut self, done: SetupDone) {
        let pid = ParticipantId(done.pid);
        let Some(member) = self.members.get_mut(&pid) else {
            // Left while its connection was being built; dropping it is all there is to do.
            return;
        };
        member.connecting = false;
        let accepted = match done.result {
            Ok(a) => a,
            Err(error) => {
                // The kind only: the text may quote the client's SDP.
                debug!(participant = %pid, error = error.kind(), "offer refused");
                if let Some(reply) = self.pending_offers.remove(&pid) {
                    let _ = reply.send(Err(ErrorMsg {
                        code: ErrorCode::BadOffer,
                        message: error.to_string(),
                        fatal: false,
                    }));
                }
                return;
            }
        };
        let worker = done.worker;
        member.worker = Some(worker);
        let key = member.key;
        let layout = member.layout.clone();
        let room = member.room.clone();
        let tracks = self.room_tracks(&room);
        let added = {
            let per = self.room_workers.entry(key).or_default();
            let n = per.entry(worker).or_insert(0);
            *n += 1;
            *n == 1
        };
        let workers: Vec<WorkerId> = self.room_workers[&key].keys().copied().collect();
        self.workers[worker.0].command(WorkerCmd::Connect(Box::new(ConnectReq {
            pid: pid.0,
            room: key,
            accepted,
            tracks,
            workers: workers.clone(),
            layout,
        })));
        if added {
            self.announce_room_workers(key, &workers);
        }
    }

    /// The worker for a new connection of `room`. A small room stays on the worker that
    /// already has most of it, so its packets never cross between threads; a room larger
    /// than `media.spread_rooms_above` takes the least loaded worker, so its fan-out is
    /// shared by every core.
    fn place(&self, key: RoomKey, room: &RoomName) -> Option<WorkerId> {
        let least_loaded = self
            .workers
            .iter()
            .min_by_key(|w| (w.load.load(Relaxed), w.id))
            .map(|w| w.id)?;
        let size = self.rooms.members(room).count();
        if size > self.config.media.spread_rooms_above {
            return Some(least_loaded);
        }
        let home = self
            .room_workers
            .get(&key)
            .and_then(|per| {
                per.iter()
                    .max_by_key(|(w, n)| (**n, std::cmp::Reverse(**w)))
            })
            .map(|(w, _)| *w);
        Some(home.unwrap_or(least_loaded))
    }

    /// Every track the routers of `room` should know.
    fn room_tracks(&self, room: &RoomName) -> Vec<TrackDesc> {
        self.rooms
            .members(room)
            .filter_map(|p| self.members.get(&p.id).map(|m| (p.id, m)))
            .flat_map(|(id, m)| {
                m.announced.iter().filter_map(move |source| {
                    let p = m.published.iter().find(|p| p.source == *source)?;
                    Some(TrackDesc {
                        id: TrackId::new(EndpointId(id.0), *source),
                        codec: p.codec,
                        layers: p.layers,
                        worker: m.worker?,
                    })
                })
            })
            .collect()
    }

    fn announce_room_workers(&self, key: RoomKey, workers: &[WorkerId]) {
        for w in workers {
            self.workers[w.0].command(WorkerCmd::RoomWorkers {
                room: key,
                workers: workers.to_vec(),
            });
        }
    }

    fn room_worker_list(&self, key: RoomKey) -> Vec<WorkerId> {
        self.room_workers
            .get(&key)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Tells the routers of the member's room that one of its tracks appeared or went.
    fn set_track(&mut self, pid: ParticipantId, source: Source, on: bool) {
        let Some(m) = self.members.get_mut(&pid) else {
            return;
        };
        let Some(worker) = m.worker else { return };
        let Some(&PublishedTrack { codec, layers, .. }) =
            m.published.iter().find(|p| p.source == source)
        else {
            return;
        };
        let is_on = m.announced.contains(&source);
        if on == is_on {
            return;
        }
        if on {
            m.announced.push(source);
        } else {
            m.announced.retain(|s| *s != source);
        }
        let key = m.key;
        let id = TrackId::new(EndpointId(pid.0), source);
        for w in self.room_worker_list(key) {
            let cmd = if on {
                WorkerCmd::TrackAdded {
                    room: key,
                    track: TrackDesc {
                        id,
                        codec,
                        layers,
                        worker,
                    },
                }
            } else {
                WorkerCmd::TrackRemoved {
                    room: key,
                    track: id,
                }
            };
            self.workers[w.0].command(cmd);
        }
    }

    fn handle_worker_event(&mut self, ev: WorkerEvent) {
        match ev {
            WorkerEvent::Connected {
                pid,
                worker,
                answer,
                published,
            } => {
                let pid = ParticipantId(pid);
                let reply = self.pending_offers.remove(&pid);
                let Some(m) = self.members.get_mut(&pid) else {
                    // Left while the worker was connecting: undo.
                    self.workers[worker.0].command(WorkerCmd::Disconnect { pid: pid.0 });
                    return;
                };
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(answer));
                }
                m.published = published.clone();
                let screen = m.media.screen;
                for p in published {
                    if p.source != Source::Screen || screen {
                        self.set_track(pid, p.source, true);
                    }
                }
            }
            WorkerEvent::MediaFailed { pid } => {
                let pid = ParticipantId(pid);
                if let Some(m) = self.members.get(&pid) {
                    let _ = m.outbox.send(OutMsg::new(&ServerMsg::Error(ErrorMsg {
                        code: ErrorCode::Internal,
                        message: "your media connection failed; join again".into(),
                        fatal: true,
                    })));
                }
                self.rooms.handle_leave(pid, LeaveReason::MediaFailed);
            }
        }
    }

    fn release_worker(&mut self, key: RoomKey, worker: WorkerId) {
        let Some(per) = self.room_workers.get_mut(&key) else {
            return;
        };
        let gone = match per.get_mut(&worker) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                per.remove(&worker);
                true
            }
            None => false,
        };
        if per.is_empty() {
            self.room_workers.remove(&key);
        } else if gone {
            let workers: Vec<WorkerId> = per.keys().copied().collect();
            self.announce_room_workers(key, &workers);
        }
    }

    /// Tells rooms what `Rooms` decided.
    fn dispatch_events(&mut self) {
        while let Some(ev) = self.rooms.poll_event() {
            match ev {
                ControlEvent::RoomOpened { .. } => {}
                ControlEvent::Joined { room, participant } => {
                    let Some(p) = self.rooms.participant(participant) else {
                        continue;
                    };
                    let msg = ServerMsg::ParticipantJoined {
                        participant: ParticipantInfo {
                            id: pref(participant),
                            name: p.name.expose().to_owned(),
                            media: to_proto_media(p.media),
                        },
                    };
                    self.tell_room(&room, Some(participant), &msg);
                }
                ControlEvent::MediaChanged {
                    room,
                    participant,
                    media,
                } => {
                    if let Some(m) = self.members.get_mut(&participant) {
                        m.media = media;
                    }
                    self.set_track(participant, Source::Screen, media.screen);
                    let msg = ServerMsg::ParticipantUpdated {
                        participant: pref(participant),
                        media: to_proto_media(media),
                    };
                    self.tell_room(&room, Some(participant), &msg);
                }
                ControlEvent::Left {
                    room,
                    participant,
                    reason,
                } => {
                    self.remove_member(participant);
                    let reason = match reason {
                        LeaveReason::Left => ting_proto::LeaveReason::Left,
                        LeaveReason::TimedOut => ting_proto::LeaveReason::TimedOut,
                        LeaveReason::MediaFailed => ting_proto::LeaveReason::MediaFailed,
                        LeaveReason::ServerShutdown => ting_proto::LeaveReason::ServerShutdown,
                        LeaveReason::TooSlow => ting_proto::LeaveReason::TooSlow,
                    };
                    debug!(participant = %participant, ?reason, "left");
                    let msg = ServerMsg::ParticipantLeft {
                        participant: pref(participant),
                        reason,
                    };
                    self.tell_room(&room, None, &msg);
                }
                ControlEvent::RoomClosed { room } => {
                    if let Some(key) = self.keys.remove(&room) {
                        self.room_workers.remove(&key);
                    }
                    if let Some(address) = self.room_openers.remove(&room)
                        && let Some(n) = self.rooms_by_address.get_mut(&address)
                    {
                        *n -= 1;
                        if *n == 0 {
                            self.rooms_by_address.remove(&address);
                        }
                    }
                }
            }
        }
        self.metrics
            .control
            .rooms
            .store(self.rooms.room_count() as u64, Relaxed);
        self.metrics
            .control
            .participants
            .store(self.rooms.participant_count() as u64, Relaxed);
    }

    /// Removes a member's media: its tracks from every router of the room, its connection
    /// from its worker. Dropping the member drops its outbox, which ends its session.
    fn remove_member(&mut self, pid: ParticipantId) {
        let Some(m) = self.members.get(&pid) else {
            return;
        };
        for source in m.announced.clone() {
            self.set_track(pid, source, false);
        }
        let Some(m) = self.members.remove(&pid) else {
            return;
        };
        self.pending_offers.remove(&pid);
        if let Some(w) = m.worker {
            self.workers[w.0].command(WorkerCmd::Disconnect { pid: pid.0 });
            self.release_worker(m.key, w);
        }
    }

    /// Sends `msg` to every member of `room` but `except`, serialized once.
    fn tell_room(&self, room: &RoomName, except: Option<ParticipantId>, msg: &ServerMsg) {
        let msg = OutMsg::new(msg);
        for p in self.rooms.members(room) {
            if Some(p.id) == except {
                continue;
            }
            if let Some(m) = self.members.get(&p.id) {
                let _ = m.outbox.send(msg.clone());
            }
        }
    }

    /// Tells every participant that everyone leaves because the server stops, then that the
    /// connection ends.
    fn shut_down(&mut self) {
        self.ready.store(false, Relaxed);
        for (pid, m) in &self.members {
            let left = OutMsg::new(&ServerMsg::ParticipantLeft {
                participant: pref(*pid),
                reason: ting_proto::LeaveReason::ServerShutdown,
            });
            for p in self.rooms.members(&m.room) {
                if p.id != *pid
                    && let Some(other) = self.members.get(&p.id)
                {
                    let _ = other.outbox.send(left.clone());
                }
            }
        }
        let bye = OutMsg::new(&ServerMsg::Error(ErrorMsg {
            code: ErrorCode::Unavailable,
            message: "the server is shutting down".into(),
            fatal: true,
        }));
        for m in self.members.values() {
            let _ = m.outbox.send(bye.clone());
        }
        self.rooms.close_all(LeaveReason::ServerShutdown);
        while self.rooms.poll_event().is_some() {}
        self.members.clear();
        for w in self.workers.iter() {
            w.command(WorkerCmd::Shutdown);
        }
        info!("conductor stopped");
    }
}
