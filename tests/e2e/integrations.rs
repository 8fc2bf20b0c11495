//! The five integration plugins end to end against local fakes of their APIs on
//! 127.0.0.1, each written from that API's documentation: its response shapes, its
//! way of paging (GitHub's `Link`, GitLab's `x-next-page`, Jira's `nextPageToken` and
//! `startAt`, Linear's `pageInfo`, Bitbucket's `next`), null authors, 401s.
//!
//! Every result is checked against its command's JSON Schema
//! (`plugins/NAME/schema/COMMAND.json`). Every plugin runs with its shipped manifest,
//! only `base_url` changed to the fake:
//! that one line moves the egress grant and the auth rule with it (issue 10, item 7),
//! so each test also shows the token reaching the fake through the host's rule.

use honeydew::api::pb::{self, JobStatus, git_hub_client::GitHubClient};
use serde_json::{Value, json};

use crate::support::{
    Daemon, DataDir, HttpStub, Received, Reply, assert_matches_schema, daemon_command, finished,
    get, honeydew, stderr, stdout, submit,
};

/// A data directory with `plugin` whose shipped manifest has `base_url` (and, for
/// GitHub, `codeload_url`) set to `url`, nothing else changed.
fn pointed_at(plugin: &str, url: &str) -> DataDir {
    let data = DataDir::with_plugins(&[plugin]);
    let manifest = std::fs::read_to_string(data.manifest(plugin)).unwrap();
    let mut pointed = String::new();
    for line in manifest.lines() {
        let setting = line.trim_start_matches(['#', ' ']);
        if let Some(key @ ("base_url" | "codeload_url")) = setting
            .split(" = ")
            .next()
            .filter(|_| setting.contains(" = \""))
        {
            pointed.push_str(&format!("{key} = \"{url}\"\n"));
        } else {
            pointed.push_str(line);
            pointed.push('\n');
        }
    }
    assert!(
        pointed.contains(&format!("base_url = \"{url}\"")),
        "{pointed}"
    );
    std::fs::write(data.manifest(plugin), pointed).unwrap();
    data
}

/// Starts the daemon on `data` with the secret `name` = `value`.
fn start(data: &DataDir, name: &str, value: &str) -> Daemon {
    let mut command = daemon_command(data.path(), &[]);
    command.env(format!("HONEYDEW_SECRET_{name}"), value);
    Daemon::start_command(command, data.socket())
}

/// Runs `command` with `payload` to its end; returns the job.
async fn run(daemon: &Daemon, command: &str, payload: Value) -> pb::Job {
    let channel = daemon.connect().await;
    let id = submit(&channel, command, &payload.to_string()).await;
    finished(&channel, &id).await
}

/// The envelope of a completed job, checked against its command's JSON Schema.
fn envelope(job: &pb::Job) -> Value {
    assert_eq!(job.status(), JobStatus::Completed, "{:?}", job.error);
    let result: Value = serde_json::from_slice(job.result()).unwrap();
    assert_matches_schema(&job.command, &result);
    let mut keys: Vec<&String> = result.as_object().expect("an object").keys().collect();
    keys.sort();
    assert_eq!(keys, ["items", "next", "truncated"], "{result}");
    assert_eq!(
        result["truncated"].as_bool().unwrap(),
        !result["next"].is_null(),
        "{result}"
    );
    result
}

/// One field of each item.
fn field(envelope: &Value, name: &str) -> Vec<Value> {
    envelope["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item[name].clone())
        .collect()
}

/// A request's path (before `?`).
fn path(request: &Received) -> &str {
    let target = request.line.split(' ').nth(1).unwrap_or_default();
    target.split('?').next().unwrap_or_default()
}

/// A request's query parameters, percent-decoded, in order.
fn query(request: &Received) -> Vec<(String, String)> {
    let target = request.line.split(' ').nth(1).unwrap_or_default();
    let Some((_, query)) = target.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

/// The first value of query parameter `name`.
fn param(request: &Received, name: &str) -> Option<String> {
    query(request)
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'%' if at + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[at + 1..at + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                at += 3;
            }
            b'+' => {
                out.push(b' ');
                at += 1;
            }
            byte => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// `http://HOST` of the server a request reached, from its `Host` header.
fn origin(request: &Received) -> String {
    format!("http://{}", request.header("host").expect("a host header"))
}

/// A page of `total` items numbered from 0: the range of page `page` (1-based) of
/// size `size`, and whether another follows.
fn slice(total: usize, page: usize, size: usize) -> (std::ops::Range<usize>, bool) {
    let start = (page.max(1) - 1) * size;
    let end = total.min(start + size);
    (start.min(end)..end, end < total)
}

// ---------------------------------------------------------------------------------
// GitHub: `Link: <...>; rel="next"`, `per_page` (default 30, at most 100), `page`.
// Links name the repository by id (`/repositories/1296269/commits`), as GitHub's do.

const GITHUB_TOKEN: &str = "ghp_t0ken-for-tests";
const COMMIT_COUNT: usize = 137;

fn github_commit(n: usize) -> Value {
    // Every tenth commit has no GitHub-resolvable author, as in real histories.
    let author = if n % 10 == 3 {
        Value::Null
    } else {
        json!({"name": format!("Dev {n}"), "email": "dev@example.com", "date": "2025-01-02T03:04:05Z"})
    };
    json!({
        "sha": format!("{n:040x}"),
        "node_id": "C_kwDOA",
        "commit": {"message": format!("commit {n}"), "author": author, "committer": author},
        "author": null,
        "html_url": format!("https://github.com/octocat/hello/commit/{n:040x}")
    })
}

/// GitHub's `Link` header for page `page` of `last` at `url` (`?per_page=..&page=`).
fn github_link(url: &str, page: usize, last: usize) -> String {
    let mut links = Vec::new();
    if page < last {
        links.push(format!("<{url}{}>; rel=\"next\"", page + 1));
        links.push(format!("<{url}{last}>; rel=\"last\""));
    }
    if page > 1 {
        links.push(format!("<{url}1>; rel=\"first\""));
        links.push(format!("<{url}{}>; rel=\"prev\"", page - 1));
    }
    links.join(", ")
}

/// A fake of GitHub's REST API: 137 commits of octocat/hello; `/users/{login}` for a
/// user `octocat` and an organisation `acme`; repositories of each; pull requests,
/// one merged and one closed unmerged. Without the token: 401, as GitHub answers.
async fn fake_github() -> HttpStub {
    HttpStub::start_replying(|request, _| {
        if request.header("authorization") != Some(format!("Bearer {GITHUB_TOKEN}").as_str()) {
            return Reply::new(
                401,
                r#"{"message":"Bad credentials","documentation_url":"https://docs.github.com/rest"}"#,
            );
        }
        let per_page = param(request, "per_page").map_or(30, |size| size.parse().unwrap());
        let page = param(request, "page").map_or(1, |page| page.parse().unwrap());
        let base = origin(request);
        match path(request) {
            "/repos/octocat/hello/commits" | "/repositories/1296269/commits" => {
                let last = COMMIT_COUNT.div_ceil(per_page);
                let (range, _) = slice(COMMIT_COUNT, page, per_page);
                let items: Vec<Value> = range.map(github_commit).collect();
                let url = format!("{base}/repositories/1296269/commits?per_page={per_page}&page=");
                let mut reply = Reply::new(200, &Value::from(items).to_string());
                reply.headers.push(("link".into(), github_link(&url, page, last)));
                reply
            }
            "/users/acme" => Reply::new(200, r#"{"login":"acme","id":2,"type":"Organization"}"#),
            "/users/octocat" => Reply::new(200, r#"{"login":"octocat","id":1,"type":"User"}"#),
            "/orgs/acme/repos" => Reply::new(
                200,
                r#"[{"id":20,"full_name":"acme/private-thing","private":true,"default_branch":"main",
                    "description":null,"html_url":"https://github.com/acme/private-thing",
                    "updated_at":"2025-03-04T05:06:07Z"}]"#,
            ),
            "/users/octocat/repos" => Reply::new(
                200,
                r#"[{"id":1296269,"full_name":"octocat/hello","private":false,"default_branch":"main",
                    "description":"My first repository","html_url":"https://github.com/octocat/hello",
                    "updated_at":"2025-03-04T05:06:07Z"}]"#,
            ),
            "/repos/octocat/hello/pulls" => Reply::new(
                200,
                r#"[{"number":2,"title":"merged one","state":"closed","draft":false,
                     "user":{"login":"ada"},"head":{"ref":"f2"},"base":{"ref":"main"},
                     "html_url":"https://github.com/octocat/hello/pull/2",
                     "created_at":"2025-01-01T00:00:00Z","updated_at":"2025-01-03T00:00:00Z",
                     "closed_at":"2025-01-02T00:00:00Z","merged_at":"2025-01-02T00:00:00Z"},
                    {"number":1,"title":"rejected one","state":"closed","draft":false,
                     "user":null,"head":{"ref":"f1"},"base":{"ref":"main"},
                     "html_url":"https://github.com/octocat/hello/pull/1",
                     "created_at":"2025-01-01T00:00:00Z","updated_at":"2025-01-03T00:00:00Z",
                     "closed_at":"2025-01-02T00:00:00Z","merged_at":null}]"#,
            ),
            _ => Reply::new(404, r#"{"message":"Not Found"}"#),
        }
    })
    .await
}

/// The 137 shas in order.
fn all_shas() -> Vec<Value> {
    (0..COMMIT_COUNT)
        .map(|n| Value::from(format!("{n:040x}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn github_commits_come_back_complete_across_pages() {
    let github = fake_github().await;
    let data = pointed_at("github", &github.base_url);
    let daemon = start(&data, "GITHUB_TOKEN", GITHUB_TOKEN);

    let job = run(
        &daemon,
        "github.commits",
        json!({"owner": "octocat", "repo": "hello", "max_items": 1000}),
    )
    .await;
    let result = envelope(&job);
    assert_eq!(field(&result, "sha"), all_shas());
    assert_eq!(result["truncated"], false);
    // The SDK's paging reports every page fetched as the job's progress.
    let progress = get(&daemon.connect().await, &job.id)
        .await
        .progress
        .expect("the pages fetched were reported");
    assert_eq!((progress.done, progress.total), (2, None));
    assert_eq!(
        progress.message(),
        format!("2 pages fetched, {} items", all_shas().len())
    );
    assert_eq!(result["items"][3]["author"], Value::Null);
    assert_eq!(
        result["items"][4]["author"],
        json!({"login": null, "name": "Dev 4", "email": "dev@example.com"})
    );

    let received = github.received();
    let lines: Vec<&str> = received
        .iter()
        .map(|request| request.line.as_str())
        .collect();
    assert_eq!(
        lines,
        [
            "GET /repos/octocat/hello/commits?per_page=100 HTTP/1.1",
            "GET /repositories/1296269/commits?per_page=100&page=2 HTTP/1.1",
        ]
    );
    for request in &received {
        assert_eq!(
            request.header("authorization"),
            Some(&*format!("Bearer {GITHUB_TOKEN}")),
            "the host's auth rule follows base_url to every page"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn max_items_truncates_and_next_resumes_through_the_cli() {
    let github = fake_github().await;
    let data = pointed_at("github", &github.base_url);
    let _daemon = start(&data, "GITHUB_TOKEN", GITHUB_TOKEN);
    let data_dir = data.path().to_path_buf();
    let cli = move |extra: Vec<String>| {
        let data_dir = data_dir.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut args = vec!["github", "commits", "--owner", "octocat", "--repo", "hello"];
                args.extend(extra.iter().map(String::as_str));
                args.push("--wait");
                let output = honeydew(&data_dir, &args, "");
                assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
                let result = serde_json::from_str::<Value>(&stdout(&output)).unwrap();
                assert_matches_schema("github.commits", &result);
                result
            })
            .await
            .unwrap()
        }
    };

    // 45 at a time from pages of 100: the cuts fall inside pages, and each cursor
    // resumes mid-page.
    let mut shas = Vec::new();
    let mut pages = 0;
    let mut next: Option<String> = None;
    loop {
        let mut extra = ["--max-items", "45", "--per-page", "100"]
            .map(str::to_owned)
            .to_vec();
        if let Some(cursor) = &next {
            extra.extend(["--next".to_owned(), cursor.clone()]);
        }
        let result = cli(extra).await;
        assert!(result["items"].as_array().unwrap().len() <= 45);
        shas.extend(field(&result, "sha"));
        pages += 1;
        match result["next"].as_str() {
            Some(cursor) => {
                assert_eq!(result["truncated"], true);
                next = Some(cursor.to_owned());
            }
            None => break,
        }
    }
    assert_eq!(shas, all_shas(), "every commit once, in order");
    assert_eq!(pages, 4);

    // --all takes everything up to the hard cap.
    let result = cli(vec!["--all".to_owned()]).await;
    assert_eq!(field(&result, "sha"), all_shas());
}

/// base64url (no padding) of `text`, as the SDK encodes cursors.
fn base64url(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let mut word = 0u32;
        for (at, &byte) in chunk.iter().enumerate() {
            word |= u32::from(byte) << (16 - 8 * at);
        }
        for at in 0..=chunk.len() {
            out.push(ALPHABET[((word >> (18 - 6 * at)) & 0x3f) as usize] as char);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cursor_to_another_host_is_refused_before_any_request() {
    let github = fake_github().await;
    // Another server the manifest does not name, which must see nothing.
    let elsewhere = HttpStub::start(|_, _| (200, "[]".to_owned())).await;
    let data = pointed_at("github", &github.base_url);
    let daemon = start(&data, "GITHUB_TOKEN", GITHUB_TOKEN);

    let forged = base64url(&format!(
        r#"{{"c":"commits","p":"{}/repositories/1296269/commits?page=2","s":0}}"#,
        elsewhere.base_url
    ));
    let job = run(
        &daemon,
        "github.commits",
        json!({"owner": "octocat", "repo": "hello", "next": forged}),
    )
    .await;
    assert_eq!(job.status(), JobStatus::Failed);
    assert_eq!(job.retry_count, 0, "a bad cursor is permanent");
    let error = job.error.clone().unwrap_or_default();
    assert!(
        error.starts_with("invalid payload: field \"next\"")
            && error.contains("outside the plugin's base URL"),
        "{error}"
    );
    assert!(elsewhere.received().is_empty());
    assert!(github.received().is_empty());

    // Nor does a cursor of another command pass.
    let first = envelope(
        &run(
            &daemon,
            "github.commits",
            json!({"owner": "octocat", "repo": "hello", "max_items": 5}),
        )
        .await,
    );
    let job = run(
        &daemon,
        "github.pullRequests",
        json!({"owner": "octocat", "repo": "hello", "next": first["next"]}),
    )
    .await;
    assert_eq!(job.status(), JobStatus::Failed);
    assert!(
        job.error().contains("continues command \"commits\""),
        "{:?}",
        job.error
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn github_lists_an_organisation_through_orgs_and_tells_merged_from_closed() {
    let github = fake_github().await;
    let data = pointed_at("github", &github.base_url);
    let daemon = start(&data, "GITHUB_TOKEN", GITHUB_TOKEN);

    let result = envelope(&run(&daemon, "github.repositories", json!({"owner": "acme"})).await);
    assert_eq!(field(&result, "full_name"), [json!("acme/private-thing")]);
    assert_eq!(result["items"][0]["private"], true);
    assert_eq!(result["items"][0]["id"], "20");
    assert_eq!(
        result["items"][0]["url"],
        "https://github.com/acme/private-thing"
    );
    let result = envelope(&run(&daemon, "github.repositories", json!({"owner": "octocat"})).await);
    assert_eq!(field(&result, "full_name"), [json!("octocat/hello")]);
    let paths: Vec<String> = github
        .received()
        .iter()
        .map(|r| path(r).to_owned())
        .collect();
    assert_eq!(
        paths,
        [
            "/users/acme",
            "/orgs/acme/repos",
            "/users/octocat",
            "/users/octocat/repos"
        ]
    );

    // Pull requests with filters, through the typed RPC.
    let channel = daemon.connect().await;
    let request = pb::GitHubGetPullRequestsRequest {
        owner: "octocat".into(),
        repo: "hello".into(),
        state: "closed".into(),
        sort: "updated".into(),
        direction: "desc".into(),
        page: Some(pb::PageOptions {
            max_items: 10,
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = GitHubClient::new(channel.clone())
        .get_pull_requests(request)
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let result = envelope(&finished(&channel, &id).await);
    assert_eq!(field(&result, "state"), [json!("merged"), json!("closed")]);
    assert_eq!(
        field(&result, "source_state"),
        [json!("closed"), json!("closed")]
    );
    assert_eq!(
        field(&result, "merged_at"),
        [json!("2025-01-02T00:00:00Z"), Value::Null]
    );
    let last = github.received().pop().unwrap();
    assert_eq!(
        query(&last),
        [
            ("per_page", "10"),
            ("state", "closed"),
            ("sort", "updated"),
            ("direction", "desc"),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
    );

    // Commit filters reach GitHub as its documented parameters.
    let job = run(
        &daemon,
        "github.commits",
        json!({"owner": "octocat", "repo": "hello", "max_items": 1,
               "since": "2025-01-01T00:00:00+01:00", "until": "2025-02-01T00:00:00Z",
               "path": "src/main.rs", "author": "ada"}),
    )
    .await;
    envelope(&job);
    let last = github.received().pop().unwrap();
    assert_eq!(
        param(&last, "since").as_deref(),
        Some("2024-12-31T23:00:00Z")
    );
    assert_eq!(
        param(&last, "until").as_deref(),
        Some("2025-02-01T00:00:00Z")
    );
    assert_eq!(param(&last, "path").as_deref(), Some("src/main.rs"));
    assert_eq!(param(&last, "author").as_deref(), Some("ada"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_401_fails_at_once() {
    let github = fake_github().await;
    let data = pointed_at("github", &github.base_url);
    let daemon = start(&data, "GITHUB_TOKEN", "not-the-token");
    let job = run(
        &daemon,
        "github.commits",
        json!({"owner": "octocat", "repo": "hello"}),
    )
    .await;
    assert_eq!(job.status(), JobStatus::Failed);
    assert_eq!(job.retry_count, 0);
    assert!(job.error().starts_with("HTTP 401: "), "{:?}", job.error);
    assert_eq!(github.received().len(), 1);
}

// ---------------------------------------------------------------------------------
// GitLab: `x-next-page` / `x-page` / `x-per-page` headers (this fake sends no Link, as
// an older or proxied GitLab may not), `PRIVATE-TOKEN`.

const GITLAB_TOKEN: &str = "glpat-t0ken";

async fn fake_gitlab() -> HttpStub {
    HttpStub::start_replying(|request, _| {
        if request.header("private-token") != Some(GITLAB_TOKEN) {
            return Reply::new(401, r#"{"message":"401 Unauthorized"}"#);
        }
        let per_page = param(request, "per_page").map_or(20, |size| size.parse().unwrap());
        let page = param(request, "page").map_or(1, |page| page.parse().unwrap());
        let (total, item): (usize, fn(usize) -> Value) = match path(request) {
            "/api/v4/groups/acme%2Fplatform/projects" | "/api/v4/groups/acme/platform/projects" => {
                let subgroups = param(request, "include_subgroups").as_deref() == Some("true");
                (if subgroups { 5 } else { 2 }, |n| {
                    json!({"id": n, "path_with_namespace": format!("acme/platform/p{n}"),
                           "default_branch": "main", "visibility": "private",
                           "web_url": format!("https://gitlab.example/acme/platform/p{n}"),
                           "last_activity_at": "2025-01-02T03:04:05.678+01:00"})
                })
            }
            "/api/v4/projects/acme%2Fplatform%2Fp1/merge_requests" => (3, |n| {
                let state = ["opened", "merged", "closed"][n];
                json!({"iid": n + 1, "title": format!("mr {n}"), "state": state, "draft": false,
                       "author": if n == 2 { Value::Null } else { json!({"username": "ada"}) },
                       "source_branch": "f", "target_branch": "main",
                       "web_url": "https://gitlab.example/acme/platform/p1/-/merge_requests/1",
                       "created_at": "2025-01-02T03:04:05.000Z",
                       "updated_at": "2025-01-03T03:04:05.000Z",
                       "merged_at": if state == "merged" { json!("2025-01-03T00:00:00.000Z") } else { Value::Null },
                       "closed_at": null})
            }),
            "/api/v4/projects/acme%2Fplatform%2Fp1/issues" => (3, |n| {
                let state = if n == 1 { "closed" } else { "opened" };
                json!({"id": 100 + n, "iid": n + 1, "project_id": 1, "title": format!("issue {n}"),
                       "state": state, "issue_type": "issue",
                       "author": {"id": 9, "username": "ada", "name": "Ada Lovelace"},
                       "assignees": [], "assignee": null, "labels": ["bug"],
                       "web_url": format!("https://gitlab.example/acme/platform/p1/-/issues/{}", n + 1),
                       "created_at": "2025-01-02T03:04:05.000+01:00",
                       "updated_at": "2025-01-03T03:04:05.000Z",
                       "closed_at": if state == "closed" { json!("2025-01-03T00:00:00.000Z") } else { Value::Null },
                       "references": {"short": format!("#{}", n + 1), "relative": format!("#{}", n + 1),
                                      "full": format!("acme/platform/p1#{}", n + 1)}})
            }),
            _ => return Reply::new(404, r#"{"message":"404 Project Not Found"}"#),
        };
        let (range, more) = slice(total, page, per_page);
        let items: Vec<Value> = range.map(item).collect();
        let mut reply = Reply::new(200, &Value::from(items).to_string());
        let next = if more { (page + 1).to_string() } else { String::new() };
        reply.headers.extend([
            ("x-next-page".to_owned(), next),
            ("x-page".to_owned(), page.to_string()),
            ("x-per-page".to_owned(), per_page.to_string()),
        ]);
        reply
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn gitlab_follows_x_next_page_with_subgroups_and_filters() {
    let gitlab = fake_gitlab().await;
    let data = pointed_at("gitlab", &format!("{}/api/v4", gitlab.base_url));
    let daemon = start(&data, "GITLAB_TOKEN", GITLAB_TOKEN);

    let result = envelope(
        &run(
            &daemon,
            "gitlab.projects",
            json!({"group": "acme/platform", "include_subgroups": true, "per_page": 2}),
        )
        .await,
    );
    assert_eq!(
        field(&result, "id"),
        ["0", "1", "2", "3", "4"].map(Value::from)
    );
    assert_eq!(result["items"][0]["updated_at"], "2025-01-02T02:04:05.678Z");
    assert_eq!(result["items"][0]["private"], true);
    let received = gitlab.received();
    assert_eq!(received.len(), 3, "three pages of two");
    assert_eq!(
        param(&received[0], "include_subgroups").as_deref(),
        Some("true")
    );
    assert_eq!(param(&received[2], "page").as_deref(), Some("3"));

    let result = envelope(
        &run(
            &daemon,
            "gitlab.mergeRequests",
            json!({"project": "acme/platform/p1", "state": "all", "updated_after": "2025-01-01T00:00:00Z", "max_items": 2}),
        )
        .await,
    );
    assert_eq!(field(&result, "state"), [json!("open"), json!("merged")]);
    assert_eq!(
        field(&result, "source_state"),
        [json!("opened"), json!("merged")]
    );
    let last = gitlab.received().pop().unwrap();
    assert_eq!(
        param(&last, "updated_after").as_deref(),
        Some("2025-01-01T00:00:00Z")
    );
    assert_eq!(param(&last, "per_page").as_deref(), Some("2"));
    // The third resumes from the cursor: page 2.
    let rest = envelope(
        &run(
            &daemon,
            "gitlab.mergeRequests",
            json!({"project": "acme/platform/p1", "state": "all", "next": result["next"]}),
        )
        .await,
    );
    assert_eq!(field(&rest, "number"), [json!(3)]);
    assert_eq!(rest["items"][0]["author"], Value::Null);

    // Issues through the CLI shortcut, with the filters GitLab names.
    let data_dir = data.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        honeydew(
            &data_dir,
            &[
                "gitlab",
                "issues",
                "--project",
                "acme/platform/p1",
                "--updated-after",
                "2025-01-01T00:00:00Z",
                "--labels",
                "bug",
                "--per-page",
                "2",
                "--wait",
            ],
            "",
        )
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let issues: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_matches_schema("gitlab.issues", &issues);
    assert_eq!(
        field(&issues, "key"),
        [
            "acme/platform/p1#1",
            "acme/platform/p1#2",
            "acme/platform/p1#3"
        ]
        .map(Value::from)
    );
    assert_eq!(
        field(&issues, "state"),
        ["open", "closed", "open"].map(Value::from)
    );
    assert_eq!(issues["items"][0]["reporter"]["login"], "ada");
    assert_eq!(issues["items"][0]["created_at"], "2025-01-02T02:04:05Z");
    let requests = gitlab.received();
    let last_two = &requests[requests.len() - 2..];
    assert_eq!(
        param(&last_two[0], "updated_after").as_deref(),
        Some("2025-01-01T00:00:00Z")
    );
    assert_eq!(param(&last_two[0], "labels").as_deref(), Some("bug"));
    assert_eq!(param(&last_two[1], "page").as_deref(), Some("2"));
}

// ---------------------------------------------------------------------------------
// Jira Cloud: `GET /rest/api/3/search/jql` pages by `nextPageToken` (no total);
// `GET /rest/api/3/project/search` by `startAt` with `total` and `isLast`.

const JIRA_BASIC: &str = "YWRhQGV4YW1wbGUuY29tOnRva2Vu"; // base64("ada@example.com:token")

async fn fake_jira() -> HttpStub {
    HttpStub::start_replying(|request, _| {
        if request.header("authorization") != Some(format!("Basic {JIRA_BASIC}").as_str()) {
            return Reply::new(401, r#"{"errorMessages":["You are not authenticated."]}"#);
        }
        let max_results = param(request, "maxResults").map_or(50, |n| n.parse().unwrap());
        match path(request) {
            "/rest/api/3/search/jql" => {
                if param(request, "jql").as_deref() != Some("project = \"HD\" ORDER BY updated DESC") {
                    return Reply::new(400, r#"{"errorMessages":["unexpected jql"]}"#);
                }
                let start: usize = param(request, "nextPageToken")
                    .map_or(0, |token| token.strip_prefix("tok-").unwrap().parse().unwrap());
                let total = 7;
                let end = total.min(start + max_results);
                let issues: Vec<Value> = (start..end)
                    .map(|n| {
                        json!({"id": n.to_string(), "key": format!("HD-{}", n + 1), "fields": {
                            "summary": format!("issue {n}"),
                            "status": {"name": "In Review", "statusCategory": {"key": "indeterminate"}},
                            "issuetype": {"name": "Task"}, "priority": null, "assignee": null,
                            "reporter": {"displayName": "Ada"},
                            "created": "2025-01-02T03:04:05.000+0000",
                            "updated": "2025-01-02T03:04:05.000+0200"}})
                    })
                    .collect();
                let mut page = json!({"issues": issues, "isLast": end >= total});
                if end < total {
                    page["nextPageToken"] = json!(format!("tok-{end}"));
                }
                Reply::new(200, &page.to_string())
            }
            "/rest/api/3/project/search" => {
                let start: usize = param(request, "startAt").map_or(0, |n| n.parse().unwrap());
                let total = 5;
                let end = total.min(start + max_results);
                let values: Vec<Value> = (start..end)
                    .map(|n| json!({"id": n.to_string(), "key": format!("P{n}"), "name": format!("Project {n}"), "projectTypeKey": "software"}))
                    .collect();
                let page = json!({"startAt": start, "maxResults": max_results, "total": total,
                                  "isLast": end >= total, "values": values});
                Reply::new(200, &page.to_string())
            }
            _ => Reply::new(404, r#"{"errorMessages":["not found"]}"#),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn jira_pages_by_token_and_by_start_at() {
    let jira = fake_jira().await;
    let data = pointed_at("jira", &jira.base_url);
    let daemon = start(&data, "JIRA_BASIC_AUTH", JIRA_BASIC);

    let result = envelope(
        &run(
            &daemon,
            "jira.issues",
            json!({"project": "HD", "max_results": 3}),
        )
        .await,
    );
    assert_eq!(
        field(&result, "key"),
        (1..=7)
            .map(|n| json!(format!("HD-{n}")))
            .collect::<Vec<_>>()
    );
    assert_eq!(result["items"][0]["state"], "in_progress");
    assert_eq!(result["items"][0]["status"], "In Review");
    assert_eq!(result["items"][0]["created_at"], "2025-01-02T03:04:05Z");
    assert_eq!(result["items"][0]["updated_at"], "2025-01-02T01:04:05Z");
    assert_eq!(result["items"][0]["reporter"]["name"], "Ada");
    assert_eq!(
        result["items"][0]["url"],
        format!("{}/browse/HD-1", jira.base_url)
    );
    let tokens: Vec<Option<String>> = jira
        .received()
        .iter()
        .map(|request| param(request, "nextPageToken"))
        .collect();
    assert_eq!(tokens, [None, Some("tok-3".into()), Some("tok-6".into())]);

    // Projects: cut at 3 of 5, then resumed.
    let first = envelope(
        &run(
            &daemon,
            "jira.projects",
            json!({"max_items": 3, "max_results": 2}),
        )
        .await,
    );
    assert_eq!(field(&first, "key"), ["P0", "P1", "P2"].map(Value::from));
    let rest = envelope(
        &run(
            &daemon,
            "jira.projects",
            json!({"max_results": 2, "next": first["next"]}),
        )
        .await,
    );
    assert_eq!(field(&rest, "key"), ["P3", "P4"].map(Value::from));
}

#[tokio::test(flavor = "multi_thread")]
async fn jira_without_a_site_refuses_to_load_and_says_why() {
    let data = DataDir::with_plugins(&["jira"]);
    let daemon = start(&data, "JIRA_BASIC_AUTH", JIRA_BASIC);
    let channel = daemon.connect().await;
    let request = pb::SubmitJobRequest {
        command: "jira.projects".into(),
        payload: b"{}".to_vec(),
        ..Default::default()
    };
    let status = crate::support::queue(&channel)
        .submit_job(request)
        .await
        .expect_err("no jira without a site");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("plugin \"jira\" is not loaded")
            && status
                .message()
                .contains("[config] base_url, which is not set"),
        "{}",
        status.message()
    );
}

// ---------------------------------------------------------------------------------
// Linear: GraphQL `pageInfo { hasNextPage endCursor }` with `first` / `after`.

const LINEAR_KEY: &str = "lin_api_t0ken";

async fn fake_linear() -> HttpStub {
    HttpStub::start_replying(|request, _| {
        if request.header("authorization") != Some(LINEAR_KEY) {
            return Reply::new(
                400,
                r#"{"errors":[{"message":"Authentication required, not authenticated","extensions":{"code":"AUTHENTICATION_ERROR"}}]}"#,
            );
        }
        let body: Value = serde_json::from_str(&request.body).unwrap();
        let variables = &body["variables"];
        let first = variables["first"].as_u64().unwrap() as usize;
        let start = variables["after"]
            .as_str()
            .map_or(0, |cursor| cursor.strip_prefix("cur-").unwrap().parse().unwrap());
        let total = 6;
        let end = total.min(start + first);
        let nodes: Vec<Value> = (start..end)
            .map(|n| {
                json!({"identifier": format!("ENG-{n}"), "title": format!("issue {n}"),
                       "url": format!("https://linear.app/acme/issue/ENG-{n}"),
                       "createdAt": "2025-01-02T03:04:05.000Z", "updatedAt": "2025-01-03T03:04:05.000Z",
                       "completedAt": null, "canceledAt": null,
                       "state": {"name": "Todo", "type": "unstarted"}, "assignee": null})
            })
            .collect();
        let page = json!({"data": {"issues": {"nodes": nodes, "pageInfo": {
            "hasNextPage": end < total, "endCursor": format!("cur-{end}")}}}});
        Reply::new(200, &page.to_string())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn linear_follows_page_info_with_filters() {
    let linear = fake_linear().await;
    let data = pointed_at("linear", &format!("{}/graphql", linear.base_url));
    let daemon = start(&data, "LINEAR_API_KEY", LINEAR_KEY);

    let result = envelope(
        &run(
            &daemon,
            "linear.issues",
            json!({"team": "ENG", "state_type": "unstarted", "updated_after": "2025-01-01T00:00:00Z", "first": 4}),
        )
        .await,
    );
    assert_eq!(
        field(&result, "key"),
        (0..6)
            .map(|n| json!(format!("ENG-{n}")))
            .collect::<Vec<_>>()
    );
    assert_eq!(result["items"][0]["state"], "open");
    assert_eq!(result["items"][0]["status"], "Todo");
    let bodies: Vec<Value> = linear
        .received()
        .iter()
        .map(|request| serde_json::from_str(&request.body).unwrap())
        .collect();
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[0]["variables"]["after"], Value::Null);
    assert_eq!(bodies[1]["variables"]["after"], "cur-4");
    assert_eq!(
        bodies[0]["variables"]["filter"],
        json!({"team": {"key": {"eq": "ENG"}}, "state": {"type": {"eq": "unstarted"}},
               "updatedAt": {"gte": "2025-01-01T00:00:00Z"}})
    );
}

// ---------------------------------------------------------------------------------
// Bitbucket Cloud: `{"pagelen", "page", "size", "values", "next"}`; Basic auth with an
// Atlassian API token (email:token).

const BITBUCKET_BASIC: &str = "YWRhQGV4YW1wbGUuY29tOmF0YXR0LXRva2Vu"; // ada@example.com:atatt-token

async fn fake_bitbucket() -> HttpStub {
    HttpStub::start_replying(|request, _| {
        if request.header("authorization") != Some(format!("Basic {BITBUCKET_BASIC}").as_str()) {
            return Reply::new(401, r#"{"type":"error","error":{"message":"Unauthorized"}}"#);
        }
        let pagelen = param(request, "pagelen").map_or(10, |n| n.parse().unwrap());
        let page = param(request, "page").map_or(1, |n| n.parse().unwrap());
        match path(request) {
            "/2.0/repositories/acme/app/pullrequests" => {
                let states: Vec<String> = query(request)
                    .into_iter()
                    .filter(|(name, _)| name == "state")
                    .map(|(_, value)| value)
                    .collect();
                let all = ["OPEN", "MERGED", "DECLINED", "MERGED", "OPEN", "SUPERSEDED", "MERGED"];
                let matching: Vec<(usize, &str)> = all
                    .iter()
                    .copied()
                    .enumerate()
                    .filter(|(_, state)| states.is_empty() && *state == "OPEN" || states.iter().any(|s| s == state))
                    .collect();
                let (range, more) = slice(matching.len(), page, pagelen);
                let values: Vec<Value> = matching[range]
                    .iter()
                    .map(|&(n, state)| {
                        json!({"id": n + 1, "title": format!("pr {n}"), "state": state,
                               "author": {"display_name": "Ada"},
                               "source": {"branch": {"name": "f"}}, "destination": {"branch": {"name": "main"}},
                               "links": {"html": {"href": format!("https://bitbucket.org/acme/app/pull-requests/{}", n + 1)}},
                               "created_on": "2025-01-02T03:04:05.123456+00:00",
                               "updated_on": "2025-01-03T03:04:05.123456+00:00"})
                    })
                    .collect();
                let mut body = json!({"pagelen": pagelen, "page": page, "size": matching.len(), "values": values});
                if more {
                    let target = request.line.split(' ').nth(1).unwrap();
                    let without_page: Vec<&str> =
                        target.split(['?', '&']).skip(1).filter(|pair| !pair.starts_with("page=")).collect();
                    body["next"] = json!(format!(
                        "{}{}?{}&page={}",
                        origin(request),
                        path(request),
                        without_page.join("&"),
                        page + 1
                    ));
                }
                Reply::new(200, &body.to_string())
            }
            _ => Reply::new(404, r#"{"type":"error","error":{"message":"Repository not found"}}"#),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn bitbucket_follows_next_with_several_states_and_basic_auth() {
    let bitbucket = fake_bitbucket().await;
    let data = pointed_at("bitbucket", &format!("{}/2.0", bitbucket.base_url));
    let daemon = start(&data, "BITBUCKET_BASIC_AUTH", BITBUCKET_BASIC);

    let result = envelope(
        &run(
            &daemon,
            "bitbucket.pullRequests",
            json!({"workspace": "acme", "repo": "app", "state": ["MERGED", "DECLINED"],
                   "q": "author.nickname = \"ada\"", "per_page": 2}),
        )
        .await,
    );
    assert_eq!(field(&result, "number"), [2, 3, 4, 7].map(Value::from));
    assert_eq!(
        field(&result, "state"),
        ["merged", "closed", "merged", "merged"].map(Value::from)
    );
    assert_eq!(result["items"][1]["source_state"], "DECLINED");
    assert_eq!(
        result["items"][0]["created_at"],
        "2025-01-02T03:04:05.123456Z"
    );
    assert_eq!(
        result["items"][0]["author"],
        json!({"login": null, "name": "Ada", "email": null})
    );
    let received = bitbucket.received();
    assert_eq!(received.len(), 2);
    assert_eq!(
        param(&received[0], "q").as_deref(),
        Some("author.nickname = \"ada\"")
    );
    let states: Vec<String> = query(&received[1])
        .into_iter()
        .filter(|(name, _)| name == "state")
        .map(|(_, value)| value)
        .collect();
    assert_eq!(
        states,
        ["MERGED", "DECLINED"],
        "the next URL keeps the filters"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_shortcut_of_bitbucket_takes_several_states_and_all() {
    let bitbucket = fake_bitbucket().await;
    let data = pointed_at("bitbucket", &format!("{}/2.0", bitbucket.base_url));
    let _daemon = start(&data, "BITBUCKET_BASIC_AUTH", BITBUCKET_BASIC);
    let data_dir = data.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        honeydew(
            &data_dir,
            &[
                "bitbucket",
                "pull-requests",
                "--workspace",
                "acme",
                "--repo",
                "app",
                "--state",
                "OPEN,SUPERSEDED",
                "--all",
                "--wait",
            ],
            "",
        )
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let result: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_matches_schema("bitbucket.pullRequests", &result);
    assert_eq!(field(&result, "number"), [1, 5, 6].map(Value::from));
    let first = &bitbucket.received()[0];
    assert_eq!(param(first, "pagelen").as_deref(), Some("50"));
}
