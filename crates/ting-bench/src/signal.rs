//! The signalling side of a simulated participant: the same WebSocket protocol as the
//! browser client (`ting-proto`), over tokio-tungstenite.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use ting_proto::{
    ClientMsg, Join, Layout, MediaState, PROTOCOL_VERSION, ParticipantRef, ServerMsg, Tile, View,
    Welcome,
};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::driver::{DriverCmd, DriverSender};
use crate::peer::{BenchLayout, SimPeer, SimPeerConfig};

/// Why signalling failed.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("cannot connect to {url}")]
    Connect {
        url: String,
        source: tokio_tungstenite::tungstenite::Error,
    },
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("the server closed the connection")]
    Closed,
    #[error("the server sent something that is not a protocol message: {0}")]
    Garbled(String),
    #[error("the server refused: {code:?}: {message}")]
    Refused {
        code: ting_proto::ErrorCode,
        message: String,
    },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("simulated peer: {0}")]
    Peer(#[from] crate::peer::PeerError),
    #[error("cannot bind a UDP socket: {0}")]
    Bind(std::io::Error),
}

/// One WebSocket session.
#[derive(Debug)]
pub struct Signal {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The end-to-end encryption announcement to join (and resume) with.
    pub e2ee: Option<String>,
}

const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

impl Signal {
    /// Connects to a ting server's signalling URL (`ws://host:port/ws`, or `wss://` checked
    /// against the system's trust store).
    pub async fn connect(url: &str) -> Result<Signal, SignalError> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|source| SignalError::Connect {
                url: url.to_owned(),
                source,
            })?;
        Ok(Signal { ws, e2ee: None })
    }

    /// Connects over `wss://` to the server at `addr` (whatever the URL's host resolves to),
    /// with `tls` deciding which certificates to trust (a server's own, or its development
    /// certificate). The URL's host is the name the certificate must carry.
    pub async fn connect_tls_to(
        url: &str,
        addr: std::net::SocketAddr,
        tls: std::sync::Arc<rustls::ClientConfig>,
    ) -> Result<Signal, SignalError> {
        let connect_err = |source| SignalError::Connect {
            url: url.to_owned(),
            source,
        };
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| connect_err(tokio_tungstenite::tungstenite::Error::Io(e)))?;
        let (ws, _) = tokio_tungstenite::client_async_tls_with_config(
            url,
            tcp,
            None,
            Some(tokio_tungstenite::Connector::Rustls(tls)),
        )
        .await
        .map_err(connect_err)?;
        Ok(Signal { ws, e2ee: None })
    }

    pub async fn send(&mut self, msg: &ClientMsg) -> Result<(), SignalError> {
        self.send_text(msg.to_json()).await
    }

    /// Sends raw text (for tests of malformed input).
    pub async fn send_text(&mut self, text: String) -> Result<(), SignalError> {
        self.ws.send(Message::Text(text.into())).await?;
        Ok(())
    }

    /// Sends a raw frame.
    pub async fn send_raw(&mut self, msg: Message) -> Result<(), SignalError> {
        self.ws.send(msg).await?;
        Ok(())
    }

    /// The next server message.
    pub async fn recv(&mut self) -> Result<ServerMsg, SignalError> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    return ServerMsg::parse(t.as_str())
                        .map_err(|_| SignalError::Garbled(t.as_str().chars().take(200).collect()));
                }
                Some(Ok(Message::Close(_))) | None => return Err(SignalError::Closed),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// The next server message within `timeout`.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<ServerMsg, SignalError> {
        tokio::time::timeout(timeout, self.recv())
            .await
            .map_err(|_| SignalError::Timeout(timeout))?
    }

    /// Waits for the first message `pick` accepts, skipping others.
    pub async fn recv_until<T>(
        &mut self,
        timeout: Duration,
        mut pick: impl FnMut(&ServerMsg) -> Option<T>,
    ) -> Result<T, SignalError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.recv())
                .await
                .map_err(|_| SignalError::Timeout(timeout))??;
            if let Some(t) = pick(&msg) {
                return Ok(t);
            }
        }
    }

    pub async fn join(&mut self, room: &str, name: &str) -> Result<Welcome, SignalError> {
        self.join_with(room, name, None).await
    }

    /// Joins with a join token (rooms of a server without open rooms need one).
    pub async fn join_with(
        &mut self,
        room: &str,
        name: &str,
        token: Option<&str>,
    ) -> Result<Welcome, SignalError> {
        self.send(&ClientMsg::Join(Join {
            protocol: PROTOCOL_VERSION,
            room: room.to_owned(),
            name: name.to_owned(),
            token: token.map(str::to_owned),
            passcode: None,
            e2ee: self.e2ee.clone(),
        }))
        .await?;
        match self.recv_timeout(REPLY_TIMEOUT).await? {
            ServerMsg::Welcome(w) => Ok(w),
            ServerMsg::Error(e) => Err(SignalError::Refused {
                code: e.code,
                message: e.message,
            }),
            other => Err(SignalError::Garbled(format!(
                "expected welcome, got {other:?}"
            ))),
        }
    }

    /// Sends the offer and returns the answer's SDP; messages that arrive meanwhile are
    /// handed to `early`.
    pub async fn offer(
        &mut self,
        offer: ting_proto::Offer,
        mut early: impl FnMut(ServerMsg),
    ) -> Result<String, SignalError> {
        self.send(&ClientMsg::Offer(offer)).await?;
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.recv())
                .await
                .map_err(|_| SignalError::Timeout(REPLY_TIMEOUT))??;
            match msg {
                ServerMsg::Answer { sdp } => return Ok(sdp),
                ServerMsg::Error(e) => {
                    return Err(SignalError::Refused {
                        code: e.code,
                        message: e.message,
                    });
                }
                other => early(other),
            }
        }
    }
}

/// What a joined participant's task can be told to do.
#[derive(Debug)]
pub enum PeerControl {
    /// Send `leave` and close.
    Leave,
    /// Go silent: no pings, no media, socket kept open (a client that vanished).
    Vanish,
    /// Say that its sources are switched on or off (`media`).
    Media(MediaState),
    /// Drop the WebSocket without a goodbye (as a network blip would), wait `gap`, and
    /// resume on a new one; the media connection is kept. The outcome, and the time from
    /// the drop to the resumed welcome, go to `done`.
    CutSignal {
        gap: Duration,
        done: tokio::sync::oneshot::Sender<Result<Duration, String>>,
    },
}

/// A simulated participant in a room: its media runs on a driver, its signalling in a task.
#[derive(Debug)]
pub struct JoinedPeer {
    pub id: u32,
    pub participant: String,
    /// The UDP address its media comes from.
    pub local: SocketAddr,
    /// The server's media address its answer gave (the worker that holds the connection).
    pub server_media: Option<SocketAddr>,
    pub welcome: Welcome,
    /// From the start of the join to the answer applied.
    pub join_time: Duration,
    control: mpsc::UnboundedSender<PeerControl>,
    pub task: tokio::task::JoinHandle<()>,
}

impl JoinedPeer {
    pub fn control(&self, c: PeerControl) {
        let _ = self.control.send(c);
    }
}

/// Joins `room` at `ws_url` as a simulated participant whose media runs on `driver`; the
/// UDP socket binds to `local_ip`.
pub async fn join_peer(
    ws_url: &str,
    room: &str,
    cfg: SimPeerConfig,
    local_ip: IpAddr,
    driver: DriverSender,
) -> Result<JoinedPeer, SignalError> {
    let started = Instant::now();
    let id = cfg.id;
    let plan = LayoutPlan {
        kind: cfg.layout,
        video_slots: usize::from(cfg.video_slots),
    };
    let media = MediaState {
        audio: cfg.audio,
        video: !cfg.video_bps.is_empty(),
        screen: cfg.screen_bps.is_some(),
    };
    let mut signal = Signal::connect(ws_url).await?;
    if cfg.e2ee {
        signal.e2ee = Some(bench_announcement(id));
    }
    let welcome = signal.join(room, &cfg.name()).await?;
    let (local, socket) = driver
        .local_socket(local_ip, id)
        .map_err(SignalError::Bind)?;
    let (mut peer, offer) = SimPeer::new(cfg, local, Instant::now())?;
    peer.handle_signal(&ServerMsg::Welcome(welcome.clone()));
    let mut early = Vec::new();
    let answer = signal.offer(offer, |m| early.push(m)).await?;
    peer.accept_answer(&answer, Instant::now())?;
    let server_media = answer_candidate(&answer);
    for m in &early {
        peer.handle_signal(m);
    }
    driver.send(DriverCmd::Add(Box::new(peer), socket));
    // What a browser says once it has media: what it sends, and what it shows.
    signal.send(&ClientMsg::Media(media)).await?;
    if signal.e2ee.is_some() {
        // Its own key, sealed for everyone already there who encrypts.
        let everyone: Vec<ParticipantRef> = welcome
            .participants
            .iter()
            .filter(|p| p.e2ee.is_some())
            .map(|p| p.id.clone())
            .collect();
        for chunk in everyone.chunks(ting_proto::E2EE_KEYS_MAX) {
            signal.send(&sealed_keys(chunk)).await?;
        }
    }
    let mut directory = Directory::from_welcome(&welcome);
    for m in &early {
        directory.handle(m);
    }
    if let Some(layout) = plan.layout(&directory) {
        signal.send(&ClientMsg::Layout(layout)).await?;
    }
    let join_time = started.elapsed();
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let ping = Duration::from_millis(u64::from(welcome.limits.ping_interval_ms.max(100)));
    let resume = ResumeWith {
        url: ws_url.to_owned(),
        token: welcome.resume.clone(),
    };
    let task = tokio::spawn(run_signal(
        signal, id, driver, control_rx, ping, plan, directory, resume,
    ));
    Ok(JoinedPeer {
        id,
        participant: welcome.participant.0.clone(),
        local,
        server_media,
        welcome,
        join_time,
        control: control_tx,
        task,
    })
}

/// The address of the first ICE candidate in an SDP (`a=candidate:foundation component
/// transport priority address port typ …`).
fn answer_candidate(sdp: &str) -> Option<SocketAddr> {
    sdp.lines().find_map(|line| {
        let fields: Vec<&str> = line
            .strip_prefix("a=candidate:")?
            .split_whitespace()
            .collect();
        let ip: IpAddr = fields.get(4)?.parse().ok()?;
        let port: u16 = fields.get(5)?.parse().ok()?;
        Some(SocketAddr::new(ip, port))
    })
}

/// An announcement of a browser's size (`docs/e2ee.md`: a P-256 public key and a MAC, in
/// base64url); the server relays it unread.
fn bench_announcement(id: u32) -> String {
    let key = format!("{id:08x}").repeat(11);
    format!("B{}.{}", &key[..86], &key[..43])
}

/// Keys sealed for `to`, of a browser's size (nonce, 24 bytes sealed, tag: 70 characters).
fn sealed_keys(to: &[ParticipantRef]) -> ClientMsg {
    ClientMsg::E2eeKeys {
        keys: to
            .iter()
            .map(|p| ting_proto::E2eeKeyFor {
                to: p.clone(),
                data: "S".repeat(70),
            })
            .collect(),
    }
}

/// The others in the room, in the order they joined, as a client keeps them.
#[derive(Debug, Default)]
struct Directory {
    others: Vec<ParticipantRef>,
    /// Changed since the layout was last sent.
    changed: bool,
}

impl Directory {
    fn from_welcome(w: &Welcome) -> Directory {
        Directory {
            others: w.participants.iter().map(|p| p.id.clone()).collect(),
            changed: false,
        }
    }

    fn handle(&mut self, msg: &ServerMsg) {
        match msg {
            ServerMsg::ParticipantJoined { participant } => {
                self.others.push(participant.id.clone());
                self.changed = true;
            }
            ServerMsg::ParticipantLeft { participant, .. } => {
                self.others.retain(|p| p != participant);
                self.changed = true;
            }
            _ => {}
        }
    }
}

/// How a simulated participant lays out its tiles.
#[derive(Debug, Clone, Copy)]
struct LayoutPlan {
    kind: BenchLayout,
    video_slots: usize,
}

impl LayoutPlan {
    /// The layout to report now, if any.
    fn layout(&self, directory: &Directory) -> Option<Layout> {
        let slots = self.video_slots;
        match self.kind {
            BenchLayout::None => None,
            BenchLayout::Speaker => Some(Layout {
                view: View::Speaker,
                page: 0,
                tiles: (0..slots.min(10))
                    .map(|i| Tile {
                        participant: None,
                        height: if i == 0 { 720 } else { 180 },
                    })
                    .collect(),
            }),
            BenchLayout::Grid => Some(Layout {
                view: View::Grid,
                page: 0,
                tiles: directory
                    .others
                    .iter()
                    .take(slots.min(25))
                    .map(|p| Tile {
                        participant: Some(p.clone()),
                        height: 180,
                    })
                    .collect(),
            }),
        }
    }

    /// Whether the layout follows the room (a grid page fills as people join).
    fn follows_room(&self) -> bool {
        self.kind == BenchLayout::Grid
    }
}

/// How often a changed room updates a grid layout, at most (a browser coalesces too).
const LAYOUT_EVERY: Duration = Duration::from_millis(500);

/// Where and how a simulated participant resumes its signalling.
struct ResumeWith {
    url: String,
    token: Option<String>,
}

impl Signal {
    /// Resumes a participant on this (new) connection with its `welcome.resume` token.
    pub async fn resume(&mut self, token: &str) -> Result<Welcome, SignalError> {
        self.send(&ClientMsg::Resume(ting_proto::Resume {
            protocol: PROTOCOL_VERSION,
            token: token.to_owned(),
            e2ee: self.e2ee.clone(),
        }))
        .await?;
        match self.recv_timeout(REPLY_TIMEOUT).await? {
            ServerMsg::Welcome(w) if w.resumed => Ok(w),
            ServerMsg::Error(e) => Err(SignalError::Refused {
                code: e.code,
                message: e.message,
            }),
            other => Err(SignalError::Garbled(format!(
                "expected a resumed welcome, got {other:?}"
            ))),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_signal(
    mut signal: Signal,
    id: u32,
    driver: DriverSender,
    mut control: mpsc::UnboundedReceiver<PeerControl>,
    ping: Duration,
    plan: LayoutPlan,
    mut directory: Directory,
    resume: ResumeWith,
) {
    let mut interval = tokio::time::interval(ping);
    let mut layout_tick = tokio::time::interval(LAYOUT_EVERY);
    loop {
        tokio::select! {
            msg = signal.recv() => match msg {
                Ok(m) => {
                    directory.handle(&m);
                    // A browser hands its key to each newcomer that encrypts.
                    if let ServerMsg::ParticipantJoined { participant } = &m
                        && participant.e2ee.is_some()
                        && signal.e2ee.is_some()
                        && signal.send(&sealed_keys(std::slice::from_ref(&participant.id))).await.is_err()
                    {
                        break;
                    }
                    driver.send(DriverCmd::Signal(id, Box::new(m)));
                }
                Err(_) => break,
            },
            _ = interval.tick() => {
                if signal.send(&ClientMsg::Ping).await.is_err() {
                    break;
                }
            }
            _ = layout_tick.tick(), if plan.follows_room() => {
                if std::mem::take(&mut directory.changed)
                    && let Some(layout) = plan.layout(&directory)
                    && signal.send(&ClientMsg::Layout(layout)).await.is_err()
                {
                    break;
                }
            }
            c = control.recv() => match c {
                Some(PeerControl::Leave) | None => {
                    let _ = signal.send(&ClientMsg::Leave).await;
                    driver.send(DriverCmd::Remove(id));
                    break;
                }
                Some(PeerControl::Vanish) => {
                    driver.send(DriverCmd::Remove(id));
                    // Hold the socket open and say nothing until the server drops it.
                    while signal.recv().await.is_ok() {}
                    break;
                }
                Some(PeerControl::Media(m)) => {
                    if signal.send(&ClientMsg::Media(m)).await.is_err() {
                        break;
                    }
                }
                Some(PeerControl::CutSignal { gap, done }) => {
                    let cut = Instant::now();
                    drop(signal);
                    tokio::time::sleep(gap).await;
                    let resumed = async {
                        let token = resume.token.as_deref().ok_or("no resume token")?;
                        // The server may not have noticed the old socket close yet.
                        let deadline = Instant::now() + Duration::from_secs(10);
                        loop {
                            let mut s = Signal::connect(&resume.url)
                                .await
                                .map_err(|e| e.to_string())?;
                            match s.resume(token).await {
                                Ok(w) => return Ok::<_, String>((s, w)),
                                Err(e) if Instant::now() < deadline => {
                                    tracing::debug!(error = %e, "resume refused; again");
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                }
                                Err(e) => return Err(e.to_string()),
                            }
                        }
                    }
                    .await;
                    match resumed {
                        Ok((s, w)) => {
                            signal = s;
                            directory = Directory::from_welcome(&w);
                            let _ = done.send(Ok(cut.elapsed()));
                            driver.send(DriverCmd::Signal(id, Box::new(ServerMsg::Welcome(w))));
                        }
                        Err(e) => {
                            let _ = done.send(Err(e));
                            driver.send(DriverCmd::Remove(id));
                            break;
                        }
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::answer_candidate;

    #[test]
    fn the_answers_candidate_names_the_servers_media_address() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
                   a=candidate:1 1 udp 2130706431 127.0.0.1 40123 typ host\r\n\
                   a=candidate:2 1 udp 2130706430 ::1 40124 typ host\r\n";
        assert_eq!(
            answer_candidate(sdp),
            Some("127.0.0.1:40123".parse().unwrap())
        );
    }

    #[test]
    fn a_candidate_without_an_address_or_port_is_no_address() {
        assert_eq!(
            answer_candidate("a=candidate:1 1 udp 5 nowhere 9 typ host"),
            None
        );
        assert_eq!(answer_candidate("a=candidate:1 1 udp 5 127.0.0.1"), None);
        assert_eq!(
            answer_candidate("a=candidate:1 1 udp 5 127.0.0.1 99999 typ host"),
            None
        );
        assert_eq!(answer_candidate("v=0"), None);
    }
}
