//! Conversions between domain types and protobuf messages, and from domain errors to
//! gRPC status codes. Every request field is validated here, at the edge.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use tonic::Status;

use super::pb;
use crate::job::{Job, JobId, JobStatus};
use crate::queue::{
    CancelError, Manager, OnConflict, SubmitError, SubmitRequest, Submitted, UniqueRequest,
};
use crate::scheduler::{MisfirePolicy, Schedule, ScheduleError};
use crate::store::{MAX_DEPENDENCIES, StoreError};
use honeydew_core::output::{JobProgress, LogLine};

/// The most retries a submitter may ask for.
pub use crate::config::MAX_RETRIES_LIMIT;

/// The most jobs one `ListJobs` page may hold (the store's own cap).
pub const LIST_LIMIT_MAX: u32 = 1000;

pub fn timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

pub fn status_to_pb(status: JobStatus) -> pb::JobStatus {
    match status {
        JobStatus::Pending => pb::JobStatus::Pending,
        JobStatus::Running => pb::JobStatus::Running,
        JobStatus::Completed => pb::JobStatus::Completed,
        JobStatus::Failed => pb::JobStatus::Failed,
        JobStatus::Cancelled => pb::JobStatus::Cancelled,
    }
}

/// An optional instant from a message, checked: `None` when absent.
pub fn instant(field: &str, value: Option<Timestamp>) -> Result<Option<DateTime<Utc>>, Status> {
    let Some(value) = value else {
        return Ok(None);
    };
    let nanos = u32::try_from(value.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000);
    nanos
        .and_then(|nanos| DateTime::from_timestamp(value.seconds, nanos))
        .map(Some)
        .ok_or_else(|| Status::invalid_argument(format!("{field} is not a valid instant")))
}

/// A status filter: `None` for "any".
pub fn status_filter(value: i32) -> Result<Option<JobStatus>, Status> {
    match pb::JobStatus::try_from(value) {
        Ok(pb::JobStatus::Unspecified) => Ok(None),
        Ok(pb::JobStatus::Pending) => Ok(Some(JobStatus::Pending)),
        Ok(pb::JobStatus::Running) => Ok(Some(JobStatus::Running)),
        Ok(pb::JobStatus::Completed) => Ok(Some(JobStatus::Completed)),
        Ok(pb::JobStatus::Failed) => Ok(Some(JobStatus::Failed)),
        Ok(pb::JobStatus::Cancelled) => Ok(Some(JobStatus::Cancelled)),
        Err(_) => Err(Status::invalid_argument(format!(
            "unknown job status {value}: use one of JOB_STATUS_PENDING .. JOB_STATUS_CANCELLED"
        ))),
    }
}

/// A job as a message; `full` keeps payload and result.
pub fn job_to_pb(job: Job, attempt: u32, full: bool) -> pb::Job {
    pb::Job {
        id: job.id.to_string(),
        command: job.command,
        payload: if full { job.payload } else { Vec::new() },
        priority: job.priority,
        status: status_to_pb(job.status).into(),
        created_at: Some(timestamp(job.created_at)),
        run_at: Some(timestamp(job.run_at)),
        started_at: job.started_at.map(timestamp),
        completed_at: job.completed_at.map(timestamp),
        result: if full { job.result } else { None },
        error: job.error,
        error_kind: job.error_kind.map(|kind| kind.as_str().to_owned()),
        retry_count: job.retry_count,
        max_retries: job.max_retries,
        snooze_count: job.snooze_count,
        concurrency_key: job.concurrency_key,
        attempt,
        plugin: job.plugin.map(|plugin| pb::PluginRef {
            name: plugin.name,
            version: plugin.version,
            sha256: plugin.sha256,
        }),
        progress: None,
    }
}

pub fn progress_to_pb(progress: JobProgress) -> pb::JobProgress {
    pb::JobProgress {
        attempt: progress.attempt,
        done: progress.done,
        total: progress.total,
        message: progress.message,
        updated_at: Some(timestamp(progress.updated_at)),
    }
}

pub fn log_line_to_pb(line: LogLine) -> pb::LogLine {
    pb::LogLine {
        attempt: line.attempt,
        seq: line.seq,
        at: Some(timestamp(line.at)),
        level: line.level.as_str().to_owned(),
        line: line.line,
    }
}

pub fn parse_job_id(field: &str, text: &str) -> Result<JobId, Status> {
    text.parse().map_err(|_| {
        Status::invalid_argument(format!(
            "invalid {field} {text:?}: expected a job id such as 0192f0c4-7a3e-7c41-9d2a-5b8f0e6c1d2e \
             (see `honeydew list`)"
        ))
    })
}

/// Checks the payload is JSON; an empty payload means `{}`.
pub fn json_payload(payload: Vec<u8>) -> Result<Vec<u8>, Status> {
    if payload.is_empty() {
        return Ok(b"{}".to_vec());
    }
    match serde_json::from_slice::<serde::de::IgnoredAny>(&payload) {
        Ok(_) => Ok(payload),
        Err(err) => Err(Status::invalid_argument(format!(
            "payload is not valid JSON: {err}: send a JSON document such as {{\"owner\": \"octocat\"}}"
        ))),
    }
}

pub fn max_retries(value: Option<u32>) -> Result<Option<u32>, Status> {
    match value {
        Some(n) if n > MAX_RETRIES_LIMIT => Err(Status::invalid_argument(format!(
            "max_retries is {n}, over the limit of {MAX_RETRIES_LIMIT}"
        ))),
        other => Ok(other),
    }
}

/// Validates and submits a job without a unique key: the path of every proxy RPC.
pub async fn submit(
    manager: &Arc<Manager>,
    command: String,
    payload: Vec<u8>,
    priority: i64,
    retries: Option<u32>,
    trace_parent: Option<String>,
) -> Result<pb::SubmitJobResponse, Status> {
    let request = SubmitRequest {
        command,
        payload: json_payload(payload)?,
        priority,
        max_retries: max_retries(retries)?,
        unique: None,
        after: Vec::new(),
        trace_parent,
        concurrency_key: None,
    };
    submit_one(manager, request).await
}

/// A `SubmitJobRequest` as the manager's request, every field checked.
pub fn submit_request(request: pb::SubmitJobRequest) -> Result<SubmitRequest, Status> {
    let on_conflict = match pb::OnConflict::try_from(request.on_conflict) {
        Ok(pb::OnConflict::Unspecified | pb::OnConflict::Existing) => OnConflict::Existing,
        Ok(pb::OnConflict::Reject) => OnConflict::Reject,
        Ok(pb::OnConflict::Replace) => OnConflict::Replace,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown on_conflict {}: use ON_CONFLICT_EXISTING, _REJECT or _REPLACE",
                request.on_conflict
            )));
        }
    };
    let mut states = Vec::with_capacity(request.unique_states.len());
    for &value in &request.unique_states {
        match status_filter(value)? {
            Some(status) => states.push(status),
            None => {
                return Err(Status::invalid_argument(
                    "unique_states: JOB_STATUS_UNSPECIFIED is not a state",
                ));
            }
        }
    }
    let unique = match request.unique_key {
        Some(key) => Some(UniqueRequest {
            key,
            within: request.unique_for_ms.map(std::time::Duration::from_millis),
            states,
            on_conflict,
        }),
        None if request.unique_for_ms.is_some() || !states.is_empty() => {
            return Err(Status::invalid_argument(
                "unique_for_ms and unique_states need a unique_key",
            ));
        }
        None => None,
    };
    if request.after.len() > MAX_DEPENDENCIES {
        return Err(Status::invalid_argument(format!(
            "after names {} jobs: a job waits for at most {MAX_DEPENDENCIES}",
            request.after.len()
        )));
    }
    let after = request
        .after
        .iter()
        .map(|id| parse_job_id("after", id))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SubmitRequest {
        command: request.command,
        payload: json_payload(request.payload)?,
        priority: request.priority,
        max_retries: max_retries(request.max_retries)?,
        unique,
        after,
        trace_parent: None,
        concurrency_key: request.concurrency_key,
    })
}

/// The W3C `traceparent` a client sent in its request's metadata, if it is one: a
/// malformed value is ignored (the submit is not refused for its tracing).
pub fn trace_parent(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    let value = metadata.get(crate::traces::TRACEPARENT)?.to_str().ok()?;
    crate::traces::valid_traceparent(value)
}

/// Submits a checked request; the answer says whether a new job was stored.
pub async fn submit_one(
    manager: &Arc<Manager>,
    request: SubmitRequest,
) -> Result<pb::SubmitJobResponse, Status> {
    let (id, outcome) = match manager.submit(request).await.map_err(submit_status)? {
        Submitted::New(id) => (id, pb::SubmitOutcome::Created),
        Submitted::Existing(id) => (id, pb::SubmitOutcome::Existing),
        Submitted::Replaced(id) => (id, pb::SubmitOutcome::Replaced),
    };
    Ok(pb::SubmitJobResponse {
        job_id: id.to_string(),
        outcome: outcome.into(),
    })
}

pub fn submit_status(err: SubmitError) -> Status {
    match err {
        SubmitError::Store(err) => store_status(err),
        SubmitError::UnknownDependency(_) => Status::not_found(err.to_string()),
        SubmitError::AlreadyExists(holder) => {
            Status::already_exists(format!("job {holder} already holds this unique key"))
        }
        SubmitError::InBatch { index, error } => {
            let status = submit_status(*error);
            Status::new(
                status.code(),
                format!("job {index} of the batch: {}", status.message()),
            )
        }
        // Malformed or unknown command, oversized payload: the request is at fault.
        err => Status::invalid_argument(err.to_string()),
    }
}

pub fn cancel_status(err: CancelError) -> Status {
    match err {
        CancelError::NotFound(_) => Status::not_found(err.to_string()),
        CancelError::Finished { .. } => Status::failed_precondition(err.to_string()),
        CancelError::Busy(_) => Status::aborted(err.to_string()),
        CancelError::Store(err) => store_status(err),
    }
}

/// A misfire policy field; unspecified means skip.
pub fn misfire_from_pb(value: i32) -> Result<MisfirePolicy, Status> {
    match pb::MisfirePolicy::try_from(value) {
        Ok(pb::MisfirePolicy::Unspecified | pb::MisfirePolicy::Skip) => Ok(MisfirePolicy::Skip),
        Ok(pb::MisfirePolicy::RunOnce) => Ok(MisfirePolicy::RunOnce),
        Err(_) => Err(schedule_status(ScheduleError::InvalidMisfire(
            value.to_string(),
        ))),
    }
}

pub fn misfire_to_pb(policy: MisfirePolicy) -> pb::MisfirePolicy {
    match policy {
        MisfirePolicy::Skip => pb::MisfirePolicy::Skip,
        MisfirePolicy::RunOnce => pb::MisfirePolicy::RunOnce,
    }
}

/// A schedule as a message: every column but the internal trigger guard.
pub fn schedule_to_pb(schedule: Schedule) -> pb::Schedule {
    pb::Schedule {
        id: schedule.id.to_string(),
        name: schedule.name,
        cron_expr: schedule.cron_expr,
        timezone: schedule.timezone,
        command: schedule.command,
        payload: schedule.payload,
        priority: schedule.priority,
        max_retries: schedule.max_retries,
        misfire: misfire_to_pb(schedule.misfire).into(),
        enabled: schedule.enabled,
        created_at: Some(timestamp(schedule.created_at)),
        last_run_at: schedule.last_run_at.map(timestamp),
        next_run_at: schedule.next_run_at.map(timestamp),
        last_job_id: schedule
            .last_job_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        last_error: schedule.last_error,
        last_error_at: schedule.last_error_at.map(timestamp),
    }
}

/// The scheduler's refusals as status codes, its message as the status message.
pub fn schedule_status(err: ScheduleError) -> Status {
    match err {
        ScheduleError::InvalidCron { .. }
        | ScheduleError::UnknownTimezone(_)
        | ScheduleError::InvalidMisfire(_)
        | ScheduleError::InvalidName(_) => Status::invalid_argument(err.to_string()),
        ScheduleError::DuplicateName(_) => Status::already_exists(err.to_string()),
        ScheduleError::NotFound(_) => Status::not_found(err.to_string()),
        ScheduleError::Submit(err) => submit_status(err),
        ScheduleError::Store(err) => store_status(err),
        ScheduleError::Scheduler(_) => Status::internal(err.to_string()),
    }
}

pub fn store_status(err: StoreError) -> Status {
    match err {
        StoreError::NotFound(_) => Status::not_found(err.to_string()),
        StoreError::Closed => {
            Status::unavailable("the daemon's job store is closed: it is shutting down")
        }
        StoreError::Full(_) => Status::resource_exhausted(err.to_string()),
        err => Status::internal(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn empty_payload_means_empty_object_and_bad_json_is_invalid_argument() {
        assert_eq!(json_payload(Vec::new()).unwrap(), b"{}");
        assert_eq!(json_payload(b"[1, 2]".to_vec()).unwrap(), b"[1, 2]");
        let err = json_payload(b"{\"owner\":".to_vec()).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().starts_with("payload is not valid JSON"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn status_filter_accepts_every_status_and_refuses_unknown_values() {
        assert_eq!(status_filter(0).unwrap(), None);
        for status in JobStatus::ALL {
            let value: i32 = status_to_pb(status).into();
            assert_eq!(status_filter(value).unwrap(), Some(status));
        }
        assert_eq!(status_filter(42).unwrap_err().code(), Code::InvalidArgument);
    }

    #[test]
    fn max_retries_over_the_limit_is_refused() {
        assert_eq!(max_retries(None).unwrap(), None);
        assert_eq!(
            max_retries(Some(MAX_RETRIES_LIMIT)).unwrap(),
            Some(MAX_RETRIES_LIMIT)
        );
        let err = max_retries(Some(MAX_RETRIES_LIMIT + 1)).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }

    #[test]
    fn job_ids_are_validated() {
        let id = JobId::new();
        assert_eq!(parse_job_id("job_id", &id.to_string()).unwrap(), id);
        let err = parse_job_id("job_id", "nope").unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("\"nope\""));
    }

    #[test]
    fn schedule_errors_map_to_their_codes_with_the_message() {
        let check = |err: ScheduleError, code: Code| {
            let message = err.to_string();
            let status = schedule_status(err);
            assert_eq!(status.code(), code, "{message}");
            assert_eq!(status.message(), message);
        };
        check(
            ScheduleError::InvalidCron {
                expr: "* * *".into(),
                reason: "it has 3 fields".into(),
            },
            Code::InvalidArgument,
        );
        check(
            ScheduleError::UnknownTimezone("Mars/Olympus".into()),
            Code::InvalidArgument,
        );
        check(
            ScheduleError::InvalidName("has space".into()),
            Code::InvalidArgument,
        );
        check(
            ScheduleError::Submit(SubmitError::MalformedCommand("echo".into())),
            Code::InvalidArgument,
        );
        check(
            ScheduleError::DuplicateName("nightly".into()),
            Code::AlreadyExists,
        );
        check(ScheduleError::NotFound("ghost".into()), Code::NotFound);
    }

    #[test]
    fn misfire_unspecified_is_skip_and_unknown_values_are_refused() {
        assert_eq!(misfire_from_pb(0).unwrap(), MisfirePolicy::Skip);
        for policy in [MisfirePolicy::Skip, MisfirePolicy::RunOnce] {
            let value: i32 = misfire_to_pb(policy).into();
            assert_eq!(misfire_from_pb(value).unwrap(), policy);
        }
        let err = misfire_from_pb(7).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(
            err.message(),
            "unknown misfire policy \"7\": use \"skip\" or \"run_once\""
        );
    }

    #[test]
    fn summary_drops_payload_and_result_full_keeps_them() {
        let mut job = Job::new("echo.echo", b"{\"a\":1}".to_vec(), 3, 2);
        job.result = Some(b"{}".to_vec());
        let summary = job_to_pb(job.clone(), 1, false);
        assert!(summary.payload.is_empty());
        assert_eq!(summary.result, None);
        let full = job_to_pb(job, 1, true);
        assert_eq!(full.payload, b"{\"a\":1}");
        assert_eq!(full.result.as_deref(), Some(&b"{}"[..]));
        assert_eq!(full.status, pb::JobStatus::Pending as i32);
    }

    proptest::proptest! {
        /// Whatever bytes a client sends as a payload, they are judged JSON or not
        /// without panicking, and what is accepted is passed on unchanged.
        #[test]
        fn any_payload_bytes_are_judged_without_panicking(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)
        ) {
            if let Ok(accepted) = json_payload(bytes.clone()) && !bytes.is_empty() {
                proptest::prop_assert_eq!(accepted, bytes);
            }
        }
    }
}
