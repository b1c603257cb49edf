//! What a subscriber shows: the input that fills its camera slots.
//!
//! A client reports its layout (which cameras, at which size, speaker or grid view); the
//! router maps those cameras into the client's camera slots, in the order given, and picks
//! each one's simulcast layer from its size. A tile may name nobody in particular but
//! "the active speaker", which the router resolves itself, so a speaker view follows the
//! speaker without a round trip to the client.

use crate::id::EndpointId;

/// Speaker view or grid view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum View {
    /// One large tile (the first), a strip of thumbnails.
    #[default]
    Speaker,
    /// Equal tiles.
    Grid,
}

/// One camera tile on a subscriber's screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileSpec {
    /// Whose camera; `None`: the active speaker, or, when the active speaker is the
    /// subscriber itself or shown in another tile, the next most recent speaker.
    pub endpoint: Option<EndpointId>,
    /// Height on screen in device pixels.
    pub height: u16,
}

/// A subscriber's layout: its camera tiles, most important first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayoutSpec {
    pub view: View,
    pub tiles: Vec<TileSpec>,
}

impl LayoutSpec {
    /// The most tiles the router reads; later ones cannot get a slot anyway.
    pub const MAX_TILES: usize = 64;

    /// The layout the router uses for a subscriber that reported none: the active speaker
    /// large, the most recent speakers as thumbnails.
    pub fn server_default(camera_slots: usize, large: u16, thumbnail: u16) -> LayoutSpec {
        LayoutSpec {
            view: View::Speaker,
            tiles: (0..camera_slots)
                .map(|i| TileSpec {
                    endpoint: None,
                    height: if i == 0 { large } else { thumbnail },
                })
                .collect(),
        }
    }
}
