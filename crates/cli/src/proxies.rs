//! Typed shortcuts for the proxy RPCs, such as `honeydew github commits --owner O
//! --repo R`: each builds the typed request and calls its service, which submits the
//! job; `--wait` then follows it like `honeydew wait`. List commands take
//! `--max-items N`, `--all` and `--next CURSOR` ([`PageArgs`]).

use clap::{Args, Subcommand};

use super::{CliError, JobArgs};
use honeydew_proto::Connection;
use honeydew_proto::pb::{
    self, bitbucket_client::BitbucketClient, git_hub_client::GitHubClient,
    git_lab_client::GitLabClient, jira_client::JiraClient, linear_client::LinearClient,
};

type Submitted = Result<(pb::SubmitJobResponse, JobArgs), CliError>;

/// How many items a list command returns, and where it resumes.
#[derive(Args, Debug, Clone)]
pub struct PageArgs {
    /// The most items to return [default: 100; at most 10000]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_items: Option<u32>,
    /// Every item, up to the plugins' hard cap of 10000
    #[arg(long, conflicts_with = "max_items")]
    all: bool,
    /// Continue after a previous result: its "next" (give the same options otherwise)
    #[arg(long, value_name = "CURSOR")]
    next: Option<String>,
}

impl PageArgs {
    fn options(self) -> Option<pb::PageOptions> {
        Some(pb::PageOptions {
            max_items: self.max_items.unwrap_or_default(),
            all: self.all,
            next: self.next.unwrap_or_default(),
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum GitHubCommand {
    /// List repositories of a user or organisation (github.repositories)
    Repositories {
        /// User or organisation [default: the token's user]
        #[arg(long)]
        owner: Option<String>,
        /// Results per page, 1 to 100
        #[arg(long)]
        per_page: Option<u32>,
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        job: JobArgs,
    },
    /// List commits (github.commits)
    Commits {
        #[arg(long)]
        owner: String,
        #[arg(long)]
        repo: String,
        /// Branch, tag or commit to start from [default: the default branch]
        #[arg(long)]
        sha: Option<String>,
        /// Only commits after this RFC 3339 time
        #[arg(long)]
        since: Option<String>,
        /// Only commits before this RFC 3339 time
        #[arg(long)]
        until: Option<String>,
        /// Only commits touching this file or directory
        #[arg(long)]
        path: Option<String>,
        /// Only commits by this login or email address
        #[arg(long)]
        author: Option<String>,
        /// Results per page, 1 to 100
        #[arg(long)]
        per_page: Option<u32>,
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        job: JobArgs,
    },
    /// List pull requests (github.pullRequests)
    PullRequests {
        #[arg(long)]
        owner: String,
        #[arg(long)]
        repo: String,
        /// open, closed or all [default: open]
        #[arg(long)]
        state: Option<String>,
        /// created, updated, popularity or long-running [default: created]
        #[arg(long)]
        sort: Option<String>,
        /// asc or desc
        #[arg(long)]
        direction: Option<String>,
        /// Results per page, 1 to 100
        #[arg(long)]
        per_page: Option<u32>,
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        job: JobArgs,
    },
    /// Unpack a repository at one commit into the job's workspace (github.clone)
    Clone {
        #[arg(long)]
        owner: String,
        #[arg(long)]
        repo: String,
        /// Branch, tag or commit [default: the default branch]
        #[arg(long = "ref")]
        reference: Option<String>,
        #[command(flatten)]
        job: JobArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum GitLabCommand {
    /// List projects (gitlab.projects)
    Projects {
        /// Group path or id [default: the projects the token can see]
        #[arg(long)]
        group: Option<String>,
        /// With --group: the projects of its subgroups too
        #[arg(long, requires = "group")]
        include_subgroups: bool,
        /// Results per page, 1 to 100
        #[arg(long)]
        per_page: Option<u32>,
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        job: JobArgs,
    },
    /// List commits (gitlab.commits)
    Commits {
        /// Project path (group/name) or id
        #[arg(long)]
        project: String,
        /// Branch or tag [default: the default branch]
        #[arg(long = "ref")]
        reference: Option<String>,
        /// Only commits after this RFC 3339 time
        #[arg(long)]
        since: Option<String>,
        /// Only commits before this RFC 3339 time
        #[arg(long)]
        until: Option<String>,
        /// Only commits touching this file or directory
        #[arg(long)]
        path: Option<String>,
        /// Only commits by this author (name or email)
        #[arg(long)]
        author: Option<String>,
        /// Results per page, 1 to 100
        #[arg(long)]
        per_page: Option<u32>,
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        job: JobArgs,
    },
    /// List merge requests (gitlab.mergeRequests)
    MergeRequests {
        /// Project path (group/name) or id
        #[arg(long)]
        project: String,
        /// opened, closed, merged, locked or all
        #[arg(long)]
        state: Option<String>,
        /// Only merge requests updated at or after this RFC 3339 time
        #[arg(long)]
        updated_after: Option<String>,
        /// Only merge requests updated at or before this RFC 3339 time
        #[arg(long)]
        updated_before: Option<String>,
        /// Results per page, 1 to 100
        #[arg(long)]
        per_page: Option<u32>,
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        job: JobArgs,
    },
    /// List issues (gitlab.issues)
    Issues {
        /// Project path (group/name) or id
        #[arg(long)]
        project: String,
        /// opened, closed or all [default: all]
        #[arg(long)]
        state: Option<String>,
        /// Only issues updated at or after this RFC 3339 time
        #[arg(long)]
        updated_after: Option<String>,
        /// Only issues updated at or before this RFC 3339 time
        #[arg(long)]
        updated_before: Option<String>,
        /// Only issues with all these labels, comma-separated
        #[arg(long)]
        labels: Option<String>,
        /// Results per page, 1 to 100
        #[arg(long)]
        per_page: Option<u32>,
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        job: JobArgs,
    },
    /// Unpack a project at one commit into the job's workspace (gitlab.clone)
    Clone {
        /// Project path (group/name) or id
        #[arg(long)]
        project: String,
        /// Branch, tag or commit [default: the default branch]
        #[arg(long = "ref")]
        reference: Option<String>,
        #[command(flatten)]
        job: JobArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum JiraCommand {
    /// List projects (jira.projects)
    Projects {
        /// Page size, 1 to 100
        #[arg(long)]
        max_results: Option<u32>,
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        job: JobArgs,
    },
    /// Search issues by JQL or project (jira.issues)
    Issues {
        /// A JQL query, such as "project = HD AND status = Open"
        #[arg(long, required_unless_present = "project", conflicts_with = "project")]
        jql: Option<String>,
        /// A project key: its issues, most recently updated first
        #[arg(long)]
        project: Option<String>,
        /// Page size, 1 to 100
        #[arg(long)]
        max_results: Option<u32>,
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        job: JobArgs,
    },
    /// Get one issue (jira.issue)
    Issue {
        /// Issue key, such as HD-42
        #[arg(long)]
        key: String,
        #[command(flatten)]
        job: JobArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum LinearCommand {
    /// List teams (linear.teams)
    Teams {
        /// Page size, 1 to 250
        #[arg(long)]
        first: Option<u32>,
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        job: JobArgs,
    },
    /// List issues (linear.issues)
    Issues {
        /// Team key, such as ENG [default: every team]
        #[arg(long)]
        team: Option<String>,
        /// A workflow state's name, such as "In Progress"
        #[arg(long)]
        state: Option<String>,
        /// triage, backlog, unstarted, started, completed or canceled
        #[arg(long)]
        state_type: Option<String>,
        /// Only issues updated at or after this RFC 3339 time
        #[arg(long)]
        updated_after: Option<String>,
        /// Only issues updated at or before this RFC 3339 time
        #[arg(long)]
        updated_before: Option<String>,
        /// Only issues created at or after this RFC 3339 time
        #[arg(long)]
        created_after: Option<String>,
        /// Only issues created at or before this RFC 3339 time
        #[arg(long)]
        created_before: Option<String>,
        /// Page size, 1 to 250; issues come most recently updated first
        #[arg(long)]
        first: Option<u32>,
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        job: JobArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum BitbucketCommand {
    /// List repositories of a workspace (bitbucket.repositories)
    Repositories {
        #[arg(long)]
        workspace: String,
        /// A Bitbucket query (BBQL), such as 'name ~ "api"'
        #[arg(long)]
        q: Option<String>,
        /// Results per page, 1 to 50
        #[arg(long)]
        per_page: Option<u32>,
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        job: JobArgs,
    },
    /// List commits (bitbucket.commits)
    Commits {
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        repo: String,
        /// Branch [default: every branch]
        #[arg(long)]
        branch: Option<String>,
        /// Results per page, 1 to 50
        #[arg(long)]
        per_page: Option<u32>,
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        job: JobArgs,
    },
    /// List pull requests (bitbucket.pullRequests)
    PullRequests {
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        repo: String,
        /// OPEN, MERGED, DECLINED or SUPERSEDED; repeat or separate with commas for
        /// several [default: OPEN]
        #[arg(long, value_delimiter = ',')]
        state: Vec<String>,
        /// A Bitbucket query (BBQL), such as 'author.nickname = "ada"'
        #[arg(long)]
        q: Option<String>,
        /// Results per page, 1 to 50
        #[arg(long)]
        per_page: Option<u32>,
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        job: JobArgs,
    },
    /// Unpack a repository at one commit into the job's workspace (bitbucket.clone)
    Clone {
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        repo: String,
        /// Branch, tag or commit [default: the main branch]
        #[arg(long = "ref")]
        reference: Option<String>,
        #[command(flatten)]
        job: JobArgs,
    },
}

pub async fn github(channel: &Connection, command: GitHubCommand) -> Submitted {
    let mut client = GitHubClient::new(channel.clone());
    let (response, job) = match command {
        GitHubCommand::Repositories {
            owner,
            per_page,
            page,
            job,
        } => {
            let request = pb::GitHubListRepositoriesRequest {
                owner: owner.unwrap_or_default(),
                per_page: per_page.unwrap_or_default(),
                page: page.options(),
                options: Some(job.options()),
            };
            (client.list_repositories(request).await?, job)
        }
        GitHubCommand::Commits {
            owner,
            repo,
            sha,
            since,
            until,
            path,
            author,
            per_page,
            page,
            job,
        } => {
            let request = pb::GitHubGetCommitsRequest {
                owner,
                repo,
                sha: sha.unwrap_or_default(),
                since: since.unwrap_or_default(),
                until: until.unwrap_or_default(),
                path: path.unwrap_or_default(),
                author: author.unwrap_or_default(),
                per_page: per_page.unwrap_or_default(),
                page: page.options(),
                options: Some(job.options()),
            };
            (client.get_commits(request).await?, job)
        }
        GitHubCommand::PullRequests {
            owner,
            repo,
            state,
            sort,
            direction,
            per_page,
            page,
            job,
        } => {
            let request = pb::GitHubGetPullRequestsRequest {
                owner,
                repo,
                state: state.unwrap_or_default(),
                sort: sort.unwrap_or_default(),
                direction: direction.unwrap_or_default(),
                per_page: per_page.unwrap_or_default(),
                page: page.options(),
                options: Some(job.options()),
            };
            (client.get_pull_requests(request).await?, job)
        }
        GitHubCommand::Clone {
            owner,
            repo,
            reference,
            job,
        } => {
            let request = pb::GitHubCloneRepositoryRequest {
                owner,
                repo,
                r#ref: reference.unwrap_or_default(),
                options: Some(job.options()),
            };
            (client.clone_repository(request).await?, job)
        }
    };
    Ok((response.into_inner(), job))
}

pub async fn gitlab(channel: &Connection, command: GitLabCommand) -> Submitted {
    let mut client = GitLabClient::new(channel.clone());
    let (response, job) = match command {
        GitLabCommand::Projects {
            group,
            include_subgroups,
            per_page,
            page,
            job,
        } => {
            let request = pb::GitLabListProjectsRequest {
                group: group.unwrap_or_default(),
                include_subgroups: include_subgroups.then_some(true),
                per_page: per_page.unwrap_or_default(),
                page: page.options(),
                options: Some(job.options()),
            };
            (client.list_projects(request).await?, job)
        }
        GitLabCommand::Commits {
            project,
            reference,
            since,
            until,
            path,
            author,
            per_page,
            page,
            job,
        } => {
            let request = pb::GitLabGetCommitsRequest {
                project,
                r#ref: reference.unwrap_or_default(),
                since: since.unwrap_or_default(),
                until: until.unwrap_or_default(),
                path: path.unwrap_or_default(),
                author: author.unwrap_or_default(),
                per_page: per_page.unwrap_or_default(),
                page: page.options(),
                options: Some(job.options()),
            };
            (client.get_commits(request).await?, job)
        }
        GitLabCommand::MergeRequests {
            project,
            state,
            updated_after,
            updated_before,
            per_page,
            page,
            job,
        } => {
            let request = pb::GitLabGetMergeRequestsRequest {
                project,
                state: state.unwrap_or_default(),
                updated_after: updated_after.unwrap_or_default(),
                updated_before: updated_before.unwrap_or_default(),
                per_page: per_page.unwrap_or_default(),
                page: page.options(),
                options: Some(job.options()),
            };
            (client.get_merge_requests(request).await?, job)
        }
        GitLabCommand::Issues {
            project,
            state,
            updated_after,
            updated_before,
            labels,
            per_page,
            page,
            job,
        } => {
            let request = pb::GitLabGetIssuesRequest {
                project,
                state: state.unwrap_or_default(),
                updated_after: updated_after.unwrap_or_default(),
                updated_before: updated_before.unwrap_or_default(),
                labels: labels.unwrap_or_default(),
                per_page: per_page.unwrap_or_default(),
                page: page.options(),
                options: Some(job.options()),
            };
            (client.get_issues(request).await?, job)
        }
        GitLabCommand::Clone {
            project,
            reference,
            job,
        } => {
            let request = pb::GitLabCloneRepositoryRequest {
                project,
                r#ref: reference.unwrap_or_default(),
                options: Some(job.options()),
            };
            (client.clone_repository(request).await?, job)
        }
    };
    Ok((response.into_inner(), job))
}

pub async fn jira(channel: &Connection, command: JiraCommand) -> Submitted {
    let mut client = JiraClient::new(channel.clone());
    let (response, job) = match command {
        JiraCommand::Projects {
            max_results,
            page,
            job,
        } => {
            let request = pb::JiraListProjectsRequest {
                max_results: max_results.unwrap_or_default(),
                page: page.options(),
                options: Some(job.options()),
            };
            (client.list_projects(request).await?, job)
        }
        JiraCommand::Issues {
            jql,
            project,
            max_results,
            page,
            job,
        } => {
            let request = pb::JiraSearchIssuesRequest {
                jql: jql.unwrap_or_default(),
                project: project.unwrap_or_default(),
                max_results: max_results.unwrap_or_default(),
                page: page.options(),
                options: Some(job.options()),
            };
            (client.search_issues(request).await?, job)
        }
        JiraCommand::Issue { key, job } => {
            let request = pb::JiraGetIssueRequest {
                key,
                options: Some(job.options()),
            };
            (client.get_issue(request).await?, job)
        }
    };
    Ok((response.into_inner(), job))
}

pub async fn linear(channel: &Connection, command: LinearCommand) -> Submitted {
    let mut client = LinearClient::new(channel.clone());
    let (response, job) = match command {
        LinearCommand::Teams { first, page, job } => {
            let request = pb::LinearListTeamsRequest {
                first: first.unwrap_or_default(),
                page: page.options(),
                options: Some(job.options()),
            };
            (client.list_teams(request).await?, job)
        }
        LinearCommand::Issues {
            team,
            state,
            state_type,
            updated_after,
            updated_before,
            created_after,
            created_before,
            first,
            page,
            job,
        } => {
            let request = pb::LinearListIssuesRequest {
                team: team.unwrap_or_default(),
                state: state.unwrap_or_default(),
                state_type: state_type.unwrap_or_default(),
                updated_after: updated_after.unwrap_or_default(),
                updated_before: updated_before.unwrap_or_default(),
                created_after: created_after.unwrap_or_default(),
                created_before: created_before.unwrap_or_default(),
                first: first.unwrap_or_default(),
                page: page.options(),
                options: Some(job.options()),
            };
            (client.list_issues(request).await?, job)
        }
    };
    Ok((response.into_inner(), job))
}

pub async fn bitbucket(channel: &Connection, command: BitbucketCommand) -> Submitted {
    let mut client = BitbucketClient::new(channel.clone());
    let (response, job) = match command {
        BitbucketCommand::Repositories {
            workspace,
            q,
            per_page,
            page,
            job,
        } => {
            let request = pb::BitbucketListRepositoriesRequest {
                workspace,
                q: q.unwrap_or_default(),
                per_page: per_page.unwrap_or_default(),
                page: page.options(),
                options: Some(job.options()),
            };
            (client.list_repositories(request).await?, job)
        }
        BitbucketCommand::Commits {
            workspace,
            repo,
            branch,
            per_page,
            page,
            job,
        } => {
            let request = pb::BitbucketGetCommitsRequest {
                workspace,
                repo,
                branch: branch.unwrap_or_default(),
                per_page: per_page.unwrap_or_default(),
                page: page.options(),
                options: Some(job.options()),
            };
            (client.get_commits(request).await?, job)
        }
        BitbucketCommand::PullRequests {
            workspace,
            repo,
            state,
            q,
            per_page,
            page,
            job,
        } => {
            let request = pb::BitbucketGetPullRequestsRequest {
                workspace,
                repo,
                state: state.join(","),
                q: q.unwrap_or_default(),
                per_page: per_page.unwrap_or_default(),
                page: page.options(),
                options: Some(job.options()),
            };
            (client.get_pull_requests(request).await?, job)
        }
        BitbucketCommand::Clone {
            workspace,
            repo,
            reference,
            job,
        } => {
            let request = pb::BitbucketCloneRepositoryRequest {
                workspace,
                repo,
                r#ref: reference.unwrap_or_default(),
                options: Some(job.options()),
            };
            (client.clone_repository(request).await?, job)
        }
    };
    Ok((response.into_inner(), job))
}
