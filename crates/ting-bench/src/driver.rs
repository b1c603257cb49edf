//! Drives many simulated participants on one thread: their UDP sockets in one epoll, their
//! timers in one heap. On loopback up to [`GROUP`] participants share a socket
//! ([`sock::bind_group`]), each with an address of its own, so one system call reads or
//! sends the datagrams of many. Commands come in over a channel; statistics go out as snapshots,
//! taken only when asked for, so a quiet harness costs nothing.
//!
//! Datagrams are read and sent in batches ([`crate::sock`]), each received one stamped
//! with the kernel's arrival time, so the transport-wide feedback a participant sends the
//! server tells when packets arrived, not when this thread got round to them.
//!
//! That stamp also lets the thread look at its sockets at most once every [`READ_EVERY`]:
//! what arrived meanwhile waits in the kernel and is read in one batch per socket, with
//! its true arrival time, instead of a wake-up, a system call and a connection pass per
//! packet, and one-way latency is measured to that arrival time too. The thread wakes
//! more often, at most once every [`COALESCE`], for the simulated participants' timers
//! (media, feedback), which are served as late as that at most: a browser's are not more
//! punctual than a few milliseconds either.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use str0m::net::Transmit;
use ting_proto::ServerMsg;

use crate::peer::{PeerStats, SimPeer};
use crate::report::{LossMarks, Totals};
use crate::sock::{self, Clock, RecvBatch};
use crate::stats::Histogram;

const WAKER: Token = Token(usize::MAX);
/// Readiness events taken from the kernel per look.
const EVENTS: usize = 256;
/// The longest a driver sleeps without looking at its commands.
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// The shortest time between two wake-ups of the thread (see the module docs): timers
/// are served this late at most. 3 ms cost 3-17 % (median 6 %) less harness CPU per
/// received packet than 1 ms at 150 in grid view (`docs/performance.md`).
const COALESCE: Duration = Duration::from_millis(3);
/// The shortest time between two looks at the sockets. Longer than [`COALESCE`]: reading
/// later changes no measured time (arrival is the kernel's stamp), only how many
/// datagrams one system call returns, while the media the participants send keeps the
/// timers' finer pace.
const READ_EVERY: Duration = Duration::from_millis(10);
/// How often quiet streams are checked for (see `SlotStats::check_silence`).
const SILENCE_CHECK: Duration = Duration::from_millis(100);
/// Receive buffer per participant socket: a keyframe burst to a participant with many
/// slots must not overflow it while the thread serves others.
const RCVBUF: usize = 1 << 20;
/// Participants per shared socket. Its receive buffer is theirs together
/// (`GROUP * RCVBUF`, where the kernel allows: net.core.rmem_max caps it without
/// privilege).
pub const GROUP: usize = 64;

/// Everything a driver's peers counted, at one moment.
#[derive(Debug, Clone, Default)]
pub struct DriverSnapshot {
    /// Every peer, those removed included.
    pub peers: Vec<PeerStats>,
    /// One-way latency of every stamped packet received by any of them (cumulative).
    pub latency: Histogram,
    /// CPU time of the driver thread so far, nanoseconds.
    pub cpu_ns: u64,
}
/// What a run's progress needs every second, without a copy of every participant's
/// statistics: the sums, each slot's loss marks and the latency histogram (cumulative).
#[derive(Debug, Clone, Default)]
pub struct DriverTally {
    pub totals: Totals,
    pub marks: LossMarks,
    pub latency: Histogram,
}

impl DriverTally {
    /// The tally of a snapshot.
    pub fn of(snapshot: &DriverSnapshot) -> DriverTally {
        DriverTally {
            totals: Totals::of(&snapshot.peers),
            marks: LossMarks::of(&snapshot.peers),
            latency: snapshot.latency.clone(),
        }
    }

    /// Adds another driver's tally, taken at the same moment.
    pub fn merge(&mut self, other: DriverTally) {
        self.totals.merge(&other.totals);
        self.marks.merge(other.marks);
        self.latency.merge(&other.latency);
    }
}

/// Commands to a driver.
#[derive(Debug)]
pub enum DriverCmd {
    Add(Box<SimPeer>, PeerSocket),
    /// A socket participants will share ([`DriverSender::local_socket`]).
    AddGroup(UdpSocket),
    Signal(u32, Box<ServerMsg>),
    SetSending(u32, bool),
    Remove(u32),
    Snapshot(Sender<DriverSnapshot>),
    Tally(Sender<DriverTally>),
    Stop,
}

/// The socket of a participant: its own, or a shared one's (by its port), where its
/// address is its own ([`sock::group_address`]).
#[derive(Debug)]
pub enum PeerSocket {
    Own(UdpSocket),
    Group(u16),
}

/// The shared socket new participants join, and whether shared sockets work here.
#[derive(Debug, Default)]
struct Groups {
    /// The open group's port and how many have joined it.
    open: Option<(u16, usize)>,
    /// Binding one failed (no loopback device to bind to): participants get their own.
    unavailable: bool,
}

/// The handle that controls a driver thread.
#[derive(Debug)]
pub struct DriverHandle {
    tx: Sender<DriverCmd>,
    waker: Arc<Waker>,
    groups: Arc<Mutex<Groups>>,
    last: Arc<Mutex<DriverSnapshot>>,
    thread: Option<JoinHandle<()>>,
}

impl DriverHandle {
    pub fn spawn(name: &str) -> io::Result<DriverHandle> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let last = Arc::new(Mutex::new(DriverSnapshot::default()));
        let shared = last.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || Driver::new(poll, rx, shared).run())?;
        Ok(DriverHandle {
            tx,
            waker,
            groups: Arc::default(),
            last,
            thread: Some(thread),
        })
    }

    pub fn send(&self, cmd: DriverCmd) {
        if self.tx.send(cmd).is_ok() {
            let _ = self.waker.wake();
        }
    }

    pub fn add(&self, peer: SimPeer, socket: UdpSocket) {
        self.send(DriverCmd::Add(Box::new(peer), PeerSocket::Own(socket)));
    }

    /// A sender other tasks can use to reach this driver.
    pub fn sender(&self) -> DriverSender {
        DriverSender {
            tx: self.tx.clone(),
            waker: self.waker.clone(),
            groups: self.groups.clone(),
        }
    }

    /// The statistics of every peer now.
    pub fn snapshot(&self) -> Vec<PeerStats> {
        self.full_snapshot().peers
    }

    /// The statistics of every peer and the merged latency histogram, now.
    pub fn full_snapshot(&self) -> DriverSnapshot {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(DriverCmd::Snapshot(tx));
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(s) => s,
            // The thread has stopped: its last words.
            Err(_) => self.last.lock().map(|s| s.clone()).unwrap_or_default(),
        }
    }

    /// The sums and loss marks of every peer now ([`DriverTally`]).
    pub fn tally(&self) -> DriverTally {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(DriverCmd::Tally(tx));
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(t) => t,
            Err(_) => self
                .last
                .lock()
                .map(|s| DriverTally::of(&s))
                .unwrap_or_default(),
        }
    }

    /// Stops the thread and returns the final statistics.
    pub fn stop(mut self) -> DriverSnapshot {
        self.send(DriverCmd::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.last.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for DriverHandle {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.tx.send(DriverCmd::Stop);
            let _ = self.waker.wake();
            let _ = t.join();
        }
    }
}

/// A cloneable way to send commands to a driver.
#[derive(Debug, Clone)]
pub struct DriverSender {
    tx: Sender<DriverCmd>,
    waker: Arc<Waker>,
    groups: Arc<Mutex<Groups>>,
}

impl DriverSender {
    pub fn send(&self, cmd: DriverCmd) {
        if self.tx.send(cmd).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// The local address and socket of simulated participant `id`, whose media binds to
    /// `ip`. For 127.0.0.1 it shares a socket with up to [`GROUP`] - 1 others of this
    /// driver, at an address of its own ([`sock::group_address`]); for any other address
    /// (and where a shared socket cannot be bound) it gets a socket of its own there.
    pub fn local_socket(&self, ip: IpAddr, id: u32) -> io::Result<(SocketAddr, PeerSocket)> {
        let own = || -> io::Result<(SocketAddr, PeerSocket)> {
            let socket = UdpSocket::bind(SocketAddr::new(ip, 0))?;
            Ok((socket.local_addr()?, PeerSocket::Own(socket)))
        };
        let address = match ip {
            IpAddr::V4(v4) if v4 == Ipv4Addr::LOCALHOST => sock::group_address(id),
            _ => None,
        };
        let Some(address) = address else {
            return own();
        };
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        if groups.unavailable {
            return own();
        }
        let port = match groups.open {
            Some((port, n)) if n < GROUP => {
                groups.open = Some((port, n + 1));
                port
            }
            _ => {
                let bound = sock::bind_group().and_then(|s| Ok((s.local_addr()?.port(), s)));
                let Ok((port, socket)) = bound else {
                    groups.unavailable = true;
                    return own();
                };
                // Sent before any participant of the group can be: the driver knows the
                // socket when they arrive.
                self.send(DriverCmd::AddGroup(socket));
                groups.open = Some((port, 1));
                port
            }
        };
        Ok((SocketAddr::from((address, port)), PeerSocket::Group(port)))
    }
}

struct Slot {
    peer: SimPeer,
    /// Index of its socket in `Driver::sockets`.
    socket: usize,
    scheduled: Option<Instant>,
}

/// A socket of the driver: one participant's, or shared by a group.
struct Socket {
    socket: UdpSocket,
    /// The participant of a socket of its own; `None` for a shared one.
    owner: Option<usize>,
}

/// Datagrams waiting for the next send of a socket's, with the source address of a shared
/// socket's.
type Outbox = Vec<(Option<Ipv4Addr>, Transmit)>;

struct Driver {
    poll: Poll,
    rx: Receiver<DriverCmd>,
    last: Arc<Mutex<DriverSnapshot>>,
    peers: Vec<Option<Slot>>,
    sockets: Vec<Option<Socket>>,
    /// Per socket, by the same index.
    outboxes: Vec<Outbox>,
    /// Shared sockets by port.
    groups: HashMap<u16, usize>,
    /// The participant at each address of a shared socket: (socket, address).
    by_address: HashMap<(usize, Ipv4Addr), usize>,
    /// Stats of removed peers, kept for the final report.
    gone: Vec<PeerStats>,
    /// One-way latency of every stamped packet received by any peer, as taken from them
    /// (at every silence check, removal and snapshot).
    latency: Histogram,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    recv: Box<RecvBatch>,
    next_silence_check: Instant,
}

impl Driver {
    fn new(poll: Poll, rx: Receiver<DriverCmd>, last: Arc<Mutex<DriverSnapshot>>) -> Self {
        Driver {
            poll,
            rx,
            last,
            peers: Vec::new(),
            sockets: Vec::new(),
            outboxes: Vec::new(),
            groups: HashMap::new(),
            by_address: HashMap::new(),
            gone: Vec::new(),
            latency: Histogram::default(),
            timers: BinaryHeap::new(),
            recv: Box::default(),
            next_silence_check: Instant::now(),
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS);
        let mut woke = Instant::now();
        let mut read_at = woke;
        loop {
            if !self.handle_commands() {
                break;
            }
            let busy = woke.elapsed();
            if busy < COALESCE {
                std::thread::sleep(COALESCE - busy);
            }
            // Before the next look at the sockets only timers and commands wake the
            // thread: the sockets are not asked about (a zero timeout when a timer is due).
            let now = Instant::now();
            let timer = self
                .timers
                .peek()
                .map(|r| r.0.0.saturating_duration_since(now))
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            let read = now >= read_at;
            let timeout = if read {
                timer
            } else {
                timer.min(read_at - now)
            };
            let polled = if read {
                self.poll.poll(&mut events, Some(timeout))
            } else {
                events.clear();
                std::thread::sleep(timeout);
                Ok(())
            };
            if let Err(e) = polled
                && e.kind() != io::ErrorKind::Interrupted
            {
                break;
            }
            let now = Instant::now();
            woke = now;
            let mut looked = false;
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                looked = true;
                self.receive(ev.token().0);
            }
            // A full list of events may have left sockets unreported: look again at once.
            if looked && events.iter().count() < EVENTS {
                read_at = now + READ_EVERY;
            }
            self.expire(now);
            self.send_out();
            if now >= self.next_silence_check {
                self.next_silence_check = now + SILENCE_CHECK;
                for s in self.peers.iter_mut().flatten() {
                    s.peer.check_silence(now);
                    s.peer.take_latency(&mut self.latency);
                }
            }
        }
        let last = self.snapshot();
        if let Ok(mut l) = self.last.lock() {
            *l = last;
        }
    }

    /// Returns false on Stop.
    fn handle_commands(&mut self) -> bool {
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                DriverCmd::Add(peer, socket) => {
                    let i = self.peers.len();
                    let local = peer.local_addr();
                    let socket = match socket {
                        PeerSocket::Own(socket) => {
                            let Some(k) = self.register(socket, Some(i), RCVBUF) else {
                                continue;
                            };
                            k
                        }
                        PeerSocket::Group(port) => {
                            let (Some(&k), IpAddr::V4(address)) =
                                (self.groups.get(&port), local.ip())
                            else {
                                continue;
                            };
                            self.by_address.insert((k, address), i);
                            k
                        }
                    };
                    self.peers.push(Some(Slot {
                        peer: *peer,
                        socket,
                        scheduled: None,
                    }));
                    self.flush(i);
                    self.schedule(i);
                    self.send_out();
                }
                DriverCmd::AddGroup(socket) => {
                    let Ok(port) = socket.local_addr().map(|a| a.port()) else {
                        continue;
                    };
                    if let Some(k) = self.register(socket, None, RCVBUF * GROUP) {
                        self.groups.insert(port, k);
                    }
                }
                DriverCmd::Signal(id, msg) => {
                    // A message can bring the participant's next wake-up forward (a
                    // layer resumed), so it is scheduled again as after any input.
                    if let Some(i) = self.index(id) {
                        if let Some(s) = self.peers[i].as_mut() {
                            s.peer.handle_signal(&msg);
                        }
                        self.schedule(i);
                    }
                }
                DriverCmd::SetSending(id, on) => {
                    if let Some(s) = self.find(id) {
                        s.peer.set_sending(on);
                    }
                    if let Some(i) = self.index(id) {
                        self.schedule(i);
                    }
                }
                DriverCmd::Remove(id) => {
                    if let Some(i) = self.index(id)
                        && let Some(slot) = self.peers[i].take()
                    {
                        let mut slot = slot;
                        let own = self.sockets[slot.socket]
                            .as_ref()
                            .is_some_and(|s| s.owner.is_some());
                        if own {
                            if let Some(s) = self.sockets[slot.socket].take() {
                                let fd = s.socket.as_raw_fd();
                                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                            }
                        } else if let IpAddr::V4(a) = slot.peer.local_addr().ip() {
                            self.by_address.remove(&(slot.socket, a));
                        }
                        slot.peer.account_headers();
                        self.gone.push(slot.peer.stats().clone());
                        slot.peer.take_latency(&mut self.latency);
                    }
                }
                DriverCmd::Snapshot(reply) => {
                    let _ = reply.send(self.snapshot());
                }
                DriverCmd::Tally(reply) => {
                    let _ = reply.send(self.tally());
                }
                DriverCmd::Stop => return false,
            }
        }
        true
    }

    fn index(&self, id: u32) -> Option<usize> {
        self.peers
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.peer.id() == id))
    }

    fn find(&mut self, id: u32) -> Option<&mut Slot> {
        self.peers.iter_mut().flatten().find(|s| s.peer.id() == id)
    }

    /// Prepares `socket` and adds it to the epoll, as the socket of participant `owner`
    /// or a shared one; returns its index.
    fn register(
        &mut self,
        socket: UdpSocket,
        owner: Option<usize>,
        rcvbuf: usize,
    ) -> Option<usize> {
        sock::prepare(&socket, rcvbuf).ok()?;
        let k = self.sockets.len();
        let fd = socket.as_raw_fd();
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), Token(k), Interest::READABLE)
            .ok()?;
        self.sockets.push(Some(Socket { socket, owner }));
        self.outboxes.push(Outbox::new());
        Some(k)
    }

    /// Reads socket `k` until it is empty and hands each datagram to the participant it
    /// was sent to. A participant answers (its sends queued, its timer set) when the
    /// datagrams for it end, while its state is still in the cache: the server sends runs
    /// to one participant, which arrive together.
    fn receive(&mut self, k: usize) {
        let Some(socket) = self.sockets.get(k).and_then(Option::as_ref) else {
            return;
        };
        let mut current: Option<usize> = None;
        loop {
            match sock::recv_batch(&socket.socket, &mut self.recv) {
                Ok(n) => {
                    let clock = Clock::now();
                    for m in 0..self.recv.messages() {
                        let i = match (socket.owner, self.recv.destination(m)) {
                            (Some(i), _) => i,
                            (None, Some(to)) => match self.by_address.get(&(k, to)) {
                                Some(&i) => i,
                                // Sent to no participant of ours (one that left): dropped.
                                None => continue,
                            },
                            (None, None) => continue,
                        };
                        if let Some(done) = current.filter(|&c| c != i) {
                            Self::answer(
                                &mut self.peers,
                                &self.sockets,
                                &mut self.outboxes,
                                &mut self.timers,
                                done,
                            );
                        }
                        current = Some(i);
                        let Some(slot) = self.peers.get_mut(i).and_then(Option::as_mut) else {
                            continue;
                        };
                        for (from, data, stamp) in self.recv.datagrams(m) {
                            let at =
                                stamp.map_or(clock.instant(Duration::MAX), |w| clock.instant(w));
                            slot.peer.handle_datagram(from, data, at);
                        }
                    }
                    if n < sock::BATCH {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ICMP errors from earlier sends: nothing to read, carry on.
                Err(_) => break,
            }
        }
        if let Some(done) = current {
            Self::answer(
                &mut self.peers,
                &self.sockets,
                &mut self.outboxes,
                &mut self.timers,
                done,
            );
        }
        self.send_out();
    }

    /// After datagrams for participant `i`: queues what it sends and sets its timer.
    fn answer(
        peers: &mut [Option<Slot>],
        sockets: &[Option<Socket>],
        outboxes: &mut [Outbox],
        timers: &mut BinaryHeap<Reverse<(Instant, usize)>>,
        i: usize,
    ) {
        let Some(slot) = peers.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        slot.peer.finish_receive(Instant::now());
        Self::flush_slot(slot, sockets, outboxes);
        Self::schedule_slot(slot, timers, i);
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&Reverse((at, i))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(slot) = self.peers.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            if slot.scheduled != Some(at) {
                continue;
            }
            slot.scheduled = None;
            if slot.peer.poll_timeout() <= now {
                slot.peer.handle_timeout(now);
                self.flush(i);
            }
            self.schedule(i);
        }
    }

    fn schedule(&mut self, i: usize) {
        if let Some(slot) = self.peers.get_mut(i).and_then(Option::as_mut) {
            Self::schedule_slot(slot, &mut self.timers, i);
        }
    }

    fn schedule_slot(
        slot: &mut Slot,
        timers: &mut BinaryHeap<Reverse<(Instant, usize)>>,
        i: usize,
    ) {
        let at = slot.peer.poll_timeout();
        if slot.scheduled.is_none_or(|s| at < s) {
            slot.scheduled = Some(at);
            timers.push(Reverse((at, i)));
        }
    }

    /// Moves what participant `i` has to send to its socket's outbox.
    fn flush(&mut self, i: usize) {
        if let Some(slot) = self.peers.get_mut(i).and_then(Option::as_mut) {
            Self::flush_slot(slot, &self.sockets, &mut self.outboxes);
        }
    }

    fn flush_slot(slot: &mut Slot, sockets: &[Option<Socket>], outboxes: &mut [Outbox]) {
        let (Some(socket), Some(outbox)) = (
            sockets.get(slot.socket).and_then(Option::as_ref),
            outboxes.get_mut(slot.socket),
        ) else {
            return;
        };
        let from = match (socket.owner, slot.peer.local_addr().ip()) {
            (None, IpAddr::V4(a)) => Some(a),
            _ => None,
        };
        while let Some(t) = slot.peer.poll_transmit() {
            outbox.push((from, t));
        }
    }

    /// Sends every socket's outbox, a batch of datagrams per system call.
    fn send_out(&mut self) {
        for (socket, outbox) in self.sockets.iter().zip(&mut self.outboxes) {
            let Some(socket) = socket else {
                outbox.clear();
                continue;
            };
            if outbox.is_empty() {
                continue;
            }
            let datagrams: Vec<(Option<Ipv4Addr>, SocketAddr, &[u8])> = outbox
                .iter()
                .map(|(from, t)| (*from, t.destination, &t.contents[..]))
                .collect();
            // Loss on a full socket buffer is what a real network does; the receivers
            // count it.
            sock::send_batch(&socket.socket, &datagrams);
            drop(datagrams);
            outbox.clear();
        }
    }

    fn tally(&mut self) -> DriverTally {
        for s in self.peers.iter_mut().flatten() {
            s.peer.take_latency(&mut self.latency);
        }
        let peers = || {
            let live = self.peers.iter().flatten().map(|s| s.peer.stats());
            self.gone.iter().chain(live)
        };
        DriverTally {
            totals: Totals::of(peers()),
            marks: LossMarks::of(peers()),
            latency: self.latency.clone(),
        }
    }

    fn snapshot(&mut self) -> DriverSnapshot {
        for s in self.peers.iter_mut().flatten() {
            s.peer.account_headers();
            s.peer.take_latency(&mut self.latency);
        }
        let mut peers = self.gone.clone();
        for s in self.peers.iter().flatten() {
            peers.push(s.peer.stats().clone());
        }
        DriverSnapshot {
            peers,
            latency: self.latency.clone(),
            cpu_ns: thread_cpu_ns(),
        }
    }
}

/// CPU time consumed by the calling thread, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc_timespec();
    // SAFETY: clock_gettime writes one timespec to a live local.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn libc_timespec() -> libc::timespec {
    libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    }
}
