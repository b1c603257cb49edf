//! A client's signalling frame as the server reads it: `ClientMsg::parse` under the size
//! limit, then what the server checks of a parsed message without I/O: the room and
//! display names of a `join`, the layout of a `layout`, and the participant ids that
//! moderation and chat messages name.
//!
//! Properties: nothing panics; a parsed message serializes and reads back as itself; a
//! name that is accepted keeps the documented form; a layout the router takes has at most
//! as many tiles as were sent, none taller than 8K.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ting_control::{DisplayName, RoomName};
use ting_proto::{ClientMsg, ServerMsg};
use ting_server::conductor::layout_spec;

/// The server's default `limits.max_message_bytes`.
const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    // The WebSocket layer hands over text frames as UTF-8 and binary frames are refused
    // before parsing, so only UTF-8 reaches the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Names arrive inside JSON, but any string can be one.
    check_room(text);
    check_display_name(text);
    let msg = match ClientMsg::parse(text, LIMIT) {
        Ok(msg) => msg,
        Err(e) => {
            // The refusal goes back to the client as an error message.
            let reply = ServerMsg::Error(e.to_error_msg()).to_json();
            assert!(ServerMsg::parse(&reply).is_ok(), "{reply}");
            return;
        }
    };
    let json = msg.to_json();
    let again = ClientMsg::parse(&json, usize::MAX).expect("a serialized message parses");
    assert_eq!(again, msg, "{json}");
    match &msg {
        ClientMsg::Join(join) => {
            check_room(&join.room);
            check_display_name(&join.name);
            if let Some(a) = &join.e2ee {
                check_e2ee_data(a);
            }
        }
        ClientMsg::E2eeKeys { keys } => {
            for k in keys {
                check_participant(&k.to.0);
                check_e2ee_data(&k.data);
            }
        }
        ClientMsg::Layout(layout) => match layout_spec(layout) {
            Ok(spec) => {
                assert!(layout.tiles.len() <= ting_media::LayoutSpec::MAX_TILES);
                assert!(spec.tiles.len() <= layout.tiles.len());
                assert!(spec.tiles.iter().all(|t| t.height <= 4320));
            }
            Err(_) => assert!(layout.tiles.len() > ting_media::LayoutSpec::MAX_TILES),
        },
        ClientMsg::Chat(chat) => {
            if let Some(to) = &chat.to {
                check_participant(&to.0);
            }
        }
        ClientMsg::Admit { participant } | ClientMsg::Deny { participant } => {
            if let Some(p) = participant {
                check_participant(&p.0);
            }
        }
        ClientMsg::Mute { participant, .. }
        | ClientMsg::Remove { participant }
        | ClientMsg::SetRole { participant, .. }
        | ClientMsg::AllowScreen { participant, .. }
        | ClientMsg::LowerHand { participant } => check_participant(&participant.0),
        ClientMsg::Resume(r) => {
            // A resume token is an opaque string the server looks up; nothing to check
            // beyond the round trip above.
            let _ = r.token.len();
        }
        ClientMsg::Offer(_)
        | ClientMsg::IceRestart { .. }
        | ClientMsg::Media(_)
        | ClientMsg::Ping
        | ClientMsg::Leave
        | ClientMsg::Hand { .. }
        | ClientMsg::Lock { .. }
        | ClientMsg::EndMeeting
        | ClientMsg::Invite(_) => {}
    }
});

/// What the server relays unread (announcements, sealed keys) is accepted only as short
/// ASCII: nothing longer or wider ever reaches another participant.
fn check_e2ee_data(s: &str) {
    if ting_proto::is_e2ee_data(s) {
        assert!(!s.is_empty() && s.len() <= ting_proto::E2EE_DATA_MAX && s.is_ascii());
    }
}

/// A participant id a client names is either the 16-hex-digit form, read back as itself,
/// or nobody.
fn check_participant(s: &str) {
    if let Some(id) = ting_control::ParticipantId::parse(s) {
        assert_eq!(id.to_string(), s.to_ascii_lowercase());
    }
}

fn check_room(s: &str) {
    if let Ok(room) = RoomName::parse(s) {
        assert_eq!(room.as_str(), s);
        assert!((1..=RoomName::MAX_LEN).contains(&s.len()));
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(room.to_string(), s);
    }
}

fn check_display_name(s: &str) {
    if let Ok(name) = DisplayName::parse(s) {
        let shown = name.expose();
        assert_eq!(shown, s.trim());
        assert!((1..=DisplayName::MAX_CHARS).contains(&shown.chars().count()));
        assert!(!shown.chars().any(char::is_control));
        // Accepting is idempotent: the accepted name is accepted as it is.
        assert!(DisplayName::parse(shown).is_ok_and(|again| again == name));
    }
}
