//! A simulated participant: a real WebRTC endpoint (str0m, RTP mode) that publishes
//! synthetic but valid media and checks what it receives.
//!
//! Sans-IO like the server's core: the [`crate::driver`] feeds it datagrams and time and
//! sends what it produces. It encodes nothing: audio packets are Opus-sized, video packets
//! carry a valid VP8 payload descriptor, and every payload carries a [`Stamp`] so receivers
//! can check bytes, senders and one-way latency.
//!
//! It behaves like the browser client where the server can tell: it sends a layout, honours
//! `send_layers` by stopping and restarting simulcast layers (a resumed layer starts with a
//! keyframe), and answers keyframe requests.
//!
//! Receiving is made cheap so the harness costs far less than the server it loads: every
//! packet is counted from its clear RTP header ([`crate::header`]) as it is read, and one
//! packet pair in [`SimPeerConfig::sample_every`] per incoming stream is authenticated,
//! decrypted and checked in full. The connection learns of the other packets in two parts,
//! with the kernel's arrival times: their transport-wide arrivals every 50 ms, just before
//! it is asked for the transport-wide feedback that reports them
//! (`Rtc::handle_twcc_arrivals`, `Rtc::poll_twcc_feedback`, without the timeout pass over
//! every stream that str0m's own feedback timer costs), and the rest of their accounting
//! per stream (duplicates, NACK, receiver reports: `Rtc::handle_rtp_headers`) in batches,
//! when a stream has several packets to account at once (see
//! [`SimPeer::account_headers`]). A packet receives a participant's stream every 70 ms or
//! so in a big meeting, and its state is out of the cache each time: one touch for many
//! packets is most of the saving.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{
    Direction, KeyframeRequestKind, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::rtp::{Extension, ExtensionValues, RtpWrite, Ssrc};
use str0m::{Candidate, Event, Input, Output, Rtc, RtpHeaderOnly};
use ting_proto::{Offer, Publish, ReceiveSlots, ServerMsg};

use crate::header::ClearHeader;
use crate::payload::{self, Stamp, StreamKind};
use crate::stats::{Flow, Histogram, SlotStats};

/// How soon after a packet arrived the transport-wide feedback that reports it goes out,
/// at the latest: every 50 ms while packets arrive, as str0m's own timer and a browser
/// receiving a few megabits a second send it.
const FEEDBACK_CHECK: Duration = Duration::from_millis(50);

/// Transport-wide feedback packets sent at once, at most (each covers what fits the MTU).
const MAX_FEEDBACK_PACKETS: usize = 8;

/// Headers counted from unsampled packets wait for the connection's accounting per stream
/// at most this many (see `SimPeer::account_headers`)...
const MAX_HEADERS: usize = 512;
/// ...and at most this long, unless a pass, a gap in a stream or a sampled packet of the
/// same stream needs it sooner.
const ACCOUNT_EVERY: Duration = Duration::from_millis(500);

/// The largest payload a simulated video packet carries (like a browser's packetizer).
pub const MAX_VIDEO_PAYLOAD: usize = 1100;
/// A silent microphone under Opus DTX sends one small packet every this many 20 ms ticks:
/// 4.2 a second, as Chromium measured here (`docs/performance.md`).
pub const DTX_TICKS: u32 = 12;

/// What a simulated participant shows, as the layout it reports to the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchLayout {
    /// No layout: the server's default (the active speaker large, recent speakers small).
    None,
    /// Speaker view: the active speaker large (720 px), up to 9 thumbnails (180 px) that
    /// follow the most recent speakers.
    #[default]
    Speaker,
    /// A 5x5 grid page: the first 25 others, in the order they joined, at 180 px.
    Grid,
}

/// What a simulated participant sends and receives.
#[derive(Debug, Clone)]
pub struct SimPeerConfig {
    /// Written into every payload; also the display name is `sim-<id>` unless
    /// [`SimPeerConfig::display_name`] says otherwise.
    pub id: u32,
    /// The name to join with instead of `sim-<id>`.
    pub display_name: Option<String>,
    /// Publish a microphone.
    pub audio: bool,
    /// Audio payload bytes per 20 ms packet (Opus at ~32 kbit/s: 80).
    pub audio_bytes: usize,
    /// Camera layers' bitrates in bit/s, lowest first; empty: no camera; more than one:
    /// simulcast with rids q, h, f.
    pub video_bps: Vec<u32>,
    /// Publish a screen share at this bitrate.
    pub screen_bps: Option<u32>,
    /// Whether this participant's audio says "speaking" (audio level -30 dBov) or silence.
    pub speaking: bool,
    pub audio_slots: u16,
    pub video_slots: u16,
    pub screen_slots: u16,
    /// A keyframe at least this often (and whenever the server asks).
    pub keyframe_interval: Duration,
    /// Of the sampled packets, check every payload byte of one in this many (1: all);
    /// the stamp of every sampled packet is read.
    pub verify_every: u64,
    /// Decrypt and check a pair of consecutive packets once every this many packets per
    /// incoming stream (1: every packet; everything is always counted from its header).
    pub sample_every: u64,
    /// Stop and restart layers as the server's `send_layers` asks (a browser does).
    pub honour_send_layers: bool,
    /// The layout it reports.
    pub layout: BenchLayout,
    /// Camera frames carry three temporal layers in the pattern 0, 2, 1, 2 (with layer
    /// sync on the first 2 and the 1 after each 0), as browsers' VP8 simulcast sends them;
    /// otherwise every frame is in layer 0.
    pub temporal_layers: bool,
    /// While silent, send a small audio packet every [`DTX_TICKS`] ticks instead of one
    /// every 20 ms when the server's answer asks for Opus DTX (`usedtx=1`), as browsers do.
    pub dtx: bool,
    /// List simulcast rids highest first in the offer (f;h;q). ting reads them lowest
    /// first (its protocol says so); Janus takes the first as the best layer.
    pub rids_high_first: bool,
    /// Send end-to-end encrypted shapes (`docs/e2ee.md`): each frame keeps its codec prefix
    /// in clear, then an SFrame header, then an opaque body and a 16-byte tag. The server
    /// cannot tell them from real ciphertext; receivers read the stamp after the header.
    pub e2ee: bool,
}

impl SimPeerConfig {
    pub fn new(id: u32) -> SimPeerConfig {
        SimPeerConfig {
            id,
            display_name: None,
            audio: true,
            audio_bytes: 80,
            video_bps: vec![500_000],
            screen_bps: None,
            speaking: false,
            audio_slots: 3,
            video_slots: 9,
            screen_slots: 1,
            keyframe_interval: Duration::from_secs(3),
            verify_every: 1,
            sample_every: 1,
            honour_send_layers: true,
            layout: BenchLayout::None,
            temporal_layers: true,
            dtx: true,
            rids_high_first: false,
            e2ee: false,
        }
    }

    pub fn name(&self) -> String {
        self.display_name
            .clone()
            .unwrap_or_else(|| format!("sim-{}", self.id))
    }
}

/// Why a simulated participant could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("str0m refused: {0}")]
    Rtc(#[from] str0m::RtcError),
    #[error("bad candidate: {0}")]
    Candidate(String),
    #[error("the answer is not valid SDP: {0}")]
    Answer(String),
    #[error("no outgoing stream for {0} after the answer")]
    NoStream(&'static str),
}

/// One outgoing stream (a layer of a track).
#[derive(Debug)]
struct TxStream {
    kind: StreamKind,
    layer: u8,
    mid: Mid,
    rid: Option<Rid>,
    ssrc: Option<Ssrc>,
    pt: Option<Pt>,
    seq: u64,
    timestamp: u32,
    counter: u64,
    next_at: Instant,
    interval: Duration,
    bytes_per_tick: usize,
    keyframe_due: bool,
    last_keyframe: Instant,
    picture_id: u16,
    tl0: u8,
    /// Frames since the last keyframe: the place in the temporal pattern.
    since_key: u32,
    /// Packets sent in frames of temporal layer at most 0, 1 and 2.
    upto: [u64; 3],
    /// Sending; false while the server says nobody watches this layer. A paused layer
    /// wakes nobody: its schedule moves on when it resumes (see `resumed`).
    active: bool,
    /// Resumed since its last tick: its next tick is the first of its schedule from now
    /// on, not the ones it missed while paused.
    resumed: bool,
}

/// An incoming stream a participant has seen: its receive slot (`None`: not a slot's main
/// stream, e.g. repair) and where it is in its sampling: packets until the next sampled
/// pair, and whether the next is the pair's second.
#[derive(Debug, Clone, Copy)]
struct RxStream {
    ssrc: Ssrc,
    /// The highest extended sequence number seen: the connection's for a decrypted
    /// packet, extended the same way from the header for the others.
    max_seq: Option<u64>,
    sample_in: u32,
    slot: Option<u16>,
    second: bool,
}

/// How many of the headers just accounted the connection refused: their stream is not (or
/// no longer) the one they were mapped to (a diagnostic; they were counted as received
/// from their header).
fn refused(headers: &[RtpHeaderOnly]) -> u64 {
    headers.iter().filter(|h| h.seq_no.is_none()).count() as u64
}

/// The extended sequence number of 16-bit `seq` nearest to `max` (the highest so far), as
/// RTP receivers extend them across the wrap.
fn extend_seq(max: Option<u64>, seq: u16) -> u64 {
    let Some(max) = max else {
        return u64::from(seq);
    };
    let here = (max & !0xffff) | u64::from(seq);
    if here + 0x8000 < max {
        here + 0x1_0000
    } else if here > max + 0x8000 && here >= 0x1_0000 {
        here - 0x1_0000
    } else {
        here
    }
}

/// What a simulated participant has done and seen.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PeerStats {
    pub id: u32,
    pub participant: Option<String>,
    pub connected_after_ms: Option<u64>,
    pub first_media_after_ms: Option<u64>,
    pub sent_audio: Flow,
    pub sent_video: Flow,
    pub sent_screen: Flow,
    pub received_audio: Flow,
    pub received_video: Flow,
    pub received_screen: Flow,
    pub keyframe_requests_received: u64,
    /// From creating the connection to the first video packet received, ms.
    pub first_video_after_ms: Option<u64>,
    /// From creating the connection to the first `active_speaker` that named someone, ms.
    pub speaker_known_after_ms: Option<u64>,
    /// Camera packets and bytes sent per simulcast layer.
    pub sent_layers: [Flow; 3],
    /// The camera layers this participant sends now, lowest first: false for a layer it
    /// does not publish and for one the server asked it to pause (`send_layers`).
    pub camera_layers_on: [bool; 3],
    /// How many camera layers this participant publishes (0: no camera).
    pub camera_layers: u8,
    /// Received packets whose payload was decrypted and checked.
    pub sampled: u64,
    /// Headers the connection did not account for (their stream had changed); such
    /// packets show as missing.
    pub headers_refused: u64,
    pub slots: Vec<SlotStats>,
    /// Server messages by type, for tests.
    pub left_seen: Vec<(String, String)>,
    pub errors: Vec<String>,
}

/// A simulated participant. See the module docs.
pub struct SimPeer {
    cfg: SimPeerConfig,
    rtc: Rtc,
    local: SocketAddr,
    pending: Option<SdpPendingOffer>,
    /// The address an ICE restart moves the connection to, once its answer arrives.
    moving_to: Option<SocketAddr>,
    tx: Vec<TxStream>,
    /// The SFrame counter of the next end-to-end encrypted frame (all streams share it).
    e2ee_ctr: u64,
    /// Receive slots: mid and what the offer said they are for.
    slot_mids: Vec<Mid>,
    /// The incoming streams seen, with their receive slot and sampling state: one small
    /// array searched and updated for every packet, in a cache line or a few.
    rx_streams: Vec<RxStream>,
    /// A packet written could not be sent at once; the next timeout runs a pass.
    needs_pass: bool,
    /// The arrival of the first RTP packet not yet reported in transport-wide feedback:
    /// the feedback, and a look at the connection's next timeout (which the packets'
    /// accounting may have moved: a gap arms NACK), are due [`FEEDBACK_CHECK`] after it.
    unreported_since: Option<Instant>,
    /// Headers of the unsampled packets since the connection last took them (see
    /// `SimPeer::account_headers`), their transport-wide arrivals not yet handed over,
    /// when the first of them arrived, and whether a stream showed a gap meanwhile (which
    /// NACK should learn of with the next feedback, as before).
    headers: Vec<RtpHeaderOnly>,
    twcc_arrivals: Vec<(u16, Instant)>,
    headers_since: Option<Instant>,
    gap_seen: bool,
    /// Reused for one stream's headers (`SimPeer::account_headers_of`).
    scratch: Vec<RtpHeaderOnly>,
    /// The transport-wide sequence number's extension id in the server's packets, once
    /// looked up (inner `None`: not negotiated).
    twcc_id: Option<Option<u8>>,
    out: VecDeque<Transmit>,
    rtc_timeout: Instant,
    /// The earliest tick of a layer that is sending (kept here so that scheduling the
    /// participant does not walk its layers; see `SimPeer::note_media_at`).
    media_at: Option<Instant>,
    created: Instant,
    sending: bool,
    /// The server's answer asked for Opus DTX and the configuration allows it.
    dtx_asked: bool,
    alive: bool,
    stats: PeerStats,
    /// One-way latencies measured since the driver last took them (microseconds): a few
    /// a second, where a histogram of its own per participant would be 16 KiB to merge at
    /// every snapshot.
    latency: Vec<u64>,
    buf: Vec<u8>,
    received: u64,
    /// Participant ids of the room -> simulated ids (from `sim-<id>` names).
    directory: Vec<(String, u32)>,
}

impl std::fmt::Debug for SimPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimPeer").field("id", &self.cfg.id).finish()
    }
}

impl SimPeer {
    /// Creates the connection and its offer for a socket bound at `local`.
    pub fn new(
        cfg: SimPeerConfig,
        local: SocketAddr,
        now: Instant,
    ) -> Result<(SimPeer, Offer), PeerError> {
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(now);
        // Feedback is sent by `handle_timeout`, without a pass over every stream.
        rtc.set_twcc_feedback_polled(true);
        let candidate =
            Candidate::host(local, "udp").map_err(|e| PeerError::Candidate(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        let mut api = rtc.sdp_api();
        let mut publish = Publish::default();
        let mut tx = Vec::new();
        let stream = |kind: StreamKind, layer: u8, mid: Mid, rid: Option<Rid>, bps: u32| {
            let (interval, bytes) = match kind {
                StreamKind::Audio => (Duration::from_millis(20), cfg.audio_bytes),
                _ => (
                    Duration::from_micros(33_333),
                    (bps as usize / 8 / 30).max(payload::STAMP_LEN + 16),
                ),
            };
            TxStream {
                kind,
                layer,
                mid,
                rid,
                ssrc: None,
                pt: None,
                // Below 2^16, so the first packet's rollover counter is 0 as SRTP expects.
                seq: (u64::from(cfg.id) * 1000 + u64::from(layer) * 100) % 60_000,
                timestamp: cfg.id.wrapping_mul(7919),
                counter: 0,
                // Spread the first packets of many peers over the interval.
                next_at: now + interval.mul_f64(f64::from(cfg.id % 97) / 97.0),
                interval,
                bytes_per_tick: bytes,
                keyframe_due: true,
                last_keyframe: now,
                picture_id: (cfg.id as u16).wrapping_mul(13) & 0x7fff,
                tl0: 0,
                since_key: 0,
                upto: [0; 3],
                active: true,
                resumed: false,
            }
        };
        if cfg.audio {
            let mid = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
            publish.microphone = Some(mid.to_string());
            tx.push(stream(StreamKind::Audio, 0, mid, None, 0));
        }
        if !cfg.video_bps.is_empty() {
            let rids: Vec<Rid> = ["q", "h", "f"]
                .iter()
                .take(cfg.video_bps.len())
                .map(|r| Rid::from(*r))
                .collect();
            let simulcast = (cfg.video_bps.len() > 1).then(|| {
                let mut send: Vec<SimulcastLayer> = ["q", "h", "f"]
                    .iter()
                    .take(cfg.video_bps.len())
                    .map(|r| SimulcastLayer::new(r))
                    .collect();
                if cfg.rids_high_first {
                    send.reverse();
                }
                Simulcast { send, recv: vec![] }
            });
            let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast);
            publish.camera = Some(mid.to_string());
            for (layer, bps) in cfg.video_bps.iter().enumerate() {
                let rid = (cfg.video_bps.len() > 1).then(|| rids[layer]);
                tx.push(stream(StreamKind::Video, layer as u8, mid, rid, *bps));
            }
        }
        if let Some(bps) = cfg.screen_bps {
            let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
            publish.screen = Some(mid.to_string());
            tx.push(stream(StreamKind::Screen, 0, mid, None, bps));
        }
        let mut receive = ReceiveSlots::default();
        let mut slot_mids = Vec::new();
        let mut slots = Vec::new();
        for (n, kind, list, name) in [
            (
                cfg.audio_slots,
                MediaKind::Audio,
                &mut receive.audio,
                "audio",
            ),
            (
                cfg.video_slots,
                MediaKind::Video,
                &mut receive.video,
                "video",
            ),
            (
                cfg.screen_slots,
                MediaKind::Video,
                &mut receive.screen,
                "screen",
            ),
        ] {
            for _ in 0..n {
                let mid = api.add_media(kind, Direction::RecvOnly, None, None, None);
                list.push(mid.to_string());
                slot_mids.push(mid);
                slots.push(SlotStats::new(mid.to_string(), name));
            }
        }
        let (offer, pending) = api
            .apply()
            .ok_or(PeerError::NoStream("an offer (nothing to negotiate)"))?;
        let mut peer = SimPeer {
            stats: PeerStats {
                id: cfg.id,
                slots,
                ..Default::default()
            },
            e2ee_ctr: 0,
            cfg,
            rtc,
            local,
            pending: Some(pending),
            moving_to: None,
            latency: Vec::new(),
            tx,
            needs_pass: false,
            unreported_since: None,
            headers: Vec::new(),
            twcc_arrivals: Vec::new(),
            headers_since: None,
            gap_seen: false,
            scratch: Vec::new(),
            twcc_id: None,
            slot_mids,
            rx_streams: Vec::new(),
            out: VecDeque::new(),
            rtc_timeout: now,
            media_at: None,
            created: now,
            sending: true,
            dtx_asked: false,
            alive: true,
            buf: Vec::with_capacity(MAX_VIDEO_PAYLOAD + 64),
            received: 0,
            directory: Vec::new(),
        };
        peer.note_camera_layers();
        peer.note_media_at();
        Ok((
            peer,
            Offer {
                sdp: offer.to_sdp_string(),
                publish,
                receive,
            },
        ))
    }

    /// Creates the connection by answering a server's offer (servers such as Janus offer
    /// to subscribers). `slots` names the offer's m-lines this peer receives on, with their
    /// kind (`"audio"` or `"video"`); it publishes nothing.
    pub fn answer(
        cfg: SimPeerConfig,
        local: SocketAddr,
        offer_sdp: &str,
        slots: &[(String, &'static str)],
        now: Instant,
    ) -> Result<(SimPeer, String), PeerError> {
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(now);
        // Feedback is sent by `handle_timeout`, without a pass over every stream.
        rtc.set_twcc_feedback_polled(true);
        let candidate =
            Candidate::host(local, "udp").map_err(|e| PeerError::Candidate(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        let offer = str0m::change::SdpOffer::from_sdp_string(offer_sdp)
            .map_err(|e| PeerError::Answer(e.to_string()))?;
        let answer = rtc.sdp_api().accept_offer(offer)?;
        let slot_mids: Vec<Mid> = slots.iter().map(|(m, _)| Mid::from(m.as_str())).collect();
        let stats_slots = slots
            .iter()
            .map(|(m, kind)| SlotStats::new(m.clone(), kind))
            .collect();
        let mut peer = SimPeer {
            stats: PeerStats {
                id: cfg.id,
                slots: stats_slots,
                ..Default::default()
            },
            e2ee_ctr: 0,
            cfg,
            rtc,
            local,
            pending: None,
            moving_to: None,
            latency: Vec::new(),
            tx: Vec::new(),
            needs_pass: false,
            unreported_since: None,
            headers: Vec::new(),
            twcc_arrivals: Vec::new(),
            headers_since: None,
            gap_seen: false,
            scratch: Vec::new(),
            twcc_id: None,
            slot_mids,
            rx_streams: Vec::new(),
            out: VecDeque::new(),
            rtc_timeout: now,
            media_at: None,
            created: now,
            sending: true,
            dtx_asked: false,
            alive: true,
            buf: Vec::new(),
            received: 0,
            directory: Vec::new(),
        };
        peer.drain(now);
        Ok((peer, answer.to_sdp_string()))
    }

    pub fn id(&self) -> u32 {
        self.cfg.id
    }

    /// The mids this peer publishes on: (microphone, camera, screen).
    pub fn publish_mids(&self) -> (Option<String>, Option<String>, Option<String>) {
        let find = |k: StreamKind| {
            self.tx
                .iter()
                .find(|t| t.kind == k)
                .map(|t| t.mid.to_string())
        };
        (
            find(StreamKind::Audio),
            find(StreamKind::Video),
            find(StreamKind::Screen),
        )
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Restarts ICE as a browser does after its network changed (`restartIce()`): an offer
    /// with new ICE credentials and the same m-lines, for `ice_restart`. Once its answer is
    /// accepted ([`SimPeer::accept_answer`]) the connection sends from `local`, the
    /// address it moved to.
    pub fn restart_ice(&mut self, local: SocketAddr) -> Result<String, PeerError> {
        let mut api = self.rtc.sdp_api();
        api.ice_restart(false);
        let (offer, pending) = api
            .apply()
            .ok_or(PeerError::NoStream("an ICE restart offer"))?;
        self.pending = Some(pending);
        self.moving_to = Some(local);
        Ok(offer.to_sdp_string())
    }

    /// Applies the server's answer and finds the outgoing streams.
    pub fn accept_answer(&mut self, sdp: &str, now: Instant) -> Result<(), PeerError> {
        let answer =
            SdpAnswer::from_sdp_string(sdp).map_err(|e| PeerError::Answer(e.to_string()))?;
        let pending = self
            .pending
            .take()
            .ok_or(PeerError::Answer("no offer is pending".into()))?;
        self.rtc.sdp_api().accept_answer(pending, answer)?;
        // A browser's Opus encoder reads `usedtx` from the remote description.
        self.dtx_asked = self.cfg.dtx
            && sdp
                .lines()
                .any(|l| l.starts_with("a=fmtp:") && l.contains("usedtx=1"));
        if let Some(local) = self.moving_to.take() {
            // The restart dropped the old candidates; the new address is the only one.
            let candidate =
                Candidate::host(local, "udp").map_err(|e| PeerError::Candidate(e.to_string()))?;
            self.rtc.add_local_candidate(candidate);
            self.local = local;
        }
        let params: Vec<(Pt, Codec)> = self
            .rtc
            .codec_config()
            .params()
            .iter()
            .map(|p| (p.pt(), p.spec().codec))
            .collect();
        for t in &mut self.tx {
            let want = if t.kind == StreamKind::Audio {
                Codec::Opus
            } else {
                Codec::Vp8
            };
            let remote = self
                .rtc
                .media(t.mid)
                .map(|m| m.remote_pts().to_vec())
                .unwrap_or_default();
            t.pt = params
                .iter()
                .find(|(pt, c)| *c == want && remote.contains(pt))
                .map(|(pt, _)| *pt);
            t.ssrc = self
                .rtc
                .direct_api()
                .stream_tx_by_mid(t.mid, t.rid)
                .map(|s| s.ssrc());
            if t.pt.is_none() || t.ssrc.is_none() {
                return Err(PeerError::NoStream(match t.kind {
                    StreamKind::Audio => "audio",
                    StreamKind::Video => "video",
                    StreamKind::Screen => "screen",
                }));
            }
        }
        self.drain(now);
        Ok(())
    }

    /// Stops or resumes sending media (the connection itself keeps going).
    pub fn set_sending(&mut self, on: bool) {
        self.sending = on;
    }

    /// Whether the connection is still usable.
    pub fn is_alive(&self) -> bool {
        self.alive
    }

    /// A datagram arrived; `now` is also its arrival time.
    pub fn handle_receive(&mut self, from: SocketAddr, data: &[u8], now: Instant) {
        self.handle_datagram(from, data, now);
        self.finish_receive(now);
    }

    /// A datagram arrived at `at` (the kernel's receive time). Call
    /// [`SimPeer::finish_receive`] after a batch.
    pub fn handle_datagram(&mut self, from: SocketAddr, data: &[u8], at: Instant) {
        if let Some((k, slot)) = self.unsampled_stream(data) {
            let twcc_id = self.twcc_id(slot);
            if let Some(h) = ClearHeader::read(data, twcc_id) {
                let rx = &mut self.rx_streams[k];
                let seq = extend_seq(rx.max_seq, h.seq);
                self.gap_seen |= rx.max_seq.is_some_and(|m| seq > m + 1);
                rx.max_seq = Some(rx.max_seq.map_or(seq, |m| m.max(seq)));
                // The payload length as the full path would see it: the datagram less the
                // 12-byte header, its extensions and the 16-byte SRTP tag, roughly.
                let len = data.len().saturating_sub(12 + 16 + 8);
                // A duplicate is neither counted nor reported again, as the connection
                // itself would not.
                if self.count_arrival(slot, seq, len, at)
                    && let Some(t) = h.transport_cc
                {
                    self.twcc_arrivals.push((t, at));
                    self.unreported_since.get_or_insert(at);
                }
                self.headers.push(RtpHeaderOnly::new(
                    at,
                    h.ssrc,
                    h.pt,
                    h.seq,
                    h.timestamp,
                    None,
                    data.len() - h.len,
                ));
                self.headers_since.get_or_insert(at);
                if self.headers.len() >= MAX_HEADERS {
                    self.account_headers();
                }
                return;
            }
        }
        // The connection sees transport-wide arrivals in the order they came, and each
        // stream's packets in theirs: a packet of a slot's stream after that stream's
        // waiting headers; anything else RTP (a repair, whose stream is in its encrypted
        // payload; a stream not known yet) after all of them.
        self.hand_over_twcc();
        let rtcp = data.len() >= 2 && (192..=223).contains(&data[1]);
        if !rtcp && data.len() >= 12 && (128..=191).contains(&data[0]) {
            let ssrc = Ssrc::from(u32::from_be_bytes([data[8], data[9], data[10], data[11]]));
            let slot_stream = self
                .rx_streams
                .iter()
                .any(|r| r.ssrc == ssrc && r.slot.is_some());
            if slot_stream {
                self.account_headers_of(ssrc);
            } else {
                self.account_headers();
            }
        }
        let Ok(recv) = Receive::new(Protocol::Udp, from, self.local, data) else {
            return;
        };
        // Connected: no timeout pass after each datagram (the timer heap drives those).
        let connected = self.rtc.is_connected();
        let result = if connected {
            self.rtc.handle_receive(at, recv)
        } else {
            self.rtc.handle_input(Input::Receive(at, recv))
        };
        if result.is_err() {
            return;
        }
        let rtp = !rtcp && (128..=191).contains(&data[0]);
        if rtp {
            // Its arrival (media, padding, a repair) may be in the feedback register.
            self.unreported_since.get_or_insert(at);
        }
        if connected && rtp {
            self.drain_to_packet(at);
        } else {
            self.drain(at);
        }
    }

    /// The end of a batch of datagrams. The unsampled packets' headers wait for the
    /// connection's next timeout (see [`SimPeer::account_headers`]), which
    /// [`SimPeer::poll_timeout`] keeps within [`FEEDBACK_CHECK`] of the first of them.
    pub fn finish_receive(&mut self, _now: Instant) {}

    /// Hands the transport-wide arrivals waiting to the connection
    /// (`Rtc::handle_twcc_arrivals`): before its transport-wide feedback is taken, and
    /// before a packet takes the full path (which records its own).
    fn hand_over_twcc(&mut self) {
        if !self.twcc_arrivals.is_empty() {
            self.rtc.handle_twcc_arrivals(&self.twcc_arrivals);
            self.twcc_arrivals.clear();
        }
    }

    /// Hands the headers collected since the last call to the connection, for its
    /// accounting per stream (`Rtc::handle_rtp_headers`: duplicates, NACK, receiver
    /// reports, with the kernel's arrival times), after their transport-wide arrivals.
    ///
    /// Called before the connection's timeout pass (which may make reports), with the
    /// transport-wide feedback after a stream showed a gap (so that NACK learns of it as
    /// soon as it would have), when [`MAX_HEADERS`] are waiting or the first has waited
    /// [`ACCOUNT_EVERY`], and before the connection is dropped. Each stream's state is
    /// then touched once for several packets instead of once per packet among a few
    /// thousand other streams' (cache misses are most of the cost).
    pub fn account_headers(&mut self) {
        self.hand_over_twcc();
        self.headers_since = None;
        self.gap_seen = false;
        if self.headers.is_empty() {
            return;
        }
        self.rtc.handle_rtp_headers(&mut self.headers);
        self.stats.headers_refused += refused(&self.headers);
        self.headers.clear();
    }

    /// Accounts the waiting headers of one stream, before a packet of it takes the full
    /// path: the connection sees each stream's packets in the order they came.
    fn account_headers_of(&mut self, ssrc: Ssrc) {
        if !self.headers.iter().any(|h| h.ssrc == ssrc) {
            return;
        }
        let mut mine = std::mem::take(&mut self.scratch);
        mine.extend(self.headers.iter().filter(|h| h.ssrc == ssrc).copied());
        self.headers.retain(|h| h.ssrc != ssrc);
        self.rtc.handle_rtp_headers(&mut mine);
        self.stats.headers_refused += refused(&mine);
        mine.clear();
        self.scratch = mine;
        if self.headers.is_empty() {
            self.headers_since = None;
        }
    }

    /// The id of the transport-wide sequence number extension in the server's packets.
    fn twcc_id(&mut self, slot: usize) -> Option<u8> {
        if let Some(id) = self.twcc_id {
            return id;
        }
        let mid = *self.slot_mids.get(slot)?;
        let id = self
            .rtc
            .media(mid)
            .map(|m| m.remote_extmap().id_of(Extension::TransportSequenceNumber))?;
        self.twcc_id = Some(id);
        id
    }

    /// The incoming stream (its index in `rx_streams`) and receive slot of an RTP
    /// datagram whose stream is known and which is not due to be sampled; `None` sends it
    /// down the full (decrypting) path.
    fn unsampled_stream(&mut self, data: &[u8]) -> Option<(usize, usize)> {
        if self.cfg.sample_every <= 1 || data.len() < 12 || data[0] >> 6 != 2 {
            return None;
        }
        // RTCP (payload types 200-204 with the marker bit) goes the full way.
        if (192..=223).contains(&data[1]) {
            return None;
        }
        let ssrc = Ssrc::from(u32::from_be_bytes([data[8], data[9], data[10], data[11]]));
        let every = self.cfg.sample_every.min(u64::from(u32::MAX)) as u32;
        let k = self.rx_streams.iter().position(|r| r.ssrc == ssrc)?;
        let rx = &mut self.rx_streams[k];
        let slot = usize::from(rx.slot?);
        if rx.second {
            return None;
        }
        if rx.sample_in == 0 {
            rx.sample_in = every;
            return None;
        }
        rx.sample_in -= 1;
        Some((k, slot))
    }

    /// Counts a packet of `slot` from its header.
    fn count_arrival(&mut self, slot: usize, seq: u64, len: usize, at: Instant) -> bool {
        let elapsed = || Some(at.saturating_duration_since(self.created).as_millis() as u64);
        if self.stats.first_media_after_ms.is_none() {
            self.stats.first_media_after_ms = elapsed();
        }
        let s = &mut self.stats.slots[slot];
        if !s.record_arrival(seq, len, at) {
            return false;
        }
        match s.kind {
            "audio" => self.stats.received_audio.add(len),
            "video" => self.stats.received_video.add(len),
            _ => self.stats.received_screen.add(len),
        }
        if s.kind != "audio" && self.stats.first_video_after_ms.is_none() {
            self.stats.first_video_after_ms = elapsed();
        }
        true
    }

    /// Checks the silence of every mapped slot (call a few times a second).
    pub fn check_silence(&mut self, now: Instant) {
        for s in &mut self.stats.slots {
            s.check_silence(now);
        }
    }

    /// When [`SimPeer::handle_timeout`] should run next.
    pub fn poll_timeout(&self) -> Instant {
        let media = self
            .media_at
            .filter(|_| self.sending && self.rtc.is_connected());
        // Packets that arrived are reported within the feedback interval, and accounted
        // per stream within their own.
        let mut rtc = self.rtc_timeout;
        if let Some(at) = self.unreported_since {
            rtc = rtc.min(at + FEEDBACK_CHECK);
        }
        if let Some(at) = self.headers_since {
            rtc = rtc.min(at + ACCOUNT_EVERY);
        }
        media.map_or(rtc, |m| m.min(rtc))
    }

    /// Sends the media that is due and advances the connection's timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.sending && self.rtc.is_connected() {
            self.send_media(now);
            self.note_media_at();
        }
        let pass = now >= self.rtc_timeout || std::mem::take(&mut self.needs_pass);
        let feedback_due = self
            .unreported_since
            .is_some_and(|at| now >= at + FEEDBACK_CHECK);
        // The headers wait for the connection to need them: several packets of a stream
        // then cost one look at its state instead of one each.
        let account = pass
            || (feedback_due && self.gap_seen)
            || self
                .headers_since
                .is_some_and(|at| now >= at + ACCOUNT_EVERY);
        if account {
            self.account_headers();
        } else if feedback_due {
            self.hand_over_twcc();
        }
        if pass && self.rtc.handle_input(Input::Timeout(now)).is_err() {
            self.alive = false;
        }
        if feedback_due {
            self.unreported_since = None;
            // One packet covers what fits the MTU; a few hundred arrivals fit one.
            for _ in 0..MAX_FEEDBACK_PACKETS {
                let Some(t) = self.rtc.poll_twcc_feedback(now) else {
                    break;
                };
                self.out.push_back(t);
            }
        }
        if pass {
            self.drain(now);
        } else if account {
            // The accounting may have opened a gap, which arms the connection's NACK
            // timer: learn that alone, without the drain's walk of every stream for every
            // timer. The rest of what packets move (a stream's first report, a pause
            // check) waits for the next pass.
            if let Some(at) = self.rtc.nack_at() {
                self.rtc_timeout = self.rtc_timeout.min(at);
            }
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    pub fn stats(&self) -> &PeerStats {
        &self.stats
    }

    /// Moves the one-way latencies measured since the last call (of stamped packets
    /// received, microseconds) into `into`.
    pub fn take_latency(&mut self, into: &mut Histogram) {
        for us in self.latency.drain(..) {
            into.record(us);
        }
    }

    /// A message from the server's signalling for this participant. Ask
    /// [`SimPeer::poll_timeout`] again after it: a layer it resumes may be due sooner.
    pub fn handle_signal(&mut self, msg: &ServerMsg) {
        match msg {
            ServerMsg::Welcome(w) => {
                self.stats.participant = Some(w.participant.0.clone());
                for p in &w.participants {
                    self.learn(&p.id.0, &p.name);
                }
            }
            ServerMsg::ParticipantJoined { participant } => {
                self.learn(&participant.id.0, &participant.name);
            }
            ServerMsg::ParticipantLeft {
                participant,
                reason,
            } => {
                let reason = serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                self.stats.left_seen.push((participant.0.clone(), reason));
            }
            ServerMsg::Slots { slots } => {
                for s in &mut self.stats.slots {
                    let a = slots.iter().find(|a| a.mid == s.mid);
                    let mapped = a.map(|a| {
                        let source = serde_json::to_value(a.source)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default();
                        (a.participant.0.clone(), source)
                    });
                    s.set_mapping(mapped, a.is_some_and(|a| a.paused));
                }
            }
            ServerMsg::SendLayers { source, active } if self.cfg.honour_send_layers => {
                let kind = match source {
                    ting_proto::Source::Camera => StreamKind::Video,
                    ting_proto::Source::Screen => StreamKind::Screen,
                    ting_proto::Source::Microphone => return,
                };
                for t in self.tx.iter_mut().filter(|t| t.kind == kind) {
                    let on = active.get(usize::from(t.layer)).copied().unwrap_or(true);
                    if on && !t.active {
                        // A browser restarts a layer with a keyframe.
                        t.keyframe_due = true;
                        t.resumed = true;
                    }
                    t.active = on;
                }
                self.note_camera_layers();
                self.note_media_at();
            }
            ServerMsg::ActiveSpeaker {
                participant: Some(_),
            } if self.stats.speaker_known_after_ms.is_none() => {
                self.stats.speaker_known_after_ms = Some(self.created.elapsed().as_millis() as u64);
            }
            ServerMsg::Error(e) => self.stats.errors.push(e.message.clone()),
            _ => {}
        }
    }

    /// Notes when the next layer that is sending is due.
    fn note_media_at(&mut self) {
        self.media_at = self.tx.iter().filter(|t| t.active).map(|t| t.next_at).min();
    }

    /// Records which camera layers are being sent, for the report.
    fn note_camera_layers(&mut self) {
        let mut on = [false; 3];
        let mut layers = 0;
        for t in self.tx.iter().filter(|t| t.kind == StreamKind::Video) {
            on[usize::from(t.layer.min(2))] |= t.active;
            layers += 1;
        }
        self.stats.camera_layers_on = on;
        self.stats.camera_layers = layers;
    }

    /// The simulated id of a room participant, if it is one of ours.
    pub fn sim_id_of(&self, participant: &str) -> Option<u32> {
        self.directory
            .iter()
            .find(|(p, _)| p == participant)
            .map(|(_, id)| *id)
    }

    fn learn(&mut self, participant: &str, name: &str) {
        if let Some(id) = name.strip_prefix("sim-").and_then(|n| n.parse().ok()) {
            self.directory.push((participant.to_owned(), id));
        }
    }

    fn send_media(&mut self, now: Instant) {
        let wall = payload::now_us();
        let keyframe_interval = self.cfg.keyframe_interval;
        let speaking = self.cfg.speaking;
        let id = self.cfg.id;
        let e2ee = self.cfg.e2ee;
        let temporal_layers = self.cfg.temporal_layers;
        let dtx_silence = !speaking && self.dtx_asked;
        // A key id of the sender's own, as a browser draws one.
        let kid = 0x7100_0000_0000 | u64::from(id);
        let layers = self.cfg.video_bps.len().max(1) as u8;
        for i in 0..self.tx.len() {
            let t = &mut self.tx[i];
            if !t.active {
                continue;
            }
            if std::mem::take(&mut t.resumed) && t.next_at < now {
                // Back from a pause: on with the schedule from now, without the ticks
                // missed meanwhile.
                let behind = now.duration_since(t.next_at).as_nanos();
                let ticks = behind.div_ceil(t.interval.as_nanos().max(1));
                t.next_at = u32::try_from(ticks)
                    .ok()
                    .and_then(|n| t.interval.checked_mul(n))
                    .map_or(now, |d| t.next_at + d);
            }
            while self.tx[i].next_at <= now {
                let t = &mut self.tx[i];
                let (Some(ssrc), Some(pt)) = (t.ssrc, t.pt) else {
                    break;
                };
                if now.saturating_duration_since(t.next_at) > Duration::from_secs(1) {
                    // Fell far behind (a stalled machine): skip ahead instead of bursting.
                    t.next_at = now;
                }
                t.next_at += t.interval;
                let mut packets: Vec<(Vec<u8>, bool)> = Vec::new();
                let mut ext = ExtensionValues::default();
                // Ticks after this one that pass without a packet (and without a wake-up).
                let mut quiet_ticks = 0;
                match t.kind {
                    StreamKind::Audio => {
                        let stamp = Stamp {
                            sender: id,
                            kind: t.kind,
                            layer: 0,
                            tid: None,
                            counter: t.counter,
                            sent_us: wall,
                        };
                        t.counter += 1;
                        let mut prefix = Vec::new();
                        let mut len = t.bytes_per_tick;
                        if dtx_silence {
                            // Opus DTX: silence is a small comfort-noise packet every
                            // DTX_TICKS ticks.
                            quiet_ticks = DTX_TICKS - 1;
                            len = 0;
                        }
                        if e2ee {
                            prefix.push(payload::OPUS_TOC);
                            prefix.extend(payload::e2ee_header(kid, self.e2ee_ctr));
                            self.e2ee_ctr += 1;
                            len += prefix.len() + payload::E2EE_TAG_LEN;
                        }
                        payload::write(&mut self.buf, &prefix, &stamp, len);
                        packets.push((self.buf.clone(), false));
                        ext.audio_level = Some(if speaking { -30 } else { -127 });
                        ext.voice_activity = Some(speaking);
                    }
                    StreamKind::Video | StreamKind::Screen => {
                        let key = t.keyframe_due
                            || now.saturating_duration_since(t.last_keyframe) >= keyframe_interval;
                        if key {
                            t.keyframe_due = false;
                            t.last_keyframe = now;
                            t.since_key = 0;
                        }
                        let temporal = if t.kind == StreamKind::Video && temporal_layers {
                            match t.since_key % 4 {
                                0 => (0, false),
                                1 => (2, true),
                                2 => (1, true),
                                _ => (2, false),
                            }
                        } else {
                            (0, false)
                        };
                        t.since_key = t.since_key.wrapping_add(1);
                        if temporal.0 == 0 {
                            t.tl0 = t.tl0.wrapping_add(1);
                        }
                        t.picture_id = (t.picture_id + 1) & 0x7fff;
                        let frame = t.bytes_per_tick * if key { 4 } else { 1 };
                        let n = frame.div_ceil(MAX_VIDEO_PAYLOAD).max(1);
                        let per = frame.div_ceil(n);
                        let ctr = self.e2ee_ctr;
                        if e2ee {
                            self.e2ee_ctr += 1;
                        }
                        for p in 0..n {
                            let size = payload::layer_size(t.layer, layers);
                            let mut prefix = payload::vp8_prefix(
                                p == 0,
                                key,
                                t.picture_id,
                                t.tl0,
                                temporal,
                                size,
                            );
                            let mut per = per;
                            if e2ee && p == 0 {
                                let header = payload::e2ee_header(kid, ctr);
                                per += header.len();
                                prefix.extend(header);
                            }
                            if e2ee && p + 1 == n {
                                per += payload::E2EE_TAG_LEN;
                            }
                            let stamp = Stamp {
                                sender: id,
                                kind: t.kind,
                                layer: t.layer,
                                tid: temporal_layers.then_some(temporal.0),
                                counter: if temporal_layers {
                                    payload::temporal_counters(t.upto)
                                } else {
                                    t.counter
                                },
                                sent_us: wall,
                            };
                            t.counter += 1;
                            for k in usize::from(temporal.0)..3 {
                                t.upto[k] += 1;
                            }
                            payload::write(&mut self.buf, &prefix, &stamp, per);
                            packets.push((self.buf.clone(), p + 1 == n));
                        }
                    }
                }
                let (kind, ts_step): (StreamKind, u32) = match t.kind {
                    StreamKind::Audio => (t.kind, 960),
                    _ => (t.kind, 3000),
                };
                let ts = t.timestamp;
                t.timestamp = t
                    .timestamp
                    .wrapping_add(ts_step.wrapping_mul(1 + quiet_ticks));
                t.next_at += t.interval * quiet_ticks;
                let mut api = self.rtc.direct_api();
                let Some(stream) = api.stream_tx(&ssrc) else {
                    break;
                };
                let mut queued = false;
                for (bytes, marker) in packets {
                    let t = &mut self.tx[i];
                    let len = bytes.len();
                    let write = RtpWrite::new(pt, t.seq.into(), ts, now, Arc::<[u8]>::from(bytes))
                        .marker(marker)
                        .nackable(kind != StreamKind::Audio)
                        .ext_vals(ext.clone());
                    t.seq += 1;
                    stream.write_rtp(write);
                    queued = true;
                    match kind {
                        StreamKind::Audio => self.stats.sent_audio.add(len),
                        StreamKind::Video => {
                            self.stats.sent_video.add(len);
                            self.stats.sent_layers[usize::from(t.layer.min(2))].add(len);
                        }
                        StreamKind::Screen => self.stats.sent_screen.add(len),
                    }
                }
                // Out now, encrypted, without a timeout pass over every stream (the
                // connection's own timers keep their passes).
                let mut sent = false;
                while let Some(t) = self.rtc.poll_stream_tx(now, ssrc) {
                    self.out.push_back(t);
                    sent = true;
                }
                if queued && !sent {
                    // Not sendable this way yet: the next pass sends it.
                    self.needs_pass = true;
                }
            }
        }
    }

    /// After a sampled RTP packet: polls the connection until it hands the packet over,
    /// and leaves the rest (learning its next timeout, which walks every stream) to the
    /// feedback that [`SimPeer::poll_timeout`] keeps within [`FEEDBACK_CHECK`], as for the
    /// packets counted from their headers. Receiving RTP sends nothing at once; what it
    /// arms (NACK) is learned then at the latest.
    fn drain_to_packet(&mut self, now: Instant) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.rtc_timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => self.out.push_back(t),
                Ok(Output::Event(e)) => {
                    let packet = matches!(e, Event::RtpPacket(_));
                    self.handle_event(e, now);
                    if packet {
                        return;
                    }
                }
                Err(_) => {
                    self.alive = false;
                    return;
                }
            }
        }
    }

    fn drain(&mut self, now: Instant) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.rtc_timeout = t;
                    break;
                }
                Ok(Output::Transmit(t)) => self.out.push_back(t),
                Ok(Output::Event(e)) => self.handle_event(e, now),
                Err(_) => {
                    self.alive = false;
                    break;
                }
            }
        }
        if self.stats.connected_after_ms.is_none() && self.rtc.is_connected() {
            self.stats.connected_after_ms =
                Some(now.saturating_duration_since(self.created).as_millis() as u64);
        }
    }

    fn handle_event(&mut self, e: Event, now: Instant) {
        match e {
            Event::RtpPacket(p) => self.handle_rtp(p, now),
            Event::KeyframeRequest(req) => {
                self.stats.keyframe_requests_received += 1;
                for t in &mut self.tx {
                    if t.mid == req.mid && (req.rid.is_none() || t.rid == req.rid) {
                        t.keyframe_due = true;
                    }
                }
                let _ = KeyframeRequestKind::Pli;
            }
            Event::Closed => self.alive = false,
            Event::IceConnectionStateChange(str0m::IceConnectionState::Disconnected) => {
                self.alive = false;
            }
            _ => {}
        }
    }

    fn handle_rtp(&mut self, p: str0m::rtp::RtpPacket, _now: Instant) {
        let ssrc = p.header.ssrc;
        let known = self.rx_streams.iter().position(|r| r.ssrc == ssrc);
        let (slot, at) = match known {
            Some(k) => (self.rx_streams[k].slot.map(usize::from), Some(k)),
            None => {
                let mid = self.rtc.direct_api().stream_rx(&ssrc).map(|rx| rx.mid());
                let slot = mid.and_then(|m| self.slot_mids.iter().position(|s| *s == m));
                let room = self.rx_streams.len() < 64;
                if room {
                    self.rx_streams.push(RxStream {
                        ssrc,
                        max_seq: None,
                        slot: slot.and_then(|s| u16::try_from(s).ok()),
                        sample_in: 0,
                        second: false,
                    });
                }
                (slot, room.then(|| self.rx_streams.len() - 1))
            }
        };
        let arrived = p.timestamp;
        let seq: u64 = *p.seq_no;
        if let Some(rx) = at.and_then(|k| self.rx_streams.get_mut(k)) {
            rx.max_seq = Some(rx.max_seq.map_or(seq, |m| m.max(seq)));
        }
        let Some(slot) = slot else { return };
        let len = p.payload.len();
        if !self.count_arrival(slot, seq, len, arrived) {
            return;
        }
        // The second of a sampled pair comes next (unless this was it).
        if let Some(rx) = at.and_then(|k| self.rx_streams.get_mut(k)) {
            rx.second = !rx.second && self.cfg.sample_every > 1;
        }
        self.received += 1;
        self.stats.sampled += 1;
        let check_all =
            self.cfg.verify_every <= 1 || self.received.is_multiple_of(self.cfg.verify_every);
        let prefix = match (self.stats.slots[slot].kind == "audio", self.cfg.e2ee) {
            (true, false) => 0,
            (true, true) => 1 + p.payload.get(1).map_or(0, |c| payload::e2ee_header_len(*c)),
            (false, e2ee) => {
                let at = payload::vp8_prefix_len(&p.payload);
                let start = p.payload.first().is_some_and(|b| b & 0x10 != 0);
                if e2ee && start {
                    at + p
                        .payload
                        .get(at)
                        .map_or(0, |c| payload::e2ee_header_len(*c))
                } else {
                    at
                }
            }
        };
        match payload::read(&p.payload, prefix, check_all) {
            Ok(stamp) => {
                // To the kernel's arrival time, not to now: the thread looks at its
                // sockets only every few milliseconds (`driver::READ_EVERY`).
                let waited = Instant::now().saturating_duration_since(arrived);
                let latency = payload::one_way_us(stamp.sent_us, payload::now_us(), waited);
                self.latency.push(latency);
                let mapped = self.stats.slots[slot]
                    .mapped_to
                    .as_ref()
                    .map(|(p, _)| p.clone());
                let s = &mut self.stats.slots[slot];
                s.record_sample(seq, &stamp);
                if let Some(mapped) = mapped
                    && self.sim_id_of(&mapped).is_some_and(|id| id != stamp.sender)
                {
                    self.stats.slots[slot].mismatched += 1;
                }
            }
            Err(payload::PayloadError::Corrupt(_)) => {
                let s = &mut self.stats.slots[slot];
                s.sampled += 1;
                s.corrupt += 1;
            }
            Err(_) => {
                let s = &mut self.stats.slots[slot];
                s.sampled += 1;
                s.unstamped += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher(layers: usize, honour: bool) -> SimPeer {
        let mut cfg = SimPeerConfig::new(7);
        cfg.video_bps = [150_000, 500_000, 1_500_000][..layers].to_vec();
        cfg.honour_send_layers = honour;
        let local = "127.0.0.1:40000".parse().unwrap();
        SimPeer::new(cfg, local, Instant::now()).unwrap().0
    }

    fn send_layers(source: ting_proto::Source, active: &[bool]) -> ServerMsg {
        ServerMsg::SendLayers {
            source,
            active: active.to_vec(),
        }
    }

    #[test]
    fn sequence_numbers_extend_across_the_wrap_both_ways() {
        assert_eq!(extend_seq(None, 65_000), 65_000);
        assert_eq!(extend_seq(Some(65_530), 65_535), 65_535);
        // Forward over the wrap, and a late packet from before it.
        assert_eq!(extend_seq(Some(65_535), 2), 65_538);
        assert_eq!(extend_seq(Some(65_538), 65_534), 65_534);
        assert_eq!(
            extend_seq(Some(3 * 65_536 + 10), 65_500),
            2 * 65_536 + 65_500
        );
        // Never below zero, and a gap of up to half the space is a gap, not a wrap.
        assert_eq!(extend_seq(Some(10), 60_000), 60_000);
        assert_eq!(extend_seq(Some(100), 32_000), 32_000);
    }

    #[test]
    fn the_camera_layers_sent_follow_send_layers() {
        use ting_proto::Source;
        let mut p = publisher(3, true);
        assert_eq!(p.stats().camera_layers, 3);
        assert_eq!(p.stats().camera_layers_on, [true, true, true]);
        p.handle_signal(&send_layers(Source::Camera, &[true, false, false]));
        assert_eq!(p.stats().camera_layers_on, [true, false, false]);
        // Another source's pause leaves the camera alone.
        p.handle_signal(&send_layers(Source::Screen, &[false]));
        assert_eq!(p.stats().camera_layers_on, [true, false, false]);
        p.handle_signal(&send_layers(Source::Camera, &[false, false, true]));
        assert_eq!(p.stats().camera_layers_on, [false, false, true]);

        // A publisher that ignores pausing (`--no-pause`) keeps sending everything.
        let mut deaf = publisher(3, false);
        deaf.handle_signal(&send_layers(Source::Camera, &[false, false, false]));
        assert_eq!(deaf.stats().camera_layers_on, [true, true, true]);

        // One layer: only the lowest exists.
        let single = publisher(1, true);
        assert_eq!(single.stats().camera_layers, 1);
        assert_eq!(single.stats().camera_layers_on, [true, false, false]);
    }

    #[test]
    fn a_paused_layer_wakes_nobody_and_resumes_on_its_schedule_from_now() {
        use ting_proto::Source;
        let mut cfg = SimPeerConfig::new(7);
        cfg.audio = false;
        cfg.video_bps = vec![150_000, 500_000, 1_500_000];
        cfg.honour_send_layers = true;
        let start = Instant::now();
        let mut p = SimPeer::new(cfg, "127.0.0.1:40000".parse().unwrap(), start)
            .unwrap()
            .0;
        let first = p.tx[0].next_at;
        assert_eq!(p.media_at, Some(first));
        p.handle_signal(&send_layers(Source::Camera, &[false, false, false]));
        assert_eq!(p.media_at, None, "three paused layers need no wake-up");
        p.handle_signal(&send_layers(Source::Camera, &[false, true, false]));
        assert_eq!(p.media_at, Some(first));

        // Five seconds later the resumed layer goes on from now, without the 150 ticks
        // it missed, and with a keyframe.
        let later = start + Duration::from_secs(5);
        p.send_media(later);
        let t = &p.tx[1];
        assert!(t.keyframe_due && !t.resumed);
        assert!(t.next_at >= later && t.next_at < later + t.interval);
        // Its phase is kept: a whole number of ticks after the first.
        let ticks = t.next_at.duration_since(first).as_nanos() / t.interval.as_nanos();
        assert_eq!(first + t.interval * ticks as u32, t.next_at);
        // The layers still paused did not move.
        assert_eq!(p.tx[0].next_at, first);
    }
}
