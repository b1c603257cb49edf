//! The router: which subscriber receives which packet, with which numbers.
//!
//! One [`Router`] serves one room on one media worker. It knows every track published in
//! the room (local or on other workers) and the subscribers connected to *this* worker,
//! each with a fixed list of receive slots. It maps tracks into slots, decides per packet
//! which slots forward it, and rewrites sequence numbers and timestamps so that each slot
//! is one continuous RTP stream whatever source it carries.
//!
//! Slot policy (the seam for layouts and last-N):
//! - camera slots carry other participants' cameras in join order;
//! - screen slots carry screen shares, the most recent first;
//! - audio slots carry the microphones that spoke most recently (everyone's, while there
//!   are at least as many slots as microphones).
//!
//! Video slots switch source or simulcast layer only at a keyframe of the new source, which
//! the router asks for through [`RouterOutput::RequestKeyframe`], coalesced per track and
//! layer (see [`crate::keyframe`]).
//!
//! The per-packet path, [`Router::handle_rtp`], allocates nothing: forwarding decisions go
//! into a buffer the router reuses, and the payload is shared, never copied.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::codec::Codec;
use crate::id::{EndpointId, LayerId, MediaKind, SlotId, SlotKind, Source, TrackId};
use crate::keyframe::KeyframeGate;
use crate::rewrite::Rewriter;
use crate::slab::Slab;
use crate::speaker::{SpeakerConfig, VoiceActivity};

/// Tunables of a [`Router`].
#[derive(Debug, Clone, Copy)]
pub struct RouterConfig {
    /// At most one keyframe request per track layer in this interval; the requests in
    /// between are merged into one. 250 ms means a burst of joiners costs a publisher at
    /// most four keyframes a second, and a new subscriber waits at most that much extra.
    pub keyframe_min_interval: Duration,
    /// A slot still waiting for a keyframe this long after the last request asks again
    /// (the request or the keyframe may have been lost).
    pub keyframe_retry: Duration,
    /// A simulcast layer with no packet for this long counts as stopped, and slots showing
    /// it move to a layer that still flows. Matches str0m's default pause threshold.
    pub layer_timeout: Duration,
    /// How often the router re-evaluates speakers, audio slots and layers.
    pub tick: Duration,
    pub speaker: SpeakerConfig,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            keyframe_min_interval: Duration::from_millis(250),
            keyframe_retry: Duration::from_millis(1000),
            layer_timeout: Duration::from_millis(1500),
            tick: Duration::from_millis(100),
            speaker: SpeakerConfig::default(),
        }
    }
}

/// A track as the router needs to know it.
#[derive(Debug, Clone, Copy)]
pub struct TrackInfo {
    pub codec: Codec,
    /// Whether the publisher is connected to this worker (keyframe requests then go to its
    /// connection directly, otherwise to the worker that has it).
    pub local: bool,
}

/// One received RTP packet of a published track.
#[derive(Debug, Clone)]
pub struct RtpIn {
    pub track: TrackId,
    pub layer: LayerId,
    /// The publisher's extended (rollover-free) sequence number.
    pub seq: u64,
    pub timestamp: u32,
    pub marker: bool,
    /// Audio level in -dBov (0 loudest, 127 silence), from the header extension.
    pub audio_level: Option<u8>,
    /// Voice-activity flag, from the same extension.
    pub voice_activity: Option<bool>,
    /// The RTP payload, shared by every subscriber that receives it.
    pub payload: Arc<[u8]>,
}

/// Forward the packet just handled to `subscriber`'s `slot` with these numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub subscriber: EndpointId,
    pub slot: SlotId,
    pub seq: u64,
    pub timestamp: u32,
    pub marker: bool,
}

/// Things the router wants done, drained with [`Router::poll_output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterOutput {
    /// Ask the publisher of `track` for a keyframe on `layer`. `local` says whether the
    /// publisher is connected to this worker.
    RequestKeyframe {
        track: TrackId,
        layer: LayerId,
        local: bool,
    },
    /// `subscriber`'s `slot` now carries `track` (or nothing).
    SlotChanged {
        subscriber: EndpointId,
        slot: SlotId,
        track: Option<TrackId>,
    },
    /// The set of speaking endpoints changed; this is all of them, sorted.
    SpeakingChanged { speaking: Vec<EndpointId> },
}

/// Why the router refused a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterError {
    TrackExists(TrackId),
    SubscriberExists(EndpointId),
    TooManySlots { slots: usize, limit: usize },
}

impl std::fmt::Display for RouterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouterError::TrackExists(t) => write!(f, "track {t} is already published"),
            RouterError::SubscriberExists(e) => write!(f, "subscriber {e} is already added"),
            RouterError::TooManySlots { slots, limit } => {
                write!(
                    f,
                    "{slots} receive slots asked for, at most {limit} allowed"
                )
            }
        }
    }
}

impl std::error::Error for RouterError {}

#[derive(Debug)]
struct Track {
    id: TrackId,
    info: TrackInfo,
    /// Publication order within the room, for stable slot assignment.
    order: u64,
    /// The slots this track is mapped into: (subscriber index, slot).
    sinks: Vec<(usize, SlotId)>,
    layers: [Layer; LayerId::MAX],
    /// The layer video slots of this track aim for.
    best_layer: LayerId,
    voice: VoiceActivity,
}

#[derive(Debug, Default)]
struct Layer {
    last_packet: Option<Instant>,
    paused: bool,
    gate: KeyframeGate,
    /// Some slot waits for a keyframe on this layer.
    wanted: bool,
}

#[derive(Debug)]
struct Subscriber {
    id: EndpointId,
    slots: Vec<Slot>,
}

#[derive(Debug)]
struct Slot {
    kind: SlotKind,
    track: Option<usize>,
    /// The layer being forwarded, once a keyframe of it arrived.
    current: Option<LayerId>,
    /// The layer to move to at its next keyframe.
    target: LayerId,
    rewriter: Rewriter,
}

/// The most receive slots one subscriber may have.
pub const MAX_SLOTS: usize = 256;

/// Forwarding decisions for one room on one worker. See the module docs.
#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    tracks: Slab<Track>,
    track_index: FxHashMap<TrackId, usize>,
    subscribers: Slab<Subscriber>,
    subscriber_index: FxHashMap<EndpointId, usize>,
    forwards: Vec<Forward>,
    outputs: VecDeque<RouterOutput>,
    next_order: u64,
    next_tick: Option<Instant>,
    /// Earliest time a held keyframe request is due, if any.
    gate_deadline: Option<Instant>,
    speaking: Vec<EndpointId>,
    /// Audio tracks, most recently loud first: the order audio slots are filled in.
    audio_rank: Vec<usize>,
    scratch: Vec<usize>,
}

impl Router {
    pub fn new(config: RouterConfig) -> Self {
        Router {
            config,
            tracks: Slab::default(),
            track_index: FxHashMap::default(),
            subscribers: Slab::default(),
            subscriber_index: FxHashMap::default(),
            forwards: Vec::new(),
            outputs: VecDeque::new(),
            next_order: 0,
            next_tick: None,
            gate_deadline: None,
            speaking: Vec::new(),
            audio_rank: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Whether the router has neither tracks nor subscribers.
    pub fn is_empty(&self) -> bool {
        self.track_index.is_empty() && self.subscriber_index.is_empty()
    }

    pub fn subscriber_count(&self) -> usize {
        self.subscriber_index.len()
    }

    pub fn track_count(&self) -> usize {
        self.track_index.len()
    }

    /// A track was published in the room.
    pub fn add_track(
        &mut self,
        id: TrackId,
        info: TrackInfo,
        now: Instant,
    ) -> Result<(), RouterError> {
        if self.track_index.contains_key(&id) {
            return Err(RouterError::TrackExists(id));
        }
        let order = self.next_order;
        self.next_order += 1;
        let ix = self.tracks.insert(Track {
            id,
            info,
            order,
            sinks: Vec::new(),
            layers: Default::default(),
            best_layer: LayerId(0),
            voice: VoiceActivity::default(),
        });
        self.track_index.insert(id, ix);
        if id.source == Source::Microphone {
            // A new microphone starts at the end of the ranking; it moves up when it speaks.
            self.audio_rank.push(ix);
        }
        self.schedule_tick(now);
        self.reconcile_all(slot_kind_of(id.source), now);
        Ok(())
    }

    /// A track is no longer published. Slots that carried it get another track or none.
    pub fn remove_track(&mut self, id: TrackId, now: Instant) {
        let Some(ix) = self.track_index.remove(&id) else {
            return;
        };
        let Some(track) = self.tracks.remove(ix) else {
            return;
        };
        self.audio_rank.retain(|&t| t != ix);
        for (si, slot_id) in track.sinks {
            if let Some(sub) = self.subscribers.get_mut(si) {
                let slot = &mut sub.slots[usize::from(slot_id.0)];
                slot.track = None;
                slot.current = None;
                slot.rewriter.switch_source();
                self.outputs.push_back(RouterOutput::SlotChanged {
                    subscriber: sub.id,
                    slot: slot_id,
                    track: None,
                });
            }
        }
        self.reconcile_all(slot_kind_of(id.source), now);
    }

    /// A subscriber with these receive slots connected to this worker.
    pub fn add_subscriber(
        &mut self,
        id: EndpointId,
        slots: &[SlotKind],
        now: Instant,
    ) -> Result<(), RouterError> {
        if self.subscriber_index.contains_key(&id) {
            return Err(RouterError::SubscriberExists(id));
        }
        if slots.len() > MAX_SLOTS {
            return Err(RouterError::TooManySlots {
                slots: slots.len(),
                limit: MAX_SLOTS,
            });
        }
        let slots = slots
            .iter()
            .map(|&kind| Slot {
                kind,
                track: None,
                current: None,
                target: LayerId(0),
                rewriter: Rewriter::new(match kind {
                    SlotKind::Audio => Codec::Opus.clock_rate(),
                    SlotKind::Camera | SlotKind::Screen => Codec::Vp8.clock_rate(),
                }),
            })
            .collect();
        let si = self.subscribers.insert(Subscriber { id, slots });
        self.subscriber_index.insert(id, si);
        self.schedule_tick(now);
        for kind in [SlotKind::Audio, SlotKind::Camera, SlotKind::Screen] {
            self.reconcile(si, kind, now);
        }
        // Tell the subscriber about it and whoever is speaking.
        if !self.speaking.is_empty() {
            self.outputs.push_back(RouterOutput::SpeakingChanged {
                speaking: self.speaking.clone(),
            });
        }
        Ok(())
    }

    /// The subscriber disconnected from this worker.
    pub fn remove_subscriber(&mut self, id: EndpointId) {
        let Some(si) = self.subscriber_index.remove(&id) else {
            return;
        };
        let Some(sub) = self.subscribers.remove(si) else {
            return;
        };
        for (slot_ix, slot) in sub.slots.iter().enumerate() {
            if let Some(ti) = slot.track
                && let Some(track) = self.tracks.get_mut(ti)
            {
                let key = (si, SlotId(slot_ix as u16));
                track.sinks.retain(|s| *s != key);
            }
        }
    }

    /// Decides who receives `pkt`. The returned decisions are valid until the next call.
    pub fn handle_rtp(&mut self, pkt: &RtpIn, now: Instant) -> &[Forward] {
        self.forwards.clear();
        let Some(&ti) = self.track_index.get(&pkt.track) else {
            return &self.forwards;
        };
        let Some(track) = self.tracks.get_mut(ti) else {
            return &self.forwards;
        };
        let layer_ix = usize::from(pkt.layer.0);
        if layer_ix >= LayerId::MAX {
            return &self.forwards;
        }
        let kind = track.id.source.kind();
        let keyframe = kind == MediaKind::Video && track.info.codec.is_keyframe_start(&pkt.payload);
        {
            let layer = &mut track.layers[layer_ix];
            layer.last_packet = Some(now);
            if keyframe {
                layer.gate.handle_keyframe();
                layer.wanted = false;
            }
        }
        if kind == MediaKind::Audio {
            track.voice.handle_packet(
                pkt.audio_level,
                pkt.voice_activity,
                now,
                &self.config.speaker,
            );
        }
        for &(si, slot_id) in &track.sinks {
            let Some(sub) = self.subscribers.get_mut(si) else {
                continue;
            };
            let slot = &mut sub.slots[usize::from(slot_id.0)];
            let send = match kind {
                MediaKind::Audio => pkt.layer == LayerId(0),
                MediaKind::Video => {
                    if keyframe && pkt.layer == slot.target && slot.current != Some(pkt.layer) {
                        slot.current = Some(pkt.layer);
                        slot.rewriter.switch_source();
                        true
                    } else {
                        slot.current == Some(pkt.layer)
                    }
                }
            };
            if !send {
                continue;
            }
            if let Some((seq, timestamp)) = slot.rewriter.rewrite(pkt.seq, pkt.timestamp, now) {
                self.forwards.push(Forward {
                    subscriber: sub.id,
                    slot: slot_id,
                    seq,
                    timestamp,
                    marker: pkt.marker,
                });
            }
        }
        &self.forwards
    }

    /// A subscriber lost video on `slot` (it sent PLI or FIR): ask the source for a keyframe.
    pub fn handle_keyframe_request(&mut self, subscriber: EndpointId, slot: SlotId, now: Instant) {
        let Some(&si) = self.subscriber_index.get(&subscriber) else {
            return;
        };
        let Some(sub) = self.subscribers.get(si) else {
            return;
        };
        let Some(slot) = sub.slots.get(usize::from(slot.0)) else {
            return;
        };
        let Some(ti) = slot.track else {
            return;
        };
        let layer = slot.current.unwrap_or(slot.target);
        self.request_keyframe_ix(ti, layer, now);
    }

    /// Another worker asks for a keyframe of `track` on `layer` on behalf of its
    /// subscribers; requests from all workers are coalesced here.
    pub fn request_keyframe(&mut self, track: TrackId, layer: LayerId, now: Instant) {
        if let Some(&ti) = self.track_index.get(&track) {
            self.request_keyframe_ix(ti, layer, now);
        }
    }

    /// The publisher paused (or resumed) sending `layer` of `track`.
    pub fn handle_layer_paused(&mut self, track: TrackId, layer: LayerId, paused: bool) {
        let Some(&ti) = self.track_index.get(&track) else {
            return;
        };
        if let Some(l) = self
            .tracks
            .get_mut(ti)
            .and_then(|t| t.layers.get_mut(usize::from(layer.0)))
        {
            l.paused = paused;
        }
    }

    /// When [`Router::handle_timeout`] wants to be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.next_tick, self.gate_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time passed: release held keyframe requests, re-rank speakers, move layers.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.gate_deadline.is_some_and(|d| d <= now) {
            self.release_gates(now);
        }
        if self.next_tick.is_some_and(|t| t <= now) {
            self.tick(now);
            self.next_tick = if self.is_empty() {
                None
            } else {
                Some(now + self.config.tick)
            };
        }
    }

    /// The next thing the router wants done.
    pub fn poll_output(&mut self) -> Option<RouterOutput> {
        self.outputs.pop_front()
    }

    /// The track currently mapped into a subscriber's slot.
    pub fn slot_track(&self, subscriber: EndpointId, slot: SlotId) -> Option<TrackId> {
        let si = *self.subscriber_index.get(&subscriber)?;
        let ti = self
            .subscribers
            .get(si)?
            .slots
            .get(usize::from(slot.0))?
            .track?;
        Some(self.tracks.get(ti)?.id)
    }

    fn schedule_tick(&mut self, now: Instant) {
        if self.next_tick.is_none() {
            self.next_tick = Some(now + self.config.tick);
        }
    }

    fn request_keyframe_ix(&mut self, ti: usize, layer: LayerId, now: Instant) {
        let interval = self.config.keyframe_min_interval;
        let Some(track) = self.tracks.get_mut(ti) else {
            return;
        };
        if track.id.source.kind() != MediaKind::Video {
            return;
        }
        let Some(l) = track.layers.get_mut(usize::from(layer.0)) else {
            return;
        };
        l.wanted = true;
        if l.gate.request(now, interval) {
            self.outputs.push_back(RouterOutput::RequestKeyframe {
                track: track.id,
                layer,
                local: track.info.local,
            });
        } else if let Some(due) = l.gate.poll_timeout(interval) {
            self.gate_deadline = Some(self.gate_deadline.map_or(due, |d| d.min(due)));
        }
    }

    fn release_gates(&mut self, now: Instant) {
        let interval = self.config.keyframe_min_interval;
        let mut next: Option<Instant> = None;
        for (_, track) in self.tracks.iter_mut() {
            for (li, l) in track.layers.iter_mut().enumerate() {
                if l.gate.handle_timeout(now, interval) {
                    self.outputs.push_back(RouterOutput::RequestKeyframe {
                        track: track.id,
                        layer: LayerId(li as u8),
                        local: track.info.local,
                    });
                }
                if let Some(due) = l.gate.poll_timeout(interval) {
                    next = Some(next.map_or(due, |d| d.min(due)));
                }
            }
        }
        self.gate_deadline = next;
    }

    fn tick(&mut self, now: Instant) {
        self.update_speaking(now);
        self.update_audio_rank(now);
        self.update_layers(now);
    }

    fn update_speaking(&mut self, now: Instant) {
        let config = self.config.speaker;
        let mut speaking: Vec<EndpointId> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.id.source == Source::Microphone && t.voice.is_speaking(now, &config))
            .map(|(_, t)| t.id.endpoint)
            .collect();
        speaking.sort_unstable();
        if speaking != self.speaking {
            self.speaking = speaking.clone();
            self.outputs
                .push_back(RouterOutput::SpeakingChanged { speaking });
        }
    }

    fn update_audio_rank(&mut self, now: Instant) {
        let mut rank = std::mem::take(&mut self.audio_rank);
        let before = rank.clone();
        let tracks = &self.tracks;
        // Most recently loud first; never-loud tracks keep publication order at the end.
        rank.sort_by_key(|&ti| {
            let t = tracks.get(ti);
            let last = t.and_then(|t| t.voice.last_loud());
            let order = t.map_or(u64::MAX, |t| t.order);
            (std::cmp::Reverse(last), order)
        });
        let changed = rank != before;
        self.audio_rank = rank;
        if changed {
            self.reconcile_all(SlotKind::Audio, now);
        }
    }

    fn update_layers(&mut self, now: Instant) {
        let timeout = self.config.layer_timeout;
        let mut requests: Vec<(usize, LayerId)> = Vec::new();
        for (ti, track) in self.tracks.iter_mut() {
            if track.id.source.kind() != MediaKind::Video {
                continue;
            }
            let active = |l: &Layer| {
                !l.paused
                    && l.last_packet
                        .is_some_and(|at| now.saturating_duration_since(at) < timeout)
            };
            let Some(best) = (0..LayerId::MAX).rev().find(|&i| active(&track.layers[i])) else {
                continue;
            };
            let best = LayerId(best as u8);
            if best != track.best_layer {
                track.best_layer = best;
            }
            let mut need = false;
            for &(si, slot_id) in &track.sinks {
                if let Some(sub) = self.subscribers.get_mut(si) {
                    let slot = &mut sub.slots[usize::from(slot_id.0)];
                    slot.target = best;
                    if slot.current != Some(best) {
                        need = true;
                    }
                }
            }
            let layer = &track.layers[usize::from(best.0)];
            let stale = layer
                .gate
                .last_sent()
                .is_none_or(|at| now.saturating_duration_since(at) >= self.config.keyframe_retry);
            if need && (!layer.wanted || stale) {
                requests.push((ti, best));
            }
        }
        for (ti, layer) in requests {
            self.request_keyframe_ix(ti, layer, now);
        }
    }

    /// Re-map slots of `kind` for every subscriber.
    fn reconcile_all(&mut self, kind: SlotKind, now: Instant) {
        let subs: Vec<usize> = self.subscribers.iter().map(|(i, _)| i).collect();
        for si in subs {
            self.reconcile(si, kind, now);
        }
    }

    /// Candidate tracks for slots of `kind`, in the order they should get slots.
    fn candidates(&self, kind: SlotKind, out: &mut Vec<usize>) {
        out.clear();
        match kind {
            SlotKind::Audio => out.extend(self.audio_rank.iter().copied()),
            SlotKind::Camera | SlotKind::Screen => {
                let source = kind.source();
                out.extend(
                    self.tracks
                        .iter()
                        .filter(|(_, t)| t.id.source == source)
                        .map(|(i, _)| i),
                );
                let tracks = &self.tracks;
                let order = |i: &usize| tracks.get(*i).map_or(u64::MAX, |t| t.order);
                if kind == SlotKind::Camera {
                    out.sort_by_key(order);
                } else {
                    // Most recent share first.
                    out.sort_by_key(|i| std::cmp::Reverse(order(i)));
                }
            }
        }
    }

    /// Map the best candidate tracks into `si`'s slots of `kind`, moving as little as
    /// possible: a slot keeps its track while that track is still wanted.
    fn reconcile(&mut self, si: usize, kind: SlotKind, now: Instant) {
        let mut candidates = std::mem::take(&mut self.scratch);
        self.candidates(kind, &mut candidates);
        let Some(sub) = self.subscribers.get(si) else {
            self.scratch = candidates;
            return;
        };
        let own = sub.id;
        let capacity = sub.slots.iter().filter(|s| s.kind == kind).count();
        candidates.retain(|&ti| self.tracks.get(ti).is_some_and(|t| t.id.endpoint != own));
        candidates.truncate(capacity);

        // Free slots whose track is no longer wanted.
        let mut changed: Vec<SlotId> = Vec::new();
        let sub = self
            .subscribers
            .get_mut(si)
            .expect("subscriber looked up above");
        for (i, slot) in sub.slots.iter_mut().enumerate() {
            if slot.kind != kind {
                continue;
            }
            if let Some(ti) = slot.track
                && !candidates.contains(&ti)
            {
                slot.track = None;
                slot.current = None;
                slot.rewriter.switch_source();
                if let Some(track) = self.tracks.get_mut(ti) {
                    track.sinks.retain(|s| *s != (si, SlotId(i as u16)));
                }
                changed.push(SlotId(i as u16));
            }
        }
        // Give wanted tracks without a slot the free slots, lowest first.
        let mut keyframes: Vec<(usize, LayerId)> = Vec::new();
        for &ti in &candidates {
            if sub.slots.iter().any(|s| s.track == Some(ti)) {
                continue;
            }
            let Some(i) = sub
                .slots
                .iter()
                .position(|s| s.kind == kind && s.track.is_none())
            else {
                break;
            };
            let Some(track) = self.tracks.get_mut(ti) else {
                continue;
            };
            let slot = &mut sub.slots[i];
            slot.track = Some(ti);
            slot.rewriter.switch_source();
            slot.target = track.best_layer;
            if kind == SlotKind::Audio {
                slot.current = Some(LayerId(0));
            } else {
                slot.current = None;
                keyframes.push((ti, track.best_layer));
            }
            track.sinks.push((si, SlotId(i as u16)));
            if !changed.contains(&SlotId(i as u16)) {
                changed.push(SlotId(i as u16));
            }
        }
        changed.sort_unstable();
        for slot in changed {
            let track = sub.slots[usize::from(slot.0)]
                .track
                .and_then(|ti| self.tracks.get(ti))
                .map(|t| t.id);
            self.outputs.push_back(RouterOutput::SlotChanged {
                subscriber: sub.id,
                slot,
                track,
            });
        }
        self.scratch = candidates;
        for (ti, layer) in keyframes {
            self.request_keyframe_ix(ti, layer, now);
        }
    }
}

fn slot_kind_of(source: Source) -> SlotKind {
    match source {
        Source::Microphone => SlotKind::Audio,
        Source::Camera => SlotKind::Camera,
        Source::Screen => SlotKind::Screen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VP8_KEY: [u8; 4] = [0x10, 0x00, 0x9d, 0x01];
    const VP8_DELTA: [u8; 3] = [0x10, 0x01, 0x00];

    fn e(n: u64) -> EndpointId {
        EndpointId(n)
    }

    fn cam(n: u64) -> TrackId {
        TrackId::new(e(n), Source::Camera)
    }

    fn mic(n: u64) -> TrackId {
        TrackId::new(e(n), Source::Microphone)
    }

    fn video_info() -> TrackInfo {
        TrackInfo {
            codec: Codec::Vp8,
            local: true,
        }
    }

    fn audio_info() -> TrackInfo {
        TrackInfo {
            codec: Codec::Opus,
            local: true,
        }
    }

    fn pkt(track: TrackId, seq: u64, ts: u32, payload: &[u8]) -> RtpIn {
        RtpIn {
            track,
            layer: LayerId(0),
            seq,
            timestamp: ts,
            marker: false,
            audio_level: None,
            voice_activity: None,
            payload: Arc::from(payload),
        }
    }

    fn drain(r: &mut Router) -> Vec<RouterOutput> {
        std::iter::from_fn(|| r.poll_output()).collect()
    }

    #[test]
    fn forwards_audio_to_everyone_else_with_shared_payload() {
        let t0 = Instant::now();
        let mut r = Router::new(RouterConfig::default());
        for n in 1..=3 {
            r.add_track(mic(n), audio_info(), t0).unwrap();
            r.add_subscriber(e(n), &[SlotKind::Audio, SlotKind::Audio], t0)
                .unwrap();
        }
        let p = pkt(mic(1), 100, 960, &[1, 2, 3]);
        let fw = r.handle_rtp(&p, t0).to_vec();
        let mut subs: Vec<_> = fw.iter().map(|f| f.subscriber).collect();
        subs.sort();
        assert_eq!(subs, vec![e(2), e(3)]);
        assert!(fw.iter().all(|f| f.seq == 100 && f.timestamp == 960));
        assert_eq!(r.slot_track(e(2), fw[0].slot), Some(mic(1)));
    }

    #[test]
    fn video_waits_for_keyframe_and_requests_one() {
        let t0 = Instant::now();
        let mut r = Router::new(RouterConfig::default());
        r.add_track(cam(1), video_info(), t0).unwrap();
        drain(&mut r);
        r.add_subscriber(e(2), &[SlotKind::Camera], t0).unwrap();
        let out = drain(&mut r);
        assert!(out.contains(&RouterOutput::SlotChanged {
            subscriber: e(2),
            slot: SlotId(0),
            track: Some(cam(1))
        }));
        assert!(out.contains(&RouterOutput::RequestKeyframe {
            track: cam(1),
            layer: LayerId(0),
            local: true
        }));
        assert!(r.handle_rtp(&pkt(cam(1), 10, 0, &VP8_DELTA), t0).is_empty());
        assert_eq!(r.handle_rtp(&pkt(cam(1), 11, 0, &VP8_KEY), t0).len(), 1);
        assert_eq!(
            r.handle_rtp(&pkt(cam(1), 12, 3000, &VP8_DELTA), t0).len(),
            1
        );
    }

    #[test]
    fn keyframe_requests_from_many_joiners_are_coalesced() {
        let t0 = Instant::now();
        let mut r = Router::new(RouterConfig::default());
        r.add_track(cam(1), video_info(), t0).unwrap();
        let mut requests = 0;
        for n in 2..40 {
            let now = t0 + Duration::from_millis(n * 5);
            r.add_subscriber(e(n), &[SlotKind::Camera], now).unwrap();
            r.handle_keyframe_request(e(n), SlotId(0), now);
            r.handle_timeout(now);
            requests += drain(&mut r)
                .iter()
                .filter(|o| matches!(o, RouterOutput::RequestKeyframe { .. }))
                .count();
        }
        // 38 joiners within 190 ms: one request at once, the rest held.
        assert_eq!(requests, 1);
        let later = t0 + Duration::from_millis(260);
        r.handle_timeout(later);
        let held = drain(&mut r)
            .iter()
            .filter(|o| matches!(o, RouterOutput::RequestKeyframe { .. }))
            .count();
        assert_eq!(held, 1);
    }

    #[test]
    fn removed_track_frees_its_slot_for_the_next_one() {
        let t0 = Instant::now();
        let mut r = Router::new(RouterConfig::default());
        for n in 1..=3 {
            r.add_track(cam(n), video_info(), t0).unwrap();
        }
        r.add_subscriber(e(9), &[SlotKind::Camera, SlotKind::Camera], t0)
            .unwrap();
        assert_eq!(r.slot_track(e(9), SlotId(0)), Some(cam(1)));
        assert_eq!(r.slot_track(e(9), SlotId(1)), Some(cam(2)));
        // Seed a continuous stream on slot 0.
        r.handle_rtp(&pkt(cam(1), 500, 9000, &VP8_KEY), t0);
        drain(&mut r);
        r.remove_track(cam(1), t0);
        assert_eq!(r.slot_track(e(9), SlotId(0)), Some(cam(3)));
        assert_eq!(r.slot_track(e(9), SlotId(1)), Some(cam(2)));
        let out = drain(&mut r);
        assert!(out.contains(&RouterOutput::SlotChanged {
            subscriber: e(9),
            slot: SlotId(0),
            track: Some(cam(3))
        }));
        // cam(3) continues slot 0's numbering at its first keyframe.
        let fw = r
            .handle_rtp(
                &pkt(cam(3), 7, 1, &VP8_KEY),
                t0 + Duration::from_millis(100),
            )
            .to_vec();
        assert_eq!(fw.len(), 1);
        assert_eq!(fw[0].slot, SlotId(0));
        assert_eq!(fw[0].seq, 501);
        assert_eq!(fw[0].timestamp, 9000 + 9000);
    }

    #[test]
    fn loudest_microphones_take_the_audio_slots() {
        let t0 = Instant::now();
        let mut r = Router::new(RouterConfig::default());
        for n in 1..=4 {
            r.add_track(mic(n), audio_info(), t0).unwrap();
        }
        r.add_subscriber(e(9), &[SlotKind::Audio, SlotKind::Audio], t0)
            .unwrap();
        assert_eq!(r.slot_track(e(9), SlotId(0)), Some(mic(1)));
        assert_eq!(r.slot_track(e(9), SlotId(1)), Some(mic(2)));
        // Participant 4 speaks.
        let mut p = pkt(mic(4), 1, 0, &[0]);
        p.audio_level = Some(20);
        let now = t0 + Duration::from_millis(50);
        assert!(r.handle_rtp(&p, now).is_empty());
        drain(&mut r);
        r.handle_timeout(t0 + Duration::from_millis(100));
        let out = drain(&mut r);
        assert!(out.contains(&RouterOutput::SpeakingChanged {
            speaking: vec![e(4)]
        }));
        // Participant 4 took the slot of the lowest-ranked track (2), 1 kept its slot.
        assert_eq!(r.slot_track(e(9), SlotId(0)), Some(mic(1)));
        assert_eq!(r.slot_track(e(9), SlotId(1)), Some(mic(4)));
        // Later nobody speaks any more.
        r.handle_timeout(t0 + Duration::from_millis(700));
        let out = drain(&mut r);
        assert!(out.contains(&RouterOutput::SpeakingChanged { speaking: vec![] }));
    }

    #[test]
    fn simulcast_moves_up_at_a_keyframe_of_the_better_layer() {
        let t0 = Instant::now();
        let mut r = Router::new(RouterConfig::default());
        r.add_track(cam(1), video_info(), t0).unwrap();
        r.add_subscriber(e(2), &[SlotKind::Camera], t0).unwrap();
        drain(&mut r);
        let mut low = pkt(cam(1), 100, 0, &VP8_KEY);
        let mut high = pkt(cam(1), 5000, 0, &VP8_DELTA);
        high.layer = LayerId(2);
        // Both layers flow; the slot starts on the low layer's keyframe.
        assert_eq!(r.handle_rtp(&low, t0).len(), 1);
        assert!(r.handle_rtp(&high, t0).is_empty());
        // The tick notices layer 2 and asks for its keyframe.
        r.handle_timeout(t0 + Duration::from_millis(100));
        assert!(drain(&mut r).contains(&RouterOutput::RequestKeyframe {
            track: cam(1),
            layer: LayerId(2),
            local: true
        }));
        let t1 = t0 + Duration::from_millis(110);
        low.seq = 101;
        low.payload = Arc::from(&VP8_DELTA[..]);
        assert_eq!(r.handle_rtp(&low, t1)[0].seq, 101);
        high.seq = 5001;
        high.payload = Arc::from(&VP8_KEY[..]);
        let fw = r.handle_rtp(&high, t1).to_vec();
        assert_eq!(fw.len(), 1);
        assert_eq!(fw[0].seq, 102, "continues the slot's sequence");
        low.seq = 102;
        assert!(
            r.handle_rtp(&low, t1).is_empty(),
            "old layer no longer sent"
        );
    }

    #[test]
    fn unknown_tracks_and_layers_are_ignored() {
        let t0 = Instant::now();
        let mut r = Router::new(RouterConfig::default());
        assert!(r.handle_rtp(&pkt(cam(1), 1, 1, &VP8_KEY), t0).is_empty());
        r.add_track(cam(1), video_info(), t0).unwrap();
        let mut p = pkt(cam(1), 1, 1, &VP8_KEY);
        p.layer = LayerId(7);
        assert!(r.handle_rtp(&p, t0).is_empty());
        assert_eq!(
            r.add_track(cam(1), video_info(), t0),
            Err(RouterError::TrackExists(cam(1)))
        );
        r.handle_keyframe_request(e(5), SlotId(3), t0);
        r.request_keyframe(cam(8), LayerId(0), t0);
    }
}
