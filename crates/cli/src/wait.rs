//! Waiting for a job: streams `WatchJob` instead of polling, and shows progress on
//! stderr: a spinner with state, attempt and elapsed time when stderr is a terminal,
//! with a bar of the plugin's own progress report when it sends one (the watch then
//! asks for the job's output), one plain line per change otherwise (logs, CI).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use super::CliError;
use super::output::status_of;
use honeydew_proto::Connection;
use honeydew_proto::pb::{self, queue_client::QueueClient};

const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// Follows job `id` to its end and returns it as it ended.
pub async fn wait(client: &mut QueueClient<Connection>, id: String) -> Result<pb::Job, CliError> {
    let interactive = std::io::stderr().is_terminal();
    let request = pb::WatchJobRequest {
        job_id: id.clone(),
        // Only a terminal shows the plugin's progress.
        output: interactive,
    };
    let mut updates = client.watch_job(request).await?.into_inner();
    let mut progress = Progress::new(interactive);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last: Option<pb::Job> = None;
    loop {
        let update = tokio::select! {
            update = updates.message() => update,
            _ = tick.tick() => {
                progress.redraw();
                continue;
            }
        };
        let update = match update {
            Ok(Some(update)) => update,
            Ok(None) => break,
            Err(status) => {
                progress.clear();
                return Err(status.into());
            }
        };
        progress.show(&update);
        let status = update.status();
        if let Some(job) = update.job {
            last = Some(job);
        }
        if matches!(
            status,
            pb::JobStatus::Completed | pb::JobStatus::Failed | pb::JobStatus::Cancelled
        ) {
            break;
        }
    }
    progress.clear();
    match last {
        Some(job) if is_terminal(&job) => Ok(job),
        // The stream ended early; ask for the job as it stands.
        _ => {
            let request = pb::GetJobStatusRequest { job_id: id };
            let job = client
                .get_job_status(request)
                .await?
                .into_inner()
                .job
                .unwrap_or_default();
            if is_terminal(&job) {
                Ok(job)
            } else {
                Err(CliError::Other(format!(
                    "the daemon stopped sending updates while job {} was {}: run `honeydew wait {}` again",
                    job.id,
                    status_of(&job),
                    job.id
                )))
            }
        }
    }
}

fn is_terminal(job: &pb::Job) -> bool {
    matches!(
        job.status(),
        pb::JobStatus::Completed | pb::JobStatus::Failed | pb::JobStatus::Cancelled
    )
}

/// The progress display.
struct Progress {
    interactive: bool,
    started: Instant,
    frame: usize,
    state: String,
    /// The plugin's latest report, drawn as a bar.
    reported: Option<pb::JobProgress>,
}

impl Progress {
    fn new(interactive: bool) -> Self {
        Self {
            interactive,
            started: Instant::now(),
            frame: 0,
            state: String::new(),
            reported: None,
        }
    }

    fn show(&mut self, update: &pb::JobUpdate) {
        if let Some(reported) = &update.progress {
            self.reported = Some(reported.clone());
        }
        if let Some(reported) = &self.reported
            && reported.attempt != update.attempt
        {
            // A report of an earlier attempt says nothing of this one.
            self.reported = None;
        }
        let status = match update.status() {
            pb::JobStatus::Pending if update.retry_count > 0 => "retrying",
            pb::JobStatus::Pending => "pending",
            pb::JobStatus::Running => "running",
            pb::JobStatus::Completed => "completed",
            pb::JobStatus::Failed => "failed",
            pb::JobStatus::Cancelled => "cancelled",
            pb::JobStatus::Unspecified => "unknown",
        };
        let mut state = format!("{} {status}", update.job_id);
        if update.attempt > 0 {
            state.push_str(&format!(" · attempt {}", update.attempt));
        }
        if let (pb::JobStatus::Pending, Some(error)) = (update.status(), &update.error) {
            state.push_str(&format!(" · after: {error}"));
        }
        if self.interactive {
            self.state = state;
            self.redraw();
        } else {
            eprintln!("{state}");
        }
    }

    fn redraw(&mut self) {
        if !self.interactive || self.state.is_empty() {
            return;
        }
        self.frame = (self.frame + 1) % SPINNER.len();
        let elapsed = self.started.elapsed().as_secs_f64();
        let mut stderr = std::io::stderr().lock();
        let bar = self
            .reported
            .as_ref()
            .map_or_else(String::new, |reported| format!(" · {}", bar(reported)));
        let _ = write!(
            stderr,
            "\r\x1b[2K{} {}{bar} · {elapsed:.1}s",
            SPINNER[self.frame], self.state
        );
        let _ = stderr.flush();
    }

    fn clear(&mut self) {
        if self.interactive && !self.state.is_empty() {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
        }
    }
}

/// How wide the bar is, in cells.
const BAR_CELLS: u64 = 20;

/// A plugin's report as `[#######-------------] 35/100 message` (without a total:
/// `35 done message`).
pub fn bar(reported: &pb::JobProgress) -> String {
    let mut text = match reported.total {
        Some(total) => {
            let done = reported.done.min(total);
            let filled = if total == 0 {
                BAR_CELLS
            } else {
                (u128::from(done) * u128::from(BAR_CELLS) / u128::from(total)) as u64
            };
            format!(
                "[{}{}] {done}/{total}",
                "#".repeat(filled as usize),
                "-".repeat((BAR_CELLS - filled) as usize)
            )
        }
        None => format!("{} done", reported.done),
    };
    if let Some(message) = reported
        .message
        .as_deref()
        .filter(|message| !message.is_empty())
    {
        // One line: a message cannot move the cursor.
        let message: String = message
            .chars()
            .filter(|c| !c.is_control())
            .take(80)
            .collect();
        text.push(' ');
        text.push_str(&message);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(done: u64, total: Option<u64>, message: Option<&str>) -> pb::JobProgress {
        pb::JobProgress {
            attempt: 1,
            done,
            total,
            message: message.map(str::to_owned),
            updated_at: None,
        }
    }

    #[test]
    fn the_bar_fills_with_the_share_done() {
        assert_eq!(
            bar(&report(5, Some(20), Some("page 5"))),
            "[#####---------------] 5/20 page 5"
        );
        assert_eq!(bar(&report(0, Some(0), None)), "[####################] 0/0");
        assert_eq!(bar(&report(7, None, None)), "7 done");
        assert_eq!(
            bar(&report(u64::MAX, Some(u64::MAX), Some("a\x1b[2Jb"))),
            format!("[####################] {0}/{0} a[2Jb", u64::MAX)
        );
    }
}
