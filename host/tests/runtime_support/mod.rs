//! Helpers for the plugin runtime tests: where the fixture components are, a private
//! plugin directory per test, jobs, and waiting for hot-reload events.
//!
//! The fixtures are the real components built by `scripts/build-plugins.sh` into
//! `target/plugins`; every test copies the ones it needs into its own temporary
//! directory and writes its own manifests. Compiled code is shared between tests
//! through one cache directory under cargo's test tmpdir, except where a test is about
//! the cache.

pub mod http;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use honeydew::job::Job;
use honeydew::output::OutputSink;
use honeydew::runtime::{PluginEvent, Runtime, RuntimeConfig};
use honeydew::worker::{Execution, Executor};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Where `scripts/build-plugins.sh` puts the components and manifests.
pub const BUILT_PLUGINS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/plugins");

/// The fixture plugins these tests use.
pub const CHATTY: &str = "chatty";
pub const DIGGER: &str = "digger";
pub const ECHO: &str = "echo";
pub const ELDER: &str = "elder";
pub const FETCH: &str = "fetch";
pub const FLAKY: &str = "flaky";
pub const FLOOD: &str = "flood";
pub const HOG: &str = "hog";
pub const HUGE: &str = "huge";
pub const LEGACY: &str = "legacy";
pub const PERMANENT: &str = "permanent";
pub const SLOWLOAD: &str = "slowload";
pub const SNOOP: &str = "snoop";
pub const SNOOZER: &str = "snoozer";
pub const SPIN: &str = "spin";
pub const TRAP: &str = "trap";

/// The built component of fixture `name`; panics with what to do when it is missing.
pub fn fixture_wasm(name: &str) -> PathBuf {
    let path = Path::new(BUILT_PLUGINS).join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "fixture component {} is missing: run scripts/build-plugins.sh first",
        path.display()
    );
    path
}

/// The manifest shipped with fixture `name`.
pub fn fixture_manifest(name: &str) -> PathBuf {
    Path::new(BUILT_PLUGINS).join(format!("{name}.toml"))
}

/// Hex sha256 of fixture `name`'s component.
pub fn fixture_sha256(name: &str) -> String {
    hex_sha256(&std::fs::read(fixture_wasm(name)).unwrap())
}

pub fn hex_sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// The compile cache shared by the tests.
pub fn shared_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("runtime-test-cache")
}

/// A plugin directory of one test.
pub struct PluginDir {
    dir: TempDir,
}

impl PluginDir {
    /// An empty directory.
    pub fn empty() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A directory holding `fixtures` with their shipped manifests.
    pub fn with(fixtures: &[&str]) -> Self {
        let dir = Self::empty();
        for name in fixtures {
            dir.add(name);
        }
        dir
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copies fixture `name` (component and shipped manifest) in, each file atomically.
    pub fn add(&self, name: &str) {
        let wasm = std::fs::read(fixture_wasm(name)).unwrap();
        let manifest = std::fs::read_to_string(fixture_manifest(name)).unwrap();
        self.write_manifest(name, &manifest);
        self.write_wasm(name, &wasm);
    }

    /// Writes `NAME.wasm` atomically (a temporary file, then a rename), as an operator
    /// deploying with `mv` would.
    pub fn write_wasm(&self, name: &str, bytes: &[u8]) {
        self.write_atomically(&format!("{name}.wasm"), bytes);
    }

    /// Writes `NAME.toml` atomically.
    pub fn write_manifest(&self, name: &str, text: &str) {
        self.write_atomically(&format!("{name}.toml"), text.as_bytes());
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.path().join(format!("{name}.wasm"))).unwrap();
    }

    fn write_atomically(&self, file: &str, bytes: &[u8]) {
        let temporary = self.path().join(format!(".{file}.tmp"));
        std::fs::write(&temporary, bytes).unwrap();
        std::fs::rename(&temporary, self.path().join(file)).unwrap();
    }

    /// A runtime configuration over this directory and the shared cache.
    pub fn config(&self) -> RuntimeConfig {
        RuntimeConfig::new(self.path(), shared_cache_dir())
    }

    /// Starts a runtime over this directory with default settings.
    pub async fn start(&self) -> Arc<Runtime> {
        Runtime::start(self.config()).await.unwrap()
    }
}

/// A runtime configuration with secrets.
pub fn with_secrets(mut config: RuntimeConfig, secrets: &[(&str, &str)]) -> RuntimeConfig {
    config.secrets = secrets
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect::<HashMap<_, _>>();
    config
}

/// A job for `command` with `payload`.
pub fn job(command: &str, payload: impl Into<Vec<u8>>) -> Job {
    Job::new(command, payload.into(), 0, 3)
}

/// Runs `command` once through the runtime, uncancelled.
pub async fn run(runtime: &Runtime, command: &str, payload: impl Into<Vec<u8>>) -> Execution {
    runtime
        .execute(
            &job(command, payload),
            CancellationToken::new(),
            OutputSink::discard(),
        )
        .await
}

/// The result bytes of a successful execution, as text; panics with the failure.
pub fn ok_text(execution: &Execution) -> String {
    match &execution.result {
        Ok(bytes) => String::from_utf8(bytes.clone()).unwrap(),
        Err(failure) => panic!("expected success, got {failure:?}"),
    }
}

/// Waits (at most 20 s, for filesystem events) for the first event `wanted` accepts.
pub async fn wait_for_event(
    events: &mut broadcast::Receiver<PluginEvent>,
    wanted: impl Fn(&PluginEvent) -> bool,
) -> PluginEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) if wanted(&event) => return event,
            Ok(Ok(_other)) => continue,
            Ok(Err(err)) => panic!("plugin event feed failed: {err}"),
            Err(_) => panic!("no matching plugin event within 20 s"),
        }
    }
}

/// Waits (at most 20 s, for filesystem events) until `condition` holds, checking it
/// every 20 ms.
pub async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within 20 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `component` with a custom section appended: it behaves the same but has another
/// sha256, like a rebuilt version of the plugin.
pub fn with_custom_section(component: &[u8], label: &str) -> Vec<u8> {
    let name = b"honeydew-test";
    let mut content = leb128(name.len());
    content.extend_from_slice(name);
    content.extend_from_slice(label.as_bytes());
    let mut bytes = component.to_vec();
    bytes.push(0); // custom section id
    bytes.extend(leb128(content.len()));
    bytes.extend(content);
    bytes
}

fn leb128(mut value: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            bytes.push(byte);
            return bytes;
        }
        bytes.push(byte | 0x80);
    }
}
