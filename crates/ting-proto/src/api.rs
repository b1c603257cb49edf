//! The control API's request and response bodies (`/v1`, JSON). `docs/api.md` describes
//! them with the routes; `docs/openapi.json` is the machine-readable form.
//!
//! Requests refuse unknown fields, so a misspelt field is an error naming it rather than a
//! setting silently not made. Times are seconds since the Unix epoch.

use serde::{Deserialize, Deserializer, Serialize};

use crate::{MediaState, Role};

/// `POST /v1/rooms`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoom {
    /// 1 to 64 of `a-z A-Z 0-9 - _`: the `<room>` of `/m/<room>`.
    pub name: String,
    #[serde(default)]
    pub starts_at: Option<u64>,
    #[serde(default)]
    pub ends_at: Option<u64>,
    /// 4 to 64 characters; stored only as a salted hash.
    #[serde(default)]
    pub passcode: Option<String>,
    #[serde(default)]
    pub lobby: bool,
    #[serde(default)]
    pub capacity: Option<u32>,
    #[serde(default)]
    pub e2ee_required: bool,
    #[serde(default)]
    pub allow_unmute: Option<bool>,
}

/// `PATCH /v1/rooms/{room}`: only the fields given change; `null` clears an optional one.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRoom {
    #[serde(default, deserialize_with = "some")]
    pub starts_at: Option<Option<u64>>,
    #[serde(default, deserialize_with = "some")]
    pub ends_at: Option<Option<u64>>,
    #[serde(default, deserialize_with = "some")]
    pub passcode: Option<Option<String>>,
    #[serde(default)]
    pub lobby: Option<bool>,
    #[serde(default, deserialize_with = "some")]
    pub capacity: Option<Option<u32>>,
    #[serde(default)]
    pub e2ee_required: Option<bool>,
    #[serde(default)]
    pub allow_unmute: Option<bool>,
}

impl std::fmt::Debug for CreateRoom {
    /// Without the passcode.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateRoom")
            .field("name", &self.name)
            .field("has_passcode", &self.passcode.is_some())
            .field("lobby", &self.lobby)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for UpdateRoom {
    /// Without the passcode.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateRoom")
            .field("passcode_changed", &self.passcode.is_some())
            .field("lobby", &self.lobby)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// A present field (even `null`) is `Some`; an absent one stays `None` by `default`.
fn some<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A room as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    pub name: String,
    /// Made through the API (not an open room someone opened by joining).
    pub defined: bool,
    pub starts_at: Option<u64>,
    pub ends_at: Option<u64>,
    /// Whether it has a passcode (the passcode itself is never shown).
    pub passcode: bool,
    pub lobby: bool,
    pub capacity: Option<u32>,
    pub e2ee_required: bool,
    pub allow_unmute: bool,
    /// The meeting in progress, if any.
    pub live: Option<LiveInfo>,
}

/// A meeting in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveInfo {
    /// The meeting's id (chat is archived per meeting).
    pub meeting: String,
    pub participants: u32,
    pub waiting: u32,
    pub locked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomList {
    pub rooms: Vec<RoomInfo>,
}

/// `POST /v1/rooms/{room}/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    #[serde(default = "participant")]
    pub role: Role,
    /// The display name; the person types one when it is left out.
    #[serde(default)]
    pub name: Option<String>,
    /// A pseudonymous subject (an opaque id from your system, never an e-mail address);
    /// removing someone keeps this subject out of the meeting.
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
    /// Wait in the lobby even if the room has none (guest links).
    #[serde(default)]
    pub lobby: bool,
}

fn participant() -> Role {
    Role::Participant
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub token: String,
    /// `/m/<room>?t=<token>`, prefixed with `http.public_url` when that is set.
    pub link: String,
    pub room: String,
    pub role: Role,
    pub expires_at: u64,
}

/// Someone in a room, or waiting in its lobby.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantEntry {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub media: MediaState,
    pub waiting: bool,
    pub hand_raised: bool,
    /// Not shown in the meeting: a WHEP viewer (or a WHIP publisher whose offer is not yet
    /// accepted). It counts against the room's capacity.
    #[serde(default)]
    pub hidden: bool,
    /// Encrypts its media and chat end to end (joined with an announcement).
    #[serde(default)]
    pub e2ee: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantList {
    pub participants: Vec<ParticipantEntry>,
}

/// Every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// A machine-readable code, e.g. `invalid`, `not_found`, `unauthorized`.
    pub error: String,
    /// A sentence for people.
    pub message: String,
    /// The request field at fault, for `invalid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_tells_absent_from_null() {
        let u: UpdateRoom = serde_json::from_str(r#"{"passcode":null,"lobby":true}"#).unwrap();
        assert_eq!(u.passcode, Some(None));
        assert_eq!(u.lobby, Some(true));
        assert_eq!(u.capacity, None);
        let u: UpdateRoom = serde_json::from_str(r#"{"capacity":5}"#).unwrap();
        assert_eq!(u.capacity, Some(Some(5)));
        assert!(serde_json::from_str::<UpdateRoom>(r#"{"lobbby":true}"#).is_err());
    }

    #[test]
    fn token_requests_default_to_participant() {
        let t: TokenRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(t.role, Role::Participant);
        assert!(serde_json::from_str::<TokenRequest>(r#"{"role":"king"}"#).is_err());
    }
}
