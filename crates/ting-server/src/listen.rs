//! Accepting HTTP connections with bounds: how many at once, how many from one address,
//! how long a client may take to send a request head, and how long shutdown may take.
//!
//! axum's own `serve` has no header deadline and no connection limits, so a few thousand
//! slow-header connections could hold every file descriptor. Here each connection is
//! served by hyper's HTTP/1 with a header-read timeout, counted while it lives, and
//! closed at once when a limit is reached (so the kernel's accept queue never fills and
//! health checks keep getting through). WebSocket upgrades leave hyper; the sessions end
//! themselves on shutdown ([`crate::AppState::closing`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::metrics::{Limit, Metrics};

/// File descriptors kept free of HTTP connections: media sockets, the epoll and eventfd of
/// each worker, files the process opens.
pub const FD_RESERVE: usize = 128;
/// Connections kept free of WebSockets, so `/healthz`, `/readyz` and `/metrics` answer
/// when WebSockets have used up the rest.
pub const HTTP_RESERVE: usize = 32;

/// The limits of the HTTP side.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Open connections at most.
    pub max: usize,
    /// Open connections from one IP address at most.
    pub per_address: usize,
    /// Time to send a whole request head.
    pub header_timeout: Duration,
}

/// Connections open now, in all and per address.
#[derive(Debug, Default)]
pub struct ConnTable {
    per_address: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnTable {
    /// Counts a new connection from `ip` unless that passes `limits`.
    fn admit(&self, ip: IpAddr, limits: &ConnLimits, metrics: &Metrics) -> Result<(), Limit> {
        let c = &metrics.control;
        if c.connections.load(Relaxed) as usize >= limits.max {
            return Err(Limit::MaxConnections);
        }
        let mut map = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= limits.per_address {
            return Err(Limit::ConnectionsPerAddress);
        }
        *n += 1;
        c.connections.fetch_add(1, Relaxed);
        Ok(())
    }

    fn release(&self, ip: IpAddr, metrics: &Metrics) {
        let mut map = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&ip);
            }
        }
        metrics.control.connections.fetch_sub(1, Relaxed);
    }
}

/// Serves `app` on `listener` until `stop` turns true; then asks every connection to finish
/// its request and close, waits for them at most `grace`, and drops the rest.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<Arc<crate::tls::Tls>>,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let table = Arc::new(ConnTable::default());
    let mut conns = JoinSet::new();
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut accept_errors = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    accept_errors = 0;
                    if let Err(limit) = table.admit(addr.ip(), &limits, &metrics) {
                        metrics.control.limited(limit);
                        drop(stream);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    bound_send_buffer(&stream);
                    let guard = ConnGuard {
                        table: table.clone(),
                        metrics: metrics.clone(),
                        ip: addr.ip(),
                    };
                    let app = app.clone();
                    let drain = drain_rx.clone();
                    let timeout = limits.header_timeout;
                    match &tls {
                        None => {
                            conns.spawn(serve_one(stream, addr, app, timeout, drain, guard));
                        }
                        Some(tls) => {
                            let acceptor = tls.acceptor.clone();
                            conns.spawn(async move {
                                // The handshake counts against the same deadline as a
                                // request head: a client that stalls in it is closed.
                                match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                                    Ok(Ok(tls_stream)) => {
                                        serve_one(tls_stream, addr, app, timeout, drain, guard)
                                            .await;
                                    }
                                    Ok(Err(e)) => debug!(error = %e, "TLS handshake failed"),
                                    Err(_) => debug!("TLS handshake timed out"),
                                }
                            });
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors (or another transient error): the pending
                    // connection stays queued; try again shortly instead of spinning.
                    accept_errors += 1;
                    if accept_errors == 1 || accept_errors.is_power_of_two() {
                        warn!(error = %e, times = accept_errors, "cannot accept a connection");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
        }
    }
    drop(listener);
    let _ = drain_tx.send(true);
    let finished =
        tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        debug!(
            left = conns.len(),
            "closing connections that did not finish in time"
        );
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
}

/// A connection's place in the table, released when the last holder drops it: the
/// connection's task, or the WebSocket session an upgrade handed it to.
#[derive(Clone)]
pub struct ConnSlot(#[allow(dead_code)] Arc<ConnGuard>);

impl std::fmt::Debug for ConnSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnSlot")
    }
}

/// Kernel send buffer of each HTTP/WebSocket connection. Linux grows a TCP send buffer up to
/// `net.ipv4.tcp_wmem` (4 MiB by default) for a peer that does not read; fixed at this size
/// a connection holds at most this much kernel memory, and a client that stops reading is
/// noticed (its outbox fills) after this much rather than after megabytes. The largest
/// message ting sends is a fraction of it.
const TCP_SEND_BUFFER: libc::c_int = 128 * 1024;

fn bound_send_buffer(stream: &tokio::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let size = TCP_SEND_BUFFER;
    // SAFETY: setsockopt reads `size` (a c_int, with its size passed) on an open socket.
    let r = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        debug!("cannot bound a connection's send buffer");
    }
}

/// Releases a connection's place in the table when dropped.
struct ConnGuard {
    table: Arc<ConnTable>,
    metrics: Arc<Metrics>,
    ip: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.table.release(self.ip, &self.metrics);
    }
}

async fn serve_one<IO>(
    stream: IO,
    addr: SocketAddr,
    app: Router,
    header_timeout: Duration,
    mut drain: watch::Receiver<bool>,
    guard: ConnGuard,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let slot = ConnSlot(Arc::new(guard));
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(addr));
        req.extensions_mut().insert(slot.clone());
        let mut app = app.clone();
        async move { tower_service::Service::call(&mut app, req).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(error = %e, "http connection ended with an error");
            }
            return;
        }
        _ = drain.wait_for(|d| *d) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
