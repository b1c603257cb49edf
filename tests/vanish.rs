//! A participant that vanishes (no goodbye, no pings, no media, socket left open) is
//! removed after the participant timeout, and the others are told it timed out.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ting_bench::{DriverHandle, PeerControl};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_participant_times_out_and_the_others_see_it_leave() {
    let server = start_server(&[
        ("limits.participant_timeout_secs", "2"),
        ("limits.ping_interval_secs", "1"),
    ])
    .await;
    let driver = DriverHandle::spawn("vanish-clients").unwrap();
    let peers = join_many(&server, &driver, "vanish", 1..=3).await;
    wait_for("everyone to see everyone", Duration::from_secs(20), || {
        let snap = driver.snapshot();
        hears(&snap, 1, 3, 20, 10) && hears(&snap, 2, 3, 20, 10)
    })
    .await;

    // Participants who keep pinging are not removed however long this takes.
    let gone = peers[2].participant.clone();
    let vanished_at = Instant::now();
    peers[2].control(PeerControl::Vanish);
    wait_for(
        "the others to see participant 3 time out",
        Duration::from_secs(10),
        || {
            let snap = driver.snapshot();
            [1u32, 2].iter().all(|id| {
                stats_of(&snap, *id).is_some_and(|s| {
                    s.left_seen
                        .iter()
                        .any(|(p, r)| *p == gone && r == "timed_out")
                })
            })
        },
    )
    .await;
    // It was last heard at its last ping, up to one ping interval (1 s) before it went
    // silent; the 2 s timeout runs from there.
    let after = vanished_at.elapsed();
    assert!(
        after >= Duration::from_millis(950),
        "removed too early: {after:?}"
    );

    tokio::time::sleep(Duration::from_secs(3)).await;
    let snap = driver.snapshot();
    for id in [1u32, 2] {
        let s = stats_of(&snap, id).unwrap();
        assert_eq!(
            s.left_seen.len(),
            1,
            "only the silent one left: {:?}",
            s.left_seen
        );
    }
    let (_, body) = server.get("/readyz").await;
    assert!(body.contains("\"participants\":2"), "{body}");
    drop(driver);
    server.stop().await;
}
