//! The HTTP side: the browser client's files, the signalling WebSocket, health and metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::Extension;
use axum::Router;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;
use crate::listen::ConnSlot;
use crate::metrics::Limit;
use crate::web;

pub fn router(state: Arc<AppState>) -> Router {
    let https = state.https;
    Router::new()
        .route("/", get(index))
        .route("/m/{room}", get(index))
        .route("/ws", get(websocket))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/{file}", get(static_file))
        .with_state(state.clone())
        .merge(crate::api::router(state.clone()))
        .merge(crate::whip::router(state))
        .layer(axum::middleware::map_response(
            move |mut r: Response| async move {
                let h = r.headers_mut();
                if https {
                    // A year, for this host only: ting does not speak for sibling hosts.
                    h.insert(
                        header::STRICT_TRANSPORT_SECURITY,
                        HeaderValue::from_static("max-age=31536000"),
                    );
                }
                r
            },
        ))
}

/// Pages may load only what this server serves: no third-party scripts, fonts or trackers.
/// `connect-src 'self'` covers the page's own WebSocket (ws: or wss: to the same host).
const CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data: blob:; \
                   media-src 'self' blob: mediastream:; style-src 'self'; script-src 'self'; \
                   object-src 'none'; base-uri 'none'; frame-ancestors 'none'; \
                   form-action 'self'";

/// The page may use the camera, microphone and screen capture of its own origin only, and
/// nothing else a browser offers.
const PERMISSIONS_POLICY: &str = "camera=(self), microphone=(self), display-capture=(self), \
                                  geolocation=(), payment=(), usb=(), serial=(), bluetooth=(), \
                                  hid=(), midi=(), interest-cohort=()";

fn page(content_type: &'static str, body: impl IntoResponse) -> Response {
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
    h.insert(
        "permissions-policy",
        HeaderValue::from_static(PERMISSIONS_POLICY),
    );
    r
}

async fn index(State(state): State<Arc<AppState>>) -> Response {
    // Embedded, so always there (a debug build's TING_WEB_DIR may lack it).
    let Some((ct, body)) = web::file("index.html") else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    if state.dev_certificate {
        // The page tells people, in words, that this server's certificate proves nothing.
        page(ct, body.replacen("<body", "<body data-dev-certificate", 1))
    } else {
        page(ct, body)
    }
}

async fn static_file(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    match web::file(&file) {
        Some((ct, body)) => page(ct, body),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

async fn websocket(
    State(state): State<Arc<AppState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    slot: Option<Extension<ConnSlot>>,
    ws: WebSocketUpgrade,
) -> Response {
    // WebSockets live long; keep some connections for health checks and metrics.
    let open = state.metrics.control.connections.load(Relaxed) as usize;
    if open
        > state
            .max_connections
            .saturating_sub(crate::listen::HTTP_RESERVE)
    {
        state.metrics.control.limited(Limit::WebSocketReserve);
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"error":"too_many_connections","message":"this server holds as many connections as limits.max_connections allows; try again later"}"#.to_owned(),
        );
    }
    // The hard limit: frames beyond it are refused by the WebSocket layer and close the
    // connection. Below it, the session's own (configured) limit answers with an error.
    let hard = (state.config.limits.max_message_bytes * 2).max(1 << 20);
    ws.max_message_size(hard)
        .max_frame_size(hard)
        // A small read buffer: a connection that never joins costs kilobytes, not the
        // default 128 KiB; large messages still arrive, in more reads.
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        // Bounds what is queued for a client that does not read (pongs to its pings
        // included): past it the connection fails instead of growing.
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .on_upgrade(move |socket| async move {
            // The session holds the connection's place in the connection count.
            let _slot = slot;
            crate::session::run(socket, state, addr).await;
        })
}

/// Bytes read from a WebSocket at a time.
const READ_BUFFER: usize = 8 * 1024;
/// Bytes queued for one WebSocket's peer at most. The largest message ting sends (an SDP
/// answer, or a welcome listing 250 people) is well under it.
const MAX_WRITE_BUFFER: usize = 256 * 1024;

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
