//! Typed shortcuts for the proxy RPCs, such as `honeydew github commits --owner O
//! --repo R`: each builds the typed request and calls its service, which submits the
//! job; `--wait` then follows it like `honeydew wait`.

use clap::Subcommand;

use super::{CliError, JobArgs};
use crate::api::Connection;
use crate::api::pb::{
    self, bitbucket_client::BitbucketClient, git_hub_client::GitHubClient,
    git_lab_client::GitLabClient, jira_client::JiraClient, linear_client::LinearClient,
};

type Submitted = Result<(pb::SubmitJobResponse, JobArgs), CliError>;

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
        /// Results per page, 1 to 100
        #[arg(long)]
        per_page: Option<u32>,
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
        /// Results per page, 1 to 100
        #[arg(long)]
        per_page: Option<u32>,
        #[command(flatten)]
        job: JobArgs,
    },
    /// Locate a repository's tarball (github.clone)
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
        /// Results per page, 1 to 100
        #[arg(long)]
        per_page: Option<u32>,
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
        /// Results per page, 1 to 100
        #[arg(long)]
        per_page: Option<u32>,
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
        /// Results per page, 1 to 100
        #[arg(long)]
        per_page: Option<u32>,
        #[command(flatten)]
        job: JobArgs,
    },
    /// Locate a repository archive (gitlab.clone)
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
        /// How many, 1 to 100
        #[arg(long)]
        max_results: Option<u32>,
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
        /// How many, 1 to 100
        #[arg(long)]
        max_results: Option<u32>,
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
        /// How many, 1 to 250
        #[arg(long)]
        first: Option<u32>,
        #[command(flatten)]
        job: JobArgs,
    },
    /// List issues (linear.issues)
    Issues {
        /// Team key, such as ENG [default: every team]
        #[arg(long)]
        team: Option<String>,
        /// How many, most recently updated first, 1 to 250
        #[arg(long)]
        first: Option<u32>,
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
        /// Results per page, 1 to 50
        #[arg(long)]
        per_page: Option<u32>,
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
        job: JobArgs,
    },
    /// List pull requests (bitbucket.pullRequests)
    PullRequests {
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        repo: String,
        /// OPEN, MERGED, DECLINED or SUPERSEDED [default: OPEN]
        #[arg(long)]
        state: Option<String>,
        /// Results per page, 1 to 50
        #[arg(long)]
        per_page: Option<u32>,
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
            job,
        } => {
            let request = pb::GitHubListRepositoriesRequest {
                owner: owner.unwrap_or_default(),
                per_page: per_page.unwrap_or_default(),
                options: Some(job.options()),
            };
            (client.list_repositories(request).await?, job)
        }
        GitHubCommand::Commits {
            owner,
            repo,
            sha,
            per_page,
            job,
        } => {
            let request = pb::GitHubGetCommitsRequest {
                owner,
                repo,
                sha: sha.unwrap_or_default(),
                per_page: per_page.unwrap_or_default(),
                options: Some(job.options()),
            };
            (client.get_commits(request).await?, job)
        }
        GitHubCommand::PullRequests {
            owner,
            repo,
            state,
            per_page,
            job,
        } => {
            let request = pb::GitHubGetPullRequestsRequest {
                owner,
                repo,
                state: state.unwrap_or_default(),
                per_page: per_page.unwrap_or_default(),
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
            per_page,
            job,
        } => {
            let request = pb::GitLabListProjectsRequest {
                group: group.unwrap_or_default(),
                per_page: per_page.unwrap_or_default(),
                options: Some(job.options()),
            };
            (client.list_projects(request).await?, job)
        }
        GitLabCommand::Commits {
            project,
            reference,
            per_page,
            job,
        } => {
            let request = pb::GitLabGetCommitsRequest {
                project,
                r#ref: reference.unwrap_or_default(),
                per_page: per_page.unwrap_or_default(),
                options: Some(job.options()),
            };
            (client.get_commits(request).await?, job)
        }
        GitLabCommand::MergeRequests {
            project,
            state,
            per_page,
            job,
        } => {
            let request = pb::GitLabGetMergeRequestsRequest {
                project,
                state: state.unwrap_or_default(),
                per_page: per_page.unwrap_or_default(),
                options: Some(job.options()),
            };
            (client.get_merge_requests(request).await?, job)
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
        JiraCommand::Projects { max_results, job } => {
            let request = pb::JiraListProjectsRequest {
                max_results: max_results.unwrap_or_default(),
                options: Some(job.options()),
            };
            (client.list_projects(request).await?, job)
        }
        JiraCommand::Issues {
            jql,
            project,
            max_results,
            job,
        } => {
            let request = pb::JiraSearchIssuesRequest {
                jql: jql.unwrap_or_default(),
                project: project.unwrap_or_default(),
                max_results: max_results.unwrap_or_default(),
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
        LinearCommand::Teams { first, job } => {
            let request = pb::LinearListTeamsRequest {
                first: first.unwrap_or_default(),
                options: Some(job.options()),
            };
            (client.list_teams(request).await?, job)
        }
        LinearCommand::Issues { team, first, job } => {
            let request = pb::LinearListIssuesRequest {
                team: team.unwrap_or_default(),
                first: first.unwrap_or_default(),
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
            per_page,
            job,
        } => {
            let request = pb::BitbucketListRepositoriesRequest {
                workspace,
                per_page: per_page.unwrap_or_default(),
                options: Some(job.options()),
            };
            (client.list_repositories(request).await?, job)
        }
        BitbucketCommand::Commits {
            workspace,
            repo,
            branch,
            per_page,
            job,
        } => {
            let request = pb::BitbucketGetCommitsRequest {
                workspace,
                repo,
                branch: branch.unwrap_or_default(),
                per_page: per_page.unwrap_or_default(),
                options: Some(job.options()),
            };
            (client.get_commits(request).await?, job)
        }
        BitbucketCommand::PullRequests {
            workspace,
            repo,
            state,
            per_page,
            job,
        } => {
            let request = pb::BitbucketGetPullRequestsRequest {
                workspace,
                repo,
                state: state.unwrap_or_default(),
                per_page: per_page.unwrap_or_default(),
                options: Some(job.options()),
            };
            (client.get_pull_requests(request).await?, job)
        }
    };
    Ok((response.into_inner(), job))
}
