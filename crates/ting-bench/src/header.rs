//! The clear part of an SRTP packet: what a receiver can read without decrypting it.
//!
//! SRTP encrypts the payload only; the RTP header and its extensions stay readable
//! (RFC 3711). A simulated participant reads them for every packet it receives and hands
//! them to its connection in a batch (`str0m::Rtc::handle_rtp_headers`), so loss and the
//! transport-wide feedback are true for every packet while only a sample is decrypted.

use str0m::media::Pt;
use str0m::rtp::Ssrc;

/// The fields of an RTP header that accounting for a packet needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClearHeader {
    pub ssrc: Ssrc,
    pub pt: Pt,
    pub seq: u16,
    pub timestamp: u32,
    /// The transport-wide sequence number (the extension with the id asked for).
    pub transport_cc: Option<u16>,
    /// The header's length, its CSRCs and extensions included.
    pub len: usize,
}

impl ClearHeader {
    /// Reads the header of an RTP datagram, with `twcc_id` the extension id of the
    /// transport-wide sequence number. `None` for anything that is not plain RTP media with
    /// a well-formed header: RTCP, padding (probes carry it), a truncated header or
    /// extension block. Such datagrams take the full receive path, which decides.
    pub fn read(data: &[u8], twcc_id: Option<u8>) -> Option<ClearHeader> {
        let b0 = *data.first()?;
        let b1 = *data.get(1)?;
        if data.len() < 12 || b0 >> 6 != 2 || b0 & 0x20 != 0 || (192..=223).contains(&b1) {
            return None;
        }
        let be16 = |at: usize| Some(u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]));
        let seq = be16(2)?;
        let timestamp = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
        let ssrc = Ssrc::from(u32::from_be_bytes([data[8], data[9], data[10], data[11]]));
        let mut len = 12 + 4 * usize::from(b0 & 0x0f);
        let mut transport_cc = None;
        if b0 & 0x10 != 0 {
            let profile = be16(len)?;
            let end = len + 4 + 4 * usize::from(be16(len + 2)?);
            let block = data.get(len + 4..end)?;
            let id = twcc_id.filter(|id| (1..=14).contains(id));
            transport_cc = match (profile, id) {
                (0xbede, Some(id)) => one_byte(block, id),
                (p, Some(id)) if p & 0xfff0 == 0x1000 => two_byte(block, id),
                _ => None,
            };
            len = end;
        }
        if len > data.len() {
            return None;
        }
        Some(ClearHeader {
            ssrc,
            pt: Pt::from(b1 & 0x7f),
            seq,
            timestamp,
            transport_cc,
            len,
        })
    }
}

/// The 2-byte value of extension `id` in a one-byte-header block (RFC 8285 §4.2).
fn one_byte(block: &[u8], id: u8) -> Option<u16> {
    let mut i = 0;
    while let Some(&b) = block.get(i) {
        if b == 0 {
            i += 1; // padding
            continue;
        }
        let (eid, n) = (b >> 4, usize::from(b & 0x0f) + 1);
        if eid == 15 {
            return None;
        }
        if eid == id {
            return (n == 2)
                .then(|| Some(u16::from_be_bytes([*block.get(i + 1)?, *block.get(i + 2)?])))?;
        }
        i += 1 + n;
    }
    None
}

/// The 2-byte value of extension `id` in a two-byte-header block (RFC 8285 §4.3).
fn two_byte(block: &[u8], id: u8) -> Option<u16> {
    let mut i = 0;
    while let Some(&eid) = block.get(i) {
        if eid == 0 {
            i += 1; // padding
            continue;
        }
        let n = usize::from(*block.get(i + 1)?);
        if eid == id {
            return (n == 2)
                .then(|| Some(u16::from_be_bytes([*block.get(i + 2)?, *block.get(i + 3)?])))?;
        }
        i += 2 + n;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(first: u8, ext: &[u8]) -> Vec<u8> {
        let mut d = vec![first, 96, 0x12, 0x34, 0, 0, 0x0b, 0xb8, 0, 0, 0x04, 0xd2];
        d.extend(ext);
        d.extend([9; 40]);
        d
    }

    #[test]
    fn reads_the_fields_and_the_transport_wide_number() {
        // One-byte form: audio level (id 1, one byte), padding, transport-cc (id 3).
        let d = packet(
            0x90,
            &[0xbe, 0xde, 0, 2, 0x10, 0x7f, 0, 0x31, 0xab, 0xcd, 0, 0],
        );
        let h = ClearHeader::read(&d, Some(3)).unwrap();
        assert_eq!(h.ssrc, Ssrc::from(1234));
        assert_eq!(*h.pt, 96);
        assert_eq!(h.seq, 0x1234);
        assert_eq!(h.timestamp, 3000);
        assert_eq!(h.transport_cc, Some(0xabcd));
        assert_eq!(h.len, 24);
        // Another id than the one negotiated is not taken for it.
        assert_eq!(ClearHeader::read(&d, Some(1)).unwrap().transport_cc, None);
        assert_eq!(ClearHeader::read(&d, None).unwrap().transport_cc, None);

        // Two-byte form, after a CSRC.
        let mut ext = vec![0, 0, 0, 7];
        ext.extend([0x10, 0x00, 0, 2, 5, 1, 0xee, 3, 2, 0x00, 0x07, 0]);
        let d = packet(0x91, &ext);
        let h = ClearHeader::read(&d, Some(3)).unwrap();
        assert_eq!(h.transport_cc, Some(7));
        assert_eq!(h.len, 28);

        // No extension at all.
        let h = ClearHeader::read(&packet(0x80, &[]), Some(3)).unwrap();
        assert_eq!((h.transport_cc, h.len), (None, 12));
    }

    #[test]
    fn refuses_what_is_not_plain_media_and_never_reads_past_the_end() {
        let good = packet(0x90, &[0xbe, 0xde, 0, 1, 0x31, 0xab, 0xcd, 0]);
        // Padding (probes), RTCP, another version.
        assert!(ClearHeader::read(&packet(0xb0, &[]), Some(3)).is_none());
        let mut rtcp = good.clone();
        rtcp[1] = 200;
        assert!(ClearHeader::read(&rtcp, Some(3)).is_none());
        assert!(ClearHeader::read(&packet(0x50, &[]), Some(3)).is_none());
        // An extension block longer than the datagram.
        let long = packet(0x90, &[0xbe, 0xde, 0x40, 0x00]);
        assert!(ClearHeader::read(&long, Some(3)).is_none());
        // Every truncation of a good packet: a result or None, never a panic, and never a
        // header longer than what was read.
        for n in 0..good.len() {
            if let Some(h) = ClearHeader::read(&good[..n], Some(3)) {
                assert!(h.len <= n);
            }
        }
        // Elements that run off the end of their block.
        assert_eq!(one_byte(&[0x31, 0xab], 3), None);
        assert_eq!(two_byte(&[3, 2, 0xab], 3), None);
        assert_eq!(two_byte(&[3], 3), None);
    }
}
