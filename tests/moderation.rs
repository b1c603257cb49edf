//! Moderation reaches the media: when a host turns someone's microphone off, the server stops
//! forwarding it at once (not only the others' view of it), while the same person's camera
//! goes on; when the room allows it and they turn it back on, it flows again.

mod common;

use std::time::Duration;

use common::*;
use ting_bench::{DriverHandle, Signal};
use ting_proto::{ClientMsg, MediaState, ParticipantRef, ServerMsg, Source};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_muted_microphone_stops_reaching_the_others() {
    let server = start_server(&[("media.bandwidth_estimation", "false")]).await;
    // The first into an open room hosts it: a signalling-only host.
    let mut host = Signal::connect(&server.ws_url).await.unwrap();
    let welcome = host.join("e2e-moderation", "Host").await.unwrap();
    assert_eq!(welcome.role, ting_proto::Role::Host);
    let driver = DriverHandle::spawn("e2e-clients").unwrap();
    let peers = join_many(&server, &driver, "e2e-moderation", 1..=2).await;
    let speaker = ParticipantRef(peers[0].participant.clone());

    wait_for("2 to hear and see 1", Duration::from_secs(30), || {
        hears(&driver.snapshot(), 2, 1, 100, 60)
    })
    .await;

    host.send(&ClientMsg::Mute {
        participant: speaker.clone(),
        source: Source::Microphone,
    })
    .await
    .unwrap();
    // The others are told, and the flow stops within moments: 2's only audio is 1's.
    host.recv_until(Duration::from_secs(5), |m| match m {
        ServerMsg::ParticipantUpdated { participant, media } if *participant == speaker => {
            (!media.audio).then_some(())
        }
        _ => None,
    })
    .await
    .expect("participant_updated with the microphone off");
    let audio = || {
        stats_of(&driver.snapshot(), 2)
            .map(|s| (s.received_audio.packets, s.received_video.packets))
            .unwrap_or_default()
    };
    // Packets already on their way may still land; then nothing more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (a0, v0) = audio();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (a1, v1) = audio();
    assert_eq!(a1, a0, "audio still forwarded after the mute: {a0} -> {a1}");
    assert!(v1 > v0 + 20, "the camera should go on: {v0} -> {v1}");

    // The room allows unmuting: the participant turns it back on and it flows again.
    peers[0].control(ting_bench::PeerControl::Media(MediaState {
        audio: true,
        video: true,
        screen: false,
    }));
    wait_for("audio to flow again", Duration::from_secs(10), || {
        audio().0 > a1 + 50
    })
    .await;
    server.stop().await;
}
