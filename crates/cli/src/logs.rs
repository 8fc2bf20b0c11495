//! `honeydew logs ID`: a job's log as its plugin wrote it, one line per log line
//! (`TIME LEVEL [attempt N] TEXT`, or a JSON object per line with `--json`), read a page
//! at a time with `GetJobLog`; with `--follow`, the log so far and then each new line
//! as the daemon stores it, over `WatchJob`, until the job ends.

use chrono::{DateTime, Local, Utc};
use honeydew_proto::Connection;
use honeydew_proto::pb::{self, queue_client::QueueClient};
use serde_json::json;

use super::CliError;

/// Prints job `id`'s log (only attempt `attempt`'s when given), following it until the
/// job ends when `follow`.
pub async fn logs(
    client: &mut QueueClient<Connection>,
    id: String,
    attempt: Option<u32>,
    follow: bool,
    json: bool,
) -> Result<(), CliError> {
    if follow {
        return follow_log(client, id, attempt, json).await;
    }
    let mut after = (0, 0);
    loop {
        let request = pb::GetJobLogRequest {
            job_id: id.clone(),
            attempt,
            after_attempt: after.0,
            after_seq: after.1,
            limit: 0,
        };
        let page = client.get_job_log(request).await?.into_inner();
        for line in &page.lines {
            print_line(line, json);
        }
        if page.next_after_attempt == 0 && page.next_after_seq == 0 {
            return Ok(());
        }
        after = (page.next_after_attempt, page.next_after_seq);
    }
}

async fn follow_log(
    client: &mut QueueClient<Connection>,
    id: String,
    attempt: Option<u32>,
    json: bool,
) -> Result<(), CliError> {
    let request = pb::WatchJobRequest {
        job_id: id,
        output: true,
    };
    let mut updates = client.watch_job(request).await?.into_inner();
    while let Some(update) = updates.message().await? {
        for line in update
            .log_lines
            .iter()
            .filter(|line| attempt.is_none_or(|attempt| line.attempt == attempt))
        {
            print_line(line, json);
        }
        if update.job.is_some()
            && matches!(
                update.status(),
                pb::JobStatus::Completed | pb::JobStatus::Failed | pb::JobStatus::Cancelled
            )
        {
            break;
        }
    }
    Ok(())
}

fn print_line(line: &pb::LogLine, json: bool) {
    let at = line
        .at
        .as_ref()
        .and_then(|at| DateTime::<Utc>::from_timestamp(at.seconds, at.nanos.max(0) as u32));
    if json {
        let at = at.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        println!(
            "{}",
            json!({
                "attempt": line.attempt,
                "seq": line.seq,
                "at": at,
                "level": line.level,
                "line": line.line,
            })
        );
    } else {
        println!("{}", human_line(line, at));
    }
}

/// `HH:MM:SS.mmm LEVEL [attempt N] TEXT`, in local time.
fn human_line(line: &pb::LogLine, at: Option<DateTime<Utc>>) -> String {
    let at = at.map_or_else(String::new, |at| {
        at.with_timezone(&Local).format("%H:%M:%S%.3f").to_string()
    });
    format!(
        "{at} {:<5} [attempt {}] {}",
        line.level.to_uppercase(),
        line.attempt,
        line.line
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_level_attempt_and_text() {
        let line = pb::LogLine {
            attempt: 2,
            seq: 5,
            at: None,
            level: "warn".into(),
            line: "page 3 was slow".into(),
        };
        assert_eq!(
            human_line(&line, None),
            " WARN  [attempt 2] page 3 was slow"
        );
    }
}
