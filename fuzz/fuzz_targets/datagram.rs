//! A datagram on a media port, as the worker reads it before str0m's connection does
//! (`worker/core.rs`, `handle_datagram_received`): a datagram from an address no
//! connection holds is routed by the server ufrag of its STUN binding request
//! (`worker::stun::binding_request_ufrag`); a routed datagram is then demultiplexed by
//! str0m (`Receive::new`: STUN, DTLS, SRTP or SRTCP by RFC 7983's first-byte ranges).
//!
//! Properties: nothing panics; a routed ufrag is non-empty and holds no `:`; and every
//! binding request str0m's own STUN parser accepts, with one USERNAME whose local part is
//! non-empty, is routed by that local part (otherwise a client str0m would answer could
//! never reach its connection).

#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use str0m::ice::StunMessage;
use str0m::net::{Protocol, Receive};
use ting_server::worker::stun::binding_request_ufrag;

fuzz_target!(|data: &[u8]| {
    let routed = binding_request_ufrag(data);
    if let Some(ufrag) = routed {
        assert!(!ufrag.is_empty() && !ufrag.contains(':'), "{ufrag:?}");
    }
    let source: SocketAddr = "192.0.2.1:50000".parse().expect("an address");
    let local: SocketAddr = "127.0.0.1:40000".parse().expect("an address");
    let _ = Receive::new(Protocol::Udp, source, local, data);

    // str0m's demultiplexer hands datagrams starting 0 or 1, of 20 bytes or more, to its
    // STUN parser.
    if data.len() < 20 || data[0] >= 2 {
        return;
    }
    let Ok(msg) = StunMessage::parse(data) else {
        return;
    };
    if !msg.is_binding_request() || usernames(data) != 1 {
        return;
    }
    if let Some((ufrag, _)) = msg.split_username()
        && !ufrag.is_empty()
    {
        assert_eq!(routed, Some(ufrag));
    }
});

/// How many USERNAME attributes the message holds. With several, the router reads the
/// first and str0m the last before MESSAGE-INTEGRITY: harmless, since the connection the
/// datagram is routed to checks the one str0m reads against its own ufrag.
fn usernames(data: &[u8]) -> usize {
    let mut body = &data[20..];
    let mut n = 0;
    while body.len() >= 4 {
        let kind = u16::from_be_bytes([body[0], body[1]]);
        let len = usize::from(u16::from_be_bytes([body[2], body[3]]));
        n += usize::from(kind == 0x0006);
        let Some(rest) = body.get(4 + len.div_ceil(4) * 4..) else {
            break;
        };
        body = rest;
    }
    n
}
