//! One sandbox: a fresh wasmtime store with its limits, one call into a plugin, and
//! the classification of how that call ended.
//!
//! Every job attempt (and every `describe` while loading) gets a new [`Sandbox`]:
//! a fuel budget; a [`MemoryLimiter`] over all linear memories and tables that records
//! what it refused; a wall-clock deadline enforced twice, by the epoch callback for a
//! guest that computes and by a timer around the whole call for a guest blocked in a
//! host call; the job's cancellation token, checked at every epoch tick and raced
//! against the call (a computing guest yields every [`FUEL_YIELD_INTERVAL`] of fuel so
//! the race is decided within milliseconds); a WASI context that grants nothing (stdout
//! discarded, stderr kept as its last few KiB for trap messages and debug logs, see
//! [`StderrTail`]), or only the job's workspace preopened read-only when the manifest
//! grants one (`workspace`); the plugin's egress hook and `[config]` table; and bounds on what
//! the guest can make the host allocate outside its linear memory (resource handles,
//! header maps, see [`host_handle_limit`]). [`run_job`] maps the outcome to the
//! queue's [`Failure`], cutting any text that comes from the guest to
//! [`MAX_GUEST_TEXT_BYTES`], and keeps the attempt's workspace only when the attempt
//! completed (any other end discards it, a dropped future included). The store's data
//! also records what the guest asks of its job through `honeydew:plugin/job` (see
//! [`JobContext`]), reported only when `run` returned, and sends the guest's
//! `wasi:logging` lines and `job.progress` reports to the attempt's [`OutputSink`]
//! (clamped there, flushed by the worker). This file must
//! not decide policy (that is the manifest's and `egress`'s) nor keep anything between
//! jobs.
//!
//! # How a deadline is classified
//!
//! A job whose deadline passes while at least one of its outgoing HTTP requests is
//! unfinished (sent, and its response or the response's body not yet over, as
//! [`EgressHooks::requests_in_flight`] counts them) ends `upstream_timeout`, retriable:
//! the upstream was too slow, and another attempt may find it quicker. Any other
//! deadline, the guest computing past it or blocked in a non-HTTP host call such as a
//! `wasi:clocks` sleep, ends `timeout`, permanent: the next attempt would do the same,
//! and it may repeat work that is not idempotent (a POST that already went through).
//! A guest that computes while a request of its own is still unfinished counts as
//! waiting on it; it gains nothing by that, as retries are bounded by `max_retries`.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio_util::sync::CancellationToken;
use wasmtime::component::{ResourceTable, ResourceTableError};
use wasmtime::{Engine, PoolConcurrencyLimitError, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};
use wasmtime_wasi_http::{FieldMapError, WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::Limits;
use super::bindings::honeydew::plugin::workspace::{ArchiveRequest, ArchiveSummary};
use super::bindings::wasi::logging::logging::Level as GuestLevel;
use super::bindings::{Error as GuestError, PluginInfo, PluginPre};
use super::egress::{EgressHooks, EgressPolicy, MAX_HEADER_MAP_BYTES};
use super::loader::LoadedPlugin;
use super::workspace::{self, GUEST_PATH, WorkspaceAccess};
use crate::job::{ErrorKind, Job, JobId};
use crate::job_request::JobRequest;
use crate::output::OutputSink;
use crate::retry::Failure;
use crate::worker::Execution;
use crate::workspace::{AttemptWorkspace, Workspaces};
use honeydew_core::output::LogLevel;

/// How much of a guest's stderr is kept: the last this many bytes.
const STDERR_CAPTURE_BYTES: usize = 4096;

/// The most bytes one write to the guest's stderr may carry (what `check-write`
/// grants): a bound on the host buffer a single write needs, not on the total.
const STDERR_WRITE_PERMIT: usize = 64 * 1024;

/// The longest error text from a guest that the host keeps (its own message, or a
/// trap's with the end of its stderr); longer text is cut to this, marker included.
/// Such text goes into both job tables, the log, events and every listing.
pub(super) const MAX_GUEST_TEXT_BYTES: usize = 8 * 1024;

/// The most host bytes a single resource handle can stand for: a header map is the
/// largest thing a guest can fill (outgoing body buffers are kept as small).
const HOST_BYTES_PER_HANDLE: usize = MAX_HEADER_MAP_BYTES;

/// The fewest host resource handles a job may hold at once, however small its memory
/// limit: enough for any plugin's ordinary use (an HTTP exchange takes about ten).
const MIN_HOST_HANDLES: usize = 256;

/// The most host resource handles any job may hold at once.
const MAX_HOST_HANDLES: usize = 65_536;

/// The most bytes one `wasi:random` call may ask for (the default is 64 MiB).
const MAX_RANDOM_BYTES: u64 = 64 * 1024;

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
    stderr: StderrTail,
    /// The capacity of `table`, for the message when a guest fills it.
    handle_limit: usize,
    /// The plugin's name, for messages.
    plugin: String,
    /// The job's workspace, when the manifest grants one.
    workspace: Option<WorkspaceAccess>,
    /// The job as the guest sees it through `honeydew:plugin/job`.
    job: JobContext,
    /// Where the guest's log lines (`wasi:logging`) and progress go; discarded unless
    /// the attempt's worker gave one.
    output: OutputSink,
}

/// What `honeydew:plugin/job` shows of the job and what the guest asked of it: the
/// last request, bounded as it enters (the delay clamped, the reason cut to
/// [`MAX_GUEST_TEXT_BYTES`]).
#[derive(Debug, Default)]
struct JobContext {
    /// Times the job snoozed before this attempt.
    snooze_count: u32,
    /// The guest's last request, if any.
    request: Option<JobRequest>,
}

impl StoreData {
    /// The `wasi:config/store` view, for the linker.
    pub(super) fn config(&mut self) -> WasiConfig<'_> {
        WasiConfig::from(&*self.config)
    }
}

impl super::bindings::honeydew::plugin::workspace::Host for StoreData {
    async fn fetch_archive(
        &mut self,
        request: ArchiveRequest,
    ) -> Result<ArchiveSummary, GuestError> {
        workspace::fetch_archive(&self.plugin, &self.hooks, self.workspace.as_ref(), request).await
    }
}

impl super::bindings::honeydew::plugin::job::Host for StoreData {
    async fn snooze(&mut self, delay_ms: u64, reason: String) {
        self.job.request = Some(JobRequest::snooze(delay_ms, cap_guest_text(reason)));
    }

    async fn cancel(&mut self, reason: String) {
        self.job.request = Some(JobRequest::cancel(cap_guest_text(reason)));
    }

    async fn snooze_count(&mut self) -> u32 {
        self.job.snooze_count
    }

    async fn progress(&mut self, done: u64, total: Option<u64>, message: Option<String>) {
        self.output.progress(done, total, message.as_deref());
    }
}

impl super::bindings::wasi::logging::logging::Host for StoreData {
    fn log(&mut self, level: GuestLevel, context: String, message: String) {
        let level = match level {
            GuestLevel::Trace => LogLevel::Trace,
            GuestLevel::Debug => LogLevel::Debug,
            GuestLevel::Info => LogLevel::Info,
            GuestLevel::Warn => LogLevel::Warn,
            GuestLevel::Error => LogLevel::Error,
            GuestLevel::Critical => LogLevel::Critical,
        };
        self.output.log(level, &context, &message);
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

/// How many host resource handles (`wasi:http` fields and requests, streams,
/// pollables, ...) a job whose linear memory may reach `memory_bytes` may hold at once.
///
/// Nothing a handle stands for counts against the memory limiter, so the handles are
/// capped instead: with every header map capped at [`MAX_HEADER_MAP_BYTES`] and every
/// outgoing body buffer no larger, a full table holds about `memory_bytes` of host
/// memory (at least [`MIN_HOST_HANDLES`] handles' worth), on top of the guest's own.
fn host_handle_limit(memory_bytes: usize) -> usize {
    (memory_bytes / HOST_BYTES_PER_HANDLE).clamp(MIN_HOST_HANDLES, MAX_HOST_HANDLES)
}

/// A guest's stderr: keeps the last [`STDERR_CAPTURE_BYTES`] written and never refuses
/// a write, so a chatty guest neither traps (Rust's `eprintln!` panics on a failed
/// write) nor makes the host hold more than that. Clones share one buffer.
#[derive(Clone, Default)]
struct StderrTail {
    shared: Arc<Mutex<TailBuffer>>,
}

#[derive(Default)]
struct TailBuffer {
    tail: VecDeque<u8>,
    total_bytes: u64,
}

impl StderrTail {
    fn record(&self, bytes: &[u8]) {
        let mut buffer = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        buffer.total_bytes = buffer
            .total_bytes
            .saturating_add(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
        let kept = &bytes[bytes.len().saturating_sub(STDERR_CAPTURE_BYTES)..];
        let overflow = (buffer.tail.len() + kept.len()).saturating_sub(STDERR_CAPTURE_BYTES);
        buffer.tail.drain(..overflow);
        buffer.tail.extend(kept);
    }

    /// The bytes kept, and how many were written in all.
    fn contents(&self) -> (Vec<u8>, u64) {
        let buffer = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        (buffer.tail.iter().copied().collect(), buffer.total_bytes)
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StderrTail {
    async fn ready(&mut self) {}
}

impl OutputStream for StderrTail {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.record(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(STDERR_WRITE_PERMIT)
    }
}

impl AsyncWrite for StderrTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.record(bytes);
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// `text` if it fits in [`MAX_GUEST_TEXT_BYTES`]; else its start, cut on a character
/// boundary, and a marker saying how long it was, together within the cap.
pub(super) fn cap_guest_text(text: String) -> String {
    if text.len() <= MAX_GUEST_TEXT_BYTES {
        return text;
    }
    let marker = format!("… (truncated: {} bytes in all)", text.len());
    let keep = text.floor_char_boundary(MAX_GUEST_TEXT_BYTES.saturating_sub(marker.len()));
    let mut capped = text;
    capped.truncate(keep);
    capped.push_str(&marker);
    capped
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
    /// The wall-clock deadline passed with no outgoing request unfinished: the guest
    /// was computing, or blocked in a non-HTTP host call.
    Timeout(Duration),
    /// The wall-clock deadline passed while this many outgoing HTTP requests of the
    /// guest were unfinished: the upstream was too slow.
    UpstreamTimeout {
        /// The deadline.
        limit: Duration,
        /// Requests unfinished when it passed.
        requests: usize,
    },
    /// The guest tried to reach a URL its manifest does not grant.
    EgressDenied(String),
    /// The limiter refused memory or table growth.
    MemoryLimit(u64),
    /// The guest held as many host resource handles as its memory limit allows, and
    /// asked for one more.
    HostHandles {
        /// The job's memory limit, in MiB.
        memory_mib: u64,
        /// The handles it allows.
        handles: usize,
    },
    /// The guest filled a header map past [`MAX_HEADER_MAP_BYTES`].
    HeaderMapTooLarge,
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
    /// The reason in words, naming `plugin`, within [`MAX_GUEST_TEXT_BYTES`] (a trap's
    /// message carries the guest's stderr, a denied URL is the guest's).
    pub(super) fn explain(&self, plugin: &str) -> String {
        cap_guest_text(self.explain_in_full(plugin))
    }

    fn explain_in_full(&self, plugin: &str) -> String {
        match self {
            Stop::Cancelled => format!("plugin {plugin:?} was cancelled while running"),
            Stop::Timeout(limit) => {
                format!(
                    "plugin {plugin:?} did not finish within {}ms",
                    limit.as_millis()
                )
            }
            Stop::UpstreamTimeout { limit, requests } => format!(
                "plugin {plugin:?} did not finish within {}ms: it was still waiting on {requests} outgoing HTTP request{}",
                limit.as_millis(),
                if *requests == 1 { "" } else { "s" }
            ),
            Stop::EgressDenied(url) => format!(
                "plugin {plugin:?} tried to reach {url}, which its manifest's network.allowed_hosts does not grant"
            ),
            Stop::MemoryLimit(mib) => {
                format!("plugin {plugin:?} needed more memory than its {mib} MiB limit")
            }
            Stop::HostHandles {
                memory_mib,
                handles,
            } => format!(
                "plugin {plugin:?} held more host resources than the {handles} that its {memory_mib} MiB memory limit allows"
            ),
            Stop::HeaderMapTooLarge => format!(
                "plugin {plugin:?} filled a header map past the host's {MAX_HEADER_MAP_BYTES}-byte limit"
            ),
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
    /// A store for one call of `plugin` under `limits`, reaching out only as `egress`
    /// allows, seeing `config` and, if given, `workspace` (its only filesystem), stopped
    /// when `cancel` fires.
    pub(super) fn new(
        engine: &Engine,
        plugin: &str,
        limits: &Limits,
        egress: Arc<EgressPolicy>,
        config: Arc<WasiConfigVariables>,
        workspace: Option<WorkspaceAccess>,
        cancel: CancellationToken,
    ) -> Result<Sandbox, Stop> {
        let deadline = tokio::time::Instant::now() + limits.timeout;
        let stderr = StderrTail::default();
        let mut wasi = WasiCtx::builder();
        wasi.stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .max_random_size(MAX_RANDOM_BYTES);
        if let Some(access) = &workspace {
            wasi.preopened_dir(access.handle.path(), GUEST_PATH, FsPerms::ReadOnly)
                .map_err(|err| Stop::Internal(format!("cannot open the job's workspace: {err}")))?;
        }
        let wasi = wasi.build();
        let memory_bytes =
            usize::try_from(limits.memory_mib.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
        let handle_limit = host_handle_limit(memory_bytes);
        let mut table = ResourceTable::new();
        table.set_max_capacity(handle_limit);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(MAX_HEADER_MAP_BYTES);
        let data = StoreData {
            table,
            wasi,
            http,
            hooks: EgressHooks::new(egress, deadline.into_std()),
            config,
            limiter: MemoryLimiter {
                limit_bytes: memory_bytes,
                used_bytes: 0,
                refused: false,
            },
            watch: Watch {
                cancel: cancel.clone(),
                deadline: deadline.into_std(),
                interrupted: None,
            },
            stderr,
            handle_limit,
            plugin: plugin.to_owned(),
            workspace,
            job: JobContext::default(),
            output: OutputSink::discard(),
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

    /// Shows the guest a job that has snoozed `snooze_count` times before this attempt.
    pub(super) fn set_snooze_count(&mut self, snooze_count: u32) {
        self.store.data_mut().job.snooze_count = snooze_count;
    }

    /// Sends what the guest logs and reports as progress to `output`.
    pub(super) fn set_output(&mut self, output: OutputSink) {
        self.store.data_mut().output = output;
    }

    /// The guest's last request about its job, taken out of the store.
    pub(super) fn take_request(&mut self) -> Option<JobRequest> {
        self.store.data_mut().job.request.take()
    }

    /// The latest end of a rate limit that held or refused one of the job's requests,
    /// with a sentence naming it.
    pub(super) fn rate_limited(&self) -> Option<(chrono::DateTime<chrono::Utc>, String)> {
        self.store.data().hooks.rate_limited()
    }

    /// Fuel burned so far.
    pub(super) fn fuel_used(&self) -> u64 {
        let left = self.store.get_fuel().unwrap_or(0);
        self.limits.fuel.saturating_sub(left)
    }

    /// The end of what the guest wrote to stderr (the last [`STDERR_CAPTURE_BYTES`]),
    /// and how many bytes it wrote in all.
    pub(super) fn stderr(&self) -> (String, u64) {
        let (tail, total_bytes) = self.store.data().stderr.contents();
        (String::from_utf8_lossy(&tail).into_owned(), total_bytes)
    }

    fn classify<T>(&self, ended: Ended<Result<T, CallError>>) -> Result<T, Stop> {
        let data = self.store.data();
        match (data.watch.interrupted, ended) {
            (Some(Interruption::Cancelled), _) | (None, Ended::Cancelled) => Err(Stop::Cancelled),
            (Some(Interruption::Deadline), _) | (None, Ended::Deadline) => {
                // See the module's documentation: unfinished requests make it the
                // upstream's fault, whichever of the epoch callback and the timer saw
                // the deadline first.
                let limit = self.limits.timeout;
                Err(match data.hooks.requests_in_flight() {
                    0 => Stop::Timeout(limit),
                    requests => Stop::UpstreamTimeout { limit, requests },
                })
            }
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
        let table_full = err.chain().any(|cause| {
            matches!(
                cause.downcast_ref::<ResourceTableError>(),
                Some(ResourceTableError::Full)
            )
        });
        if table_full {
            return Stop::HostHandles {
                memory_mib: self.limits.memory_mib,
                handles: data.handle_limit,
            };
        }
        // wasmtime-wasi-http traps a guest whose `fields` outgrow their limit.
        let fields_full = err.chain().any(|cause| {
            matches!(
                cause.downcast_ref::<FieldMapError>(),
                Some(FieldMapError::TotalSizeTooBig | FieldMapError::TooManyFields)
            )
        });
        if fields_full {
            return Stop::HeaderMapTooLarge;
        }
        let (stderr, _) = self.stderr();
        if let Some(trap) = err.downcast_ref::<Trap>() {
            if *trap == Trap::OutOfFuel {
                return Stop::FuelExhausted(self.limits.fuel);
            }
            return Stop::Trap(with_stderr(trap.to_string(), &stderr));
        }
        if err.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
            return Stop::PoolExhausted(err.to_string());
        }
        if instantiating {
            return Stop::Internal(format!("cannot instantiate: {err:#}"));
        }
        // An error raised by a host call the guest made: the guest is stopped as if it
        // had trapped.
        Stop::Trap(with_stderr(err.root_cause().to_string(), &stderr))
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

/// Runs an attempt of `job`, `command` of `plugin` on the job's payload, in a fresh
/// sandbox and reports it to the worker. A plugin granted a workspace gets a fresh one
/// in `workspaces`, kept only if the attempt completes. What the guest asked of its job
/// is reported only when its `run` returned.
// What one attempt needs, each from its own owner; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run_job(
    engine: &Engine,
    plugin: &LoadedPlugin,
    job: &Job,
    command: &str,
    cancel: CancellationToken,
    output: OutputSink,
    caps: &JobCaps,
    workspaces: Option<&Workspaces>,
) -> Execution {
    let (job_id, payload) = (job.id, job.payload.as_slice());
    let max_result_bytes = caps.max_result_bytes;
    let name = plugin.info.name.as_str();
    // Declared before the sandbox, so dropped after it: the workspace goes only once
    // nothing of the attempt can use it (a dropped attempt too).
    let attempt = match (plugin.workspace, workspaces) {
        (Some(grant), Some(workspaces)) => match begin_workspace(workspaces, job_id).await {
            Ok(attempt) => Some((attempt, grant)),
            Err(err) => {
                let failure = Failure::retriable(
                    ErrorKind::Internal,
                    format!("cannot prepare the workspace of plugin {name:?}: {err}"),
                );
                return Execution {
                    result: Err(failure),
                    fuel_used: None,
                    plugin: Some(plugin.plugin_ref()),
                    request: None,
                };
            }
        },
        _ => None,
    };
    let access = attempt.as_ref().map(|(attempt, grant)| WorkspaceAccess {
        handle: attempt.handle(),
        grant: *grant,
    });
    let mut sandbox = match Sandbox::new(
        engine,
        name,
        &plugin.limits,
        Arc::clone(&plugin.egress),
        Arc::clone(&plugin.config),
        access,
        cancel,
    ) {
        Ok(sandbox) => sandbox,
        Err(stop) => {
            return Execution {
                result: Err(failure(&stop, name)),
                fuel_used: None,
                plugin: Some(plugin.plugin_ref()),
                request: None,
            };
        }
    };
    sandbox.set_snooze_count(job.snooze_count);
    sandbox.set_output(output);
    let outcome = sandbox.run(&plugin.pre, command, payload).await;
    // A request stands only for an attempt whose `run` returned; one that trapped,
    // timed out or was stopped ends as it would have without it.
    let request = match &outcome {
        Ok(_) => sandbox.take_request(),
        Err(_) => None,
    };
    // The guest's own error after a rate limit held or refused one of its requests:
    // the job waits for the reset (see `rate_limits`), not for a retry.
    let rate_limited = match &outcome {
        Ok(Err(_)) => sandbox.rate_limited(),
        _ => None,
    };
    let (stderr, stderr_bytes) = sandbox.stderr();
    if !stderr.is_empty() {
        tracing::debug!(job_id = %job_id, plugin = %name, stderr_bytes, stderr_tail = %stderr, "guest stderr");
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
        // The guest's own text: bounded here, before it reaches the tables and the log.
        Ok(Err(GuestError::Permanent(message))) => Err(Failure::permanent(
            ErrorKind::PluginError,
            cap_guest_text(message),
        )),
        Ok(Err(GuestError::Retriable(error))) => Err(Failure::Retriable {
            kind: ErrorKind::PluginError,
            message: cap_guest_text(error.message),
            // Outside input (an upstream server's header, through the guest): bounded
            // here, before it meets any arithmetic.
            after: error
                .retry_after_ms
                .map(|ms| Duration::from_millis(ms).min(caps.max_retry_after)),
        }),
        Err(stop) => Err(failure(&stop, name)),
    };
    let result = match (rate_limited, result) {
        (Some((until, reason)), Err(failure)) => Err(Failure::Retriable {
            kind: ErrorKind::RateLimited,
            message: cap_guest_text(format!("{reason}; the plugin said: {}", failure.message())),
            after: Some((until - chrono::Utc::now()).to_std().unwrap_or_default()),
        }),
        (_, result) => result,
    };
    let fuel_used = sandbox.fuel_used();
    drop(sandbox);
    // A snoozed or cancelled attempt did not complete, whatever `run` returned.
    if let Some((attempt, _)) = attempt
        && result.is_ok()
        && request.is_none()
    {
        attempt.keep();
    }
    Execution {
        result,
        fuel_used: Some(fuel_used),
        plugin: Some(plugin.plugin_ref()),
        request,
    }
}

/// A fresh workspace for an attempt of job `id`, made on a blocking thread.
async fn begin_workspace(workspaces: &Workspaces, id: JobId) -> std::io::Result<AttemptWorkspace> {
    let workspaces = workspaces.clone();
    tokio::task::spawn_blocking(move || workspaces.begin(id))
        .await
        .map_err(std::io::Error::other)?
}

/// The queue's view of a stop: its kind and whether retrying can help.
fn failure(stop: &Stop, plugin: &str) -> Failure {
    let message = stop.explain(plugin);
    match stop {
        Stop::Cancelled => Failure::permanent(ErrorKind::Cancelled, message),
        Stop::Timeout(_) => Failure::permanent(ErrorKind::Timeout, message),
        Stop::UpstreamTimeout { .. } => Failure::retriable(ErrorKind::UpstreamTimeout, message),
        Stop::EgressDenied(_) => Failure::permanent(ErrorKind::EgressDenied, message),
        Stop::MemoryLimit(_) | Stop::HostHandles { .. } | Stop::HeaderMapTooLarge => {
            Failure::permanent(ErrorKind::MemoryLimit, message)
        }
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
                false,
            ),
            (
                Stop::UpstreamTimeout {
                    limit: Duration::from_millis(5),
                    requests: 1,
                },
                ErrorKind::UpstreamTimeout,
                true,
            ),
            (
                Stop::EgressDenied("http://x/".into()),
                ErrorKind::EgressDenied,
                false,
            ),
            (Stop::MemoryLimit(64), ErrorKind::MemoryLimit, false),
            (
                Stop::HostHandles {
                    memory_mib: 64,
                    handles: 2048,
                },
                ErrorKind::MemoryLimit,
                false,
            ),
            (Stop::HeaderMapTooLarge, ErrorKind::MemoryLimit, false),
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

    #[test]
    fn guest_text_is_cut_on_a_char_boundary_with_a_marker() {
        let short = "x".repeat(MAX_GUEST_TEXT_BYTES);
        assert_eq!(cap_guest_text(short.clone()), short);
        // Three-byte characters, so that the cut falls inside one unless it is moved.
        let long = "€".repeat(10_000);
        let capped = cap_guest_text(long.clone());
        assert!(capped.len() <= MAX_GUEST_TEXT_BYTES, "{}", capped.len());
        assert!(capped.len() > MAX_GUEST_TEXT_BYTES - 64, "{}", capped.len());
        let (kept, marker) = capped.split_once('…').unwrap();
        assert!(kept.chars().all(|c| c == '€'));
        assert_eq!(marker, " (truncated: 30000 bytes in all)");
    }

    #[test]
    fn stderr_keeps_its_tail_and_counts_everything() {
        let mut stderr = StderrTail::default();
        for line in 0..2000 {
            stderr
                .write(Bytes::from(format!("line {line}\n")))
                .expect("stderr never refuses a write");
        }
        assert!(stderr.check_write().unwrap() > 0);
        let (tail, total_bytes) = stderr.contents();
        assert_eq!(tail.len(), STDERR_CAPTURE_BYTES);
        assert!(
            String::from_utf8(tail)
                .unwrap()
                .ends_with("line 1998\nline 1999\n")
        );
        let written: usize = (0..2000).map(|line| format!("line {line}\n").len()).sum();
        assert_eq!(total_bytes, written as u64);

        stderr.record(&vec![b'z'; 3 * STDERR_CAPTURE_BYTES]);
        assert_eq!(stderr.contents().0, vec![b'z'; STDERR_CAPTURE_BYTES]);
    }

    #[test]
    fn host_handles_follow_the_memory_limit_within_bounds() {
        let mib = 1024 * 1024;
        assert_eq!(host_handle_limit(0), MIN_HOST_HANDLES);
        assert_eq!(host_handle_limit(64 * mib), 64 * mib / MAX_HEADER_MAP_BYTES);
        assert_eq!(host_handle_limit(usize::MAX), MAX_HOST_HANDLES);
        // A full table of the largest handles stays within the memory limit (or the
        // floor's worth).
        for memory_mib in [1, 16, 64, 1024] {
            let bytes = memory_mib * mib;
            let held = host_handle_limit(bytes) * HOST_BYTES_PER_HANDLE;
            assert!(held <= bytes.max(MIN_HOST_HANDLES * HOST_BYTES_PER_HANDLE));
        }
    }
}
