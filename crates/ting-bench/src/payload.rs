//! Synthetic media payloads that receivers can check byte for byte and time.
//!
//! Every packet a simulated participant sends carries, after its codec prefix, a [`Stamp`]:
//! who sent it, on which stream and layer, its running number and when it was sent (wall
//! clock, microseconds; sender and receiver share the machine's clock, so the difference is
//! the one-way latency). The rest of the payload is a filler derived from the running number,
//! so a receiver can tell whether the bytes arrived unchanged without keeping a copy.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MAGIC: [u8; 2] = *b"tb";

/// Which stream of its sender a packet belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    Audio = 0,
    Video = 1,
    Screen = 2,
}

impl StreamKind {
    fn from_u8(v: u8) -> Option<StreamKind> {
        Some(match v {
            0 => StreamKind::Audio,
            1 => StreamKind::Video,
            2 => StreamKind::Screen,
            _ => return None,
        })
    }
}

/// What every payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub sender: u32,
    pub kind: StreamKind,
    pub layer: u8,
    /// The frame's temporal layer, for a stream that sends temporal layers; its
    /// `counter` then holds [`temporal_counters`].
    pub tid: Option<u8>,
    pub counter: u64,
    pub sent_us: u64,
}

/// The running numbers of a packet of a stream with temporal layers, packed into a
/// stamp's counter: how many packets the stream sent before it in frames of temporal
/// layer at most 0, at most 1 (16 bits each, wrapping) and in all (32 bits, wrapping). A
/// receiver that gets only some temporal layers then still finds each step it receives
/// is one packet in the count of the layers it gets.
pub fn temporal_counters(upto: [u64; 3]) -> u64 {
    ((upto[0] & 0xffff) << 48) | ((upto[1] & 0xffff) << 32) | (upto[2] & 0xffff_ffff)
}

/// How many packets the sender sent from the stamp `a` to the next one `b` of the same
/// stream, counting only the temporal layers both belong to (a receiver of the lower
/// layers only never sees the frames between in the higher ones); `None` if `b` is not
/// after `a`.
pub fn counter_step(a: &Stamp, b: &Stamp) -> Option<u64> {
    let step = match (a.tid, b.tid) {
        (Some(x), Some(y)) => match x.max(y) {
            0 => u64::from(((b.counter >> 48) as u16).wrapping_sub((a.counter >> 48) as u16)),
            1 => u64::from(((b.counter >> 32) as u16).wrapping_sub((a.counter >> 32) as u16)),
            _ => u64::from((b.counter as u32).wrapping_sub(a.counter as u32)),
        },
        (None, None) => b.counter.checked_sub(a.counter)?,
        _ => return None,
    };
    (step > 0 && step < 1 << 15).then_some(step)
}

/// Encoded stamp length.
pub const STAMP_LEN: usize = 2 + 4 + 1 + 1 + 8 + 8;

/// Length of the VP8 payload descriptor every video packet starts with: X, I (15-bit
/// picture id), L (TL0PICIDX) and T (TID) set.
pub const VP8_DESCRIPTOR_LEN: usize = 6;
/// The VP8 payload header that follows the descriptor in the first packet of a frame
/// (RFC 6386 section 9.1): 3 bytes of frame tag, and for a keyframe the start code and the
/// frame size, 10 bytes in all. Receivers and servers that inspect keyframes (Janus does,
/// before switching simulcast layers) see a real one.
const KEYFRAME_HEADER_LEN: usize = 10;
const INTERFRAME_HEADER_LEN: usize = 3;

/// The picture size a simulated camera layer claims in its keyframes: 1280x720 for the top
/// layer, each lower one half the size, as a browser's simulcast sends from a 720p camera.
pub fn layer_size(layer: u8, layers: u8) -> (u16, u16) {
    let down = layers.saturating_sub(1).saturating_sub(layer).min(4);
    (1280 >> down, 720 >> down)
}

/// The VP8 payload descriptor and, at the start of a frame, the VP8 payload header (with
/// `size` in a keyframe's header).
pub fn vp8_prefix(
    start_of_frame: bool,
    keyframe: bool,
    picture_id: u16,
    tl0: u8,
    (tid, sync): (u8, bool),
    size: (u16, u16),
) -> Vec<u8> {
    let s = if start_of_frame { 0x10 } else { 0x00 };
    let mut p = vec![
        0x80 | s,                                // X, S, PID 0
        0x80 | 0x40 | 0x20,                      // I, L, T
        0x80 | ((picture_id >> 8) as u8 & 0x7f), // M: 15-bit picture id
        picture_id as u8,
        tl0,
        (tid << 6) | if sync { 0x20 } else { 0 }, // TID, Y, KEYIDX 0
    ];
    if start_of_frame {
        // Frame tag: P (0 = keyframe), version 0, show_frame 1, first partition size 100.
        let partition: u32 = 100;
        let tag = u32::from(!keyframe) | (1 << 4) | (partition << 5);
        p.extend_from_slice(&tag.to_le_bytes()[..3]);
        if keyframe {
            p.extend_from_slice(&[0x9d, 0x01, 0x2a]);
            p.extend_from_slice(&size.0.to_le_bytes());
            p.extend_from_slice(&size.1.to_le_bytes());
        }
    }
    p
}

/// How many bytes of VP8 descriptor and header precede the stamp in a video payload.
pub fn vp8_prefix_len(payload: &[u8]) -> usize {
    let start = payload.first().is_some_and(|b| b & 0x10 != 0);
    if !start {
        return VP8_DESCRIPTOR_LEN;
    }
    let keyframe = payload
        .get(VP8_DESCRIPTOR_LEN)
        .is_some_and(|b| b & 0x01 == 0);
    VP8_DESCRIPTOR_LEN
        + if keyframe {
            KEYFRAME_HEADER_LEN
        } else {
            INTERFRAME_HEADER_LEN
        }
}

/// The Opus TOC byte an end-to-end encrypted audio payload keeps in clear (a 20 ms
/// CELT fullband frame, as browsers send).
pub const OPUS_TOC: u8 = 0xfc;

/// The authentication tag an end-to-end encrypted frame ends with (AES-GCM, 16 bytes).
pub const E2EE_TAG_LEN: usize = 16;

/// The SFrame header (RFC 9605 section 4.3) a browser puts after a frame's clear prefix
/// (`docs/e2ee.md`): a config byte, then the key id and counter as minimal big-endian
/// integers, inline in the config byte when below 8.
pub fn e2ee_header(kid: u64, ctr: u64) -> Vec<u8> {
    fn part(v: u64) -> (u8, Vec<u8>) {
        if v < 8 {
            return (v as u8, Vec::new());
        }
        let bytes = v.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let n = bytes.len() - skip;
        (0x08 | (n as u8 - 1), bytes[skip..].to_vec())
    }
    let (k, kid_bytes) = part(kid);
    let (c, ctr_bytes) = part(ctr);
    let mut h = vec![(k << 4) | c];
    h.extend(kid_bytes);
    h.extend(ctr_bytes);
    h
}

/// The length of the SFrame header whose config byte is `config`.
pub fn e2ee_header_len(config: u8) -> usize {
    let len = |bits: u8| {
        if bits & 0x08 != 0 {
            usize::from(bits & 0x07) + 1
        } else {
            0
        }
    };
    1 + len(config >> 4) + len(config & 0x0f)
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// One-way latency in µs of a packet stamped at `sent_us` (wall clock), read at `now_us`
/// after it `waited` in the receiver's socket: to its arrival, not to its reading.
pub fn one_way_us(sent_us: u64, now_us: u64, waited: Duration) -> u64 {
    let waited = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
    now_us.saturating_sub(sent_us).saturating_sub(waited)
}

fn filler(counter: u64, i: usize) -> u8 {
    (counter as u8)
        .wrapping_mul(31)
        .wrapping_add((i as u8).wrapping_mul(7))
        ^ (i >> 8) as u8
}

/// Writes `prefix`, the stamp and filler into `buf` up to `len` bytes (at least the prefix
/// and stamp).
pub fn write(buf: &mut Vec<u8>, prefix: &[u8], stamp: &Stamp, len: usize) {
    buf.clear();
    buf.extend_from_slice(prefix);
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&stamp.sender.to_be_bytes());
    buf.push(stamp.kind as u8);
    buf.push((stamp.layer & 0x0f) | (stamp.tid.map_or(0, |t| t.min(14) + 1) << 4));
    buf.extend_from_slice(&stamp.counter.to_be_bytes());
    buf.extend_from_slice(&stamp.sent_us.to_be_bytes());
    let start = buf.len();
    let len = len.max(start);
    buf.extend((start..len).map(|i| filler(stamp.counter, i)));
}

/// Why a payload is not what its sender wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload too short for a stamp")]
    Short,
    #[error("payload has no stamp")]
    NoStamp,
    #[error("payload byte {0} differs from what was sent")]
    Corrupt(usize),
}

/// Reads the stamp after `prefix_len` bytes; with `check_all`, also checks every filler byte.
pub fn read(payload: &[u8], prefix_len: usize, check_all: bool) -> Result<Stamp, PayloadError> {
    let s = payload
        .get(prefix_len..prefix_len + STAMP_LEN)
        .ok_or(PayloadError::Short)?;
    if s[0..2] != MAGIC {
        return Err(PayloadError::NoStamp);
    }
    let u32_at = |i: usize| u32::from_be_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&s[i..i + 8]);
        u64::from_be_bytes(b)
    };
    let stamp = Stamp {
        sender: u32_at(2),
        kind: StreamKind::from_u8(s[6]).ok_or(PayloadError::NoStamp)?,
        layer: s[7] & 0x0f,
        tid: (s[7] >> 4).checked_sub(1),
        counter: u64_at(8),
        sent_us: u64_at(16),
    };
    if check_all {
        let start = prefix_len + STAMP_LEN;
        if let Some(i) = (start..payload.len()).find(|&i| payload[i] != filler(stamp.counter, i)) {
            return Err(PayloadError::Corrupt(i));
        }
    }
    Ok(stamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_way_latency_ends_at_arrival_not_at_reading() {
        // Sent at 1.000 s, read at 1.060 s after 50 ms in the socket: 10 ms on the way.
        let ms = Duration::from_millis;
        assert_eq!(one_way_us(1_000_000, 1_060_000, ms(50)), 10_000);
        assert_eq!(one_way_us(1_000_000, 1_060_000, ms(0)), 60_000);
        // Clocks that disagree by more than the flight clamp at zero, not wrap.
        assert_eq!(one_way_us(1_000_000, 1_010_000, ms(50)), 0);
        assert_eq!(one_way_us(2_000_000, 1_000_000, ms(0)), 0);
        assert_eq!(one_way_us(0, 5, Duration::MAX), 0);
    }

    #[test]
    fn e2ee_headers_follow_rfc_9605() {
        assert_eq!(e2ee_header(5, 3), vec![0x53]);
        assert_eq!(e2ee_header(0x1234, 0), vec![0x90, 0x12, 0x34]);
        assert_eq!(
            e2ee_header(7, 0x0001_0203_0405),
            vec![0x7c, 0x01, 0x02, 0x03, 0x04, 0x05]
        );
        let big = e2ee_header(u64::MAX, 8);
        assert_eq!(big[0], 0xf8);
        assert_eq!(big.len(), 1 + 8 + 1);
        for (kid, ctr) in [(0, 0), (9, 300), (1 << 40, 1 << 20), (u64::MAX, u64::MAX)] {
            let h = e2ee_header(kid, ctr);
            assert_eq!(e2ee_header_len(h[0]), h.len(), "kid {kid} ctr {ctr}");
        }
    }

    #[test]
    fn round_trip_and_corruption() {
        let stamp = Stamp {
            sender: 7,
            kind: StreamKind::Video,
            layer: 2,
            tid: Some(1),
            counter: 123_456,
            sent_us: 99,
        };
        let mut buf = Vec::new();
        let prefix = vp8_prefix(true, true, 300, 4, (0, false), (1280, 720));
        write(&mut buf, &prefix, &stamp, 1100);
        assert_eq!(buf.len(), 1100);
        let at = vp8_prefix_len(&buf);
        assert_eq!(at, 16);
        assert_eq!(read(&buf, at, true), Ok(stamp));
        buf[900] ^= 1;
        assert_eq!(read(&buf, at, true), Err(PayloadError::Corrupt(900)));
        assert_eq!(read(&buf, at, false), Ok(stamp));
        assert_eq!(read(&buf[..20], at, false), Err(PayloadError::Short));
        assert_eq!(read(&[0u8; 64], 0, false), Err(PayloadError::NoStamp));
    }

    #[test]
    fn steps_count_only_the_temporal_layers_both_packets_are_in() {
        let at = |tid: Option<u8>, counter: u64| Stamp {
            sender: 1,
            kind: StreamKind::Video,
            layer: 0,
            tid,
            counter,
            sent_us: 0,
        };
        // Frames 0 (one packet), 2, 1, 2, 0: a packet of each, counted before it.
        let t0 = at(Some(0), temporal_counters([0, 0, 0]));
        let t2 = at(Some(2), temporal_counters([1, 1, 1]));
        let t1 = at(Some(1), temporal_counters([1, 1, 2]));
        let t0b = at(Some(0), temporal_counters([1, 2, 4]));
        // Everything received: one step each.
        assert_eq!(counter_step(&t0, &t2), Some(1));
        assert_eq!(counter_step(&t2, &t1), Some(1));
        // Layers 0 and 1 only: 0 -> 1 is one step, 1 -> 0 one step.
        assert_eq!(counter_step(&t0, &t1), Some(1));
        assert_eq!(counter_step(&t1, &t0b), Some(1));
        // Layer 0 only: one step from 0 to the next 0.
        assert_eq!(counter_step(&t0, &t0b), Some(1));
        // The layer-2 packet between 1 and the next 0 lost on the way: two steps.
        let t2b = at(Some(2), temporal_counters([1, 2, 3]));
        assert_eq!(counter_step(&t2b, &t0b), Some(1));
        assert_eq!(counter_step(&t2, &t0b), Some(3));
        // Plain streams: plain counters; never backwards; never mixed.
        assert_eq!(counter_step(&at(None, 5), &at(None, 7)), Some(2));
        assert_eq!(counter_step(&at(None, 7), &at(None, 5)), None);
        assert_eq!(counter_step(&at(None, 5), &t0), None);
        // Wrapping within the packed widths.
        let a = at(Some(0), temporal_counters([0xffff, 0xffff, 0xffff_ffff]));
        let b = at(
            Some(0),
            temporal_counters([0x1_0000, 0x1_0000, 0x1_0000_0000]),
        );
        assert_eq!(counter_step(&a, &b), Some(1));
        // Round trip through a payload keeps the layer and the temporal layer.
        let mut buf = Vec::new();
        write(&mut buf, &[], &t1, 64);
        assert_eq!(read(&buf, 0, true), Ok(t1));
    }

    #[test]
    fn vp8_prefix_is_a_real_vp8_frame_start() {
        let key = vp8_prefix(true, true, 1, 0, (0, false), (1280, 720));
        assert_eq!(key.len(), 16);
        assert_eq!(key[6] & 0x01, 0, "P bit clear: keyframe");
        assert_eq!(&key[9..12], &[0x9d, 0x01, 0x2a], "VP8 start code");
        assert_eq!(u16::from_le_bytes([key[12], key[13]]), 1280);
        assert_eq!(u16::from_le_bytes([key[14], key[15]]), 720);
        let delta = vp8_prefix(true, false, 1, 0, (0, false), (1280, 720));
        assert_eq!((delta.len(), delta[6] & 0x01), (9, 1));
        let cont = vp8_prefix(false, true, 1, 0, (0, false), (1280, 720));
        assert_eq!((cont.len(), cont[0] & 0x10), (6, 0));
        for p in [&key, &delta, &cont] {
            let mut buf = p.clone();
            buf.extend_from_slice(&[0; 40]);
            assert_eq!(vp8_prefix_len(&buf), p.len());
        }
        assert_eq!(layer_size(0, 3), (320, 180));
        assert_eq!(layer_size(2, 3), (1280, 720));
        assert_eq!(layer_size(0, 1), (1280, 720));
        // 15-bit picture id with the M bit.
        let p = vp8_prefix(true, false, 0x1234, 0, (0, false), (1280, 720));
        assert_eq!((p[2], p[3]), (0x80 | 0x12, 0x34));
    }
}
