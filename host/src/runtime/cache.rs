//! The on-disk cache of compiled components, so that a restart or a reload of an
//! unchanged plugin compiles nothing.
//!
//! This is wasmtime's own cache (`Config::cache`), pointed at the daemon's cache
//! directory. Its key is a sha256 over the component's bytes and the engine's
//! compilation settings (wasmtime version, target, features, tunables such as fuel and
//! epochs) — the component's content hash plus the engine's compatibility hash — and
//! it writes entries atomically. It is preferred over serialising components by hand
//! because loading a serialised component is `unsafe` in wasmtime's API and the
//! workspace forbids `unsafe_code` (a `forbid` that no local `allow` can lift); with
//! the built-in cache the trust decision stays inside wasmtime, which checks every
//! entry's header against the running engine. This file owns the cache settings and
//! the hit/miss counts; it must not decide what gets loaded.

use std::path::Path;

use anyhow::Context;
use wasmtime::component::Component;
use wasmtime::{Cache, CacheConfig, Engine};

use super::CompileStats;

/// Opens (creating if needed) the cache in `dir`.
pub(super) fn open(dir: &Path) -> anyhow::Result<Cache> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the cache directory {}", dir.display()))?;
    let mut config = CacheConfig::new();
    config.with_directory(dir);
    Cache::new(config)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot open the compile cache in {}", dir.display()))
}

/// Compiles `wasm`, or loads it from the cache when this engine compiled the same
/// bytes before. CPU-heavy on a miss: call it off the async threads.
pub(super) fn compile(engine: &Engine, wasm: &[u8]) -> anyhow::Result<Component> {
    Component::new(engine, wasm).map_err(anyhow::Error::from)
}

/// What `cache` did so far.
pub(super) fn stats(cache: &Cache) -> CompileStats {
    CompileStats {
        compiled: cache.cache_misses(),
        cache_hits: cache.cache_hits(),
    }
}
