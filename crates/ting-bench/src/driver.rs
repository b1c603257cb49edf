//! Drives many simulated participants on one thread: their UDP sockets in one epoll, their
//! timers in one heap. Commands come in over a channel; statistics go out as snapshots,
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
use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use ting_proto::ServerMsg;

use crate::peer::{PeerStats, SimPeer};
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
/// Commands to a driver.
#[derive(Debug)]
pub enum DriverCmd {
    Add(Box<SimPeer>, UdpSocket),
    Signal(u32, Box<ServerMsg>),
    SetSending(u32, bool),
    Remove(u32),
    Snapshot(Sender<DriverSnapshot>),
    Stop,
}

/// The handle that controls a driver thread.
#[derive(Debug)]
pub struct DriverHandle {
    tx: Sender<DriverCmd>,
    waker: Arc<Waker>,
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
        self.send(DriverCmd::Add(Box::new(peer), socket));
    }

    /// A sender other tasks can use to reach this driver.
    pub fn sender(&self) -> DriverSender {
        DriverSender {
            tx: self.tx.clone(),
            waker: self.waker.clone(),
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
}

impl DriverSender {
    pub fn send(&self, cmd: DriverCmd) {
        if self.tx.send(cmd).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

struct Slot {
    peer: SimPeer,
    socket: UdpSocket,
    scheduled: Option<Instant>,
}

struct Driver {
    poll: Poll,
    rx: Receiver<DriverCmd>,
    last: Arc<Mutex<DriverSnapshot>>,
    peers: Vec<Option<Slot>>,
    /// Stats of removed peers, kept for the final report.
    gone: Vec<PeerStats>,
    gone_latency: Histogram,
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
            gone: Vec::new(),
            gone_latency: Histogram::default(),
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
            if now >= self.next_silence_check {
                self.next_silence_check = now + SILENCE_CHECK;
                for s in self.peers.iter_mut().flatten() {
                    s.peer.check_silence(now);
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
                    if sock::prepare(&socket, RCVBUF).is_err() {
                        continue;
                    }
                    let i = self.peers.len();
                    let fd = socket.as_raw_fd();
                    if self
                        .poll
                        .registry()
                        .register(&mut SourceFd(&fd), Token(i), Interest::READABLE)
                        .is_err()
                    {
                        continue;
                    }
                    self.peers.push(Some(Slot {
                        peer: *peer,
                        socket,
                        scheduled: None,
                    }));
                    self.flush(i);
                    self.schedule(i);
                }
                DriverCmd::Signal(id, msg) => {
                    if let Some(s) = self.find(id) {
                        s.peer.handle_signal(&msg);
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
                        let fd = slot.socket.as_raw_fd();
                        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                        slot.peer.account_headers();
                        self.gone.push(slot.peer.stats().clone());
                        self.gone_latency.merge(slot.peer.latency());
                    }
                }
                DriverCmd::Snapshot(reply) => {
                    let _ = reply.send(self.snapshot());
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

    fn receive(&mut self, i: usize) {
        let Some(slot) = self.peers.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        loop {
            match sock::recv_batch(&slot.socket, &mut self.recv) {
                Ok(n) => {
                    let clock = Clock::now();
                    for (from, data, stamp) in self.recv.iter() {
                        let at = stamp.map_or(clock.instant(Duration::MAX), |w| clock.instant(w));
                        slot.peer.handle_datagram(from, data, at);
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
        slot.peer.finish_receive(Instant::now());
        self.flush(i);
        self.schedule(i);
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
        let Some(slot) = self.peers.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let at = slot.peer.poll_timeout();
        if slot.scheduled.is_none_or(|s| at < s) {
            slot.scheduled = Some(at);
            self.timers.push(Reverse((at, i)));
        }
    }

    fn flush(&mut self, i: usize) {
        let Some(slot) = self.peers.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let mut out = Vec::new();
        while let Some(t) = slot.peer.poll_transmit() {
            out.push(t);
        }
        if out.is_empty() {
            return;
        }
        let datagrams: Vec<(std::net::SocketAddr, &[u8])> = out
            .iter()
            .map(|t| (t.destination, &t.contents[..]))
            .collect();
        // Loss on a full socket buffer is what a real network does; the receivers count it.
        sock::send_batch(&slot.socket, &datagrams);
    }

    fn snapshot(&mut self) -> DriverSnapshot {
        for s in self.peers.iter_mut().flatten() {
            s.peer.account_headers();
        }
        let mut peers = self.gone.clone();
        let mut latency = self.gone_latency.clone();
        for s in self.peers.iter().flatten() {
            peers.push(s.peer.stats().clone());
            latency.merge(s.peer.latency());
        }
        DriverSnapshot {
            peers,
            latency,
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
