//! Room passcodes, kept only as salted hashes.
//!
//! A passcode is short by nature, so its hash does not stop an offline guesser who has the
//! database; what protects it online is the attempt limit per room and per address. The hash
//! keeps the passcode itself out of the database file, backups and the API's answers.

use std::fmt;

use aws_lc_rs::digest;

/// The longest passcode, in characters.
pub const MAX_CHARS: usize = 64;

/// A room's passcode as stored: a salt and SHA-256(salt ‖ passcode).
#[derive(Clone, PartialEq, Eq)]
pub struct Passcode {
    salt: [u8; 16],
    hash: [u8; 32],
}

impl fmt::Debug for Passcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passcode(<hidden>)")
    }
}

/// Why a passcode was refused as a room setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasscodeError {
    #[error("must be 4 to {MAX_CHARS} characters without control characters")]
    Shape,
    #[error("is not a stored passcode (salt:hash in hex)")]
    Stored,
}

impl Passcode {
    /// Hashes a new passcode with `salt` (random bytes from the caller).
    pub fn new(passcode: &str, salt: [u8; 16]) -> Result<Passcode, PasscodeError> {
        let n = passcode.chars().count();
        if !(4..=MAX_CHARS).contains(&n) || passcode.chars().any(char::is_control) {
            return Err(PasscodeError::Shape);
        }
        Ok(Passcode {
            salt,
            hash: hash(&salt, passcode),
        })
    }

    /// True when `attempt` is the passcode. Compares in constant time.
    pub fn matches(&self, attempt: &str) -> bool {
        if attempt.len() > MAX_CHARS * 4 {
            return false;
        }
        let h = hash(&self.salt, attempt);
        aws_lc_rs::constant_time::verify_slices_are_equal(&h, &self.hash).is_ok()
    }

    /// The stored form, `salt:hash` in hex.
    pub fn to_stored(&self) -> String {
        format!("{}:{}", hex(&self.salt), hex(&self.hash))
    }

    pub fn from_stored(s: &str) -> Result<Passcode, PasscodeError> {
        let (salt, hash) = s.split_once(':').ok_or(PasscodeError::Stored)?;
        Ok(Passcode {
            salt: unhex(salt).ok_or(PasscodeError::Stored)?,
            hash: unhex(hash).ok_or(PasscodeError::Stored)?,
        })
    }
}

fn hash(salt: &[u8; 16], passcode: &str) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(salt);
    ctx.update(passcode.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_itself_and_survives_storage() {
        let p = Passcode::new("4711", [7; 16]).unwrap();
        assert!(p.matches("4711"));
        assert!(!p.matches("4712"));
        assert!(!p.matches(""));
        let back = Passcode::from_stored(&p.to_stored()).unwrap();
        assert!(back.matches("4711"));
        assert!(!p.to_stored().contains("4711"));
        assert_eq!(format!("{p:?}"), "Passcode(<hidden>)");
        // Another salt, another hash.
        assert_ne!(
            Passcode::new("4711", [8; 16]).unwrap().to_stored(),
            p.to_stored()
        );
    }

    #[test]
    fn shapes_are_checked() {
        assert_eq!(Passcode::new("123", [0; 16]), Err(PasscodeError::Shape));
        assert_eq!(Passcode::new("12\n34", [0; 16]), Err(PasscodeError::Shape));
        assert!(Passcode::new(&"x".repeat(65), [0; 16]).is_err());
        assert!(Passcode::from_stored("zz:yy").is_err());
        assert!(Passcode::from_stored("").is_err());
    }
}
