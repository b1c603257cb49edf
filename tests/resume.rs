//! Staying in the meeting when the signalling connection drops: the participant is kept
//! (its media goes on), the others see it as reconnecting rather than gone, and a new
//! WebSocket with the `resume` token makes it the same participant again. Someone who does
//! not come back within the participant timeout leaves, and the token stops working.

mod common;

use std::time::Duration;

use common::*;
use ting_bench::{DriverHandle, PeerControl, Signal};
use ting_proto::{ClientMsg, ConnectionState, ErrorCode, LeaveReason, ServerMsg};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_websocket_resumes_as_the_same_participant_while_media_flows() {
    let server = start_server(&[("media.bandwidth_estimation", "false")]).await;
    let mut watcher = Signal::connect(&server.ws_url).await.unwrap();
    watcher.join("e2e-resume", "Watcher").await.unwrap();
    let driver = DriverHandle::spawn("e2e-clients").unwrap();
    let peers = join_many(&server, &driver, "e2e-resume", 1..=2).await;
    let id1 = peers[0].participant.clone();
    wait_for("2 to hear and see 1", Duration::from_secs(30), || {
        hears(&driver.snapshot(), 2, 1, 100, 60)
    })
    .await;
    let from_1 = || {
        stats_of(&driver.snapshot(), 2)
            .map(|s| s.received_audio.packets + s.received_video.packets)
            .unwrap_or(0)
    };
    let before = from_1();

    // 1's WebSocket drops; it comes back a second later.
    let (tx, rx) = tokio::sync::oneshot::channel();
    peers[0].control(PeerControl::CutSignal {
        gap: Duration::from_secs(1),
        done: tx,
    });
    let mut states = Vec::new();
    let mut left = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !states.contains(&ConnectionState::Connected) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reconnecting/connected: {states:?}"
        );
        match watcher.recv_timeout(Duration::from_secs(1)).await {
            Ok(ServerMsg::ParticipantConnection { participant, state }) if participant.0 == id1 => {
                states.push(state)
            }
            Ok(ServerMsg::ParticipantLeft { participant, .. }) if participant.0 == id1 => {
                left = true
            }
            _ => {}
        }
        let _ = watcher.send(&ClientMsg::Ping).await;
    }
    assert_eq!(
        states,
        vec![ConnectionState::Reconnecting, ConnectionState::Connected]
    );
    assert!(!left, "the others saw it leave");
    let took = rx.await.unwrap().expect("resumed");
    eprintln!("resumed {took:?} after the WebSocket dropped (1 s of it without a connection)");
    // Media never stopped: 2 kept receiving 1 through the gap, and still does.
    let during = from_1();
    assert!(
        during > before + 50,
        "media from 1 stalled while its signalling was away: {before} -> {during}"
    );
    wait_for("media after the resume", Duration::from_secs(10), || {
        from_1() > during + 50
    })
    .await;
    // It is the same participant: the others' view of it did not change.
    let snap = driver.snapshot();
    assert_eq!(
        stats_of(&snap, 1).unwrap().participant.as_deref(),
        Some(&id1[..])
    );
    assert!(hears(&snap, 1, 2, 100, 60), "1 still receives 2");
    server.stop().await;
}

#[tokio::test]
async fn resume_refuses_strangers_takes_over_open_sessions_and_refuses_the_timed_out() {
    let server = start_server(&[
        ("limits.ping_interval_secs", "1"),
        ("limits.participant_timeout_secs", "3"),
    ])
    .await;
    let mut b = Signal::connect(&server.ws_url).await.unwrap();
    b.join("e2e-expire", "B").await.unwrap();

    // A token nobody holds.
    let mut stranger = Signal::connect(&server.ws_url).await.unwrap();
    stranger
        .send(&ClientMsg::Resume(ting_proto::Resume {
            protocol: 1,
            token: "00".repeat(16),
            e2ee: None,
        }))
        .await
        .unwrap();
    let e = stranger
        .recv_until(Duration::from_secs(5), |m| match m {
            ServerMsg::Error(e) => Some(e.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(e.code, ErrorCode::ResumeFailed);
    assert!(!e.fatal);

    // A's token on a new socket while A's old one still looks open (a network that went
    // away without closing it): the first attempt is told to wait, the server lets go of
    // the old socket, and the next attempt is A again.
    let mut old = Signal::connect(&server.ws_url).await.unwrap();
    let welcome = old.join("e2e-expire", "A").await.unwrap();
    let token = welcome
        .resume
        .clone()
        .expect("a resume token in the welcome");
    assert_eq!(welcome.limits.participant_timeout_ms, 3000);
    let id_a = welcome.participant.0.clone();
    let mut a = Signal::connect(&server.ws_url).await.unwrap();
    assert!(matches!(
        a.resume(&token).await,
        Err(ting_bench::SignalError::Refused {
            code: ErrorCode::ResumePending,
            ..
        })
    ));
    tokio::time::timeout(Duration::from_secs(5), async {
        while old.recv().await.is_ok() {}
    })
    .await
    .expect("the server closes the socket that was taken over");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let resumed = loop {
        match a.resume(&token).await {
            Ok(w) => break w,
            Err(ting_bench::SignalError::Refused {
                code: ErrorCode::ResumePending,
                ..
            }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("A could not take its place back: {e}"),
        }
    };
    assert_eq!(resumed.participant.0, id_a, "the same participant");
    a.send(&ClientMsg::Ping).await.unwrap();
    a.recv_until(Duration::from_secs(5), |m| {
        matches!(m, ServerMsg::Pong).then_some(())
    })
    .await
    .expect("A answers on its new socket");

    // A drops and does not come back: after the timeout B sees it leave, and the token is
    // dead.
    drop(a);
    let reason = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let _ = b.send(&ClientMsg::Ping).await;
            if let Ok(ServerMsg::ParticipantLeft {
                participant,
                reason,
            }) = b.recv_timeout(Duration::from_millis(500)).await
                && participant.0 == id_a
            {
                return reason;
            }
        }
    })
    .await
    .expect("A leaves within 10 s");
    assert_eq!(reason, LeaveReason::TimedOut);
    let mut late = Signal::connect(&server.ws_url).await.unwrap();
    assert!(matches!(
        late.resume(&token).await,
        Err(ting_bench::SignalError::Refused {
            code: ErrorCode::ResumeFailed,
            ..
        })
    ));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_that_fails_just_before_the_socket_drops_keeps_the_participant() {
    // A reloading page closes its media connection and its WebSocket, in either order.
    // Here the media goes first (its worker's handling of it panics), then the socket.
    let server = start_server(&[("media.bandwidth_estimation", "false")]).await;
    let mut watcher = Signal::connect(&server.ws_url).await.unwrap();
    watcher.join("e2e-race", "Watcher").await.unwrap();
    let driver = DriverHandle::spawn("race-clients").unwrap();
    let mut cfg = peer_config(7);
    cfg.display_name = Some(ting_server::conductor::PANIC_IN_WORKER.into());
    let peer = ting_bench::join_peer(&server.ws_url, "e2e-race", cfg, LOOPBACK, driver.sender())
        .await
        .unwrap();
    let id = peer.participant.clone();
    // Its first control message made its worker panic: the media connection is gone.
    peer.control(PeerControl::Media(ting_proto::MediaState {
        audio: true,
        video: true,
        screen: false,
    }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    peer.control(PeerControl::CutSignal {
        gap: Duration::from_millis(300),
        done: tx,
    });
    let resumed = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("the resume finishes")
        .expect("the peer task reports")
        .expect("it resumes as the same participant");
    eprintln!("resumed {resumed:?} after its media failed and its socket dropped");
    // Past the grace for a failed media connection: it is still there.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < deadline {
        if let Ok(ServerMsg::ParticipantLeft { participant, .. }) =
            watcher.recv_timeout(Duration::from_millis(500)).await
        {
            assert_ne!(participant.0, id, "it was removed");
        }
        let _ = watcher.send(&ClientMsg::Ping).await;
    }
    server.stop().await;
}
