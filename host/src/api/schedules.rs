//! The `Schedules` service: add, remove and list cron schedules through the
//! [`Scheduler`](crate::scheduler::Scheduler).
//!
//! Requests are checked here as `SubmitJob` checks them (JSON payload, retry limit),
//! then the scheduler validates the rest (name, expression, time zone, command) and
//! owns the table; its [`ScheduleError`](crate::scheduler::ScheduleError) becomes the
//! status, its message the status message.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::ApiState;
use super::convert::{self, schedule_status, schedule_to_pb};
use super::pb::{self, schedules_server::Schedules};
use crate::scheduler::NewSchedule;

pub struct SchedulesService {
    state: Arc<ApiState>,
}

impl SchedulesService {
    pub fn new(state: Arc<ApiState>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl Schedules for SchedulesService {
    async fn schedule_job(
        &self,
        request: Request<pb::ScheduleJobRequest>,
    ) -> Result<Response<pb::ScheduleJobResponse>, Status> {
        let request = request.into_inner();
        let new = NewSchedule {
            misfire: convert::misfire_from_pb(request.misfire)?,
            payload: convert::json_payload(request.payload)?,
            max_retries: convert::max_retries(request.max_retries)?,
            name: request.name,
            cron_expr: request.cron_expr,
            timezone: request.timezone,
            command: request.command,
            priority: request.priority,
        };
        let schedule = self
            .state
            .scheduler
            .add_schedule(new)
            .await
            .map_err(schedule_status)?;
        Ok(Response::new(pb::ScheduleJobResponse {
            schedule: Some(schedule_to_pb(schedule)),
        }))
    }

    async fn unschedule_job(
        &self,
        request: Request<pb::UnscheduleJobRequest>,
    ) -> Result<Response<pb::UnscheduleJobResponse>, Status> {
        let key = request.into_inner().schedule;
        let schedule = self
            .state
            .scheduler
            .remove_schedule(&key)
            .await
            .map_err(schedule_status)?;
        Ok(Response::new(pb::UnscheduleJobResponse {
            schedule: Some(schedule_to_pb(schedule)),
        }))
    }

    async fn pause_schedule(
        &self,
        request: Request<pb::PauseScheduleRequest>,
    ) -> Result<Response<pb::PauseScheduleResponse>, Status> {
        let key = request.into_inner().schedule;
        let schedule = self
            .state
            .scheduler
            .set_enabled(&key, false)
            .await
            .map_err(schedule_status)?;
        Ok(Response::new(pb::PauseScheduleResponse {
            schedule: Some(schedule_to_pb(schedule)),
        }))
    }

    async fn resume_schedule(
        &self,
        request: Request<pb::ResumeScheduleRequest>,
    ) -> Result<Response<pb::ResumeScheduleResponse>, Status> {
        let key = request.into_inner().schedule;
        let schedule = self
            .state
            .scheduler
            .set_enabled(&key, true)
            .await
            .map_err(schedule_status)?;
        Ok(Response::new(pb::ResumeScheduleResponse {
            schedule: Some(schedule_to_pb(schedule)),
        }))
    }

    async fn list_schedules(
        &self,
        _request: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        let schedules = self
            .state
            .scheduler
            .list_schedules()
            .await
            .map_err(schedule_status)?;
        Ok(Response::new(pb::ListSchedulesResponse {
            schedules: schedules.into_iter().map(schedule_to_pb).collect(),
        }))
    }
}
