//! Plugin `linear`: read-only commands over Linear's GraphQL API.
//!
//! | command  | payload                      | result                                                   |
//! |----------|------------------------------|----------------------------------------------------------|
//! | `teams`  | `{"first"?}`                 | `[{"id", "key", "name"}]`                                |
//! | `issues` | `{"team"?, "first"?}`        | `[{"identifier", "title", "state", "assignee", "updated_at", "url"}]` |
//!
//! `team` is a team key such as `"ENG"`; `first` (1 to 250, default 50) bounds the
//! count; issues come most recently updated first. Each command is one `POST` of a
//! GraphQL query to `base_url`.
//!
//! Config: `base_url` (default `https://api.linear.app/graphql`). The daemon adds
//! `Authorization` from the manifest's `[[auth]]` rule. Errors: a bad payload is
//! permanent and names the field; GraphQL errors are permanent except Linear's
//! `RATELIMITED`, which is retriable once the limit resets (the SDK reads Linear's
//! `x-ratelimit-*-reset` headers); statuses are classified by the SDK.

use honeydew_plugin_sdk::http::{Request, Response};
use honeydew_plugin_sdk::{Plugin, PluginError, PluginInfo, config, parse_payload, to_json};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const DEFAULT_BASE_URL: &str = "https://api.linear.app/graphql";
/// The most nodes Linear returns per page.
const MAX_FIRST: u16 = 250;
/// The page size when the payload gives none.
const DEFAULT_FIRST: u16 = 50;

const TEAMS_QUERY: &str = "query Teams($first: Int!) {
  teams(first: $first) { nodes { id key name } }
}";

const ISSUES_QUERY: &str = "query Issues($first: Int!, $filter: IssueFilter) {
  issues(first: $first, filter: $filter, orderBy: updatedAt) {
    nodes { identifier title url updatedAt state { name } assignee { name } }
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
    first: Option<u16>,
}

#[derive(Deserialize)]
struct TeamsData {
    teams: Connection<TeamSummary>,
}

/// A page of GraphQL nodes.
#[derive(Deserialize)]
struct Connection<T> {
    nodes: Vec<T>,
}

/// One team, as Linear sends it and as the plugin returns it.
#[derive(Deserialize, Serialize)]
struct TeamSummary {
    id: String,
    key: String,
    name: String,
}

fn teams(payload: TeamsPayload) -> Result<Vec<TeamSummary>, PluginError> {
    let variables = json!({ "first": first(payload.first)? });
    Ok(graphql::<TeamsData>(TEAMS_QUERY, variables)?.teams.nodes)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuesPayload {
    team: Option<String>,
    first: Option<u16>,
}

#[derive(Deserialize)]
struct IssuesData {
    issues: Connection<Issue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Issue {
    identifier: String,
    title: String,
    url: String,
    updated_at: String,
    state: Option<Named>,
    assignee: Option<Named>,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

/// One issue as the plugin returns it.
#[derive(Serialize)]
struct IssueSummary {
    identifier: String,
    title: String,
    state: Option<String>,
    assignee: Option<String>,
    updated_at: String,
    url: String,
}

fn issues(payload: IssuesPayload) -> Result<Vec<IssueSummary>, PluginError> {
    let filter = match &payload.team {
        Some(team) if !team.trim().is_empty() => json!({ "team": { "key": { "eq": team } } }),
        Some(_) => {
            return Err(PluginError::permanent(
                "invalid payload: \"team\" must not be empty",
            ));
        }
        None => Value::Null,
    };
    let variables = json!({ "first": first(payload.first)?, "filter": filter });
    let data: IssuesData = graphql(ISSUES_QUERY, variables)?;
    Ok(data
        .issues
        .nodes
        .into_iter()
        .map(|issue| IssueSummary {
            identifier: issue.identifier,
            title: issue.title,
            state: issue.state.map(|state| state.name),
            assignee: issue.assignee.map(|assignee| assignee.name),
            updated_at: issue.updated_at,
            url: issue.url,
        })
        .collect())
}

/// Checks a page size, defaulting to [`DEFAULT_FIRST`].
fn first(first: Option<u16>) -> Result<u16, PluginError> {
    match first.unwrap_or(DEFAULT_FIRST) {
        count @ 1..=MAX_FIRST => Ok(count),
        count => Err(PluginError::permanent(format!(
            "invalid payload: \"first\" must be 1 to {MAX_FIRST}, got {count}"
        ))),
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
