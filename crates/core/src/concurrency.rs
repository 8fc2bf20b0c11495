//! Concurrency limits: how many jobs of one plugin, of one command, or of one
//! concurrency key may run at the same moment.
//!
//! A limit caps a *scope*: a plugin (`github`: every command it serves), a command
//! (`github.clone`), or one concurrency key within a plugin (the jobs of `github`
//! submitted with key `rust-lang/rust`). A job takes a slot in each scope it belongs
//! to that has a limit, and runs only when every one of them has a free slot; the
//! others stay `pending`, in line, and lose nothing. A job with a key is always
//! limited per key: [`DEFAULT_PER_KEY`] at once unless the plugin says otherwise.
//!
//! Keys share a plugin's capacity fairly: a key's next job rejoins the line behind the
//! jobs already waiting when its previous one started ([`rejoin_order`]), so keys take
//! turns and one key with ten thousand jobs cannot starve another with one.
//!
//! The limits come from the manifests (`[limits] concurrency`, `concurrency_per_key`,
//! `[limits.commands.NAME] concurrency`) and the daemon's configuration, which
//! overrides them. This module only says which scopes a job takes and how they are
//! named; the in-memory queue and the shared store each enforce them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

/// The longest concurrency key accepted, in bytes.
pub const MAX_CONCURRENCY_KEY_BYTES: usize = 256;

/// How many jobs of one key run at once when the plugin declares no per-key limit.
pub const DEFAULT_PER_KEY: u32 = 1;

/// The largest limit accepted: more than any worker pool.
pub const MAX_LIMIT: u32 = 100_000;

/// What a job is limited by: its plugin, its command, or its key within its plugin.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Every job of a plugin.
    Plugin(String),
    /// Every job of a command, `plugin.command`.
    Command(String),
    /// Every job of a plugin submitted with one concurrency key.
    Key {
        /// The plugin.
        plugin: String,
        /// The key.
        key: String,
    },
}

impl Scope {
    /// The scope's name as logs, `explain` and the database show it: `github`,
    /// `github.clone`, or `github[rust-lang/rust]`.
    pub fn name(&self) -> String {
        match self {
            Scope::Plugin(name) | Scope::Command(name) => name.clone(),
            Scope::Key { plugin, key } => format!("{plugin}[{key}]"),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// Every concurrency limit a daemon knows, by plugin and command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConcurrencyLimits {
    /// A plugin's or a command's limit, by its name (`github`, `github.clone`).
    pub running: BTreeMap<String, u32>,
    /// How many jobs of one key run at once, by plugin ([`DEFAULT_PER_KEY`] when absent).
    pub per_key: BTreeMap<String, u32>,
}

impl ConcurrencyLimits {
    /// Whether no plugin or command is limited (jobs with a key still are).
    pub fn is_empty(&self) -> bool {
        self.running.is_empty() && self.per_key.is_empty()
    }

    /// The limit of `scope`, if it has one.
    pub fn limit(&self, scope: &Scope) -> Option<u32> {
        match scope {
            Scope::Plugin(name) | Scope::Command(name) => self.running.get(name).copied(),
            Scope::Key { plugin, .. } => {
                Some(self.per_key.get(plugin).copied().unwrap_or(DEFAULT_PER_KEY))
            }
        }
    }

    /// The scopes a job of `command` with `key` takes a slot in, limited or not:
    /// its plugin, its command, and its key when it has one.
    pub fn scopes_of(command: &str, key: Option<&str>) -> Vec<Scope> {
        let plugin = plugin_of(command);
        let mut scopes = vec![
            Scope::Plugin(plugin.to_owned()),
            Scope::Command(command.to_owned()),
        ];
        if let Some(key) = key {
            scopes.push(Scope::Key {
                plugin: plugin.to_owned(),
                key: key.to_owned(),
            });
        }
        scopes
    }

    /// The limited scopes of a job of `command` with `key`, each with its limit.
    pub fn limited(&self, command: &str, key: Option<&str>) -> Vec<(Scope, u32)> {
        Self::scopes_of(command, key)
            .into_iter()
            .filter_map(|scope| self.limit(&scope).map(|limit| (scope, limit)))
            .collect()
    }

    /// `overrides` on top of these: each of its entries replaces the one here.
    pub fn overridden_by(mut self, overrides: &ConcurrencyLimits) -> Self {
        self.running.extend(overrides.running.clone());
        self.per_key.extend(overrides.per_key.clone());
        self
    }
}

/// The plugin of `command` (`github` of `github.commits`).
pub fn plugin_of(command: &str) -> &str {
    command
        .split_once('.')
        .map_or(command, |(plugin, _)| plugin)
}

/// Why a concurrency key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid concurrency key: it must be 1 to {MAX_CONCURRENCY_KEY_BYTES} bytes without control characters"
)]
pub struct InvalidKey;

/// Checks a concurrency key: 1 to [`MAX_CONCURRENCY_KEY_BYTES`] bytes, no control
/// characters (it is shown in logs and in `explain`).
pub fn validate_key(key: &str) -> Result<(), InvalidKey> {
    if key.is_empty() || key.len() > MAX_CONCURRENCY_KEY_BYTES || key.chars().any(char::is_control)
    {
        return Err(InvalidKey);
    }
    Ok(())
}

/// Where a key's next job stands in line: its own age, or, when the key's previous job
/// started later than that, the moment it started. So a key rejoins the back of the
/// line after each of its jobs starts, behind every job (of other keys, or of none)
/// already waiting then: keys take turns.
pub fn rejoin_order(
    created_at: DateTime<Utc>,
    key_last_started: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    key_last_started.map_or(created_at, |started| created_at.max(started))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn a_job_takes_a_slot_in_its_plugin_its_command_and_its_key() {
        let scopes = ConcurrencyLimits::scopes_of("github.commits", Some("rust-lang/rust"));
        let names: Vec<String> = scopes.iter().map(Scope::name).collect();
        assert_eq!(
            names,
            ["github", "github.commits", "github[rust-lang/rust]"]
        );
        assert_eq!(ConcurrencyLimits::scopes_of("echo.echo", None).len(), 2);
    }

    #[test]
    fn only_declared_scopes_are_limited_but_a_key_always_is() {
        let mut limits = ConcurrencyLimits::default();
        assert!(limits.limited("github.commits", None).is_empty());
        assert_eq!(
            limits.limited("github.commits", Some("k")),
            [(
                Scope::Key {
                    plugin: "github".into(),
                    key: "k".into()
                },
                DEFAULT_PER_KEY
            )]
        );
        limits.running.insert("github.clone".into(), 2);
        limits.per_key.insert("github".into(), 3);
        assert!(limits.limited("github.commits", None).is_empty());
        let limited = limits.limited("github.clone", Some("k"));
        assert_eq!(limited[0], (Scope::Command("github.clone".into()), 2));
        assert_eq!(limited[1].1, 3);
    }

    #[test]
    fn the_daemons_configuration_overrides_a_manifest() {
        let mut manifest = ConcurrencyLimits::default();
        manifest.running.insert("github".into(), 8);
        manifest.running.insert("github.clone".into(), 2);
        let mut config = ConcurrencyLimits::default();
        config.running.insert("github".into(), 2);
        let limits = manifest.overridden_by(&config);
        assert_eq!(limits.running["github"], 2);
        assert_eq!(limits.running["github.clone"], 2);
    }

    #[test]
    fn keys_are_checked() {
        assert!(validate_key("rust-lang/rust").is_ok());
        assert_eq!(validate_key(""), Err(InvalidKey));
        assert_eq!(validate_key("a\nb"), Err(InvalidKey));
        assert_eq!(
            validate_key(&"k".repeat(MAX_CONCURRENCY_KEY_BYTES + 1)),
            Err(InvalidKey)
        );
    }

    #[test]
    fn a_key_rejoins_the_line_when_its_previous_job_started() {
        let created = DateTime::UNIX_EPOCH + TimeDelta::seconds(10);
        assert_eq!(rejoin_order(created, None), created);
        let later = created + TimeDelta::seconds(5);
        assert_eq!(rejoin_order(created, Some(later)), later);
        assert_eq!(rejoin_order(later, Some(created)), later);
    }
}
