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
//! by the SDK, except that GitHub's rate limit (403 or 429 with
//! `x-ratelimit-remaining: 0` or `retry-after`) is retriable once the limit resets.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    let commits: Vec<Commit> = check(request.send()?)?.json()?;
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
    let pulls: Vec<PullRequest> = check(request.send()?)?.json()?;
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
    let response = check(
        Request::head(&url)
            .header("user-agent", "honeydew")
            .send()?,
    )?;
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

/// Sends [`api_request`] and returns the checked response.
fn api_get(path: &str, per_page: Option<u8>) -> Result<Response, PluginError> {
    check(api_request(path, per_page)?.send()?)
}

/// Classifies a response: GitHub's rate limit is retriable once it resets; every
/// other status as the SDK says.
fn check(response: Response) -> Result<Response, PluginError> {
    let limited = response.header("x-ratelimit-remaining") == Some("0")
        || response.header("retry-after").is_some();
    if !(matches!(response.status, 403 | 429) && limited) {
        return response.error_for_status();
    }
    let message = format!("GitHub rate limit exceeded (HTTP {})", response.status);
    let retry_after = response
        .header("retry-after")
        .and_then(|seconds| seconds.trim().parse().ok());
    let reset_at = response
        .header("x-ratelimit-reset")
        .and_then(|epoch| epoch.trim().parse::<u64>().ok());
    let wait = retry_after.or_else(|| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        reset_at.map(|reset| reset.saturating_sub(now))
    });
    Err(match wait {
        Some(seconds) => PluginError::retriable_after(message, Duration::from_secs(seconds)),
        None => PluginError::retriable(message),
    })
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

    fn response(status: u16, headers: &[(&str, &str)]) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|&(name, value)| (name.into(), value.into()))
                .collect(),
            body: br#"{"message":"API rate limit exceeded"}"#.to_vec(),
        }
    }

    #[test]
    fn rate_limits_are_retriable_until_the_reset() {
        let retry_after = check(response(403, &[("retry-after", "60")])).unwrap_err();
        assert_eq!(
            retry_after,
            PluginError::retriable_after(
                "GitHub rate limit exceeded (HTTP 403)",
                Duration::from_secs(60)
            )
        );
        let reset_passed = [("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1")];
        let error = check(response(429, &reset_passed)).unwrap_err();
        assert_eq!(
            error,
            PluginError::retriable_after("GitHub rate limit exceeded (HTTP 429)", Duration::ZERO)
        );
    }

    #[test]
    fn a_plain_forbidden_is_permanent() {
        let error = check(response(403, &[("x-ratelimit-remaining", "42")])).unwrap_err();
        assert!(!error.is_retriable(), "{error}");
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
