//! ting's control plane: who may enter which room, and who may do what in it.
//!
//! Sans-IO like `ting-media`: no sockets, no tasks, no clock reads, randomness seeded by the
//! caller. The server feeds it what people do ([`Rooms::handle_join`],
//! [`Rooms::handle_command`], [`Rooms::handle_leave`], [`Rooms::handle_seen`]), what the
//! operator does through the API (`define_room`, `api_lock`, `api_remove`, ...), and the
//! passing of time (`handle_timeout` at `poll_timeout`; [`Now`] carries the wall clock for
//! tokens, schedules and chat), and drains [`ControlEvent`]s with `poll_event` to tell the
//! room and the media workers.
//!
//! Admission is decided here (join tokens, open rooms, removal, schedule, lock, passcode,
//! capacity, lobby), and so are roles and their rights, moderation, raised hands, chat, and
//! which sources the server forwards ([`Rooms::forwards`]).
//!
//! Names are personal data. They are held here so they can be relayed to the room, and they
//! appear in no `Debug` output: [`DisplayName`]'s `Debug` prints its length only.

mod names;
mod passcode;
mod roles;
mod rooms;
mod tokens;

#[cfg(test)]
mod tests;

pub use names::{DisplayName, NameError, RoomName};
pub use passcode::{Passcode, PasscodeError};
pub use roles::{Permissions, Role};
pub use rooms::{
    Admission, ApiError, ChatEvent, Command, CommandError, CommandOk, ControlEvent, IssuedToken,
    JoinError, JoinRequest, Joined, LeaveReason, LiveRoom, MediaState, MeetingId, Now, Participant,
    ParticipantId, RoomSettings, Rooms, RoomsConfig, Source, e2ee_chat_chars, utc,
};
pub use tokens::{
    Claims, KeyError, LEEWAY_SECS, MAX_TOKEN_BYTES, MIN_SECRET_BYTES, TokenError, TokenKeys,
};
