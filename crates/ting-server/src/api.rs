//! The control API under `/v1`: rooms, join tokens, participants, lock, end, and the chat
//! archive. REST and JSON, authenticated with the bearer key from `api.key`; the OpenAPI
//! document is served at `/v1/openapi.json` and kept in `docs/openapi.json`.
//!
//! Every request body is read whole up to [`MAX_BODY`], parsed strictly (unknown fields are
//! errors naming the field) and handed to the conductor, which asks `ting_control`; the
//! answer comes back as JSON. Errors are [`ApiErrorBody`]s with a status that says who is at
//! fault: 400 a field, 401 the key, 403 the API is off, 404 the room or participant, 409 a
//! name in use, 500 the server.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Serialize;
use serde::de::DeserializeOwned;
use ting_control::{ParticipantId, RoomName};
use ting_proto::api::{
    ApiErrorBody, CreateRoom, ParticipantList, RoomInfo, RoomList, TokenRequest, TokenResponse,
    UpdateRoom,
};
use tokio::sync::oneshot;

use crate::AppState;
use crate::conductor::ConductorCmd;

/// The largest request body read, in bytes.
pub const MAX_BODY: usize = 64 * 1024;

/// The OpenAPI document, as kept in `docs/`.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// What the API asks of the conductor.
#[derive(Debug)]
pub enum ApiRequest {
    List,
    Get(RoomName),
    Create(CreateRoom),
    Update(RoomName, UpdateRoom),
    Delete(RoomName),
    Token(RoomName, TokenRequest),
    Participants(RoomName),
    Remove(RoomName, ParticipantId),
    Lock(RoomName, bool),
    End(RoomName),
}

/// A change the store is writing; the receiver says whether it reached the file.
pub type Saved = Option<oneshot::Receiver<Result<(), String>>>;

/// The conductor's answer.
#[derive(Debug)]
pub enum ApiReply {
    Room {
        info: RoomInfo,
        created: bool,
        saved: Saved,
    },
    Rooms(RoomList),
    Token(TokenResponse),
    Participants(ParticipantList),
    Done {
        saved: Saved,
    },
}

/// A refusal, with its status.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub body: ApiErrorBody,
}

impl ApiFailure {
    pub fn new(status: StatusCode, error: &str, message: impl Into<String>) -> ApiFailure {
        ApiFailure {
            status,
            body: ApiErrorBody {
                error: error.into(),
                message: message.into(),
                field: None,
            },
        }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> ApiFailure {
        ApiFailure {
            status: StatusCode::BAD_REQUEST,
            body: ApiErrorBody {
                error: "invalid".into(),
                message: message.into(),
                field: Some(field.into()),
            },
        }
    }

    pub fn not_found(what: &str) -> ApiFailure {
        ApiFailure::new(StatusCode::NOT_FOUND, "not_found", format!("no {what}"))
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        json(self.status, &self.body)
    }
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    // Plain data types: serializing cannot fail.
    let text = serde_json::to_string(body).unwrap_or_default();
    let mut r = (status, text).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub fn router(state: Arc<AppState>) -> Router {
    let authed = Router::new()
        .route("/v1/rooms", get(list_rooms).post(create_room))
        .route(
            "/v1/rooms/{room}",
            get(get_room).patch(update_room).delete(delete_room),
        )
        .route("/v1/rooms/{room}/tokens", post(issue_token))
        .route("/v1/rooms/{room}/participants", get(participants))
        .route(
            "/v1/rooms/{room}/participants/{id}",
            delete(remove_participant),
        )
        .route("/v1/rooms/{room}/lock", post(lock))
        .route("/v1/rooms/{room}/unlock", post(unlock))
        .route("/v1/rooms/{room}/end", post(end))
        .route("/v1/rooms/{room}/meetings", get(meetings))
        .route("/v1/rooms/{room}/meetings/{meeting}/chat", get(export_chat))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(DefaultBodyLimit::max(MAX_BODY));
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .merge(authed)
        .with_state(state)
}

async fn openapi() -> Response {
    let mut r = OPENAPI.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn wrong_method() -> ApiFailure {
    ApiFailure::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; see /v1/openapi.json",
    )
}

async fn unknown_route() -> ApiFailure {
    ApiFailure::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such API route; see /v1/openapi.json",
    )
}

/// Checks the bearer key in constant time. Counts every outcome.
async fn authenticate(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let metrics = &state.metrics.control;
    let Some(key) = state.api_key.as_deref() else {
        metrics.count("api", "disabled");
        return ApiFailure::new(
            StatusCode::FORBIDDEN,
            "api_disabled",
            "the control API is off on this server: set api.key or api.key_file",
        )
        .into_response();
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, k)| k.trim());
    // Digests of equal length, compared in constant time: neither the key nor its length
    // shows in how long a wrong guess takes.
    let digest = |b: &str| aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b.as_bytes());
    if aws_lc_rs::constant_time::verify_slices_are_equal(
        digest(given).as_ref(),
        digest(key).as_ref(),
    )
    .is_err()
    {
        metrics.count("api", "unauthorized");
        let mut r = ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the API key as `Authorization: Bearer <api.key>`",
        )
        .into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let r = next.run(req).await;
    metrics.count(
        "api",
        if r.status().is_success() {
            "ok"
        } else if r.status().is_client_error() {
            "client_error"
        } else {
            "server_error"
        },
    );
    r
}

/// A request body, or a JSON error when it is larger than [`MAX_BODY`] or unreadable.
type Body = Result<Bytes, axum::extract::rejection::BytesRejection>;

fn read(body: Body) -> Result<Bytes, ApiFailure> {
    body.map_err(|e| {
        let status = e.status();
        ApiFailure::new(
            status,
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                "too_large"
            } else {
                "invalid"
            },
            format!("the request body could not be read: {e} (at most {MAX_BODY} bytes)"),
        )
    })
}

/// Parses a JSON body, naming the field at fault.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiFailure> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let message = e.inner().to_string();
        let path = e.path().to_string();
        // serde names an unknown field only in its message: "unknown field `lobbby`, ...".
        let unknown = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(name, _)| name.to_owned());
        // The path ends in the unknown field already; "." is the body itself.
        let field = match (path.as_str(), unknown) {
            (".", Some(name)) => name,
            (".", None) => "body".to_owned(),
            _ => path,
        };
        ApiFailure::invalid(&field, message)
    })
}

fn room_name(s: &str) -> Result<RoomName, ApiFailure> {
    RoomName::parse(s).map_err(|e| ApiFailure::invalid("room", format!("the room name {e}")))
}

/// How long an API call waits for the conductor, and for the database.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn ask(state: &AppState, req: ApiRequest) -> Result<ApiReply, ApiFailure> {
    let (tx, rx) = oneshot::channel();
    let unavailable = || {
        ApiFailure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server is shutting down",
        )
    };
    let send = state.conductor.send(ConductorCmd::Api { req, reply: tx });
    match tokio::time::timeout(ANSWER_TIMEOUT, send).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return Err(unavailable()),
        Err(_) => return Err(busy()),
    }
    match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
        Ok(Ok(r)) => r,
        // Taken, then dropped unanswered: handling it failed inside the server.
        Ok(Err(_)) if state.ready.load(std::sync::atomic::Ordering::Relaxed) => {
            Err(ApiFailure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the server failed while handling this call (see its log); nothing may have changed",
            ))
        }
        Ok(Err(_)) => Err(unavailable()),
        Err(_) => Err(busy()),
    }
}

fn busy() -> ApiFailure {
    ApiFailure::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "the server did not answer within 10 s; try again",
    )
}

/// Waits for a change to reach the database.
async fn saved(saved: Saved) -> Result<(), ApiFailure> {
    let Some(rx) = saved else { return Ok(()) };
    let failed = |why: String| {
        ApiFailure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage",
            format!("the change is in effect but {why}"),
        )
    };
    match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(failed(format!("could not be saved to the database: {e}"))),
        Ok(Err(_)) => Err(failed(
            "the database thread stopped before saving it".into(),
        )),
        Err(_) => Err(failed(
            "the database did not confirm saving it within 10 s (it may yet)".into(),
        )),
    }
}

async fn reply(r: Result<ApiReply, ApiFailure>) -> Response {
    match r {
        Err(f) => f.into_response(),
        Ok(ApiReply::Room {
            info,
            created,
            saved: s,
        }) => match saved(s).await {
            Ok(()) => json(
                if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                },
                &info,
            ),
            Err(f) => f.into_response(),
        },
        Ok(ApiReply::Rooms(list)) => json(StatusCode::OK, &list),
        Ok(ApiReply::Token(t)) => json(StatusCode::CREATED, &t),
        Ok(ApiReply::Participants(p)) => json(StatusCode::OK, &p),
        Ok(ApiReply::Done { saved: s }) => match saved(s).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(f) => f.into_response(),
        },
    }
}

async fn list_rooms(State(state): State<Arc<AppState>>) -> Response {
    reply(ask(&state, ApiRequest::List).await).await
}

async fn create_room(State(state): State<Arc<AppState>>, bytes: Body) -> Response {
    let req = match read(bytes).and_then(|b| body::<CreateRoom>(&b)) {
        Ok(b) => b,
        Err(f) => return f.into_response(),
    };
    reply(ask(&state, ApiRequest::Create(req)).await).await
}

async fn get_room(State(state): State<Arc<AppState>>, Path(room): Path<String>) -> Response {
    match room_name(&room) {
        Ok(r) => reply(ask(&state, ApiRequest::Get(r)).await).await,
        Err(f) => f.into_response(),
    }
}

async fn update_room(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    bytes: Body,
) -> Response {
    let r = room_name(&room).and_then(|r| Ok((r, body::<UpdateRoom>(&read(bytes)?)?)));
    match r {
        Ok((r, u)) => reply(ask(&state, ApiRequest::Update(r, u)).await).await,
        Err(f) => f.into_response(),
    }
}

async fn delete_room(State(state): State<Arc<AppState>>, Path(room): Path<String>) -> Response {
    match room_name(&room) {
        Ok(r) => reply(ask(&state, ApiRequest::Delete(r)).await).await,
        Err(f) => f.into_response(),
    }
}

async fn issue_token(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    bytes: Body,
) -> Response {
    let bytes = match read(bytes) {
        Ok(b) => b,
        Err(f) => return f.into_response(),
    };
    // An empty body asks for the defaults.
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        Bytes::from_static(b"{}")
    } else {
        bytes
    };
    let r = room_name(&room).and_then(|r| Ok((r, body::<TokenRequest>(&bytes)?)));
    match r {
        Ok((r, t)) => reply(ask(&state, ApiRequest::Token(r, t)).await).await,
        Err(f) => f.into_response(),
    }
}

async fn participants(State(state): State<Arc<AppState>>, Path(room): Path<String>) -> Response {
    match room_name(&room) {
        Ok(r) => reply(ask(&state, ApiRequest::Participants(r)).await).await,
        Err(f) => f.into_response(),
    }
}

async fn remove_participant(
    State(state): State<Arc<AppState>>,
    Path((room, id)): Path<(String, String)>,
) -> Response {
    let r = room_name(&room).and_then(|r| {
        let id = ParticipantId::parse(&id).ok_or_else(|| {
            ApiFailure::invalid("id", "a participant id is 16 hexadecimal digits")
        })?;
        Ok((r, id))
    });
    match r {
        Ok((r, id)) => reply(ask(&state, ApiRequest::Remove(r, id)).await).await,
        Err(f) => f.into_response(),
    }
}

async fn lock(State(state): State<Arc<AppState>>, Path(room): Path<String>) -> Response {
    match room_name(&room) {
        Ok(r) => reply(ask(&state, ApiRequest::Lock(r, true)).await).await,
        Err(f) => f.into_response(),
    }
}

async fn unlock(State(state): State<Arc<AppState>>, Path(room): Path<String>) -> Response {
    match room_name(&room) {
        Ok(r) => reply(ask(&state, ApiRequest::Lock(r, false)).await).await,
        Err(f) => f.into_response(),
    }
}

async fn end(State(state): State<Arc<AppState>>, Path(room): Path<String>) -> Response {
    match room_name(&room) {
        Ok(r) => reply(ask(&state, ApiRequest::End(r)).await).await,
        Err(f) => f.into_response(),
    }
}

fn archive_off() -> ApiFailure {
    ApiFailure::new(
        StatusCode::CONFLICT,
        "archive_off",
        "chat is not archived on this server (chat.archive = false): nothing is kept",
    )
}

/// The meetings of a room that have archived chat.
async fn meetings(State(state): State<Arc<AppState>>, Path(room): Path<String>) -> Response {
    if !state.config.chat.archive {
        return archive_off().into_response();
    }
    let room = match room_name(&room) {
        Ok(r) => r,
        Err(f) => return f.into_response(),
    };
    match state.store.meetings(room.to_string()).await {
        Ok(m) => json(StatusCode::OK, &serde_json::json!({ "meetings": m })),
        Err(e) => storage_error(e),
    }
}

/// One meeting's archived chat, for record-keeping.
async fn export_chat(
    State(state): State<Arc<AppState>>,
    Path((room, meeting)): Path<(String, String)>,
) -> Response {
    if !state.config.chat.archive {
        return archive_off().into_response();
    }
    let room = match room_name(&room) {
        Ok(r) => r,
        Err(f) => return f.into_response(),
    };
    if meeting.len() != 16 || !meeting.bytes().all(|b| b.is_ascii_hexdigit()) {
        return ApiFailure::invalid("meeting", "a meeting id is 16 hexadecimal digits")
            .into_response();
    }
    match state.store.export(room.to_string(), meeting.clone()).await {
        Ok(rows) if rows.is_empty() => {
            ApiFailure::not_found("archived chat for that meeting").into_response()
        }
        Ok(rows) => json(
            StatusCode::OK,
            &serde_json::json!({ "room": room.as_str(), "meeting": meeting, "messages": rows }),
        ),
        Err(e) => storage_error(e),
    }
}

fn storage_error(e: String) -> Response {
    ApiFailure::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "storage",
        format!("the database could not be read: {e}"),
    )
    .into_response()
}
