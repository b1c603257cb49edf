//! `ting-attack`: a client that misbehaves on purpose, to measure what it costs a ting server
//! and the meeting beside it. Every attack is bounded in count and time and stops by itself.
//!
//! ```text
//! ting-attack ping-flood  --count 4    --duration 20   # WebSocket pings, never read
//! ting-attack never-read  --count 10   --room meeting  # join, never read; the room churns
//! ting-attack huge-offers --count 2                    # offers of 1950 m-lines, again and again
//! ting-attack idle-ws     --count 5000                 # WebSockets that never join
//! ting-attack slowloris   --count 3000                 # request heads a byte at a time
//! ting-attack idle-tcp    --count 996                  # connections that say nothing
//! ting-attack rooms       --count 1000                 # one new room per connection
//! ```
//!
//! It prints one JSON line: what it opened, what the server refused, what the server closed
//! and when, and the errors the server sent, by code.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use futures_util::SinkExt;
use ting_bench::Signal;
use ting_proto::{ClientMsg, Join, MediaState, Offer, PROTOCOL_VERSION, ServerMsg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// WebSockets that flood ping frames and never read the pongs.
    PingFlood,
    /// Participants that join --room and never read, while others come and go there.
    NeverRead,
    /// Clients that join and send offers of 1950 m-lines, over and over.
    HugeOffers,
    /// WebSockets that never send `join`.
    IdleWs,
    /// Connections that send a request head one byte every few seconds.
    Slowloris,
    /// TCP connections that send nothing.
    IdleTcp,
    /// Each connection joins a room of its own.
    Rooms,
    /// --count join/offer/leave cycles, four at a time (a soak: memory, descriptors and
    /// threads should come back to where they were).
    JoinLeave,
}

/// Misbehave against a ting server, within bounds, and report what the server did.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[arg(value_enum)]
    kind: Kind,
    /// The server's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    target: String,
    /// Connections (or clients) to use.
    #[arg(long, default_value_t = 10)]
    count: usize,
    /// Seconds the attack lasts; everything stops by then.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// The room of never-read (the meeting under test).
    #[arg(long, default_value = "attacked")]
    room: String,
    /// m-lines in each offer of huge-offers.
    #[arg(long, default_value_t = 1950)]
    mlines: usize,
}

/// What happened, in the printed report.
#[derive(Debug, Default)]
struct Tally {
    opened: u64,
    refused: u64,
    closed_by_server: Vec<f64>,
    errors: BTreeMap<String, u64>,
    welcomed: u64,
    answered: u64,
    reply_ms: Vec<f64>,
}

type Shared = Arc<Mutex<Tally>>;

fn tally(t: &Shared) -> std::sync::MutexGuard<'_, Tally> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let addr: SocketAddr = cli
        .target
        .strip_prefix("http://")
        .context("--target must be http://host:port")?
        .trim_end_matches('/')
        .parse()
        .context("--target must be http://IP:port")?;
    if cli.count == 0 || cli.count > 100_000 {
        anyhow::bail!("--count must be between 1 and 100000");
    }
    let duration = Duration::from_secs_f64(cli.duration.clamp(1.0, 3600.0));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let t: Shared = Arc::default();
    let started = Instant::now();
    runtime.block_on(async {
        let stop = tokio::time::Instant::now() + duration;
        let mut tasks = tokio::task::JoinSet::new();
        if cli.kind == Kind::NeverRead {
            tasks.spawn(churn(addr, cli.room.clone(), stop));
        }
        let lanes = if cli.kind == Kind::JoinLeave {
            4.min(cli.count)
        } else {
            cli.count
        };
        for i in 0..lanes {
            let t = t.clone();
            let cycles = cli.count.div_ceil(lanes);
            let room = cli.room.clone();
            let kind = cli.kind;
            let mlines = cli.mlines.clamp(1, 5000);
            tasks.spawn(async move {
                let r = match kind {
                    Kind::PingFlood => ping_flood(addr, &t, started, stop).await,
                    Kind::NeverRead => never_read(addr, &room, i, &t, started, stop).await,
                    Kind::HugeOffers => huge_offers(addr, i, mlines, &t, stop).await,
                    Kind::IdleWs => idle_ws(addr, &t, started, stop).await,
                    Kind::Slowloris => slowloris(addr, &t, started, stop).await,
                    Kind::IdleTcp => idle_tcp(addr, &t, started, stop).await,
                    Kind::Rooms => rooms(addr, i, &t, stop).await,
                    Kind::JoinLeave => join_leave(addr, i, cycles, &t, stop).await,
                };
                if r.is_err() {
                    tally(&t).refused += 1;
                }
            });
            // Open connections at most ~2000 a second, like a client script would.
            if i % 50 == 49 {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        let _ = tokio::time::timeout_at(stop + Duration::from_secs(5), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        tasks.abort_all();
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    let t = tally(&t);
    let mut closes = t.closed_by_server.clone();
    closes.sort_by(f64::total_cmp);
    let median = |v: &[f64]| v.get(v.len() / 2).copied();
    let mut replies = t.reply_ms.clone();
    replies.sort_by(f64::total_cmp);
    let report = serde_json::json!({
        "kind": format!("{:?}", cli.kind),
        "count": cli.count,
        "seconds": duration.as_secs_f64(),
        "opened": t.opened,
        "refused_or_failed": t.refused,
        "closed_by_server": closes.len(),
        "closed_median_s": median(&closes),
        "closed_last_s": closes.last(),
        "welcomed": t.welcomed,
        "answered": t.answered,
        "reply_median_ms": median(&replies),
        "reply_max_ms": replies.last(),
        "errors": t.errors,
    });
    #[allow(clippy::print_stdout)]
    {
        println!("{report}");
    }
    Ok(())
}

/// A connection with a tiny receive buffer: not reading stalls the server after kilobytes.
async fn tight(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.set_recv_buffer_size(4096)?;
    sock.connect(addr).await
}

fn ws_url(addr: SocketAddr) -> String {
    format!("ws://{addr}/ws")
}

fn join_msg(room: &str, name: &str) -> String {
    ClientMsg::Join(Join {
        protocol: PROTOCOL_VERSION,
        room: room.into(),
        name: name.into(),
        token: None,
        passcode: None,
        e2ee: None,
    })
    .to_json()
}

/// Records that the server ended a connection now.
fn closed(t: &Shared, started: Instant) {
    tally(t)
        .closed_by_server
        .push(started.elapsed().as_secs_f64());
}

fn error_seen(t: &Shared, code: &str) {
    *tally(t).errors.entry(code.to_owned()).or_insert(0) += 1;
}

async fn ws_handshake(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let mut s = tight(addr).await?;
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: attack\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await? == 0 || head.len() > 4096 {
            anyhow::bail!("handshake refused");
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        anyhow::bail!("handshake refused");
    }
    Ok(s)
}

async fn ping_flood(
    addr: SocketAddr,
    t: &Shared,
    started: Instant,
    stop: tokio::time::Instant,
) -> anyhow::Result<()> {
    let mut s = ws_handshake(addr).await?;
    tally(t).opened += 1;
    let mask = [7u8, 1, 9, 3];
    let mut frame = vec![0x89, 0x80 | 125];
    frame.extend_from_slice(&mask);
    frame.extend((0..125).map(|i| b'p' ^ mask[i % 4]));
    let burst = frame.repeat(512);
    while tokio::time::Instant::now() < stop {
        match tokio::time::timeout_at(stop, s.write_all(&burst)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                closed(t, started);
                return Ok(());
            }
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

async fn never_read(
    addr: SocketAddr,
    room: &str,
    i: usize,
    t: &Shared,
    started: Instant,
    stop: tokio::time::Instant,
) -> anyhow::Result<()> {
    let stream = tight(addr).await?;
    let (mut ws, _) = tokio_tungstenite::client_async(ws_url(addr), stream).await?;
    tally(t).opened += 1;
    ws.send(Message::Text(
        join_msg(room, &format!("never-read-{i}")).into(),
    ))
    .await?;
    // It keeps talking (a ping every two seconds), so only its not reading can end it.
    while tokio::time::Instant::now() < stop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let ping = Message::Text(ClientMsg::Ping.to_json().into());
        match tokio::time::timeout(Duration::from_secs(5), ws.send(ping)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                closed(t, started);
                return Ok(());
            }
            // Its own send buffer is full: the server stopped reading it too.
            Err(_) => {}
        }
    }
    Ok(())
}

/// People coming and going in `room` and toggling their camera, as fast as the server's
/// limits allow, so that a member who does not read falls behind.
async fn churn(addr: SocketAddr, room: String, stop: tokio::time::Instant) {
    let mut n = 0u64;
    while tokio::time::Instant::now() < stop {
        let Ok(mut s) = Signal::connect(&ws_url(addr)).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        n += 1;
        if s.join(&room, &format!("visitor {n} with a longer display name"))
            .await
            .is_err()
        {
            continue;
        }
        for k in 0..10 {
            let _ = s
                .send(&ClientMsg::Media(MediaState {
                    audio: true,
                    video: k % 2 == 0,
                    screen: false,
                }))
                .await;
        }
        let _ = s.send(&ClientMsg::Leave).await;
    }
}

async fn join_leave(
    addr: SocketAddr,
    lane: usize,
    cycles: usize,
    t: &Shared,
    stop: tokio::time::Instant,
) -> anyhow::Result<()> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let local = socket.local_addr()?;
    for n in 0..cycles {
        if tokio::time::Instant::now() >= stop {
            break;
        }
        let mut cfg = ting_bench::SimPeerConfig::new((lane * cycles + n) as u32 + 1);
        cfg.video_slots = 9;
        let (_peer, offer) = ting_bench::SimPeer::new(cfg, local, Instant::now())?;
        let mut s = Signal::connect(&ws_url(addr)).await?;
        tally(t).opened += 1;
        if s.join("soak", &format!("cycle {lane}-{n}")).await.is_err() {
            error_seen(t, "join_failed");
            continue;
        }
        tally(t).welcomed += 1;
        let sent = Instant::now();
        match s.offer(offer, |_| {}).await {
            Ok(_) => {
                tally(t).answered += 1;
                tally(t)
                    .reply_ms
                    .push(sent.elapsed().as_secs_f64() * 1000.0);
            }
            Err(_) => error_seen(t, "offer_failed"),
        }
        let _ = s.send(&ClientMsg::Leave).await;
    }
    Ok(())
}

/// An offer of 1950 valid audio m-lines that stays under the default 256 KiB message limit:
/// credentials and fingerprint once at session level, each m-line as short as it may be.
fn huge_sdp(lines: usize) -> String {
    let mut sdp = String::from("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n");
    sdp.push_str("a=group:BUNDLE");
    for i in 0..lines {
        sdp.push_str(&format!(" {i}"));
    }
    sdp.push_str("\r\na=ice-ufrag:atck\r\na=ice-pwd:attackattackattackattack\r\n");
    sdp.push_str("a=fingerprint:sha-256 ");
    let fp: Vec<String> = (0..32).map(|b| format!("{b:02X}")).collect();
    sdp.push_str(&fp.join(":"));
    sdp.push_str("\r\na=setup:actpass\r\n");
    for i in 0..lines {
        sdp.push_str(&format!(
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:{i}\r\n\
             a=recvonly\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n"
        ));
    }
    sdp
}

async fn huge_offers(
    addr: SocketAddr,
    i: usize,
    mlines: usize,
    t: &Shared,
    stop: tokio::time::Instant,
) -> anyhow::Result<()> {
    let sdp = huge_sdp(mlines);
    let mut round = 0;
    while tokio::time::Instant::now() < stop {
        round += 1;
        let mut s = Signal::connect(&ws_url(addr)).await?;
        tally(t).opened += 1;
        if s.join(&format!("huge-{i}-{round}"), "offerer")
            .await
            .is_err()
        {
            error_seen(t, "join_failed");
            continue;
        }
        tally(t).welcomed += 1;
        let offer = Offer {
            sdp: sdp.clone(),
            publish: Default::default(),
            receive: ting_proto::ReceiveSlots {
                audio: (0..3).map(|m| m.to_string()).collect(),
                video: Vec::new(),
                screen: Vec::new(),
            },
        };
        let sent = Instant::now();
        s.send(&ClientMsg::Offer(offer)).await?;
        let reply = s
            .recv_until(Duration::from_secs(15), |m| match m {
                ServerMsg::Answer { .. } => Some(None),
                ServerMsg::Error(e) => Some(Some(format!("{:?}", e.code))),
                _ => None,
            })
            .await;
        let ms = sent.elapsed().as_secs_f64() * 1000.0;
        match reply {
            Ok(None) => tally(t).answered += 1,
            Ok(Some(code)) => error_seen(t, &code),
            Err(_) => error_seen(t, "no_reply"),
        }
        tally(t).reply_ms.push(ms);
    }
    Ok(())
}

async fn idle_ws(
    addr: SocketAddr,
    t: &Shared,
    started: Instant,
    stop: tokio::time::Instant,
) -> anyhow::Result<()> {
    let mut s = Signal::connect(&ws_url(addr)).await?;
    tally(t).opened += 1;
    loop {
        match tokio::time::timeout_at(stop, s.recv()).await {
            Err(_) => return Ok(()),
            Ok(Ok(ServerMsg::Error(e))) => error_seen(t, &format!("{:?}", e.code)),
            Ok(Ok(_)) => {}
            Ok(Err(_)) => {
                closed(t, started);
                return Ok(());
            }
        }
    }
}

/// Waits until the server closes `s` or `stop`; records the close.
async fn until_closed(
    s: &mut TcpStream,
    t: &Shared,
    started: Instant,
    stop: tokio::time::Instant,
    mut trickle: Option<&[u8]>,
) {
    let mut buf = [0u8; 4096];
    let mut next_byte = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let wake = if trickle.is_some() {
            next_byte.min(stop)
        } else {
            stop
        };
        match tokio::time::timeout_at(wake, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {
                closed(t, started);
                return;
            }
            Ok(Ok(_)) => {}
            Err(_) => {
                if tokio::time::Instant::now() >= stop {
                    return;
                }
                if let Some(rest) = trickle.as_mut()
                    && let Some((first, tail)) = rest.split_first()
                {
                    if s.write_all(&[*first]).await.is_err() {
                        closed(t, started);
                        return;
                    }
                    *rest = tail;
                }
                next_byte += Duration::from_secs(5);
            }
        }
    }
}

async fn slowloris(
    addr: SocketAddr,
    t: &Shared,
    started: Instant,
    stop: tokio::time::Instant,
) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    tally(t).opened += 1;
    s.write_all(b"GET / HTTP/1.1\r\n").await?;
    let rest = b"Host: attack\r\nX-Slow: 1\r\nX-Slower: 2\r\nX-Slowest: 3\r\n";
    until_closed(&mut s, t, started, stop, Some(rest)).await;
    Ok(())
}

async fn idle_tcp(
    addr: SocketAddr,
    t: &Shared,
    started: Instant,
    stop: tokio::time::Instant,
) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    tally(t).opened += 1;
    until_closed(&mut s, t, started, stop, None).await;
    Ok(())
}

async fn rooms(
    addr: SocketAddr,
    i: usize,
    t: &Shared,
    stop: tokio::time::Instant,
) -> anyhow::Result<()> {
    let mut s = Signal::connect(&ws_url(addr)).await?;
    tally(t).opened += 1;
    s.send_text(join_msg(&format!("room-{i}"), "squatter"))
        .await?;
    match s.recv_timeout(Duration::from_secs(10)).await {
        Ok(ServerMsg::Welcome(_)) => tally(t).welcomed += 1,
        Ok(ServerMsg::Error(e)) => error_seen(t, &format!("{:?}", e.code)),
        _ => error_seen(t, "no_reply"),
    }
    // Hold the room as a polite client would: reading, and pinging to stay in.
    while tokio::time::Instant::now() < stop {
        match s.recv_timeout(Duration::from_secs(4)).await {
            Ok(_) => {}
            Err(ting_bench::signal::SignalError::Timeout(_)) => {
                if s.send(&ClientMsg::Ping).await.is_err() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let _ = s.send(&ClientMsg::Leave).await;
    Ok(())
}
