//! Logging: JSON lines to `daemon.log` for machines, readable lines on stderr for people.
//!
//! Each line of `daemon.log` is one JSON object: `timestamp` (RFC 3339 UTC), `level` in
//! lowercase (so `jq 'select(.level == "error")'` works), `target`, `message`, then the
//! event's own fields flat at the top level with their names unchanged (`job_id`,
//! `command`, `priority`, `worker_id`, `duration_ms`, `error`, `retry_count`,
//! `next_retry`, ...). tracing-subscriber's own JSON writer nests fields and capitalises
//! levels, hence this small formatter. Secrets are never passed to a log macro.

use std::fmt;
use std::io::IsTerminal;
use std::path::Path;

use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps the log writer flushing; drop it last, at exit.
pub struct LogGuard {
    _writer: WorkerGuard,
}

/// Installs the global subscriber: JSON lines appended to `data_dir/daemon.log` and
/// compact text on stderr. The filter comes from `HONEYDEW_LOG` (default `info`, with the
/// cron library's chatter held to warnings).
pub fn init(data_dir: &Path) -> std::io::Result<LogGuard> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.join("daemon.log"))?;
    let (writer, guard) = tracing_appender::non_blocking(file);
    let filter = || {
        EnvFilter::try_from_env("HONEYDEW_LOG")
            .unwrap_or_else(|_| EnvFilter::new("info,tokio_cron_scheduler=warn"))
    };
    let json = tracing_subscriber::fmt::layer()
        .event_format(JsonLines)
        .with_writer(writer)
        .with_filter(filter());
    let human = tracing_subscriber::fmt::layer()
        .compact()
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_filter(filter());
    tracing_subscriber::registry()
        .with(json)
        .with(human)
        .try_init()
        .map_err(std::io::Error::other)?;
    Ok(LogGuard { _writer: guard })
}

/// Formats an event as one flat JSON object per line.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writeln!(writer, "{}", Value::Object(event_to_json(event)))
    }
}

/// The JSON object for one event.
pub fn event_to_json(event: &Event<'_>) -> Map<String, Value> {
    let metadata = event.metadata();
    let mut fields = Map::new();
    fields.insert(
        "timestamp".into(),
        Utc::now()
            .to_rfc3339_opts(SecondsFormat::Millis, true)
            .into(),
    );
    fields.insert("level".into(), level_name(*metadata.level()).into());
    fields.insert("target".into(), metadata.target().into());
    event.record(&mut FieldVisitor(&mut fields));
    fields
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

struct FieldVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_flat_json_with_lowercase_levels_and_spec_fields() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLines)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(
                job_id = "abc",
                command = "echo.echo",
                error = "boom",
                retry_count = 2u32,
                "job failed"
            );
            tracing::info!(job_id = "abc", worker_id = 3usize, "job started");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["level"], "error");
        assert_eq!(lines[0]["message"], "job failed");
        assert_eq!(lines[0]["job_id"], "abc");
        assert_eq!(lines[0]["command"], "echo.echo");
        assert_eq!(lines[0]["error"], "boom");
        assert_eq!(lines[0]["retry_count"], 2);
        assert_eq!(lines[1]["level"], "info");
        assert_eq!(lines[1]["worker_id"], 3);
        assert!(lines[1]["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
