//! Datagrams that claim to come from a participant's address but do not carry its keys:
//! the meeting notices nothing, and each is counted as `unauthenticated`. Forging a source
//! address on loopback needs a raw socket (root or CAP_NET_RAW, as the test gate has).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use ting_bench::DriverHandle;

/// Sends `payload` as a UDP datagram from `from` to `to` through a raw IPv4 socket.
fn send_forged(raw: libc::c_int, from: SocketAddr, to: SocketAddr, payload: &[u8]) {
    let (SocketAddr::V4(from), SocketAddr::V4(to)) = (from, to) else {
        panic!("IPv4 only");
    };
    let total = 20 + 8 + payload.len();
    let mut p = Vec::with_capacity(total);
    // IPv4 header; the kernel fills in the checksum (and the id when 0).
    p.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        17,
        0,
        0,
    ]);
    p.extend_from_slice(&from.ip().octets());
    p.extend_from_slice(&to.ip().octets());
    // UDP header, checksum 0 (none, allowed over IPv4).
    let udp_len = 8 + payload.len();
    p.extend_from_slice(&from.port().to_be_bytes());
    p.extend_from_slice(&to.port().to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    let dst = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(*to.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: a valid buffer and a sockaddr_in of the size passed, on an open socket.
    let n = unsafe {
        libc::sendto(
            raw,
            p.as_ptr().cast(),
            p.len(),
            0,
            (&dst as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(n as usize, p.len(), "forged datagram sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_source_addresses_are_dropped_and_counted() {
    // SAFETY: creating a socket has no memory effects.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    assert!(
        raw >= 0,
        "forging source addresses needs a raw socket (run as root or with CAP_NET_RAW)"
    );
    let server = start_server(&[("media.workers", "1")]).await;
    let driver = DriverHandle::spawn("spoof-clients").unwrap();
    let peers = join_many(&server, &driver, "spoofed", 1..=2).await;
    wait_for("the meeting to flow", Duration::from_secs(20), || {
        let snap = driver.snapshot();
        hears(&snap, 1, 2, 50, 30) && hears(&snap, 2, 1, 50, 30)
    })
    .await;
    let victim = peers[0].local;
    // (Each simulated participant has a loopback address of its own.)
    assert!(
        matches!(victim.ip(), std::net::IpAddr::V4(ip) if ip.is_loopback()),
        "{victim}"
    );
    // RTP and RTCP-looking datagrams with the victim's source address and garbage "SRTP".
    let mut sent = 0u64;
    for i in 0..500u32 {
        let mut d = vec![0u8; 200];
        d[0] = 0x80;
        d[1] = if i % 5 == 0 { 200 } else { 96 };
        d[2..4].copy_from_slice(&(i as u16).to_be_bytes());
        d[8..12].copy_from_slice(&0x1234_5678u32.wrapping_add(i % 3).to_be_bytes());
        for (k, b) in d.iter_mut().enumerate().skip(12) {
            *b = (k as u32 * 31 + i) as u8;
        }
        send_forged(raw, victim, server.media[0], &d);
        sent += 1;
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(raw) };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // SRTCP fails authentication; RTP of an SSRC the connection never negotiated is not
    // even decrypted. Both are counted.
    let counted = loop {
        let forged = server
            .metric("ting_dropped_total{reason=\"unauthenticated\"}")
            .await;
        let unknown = server
            .metric("ting_dropped_total{reason=\"unknown_stream\"}")
            .await;
        let n = forged + unknown;
        if (n >= sent as f64 * 0.9 && forged >= 90.0) || tokio::time::Instant::now() >= deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        counted >= sent as f64 * 0.9,
        "{counted} of {sent} forged datagrams counted"
    );
    // The victim's media goes on.
    let before = stats_of(&driver.snapshot(), 2).map_or(0, |s| s.received_audio.packets);
    wait_for(
        "the victim's audio to keep arriving",
        Duration::from_secs(10),
        || stats_of(&driver.snapshot(), 2).map_or(0, |s| s.received_audio.packets) > before + 50,
    )
    .await;
    for id in 1..=2 {
        let snap = driver.snapshot();
        let st = stats_of(&snap, id).unwrap();
        assert!(st.errors.is_empty(), "{:?}", st.errors);
    }
    drop(driver);
    server.stop().await;
}
