//! An SDP offer as ting checks it: `PeerFactory::accept`, which validates the client's mid
//! mapping, parses the SDP with str0m, builds the connection and checks every named m-line
//! (kind, direction, codec).
//!
//! Input: one line of JSON with the mapping as the `offer` message carries it
//! (`{"publish":{"camera":"1"},"receive":{"video":["4"]}}`; anything else means no
//! mapping), then the SDP text. Offers with more m-lines than the session reads are
//! refused before parsing (`session.rs`), so they are skipped here too.
//!
//! Properties: nothing panics (str0m panics are contained in the server, but still found
//! here: libFuzzer aborts on any panic); an accepted offer publishes what the mapping named,
//! has one slot per receive mid, and its answer is SDP that parses.

#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use str0m::change::SdpAnswer;
use ting_proto::{Offer, Publish, ReceiveSlots};
use ting_server::setup::PeerFactory;
use ting_server::worker::RoomKey;
use ting_server::worker::peer::SlotLimits;

/// The limits of the shipped configuration (`config/ting.toml`).
const LIMITS: SlotLimits = SlotLimits {
    audio: 3,
    video: 25,
    screen: 1,
};

/// The m-lines the session lets through to the parser: the slots and four for publishing.
const MAX_LINES: usize = 4 + 3 + 25 + 1;

#[derive(Default, Deserialize)]
struct Mapping {
    #[serde(default)]
    publish: Publish,
    #[serde(default)]
    receive: ReceiveSlots,
}

fn factory() -> &'static PeerFactory {
    static FACTORY: OnceLock<PeerFactory> = OnceLock::new();
    FACTORY.get_or_init(|| PeerFactory {
        cert: str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .expect("a certificate"),
        limits: LIMITS,
        estimate_bandwidth: true,
        opus_dtx: true,
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (head, sdp) = text.split_once('\n').unwrap_or(("", text));
    if sdp.lines().filter(|l| l.starts_with("m=")).count() > MAX_LINES {
        return;
    }
    let mapping: Mapping = serde_json::from_str(head).unwrap_or_default();
    let offer = Offer {
        sdp: sdp.to_owned(),
        publish: mapping.publish,
        receive: mapping.receive,
    };
    let candidate: SocketAddr = "127.0.0.1:40000".parse().expect("an address");
    let outbox = ting_server::outbox::outbox(16).0;
    let Ok(accepted) = factory().accept(7, RoomKey(1), &offer, candidate, outbox, Instant::now())
    else {
        return;
    };
    let peer = &accepted.peer;
    let named = [
        &offer.publish.microphone,
        &offer.publish.camera,
        &offer.publish.screen,
    ];
    assert_eq!(
        peer.published.len(),
        named.iter().filter(|m| m.is_some()).count()
    );
    for p in &peer.published {
        assert!(
            named
                .iter()
                .any(|m| m.as_deref() == Some(&*p.mid.to_string()))
        );
    }
    let receive = &offer.receive;
    assert_eq!(
        peer.slots.len(),
        receive.audio.len() + receive.video.len() + receive.screen.len()
    );
    assert!(
        SdpAnswer::from_sdp_string(&accepted.answer).is_ok(),
        "{}",
        accepted.answer
    );
});
