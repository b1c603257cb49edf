//! The control plane's cost per join: verifying a join token (HS256 and EdDSA) and admitting
//! the person into a room of 250, in `ting-control`, without I/O. A meeting of 250 arriving at
//! nine o'clock is 250 of these on the conductor's one task.
//!
//! `cargo bench --bench control`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use ting_control::{
    Admission, Claims, JoinRequest, LeaveReason, Now, Role, Rooms, RoomsConfig, TokenKeys,
};

const SECRET: &[u8] = b"a benchmark secret of at least 32 bytes";
const NOW: u64 = 1_800_000_000;

fn claims(sub: u32) -> Claims {
    Claims {
        room: "board".into(),
        exp: NOW + 3600,
        role: Role::Participant,
        name: Some("Aino Virtanen".into()),
        sub: Some(format!("emp-{sub}")),
        nbf: None,
        iat: Some(NOW),
        lobby: false,
        jti: None,
    }
}

fn now(t0: Instant) -> Now {
    Now {
        at: t0,
        unix_ms: NOW * 1000,
    }
}

/// A room of 249 and the 250th joining and leaving again, with a token signed by `sign`.
fn join_250th(c: &mut Criterion, name: &str, keys: TokenKeys, token: String) {
    let t0 = Instant::now();
    let mut rooms = Rooms::new(
        RoomsConfig {
            participant_timeout: Duration::from_secs(3600),
            ..RoomsConfig::default()
        },
        keys,
        1,
    );
    let others = TokenKeys::none().with_secret(SECRET).unwrap();
    for i in 0..249 {
        let t = others.sign(&claims(i)).unwrap();
        let _ = rooms.handle_join(
            JoinRequest {
                room: "board",
                name: "x",
                token: Some(&t),
                passcode: None,
                e2ee: false,
            },
            now(t0),
        );
    }
    while rooms.poll_event().is_some() {}
    c.bench_function(name, |b| {
        b.iter(|| {
            let a = rooms
                .handle_join(
                    JoinRequest {
                        room: "board",
                        name: "x",
                        token: Some(black_box(&token)),
                        passcode: None,
                        e2ee: false,
                    },
                    now(t0),
                )
                .expect("admitted");
            let Admission::Joined(j) = a else {
                panic!("no lobby here")
            };
            rooms.handle_leave(j.participant, LeaveReason::Left);
            while rooms.poll_event().is_some() {}
        })
    });
}

fn bench(c: &mut Criterion) {
    let hs = TokenKeys::none().with_secret(SECRET).unwrap();
    let token = hs.sign(&claims(999)).unwrap();
    join_250th(
        c,
        "join with an HS256 token into a room of 249",
        TokenKeys::none().with_secret(SECRET).unwrap(),
        token,
    );

    // EdDSA: an organisation's backend signs, ting holds the public key.
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(pair.public_key().as_ref());
    let pem = pem_of(&spki);
    let keys = TokenKeys::none()
        .with_secret(SECRET)
        .unwrap()
        .with_public_key_pem(pem.as_bytes())
        .unwrap();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &claims(998),
        &jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref()),
    )
    .unwrap();
    join_250th(
        c,
        "join with an EdDSA token into a room of 249",
        keys,
        token,
    );
}

fn pem_of(der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("-----BEGIN PUBLIC KEY-----\n{out}\n-----END PUBLIC KEY-----\n")
}

criterion_group!(benches, bench);
criterion_main!(benches);
