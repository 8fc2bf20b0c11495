//! Plugin `jira`: read-only commands over the Jira Cloud REST API (v3).
//!
//! | command    | payload                                          | request                                   |
//! |------------|--------------------------------------------------|-------------------------------------------|
//! | `projects` | `{"max_results"?}`                               | `GET /rest/api/3/project/search`          |
//! | `issues`   | `{"jql"}` or `{"project"}`, `"max_results"?`     | `GET /rest/api/3/search/jql`              |
//! | `issue`    | `{"key"}` (`"PROJ-123"`)                         | `GET /rest/api/3/issue/{key}`             |
//!
//! `{"project": "KEY"}` searches `project = "KEY" ORDER BY updated DESC`. Results are
//! compact JSON (see the `*Summary` types); people are display names.
//!
//! Config: `base_url`, the site (`https://your-domain.atlassian.net`); there is no
//! default. The daemon adds `Authorization` from the manifest's `[[auth]]` rule.
//! Errors: a bad payload is permanent and names the field; statuses are classified by
//! the SDK.

use honeydew_plugin_sdk::http::{self, Request, Response};
use honeydew_plugin_sdk::{Plugin, PluginError, PluginInfo, config, parse_payload, to_json};
use serde::{Deserialize, Serialize};

/// The most results asked for per request.
const MAX_RESULTS: u16 = 100;
/// The issue fields the plugin reads.
const ISSUE_FIELDS: &str = "summary,status,issuetype,priority,assignee,reporter,created,updated";

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
    max_results: Option<u16>,
}

#[derive(Deserialize)]
struct ProjectPage {
    values: Vec<Project>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Project {
    id: String,
    key: String,
    name: String,
    project_type_key: Option<String>,
}

/// One project as the plugin returns it.
#[derive(Serialize)]
struct ProjectSummary {
    id: String,
    key: String,
    name: String,
    #[serde(rename = "type")]
    project_type: Option<String>,
}

fn projects(payload: ProjectsPayload) -> Result<Vec<ProjectSummary>, PluginError> {
    let request = limited(
        api_request("/rest/api/3/project/search")?,
        payload.max_results,
    )?;
    let page: ProjectPage = send(request)?.json()?;
    Ok(page
        .values
        .into_iter()
        .map(|project| ProjectSummary {
            id: project.id,
            key: project.key,
            name: project.name,
            project_type: project.project_type_key,
        })
        .collect())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuesPayload {
    jql: Option<String>,
    project: Option<String>,
    max_results: Option<u16>,
}

#[derive(Deserialize)]
struct SearchPage {
    issues: Vec<Issue>,
}

#[derive(Deserialize)]
struct Issue {
    key: String,
    fields: IssueFields,
}

#[derive(Deserialize)]
struct IssueFields {
    summary: Option<String>,
    status: Option<Named>,
    issuetype: Option<Named>,
    priority: Option<Named>,
    assignee: Option<Person>,
    reporter: Option<Person>,
    created: Option<String>,
    updated: Option<String>,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Person {
    display_name: String,
}

/// One issue as the plugin returns it.
#[derive(Serialize)]
struct IssueSummary {
    key: String,
    summary: Option<String>,
    status: Option<String>,
    #[serde(rename = "type")]
    issue_type: Option<String>,
    priority: Option<String>,
    assignee: Option<String>,
    reporter: Option<String>,
    created: Option<String>,
    updated: Option<String>,
}

impl From<Issue> for IssueSummary {
    fn from(Issue { key, fields }: Issue) -> Self {
        Self {
            key,
            summary: fields.summary,
            status: fields.status.map(|status| status.name),
            issue_type: fields.issuetype.map(|issue_type| issue_type.name),
            priority: fields.priority.map(|priority| priority.name),
            assignee: fields.assignee.map(|person| person.display_name),
            reporter: fields.reporter.map(|person| person.display_name),
            created: fields.created,
            updated: fields.updated,
        }
    }
}

fn issues(payload: IssuesPayload) -> Result<Vec<IssueSummary>, PluginError> {
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
    let request = api_request("/rest/api/3/search/jql")?
        .query("jql", jql)
        .query("fields", ISSUE_FIELDS);
    let page: SearchPage = send(limited(request, payload.max_results)?)?.json()?;
    Ok(page.issues.into_iter().map(IssueSummary::from).collect())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuePayload {
    key: String,
}

fn issue(payload: IssuePayload) -> Result<IssueSummary, PluginError> {
    let key = issue_key(&payload.key)?;
    let request = api_request(&format!("/rest/api/3/issue/{}", http::encode(key)))?
        .query("fields", ISSUE_FIELDS);
    Ok(send(request)?.json::<Issue>()?.into())
}

/// A GET of `path` on the configured site.
fn api_request(path: &str) -> Result<Request, PluginError> {
    let base_url = config::get("base_url").ok_or_else(|| {
        PluginError::permanent(
            "jira's manifest lacks [config] base_url (https://your-domain.atlassian.net)",
        )
    })?;
    Ok(
        Request::get(&format!("{}{path}", base_url.trim_end_matches('/')))
            .header("accept", "application/json"),
    )
}

/// Adds a result limit, checked against [`MAX_RESULTS`].
fn limited(request: Request, max_results: Option<u16>) -> Result<Request, PluginError> {
    match max_results {
        None => Ok(request),
        Some(count @ 1..=MAX_RESULTS) => Ok(request.query("maxResults", count)),
        Some(count) => Err(PluginError::permanent(format!(
            "invalid payload: \"max_results\" must be 1 to {MAX_RESULTS}, got {count}"
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
