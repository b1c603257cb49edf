//! Batched UDP: `recvmmsg` and `sendmmsg`, one syscall for up to [`BATCH`] datagrams.
//!
//! A media worker spends most of its time in the kernel's send path; handing the kernel a
//! batch instead of one datagram per call is the cheapest saving there is. Everything unsafe
//! in the server lives in this file, and each block says what it relies on.

use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

/// Datagrams per syscall.
pub const BATCH: usize = 32;

/// The largest datagram read. WebRTC keeps packets under the path MTU (~1200–1500 bytes);
/// anything larger than this is truncated by the kernel and then fails to parse.
pub const MAX_DATAGRAM: usize = 2048;

/// Receive buffers for one `recvmmsg` call, reused across calls.
pub struct RecvBatch {
    bufs: Box<[[u8; MAX_DATAGRAM]]>,
    addrs: Box<[libc::sockaddr_storage]>,
    lens: [usize; BATCH],
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
            lens: [0; BATCH],
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
        hdrs[i].write(libc::mmsghdr {
            msg_hdr: hdr,
            msg_len: 0,
        });
    }
    // SAFETY: every header points at a live buffer of MAX_DATAGRAM bytes and a live
    // sockaddr_storage, both borrowed mutably from `batch` for the duration of the call;
    // the iovec array outlives the call. MSG_DONTWAIT makes the call non-blocking.
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
        batch.lens[i] = (hdr.msg_len as usize).min(MAX_DATAGRAM);
    }
    batch.count = n;
    Ok(n)
}

/// Sends `datagrams` with as few `sendmmsg` calls as possible. Returns how many the kernel
/// took. A datagram the kernel refuses (e.g. the destination's ICMP "port unreachable"
/// came back) is skipped and counted in `failed`; when the socket buffer is full
/// (`WouldBlock`) the rest are dropped and counted too: late media is worthless.
pub fn send_batch(socket: &UdpSocket, datagrams: &[(SocketAddr, &[u8])]) -> SendResult {
    let mut result = SendResult::default();
    let mut at = 0;
    while at < datagrams.len() {
        let chunk = &datagrams[at..(at + BATCH).min(datagrams.len())];
        let mut addrs: [MaybeUninit<libc::sockaddr_storage>; BATCH] =
            [const { MaybeUninit::uninit() }; BATCH];
        let mut iovs: [MaybeUninit<libc::iovec>; BATCH] = [const { MaybeUninit::uninit() }; BATCH];
        let mut hdrs: [MaybeUninit<libc::mmsghdr>; BATCH] =
            [const { MaybeUninit::uninit() }; BATCH];
        for (i, (dest, bytes)) in chunk.iter().enumerate() {
            let len = to_sockaddr(
                dest,
                addrs[i].write(
                    // SAFETY: plain old data, all-zero is valid.
                    unsafe { mem::zeroed() },
                ),
            );
            iovs[i].write(libc::iovec {
                iov_base: bytes.as_ptr() as *mut libc::c_void,
                iov_len: bytes.len(),
            });
            // SAFETY: plain old data, zero is "no control, no flags".
            let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
            hdr.msg_name = addrs[i].as_mut_ptr().cast();
            hdr.msg_namelen = len;
            hdr.msg_iov = iovs[i].as_mut_ptr();
            hdr.msg_iovlen = 1;
            hdrs[i].write(libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            });
        }
        // SAFETY: the first chunk.len() headers are initialised and point at initialised
        // addresses and iovecs that live until the call returns; the kernel only reads the
        // datagram bytes (the *mut in iovec is the C API's, not a licence to write).
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                hdrs.as_mut_ptr().cast(),
                chunk.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::WouldBlock {
                result.dropped += datagrams.len() - at;
                return result;
            }
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // The first datagram of the chunk was refused; skip it and carry on.
            result.failed += 1;
            at += 1;
            continue;
        }
        result.sent += n as usize;
        at += n as usize;
    }
    result
}

/// What [`send_batch`] did.
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
    let fd = socket.as_raw_fd();
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    for (force, plain) in [
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
    ] {
        // SAFETY: setsockopt reads sizeof(c_int) bytes from a live c_int.
        let forced = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                force,
                (&v as *const libc::c_int).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if forced != 0 {
            // SAFETY: as above.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    plain,
                    (&v as *const libc::c_int).cast(),
                    mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
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
        let r = send_batch(&a, &datagrams);
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
