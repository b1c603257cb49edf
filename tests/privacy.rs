//! A meeting logged at `trace`, with recognisable names: the log holds no display name, no
//! e-mail-like name, no client address and no ICE credential, and neither does `/metrics`.

mod common;

use std::io::Write;
use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ting_bench::{DriverHandle, Signal, join_peer};

/// Everything logged, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The value of an SDP attribute line (`a=ice-pwd:…`).
fn sdp_attr(sdp: &str, attr: &str) -> Vec<String> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix(attr))
        .map(|v| v.trim().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meeting_at_trace_level_logs_no_names_addresses_or_credentials() {
    let log = Captured::default();
    let sink = log.clone();
    ting_server::logging::init("trace", move || sink.clone(), false).expect("logger");

    let server = start_server(&[]).await;
    let names = [
        "Astrid Lindqvist",
        "astrid.lindqvist@kommun.example",
        "Pekka Järvinen",
    ];
    let driver = DriverHandle::spawn("privacy-clients").unwrap();
    let mut peers = Vec::new();
    for (i, name) in names.iter().enumerate().take(2) {
        let mut cfg = peer_config(i as u32 + 1);
        cfg.display_name = Some((*name).to_owned());
        peers.push(
            join_peer(&server.ws_url, "private", cfg, LOOPBACK, driver.sender())
                .await
                .unwrap(),
        );
    }
    wait_for("the meeting to flow", Duration::from_secs(20), || {
        let snap = driver.snapshot();
        hears(&snap, 1, 2, 50, 30) && hears(&snap, 2, 1, 50, 30)
    })
    .await;
    // A third offers by hand, so its ICE credentials and the server's are known.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let client_addr = sock.local_addr().unwrap();
    let (_peer, offer) =
        ting_bench::SimPeer::new(peer_config(3), client_addr, std::time::Instant::now()).unwrap();
    let mut s = Signal::connect(&server.ws_url).await.unwrap();
    s.join("private", names[2]).await.unwrap();
    let answer = s.offer(offer.clone(), |_| {}).await.unwrap();
    let mut secrets: Vec<String> = Vec::new();
    for sdp in [&offer.sdp, &answer] {
        secrets.extend(sdp_attr(sdp, "a=ice-pwd:"));
        secrets.extend(sdp_attr(sdp, "a=ice-ufrag:"));
    }
    assert!(
        secrets.len() >= 4,
        "credentials found in the SDP: {secrets:?}"
    );
    let metrics = server.get("/metrics").await.1;
    drop(s);
    drop(peers);
    drop(driver);
    server.stop().await;

    let text = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    assert!(
        text.lines().count() > 10,
        "the meeting was logged at all ({} lines)",
        text.lines().count()
    );
    for needle in names
        .iter()
        .map(|n| n.to_string())
        .chain([
            "Lindqvist".into(),
            "kommun.example".into(),
            "Järvinen".into(),
        ])
        .chain(secrets)
        .chain([client_addr.to_string()])
    {
        assert!(
            !text.contains(&needle),
            "the log holds {needle:?}:\n{}",
            text.lines()
                .filter(|l| l.contains(&needle))
                .take(3)
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(!metrics.contains(&needle), "/metrics holds {needle:?}");
    }
}
