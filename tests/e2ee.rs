//! The server's part of end-to-end encryption (`docs/e2ee.md`), against a real server: it
//! relays announcements and sealed keys unread, only between participants that encrypt in
//! the same room, one key per recipient a message and within a budget; it tells the room of
//! a reloaded page's new announcement; it relays encrypted chat marked as such; and a room
//! that requires encryption refuses clients that do not encrypt, including WHIP and WHEP.

mod common;

use std::time::Duration;

use common::{TestServer, start_server};
use serde_json::json;
use ting_bench::Signal;
use ting_proto::{ChatSend, ClientMsg, E2eeKeyFor, ErrorCode, ParticipantRef, ServerMsg, Welcome};

const WAIT: Duration = Duration::from_secs(5);
const KEY: &str = "an-api-key-for-tests-0123456789abcdef";

/// An announcement as a page makes one: base64url public key, '.', base64url MAC.
fn announcement(who: &str) -> String {
    format!("BPub{who}AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.mac_{who}-AAAAAAAAAAAAAAAAAA")
}

async fn join(s: &TestServer, room: &str, name: &str, e2ee: Option<String>) -> (Signal, Welcome) {
    let mut sig = Signal::connect(&s.ws_url).await.expect("websocket");
    sig.e2ee = e2ee;
    let w = sig.join(room, name).await.expect("welcome");
    (sig, w)
}

/// The next error `sig` gets within `WAIT`.
async fn error(sig: &mut Signal) -> ting_proto::ErrorMsg {
    sig.recv_until(WAIT, |m| match m {
        ServerMsg::Error(e) => Some(e.clone()),
        _ => None,
    })
    .await
    .expect("an error")
}

/// The sealed keys `sig` receives within `within`.
async fn keys_within(sig: &mut Signal, within: Duration) -> Vec<(ParticipantRef, String)> {
    let mut got = Vec::new();
    while let Ok(k) = sig
        .recv_until(within, |m| match m {
            ServerMsg::E2eeKey { from, data } => Some((from.clone(), data.clone())),
            _ => None,
        })
        .await
    {
        got.push(k);
    }
    got
}

fn key_for(to: &ParticipantRef, data: &str) -> E2eeKeyFor {
    E2eeKeyFor {
        to: to.clone(),
        data: data.into(),
    }
}

#[tokio::test]
async fn keys_go_only_to_participants_that_encrypt_and_within_a_budget() {
    let s = start_server(&[]).await;
    let (mut a, wa) = join(&s, "sealed", "Aino", Some(announcement("a"))).await;
    let (mut b, wb) = join(&s, "sealed", "Bo", Some(announcement("b"))).await;
    let (mut c, wc) = join(&s, "sealed", "Cai", None).await;
    let (mut d, wd) = join(&s, "elsewhere", "Dag", Some(announcement("d"))).await;
    let (pa, pb, pc, pd) = (
        wa.participant.clone(),
        wb.participant.clone(),
        wc.participant.clone(),
        wd.participant.clone(),
    );

    // Announcements travel with the participant: in the welcome list and in the join event.
    let listed = |w: &Welcome, p: &ParticipantRef| {
        w.participants
            .iter()
            .find(|i| i.id == *p)
            .map(|i| i.e2ee.clone())
    };
    assert_eq!(listed(&wb, &pa), Some(Some(announcement("a"))));
    assert_eq!(listed(&wc, &pb), Some(Some(announcement("b"))));
    let joined = a
        .recv_until(WAIT, |m| match m {
            ServerMsg::ParticipantJoined { participant } if participant.id == pc => {
                Some(participant.e2ee.clone())
            }
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(joined, None, "Cai does not encrypt");

    // A's keys: one for B, one for C (who does not encrypt), one for D (another room), one
    // for A itself, one for nobody, a second one for B: only the first for B arrives.
    a.send(&ClientMsg::E2eeKeys {
        keys: vec![
            key_for(&pb, "sealed-for-b.1"),
            key_for(&pc, "sealed-for-c"),
            key_for(&pd, "sealed-for-d"),
            key_for(&pa, "sealed-for-a"),
            key_for(
                &ParticipantRef("00000000000000ff".into()),
                "sealed-for-ghost",
            ),
            key_for(&ParticipantRef("not an id".into()), "sealed-for-garbage"),
            key_for(&pb, "sealed-for-b.2"),
        ],
    })
    .await
    .unwrap();
    assert_eq!(
        keys_within(&mut b, Duration::from_millis(800)).await,
        vec![(pa.clone(), "sealed-for-b.1".into())]
    );
    assert!(
        keys_within(&mut c, Duration::from_millis(300))
            .await
            .is_empty()
    );
    assert!(
        keys_within(&mut d, Duration::from_millis(300))
            .await
            .is_empty()
    );
    assert!(
        keys_within(&mut a, Duration::from_millis(300))
            .await
            .is_empty()
    );

    // Someone who does not encrypt cannot send keys; malformed or too many keys are refused.
    c.send(&ClientMsg::E2eeKeys {
        keys: vec![key_for(&pa, "x")],
    })
    .await
    .unwrap();
    let e = error(&mut c).await;
    assert_eq!(e.code, ErrorCode::BadMessage);
    assert!(e.message.contains("announcement"), "{}", e.message);
    a.send(&ClientMsg::E2eeKeys {
        keys: vec![key_for(&pb, "has spaces")],
    })
    .await
    .unwrap();
    assert_eq!(error(&mut a).await.code, ErrorCode::BadMessage);
    a.send(&ClientMsg::E2eeKeys {
        keys: vec![key_for(&pb, &"A".repeat(257))],
    })
    .await
    .unwrap();
    assert_eq!(error(&mut a).await.code, ErrorCode::BadMessage);
    a.send(&ClientMsg::E2eeKeys {
        keys: (0..257).map(|_| key_for(&pb, "k")).collect(),
    })
    .await
    .unwrap();
    let e = error(&mut a).await;
    assert!(e.message.contains("at most 256"), "{}", e.message);
    assert!(
        keys_within(&mut b, Duration::from_millis(300))
            .await
            .is_empty()
    );

    // The budget: 1000 keys at once (7 sent above), so the fourth message of 256 is dropped.
    for _ in 0..4 {
        a.send(&ClientMsg::E2eeKeys {
            keys: (0..256).map(|_| key_for(&pb, "k")).collect(),
        })
        .await
        .unwrap();
    }
    let e = error(&mut a).await;
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(
        keys_within(&mut b, Duration::from_millis(800)).await.len(),
        3
    );
    assert!(
        s.metric("ting_limited_total{limit=\"e2ee_keys\"}").await >= 1.0,
        "the limit is counted"
    );
    assert!(s.metric("ting_e2ee_messages_total{kind=\"keys\"}").await >= 4.0);
    s.stop().await;
}

#[tokio::test]
async fn a_reloaded_page_announces_its_new_keys_and_encrypted_chat_is_marked() {
    let s = start_server(&[]).await;
    let (a, wa) = join(&s, "reload", "Aino", Some(announcement("a"))).await;
    let (mut b, _) = join(&s, "reload", "Bo", Some(announcement("b"))).await;
    let resume = wa.resume.clone().unwrap();
    drop(a);
    // B hears that A is reconnecting before A comes back from a "reloaded page".
    b.recv_until(WAIT, |m| {
        matches!(m, ServerMsg::ParticipantConnection { .. }).then_some(())
    })
    .await
    .unwrap();
    let mut a2 = Signal::connect(&s.ws_url).await.unwrap();
    a2.e2ee = Some(announcement("a2"));
    let w = a2.resume(&resume).await.expect("resumed");
    assert_eq!(w.participant, wa.participant);
    let changed = b
        .recv_until(WAIT, |m| match m {
            ServerMsg::ParticipantE2ee { participant, e2ee } => {
                Some((participant.clone(), e2ee.clone()))
            }
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(changed, (wa.participant.clone(), announcement("a2")));

    // A malformed announcement is refused at join, with what is wrong.
    let mut bad = Signal::connect(&s.ws_url).await.unwrap();
    bad.e2ee = Some("not base64url!".into());
    match bad.join("reload", "Bad").await {
        Err(ting_bench::SignalError::Refused { code, message }) => {
            assert_eq!(code, ErrorCode::BadMessage);
            assert!(message.contains("base64url"), "{message}");
        }
        other => panic!("a malformed announcement joined: {other:?}"),
    }

    // Encrypted chat: longer than plain chat may be, relayed with its mark.
    let sealed = format!("12345.{}", "Q".repeat(3000));
    a2.send(&ClientMsg::Chat(ChatSend {
        text: sealed.clone(),
        to: None,
        e2ee: true,
    }))
    .await
    .unwrap();
    let got = b
        .recv_until(WAIT, |m| match m {
            ServerMsg::Chat(c) => Some(c.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert!(got.e2ee);
    assert_eq!(got.text, sealed);
    s.stop().await;
}

#[tokio::test]
async fn a_room_that_requires_e2ee_refuses_plain_clients_whip_and_whep() {
    let s = start_server(&[("rooms.open", "false"), ("api.key", KEY)]).await;
    let (status, body) = s
        .api(
            "POST",
            "/v1/rooms",
            Some(KEY),
            Some(&json!({"name": "council", "e2ee_required": true}).to_string()),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = s
        .api(
            "POST",
            "/v1/rooms/council/tokens",
            Some(KEY),
            Some(r#"{"role":"participant"}"#),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let token = serde_json::from_str::<serde_json::Value>(&body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut plain = Signal::connect(&s.ws_url).await.unwrap();
    match plain.join_with("council", "Plain", Some(&token)).await {
        Err(ting_bench::SignalError::Refused { code, message }) => {
            assert_eq!(code, ErrorCode::E2eeRequired);
            assert!(message.contains("#key="), "{message}");
        }
        other => panic!("a plain client joined an e2ee room: {other:?}"),
    }
    let mut sealed = Signal::connect(&s.ws_url).await.unwrap();
    sealed.e2ee = Some(announcement("s"));
    let w = sealed
        .join_with("council", "Sealed", Some(&token))
        .await
        .expect("an encrypting client joins");
    assert!(w.room_state.e2ee_required);
    let (status, body) = s
        .api("GET", "/v1/rooms/council/participants", Some(KEY), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["participants"][0]["e2ee"],
        true,
        "{body}"
    );

    // WHIP and WHEP: the token is good and the room is on, but they cannot encrypt.
    for path in ["/whip/council", "/whep/council"] {
        let r = reqwest::Client::new()
            .post(format!("http://{}{path}", s.http))
            .bearer_auth(&token)
            .header("content-type", "application/sdp")
            .body(whip_offer())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "{path}");
        let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(v["error"], "e2ee_required", "{path}: {v}");
        assert!(v["message"].as_str().unwrap().contains("end-to-end"), "{v}");
    }
    s.stop().await;

    // The server's own rule: every room, open ones too.
    let s = start_server(&[("rooms.e2ee_required", "true")]).await;
    let mut plain = Signal::connect(&s.ws_url).await.unwrap();
    assert!(matches!(
        plain.join("anything", "Plain").await,
        Err(ting_bench::SignalError::Refused {
            code: ErrorCode::E2eeRequired,
            ..
        })
    ));
    let (_sig, w) = join(&s, "anything", "Sealed", Some(announcement("x"))).await;
    assert!(w.room_state.e2ee_required);
    s.stop().await;
}

/// A minimal offer with an ICE ufrag (the WHIP endpoints read it before joining).
fn whip_offer() -> String {
    [
        "v=0",
        "o=- 1 1 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 0.0.0.0",
        "a=mid:0",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:abcdefghijklmnopqrstuvwx",
        "a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF",
        "a=setup:actpass",
        "a=sendonly",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "",
    ]
    .join("\r\n")
}
