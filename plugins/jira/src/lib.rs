//! Plugin `jira`: read-only commands over the Jira Cloud REST API (v3).
//!
//! | command    | payload                                   | request                                   |
//! |------------|-------------------------------------------|-------------------------------------------|
//! | `projects` | `{}`                                      | `GET /rest/api/3/project/search`, paged by `startAt` until `isLast` (or `total`) |
//! | `issues`   | `{"jql"}` or `{"project"}`                | `GET /rest/api/3/search/jql`, paged by `nextPageToken` |
//! | `issue`    | `{"key"}` (`"PROJ-123"`)                  | `GET /rest/api/3/issue/{key}`             |
//!
//! `{"project": "KEY"}` searches `project = "KEY" ORDER BY updated DESC`. The list
//! commands also take `max_items` (default 100, at most 10 000), `next` (the cursor of
//! a previous result, with the same payload otherwise) and `max_results` (the page
//! size, 1 to 100), and return the SDK's envelope `{"items": [...], "truncated": bool,
//! "next": cursor or null}`. Projects are the SDK's `vocabulary::Project` (`{id, key,
//! name, type}`), issues its `vocabulary::Issue`: people are
//! `{login, name, email}` (Jira gives a display name, and an email when allowed),
//! times RFC 3339 UTC (Jira's `+0000` offsets converted), `state` is `open`,
//! `in_progress` or `closed` (from the status category) beside the `status` name,
//! `url` the issue's page on the site.
//!
//! Config: `base_url`, the site: `https://your-domain.atlassian.net` for basic auth
//! (`email:api-token`), or `https://api.atlassian.com/ex/jira/{cloudId}` for a scoped
//! API token or OAuth. There is no default: the shipped manifest grants and
//! authenticates whatever `base_url` says, and the daemon refuses to load the plugin
//! until it is set. The daemon adds `Authorization` from the manifest's `[[auth]]`
//! rule. Errors: a bad payload is permanent and names the field; statuses are
//! classified by the SDK.

use honeydew_plugin_sdk::http::{self, Request, Response};
use honeydew_plugin_sdk::paging::{Fetched, Page, Paging, invalid_cursor};
use honeydew_plugin_sdk::vocabulary::{Issue, IssueState, Person, Project};
use honeydew_plugin_sdk::{Plugin, PluginError, PluginInfo, config, parse_payload, time, to_json};
use serde::Deserialize;

/// The most results asked for per request.
const MAX_RESULTS: u16 = 100;
/// The largest `startAt` a cursor may hold: far beyond any site's project count.
const MAX_START_AT: u64 = 100_000_000;
/// The issue fields the plugin reads.
const ISSUE_FIELDS: &str =
    "summary,status,issuetype,priority,assignee,reporter,created,updated,resolutiondate";

struct Jira;

impl Plugin for Jira {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "jira",
            env!("CARGO_PKG_VERSION"),
            &["projects", "issues", "issue"],
        )
    }

    fn run(command: &str, payload: &[u8]) -> Result<Vec<u8>, PluginError> {
        match command {
            "projects" => to_json(&projects(parse_payload(payload)?)?),
            "issues" => to_json(&issues(parse_payload(payload)?)?),
            "issue" => to_json(&issue(parse_payload(payload)?)?),
            _ => Err(PluginError::unknown_command(command)),
        }
    }
}

honeydew_plugin_sdk::export_plugin!(Jira);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectsPayload {
    /// The page size, 1 to 100.
    max_results: Option<u16>,
    max_items: Option<u64>,
    next: Option<String>,
}

/// A page of `GET /rest/api/3/project/search` (Jira's `PageBeanProject`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProjectPage {
    start_at: Option<u64>,
    total: Option<u64>,
    is_last: Option<bool>,
    values: Vec<JiraProject>,
}

/// One project as Jira sends it; the plugin returns it as the vocabulary's `Project`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JiraProject {
    id: String,
    key: String,
    name: String,
    project_type_key: Option<String>,
}

fn projects(payload: ProjectsPayload) -> Result<Page<Project>, PluginError> {
    let paging = Paging::new("projects", payload.max_items, payload.next.as_deref())?;
    // Positions are `startAt` offsets; a cursor's is checked like any payload number.
    if let Some(start) = paging.start() {
        start_at(start).ok_or_else(|| invalid_cursor("its offset is not a number"))?;
    }
    let size = page_size(&paging, payload.max_results)?;
    paging.collect(|position| {
        let offset = position.and_then(start_at).unwrap_or(0);
        let request = api_request("/rest/api/3/project/search")?
            .query("startAt", offset)
            .query("maxResults", size);
        let page: ProjectPage = send(request)?.json()?;
        let count = u64::try_from(page.values.len()).unwrap_or(u64::MAX);
        let reached = page.start_at.unwrap_or(offset).saturating_add(count);
        // `isLast` when Jira says so; else `total`; an empty page ends it either way.
        let last = page
            .is_last
            .unwrap_or_else(|| page.total.is_none_or(|total| reached >= total))
            || count == 0;
        Ok(Fetched {
            items: page
                .values
                .into_iter()
                .map(|project| Project {
                    id: project.id,
                    key: project.key,
                    name: project.name,
                    project_type: project.project_type_key,
                })
                .collect(),
            next: (!last).then(|| reached.to_string()),
        })
    })
}

/// A `startAt` offset as a position holds it, bounded like every number from outside.
fn start_at(position: &str) -> Option<u64> {
    position
        .parse::<u64>()
        .ok()
        .filter(|&offset| offset <= MAX_START_AT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuesPayload {
    jql: Option<String>,
    project: Option<String>,
    /// The page size, 1 to 100.
    max_results: Option<u16>,
    max_items: Option<u64>,
    next: Option<String>,
}

/// A page of `GET /rest/api/3/search/jql`: no total, a `nextPageToken` until the last.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchPage {
    issues: Vec<JiraIssue>,
    next_page_token: Option<String>,
    is_last: Option<bool>,
}

/// One issue as Jira sends it.
#[derive(Deserialize)]
struct JiraIssue {
    key: String,
    fields: IssueFields,
}

#[derive(Deserialize)]
struct IssueFields {
    summary: Option<String>,
    status: Option<Status>,
    issuetype: Option<Named>,
    priority: Option<Named>,
    assignee: Option<JiraUser>,
    reporter: Option<JiraUser>,
    created: Option<String>,
    updated: Option<String>,
    resolutiondate: Option<String>,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    name: String,
    status_category: Option<StatusCategory>,
}

#[derive(Deserialize)]
struct StatusCategory {
    key: String,
}

/// A Jira user: its display name, and its email address when the user's privacy
/// settings let Jira show it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JiraUser {
    display_name: Option<String>,
    email_address: Option<String>,
}

impl JiraUser {
    fn person(self) -> Option<Person> {
        Person::new(None, self.display_name, self.email_address)
    }
}

/// An issue in the shared vocabulary. `state` comes from the status's category
/// (`new`, `indeterminate`, `done`); `url` is the issue's page on `site`, when the
/// plugin talks to a site rather than api.atlassian.com.
fn summarise_issue(JiraIssue { key, fields }: JiraIssue, site: Option<&str>) -> Issue {
    let state = fields
        .status
        .as_ref()
        .and_then(|status| status.status_category.as_ref())
        .and_then(|category| match category.key.as_str() {
            "new" => Some(IssueState::Open),
            "indeterminate" => Some(IssueState::InProgress),
            "done" => Some(IssueState::Closed),
            _ => None,
        });
    Issue {
        url: site.map(|site| format!("{site}/browse/{key}")),
        key,
        title: fields.summary,
        state,
        status: fields.status.map(|status| status.name),
        issue_type: fields.issuetype.map(|issue_type| issue_type.name),
        priority: fields.priority.map(|priority| priority.name),
        assignee: fields.assignee.and_then(JiraUser::person),
        reporter: fields.reporter.and_then(JiraUser::person),
        created_at: time::utc_opt(fields.created),
        updated_at: time::utc_opt(fields.updated),
        closed_at: time::utc_opt(fields.resolutiondate),
    }
}

/// The site issues' pages are on: `base_url`, unless that is the api.atlassian.com
/// gateway of scoped tokens, which serves no pages.
fn site() -> Option<String> {
    config::get("base_url")
        .filter(|url| !url.to_ascii_lowercase().contains("://api.atlassian.com"))
        .map(|url| url.trim_end_matches('/').to_owned())
}

fn issues(payload: IssuesPayload) -> Result<Page<Issue>, PluginError> {
    let paging = Paging::new("issues", payload.max_items, payload.next.as_deref())?;
    let jql = match (payload.jql, payload.project) {
        (Some(jql), None) => non_empty("jql", &jql)?.to_owned(),
        (None, Some(project)) => format!(
            "project = \"{}\" ORDER BY updated DESC",
            project_key(&project)?
        ),
        _ => {
            return Err(PluginError::permanent(
                "invalid payload: give exactly one of \"jql\" and \"project\"",
            ));
        }
    };
    let size = page_size(&paging, payload.max_results)?;
    let site = site();
    paging.collect(|token| {
        let mut request = api_request("/rest/api/3/search/jql")?
            .query("jql", &jql)
            .query("fields", ISSUE_FIELDS)
            .query("maxResults", size);
        if let Some(token) = token {
            request = request.query("nextPageToken", token);
        }
        let page: SearchPage = send(request)?.json()?;
        let next = page
            .next_page_token
            .filter(|token| !token.is_empty() && page.is_last != Some(true));
        Ok(Fetched {
            items: page
                .issues
                .into_iter()
                .map(|issue| summarise_issue(issue, site.as_deref()))
                .collect(),
            next,
        })
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuePayload {
    key: String,
}

fn issue(payload: IssuePayload) -> Result<Issue, PluginError> {
    let key = issue_key(&payload.key)?;
    let request = api_request(&format!("/rest/api/3/issue/{}", http::encode(key)))?
        .query("fields", ISSUE_FIELDS);
    let issue = send(request)?.json::<JiraIssue>()?;
    Ok(summarise_issue(issue, site().as_deref()))
}

/// A GET of `path` on the configured site.
fn api_request(path: &str) -> Result<Request, PluginError> {
    let base_url = config::get("base_url").ok_or_else(|| {
        PluginError::permanent(
            "jira's manifest lacks [config] base_url: set it to your site, such as https://your-domain.atlassian.net",
        )
    })?;
    Ok(
        Request::get(&format!("{}{path}", base_url.trim_end_matches('/')))
            .header("accept", "application/json"),
    )
}

/// The page size: the payload's `max_results` (1 to 100), else as many as
/// `max_items` needs, at most 100.
fn page_size(paging: &Paging, max_results: Option<u16>) -> Result<u16, PluginError> {
    match max_results {
        None => Ok(u16::try_from(paging.page_size(MAX_RESULTS.into())).unwrap_or(MAX_RESULTS)),
        Some(count @ 1..=MAX_RESULTS) => Ok(count),
        Some(count) => Err(PluginError::permanent(format!(
            "invalid payload: field \"max_results\": must be 1 to {MAX_RESULTS}, got {count}"
        ))),
    }
}

/// Sends `request` and classifies the response's status.
fn send(request: Request) -> Result<Response, PluginError> {
    request.send()?.error_for_status()
}

/// Checks a project key such as `PROJ`: an uppercase letter, then uppercase letters,
/// digits or `_`.
fn project_key(key: &str) -> Result<&str, PluginError> {
    let mut chars = key.chars();
    let valid = chars.next().is_some_and(|first| first.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(key)
    } else {
        Err(PluginError::permanent(format!(
            "invalid payload: \"project\" must be a project key such as \"PROJ\", got {key:?}"
        )))
    }
}

/// Checks an issue key such as `PROJ-123`.
fn issue_key(key: &str) -> Result<&str, PluginError> {
    let valid = key.rsplit_once('-').is_some_and(|(project, number)| {
        project_key(project).is_ok()
            && !number.is_empty()
            && number.chars().all(|c| c.is_ascii_digit())
    });
    if valid {
        Ok(key)
    } else {
        Err(PluginError::permanent(format!(
            "invalid payload: \"key\" must be an issue key such as \"PROJ-123\", got {key:?}"
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
    fn issues_get_one_state_vocabulary_and_utc_times() {
        let issue = |category: &str| {
            serde_json::from_value::<JiraIssue>(serde_json::json!({
                "key": "HD-1",
                "fields": {
                    "summary": "s",
                    "status": {"name": "Code Review", "statusCategory": {"key": category}},
                    "assignee": null,
                    "reporter": {"displayName": "Ada", "accountId": "5b10"},
                    "created": "2024-01-02T03:04:05.000+0000",
                    "updated": "2024-01-02T03:04:05.000-0500"
                }
            }))
            .unwrap()
        };
        for (category, state) in [
            ("new", Some(IssueState::Open)),
            ("indeterminate", Some(IssueState::InProgress)),
            ("done", Some(IssueState::Closed)),
            ("undefined", None),
        ] {
            let summary = summarise_issue(issue(category), Some("https://acme.atlassian.net"));
            assert_eq!(summary.state, state, "{category}");
            assert_eq!(summary.status.as_deref(), Some("Code Review"));
            assert_eq!(summary.created_at.as_deref(), Some("2024-01-02T03:04:05Z"));
            assert_eq!(summary.updated_at.as_deref(), Some("2024-01-02T08:04:05Z"));
            assert_eq!(summary.assignee, None);
            assert_eq!(
                summary.reporter,
                Person::new(None, Some("Ada".into()), None)
            );
            assert_eq!(
                summary.url.as_deref(),
                Some("https://acme.atlassian.net/browse/HD-1")
            );
        }
    }

    #[test]
    fn offsets_and_page_sizes_are_bounded() {
        assert_eq!(start_at("50"), Some(50));
        assert_eq!(start_at("-1"), None);
        assert_eq!(start_at("99999999999999999999999"), None);
        assert_eq!(start_at(&(MAX_START_AT + 1).to_string()), None);
        let paging = Paging::new("issues", Some(250), None).unwrap();
        assert_eq!(page_size(&paging, None), Ok(100));
        assert!(page_size(&paging, Some(101)).is_err());
    }

    #[test]
    fn keys_are_checked() {
        assert_eq!(project_key("HD_2"), Ok("HD_2"));
        assert!(project_key("hd").is_err());
        assert_eq!(issue_key("HD-42"), Ok("HD-42"));
        for bad in ["HD-", "HD42", "-42", "HD-4a"] {
            assert!(issue_key(bad).is_err(), "{bad}");
        }
    }
}
