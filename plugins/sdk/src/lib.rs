//! The Honeydew plugin SDK: write a plugin as a [`Plugin`] impl plus [`export_plugin!`].
//!
//! A plugin is a WebAssembly component implementing the WIT world
//! `honeydew:plugin/plugin` (see `wit/plugin.wit`). The daemon calls
//! [`Plugin::describe`] once when it loads the component and [`Plugin::run`] once per
//! job attempt, each time in a fresh sandbox: nothing survives between calls.
//!
//! ```no_run
//! use honeydew_plugin_sdk::{Plugin, PluginError, PluginInfo};
//!
//! struct Echo;
//!
//! impl Plugin for Echo {
//!     fn describe() -> PluginInfo {
//!         PluginInfo::new("echo", env!("CARGO_PKG_VERSION"), &["echo"])
//!     }
//!
//!     fn run(command: &str, payload: &[u8]) -> Result<Vec<u8>, PluginError> {
//!         match command {
//!             "echo" => Ok(payload.to_vec()),
//!             _ => Err(PluginError::unknown_command(command)),
//!         }
//!     }
//! }
//!
//! honeydew_plugin_sdk::export_plugin!(Echo);
//! ```
//!
//! Beside the trait: [`config`] reads the manifest's `[config]` table, [`http`] sends
//! requests through the daemon's allowlist, [`rate_limit`] reads how long a server asks
//! to wait, [`paging`] follows an API's pages into one `{items, truncated, next}`
//! envelope, [`time`] checks and normalises timestamps, [`vocabulary`] is the shape
//! every integration gives a repository, commit, pull request, issue and person,
//! [`workspace`] has the daemon download and unpack an archive into the job's own
//! directory, [`job`] snoozes or cancels the job itself or reports its progress,
//! [`log`] writes lines to the attempt's log (`honeydew logs`), and [`parse_payload`] /
//! [`to_json`] turn JSON payloads and results into typed values with the right error
//! class.

#[doc(hidden)]
#[allow(missing_docs)]
pub mod bindings;
pub mod config;
mod error;
pub mod http;
pub mod job;
pub mod log;
pub mod paging;
pub mod rate_limit;
pub mod time;
pub mod vocabulary;
pub mod workspace;

pub use error::PluginError;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// What a plugin says about itself when the daemon loads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// The plugin's name; jobs address its commands as `NAME.COMMAND`. It should match
    /// the component's file name (`NAME.wasm`).
    pub name: String,
    /// The plugin's version, recorded on every job it runs.
    pub version: String,
    /// The commands served, without the `NAME.` prefix.
    pub commands: Vec<String>,
}

impl PluginInfo {
    /// Describes plugin `name` at `version` (usually `env!("CARGO_PKG_VERSION")`)
    /// serving `commands`.
    pub fn new(name: &str, version: &str, commands: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            commands: commands.iter().map(|&command| command.to_owned()).collect(),
        }
    }
}

/// A plugin: the daemon's two entry points. Register the implementing type with
/// [`export_plugin!`].
pub trait Plugin {
    /// Names the plugin, its version and its commands. Called once at load: keep it
    /// quick and free of I/O, or the daemon skips the plugin.
    fn describe() -> PluginInfo;

    /// Runs `command` on `payload`, returning the job's result bytes (JSON by
    /// convention) or a classified error.
    fn run(command: &str, payload: &[u8]) -> Result<Vec<u8>, PluginError>;
}

/// Parses a JSON payload; an empty payload reads as `{}`.
///
/// A payload that does not fit `T` is a permanent error naming the offending field by
/// its path from the top (`filter.state`, `items[2].name`):
/// `invalid payload: field "owner": invalid type: integer, expected a string`,
/// `invalid payload: missing field "filter.state"`, or, for a type that denies unknown
/// fields, `invalid payload: unknown field "ownr", expected one of ...`. Malformed JSON
/// keeps serde's line and column instead.
pub fn parse_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, PluginError> {
    let payload = if payload.is_empty() { b"{}" } else { payload };
    let mut deserializer = serde_json::Deserializer::from_slice(payload);
    let value = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|error| PluginError::permanent(payload_error(&error)))?;
    deserializer
        .end()
        .map_err(|error| PluginError::permanent(format!("invalid payload: {error}")))?;
    Ok(value)
}

/// The message for a payload that does not parse as the plugin's type.
fn payload_error(error: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let inner = error.inner();
    if !inner.is_data() {
        // Malformed JSON, or it ends early: where it broke says more than a field.
        return format!("invalid payload: {inner}");
    }
    // serde_json ends its messages with the position, which a field's path replaces.
    let message = inner.to_string();
    let position = format!(" at line {} column {}", inner.line(), inner.column());
    let message = message.strip_suffix(&position).unwrap_or(&message);
    let path = error.path().to_string();
    let path = (path != ".").then_some(path);
    // serde names a missing or unknown field itself, relative to its object: give its
    // whole path instead. The path of an unknown field ends with the field already; that
    // of a missing one ends at the object it is missing from.
    if let Some((name, rest)) = field_named(message, "missing field `") {
        let name = match &path {
            Some(path) => format!("{path}.{name}"),
            None => name.to_owned(),
        };
        return format!("invalid payload: missing field \"{name}\"{rest}");
    }
    if let Some((name, rest)) = field_named(message, "unknown field `") {
        let name = path.as_deref().unwrap_or(name);
        return format!("invalid payload: unknown field \"{name}\"{rest}");
    }
    match path {
        Some(path) => format!("invalid payload: field \"{path}\": {message}"),
        None => format!("invalid payload: {message}"),
    }
}

/// The field a serde message starting with `prefix` names, and what follows it.
fn field_named<'a>(message: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    message.strip_prefix(prefix)?.split_once('`')
}

/// Serialises a result as JSON; failing to is a permanent error.
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, PluginError> {
    serde_json::to_vec(value)
        .map_err(|error| PluginError::permanent(format!("cannot encode result: {error}")))
}

/// Exports a [`Plugin`] implementation as the component's `describe` and `run`.
///
/// Use it once per plugin crate (a `cdylib`), at the top level:
/// `honeydew_plugin_sdk::export_plugin!(MyPlugin);`
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            type HoneydewPlugin = $crate::__private::Adapter<$plugin>;
            $crate::__private::export! { HoneydewPlugin with_types_in $crate::bindings }
        };
    };
}

/// Support for [`export_plugin!`]; not part of the API.
#[doc(hidden)]
pub mod __private {
    use std::marker::PhantomData;

    pub use crate::bindings::export;

    use crate::bindings;
    use crate::{Plugin, PluginError};

    /// Implements the generated `Guest` trait for any [`Plugin`].
    pub struct Adapter<P>(PhantomData<P>);

    impl<P: Plugin> bindings::Guest for Adapter<P> {
        fn describe() -> bindings::PluginInfo {
            let info = P::describe();
            bindings::PluginInfo {
                name: info.name,
                version: info.version,
                commands: info.commands,
            }
        }

        fn run(command: String, payload: Vec<u8>) -> Result<Vec<u8>, bindings::Error> {
            P::run(&command, &payload).map_err(PluginError::into)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Search {
        owner: String,
        per_page: Option<u8>,
        filter: Option<Filter>,
        labels: Option<Vec<Label>>,
        extra: Option<BTreeMap<String, u32>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Filter {
        state: State,
        author: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum State {
        Open,
        Closed,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Label {
        name: String,
    }

    /// The message `parse_payload::<Search>` gives for `payload`, or "ok".
    fn check(payload: &str, expected: &str) {
        let message = match parse_payload::<Search>(payload.as_bytes()) {
            Ok(_) => "ok".to_owned(),
            Err(error) => {
                assert!(!error.is_retriable(), "{error}");
                error.message().to_owned()
            }
        };
        assert_eq!(message, expected, "{payload}");
    }

    #[test]
    fn payload_errors_name_the_field() {
        check(r#"{"owner":"octocat"}"#, "ok");
        check(
            r#"{"owner":"o","filter":{"state":"open"},"labels":[{"name":"x"}]}"#,
            "ok",
        );
        // Missing, at the top and nested.
        check("", r#"invalid payload: missing field "owner""#);
        check("{}", r#"invalid payload: missing field "owner""#);
        check(
            r#"{"owner":"o","filter":{}}"#,
            r#"invalid payload: missing field "filter.state""#,
        );
        check(
            r#"{"owner":"o","labels":[{"name":"a"},{}]}"#,
            r#"invalid payload: missing field "labels[1].name""#,
        );
        // The wrong type.
        check(
            r#"{"owner":12}"#,
            r#"invalid payload: field "owner": invalid type: integer `12`, expected a string"#,
        );
        check(
            r#"{"owner":"o","per_page":300}"#,
            r#"invalid payload: field "per_page": invalid value: integer `300`, expected u8"#,
        );
        check(
            r#"{"owner":"o","per_page":-1}"#,
            r#"invalid payload: field "per_page": invalid value: integer `-1`, expected u8"#,
        );
        check(
            r#"{"owner":"o","filter":{"state":"merged"}}"#,
            r#"invalid payload: field "filter.state": unknown variant `merged`, expected `open` or `closed`"#,
        );
        check(
            r#"{"owner":"o","filter":{"state":"open","author":false}}"#,
            r#"invalid payload: field "filter.author": invalid type: boolean `false`, expected a string"#,
        );
        check(
            r#"{"owner":"o","labels":[{"name":"a"},{"name":[]}]}"#,
            r#"invalid payload: field "labels[1].name": invalid type: sequence, expected a string"#,
        );
        check(
            r#"{"owner":"o","extra":{"a b":"1"}}"#,
            r#"invalid payload: field "extra.a b": invalid type: string "1", expected u32"#,
        );
        check(
            r#"{"owner":"o","filter":"open"}"#,
            r#"invalid payload: field "filter": invalid type: string "open", expected struct Filter"#,
        );
        check(
            "true",
            "invalid payload: invalid type: boolean `true`, expected struct Search",
        );
        // Unknown fields, where the type denies them.
        check(
            r#"{"owner":"o","ownr":"p"}"#,
            r#"invalid payload: unknown field "ownr", expected one of `owner`, `per_page`, `filter`, `labels`, `extra`"#,
        );
        check(
            r#"{"owner":"o","filter":{"state":"open","sate":1}}"#,
            r#"invalid payload: unknown field "filter.sate", expected `state` or `author`"#,
        );
        // Malformed JSON keeps its position.
        check(
            r#"{"owner":"#,
            "invalid payload: EOF while parsing a value at line 1 column 9",
        );
        check(
            r#"{"owner":"o"} x"#,
            "invalid payload: trailing characters at line 1 column 15",
        );
    }
}
