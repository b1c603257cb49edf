//! ting's control plane: rooms and the people in them.
//!
//! Sans-IO like `ting-media`: no sockets, no tasks, no clock reads, randomness seeded by the
//! caller. The server feeds it what people do (`handle_join`, `handle_leave`, `handle_seen`,
//! `handle_media`) and the passing of time (`handle_timeout` at `poll_timeout`), and drains
//! [`ControlEvent`]s with `poll_event` to tell the room.
//!
//! This is where admission lives: room and server limits now; roles, join tokens, the lobby,
//! meeting lock and passcode belong here as they arrive, as further checks in
//! [`Rooms::handle_join`] and further events.
//!
//! Names are personal data. They are held here so they can be relayed to the room, and they
//! appear in no `Debug` output: [`DisplayName`]'s `Debug` prints its length only.

mod names;
mod rooms;

pub use names::{DisplayName, NameError, RoomName};
pub use rooms::{
    ControlEvent, JoinError, Joined, LeaveReason, MediaState, Participant, ParticipantId, Rooms,
    RoomsConfig,
};
