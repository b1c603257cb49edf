//! The signalling protocol between a ting server and its clients.
//!
//! Clients (the browser client, `ting-bench`, anything else) talk to the server over one
//! WebSocket at `/ws`, one JSON object per text frame, each with a `"type"` field. The types
//! here are the single definition of those messages; `docs/protocol.md` describes them for
//! client authors, with the order in which they are exchanged.
//!
//! The protocol is versioned by [`PROTOCOL_VERSION`]: a client names the version it speaks in
//! [`Join::protocol`] and the server refuses versions it does not speak. Within one version,
//! fields may be added (unknown fields are ignored by both sides), never removed or renamed.
//!
//! Everything a client sends is untrusted: [`ClientMsg::parse`] enforces a size limit and
//! returns a [`ParseError`] that names the problem, which the server sends back as an
//! [`ErrorMsg`] without closing the connection.

use serde::{Deserialize, Serialize};
use std::fmt;

pub mod api;

/// The protocol version this crate describes.
pub const PROTOCOL_VERSION: u32 = 1;

/// A participant's id on the wire: an opaque, pseudonymous string chosen by the server.
///
/// It never contains the participant's name and is safe to log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ParticipantRef(pub String);

impl fmt::Display for ParticipantRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a published track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Microphone,
    Camera,
    Screen,
}

/// Messages a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// Enter a room. Must be the first message; answered by [`ServerMsg::Welcome`].
    Join(Join),
    /// Instead of `join`, after the connection dropped (or the page reloaded): become the
    /// same participant again with the `resume` token of its `welcome`. Answered by a
    /// `welcome` with `resumed: true`, or `resume_failed`.
    Resume(Resume),
    /// The client's SDP offer with what each m-line is for; answered by [`ServerMsg::Answer`].
    Offer(Offer),
    /// A new offer for the media connection that exists, with new ICE credentials and the
    /// same m-lines (what `RTCPeerConnection.restartIce()` produces): the client's network
    /// changed or went quiet. Answered by [`ServerMsg::Answer`]; the participant, its
    /// tracks and its receive slots stay as they are.
    IceRestart { sdp: String },
    /// The client muted/unmuted or turned its camera or screen share on/off.
    Media(MediaState),
    /// What the client shows: which cameras, at which size. The server fills the client's
    /// camera slots from it and picks each one's simulcast layer from the size.
    Layout(Layout),
    /// Keeps the session alive; answered by [`ServerMsg::Pong`].
    Ping,
    /// The client leaves the room; the server closes the connection.
    Leave,
    /// A chat message to the room, or to one participant (`to`).
    Chat(ChatSend),
    /// Raise or lower one's own hand.
    Hand { raised: bool },
    /// Let waiting people in from the lobby: one, or everyone waiting (`participant` left
    /// out). Needs the `admit` permission.
    Admit {
        #[serde(default)]
        participant: Option<ParticipantRef>,
    },
    /// Turn waiting people away: one, or everyone waiting. Needs `admit`.
    Deny {
        #[serde(default)]
        participant: Option<ParticipantRef>,
    },
    /// Lock or unlock the meeting: a locked meeting admits nobody new. Needs `moderate`.
    Lock { locked: bool },
    /// Stop forwarding someone's microphone or camera, or their screen share. Needs
    /// `moderate` and a higher rank than theirs.
    Mute {
        participant: ParticipantRef,
        source: Source,
    },
    /// Remove someone from the meeting; their token no longer admits them to it. Needs
    /// `moderate` and a higher rank.
    Remove { participant: ParticipantRef },
    /// Give someone a role below one's own. Needs `moderate` and a higher rank.
    SetRole {
        participant: ParticipantRef,
        role: Role,
    },
    /// Give or take back someone's right to share their screen. Needs `moderate`.
    AllowScreen {
        participant: ParticipantRef,
        allowed: bool,
    },
    /// Lower someone else's raised hand (one's own: [`ClientMsg::Hand`]). Needs `moderate`.
    LowerHand { participant: ParticipantRef },
    /// End the meeting for everyone. Needs `moderate`.
    EndMeeting,
    /// Create a join link for someone not yet invited (a guest, an expert pulled in).
    /// Needs `admit`; answered by [`ServerMsg::Invite`].
    Invite(InviteRequest),
    /// End-to-end encryption keys for other participants, each sealed for its recipient
    /// (`docs/e2ee.md`); the server delivers each as [`ServerMsg::E2eeKey`] and cannot read
    /// them. Only for a client that joined with [`Join::e2ee`]. Recipients not in the room
    /// are skipped.
    E2eeKeys { keys: Vec<E2eeKeyFor> },
}

/// One sealed key and whom it is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct E2eeKeyFor {
    pub to: ParticipantRef,
    /// Opaque to the server: at most [`E2EE_DATA_MAX`] characters of `[A-Za-z0-9_.-]`.
    pub data: String,
}

/// The longest announcement ([`Join::e2ee`]) or sealed key ([`E2eeKeyFor::data`]), in
/// characters.
pub const E2EE_DATA_MAX: usize = 256;

/// The most keys one [`ClientMsg::E2eeKeys`] may carry.
pub const E2EE_KEYS_MAX: usize = 256;

/// Whether `s` is a well-formed announcement or sealed key: 1 to [`E2EE_DATA_MAX`]
/// characters of base64url and `.`.
pub fn is_e2ee_data(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= E2EE_DATA_MAX
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// A chat message as a client sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatSend {
    /// The text, at most [`Limits::max_chat_chars`] characters.
    pub text: String,
    /// Whom to send it to privately; the whole room when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<ParticipantRef>,
    /// The text is end-to-end encrypted (`docs/e2ee.md`): base64url and `.`, up to six
    /// times [`Limits::max_chat_chars`] plus 64 characters (room for the largest message,
    /// sealed).
    #[serde(default, skip_serializing_if = "is_false")]
    pub e2ee: bool,
}

/// What an invite link admits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteRequest {
    /// The role the link gives: `guest` (the default) or `participant`.
    #[serde(default = "guest")]
    pub role: Role,
    /// Whether people with the link wait in the lobby even if the room has none.
    #[serde(default)]
    pub lobby: bool,
    /// How long the link works, in seconds (at most a day; default an hour).
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
}

fn guest() -> Role {
    Role::Guest
}

/// What someone may do in a meeting, by rank from highest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Guest,
    Participant,
    Moderator,
    Host,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Moderator => "moderator",
            Role::Participant => "participant",
            Role::Guest => "guest",
        }
    }
}

/// What one participant may do now (its role's rights and what moderators changed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    pub publish_audio: bool,
    pub publish_video: bool,
    pub publish_screen: bool,
    pub chat: bool,
    /// Let people in from the lobby, create invite links.
    pub admit: bool,
    /// Mute, remove, lock, change roles, end the meeting.
    pub moderate: bool,
    /// May turn the microphone and camera back on after a moderator turned them off.
    pub unmute: bool,
}

/// The meeting's settings as participants see them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomState {
    /// Nobody new is admitted.
    pub locked: bool,
    /// People below moderator wait in the lobby until admitted.
    pub lobby: bool,
    /// Joining needs a passcode.
    pub passcode: bool,
    /// Joining needs end-to-end encryption ([`Join::e2ee`]).
    #[serde(default)]
    pub e2ee_required: bool,
}

/// Enter a room.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Join {
    /// The protocol version the client speaks.
    pub protocol: u32,
    /// The room's name, as in the meeting link `/m/<room>`.
    pub room: String,
    /// The name shown to others. It is relayed to the room, never logged. A join token's
    /// `name` claim takes precedence.
    pub name: String,
    /// The join token from the link (`/m/<room>?t=<token>`); needed unless the server keeps
    /// open rooms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The room's passcode, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passcode: Option<String>,
    /// The client encrypts end to end: its public-key announcement (`docs/e2ee.md`), which
    /// the server relays to the room unread. At most [`E2EE_DATA_MAX`] characters of
    /// base64url and `.`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2ee: Option<String>,
}

impl fmt::Debug for Join {
    /// Without the name, token or passcode: a stray `{:?}` must not put them in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Join")
            .field("protocol", &self.protocol)
            .field("room_len", &self.room.len())
            .field("has_token", &self.token.is_some())
            .field("has_passcode", &self.passcode.is_some())
            .field("e2ee", &self.e2ee.is_some())
            .finish_non_exhaustive()
    }
}

/// Resume a participant whose connection dropped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    pub protocol: u32,
    /// The `resume` token of the participant's `welcome`.
    pub token: String,
    /// A new end-to-end encryption announcement (a reloaded page made new keys); the room
    /// is told with [`ServerMsg::ParticipantE2ee`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2ee: Option<String>,
}

impl fmt::Debug for Resume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resume")
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

/// The client's SDP offer, and what its m-lines are for.
///
/// Every mid named here must be an m-line of the offer with the matching kind and direction:
/// `publish` mids are `sendonly` (audio for the microphone, video for camera and screen),
/// `receive` mids are `recvonly`. The receive mids are the client's *slots*: the server maps
/// other participants' tracks into them and says which is where with [`ServerMsg::Slots`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    pub sdp: String,
    #[serde(default)]
    pub publish: Publish,
    #[serde(default)]
    pub receive: ReceiveSlots,
}

/// The mids on which the client sends its own tracks. Each is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publish {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub microphone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screen: Option<String>,
}

/// The mids of the client's receive slots, by what they are meant to show.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiveSlots {
    #[serde(default)]
    pub audio: Vec<String>,
    /// Camera slots: `camera` on the wire, as in `publish` and `slots`; `video`, the name
    /// protocol 1 began with, is still read.
    #[serde(default, rename = "camera", alias = "video")]
    pub video: Vec<String>,
    #[serde(default)]
    pub screen: Vec<String>,
}

/// What a client shows, sent whenever it changes (and once after `answer`).
///
/// The server maps the cameras of `tiles`, in order, into the client's camera slots: the
/// first tiles get slots first, and with too little bandwidth the last tiles lose their
/// video first. A client that never sends a layout gets the server's choice: the active
/// speaker large, the most recent speakers as thumbnails.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Speaker view (one large tile and a strip) or grid view.
    #[serde(default)]
    pub view: View,
    /// The page of the grid being shown, from 0 (informative).
    #[serde(default)]
    pub page: u32,
    /// The camera tiles on screen, most important first.
    #[serde(default)]
    pub tiles: Vec<Tile>,
}

/// How a client arranges its tiles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum View {
    /// One large tile, a strip of thumbnails.
    #[default]
    Speaker,
    /// Equal tiles, a page at a time.
    Grid,
}

/// One camera tile of a [`Layout`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tile {
    /// Whose camera, or `null` for "the active speaker" (whoever it is now, unless shown
    /// in another tile of this layout): the server switches that tile itself, with no
    /// round trip, when the speaker changes.
    #[serde(default)]
    pub participant: Option<ParticipantRef>,
    /// The tile's height on screen in device pixels. The server sends the smallest
    /// simulcast layer at least about this tall (bandwidth permitting).
    pub height: u32,
}

/// Which of a participant's sources are switched on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaState {
    /// Microphone on (not muted).
    #[serde(default)]
    pub audio: bool,
    /// Camera on.
    #[serde(default)]
    pub video: bool,
    /// Sharing the screen.
    #[serde(default)]
    pub screen: bool,
}

/// Messages the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// The client is in the room.
    Welcome(Welcome),
    /// The SDP answer to the client's offer.
    Answer { sdp: String },
    /// Someone entered the room.
    ParticipantJoined { participant: ParticipantInfo },
    /// Someone left the room.
    ParticipantLeft {
        participant: ParticipantRef,
        reason: LeaveReason,
    },
    /// Someone's sources changed.
    ParticipantUpdated {
        participant: ParticipantRef,
        media: MediaState,
    },
    /// The complete current mapping of this client's receive slots. Slots not listed are empty.
    Slots { slots: Vec<SlotAssignment> },
    /// Who is speaking now (possibly nobody).
    Speaking { participants: Vec<ParticipantRef> },
    /// The active (dominant) speaker changed; `null` before anyone has spoken.
    ActiveSpeaker { participant: Option<ParticipantRef> },
    /// Which simulcast layers of one of this client's own sources anybody receives. The
    /// client stops encoding and sending the layers marked `false` (for example with
    /// `RTCRtpSender.setParameters`, `encodings[i].active`) until they are wanted again;
    /// a source whose layers are all `false` is watched by nobody.
    SendLayers { source: Source, active: Vec<bool> },
    /// The answer to [`ClientMsg::Ping`].
    Pong,
    /// The client is waiting in the lobby; a `welcome` follows when it is admitted, a fatal
    /// `denied` error when it is not.
    Waiting {
        participant: ParticipantRef,
        room: String,
        /// Ping at least this often while waiting, or be removed (as in [`Limits`]).
        #[serde(default)]
        ping_interval_ms: u32,
    },
    /// Who waits in the lobby, oldest first; sent to those who may admit, whenever it
    /// changes and after their `welcome`.
    Lobby { waiting: Vec<Waiter> },
    /// The meeting's settings changed (for example it was locked).
    RoomUpdated { room: RoomState },
    /// Someone's role changed. The participant concerned also gets `permissions`.
    RoleChanged {
        participant: ParticipantRef,
        role: Role,
    },
    /// What this client may do now; after `welcome` when its rights change.
    Permissions {
        role: Role,
        permissions: Permissions,
    },
    /// A moderator turned off one of this client's sources; the server no longer forwards
    /// it. The client should show it as off.
    Moderated { source: Source, by: ParticipantRef },
    /// The raised hands, in the order they were raised.
    Hands { queue: Vec<ParticipantRef> },
    /// A chat message.
    Chat(ChatMsg),
    /// An invite link, answering [`ClientMsg::Invite`].
    Invite(InviteLink),
    /// Someone's connection to the server dropped and the server waits for them to come
    /// back (`reconnecting`), or they are back (`connected`).
    ParticipantConnection {
        participant: ParticipantRef,
        state: ConnectionState,
    },
    /// Someone's end-to-end encryption announcement changed (they came back from a
    /// reloaded page with new keys).
    ParticipantE2ee {
        participant: ParticipantRef,
        e2ee: String,
    },
    /// A key another participant sealed for this client ([`ClientMsg::E2eeKeys`]).
    E2eeKey { from: ParticipantRef, data: String },
    /// Something the client sent could not be done. The connection stays open unless the
    /// error says otherwise.
    Error(ErrorMsg),
}

/// The server's reply to [`ClientMsg::Join`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol: u32,
    /// The client's own id in this room.
    pub participant: ParticipantRef,
    /// The name others see for this client (a join token's name wins over the typed one).
    #[serde(default)]
    pub name: String,
    pub room: String,
    /// Everyone else already in the room.
    pub participants: Vec<ParticipantInfo>,
    pub limits: Limits,
    /// The client's role and rights.
    #[serde(default = "participant_role")]
    pub role: Role,
    #[serde(default)]
    pub permissions: Permissions,
    #[serde(default)]
    pub room_state: RoomState,
    /// Raised hands in order.
    #[serde(default)]
    pub hands: Vec<ParticipantRef>,
    /// The secret that lets this client become the same participant again after its
    /// connection drops (`resume`), until the participant times out. Keep it for the tab
    /// only (e.g. `sessionStorage`); never show or log it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
    /// True when this welcome answers a `resume`: the same participant, its media connection
    /// kept if it still works (then no new offer is needed).
    #[serde(default, skip_serializing_if = "is_false")]
    pub resumed: bool,
}

fn participant_role() -> Role {
    Role::Participant
}

/// Someone waiting in the lobby.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    pub id: ParticipantRef,
    pub name: String,
    pub role: Role,
}

/// A chat message as the server relays it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMsg {
    pub from: ParticipantRef,
    /// The sender's display name when it was sent.
    pub name: String,
    pub text: String,
    /// When the server relayed it, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Set for a private message: whom it was sent to (the recipient or, in the sender's
    /// own copy, the person it went to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<ParticipantRef>,
    /// The text is end-to-end encrypted.
    #[serde(default, skip_serializing_if = "is_false")]
    pub e2ee: bool,
}

/// A join link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteLink {
    /// The path and query of the link (`/m/<room>?t=<token>`); the client prefixes its origin.
    pub link: String,
    pub token: String,
    pub role: Role,
    /// When it stops working, in seconds since the Unix epoch.
    pub expires_at: u64,
}

/// What the server allows this client; the client sizes its offer by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// At most this many audio receive slots.
    pub audio_slots: u16,
    /// At most this many camera video receive slots (also sent as `camera_slots`).
    pub video_slots: u16,
    /// The same number as `video_slots`, under the name the rest of the protocol uses
    /// for cameras.
    #[serde(default)]
    pub camera_slots: u16,
    /// At most this many screen-share receive slots.
    pub screen_slots: u16,
    /// The largest message the server reads, in bytes.
    pub max_message_bytes: u32,
    /// Send a ping at least this often (milliseconds), or the server removes the client.
    pub ping_interval_ms: u32,
    /// The most people a room of this server holds (0 from servers that do not say).
    #[serde(default)]
    pub max_participants: u32,
    /// The longest chat message, in characters.
    #[serde(default)]
    pub max_chat_chars: u32,
    /// A participant not heard from for this long is removed (milliseconds); also how long
    /// after a dropped connection `resume` works.
    #[serde(default)]
    pub participant_timeout_ms: u32,
}

/// A participant as others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    pub id: ParticipantRef,
    pub name: String,
    pub media: MediaState,
    #[serde(default = "participant_role")]
    pub role: Role,
    /// Their connection dropped and the server waits for them to come back.
    #[serde(default, skip_serializing_if = "is_false")]
    pub reconnecting: bool,
    /// How their connection fares (left out while `connected`).
    #[serde(default, skip_serializing_if = "ConnectionState::is_connected")]
    pub connection: ConnectionState,
    /// Their end-to-end encryption announcement; left out for someone who does not encrypt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2ee: Option<String>,
}

/// The state of someone's connection to the server, as their tile should show it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// Their signalling or their media path is gone; the server waits for them.
    Reconnecting,
    /// All is well.
    #[default]
    Connected,
    /// Connected, but their network struggles: lasting loss either way, a long round
    /// trip, or too little downlink for what they show.
    Poor,
}

impl ConnectionState {
    pub fn is_connected(&self) -> bool {
        *self == ConnectionState::Connected
    }
}

/// Why a participant left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// They said goodbye.
    Left,
    /// Nothing was heard from them for too long.
    TimedOut,
    /// Their media connection failed or closed.
    MediaFailed,
    /// The server is shutting down.
    ServerShutdown,
    /// Their connection did not take the meeting's messages as fast as they came (it
    /// stopped reading); the server closed it rather than buffer without end.
    TooSlow,
    /// A moderator removed them.
    Removed,
    /// A moderator (or the API) ended the meeting for everyone.
    MeetingEnded,
}

/// One receive slot of the client, and whose track it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotAssignment {
    pub mid: String,
    pub participant: ParticipantRef,
    pub source: Source,
    /// True while the server sends nothing in this slot for lack of bandwidth (the client
    /// may show the participant's name instead of a frozen picture).
    #[serde(default, skip_serializing_if = "is_false")]
    pub paused: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// An error the server reports to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMsg {
    pub code: ErrorCode,
    /// A sentence for people: what was wrong and, where it helps, what to do.
    pub message: String,
    /// True when the server closes the connection after this error.
    #[serde(default)]
    pub fatal: bool,
}

/// Machine-readable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The message is not valid JSON or not a message of this protocol.
    BadMessage,
    /// The message is larger than [`Limits::max_message_bytes`].
    MessageTooLarge,
    /// The client speaks a protocol version the server does not.
    UnsupportedVersion,
    /// The message needs a joined session (send `join` first).
    NotJoined,
    /// `join` was sent twice.
    AlreadyJoined,
    /// The room name is not valid.
    BadRoom,
    /// The display name is not valid.
    BadName,
    /// The room has as many participants as it may hold.
    RoomFull,
    /// The server holds as many rooms as it may.
    TooManyRooms,
    /// The SDP offer or its mid mapping is not acceptable.
    BadOffer,
    /// A second offer was sent; this version does not renegotiate.
    AlreadyConnected,
    /// `ice_restart` was sent without a media connection to restart.
    NotConnected,
    /// The server is not accepting joins now (starting or shutting down).
    Unavailable,
    /// Something failed inside the server; the message says what.
    Internal,
    /// The client sent messages faster than the server reads them; the message was dropped.
    /// The error says which limit.
    RateLimited,
    /// The client did not read the server's messages as fast as they came; the connection
    /// is closed (fatal).
    TooSlow,
    /// The client did not send `join` in time after connecting (fatal).
    JoinTimeout,
    /// This server admits only people with a join token, and the join had none.
    TokenRequired,
    /// The join token is not a token (not three base64url parts of JSON).
    TokenMalformed,
    /// The join token's signature is wrong or made with a key this server does not trust.
    TokenInvalid,
    /// The join token has expired (or is not valid yet).
    TokenExpired,
    /// The join token is for another room.
    TokenWrongRoom,
    /// The room has a passcode and the join gave none.
    PasscodeRequired,
    /// The passcode is wrong.
    WrongPasscode,
    /// The meeting is locked: nobody new is admitted.
    Locked,
    /// A moderator did not let this client in from the lobby (fatal).
    Denied,
    /// A moderator removed this client, or its token was for someone removed (fatal).
    Removed,
    /// The meeting was ended for everyone (fatal).
    MeetingEnded,
    /// The meeting has not started yet or is over (its scheduled times).
    OutsideSchedule,
    /// The client's role does not allow this.
    Forbidden,
    /// The message names a participant who is not in this meeting.
    UnknownParticipant,
    /// The chat message is longer than `max_chat_chars`.
    ChatTooLong,
    /// The room requires end-to-end encryption and the client does not use it.
    E2eeRequired,
    /// `resume` failed: the participant is gone (timed out, left, removed) or the token is
    /// wrong. Join again.
    ResumeFailed,
    /// `resume` came while the participant's old connection is still open at the server
    /// (it has not noticed the drop yet): try again in a moment.
    ResumePending,
    /// WHIP and WHEP only (HTTP 404): no meeting of that name is on or defined.
    UnknownRoom,
}

/// Why a client message was refused before it was understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("message of {size} bytes is larger than the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("binary frames are not part of the protocol; send JSON text")]
    Binary,
    #[error("message is not a valid protocol message: {0}")]
    Malformed(String),
}

impl ParseError {
    /// The error message to send back to the client.
    pub fn to_error_msg(&self) -> ErrorMsg {
        let code = match self {
            ParseError::TooLarge { .. } => ErrorCode::MessageTooLarge,
            ParseError::Binary | ParseError::Malformed(_) => ErrorCode::BadMessage,
        };
        ErrorMsg {
            code,
            message: self.to_string(),
            fatal: false,
        }
    }
}

impl ClientMsg {
    /// Parse one text frame from a client, refusing frames above `limit` bytes.
    pub fn parse(text: &str, limit: usize) -> Result<ClientMsg, ParseError> {
        if text.len() > limit {
            return Err(ParseError::TooLarge {
                size: text.len(),
                limit,
            });
        }
        serde_json::from_str(text).map_err(|e| ParseError::Malformed(e.to_string()))
    }

    /// The message as JSON text.
    pub fn to_json(&self) -> String {
        // Serializing these plain data types cannot fail: no maps with non-string keys,
        // no custom serializers.
        serde_json::to_string(self).expect("ClientMsg serializes")
    }
}

impl ServerMsg {
    /// The message as JSON text.
    pub fn to_json(&self) -> String {
        // As for ClientMsg: plain data, serializing cannot fail.
        serde_json::to_string(self).expect("ServerMsg serializes")
    }

    /// Parse a server message (for clients).
    pub fn parse(text: &str) -> Result<ServerMsg, ParseError> {
        serde_json::from_str(text).map_err(|e| ParseError::Malformed(e.to_string()))
    }

    /// A non-fatal error message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> ServerMsg {
        ServerMsg::Error(ErrorMsg {
            code,
            message: message.into(),
            fatal: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_round_trips_with_the_documented_shape() {
        let text = r#"{"type":"join","protocol":1,"room":"demo","name":"Aino"}"#;
        let msg = ClientMsg::parse(text, 1024).unwrap();
        assert_eq!(
            msg,
            ClientMsg::Join(Join {
                protocol: 1,
                room: "demo".into(),
                name: "Aino".into(),
                token: None,
                passcode: None,
                e2ee: None,
            })
        );
        let back: serde_json::Value = serde_json::from_str(&msg.to_json()).unwrap();
        let orig: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(back, orig);
    }

    #[test]
    fn offer_defaults_missing_mappings_to_empty() {
        let msg = ClientMsg::parse(r#"{"type":"offer","sdp":"v=0"}"#, 1024).unwrap();
        let ClientMsg::Offer(offer) = msg else {
            panic!("not an offer")
        };
        assert_eq!(offer.publish, Publish::default());
        assert!(offer.receive.audio.is_empty());
    }

    #[test]
    fn ice_restart_carries_an_sdp() {
        let text = r#"{"type":"ice_restart","sdp":"v=0"}"#;
        let msg = ClientMsg::parse(text, 1024).unwrap();
        assert_eq!(msg, ClientMsg::IceRestart { sdp: "v=0".into() });
        assert_eq!(msg.to_json(), text);
        assert!(ClientMsg::parse(r#"{"type":"ice_restart"}"#, 1024).is_err());
    }

    #[test]
    fn camera_slots_are_read_under_either_name() {
        for name in ["camera", "video"] {
            let text = format!(r#"{{"type":"offer","sdp":"v=0","receive":{{"{name}":["6"]}}}}"#);
            let ClientMsg::Offer(offer) = ClientMsg::parse(&text, 1024).unwrap() else {
                panic!("not an offer")
            };
            assert_eq!(offer.receive.video, vec!["6".to_owned()], "{name}");
        }
        let sent = ClientMsg::Offer(Offer {
            sdp: "v=0".into(),
            publish: Publish::default(),
            receive: ReceiveSlots {
                video: vec!["6".into()],
                ..Default::default()
            },
        })
        .to_json();
        assert!(sent.contains(r#""camera":["6"]"#), "{sent}");
    }

    #[test]
    fn unknown_fields_are_ignored_for_forward_compatibility() {
        let msg = ClientMsg::parse(r#"{"type":"ping","extra":[1,2]}"#, 1024).unwrap();
        assert_eq!(msg, ClientMsg::Ping);
    }

    #[test]
    fn errors_name_the_problem() {
        let e = ClientMsg::parse(r#"{"type":"dance"}"#, 1024).unwrap_err();
        assert!(e.to_string().contains("dance"), "{e}");
        let e = ClientMsg::parse(r#"{"type":"join","room":"x"}"#, 1024).unwrap_err();
        assert!(e.to_string().contains("protocol"), "{e}");
        let e = ClientMsg::parse("not json", 1024).unwrap_err();
        assert_eq!(e.to_error_msg().code, ErrorCode::BadMessage);
        let e = ClientMsg::parse(&"x".repeat(2000), 1024).unwrap_err();
        assert_eq!(
            e,
            ParseError::TooLarge {
                size: 2000,
                limit: 1024
            }
        );
        assert_eq!(e.to_error_msg().code, ErrorCode::MessageTooLarge);
    }

    #[test]
    fn layout_has_the_documented_shape() {
        let text = r#"{"type":"layout","view":"grid","page":2,"tiles":[{"participant":"0a","height":180},{"participant":null,"height":720}]}"#;
        let msg = ClientMsg::parse(text, 1024).unwrap();
        let ClientMsg::Layout(layout) = &msg else {
            panic!("not a layout: {msg:?}")
        };
        assert_eq!(layout.view, View::Grid);
        assert_eq!(layout.page, 2);
        assert_eq!(
            layout.tiles[0].participant,
            Some(ParticipantRef("0a".into()))
        );
        assert_eq!(layout.tiles[1].participant, None);
        assert_eq!(layout.tiles[1].height, 720);
        // Everything but the type may be left out.
        let ClientMsg::Layout(empty) = ClientMsg::parse(r#"{"type":"layout"}"#, 1024).unwrap()
        else {
            panic!("not a layout")
        };
        assert_eq!(empty, Layout::default());
        assert!(ClientMsg::parse(r#"{"type":"layout","view":"wall"}"#, 1024).is_err());
        assert!(
            ClientMsg::parse(r#"{"type":"layout","tiles":[{"participant":"x"}]}"#, 1024).is_err()
        );
    }

    #[test]
    fn new_server_messages_have_the_documented_shape() {
        let msg = ServerMsg::SendLayers {
            source: Source::Camera,
            active: vec![true, false, false],
        };
        assert_eq!(
            msg.to_json(),
            r#"{"type":"send_layers","source":"camera","active":[true,false,false]}"#
        );
        let msg = ServerMsg::ActiveSpeaker { participant: None };
        assert_eq!(
            msg.to_json(),
            r#"{"type":"active_speaker","participant":null}"#
        );
        let slot = SlotAssignment {
            mid: "4".into(),
            participant: ParticipantRef("p".into()),
            source: Source::Camera,
            paused: false,
        };
        let json = serde_json::to_string(&slot).unwrap();
        assert!(!json.contains("paused"), "{json}");
        let paused = SlotAssignment {
            paused: true,
            ..slot
        };
        assert!(
            serde_json::to_string(&paused)
                .unwrap()
                .contains(r#""paused":true"#)
        );
    }

    #[test]
    fn server_messages_are_tagged_snake_case() {
        let msg = ServerMsg::ParticipantLeft {
            participant: ParticipantRef("p1".into()),
            reason: LeaveReason::TimedOut,
        };
        assert_eq!(
            msg.to_json(),
            r#"{"type":"participant_left","participant":"p1","reason":"timed_out"}"#
        );
        assert_eq!(ServerMsg::parse(&msg.to_json()).unwrap(), msg);
    }
}
