//! One output vocabulary for the integrations: the shapes a repository, commit, pull
//! (or merge) request, issue, project, team, person and checkout (what a `clone`
//! returns) take in every plugin's results, whatever the source calls its fields. Timestamps are RFC 3339 UTC (see [`crate::time`]); states
//! are one small vocabulary per kind, with the source's own value kept beside it.
//!
//! The JSON Schemas in `plugins/NAME/schema/` describe these shapes; this module must
//! not know any one API.

use serde::{Deserialize, Serialize};

/// A person as a source names them: a login (handle) where it has one, a display
/// name, an email address; any may be unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// The account's handle (`octocat`), where the source has one.
    pub login: Option<String>,
    /// The name shown for them (`The Octocat`).
    pub name: Option<String>,
    /// Their email address, where the source gives it.
    pub email: Option<String>,
}

impl Person {
    /// A person from optional parts; `None` when every part is missing or blank.
    pub fn new(login: Option<String>, name: Option<String>, email: Option<String>) -> Option<Self> {
        let clean = |part: Option<String>| part.filter(|text| !text.trim().is_empty());
        let person = Self {
            login: clean(login),
            name: clean(name),
            email: clean(email),
        };
        (person != Self::default()).then_some(person)
    }

    /// A person from a git signature `Name <email>` (Bitbucket's `raw`), or a bare name.
    pub fn from_signature(raw: &str, login: Option<String>) -> Option<Self> {
        match raw.rsplit_once('<') {
            Some((name, rest)) if rest.ends_with('>') => Self::new(
                login,
                Some(name.trim().to_owned()),
                Some(rest.trim_end_matches('>').trim().to_owned()),
            ),
            _ => Self::new(login, Some(raw.trim().to_owned()), None),
        }
    }
}

/// A repository (a GitLab project too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Repository {
    /// The source's id, as text (GitHub's and GitLab's numbers, Bitbucket's uuid).
    pub id: String,
    /// `owner/name` (`group/subgroup/name` on GitLab).
    pub full_name: String,
    /// Whether it is not public.
    pub private: bool,
    /// The default branch, when it has one.
    pub default_branch: Option<String>,
    /// Its description; `None` when empty.
    pub description: Option<String>,
    /// Its page on the web.
    pub url: String,
    /// When it last changed (RFC 3339 UTC).
    pub updated_at: Option<String>,
}

/// A commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Commit {
    /// The full commit hash.
    pub sha: String,
    /// The whole message.
    pub message: String,
    /// Who wrote it.
    pub author: Option<Person>,
    /// When it was authored (RFC 3339 UTC).
    pub date: Option<String>,
}

/// Where a pull or merge request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PullRequestState {
    /// Still open (a locked GitLab merge request included).
    Open,
    /// Merged.
    Merged,
    /// Closed without merging (declined, superseded).
    Closed,
}

/// A pull request (GitHub, Bitbucket) or merge request (GitLab).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PullRequest {
    /// Its number within the repository (GitLab's `iid`).
    pub number: u64,
    /// Its title.
    pub title: String,
    /// Open, merged, or closed without merging.
    pub state: PullRequestState,
    /// The source's own state (`closed`, `opened`, `DECLINED`, ...).
    pub source_state: String,
    /// Whether it is a draft.
    pub draft: bool,
    /// Who opened it.
    pub author: Option<Person>,
    /// The branch with the changes.
    pub source_branch: String,
    /// The branch it is to merge into.
    pub target_branch: String,
    /// Its page on the web.
    pub url: String,
    /// When it was opened (RFC 3339 UTC).
    pub created_at: String,
    /// When it last changed.
    pub updated_at: Option<String>,
    /// When it was merged; `None` unless merged (or the source does not say).
    pub merged_at: Option<String>,
    /// When it was closed or merged, where the source says.
    pub closed_at: Option<String>,
}

/// Where an issue stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueState {
    /// Not started (new, triage, backlog, to do).
    Open,
    /// Being worked on.
    InProgress,
    /// Done or cancelled.
    Closed,
}

/// An issue (Jira, Linear).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issue {
    /// Its key (`PROJ-123`, `ENG-42`).
    pub key: String,
    /// Its title (Jira's summary).
    pub title: Option<String>,
    /// Open, in progress or closed, from the status's category; `None` when the source
    /// does not say.
    pub state: Option<IssueState>,
    /// The source's own status name (`In Review`).
    pub status: Option<String>,
    /// Its type (`Bug`), where the source has types.
    #[serde(rename = "type")]
    pub issue_type: Option<String>,
    /// Its priority's name.
    pub priority: Option<String>,
    /// Who it is assigned to.
    pub assignee: Option<Person>,
    /// Who reported it.
    pub reporter: Option<Person>,
    /// Its page on the web.
    pub url: Option<String>,
    /// When it was created (RFC 3339 UTC).
    pub created_at: Option<String>,
    /// When it last changed.
    pub updated_at: Option<String>,
    /// When it was resolved, completed or cancelled.
    pub closed_at: Option<String>,
}

/// A project that issues belong to (a Jira project).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Project {
    /// The source's id, as text.
    pub id: String,
    /// Its key, the prefix of its issues' keys (`PROJ`).
    pub key: String,
    /// Its name.
    pub name: String,
    /// Its kind in the source's words (Jira's `software`, `business`), where it has one.
    #[serde(rename = "type")]
    pub project_type: Option<String>,
}

/// A team that issues belong to (a Linear team).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Team {
    /// The source's id.
    pub id: String,
    /// Its key, the prefix of its issues' keys (`ENG`).
    pub key: String,
    /// Its name.
    pub name: String,
}

/// What every `clone` command returns: a repository's files at one commit, unpacked by
/// the daemon into the job's workspace, where they stay until the job is pruned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checkout {
    /// `owner/name` (`group/subgroup/name` on GitLab, `workspace/repo` on Bitbucket).
    pub repository: String,
    /// The ref asked for, or the default branch when none was.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The full hash of the commit the ref pointed at: the files are that commit's.
    pub sha: String,
    /// The workspace on the daemon's machine (`<data-dir>/workspaces/<job-id>`).
    pub path: String,
    /// Regular files written.
    pub files: u64,
    /// Bytes of the files written.
    pub bytes: u64,
    /// Symbolic and hard links in the repository, none of which was created.
    pub skipped_links: u64,
}

impl Checkout {
    /// The checkout of `repository` at `reference` (commit `sha`), as `unpacked`.
    pub fn new(
        repository: String,
        reference: String,
        sha: String,
        unpacked: &crate::workspace::Unpacked,
    ) -> Self {
        Self {
            repository,
            reference,
            sha,
            path: unpacked.host_path.clone(),
            files: unpacked.files,
            bytes: unpacked.bytes,
            skipped_links: unpacked.skipped_links,
        }
    }
}

/// Checks that `sha`, as an API gave it, is a full commit hash (40 hex digits, or 64
/// for a SHA-256 repository), lowercased: it goes into the archive's URL.
pub fn commit_hash(sha: &str) -> Result<String, crate::PluginError> {
    let sha = sha.trim();
    if matches!(sha.len(), 40 | 64) && sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(sha.to_ascii_lowercase())
    } else {
        Err(crate::PluginError::permanent(format!(
            "the API answered {:?} where a commit hash was expected",
            &sha[..sha.floor_char_boundary(80)]
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn people_from_parts_and_signatures() {
        assert_eq!(Person::new(None, Some(" ".into()), None), None);
        assert_eq!(
            Person::from_signature("Ada Lovelace <ada@example.com>", Some("ada".into())),
            Some(Person {
                login: Some("ada".into()),
                name: Some("Ada Lovelace".into()),
                email: Some("ada@example.com".into()),
            })
        );
        assert_eq!(
            Person::from_signature("just a name", None),
            Some(Person {
                login: None,
                name: Some("just a name".into()),
                email: None,
            })
        );
        assert_eq!(Person::from_signature("", None), None);
    }

    #[test]
    fn projects_and_teams_keep_their_keys() {
        let project = Project {
            id: "10000".into(),
            key: "PROJ".into(),
            name: "Project".into(),
            project_type: Some("software".into()),
        };
        assert_eq!(
            serde_json::to_value(&project).unwrap(),
            serde_json::json!({"id": "10000", "key": "PROJ", "name": "Project", "type": "software"})
        );
        let team = Team {
            id: "t1".into(),
            key: "ENG".into(),
            name: "Engineering".into(),
        };
        assert_eq!(
            serde_json::to_value(&team).unwrap(),
            serde_json::json!({"id": "t1", "key": "ENG", "name": "Engineering"})
        );
    }

    #[test]
    fn commit_hashes_are_full_and_lowercase() {
        let sha = "7FD1A60B01F91B314F59955A4E4D4E80D8EDF11D";
        assert_eq!(commit_hash(sha).unwrap(), sha.to_ascii_lowercase());
        assert_eq!(
            commit_hash(&format!(" {}\n", "a".repeat(64)))
                .unwrap()
                .len(),
            64
        );
        for bad in [
            "",
            "7fd1a60",
            "../../etc/passwd",
            &"g".repeat(40),
            "{\"sha\":1}",
        ] {
            assert!(commit_hash(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn states_serialise_in_the_shared_vocabulary() {
        let text =
            serde_json::to_string(&[IssueState::Open, IssueState::InProgress, IssueState::Closed])
                .unwrap();
        assert_eq!(text, r#"["open","in_progress","closed"]"#);
        let text = serde_json::to_string(&PullRequestState::Merged).unwrap();
        assert_eq!(text, r#""merged""#);
    }
}
