use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use crate::io::DATAGRAM_MAX_PACKET_SIZE;
use crate::packet::Vp8Patch;
use crate::rtp_::VideoOrientation;
use crate::rtp_::{ExtensionValues, MediaTime, Mid, Pt, Rid, RtpHeader, SeqNo, Ssrc};

use super::RtpPacket;
use super::rtx_cache_buf::EvictingBuffer;

const RTX_CACHE_SIZE_QUANTIZER: usize = 25;
const RTX_CACHE_QUANTIZE_SLOTS: usize = DATAGRAM_MAX_PACKET_SIZE / RTX_CACHE_SIZE_QUANTIZER;

#[derive(Debug)]
pub(crate) struct RtxCache {
    // Data, new additions here probably need to be cleared in [`clear`].
    packet_by_seq_no: EvictingBuffer<CachedPacket>,

    // Technically we want [Option<SeqNo>; X] to indicate the absence of
    // a SeqNo. However We can half the storage space by using the sentinel
    // values SeqNo::MAX to indicate None
    seq_no_by_quantized_size: [SeqNo; RTX_CACHE_QUANTIZE_SLOTS],

    // ting patch: the packet last looked up, rebuilt from its compact form (see
    // `CachedPacket`). Resends and spurious padding read and adjust it like the stored
    // packet they used to get. Boxed on first use: most send streams never resend.
    scratch: Option<Box<RtpPacket>>,

    // ting patch: the MID and RID the stream's packets carry until the receiver has bound
    // its SSRC, kept once instead of in every cached packet.
    mid_rid: Option<MidRid>,

    // ting patch: what the scratch packet holds between resends (see `release_rebuilt`).
    no_payload: Arc<[u8]>,
}

type MidRid = (Option<Mid>, Option<Rid>);

/// ting patch: a sent packet as the resend cache keeps it.
///
/// An `RtpPacket` is 408 bytes, most of them header fields a sent packet rarely has (15
/// CSRC slots, 192 bytes of extension values, the sender info of received packets). A
/// cache slot holds a packet for up to its max age, so a subscriber's send streams held
/// hundreds of those per stream. A packet whose header has nothing beyond the common
/// fields is kept in ~90 bytes; any other keeps its whole header boxed. Either way the
/// packet rebuilt from it is equal to the one cached.
#[derive(Debug)]
struct CachedPacket {
    seq_no: SeqNo,
    time: MediaTime,
    payload: Arc<[u8]>,
    timestamp: Instant,
    vp8_patch: Option<Vp8Patch>,
    header: CachedHeader,
}

#[derive(Debug)]
enum CachedHeader {
    /// `RtpHeader::default()` with these fields, `sequence_number` the packet's `seq_no`.
    Plain {
        marker: bool,
        payload_type: Pt,
        timestamp: u32,
        ssrc: Ssrc,
        audio_level: Option<i8>,
        voice_activity: Option<bool>,
        video_orientation: Option<VideoOrientation>,
        /// The MID and RID extensions are the cache's `mid_rid`, not unset.
        mid_rid: bool,
    },
    Full(Box<RtpHeader>),
}

impl CachedHeader {
    fn new(h: RtpHeader, seq_no: SeqNo, known: &mut Option<MidRid>) -> CachedHeader {
        let d = RtpHeader::default();
        let plain_ext = {
            let e = &h.ext_vals;
            // Every field named: a field added to `ExtensionValues` must be decided here.
            let ExtensionValues {
                audio_level: _,
                voice_activity: _,
                video_orientation: _,
                video_content_type,
                tx_time_offs,
                abs_send_time,
                abs_capture_time,
                transport_cc,
                play_delay_min,
                play_delay_max,
                video_timing,
                rid: _,
                rid_repair,
                mid: _,
                frame_mark,
                user_values,
            } = e;
            video_content_type.is_none()
                && tx_time_offs.is_none()
                && abs_send_time.is_none()
                && abs_capture_time.is_none()
                && transport_cc.is_none()
                && play_delay_min.is_none()
                && play_delay_max.is_none()
                && video_timing.is_none()
                && rid_repair.is_none()
                && frame_mark.is_none()
                && user_values.is_empty()
        };
        let pair = (h.ext_vals.mid, h.ext_vals.rid);
        let mid_rid = pair != (None, None);
        let mid_rid_known = !mid_rid || *known.get_or_insert(pair) == pair;
        // Every field named here too: a field added to `RtpHeader` must be decided here.
        let RtpHeader {
            version,
            has_padding,
            has_extension,
            csrc_count,
            marker: _,
            payload_type: _,
            sequence_number,
            timestamp: _,
            ssrc: _,
            csrc,
            ext_vals: _,
            header_len,
        } = &h;
        let plain = plain_ext
            && mid_rid_known
            && *version == d.version
            && *has_padding == d.has_padding
            && *has_extension == d.has_extension
            && *csrc_count == d.csrc_count
            && *csrc == d.csrc
            && *header_len == d.header_len
            && *sequence_number == *seq_no as u16;
        if !plain {
            return CachedHeader::Full(Box::new(h));
        }
        CachedHeader::Plain {
            marker: h.marker,
            payload_type: h.payload_type,
            timestamp: h.timestamp,
            ssrc: h.ssrc,
            audio_level: h.ext_vals.audio_level,
            voice_activity: h.ext_vals.voice_activity,
            video_orientation: h.ext_vals.video_orientation,
            mid_rid,
        }
    }

    fn header(&self, seq_no: SeqNo, known: Option<MidRid>) -> RtpHeader {
        match self {
            CachedHeader::Full(h) => (**h).clone(),
            &CachedHeader::Plain {
                marker,
                payload_type,
                timestamp,
                ssrc,
                audio_level,
                voice_activity,
                video_orientation,
                mid_rid,
            } => RtpHeader {
                marker,
                payload_type,
                sequence_number: *seq_no as u16,
                timestamp,
                ssrc,
                ext_vals: ExtensionValues {
                    audio_level,
                    voice_activity,
                    video_orientation,
                    mid: known.filter(|_| mid_rid).and_then(|k| k.0),
                    rid: known.filter(|_| mid_rid).and_then(|k| k.1),
                    ..Default::default()
                },
                ..Default::default()
            },
        }
    }
}

impl CachedPacket {
    fn new(p: RtpPacket, known: &mut Option<MidRid>) -> CachedPacket {
        let RtpPacket {
            seq_no,
            time,
            header,
            payload,
            vp8_patch,
            timestamp,
            last_sender_info,
            nackable,
        } = p;
        // Only sent packets are cached, and only those that can be resent.
        debug_assert!(last_sender_info.is_none() && nackable);
        CachedPacket {
            seq_no,
            time,
            payload,
            timestamp,
            vp8_patch,
            header: CachedHeader::new(header, seq_no, known),
        }
    }

    fn rebuild_into(&self, out: &mut RtpPacket, known: Option<MidRid>) {
        *out = RtpPacket {
            seq_no: self.seq_no,
            time: self.time,
            header: self.header.header(self.seq_no, known),
            payload: self.payload.clone(),
            vp8_patch: self.vp8_patch,
            timestamp: self.timestamp,
            last_sender_info: None,
            nackable: true,
        };
    }
}

impl RtxCache {
    pub fn new(max_packet_count: usize, max_packet_age: Duration) -> Self {
        Self {
            packet_by_seq_no: EvictingBuffer::new(10, max_packet_age, max_packet_count),
            seq_no_by_quantized_size: [SeqNo::MAX; RTX_CACHE_QUANTIZE_SLOTS],
            scratch: None,
            mid_rid: None,
            no_payload: Arc::from(&[][..]),
        }
    }

    pub fn cache_sent_packet(&mut self, packet: RtpPacket, now: Instant) {
        assert!(packet.nackable);
        let seq_no = packet.seq_no;
        let quantized_size = packet.payload.len() / RTX_CACHE_SIZE_QUANTIZER;
        self.packet_by_seq_no
            .push(*seq_no, now, CachedPacket::new(packet, &mut self.mid_rid));
        self.seq_no_by_quantized_size[quantized_size] = seq_no;
        self.remove_old_packets(now);
    }

    pub fn last_cached_seq_no(&self) -> Option<SeqNo> {
        Some(self.packet_by_seq_no.last_position()?.into())
    }

    /// The payload length of a cached packet, without rebuilding it.
    pub fn cached_payload_len(&self, seq_no: SeqNo) -> Option<usize> {
        Some(self.packet_by_seq_no.get(*seq_no)?.payload.len())
    }

    /// The cached packet, rebuilt. Changes to it are not kept in the cache.
    pub fn get_cached_packet_by_seq_no(&mut self, seq_no: SeqNo) -> Option<&mut RtpPacket> {
        let cached = self.packet_by_seq_no.get(*seq_no)?;
        let scratch = self
            .scratch
            .get_or_insert_with(|| Box::new(RtpPacket::blank()));
        cached.rebuild_into(scratch, self.mid_rid);
        Some(scratch)
    }

    /// Lets go of the payload of the packet last rebuilt, once it has been sent: it
    /// would otherwise stay alive after the cache let go of it.
    pub fn release_rebuilt(&mut self) {
        if let Some(scratch) = &mut self.scratch {
            scratch.payload = self.no_payload.clone();
        }
    }

    pub fn get_cached_packet_smaller_than(&mut self, max_size: usize) -> Option<&mut RtpPacket> {
        let quantized_size = max_size / RTX_CACHE_SIZE_QUANTIZER;

        let seq_no = self.seq_no_by_quantized_size[..quantized_size]
            .iter()
            .rev()
            .filter(|seq_no| !seq_no.is_max())
            .find(|seq_no| self.packet_by_seq_no.contains(***seq_no))?;

        self.get_cached_packet_by_seq_no(*seq_no)
    }

    fn remove_old_packets(&mut self, now: Instant) {
        self.packet_by_seq_no.maybe_evict(now);
    }

    pub(crate) fn last_packet(&self) -> Option<&[u8]> {
        let packet = self.packet_by_seq_no.last()?;
        Some(packet.payload.as_ref())
    }

    pub(crate) fn clear(&mut self) {
        self.packet_by_seq_no.clear();
        self.seq_no_by_quantized_size = [SeqNo::MAX; RTX_CACHE_QUANTIZE_SLOTS];
        self.scratch = None;
        self.mid_rid = None;
    }
}

#[cfg(test)]
mod test {
    use crate::rtp_::MediaTime;
    use crate::rtp_::RtpHeader;

    use super::*;

    fn after(now: Instant, millis: u64) -> Instant {
        now + Duration::from_millis(millis)
    }

    fn packet(now: Instant, seq_no: u64, millis: u64) -> RtpPacket {
        RtpPacket {
            header: RtpHeader::default(),
            seq_no: seq_no.into(),
            time: MediaTime::from_90khz(0),
            payload: millis.to_be_bytes().into(),
            vp8_patch: None,
            timestamp: after(now, millis),
            last_sender_info: None,
            nackable: true,
        }
    }

    #[test]
    fn rtx_cache_0_sized() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(0, Duration::from_secs(3));
        rtx_cache.cache_sent_packet(packet(now, 1, 10), after(now, 10));
        assert_eq!(
            Some(&mut packet(now, 1, 10)),
            rtx_cache.get_cached_packet_by_seq_no(1.into())
        );
        assert_eq!(
            Some(&mut packet(now, 1, 10)),
            rtx_cache.get_cached_packet_smaller_than(1000)
        );
    }

    #[test]
    fn rtx_cache_0_duration() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(10, Duration::from_secs(0));
        rtx_cache.cache_sent_packet(packet(now, 1, 10), after(now, 10));
        assert_eq!(None, rtx_cache.get_cached_packet_by_seq_no(1.into()));
        assert_eq!(None, rtx_cache.get_cached_packet_smaller_than(1000));
    }

    #[test]
    fn rtx_cache_1_sized() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(1, Duration::from_secs(3));
        rtx_cache.cache_sent_packet(packet(now, 1, 10), after(now, 10));
        assert_eq!(
            Some(&mut packet(now, 1, 10)),
            rtx_cache.get_cached_packet_by_seq_no(1.into())
        );
        assert_eq!(
            Some(&mut packet(now, 1, 10)),
            rtx_cache.get_cached_packet_smaller_than(1000)
        );
        assert_eq!(
            Some(&mut packet(now, 1, 10)),
            rtx_cache.get_cached_packet_smaller_than(25)
        );
        assert_eq!(None, rtx_cache.get_cached_packet_smaller_than(24));
        rtx_cache.cache_sent_packet(packet(now, 2, 20), after(now, 20));
        assert_eq!(
            Some(&mut packet(now, 2, 20)),
            rtx_cache.get_cached_packet_by_seq_no(2.into())
        );
    }

    #[test]
    fn rtx_cache_100_sized_backwards() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(100, Duration::from_secs(3));

        for i in 1..=200 {
            let seq_no = 201 - i;
            let pkt = packet(now, seq_no, (201 - i) * 10);
            let now = after(now, i * 10);
            rtx_cache.cache_sent_packet(pkt, now);
        }

        assert_eq!(
            Some(&mut packet(now, 200, 2000)),
            rtx_cache.get_cached_packet_by_seq_no(200.into())
        );
        assert_eq!(None, rtx_cache.get_cached_packet_by_seq_no(100.into()));
        assert_eq!(None, rtx_cache.get_cached_packet_by_seq_no(101.into()));
    }

    #[test]
    fn rtx_cache_eviction() {
        let now = Instant::now();
        // Cache can take all entries
        let mut rtx_cache = RtxCache::new(400, Duration::from_secs(1));
        for i in 1..=200 {
            let seq_no = i;
            let pkt = packet(now, seq_no, i * 10);
            let now = after(now, i * 10);
            rtx_cache.cache_sent_packet(pkt, now);
        }

        assert_eq!(None, rtx_cache.get_cached_packet_by_seq_no(99.into()));

        assert_eq!(
            Some(&mut packet(now, 100, 1000)),
            rtx_cache.get_cached_packet_by_seq_no(100.into())
        );
        assert_eq!(
            Some(&mut packet(now, 200, 2000)),
            rtx_cache.get_cached_packet_by_seq_no(200.into())
        );
    }

    fn sent(now: Instant, seq_no: u64) -> RtpPacket {
        let patch = crate::packet::Vp8Descriptor::parse(&[0x90, 0x80, 0x05])
            .ok()
            .and_then(|d| d.patch().picture_id(77).build().ok());
        RtpPacket {
            header: RtpHeader {
                marker: true,
                payload_type: 96.into(),
                sequence_number: seq_no as u16,
                timestamp: 123_456,
                ssrc: 99.into(),
                ext_vals: ExtensionValues {
                    audio_level: Some(-30),
                    voice_activity: Some(true),
                    video_orientation: Some(VideoOrientation::Deg90),
                    ..Default::default()
                },
                ..Default::default()
            },
            seq_no: seq_no.into(),
            time: MediaTime::from_90khz(123_456),
            payload: vec![7; 1000].into(),
            vp8_patch: patch,
            timestamp: now,
            last_sender_info: None,
            nackable: true,
        }
    }

    #[test]
    fn rtx_cache_rebuilds_what_it_was_given() {
        let now = Instant::now();
        // The stream's MID and RID, sent until the receiver binds the SSRC: compact too.
        let mut first = sent(now, 69_998);
        first.header.ext_vals.mid = Some("1".into());
        first.header.ext_vals.rid = Some("h".into());
        let mut variants = vec![first, sent(now, 69_999), sent(now, 70_000)];
        // The MID without that RID.
        variants[1].header.ext_vals.mid = Some("1".into());
        // Beyond the compact form: a CSRC, another MID and RID, other extension values,
        // other header fields.
        let mut p = sent(now, 70_001);
        p.header.csrc_count = 1;
        p.header.csrc[0] = 5;
        variants.push(p);
        let mut p = sent(now, 70_002);
        p.header.ext_vals.mid = Some("2".into());
        p.header.ext_vals.rid = Some("l".into());
        variants.push(p);
        let mut p = sent(now, 70_003);
        p.header.ext_vals.video_content_type = Some(1);
        p.header.ext_vals.abs_send_time = Some(now);
        variants.push(p);
        let mut p = sent(now, 70_004);
        p.header.sequence_number = 3;
        variants.push(p);
        let mut p = sent(now, 70_006);
        p.header.has_padding = true;
        variants.push(p);
        let mut p = sent(now, 70_007);
        p.header.has_extension = false;
        variants.push(p);
        let mut p = sent(now, 70_008);
        p.header.header_len = 24;
        variants.push(p);
        let mut p = sent(now, 70_009);
        p.header.ext_vals.rid_repair = Some("r".into());
        variants.push(p);
        let mut p = sent(now, 70_010);
        p.header.ext_vals.transport_cc = Some(9);
        variants.push(p);
        let mut p = sent(now, 70_011);
        p.header.version = 1;
        variants.push(p);
        let mut p = sent(now, 70_005);
        p.header.ext_vals.user_values.set(5_u8);
        variants.push(p);

        let mut cache = RtxCache::new(100, Duration::from_secs(3));
        for p in &variants {
            let copy = RtpPacket {
                header: p.header.clone(),
                payload: p.payload.clone(),
                last_sender_info: None,
                ..*p
            };
            cache.cache_sent_packet(copy, now);
        }
        for p in &variants {
            assert_eq!(cache.cached_payload_len(p.seq_no), Some(1000));
            let got = cache.get_cached_packet_by_seq_no(p.seq_no).unwrap();
            assert_eq!(got, p, "packet {}", p.seq_no);
            assert_eq!(got.vp8_patch, p.vp8_patch);
            assert_eq!(got.timestamp, p.timestamp);
        }
        // Its payload is let go once sent, and comes back with the next lookup.
        let seq = variants[2].seq_no;
        cache.get_cached_packet_by_seq_no(seq).unwrap();
        cache.release_rebuilt();
        assert!(cache.scratch.as_ref().unwrap().payload.is_empty());
        assert_eq!(cache.get_cached_packet_by_seq_no(seq).unwrap(), &variants[2]);
        // Changing what was looked up does not change the cache.
        let seq = variants[0].seq_no;
        cache
            .get_cached_packet_by_seq_no(seq)
            .unwrap()
            .header
            .ext_vals
            .mid = Some("2".into());
        assert_eq!(
            cache.get_cached_packet_by_seq_no(seq).unwrap(),
            &variants[0]
        );
        // Only the common header is kept compact; the others keep their whole header.
        let compact = |seq: SeqNo| {
            matches!(
                cache.packet_by_seq_no.get(*seq).unwrap().header,
                CachedHeader::Plain { .. }
            )
        };
        // The first MID and RID seen are the stream's; a packet with only the MID (the
        // RID differs) and one with another pair keep their whole header.
        assert!(compact(variants[0].seq_no) && compact(variants[2].seq_no));
        assert!(!compact(variants[1].seq_no));
        assert!(variants[3..].iter().all(|p| !compact(p.seq_no)));
        assert_eq!(cache.cached_payload_len(1.into()), None);
    }

    #[test]
    fn rtx_cache_entries_are_small() {
        // A slot of the cache, the entry's position and time included.
        let slot = std::mem::size_of::<Option<(u64, Instant, CachedPacket)>>();
        assert!(slot <= 128, "{slot} bytes");
    }
}
