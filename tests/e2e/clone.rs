//! `github.clone`, `gitlab.clone` and `bitbucket.clone` end to end (issue 10, item 3):
//! the real plugins with their shipped manifests (only the URLs changed), fakes of each
//! API on 127.0.0.1 written from its documentation, and real gzipped tars as the forges
//! serve them. Each clone resolves the ref to a commit, has the daemon download that
//! commit's archive with the host-added credential (GitHub's through a redirect to a
//! second loopback origin standing for codeload.github.com, which gets no credential:
//! its links carry their own token), and leaves the files in
//! `<data-dir>/workspaces/<job-id>`. Every result is checked against
//! `plugins/NAME/schema/clone.json`.

use honeydew::api::pb::{self, JobStatus};
use serde_json::{Value, json};

use crate::support::archive::{forge_archive, tree};
use crate::support::{
    Daemon, DataDir, HttpStub, Received, Reply, assert_matches_schema, daemon_command, finished,
    submit,
};

/// The commit every fake ref points at.
const SHA: &str = "7fd1a60b01f91b314f59955a4e4d4e80d8edf11d";

/// The files of every fake repository, as (path, contents).
const FILES: &[(&str, &str)] = &[
    ("README.md", "# Hello World\n"),
    ("src/main.rs", "fn main() {\n    println!(\"hello\");\n}\n"),
    ("docs/guide/intro.md", "Start here.\n"),
];

/// The bytes of [`FILES`].
fn file_bytes() -> u64 {
    FILES
        .iter()
        .map(|(_, contents)| contents.len() as u64)
        .sum()
}

/// The tree [`FILES`] make, as `support::archive::tree` lists it.
fn file_tree() -> Vec<String> {
    [
        "README.md",
        "docs/",
        "docs/guide/",
        "docs/guide/intro.md",
        "src/",
        "src/main.rs",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A data directory with `plugin` whose shipped manifest has each `(key, url)` of
/// `settings` set, nothing else changed.
fn pointed_at(plugin: &str, settings: &[(&str, &str)]) -> DataDir {
    let data = DataDir::with_plugins(&[plugin]);
    let manifest = std::fs::read_to_string(data.manifest(plugin)).unwrap();
    let mut pointed = String::new();
    for line in manifest.lines() {
        let key = line.split(" = ").next().unwrap_or_default();
        match settings.iter().find(|(name, _)| *name == key) {
            Some((name, url)) => pointed.push_str(&format!("{name} = \"{url}\"\n")),
            None => {
                pointed.push_str(line);
                pointed.push('\n');
            }
        }
    }
    for (name, url) in settings {
        assert!(
            pointed.contains(&format!("{name} = \"{url}\"")),
            "{pointed}"
        );
    }
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

/// The checkout a completed clone returned, checked against its schema and against
/// the workspace on disk: the path is the job's, the files are [`FILES`] and the counts
/// are what is there.
fn checkout(data: &DataDir, job: &pb::Job) -> Value {
    assert_eq!(job.status(), JobStatus::Completed, "{:?}", job.error);
    let result: Value = serde_json::from_slice(job.result()).unwrap();
    assert_matches_schema(&job.command, &result);
    let workspace = data.path().join("workspaces").join(&job.id);
    assert_eq!(result["path"], workspace.display().to_string(), "{result}");
    assert_eq!(tree(&workspace), file_tree());
    for (path, contents) in FILES {
        assert_eq!(
            std::fs::read_to_string(workspace.join(path)).unwrap(),
            *contents,
            "{path}"
        );
    }
    assert_eq!(result["sha"], SHA, "{result}");
    assert_eq!(result["files"], FILES.len() as u64, "{result}");
    assert_eq!(result["bytes"], file_bytes(), "{result}");
    result
}

/// A request's target (path and query).
fn target(request: &Received) -> &str {
    request.line.split(' ').nth(1).unwrap_or_default()
}

// ---------------------------------------------------------------------------------
// GitHub: `GET /repos/{o}/{r}` (default_branch), `GET /repos/{o}/{r}/commits/{ref}`
// (`Accept: application/vnd.github.sha` answers the bare hash; an unknown ref is 422),
// `GET /repos/{o}/{r}/tarball/{ref}` (302 to codeload, whose link for a private
// repository carries a temporary `token`). Without the API token a private repository
// is 404, as GitHub answers.

const GITHUB_TOKEN: &str = "ghp_cl0ne-token";
/// The temporary token GitHub puts in a private repository's codeload link.
const CODELOAD_TOKEN: &str = "AABBCCDD-temporary";

/// A fake of codeload.github.com: `/{o}/{r}/legacy.tar.gz/{sha}`, a private
/// repository's only with its link's token.
async fn fake_codeload() -> HttpStub {
    HttpStub::start_replying(|request, _| {
        let target = target(request);
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let archive = |owner: &str, repo: &str| {
            let top = format!("{owner}-{repo}-{}", &SHA[..7]);
            Reply::bytes(
                200,
                "application/x-gzip",
                forge_archive(&top, SHA, FILES, &[]),
            )
        };
        match path {
            p if p == format!("/octocat/hello/legacy.tar.gz/{SHA}") => archive("octocat", "hello"),
            p if p == format!("/acme/secret/legacy.tar.gz/{SHA}")
                && query == format!("token={CODELOAD_TOKEN}") =>
            {
                archive("acme", "secret")
            }
            _ => Reply::new(404, "Not Found"),
        }
    })
    .await
}

/// A fake of GitHub's API for `octocat/hello` (public) and `acme/secret` (private),
/// whose tarballs redirect to `codeload`.
async fn fake_github(codeload: &str) -> HttpStub {
    let codeload = codeload.to_owned();
    HttpStub::start_replying(move |request, _| {
        let authorized =
            request.header("authorization") == Some(format!("Bearer {GITHUB_TOKEN}").as_str());
        let path = target(request).split('?').next().unwrap_or_default();
        let Some(rest) = path.strip_prefix("/repos/") else {
            return Reply::new(404, r#"{"message":"Not Found"}"#);
        };
        let mut parts = rest.splitn(4, '/');
        let (owner, repo) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let private = match (owner, repo) {
            ("octocat", "hello") => false,
            ("acme", "secret") => true,
            _ => return Reply::new(404, r#"{"message":"Not Found"}"#),
        };
        if private && !authorized {
            return Reply::new(404, r#"{"message":"Not Found"}"#);
        }
        match (parts.next(), parts.next()) {
            (None, None) => Reply::new(
                200,
                &json!({"id": 1, "full_name": format!("{owner}/{repo}"), "private": private,
                        "default_branch": "main"})
                .to_string(),
            ),
            (Some("commits"), Some(reference)) if reference == "main" || reference == SHA => {
                if request.header("accept") == Some("application/vnd.github.sha") {
                    Reply::bytes(200, "application/vnd.github.sha", SHA.into())
                } else {
                    Reply::new(200, &json!({"sha": SHA}).to_string())
                }
            }
            (Some("commits"), Some(reference)) => Reply::new(
                422,
                &json!({"message": format!("No commit found for SHA: {reference}"),
                        "documentation_url": "https://docs.github.com/rest/commits/commits#get-a-commit"})
                .to_string(),
            ),
            (Some("tarball"), Some(reference)) if reference == SHA => {
                let token = if private {
                    format!("?token={CODELOAD_TOKEN}")
                } else {
                    String::new()
                };
                Reply::redirect(
                    302,
                    &format!("{codeload}/{owner}/{repo}/legacy.tar.gz/{SHA}{token}"),
                )
            }
            _ => Reply::new(404, r#"{"message":"Not Found"}"#),
        }
    })
    .await
}

/// Regression (issue 10): `github.clone` sent a HEAD to codeload without credentials,
/// so every private repository failed. Now the API gets the token and redirects to
/// codeload, whose link carries its own; the token never reaches codeload.
#[tokio::test(flavor = "multi_thread")]
async fn github_clone_of_a_private_repository_sends_credentials() {
    let codeload = fake_codeload().await;
    let api = fake_github(&codeload.base_url).await;
    let data = pointed_at(
        "github",
        &[
            ("base_url", &api.base_url),
            ("codeload_url", &codeload.base_url),
        ],
    );
    let daemon = start(&data, "GITHUB_TOKEN", GITHUB_TOKEN);

    let job = run(
        &daemon,
        "github.clone",
        json!({"owner": "acme", "repo": "secret", "ref": "main"}),
    )
    .await;

    let result = checkout(&data, &job);
    assert_eq!(result["repository"], "acme/secret");
    assert_eq!(result["ref"], "main");
    assert_eq!(result["skipped_links"], 0);
    let api_seen = api.received();
    assert!(!api_seen.is_empty());
    for request in &api_seen {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {GITHUB_TOKEN}").as_str()),
            "{}",
            request.line
        );
    }
    let archive_seen = codeload.received();
    assert_eq!(archive_seen.len(), 1, "one download, after the redirect");
    let download = &archive_seen[0];
    assert_eq!(
        target(download),
        format!("/acme/secret/legacy.tar.gz/{SHA}?token={CODELOAD_TOKEN}")
    );
    assert_eq!(
        download.header("authorization"),
        None,
        "the API's token stayed home"
    );
    assert!(
        download
            .headers
            .iter()
            .all(|(_, value)| !value.contains(GITHUB_TOKEN)),
        "{:?}",
        download.headers
    );
    assert_eq!(
        download.header("host"),
        codeload.base_url.strip_prefix("http://"),
        "the redirect's own host"
    );
}

/// Regression (issue 10): neither clone pinned the ref to a commit, and `size_bytes`
/// was almost always null. Without a ref the clone takes the default branch, resolves
/// it to its commit, downloads the tarball of that commit (not of the branch, which
/// may move meanwhile), and counts what it wrote.
#[tokio::test(flavor = "multi_thread")]
async fn github_clone_pins_the_ref_to_a_commit_and_counts_the_bytes_it_wrote() {
    let codeload = fake_codeload().await;
    let api = fake_github(&codeload.base_url).await;
    let data = pointed_at(
        "github",
        &[
            ("base_url", &api.base_url),
            ("codeload_url", &codeload.base_url),
        ],
    );
    let daemon = start(&data, "GITHUB_TOKEN", GITHUB_TOKEN);

    let job = run(
        &daemon,
        "github.clone",
        json!({"owner": "octocat", "repo": "hello"}),
    )
    .await;

    let result = checkout(&data, &job);
    assert_eq!(result["ref"], "main", "the default branch");
    assert_eq!(result["repository"], "octocat/hello");
    let requests: Vec<String> = api
        .received()
        .iter()
        .map(|request| target(request).to_owned())
        .collect();
    assert_eq!(
        requests,
        [
            "/repos/octocat/hello".to_owned(),
            "/repos/octocat/hello/commits/main".to_owned(),
            format!("/repos/octocat/hello/tarball/{SHA}"),
        ]
    );
    let resolve = &api.received()[1];
    assert_eq!(resolve.header("accept"), Some("application/vnd.github.sha"));
}

/// A ref that names no commit fails at once (GitHub's 422 is permanent), saying which
/// ref, and leaves no workspace behind.
#[tokio::test(flavor = "multi_thread")]
async fn github_clone_of_an_unknown_ref_fails_at_once_naming_it() {
    let codeload = fake_codeload().await;
    let api = fake_github(&codeload.base_url).await;
    let data = pointed_at(
        "github",
        &[
            ("base_url", &api.base_url),
            ("codeload_url", &codeload.base_url),
        ],
    );
    let daemon = start(&data, "GITHUB_TOKEN", GITHUB_TOKEN);

    let job = run(
        &daemon,
        "github.clone",
        json!({"owner": "octocat", "repo": "hello", "ref": "no-such-branch"}),
    )
    .await;

    assert_eq!(job.status(), JobStatus::Failed);
    assert_eq!(job.retry_count, 0, "not retried");
    let error = job.error.clone().unwrap_or_default();
    assert!(
        error.contains("cannot resolve \"no-such-branch\" in octocat/hello"),
        "{error}"
    );
    assert!(!data.path().join("workspaces").join(&job.id).exists());
    assert!(codeload.received().is_empty());
}

// ---------------------------------------------------------------------------------
// GitLab: `GET /projects/:id` (path_with_namespace, default_branch),
// `GET /projects/:id/repository/commits/:ref` (`id` is the full hash),
// `GET /projects/:id/repository/archive.tar.gz?sha=` (on the API host, the top
// directory `<project>-<sha>-<sha>`). Without `PRIVATE-TOKEN`, 401.

const GITLAB_TOKEN: &str = "glpat-cl0ne-token";

async fn fake_gitlab() -> HttpStub {
    HttpStub::start_replying(|request, _| {
        if request.header("private-token") != Some(GITLAB_TOKEN) {
            return Reply::new(401, r#"{"message":"401 Unauthorized"}"#);
        }
        let target = target(request);
        let project = "/api/v4/projects/group%2Fapp";
        match target.strip_prefix(project) {
            Some("") => Reply::new(
                200,
                &json!({"id": 42, "path_with_namespace": "group/app", "default_branch": "main"})
                    .to_string(),
            ),
            Some("/repository/commits/main") => Reply::new(
                200,
                &json!({"id": SHA, "short_id": &SHA[..8], "title": "Hello"}).to_string(),
            ),
            Some(rest) if rest == format!("/repository/archive.tar.gz?sha={SHA}") => {
                let top = format!("app-{SHA}-{SHA}");
                Reply::bytes(
                    200,
                    "application/x-gzip",
                    forge_archive(&top, SHA, FILES, &[]),
                )
            }
            _ => Reply::new(404, r#"{"message":"404 Not Found"}"#),
        }
    })
    .await
}

/// Regression (issue 10): `gitlab.clone` returned an API URL that needs a token the
/// caller never has. Now the daemon downloads the archive of the resolved commit with
/// the manifest's token and the files are in the job's workspace.
#[tokio::test(flavor = "multi_thread")]
async fn gitlab_clone_unpacks_the_archive_instead_of_returning_an_api_url() {
    let api = fake_gitlab().await;
    let base_url = format!("{}/api/v4", api.base_url);
    let data = pointed_at("gitlab", &[("base_url", &base_url)]);
    let daemon = start(&data, "GITLAB_TOKEN", GITLAB_TOKEN);

    let job = run(&daemon, "gitlab.clone", json!({"project": "group/app"})).await;

    let result = checkout(&data, &job);
    assert_eq!(result["repository"], "group/app");
    assert_eq!(result["ref"], "main");
    assert!(
        !job.result().windows(7).any(|window| window == b"/api/v4"),
        "no API URL"
    );
    let requests: Vec<String> = api
        .received()
        .iter()
        .map(|request| target(request).to_owned())
        .collect();
    assert_eq!(
        requests.last().map(String::as_str),
        Some(format!("/api/v4/projects/group%2Fapp/repository/archive.tar.gz?sha={SHA}").as_str()),
        "the archive of the commit, not of the branch"
    );
}

// ---------------------------------------------------------------------------------
// Bitbucket Cloud: `GET /2.0/repositories/{ws}/{repo}` (mainbranch),
// `GET /2.0/repositories/{ws}/{repo}/commit/{ref}` (`hash`), and the archive from the
// web host, `GET /{ws}/{repo}/get/{sha}.tar.gz` (top directory `<ws>-<repo>-<sha12>`).
// Both hosts want the credential; each gets it from its own `[[auth]]` rule.

const BITBUCKET_BASIC: &str = "YWRhQGV4YW1wbGUuY29tOnRva2Vu";

async fn fake_bitbucket_api() -> HttpStub {
    HttpStub::start_replying(|request, _| {
        if request.header("authorization") != Some(format!("Basic {BITBUCKET_BASIC}").as_str()) {
            return Reply::new(
                401,
                r#"{"type":"error","error":{"message":"Unauthorized"}}"#,
            );
        }
        match target(request) {
            "/2.0/repositories/acme/app" => Reply::new(
                200,
                &json!({"full_name": "acme/app", "is_private": true,
                        "mainbranch": {"name": "main", "type": "branch"}})
                .to_string(),
            ),
            "/2.0/repositories/acme/app/commit/main" => {
                Reply::new(200, &json!({"hash": SHA, "type": "commit"}).to_string())
            }
            _ => Reply::new(404, r#"{"type":"error","error":{"message":"Not found"}}"#),
        }
    })
    .await
}

async fn fake_bitbucket_web() -> HttpStub {
    HttpStub::start_replying(|request, _| {
        if request.header("authorization") != Some(format!("Basic {BITBUCKET_BASIC}").as_str()) {
            return Reply::new(403, "Forbidden");
        }
        if target(request) == format!("/acme/app/get/{SHA}.tar.gz") {
            let top = format!("acme-app-{}", &SHA[..12]);
            let links = [("docs/latest", "guide")];
            Reply::bytes(
                200,
                "application/x-gzip",
                forge_archive(&top, SHA, FILES, &links),
            )
        } else {
            Reply::new(404, "Not Found")
        }
    })
    .await
}

/// `bitbucket.clone` (new in issue 10): the commit from the API, the archive from the
/// web host with its own credential rule; the repository's symbolic link is counted,
/// not created.
#[tokio::test(flavor = "multi_thread")]
async fn bitbucket_clone_unpacks_a_commit_from_the_web_host_with_its_own_credential() {
    let api = fake_bitbucket_api().await;
    let web = fake_bitbucket_web().await;
    let base_url = format!("{}/2.0", api.base_url);
    let data = pointed_at(
        "bitbucket",
        &[("base_url", &base_url), ("web_url", &web.base_url)],
    );
    let daemon = start(&data, "BITBUCKET_BASIC_AUTH", BITBUCKET_BASIC);

    let job = run(
        &daemon,
        "bitbucket.clone",
        json!({"workspace": "acme", "repo": "app"}),
    )
    .await;

    let result = checkout(&data, &job);
    assert_eq!(result["repository"], "acme/app");
    assert_eq!(result["ref"], "main");
    assert_eq!(result["skipped_links"], 1);
    let downloads = web.received();
    assert_eq!(downloads.len(), 1);
    assert_eq!(target(&downloads[0]), format!("/acme/app/get/{SHA}.tar.gz"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_clones_a_bitbucket_repository_and_prints_the_checkout() {
    let api = fake_bitbucket_api().await;
    let web = fake_bitbucket_web().await;
    let base_url = format!("{}/2.0", api.base_url);
    let data = pointed_at(
        "bitbucket",
        &[("base_url", &base_url), ("web_url", &web.base_url)],
    );
    let _daemon = start(&data, "BITBUCKET_BASIC_AUTH", BITBUCKET_BASIC);
    let output = crate::support::honeydew(
        data.path(),
        &[
            "bitbucket",
            "clone",
            "--workspace",
            "acme",
            "--repo",
            "app",
            "--ref",
            "main",
            "--wait",
        ],
        "",
    );
    assert!(
        output.status.success(),
        "{}",
        crate::support::stderr(&output)
    );
    let checkout: Value =
        serde_json::from_str(&crate::support::stdout(&output)).expect("the checkout as JSON");
    assert_eq!(checkout["repository"], "acme/app");
    assert_eq!(checkout["sha"], SHA);
    assert!(
        std::path::Path::new(checkout["path"].as_str().expect("a path")).is_dir(),
        "{checkout}"
    );
}
