//! ting's forwarding core: RTP packets in, forwarding decisions out.
//!
//! This crate is sans-IO. It owns no sockets, starts no threads, reads no clock: every
//! function that needs the time takes `now`, so tests drive it in virtual time and a whole
//! meeting runs in milliseconds, deterministically.
//!
//! # Where it sits
//!
//! ```text
//! UDP socket ─▶ publisher's str0m Rtc (SRTP decrypt) ─▶ Router::handle_rtp ─▶ [Forward…]
//!                                                                              │
//!   batched send ◀─ subscriber's str0m Rtc (SRTP encrypt, write_rtp) ◀────────┘
//! ```
//!
//! The server (`ting-server`) runs one [`Router`] per room on each media worker that has
//! participants of that room. A packet from a publisher is handed to the router of its own
//! worker and, through a queue, to the routers of the other workers hosting the room; each
//! router decides for the subscribers on its worker.
//!
//! # The contract: handle in, poll out
//!
//! - Inputs: [`Router::add_track`], [`Router::remove_track`], [`Router::add_subscriber`],
//!   [`Router::remove_subscriber`], [`Router::handle_rtp`] (returns the per-packet
//!   decisions directly: the hot path), [`Router::handle_keyframe_request`],
//!   [`Router::request_keyframe`], [`Router::handle_layer_paused`],
//!   [`Router::handle_timeout`].
//! - Outputs: drain [`Router::poll_output`] until `None` after every input; call
//!   [`Router::handle_timeout`] at [`Router::poll_timeout`].
//!
//! Forwarding a packet allocates nothing: the payload is an `Arc<[u8]>` shared by every
//! subscriber that receives it, and decisions go into a buffer the router reuses.

pub mod allocate;
pub mod bitrate;
pub mod codec;
pub mod id;
pub mod keyframe;
pub mod layout;
pub mod load;
pub mod quality;
pub mod rewrite;
pub mod router;
mod slab;
pub mod speaker;
pub mod vp8;

pub use codec::Codec;
pub use id::{EndpointId, LayerId, LayerSet, MediaKind, SlotId, SlotKind, Source, TrackId};
pub use layout::{LayoutSpec, TileSpec, View};
pub use load::{LATE_WAIT, LoadConfig, LoadShedder};
pub use quality::{Quality, QualityConfig, QualityMeter, QualitySample};
pub use router::{Forward, Router, RouterConfig, RouterError, RouterOutput, RtpIn, TrackInfo};
pub use speaker::SpeakerConfig;
pub use vp8::{Vp8Header, Vp8Out};
