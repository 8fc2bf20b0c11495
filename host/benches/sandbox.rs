//! Sandbox overhead of the plugin runtime, measured against raw wasmtime in one run.
//!
//! 1. Per job: `echo.echo` through `Runtime::execute` (fresh store with fuel, memory
//!    limiter, epoch deadline, cancellation, egress hook, config) against raw wasmtime
//!    instantiating the same component from an `InstancePre` with the pooling allocator
//!    and calling `run`, alternating blocks of calls; p50, p99 and mean of each, and the
//!    ratio (target: within 1.5x).
//! 2. Start: `Runtime::start` over every plugin in `target/plugins` (stand-in secrets,
//!    so that plugins with auth rules load) on a warm compile cache (target: under
//!    300 ms), after one cold start that fills the cache.
//! 3. Cold compile time of each plugin with the runtime's engine settings, no cache.
//!
//! Run with `cargo bench -p honeydew --bench sandbox` after `scripts/build-plugins.sh`.
//! This bench touches wasmtime directly only to build the baseline.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use honeydew::job::Job;
use honeydew::output::OutputSink;
use honeydew::runtime::{Runtime, RuntimeConfig};
use honeydew::worker::Executor;
use tokio_util::sync::CancellationToken;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

const BUILT_PLUGINS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/plugins");
const PAYLOAD: &[u8] = br#"{"hello":"world"}"#;
const WARM_UP: usize = 500;
const CALLS: usize = 5000;
const BLOCK: usize = 500;
const WARM_STARTS: usize = 7;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "honeydew:plugin/plugin",
        exports: { default: async },
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        },
    });
}

/// The store data of the raw baseline: the same host interfaces, no policy.
struct RawState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    config: Arc<WasiConfigVariables>,
}

impl RawState {
    fn config(&mut self) -> WasiConfig<'_> {
        WasiConfig::from(&*self.config)
    }
}

impl WasiView for RawState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RawState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: Default::default(),
        }
    }
}

struct Baseline {
    engine: Engine,
    pre: bindings::PluginPre<RawState>,
    config: Arc<WasiConfigVariables>,
}

impl Baseline {
    fn new(wasm: &[u8]) -> anyhow::Result<Baseline> {
        let mut config = Config::new();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(
            PoolingAllocationConfig::default(),
        ));
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        wasmtime_wasi_config::add_to_linker(&mut linker, RawState::config)?;
        let component = Component::new(&engine, wasm)?;
        let pre = bindings::PluginPre::new(linker.instantiate_pre(&component)?)?;
        Ok(Baseline {
            engine,
            pre,
            config: Arc::new(WasiConfigVariables::new()),
        })
    }

    async fn call(&self) -> anyhow::Result<Vec<u8>> {
        let state = RawState {
            table: ResourceTable::new(),
            wasi: WasiCtx::builder().build(),
            http: WasiHttpCtx::new(),
            config: Arc::clone(&self.config),
        };
        let mut store = Store::new(&self.engine, state);
        let plugin = self.pre.instantiate_async(&mut store).await?;
        let output = plugin.call_run(&mut store, "echo", PAYLOAD).await?;
        output.map_err(|error| anyhow::anyhow!("echo failed: {error:?}"))
    }
}

/// p50, p99 and mean of `samples`.
struct Summary {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

impl Summary {
    fn of(samples: &mut [Duration]) -> Summary {
        samples.sort();
        let total: Duration = samples.iter().sum();
        Summary {
            p50: samples[samples.len() / 2],
            p99: samples[samples.len() * 99 / 100],
            mean: total / samples.len() as u32,
        }
    }
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// Copies `names` (or every plugin when empty) from `target/plugins` into `dir`.
fn copy_plugins(dir: &Path, names: &[&str]) -> anyhow::Result<usize> {
    let mut copied = 0;
    for entry in std::fs::read_dir(BUILT_PLUGINS)? {
        let path = entry?.path();
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if names.is_empty() || names.contains(&stem) {
            std::fs::copy(&path, dir.join(path.file_name().unwrap()))?;
            copied += usize::from(path.extension().is_some_and(|e| e == "wasm"));
        }
    }
    Ok(copied)
}

async fn per_job_overhead() -> anyhow::Result<()> {
    let plugins = tempfile::tempdir()?;
    let cache = tempfile::tempdir()?;
    copy_plugins(plugins.path(), &["echo"])?;
    let runtime = Runtime::start(RuntimeConfig::new(plugins.path(), cache.path())).await?;
    let baseline = Baseline::new(&std::fs::read(plugins.path().join("echo.wasm"))?)?;
    let job = Job::new("echo.echo", PAYLOAD.to_vec(), 0, 0);

    let run_runtime = async || {
        let execution = runtime
            .execute(&job, CancellationToken::new(), OutputSink::discard())
            .await;
        assert_eq!(
            execution.result.as_deref(),
            Ok(PAYLOAD),
            "runtime echo failed"
        );
    };
    let run_raw = async || {
        assert_eq!(baseline.call().await.unwrap(), PAYLOAD, "raw echo failed");
    };
    for _ in 0..WARM_UP {
        run_raw().await;
        run_runtime().await;
    }
    let (mut raw, mut sandboxed) = (Vec::with_capacity(CALLS), Vec::with_capacity(CALLS));
    while raw.len() < CALLS {
        for _ in 0..BLOCK {
            let started = Instant::now();
            run_raw().await;
            raw.push(started.elapsed());
        }
        for _ in 0..BLOCK {
            let started = Instant::now();
            run_runtime().await;
            sandboxed.push(started.elapsed());
        }
    }
    let (raw, sandboxed) = (Summary::of(&mut raw), Summary::of(&mut sandboxed));
    println!("per-job sandbox overhead, echo.echo, {CALLS} calls each after {WARM_UP} warm-up:");
    println!("                                          p50        p99       mean");
    for (label, summary) in [
        ("raw wasmtime (InstancePre + pooling)", &raw),
        ("honeydew Runtime::execute", &sandboxed),
    ] {
        println!(
            "  {label:<38} {:>7.1} us {:>7.1} us {:>7.1} us",
            micros(summary.p50),
            micros(summary.p99),
            micros(summary.mean)
        );
    }
    println!(
        "  {:<38} {:>8.2}x {:>9.2}x {:>9.2}x   (target: within 1.5x)",
        "ratio",
        sandboxed.p50.as_secs_f64() / raw.p50.as_secs_f64(),
        sandboxed.p99.as_secs_f64() / raw.p99.as_secs_f64(),
        sandboxed.mean.as_secs_f64() / raw.mean.as_secs_f64()
    );
    Ok(())
}

/// A stand-in value for every `${NAME}` the manifests in `dir` use, so that plugins
/// with auth rules load too.
fn dummy_secrets(dir: &Path) -> anyhow::Result<HashMap<String, String>> {
    let mut secrets = HashMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path)?;
            for (_, rest) in text
                .match_indices("${")
                .map(|(at, _)| text.split_at(at + 2))
            {
                if let Some((name, _)) = rest.split_once('}') {
                    secrets.insert(name.to_owned(), "bench-secret".to_owned());
                }
            }
        }
    }
    Ok(secrets)
}

async fn start_time() -> anyhow::Result<()> {
    let plugins = tempfile::tempdir()?;
    let cache = tempfile::tempdir()?;
    let files = copy_plugins(plugins.path(), &[])?;
    let secrets = dummy_secrets(plugins.path())?;
    let config = || {
        let mut config = RuntimeConfig::new(plugins.path(), cache.path());
        config.secrets = secrets.clone();
        config
    };

    let started = Instant::now();
    let cold = Runtime::start(config()).await?;
    let cold_time = started.elapsed();
    let (loaded, skipped) = (cold.plugins().len(), cold.skipped().len());
    drop(cold);

    let mut warm = Vec::new();
    for _ in 0..WARM_STARTS {
        let started = Instant::now();
        let runtime = Runtime::start(config()).await?;
        warm.push(started.elapsed());
        assert_eq!(runtime.compile_stats().compiled, 0, "a warm start compiled");
        drop(runtime);
    }
    warm.sort();
    println!(
        "runtime start, {files} plugin files ({loaded} loaded, {skipped} skipped): cold cache {:.0} ms; \
         warm cache min {:.0} ms, median {:.0} ms over {WARM_STARTS} starts (target: under 300 ms)",
        millis(cold_time),
        millis(warm[0]),
        millis(warm[warm.len() / 2]),
    );
    Ok(())
}

fn cold_compile_times() -> anyhow::Result<()> {
    // The runtime's compilation settings (runtime/engine.rs), without its cache.
    let mut config = Config::new();
    config.consume_fuel(true).epoch_interruption(true);
    let engine = Engine::new(&config)?;
    let mut components: Vec<PathBuf> = std::fs::read_dir(BUILT_PLUGINS)?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()?;
    components.retain(|path| path.extension().is_some_and(|e| e == "wasm"));
    components.sort();
    println!("cold compile per plugin (fuel + epoch instrumentation, no cache):");
    for path in components {
        let wasm = std::fs::read(&path)?;
        let started = Instant::now();
        Component::new(&engine, &wasm)?;
        println!(
            "  {:<12} {:>5} KiB {:>7.1} ms",
            path.file_stem().unwrap().to_string_lossy(),
            wasm.len().div_ceil(1024),
            millis(started.elapsed())
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if !Path::new(BUILT_PLUGINS).join("echo.wasm").is_file() {
        anyhow::bail!("{BUILT_PLUGINS}/echo.wasm is missing: run scripts/build-plugins.sh first");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(per_job_overhead())?;
    runtime.block_on(start_time())?;
    cold_compile_times()
}
