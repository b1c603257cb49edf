//! The same simulated participants against Janus's VideoRoom plugin, over its REST API
//! (HTTP long-poll), so one scenario runs against both servers.
//!
//! Janus needs two phases where ting needs one: a subscriber can subscribe only to feeds
//! that are already up (`webrtcup`), and each subscription is its own PeerConnection that
//! Janus offers. So every publisher joins first; then every participant that receives
//! subscribes once to the feeds it should see, chosen like ting's slots: the first
//! publishers for audio (the speakers come first in a plan) and cameras in join order.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::driver::{DriverCmd, DriverHandle, DriverSender, PeerSocket};
use crate::http;
use crate::peer::{SimPeer, SimPeerConfig};
use crate::run::{BenchOptions, Joined};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum JanusError {
    #[error("http: {0}")]
    Http(#[from] http::HttpError),
    #[error("Janus answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("Janus refused: {0}")]
    Refused(String),
    #[error("no {0} from Janus in time")]
    Timeout(&'static str),
    #[error("unexpected answer from Janus: {0}")]
    Unexpected(String),
    #[error("simulated peer: {0}")]
    Peer(#[from] crate::peer::PeerError),
    #[error("cannot bind a UDP socket: {0}")]
    Bind(std::io::Error),
}

fn transaction() -> String {
    format!("t{:016x}", rand::random::<u64>())
}

/// One Janus session with its long-poll loop.
struct Session {
    api: String,
    id: u64,
    events: mpsc::UnboundedReceiver<Value>,
    backlog: Vec<Value>,
    poller: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

async fn post(url: &str, body: Value) -> Result<Value, JanusError> {
    let (status, text) = http::post_json(url, &body.to_string(), REQUEST_TIMEOUT).await?;
    if status != 200 {
        return Err(JanusError::Status { status, body: text });
    }
    serde_json::from_str(&text).map_err(|_| JanusError::Unexpected(text))
}

fn error_of(v: &Value) -> Option<String> {
    if v["janus"] == "error" {
        return Some(v["error"]["reason"].as_str().unwrap_or("error").to_owned());
    }
    let data = &v["plugindata"]["data"];
    if data["videoroom"] == "event" && !data["error"].is_null() {
        return Some(format!(
            "{} ({})",
            data["error"].as_str().unwrap_or("error"),
            data["error_code"]
        ));
    }
    None
}

impl Session {
    async fn create(api: &str) -> Result<Session, JanusError> {
        let v = post(
            api,
            json!({"janus": "create", "transaction": transaction()}),
        )
        .await?;
        if let Some(e) = error_of(&v) {
            return Err(JanusError::Refused(e));
        }
        let id = v["data"]["id"]
            .as_u64()
            .ok_or_else(|| JanusError::Unexpected(v.to_string()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let url = format!("{api}/{id}?maxev=10");
        let poller = tokio::spawn(async move {
            loop {
                match http::get(&url, Duration::from_secs(60)).await {
                    Ok((200, body)) => {
                        let Ok(v) = serde_json::from_str::<Value>(&body) else {
                            continue;
                        };
                        let list = match v {
                            Value::Array(a) => a,
                            other => vec![other],
                        };
                        for e in list {
                            if tx.send(e).is_err() {
                                return;
                            }
                        }
                    }
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        Ok(Session {
            api: api.to_owned(),
            id,
            events: rx,
            backlog: Vec::new(),
            poller,
        })
    }

    async fn attach(&self) -> Result<u64, JanusError> {
        let v = post(
            &format!("{}/{}", self.api, self.id),
            json!({"janus": "attach", "plugin": "janus.plugin.videoroom", "transaction": transaction()}),
        )
        .await?;
        if let Some(e) = error_of(&v) {
            return Err(JanusError::Refused(e));
        }
        v["data"]["id"]
            .as_u64()
            .ok_or_else(|| JanusError::Unexpected(v.to_string()))
    }

    /// Sends a plugin message; returns the synchronous result or, for asynchronous
    /// requests, the event that answers it.
    async fn message(
        &mut self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> Result<Value, JanusError> {
        let tx = transaction();
        let mut msg = json!({"janus": "message", "transaction": tx, "body": body});
        if let Some(j) = jsep {
            msg["jsep"] = j;
        }
        let v = post(&format!("{}/{}/{}", self.api, self.id, handle), msg).await?;
        if let Some(e) = error_of(&v) {
            return Err(JanusError::Refused(e));
        }
        if v["janus"] != "ack" {
            return Ok(v);
        }
        let ev = self
            .wait(REQUEST_TIMEOUT, "reply", |e| {
                e["transaction"] == tx.as_str()
            })
            .await?;
        match error_of(&ev) {
            Some(e) => Err(JanusError::Refused(e)),
            None => Ok(ev),
        }
    }

    /// The next event `pick` accepts; others are kept for later waits.
    async fn wait(
        &mut self,
        timeout: Duration,
        what: &'static str,
        pick: impl Fn(&Value) -> bool,
    ) -> Result<Value, JanusError> {
        if let Some(i) = self.backlog.iter().position(&pick) {
            return Ok(self.backlog.remove(i));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .map_err(|_| JanusError::Timeout(what))?
                .ok_or(JanusError::Timeout(what))?;
            if pick(&ev) {
                return Ok(ev);
            }
            if self.backlog.len() < 256 {
                self.backlog.push(ev);
            }
        }
    }
}

/// A joined publisher: what subscribers need to know of it.
struct Feed {
    plan_index: usize,
    feed: u64,
    mic: Option<String>,
    camera: Option<String>,
    screen: Option<String>,
}

/// Keeps a participant's Janus sessions open for the run.
struct JanusParticipant {
    _sessions: Vec<Session>,
}

async fn create_room(api: &str, room: u64, publishers: usize) -> Result<(), JanusError> {
    let mut s = Session::create(api).await?;
    let h = s.attach().await?;
    let v = s
        .message(
            h,
            json!({
                "request": "create", "room": room, "publishers": publishers.max(1),
                "bitrate": 0, "fir_freq": 10, "audiocodec": "opus", "videocodec": "vp8",
                "record": false, "notify_joining": false
            }),
            None,
        )
        .await?;
    if v["plugindata"]["data"]["videoroom"] != "created" {
        return Err(JanusError::Unexpected(v.to_string()));
    }
    Ok(())
}

fn bind(ip: std::net::IpAddr) -> Result<(UdpSocket, SocketAddr), JanusError> {
    let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).map_err(JanusError::Bind)?;
    let local = socket.local_addr().map_err(JanusError::Bind)?;
    Ok((socket, local))
}

async fn publish(
    api: &str,
    room: u64,
    cfg: SimPeerConfig,
    ip: std::net::IpAddr,
    driver: DriverSender,
) -> Result<(Session, u64, Feed), JanusError> {
    let mut s = Session::create(api).await?;
    let h = s.attach().await?;
    let (socket, local) = bind(ip)?;
    let mut pub_cfg = cfg.clone();
    pub_cfg.audio_slots = 0;
    pub_cfg.video_slots = 0;
    pub_cfg.screen_slots = 0;
    // Janus takes the first rid of a=simulcast as the best layer.
    pub_cfg.rids_high_first = true;
    let (mut peer, offer) = SimPeer::new(pub_cfg, local, Instant::now())?;
    let offer_sdp_for_log = offer.sdp.clone();
    let (mic, camera, screen) = peer.publish_mids();
    let ev = s
        .message(
            h,
            json!({"request": "joinandconfigure", "ptype": "publisher", "room": room,
                   "display": cfg.name(), "audio": cfg.audio, "video": !cfg.video_bps.is_empty()}),
            Some(json!({"type": "offer", "sdp": offer.sdp, "trickle": false})),
        )
        .await?;
    let answer = ev["jsep"]["sdp"]
        .as_str()
        .ok_or_else(|| JanusError::Unexpected(ev.to_string()))?;
    tracing::debug!(offer = %offer_sdp_for_log, answer, "Janus publisher negotiation");
    peer.accept_answer(answer, Instant::now())?;
    // joinandconfigure answers with the configured event; the feed id comes in "joined",
    // which may arrive first or after.
    let feed = match ev["plugindata"]["data"]["id"].as_u64() {
        Some(id) => id,
        None => s
            .wait(REQUEST_TIMEOUT, "joined event", |e| {
                e["plugindata"]["data"]["videoroom"] == "joined"
            })
            .await?["plugindata"]["data"]["id"]
            .as_u64()
            .ok_or(JanusError::Timeout("feed id"))?,
    };
    driver.send(DriverCmd::Add(Box::new(peer), PeerSocket::Own(socket)));
    Ok((
        s,
        h,
        Feed {
            plan_index: 0,
            feed,
            mic,
            camera,
            screen,
        },
    ))
}

async fn subscribe(
    api: &str,
    room: u64,
    cfg: SimPeerConfig,
    streams: Vec<Value>,
    ip: std::net::IpAddr,
    driver: DriverSender,
) -> Result<Session, JanusError> {
    let mut s = Session::create(api).await?;
    let h = s.attach().await?;
    let ev = s
        .message(
            h,
            json!({"request": "join", "ptype": "subscriber", "room": room, "streams": streams}),
            None,
        )
        .await?;
    let offer = ev["jsep"]["sdp"]
        .as_str()
        .ok_or_else(|| JanusError::Unexpected(ev.to_string()))?;
    let slots: Vec<(String, &'static str)> = ev["plugindata"]["data"]["streams"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|st| {
            let mid = st["mid"].as_str()?.to_owned();
            let kind = if st["type"] == "audio" {
                "audio"
            } else {
                "video"
            };
            (st["type"] == "audio" || st["type"] == "video").then_some((mid, kind))
        })
        .collect();
    let (socket, local) = bind(ip)?;
    // A subscription is a connection of its own; its id marks it as the receiving half.
    let mut sub_cfg = cfg;
    sub_cfg.id |= 0x8000_0000;
    let (peer, answer) = SimPeer::answer(sub_cfg, local, offer, &slots, Instant::now())?;
    s.message(
        h,
        json!({"request": "start"}),
        Some(json!({"type": "answer", "sdp": answer, "trickle": false})),
    )
    .await?;
    driver.send(DriverCmd::Add(Box::new(peer), PeerSocket::Own(socket)));
    Ok(s)
}

/// Joins one room's participants to Janus: creates the room, publishes, then subscribes.
pub async fn join_room(
    opts: &BenchOptions,
    api: &str,
    room_index: usize,
    plan: Vec<SimPeerConfig>,
    drivers: &[DriverHandle],
    start: Instant,
    offset: usize,
) -> Vec<Result<Joined, String>> {
    let room = 1_000_000 + u64::from(std::process::id() % 10_000) * 100 + room_index as u64;
    let publishers: Vec<usize> = plan
        .iter()
        .enumerate()
        .filter(|(_, c)| c.audio || !c.video_bps.is_empty())
        .map(|(i, _)| i)
        .collect();
    if let Err(e) = create_room(api, room, publishers.len()).await {
        return plan
            .iter()
            .map(|_| {
                Err(format!(
                    "cannot create the Janus room: {}",
                    crate::error_chain(&e)
                ))
            })
            .collect();
    }
    let mut sessions: Vec<Vec<Session>> = (0..plan.len()).map(|_| Vec::new()).collect();
    let mut errors: Vec<Option<String>> = vec![None; plan.len()];
    let mut times = vec![Duration::ZERO; plan.len()];
    let pace =
        |k: usize| start + Duration::from_secs_f64((offset + k) as f64 / opts.ramp.max(0.01));

    // Phase 1: publishers.
    let mut feeds = Vec::new();
    let mut tasks = Vec::new();
    for (k, &i) in publishers.iter().enumerate() {
        let (cfg, api, ip) = (plan[i].clone(), api.to_owned(), opts.local_ip);
        let driver = drivers[(offset + i) % drivers.len()].sender();
        let at = pace(k);
        tasks.push((
            i,
            tokio::spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                let t0 = Instant::now();
                publish(&api, room, cfg, ip, driver)
                    .await
                    .map(|r| (r, t0.elapsed()))
            }),
        ));
    }
    let mut handles = Vec::new();
    for (i, t) in tasks {
        match t.await {
            Ok(Ok(((s, h, mut feed), took))) => {
                feed.plan_index = i;
                times[i] = took;
                handles.push((i, h));
                sessions[i].push(s);
                feeds.push(feed);
            }
            Ok(Err(e)) => errors[i] = Some(crate::error_chain(&e)),
            Err(e) => errors[i] = Some(e.to_string()),
        }
    }
    // A feed can be subscribed to once its connection is up.
    for (i, h) in handles {
        let s = &mut sessions[i][0];
        let up = s
            .wait(Duration::from_secs(20), "webrtcup", |e| {
                e["janus"] == "webrtcup" && e["sender"] == h
            })
            .await;
        if let Err(e) = up {
            errors[i] = Some(crate::error_chain(&e));
        }
    }
    feeds.sort_by_key(|f| f.plan_index);

    // Phase 2: subscriptions, chosen like ting's slots.
    let mut tasks = Vec::new();
    for (i, cfg) in plan.iter().enumerate() {
        if cfg.audio_slots + cfg.video_slots + cfg.screen_slots == 0 || errors[i].is_some() {
            continue;
        }
        let others = feeds.iter().filter(|f| f.plan_index != i);
        let mut streams = Vec::new();
        for f in others
            .clone()
            .filter(|f| f.mic.is_some())
            .take(usize::from(cfg.audio_slots))
        {
            streams.push(json!({"feed": f.feed, "mid": f.mic}));
        }
        for f in others
            .clone()
            .filter(|f| f.camera.is_some())
            .take(usize::from(cfg.video_slots))
        {
            streams.push(json!({"feed": f.feed, "mid": f.camera}));
        }
        for f in others
            .filter(|f| f.screen.is_some())
            .take(usize::from(cfg.screen_slots))
        {
            streams.push(json!({"feed": f.feed, "mid": f.screen}));
        }
        if streams.is_empty() {
            continue;
        }
        let (cfg, api, ip) = (cfg.clone(), api.to_owned(), opts.local_ip);
        let driver = drivers[(offset + i) % drivers.len()].sender();
        let at = pace(publishers.len() + tasks.len());
        tasks.push((
            i,
            tokio::spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                let t0 = Instant::now();
                subscribe(&api, room, cfg, streams, ip, driver)
                    .await
                    .map(|s| (s, t0.elapsed()))
            }),
        ));
    }
    for (i, t) in tasks {
        match t.await {
            Ok(Ok((s, took))) => {
                times[i] += took;
                sessions[i].push(s);
            }
            Ok(Err(e)) => errors[i] = Some(crate::error_chain(&e)),
            Err(e) => errors[i] = Some(e.to_string()),
        }
    }
    plan.iter()
        .enumerate()
        .zip(sessions)
        .map(|((i, cfg), sessions)| match errors[i].take() {
            Some(e) => Err(e),
            None => Ok(Joined {
                id: cfg.id,
                join_time: times[i],
                keep: Box::new(JanusParticipant {
                    _sessions: sessions,
                }),
            }),
        })
        .collect()
}
