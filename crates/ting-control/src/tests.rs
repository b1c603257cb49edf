//! The control plane's rules, in virtual time.

use std::time::{Duration, Instant};

use crate::*;

const SECRET: &[u8] = b"a test secret of at least 32 bytes!!";
const T0_UNIX: u64 = 1_800_000_000;

struct World {
    rooms: Rooms,
    t0: Instant,
    elapsed: Duration,
}

impl World {
    fn new(config: RoomsConfig) -> World {
        let keys = TokenKeys::none().with_secret(SECRET).unwrap();
        World {
            rooms: Rooms::new(config, keys, 7),
            t0: Instant::now(),
            elapsed: Duration::ZERO,
        }
    }

    fn open() -> World {
        World::new(RoomsConfig {
            open_rooms: true,
            ..RoomsConfig::default()
        })
    }

    fn closed() -> World {
        World::new(RoomsConfig::default())
    }

    fn now(&self) -> Now {
        Now {
            at: self.t0 + self.elapsed,
            unix_ms: (T0_UNIX + self.elapsed.as_secs()) * 1000,
        }
    }

    fn advance(&mut self, d: Duration) {
        self.elapsed += d;
    }

    fn token(&self, room: &str, role: Role, sub: &str) -> String {
        self.token_with(room, role, sub, |_| {})
    }

    fn token_with(&self, room: &str, role: Role, sub: &str, f: impl FnOnce(&mut Claims)) -> String {
        let keys = TokenKeys::none().with_secret(SECRET).unwrap();
        let mut c = Claims {
            room: room.into(),
            exp: T0_UNIX + 3600,
            role,
            name: None,
            sub: Some(sub.into()),
            nbf: None,
            iat: None,
            lobby: false,
            jti: None,
        };
        f(&mut c);
        keys.sign(&c).unwrap()
    }

    fn join(
        &mut self,
        room: &str,
        name: &str,
        token: Option<&str>,
    ) -> Result<Admission, JoinError> {
        self.join_with(room, name, token, None)
    }

    fn join_with(
        &mut self,
        room: &str,
        name: &str,
        token: Option<&str>,
        passcode: Option<&str>,
    ) -> Result<Admission, JoinError> {
        let now = self.now();
        self.rooms.handle_join(
            JoinRequest {
                room,
                name,
                token,
                passcode,
                e2ee: false,
            },
            now,
        )
    }

    /// Joins with a fresh token of `role`; panics unless admitted.
    fn member(&mut self, room: &str, role: Role, sub: &str) -> ParticipantId {
        let t = self.token(room, role, sub);
        match self.join(room, sub, Some(&t)).unwrap() {
            Admission::Joined(j) => j.participant,
            a => panic!("not admitted: {a:?}"),
        }
    }

    fn cmd(&mut self, actor: ParticipantId, cmd: Command) -> Result<CommandOk, CommandError> {
        let now = self.now();
        self.rooms.handle_command(actor, cmd, now)
    }

    fn drain(&mut self) -> Vec<ControlEvent> {
        std::iter::from_fn(|| self.rooms.poll_event()).collect()
    }

    fn define(&mut self, room: &str, settings: RoomSettings) {
        self.rooms
            .define_room(RoomName::parse(room).unwrap(), settings)
            .unwrap();
    }
}

fn room(name: &str) -> RoomName {
    RoomName::parse(name).unwrap()
}

fn forbidden(r: Result<CommandOk, CommandError>) -> bool {
    matches!(r, Err(CommandError::Forbidden(_)))
}

#[test]
fn open_rooms_admit_without_a_token_and_the_first_person_hosts() {
    let mut w = World::open();
    let Admission::Joined(a) = w.join("demo", "Aino", None).unwrap() else {
        panic!()
    };
    assert_eq!(a.role, Role::Host);
    let Admission::Joined(b) = w.join("demo", "Björn", None).unwrap() else {
        panic!()
    };
    assert_eq!(b.role, Role::Participant);
    let events = w.drain();
    assert!(matches!(events[0], ControlEvent::RoomOpened { .. }));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, ControlEvent::Joined { .. }))
            .count(),
        2
    );
    let members: Vec<_> = w.rooms.members(&room("demo")).map(|p| p.id).collect();
    assert_eq!(members, vec![a.participant, b.participant]);
}

#[test]
fn closed_servers_and_defined_rooms_need_a_token() {
    let mut w = World::closed();
    assert_eq!(
        w.join("demo", "A", None).unwrap_err(),
        JoinError::TokenRequired
    );
    let mut w = World::open();
    w.define("board", RoomSettings::default());
    assert_eq!(
        w.join("board", "A", None).unwrap_err(),
        JoinError::TokenRequired
    );
    assert!(w.join("adhoc", "A", None).is_ok());
}

#[test]
fn tokens_decide_role_and_name_and_are_checked() {
    let mut w = World::closed();
    let t = w.token_with("r", Role::Moderator, "m-1", |c| {
        c.name = Some("Maja".into())
    });
    let Admission::Joined(j) = w.join("r", "typed", Some(&t)).unwrap() else {
        panic!()
    };
    assert_eq!(j.role, Role::Moderator);
    assert_eq!(
        w.rooms.participant(j.participant).unwrap().name.expose(),
        "Maja"
    );
    assert_eq!(
        w.rooms
            .participant(j.participant)
            .unwrap()
            .subject
            .as_deref(),
        Some("m-1")
    );
    // Wrong room, expired, forged, malformed: each its own error.
    assert_eq!(
        w.join("other", "x", Some(&t)).unwrap_err(),
        JoinError::Token(TokenError::WrongRoom)
    );
    let expired = w.token_with("r", Role::Participant, "p", |c| c.exp = T0_UNIX - 3600);
    assert_eq!(
        w.join("r", "x", Some(&expired)).unwrap_err(),
        JoinError::Token(TokenError::Expired)
    );
    let forged = TokenKeys::none()
        .with_secret(b"somebody else's secret, 32 bytes long")
        .unwrap()
        .sign(&Claims {
            room: "r".into(),
            exp: T0_UNIX + 60,
            role: Role::Host,
            name: None,
            sub: None,
            nbf: None,
            iat: None,
            lobby: false,
            jti: None,
        })
        .unwrap();
    assert!(matches!(
        w.join("r", "x", Some(&forged)).unwrap_err(),
        JoinError::Token(TokenError::Invalid(_))
    ));
    assert!(matches!(
        w.join("r", "x", Some("garbage")).unwrap_err(),
        JoinError::Token(TokenError::Malformed(_))
    ));
}

#[test]
fn the_lobby_holds_people_until_admitted_or_denied() {
    let mut w = World::closed();
    w.define(
        "r",
        RoomSettings {
            lobby: true,
            ..RoomSettings::default()
        },
    );
    let host = w.member("r", Role::Host, "h");
    let g1 = w.token("r", Role::Guest, "g1");
    let g2 = w.token("r", Role::Guest, "g2");
    let Admission::Waiting { participant: a, .. } = w.join("r", "A", Some(&g1)).unwrap() else {
        panic!("a guest waits")
    };
    let Admission::Waiting { participant: b, .. } = w.join("r", "B", Some(&g2)).unwrap() else {
        panic!("a guest waits")
    };
    assert_eq!(
        w.rooms.lobby(&room("r")).map(|p| p.id).collect::<Vec<_>>(),
        vec![a, b]
    );
    assert_eq!(w.rooms.members(&room("r")).count(), 1);
    // Waiting people cannot act, and nobody but admitters may admit.
    assert_eq!(
        w.cmd(
            a,
            Command::Chat {
                text: "hi".into(),
                to: None,
                e2ee: false,
            }
        ),
        Err(CommandError::NotAdmitted)
    );
    let p = w.member("r", Role::Moderator, "m");
    let part = {
        let t = w.token("r", Role::Participant, "p");
        w.join("r", "P", Some(&t)).unwrap().participant()
    };
    w.cmd(host, Command::Admit(Some(part))).unwrap();
    assert!(forbidden(w.cmd(part, Command::Admit(Some(a)))));
    w.drain();
    w.cmd(p, Command::Admit(Some(a))).unwrap();
    let ev = w.drain();
    assert!(ev.contains(&ControlEvent::Joined {
        room: room("r"),
        participant: a
    }));
    assert!(ev.contains(&ControlEvent::LobbyChanged { room: room("r") }));
    w.cmd(host, Command::Deny(None)).unwrap();
    let ev = w.drain();
    assert!(ev.contains(&ControlEvent::Left {
        room: room("r"),
        participant: b,
        reason: LeaveReason::Denied,
        admitted: false
    }));
    assert_eq!(w.rooms.lobby(&room("r")).count(), 0);
    assert_eq!(
        w.cmd(host, Command::Admit(Some(b))),
        Err(CommandError::UnknownParticipant)
    );
    // A token can ask for the lobby in a room without one; moderators never wait.
    let mut w = World::closed();
    let _h = w.member("x", Role::Host, "h");
    let via_lobby = w.token_with("x", Role::Participant, "p", |c| c.lobby = true);
    assert!(matches!(
        w.join("x", "P", Some(&via_lobby)).unwrap(),
        Admission::Waiting { .. }
    ));
    let m = w.token_with("x", Role::Moderator, "m", |c| c.lobby = true);
    assert!(matches!(
        w.join("x", "M", Some(&m)).unwrap(),
        Admission::Joined(_)
    ));
}

#[test]
fn a_locked_meeting_admits_only_moderators() {
    let mut w = World::closed();
    let host = w.member("r", Role::Host, "h");
    let p = w.member("r", Role::Participant, "p");
    assert!(forbidden(w.cmd(p, Command::Lock(true))));
    w.cmd(host, Command::Lock(true)).unwrap();
    assert!(
        w.drain()
            .contains(&ControlEvent::RoomUpdated { room: room("r") })
    );
    assert!(w.rooms.live(&room("r")).unwrap().locked);
    let t = w.token("r", Role::Participant, "late");
    assert_eq!(
        w.join("r", "Late", Some(&t)).unwrap_err(),
        JoinError::Locked
    );
    let g = w.token_with("r", Role::Guest, "g", |c| c.lobby = true);
    assert_eq!(
        w.join("r", "G", Some(&g)).unwrap_err(),
        JoinError::Locked,
        "not even into the lobby"
    );
    let m = w.token("r", Role::Moderator, "m");
    assert!(w.join("r", "M", Some(&m)).is_ok());
    w.cmd(host, Command::Lock(false)).unwrap();
    assert!(w.join("r", "Late", Some(&t)).is_ok());
    // The API locks too.
    w.rooms.api_lock(&room("r"), true).unwrap();
    assert_eq!(
        w.join("r", "Late2", Some(&w.token("r", Role::Participant, "l2")))
            .unwrap_err(),
        JoinError::Locked
    );
    assert_eq!(
        w.rooms.api_lock(&room("nowhere"), true),
        Err(ApiError::UnknownRoom)
    );
}

#[test]
fn passcodes_are_asked_checked_and_limited_per_room() {
    let mut w = World::new(RoomsConfig {
        passcode_attempts_per_minute: 3,
        ..RoomsConfig::default()
    });
    w.define(
        "r",
        RoomSettings {
            passcode: Some(Passcode::new("4711", [1; 16]).unwrap()),
            ..RoomSettings::default()
        },
    );
    // The host needs none, and opens the meeting.
    w.member("r", Role::Host, "h");
    let t = w.token("r", Role::Participant, "p");
    assert_eq!(
        w.join_with("r", "P", Some(&t), None).unwrap_err(),
        JoinError::PasscodeRequired
    );
    for _ in 0..3 {
        assert_eq!(
            w.join_with("r", "P", Some(&t), Some("0000")).unwrap_err(),
            JoinError::WrongPasscode
        );
    }
    // The room has had its three wrong guesses this minute: even the right one waits.
    assert_eq!(
        w.join_with("r", "P", Some(&t), Some("4711")).unwrap_err(),
        JoinError::PasscodeAttempts
    );
    w.advance(Duration::from_secs(60));
    assert!(w.join_with("r", "P", Some(&t), Some("4711")).is_ok());
}

#[test]
fn moderators_act_only_on_lower_ranks_in_their_own_room() {
    let mut w = World::closed();
    let host = w.member("r", Role::Host, "h");
    let m1 = w.member("r", Role::Moderator, "m1");
    let m2 = w.member("r", Role::Moderator, "m2");
    let p = w.member("r", Role::Participant, "p");
    let g = w.member("r", Role::Guest, "g");
    let elsewhere = w.member("other", Role::Participant, "o");
    let mute = |target| Command::Mute {
        target,
        source: Source::Microphone,
    };
    // Upwards and sideways: refused.
    assert!(forbidden(w.cmd(m1, mute(host))));
    assert!(forbidden(w.cmd(m1, mute(m2))));
    assert!(forbidden(w.cmd(m1, Command::Remove(host))));
    // Participants and guests may not moderate at all.
    assert!(forbidden(w.cmd(p, mute(g))));
    assert!(forbidden(w.cmd(g, Command::Remove(p))));
    assert!(forbidden(w.cmd(p, Command::EndMeeting)));
    assert!(forbidden(w.cmd(p, Command::Lock(true))));
    // Another room's participant is nobody here.
    assert_eq!(
        w.cmd(host, Command::Remove(elsewhere)),
        Err(CommandError::UnknownParticipant)
    );
    // Roles: only below one's own rank.
    assert!(forbidden(w.cmd(
        m1,
        Command::SetRole {
            target: p,
            role: Role::Moderator
        }
    )));
    w.cmd(
        host,
        Command::SetRole {
            target: p,
            role: Role::Moderator,
        },
    )
    .unwrap();
    let ev = w.drain();
    assert!(ev.contains(&ControlEvent::RoleChanged {
        room: room("r"),
        participant: p,
        role: Role::Moderator
    }));
    assert!(ev.contains(&ControlEvent::PermissionsChanged { participant: p }));
    assert!(w.rooms.permissions(p).unwrap().moderate);
    assert!(forbidden(w.cmd(m1, Command::Remove(p))), "now a peer of m1");
    w.cmd(m1, Command::Remove(g)).unwrap();
    assert!(w.rooms.participant(g).is_none());
}

#[test]
fn muting_stops_forwarding_and_unmuting_follows_the_room() {
    let mut w = World::closed();
    w.define(
        "strict",
        RoomSettings {
            allow_unmute: false,
            ..RoomSettings::default()
        },
    );
    let host = w.member("strict", Role::Host, "h");
    let p = w.member("strict", Role::Participant, "p");
    let on = MediaState {
        audio: true,
        video: true,
        screen: false,
    };
    w.cmd(p, Command::Media(on)).unwrap();
    assert!(w.rooms.forwards(p, Source::Microphone));
    w.drain();
    w.cmd(
        host,
        Command::Mute {
            target: p,
            source: Source::Microphone,
        },
    )
    .unwrap();
    let ev = w.drain();
    assert!(ev.contains(&ControlEvent::Forward {
        participant: p,
        source: Source::Microphone,
        on: false
    }));
    assert!(ev.contains(&ControlEvent::Moderated {
        participant: p,
        source: Source::Microphone,
        by: host
    }));
    assert!(!w.rooms.forwards(p, Source::Microphone));
    assert!(w.rooms.forwards(p, Source::Camera));
    assert!(!w.rooms.permissions(p).unwrap().unmute);
    // This room does not let them turn it back on.
    assert!(forbidden(w.cmd(p, Command::Media(on))));
    assert!(!w.rooms.forwards(p, Source::Microphone));
    // Where the room allows it, they may.
    let mut w = World::closed();
    let host = w.member("r", Role::Host, "h");
    let p = w.member("r", Role::Participant, "p");
    w.cmd(p, Command::Media(on)).unwrap();
    w.cmd(
        host,
        Command::Mute {
            target: p,
            source: Source::Camera,
        },
    )
    .unwrap();
    assert!(!w.rooms.forwards(p, Source::Camera));
    w.drain();
    w.cmd(p, Command::Media(on)).unwrap();
    assert!(w.rooms.forwards(p, Source::Camera));
    assert!(w.drain().contains(&ControlEvent::Forward {
        participant: p,
        source: Source::Camera,
        on: true
    }));
}

#[test]
fn the_screen_is_shared_by_right_and_can_be_stopped_given_and_taken() {
    let mut w = World::closed();
    let host = w.member("r", Role::Host, "h");
    let g = w.member("r", Role::Guest, "g");
    let p = w.member("r", Role::Participant, "p");
    let share = MediaState {
        audio: true,
        video: true,
        screen: true,
    };
    assert!(forbidden(w.cmd(g, Command::Media(share))), "guests may not");
    w.cmd(
        host,
        Command::AllowScreen {
            target: g,
            allowed: true,
        },
    )
    .unwrap();
    w.cmd(g, Command::Media(share)).unwrap();
    assert!(w.rooms.forwards(g, Source::Screen));
    // Stopping someone's share.
    w.cmd(p, Command::Media(share)).unwrap();
    assert!(w.rooms.forwards(p, Source::Screen));
    w.drain();
    w.cmd(
        host,
        Command::Mute {
            target: p,
            source: Source::Screen,
        },
    )
    .unwrap();
    assert!(!w.rooms.forwards(p, Source::Screen));
    assert!(w.drain().contains(&ControlEvent::Moderated {
        participant: p,
        source: Source::Screen,
        by: host
    }));
    // Taking the right away stops a running share too.
    w.cmd(
        host,
        Command::AllowScreen {
            target: g,
            allowed: false,
        },
    )
    .unwrap();
    assert!(!w.rooms.forwards(g, Source::Screen));
    assert!(!w.rooms.permissions(g).unwrap().publish_screen);
}

#[test]
fn removed_people_stay_out_with_that_token() {
    let mut w = World::closed();
    let host = w.member("r", Role::Host, "h");
    let t = w.token("r", Role::Participant, "p");
    let p = w.join("r", "P", Some(&t)).unwrap().participant();
    w.drain();
    w.cmd(host, Command::Remove(p)).unwrap();
    assert!(w.drain().contains(&ControlEvent::Left {
        room: room("r"),
        participant: p,
        reason: LeaveReason::Removed,
        admitted: true
    }));
    assert_eq!(w.join("r", "P", Some(&t)).unwrap_err(), JoinError::Removed);
    // A new token for the same subject is refused too; other rooms are not affected.
    let again = w.token("r", Role::Participant, "p");
    assert_eq!(
        w.join("r", "P", Some(&again)).unwrap_err(),
        JoinError::Removed
    );
    assert!(
        w.join("q", "P", Some(&w.token("q", Role::Participant, "p")))
            .is_ok()
    );
    // Removal holds only as long as the token would have.
    w.advance(Duration::from_secs(3600 + 60));
    let later = w.token_with("r", Role::Participant, "p", |c| c.exp = T0_UNIX + 7200);
    assert!(w.join("r", "P", Some(&later)).is_ok());
    // The API removes as well; a token without subject is kept out by itself.
    let anon = w.token_with("r", Role::Participant, "x", |c| {
        c.sub = None;
        c.exp = T0_UNIX + 7200;
    });
    let a = w.join("r", "A", Some(&anon)).unwrap().participant();
    w.rooms.api_remove(&room("r"), a).unwrap();
    assert_eq!(
        w.join("r", "A", Some(&anon)).unwrap_err(),
        JoinError::Removed
    );
    assert_eq!(
        w.rooms.api_remove(&room("r"), a),
        Err(ApiError::UnknownParticipant)
    );
}

#[test]
fn ending_the_meeting_sends_everyone_away_for_a_while() {
    let mut w = World::closed();
    w.define(
        "r",
        RoomSettings {
            lobby: true,
            ..RoomSettings::default()
        },
    );
    let host = w.member("r", Role::Host, "h");
    let p_token = w.token("r", Role::Participant, "p");
    let waiting = w.join("r", "P", Some(&p_token)).unwrap().participant();
    w.drain();
    w.cmd(host, Command::EndMeeting).unwrap();
    let ev = w.drain();
    assert!(ev.contains(&ControlEvent::Left {
        room: room("r"),
        participant: waiting,
        reason: LeaveReason::MeetingEnded,
        admitted: false
    }));
    assert!(ev.contains(&ControlEvent::Left {
        room: room("r"),
        participant: host,
        reason: LeaveReason::MeetingEnded,
        admitted: true
    }));
    assert!(matches!(ev.last(), Some(ControlEvent::RoomClosed { .. })));
    assert_eq!(
        w.join("r", "P", Some(&p_token)).unwrap_err(),
        JoinError::MeetingEnded
    );
    // A host opens it again.
    w.member("r", Role::Host, "h");
    assert!(w.join("r", "P", Some(&p_token)).is_ok());
}

#[test]
fn schedules_bound_joining() {
    let mut w = World::closed();
    w.define(
        "later",
        RoomSettings {
            starts_at: Some(T0_UNIX + 3600),
            ends_at: Some(T0_UNIX + 7200),
            ..RoomSettings::default()
        },
    );
    let t = w.token_with("later", Role::Participant, "p", |c| c.exp = T0_UNIX + 9000);
    let e = w.join("later", "P", Some(&t)).unwrap_err();
    assert!(
        matches!(&e, JoinError::OutsideSchedule(m) if m.contains("2027-01-15 09:00 UTC")),
        "{e}"
    );
    // The host may open early.
    let h = w.token_with("later", Role::Host, "h", |c| c.exp = T0_UNIX + 9000);
    assert!(w.join("later", "H", Some(&h)).is_ok());
    w.advance(Duration::from_secs(3600 - 15 * 60));
    assert!(
        w.join("later", "P", Some(&t)).is_ok(),
        "fifteen minutes early"
    );
    w.advance(Duration::from_secs(3600 + 15 * 60));
    let t2 = w.token_with("later", Role::Participant, "p2", |c| c.exp = T0_UNIX + 9000);
    assert!(matches!(
        w.join("later", "P2", Some(&t2)),
        Err(JoinError::OutsideSchedule(_))
    ));
}

#[test]
fn capacity_counts_the_meeting_and_the_lobby() {
    let mut w = World::closed();
    w.define(
        "small",
        RoomSettings {
            capacity: Some(2),
            lobby: true,
            ..RoomSettings::default()
        },
    );
    let host = w.member("small", Role::Host, "h");
    let a = w
        .join("small", "A", Some(&w.token("small", Role::Guest, "a")))
        .unwrap()
        .participant();
    let b = w
        .join("small", "B", Some(&w.token("small", Role::Guest, "b")))
        .unwrap()
        .participant();
    assert_eq!(
        w.join("small", "C", Some(&w.token("small", Role::Guest, "c")))
            .unwrap_err(),
        JoinError::RoomFull { limit: 2 }
    );
    // Admitting both would exceed the capacity.
    assert_eq!(
        w.cmd(host, Command::Admit(None)),
        Err(CommandError::RoomFull { limit: 2 })
    );
    w.cmd(host, Command::Admit(Some(a))).unwrap();
    assert_eq!(
        w.cmd(host, Command::Admit(Some(b))),
        Err(CommandError::RoomFull { limit: 2 })
    );
    // Invalid capacities are refused by name.
    assert!(matches!(
        w.rooms.define_room(
            room("zero"),
            RoomSettings {
                capacity: Some(0),
                ..RoomSettings::default()
            }
        ),
        Err(ApiError::Invalid {
            field: "capacity",
            ..
        })
    ));
}

#[test]
fn an_open_room_host_cannot_reopen_an_ended_meeting_nor_a_far_future_token_overflow() {
    let mut w = World::open();
    let host = w.join("demo", "H", None).unwrap().participant();
    w.cmd(host, Command::EndMeeting).unwrap();
    // The next tokenless person would be host of the empty room; the hold still applies.
    assert_eq!(
        w.join("demo", "H2", None).unwrap_err(),
        JoinError::MeetingEnded
    );
    w.advance(Duration::from_secs(10 * 60));
    assert!(w.join("demo", "H2", None).is_ok());
    // A token that never expires, removed: no overflow, and it stays out.
    let mut w = World::closed();
    let host = w.member("r", Role::Host, "h");
    let forever = w.token_with("r", Role::Participant, "f", |c| c.exp = u64::MAX);
    let f = w.join("r", "F", Some(&forever)).unwrap().participant();
    w.cmd(host, Command::Remove(f)).unwrap();
    assert_eq!(
        w.join("r", "F", Some(&forever)).unwrap_err(),
        JoinError::Removed
    );
}

#[test]
fn wrong_passcodes_count_before_anyone_is_in() {
    let mut w = World::new(RoomsConfig {
        passcode_attempts_per_minute: 2,
        ..RoomsConfig::default()
    });
    w.define(
        "r",
        RoomSettings {
            passcode: Some(Passcode::new("4711", [1; 16]).unwrap()),
            ..RoomSettings::default()
        },
    );
    let t = w.token("r", Role::Guest, "g");
    for _ in 0..2 {
        assert_eq!(
            w.join_with("r", "G", Some(&t), Some("0000")).unwrap_err(),
            JoinError::WrongPasscode
        );
    }
    assert_eq!(w.rooms.room_count(), 0, "nobody is in");
    assert_eq!(
        w.join_with("r", "G", Some(&t), Some("4711")).unwrap_err(),
        JoinError::PasscodeAttempts
    );
}

#[test]
fn hands_queue_in_order() {
    let mut w = World::closed();
    let host = w.member("r", Role::Host, "h");
    let a = w.member("r", Role::Participant, "a");
    let b = w.member("r", Role::Participant, "b");
    w.cmd(b, Command::Hand(true)).unwrap();
    w.cmd(a, Command::Hand(true)).unwrap();
    w.cmd(a, Command::Hand(true)).unwrap();
    assert_eq!(w.rooms.hands(&room("r")), &[b, a]);
    assert!(forbidden(w.cmd(a, Command::LowerHand(b))));
    w.cmd(host, Command::LowerHand(b)).unwrap();
    assert_eq!(w.rooms.hands(&room("r")), &[a]);
    w.rooms.handle_leave(a, LeaveReason::Left);
    assert!(w.rooms.hands(&room("r")).is_empty());
    let changes = w
        .drain()
        .into_iter()
        .filter(|e| matches!(e, ControlEvent::HandsChanged { .. }))
        .count();
    assert_eq!(changes, 4, "raise b, raise a, lower b, a leaves");
}

#[test]
fn chat_is_checked_and_private_messages_stay_in_the_room() {
    let mut w = World::new(RoomsConfig {
        max_chat_chars: 10,
        ..RoomsConfig::default()
    });
    let a = w.member("r", Role::Participant, "a");
    let b = w.member("r", Role::Guest, "b");
    let other = w.member("q", Role::Participant, "o");
    w.drain();
    w.cmd(
        a,
        Command::Chat {
            text: "hej".into(),
            to: None,
            e2ee: false,
        },
    )
    .unwrap();
    w.cmd(
        b,
        Command::Chat {
            text: "bara du".into(),
            to: Some(a),
            e2ee: false,
        },
    )
    .unwrap();
    let chats: Vec<ChatEvent> = w
        .drain()
        .into_iter()
        .filter_map(|e| match e {
            ControlEvent::Chat(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(chats.len(), 2);
    assert_eq!(chats[0].from, a);
    assert_eq!(chats[0].name.expose(), "a");
    assert_eq!(chats[0].at_ms, T0_UNIX * 1000);
    assert_eq!(chats[1].to, Some(a));
    assert_eq!(
        w.cmd(
            a,
            Command::Chat {
                text: "x".repeat(11),
                to: None,
                e2ee: false,
            }
        ),
        Err(CommandError::ChatTooLong { len: 11, max: 10 })
    );
    assert!(matches!(
        w.cmd(
            a,
            Command::Chat {
                text: "  ".into(),
                to: None,
                e2ee: false,
            }
        ),
        Err(CommandError::BadChat(_))
    ));
    assert!(matches!(
        w.cmd(
            a,
            Command::Chat {
                text: "a\u{1b}[2J".into(),
                to: None,
                e2ee: false,
            }
        ),
        Err(CommandError::BadChat(_))
    ));
    assert_eq!(
        w.cmd(
            a,
            Command::Chat {
                text: "psst".into(),
                to: Some(other),
                e2ee: false,
            }
        ),
        Err(CommandError::UnknownParticipant)
    );
}

#[test]
fn invite_links_are_made_by_admitters_and_admit_their_role() {
    let mut w = World::closed();
    let host = w.member("r", Role::Host, "h");
    let p = w.member("r", Role::Participant, "p");
    let invite = |lobby| Command::Invite {
        role: Role::Guest,
        lobby,
        expires_in: Some(Duration::from_secs(600)),
    };
    assert!(forbidden(w.cmd(p, invite(false))));
    assert!(forbidden(w.cmd(
        host,
        Command::Invite {
            role: Role::Host,
            lobby: false,
            expires_in: None
        }
    )));
    let CommandOk::Invite(link) = w.cmd(host, invite(true)).unwrap() else {
        panic!()
    };
    assert_eq!(link.expires_at, T0_UNIX + 600);
    let a = w.join("r", "Expert", Some(&link.token)).unwrap();
    assert!(matches!(a, Admission::Waiting { .. }), "through the lobby");
    w.cmd(host, Command::Admit(None)).unwrap();
    assert_eq!(
        w.rooms.participant(a.participant()).unwrap().role,
        Role::Guest
    );
    // Without a secret, no links.
    let mut bare = Rooms::new(
        RoomsConfig {
            open_rooms: true,
            ..RoomsConfig::default()
        },
        TokenKeys::none(),
        1,
    );
    let now = w.now();
    let h = bare
        .handle_join(
            JoinRequest {
                room: "x",
                name: "H",
                token: None,
                passcode: None,
                e2ee: false,
            },
            now,
        )
        .unwrap()
        .participant();
    assert_eq!(
        bare.handle_command(h, invite(false), now),
        Err(CommandError::CannotSign)
    );
}

#[test]
fn the_api_manages_rooms_and_tokens() {
    let mut w = World::closed();
    let r = room("board");
    assert_eq!(
        w.rooms.api_issue_token(
            &r,
            Role::Host,
            None,
            None,
            false,
            Duration::from_secs(60),
            w.now()
        ),
        Err(ApiError::UnknownRoom)
    );
    w.define("board", RoomSettings::default());
    assert_eq!(
        w.rooms.define_room(r.clone(), RoomSettings::default()),
        Err(ApiError::RoomExists)
    );
    let now = w.now();
    let issued = w
        .rooms
        .api_issue_token(
            &r,
            Role::Host,
            Some("Hanna".into()),
            Some("emp-4711".into()),
            false,
            Duration::from_secs(60),
            now,
        )
        .unwrap();
    let host = w
        .join("board", "", Some(&issued.token))
        .unwrap()
        .participant();
    assert_eq!(w.rooms.participant(host).unwrap().name.expose(), "Hanna");
    assert!(matches!(
        w.rooms.api_issue_token(
            &r,
            Role::Guest,
            Some("\u{7}".into()),
            None,
            false,
            Duration::from_secs(1),
            now
        ),
        Err(ApiError::Invalid { field: "name", .. })
    ));
    // Turning the lobby on tells a meeting in progress.
    w.drain();
    w.rooms
        .update_room(
            &r,
            RoomSettings {
                lobby: true,
                ..RoomSettings::default()
            },
        )
        .unwrap();
    assert!(
        w.drain()
            .contains(&ControlEvent::RoomUpdated { room: r.clone() })
    );
    // Deleting a room ends its meeting.
    w.rooms.delete_room(&r, now).unwrap();
    assert!(w.rooms.participant(host).is_none());
    assert!(!w.rooms.is_defined(&r));
    assert_eq!(w.rooms.delete_room(&r, now), Err(ApiError::UnknownRoom));
    // Its old tokens no longer open it, not even as an undefined room; new ones do.
    assert_eq!(
        w.join("board", "", Some(&issued.token)).unwrap_err(),
        JoinError::RoomDeleted
    );
    let no_iat = w.token("board", Role::Participant, "p");
    assert_eq!(
        w.join("board", "P", Some(&no_iat)).unwrap_err(),
        JoinError::RoomDeleted
    );
    w.advance(Duration::from_secs(5));
    let fresh = w.token_with("board", Role::Participant, "p", |c| {
        c.iat = Some(T0_UNIX + 5)
    });
    assert!(w.join("board", "P", Some(&fresh)).is_ok());
    // Locking or ending needs a meeting in progress.
    w.define("quiet", RoomSettings::default());
    assert_eq!(
        w.rooms.api_lock(&room("quiet"), true),
        Err(ApiError::NoMeeting)
    );
    assert_eq!(
        w.rooms.api_end(&room("quiet"), w.now().at),
        Err(ApiError::NoMeeting)
    );
}

#[test]
fn silent_participants_time_out_and_the_last_closes_the_room() {
    let mut w = World::new(RoomsConfig {
        participant_timeout: Duration::from_secs(10),
        open_rooms: true,
        ..RoomsConfig::default()
    });
    let a = w.join("demo", "A", None).unwrap().participant();
    let b = w.join("demo", "B", None).unwrap().participant();
    w.drain();
    assert_eq!(w.rooms.poll_timeout(), Some(w.t0 + Duration::from_secs(10)));
    w.rooms.handle_seen(b, w.t0 + Duration::from_secs(6));
    w.rooms.handle_timeout(w.t0 + Duration::from_secs(10));
    assert_eq!(
        w.drain(),
        vec![ControlEvent::Left {
            room: room("demo"),
            participant: a,
            reason: LeaveReason::TimedOut,
            admitted: true
        }]
    );
    w.rooms.handle_timeout(w.t0 + Duration::from_secs(16));
    let ev = w.drain();
    assert!(matches!(ev.last(), Some(ControlEvent::RoomClosed { .. })));
    assert_eq!(w.rooms.room_count(), 0);
    assert_eq!(w.rooms.poll_timeout(), None);
}

#[test]
fn limits_refuse_with_the_limit_named() {
    let mut w = World::new(RoomsConfig {
        max_rooms: 1,
        max_participants_per_room: 2,
        open_rooms: true,
        ..RoomsConfig::default()
    });
    w.join("a", "1", None).unwrap();
    w.join("a", "2", None).unwrap();
    assert_eq!(
        w.join("a", "3", None).unwrap_err(),
        JoinError::RoomFull { limit: 2 }
    );
    assert_eq!(
        w.join("b", "1", None).unwrap_err(),
        JoinError::TooManyRooms { limit: 1 }
    );
    assert!(matches!(
        w.join("no/slash", "x", None),
        Err(JoinError::BadRoomName(_))
    ));
    assert!(matches!(
        w.join("ok", "", None),
        Err(JoinError::BadDisplayName(_))
    ));
}

#[test]
fn ids_are_unique_and_parse_back() {
    let mut w = World::new(RoomsConfig {
        max_participants_per_room: 300,
        open_rooms: true,
        ..RoomsConfig::default()
    });
    let ids: Vec<_> = (0..250)
        .map(|_| w.join("x", "n", None).unwrap().participant())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 250);
    for id in ids {
        assert_eq!(ParticipantId::parse(&id.to_string()), Some(id));
    }
    assert_eq!(ParticipantId::parse("xyz"), None);
    assert_eq!(ParticipantId::parse("+0000000000000001"), None);
}

#[test]
fn utc_formats_dates() {
    assert_eq!(utc(0), "1970-01-01 00:00 UTC");
    assert_eq!(utc(1_800_000_000), "2027-01-15 08:00 UTC");
    assert_eq!(utc(951_825_600), "2000-02-29 12:00 UTC");
}

fn join_e2ee(
    w: &mut World,
    room: &str,
    token: Option<&str>,
    e2ee: bool,
) -> Result<Admission, JoinError> {
    let now = w.now();
    w.rooms.handle_join(
        JoinRequest {
            room,
            name: "N",
            token,
            passcode: None,
            e2ee,
        },
        now,
    )
}

#[test]
fn a_room_that_requires_e2ee_refuses_clients_that_do_not_encrypt_even_moderators() {
    let mut w = World::closed();
    w.define(
        "secret",
        RoomSettings {
            e2ee_required: true,
            ..RoomSettings::default()
        },
    );
    let host = w.token("secret", Role::Host, "h");
    assert_eq!(
        join_e2ee(&mut w, "secret", Some(&host), false).unwrap_err(),
        JoinError::E2eeRequired
    );
    assert!(JoinError::E2eeRequired.to_string().contains("#key="));
    assert!(join_e2ee(&mut w, "secret", Some(&host), true).is_ok());
    // Without a valid token nobody learns that the room needs encryption.
    assert!(matches!(
        join_e2ee(&mut w, "secret", Some("forged"), false),
        Err(JoinError::Token(_))
    ));
    // Other rooms do not need it...
    let t = w.token("plain", Role::Participant, "p");
    assert!(join_e2ee(&mut w, "plain", Some(&t), false).is_ok());
    assert!(!w.rooms.e2ee_required(&room("plain")));
    assert!(w.rooms.e2ee_required(&room("secret")));
    // ...unless the server requires it everywhere.
    let mut strict = World::new(RoomsConfig {
        open_rooms: true,
        e2ee_required: true,
        ..RoomsConfig::default()
    });
    assert_eq!(
        join_e2ee(&mut strict, "open", None, false).unwrap_err(),
        JoinError::E2eeRequired
    );
    assert!(join_e2ee(&mut strict, "open", None, true).is_ok());
}

#[test]
fn encrypted_chat_may_be_longer_but_must_be_ciphertext() {
    let mut w = World::new(RoomsConfig {
        max_chat_chars: 10,
        ..RoomsConfig::default()
    });
    let a = w.member("r", Role::Participant, "a");
    w.drain();
    let max = e2ee_chat_chars(10);
    assert_eq!(max, 124);
    let sealed = "Ab-_.9".repeat(20);
    w.cmd(
        a,
        Command::Chat {
            text: sealed.clone(),
            to: None,
            e2ee: true,
        },
    )
    .unwrap();
    let chat = w
        .drain()
        .into_iter()
        .find_map(|e| match e {
            ControlEvent::Chat(c) => Some(c),
            _ => None,
        })
        .unwrap();
    assert!(chat.e2ee);
    assert_eq!(chat.text, sealed);
    assert_eq!(
        w.cmd(
            a,
            Command::Chat {
                text: "A".repeat(max + 1),
                to: None,
                e2ee: true,
            }
        ),
        Err(CommandError::ChatTooLong { len: max + 1, max })
    );
    assert!(matches!(
        w.cmd(
            a,
            Command::Chat {
                text: "plain words".into(),
                to: None,
                e2ee: true,
            }
        ),
        Err(CommandError::BadChat(_))
    ));
}
