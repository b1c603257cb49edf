//! Messages to one participant's WebSocket, serialized once.
//!
//! A message for a whole room (someone joined, who is speaking) is turned into JSON once
//! and the text shared by every member's outbox, so a join in a room of 250 costs one
//! serialization, not 249.

use std::sync::Arc;

use ting_proto::ServerMsg;
use tokio::sync::mpsc;

/// One message to a client, as the text frame it is sent as.
#[derive(Debug, Clone)]
pub struct OutMsg {
    pub text: Arc<str>,
    /// The server closes the connection after sending it.
    pub fatal: bool,
}

impl OutMsg {
    pub fn new(msg: &ServerMsg) -> OutMsg {
        OutMsg {
            text: msg.to_json().into(),
            fatal: matches!(msg, ServerMsg::Error(e) if e.fatal),
        }
    }
}

impl From<ServerMsg> for OutMsg {
    fn from(msg: ServerMsg) -> OutMsg {
        OutMsg::new(&msg)
    }
}

/// Where the conductor and the media workers put a participant's messages.
pub type Outbox = mpsc::UnboundedSender<OutMsg>;
