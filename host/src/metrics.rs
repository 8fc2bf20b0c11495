//! The daemon's Prometheus metrics: what is counted, under which names and labels, and
//! the text a scrape of `/metrics` returns ([`Metrics::render`]). Only this module sees
//! `prometheus-client`; the listener that serves the text is `http`'s.
//!
//! The queue manager, the worker pool's outcomes and the plugin runtime report here
//! through a few plain calls (`job_submitted`, `attempt_started`, `attempt_finished`,
//! `store_write`, `plugin_loaded`, `plugin_refused`, and [`EgressMetrics`] per plugin),
//! each an atomic add or a histogram observation, with the label sets of egress made
//! once per loaded plugin. What the store knows (jobs by command and state, its group
//! commits) and the busy workers are read at scrape time, so they cost nothing between
//! scrapes. Names follow Prometheus conventions: the `honeydew_` prefix, `_total` on
//! counters, base units (`_seconds`). Label values are bounded: commands and plugins
//! (a submit names a command a loaded plugin serves), fixed words for outcomes, error
//! kinds and refusal reasons, the manifest's own grants for egress, and for values a
//! plugin or a file name chooses (a denied host, a refused plugin's file) at most
//! [`MAX_LABEL_VALUES`] distinct ones per family and plugin, then `other`. Never a job id.
//! Nothing here touches the store's SQL, wasmtime or tonic.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::job::JobStatus;
use crate::store::{CommitStats, Outcome, Store, StoreError};

/// The content type of [`Metrics::render`]'s text: OpenMetrics 1.0, which Prometheus
/// asks for first.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The most distinct values one open-ended label (a denied host, a refused plugin's
/// file name) takes per family and plugin; later values are counted as `other`.
pub const MAX_LABEL_VALUES: usize = 32;

/// The longest open-ended label value kept as it is; a longer one is `other`.
const MAX_LABEL_BYTES: usize = 100;

/// The label value that stands for values past the bounds.
const OTHER: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    command: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobStateLabels {
    command: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    command: String,
    outcome: &'static str,
    error_kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EgressLabels {
    plugin: String,
    host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    plugin: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

/// A store write the manager times (the `operation` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreWrite {
    /// One job inserted.
    Submit,
    /// One job inserted under a unique key.
    SubmitUnique,
    /// A bulk submit, in one transaction.
    SubmitBatch,
    /// A pending job moved to running.
    Claim,
    /// An attempt's outcome.
    Finish,
}

impl StoreWrite {
    fn as_str(self) -> &'static str {
        match self {
            StoreWrite::Submit => "submit",
            StoreWrite::SubmitUnique => "submit_unique",
            StoreWrite::SubmitBatch => "submit_batch",
            StoreWrite::Claim => "claim",
            StoreWrite::Finish => "finish",
        }
    }
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    // 1 ms to about 70 minutes.
    Histogram::new(exponential_buckets(0.001, 4.0, 12))
}

fn store_seconds_histogram() -> Histogram {
    // 0.1 ms to about 26 s.
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

fn fuel_histogram() -> Histogram {
    // 10 thousand to 100 billion units (the default budget is 2 billion).
    Histogram::new(exponential_buckets(10_000.0, 10.0, 8))
}

/// What the daemon counts; one per daemon, shared by `Arc`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    jobs: Family<JobStateLabels, Gauge>,
    submitted: Family<CommandLabels, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    queue_wait: HistogramFamily<CommandLabels>,
    attempt_duration: HistogramFamily<CommandLabels>,
    attempt_fuel: HistogramFamily<CommandLabels>,
    egress_requests: Family<EgressLabels, Counter>,
    egress_denied: Family<EgressLabels, Counter>,
    plugin_loads: Family<PluginLabels, Counter>,
    plugin_refusals: Family<RefusalLabels, Counter>,
    refused_plugins: BoundedLabel,
    store_writes: HistogramFamily<OperationLabels>,
    submit_jobs: Histogram,
    store_commits: Counter,
    store_committed_writes: Counter,
    workers_busy: Gauge,
    /// Held by one scrape at a time: the job gauges are rewritten at each, and the
    /// commit counters advance by what changed since the last.
    scrape: tokio::sync::Mutex<CommitStats>,
}

impl Metrics {
    /// Every metric, registered and at zero; `workers` is the configured pool size.
    pub fn new(workers: usize) -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("honeydew");
        let jobs = Family::<JobStateLabels, Gauge>::default();
        registry.register(
            "jobs",
            "Jobs in the store by command and state, read at scrape time",
            jobs.clone(),
        );
        let submitted = Family::<CommandLabels, Counter>::default();
        registry.register(
            "jobs_submitted",
            "Jobs stored by submits and schedules",
            submitted.clone(),
        );
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "job_attempts",
            "Attempts ended, by outcome (completed, failed, retrying, cancelled, interrupted, \
             parked) and error kind (none when it completed)",
            attempts.clone(),
        );
        let queue_wait: HistogramFamily<CommandLabels> =
            Family::new_with_constructor(seconds_histogram);
        registry.register_with_unit(
            "job_queue_wait",
            "Time from when a job became eligible (submitted, or due again after a retry) \
             to the start of its attempt",
            Unit::Seconds,
            queue_wait.clone(),
        );
        let attempt_duration: HistogramFamily<CommandLabels> =
            Family::new_with_constructor(seconds_histogram);
        registry.register_with_unit(
            "job_attempt_duration",
            "Run time of one attempt",
            Unit::Seconds,
            attempt_duration.clone(),
        );
        let attempt_fuel: HistogramFamily<CommandLabels> =
            Family::new_with_constructor(fuel_histogram);
        registry.register(
            "job_attempt_fuel_used",
            "Fuel (about one unit per WebAssembly instruction) one attempt burned",
            attempt_fuel.clone(),
        );
        let egress_requests = Family::<EgressLabels, Counter>::default();
        registry.register(
            "egress_requests",
            "Outgoing HTTP requests sent for plugins (each redirect hop is one), by plugin \
             and the allowed_hosts entry that granted it",
            egress_requests.clone(),
        );
        let egress_denied = Family::<EgressLabels, Counter>::default();
        registry.register(
            "egress_denied",
            "Outgoing HTTP requests refused because no allowed_hosts entry grants them, by \
             plugin and host (at most 32 hosts per plugin, then other)",
            egress_denied.clone(),
        );
        let plugin_loads = Family::<PluginLabels, Counter>::default();
        registry.register(
            "plugin_loads",
            "Plugins loaded or replaced",
            plugin_loads.clone(),
        );
        let plugin_refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "plugin_refusals",
            "Plugin files refused, by reason (invalid_name, unreadable, invalid_manifest, \
             missing_secret, bad_component, describe_failed, bad_describe)",
            plugin_refusals.clone(),
        );
        let store_writes: HistogramFamily<OperationLabels> =
            Family::new_with_constructor(store_seconds_histogram);
        registry.register_with_unit(
            "store_write_duration",
            "Time for one store write to be acknowledged durable (waiting for its group \
             commit included), by operation",
            Unit::Seconds,
            store_writes.clone(),
        );
        let submit_jobs = Histogram::new(exponential_buckets(1.0, 4.0, 8));
        registry.register(
            "store_submit_jobs",
            "Jobs carried by one submit write (1, or a bulk submit's size)",
            submit_jobs.clone(),
        );
        let store_commits = Counter::default();
        registry.register(
            "store_commits",
            "Transactions the store's group commit committed",
            store_commits.clone(),
        );
        let store_committed_writes = Counter::default();
        registry.register(
            "store_committed_writes",
            "Writes those commits carried (divided by commits: the mean batch size)",
            store_committed_writes.clone(),
        );
        let workers_busy = Gauge::default();
        registry.register(
            "workers_busy",
            "Workers running a job now",
            workers_busy.clone(),
        );
        let configured: Gauge = Gauge::default();
        configured.set(i64::try_from(workers).unwrap_or(i64::MAX));
        registry.register("workers", "Workers configured", configured);
        Arc::new(Metrics {
            registry,
            jobs,
            submitted,
            attempts,
            queue_wait,
            attempt_duration,
            attempt_fuel,
            egress_requests,
            egress_denied,
            plugin_loads,
            plugin_refusals,
            refused_plugins: BoundedLabel::default(),
            store_writes,
            submit_jobs,
            store_commits,
            store_committed_writes,
            workers_busy,
            scrape: tokio::sync::Mutex::new(CommitStats::default()),
        })
    }

    /// A job of `command` was stored.
    pub fn job_submitted(&self, command: &str) {
        self.submitted
            .get_or_create(&CommandLabels {
                command: command.to_owned(),
            })
            .inc();
    }

    /// An attempt of a job of `command`, eligible since `eligible_at`, started `now`.
    pub fn attempt_started(&self, command: &str, eligible_at: DateTime<Utc>, now: DateTime<Utc>) {
        let waited = (now - eligible_at).to_std().unwrap_or(Duration::ZERO);
        self.queue_wait
            .get_or_create(&CommandLabels {
                command: command.to_owned(),
            })
            .observe(waited.as_secs_f64());
    }

    /// An attempt of a job of `command` ended with `outcome` (recorded in the store),
    /// after running `duration` and burning `fuel_used`.
    pub fn attempt_finished(
        &self,
        command: &str,
        outcome: &Outcome,
        duration: Duration,
        fuel_used: Option<u64>,
    ) {
        let error_kind = outcome.error().map_or("none", |(kind, _)| kind.as_str());
        self.attempts
            .get_or_create(&AttemptLabels {
                command: command.to_owned(),
                outcome: outcome.attempt_outcome(),
                error_kind,
            })
            .inc();
        let labels = CommandLabels {
            command: command.to_owned(),
        };
        self.attempt_duration
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
        if let Some(fuel_used) = fuel_used {
            self.attempt_fuel
                .get_or_create(&labels)
                .observe(fuel_used as f64);
        }
    }

    /// A store write of kind `operation` was acknowledged after `elapsed`.
    pub fn store_write(&self, operation: StoreWrite, elapsed: Duration) {
        self.store_writes
            .get_or_create(&OperationLabels {
                operation: operation.as_str(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// One submit write carried `jobs` jobs.
    pub fn submit_written(&self, jobs: usize) {
        self.submit_jobs.observe(jobs as f64);
    }

    /// Plugin `plugin` was loaded or replaced.
    pub fn plugin_loaded(&self, plugin: &str) {
        self.plugin_loads
            .get_or_create(&PluginLabels {
                plugin: plugin.to_owned(),
            })
            .inc();
    }

    /// The plugin file `stem` was refused for `reason` (one of a fixed few words).
    pub fn plugin_refused(&self, stem: &str, reason: &'static str) {
        self.plugin_refusals
            .get_or_create(&RefusalLabels {
                plugin: self.refused_plugins.value(stem),
                reason,
            })
            .inc();
    }

    /// The egress counters of plugin `plugin`, whose manifest grants `granted` (each
    /// entry as written): made once per loaded plugin, so a request counts with one
    /// atomic add.
    pub fn egress(self: &Arc<Self>, plugin: &str, granted: &[String]) -> EgressMetrics {
        let requests = granted
            .iter()
            .map(|host| {
                self.egress_requests.get_or_create_owned(&EgressLabels {
                    plugin: plugin.to_owned(),
                    host: host.clone(),
                })
            })
            .collect();
        EgressMetrics {
            metrics: Arc::clone(self),
            plugin: plugin.to_owned(),
            requests,
            denied_hosts: BoundedLabel::default(),
        }
    }

    /// The exposition: every metric, with the jobs by command and state and the group
    /// commit read from `store` now, and `busy_workers` as the busy gauge.
    pub async fn render(&self, store: &Store, busy_workers: usize) -> Result<String, StoreError> {
        let counts = store.count_jobs().await?;
        let stats = store.commit_stats();
        let mut last = self.scrape.lock().await;
        // Every state of every command that has a job, so a state that empties shows 0
        // rather than vanishing.
        self.jobs.clear();
        let mut previous: Option<&str> = None;
        for count in &counts {
            if previous != Some(count.command.as_str()) {
                for status in JobStatus::ALL {
                    self.jobs
                        .get_or_create(&JobStateLabels {
                            command: count.command.clone(),
                            state: status.as_str(),
                        })
                        .set(0);
                }
                previous = Some(&count.command);
            }
            self.jobs
                .get_or_create(&JobStateLabels {
                    command: count.command.clone(),
                    state: count.status.as_str(),
                })
                .set(i64::try_from(count.count).unwrap_or(i64::MAX));
        }
        self.store_commits
            .inc_by(stats.commits.saturating_sub(last.commits));
        self.store_committed_writes
            .inc_by(stats.writes.saturating_sub(last.writes));
        *last = stats;
        self.workers_busy
            .set(i64::try_from(busy_workers).unwrap_or(i64::MAX));
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String does not fail");
        Ok(text)
    }
}

/// One plugin's egress counters (see [`Metrics::egress`]).
#[derive(Debug)]
pub struct EgressMetrics {
    metrics: Arc<Metrics>,
    plugin: String,
    /// One per `allowed_hosts` entry, in the manifest's order.
    requests: Vec<Counter>,
    denied_hosts: BoundedLabel,
}

impl EgressMetrics {
    /// A request granted by the manifest's `allowed_hosts` entry number `entry` went out.
    pub fn request(&self, entry: usize) {
        if let Some(counter) = self.requests.get(entry) {
            counter.inc();
        }
    }

    /// A request to `host` (as the guest or a redirect named it) was refused.
    pub fn denied(&self, host: &str) {
        self.metrics
            .egress_denied
            .get_or_create(&EgressLabels {
                plugin: self.plugin.clone(),
                host: self.denied_hosts.value(host),
            })
            .inc();
    }
}

/// An open-ended label's values so far: a value is kept while fewer than
/// [`MAX_LABEL_VALUES`] are, when it is short and plain; everything else is `other`.
#[derive(Debug, Default)]
struct BoundedLabel {
    seen: Mutex<HashSet<String>>,
}

impl BoundedLabel {
    fn value(&self, value: &str) -> String {
        let plain = !value.is_empty()
            && value.len() <= MAX_LABEL_BYTES
            && value
                .bytes()
                .all(|byte| byte.is_ascii_graphic() && byte != b'"' && byte != b'\\');
        if !plain {
            return OTHER.to_owned();
        }
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if seen.contains(value) {
            return value.to_owned();
        }
        if seen.len() < MAX_LABEL_VALUES {
            seen.insert(value.to_owned());
            return value.to_owned();
        }
        OTHER.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_ended_label_keeps_its_first_values_then_says_other() {
        let label = BoundedLabel::default();
        for n in 0..MAX_LABEL_VALUES {
            assert_eq!(
                label.value(&format!("host{n}.example")),
                format!("host{n}.example")
            );
        }
        assert_eq!(label.value("one-too-many.example"), OTHER);
        assert_eq!(
            label.value("host0.example"),
            "host0.example",
            "a known value stays"
        );
        assert_eq!(label.value(&"a".repeat(MAX_LABEL_BYTES + 1)), OTHER);
        assert_eq!(label.value("with \"quotes\""), OTHER);
        assert_eq!(label.value(""), OTHER);
    }

    /// The manager's submits, claims and outcomes, and the store's counts, as a scrape
    /// shows them.
    #[tokio::test]
    async fn a_render_shows_the_managers_work_and_the_stores_counts() {
        use crate::queue::{AnyCommand, Manager, ManagerConfig, SubmitRequest};
        use crate::store::{AttemptReport, SqliteConfig, SqliteStore};
        use tokio_util::sync::CancellationToken;

        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(SqliteConfig::new(dir.path().join("db")))
            .map(Store::new)
            .unwrap();
        let metrics = Metrics::new(4);
        let manager = Arc::new(
            Manager::new(
                store.clone(),
                Arc::new(AnyCommand),
                ManagerConfig::default(),
            )
            .with_metrics(Arc::clone(&metrics)),
        );
        for _ in 0..3 {
            let request = SubmitRequest {
                command: "echo.echo".into(),
                ..SubmitRequest::default()
            };
            manager.submit(request).await.unwrap();
        }
        let queued = manager.next_queued().await;
        let (claimed, _token) = manager.claim(queued, 1).await.unwrap().unwrap();
        let report = AttemptReport {
            finished_at: Utc::now(),
            duration_ms: 250,
            fuel_used: Some(50_000),
            plugin: None,
        };
        let outcome = Outcome::Completed(b"{}".to_vec());
        manager
            .finish(&claimed, outcome, report, &CancellationToken::new())
            .await
            .unwrap();

        let text = metrics
            .render(&store, manager.running_jobs())
            .await
            .unwrap();
        for line in [
            "honeydew_jobs{command=\"echo.echo\",state=\"pending\"} 2",
            "honeydew_jobs{command=\"echo.echo\",state=\"running\"} 0",
            "honeydew_jobs{command=\"echo.echo\",state=\"completed\"} 1",
            "honeydew_jobs_submitted_total{command=\"echo.echo\"} 3",
            "honeydew_job_attempts_total{command=\"echo.echo\",outcome=\"completed\",error_kind=\"none\"} 1",
            "honeydew_job_attempt_duration_seconds_sum{command=\"echo.echo\"} 0.25",
            "honeydew_job_attempt_fuel_used_sum{command=\"echo.echo\"} 50000.0",
            "honeydew_job_queue_wait_seconds_count{command=\"echo.echo\"} 1",
            "honeydew_store_write_duration_seconds_count{operation=\"submit\"} 3",
            "honeydew_store_write_duration_seconds_count{operation=\"claim\"} 1",
            "honeydew_store_write_duration_seconds_count{operation=\"finish\"} 1",
            "honeydew_store_submit_jobs_count 3",
            "honeydew_workers 4",
            "honeydew_workers_busy 0",
        ] {
            assert!(text.lines().any(|got| got == line), "{line} in\n{text}");
        }
        let commits = text
            .lines()
            .find_map(|line| line.strip_prefix("honeydew_store_commits_total "))
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or(0);
        assert!(commits >= 1, "{text}");
        let again = metrics.render(&store, 0).await.unwrap();
        let commits_again = again
            .lines()
            .find_map(|line| line.strip_prefix("honeydew_store_commits_total "))
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or(0);
        assert_eq!(commits_again, commits, "a second scrape adds nothing new");
    }

    #[test]
    fn egress_counts_by_grant_and_bounds_denied_hosts() {
        let metrics = Metrics::new(2);
        let egress = metrics.egress("fetch", &["http://127.0.0.1:*".to_owned()]);
        egress.request(0);
        egress.request(0);
        egress.request(7);
        for n in 0..100 {
            egress.denied(&format!("evil{n}.example"));
        }
        let mut text = String::new();
        encode(&mut text, &metrics.registry).unwrap();
        assert!(
            text.contains(
                "honeydew_egress_requests_total{plugin=\"fetch\",host=\"http://127.0.0.1:*\"} 2"
            ),
            "{text}"
        );
        let denied: Vec<&str> = text
            .lines()
            .filter(|line| line.starts_with("honeydew_egress_denied_total{"))
            .collect();
        assert_eq!(denied.len(), MAX_LABEL_VALUES + 1, "{denied:?}");
        let other = format!(
            "honeydew_egress_denied_total{{plugin=\"fetch\",host=\"other\"}} {}",
            100 - MAX_LABEL_VALUES
        );
        assert!(denied.contains(&other.as_str()), "{denied:?}");
    }
}
