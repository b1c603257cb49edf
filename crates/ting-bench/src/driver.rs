//! Drives many simulated participants on one thread: their UDP sockets in one epoll, their
//! timers in one heap. Commands come in over a channel; statistics go out as snapshots.

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

const WAKER: Token = Token(usize::MAX);
/// How often statistics are published.
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_millis(100);

/// Commands to a driver.
#[derive(Debug)]
pub enum DriverCmd {
    Add(Box<SimPeer>, UdpSocket),
    Signal(u32, Box<ServerMsg>),
    SetSending(u32, bool),
    Remove(u32),
    Stop,
}

/// The handle that controls a driver thread.
#[derive(Debug)]
pub struct DriverHandle {
    tx: Sender<DriverCmd>,
    waker: Arc<Waker>,
    snapshot: Arc<Mutex<Vec<PeerStats>>>,
    thread: Option<JoinHandle<()>>,
}

impl DriverHandle {
    pub fn spawn(name: &str) -> io::Result<DriverHandle> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let snapshot = Arc::new(Mutex::new(Vec::new()));
        let shared = snapshot.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || Driver::new(poll, rx, shared).run())?;
        Ok(DriverHandle {
            tx,
            waker,
            snapshot,
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

    /// The latest statistics of every peer (at most [`SNAPSHOT_INTERVAL`] old).
    pub fn snapshot(&self) -> Vec<PeerStats> {
        self.snapshot.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stops the thread and returns the final statistics.
    pub fn stop(mut self) -> Vec<PeerStats> {
        self.send(DriverCmd::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.snapshot()
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
    snapshot: Arc<Mutex<Vec<PeerStats>>>,
    peers: Vec<Option<Slot>>,
    /// Stats of removed peers, kept for the final report.
    gone: Vec<PeerStats>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    buf: Vec<u8>,
}

impl Driver {
    fn new(poll: Poll, rx: Receiver<DriverCmd>, snapshot: Arc<Mutex<Vec<PeerStats>>>) -> Self {
        Driver {
            poll,
            rx,
            snapshot,
            peers: Vec::new(),
            gone: Vec::new(),
            timers: BinaryHeap::new(),
            buf: vec![0; 2048],
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut next_snapshot = Instant::now();
        loop {
            if !self.handle_commands() {
                break;
            }
            let timeout = self
                .timers
                .peek()
                .map(|r| r.0.0.saturating_duration_since(Instant::now()))
                .unwrap_or(SNAPSHOT_INTERVAL)
                .min(SNAPSHOT_INTERVAL);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                break;
            }
            let now = Instant::now();
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                self.receive(ev.token().0, now);
            }
            self.expire(now);
            if now >= next_snapshot {
                self.publish();
                next_snapshot = now + SNAPSHOT_INTERVAL;
            }
        }
        self.publish();
    }

    /// Returns false on Stop.
    fn handle_commands(&mut self) -> bool {
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                DriverCmd::Add(peer, socket) => {
                    if socket.set_nonblocking(true).is_err() {
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
                        let fd = slot.socket.as_raw_fd();
                        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                        self.gone.push(slot.peer.stats().clone());
                    }
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

    fn receive(&mut self, i: usize, now: Instant) {
        let Some(slot) = self.peers.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        loop {
            match slot.socket.recv_from(&mut self.buf) {
                Ok((n, from)) => slot.peer.handle_receive(from, &self.buf[..n], now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ICMP errors from earlier sends: nothing to read, carry on.
                Err(_) => break,
            }
        }
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
        while let Some(t) = slot.peer.poll_transmit() {
            // Loss on a full socket buffer is what a real network does; the receivers count it.
            let _ = slot.socket.send_to(&t.contents, t.destination);
        }
    }

    fn publish(&mut self) {
        let mut all: Vec<PeerStats> = self.gone.clone();
        all.extend(self.peers.iter().flatten().map(|s| s.peer.stats().clone()));
        if let Ok(mut snap) = self.snapshot.lock() {
            *snap = all;
        }
    }
}
