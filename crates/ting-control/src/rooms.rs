//! Rooms, the people in them and waiting to enter, and what each may do.
//!
//! Every decision about who may enter and who may do what is made here: admission (token,
//! schedule, removal, lock, passcode, capacity, lobby), the rights of each role, moderation,
//! the hands queue, chat relaying, and which of a participant's sources the server forwards.
//! The server carries commands in and events out; it decides nothing of this itself.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::names::{DisplayName, NameError, RoomName};
use crate::passcode::Passcode;
use crate::roles::{Permissions, Role};
use crate::tokens::{Claims, LEEWAY_SECS, TokenError, TokenKeys};

/// A participant, from the moment they ask to enter until they leave. Random, so it says
/// nothing about who they are or how many came before; safe to log. The same id names them
/// in signalling (as 16 hex digits), in the control plane and in the media workers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub u64);

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ParticipantId({self})")
    }
}

impl ParticipantId {
    /// Parses the 16-hex-digit form clients write. Anything else names nobody.
    pub fn parse(s: &str) -> Option<ParticipantId> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(ParticipantId)
    }
}

/// One meeting: a room from the moment it opens until its last participant leaves. Chat is
/// archived per meeting.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MeetingId(pub u64);

impl fmt::Display for MeetingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for MeetingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MeetingId({self})")
    }
}

/// The time, both as the monotonic clock (deadlines) and as the wall clock (token expiry,
/// schedules, chat times).
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub at: Instant,
    pub unix_ms: u64,
}

impl Now {
    pub fn unix_secs(self) -> u64 {
        self.unix_ms / 1000
    }
}

/// Which of a participant's sources are on, as others see them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaState {
    pub audio: bool,
    pub video: bool,
    pub screen: bool,
}

/// A participant's media source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Microphone,
    Camera,
    Screen,
}

/// Why a participant left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// They left on purpose.
    Left,
    /// Nothing was heard from them within the participant timeout.
    TimedOut,
    /// Their media connection failed.
    MediaFailed,
    /// The server is shutting down.
    ServerShutdown,
    /// Their connection stopped taking messages and was closed.
    TooSlow,
    /// A moderator (or the API) removed them.
    Removed,
    /// The meeting was ended for everyone.
    MeetingEnded,
    /// They waited in the lobby and were turned away.
    Denied,
}

/// Limits, timeouts and policy of the control plane.
#[derive(Debug, Clone, Copy)]
pub struct RoomsConfig {
    /// Rooms open at once on this server.
    pub max_rooms: usize,
    /// Participants in one room (a room's own capacity may be lower).
    pub max_participants_per_room: usize,
    /// A participant not heard from for this long is removed.
    pub participant_timeout: Duration,
    /// Whether anyone may open and enter a room not defined through the API without a
    /// token. The first person into an empty open room is its host.
    pub open_rooms: bool,
    /// The longest chat message, in characters.
    pub max_chat_chars: usize,
    /// Wrong passcodes a room takes per minute, from everyone together.
    pub passcode_attempts_per_minute: u32,
    /// The longest an invite link made in a meeting stays valid.
    pub max_invite: Duration,
    /// How early before its scheduled start a meeting admits people below moderator.
    pub early_join: Duration,
    /// How long an ended meeting turns away people below moderator (a moderator's joining
    /// opens it again at once).
    pub ended_hold: Duration,
    /// Every room requires end-to-end encryption (a room's own setting can require it too).
    pub e2ee_required: bool,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        RoomsConfig {
            max_rooms: 1000,
            max_participants_per_room: 250,
            participant_timeout: Duration::from_secs(20),
            open_rooms: false,
            max_chat_chars: 2000,
            passcode_attempts_per_minute: 10,
            max_invite: Duration::from_secs(24 * 3600),
            early_join: Duration::from_secs(15 * 60),
            ended_hold: Duration::from_secs(10 * 60),
            e2ee_required: false,
        }
    }
}

/// A room's settings, made through the control API (rooms not made there have the defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSettings {
    /// Scheduled start and end, seconds since the Unix epoch.
    pub starts_at: Option<u64>,
    pub ends_at: Option<u64>,
    pub passcode: Option<Passcode>,
    /// People below moderator wait in the lobby until admitted.
    pub lobby: bool,
    /// The most participants, below the server's own limit.
    pub capacity: Option<usize>,
    /// Clients must encrypt end to end.
    pub e2ee_required: bool,
    /// People a moderator muted may unmute themselves.
    pub allow_unmute: bool,
}

impl Default for RoomSettings {
    fn default() -> Self {
        RoomSettings {
            starts_at: None,
            ends_at: None,
            passcode: None,
            lobby: false,
            capacity: None,
            e2ee_required: false,
            allow_unmute: true,
        }
    }
}

/// Someone asks to enter a room.
#[derive(Debug, Clone, Copy)]
pub struct JoinRequest<'a> {
    pub room: &'a str,
    /// The name typed; a token's `name` claim takes precedence.
    pub name: &'a str,
    pub token: Option<&'a str>,
    pub passcode: Option<&'a str>,
    /// The client encrypts its media and chat end to end.
    pub e2ee: bool,
}

/// Why a join was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("the room name {0}")]
    BadRoomName(NameError),
    #[error("the display name {0}")]
    BadDisplayName(NameError),
    #[error("the room is full: all {limit} places are taken")]
    RoomFull { limit: usize },
    #[error("the server holds as many rooms as it may ({limit}); try again later")]
    TooManyRooms { limit: usize },
    #[error("this meeting needs an invitation: open the link you were sent")]
    TokenRequired,
    #[error("{0}")]
    Token(TokenError),
    #[error("you were removed from this meeting")]
    Removed,
    #[error("this meeting is locked: nobody new is let in")]
    Locked,
    #[error("this meeting needs its passcode")]
    PasscodeRequired,
    #[error("the passcode is wrong")]
    WrongPasscode,
    #[error("too many wrong passcodes for this meeting in the last minute; try again in a minute")]
    PasscodeAttempts,
    #[error("{0}")]
    OutsideSchedule(String),
    #[error("this meeting has ended")]
    MeetingEnded,
    #[error("this meeting was cancelled; the link no longer works")]
    RoomDeleted,
    #[error(
        "this meeting is end-to-end encrypted: open the meeting link that contains its key \
         (the part after #key=)"
    )]
    E2eeRequired,
}

/// A participant: admitted to a room, or waiting in its lobby.
#[derive(Debug, Clone)]
pub struct Participant {
    pub id: ParticipantId,
    pub room: RoomName,
    pub name: DisplayName,
    pub role: Role,
    /// The token's pseudonymous subject, if it came with one.
    pub subject: Option<String>,
    /// Sources as others see them.
    pub media: MediaState,
    /// Sources a moderator turned off (until they are turned on again, where allowed).
    pub muted_audio: bool,
    pub muted_video: bool,
    /// A moderator gave (`Some(true)`) or took (`Some(false)`) the right to share the screen.
    pub screen_grant: Option<bool>,
    /// In the meeting (not waiting in the lobby).
    pub admitted: bool,
    pub joined_at: Instant,
    last_seen: Instant,
    /// The token's subject and id, kept out of this meeting when removed, until `exp`.
    ban_keys: Vec<String>,
    token_exp: u64,
}

/// The result of a successful join.
#[derive(Debug, Clone)]
pub enum Admission {
    /// In the meeting.
    Joined(Joined),
    /// In the lobby; [`ControlEvent::Joined`] follows when admitted,
    /// [`ControlEvent::Left`] with [`LeaveReason::Denied`] when not.
    Waiting {
        participant: ParticipantId,
        room: RoomName,
    },
}

impl Admission {
    pub fn participant(&self) -> ParticipantId {
        match self {
            Admission::Joined(j) => j.participant,
            Admission::Waiting { participant, .. } => *participant,
        }
    }
}

/// Someone is in the meeting.
#[derive(Debug, Clone)]
pub struct Joined {
    pub participant: ParticipantId,
    pub room: RoomName,
    pub role: Role,
}

/// What a participant asks the room to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Their own sources switched on or off.
    Media(MediaState),
    Hand(bool),
    Chat {
        text: String,
        to: Option<ParticipantId>,
        /// The text is end-to-end encrypted: the server cannot read it, and it may be up
        /// to [`e2ee_chat_chars`] characters of base64url and `.`.
        e2ee: bool,
    },
    /// Let in one waiting person, or all (`None`).
    Admit(Option<ParticipantId>),
    Deny(Option<ParticipantId>),
    Lock(bool),
    Mute {
        target: ParticipantId,
        source: Source,
    },
    Remove(ParticipantId),
    SetRole {
        target: ParticipantId,
        role: Role,
    },
    AllowScreen {
        target: ParticipantId,
        allowed: bool,
    },
    LowerHand(ParticipantId),
    EndMeeting,
    Invite {
        role: Role,
        lobby: bool,
        expires_in: Option<Duration>,
    },
}

/// What a command gives back, besides its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOk {
    Done,
    Invite(IssuedToken),
}

/// A token made by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: String,
    pub room: RoomName,
    pub role: Role,
    pub expires_at: u64,
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("you are not in the meeting yet")]
    NotAdmitted,
    #[error("{0}")]
    Forbidden(String),
    #[error("nobody with that id is in this meeting")]
    UnknownParticipant,
    #[error("the chat message is {len} characters long; at most {max} are allowed")]
    ChatTooLong { len: usize, max: usize },
    #[error("the chat message {0}")]
    BadChat(&'static str),
    #[error("the meeting is full ({limit} places)")]
    RoomFull { limit: usize },
    #[error("this server has no token secret (tokens.secret), so it cannot make links")]
    CannotSign,
}

/// Why the API could not do what it asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("no room of that name")]
    UnknownRoom,
    #[error("a room of that name exists")]
    RoomExists,
    #[error("nobody with that id is in this room")]
    UnknownParticipant,
    #[error("no meeting is in progress in this room")]
    NoMeeting,
    #[error("this server has no token secret (tokens.secret), so it cannot issue tokens")]
    CannotSign,
    #[error("the room's {field} {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
}

/// What happened, for the room to be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlEvent {
    /// A room got its first participant: a meeting begins.
    RoomOpened { room: RoomName, meeting: MeetingId },
    /// Someone is now in the meeting (straight away, or admitted from the lobby).
    Joined {
        room: RoomName,
        participant: ParticipantId,
    },
    /// Who waits in `room`'s lobby changed.
    LobbyChanged { room: RoomName },
    /// Someone's sources, as others see them, changed.
    MediaChanged {
        room: RoomName,
        participant: ParticipantId,
        media: MediaState,
    },
    /// Whether the server forwards one of the participant's sources changed.
    Forward {
        participant: ParticipantId,
        source: Source,
        on: bool,
    },
    RoleChanged {
        room: RoomName,
        participant: ParticipantId,
        role: Role,
    },
    /// What the participant may do changed.
    PermissionsChanged { participant: ParticipantId },
    /// A moderator turned one of the participant's sources off.
    Moderated {
        participant: ParticipantId,
        source: Source,
        by: ParticipantId,
    },
    /// The raised hands changed.
    HandsChanged { room: RoomName },
    /// The meeting's settings (lock, lobby, passcode) changed.
    RoomUpdated { room: RoomName },
    /// A chat message to relay.
    Chat(ChatEvent),
    /// Someone left `room` (or its lobby, when `admitted` is false).
    Left {
        room: RoomName,
        participant: ParticipantId,
        reason: LeaveReason,
        admitted: bool,
    },
    /// The last participant left; the meeting is over.
    RoomClosed { room: RoomName, meeting: MeetingId },
}

/// A chat message, checked, to relay (and archive, where the operator wants it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatEvent {
    pub room: RoomName,
    pub meeting: MeetingId,
    pub from: ParticipantId,
    pub name: DisplayName,
    /// A private message's recipient.
    pub to: Option<ParticipantId>,
    pub text: String,
    /// The text is end-to-end encrypted.
    pub e2ee: bool,
    pub at_ms: u64,
}

/// The longest end-to-end encrypted chat text for a plain-text limit of `max_chat_chars`:
/// room for the largest UTF-8 message (4 bytes a character), sealed, in base64url, with its
/// key id.
pub fn e2ee_chat_chars(max_chat_chars: usize) -> usize {
    max_chat_chars.saturating_mul(6).saturating_add(64)
}

#[derive(Debug)]
struct Room {
    meeting: MeetingId,
    /// Admitted members in join order.
    members: Vec<ParticipantId>,
    /// Waiting, oldest first.
    lobby: Vec<ParticipantId>,
    locked: bool,
    hands: Vec<ParticipantId>,
}

/// Someone removed from a room: a token subject or token id, until the token expires.
#[derive(Debug)]
struct Ban {
    key: String,
    until: u64,
}

/// All rooms of this server. See the crate docs for the handle/poll contract.
#[derive(Debug)]
pub struct Rooms {
    config: RoomsConfig,
    keys: TokenKeys,
    defined: BTreeMap<RoomName, RoomSettings>,
    rooms: HashMap<RoomName, Room>,
    participants: HashMap<ParticipantId, Participant>,
    bans: HashMap<RoomName, Vec<Ban>>,
    ended: HashMap<RoomName, Instant>,
    /// Wrong passcodes per room in the current minute.
    passcode_attempts: HashMap<RoomName, (Instant, u32)>,
    /// Rooms deleted through the API, and when (Unix seconds): tokens issued before then
    /// no longer open them.
    deleted: HashMap<RoomName, u64>,
    events: VecDeque<ControlEvent>,
    rng: StdRng,
    /// When the next participant may time out; recomputed at each timeout.
    next_check: Option<Instant>,
}

const DEFAULT_SETTINGS: RoomSettings = RoomSettings {
    starts_at: None,
    ends_at: None,
    passcode: None,
    lobby: false,
    capacity: None,
    e2ee_required: false,
    allow_unmute: true,
};

impl Rooms {
    /// `seed` seeds participant and meeting ids and token ids; give it real randomness in a
    /// server, a constant in tests.
    pub fn new(config: RoomsConfig, keys: TokenKeys, seed: u64) -> Self {
        Rooms {
            config,
            keys,
            defined: BTreeMap::new(),
            rooms: HashMap::new(),
            participants: HashMap::new(),
            bans: HashMap::new(),
            ended: HashMap::new(),
            passcode_attempts: HashMap::new(),
            deleted: HashMap::new(),
            events: VecDeque::new(),
            rng: StdRng::seed_from_u64(seed),
            next_check: None,
        }
    }

    pub fn config(&self) -> &RoomsConfig {
        &self.config
    }

    /// Random bytes for passcode salts and the like, from this state machine's generator.
    pub fn random_bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        self.rng.fill(&mut b[..]);
        b
    }

    /// A room's settings: its own if defined, the defaults otherwise.
    pub fn settings(&self, room: &RoomName) -> &RoomSettings {
        self.defined.get(room).unwrap_or(&DEFAULT_SETTINGS)
    }

    /// Whether joining `room` needs end-to-end encryption: the server's rule or the room's.
    pub fn e2ee_required(&self, room: &RoomName) -> bool {
        self.config.e2ee_required || self.settings(room).e2ee_required
    }

    fn capacity(&self, room: &RoomName) -> usize {
        let max = self.config.max_participants_per_room;
        self.settings(room).capacity.map_or(max, |c| c.min(max))
    }

    /// Someone asks to enter a room. Checks, in order: names, token (or open rooms), removal,
    /// schedule, end, lock, passcode, capacity; then admits or puts them in the lobby.
    /// Whether `token` would let someone into `room` as far as the token goes (signature,
    /// time, room), without joining. A caller that answers "no such meeting" checks this
    /// first, so the answer never tells someone without a valid token whether a room
    /// exists.
    pub fn check_token(&self, room: &str, token: Option<&str>, now: Now) -> Result<(), JoinError> {
        let room = RoomName::parse(room).map_err(JoinError::BadRoomName)?;
        let token = token.ok_or(JoinError::TokenRequired)?;
        self.keys
            .verify(token, room.as_str(), now.unix_secs())
            .map(|_| ())
            .map_err(JoinError::Token)
    }

    pub fn handle_join(&mut self, req: JoinRequest<'_>, now: Now) -> Result<Admission, JoinError> {
        let room = RoomName::parse(req.room).map_err(JoinError::BadRoomName)?;
        let claims = match req.token {
            Some(t) => Some(
                self.keys
                    .verify(t, room.as_str(), now.unix_secs())
                    .map_err(JoinError::Token)?,
            ),
            None if self.config.open_rooms && !self.defined.contains_key(&room) => None,
            None => return Err(JoinError::TokenRequired),
        };
        if let (Some(c), Some(&at)) = (&claims, self.deleted.get(&room))
            && c.iat.is_none_or(|iat| iat <= at)
        {
            return Err(JoinError::RoomDeleted);
        }
        let typed = claims
            .as_ref()
            .and_then(|c| c.name.as_deref())
            .unwrap_or(req.name);
        let name = DisplayName::parse(typed).map_err(JoinError::BadDisplayName)?;
        let (empty, locked) = self
            .rooms
            .get(&room)
            .map_or((true, false), |r| (r.members.is_empty(), r.locked));
        let role = match &claims {
            Some(c) => c.role,
            // The first person into an empty open room hosts it.
            None if empty => Role::Host,
            None => Role::Participant,
        };
        let ban_keys = match (&claims, req.token) {
            (Some(c), Some(t)) => ban_keys(c, t),
            _ => Vec::new(),
        };
        self.prune_bans(now.unix_secs());
        if let Some(bans) = self.bans.get(&room)
            && bans.iter().any(|b| ban_keys.contains(&b.key))
        {
            return Err(JoinError::Removed);
        }
        if !req.e2ee && self.e2ee_required(&room) {
            return Err(JoinError::E2eeRequired);
        }
        let settings = self.settings(&room).clone();
        let privileged = role.is_moderator();
        if let Some(end) = settings.ends_at
            && end <= now.unix_secs()
        {
            return Err(JoinError::OutsideSchedule(format!(
                "this meeting was scheduled to end at {}",
                utc(end)
            )));
        }
        if let Some(start) = settings.starts_at
            && !privileged
            && start > now.unix_secs() + self.config.early_join.as_secs()
        {
            return Err(JoinError::OutsideSchedule(format!(
                "this meeting starts at {}; the link works from {} minutes before",
                utc(start),
                self.config.early_join.as_secs() / 60
            )));
        }
        let hold = self.config.ended_hold;
        self.ended
            .retain(|_, at| now.at.saturating_duration_since(*at) < hold);
        // Only a token makes someone a moderator for this: the tokenless host of an open
        // room would otherwise reopen what a moderator just ended.
        let moderator_by_token = claims.as_ref().is_some_and(|c| c.role.is_moderator());
        if self.ended.contains_key(&room) {
            if moderator_by_token {
                self.ended.remove(&room);
            } else {
                return Err(JoinError::MeetingEnded);
            }
        }
        let lobby = !privileged && (settings.lobby || claims.as_ref().is_some_and(|c| c.lobby));
        let passcode = settings.passcode;
        if !privileged {
            if locked {
                return Err(JoinError::Locked);
            }
            if let Some(p) = passcode {
                let Some(attempt) = req.passcode else {
                    return Err(JoinError::PasscodeRequired);
                };
                self.check_passcode(&room, &p, attempt, now.at)?;
            }
        }
        let capacity = self.capacity(&room);
        match self.rooms.get(&room) {
            Some(r) if r.members.len() >= capacity || (lobby && r.lobby.len() >= capacity) => {
                return Err(JoinError::RoomFull { limit: capacity });
            }
            None if self.rooms.len() >= self.config.max_rooms => {
                return Err(JoinError::TooManyRooms {
                    limit: self.config.max_rooms,
                });
            }
            _ => {}
        }
        let id = self.new_participant_id();
        if !self.rooms.contains_key(&room) {
            let meeting = MeetingId(self.rng.random());
            self.rooms.insert(
                room.clone(),
                Room {
                    meeting,
                    members: Vec::new(),
                    lobby: Vec::new(),
                    locked: false,
                    hands: Vec::new(),
                },
            );
            self.events.push_back(ControlEvent::RoomOpened {
                room: room.clone(),
                meeting,
            });
        }
        self.participants.insert(
            id,
            Participant {
                id,
                room: room.clone(),
                name,
                role,
                subject: claims.as_ref().and_then(|c| c.sub.clone()),
                media: MediaState::default(),
                muted_audio: false,
                muted_video: false,
                screen_grant: None,
                admitted: false,
                joined_at: now.at,
                last_seen: now.at,
                ban_keys,
                token_exp: claims.as_ref().map_or(0, |c| c.exp),
            },
        );
        let deadline = now.at + self.config.participant_timeout;
        self.next_check = Some(self.next_check.map_or(deadline, |d| d.min(deadline)));
        if lobby {
            let r = self.rooms.get_mut(&room).expect("inserted above");
            r.lobby.push(id);
            self.events
                .push_back(ControlEvent::LobbyChanged { room: room.clone() });
            return Ok(Admission::Waiting {
                participant: id,
                room,
            });
        }
        self.admit(id);
        Ok(Admission::Joined(Joined {
            participant: id,
            room,
            role,
        }))
    }

    fn new_participant_id(&mut self) -> ParticipantId {
        loop {
            let id = ParticipantId(self.rng.random());
            if !self.participants.contains_key(&id) {
                return id;
            }
        }
    }

    fn check_passcode(
        &mut self,
        room: &RoomName,
        passcode: &Passcode,
        attempt: &str,
        now: Instant,
    ) -> Result<(), JoinError> {
        let limit = self.config.passcode_attempts_per_minute;
        // Counted per room whether or not a meeting is in progress. Only rooms defined
        // through the API have passcodes, so the table is as small as their number.
        let (window, wrong) = self
            .passcode_attempts
            .entry(room.clone())
            .or_insert((now, 0));
        if now.saturating_duration_since(*window) >= Duration::from_secs(60) {
            *window = now;
            *wrong = 0;
        }
        if *wrong >= limit {
            return Err(JoinError::PasscodeAttempts);
        }
        if passcode.matches(attempt) {
            return Ok(());
        }
        *wrong += 1;
        Err(JoinError::WrongPasscode)
    }

    /// Moves a participant from nothing or the lobby into the meeting.
    fn admit(&mut self, id: ParticipantId) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        p.admitted = true;
        let room = p.room.clone();
        if let Some(r) = self.rooms.get_mut(&room) {
            let waited = r.lobby.len();
            r.lobby.retain(|w| *w != id);
            if r.lobby.len() != waited {
                self.events
                    .push_back(ControlEvent::LobbyChanged { room: room.clone() });
            }
            r.members.push(id);
        }
        self.events.push_back(ControlEvent::Joined {
            room,
            participant: id,
        });
    }

    /// The participant leaves (or is removed, or stops waiting). Unknown ids are ignored:
    /// leaving twice is fine.
    pub fn handle_leave(&mut self, id: ParticipantId, reason: LeaveReason) {
        let Some(p) = self.participants.remove(&id) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&p.room) else {
            return;
        };
        room.members.retain(|m| *m != id);
        let waited = room.lobby.len();
        room.lobby.retain(|m| *m != id);
        let hands = room.hands.len();
        room.hands.retain(|m| *m != id);
        let hands_changed = room.hands.len() != hands;
        let lobby_changed = room.lobby.len() != waited;
        let empty = room.members.is_empty() && room.lobby.is_empty();
        let meeting = room.meeting;
        self.events.push_back(ControlEvent::Left {
            room: p.room.clone(),
            participant: id,
            reason,
            admitted: p.admitted,
        });
        if lobby_changed {
            self.events.push_back(ControlEvent::LobbyChanged {
                room: p.room.clone(),
            });
        }
        if hands_changed {
            self.events.push_back(ControlEvent::HandsChanged {
                room: p.room.clone(),
            });
        }
        if empty {
            self.rooms.remove(&p.room);
            self.events.push_back(ControlEvent::RoomClosed {
                room: p.room,
                meeting,
            });
        }
    }

    /// Something was heard from the participant: they are still there.
    pub fn handle_seen(&mut self, id: ParticipantId, now: Instant) {
        if let Some(p) = self.participants.get_mut(&id) {
            p.last_seen = p.last_seen.max(now);
        }
    }

    /// What `id` may do now.
    pub fn permissions(&self, id: ParticipantId) -> Option<Permissions> {
        let p = self.participants.get(&id)?;
        let mut perms = p.role.permissions();
        if let Some(grant) = p.screen_grant {
            perms.publish_screen = grant;
        }
        perms.unmute = p.role.is_moderator() || self.settings(&p.room).allow_unmute;
        Some(perms)
    }

    /// Whether the server forwards `source` of `id` (when it is published at all).
    pub fn forwards(&self, id: ParticipantId, source: Source) -> bool {
        let (Some(p), Some(perms)) = (self.participants.get(&id), self.permissions(id)) else {
            return false;
        };
        p.admitted
            && match source {
                Source::Microphone => perms.publish_audio && !p.muted_audio,
                Source::Camera => perms.publish_video && !p.muted_video,
                Source::Screen => perms.publish_screen && p.media.screen,
            }
    }

    /// A participant asks for something. Checked against their rights; the effects come
    /// out as events.
    pub fn handle_command(
        &mut self,
        actor: ParticipantId,
        cmd: Command,
        now: Now,
    ) -> Result<CommandOk, CommandError> {
        let Some(p) = self.participants.get(&actor) else {
            return Err(CommandError::NotAdmitted);
        };
        if !p.admitted {
            return Err(CommandError::NotAdmitted);
        }
        let room = p.room.clone();
        let actor_role = p.role;
        let perms = self.permissions(actor).unwrap_or_default();
        let need = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(CommandError::Forbidden(format!(
                    "your role ({}) may not {what}",
                    actor_role.as_str()
                )))
            }
        };
        match cmd {
            Command::Media(media) => self.media(actor, media, perms)?,
            Command::Hand(raised) => self.set_hand(&room, actor, raised),
            Command::Chat { text, to, e2ee } => {
                need(perms.chat, "chat")?;
                self.chat(actor, &room, text, to, e2ee, now)?;
            }
            Command::Admit(who) => {
                need(perms.admit, "let people in")?;
                let waiting = self.waiters(&room, who)?;
                let capacity = self.capacity(&room);
                let members = self.rooms.get(&room).map_or(0, |r| r.members.len());
                if members + waiting.len() > capacity {
                    return Err(CommandError::RoomFull { limit: capacity });
                }
                for id in waiting {
                    self.admit(id);
                }
            }
            Command::Deny(who) => {
                need(perms.admit, "turn people away")?;
                for id in self.waiters(&room, who)? {
                    self.handle_leave(id, LeaveReason::Denied);
                }
            }
            Command::Lock(locked) => {
                need(perms.moderate, "lock the meeting")?;
                self.set_locked_live(&room, locked);
            }
            Command::Mute { target, source } => {
                need(perms.moderate, "turn others' media off")?;
                self.outranked(actor_role, &room, target)?;
                self.mute(target, source, Some(actor));
            }
            Command::Remove(target) => {
                need(perms.moderate, "remove people")?;
                self.outranked(actor_role, &room, target)?;
                self.remove(target);
            }
            Command::SetRole { target, role } => {
                need(perms.moderate, "change roles")?;
                self.outranked(actor_role, &room, target)?;
                if role >= actor_role {
                    return Err(CommandError::Forbidden(format!(
                        "only a role above {} may give it",
                        role.as_str()
                    )));
                }
                self.set_role(target, role);
            }
            Command::AllowScreen { target, allowed } => {
                need(perms.moderate, "give or take the screen")?;
                self.outranked(actor_role, &room, target)?;
                if let Some(t) = self.participants.get_mut(&target) {
                    t.screen_grant = Some(allowed);
                }
                self.events.push_back(ControlEvent::PermissionsChanged {
                    participant: target,
                });
                if !allowed {
                    self.mute(target, Source::Screen, Some(actor));
                }
            }
            Command::LowerHand(target) => {
                if target != actor {
                    need(perms.moderate, "lower others' hands")?;
                    self.member_of(&room, target)?;
                }
                self.set_hand(&room, target, false);
            }
            Command::EndMeeting => {
                need(perms.moderate, "end the meeting")?;
                self.end_live(&room, now.at);
            }
            Command::Invite {
                role,
                lobby,
                expires_in,
            } => {
                need(perms.admit, "invite people")?;
                if role > Role::Participant {
                    return Err(CommandError::Forbidden(
                        "invite links admit guests or participants; make someone a moderator \
                         once they are in"
                            .into(),
                    ));
                }
                let expires_in = expires_in
                    .unwrap_or(Duration::from_secs(3600))
                    .min(self.config.max_invite);
                let token = self
                    .issue(&room, role, None, None, lobby, expires_in, now)
                    .ok_or(CommandError::CannotSign)?;
                return Ok(CommandOk::Invite(token));
            }
        }
        Ok(CommandOk::Done)
    }

    fn media(
        &mut self,
        id: ParticipantId,
        media: MediaState,
        perms: Permissions,
    ) -> Result<(), CommandError> {
        let p = self.participants.get(&id).expect("checked by the caller");
        if media.screen && !p.media.screen && !perms.publish_screen {
            return Err(CommandError::Forbidden(
                "you may not share your screen in this meeting; ask a moderator".into(),
            ));
        }
        if !perms.unmute
            && ((media.audio && p.muted_audio && !p.media.audio)
                || (media.video && p.muted_video && !p.media.video))
        {
            return Err(CommandError::Forbidden(
                "a moderator turned this off, and this meeting does not let you turn it back on"
                    .into(),
            ));
        }
        let before =
            [Source::Microphone, Source::Camera, Source::Screen].map(|s| self.forwards(id, s));
        let p = self
            .participants
            .get_mut(&id)
            .expect("checked by the caller");
        if media.audio {
            p.muted_audio = false;
        }
        if media.video {
            p.muted_video = false;
        }
        let changed = p.media != media;
        p.media = media;
        let room = p.room.clone();
        self.forward_changes(id, before);
        if changed {
            self.events.push_back(ControlEvent::MediaChanged {
                room,
                participant: id,
                media,
            });
        }
        Ok(())
    }

    /// Emits a [`ControlEvent::Forward`] for each source whose forwarding changed.
    fn forward_changes(&mut self, id: ParticipantId, before: [bool; 3]) {
        for (i, source) in [Source::Microphone, Source::Camera, Source::Screen]
            .into_iter()
            .enumerate()
        {
            let on = self.forwards(id, source);
            if on != before[i] {
                self.events.push_back(ControlEvent::Forward {
                    participant: id,
                    source,
                    on,
                });
            }
        }
    }

    fn set_hand(&mut self, room: &RoomName, id: ParticipantId, raised: bool) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let had = r.hands.contains(&id);
        if raised && !had {
            r.hands.push(id);
        } else if !raised && had {
            r.hands.retain(|h| *h != id);
        } else {
            return;
        }
        self.events
            .push_back(ControlEvent::HandsChanged { room: room.clone() });
    }

    fn chat(
        &mut self,
        from: ParticipantId,
        room: &RoomName,
        text: String,
        to: Option<ParticipantId>,
        e2ee: bool,
        now: Now,
    ) -> Result<(), CommandError> {
        let len = text.chars().count();
        let max = if e2ee {
            e2ee_chat_chars(self.config.max_chat_chars)
        } else {
            self.config.max_chat_chars
        };
        if len > max {
            return Err(CommandError::ChatTooLong { len, max });
        }
        if e2ee
            && !text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(CommandError::BadChat(
                "is marked end-to-end encrypted but is not base64url ciphertext",
            ));
        }
        if text.trim().is_empty() {
            return Err(CommandError::BadChat("is empty"));
        }
        if text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(CommandError::BadChat("contains a control character"));
        }
        if let Some(to) = to {
            self.member_of(room, to)?;
        }
        let (Some(r), Some(p)) = (self.rooms.get(room), self.participants.get(&from)) else {
            return Err(CommandError::NotAdmitted);
        };
        self.events.push_back(ControlEvent::Chat(ChatEvent {
            room: room.clone(),
            meeting: r.meeting,
            from,
            name: p.name.clone(),
            to,
            text,
            e2ee,
            at_ms: now.unix_ms,
        }));
        Ok(())
    }

    /// The waiting people `who` names in `room`: one, or all.
    fn waiters(
        &self,
        room: &RoomName,
        who: Option<ParticipantId>,
    ) -> Result<Vec<ParticipantId>, CommandError> {
        let lobby = self
            .rooms
            .get(room)
            .map(|r| r.lobby.clone())
            .unwrap_or_default();
        match who {
            None => Ok(lobby),
            Some(id) if lobby.contains(&id) => Ok(vec![id]),
            Some(_) => Err(CommandError::UnknownParticipant),
        }
    }

    /// `target` is admitted in `room`.
    fn member_of(&self, room: &RoomName, target: ParticipantId) -> Result<(), CommandError> {
        match self.participants.get(&target) {
            Some(t) if t.room == *room && t.admitted => Ok(()),
            _ => Err(CommandError::UnknownParticipant),
        }
    }

    /// `target` is in `room` and ranks below `actor`.
    fn outranked(
        &self,
        actor: Role,
        room: &RoomName,
        target: ParticipantId,
    ) -> Result<(), CommandError> {
        self.member_of(room, target)?;
        let t = &self.participants[&target];
        if t.role >= actor {
            return Err(CommandError::Forbidden(format!(
                "a {} cannot do this to a {}",
                actor.as_str(),
                t.role.as_str()
            )));
        }
        Ok(())
    }

    /// Turns a source of `target` off; `by` is told to them as who did it.
    fn mute(&mut self, target: ParticipantId, source: Source, by: Option<ParticipantId>) {
        let before =
            [Source::Microphone, Source::Camera, Source::Screen].map(|s| self.forwards(target, s));
        let Some(t) = self.participants.get_mut(&target) else {
            return;
        };
        let old = t.media;
        let was_forwarded = before[source as usize];
        match source {
            Source::Microphone => {
                t.muted_audio = true;
                t.media.audio = false;
            }
            Source::Camera => {
                t.muted_video = true;
                t.media.video = false;
            }
            Source::Screen => t.media.screen = false,
        }
        let media = t.media;
        let room = t.room.clone();
        self.forward_changes(target, before);
        if media != old {
            self.events.push_back(ControlEvent::MediaChanged {
                room,
                participant: target,
                media,
            });
        }
        if let Some(by) = by
            && (was_forwarded || media != old)
        {
            self.events.push_back(ControlEvent::Moderated {
                participant: target,
                source,
                by,
            });
        }
    }

    fn set_role(&mut self, target: ParticipantId, role: Role) {
        let before =
            [Source::Microphone, Source::Camera, Source::Screen].map(|s| self.forwards(target, s));
        let Some(t) = self.participants.get_mut(&target) else {
            return;
        };
        if t.role == role {
            return;
        }
        t.role = role;
        let room = t.room.clone();
        let sharing = t.media.screen;
        self.events.push_back(ControlEvent::RoleChanged {
            room: room.clone(),
            participant: target,
            role,
        });
        self.events.push_back(ControlEvent::PermissionsChanged {
            participant: target,
        });
        if sharing && !self.permissions(target).is_some_and(|p| p.publish_screen) {
            if let Some(t) = self.participants.get_mut(&target) {
                t.media.screen = false;
            }
            self.events.push_back(ControlEvent::MediaChanged {
                room,
                participant: target,
                media: self.participants[&target].media,
            });
        }
        self.forward_changes(target, before);
    }

    /// Removes `target` and keeps its token out of the room until the token expires.
    fn remove(&mut self, target: ParticipantId) {
        let Some(t) = self.participants.get(&target) else {
            return;
        };
        let until = t.token_exp.saturating_add(LEEWAY_SECS);
        let bans = self.bans.entry(t.room.clone()).or_default();
        for key in &t.ban_keys {
            bans.push(Ban {
                key: key.clone(),
                until,
            });
        }
        self.handle_leave(target, LeaveReason::Removed);
    }

    fn prune_bans(&mut self, now_unix: u64) {
        self.bans.retain(|_, b| {
            b.retain(|ban| ban.until > now_unix);
            !b.is_empty()
        });
    }

    fn set_locked_live(&mut self, room: &RoomName, locked: bool) {
        if let Some(r) = self.rooms.get_mut(room)
            && r.locked != locked
        {
            r.locked = locked;
            self.events
                .push_back(ControlEvent::RoomUpdated { room: room.clone() });
        }
    }

    /// Ends the meeting in `room`: the lobby is turned away, everyone leaves, and people
    /// below moderator are refused for `ended_hold`.
    fn end_live(&mut self, room: &RoomName, now: Instant) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let waiting = r.lobby.clone();
        let members = r.members.clone();
        for id in waiting {
            self.handle_leave(id, LeaveReason::MeetingEnded);
        }
        for id in members {
            self.handle_leave(id, LeaveReason::MeetingEnded);
        }
        self.ended.insert(room.clone(), now);
    }

    /// Makes a token for `room` signed with the server's secret.
    #[allow(clippy::too_many_arguments)]
    fn issue(
        &mut self,
        room: &RoomName,
        role: Role,
        name: Option<String>,
        subject: Option<String>,
        lobby: bool,
        expires_in: Duration,
        now: Now,
    ) -> Option<IssuedToken> {
        if !self.keys.can_sign() {
            return None;
        }
        let jti: [u8; 12] = self.random_bytes();
        let jti: String = jti.iter().map(|b| format!("{b:02x}")).collect();
        let expires_at = now.unix_secs() + expires_in.as_secs();
        let claims = Claims {
            room: room.as_str().to_owned(),
            exp: expires_at,
            role,
            name,
            sub: subject,
            nbf: None,
            iat: Some(now.unix_secs()),
            lobby,
            jti: Some(jti),
        };
        Some(IssuedToken {
            token: self.keys.sign(&claims)?,
            room: room.clone(),
            role,
            expires_at,
        })
    }

    /// When [`Rooms::handle_timeout`] should next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_check
    }

    /// Removes participants not heard from within the participant timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_check.is_none_or(|t| t > now) {
            return;
        }
        let timeout = self.config.participant_timeout;
        let expired: Vec<ParticipantId> = self
            .participants
            .values()
            .filter(|p| now.saturating_duration_since(p.last_seen) >= timeout)
            .map(|p| p.id)
            .collect();
        for id in expired {
            self.handle_leave(id, LeaveReason::TimedOut);
        }
        self.next_check = self
            .participants
            .values()
            .map(|p| p.last_seen + timeout)
            .min();
    }

    pub fn poll_event(&mut self) -> Option<ControlEvent> {
        self.events.pop_front()
    }

    pub fn participant(&self, id: ParticipantId) -> Option<&Participant> {
        self.participants.get(&id)
    }

    /// The admitted members of `room` in join order.
    pub fn members(&self, room: &RoomName) -> impl Iterator<Item = &Participant> {
        self.rooms
            .get(room)
            .into_iter()
            .flat_map(|r| r.members.iter())
            .filter_map(|id| self.participants.get(id))
    }

    /// Who waits in `room`'s lobby, oldest first.
    pub fn lobby(&self, room: &RoomName) -> impl Iterator<Item = &Participant> {
        self.rooms
            .get(room)
            .into_iter()
            .flat_map(|r| r.lobby.iter())
            .filter_map(|id| self.participants.get(id))
    }

    /// Raised hands in `room`, in the order raised.
    pub fn hands(&self, room: &RoomName) -> &[ParticipantId] {
        self.rooms.get(room).map_or(&[], |r| &r.hands)
    }

    /// The live state of `room`: its meeting and whether it is locked.
    pub fn live(&self, room: &RoomName) -> Option<LiveRoom> {
        self.rooms.get(room).map(|r| LiveRoom {
            meeting: r.meeting,
            locked: r.locked,
            participants: r.members.len(),
            waiting: r.lobby.len(),
        })
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }

    /// Removes everyone, e.g. when the server shuts down.
    pub fn close_all(&mut self, reason: LeaveReason) {
        let ids: Vec<ParticipantId> = self.participants.keys().copied().collect();
        for id in ids {
            self.handle_leave(id, reason);
        }
    }

    // The operator's side (the control API). It has every right, in every room.

    /// The rooms defined through the API, by name.
    pub fn defined(&self) -> impl Iterator<Item = (&RoomName, &RoomSettings)> {
        self.defined.iter()
    }

    pub fn is_defined(&self, room: &RoomName) -> bool {
        self.defined.contains_key(room)
    }

    /// Defines a room (or loads one from storage).
    pub fn define_room(&mut self, room: RoomName, settings: RoomSettings) -> Result<(), ApiError> {
        check_settings(&settings, self.config.max_participants_per_room)?;
        if self.defined.contains_key(&room) {
            return Err(ApiError::RoomExists);
        }
        self.defined.insert(room, settings);
        Ok(())
    }

    /// Replaces a room's settings; a meeting in progress sees the change at once.
    pub fn update_room(&mut self, room: &RoomName, settings: RoomSettings) -> Result<(), ApiError> {
        check_settings(&settings, self.config.max_participants_per_room)?;
        let old = self.defined.get_mut(room).ok_or(ApiError::UnknownRoom)?;
        let visible_changed =
            old.lobby != settings.lobby || old.passcode.is_some() != settings.passcode.is_some();
        let unmute_changed = old.allow_unmute != settings.allow_unmute;
        *old = settings;
        if visible_changed && self.rooms.contains_key(room) {
            self.events
                .push_back(ControlEvent::RoomUpdated { room: room.clone() });
        }
        if unmute_changed {
            let ids: Vec<ParticipantId> = self.members(room).map(|p| p.id).collect();
            for id in ids {
                self.events
                    .push_back(ControlEvent::PermissionsChanged { participant: id });
            }
        }
        Ok(())
    }

    /// Forgets a room's definition, ending its meeting if one is in progress. Tokens issued
    /// for it before now no longer open it (see [`Rooms::load_deleted`]).
    pub fn delete_room(&mut self, room: &RoomName, now: Now) -> Result<(), ApiError> {
        self.defined.remove(room).ok_or(ApiError::UnknownRoom)?;
        self.end_live(room, now.at);
        self.ended.remove(room);
        self.passcode_attempts.remove(room);
        self.deleted.insert(room.clone(), now.unix_secs());
        Ok(())
    }

    /// A room deleted at `deleted_at` (Unix seconds), as kept in storage: tokens issued for
    /// it up to then, or without an issue time, are refused.
    pub fn load_deleted(&mut self, room: RoomName, deleted_at: u64) {
        let at = self.deleted.entry(room).or_insert(deleted_at);
        *at = (*at).max(deleted_at);
    }

    /// Whether a room of this name was deleted (its old tokens are refused).
    pub fn deleted_at(&self, room: &RoomName) -> Option<u64> {
        self.deleted.get(room).copied()
    }

    fn known(&self, room: &RoomName) -> Result<(), ApiError> {
        if self.defined.contains_key(room) || self.rooms.contains_key(room) {
            Ok(())
        } else {
            Err(ApiError::UnknownRoom)
        }
    }

    /// Locks or unlocks the meeting in progress (a lock lasts as long as its meeting).
    pub fn api_lock(&mut self, room: &RoomName, locked: bool) -> Result<(), ApiError> {
        self.known(room)?;
        if !self.rooms.contains_key(room) {
            return Err(ApiError::NoMeeting);
        }
        self.set_locked_live(room, locked);
        Ok(())
    }

    pub fn api_remove(&mut self, room: &RoomName, id: ParticipantId) -> Result<(), ApiError> {
        self.known(room)?;
        match self.participants.get(&id) {
            Some(p) if p.room == *room => {}
            _ => return Err(ApiError::UnknownParticipant),
        }
        self.remove(id);
        Ok(())
    }

    pub fn api_end(&mut self, room: &RoomName, now: Instant) -> Result<(), ApiError> {
        self.known(room)?;
        if !self.rooms.contains_key(room) {
            return Err(ApiError::NoMeeting);
        }
        self.end_live(room, now);
        Ok(())
    }

    /// Issues a join token for a defined room (or any room, where rooms are open).
    #[allow(clippy::too_many_arguments)]
    pub fn api_issue_token(
        &mut self,
        room: &RoomName,
        role: Role,
        name: Option<String>,
        subject: Option<String>,
        lobby: bool,
        expires_in: Duration,
        now: Now,
    ) -> Result<IssuedToken, ApiError> {
        self.known(room)?;
        if let Some(n) = &name {
            DisplayName::parse(n).map_err(|e| ApiError::Invalid {
                field: "name",
                problem: e.to_string(),
            })?;
        }
        if let Some(s) = &subject
            && (s.is_empty() || s.len() > 128 || s.chars().any(char::is_control))
        {
            return Err(ApiError::Invalid {
                field: "subject",
                problem: "must be 1 to 128 bytes without control characters".into(),
            });
        }
        self.issue(room, role, name, subject, lobby, expires_in, now)
            .ok_or(ApiError::CannotSign)
    }
}

/// The live state of a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveRoom {
    pub meeting: MeetingId,
    pub locked: bool,
    pub participants: usize,
    pub waiting: usize,
}

fn check_settings(s: &RoomSettings, max: usize) -> Result<(), ApiError> {
    if let (Some(a), Some(b)) = (s.starts_at, s.ends_at)
        && b <= a
    {
        return Err(ApiError::Invalid {
            field: "ends_at",
            problem: "must be after starts_at".into(),
        });
    }
    if let Some(c) = s.capacity
        && (c == 0 || c > max)
    {
        return Err(ApiError::Invalid {
            field: "capacity",
            problem: format!("must be 1 to {max} (limits.max_participants_per_room)"),
        });
    }
    Ok(())
}

/// What keeps a removed person's token out: its subject, its id, and a hash of what it signs
/// (header and claims), which tells one token from every other even without an id. Not the
/// signature: an ECDSA signature has a second valid form the holder could switch to.
fn ban_keys(c: &Claims, token: &str) -> Vec<String> {
    let signed = token.rsplit_once('.').map_or(token, |(signed, _)| signed);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, signed.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let mut keys = vec![format!("token:{hex}")];
    if let Some(s) = &c.sub {
        keys.push(format!("sub:{s}"));
    }
    if let Some(j) = &c.jti {
        keys.push(format!("jti:{j}"));
    }
    keys
}

/// A Unix time as `YYYY-MM-DD HH:MM UTC`.
pub fn utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        (secs % 3600) / 60
    )
}
