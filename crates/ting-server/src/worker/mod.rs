//! Media workers: one thread per core, each with its own UDP socket and its own share of
//! the participants' str0m connections.
//!
//! # The loop
//!
//! ```text
//! loop {
//!     commands from the conductor   (connect, disconnect, tracks, room membership)
//!     packets from other workers    (RTP of their publishers, keyframe requests)
//!     recvmmsg ─▶ demultiplex ─▶ participant's Rtc ─▶ RTP ─▶ router ─▶ write_rtp to
//!                                                     │       subscribers here,
//!                                                     └──▶ queue to workers hosting the room
//!     tick every connection written to, and every connection whose deadline passed
//!     sendmmsg everything the connections produced
//!     sleep in epoll until a datagram, a queue push, or the next deadline
//! }
//! ```
//!
//! Demultiplexing is a hash lookup of the source address; a datagram from a new address is
//! routed by the ufrag of its STUN binding request, and the address is learnt once str0m
//! answers it (str0m checks the request's integrity first). Never a scan over connections.
//!
//! A room spread over several workers has one [`Router`] on each of them; a publisher's
//! worker forwards each packet once to each other worker of the room (the payload is
//! shared, not copied), and each router decides for its own subscribers.
//!
//! Connections are ticked by deadline from a timer heap, not all on every packet. A panic
//! inside one connection is caught and ends that connection only.

mod core;
pub mod peer;
pub mod stun;
#[cfg(debug_assertions)]
mod tap;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::{Events, Interest, Poll, Token, Waker};
use str0m::rtp::ExtensionValues;
use ting_media::{
    Codec, EndpointId, LayerId, LayerSet, LayoutSpec, Quality, RtpIn, Source, TrackId,
};
use tracing::{debug, info, warn};

use crate::metrics::{PUBLISH_INTERVAL, thread_cpu_ns};
use crate::udp::{self, RecvBatch};

pub use core::{CoreSetup, MediaCore};
pub use peer::OfferError;

pub use crate::outbox::{OutMsg, Outbox};

/// A media worker's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(pub usize);

/// A room, as the media side knows it: a number, not a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoomKey(pub u64);

/// A published track and where its publisher is connected.
#[derive(Debug, Clone, Copy)]
pub struct TrackDesc {
    pub id: TrackId,
    pub codec: Codec,
    /// Simulcast layers (1 without simulcast).
    pub layers: u8,
    pub worker: WorkerId,
}

/// One of a participant's published tracks, as its connection negotiated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishedTrack {
    pub source: Source,
    pub codec: Codec,
    pub layers: u8,
}

/// Commands from the conductor.
#[derive(Debug)]
pub enum WorkerCmd {
    Connect(Box<ConnectReq>),
    Disconnect {
        pid: u64,
    },
    TrackAdded {
        room: RoomKey,
        track: TrackDesc,
    },
    TrackRemoved {
        room: RoomKey,
        track: TrackId,
    },
    /// The workers that host participants of `room` now (this one included or not).
    RoomWorkers {
        room: RoomKey,
        workers: Vec<WorkerId>,
    },
    /// A participant's layout changed (`None`: the server's default).
    Layout {
        pid: u64,
        layout: Option<LayoutSpec>,
    },
    /// The participant's signalling resumed on a new connection: send it its slots and who
    /// speaks again (what it had may be stale).
    Resync {
        pid: u64,
    },
    /// The client restarts ICE on its connection: accept the new offer (same m-lines, new
    /// ICE credentials) and answer through `reply`.
    IceRestart {
        pid: u64,
        sdp: String,
        reply: tokio::sync::oneshot::Sender<Result<String, ting_proto::ErrorMsg>>,
    },
    Shutdown,
    /// Test hook: the participant's connection panics the next time it is handled.
    #[cfg(feature = "test-hooks")]
    Crash {
        pid: u64,
    },
}

/// Take over a participant's media connection, built from its offer off the packet path
/// ([`crate::setup`]). The worker answers with [`WorkerEvent::Connected`] to the conductor,
/// which updates its state before it tells the client, so the client's next message always
/// finds the conductor knowing the outcome.
pub struct ConnectReq {
    pub pid: u64,
    pub room: RoomKey,
    pub accepted: Box<peer::Accepted>,
    /// Every track published in the room so far.
    pub tracks: Vec<TrackDesc>,
    /// Every worker hosting the room, this one included.
    pub workers: Vec<WorkerId>,
    /// The layout the participant reported before its connection existed.
    pub layout: Option<LayoutSpec>,
}

impl std::fmt::Debug for ConnectReq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectReq")
            .field("pid", &format_args!("{:016x}", self.pid))
            .field("room", &self.room)
            .finish_non_exhaustive()
    }
}

/// What workers tell the conductor.
#[derive(Debug)]
pub enum WorkerEvent {
    /// The offer was accepted: the answer for the client and the participant's tracks.
    Connected {
        pid: u64,
        worker: WorkerId,
        answer: String,
        published: Vec<PublishedTrack>,
    },
    /// The media connection failed or was closed.
    MediaFailed { pid: u64 },
    /// How the participant's connection fares changed (sampled once a second).
    Quality { pid: u64, quality: Quality },
}

/// The header extensions a forwarded packet keeps. The rest (mid, rid, transport
/// sequence numbers, send times) belong to one hop, and str0m writes its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct ForwardExt {
    audio_level: Option<i8>,
    voice_activity: Option<bool>,
    video_orientation: Option<str0m::rtp::VideoOrientation>,
}

impl ForwardExt {
    fn values(&self) -> ExtensionValues {
        ExtensionValues {
            audio_level: self.audio_level,
            voice_activity: self.voice_activity,
            video_orientation: self.video_orientation,
            ..Default::default()
        }
    }
}

/// Between workers: media of one worker's publishers, and keyframe requests for them.
#[derive(Debug)]
pub enum MediaMsg {
    Rtp {
        room: RoomKey,
        pkt: RtpIn,
        ext: ForwardExt,
        received: Instant,
    },
    KeyframeRequest {
        room: RoomKey,
        track: TrackId,
        layer: LayerId,
    },
    /// A publisher of `room` restarted ICE (its network came back): the layers given up on
    /// while nothing came get another chance.
    PublisherBack {
        room: RoomKey,
        publisher: EndpointId,
    },
    /// The subscribers on worker `from` use these layers of a track published on the
    /// receiving worker (which pauses what no worker uses).
    Demand {
        room: RoomKey,
        track: TrackId,
        from: WorkerId,
        layers: LayerSet,
    },
}

/// How often the worker reports the share of its core it used (`MediaCore::observe_load`).
const LOAD_WINDOW: Duration = Duration::from_secs(1);

const WAKER: Token = Token(0);
const SOCKET: Token = Token(1);
/// Datagrams read per loop before the rest of the loop gets a turn.
const RECV_BUDGET: usize = 8 * udp::BATCH;
/// Commands from the conductor handled per loop. A connect builds a connection and its
/// answer (the most expensive command); a burst of joins then waits a few turns instead of
/// keeping the worker from its socket.
const COMMAND_BUDGET: usize = 32;
/// Forwarded packets produced before they are sent. Sending everything a burst produced at
/// once would make the first packet of a keyframe fanned out to 50 subscribers wait for the
/// encryption and sending of all the others; 32 keeps sendmmsg batches full while bounding
/// that wait.
pub const FLUSH_FORWARDS: usize = 64;
/// Datagrams handed to the kernel at a time while connections are being ticked: enough
/// for sendmmsg to pay off, few enough that the first subscribers of a burst are sent to
/// while the others are still being encrypted.
const SEND_EVERY: usize = 32;
/// Capacity of each worker's inbound media queue. A full queue drops, never blocks: a
/// worker that falls this far behind would only deliver stale media.
const MEDIA_QUEUE: usize = 32 * 1024;

/// The handle others use to reach a worker.
#[derive(Debug)]
pub struct WorkerHandle {
    pub id: WorkerId,
    commands: Sender<WorkerCmd>,
    media: Sender<MediaMsg>,
    waker: Waker,
    sleeping: AtomicBool,
    /// Connections on this worker, for placing new participants.
    pub load: AtomicUsize,
    pub addr: SocketAddr,
}

impl WorkerHandle {
    /// Sends a command and wakes the worker.
    pub fn command(&self, cmd: WorkerCmd) {
        if self.commands.send(cmd).is_ok() {
            self.wake();
        }
    }

    fn push_media(&self, msg: MediaMsg) -> bool {
        match self.media.try_send(msg) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// Wakes the worker if it sleeps. The worker announces sleep before it checks its
    /// queues for the last time, so a push after that check always sees the flag.
    fn wake(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            let _ = self.waker.wake();
        }
    }
}

/// Everything a worker thread needs to start.
pub struct WorkerSetup {
    pub socket: UdpSocket,
    pub core: CoreSetup,
}

impl std::fmt::Debug for WorkerSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerSetup")
            .field("socket", &self.socket)
            .field("core", &self.core)
            .finish()
    }
}

/// A running worker thread.
pub type WorkerThread = std::thread::JoinHandle<()>;

/// A worker's handle, the poll its waker wakes, and the receiving ends of its queues.
type Parts = (WorkerHandle, Poll, Receiver<WorkerCmd>, Receiver<MediaMsg>);

fn parts(setup: &CoreSetup) -> io::Result<Parts> {
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKER)?;
    let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
    let (media_tx, media_rx) = crossbeam_channel::bounded(MEDIA_QUEUE);
    let handle = WorkerHandle {
        id: setup.id,
        commands: cmd_tx,
        media: media_tx,
        waker,
        sleeping: AtomicBool::new(false),
        load: AtomicUsize::new(0),
        addr: setup.candidate,
    };
    Ok((handle, poll, cmd_rx, media_rx))
}

/// Creates the worker handles (so every worker can reach every other) and the threads.
pub fn spawn_workers(
    setups: Vec<WorkerSetup>,
) -> io::Result<(Arc<[WorkerHandle]>, Vec<WorkerThread>)> {
    let mut handles = Vec::new();
    let mut rest = Vec::new();
    for setup in setups {
        let (handle, poll, commands, media) = parts(&setup.core)?;
        handles.push(handle);
        rest.push((setup, poll, commands, media));
    }
    let handles: Arc<[WorkerHandle]> = handles.into();
    let mut threads = Vec::new();
    for (setup, poll, commands, media) in rest {
        let handles = handles.clone();
        let name = format!("ting-media-{}", setup.core.id.0);
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            match Worker::new(setup, poll, commands, media, handles) {
                Ok(mut w) => w.run(),
                Err(e) => warn!(error = %e, "media worker could not start"),
            }
        })?;
        threads.push(thread);
    }
    Ok((handles, threads))
}

/// Creates cores that are driven by hand (benchmarks, tests): no threads, no sockets.
/// Returns the handles and each core. Nothing sleeps, so nothing needs waking: the polls
/// the wakers were made with are dropped, and a wake-up goes nowhere.
pub fn standalone_cores(
    setups: Vec<CoreSetup>,
) -> io::Result<(Arc<[WorkerHandle]>, Vec<MediaCore>)> {
    let mut handles = Vec::new();
    let mut rest = Vec::new();
    for setup in setups {
        let (handle, _poll, commands, media) = parts(&setup)?;
        handles.push(handle);
        rest.push((setup, commands, media));
    }
    let handles: Arc<[WorkerHandle]> = handles.into();
    let cores = rest
        .into_iter()
        .map(|(setup, commands, media)| MediaCore::new(setup, commands, media, handles.clone()))
        .collect();
    Ok((handles, cores))
}

/// A media worker thread: a [`MediaCore`] with its socket.
struct Worker {
    core: MediaCore,
    socket: UdpSocket,
    poll: Poll,
    recv: Box<RecvBatch>,
    sender: udp::Sender,
}

impl Worker {
    fn new(
        setup: WorkerSetup,
        poll: Poll,
        commands: Receiver<WorkerCmd>,
        media: Receiver<MediaMsg>,
        handles: Arc<[WorkerHandle]>,
    ) -> io::Result<Worker> {
        setup.socket.set_nonblocking(true)?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&setup.socket);
        poll.registry()
            .register(&mut mio::unix::SourceFd(&fd), SOCKET, Interest::READABLE)?;
        Ok(Worker {
            core: MediaCore::new(setup.core, commands, media, handles),
            socket: setup.socket,
            poll,
            recv: Box::default(),
            sender: udp::Sender::default(),
        })
    }

    fn run(&mut self) {
        let id = self.core.id();
        info!(worker = id.0, addr = %self.core.candidate(), "media worker started");
        let mut events = Events::with_capacity(16);
        // The thread's CPU time over about a second, for shedding load when the core is full.
        let mut load_from = (Instant::now(), thread_cpu_ns());
        while !self.core.shutdown {
            let now = Instant::now();
            let wall = now.saturating_duration_since(load_from.0);
            if wall >= LOAD_WINDOW {
                let cpu = thread_cpu_ns();
                let busy = cpu.saturating_sub(load_from.1) as f64 / wall.as_nanos() as f64;
                self.core.observe_load(busy as f32, now);
                load_from = (now, cpu);
            }
            // A bounded share of the conductor's commands and of other workers' media,
            // then the socket's: a burst of joins or a busy neighbour cannot keep this
            // worker from reading its own socket.
            let more_commands = self.core.handle_commands(now);
            let more_media = self.core.handle_media_queue(now);
            self.flush(now);
            let more = self.receive() || more_media || more_commands;
            let now = Instant::now();
            self.core.handle_timeout(now);
            self.flush(now);
            if more {
                continue;
            }
            // Announce sleep, then look at the queues one last time (see WorkerHandle::wake).
            let me = self.core.handle();
            me.sleeping.store(true, Ordering::SeqCst);
            if self.core.has_queued() {
                me.sleeping.store(false, Ordering::SeqCst);
                continue;
            }
            let timeout = self.core.next_deadline().map_or(PUBLISH_INTERVAL, |d| {
                d.saturating_duration_since(Instant::now())
                    .min(PUBLISH_INTERVAL)
            });
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                warn!(error = %e, "media worker poll failed");
            }
            self.core.handle().sleeping.store(false, Ordering::SeqCst);
        }
        info!(worker = id.0, "media worker stopped");
    }

    /// Reads and handles datagrams; returns true when the budget ran out with more waiting.
    fn receive(&mut self) -> bool {
        let mut handled = 0;
        loop {
            match udp::recv_batch(&self.socket, &mut self.recv) {
                Ok(0) => return false,
                Ok(n) => {
                    // The time these datagrams left the kernel: forwarding latency counts
                    // from here.
                    let now = Instant::now();
                    self.core
                        .observe_receive(self.recv.waited(), self.recv.overflows());
                    for (source, data) in self.recv.iter() {
                        self.core
                            .handle_datagram_received(source, data, now, Instant::now());
                    }
                    // Route the batch's media together, sending as it is encrypted.
                    while self.core.route_some(Instant::now(), FLUSH_FORWARDS) {
                        send(&mut self.core, &self.socket, &mut self.sender);
                    }
                    if self.core.pending_forwards() >= FLUSH_FORWARDS {
                        flush(&mut self.core, &self.socket, &mut self.sender, now);
                    }
                    handled += n;
                    if handled >= RECV_BUDGET {
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors for earlier sends surface here; nothing to do but go on.
                    debug!(error = %e, "media socket receive error");
                    return false;
                }
            }
        }
    }

    fn flush(&mut self, now: Instant) {
        flush(&mut self.core, &self.socket, &mut self.sender, now);
    }
}

/// Ticks the connections written to and sends what they produce, a few at a time.
///
/// Each round reads the clock again: a connection stamps the packets it releases with the
/// time of its tick, and those stamps are what its bandwidth estimator compares with the
/// client's arrival times. A stamp taken before a long flush would make the packets look
/// delayed in the network by however long the flush took.
fn flush(core: &mut MediaCore, socket: &UdpSocket, sender: &mut udp::Sender, now: Instant) {
    let mut now = now;
    while core.flush_some(now, SEND_EVERY) {
        send(core, socket, sender);
        now = Instant::now();
    }
    send(core, socket, sender);
}

/// Hands what the core produced to the socket.
fn send(core: &mut MediaCore, socket: &UdpSocket, sender: &mut udp::Sender) {
    let transmits = core.transmits();
    let result = if transmits.is_empty() {
        udp::SendResult::default()
    } else {
        let datagrams: Vec<(SocketAddr, &[u8])> = transmits
            .iter()
            .map(|t| (t.destination, &t.contents[..]))
            .collect();
        sender.send(socket, &datagrams)
    };
    core.finish_send(result, Instant::now());
}
