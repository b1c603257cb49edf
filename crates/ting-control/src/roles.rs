//! Roles and what they allow.

use serde::{Deserialize, Serialize};

/// A participant's role, lowest rank first. A moderating action needs a rank strictly
/// higher than the target's: a moderator cannot remove a host, nor another moderator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Guest,
    Participant,
    Moderator,
    Host,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Moderator => "moderator",
            Role::Participant => "participant",
            Role::Guest => "guest",
        }
    }

    /// Hosts and moderators: admitted past lobby, lock and passcode; may moderate.
    pub fn is_moderator(self) -> bool {
        self >= Role::Moderator
    }

    /// What the role allows before any moderator changes it.
    pub fn permissions(self) -> Permissions {
        let moderator = self.is_moderator();
        Permissions {
            publish_audio: true,
            publish_video: true,
            publish_screen: self >= Role::Participant,
            chat: true,
            admit: moderator,
            moderate: moderator,
            unmute: true,
        }
    }
}

/// What one participant may do now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish_audio: bool,
    pub publish_video: bool,
    pub publish_screen: bool,
    pub chat: bool,
    /// Let people in from the lobby and create invite links.
    pub admit: bool,
    /// Mute, remove, lock, change roles, give the screen, end the meeting.
    pub moderate: bool,
    /// Turn the microphone or camera back on after a moderator turned it off.
    pub unmute: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_and_rights() {
        assert!(Role::Host > Role::Moderator);
        assert!(Role::Moderator > Role::Participant);
        assert!(Role::Participant > Role::Guest);
        let guest = Role::Guest.permissions();
        assert!(guest.publish_audio && guest.publish_video && guest.chat);
        assert!(!guest.publish_screen && !guest.admit && !guest.moderate);
        let p = Role::Participant.permissions();
        assert!(p.publish_screen && !p.admit && !p.moderate);
        for r in [Role::Moderator, Role::Host] {
            let m = r.permissions();
            assert!(m.admit && m.moderate && m.publish_screen);
        }
    }
}
