//! Just enough STUN (RFC 8489) to find which participant a binding request is for.
//!
//! A browser's first packets to the server are STUN binding requests from an address the
//! server has not seen yet. Their USERNAME attribute is `<server ufrag>:<client ufrag>`, and
//! the server ufrag names the participant. Everything after that — integrity, the
//! response — is str0m's job; this only routes the datagram.

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;

/// The server-side ufrag of a STUN binding request, if `data` is one.
pub fn binding_request_ufrag(data: &[u8]) -> Option<&str> {
    if data.len() < 20 || data[0] >= 2 || data[4..8] != MAGIC_COOKIE {
        return None;
    }
    // Binding request: method 0x001, class request.
    if u16::from_be_bytes([data[0], data[1]]) != 0x0001 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
    let body = data.get(20..20 + len)?;
    let mut at = 0;
    while at + 4 <= body.len() {
        let kind = u16::from_be_bytes([body[at], body[at + 1]]);
        let vlen = usize::from(u16::from_be_bytes([body[at + 2], body[at + 3]]));
        let value = body.get(at + 4..at + 4 + vlen)?;
        if kind == ATTR_USERNAME {
            let user = std::str::from_utf8(value).ok()?;
            return user.split(':').next().filter(|u| !u.is_empty());
        }
        at += 4 + vlen.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, value) in attrs {
            body.extend_from_slice(&kind.to_be_bytes());
            body.extend_from_slice(&(value.len() as u16).to_be_bytes());
            body.extend_from_slice(value);
            while body.len() % 4 != 0 {
                body.push(0);
            }
        }
        let mut msg = vec![0x00, 0x01];
        msg.extend_from_slice(&(body.len() as u16).to_be_bytes());
        msg.extend_from_slice(&MAGIC_COOKIE);
        msg.extend_from_slice(&[7; 12]);
        msg.extend_from_slice(&body);
        msg
    }

    #[test]
    fn finds_the_server_ufrag() {
        let msg = request(&[(0x0024, &[0, 0, 0, 1]), (ATTR_USERNAME, b"srvU:cliU")]);
        assert_eq!(binding_request_ufrag(&msg), Some("srvU"));
    }

    #[test]
    fn ignores_everything_else() {
        assert_eq!(binding_request_ufrag(&[]), None);
        assert_eq!(binding_request_ufrag(&[0u8; 19]), None);
        // No username.
        assert_eq!(binding_request_ufrag(&request(&[(0x0024, &[0; 4])])), None);
        // A binding response.
        let mut msg = request(&[(ATTR_USERNAME, b"a:b")]);
        msg[0] = 0x01;
        assert_eq!(binding_request_ufrag(&msg), None);
        // Length field past the end, attribute length past the end.
        let mut msg = request(&[(ATTR_USERNAME, b"a:b")]);
        msg[3] = 200;
        assert_eq!(binding_request_ufrag(&msg), None);
        let mut msg = request(&[(ATTR_USERNAME, b"a:b")]);
        msg[23] = 99;
        assert_eq!(binding_request_ufrag(&msg), None);
        // Empty ufrag, invalid UTF-8.
        assert_eq!(
            binding_request_ufrag(&request(&[(ATTR_USERNAME, b":x")])),
            None
        );
        assert_eq!(
            binding_request_ufrag(&request(&[(ATTR_USERNAME, &[0xff, 0xfe])])),
            None
        );
    }
}
