//! The ting server: everything that does I/O.
//!
//! ```text
//!  browsers ──HTTP/WebSocket──▶ axum (tokio) ──▶ session tasks ──▶ conductor task
//!                                                                  (ting-control Rooms)
//!                                                                        │ commands
//!  browsers ◀──────UDP (SRTP)──────▶ media worker threads ◀───────────────┘
//!                                    (str0m Rtc per participant, ting-media Router per room,
//!                                     queues between workers)
//! ```
//!
//! - [`http`]: the browser client's files, `/ws`, `/healthz`, `/readyz`, `/metrics`.
//! - [`api`]: the control API under `/v1`.
//! - [`whip`]: WHIP ingest and WHEP egress under `/whip` and `/whep`.
//! - [`store`]: the SQLite database (rooms, the chat archive) on its own thread.
//! - [`session`]: one task per WebSocket, speaking `ting-proto`.
//! - [`conductor`]: one task owning the rooms; places participants on workers.
//! - [`worker`]: one thread per core with its own UDP socket; the hot path.
//!
//! [`Server::bind`] binds every socket and starts the workers; [`Server::run`] serves until
//! the shutdown future resolves. Tests bind to port 0 and run it in-process.

pub mod api;
pub mod conductor;
pub mod config;
pub mod http;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod outbox;
pub mod ratelimit;
pub mod session;
pub mod setup;
pub mod store;
pub mod tls;
pub mod udp;
mod web;
pub mod whip;
pub mod worker;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;

use tokio::sync::mpsc;
use tracing::info;

pub use config::{Config, ConfigError, Override};

use conductor::{Conductor, ConductorCmd};
use metrics::Metrics;
use worker::peer::SlotLimits;
use worker::{CoreSetup, WorkerEvent, WorkerHandle, WorkerId, WorkerSetup};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen for HTTP on {addr}")]
    BindHttp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot bind media socket {addr}")]
    BindMedia {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create the DTLS certificate")]
    Certificate,
    #[error("cannot start media workers: {0}")]
    Workers(std::io::Error),
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("{key}: {reason}")]
    Tokens { key: String, reason: String },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("the database {path} (store.path) holds a room ting cannot use: {reason}")]
    StoredRoom { path: String, reason: String },
}

/// What HTTP handlers and sessions share.
#[derive(Debug)]
pub struct AppState {
    pub config: Arc<Config>,
    pub conductor: mpsc::Sender<ConductorCmd>,
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    /// Open connections at most (`limits.max_connections`, or what file descriptors allow).
    pub max_connections: usize,
    /// Turns true when the server stops for good: every session closes at once.
    pub closing: tokio::sync::watch::Receiver<bool>,
    /// The control API's bearer key; `None`: the API is off.
    pub api_key: Option<String>,
    /// Pages are served over TLS (HSTS is sent).
    pub https: bool,
    /// The certificate is the self-signed development one (the page says so).
    pub dev_certificate: bool,
    pub store: store::Store,
    /// The WHIP and WHEP sessions open now.
    pub resources: whip::Resources,
}

/// Raises the soft file-descriptor limit to the hard limit (systemd's soft default of 1024
/// would cap ting at about a thousand connections) and returns both after the change.
pub fn raise_fd_limit() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return (1024, 1024);
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    (lim.rlim_cur, lim.rlim_max)
}

/// How long connections get to finish when the server closes, after participants were told.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// A bound, not yet serving, ting server.
pub struct Server {
    config: Arc<Config>,
    listener: tokio::net::TcpListener,
    workers: Arc<[WorkerHandle]>,
    threads: Vec<std::thread::JoinHandle<()>>,
    worker_events: mpsc::UnboundedReceiver<WorkerEvent>,
    metrics: Arc<Metrics>,
    factory: setup::PeerFactory,
    keys: Option<(ting_control::TokenKeys, conductor::AuditKey)>,
    api_key: Option<String>,
    store: store::Store,
    tls: Option<Arc<tls::Tls>>,
    stored_rooms: Vec<(ting_control::RoomName, ting_control::RoomSettings)>,
    deleted_rooms: Vec<(ting_control::RoomName, u64)>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("http", &self.listener.local_addr().ok())
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl Server {
    /// Binds the HTTP listener and one UDP socket per media worker, and starts the workers.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let config = Arc::new(config);
        let keys = token_keys(&config)?;
        let api_key = config.api_key()?;
        let retention = config
            .chat
            .archive
            .then(|| std::time::Duration::from_secs(config.chat.retention_days * 86_400));
        let tls = tls::Tls::from_config(&config.http.tls, config.http.listen.ip())?.map(Arc::new);
        let (store, loaded) = store::Store::open(&config.store.path, retention)?;
        let max = config.limits.max_participants_per_room;
        let stored_rooms = loaded
            .rooms
            .into_iter()
            .map(|row| stored_settings(row, max))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| ServerError::StoredRoom {
                path: config.store.path.clone(),
                reason,
            })?;
        let deleted_rooms = loaded
            .deleted
            .into_iter()
            .filter_map(|(name, at)| Some((ting_control::RoomName::parse(&name).ok()?, at)))
            .collect();
        if config.rooms.open && !config.http.listen.ip().is_loopback() {
            tracing::warn!(
                listen = %config.http.listen,
                "rooms.open is on and ting listens beyond loopback: anyone who reaches it can \
                 open a room and join without a token (see config/production.toml)"
            );
        }
        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .map_err(|source| ServerError::BindHttp {
                addr: config.http.listen,
                source,
            })?;
        let n = config.worker_count();
        // One certificate for every connection of this process: generating one per
        // connection costs a key generation per join for no gain, since the fingerprint
        // travels in the (authenticated) signalling anyway.
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .ok_or(ServerError::Certificate)?;
        let metrics = Metrics::new(n);
        let (events_tx, worker_events) = mpsc::unbounded_channel();
        let limits = SlotLimits {
            audio: config.slots.audio,
            video: config.slots.video,
            screen: config.slots.screen,
        };
        let mut setups = Vec::new();
        for i in 0..n {
            let port = if config.media.port == 0 {
                0
            } else {
                config.media.port + i as u16
            };
            let addr = SocketAddr::new(config.media.bind_ip, port);
            let socket =
                UdpSocket::bind(addr).map_err(|source| ServerError::BindMedia { addr, source })?;
            udp::set_buffer_sizes(&socket, config.media.socket_buffer_bytes);
            if let Err(e) = udp::enable_receive_info(&socket) {
                tracing::warn!(error = %e, "the kernel does not report the media socket's receive waits or drops");
            }
            let bound = socket
                .local_addr()
                .map_err(|source| ServerError::BindMedia { addr, source })?;
            setups.push(WorkerSetup {
                socket,
                core: CoreSetup {
                    id: WorkerId(i),
                    candidate: SocketAddr::new(config.media.advertise_ip, bound.port()),
                    events: events_tx.clone(),
                    counters: metrics.workers[i].clone(),
                    // A participant whose media went quiet gets as long to come back as one
                    // whose signalling did.
                    media_grace: config.participant_timeout(),
                    router: config.router_config(),
                    load_shedding: config.media.load_shedding,
                },
            });
        }
        let (workers, threads) = worker::spawn_workers(setups).map_err(ServerError::Workers)?;
        let factory = setup::PeerFactory {
            cert,
            limits,
            estimate_bandwidth: config.media.bandwidth_estimation,
            opus_dtx: config.media.opus_dtx,
        };
        Ok(Server {
            config,
            listener,
            workers,
            threads,
            worker_events,
            metrics,
            factory,
            keys: Some(keys),
            api_key,
            store,
            tls,
            stored_rooms,
            deleted_rooms,
        })
    }

    /// The SHA-256 of the served certificate's public key (base64), when serving HTTPS.
    pub fn tls_spki_sha256(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.spki_sha256())
    }

    /// Where the HTTP server listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.config.http.listen)
    }

    /// The UDP addresses browsers send media to, one per worker.
    pub fn media_addrs(&self) -> Vec<SocketAddr> {
        self.workers.iter().map(|w| w.addr).collect()
    }

    /// The link to a room.
    pub fn meeting_url(&self, room: &str) -> String {
        format!("{}/m/{room}", self.config.public_url(self.local_addr()))
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Serves until `shutdown` resolves, then tells every participant, stops the workers
    /// and returns.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let ready = Arc::new(AtomicBool::new(true));
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let seed: u64 = rand::random();
        let (built_tx, built_rx) = mpsc::unbounded_channel();
        let (setup_tx, setup_thread) =
            setup::spawn(self.factory.clone(), built_tx).map_err(ServerError::Workers)?;
        let base_url = self.config.public_url(self.local_addr());
        let (keys, audit_key) = self.keys.take().unwrap_or_else(|| {
            (
                ting_control::TokenKeys::none(),
                conductor::AuditKey::new(&rand::random::<[u8; 32]>()),
            )
        });
        let mut conductor = Conductor::new(
            self.config.clone(),
            self.workers.clone(),
            self.metrics.clone(),
            ready.clone(),
            setup_tx,
            keys,
            self.store.clone(),
            base_url,
            audit_key,
            seed,
        );
        for (room, settings) in std::mem::take(&mut self.stored_rooms) {
            // Checked when loaded in `bind`, and names are unique in the table.
            if let Err(e) = conductor.rooms_mut().define_room(room, settings) {
                tracing::error!(error = %e, "a stored room could not be defined");
            }
        }
        for (room, at) in std::mem::take(&mut self.deleted_rooms) {
            conductor.rooms_mut().load_deleted(room, at);
        }
        let http_addr = self.local_addr();
        let worker_events = self.worker_events;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut stop_conductor = stop_rx.clone();
        let conductor = tokio::spawn(conductor.run(cmd_rx, worker_events, built_rx, async move {
            let _ = stop_conductor.wait_for(|s| *s).await;
        }));
        let (soft, hard) = raise_fd_limit();
        self.metrics.control.fd_soft_limit.store(soft, Relaxed);
        self.metrics.control.fd_hard_limit.store(hard, Relaxed);
        let by_fds = (soft as usize).saturating_sub(listen::FD_RESERVE).max(64);
        let max_connections = match self.config.limits.max_connections {
            0 => by_fds,
            n => n.min(by_fds),
        };
        info!(
            fd_soft = soft,
            fd_hard = hard,
            max_connections,
            "file descriptors"
        );
        let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
        let state = Arc::new(AppState {
            config: self.config.clone(),
            conductor: cmd_tx,
            metrics: self.metrics.clone(),
            ready: ready.clone(),
            max_connections,
            closing: closing_rx,
            api_key: self.api_key.clone(),
            store: self.store.clone(),
            resources: whip::Resources::default(),
            https: self.tls.is_some(),
            dev_certificate: self.tls.as_ref().is_some_and(|t| t.is_self_signed()),
        });
        let app = http::router(state);
        info!(http = %http_addr, workers = self.workers.len(), "ting serving");
        let limits = listen::ConnLimits {
            max: max_connections,
            per_address: self.config.limits.max_connections_per_address,
            header_timeout: std::time::Duration::from_secs(
                self.config.limits.http_header_timeout_secs,
            ),
        };
        let (listen_stop_tx, listen_stop_rx) = tokio::sync::watch::channel(false);
        // Registered before anything is served, so a SIGHUP never meets the default action.
        let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        let reloader = tokio::spawn(reload_on_hangup(hangups, self.tls.clone()));
        let http = tokio::spawn(listen::serve(
            self.listener,
            app,
            self.tls.clone(),
            limits,
            self.metrics.clone(),
            listen_stop_rx,
            CLOSE_GRACE,
        ));

        shutdown.await;
        // Drain: /readyz says 503 at once while everything else still answers; no new
        // joins; meetings go on until they end or the drain time is up.
        ready.store(false, Relaxed);
        let drain = std::time::Duration::from_secs(self.config.shutdown.drain_secs);
        info!(
            participants = self.metrics.control.participants.load(Relaxed),
            drain_secs = drain.as_secs(),
            "shutting down: no new joins"
        );
        let drained = tokio::time::Instant::now() + drain;
        while self.metrics.control.participants.load(Relaxed) > 0
            && tokio::time::Instant::now() < drained
        {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        // Tell everyone, then close: each session ends after writing its (fatal) goodbye;
        // those that cannot write it within a second are closed.
        let told = self.metrics.control.participants.load(Relaxed) > 0;
        let _ = stop_tx.send(true);
        let _ = conductor.await;
        if told {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        let _ = closing_tx.send(true);
        let _ = listen_stop_tx.send(true);
        let _ = http.await;
        reloader.abort();
        for w in self.workers.iter() {
            w.command(worker::WorkerCmd::Shutdown);
        }
        let mut threads = self.threads;
        threads.push(setup_thread);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        info!("ting stopped");
        Ok(())
    }
}

/// The keys join tokens are checked with: the configured secret (or a random one for this
/// run), and the configured public keys; and the audit log's room-tag key, from the secret.
fn token_keys(
    config: &Config,
) -> Result<(ting_control::TokenKeys, conductor::AuditKey), ServerError> {
    let secret = match config.token_secret()? {
        Some(s) => s.into_bytes(),
        None => {
            tracing::warn!(
                "no tokens.secret: join tokens and invite links use a random secret and stop \
                 working when ting restarts"
            );
            let mut b = vec![0u8; 32];
            rand::Rng::fill(&mut rand::rng(), &mut b[..]);
            b
        }
    };
    let audit = conductor::AuditKey::new(&secret);
    let mut keys = ting_control::TokenKeys::none()
        .with_secret(&secret)
        .map_err(|e| ServerError::Tokens {
            key: "tokens.secret".into(),
            reason: e.to_string(),
        })?;
    for path in &config.tokens.public_key_files {
        let pem = std::fs::read(path).map_err(|e| ServerError::Tokens {
            key: format!("tokens.public_key_files ({path})"),
            reason: format!("cannot be read: {e}"),
        })?;
        keys = keys
            .with_public_key_pem(&pem)
            .map_err(|e| ServerError::Tokens {
                key: format!("tokens.public_key_files ({path})"),
                reason: e.to_string(),
            })?;
    }
    Ok((keys, audit))
}

/// A stored room as the control plane takes it. A capacity above the server's present
/// `limits.max_participants_per_room` is lowered to it; anything else unusable is an error
/// (a room must never come back with fewer protections than it was given).
fn stored_settings(
    row: store::RoomRow,
    max: usize,
) -> Result<(ting_control::RoomName, ting_control::RoomSettings), String> {
    let room = ting_control::RoomName::parse(&row.name)
        .map_err(|e| format!("a room name {e} (the table was changed by hand?)"))?;
    let passcode = row
        .passcode
        .as_deref()
        .map(ting_control::Passcode::from_stored)
        .transpose()
        .map_err(|e| format!("a room's passcode {e}"))?;
    Ok((
        room,
        ting_control::RoomSettings {
            starts_at: row.starts_at,
            ends_at: row.ends_at,
            passcode,
            lobby: row.lobby,
            capacity: row.capacity.map(|c| c.clamp(1, max)),
            e2ee_required: row.e2ee_required,
            allow_unmute: row.allow_unmute,
        },
    ))
}

/// Reloads the certificate on every SIGHUP (`systemctl reload`). Without TLS there is
/// nothing to reload, but the signal is still caught: its default would end the process.
async fn reload_on_hangup(
    hangups: std::io::Result<tokio::signal::unix::Signal>,
    tls: Option<Arc<tls::Tls>>,
) {
    let Ok(mut hangups) = hangups else {
        tracing::warn!("cannot listen for SIGHUP: certificates cannot be reloaded");
        return;
    };
    while hangups.recv().await.is_some() {
        match &tls {
            Some(tls) => {
                if let Err(e) = tls.reload() {
                    tracing::error!(error = %e, "certificate not reloaded; the one in use stays");
                }
            }
            None => info!("SIGHUP: plain HTTP, no certificate to reload"),
        }
    }
}
