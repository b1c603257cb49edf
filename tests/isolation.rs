//! A panic while handling one participant removes that participant only: in its media
//! worker (its connection is closed) and in the conductor (it is removed from its room).
//! The hooks that cause the panics exist only with the `test-hooks` feature.

mod common;

use std::time::Duration;

use common::*;
use ting_bench::{DriverHandle, Signal, join_peer};
use ting_proto::{ClientMsg, LeaveReason, MediaState, ServerMsg};
use ting_server::conductor::{PANIC_IN_CONDUCTOR, PANIC_IN_WORKER};

fn received(driver: &DriverHandle, id: u32) -> u64 {
    stats_of(&driver.snapshot(), id)
        .map_or(0, |s| s.received_audio.packets + s.received_video.packets)
}

async fn sees_leave(watcher: &mut Signal, who: &str) -> LeaveReason {
    watcher
        .recv_until(Duration::from_secs(10), |m| match m {
            ServerMsg::ParticipantLeft {
                participant,
                reason,
            } if participant.0 == who => Some(*reason),
            _ => None,
        })
        .await
        .unwrap_or_else(|e| panic!("{who} was not seen to leave: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_handling_one_participant_removes_only_that_participant() {
    let server = start_server(&[]).await;
    let driver = DriverHandle::spawn("isolation-clients").unwrap();
    let _peers = join_many(&server, &driver, "steady", 1..=2).await;
    wait_for("the meeting to flow", Duration::from_secs(20), || {
        let snap = driver.snapshot();
        hears(&snap, 1, 2, 50, 30) && hears(&snap, 2, 1, 50, 30)
    })
    .await;
    let mut watcher = Signal::connect(&server.ws_url).await.unwrap();
    watcher.join("steady", "Watcher").await.unwrap();

    // Its media worker panics while handling its connection.
    let mut cfg = peer_config(3);
    cfg.display_name = Some(PANIC_IN_WORKER.into());
    let doomed = join_peer(&server.ws_url, "steady", cfg, LOOPBACK, driver.sender())
        .await
        .unwrap();
    assert_eq!(
        sees_leave(&mut watcher, &doomed.participant).await,
        LeaveReason::MediaFailed
    );

    // The conductor panics while handling its message.
    let mut s = Signal::connect(&server.ws_url).await.unwrap();
    let w = s.join("steady", PANIC_IN_CONDUCTOR).await.unwrap();
    s.send(&ClientMsg::Media(MediaState {
        audio: true,
        video: false,
        screen: false,
    }))
    .await
    .unwrap();
    assert_eq!(
        sees_leave(&mut watcher, &w.participant.0).await,
        LeaveReason::MediaFailed
    );
    assert!(
        s.recv_until(Duration::from_secs(5), |_| None::<()>)
            .await
            .is_err(),
        "its session ends"
    );

    // Everyone else noticed nothing, and the server still takes people in.
    let before = (received(&driver, 1), received(&driver, 2));
    wait_for("media to keep flowing", Duration::from_secs(10), || {
        received(&driver, 1) > before.0 + 200 && received(&driver, 2) > before.1 + 200
    })
    .await;
    let mut late = Signal::connect(&server.ws_url).await.unwrap();
    let welcome = late.join("steady", "Late").await.unwrap();
    assert_eq!(welcome.participants.len(), 3, "1, 2 and the watcher");
    drop(driver);
    server.stop().await;
}
