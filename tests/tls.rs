//! HTTPS and WSS without a proxy: pages, the API and a meeting's signalling over TLS with
//! the security headers; SIGHUP with a new certificate keeps a running meeting while new
//! connections get the new certificate; a reload with broken files keeps the old one.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::pki_types::{CertificateDer, ServerName};
use ting_bench::Signal;
use ting_proto::{ClientMsg, ServerMsg};

struct Cert {
    pem: String,
    key_pem: String,
    der: Vec<u8>,
}

fn cert() -> Cert {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("a certificate");
    Cert {
        pem: c.cert.pem(),
        key_pem: c.signing_key.serialize_pem(),
        der: c.cert.der().to_vec(),
    }
}

fn write(dir: &Path, c: &Cert) {
    std::fs::write(dir.join("cert.pem"), &c.pem).unwrap();
    std::fs::write(dir.join("key.pem"), &c.key_pem).unwrap();
}

/// A rustls client trusting exactly `certs`.
fn client_config(certs: &[&Cert]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots
            .add(CertificateDer::from(c.der.clone()))
            .expect("a root");
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// The certificate a new TLS connection to `addr` is shown.
async fn served(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> Option<Vec<u8>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let conn = tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .ok()?;
    conn.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_carry_a_meeting_and_sighup_swaps_the_certificate() {
    let dir = std::env::temp_dir().join(format!("ting-tls-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (cert(), cert());
    write(&dir, &a);
    let cert_file = dir.join("cert.pem").to_str().unwrap().to_owned();
    let key_file = dir.join("key.pem").to_str().unwrap().to_owned();
    let server = start_server(&[
        ("http.tls.cert_file", &cert_file),
        ("http.tls.key_file", &key_file),
    ])
    .await;
    let base = format!("https://localhost:{}", server.http.port());
    let http = reqwest::Client::builder()
        .no_proxy()
        .resolve("localhost", server.http)
        .add_root_certificate(reqwest::Certificate::from_pem(a.pem.as_bytes()).unwrap())
        .add_root_certificate(reqwest::Certificate::from_pem(b.pem.as_bytes()).unwrap())
        .build()
        .unwrap();

    // The page, with its headers.
    let page = http.get(format!("{base}/m/demo")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let h = page.headers();
    assert!(
        h.get("strict-transport-security")
            .is_some_and(|v| v.to_str().unwrap().contains("max-age=")),
        "{h:?}"
    );
    let csp = h.get("content-security-policy").unwrap().to_str().unwrap();
    assert!(csp.contains("connect-src 'self';"), "{csp}");
    assert!(
        h.get("permissions-policy")
            .is_some_and(|v| v.to_str().unwrap().contains("camera=(self)"))
    );
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    // A meeting's signalling over WSS.
    let both = client_config(&[&a, &b]);
    let ws_url = format!("wss://localhost:{}/ws", server.http.port());
    let mut s = Signal::connect_tls_to(&ws_url, server.http, both.clone())
        .await
        .expect("wss connects");
    let welcome = s.join("tls-room", "Aino").await.unwrap();
    assert_eq!(welcome.room, "tls-room");
    assert_eq!(served(server.http, both.clone()).await.unwrap(), a.der);

    // A new certificate and SIGHUP: new connections see it; the meeting carries on.
    write(&dir, &b);
    // SAFETY: kill with this process's own id and a signal the server handles.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGHUP);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if served(server.http, both.clone()).await.as_deref() == Some(&b.der[..]) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate is not served within 10 s of SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.send(&ClientMsg::Ping).await.unwrap();
    s.recv_until(Duration::from_secs(5), |m| {
        matches!(m, ServerMsg::Pong).then_some(())
    })
    .await
    .expect("the open session still answers after the reload");

    // A broken key: the reload fails, the certificate in use stays, nothing stops.
    std::fs::write(dir.join("key.pem"), "not a key").unwrap();
    // SAFETY: as above.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGHUP);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(served(server.http, both.clone()).await.unwrap(), b.der);
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    // A client trusting only the old certificate is refused now.
    assert!(served(server.http, client_config(&[&a])).await.is_none());

    drop(s);
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
