//! Three participants meet through a real ting over loopback UDP: each publishes audio and
//! video RTP, each receives the others' payloads byte for byte with continuous sequence
//! numbers in every slot; one leaves and the others are told while their media goes on; a
//! late joiner is told who speaks.

mod common;

use std::time::Duration;

use common::*;
use ting_bench::{DriverHandle, PeerControl};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_participants_receive_each_other_byte_for_byte() {
    // This test is about forwarding integrity: every packet, byte for byte, in order. The
    // bandwidth estimator is left out: in a debug build both ends are slow enough for
    // scheduling delays to read as congestion now and then, and a paused slot would show
    // here as loss. Layer choice under a falling estimate is tested in ting-media's
    // virtual-time tests.
    let server = start_server(&[("media.bandwidth_estimation", "false")]).await;
    let driver = DriverHandle::spawn("e2e-clients").unwrap();
    let peers = join_many(&server, &driver, "e2e-meeting", 1..=3).await;

    // Everyone hears and sees both others: 150 audio packets = 3 s, 100 video packets.
    wait_for(
        "every participant to receive both others",
        Duration::from_secs(30),
        || {
            let snap = driver.snapshot();
            [(1, 2), (1, 3), (2, 1), (2, 3), (3, 1), (3, 2)]
                .iter()
                .all(|&(r, s)| hears(&snap, r, s, 150, 100))
        },
    )
    .await;

    let snap = driver.snapshot();
    for id in 1..=3u32 {
        let s = stats_of(&snap, id).unwrap();
        let mut audio_senders = Vec::new();
        let mut video_senders = Vec::new();
        for slot in s.slots.iter().filter(|slot| slot.packets > 0) {
            assert_eq!(
                slot.corrupt, 0,
                "peer {id} slot {}: corrupted payloads",
                slot.mid
            );
            assert_eq!(
                slot.unstamped, 0,
                "peer {id} slot {}: foreign payloads",
                slot.mid
            );
            assert_eq!(
                slot.duplicates, 0,
                "peer {id} slot {}: duplicates",
                slot.mid
            );
            assert_eq!(
                slot.lost(),
                0,
                "peer {id} slot {}: lost end to end",
                slot.mid
            );
            assert_eq!(
                slot.missing(),
                0,
                "peer {id} slot {}: sequence numbers not continuous",
                slot.mid
            );
            assert_eq!(
                slot.senders.len(),
                1,
                "peer {id} slot {}: {:?}",
                slot.mid,
                slot.senders
            );
            assert_eq!(
                slot.switches, 0,
                "peer {id} slot {} switched source",
                slot.mid
            );
            let sender = slot.senders[0];
            assert_ne!(sender, id, "peer {id} received its own media");
            // The slot table the server sent names the sender of what arrives.
            let (participant, source) = slot.mapped_to.clone().expect("slot is mapped");
            let expected = peers.iter().find(|p| p.id == sender).unwrap();
            assert_eq!(participant, expected.participant);
            match slot.kind {
                "audio" => {
                    assert_eq!(source, "microphone");
                    audio_senders.push(sender);
                }
                "video" => {
                    assert_eq!(source, "camera");
                    video_senders.push(sender);
                }
                other => panic!("unexpected media in a {other} slot"),
            }
            assert_eq!(slot.mismatched, 0);
        }
        audio_senders.sort();
        video_senders.sort();
        let others: Vec<u32> = (1..=3).filter(|o| *o != id).collect();
        assert_eq!(audio_senders, others, "peer {id} audio");
        assert_eq!(video_senders, others, "peer {id} video");
        assert!(s.errors.is_empty(), "peer {id} got errors: {:?}", s.errors);
    }

    // Participant 3 leaves; 1 and 2 are told, and keep receiving each other.
    let leaver = peers[2].participant.clone();
    peers[2].control(PeerControl::Leave);
    wait_for(
        "the others to see participant 3 leave",
        Duration::from_secs(10),
        || {
            let snap = driver.snapshot();
            [1u32, 2].iter().all(|id| {
                stats_of(&snap, *id)
                    .is_some_and(|s| s.left_seen.iter().any(|(p, r)| *p == leaver && r == "left"))
            })
        },
    )
    .await;
    let before = driver.snapshot();
    let count = |snap: &[ting_bench::PeerStats], id| {
        stats_of(snap, id).map_or(0, |s| s.received_audio.packets + s.received_video.packets)
    };
    let (b1, b2) = (count(&before, 1), count(&before, 2));
    wait_for(
        "media between the remaining two to go on",
        Duration::from_secs(10),
        || {
            let snap = driver.snapshot();
            count(&snap, 1) > b1 + 100 && count(&snap, 2) > b2 + 100
        },
    )
    .await;

    // The server's own figures agree: it forwarded both kinds and timed each packet.
    let video = server
        .metric("ting_rtp_packets_forwarded_total{kind=\"video\"}")
        .await;
    let audio = server
        .metric("ting_rtp_packets_forwarded_total{kind=\"audio\"}")
        .await;
    eprintln!("server forwarded {audio} audio and {video} video packets");
    assert!(
        audio >= 6.0 * 150.0 && video >= 6.0 * 100.0,
        "audio {audio} video {video}"
    );
    // Every forwarded packet is timed once it leaves; some of those counted may still be
    // waiting for their connection's next pass, so a later scrape must catch up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let timed = server.metric("ting_forwarding_latency_seconds_count").await;
        if timed >= audio + video {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "latency recorded for every forwarded packet: {timed} of {}",
            audio + video
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every datagram read was stamped by the kernel and its wait in the socket recorded;
    // a worker that keeps up with a meeting of three reads most within milliseconds (a
    // debug build's handshakes hold a few back).
    let waits = server.metric("ting_receive_queue_wait_seconds_count").await;
    let read = server.metric("ting_datagrams_received_total").await;
    assert!(
        waits > 0.0 && waits <= read,
        "{waits} receive waits for {read} datagrams"
    );
    let quick = server
        .metric("ting_receive_queue_wait_seconds_bucket{le=\"0.1\"}")
        .await;
    assert!(
        quick >= waits * 0.5,
        "{quick} of {waits} read within 100 ms"
    );
    // A meeting of three is far from filling a core: no worker sheds thumbnail frames,
    // and the figures that would say so are there.
    assert_eq!(
        server.scrape("ting_media_workers_shedding ").await,
        Some(0.0)
    );
    assert_eq!(
        server.scrape("ting_media_load_sheds_total ").await,
        Some(0.0)
    );

    // A late joiner is told who speaks now, without waiting for the speaker to change
    // (the two left both speak all the time, so the active speaker stays put; the joiner
    // itself is silent, so it cannot change it either).
    let mut quiet = peer_config(4);
    quiet.speaking = false;
    let _late = ting_bench::join_peer(
        &server.ws_url,
        "e2e-meeting",
        quiet,
        LOOPBACK,
        driver.sender(),
    )
    .await
    .expect("the late joiner joins");
    wait_for(
        "the late joiner to be told the active speaker",
        Duration::from_secs(10),
        || stats_of(&driver.snapshot(), 4).is_some_and(|s| s.speaker_known_after_ms.is_some()),
    )
    .await;

    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"participants\":3"), "{body}");
    drop(driver);
    server.stop().await;
}
