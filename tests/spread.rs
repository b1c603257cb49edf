//! Rooms and media workers over loopback: a small room stays on one worker (its packets
//! never cross between threads) and the next room takes the other; a room larger than
//! `media.spread_rooms_above` spreads over the workers, and everyone in it receives
//! everyone else's media, byte for byte and without a gap, whichever worker holds the
//! publisher.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use ting_bench::{DriverHandle, JoinedPeer, PeerControl};

fn workers_of(peers: &[JoinedPeer]) -> BTreeSet<SocketAddr> {
    peers
        .iter()
        .map(|p| {
            p.server_media
                .unwrap_or_else(|| panic!("participant {}: no candidate in the answer", p.id))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_room_stays_on_one_worker_and_the_next_room_takes_the_other() {
    let server = start_server(&[]).await;
    assert_eq!(
        server.media.len(),
        2,
        "the test servers run two media workers"
    );
    let driver = DriverHandle::spawn("placement").unwrap();
    let first = join_many(&server, &driver, "placement-first", 1..=3).await;
    let second = join_many(&server, &driver, "placement-second", 4..=6).await;
    let (a, b) = (workers_of(&first), workers_of(&second));
    assert_eq!(a.len(), 1, "a room of three spread over {a:?}");
    assert_eq!(b.len(), 1, "a room of three spread over {b:?}");
    assert_ne!(a, b, "both rooms on one worker while the other had none");
    for w in a.iter().chain(&b) {
        assert!(
            server.media.contains(w),
            "{w} is not one of {:?}",
            server.media
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_spread_over_workers_carries_everyones_media() {
    // Every room spreads (the threshold is 0), so four people alternate between the two
    // workers and every subscriber receives some of its media from the other worker's
    // queue. Bandwidth estimation is off as in `meeting.rs`: this is about integrity.
    let server = start_server(&[
        ("media.spread_rooms_above", "0"),
        ("media.bandwidth_estimation", "false"),
    ])
    .await;
    let driver = DriverHandle::spawn("spread").unwrap();
    let peers = join_many(&server, &driver, "spread-room", 1..=4).await;
    let used = workers_of(&peers);
    assert_eq!(
        used.len(),
        2,
        "four joins of a spreading room used {used:?} of {:?}",
        server.media
    );

    let pairs: Vec<(u32, u32)> = (1..=4u32)
        .flat_map(|r| (1..=4u32).filter(move |s| *s != r).map(move |s| (r, s)))
        .collect();
    wait_for(
        "every participant to receive all three others",
        Duration::from_secs(30),
        || {
            let snap = driver.snapshot();
            pairs.iter().all(|&(r, s)| hears(&snap, r, s, 150, 100))
        },
    )
    .await;

    let snap = driver.snapshot();
    for id in 1..=4u32 {
        let s = stats_of(&snap, id).unwrap();
        let mut senders = BTreeSet::new();
        for slot in s.slots.iter().filter(|slot| slot.packets > 0) {
            let at = format!("participant {id}, slot {} ({})", slot.mid, slot.kind);
            assert_eq!(slot.corrupt, 0, "{at}: corrupted payloads");
            assert_eq!(slot.unstamped, 0, "{at}: foreign payloads");
            assert_eq!(slot.duplicates, 0, "{at}: duplicates");
            assert_eq!(slot.lost(), 0, "{at}: lost end to end");
            assert_eq!(slot.missing(), 0, "{at}: sequence numbers not continuous");
            assert_eq!(
                slot.mismatched, 0,
                "{at}: media of someone else than its slot says"
            );
            assert_eq!(slot.senders.len(), 1, "{at}: senders {:?}", slot.senders);
            assert_ne!(slot.senders[0], id, "{at}: its own media");
            senders.insert((slot.kind, slot.senders[0]));
        }
        for other in (1..=4u32).filter(|o| *o != id) {
            for kind in ["audio", "video"] {
                assert!(
                    senders.contains(&(kind, other)),
                    "participant {id} got no {kind} of {other}: {senders:?}"
                );
            }
        }
        assert!(s.errors.is_empty(), "participant {id}: {:?}", s.errors);
    }

    // One leaves; the other three, still on both workers, go on receiving each other.
    peers[3].control(PeerControl::Leave);
    let before = driver.snapshot();
    let count = |snap: &[ting_bench::PeerStats], id| {
        stats_of(snap, id).map_or(0, |s| s.received_audio.packets + s.received_video.packets)
    };
    let start: Vec<u64> = (1..=3).map(|id| count(&before, id)).collect();
    wait_for(
        "media among the remaining three to go on",
        Duration::from_secs(10),
        || {
            let snap = driver.snapshot();
            (1..=3u32).all(|id| count(&snap, id) > start[id as usize - 1] + 200)
        },
    )
    .await;
    server.stop().await;
}
