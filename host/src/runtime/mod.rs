//! The plugin runtime: the only module that touches wasmtime. It turns a job into one
//! sandboxed call of a WebAssembly component and reports what happened.
//!
//! [`Runtime`] is the production [`Executor`] and the daemon's [`CommandCatalog`]. It
//! owns one engine (`engine`: pooling allocator, fuel, epoch interruption, the epoch
//! ticker), the on-disk compile cache (`cache`), the set of loaded plugins and its
//! hot reload (`registry`, `loader`, `watch`), the manifest format (`manifest`),
//! the per-job sandbox (`sandbox`: fresh store, limits, error mapping) and the
//! outgoing-HTTP policy (`egress`: allowlist, auth headers, redirects followed with
//! the decisions in `redirect`, body cap, timeouts) and the job's workspace
//! (`workspace`: the manifest's grant, the preopen, `fetch-archive`).
//! Command suggestions live in `catalog`; generated bindings are fenced in
//! `bindings`. No wasmtime type crosses this module's public API, and nothing here
//! touches the store, the queue or the worker pool: they see only [`Execution`] and
//! [`CommandDefaults`].

mod bindings;
mod cache;
mod catalog;
mod egress;
mod egress_limits;
mod engine;
mod loader;
mod manifest;
mod redirect;
mod registry;
mod sandbox;
mod watch;
mod workspace;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::job::{ErrorKind, Job};
use crate::output::OutputSink;
use crate::queue::{CommandCatalog, CommandDefaults, SubmitError};
use crate::retry::Failure;
use crate::worker::{BoxFuture, Execution, Executor};
use honeydew_core::concurrency::ConcurrencyLimits;

use self::registry::Registry;
pub use manifest::PluginConcurrency;

/// How the runtime is set up. Built by the daemon from its configuration.
#[derive(Clone)]
pub struct RuntimeConfig {
    /// Where `NAME.wasm` and `NAME.toml` live; watched for changes.
    pub plugin_dir: PathBuf,
    /// The compiled-artifact cache, keyed by the component's content and the engine's
    /// compilation settings, so a restart compiles nothing that did not change.
    pub cache_dir: PathBuf,
    /// Limits used wherever a manifest gives none.
    pub defaults: Limits,
    /// Values for `${NAME}` in manifests' `[[auth]]` rules (the daemon's environment and
    /// config file). Never logged and never handed to a guest.
    pub secrets: HashMap<String, String>,
    /// Names of environment variables that are set but were not declared as secrets:
    /// a manifest naming one is refused, and the reason says how to declare it.
    pub undeclared_env: Vec<String>,
    /// The largest result a plugin may return; larger ones fail the job for good.
    pub max_result_bytes: usize,
    /// The longest retry delay a plugin may ask for (its `retry-after-ms`, which the SDK
    /// takes from an upstream server's `Retry-After`); longer requests are cut to this.
    pub max_retry_after: Duration,
    /// The largest HTTP response body a plugin may read; the guest sees an error past it.
    pub max_response_body_bytes: usize,
    /// Where jobs of plugins granted a `[workspace]` get their directory; without it,
    /// such plugins are refused at load.
    pub workspaces: Option<crate::workspace::Workspaces>,
    /// Where plugin loads and refusals and each plugin's egress are counted, when the
    /// daemon serves metrics.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// The rate limits plugins' requests keep (learned from responses, declared in
    /// manifests); without it, none is kept.
    pub rate_limits: Option<Arc<crate::rate_limits::RateLimits>>,
    /// Concurrency limits of the daemon's configuration, over the manifests' own.
    pub concurrency: ConcurrencyLimits,
}

impl RuntimeConfig {
    /// A configuration with default limits and caps and no secrets.
    pub fn new(plugin_dir: impl Into<PathBuf>, cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            plugin_dir: plugin_dir.into(),
            cache_dir: cache_dir.into(),
            defaults: Limits::default(),
            secrets: HashMap::new(),
            undeclared_env: Vec::new(),
            max_result_bytes: 4 * 1024 * 1024,
            max_retry_after: crate::retry::DEFAULT_MAX_RETRY_AFTER,
            max_response_body_bytes: 16 * 1024 * 1024,
            workspaces: None,
            metrics: None,
            rate_limits: None,
            concurrency: ConcurrencyLimits::default(),
        }
    }
}

impl fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut secret_names: Vec<&String> = self.secrets.keys().collect();
        secret_names.sort();
        f.debug_struct("RuntimeConfig")
            .field("plugin_dir", &self.plugin_dir)
            .field("cache_dir", &self.cache_dir)
            .field("defaults", &self.defaults)
            .field("secrets", &format_args!("{secret_names:?} (values hidden)"))
            .field("max_result_bytes", &self.max_result_bytes)
            .field("max_retry_after", &self.max_retry_after)
            .field("max_response_body_bytes", &self.max_response_body_bytes)
            .field("workspaces", &self.workspaces)
            .field("metrics", &self.metrics.is_some())
            .field("rate_limits", &self.rate_limits.is_some())
            .finish()
    }
}

/// What one job attempt may use.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Fuel (roughly, WebAssembly instructions) per attempt.
    pub fuel: u64,
    /// Memory for all linear memories and tables of the sandbox together, in MiB.
    pub memory_mib: u64,
    /// Wall-clock deadline per attempt, covering time spent waiting on HTTP.
    pub timeout: Duration,
    /// Retries after the first attempt, when the submitter asks for none.
    pub max_retries: u32,
}

impl Default for Limits {
    /// About a CPU-second of fuel, 64 MiB, 30 s, 3 retries.
    fn default() -> Self {
        Self {
            fuel: 2_000_000_000,
            memory_mib: 64,
            timeout: Duration::from_secs(30),
            max_retries: 3,
        }
    }
}

/// A loaded plugin, as listed to users.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginSummary {
    /// The plugin's name: the file stem and what `describe` reports.
    pub name: String,
    /// The version `describe` reports.
    pub version: String,
    /// Hex sha256 of the component file.
    pub sha256: String,
    /// Full command names served, such as `github.commits`, sorted.
    pub commands: Vec<String>,
    /// The limits in force (the manifest's, or the daemon's defaults).
    pub limits: Limits,
    /// The concurrency limits its manifest declares (the daemon's configuration may
    /// override them).
    pub concurrency: PluginConcurrency,
    /// The manifest's `allowed_hosts`, as written.
    pub allowed_hosts: Vec<String>,
}

/// A plugin file that could not be loaded, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedPlugin {
    /// The component file (`NAME.wasm`).
    pub path: PathBuf,
    /// What was wrong, precisely enough to fix it.
    pub reason: String,
}

/// A change of the plugin set, published as it happens (see [`Runtime::subscribe`]).
#[derive(Clone, Debug, PartialEq)]
pub enum PluginEvent {
    /// A plugin was loaded or replaced and now serves new jobs.
    Loaded(PluginSummary),
    /// A plugin's file was removed; it serves no new jobs.
    Unloaded {
        /// The plugin's name.
        name: String,
    },
    /// A plugin file was skipped; the previous version, if any, keeps serving.
    Skipped(SkippedPlugin),
}

/// What the compile cache did since the runtime started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompileStats {
    /// Components compiled from scratch and written to the cache.
    pub compiled: usize,
    /// Components loaded from the cache.
    pub cache_hits: usize,
}

/// The plugin runtime: loads, watches and runs plugins.
pub struct Runtime {
    registry: Arc<Registry>,
    /// The configuration's concurrency limits, over the manifests'.
    concurrency: ConcurrencyLimits,
    // Dropping the watcher closes its channel, which ends the reload task.
    _watcher: watch::DirWatcher,
}

impl Runtime {
    /// Builds the engine, loads every plugin in `config.plugin_dir` (a bad one is logged
    /// and skipped) and starts watching the directory. Fails only when the engine, the
    /// cache or the directories cannot be set up.
    pub async fn start(config: RuntimeConfig) -> anyhow::Result<Arc<Runtime>> {
        let concurrency = config.concurrency.clone();
        let registry = Arc::new(Registry::new(config)?);
        // Watch before the first scan, so a file dropped in meanwhile is not missed.
        let watcher = watch::DirWatcher::start(Arc::clone(&registry))?;
        registry.load_all().await;
        let loaded = registry.summaries();
        tracing::info!(
            plugin_dir = %registry.plugin_dir().display(),
            plugins = loaded.len(),
            skipped = registry.skipped().len(),
            "plugin runtime started"
        );
        Ok(Arc::new(Runtime {
            registry,
            concurrency,
            _watcher: watcher,
        }))
    }

    /// The plugins serving jobs now, sorted by name.
    pub fn plugins(&self) -> Vec<PluginSummary> {
        self.registry.summaries()
    }

    /// The rate limits plugins' requests keep, when the daemon keeps any.
    pub fn rate_limits(&self) -> Option<Arc<crate::rate_limits::RateLimits>> {
        self.registry.rate_limits()
    }

    /// Plugin files that are currently skipped, with the reason, sorted by path.
    pub fn skipped(&self) -> Vec<SkippedPlugin> {
        self.registry.skipped()
    }

    /// Subscribes to changes of the plugin set from now on (hot reload).
    pub fn subscribe(&self) -> broadcast::Receiver<PluginEvent> {
        self.registry.subscribe()
    }

    /// Cache hits and compilations since start.
    pub fn compile_stats(&self) -> CompileStats {
        self.registry.compile_stats()
    }
}

impl Executor for Runtime {
    fn execute<'a>(
        &'a self,
        job: &'a Job,
        cancel: CancellationToken,
        output: OutputSink,
    ) -> BoxFuture<'a, Execution> {
        Box::pin(async move {
            let plugin = match self.resolve_plugin(&job.command) {
                Ok(plugin) => plugin,
                // The command was served when the job was submitted: its plugin is
                // away (being replaced, skipped for a missing secret), so the job
                // waits for it rather than failing.
                Err(err) => {
                    let failure = Failure::permanent(
                        ErrorKind::PluginUnavailable,
                        format!("waiting for its plugin: {err}"),
                    );
                    return Execution::of(Err(failure));
                }
            };
            self.registry.run(&plugin, job, cancel, output).await
        })
    }
}

impl CommandCatalog for Runtime {
    fn resolve(&self, command: &str) -> Result<CommandDefaults, SubmitError> {
        let plugin = self.resolve_plugin(command)?;
        Ok(CommandDefaults {
            max_retries: Some(plugin.limits.max_retries),
        })
    }

    fn concurrency_limits(&self) -> ConcurrencyLimits {
        let mut limits = ConcurrencyLimits::default();
        for (name, plugin) in self.registry.snapshot().iter() {
            let declared = &plugin.concurrency;
            if let Some(limit) = declared.plugin {
                limits.running.insert(name.clone(), limit);
            }
            if let Some(limit) = declared.per_key {
                limits.per_key.insert(name.clone(), limit);
            }
            for (command, limit) in &declared.commands {
                limits.running.insert(format!("{name}.{command}"), *limit);
            }
        }
        limits.overridden_by(&self.concurrency)
    }

    fn served(&self) -> Option<Vec<String>> {
        let plugins = self.registry.snapshot();
        Some(
            plugins
                .iter()
                .flat_map(|(name, plugin)| {
                    plugin
                        .info
                        .commands
                        .iter()
                        .map(move |command| format!("{name}.{command}"))
                })
                .collect(),
        )
    }
}

impl Runtime {
    /// The plugin serving `command`, or the submit error that explains what would.
    fn resolve_plugin(&self, command: &str) -> Result<Arc<loader::LoadedPlugin>, SubmitError> {
        let plugins = self.registry.snapshot();
        if let Some((plugin_name, name)) = command.split_once('.')
            && let Some(plugin) = plugins.get(plugin_name)
            && plugin.serves(name)
        {
            return Ok(Arc::clone(plugin));
        }
        let commands = plugins
            .values()
            .map(|plugin| (plugin.info.name.as_str(), plugin.info.commands.as_slice()));
        let plugin_name = command
            .split_once('.')
            .map_or(command, |(plugin, _)| plugin);
        let skipped = if plugins.contains_key(plugin_name) {
            None
        } else {
            self.registry.skipped_reason(plugin_name)
        };
        Err(SubmitError::UnknownCommand {
            command: command.to_owned(),
            hint: catalog::hint(command, commands, skipped.as_deref()),
        })
    }
}
