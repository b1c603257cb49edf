//! Helpers shared by the end-to-end tests: a real ting server on loopback ports chosen by
//! the system, simulated participants, and waiting on conditions with deadlines.

#![allow(dead_code)] // each test file uses a different part

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ting_bench::{DriverHandle, JoinedPeer, PeerStats, SimPeerConfig, join_peer};
use ting_server::{Config, Override, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

pub struct TestServer {
    pub http: SocketAddr,
    pub ws_url: String,
    pub media: Vec<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Starts ting in-process: HTTP and media on loopback, ports chosen by the system, two
/// media workers. Rooms of up to `media.spread_rooms_above` (16) stay on one of them;
/// `tests/spread.rs` sets it lower so that a room spans both and the queues between them
/// carry its media.
pub async fn start_server(extra: &[(&'static str, &str)]) -> TestServer {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    let mut overrides: Vec<Override> = [
        ("http.listen", "127.0.0.1:0"),
        ("media.bind_ip", "127.0.0.1"),
        ("media.port", "0"),
        ("media.advertise_ip", "127.0.0.1"),
        ("media.workers", "2"),
        // Tests stop the server with people still in it; the drain has its own test.
        ("shutdown.drain_secs", "0"),
    ]
    .into_iter()
    .map(|(key, value)| Override {
        key,
        value: value.into(),
        source: "test".into(),
    })
    .collect();
    overrides.extend(extra.iter().map(|(key, value)| Override {
        key,
        value: (*value).into(),
        source: "test".into(),
    }));
    let config = Config::load(None, &overrides).expect("test config");
    let server = Server::bind(config).await.expect("server binds");
    let http = server.local_addr();
    let media = server.media_addrs();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .run(async {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
    });
    TestServer {
        http,
        ws_url: format!("ws://{http}/ws"),
        media,
        stop: Some(tx),
        task: Some(task),
    }
}

impl TestServer {
    /// Sends the shutdown signal (as SIGTERM would) without waiting for the server.
    pub fn signal_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Waits for the server to finish; `Err` if it takes longer than `within`.
    pub async fn finished_within(mut self, within: Duration) -> Result<(), ()> {
        match self.task.take() {
            Some(task) => match tokio::time::timeout(within, task).await {
                Ok(r) => {
                    r.expect("server task");
                    Ok(())
                }
                Err(_) => Err(()),
            },
            None => Ok(()),
        }
    }

    /// The value of a metric line, `None` if the scrape failed or has no such line.
    pub async fn scrape(&self, line_start: &str) -> Option<f64> {
        let (status, body) = self.get("/metrics").await;
        if status != 200 {
            return None;
        }
        body.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server stops within 10 s")
                .expect("server task");
        }
    }

    /// GET a path over plain HTTP/1.0; returns (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(self.http)
            .await
            .expect("connect");
        // A server that refuses the connection (a limit) answers with status 0.
        let _ = s
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
            .await;
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf).await;
        let status = buf
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = buf.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
        (status, body)
    }

    /// A control API request with the bearer `key` (none: no Authorization header) and a
    /// JSON body; returns (status, body).
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(self.http)
            .await
            .expect("connect");
        let mut req = format!("{method} {path} HTTP/1.0\r\nHost: test\r\n");
        if let Some(k) = key {
            req.push_str(&format!("Authorization: Bearer {k}\r\n"));
        }
        let body = body.unwrap_or("");
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        let _ = s.write_all(req.as_bytes()).await;
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf).await;
        let status = buf
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = buf.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
        (status, body)
    }

    /// The value of a metric line (`name{labels} value`) from /metrics.
    /// 0 when the scrape failed or has no such line.
    pub async fn metric(&self, line_start: &str) -> f64 {
        self.scrape(line_start).await.unwrap_or(0.0)
    }
}

/// Polls `check` every 50 ms until it holds or `timeout` passes; panics naming `what`.
pub async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A small receiver configuration for tests.
pub fn peer_config(id: u32) -> SimPeerConfig {
    let mut cfg = SimPeerConfig::new(id);
    cfg.audio_slots = 3;
    cfg.video_slots = 3;
    cfg.screen_slots = 1;
    cfg.video_bps = vec![300_000];
    cfg.speaking = true;
    cfg
}

/// Joins `n` simulated participants (ids 1..=n) to `room`.
pub async fn join_many(
    server: &TestServer,
    driver: &DriverHandle,
    room: &str,
    ids: impl IntoIterator<Item = u32>,
) -> Vec<JoinedPeer> {
    let mut peers = Vec::new();
    for id in ids {
        let p = join_peer(
            &server.ws_url,
            room,
            peer_config(id),
            LOOPBACK,
            driver.sender(),
        )
        .await
        .unwrap_or_else(|e| panic!("participant {id} could not join: {e}"));
        peers.push(p);
    }
    peers
}

pub fn stats_of(snapshot: &[PeerStats], id: u32) -> Option<&PeerStats> {
    snapshot.iter().rev().find(|s| s.id == id)
}

/// Whether `receiver` got at least `audio` audio and `video` video packets from `sender`.
pub fn hears(snapshot: &[PeerStats], receiver: u32, sender: u32, audio: u64, video: u64) -> bool {
    let Some(s) = stats_of(snapshot, receiver) else {
        return false;
    };
    let got = |kind: &str, min: u64| {
        s.slots.iter().any(|slot| {
            slot.kind == kind && slot.current.map(|c| c.0) == Some(sender) && slot.packets >= min
        })
    };
    got("audio", audio) && got("video", video)
}

/// Like [`wait_for`], for a check that has to wait itself (an HTTP scrape).
pub async fn wait_for_async<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
