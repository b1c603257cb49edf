//! Stopping: `/readyz` turns 503 at once while everything else still answers, no new joins,
//! meetings get the drain time, everyone is told, and the process ends within a bound
//! whatever its clients do.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ting_bench::Signal;
use ting_proto::{ClientMsg, ErrorCode, Join, LeaveReason, ServerMsg};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_drains_tells_everyone_and_ends_in_bounded_time() {
    let mut server = start_server(&[("shutdown.drain_secs", "2")]).await;
    let mut a = Signal::connect(&server.ws_url).await.unwrap();
    let wa = a.join("bye", "Ada").await.unwrap();
    let mut b = Signal::connect(&server.ws_url).await.unwrap();
    let wb = b.join("bye", "Bo").await.unwrap();
    // Clients that would hold a naive server open: an unfinished request, a silent socket.
    let mut slow = TcpStream::connect(server.http).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let _silent = TcpStream::connect(server.http).await.unwrap();

    let stopped_at = Instant::now();
    server.signal_stop();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let (status, _) = server.get("/readyz").await;
        if status == 503 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz still {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = server.get("/healthz").await;
    assert_eq!(status, 200, "the listener still answers while draining");
    let mut late = Signal::connect(&server.ws_url).await.unwrap();
    late.send(&ClientMsg::Join(Join {
        protocol: ting_proto::PROTOCOL_VERSION,
        room: "bye".into(),
        name: "Late".into(),
        token: None,
        passcode: None,
        e2ee: None,
    }))
    .await
    .unwrap();
    match late.recv_timeout(Duration::from_secs(2)).await.unwrap() {
        ServerMsg::Error(e) => assert_eq!(e.code, ErrorCode::Unavailable, "{e:?}"),
        other => panic!("a join while draining got {other:?}"),
    }

    // The meeting goes on during the drain, then each is told the other left because the
    // server stops, and that the connection ends.
    for (s, other) in [(&mut a, &wb.participant), (&mut b, &wa.participant)] {
        let left = s
            .recv_until(Duration::from_secs(5), |m| match m {
                ServerMsg::ParticipantLeft {
                    participant,
                    reason,
                } => Some((participant.clone(), *reason)),
                _ => None,
            })
            .await
            .expect("told that the other left");
        assert_eq!(left, (other.clone(), LeaveReason::ServerShutdown));
        let bye = s
            .recv_until(Duration::from_secs(5), |m| match m {
                ServerMsg::Error(e) => Some(e.clone()),
                _ => None,
            })
            .await
            .expect("told that the server stops");
        assert_eq!(bye.code, ErrorCode::Unavailable);
        assert!(bye.fatal);
    }
    assert!(
        stopped_at.elapsed() >= Duration::from_millis(1900),
        "the meeting got its drain time ({:?})",
        stopped_at.elapsed()
    );
    server
        .finished_within(Duration::from_secs(6))
        .await
        .expect("the server ends within the drain time and a few seconds, slow clients or not");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_server_stops_at_once() {
    let mut server = start_server(&[("shutdown.drain_secs", "30")]).await;
    let _silent = TcpStream::connect(server.http).await.unwrap();
    let started = Instant::now();
    server.signal_stop();
    server
        .finished_within(Duration::from_secs(5))
        .await
        .expect("nobody to drain: the server ends at once");
    assert!(started.elapsed() < Duration::from_secs(5));
}
