//! VP8's RTP payload descriptor (RFC 7741): what the router reads, and how a slot keeps
//! its picture ids continuous when its source changes.
//!
//! A VP8 receiver tracks frames by the descriptor's PictureID, TL0PICIDX and KEYIDX as
//! well as by RTP sequence numbers. When a slot switches to another participant or another
//! simulcast layer, those numbers jump; a decoder that sees a picture id go backwards or
//! skip far ahead may treat frames as lost or reordered and stall until the next keyframe.
//! [`Vp8Rewriter`] re-bases them at each switch so the receiver sees them continue by one,
//! like the sequence numbers [`crate::rewrite::Rewriter`] keeps. When a slot leaves out a
//! temporal layer, [`Vp8Rewriter::skip_picture`] closes the holes that leaves.

use crate::rewrite::Skips;

/// The fields of a VP8 payload descriptor that matter to a forwarder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vp8Header {
    /// The packet starts a frame (S set, partition index 0).
    pub start: bool,
    /// The packet starts a keyframe.
    pub keyframe: bool,
    /// PictureID, 7 or 15 bits.
    pub picture_id: Option<u16>,
    /// Whether the PictureID field is 15 bits wide.
    pub long_picture_id: bool,
    pub tl0picidx: Option<u8>,
    /// Temporal layer index (TID), when the descriptor has one (T set).
    pub tid: Option<u8>,
    /// Layer sync (Y): the frame depends only on the base temporal layer, so a receiver
    /// that got none of the layers between can start taking this one here.
    pub layer_sync: bool,
    pub keyidx: Option<u8>,
    /// Width and height, from the keyframe header of a keyframe's first packet.
    pub size: Option<(u16, u16)>,
}

impl Vp8Header {
    /// Parses the descriptor at the start of an RTP payload. Untrusted bytes: anything
    /// truncated or malformed gives `None`.
    pub fn parse(payload: &[u8]) -> Option<Vp8Header> {
        let b0 = *payload.first()?;
        let mut h = Vp8Header {
            start: b0 & 0x10 != 0 && b0 & 0x07 == 0,
            ..Default::default()
        };
        let mut at = 1;
        if b0 & 0x80 != 0 {
            let x = *payload.get(at)?;
            at += 1;
            // TL0PICIDX without TID is malformed (RFC 7741, section 4.2), and str0m's
            // descriptor, which writes the rewritten fields, refuses it too.
            if x & 0x40 != 0 && x & 0x20 == 0 {
                return None;
            }
            if x & 0x80 != 0 {
                let p = *payload.get(at)?;
                at += 1;
                if p & 0x80 != 0 {
                    let lo = *payload.get(at)?;
                    at += 1;
                    h.picture_id = Some((u16::from(p & 0x7f) << 8) | u16::from(lo));
                    h.long_picture_id = true;
                } else {
                    h.picture_id = Some(u16::from(p));
                }
            }
            if x & 0x40 != 0 {
                h.tl0picidx = Some(*payload.get(at)?);
                at += 1;
            }
            if x & 0x30 != 0 {
                let t = *payload.get(at)?;
                at += 1;
                if x & 0x20 != 0 {
                    h.tid = Some(t >> 6);
                    h.layer_sync = t & 0x20 != 0;
                }
                if x & 0x10 != 0 {
                    h.keyidx = Some(t & 0x1f);
                }
            }
        }
        // The VP8 payload header follows. Its frame tag's bit 0 is 0 for a keyframe, whose
        // header then has a start code and the frame size (RFC 6386, section 9.1).
        let tag = *payload.get(at)?;
        if h.start && tag & 0x01 == 0 {
            h.keyframe = true;
            if let Some(k) = payload.get(at + 3..at + 10)
                && k[0..3] == [0x9d, 0x01, 0x2a]
            {
                let w = u16::from_le_bytes([k[3], k[4]]) & 0x3fff;
                let hh = u16::from_le_bytes([k[5], k[6]]) & 0x3fff;
                if w > 0 && hh > 0 {
                    h.size = Some((w, hh));
                }
            }
        }
        Some(h)
    }
}

/// The rewritten descriptor fields of one forwarded packet; `None` fields stay as they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vp8Out {
    pub picture_id: Option<u16>,
    pub tl0picidx: Option<u8>,
    pub keyidx: Option<u8>,
}

/// Keeps one outgoing stream's VP8 picture ids continuous across source switches.
#[derive(Debug, Clone, Default)]
pub struct Vp8Rewriter {
    /// Offsets for the current source; `None` until its first packet.
    base: Option<Base>,
    /// What the newest packet sent carried.
    last: Option<Last>,
    /// The newest source picture id handled (sent or skipped) since the switch, and
    /// whether it was skipped.
    newest_pid: Option<u16>,
    newest_skipped: bool,
    /// Source pictures left out since the switch ([`Vp8Rewriter::skip_picture`]).
    skips: Skips,
}

/// Whether picture id `a` comes after `b`, within a `mask`-wide space.
fn pid_newer(a: u64, b: u64, mask: u16) -> bool {
    let d = (a.wrapping_sub(b) as u16) & mask;
    d != 0 && d <= mask / 2
}

#[derive(Debug, Clone, Copy)]
struct Base {
    pid: u16,
    tl0: u8,
    keyidx: u8,
}

#[derive(Debug, Clone, Copy)]
struct Last {
    /// The source's extended sequence number of that packet, within the current base.
    seq: Option<u64>,
    pid: Option<u16>,
    tl0: Option<u8>,
    keyidx: Option<u8>,
}

impl Vp8Rewriter {
    /// The source changes; its first packet (a keyframe) re-bases the fields.
    pub fn switch_source(&mut self) {
        self.base = None;
        self.newest_pid = None;
        self.skips.clear();
        if let Some(last) = &mut self.last {
            last.seq = None;
        }
    }

    /// A frame of the current source with descriptor `h` is left out of this stream on
    /// purpose (a temporal layer the receiver does not get): the pictures after it move
    /// down by one, so the receiver sees consecutive picture ids. A VP8 receiver waits for
    /// every picture id it has not seen before it decodes a frame that may depend on it;
    /// a hole would stall it. Call for every packet of the frame; the first one counts.
    pub fn skip_picture(&mut self, h: &Vp8Header) {
        let (Some(base), Some(pid)) = (&mut self.base, h.picture_id) else {
            return;
        };
        let mask = if h.long_picture_id { 0x7fff } else { 0x7f };
        if self
            .newest_pid
            .is_some_and(|n| !pid_newer(u64::from(pid), u64::from(n), mask))
        {
            return;
        }
        base.pid = base.pid.wrapping_sub(1);
        self.newest_pid = Some(pid);
        self.newest_skipped = true;
        self.skips.push(u64::from(pid));
    }

    /// Whether the frame of `h` was already decided on: `Some(true)` if it was left out,
    /// `Some(false)` if it was sent (or is older than anything remembered as left out),
    /// `None` for a frame newer than any handled since the switch, or without a picture id.
    /// Every packet of a frame must share its frame's fate, even when packets of the next
    /// frame overtook it.
    pub fn decided(&self, h: &Vp8Header) -> Option<bool> {
        let (pid, newest) = (h.picture_id?, self.newest_pid?);
        let mask = if h.long_picture_id { 0x7fff } else { 0x7f };
        if pid == newest {
            return Some(self.newest_skipped);
        }
        if pid_newer(u64::from(pid), u64::from(newest), mask) {
            return None;
        }
        Some(self.skips.contains(u64::from(pid)))
    }

    /// Whether the newest frame handled since the switch was left out.
    pub fn newest_skipped(&self) -> bool {
        self.newest_pid.is_some() && self.newest_skipped
    }

    /// The fields to write into a packet of the current source with source sequence
    /// number `seq` and descriptor `h`.
    pub fn rewrite(&mut self, seq: u64, h: &Vp8Header) -> Vp8Out {
        let base = match self.base {
            Some(b) => b,
            None => {
                // Continue one after what was sent last; the first source passes through.
                let b = match self.last {
                    None => Base {
                        pid: 0,
                        tl0: 0,
                        keyidx: 0,
                    },
                    Some(last) => Base {
                        pid: match (last.pid, h.picture_id) {
                            (Some(out), Some(src)) => out.wrapping_add(1).wrapping_sub(src),
                            _ => 0,
                        },
                        tl0: match (last.tl0, h.tl0picidx) {
                            (Some(out), Some(src)) => out.wrapping_add(1).wrapping_sub(src),
                            _ => 0,
                        },
                        keyidx: match (last.keyidx, h.keyidx) {
                            (Some(out), Some(src)) => out.wrapping_add(1).wrapping_sub(src),
                            _ => 0,
                        },
                    },
                };
                self.base = Some(b);
                b
            }
        };
        let mask = if h.long_picture_id { 0x7fff } else { 0x7f };
        let mut pid_delta = base.pid;
        if let Some(p) = h.picture_id {
            match self.newest_pid {
                Some(n) if pid_newer(u64::from(n), u64::from(p), mask) => {
                    // Late: the pictures skipped after it do not move it.
                    let later = self
                        .skips
                        .newer_than(u64::from(p), |s, v| pid_newer(s, v, mask))
                        .unwrap_or(0);
                    pid_delta = pid_delta.wrapping_add(later as u16);
                }
                Some(n) if n == p => {}
                _ => {
                    self.newest_pid = Some(p);
                    self.newest_skipped = false;
                }
            }
        }
        let out = Vp8Out {
            picture_id: h.picture_id.map(|p| p.wrapping_add(pid_delta) & mask),
            tl0picidx: h.tl0picidx.map(|t| t.wrapping_add(base.tl0)),
            keyidx: h.keyidx.map(|k| k.wrapping_add(base.keyidx) & 0x1f),
        };
        let newest = self
            .last
            .and_then(|l| l.seq)
            .is_none_or(|last_seq| seq >= last_seq);
        if newest {
            let prev = self.last.unwrap_or(Last {
                seq: None,
                pid: None,
                tl0: None,
                keyidx: None,
            });
            self.last = Some(Last {
                seq: Some(seq),
                pid: out.picture_id.or(prev.pid),
                tl0: out.tl0picidx.or(prev.tl0),
                keyidx: out.keyidx.or(prev.keyidx),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A descriptor with X, I (15-bit), L, T and K, then a VP8 frame header.
    fn packet(start: bool, key: bool, pid: u16, tl0: u8, keyidx: u8) -> Vec<u8> {
        let mut p = vec![
            0x80 | if start { 0x10 } else { 0 },
            0xf0,
            0x80 | (pid >> 8) as u8,
            pid as u8,
            tl0,
            keyidx & 0x1f,
        ];
        p.extend_from_slice(&[if key { 0x10 } else { 0x11 }, 0x02, 0x00]);
        if key {
            p.extend_from_slice(&[0x9d, 0x01, 0x2a]);
            p.extend_from_slice(&640u16.to_le_bytes());
            p.extend_from_slice(&360u16.to_le_bytes());
        }
        p
    }

    #[test]
    fn parses_the_fields_and_the_keyframe_size() {
        let h = Vp8Header::parse(&packet(true, true, 0x1234, 7, 3)).unwrap();
        assert!(h.start && h.keyframe);
        assert_eq!(h.picture_id, Some(0x1234));
        assert!(h.long_picture_id);
        assert_eq!((h.tl0picidx, h.keyidx), (Some(7), Some(3)));
        assert_eq!(h.size, Some((640, 360)));
        let d = Vp8Header::parse(&packet(true, false, 5, 7, 3)).unwrap();
        assert!(d.start && !d.keyframe && d.size.is_none());
        let c = Vp8Header::parse(&packet(false, true, 5, 7, 3)).unwrap();
        assert!(!c.start && !c.keyframe);
        assert_eq!((h.tid, h.layer_sync), (Some(0), false));
        // T alone: temporal layer 2 with layer sync.
        let t = Vp8Header::parse(&[0x90, 0x20, 0xa0, 0x11, 0, 0]).unwrap();
        assert_eq!((t.tid, t.layer_sync, t.picture_id), (Some(2), true, None));
        // L (TL0PICIDX) without T (TID) is malformed.
        assert_eq!(Vp8Header::parse(&[0x90, 0x40, 0x07, 0x10, 0, 0]), None);
        // Short picture id, no extensions beyond I.
        let s = Vp8Header::parse(&[0x90, 0x80, 0x05, 0x10, 0, 0]).unwrap();
        assert_eq!((s.picture_id, s.long_picture_id), (Some(5), false));
        assert!(
            s.keyframe && s.size.is_none(),
            "no start code: size unknown"
        );
    }

    #[test]
    fn truncated_descriptors_are_refused() {
        let full = packet(true, true, 0x1234, 7, 3);
        for len in 0..7 {
            assert_eq!(Vp8Header::parse(&full[..len]), None, "length {len}");
        }
    }

    #[test]
    fn a_switch_continues_the_picture_ids() {
        let mut r = Vp8Rewriter::default();
        let a = Vp8Header::parse(&packet(true, true, 100, 9, 1)).unwrap();
        let out = r.rewrite(1, &a);
        assert_eq!(out.picture_id, Some(100), "the first source passes through");
        let a2 = Vp8Header::parse(&packet(true, false, 101, 9, 1)).unwrap();
        assert_eq!(r.rewrite(2, &a2).picture_id, Some(101));
        // Another source, far away in every field.
        r.switch_source();
        let b = Vp8Header::parse(&packet(true, true, 30_000, 200, 30)).unwrap();
        let out = r.rewrite(5000, &b);
        assert_eq!(
            (out.picture_id, out.tl0picidx, out.keyidx),
            (Some(102), Some(10), Some(2))
        );
        let b2 = Vp8Header::parse(&packet(true, false, 30_001, 200, 30)).unwrap();
        assert_eq!(r.rewrite(5001, &b2).picture_id, Some(103));
        // A late packet of the new source keeps its place without moving "last".
        let b0 = Vp8Header::parse(&packet(false, false, 30_000, 200, 30)).unwrap();
        assert_eq!(r.rewrite(5000, &b0).picture_id, Some(102));
        r.switch_source();
        let c = Vp8Header::parse(&packet(true, true, 7, 0, 0)).unwrap();
        assert_eq!(r.rewrite(1, &c).picture_id, Some(104));
    }

    #[test]
    fn tl0picidx_and_keyidx_keep_the_source_steps_through_skips_and_continue_at_a_switch() {
        let mut r = Vp8Rewriter::default();
        let fields = |out: Vp8Out| (out.picture_id, out.tl0picidx, out.keyidx);
        let pic = |pid: u16, tl0: u8, keyidx: u8| {
            Vp8Header::parse(&packet(true, false, pid, tl0, keyidx)).unwrap()
        };
        let a = Vp8Header::parse(&packet(true, true, 100, 9, 1)).unwrap();
        assert_eq!(fields(r.rewrite(1, &a)), (Some(100), Some(9), Some(1)));
        // Pictures of the upper temporal layers left out move the picture ids only: the
        // TL0PICIDX of what follows is the source's, which did not count them.
        r.skip_picture(&pic(101, 9, 1));
        assert_eq!(
            fields(r.rewrite(3, &pic(102, 9, 1))),
            (Some(101), Some(9), Some(1))
        );
        r.skip_picture(&pic(103, 9, 1));
        assert_eq!(
            fields(r.rewrite(5, &pic(104, 10, 1))),
            (Some(102), Some(10), Some(1))
        );
        // Another source: its keyframe continues both one up, and its own steps follow,
        // KEYIDX wrapping at 32.
        r.switch_source();
        let b = Vp8Header::parse(&packet(true, true, 7000, 200, 30)).unwrap();
        assert_eq!(fields(r.rewrite(900, &b)), (Some(103), Some(11), Some(2)));
        assert_eq!(
            fields(r.rewrite(901, &pic(7001, 201, 30))),
            (Some(104), Some(12), Some(2))
        );
        let b_key = Vp8Header::parse(&packet(true, true, 7002, 202, 31)).unwrap();
        assert_eq!(
            fields(r.rewrite(902, &b_key)),
            (Some(105), Some(13), Some(3))
        );
        let b_key = Vp8Header::parse(&packet(true, true, 7003, 203, 0)).unwrap();
        assert_eq!(
            fields(r.rewrite(903, &b_key)),
            (Some(106), Some(14), Some(4))
        );
    }

    #[test]
    fn picture_ids_wrap_within_their_width() {
        let mut r = Vp8Rewriter::default();
        let a = Vp8Header::parse(&packet(true, true, 0x7fff, 255, 31)).unwrap();
        r.rewrite(1, &a);
        r.switch_source();
        let b = Vp8Header::parse(&packet(true, true, 10, 3, 4)).unwrap();
        let out = r.rewrite(1, &b);
        assert_eq!(
            (out.picture_id, out.tl0picidx, out.keyidx),
            (Some(0), Some(0), Some(0))
        );
    }

    #[test]
    fn skipped_pictures_leave_no_hole() {
        let mut r = Vp8Rewriter::default();
        let pic =
            |start: bool, pid: u16| Vp8Header::parse(&packet(start, false, pid, 1, 0)).unwrap();
        r.rewrite(
            1,
            &Vp8Header::parse(&packet(true, true, 0x7ffe, 1, 0)).unwrap(),
        );
        // Picture 0x7fff (two packets) is left out; 0 follows as 0x7fff.
        r.skip_picture(&pic(true, 0x7fff));
        r.skip_picture(&pic(false, 0x7fff));
        assert_eq!(r.rewrite(4, &pic(true, 0)).picture_id, Some(0x7fff));
        r.skip_picture(&pic(true, 1));
        assert_eq!(r.rewrite(6, &pic(true, 2)).picture_id, Some(0));
        // A late packet of picture 0 keeps its number.
        assert_eq!(r.rewrite(5, &pic(false, 0)).picture_id, Some(0x7fff));
        // Before the source's first packet there is nothing to move.
        r.switch_source();
        r.skip_picture(&pic(true, 500));
        let out = r.rewrite(
            1,
            &Vp8Header::parse(&packet(true, true, 501, 1, 0)).unwrap(),
        );
        assert_eq!(out.picture_id, Some(1));
    }
}
