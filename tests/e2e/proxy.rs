//! A typed proxy RPC end to end: `github.commits` against a local fake of GitHub.

use honeydew::api::pb::{self, JobStatus, git_hub_client::GitHubClient};
use serde_json::{Value, json};

use crate::support::{
    Daemon, DataDir, HttpStub, daemon_command, finished, honeydew, stderr, stdout,
};

const COMMITS: &str = r#"[
  {"sha": "abc123", "commit": {"message": "fix the thing", "author": {"name": "Ada", "date": "2025-01-02T03:04:05Z"}}},
  {"sha": "def456", "commit": {"message": "add the thing", "author": null}}
]"#;

/// `github.commits` through the typed RPC and the CLI shortcut, against a local fake of
/// the GitHub API that the manifest points the plugin at; the token travels from the
/// daemon's environment into the request header, never through the plugin.
#[tokio::test(flavor = "multi_thread")]
async fn github_commits_runs_against_a_local_fake_with_the_token_added_by_the_host() {
    let github = HttpStub::start(|_, _| (200, COMMITS.to_owned())).await;
    let data = DataDir::with_plugins(&["github"]);
    std::fs::write(
        data.manifest("github"),
        format!(
            "[network]\nallowed_hosts = [\"{url}\"]\n\n[[auth]]\nhost = \"{url}\"\nheader = \"Authorization\"\n\
             value = \"Bearer ${{GITHUB_TOKEN}}\"\n\n[config]\nbase_url = \"{url}\"\n",
            url = github.base_url
        ),
    )
    .unwrap();
    let mut command = daemon_command(data.path(), &[]);
    command.env("HONEYDEW_SECRET_GITHUB_TOKEN", "t0ken-for-tests");
    let daemon = Daemon::start_command(command, data.socket());
    let channel = daemon.connect().await;

    let request = pb::GitHubGetCommitsRequest {
        owner: "octocat".into(),
        repo: "hello".into(),
        per_page: 2,
        ..Default::default()
    };
    // A client's trace context reaches the API through the typed RPC too.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut request = tonic::Request::new(request);
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    let id = GitHubClient::new(channel.clone())
        .get_commits(request)
        .await
        .expect("submit through the proxy")
        .into_inner()
        .job_id;
    let job = finished(&channel, &id).await;
    assert_eq!(job.status(), JobStatus::Completed, "{:?}", job.error);
    assert_eq!(job.command, "github.commits");
    let payload: Value = serde_json::from_slice(&job.payload).unwrap();
    assert_eq!(
        payload,
        json!({"owner": "octocat", "repo": "hello", "per_page": 2})
    );
    let expected = json!({"items": [
        {"sha": "abc123", "message": "fix the thing",
         "author": {"login": null, "name": "Ada", "email": null}, "date": "2025-01-02T03:04:05Z"},
        {"sha": "def456", "message": "add the thing", "author": null, "date": null},
    ], "truncated": false, "next": null});
    let result: Value = serde_json::from_slice(job.result()).unwrap();
    assert_eq!(result, expected);

    let received = github.received();
    assert_eq!(received.len(), 1);
    assert!(
        received[0]
            .line
            .starts_with("GET /repos/octocat/hello/commits?per_page=2 "),
        "{:?}",
        received[0]
    );
    assert_eq!(
        received[0].header("authorization"),
        Some("Bearer t0ken-for-tests")
    );
    assert_eq!(received[0].header("traceparent"), Some(traceparent));

    // The same through the CLI shortcut.
    let data_dir = data.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        honeydew(
            &data_dir,
            &[
                "github", "commits", "--owner", "octocat", "--repo", "hello", "--wait",
            ],
            "",
        )
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let printed: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(printed, expected);
}
