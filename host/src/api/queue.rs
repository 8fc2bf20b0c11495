//! The `Queue` service: submit, cancel, get, list and watch jobs through the manager,
//! and read a job's log (`GetJobLog`).

use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::ApiState;
use super::convert::{self, LIST_LIMIT_MAX};
use super::pb::{self, queue_server::Queue};
use super::watch;
use crate::job::{Job, JobId, JobStatus};
use crate::queue::{CancelOutcome, Holdup, MAX_BATCH_JOBS, PauseError, SubmitError, SubmitRequest};
use crate::store::{JobFilter, StoreError};
use honeydew_core::output::LogQuery;

/// Per job of a full `ListJobs` page, what the message costs besides payload and result.
const JOB_OVERHEAD_BYTES: usize = 512;

pub struct QueueService {
    state: Arc<ApiState>,
}

impl QueueService {
    pub fn new(state: Arc<ApiState>) -> Self {
        Self { state }
    }
}

/// A job with its attempt count, as `GetJobStatus` and `WatchJob` report it: one read,
/// so a claim can never pair a pending row with the attempt that just started (which
/// would make `WatchJob` drop that attempt's `running` event as old news).
pub async fn job_with_attempt(state: &ApiState, id: JobId) -> Result<(Job, u32), Status> {
    state
        .manager
        .store()
        .get_job_with_attempt(id)
        .await
        .map_err(convert::store_status)
}

/// The latest progress job `id`'s plugin reported, if any; a store that cannot say
/// leaves it out rather than failing the status.
pub async fn latest_progress(state: &ApiState, id: JobId) -> Option<pb::JobProgress> {
    let query = LogQuery {
        limit: 1,
        after: Some((u32::MAX, u64::MAX)),
        ..LogQuery::default()
    };
    match state.manager.store().job_output(id, query).await {
        Ok(output) => output.progress.map(convert::progress_to_pb),
        Err(err) => {
            tracing::debug!(job_id = %id, error = %err, "cannot read a job's progress");
            None
        }
    }
}

#[tonic::async_trait]
impl Queue for QueueService {
    async fn submit_job(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let trace_parent = convert::trace_parent(request.metadata());
        let request = SubmitRequest {
            trace_parent,
            ..convert::submit_request(request.into_inner())?
        };
        let response = convert::submit_one(&self.state.manager, request).await?;
        Ok(Response::new(response))
    }

    async fn submit_jobs(
        &self,
        request: Request<pb::SubmitJobsRequest>,
    ) -> Result<Response<pb::SubmitJobsResponse>, Status> {
        let trace_parent = convert::trace_parent(request.metadata());
        let jobs = request.into_inner().jobs;
        if jobs.is_empty() || jobs.len() > MAX_BATCH_JOBS {
            return Err(convert::submit_status(SubmitError::BatchSize(jobs.len())));
        }
        let mut requests = Vec::with_capacity(jobs.len());
        for (index, job) in jobs.into_iter().enumerate() {
            let request = convert::submit_request(job).map_err(|status| {
                Status::invalid_argument(format!("job {index} of the batch: {}", status.message()))
            })?;
            requests.push(SubmitRequest {
                trace_parent: trace_parent.clone(),
                ..request
            });
        }
        let ids = self
            .state
            .manager
            .submit_batch(requests)
            .await
            .map_err(convert::submit_status)?;
        Ok(Response::new(pb::SubmitJobsResponse {
            job_ids: ids.iter().map(JobId::to_string).collect(),
        }))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let id = convert::parse_job_id("job_id", &request.into_inner().job_id)?;
        let outcome = match self.state.manager.cancel(id).await {
            Ok(CancelOutcome::Cancelled) => pb::CancelOutcome::Cancelled,
            Ok(CancelOutcome::Cancelling) => pb::CancelOutcome::Cancelling,
            Err(err) => return Err(convert::cancel_status(err)),
        };
        Ok(Response::new(pb::CancelJobResponse {
            outcome: outcome.into(),
        }))
    }

    async fn cancel_jobs(
        &self,
        request: Request<pb::BulkJobsRequest>,
    ) -> Result<Response<pb::BulkJobsResponse>, Status> {
        let request = request.into_inner();
        match convert::status_filter(request.status)? {
            None | Some(JobStatus::Pending) => {}
            Some(status) => {
                return Err(Status::invalid_argument(format!(
                    "CancelJobs takes pending jobs, not {status}: cancel a running job by its id"
                )));
            }
        }
        let since = convert::instant("since", request.since)?;
        let count = self
            .state
            .manager
            .cancel_matching(request.command, since)
            .await
            .map_err(convert::store_status)?;
        Ok(Response::new(pb::BulkJobsResponse {
            count: count as u64,
        }))
    }

    async fn retry_job(
        &self,
        request: Request<pb::RetryJobRequest>,
    ) -> Result<Response<pb::RetryJobResponse>, Status> {
        let id = convert::parse_job_id("job_id", &request.into_inner().job_id)?;
        match self.state.manager.retry(id).await {
            Ok(()) => Ok(Response::new(pb::RetryJobResponse {})),
            Err(StoreError::StaleTransition { actual, .. }) => Err(Status::failed_precondition(
                format!("job {id} is {actual}: only a failed or cancelled job is retried"),
            )),
            Err(err) => Err(convert::store_status(err)),
        }
    }

    async fn pause(
        &self,
        request: Request<pb::PauseRequest>,
    ) -> Result<Response<pb::PauseResponse>, Status> {
        let target = request.into_inner().target;
        let changed = self
            .state
            .manager
            .pause(&target)
            .await
            .map_err(pause_status)?;
        Ok(Response::new(pb::PauseResponse { changed }))
    }

    async fn resume(
        &self,
        request: Request<pb::ResumeRequest>,
    ) -> Result<Response<pb::ResumeResponse>, Status> {
        let target = request.into_inner().target;
        let changed = self
            .state
            .manager
            .resume(&target)
            .await
            .map_err(pause_status)?;
        Ok(Response::new(pb::ResumeResponse { changed }))
    }

    async fn list_pauses(
        &self,
        _request: Request<pb::ListPausesRequest>,
    ) -> Result<Response<pb::ListPausesResponse>, Status> {
        let pauses = self
            .state
            .manager
            .pauses()
            .await
            .map_err(convert::store_status)?
            .into_iter()
            .map(|pause| pb::Pause {
                target: pause.target,
                paused_at: Some(convert::timestamp(pause.paused_at)),
            })
            .collect();
        Ok(Response::new(pb::ListPausesResponse { pauses }))
    }

    async fn explain_job(
        &self,
        request: Request<pb::ExplainJobRequest>,
    ) -> Result<Response<pb::ExplainJobResponse>, Status> {
        let id = convert::parse_job_id("job_id", &request.into_inner().job_id)?;
        let explained = self
            .state
            .manager
            .explain(id)
            .await
            .map_err(convert::store_status)?;
        let mut response = pb::ExplainJobResponse {
            status: convert::status_to_pb(explained.status).into(),
            explanation: explained.text,
            ..Default::default()
        };
        let holdup = match explained.holdup {
            Holdup::NotWaiting => pb::Holdup::NotWaiting,
            Holdup::Paused { target, since } => {
                response.paused_by = Some(target);
                response.until = Some(convert::timestamp(since));
                pb::Holdup::Paused
            }
            Holdup::Dependencies(waiting) => {
                response.waiting_for = waiting.iter().map(JobId::to_string).collect();
                pb::Holdup::Dependencies
            }
            Holdup::NoPlugin => pb::Holdup::NoPlugin,
            Holdup::NotYetDue(at) => {
                response.until = Some(convert::timestamp(at));
                pb::Holdup::NotYetDue
            }
            Holdup::Queued { ahead } => {
                response.ahead = ahead;
                pb::Holdup::Queued
            }
            Holdup::RateLimited { host, until } => {
                response.rate_limited_host = Some(host);
                response.until = Some(convert::timestamp(until));
                pb::Holdup::RateLimited
            }
            Holdup::ConcurrencyLimited { scope, .. } => {
                response.concurrency_scope = Some(scope);
                pb::Holdup::ConcurrencyLimited
            }
        };
        response.holdup = holdup.into();
        Ok(Response::new(response))
    }

    async fn retry_jobs(
        &self,
        request: Request<pb::BulkJobsRequest>,
    ) -> Result<Response<pb::BulkJobsResponse>, Status> {
        let request = request.into_inner();
        let status = match convert::status_filter(request.status)? {
            None | Some(JobStatus::Failed) => JobStatus::Failed,
            Some(JobStatus::Cancelled) => JobStatus::Cancelled,
            Some(status) => {
                return Err(Status::invalid_argument(format!(
                    "RetryJobs takes failed or cancelled jobs, not {status}"
                )));
            }
        };
        let since = convert::instant("since", request.since)?;
        let count = self
            .state
            .manager
            .retry_matching(status, request.command, since)
            .await
            .map_err(convert::store_status)?;
        Ok(Response::new(pb::BulkJobsResponse {
            count: count as u64,
        }))
    }

    async fn get_job_status(
        &self,
        request: Request<pb::GetJobStatusRequest>,
    ) -> Result<Response<pb::GetJobStatusResponse>, Status> {
        let id = convert::parse_job_id("job_id", &request.into_inner().job_id)?;
        let (job, attempt) = job_with_attempt(&self.state, id).await?;
        let mut job = convert::job_to_pb(job, attempt, true);
        job.progress = latest_progress(&self.state, id).await;
        Ok(Response::new(pb::GetJobStatusResponse { job: Some(job) }))
    }

    async fn get_job_log(
        &self,
        request: Request<pb::GetJobLogRequest>,
    ) -> Result<Response<pb::GetJobLogResponse>, Status> {
        let request = request.into_inner();
        let id = convert::parse_job_id("job_id", &request.job_id)?;
        let after = match (request.after_attempt, request.after_seq) {
            (0, 0) => None,
            after => Some(after),
        };
        let query = LogQuery {
            attempt: request.attempt,
            after,
            limit: usize::try_from(request.limit).unwrap_or(usize::MAX),
        };
        let page_size = query.page_size();
        let output = self
            .state
            .manager
            .store()
            .job_output(id, query)
            .await
            .map_err(convert::store_status)?;
        let next = match output.lines.last() {
            Some(last) if output.lines.len() == page_size => (last.attempt, last.seq),
            _ => (0, 0),
        };
        Ok(Response::new(pb::GetJobLogResponse {
            lines: output
                .lines
                .into_iter()
                .map(convert::log_line_to_pb)
                .collect(),
            progress: output.progress.map(convert::progress_to_pb),
            next_after_attempt: next.0,
            next_after_seq: next.1,
        }))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let request = request.into_inner();
        if request.limit > LIST_LIMIT_MAX {
            return Err(Status::invalid_argument(format!(
                "limit is {}, over the maximum of {LIST_LIMIT_MAX}: page with page_token instead",
                request.limit
            )));
        }
        let cursor = match request.page_token.as_str() {
            "" => None,
            token => Some(convert::parse_job_id("page_token", token)?),
        };
        let full = match pb::JobView::try_from(request.view) {
            Ok(pb::JobView::Full) => true,
            Ok(pb::JobView::Summary | pb::JobView::Unspecified) => false,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown view {}: use JOB_VIEW_SUMMARY or JOB_VIEW_FULL",
                    request.view
                )));
            }
        };
        let filter = JobFilter {
            status: convert::status_filter(request.status)?,
            command: Some(request.command).filter(|command| !command.is_empty()),
            limit: request.limit as usize,
            cursor,
            with_bodies: full,
        };
        let page = self
            .state
            .manager
            .list(filter)
            .await
            .map_err(convert::store_status)?;
        let mut next_cursor = page.next_cursor;
        let mut jobs = Vec::with_capacity(page.jobs.len());
        let mut last_id = None;
        let mut bytes = 0;
        for job in page.jobs {
            if full {
                bytes += job.payload.len()
                    + job.result.as_ref().map_or(0, Vec::len)
                    + JOB_OVERHEAD_BYTES;
                // Keep a full page well under the response limit; the next page resumes
                // after the last job sent.
                if bytes > self.state.config.max_response_bytes / 2 && !jobs.is_empty() {
                    next_cursor = last_id;
                    break;
                }
            }
            last_id = Some(job.id);
            jobs.push(convert::job_to_pb(job, 0, full));
        }
        Ok(Response::new(pb::ListJobsResponse {
            jobs,
            next_page_token: next_cursor.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn prune_jobs(
        &self,
        request: Request<pb::PruneJobsRequest>,
    ) -> Result<Response<pb::PruneJobsResponse>, Status> {
        let policy = match request.into_inner().older_than_seconds {
            Some(seconds) => {
                crate::retention::RetentionPolicy::uniform(std::time::Duration::from_secs(seconds))
            }
            None => self.state.config.retention,
        };
        policy.validate().map_err(Status::invalid_argument)?;
        let workspaces = self.state.config.workspaces.as_ref();
        let deleted = crate::retention::prune(
            self.state.manager.store(),
            workspaces,
            &policy,
            chrono::Utc::now(),
        )
        .await
        .map_err(convert::store_status)?;
        tracing::info!(deleted, "pruned finished jobs on request");
        Ok(Response::new(pb::PruneJobsResponse {
            deleted: deleted as u64,
        }))
    }

    type WatchJobStream = ReceiverStream<Result<pb::JobUpdate, Status>>;

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let request = request.into_inner();
        let id = convert::parse_job_id("job_id", &request.job_id)?;
        let stream = watch::watch(Arc::clone(&self.state), id, request.output).await?;
        Ok(Response::new(stream))
    }
}

/// A refused pause or resume as a status: the target's fault, or the store's.
fn pause_status(err: PauseError) -> Status {
    match err {
        PauseError::Invalid(err) => Status::invalid_argument(err.to_string()),
        PauseError::Store(err) => convert::store_status(err),
    }
}
