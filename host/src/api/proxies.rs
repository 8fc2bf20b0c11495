//! The typed proxies (GitHub, GitLab, Jira, Linear, Bitbucket): each RPC turns its typed
//! request into the JSON payload of one command and submits it like `SubmitJob`.
//!
//! Required fields are checked here and empty optional ones left out, so the plugin's
//! defaults apply. A list request's `PageOptions` become the payload's `max_items`
//! (`all` is the plugins' hard cap, [`MAX_ITEMS`]) and `next`. Whether a plugin serves the command is the manager's question, so an
//! RPC whose plugin is missing fails exactly as `SubmitJob` would.

use std::sync::Arc;

use serde_json::{Map, Value};
use tonic::{Request, Response, Status};

use super::ApiState;
use super::convert;
use super::pb::{
    self, bitbucket_server::Bitbucket, git_hub_server::GitHub, git_lab_server::GitLab,
    jira_server::Jira, linear_server::Linear,
};

/// The most items a plugin's list command returns (the SDK's hard cap,
/// `plugins/sdk/src/paging.rs`): what `PageOptions.all` asks for, and where a larger
/// `max_items` is cut.
pub const MAX_ITEMS: u32 = 10_000;

/// Serves all five proxy services.
#[derive(Clone)]
pub struct ProxyService {
    state: Arc<ApiState>,
}

impl ProxyService {
    pub fn new(state: Arc<ApiState>) -> Self {
        Self { state }
    }

    async fn submit(
        &self,
        payload: Payload,
        options: Option<pb::JobOptions>,
        trace_parent: Option<String>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let options = options.unwrap_or_default();
        let bytes = serde_json::to_vec(&Value::Object(payload.fields))
            .map_err(|err| Status::internal(format!("cannot encode the payload: {err}")))?;
        let response = convert::submit(
            &self.state.manager,
            payload.command.to_owned(),
            bytes,
            options.priority,
            options.max_retries,
            trace_parent,
        )
        .await?;
        Ok(Response::new(response))
    }
}

/// A typed request's message and the W3C `traceparent` its metadata carries, which
/// the submitted job's trace continues as with `SubmitJob`.
fn traced<T>(request: Request<T>) -> (T, Option<String>) {
    let trace_parent = convert::trace_parent(request.metadata());
    (request.into_inner(), trace_parent)
}

/// A command's JSON payload under construction.
struct Payload {
    command: &'static str,
    fields: Map<String, Value>,
}

impl Payload {
    fn new(command: &'static str) -> Self {
        Self {
            command,
            fields: Map::new(),
        }
    }

    fn required(mut self, name: &str, value: String) -> Result<Self, Status> {
        if value.trim().is_empty() {
            return Err(Status::invalid_argument(format!(
                "{name} is required for {}",
                self.command
            )));
        }
        self.fields.insert(name.to_owned(), value.into());
        Ok(self)
    }

    fn optional(mut self, name: &str, value: String) -> Self {
        if !value.is_empty() {
            self.fields.insert(name.to_owned(), value.into());
        }
        self
    }

    /// A boolean that is left out when not given.
    fn flag(mut self, name: &str, value: Option<bool>) -> Self {
        if let Some(value) = value {
            self.fields.insert(name.to_owned(), value.into());
        }
        self
    }

    /// A list of values given as one comma-separated string (`"OPEN,MERGED"`): one
    /// value stays a string, several become an array; empty leaves it out.
    fn list(mut self, name: &str, value: String) -> Self {
        let values: Vec<Value> = value
            .split(',')
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map(|value| Value::from(value.to_owned()))
            .collect();
        match values.len() {
            0 => {}
            1 => {
                let value = values.into_iter().next().unwrap_or_default();
                self.fields.insert(name.to_owned(), value);
            }
            _ => {
                self.fields.insert(name.to_owned(), Value::Array(values));
            }
        }
        self
    }

    /// A list command's paging: `max_items` (cut to [`MAX_ITEMS`]; `all` is
    /// [`MAX_ITEMS`]; 0 leaves the plugin's default) and the cursor `next`.
    fn page(mut self, page: Option<pb::PageOptions>) -> Self {
        let page = page.unwrap_or_default();
        let max_items = if page.all {
            MAX_ITEMS
        } else {
            page.max_items.min(MAX_ITEMS)
        };
        if max_items > 0 {
            self.fields.insert("max_items".to_owned(), max_items.into());
        }
        self.optional("next", page.next)
    }

    /// A page size such as `per_page`: 0 leaves it out, otherwise 1 to `max`.
    fn count(mut self, name: &str, value: u32, max: u32) -> Result<Self, Status> {
        match value {
            0 => Ok(self),
            n if n <= max => {
                self.fields.insert(name.to_owned(), n.into());
                Ok(self)
            }
            _ => Err(Status::invalid_argument(format!(
                "{name} is {value}: it must be 1 to {max} for {} (0 for the plugin's default)",
                self.command
            ))),
        }
    }
}

type Submitted = Result<Response<pb::SubmitJobResponse>, Status>;

#[tonic::async_trait]
impl GitHub for ProxyService {
    async fn list_repositories(
        &self,
        request: Request<pb::GitHubListRepositoriesRequest>,
    ) -> Submitted {
        let (r, trace_parent) = traced(request);
        let payload = Payload::new("github.repositories")
            .optional("owner", r.owner)
            .count("per_page", r.per_page, 100)?
            .page(r.page);
        self.submit(payload, r.options, trace_parent).await
    }

    async fn get_commits(&self, request: Request<pb::GitHubGetCommitsRequest>) -> Submitted {
        let (r, trace_parent) = traced(request);
        let payload = Payload::new("github.commits")
            .required("owner", r.owner)?
            .required("repo", r.repo)?
            .optional("sha", r.sha)
            .optional("since", r.since)
            .optional("until", r.until)
            .optional("path", r.path)
            .optional("author", r.author)
            .count("per_page", r.per_page, 100)?
            .page(r.page);
        self.submit(payload, r.options, trace_parent).await
    }

    async fn get_pull_requests(
        &self,
        request: Request<pb::GitHubGetPullRequestsRequest>,
    ) -> Submitted {
        let (r, trace_parent) = traced(request);
        let payload = Payload::new("github.pullRequests")
            .required("owner", r.owner)?
            .required("repo", r.repo)?
            .optional("state", r.state)
            .optional("sort", r.sort)
            .optional("direction", r.direction)
            .count("per_page", r.per_page, 100)?
            .page(r.page);
        self.submit(payload, r.options, trace_parent).await
    }

    async fn clone_repository(
        &self,
        request: Request<pb::GitHubCloneRepositoryRequest>,
    ) -> Submitted {
        let (r, trace_parent) = traced(request);
        let payload = Payload::new("github.clone")
            .required("owner", r.owner)?
            .required("repo", r.repo)?
            .optional("ref", r.r#ref);
        self.submit(payload, r.options, trace_parent).await
    }
}

#[tonic::async_trait]
impl GitLab for ProxyService {
    async fn list_projects(&self, request: Request<pb::GitLabListProjectsRequest>) -> Submitted {
        let (r, trace_parent) = traced(request);
        let payload = Payload::new("gitlab.projects")
            .optional("group", r.group)
            .flag("include_subgroups", r.include_subgroups)
            .count("per_page", r.per_page, 100)?
            .page(r.page);
        self.submit(payload, r.options, trace_parent).await
    }

    async fn get_commits(&self, request: Request<pb::GitLabGetCommitsRequest>) -> Submitted {
        let (r, trace_parent) = traced(request);
        let payload = Payload::new("gitlab.commits")
            .required("project", r.project)?
            .optional("ref", r.r#ref)
            .optional("since", r.since)
            .optional("until", r.until)
            .optional("path", r.path)
            .optional("author", r.author)
            .count("per_page", r.per_page, 100)?
            .page(r.page);
        self.submit(payload, r.options, trace_parent).await
    }

    async fn get_merge_requests(
        &self,
        request: Request<pb::GitLabGetMergeRequestsRequest>,
    ) -> Submitted {
        let (r, trace_parent) = traced(request);
        let payload = Payload::new("gitlab.mergeRequests")
            .required("project", r.project)?
            .optional("state", r.state)
            .optional("updated_after", r.updated_after)
            .optional("updated_before", r.updated_before)
            .count("per_page", r.per_page, 100)?
            .page(r.page);
        self.submit(payload, r.options, trace_parent).await
    }

    async fn get_issues(&self, request: Request<pb::GitLabGetIssuesRequest>) -> Submitted {
        let (r, trace_parent) = traced(request);
        let payload = Payload::new("gitlab.issues")
            .required("project", r.project)?
            .optional("state", r.state)
            .optional("updated_after", r.updated_after)
            .optional("updated_before", r.updated_before)
            .optional("labels", r.labels)
            .count("per_page", r.per_page, 100)?
            .page(r.page);
        self.submit(payload, r.options, trace_parent).await
    }

    async fn clone_repository(
        &self,
        request: Request<pb::GitLabCloneRepositoryRequest>,
    ) -> Submitted {
        let (r, trace_parent) = traced(request);
        let payload = Payload::new("gitlab.clone")
            .required("project", r.project)?
            .optional("ref", r.r#ref);
        self.submit(payload, r.options, trace_parent).await
    }
}

#[tonic::async_trait]
impl Jira for ProxyService {
    async fn list_projects(&self, request: Request<pb::JiraListProjectsRequest>) -> Submitted {
        let (r, trace_parent) = traced(request);
        let payload = Payload::new("jira.projects")
            .count("max_results", r.max_results, 100)?
            .page(r.page);
        self.submit(payload, r.options, trace_parent).await
    }

    async fn search_issues(&self, request: Request<pb::JiraSearchIssuesRequest>) -> Submitted {
        let (r, trace_parent) = traced(request);
        let payload = match (r.jql.trim().is_empty(), r.project.trim().is_empty()) {
            (false, true) => Payload::new("jira.issues").required("jql", r.jql)?,
            (true, false) => Payload::new("jira.issues").required("project", r.project)?,
            _ => {
                return Err(Status::invalid_argument(
                    "jira.issues needs exactly one of jql and project",
                ));
            }
        }
        .count("max_results", r.max_results, 100)?
        .page(r.page);
        self.submit(payload, r.options, trace_parent).await
    }

    async fn get_issue(&self, request: Request<pb::JiraGetIssueRequest>) -> Submitted {
        let (r, trace_parent) = traced(request);
        let payload = Payload::new("jira.issue").required("key", r.key)?;
        self.submit(payload, r.options, trace_parent).await
    }
}

#[tonic::async_trait]
impl Linear for ProxyService {
    async fn list_teams(&self, request: Request<pb::LinearListTeamsRequest>) -> Submitted {
        let (r, trace_parent) = traced(request);
        let payload = Payload::new("linear.teams")
            .count("first", r.first, 250)?
            .page(r.page);
        self.submit(payload, r.options, trace_parent).await
    }

    async fn list_issues(&self, request: Request<pb::LinearListIssuesRequest>) -> Submitted {
        let (r, trace_parent) = traced(request);
        let payload = Payload::new("linear.issues")
            .optional("team", r.team)
            .optional("state", r.state)
            .optional("state_type", r.state_type)
            .optional("updated_after", r.updated_after)
            .optional("updated_before", r.updated_before)
            .optional("created_after", r.created_after)
            .optional("created_before", r.created_before)
            .count("first", r.first, 250)?
            .page(r.page);
        self.submit(payload, r.options, trace_parent).await
    }
}

#[tonic::async_trait]
impl Bitbucket for ProxyService {
    async fn list_repositories(
        &self,
        request: Request<pb::BitbucketListRepositoriesRequest>,
    ) -> Submitted {
        let (r, trace_parent) = traced(request);
        let payload = Payload::new("bitbucket.repositories")
            .required("workspace", r.workspace)?
            .optional("q", r.q)
            .count("per_page", r.per_page, 50)?
            .page(r.page);
        self.submit(payload, r.options, trace_parent).await
    }

    async fn get_commits(&self, request: Request<pb::BitbucketGetCommitsRequest>) -> Submitted {
        let (r, trace_parent) = traced(request);
        let payload = Payload::new("bitbucket.commits")
            .required("workspace", r.workspace)?
            .required("repo", r.repo)?
            .optional("branch", r.branch)
            .count("per_page", r.per_page, 50)?
            .page(r.page);
        self.submit(payload, r.options, trace_parent).await
    }

    async fn get_pull_requests(
        &self,
        request: Request<pb::BitbucketGetPullRequestsRequest>,
    ) -> Submitted {
        let (r, trace_parent) = traced(request);
        let payload = Payload::new("bitbucket.pullRequests")
            .required("workspace", r.workspace)?
            .required("repo", r.repo)?
            .list("state", r.state)
            .optional("q", r.q)
            .count("per_page", r.per_page, 50)?
            .page(r.page);
        self.submit(payload, r.options, trace_parent).await
    }

    async fn clone_repository(
        &self,
        request: Request<pb::BitbucketCloneRepositoryRequest>,
    ) -> Submitted {
        let (r, trace_parent) = traced(request);
        let payload = Payload::new("bitbucket.clone")
            .required("workspace", r.workspace)?
            .required("repo", r.repo)?
            .optional("ref", r.r#ref);
        self.submit(payload, r.options, trace_parent).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tonic::Code;

    #[test]
    fn payload_keeps_given_fields_and_leaves_out_empty_ones() {
        let payload = Payload::new("github.commits")
            .required("owner", "octocat".into())
            .unwrap()
            .required("repo", "hello".into())
            .unwrap()
            .optional("sha", String::new())
            .count("per_page", 30, 100)
            .unwrap();
        assert_eq!(
            Value::Object(payload.fields),
            json!({"owner": "octocat", "repo": "hello", "per_page": 30})
        );
    }

    #[test]
    fn paging_becomes_max_items_and_next() {
        let page = |max_items, all, next: &str| {
            Value::Object(
                Payload::new("github.commits")
                    .page(Some(pb::PageOptions {
                        max_items,
                        all,
                        next: next.into(),
                    }))
                    .fields,
            )
        };
        assert_eq!(page(0, false, ""), json!({}));
        assert_eq!(
            page(150, false, "abc"),
            json!({"max_items": 150, "next": "abc"})
        );
        assert_eq!(page(u32::MAX, false, ""), json!({"max_items": MAX_ITEMS}));
        assert_eq!(page(5, true, ""), json!({"max_items": MAX_ITEMS}));
        assert_eq!(
            Value::Object(Payload::new("github.commits").page(None).fields),
            json!({})
        );
    }

    #[test]
    fn lists_and_flags_are_left_out_when_empty() {
        let payload = Payload::new("bitbucket.pullRequests")
            .list("state", " OPEN , MERGED,".into())
            .list("one", "OPEN".into())
            .list("none", " , ".into())
            .flag("include_subgroups", Some(false))
            .flag("absent", None);
        assert_eq!(
            Value::Object(payload.fields),
            json!({"state": ["OPEN", "MERGED"], "one": "OPEN", "include_subgroups": false})
        );
    }

    #[test]
    fn missing_required_field_and_out_of_range_per_page_are_invalid_arguments() {
        let err = Payload::new("github.commits")
            .required("owner", " ".into())
            .err()
            .unwrap();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(err.message(), "owner is required for github.commits");
        let err = Payload::new("bitbucket.commits")
            .count("per_page", 51, 50)
            .err()
            .unwrap();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(
            err.message(),
            "per_page is 51: it must be 1 to 50 for bitbucket.commits (0 for the plugin's default)"
        );
    }
}
