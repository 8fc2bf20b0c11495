//! Plugin `github`: read-only commands over the GitHub REST API.
//!
//! | command        | payload                                         | request                             |
//! |----------------|-------------------------------------------------|-------------------------------------|
//! | `repositories` | `{"owner"?, "per_page"?}`                       | `GET /users/{owner}/repos`, or `GET /user/repos` without `owner` |
//! | `commits`      | `{"owner", "repo", "sha"?, "per_page"?}`        | `GET /repos/{owner}/{repo}/commits` |
//! | `pullRequests` | `{"owner", "repo", "state"?, "per_page"?}`      | `GET /repos/{owner}/{repo}/pulls`   |
//! | `clone`        | `{"owner", "repo", "ref"?}`                     | `HEAD {codeload_url}/{owner}/{repo}/tar.gz/{ref}` |
//!
//! Results are compact JSON (see the `*Summary` types). `clone` names the tarball URL
//! and its size (`null` when the server does not say); without `ref` it asks the API
//! for the repository's default branch first.
//!
//! Config: `base_url` (default `https://api.github.com`) and `codeload_url` (default
//! `https://codeload.github.com`). The daemon adds `Authorization` from the manifest's
//! `[[auth]]` rule; this plugin never sets or sees credentials.
//!
//! Errors: a bad payload is permanent and names the field; statuses are classified
//! by the SDK, GitHub's rate limits included: a 403 or 429 with
//! `x-ratelimit-remaining: 0` waits for `x-ratelimit-reset`; a secondary limit
//! (`retry-after`, or a body naming it) waits `retry-after`, else a minute.

use honeydew_plugin_sdk::http::{self, Request, Response};
use honeydew_plugin_sdk::{Plugin, PluginError, PluginInfo, config, parse_payload, to_json};
use serde::{Deserialize, Serialize};

const DEFAULT_BASE_URL: &str = "https://api.github.com";
const DEFAULT_CODELOAD_URL: &str = "https://codeload.github.com";
/// The most items GitHub returns per page.
const MAX_PER_PAGE: u8 = 100;

struct GitHub;

impl Plugin for GitHub {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "github",
            env!("CARGO_PKG_VERSION"),
            &["repositories", "commits", "pullRequests", "clone"],
        )
    }

    fn run(command: &str, payload: &[u8]) -> Result<Vec<u8>, PluginError> {
        match command {
            "repositories" => to_json(&repositories(parse_payload(payload)?)?),
            "commits" => to_json(&commits(parse_payload(payload)?)?),
            "pullRequests" => to_json(&pull_requests(parse_payload(payload)?)?),
            "clone" => to_json(&clone(parse_payload(payload)?)?),
            _ => Err(PluginError::unknown_command(command)),
        }
    }
}

honeydew_plugin_sdk::export_plugin!(GitHub);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RepositoriesPayload {
    owner: Option<String>,
    per_page: Option<u8>,
}

/// One repository, as GitHub sends it and as the plugin returns it.
#[derive(Deserialize, Serialize)]
struct RepositorySummary {
    full_name: String,
    private: bool,
    default_branch: Option<String>,
    description: Option<String>,
    html_url: String,
    updated_at: Option<String>,
}

fn repositories(payload: RepositoriesPayload) -> Result<Vec<RepositorySummary>, PluginError> {
    let path = match &payload.owner {
        Some(owner) => format!("/users/{}/repos", name("owner", owner)?),
        None => "/user/repos".to_owned(),
    };
    api_get(&path, payload.per_page)?.json()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitsPayload {
    owner: String,
    repo: String,
    sha: Option<String>,
    per_page: Option<u8>,
}

#[derive(Deserialize)]
struct Commit {
    sha: String,
    commit: CommitDetail,
}

#[derive(Deserialize)]
struct CommitDetail {
    message: String,
    author: Option<Signature>,
}

#[derive(Deserialize)]
struct Signature {
    name: String,
    date: String,
}

/// One commit as the plugin returns it.
#[derive(Serialize)]
struct CommitSummary {
    sha: String,
    message: String,
    author: Option<String>,
    date: Option<String>,
}

fn commits(payload: CommitsPayload) -> Result<Vec<CommitSummary>, PluginError> {
    let path = format!(
        "/repos/{}/commits",
        repository(&payload.owner, &payload.repo)?
    );
    let mut request = api_request(&path, payload.per_page)?;
    if let Some(sha) = &payload.sha {
        request = request.query("sha", non_empty("sha", sha)?);
    }
    let commits: Vec<Commit> = request.send()?.error_for_status()?.json()?;
    Ok(commits
        .into_iter()
        .map(|Commit { sha, commit }| {
            let (author, date) = commit
                .author
                .map(|author| (author.name, author.date))
                .unzip();
            CommitSummary {
                sha,
                message: commit.message,
                author,
                date,
            }
        })
        .collect())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PullRequestsPayload {
    owner: String,
    repo: String,
    state: Option<PullRequestState>,
    per_page: Option<u8>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum PullRequestState {
    Open,
    Closed,
    All,
}

#[derive(Deserialize)]
struct PullRequest {
    number: u64,
    title: String,
    state: String,
    draft: Option<bool>,
    user: Option<User>,
    head: Branch,
    base: Branch,
    html_url: String,
    created_at: String,
}

#[derive(Deserialize)]
struct User {
    login: String,
}

#[derive(Deserialize)]
struct Branch {
    #[serde(rename = "ref")]
    reference: String,
}

/// One pull request as the plugin returns it.
#[derive(Serialize)]
struct PullRequestSummary {
    number: u64,
    title: String,
    state: String,
    draft: bool,
    author: Option<String>,
    head: String,
    base: String,
    html_url: String,
    created_at: String,
}

fn pull_requests(payload: PullRequestsPayload) -> Result<Vec<PullRequestSummary>, PluginError> {
    let path = format!(
        "/repos/{}/pulls",
        repository(&payload.owner, &payload.repo)?
    );
    let mut request = api_request(&path, payload.per_page)?;
    if let Some(state) = payload.state {
        request = request.query("state", state.as_str());
    }
    let pulls: Vec<PullRequest> = request.send()?.error_for_status()?.json()?;
    Ok(pulls
        .into_iter()
        .map(|pull| PullRequestSummary {
            number: pull.number,
            title: pull.title,
            state: pull.state,
            draft: pull.draft.unwrap_or(false),
            author: pull.user.map(|user| user.login),
            head: pull.head.reference,
            base: pull.base.reference,
            html_url: pull.html_url,
            created_at: pull.created_at,
        })
        .collect())
}

impl PullRequestState {
    fn as_str(&self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
            Self::All => "all",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClonePayload {
    owner: String,
    repo: String,
    #[serde(rename = "ref")]
    reference: Option<String>,
}

#[derive(Deserialize)]
struct Repository {
    default_branch: String,
}

/// Where to download a repository's tarball, as the plugin returns it.
#[derive(Serialize)]
struct CloneSummary {
    owner: String,
    repo: String,
    #[serde(rename = "ref")]
    reference: String,
    url: String,
    size_bytes: Option<u64>,
}

fn clone(payload: ClonePayload) -> Result<CloneSummary, PluginError> {
    let repository = repository(&payload.owner, &payload.repo)?;
    let reference = match payload.reference {
        Some(reference) => non_empty("ref", &reference)?.to_owned(),
        None => {
            api_get(&format!("/repos/{repository}"), None)?
                .json::<Repository>()?
                .default_branch
        }
    };
    let encoded: Vec<String> = reference.split('/').map(http::encode).collect();
    let url = format!(
        "{}/{repository}/tar.gz/{}",
        setting("codeload_url", DEFAULT_CODELOAD_URL),
        encoded.join("/")
    );
    let response = Request::head(&url)
        .header("user-agent", "honeydew")
        .send()?
        .error_for_status()?;
    let size_bytes = response
        .header("content-length")
        .and_then(|length| length.trim().parse().ok());
    Ok(CloneSummary {
        owner: payload.owner,
        repo: payload.repo,
        reference,
        url,
        size_bytes,
    })
}

/// A configured URL without its trailing slash, or `default`.
fn setting(key: &str, default: &str) -> String {
    config::get_or(key, default)
        .trim_end_matches('/')
        .to_owned()
}

/// A GET of `path` on the API with GitHub's headers and an optional page size.
fn api_request(path: &str, per_page: Option<u8>) -> Result<Request, PluginError> {
    let request = Request::get(&format!("{}{path}", setting("base_url", DEFAULT_BASE_URL)))
        .header("accept", "application/vnd.github+json")
        .header("user-agent", "honeydew")
        .header("x-github-api-version", "2022-11-28");
    match per_page {
        None => Ok(request),
        Some(size @ 1..=MAX_PER_PAGE) => Ok(request.query("per_page", size)),
        Some(size) => Err(PluginError::permanent(format!(
            "invalid payload: \"per_page\" must be 1 to {MAX_PER_PAGE}, got {size}"
        ))),
    }
}

/// Sends [`api_request`] and returns the response, its status classified by the SDK
/// (GitHub's rate limits included).
fn api_get(path: &str, per_page: Option<u8>) -> Result<Response, PluginError> {
    api_request(path, per_page)?.send()?.error_for_status()
}

/// `owner/repo`, both checked with [`name`].
fn repository(owner: &str, repo: &str) -> Result<String, PluginError> {
    Ok(format!("{}/{}", name("owner", owner)?, name("repo", repo)?))
}

/// Checks that `value` of payload field `field` is a GitHub account or repository
/// name, so that it is safe in a URL path.
fn name<'a>(field: &str, value: &'a str) -> Result<&'a str, PluginError> {
    let valid = !matches!(value, "" | "." | "..")
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(value)
    } else {
        Err(PluginError::permanent(format!(
            "invalid payload: {field:?} must be a GitHub name (letters, digits, '-', '_', '.'), got {value:?}"
        )))
    }
}

/// Checks that payload field `field` is not blank.
fn non_empty<'a>(field: &str, value: &'a str) -> Result<&'a str, PluginError> {
    if value.trim().is_empty() {
        Err(PluginError::permanent(format!(
            "invalid payload: {field:?} must not be empty"
        )))
    } else {
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// How the SDK classifies a GitHub response: `None` when it passes, else whether it is
    /// retriable and after how many seconds (rounded up).
    fn check_status(
        status: u16,
        headers: &[(&str, &str)],
        body: &str,
        expected: Option<(bool, Option<u64>)>,
    ) {
        let classified = Response::new(status, headers, body)
            .error_for_status()
            .err()
            .map(|error| {
                let after = match &error {
                    PluginError::Retriable { retry_after, .. } => {
                        retry_after.map(|after| after.as_millis().div_ceil(1000) as u64)
                    }
                    PluginError::Permanent { .. } => None,
                };
                (error.is_retriable(), after)
            });
        assert_eq!(classified, expected, "HTTP {status} {headers:?} {body}");
    }

    #[test]
    fn rate_limits_are_retriable_until_the_reset() {
        let primary = r#"{"message":"API rate limit exceeded for user ID 1."}"#;
        let secondary = r#"{"message":"You have exceeded a secondary rate limit."}"#;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let in_ten_minutes = (now + Duration::from_secs(600)).as_secs().to_string();
        let spent = [
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &*in_ten_minutes),
        ];
        check_status(403, &spent, primary, Some((true, Some(600))));
        check_status(429, &spent, primary, Some((true, Some(600))));
        let passed = [("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1")];
        check_status(429, &passed, primary, Some((true, Some(1))));
        check_status(
            403,
            &[("retry-after", "60")],
            secondary,
            Some((true, Some(60))),
        );
        // A secondary limit that no header times waits a minute, not the primary reset.
        let room = [
            ("x-ratelimit-remaining", "4000"),
            ("x-ratelimit-reset", &*in_ten_minutes),
        ];
        check_status(403, &room, secondary, Some((true, Some(60))));
        // An HTTP-date retry-after, measured from the response's own date.
        let dated = [
            ("date", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ("retry-after", "Wed, 21 Oct 2015 07:30:00 GMT"),
        ];
        check_status(429, &dated, primary, Some((true, Some(120))));
        check_status(403, &dated, secondary, Some((true, Some(120))));
    }

    #[test]
    fn a_plain_forbidden_is_permanent() {
        let forbidden = r#"{"message":"Resource not accessible by integration"}"#;
        check_status(
            403,
            &[("x-ratelimit-remaining", "42")],
            forbidden,
            Some((false, None)),
        );
        check_status(200, &[("x-ratelimit-remaining", "0")], "[]", None);
    }

    #[test]
    fn names_must_be_safe_in_a_path() {
        for good in ["octocat", "Hello-World", "my_repo.rs", ".github"] {
            assert_eq!(name("repo", good), Ok(good));
        }
        for bad in ["", ".", "..", "a/b", "a b", "a?b", "é"] {
            assert!(name("repo", bad).is_err(), "{bad:?} accepted");
        }
    }
}
