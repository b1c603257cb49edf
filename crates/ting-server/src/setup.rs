//! Building media connections off the packet path.
//!
//! Accepting an offer parses its SDP and builds a str0m `Rtc` with one stream per m-line:
//! milliseconds of CPU for an honest offer. Done on a media worker it would hold up every
//! packet of that worker's meetings, so it happens here, on one thread of its own at a
//! lower scheduling priority; the worker only receives the finished connection. One
//! thread bounds what a burst of offers (honest or hostile) can take from the media
//! workers to one core's share at most, and the lower priority lets a busy worker come first.

use std::net::SocketAddr;
use std::sync::mpsc as std_mpsc;
use std::time::Instant;

use str0m::config::DtlsCert;
use tokio::sync::mpsc;
use tracing::warn;

use crate::outbox::Outbox;
use crate::worker::peer::{Accepted, Peer, PeerSetup, SlotLimits};
use crate::worker::{OfferError, RoomKey, WorkerId};

/// What every connection is built with.
#[derive(Clone)]
pub struct PeerFactory {
    pub cert: DtlsCert,
    pub limits: SlotLimits,
    pub estimate_bandwidth: bool,
    pub opus_dtx: bool,
}

impl std::fmt::Debug for PeerFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerFactory")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl PeerFactory {
    /// Validates `offer` and builds the participant's connection, answering from
    /// `candidate` (the address of the worker that will hold it). Panics inside str0m are
    /// contained and reported as a refused offer.
    pub fn accept(
        &self,
        pid: u64,
        room: RoomKey,
        offer: &ting_proto::Offer,
        candidate: SocketAddr,
        outbox: Outbox,
        now: Instant,
    ) -> Result<Accepted, OfferError> {
        let setup = PeerSetup {
            pid,
            room,
            offer,
            limits: self.limits,
            candidate,
            cert: &self.cert,
            estimate_bandwidth: self.estimate_bandwidth,
            opus_dtx: self.opus_dtx,
            outbox,
            now,
        };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Peer::accept(setup))) {
            Ok(r) => r,
            Err(_) => Err(OfferError::Rejected(
                "the server failed on this offer; it was logged".into(),
            )),
        }
    }
}

/// One offer to build a connection from.
#[derive(Debug)]
pub struct SetupJob {
    pub pid: u64,
    pub room: RoomKey,
    pub worker: WorkerId,
    pub candidate: SocketAddr,
    pub offer: ting_proto::Offer,
    pub outbox: Outbox,
}

/// A built connection, or why the offer was refused.
#[derive(Debug)]
pub struct SetupDone {
    pub pid: u64,
    pub worker: WorkerId,
    pub result: Result<Box<Accepted>, OfferError>,
}

/// Starts the setup thread. It ends when every job sender is dropped.
pub fn spawn(
    factory: PeerFactory,
    done: mpsc::UnboundedSender<SetupDone>,
) -> std::io::Result<(std_mpsc::Sender<SetupJob>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std_mpsc::channel::<SetupJob>();
    let thread = std::thread::Builder::new()
        .name("ting-setup".into())
        .spawn(move || {
            lower_priority();
            for job in rx {
                let result = factory
                    .accept(
                        job.pid,
                        job.room,
                        &job.offer,
                        job.candidate,
                        job.outbox,
                        Instant::now(),
                    )
                    .map(Box::new);
                let _ = done.send(SetupDone {
                    pid: job.pid,
                    worker: job.worker,
                    result,
                });
            }
        })?;
    Ok((tx, thread))
}

/// Nice 10 for this thread only (Linux schedules threads by their own nice value), so media
/// workers win the CPU when both want it.
fn lower_priority() {
    // SAFETY: gettid has no arguments; setpriority on our own thread id changes only it.
    let r = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10)
    };
    if r != 0 {
        warn!("cannot lower the setup thread's priority; offers compete with media");
    }
}
