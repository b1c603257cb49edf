//! Batched UDP: `recvmmsg` and `sendmmsg`, one syscall for up to [`BATCH`] datagrams, and
//! UDP GSO (generic segmentation offload) for runs of datagrams to the same destination.
//!
//! A media worker spends most of its time in the kernel's send path; handing the kernel a
//! batch instead of one datagram per call is the cheapest saving there is. Sending a video
//! frame to one subscriber is several datagrams of one size to one address in a row: with
//! GSO the kernel takes them as one message and cuts it into datagrams, paying its per-send
//! cost once. Everything unsafe in the server lives in this file, and each block says what
//! it relies on.

use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Datagrams per syscall.
pub const BATCH: usize = 32;

/// Room for an SCM_TIMESTAMPNS and an SO_RXQ_OVFL control message (cmsghdrs, a timespec
/// and a u32, aligned).
const RECV_CONTROL_LEN: usize = 64;

/// A control-message buffer, aligned as `cmsghdr` needs.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct RecvControl([u8; RECV_CONTROL_LEN]);

/// The largest datagram read. WebRTC keeps packets under the path MTU (~1200–1500 bytes);
/// anything larger than this is truncated by the kernel and then fails to parse.
pub const MAX_DATAGRAM: usize = 2048;

/// Receive buffers for one `recvmmsg` call, reused across calls.
pub struct RecvBatch {
    bufs: Box<[[u8; MAX_DATAGRAM]]>,
    addrs: Box<[libc::sockaddr_storage]>,
    controls: Box<[RecvControl]>,
    lens: [usize; BATCH],
    /// How long each datagram waited in the socket's receive queue, nanoseconds (`None`:
    /// the kernel did not stamp it; see [`enable_receive_info`]).
    waited_ns: [Option<u64>; BATCH],
    /// The socket's count of datagrams the kernel dropped for a full receive buffer, as
    /// of the last datagram read (`SO_RXQ_OVFL`; `None`: not reported).
    overflows: Option<u32>,
    count: usize,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("count", &self.count)
            .finish()
    }
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: vec![[0u8; MAX_DATAGRAM]; BATCH].into_boxed_slice(),
            // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
            addrs: vec![unsafe { mem::zeroed::<libc::sockaddr_storage>() }; BATCH]
                .into_boxed_slice(),
            controls: vec![RecvControl([0; RECV_CONTROL_LEN]); BATCH].into_boxed_slice(),
            lens: [0; BATCH],
            waited_ns: [None; BATCH],
            overflows: None,
            count: 0,
        }
    }
}

impl RecvBatch {
    /// The datagrams of the last receive: (source, bytes). Sources the kernel reported in
    /// a family we do not know are skipped.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        (0..self.count).filter_map(move |i| {
            let addr = from_sockaddr(&self.addrs[i])?;
            Some((addr, &self.bufs[i][..self.lens[i]]))
        })
    }

    /// How long each datagram of the last receive waited in the socket's receive queue
    /// before it was read, for those the kernel stamped.
    pub fn waited(&self) -> impl Iterator<Item = Duration> + '_ {
        self.waited_ns[..self.count]
            .iter()
            .flatten()
            .map(|&ns| Duration::from_nanos(ns))
    }

    /// The socket's running count of datagrams the kernel dropped because its receive
    /// buffer was full, as of the last receive (a 32-bit counter that wraps), if the kernel
    /// reports it.
    pub fn overflows(&self) -> Option<u32> {
        self.overflows
    }
}

/// Asks the kernel to stamp each datagram the socket receives with its arrival time
/// (`SO_TIMESTAMPNS`) and to report with each read how many datagrams it has dropped for a
/// full receive buffer (`SO_RXQ_OVFL`): a worker that cannot keep up shows as time waited
/// and datagrams lost before it read them. Either may be refused (a kernel without it);
/// the first error is returned after trying both, and reading works as before.
pub fn enable_receive_info(socket: &UdpSocket) -> io::Result<()> {
    let stamps = set_socket_option(socket, libc::SO_TIMESTAMPNS, 1);
    let drops = set_socket_option(socket, libc::SO_RXQ_OVFL, 1);
    stamps.and(drops)
}

/// The arrival stamp (time since the Unix epoch) and the drop count among a received
/// message's control messages.
fn recv_control(hdr: &libc::msghdr) -> (Option<Duration>, Option<u32>) {
    let (mut stamp, mut overflows) = (None, None);
    if hdr.msg_controllen == 0 {
        return (stamp, overflows);
    }
    // SAFETY: the kernel wrote `msg_controllen` bytes of well-formed control messages into
    // the buffer `msg_control` points at, which the caller still borrows;
    // CMSG_FIRSTHDR/NXTHDR stay within it. The data of an SCM_TIMESTAMPNS message is one
    // timespec, of an SO_RXQ_OVFL message one u32; both are read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::SOL_SOCKET && c.cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>());
                if let (Ok(secs), Ok(nanos)) = (u64::try_from(ts.tv_sec), u32::try_from(ts.tv_nsec))
                    && nanos < 1_000_000_000
                {
                    stamp = Some(Duration::new(secs, nanos));
                }
            } else if c.cmsg_level == libc::SOL_SOCKET && c.cmsg_type == libc::SO_RXQ_OVFL {
                overflows = Some(std::ptr::read_unaligned(
                    libc::CMSG_DATA(cmsg).cast::<u32>(),
                ));
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    (stamp, overflows)
}

/// Reads up to [`BATCH`] datagrams without blocking. Returns how many; `WouldBlock` when
/// none are waiting.
pub fn recv_batch(socket: &UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
    let mut iovs: [MaybeUninit<libc::iovec>; BATCH] = [const { MaybeUninit::uninit() }; BATCH];
    let mut hdrs: [MaybeUninit<libc::mmsghdr>; BATCH] = [const { MaybeUninit::uninit() }; BATCH];
    for i in 0..BATCH {
        iovs[i].write(libc::iovec {
            iov_base: batch.bufs[i].as_mut_ptr().cast(),
            iov_len: MAX_DATAGRAM,
        });
        // SAFETY: msghdr is plain old data; zero is a valid "no control, no flags" value.
        let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
        hdr.msg_name = (&mut batch.addrs[i] as *mut libc::sockaddr_storage).cast();
        hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdr.msg_iov = iovs[i].as_mut_ptr();
        hdr.msg_iovlen = 1;
        hdr.msg_control = batch.controls[i].0.as_mut_ptr().cast();
        hdr.msg_controllen = RECV_CONTROL_LEN as _;
        hdrs[i].write(libc::mmsghdr {
            msg_hdr: hdr,
            msg_len: 0,
        });
    }
    // SAFETY: every header points at a live buffer of MAX_DATAGRAM bytes, a live
    // sockaddr_storage and a live control buffer of RECV_CONTROL_LEN bytes, all borrowed
    // mutably from `batch` for the duration of the call; the iovec array outlives the
    // call. MSG_DONTWAIT makes the call non-blocking.
    let n = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            hdrs.as_mut_ptr().cast(),
            BATCH as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        batch.count = 0;
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // Arrival stamps are wall-clock time; a clock stepped back reads as no wait.
    let read_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    for (i, hdr) in hdrs.iter().enumerate().take(n) {
        // SAFETY: the kernel filled the first `n` headers; we initialised all of them.
        let hdr = unsafe { hdr.assume_init_ref() };
        batch.lens[i] = (hdr.msg_len as usize).min(MAX_DATAGRAM);
        let (stamp, overflows) = recv_control(&hdr.msg_hdr);
        batch.waited_ns[i] =
            stamp.map(|at| read_at.saturating_sub(at).as_nanos().min(u64::MAX as u128) as u64);
        if overflows.is_some() {
            batch.overflows = overflows;
        }
    }
    batch.count = n;
    Ok(n)
}

/// The most datagrams one GSO message carries (the kernel allows 64).
const MAX_SEGMENTS: usize = 32;
/// The most bytes one GSO message carries (a UDP datagram's limit, with room for headers).
const MAX_GSO_BYTES: usize = 60_000;
/// Space for one UDP_SEGMENT control message.
const CONTROL_LEN: usize = 32;

/// A run of datagrams to one destination sent as one message.
#[derive(Debug, Clone, Copy)]
struct Group {
    dest: SocketAddr,
    /// Index of the first datagram.
    first: usize,
    count: usize,
    /// The segment size: every datagram but the last has it, the last may be shorter.
    segment: usize,
    bytes: usize,
    /// A shorter datagram ended the run.
    closed: bool,
}

/// Sends datagrams with `sendmmsg`, as GSO messages where consecutive datagrams go to one
/// destination. Keeps its buffers between calls, so sending allocates nothing once warm.
#[derive(Debug)]
pub struct Sender {
    gso: bool,
    groups: Vec<Group>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    controls: Vec<[u8; CONTROL_LEN]>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in the buffers are only meaningful during a `send` call, which
// rebuilds them; between calls they dangle harmlessly and are never read.
unsafe impl Send for Sender {}

impl Default for Sender {
    fn default() -> Self {
        Sender::new(true)
    }
}

impl Sender {
    /// With `gso` false, every datagram is its own message.
    pub fn new(gso: bool) -> Sender {
        Sender {
            gso,
            groups: Vec::new(),
            iovs: Vec::new(),
            addrs: Vec::new(),
            controls: Vec::new(),
            hdrs: Vec::new(),
        }
    }

    /// Whether GSO is in use (it turns itself off if the kernel refuses it).
    pub fn gso(&self) -> bool {
        self.gso
    }

    fn plan(&mut self, datagrams: &[(SocketAddr, &[u8])]) {
        self.groups.clear();
        for (i, (dest, d)) in datagrams.iter().enumerate() {
            let len = d.len();
            if self.gso
                && let Some(g) = self.groups.last_mut()
                && g.dest == *dest
                && !g.closed
                && len <= g.segment
                && g.count < MAX_SEGMENTS
                && g.bytes + len <= MAX_GSO_BYTES
            {
                g.count += 1;
                g.bytes += len;
                g.closed = len < g.segment;
                continue;
            }
            self.groups.push(Group {
                dest: *dest,
                first: i,
                count: 1,
                segment: len,
                bytes: len,
                closed: false,
            });
        }
    }

    /// Sends `datagrams`, in order per destination, with as few `sendmmsg` calls as
    /// possible. Returns how many the kernel took. A message the kernel refuses (e.g. the
    /// destination's ICMP "port unreachable" came back) is skipped and its datagrams
    /// counted in `failed`; when the socket buffer is full (`WouldBlock`) the rest are
    /// dropped and counted too: late media is worthless.
    pub fn send(&mut self, socket: &UdpSocket, datagrams: &[(SocketAddr, &[u8])]) -> SendResult {
        let mut result = SendResult::default();
        self.plan(datagrams);
        let mut g = 0;
        while g < self.groups.len() {
            let chunk = &self.groups[g..(g + BATCH).min(self.groups.len())];
            self.iovs.clear();
            self.addrs.clear();
            self.controls.clear();
            self.hdrs.clear();
            for group in chunk {
                for (_, d) in &datagrams[group.first..group.first + group.count] {
                    self.iovs.push(libc::iovec {
                        iov_base: d.as_ptr() as *mut libc::c_void,
                        iov_len: d.len(),
                    });
                }
                // SAFETY: plain old data, all-zero is valid.
                self.addrs.push(unsafe { mem::zeroed() });
                self.controls.push([0; CONTROL_LEN]);
            }
            let mut iov_at = 0;
            for (k, group) in chunk.iter().enumerate() {
                let addr_len = to_sockaddr(&group.dest, &mut self.addrs[k]);
                // SAFETY: plain old data, zero is "no control, no flags".
                let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
                hdr.msg_name = (&mut self.addrs[k] as *mut libc::sockaddr_storage).cast();
                hdr.msg_namelen = addr_len;
                // SAFETY: iov_at + count is within the iovecs pushed above for this chunk.
                hdr.msg_iov = unsafe { self.iovs.as_mut_ptr().add(iov_at) };
                hdr.msg_iovlen = group.count as _;
                iov_at += group.count;
                if group.count > 1 {
                    let control = &mut self.controls[k];
                    hdr.msg_control = control.as_mut_ptr().cast();
                    // SAFETY: CMSG_SPACE of a u16 fits CONTROL_LEN; the header fields and
                    // the data are written within `control`, which outlives the call.
                    unsafe {
                        hdr.msg_controllen = libc::CMSG_SPACE(2) as _;
                        let c = libc::CMSG_FIRSTHDR(&hdr);
                        (*c).cmsg_level = libc::SOL_UDP;
                        (*c).cmsg_type = libc::UDP_SEGMENT;
                        (*c).cmsg_len = libc::CMSG_LEN(2) as _;
                        std::ptr::write_unaligned(
                            libc::CMSG_DATA(c).cast::<u16>(),
                            group.segment as u16,
                        );
                    }
                }
                self.hdrs.push(libc::mmsghdr {
                    msg_hdr: hdr,
                    msg_len: 0,
                });
            }
            // SAFETY: every header points at addresses, iovecs and control buffers in this
            // Sender's vectors, which are not touched until the call returns, and at the
            // caller's datagram bytes, which the kernel only reads.
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    self.hdrs.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::WouldBlock => {
                        result.dropped += self.groups[g..].iter().map(|g| g.count).sum::<usize>();
                        return result;
                    }
                    io::ErrorKind::Interrupted => continue,
                    _ => {}
                }
                let first = self.groups[g];
                if first.count > 1 && gso_refused(&err) {
                    // The kernel cannot segment: send everything one by one from here on.
                    self.gso = false;
                    let rest = &datagrams[first.first..];
                    let more = self.send(socket, rest);
                    result.sent += more.sent;
                    result.failed += more.failed;
                    result.dropped += more.dropped;
                    return result;
                }
                // The first message was refused for its destination; skip it.
                result.failed += first.count;
                g += 1;
                continue;
            }
            let n = n as usize;
            result.sent += self.groups[g..g + n].iter().map(|g| g.count).sum::<usize>();
            g += n;
        }
        result
    }
}

/// Whether a send error means the kernel does not do UDP GSO (rather than a problem with
/// the destination).
fn gso_refused(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EINVAL | libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
    )
}

/// What [`Sender::send`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendResult {
    pub sent: usize,
    /// Refused by the kernel for that destination.
    pub failed: usize,
    /// Not sent because the socket buffer was full.
    pub dropped: usize,
}

/// Asks for bigger socket buffers so bursts (a keyframe to 50 subscribers) are not dropped.
/// The kernel caps the request at `net.core.{r,w}mem_max`; as root it is forced past that.
pub fn set_buffer_sizes(socket: &UdpSocket, bytes: usize) {
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    for (force, plain) in [
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
    ] {
        if set_socket_option(socket, force, v).is_err() {
            let _ = set_socket_option(socket, plain, v);
        }
    }
}

/// Sets an integer `SOL_SOCKET` option.
fn set_socket_option(
    socket: &UdpSocket,
    option: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt reads sizeof(c_int) bytes from a live c_int.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn to_sockaddr(addr: &SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            let sin = unsafe {
                &mut *(storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above.
            let sin6 = unsafe {
                &mut *(storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_scope_id = a.scope_id();
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trip_over_loopback() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        let dest = b.local_addr().unwrap();
        let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
        let datagrams: Vec<(SocketAddr, &[u8])> =
            payloads.iter().map(|p| (dest, p.as_slice())).collect();
        let r = Sender::new(false).send(&a, &datagrams);
        assert_eq!(r.sent, 40);
        let mut batch = RecvBatch::default();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < 40 && std::time::Instant::now() < deadline {
            match recv_batch(&b, &mut batch) {
                Ok(_) => got.extend(batch.iter().map(|(from, d)| (from, d.to_vec()))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got.len(), 40);
        for (i, (from, d)) in got.iter().enumerate() {
            assert_eq!(*from, a.local_addr().unwrap());
            assert_eq!(d, &payloads[i]);
        }
    }

    #[test]
    fn a_datagram_read_late_shows_how_long_it_waited() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        enable_receive_info(&b).unwrap();
        let mut batch = RecvBatch::default();
        // The kernel may switch arrival stamping on a moment after it is asked (until then
        // it stamps at the read, a wait of ~0): a few tries.
        let mut seen = Vec::new();
        for _ in 0..5 {
            a.send_to(b"early", b.local_addr().unwrap()).unwrap();
            // The datagram sits in b's queue while nobody reads.
            std::thread::sleep(Duration::from_millis(40));
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                match recv_batch(&b, &mut batch) {
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        assert!(std::time::Instant::now() < deadline, "nothing arrived");
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            let waited: Vec<Duration> = batch.waited().collect();
            assert_eq!(waited.len(), 1, "one stamped datagram");
            seen.push(waited[0]);
            if waited[0] >= Duration::from_millis(35) {
                break;
            }
        }
        let last = *seen.last().unwrap();
        assert!(
            last >= Duration::from_millis(35) && last < Duration::from_secs(5),
            "{seen:?}"
        );
        // Nothing was dropped, so the kernel reports no count.
        assert_eq!(batch.overflows(), None);
    }

    #[test]
    fn datagrams_dropped_for_a_full_receive_buffer_are_counted() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        enable_receive_info(&b).unwrap();
        // The smallest buffer the kernel allows: a handful of datagrams.
        set_socket_option(&b, libc::SO_RCVBUF, 1).unwrap();
        let sent = 60;
        for i in 0..sent {
            a.send_to(&[i as u8; 1000], b.local_addr().unwrap())
                .unwrap();
        }
        // Loopback delivers (or drops) within the send call; read what was kept. The
        // kernel tells the count with datagrams queued after the drops, so one more follows
        // once the queue has room.
        let mut batch = RecvBatch::default();
        let mut got = 0;
        let read_all = |batch: &mut RecvBatch| {
            let mut n = 0;
            loop {
                match recv_batch(&b, batch) {
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return n,
                    Err(e) => panic!("{e}"),
                }
            }
        };
        got += read_all(&mut batch);
        assert!(got > 0 && got < sent, "kept {got} of {sent}");
        a.send_to(b"after", b.local_addr().unwrap()).unwrap();
        assert_eq!(read_all(&mut batch), 1);
        assert_eq!(
            batch.overflows(),
            Some((sent - got) as u32),
            "kept {got} of {sent}"
        );
    }

    fn receive_all(b: &UdpSocket, want: usize) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut batch = RecvBatch::default();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < want && std::time::Instant::now() < deadline {
            match recv_batch(b, &mut batch) {
                Ok(_) => got.extend(batch.iter().map(|(from, d)| (from, d.to_vec()))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    #[test]
    fn gso_sends_runs_to_one_destination_as_separate_datagrams_in_order() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b1 = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b2 = UdpSocket::bind("127.0.0.1:0").unwrap();
        b1.set_nonblocking(true).unwrap();
        b2.set_nonblocking(true).unwrap();
        let (d1, d2) = (b1.local_addr().unwrap(), b2.local_addr().unwrap());
        // A frame of equal packets with a short last one, then audio, to b1; a frame to b2;
        // a run longer than a GSO message to b1.
        let mut payloads: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
        for i in 0..5u8 {
            payloads.push((d1, vec![i; if i == 4 { 300 } else { 1100 }]));
        }
        payloads.push((d1, vec![9; 80]));
        for i in 0..3u8 {
            payloads.push((d2, vec![20 + i; 1000]));
        }
        for i in 0..40u8 {
            payloads.push((d1, vec![100 + i; 500]));
        }
        let datagrams: Vec<(SocketAddr, &[u8])> =
            payloads.iter().map(|(d, p)| (*d, p.as_slice())).collect();
        let mut sender = Sender::new(true);
        let r = sender.send(&a, &datagrams);
        assert_eq!(r.sent, payloads.len(), "{r:?}");
        assert!(sender.gso(), "this kernel does UDP GSO on loopback");
        let to = |d: SocketAddr| -> Vec<Vec<u8>> {
            payloads
                .iter()
                .filter(|(x, _)| *x == d)
                .map(|(_, p)| p.clone())
                .collect()
        };
        let got1: Vec<Vec<u8>> = receive_all(&b1, 46).into_iter().map(|(_, p)| p).collect();
        let got2: Vec<Vec<u8>> = receive_all(&b2, 3).into_iter().map(|(_, p)| p).collect();
        assert_eq!(got1, to(d1));
        assert_eq!(got2, to(d2));
        // The plan: 5-packet frame (short last closes it), audio, b2's frame, 32 + 8.
        sender.plan(&datagrams);
        let counts: Vec<usize> = sender.groups.iter().map(|g| g.count).collect();
        assert_eq!(counts, vec![5, 1, 3, 32, 8]);
    }

    #[test]
    fn without_gso_every_datagram_is_a_message() {
        let payloads = [vec![1u8; 100], vec![2u8; 100]];
        let dest: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let datagrams: Vec<(SocketAddr, &[u8])> =
            payloads.iter().map(|p| (dest, p.as_slice())).collect();
        let mut sender = Sender::new(false);
        sender.plan(&datagrams);
        assert_eq!(sender.groups.len(), 2);
    }

    #[test]
    fn ipv6_addresses_convert_both_ways() {
        let addr: SocketAddr = "[::1]:4711".parse().unwrap();
        // SAFETY: plain old data.
        let mut s: libc::sockaddr_storage = unsafe { mem::zeroed() };
        to_sockaddr(&addr, &mut s);
        assert_eq!(from_sockaddr(&s), Some(addr));
        let addr: SocketAddr = "10.1.2.3:9".parse().unwrap();
        to_sockaddr(&addr, &mut s);
        assert_eq!(from_sockaddr(&s), Some(addr));
    }
}
