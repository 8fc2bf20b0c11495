//! `explain`: why a job is not running now, and when it next can, in one paragraph.
//!
//! The answer is read from what decides dispatch, in the order it decides: a pause of
//! the job's plugin or command holds it first; then a rate limit of its plugin's API
//! (a stored hold, live now); then the jobs it depends on; then
//! whether a loaded plugin serves its command; then its `run_at` (a retry's backoff);
//! then a concurrency limit of its plugin, command or key that is reached; then its
//! place in line, counted in the store among the eligible jobs that would be
//! claimed before it. A running or finished job is explained too, so that the question
//! always has an answer.

use chrono::{DateTime, SecondsFormat, Utc};

use super::Manager;
use crate::job::{Job, JobId, JobStatus};
use crate::pause::covers;
use crate::store::StoreError;
use honeydew_core::concurrency::Scope;

/// What holds a job, the first thing dispatch would stop at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holdup {
    /// It is not waiting: it runs now, or it has finished.
    NotWaiting,
    /// A pause of `target` (its plugin or its command) holds it.
    Paused {
        /// What was paused.
        target: String,
        /// Since when.
        since: DateTime<Utc>,
    },
    /// A rate limit of its plugin's API holds it until `until`.
    RateLimited {
        /// The `allowed_hosts` entry whose quota is spent.
        host: String,
        /// When the quota resets.
        until: DateTime<Utc>,
    },
    /// It waits for these jobs it depends on to complete.
    Dependencies(Vec<JobId>),
    /// No plugin loaded here serves its command.
    NoPlugin,
    /// It is not eligible before its `run_at`.
    NotYetDue(DateTime<Utc>),
    /// Its plugin, command or key (`scope`, by name) runs `running` jobs, as many as its
    /// concurrency limit `limit` allows.
    ConcurrencyLimited {
        /// The scope at its limit: `github`, `github.clone` or `github[rust-lang/rust]`.
        scope: String,
        /// Jobs of the scope running now.
        running: u64,
        /// Its limit.
        limit: u32,
    },
    /// Eligible, with `ahead` eligible jobs to be claimed before it.
    Queued {
        /// Jobs ahead of it.
        ahead: u64,
    },
}

/// A job's explanation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// The job's status.
    pub status: JobStatus,
    /// What holds it.
    pub holdup: Holdup,
    /// The same, in one paragraph for people.
    pub text: String,
}

impl Manager {
    /// Why job `id` is not running now and when it next can.
    pub async fn explain(&self, id: JobId) -> Result<Explanation, StoreError> {
        let job = self.store().get_job(id).await?;
        let now = Utc::now();
        let (holdup, text) = match job.status {
            JobStatus::Running => (Holdup::NotWaiting, running(&job)),
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled => {
                (Holdup::NotWaiting, finished(&job))
            }
            JobStatus::Pending => self.pending(&job, now).await?,
        };
        Ok(Explanation {
            status: job.status,
            holdup,
            text,
        })
    }

    async fn pending(&self, job: &Job, now: DateTime<Utc>) -> Result<(Holdup, String), StoreError> {
        let later = (job.run_at > now).then_some(job.run_at);
        let due = match later {
            Some(at) => format!(" Even then it is not due before {}.", when(at)),
            None => String::new(),
        };
        let pauses = self.pauses().await?;
        if let Some(pause) = pauses
            .iter()
            .find(|pause| covers(&pause.target, &job.command))
        {
            let text = format!(
                "Job {} ({}) is pending: {} is paused (since {}), so no worker claims it. \
                 It runs once `honeydew resume {}` ends the pause.{due}",
                job.id,
                job.command,
                pause.target,
                when(pause.paused_at),
                pause.target,
            );
            let holdup = Holdup::Paused {
                target: pause.target.clone(),
                since: pause.paused_at,
            };
            return Ok((holdup, text));
        }
        let plugin = job
            .command
            .split_once('.')
            .map_or(&*job.command, |(plugin, _)| plugin);
        let holds = self.store().rate_limit_holds(now).await?;
        if let Some(hold) = holds
            .iter()
            .filter(|hold| hold.plugin == plugin)
            .max_by_key(|hold| hold.until)
        {
            let credential = if hold.credential.is_empty() {
                String::new()
            } else {
                format!(" with credential {}", hold.credential)
            };
            let text = format!(
                "Job {} ({}) is pending: held by a rate limit until {}. The quota of {}{credential} \
                 is spent, so no worker claims a job of {plugin} before it resets; waiting \
                 spends no retry.",
                job.id,
                job.command,
                when(hold.until),
                hold.host,
            );
            let holdup = Holdup::RateLimited {
                host: hold.host.clone(),
                until: hold.until,
            };
            return Ok((holdup, text));
        }
        let waiting: Vec<JobId> = self
            .store()
            .dependencies(job.id)
            .await?
            .into_iter()
            .filter(|(_, status)| *status != JobStatus::Completed)
            .map(|(id, _)| id)
            .collect();
        if !waiting.is_empty() {
            let ids: Vec<String> = waiting.iter().map(JobId::to_string).collect();
            let text = format!(
                "Job {} ({}) is pending: it waits for {} job{} it depends on to complete ({}). \
                 It becomes eligible when the last of them completes, and is cancelled if one \
                 fails or is cancelled.{due}",
                job.id,
                job.command,
                waiting.len(),
                if waiting.len() == 1 { "" } else { "s" },
                ids.join(", "),
            );
            return Ok((Holdup::Dependencies(waiting), text));
        }
        if !self.serves(&job.command) {
            let plugin = job
                .command
                .split_once('.')
                .map_or(&*job.command, |(p, _)| p);
            let elsewhere = if self.store().shared().is_some() {
                " Another daemon of the store that serves it may claim it."
            } else {
                ""
            };
            let text = format!(
                "Job {} ({}) is pending: no plugin loaded on this daemon serves {}. It waits \
                 for {plugin}.wasm (with its manifest) in the plugin directory, and runs as \
                 soon as the plugin loads.{elsewhere}{due}",
                job.id, job.command, job.command,
            );
            return Ok((Holdup::NoPlugin, text));
        }
        if let Some(at) = later {
            let why = match (&job.error, job.retry_count) {
                (Some(error), retries) if retries > 0 => format!(
                    "it is retry {retries} of {} after a failure ({})",
                    job.max_retries,
                    first_line(error)
                ),
                _ => "its run_at lies ahead".to_owned(),
            };
            let text = format!(
                "Job {} ({}) is pending and waits until {}: {why}. It is eligible from then \
                 on, in priority order.",
                job.id,
                job.command,
                when(at),
            );
            return Ok((Holdup::NotYetDue(at), text));
        }
        let limits = self.concurrency_limits();
        for (scope, limit) in limits.limited(&job.command, job.concurrency_key.as_deref()) {
            let running = self.store().running_in(scope.clone()).await?;
            if running >= u64::from(limit) {
                let what = match &scope {
                    Scope::Plugin(plugin) => format!("plugin {plugin}"),
                    Scope::Command(command) => format!("command {command}"),
                    Scope::Key { plugin, key } => format!("key {key:?} of {plugin}"),
                };
                let text = format!(
                    "Job {} ({}) is pending: {what} runs {running} job{}, as many as its \
                     concurrency limit of {limit} allows. It starts when one of them ends{}.",
                    job.id,
                    job.command,
                    if running == 1 { "" } else { "s" },
                    if matches!(scope, Scope::Key { .. }) {
                        "; keys take turns, so other keys' jobs do not hold it back for long"
                    } else {
                        ""
                    },
                );
                let holdup = Holdup::ConcurrencyLimited {
                    scope: scope.name(),
                    running,
                    limit,
                };
                return Ok((holdup, text));
            }
        }
        let ahead = self.store().count_ahead(job.id, now).await?;
        let busy = self.running_here();
        let text = if ahead == 0 {
            format!(
                "Job {} ({}) is pending and next in line: the first free worker claims it \
                 ({busy} running on this daemon now).",
                job.id, job.command,
            )
        } else {
            format!(
                "Job {} ({}) is pending, queued behind {ahead} eligible job{} of higher \
                 priority, or of its priority ({}) and older; it runs when a worker is free \
                 after those ({busy} running on this daemon now).",
                job.id,
                job.command,
                if ahead == 1 { "" } else { "s" },
                job.priority,
            )
        };
        Ok((Holdup::Queued { ahead }, text))
    }
}

fn running(job: &Job) -> String {
    let since = job
        .started_at
        .map(|at| format!(" since {}", when(at)))
        .unwrap_or_default();
    format!(
        "Job {} ({}) is not waiting: it is running{since}, attempt {} of at most {}.",
        job.id,
        job.command,
        job.retry_count + 1,
        job.max_retries + 1,
    )
}

fn finished(job: &Job) -> String {
    let at = job
        .completed_at
        .map(|at| format!(" at {}", when(at)))
        .unwrap_or_default();
    let error = job
        .error
        .as_deref()
        .map(|error| format!(": {}", first_line(error)))
        .unwrap_or_default();
    let (ended, again) = match job.status {
        JobStatus::Completed => ("completed", String::new()),
        JobStatus::Failed => (
            "failed",
            format!(" `honeydew retry {}` runs it again.", job.id),
        ),
        _ => (
            "was cancelled",
            format!(" `honeydew retry {}` runs it again.", job.id),
        ),
    };
    format!(
        "Job {} ({}) is not waiting: it {ended}{at}{error}.{again}",
        job.id, job.command,
    )
}

/// An instant as people read it in a paragraph: RFC 3339, whole seconds, UTC.
fn when(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The first line of a message, at most 200 characters.
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}
