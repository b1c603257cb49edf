//! Codec knowledge the router needs: which packet starts a keyframe.
//!
//! Only the RTP payload descriptor and the first bytes of the codec payload are read, once
//! per received packet (on the publisher's worker), never per subscriber. Every function
//! here takes untrusted bytes and answers `false` for anything it cannot parse.

/// The codecs ting forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Opus,
    Vp8,
    Vp9,
    H264,
    Av1,
}

impl Codec {
    /// RTP clock rate: 48 kHz for Opus, 90 kHz for video.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Opus => 48_000,
            _ => 90_000,
        }
    }

    /// Whether `payload` (RTP payload, without the RTP header) is the first packet of a
    /// keyframe: from it on, a decoder can start.
    pub fn is_keyframe_start(self, payload: &[u8]) -> bool {
        match self {
            Codec::Opus => false,
            Codec::Vp8 => vp8_keyframe_start(payload),
            Codec::Vp9 => vp9_keyframe_start(payload),
            Codec::H264 => h264_keyframe_start(payload),
            Codec::Av1 => av1_keyframe_start(payload),
        }
    }
}

/// VP8 (RFC 7741): the payload descriptor's S bit with partition index 0 marks the start of
/// a frame; bit 0 of the first byte of the VP8 payload header is 0 for a keyframe.
pub fn vp8_keyframe_start(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else {
        return false;
    };
    let extended = b0 & 0x80 != 0;
    let start = b0 & 0x10 != 0;
    let partition = b0 & 0x07;
    if !start || partition != 0 {
        return false;
    }
    let mut at = 1;
    if extended {
        let Some(&x) = payload.get(at) else {
            return false;
        };
        at += 1;
        if x & 0x40 != 0 && x & 0x20 == 0 {
            // TL0PICIDX without TID: malformed (RFC 7741, section 4.2).
            return false;
        }
        if x & 0x80 != 0 {
            // PictureID, 7 or 15 bits.
            let Some(&pid) = payload.get(at) else {
                return false;
            };
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            at += 1; // TID/Y/KEYIDX
        }
    }
    match payload.get(at) {
        Some(&h) => h & 0x01 == 0,
        None => false,
    }
}

/// VP9 (RFC 9628 payload descriptor): B (start of frame) set, P (inter-picture predicted)
/// clear, and for spatial layering only the base layer (SID 0) starts a keyframe.
pub fn vp9_keyframe_start(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else {
        return false;
    };
    let picture_id = b0 & 0x80 != 0;
    let inter_predicted = b0 & 0x40 != 0;
    let layer_indices = b0 & 0x20 != 0;
    let flexible = b0 & 0x10 != 0;
    let begin = b0 & 0x08 != 0;
    if inter_predicted || !begin {
        return false;
    }
    if !layer_indices {
        return true;
    }
    let mut at = 1;
    if picture_id {
        let Some(&pid) = payload.get(at) else {
            return false;
        };
        at += if pid & 0x80 != 0 { 2 } else { 1 };
    }
    let Some(&layers) = payload.get(at) else {
        return false;
    };
    let _ = flexible;
    // SID is bits 3..1 of the layer indices octet.
    (layers >> 1) & 0x07 == 0
}

/// H.264 (RFC 6184): an IDR slice (type 5) or a parameter set (SPS 7) that starts the
/// access unit, alone, in a STAP-A aggregate, or as the first fragment of an FU-A.
pub fn h264_keyframe_start(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else {
        return false;
    };
    match b0 & 0x1f {
        5 | 7 => true,
        24 => {
            // STAP-A: 16-bit size, then a NAL unit, repeated.
            let mut at = 1;
            while at + 2 < payload.len() {
                let size = u16::from_be_bytes([payload[at], payload[at + 1]]) as usize;
                let Some(&nal) = payload.get(at + 2) else {
                    return false;
                };
                if matches!(nal & 0x1f, 5 | 7) {
                    return true;
                }
                at += 2 + size;
            }
            false
        }
        28 => {
            // FU-A: start bit and the fragmented NAL type.
            let Some(&fu) = payload.get(1) else {
                return false;
            };
            fu & 0x80 != 0 && matches!(fu & 0x1f, 5 | 7)
        }
        _ => false,
    }
}

/// AV1 (RTP payload format for AV1, section 4.4): the aggregation header's N bit marks the
/// first packet of a coded video sequence, which starts with a keyframe; Z clear means the
/// packet does not continue an OBU from the previous one.
pub fn av1_keyframe_start(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else {
        return false;
    };
    let continues = b0 & 0x80 != 0;
    let new_sequence = b0 & 0x08 != 0;
    new_sequence && !continues
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframe_and_delta_frames() {
        // S=1, PID=0, no extension; VP8 header byte with P=0 (keyframe).
        assert!(vp8_keyframe_start(&[0x10, 0x00, 0x9d, 0x01, 0x2a]));
        // Same but P=1: delta frame.
        assert!(!vp8_keyframe_start(&[0x10, 0x01, 0x00]));
        // Not the start of a frame.
        assert!(!vp8_keyframe_start(&[0x00, 0x00]));
        // Extended: X=1, I=1 with 15-bit picture id, L=1, T=1; then the VP8 header.
        assert!(vp8_keyframe_start(&[
            0x90, 0xe0, 0x81, 0x23, 0x05, 0x20, 0x10
        ]));
        assert!(!vp8_keyframe_start(&[
            0x90, 0xe0, 0x81, 0x23, 0x05, 0x20, 0x11
        ]));
        // L without T is malformed.
        assert!(!vp8_keyframe_start(&[0x90, 0x40, 0x05, 0x10]));
        // Truncated descriptors are not keyframes and do not panic.
        for len in 0..7 {
            assert!(!vp8_keyframe_start(
                &[0x90, 0xe0, 0x81, 0x23, 0x05, 0x20][..len]
            ));
        }
    }

    #[test]
    fn h264_forms() {
        assert!(h264_keyframe_start(&[0x65, 0x88]));
        assert!(h264_keyframe_start(&[0x67, 0x42]));
        assert!(!h264_keyframe_start(&[0x41, 0x9a]));
        // STAP-A with SPS inside.
        assert!(h264_keyframe_start(&[0x78, 0x00, 0x02, 0x67, 0x42]));
        // STAP-A with a truncated size field.
        assert!(!h264_keyframe_start(&[0x78, 0x00]));
        // FU-A start of IDR, FU-A middle of IDR.
        assert!(h264_keyframe_start(&[0x7c, 0x85]));
        assert!(!h264_keyframe_start(&[0x7c, 0x05]));
    }

    #[test]
    fn vp9_and_av1() {
        assert!(vp9_keyframe_start(&[0x08]));
        assert!(!vp9_keyframe_start(&[0x48]));
        assert!(!vp9_keyframe_start(&[0x00]));
        // L=1, I=1 short picture id, SID=1: not the base layer.
        assert!(!vp9_keyframe_start(&[0xa8, 0x01, 0x02]));
        assert!(vp9_keyframe_start(&[0xa8, 0x01, 0x00]));
        assert!(av1_keyframe_start(&[0x08]));
        assert!(!av1_keyframe_start(&[0x88]));
        assert!(!av1_keyframe_start(&[0x10]));
        assert!(!Codec::Opus.is_keyframe_start(&[0x08]));
    }
}
