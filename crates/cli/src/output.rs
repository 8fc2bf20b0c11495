//! How the CLI prints: results as pretty JSON when they are JSON (raw otherwise), jobs
//! as key-value blocks or aligned tables for people, schedules as tables with their
//! runs in local time, and JSON objects with `--json`.

use std::io::Write;

use chrono::{DateTime, Local, Utc};
use prost_types::Timestamp;
use serde_json::{Value, json};

use honeydew_proto::pb;

/// Prints a job's result: pretty JSON when it parses, the bytes as they are otherwise.
pub fn print_result(result: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    let _ = match serde_json::from_slice::<Value>(result) {
        Ok(value) => writeln!(stdout, "{}", pretty(&value)),
        Err(_) => stdout.write_all(result),
    };
}

pub fn print_json(value: &Value) {
    println!("{}", pretty(value));
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// A payload or result as JSON: itself when it is JSON, a string when UTF-8, else hex.
fn body_json(bytes: &[u8]) -> Value {
    if let Ok(value) = serde_json::from_slice(bytes) {
        return value;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Value::String(text.to_owned()),
        Err(_) => json!({ "hex": bytes.iter().map(|b| format!("{b:02x}")).collect::<String>() }),
    }
}

fn status_name(status: pb::JobStatus) -> &'static str {
    match status {
        pb::JobStatus::Unspecified => "unknown",
        pb::JobStatus::Pending => "pending",
        pb::JobStatus::Running => "running",
        pb::JobStatus::Completed => "completed",
        pb::JobStatus::Failed => "failed",
        pb::JobStatus::Cancelled => "cancelled",
    }
}

/// A job's status as its lowercase name.
pub fn status_of(job: &pb::Job) -> &'static str {
    status_name(job.status())
}

fn time(timestamp: Option<&Timestamp>) -> Option<DateTime<Utc>> {
    let timestamp = timestamp?;
    DateTime::from_timestamp(timestamp.seconds, timestamp.nanos.max(0) as u32)
}

fn rfc3339(timestamp: Option<&Timestamp>) -> Value {
    time(timestamp).map_or(Value::Null, |at| {
        at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .into()
    })
}

fn local(timestamp: Option<&Timestamp>) -> String {
    time(timestamp).map_or_else(String::new, |at| {
        at.with_timezone(&Local)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    })
}

/// A job as a JSON object.
pub fn job_json(job: &pb::Job) -> Value {
    let mut object = json!({
        "id": job.id,
        "command": job.command,
        "status": status_of(job),
        "priority": job.priority,
        "created_at": rfc3339(job.created_at.as_ref()),
        "run_at": rfc3339(job.run_at.as_ref()),
        "started_at": rfc3339(job.started_at.as_ref()),
        "completed_at": rfc3339(job.completed_at.as_ref()),
        "error": job.error,
        "error_kind": job.error_kind,
        "retry_count": job.retry_count,
        "max_retries": job.max_retries,
        "snooze_count": job.snooze_count,
        "concurrency_key": job.concurrency_key,
        "plugin": job.plugin.as_ref().map(|plugin| json!({
            "name": plugin.name,
            "version": plugin.version,
            "sha256": plugin.sha256,
        })),
    });
    if job.attempt > 0 {
        object["attempt"] = job.attempt.into();
    }
    if let Some(progress) = &job.progress {
        object["progress"] = json!({
            "attempt": progress.attempt,
            "done": progress.done,
            "total": progress.total,
            "message": progress.message,
            "updated_at": rfc3339(progress.updated_at.as_ref()),
        });
    }
    if !job.payload.is_empty() {
        object["payload"] = body_json(&job.payload);
    }
    if let Some(result) = &job.result {
        object["result"] = body_json(result);
    }
    object
}

/// A job for people: one field a line, then the result.
pub fn print_job(job: &pb::Job) {
    let snoozes = match job.snooze_count {
        0 => String::new(),
        1 => ", snoozed once".to_owned(),
        n => format!(", snoozed {n} times"),
    };
    let mut lines = vec![
        ("id", job.id.clone()),
        ("command", job.command.clone()),
        ("status", status_of(job).to_owned()),
        ("priority", job.priority.to_string()),
        (
            "attempt",
            format!(
                "{} (retries {} of {}{snoozes})",
                job.attempt, job.retry_count, job.max_retries
            ),
        ),
        ("created", local(job.created_at.as_ref())),
    ];
    if job.status() == pb::JobStatus::Pending && (job.retry_count > 0 || job.snooze_count > 0) {
        lines.push(("next run", local(job.run_at.as_ref())));
    }
    lines.push(("started", local(job.started_at.as_ref())));
    lines.push(("completed", local(job.completed_at.as_ref())));
    if let Some(plugin) = &job.plugin {
        let sha = plugin.sha256.get(..12).unwrap_or(&plugin.sha256);
        lines.push((
            "plugin",
            format!("{} {} (sha256 {sha})", plugin.name, plugin.version),
        ));
    }
    if let Some(error) = &job.error {
        let kind = job.error_kind.as_deref().unwrap_or("error");
        lines.push(("error", format!("{kind}: {error}")));
    }
    if let Some(progress) = &job.progress {
        lines.push((
            "progress",
            format!(
                "{} (attempt {})",
                super::wait::bar(progress),
                progress.attempt
            ),
        ));
    }
    for (name, value) in lines.iter().filter(|(_, value)| !value.is_empty()) {
        println!("{name:<10} {value}");
    }
    if let Some(result) = &job.result {
        println!("result:");
        print_result(result);
    }
}

/// What to say on stderr when a waited-for job did not complete.
pub fn job_ending(job: &pb::Job, status: pb::JobStatus) -> String {
    match status {
        pb::JobStatus::Cancelled if job.error_kind.as_deref() == Some("cancelled_by_plugin") => {
            format!(
                "job {} was cancelled by its plugin: {}",
                job.id,
                job.error.as_deref().unwrap_or("no reason given")
            )
        }
        pb::JobStatus::Cancelled => format!("job {} was cancelled", job.id),
        _ => format!(
            "job {} failed ({}): {}",
            job.id,
            job.error_kind.as_deref().unwrap_or("error"),
            job.error.as_deref().unwrap_or("no message")
        ),
    }
}

/// Rows under headers, each column as wide as its widest cell; the last is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|header| header.chars().count())
        .collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut text = String::new();
        for (index, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if index == last {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        text.trim_end().to_owned()
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// At most `max` characters, with an ellipsis when cut.
fn shorten(text: &str, max: usize) -> String {
    let first_line = text.lines().next().unwrap_or_default();
    if first_line.chars().count() <= max && first_line.len() == text.len() {
        return first_line.to_owned();
    }
    let kept: String = first_line.chars().take(max.saturating_sub(1)).collect();
    format!("{kept}…")
}

pub fn print_job_table(jobs: &[pb::Job]) {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|job| {
            vec![
                job.id.clone(),
                job.command.clone(),
                status_of(job).to_owned(),
                job.priority.to_string(),
                format!("{}/{}", job.retry_count, job.max_retries),
                local(job.created_at.as_ref()),
                job.error
                    .as_deref()
                    .map(|error| shorten(error, 60))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "ID", "COMMAND", "STATUS", "PRIORITY", "RETRIES", "CREATED", "ERROR"
            ],
            &rows
        )
    );
}

/// The loaded plugins, then the refused files with their reasons. As JSON, one array:
/// each entry has `status` `loaded` or `skipped`.
pub fn print_plugins(plugins: &[pb::Plugin], skipped: &[pb::SkippedPlugin], json: bool) {
    if json {
        let mut plugins: Vec<Value> = plugins
            .iter()
            .map(|plugin| {
                let limits = plugin.limits.unwrap_or_default();
                json!({
                    "status": "loaded",
                    "name": plugin.name,
                    "version": plugin.version,
                    "sha256": plugin.sha256,
                    "commands": plugin.commands,
                    "limits": {
                        "fuel": limits.fuel,
                        "memory_mib": limits.memory_mib,
                        "timeout_ms": limits.timeout_ms,
                        "max_retries": limits.max_retries,
                    },
                    "allowed_hosts": plugin.allowed_hosts,
                })
            })
            .collect();
        plugins.extend(skipped.iter().map(|skipped| {
            json!({
                "status": "skipped",
                "name": skipped.name,
                "path": skipped.path,
                "reason": skipped.reason,
            })
        }));
        print_json(&Value::Array(plugins));
        return;
    }
    let rows: Vec<Vec<String>> = plugins
        .iter()
        .map(|plugin| {
            let limits = plugin.limits.unwrap_or_default();
            vec![
                plugin.name.clone(),
                plugin.version.clone(),
                plugin.sha256.get(..12).unwrap_or(&plugin.sha256).to_owned(),
                plugin.commands.join(","),
                format!("{}ms/{}MiB", limits.timeout_ms, limits.memory_mib),
                if plugin.allowed_hosts.is_empty() {
                    "(no network)".to_owned()
                } else {
                    plugin.allowed_hosts.join(",")
                },
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &["NAME", "VERSION", "SHA256", "COMMANDS", "LIMITS", "HOSTS"],
            &rows
        )
    );
    if !skipped.is_empty() {
        println!("\nnot loaded:");
        for skipped in skipped {
            // A reason may run over several lines (a compiler's diagnostic): indent them.
            let reason = skipped.reason.trim_end().replace('\n', "\n      ");
            println!("  {}: {reason}", skipped.path);
        }
    }
}

/// A misfire policy as its lowercase name.
fn misfire_name(policy: pb::MisfirePolicy) -> &'static str {
    match policy {
        pb::MisfirePolicy::Unspecified | pb::MisfirePolicy::Skip => "skip",
        pb::MisfirePolicy::RunOnce => "run_once",
    }
}

/// A schedule as a JSON object, one key per column of the `schedules` table.
pub fn schedule_json(schedule: &pb::Schedule) -> Value {
    json!({
        "id": schedule.id,
        "name": schedule.name,
        "cron_expr": schedule.cron_expr,
        "timezone": schedule.timezone,
        "command": schedule.command,
        "payload": body_json(&schedule.payload),
        "priority": schedule.priority,
        "max_retries": schedule.max_retries,
        "misfire": misfire_name(schedule.misfire()),
        "enabled": schedule.enabled,
        "created_at": rfc3339(schedule.created_at.as_ref()),
        "last_run_at": rfc3339(schedule.last_run_at.as_ref()),
        "next_run_at": rfc3339(schedule.next_run_at.as_ref()),
        "last_job_id": Some(&schedule.last_job_id).filter(|id| !id.is_empty()),
        "last_error": schedule.last_error,
        "last_error_at": rfc3339(schedule.last_error_at.as_ref()),
    })
}

/// An explanation: its paragraph, or its fields as JSON.
pub fn print_explanation(explained: &pb::ExplainJobResponse, json: bool) {
    if !json {
        println!("{}", explained.explanation);
        return;
    }
    let holdup = match explained.holdup() {
        pb::Holdup::Unspecified | pb::Holdup::NotWaiting => "not_waiting",
        pb::Holdup::Paused => "paused",
        pb::Holdup::NoPlugin => "no_plugin",
        pb::Holdup::NotYetDue => "not_yet_due",
        pb::Holdup::Queued => "queued",
        pb::Holdup::Dependencies => "dependencies",
        pb::Holdup::RateLimited => "rate_limited",
        pb::Holdup::ConcurrencyLimited => "concurrency_limited",
    };
    print_json(&json!({
        "status": status_name(explained.status()),
        "holdup": holdup,
        "explanation": explained.explanation,
        "until": rfc3339(explained.until.as_ref()),
        "ahead": explained.ahead,
        "paused_by": explained.paused_by,
        "waiting_for": explained.waiting_for,
        "rate_limited_host": explained.rate_limited_host,
        "concurrency_scope": explained.concurrency_scope,
    }));
}

/// The rate limits: the live holds and the declared limits, as two tables (times in
/// local time) or one JSON object.
pub fn print_limits(limits: &pb::ListLimitsResponse, json: bool) {
    if json {
        let holds: Vec<Value> = limits
            .holds
            .iter()
            .map(|hold| {
                json!({
                    "plugin": hold.plugin,
                    "host": hold.host,
                    "credential": hold.credential,
                    "until": rfc3339(hold.until.as_ref()),
                    "learned_at": rfc3339(hold.learned_at.as_ref()),
                    "node": hold.node,
                })
            })
            .collect();
        let declared: Vec<Value> = limits
            .declared
            .iter()
            .map(|limit| {
                json!({
                    "plugin": limit.plugin,
                    "host": limit.host,
                    "requests": limit.requests,
                    "per_ms": limit.per_ms,
                    "used": limit.used,
                    "share": limit.share,
                    "full_until": rfc3339(limit.full_until.as_ref()),
                })
            })
            .collect();
        print_json(&json!({"holds": holds, "declared": declared}));
        return;
    }
    if limits.holds.is_empty() {
        println!("no rate limit holds any plugin");
    } else {
        let rows: Vec<Vec<String>> = limits
            .holds
            .iter()
            .map(|hold| {
                vec![
                    hold.plugin.clone(),
                    hold.host.clone(),
                    Some(hold.credential.clone())
                        .filter(|credential| !credential.is_empty())
                        .unwrap_or_else(|| "-".to_owned()),
                    local(hold.until.as_ref()),
                    hold.node.clone().unwrap_or_else(|| "-".to_owned()),
                ]
            })
            .collect();
        println!(
            "{}",
            table(
                &["HELD", "HOST", "CREDENTIAL", "UNTIL", "LEARNED BY"],
                &rows
            )
        );
    }
    if limits.declared.is_empty() {
        return;
    }
    let rows: Vec<Vec<String>> = limits
        .declared
        .iter()
        .map(|limit| {
            vec![
                limit.plugin.clone(),
                limit.host.clone(),
                format!("{} per {} ms", limit.requests, limit.per_ms),
                format!("{} of {}", limit.used, limit.share),
                match &limit.full_until {
                    Some(until) => format!("full until {}", local(Some(until))),
                    None => "open".to_owned(),
                },
            ]
        })
        .collect();
    println!();
    println!(
        "{}",
        table(&["DECLARED", "HOST", "LIMIT", "USED", "STATE"], &rows)
    );
}

/// The pauses, as a table (target and since when, in local time) or a JSON array.
pub fn print_pauses(pauses: &[pb::Pause], json: bool) {
    if json {
        let pauses = pauses
            .iter()
            .map(|pause| json!({"target": pause.target, "paused_at": rfc3339(pause.paused_at.as_ref())}))
            .collect();
        print_json(&Value::Array(pauses));
        return;
    }
    if pauses.is_empty() {
        println!("nothing is paused");
        return;
    }
    let rows: Vec<Vec<String>> = pauses
        .iter()
        .map(|pause| vec![pause.target.clone(), local(pause.paused_at.as_ref())])
        .collect();
    println!("{}", table(&["PAUSED", "SINCE"], &rows));
}

/// Schedules as a table, last and next run in local time; a LAST ERROR column when a
/// schedule's latest instant submitted nothing.
pub fn print_schedule_table(schedules: &[pb::Schedule]) {
    let errors = schedules
        .iter()
        .any(|schedule| schedule.last_error.is_some());
    let rows: Vec<Vec<String>> = schedules
        .iter()
        .map(|schedule| {
            let mut row = vec![
                schedule.name.clone(),
                schedule.cron_expr.clone(),
                schedule.timezone.clone(),
                schedule.command.clone(),
                misfire_name(schedule.misfire()).to_owned(),
                local(schedule.last_run_at.as_ref()),
                if schedule.enabled {
                    local(schedule.next_run_at.as_ref())
                } else {
                    "(paused)".to_owned()
                },
            ];
            if errors {
                row.push(schedule.last_error.clone().unwrap_or_default());
            }
            row
        })
        .collect();
    let mut header = vec![
        "NAME", "CRON", "TZ", "COMMAND", "MISFIRE", "LAST RUN", "NEXT RUN",
    ];
    if errors {
        header.push("LAST ERROR");
    }
    println!("{}", table(&header, &rows));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_to_the_widest_cell() {
        let rows = vec![
            vec!["a".to_owned(), "echo.echo".to_owned(), "done".to_owned()],
            vec!["bbbb".to_owned(), "x".to_owned(), "".to_owned()],
        ];
        let text = table(&["ID", "COMMAND", "NOTE"], &rows);
        assert_eq!(
            text,
            "ID    COMMAND    NOTE\na     echo.echo  done\nbbbb  x"
        );
    }

    #[test]
    fn bodies_are_json_then_text_then_hex() {
        assert_eq!(body_json(br#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(body_json(b"plain text"), json!("plain text"));
        assert_eq!(body_json(&[0xff, 0x00]), json!({"hex": "ff00"}));
    }

    #[test]
    fn long_errors_are_shortened_to_their_first_line() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("first line\nsecond", 20), "first line…");
        assert_eq!(shorten("abcdefghijkl", 5), "abcd…");
    }

    #[test]
    fn schedule_json_names_the_table_columns() {
        let schedule = pb::Schedule {
            id: "id-1".into(),
            name: "nightly".into(),
            cron_expr: "0 3 * * *".into(),
            timezone: "Europe/Paris".into(),
            command: "echo.echo".into(),
            payload: br#"{"a":1}"#.to_vec(),
            misfire: pb::MisfirePolicy::RunOnce.into(),
            enabled: true,
            next_run_at: Some(Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            ..pb::Schedule::default()
        };
        let value = schedule_json(&schedule);
        assert_eq!(value["cron_expr"], "0 3 * * *");
        assert_eq!(value["misfire"], "run_once");
        assert_eq!(value["payload"], json!({"a": 1}));
        assert_eq!(value["max_retries"], Value::Null);
        assert_eq!(value["last_run_at"], Value::Null);
        assert_eq!(value["last_job_id"], Value::Null);
        assert_eq!(value["next_run_at"], "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn job_json_carries_what_a_script_needs() {
        let job = pb::Job {
            id: "id-1".into(),
            command: "echo.echo".into(),
            status: pb::JobStatus::Failed.into(),
            error: Some("boom".into()),
            error_kind: Some("plugin_error".into()),
            result: None,
            created_at: Some(Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            attempt: 2,
            ..pb::Job::default()
        };
        let value = job_json(&job);
        assert_eq!(value["status"], "failed");
        assert_eq!(value["error_kind"], "plugin_error");
        assert_eq!(value["attempt"], 2);
        assert_eq!(value["created_at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(value.get("result"), None);
        assert_eq!(value["snooze_count"], 0);
    }

    #[test]
    fn a_job_its_plugin_cancelled_ends_with_the_plugins_reason() {
        let cancelled = |kind: &str| pb::Job {
            id: "id-1".into(),
            status: pb::JobStatus::Cancelled.into(),
            error: Some("the issue is gone".into()),
            error_kind: Some(kind.into()),
            ..pb::Job::default()
        };
        assert_eq!(
            job_ending(&cancelled("cancelled_by_plugin"), pb::JobStatus::Cancelled),
            "job id-1 was cancelled by its plugin: the issue is gone"
        );
        assert_eq!(
            job_ending(&cancelled("cancelled"), pb::JobStatus::Cancelled),
            "job id-1 was cancelled"
        );
    }
}
