//! Plugin `gitlab`: read-only commands over the GitLab REST API (v4).
//!
//! `project` is a numeric id or a full path such as `"group/subgroup/name"`.
//!
//! | command         | payload                                      | request                                          |
//! |-----------------|----------------------------------------------|--------------------------------------------------|
//! | `projects`      | `{"group"?, "per_page"?}`                    | `GET /groups/{group}/projects`, or `GET /projects?membership=true` |
//! | `commits`       | `{"project", "ref"?, "per_page"?}`           | `GET /projects/{project}/repository/commits`     |
//! | `mergeRequests` | `{"project", "state"?, "per_page"?}`         | `GET /projects/{project}/merge_requests`         |
//! | `clone`         | `{"project", "ref"?}`                        | `HEAD /projects/{project}/repository/archive.tar.gz?sha={ref}` |
//!
//! `state` is `opened`, `closed`, `merged`, `locked` or `all`. Results are compact
//! JSON (see the `*Summary` types). `clone` names the archive URL (on the API host, so
//! the daemon's auth applies to it) and its size, `null` when the server does not say;
//! without `ref` it uses the project's default branch.
//!
//! Config: `base_url` (default `https://gitlab.com/api/v4`). The daemon adds the token
//! header from the manifest's `[[auth]]` rule. Errors: a bad payload is permanent and
//! names the field; statuses are classified by the SDK.

use honeydew_plugin_sdk::http::{self, Request, Response};
use honeydew_plugin_sdk::{Plugin, PluginError, PluginInfo, config, parse_payload, to_json};
use serde::{Deserialize, Serialize};

const DEFAULT_BASE_URL: &str = "https://gitlab.com/api/v4";
/// The most items GitLab returns per page.
const MAX_PER_PAGE: u8 = 100;

struct GitLab;

impl Plugin for GitLab {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "gitlab",
            env!("CARGO_PKG_VERSION"),
            &["projects", "commits", "mergeRequests", "clone"],
        )
    }

    fn run(command: &str, payload: &[u8]) -> Result<Vec<u8>, PluginError> {
        match command {
            "projects" => to_json(&projects(parse_payload(payload)?)?),
            "commits" => to_json(&commits(parse_payload(payload)?)?),
            "mergeRequests" => to_json(&merge_requests(parse_payload(payload)?)?),
            "clone" => to_json(&clone(parse_payload(payload)?)?),
            _ => Err(PluginError::unknown_command(command)),
        }
    }
}

honeydew_plugin_sdk::export_plugin!(GitLab);

/// A project or group: a numeric id or a full path, encoded as one path segment.
#[derive(Deserialize)]
#[serde(untagged)]
enum Reference {
    Id(u64),
    Path(String),
}

impl Reference {
    fn segment(&self, field: &str) -> Result<String, PluginError> {
        match self {
            Self::Id(id) => Ok(id.to_string()),
            Self::Path(path) if !path.trim().is_empty() => Ok(http::encode(path)),
            Self::Path(_) => Err(PluginError::permanent(format!(
                "invalid payload: {field:?} must not be empty"
            ))),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectsPayload {
    group: Option<Reference>,
    per_page: Option<u8>,
}

/// One project, as GitLab sends it and as the plugin returns it.
#[derive(Deserialize, Serialize)]
struct ProjectSummary {
    id: u64,
    path_with_namespace: String,
    default_branch: Option<String>,
    visibility: Option<String>,
    web_url: String,
    last_activity_at: Option<String>,
}

fn projects(payload: ProjectsPayload) -> Result<Vec<ProjectSummary>, PluginError> {
    let request = match &payload.group {
        Some(group) => api_request(&format!("/groups/{}/projects", group.segment("group")?)),
        None => api_request("/projects").query("membership", true),
    };
    send(paged(request, payload.per_page)?)?.json()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitsPayload {
    project: Reference,
    #[serde(rename = "ref")]
    reference: Option<String>,
    per_page: Option<u8>,
}

#[derive(Deserialize)]
struct Commit {
    id: String,
    message: String,
    author_name: Option<String>,
    authored_date: Option<String>,
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
        "/projects/{}/repository/commits",
        payload.project.segment("project")?
    );
    let mut request = paged(api_request(&path), payload.per_page)?;
    if let Some(reference) = &payload.reference {
        request = request.query("ref_name", non_empty("ref", reference)?);
    }
    let commits: Vec<Commit> = send(request)?.json()?;
    Ok(commits
        .into_iter()
        .map(|commit| CommitSummary {
            sha: commit.id,
            message: commit.message,
            author: commit.author_name,
            date: commit.authored_date,
        })
        .collect())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MergeRequestsPayload {
    project: Reference,
    state: Option<MergeRequestState>,
    per_page: Option<u8>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum MergeRequestState {
    Opened,
    Closed,
    Merged,
    Locked,
    All,
}

impl MergeRequestState {
    fn as_str(&self) -> &'static str {
        match self {
            Self::Opened => "opened",
            Self::Closed => "closed",
            Self::Merged => "merged",
            Self::Locked => "locked",
            Self::All => "all",
        }
    }
}

#[derive(Deserialize)]
struct MergeRequest {
    iid: u64,
    title: String,
    state: String,
    draft: Option<bool>,
    author: Option<Author>,
    source_branch: String,
    target_branch: String,
    web_url: String,
    created_at: String,
}

#[derive(Deserialize)]
struct Author {
    username: String,
}

/// One merge request as the plugin returns it.
#[derive(Serialize)]
struct MergeRequestSummary {
    iid: u64,
    title: String,
    state: String,
    draft: bool,
    author: Option<String>,
    source_branch: String,
    target_branch: String,
    web_url: String,
    created_at: String,
}

fn merge_requests(payload: MergeRequestsPayload) -> Result<Vec<MergeRequestSummary>, PluginError> {
    let path = format!(
        "/projects/{}/merge_requests",
        payload.project.segment("project")?
    );
    let mut request = paged(api_request(&path), payload.per_page)?;
    if let Some(state) = &payload.state {
        request = request.query("state", state.as_str());
    }
    let merge_requests: Vec<MergeRequest> = send(request)?.json()?;
    Ok(merge_requests
        .into_iter()
        .map(|merge_request| MergeRequestSummary {
            iid: merge_request.iid,
            title: merge_request.title,
            state: merge_request.state,
            draft: merge_request.draft.unwrap_or(false),
            author: merge_request.author.map(|author| author.username),
            source_branch: merge_request.source_branch,
            target_branch: merge_request.target_branch,
            web_url: merge_request.web_url,
            created_at: merge_request.created_at,
        })
        .collect())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClonePayload {
    project: Reference,
    #[serde(rename = "ref")]
    reference: Option<String>,
}

#[derive(Deserialize)]
struct Project {
    default_branch: Option<String>,
}

/// Where to download a project's archive, as the plugin returns it.
#[derive(Serialize)]
struct CloneSummary {
    #[serde(rename = "ref")]
    reference: String,
    url: String,
    size_bytes: Option<u64>,
}

fn clone(payload: ClonePayload) -> Result<CloneSummary, PluginError> {
    let project = format!("/projects/{}", payload.project.segment("project")?);
    let reference = match payload.reference {
        Some(reference) => non_empty("ref", &reference)?.to_owned(),
        None => send(api_request(&project))?
            .json::<Project>()?
            .default_branch
            .ok_or_else(|| {
                PluginError::permanent("the project has no default branch (empty repository?)")
            })?,
    };
    let url = format!(
        "{}{project}/repository/archive.tar.gz?sha={}",
        base_url(),
        http::encode(&reference)
    );
    let response = send(Request::head(&url))?;
    let size_bytes = response
        .header("content-length")
        .and_then(|length| length.trim().parse().ok());
    Ok(CloneSummary {
        reference,
        url,
        size_bytes,
    })
}

/// The configured API root without its trailing slash.
fn base_url() -> String {
    config::get_or("base_url", DEFAULT_BASE_URL)
        .trim_end_matches('/')
        .to_owned()
}

/// A GET of `path` on the API.
fn api_request(path: &str) -> Request {
    Request::get(&format!("{}{path}", base_url())).header("accept", "application/json")
}

/// Adds a page size, checked against GitLab's maximum.
fn paged(request: Request, per_page: Option<u8>) -> Result<Request, PluginError> {
    match per_page {
        None => Ok(request),
        Some(size @ 1..=MAX_PER_PAGE) => Ok(request.query("per_page", size)),
        Some(size) => Err(PluginError::permanent(format!(
            "invalid payload: \"per_page\" must be 1 to {MAX_PER_PAGE}, got {size}"
        ))),
    }
}

/// Sends `request` and classifies the response's status.
fn send(request: Request) -> Result<Response, PluginError> {
    request.send()?.error_for_status()
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
