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
//! requests through the daemon's allowlist, and [`parse_payload`] / [`to_json`] turn
//! JSON payloads and results into typed values with the right error class.

#[doc(hidden)]
#[allow(missing_docs)]
pub mod bindings;
pub mod config;
mod error;
pub mod http;

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

/// Parses a JSON payload; an empty payload reads as `{}`. A payload that does not fit
/// `T` is a permanent error naming the offending field (``missing field `owner` ``).
pub fn parse_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, PluginError> {
    let payload = if payload.is_empty() { b"{}" } else { payload };
    serde_json::from_slice(payload)
        .map_err(|error| PluginError::permanent(format!("invalid payload: {error}")))
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
