//! A simulated participant: a real WebRTC endpoint (str0m, RTP mode) that publishes
//! synthetic but valid media and checks what it receives.
//!
//! Sans-IO like the server's core: the [`crate::driver`] feeds it datagrams and time and
//! sends what it produces. It encodes nothing: audio packets are Opus-sized, video packets
//! carry a valid VP8 payload descriptor, and every payload carries a [`Stamp`] so receivers
//! can check bytes, senders and one-way latency.

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
use str0m::rtp::{ExtensionValues, RtpWrite, Ssrc};
use str0m::{Candidate, Event, Input, Output, Rtc};
use ting_proto::{Offer, Publish, ReceiveSlots, ServerMsg};

use crate::payload::{self, Stamp, StreamKind};
use crate::stats::{Flow, Histogram, SlotStats};

/// The largest payload a simulated video packet carries (like a browser's packetizer).
pub const MAX_VIDEO_PAYLOAD: usize = 1100;

/// What a simulated participant sends and receives.
#[derive(Debug, Clone)]
pub struct SimPeerConfig {
    /// Written into every payload; also the display name is `sim-<id>`.
    pub id: u32,
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
    /// Check every payload byte of every n-th received packet (1: all). Stamps are always
    /// read.
    pub verify_every: u64,
    /// List simulcast rids highest first in the offer (f;h;q). ting reads them lowest
    /// first (its protocol says so); Janus takes the first as the best layer.
    pub rids_high_first: bool,
}

impl SimPeerConfig {
    pub fn new(id: u32) -> SimPeerConfig {
        SimPeerConfig {
            id,
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
            rids_high_first: false,
        }
    }

    pub fn name(&self) -> String {
        format!("sim-{}", self.id)
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
    tx: Vec<TxStream>,
    /// Receive slots: mid and what the offer said they are for.
    slot_mids: Vec<Mid>,
    rx_by_ssrc: Vec<(Ssrc, Option<usize>)>,
    out: VecDeque<Transmit>,
    rtc_timeout: Instant,
    created: Instant,
    sending: bool,
    alive: bool,
    stats: PeerStats,
    latency: Histogram,
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
                seq: u64::from(cfg.id) * 1000 + u64::from(layer) * 100,
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
        let peer = SimPeer {
            stats: PeerStats {
                id: cfg.id,
                slots,
                ..Default::default()
            },
            cfg,
            rtc,
            local,
            pending: Some(pending),
            latency: Histogram::default(),
            tx,
            slot_mids,
            rx_by_ssrc: Vec::new(),
            out: VecDeque::new(),
            rtc_timeout: now,
            created: now,
            sending: true,
            alive: true,
            buf: Vec::with_capacity(MAX_VIDEO_PAYLOAD + 64),
            received: 0,
            directory: Vec::new(),
        };
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
        let candidate =
            Candidate::host(local, "udp").map_err(|e| PeerError::Candidate(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        let offer = str0m::change::SdpOffer::from_sdp_string(offer_sdp)
            .map_err(|e| PeerError::Answer(e.to_string()))?;
        let answer = rtc.sdp_api().accept_offer(offer)?;
        let slot_mids = slots.iter().map(|(m, _)| Mid::from(m.as_str())).collect();
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
            cfg,
            rtc,
            local,
            pending: None,
            latency: Histogram::default(),
            tx: Vec::new(),
            slot_mids,
            rx_by_ssrc: Vec::new(),
            out: VecDeque::new(),
            rtc_timeout: now,
            created: now,
            sending: true,
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

    /// Applies the server's answer and finds the outgoing streams.
    pub fn accept_answer(&mut self, sdp: &str, now: Instant) -> Result<(), PeerError> {
        let answer =
            SdpAnswer::from_sdp_string(sdp).map_err(|e| PeerError::Answer(e.to_string()))?;
        let pending = self
            .pending
            .take()
            .ok_or(PeerError::Answer("no offer is pending".into()))?;
        self.rtc.sdp_api().accept_answer(pending, answer)?;
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

    pub fn handle_receive(&mut self, from: SocketAddr, data: &[u8], now: Instant) {
        let Ok(recv) = Receive::new(Protocol::Udp, from, self.local, data) else {
            return;
        };
        if self.rtc.handle_input(Input::Receive(now, recv)).is_err() {
            return;
        }
        self.drain(now);
    }

    /// When [`SimPeer::handle_timeout`] should run next.
    pub fn poll_timeout(&self) -> Instant {
        let media = if self.sending && self.rtc.is_connected() {
            self.tx.iter().map(|t| t.next_at).min()
        } else {
            None
        };
        media.map_or(self.rtc_timeout, |m| m.min(self.rtc_timeout))
    }

    /// Sends the media that is due and advances the connection's timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.sending && self.rtc.is_connected() {
            self.send_media(now);
        }
        if self.rtc.handle_input(Input::Timeout(now)).is_err() {
            self.alive = false;
        }
        self.drain(now);
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    pub fn stats(&self) -> &PeerStats {
        &self.stats
    }

    /// One-way latency of every stamped packet received, microseconds.
    pub fn latency(&self) -> &Histogram {
        &self.latency
    }

    /// A message from the server's signalling for this participant.
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
                    s.mapped_to = slots.iter().find(|a| a.mid == s.mid).map(|a| {
                        let source = serde_json::to_value(a.source)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default();
                        (a.participant.0.clone(), source)
                    });
                }
            }
            ServerMsg::Error(e) => self.stats.errors.push(e.message.clone()),
            _ => {}
        }
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
        for i in 0..self.tx.len() {
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
                match t.kind {
                    StreamKind::Audio => {
                        let stamp = Stamp {
                            sender: id,
                            kind: t.kind,
                            layer: 0,
                            counter: t.counter,
                            sent_us: wall,
                        };
                        t.counter += 1;
                        payload::write(&mut self.buf, &[], &stamp, t.bytes_per_tick);
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
                            t.tl0 = t.tl0.wrapping_add(1);
                        }
                        t.picture_id = (t.picture_id + 1) & 0x7fff;
                        let frame = t.bytes_per_tick * if key { 4 } else { 1 };
                        let n = frame.div_ceil(MAX_VIDEO_PAYLOAD).max(1);
                        let per = frame.div_ceil(n);
                        for p in 0..n {
                            let prefix = payload::vp8_prefix(p == 0, key, t.picture_id, t.tl0);
                            let stamp = Stamp {
                                sender: id,
                                kind: t.kind,
                                layer: t.layer,
                                counter: t.counter,
                                sent_us: wall,
                            };
                            t.counter += 1;
                            payload::write(&mut self.buf, &prefix, &stamp, per);
                            packets.push((self.buf.clone(), p + 1 == n));
                        }
                    }
                }
                let (kind, ts_step) = match t.kind {
                    StreamKind::Audio => (t.kind, 960),
                    _ => (t.kind, 3000),
                };
                let ts = t.timestamp;
                t.timestamp = t.timestamp.wrapping_add(ts_step);
                let mut api = self.rtc.direct_api();
                let Some(stream) = api.stream_tx(&ssrc) else {
                    break;
                };
                for (bytes, marker) in packets {
                    let t = &mut self.tx[i];
                    let len = bytes.len();
                    let write = RtpWrite::new(pt, t.seq.into(), ts, now, Arc::<[u8]>::from(bytes))
                        .marker(marker)
                        .nackable(kind != StreamKind::Audio)
                        .ext_vals(ext.clone());
                    t.seq += 1;
                    stream.write_rtp(write);
                    match kind {
                        StreamKind::Audio => self.stats.sent_audio.add(len),
                        StreamKind::Video => self.stats.sent_video.add(len),
                        StreamKind::Screen => self.stats.sent_screen.add(len),
                    }
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

    fn handle_rtp(&mut self, p: str0m::rtp::RtpPacket, now: Instant) {
        let ssrc = p.header.ssrc;
        let slot = match self.rx_by_ssrc.iter().find(|(s, _)| *s == ssrc) {
            Some((_, slot)) => *slot,
            None => {
                let mid = self.rtc.direct_api().stream_rx(&ssrc).map(|rx| rx.mid());
                let slot = mid.and_then(|m| self.slot_mids.iter().position(|s| *s == m));
                if self.rx_by_ssrc.len() < 64 {
                    self.rx_by_ssrc.push((ssrc, slot));
                }
                slot
            }
        };
        let Some(slot) = slot else { return };
        if self.stats.first_media_after_ms.is_none() {
            self.stats.first_media_after_ms =
                Some(now.saturating_duration_since(self.created).as_millis() as u64);
        }
        self.received += 1;
        let seq: u64 = *p.seq_no;
        let len = p.payload.len();
        let check_all =
            self.cfg.verify_every <= 1 || self.received.is_multiple_of(self.cfg.verify_every);
        let s = &mut self.stats.slots[slot];
        if !s.record_seq(seq) {
            return;
        }
        s.bytes += len as u64;
        let prefix = if s.kind == "audio" {
            0
        } else {
            payload::vp8_prefix_len(&p.payload)
        };
        match payload::read(&p.payload, prefix, check_all) {
            Ok(stamp) => {
                let latency = payload::now_us().saturating_sub(stamp.sent_us);
                self.latency.record(latency);
                let s = &mut self.stats.slots[slot];
                s.record_sender(stamp.sender, stamp.layer, stamp.counter);
                let mapped = s.mapped_to.as_ref().map(|(p, _)| p.clone());
                if let Some(mapped) = mapped
                    && self.sim_id_of(&mapped).is_some_and(|id| id != stamp.sender)
                {
                    self.stats.slots[slot].mismatched += 1;
                }
                match stamp.kind {
                    StreamKind::Audio => self.stats.received_audio.add(len),
                    StreamKind::Video => self.stats.received_video.add(len),
                    StreamKind::Screen => self.stats.received_screen.add(len),
                }
            }
            Err(payload::PayloadError::Corrupt(_)) => s.corrupt += 1,
            Err(_) => s.unstamped += 1,
        }
    }
}
