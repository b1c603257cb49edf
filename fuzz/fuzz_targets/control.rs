//! What the control plane reads from strangers besides signalling: join tokens (any bytes a
//! link may carry) and the control API's request bodies, and the passcode hashes read back
//! from the database.
//!
//! Properties: nothing panics; a token that verifies is for the room asked and not expired;
//! a token the server signs verifies as itself; API bodies that parse serialize and parse
//! back as themselves.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ting_control::{Claims, Passcode, Role, TokenKeys};
use ting_proto::api::{CreateRoom, TokenRequest, UpdateRoom};

const SECRET: &[u8] = b"a fuzzing secret of at least 32 bytes";
const NOW: u64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let keys = TokenKeys::none().with_secret(SECRET).expect("a long secret");
    match which % 5 {
        0 => {
            if let Ok(c) = keys.verify(text, "room", NOW) {
                assert_eq!(c.room, "room");
                assert!(c.exp + ting_control::LEEWAY_SECS > NOW);
            }
        }
        1 => {
            // Claims from the input, signed by the server, verify as themselves.
            if let Ok(c) = serde_json::from_str::<Claims>(text) {
                let t = keys.sign(&c).expect("the server signs");
                match keys.verify(&t, &c.room, NOW) {
                    Ok(back) => assert!(back == c),
                    Err(_) => assert!(
                        c.exp + ting_control::LEEWAY_SECS <= NOW
                            || c.nbf.is_some_and(|n| n > NOW + ting_control::LEEWAY_SECS)
                    ),
                }
                let _ = c.role == Role::Host;
            }
        }
        2 => {
            if let Ok(b) = serde_json::from_str::<CreateRoom>(text) {
                let json = serde_json::to_string(&b).unwrap();
                assert_eq!(serde_json::from_str::<CreateRoom>(&json).unwrap(), b);
                if let Some(p) = &b.passcode
                    && let Ok(stored) = Passcode::new(p, [1; 16])
                {
                    assert!(stored.matches(p));
                }
            }
        }
        3 => {
            let _ = serde_json::from_str::<UpdateRoom>(text);
            if let Ok(b) = serde_json::from_str::<TokenRequest>(text) {
                let json = serde_json::to_string(&b).unwrap();
                assert_eq!(serde_json::from_str::<TokenRequest>(&json).unwrap(), b);
            }
        }
        _ => {
            if let Ok(p) = Passcode::from_stored(text) {
                assert_eq!(Passcode::from_stored(&p.to_stored()).unwrap(), p);
            }
        }
    }
});
