//! The server's own figures, for Prometheus at `/metrics`.
//!
//! Media workers count in plain local integers on the hot path and publish them every
//! [`PUBLISH_INTERVAL`] into per-worker atomics ([`WorkerCounters`]); a scrape sums the
//! workers. So counting costs the forwarding path no shared cache line, and a scrape costs
//! the workers nothing.
//!
//! No metric carries a name, address or room name: only counts, by kind and reason.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// How often workers publish their counters.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(100);

/// Why a datagram or packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// From an address no participant uses, and not a STUN request naming one.
    UnknownSource = 0,
    /// Not STUN, DTLS, RTP or RTCP.
    Malformed = 1,
    /// The participant's connection refused it (bad SRTP, bad STUN integrity, …).
    Rejected = 2,
    /// RTP on a stream the participant did not negotiate or did not declare as published.
    UnknownStream = 3,
    /// The queue to another worker was full.
    QueueFull = 4,
    /// The kernel refused the datagram for its destination.
    SendFailed = 5,
    /// The socket's send buffer was full.
    SendBufferFull = 6,
    /// SRTP or SRTCP from a participant's address that failed authentication: spoofed by
    /// someone without the connection's keys, or corrupted on the way.
    Unauthenticated = 7,
    /// Forwarded packets a subscriber's connection could not send within half a second
    /// (a saturated core, a long bandwidth probe): dropped unsent, as the receiver's
    /// jitter buffer has moved past them.
    Stale = 8,
    /// The media socket's receive buffer was full: the kernel dropped the datagram before
    /// the worker read it (a worker whose core cannot keep up). Counted as the kernel
    /// reports it, with the next datagram read after the drops.
    ReceiveBufferFull = 9,
}

impl DropReason {
    pub const ALL: [DropReason; 10] = [
        DropReason::UnknownSource,
        DropReason::Malformed,
        DropReason::Rejected,
        DropReason::UnknownStream,
        DropReason::QueueFull,
        DropReason::SendFailed,
        DropReason::SendBufferFull,
        DropReason::Unauthenticated,
        DropReason::Stale,
        DropReason::ReceiveBufferFull,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DropReason::UnknownSource => "unknown_source",
            DropReason::Malformed => "malformed",
            DropReason::Rejected => "rejected",
            DropReason::UnknownStream => "unknown_stream",
            DropReason::QueueFull => "queue_full",
            DropReason::SendFailed => "send_failed",
            DropReason::SendBufferFull => "send_buffer_full",
            DropReason::Unauthenticated => "unauthenticated",
            DropReason::Stale => "stale",
            DropReason::ReceiveBufferFull => "receive_buffer_full",
        }
    }
}

/// Why a connection got a timeout pass (str0m's `handle_input(Timeout)`, which walks every
/// timer and stream of the connection): where passes come from decides what making them
/// rarer would take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickCause {
    /// Forwarded media was written to it and could not leave at once (a probe cluster
    /// running, keys or the stream not yet set up): the pass sends it.
    Written = 0,
    /// Its pacer's timer: a probe cluster's spacing and padding, or media queued behind it.
    Pacer = 1,
    /// Its bandwidth estimator's periodic update, probe control and probe results.
    Estimator = 2,
    /// Transport-wide congestion feedback due to the client.
    TransportFeedback = 3,
    /// Sender and receiver reports due.
    Reports = 4,
    /// A NACK round for packets it misses.
    Nack = 5,
    /// ICE consent and DTLS.
    Connection = 6,
    /// Anything else (pause checks, stream set-up, a pass asked for by a benchmark).
    Other = 7,
}

impl TickCause {
    pub const ALL: [TickCause; 8] = [
        TickCause::Written,
        TickCause::Pacer,
        TickCause::Estimator,
        TickCause::TransportFeedback,
        TickCause::Reports,
        TickCause::Nack,
        TickCause::Connection,
        TickCause::Other,
    ];

    /// The cause of a pass run because the connection's timer fell due for `reason`.
    pub fn of(reason: str0m::Reason) -> TickCause {
        use str0m::Reason;
        match reason {
            Reason::Pacer(_) => TickCause::Pacer,
            Reason::BweDelayControl | Reason::BweProbeControl | Reason::BweProbeEstimator => {
                TickCause::Estimator
            }
            Reason::Twcc => TickCause::TransportFeedback,
            Reason::Feedback => TickCause::Reports,
            Reason::Nack => TickCause::Nack,
            Reason::Ice | Reason::DTLS => TickCause::Connection,
            _ => TickCause::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            TickCause::Written => "written",
            TickCause::Pacer => "pacer",
            TickCause::Estimator => "estimator",
            TickCause::TransportFeedback => "transport_feedback",
            TickCause::Reports => "reports",
            TickCause::Nack => "nack",
            TickCause::Connection => "connection",
            TickCause::Other => "other",
        }
    }
}

/// Upper bounds of the forwarding-latency histogram, in nanoseconds: four per decade from
/// 1 µs to 1 s, fine enough to read a p99 around a millisecond.
pub const LATENCY_BOUNDS_NS: [u64; 25] = [
    1_000,
    1_800,
    3_200,
    5_600,
    10_000,
    18_000,
    32_000,
    56_000,
    100_000,
    180_000,
    320_000,
    560_000,
    1_000_000,
    1_800_000,
    3_200_000,
    5_600_000,
    10_000_000,
    18_000_000,
    32_000_000,
    56_000_000,
    100_000_000,
    180_000_000,
    320_000_000,
    560_000_000,
    1_000_000_000,
];
const BUCKETS: usize = LATENCY_BOUNDS_NS.len() + 1;

/// 0 for audio, 1 for video.
pub type KindIndex = usize;

/// A worker's counters, owned and written by the worker alone.
#[derive(Debug, Clone, Default)]
pub struct WorkerStats {
    pub datagrams_in: u64,
    pub bytes_in: u64,
    pub datagrams_out: u64,
    pub bytes_out: u64,
    pub rtp_in: [u64; 2],
    pub rtp_in_bytes: [u64; 2],
    pub forwarded: [u64; 2],
    pub forwarded_bytes: [u64; 2],
    /// Of the forwarded, those that could not leave at once and waited in the
    /// subscriber's send queue for its connection's next timeout pass.
    pub forwarded_deferred: [u64; 2],
    pub drops: [u64; DropReason::ALL.len()],
    /// Forwarding latency by [`KindIndex`].
    pub latency_buckets: [[u64; BUCKETS]; 2],
    pub latency_sum_ns: [u64; 2],
    pub latency_count: [u64; 2],
    /// Time each datagram waited in the media socket's receive queue before the worker
    /// read it (the kernel's arrival stamp to the read).
    pub receive_wait_buckets: [u64; BUCKETS],
    pub receive_wait_sum_ns: u64,
    pub receive_wait_count: u64,
    pub connections: u64,
    /// Of those, how many were poor and how many lost at the last quality sample.
    pub poor_connections: u64,
    pub lost_connections: u64,
    /// `send_layers` messages to publishers: layers paused or resumed.
    pub layer_changes: u64,
    /// ICE restarts accepted (a client's network changed or went quiet).
    pub ice_restarts: u64,
    /// Timeout passes over connections (each runs every timer and stream of one), by
    /// [`TickCause`].
    pub ticks: [u64; TickCause::ALL.len()],
    /// CPU time of the worker thread, nanoseconds.
    pub cpu_ns: u64,
    /// 1 while the worker's core is full and its thumbnails get the base temporal layer
    /// only (`ting_media::load`), else 0.
    pub shedding: u64,
    /// Times the worker started shedding.
    pub sheds: u64,
}

impl WorkerStats {
    pub fn drop(&mut self, reason: DropReason, n: u64) {
        self.drops[reason as usize] += n;
    }

    /// Records one forwarded packet's time inside the server, by kind.
    pub fn observe_latency(&mut self, kind: KindIndex, ns: u64) {
        let i = LATENCY_BOUNDS_NS
            .iter()
            .position(|b| ns <= *b)
            .unwrap_or(BUCKETS - 1);
        let k = kind.min(1);
        self.latency_buckets[k][i] += 1;
        self.latency_sum_ns[k] += ns;
        self.latency_count[k] += 1;
    }

    /// Records how long one datagram waited in the socket before it was read.
    pub fn observe_receive_wait(&mut self, ns: u64) {
        let i = LATENCY_BOUNDS_NS
            .iter()
            .position(|b| ns <= *b)
            .unwrap_or(BUCKETS - 1);
        self.receive_wait_buckets[i] += 1;
        self.receive_wait_sum_ns = self.receive_wait_sum_ns.saturating_add(ns);
        self.receive_wait_count += 1;
    }
}

macro_rules! atomics {
    ($($name:ident: $ty:ty),* $(,)?) => {
        /// A worker's published counters.
        #[derive(Debug, Default)]
        pub struct WorkerCounters { $(pub $name: $ty,)* }
    };
}

atomics! {
    datagrams_in: AtomicU64,
    bytes_in: AtomicU64,
    datagrams_out: AtomicU64,
    bytes_out: AtomicU64,
    rtp_in: [AtomicU64; 2],
    rtp_in_bytes: [AtomicU64; 2],
    forwarded: [AtomicU64; 2],
    forwarded_bytes: [AtomicU64; 2],
    forwarded_deferred: [AtomicU64; 2],
    drops: [AtomicU64; DropReason::ALL.len()],
    latency_buckets: [[AtomicU64; BUCKETS]; 2],
    latency_sum_ns: [AtomicU64; 2],
    latency_count: [AtomicU64; 2],
    receive_wait_buckets: [AtomicU64; BUCKETS],
    receive_wait_sum_ns: AtomicU64,
    receive_wait_count: AtomicU64,
    connections: AtomicU64,
    poor_connections: AtomicU64,
    lost_connections: AtomicU64,
    layer_changes: AtomicU64,
    ice_restarts: AtomicU64,
    ticks: [AtomicU64; TickCause::ALL.len()],
    cpu_ns: AtomicU64,
    shedding: AtomicU64,
    sheds: AtomicU64,
}

fn store<const N: usize>(dst: &[AtomicU64; N], src: &[u64; N]) {
    for (d, s) in dst.iter().zip(src) {
        d.store(*s, Relaxed);
    }
}

impl WorkerCounters {
    pub fn publish(&self, s: &WorkerStats) {
        self.datagrams_in.store(s.datagrams_in, Relaxed);
        self.bytes_in.store(s.bytes_in, Relaxed);
        self.datagrams_out.store(s.datagrams_out, Relaxed);
        self.bytes_out.store(s.bytes_out, Relaxed);
        store(&self.rtp_in, &s.rtp_in);
        store(&self.rtp_in_bytes, &s.rtp_in_bytes);
        store(&self.forwarded, &s.forwarded);
        store(&self.forwarded_bytes, &s.forwarded_bytes);
        store(&self.forwarded_deferred, &s.forwarded_deferred);
        store(&self.drops, &s.drops);
        for (d, s) in self.latency_buckets.iter().zip(&s.latency_buckets) {
            store(d, s);
        }
        store(&self.latency_sum_ns, &s.latency_sum_ns);
        store(&self.latency_count, &s.latency_count);
        store(&self.receive_wait_buckets, &s.receive_wait_buckets);
        self.receive_wait_sum_ns
            .store(s.receive_wait_sum_ns, Relaxed);
        self.receive_wait_count.store(s.receive_wait_count, Relaxed);
        self.connections.store(s.connections, Relaxed);
        self.poor_connections.store(s.poor_connections, Relaxed);
        self.lost_connections.store(s.lost_connections, Relaxed);
        self.layer_changes.store(s.layer_changes, Relaxed);
        self.ice_restarts.store(s.ice_restarts, Relaxed);
        store(&self.ticks, &s.ticks);
        self.cpu_ns.store(s.cpu_ns, Relaxed);
        self.shedding.store(s.shedding, Relaxed);
        self.sheds.store(s.sheds, Relaxed);
    }
}

/// Figures kept by the control side.
#[derive(Debug, Default)]
pub struct ControlCounters {
    pub rooms: AtomicU64,
    pub participants: AtomicU64,
    pub joins: AtomicU64,
    pub joins_refused: AtomicU64,
    pub signalling_errors: AtomicU64,
    /// Open HTTP and WebSocket connections.
    pub connections: AtomicU64,
    /// The process's file-descriptor limits after start-up.
    pub fd_soft_limit: AtomicU64,
    pub fd_hard_limit: AtomicU64,
    /// Times a limit was enforced, by [`Limit`].
    pub limited: [AtomicU64; Limit::ALL.len()],
    /// Control-plane events by family and label: `refused` (joins and commands refused, by
    /// reason), `moderation` (by action), `chat` (room or private), `api` (by outcome).
    /// Rare next to media, so a lock is fine.
    labeled: std::sync::Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
}

impl ControlCounters {
    pub fn limited(&self, limit: Limit) {
        self.limited[limit as usize].fetch_add(1, Relaxed);
    }

    /// Counts one event of `family` (one of [`LABELED`]) with `label`.
    pub fn count(&self, family: &'static str, label: &'static str) {
        self.count_n(family, label, 1);
    }

    /// Counts `n` events of `family` with `label`.
    pub fn count_n(&self, family: &'static str, label: &'static str, n: u64) {
        let mut m = self.labeled.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((family, label)).or_insert(0) += n;
    }

    fn labeled(&self, family: &str) -> Vec<(&'static str, u64)> {
        let m = self.labeled.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .filter(|((f, _), _)| *f == family)
            .map(|((_, l), v)| (*l, *v))
            .collect()
    }
}

/// The labeled control-plane families: name in [`ControlCounters::count`], metric, label,
/// help.
const LABELED: [(&str, &str, &str, &str); 7] = [
    (
        "refused",
        "ting_control_refused",
        "reason",
        "Joins and participants' commands refused by the control plane, by reason.",
    ),
    (
        "moderation",
        "ting_moderation",
        "action",
        "Moderation actions done (by moderators or the API), by action.",
    ),
    (
        "chat",
        "ting_chat_messages",
        "kind",
        "Chat messages relayed.",
    ),
    (
        "api",
        "ting_api_requests",
        "outcome",
        "Control API requests, by outcome.",
    ),
    (
        "whip",
        "ting_whip_requests",
        "outcome",
        "WHIP requests (create, patch, delete), by outcome.",
    ),
    (
        "whep",
        "ting_whep_requests",
        "outcome",
        "WHEP requests (create, patch, delete), by outcome.",
    ),
    (
        "e2ee",
        "ting_e2ee_messages",
        "kind",
        "End-to-end encryption messages relayed unread: sealed keys delivered, encrypted chat.",
    ),
];

/// A limit that refused or ended something, as counted in `ting_limited_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// A connection beyond `limits.max_connections` was closed at once.
    MaxConnections = 0,
    /// A connection beyond `limits.max_connections_per_address` was closed at once.
    ConnectionsPerAddress = 1,
    /// A WebSocket was refused to keep connections in reserve for health checks.
    WebSocketReserve = 2,
    /// A WebSocket did not send `join` within `limits.join_timeout_secs`.
    JoinTimeout = 3,
    /// A client's outbox filled (`limits.outbox_messages`): it stopped reading.
    TooSlow = 4,
    /// A write to a client did not finish within `limits.write_timeout_secs`.
    WriteTimeout = 5,
    /// A message beyond a `limits.*messages_per_second` was dropped.
    RateLimited = 6,
    /// A join that would open a room beyond `limits.max_rooms_per_address`.
    RoomsPerAddress = 7,
    /// An offer with more m-lines than the slots and publish lines allow.
    OfferLines = 8,
    /// A join beyond `limits.joins_per_second_per_address`.
    JoinsPerAddress = 9,
    /// A join with a passcode beyond `limits.passcode_attempts_per_minute_per_address`.
    PasscodesPerAddress = 10,
    /// A chat message beyond `limits.chat_messages_per_second`.
    Chat = 11,
    /// Sealed end-to-end encryption keys beyond a participant's budget.
    E2eeKeys = 12,
}

impl Limit {
    pub const ALL: [Limit; 13] = [
        Limit::MaxConnections,
        Limit::ConnectionsPerAddress,
        Limit::WebSocketReserve,
        Limit::JoinTimeout,
        Limit::TooSlow,
        Limit::WriteTimeout,
        Limit::RateLimited,
        Limit::RoomsPerAddress,
        Limit::OfferLines,
        Limit::JoinsPerAddress,
        Limit::PasscodesPerAddress,
        Limit::Chat,
        Limit::E2eeKeys,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Limit::MaxConnections => "max_connections",
            Limit::ConnectionsPerAddress => "connections_per_address",
            Limit::WebSocketReserve => "websocket_reserve",
            Limit::JoinTimeout => "join_timeout",
            Limit::TooSlow => "too_slow",
            Limit::WriteTimeout => "write_timeout",
            Limit::RateLimited => "rate_limited",
            Limit::RoomsPerAddress => "rooms_per_address",
            Limit::OfferLines => "offer_lines",
            Limit::JoinsPerAddress => "joins_per_address",
            Limit::PasscodesPerAddress => "passcodes_per_address",
            Limit::Chat => "chat",
            Limit::E2eeKeys => "e2ee_keys",
        }
    }
}

/// Everything `/metrics` reports.
#[derive(Debug, Default)]
pub struct Metrics {
    pub workers: Vec<Arc<WorkerCounters>>,
    pub control: ControlCounters,
}

impl Metrics {
    pub fn new(workers: usize) -> Arc<Metrics> {
        Arc::new(Metrics {
            workers: (0..workers).map(|_| Arc::default()).collect(),
            control: ControlCounters::default(),
        })
    }

    fn sum(&self, f: impl Fn(&WorkerCounters) -> &AtomicU64) -> u64 {
        self.workers.iter().map(|w| f(w).load(Relaxed)).sum()
    }

    /// The Prometheus text exposition of all metrics.
    pub fn render(self: &Arc<Self>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape(self.clone())));
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            let _ = writeln!(out, "# encoding failed");
        }
        out
    }
}

#[derive(Debug)]
struct Scrape(Arc<Metrics>);

const KINDS: [&str; 2] = ["audio", "video"];

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

fn by_label(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    values: &[(&'static str, u64)],
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, v) in values {
        let labels = [(label, *value)];
        let family = m.encode_family(&labels)?;
        ConstCounter::new(*v).encode(family)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let m = &self.0;
        let c = &m.control;
        gauge(
            &mut e,
            "ting_rooms",
            "Rooms open.",
            c.rooms.load(Relaxed) as i64,
        )?;
        gauge(
            &mut e,
            "ting_participants",
            "Participants in rooms.",
            c.participants.load(Relaxed) as i64,
        )?;
        gauge(
            &mut e,
            "ting_media_connections",
            "Media connections held by the workers.",
            m.sum(|w| &w.connections) as i64,
        )?;
        gauge(
            &mut e,
            "ting_media_connections_poor",
            "Media connections whose network struggles (loss, a long round trip, too little bandwidth for what they show): their tiles say so.",
            m.sum(|w| &w.poor_connections) as i64,
        )?;
        gauge(
            &mut e,
            "ting_media_workers_shedding",
            "Media workers whose core is full, so that their thumbnails get a quarter of the frames (media.load_shedding).",
            m.sum(|w| &w.shedding) as i64,
        )?;
        counter(
            &mut e,
            "ting_media_load_sheds",
            "Times a media worker's core was full and it started shedding thumbnail frames.",
            m.sum(|w| &w.sheds),
        )?;
        gauge(
            &mut e,
            "ting_media_connections_lost",
            "Media connections nothing arrives from (a network that dropped; they come back or time out).",
            m.sum(|w| &w.lost_connections) as i64,
        )?;
        counter(
            &mut e,
            "ting_joins",
            "Joins accepted.",
            c.joins.load(Relaxed),
        )?;
        counter(
            &mut e,
            "ting_joins_refused",
            "Joins refused (limits, bad names).",
            c.joins_refused.load(Relaxed),
        )?;
        counter(
            &mut e,
            "ting_signalling_errors",
            "Signalling messages answered with an error.",
            c.signalling_errors.load(Relaxed),
        )?;
        gauge(
            &mut e,
            "ting_http_connections",
            "Open HTTP and WebSocket connections.",
            c.connections.load(Relaxed) as i64,
        )?;
        gauge(
            &mut e,
            "ting_fd_soft_limit",
            "The process's file-descriptor soft limit (raised to the hard limit at start).",
            c.fd_soft_limit.load(Relaxed) as i64,
        )?;
        gauge(
            &mut e,
            "ting_fd_hard_limit",
            "The process's file-descriptor hard limit.",
            c.fd_hard_limit.load(Relaxed) as i64,
        )?;
        let limited: Vec<(&'static str, u64)> = Limit::ALL
            .iter()
            .map(|l| (l.label(), c.limited[*l as usize].load(Relaxed)))
            .collect();
        by_label(
            &mut e,
            "ting_limited",
            "Connections refused or ended and messages dropped by a limit, by limit.",
            "limit",
            &limited,
        )?;
        for (family, name, label, help) in LABELED {
            let values = c.labeled(family);
            if !values.is_empty() {
                by_label(&mut e, name, help, label, &values)?;
            }
        }
        counter(
            &mut e,
            "ting_datagrams_received",
            "UDP datagrams received on media ports.",
            m.sum(|w| &w.datagrams_in),
        )?;
        counter(
            &mut e,
            "ting_datagram_bytes_received",
            "Bytes of UDP datagrams received on media ports.",
            m.sum(|w| &w.bytes_in),
        )?;
        counter(
            &mut e,
            "ting_datagrams_sent",
            "UDP datagrams sent from media ports.",
            m.sum(|w| &w.datagrams_out),
        )?;
        counter(
            &mut e,
            "ting_datagram_bytes_sent",
            "Bytes of UDP datagrams sent from media ports.",
            m.sum(|w| &w.bytes_out),
        )?;
        let per_kind = |f: fn(&WorkerCounters) -> &[AtomicU64; 2]| {
            let mut v = [0u64; 2];
            for w in &m.workers {
                for (k, slot) in v.iter_mut().enumerate() {
                    *slot += f(w)[k].load(Relaxed);
                }
            }
            [(KINDS[0], v[0]), (KINDS[1], v[1])]
        };
        by_label(
            &mut e,
            "ting_rtp_packets_received",
            "RTP packets received from publishers.",
            "kind",
            &per_kind(|w| &w.rtp_in),
        )?;
        by_label(
            &mut e,
            "ting_rtp_bytes_received",
            "RTP payload bytes received from publishers.",
            "kind",
            &per_kind(|w| &w.rtp_in_bytes),
        )?;
        by_label(
            &mut e,
            "ting_rtp_packets_forwarded",
            "RTP packets forwarded to subscribers (one per subscriber), counted when written to the \
             subscriber's connection; those later dropped unsent for waiting too long are also \
             counted in ting_dropped_total with reason stale.",
            "kind",
            &per_kind(|w| &w.forwarded),
        )?;
        by_label(
            &mut e,
            "ting_rtp_bytes_forwarded",
            "RTP payload bytes forwarded to subscribers.",
            "kind",
            &per_kind(|w| &w.forwarded_bytes),
        )?;
        by_label(
            &mut e,
            "ting_rtp_packets_forwarded_deferred",
            "Forwarded RTP packets that waited in the subscriber's send queue for a timeout \
             pass (a bandwidth probe running, the connection's keys or a stream not yet set \
             up, or the connection closing) instead of leaving at once.",
            "kind",
            &per_kind(|w| &w.forwarded_deferred),
        )?;
        counter(
            &mut e,
            "ting_layer_changes",
            "Times a publisher was told to pause or resume simulcast layers nobody (or somebody again) watches.",
            m.sum(|w| &w.layer_changes),
        )?;
        counter(
            &mut e,
            "ting_ice_restarts",
            "ICE restarts accepted: a client whose network changed or went quiet reconnected its media without rejoining.",
            m.sum(|w| &w.ice_restarts),
        )?;
        // Each label with the workers' sum of the counter at its index in `f`'s array.
        let per_index = |labels: &[(&'static str, usize)],
                         f: fn(&WorkerCounters) -> &[AtomicU64]|
         -> Vec<(&'static str, u64)> {
            labels
                .iter()
                .map(|&(label, i)| (label, m.sum(|w| &f(w)[i])))
                .collect()
        };
        let ticks = per_index(&TickCause::ALL.map(|c| (c.label(), c as usize)), |w| {
            &w.ticks[..]
        });
        by_label(
            &mut e,
            "ting_connection_ticks",
            "Timeout passes over media connections (each walks every timer and stream of one), by what asked for it.",
            "cause",
            &ticks,
        )?;
        let drops = per_index(&DropReason::ALL.map(|r| (r.label(), r as usize)), |w| {
            &w.drops[..]
        });
        by_label(
            &mut e,
            "ting_dropped",
            "Datagrams and packets dropped, by reason.",
            "reason",
            &drops,
        )?;

        // Forwarding latency: received from the socket -> handed to the socket, per
        // forwarded packet, of all media and of audio alone. The encoder takes per-bucket
        // counts and accumulates them.
        let histograms: [(&str, &str, &[KindIndex]); 2] = [
            (
                "ting_forwarding_latency_seconds",
                "Time inside the server per forwarded packet: received from the socket to handed to the socket.",
                &[0, 1],
            ),
            (
                "ting_audio_forwarding_latency_seconds",
                "Time inside the server per forwarded audio packet: received from the socket to handed to the socket.",
                &[0],
            ),
        ];
        for (name, help, kinds) in histograms {
            let mut buckets = Vec::with_capacity(BUCKETS);
            for i in 0..BUCKETS {
                let bound = LATENCY_BOUNDS_NS
                    .get(i)
                    .map_or(f64::INFINITY, |ns| *ns as f64 / 1e9);
                let n = kinds
                    .iter()
                    .map(|&k| m.sum(|w| &w.latency_buckets[k][i]))
                    .sum::<u64>();
                buckets.push((bound, n));
            }
            let sum = kinds
                .iter()
                .map(|&k| m.sum(|w| &w.latency_sum_ns[k]))
                .sum::<u64>() as f64
                / 1e9;
            let count = kinds
                .iter()
                .map(|&k| m.sum(|w| &w.latency_count[k]))
                .sum::<u64>();
            let mut h = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
            h.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                sum, count, &buckets, None,
            )?;
        }

        // Before that: how long datagrams waited in the media sockets' receive queues. A
        // worker that keeps up reads within microseconds; a full core shows here first.
        let buckets: Vec<(f64, u64)> = (0..BUCKETS)
            .map(|i| {
                let bound = LATENCY_BOUNDS_NS
                    .get(i)
                    .map_or(f64::INFINITY, |ns| *ns as f64 / 1e9);
                (bound, m.sum(|w| &w.receive_wait_buckets[i]))
            })
            .collect();
        let mut h = e.encode_descriptor(
            "ting_receive_queue_wait_seconds",
            "Time a datagram waited in a media socket's receive queue before its worker read it (the kernel's arrival stamp to the read).",
            None,
            MetricType::Histogram,
        )?;
        h.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            m.sum(|w| &w.receive_wait_sum_ns) as f64 / 1e9,
            m.sum(|w| &w.receive_wait_count),
            &buckets,
            None,
        )?;

        counter(
            &mut e,
            "ting_worker_cpu_seconds",
            "CPU time of the media worker threads.",
            m.sum(|w| &w.cpu_ns) / 1_000_000_000,
        )?;
        let (cpu, rss) = process_usage();
        let mut cpu_m = e.encode_descriptor(
            "process_cpu_seconds",
            "CPU time of the whole process (user + system).",
            None,
            MetricType::Counter,
        )?;
        cpu_m.encode_counter::<prometheus_client::encoding::NoLabelSet, _, f64>(&cpu, None)?;
        gauge(
            &mut e,
            "process_resident_memory_bytes",
            "Resident memory of the process.",
            rss as i64,
        )?;
        Ok(())
    }
}

/// CPU seconds and resident bytes of this process, from /proc (0 where unavailable).
pub fn process_usage() -> (f64, u64) {
    let ticks = clock_ticks();
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are 14 and 15.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .unwrap_or(0.0);
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page_size());
    (cpu, rss)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 } else { 4096 }
}

/// CPU time consumed by the calling thread, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    // SAFETY: clock_gettime writes one timespec to a live local.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_reasons_map_to_tick_causes() {
        use str0m::{PacerReason, Reason};
        assert_eq!(
            TickCause::of(Reason::Pacer(PacerReason::Probe1)),
            TickCause::Pacer
        );
        assert_eq!(TickCause::of(Reason::BweDelayControl), TickCause::Estimator);
        assert_eq!(
            TickCause::of(Reason::BweProbeEstimator),
            TickCause::Estimator
        );
        assert_eq!(TickCause::of(Reason::Twcc), TickCause::TransportFeedback);
        assert_eq!(TickCause::of(Reason::Feedback), TickCause::Reports);
        assert_eq!(TickCause::of(Reason::Nack), TickCause::Nack);
        assert_eq!(TickCause::of(Reason::DTLS), TickCause::Connection);
        assert_eq!(TickCause::of(Reason::PauseCheck), TickCause::Other);
        // Every cause has its own label, in the order of its index.
        for (i, c) in TickCause::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            assert_eq!(
                TickCause::ALL
                    .iter()
                    .filter(|o| o.label() == c.label())
                    .count(),
                1
            );
        }
    }

    #[test]
    fn render_sums_workers_and_names_drop_reasons() {
        let m = Metrics::new(2);
        let mut a = WorkerStats {
            datagrams_in: 5,
            ..Default::default()
        };
        a.drop(DropReason::Malformed, 3);
        a.observe_latency(1, 40_000);
        a.observe_latency(0, 2_000_000);
        m.workers[0].publish(&a);
        let mut b = WorkerStats {
            datagrams_in: 7,
            ..Default::default()
        };
        b.forwarded[1] = 11;
        b.observe_latency(0, 500_000);
        a.observe_receive_wait(4_000_000);
        b.observe_receive_wait(40_000_000);
        b.drop(DropReason::ReceiveBufferFull, 17);
        a.ticks[TickCause::Written as usize] = 4;
        b.ticks[TickCause::Written as usize] = 2;
        b.ticks[TickCause::TransportFeedback as usize] = 9;
        m.workers[0].publish(&a);
        m.workers[1].publish(&b);
        let text = m.render();
        assert!(
            text.contains("ting_connection_ticks_total{cause=\"written\"} 6"),
            "{text}"
        );
        assert!(
            text.contains("ting_connection_ticks_total{cause=\"transport_feedback\"} 9"),
            "{text}"
        );
        assert!(
            text.contains("ting_connection_ticks_total{cause=\"nack\"} 0"),
            "{text}"
        );
        assert!(text.contains("ting_datagrams_received_total 12"), "{text}");
        assert!(
            text.contains("ting_dropped_total{reason=\"malformed\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("ting_rtp_packets_forwarded_total{kind=\"video\"} 11"),
            "{text}"
        );
        // All media (two workers, audio and video) and audio alone.
        for line in [
            "ting_forwarding_latency_seconds_count 3",
            "ting_forwarding_latency_seconds_bucket{le=\"0.000056\"} 1",
            "ting_forwarding_latency_seconds_bucket{le=\"0.00056\"} 2",
            "ting_forwarding_latency_seconds_bucket{le=\"0.0018\"} 2",
            "ting_forwarding_latency_seconds_bucket{le=\"0.0032\"} 3",
            "ting_audio_forwarding_latency_seconds_count 2",
            "ting_audio_forwarding_latency_seconds_bucket{le=\"0.000056\"} 0",
            "ting_audio_forwarding_latency_seconds_bucket{le=\"0.00056\"} 1",
            "ting_audio_forwarding_latency_seconds_bucket{le=\"0.0032\"} 2",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        // The wait before the read, from both workers.
        for line in [
            "ting_receive_queue_wait_seconds_count 2",
            "ting_receive_queue_wait_seconds_bucket{le=\"0.0032\"} 0",
            "ting_receive_queue_wait_seconds_bucket{le=\"0.0056\"} 1",
            "ting_receive_queue_wait_seconds_bucket{le=\"0.032\"} 1",
            "ting_receive_queue_wait_seconds_bucket{le=\"0.056\"} 2",
            "ting_dropped_total{reason=\"receive_buffer_full\"} 17",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(
            text.contains("ting_forwarding_latency_seconds_bucket{le=\"+Inf\"} 3"),
            "buckets are cumulative once, not twice: {text}"
        );
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }
}
