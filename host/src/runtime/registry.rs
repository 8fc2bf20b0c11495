//! The set of loaded plugins and its changes: load at start, reload on file events,
//! atomic swap, skip with a reason, publish what happened.
//!
//! The set is an immutable map behind a lock that is held only to clone or replace an
//! `Arc`: a job takes the `Arc<LoadedPlugin>` of the version it starts with and keeps
//! it to the end, so a swap never disturbs a running job, and loading (compiling,
//! calling `describe`) happens entirely outside the lock. Reloads are serialised so
//! that an older read of a file can never replace a newer one; within one reload the
//! plugins load concurrently, so a slow one delays no other. A file that fails to load
//! leaves the previous version serving. This file must not parse manifests or touch
//! wasmtime directly: `loader` and `sandbox` do.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::engine::SandboxEngine;
use super::loader::{self, LoadOutcome, LoadSettings, LoadedPlugin};
use super::{
    CompileStats, PluginEvent, PluginSummary, RuntimeConfig, SkippedPlugin, cache, sandbox,
};
use crate::job::Job;
use crate::output::OutputSink;
use crate::worker::Execution;
use crate::workspace::Workspaces;

/// The loaded plugins by name.
type PluginMap = HashMap<String, Arc<LoadedPlugin>>;

/// The plugin set, its loader and its change feed.
pub(super) struct Registry {
    engine: Arc<SandboxEngine>,
    settings: LoadSettings,
    caps: sandbox::JobCaps,
    workspaces: Option<Workspaces>,
    plugins: RwLock<Arc<PluginMap>>,
    skipped: Mutex<BTreeMap<String, SkippedPlugin>>,
    reloading: tokio::sync::Mutex<()>,
    events: broadcast::Sender<PluginEvent>,
}

impl Registry {
    /// An empty registry over the engine and directories of `config`.
    pub(super) fn new(config: RuntimeConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.plugin_dir).map_err(|err| {
            anyhow::anyhow!(
                "cannot create the plugin directory {}: {err}",
                config.plugin_dir.display()
            )
        })?;
        let engine = Arc::new(SandboxEngine::new(&config.cache_dir)?);
        Ok(Self {
            engine,
            settings: LoadSettings {
                plugin_dir: config.plugin_dir,
                defaults: config.defaults,
                secrets: super::manifest::Secrets {
                    values: config.secrets,
                    undeclared: config.undeclared_env.into_iter().collect(),
                },
                max_response_body_bytes: config.max_response_body_bytes,
                has_workspaces: config.workspaces.is_some(),
                metrics: config.metrics,
                rate_limits: config.rate_limits,
            },
            caps: sandbox::JobCaps {
                max_result_bytes: config.max_result_bytes,
                max_retry_after: config.max_retry_after,
            },
            workspaces: config.workspaces,
            plugins: RwLock::new(Arc::new(HashMap::new())),
            skipped: Mutex::new(BTreeMap::new()),
            reloading: tokio::sync::Mutex::new(()),
            events: broadcast::channel(256).0,
        })
    }

    pub(super) fn rate_limits(&self) -> Option<Arc<crate::rate_limits::RateLimits>> {
        self.settings.rate_limits.clone()
    }

    pub(super) fn plugin_dir(&self) -> &Path {
        &self.settings.plugin_dir
    }

    /// The plugins serving now; later swaps do not change the returned map.
    pub(super) fn snapshot(&self) -> Arc<PluginMap> {
        Arc::clone(&self.plugins.read().expect("plugin set lock poisoned"))
    }

    pub(super) fn summaries(&self) -> Vec<PluginSummary> {
        let mut summaries: Vec<PluginSummary> = self
            .snapshot()
            .values()
            .map(|plugin| plugin.summary())
            .collect();
        summaries.sort_by(|a, b| a.name.cmp(&b.name));
        summaries
    }

    pub(super) fn skipped(&self) -> Vec<SkippedPlugin> {
        self.lock_skipped().values().cloned().collect()
    }

    /// Why plugin `name` is skipped, if it is.
    pub(super) fn skipped_reason(&self, name: &str) -> Option<String> {
        self.lock_skipped()
            .get(name)
            .map(|skipped| skipped.reason.clone())
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<PluginEvent> {
        self.events.subscribe()
    }

    pub(super) fn compile_stats(&self) -> CompileStats {
        cache::stats(self.engine.cache())
    }

    /// Runs one attempt of `job` on `plugin`, which serves its command.
    pub(super) async fn run(
        &self,
        plugin: &LoadedPlugin,
        job: &Job,
        cancel: CancellationToken,
        output: OutputSink,
    ) -> Execution {
        let command = job
            .command
            .split_once('.')
            .map_or("", |(_, command)| command);
        sandbox::run_job(
            self.engine.engine(),
            plugin,
            job,
            command,
            cancel,
            output,
            &self.caps,
            self.workspaces.as_ref(),
        )
        .await
    }

    /// Loads every `NAME.wasm` in the plugin directory.
    pub(super) async fn load_all(self: &Arc<Self>) {
        let stems = self.stems_on_disk().await;
        self.reload(stems).await;
    }

    /// Loads, reloads or unloads every plugin the directory or the registry knows of.
    pub(super) async fn rescan(self: &Arc<Self>) {
        let mut stems = self.stems_on_disk().await;
        stems.extend(self.snapshot().keys().cloned());
        stems.extend(self.lock_skipped().keys().cloned());
        self.reload(stems).await;
    }

    /// Brings plugins `stems` in line with their files: loaded when `NAME.wasm` is
    /// there and loads, unloaded when it is gone, skipped (previous version kept) when
    /// it fails.
    pub(super) async fn reload(self: &Arc<Self>, stems: BTreeSet<String>) {
        let _serialised = self.reloading.lock().await;
        let mut loads = JoinSet::new();
        for stem in stems {
            let registry = Arc::clone(self);
            loads.spawn(async move { registry.refresh(stem).await });
        }
        while let Some(joined) = loads.join_next().await {
            if let Err(err) = joined {
                tracing::error!(error = %err, "plugin load task failed");
            }
        }
    }

    async fn refresh(&self, stem: String) {
        let path = loader::wasm_path(self.plugin_dir(), &stem);
        if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
            self.unload(&stem);
            return;
        }
        let current = self.snapshot().get(&stem).cloned();
        match loader::load(&self.settings, &self.engine, &stem, current.as_deref()).await {
            Ok(LoadOutcome::Unchanged) => {
                self.lock_skipped().remove(&stem);
            }
            Ok(LoadOutcome::Loaded(plugin, compile_time)) => {
                let previous = current.map(|current| current.sha256.clone());
                self.install(Arc::from(plugin), previous, compile_time.as_millis());
            }
            Err(err) => {
                let keeps_serving = current.map(|current| current.sha256.clone());
                tracing::warn!(
                    plugin = %stem,
                    path = %path.display(),
                    sha256 = err.sha256.as_deref().unwrap_or(""),
                    reason = %err.reason,
                    keeps_serving = keeps_serving.as_deref().unwrap_or(""),
                    "plugin skipped"
                );
                if let Some(metrics) = &self.settings.metrics {
                    metrics.plugin_refused(&stem, err.kind);
                }
                let skipped = SkippedPlugin {
                    path,
                    reason: err.reason,
                };
                self.lock_skipped().insert(stem, skipped.clone());
                let _ = self.events.send(PluginEvent::Skipped(skipped));
            }
        }
    }

    fn install(&self, plugin: Arc<LoadedPlugin>, previous: Option<String>, compile_ms: u128) {
        let name = plugin.info.name.clone();
        let summary = plugin.summary();
        tracing::info!(
            plugin = %name,
            version = %plugin.info.version,
            sha256 = %plugin.sha256,
            path = %plugin.path.display(),
            commands = %summary.commands.join(","),
            replaced = previous.as_deref().unwrap_or(""),
            compile_ms = compile_ms as u64,
            "plugin loaded"
        );
        self.swap(|plugins| {
            plugins.insert(name.clone(), plugin);
        });
        self.lock_skipped().remove(&name);
        if let Some(metrics) = &self.settings.metrics {
            metrics.plugin_loaded(&name);
        }
        let _ = self.events.send(PluginEvent::Loaded(summary));
    }

    fn unload(&self, stem: &str) {
        self.lock_skipped().remove(stem);
        let mut removed = None;
        self.swap(|plugins| removed = plugins.remove(stem));
        if let Some(plugin) = removed {
            tracing::info!(plugin = %stem, sha256 = %plugin.sha256, path = %plugin.path.display(), "plugin unloaded");
            let _ = self.events.send(PluginEvent::Unloaded {
                name: stem.to_owned(),
            });
        }
    }

    /// Replaces the set with a changed copy; jobs holding the old set are unaffected.
    fn swap(&self, change: impl FnOnce(&mut PluginMap)) {
        let mut current = self.plugins.write().expect("plugin set lock poisoned");
        let mut next = PluginMap::clone(&current);
        change(&mut next);
        *current = Arc::new(next);
    }

    /// Stems of the `*.wasm` files in the plugin directory.
    async fn stems_on_disk(&self) -> BTreeSet<String> {
        let mut stems = BTreeSet::new();
        let mut entries = match tokio::fs::read_dir(self.plugin_dir()).await {
            Ok(entries) => entries,
            Err(err) => {
                tracing::error!(path = %self.plugin_dir().display(), error = %err, "cannot list the plugin directory");
                return stems;
            }
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            if let Some(stem) = plugin_stem(&entry.path(), &["wasm"]) {
                stems.insert(stem);
            }
        }
        stems
    }

    fn lock_skipped(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SkippedPlugin>> {
        self.skipped.lock().expect("skipped list lock poisoned")
    }
}

/// The plugin name of `path` when its extension is one of `extensions`.
pub(super) fn plugin_stem(path: &Path, extensions: &[&str]) -> Option<String> {
    let extension = path.extension()?.to_str()?;
    if !extensions.contains(&extension) {
        return None;
    }
    Some(path.file_stem()?.to_str()?.to_owned())
}
