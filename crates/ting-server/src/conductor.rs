//! The conductor: one task that owns the rooms (`ting_control::Rooms`), places
//! participants on media workers, and tells everyone what changed.
//!
//! WebSocket sessions and the control API send it [`ConductorCmd`]s; workers send it
//! [`WorkerEvent`]s. It decides nothing about who may do what: `ting_control` does, and the
//! conductor carries its events to the sessions (as `ting-proto` messages), to the media
//! workers (tracks to forward or not), to the store (rooms, the chat archive) and to the
//! audit log. It is the only writer of room membership and of the track lists the workers'
//! routers hold, so the workers see every room change in one order: a new worker of a room
//! gets a snapshot of the room's tracks with its first connection, then every later change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Instant;

use ting_control::{
    Admission, Command, CommandError, CommandOk, ControlEvent, JoinError, JoinRequest, LeaveReason,
    Now, ParticipantId, RoomName, Rooms, RoomsConfig, TokenError, TokenKeys,
};
use ting_media::{EndpointId, LayoutSpec, Quality, Source, TileSpec, TrackId};
use ting_proto::{
    ConnectionState, ErrorCode, ErrorMsg, Limits, Offer, PROTOCOL_VERSION, ParticipantInfo,
    ParticipantRef, ServerMsg, Welcome,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info};

use crate::api::{ApiFailure, ApiReply, ApiRequest};
use crate::config::Config;
use crate::metrics::{Limit, Metrics};
use crate::ratelimit::TokenBucket;
use crate::setup::{SetupDone, SetupJob};
use crate::store::{ChatRow, Store};
use crate::worker::{
    ConnectReq, OutMsg, Outbox, PublishedTrack, RoomKey, TrackDesc, WorkerCmd, WorkerEvent,
    WorkerHandle, WorkerId,
};

/// What sessions ask of the conductor.
#[derive(Debug)]
pub enum ConductorCmd {
    /// Answered with `welcome` or `waiting` (and the participant's id), or the refusal.
    Join {
        join: ting_proto::Join,
        /// The client's IP address, for per-address limits; never logged.
        address: IpAddr,
        outbox: Outbox,
        /// Only into a meeting that is on or defined (WHIP and WHEP): such a join never
        /// opens a room.
        existing_room: bool,
        /// Never shown to the room (a WHEP viewer): no tile, no list entry, no events about
        /// it; it still counts against the room's limit and in the metrics.
        hidden: bool,
        reply: oneshot::Sender<Result<(ParticipantId, ServerMsg), ErrorMsg>>,
    },
    /// Answered with the SDP answer, or with the error (the offer's, or the room's).
    Offer {
        pid: ParticipantId,
        offer: Offer,
        reply: oneshot::Sender<Result<String, ErrorMsg>>,
    },
    /// A new offer with new ICE credentials for the media connection that exists; answered
    /// by its worker with the SDP answer, or the error.
    IceRestart {
        pid: ParticipantId,
        sdp: String,
        reply: oneshot::Sender<Result<String, ErrorMsg>>,
    },
    /// Anything the control plane decides (media state, hands, chat, moderation), answered
    /// with what to tell the client (if anything) or the refusal.
    Control {
        pid: ParticipantId,
        cmd: Command,
        reply: oneshot::Sender<Result<Option<ServerMsg>, ErrorMsg>>,
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
    /// The participant's WebSocket dropped without a goodbye: keep it (and its queue,
    /// `rx`) until it resumes or times out.
    Detach {
        pid: ParticipantId,
        rx: crate::outbox::OutboxRx,
    },
    /// A new WebSocket asks to become a detached participant again; answered with its id,
    /// a `welcome` and its queue.
    Resume {
        token: String,
        /// A new end-to-end encryption announcement (a reloaded page).
        e2ee: Option<String>,
        /// For the per-address join limit; never logged.
        address: IpAddr,
        reply:
            oneshot::Sender<Result<(ParticipantId, ServerMsg, crate::outbox::OutboxRx), ErrorMsg>>,
    },
    /// Sealed end-to-end encryption keys from `pid` to others in its room.
    E2eeKeys {
        pid: ParticipantId,
        keys: Vec<ting_proto::E2eeKeyFor>,
        reply: oneshot::Sender<Result<(), ErrorMsg>>,
    },
    /// A participant joined `hidden` is shown to the room from now on (a WHIP publisher,
    /// once its offer was accepted: a refused one never flickers into the meeting).
    Show {
        pid: ParticipantId,
    },
    /// A control API call.
    Api {
        req: ApiRequest,
        reply: oneshot::Sender<Result<ApiReply, ApiFailure>>,
    },
}

impl ConductorCmd {
    /// The participant a command comes from, once joined.
    fn participant(&self) -> Option<ParticipantId> {
        match self {
            ConductorCmd::Join { .. } | ConductorCmd::Api { .. } | ConductorCmd::Resume { .. } => {
                None
            }
            ConductorCmd::Detach { pid, .. } => Some(*pid),
            ConductorCmd::Offer { pid, .. }
            | ConductorCmd::IceRestart { pid, .. }
            | ConductorCmd::Control { pid, .. }
            | ConductorCmd::Layout { pid, .. }
            | ConductorCmd::E2eeKeys { pid, .. }
            | ConductorCmd::Seen { pid }
            | ConductorCmd::Show { pid }
            | ConductorCmd::Leave { pid, .. } => Some(*pid),
        }
    }
}

/// One ICE restart a second per participant at most (each builds a new answer on its
/// media worker); more are refused with `rate_limited`.
const RESTART_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a participant whose media connection failed while its WebSocket was open has
/// to detach (a reloading page closes both, in either order) or to offer a new connection.
const MEDIA_FAILED_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

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
    /// In the meeting, not waiting in the lobby.
    admitted: bool,
    /// The secret that resumes this participant on a new WebSocket.
    resume: String,
    /// Its WebSocket dropped: its queue waits here for a `resume`.
    parked: Option<crate::outbox::OutboxRx>,
    /// Resumed, so the next offer may replace its media connection (a reloaded page has
    /// a new PeerConnection).
    may_replace_media: bool,
    /// When it last resumed.
    resumed_at: Option<Instant>,
    /// When its last ICE restart began.
    last_restart: Option<Instant>,
    /// How its media connection fares, as its worker last said.
    media_quality: Quality,
    /// What the room was last told of its connection.
    shown: ConnectionState,
    /// Its end-to-end encryption announcement, relayed unread (`docs/e2ee.md`).
    e2ee: Option<String>,
    /// Its budget for sealed keys sent to others.
    e2ee_keys: TokenBucket,
}

impl Member {
    /// What its tile should say: reconnecting while its socket or its media path is gone,
    /// poor while its network struggles.
    fn connection(&self) -> ConnectionState {
        match (self.parked.is_some(), self.media_quality) {
            (true, _) | (_, Quality::Lost) => ConnectionState::Reconnecting,
            (false, Quality::Poor) => ConnectionState::Poor,
            (false, Quality::Good) => ConnectionState::Connected,
        }
    }
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
    /// Joins giving a passcode, per address
    /// (`limits.passcode_attempts_per_minute_per_address`).
    passcode_buckets: HashMap<IpAddr, TokenBucket>,
    store: Store,
    /// Where join links point: `http.public_url`, or this server's own address.
    base_url: String,
    audit_key: AuditKey,
    /// Resume tokens of the members.
    resume_tokens: HashMap<String, ParticipantId>,
    /// Participants whose media connection failed while their WebSocket was still open,
    /// and until when they may detach or offer anew before they are removed: a reloading
    /// page closes both, and the media may go first.
    media_failed: HashMap<ParticipantId, Instant>,
    /// Participants the room is never told of (WHEP viewers).
    hidden: HashSet<ParticipantId>,
}

impl std::fmt::Debug for Conductor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conductor")
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}

fn to_proto_media(m: ting_control::MediaState) -> ting_proto::MediaState {
    ting_proto::MediaState {
        audio: m.audio,
        video: m.video,
        screen: m.screen,
    }
}

pub fn pref(id: ParticipantId) -> ParticipantRef {
    ParticipantRef(id.to_string())
}

/// A participant id as clients write it: 16 hex digits. Anything else names nobody.
fn parse_pid(r: &ParticipantRef) -> Option<EndpointId> {
    ParticipantId::parse(&r.0).map(|p| EndpointId(p.0))
}

pub fn proto_role(r: ting_control::Role) -> ting_proto::Role {
    match r {
        ting_control::Role::Host => ting_proto::Role::Host,
        ting_control::Role::Moderator => ting_proto::Role::Moderator,
        ting_control::Role::Participant => ting_proto::Role::Participant,
        ting_control::Role::Guest => ting_proto::Role::Guest,
    }
}

pub fn control_role(r: ting_proto::Role) -> ting_control::Role {
    match r {
        ting_proto::Role::Host => ting_control::Role::Host,
        ting_proto::Role::Moderator => ting_control::Role::Moderator,
        ting_proto::Role::Participant => ting_control::Role::Participant,
        ting_proto::Role::Guest => ting_control::Role::Guest,
    }
}

fn proto_permissions(p: ting_control::Permissions) -> ting_proto::Permissions {
    ting_proto::Permissions {
        publish_audio: p.publish_audio,
        publish_video: p.publish_video,
        publish_screen: p.publish_screen,
        chat: p.chat,
        admit: p.admit,
        moderate: p.moderate,
        unmute: p.unmute,
    }
}

fn media_source(s: ting_control::Source) -> Source {
    match s {
        ting_control::Source::Microphone => Source::Microphone,
        ting_control::Source::Camera => Source::Camera,
        ting_control::Source::Screen => Source::Screen,
    }
}

fn proto_source(s: ting_control::Source) -> ting_proto::Source {
    match s {
        ting_control::Source::Microphone => ting_proto::Source::Microphone,
        ting_control::Source::Camera => ting_proto::Source::Camera,
        ting_control::Source::Screen => ting_proto::Source::Screen,
    }
}

fn control_source(s: Source) -> ting_control::Source {
    match s {
        Source::Microphone => ting_control::Source::Microphone,
        Source::Camera => ting_control::Source::Camera,
        Source::Screen => ting_control::Source::Screen,
    }
}

/// The unix time in milliseconds.
fn unix_ms() -> u64 {
    crate::store::now_ms()
}

fn now() -> Now {
    Now {
        at: Instant::now(),
        unix_ms: unix_ms(),
    }
}

/// A join refusal as the client is told it, and its label in `ting_refused_total`.
fn join_error(e: &JoinError) -> (ErrorCode, &'static str) {
    match e {
        JoinError::BadRoomName(_) => (ErrorCode::BadRoom, "bad_room"),
        JoinError::BadDisplayName(_) => (ErrorCode::BadName, "bad_name"),
        JoinError::RoomFull { .. } => (ErrorCode::RoomFull, "room_full"),
        JoinError::TooManyRooms { .. } => (ErrorCode::TooManyRooms, "too_many_rooms"),
        JoinError::TokenRequired => (ErrorCode::TokenRequired, "token_required"),
        JoinError::Token(TokenError::Malformed(_)) => {
            (ErrorCode::TokenMalformed, "token_malformed")
        }
        JoinError::Token(TokenError::Invalid(_)) => (ErrorCode::TokenInvalid, "token_invalid"),
        JoinError::Token(TokenError::Expired | TokenError::NotYetValid) => {
            (ErrorCode::TokenExpired, "token_expired")
        }
        JoinError::Token(TokenError::WrongRoom) => (ErrorCode::TokenWrongRoom, "token_wrong_room"),
        JoinError::Removed => (ErrorCode::Removed, "removed"),
        JoinError::Locked => (ErrorCode::Locked, "locked"),
        JoinError::PasscodeRequired => (ErrorCode::PasscodeRequired, "passcode_required"),
        JoinError::WrongPasscode => (ErrorCode::WrongPasscode, "wrong_passcode"),
        JoinError::PasscodeAttempts => (ErrorCode::RateLimited, "passcode_attempts"),
        JoinError::OutsideSchedule(_) => (ErrorCode::OutsideSchedule, "outside_schedule"),
        JoinError::MeetingEnded => (ErrorCode::MeetingEnded, "meeting_ended"),
        JoinError::RoomDeleted => (ErrorCode::TokenInvalid, "room_deleted"),
        JoinError::E2eeRequired => (ErrorCode::E2eeRequired, "e2ee_required"),
    }
}

/// Sealed keys one participant may send to others: a burst that gives a 250-person room
/// its keys four times over, then 500 a second (re-keying after departures). Each key
/// counts as sent, delivered or not.
const E2EE_KEYS_BURST: f64 = 1000.0;
const E2EE_KEYS_PER_SECOND: f64 = 500.0;

fn bad_announcement() -> ErrorMsg {
    ErrorMsg {
        code: ErrorCode::BadMessage,
        message: format!(
            "e2ee must be an announcement of 1 to {} characters of base64url and '.'",
            ting_proto::E2EE_DATA_MAX
        ),
        fatal: false,
    }
}

fn command_error(e: &CommandError) -> (ErrorCode, &'static str) {
    match e {
        CommandError::NotAdmitted => (ErrorCode::NotJoined, "not_admitted"),
        CommandError::Forbidden(_) => (ErrorCode::Forbidden, "forbidden"),
        CommandError::UnknownParticipant => (ErrorCode::UnknownParticipant, "unknown_participant"),
        CommandError::ChatTooLong { .. } => (ErrorCode::ChatTooLong, "chat_too_long"),
        CommandError::BadChat(_) => (ErrorCode::BadMessage, "bad_chat"),
        CommandError::RoomFull { .. } => (ErrorCode::RoomFull, "room_full"),
        CommandError::CannotSign => (ErrorCode::Internal, "cannot_sign"),
    }
}

/// A sentence from an error's text: capitalised, with a full stop.
fn sentence(text: String) -> String {
    let mut c = text.chars();
    let mut out: String = match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => return text,
    };
    if !out.ends_with(['.', '?', '!']) {
        out.push('.');
    }
    out
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
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Arc<Config>,
        workers: Arc<[WorkerHandle]>,
        metrics: Arc<Metrics>,
        ready: Arc<AtomicBool>,
        setup: std::sync::mpsc::Sender<SetupJob>,
        keys: TokenKeys,
        store: Store,
        base_url: String,
        audit_key: AuditKey,
        seed: u64,
    ) -> Conductor {
        let minutes = |m: u64| std::time::Duration::from_secs(m * 60);
        let rooms = Rooms::new(
            RoomsConfig {
                max_rooms: config.limits.max_rooms,
                max_participants_per_room: config.limits.max_participants_per_room,
                participant_timeout: config.participant_timeout(),
                open_rooms: config.rooms.open,
                max_chat_chars: config.chat.max_chars,
                passcode_attempts_per_minute: config.limits.passcode_attempts_per_minute,
                max_invite: std::time::Duration::from_secs(config.tokens.max_ttl_secs),
                early_join: minutes(config.rooms.early_join_minutes),
                ended_hold: minutes(config.rooms.ended_hold_minutes),
                e2ee_required: config.rooms.e2ee_required,
            },
            keys,
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
            passcode_buckets: HashMap::new(),
            store,
            base_url,
            audit_key,
            resume_tokens: HashMap::new(),
            media_failed: HashMap::new(),
            hidden: HashSet::new(),
        }
    }

    /// Loads rooms from the store before the first join.
    pub fn rooms_mut(&mut self) -> &mut Rooms {
        &mut self.rooms
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
            let deadline = [
                self.rooms.poll_timeout(),
                self.media_failed.values().min().copied(),
            ]
            .into_iter()
            .flatten()
            .min();
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
                _ = sleep => {
                    let now = Instant::now();
                    self.rooms.handle_timeout(now);
                    self.expire_media_failed(now);
                }
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
                join,
                address,
                outbox,
                existing_room,
                hidden,
                reply,
            } => {
                let r = self.join(&join, address, outbox, existing_room, now);
                if hidden && let Ok((pid, _)) = &r {
                    self.hidden.insert(*pid);
                }
                let _ = reply.send(r);
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
            ConductorCmd::IceRestart { pid, sdp, reply } => {
                self.rooms.handle_seen(pid, now);
                let Some(m) = self.members.get_mut(&pid) else {
                    let _ = reply.send(Err(ErrorMsg {
                        code: ErrorCode::NotJoined,
                        message: "send join before ice_restart".into(),
                        fatal: false,
                    }));
                    return;
                };
                if m.worker.is_some()
                    && m.last_restart
                        .is_some_and(|at| now.saturating_duration_since(at) < RESTART_EVERY)
                {
                    self.metrics.control.limited(Limit::RateLimited);
                    let _ = reply.send(Err(ErrorMsg {
                        code: ErrorCode::RateLimited,
                        message: "one ICE restart a second at most; try again in a second".into(),
                        fatal: false,
                    }));
                    return;
                }
                match m.worker {
                    Some(worker) => {
                        m.last_restart = Some(now);
                        self.workers[worker.0].command(WorkerCmd::IceRestart {
                            pid: pid.0,
                            sdp,
                            reply,
                        });
                    }
                    None => {
                        let _ = reply.send(Err(ErrorMsg {
                            code: ErrorCode::NotConnected,
                            message: "there is no media connection to restart: send offer \
                                      to make one"
                                .into(),
                            fatal: false,
                        }));
                    }
                }
            }
            ConductorCmd::Control { pid, cmd, reply } => {
                self.rooms.handle_seen(pid, now);
                #[cfg(feature = "test-hooks")]
                self.test_hook(pid);
                let _ = reply.send(self.control(pid, cmd));
            }
            ConductorCmd::Api { req, reply } => {
                let _ = reply.send(self.api(req));
            }
            ConductorCmd::Detach { pid, rx } => self.detach(pid, rx),
            ConductorCmd::Show { pid } => self.show(pid),
            ConductorCmd::Resume {
                token,
                e2ee,
                address,
                reply,
            } => {
                let _ = reply.send(self.resume(&token, e2ee, address, now));
            }
            ConductorCmd::E2eeKeys { pid, keys, reply } => {
                self.rooms.handle_seen(pid, now);
                let _ = reply.send(self.e2ee_keys(pid, keys, now));
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
        let Some(m) = self.members.get_mut(&pid).filter(|m| m.admitted) else {
            return Err(ErrorMsg {
                code: ErrorCode::NotJoined,
                message: "send join (and be let in) before layout".into(),
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
        join: &ting_proto::Join,
        address: IpAddr,
        outbox: Outbox,
        existing_room: bool,
        now: Instant,
    ) -> Result<(ParticipantId, ServerMsg), ErrorMsg> {
        if !self.ready.load(Relaxed) {
            return Err(ErrorMsg {
                code: ErrorCode::Unavailable,
                message: "the server is shutting down; try again in a moment".into(),
                fatal: true,
            });
        }
        if !self.join_allowed(address, now) {
            self.refused("joins_per_address");
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
        if join.passcode.is_some() && !self.passcode_allowed(address, now) {
            self.refused("passcode_attempts");
            self.metrics.control.limited(Limit::PasscodesPerAddress);
            return Err(ErrorMsg {
                code: ErrorCode::RateLimited,
                message: format!(
                    "more than {} passcode attempts a minute from this address \
                     (limits.passcode_attempts_per_minute_per_address); try again in a minute",
                    self.config.limits.passcode_attempts_per_minute_per_address
                ),
                fatal: false,
            });
        }
        if existing_room
            && RoomName::parse(&join.room)
                .is_ok_and(|r| !self.keys.contains_key(&r) && !self.rooms.is_defined(&r))
        {
            // The token first: someone without a valid one learns nothing of which rooms
            // exist (the same refusal either way).
            let checked = self.rooms.check_token(
                &join.room,
                join.token.as_deref(),
                Now {
                    at: now,
                    unix_ms: unix_ms(),
                },
            );
            if let Err(e) = checked {
                let (code, label) = join_error(&e);
                self.refused(label);
                return Err(ErrorMsg {
                    code,
                    message: sentence(e.to_string()),
                    fatal: false,
                });
            }
            self.refused("unknown_room");
            return Err(ErrorMsg {
                code: ErrorCode::UnknownRoom,
                message: "no meeting of that name is on or defined on this server".into(),
                fatal: false,
            });
        }
        // A join that would open a room counts against its address's rooms.
        let opens = RoomName::parse(&join.room)
            .ok()
            .filter(|r| !self.keys.contains_key(r));
        if opens.is_some() {
            let limit = self.config.limits.max_rooms_per_address;
            if self.rooms_by_address.get(&address).copied().unwrap_or(0) >= limit {
                self.refused("rooms_per_address");
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
        if join
            .e2ee
            .as_deref()
            .is_some_and(|a| !ting_proto::is_e2ee_data(a))
        {
            return Err(bad_announcement());
        }
        let request = JoinRequest {
            room: &join.room,
            name: &join.name,
            token: join.token.as_deref(),
            passcode: join.passcode.as_deref(),
            e2ee: join.e2ee.is_some(),
        };
        let admission = self
            .rooms
            .handle_join(
                request,
                Now {
                    at: now,
                    unix_ms: unix_ms(),
                },
            )
            .map_err(|e| {
                let (code, label) = join_error(&e);
                self.refused(label);
                let room = RoomName::parse(&join.room).ok();
                audit(&self.audit_key, "refused", None, room.as_ref(), label);
                ErrorMsg {
                    code,
                    message: sentence(e.to_string()),
                    fatal: false,
                }
            })?;
        let pid = admission.participant();
        let room = match &admission {
            Admission::Joined(j) => j.room.clone(),
            Admission::Waiting { room, .. } => room.clone(),
        };
        let key = match self.keys.get(&room) {
            Some(k) => *k,
            None => {
                let k = RoomKey(self.next_key);
                self.next_key += 1;
                self.keys.insert(room.clone(), k);
                self.room_openers.insert(room.clone(), address);
                *self.rooms_by_address.entry(address).or_insert(0) += 1;
                k
            }
        };
        let admitted = matches!(admission, Admission::Joined(_));
        self.members.insert(
            pid,
            Member {
                outbox,
                room: room.clone(),
                key,
                worker: None,
                connecting: false,
                published: Vec::new(),
                layout: None,
                announced: Vec::new(),
                admitted,
                resume: String::new(),
                parked: None,
                may_replace_media: false,
                resumed_at: None,
                last_restart: None,
                media_quality: Quality::Good,
                shown: ConnectionState::Connected,
                e2ee: join.e2ee.clone(),
                e2ee_keys: TokenBucket::new(E2EE_KEYS_PER_SECOND, E2EE_KEYS_BURST, now),
            },
        );
        let token = self.new_resume_token();
        if let Some(m) = self.members.get_mut(&pid) {
            m.resume = token.clone();
        }
        self.resume_tokens.insert(token, pid);
        if admitted {
            self.metrics.control.joins.fetch_add(1, Relaxed);
            Ok((pid, ServerMsg::Welcome(self.welcome(pid))))
        } else {
            audit(&self.audit_key, "waiting", Some(pid), Some(&room), "lobby");
            Ok((
                pid,
                ServerMsg::Waiting {
                    participant: pref(pid),
                    room: room.to_string(),
                    ping_interval_ms: (self.config.limits.ping_interval_secs * 1000) as u32,
                },
            ))
        }
    }

    /// Takes a passcode attempt from `address`'s budget.
    fn passcode_allowed(&mut self, address: IpAddr, now: Instant) -> bool {
        let per_minute = f64::from(self.config.limits.passcode_attempts_per_minute_per_address);
        if self.passcode_buckets.len() >= 4096 {
            self.passcode_buckets.retain(|_, b| !b.is_full(now));
        }
        self.passcode_buckets
            .entry(address)
            .or_insert_with(|| TokenBucket::new(per_minute / 60.0, per_minute, now))
            .allow(now)
    }

    fn refused(&self, reason: &'static str) {
        self.metrics.control.joins_refused.fetch_add(1, Relaxed);
        self.metrics.control.count("refused", reason);
    }

    /// The welcome of a participant now in the meeting.
    fn welcome(&self, pid: ParticipantId) -> Welcome {
        let p = self
            .rooms
            .participant(pid)
            .expect("welcomed participants exist");
        let s = &self.config.slots;
        Welcome {
            protocol: PROTOCOL_VERSION,
            participant: pref(pid),
            name: p.name.expose().to_owned(),
            room: p.room.to_string(),
            participants: self
                .rooms
                .members(&p.room)
                .filter(|o| o.id != pid && !self.hidden.contains(&o.id))
                .map(|o| self.info(o))
                .collect(),
            limits: Limits {
                audio_slots: s.audio,
                video_slots: s.video,
                camera_slots: s.video,
                screen_slots: s.screen,
                max_message_bytes: self.config.limits.max_message_bytes as u32,
                ping_interval_ms: (self.config.limits.ping_interval_secs * 1000) as u32,
                max_participants: self.config.limits.max_participants_per_room as u32,
                max_chat_chars: self.config.chat.max_chars as u32,
                participant_timeout_ms: (self.config.limits.participant_timeout_secs * 1000)
                    .min(u64::from(u32::MAX)) as u32,
            },
            role: proto_role(p.role),
            permissions: proto_permissions(self.rooms.permissions(pid).unwrap_or_default()),
            room_state: self.room_state(&p.room),
            hands: self.rooms.hands(&p.room).iter().map(|h| pref(*h)).collect(),
            resume: self.members.get(&pid).map(|m| m.resume.clone()),
            resumed: false,
        }
    }

    /// How the others see a participant.
    fn info(&self, p: &ting_control::Participant) -> ParticipantInfo {
        let m = self.members.get(&p.id);
        ParticipantInfo {
            id: pref(p.id),
            name: p.name.expose().to_owned(),
            media: to_proto_media(p.media),
            role: proto_role(p.role),
            reconnecting: m.is_some_and(|m| m.parked.is_some()),
            connection: m.map_or(ConnectionState::Connected, Member::connection),
            e2ee: m.and_then(|m| m.e2ee.clone()),
        }
    }

    /// A fresh, unguessable resume token.
    fn new_resume_token(&self) -> String {
        loop {
            let t: [u8; 16] = rand::random();
            let t: String = t.iter().map(|b| format!("{b:02x}")).collect();
            if !self.resume_tokens.contains_key(&t) {
                return t;
            }
        }
    }

    /// Keeps a participant whose WebSocket dropped: its media goes on, the others see it
    /// as reconnecting, its queue is parked, and it times out like any silent participant
    /// unless it resumes first. Someone waiting in the lobby just leaves it.
    fn detach(&mut self, pid: ParticipantId, rx: crate::outbox::OutboxRx) {
        let Some(m) = self.members.get_mut(&pid) else {
            return;
        };
        if !m.admitted {
            self.rooms.handle_leave(pid, LeaveReason::Left);
            return;
        }
        m.parked = Some(rx);
        if self.media_failed.remove(&pid).is_some() {
            // Its media failed just before: the resumed client offers a new connection.
            m.may_replace_media = true;
        }
        let room = m.room.clone();
        audit(
            &self.audit_key,
            "detached",
            Some(pid),
            Some(&room),
            "connection dropped",
        );
        self.show_connection(pid);
    }

    /// Shows a hidden participant to its room, as if it had just joined.
    fn show(&mut self, pid: ParticipantId) {
        if !self.hidden.remove(&pid) {
            return;
        }
        let (Some(p), Some(m)) = (self.rooms.participant(pid), self.members.get(&pid)) else {
            return;
        };
        if !m.admitted {
            return;
        }
        let msg = ServerMsg::ParticipantJoined {
            participant: self.info(p),
        };
        let room = p.room.clone();
        self.tell_room(&room, Some(pid), &msg);
    }

    /// Tells the room (the participant too) when what its tile should say changed.
    fn show_connection(&mut self, pid: ParticipantId) {
        let Some(m) = self.members.get_mut(&pid) else {
            return;
        };
        let state = m.connection();
        if state == m.shown || !m.admitted || self.hidden.contains(&pid) {
            return;
        }
        m.shown = state;
        let room = m.room.clone();
        let msg = ServerMsg::ParticipantConnection {
            participant: pref(pid),
            state,
        };
        self.tell_room(&room, None, &msg);
    }

    /// Gives a detached participant back to a new WebSocket.
    fn resume(
        &mut self,
        token: &str,
        e2ee: Option<String>,
        address: IpAddr,
        now: Instant,
    ) -> Result<(ParticipantId, ServerMsg, crate::outbox::OutboxRx), ErrorMsg> {
        let failed = |message: &str| ErrorMsg {
            code: ErrorCode::ResumeFailed,
            message: message.into(),
            fatal: false,
        };
        if !self.ready.load(Relaxed) {
            return Err(ErrorMsg {
                code: ErrorCode::Unavailable,
                message: "the server is shutting down; try again in a moment".into(),
                fatal: true,
            });
        }
        if !self.join_allowed(address, now) {
            self.metrics.control.limited(Limit::JoinsPerAddress);
            return Err(ErrorMsg {
                code: ErrorCode::RateLimited,
                message: "too many joins from this address; try again in a moment".into(),
                fatal: false,
            });
        }
        let Some(&pid) = self.resume_tokens.get(token) else {
            self.metrics.control.count("refused", "resume_unknown");
            return Err(failed(
                "There is nobody to resume: the connection was lost for too long, or the \
                 participant left or was removed. Join again.",
            ));
        };
        let Some(m) = self.members.get_mut(&pid) else {
            return Err(failed("There is nobody to resume. Join again."));
        };
        let Some(mut rx) = m.parked.take() else {
            // The old socket still looks open here, but whoever holds the token has moved
            // on (a network change leaves the old connection silent rather than closed):
            // it lets go, and the client's next attempt finds the participant waiting.
            m.outbox.take_over();
            return Err(ErrorMsg {
                code: ErrorCode::ResumePending,
                message: "This participant's previous connection is still open at the server; \
                          it is being closed. Try again in a moment."
                    .into(),
                fatal: false,
            });
        };
        if e2ee
            .as_deref()
            .is_some_and(|a| !ting_proto::is_e2ee_data(a))
        {
            m.parked = Some(rx);
            return Err(bad_announcement());
        }
        // The client gets the whole state afresh: what queued while it was away is stale.
        rx.discard_backlog();
        m.may_replace_media = true;
        m.resumed_at = Some(now);
        let new_e2ee = e2ee.filter(|a| m.e2ee.as_ref() != Some(a));
        if let Some(a) = &new_e2ee {
            m.e2ee = Some(a.clone());
        }
        let room = m.room.clone();
        let worker = m.worker;
        self.rooms.handle_seen(pid, now);
        self.metrics.control.count("moderation", "resume");
        audit(
            &self.audit_key,
            "resumed",
            Some(pid),
            Some(&room),
            "same participant",
        );
        let mut welcome = self.welcome(pid);
        welcome.resumed = true;
        if let Some(w) = worker {
            self.workers[w.0].command(WorkerCmd::Resync { pid: pid.0 });
        }
        // The fresh welcome says how everyone's connection is; the others learn that this
        // one is back.
        self.show_connection(pid);
        if let Some(e2ee) = new_e2ee
            && !self.hidden.contains(&pid)
        {
            let msg = ServerMsg::ParticipantE2ee {
                participant: pref(pid),
                e2ee,
            };
            self.tell_room(&room, Some(pid), &msg);
        }
        Ok((pid, ServerMsg::Welcome(welcome), rx))
    }

    /// Delivers sealed keys to their recipients in the sender's room: admitted participants
    /// that encrypt. The server cannot read them; it only checks their shape and the
    /// sender's budget.
    fn e2ee_keys(
        &mut self,
        pid: ParticipantId,
        keys: Vec<ting_proto::E2eeKeyFor>,
        now: Instant,
    ) -> Result<(), ErrorMsg> {
        let bad = |message: String| ErrorMsg {
            code: ErrorCode::BadMessage,
            message,
            fatal: false,
        };
        let Some(m) = self.members.get_mut(&pid).filter(|m| m.admitted) else {
            return Err(ErrorMsg {
                code: ErrorCode::NotJoined,
                message: "send join (and be let in) before e2ee_keys".into(),
                fatal: false,
            });
        };
        if m.e2ee.is_none() {
            return Err(bad(
                "e2ee_keys needs a join (or resume) with an e2ee announcement".into(),
            ));
        }
        if keys.len() > ting_proto::E2EE_KEYS_MAX {
            return Err(bad(format!(
                "e2ee_keys carries {} keys; at most {} a message",
                keys.len(),
                ting_proto::E2EE_KEYS_MAX
            )));
        }
        if let Some(k) = keys.iter().find(|k| !ting_proto::is_e2ee_data(&k.data)) {
            return Err(bad(format!(
                "a key for {} is not 1 to {} characters of base64url and '.'",
                k.to,
                ting_proto::E2EE_DATA_MAX
            )));
        }
        if !m.e2ee_keys.take(keys.len() as f64, now) {
            self.metrics.control.limited(Limit::E2eeKeys);
            return Err(ErrorMsg {
                code: ErrorCode::RateLimited,
                message: format!(
                    "more than {E2EE_KEYS_BURST} keys at once or {E2EE_KEYS_PER_SECOND} a \
                     second; these {} were dropped",
                    keys.len()
                ),
                fatal: false,
            });
        }
        let room = m.room.clone();
        let from = pref(pid);
        let mut delivered = 0u64;
        // One key per recipient a message: a sender cannot queue hundreds at one person.
        let mut seen = std::collections::HashSet::with_capacity(keys.len());
        for k in keys {
            let Some(to) = ParticipantId::parse(&k.to.0).filter(|to| *to != pid) else {
                continue;
            };
            if !seen.insert(to) {
                continue;
            }
            let Some(r) = self.members.get(&to) else {
                continue;
            };
            if r.room != room || !r.admitted || r.e2ee.is_none() {
                continue;
            }
            let msg = ServerMsg::E2eeKey {
                from: from.clone(),
                data: k.data,
            };
            let _ = r.outbox.send(OutMsg::new(&msg));
            delivered += 1;
        }
        self.metrics.control.count_n("e2ee", "keys", delivered);
        Ok(())
    }

    fn room_state(&self, room: &RoomName) -> ting_proto::RoomState {
        let settings = self.rooms.settings(room);
        ting_proto::RoomState {
            locked: self.rooms.live(room).is_some_and(|l| l.locked),
            lobby: settings.lobby,
            passcode: settings.passcode.is_some(),
            e2ee_required: self.rooms.e2ee_required(room),
        }
    }

    /// Carries a participant's command to the control plane.
    fn control(&mut self, pid: ParticipantId, cmd: Command) -> Result<Option<ServerMsg>, ErrorMsg> {
        let label = command_label(&cmd);
        match self.rooms.handle_command(pid, cmd, now()) {
            Ok(CommandOk::Done) => {
                if let Some(action) = label {
                    self.metrics.control.count("moderation", action);
                    audit(&self.audit_key, action, Some(pid), None, "by participant");
                }
                Ok(None)
            }
            Ok(CommandOk::Invite(t)) => {
                self.metrics.control.count("moderation", "invite");
                audit(
                    &self.audit_key,
                    "invite",
                    Some(pid),
                    Some(&t.room),
                    t.role.as_str(),
                );
                Ok(Some(ServerMsg::Invite(ting_proto::InviteLink {
                    link: format!("/m/{}?t={}", t.room, t.token),
                    token: t.token,
                    role: proto_role(t.role),
                    expires_at: t.expires_at,
                })))
            }
            Err(e) => {
                let (code, label) = command_error(&e);
                self.metrics.control.count("refused", label);
                Err(ErrorMsg {
                    code,
                    message: sentence(e.to_string()),
                    fatal: false,
                })
            }
        }
    }

    /// Sends the offer to be built into a connection on the worker it will live on.
    fn offer(&mut self, pid: ParticipantId, offer: Offer) -> Result<(), ErrorMsg> {
        let Some(member) = self.members.get(&pid).filter(|m| m.admitted) else {
            return Err(ErrorMsg {
                code: ErrorCode::NotJoined,
                message: "send join (and be let in) before offer".into(),
                fatal: false,
            });
        };
        if member.worker.is_some() && member.may_replace_media && !member.connecting {
            // A resumed client with a new PeerConnection: the old media connection goes.
            self.drop_media(pid);
            self.show_connection(pid);
        }
        let Some(member) = self.members.get(&pid) else {
            return Err(ErrorMsg {
                code: ErrorCode::NotJoined,
                message: "send join first".into(),
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
                for p in published {
                    let on = self.rooms.forwards(pid, control_source(p.source));
                    self.set_track(pid, p.source, on);
                }
            }
            WorkerEvent::Quality { pid, quality } => {
                let pid = ParticipantId(pid);
                if let Some(m) = self.members.get_mut(&pid) {
                    m.media_quality = quality;
                    self.show_connection(pid);
                }
            }
            WorkerEvent::MediaFailed { pid } => {
                let pid = ParticipantId(pid);
                // A participant whose signalling also dropped (a reloaded page closes both)
                // keeps its place: it resumes with a new offer, or times out. So does one
                // that resumed just before the news came (a busy worker can tell of the
                // failure after the socket dropped and came back): its client offers anew.
                let now = Instant::now();
                if self.members.get(&pid).is_some_and(|m| {
                    m.parked.is_some()
                        || m.resumed_at
                            .is_some_and(|t| now.saturating_duration_since(t) < MEDIA_FAILED_GRACE)
                }) {
                    self.drop_media(pid);
                    if let Some(m) = self.members.get_mut(&pid) {
                        m.may_replace_media = true;
                    }
                    return;
                }
                // Its socket may be about to close too (a reload): it gets a moment to
                // detach or offer anew before it is removed.
                if self.members.contains_key(&pid) {
                    self.drop_media(pid);
                    self.media_failed
                        .insert(pid, Instant::now() + MEDIA_FAILED_GRACE);
                }
            }
        }
    }

    /// Removes those whose media connection failed and who neither detached nor offered a
    /// new one in time.
    fn expire_media_failed(&mut self, now: Instant) {
        let due: Vec<ParticipantId> = self
            .media_failed
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in due {
            self.media_failed.remove(&pid);
            let Some(m) = self.members.get(&pid) else {
                continue;
            };
            if m.parked.is_some() || m.worker.is_some() || m.connecting {
                continue;
            }
            let _ = m.outbox.send(OutMsg::new(&ServerMsg::Error(ErrorMsg {
                code: ErrorCode::Internal,
                message: "your media connection failed; join again".into(),
                fatal: true,
            })));
            self.rooms.handle_leave(pid, LeaveReason::MediaFailed);
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

    /// Tells rooms, workers, the store and the audit log what `Rooms` decided.
    fn dispatch_events(&mut self) {
        while let Some(ev) = self.rooms.poll_event() {
            match ev {
                ControlEvent::RoomOpened { room, meeting } => {
                    audit(
                        &self.audit_key,
                        "meeting_started",
                        None,
                        Some(&room),
                        &meeting.to_string(),
                    );
                }
                ControlEvent::Joined { room, participant } => {
                    let Some(p) = self.rooms.participant(participant) else {
                        continue;
                    };
                    let msg = ServerMsg::ParticipantJoined {
                        participant: self.info(p),
                    };
                    let role = p.role;
                    audit(
                        &self.audit_key,
                        "joined",
                        Some(participant),
                        Some(&room),
                        role.as_str(),
                    );
                    // Someone let in from the lobby gets their welcome now.
                    if let Some(m) = self.members.get_mut(&participant)
                        && !m.admitted
                    {
                        m.admitted = true;
                        self.metrics.control.joins.fetch_add(1, Relaxed);
                        let welcome = ServerMsg::Welcome(self.welcome(participant));
                        self.tell(participant, &welcome);
                    }
                    if role.permissions().admit {
                        self.tell_lobby_to(participant, &room);
                    }
                    if !self.hidden.contains(&participant) {
                        self.tell_room(&room, Some(participant), &msg);
                    }
                }
                ControlEvent::LobbyChanged { room } => {
                    let msg = self.lobby_msg(&room);
                    for id in self.admitters(&room) {
                        self.tell(id, &msg);
                    }
                }
                ControlEvent::MediaChanged {
                    room,
                    participant,
                    media,
                } => {
                    if !self.hidden.contains(&participant) {
                        let msg = ServerMsg::ParticipantUpdated {
                            participant: pref(participant),
                            media: to_proto_media(media),
                        };
                        self.tell_room(&room, Some(participant), &msg);
                    }
                }
                ControlEvent::Forward {
                    participant,
                    source,
                    on,
                } => self.set_track(participant, media_source(source), on),
                ControlEvent::RoleChanged {
                    room,
                    participant,
                    role,
                } => {
                    audit(
                        &self.audit_key,
                        "role_changed",
                        Some(participant),
                        Some(&room),
                        role.as_str(),
                    );
                    let msg = ServerMsg::RoleChanged {
                        participant: pref(participant),
                        role: proto_role(role),
                    };
                    self.tell_room(&room, None, &msg);
                }
                ControlEvent::PermissionsChanged { participant } => {
                    let (Some(p), Some(perms)) = (
                        self.rooms.participant(participant),
                        self.rooms.permissions(participant),
                    ) else {
                        continue;
                    };
                    let room = p.room.clone();
                    let msg = ServerMsg::Permissions {
                        role: proto_role(p.role),
                        permissions: proto_permissions(perms),
                    };
                    self.tell(participant, &msg);
                    if perms.admit {
                        self.tell_lobby_to(participant, &room);
                    }
                }
                ControlEvent::Moderated {
                    participant,
                    source,
                    by,
                } => {
                    let msg = ServerMsg::Moderated {
                        source: proto_source(source),
                        by: pref(by),
                    };
                    self.tell(participant, &msg);
                }
                ControlEvent::HandsChanged { room } => {
                    let msg = ServerMsg::Hands {
                        queue: self.rooms.hands(&room).iter().map(|h| pref(*h)).collect(),
                    };
                    self.tell_room(&room, None, &msg);
                }
                ControlEvent::RoomUpdated { room } => {
                    audit(
                        &self.audit_key,
                        "room_updated",
                        None,
                        Some(&room),
                        "settings",
                    );
                    let msg = ServerMsg::RoomUpdated {
                        room: self.room_state(&room),
                    };
                    self.tell_room(&room, None, &msg);
                }
                ControlEvent::Chat(chat) => {
                    let msg = ServerMsg::Chat(ting_proto::ChatMsg {
                        from: pref(chat.from),
                        name: chat.name.expose().to_owned(),
                        text: chat.text.clone(),
                        at_ms: chat.at_ms,
                        to: chat.to.map(pref),
                        e2ee: chat.e2ee,
                    });
                    if chat.e2ee {
                        self.metrics.control.count("e2ee", "chat");
                    }
                    match chat.to {
                        Some(to) => {
                            self.metrics.control.count("chat", "private");
                            self.tell(to, &msg);
                            self.tell(chat.from, &msg);
                        }
                        None => {
                            self.metrics.control.count("chat", "room");
                            self.tell_room(&chat.room, None, &msg);
                        }
                    }
                    if self.config.chat.archive
                        && !self.store.archive(ChatRow {
                            room: chat.room.to_string(),
                            meeting: chat.meeting.to_string(),
                            at_ms: chat.at_ms,
                            from: chat.from.to_string(),
                            name: chat.name.expose().to_owned(),
                            to: chat.to.map(|t| t.to_string()),
                            e2ee: chat.e2ee,
                            text: chat.text,
                        })
                    {
                        self.metrics.control.count("chat", "not_archived");
                    }
                }
                ControlEvent::Left {
                    room,
                    participant,
                    reason,
                    admitted,
                } => {
                    let was_hidden = self.hidden.remove(&participant);
                    let farewell = match reason {
                        LeaveReason::Removed => {
                            Some((ErrorCode::Removed, "You were removed from this meeting."))
                        }
                        LeaveReason::MeetingEnded => {
                            Some((ErrorCode::MeetingEnded, "The meeting has ended."))
                        }
                        LeaveReason::Denied => {
                            Some((ErrorCode::Denied, "The host did not let you in."))
                        }
                        _ => None,
                    };
                    if let Some((code, message)) = farewell {
                        self.tell(
                            participant,
                            &ServerMsg::Error(ErrorMsg {
                                code,
                                message: message.into(),
                                fatal: true,
                            }),
                        );
                    }
                    self.remove_member(participant);
                    let reason = match reason {
                        LeaveReason::Left => ting_proto::LeaveReason::Left,
                        LeaveReason::TimedOut => ting_proto::LeaveReason::TimedOut,
                        LeaveReason::MediaFailed => ting_proto::LeaveReason::MediaFailed,
                        LeaveReason::ServerShutdown => ting_proto::LeaveReason::ServerShutdown,
                        LeaveReason::TooSlow => ting_proto::LeaveReason::TooSlow,
                        LeaveReason::Removed => ting_proto::LeaveReason::Removed,
                        LeaveReason::MeetingEnded => ting_proto::LeaveReason::MeetingEnded,
                        LeaveReason::Denied => ting_proto::LeaveReason::Left,
                    };
                    let event = match reason {
                        ting_proto::LeaveReason::Removed => "removed",
                        _ if !admitted => "left_lobby",
                        _ => "left",
                    };
                    audit(
                        &self.audit_key,
                        event,
                        Some(participant),
                        Some(&room),
                        &format!("{reason:?}"),
                    );
                    if admitted && !was_hidden {
                        let msg = ServerMsg::ParticipantLeft {
                            participant: pref(participant),
                            reason,
                        };
                        self.tell_room(&room, None, &msg);
                    }
                }
                ControlEvent::RoomClosed { room, meeting } => {
                    audit(
                        &self.audit_key,
                        "meeting_over",
                        None,
                        Some(&room),
                        &meeting.to_string(),
                    );
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

    /// Sends `msg` to one participant, if it is still here.
    fn tell(&self, pid: ParticipantId, msg: &ServerMsg) {
        if let Some(m) = self.members.get(&pid) {
            let _ = m.outbox.send(OutMsg::new(msg));
        }
    }

    /// Who in `room` may admit people from its lobby.
    fn admitters(&self, room: &RoomName) -> Vec<ParticipantId> {
        self.rooms
            .members(room)
            .filter(|p| self.rooms.permissions(p.id).is_some_and(|x| x.admit))
            .map(|p| p.id)
            .collect()
    }

    fn lobby_msg(&self, room: &RoomName) -> ServerMsg {
        ServerMsg::Lobby {
            waiting: self
                .rooms
                .lobby(room)
                .map(|p| ting_proto::Waiter {
                    id: pref(p.id),
                    name: p.name.expose().to_owned(),
                    role: proto_role(p.role),
                })
                .collect(),
        }
    }

    /// Tells an admitter who waits, when anyone does.
    fn tell_lobby_to(&self, pid: ParticipantId, room: &RoomName) {
        if self.rooms.lobby(room).next().is_some() {
            self.tell(pid, &self.lobby_msg(room));
        }
    }

    /// Takes down a member's media connection and its tracks, keeping the member.
    fn drop_media(&mut self, pid: ParticipantId) {
        let Some(m) = self.members.get(&pid) else {
            return;
        };
        for source in m.announced.clone() {
            self.set_track(pid, source, false);
        }
        let Some(m) = self.members.get_mut(&pid) else {
            return;
        };
        m.may_replace_media = false;
        m.published.clear();
        // A new connection is measured afresh.
        m.media_quality = Quality::Good;
        let (key, worker) = (m.key, m.worker.take());
        if let Some(w) = worker {
            self.workers[w.0].command(WorkerCmd::Disconnect { pid: pid.0 });
            self.release_worker(key, w);
        }
    }

    /// Removes a member's media: its tracks from every router of the room, its connection
    /// from its worker. Dropping the member drops its outbox, which ends its session.
    fn remove_member(&mut self, pid: ParticipantId) {
        self.drop_media(pid);
        let Some(m) = self.members.remove(&pid) else {
            return;
        };
        self.resume_tokens.remove(&m.resume);
        self.pending_offers.remove(&pid);
        self.media_failed.remove(&pid);
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
        for (pid, m) in self.members.iter().filter(|(_, m)| m.admitted) {
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

impl Conductor {
    /// Answers a control API call.
    fn api(&mut self, req: ApiRequest) -> Result<ApiReply, ApiFailure> {
        use axum::http::StatusCode;
        let now = now();
        let api_error = |e: ting_control::ApiError| match e {
            ting_control::ApiError::UnknownRoom => ApiFailure::not_found("room of that name"),
            ting_control::ApiError::UnknownParticipant => {
                ApiFailure::not_found("participant with that id in this room")
            }
            ting_control::ApiError::NoMeeting => ApiFailure::new(
                StatusCode::CONFLICT,
                "no_meeting",
                "no meeting is in progress in this room; a lock lasts as long as its meeting \
                 (use the room's lobby or passcode to control who may enter before it starts)",
            ),
            ting_control::ApiError::RoomExists => ApiFailure::new(
                StatusCode::CONFLICT,
                "exists",
                "a room of that name exists; change it with PATCH",
            ),
            ting_control::ApiError::CannotSign => ApiFailure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot_sign",
                e.to_string(),
            ),
            ting_control::ApiError::Invalid { field, problem } => {
                ApiFailure::invalid(field, format!("{field} {problem}"))
            }
        };
        match req {
            ApiRequest::List => {
                let mut names: Vec<RoomName> =
                    self.rooms.defined().map(|(n, _)| n.clone()).collect();
                names.extend(
                    self.keys
                        .keys()
                        .filter(|k| !self.rooms.is_defined(k))
                        .cloned(),
                );
                names.sort();
                Ok(ApiReply::Rooms(ting_proto::api::RoomList {
                    rooms: names.iter().map(|n| self.room_info(n)).collect(),
                }))
            }
            ApiRequest::Get(room) => {
                self.known(&room)?;
                Ok(ApiReply::Room {
                    info: self.room_info(&room),
                    created: false,
                    saved: None,
                })
            }
            ApiRequest::Create(body) => {
                let room = RoomName::parse(&body.name)
                    .map_err(|e| ApiFailure::invalid("name", format!("the room name {e}")))?;
                let settings = ting_control::RoomSettings {
                    starts_at: body.starts_at,
                    ends_at: body.ends_at,
                    passcode: self.passcode(body.passcode.as_deref())?,
                    lobby: body.lobby,
                    capacity: body.capacity.map(|c| c as usize),
                    e2ee_required: body.e2ee_required,
                    allow_unmute: body.allow_unmute.unwrap_or(true),
                };
                self.rooms
                    .define_room(room.clone(), settings)
                    .map_err(api_error)?;
                audit(&self.audit_key, "room_created", None, Some(&room), "api");
                Ok(ApiReply::Room {
                    info: self.room_info(&room),
                    created: true,
                    saved: Some(self.save_room(&room, now.unix_secs())),
                })
            }
            ApiRequest::Update(room, patch) => {
                if !self.rooms.is_defined(&room) {
                    return Err(ApiFailure::not_found(
                        "room of that name made through the API (open rooms have no settings)",
                    ));
                }
                let mut s = self.rooms.settings(&room).clone();
                if let Some(v) = patch.starts_at {
                    s.starts_at = v;
                }
                if let Some(v) = patch.ends_at {
                    s.ends_at = v;
                }
                if let Some(v) = patch.passcode {
                    s.passcode = self.passcode(v.as_deref())?;
                }
                if let Some(v) = patch.lobby {
                    s.lobby = v;
                }
                if let Some(v) = patch.capacity {
                    s.capacity = v.map(|c| c as usize);
                }
                if let Some(v) = patch.e2ee_required {
                    s.e2ee_required = v;
                }
                if let Some(v) = patch.allow_unmute {
                    s.allow_unmute = v;
                }
                self.rooms.update_room(&room, s).map_err(api_error)?;
                audit(&self.audit_key, "room_updated", None, Some(&room), "api");
                Ok(ApiReply::Room {
                    info: self.room_info(&room),
                    created: false,
                    saved: Some(self.save_room(&room, now.unix_secs())),
                })
            }
            ApiRequest::Delete(room) => {
                self.rooms.delete_room(&room, now).map_err(api_error)?;
                audit(&self.audit_key, "room_deleted", None, Some(&room), "api");
                Ok(ApiReply::Done {
                    saved: Some(self.store.delete_room(room.to_string(), now.unix_secs())),
                })
            }
            ApiRequest::Token(room, t) => {
                let ttl = t
                    .expires_in_secs
                    .unwrap_or(self.config.tokens.default_ttl_secs);
                if ttl == 0 || ttl > self.config.tokens.max_ttl_secs {
                    return Err(ApiFailure::invalid(
                        "expires_in_secs",
                        format!(
                            "expires_in_secs must be between 1 and {} (tokens.max_ttl_secs)",
                            self.config.tokens.max_ttl_secs
                        ),
                    ));
                }
                let role = control_role(t.role);
                let issued = self
                    .rooms
                    .api_issue_token(
                        &room,
                        role,
                        t.name,
                        t.subject,
                        t.lobby,
                        std::time::Duration::from_secs(ttl),
                        now,
                    )
                    .map_err(api_error)?;
                audit(
                    &self.audit_key,
                    "token_issued",
                    None,
                    Some(&room),
                    role.as_str(),
                );
                Ok(ApiReply::Token(ting_proto::api::TokenResponse {
                    link: format!("{}/m/{}?t={}", self.base_url, room, issued.token),
                    token: issued.token,
                    room: room.to_string(),
                    role: t.role,
                    expires_at: issued.expires_at,
                }))
            }
            ApiRequest::Participants(room) => {
                self.known(&room)?;
                let hands = self.rooms.hands(&room);
                let entry = |p: &ting_control::Participant| ting_proto::api::ParticipantEntry {
                    id: p.id.to_string(),
                    name: p.name.expose().to_owned(),
                    role: proto_role(p.role),
                    media: to_proto_media(p.media),
                    waiting: !p.admitted,
                    hand_raised: hands.contains(&p.id),
                    hidden: self.hidden.contains(&p.id),
                    e2ee: self.members.get(&p.id).is_some_and(|m| m.e2ee.is_some()),
                };
                Ok(ApiReply::Participants(ting_proto::api::ParticipantList {
                    participants: self
                        .rooms
                        .members(&room)
                        .chain(self.rooms.lobby(&room))
                        .map(entry)
                        .collect(),
                }))
            }
            ApiRequest::Remove(room, pid) => {
                self.rooms.api_remove(&room, pid).map_err(api_error)?;
                self.metrics.control.count("moderation", "remove");
                audit(&self.audit_key, "remove", Some(pid), Some(&room), "api");
                Ok(ApiReply::Done { saved: None })
            }
            ApiRequest::Lock(room, locked) => {
                self.rooms.api_lock(&room, locked).map_err(api_error)?;
                let action = if locked { "lock" } else { "unlock" };
                self.metrics.control.count("moderation", action);
                audit(&self.audit_key, action, None, Some(&room), "api");
                Ok(ApiReply::Done { saved: None })
            }
            ApiRequest::End(room) => {
                self.rooms.api_end(&room, now.at).map_err(api_error)?;
                self.metrics.control.count("moderation", "end_meeting");
                audit(&self.audit_key, "end_meeting", None, Some(&room), "api");
                Ok(ApiReply::Done { saved: None })
            }
        }
    }

    fn known(&self, room: &RoomName) -> Result<(), ApiFailure> {
        if self.rooms.is_defined(room) || self.keys.contains_key(room) {
            Ok(())
        } else {
            Err(ApiFailure::not_found("room of that name"))
        }
    }

    fn passcode(&mut self, p: Option<&str>) -> Result<Option<ting_control::Passcode>, ApiFailure> {
        let Some(p) = p else { return Ok(None) };
        let salt = self.rooms.random_bytes();
        ting_control::Passcode::new(p, salt)
            .map(Some)
            .map_err(|e| ApiFailure::invalid("passcode", format!("the passcode {e}")))
    }

    fn room_info(&self, room: &RoomName) -> ting_proto::api::RoomInfo {
        let s = self.rooms.settings(room);
        ting_proto::api::RoomInfo {
            name: room.to_string(),
            defined: self.rooms.is_defined(room),
            starts_at: s.starts_at,
            ends_at: s.ends_at,
            passcode: s.passcode.is_some(),
            lobby: s.lobby,
            capacity: s.capacity.map(|c| c as u32),
            e2ee_required: s.e2ee_required,
            allow_unmute: s.allow_unmute,
            live: self.rooms.live(room).map(|l| ting_proto::api::LiveInfo {
                meeting: l.meeting.to_string(),
                participants: l.participants as u32,
                waiting: l.waiting as u32,
                locked: l.locked,
            }),
        }
    }

    fn save_room(&self, room: &RoomName, now_unix: u64) -> oneshot::Receiver<Result<(), String>> {
        let s = self.rooms.settings(room);
        self.store.save_room(crate::store::RoomRow {
            name: room.to_string(),
            starts_at: s.starts_at,
            ends_at: s.ends_at,
            passcode: s.passcode.as_ref().map(|p| p.to_stored()),
            lobby: s.lobby,
            capacity: s.capacity,
            e2ee_required: s.e2ee_required,
            allow_unmute: s.allow_unmute,
            created_at: now_unix,
        })
    }
}

/// The moderation action a command is, for metrics and the audit log (`None`: not one).
fn command_label(cmd: &Command) -> Option<&'static str> {
    Some(match cmd {
        Command::Media(_) | Command::Hand(_) | Command::Chat { .. } => return None,
        Command::Admit(_) => "admit",
        Command::Deny(_) => "deny",
        Command::Lock(true) => "lock",
        Command::Lock(false) => "unlock",
        Command::Mute { .. } => "mute",
        Command::Remove(_) => "remove",
        Command::SetRole { .. } => "set_role",
        Command::AllowScreen { .. } => "allow_screen",
        Command::LowerHand(_) => "lower_hand",
        Command::EndMeeting => "end_meeting",
        Command::Invite { .. } => "invite",
    })
}

/// The key that turns room names into stable pseudonyms for the audit log: a room's name
/// may itself say who meets ("lindqvist-custody"), so the log carries a tag instead. The
/// same name gives the same tag as long as `tokens.secret` stays the same, so an auditor
/// who knows a room's name can find its events (`ting --audit-tag <room>`) and nobody
/// reading the log alone can learn the name.
#[derive(Debug)]
pub struct AuditKey(aws_lc_rs::hmac::Key);

impl AuditKey {
    /// Derived from the token secret (or any secret bytes).
    pub fn new(secret: &[u8]) -> AuditKey {
        let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"ting audit room tags");
        let derived = aws_lc_rs::hmac::sign(&k, secret);
        AuditKey(aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            derived.as_ref(),
        ))
    }

    /// The room's tag: 12 hex digits of HMAC-SHA256(key, name).
    pub fn room_tag(&self, room: &RoomName) -> String {
        let tag = aws_lc_rs::hmac::sign(&self.0, room.as_str().as_bytes());
        tag.as_ref()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// A security event, as a structured `tracing` event under the `ting::audit` target:
/// pseudonymous participant ids and room tags only, never display names, room names or
/// addresses.
fn audit(
    key: &AuditKey,
    event: &str,
    participant: Option<ParticipantId>,
    room: Option<&RoomName>,
    detail: &str,
) {
    let room = room.map(|r| key.room_tag(r)).unwrap_or_default();
    match participant {
        Some(p) => info!(
            target: "ting::audit",
            event,
            participant = %p,
            room,
            detail,
            "audit"
        ),
        None => info!(target: "ting::audit", event, room, detail, "audit"),
    }
}
