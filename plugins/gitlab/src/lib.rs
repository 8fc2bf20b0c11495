//! Plugin `gitlab`: read-only commands over the GitLab REST API (v4).
//!
//! `project` is a numeric id or a full path such as `"group/subgroup/name"`.
//!
//! | command         | payload                                                        | request                                          |
//! |-----------------|----------------------------------------------------------------|--------------------------------------------------|
//! | `projects`      | `{"group"?, "include_subgroups"?}`                             | `GET /groups/{group}/projects`, or `GET /projects?membership=true` |
//! | `commits`       | `{"project", "ref"?, "since"?, "until"?, "path"?, "author"?}`  | `GET /projects/{project}/repository/commits`     |
//! | `mergeRequests` | `{"project", "state"?, "updated_after"?, "updated_before"?}`   | `GET /projects/{project}/merge_requests`         |
//! | `issues`        | `{"project", "state"?, "updated_after"?, "updated_before"?, "labels"?}` | `GET /projects/{project}/issues`        |
//! | `clone`         | `{"project", "ref"?}`                                          | `GET /projects/{project}/repository/commits/{ref}`, then `GET /projects/{project}/repository/archive.tar.gz?sha={sha}` |
//!
//! Every list command also takes `max_items` (default 100, at most 10 000), `next`
//! (the cursor of a previous result, with the same payload otherwise) and `per_page`
//! (1 to 100). It follows GitLab's `Link: <...>; rel="next"` (or `x-next-page`) and
//! returns the SDK's envelope `{"items": [...], "truncated": bool, "next": cursor or
//! null}`. The merge requests' `state` filter is `opened`, `closed`, `merged`,
//! `locked` or `all`, the issues' `opened`, `closed` or `all`; a merge request's
//! `state` in the result is `open`, `merged` or `closed`, with GitLab's own value in
//! `source_state`. Times in filters and results are RFC 3339 (results in UTC). Items
//! are the SDK's shared vocabulary: projects are `vocabulary::Repository`
//! (`full_name` is the path with namespace), merge requests `vocabulary::PullRequest`
//! (`number` is the `iid`), issues `vocabulary::Issue` (`key` is the full reference,
//! `group/project#12`). `clone` resolves `ref` (without it, the project's default
//! branch) to its commit and has the daemon unpack that commit's archive (on the API
//! host, so the daemon's auth applies to it) into the job's workspace (the manifest's
//! `[workspace]` grant); it returns `vocabulary::Checkout`: `{repository, ref, sha,
//! path, files, bytes, skipped_links}`, `path` being the directory on the daemon's
//! machine.
//!
//! Config: `base_url` (default `https://gitlab.com/api/v4`; a self-hosted GitLab is
//! `https://HOST/api/v4`). The daemon adds the token header from the manifest's
//! `[[auth]]` rule. Errors: a bad payload is permanent and names the field; statuses
//! are classified by the SDK.

use honeydew_plugin_sdk::http::{self, Request, Response};
use honeydew_plugin_sdk::paging::{Fetched, Page, Paging, link_next, with_query};
use honeydew_plugin_sdk::vocabulary::{
    Checkout, Commit, Issue, IssueState, Person, PullRequest, PullRequestState, Repository,
    commit_hash,
};
use honeydew_plugin_sdk::workspace::Archive;
use honeydew_plugin_sdk::{Plugin, PluginError, PluginInfo, config, parse_payload, time, to_json};
use serde::Deserialize;
use serde::de::DeserializeOwned;

const DEFAULT_BASE_URL: &str = "https://gitlab.com/api/v4";
/// The most items GitLab returns per page.
const MAX_PER_PAGE: u8 = 100;

struct GitLab;

impl Plugin for GitLab {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "gitlab",
            env!("CARGO_PKG_VERSION"),
            &["projects", "commits", "mergeRequests", "issues", "clone"],
        )
    }

    fn run(command: &str, payload: &[u8]) -> Result<Vec<u8>, PluginError> {
        match command {
            "projects" => to_json(&projects(parse_payload(payload)?)?),
            "commits" => to_json(&commits(parse_payload(payload)?)?),
            "mergeRequests" => to_json(&merge_requests(parse_payload(payload)?)?),
            "issues" => to_json(&issues(parse_payload(payload)?)?),
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
    /// With `group`: its subgroups' projects too.
    include_subgroups: Option<bool>,
    per_page: Option<u8>,
    max_items: Option<u64>,
    next: Option<String>,
}

/// One project as GitLab sends it; the plugin returns it as a repository.
#[derive(Deserialize)]
struct GitLabProject {
    id: u64,
    path_with_namespace: String,
    default_branch: Option<String>,
    visibility: Option<String>,
    description: Option<String>,
    web_url: String,
    last_activity_at: Option<String>,
}

fn projects(payload: ProjectsPayload) -> Result<Page<Repository>, PluginError> {
    let paging = Paging::new("projects", payload.max_items, payload.next.as_deref())?;
    let request = match &payload.group {
        Some(group) => {
            let request = api_request(&format!("/groups/{}/projects", group.segment("group")?));
            match payload.include_subgroups {
                Some(include) => request.query("include_subgroups", include),
                None => request,
            }
        }
        None if payload.include_subgroups.is_some() => {
            return Err(PluginError::permanent(
                "invalid payload: field \"include_subgroups\": needs \"group\"",
            ));
        }
        None => api_request("/projects").query("membership", true),
    };
    let request = paged(request, &paging, payload.per_page)?;
    list(paging, request, summarise_project)
}

fn summarise_project(project: GitLabProject) -> Repository {
    Repository {
        id: project.id.to_string(),
        full_name: project.path_with_namespace,
        private: project.visibility.as_deref() != Some("public"),
        default_branch: project.default_branch,
        description: project.description.filter(|text| !text.is_empty()),
        url: project.web_url,
        updated_at: time::utc_opt(project.last_activity_at),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitsPayload {
    project: Reference,
    #[serde(rename = "ref")]
    reference: Option<String>,
    /// Only commits after this RFC 3339 time.
    since: Option<String>,
    /// Only commits before this RFC 3339 time.
    until: Option<String>,
    /// Only commits touching this file or directory.
    path: Option<String>,
    /// Only commits by this author (name or email).
    author: Option<String>,
    per_page: Option<u8>,
    max_items: Option<u64>,
    next: Option<String>,
}

/// One commit as GitLab sends it.
#[derive(Deserialize)]
struct GitLabCommit {
    id: String,
    message: String,
    author_name: Option<String>,
    author_email: Option<String>,
    authored_date: Option<String>,
}

fn commits(payload: CommitsPayload) -> Result<Page<Commit>, PluginError> {
    let paging = Paging::new("commits", payload.max_items, payload.next.as_deref())?;
    let path = format!(
        "/projects/{}/repository/commits",
        payload.project.segment("project")?
    );
    let mut request = paged(api_request(&path), &paging, payload.per_page)?;
    if let Some(reference) = &payload.reference {
        request = request.query("ref_name", non_empty("ref", reference)?);
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
    list(paging, request, |commit: GitLabCommit| Commit {
        sha: commit.id,
        message: commit.message,
        author: Person::new(None, commit.author_name, commit.author_email),
        date: time::utc_opt(commit.authored_date),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MergeRequestsPayload {
    project: Reference,
    state: Option<MergeRequestState>,
    /// Only merge requests updated at or after this RFC 3339 time.
    updated_after: Option<String>,
    /// Only merge requests updated at or before this RFC 3339 time.
    updated_before: Option<String>,
    per_page: Option<u8>,
    max_items: Option<u64>,
    next: Option<String>,
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

/// One merge request as GitLab sends it.
#[derive(Deserialize)]
struct GitLabMergeRequest {
    iid: u64,
    title: String,
    state: String,
    draft: Option<bool>,
    author: Option<Author>,
    source_branch: String,
    target_branch: String,
    web_url: String,
    created_at: String,
    updated_at: Option<String>,
    merged_at: Option<String>,
    closed_at: Option<String>,
}

#[derive(Deserialize)]
struct Author {
    username: Option<String>,
    name: Option<String>,
}

fn merge_requests(payload: MergeRequestsPayload) -> Result<Page<PullRequest>, PluginError> {
    let paging = Paging::new("mergeRequests", payload.max_items, payload.next.as_deref())?;
    let path = format!(
        "/projects/{}/merge_requests",
        payload.project.segment("project")?
    );
    let mut request = paged(api_request(&path), &paging, payload.per_page)?;
    if let Some(state) = &payload.state {
        request = request.query("state", state.as_str());
    }
    for (field, value) in [
        ("updated_after", &payload.updated_after),
        ("updated_before", &payload.updated_before),
    ] {
        if let Some(value) = value {
            request = request.query(field, time::payload_timestamp(field, value)?);
        }
    }
    list(paging, request, summarise_merge_request)
}

fn summarise_merge_request(merge_request: GitLabMergeRequest) -> PullRequest {
    let state = match merge_request.state.as_str() {
        "merged" => PullRequestState::Merged,
        "closed" => PullRequestState::Closed,
        // `opened`, and `locked` (open, its discussion locked).
        _ => PullRequestState::Open,
    };
    PullRequest {
        number: merge_request.iid,
        title: merge_request.title,
        state,
        source_state: merge_request.state,
        draft: merge_request.draft.unwrap_or(false),
        author: merge_request
            .author
            .and_then(|author| Person::new(author.username, author.name, None)),
        source_branch: merge_request.source_branch,
        target_branch: merge_request.target_branch,
        url: merge_request.web_url,
        created_at: time::utc(&merge_request.created_at),
        updated_at: time::utc_opt(merge_request.updated_at),
        merged_at: time::utc_opt(merge_request.merged_at),
        closed_at: time::utc_opt(merge_request.closed_at),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuesPayload {
    project: Reference,
    state: Option<IssueStateFilter>,
    /// Only issues updated at or after this RFC 3339 time.
    updated_after: Option<String>,
    /// Only issues updated at or before this RFC 3339 time.
    updated_before: Option<String>,
    /// Only issues with all these labels (comma-separated, as GitLab takes them).
    labels: Option<String>,
    per_page: Option<u8>,
    max_items: Option<u64>,
    next: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum IssueStateFilter {
    Opened,
    Closed,
    All,
}

impl IssueStateFilter {
    fn as_str(&self) -> &'static str {
        match self {
            Self::Opened => "opened",
            Self::Closed => "closed",
            Self::All => "all",
        }
    }
}

/// One issue as GitLab sends it.
#[derive(Deserialize)]
struct GitLabIssue {
    iid: u64,
    title: String,
    state: String,
    issue_type: Option<String>,
    author: Option<Author>,
    #[serde(default)]
    assignees: Vec<Author>,
    web_url: String,
    created_at: Option<String>,
    updated_at: Option<String>,
    closed_at: Option<String>,
    references: Option<References>,
}

#[derive(Deserialize)]
struct References {
    full: Option<String>,
}

fn issues(payload: IssuesPayload) -> Result<Page<Issue>, PluginError> {
    let paging = Paging::new("issues", payload.max_items, payload.next.as_deref())?;
    let path = format!("/projects/{}/issues", payload.project.segment("project")?);
    let mut request = paged(api_request(&path), &paging, payload.per_page)?;
    if let Some(state) = &payload.state {
        request = request.query("state", state.as_str());
    }
    for (field, value) in [
        ("updated_after", &payload.updated_after),
        ("updated_before", &payload.updated_before),
    ] {
        if let Some(value) = value {
            request = request.query(field, time::payload_timestamp(field, value)?);
        }
    }
    if let Some(labels) = &payload.labels {
        request = request.query("labels", non_empty("labels", labels)?);
    }
    list(paging, request, summarise_issue)
}

/// An issue in the shared vocabulary: `key` is GitLab's full reference
/// (`group/project#12`), `state` open or closed, `status` GitLab's own state, the
/// first assignee the assignee and the author the reporter.
fn summarise_issue(issue: GitLabIssue) -> Issue {
    let person = |author: Author| Person::new(author.username, author.name, None);
    let state = match issue.state.as_str() {
        "closed" => IssueState::Closed,
        _ => IssueState::Open,
    };
    Issue {
        key: issue
            .references
            .and_then(|references| references.full)
            .unwrap_or_else(|| format!("#{}", issue.iid)),
        title: Some(issue.title),
        state: Some(state),
        status: Some(issue.state),
        issue_type: issue.issue_type,
        priority: None,
        assignee: issue.assignees.into_iter().next().and_then(person),
        reporter: issue.author.and_then(person),
        url: Some(issue.web_url),
        created_at: time::utc_opt(issue.created_at),
        updated_at: time::utc_opt(issue.updated_at),
        closed_at: time::utc_opt(issue.closed_at),
    }
}

/// Follows a listing's pages from `first` into the SDK's envelope: the `Link` header's
/// `rel="next"` (offset and keyset pagination both send it), else `x-next-page`
/// applied to the page's own URL; an empty `x-next-page` ends the listing.
fn list<T: DeserializeOwned, U>(
    paging: Paging,
    first: Request,
    convert: impl Fn(T) -> U,
) -> Result<Page<U>, PluginError> {
    let paging = paging.urls_under(&base_url())?;
    paging.collect(|position| {
        let request = match position {
            None => first.clone(),
            Some(url) => Request::get(url).header("accept", "application/json"),
        };
        let url = request.url().to_owned();
        let response = send(request)?;
        let next = next_page(&response, &url);
        let items: Vec<T> = response.json()?;
        Ok(Fetched {
            items: items.into_iter().map(&convert).collect(),
            next,
        })
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClonePayload {
    project: Reference,
    #[serde(rename = "ref")]
    reference: Option<String>,
}

/// What `clone` reads of `GET /projects/{project}`.
#[derive(Deserialize)]
struct Project {
    path_with_namespace: String,
    default_branch: Option<String>,
}

/// What `clone` reads of `GET /projects/{project}/repository/commits/{ref}`.
#[derive(Deserialize)]
struct CommitId {
    id: String,
}

/// Resolves the ref to its commit, then has the daemon download that commit's archive
/// (`GET /projects/{project}/repository/archive.tar.gz?sha={sha}`, on the API host, so
/// the manifest's token reaches it) into the job's workspace, without its top-level
/// `project-sha-sha` directory.
fn clone(payload: ClonePayload) -> Result<Checkout, PluginError> {
    let project_path = format!("/projects/{}", payload.project.segment("project")?);
    let project = send(api_request(&project_path))?.json::<Project>()?;
    let reference = match payload.reference {
        Some(reference) => non_empty("ref", &reference)?.to_owned(),
        None => project.default_branch.ok_or_else(|| {
            PluginError::permanent("the project has no default branch (empty repository?)")
        })?,
    };
    let commit = send(api_request(&format!(
        "{project_path}/repository/commits/{}",
        http::encode(&reference)
    )))
    .map_err(|error| {
        let context = format!(
            "cannot resolve {reference:?} in {}",
            project.path_with_namespace
        );
        match error {
            PluginError::Permanent { message } => {
                PluginError::permanent(format!("{context}: {message}"))
            }
            retriable => retriable,
        }
    })?
    .json::<CommitId>()?;
    let sha = commit_hash(&commit.id)?;
    let unpacked = Archive::tar_gz(&format!(
        "{}{project_path}/repository/archive.tar.gz?sha={sha}",
        base_url()
    ))
    .strip_components(1)
    .unpack()?;
    Ok(Checkout::new(
        project.path_with_namespace,
        reference,
        sha,
        &unpacked,
    ))
}

/// The URL of the page after `response`, fetched from `url`: the `Link` header's
/// `rel="next"`, else `x-next-page` (a page number; empty on the last page).
fn next_page(response: &Response, url: &str) -> Option<String> {
    link_next(response).or_else(|| {
        let page = response.header("x-next-page")?.trim();
        let valid =
            !page.is_empty() && page.len() <= 10 && page.bytes().all(|b| b.is_ascii_digit());
        valid.then(|| with_query(url, "page", page))
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

/// Adds a page size: the payload's `per_page` (1 to 100), else as many as `max_items`
/// needs, at most 100.
fn paged(request: Request, paging: &Paging, per_page: Option<u8>) -> Result<Request, PluginError> {
    match per_page {
        None => Ok(request.query("per_page", paging.page_size(MAX_PER_PAGE.into()))),
        Some(size @ 1..=MAX_PER_PAGE) => Ok(request.query("per_page", size)),
        Some(size) => Err(PluginError::permanent(format!(
            "invalid payload: field \"per_page\": must be 1 to {MAX_PER_PAGE}, got {size}"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_is_the_link_or_x_next_page() {
        let url = "https://gitlab.example/api/v4/projects/1/repository/commits?per_page=100";
        let check = |headers: &[(&str, &str)], expected: Option<&str>| {
            let response = Response::new(200, headers, "[]");
            assert_eq!(
                next_page(&response, url).as_deref(),
                expected,
                "{headers:?}"
            );
        };
        check(
            &[(
                "link",
                "<https://gitlab.example/api/v4/projects/1/repository/commits?page=2&per_page=100>; rel=\"next\", \
                 <https://gitlab.example/api/v4/projects/1/repository/commits?page=1&per_page=100>; rel=\"first\"",
            )],
            Some("https://gitlab.example/api/v4/projects/1/repository/commits?page=2&per_page=100"),
        );
        check(
            &[("x-next-page", "3"), ("x-page", "2")],
            Some("https://gitlab.example/api/v4/projects/1/repository/commits?per_page=100&page=3"),
        );
        check(&[("x-next-page", "")], None);
        check(&[("x-next-page", "3; DROP")], None);
        check(&[], None);
    }

    #[test]
    fn merge_request_states_map_to_one_vocabulary() {
        let merge_request = |state: &str| {
            serde_json::from_value::<GitLabMergeRequest>(serde_json::json!({
                "iid": 7, "title": "t", "state": state, "author": null,
                "source_branch": "f", "target_branch": "main",
                "web_url": "https://gitlab.example/g/p/-/merge_requests/7",
                "created_at": "2024-01-02T03:04:05.000+01:00",
                "merged_at": null
            }))
            .unwrap()
        };
        for (source, state) in [
            ("opened", PullRequestState::Open),
            ("locked", PullRequestState::Open),
            ("merged", PullRequestState::Merged),
            ("closed", PullRequestState::Closed),
        ] {
            let summary = summarise_merge_request(merge_request(source));
            assert_eq!((summary.state, &*summary.source_state), (state, source));
            assert_eq!(summary.created_at, "2024-01-02T02:04:05Z");
            assert_eq!(summary.author, None);
        }
    }

    #[test]
    fn issues_speak_the_shared_vocabulary() {
        let issue = serde_json::from_value::<GitLabIssue>(serde_json::json!({
            "iid": 12, "title": "t", "state": "closed", "issue_type": "incident",
            "author": {"username": "ada", "name": "Ada"}, "assignees": [],
            "web_url": "https://gitlab.example/g/p/-/issues/12",
            "created_at": "2024-01-02T03:04:05.000+01:00", "closed_at": "2024-01-03T00:00:00.000Z",
            "references": {"short": "#12", "full": "g/p#12"}
        }))
        .unwrap();
        let issue = summarise_issue(issue);
        assert_eq!(
            (&*issue.key, issue.state),
            ("g/p#12", Some(IssueState::Closed))
        );
        assert_eq!(issue.status.as_deref(), Some("closed"));
        assert_eq!(issue.assignee, None);
        assert_eq!(
            issue.reporter,
            Person::new(Some("ada".into()), Some("Ada".into()), None)
        );
        assert_eq!(issue.created_at.as_deref(), Some("2024-01-02T02:04:05Z"));
    }

    #[test]
    fn projects_are_repositories() {
        let project = serde_json::from_value::<GitLabProject>(serde_json::json!({
            "id": 7, "path_with_namespace": "acme/platform/api", "default_branch": "main",
            "visibility": "internal", "description": "", "web_url": "https://gitlab.example/acme/platform/api",
            "last_activity_at": "2024-01-02T03:04:05.678+01:00"
        }))
        .unwrap();
        let repository = summarise_project(project);
        assert_eq!(
            (&*repository.id, &*repository.full_name, repository.private),
            ("7", "acme/platform/api", true)
        );
        assert_eq!(repository.description, None);
        assert_eq!(
            repository.updated_at.as_deref(),
            Some("2024-01-02T02:04:05.678Z")
        );
    }

    #[test]
    fn references_and_sizes_are_checked() {
        assert_eq!(
            Reference::Path("group/sub/name".into())
                .segment("project")
                .unwrap(),
            "group%2Fsub%2Fname"
        );
        assert_eq!(Reference::Id(42).segment("project").unwrap(), "42");
        assert!(Reference::Path(" ".into()).segment("project").is_err());
        let paging = Paging::new("commits", Some(30), None).unwrap();
        let request = paged(Request::get("https://x.test/x"), &paging, None).unwrap();
        assert!(
            request.url().ends_with("/x?per_page=30"),
            "{}",
            request.url()
        );
        let error = paged(Request::get("https://x.test/x"), &paging, Some(101)).unwrap_err();
        assert!(
            error
                .message()
                .starts_with("invalid payload: field \"per_page\""),
            "{error}"
        );
    }
}
