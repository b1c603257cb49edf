//! One client's WebSocket: reads its messages, asks the conductor, writes the answers and
//! whatever the room sends it.
//!
//! Input is untrusted. A message that is too large, not JSON, or not valid now gets an
//! `error` naming the problem and the connection stays open; only a message over the hard
//! frame limit (twice the configured limit, at least 1 MiB), which the WebSocket layer
//! refuses before it is buffered whole, closes it.
//!
//! Every wait has a deadline and every queue a bound: `join` must come within
//! `limits.join_timeout_secs`; a write the client does not take within
//! `limits.write_timeout_secs` ends the connection; the outbox holds
//! `limits.outbox_messages` (a client that stops reading is closed with `too_slow`); each
//! connection may send `limits.messages_per_second` (fewer for `media` and `layout`),
//! beyond which messages are dropped with `rate_limited`; an offer with more m-lines than
//! the slots allow is refused before it is parsed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use ting_control::{Command, LeaveReason, ParticipantId};
use ting_proto::{
    ClientMsg, ErrorCode, ErrorMsg, PROTOCOL_VERSION, ParseError, ParticipantRef, ServerMsg, Source,
};
use tokio::sync::oneshot;
use tracing::debug;

use crate::AppState;
use crate::conductor::{ConductorCmd, control_role};
use crate::metrics::Limit;
use crate::ratelimit::TokenBucket;

/// How long a worker may take to answer an offer.
const OFFER_TIMEOUT: Duration = Duration::from_secs(10);

/// The m-lines an offer may have beyond its receive slots: microphone, camera, screen share
/// and one spare (a data channel some stacks always add).
const PUBLISH_LINES: usize = 4;

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;

/// Why a session ended.
enum End {
    /// The client left, or the server ended the session.
    Done,
    /// The client did not read; its participant leaves with that reason.
    TooSlow,
    /// The connection dropped without a goodbye (network gone, tab reloaded or closed): the
    /// participant waits for a `resume` until it times out.
    Gone,
}

pub async fn run(socket: WebSocket, state: Arc<AppState>, addr: SocketAddr) {
    let (mut sink, mut stream) = socket.split();
    let (outbox_tx, mut outbox) = crate::outbox::outbox(state.config.limits.outbox_messages);
    // Handed to the conductor at join; until then this session holds it.
    let mut outbox_tx = Some(outbox_tx);
    let mut overflow = outbox.overflow();
    let mut takeover = outbox.takeover();
    let mut pid: Option<ParticipantId> = None;
    let limits = &state.config.limits;
    let limit = limits.max_message_bytes;
    let max_lines = PUBLISH_LINES
        + usize::from(state.config.slots.audio)
        + usize::from(state.config.slots.video)
        + usize::from(state.config.slots.screen);
    let write_timeout = Duration::from_secs(limits.write_timeout_secs);
    // A goodbye to a client that may not be reading gets a moment, not the full timeout.
    let farewell = write_timeout.min(Duration::from_secs(1));
    let join_deadline = tokio::time::Instant::now() + Duration::from_secs(limits.join_timeout_secs);
    let now = Instant::now();
    let rate =
        |per_second: u32| TokenBucket::new(f64::from(per_second), 2.0 * f64::from(per_second), now);
    let mut all_messages = rate(limits.messages_per_second);
    let mut media_messages = rate(limits.media_messages_per_second);
    let mut layout_messages = rate(limits.layout_messages_per_second);
    let mut chat_messages = rate(limits.chat_messages_per_second);
    // At most one `rate_limited` error a second: a flood gets no flood of answers.
    let mut last_limited_error: Option<Instant> = None;
    let mut flood = Flood::new(limits.messages_per_second, now);
    let mut closing = state.closing.clone();
    let mut left = false;
    let mut end = End::Done;

    loop {
        let msg = tokio::select! {
            incoming = stream.next() => incoming,
            out = outbox.recv(), if outbox_tx.is_none() => {
                match out {
                    Some(msg) => {
                        let text: &str = &msg.text;
                        match write(&mut sink, &state, Message::Text(text.into()), write_timeout)
                            .await
                        {
                            Ok(()) if !msg.fatal => continue,
                            Ok(()) | Err(WriteFailed::Closed) => break,
                            Err(WriteFailed::Timeout) => {
                                end = End::TooSlow;
                                break;
                            }
                        }
                    }
                    // The conductor dropped us: removed from the room.
                    None => break,
                }
            }
            () = overflow.notified(), if outbox_tx.is_none() => {
                state.metrics.control.limited(Limit::TooSlow);
                let e = error_msg(
                    ErrorCode::TooSlow,
                    format!(
                        "this connection did not take the server's messages as fast as they \
                         came ({} queued, limits.outbox_messages); it is closed",
                        limits.outbox_messages
                    ),
                    true,
                );
                let _ = write(&mut sink, &state, reply_text(&state, e), farewell).await;
                end = End::TooSlow;
                break;
            }
            () = takeover.notified(), if outbox_tx.is_none() => {
                // The participant resumed on a new socket while this one looked open: it
                // is dead (a network that vanished), and the new one takes over.
                end = End::Gone;
                break;
            }
            () = tokio::time::sleep_until(join_deadline), if pid.is_none() => {
                state.metrics.control.limited(Limit::JoinTimeout);
                let e = error_msg(
                    ErrorCode::JoinTimeout,
                    format!(
                        "no join within {} seconds of connecting (limits.join_timeout_secs)",
                        limits.join_timeout_secs
                    ),
                    true,
                );
                let _ = write(&mut sink, &state, reply_text(&state, e), farewell).await;
                break;
            }
            () = async { let _ = closing.wait_for(|c| *c).await; } => break,
        };
        let (frame, control) = match msg {
            Some(Ok(Message::Close(_))) | None => {
                end = End::Gone;
                break;
            }
            Some(Err(e)) => {
                debug!(error = %e, "websocket closed with an error");
                end = End::Gone;
                break;
            }
            // The WebSocket layer answers pings itself.
            Some(Ok(m @ (Message::Ping(_) | Message::Pong(_)))) => (m, true),
            Some(Ok(m)) => (m, false),
        };
        let now = Instant::now();
        // Every frame, pings included, counts against the connection's budget before it is
        // even parsed; far past it, the connection is flooding and ends.
        if !all_messages.allow(now) {
            state.metrics.control.limited(Limit::RateLimited);
            if flood.dropped(now) {
                let _ = write(
                    &mut sink,
                    &state,
                    reply_text(&state, flood.error()),
                    farewell,
                )
                .await;
                break;
            }
            if !control && rate_error_due(&mut last_limited_error, now) {
                let e = rate_limited(
                    "messages",
                    "limits.messages_per_second",
                    limits.messages_per_second,
                );
                if write(&mut sink, &state, reply_text(&state, e), write_timeout)
                    .await
                    .is_err()
                {
                    break;
                }
            }
            continue;
        }
        let text = match frame {
            Message::Text(t) => t,
            Message::Binary(_) => {
                let e = ParseError::Binary.to_error_msg();
                if write(
                    &mut sink,
                    &state,
                    reply_text(&state, ServerMsg::Error(e)),
                    write_timeout,
                )
                .await
                .is_err()
                {
                    break;
                }
                continue;
            }
            _ => continue,
        };
        let parsed = ClientMsg::parse(text.as_str(), limit);
        if let Some(pid) = pid {
            let _ = state.conductor.send(ConductorCmd::Seen { pid }).await;
        }
        let limited = match &parsed {
            Ok(ClientMsg::Media(_)) if !media_messages.allow(now) => Some(rate_limited(
                "media messages",
                "limits.media_messages_per_second",
                limits.media_messages_per_second,
            )),
            Ok(ClientMsg::Layout(_)) if !layout_messages.allow(now) => Some(rate_limited(
                "layout messages",
                "limits.layout_messages_per_second",
                limits.layout_messages_per_second,
            )),
            Ok(ClientMsg::Chat(_)) if !chat_messages.allow(now) => {
                state.metrics.control.limited(Limit::Chat);
                Some(rate_limited(
                    "chat messages",
                    "limits.chat_messages_per_second",
                    limits.chat_messages_per_second,
                ))
            }
            _ => None,
        };
        if let Some(e) = limited {
            state.metrics.control.limited(Limit::RateLimited);
            if rate_error_due(&mut last_limited_error, now)
                && write(&mut sink, &state, reply_text(&state, e), write_timeout)
                    .await
                    .is_err()
            {
                break;
            }
            continue;
        }
        let out = match parsed {
            Err(e) => Some(ServerMsg::Error(e.to_error_msg())),
            Ok(ClientMsg::Resume(r)) => {
                if pid.is_some() {
                    Some(error(
                        ErrorCode::AlreadyJoined,
                        "this session already joined a room",
                    ))
                } else if r.protocol != PROTOCOL_VERSION {
                    Some(error(
                        ErrorCode::UnsupportedVersion,
                        format!(
                            "protocol {} is not spoken here; this server speaks {PROTOCOL_VERSION}",
                            r.protocol
                        ),
                    ))
                } else {
                    let (tx, rx) = oneshot::channel();
                    let cmd = ConductorCmd::Resume {
                        token: r.token,
                        e2ee: r.e2ee,
                        address: addr.ip(),
                        reply: tx,
                    };
                    match ask(&state, cmd, rx).await {
                        // The participant's own queue, kept while it was away, is this
                        // session's now; the fresh one is not needed.
                        Ok(Ok((id, welcome, parked))) => {
                            pid = Some(id);
                            outbox_tx = None;
                            outbox = parked;
                            overflow = outbox.overflow();
                            takeover = outbox.takeover();
                            Some(welcome)
                        }
                        Ok(Err(e)) | Err(e) => Some(ServerMsg::Error(e)),
                    }
                }
            }
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
                        join,
                        address: addr.ip(),
                        outbox: outbox_tx.clone().expect("not joined, so still held"),
                        existing_room: false,
                        hidden: false,
                        reply: tx,
                    };
                    match ask(&state, cmd, rx).await {
                        // A welcome, or `waiting` in the lobby: either way the conductor now
                        // holds the outbox and sends what follows through it.
                        Ok(Ok((id, first))) => {
                            pid = Some(id);
                            outbox_tx = None;
                            Some(first)
                        }
                        Ok(Err(e)) => Some(ServerMsg::Error(e)),
                        Err(e) => Some(ServerMsg::Error(e)),
                    }
                }
            }
            Ok(ClientMsg::Offer(offer)) => match pid {
                None => Some(not_joined()),
                Some(_) if count_mlines(&offer.sdp) > max_lines => {
                    state.metrics.control.limited(Limit::OfferLines);
                    Some(error(
                        ErrorCode::BadOffer,
                        format!(
                            "the SDP offer has {} m-lines; this server reads at most {max_lines} \
                             (its receive slots and {PUBLISH_LINES} for publishing)",
                            count_mlines(&offer.sdp)
                        ),
                    ))
                }
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
            Ok(ClientMsg::IceRestart { sdp }) => match pid {
                None => Some(not_joined()),
                Some(_) if count_mlines(&sdp) > max_lines => {
                    state.metrics.control.limited(Limit::OfferLines);
                    Some(error(
                        ErrorCode::BadOffer,
                        format!(
                            "the SDP offer has {} m-lines; this server reads at most {max_lines}",
                            count_mlines(&sdp)
                        ),
                    ))
                }
                Some(pid) => {
                    let (tx, rx) = oneshot::channel();
                    let cmd = ConductorCmd::IceRestart {
                        pid,
                        sdp,
                        reply: tx,
                    };
                    Some(
                        match tokio::time::timeout(OFFER_TIMEOUT, ask(&state, cmd, rx)).await {
                            Ok(Ok(Ok(sdp))) => ServerMsg::Answer { sdp },
                            Ok(Ok(Err(e)) | Err(e)) => ServerMsg::Error(e),
                            Err(_) => error(
                                ErrorCode::Internal,
                                "the media worker did not answer the ICE restart in time",
                            ),
                        },
                    )
                }
            },
            Ok(ClientMsg::Ping) => Some(ServerMsg::Pong),
            Ok(ClientMsg::Leave) => {
                if let Some(pid) = pid {
                    leave(&state, pid, LeaveReason::Left).await;
                    left = true;
                }
                break;
            }
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
            Ok(ClientMsg::E2eeKeys { keys }) => match pid {
                None => Some(not_joined()),
                Some(pid) => {
                    let (tx, rx) = oneshot::channel();
                    let cmd = ConductorCmd::E2eeKeys {
                        pid,
                        keys,
                        reply: tx,
                    };
                    match ask(&state, cmd, rx).await {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) | Err(e) => Some(ServerMsg::Error(e)),
                    }
                }
            },
            Ok(other) => match (pid, command(other)) {
                (None, _) => Some(not_joined()),
                (Some(_), Err((code, message))) => Some(error(code, message)),
                (Some(pid), Ok(cmd)) => {
                    let (tx, rx) = oneshot::channel();
                    let cmd = ConductorCmd::Control {
                        pid,
                        cmd,
                        reply: tx,
                    };
                    match ask(&state, cmd, rx).await {
                        Ok(Ok(answer)) => answer,
                        Ok(Err(e)) | Err(e) => Some(ServerMsg::Error(e)),
                    }
                }
            },
        };
        if let Some(out) = out {
            match write(&mut sink, &state, reply_text(&state, out), write_timeout).await {
                Ok(()) => {}
                Err(WriteFailed::Closed) => break,
                Err(WriteFailed::Timeout) => {
                    end = End::TooSlow;
                    break;
                }
            }
        }
    }
    if let Some(pid) = pid
        && !left
    {
        match end {
            // The socket dropped without a goodbye: the participant stays until it comes
            // back (`resume`) or times out; its queue waits with the conductor.
            End::Gone => {
                let _ = state
                    .conductor
                    .send(ConductorCmd::Detach { pid, rx: outbox })
                    .await;
            }
            End::Done => leave(&state, pid, LeaveReason::Left).await,
            End::TooSlow => leave(&state, pid, LeaveReason::TooSlow).await,
        }
    }
    let _ = tokio::time::timeout(farewell, sink.close()).await;
}

/// A client that goes on sending far past its budget is not confused but flooding: more
/// than ten times `limits.messages_per_second` dropped within one second ends it.
struct Flood {
    limit: u32,
    window: Instant,
    dropped: u32,
}

impl Flood {
    fn new(per_second: u32, now: Instant) -> Flood {
        Flood {
            limit: per_second.saturating_mul(10),
            window: now,
            dropped: 0,
        }
    }

    /// Counts a dropped message; true when the connection should end.
    fn dropped(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.dropped = 0;
        }
        self.dropped += 1;
        self.dropped > self.limit
    }

    fn error(&self) -> ServerMsg {
        error_msg(
            ErrorCode::RateLimited,
            format!(
                "more than {} messages a second over limits.messages_per_second were dropped; \
                 the connection is closed",
                self.limit
            ),
            true,
        )
    }
}

/// A client message for the control plane as its command. Participant ids that are not in
/// the 16-hex-digit form name nobody.
fn command(msg: ClientMsg) -> Result<Command, (ErrorCode, &'static str)> {
    let who = |r: &ParticipantRef| {
        ParticipantId::parse(&r.0).ok_or((
            ErrorCode::UnknownParticipant,
            "Nobody has that participant id (16 hexadecimal digits).",
        ))
    };
    let source = |s: Source| match s {
        Source::Microphone => ting_control::Source::Microphone,
        Source::Camera => ting_control::Source::Camera,
        Source::Screen => ting_control::Source::Screen,
    };
    Ok(match msg {
        ClientMsg::Media(m) => Command::Media(ting_control::MediaState {
            audio: m.audio,
            video: m.video,
            screen: m.screen,
        }),
        ClientMsg::Hand { raised } => Command::Hand(raised),
        ClientMsg::Chat(c) => Command::Chat {
            text: c.text,
            to: c.to.as_ref().map(who).transpose()?,
            e2ee: c.e2ee,
        },
        ClientMsg::Admit { participant } => {
            Command::Admit(participant.as_ref().map(who).transpose()?)
        }
        ClientMsg::Deny { participant } => {
            Command::Deny(participant.as_ref().map(who).transpose()?)
        }
        ClientMsg::Lock { locked } => Command::Lock(locked),
        ClientMsg::Mute {
            participant,
            source: s,
        } => Command::Mute {
            target: who(&participant)?,
            source: source(s),
        },
        ClientMsg::Remove { participant } => Command::Remove(who(&participant)?),
        ClientMsg::SetRole { participant, role } => Command::SetRole {
            target: who(&participant)?,
            role: control_role(role),
        },
        ClientMsg::AllowScreen {
            participant,
            allowed,
        } => Command::AllowScreen {
            target: who(&participant)?,
            allowed,
        },
        ClientMsg::LowerHand { participant } => Command::LowerHand(who(&participant)?),
        ClientMsg::EndMeeting => Command::EndMeeting,
        ClientMsg::Invite(i) => Command::Invite {
            role: control_role(i.role),
            lobby: i.lobby,
            expires_in: i.expires_in_secs.map(Duration::from_secs),
        },
        ClientMsg::Join(_)
        | ClientMsg::Resume(_)
        | ClientMsg::Offer(_)
        | ClientMsg::IceRestart { .. }
        | ClientMsg::Layout(_)
        | ClientMsg::E2eeKeys { .. }
        | ClientMsg::Ping
        | ClientMsg::Leave => {
            return Err((ErrorCode::BadMessage, "Not a control-plane message."));
        }
    })
}

/// The m-lines of an SDP, counted without parsing it.
fn count_mlines(sdp: &str) -> usize {
    sdp.lines().filter(|l| l.starts_with("m=")).count()
}

fn rate_error_due(last: &mut Option<Instant>, now: Instant) -> bool {
    let due = last.is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1));
    if due {
        *last = Some(now);
    }
    due
}

fn rate_limited(what: &str, key: &str, per_second: u32) -> ServerMsg {
    error(
        ErrorCode::RateLimited,
        format!("more than {per_second} {what} a second ({key}); this one was dropped"),
    )
}

fn error_msg(code: ErrorCode, message: String, fatal: bool) -> ServerMsg {
    ServerMsg::Error(ErrorMsg {
        code,
        message,
        fatal,
    })
}

/// A reply as a text frame, counted when it is an error.
fn reply_text(state: &AppState, msg: ServerMsg) -> Message {
    if matches!(msg, ServerMsg::Error(_)) {
        state
            .metrics
            .control
            .signalling_errors
            .fetch_add(1, Relaxed);
    }
    Message::Text(msg.to_json().into())
}

/// Why a write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteFailed {
    /// The connection is gone.
    Closed,
    /// The client did not take the frame in time: it is not reading.
    Timeout,
}

/// Sends one frame, giving up after `timeout`.
async fn write(
    sink: &mut Sink,
    state: &AppState,
    msg: Message,
    timeout: Duration,
) -> Result<(), WriteFailed> {
    match tokio::time::timeout(timeout, sink.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(WriteFailed::Closed),
        Err(_) => {
            state.metrics.control.limited(Limit::WriteTimeout);
            Err(WriteFailed::Timeout)
        }
    }
}

pub(crate) async fn leave(state: &AppState, pid: ParticipantId, reason: LeaveReason) {
    let cmd = ConductorCmd::Leave { pid, reason };
    let _ = state.conductor.send(cmd).await;
}

pub(crate) async fn ask<T>(
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
