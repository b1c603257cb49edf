//! Ids and small units of the forwarding core.

use std::fmt;

/// One participant's media connection, as the router sees it: it may publish tracks and
/// it may subscribe to others'. The server maps its own participant ids onto these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(pub u64);

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{:x}", self.0)
    }
}

/// What a track carries. An endpoint publishes at most one track of each source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Microphone,
    Camera,
    Screen,
}

impl Source {
    pub fn kind(self) -> MediaKind {
        match self {
            Source::Microphone => MediaKind::Audio,
            Source::Camera | Source::Screen => MediaKind::Video,
        }
    }
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
}

/// A published track: one source of one endpoint. With simulcast a track has several
/// layers (separate RTP streams); the track is still one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackId {
    pub endpoint: EndpointId,
    pub source: Source,
}

impl TrackId {
    pub fn new(endpoint: EndpointId, source: Source) -> Self {
        TrackId { endpoint, source }
    }
}

impl fmt::Display for TrackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{:?}", self.endpoint, self.source)
    }
}

/// A subscriber's receive slot, by its index in the slot list the subscriber was added with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId(pub u16);

/// A simulcast layer: 0 is the lowest resolution. Tracks without simulcast have only 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LayerId(pub u8);

impl LayerId {
    /// How many simulcast layers a track may have.
    pub const MAX: usize = 3;
}

/// A set of simulcast layers, as a bit mask (bit `n` is layer `n`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct LayerSet(pub u8);

impl LayerSet {
    pub const EMPTY: LayerSet = LayerSet(0);

    /// The first `n` layers.
    pub fn first(n: u8) -> LayerSet {
        LayerSet(((1u16 << n.min(8)) - 1) as u8)
    }

    pub fn contains(self, layer: LayerId) -> bool {
        layer.0 < 8 && self.0 & (1 << layer.0) != 0
    }

    pub fn insert(&mut self, layer: LayerId) {
        if layer.0 < 8 {
            self.0 |= 1 << layer.0;
        }
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn union(self, other: LayerSet) -> LayerSet {
        LayerSet(self.0 | other.0)
    }

    /// One flag per layer for the first `n` layers, lowest first.
    pub fn flags(self, n: u8) -> Vec<bool> {
        (0..n.min(8)).map(|l| self.contains(LayerId(l))).collect()
    }
}

/// What a receive slot is for: which tracks the router may map into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlotKind {
    /// Microphone tracks.
    Audio,
    /// Camera tracks.
    Camera,
    /// Screen-share tracks.
    Screen,
}

impl SlotKind {
    /// The source of the tracks this kind of slot carries.
    pub fn source(self) -> Source {
        match self {
            SlotKind::Audio => Source::Microphone,
            SlotKind::Camera => Source::Camera,
            SlotKind::Screen => Source::Screen,
        }
    }
}
