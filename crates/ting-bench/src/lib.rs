//! ting-bench: simulated participants that are real WebRTC endpoints.
//!
//! A simulated participant ([`peer::SimPeer`]) is a str0m connection in RTP mode that
//! speaks ting's signalling ([`signal`]) like the browser client and sends synthetic but
//! valid media: Opus-sized audio every 20 ms with the audio-level extension, VP8 video with
//! valid payload descriptors, periodic and requested keyframes, optionally simulcast.
//! Every payload carries a [`payload::Stamp`] so receivers check bytes, senders and one-way
//! latency. Many participants share one thread ([`driver`]): they encode nothing, so the
//! harness stays cheap next to the server it measures.
//!
//! The end-to-end tests in `tests/` use the same participants.

pub mod driver;
pub mod header;
pub mod http;
pub mod janus;
pub mod payload;
pub mod peer;
pub mod plot;
pub mod report;
pub mod run;
pub mod signal;
pub mod sock;
pub mod stats;
pub mod usage;
pub mod whip;

pub use driver::{DriverCmd, DriverHandle, DriverSender, DriverSnapshot, DriverTally, PeerSocket};
pub use peer::{PeerStats, SimPeer, SimPeerConfig};
pub use signal::{JoinedPeer, PeerControl, Signal, SignalError, join_peer};

/// An error with its causes, `outer: inner: innermost`, for people to read.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
