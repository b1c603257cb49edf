//! Validated room and display names.

use std::fmt;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("is empty")]
    Empty,
    #[error("is {len} characters long, at most {max} are allowed")]
    TooLong { len: usize, max: usize },
    #[error("contains {found:?}; only letters a-z and A-Z, digits, '-' and '_' are allowed")]
    BadCharacter { found: char },
    #[error("contains a control character")]
    ControlCharacter,
}

/// A room's name: what follows `/m/` in the meeting link.
///
/// 1 to 64 characters of ASCII letters, digits, `-` and `_`, so that it is safe in a URL
/// path and a log line as it is.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(String);

impl RoomName {
    pub const MAX_LEN: usize = 64;

    pub fn parse(s: &str) -> Result<RoomName, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if let Some(found) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(NameError::BadCharacter { found });
        }
        if s.len() > Self::MAX_LEN {
            return Err(NameError::TooLong {
                len: s.len(),
                max: Self::MAX_LEN,
            });
        }
        Ok(RoomName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoomName({})", self.0)
    }
}

/// The name a participant shows to others. Personal data: relayed, never logged.
///
/// Surrounding whitespace is trimmed; 1 to 64 characters (not bytes), no control characters.
#[derive(Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub const MAX_CHARS: usize = 64;

    pub fn parse(s: &str) -> Result<DisplayName, NameError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.chars().any(char::is_control) {
            return Err(NameError::ControlCharacter);
        }
        let len = s.chars().count();
        if len > Self::MAX_CHARS {
            return Err(NameError::TooLong {
                len,
                max: Self::MAX_CHARS,
            });
        }
        Ok(DisplayName(s.to_owned()))
    }

    /// The name itself, for relaying to the room. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DisplayName(<{} chars>)", self.0.chars().count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert!(RoomName::parse("team-7_standup").is_ok());
        assert_eq!(RoomName::parse(""), Err(NameError::Empty));
        assert_eq!(
            RoomName::parse("../etc"),
            Err(NameError::BadCharacter { found: '.' })
        );
        assert_eq!(
            RoomName::parse("kärnä"),
            Err(NameError::BadCharacter { found: 'ä' })
        );
        assert!(matches!(
            RoomName::parse(&"a".repeat(65)),
            Err(NameError::TooLong { len: 65, max: 64 })
        ));
    }

    #[test]
    fn display_names() {
        assert_eq!(
            DisplayName::parse("  Åsa Öberg ").unwrap().expose(),
            "Åsa Öberg"
        );
        assert_eq!(DisplayName::parse("   "), Err(NameError::Empty));
        assert_eq!(
            DisplayName::parse("a\u{7}b"),
            Err(NameError::ControlCharacter)
        );
        // 64 multi-byte characters are fine.
        assert!(DisplayName::parse(&"ø".repeat(64)).is_ok());
        assert!(DisplayName::parse(&"ø".repeat(65)).is_err());
        // Debug output never shows the name.
        let dbg = format!("{:?}", DisplayName::parse("Aino Virtanen").unwrap());
        assert!(!dbg.contains("Aino"), "{dbg}");
    }
}
