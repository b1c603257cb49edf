//! Join tokens: JWTs that say who may enter which room, with which role, until when.
//!
//! ting verifies HS256 tokens with a shared secret (and signs them, for the control API and
//! invite links), and EdDSA (Ed25519) or ES256 (P-256) tokens with public keys, so that an
//! organisation's own backend can sign tokens ting never could. Verification reads no clock:
//! the caller passes the time, and expiry is checked here, so the errors stay distinct.
//!
//! Claims:
//!
//! | claim   | required | meaning |
//! |---------|----------|---------|
//! | `room`  | yes | the room the token admits to |
//! | `exp`   | yes | expiry, seconds since the Unix epoch |
//! | `role`  | no  | `host`, `moderator`, `participant` (default) or `guest` |
//! | `name`  | no  | the display name; the person types one when it is missing |
//! | `sub`   | no  | a pseudonymous subject (never an e-mail address): removing someone keeps this subject out |
//! | `nbf`   | no  | not before, seconds since the Unix epoch |
//! | `lobby` | no  | `true`: wait in the lobby even where the room has none |
//! | `jti`   | no  | the token's id |

use std::fmt;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::roles::Role;

/// Clock skew allowed between the token's signer and this server, in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// The shortest HS256 secret accepted, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_SECRET_BYTES: usize = 32;

/// The largest token read, in bytes; longer ones are refused before they are decoded.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// What a join token says.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub room: String,
    pub exp: u64,
    #[serde(default = "default_role")]
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lobby: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

fn default_role() -> Role {
    Role::Participant
}

impl fmt::Debug for Claims {
    /// Without the name: it is personal data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claims")
            .field("room", &self.room)
            .field("role", &self.role)
            .field("exp", &self.exp)
            .field("has_name", &self.name.is_some())
            .field("has_sub", &self.sub.is_some())
            .field("lobby", &self.lobby)
            .finish_non_exhaustive()
    }
}

/// Why a token was refused. Each is told to the person in its own words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the join token is not a token ({0}); copy the whole link again")]
    Malformed(&'static str),
    #[error("the join token's signature is not valid here ({0})")]
    Invalid(&'static str),
    #[error("the join token expired; ask for a new link")]
    Expired,
    #[error("the join token is not valid yet; try again at the meeting's time")]
    NotYetValid,
    #[error("the join token is for another room")]
    WrongRoom,
}

/// Why token keys could not be set up (a configuration error).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the token secret is {0} bytes long; at least {MIN_SECRET_BYTES} are needed")]
    SecretTooShort(usize),
    #[error(
        "the public key is neither an Ed25519 (EdDSA) nor a P-256 (ES256) key in PEM form: {0}"
    )]
    BadPublicKey(String),
}

/// The keys tokens are verified with, and the secret they are signed with.
pub struct TokenKeys {
    secret: Option<(EncodingKey, DecodingKey)>,
    public: Vec<(Algorithm, DecodingKey)>,
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKeys")
            .field("secret", &self.secret.is_some())
            .field("public_keys", &self.public.len())
            .finish()
    }
}

impl TokenKeys {
    /// No keys: every token is refused, none can be issued.
    pub fn none() -> TokenKeys {
        TokenKeys {
            secret: None,
            public: Vec::new(),
        }
    }

    /// Adds the HS256 secret, used both to verify and to sign.
    pub fn with_secret(mut self, secret: &[u8]) -> Result<TokenKeys, KeyError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError::SecretTooShort(secret.len()));
        }
        let enc =
            EncodingKey::from_secret(secret).map_err(|e| KeyError::BadPublicKey(e.to_string()))?;
        let dec =
            DecodingKey::from_secret(secret).map_err(|e| KeyError::BadPublicKey(e.to_string()))?;
        self.secret = Some((enc, dec));
        Ok(self)
    }

    /// Adds a public key (PEM, `-----BEGIN PUBLIC KEY-----`): Ed25519 for EdDSA tokens or
    /// P-256 for ES256 tokens.
    pub fn with_public_key_pem(mut self, pem: &[u8]) -> Result<TokenKeys, KeyError> {
        if let Ok(k) = DecodingKey::from_ed_pem(pem)
            && ed25519_spki(pem)
        {
            self.public.push((Algorithm::EdDSA, k));
            return Ok(self);
        }
        match DecodingKey::from_ec_pem(pem) {
            Ok(k) => {
                self.public.push((Algorithm::ES256, k));
                Ok(self)
            }
            Err(e) => Err(KeyError::BadPublicKey(e.to_string())),
        }
    }

    pub fn can_sign(&self) -> bool {
        self.secret.is_some()
    }

    pub fn can_verify(&self) -> bool {
        self.secret.is_some() || !self.public.is_empty()
    }

    /// Signs `claims` with the HS256 secret; `None` without one.
    pub fn sign(&self, claims: &Claims) -> Option<String> {
        let (enc, _) = self.secret.as_ref()?;
        // Signing plain serializable claims with a valid HMAC key does not fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, enc).ok()
    }

    /// Verifies `token` for `room` at `now_unix` (seconds).
    pub fn verify(&self, token: &str, room: &str, now_unix: u64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed("longer than any join token"));
        }
        if token.split('.').count() != 3 {
            return Err(TokenError::Malformed("not three dot-separated parts"));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| TokenError::Malformed("its header is not valid"))?;
        let keys: Vec<&DecodingKey> = match header.alg {
            Algorithm::HS256 => self.secret.iter().map(|(_, d)| d).collect(),
            Algorithm::EdDSA | Algorithm::ES256 => self
                .public
                .iter()
                .filter(|(a, _)| *a == header.alg)
                .map(|(_, k)| k)
                .collect(),
            _ => {
                return Err(TokenError::Invalid(
                    "signed with an algorithm ting does not take",
                ));
            }
        };
        if keys.is_empty() {
            return Err(TokenError::Invalid(
                "no key for its algorithm is configured",
            ));
        }
        let mut validation = Validation::new(header.alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let mut last = TokenError::Invalid("the signature does not match");
        for key in keys {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => return check_claims(data.claims, room, now_unix),
                Err(e) => {
                    last = match e.kind() {
                        ErrorKind::InvalidSignature => {
                            TokenError::Invalid("the signature does not match")
                        }
                        ErrorKind::Json(_)
                        | ErrorKind::Base64(_)
                        | ErrorKind::Utf8(_)
                        | ErrorKind::InvalidToken
                        | ErrorKind::InvalidClaimFormat(_)
                        | ErrorKind::MissingRequiredClaim(_) => {
                            // Only reached once the signature is good: a signer's mistake.
                            return Err(TokenError::Malformed(
                                "its claims are not those of a join token",
                            ));
                        }
                        _ => TokenError::Invalid("the signature does not match"),
                    }
                }
            }
        }
        Err(last)
    }
}

fn check_claims(claims: Claims, room: &str, now: u64) -> Result<Claims, TokenError> {
    if claims.exp.saturating_add(LEEWAY_SECS) <= now {
        return Err(TokenError::Expired);
    }
    if claims
        .nbf
        .is_some_and(|nbf| nbf > now.saturating_add(LEEWAY_SECS))
    {
        return Err(TokenError::NotYetValid);
    }
    if claims.room != room {
        return Err(TokenError::WrongRoom);
    }
    Ok(claims)
}

/// True when a PEM public key is an Ed25519 SubjectPublicKeyInfo (OID 1.3.101.112), which
/// is 44 bytes of DER: `from_ed_pem` alone would take other key types' bytes too.
fn ed25519_spki(pem: &[u8]) -> bool {
    let text = String::from_utf8_lossy(pem);
    let b64: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    // "MCowBQYDK2VwAyEA" is the base64 of the 12-byte Ed25519 SPKI prefix.
    b64.starts_with("MCowBQYDK2VwAyEA")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn claims(room: &str) -> Claims {
        Claims {
            room: room.into(),
            exp: NOW + 600,
            role: Role::Host,
            name: Some("Hanna".into()),
            sub: Some("h-1".into()),
            nbf: None,
            iat: Some(NOW),
            lobby: false,
            jti: None,
        }
    }

    fn keys() -> TokenKeys {
        TokenKeys::none().with_secret(SECRET).unwrap()
    }

    #[test]
    fn a_signed_token_verifies_for_its_room() {
        let k = keys();
        let t = k.sign(&claims("board")).unwrap();
        let c = k.verify(&t, "board", NOW).unwrap();
        assert_eq!(c.role, Role::Host);
        assert_eq!(c.sub.as_deref(), Some("h-1"));
        assert_eq!(k.verify(&t, "other", NOW), Err(TokenError::WrongRoom));
    }

    #[test]
    fn expiry_and_not_before_are_checked_with_leeway() {
        let k = keys();
        let t = k.sign(&claims("r")).unwrap();
        assert!(k.verify(&t, "r", NOW + 600 + LEEWAY_SECS - 1).is_ok());
        assert_eq!(
            k.verify(&t, "r", NOW + 600 + LEEWAY_SECS),
            Err(TokenError::Expired)
        );
        let mut early = claims("r");
        early.nbf = Some(NOW + 3600);
        let t = k.sign(&early).unwrap();
        assert_eq!(k.verify(&t, "r", NOW), Err(TokenError::NotYetValid));
    }

    #[test]
    fn forged_and_broken_tokens_are_told_apart() {
        let k = keys();
        let other = TokenKeys::none()
            .with_secret(b"another secret that is long enough!!")
            .unwrap();
        let forged = other.sign(&claims("r")).unwrap();
        assert!(matches!(
            k.verify(&forged, "r", NOW),
            Err(TokenError::Invalid(_))
        ));
        for junk in ["", "abc", "a.b", "a.b.c", "....", &"x".repeat(5000)] {
            assert!(
                matches!(k.verify(junk, "r", NOW), Err(TokenError::Malformed(_))),
                "{junk:?}"
            );
        }
        // A good header and signature over a payload that is not join claims.
        let mut t = k.sign(&claims("r")).unwrap();
        t.push('x');
        assert!(k.verify(&t, "r", NOW).is_err());
        // alg "none" is never accepted.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJyb29tIjoiciIsImV4cCI6OTk5OTk5OTk5OX0.";
        assert!(matches!(
            k.verify(none, "r", NOW),
            Err(TokenError::Malformed(_) | TokenError::Invalid(_))
        ));
        // Without keys nothing verifies.
        assert!(matches!(
            TokenKeys::none().verify(&forged, "r", NOW),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn short_secrets_and_bad_keys_are_configuration_errors() {
        assert!(matches!(
            TokenKeys::none().with_secret(b"short"),
            Err(KeyError::SecretTooShort(5))
        ));
        assert!(TokenKeys::none().with_public_key_pem(b"not a key").is_err());
    }

    fn pem(der: &[u8]) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n")
    }

    #[test]
    fn organisations_sign_with_eddsa_or_es256_and_ting_verifies_with_their_public_key() {
        use aws_lc_rs::rand::SystemRandom;
        use aws_lc_rs::signature::{
            ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
        };
        let rng = SystemRandom::new();
        // Ed25519: SubjectPublicKeyInfo is a fixed 12-byte prefix and the 32-byte key.
        let ed = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let ed_pub = Ed25519KeyPair::from_pkcs8(ed.as_ref()).unwrap();
        let mut spki = hex_bytes("302a300506032b6570032100");
        spki.extend_from_slice(ed_pub.public_key().as_ref());
        let keys = TokenKeys::none()
            .with_public_key_pem(pem(&spki).as_bytes())
            .unwrap();
        let signer = EncodingKey::from_ed_der(ed.as_ref());
        let t =
            jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims("r"), &signer).unwrap();
        assert_eq!(keys.verify(&t, "r", NOW).unwrap().role, Role::Host);
        // P-256: the prefix for an uncompressed 65-byte point.
        let ec = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let ec_pub =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, ec.as_ref()).unwrap();
        let mut spki = hex_bytes("3059301306072a8648ce3d020106082a8648ce3d030107034200");
        spki.extend_from_slice(ec_pub.public_key().as_ref());
        let keys = keys.with_public_key_pem(pem(&spki).as_bytes()).unwrap();
        let signer = EncodingKey::from_ec_der(ec.as_ref());
        let t =
            jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims("r"), &signer).unwrap();
        assert!(keys.verify(&t, "r", NOW).is_ok());
        assert!(!keys.can_sign(), "public keys verify only");
        // A token signed by another EdDSA key is refused.
        let other = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::EdDSA),
            &claims("r"),
            &EncodingKey::from_ed_der(other.as_ref()),
        )
        .unwrap();
        assert!(matches!(
            keys.verify(&t, "r", NOW),
            Err(TokenError::Invalid(_))
        ));
    }

    fn hex_bytes(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn debug_hides_the_name() {
        let dbg = format!("{:?}", claims("r"));
        assert!(!dbg.contains("Hanna"), "{dbg}");
    }
}
