//! One sandbox: a fresh wasmtime store with its limits, one call into a plugin, and
//! the classification of how that call ended.
//!
//! Every job attempt (and every `describe` while loading) gets a new [`Sandbox`]:
//! a fuel budget; a [`MemoryLimiter`] over all linear memories and tables that records
//! what it refused; a wall-clock deadline enforced twice, by the epoch callback for a
//! guest that computes and by a timer around the whole call for a guest blocked in a
//! host call; the job's cancellation token, checked at every epoch tick and raced
//! against the call (a computing guest yields every [`FUEL_YIELD_INTERVAL`] of fuel so
//! the race is decided within milliseconds); a WASI context that grants nothing (stdout discarded, stderr
//! captured up to a few KiB for trap messages and debug logs); the plugin's egress
//! hook and `[config]` table. [`run_job`] maps the outcome to the queue's [`Failure`].
//! This file must not decide policy (that is the manifest's and `egress`'s) nor keep
//! anything between jobs.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, PoolConcurrencyLimitError, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::Limits;
use super::bindings::{Error as GuestError, PluginInfo, PluginPre};
use super::egress::{EgressHooks, EgressPolicy};
use super::loader::LoadedPlugin;
use crate::job::{ErrorKind, JobId};
use crate::retry::Failure;
use crate::worker::Execution;

/// How much of a guest's stderr is kept (the rest is dropped).
const STDERR_CAPTURE_BYTES: usize = 4096;

/// Fuel between two yields of a computing guest to the async executor (a few
/// milliseconds of work). It bounds how stale the fuel count of an interrupted job is.
const FUEL_YIELD_INTERVAL: u64 = 10_000_000;

/// What a table element costs against the memory limit.
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

/// The data of one store: WASI state, the egress hook, the limiter and the watch.
pub(super) struct StoreData {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: EgressHooks,
    config: Arc<WasiConfigVariables>,
    limiter: MemoryLimiter,
    watch: Watch,
    stderr: MemoryOutputPipe,
}

impl StoreData {
    /// The `wasi:config/store` view, for the linker.
    pub(super) fn config(&mut self) -> WasiConfig<'_> {
        WasiConfig::from(&*self.config)
    }
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for StoreData {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Caps the bytes of all memories and tables of one store together, and remembers a
/// refusal so that the failure that follows is reported as `memory_limit`.
struct MemoryLimiter {
    limit_bytes: usize,
    used_bytes: usize,
    refused: bool,
}

impl MemoryLimiter {
    fn grow(&mut self, extra_bytes: usize) -> bool {
        match self.used_bytes.checked_add(extra_bytes) {
            Some(total) if total <= self.limit_bytes => {
                self.used_bytes = total;
                true
            }
            _ => {
                self.refused = true;
                false
            }
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(desired.saturating_sub(current)))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(
            desired
                .saturating_sub(current)
                .saturating_mul(TABLE_ELEMENT_BYTES),
        ))
    }
}

/// Why the epoch callback stopped the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Interruption {
    Cancelled,
    Deadline,
}

/// What the epoch callback checks at every tick.
struct Watch {
    cancel: CancellationToken,
    deadline: Instant,
    interrupted: Option<Interruption>,
}

/// Why a sandboxed call did not return normally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Stop {
    /// The cancellation token fired.
    Cancelled,
    /// The wall-clock deadline passed.
    Timeout(Duration),
    /// The guest tried to reach a URL its manifest does not grant.
    EgressDenied(String),
    /// The limiter refused memory or table growth.
    MemoryLimit(u64),
    /// The fuel budget ran out.
    FuelExhausted(u64),
    /// The guest trapped, with the trap and any stderr it wrote.
    Trap(String),
    /// No instance slot was free: the daemon is overloaded, try again.
    PoolExhausted(String),
    /// The host could not set the sandbox up.
    Internal(String),
}

impl Stop {
    /// The reason in words, naming `plugin`.
    pub(super) fn explain(&self, plugin: &str) -> String {
        match self {
            Stop::Cancelled => format!("plugin {plugin:?} was cancelled while running"),
            Stop::Timeout(limit) => {
                format!(
                    "plugin {plugin:?} did not finish within {}ms",
                    limit.as_millis()
                )
            }
            Stop::EgressDenied(url) => format!(
                "plugin {plugin:?} tried to reach {url}, which its manifest's network.allowed_hosts does not grant"
            ),
            Stop::MemoryLimit(mib) => {
                format!("plugin {plugin:?} needed more memory than its {mib} MiB limit")
            }
            Stop::FuelExhausted(fuel) => {
                format!("plugin {plugin:?} ran out of fuel (budget {fuel})")
            }
            Stop::Trap(trap) => format!("plugin {plugin:?} trapped: {trap}"),
            Stop::PoolExhausted(error) => {
                format!("no sandbox slot free for plugin {plugin:?}: {error}")
            }
            Stop::Internal(error) => format!("cannot run plugin {plugin:?}: {error}"),
        }
    }
}

/// How the race between the call, the deadline and the cancel token ended.
enum Ended<T> {
    Finished(T),
    Deadline,
    Cancelled,
}

/// Which step of a call failed.
enum CallError {
    Instantiate(wasmtime::Error),
    Call(wasmtime::Error),
}

/// A fresh store with its limits, ready for one call.
pub(super) struct Sandbox {
    store: Store<StoreData>,
    limits: Limits,
    deadline: tokio::time::Instant,
    cancel: CancellationToken,
}

impl Sandbox {
    /// A store for one call under `limits`, reaching out only as `egress` allows,
    /// seeing `config`, stopped when `cancel` fires.
    pub(super) fn new(
        engine: &Engine,
        limits: &Limits,
        egress: Arc<EgressPolicy>,
        config: Arc<WasiConfigVariables>,
        cancel: CancellationToken,
    ) -> Result<Sandbox, Stop> {
        let deadline = tokio::time::Instant::now() + limits.timeout;
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE_BYTES);
        let wasi = WasiCtx::builder()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let memory_bytes = limits.memory_mib.saturating_mul(1024 * 1024);
        let data = StoreData {
            table: ResourceTable::new(),
            wasi,
            http: WasiHttpCtx::new(),
            hooks: EgressHooks::new(egress, deadline.into_std()),
            config,
            limiter: MemoryLimiter {
                limit_bytes: usize::try_from(memory_bytes).unwrap_or(usize::MAX),
                used_bytes: 0,
                refused: false,
            },
            watch: Watch {
                cancel: cancel.clone(),
                deadline: deadline.into_std(),
                interrupted: None,
            },
            stderr,
        };
        let mut store = Store::new(engine, data);
        store.limiter(|data| &mut data.limiter);
        store
            .set_fuel(limits.fuel)
            .map_err(|err| Stop::Internal(format!("cannot set fuel: {err}")))?;
        // A computing guest yields to the executor every so often, which lets the
        // race below see the cancel token and the timer, and writes the fuel counter
        // back to the store (compiled code keeps it in a register in between).
        store
            .fuel_async_yield_interval(Some(FUEL_YIELD_INTERVAL))
            .map_err(|err| Stop::Internal(format!("cannot set the fuel yield interval: {err}")))?;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut context| {
            let watch = &mut context.data_mut().watch;
            if watch.cancel.is_cancelled() {
                watch.interrupted = Some(Interruption::Cancelled);
                return Ok(UpdateDeadline::Interrupt);
            }
            if Instant::now() >= watch.deadline {
                watch.interrupted = Some(Interruption::Deadline);
                return Ok(UpdateDeadline::Interrupt);
            }
            Ok(UpdateDeadline::Continue(1))
        });
        Ok(Sandbox {
            store,
            limits: limits.clone(),
            deadline,
            cancel,
        })
    }

    /// Instantiates `pre` and calls `describe`.
    pub(super) async fn describe(
        &mut self,
        pre: &PluginPre<StoreData>,
    ) -> Result<PluginInfo, Stop> {
        let store = &mut self.store;
        let call = async move {
            let plugin = pre
                .instantiate_async(&mut *store)
                .await
                .map_err(CallError::Instantiate)?;
            plugin
                .call_describe(&mut *store)
                .await
                .map_err(CallError::Call)
        };
        let ended = race(call, self.deadline, &self.cancel).await;
        self.classify(ended)
    }

    /// Instantiates `pre` and calls `run(command, payload)`.
    pub(super) async fn run(
        &mut self,
        pre: &PluginPre<StoreData>,
        command: &str,
        payload: &[u8],
    ) -> Result<Result<Vec<u8>, GuestError>, Stop> {
        let store = &mut self.store;
        let call = async move {
            let plugin = pre
                .instantiate_async(&mut *store)
                .await
                .map_err(CallError::Instantiate)?;
            plugin
                .call_run(&mut *store, command, payload)
                .await
                .map_err(CallError::Call)
        };
        let ended = race(call, self.deadline, &self.cancel).await;
        self.classify(ended)
    }

    /// Fuel burned so far.
    pub(super) fn fuel_used(&self) -> u64 {
        let left = self.store.get_fuel().unwrap_or(0);
        self.limits.fuel.saturating_sub(left)
    }

    /// What the guest wrote to stderr (up to the capture size).
    pub(super) fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.store.data().stderr.contents()).into_owned()
    }

    fn classify<T>(&self, ended: Ended<Result<T, CallError>>) -> Result<T, Stop> {
        let data = self.store.data();
        let timeout = Stop::Timeout(self.limits.timeout);
        match (data.watch.interrupted, ended) {
            (Some(Interruption::Cancelled), _) | (None, Ended::Cancelled) => Err(Stop::Cancelled),
            (Some(Interruption::Deadline), _) | (None, Ended::Deadline) => Err(timeout),
            (None, Ended::Finished(result)) => {
                if let Some(url) = data.hooks.denied() {
                    return Err(Stop::EgressDenied(url.to_owned()));
                }
                result.map_err(|err| self.stop_of(err))
            }
        }
    }

    fn stop_of(&self, err: CallError) -> Stop {
        let data = self.store.data();
        let (err, instantiating) = match err {
            CallError::Instantiate(err) => (err, true),
            CallError::Call(err) => (err, false),
        };
        if data.limiter.refused {
            return Stop::MemoryLimit(self.limits.memory_mib);
        }
        if let Some(trap) = err.downcast_ref::<Trap>() {
            if *trap == Trap::OutOfFuel {
                return Stop::FuelExhausted(self.limits.fuel);
            }
            return Stop::Trap(with_stderr(trap.to_string(), &self.stderr()));
        }
        if err.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
            return Stop::PoolExhausted(err.to_string());
        }
        if instantiating {
            return Stop::Internal(format!("cannot instantiate: {err:#}"));
        }
        // An error raised by a host call the guest made: the guest is stopped as if it
        // had trapped.
        Stop::Trap(with_stderr(err.root_cause().to_string(), &self.stderr()))
    }
}

/// `message`, followed by the end of what the guest wrote to stderr: from a Rust
/// panic's `panicked at` line on, or else the last line, without the backtrace hint.
fn with_stderr(message: String, stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    let start = lines
        .iter()
        .rposition(|line| line.contains("panicked at"))
        .unwrap_or(lines.len().saturating_sub(1));
    match lines.get(start..) {
        Some(tail) if !tail.is_empty() => format!("{message} (guest stderr: {})", tail.join(" ")),
        _ => message,
    }
}

/// Runs `call` until it finishes, `deadline` passes or `cancel` fires.
async fn race<F: Future>(
    call: F,
    deadline: tokio::time::Instant,
    cancel: &CancellationToken,
) -> Ended<F::Output> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => Ended::Cancelled,
        output = tokio::time::timeout_at(deadline, call) => match output {
            Ok(output) => Ended::Finished(output),
            Err(_) => Ended::Deadline,
        },
    }
}

/// What the host allows any one job to hand back, whatever its plugin.
#[derive(Clone, Debug)]
pub(super) struct JobCaps {
    /// The largest result kept; a larger one fails the job for good.
    pub(super) max_result_bytes: usize,
    /// The longest retry delay a guest may ask for; longer ones are cut to this.
    pub(super) max_retry_after: Duration,
}

/// Runs attempt of job `job_id`, `command` of `plugin` on `payload`, in a fresh
/// sandbox and reports it to the worker.
pub(super) async fn run_job(
    engine: &Engine,
    plugin: &LoadedPlugin,
    job_id: JobId,
    command: &str,
    payload: &[u8],
    cancel: CancellationToken,
    caps: &JobCaps,
) -> Execution {
    let max_result_bytes = caps.max_result_bytes;
    let name = plugin.info.name.as_str();
    let mut sandbox = match Sandbox::new(
        engine,
        &plugin.limits,
        Arc::clone(&plugin.egress),
        Arc::clone(&plugin.config),
        cancel,
    ) {
        Ok(sandbox) => sandbox,
        Err(stop) => {
            return Execution {
                result: Err(failure(&stop, name)),
                fuel_used: None,
                plugin: Some(plugin.plugin_ref()),
            };
        }
    };
    let outcome = sandbox.run(&plugin.pre, command, payload).await;
    let stderr = sandbox.stderr();
    if !stderr.is_empty() {
        tracing::debug!(job_id = %job_id, plugin = %name, stderr = %stderr, "guest stderr");
    }
    let result = match outcome {
        Ok(Ok(bytes)) if bytes.len() > max_result_bytes => Err(Failure::permanent(
            ErrorKind::PluginError,
            format!(
                "plugin {name:?} returned {} bytes, over the {max_result_bytes}-byte result limit",
                bytes.len()
            ),
        )),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(GuestError::Permanent(message))) => {
            Err(Failure::permanent(ErrorKind::PluginError, message))
        }
        Ok(Err(GuestError::Retriable(error))) => Err(Failure::Retriable {
            kind: ErrorKind::PluginError,
            message: error.message,
            // Outside input (an upstream server's header, through the guest): bounded
            // here, before it meets any arithmetic.
            after: error
                .retry_after_ms
                .map(|ms| Duration::from_millis(ms).min(caps.max_retry_after)),
        }),
        Err(stop) => Err(failure(&stop, name)),
    };
    Execution {
        result,
        fuel_used: Some(sandbox.fuel_used()),
        plugin: Some(plugin.plugin_ref()),
    }
}

/// The queue's view of a stop: its kind and whether retrying can help.
fn failure(stop: &Stop, plugin: &str) -> Failure {
    let message = stop.explain(plugin);
    match stop {
        Stop::Cancelled => Failure::permanent(ErrorKind::Cancelled, message),
        Stop::Timeout(_) => Failure::retriable(ErrorKind::Timeout, message),
        Stop::EgressDenied(_) => Failure::permanent(ErrorKind::EgressDenied, message),
        Stop::MemoryLimit(_) => Failure::permanent(ErrorKind::MemoryLimit, message),
        Stop::FuelExhausted(_) => Failure::permanent(ErrorKind::FuelExhausted, message),
        Stop::Trap(_) => Failure::permanent(ErrorKind::Trap, message),
        Stop::PoolExhausted(_) => Failure::retriable(ErrorKind::Internal, message),
        Stop::Internal(_) => Failure::permanent(ErrorKind::Internal, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_counts_memories_and_tables_together() {
        let mut limiter = MemoryLimiter {
            limit_bytes: 1000,
            used_bytes: 0,
            refused: false,
        };
        assert!(limiter.memory_growing(0, 600, None).unwrap());
        assert!(limiter.table_growing(0, 50, None).unwrap());
        assert!(!limiter.refused);
        assert!(!limiter.memory_growing(600, 700, None).unwrap());
        assert!(limiter.refused);
        assert_eq!(limiter.used_bytes, 600 + 50 * TABLE_ELEMENT_BYTES);
    }

    #[test]
    fn stops_map_to_kinds_and_retry_decisions() {
        let cases = [
            (Stop::Cancelled, ErrorKind::Cancelled, false),
            (
                Stop::Timeout(Duration::from_millis(5)),
                ErrorKind::Timeout,
                true,
            ),
            (
                Stop::EgressDenied("http://x/".into()),
                ErrorKind::EgressDenied,
                false,
            ),
            (Stop::MemoryLimit(64), ErrorKind::MemoryLimit, false),
            (Stop::FuelExhausted(10), ErrorKind::FuelExhausted, false),
            (Stop::Trap("boom".into()), ErrorKind::Trap, false),
            (
                Stop::PoolExhausted("full".into()),
                ErrorKind::Internal,
                true,
            ),
            (Stop::Internal("broken".into()), ErrorKind::Internal, false),
        ];
        for (stop, kind, retriable) in cases {
            let failure = failure(&stop, "p");
            assert_eq!(failure.kind(), kind, "{stop:?}");
            assert_eq!(
                matches!(failure, Failure::Retriable { .. }),
                retriable,
                "{stop:?}"
            );
            assert!(failure.message().contains("\"p\""), "{stop:?}");
        }
    }

    #[test]
    fn trap_messages_carry_the_panic_from_stderr() {
        let panic = "starting\nthread '<unnamed>' panicked at src/lib.rs:3:9:\ndeliberate\n\
                     note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            with_stderr("wasm trap".into(), panic),
            "wasm trap (guest stderr: thread '<unnamed>' panicked at src/lib.rs:3:9: deliberate)"
        );
        assert_eq!(
            with_stderr("wasm trap".into(), "line one\nlast words\n\n"),
            "wasm trap (guest stderr: last words)"
        );
        assert_eq!(with_stderr("wasm trap".into(), ""), "wasm trap");
    }
}
