//! The dashboard, end to end: the daemon serves it on `--listen-http`, and a real
//! headless Chromium (Debian's `chromium`, driven by `tests/browser/dashboard.mjs`
//! through playwright-core) logs in with the token, pauses a plugin, watches a
//! submitted job go from pending to completed without a reload, cancels a running job
//! from its page, follows a running job's log lines and progress live on its page
//! (the `chatty` fixture, held halfway by a loopback server), and keeps a screenshot of
//! each page in `target/dashboard-screenshots/<backend>/`; on SQLite and PostgreSQL.
//! Then, over plain HTTP, who may use it on a non-loopback listener: only a session
//! opened with the token (bound to the host it was opened through) or the token
//! itself, and a browser's action only with the CSRF header and its own origin.
//!
//! `scripts/setup.sh` installs chromium and node and runs `npm ci` in `tests/browser`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use honeydew::api::Token;
use honeydew::api::pb::JobStatus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::backend::{Backend, on_both_backends};
use crate::support::hold::Hold;
use crate::support::listener::{self, http_address};
use crate::support::{Daemon, DataDir, PATIENCE, get, honeydew, stderr, stdout};

on_both_backends!(the_dashboard_works_in_a_real_browser);

/// The workspace's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_owned()
}

/// `target/`, where the test binary runs from (`target/debug/deps/e2e-...`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary");
    exe.ancestors()
        .find(|dir| dir.file_name().is_some_and(|name| name == "target"))
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root().join("target"))
}

async fn the_dashboard_works_in_a_real_browser(postgres: bool) {
    let browser = root().join("tests/browser");
    assert!(
        browser.join("node_modules/playwright-core").is_dir()
            && Path::new("/usr/bin/chromium").exists(),
        "the browser test needs Debian's chromium and `npm ci` in tests/browser: run scripts/setup.sh"
    );
    let data = DataDir::with_plugins(&["echo", "spin", "chatty"]);
    std::fs::write(data.path().join("plugins/broken.wasm"), b"not a component").unwrap();
    let mut backend = Backend::start_in(
        postgres,
        data,
        &[
            "--workers",
            "2",
            "--timeout-ms",
            "180000",
            "--listen-http",
            "127.0.0.1:0",
        ],
    )
    .await;
    let address = http_address(&mut backend.daemon);
    let channel = backend.daemon.connect().await;
    let added = honeydew(
        backend.data.path(),
        &[
            "schedule",
            "add",
            "nightly-echo",
            "--cron",
            "0 3 * * *",
            "echo.echo",
            "--payload",
            "{}",
        ],
        "",
    );
    assert!(added.status.success(), "{}", stderr(&added));

    let backend_name = if postgres { "postgres" } else { "sqlite" };
    let screenshots = target_dir()
        .join("dashboard-screenshots")
        .join(backend_name);
    let _ = std::fs::remove_dir_all(&screenshots);
    let token = std::fs::read_to_string(Token::path_in(backend.data.path())).unwrap();
    // Holds the `chatty` job halfway, its log and progress on its page, until the
    // browser test has seen them and releases it.
    let hold = Hold::start().await;
    let mut command = Command::new("node");
    command
        .arg(browser.join("dashboard.mjs"))
        .arg(format!("http://{address}"))
        .current_dir(&browser)
        .env("HONEYDEW_TOKEN", token.trim())
        .env("HONEYDEW_CLI", env!("CARGO_BIN_EXE_honeydew"))
        .env("HONEYDEW_DATA_DIR", backend.data.path())
        .env("HONEYDEW_SCREENSHOTS", &screenshots)
        .env("HONEYDEW_HOLD_URL", &hold.url)
        .env("HONEYDEW_RELEASE_URL", &hold.release_url)
        .env_remove("HONEYDEW_SOCKET")
        .env_remove("HONEYDEW_TCP")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command
        .spawn()
        .expect("run node (scripts/setup.sh installs it)");
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output().expect("run node")));
    let output = outcome
        .recv_timeout(PATIENCE * 4)
        .expect("the browser test finished in time");
    let printed = stdout(&output);
    let result: serde_json::Value = printed
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| {
            panic!(
                "no result from the browser test:\n{printed}\n{}",
                stderr(&output)
            )
        });
    assert_eq!(
        result["ok"],
        true,
        "{}\nstderr:\n{}\ndaemon:\n{}",
        serde_json::to_string_pretty(&result).unwrap(),
        stderr(&output),
        backend.daemon.stderr()
    );
    assert!(output.status.success());

    let log = backend.daemon.stderr();
    assert!(log.contains("dashboard login"), "{log}");
    assert!(
        !log.contains(token.trim()),
        "the token reaches no log, though the browser logged in with it"
    );

    // What the browser did, as the daemon records it.
    let echo = get(&channel, result["echo"].as_str().unwrap()).await;
    assert_eq!(echo.status(), JobStatus::Completed);
    let talked = get(&channel, result["talked"].as_str().unwrap()).await;
    assert_eq!(talked.status(), JobStatus::Completed);
    let cancelled = get(&channel, result["cancelled"].as_str().unwrap()).await;
    assert_eq!(cancelled.status(), JobStatus::Cancelled);
    assert_eq!(cancelled.error_kind(), "cancelled");

    for page in [
        "login",
        "jobs-pending",
        "jobs",
        "job",
        "job-running",
        "job-log",
        "schedules",
        "plugins",
        "overview",
        "overview-phone",
        "job-phone",
    ] {
        let file = screenshots.join(format!("{page}.png"));
        let bytes = std::fs::read(&file).unwrap_or_else(|err| panic!("{}: {err}", file.display()));
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 4000,
            "{} is a real screenshot",
            file.display()
        );
    }
}

/// One HTTP/1.1 exchange: the status, the headers (names lowercase) and the body.
async fn exchange(address: &str, request: String) -> (u16, Vec<(String, String)>, String) {
    let answer = listener::exchange(address, &request).await;
    (answer.status, answer.headers, answer.body)
}

/// `method path` with `headers` (each `Name: value`) and `body`, naming `host`.
fn request(method: &str, path: &str, host: &str, headers: &[&str], body: &str) -> String {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    text
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_public_listener_the_dashboard_still_requires_a_login() {
    let data = DataDir::with_plugins(&["echo"]);
    let mut daemon = Daemon::start(
        &data,
        &["--listen-http", "0.0.0.0:0", "--listen-http-public"],
    );
    let bound = http_address(&mut daemon);
    let port = bound.rsplit_once(':').expect("host:port").1;
    let address = format!("127.0.0.1:{port}");
    let host = address.as_str();
    let token = std::fs::read_to_string(Token::path_in(data.path())).unwrap();
    let token = token.trim();

    // No session: pages lead to the login, the API answers 401; the rest of the
    // listener still wants the bearer token.
    let (status, headers, _) = exchange(host, request("GET", "/dashboard/", host, &[], "")).await;
    assert_eq!(status, 303);
    assert_eq!(header(&headers, "location"), Some("/dashboard/login"));
    let (status, headers, page) =
        exchange(host, request("GET", "/dashboard/login", host, &[], "")).await;
    assert_eq!(status, 200);
    assert!(page.contains("login-form"), "{page}");
    let policy = header(&headers, "content-security-policy").unwrap_or_default();
    assert!(
        policy.contains("script-src 'self'") && !policy.contains("unsafe-inline"),
        "{policy}"
    );
    let (status, _, body) = exchange(
        host,
        request("GET", "/dashboard/api/overview", host, &[], ""),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let (status, _, _) = exchange(host, request("GET", "/metrics", host, &[], "")).await;
    assert_eq!(status, 401, "/metrics still needs the bearer token");
    let bearer = format!("Authorization: Bearer {token}");
    let (status, _, body) = exchange(
        host,
        request("GET", "/dashboard/api/overview", host, &[&bearer], ""),
    )
    .await;
    assert_eq!(status, 200, "the token itself lets a script in: {body}");

    // A wrong token opens nothing; the right one opens a session for this host only.
    let form = ["Content-Type: application/x-www-form-urlencoded"];
    let (status, headers, body) = exchange(
        host,
        request(
            "POST",
            "/dashboard/login",
            host,
            &form,
            &format!("token={}", "0".repeat(64)),
        ),
    )
    .await;
    assert_eq!(status, 401);
    assert!(header(&headers, "set-cookie").is_none());
    assert!(body.contains("not the daemon"), "{body}");
    let evil_origin = [
        "Content-Type: application/x-www-form-urlencoded",
        "Origin: http://evil.example",
    ];
    let (status, headers, _) = exchange(
        host,
        request(
            "POST",
            "/dashboard/login",
            host,
            &evil_origin,
            &format!("token={token}"),
        ),
    )
    .await;
    assert_eq!(status, 403, "a login posted from another site");
    assert!(header(&headers, "set-cookie").is_none());
    let (status, headers, _) = exchange(
        host,
        request(
            "POST",
            "/dashboard/login",
            host,
            &form,
            &format!("token={token}"),
        ),
    )
    .await;
    assert_eq!(status, 303);
    let cookie = header(&headers, "set-cookie")
        .expect("a session cookie")
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains(token), "the cookie is not the token");
    let session = cookie.split(';').next().unwrap();
    let with_session = format!("Cookie: {session}");
    let (status, _, body) = exchange(
        host,
        request("GET", "/dashboard/api/overview", host, &[&with_session], ""),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let overview: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(overview["states"]["pending"], 0);
    let other_host = format!("localhost:{port}");
    let (status, _, _) = exchange(
        host,
        request(
            "GET",
            "/dashboard/api/overview",
            &other_host,
            &[&with_session],
            "",
        ),
    )
    .await;
    assert_eq!(
        status, 401,
        "a session is bound to the host it was opened through"
    );

    // Actions: the CSRF header and the page's own origin.
    let pause = "/dashboard/api/pauses/echo/pause";
    let (status, _, _) = exchange(host, request("POST", pause, host, &[&with_session], "")).await;
    assert_eq!(status, 403, "no CSRF header");
    let origin = format!("Origin: http://{host}");
    let csrf = "X-Honeydew-Csrf: 1";
    let (status, _, _) = exchange(
        host,
        request(
            "POST",
            pause,
            host,
            &[&with_session, csrf, "Origin: http://evil.example"],
            "",
        ),
    )
    .await;
    assert_eq!(status, 403, "another origin");
    let (status, _, _) = exchange(
        host,
        request(
            "POST",
            pause,
            host,
            &[&with_session, csrf, "Sec-Fetch-Site: cross-site"],
            "",
        ),
    )
    .await;
    assert_eq!(status, 403, "a cross-site fetch");
    let (status, _, body) = exchange(
        host,
        request(
            "POST",
            pause,
            host,
            &[&with_session, csrf, &origin, "Sec-Fetch-Site: same-origin"],
            "",
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let paused = honeydew(data.path(), &["pause"], "");
    assert!(stdout(&paused).contains("echo"), "{}", stdout(&paused));

    // Logging out ends the session.
    let (status, _, _) = exchange(
        host,
        request(
            "POST",
            "/dashboard/logout",
            host,
            &[&with_session, &origin],
            "",
        ),
    )
    .await;
    assert_eq!(status, 303);
    let (status, _, _) = exchange(
        host,
        request("GET", "/dashboard/api/overview", host, &[&with_session], ""),
    )
    .await;
    assert_eq!(status, 401);
    // An open event stream ends at shutdown instead of holding the listener for its
    // grace period (5 s): the daemon stops at once.
    let mut events = tokio::net::TcpStream::connect(host).await.expect("connect");
    events
        .write_all(request("GET", "/dashboard/api/events", host, &[&bearer], "").as_bytes())
        .await
        .expect("send");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(PATIENCE, events.read(&mut byte))
            .await
            .expect("the stream's head in time")
            .expect("read");
        assert_eq!(
            read,
            1,
            "the stream ended early: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("text/event-stream"),
        "{head}"
    );
    let stopping = std::time::Instant::now();
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, events.read_to_end(&mut rest))
        .await
        .expect("the stream ended")
        .expect("read");
    assert!(
        stopping.elapsed() < std::time::Duration::from_secs(4),
        "shutdown took {:?} with a dashboard open",
        stopping.elapsed()
    );
}
