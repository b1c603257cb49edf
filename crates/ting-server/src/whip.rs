//! WHIP ingest (RFC 9725) at `/whip/<room>` and WHEP egress at `/whep/<room>`: a standard
//! tool (OBS, GStreamer, a WHIP/WHEP library) publishes into a meeting, or watches it, with
//! one HTTP request and no WebSocket.
//!
//! Each resource is a participant like any other: the same join (a join token, sent as
//! `Authorization: Bearer <token>`, with the same checks), the same offer to a media worker,
//! the same router. A task per resource stands in for the WebSocket: it drains what the
//! room sends, keeps the participant seen, and ends with it (removed by a moderator, the
//! meeting ended, its media connection lost for `limits.participant_timeout_secs`).
//!
//! A WHIP publisher's first audio m-line is its microphone, its first video m-line its
//! camera and a second video m-line its screen share; it shows as a participant with those
//! sources on. A WHEP viewer's first audio m-line is one audio slot (the loudest speaker)
//! and its first video m-line one camera slot: the screen share while there is one (it has
//! no screen slot), else the active speaker. A second video m-line is a screen slot, and
//! then the camera slot keeps the speaker. The router switches what they carry without
//! renegotiation.
//!
//! `PATCH` with `application/trickle-ice-sdpfrag`: candidates alone are acknowledged (ting
//! is ICE-lite and learns the client's addresses from its checks); new ICE credentials
//! restart ICE and the answer fragment carries the server's new ones.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ting_control::{Command, LeaveReason, MediaState, ParticipantId};
use ting_proto::{
    ErrorCode, ErrorMsg, Join, Offer, PROTOCOL_VERSION, Publish, ReceiveSlots, ServerMsg,
};
use tokio::sync::oneshot;

use crate::AppState;
use crate::api::ApiFailure;
use crate::conductor::ConductorCmd;
use crate::session::{ask, leave};

/// How long the media worker may take to answer an offer.
const OFFER_TIMEOUT: Duration = Duration::from_secs(10);
/// The m-lines a WHIP or WHEP offer may have: audio, video, a second video, and one spare.
const MAX_LINES: usize = 4;
/// The name a publisher or viewer gets when neither its token nor `?name=` gives one.
const DEFAULT_NAME: &str = "Stream";

/// Publishing (WHIP) or watching (WHEP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Whip,
    Whep,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Whip => "whip",
            Kind::Whep => "whep",
        }
    }
}

/// One WHIP or WHEP session the server holds.
#[derive(Debug)]
struct Resource {
    kind: Kind,
    room: String,
    pid: ParticipantId,
    /// The bearer token that created it: only it may change or end it.
    token: String,
    /// The client's offer, with its current ICE credentials (an ICE restart rewrites them).
    offer: String,
    ufrag: String,
    /// The entity tag of the session's ICE state (the server's ICE username fragment).
    etag: String,
}

/// The WHIP and WHEP resources the server holds, by id.
#[derive(Debug, Default)]
pub struct Resources {
    by_id: Mutex<HashMap<String, Resource>>,
}

impl Resources {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Resource>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many are open, by kind.
    pub fn count(&self, kind: Kind) -> usize {
        self.lock().values().filter(|r| r.kind == kind).count()
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    // Offers are read whole; a body beyond the message limit is refused with 413.
    let limit = state.config.limits.max_message_bytes;
    Router::new()
        .route(
            "/whip/{room}",
            post(|s, a, p, q, h, b| create(Kind::Whip, s, a, p, q, h, b)).options(options),
        )
        .route(
            "/whep/{room}",
            post(|s, a, p, q, h, b| create(Kind::Whep, s, a, p, q, h, b)).options(options),
        )
        .route(
            "/whip/{room}/{id}",
            axum::routing::delete(|s, p, h| end(Kind::Whip, s, p, h))
                .patch(|s, p, h, b| patch(Kind::Whip, s, p, h, b))
                .options(resource_options),
        )
        .route(
            "/whep/{room}/{id}",
            axum::routing::delete(|s, p, h| end(Kind::Whep, s, p, h))
                .patch(|s, p, h, b| patch(Kind::Whep, s, p, h, b))
                .options(resource_options),
        )
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::map_response(cors))
        .with_state(state)
}

/// Browser-based WHIP and WHEP clients on other origins may call these endpoints: they
/// authenticate with a bearer token, never a cookie, so no page can borrow a visitor's
/// rights. Every answer says so, and shows a client the headers it needs.
async fn cors(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(
            "Location, ETag, Accept-Patch, Accept-Post, Retry-After, WWW-Authenticate",
        ),
    );
    r
}

/// The preflight part of an `OPTIONS` answer.
fn preflight(r: &mut Response, methods: &'static str) {
    let h = r.headers_mut();
    h.insert(header::ALLOW, HeaderValue::from_static(methods));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
}

/// What a session's resource accepts (a browser asks before `PATCH` and `DELETE`).
async fn resource_options() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    preflight(&mut r, "OPTIONS, PATCH, DELETE");
    r
}

/// What an endpoint accepts (RFC 9725 section 4.1: an `OPTIONS` may precede the `POST`).
async fn options() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    preflight(&mut r, "OPTIONS, POST");
    r.headers_mut()
        .insert("accept-post", HeaderValue::from_static("application/sdp"));
    r
}

fn failure(status: StatusCode, error: &str, message: impl Into<String>) -> Response {
    let mut r = ApiFailure::new(status, error, message).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

/// A refusal from the conductor or a worker, as an HTTP status.
fn refusal(e: &ErrorMsg) -> Response {
    let status = match e.code {
        ErrorCode::TokenRequired
        | ErrorCode::TokenMalformed
        | ErrorCode::TokenInvalid
        | ErrorCode::TokenExpired => StatusCode::UNAUTHORIZED,
        ErrorCode::TokenWrongRoom
        | ErrorCode::Removed
        | ErrorCode::Locked
        | ErrorCode::Denied
        | ErrorCode::PasscodeRequired
        | ErrorCode::WrongPasscode
        | ErrorCode::OutsideSchedule
        | ErrorCode::E2eeRequired
        | ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::UnknownRoom | ErrorCode::BadRoom | ErrorCode::MeetingEnded => {
            StatusCode::NOT_FOUND
        }
        ErrorCode::BadName | ErrorCode::BadOffer | ErrorCode::BadMessage => StatusCode::BAD_REQUEST,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::RoomFull | ErrorCode::TooManyRooms | ErrorCode::Unavailable => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let code = serde_json::to_value(e.code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "internal".into());
    if e.code == ErrorCode::E2eeRequired {
        return failure(
            status,
            &code,
            "this meeting requires end-to-end encryption; WHIP and WHEP send frames the \
             server can read, so they cannot join it"
                .to_owned(),
        );
    }
    failure(status, &code, e.message.clone())
}

/// The bearer token of a request, if it has one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty())
}

fn content_type_is(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(want))
}

fn count(state: &AppState, kind: Kind, outcome: &'static str) {
    state.metrics.control.count(kind.path(), outcome);
}

fn counted(state: &AppState, kind: Kind, r: Response) -> Response {
    let s = r.status();
    let outcome = if s.is_success() {
        "ok"
    } else if s == StatusCode::UNAUTHORIZED || s == StatusCode::FORBIDDEN {
        "unauthorized"
    } else if s.is_client_error() {
        "client_error"
    } else {
        "server_error"
    };
    count(state, kind, outcome);
    r
}

/// The m-sections of an SDP: kind (`audio`, `video`, ...) and mid.
fn sections(sdp: &str) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(m) = line.strip_prefix("m=") {
            let kind = m.split(' ').next().unwrap_or_default().to_owned();
            out.push((kind, None));
        } else if let (Some(mid), Some(last)) = (line.strip_prefix("a=mid:"), out.last_mut()) {
            last.1 = Some(mid.trim().to_owned());
        }
    }
    out
}

/// Which mids publish or receive what, by the order of the offer's m-lines.
fn map_offer(kind: Kind, sdp: &str) -> Result<(Publish, ReceiveSlots), String> {
    let found = sections(sdp);
    if found.is_empty() {
        return Err("the body is not an SDP offer: it has no m-line".into());
    }
    if found.len() > MAX_LINES {
        return Err(format!(
            "the offer has {} m-lines; WHIP and WHEP take at most {MAX_LINES} (audio, video, \
             a second video for the screen share, one more that is ignored)",
            found.len()
        ));
    }
    let mut audio = Vec::new();
    let mut video = Vec::new();
    for (i, (k, mid)) in found.iter().enumerate() {
        let Some(mid) = mid else {
            return Err(format!(
                "m-line {} has no a=mid; ting bundles every m-line and needs their mids",
                i + 1
            ));
        };
        match k.as_str() {
            "audio" => audio.push(mid.clone()),
            "video" => video.push(mid.clone()),
            _ => {}
        }
    }
    if audio.is_empty() && video.is_empty() {
        return Err("the offer has neither an audio nor a video m-line".into());
    }
    Ok(match kind {
        Kind::Whip => (
            Publish {
                microphone: audio.first().cloned(),
                camera: video.first().cloned(),
                screen: video.get(1).cloned(),
            },
            ReceiveSlots::default(),
        ),
        Kind::Whep => (
            Publish::default(),
            ReceiveSlots {
                audio: audio.into_iter().take(1).collect(),
                video: video.first().cloned().into_iter().collect(),
                screen: video.get(1).cloned().into_iter().collect(),
            },
        ),
    })
}

/// The value of the first `a=<attr>:` line of an SDP or SDP fragment.
fn attribute<'a>(sdp: &'a str, attr: &str) -> Option<&'a str> {
    let prefix = format!("a={attr}:");
    sdp.lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix(prefix.as_str()))
        .map(str::trim)
}

fn random_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sdp_response(status: StatusCode, body: String, content_type: &'static str) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[derive(Debug, serde::Deserialize)]
struct CreateQuery {
    /// The name shown in the meeting; the token's `name` claim takes precedence.
    name: Option<String>,
}

async fn create(
    kind: Kind,
    State(state): State<Arc<AppState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
    Query(query): Query<CreateQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = create_inner(kind, &state, addr, room, query, &headers, body).await;
    counted(&state, kind, r)
}

async fn create_inner(
    kind: Kind,
    state: &Arc<AppState>,
    addr: SocketAddr,
    room: String,
    query: CreateQuery,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    if !content_type_is(headers, "application/sdp") {
        return failure(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the SDP offer with Content-Type: application/sdp",
        );
    }
    let Some(token) = bearer(headers) else {
        return failure(
            StatusCode::UNAUTHORIZED,
            "token_required",
            format!(
                "{} needs a join token for the room: send it as `Authorization: Bearer <token>`",
                kind.path().to_uppercase()
            ),
        );
    };
    let Ok(sdp) = std::str::from_utf8(&body) else {
        return failure(
            StatusCode::BAD_REQUEST,
            "bad_offer",
            "the SDP offer is not UTF-8 text",
        );
    };
    let (publish, receive) = match map_offer(kind, sdp) {
        Ok(m) => m,
        Err(message) => return failure(StatusCode::BAD_REQUEST, "bad_offer", message),
    };
    let Some(ufrag) = attribute(sdp, "ice-ufrag").map(str::to_owned) else {
        return failure(
            StatusCode::BAD_REQUEST,
            "bad_offer",
            "the SDP offer has no a=ice-ufrag",
        );
    };
    let name = query.name.unwrap_or_else(|| DEFAULT_NAME.to_owned());
    let (outbox, rx) = crate::outbox::outbox(state.config.limits.outbox_messages);
    let (tx, reply) = oneshot::channel();
    let join = ConductorCmd::Join {
        join: Join {
            protocol: PROTOCOL_VERSION,
            room: room.clone(),
            name,
            token: Some(token.to_owned()),
            passcode: None,
            // WHIP and WHEP carry plain frames: a room that needs end-to-end encryption
            // refuses them (403 e2ee_required).
            e2ee: None,
        },
        address: addr.ip(),
        outbox,
        existing_room: true,
        // Shown (WHIP) only once its offer is accepted: a refused one never appears.
        hidden: true,
        reply: tx,
    };
    let pid = match ask(state, join, reply).await {
        Ok(Ok((pid, ServerMsg::Welcome(_)))) => pid,
        Ok(Ok((pid, _))) => {
            leave(state, pid, LeaveReason::Left).await;
            return failure(
                StatusCode::FORBIDDEN,
                "lobby",
                "this meeting lets people in from its lobby, and nobody can admit a stream: \
                 use a token that enters directly (a moderator's, or one issued with \
                 lobby off in a room without a lobby)",
            );
        }
        Ok(Err(e)) | Err(e) => return refusal(&e),
    };
    let (tx, reply) = oneshot::channel();
    let offer = ConductorCmd::Offer {
        pid,
        offer: Offer {
            sdp: sdp.to_owned(),
            publish: publish.clone(),
            receive,
        },
        reply: tx,
    };
    let answer = match tokio::time::timeout(OFFER_TIMEOUT, ask(state, offer, reply)).await {
        Ok(Ok(Ok(answer))) => answer,
        Ok(Ok(Err(e)) | Err(e)) => {
            leave(state, pid, LeaveReason::Left).await;
            return refusal(&e);
        }
        Err(_) => {
            leave(state, pid, LeaveReason::Left).await;
            return failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the media worker did not answer the offer in time; try again",
            );
        }
    };
    if kind == Kind::Whip {
        // The publisher shows with what it sends; a refusal (a moderator muted the room's
        // guests) leaves it muted, as a browser's would be.
        let media = MediaState {
            audio: publish.microphone.is_some(),
            video: publish.camera.is_some(),
            screen: publish.screen.is_some(),
        };
        let (tx, reply) = oneshot::channel();
        let cmd = ConductorCmd::Control {
            pid,
            cmd: Command::Media(media),
            reply: tx,
        };
        if let Ok(Err(e)) = ask(state, cmd, reply).await {
            tracing::debug!(code = ?e.code, "a WHIP publisher's sources stay off");
        }
        let _ = state.conductor.send(ConductorCmd::Show { pid }).await;
    }
    let etag = format!(
        "\"{}\"",
        attribute(&answer, "ice-ufrag").unwrap_or_default()
    );
    let id = random_id();
    let location = format!("/{}/{room}/{id}", kind.path());
    state.resources.lock().insert(
        id.clone(),
        Resource {
            kind,
            room,
            pid,
            token: token.to_owned(),
            offer: sdp.to_owned(),
            ufrag,
            etag: etag.clone(),
        },
    );
    tokio::spawn(stand_in(state.clone(), id, pid, rx));
    let mut r = sdp_response(StatusCode::CREATED, answer, "application/sdp");
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        "accept-patch",
        HeaderValue::from_static("application/trickle-ice-sdpfrag"),
    );
    r
}

/// Stands in for a WebSocket: takes what the room sends (nobody reads it), keeps the
/// participant seen while the resource lives, and forgets the resource when the participant
/// is gone (left, removed, meeting ended, media connection lost).
async fn stand_in(
    state: Arc<AppState>,
    id: String,
    pid: ParticipantId,
    mut rx: crate::outbox::OutboxRx,
) {
    let timeout = state.config.participant_timeout();
    let mut seen = tokio::time::interval((timeout / 3).max(Duration::from_secs(1)));
    let mut closing = state.closing.clone();
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                // The conductor let go of the participant, or told it so for the last time.
                None => break,
                Some(m) if m.fatal => break,
                Some(_) => {}
            },
            _ = seen.tick() => {
                if state.conductor.send(ConductorCmd::Seen { pid }).await.is_err() {
                    break;
                }
            }
            () = async { let _ = closing.wait_for(|c| *c).await; } => break,
        }
    }
    let mut resources = state.resources.lock();
    if resources.get(&id).is_some_and(|r| r.pid == pid) {
        resources.remove(&id);
    }
}

/// The resource `id` of `kind` in `room`, checked against the request's token: its
/// participant, offer and ICE state.
fn authorised(
    state: &AppState,
    kind: Kind,
    room: &str,
    id: &str,
    headers: &HeaderMap,
) -> Result<(ParticipantId, String, String, String), Box<Response>> {
    let resources = state.resources.lock();
    let not_found = || {
        failure(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no {} session of that id in this room",
                kind.path().to_uppercase()
            ),
        )
    };
    let Some(r) = resources.get(id) else {
        return Err(Box::new(not_found()));
    };
    if r.kind != kind || r.room != room {
        return Err(Box::new(not_found()));
    }
    let given = bearer(headers).unwrap_or_default();
    let digest = |b: &str| aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b.as_bytes());
    if aws_lc_rs::constant_time::verify_slices_are_equal(
        digest(given).as_ref(),
        digest(&r.token).as_ref(),
    )
    .is_err()
    {
        return Err(Box::new(failure(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the token that created this session as `Authorization: Bearer <token>`",
        )));
    }
    Ok((r.pid, r.offer.clone(), r.ufrag.clone(), r.etag.clone()))
}

async fn end(
    kind: Kind,
    State(state): State<Arc<AppState>>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let r = match authorised(&state, kind, &room, &id, &headers) {
        Ok((pid, ..)) => {
            state.resources.lock().remove(&id);
            leave(&state, pid, LeaveReason::Left).await;
            StatusCode::OK.into_response()
        }
        Err(r) => *r,
    };
    counted(&state, kind, r)
}

async fn patch(
    kind: Kind,
    State(state): State<Arc<AppState>>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = patch_inner(kind, &state, &room, &id, &headers, body).await;
    counted(&state, kind, r)
}

async fn patch_inner(
    kind: Kind,
    state: &AppState,
    room: &str,
    id: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let (pid, offer, ufrag, etag) = match authorised(state, kind, room, id, headers) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    if !content_type_is(headers, "application/trickle-ice-sdpfrag") {
        return failure(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "PATCH takes an SDP fragment with Content-Type: application/trickle-ice-sdpfrag",
        );
    }
    let Ok(frag) = std::str::from_utf8(&body) else {
        return failure(
            StatusCode::BAD_REQUEST,
            "bad_fragment",
            "the SDP fragment is not UTF-8 text",
        );
    };
    let if_match = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok());
    let new_ufrag = attribute(frag, "ice-ufrag");
    let restart = new_ufrag.is_some_and(|u| u != ufrag);
    if let Some(m) = if_match
        && m.trim() != "*"
        && m.trim() != etag
    {
        return failure(
            StatusCode::PRECONDITION_FAILED,
            "etag_mismatch",
            "If-Match names an ICE session this resource no longer has; restart ICE with \
             If-Match: *",
        );
    }
    if !restart {
        // Candidates alone: ting is ICE-lite and learns the client's addresses from its
        // connectivity checks, so there is nothing to add.
        return StatusCode::NO_CONTENT.into_response();
    }
    let (Some(new_ufrag), Some(new_pwd)) = (new_ufrag, attribute(frag, "ice-pwd")) else {
        return failure(
            StatusCode::BAD_REQUEST,
            "bad_fragment",
            "an ICE restart needs both a=ice-ufrag and a=ice-pwd",
        );
    };
    let restarted = with_credentials(&offer, new_ufrag, new_pwd);
    let (tx, reply) = oneshot::channel();
    let cmd = ConductorCmd::IceRestart {
        pid,
        sdp: restarted.clone(),
        reply: tx,
    };
    let answer = match tokio::time::timeout(OFFER_TIMEOUT, ask(state, cmd, reply)).await {
        Ok(Ok(Ok(answer))) => answer,
        Ok(Ok(Err(e)) | Err(e)) => {
            let mut r = refusal(&e);
            if e.code == ErrorCode::RateLimited {
                // One restart a second per participant (the conductor's rule).
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            return r;
        }
        Err(_) => {
            return failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the media worker did not answer the ICE restart in time; try again",
            );
        }
    };
    let new_etag = format!(
        "\"{}\"",
        attribute(&answer, "ice-ufrag").unwrap_or_default()
    );
    if let Some(r) = state.resources.lock().get_mut(id) {
        r.offer = restarted;
        r.ufrag = new_ufrag.to_owned();
        r.etag = new_etag.clone();
    }
    let mut r = sdp_response(
        StatusCode::OK,
        answer_fragment(&answer),
        "application/trickle-ice-sdpfrag",
    );
    if let Ok(v) = HeaderValue::from_str(&new_etag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

/// The offer with its ICE credentials replaced.
fn with_credentials(offer: &str, ufrag: &str, pwd: &str) -> String {
    let mut out = String::with_capacity(offer.len());
    for line in offer.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\r', '\n']);
        if bare.starts_with("a=ice-ufrag:") {
            out.push_str(&format!("a=ice-ufrag:{ufrag}\r\n"));
        } else if bare.starts_with("a=ice-pwd:") {
            out.push_str(&format!("a=ice-pwd:{pwd}\r\n"));
        } else {
            out.push_str(line);
        }
    }
    out
}

/// The ICE part of an answer as an SDP fragment (RFC 8840): the server's credentials, and
/// per m-section its mid, candidates and end-of-candidates.
fn answer_fragment(answer: &str) -> String {
    let mut out = String::from("a=ice-lite\r\n");
    if let Some(u) = attribute(answer, "ice-ufrag") {
        out.push_str(&format!("a=ice-ufrag:{u}\r\n"));
    }
    if let Some(p) = attribute(answer, "ice-pwd") {
        out.push_str(&format!("a=ice-pwd:{p}\r\n"));
    }
    for line in answer.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(m) = line.strip_prefix("m=") {
            let kind = m.split(' ').next().unwrap_or("audio");
            out.push_str(&format!("m={kind} 9 RTP/AVP 0\r\n"));
        } else if line.starts_with("a=mid:")
            || line.starts_with("a=candidate:")
            || line == "a=end-of-candidates"
        {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0 1\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:abcd\r\na=ice-pwd:secretsecretsecretsecret\r\n\
        a=mid:0\r\na=sendonly\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:abcd\r\na=ice-pwd:secretsecretsecretsecret\r\n\
        a=mid:1\r\na=sendonly\r\n";

    #[test]
    fn a_whip_offer_publishes_its_first_audio_and_video() {
        let (publish, receive) = map_offer(Kind::Whip, OFFER).unwrap();
        assert_eq!(publish.microphone.as_deref(), Some("0"));
        assert_eq!(publish.camera.as_deref(), Some("1"));
        assert_eq!(publish.screen, None);
        assert_eq!(receive, ReceiveSlots::default());
    }

    #[test]
    fn a_whep_offer_receives_one_audio_and_one_camera_slot() {
        let (publish, receive) = map_offer(Kind::Whep, OFFER).unwrap();
        assert_eq!(publish, Publish::default());
        assert_eq!(receive.audio, ["0"]);
        assert_eq!(receive.video, ["1"]);
        assert!(receive.screen.is_empty());
    }

    #[test]
    fn offers_without_media_or_mids_or_with_too_many_lines_are_refused() {
        assert!(map_offer(Kind::Whip, "not sdp at all").is_err());
        assert!(
            map_offer(
                Kind::Whip,
                "v=0\r\nm=application 9 UDP/DTLS/SCTP x\r\na=mid:0\r\n"
            )
            .is_err()
        );
        assert!(map_offer(Kind::Whip, "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n").is_err());
        let many = "m=audio 9 X 1\r\na=mid:a\r\n".repeat(MAX_LINES + 1);
        assert!(map_offer(Kind::Whep, &many).is_err());
    }

    #[test]
    fn an_ice_restart_rewrites_only_the_credentials() {
        let restarted = with_credentials(OFFER, "wxyz", "newpasswordnewpassword");
        assert_eq!(attribute(&restarted, "ice-ufrag"), Some("wxyz"));
        assert_eq!(
            attribute(&restarted, "ice-pwd"),
            Some("newpasswordnewpassword")
        );
        assert!(!restarted.contains("abcd"));
        assert_eq!(restarted.lines().count(), OFFER.lines().count());
        assert_eq!(sections(&restarted), sections(OFFER));
    }

    #[test]
    fn the_answer_fragment_carries_credentials_and_candidates_per_section() {
        let answer = "v=0\r\na=ice-lite\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
            a=ice-ufrag:srv\r\na=ice-pwd:srvpwd\r\n\
            a=candidate:1 1 udp 2130706431 127.0.0.1 4000 typ host\r\na=end-of-candidates\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n\
            a=candidate:1 1 udp 2130706431 127.0.0.1 4000 typ host\r\na=end-of-candidates\r\n";
        let frag = answer_fragment(answer);
        assert_eq!(
            frag,
            "a=ice-lite\r\na=ice-ufrag:srv\r\na=ice-pwd:srvpwd\r\n\
             m=audio 9 RTP/AVP 0\r\na=mid:0\r\n\
             a=candidate:1 1 udp 2130706431 127.0.0.1 4000 typ host\r\na=end-of-candidates\r\n\
             m=video 9 RTP/AVP 0\r\na=mid:1\r\n\
             a=candidate:1 1 udp 2130706431 127.0.0.1 4000 typ host\r\na=end-of-candidates\r\n"
        );
    }
}
