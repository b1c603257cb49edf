//! The harness's UDP: batched receive with the kernel's arrival time of each datagram, and
//! batched send.
//!
//! A simulated participant receives hundreds of packets a second; reading them one
//! `recv_from` at a time cost the harness more than the server spent forwarding them. And
//! the time a packet arrived is what its connection reports back in transport-wide
//! feedback, which the server's bandwidth estimator reads: stamping packets when a busy
//! harness thread gets round to them would make the network look congested when only the
//! harness is. So each datagram carries the kernel's receive timestamp (`SO_TIMESTAMPNS`),
//! taken when it reached the socket. Everything unsafe in ting-bench lives in this file.
//!
//! The server sends runs of datagrams to one participant as one GSO message
//! (`UDP_SEGMENT`). With `UDP_GRO` on the socket the kernel hands such a run over whole,
//! with its segment size, instead of splitting it into one socket buffer per datagram;
//! [`RecvBatch::iter`] splits it. On loopback the sending core does the receiver's
//! kernel work, so this takes the per-datagram cost of delivering to the harness off the
//! server's core as well as the harness's: what a network card that segments in hardware
//! (USO) and a receiver on another machine would leave it.
//!
//! On loopback many participants can share one socket ([`bind_group`]): each has an
//! address of its own in 127.0.0.0/8 and the same port, the kernel says which address a
//! datagram was sent to (`IP_PKTINFO`), and a send names its source address the same way.
//! One `recvmmsg` then reads the datagrams of dozens of participants instead of one or
//! two, and one `sendmmsg` sends theirs; the server sees one address per participant, as
//! from as many machines.

use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Datagrams per syscall.
pub const BATCH: usize = 32;
/// The largest message read: a run of datagrams coalesced by `UDP_GRO` is at most 64 KiB.
pub const MAX_MESSAGE: usize = 65_536;
/// Room for an SCM_TIMESTAMPNS, a UDP_GRO and an IP_PKTINFO control message (cmsghdrs, a
/// timespec, an int and an in_pktinfo, aligned: 32 + 24 + 32 bytes).
const CONTROL_LEN: usize = 128;
/// Room for the IP_PKTINFO control message of a send.
const SEND_CONTROL_LEN: usize = 32;

/// A control-message buffer, aligned as `cmsghdr` needs.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Control([u8; CONTROL_LEN]);

/// Asks the kernel to stamp every datagram this socket receives and to hand over runs of
/// datagrams sent as one GSO message whole (where the kernel can), and gives the socket a
/// receive buffer large enough for a keyframe burst to a participant with many slots.
pub fn prepare(socket: &UdpSocket, rcvbuf: usize) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads `optlen` bytes from a live c_int.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&one as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above. A kernel without UDP_GRO (before 5.0) refuses it: then every
    // datagram arrives on its own, which `recv_batch` reads the same way.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_GRO,
            (&one as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let size = rcvbuf.min(i32::MAX as usize / 2) as libc::c_int;
    // SAFETY: as above. SO_RCVBUFFORCE (privileged) may exceed net.core.rmem_max; without
    // the privilege SO_RCVBUF is capped by it, which is fine.
    unsafe {
        let forced = libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        if forced != 0 {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const libc::c_int).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    socket.set_nonblocking(true)
}

/// A socket many simulated participants share on loopback (see the module docs): bound to
/// port P of every address but taking only what arrives on the loopback device, and told
/// each datagram's destination address. Participant addresses are [`group_address`]es
/// with this socket's port.
pub fn bind_group() -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?;
    let device = b"lo\0";
    // SAFETY: setsockopt reads `optlen` bytes from the live byte string.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            device.as_ptr().cast(),
            device.len() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let one: libc::c_int = 1;
    // SAFETY: as above, from a live c_int.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            (&one as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

/// The loopback address of simulated participant `id` on a shared socket: 127.16.0.0 and
/// up (127.0.0.0/16 stays clear, where servers and other tools usually listen), `None`
/// past the 2^20 the block holds.
pub fn group_address(id: u32) -> Option<Ipv4Addr> {
    (id < 1 << 20).then(|| Ipv4Addr::from(0x7f10_0000 + id))
}

/// Converts the kernel's wall-clock stamps to `Instant`s, from one reading of both clocks
/// per batch.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall: Duration,
    mono: Instant,
}

impl Clock {
    pub fn now() -> Clock {
        Clock {
            wall: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
            mono: Instant::now(),
        }
    }

    /// The instant of a wall-clock stamp; a stamp from the future (the wall clock moved)
    /// is now.
    pub fn instant(&self, wall: Duration) -> Instant {
        self.mono
            .checked_sub(self.wall.saturating_sub(wall))
            .unwrap_or(self.mono)
    }
}

/// Receive buffers for one `recvmmsg` call, reused across calls.
pub struct RecvBatch {
    bufs: Box<[[u8; MAX_MESSAGE]]>,
    addrs: Box<[libc::sockaddr_storage]>,
    controls: Box<[Control]>,
    lens: [usize; BATCH],
    /// The size of each datagram in a coalesced message (the last may be shorter); 0 for
    /// a message that is one datagram.
    segments: [usize; BATCH],
    stamps: [Option<Duration>; BATCH],
    /// The address each message was sent to, where the socket asked (IP_PKTINFO).
    dests: [Option<Ipv4Addr>; BATCH],
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
            bufs: vec![[0u8; MAX_MESSAGE]; BATCH].into_boxed_slice(),
            // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
            addrs: vec![unsafe { mem::zeroed::<libc::sockaddr_storage>() }; BATCH]
                .into_boxed_slice(),
            controls: vec![Control([0; CONTROL_LEN]); BATCH].into_boxed_slice(),
            lens: [0; BATCH],
            segments: [0; BATCH],
            stamps: [None; BATCH],
            dests: [None; BATCH],
            count: 0,
        }
    }
}

impl RecvBatch {
    /// The datagrams of the last receive, coalesced runs split again: source, bytes, and
    /// the kernel's wall-clock arrival stamp when it gave one (a run's datagrams share
    /// theirs: they were sent in one call and arrived together).
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8], Option<Duration>)> {
        (0..self.count).flat_map(move |i| self.datagrams(i))
    }

    /// How many messages the last receive returned (a coalesced run is one).
    pub fn messages(&self) -> usize {
        self.count
    }

    /// The address message `i` of the last receive was sent to, on a socket that asks
    /// ([`bind_group`]).
    pub fn destination(&self, i: usize) -> Option<Ipv4Addr> {
        self.dests[..self.count].get(i).copied().flatten()
    }

    /// The datagrams of message `i` of the last receive, as [`RecvBatch::iter`] gives
    /// them.
    pub fn datagrams(
        &self,
        i: usize,
    ) -> impl Iterator<Item = (SocketAddr, &[u8], Option<Duration>)> {
        (i..(i + 1).min(self.count)).flat_map(move |i| {
            let addr = from_sockaddr(&self.addrs[i]);
            let message = &self.bufs[i][..self.lens[i]];
            let segment = match self.segments[i] {
                0 => message.len().max(1),
                n => n,
            };
            message
                .chunks(segment)
                .filter_map(move |d| Some((addr?, d, self.stamps[i])))
        })
    }
}

/// Reads up to [`BATCH`] datagrams without blocking. Returns how many; `WouldBlock` when
/// none are waiting.
pub fn recv_batch(socket: &UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
    let mut iovs: [MaybeUninit<libc::iovec>; BATCH] = [const { MaybeUninit::uninit() }; BATCH];
    let mut hdrs: [MaybeUninit<libc::mmsghdr>; BATCH] = [const { MaybeUninit::uninit() }; BATCH];
    for i in 0..BATCH {
        iovs[i].write(libc::iovec {
            iov_base: batch.bufs[i].as_mut_ptr().cast(),
            iov_len: MAX_MESSAGE,
        });
        // SAFETY: msghdr is plain old data; zero is a valid "no control, no flags" value.
        let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
        hdr.msg_name = (&mut batch.addrs[i] as *mut libc::sockaddr_storage).cast();
        hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdr.msg_iov = iovs[i].as_mut_ptr();
        hdr.msg_iovlen = 1;
        hdr.msg_control = batch.controls[i].0.as_mut_ptr().cast();
        hdr.msg_controllen = CONTROL_LEN as _;
        hdrs[i].write(libc::mmsghdr {
            msg_hdr: hdr,
            msg_len: 0,
        });
    }
    // SAFETY: every header points at a live buffer of MAX_MESSAGE bytes, a live
    // sockaddr_storage and a live control buffer of CONTROL_LEN bytes, all borrowed mutably
    // from `batch` for the duration of the call; the iovec array outlives the call.
    // MSG_DONTWAIT makes the call non-blocking.
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
    for (i, hdr) in hdrs.iter().enumerate().take(n) {
        // SAFETY: the kernel filled the first `n` headers; we initialised all of them.
        let hdr = unsafe { hdr.assume_init_ref() };
        // A message cut short (larger than the buffer, or its control messages, and with
        // them a run's segment size, cut off) cannot be split truthfully: it is dropped,
        // and shows as the gap in sequence numbers it leaves.
        let cut = hdr.msg_hdr.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0;
        batch.lens[i] = if cut {
            0
        } else {
            (hdr.msg_len as usize).min(MAX_MESSAGE)
        };
        let (stamp, segment, dest) = control(&hdr.msg_hdr);
        batch.stamps[i] = stamp;
        batch.segments[i] = segment;
        batch.dests[i] = dest;
    }
    batch.count = n;
    Ok(n)
}

/// The SCM_TIMESTAMPNS stamp, the UDP_GRO segment size (0: none) and the IP_PKTINFO
/// destination address among a received message's control messages.
fn control(hdr: &libc::msghdr) -> (Option<Duration>, usize, Option<Ipv4Addr>) {
    let (mut stamp, mut segment, mut dest) = (None, 0, None);
    // SAFETY: the kernel wrote `msg_controllen` bytes of well-formed control messages into
    // the buffer `msg_control` points at, which is still borrowed; CMSG_FIRSTHDR/NXTHDR
    // stay within it. The data of an SCM_TIMESTAMPNS message is one timespec, of a
    // UDP_GRO message one int, of an IP_PKTINFO message one in_pktinfo; all are read
    // unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::SOL_SOCKET && c.cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>());
                stamp = Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
            } else if c.cmsg_level == libc::SOL_UDP && c.cmsg_type == libc::UDP_GRO {
                let n: libc::c_int =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                segment = usize::try_from(n).unwrap_or(0);
            } else if c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_PKTINFO {
                let info: libc::in_pktinfo =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::in_pktinfo>());
                dest = Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)));
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    (stamp, segment, dest)
}

/// Sends `datagrams` (source address, destination, bytes) with `sendmmsg` (as many calls
/// as it takes). A source address, on a [`bind_group`] socket, is the participant's own
/// (IP_PKTINFO); `None` sends from the socket's address. Returns how many the kernel took;
/// a full send buffer drops the rest, as a network would.
pub fn send_batch(
    socket: &UdpSocket,
    datagrams: &[(Option<Ipv4Addr>, SocketAddr, &[u8])],
) -> usize {
    let mut sent = 0;
    for chunk in datagrams.chunks(BATCH) {
        let mut addrs: [MaybeUninit<libc::sockaddr_storage>; BATCH] =
            [const { MaybeUninit::uninit() }; BATCH];
        let mut iovs: [MaybeUninit<libc::iovec>; BATCH] = [const { MaybeUninit::uninit() }; BATCH];
        let mut controls = [SendControl([0; SEND_CONTROL_LEN]); BATCH];
        let mut hdrs: [MaybeUninit<libc::mmsghdr>; BATCH] =
            [const { MaybeUninit::uninit() }; BATCH];
        for (i, (from, dest, data)) in chunk.iter().enumerate() {
            let len = to_sockaddr(dest, &mut addrs[i]);
            iovs[i].write(libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            });
            // SAFETY: msghdr is plain old data; zero is a valid value.
            let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
            hdr.msg_name = addrs[i].as_mut_ptr().cast();
            hdr.msg_namelen = len;
            hdr.msg_iov = iovs[i].as_mut_ptr();
            hdr.msg_iovlen = 1;
            if let Some(from) = from {
                hdr.msg_control = controls[i].0.as_mut_ptr().cast();
                // SAFETY: CMSG_SPACE of an in_pktinfo (32 bytes) fits the aligned control
                // buffer the header points at; CMSG_FIRSTHDR is its start, and the
                // in_pktinfo is written unaligned within it.
                unsafe {
                    hdr.msg_controllen =
                        libc::CMSG_SPACE(mem::size_of::<libc::in_pktinfo>() as u32) as _;
                    let c = libc::CMSG_FIRSTHDR(&hdr);
                    (*c).cmsg_level = libc::IPPROTO_IP;
                    (*c).cmsg_type = libc::IP_PKTINFO;
                    (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<libc::in_pktinfo>() as u32) as _;
                    let info = libc::in_pktinfo {
                        ipi_ifindex: 0,
                        ipi_spec_dst: libc::in_addr {
                            s_addr: u32::from(*from).to_be(),
                        },
                        ipi_addr: libc::in_addr { s_addr: 0 },
                    };
                    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::in_pktinfo>(), info);
                }
            }
            hdrs[i].write(libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            });
        }
        let mut off = 0;
        while off < chunk.len() {
            // SAFETY: headers off..chunk.len() were initialised above and point at live
            // addresses, iovecs, control buffers and the caller's datagrams, all alive
            // during the call.
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    hdrs.as_mut_ptr().add(off).cast(),
                    (chunk.len() - off) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // Skip the datagram the kernel refused (buffer full, unreachable).
                off += 1;
                continue;
            }
            off += n as usize;
            sent += n as usize;
        }
    }
    sent
}

/// A control-message buffer for one send, aligned as `cmsghdr` needs.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct SendControl([u8; SEND_CONTROL_LEN]);

fn to_sockaddr(
    addr: &SocketAddr,
    out: &mut MaybeUninit<libc::sockaddr_storage>,
) -> libc::socklen_t {
    // SAFETY: sockaddr_storage is plain old data; all-zero is valid, and it is large and
    // aligned enough for sockaddr_in and sockaddr_in6.
    unsafe {
        out.write(mem::zeroed());
        match addr {
            SocketAddr::V4(a) => {
                let sin = out.as_mut_ptr().cast::<libc::sockaddr_in>();
                (*sin).sin_family = libc::AF_INET as libc::sa_family_t;
                (*sin).sin_port = a.port().to_be();
                (*sin).sin_addr = libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                };
                mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(a) => {
                let sin6 = out.as_mut_ptr().cast::<libc::sockaddr_in6>();
                (*sin6).sin6_family = libc::AF_INET6 as libc::sa_family_t;
                (*sin6).sin6_port = a.port().to_be();
                (*sin6).sin6_addr = libc::in6_addr {
                    s6_addr: a.ip().octets(),
                };
                (*sin6).sin6_flowinfo = a.flowinfo();
                (*sin6).sin6_scope_id = a.scope_id();
                mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }
}

fn from_sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_with_kernel_timestamps() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        prepare(&rx, 1 << 20).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let datagrams: Vec<(Option<Ipv4Addr>, SocketAddr, &[u8])> =
            payloads.iter().map(|p| (None, to, &p[..])).collect();
        assert_eq!(send_batch(&tx, &datagrams), 40);
        let mut batch = RecvBatch::default();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < 40 && Instant::now() < deadline {
            match recv_batch(&rx, &mut batch) {
                Ok(_) => {
                    for (from, data, stamp) in batch.iter() {
                        assert_eq!(from, tx.local_addr().unwrap());
                        let stamp = stamp.expect("the kernel stamps every datagram");
                        assert!(stamp >= before - Duration::from_secs(1));
                        got.push(data.to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, payloads);
        // Stamps convert to instants in the recent past.
        let clock = Clock::now();
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let at = clock.instant(wall - Duration::from_millis(5));
        assert!(at <= Instant::now());
        assert!(clock.instant(wall + Duration::from_secs(10)) <= Instant::now());
    }

    #[test]
    fn participants_share_a_socket_each_at_its_own_address() {
        let group = bind_group().expect("a socket bound to the loopback device");
        prepare(&group, 1 << 20).unwrap();
        let port = group.local_addr().unwrap().port();
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let to = server.local_addr().unwrap();
        let ids = [0u32, 1, 700];
        let addrs: Vec<Ipv4Addr> = ids.iter().map(|&id| group_address(id).unwrap()).collect();
        assert_eq!(addrs[0], Ipv4Addr::new(127, 16, 0, 0));
        assert_eq!(addrs[2], Ipv4Addr::new(127, 16, 2, 188));
        assert_eq!(group_address(1 << 20), None);
        // Each participant's datagram leaves from its own address.
        let payloads: Vec<[u8; 20]> = ids.iter().map(|&id| [id as u8; 20]).collect();
        let out: Vec<(Option<Ipv4Addr>, SocketAddr, &[u8])> = addrs
            .iter()
            .zip(&payloads)
            .map(|(a, p)| (Some(*a), to, &p[..]))
            .collect();
        assert_eq!(send_batch(&group, &out), 3);
        let mut seen = Vec::new();
        let mut buf = [0u8; 64];
        for _ in 0..3 {
            let (n, from) = server.recv_from(&mut buf).unwrap();
            assert_eq!(n, 20);
            seen.push((from, buf[0]));
        }
        seen.sort();
        let want: Vec<(SocketAddr, u8)> = addrs
            .iter()
            .zip(ids)
            .map(|(a, id)| (SocketAddr::from((*a, port)), id as u8))
            .collect();
        assert_eq!(seen, want);
        // Answers to each arrive on the one socket, each with the address it was sent to.
        for (a, id) in addrs.iter().zip(ids) {
            server
                .send_to(&[id as u8 + 1; 30], SocketAddr::from((*a, port)))
                .unwrap();
        }
        let mut batch = RecvBatch::default();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < 3 && Instant::now() < deadline {
            match recv_batch(&group, &mut batch) {
                Ok(_) => {
                    for m in 0..batch.messages() {
                        for (from, data, _) in batch.datagrams(m) {
                            assert_eq!(from, to);
                            got.push((batch.destination(m), data[0]));
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        got.sort();
        let want: Vec<(Option<Ipv4Addr>, u8)> = addrs
            .iter()
            .zip(ids)
            .map(|(a, id)| (Some(*a), id as u8 + 1))
            .collect();
        assert_eq!(got, want);
    }

    /// Sends `datagrams` (all `segment` bytes but the last, which may be shorter) as one
    /// GSO message, as ting's workers send runs to one participant.
    fn send_gso(socket: &UdpSocket, to: SocketAddr, datagrams: &[Vec<u8>], segment: u16) {
        let bytes: Vec<u8> = datagrams.concat();
        let mut addr = MaybeUninit::<libc::sockaddr_storage>::uninit();
        let addr_len = to_sockaddr(&to, &mut addr);
        let mut iov = libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        };
        let mut control = Control([0; CONTROL_LEN]);
        // SAFETY: the header points at the live address, iovec and control buffer above;
        // CMSG_SPACE of a u16 fits the control buffer, and its data is written unaligned.
        let sent = unsafe {
            let mut hdr: libc::msghdr = mem::zeroed();
            hdr.msg_name = addr.as_mut_ptr().cast();
            hdr.msg_namelen = addr_len;
            hdr.msg_iov = &mut iov;
            hdr.msg_iovlen = 1;
            hdr.msg_control = control.0.as_mut_ptr().cast();
            hdr.msg_controllen = libc::CMSG_SPACE(2) as _;
            let c = libc::CMSG_FIRSTHDR(&hdr);
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = libc::UDP_SEGMENT;
            (*c).cmsg_len = libc::CMSG_LEN(2) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), segment);
            libc::sendmsg(socket.as_raw_fd(), &hdr, 0)
        };
        assert_eq!(sent, bytes.len() as isize, "{}", io::Error::last_os_error());
    }

    #[test]
    fn a_gso_run_arrives_coalesced_and_is_split_into_its_datagrams() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        prepare(&rx, 1 << 20).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        // Two runs: nine datagrams of 1200 bytes and a shorter last one; then three of 80.
        let mut first: Vec<Vec<u8>> = (0..9u8).map(|i| vec![i; 1200]).collect();
        first.push(vec![9; 700]);
        let second: Vec<Vec<u8>> = (10..13u8).map(|i| vec![i; 80]).collect();
        send_gso(&tx, to, &first, 1200);
        send_gso(&tx, to, &second, 80);
        // And one datagram on its own after them.
        assert_eq!(send_batch(&tx, &[(None, to, &[99u8; 50][..])]), 1);
        let want: Vec<Vec<u8>> = first
            .iter()
            .chain(&second)
            .cloned()
            .chain([vec![99; 50]])
            .collect();
        let mut batch = RecvBatch::default();
        let (mut got, mut messages) = (Vec::new(), 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < want.len() && Instant::now() < deadline {
            match recv_batch(&rx, &mut batch) {
                Ok(n) => {
                    messages += n;
                    for (from, data, stamp) in batch.iter() {
                        assert_eq!(from, tx.local_addr().unwrap());
                        assert!(stamp.is_some(), "every datagram of a run has the stamp");
                        got.push(data.to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, want, "every datagram, whole and in order");
        assert_eq!(
            messages, 3,
            "the two runs arrived whole (UDP_GRO), then the single one"
        );
    }
}
