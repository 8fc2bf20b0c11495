//! The schedule model: a cron expression that submits a job at each instant, as it is
//! stored. The cron arithmetic (parsing, next instants, misfire decisions) lives with the
//! scheduler; this is only the record that the store keeps and the API shows.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::job::JobId;

/// What to do about instants missed while the daemon was down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MisfirePolicy {
    /// Run nothing for them; carry on from the next instant.
    #[default]
    Skip,
    /// Run one job for all of them together.
    RunOnce,
}

impl MisfirePolicy {
    /// The name stored and shown (`skip`, `run_once`).
    pub fn as_str(self) -> &'static str {
        match self {
            MisfirePolicy::Skip => "skip",
            MisfirePolicy::RunOnce => "run_once",
        }
    }
}

impl fmt::Display for MisfirePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A misfire policy that is neither `skip` nor `run_once`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown misfire policy {0:?}: use \"skip\" or \"run_once\"")]
pub struct UnknownMisfire(pub String);

impl FromStr for MisfirePolicy {
    type Err = UnknownMisfire;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "skip" => Ok(MisfirePolicy::Skip),
            "run_once" | "run-once" => Ok(MisfirePolicy::RunOnce),
            other => Err(UnknownMisfire(other.to_owned())),
        }
    }
}

/// A persisted schedule: a cron expression that submits a job at each instant.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// Time-ordered unique id.
    pub id: Uuid,
    /// Unique, human-chosen name.
    pub name: String,
    /// The expression as the user gave it (5 fields, or 6 with seconds first).
    pub cron_expr: String,
    /// IANA zone the expression is read in.
    pub timezone: String,
    /// `plugin.command` to submit.
    pub command: String,
    /// Payload of every submitted job.
    pub payload: Vec<u8>,
    /// Priority of every submitted job.
    pub priority: i64,
    /// Retries of every submitted job; the plugin's or daemon's default when `None`.
    pub max_retries: Option<u32>,
    /// What to do about instants missed while down.
    pub misfire: MisfirePolicy,
    /// Disabled schedules are kept but never fire.
    pub enabled: bool,
    /// When it was added.
    pub created_at: DateTime<Utc>,
    /// When it last submitted a job.
    pub last_run_at: Option<DateTime<Utc>>,
    /// The next instant it will fire.
    pub next_run_at: Option<DateTime<Utc>>,
    /// The job it last submitted.
    pub last_job_id: Option<JobId>,
    /// The scheduled instant of the last trigger: each instant triggers at most once.
    pub last_scheduled_for: Option<DateTime<Utc>>,
    /// Why the latest instant submitted no job, if it did not.
    pub last_error: Option<String>,
    /// When that happened.
    pub last_error_at: Option<DateTime<Utc>>,
}
