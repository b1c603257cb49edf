//! A meeting logged at `trace`, with recognisable names: the log holds no display name, no
//! e-mail-like name, no client address and no ICE credential, and neither does `/metrics`.
//! The control plane too: room names, token subjects, tokens, passcodes, chat and the API key
//! stay out of the log (the audit events name rooms by a tag).

mod common;

use std::io::Write;
use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ting_bench::{DriverHandle, Signal, join_peer};

/// Everything logged, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The value of an SDP attribute line (`a=ice-pwd:…`).
fn sdp_attr(sdp: &str, attr: &str) -> Vec<String> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix(attr))
        .map(|v| v.trim().to_owned())
        .collect()
}

/// The one logger of this test binary, at `trace`, capturing everything.
fn capture() -> Captured {
    static LOG: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let log = Captured::default();
        let sink = log.clone();
        ting_server::logging::init("trace", move || sink.clone(), false).expect("logger");
        log
    })
    .clone()
}

fn assert_absent(text: &str, metrics: &str, needle: &str) {
    assert!(
        !text.contains(needle),
        "the log holds {needle:?}:\n{}",
        text.lines()
            .filter(|l| l.contains(needle))
            .take(3)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(!metrics.contains(needle), "/metrics holds {needle:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_at_trace_level_logs_no_names_rooms_tokens_or_chat() {
    let log = capture();
    const KEY: &str = "privacy-api-key-0123456789abcdef0123";
    const SECRET: &str = "privacy-token-secret-0123456789abcde";
    let server = start_server(&[
        ("rooms.open", "false"),
        ("api.key", KEY),
        ("tokens.secret", SECRET),
    ])
    .await;
    let room = "lindqvist-custody-hearing";
    let body = format!(r#"{{"name":"{room}","passcode":"pass-9341","lobby":true}}"#);
    let (status, _) = server
        .api("POST", "/v1/rooms", Some(KEY), Some(&body))
        .await;
    assert_eq!(status, 201);
    let mut tokens = Vec::new();
    for (role, name, subject) in [
        ("host", "Astrid Lindqvist", "emp-astrid-77"),
        ("guest", "Pekka Järvinen", "pekka.jarvinen@kommun.example"),
    ] {
        let body = format!(r#"{{"role":"{role}","name":"{name}","subject":"{subject}"}}"#);
        let (status, t) = server
            .api(
                "POST",
                &format!("/v1/rooms/{room}/tokens"),
                Some(KEY),
                Some(&body),
            )
            .await;
        assert_eq!(status, 201, "{t}");
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        tokens.push(v["token"].as_str().unwrap().to_owned());
    }
    let mut host = Signal::connect(&server.ws_url).await.unwrap();
    host.join_with(room, "x", Some(&tokens[0])).await.unwrap();
    let mut guest = Signal::connect(&server.ws_url).await.unwrap();
    // A wrong passcode, then the right one; the guest waits, is admitted, chats.
    for pass in ["wrong-pass-5512", "pass-9341"] {
        guest
            .send(&ting_proto::ClientMsg::Join(ting_proto::Join {
                protocol: ting_proto::PROTOCOL_VERSION,
                room: room.into(),
                name: "x".into(),
                token: Some(tokens[1].clone()),
                passcode: Some(pass.into()),
                e2ee: None,
            }))
            .await
            .unwrap();
    }
    let waiting = guest
        .recv_until(Duration::from_secs(5), |m| match m {
            ting_proto::ServerMsg::Waiting { participant, .. } => Some(participant.clone()),
            _ => None,
        })
        .await
        .unwrap();
    host.send(&ting_proto::ClientMsg::Admit {
        participant: Some(waiting),
    })
    .await
    .unwrap();
    guest
        .recv_until(Duration::from_secs(5), |m| {
            matches!(m, ting_proto::ServerMsg::Welcome(_)).then_some(())
        })
        .await
        .unwrap();
    guest
        .send(&ting_proto::ClientMsg::Chat(ting_proto::ChatSend {
            text: "the case number is 4471-XK".into(),
            to: None,
            e2ee: false,
        }))
        .await
        .unwrap();
    host.recv_until(Duration::from_secs(5), |m| {
        matches!(m, ting_proto::ServerMsg::Chat(_)).then_some(())
    })
    .await
    .unwrap();
    // A refused join with a junk token and a bogus room name.
    let mut junk = Signal::connect(&server.ws_url).await.unwrap();
    let _ = junk
        .join_with("Mr-Smith-secret", "Eve", Some("eyJ.junk-token-7781.x"))
        .await;
    let metrics = server.get("/metrics").await.1;
    drop((host, guest, junk));
    server.stop().await;

    let text = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    assert!(
        text.contains("ting::audit"),
        "the audit events are in the log"
    );
    for needle in [
        room,
        "lindqvist",
        "Lindqvist",
        "Järvinen",
        "emp-astrid-77",
        "kommun.example",
        "pass-9341",
        "wrong-pass-5512",
        "4471-XK",
        "Mr-Smith-secret",
        "junk-token-7781",
        KEY,
        SECRET,
    ]
    .into_iter()
    .map(str::to_owned)
    .chain(tokens.iter().flat_map(|t| t.split('.').map(str::to_owned)))
    {
        assert_absent(&text, &metrics, &needle);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meeting_at_trace_level_logs_no_names_addresses_or_credentials() {
    let log = capture();

    let server = start_server(&[]).await;
    let names = [
        "Astrid Lindqvist",
        "astrid.lindqvist@kommun.example",
        "Pekka Järvinen",
    ];
    let driver = DriverHandle::spawn("privacy-clients").unwrap();
    let mut peers = Vec::new();
    for (i, name) in names.iter().enumerate().take(2) {
        let mut cfg = peer_config(i as u32 + 1);
        cfg.display_name = Some((*name).to_owned());
        peers.push(
            join_peer(&server.ws_url, "private", cfg, LOOPBACK, driver.sender())
                .await
                .unwrap(),
        );
    }
    wait_for("the meeting to flow", Duration::from_secs(20), || {
        let snap = driver.snapshot();
        hears(&snap, 1, 2, 50, 30) && hears(&snap, 2, 1, 50, 30)
    })
    .await;
    // A third offers by hand, so its ICE credentials and the server's are known.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let client_addr = sock.local_addr().unwrap();
    let (_peer, offer) =
        ting_bench::SimPeer::new(peer_config(3), client_addr, std::time::Instant::now()).unwrap();
    let mut s = Signal::connect(&server.ws_url).await.unwrap();
    s.join("private", names[2]).await.unwrap();
    let answer = s.offer(offer.clone(), |_| {}).await.unwrap();
    let mut secrets: Vec<String> = Vec::new();
    for sdp in [&offer.sdp, &answer] {
        secrets.extend(sdp_attr(sdp, "a=ice-pwd:"));
        secrets.extend(sdp_attr(sdp, "a=ice-ufrag:"));
    }
    assert!(
        secrets.len() >= 4,
        "credentials found in the SDP: {secrets:?}"
    );
    let metrics = server.get("/metrics").await.1;
    drop(s);
    drop(peers);
    drop(driver);
    server.stop().await;

    let text = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    assert!(
        text.lines().count() > 10,
        "the meeting was logged at all ({} lines)",
        text.lines().count()
    );
    for needle in names
        .iter()
        .map(|n| n.to_string())
        .chain([
            "Lindqvist".into(),
            "kommun.example".into(),
            "Järvinen".into(),
        ])
        .chain(secrets)
        .chain([client_addr.to_string()])
    {
        assert!(
            !text.contains(&needle),
            "the log holds {needle:?}:\n{}",
            text.lines()
                .filter(|l| l.contains(&needle))
                .take(3)
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(!metrics.contains(&needle), "/metrics holds {needle:?}");
    }
}
