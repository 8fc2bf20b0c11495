//! Plugin `linear`: read-only commands over Linear's GraphQL API.
//!
//! | command  | payload                                                   | result items                                   |
//! |----------|-----------------------------------------------------------|------------------------------------------------|
//! | `teams`  | `{}`                                                      | the SDK's `vocabulary::Team`: `{"id", "key", "name"}` |
//! | `issues` | `{"team"?, "state"?, "state_type"?, "updated_after"?, "updated_before"?, "created_after"?, "created_before"?}` | the SDK's `vocabulary::Issue`: `key` (the identifier), `title`, `state` (open, in_progress, closed), `status` (the workflow state's name), `priority`, `assignee` and `reporter` (people), `url`, `created_at`, `updated_at`, `closed_at` |
//!
//! `team` is a team key such as `"ENG"`; `state` a workflow state's name (`"In
//! Progress"`); `state_type` one of `triage`, `backlog`, `unstarted`, `started`,
//! `completed`, `canceled`; the dates are RFC 3339 and bound `updatedAt` /
//! `createdAt` inclusively. Issues come most recently updated first. Both commands
//! take `max_items` (default 100, at most 10 000), `next` (the cursor of a previous
//! result, with the same payload otherwise) and `first` (the page size, 1 to 250),
//! follow `pageInfo { hasNextPage endCursor }`, and return the SDK's envelope
//! `{"items": [...], "truncated": bool, "next": cursor or null}`. Each page is one
//! `POST` of a GraphQL query to `base_url`.
//!
//! Config: `base_url` (default `https://api.linear.app/graphql`). The daemon adds
//! `Authorization` from the manifest's `[[auth]]` rule. Errors: a bad payload is
//! permanent and names the field; GraphQL errors are permanent except Linear's
//! `RATELIMITED`, which is retriable once the limit resets (the SDK reads Linear's
//! `x-ratelimit-*-reset` headers); statuses are classified by the SDK.

use honeydew_plugin_sdk::http::{Request, Response};
use honeydew_plugin_sdk::paging::{Fetched, Page, Paging};
use honeydew_plugin_sdk::vocabulary::{Issue, IssueState, Person, Team};
use honeydew_plugin_sdk::{Plugin, PluginError, PluginInfo, config, parse_payload, time, to_json};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

const DEFAULT_BASE_URL: &str = "https://api.linear.app/graphql";
/// The most nodes Linear returns per page.
const MAX_FIRST: u16 = 250;

const TEAMS_QUERY: &str = "query Teams($first: Int!, $after: String) {
  teams(first: $first, after: $after) {
    nodes { id key name }
    pageInfo { hasNextPage endCursor }
  }
}";

const ISSUES_QUERY: &str = "query Issues($first: Int!, $after: String, $filter: IssueFilter) {
  issues(first: $first, after: $after, filter: $filter, orderBy: updatedAt) {
    nodes {
      identifier title url createdAt updatedAt completedAt canceledAt priorityLabel
      state { name type }
      assignee { name displayName email }
      creator { name displayName email }
    }
    pageInfo { hasNextPage endCursor }
  }
}";

struct Linear;

impl Plugin for Linear {
    fn describe() -> PluginInfo {
        PluginInfo::new("linear", env!("CARGO_PKG_VERSION"), &["teams", "issues"])
    }

    fn run(command: &str, payload: &[u8]) -> Result<Vec<u8>, PluginError> {
        match command {
            "teams" => to_json(&teams(parse_payload(payload)?)?),
            "issues" => to_json(&issues(parse_payload(payload)?)?),
            _ => Err(PluginError::unknown_command(command)),
        }
    }
}

honeydew_plugin_sdk::export_plugin!(Linear);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TeamsPayload {
    /// The page size, 1 to 250.
    first: Option<u16>,
    max_items: Option<u64>,
    next: Option<String>,
}

#[derive(Deserialize)]
struct TeamsData {
    teams: Connection<TeamSummary>,
}

/// A page of GraphQL nodes (a Relay connection).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Connection<T> {
    nodes: Vec<T>,
    page_info: Option<PageInfo>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageInfo {
    has_next_page: bool,
    end_cursor: Option<String>,
}

impl<T> Connection<T> {
    /// The nodes, converted, and the cursor after them when there is a next page.
    fn fetched<U>(self, convert: impl Fn(T) -> U) -> Fetched<U> {
        let next = self
            .page_info
            .filter(|info| info.has_next_page)
            .and_then(|info| info.end_cursor)
            .filter(|cursor| !cursor.is_empty());
        Fetched {
            items: self.nodes.into_iter().map(convert).collect(),
            next,
        }
    }
}

/// One team as Linear sends it; the plugin returns it as the vocabulary's `Team`.
#[derive(Deserialize)]
struct TeamSummary {
    id: String,
    key: String,
    name: String,
}

fn teams(payload: TeamsPayload) -> Result<Page<Team>, PluginError> {
    let paging = Paging::new("teams", payload.max_items, payload.next.as_deref())?;
    let first = first(&paging, payload.first)?;
    paging.collect(|after| {
        let variables = json!({ "first": first, "after": after });
        Ok(graphql::<TeamsData>(TEAMS_QUERY, variables)?
            .teams
            .fetched(|team| Team {
                id: team.id,
                key: team.key,
                name: team.name,
            }))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuesPayload {
    /// A team key such as `ENG`.
    team: Option<String>,
    /// A workflow state's name, such as `In Progress`.
    state: Option<String>,
    /// A workflow state's type.
    state_type: Option<StateType>,
    updated_after: Option<String>,
    updated_before: Option<String>,
    created_after: Option<String>,
    created_before: Option<String>,
    /// The page size, 1 to 250.
    first: Option<u16>,
    max_items: Option<u64>,
    next: Option<String>,
}

/// Linear's workflow state types.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum StateType {
    Triage,
    Backlog,
    Unstarted,
    Started,
    Completed,
    Canceled,
}

impl StateType {
    fn as_str(&self) -> &'static str {
        match self {
            Self::Triage => "triage",
            Self::Backlog => "backlog",
            Self::Unstarted => "unstarted",
            Self::Started => "started",
            Self::Completed => "completed",
            Self::Canceled => "canceled",
        }
    }
}

#[derive(Deserialize)]
struct IssuesData {
    issues: Connection<LinearIssue>,
}

/// One issue as Linear sends it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LinearIssue {
    identifier: String,
    title: String,
    url: String,
    created_at: Option<String>,
    updated_at: String,
    completed_at: Option<String>,
    canceled_at: Option<String>,
    priority_label: Option<String>,
    state: Option<WorkflowState>,
    assignee: Option<User>,
    creator: Option<User>,
}

#[derive(Deserialize)]
struct WorkflowState {
    name: String,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// A Linear user: `displayName` is their handle, `name` their full name.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct User {
    name: Option<String>,
    display_name: Option<String>,
    email: Option<String>,
}

impl User {
    fn person(self) -> Option<Person> {
        Person::new(self.display_name, self.name, self.email)
    }
}

/// An issue in the shared vocabulary: `state` from the workflow state's type (triage,
/// backlog and unstarted are open, started is in progress, completed and canceled are
/// closed), `status` the workflow state's name, `reporter` its creator.
fn summarise_issue(issue: LinearIssue) -> Issue {
    let (status, kind) = issue.state.map(|state| (state.name, state.kind)).unzip();
    let state = kind.flatten().and_then(|kind| match kind.as_str() {
        "triage" | "backlog" | "unstarted" => Some(IssueState::Open),
        "started" => Some(IssueState::InProgress),
        "completed" | "canceled" => Some(IssueState::Closed),
        _ => None,
    });
    Issue {
        key: issue.identifier,
        title: Some(issue.title),
        state,
        status,
        issue_type: None,
        // Linear says "No priority" where others say nothing.
        priority: issue.priority_label.filter(|label| label != "No priority"),
        assignee: issue.assignee.and_then(User::person),
        reporter: issue.creator.and_then(User::person),
        url: Some(issue.url),
        created_at: time::utc_opt(issue.created_at),
        updated_at: Some(time::utc(&issue.updated_at)),
        closed_at: time::utc_opt(issue.completed_at.or(issue.canceled_at)),
    }
}

/// The `IssueFilter` the payload's filters make; `null` for none.
fn issue_filter(payload: &IssuesPayload) -> Result<Value, PluginError> {
    let mut filter = Map::new();
    if let Some(team) = &payload.team {
        filter.insert(
            "team".into(),
            json!({ "key": { "eq": non_empty("team", team)? } }),
        );
    }
    let mut state = Map::new();
    if let Some(name) = &payload.state {
        state.insert("name".into(), json!({ "eq": non_empty("state", name)? }));
    }
    if let Some(kind) = &payload.state_type {
        state.insert("type".into(), json!({ "eq": kind.as_str() }));
    }
    if !state.is_empty() {
        filter.insert("state".into(), Value::Object(state));
    }
    for (key, after, before) in [
        (
            "updatedAt",
            ("updated_after", &payload.updated_after),
            ("updated_before", &payload.updated_before),
        ),
        (
            "createdAt",
            ("created_after", &payload.created_after),
            ("created_before", &payload.created_before),
        ),
    ] {
        let mut range = Map::new();
        for ((field, value), comparator) in [(after, "gte"), (before, "lte")] {
            if let Some(value) = value {
                range.insert(
                    comparator.into(),
                    time::payload_timestamp(field, value)?.into(),
                );
            }
        }
        if !range.is_empty() {
            filter.insert(key.into(), Value::Object(range));
        }
    }
    Ok(if filter.is_empty() {
        Value::Null
    } else {
        Value::Object(filter)
    })
}

fn issues(payload: IssuesPayload) -> Result<Page<Issue>, PluginError> {
    let paging = Paging::new("issues", payload.max_items, payload.next.as_deref())?;
    let filter = issue_filter(&payload)?;
    let first = first(&paging, payload.first)?;
    paging.collect(|after| {
        let variables = json!({ "first": first, "after": after, "filter": filter });
        Ok(graphql::<IssuesData>(ISSUES_QUERY, variables)?
            .issues
            .fetched(summarise_issue))
    })
}

/// The page size: the payload's `first` (1 to 250), else as many as `max_items`
/// needs, at most 250.
fn first(paging: &Paging, first: Option<u16>) -> Result<u16, PluginError> {
    match first {
        None => Ok(u16::try_from(paging.page_size(MAX_FIRST.into())).unwrap_or(MAX_FIRST)),
        Some(count @ 1..=MAX_FIRST) => Ok(count),
        Some(count) => Err(PluginError::permanent(format!(
            "invalid payload: field \"first\": must be 1 to {MAX_FIRST}, got {count}"
        ))),
    }
}

/// Checks that payload field `field` is not blank.
fn non_empty<'a>(field: &str, value: &'a str) -> Result<&'a str, PluginError> {
    if value.trim().is_empty() {
        Err(PluginError::permanent(format!(
            "invalid payload: field {field:?}: must not be empty"
        )))
    } else {
        Ok(value)
    }
}

/// A GraphQL response: data, errors, or both.
#[derive(Deserialize)]
struct Envelope<T> {
    data: Option<T>,
    #[serde(default)]
    errors: Vec<GraphQlError>,
}

#[derive(Deserialize)]
struct GraphQlError {
    message: String,
}

/// Runs `query` with `variables` and returns its `data`.
fn graphql<T: DeserializeOwned>(query: &str, variables: Value) -> Result<T, PluginError> {
    let url = config::get_or("base_url", DEFAULT_BASE_URL);
    let response = Request::post(&url)
        .header("accept", "application/json")
        .json(&json!({ "query": query, "variables": variables }))?
        .send()?;
    read_data(response)
}

/// The `data` of a GraphQL response, or the error its errors or status call for.
fn read_data<T: DeserializeOwned>(response: Response) -> Result<T, PluginError> {
    // Linear reports GraphQL errors with 4xx statuses too: read the body first, and
    // fall back to the status when the body is no GraphQL response at all.
    let envelope: Envelope<T> = match response.json() {
        Ok(envelope) => envelope,
        Err(error) => return Err(response.error_for_status().err().unwrap_or(error)),
    };
    if !envelope.errors.is_empty() {
        let messages: Vec<&str> = envelope
            .errors
            .iter()
            .map(|error| error.message.as_str())
            .collect();
        let message = format!("Linear GraphQL error: {}", messages.join("; "));
        return Err(match response.graphql_rate_limit() {
            Some(wait) => PluginError::retriable_after(message, wait),
            None if response.status >= 500 => PluginError::retriable(message),
            None => PluginError::permanent(message),
        });
    }
    let status = response.status;
    response.error_for_status()?;
    envelope.data.ok_or_else(|| {
        PluginError::permanent(format!("Linear answered HTTP {status} without data"))
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::*;

    const RATE_LIMITED: &str =
        r#"{"errors":[{"message":"Rate limit exceeded","extensions":{"code":"RATELIMITED"}}]}"#;

    /// What [`read_data`] makes of a response: the data's team keys, or the error.
    fn check(
        status: u16,
        headers: &[(&str, &str)],
        body: &str,
        expected: Result<&[&str], PluginError>,
    ) {
        let read = read_data::<TeamsData>(Response::new(status, headers, body)).map(|data| {
            data.teams
                .nodes
                .into_iter()
                .map(|team| team.key)
                .collect::<Vec<_>>()
        });
        let expected = expected.map(|keys| keys.iter().map(|&key| key.to_owned()).collect());
        assert_eq!(read, expected, "HTTP {status} {body}");
    }

    #[test]
    fn rate_limited_waits_for_the_reset() {
        let message = "Linear GraphQL error: Rate limit exceeded";
        // No reset header: a minute, not at once.
        for status in [200, 400] {
            check(
                status,
                &[],
                RATE_LIMITED,
                Err(PluginError::retriable_after(
                    message,
                    Duration::from_secs(60),
                )),
            );
        }
        // Linear's resets are Unix times in milliseconds.
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let reset = (now + Duration::from_secs(90)).as_millis().to_string();
        let read = read_data::<TeamsData>(Response::new(
            400,
            &[
                ("x-ratelimit-requests-remaining", "0"),
                ("x-ratelimit-requests-reset", &reset),
            ],
            RATE_LIMITED,
        ));
        let Err(PluginError::Retriable {
            retry_after: Some(wait),
            ..
        }) = read
        else {
            panic!(
                "expected a retriable error with a wait, got {:?}",
                read.err()
            );
        };
        assert!(
            (Duration::from_secs(85)..=Duration::from_secs(90)).contains(&wait),
            "{wait:?}"
        );
    }

    #[test]
    fn filters_become_an_issue_filter() {
        let payload: IssuesPayload = parse_payload(
            br#"{"team":"ENG","state":"In Progress","state_type":"started",
                 "updated_after":"2024-01-01T00:00:00+01:00","created_before":"2024-06-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(
            issue_filter(&payload).unwrap(),
            json!({
                "team": {"key": {"eq": "ENG"}},
                "state": {"name": {"eq": "In Progress"}, "type": {"eq": "started"}},
                "updatedAt": {"gte": "2023-12-31T23:00:00Z"},
                "createdAt": {"lte": "2024-06-01T00:00:00Z"},
            })
        );
        let none: IssuesPayload = parse_payload(b"{}").unwrap();
        assert_eq!(issue_filter(&none).unwrap(), Value::Null);
        let bad: IssuesPayload = parse_payload(br#"{"updated_before":"last week"}"#).unwrap();
        let error = issue_filter(&bad).unwrap_err();
        assert!(
            error
                .message()
                .starts_with("invalid payload: field \"updated_before\""),
            "{error}"
        );
        let error = parse_payload::<IssuesPayload>(br#"{"state_type":"done"}"#)
            .err()
            .unwrap();
        assert!(
            error
                .message()
                .starts_with("invalid payload: field \"state_type\""),
            "{error}"
        );
    }

    #[test]
    fn page_info_gives_the_next_cursor() {
        let body = |page_info: &str| {
            format!(
                r#"{{"data":{{"teams":{{"nodes":[{{"id":"1","key":"ENG","name":"E"}}],"pageInfo":{page_info}}}}}}}"#
            )
        };
        let next = |page_info: &str| {
            read_data::<TeamsData>(Response::new(200, &[], &body(page_info)))
                .unwrap()
                .teams
                .fetched(|team| team.key)
                .next
        };
        assert_eq!(
            next(r#"{"hasNextPage":true,"endCursor":"c1"}"#).as_deref(),
            Some("c1")
        );
        assert_eq!(next(r#"{"hasNextPage":false,"endCursor":"c1"}"#), None);
        assert_eq!(next(r#"{"hasNextPage":true,"endCursor":null}"#), None);
    }

    #[test]
    fn issue_states_map_to_one_vocabulary() {
        let issue = |kind: &str| {
            serde_json::from_value::<LinearIssue>(json!({
                "identifier": "ENG-1", "title": "t", "url": "https://linear.app/x/issue/ENG-1",
                "createdAt": "2024-01-02T03:04:05.000Z", "updatedAt": "2024-01-03T03:04:05.000Z",
                "completedAt": null, "canceledAt": "2024-01-04T00:00:00.000Z",
                "priorityLabel": "No priority",
                "state": {"name": "Whatever", "type": kind}, "assignee": null,
                "creator": {"name": "Ada Lovelace", "displayName": "ada", "email": "ada@example.com"}
            }))
            .unwrap()
        };
        for (kind, state) in [
            ("triage", IssueState::Open),
            ("backlog", IssueState::Open),
            ("unstarted", IssueState::Open),
            ("started", IssueState::InProgress),
            ("completed", IssueState::Closed),
            ("canceled", IssueState::Closed),
        ] {
            let summary = summarise_issue(issue(kind));
            assert_eq!(summary.state, Some(state), "{kind}");
            assert_eq!(summary.status.as_deref(), Some("Whatever"));
            assert_eq!(summary.updated_at.as_deref(), Some("2024-01-03T03:04:05Z"));
            assert_eq!(summary.closed_at.as_deref(), Some("2024-01-04T00:00:00Z"));
            assert_eq!(summary.priority, None);
            assert_eq!(
                summary.reporter,
                Person::new(
                    Some("ada".into()),
                    Some("Ada Lovelace".into()),
                    Some("ada@example.com".into())
                )
            );
        }
    }

    #[test]
    fn other_answers_keep_their_class() {
        let teams = r#"{"data":{"teams":{"nodes":[{"id":"1","key":"ENG","name":"Engineering"}]}}}"#;
        check(200, &[], teams, Ok(&["ENG"]));
        let invalid = r#"{"errors":[{"message":"Argument first is invalid","extensions":{"code":"INVALID_INPUT"}}]}"#;
        check(
            400,
            &[],
            invalid,
            Err(PluginError::permanent(
                "Linear GraphQL error: Argument first is invalid",
            )),
        );
        check(
            503,
            &[],
            r#"{"errors":[{"message":"down"}]}"#,
            Err(PluginError::retriable("Linear GraphQL error: down")),
        );
        check(
            502,
            &[("retry-after", "5")],
            "Bad Gateway",
            Err(PluginError::retriable_after(
                "HTTP 502: Bad Gateway",
                Duration::from_secs(5),
            )),
        );
    }
}
