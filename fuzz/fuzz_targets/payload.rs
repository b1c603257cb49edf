//! The RTP payloads the router reads (`ting_media::vp8`, `ting_media::codec`): every
//! published video packet's descriptor is parsed once, on the publisher's worker, to find
//! keyframes and frame sizes and to keep picture ids continuous across source switches.
//!
//! Input: one or more payloads separated by the byte sequence `0xff 0x00 0xff` (a
//! packet sequence for the rewriter); a payload starting `0xfe` switches the source first.
//!
//! Properties: nothing panics; the keyframe test and the descriptor parser agree; the
//! parsed fields fit their widths; the rewriter writes fields of the same widths, also
//! with frames of temporal layer 2 left out (`skip_picture`); and
//! str0m's descriptor parser, which writes the rewritten fields into forwarded packets
//! (`worker/core.rs`), reads the same fields from every payload the router parses, so
//! the patch the router asks for can always be built.

#![no_main]

use libfuzzer_sys::fuzz_target;
use str0m::rtp::Vp8Descriptor;
use ting_media::Codec;
use ting_media::codec::vp8_keyframe_start;
use ting_media::vp8::{Vp8Header, Vp8Rewriter};

fuzz_target!(|data: &[u8]| {
    let mut rewriter = Vp8Rewriter::default();
    for (seq, payload) in split(data).enumerate() {
        let payload = match payload.split_first() {
            Some((0xfe, rest)) => {
                rewriter.switch_source();
                rest
            }
            _ => payload,
        };
        for codec in [Codec::Opus, Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1] {
            let _ = codec.is_keyframe_start(payload);
        }
        let header = Vp8Header::parse(payload);
        assert_eq!(
            vp8_keyframe_start(payload),
            header.is_some_and(|h| h.keyframe),
            "{payload:02x?}"
        );
        let Some(h) = header else {
            continue;
        };
        let pid_mask = if h.long_picture_id { 0x7fff } else { 0x7f };
        assert!(h.picture_id.is_none_or(|p| p <= pid_mask));
        assert!(h.keyidx.is_none_or(|k| k <= 0x1f));
        assert!(!h.keyframe || h.start);
        if let Some((w, hh)) = h.size {
            assert!(h.keyframe && (1..=0x3fff).contains(&w) && (1..=0x3fff).contains(&hh));
        }
        assert!(h.tid.is_none_or(|t| t <= 3));
        let _ = rewriter.decided(&h);
        if h.tid == Some(2) {
            // A temporal layer a thumbnail does not get: left out, later ones move down.
            rewriter.skip_picture(&h);
            continue;
        }
        let out = rewriter.rewrite(seq as u64, &h);
        assert_eq!(out.picture_id.is_some(), h.picture_id.is_some());
        assert!(out.picture_id.is_none_or(|p| p <= pid_mask));
        assert_eq!(out.tl0picidx.is_some(), h.tl0picidx.is_some());
        assert!(out.keyidx.is_none_or(|k| k <= 0x1f));

        let d = Vp8Descriptor::parse(payload)
            .unwrap_or_else(|e| panic!("str0m refuses {payload:02x?}: {e:?}"));
        assert_eq!(d.picture_id(), h.picture_id);
        assert_eq!(d.tl0_pic_idx(), h.tl0picidx);
        assert_eq!(d.key_idx(), h.keyidx);
        assert_eq!(d.starts_keyframe(payload), h.keyframe);
        let mut patch = d.patch();
        if let Some(p) = out.picture_id {
            patch = patch.picture_id(p);
        }
        if let Some(t) = out.tl0picidx {
            patch = patch.tl0_pic_idx(t);
        }
        if let Some(k) = out.keyidx {
            patch = patch.key_idx(k);
        }
        assert!(patch.build().is_ok(), "{payload:02x?} {out:?}");
    }
});

/// The payloads of one input.
fn split(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    const SEP: [u8; 3] = [0xff, 0x00, 0xff];
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.windows(3).position(|w| w == SEP) {
            Some(i) => {
                rest = Some(&r[i + 3..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}
