//! Rooms, their participants, and the events others are told.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::names::{DisplayName, NameError, RoomName};

/// A participant, as long as they are in a room. Random, so it says nothing about who they
/// are or how many came before; safe to log.
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

/// Which of a participant's sources are on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaState {
    pub audio: bool,
    pub video: bool,
    pub screen: bool,
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
}

/// Limits and timeouts of the control plane.
#[derive(Debug, Clone, Copy)]
pub struct RoomsConfig {
    /// Rooms open at once on this server.
    pub max_rooms: usize,
    /// Participants in one room.
    pub max_participants_per_room: usize,
    /// A participant not heard from for this long is removed.
    pub participant_timeout: Duration,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        RoomsConfig {
            max_rooms: 1000,
            max_participants_per_room: 250,
            participant_timeout: Duration::from_secs(20),
        }
    }
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
}

/// A participant in a room.
#[derive(Debug, Clone)]
pub struct Participant {
    pub id: ParticipantId,
    pub room: RoomName,
    pub name: DisplayName,
    pub media: MediaState,
    pub joined_at: Instant,
    last_seen: Instant,
}

/// The result of a successful join.
#[derive(Debug, Clone)]
pub struct Joined {
    pub participant: ParticipantId,
    pub room: RoomName,
    /// Whoever was in the room before, in join order.
    pub others: Vec<Participant>,
}

/// What happened, for the room to be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlEvent {
    /// A room got its first participant.
    RoomOpened { room: RoomName },
    /// Someone joined `room`.
    Joined {
        room: RoomName,
        participant: ParticipantId,
    },
    /// Someone's sources changed.
    MediaChanged {
        room: RoomName,
        participant: ParticipantId,
        media: MediaState,
    },
    /// Someone left `room`; they are no longer among its members.
    Left {
        room: RoomName,
        participant: ParticipantId,
        reason: LeaveReason,
    },
    /// The last participant left; the room is gone.
    RoomClosed { room: RoomName },
}

#[derive(Debug)]
struct Room {
    /// Members in join order.
    members: Vec<ParticipantId>,
}

/// All rooms of this server. See the crate docs for the handle/poll contract.
#[derive(Debug)]
pub struct Rooms {
    config: RoomsConfig,
    rooms: HashMap<RoomName, Room>,
    participants: HashMap<ParticipantId, Participant>,
    events: VecDeque<ControlEvent>,
    rng: StdRng,
    /// When the next participant may time out; recomputed at each timeout.
    next_check: Option<Instant>,
}

impl Rooms {
    /// `seed` seeds participant ids; give it real randomness in a server, a constant in tests.
    pub fn new(config: RoomsConfig, seed: u64) -> Self {
        Rooms {
            config,
            rooms: HashMap::new(),
            participants: HashMap::new(),
            events: VecDeque::new(),
            rng: StdRng::seed_from_u64(seed),
            next_check: None,
        }
    }

    pub fn config(&self) -> &RoomsConfig {
        &self.config
    }

    /// Someone asks to enter `room` showing `name`.
    pub fn handle_join(
        &mut self,
        room: &str,
        name: &str,
        now: Instant,
    ) -> Result<Joined, JoinError> {
        let room = RoomName::parse(room).map_err(JoinError::BadRoomName)?;
        let name = DisplayName::parse(name).map_err(JoinError::BadDisplayName)?;
        match self.rooms.get(&room) {
            Some(r) if r.members.len() >= self.config.max_participants_per_room => {
                return Err(JoinError::RoomFull {
                    limit: self.config.max_participants_per_room,
                });
            }
            None if self.rooms.len() >= self.config.max_rooms => {
                return Err(JoinError::TooManyRooms {
                    limit: self.config.max_rooms,
                });
            }
            _ => {}
        }
        let id = loop {
            let id = ParticipantId(self.rng.random());
            if !self.participants.contains_key(&id) {
                break id;
            }
        };
        let r = self.rooms.entry(room.clone()).or_insert_with(|| {
            self.events
                .push_back(ControlEvent::RoomOpened { room: room.clone() });
            Room {
                members: Vec::new(),
            }
        });
        let others = r
            .members
            .iter()
            .filter_map(|m| self.participants.get(m).cloned())
            .collect();
        r.members.push(id);
        self.participants.insert(
            id,
            Participant {
                id,
                room: room.clone(),
                name,
                media: MediaState::default(),
                joined_at: now,
                last_seen: now,
            },
        );
        let deadline = now + self.config.participant_timeout;
        self.next_check = Some(self.next_check.map_or(deadline, |d| d.min(deadline)));
        self.events.push_back(ControlEvent::Joined {
            room: room.clone(),
            participant: id,
        });
        Ok(Joined {
            participant: id,
            room,
            others,
        })
    }

    /// The participant leaves (or is removed). Unknown ids are ignored: leaving twice is fine.
    pub fn handle_leave(&mut self, id: ParticipantId, reason: LeaveReason) {
        let Some(p) = self.participants.remove(&id) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&p.room) else {
            return;
        };
        room.members.retain(|m| *m != id);
        self.events.push_back(ControlEvent::Left {
            room: p.room.clone(),
            participant: id,
            reason,
        });
        if room.members.is_empty() {
            self.rooms.remove(&p.room);
            self.events
                .push_back(ControlEvent::RoomClosed { room: p.room });
        }
    }

    /// Something was heard from the participant: they are still there.
    pub fn handle_seen(&mut self, id: ParticipantId, now: Instant) {
        if let Some(p) = self.participants.get_mut(&id) {
            p.last_seen = p.last_seen.max(now);
        }
    }

    /// The participant switched sources on or off.
    pub fn handle_media(&mut self, id: ParticipantId, media: MediaState) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        if p.media == media {
            return;
        }
        p.media = media;
        self.events.push_back(ControlEvent::MediaChanged {
            room: p.room.clone(),
            participant: id,
            media,
        });
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

    /// The members of `room` in join order.
    pub fn members(&self, room: &RoomName) -> impl Iterator<Item = &Participant> {
        self.rooms
            .get(room)
            .into_iter()
            .flat_map(|r| r.members.iter())
            .filter_map(|id| self.participants.get(id))
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms(max_rooms: usize, per_room: usize) -> Rooms {
        Rooms::new(
            RoomsConfig {
                max_rooms,
                max_participants_per_room: per_room,
                participant_timeout: Duration::from_secs(10),
            },
            7,
        )
    }

    fn drain(r: &mut Rooms) -> Vec<ControlEvent> {
        std::iter::from_fn(|| r.poll_event()).collect()
    }

    #[test]
    fn join_tells_the_room_and_lists_earlier_members() {
        let t0 = Instant::now();
        let mut r = rooms(10, 10);
        let a = r.handle_join("demo", "Aino", t0).unwrap();
        assert!(a.others.is_empty());
        let b = r.handle_join("demo", "Björn", t0).unwrap();
        assert_eq!(b.others.len(), 1);
        assert_eq!(b.others[0].id, a.participant);
        assert_eq!(b.others[0].name.expose(), "Aino");
        let room = RoomName::parse("demo").unwrap();
        assert_eq!(
            drain(&mut r),
            vec![
                ControlEvent::RoomOpened { room: room.clone() },
                ControlEvent::Joined {
                    room: room.clone(),
                    participant: a.participant
                },
                ControlEvent::Joined {
                    room: room.clone(),
                    participant: b.participant
                },
            ]
        );
        let members: Vec<_> = r.members(&room).map(|p| p.id).collect();
        assert_eq!(members, vec![a.participant, b.participant]);
    }

    #[test]
    fn limits_refuse_with_the_limit_named() {
        let t0 = Instant::now();
        let mut r = rooms(1, 2);
        r.handle_join("a", "1", t0).unwrap();
        r.handle_join("a", "2", t0).unwrap();
        assert_eq!(
            r.handle_join("a", "3", t0).unwrap_err(),
            JoinError::RoomFull { limit: 2 }
        );
        assert_eq!(
            r.handle_join("b", "1", t0).unwrap_err(),
            JoinError::TooManyRooms { limit: 1 }
        );
        assert!(matches!(
            r.handle_join("no/slash", "x", t0),
            Err(JoinError::BadRoomName(_))
        ));
        assert!(matches!(
            r.handle_join("ok", "", t0),
            Err(JoinError::BadDisplayName(_))
        ));
    }

    #[test]
    fn silent_participants_time_out_and_the_last_closes_the_room() {
        let t0 = Instant::now();
        let mut r = rooms(10, 10);
        let a = r.handle_join("demo", "A", t0).unwrap().participant;
        let b = r.handle_join("demo", "B", t0).unwrap().participant;
        drain(&mut r);
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        r.handle_seen(b, t0 + Duration::from_secs(6));
        r.handle_timeout(t0 + Duration::from_secs(10));
        let room = RoomName::parse("demo").unwrap();
        assert_eq!(
            drain(&mut r),
            vec![ControlEvent::Left {
                room: room.clone(),
                participant: a,
                reason: LeaveReason::TimedOut
            }]
        );
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(16)));
        r.handle_timeout(t0 + Duration::from_secs(16));
        assert_eq!(
            drain(&mut r),
            vec![
                ControlEvent::Left {
                    room: room.clone(),
                    participant: b,
                    reason: LeaveReason::TimedOut
                },
                ControlEvent::RoomClosed { room }
            ]
        );
        assert_eq!(r.poll_timeout(), None);
        assert_eq!(r.room_count(), 0);
    }

    #[test]
    fn media_changes_are_announced_once() {
        let t0 = Instant::now();
        let mut r = rooms(10, 10);
        let a = r.handle_join("demo", "A", t0).unwrap().participant;
        drain(&mut r);
        let on = MediaState {
            audio: true,
            video: true,
            screen: false,
        };
        r.handle_media(a, on);
        r.handle_media(a, on);
        assert_eq!(drain(&mut r).len(), 1);
        r.handle_leave(a, LeaveReason::Left);
        r.handle_leave(a, LeaveReason::Left);
        assert_eq!(drain(&mut r).len(), 2, "left + room closed, once");
    }

    #[test]
    fn ids_are_unique_and_deterministic_per_seed() {
        let t0 = Instant::now();
        let mut r1 = rooms(10, 300);
        let mut r2 = rooms(10, 300);
        let ids1: Vec<_> = (0..250)
            .map(|_| r1.handle_join("x", "n", t0).unwrap().participant)
            .collect();
        let ids2: Vec<_> = (0..250)
            .map(|_| r2.handle_join("x", "n", t0).unwrap().participant)
            .collect();
        assert_eq!(ids1, ids2);
        let mut sorted = ids1.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 250);
    }
}
