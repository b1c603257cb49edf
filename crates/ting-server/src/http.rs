//! The HTTP side: the browser client's files, the signalling WebSocket, health and metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::Router;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;
use crate::web;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/m/{room}", get(index))
        .route("/ws", get(websocket))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/{file}", get(static_file))
        .with_state(state)
}

/// Pages may load only what this server serves: no third-party scripts, fonts or trackers.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data: blob:; \
                   media-src 'self' blob: mediastream:; style-src 'self'; script-src 'self'; \
                   object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

async fn index() -> Response {
    let (ct, body) = web::file("index.html").expect("index.html is embedded");
    page(ct, body)
}

async fn static_file(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    match web::file(&file) {
        Some((ct, body)) => page(ct, body),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

async fn websocket(State(state): State<Arc<AppState>>, ws: WebSocketUpgrade) -> Response {
    // The hard limit: frames beyond it are refused by the WebSocket layer and close the
    // connection. Below it, the session's own (configured) limit answers with an error.
    let hard = (state.config.limits.max_message_bytes * 2).max(1 << 20);
    ws.max_message_size(hard)
        .max_frame_size(hard)
        .on_upgrade(move |socket| crate::session::run(socket, state))
}

async fn healthz() -> Response {
    json(StatusCode::OK, r#"{"status":"ok"}"#.to_owned())
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Relaxed) {
        let c = &state.metrics.control;
        json(
            StatusCode::OK,
            format!(
                r#"{{"status":"ready","rooms":{},"participants":{},"workers":{}}}"#,
                c.rooms.load(Relaxed),
                c.participants.load(Relaxed),
                state.metrics.workers.len()
            ),
        )
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"not ready"}"#.to_owned(),
        )
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut r = state.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

fn json(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
