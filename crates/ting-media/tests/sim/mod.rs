//! A room in virtual time: simulated publishers and subscribers around one [`Router`].
//!
//! Publishers send what browsers send: a microphone packet every 20 ms with an audio
//! level, and a camera with up to three simulcast layers at 15 frames a second, each layer
//! its own RTP stream (own sequence numbers, own timestamp offset, own VP8 picture ids),
//! keyframes when asked and when a paused layer resumes. They honour
//! [`RouterOutput::SendLayers`] as a browser honours `send_layers`.
//!
//! Subscribers check every packet the router forwards them, per slot: it is from the
//! track the slot was said to carry, never their own; sequence numbers go up by exactly
//! one (the simulated network loses nothing); timestamps never go back; VP8 picture ids go
//! up by one per frame across every switch; TL0PICIDX goes up by one at each frame of
//! temporal layer 0 and stays the same at every other frame, KEYIDX goes up by one at
//! each keyframe and stays the same at every other frame, across every switch and every
//! frame left out; a slot starts, and switches, only at a keyframe; nothing arrives while
//! a slot is paused. Any violation panics with the slot.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ting_media::{
    Codec, EndpointId, LayerId, LayerSet, LayoutSpec, Router, RouterConfig, RouterOutput, RtpIn,
    SlotId, SlotKind, Source, TrackId, TrackInfo,
};

/// Bytes per packet and packets per frame of each layer: about 150 k, 500 k and 1.5 M
/// bit/s at 15 frames a second with headers. A keyframe has three times the packets.
const LAYER_PACKETS: [usize; 3] = [1, 2, 6];
const LAYER_BYTES: [usize; 3] = [1100, 1700, 1700];
pub const FRAME_MS: u64 = 66;

#[derive(Debug, Clone, Copy)]
struct LayerSim {
    seq: u64,
    ts_offset: u32,
    pid: u16,
    /// TL0PICIDX: one up at each frame of temporal layer 0 (RFC 7741, section 4.2).
    tl0: u8,
    /// KEYIDX: one up at each keyframe, 5 bits.
    keyidx: u8,
    /// Frames since the last keyframe (the position in the temporal pattern).
    since_key: u32,
    keyframe_due: bool,
    active: bool,
    sent: u64,
}

#[derive(Debug)]
pub struct Publisher {
    pub id: EndpointId,
    pub speaking: bool,
    pub mic: bool,
    /// Its network is gone: it sends nothing.
    pub silent: bool,
    /// Camera layers, 0 for no camera.
    pub layers: u8,
    audio_seq: u64,
    layer: [LayerSim; 3],
    frame: u32,
    pub audio_sent: u64,
}

impl Publisher {
    /// Packets sent upstream on each camera layer.
    pub fn sent(&self, layer: usize) -> u64 {
        self.layer[layer].sent
    }

    pub fn active(&self, layer: usize) -> bool {
        self.layer[layer].active
    }
}

#[derive(Debug, Default, Clone)]
pub struct SlotLog {
    pub track: Option<TrackId>,
    pub paused: bool,
    pub last_seq: Option<u64>,
    pub last_ts: Option<u32>,
    pub last_pid: Option<u16>,
    /// TL0PICIDX and KEYIDX of the last VP8 packet received.
    pub last_tl0: Option<u8>,
    pub last_keyidx: Option<u8>,
    /// The next packet must start a keyframe (the slot starts or switches).
    pub expect_keyframe: bool,
    pub last_layer: Option<u8>,
    pub packets: u64,
    pub per_layer: [u64; 3],
    pub layer_switches: u64,
    /// Every frame start received on a video slot: (temporal layer, layer sync, keyframe).
    pub frames: Vec<(u8, bool, bool)>,
}

#[derive(Debug)]
pub struct Subscriber {
    pub id: EndpointId,
    pub kinds: Vec<SlotKind>,
    pub slots: Vec<SlotLog>,
    pub desired: Option<u64>,
}

impl Subscriber {
    /// The slot showing `endpoint`'s camera, if any.
    pub fn camera_slot(&self, endpoint: EndpointId) -> Option<&SlotLog> {
        self.slots.iter().zip(&self.kinds).find_map(|(s, k)| {
            (*k == SlotKind::Camera && s.track == Some(TrackId::new(endpoint, Source::Camera)))
                .then_some(s)
        })
    }

    /// The index of the slot showing `endpoint`'s camera, if any.
    pub fn camera_slot_index(&self, endpoint: EndpointId) -> Option<u16> {
        self.slots
            .iter()
            .zip(&self.kinds)
            .position(|(s, k)| {
                *k == SlotKind::Camera && s.track == Some(TrackId::new(endpoint, Source::Camera))
            })
            .map(|i| i as u16)
    }

    pub fn audio_from(&self) -> Vec<EndpointId> {
        self.slots
            .iter()
            .zip(&self.kinds)
            .filter(|(_, k)| **k == SlotKind::Audio)
            .filter_map(|(s, _)| s.track.map(|t| t.endpoint))
            .collect()
    }
}

/// The room and everything that happened in it.
pub struct Sim {
    pub router: Router,
    pub t0: Instant,
    pub now: Instant,
    pub ms: u64,
    pub pubs: BTreeMap<EndpointId, Publisher>,
    pub subs: BTreeMap<EndpointId, Subscriber>,
    pub keyframe_requests: BTreeMap<(TrackId, u8), u64>,
    pub active_speaker: Option<EndpointId>,
    pub speaker_changes: u64,
    pub forwards: u64,
    /// Cameras send three temporal layers (0, 2, 1, 2, … as browsers' VP8 does) instead
    /// of every frame in layer 0.
    pub temporal: bool,
    audio_payload: Arc<[u8]>,
}

impl Sim {
    pub fn new(config: RouterConfig) -> Sim {
        let t0 = Instant::now();
        Sim {
            router: Router::new(config),
            t0,
            now: t0,
            ms: 0,
            pubs: BTreeMap::new(),
            subs: BTreeMap::new(),
            keyframe_requests: BTreeMap::new(),
            active_speaker: None,
            speaker_changes: 0,
            forwards: 0,
            temporal: false,
            audio_payload: Arc::from(&[0xfcu8; 80][..]),
        }
    }

    /// Someone joins: publishes a microphone and a camera with `layers` layers (0: none),
    /// and subscribes with these slots.
    pub fn join(&mut self, n: u64, layers: u8, slots: &[SlotKind]) -> EndpointId {
        let id = EndpointId(n);
        let now = self.now;
        self.router
            .add_track(
                TrackId::new(id, Source::Microphone),
                TrackInfo {
                    codec: Codec::Opus,
                    local: true,
                    layers: 1,
                },
                now,
            )
            .unwrap();
        if layers > 0 {
            self.router
                .add_track(
                    TrackId::new(id, Source::Camera),
                    TrackInfo {
                        codec: Codec::Vp8,
                        local: true,
                        layers,
                    },
                    now,
                )
                .unwrap();
        }
        let layer = |l: u64| LayerSim {
            seq: n * 10_000 + l * 1000 + 60_000,
            ts_offset: (n as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(l as u32 * 77_777),
            pid: ((n * 31 + l * 1009) & 0x7fff) as u16,
            tl0: (n * 3 + l) as u8,
            keyidx: ((n * 5 + l) & 0x1f) as u8,
            since_key: 0,
            keyframe_due: true,
            active: l < u64::from(layers),
            sent: 0,
        };
        self.pubs.insert(
            id,
            Publisher {
                id,
                speaking: false,
                mic: true,
                silent: false,
                layers,
                audio_seq: n * 100,
                layer: [layer(0), layer(1), layer(2)],
                frame: 0,
                audio_sent: 0,
            },
        );
        if !slots.is_empty() {
            self.router.add_subscriber(id, slots, now).unwrap();
            self.subs.insert(
                id,
                Subscriber {
                    id,
                    kinds: slots.to_vec(),
                    slots: vec![SlotLog::default(); slots.len()],
                    desired: None,
                },
            );
        }
        self.drain();
        id
    }

    pub fn leave(&mut self, id: EndpointId) {
        let now = self.now;
        self.router
            .remove_track(TrackId::new(id, Source::Microphone), now);
        self.router
            .remove_track(TrackId::new(id, Source::Camera), now);
        self.router.remove_subscriber(id);
        self.pubs.remove(&id);
        self.subs.remove(&id);
        self.drain();
    }

    pub fn set_layout(&mut self, id: EndpointId, layout: Option<LayoutSpec>) {
        self.router.set_layout(id, layout, self.now).unwrap();
        self.drain();
    }

    pub fn set_estimate(&mut self, id: EndpointId, bps: Option<u64>) {
        self.router.set_estimate(id, bps, self.now);
        self.drain();
    }

    pub fn set_speaking(&mut self, id: EndpointId, on: bool) {
        if let Some(p) = self.pubs.get_mut(&id) {
            p.speaking = on;
        }
    }

    /// Runs the room for `ms` milliseconds of virtual time.
    pub fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            self.step();
        }
    }

    fn step(&mut self) {
        self.ms += 1;
        self.now = self.t0 + Duration::from_millis(self.ms);
        let now = self.now;
        let ms = self.ms;
        let mut packets: Vec<(RtpIn, bool, u8)> = Vec::new();
        let temporal = self.temporal;
        for p in self.pubs.values_mut() {
            if p.silent {
                continue;
            }
            if p.mic && (ms + p.id.0).is_multiple_of(20) {
                p.audio_seq += 1;
                p.audio_sent += 1;
                packets.push((
                    RtpIn {
                        track: TrackId::new(p.id, Source::Microphone),
                        layer: LayerId(0),
                        seq: p.audio_seq,
                        timestamp: (p.audio_seq as u32).wrapping_mul(960),
                        marker: false,
                        audio_level: Some(if p.speaking { 25 } else { 110 }),
                        voice_activity: Some(p.speaking),
                        payload: self.audio_payload.clone(),
                    },
                    false,
                    0,
                ));
            }
            if p.layers > 0 && (ms + p.id.0 * 7).is_multiple_of(FRAME_MS) {
                p.frame += 1;
                let periodic = p.frame.is_multiple_of(150);
                for l in 0..usize::from(p.layers) {
                    let ls = &mut p.layer[l];
                    if !ls.active {
                        continue;
                    }
                    let key = std::mem::take(&mut ls.keyframe_due) || periodic;
                    ls.pid = (ls.pid + 1) & 0x7fff;
                    if key {
                        ls.since_key = 0;
                        ls.keyidx = (ls.keyidx + 1) & 0x1f;
                    }
                    // Position 0: layer 0; 1: layer 2, sync; 2: layer 1, sync; 3: layer 2.
                    let pos = ls.since_key % 4;
                    ls.since_key += 1;
                    let (tid, sync) = match (temporal, pos) {
                        (false, _) | (true, 0) => (0, false),
                        (true, 1) => (2, true),
                        (true, 2) => (1, true),
                        _ => (2, false),
                    };
                    // Without temporal layers every frame is in layer 0 and counts.
                    if tid == 0 {
                        ls.tl0 = ls.tl0.wrapping_add(1);
                    }
                    let n = LAYER_PACKETS[l] * if key { 3 } else { 1 };
                    let ts = ls.ts_offset.wrapping_add(p.frame.wrapping_mul(6000));
                    for i in 0..n {
                        ls.seq += 1;
                        ls.sent += 1;
                        let mut payload = vp8_payload(
                            i == 0,
                            key,
                            ls.pid,
                            (ls.tl0, ls.keyidx),
                            (tid, sync),
                            p.id,
                            l as u8,
                        );
                        payload.resize(LAYER_BYTES[l], 0);
                        packets.push((
                            RtpIn {
                                track: TrackId::new(p.id, Source::Camera),
                                layer: LayerId(l as u8),
                                seq: ls.seq,
                                timestamp: ts,
                                marker: i + 1 == n,
                                audio_level: None,
                                voice_activity: None,
                                payload: Arc::from(payload),
                            },
                            i == 0 && key,
                            l as u8,
                        ));
                    }
                }
            }
        }
        for (pkt, is_key, layer) in &packets {
            let forwards = self.router.handle_rtp(pkt, now).to_vec();
            self.forwards += forwards.len() as u64;
            for f in forwards {
                assert_ne!(f.subscriber, pkt.track.endpoint, "own track sent back");
                let sub = self
                    .subs
                    .get_mut(&f.subscriber)
                    .expect("forward to a subscriber");
                let kind = sub.kinds[usize::from(f.slot.0)];
                let log = &mut sub.slots[usize::from(f.slot.0)];
                let at = (f.subscriber, f.slot, self.ms);
                assert_eq!(
                    log.track,
                    Some(pkt.track),
                    "{at:?}: got {} in a slot told to carry {:?}",
                    pkt.track,
                    log.track
                );
                assert!(!log.paused, "{at:?}: media in a paused slot");
                if let Some(last) = log.last_seq {
                    assert_eq!(f.seq, last + 1, "{at:?}: sequence gap or repeat");
                }
                if let Some(last) = log.last_ts {
                    assert!(
                        f.timestamp.wrapping_sub(last) < u32::MAX / 2,
                        "{at:?}: timestamp went back"
                    );
                }
                if kind != SlotKind::Audio {
                    if log.expect_keyframe {
                        assert!(*is_key, "{at:?}: video started without a keyframe");
                        log.expect_keyframe = false;
                    }
                    if log.last_layer.is_some_and(|l| l != *layer) {
                        assert!(*is_key, "{at:?}: layer switched outside a keyframe");
                        log.layer_switches += 1;
                    }
                    let vp8 = f.vp8.expect("VP8 fields for a VP8 packet");
                    let pid = vp8.picture_id.expect("a picture id");
                    let start = pkt.payload[0] & 0x10 != 0;
                    // The router rewrites picture id, TL0PICIDX and KEYIDX (`f.vp8`, what
                    // the server writes into the packet); TID and Y pass through as sent.
                    let tid = pkt.payload[5] >> 6;
                    if start {
                        let t = pkt.payload[5];
                        log.frames.push((tid, t & 0x20 != 0, *is_key));
                    }
                    if let Some(last) = log.last_pid {
                        let step = pid.wrapping_sub(last) & 0x7fff;
                        let want = u16::from(start);
                        assert_eq!(step, want, "{at:?}: picture id {last} -> {pid}");
                    }
                    log.last_pid = Some(pid);
                    // The router keeps the source's TL0PICIDX and KEYIDX steps and, at a
                    // switch (always at a keyframe, of layer 0), continues one up from
                    // what it sent last; leaving frames of upper layers out moves neither.
                    // The cameras here step both as RFC 7741 says, so the receiver must
                    // see: TL0PICIDX one up at each frame of layer 0, KEYIDX one up at
                    // each keyframe, both the same at every other frame and packet.
                    let tl0 = vp8.tl0picidx.expect("a TL0PICIDX");
                    if let Some(last) = log.last_tl0 {
                        let want = u8::from(start && tid == 0);
                        assert_eq!(
                            tl0.wrapping_sub(last),
                            want,
                            "{at:?}: TL0PICIDX {last} -> {tl0} at a packet of layer {tid} \
                             (frame start: {start})"
                        );
                    }
                    log.last_tl0 = Some(tl0);
                    let keyidx = vp8.keyidx.expect("a KEYIDX");
                    if let Some(last) = log.last_keyidx {
                        let want = u8::from(start && *is_key);
                        assert_eq!(
                            keyidx.wrapping_sub(last) & 0x1f,
                            want,
                            "{at:?}: KEYIDX {last} -> {keyidx} (keyframe start: {})",
                            start && *is_key
                        );
                    }
                    log.last_keyidx = Some(keyidx);
                    log.last_layer = Some(*layer);
                    log.per_layer[usize::from(*layer)] += 1;
                }
                log.last_seq = Some(f.seq);
                log.last_ts = Some(f.timestamp);
                log.packets += 1;
            }
        }
        if self.router.poll_timeout().is_some_and(|t| t <= now) {
            self.router.handle_timeout(now);
        }
        self.drain();
    }

    /// Applies what the router asked for.
    pub fn drain(&mut self) {
        while let Some(out) = self.router.poll_output() {
            match out {
                RouterOutput::RequestKeyframe {
                    track,
                    layer,
                    local,
                } => {
                    assert!(local);
                    *self.keyframe_requests.entry((track, layer.0)).or_default() += 1;
                    if let Some(p) = self.pubs.get_mut(&track.endpoint) {
                        p.layer[usize::from(layer.0)].keyframe_due = true;
                    }
                }
                RouterOutput::SlotChanged {
                    subscriber,
                    slot,
                    track,
                    paused,
                } => {
                    let Some(sub) = self.subs.get_mut(&subscriber) else {
                        panic!("slot change for unknown subscriber {subscriber}");
                    };
                    let kind = sub.kinds[usize::from(slot.0)];
                    let log = &mut sub.slots[usize::from(slot.0)];
                    if log.track != track || (log.paused && !paused) {
                        log.expect_keyframe = kind != SlotKind::Audio && track.is_some();
                        log.last_layer = None;
                    }
                    log.track = track;
                    log.paused = paused;
                }
                RouterOutput::SendLayers {
                    track,
                    layers,
                    count,
                } => {
                    let p = self.pubs.get_mut(&track.endpoint).expect("a publisher");
                    assert_eq!(count, p.layers);
                    for l in 0..usize::from(p.layers) {
                        let on = layers.contains(LayerId(l as u8));
                        let ls = &mut p.layer[l];
                        if on && !ls.active {
                            // A browser starts a resumed layer with a keyframe.
                            ls.keyframe_due = true;
                        }
                        ls.active = on;
                    }
                }
                RouterOutput::RemoteDemand { .. } => panic!("every track is local here"),
                RouterOutput::ActiveSpeaker { endpoint } => {
                    self.active_speaker = endpoint;
                    self.speaker_changes += 1;
                }
                RouterOutput::SpeakingChanged { .. } => {}
                RouterOutput::DesiredBitrate {
                    subscriber, bps, ..
                } => {
                    if let Some(s) = self.subs.get_mut(&subscriber) {
                        s.desired = Some(bps);
                    }
                }
            }
        }
    }

    /// The layers a publisher sends now.
    pub fn sending(&self, id: EndpointId) -> LayerSet {
        let mut s = LayerSet::EMPTY;
        if let Some(p) = self.pubs.get(&id) {
            for l in 0..p.layers {
                if p.layer[usize::from(l)].active {
                    s.insert(LayerId(l));
                }
            }
        }
        s
    }

    pub fn slot(&self, sub: EndpointId, slot: u16) -> &SlotLog {
        &self.subs[&sub].slots[usize::from(slot)]
    }

    pub fn layers_of(&self, sub: EndpointId, slot: u16) -> (Option<LayerId>, Option<LayerId>) {
        self.router
            .slot_layers(sub, SlotId(slot))
            .expect("a slot of a subscriber")
    }
}

/// A VP8 payload: descriptor with a 15-bit picture id, TL0PICIDX, TID and KEYIDX; a frame
/// header (with the 9d 01 2a start code and a size on keyframes); then the sender and
/// layer. Browsers leave KEYIDX out; other encoders send it, and the router rewrites it.
pub fn vp8_payload(
    start: bool,
    key: bool,
    pid: u16,
    (tl0, keyidx): (u8, u8),
    (tid, sync): (u8, bool),
    sender: EndpointId,
    layer: u8,
) -> Vec<u8> {
    let mut p = vec![
        0x80 | if start { 0x10 } else { 0 },
        0xf0,
        0x80 | (pid >> 8) as u8,
        pid as u8,
        tl0,
        (tid << 6) | if sync { 0x20 } else { 0 } | (keyidx & 0x1f),
    ];
    if start {
        p.extend_from_slice(&[if key { 0x10 } else { 0x11 }, 0x02, 0x00]);
        if key {
            let h: u16 = 180 << layer;
            p.extend_from_slice(&[0x9d, 0x01, 0x2a]);
            p.extend_from_slice(&(h * 16 / 9).to_le_bytes());
            p.extend_from_slice(&h.to_le_bytes());
        }
    }
    p.extend_from_slice(&(sender.0 as u32).to_be_bytes());
    p.push(layer);
    p
}

/// The slots of a browser client: 3 audio, `cameras` camera, 1 screen.
pub fn browser_slots(cameras: usize) -> Vec<SlotKind> {
    let mut s = vec![SlotKind::Audio; 3];
    s.extend(std::iter::repeat_n(SlotKind::Camera, cameras));
    s.push(SlotKind::Screen);
    s
}
