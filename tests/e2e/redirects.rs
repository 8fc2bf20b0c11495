//! Redirects of a plugin's requests, followed by the host (issue 10): the real daemon,
//! the `fetch` fixture, and loopback stubs. Two stubs on 127.0.0.1 are two origins
//! (their ports differ), so one stands for an API and the other for the host that it
//! redirects to (GitHub's codeload, say).

use honeydew::api::pb::JobStatus;
use serde_json::{Value, json};

use crate::support::{
    Daemon, DataDir, HttpStub, Reply, daemon_command, finished, result_text, submit,
};

/// The request line's path, such as `/old` for `GET /old HTTP/1.1`.
fn path(line: &str) -> &str {
    line.split_whitespace().nth(1).unwrap_or_default()
}

/// Writes the `fetch` manifest: `allowed` hosts and `[[auth]]` rules, each
/// `(host, header, secret name)`, whose value is the secret.
fn fetch_manifest(data: &DataDir, allowed: &[&str], auth: &[(&str, &str, &str)]) {
    let allowed: Vec<String> = allowed.iter().map(|host| format!("{host:?}")).collect();
    let mut manifest = format!("[network]\nallowed_hosts = [{}]\n", allowed.join(", "));
    for (host, header, secret) in auth {
        manifest.push_str(&format!(
            "\n[[auth]]\nhost = {host:?}\nheader = {header:?}\nvalue = \"${{{secret}}}\"\n"
        ));
    }
    std::fs::write(data.manifest("fetch"), manifest).expect("write the fetch manifest");
}

/// The `fetch.get` result's `status` and `body`.
fn fetched(job: &honeydew::api::pb::Job) -> (u64, String) {
    let result: Value = serde_json::from_str(&result_text(job)).expect("a JSON result");
    let status = result["status"].as_u64().expect("a status");
    let body = result["body"].as_str().expect("a body").to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_301_is_followed_to_the_final_response() {
    let api = HttpStub::start_replying(|request, _| match path(&request.line) {
        "/repos/old/name" => Reply::redirect(301, "/repositories/42"),
        "/repositories/42" => Reply::redirect(302, "commits?page=2"),
        "/repositories/commits?page=2" => Reply::new(200, r#"["the commits"]"#),
        _ => Reply::new(404, "no such path"),
    })
    .await;
    let data = DataDir::with_plugins(&["fetch"]);
    let daemon = Daemon::start(&data, &[]);
    let channel = daemon.connect().await;

    let payload = json!({"url": format!("{}/repos/old/name", api.base_url)});
    let id = submit(&channel, "fetch.get", &payload.to_string()).await;
    let job = finished(&channel, &id).await;

    assert_eq!(job.status(), JobStatus::Completed, "{:?}", job.error);
    assert_eq!(fetched(&job), (200, r#"["the commits"]"#.to_owned()));
    let lines: Vec<String> = api.received().into_iter().map(|seen| seen.line).collect();
    assert_eq!(
        lines,
        [
            "GET /repos/old/name HTTP/1.1",
            "GET /repositories/42 HTTP/1.1",
            "GET /repositories/commits?page=2 HTTP/1.1",
        ]
    );
}

/// The clone case of issue 10: the API redirects to another host, which the manifest
/// grants with a credential of its own. Each host gets its own credential only; the
/// guest's cookie stays with the origin it was meant for.
#[tokio::test(flavor = "multi_thread")]
async fn a_cross_origin_redirect_gets_the_credential_of_its_host_and_not_the_first() {
    const API_TOKEN: &str = "api-t0ken";
    const ARCHIVE_TOKEN: &str = "archive-t0ken";
    let archive = HttpStub::start(|_, _| (200, "the archive".into())).await;
    let location = format!("{}/legacy.tar.gz/main", archive.base_url);
    let api = HttpStub::start_replying(move |_, _| Reply::redirect(302, &location)).await;
    let data = DataDir::with_plugins(&["fetch"]);
    fetch_manifest(
        &data,
        &[api.base_url.as_str(), archive.base_url.as_str()],
        &[
            (api.base_url.as_str(), "Authorization", "API_TOKEN"),
            (archive.base_url.as_str(), "Private-Token", "ARCHIVE_TOKEN"),
        ],
    );
    let mut command = daemon_command(data.path(), &[]);
    command.env("HONEYDEW_SECRET_API_TOKEN", API_TOKEN);
    command.env("HONEYDEW_SECRET_ARCHIVE_TOKEN", ARCHIVE_TOKEN);
    let daemon = Daemon::start_command(command, data.socket());
    let channel = daemon.connect().await;

    let payload = json!({
        "url": format!("{}/repos/o/r/tarball/main", api.base_url),
        "headers": {"cookie": "session=for-the-api", "x-plugin": "1"},
    });
    let id = submit(&channel, "fetch.get", &payload.to_string()).await;
    let job = finished(&channel, &id).await;

    assert_eq!(job.status(), JobStatus::Completed, "{:?}", job.error);
    assert_eq!(fetched(&job), (200, "the archive".to_owned()));
    let text = result_text(&job);
    assert!(
        !text.contains(API_TOKEN) && !text.contains(ARCHIVE_TOKEN),
        "{text}"
    );

    let to_api = api.received();
    let [first] = &to_api[..] else {
        panic!("one request to the API: {to_api:?}");
    };
    assert_eq!(first.line, "GET /repos/o/r/tarball/main HTTP/1.1");
    assert_eq!(
        first.header("authorization"),
        Some(API_TOKEN),
        "the API's credential"
    );
    assert_eq!(first.header("private-token"), None);
    assert_eq!(first.header("cookie"), Some("session=for-the-api"));

    let to_archive = archive.received();
    let [hop] = &to_archive[..] else {
        panic!("one request to the archive: {to_archive:?}");
    };
    assert_eq!(hop.line, "GET /legacy.tar.gz/main HTTP/1.1");
    let archive_host = archive.base_url.strip_prefix("http://").unwrap();
    assert_eq!(hop.header("host"), Some(archive_host));
    assert_eq!(
        hop.header("private-token"),
        Some(ARCHIVE_TOKEN),
        "its own credential"
    );
    assert_eq!(
        hop.header("authorization"),
        None,
        "the API's credential never reaches another host"
    );
    assert_eq!(hop.header("cookie"), None, "nor the guest's cookie");
    assert_eq!(hop.header("x-plugin"), Some("1"), "other headers go along");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_to_a_host_not_granted_is_egress_denied_and_never_reached() {
    let elsewhere = HttpStub::start(|_, _| (200, "should not be reached".into())).await;
    let location = format!("{}/collect?token=s3cr3t-in-the-query", elsewhere.base_url);
    let api = HttpStub::start_replying(move |_, _| Reply::redirect(307, &location)).await;
    let data = DataDir::with_plugins(&["fetch"]);
    fetch_manifest(
        &data,
        &[api.base_url.as_str()],
        &[(api.base_url.as_str(), "Authorization", "API_TOKEN")],
    );
    let mut command = daemon_command(data.path(), &[]);
    command.env("HONEYDEW_SECRET_API_TOKEN", "api-t0ken");
    let daemon = Daemon::start_command(command, data.socket());
    let channel = daemon.connect().await;

    let payload = json!({"url": format!("{}/start", api.base_url)});
    let id = submit(&channel, "fetch.get", &payload.to_string()).await;
    let job = finished(&channel, &id).await;

    assert_eq!(job.status(), JobStatus::Failed);
    assert_eq!(job.error_kind(), "egress_denied");
    assert_eq!(job.retry_count, 0, "a denial is permanent");
    assert_eq!(
        job.error(),
        format!(
            "plugin \"fetch\" tried to reach {}/collect (a redirect from {}/start), which its \
             manifest's network.allowed_hosts does not grant",
            elsewhere.base_url, api.base_url
        )
    );
    assert_eq!(api.received().len(), 1);
    assert!(
        elsewhere.received().is_empty(),
        "{:?}",
        elsewhere.received()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_loop_ends_after_5_redirects_with_a_permanent_error() {
    let api = HttpStub::start_replying(|_, _| Reply::redirect(302, "/loop")).await;
    let data = DataDir::with_plugins(&["fetch"]);
    let daemon = Daemon::start(&data, &[]);
    let channel = daemon.connect().await;

    let payload = json!({"url": format!("{}/loop", api.base_url)});
    let id = submit(&channel, "fetch.get", &payload.to_string()).await;
    let job = finished(&channel, &id).await;

    assert_eq!(job.status(), JobStatus::Failed);
    assert_eq!(job.error_kind(), "plugin_error");
    assert_eq!(job.retry_count, 0, "a loop is permanent: no retry");
    assert_eq!(
        job.error(),
        format!(
            "HTTP 302: redirect not followed: the host follows at most 5 redirects for one \
             request, and this is one more (to {}/loop)",
            api.base_url
        )
    );
    assert_eq!(api.received().len(), 6, "the request and 5 redirects");
}

/// A 307 sends the POST again with its body; a 303 after it ("see other") turns it into
/// a GET without body or body headers.
#[tokio::test(flavor = "multi_thread")]
async fn a_307_keeps_the_post_and_its_body_and_a_303_turns_it_into_a_get() {
    let api = HttpStub::start_replying(|request, _| match path(&request.line) {
        "/submit" => Reply::redirect(307, "/submit-here"),
        "/submit-here" => Reply::redirect(303, "/submitted/7"),
        "/submitted/7" => Reply::new(200, r#"{"id": 7}"#),
        _ => Reply::new(404, "no such path"),
    })
    .await;
    let data = DataDir::with_plugins(&["fetch"]);
    let daemon = Daemon::start(&data, &[]);
    let channel = daemon.connect().await;

    let payload = json!({
        "url": format!("{}/submit", api.base_url),
        "method": "POST",
        "json": {"title": "a new issue"},
    });
    let id = submit(&channel, "fetch.get", &payload.to_string()).await;
    let job = finished(&channel, &id).await;

    assert_eq!(job.status(), JobStatus::Completed, "{:?}", job.error);
    assert_eq!(fetched(&job), (200, r#"{"id": 7}"#.to_owned()));
    let body = r#"{"title":"a new issue"}"#;
    let length = body.len().to_string();
    let seen: Vec<_> = api
        .received()
        .into_iter()
        .map(|seen| {
            (
                seen.line.clone(),
                seen.body.clone(),
                seen.header("content-type").map(str::to_owned),
                seen.header("content-length").map(str::to_owned),
            )
        })
        .collect();
    let json = Some("application/json".to_owned());
    assert_eq!(
        seen,
        [
            (
                "POST /submit HTTP/1.1".to_owned(),
                body.to_owned(),
                json.clone(),
                Some(length.clone())
            ),
            (
                "POST /submit-here HTTP/1.1".to_owned(),
                body.to_owned(),
                json,
                Some(length)
            ),
            (
                "GET /submitted/7 HTTP/1.1".to_owned(),
                String::new(),
                None,
                None
            ),
        ]
    );
}
