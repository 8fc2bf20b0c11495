//! Plugin `bitbucket`: read-only commands over the Bitbucket Cloud REST API (2.0).
//!
//! | command        | payload                                           | request                                      |
//! |----------------|---------------------------------------------------|----------------------------------------------|
//! | `repositories` | `{"workspace", "per_page"?}`                      | `GET /repositories/{workspace}`              |
//! | `commits`      | `{"workspace", "repo", "branch"?, "per_page"?}`   | `GET /repositories/{workspace}/{repo}/commits` |
//! | `pullRequests` | `{"workspace", "repo", "state"?, "per_page"?}`    | `GET /repositories/{workspace}/{repo}/pullrequests` |
//!
//! `state` is `OPEN`, `MERGED`, `DECLINED` or `SUPERSEDED`; `per_page` 1 to 50.
//! Results are compact JSON (see the `*Summary` types), the first page only.
//!
//! Config: `base_url` (default `https://api.bitbucket.org/2.0`). The daemon adds
//! `Authorization` from the manifest's `[[auth]]` rule. Errors: a bad payload is
//! permanent and names the field; statuses are classified by the SDK.

use honeydew_plugin_sdk::http::{Request, Response};
use honeydew_plugin_sdk::{Plugin, PluginError, PluginInfo, config, parse_payload, to_json};
use serde::{Deserialize, Serialize};

const DEFAULT_BASE_URL: &str = "https://api.bitbucket.org/2.0";
/// The largest page every listing here accepts (pull requests stop at 50).
const MAX_PER_PAGE: u8 = 50;

struct Bitbucket;

impl Plugin for Bitbucket {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "bitbucket",
            env!("CARGO_PKG_VERSION"),
            &["repositories", "commits", "pullRequests"],
        )
    }

    fn run(command: &str, payload: &[u8]) -> Result<Vec<u8>, PluginError> {
        match command {
            "repositories" => to_json(&repositories(parse_payload(payload)?)?),
            "commits" => to_json(&commits(parse_payload(payload)?)?),
            "pullRequests" => to_json(&pull_requests(parse_payload(payload)?)?),
            _ => Err(PluginError::unknown_command(command)),
        }
    }
}

honeydew_plugin_sdk::export_plugin!(Bitbucket);

/// One page of a listing.
#[derive(Deserialize)]
struct Page<T> {
    values: Vec<T>,
}

#[derive(Deserialize)]
struct Links {
    html: Link,
}

#[derive(Deserialize)]
struct Link {
    href: String,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RepositoriesPayload {
    workspace: String,
    per_page: Option<u8>,
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
    is_private: bool,
    mainbranch: Option<Named>,
    description: Option<String>,
    links: Links,
    updated_on: Option<String>,
}

/// One repository as the plugin returns it.
#[derive(Serialize)]
struct RepositorySummary {
    full_name: String,
    private: bool,
    default_branch: Option<String>,
    description: Option<String>,
    html_url: String,
    updated_on: Option<String>,
}

fn repositories(payload: RepositoriesPayload) -> Result<Vec<RepositorySummary>, PluginError> {
    let path = format!("/repositories/{}", name("workspace", &payload.workspace)?);
    let page: Page<Repository> = send(paged(api_request(&path), payload.per_page)?)?.json()?;
    Ok(page
        .values
        .into_iter()
        .map(|repository| RepositorySummary {
            full_name: repository.full_name,
            private: repository.is_private,
            default_branch: repository.mainbranch.map(|branch| branch.name),
            description: repository.description.filter(|text| !text.is_empty()),
            html_url: repository.links.html.href,
            updated_on: repository.updated_on,
        })
        .collect())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitsPayload {
    workspace: String,
    repo: String,
    branch: Option<String>,
    per_page: Option<u8>,
}

#[derive(Deserialize)]
struct Commit {
    hash: String,
    message: String,
    author: Option<CommitAuthor>,
    date: Option<String>,
}

#[derive(Deserialize)]
struct CommitAuthor {
    raw: String,
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
        "/repositories/{}/commits",
        repository(&payload.workspace, &payload.repo)?
    );
    let mut request = paged(api_request(&path), payload.per_page)?;
    if let Some(branch) = &payload.branch {
        request = request.query("include", non_empty("branch", branch)?);
    }
    let page: Page<Commit> = send(request)?.json()?;
    Ok(page
        .values
        .into_iter()
        .map(|commit| CommitSummary {
            sha: commit.hash,
            message: commit.message,
            author: commit.author.map(|author| author.raw),
            date: commit.date,
        })
        .collect())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PullRequestsPayload {
    workspace: String,
    repo: String,
    state: Option<PullRequestState>,
    per_page: Option<u8>,
}

#[derive(Deserialize)]
#[serde(rename_all = "UPPERCASE")]
enum PullRequestState {
    Open,
    Merged,
    Declined,
    Superseded,
}

impl PullRequestState {
    fn as_str(&self) -> &'static str {
        match self {
            Self::Open => "OPEN",
            Self::Merged => "MERGED",
            Self::Declined => "DECLINED",
            Self::Superseded => "SUPERSEDED",
        }
    }
}

#[derive(Deserialize)]
struct PullRequest {
    id: u64,
    title: String,
    state: String,
    author: Option<Account>,
    source: Endpoint,
    destination: Endpoint,
    links: Links,
    created_on: String,
}

#[derive(Deserialize)]
struct Account {
    display_name: String,
}

#[derive(Deserialize)]
struct Endpoint {
    branch: Named,
}

/// One pull request as the plugin returns it.
#[derive(Serialize)]
struct PullRequestSummary {
    id: u64,
    title: String,
    state: String,
    author: Option<String>,
    source: String,
    destination: String,
    html_url: String,
    created_on: String,
}

fn pull_requests(payload: PullRequestsPayload) -> Result<Vec<PullRequestSummary>, PluginError> {
    let path = format!(
        "/repositories/{}/pullrequests",
        repository(&payload.workspace, &payload.repo)?
    );
    let mut request = paged(api_request(&path), payload.per_page)?;
    if let Some(state) = &payload.state {
        request = request.query("state", state.as_str());
    }
    let page: Page<PullRequest> = send(request)?.json()?;
    Ok(page
        .values
        .into_iter()
        .map(|pull| PullRequestSummary {
            id: pull.id,
            title: pull.title,
            state: pull.state,
            author: pull.author.map(|author| author.display_name),
            source: pull.source.branch.name,
            destination: pull.destination.branch.name,
            html_url: pull.links.html.href,
            created_on: pull.created_on,
        })
        .collect())
}

/// A GET of `path` on the API.
fn api_request(path: &str) -> Request {
    let base_url = config::get_or("base_url", DEFAULT_BASE_URL);
    Request::get(&format!("{}{path}", base_url.trim_end_matches('/')))
        .header("accept", "application/json")
}

/// Adds a page size, checked against [`MAX_PER_PAGE`].
fn paged(request: Request, per_page: Option<u8>) -> Result<Request, PluginError> {
    match per_page {
        None => Ok(request),
        Some(size @ 1..=MAX_PER_PAGE) => Ok(request.query("pagelen", size)),
        Some(size) => Err(PluginError::permanent(format!(
            "invalid payload: \"per_page\" must be 1 to {MAX_PER_PAGE}, got {size}"
        ))),
    }
}

/// Sends `request` and classifies the response's status.
fn send(request: Request) -> Result<Response, PluginError> {
    request.send()?.error_for_status()
}

/// `workspace/repo`, both checked with [`name`].
fn repository(workspace: &str, repo: &str) -> Result<String, PluginError> {
    Ok(format!(
        "{}/{}",
        name("workspace", workspace)?,
        name("repo", repo)?
    ))
}

/// Checks that payload field `field` is a workspace or repository slug, so that it is
/// safe in a URL path.
fn name<'a>(field: &str, value: &'a str) -> Result<&'a str, PluginError> {
    let valid = !matches!(value, "" | "." | "..")
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(value)
    } else {
        Err(PluginError::permanent(format!(
            "invalid payload: {field:?} must be a slug (letters, digits, '-', '_', '.'), got {value:?}"
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
