//! One participant's media connection on a worker: its str0m `Rtc` and what its m-lines
//! are for.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::change::SdpOffer;
use str0m::config::DtlsCert;
use str0m::format::{Codec as StrCodec, FormatParams};
use str0m::media::{Direction, Frequency, MediaKind, Mid, Pt, Rid};
use str0m::rtp::{ExtensionValues, Ssrc};
use str0m::{Candidate, Rtc, RtcConfig};
use ting_media::{
    Codec, EndpointId, LayerId, LayoutSpec, QualityConfig, QualityMeter, SlotKind, Source, TrackId,
};
use ting_proto::{Offer, SlotAssignment};

use super::{Outbox, RoomKey};
use crate::metrics::KindIndex;

/// How many receive slots of each kind a client may open.
#[derive(Debug, Clone, Copy)]
pub struct SlotLimits {
    pub audio: u16,
    pub video: u16,
    pub screen: u16,
}

/// Why an offer was refused. Each variant says what the client got wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("mid {mid:?} is not usable: mids are 1 to 16 characters of letters, digits and '_'")]
    BadMid { mid: String },
    #[error("mid {mid:?} is named twice in the offer message")]
    DuplicateMid { mid: String },
    #[error("{count} {kind} receive slots asked for; this server allows at most {limit}")]
    TooManySlots {
        kind: &'static str,
        count: usize,
        limit: u16,
    },
    #[error("the SDP offer cannot be parsed: {0}")]
    Sdp(String),
    #[error("the SDP offer was not accepted: {0}")]
    Rejected(String),
    #[error("mid {mid:?} is not an m-line of the SDP offer")]
    UnknownMid { mid: String },
    #[error("mid {mid:?} is {found} but carries the {role}, which is {expected}")]
    WrongKind {
        mid: String,
        found: &'static str,
        role: &'static str,
        expected: &'static str,
    },
    #[error("mid {mid:?} must be {expected} in the offer, since it carries the {role}")]
    WrongDirection {
        mid: String,
        role: &'static str,
        expected: &'static str,
    },
    #[error("mid {mid:?} offers no codec this server forwards ({wanted})")]
    NoCodec { mid: String, wanted: &'static str },
    #[error(
        "an ICE restart keeps the connection's m-lines as they are; this offer {0} (use \
         restartIce() on the same RTCPeerConnection, or send offer on a new one after a \
         resume)"
    )]
    ChangedMlines(String),
}

impl OfferError {
    /// The kind of error, for logs (the message may quote the client's SDP).
    pub fn kind(&self) -> &'static str {
        match self {
            OfferError::BadMid { .. } => "bad_mid",
            OfferError::DuplicateMid { .. } => "duplicate_mid",
            OfferError::TooManySlots { .. } => "too_many_slots",
            OfferError::Sdp(_) => "sdp",
            OfferError::Rejected(_) => "rejected",
            OfferError::UnknownMid { .. } => "unknown_mid",
            OfferError::WrongKind { .. } => "wrong_kind",
            OfferError::WrongDirection { .. } => "wrong_direction",
            OfferError::NoCodec { .. } => "no_codec",
            OfferError::ChangedMlines(_) => "changed_mlines",
        }
    }
}

/// One of the participant's own tracks, as negotiated.
#[derive(Debug, Clone)]
pub struct Published {
    pub source: Source,
    pub mid: Mid,
    pub codec: Codec,
    /// Simulcast rids, lowest layer first; empty without simulcast.
    pub rids: Vec<Rid>,
}

/// One receive slot: an outgoing stream of this participant's connection.
#[derive(Debug, Clone)]
pub struct SlotOut {
    pub mid: Mid,
    pub kind: SlotKind,
    pub ssrc: Ssrc,
    pub pt: Pt,
}

/// Why a peer was removed by its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEnd {
    /// ICE or DTLS failed, or the connection closed.
    MediaFailed,
    /// str0m panicked on this connection; the panic was contained.
    Crashed,
}

pub struct Peer {
    pub pid: u64,
    pub endpoint: EndpointId,
    pub room: RoomKey,
    pub rtc: Rtc,
    pub outbox: Outbox,
    pub ufrag: String,
    /// Remote addresses this connection was seen at (for the demultiplexer).
    pub addrs: Vec<SocketAddr>,
    pub published: Vec<Published>,
    /// Incoming SSRC -> track and layer, learnt on each SSRC's first packet.
    rx_map: Vec<(Ssrc, Option<(TrackId, LayerId)>)>,
    pub slots: Vec<SlotOut>,
    /// What each slot carries now and whether it is paused, as last told to the client.
    pub slot_tracks: Vec<Option<(TrackId, bool)>>,
    /// The layout the client reported (the router gets it when the connection is up).
    pub layout: Option<LayoutSpec>,
    pub slots_changed: bool,
    /// When the connection next gets a timeout pass (str0m's deadline, coalesced).
    pub next_timeout: Instant,
    /// When it last had one.
    pub last_tick: Option<Instant>,
    /// The deadline currently in the worker's timer heap, if any.
    pub scheduled: Option<Instant>,
    /// Written to since the last tick.
    pub dirty: bool,
    /// When each packet written since the last tick was received, and its kind (for the
    /// latency figures).
    pub written: Vec<(Instant, KindIndex)>,
    /// ICE and DTLS are up and the router knows this subscriber.
    pub connected: bool,
    /// When ICE last reported the connection lost, if it has not come back since.
    pub disconnected_since: Option<Instant>,
    pub ended: Option<PeerEnd>,
    /// The desired bitrate last handed to the bandwidth estimator.
    pub desired_bps: u64,
    /// When a datagram last came from the client.
    pub last_heard: Option<Instant>,
    /// When to start the bandwidth estimate afresh: set when the client is heard again
    /// after an outage, a moment later so the feedback that reports the outage's losses
    /// is behind it.
    pub bwe_reset_at: Option<Instant>,
    /// The latest downlink estimate (`None`: none, or estimation is off).
    pub estimate_bps: Option<u64>,
    /// How the connection fares, sampled once a second.
    pub quality: QualityMeter,
    /// Packets its send streams dropped as stale, as last counted.
    pub stale_dropped: u64,
    /// Test hook: panic the next time this connection's output is handled.
    #[cfg(feature = "test-hooks")]
    pub crash: bool,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("pid", &format_args!("{:016x}", self.pid))
            .field("connected", &self.connected)
            .finish_non_exhaustive()
    }
}

/// What a validated offer produced.
#[derive(Debug)]
pub struct Accepted {
    pub peer: Peer,
    pub answer: String,
}

#[allow(missing_debug_implementations)] // holds a certificate; built and consumed at once
pub struct PeerSetup<'a> {
    pub pid: u64,
    pub room: RoomKey,
    pub offer: &'a Offer,
    pub limits: SlotLimits,
    pub candidate: SocketAddr,
    pub cert: &'a DtlsCert,
    /// Estimate the downlink from the client's transport-wide feedback.
    pub estimate_bandwidth: bool,
    /// Ask the client to stop sending audio while its microphone is silent (Opus DTX).
    pub opus_dtx: bool,
    pub outbox: Outbox,
    pub now: Instant,
}

fn check_mid(mid: &str, seen: &mut Vec<String>) -> Result<(), OfferError> {
    let ok = !mid.is_empty()
        && mid.len() <= 16
        && mid.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(OfferError::BadMid {
            mid: mid.to_owned(),
        });
    }
    if seen.iter().any(|m| m == mid) {
        return Err(OfferError::DuplicateMid {
            mid: mid.to_owned(),
        });
    }
    seen.push(mid.to_owned());
    Ok(())
}

fn to_media_codec(c: StrCodec) -> Option<Codec> {
    Some(match c {
        StrCodec::Opus => Codec::Opus,
        StrCodec::Vp8 => Codec::Vp8,
        StrCodec::Vp9 => Codec::Vp9,
        StrCodec::H264 => Codec::H264,
        StrCodec::Av1 => Codec::Av1,
        _ => return None,
    })
}

/// The codecs ting negotiates. One video codec for everyone means every subscriber can
/// decode every publisher without transcoding; VP8 is the one every browser has and the
/// one str0m can rewrite (`Vp8Patch`) for simulcast.
///
/// With `opus_dtx` the answer's Opus parameters carry `usedtx=1`, which is what makes a
/// browser's encoder stop sending while the microphone hears silence (a comfort-noise
/// packet a few times a second instead of 50). Listeners' decoders fill the pauses.
///
/// Each connection estimates its downlink from the client's transport-wide feedback
/// (str0m's Google congestion control). Media is not paced again on the way out: the
/// publishers' own pacers already spread it, and pacing every forwarded packet costs one
/// full timeout pass per packet (docs/performance.md); only the estimator's probes are
/// paced (crates/patched/str0m/PATCHES.md).
pub fn rtc_config(cert: &DtlsCert, estimate_bandwidth: bool, opus_dtx: bool) -> RtcConfig {
    let mut config = RtcConfig::new()
        .set_ice_lite(true)
        .set_rtp_mode(true)
        .set_dtls_cert(cert.clone())
        .clear_codecs()
        .enable_vp8(true)
        .set_send_buffer_video(VIDEO_SEND_BUFFER);
    config.codec_config().add_config(
        OPUS_PT.into(),
        None,
        StrCodec::Opus,
        Frequency::FORTY_EIGHT_KHZ,
        Some(2),
        FormatParams {
            min_p_time: Some(10),
            use_inband_fec: Some(true),
            use_dtx: opus_dtx.then_some(true),
            ..Default::default()
        },
    );
    if !estimate_bandwidth {
        return config;
    }
    config
        .enable_bwe(Some(str0m::bwe::Bitrate::bps(INITIAL_ESTIMATE_BPS)))
        .set_bwe_pace_media(false)
        // A probe cluster stretched by a burst of other work (handshakes of a crowd
        // joining) measures this worker, not the path: it must not pull the estimate down.
        .set_bwe_probes_only_raise(true)
}

/// Opus's payload type where the server offers (browsers' offers bring their own): the
/// one browsers use, as str0m's default does.
const OPUS_PT: u8 = 111;

/// Where each connection's bandwidth estimate starts: enough for the speaker's middle
/// layer and a row of thumbnails; the estimator's first probes (at several times this)
/// find out within a second whether there is more.
pub const INITIAL_ESTIMATE_BPS: u64 = 1_500_000;

/// Outgoing video packets kept per stream, to answer NACKs (str0m's default is 1000). About
/// two seconds of the best simulcast layer; a keyframe burst fits many times over.
const VIDEO_SEND_BUFFER: usize = 400;
/// How old a packet a subscriber's NACK can still get resent. A resend older than a second
/// arrives after the receiver's jitter buffer gave up on it; keeping more (str0m keeps 3 s by
/// default) costs memory in every subscriber's every video slot.
const RTX_CACHE_AGE: std::time::Duration = std::time::Duration::from_secs(1);
/// A forwarded packet still unsent after this long is dropped (crates/patched/str0m,
/// patch 11). Packets wait only while the connection cannot send them at once (a probe
/// cluster runs, a core cannot keep up); past half a second the receiver's jitter buffer
/// has given up on them, and keeping them would let memory grow with the backlog.
pub const SEND_QUEUE_MAX_AGE: std::time::Duration = std::time::Duration::from_millis(500);
/// Resends stop when they pass this share of what a stream sends (str0m's default).
const RTX_RATIO_CAP: f32 = 0.15;

impl Peer {
    /// Validates the client's mid mapping, accepts the offer, and builds the connection.
    pub fn accept(setup: PeerSetup<'_>) -> Result<Accepted, OfferError> {
        let PeerSetup {
            pid,
            room,
            offer,
            limits,
            candidate,
            cert,
            estimate_bandwidth,
            opus_dtx,
            outbox,
            now,
        } = setup;
        let mut seen = Vec::new();
        let publish = [
            (Source::Microphone, offer.publish.microphone.as_deref()),
            (Source::Camera, offer.publish.camera.as_deref()),
            (Source::Screen, offer.publish.screen.as_deref()),
        ];
        for (_, mid) in publish {
            if let Some(mid) = mid {
                check_mid(mid, &mut seen)?;
            }
        }
        let receive = [
            (SlotKind::Audio, &offer.receive.audio, limits.audio, "audio"),
            (
                SlotKind::Camera,
                &offer.receive.video,
                limits.video,
                "video",
            ),
            (
                SlotKind::Screen,
                &offer.receive.screen,
                limits.screen,
                "screen",
            ),
        ];
        for (_, mids, limit, kind) in receive {
            if mids.len() > usize::from(limit) {
                return Err(OfferError::TooManySlots {
                    kind,
                    count: mids.len(),
                    limit,
                });
            }
            for mid in mids {
                check_mid(mid, &mut seen)?;
            }
        }

        let sdp =
            SdpOffer::from_sdp_string(&offer.sdp).map_err(|e| OfferError::Sdp(e.to_string()))?;
        let mut rtc = rtc_config(cert, estimate_bandwidth, opus_dtx).build(now);
        let Some(_) = rtc.add_local_candidate(
            Candidate::host(candidate, "udp").map_err(|e| OfferError::Rejected(e.to_string()))?,
        ) else {
            return Err(OfferError::Rejected("server candidate refused".into()));
        };
        let answer = rtc
            .sdp_api()
            .accept_offer(sdp)
            .map_err(|e| OfferError::Rejected(e.to_string()))?;

        let mut published = Vec::new();
        for (source, mid) in publish {
            let Some(mid_str) = mid else { continue };
            let role = match source {
                Source::Microphone => "microphone",
                Source::Camera => "camera",
                Source::Screen => "screen share",
            };
            let (media_kind, wanted) = match source {
                Source::Microphone => (MediaKind::Audio, "Opus"),
                _ => (MediaKind::Video, "VP8"),
            };
            let (mid, _, codec) =
                check_mline(&rtc, mid_str, media_kind, Direction::RecvOnly, role, wanted)?;
            let rids = match rtc.media(mid).map(|m| m.rids_rx()) {
                Some(str0m::media::Rids::Specific(r)) => r.clone(),
                _ => Vec::new(),
            };
            published.push(Published {
                source,
                mid,
                codec,
                rids,
            });
        }

        let mut slots = Vec::new();
        for (kind, mids, _, _) in receive {
            let (media_kind, wanted, role) = match kind {
                SlotKind::Audio => (MediaKind::Audio, "Opus", "audio receive slot"),
                SlotKind::Camera => (MediaKind::Video, "VP8", "video receive slot"),
                SlotKind::Screen => (MediaKind::Video, "VP8", "screen receive slot"),
            };
            for mid_str in mids {
                let (mid, pt, _) =
                    check_mline(&rtc, mid_str, media_kind, Direction::SendOnly, role, wanted)?;
                let ssrc = rtc
                    .direct_api()
                    .stream_tx_by_mid(mid, None)
                    .map(|tx| {
                        if kind != SlotKind::Audio {
                            tx.set_rtx_cache(VIDEO_SEND_BUFFER, RTX_CACHE_AGE, Some(RTX_RATIO_CAP));
                        }
                        tx.set_send_queue_max_age(Some(SEND_QUEUE_MAX_AGE));
                        tx.ssrc()
                    })
                    .ok_or_else(|| {
                        OfferError::Rejected(format!("no outgoing stream for mid {mid_str:?}"))
                    })?;
                slots.push(SlotOut {
                    mid,
                    kind,
                    ssrc,
                    pt,
                });
            }
        }

        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        let n = slots.len();
        Ok(Accepted {
            peer: Peer {
                pid,
                endpoint: EndpointId(pid),
                room,
                rtc,
                outbox,
                ufrag,
                addrs: Vec::new(),
                published,
                rx_map: Vec::new(),
                slots,
                slot_tracks: vec![None; n],
                layout: None,
                slots_changed: false,
                next_timeout: now,
                last_tick: None,
                scheduled: None,
                dirty: false,
                written: Vec::new(),
                connected: false,
                disconnected_since: None,
                ended: None,
                desired_bps: 0,
                last_heard: None,
                bwe_reset_at: None,
                estimate_bps: None,
                quality: QualityMeter::new(QualityConfig::default()),
                stale_dropped: 0,
                #[cfg(feature = "test-hooks")]
                crash: false,
            },
            answer: answer.to_sdp_string(),
        })
    }

    /// Accepts a new offer for this connection that restarts ICE: the same m-lines with new
    /// ICE credentials. Returns the answer, which carries new credentials of the server's
    /// own (now in `ufrag`). The tracks, slots and DTLS session are kept; media resumes
    /// once the client's checks from wherever it now is have been answered.
    pub fn restart_ice(&mut self, sdp: &str) -> Result<String, OfferError> {
        let mut known: Vec<&str> = self
            .published
            .iter()
            .map(|p| &*p.mid)
            .chain(self.slots.iter().map(|s| &*s.mid))
            .collect();
        let mut offered: Vec<&str> = sdp
            .lines()
            .filter_map(|l| l.trim_end().strip_prefix("a=mid:"))
            .collect();
        let mlines = sdp.lines().filter(|l| l.starts_with("m=")).count();
        if mlines != offered.len() {
            return Err(OfferError::ChangedMlines(format!(
                "has {mlines} m-lines and {} mids",
                offered.len()
            )));
        }
        known.sort_unstable();
        offered.sort_unstable();
        if known != offered {
            return Err(OfferError::ChangedMlines(format!(
                "names mids {offered:?}, the connection has {known:?}"
            )));
        }
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| OfferError::Sdp(e.to_string()))?;
        let answer = self
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| OfferError::Rejected(e.to_string()))?;
        self.ufrag = self.rtc.direct_api().local_ice_credentials().ufrag;
        self.disconnected_since = None;
        Ok(answer.to_sdp_string())
    }

    /// The track and layer an incoming SSRC belongs to, or `None` for streams of m-lines
    /// the client did not name as published.
    pub fn track_of(&mut self, ssrc: Ssrc) -> Option<(TrackId, LayerId)> {
        if let Some((_, t)) = self.rx_map.iter().find(|(s, _)| *s == ssrc) {
            return *t;
        }
        let found = self.rtc.direct_api().stream_rx(&ssrc).and_then(|rx| {
            let (mid, rid) = (rx.mid(), rx.rid());
            let p = self.published.iter().find(|p| p.mid == mid)?;
            let layer = match rid {
                None => 0,
                Some(rid) => p.rids.iter().position(|r| *r == rid)?,
            };
            (layer < LayerId::MAX)
                .then_some((TrackId::new(self.endpoint, p.source), LayerId(layer as u8)))
        });
        // A handful of SSRCs per connection: a vector beats a map. Bounded so a client
        // cycling SSRCs cannot grow it.
        if self.rx_map.len() < 32 {
            self.rx_map.push((ssrc, found));
        }
        found
    }

    /// The mid and rid to ask for a keyframe of `source` on `layer`.
    pub fn stream_for(&self, source: Source, layer: LayerId) -> Option<(Mid, Option<Rid>)> {
        let p = self.published.iter().find(|p| p.source == source)?;
        if p.rids.is_empty() {
            return Some((p.mid, None));
        }
        let rid = p.rids.get(usize::from(layer.0))?;
        Some((p.mid, Some(*rid)))
    }

    /// The slot table as the client is told it.
    pub fn slot_message(&self) -> Vec<SlotAssignment> {
        self.slots
            .iter()
            .zip(&self.slot_tracks)
            .filter_map(|(slot, track)| {
                let (track, paused) = (*track)?;
                Some(SlotAssignment {
                    mid: slot.mid.to_string(),
                    participant: ting_proto::ParticipantRef(format!("{:016x}", track.endpoint.0)),
                    source: match track.source {
                        Source::Microphone => ting_proto::Source::Microphone,
                        Source::Camera => ting_proto::Source::Camera,
                        Source::Screen => ting_proto::Source::Screen,
                    },
                    paused,
                })
            })
            .collect()
    }
}

/// The m-line `mid_str` names, checked for what it is used for: it exists, has the right
/// kind and (from the server's side) direction, and carries a codec ting forwards.
fn check_mline(
    rtc: &Rtc,
    mid_str: &str,
    kind: MediaKind,
    direction: Direction,
    role: &'static str,
    wanted: &'static str,
) -> Result<(Mid, Pt, Codec), OfferError> {
    let mid = Mid::from(mid_str);
    let media = rtc.media(mid).ok_or_else(|| OfferError::UnknownMid {
        mid: mid_str.to_owned(),
    })?;
    check_kind(mid_str, media.kind(), kind, role)?;
    if media.direction() != direction {
        return Err(OfferError::WrongDirection {
            mid: mid_str.to_owned(),
            role,
            // What the client must have offered: the opposite of the server's side.
            expected: if direction == Direction::RecvOnly {
                "sendonly"
            } else {
                "recvonly"
            },
        });
    }
    let (pt, codec) = codec_for(rtc, mid, kind).ok_or(OfferError::NoCodec {
        mid: mid_str.to_owned(),
        wanted,
    })?;
    Ok((mid, pt, codec))
}

fn check_kind(
    mid: &str,
    found: MediaKind,
    expected: MediaKind,
    role: &'static str,
) -> Result<(), OfferError> {
    if found == expected {
        return Ok(());
    }
    let name = |k: MediaKind| {
        if k == MediaKind::Audio {
            "audio"
        } else {
            "video"
        }
    };
    Err(OfferError::WrongKind {
        mid: mid.to_owned(),
        found: name(found),
        role,
        expected: name(expected),
    })
}

/// The payload type and codec to use on `mid`: the first codec of the negotiated ones that
/// the remote side accepted on that m-line and that ting forwards.
fn codec_for(rtc: &Rtc, mid: Mid, kind: MediaKind) -> Option<(Pt, Codec)> {
    let media = rtc.media(mid)?;
    let remote = media.remote_pts();
    rtc.codec_config().params().iter().find_map(|p| {
        let codec = to_media_codec(p.spec().codec)?;
        let right_kind = (codec == Codec::Opus) == (kind == MediaKind::Audio);
        (right_kind && remote.contains(&p.pt())).then_some((p.pt(), codec))
    })
}

/// Audio level (0 loudest … 127 silence) from str0m's negated representation.
pub fn audio_level(ext: &ExtensionValues) -> Option<u8> {
    ext.audio_level.map(|v| (-i16::from(v)).clamp(0, 127) as u8)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use str0m::media::{Direction, MediaKind};
    use ting_proto::{Offer, Publish, ReceiveSlots};

    use super::*;

    /// A client offer with a microphone, and one audio and one video receive slot, from a
    /// non-lite str0m (as a browser offers: full ICE, trickle).
    fn client_offer() -> Offer {
        let now = Instant::now();
        let mut rtc = Rtc::builder().build(now);
        let local: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let mut api = rtc.sdp_api();
        let mic = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let audio = api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let video = api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let (offer, _pending) = api.apply().unwrap();
        Offer {
            sdp: offer.to_sdp_string(),
            publish: Publish {
                microphone: Some(mic.to_string()),
                ..Default::default()
            },
            receive: ReceiveSlots {
                audio: vec![audio.to_string()],
                video: vec![video.to_string()],
                screen: vec![],
            },
        }
    }

    /// The server's answer to `offer`.
    fn answer(offer: &Offer, opus_dtx: bool) -> String {
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .unwrap();
        let (outbox, _rx) = crate::outbox::outbox(8);
        Peer::accept(PeerSetup {
            pid: 1,
            room: RoomKey(1),
            offer,
            limits: SlotLimits {
                audio: 3,
                video: 9,
                screen: 1,
            },
            candidate: "10.0.0.1:4000".parse().unwrap(),
            cert: &cert,
            estimate_bandwidth: true,
            opus_dtx,
            outbox,
            now: Instant::now(),
        })
        .expect("offer accepted")
        .answer
    }

    #[test]
    fn the_answer_is_one_every_ice_stack_reads() {
        let sdp = answer(&client_offer(), true);
        let count = |needle: &str| sdp.lines().filter(|l| l.starts_with(needle)).count();
        let mlines = count("m=");
        assert_eq!(mlines, 3, "{sdp}");
        // ICE-lite, said once for the session; its one candidate in every m-section (stacks
        // differ in which bundled section they read), each list ended, and no promise of
        // trickling it will never do.
        assert_eq!(count("a=ice-lite"), 1, "{sdp}");
        let candidates: Vec<&str> = sdp
            .lines()
            .filter(|l| l.starts_with("a=candidate:"))
            .collect();
        assert_eq!(candidates.len(), mlines, "{sdp}");
        assert!(
            candidates
                .iter()
                .all(|c| c.contains("10.0.0.1 4000 typ host")),
            "{candidates:?}"
        );
        assert_eq!(count("a=end-of-candidates"), mlines, "{sdp}");
        assert_eq!(count("a=ice-options:trickle"), 0, "{sdp}");
        // Bundled on one transport with RTCP multiplexed, and the server takes the DTLS
        // role the client left to it (the client offered actpass).
        assert!(
            count("a=group:BUNDLE") == 1 && count("a=rtcp-mux") == mlines,
            "{sdp}"
        );
        assert_eq!(count("a=setup:passive"), mlines, "{sdp}");
        // Each receive slot declares its SSRC; the video slot its RTX SSRC too.
        assert_eq!(count("a=ssrc-group:FID"), 1, "{sdp}");
        assert!(count("a=ssrc:") >= 3, "{sdp}");
    }

    #[test]
    fn the_answer_asks_for_opus_dtx_only_when_configured() {
        let offer = client_offer();
        for dtx in [true, false] {
            let sdp = answer(&offer, dtx);
            // The client's Opus payload type, kept in both audio sections; its parameters
            // are the server's, which is where a browser's encoder reads `usedtx` from.
            let pt = sdp
                .lines()
                .find_map(|l| l.strip_prefix("a=rtpmap:")?.strip_suffix(" opus/48000/2"))
                .unwrap_or_else(|| panic!("no Opus in {sdp}"));
            let fmtp: Vec<&str> = sdp
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("a=fmtp:{pt} ")))
                .collect();
            assert_eq!(fmtp.len(), 2, "both audio sections: {sdp}");
            for params in fmtp {
                assert!(params.contains("useinbandfec=1"), "{params}");
                assert_eq!(params.contains("usedtx=1"), dtx, "{params}");
            }
        }
    }
}
