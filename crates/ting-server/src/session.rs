//! One client's WebSocket: reads its messages, asks the conductor, writes the answers and
//! whatever the room sends it.
//!
//! Input is untrusted. A message that is too large, not JSON, or not valid now gets an
//! `error` naming the problem and the connection stays open; only a message over the hard
//! frame limit (twice the configured limit, at least 1 MiB), which the WebSocket layer
//! refuses before it is buffered whole, closes it.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use ting_control::{LeaveReason, ParticipantId};
use ting_proto::{ClientMsg, ErrorCode, ErrorMsg, PROTOCOL_VERSION, ParseError, ServerMsg};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::AppState;
use crate::conductor::ConductorCmd;
use crate::outbox::OutMsg;

/// How long a worker may take to answer an offer.
const OFFER_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(socket: WebSocket, state: Arc<AppState>) {
    let (mut sink, mut stream) = socket.split();
    let (outbox_tx, mut outbox) = mpsc::unbounded_channel::<OutMsg>();
    // Handed to the conductor at join; until then this session holds it.
    let mut outbox_tx = Some(outbox_tx);
    let mut pid: Option<ParticipantId> = None;
    let limit = state.config.limits.max_message_bytes;
    let mut left = false;

    loop {
        let msg = tokio::select! {
            incoming = stream.next() => incoming,
            out = outbox.recv(), if outbox_tx.is_none() => {
                match out {
                    Some(msg) => {
                        let text: &str = &msg.text;
                        if sink.send(Message::Text(text.into())).await.is_err() || msg.fatal {
                            break;
                        }
                        continue;
                    }
                    // The conductor dropped us: removed from the room.
                    None => break,
                }
            }
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(_))) => {
                let e = ParseError::Binary.to_error_msg();
                if reply(&mut sink, &state, ServerMsg::Error(e)).await.is_err() {
                    break;
                }
                continue;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None => break,
            Some(Err(e)) => {
                debug!(error = %e, "websocket closed with an error");
                break;
            }
        };
        let parsed = ClientMsg::parse(text.as_str(), limit);
        if let Some(pid) = pid {
            let _ = state.conductor.send(ConductorCmd::Seen { pid }).await;
        }
        let out = match parsed {
            Err(e) => Some(ServerMsg::Error(e.to_error_msg())),
            Ok(ClientMsg::Join(join)) => {
                if pid.is_some() {
                    Some(error(
                        ErrorCode::AlreadyJoined,
                        "this session already joined a room",
                    ))
                } else if join.protocol != PROTOCOL_VERSION {
                    Some(error(
                        ErrorCode::UnsupportedVersion,
                        format!(
                            "protocol {} is not spoken here; this server speaks {PROTOCOL_VERSION}",
                            join.protocol
                        ),
                    ))
                } else {
                    let (tx, rx) = oneshot::channel();
                    let cmd = ConductorCmd::Join {
                        room: join.room,
                        name: join.name,
                        outbox: outbox_tx.clone().expect("not joined, so still held"),
                        reply: tx,
                    };
                    match ask(&state, cmd, rx).await {
                        Ok(Ok((id, welcome))) => {
                            pid = Some(id);
                            outbox_tx = None;
                            Some(ServerMsg::Welcome(welcome))
                        }
                        Ok(Err(e)) => Some(ServerMsg::Error(e)),
                        Err(e) => Some(ServerMsg::Error(e)),
                    }
                }
            }
            Ok(ClientMsg::Offer(offer)) => match pid {
                None => Some(not_joined()),
                Some(pid) => {
                    let (tx, rx) = oneshot::channel();
                    let cmd = ConductorCmd::Offer {
                        pid,
                        offer,
                        reply: tx,
                    };
                    Some(
                        match tokio::time::timeout(OFFER_TIMEOUT, ask(&state, cmd, rx)).await {
                            Ok(Ok(Ok(sdp))) => ServerMsg::Answer { sdp },
                            Ok(Ok(Err(e)) | Err(e)) => ServerMsg::Error(e),
                            Err(_) => error(
                                ErrorCode::Internal,
                                "the media worker did not answer the offer in time",
                            ),
                        },
                    )
                }
            },
            Ok(ClientMsg::Media(media)) => match pid {
                None => Some(not_joined()),
                Some(pid) => {
                    let _ = state
                        .conductor
                        .send(ConductorCmd::Media { pid, media })
                        .await;
                    None
                }
            },
            Ok(ClientMsg::Layout(layout)) => match pid {
                None => Some(not_joined()),
                Some(pid) => {
                    let (tx, rx) = oneshot::channel();
                    let cmd = ConductorCmd::Layout {
                        pid,
                        layout,
                        reply: tx,
                    };
                    match ask(&state, cmd, rx).await {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) | Err(e) => Some(ServerMsg::Error(e)),
                    }
                }
            },
            Ok(ClientMsg::Ping) => Some(ServerMsg::Pong),
            Ok(ClientMsg::Leave) => {
                if let Some(pid) = pid {
                    leave(&state, pid).await;
                    left = true;
                }
                break;
            }
        };
        if let Some(out) = out
            && reply(&mut sink, &state, out).await.is_err()
        {
            break;
        }
    }
    if let Some(pid) = pid
        && !left
    {
        // The socket closed without a goodbye: the tab was closed or the network went.
        leave(&state, pid).await;
    }
    let _ = sink.close().await;
}

async fn leave(state: &AppState, pid: ParticipantId) {
    let cmd = ConductorCmd::Leave {
        pid,
        reason: LeaveReason::Left,
    };
    let _ = state.conductor.send(cmd).await;
}

async fn reply(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    state: &AppState,
    msg: ServerMsg,
) -> Result<(), axum::Error> {
    if matches!(msg, ServerMsg::Error(_)) {
        state
            .metrics
            .control
            .signalling_errors
            .fetch_add(1, Relaxed);
    }
    sink.send(Message::Text(msg.to_json().into())).await
}

async fn ask<T>(
    state: &AppState,
    cmd: ConductorCmd,
    rx: oneshot::Receiver<T>,
) -> Result<T, ErrorMsg> {
    if state.conductor.send(cmd).await.is_err() {
        return Err(ErrorMsg {
            code: ErrorCode::Unavailable,
            message: "the server is shutting down".into(),
            fatal: true,
        });
    }
    rx.await.map_err(|_| ErrorMsg {
        code: ErrorCode::Unavailable,
        message: "the server is shutting down".into(),
        fatal: true,
    })
}

fn error(code: ErrorCode, message: impl Into<String>) -> ServerMsg {
    ServerMsg::error(code, message)
}

fn not_joined() -> ServerMsg {
    error(ErrorCode::NotJoined, "send join first")
}
