//! The `Schedules` service, reserved for the cron scheduler: until it is part of the
//! daemon, every RPC answers UNIMPLEMENTED and says so.

use tonic::{Request, Response, Status};

use super::pb::{self, schedules_server::Schedules};

pub struct SchedulesService;

fn not_yet() -> Status {
    Status::unimplemented(
        "schedules are not available yet: this daemon has no cron scheduler; \
         submit jobs directly with `honeydew submit` meanwhile",
    )
}

#[tonic::async_trait]
impl Schedules for SchedulesService {
    async fn schedule_job(
        &self,
        _request: Request<pb::ScheduleJobRequest>,
    ) -> Result<Response<pb::ScheduleJobResponse>, Status> {
        Err(not_yet())
    }

    async fn unschedule_job(
        &self,
        _request: Request<pb::UnscheduleJobRequest>,
    ) -> Result<Response<pb::UnscheduleJobResponse>, Status> {
        Err(not_yet())
    }

    async fn list_schedules(
        &self,
        _request: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        Err(not_yet())
    }
}
