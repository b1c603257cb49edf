//! The floor of this machine: what forwarding a packet costs at the least, so ting's own
//! figure can be read as a ratio on any machine.
//!
//! An SFU receives and decrypts each packet once, then encrypts and sends it once per
//! subscriber. The least that can cost, per forwarded packet at fan-out N, is
//!
//! ```text
//! floor(N) = seal + send + (receive + open) / N
//! ```
//!
//! with batched syscalls (`sendmmsg`/`recvmmsg` of 32 datagrams of 1200 bytes on loopback,
//! where the sender also pays the receiver's kernel work), timed in the thread's CPU time and the AEAD of SRTP (AES-GCM via
//! aws-lc-rs, as str0m uses; str0m negotiates AES-256-GCM with browsers and with ting-bench,
//! AES-128-GCM is measured as well). `scripts/floor.sh` runs this and prints floor(N).

// Benchmarks report on stdout, like criterion itself.
#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, Algorithm, LessSafeKey, Nonce, UnboundKey};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ting_server::udp::{BATCH, RecvBatch, Sender, recv_batch, set_buffer_sizes};

const SIZE: usize = 1200;

/// CPU time of the calling thread. The syscalls are timed in CPU time, not wall time: on a
/// small shared machine the sender and the draining thread preempt each other, and time
/// spent waiting for a core is not a cost of the operation.
fn thread_cpu() -> Duration {
    // SAFETY: clock_gettime writes one timespec to a live local.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A loopback socket pair whose receiving end is drained by its own thread, so the sender
/// pays what a real send costs (the receiver's kernel work included) and never finds the
/// receive buffer full.
struct Drained {
    tx: UdpSocket,
    dest: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drained {
    fn new() -> Drained {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        set_buffer_sizes(&tx, 4 << 20);
        set_buffer_sizes(&rx, 4 << 20);
        rx.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let dest = rx.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut batch = RecvBatch::default();
            while !flag.load(Ordering::Relaxed) {
                let _ = recv_batch(&rx, &mut batch);
                if batch.iter().next().is_none() {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        });
        Drained {
            tx,
            dest,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Drained {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn udp(c: &mut Criterion) {
    let mut g = c.benchmark_group("floor");
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(BATCH as u64));

    let sink = Drained::new();
    let payload = vec![0xabu8; SIZE];
    let datagrams: Vec<(SocketAddr, &[u8])> = (0..BATCH)
        .map(|_| (sink.dest, payload.as_slice()))
        .collect();
    // One message per datagram: the floor does not assume datagrams to one destination.
    let mut sender = Sender::new(false);
    g.bench_function("sendmmsg_32x1200", |b| {
        b.iter_custom(|iters| {
            let start = thread_cpu();
            for _ in 0..iters {
                black_box(sender.send(&sink.tx, &datagrams));
            }
            thread_cpu() - start
        })
    });
    drop(sink);

    // Receiving: a sender thread keeps the socket full; each iteration reads one batch.
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    set_buffer_sizes(&rx, 16 << 20);
    rx.set_nonblocking(true).unwrap();
    let dest = rx.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let feeder = std::thread::spawn(move || {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let payload = vec![0xcdu8; SIZE];
        let datagrams: Vec<(SocketAddr, &[u8])> =
            (0..BATCH).map(|_| (dest, payload.as_slice())).collect();
        let mut sender = Sender::new(false);
        while !flag.load(Ordering::Relaxed) {
            sender.send(&tx, &datagrams);
        }
    });
    let mut batch = RecvBatch::default();
    g.bench_function("recvmmsg_32x1200", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let t = thread_cpu();
                let got = recv_batch(&rx, &mut batch);
                let took = thread_cpu() - t;
                // Only full batches count; an empty socket measures nothing.
                if matches!(got, Ok(n) if n == BATCH) {
                    spent += took;
                    done += 1;
                }
            }
            spent
        })
    });
    stop.store(true, Ordering::Relaxed);
    let _ = feeder.join();
    g.finish();
}

fn aead(c: &mut Criterion) {
    let mut g = c.benchmark_group("floor");
    g.throughput(Throughput::Elements(1));
    for (name, alg, key_len) in [
        ("aes128gcm", &AES_128_GCM as &'static Algorithm, 16),
        ("aes256gcm", &AES_256_GCM, 32),
    ] {
        let key = LessSafeKey::new(UnboundKey::new(alg, &vec![7u8; key_len]).unwrap());
        let mut buf = vec![0u8; SIZE];
        let mut counter = 0u32;
        g.bench_function(format!("{name}_seal_1200"), |b| {
            b.iter(|| {
                counter = counter.wrapping_add(1);
                let mut nonce = [0u8; 12];
                nonce[8..].copy_from_slice(&counter.to_be_bytes());
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(&[0u8; 12]),
                        &mut buf,
                    )
                    .unwrap();
                black_box(tag)
            })
        });
        // Open what was sealed (a fresh copy each time: opening works in place).
        let nonce = [1u8; 12];
        let mut sealed = vec![0u8; SIZE];
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&[0u8; 12]),
                &mut sealed,
            )
            .unwrap();
        sealed.extend_from_slice(tag.as_ref());
        let mut work = sealed.clone();
        g.bench_function(format!("{name}_open_1200"), |b| {
            b.iter(|| {
                work.copy_from_slice(&sealed);
                let plain = key
                    .open_in_place(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(&[0u8; 12]),
                        &mut work,
                    )
                    .unwrap();
                black_box(plain.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, udp, aead);
criterion_main!(benches);
