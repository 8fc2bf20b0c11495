//! Loading one plugin: `NAME.wasm` and its manifest `NAME.toml` into a
//! [`LoadedPlugin`] ready to run, or a precise reason why not.
//!
//! The steps, each with its own reason on failure: read and hash the component; parse
//! the manifest and fill in its secrets; compile (through the cache, on a blocking
//! thread); pre-link against the host interfaces; check that it implements the world;
//! call `describe` in a sandbox bounded like a job (small fuel budget, the plugin's
//! memory limit, a short wall-clock limit, no network, no workspace); check that the name it reports
//! is its file's and that its commands are well formed. This file must not touch the
//! set of loaded plugins: `registry` decides what to do with the result.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use wasmtime_wasi_config::WasiConfigVariables;

use super::bindings::{PluginInfo, PluginPre};
use super::egress::EgressPolicy;
use super::egress_limits::EgressLimits;
use super::engine::SandboxEngine;
use super::manifest::{Manifest, PluginConcurrency, Secrets};
use super::sandbox::{Sandbox, StoreData};
use super::workspace::WorkspaceGrant;
use super::{Limits, PluginSummary, cache};
use crate::job::PluginRef;

/// Fuel for instantiating a plugin and calling `describe`: ample for returning a name
/// and a list, small enough that a looping `describe` is given up on in milliseconds.
const DESCRIBE_FUEL: u64 = 20_000_000;

/// Wall-clock limit for instantiating a plugin and calling `describe`, for a guest that
/// blocks instead of computing.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What loading needs from the daemon's configuration.
pub(super) struct LoadSettings {
    pub(super) plugin_dir: PathBuf,
    pub(super) defaults: Limits,
    pub(super) secrets: Secrets,
    pub(super) max_response_body_bytes: usize,
    /// Whether the daemon has a workspace directory (a plugin granted one is refused
    /// otherwise).
    pub(super) has_workspaces: bool,
    /// Where loads, refusals and egress are counted, if anywhere.
    pub(super) metrics: Option<Arc<crate::metrics::Metrics>>,
    /// The daemon's rate limits, which every plugin's requests keep.
    pub(super) rate_limits: Option<Arc<crate::rate_limits::RateLimits>>,
}

/// A plugin ready to run jobs. Immutable: a reload builds a new one.
pub(super) struct LoadedPlugin {
    pub(super) info: PluginInfo,
    pub(super) sha256: String,
    manifest_sha256: String,
    pub(super) path: PathBuf,
    pub(super) limits: Limits,
    /// The concurrency limits its manifest declares.
    pub(super) concurrency: PluginConcurrency,
    allowed_hosts: Vec<String>,
    pub(super) egress: Arc<EgressPolicy>,
    pub(super) config: Arc<WasiConfigVariables>,
    /// The `[workspace]` grant, if any.
    pub(super) workspace: Option<WorkspaceGrant>,
    pub(super) pre: PluginPre<StoreData>,
}

impl LoadedPlugin {
    /// Whether `command` (without the plugin prefix) is one of the plugin's.
    pub(super) fn serves(&self, command: &str) -> bool {
        self.info.commands.iter().any(|served| served == command)
    }

    /// What a job records about the component that ran it.
    pub(super) fn plugin_ref(&self) -> PluginRef {
        PluginRef {
            name: self.info.name.clone(),
            version: self.info.version.clone(),
            sha256: self.sha256.clone(),
        }
    }

    /// The plugin as listed to users.
    pub(super) fn summary(&self) -> PluginSummary {
        let mut commands: Vec<String> = self
            .info
            .commands
            .iter()
            .map(|command| format!("{}.{command}", self.info.name))
            .collect();
        commands.sort();
        PluginSummary {
            name: self.info.name.clone(),
            version: self.info.version.clone(),
            sha256: self.sha256.clone(),
            commands,
            limits: self.limits.clone(),
            concurrency: self.concurrency.clone(),
            allowed_hosts: self.allowed_hosts.clone(),
        }
    }
}

/// What a load produced.
pub(super) enum LoadOutcome {
    /// A new or changed plugin, and how long compiling (or the cache) took.
    Loaded(Box<LoadedPlugin>, Duration),
    /// The component and manifest are those already serving.
    Unchanged,
}

/// Why a plugin was not loaded.
#[derive(Debug)]
pub(super) struct LoadError {
    /// What kind of refusal, one of a fixed few (a metric's label): `invalid_name`,
    /// `unreadable`, `invalid_manifest`, `missing_secret`, `bad_component`,
    /// `describe_failed`, `bad_describe`.
    pub(super) kind: &'static str,
    /// The component's hash, when it could be read.
    pub(super) sha256: Option<String>,
    /// What was wrong.
    pub(super) reason: String,
}

impl LoadError {
    fn new(kind: &'static str, sha256: Option<&str>, reason: impl Into<String>) -> Self {
        Self {
            kind,
            sha256: sha256.map(str::to_owned),
            reason: reason.into(),
        }
    }
}

/// The component file of plugin `stem`.
pub(super) fn wasm_path(plugin_dir: &Path, stem: &str) -> PathBuf {
    plugin_dir.join(format!("{stem}.wasm"))
}

/// Loads plugin `stem` from the plugin directory; `current` is the version serving
/// now, if any, so that an unchanged plugin is not loaded again.
pub(super) async fn load(
    settings: &LoadSettings,
    engine: &Arc<SandboxEngine>,
    stem: &str,
    current: Option<&LoadedPlugin>,
) -> Result<LoadOutcome, LoadError> {
    if !is_valid_name(stem) {
        return Err(LoadError::new(
            "invalid_name",
            None,
            format!("{stem:?} is not a valid plugin name (letters, digits, _ and -)"),
        ));
    }
    let path = wasm_path(&settings.plugin_dir, stem);
    let wasm = tokio::fs::read(&path).await.map_err(|err| {
        LoadError::new(
            "unreadable",
            None,
            format!("cannot read {}: {err}", path.display()),
        )
    })?;
    let sha256 = hex_sha256(&wasm);
    let sha = Some(sha256.as_str());

    let manifest_path = settings.plugin_dir.join(format!("{stem}.toml"));
    let manifest_text = match tokio::fs::read_to_string(&manifest_path).await {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => {
            let reason = format!("cannot read {}: {err}", manifest_path.display());
            return Err(LoadError::new("unreadable", sha, reason));
        }
    };
    let manifest_sha256 = hex_sha256(manifest_text.as_bytes());
    if let Some(current) = current
        && current.sha256 == sha256
        && current.manifest_sha256 == manifest_sha256
    {
        return Ok(LoadOutcome::Unchanged);
    }
    let refused = |kind, err: anyhow::Error| {
        LoadError::new(
            kind,
            sha,
            format!("invalid manifest {}: {err:#}", manifest_path.display()),
        )
    };
    let manifest =
        Manifest::parse(&manifest_text).map_err(|err| refused("invalid_manifest", err))?;
    let auth = manifest
        .auth_headers(&settings.secrets)
        .map_err(|err| refused("missing_secret", err))?;
    let limits = manifest.limits(&settings.defaults);
    let workspace = manifest.workspace();
    if workspace.is_some() && !settings.has_workspaces {
        return Err(LoadError::new(
            "invalid_manifest",
            sha,
            format!(
                "invalid manifest {}: [workspace] is granted, but this daemon has no workspace directory",
                manifest_path.display()
            ),
        ));
    }

    let started = Instant::now();
    let compiled = {
        let engine = Arc::clone(engine);
        tokio::task::spawn_blocking(move || cache::compile(engine.engine(), &wasm))
            .await
            .context("the compile task failed")
            .and_then(|compiled| compiled)
    };
    let component = compiled.map_err(|err| {
        LoadError::new(
            "bad_component",
            sha,
            format!("not a valid WebAssembly component: {err:#}"),
        )
    })?;
    let compile_time = started.elapsed();

    let pre = engine.linker().instantiate_pre(&component).map_err(|err| {
        LoadError::new(
            "bad_component",
            sha,
            format!("the component imports what the daemon does not provide: {err:#}"),
        )
    })?;
    let pre = PluginPre::new(pre).map_err(|err| {
        LoadError::new(
            "bad_component",
            sha,
            format!("the component does not implement honeydew:plugin/plugin: {err:#}"),
        )
    })?;

    let config: WasiConfigVariables = manifest.config().iter().collect();
    let config = Arc::new(config);
    let describe_limits = Limits {
        fuel: DESCRIBE_FUEL,
        timeout: DESCRIBE_TIMEOUT,
        ..limits.clone()
    };
    let deny_all = Arc::new(EgressPolicy::deny_all(stem.to_owned()));
    let info = async {
        let mut sandbox = Sandbox::new(
            engine.engine(),
            stem,
            &describe_limits,
            deny_all,
            Arc::clone(&config),
            None,
            CancellationToken::new(),
        )?;
        sandbox.describe(&pre).await
    }
    .await
    .map_err(|stop| {
        LoadError::new(
            "describe_failed",
            sha,
            format!("describe() failed: {}", stop.explain(stem)),
        )
    })?;
    check_info(stem, &info).map_err(|reason| LoadError::new("bad_describe", sha, reason))?;
    let concurrency = manifest.concurrency();
    if let Some(unknown) = concurrency
        .commands
        .keys()
        .find(|name| !info.commands.contains(name))
    {
        return Err(refused(
            "invalid_manifest",
            anyhow::anyhow!(
                "limits.commands.{unknown}: the plugin has no command {unknown:?} (it serves {})",
                info.commands.join(", ")
            ),
        ));
    }

    let allowed_hosts: Vec<String> = manifest
        .allowed_hosts()
        .iter()
        .map(ToString::to_string)
        .collect();
    let egress_metrics = settings
        .metrics
        .as_ref()
        .map(|metrics| metrics.egress(&info.name, &allowed_hosts));
    let egress = EgressPolicy::new(
        info.name.clone(),
        manifest.allowed_hosts().to_vec(),
        auth,
        settings.max_response_body_bytes,
    )
    .counted_by(egress_metrics)
    .limited_by(settings.rate_limits.as_ref().map(|limits| {
        for declared in manifest.rate_limits() {
            let host = declared.host.to_string();
            limits.declare(&info.name, &host, declared.requests, declared.per);
        }
        EgressLimits {
            limits: Arc::clone(limits),
            declared: manifest
                .rate_limits()
                .iter()
                .map(|declared| declared.host.clone())
                .collect(),
        }
    }));
    let plugin = LoadedPlugin {
        info,
        sha256,
        manifest_sha256,
        path,
        limits,
        concurrency,
        allowed_hosts,
        egress: Arc::new(egress),
        config,
        workspace,
        pre,
    };
    Ok(LoadOutcome::Loaded(Box::new(plugin), compile_time))
}

/// The longest plugin name, command name or version `describe` may report: these
/// strings come from the guest (up to its memory limit) and end up in every listing,
/// log line and error that names the plugin.
const MAX_DESCRIBED_BYTES: usize = 128;

/// The most commands one plugin may serve.
const MAX_COMMANDS: usize = 256;

/// Checks what `describe` reported against the file it came from.
fn check_info(stem: &str, info: &PluginInfo) -> Result<(), String> {
    if info.name.len() > MAX_DESCRIBED_BYTES {
        return Err(format!(
            "describe() gives a name of {} bytes, over the {MAX_DESCRIBED_BYTES}-byte limit",
            info.name.len()
        ));
    }
    if info.name != stem {
        return Err(format!(
            "the component calls itself {:?} but its file is {stem}.wasm: name the file {}.wasm",
            info.name, info.name
        ));
    }
    if info.version.len() > MAX_DESCRIBED_BYTES {
        return Err(format!(
            "describe() gives a version of {} bytes, over the {MAX_DESCRIBED_BYTES}-byte limit",
            info.version.len()
        ));
    }
    if info.commands.is_empty() {
        return Err("describe() lists no commands".to_owned());
    }
    if info.commands.len() > MAX_COMMANDS {
        return Err(format!(
            "describe() lists {} commands, over the limit of {MAX_COMMANDS}",
            info.commands.len()
        ));
    }
    if let Some(long) = info.commands.iter().find(|c| c.len() > MAX_DESCRIBED_BYTES) {
        return Err(format!(
            "describe() lists a command name of {} bytes, over the {MAX_DESCRIBED_BYTES}-byte limit",
            long.len()
        ));
    }
    let mut seen = BTreeSet::new();
    for command in &info.commands {
        if !is_valid_name(command) {
            return Err(format!(
                "describe() lists {command:?}, which is not a valid command name (letters, digits, _ and -)"
            ));
        }
        if !seen.insert(command) {
            return Err(format!("describe() lists command {command:?} twice"));
        }
    }
    Ok(())
}

/// Plugin and command names: letters, digits, `_` and `-`, not empty.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Lowercase hex sha256 of `bytes`.
fn hex_sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, commands: &[&str]) -> PluginInfo {
        PluginInfo {
            name: name.to_owned(),
            version: "1.0.0".to_owned(),
            commands: commands.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    #[test]
    fn describe_must_match_the_file_and_list_valid_commands() {
        assert_eq!(
            check_info("echo", &info("echo", &["echo", "config"])),
            Ok(())
        );
        assert_eq!(
            check_info("other", &info("echo", &["echo"])),
            Err("the component calls itself \"echo\" but its file is other.wasm: name the file echo.wasm".into())
        );
        assert_eq!(
            check_info("echo", &info("echo", &[])),
            Err("describe() lists no commands".into())
        );
        assert!(
            check_info("echo", &info("echo", &["a.b"]))
                .unwrap_err()
                .contains("\"a.b\"")
        );
        assert!(
            check_info("echo", &info("echo", &["a", "a"]))
                .unwrap_err()
                .contains("twice")
        );
    }

    #[test]
    fn describe_strings_are_bounded_and_never_echoed_whole() {
        let huge = "a".repeat(1 << 20);
        for (stem, info) in [
            ("echo", info(&huge, &["echo"])),
            ("echo", info("echo", &[huge.as_str()])),
            (
                "echo",
                PluginInfo {
                    version: huge.clone(),
                    ..info("echo", &["echo"])
                },
            ),
        ] {
            let error = check_info(stem, &info).unwrap_err();
            assert!(error.contains("over the 128-byte limit"), "{error:.200}");
            assert!(error.len() < 200, "the error echoes the guest's string");
        }
        let many: Vec<String> = (0..=MAX_COMMANDS).map(|n| format!("c{n}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let error = check_info("echo", &info("echo", &many)).unwrap_err();
        assert!(error.contains("257 commands"), "{error}");
    }

    #[test]
    fn hashes_are_lowercase_hex() {
        assert_eq!(
            hex_sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
