//! OpenTelemetry traces, on SQLite and on PostgreSQL: a daemon given `--otlp-endpoint`
//! exports to an OTLP/gRPC collector run by the test (the real protocol, the
//! OpenTelemetry project's own generated service). A submit that carries a client's
//! `traceparent` gives a submit span under the client's span, an attempt span under the
//! submit's, and a client span for the plugin's HTTP request under the attempt's, whose
//! context the fake API receives in its `traceparent` header. Untraced and malformed
//! submits start traces of their own. Without an exporter, the client's `traceparent`
//! still reaches the plugin's request, unchanged.

use std::sync::{Arc, Mutex};

use honeydew::api::pb::{self, JobStatus};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::json;
use tokio::sync::Notify;
use tonic::transport::Channel;

use crate::support::backend::{Backend, on_both_backends};
use crate::support::{HttpStub, PATIENCE, finished, queue};

on_both_backends!(
    a_traced_submit_gives_its_attempt_and_its_requests_the_clients_trace,
    without_an_exporter_a_clients_traceparent_reaches_the_plugins_requests_unchanged,
);

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// An OTLP/gRPC trace collector on 127.0.0.1: keeps every span it is sent, with the
/// resource's `service.name`.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
    arrived: Arc<Notify>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.name")
                .map(|attribute| text(attribute.value.as_ref().and_then(|v| v.value.as_ref())))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                kept.extend(scope.spans.into_iter().map(|span| (service.clone(), span)));
            }
        }
        self.arrived.notify_waiters();
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// Serves on a free loopback port until the test ends; its `http://` URL.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        url
    }

    /// The spans of the job `id` (its submit span, its attempt spans and their
    /// children), once its attempt span and `children` spans under it have arrived.
    async fn trace_of(&self, job_id: &str, children: usize) -> Vec<Span> {
        let wait = async {
            loop {
                let arrived = self.arrived.notified();
                if let Some(spans) = self.complete_trace(job_id, children) {
                    return spans;
                }
                arrived.await;
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .unwrap_or_else(|_| {
                let names: Vec<String> = self
                    .spans
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(_, span)| span.name.clone())
                    .collect();
                panic!("no complete trace of job {job_id} exported; spans seen: {names:?}")
            })
    }

    fn complete_trace(&self, job_id: &str, children: usize) -> Option<Vec<Span>> {
        let spans = self.spans.lock().unwrap();
        let submit = spans
            .iter()
            .map(|(_, span)| span)
            .find(|span| span.name == "submit" && attribute(span, "honeydew.job.id") == job_id)?;
        let trace: Vec<Span> = spans
            .iter()
            .map(|(_, span)| span)
            .filter(|span| span.trace_id == submit.trace_id)
            .cloned()
            .collect();
        let attempt = trace
            .iter()
            .find(|span| span.parent_span_id == submit.span_id)?;
        let under = trace
            .iter()
            .filter(|span| span.parent_span_id == attempt.span_id)
            .count();
        (under >= children).then_some(trace)
    }

    fn service_names(&self) -> Vec<String> {
        let spans = self.spans.lock().unwrap();
        spans.iter().map(|(service, _)| service.clone()).collect()
    }
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::StringValue(text)) => text.clone(),
        Some(Value::IntValue(number)) => number.to_string(),
        Some(Value::BoolValue(flag)) => flag.to_string(),
        Some(Value::DoubleValue(number)) => number.to_string(),
        _ => String::new(),
    }
}

/// The value of the attribute `key` of `span`, as text ("" when absent).
fn attribute(span: &Span, key: &str) -> String {
    span.attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .map(|attribute| text(attribute.value.as_ref().and_then(|v| v.value.as_ref())))
        .unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Submits `command` with `payload`, sending `traceparent` in the request's metadata.
async fn submit_traced(
    channel: &Channel,
    command: &str,
    payload: &str,
    traceparent: Option<&str>,
) -> String {
    let mut request = tonic::Request::new(pb::SubmitJobRequest {
        command: command.into(),
        payload: payload.as_bytes().to_vec(),
        ..Default::default()
    });
    if let Some(value) = traceparent {
        request
            .metadata_mut()
            .insert("traceparent", value.parse().unwrap());
    }
    queue(channel)
        .submit_job(request)
        .await
        .unwrap_or_else(|status| panic!("submit {command}: {status}"))
        .into_inner()
        .job_id
}

async fn a_traced_submit_gives_its_attempt_and_its_requests_the_clients_trace(postgres: bool) {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let api = HttpStub::start(|_, _| (200, "fetched".into())).await;
    let backend = Backend::start(postgres, &["fetch"], &["--otlp-endpoint", &endpoint]).await;
    let channel = backend.daemon.connect().await;
    let payload = json!({"url": format!("{}/hello?token=secret", api.base_url)}).to_string();

    let client = format!("00-{TRACE_ID}-{CLIENT_SPAN_ID}-01");
    let traced = submit_traced(&channel, "fetch.get", &payload, Some(&client)).await;
    assert_eq!(
        finished(&channel, &traced).await.status(),
        JobStatus::Completed
    );
    let trace = collector.trace_of(&traced, 1).await;

    let submit = trace.iter().find(|span| span.name == "submit").unwrap();
    assert_eq!(
        hex(&submit.trace_id),
        TRACE_ID,
        "the submit continues the client's trace"
    );
    assert_eq!(hex(&submit.parent_span_id), CLIENT_SPAN_ID);
    assert_eq!(submit.kind, SpanKind::Producer as i32);
    assert_eq!(attribute(submit, "honeydew.command"), "fetch.get");

    let attempt = trace
        .iter()
        .find(|span| span.parent_span_id == submit.span_id)
        .unwrap();
    assert_eq!(attempt.name, "run fetch.get");
    assert_eq!(attempt.kind, SpanKind::Consumer as i32);
    assert_eq!(attribute(attempt, "honeydew.job.id"), traced);
    assert_eq!(attribute(attempt, "honeydew.command"), "fetch.get");
    assert_eq!(attribute(attempt, "honeydew.attempt"), "1");
    assert_eq!(attribute(attempt, "honeydew.outcome"), "completed");
    let fuel: u64 = attribute(attempt, "honeydew.fuel").parse().unwrap();
    assert!(fuel > 0, "the attempt's fuel is recorded");
    assert!(attempt.end_time_unix_nano >= attempt.start_time_unix_nano);

    let request = trace
        .iter()
        .find(|span| span.parent_span_id == attempt.span_id)
        .unwrap();
    assert_eq!(request.name, "GET");
    assert_eq!(request.kind, SpanKind::Client as i32);
    assert_eq!(attribute(request, "http.request.method"), "GET");
    assert_eq!(attribute(request, "http.response.status_code"), "200");
    // The query (which may carry a credential) stays out of the trace.
    assert_eq!(
        attribute(request, "url.full"),
        format!("{}/hello", api.base_url)
    );
    let sent = api.received();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].header("traceparent"),
        Some(format!("00-{TRACE_ID}-{}-01", hex(&request.span_id)).as_str()),
        "the plugin's request carries its own span's context"
    );

    // No client context, or a malformed one: the submit starts a trace of its own.
    for traceparent in [None, Some("00-not-a-trace-01")] {
        let id = submit_traced(&channel, "fetch.get", &payload, traceparent).await;
        assert_eq!(finished(&channel, &id).await.status(), JobStatus::Completed);
        let trace = collector.trace_of(&id, 1).await;
        let submit = trace.iter().find(|span| span.name == "submit").unwrap();
        assert!(
            submit.parent_span_id.is_empty(),
            "{traceparent:?}: a root span"
        );
        assert_ne!(hex(&submit.trace_id), TRACE_ID);
    }
    assert!(
        collector
            .service_names()
            .iter()
            .all(|name| name == "honeydewd"),
        "{:?}",
        collector.service_names()
    );
    let (status, log) = backend.daemon.terminate();
    assert!(status.success(), "{status:?}: {log}");
    assert!(
        !log.contains("secret"),
        "the query stayed out of the log too"
    );
}

async fn without_an_exporter_a_clients_traceparent_reaches_the_plugins_requests_unchanged(
    postgres: bool,
) {
    let api = HttpStub::start(|_, _| (200, "fetched".into())).await;
    let backend = Backend::start(postgres, &["fetch"], &[]).await;
    let channel = backend.daemon.connect().await;
    let payload = json!({"url": format!("{}/hello", api.base_url)}).to_string();
    let client = format!("00-{TRACE_ID}-{CLIENT_SPAN_ID}-01");
    let traced = submit_traced(&channel, "fetch.get", &payload, Some(&client)).await;
    assert_eq!(
        finished(&channel, &traced).await.status(),
        JobStatus::Completed
    );
    let untraced = submit_traced(&channel, "fetch.get", &payload, None).await;
    assert_eq!(
        finished(&channel, &untraced).await.status(),
        JobStatus::Completed
    );
    let sent = api.received();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].header("traceparent"), Some(client.as_str()));
    assert_eq!(
        sent[1].header("traceparent"),
        None,
        "an untraced job sends none"
    );
}
