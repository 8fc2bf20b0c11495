//! Plugin `bitbucket`: read-only commands over the Bitbucket Cloud REST API (2.0).
//!
//! | command        | payload                                     | request                                      |
//! |----------------|---------------------------------------------|----------------------------------------------|
//! | `repositories` | `{"workspace", "q"?}`                       | `GET /repositories/{workspace}`              |
//! | `commits`      | `{"workspace", "repo", "branch"?}`          | `GET /repositories/{workspace}/{repo}/commits` |
//! | `pullRequests` | `{"workspace", "repo", "state"?, "q"?}`     | `GET /repositories/{workspace}/{repo}/pullrequests` |
//! | `clone`        | `{"workspace", "repo", "ref"?}`             | `GET /repositories/{workspace}/{repo}/commit/{ref}`, then `GET {web_url}/{workspace}/{repo}/get/{sha}.tar.gz` |
//!
//! `state` is `OPEN`, `MERGED`, `DECLINED` or `SUPERSEDED`, or a list of them; `q` is
//! a Bitbucket query (BBQL). Every command also takes `max_items` (default 100, at
//! most 10 000), `next` (the cursor of a previous result, with the same payload
//! otherwise) and `per_page` (1 to 50), follows the `next` URL of each page, and
//! returns the SDK's envelope `{"items": [...], "truncated": bool, "next": cursor or
//! null}`. A pull request's `state` is `open`, `merged` or `closed` (declined or
//! superseded), with Bitbucket's own value in `source_state`; times are RFC 3339 UTC.
//! Items are the SDK's shared vocabulary (`vocabulary::{Repository, Commit,
//! PullRequest}`; a commit's author is parsed from its `Name <email>` signature).
//! `clone` resolves `ref` (without it, the main branch) to its commit and has the
//! daemon unpack that commit's archive into the job's workspace (the manifest's
//! `[workspace]` grant); it returns `vocabulary::Checkout`: `{repository, ref, sha,
//! path, files, bytes, skipped_links}`, `path` being the directory on the daemon's
//! machine.
//!
//! Config: `base_url` (default `https://api.bitbucket.org/2.0`) and `web_url` (default
//! `https://bitbucket.org`, where archives are downloaded from). The daemon adds
//! `Authorization` from the manifest's `[[auth]]` rule: `Basic` with an Atlassian API
//! token (base64 of `email:token`), or `Bearer` with a workspace, project or
//! repository access token; the manifest gives `web_url` a rule of its own with the
//! same value. Errors: a bad payload is permanent and names the field; statuses are
//! classified by the SDK.

use honeydew_plugin_sdk::http::{self, Request, Response};
use honeydew_plugin_sdk::paging::{Fetched, Page, Paging};
use honeydew_plugin_sdk::vocabulary::{
    Checkout, Commit, Person, PullRequest, PullRequestState, Repository, commit_hash,
};
use honeydew_plugin_sdk::workspace::Archive;
use honeydew_plugin_sdk::{Plugin, PluginError, PluginInfo, config, parse_payload, time, to_json};
use serde::Deserialize;
use serde::de::DeserializeOwned;

const DEFAULT_BASE_URL: &str = "https://api.bitbucket.org/2.0";
const DEFAULT_WEB_URL: &str = "https://bitbucket.org";
/// The largest page every listing here accepts (pull requests stop at 50).
const MAX_PER_PAGE: u8 = 50;

struct Bitbucket;

impl Plugin for Bitbucket {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "bitbucket",
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

honeydew_plugin_sdk::export_plugin!(Bitbucket);

/// One page of a listing: Bitbucket's paginated response, whose `next` is the
/// next page's URL (absent on the last page).
#[derive(Deserialize)]
struct Listing<T> {
    values: Vec<T>,
    next: Option<String>,
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
    /// A Bitbucket query (BBQL), such as `name ~ "api"`.
    q: Option<String>,
    per_page: Option<u8>,
    max_items: Option<u64>,
    next: Option<String>,
}

#[derive(Deserialize)]
struct BitbucketRepository {
    uuid: String,
    full_name: String,
    is_private: bool,
    mainbranch: Option<Named>,
    description: Option<String>,
    links: Links,
    updated_on: Option<String>,
}

fn repositories(payload: RepositoriesPayload) -> Result<Page<Repository>, PluginError> {
    let paging = Paging::new("repositories", payload.max_items, payload.next.as_deref())?;
    let path = format!("/repositories/{}", name("workspace", &payload.workspace)?);
    let mut request = paged(api_request(&path), &paging, payload.per_page)?;
    if let Some(q) = &payload.q {
        request = request.query("q", non_empty("q", q)?);
    }
    list(paging, request, |repository: BitbucketRepository| {
        Repository {
            id: repository.uuid,
            full_name: repository.full_name,
            private: repository.is_private,
            default_branch: repository.mainbranch.map(|branch| branch.name),
            description: repository.description.filter(|text| !text.is_empty()),
            url: repository.links.html.href,
            updated_at: time::utc_opt(repository.updated_on),
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitsPayload {
    workspace: String,
    repo: String,
    branch: Option<String>,
    per_page: Option<u8>,
    max_items: Option<u64>,
    next: Option<String>,
}

#[derive(Deserialize)]
struct BitbucketCommit {
    hash: String,
    message: String,
    author: Option<CommitAuthor>,
    date: Option<String>,
}

/// A commit's author: the git signature, and the Bitbucket account when one matches.
#[derive(Deserialize)]
struct CommitAuthor {
    raw: String,
    user: Option<Account>,
}

fn commits(payload: CommitsPayload) -> Result<Page<Commit>, PluginError> {
    let paging = Paging::new("commits", payload.max_items, payload.next.as_deref())?;
    let path = format!(
        "/repositories/{}/commits",
        repository(&payload.workspace, &payload.repo)?
    );
    let mut request = paged(api_request(&path), &paging, payload.per_page)?;
    if let Some(branch) = &payload.branch {
        request = request.query("include", non_empty("branch", branch)?);
    }
    list(paging, request, |commit: BitbucketCommit| Commit {
        sha: commit.hash,
        message: commit.message,
        author: commit.author.and_then(|author| {
            let login = author.user.and_then(|user| user.nickname);
            Person::from_signature(&author.raw, login)
        }),
        date: time::utc_opt(commit.date),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PullRequestsPayload {
    workspace: String,
    repo: String,
    /// One state or several.
    state: Option<States>,
    /// A Bitbucket query (BBQL), such as `author.nickname = "ada"`.
    q: Option<String>,
    per_page: Option<u8>,
    max_items: Option<u64>,
    next: Option<String>,
}

/// `"OPEN"` or `["OPEN", "MERGED"]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum States {
    One(StateFilter),
    Several(Vec<StateFilter>),
}

#[derive(Deserialize)]
#[serde(rename_all = "UPPERCASE")]
enum StateFilter {
    Open,
    Merged,
    Declined,
    Superseded,
}

impl StateFilter {
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
struct BitbucketPullRequest {
    id: u64,
    title: String,
    state: String,
    draft: Option<bool>,
    author: Option<Account>,
    source: Endpoint,
    destination: Endpoint,
    links: Links,
    created_on: String,
    updated_on: Option<String>,
}

#[derive(Deserialize)]
struct Account {
    display_name: Option<String>,
    nickname: Option<String>,
}

#[derive(Deserialize)]
struct Endpoint {
    branch: Named,
}

fn pull_requests(payload: PullRequestsPayload) -> Result<Page<PullRequest>, PluginError> {
    let paging = Paging::new("pullRequests", payload.max_items, payload.next.as_deref())?;
    let path = format!(
        "/repositories/{}/pullrequests",
        repository(&payload.workspace, &payload.repo)?
    );
    let mut request = paged(api_request(&path), &paging, payload.per_page)?;
    match &payload.state {
        None => {}
        Some(States::One(state)) => request = request.query("state", state.as_str()),
        Some(States::Several(states)) if states.is_empty() => {
            return Err(PluginError::permanent(
                "invalid payload: field \"state\": give at least one state",
            ));
        }
        Some(States::Several(states)) => {
            // Bitbucket takes the parameter once per state.
            for state in states {
                request = request.query("state", state.as_str());
            }
        }
    }
    if let Some(q) = &payload.q {
        request = request.query("q", non_empty("q", q)?);
    }
    list(paging, request, summarise_pull_request)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClonePayload {
    workspace: String,
    repo: String,
    #[serde(rename = "ref")]
    reference: Option<String>,
}

/// What `clone` reads of `GET /repositories/{workspace}/{repo}`.
#[derive(Deserialize)]
struct RepositoryInfo {
    full_name: String,
    mainbranch: Option<Named>,
}

/// What `clone` reads of `GET /repositories/{workspace}/{repo}/commit/{ref}`.
#[derive(Deserialize)]
struct CommitHash {
    hash: String,
}

/// Resolves the ref to its commit, then has the daemon download that commit's archive
/// from the web host (`{web_url}/{workspace}/{repo}/get/{sha}.tar.gz`; Bitbucket Cloud's
/// API has no source-archive endpoint, and the manifest gives the web host a
/// credential rule of its own) into the job's workspace, without its top-level
/// `workspace-repo-sha` directory.
fn clone(payload: ClonePayload) -> Result<Checkout, PluginError> {
    let repository = repository(&payload.workspace, &payload.repo)?;
    let info: RepositoryInfo = send(api_request(&format!("/repositories/{repository}")))?.json()?;
    let reference = match payload.reference {
        Some(reference) => non_empty("ref", &reference)?.to_owned(),
        None => info.mainbranch.map(|branch| branch.name).ok_or_else(|| {
            PluginError::permanent("the repository has no main branch (empty repository?)")
        })?,
    };
    let commit: CommitHash = send(api_request(&format!(
        "/repositories/{repository}/commit/{}",
        http::encode(&reference)
    )))
    .map_err(|error| match error {
        PluginError::Permanent { message } => PluginError::permanent(format!(
            "cannot resolve {reference:?} in {repository}: {message}"
        )),
        retriable => retriable,
    })?
    .json()?;
    let sha = commit_hash(&commit.hash)?;
    let web_url = config::get_or("web_url", DEFAULT_WEB_URL)
        .trim_end_matches('/')
        .to_owned();
    let unpacked = Archive::tar_gz(&format!("{web_url}/{repository}/get/{sha}.tar.gz"))
        .strip_components(1)
        .unpack()?;
    Ok(Checkout::new(info.full_name, reference, sha, &unpacked))
}

/// A pull request in the shared vocabulary: declined and superseded are closed.
/// Bitbucket gives no merge or close time, so those stay unknown.
fn summarise_pull_request(pull: BitbucketPullRequest) -> PullRequest {
    let state = match pull.state.as_str() {
        "OPEN" => PullRequestState::Open,
        "MERGED" => PullRequestState::Merged,
        _ => PullRequestState::Closed,
    };
    PullRequest {
        number: pull.id,
        title: pull.title,
        state,
        source_state: pull.state,
        draft: pull.draft.unwrap_or(false),
        author: pull
            .author
            .and_then(|author| Person::new(author.nickname, author.display_name, None)),
        source_branch: pull.source.branch.name,
        target_branch: pull.destination.branch.name,
        url: pull.links.html.href,
        created_at: time::utc(&pull.created_on),
        updated_at: time::utc_opt(pull.updated_on),
        merged_at: None,
        closed_at: None,
    }
}

/// Follows a listing's `next` URLs from `first` into the SDK's envelope.
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
        let listing: Listing<T> = send(request)?.json()?;
        Ok(Fetched {
            items: listing.values.into_iter().map(&convert).collect(),
            next: listing.next.filter(|next| !next.is_empty()),
        })
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

/// Adds a page size: the payload's `per_page` (1 to 50), else as many as `max_items`
/// needs, at most 50.
fn paged(request: Request, paging: &Paging, per_page: Option<u8>) -> Result<Request, PluginError> {
    match per_page {
        None => Ok(request.query("pagelen", paging.page_size(MAX_PER_PAGE.into()))),
        Some(size @ 1..=MAX_PER_PAGE) => Ok(request.query("pagelen", size)),
        Some(size) => Err(PluginError::permanent(format!(
            "invalid payload: field \"per_page\": must be 1 to {MAX_PER_PAGE}, got {size}"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_request_states_map_to_one_vocabulary() {
        let pull = |state: &str| {
            serde_json::from_value::<BitbucketPullRequest>(serde_json::json!({
                "id": 3, "title": "t", "state": state, "author": null,
                "source": {"branch": {"name": "feature"}},
                "destination": {"branch": {"name": "main"}},
                "links": {"html": {"href": "https://bitbucket.org/w/r/pull-requests/3"}},
                "created_on": "2024-01-02T03:04:05.123456+00:00"
            }))
            .unwrap()
        };
        for (source, state) in [
            ("OPEN", PullRequestState::Open),
            ("MERGED", PullRequestState::Merged),
            ("DECLINED", PullRequestState::Closed),
            ("SUPERSEDED", PullRequestState::Closed),
        ] {
            let summary = summarise_pull_request(pull(source));
            assert_eq!((summary.state, &*summary.source_state), (state, source));
            assert_eq!(summary.created_at, "2024-01-02T03:04:05.123456Z");
            assert_eq!(summary.author, None);
        }
    }

    #[test]
    fn states_are_one_or_several() {
        let parse = |payload: &str| parse_payload::<PullRequestsPayload>(payload.as_bytes());
        assert!(matches!(
            parse(r#"{"workspace":"w","repo":"r","state":"OPEN"}"#)
                .ok()
                .and_then(|p| p.state),
            Some(States::One(StateFilter::Open))
        ));
        assert!(matches!(
            parse(r#"{"workspace":"w","repo":"r","state":["OPEN","MERGED"]}"#).ok().and_then(|p| p.state),
            Some(States::Several(states)) if states.len() == 2
        ));
        let error = parse(r#"{"workspace":"w","repo":"r","state":"open"}"#)
            .err()
            .unwrap();
        assert!(
            error
                .message()
                .starts_with("invalid payload: field \"state\""),
            "{error}"
        );
    }

    #[test]
    fn page_sizes_follow_max_items() {
        let paging = Paging::new("commits", Some(120), None).unwrap();
        let request = paged(Request::get("https://x.test/x"), &paging, None).unwrap();
        assert!(
            request.url().ends_with("/x?pagelen=50"),
            "{}",
            request.url()
        );
        let error = paged(Request::get("https://x.test/x"), &paging, Some(51)).unwrap_err();
        assert!(
            error
                .message()
                .starts_with("invalid payload: field \"per_page\""),
            "{error}"
        );
    }
}
