//! Prometheus metrics over the daemon's HTTP listener, on SQLite and on PostgreSQL: after
//! known work (echo jobs completed, a permanent failure, an allowed and a denied egress,
//! a refused plugin file) a scrape of `/metrics`, parsed as the text exposition, counts
//! exactly that. And who may scrape: a non-loopback address is refused at start unless
//! the operator opts in, and then every request needs the bearer token.

use std::collections::BTreeMap;

use honeydew::api::Token;
use honeydew::api::pb::JobStatus;
use honeydew_testkit::TestSchema;
use serde_json::json;

use crate::support::backend::on_both_backends;
use crate::support::listener::{Answer, exchange, http_address};
use crate::support::{Daemon, DataDir, HttpStub, daemon_command, finished, submit};

on_both_backends!(a_scrape_after_known_work_counts_what_was_done);

/// `GET path` on `address`, with `Authorization: Bearer token` when given.
async fn get(address: &str, path: &str, token: Option<&str>) -> Answer {
    let authorization = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\n{authorization}Connection: close\r\n\r\n"
    );
    exchange(address, &request).await
}

/// One sample of the text exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of a Prometheus / OpenMetrics text exposition (comments skipped).
fn parse_exposition(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(parse_sample)
        .collect()
}

/// `name{label="value",...} value [timestamp]`, with `\\`, `\"` and `\n` escapes in
/// label values.
fn parse_sample(line: &str) -> Sample {
    let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("{line:?}"));
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        loop {
            let Some((index, c)) = chars.next() else {
                panic!("unterminated labels in {line:?}");
            };
            match c {
                '}' => {
                    rest = &inner[index + 1..];
                    break;
                }
                ',' => {}
                '=' => {
                    assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line:?}");
                    let mut value = String::new();
                    loop {
                        match chars.next().map(|(_, c)| c) {
                            Some('"') => break,
                            Some('\\') => match chars.next().map(|(_, c)| c) {
                                Some('n') => value.push('\n'),
                                Some(other) => value.push(other),
                                None => panic!("{line:?}"),
                            },
                            Some(other) => value.push(other),
                            None => panic!("unterminated label value in {line:?}"),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                other => key.push(other),
            }
        }
    }
    let value = rest
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("no value in {line:?}"));
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        number => number
            .parse()
            .unwrap_or_else(|_| panic!("value {number:?} in {line:?}")),
    };
    Sample {
        name,
        labels,
        value,
    }
}

/// The value of the one sample named `name` whose labels include `labels`; 0 when there
/// is none (a counter never incremented is not shown).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<&Sample> = samples
        .iter()
        .filter(|sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(*value))
        })
        .collect();
    match matching[..] {
        [] => 0.0,
        [sample] => sample.value,
        _ => panic!("{name} {labels:?} matches several samples: {matching:?}"),
    }
}

/// The sum of every sample named `name`.
fn total(samples: &[Sample], name: &str) -> f64 {
    samples
        .iter()
        .filter(|sample| sample.name == name)
        .map(|sample| sample.value)
        .sum()
}

async fn a_scrape_after_known_work_counts_what_was_done(postgres: bool) {
    let api = HttpStub::start(|_, _| (200, "fetched".into())).await;
    let data = DataDir::with_plugins(&["echo", "permanent", "fetch"]);
    std::fs::write(data.path().join("plugins/broken.wasm"), b"not a component").unwrap();
    let schema = if postgres {
        Some(TestSchema::create().await)
    } else {
        None
    };
    let mut args = vec!["--workers", "2", "--listen-http", "127.0.0.1:0"];
    if let Some(schema) = &schema {
        args.extend(["--database-url", schema.url(), "--database-pool-size", "4"]);
    }
    let mut daemon = Daemon::start(&data, &args);
    let address = http_address(&mut daemon);
    let channel = daemon.connect().await;

    let mut echoes = Vec::new();
    for n in 0..5 {
        echoes.push(submit(&channel, "echo.echo", &format!(r#"{{"n": {n}}}"#)).await);
    }
    let failing = submit(&channel, "permanent.fail", "{}").await;
    let allowed = json!({"url": format!("{}/hello", api.base_url)}).to_string();
    let fetched = submit(&channel, "fetch.get", &allowed).await;
    let denied = json!({"url": "https://example.com/"}).to_string();
    let refused = submit(&channel, "fetch.get", &denied).await;
    for id in &echoes {
        assert_eq!(finished(&channel, id).await.status(), JobStatus::Completed);
    }
    assert_eq!(
        finished(&channel, &failing).await.status(),
        JobStatus::Failed
    );
    assert_eq!(
        finished(&channel, &fetched).await.status(),
        JobStatus::Completed
    );
    let refused = finished(&channel, &refused).await;
    assert_eq!(refused.status(), JobStatus::Failed);
    assert_eq!(refused.error_kind(), "egress_denied");

    let answer = get(&address, "/metrics", None).await;
    assert_eq!(
        answer.status, 200,
        "loopback needs no token: {}",
        answer.body
    );
    assert!(
        answer
            .header("content-type")
            .is_some_and(|kind| kind.starts_with("application/openmetrics-text")),
        "{:?}",
        answer.headers
    );
    assert!(answer.body.ends_with("# EOF\n"), "{}", answer.body);
    let samples = parse_exposition(&answer.body);
    let text = &answer.body;
    let check = |name: &str, labels: &[(&str, &str)], expected: f64| {
        assert_eq!(
            value(&samples, name, labels),
            expected,
            "{name} {labels:?} in\n{text}"
        );
    };

    check(
        "honeydew_jobs_submitted_total",
        &[("command", "echo.echo")],
        5.0,
    );
    check(
        "honeydew_jobs_submitted_total",
        &[("command", "permanent.fail")],
        1.0,
    );
    check(
        "honeydew_jobs_submitted_total",
        &[("command", "fetch.get")],
        2.0,
    );
    let attempts = "honeydew_job_attempts_total";
    let completed = [("outcome", "completed"), ("error_kind", "none")];
    check(
        attempts,
        &[&[("command", "echo.echo")][..], &completed].concat(),
        5.0,
    );
    check(
        attempts,
        &[&[("command", "fetch.get")][..], &completed].concat(),
        1.0,
    );
    check(
        attempts,
        &[
            ("command", "permanent.fail"),
            ("outcome", "failed"),
            ("error_kind", "plugin_error"),
        ],
        1.0,
    );
    check(
        attempts,
        &[
            ("command", "fetch.get"),
            ("outcome", "failed"),
            ("error_kind", "egress_denied"),
        ],
        1.0,
    );
    assert_eq!(total(&samples, attempts), 8.0, "{text}");

    // Read from the store at scrape time: every state of each command, zeros included.
    let jobs = "honeydew_jobs";
    check(
        jobs,
        &[("command", "echo.echo"), ("state", "completed")],
        5.0,
    );
    check(jobs, &[("command", "echo.echo"), ("state", "pending")], 0.0);
    check(jobs, &[("command", "echo.echo"), ("state", "running")], 0.0);
    check(
        jobs,
        &[("command", "permanent.fail"), ("state", "failed")],
        1.0,
    );
    check(
        jobs,
        &[("command", "fetch.get"), ("state", "completed")],
        1.0,
    );
    check(jobs, &[("command", "fetch.get"), ("state", "failed")], 1.0);
    let states = samples
        .iter()
        .filter(|sample| sample.name == jobs && sample.labels["command"] == "echo.echo")
        .count();
    assert_eq!(states, 5, "all five states of echo.echo: {text}");

    let wait = "honeydew_job_queue_wait_seconds_count";
    check(wait, &[("command", "echo.echo")], 5.0);
    assert_eq!(total(&samples, wait), 8.0, "{text}");
    let run = "honeydew_job_attempt_duration_seconds_count";
    assert_eq!(total(&samples, run), 8.0, "{text}");
    check(
        "honeydew_job_attempt_duration_seconds_bucket",
        &[("command", "echo.echo"), ("le", "+Inf")],
        5.0,
    );
    let fuel = "honeydew_job_attempt_fuel_used_count";
    check(fuel, &[("command", "echo.echo")], 5.0);
    assert!(
        value(
            &samples,
            "honeydew_job_attempt_fuel_used_sum",
            &[("command", "echo.echo")]
        ) > 0.0,
        "an echo burns some fuel: {text}"
    );

    check(
        "honeydew_egress_requests_total",
        &[("plugin", "fetch"), ("host", "http://127.0.0.1:*")],
        1.0,
    );
    check(
        "honeydew_egress_denied_total",
        &[("plugin", "fetch"), ("host", "example.com")],
        1.0,
    );
    assert_eq!(
        total(&samples, "honeydew_egress_denied_total"),
        1.0,
        "{text}"
    );

    for plugin in ["echo", "permanent", "fetch"] {
        check("honeydew_plugin_loads_total", &[("plugin", plugin)], 1.0);
    }
    check(
        "honeydew_plugin_refusals_total",
        &[("plugin", "broken"), ("reason", "bad_component")],
        1.0,
    );

    let writes = "honeydew_store_write_duration_seconds_count";
    check(writes, &[("operation", "submit")], 8.0);
    check(writes, &[("operation", "finish")], 8.0);
    assert!(
        value(&samples, writes, &[("operation", "claim")]) >= 8.0,
        "{text}"
    );
    check("honeydew_store_submit_jobs_count", &[], 8.0);
    check("honeydew_store_submit_jobs_sum", &[], 8.0);
    assert!(
        value(&samples, "honeydew_store_commits_total", &[]) >= 1.0,
        "{text}"
    );
    assert!(
        value(&samples, "honeydew_store_committed_writes_total", &[])
            >= value(&samples, "honeydew_store_commits_total", &[]),
        "{text}"
    );

    check("honeydew_workers", &[], 2.0);
    check("honeydew_workers_busy", &[], 0.0);
    let job_ids = [&echoes[..], &[failing, fetched]].concat();
    for id in job_ids {
        assert!(!text.contains(&id), "a job id is never a label: {id}");
    }
    drop(schema);
}

#[test]
fn a_non_loopback_http_address_is_refused_without_the_opt_in() {
    let data = DataDir::with_plugins(&[]);
    let output = daemon_command(data.path(), &["--listen-http", "0.0.0.0:0"])
        .output()
        .expect("run honeydewd");
    assert_eq!(output.status.code(), Some(2), "a configuration error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("--listen-http-public"),
        "{stderr}"
    );
    assert!(
        !data.socket().exists(),
        "nothing was served: the daemon did not start"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_public_http_listener_requires_the_token_on_every_request() {
    let data = DataDir::with_plugins(&["echo"]);
    let mut daemon = Daemon::start(
        &data,
        &["--listen-http", "0.0.0.0:0", "--listen-http-public"],
    );
    let bound = http_address(&mut daemon);
    let port = bound.rsplit_once(':').expect("host:port").1;
    let address = format!("127.0.0.1:{port}");
    let token = Token::read(data.path())
        .expect("read the token")
        .expect("a token was generated");
    let token_text = std::fs::read_to_string(Token::path_in(data.path())).unwrap();
    let token_text = token_text.trim();
    assert!(token.matches(token_text.as_bytes()));

    for path in ["/metrics", "/elsewhere"] {
        let refused = get(&address, path, None).await;
        assert_eq!(refused.status, 401, "{path} without the token");
        assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
        assert!(refused.body.contains("token"), "{}", refused.body);
        assert!(
            !refused.body.contains(token_text),
            "the refusal never shows the token"
        );
    }
    let wrong = "0".repeat(token_text.len());
    assert_eq!(get(&address, "/metrics", Some(&wrong)).await.status, 401);
    let scraped = get(&address, "/metrics", Some(token_text)).await;
    assert_eq!(scraped.status, 200, "{}", scraped.body);
    let samples = parse_exposition(&scraped.body);
    assert_eq!(
        value(
            &samples,
            "honeydew_plugin_loads_total",
            &[("plugin", "echo")]
        ),
        1.0
    );
}

#[test]
fn the_exposition_parser_reads_labels_escapes_and_special_values() {
    let samples = parse_exposition(
        "# TYPE a counter\na_total{x=\"1\",y=\"q\\\"uo\\\\te\\n\"} 3\nb 2.5\nc_bucket{le=\"+Inf\"} +Inf\n# EOF\n",
    );
    assert_eq!(samples.len(), 3);
    assert_eq!(samples[0].name, "a_total");
    assert_eq!(samples[0].labels["y"], "q\"uo\\te\n");
    assert_eq!(value(&samples, "a_total", &[("x", "1")]), 3.0);
    assert_eq!(value(&samples, "b", &[]), 2.5);
    assert_eq!(
        value(&samples, "c_bucket", &[("le", "+Inf")]),
        f64::INFINITY
    );
    assert_eq!(value(&samples, "missing", &[]), 0.0);
}
