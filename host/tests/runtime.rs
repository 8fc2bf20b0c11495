//! The plugin runtime with real components (built by `scripts/build-plugins.sh`) and
//! real limits. Contents:
//!
//! - `fixtures`: every fixture plugin through `Runtime::execute`, one outcome each;
//! - `hostile`: guests that try to make the host hold too much (text, stderr, resources);
//! - `egress`: allowed, denied and absent network, auth headers, the body cap, and
//!   deadlines that pass while a request is unfinished;
//! - `loading`: bad plugin files skipped with a reason, the catalog, the compile cache;
//! - `reload`: add, replace under a running job, remove, garbage, without restart;
//! - `cancel`: cancelling a running infinite loop;
//! - `contract`: the WIT versions: a component built against the frozen 0.1.0
//!   contract loads and runs, and what components of each version import;
//! - `job_requests`: what a plugin asks of its job (`honeydew:plugin/job`): the last
//!   request stands, bounded, and only when `run` returned.
//!
//! Waiting is on runtime events or on the fake server, never on sleeps.

mod runtime_support;

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use honeydew::job::ErrorKind;
use honeydew::output::OutputSink;
use honeydew::retry::Failure;
use honeydew::worker::Execution;
use runtime_support::*;

/// The failure of an execution; panics when it succeeded.
fn failure(execution: &Execution) -> &Failure {
    match &execution.result {
        Err(failure) => failure,
        Ok(bytes) => panic!(
            "expected a failure, got {:?}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

/// Checks that `execution` failed permanently with `kind` and a message containing
/// every one of `parts`.
fn check_permanent(execution: &Execution, kind: ErrorKind, parts: &[&str]) {
    let failure = failure(execution);
    assert!(
        matches!(failure, Failure::Permanent { .. }),
        "expected a permanent failure, got {failure:?}"
    );
    check_failure(failure, kind, parts);
}

fn check_failure(failure: &Failure, kind: ErrorKind, parts: &[&str]) {
    assert_eq!(failure.kind(), kind, "{failure:?}");
    for part in parts {
        assert!(
            failure.message().contains(part),
            "message {:?} lacks {part:?}",
            failure.message()
        );
    }
}

/// Polls `future` once.
async fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|context| Poll::Ready(Pin::new(&mut *future).poll(context))).await
}

mod fixtures {
    use super::*;
    use honeydew::job::PluginRef;
    use honeydew::runtime::Limits;
    use serde_json::{Value, json};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn echo_returns_the_payload_and_records_the_plugin_and_fuel() {
        let dir = PluginDir::with(&[ECHO]);
        let runtime = dir.start().await;
        let execution = run(&runtime, "echo.echo", r#"{"hello":"world"}"#).await;
        assert_eq!(ok_text(&execution), r#"{"hello":"world"}"#);
        let summary = &runtime.plugins()[0];
        assert_eq!(
            execution.plugin,
            Some(PluginRef {
                name: "echo".into(),
                version: summary.version.clone(),
                sha256: fixture_sha256(ECHO),
            })
        );
        assert!(!summary.version.is_empty());
        let fuel = execution.fuel_used.expect("fuel is measured");
        assert!(
            fuel > 0 && fuel < Limits::default().fuel / 1000,
            "fuel {fuel}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn echo_reads_its_manifest_config() {
        let dir = PluginDir::with(&[ECHO]);
        dir.write_manifest(ECHO, "[config]\ngreeting = \"bonjour\"\n");
        let runtime = dir.start().await;
        let greeting = run(&runtime, "echo.config", r#"{"key":"greeting"}"#).await;
        assert_eq!(ok_text(&greeting), r#""bonjour""#);
        let missing = run(&runtime, "echo.config", r#"{"key":"absent"}"#).await;
        assert_eq!(ok_text(&missing), "null");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_permanent_plugin_error_fails_for_good_with_its_message() {
        let dir = PluginDir::with(&[PERMANENT]);
        let runtime = dir.start().await;
        let execution = run(
            &runtime,
            "permanent.fail",
            r#"{"message":"payload lacks a repo"}"#,
        )
        .await;
        assert_eq!(
            execution.result,
            Err(Failure::permanent(
                ErrorKind::PluginError,
                "payload lacks a repo"
            ))
        );
        assert!(execution.fuel_used.is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retriable_plugin_error_carries_retry_after() {
        let dir = PluginDir::with(&[FLAKY]);
        let runtime = dir.start().await;
        let execution = run(
            &runtime,
            "flaky.retriable_after",
            r#"{"retry_after_ms":1500}"#,
        )
        .await;
        assert_eq!(
            execution.result,
            Err(Failure::Retriable {
                kind: ErrorKind::PluginError,
                message: "retry requested".into(),
                after: Some(Duration::from_millis(1500)),
            })
        );
        let without = run(&runtime, "flaky.retriable_after", "{}").await;
        assert!(matches!(
            failure(&without),
            Failure::Retriable { after: None, .. }
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flaky_fails_twice_then_succeeds() {
        let server = http::FakeServer::start().await;
        let dir = PluginDir::with(&[FLAKY]);
        dir.write_manifest(
            FLAKY,
            &format!("[network]\nallowed_hosts = [\"{}\"]\n", server.origin()),
        );
        let runtime = dir.start().await;
        let payload = json!({"counter_url": server.url("/count"), "failures": 2}).to_string();
        for attempt in 1..=2 {
            let execution = run(&runtime, "flaky.fail_then_succeed", payload.clone()).await;
            let failure = failure(&execution);
            assert!(matches!(failure, Failure::Retriable { .. }), "{failure:?}");
            check_failure(
                failure,
                ErrorKind::PluginError,
                &[&format!("planned failure {attempt} of 2")],
            );
        }
        let execution = run(&runtime, "flaky.fail_then_succeed", payload).await;
        assert_eq!(ok_text(&execution), r#"{"attempts":3}"#);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_loop_with_little_fuel_is_fuel_exhausted() {
        let dir = PluginDir::with(&[SPIN]);
        dir.write_manifest(SPIN, "[limits]\nfuel = 5_000_000\n");
        let runtime = dir.start().await;
        let execution = run(&runtime, "spin.loop", "").await;
        check_permanent(
            &execution,
            ErrorKind::FuelExhausted,
            &["\"spin\"", "budget 5000000"],
        );
        assert_eq!(execution.fuel_used, Some(5_000_000));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_loop_with_ample_fuel_times_out_at_the_deadline() {
        let dir = PluginDir::with(&[SPIN]);
        dir.write_manifest(
            SPIN,
            "[limits]\nfuel = 1_000_000_000_000\ntimeout_ms = 300\n",
        );
        let runtime = dir.start().await;
        let started = Instant::now();
        let execution = run(&runtime, "spin.loop", "").await;
        let elapsed = started.elapsed();
        // Permanent: the next attempt would compute just as long (and could repeat
        // work that is not idempotent).
        check_permanent(
            &execution,
            ErrorKind::Timeout,
            &["did not finish within 300ms"],
        );
        assert!(!failure(&execution).message().contains("waiting on"));
        assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(2300), "{elapsed:?}");
        assert!(
            execution.fuel_used.unwrap() > 1_000_000,
            "{:?}",
            execution.fuel_used
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_guest_blocked_waiting_times_out_at_the_deadline() {
        let dir = PluginDir::with(&[SPIN]);
        dir.write_manifest(SPIN, "[limits]\ntimeout_ms = 300\n");
        let runtime = dir.start().await;
        let started = Instant::now();
        let execution = run(&runtime, "spin.sleep", r#"{"ms":60000}"#).await;
        let elapsed = started.elapsed();
        // A wait that is not HTTP is the guest's own doing: permanent.
        check_permanent(&execution, ErrorKind::Timeout, &["within 300ms"]);
        assert!(elapsed < Duration::from_millis(2300), "{elapsed:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_memory_hog_hits_the_memory_limit() {
        let dir = PluginDir::with(&[HOG]);
        dir.write_manifest(HOG, "[limits]\nmemory_mib = 16\n");
        let runtime = dir.start().await;
        let execution = run(&runtime, "hog.grow", "").await;
        check_permanent(&execution, ErrorKind::MemoryLimit, &["\"hog\"", "16 MiB"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn panics_and_bad_arithmetic_are_traps_with_the_message() {
        let dir = PluginDir::with(&[TRAP]);
        let runtime = dir.start().await;
        let panic = run(&runtime, "trap.panic", "").await;
        check_permanent(
            &panic,
            ErrorKind::Trap,
            &[
                "\"trap\" trapped",
                "unreachable",
                "trap fixture: deliberate panic",
            ],
        );
        let divide = run(&runtime, "trap.divide", "").await;
        check_permanent(&divide, ErrorKind::Trap, &["unreachable", "divide by zero"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn endless_recursion_is_a_stack_overflow_trap() {
        let dir = PluginDir::with(&[TRAP]);
        let runtime = dir.start().await;
        let overflow = run(&runtime, "trap.overflow", "").await;
        check_permanent(
            &overflow,
            ErrorKind::Trap,
            &["\"trap\" trapped", "call stack exhausted"],
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn results_over_the_cap_fail_for_good() {
        let dir = PluginDir::with(&[HUGE]);
        let mut config = dir.config();
        config.max_result_bytes = 1000;
        let runtime = honeydew::runtime::Runtime::start(config).await.unwrap();
        let at_cap = run(&runtime, "huge.output", r#"{"bytes":1000}"#).await;
        assert_eq!(at_cap.result.as_ref().map(Vec::len), Ok(1000));
        let over = run(&runtime, "huge.output", r#"{"bytes":1001}"#).await;
        check_permanent(
            &over,
            ErrorKind::PluginError,
            &["returned 1001 bytes, over the 1000-byte result limit"],
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snooping_guest_sees_no_files_and_no_environment() {
        // The daemon's own environment has something a leak would show.
        assert!(std::env::var_os("PATH").is_some());
        let dir = PluginDir::with(&[SNOOP]);
        let runtime = dir.start().await;
        let files: Value =
            serde_json::from_str(&ok_text(&run(&runtime, "snoop.files", "").await)).unwrap();
        for probe in ["read_dir", "read"] {
            let outcome = files[probe].as_str().unwrap();
            assert!(outcome.starts_with("error:"), "{probe}: {outcome}");
        }
        let env: Value =
            serde_json::from_str(&ok_text(&run(&runtime, "snoop.env", "").await)).unwrap();
        assert_eq!(env, json!({"vars": {}, "args": []}));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commands_no_plugin_serves_now_wait_with_a_hint() {
        // The queue checked the command at submit: a job that meets no plugin at run
        // time is waiting for its plugin (being redeployed), not failed.
        let dir = PluginDir::with(&[ECHO]);
        let runtime = dir.start().await;
        let wrong_command = run(&runtime, "echo.nope", "").await;
        check_permanent(
            &wrong_command,
            ErrorKind::PluginUnavailable,
            &[r#"no plugin serves "echo.nope": plugin "echo" serves echo.config, echo.echo"#],
        );
        let wrong_plugin = run(&runtime, "github.commits", "").await;
        check_permanent(
            &wrong_plugin,
            ErrorKind::PluginUnavailable,
            &[r#"plugin "github" is not loaded (plugins: echo)"#],
        );
        assert_eq!(wrong_plugin.plugin, None);
    }
}

mod hostile {
    use super::*;
    use serde_json::{Value, json};

    /// Checks that `message` is at most 8 KiB, starts with `fill` repeated and ends with
    /// the marker naming `total_bytes`.
    fn check_capped(message: &str, fill: char, total_bytes: usize) {
        assert!(message.len() <= 8 * 1024, "{} bytes", message.len());
        let marker = format!("… (truncated: {total_bytes} bytes in all)");
        let kept = message
            .strip_suffix(&marker)
            .unwrap_or_else(|| panic!("no marker {marker:?} at the end of {message:?}"));
        assert!(kept.len() > 8000, "kept only {} bytes", kept.len());
        assert!(kept.chars().all(|c| c == fill), "{kept:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unbounded_guest_error_messages_are_cut_to_8_kib() {
        const TEN_MIB: usize = 10 * 1024 * 1024;
        let dir = PluginDir::with(&[HUGE]);
        let runtime = dir.start().await;
        let permanent = run(
            &runtime,
            "huge.error",
            json!({"bytes": TEN_MIB}).to_string(),
        )
        .await;
        let permanent = failure(&permanent);
        assert!(
            matches!(permanent, Failure::Permanent { .. }),
            "{}",
            permanent.kind()
        );
        assert_eq!(permanent.kind(), ErrorKind::PluginError);
        check_capped(permanent.message(), 'x', TEN_MIB);

        // Three-byte characters: the cut must fall between two of them.
        let retriable = run(
            &runtime,
            "huge.error",
            json!({"bytes": 99_999, "fill": "€", "retriable": true}).to_string(),
        )
        .await;
        let retriable = failure(&retriable);
        assert!(
            matches!(retriable, Failure::Retriable { .. }),
            "{}",
            retriable.kind()
        );
        assert_eq!(retriable.kind(), ErrorKind::PluginError);
        check_capped(retriable.message(), '€', 99_999);

        let short = run(&runtime, "huge.error", json!({"bytes": 100}).to_string()).await;
        assert_eq!(failure_message(&short), "x".repeat(100));
    }

    fn failure_message(execution: &Execution) -> String {
        failure(execution).message().to_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_guest_writing_megabytes_to_stderr_does_not_trap() {
        const BYTES: usize = 4 * 1024 * 1024;
        let dir = PluginDir::with(&[HUGE]);
        let runtime = dir.start().await;
        let execution = run(&runtime, "huge.stderr", json!({"bytes": BYTES}).to_string()).await;
        let output: Value = serde_json::from_str(&ok_text(&execution)).unwrap();
        assert!(
            output["wrote_bytes"].as_u64().unwrap() >= BYTES as u64,
            "{output}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn host_resources_of_a_guest_are_bounded_by_its_memory_limit() {
        let dir = PluginDir::with(&[FLOOD]);
        dir.write_manifest(FLOOD, "[limits]\nmemory_mib = 16\n");
        let runtime = dir.start().await;
        // 4096 header maps of 16 kB: 64 MB in the host, four times the guest's limit.
        let flood = run(
            &runtime,
            "flood.fields",
            json!({"count": 4096, "value_bytes": 16_000}).to_string(),
        )
        .await;
        check_permanent(
            &flood,
            ErrorKind::MemoryLimit,
            &[
                "plugin \"flood\" held more host resources than the 512",
                "16 MiB memory limit",
            ],
        );
        // Within the bound, the same guest runs.
        let within = run(
            &runtime,
            "flood.fields",
            json!({"count": 100, "value_bytes": 16_000}).to_string(),
        )
        .await;
        assert_eq!(ok_text(&within), r#"{"created":100}"#);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn header_maps_larger_than_32_kib_are_refused_to_the_guest() {
        let dir = PluginDir::with(&[FLOOD]);
        let runtime = dir.start().await;
        let oversized = run(
            &runtime,
            "flood.fields",
            json!({"count": 1, "value_bytes": 100_000}).to_string(),
        )
        .await;
        // wasmtime-wasi-http stops the guest (a trap), recorded as over a memory limit.
        check_permanent(
            &oversized,
            ErrorKind::MemoryLimit,
            &["plugin \"flood\" filled a header map past the host's 32768-byte limit"],
        );
        // A header map within the limit is fine.
        let within = run(
            &runtime,
            "flood.fields",
            json!({"count": 1, "value_bytes": 30_000}).to_string(),
        )
        .await;
        assert_eq!(ok_text(&within), r#"{"created":1}"#);
    }
}

mod egress {
    use super::*;
    use serde_json::{Value, json};

    fn fetch(url: &str) -> String {
        json!({ "url": url }).to_string()
    }

    fn allow_only(origin: &str) -> String {
        format!("[network]\nallowed_hosts = [\"{origin}\"]\n")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_allowed_host_is_reached() {
        let server = http::FakeServer::start().await;
        let dir = PluginDir::with(&[FETCH]);
        dir.write_manifest(FETCH, &allow_only(&server.origin()));
        let runtime = dir.start().await;
        let execution = run(&runtime, "fetch.get", fetch(&server.url("/hello"))).await;
        let output: Value = serde_json::from_str(&ok_text(&execution)).unwrap();
        assert_eq!(output["status"], 200);
        assert_eq!(output["body"], http::HELLO);
        let seen: Vec<String> = server.seen().into_iter().map(|seen| seen.path).collect();
        assert_eq!(seen, ["/hello"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn another_port_or_host_is_denied_naming_the_url_and_the_plugin() {
        let server = http::FakeServer::start().await;
        let dir = PluginDir::with(&[FETCH]);
        dir.write_manifest(FETCH, &allow_only(&server.origin()));
        let runtime = dir.start().await;
        let other_port = format!(
            "http://127.0.0.1:{}/secret",
            server.port().wrapping_add(1).max(1)
        );
        let other_host = format!("http://localhost:{}/secret", server.port());
        for url in [other_port, other_host] {
            let execution = run(&runtime, "fetch.get", fetch(&url)).await;
            check_permanent(
                &execution,
                ErrorKind::EgressDenied,
                &["plugin \"fetch\"", &url, "network.allowed_hosts"],
            );
        }
        assert!(server.seen().is_empty(), "{:?}", server.seen());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_network_section_means_no_network() {
        let server = http::FakeServer::start().await;
        let dir = PluginDir::with(&[FETCH]);
        dir.write_manifest(FETCH, "");
        let runtime = dir.start().await;
        assert!(runtime.plugins()[0].allowed_hosts.is_empty());
        let url = server.url("/hello");
        let execution = run(&runtime, "fetch.get", fetch(&url)).await;
        check_permanent(&execution, ErrorKind::EgressDenied, &[&url]);
        assert!(server.seen().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn auth_headers_reach_the_server_but_never_the_plugin() {
        const TOKEN: &str = "s3cr3t-t0ken-value";
        let server = http::FakeServer::start().await;
        let dir = PluginDir::with(&[FETCH]);
        dir.write_manifest(
            FETCH,
            &format!(
                "{}\n[[auth]]\nhost = \"{}\"\nheader = \"Authorization\"\nvalue = \"Bearer ${{TEST_TOKEN}}\"\n",
                allow_only(&server.origin()),
                server.origin()
            ),
        );
        let config = with_secrets(dir.config(), &[("TEST_TOKEN", TOKEN)]);
        let runtime = honeydew::runtime::Runtime::start(config).await.unwrap();
        let payload = json!({
            "url": server.url("/whoami"),
            "headers": {"authorization": "guest-chosen", "x-plugin": "1"},
        });
        let execution = run(&runtime, "fetch.get", payload.to_string()).await;
        let output = ok_text(&execution);
        assert!(
            !output.contains(TOKEN),
            "the plugin saw the token: {output}"
        );
        let output: Value = serde_json::from_str(&output).unwrap();
        assert_eq!(output["saw_headers"], json!(["authorization", "x-plugin"]));

        let seen = server.seen();
        assert_eq!(seen.len(), 1);
        let authorization: Vec<_> = seen[0].headers.get_all("authorization").iter().collect();
        assert_eq!(authorization, [format!("Bearer {TOKEN}").as_str()]);
        assert_eq!(seen[0].headers["x-plugin"], "1");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn response_bodies_over_the_cap_are_refused() {
        let server = http::FakeServer::start().await;
        let dir = PluginDir::with(&[FETCH]);
        dir.write_manifest(FETCH, &allow_only(&server.origin()));
        let mut config = dir.config();
        config.max_response_body_bytes = 1000;
        let runtime = honeydew::runtime::Runtime::start(config).await.unwrap();
        let within = run(&runtime, "fetch.get", fetch(&server.url("/bytes/1000"))).await;
        let output: Value = serde_json::from_str(&ok_text(&within)).unwrap();
        assert_eq!(output["body"].as_str().map(str::len), Some(1000));
        let over = run(&runtime, "fetch.get", fetch(&server.url("/bytes/5000"))).await;
        // Retrying would meet the same cap, so the plugin gives up at once.
        check_permanent(
            &over,
            ErrorKind::PluginError,
            &["response body of 5000 bytes is over the host's limit"],
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_guest_cannot_hold_more_than_16_requests_in_flight() {
        let server = http::FakeServer::start().await;
        let dir = PluginDir::with(&[FLOOD]);
        dir.write_manifest(
            FLOOD,
            &format!(
                "{}[limits]\ntimeout_ms = 20_000\n",
                allow_only(&server.origin())
            ),
        );
        let runtime = dir.start().await;
        // Sixteen requests wait on `/hold`; the seventeenth is refused at once.
        let payload = json!({
            "authority": format!("127.0.0.1:{}", server.port()),
            "path": "/hold",
            "count": 17,
        });
        let flood = run(&runtime, "flood.requests", payload.to_string()).await;
        check_permanent(
            &flood,
            ErrorKind::PluginError,
            &["request 17 of 17 failed: ErrorCode::ConnectionLimitReached"],
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn response_headers_over_32_kib_are_refused() {
        let server = http::FakeServer::start().await;
        let dir = PluginDir::with(&[FETCH]);
        dir.write_manifest(FETCH, &allow_only(&server.origin()));
        let runtime = dir.start().await;
        let within = run(&runtime, "fetch.get", fetch(&server.url("/headers/20000"))).await;
        let output: Value = serde_json::from_str(&ok_text(&within)).unwrap();
        assert_eq!(output["body"], http::HELLO);
        let over = run(&runtime, "fetch.get", fetch(&server.url("/headers/40000"))).await;
        // Retrying would meet the same cap, so the plugin gives up at once.
        check_permanent(
            &over,
            ErrorKind::PluginError,
            &[
                "HTTP response headers of",
                "bytes are over the host's limit",
            ],
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deadline_passing_while_waiting_on_http_is_a_retriable_upstream_timeout() {
        let server = http::FakeServer::start().await;
        let dir = PluginDir::with(&[FETCH]);
        dir.write_manifest(
            FETCH,
            &format!(
                "{}[limits]\ntimeout_ms = 300\n",
                allow_only(&server.origin())
            ),
        );
        let runtime = dir.start().await;
        // The server holds `/hold` until released, which this test never does.
        let execution = run(&runtime, "fetch.get", fetch(&server.url("/hold"))).await;
        let failure = failure(&execution);
        assert!(
            matches!(failure, Failure::Retriable { after: None, .. }),
            "{failure:?}"
        );
        check_failure(
            failure,
            ErrorKind::UpstreamTimeout,
            &[
                "plugin \"fetch\" did not finish within 300ms",
                "still waiting on 1 outgoing HTTP request",
            ],
        );
        let seen: Vec<String> = server.seen().into_iter().map(|seen| seen.path).collect();
        assert_eq!(seen, ["/hold"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_guest_spinning_after_its_request_finished_times_out_for_good() {
        let server = http::FakeServer::start().await;
        let dir = PluginDir::with(&[FETCH]);
        dir.write_manifest(
            FETCH,
            &format!(
                "{}[limits]\nfuel = 1_000_000_000_000\ntimeout_ms = 300\n",
                allow_only(&server.origin())
            ),
        );
        let runtime = dir.start().await;
        let payload = json!({"url": server.url("/hello"), "spin_after": true});
        let execution = run(&runtime, "fetch.get", payload.to_string()).await;
        // The request went through; running the job again would send it again.
        check_permanent(&execution, ErrorKind::Timeout, &["within 300ms"]);
        assert_eq!(server.seen().len(), 1);
    }
}

mod loading {
    use super::*;
    use honeydew::queue::{CommandCatalog, CommandDefaults};
    use honeydew::runtime::{CompileStats, Runtime, RuntimeConfig, SkippedPlugin};

    /// A component that is valid but exports nothing.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";
    /// A core module, not a component.
    const CORE_MODULE: &[u8] = b"\0asm\x01\0\0\0";

    fn reason_of<'a>(skipped: &'a [SkippedPlugin], file: &str) -> &'a str {
        skipped
            .iter()
            .find(|skipped| skipped.path.file_name().unwrap() == file)
            .map(|skipped| skipped.reason.as_str())
            .unwrap_or_else(|| panic!("{file} was not skipped: {skipped:?}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_plugin_files_are_skipped_with_a_reason_and_the_rest_load() {
        let dir = PluginDir::with(&[ECHO, PERMANENT, HUGE, SLOWLOAD]);
        dir.write_wasm("garbage", b"this is not webassembly");
        dir.write_wasm("core", CORE_MODULE);
        dir.write_wasm("hollow", EMPTY_COMPONENT);
        dir.write_wasm("impostor", &std::fs::read(fixture_wasm(ECHO)).unwrap());
        dir.write_manifest(PERMANENT, "[limits]\nfuell = 1\n");
        dir.write_manifest(
            HUGE,
            "[network]\nallowed_hosts = [\"https://api.example.com\"]\n\
             [[auth]]\nhost = \"https://api.example.com\"\nheader = \"Authorization\"\n\
             value = \"Bearer ${MISSING_TOKEN}\"\n",
        );

        let started = Instant::now();
        let runtime = dir.start().await;
        let start_time = started.elapsed();

        let loaded: Vec<String> = runtime.plugins().into_iter().map(|p| p.name).collect();
        assert_eq!(loaded, ["echo"]);
        let skipped = runtime.skipped();
        assert_eq!(skipped.len(), 7, "{skipped:#?}");
        for (file, expected) in [
            ("garbage.wasm", "not a valid WebAssembly component"),
            ("core.wasm", "not a valid WebAssembly component"),
            ("hollow.wasm", "does not implement honeydew:plugin/plugin"),
            (
                "impostor.wasm",
                "the component calls itself \"echo\" but its file is impostor.wasm",
            ),
            ("permanent.wasm", "unknown field `fuell`"),
            ("huge.wasm", "secret MISSING_TOKEN is not set"),
            (
                "slowload.wasm",
                "describe() failed: plugin \"slowload\" ran out of fuel",
            ),
        ] {
            let reason = reason_of(&skipped, file);
            assert!(reason.contains(expected), "{file}: {reason}");
        }
        // slowload's endless describe() costs milliseconds of fuel, not the load of
        // the others.
        assert!(start_time < Duration::from_secs(10), "{start_time:?}");
        // Submitting to a skipped plugin says why it is not there.
        let refused = runtime.resolve("huge.output").unwrap_err().to_string();
        assert!(
            refused.starts_with(r#"no plugin serves "huge.output": plugin "huge" is not loaded: invalid manifest"#)
                && refused.ends_with("secret MISSING_TOKEN is not set (give it to the daemon in its config file's [secrets] table or as the environment variable HONEYDEW_SECRET_MISSING_TOKEN)"),
            "{refused}"
        );
        assert_eq!(
            ok_text(&run(&runtime, "echo.echo", "still fine").await),
            "still fine"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_catalog_gives_manifest_defaults_and_hints() {
        let dir = PluginDir::with(&[ECHO, PERMANENT]);
        dir.write_manifest(PERMANENT, "[limits]\nmax_retries = 7\n");
        let runtime = dir.start().await;
        assert_eq!(
            runtime.resolve("permanent.fail").unwrap(),
            CommandDefaults {
                max_retries: Some(7)
            }
        );
        assert_eq!(
            runtime.resolve("echo.echo").unwrap(),
            CommandDefaults {
                max_retries: Some(3)
            }
        );
        for (command, message) in [
            (
                "echo.ecko",
                r#"no plugin serves "echo.ecko": did you mean "echo.echo"? (plugins: echo, permanent)"#,
            ),
            (
                "github.commits",
                r#"no plugin serves "github.commits": plugin "github" is not loaded (plugins: echo, permanent)"#,
            ),
        ] {
            assert_eq!(runtime.resolve(command).unwrap_err().to_string(), message);
        }
        let echo = &runtime.plugins()[0];
        assert_eq!(echo.commands, ["echo.config", "echo.echo"]);
        assert_eq!(echo.sha256, fixture_sha256(ECHO));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_start_compiles_nothing() {
        let dir = PluginDir::with(&[ECHO, SPIN]);
        let cache = tempfile::tempdir().unwrap();
        let config = || RuntimeConfig::new(dir.path(), cache.path());

        let first = Runtime::start(config()).await.unwrap();
        assert_eq!(
            first.compile_stats(),
            CompileStats {
                compiled: 2,
                cache_hits: 0
            }
        );
        drop(first);

        let second = Runtime::start(config()).await.unwrap();
        assert_eq!(
            second.compile_stats(),
            CompileStats {
                compiled: 0,
                cache_hits: 2
            }
        );
        assert_eq!(
            ok_text(&run(&second, "echo.echo", "cached").await),
            "cached"
        );
    }
}

mod reload {
    use super::*;
    use honeydew::runtime::PluginEvent;
    use honeydew::worker::Executor;
    use serde_json::json;
    use tokio_util::sync::CancellationToken;

    fn loaded(name: &str) -> impl Fn(&PluginEvent) -> bool + '_ {
        move |event| matches!(event, PluginEvent::Loaded(summary) if summary.name == name)
    }

    fn skipped(file: &str) -> impl Fn(&PluginEvent) -> bool + '_ {
        move |event| matches!(event, PluginEvent::Skipped(skipped) if skipped.path.file_name().unwrap() == file)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_added_plugin_serves_without_a_restart() {
        let dir = PluginDir::empty();
        let runtime = dir.start().await;
        assert!(runtime.plugins().is_empty());
        check_failure(
            failure(&run(&runtime, "echo.echo", "x").await),
            ErrorKind::PluginUnavailable,
            &["(no plugins are loaded)"],
        );
        let mut events = runtime.subscribe();
        dir.add(ECHO);
        wait_for_event(&mut events, loaded(ECHO)).await;
        assert_eq!(ok_text(&run(&runtime, "echo.echo", "new").await), "new");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replaced_plugin_finishes_running_jobs_on_the_old_version() {
        let server = http::FakeServer::start().await;
        let dir = PluginDir::with(&[FETCH]);
        dir.write_manifest(
            FETCH,
            &format!("[network]\nallowed_hosts = [\"{}\"]\n", server.origin()),
        );
        let runtime = dir.start().await;
        let old_sha256 = fixture_sha256(FETCH);

        // A job that stays in flight until the server is told to answer.
        let running = {
            let runtime = runtime.clone();
            let job = job("fetch.get", json!({"url": server.url("/hold")}).to_string());
            tokio::spawn(async move {
                runtime
                    .execute(&job, CancellationToken::new(), OutputSink::discard())
                    .await
            })
        };
        server.held().await;

        let mut events = runtime.subscribe();
        let new_component = with_custom_section(&std::fs::read(fixture_wasm(FETCH)).unwrap(), "v2");
        let new_sha256 = hex_sha256(&new_component);
        dir.write_wasm(FETCH, &new_component);
        let event = wait_for_event(&mut events, loaded(FETCH)).await;
        assert!(matches!(event, PluginEvent::Loaded(ref summary) if summary.sha256 == new_sha256));
        assert!(
            !running.is_finished(),
            "the job must still be running across the swap"
        );

        server.release();
        let old_job = running.await.unwrap();
        assert!(ok_text(&old_job).contains(http::HELLO));
        assert_eq!(old_job.plugin.unwrap().sha256, old_sha256);

        let new_job = run(
            &runtime,
            "fetch.get",
            json!({"url": server.url("/after")}).to_string(),
        )
        .await;
        assert!(new_job.result.is_ok(), "{:?}", new_job.result);
        assert_eq!(new_job.plugin.unwrap().sha256, new_sha256);
        assert_eq!(runtime.plugins()[0].sha256, new_sha256);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_removed_plugin_stops_serving() {
        use honeydew::queue::CommandCatalog;

        let dir = PluginDir::with(&[ECHO, PERMANENT]);
        let runtime = dir.start().await;
        let mut events = runtime.subscribe();
        dir.remove(ECHO);
        let event = wait_for_event(&mut events, |event| {
            matches!(event, PluginEvent::Unloaded { .. })
        })
        .await;
        assert_eq!(event, PluginEvent::Unloaded { name: ECHO.into() });
        let names: Vec<String> = runtime.plugins().into_iter().map(|p| p.name).collect();
        assert_eq!(names, [PERMANENT]);
        assert!(runtime.resolve("echo.echo").is_err());
        check_failure(
            failure(&run(&runtime, "echo.echo", "x").await),
            ErrorKind::PluginUnavailable,
            &["plugin \"echo\" is not loaded (plugins: permanent)"],
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn garbage_is_skipped_and_the_previous_version_keeps_serving() {
        let dir = PluginDir::with(&[ECHO]);
        let runtime = dir.start().await;
        let mut events = runtime.subscribe();

        dir.write_wasm("junk", b"\x00\x01garbage");
        wait_for_event(&mut events, skipped("junk.wasm")).await;

        dir.write_wasm(ECHO, b"truncated upload");
        let event = wait_for_event(&mut events, skipped("echo.wasm")).await;
        let PluginEvent::Skipped(skipped) = event else {
            unreachable!()
        };
        assert!(
            skipped.reason.contains("not a valid WebAssembly component"),
            "{}",
            skipped.reason
        );

        let execution = run(&runtime, "echo.echo", "still here").await;
        assert_eq!(ok_text(&execution), "still here");
        assert_eq!(execution.plugin.unwrap().sha256, fixture_sha256(ECHO));
        let files: Vec<_> = runtime
            .skipped()
            .into_iter()
            .map(|skipped| skipped.path.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(files, ["echo.wasm", "junk.wasm"]);

        // Putting the good file back clears the complaint (nothing else changes, since
        // the version serving is that file's).
        dir.add(ECHO);
        let junk_only = vec![dir.path().join("junk.wasm")];
        eventually("echo.wasm is no longer skipped", || {
            runtime
                .skipped()
                .into_iter()
                .map(|s| s.path)
                .collect::<Vec<_>>()
                == junk_only
        })
        .await;
    }
}

mod cancel {
    use super::*;
    use honeydew::worker::Executor;
    use tokio_util::sync::CancellationToken;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelling_a_running_loop_stops_it_at_once() {
        let dir = PluginDir::with(&[SPIN]);
        dir.write_manifest(
            SPIN,
            "[limits]\nfuel = 1_000_000_000_000\ntimeout_ms = 60_000\n",
        );
        let runtime = dir.start().await;
        let token = CancellationToken::new();
        let mut running = Box::pin({
            let (runtime, token) = (runtime.clone(), token.clone());
            async move {
                runtime
                    .execute(&job("spin.loop", ""), token, OutputSink::discard())
                    .await
            }
        });
        // The first poll instantiates the guest and enters its loop, which yields at
        // the next epoch tick; from then on it spins on a worker thread.
        assert!(poll_once(&mut running).await.is_pending());
        let running = tokio::spawn(running);

        let cancelled_at = Instant::now();
        token.cancel();
        let execution = running.await.unwrap();
        let reaction = cancelled_at.elapsed();
        check_permanent(&execution, ErrorKind::Cancelled, &["cancelled"]);
        assert!(reaction < Duration::from_millis(500), "{reaction:?}");
        assert!(execution.fuel_used.unwrap() > 0);
    }
}

mod contract {
    use super::*;
    use honeydew::runtime::SkippedPlugin;

    /// The names `fixture`'s component imports, as wasmtime reads them.
    fn imports(fixture: &str) -> Vec<String> {
        let engine = wasmtime::Engine::default();
        let component =
            wasmtime::component::Component::from_file(&engine, fixture_wasm(fixture)).unwrap();
        component
            .component_type()
            .imports(&engine)
            .map(|(name, _)| name.to_owned())
            .collect()
    }

    /// The 0.2.0 contract added an import; a plugin built against 0.1.0 (from the
    /// frozen WIT, without the SDK) imports the 0.1.0 types and nothing of the new
    /// interface, and the daemon still loads it and runs it: results, config and a
    /// classified error with its delay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_component_built_against_wit_0_1_0_loads_and_runs() {
        let imports = imports(LEGACY);
        assert!(
            imports
                .iter()
                .any(|name| name == "honeydew:plugin/types@0.1.0"),
            "{imports:?}"
        );
        let contract: Vec<&String> = imports
            .iter()
            .filter(|name| name.starts_with("honeydew:"))
            .collect();
        assert_eq!(contract, ["honeydew:plugin/types@0.1.0"], "{imports:?}");
        let dir = PluginDir::with(&[LEGACY]);
        let runtime = dir.start().await;
        let plugins = runtime.plugins();
        assert_eq!(plugins.len(), 1, "{:?}", runtime.skipped());
        assert_eq!(
            plugins[0].commands,
            ["legacy.echo", "legacy.fail", "legacy.greet"]
        );

        assert_eq!(
            ok_text(&run(&runtime, "legacy.echo", "as it was").await),
            "as it was"
        );
        assert_eq!(
            ok_text(&run(&runtime, "legacy.greet", "").await),
            "hello from 0.1.0"
        );
        assert_eq!(
            run(&runtime, "legacy.fail", "").await.result,
            Err(Failure::Retriable {
                kind: ErrorKind::PluginError,
                message: "legacy asks to wait".into(),
                after: Some(Duration::from_millis(1500)),
            })
        );
    }

    /// A component built against 0.2.0 (from the frozen WIT, without the SDK) imports
    /// 0.2.0's `job`, which the daemon's 0.2.1 `job` (one function more) meets: it
    /// loads and runs, and its call through the import answers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_component_built_against_wit_0_2_0_loads_and_runs_its_job_import() {
        let imports = imports(ELDER);
        assert!(
            imports
                .iter()
                .any(|name| name == "honeydew:plugin/job@0.2.0"),
            "{imports:?}"
        );
        assert!(
            !imports.iter().any(|name| name.contains("logging")),
            "{imports:?}"
        );
        let dir = PluginDir::with(&[ELDER]);
        let runtime = dir.start().await;
        assert_eq!(runtime.plugins().len(), 1, "{:?}", runtime.skipped());
        assert_eq!(
            ok_text(&run(&runtime, "elder.echo", "as it was").await),
            "as it was"
        );
        assert_eq!(
            ok_text(&run(&runtime, "elder.snoozes", "").await),
            r#"{"snooze_count":0}"#
        );
    }

    /// A 0.2.1 component's log lines (`wasi:logging`) and progress (`job.progress`)
    /// reach the attempt's output sink, clamped and in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_plugins_log_lines_and_progress_reach_the_output_sink() {
        use honeydew::worker::Executor;
        let imports = imports(CHATTY);
        assert!(
            imports
                .iter()
                .any(|name| name == "wasi:logging/logging@0.1.0-draft"),
            "{imports:?}"
        );
        let dir = PluginDir::with(&[CHATTY]);
        let runtime = dir.start().await;
        let sink = OutputSink::for_attempt(1);
        let execution = runtime
            .execute(
                &job("chatty.talk", r#"{"lines": 12, "long": true}"#),
                tokio_util::sync::CancellationToken::new(),
                sink.clone(),
            )
            .await;
        assert_eq!(ok_text(&execution), r#"{"lines":12}"#);
        let output = sink.take();
        assert_eq!(output.lines.len(), 13);
        assert!(output.lines[0].line.starts_with("line 1x"));
        assert_eq!(output.lines[0].line.len(), 2048, "cut to the line cap");
        assert_eq!(output.lines[9].level, honeydew_core::output::LogLevel::Warn);
        assert_eq!(output.lines[12].line, "finished after 12 lines");
        let progress = output.progress.expect("progress");
        assert_eq!(
            (progress.done, progress.total, progress.message.as_deref()),
            (2, Some(2), Some("done"))
        );
    }

    /// A 0.2.x component imports the new interface only when it calls it: a plugin
    /// that does not use the workspace needs nothing the old contract lacked.
    #[test]
    fn components_built_against_wit_0_2_0_import_the_workspace_only_when_they_use_it() {
        let echo = imports(ECHO);
        assert!(
            echo.iter()
                .any(|name| name == "honeydew:plugin/types@0.2.1"),
            "{echo:?}"
        );
        assert!(
            !echo.iter().any(|name| name.contains("workspace")),
            "{echo:?}"
        );
        let digger = imports(DIGGER);
        assert!(
            digger
                .iter()
                .any(|name| name == "honeydew:plugin/workspace@0.2.1"),
            "{digger:?}"
        );
    }

    /// Likewise `job`: only a plugin that snoozes or cancels imports it.
    #[test]
    fn components_built_against_wit_0_2_0_import_the_job_only_when_they_use_it() {
        let snoozer = imports(SNOOZER);
        assert!(
            snoozer
                .iter()
                .any(|name| name == "honeydew:plugin/job@0.2.1"),
            "{snoozer:?}"
        );
        for fixture in [ECHO, DIGGER, LEGACY] {
            let imported = imports(fixture);
            assert!(
                !imported
                    .iter()
                    .any(|name| name.starts_with("honeydew:plugin/job")),
                "{fixture}: {imported:?}"
            );
        }
    }

    /// A manifest that grants a workspace is refused by a runtime that has no
    /// workspace directory, saying so, rather than loading a plugin that cannot work.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_workspace_grant_without_a_workspace_directory_is_refused_at_load() {
        let dir = PluginDir::with(&[DIGGER]);
        let runtime = dir.start().await;
        assert!(runtime.plugins().is_empty());
        let skipped: Vec<SkippedPlugin> = runtime.skipped();
        assert_eq!(skipped.len(), 1);
        assert!(
            skipped[0]
                .reason
                .contains("[workspace] is granted, but this daemon has no workspace directory"),
            "{}",
            skipped[0].reason
        );
    }
}

mod job_requests {
    use super::*;
    use honeydew::job_request::{JobRequest, MAX_SNOOZE, MIN_SNOOZE};
    use honeydew::runtime::Runtime;
    use honeydew::worker::Executor;
    use serde_json::{Value, json};
    use tokio_util::sync::CancellationToken;

    /// Runs `snoozer.ask` with `requests`, ending as `then` says.
    async fn ask(runtime: &Runtime, requests: Value, then: &str) -> Execution {
        let payload = json!({"requests": requests, "then": then}).to_string();
        run(runtime, "snoozer.ask", payload).await
    }

    async fn snoozer() -> (PluginDir, std::sync::Arc<Runtime>) {
        let dir = PluginDir::with(&[SNOOZER]);
        let runtime = dir.start().await;
        (dir, runtime)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_last_request_stands_whatever_run_returns() {
        let (_dir, runtime) = snoozer().await;
        let snooze_then_cancel = ask(
            &runtime,
            json!([{"snooze_ms": 5000, "reason": "later"}, {"cancel": "pointless now"}]),
            "ok",
        )
        .await;
        assert_eq!(
            snooze_then_cancel.request,
            Some(JobRequest::Cancel {
                reason: "pointless now".into()
            })
        );
        // What `run` returned is reported too; the worker discards it.
        assert_eq!(ok_text(&snooze_then_cancel), r#"{"asked":2}"#);
        let cancel_then_snooze = ask(
            &runtime,
            json!([{"cancel": "pointless"}, {"snooze_ms": 5000, "reason": "no, later"}]),
            "retriable",
        )
        .await;
        assert_eq!(
            cancel_then_snooze.request,
            Some(JobRequest::Snooze {
                delay: Duration::from_secs(5),
                reason: "no, later".into()
            })
        );
        assert!(matches!(
            cancel_then_snooze.result,
            Err(Failure::Retriable { .. })
        ));
        let none = ask(&runtime, json!([]), "ok").await;
        assert_eq!(none.request, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delays_and_reasons_are_bounded_where_they_enter() {
        let (_dir, runtime) = snoozer().await;
        let long_reason = "why ".repeat(10_000);
        for (delay_ms, expected) in [(0, MIN_SNOOZE), (u64::MAX, MAX_SNOOZE)] {
            let execution = ask(
                &runtime,
                json!([{"snooze_ms": delay_ms, "reason": long_reason}]),
                "ok",
            )
            .await;
            let Some(JobRequest::Snooze { delay, reason }) = execution.request else {
                panic!("expected a snooze, got {:?}", execution.request);
            };
            assert_eq!(delay, expected, "{delay_ms} ms");
            assert!(reason.len() <= 8 * 1024, "{}", reason.len());
            assert!(
                reason.ends_with("bytes in all)"),
                "{}",
                &reason[reason.len() - 40..]
            );
        }
    }

    /// A trap, the deadline or the fuel budget ends the attempt as it would have
    /// without the request: the request is dropped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_attempt_that_does_not_return_drops_its_request() {
        let dir = PluginDir::empty();
        dir.write_manifest(SNOOZER, "[limits]\ntimeout_ms = 500\n");
        dir.write_wasm(SNOOZER, &std::fs::read(fixture_wasm(SNOOZER)).unwrap());
        let runtime = dir.start().await;
        let snooze = json!([{"snooze_ms": 5000, "reason": "later"}]);
        let panicked = ask(&runtime, snooze.clone(), "panic").await;
        assert_eq!(panicked.request, None);
        assert!(
            matches!(&panicked.result, Err(failure) if failure.kind() == ErrorKind::Trap),
            "{:?}",
            panicked.result
        );
        let spun = ask(&runtime, snooze, "spin").await;
        assert_eq!(spun.request, None);
        assert!(
            matches!(&spun.result, Err(failure)
                if matches!(failure.kind(), ErrorKind::Timeout | ErrorKind::FuelExhausted)),
            "{:?}",
            spun.result
        );
    }

    /// The plugin sees how often its job snoozed before, and stops when told to.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_plugin_sees_the_jobs_snooze_count() {
        let (_dir, runtime) = snoozer().await;
        let payload = br#"{"snooze_ms": 1000, "times": 2}"#.to_vec();
        for (snooze_count, snoozes_again) in [(0, true), (1, true), (2, false)] {
            let mut job = job("snoozer.snooze", payload.clone());
            job.snooze_count = snooze_count;
            let execution = runtime
                .execute(&job, CancellationToken::new(), OutputSink::discard())
                .await;
            assert_eq!(
                execution.request.is_some(),
                snoozes_again,
                "after {snooze_count} snoozes: {:?}",
                execution.request
            );
            if !snoozes_again {
                assert_eq!(ok_text(&execution), r#"{"snoozes":2}"#);
            }
        }
    }
}
