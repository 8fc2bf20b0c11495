//! The one wasmtime [`Engine`] of the daemon, the linker every plugin is pre-linked
//! with, and the background ticker that drives epoch deadlines.
//!
//! The engine meters fuel, checks epochs, allocates instances from a pool (so that a
//! job's fresh store costs microseconds) and caches compiled code on disk (`cache`).
//! The linker grants the WASI interfaces a component built by the Rust toolchain
//! imports, all denying by default (no preopens but a granted workspace, no
//! environment, no sockets), plus `wasi:http` through the egress hook,
//! `wasi:config/store`, `wasi:logging` (since 0.2.1) and the contract's
//! `honeydew:plugin/workspace` and `honeydew:plugin/job`. This file decides
//! what a guest can call; what a single job may use is `sandbox`'s business.

use std::path::Path;
use std::thread;
use std::time::Duration;

use anyhow::Context;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::sandbox::StoreData;
use super::{bindings, cache};

/// How often the epoch advances: the granularity of deadlines and cancellation for a
/// guest that is computing.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Instances that can be alive at once (running jobs plus plugins being loaded).
const MAX_LIVE_INSTANCES: u32 = 256;

/// The engine and linker shared by every plugin.
pub(super) struct SandboxEngine {
    engine: Engine,
    linker: Linker<StoreData>,
    cache: wasmtime::Cache,
}

impl SandboxEngine {
    /// Builds the engine with its compile cache in `cache_dir`, links the host
    /// interfaces, and starts the epoch ticker (which stops when the engine is dropped).
    pub(super) fn new(cache_dir: &Path) -> anyhow::Result<Self> {
        let cache = cache::open(cache_dir)?;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(MAX_LIVE_INSTANCES)
            .total_core_instances(MAX_LIVE_INSTANCES * 8)
            .total_memories(MAX_LIVE_INSTANCES * 2)
            .total_tables(MAX_LIVE_INSTANCES * 4)
            .max_tables_per_module(2)
            .total_stacks(MAX_LIVE_INSTANCES);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .cache(Some(cache.clone()));
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("cannot create the wasmtime engine")?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("cannot link wasi")?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("cannot link wasi:http")?;
        wasmtime_wasi_config::add_to_linker(&mut linker, StoreData::config)
            .map_err(anyhow::Error::from)
            .context("cannot link wasi:config")?;
        // The contract's own imports, one interface at a time (see `bindings`). A
        // component built against an older version imports none of the newer ones.
        bindings::honeydew::plugin::workspace::add_to_linker::<StoreData, HasSelf<StoreData>>(
            &mut linker,
            |data| data,
        )
        .map_err(anyhow::Error::from)
        .context("cannot link honeydew:plugin/workspace")?;
        bindings::honeydew::plugin::job::add_to_linker::<StoreData, HasSelf<StoreData>>(
            &mut linker,
            |data| data,
        )
        .map_err(anyhow::Error::from)
        .context("cannot link honeydew:plugin/job")?;
        bindings::wasi::logging::logging::add_to_linker::<StoreData, HasSelf<StoreData>>(
            &mut linker,
            |data| data,
        )
        .map_err(anyhow::Error::from)
        .context("cannot link wasi:logging")?;

        start_epoch_ticker(&engine)?;
        Ok(Self {
            engine,
            linker,
            cache,
        })
    }

    pub(super) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(super) fn linker(&self) -> &Linker<StoreData> {
        &self.linker
    }

    pub(super) fn cache(&self) -> &wasmtime::Cache {
        &self.cache
    }
}

/// Advances `engine`'s epoch every [`EPOCH_TICK`] on a thread of its own (so that a
/// busy async runtime cannot delay deadlines), until the engine is gone.
fn start_epoch_ticker(engine: &Engine) -> anyhow::Result<()> {
    let engine = engine.weak();
    thread::Builder::new()
        .name("honeydew-epoch".into())
        .spawn(move || {
            loop {
                thread::sleep(EPOCH_TICK);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .context("cannot start the epoch ticker thread")?;
    Ok(())
}
