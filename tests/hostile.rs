//! Clients that behave like attackers, at a scale a test can afford: each is met by a
//! bound (memory, time, count or rate), gets an error that names the limit where it can
//! still hear one, and the meeting beside it goes on. `scripts/attack.sh` runs the same at
//! full scale against a release build and reports the figures.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use ting_bench::{DriverHandle, Signal};
use ting_proto::{ClientMsg, ErrorCode, Join, LeaveReason, MediaState, ServerMsg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// Resident memory of this process (server and attackers), in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// A TCP connection to `addr` with a tiny receive buffer, so that not reading stalls the
/// server's writes after a few kilobytes instead of megabytes.
async fn tight_connect(addr: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(addr).await.unwrap()
}

/// The WebSocket opening handshake by hand; returns the stream ready for frames.
async fn ws_handshake(addr: SocketAddr) -> TcpStream {
    let mut s = tight_connect(addr).await;
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "handshake answered");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// A masked WebSocket ping frame with a 125-byte payload (the most a control frame holds).
fn ping_frame() -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![0x89, 0x80 | 125];
    f.extend_from_slice(&mask);
    f.extend((0..125).map(|i| b'p' ^ mask[i % 4]));
    f
}

/// Whether the server closed `s`: a read sees the end or an error within `within`.
async fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

fn join(room: &str, name: &str) -> ClientMsg {
    ClientMsg::Join(Join {
        protocol: ting_proto::PROTOCOL_VERSION,
        room: room.into(),
        name: name.into(),
        token: None,
        passcode: None,
        e2ee: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_are_cut_off_and_the_meeting_goes_on() {
    let server = start_server(&[
        ("limits.write_timeout_secs", "2"),
        ("limits.outbox_messages", "64"),
        // The visitors below all come from one address, fast.
        ("limits.joins_per_second_per_address", "1000"),
    ])
    .await;
    let driver = DriverHandle::spawn("never-read-meeting").unwrap();
    let _peers = join_many(&server, &driver, "steady", 1..=2).await;
    wait_for("the meeting to flow", Duration::from_secs(20), || {
        let snap = driver.snapshot();
        hears(&snap, 1, 2, 50, 30) && hears(&snap, 2, 1, 50, 30)
    })
    .await;
    let rss_before = rss();

    // Four connections flood WebSocket pings and never read a pong.
    let mut flooders = Vec::new();
    for _ in 0..4 {
        let s = ws_handshake(server.http).await;
        flooders.push(tokio::spawn(async move {
            let mut s = s;
            let burst: Vec<u8> = ping_frame().repeat(512);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while tokio::time::Instant::now() < deadline {
                match tokio::time::timeout(Duration::from_secs(5), s.write_all(&burst)).await {
                    Ok(Ok(())) => {}
                    // The server closed it (reset), or stopped reading because it closed.
                    Ok(Err(_)) | Err(_) => return true,
                }
            }
            false
        }));
    }

    // A participant joins the meeting and stops reading.
    let stalled_socket = tight_connect(server.http).await;
    stalled_socket.set_nodelay(true).unwrap();
    let (mut stalled, _) =
        tokio_tungstenite::client_async(format!("ws://{}/ws", server.http), stalled_socket)
            .await
            .unwrap();
    stalled
        .send(Message::Text(
            serde_json::to_string(&join("steady", "Stalled"))
                .unwrap()
                .into(),
        ))
        .await
        .unwrap();

    // The room keeps talking: people come and go, and toggle their camera.
    let mut watcher = Signal::connect(&server.ws_url).await.unwrap();
    watcher.join("steady", "Watcher").await.unwrap();
    let mut churn = 0;
    let left_reason = loop {
        let mut s = Signal::connect(&server.ws_url).await.unwrap();
        s.join(
            "steady",
            &format!("Visitor {churn} with a rather long name"),
        )
        .await
        .unwrap();
        for on in [false, true] {
            let _ = s
                .send(&ClientMsg::Media(MediaState {
                    audio: true,
                    video: on,
                    screen: false,
                }))
                .await;
        }
        let _ = s.send(&ClientMsg::Leave).await;
        churn += 1;
        // It keeps talking (so it is not timed out), it only never reads.
        let _ = stalled
            .send(Message::Text(r#"{"type":"ping"}"#.into()))
            .await;
        // Did the watcher see the stalled participant go?
        let seen = watcher
            .recv_until(Duration::from_millis(20), |m| match m {
                ServerMsg::ParticipantLeft { reason, .. } if *reason != LeaveReason::Left => {
                    Some(*reason)
                }
                _ => None,
            })
            .await;
        if let Ok(reason) = seen {
            break reason;
        }
        assert!(churn < 2000, "the stalled participant was never removed");
    };
    assert_eq!(left_reason, LeaveReason::TooSlow, "after {churn} visitors");
    eprintln!("the stalled participant was removed after {churn} visitors");

    for f in flooders {
        assert!(
            f.await.unwrap(),
            "a ping flooder that never reads was not cut off within 20 s"
        );
    }
    let grown = rss().saturating_sub(rss_before);
    assert!(
        grown < 200 << 20,
        "memory grew by {} MB under never-reading clients",
        grown >> 20
    );
    assert!(
        server
            .metric("ting_limited_total{limit=\"too_slow\"}")
            .await
            + server
                .metric("ting_limited_total{limit=\"write_timeout\"}")
                .await
            >= 1.0
    );

    // The meeting noticed nothing.
    let before: Vec<u64> = (1..=2)
        .map(|id| {
            stats_of(&driver.snapshot(), id)
                .map_or(0, |s| s.received_audio.packets + s.received_video.packets)
        })
        .collect();
    wait_for("media to keep flowing", Duration::from_secs(10), || {
        (1..=2).all(|id| {
            stats_of(&driver.snapshot(), id)
                .map_or(0, |s| s.received_audio.packets + s.received_video.packets)
                > before[id as usize - 1] + 200
        })
    })
    .await;
    let (status, _) = server.get("/healthz").await;
    assert_eq!(status, 200);
    drop(driver);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_join_or_never_finish_a_request_are_closed() {
    let server = start_server(&[
        ("limits.join_timeout_secs", "1"),
        ("limits.http_header_timeout_secs", "1"),
    ])
    .await;
    // Slow headers: a request head that never ends.
    let mut slow = Vec::new();
    for _ in 0..40 {
        let mut s = TcpStream::connect(server.http).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    // Connections that say nothing at all.
    let mut silent = Vec::new();
    for _ in 0..40 {
        silent.push(TcpStream::connect(server.http).await.unwrap());
    }
    // WebSockets that never join.
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(Signal::connect(&server.ws_url).await.unwrap());
    }
    // Health checks answer meanwhile.
    let (status, _) = server.get("/healthz").await;
    assert_eq!(status, 200);
    for s in slow.iter_mut().chain(silent.iter_mut()) {
        assert!(
            closed_by_server(s, Duration::from_secs(5)).await,
            "an unfinished request was not closed"
        );
    }
    for mut s in idle {
        let end = s
            .recv_until(Duration::from_secs(5), |m| match m {
                ServerMsg::Error(e) => Some(e.clone()),
                _ => None,
            })
            .await
            .expect("an idle WebSocket is told why it is closed");
        assert_eq!(end.code, ErrorCode::JoinTimeout);
        assert!(
            end.fatal && end.message.contains("limits.join_timeout_secs"),
            "{end:?}"
        );
        assert!(s.recv_timeout(Duration::from_secs(5)).await.is_err());
    }
    assert!(
        server
            .metric("ting_limited_total{limit=\"join_timeout\"}")
            .await
            >= 40.0
    );
    // Everything was released: only the scrape's own connection is open.
    wait_for_metric(&server, "ting_http_connections ", |v| v <= 1.0).await;
    server.stop().await;
}

async fn wait_for_metric(server: &TestServer, line: &str, ok: impl Fn(f64) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = server.scrape(line).await;
        if v.is_some_and(&ok) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{line} stayed at {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_keep_health_checks_answering() {
    // 40 connections in all, of which 32 are kept from WebSockets: 8 WebSockets fit.
    let server = start_server(&[
        ("limits.max_connections", "40"),
        ("limits.max_connections_per_address", "20"),
    ])
    .await;
    let mut sockets = Vec::new();
    for _ in 0..8 {
        sockets.push(Signal::connect(&server.ws_url).await.unwrap());
    }
    let refused = Signal::connect(&server.ws_url).await;
    assert!(
        refused.is_err(),
        "a WebSocket beyond the reserve is refused"
    );
    let (status, body) = server.get("/healthz").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    // One address may hold 20 connections; the 21st is closed at once.
    let mut plain = Vec::new();
    while plain.len() + sockets.len() < 20 {
        plain.push(TcpStream::connect(server.http).await.unwrap());
    }
    let mut extra = TcpStream::connect(server.http).await.unwrap();
    assert!(closed_by_server(&mut extra, Duration::from_secs(5)).await);
    // (The scrape below comes from the same address, so it needs a free place.)
    drop(plain);
    wait_for_metric(&server, "ting_http_connections ", |v| v <= 9.0).await;
    assert!(
        server
            .metric("ting_limited_total{limit=\"connections_per_address\"}")
            .await
            >= 1.0
    );
    assert!(
        server
            .metric("ting_limited_total{limit=\"websocket_reserve\"}")
            .await
            >= 1.0
    );
    drop(sockets);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_fill_the_room_table() {
    let server = start_server(&[("limits.max_rooms_per_address", "3")]).await;
    let mut held = Vec::new();
    for room in ["a", "b", "c"] {
        let mut s = Signal::connect(&server.ws_url).await.unwrap();
        s.join(room, "Opener").await.unwrap();
        held.push(s);
    }
    let mut s = Signal::connect(&server.ws_url).await.unwrap();
    s.send(&join("d", "Opener")).await.unwrap();
    match s.recv_timeout(Duration::from_secs(5)).await.unwrap() {
        ServerMsg::Error(e) => {
            assert_eq!(e.code, ErrorCode::TooManyRooms);
            assert!(e.message.contains("limits.max_rooms_per_address"), "{e:?}");
        }
        other => panic!("expected too_many_rooms, got {other:?}"),
    }
    // Joining a room that is open already is fine.
    s.send(&join("a", "Guest")).await.unwrap();
    assert!(matches!(
        s.recv_timeout(Duration::from_secs(5)).await.unwrap(),
        ServerMsg::Welcome(_)
    ));
    // Once a room closes, the address may open another.
    let mut c = held.pop().unwrap();
    c.send(&ClientMsg::Leave).await.unwrap();
    let mut d = Signal::connect(&server.ws_url).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        d.send(&join("d", "Opener")).await.unwrap();
        match d.recv_timeout(Duration::from_secs(5)).await.unwrap() {
            ServerMsg::Welcome(_) => break,
            ServerMsg::Error(e) if e.code == ErrorCode::TooManyRooms => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "room c never closed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_joins_at_a_bounded_rate() {
    // One join a second, bursts of ten.
    let server = start_server(&[("limits.joins_per_second_per_address", "1")]).await;
    let mut welcomed = 0;
    let mut limited = None;
    let mut held = Vec::new();
    for i in 0..12 {
        let mut s = Signal::connect(&server.ws_url).await.unwrap();
        s.send(&join("busy", &format!("Joiner {i}"))).await.unwrap();
        match s.recv_timeout(Duration::from_secs(5)).await.unwrap() {
            ServerMsg::Welcome(_) => welcomed += 1,
            ServerMsg::Error(e) => limited = Some(e),
            other => panic!("unexpected {other:?}"),
        }
        held.push(s);
    }
    assert!((10..12).contains(&welcomed), "{welcomed} of 12 welcomed");
    let e = limited.expect("a join beyond the burst is refused");
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert!(!e.fatal);
    assert!(
        e.message.contains("limits.joins_per_second_per_address"),
        "{e:?}"
    );
    assert!(
        server
            .metric("ting_limited_total{limit=\"joins_per_address\"}")
            .await
            >= 1.0
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_are_rate_limited_and_huge_offers_refused_before_parsing() {
    let server = start_server(&[
        ("limits.messages_per_second", "10"),
        ("limits.media_messages_per_second", "2"),
        ("limits.layout_messages_per_second", "2"),
    ])
    .await;
    let mut s = Signal::connect(&server.ws_url).await.unwrap();
    s.join("flood", "Flooder").await.unwrap();
    for _ in 0..100 {
        s.send(&ClientMsg::Ping).await.unwrap();
    }
    let mut pongs = 0;
    let mut limited = None;
    while let Ok(m) = s.recv_timeout(Duration::from_millis(500)).await {
        match m {
            ServerMsg::Pong => pongs += 1,
            ServerMsg::Error(e) if e.code == ErrorCode::RateLimited => limited = Some(e),
            _ => {}
        }
    }
    let limited = limited.expect("a flood is told it is limited");
    assert!(!limited.fatal);
    assert!(
        limited.message.contains("limits.messages_per_second"),
        "{limited:?}"
    );
    assert!(pongs < 40, "{pongs} of 100 pings answered at 10 a second");
    assert!(pongs >= 10, "the burst is answered ({pongs})");
    // Media toggles have their own, lower budget.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..10 {
        s.send(&ClientMsg::Media(MediaState {
            audio: true,
            video: i % 2 == 0,
            screen: false,
        }))
        .await
        .unwrap();
    }
    let e = s
        .recv_until(Duration::from_secs(5), |m| match m {
            ServerMsg::Error(e) => Some(e.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert!(
        e.message.contains("limits.media_messages_per_second"),
        "{e:?}"
    );

    // An offer with 1950 m-lines is refused by counting, not parsing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut sdp = String::from("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n");
    for i in 0..1950 {
        sdp.push_str(&format!("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:{i}\r\n"));
    }
    let started = std::time::Instant::now();
    s.send(&ClientMsg::Offer(ting_proto::Offer {
        sdp,
        publish: Default::default(),
        receive: Default::default(),
    }))
    .await
    .unwrap();
    let e = s
        .recv_until(Duration::from_secs(5), |m| match m {
            ServerMsg::Error(e) => Some(e.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(e.code, ErrorCode::BadOffer);
    assert!(e.message.contains("1950 m-lines"), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        server
            .metric("ting_limited_total{limit=\"offer_lines\"}")
            .await,
        1.0
    );
    // Still usable after the limits.
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.send(&ClientMsg::Ping).await.unwrap();
    s.recv_until(Duration::from_secs(5), |m| {
        (*m == ServerMsg::Pong).then_some(())
    })
    .await
    .unwrap();
    server.stop().await;
}
