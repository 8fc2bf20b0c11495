//! The dashboard's JSON endpoints under `/dashboard/api/`, which its script reads, and
//! the event stream. It converts domain types to JSON at this edge and owns nothing:
//! reads go to the store through the [`crate::queue::Manager`], the scheduler and the
//! plugin inventory; actions are the manager's own (cancel, retry, pause, resume) and
//! the scheduler's (pause or resume a schedule), as the gRPC API calls them. Who may
//! call them is `mod.rs`'s middleware, in front of every route here.
//!
//! Every number from the query string is bounded where it is parsed (a page is at most
//! [`PAGE_MAX`] jobs); a payload or result is shown as text when it is UTF-8, cut at
//! [`BODY_SHOWN_MAX`] bytes, and otherwise as the hex of its first bytes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, TimeDelta, Utc};
use futures_util::stream::Stream;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::Dashboard;
use crate::job::{Job, JobId, JobStatus};
use crate::queue::{CancelError, CancelOutcome, JobEvent, PauseError};
use crate::runtime::PluginSummary;
use crate::scheduler::ScheduleError;
use crate::store::{JobFilter, StoreError};
use honeydew_core::output::{LogLine, LogQuery};

/// The largest page of jobs the list asks for.
pub const PAGE_MAX: usize = 200;

/// The most bytes of a payload or result shown.
pub const BODY_SHOWN_MAX: usize = 256 * 1024;

/// An error message longer than this is cut in a listing (a job's page shows it all).
const LIST_ERROR_MAX: usize = 300;

/// A job's page shows the log of at most this many of its latest attempts (each the
/// tail the store keeps: at most 2000 lines within 256 KiB); `honeydew logs` has all.
const LOGGED_ATTEMPTS_SHOWN: u32 = 3;

/// How far back the overview's charts go.
const CHART_SPAN: TimeDelta = TimeDelta::hours(1);

pub(super) fn router() -> Router<Arc<Dashboard>> {
    Router::new()
        .route("/dashboard/api/overview", get(overview))
        .route("/dashboard/api/jobs", get(jobs))
        .route("/dashboard/api/jobs/{id}", get(job))
        .route("/dashboard/api/jobs/{id}/cancel", post(cancel))
        .route("/dashboard/api/jobs/{id}/retry", post(retry))
        .route("/dashboard/api/pauses/{target}/pause", post(pause))
        .route("/dashboard/api/pauses/{target}/resume", post(resume))
        .route("/dashboard/api/schedules", get(schedules))
        .route(
            "/dashboard/api/schedules/{name}/pause",
            post(|state: State<Arc<Dashboard>>, name: Path<String>| {
                schedule_enabled(state, name, false)
            }),
        )
        .route(
            "/dashboard/api/schedules/{name}/resume",
            post(|state: State<Arc<Dashboard>>, name: Path<String>| {
                schedule_enabled(state, name, true)
            }),
        )
        .route("/dashboard/api/plugins", get(plugins))
        .route("/dashboard/api/events", get(events))
}

/// A JSON answer.
fn json_response(status: StatusCode, value: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn ok(value: Value) -> Response {
    json_response(StatusCode::OK, value)
}

/// `{"error": message}` with `status`.
pub(super) fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, json!({ "error": message }))
}

fn store_error(err: &StoreError) -> Response {
    match err {
        StoreError::NotFound(id) => error(StatusCode::NOT_FOUND, &format!("job {id} not found")),
        StoreError::StaleTransition { .. } => error(StatusCode::CONFLICT, &err.to_string()),
        other => {
            tracing::warn!(error = %other, "the dashboard cannot read the store");
            error(StatusCode::SERVICE_UNAVAILABLE, &other.to_string())
        }
    }
}

fn time(at: Option<DateTime<Utc>>) -> Value {
    at.map_or(Value::Null, |at| Value::String(at.to_rfc3339()))
}

/// Bytes as shown: `{"text": ..}` when UTF-8, else `{"hex": ..}`; with the full size
/// and whether it was cut.
fn body(bytes: &[u8]) -> Value {
    let shown = &bytes[..bytes.len().min(BODY_SHOWN_MAX)];
    let truncated = shown.len() < bytes.len();
    match std::str::from_utf8(shown) {
        Ok(text) => json!({ "text": text, "bytes": bytes.len(), "truncated": truncated }),
        // Cut inside a character: show the text up to it.
        Err(err) if truncated && err.error_len().is_none() => json!({
            "text": String::from_utf8_lossy(&shown[..err.valid_up_to()]),
            "bytes": bytes.len(),
            "truncated": true,
        }),
        Err(_) => {
            let head = &bytes[..bytes.len().min(1024)];
            let hex: String = head.iter().map(|byte| format!("{byte:02x}")).collect();
            json!({ "hex": hex, "bytes": bytes.len(), "truncated": head.len() < bytes.len() })
        }
    }
}

fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A job as a listing shows it (no payload or result).
fn job_summary(job: &Job) -> Value {
    json!({
        "id": job.id.to_string(),
        "command": job.command,
        "status": job.status.as_str(),
        "priority": job.priority,
        "created_at": time(Some(job.created_at)),
        "run_at": time(Some(job.run_at)),
        "started_at": time(job.started_at),
        "completed_at": time(job.completed_at),
        "retry_count": job.retry_count,
        "max_retries": job.max_retries,
        "snooze_count": job.snooze_count,
        "error_kind": job.error_kind.map(|kind| kind.as_str()),
        "error": job.error.as_deref().map(|error| cut(error, LIST_ERROR_MAX)),
        "plugin": job.plugin.as_ref().map(|plugin| json!({
            "name": plugin.name,
            "version": plugin.version,
            "sha256": plugin.sha256,
        })),
    })
}

/// The query string's `key=value` pairs, decoded.
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect()
}

/// A job id from the path or the query; the 400 answer when it is none.
fn parse_id(text: &str) -> Result<JobId, Box<Response>> {
    text.parse().map_err(|_| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            &format!("{text:?} is not a job id"),
        ))
    })
}

/// `GET /dashboard/api/overview`: counts by state and command, this daemon's workers,
/// what is paused, and jobs finished per minute over the last hour.
async fn overview(State(dashboard): State<Arc<Dashboard>>) -> Response {
    let store = dashboard.manager.store();
    let now = Utc::now();
    let since = now - CHART_SPAN;
    let counts = match store.count_jobs().await {
        Ok(counts) => counts,
        Err(err) => return store_error(&err),
    };
    let minutes = match store.finished_per_minute(since).await {
        Ok(minutes) => minutes,
        Err(err) => return store_error(&err),
    };
    let pauses = match dashboard.manager.pauses().await {
        Ok(pauses) => pauses,
        Err(err) => return store_error(&err),
    };
    let mut states = serde_json::Map::new();
    for status in JobStatus::ALL {
        let total: u64 = counts
            .iter()
            .filter(|count| count.status == status)
            .map(|count| count.count)
            .sum();
        states.insert(status.as_str().to_owned(), total.into());
    }
    ok(json!({
        "now": time(Some(now)),
        "since": time(Some(since)),
        "states": states,
        "counts": counts.iter().map(|count| json!({
            "command": count.command,
            "status": count.status.as_str(),
            "count": count.count,
        })).collect::<Vec<_>>(),
        "minutes": minutes.iter().map(|minute| json!({
            "minute": time(Some(minute.minute)),
            "completed": minute.completed,
            "failed": minute.failed,
            "cancelled": minute.cancelled,
        })).collect::<Vec<_>>(),
        "workers": dashboard.workers,
        "running_here": dashboard.manager.running_jobs(),
        "pauses": pauses.iter().map(|pause| json!({
            "target": pause.target,
            "paused_at": time(Some(pause.paused_at)),
        })).collect::<Vec<_>>(),
        "commands": commands(&dashboard.plugins.plugins()),
    }))
}

fn commands(plugins: &[PluginSummary]) -> Vec<String> {
    let mut commands: Vec<String> = plugins
        .iter()
        .flat_map(|plugin| plugin.commands.iter().cloned())
        .collect();
    commands.sort();
    commands
}

/// `GET /dashboard/api/jobs?status=&command=&cursor=&limit=`: a page, newest first.
async fn jobs(State(dashboard): State<Arc<Dashboard>>, RawQuery(query): RawQuery) -> Response {
    let mut filter = JobFilter {
        limit: 50,
        ..JobFilter::default()
    };
    for (key, value) in query_pairs(query.as_deref()) {
        if value.is_empty() {
            continue;
        }
        match key.as_str() {
            "status" => match value.parse::<JobStatus>() {
                Ok(status) => filter.status = Some(status),
                Err(err) => return error(StatusCode::BAD_REQUEST, &err.to_string()),
            },
            "command" => filter.command = Some(cut(&value, 200)),
            "cursor" => match parse_id(&value) {
                Ok(id) => filter.cursor = Some(id),
                Err(response) => return *response,
            },
            "limit" => match value.parse::<usize>() {
                Ok(limit) => filter.limit = limit.clamp(1, PAGE_MAX),
                Err(_) => return error(StatusCode::BAD_REQUEST, "limit is a number of jobs"),
            },
            _ => {}
        }
    }
    match dashboard.manager.list(filter).await {
        Ok(page) => ok(json!({
            "jobs": page.jobs.iter().map(job_summary).collect::<Vec<_>>(),
            "next_cursor": page.next_cursor.map(|id| id.to_string()),
            "commands": commands(&dashboard.plugins.plugins()),
        })),
        Err(err) => store_error(&err),
    }
}

/// `GET /dashboard/api/jobs/ID`: the job with its payload, result, attempts, the jobs
/// it depends on and why it waits, if it does.
async fn job(State(dashboard): State<Arc<Dashboard>>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let store = dashboard.manager.store();
    let (job, attempt) = match store.get_job_with_attempt(id).await {
        Ok(found) => found,
        Err(err) => return store_error(&err),
    };
    let attempts = match store.attempts(id).await {
        Ok(attempts) => attempts,
        Err(err) => return store_error(&err),
    };
    let dependencies = store.dependencies(id).await.unwrap_or_default();
    let explanation = dashboard
        .manager
        .explain(id)
        .await
        .map(|explained| explained.text)
        .ok();
    let mut value = job_summary(&job);
    value["error"] = job.error.as_deref().into();
    value["attempt"] = attempt.into();
    value["payload"] = body(&job.payload);
    value["result"] = job.result.as_deref().map_or(Value::Null, body);
    value["explanation"] = explanation.into();
    value["dependencies"] = dependencies
        .iter()
        .map(|(id, status)| json!({ "id": id.to_string(), "status": status.as_str() }))
        .collect();
    // The latest attempts' logs, and the latest attempt's progress.
    let mut logs = Vec::new();
    let mut progress = None;
    for number in (1..=attempt).rev().take(LOGGED_ATTEMPTS_SHOWN as usize) {
        let query = LogQuery {
            attempt: Some(number),
            after: None,
            limit: 0,
        };
        match store.job_output(id, query).await {
            Ok(output) => {
                if number == attempt {
                    progress = output.progress;
                }
                logs.push((number, log_text(&output.lines)));
            }
            Err(err) => return store_error(&err),
        }
    }
    value["progress"] = progress.map_or(Value::Null, |progress| {
        json!({
            "attempt": progress.attempt,
            "done": progress.done,
            "total": progress.total,
            "message": progress.message,
            "updated_at": time(Some(progress.updated_at)),
        })
    });
    value["attempts"] = attempts
        .iter()
        .map(|row| {
            let log = logs
                .iter()
                .find(|(number, _)| *number == row.attempt)
                .and_then(|(_, text)| text.clone());
            json!({
                "attempt": row.attempt,
                "worker_id": row.worker_id,
                "outcome": row.outcome,
                "error_kind": row.error_kind.map(|kind| kind.as_str()),
                "error": row.error,
                "duration_ms": row.duration_ms,
                "fuel_used": row.fuel_used,
                "log": log,
            })
        })
        .collect();
    ok(value)
}

/// An attempt's log lines as the page shows them, one a line (`HH:MM:SS.mmm level
/// text`); `None` when it logged nothing.
fn log_text(lines: &[LogLine]) -> Option<String> {
    if lines.is_empty() {
        return None;
    }
    let mut text = String::new();
    for line in lines {
        text.push_str(&format!(
            "{} {:<5} {}\n",
            line.at.format("%H:%M:%S%.3f"),
            line.level.as_str(),
            line.line
        ));
    }
    Some(text)
}

/// `POST /dashboard/api/jobs/ID/cancel`.
async fn cancel(State(dashboard): State<Arc<Dashboard>>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    match dashboard.manager.cancel(id).await {
        Ok(outcome) => {
            tracing::info!(job_id = %id, "cancel asked from the dashboard");
            let outcome = match outcome {
                CancelOutcome::Cancelled => "cancelled",
                CancelOutcome::Cancelling => "cancelling",
            };
            ok(json!({ "outcome": outcome }))
        }
        Err(CancelError::NotFound(id)) => {
            error(StatusCode::NOT_FOUND, &format!("job {id} not found"))
        }
        Err(err @ (CancelError::Finished { .. } | CancelError::Busy(_))) => {
            error(StatusCode::CONFLICT, &err.to_string())
        }
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, &err.to_string()),
    }
}

/// `POST /dashboard/api/jobs/ID/retry`.
async fn retry(State(dashboard): State<Arc<Dashboard>>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    match dashboard.manager.retry(id).await {
        Ok(()) => {
            tracing::info!(job_id = %id, "retry asked from the dashboard");
            ok(json!({ "outcome": "pending" }))
        }
        Err(StoreError::StaleTransition { actual, .. }) => error(
            StatusCode::CONFLICT,
            &format!("job {id} is {actual}: only a failed or cancelled job is retried"),
        ),
        Err(err) => store_error(&err),
    }
}

fn pause_error(err: &PauseError) -> Response {
    match err {
        PauseError::Invalid(err) => error(StatusCode::BAD_REQUEST, &err.to_string()),
        PauseError::Store(err) => store_error(err),
    }
}

/// `POST /dashboard/api/pauses/TARGET/pause`: a plugin or a command.
async fn pause(State(dashboard): State<Arc<Dashboard>>, Path(target): Path<String>) -> Response {
    match dashboard.manager.pause(&target).await {
        Ok(changed) => ok(json!({ "changed": changed })),
        Err(err) => pause_error(&err),
    }
}

/// `POST /dashboard/api/pauses/TARGET/resume`.
async fn resume(State(dashboard): State<Arc<Dashboard>>, Path(target): Path<String>) -> Response {
    match dashboard.manager.resume(&target).await {
        Ok(changed) => ok(json!({ "changed": changed })),
        Err(err) => pause_error(&err),
    }
}

fn schedule_error(err: &ScheduleError) -> Response {
    match err {
        ScheduleError::Store(err) => store_error(err),
        other => error(StatusCode::BAD_REQUEST, &other.to_string()),
    }
}

/// `GET /dashboard/api/schedules`: every schedule with its next run.
async fn schedules(State(dashboard): State<Arc<Dashboard>>) -> Response {
    let schedules = match dashboard.scheduler.list_schedules().await {
        Ok(schedules) => schedules,
        Err(err) => return schedule_error(&err),
    };
    ok(json!({
        "schedules": schedules.iter().map(|schedule| json!({
            "id": schedule.id.to_string(),
            "name": schedule.name,
            "cron": schedule.cron_expr,
            "timezone": schedule.timezone,
            "command": schedule.command,
            "payload": body(&schedule.payload),
            "priority": schedule.priority,
            "misfire": schedule.misfire.as_str(),
            "enabled": schedule.enabled,
            "next_run_at": time(schedule.next_run_at),
            "last_run_at": time(schedule.last_run_at),
            "last_job_id": schedule.last_job_id.map(|id| id.to_string()),
            "last_error": schedule.last_error,
            "last_error_at": time(schedule.last_error_at),
        })).collect::<Vec<_>>(),
    }))
}

/// `POST /dashboard/api/schedules/NAME/pause` and `.../resume`.
async fn schedule_enabled(
    State(dashboard): State<Arc<Dashboard>>,
    Path(name): Path<String>,
    enabled: bool,
) -> Response {
    match dashboard.scheduler.set_enabled(&name, enabled).await {
        Ok(schedule) => ok(json!({ "enabled": schedule.enabled })),
        Err(
            err @ (ScheduleError::NotFound(_)
            | ScheduleError::Store(StoreError::ScheduleNotFound(_))),
        ) => error(StatusCode::NOT_FOUND, &err.to_string()),
        Err(err) => schedule_error(&err),
    }
}

/// `GET /dashboard/api/plugins`: what is loaded (version, sha256, limits, grants), what
/// was refused and why, and what is paused.
async fn plugins(State(dashboard): State<Arc<Dashboard>>) -> Response {
    let mut plugins = dashboard.plugins.plugins();
    plugins.sort_by(|a, b| a.name.cmp(&b.name));
    let mut skipped = dashboard.plugins.skipped();
    skipped.sort_by(|a, b| a.path.cmp(&b.path));
    let pauses = dashboard.manager.pauses().await.unwrap_or_default();
    let concurrency = dashboard.manager.concurrency_limits();
    let commands_limited = |plugin: &str| -> serde_json::Map<String, Value> {
        concurrency
            .running
            .iter()
            .filter_map(|(target, limit)| {
                let command = target.strip_prefix(plugin)?.strip_prefix('.')?;
                Some((command.to_owned(), json!(limit)))
            })
            .collect()
    };
    ok(json!({
        "plugins": plugins.iter().map(|plugin| json!({
            "name": plugin.name,
            "version": plugin.version,
            "sha256": plugin.sha256,
            "commands": plugin.commands,
            "limits": {
                "fuel": plugin.limits.fuel,
                "memory_mib": plugin.limits.memory_mib,
                "timeout_ms": u64::try_from(plugin.limits.timeout.as_millis()).unwrap_or(u64::MAX),
                "max_retries": plugin.limits.max_retries,
            },
            // In force: the manifest's, or the daemon's configuration over it.
            "concurrency": {
                "plugin": concurrency.running.get(&plugin.name),
                "per_key": concurrency.per_key.get(&plugin.name).copied()
                    .unwrap_or(honeydew_core::concurrency::DEFAULT_PER_KEY),
                "commands": commands_limited(&plugin.name),
            },
            "allowed_hosts": plugin.allowed_hosts,
        })).collect::<Vec<_>>(),
        "skipped": skipped.iter().map(|skipped| json!({
            "name": skipped.path.file_stem().map(|stem| stem.to_string_lossy().into_owned()),
            "path": skipped.path.display().to_string(),
            "reason": skipped.reason,
        })).collect::<Vec<_>>(),
        "pauses": pauses.iter().map(|pause| pause.target.clone()).collect::<Vec<_>>(),
    }))
}

/// The JSON of one job event.
fn event_json(event: &JobEvent) -> Value {
    json!({
        "id": event.id.to_string(),
        "status": event.status.as_str(),
        "attempt": event.attempt,
        "retry_count": event.retry_count,
        "error": event.error.as_deref().map(|error| cut(error, LIST_ERROR_MAX)),
        "at": time(Some(event.at)),
    })
}

/// `GET /dashboard/api/events`: this daemon's job events as server-sent events (`job`,
/// and `lagged` when some were dropped, so the page reads everything again), until
/// the client goes or the daemon stops.
async fn events(State(dashboard): State<Arc<Dashboard>>) -> impl IntoResponse {
    let receivers = Receivers {
        jobs: dashboard.manager.subscribe(),
        outputs: dashboard.manager.subscribe_output(),
    };
    let closing = dashboard.closing.clone();
    Sse::new(event_stream(receivers, closing))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// What the event stream follows: job events, and the ids of jobs whose output (log
/// lines, progress) was stored.
struct Receivers {
    jobs: broadcast::Receiver<JobEvent>,
    outputs: broadcast::Receiver<JobId>,
}

fn event_stream(
    receivers: Receivers,
    closing: tokio_util::sync::CancellationToken,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(
        (receivers, closing),
        |(mut receivers, closing)| async move {
            let lagged = |missed: u64| Event::default().event("lagged").data(missed.to_string());
            let event = tokio::select! {
                () = closing.cancelled() => return None,
                received = receivers.jobs.recv() => match received {
                    Ok(event) => Event::default()
                        .event("job")
                        .data(event_json(&event).to_string()),
                    Err(broadcast::error::RecvError::Lagged(missed)) => lagged(missed),
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                // A job's page reads its log and progress again (at most ~4 times a
                // second per job: the rate output is stored at).
                received = receivers.outputs.recv() => match received {
                    Ok(id) => Event::default()
                        .event("output")
                        .data(json!({ "id": id.to_string() }).to_string()),
                    Err(broadcast::error::RecvError::Lagged(missed)) => lagged(missed),
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            };
            Some((Ok(event), (receivers, closing)))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_show_text_cut_text_or_hex() {
        assert_eq!(
            body(br#"{"a":1}"#),
            json!({ "text": "{\"a\":1}", "bytes": 7, "truncated": false })
        );
        assert_eq!(
            body(&[0xff, 0x00]),
            json!({ "hex": "ff00", "bytes": 2, "truncated": false })
        );
        let long = "é".repeat(BODY_SHOWN_MAX);
        let shown = body(long.as_bytes());
        assert_eq!(shown["truncated"], true);
        assert_eq!(shown["bytes"], long.len());
        assert_eq!(
            shown["text"].as_str().unwrap().len(),
            BODY_SHOWN_MAX,
            "cut on a character boundary"
        );
        assert_eq!(cut("héllo", 2), "h…");
    }
}
