//! Bad input during a meeting: malformed signalling gets errors that name the problem and
//! leaves the connection usable; garbage datagrams on the media ports are dropped and
//! counted; the two participants in the meeting notice nothing.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;
use rand::{Rng, SeedableRng};
use ting_bench::{DriverHandle, Signal};
use ting_proto::{ClientMsg, ErrorCode, Join, Offer, Publish, ReceiveSlots, ServerMsg};
use tokio_tungstenite::tungstenite::Message;

async fn expect_error(signal: &mut Signal, code: ErrorCode, mentions: &str) {
    match signal.recv_timeout(Duration::from_secs(5)).await.unwrap() {
        ServerMsg::Error(e) => {
            assert_eq!(e.code, code, "{e:?}");
            assert!(
                e.message.contains(mentions),
                "error {:?} should mention {mentions:?}",
                e.message
            );
            assert!(!e.fatal);
        }
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

/// The next error the server sends, skipping anything else.
async fn next_error(signal: &mut Signal) -> ting_proto::ErrorMsg {
    signal
        .recv_until(Duration::from_secs(5), |m| match m {
            ServerMsg::Error(e) => Some(e.clone()),
            _ => None,
        })
        .await
        .unwrap()
}

async fn still_usable(signal: &mut Signal) {
    signal.send(&ClientMsg::Ping).await.unwrap();
    assert_eq!(
        signal.recv_timeout(Duration::from_secs(5)).await.unwrap(),
        ServerMsg::Pong
    );
}

fn received(driver: &DriverHandle, id: u32) -> u64 {
    stats_of(&driver.snapshot(), id)
        .map_or(0, |s| s.received_audio.packets + s.received_video.packets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_gets_errors_and_the_meeting_goes_on() {
    let server = start_server(&[]).await;
    let driver = DriverHandle::spawn("bad-input-clients").unwrap();
    let _peers = join_many(&server, &driver, "steady", 1..=2).await;
    wait_for("the meeting to flow", Duration::from_secs(20), || {
        let snap = driver.snapshot();
        hears(&snap, 1, 2, 50, 30) && hears(&snap, 2, 1, 50, 30)
    })
    .await;
    let before = (received(&driver, 1), received(&driver, 2));

    let mut s = Signal::connect(&server.ws_url).await.unwrap();
    s.send_text("this is not json".into()).await.unwrap();
    expect_error(
        &mut s,
        ErrorCode::BadMessage,
        "not a valid protocol message",
    )
    .await;
    s.send_text(r#"{"type":"dance"}"#.into()).await.unwrap();
    expect_error(&mut s, ErrorCode::BadMessage, "dance").await;
    s.send_raw(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    expect_error(&mut s, ErrorCode::BadMessage, "binary").await;
    let huge = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(300_000));
    s.send_text(huge).await.unwrap();
    expect_error(&mut s, ErrorCode::MessageTooLarge, "262144").await;
    still_usable(&mut s).await;

    let offer = Offer {
        sdp: "v=0".into(),
        publish: Publish::default(),
        receive: ReceiveSlots::default(),
    };
    s.send(&ClientMsg::Offer(offer.clone())).await.unwrap();
    expect_error(&mut s, ErrorCode::NotJoined, "join").await;
    let join = |protocol: u32, room: &str, name: &str| {
        ClientMsg::Join(Join {
            protocol,
            room: room.into(),
            name: name.into(),
            token: None,
            passcode: None,
            e2ee: None,
        })
    };
    s.send(&join(99, "steady", "x")).await.unwrap();
    expect_error(&mut s, ErrorCode::UnsupportedVersion, "99").await;
    s.send(&join(1, "../etc", "x")).await.unwrap();
    expect_error(&mut s, ErrorCode::BadRoom, "'.'").await;
    s.send(&join(1, "steady", "  ")).await.unwrap();
    expect_error(&mut s, ErrorCode::BadName, "empty").await;
    s.send(&join(1, "steady", "Mallory")).await.unwrap();
    let ServerMsg::Welcome(w) = s.recv_timeout(Duration::from_secs(5)).await.unwrap() else {
        panic!("a valid join after errors is welcomed");
    };
    assert_eq!(w.participants.len(), 2);
    s.send(&join(1, "steady", "Mallory")).await.unwrap();
    expect_error(&mut s, ErrorCode::AlreadyJoined, "already").await;

    // Offers the server cannot use: each error names what is wrong.
    s.send(&ClientMsg::Offer(offer.clone())).await.unwrap();
    expect_error(&mut s, ErrorCode::BadOffer, "SDP").await;
    let mut bad_mid = offer.clone();
    bad_mid.publish.camera = Some("a b".into());
    s.send(&ClientMsg::Offer(bad_mid)).await.unwrap();
    expect_error(&mut s, ErrorCode::BadOffer, "\"a b\"").await;
    let mut too_many = offer.clone();
    too_many.receive.audio = (0..40).map(|i| format!("m{i}")).collect();
    s.send(&ClientMsg::Offer(too_many)).await.unwrap();
    expect_error(&mut s, ErrorCode::BadOffer, "at most 3").await;
    // A real offer whose mapping names an m-line that is not in it.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (_peer, mut real) = ting_bench::SimPeer::new(
        peer_config(99),
        sock.local_addr().unwrap(),
        std::time::Instant::now(),
    )
    .unwrap();
    real.receive.video.push("77".into());
    s.send(&ClientMsg::Offer(real.clone())).await.unwrap();
    let msg = next_error(&mut s).await;
    assert_eq!(msg.code, ErrorCode::BadOffer);
    assert!(msg.message.contains("\"77\""), "{msg:?}");
    // The microphone mapped onto a video m-line.
    real.receive.video.pop();
    let (cam, mic) = (real.publish.camera.clone(), real.publish.microphone.clone());
    real.publish.microphone = cam;
    real.publish.camera = mic;
    s.send(&ClientMsg::Offer(real)).await.unwrap();
    let msg = next_error(&mut s).await;
    assert!(
        msg.message.contains("is video but carries the microphone"),
        "{msg:?}"
    );
    s.send_text(r#"{"type":"ping"}"#.into()).await.unwrap();
    let pong = s
        .recv_until(Duration::from_secs(5), |m| {
            (*m == ServerMsg::Pong).then_some(())
        })
        .await;
    assert!(pong.is_ok(), "connection still usable after bad offers");

    // Garbage on every media port, from an address nobody uses.
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut sent = 0u64;
    for i in 0..2000 {
        let len = rng.random_range(1..1400);
        let mut d: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        // Some look like RTP, STUN or DTLS, to get past the first byte.
        match i % 4 {
            0 => d[0] = 0x80,
            1 => d[0] = 0x00,
            2 => d[0] = 22,
            _ => {}
        }
        for addr in &server.media {
            if junk.send_to(&d, addr).is_ok() {
                sent += 1;
            }
        }
        if i % 200 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let dropped = server
            .metric("ting_dropped_total{reason=\"unknown_source\"}")
            .await;
        if dropped >= sent as f64 * 0.95 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {dropped} of {sent} garbage datagrams counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The meeting noticed nothing: media kept flowing, nothing corrupt, no errors.
    wait_for("media to keep flowing", Duration::from_secs(10), || {
        received(&driver, 1) > before.0 + 200 && received(&driver, 2) > before.1 + 200
    })
    .await;
    for id in 1..=2 {
        let snap = driver.snapshot();
        let st = stats_of(&snap, id).unwrap();
        assert!(st.errors.is_empty(), "{:?}", st.errors);
        for slot in &st.slots {
            assert_eq!(
                slot.corrupt + slot.unstamped + slot.missing(),
                0,
                "{slot:?}"
            );
        }
    }

    // A frame over the hard limit closes that connection only.
    let mut big = Signal::connect(&server.ws_url).await.unwrap();
    let _ = big.send_text("y".repeat(3 << 20)).await;
    assert!(big.recv_timeout(Duration::from_secs(5)).await.is_err());
    still_usable(&mut s).await;
    let (status, _) = server.get("/healthz").await;
    assert_eq!(status, 200);

    drop(driver);
    server.stop().await;
}
