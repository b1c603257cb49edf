//! Messages to one participant's WebSocket, serialized once, queued with a bound.
//!
//! A message for a whole room (someone joined, who is speaking) is turned into JSON once
//! and the text shared by every member's outbox, so a join in a room of 250 costs one
//! serialization, not 249.
//!
//! The queue is bounded (`limits.outbox_messages`): a client that stops reading cannot make
//! the server buffer without end. When its queue is full the message is dropped and the
//! session is told ([`OutboxRx::overflowed`]); it closes the connection with `too_slow`.

use std::sync::Arc;

use ting_proto::ServerMsg;
use tokio::sync::{Notify, mpsc};

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

/// Where the conductor and the media workers put a participant's messages. Sending never
/// blocks and never grows memory past the bound.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<OutMsg>,
    overflow: Arc<Notify>,
    takeover: Arc<Notify>,
}

/// The session's end of an [`Outbox`].
#[derive(Debug)]
pub struct OutboxRx {
    rx: mpsc::Receiver<OutMsg>,
    overflow: Arc<Notify>,
    takeover: Arc<Notify>,
}

/// An outbox holding at most `capacity` messages.
pub fn outbox(capacity: usize) -> (Outbox, OutboxRx) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let overflow = Arc::new(Notify::new());
    let takeover = Arc::new(Notify::new());
    (
        Outbox {
            tx,
            overflow: overflow.clone(),
            takeover: takeover.clone(),
        },
        OutboxRx {
            rx,
            overflow,
            takeover,
        },
    )
}

impl Outbox {
    /// Queues `msg`. Returns false when the queue is full (the session is then told to
    /// close) or the session is gone.
    pub fn send(&self, msg: OutMsg) -> bool {
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflow.notify_one();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Tells the session holding the other end to let go of it, as if its socket had
    /// dropped: the participant came back on a new socket (`resume`) while the server still
    /// held the old one (a network that went away without closing it).
    pub fn take_over(&self) {
        self.takeover.notify_one();
    }
}

impl OutboxRx {
    /// The next message; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<OutMsg> {
        self.rx.recv().await
    }

    /// The next message if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Option<OutMsg> {
        self.rx.try_recv().ok()
    }

    /// Notified once a message could not be queued because the queue was full.
    pub fn overflow(&self) -> Arc<Notify> {
        self.overflow.clone()
    }

    /// Notified when a new socket takes this participant over ([`Outbox::take_over`]).
    pub fn takeover(&self) -> Arc<Notify> {
        self.takeover.clone()
    }

    /// Throws away what is queued, and forgets an overflow and a takeover: for a
    /// participant resuming, who
    /// gets the whole state afresh instead. Returns how many messages were dropped.
    pub fn discard_backlog(&mut self) -> usize {
        let mut n = 0;
        while self.rx.try_recv().is_ok() {
            n += 1;
        }
        // A stored permit would end the resumed session (as too slow, or taken over) at once.
        let _ = futures_util::FutureExt::now_or_never(self.overflow.notified());
        let _ = futures_util::FutureExt::now_or_never(self.takeover.notified());
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_outbox_drops_and_says_so() {
        let (tx, mut rx) = outbox(2);
        let m = OutMsg::new(&ServerMsg::Pong);
        assert!(tx.send(m.clone()));
        assert!(tx.send(m.clone()));
        assert!(!tx.send(m.clone()), "third message exceeds the bound");
        tokio::time::timeout(std::time::Duration::from_secs(1), rx.overflow().notified())
            .await
            .expect("overflow is signalled");
        assert!(rx.recv().await.is_some());
        assert!(rx.recv().await.is_some());
        drop(tx);
        assert!(rx.recv().await.is_none(), "only two were kept");
    }

    #[tokio::test]
    async fn a_discarded_backlog_forgets_its_overflow() {
        let (tx, mut rx) = outbox(1);
        let m = OutMsg::new(&ServerMsg::Pong);
        assert!(tx.send(m.clone()));
        assert!(!tx.send(m.clone()));
        assert_eq!(rx.discard_backlog(), 1);
        let overflowed = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            rx.overflow().notified(),
        )
        .await;
        assert!(overflowed.is_err(), "the overflow was forgotten");
        assert!(tx.send(m));
        assert!(rx.recv().await.is_some());
    }
}
