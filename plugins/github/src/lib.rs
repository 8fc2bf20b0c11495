//! Plugin `github`: read-only commands over the GitHub REST API.
//!
//! | command        | payload                                                    | request                             |
//! |----------------|------------------------------------------------------------|-------------------------------------|
//! | `repositories` | `{"owner"?}`                                               | `GET /orgs/{owner}/repos` for an organisation, `GET /users/{owner}/repos` for a user (`GET /users/{owner}` says which), `GET /user/repos` without `owner` |
//! | `commits`      | `{"owner", "repo", "sha"?, "since"?, "until"?, "path"?, "author"?}` | `GET /repos/{owner}/{repo}/commits` |
//! | `pullRequests` | `{"owner", "repo", "state"?, "sort"?, "direction"?}`       | `GET /repos/{owner}/{repo}/pulls`   |
//! | `clone`        | `{"owner", "repo", "ref"?}`                                | `GET /repos/{owner}/{repo}/commits/{ref}`, then `GET /repos/{owner}/{repo}/tarball/{sha}` (302 to `codeload_url`) |
//!
//! Every list command also takes `max_items` (default 100, at most 10 000), `next`
//! (the cursor of a previous result, with the same payload otherwise) and `per_page`
//! (1 to 100, default as many as `max_items` needs). It follows GitHub's
//! `Link: <...>; rel="next"` pages and returns the SDK's envelope
//! `{"items": [...], "truncated": bool, "next": cursor or null}`. Filters: commits
//! `since` / `until` (RFC 3339), `path`, `author` (login or email); pulls `state`
//! (`open`, `closed`, `all`), `sort` (`created`, `updated`, `popularity`,
//! `long-running`), `direction` (`asc`, `desc`). A pull request's `state` is `open`,
//! `merged` or `closed`, with GitHub's own value in `source_state` and `merged_at`
//! beside it; timestamps are RFC 3339 UTC. Items are the SDK's shared vocabulary
//! (`vocabulary::{Repository, Commit, PullRequest}`; people `{login, name, email}`).
//!
//! `clone` resolves `ref` (without it, the repository's default branch) to its commit
//! and has the daemon unpack that commit's tarball into the job's workspace (the
//! manifest's `[workspace]` grant; see `honeydew_plugin_sdk::workspace`); it returns
//! `vocabulary::Checkout`: `{repository, ref, sha, path, files, bytes, skipped_links}`,
//! `path` being the directory on the daemon's machine.
//!
//! Config: `base_url` (default `https://api.github.com`; GitHub Enterprise Server is
//! `https://HOST/api/v3`) and `codeload_url` (default `https://codeload.github.com`),
//! the archive host the API redirects `clone`'s download to, granted by the manifest
//! without a credential: its links carry their own.
//! The daemon adds `Authorization` from the manifest's `[[auth]]` rule; this plugin
//! never sets or sees credentials.
//!
//! Errors: a bad payload is permanent and names the field; statuses are classified
//! by the SDK, GitHub's rate limits included: a 403 or 429 with
//! `x-ratelimit-remaining: 0` waits for `x-ratelimit-reset`; a secondary limit
//! (`retry-after`, or a body naming it) waits `retry-after`, else a minute.

use honeydew_plugin_sdk::http::{self, Request, Response};
use honeydew_plugin_sdk::paging::{Fetched, Page, Paging, link_next};
use honeydew_plugin_sdk::vocabulary::{
    Checkout, Commit, Person, PullRequest, PullRequestState, Repository, commit_hash,
};
use honeydew_plugin_sdk::workspace::Archive;
use honeydew_plugin_sdk::{Plugin, PluginError, PluginInfo, config, parse_payload, time, to_json};
use serde::Deserialize;
use serde::de::DeserializeOwned;

const DEFAULT_BASE_URL: &str = "https://api.github.com";
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
    max_items: Option<u64>,
    next: Option<String>,
}

/// One repository as GitHub sends it.
#[derive(Deserialize)]
struct GitHubRepository {
    id: u64,
    full_name: String,
    private: bool,
    default_branch: Option<String>,
    description: Option<String>,
    html_url: String,
    updated_at: Option<String>,
}

/// The account `GET /users/{owner}` describes: a user or an organisation.
#[derive(Deserialize)]
struct Account {
    #[serde(rename = "type")]
    kind: String,
}

fn repositories(payload: RepositoriesPayload) -> Result<Page<Repository>, PluginError> {
    let paging = Paging::new("repositories", payload.max_items, payload.next.as_deref())?;
    let size = page_size(&paging, payload.per_page)?;
    // A resumed listing knows its URL: no need to ask what the owner is again.
    let path = match (&payload.owner, paging.start()) {
        (_, Some(_)) => String::new(),
        (Some(owner), None) => {
            let owner = name("owner", owner)?;
            // GitHub lists an organisation's private repositories (those the token
            // may see) only under /orgs; /users lists public ones alone.
            let account: Account = api_get(&format!("/users/{owner}"), None)?.json()?;
            if account.kind == "Organization" {
                format!("/orgs/{owner}/repos")
            } else {
                format!("/users/{owner}/repos")
            }
        }
        (None, None) => "/user/repos".to_owned(),
    };
    list(
        paging,
        api_request(&path, Some(size))?,
        |repository: GitHubRepository| Repository {
            id: repository.id.to_string(),
            full_name: repository.full_name,
            private: repository.private,
            default_branch: repository.default_branch,
            description: repository.description.filter(|text| !text.is_empty()),
            url: repository.html_url,
            updated_at: time::utc_opt(repository.updated_at),
        },
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitsPayload {
    owner: String,
    repo: String,
    sha: Option<String>,
    /// Only commits after this RFC 3339 time.
    since: Option<String>,
    /// Only commits before this RFC 3339 time.
    until: Option<String>,
    /// Only commits touching this file or directory.
    path: Option<String>,
    /// Only commits by this GitHub login or email address.
    author: Option<String>,
    per_page: Option<u8>,
    max_items: Option<u64>,
    next: Option<String>,
}

/// One commit as GitHub sends it: the git commit, and the GitHub account of its
/// author when GitHub could match one.
#[derive(Deserialize)]
struct GitHubCommit {
    sha: String,
    commit: CommitDetail,
    author: Option<User>,
}

#[derive(Deserialize)]
struct CommitDetail {
    message: String,
    author: Option<Signature>,
}

#[derive(Deserialize)]
struct Signature {
    name: Option<String>,
    email: Option<String>,
    date: Option<String>,
}

fn commits(payload: CommitsPayload) -> Result<Page<Commit>, PluginError> {
    let paging = Paging::new("commits", payload.max_items, payload.next.as_deref())?;
    let path = format!(
        "/repos/{}/commits",
        repository(&payload.owner, &payload.repo)?
    );
    let mut request = api_request(&path, Some(page_size(&paging, payload.per_page)?))?;
    if let Some(sha) = &payload.sha {
        request = request.query("sha", non_empty("sha", sha)?);
    }
    for (field, value) in [("since", &payload.since), ("until", &payload.until)] {
        if let Some(value) = value {
            request = request.query(field, time::payload_timestamp(field, value)?);
        }
    }
    for (field, value) in [("path", &payload.path), ("author", &payload.author)] {
        if let Some(value) = value {
            request = request.query(field, non_empty(field, value)?);
        }
    }
    list(paging, request, summarise_commit)
}

fn summarise_commit(commit: GitHubCommit) -> Commit {
    let login = commit.author.map(|user| user.login);
    let signature = commit.commit.author;
    let date = signature
        .as_ref()
        .and_then(|signature| signature.date.clone());
    let (name, email) = signature
        .map(|signature| (signature.name, signature.email))
        .unwrap_or_default();
    Commit {
        sha: commit.sha,
        message: commit.commit.message,
        author: Person::new(login, name, email),
        date: time::utc_opt(date),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PullRequestsPayload {
    owner: String,
    repo: String,
    state: Option<StateFilter>,
    sort: Option<PullRequestSort>,
    direction: Option<Direction>,
    per_page: Option<u8>,
    max_items: Option<u64>,
    next: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum StateFilter {
    Open,
    Closed,
    All,
}

impl StateFilter {
    fn as_str(&self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
            Self::All => "all",
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum PullRequestSort {
    Created,
    Updated,
    Popularity,
    LongRunning,
}

impl PullRequestSort {
    fn as_str(&self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Popularity => "popularity",
            Self::LongRunning => "long-running",
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Direction {
    Asc,
    Desc,
}

impl Direction {
    fn as_str(&self) -> &'static str {
        match self {
            Self::Asc => "asc",
            Self::Desc => "desc",
        }
    }
}

/// One pull request as GitHub sends it.
#[derive(Deserialize)]
struct GitHubPullRequest {
    number: u64,
    title: String,
    state: String,
    draft: Option<bool>,
    user: Option<User>,
    head: Branch,
    base: Branch,
    html_url: String,
    created_at: String,
    updated_at: Option<String>,
    closed_at: Option<String>,
    merged_at: Option<String>,
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

fn pull_requests(payload: PullRequestsPayload) -> Result<Page<PullRequest>, PluginError> {
    let paging = Paging::new("pullRequests", payload.max_items, payload.next.as_deref())?;
    let path = format!(
        "/repos/{}/pulls",
        repository(&payload.owner, &payload.repo)?
    );
    let mut request = api_request(&path, Some(page_size(&paging, payload.per_page)?))?;
    if let Some(state) = &payload.state {
        request = request.query("state", state.as_str());
    }
    if let Some(sort) = &payload.sort {
        request = request.query("sort", sort.as_str());
    }
    if let Some(direction) = &payload.direction {
        request = request.query("direction", direction.as_str());
    }
    list(paging, request, summarise_pull_request)
}

/// GitHub's `closed` covers merged and rejected alike: `merged_at` tells them apart.
fn summarise_pull_request(pull: GitHubPullRequest) -> PullRequest {
    let state = match (pull.state.as_str(), &pull.merged_at) {
        ("open", _) => PullRequestState::Open,
        (_, Some(_)) => PullRequestState::Merged,
        _ => PullRequestState::Closed,
    };
    PullRequest {
        number: pull.number,
        title: pull.title,
        state,
        source_state: pull.state,
        draft: pull.draft.unwrap_or(false),
        author: pull
            .user
            .and_then(|user| Person::new(Some(user.login), None, None)),
        source_branch: pull.head.reference,
        target_branch: pull.base.reference,
        url: pull.html_url,
        created_at: time::utc(&pull.created_at),
        updated_at: time::utc_opt(pull.updated_at),
        closed_at: time::utc_opt(pull.closed_at),
        merged_at: time::utc_opt(pull.merged_at),
    }
}

/// Follows a listing's `Link: <...>; rel="next"` pages from `first`, converting each
/// item with `convert`, into the SDK's envelope.
fn list<T: DeserializeOwned, U>(
    paging: Paging,
    first: Request,
    convert: impl Fn(T) -> U,
) -> Result<Page<U>, PluginError> {
    let paging = paging.urls_under(&setting("base_url", DEFAULT_BASE_URL))?;
    paging.collect(|position| {
        let request = match position {
            None => first.clone(),
            Some(url) => with_headers(Request::get(url)),
        };
        let response = request.send()?.error_for_status()?;
        let next = link_next(&response);
        let items: Vec<T> = response.json()?;
        Ok(Fetched {
            items: items.into_iter().map(&convert).collect(),
            next,
        })
    })
}

/// The page size to ask for: the payload's `per_page` (1 to 100), else as many as
/// `max_items` needs, at most 100.
fn page_size(paging: &Paging, per_page: Option<u8>) -> Result<u8, PluginError> {
    match per_page {
        None => Ok(u8::try_from(paging.page_size(MAX_PER_PAGE.into())).unwrap_or(MAX_PER_PAGE)),
        Some(size @ 1..=MAX_PER_PAGE) => Ok(size),
        Some(size) => Err(PluginError::permanent(format!(
            "invalid payload: field \"per_page\": must be 1 to {MAX_PER_PAGE}, got {size}"
        ))),
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

/// What `clone` reads of `GET /repos/{owner}/{repo}`.
#[derive(Deserialize)]
struct DefaultBranch {
    default_branch: String,
}

/// Resolves the ref to its commit (`GET /repos/{owner}/{repo}/commits/{ref}` with the
/// `application/vnd.github.sha` media type, which answers the bare hash), then has
/// the daemon download that commit's tarball (`GET /repos/{owner}/{repo}/tarball/{sha}`,
/// which GitHub redirects to its archive host with a short-lived token in the URL: the
/// daemon follows, and the API's credential stays on the API's host) into the job's
/// workspace, without its top-level `owner-repo-sha` directory.
fn clone(payload: ClonePayload) -> Result<Checkout, PluginError> {
    let repository = repository(&payload.owner, &payload.repo)?;
    let reference = match payload.reference {
        Some(reference) => non_empty("ref", &reference)?.to_owned(),
        None => {
            api_get(&format!("/repos/{repository}"), None)?
                .json::<DefaultBranch>()?
                .default_branch
        }
    };
    let encoded: Vec<String> = reference.split('/').map(http::encode).collect();
    let resolved = Request::get(&format!(
        "{}/repos/{repository}/commits/{}",
        setting("base_url", DEFAULT_BASE_URL),
        encoded.join("/")
    ))
    .header("accept", "application/vnd.github.sha")
    .header("user-agent", "honeydew")
    .header("x-github-api-version", "2022-11-28")
    .send()?
    .error_for_status()
    .map_err(|error| {
        in_context(
            error,
            &format!("cannot resolve {reference:?} in {repository}"),
        )
    })?;
    let sha = commit_hash(&resolved.text())?;
    let unpacked = Archive::tar_gz(&format!(
        "{}/repos/{repository}/tarball/{sha}",
        setting("base_url", DEFAULT_BASE_URL)
    ))
    .header("accept", "application/vnd.github+json")
    .header("x-github-api-version", "2022-11-28")
    .strip_components(1)
    .unpack()?;
    Ok(Checkout::new(repository, reference, sha, &unpacked))
}

/// `error` with `context` before its message, its class kept.
fn in_context(error: PluginError, context: &str) -> PluginError {
    match error {
        PluginError::Retriable {
            message,
            retry_after,
        } => PluginError::Retriable {
            message: format!("{context}: {message}"),
            retry_after,
        },
        PluginError::Permanent { message } => {
            PluginError::permanent(format!("{context}: {message}"))
        }
    }
}

/// A configured URL without its trailing slash, or `default`.
fn setting(key: &str, default: &str) -> String {
    config::get_or(key, default)
        .trim_end_matches('/')
        .to_owned()
}

/// A GET of `path` on the API with GitHub's headers and an optional page size.
fn api_request(path: &str, per_page: Option<u8>) -> Result<Request, PluginError> {
    let request = with_headers(Request::get(&format!(
        "{}{path}",
        setting("base_url", DEFAULT_BASE_URL)
    )));
    match per_page {
        None => Ok(request),
        Some(size @ 1..=MAX_PER_PAGE) => Ok(request.query("per_page", size)),
        Some(size) => Err(PluginError::permanent(format!(
            "invalid payload: field \"per_page\": must be 1 to {MAX_PER_PAGE}, got {size}"
        ))),
    }
}

/// GitHub's headers on `request`.
fn with_headers(request: Request) -> Request {
    request
        .header("accept", "application/vnd.github+json")
        .header("user-agent", "honeydew")
        .header("x-github-api-version", "2022-11-28")
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
    fn pull_request_states_tell_merged_from_closed() {
        let pull = |state: &str, merged_at: Option<&str>| {
            serde_json::from_value::<GitHubPullRequest>(serde_json::json!({
                "number": 1, "title": "t", "state": state, "draft": null, "user": null,
                "head": {"ref": "feature"}, "base": {"ref": "main"},
                "html_url": "https://github.com/o/r/pull/1",
                "created_at": "2024-01-02T03:04:05Z",
                "closed_at": merged_at, "merged_at": merged_at
            }))
            .unwrap()
        };
        let merged = summarise_pull_request(pull("closed", Some("2024-02-03T04:05:06Z")));
        assert_eq!(
            (merged.state, &*merged.source_state),
            (PullRequestState::Merged, "closed")
        );
        assert_eq!(merged.merged_at.as_deref(), Some("2024-02-03T04:05:06Z"));
        let rejected = summarise_pull_request(pull("closed", None));
        assert_eq!(
            (rejected.state, rejected.merged_at),
            (PullRequestState::Closed, None)
        );
        let open = summarise_pull_request(pull("open", None));
        assert_eq!(
            (open.state, open.draft, open.author),
            (PullRequestState::Open, false, None)
        );
        assert_eq!(
            (&*open.source_branch, &*open.target_branch),
            ("feature", "main")
        );
    }

    #[test]
    fn commit_authors_are_people() {
        let commit = serde_json::from_value::<GitHubCommit>(serde_json::json!({
            "sha": "abc",
            "commit": {"message": "m", "author": {"name": "Ada", "email": "ada@example.com",
                       "date": "2024-01-02T03:04:05+01:00"}},
            "author": {"login": "ada"}
        }))
        .unwrap();
        let commit = summarise_commit(commit);
        assert_eq!(
            commit.author,
            Person::new(
                Some("ada".into()),
                Some("Ada".into()),
                Some("ada@example.com".into())
            )
        );
        assert_eq!(commit.date.as_deref(), Some("2024-01-02T02:04:05Z"));
        let anonymous = serde_json::from_value::<GitHubCommit>(serde_json::json!({
            "sha": "abc", "commit": {"message": "m", "author": null}, "author": null
        }))
        .unwrap();
        assert_eq!(summarise_commit(anonymous).author, None);
    }

    #[test]
    fn page_sizes_follow_max_items() {
        let paging = |max_items| Paging::new("commits", Some(max_items), None).unwrap();
        assert_eq!(page_size(&paging(30), None), Ok(30));
        assert_eq!(page_size(&paging(137), None), Ok(100));
        assert_eq!(page_size(&paging(137), Some(10)), Ok(10));
        let error = page_size(&paging(5), Some(0)).unwrap_err();
        assert_eq!(
            error.message(),
            "invalid payload: field \"per_page\": must be 1 to 100, got 0"
        );
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
