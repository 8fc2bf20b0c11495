//! OpenTelemetry traces, when the daemon is given `--otlp-endpoint`: a span for every
//! submit (the client's W3C `traceparent` from the request metadata as its parent), a
//! span for every attempt (the job's command, attempt, outcome, error kind and fuel),
//! and a client span for every HTTP request a plugin sends (each hop of a redirect its
//! own), whose context goes out in the request's `traceparent` header, so an API call
//! shows up under the job that made it, and the API's own spans under that.
//!
//! The job carries the trace across time and daemons: its row keeps the `traceparent`
//! of its submit span ([`SubmitSpan::trace_parent`]), which every attempt, on any node
//! and after any restart, continues. Without an exporter nothing is recorded, yet a
//! client's `traceparent` still travels: the job keeps it and the plugin's requests
//! carry it unchanged, as a W3C pass-through should.
//!
//! Spans are exported in batches by the OpenTelemetry SDK's own thread over OTLP/gRPC
//! (plain HTTP/2: a collector on loopback or beside the daemon); an export runs on the
//! daemon's tokio runtime, which tonic needs. A collector that is down costs dropped
//! spans, logged by the SDK, never a job. Sampling follows the parent: a client that
//! marks its trace unsampled gets no spans recorded, only its context carried.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
};

use crate::job::Job;
use crate::store::Outcome;

/// The W3C header (and gRPC metadata key) that carries a trace context.
pub const TRACEPARENT: &str = "traceparent";

/// The longest `traceparent` read from outside; a version-00 one has 55 characters,
/// later versions may append fields. Longer values are ignored, never parsed.
const MAX_TRACEPARENT_BYTES: usize = 256;

/// How many finished spans wait for export; past it new ones are dropped (counted by
/// the SDK), so a collector that is down never grows the daemon's memory.
const MAX_QUEUED_SPANS: usize = 16_384;

/// How long an export may take before it is given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The daemon's tracer, while a [`Traces`] runs; none: nothing is recorded.
static TRACER: RwLock<Option<SdkTracer>> = RwLock::new(None);

/// The running tracer, if any (a clone: a handle to the provider).
fn tracer() -> Option<SdkTracer> {
    TRACER
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// The running exporter, owned by the daemon: [`Traces::shutdown`] exports what is left.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Starts exporting spans to the OTLP/gRPC collector at `endpoint`
    /// (`http://host:port`). Call on the daemon's runtime, once per process.
    pub fn start(endpoint: &str) -> anyhow::Result<Traces> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .with_context(|| format!("cannot set up the OTLP exporter for {endpoint}"))?;
        let exporter = OnRuntime {
            inner: Arc::new(exporter),
            runtime: tokio::runtime::Handle::current(),
        };
        let batches = BatchConfigBuilder::default()
            .with_max_queue_size(MAX_QUEUED_SPANS)
            .with_scheduled_delay(Duration::from_secs(1))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(
                BatchSpanProcessor::builder(exporter)
                    .with_batch_config(batches)
                    .build(),
            )
            .with_resource(
                Resource::builder()
                    .with_service_name("honeydewd")
                    .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                    .build(),
            )
            .build();
        let mut running = TRACER.write().unwrap_or_else(PoisonError::into_inner);
        if running.is_some() {
            anyhow::bail!("traces are already being exported by this process");
        }
        *running = Some(provider.tracer("honeydew"));
        tracing::info!(endpoint, "exporting traces over OTLP");
        Ok(Traces { provider })
    }

    /// Exports the spans still queued and stops; spans ended later are dropped.
    pub async fn shutdown(self) {
        *TRACER.write().unwrap_or_else(PoisonError::into_inner) = None;
        let provider = self.provider;
        // The SDK blocks until its thread has exported, which needs this runtime.
        let stopped = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match stopped {
            Ok(Ok(())) => tracing::info!("trace export stopped"),
            Ok(Err(err)) => tracing::warn!(error = %err, "trace export stopped with spans lost"),
            Err(err) => tracing::warn!(error = %err, "trace export did not stop cleanly"),
        }
    }
}

/// The OTLP exporter, run on the tokio runtime: the SDK's batch thread drives an
/// export with a plain executor, and tonic's channel needs tokio's reactor and timers.
#[derive(Debug)]
struct OnRuntime {
    inner: Arc<opentelemetry_otlp::SpanExporter>,
    runtime: tokio::runtime::Handle,
}

impl SpanExporter for OnRuntime {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let inner = Arc::clone(&self.inner);
        let export = self.runtime.spawn(async move { inner.export(batch).await });
        async move {
            export
                .await
                .unwrap_or_else(|err| Err(OTelSdkError::InternalFailure(err.to_string())))
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Called while the processor is built, before any export shares the exporter.
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

/// The trace context a `traceparent` value names, when it is well formed (version,
/// trace id, parent id and flags as W3C Trace Context says; all-zero ids refused).
fn extract(traceparent: &str) -> Option<Context> {
    if traceparent.len() > MAX_TRACEPARENT_BYTES {
        return None;
    }
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// The `traceparent` that continues `cx`, if it holds a valid span context.
fn inject(cx: &Context) -> Option<String> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// `value` as a `traceparent` fit to keep (normalised), or `None` when it is not one:
/// a malformed value from a client is ignored, never an error of its submit.
pub fn valid_traceparent(value: &str) -> Option<String> {
    inject(&extract(value)?)
}

/// The context named by a stored `traceparent`, or an empty one.
fn parent_of(traceparent: Option<&str>) -> Context {
    traceparent.and_then(extract).unwrap_or_default()
}

/// The span of one submit (or of one batch of submits), from before its commit to
/// its answer.
pub struct SubmitSpan {
    cx: Context,
}

impl SubmitSpan {
    /// Starts the span of a submit of `jobs` jobs of `command` (`None`: a batch of
    /// several commands), under the client's `traceparent` if it sent one.
    pub fn start(client: Option<&str>, command: Option<&str>, jobs: usize) -> SubmitSpan {
        let parent = parent_of(client);
        let Some(tracer) = tracer() else {
            return SubmitSpan { cx: parent };
        };
        let mut attributes = vec![KeyValue::new("honeydew.jobs", jobs as i64)];
        if let Some(command) = command {
            attributes.push(KeyValue::new("honeydew.command", command.to_owned()));
        }
        let name = if jobs == 1 { "submit" } else { "submit batch" };
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Producer)
            .with_attributes(attributes)
            .start_with_context(&tracer, &parent);
        SubmitSpan {
            cx: parent.with_span(span),
        }
    }

    /// The `traceparent` the submitted jobs keep: this span's, or without an exporter
    /// the client's own.
    pub fn trace_parent(&self) -> Option<String> {
        inject(&self.cx)
    }

    /// Ends the span with the submit's answer: the first job's id, or why it failed.
    pub fn end(self, answer: Result<&str, &str>) {
        let span = self.cx.span();
        match answer {
            Ok(id) => span.set_attribute(KeyValue::new("honeydew.job.id", id.to_owned())),
            Err(error) => span.set_status(Status::error(error.to_owned())),
        }
        span.end();
    }
}

/// The span of one attempt of a job, a child of its submit's span.
pub struct AttemptSpan {
    cx: Context,
}

impl AttemptSpan {
    /// Starts the span of attempt `attempt` of `job`.
    pub fn start(job: &Job, attempt: u32) -> AttemptSpan {
        let parent = parent_of(job.trace_parent.as_deref());
        let Some(tracer) = tracer() else {
            return AttemptSpan { cx: parent };
        };
        let span = tracer
            .span_builder(format!("run {}", job.command))
            .with_kind(SpanKind::Consumer)
            .with_attributes([
                KeyValue::new("honeydew.job.id", job.id.to_string()),
                KeyValue::new("honeydew.command", job.command.clone()),
                KeyValue::new("honeydew.attempt", i64::from(attempt)),
            ])
            .start_with_context(&tracer, &parent);
        AttemptSpan {
            cx: parent.with_span(span),
        }
    }

    /// The context the attempt runs in: what its plugin's requests continue.
    pub fn context(&self) -> Context {
        self.cx.clone()
    }

    /// Ends the span with how the attempt ended and the fuel it burned.
    pub fn end(self, outcome: &Outcome, fuel_used: Option<u64>) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("honeydew.outcome", outcome.attempt_outcome()));
        if let Some(fuel) = fuel_used {
            span.set_attribute(KeyValue::new(
                "honeydew.fuel",
                i64::try_from(fuel).unwrap_or(i64::MAX),
            ));
        }
        if let Some((kind, error)) = outcome.error() {
            span.set_attribute(KeyValue::new("error.type", kind.as_str()));
            span.set_status(Status::error(error.to_owned()));
        }
        span.end();
    }
}

/// The trace context an attempt's HTTP requests continue, taken when its sandbox is
/// made (inside the attempt's span).
#[derive(Clone, Default)]
pub struct RequestParent {
    cx: Option<Context>,
}

impl RequestParent {
    /// The context of the running attempt, if it has one.
    pub fn current() -> RequestParent {
        let cx = Context::current();
        let valid = cx.span().span_context().is_valid();
        RequestParent {
            cx: valid.then_some(cx),
        }
    }

    /// Starts the client span of one hop of a plugin's request: `method` to `url` (as
    /// logged: without its query) on `host`.
    pub fn request(&self, method: &str, url: &str, host: &str) -> RequestSpan {
        let Some(parent) = &self.cx else {
            return RequestSpan::default();
        };
        let Some(tracer) = tracer() else {
            // Not recorded: the attempt's context (the client's) goes out unchanged.
            return RequestSpan {
                span: None,
                traceparent: inject(parent),
            };
        };
        let span = tracer
            .span_builder(method.to_owned())
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("http.request.method", method.to_owned()),
                KeyValue::new("url.full", url.to_owned()),
                KeyValue::new("server.address", host.to_owned()),
            ])
            .start_with_context(&tracer, parent);
        let cx = parent.with_span(span);
        RequestSpan {
            traceparent: inject(&cx),
            span: Some(cx),
        }
    }
}

/// One hop's client span; ended when dropped (a hop that failed before its answer is
/// marked so by [`RequestSpan::failed`]).
#[derive(Default)]
pub struct RequestSpan {
    span: Option<Context>,
    traceparent: Option<String>,
}

impl RequestSpan {
    /// The `traceparent` header the hop goes out with, when it is traced.
    pub fn traceparent(&self) -> Option<&str> {
        self.traceparent.as_deref()
    }

    /// The hop was answered with `status` (4xx and 5xx mark a client span failed).
    pub fn answered(&self, status: u16) {
        if let Some(cx) = &self.span {
            let span = cx.span();
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if status >= 400 {
                span.set_attribute(KeyValue::new("error.type", status.to_string()));
                span.set_status(Status::error(""));
            }
        }
    }

    /// The hop failed without an answer, for `reason`.
    pub fn failed(&self, reason: &str) {
        if let Some(cx) = &self.span {
            let span = cx.span();
            span.set_attribute(KeyValue::new("error.type", reason.to_owned()));
            span.set_status(Status::error(reason.to_owned()));
        }
    }
}

impl Drop for RequestSpan {
    fn drop(&mut self) {
        if let Some(cx) = &self.span {
            cx.span().end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_well_formed_traceparent_is_kept_and_anything_else_ignored() {
        assert_eq!(valid_traceparent(PARENT).as_deref(), Some(PARENT));
        // Upper case is not W3C's: ignored rather than guessed at.
        for bad in [
            "",
            "nonsense",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            &format!(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-{}",
                "a".repeat(300)
            ),
        ] {
            assert_eq!(valid_traceparent(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn without_an_exporter_an_attempt_carries_its_jobs_traceparent_unchanged() {
        let job = Job {
            trace_parent: Some(PARENT.to_owned()),
            ..Job::new("echo.echo", Vec::new(), 0, 3)
        };
        let attempt = AttemptSpan::start(&job, 1);
        let _running = attempt.context().attach();
        let request = RequestParent::current().request("GET", "http://127.0.0.1/", "127.0.0.1");
        assert_eq!(request.traceparent(), Some(PARENT));
    }

    #[test]
    fn an_untraced_job_sends_no_traceparent() {
        let attempt = AttemptSpan::start(&Job::new("echo.echo", Vec::new(), 0, 3), 1);
        let _running = attempt.context().attach();
        let request = RequestParent::current().request("GET", "http://127.0.0.1/", "127.0.0.1");
        assert_eq!(request.traceparent(), None);
        let submit = SubmitSpan::start(None, Some("echo.echo"), 1);
        assert_eq!(submit.trace_parent(), None);
    }
}
