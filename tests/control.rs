//! The control plane against a real server: the API (rooms, tokens, participants, lock,
//! remove, end, the chat archive) with every refusal's status and body, and joins over the
//! WebSocket with tokens, the lobby, passcodes, moderation and chat.

mod common;

use std::time::Duration;

use common::{TestServer, start_server};
use serde_json::{Value, json};
use ting_bench::Signal;
use ting_proto::{ClientMsg, ErrorCode, Join, PROTOCOL_VERSION, ServerMsg};

const KEY: &str = "an-api-key-for-tests-0123456789abcdef";
const SECRET: &str = "a-token-secret-for-tests-0123456789ab";
const WAIT: Duration = Duration::from_secs(5);

fn store_path(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("ting-control-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("ting.db").to_str().unwrap().to_owned()
}

async fn closed_server(store: &str, archive: bool) -> TestServer {
    start_server(&[
        ("rooms.open", "false"),
        ("api.key", KEY),
        ("tokens.secret", SECRET),
        ("store.path", store),
        ("chat.archive", if archive { "true" } else { "false" }),
    ])
    .await
}

async fn api(s: &TestServer, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    let (status, text) = s.api(method, path, Some(KEY), body.as_deref()).await;
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"))
    };
    (status, v)
}

/// Asserts a 4xx answer with its error code (and the field, for `invalid`).
fn refused(r: (u16, Value), status: u16, error: &str, field: Option<&str>) {
    assert_eq!(r.0, status, "{}", r.1);
    assert_eq!(r.1["error"], error, "{}", r.1);
    assert!(
        r.1["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        r.1
    );
    if let Some(f) = field {
        assert_eq!(r.1["field"], f, "{}", r.1);
    }
}

async fn token(s: &TestServer, room: &str, body: Value) -> String {
    let (status, v) = api(s, "POST", &format!("/v1/rooms/{room}/tokens"), Some(body)).await;
    assert_eq!(status, 201, "{v}");
    assert!(
        v["link"]
            .as_str()
            .unwrap()
            .contains(&format!("/m/{room}?t="))
    );
    v["token"].as_str().unwrap().to_owned()
}

async fn connect(s: &TestServer) -> Signal {
    Signal::connect(&s.ws_url).await.expect("websocket")
}

async fn send_join(
    sig: &mut Signal,
    room: &str,
    name: &str,
    token: Option<&str>,
    pass: Option<&str>,
) {
    sig.send(&ClientMsg::Join(Join {
        protocol: PROTOCOL_VERSION,
        room: room.into(),
        name: name.into(),
        token: token.map(str::to_owned),
        passcode: pass.map(str::to_owned),
        e2ee: None,
    }))
    .await
    .unwrap();
}

/// The next message that is not chatter about others (speakers, slots, pongs).
async fn next(sig: &mut Signal) -> ServerMsg {
    sig.recv_until(WAIT, |m| match m {
        ServerMsg::Speaking { .. }
        | ServerMsg::ActiveSpeaker { .. }
        | ServerMsg::Slots { .. }
        | ServerMsg::Pong => None,
        other => Some(other.clone()),
    })
    .await
    .expect("a message in time")
}

async fn expect_error(sig: &mut Signal, code: ErrorCode) -> ting_proto::ErrorMsg {
    let m = sig
        .recv_until(WAIT, |m| match m {
            ServerMsg::Error(e) => Some(e.clone()),
            _ => None,
        })
        .await
        .unwrap_or_else(|e| panic!("no {code:?} error: {e}"));
    assert_eq!(m.code, code, "{m:?}");
    assert!(m.message.ends_with('.'), "a sentence: {:?}", m.message);
    m
}

/// Joins and expects a welcome; returns the signal and the participant id.
async fn member(s: &TestServer, room: &str, token: &str) -> (Signal, String) {
    let mut sig = connect(s).await;
    send_join(&mut sig, room, "typed", Some(token), None).await;
    match next(&mut sig).await {
        ServerMsg::Welcome(w) => (sig, w.participant.0),
        other => panic!("expected a welcome, got {other:?}"),
    }
}

#[tokio::test]
async fn the_api_manages_rooms_and_tokens_and_refuses_clearly() {
    let store = store_path("api");
    let s = closed_server(&store, false).await;

    // The key: missing, wrong.
    let (status, body) = s.api("GET", "/v1/rooms", None, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("unauthorized"));
    let (status, _) = s.api("GET", "/v1/rooms", Some("wrong"), None).await;
    assert_eq!(status, 401);
    // The document needs no key.
    let (status, doc) = s.api("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/rooms/{room}/tokens"]["post"].is_object());

    // Rooms.
    let (status, room) = api(
        &s,
        "POST",
        "/v1/rooms",
        Some(json!({"name": "board", "lobby": false, "capacity": 20})),
    )
    .await;
    assert_eq!(status, 201, "{room}");
    assert_eq!(room["name"], "board");
    assert_eq!(room["capacity"], 20);
    assert_eq!(room["passcode"], false);
    refused(
        api(&s, "POST", "/v1/rooms", Some(json!({"name": "board"}))).await,
        409,
        "exists",
        None,
    );
    refused(
        api(&s, "POST", "/v1/rooms", Some(json!({"name": "no/slash"}))).await,
        400,
        "invalid",
        Some("name"),
    );
    refused(
        api(
            &s,
            "POST",
            "/v1/rooms",
            Some(json!({"name": "x", "lobbby": true})),
        )
        .await,
        400,
        "invalid",
        Some("lobbby"),
    );
    refused(
        api(
            &s,
            "POST",
            "/v1/rooms",
            Some(json!({"name": "x", "passcode": "12"})),
        )
        .await,
        400,
        "invalid",
        Some("passcode"),
    );
    refused(
        api(
            &s,
            "POST",
            "/v1/rooms",
            Some(json!({"name": "x", "capacity": 0})),
        )
        .await,
        400,
        "invalid",
        Some("capacity"),
    );
    refused(
        api(
            &s,
            "POST",
            "/v1/rooms",
            Some(json!({"name": "x", "capacity": "many"})),
        )
        .await,
        400,
        "invalid",
        Some("capacity"),
    );
    refused(
        api(
            &s,
            "POST",
            "/v1/rooms",
            Some(json!({"name": "x", "starts_at": 20, "ends_at": 10})),
        )
        .await,
        400,
        "invalid",
        Some("ends_at"),
    );
    let (status, body) = s
        .api("POST", "/v1/rooms", Some(KEY), Some("{not json"))
        .await;
    assert_eq!(status, 400, "{body}");
    refused(
        api(&s, "GET", "/v1/rooms/nope", None).await,
        404,
        "not_found",
        None,
    );
    refused(
        api(&s, "GET", "/v1/nothing/here", None).await,
        404,
        "not_found",
        None,
    );
    let (status, patched) = api(
        &s,
        "PATCH",
        "/v1/rooms/board",
        Some(json!({"passcode": "4711", "capacity": null})),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["passcode"], true);
    assert_eq!(patched["capacity"], Value::Null);
    assert!(
        !patched.to_string().contains("4711"),
        "the passcode is never shown"
    );
    let (_, patched) = api(
        &s,
        "PATCH",
        "/v1/rooms/board",
        Some(json!({"passcode": null})),
    )
    .await;
    assert_eq!(patched["passcode"], false);
    let (status, list) = api(&s, "GET", "/v1/rooms", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["rooms"].as_array().unwrap().len(), 1);

    // Tokens.
    refused(
        api(&s, "POST", "/v1/rooms/nope/tokens", Some(json!({}))).await,
        404,
        "not_found",
        None,
    );
    refused(
        api(
            &s,
            "POST",
            "/v1/rooms/board/tokens",
            Some(json!({"role": "king"})),
        )
        .await,
        400,
        "invalid",
        Some("role"),
    );
    refused(
        api(
            &s,
            "POST",
            "/v1/rooms/board/tokens",
            Some(json!({"expires_in_secs": 0})),
        )
        .await,
        400,
        "invalid",
        Some("expires_in_secs"),
    );
    refused(
        api(
            &s,
            "POST",
            "/v1/rooms/board/tokens",
            Some(json!({"name": "a\u{7}"})),
        )
        .await,
        400,
        "invalid",
        Some("name"),
    );
    let host = token(
        &s,
        "board",
        json!({"role": "host", "name": "Hanna", "subject": "h-1"}),
    )
    .await;
    let part = token(
        &s,
        "board",
        json!({"role": "participant", "subject": "p-1"}),
    )
    .await;

    // Joining: no token, broken, wrong room, expired, forged, then good ones.
    let mut sig = connect(&s).await;
    send_join(&mut sig, "board", "x", None, None).await;
    expect_error(&mut sig, ErrorCode::TokenRequired).await;
    send_join(&mut sig, "board", "x", Some("garbage"), None).await;
    expect_error(&mut sig, ErrorCode::TokenMalformed).await;
    send_join(&mut sig, "elsewhere", "x", Some(&host), None).await;
    expect_error(&mut sig, ErrorCode::TokenWrongRoom).await;
    let keys = ting_control::TokenKeys::none()
        .with_secret(SECRET.as_bytes())
        .unwrap();
    let claims = |exp: u64| ting_control::Claims {
        room: "board".into(),
        exp,
        role: ting_control::Role::Host,
        name: None,
        sub: None,
        nbf: None,
        iat: None,
        lobby: false,
        jti: None,
    };
    send_join(
        &mut sig,
        "board",
        "x",
        Some(&keys.sign(&claims(1_000_000)).unwrap()),
        None,
    )
    .await;
    expect_error(&mut sig, ErrorCode::TokenExpired).await;
    let forged = ting_control::TokenKeys::none()
        .with_secret(b"not the server's secret, but long enough")
        .unwrap()
        .sign(&claims(u64::from(u32::MAX)))
        .unwrap();
    send_join(&mut sig, "board", "x", Some(&forged), None).await;
    expect_error(&mut sig, ErrorCode::TokenInvalid).await;
    // The same socket may still join.
    send_join(&mut sig, "board", "ignored", Some(&host), None).await;
    let ServerMsg::Welcome(w) = next(&mut sig).await else {
        panic!("welcome")
    };
    assert_eq!(w.role, ting_proto::Role::Host);
    assert!(w.permissions.moderate && w.permissions.admit);
    let mut host_sig = sig;
    let (mut p_sig, p_id) = member(&s, "board", &part).await;
    let ServerMsg::ParticipantJoined { participant } = next(&mut host_sig).await else {
        panic!()
    };
    assert_eq!(participant.role, ting_proto::Role::Participant);

    let (status, list) = api(&s, "GET", "/v1/rooms/board/participants", None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["Hanna", "typed"]);

    // Lock: a newcomer is refused; moderators are not.
    assert_eq!(api(&s, "POST", "/v1/rooms/board/lock", None).await.0, 204);
    let ServerMsg::RoomUpdated { room } = next(&mut host_sig).await else {
        panic!()
    };
    assert!(room.locked);
    let late = token(&s, "board", json!({"subject": "late"})).await;
    let mut late_sig = connect(&s).await;
    send_join(&mut late_sig, "board", "Late", Some(&late), None).await;
    let e = expect_error(&mut late_sig, ErrorCode::Locked).await;
    assert!(e.message.contains("locked"), "{e:?}");
    assert_eq!(api(&s, "POST", "/v1/rooms/board/unlock", None).await.0, 204);
    refused(
        api(&s, "POST", "/v1/rooms/nope/lock", None).await,
        404,
        "not_found",
        None,
    );

    // Remove: gone at once, told why, and the token no longer admits.
    refused(
        api(&s, "DELETE", "/v1/rooms/board/participants/zz", None).await,
        400,
        "invalid",
        Some("id"),
    );
    refused(
        api(
            &s,
            "DELETE",
            "/v1/rooms/board/participants/0000000000000001",
            None,
        )
        .await,
        404,
        "not_found",
        None,
    );
    assert_eq!(
        api(
            &s,
            "DELETE",
            &format!("/v1/rooms/board/participants/{p_id}"),
            None
        )
        .await
        .0,
        204
    );
    let e = expect_error(&mut p_sig, ErrorCode::Removed).await;
    assert!(e.fatal);
    let left = host_sig
        .recv_until(WAIT, |m| match m {
            ServerMsg::ParticipantLeft {
                participant,
                reason,
            } if participant.0 == p_id => Some(*reason),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(left, ting_proto::LeaveReason::Removed);
    let mut again = connect(&s).await;
    send_join(&mut again, "board", "back", Some(&part), None).await;
    expect_error(&mut again, ErrorCode::Removed).await;

    // End: everyone is told; a participant cannot come straight back.
    assert_eq!(api(&s, "POST", "/v1/rooms/board/end", None).await.0, 204);
    let e = expect_error(&mut host_sig, ErrorCode::MeetingEnded).await;
    assert!(e.fatal);
    let mut after = connect(&s).await;
    send_join(&mut after, "board", "After", Some(&late), None).await;
    expect_error(&mut after, ErrorCode::MeetingEnded).await;

    // Counted.
    assert!(
        s.metric("ting_control_refused_total{reason=\"token_required\"}")
            .await
            >= 1.0
    );
    assert!(
        s.metric("ting_control_refused_total{reason=\"locked\"}")
            .await
            >= 1.0
    );
    assert!(
        s.metric("ting_api_requests_total{outcome=\"unauthorized\"}")
            .await
            >= 2.0
    );
    assert!(s.metric("ting_moderation_total{action=\"remove\"}").await >= 1.0);
    s.stop().await;

    // The room outlives the process; a deleted one does not.
    let s = closed_server(&store, false).await;
    let (status, room) = api(&s, "GET", "/v1/rooms/board", None).await;
    assert_eq!(status, 200, "{room}");
    assert_eq!(room["defined"], true);
    assert_eq!(api(&s, "DELETE", "/v1/rooms/board", None).await.0, 204);
    s.stop().await;
    let s = closed_server(&store, false).await;
    refused(
        api(&s, "GET", "/v1/rooms/board", None).await,
        404,
        "not_found",
        None,
    );
    // Its old tokens do not open a room of that name, even after a restart.
    let mut old = connect(&s).await;
    send_join(&mut old, "board", "x", Some(&host), None).await;
    let e = expect_error(&mut old, ErrorCode::TokenInvalid).await;
    assert!(e.message.contains("no longer works"), "{e:?}");
    s.stop().await;
}

#[tokio::test]
async fn lobby_passcode_moderation_and_chat_over_the_websocket() {
    let store = store_path("ws");
    let s = closed_server(&store, false).await;
    let (status, _) = api(
        &s,
        "POST",
        "/v1/rooms",
        Some(json!({"name": "case", "lobby": true, "passcode": "4711"})),
    )
    .await;
    assert_eq!(status, 201);
    let host = token(&s, "case", json!({"role": "host", "name": "Hanna"})).await;
    let guest = token(
        &s,
        "case",
        json!({"role": "guest", "name": "Gustav", "subject": "g-1"}),
    )
    .await;
    let (mut h, h_id) = member(&s, "case", &host).await;

    // The guest needs the passcode, then waits.
    let mut g = connect(&s).await;
    send_join(&mut g, "case", "x", Some(&guest), None).await;
    expect_error(&mut g, ErrorCode::PasscodeRequired).await;
    send_join(&mut g, "case", "x", Some(&guest), Some("0000")).await;
    expect_error(&mut g, ErrorCode::WrongPasscode).await;
    send_join(&mut g, "case", "x", Some(&guest), Some("4711")).await;
    let ServerMsg::Waiting {
        participant: g_ref, ..
    } = next(&mut g).await
    else {
        panic!("waiting")
    };
    let g_id = g_ref.0.clone();
    let ServerMsg::Lobby { waiting } = next(&mut h).await else {
        panic!("lobby")
    };
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].name, "Gustav");
    // Waiting people cannot act.
    g.send(&ClientMsg::Chat(ting_proto::ChatSend {
        text: "hello?".into(),
        to: None,
        e2ee: false,
    }))
    .await
    .unwrap();
    expect_error(&mut g, ErrorCode::NotJoined).await;
    // Admitted: the guest gets its welcome, the host sees it join.
    h.send(&ClientMsg::Admit {
        participant: Some(g_ref.clone()),
    })
    .await
    .unwrap();
    let ServerMsg::Welcome(w) = next(&mut g).await else {
        panic!("welcome")
    };
    assert_eq!(w.role, ting_proto::Role::Guest);
    assert!(!w.permissions.publish_screen && !w.permissions.moderate);
    assert_eq!(w.participants.len(), 1);
    h.recv_until(WAIT, |m| {
        matches!(m, ServerMsg::ParticipantJoined { participant } if participant.id.0 == g_id)
            .then_some(())
    })
    .await
    .unwrap();

    // A guest may not moderate anyone, nor share the screen.
    let href = ting_proto::ParticipantRef(h_id.clone());
    for msg in [
        ClientMsg::Lock { locked: true },
        ClientMsg::Remove {
            participant: href.clone(),
        },
        ClientMsg::Mute {
            participant: href.clone(),
            source: ting_proto::Source::Microphone,
        },
        ClientMsg::EndMeeting,
        ClientMsg::Admit { participant: None },
    ] {
        g.send(&msg).await.unwrap();
        expect_error(&mut g, ErrorCode::Forbidden).await;
    }
    g.send(&ClientMsg::Media(ting_proto::MediaState {
        audio: true,
        video: true,
        screen: true,
    }))
    .await
    .unwrap();
    expect_error(&mut g, ErrorCode::Forbidden).await;
    g.send(&ClientMsg::Remove {
        participant: ting_proto::ParticipantRef("nobody".into()),
    })
    .await
    .unwrap();
    expect_error(&mut g, ErrorCode::UnknownParticipant).await;

    // Chat: to the room, privately, too long.
    g.send(&ClientMsg::Chat(ting_proto::ChatSend {
        text: "hej alla".into(),
        to: None,
        e2ee: false,
    }))
    .await
    .unwrap();
    let chat = h
        .recv_until(WAIT, |m| match m {
            ServerMsg::Chat(c) => Some(c.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(
        (chat.name.as_str(), chat.text.as_str(), chat.from.0.as_str()),
        ("Gustav", "hej alla", g_id.as_str())
    );
    assert!(chat.to.is_none());
    h.send(&ClientMsg::Chat(ting_proto::ChatSend {
        text: "bara till dig".into(),
        to: Some(g_ref.clone()),
        e2ee: false,
    }))
    .await
    .unwrap();
    let private = g
        .recv_until(WAIT, |m| match m {
            ServerMsg::Chat(c) if c.to.is_some() => Some(c.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(private.text, "bara till dig");
    g.send(&ClientMsg::Chat(ting_proto::ChatSend {
        text: "x".repeat(2001),
        to: None,
        e2ee: false,
    }))
    .await
    .unwrap();
    expect_error(&mut g, ErrorCode::ChatTooLong).await;

    // Moderation: mute, hands, roles, screen.
    h.send(&ClientMsg::Mute {
        participant: g_ref.clone(),
        source: ting_proto::Source::Microphone,
    })
    .await
    .unwrap();
    let moderated = g
        .recv_until(WAIT, |m| match m {
            ServerMsg::Moderated { source, by } => Some((*source, by.0.clone())),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(moderated, (ting_proto::Source::Microphone, h_id.clone()));
    g.send(&ClientMsg::Hand { raised: true }).await.unwrap();
    let queue = h
        .recv_until(WAIT, |m| match m {
            ServerMsg::Hands { queue } => Some(queue.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(queue, vec![g_ref.clone()]);
    h.send(&ClientMsg::AllowScreen {
        participant: g_ref.clone(),
        allowed: true,
    })
    .await
    .unwrap();
    let perms = g
        .recv_until(WAIT, |m| match m {
            ServerMsg::Permissions { permissions, .. } => Some(*permissions),
            _ => None,
        })
        .await
        .unwrap();
    assert!(perms.publish_screen);
    h.send(&ClientMsg::SetRole {
        participant: g_ref.clone(),
        role: ting_proto::Role::Host,
    })
    .await
    .unwrap();
    expect_error(&mut h, ErrorCode::Forbidden).await;
    h.send(&ClientMsg::SetRole {
        participant: g_ref.clone(),
        role: ting_proto::Role::Moderator,
    })
    .await
    .unwrap();
    let role = g
        .recv_until(WAIT, |m| match m {
            ServerMsg::RoleChanged { participant, role } if participant.0 == g_id => Some(*role),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(role, ting_proto::Role::Moderator);

    // An invite link made in the meeting admits through the lobby.
    h.send(&ClientMsg::Invite(ting_proto::InviteRequest {
        role: ting_proto::Role::Guest,
        lobby: true,
        expires_in_secs: Some(600),
    }))
    .await
    .unwrap();
    let invite = h
        .recv_until(WAIT, |m| match m {
            ServerMsg::Invite(i) => Some(i.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert!(invite.link.starts_with("/m/case?t="));
    let mut expert = connect(&s).await;
    send_join(
        &mut expert,
        "case",
        "Expert",
        Some(&invite.token),
        Some("4711"),
    )
    .await;
    assert!(matches!(next(&mut expert).await, ServerMsg::Waiting { .. }));
    h.send(&ClientMsg::Deny { participant: None })
        .await
        .unwrap();
    let e = expect_error(&mut expert, ErrorCode::Denied).await;
    assert!(e.fatal);

    // Chat is not in the database while the archive is off.
    s.stop().await;
    for suffix in ["", "-wal"] {
        if let Ok(bytes) = std::fs::read(format!("{store}{suffix}")) {
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains("hej alla") && !text.contains("bara till dig"),
                "chat stored in {store}{suffix}"
            );
        }
    }
}

#[tokio::test]
async fn the_archive_keeps_chat_per_meeting_for_export() {
    let store = store_path("archive");
    let s = closed_server(&store, true).await;
    assert_eq!(
        api(&s, "POST", "/v1/rooms", Some(json!({"name": "minutes"})))
            .await
            .0,
        201
    );
    let a = token(&s, "minutes", json!({"role": "host", "name": "Aino"})).await;
    let (mut sig, _) = member(&s, "minutes", &a).await;
    sig.send(&ClientMsg::Chat(ting_proto::ChatSend {
        text: "beslut: ja".into(),
        to: None,
        e2ee: false,
    }))
    .await
    .unwrap();
    sig.recv_until(WAIT, |m| matches!(m, ServerMsg::Chat(_)).then_some(()))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let meetings = loop {
        let (status, v) = api(&s, "GET", "/v1/rooms/minutes/meetings", None).await;
        if status == 200 && v["meetings"].as_array().is_some_and(|m| !m.is_empty()) {
            break v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no archived meeting: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let id = meetings["meetings"][0]["meeting"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, export) = api(
        &s,
        "GET",
        &format!("/v1/rooms/minutes/meetings/{id}/chat"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{export}");
    assert_eq!(export["messages"][0]["text"], "beslut: ja");
    assert_eq!(export["messages"][0]["name"], "Aino");
    refused(
        api(
            &s,
            "GET",
            "/v1/rooms/minutes/meetings/0000000000000000/chat",
            None,
        )
        .await,
        404,
        "not_found",
        None,
    );
    s.stop().await;
    // Off: the API says so.
    let s = closed_server(&store_path("archive-off"), false).await;
    refused(
        api(&s, "GET", "/v1/rooms/minutes/meetings", None).await,
        409,
        "archive_off",
        None,
    );
    s.stop().await;
}

#[tokio::test]
async fn without_a_key_the_api_is_off_and_open_rooms_still_work() {
    let s = start_server(&[]).await;
    let (status, body) = s.api("GET", "/v1/rooms", Some(KEY), None).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("api_disabled"));
    // The first person into an open room hosts it; the next participates.
    let mut a = connect(&s).await;
    send_join(&mut a, "demo", "Aino", None, None).await;
    let ServerMsg::Welcome(w) = next(&mut a).await else {
        panic!()
    };
    assert_eq!(w.role, ting_proto::Role::Host);
    let mut b = connect(&s).await;
    send_join(&mut b, "demo", "Björn", None, None).await;
    let ServerMsg::Welcome(w) = next(&mut b).await else {
        panic!()
    };
    assert_eq!(w.role, ting_proto::Role::Participant);
    s.stop().await;
}
