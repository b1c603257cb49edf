//! The router: which subscriber receives which packet, on which layer, with which numbers.
//!
//! One [`Router`] serves one room on one media worker. It knows every track published in
//! the room (local or on other workers) and the subscribers connected to *this* worker,
//! each with a fixed list of receive slots, a layout and a bandwidth estimate.
//!
//! What goes into a subscriber's slots:
//! - **camera slots** follow its layout ([`crate::layout`]): the cameras of its tiles, in
//!   order; without a layout, the active speaker and the most recent speakers;
//! - **screen slots** carry screen shares, the most recent first;
//! - **audio slots** carry the most active microphones of the room (last-N,
//!   [`crate::speaker::update_top`]), never the subscriber's own.
//!
//! Which layer each video slot gets: the tile's size gives a preferred layer; the
//! subscriber's estimate pays for layers in order of importance ([`crate::allocate`]).
//! A slot switches source or layer only at a keyframe of what it switches to, asked for
//! through a per-track, per-layer [`KeyframeGate`], and stays one continuous stream:
//! sequence numbers and timestamps ([`Rewriter`]) and VP8 picture ids ([`Vp8Rewriter`]).
//!
//! What nobody watches is paused at the sender: the router tracks which layers of each
//! track some slot uses, merges what other workers' routers need
//! ([`Router::handle_remote_demand`]), and tells the publisher's connection which layers
//! to send ([`RouterOutput::SendLayers`]), releasing a layer only after it has been
//! unwatched for a while so a speaker change does not switch encoders on and off.
//!
//! The per-packet path, [`Router::handle_rtp`], allocates nothing and touches only the
//! slots the track is mapped into. Everything else happens on a 100 ms tick.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::allocate::{self, AllocInput, AllocSlot};
use crate::bitrate::RateMeter;
use crate::codec::Codec;
use crate::id::{EndpointId, LayerId, LayerSet, MediaKind, SlotId, SlotKind, Source, TrackId};
use crate::keyframe::KeyframeGate;
use crate::layout::{LayoutSpec, TileSpec, View};
use crate::rewrite::Rewriter;
use crate::slab::Slab;
use crate::speaker::{self, Dominant, SpeakerConfig, VoiceActivity};
use crate::vp8::{Vp8Header, Vp8Out, Vp8Rewriter};

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
    /// A simulcast layer with no packet for this long counts as stopped. Matches str0m's
    /// default pause threshold.
    pub layer_timeout: Duration,
    /// How often the router re-evaluates speakers, slots, layers and pausing.
    pub tick: Duration,
    pub speaker: SpeakerConfig,
    /// A layer nobody has used for this long is paused at its publisher. Long enough that
    /// a speaker who pauses for breath does not stop and restart an encoder.
    pub pause_after: Duration,
    /// A layer some slot waits for, that sends nothing for this long (its publisher did
    /// not resume it, or its encoder dropped it), is left out of allocations for
    /// [`RouterConfig::layer_retry`].
    pub layer_start_timeout: Duration,
    pub layer_retry: Duration,
    /// After a subscriber's layers went down for bandwidth, none goes up for this long:
    /// an estimate that just fell needs time to show it recovered.
    pub upgrade_hold: Duration,
    /// An upgrade must fit the estimate with this factor to spare.
    pub up_margin: f64,
    /// While a subscriber's estimate falls short of what its layout would use, the router
    /// asks again this often for a probe toward it ([`RouterOutput::DesiredBitrate`] with
    /// `probe`); the gap doubles, up to [`RouterConfig::probe_every_max`], each time the
    /// estimate did not rise since the last ask, and starts again when it does.
    pub probe_every: Duration,
    pub probe_every_max: Duration,
    /// What a layer is assumed to cost before it was measured, lowest first, for tracks
    /// with three layers; tracks with two use the top entries.
    pub nominal_bps: [u64; 3],
    /// What a track without simulcast (a screen share, a plain camera) is assumed to cost
    /// before it was measured. Screen content at a sharp resolution and a low frame rate
    /// typically runs 0.3 to 1 Mbit/s; assuming more would keep a share paused for
    /// viewers with a modest estimate until it was measured, which a paused share never is.
    pub nominal_single_bps: u64,
    /// What a microphone is assumed to cost before it was measured.
    pub nominal_audio_bps: u64,
    /// Tile heights of the default layout (no layout from the client).
    pub default_large: u16,
    pub default_thumbnail: u16,
    /// The highest VP8 temporal layer a tile smaller than
    /// [`RouterConfig::full_rate_height`] gets, when its source sends temporal layers
    /// (browsers' VP8 simulcast sends three at 30 frames a second: 0 is 7.5, 1 is 15,
    /// 2 is all 30). 1 halves the packets thumbnails cost their viewers and the server.
    pub thumbnail_temporal_layer: u8,
    /// Tiles this tall or taller, the large tile and screen shares get every frame.
    pub full_rate_height: u16,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            keyframe_min_interval: Duration::from_millis(250),
            keyframe_retry: Duration::from_millis(1000),
            layer_timeout: Duration::from_millis(1500),
            tick: Duration::from_millis(100),
            speaker: SpeakerConfig::default(),
            pause_after: Duration::from_secs(3),
            layer_start_timeout: Duration::from_secs(3),
            layer_retry: Duration::from_secs(10),
            upgrade_hold: Duration::from_secs(4),
            up_margin: 1.15,
            probe_every: Duration::from_secs(1),
            probe_every_max: Duration::from_secs(16),
            nominal_bps: [150_000, 500_000, 1_500_000],
            nominal_single_bps: 600_000,
            nominal_audio_bps: 50_000,
            default_large: 720,
            default_thumbnail: 180,
            thumbnail_temporal_layer: 1,
            full_rate_height: 360,
        }
    }
}

/// A track as the router needs to know it.
#[derive(Debug, Clone, Copy)]
pub struct TrackInfo {
    pub codec: Codec,
    /// Whether the publisher is connected to this worker (keyframe requests and layer
    /// pausing then go to its connection directly, otherwise to the worker that has it).
    pub local: bool,
    /// Simulcast layers the publisher sends (1 without simulcast, at most 3).
    pub layers: u8,
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
    /// VP8 descriptor fields to write into the payload on the way out.
    pub vp8: Option<Vp8Out>,
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
    /// `subscriber`'s `slot` now carries `track` (or nothing); `paused` while the slot
    /// gets nothing of it for lack of bandwidth.
    SlotChanged {
        subscriber: EndpointId,
        slot: SlotId,
        track: Option<TrackId>,
        paused: bool,
    },
    /// The set of speaking endpoints changed; this is all of them, sorted.
    SpeakingChanged { speaking: Vec<EndpointId> },
    /// The active speaker changed.
    ActiveSpeaker { endpoint: Option<EndpointId> },
    /// The publisher of a local track should send these layers (of `count`) and pause
    /// the rest.
    SendLayers {
        track: TrackId,
        layers: LayerSet,
        count: u8,
    },
    /// This worker's subscribers now use these layers of a track published on another
    /// worker: tell that worker's router ([`Router::handle_remote_demand`]).
    RemoteDemand { track: TrackId, layers: LayerSet },
    /// What a subscriber would receive with unlimited bandwidth, so its bandwidth
    /// estimator can probe toward it. Sent when it changes, and again (with `probe`)
    /// while the subscriber's estimate falls short of it (see
    /// [`RouterConfig::probe_every`]): an estimator that only probes when the wish grows
    /// would otherwise creep up from a low estimate at a few percent a second.
    DesiredBitrate {
        subscriber: EndpointId,
        bps: u64,
        probe: bool,
    },
}

/// Why the router refused a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterError {
    TrackExists(TrackId),
    SubscriberExists(EndpointId),
    UnknownSubscriber(EndpointId),
    TooManySlots { slots: usize, limit: usize },
}

impl std::fmt::Display for RouterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouterError::TrackExists(t) => write!(f, "track {t} is already published"),
            RouterError::SubscriberExists(e) => write!(f, "subscriber {e} is already added"),
            RouterError::UnknownSubscriber(e) => write!(f, "subscriber {e} is not known"),
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
    /// Publication order within the room.
    order: u64,
    /// The slots this track is mapped into: (subscriber index, slot).
    sinks: Vec<(usize, SlotId)>,
    layers: [Layer; LayerId::MAX],
    voice: VoiceActivity,
    /// What other workers' subscribers use (local tracks only): (worker tag, layers).
    remote: Vec<(u32, LayerSet)>,
    /// Local tracks: the layers the publisher was last told to send.
    sending: LayerSet,
    /// Remote tracks: the demand last reported to the publisher's worker.
    reported: Option<LayerSet>,
}

#[derive(Debug, Default)]
struct Layer {
    last_packet: Option<Instant>,
    rate: RateMeter,
    /// What the temporal layers a thumbnail gets cost
    /// ([`RouterConfig::thumbnail_temporal_layer`] and below), and when a packet last
    /// said which temporal layer it is in.
    thin_rate: RateMeter,
    temporal_at: Option<Instant>,
    /// Picture size from its last keyframe.
    size: Option<(u16, u16)>,
    /// The publisher's connection reported the stream paused.
    paused: bool,
    gate: KeyframeGate,
    /// Some slot waits for a keyframe on this layer.
    wanted: bool,
    /// Last time some slot (here or on another worker) used this layer.
    used_at: Option<Instant>,
    /// Since when the layer is used but sends nothing.
    stalled_since: Option<Instant>,
    /// Left out of allocations until then.
    failed_until: Option<Instant>,
}

#[derive(Debug)]
struct Subscriber {
    id: EndpointId,
    slots: Vec<Slot>,
    /// Its layout; `None` until it reports one (the server's default applies).
    layout: Option<LayoutSpec>,
    /// Downlink estimate in bits per second; `None`: unknown.
    estimate: Option<u64>,
    /// Last time a slot's layer went down because the estimate fell.
    last_down: Option<Instant>,
    last_desired: Option<u64>,
    /// When the desired bitrate was last sent, the estimate then, and the gap to the next
    /// probe request.
    desired_at: Option<Instant>,
    estimate_at_ask: Option<u64>,
    probe_gap: Duration,
    /// Camera slots need re-mapping.
    cameras_dirty: bool,
}

#[derive(Debug)]
struct Slot {
    kind: SlotKind,
    track: Option<usize>,
    /// The layer being forwarded, once a keyframe of it arrived.
    current: Option<LayerId>,
    /// The layer to forward, moved to at its next keyframe; `None`: paused for bandwidth.
    target: Option<LayerId>,
    /// The layer the tile's size calls for.
    preferred: LayerId,
    /// Served before thumbnails (screen shares, the large tile).
    stage: bool,
    /// Position of its tile in the layout: earlier tiles are served first.
    rank: u16,
    /// The highest VP8 temporal layer the tile's size calls for.
    tid_cap: u8,
    /// The highest temporal layer forwarded now: it goes down to the cap at a frame's
    /// start, and up at a keyframe or a layer-sync frame (whose references the receiver
    /// has).
    tid_now: u8,
    /// Whether the subscriber was last told this slot is paused.
    told_paused: bool,
    /// The slot's track changed and the subscriber has not been told yet (video slots are
    /// told once their first allocation decided whether they are paused).
    report: bool,
    rewriter: Rewriter,
    vp8: Vp8Rewriter,
}

/// A camera the layout wants in a slot.
#[derive(Debug, Clone, Copy)]
struct Want {
    track: usize,
    height: u16,
    stage: bool,
}

/// The most receive slots one subscriber may have.
pub const MAX_SLOTS: usize = 256;
/// Active speakers remembered for default layouts and "active speaker" tiles.
const RECENT_SPEAKERS: usize = 64;

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
    dominant: Dominant<EndpointId>,
    /// Endpoints that were the active speaker, most recent first.
    recent_speakers: VecDeque<EndpointId>,
    /// The most active microphones (track indices), kept stable by
    /// [`speaker::update_top`].
    audio_top: Vec<usize>,
    /// `audio_top` by activity, most active first: what audio slots carry.
    audio_order: Vec<usize>,
    /// Camera tracks, most recently published first: what default layouts fall back to.
    cameras_by_recency: Vec<usize>,
    // Reused buffers.
    scratch_wants: Vec<Want>,
    scratch_alloc: Vec<AllocSlot>,
    scratch_alloc_ix: Vec<usize>,
    scratch_out: Vec<Option<u8>>,
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
            dominant: Dominant::default(),
            recent_speakers: VecDeque::new(),
            audio_top: Vec::new(),
            audio_order: Vec::new(),
            cameras_by_recency: Vec::new(),
            scratch_wants: Vec::new(),
            scratch_alloc: Vec::new(),
            scratch_alloc_ix: Vec::new(),
            scratch_out: Vec::new(),
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

    /// The active speaker, if anyone has spoken.
    pub fn active_speaker(&self) -> Option<EndpointId> {
        self.dominant.current()
    }

    /// Everyone speaking now, sorted.
    pub fn speaking(&self) -> &[EndpointId] {
        &self.speaking
    }

    // ---- inputs ----------------------------------------------------------------------

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
        let info = TrackInfo {
            layers: info.layers.clamp(1, LayerId::MAX as u8),
            ..info
        };
        let mut layers: [Layer; LayerId::MAX] = Default::default();
        if id.source != Source::Microphone {
            // A new publisher sends every layer until told otherwise; give them the pause
            // delay before the unwatched ones are stopped.
            for l in layers.iter_mut().take(usize::from(info.layers)) {
                l.used_at = Some(now);
            }
        }
        let ix = self.tracks.insert(Track {
            id,
            info,
            order,
            sinks: Vec::new(),
            layers,
            voice: VoiceActivity::default(),
            remote: Vec::new(),
            sending: LayerSet::first(info.layers),
            reported: None,
        });
        self.track_index.insert(id, ix);
        self.schedule_tick(now);
        match id.source {
            Source::Microphone => self.update_audio_top(now, false),
            Source::Camera => {
                self.cameras_by_recency.insert(0, ix);
                self.mark_cameras_dirty();
                self.refresh_subscribers(now);
            }
            Source::Screen => {
                let subs: Vec<usize> = self.subscribers.iter().map(|(i, _)| i).collect();
                for &si in &subs {
                    self.reconcile_screens(si, now);
                }
                // Subscribers without a screen slot show it in their first speaker tile.
                self.mark_cameras_dirty();
                self.refresh_subscribers(now);
            }
        }
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
        self.audio_top.retain(|&t| t != ix);
        self.audio_order.retain(|&t| t != ix);
        self.cameras_by_recency.retain(|&t| t != ix);
        for &(si, slot_id) in &track.sinks {
            if let Some(sub) = self.subscribers.get_mut(si) {
                let slot = &mut sub.slots[usize::from(slot_id.0)];
                clear_slot(slot);
                self.outputs.push_back(RouterOutput::SlotChanged {
                    subscriber: sub.id,
                    slot: slot_id,
                    track: None,
                    paused: false,
                });
                if slot.kind == SlotKind::Camera {
                    sub.cameras_dirty = true;
                }
            }
        }
        match id.source {
            Source::Microphone => {
                if self.dominant.current() == Some(id.endpoint) {
                    self.dominant.forget(id.endpoint);
                }
                self.update_audio_top(now, true);
            }
            Source::Camera => {
                self.mark_cameras_dirty();
                self.refresh_subscribers(now);
            }
            Source::Screen => {
                let subs: Vec<usize> = self.subscribers.iter().map(|(i, _)| i).collect();
                for &si in &subs {
                    self.reconcile_screens(si, now);
                }
                // Subscribers without a screen slot show it in their first speaker tile.
                self.mark_cameras_dirty();
                self.refresh_subscribers(now);
            }
        }
    }

    /// A subscriber with these receive slots connected to this worker; it shows the
    /// server's default layout until [`Router::set_layout`].
    pub fn add_subscriber(
        &mut self,
        id: EndpointId,
        slots: &[SlotKind],
        now: Instant,
    ) -> Result<(), RouterError> {
        self.add_subscriber_with_layout(id, slots, None, now)
    }

    /// A subscriber with these receive slots and this layout connected to this worker.
    pub fn add_subscriber_with_layout(
        &mut self,
        id: EndpointId,
        slots: &[SlotKind],
        layout: Option<LayoutSpec>,
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
                target: None,
                preferred: LayerId(0),
                stage: kind == SlotKind::Screen,
                rank: 0,
                tid_cap: u8::MAX,
                tid_now: u8::MAX,
                told_paused: false,
                report: false,
                rewriter: Rewriter::new(match kind {
                    SlotKind::Audio => Codec::Opus.clock_rate(),
                    SlotKind::Camera | SlotKind::Screen => Codec::Vp8.clock_rate(),
                }),
                vp8: Vp8Rewriter::default(),
            })
            .collect();
        let layout = layout.map(|mut l| {
            l.tiles.truncate(LayoutSpec::MAX_TILES);
            l
        });
        let si = self.subscribers.insert(Subscriber {
            id,
            slots,
            layout,
            estimate: None,
            last_down: None,
            last_desired: None,
            desired_at: None,
            estimate_at_ask: None,
            probe_gap: self.config.probe_every,
            cameras_dirty: true,
        });
        self.subscriber_index.insert(id, si);
        self.schedule_tick(now);
        // The audio ranking may need a place more for this subscriber's slots.
        self.update_audio_top(now, false);
        self.reconcile_audio(si);
        self.reconcile_screens(si, now);
        self.reconcile_cameras(si, now);
        self.allocate(si, now);
        self.update_demand(now);
        // Who speaks now is for the new subscriber alone (`Router::speaking`,
        // `Router::active_speaker`): outputs go to the whole room.
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

    /// The subscriber's layout changed (`None`: back to the server's default).
    pub fn set_layout(
        &mut self,
        subscriber: EndpointId,
        layout: Option<LayoutSpec>,
        now: Instant,
    ) -> Result<(), RouterError> {
        let &si = self
            .subscriber_index
            .get(&subscriber)
            .ok_or(RouterError::UnknownSubscriber(subscriber))?;
        let Some(sub) = self.subscribers.get_mut(si) else {
            return Err(RouterError::UnknownSubscriber(subscriber));
        };
        let layout = layout.map(|mut l| {
            l.tiles.truncate(LayoutSpec::MAX_TILES);
            l
        });
        if sub.layout == layout {
            return Ok(());
        }
        sub.layout = layout;
        self.reconcile_cameras(si, now);
        self.allocate(si, now);
        self.update_demand(now);
        Ok(())
    }

    /// A new estimate of what the subscriber can receive, bits per second (`None`:
    /// unknown; layers are then chosen by size alone).
    pub fn set_estimate(&mut self, subscriber: EndpointId, bps: Option<u64>, now: Instant) {
        let Some(&si) = self.subscriber_index.get(&subscriber) else {
            return;
        };
        let Some(sub) = self.subscribers.get_mut(si) else {
            return;
        };
        if sub.estimate == bps {
            return;
        }
        let act_now = match (sub.estimate, bps) {
            (Some(a), Some(b)) => b < a,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        sub.estimate = bps;
        // A first estimate or a fall acts at once; a rise waits for the tick (and the
        // upgrade hold).
        if act_now {
            self.allocate(si, now);
            self.update_demand(now);
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
        if layer_ix >= usize::from(track.info.layers) {
            return &self.forwards;
        }
        let kind = track.id.source.kind();
        let thin_cap = self.config.thumbnail_temporal_layer;
        let vp8 = match (kind, track.info.codec) {
            (MediaKind::Video, Codec::Vp8) => Vp8Header::parse(&pkt.payload),
            _ => None,
        };
        let keyframe = match (&vp8, kind) {
            (Some(h), _) => h.keyframe,
            (None, MediaKind::Video) => track.info.codec.is_keyframe_start(&pkt.payload),
            (None, MediaKind::Audio) => false,
        };
        {
            let layer = &mut track.layers[layer_ix];
            layer.last_packet = Some(now);
            layer.paused = false;
            layer.rate.record(pkt.payload.len(), now);
            if let Some(tid) = vp8.and_then(|h| h.tid) {
                layer.temporal_at = Some(now);
                if tid <= thin_cap {
                    layer.thin_rate.record(pkt.payload.len(), now);
                }
            }
            if keyframe {
                layer.gate.handle_keyframe();
                layer.wanted = false;
                if let Some(size) = vp8.and_then(|h| h.size) {
                    layer.size = Some(size);
                }
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
                MediaKind::Audio => true,
                MediaKind::Video => {
                    if keyframe && slot.target == Some(pkt.layer) && slot.current != Some(pkt.layer)
                    {
                        slot.current = Some(pkt.layer);
                        slot.rewriter.switch_source();
                        slot.vp8.switch_source();
                        true
                    } else {
                        slot.current == Some(pkt.layer)
                    }
                }
            };
            if !send {
                continue;
            }
            if let Some(h) = &vp8
                && let Some(tid) = h.tid
            {
                // A frame is sent or left out whole: its later packets follow the decision
                // made at its start, even when the next frame's packets overtook them.
                let leave_out = match slot.vp8.decided(h) {
                    Some(left_out) => left_out,
                    None => {
                        if h.start {
                            if slot.vp8.newest_skipped() {
                                // Packets not yet seen before this frame's start are the
                                // tail of the frame left out.
                                slot.rewriter.skip_before(pkt.seq);
                            }
                            if keyframe || slot.tid_cap <= slot.tid_now {
                                slot.tid_now = slot.tid_cap;
                            } else if h.layer_sync && tid == slot.tid_now.saturating_add(1) {
                                // One layer at a time: a sync frame of layer n needs only
                                // layers below n, which the receiver has.
                                slot.tid_now = tid;
                            }
                        }
                        tid > slot.tid_now
                    }
                };
                if leave_out {
                    slot.rewriter.skip(pkt.seq);
                    slot.vp8.skip_picture(h);
                    continue;
                }
            }
            if let Some((seq, timestamp)) = slot.rewriter.rewrite(pkt.seq, pkt.timestamp, now) {
                let vp8 = vp8.as_ref().map(|h| slot.vp8.rewrite(pkt.seq, h));
                self.forwards.push(Forward {
                    subscriber: sub.id,
                    slot: slot_id,
                    seq,
                    timestamp,
                    marker: pkt.marker,
                    vp8,
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
        let Some(slot) = self
            .subscribers
            .get(si)
            .and_then(|s| s.slots.get(usize::from(slot.0)))
        else {
            return;
        };
        let (Some(ti), Some(layer)) = (slot.track, slot.current.or(slot.target)) else {
            return;
        };
        self.request_keyframe_ix(ti, layer, now);
    }

    /// Another worker asks for a keyframe of `track` on `layer` on behalf of its
    /// subscribers; requests from all workers are coalesced here.
    pub fn request_keyframe(&mut self, track: TrackId, layer: LayerId, now: Instant) {
        if let Some(&ti) = self.track_index.get(&track) {
            self.request_keyframe_ix(ti, layer, now);
        }
    }

    /// The publisher's connection came back from a network change or an outage (an ICE
    /// restart): the layers of its tracks that were given up on while nothing came get
    /// another chance now, so its camera is asked for (and shown) again at once rather
    /// than when the retry comes round.
    pub fn publisher_back(&mut self, publisher: EndpointId, now: Instant) {
        let mut any = false;
        for (_, t) in self.tracks.iter_mut() {
            if t.id.endpoint != publisher {
                continue;
            }
            for l in &mut t.layers {
                any |= l.failed_until.take().is_some();
                l.stalled_since = None;
            }
        }
        if any {
            self.refresh_subscribers(now);
        }
    }

    /// The publisher's connection reports that it stopped (or resumed) sending `layer`.
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

    /// The subscribers of the router with tag `from` (another worker) use these layers of
    /// a track published here.
    pub fn handle_remote_demand(
        &mut self,
        track: TrackId,
        from: u32,
        layers: LayerSet,
        now: Instant,
    ) {
        let Some(&ti) = self.track_index.get(&track) else {
            return;
        };
        let Some(t) = self.tracks.get_mut(ti) else {
            return;
        };
        match t.remote.iter_mut().find(|(w, _)| *w == from) {
            Some(e) => e.1 = layers,
            None => t.remote.push((from, layers)),
        }
        self.update_demand(now);
    }

    /// Only the workers with these tags still host the room: forget the others' demand.
    pub fn retain_remote(&mut self, tags: &[u32], now: Instant) {
        for (_, t) in self.tracks.iter_mut() {
            t.remote.retain(|(w, _)| tags.contains(w));
        }
        self.update_demand(now);
    }

    /// When [`Router::handle_timeout`] wants to be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.next_tick, self.gate_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Changes the highest VP8 temporal layer thumbnails get
    /// ([`RouterConfig::thumbnail_temporal_layer`]), for the tiles shown now and those to
    /// come: a worker whose core is full sheds load this way (`crate::load`). Each slot
    /// lowers its layer at the start of the next frame and raises it at a layer-sync frame
    /// or a keyframe, as when a tile changes size, so the stream stays continuous and no
    /// keyframe is asked for. The allocation counts the new cost at its next tick.
    pub fn set_thumbnail_temporal_layer(&mut self, cap: u8) {
        if self.config.thumbnail_temporal_layer == cap {
            return;
        }
        self.config.thumbnail_temporal_layer = cap;
        for (_, sub) in self.subscribers.iter_mut() {
            for slot in &mut sub.slots {
                // Full-rate tiles (the stage, large tiles) and audio have no cap.
                if slot.kind != SlotKind::Audio && slot.tid_cap != u8::MAX {
                    slot.tid_cap = cap;
                }
            }
        }
    }

    /// Time passed: release held keyframe requests; on the tick, re-rank speakers and
    /// re-decide slots, layers and pausing.
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

    // ---- queries (tests, diagnostics) ---------------------------------------------------

    /// The track currently mapped into a subscriber's slot.
    pub fn slot_track(&self, subscriber: EndpointId, slot: SlotId) -> Option<TrackId> {
        let ti = self.slot(subscriber, slot)?.track?;
        Some(self.tracks.get(ti)?.id)
    }

    /// The layer a slot forwards now and the one it is headed for (`None`: paused).
    pub fn slot_layers(
        &self,
        subscriber: EndpointId,
        slot: SlotId,
    ) -> Option<(Option<LayerId>, Option<LayerId>)> {
        let s = self.slot(subscriber, slot)?;
        Some((s.current, s.target))
    }

    /// The layers of a local track its publisher was last told to send.
    pub fn sending_layers(&self, track: TrackId) -> Option<LayerSet> {
        let ti = *self.track_index.get(&track)?;
        Some(self.tracks.get(ti)?.sending)
    }

    /// What a track's layer is measured to cost, bits per second.
    pub fn layer_bps(&self, track: TrackId, layer: LayerId) -> Option<u64> {
        let ti = *self.track_index.get(&track)?;
        self.tracks
            .get(ti)?
            .layers
            .get(usize::from(layer.0))?
            .rate
            .bps()
    }

    fn slot(&self, subscriber: EndpointId, slot: SlotId) -> Option<&Slot> {
        let si = *self.subscriber_index.get(&subscriber)?;
        self.subscribers.get(si)?.slots.get(usize::from(slot.0))
    }

    // ---- the tick ------------------------------------------------------------------------

    fn schedule_tick(&mut self, now: Instant) {
        if self.next_tick.is_none() {
            self.next_tick = Some(now + self.config.tick);
        }
    }

    fn tick(&mut self, now: Instant) {
        self.update_speakers(now);
        self.update_audio_top(now, false);
        self.update_layer_health(now);
        self.refresh_subscribers(now);
        self.request_missing_keyframes(now);
    }

    fn update_speakers(&mut self, now: Instant) {
        let config = self.config.speaker;
        let mut changed = false;
        for (_, t) in self.tracks.iter_mut() {
            if t.id.source == Source::Microphone {
                changed |= t.voice.tick(now, &config);
            }
        }
        if changed {
            let mut speaking: Vec<EndpointId> = self
                .tracks
                .iter()
                .filter(|(_, t)| t.id.source == Source::Microphone && t.voice.is_speaking())
                .map(|(_, t)| t.id.endpoint)
                .collect();
            speaking.sort_unstable();
            if speaking != self.speaking {
                self.speaking = speaking.clone();
                self.outputs
                    .push_back(RouterOutput::SpeakingChanged { speaking });
            }
        }
        let mics = self
            .tracks
            .iter()
            .filter(|(_, t)| t.id.source == Source::Microphone)
            .map(|(_, t)| (t.id.endpoint, t.voice.slow(), t.voice.is_speaking()));
        if self.dominant.update(mics, now, &config) {
            let endpoint = self.dominant.current();
            if let Some(e) = endpoint {
                self.recent_speakers.retain(|r| *r != e);
                self.recent_speakers.push_front(e);
                self.recent_speakers.truncate(RECENT_SPEAKERS);
            }
            self.outputs
                .push_back(RouterOutput::ActiveSpeaker { endpoint });
            // Tiles that follow the speaker follow it.
            self.mark_cameras_dirty();
        }
    }

    /// Re-ranks microphones for the audio slots; `force` re-maps the slots even when the
    /// ranking did not change (a track went away).
    fn update_audio_top(&mut self, _now: Instant, force: bool) {
        let k = self
            .subscribers
            .iter()
            .map(|(_, s)| s.slots.iter().filter(|x| x.kind == SlotKind::Audio).count())
            .max()
            .unwrap_or(0)
            + 1;
        // In publication order: among equals (nobody spoke yet) the first published win.
        let mut candidates: Vec<(u64, usize, f32, bool)> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.id.source == Source::Microphone)
            .map(|(i, t)| (t.order, i, t.voice.fast(), t.voice.is_speaking()))
            .collect();
        candidates.sort_unstable_by_key(|c| c.0);
        let candidates: Vec<(usize, f32, bool)> = candidates
            .into_iter()
            .map(|(_, i, f, s)| (i, f, s))
            .collect();
        let mut top = std::mem::take(&mut self.audio_top);
        speaker::update_top(&mut top, k, &candidates, self.config.speaker.audio_margin);
        // Listeners take the first of these, leaving themselves out: the ranking is one
        // place longer than any listener's audio slots, and ordered by activity so the
        // one left out for a listener in the ranking is the least active.
        let tracks = &self.tracks;
        let mut order = top.clone();
        order.sort_by(|a, b| {
            let key = |ti: &usize| {
                tracks
                    .get(*ti)
                    .map_or((false, 0.0), |t| (t.voice.is_speaking(), t.voice.fast()))
            };
            key(b)
                .partial_cmp(&key(a))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        self.audio_top = top;
        let changed = order != self.audio_order;
        self.audio_order = order;
        if changed || force {
            let subs: Vec<usize> = self.subscribers.iter().map(|(i, _)| i).collect();
            for si in subs {
                self.reconcile_audio(si);
            }
        }
    }

    /// Notices layers that were asked for and never came, and gives up on them for a while.
    fn update_layer_health(&mut self, now: Instant) {
        let timeout = self.config.layer_timeout;
        let start_timeout = self.config.layer_start_timeout;
        let retry = self.config.layer_retry;
        for (_, t) in self.tracks.iter_mut() {
            if t.id.source == Source::Microphone {
                t.layers[0].rate.roll(now);
                continue;
            }
            // The layers slots here are headed for.
            let mut targeted = LayerSet::EMPTY;
            for &(si, slot_id) in &t.sinks {
                if let Some(target) = self
                    .subscribers
                    .get(si)
                    .and_then(|s| s.slots.get(usize::from(slot_id.0)))
                    .and_then(|s| s.target)
                {
                    targeted.insert(target);
                }
            }
            for (li, l) in t
                .layers
                .iter_mut()
                .enumerate()
                .take(usize::from(t.info.layers))
            {
                l.rate.roll(now);
                if l.failed_until.is_some_and(|u| u <= now) {
                    l.failed_until = None;
                }
                let flowing = !l.paused
                    && l.last_packet
                        .is_some_and(|at| now.saturating_duration_since(at) < timeout);
                if flowing {
                    // A layer given up on that flows again (its publisher's network came
                    // back) is usable at once, not when the retry comes round.
                    l.failed_until = None;
                }
                if flowing || !targeted.contains(LayerId(li as u8)) {
                    l.stalled_since = None;
                } else {
                    let since = *l.stalled_since.get_or_insert(now);
                    if now.saturating_duration_since(since) >= start_timeout {
                        l.failed_until = Some(now + retry);
                        l.stalled_since = None;
                    }
                }
            }
        }
    }

    /// Re-maps camera slots where needed and re-allocates every subscriber's layers.
    fn refresh_subscribers(&mut self, now: Instant) {
        let subs: Vec<usize> = self.subscribers.iter().map(|(i, _)| i).collect();
        for &si in &subs {
            if self.subscribers.get(si).is_some_and(|s| s.cameras_dirty) {
                self.reconcile_cameras(si, now);
            }
            self.allocate(si, now);
        }
        self.update_demand(now);
    }

    fn mark_cameras_dirty(&mut self) {
        for (_, s) in self.subscribers.iter_mut() {
            s.cameras_dirty = true;
        }
    }

    /// Asks again for keyframes that slots still wait for.
    fn request_missing_keyframes(&mut self, now: Instant) {
        let retry = self.config.keyframe_retry;
        let mut requests: Vec<(usize, LayerId)> = Vec::new();
        for (ti, track) in self.tracks.iter() {
            if track.id.source.kind() != MediaKind::Video {
                continue;
            }
            let mut waiting = LayerSet::EMPTY;
            for &(si, slot_id) in &track.sinks {
                if let Some(slot) = self
                    .subscribers
                    .get(si)
                    .and_then(|s| s.slots.get(usize::from(slot_id.0)))
                    && let Some(target) = slot.target
                    && slot.current != Some(target)
                {
                    waiting.insert(target);
                }
            }
            for l in 0..track.info.layers {
                let layer = &track.layers[usize::from(l)];
                if !waiting.contains(LayerId(l)) {
                    continue;
                }
                let stale = layer
                    .gate
                    .last_sent()
                    .is_none_or(|at| now.saturating_duration_since(at) >= retry);
                if !layer.wanted || stale {
                    requests.push((ti, LayerId(l)));
                }
            }
        }
        for (ti, layer) in requests {
            self.request_keyframe_ix(ti, layer, now);
        }
    }

    // ---- slots ---------------------------------------------------------------------------

    /// Maps the most active microphones (not the subscriber's own) into its audio slots.
    fn reconcile_audio(&mut self, si: usize) {
        let Some(sub) = self.subscribers.get(si) else {
            return;
        };
        let own = sub.id;
        let capacity = sub
            .slots
            .iter()
            .filter(|s| s.kind == SlotKind::Audio)
            .count();
        let wanted: Vec<usize> = self
            .audio_order
            .iter()
            .copied()
            .filter(|&ti| self.tracks.get(ti).is_some_and(|t| t.id.endpoint != own))
            .take(capacity)
            .collect();
        let wants: Vec<Want> = wanted
            .into_iter()
            .map(|track| Want {
                track,
                height: 0,
                stage: false,
            })
            .collect();
        self.map_slots(si, SlotKind::Audio, &wants);
    }

    /// Maps screen shares, most recent first, into the subscriber's screen slots.
    fn reconcile_screens(&mut self, si: usize, _now: Instant) {
        let Some(sub) = self.subscribers.get(si) else {
            return;
        };
        let own = sub.id;
        let capacity = sub
            .slots
            .iter()
            .filter(|s| s.kind == SlotKind::Screen)
            .count();
        let mut shares: Vec<(u64, usize)> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.id.source == Source::Screen && t.id.endpoint != own)
            .map(|(i, t)| (t.order, i))
            .collect();
        shares.sort_unstable_by_key(|&(order, _)| std::cmp::Reverse(order));
        let wants: Vec<Want> = shares
            .into_iter()
            .take(capacity)
            .map(|(_, track)| Want {
                track,
                height: u16::MAX,
                stage: true,
            })
            .collect();
        self.map_slots(si, SlotKind::Screen, &wants);
    }

    /// Maps the cameras of the subscriber's layout (or the default one) into its camera
    /// slots.
    fn reconcile_cameras(&mut self, si: usize, _now: Instant) {
        let mut wants = std::mem::take(&mut self.scratch_wants);
        wants.clear();
        if let Some(sub) = self.subscribers.get_mut(si) {
            sub.cameras_dirty = false;
        }
        self.resolve_layout(si, &mut wants);
        self.map_slots(si, SlotKind::Camera, &wants);
        self.scratch_wants = wants;
    }

    /// The cameras a subscriber's layout asks for, in order, at most one per camera slot.
    /// A subscriber without a screen slot (a WHEP viewer, a simple client) sees the most
    /// recent screen share in its first tile that follows the speaker, while there is one;
    /// the speaker moves to the next such tile.
    fn resolve_layout(&self, si: usize, out: &mut Vec<Want>) {
        let Some(sub) = self.subscribers.get(si) else {
            return;
        };
        let own = sub.id;
        let capacity = sub
            .slots
            .iter()
            .filter(|s| s.kind == SlotKind::Camera)
            .count();
        if capacity == 0 {
            return;
        }
        let default;
        let layout = match &sub.layout {
            Some(l) => l,
            None => {
                default = LayoutSpec::server_default(
                    capacity,
                    self.config.default_large,
                    self.config.default_thumbnail,
                );
                &default
            }
        };
        let named = |e: EndpointId| {
            layout
                .tiles
                .iter()
                .any(|t: &TileSpec| t.endpoint == Some(e))
        };
        let camera = |e: EndpointId| {
            self.track_index
                .get(&TrackId::new(e, Source::Camera))
                .copied()
        };
        let mut screen = if sub.slots.iter().any(|s| s.kind == SlotKind::Screen) {
            None
        } else {
            self.tracks
                .iter()
                .filter(|(_, t)| t.id.source == Source::Screen && t.id.endpoint != own)
                .max_by_key(|(_, t)| t.order)
                .map(|(i, _)| i)
        };
        // Who "the active speaker" tiles take, in turn.
        let mut speakers = self
            .dominant
            .current()
            .into_iter()
            .chain(self.recent_speakers.iter().copied())
            .filter_map(|e| camera(e).map(|ti| (e, ti)))
            .chain(
                self.cameras_by_recency
                    .iter()
                    .filter_map(|&ti| self.tracks.get(ti).map(|t| (t.id.endpoint, ti))),
            );
        for (i, tile) in layout.tiles.iter().enumerate() {
            if out.len() >= capacity {
                break;
            }
            let found = match tile.endpoint {
                Some(e) if e != own => camera(e).filter(|ti| !out.iter().any(|w| w.track == *ti)),
                Some(_) => None,
                None if screen.is_some() => screen.take(),
                None => speakers
                    .by_ref()
                    .find(|(e, ti)| *e != own && !named(*e) && !out.iter().any(|w| w.track == *ti))
                    .map(|(_, ti)| ti),
            };
            if let Some(track) = found {
                out.push(Want {
                    track,
                    height: tile.height,
                    stage: layout.view == View::Speaker && i == 0,
                });
            }
        }
    }

    /// Makes `si`'s slots of `kind` carry exactly the tracks of `wants` (already cut to
    /// the slot count), moving as little as possible: a slot keeps its track while it is
    /// still wanted. Sets each slot's preferred layer and stage from its want.
    fn map_slots(&mut self, si: usize, kind: SlotKind, wants: &[Want]) {
        let Some(sub) = self.subscribers.get_mut(si) else {
            return;
        };
        let mut changed: Vec<SlotId> = Vec::new();
        // Free slots whose track is no longer wanted.
        for (i, slot) in sub.slots.iter_mut().enumerate() {
            if slot.kind != kind {
                continue;
            }
            if let Some(ti) = slot.track
                && !wants.iter().any(|w| w.track == ti)
            {
                clear_slot(slot);
                if let Some(track) = self.tracks.get_mut(ti) {
                    track.sinks.retain(|s| *s != (si, SlotId(i as u16)));
                }
                changed.push(SlotId(i as u16));
            }
        }
        // Give wanted tracks without a slot the free slots, lowest first.
        for (rank, w) in wants.iter().enumerate() {
            let slot_ix = match sub.slots.iter().position(|s| s.track == Some(w.track)) {
                Some(i) => i,
                None => {
                    let Some(i) = sub
                        .slots
                        .iter()
                        .position(|s| s.kind == kind && s.track.is_none())
                    else {
                        break;
                    };
                    let Some(track) = self.tracks.get_mut(w.track) else {
                        continue;
                    };
                    let slot = &mut sub.slots[i];
                    slot.track = Some(w.track);
                    slot.rewriter.switch_source();
                    slot.vp8.switch_source();
                    slot.current = if kind == SlotKind::Audio {
                        Some(LayerId(0))
                    } else {
                        None
                    };
                    slot.target = if kind == SlotKind::Audio {
                        Some(LayerId(0))
                    } else {
                        None
                    };
                    track.sinks.push((si, SlotId(i as u16)));
                    if !changed.contains(&SlotId(i as u16)) {
                        changed.push(SlotId(i as u16));
                    }
                    i
                }
            };
            if kind != SlotKind::Audio {
                let preferred = self
                    .tracks
                    .get(w.track)
                    .map_or(LayerId(0), |t| layer_for_height(t, w.height));
                let slot = &mut sub.slots[slot_ix];
                slot.preferred = preferred;
                slot.stage = w.stage;
                slot.tid_cap = if w.stage || w.height >= self.config.full_rate_height {
                    u8::MAX
                } else {
                    self.config.thumbnail_temporal_layer
                };
                slot.rank = rank as u16;
            }
        }
        changed.sort_unstable();
        for slot in changed {
            let s = &mut sub.slots[usize::from(slot.0)];
            let track = s.track.and_then(|ti| self.tracks.get(ti)).map(|t| t.id);
            if s.kind != SlotKind::Audio && track.is_some() {
                // Told by the allocation, which decides whether it starts paused.
                s.report = true;
                continue;
            }
            self.outputs.push_back(RouterOutput::SlotChanged {
                subscriber: sub.id,
                slot,
                track,
                paused: false,
            });
        }
    }

    // ---- layers and bandwidth ----------------------------------------------------------

    /// Decides the layer of each of `si`'s video slots from its estimate, and reports
    /// slots whose track or paused state the subscriber has not been told.
    fn allocate(&mut self, si: usize, now: Instant) {
        let mut alloc = std::mem::take(&mut self.scratch_alloc);
        let mut alloc_ix = std::mem::take(&mut self.scratch_alloc_ix);
        let mut out = std::mem::take(&mut self.scratch_out);
        alloc.clear();
        alloc_ix.clear();
        let Some(sub) = self.subscribers.get(si) else {
            self.scratch_alloc = alloc;
            self.scratch_alloc_ix = alloc_ix;
            self.scratch_out = out;
            return;
        };
        let mut audio = 0u64;
        for (i, slot) in sub.slots.iter().enumerate() {
            let Some(track) = slot.track.and_then(|ti| self.tracks.get(ti)) else {
                continue;
            };
            if slot.kind == SlotKind::Audio {
                audio += track.layers[0]
                    .rate
                    .bps()
                    .unwrap_or(self.config.nominal_audio_bps);
                continue;
            }
            let mut cost = [None; 3];
            for (l, c) in cost
                .iter_mut()
                .enumerate()
                .take(usize::from(track.info.layers))
            {
                let layer = &track.layers[l];
                if layer.failed_until.is_some_and(|u| u > now) {
                    continue;
                }
                // A thumbnail of a camera with temporal layers gets only the lower ones.
                let thin = slot.tid_cap < u8::MAX
                    && layer.temporal_at.is_some_and(|at| {
                        now.saturating_duration_since(at) < self.config.layer_timeout
                    });
                let measured = if thin {
                    layer.thin_rate.bps().or(layer.rate.bps())
                } else {
                    layer.rate.bps()
                };
                *c = Some(measured.unwrap_or_else(|| nominal(&self.config, track, l)));
            }
            alloc.push(AllocSlot {
                stage: slot.stage,
                preferred: slot.preferred.0,
                current: slot.target.map(|l| l.0),
                cost,
            });
            alloc_ix.push(i);
        }
        // Stage slots are served in their own order: screen shares before the large tile.
        let held = sub
            .last_down
            .is_some_and(|at| now.saturating_duration_since(at) < self.config.upgrade_hold);
        let input = AllocInput {
            budget: sub.estimate,
            audio,
            up_margin: self.config.up_margin,
            allow_up: !held,
        };
        // Screen shares first, then the layout's tiles in its order.
        let mut order: Vec<usize> = (0..alloc.len()).collect();
        order.sort_by_key(|&k| {
            let slot = &sub.slots[alloc_ix[k]];
            (slot.kind != SlotKind::Screen, slot.rank)
        });
        let sorted: Vec<AllocSlot> = order.iter().map(|&k| alloc[k]).collect();
        allocate::allocate(&input, &sorted, &mut out);
        let desired = allocate::desired(&sorted, audio);
        // What each slot would get with bandwidth to spare: a target below that and below
        // what the slot had is a cut for bandwidth, which holds upgrades back for a while.
        let mut free = Vec::with_capacity(sorted.len());
        allocate::allocate(
            &AllocInput {
                budget: None,
                ..input
            },
            &sorted,
            &mut free,
        );

        let Some(sub) = self.subscribers.get_mut(si) else {
            return;
        };
        let mut went_down = false;
        let mut keyframes: Vec<(usize, LayerId)> = Vec::new();
        for (pos, &k) in order.iter().enumerate() {
            let slot_ix = alloc_ix[k];
            let target = out[pos].map(LayerId);
            let slot = &mut sub.slots[slot_ix];
            if target != slot.target {
                let below_free = match (target, free[pos]) {
                    (None, Some(_)) => true,
                    (Some(t), Some(f)) => t.0 < f,
                    _ => false,
                };
                if let Some(old) = slot.target
                    && target.is_none_or(|n| n < old)
                    && below_free
                {
                    went_down = true;
                }
                slot.target = target;
                if target.is_none() {
                    // Paused: stop at once; resuming waits for a keyframe.
                    slot.current = None;
                }
            }
            if let (Some(t), Some(ti)) = (slot.target, slot.track)
                && slot.current != Some(t)
            {
                keyframes.push((ti, t));
            }
            let paused = slot.target.is_none();
            if paused != slot.told_paused || slot.report {
                slot.told_paused = paused;
                slot.report = false;
                let track = slot.track.and_then(|ti| self.tracks.get(ti)).map(|t| t.id);
                self.outputs.push_back(RouterOutput::SlotChanged {
                    subscriber: sub.id,
                    slot: SlotId(slot_ix as u16),
                    track,
                    paused,
                });
            }
        }
        if went_down {
            sub.last_down = Some(now);
        }
        let changed = sub
            .last_desired
            .is_none_or(|d| desired.abs_diff(d) * 10 > d.max(1));
        // Short: the estimate would not carry every tile's preferred layer with the margin
        // an upgrade needs.
        let short = sub
            .estimate
            .is_some_and(|e| (e as f64) < desired as f64 * self.config.up_margin);
        let due = sub
            .desired_at
            .is_none_or(|at| now.saturating_duration_since(at) >= sub.probe_gap);
        if changed {
            sub.probe_gap = self.config.probe_every;
        } else if short && due {
            let rose = match (sub.estimate, sub.estimate_at_ask) {
                (Some(e), Some(before)) => e as f64 > before as f64 * 1.1,
                _ => true,
            };
            sub.probe_gap = if rose {
                self.config.probe_every
            } else {
                (sub.probe_gap * 2).min(self.config.probe_every_max)
            };
        }
        if changed || (short && due) {
            sub.last_desired = Some(desired);
            sub.desired_at = Some(now);
            sub.estimate_at_ask = sub.estimate;
            self.outputs.push_back(RouterOutput::DesiredBitrate {
                subscriber: sub.id,
                bps: desired,
                probe: !changed,
            });
        }
        for (ti, layer) in keyframes {
            let wanted = self
                .tracks
                .get(ti)
                .is_some_and(|t| t.layers[usize::from(layer.0)].wanted);
            if !wanted {
                self.request_keyframe_ix(ti, layer, now);
            }
        }
        self.scratch_alloc = alloc;
        self.scratch_alloc_ix = alloc_ix;
        self.scratch_out = out;
    }

    /// Works out which layers of each track are used, here and on other workers, and
    /// tells publishers (local) or their workers (remote) when that changed.
    fn update_demand(&mut self, now: Instant) {
        let pause_after = self.config.pause_after;
        let mut changes: Vec<RouterOutput> = Vec::new();
        for (_, track) in self.tracks.iter_mut() {
            if track.id.source == Source::Microphone {
                continue;
            }
            let mut used = LayerSet::EMPTY;
            for &(si, slot_id) in &track.sinks {
                if let Some(slot) = self
                    .subscribers
                    .get(si)
                    .and_then(|s| s.slots.get(usize::from(slot_id.0)))
                {
                    if let Some(l) = slot.current {
                        used.insert(l);
                    }
                    if let Some(l) = slot.target {
                        used.insert(l);
                    }
                }
            }
            if !track.info.local {
                if track.reported != Some(used) {
                    track.reported = Some(used);
                    changes.push(RouterOutput::RemoteDemand {
                        track: track.id,
                        layers: used,
                    });
                }
                continue;
            }
            let all = track.remote.iter().fold(used, |acc, (_, l)| acc.union(*l));
            let mut send = LayerSet::EMPTY;
            for l in 0..track.info.layers {
                let layer = &mut track.layers[usize::from(l)];
                if all.contains(LayerId(l)) {
                    layer.used_at = Some(now);
                }
                let recent = layer
                    .used_at
                    .is_some_and(|at| now.saturating_duration_since(at) < pause_after);
                if recent {
                    send.insert(LayerId(l));
                }
            }
            if send != track.sending {
                track.sending = send;
                changes.push(RouterOutput::SendLayers {
                    track: track.id,
                    layers: send,
                    count: track.info.layers,
                });
            }
        }
        self.outputs.extend(changes);
    }

    // ---- keyframes -----------------------------------------------------------------------

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
}

/// Empties a slot; whatever it carries next starts a new source.
fn clear_slot(slot: &mut Slot) {
    slot.track = None;
    slot.current = None;
    slot.target = None;
    slot.told_paused = false;
    slot.report = false;
    slot.rewriter.switch_source();
    slot.vp8.switch_source();
}

/// What a track's layer is assumed to cost before it was measured.
fn nominal(config: &RouterConfig, track: &Track, layer: usize) -> u64 {
    let n = usize::from(track.info.layers);
    if n <= 1 {
        return config.nominal_single_bps;
    }
    // A track with two layers has the top two.
    config.nominal_bps[(3 - n + layer).min(2)]
}

/// The smallest layer of `track` at least about `height` tall (its top layer otherwise).
fn layer_for_height(track: &Track, height: u16) -> LayerId {
    let n = track.info.layers.max(1);
    if height == u16::MAX {
        return LayerId(n - 1);
    }
    // Heights from keyframes where known, else the usual halving from a 720p top layer.
    let top = track.layers[usize::from(n - 1)]
        .size
        .map_or(720, |(_, h)| u32::from(h));
    for l in 0..n {
        let h = track.layers[usize::from(l)]
            .size
            .map_or(top >> (n - 1 - l), |(_, h)| u32::from(h));
        // A layer slightly smaller than the tile still looks fine; a much smaller one
        // would be blurry.
        if h * 100 >= u32::from(height) * 85 {
            return LayerId(l);
        }
    }
    LayerId(n - 1)
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
            layers: 1,
        }
    }

    fn simulcast_info() -> TrackInfo {
        TrackInfo {
            codec: Codec::Vp8,
            local: true,
            layers: 3,
        }
    }

    fn audio_info() -> TrackInfo {
        TrackInfo {
            codec: Codec::Opus,
            local: true,
            layers: 1,
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
        }
        for n in 1..=3 {
            r.add_subscriber(e(n), &[SlotKind::Audio, SlotKind::Audio], t0)
                .unwrap();
        }
        let p = pkt(mic(1), 100, 960, &[1, 2, 3]);
        let fw = r.handle_rtp(&p, t0).to_vec();
        let mut subs: Vec<_> = fw.iter().map(|f| f.subscriber).collect();
        subs.sort();
        assert_eq!(subs, vec![e(2), e(3)]);
        assert!(
            fw.iter()
                .all(|f| f.seq == 100 && f.timestamp == 960 && f.vp8.is_none())
        );
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
        assert!(
            out.contains(&RouterOutput::SlotChanged {
                subscriber: e(2),
                slot: SlotId(0),
                track: Some(cam(1)),
                paused: false,
            }),
            "{out:?}"
        );
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

    /// A VP8 packet with a 15-bit picture id, TL0PICIDX and TID (with layer sync `y`).
    fn tpkt(seq: u64, start: bool, key: bool, pid: u16, tid: u8, y: bool) -> RtpIn {
        let mut p = vec![
            0x80 | if start { 0x10 } else { 0 },
            0xe0,
            0x80 | (pid >> 8) as u8,
            pid as u8,
            7,
            (tid << 6) | if y { 0x20 } else { 0 },
        ];
        p.extend_from_slice(if key {
            &[0x10, 0x02, 0x00]
        } else {
            &[0x11, 0x02, 0x00]
        });
        pkt(cam(1), seq, u32::from(pid) * 3000, &p)
    }

    #[test]
    fn a_thinned_frame_keeps_its_fate_when_the_next_one_overtakes_it() {
        let t0 = Instant::now();
        let mut r = Router::new(RouterConfig::default());
        r.add_track(cam(1), video_info(), t0).unwrap();
        let thumb = LayoutSpec {
            view: View::Grid,
            tiles: vec![TileSpec {
                endpoint: Some(e(1)),
                height: 180,
            }],
        };
        r.add_subscriber_with_layout(e(2), &[SlotKind::Camera], Some(thumb), t0)
            .unwrap();
        drain(&mut r);
        let mut out = |p: RtpIn| -> Option<(u64, u16)> {
            let f = r.handle_rtp(&p, t0).first().copied()?;
            Some((f.seq, f.vp8.and_then(|v| v.picture_id)?))
        };
        // Keyframe (layer 0), then a layer-2 frame of three packets whose last packet
        // comes after the start of the next frame: all three are left out, and the next
        // frame follows the keyframe without a gap.
        assert_eq!(out(tpkt(100, true, true, 50, 0, false)), Some((100, 50)));
        assert_eq!(out(tpkt(101, true, false, 51, 2, true)), None);
        assert_eq!(out(tpkt(102, false, false, 51, 2, true)), None);
        assert_eq!(out(tpkt(104, true, false, 52, 1, true)), Some((101, 51)));
        assert_eq!(out(tpkt(103, false, false, 51, 2, true)), None);
        assert_eq!(out(tpkt(105, false, false, 52, 1, true)), Some((102, 51)));
        // A layer-1 frame whose tail is overtaken by a left-out layer-2 frame: the tail is
        // still sent, at the number it would have had.
        assert_eq!(out(tpkt(106, true, false, 53, 1, false)), Some((103, 52)));
        assert_eq!(out(tpkt(108, true, false, 54, 2, false)), None);
        assert_eq!(out(tpkt(107, false, false, 53, 1, false)), Some((104, 52)));
        assert_eq!(out(tpkt(109, true, false, 55, 0, false)), Some((105, 53)));
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
        // The default layout, before anyone spoke: newest cameras first.
        assert_eq!(r.slot_track(e(9), SlotId(0)), Some(cam(3)));
        assert_eq!(r.slot_track(e(9), SlotId(1)), Some(cam(2)));
        // Seed a continuous stream on slot 0.
        r.handle_rtp(&pkt(cam(3), 500, 9000, &VP8_KEY), t0);
        drain(&mut r);
        r.remove_track(cam(3), t0);
        r.handle_timeout(t0 + Duration::from_millis(100));
        assert_eq!(r.slot_track(e(9), SlotId(0)), Some(cam(1)));
        assert_eq!(r.slot_track(e(9), SlotId(1)), Some(cam(2)));
        // cam(1) continues slot 0's numbering at its first keyframe.
        let fw = r
            .handle_rtp(
                &pkt(cam(1), 7, 1, &VP8_KEY),
                t0 + Duration::from_millis(100),
            )
            .to_vec();
        assert_eq!(fw.len(), 1);
        assert_eq!(fw[0].slot, SlotId(0));
        assert_eq!(fw[0].seq, 501);
        assert_eq!(fw[0].timestamp, 9000 + 9000);
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
        p.layer = LayerId(1);
        assert!(
            r.handle_rtp(&p, t0).is_empty(),
            "a layer the track does not have"
        );
        assert_eq!(
            r.add_track(cam(1), video_info(), t0),
            Err(RouterError::TrackExists(cam(1)))
        );
        r.handle_keyframe_request(e(5), SlotId(3), t0);
        r.request_keyframe(cam(8), LayerId(0), t0);
        assert_eq!(
            r.set_layout(e(5), None, t0),
            Err(RouterError::UnknownSubscriber(e(5)))
        );
        r.handle_remote_demand(cam(8), 1, LayerSet(7), t0);
        r.set_estimate(e(5), Some(1), t0);
    }

    /// While the estimate falls short of what the layout would use, the router asks for a
    /// probe every `probe_every`, backing off while the estimate does not rise, and stops
    /// asking once it suffices.
    #[test]
    fn asks_for_probes_while_the_estimate_falls_short() {
        let t0 = Instant::now();
        let config = RouterConfig::default();
        let mut r = Router::new(config);
        r.add_track(cam(1), simulcast_info(), t0).unwrap();
        r.add_subscriber(e(2), &[SlotKind::Camera], t0).unwrap();
        let large = LayoutSpec {
            view: View::Speaker,
            tiles: vec![TileSpec {
                endpoint: Some(e(1)),
                height: 700,
            }],
        };
        r.set_layout(e(2), Some(large), t0).unwrap();
        r.set_estimate(e(2), Some(300_000), t0);
        let asks = |out: &[RouterOutput]| -> Vec<(u64, bool)> {
            out.iter()
                .filter_map(|o| match o {
                    RouterOutput::DesiredBitrate {
                        subscriber,
                        bps,
                        probe,
                    } if *subscriber == e(2) => Some((*bps, *probe)),
                    _ => None,
                })
                .collect()
        };
        let first = asks(&drain(&mut r));
        assert_eq!(first.last().map(|a| a.1), Some(false), "{first:?}");
        let want = first.last().unwrap().0;
        assert!(want >= config.nominal_bps[2], "{want}");

        // Run the ticks for 40 s with the estimate stuck: the first ask a second after the
        // estimate came, then the gap doubles up to 16 s.
        let mut at = Vec::new();
        let mut now = t0;
        while now < t0 + Duration::from_secs(40) {
            now += config.tick;
            r.handle_timeout(now);
            for (bps, probe) in asks(&drain(&mut r)) {
                assert!(probe && bps == want, "{bps} {probe}");
                at.push(now.duration_since(t0).as_millis() as u64 / 100);
            }
        }
        assert_eq!(at, vec![10, 20, 40, 80, 160, 320], "tenths of a second");

        // The estimate rises (a probe worked): the next ask comes a second later.
        r.set_estimate(e(2), Some(600_000), now);
        let mut next = None;
        for _ in 0..200 {
            now += config.tick;
            r.handle_timeout(now);
            if !asks(&drain(&mut r)).is_empty() {
                next = Some(now);
                break;
            }
        }
        assert_eq!(
            next.map(|n| n.duration_since(t0)),
            Some(Duration::from_secs(48)),
            "the ask due 16 s after the last"
        );
        r.set_estimate(e(2), Some(900_000), now);
        let mut later = None;
        for _ in 0..30 {
            now += config.tick;
            r.handle_timeout(now);
            if !asks(&drain(&mut r)).is_empty() {
                later = Some(now);
                break;
            }
        }
        assert_eq!(
            later.map(|l| l.duration_since(next.unwrap())),
            Some(Duration::from_secs(1)),
            "a rise since the last ask brings the gap back to 1 s"
        );

        // Enough bandwidth: no more probe asks (the wish itself may still change: the
        // layers here never send, so the top one is given up after a while).
        r.set_estimate(e(2), Some(want * 2), now);
        drain(&mut r);
        for _ in 0..300 {
            now += config.tick;
            r.handle_timeout(now);
            let a = asks(&drain(&mut r));
            assert!(a.iter().all(|a| !a.1), "{a:?}");
        }
    }

    #[test]
    fn layer_follows_tile_size() {
        let t0 = Instant::now();
        let mut r = Router::new(RouterConfig::default());
        r.add_track(cam(1), simulcast_info(), t0).unwrap();
        r.add_subscriber(e(2), &[SlotKind::Camera], t0).unwrap();
        let large = LayoutSpec {
            view: View::Speaker,
            tiles: vec![TileSpec {
                endpoint: Some(e(1)),
                height: 700,
            }],
        };
        r.set_layout(e(2), Some(large), t0).unwrap();
        assert_eq!(
            r.slot_layers(e(2), SlotId(0)),
            Some((None, Some(LayerId(2))))
        );
        let thumb = LayoutSpec {
            view: View::Grid,
            tiles: vec![TileSpec {
                endpoint: Some(e(1)),
                height: 170,
            }],
        };
        r.set_layout(e(2), Some(thumb), t0).unwrap();
        assert_eq!(
            r.slot_layers(e(2), SlotId(0)),
            Some((None, Some(LayerId(0))))
        );
    }
}
