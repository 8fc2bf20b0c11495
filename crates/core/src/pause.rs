//! Pauses: an operator's word that a plugin's or a command's pending jobs wait.
//!
//! A pause names a plugin (`github`: every command it serves) or one command
//! (`github.commits`). While it lasts, the jobs it covers stay `pending` and no worker
//! claims them; jobs already running finish. Pauses are stored, so they survive a
//! restart and hold on every daemon of a shared store; resuming puts the held jobs back
//! in line where their priority and age place them.

use chrono::{DateTime, Utc};

/// The longest target accepted, in bytes: plugin and command names are short.
pub const MAX_TARGET_BYTES: usize = 200;

/// A stored pause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pause {
    /// The plugin or the command paused.
    pub target: String,
    /// When it was paused.
    pub paused_at: DateTime<Utc>,
}

/// Why a pause target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot pause {0:?}: name a plugin (such as \"github\") or a command (such as \"github.commits\")"
)]
pub struct InvalidTarget(pub String);

/// Checks that `target` names a plugin or a command: one or two dot-separated names of
/// letters, digits, `_` and `-`.
pub fn validate_target(target: &str) -> Result<(), InvalidTarget> {
    let name = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    let well_formed = target.len() <= MAX_TARGET_BYTES
        && match target.split_once('.') {
            Some((plugin, command)) => name(plugin) && name(command),
            None => name(target),
        };
    if well_formed {
        Ok(())
    } else {
        Err(InvalidTarget(target.to_owned()))
    }
}

/// Whether a pause of `target` holds jobs of `command`: it names the command or its
/// plugin.
pub fn covers(target: &str, command: &str) -> bool {
    target == command
        || command
            .split_once('.')
            .is_some_and(|(plugin, _)| plugin == target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_pause_covers_its_commands_and_a_command_pause_only_itself() {
        assert!(covers("github", "github.commits"));
        assert!(covers("github.commits", "github.commits"));
        assert!(!covers("github.commits", "github.issues"));
        assert!(!covers("git", "github.commits"));
        assert!(!covers("github", "gitlab.commits"));
    }

    #[test]
    fn targets_are_plugins_or_commands() {
        for good in ["github", "github.commits", "my-plugin.do_it"] {
            assert_eq!(validate_target(good), Ok(()), "{good}");
        }
        let long = "a".repeat(MAX_TARGET_BYTES + 1);
        for bad in [
            "", ".", "github.", ".commits", "a.b.c", "git hub", "*", &long,
        ] {
            assert!(validate_target(bad).is_err(), "{bad:?}");
        }
    }
}
