//! The job's workspace end to end (issue 10, item 3), with the `digger` fixture: what a
//! plugin sees with and without the manifest's grant, hostile archives refused with
//! nothing left outside or behind, and the workspace's life: kept by a completed job,
//! gone with a failed attempt, a cancel, retention, and at start-up when nothing keeps
//! it. Archives come from a loopback stub; a second path of it, the "verdict", decides
//! how the attempt ends after unpacking and tells the test that unpacking is done.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use honeydew::api::pb::{self, JobStatus};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::support::archive::{Entry, forge_archive, tar_gz, tree};
use crate::support::{
    Daemon, DataDir, HttpStub, PATIENCE, Reply, finished, honeydew, result_text, stderr, stdout,
    submit,
};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

const FILES: &[(&str, &str)] = &[
    ("README.md", "# dug up\n"),
    ("src/lib.rs", "pub fn answer() -> u32 {\n    42\n}\n"),
];

/// An archive server: `/repo.tar.gz` (a forge's archive of [`FILES`]),
/// `/hostile/NAME.tar.gz` (the archives of [`hostile`]), and `/verdict`, which
/// answers `verdicts` in turn (the last one from then on) and reports each call on
/// the returned channel.
async fn archive_server(verdicts: &[&str]) -> (HttpStub, mpsc::UnboundedReceiver<()>) {
    let verdicts: Vec<String> = verdicts.iter().map(|v| (*v).to_owned()).collect();
    let asked = Arc::new(AtomicUsize::new(0));
    let (told, told_receiver) = mpsc::unbounded_channel();
    let stub = HttpStub::start_replying(move |request, _| {
        let path = request.line.split(' ').nth(1).unwrap_or_default();
        if path == "/repo.tar.gz" {
            return Reply::bytes(
                200,
                "application/x-gzip",
                forge_archive("repo-0123456", SHA, FILES, &[]),
            );
        }
        if path == "/verdict" {
            let n = asked.fetch_add(1, Ordering::SeqCst);
            let _ = told.send(());
            let verdict = verdicts
                .get(n)
                .or(verdicts.last())
                .cloned()
                .unwrap_or_default();
            return Reply::bytes(200, "text/plain", verdict.into_bytes());
        }
        if let Some(name) = path
            .strip_prefix("/hostile/")
            .and_then(|rest| rest.strip_suffix(".tar.gz"))
            && let Some(entries) = hostile(name)
        {
            return Reply::bytes(200, "application/x-gzip", tar_gz(&entries));
        }
        Reply::new(404, "no such archive")
    })
    .await;
    (stub, told_receiver)
}

/// Where the absolute-path archive tries to write.
fn absolute_target() -> String {
    format!("/tmp/honeydew-e2e-absolute-{}", std::process::id())
}

/// The hostile archives, by name, with what the refusal says. The digger's manifest
/// caps an archive at 1 MiB and 1000 entries.
fn hostile_cases() -> Vec<(&'static str, String)> {
    vec![
        (
            "escape",
            "archive entry \"top/../../escape\" climbs out with \"..\": refused".into(),
        ),
        (
            "absolute",
            format!(
                "archive entry \"{}\" is an absolute path: refused",
                absolute_target()
            ),
        ),
        (
            "symlink",
            "archive entry \"etc/honeydew-e2e\" lies under \"etc\", which the archive holds as a link: refused".into(),
        ),
        ("bomb", "the archive holds more than 1000 entries".into()),
        (
            "gzip-bomb",
            "the archive unpacks to more than 1048576 bytes (the workspace's max_bytes), at \"zeros\": refused".into(),
        ),
        (
            "device",
            "archive entry \"top/sda\" is a device file, which is never unpacked: refused".into(),
        ),
    ]
}

/// The entries of hostile archive `name`.
fn hostile(name: &str) -> Option<Vec<Entry>> {
    Some(match name {
        "escape" => vec![
            Entry::file("top/README.md", "fine"),
            Entry::file("top/../../escape", "out"),
        ],
        "absolute" => vec![Entry::file(&absolute_target(), "out")],
        "symlink" => vec![
            Entry::symlink("top/etc", "/etc"),
            Entry::file("top/etc/honeydew-e2e", "out"),
        ],
        // 10 000 files against a cap of 1000 entries.
        "bomb" => (0..10_000)
            .map(|n| Entry::file(&format!("top/f{n}"), "x"))
            .collect(),
        // 64 MiB of zeros, about 64 KiB gzipped, against a cap of 1 MiB.
        "gzip-bomb" => vec![Entry::file("top/zeros", vec![0u8; 64 * 1024 * 1024])],
        "device" => vec![Entry::file("top/README.md", "fine"), device("top/sda")],
        _ => return None,
    })
}

fn device(path: &str) -> Entry {
    Entry::special(path, tar::EntryType::Block)
}

/// Runs `command` with `payload` to its end on `daemon`.
async fn run(daemon: &Daemon, command: &str, payload: Value) -> pb::Job {
    let channel = daemon.connect().await;
    let id = submit(&channel, command, &payload.to_string()).await;
    finished(&channel, &id).await
}

fn result_json(job: &pb::Job) -> Value {
    assert_eq!(job.status(), JobStatus::Completed, "{:?}", job.error);
    serde_json::from_str(&result_text(job)).expect("a JSON result")
}

/// The entries of `<data>/workspaces` besides the trash.
fn workspaces(data: &DataDir) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data.path().join("workspaces"))
        .expect("the workspaces directory")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != ".trash")
        .collect();
    names.sort();
    names
}

/// `digger.unpack` of the stub's `/repo.tar.gz`, its top directory stripped, with
/// `/verdict` asked afterwards.
fn unpack_repo(stub: &HttpStub) -> Value {
    json!({
        "url": format!("{}/repo.tar.gz", stub.base_url),
        "strip": 1,
        "verdict_url": format!("{}/verdict", stub.base_url),
    })
}

/// The plugin sees the files the daemon unpacked at `/workspace`, nothing else, and
/// cannot change them; the completed job keeps them at `<data>/workspaces/<job-id>`.
#[tokio::test(flavor = "multi_thread")]
async fn a_granted_plugin_sees_the_unpacked_files_and_nothing_else() {
    let (stub, _told) = archive_server(&["ok"]).await;
    let data = DataDir::with_plugins(&["digger"]);
    let daemon = Daemon::start(&data, &[]);

    let job = run(&daemon, "digger.unpack", unpack_repo(&stub)).await;

    let result = result_json(&job);
    let workspace = data.path().join("workspaces").join(&job.id);
    assert_eq!(result["before"], json!([]), "an attempt starts empty");
    assert_eq!(
        result["seen"],
        json!(["README.md", "src/", "src/lib.rs"]),
        "the plugin sees what was unpacked"
    );
    assert_eq!(result["readme"], "# dug up\n");
    let summary = &result["summary"];
    assert_eq!(summary["host_path"], workspace.display().to_string());
    assert_eq!(summary["guest_path"], "/workspace");
    assert_eq!(summary["files"], 2);
    assert_eq!(summary["directories"], 1);
    let bytes: usize = FILES.iter().map(|(_, contents)| contents.len()).sum();
    assert_eq!(summary["bytes"], bytes);
    assert_eq!(summary["skipped_links"], 0);
    assert_eq!(tree(&workspace), ["README.md", "src/", "src/lib.rs"]);

    let look = result_json(&run(&daemon, "digger.look", json!({})).await);
    assert!(
        look["root"].as_str().unwrap().starts_with("error"),
        "{look}"
    );
    assert_eq!(look["workspace"], "ok: 0 entries", "its own, empty: {look}");
    assert!(
        look["passwd"].as_str().unwrap().starts_with("error"),
        "{look}"
    );
    assert!(
        look["escape"].as_str().unwrap().starts_with("error"),
        "{look}"
    );
    assert!(
        look["write"].as_str().unwrap().starts_with("error"),
        "read-only: {look}"
    );
}

/// No `[workspace]` in the manifest: no filesystem at all, and `fetch-archive` is
/// refused before any request goes out, saying how to grant one.
#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_without_the_workspace_grant_sees_no_filesystem_and_cannot_fetch_archives() {
    let (stub, _told) = archive_server(&["ok"]).await;
    let data = DataDir::with_plugins(&["digger"]);
    std::fs::write(
        data.manifest("digger"),
        "[network]\nallowed_hosts = [\"http://127.0.0.1:*\"]\n",
    )
    .unwrap();
    let daemon = Daemon::start(&data, &[]);

    let look = result_json(&run(&daemon, "digger.look", json!({})).await);
    for probe in ["root", "workspace", "passwd", "escape", "write"] {
        assert!(
            look[probe].as_str().unwrap().starts_with("error"),
            "{probe}: {look}"
        );
    }
    let job = run(&daemon, "digger.unpack", unpack_repo(&stub)).await;
    assert_eq!(job.status(), JobStatus::Failed);
    assert_eq!(job.retry_count, 0);
    assert_eq!(
        job.error.as_deref(),
        Some(
            "plugin \"digger\" has no workspace: grant one with `[workspace] enabled = true` in its manifest"
        )
    );
    assert!(stub.received().is_empty(), "nothing was downloaded");
    assert!(workspaces(&data).is_empty());
}

/// `fetch-archive` goes out through the job's own egress policy: a redirect to a host
/// the manifest does not grant (`localhost` is not `127.0.0.1`) is never followed, the
/// job ends `egress_denied` naming the hop, and nothing is unpacked.
#[tokio::test(flavor = "multi_thread")]
async fn an_archive_redirected_to_a_host_not_granted_is_egress_denied() {
    let (archives, _told) = archive_server(&["ok"]).await;
    let port = archives.base_url.rsplit(':').next().unwrap().to_owned();
    let elsewhere = format!("http://localhost:{port}/repo.tar.gz");
    let redirecting = HttpStub::start_replying(move |_, _| Reply::redirect(302, &elsewhere)).await;
    let data = DataDir::with_plugins(&["digger"]);
    let daemon = Daemon::start(&data, &[]);

    let job = run(
        &daemon,
        "digger.unpack",
        json!({"url": format!("{}/moved.tar.gz", redirecting.base_url), "strip": 1}),
    )
    .await;

    assert_eq!(job.status(), JobStatus::Failed);
    assert_eq!(job.error_kind.as_deref(), Some("egress_denied"));
    let error = job.error.clone().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "http://localhost:{port}/repo.tar.gz (a redirect from"
        )),
        "{error}"
    );
    assert!(archives.received().is_empty(), "the hop was never sent");
    assert!(workspaces(&data).is_empty());
}

/// Each hostile archive is refused with a message naming what and where; nothing is
/// written outside the workspace, and a plugin that carries on after the refusal finds
/// its workspace empty (the partial tree is gone). A job that does not carry on fails
/// for good and keeps no workspace.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_archives_are_refused_and_leave_nothing_behind() {
    let (stub, _told) = archive_server(&["ok"]).await;
    let data = DataDir::with_plugins(&["digger"]);
    let daemon = Daemon::start(&data, &[]);

    for (name, expected) in hostile_cases() {
        let url = format!("{}/hostile/{name}.tar.gz", stub.base_url);
        let strip = if name == "absolute" { 0 } else { 1 };
        let job = run(
            &daemon,
            "digger.unpack",
            json!({"url": url, "strip": strip, "tolerate": true}),
        )
        .await;
        let result = result_json(&job);
        let refused = result["refused"].as_str().expect("refused");
        assert!(refused.contains(&expected), "{name}: {refused}");
        assert!(refused.starts_with("fetch-archive: "), "{name}: {refused}");
        assert_eq!(
            result["seen"],
            json!([]),
            "{name}: the partial tree is gone"
        );
        let workspace = data.path().join("workspaces").join(&job.id);
        assert!(tree(&workspace).is_empty(), "{name}");
    }
    for outside in [
        data.path().join("escape"),
        data.path().join("workspaces/escape"),
        std::path::PathBuf::from(absolute_target()),
        std::path::PathBuf::from("/etc/honeydew-e2e"),
    ] {
        assert!(!outside.exists(), "{} was written", outside.display());
    }

    let job = run(
        &daemon,
        "digger.unpack",
        json!({"url": format!("{}/hostile/bomb.tar.gz", stub.base_url), "strip": 1}),
    )
    .await;
    assert_eq!(job.status(), JobStatus::Failed);
    assert_eq!(job.retry_count, 0, "a refused archive is not retried");
    assert!(
        job.error
            .as_deref()
            .unwrap_or_default()
            .contains("the archive holds more than 1000 entries"),
        "{:?}",
        job.error
    );
    assert!(!data.path().join("workspaces").join(&job.id).exists());
}

/// An attempt that fails takes its workspace with it; the retry starts with an empty
/// one, and the completed job keeps the retry's files.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_attempt_leaves_nothing_and_the_retry_starts_clean() {
    let (stub, _told) = archive_server(&["retry", "ok"]).await;
    let data = DataDir::with_plugins(&["digger"]);
    data.configure("[retry]\nbase_ms = 10\njitter = 0.0\n");
    let daemon = Daemon::start(&data, &[]);

    let job = run(&daemon, "digger.unpack", unpack_repo(&stub)).await;

    let result = result_json(&job);
    assert_eq!(job.retry_count, 1);
    assert_eq!(result["before"], json!([]), "the retry started clean");
    let workspace = data.path().join("workspaces").join(&job.id);
    assert_eq!(tree(&workspace), ["README.md", "src/", "src/lib.rs"]);
}

/// A job that fails for good keeps no workspace: a failed attempt's files are not a
/// result.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_fails_for_good_keeps_no_workspace() {
    let (stub, _told) = archive_server(&["fail"]).await;
    let data = DataDir::with_plugins(&["digger"]);
    let daemon = Daemon::start(&data, &[]);

    let job = run(&daemon, "digger.unpack", unpack_repo(&stub)).await;

    assert_eq!(job.status(), JobStatus::Failed);
    assert_eq!(job.error.as_deref(), Some("the verdict says: fail"));
    assert!(workspaces(&data).is_empty());
}

/// `honeydew cancel` of a running job whose workspace is full: once the job is
/// cancelled, its workspace is gone.
#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_running_job_removes_its_workspace() {
    let (stub, mut told) = archive_server(&["spin"]).await;
    let data = DataDir::with_plugins(&["digger"]);
    let daemon = Daemon::start(&data, &[]);
    let channel = daemon.connect().await;
    let id = submit(&channel, "digger.unpack", &unpack_repo(&stub).to_string()).await;
    tokio::time::timeout(PATIENCE, told.recv())
        .await
        .expect("the archive was unpacked in time");
    let workspace = data.path().join("workspaces").join(&id);
    assert_eq!(tree(&workspace), ["README.md", "src/", "src/lib.rs"]);

    let cancel = honeydew(data.path(), &["cancel", &id], "");
    assert!(cancel.status.success(), "{}", stderr(&cancel));
    let job = finished(&channel, &id).await;

    assert_eq!(job.status(), JobStatus::Cancelled);
    assert!(!workspace.exists(), "the cancelled job's workspace is gone");
    assert!(workspaces(&data).is_empty());
}

/// `honeydew prune` removes a pruned job's workspace with its row, and only then.
#[tokio::test(flavor = "multi_thread")]
async fn pruning_a_job_removes_its_workspace() {
    let (stub, _told) = archive_server(&["ok"]).await;
    let data = DataDir::with_plugins(&["digger"]);
    let daemon = Daemon::start(&data, &[]);
    let job = run(&daemon, "digger.unpack", unpack_repo(&stub)).await;
    assert_eq!(job.status(), JobStatus::Completed);
    let workspace = data.path().join("workspaces").join(&job.id);

    let kept = honeydew(data.path(), &["prune", "--older-than", "1h"], "");
    assert!(kept.status.success(), "{}", stderr(&kept));
    assert!(workspace.join("README.md").exists(), "not old enough to go");

    let pruned = honeydew(data.path(), &["prune", "--older-than", "0s"], "");
    assert!(pruned.status.success(), "{}", stderr(&pruned));
    assert_eq!(stdout(&pruned), "deleted 1 finished jobs\n");
    assert!(!workspace.exists(), "gone with its job");
    drop(daemon);
}

/// The daemon's own pruner, past the configured retention, takes the workspace too.
#[tokio::test(flavor = "multi_thread")]
async fn the_pruner_removes_the_workspaces_of_jobs_past_their_retention() {
    let (stub, _told) = archive_server(&["ok"]).await;
    let data = DataDir::with_plugins(&["digger"]);
    let daemon = Daemon::start(&data, &[]);
    let job = run(&daemon, "digger.unpack", unpack_repo(&stub)).await;
    assert_eq!(job.status(), JobStatus::Completed);
    let workspace = data.path().join("workspaces").join(&job.id);
    let (status, _) = daemon.terminate();
    assert!(status.success());
    assert!(
        workspace.exists(),
        "a restart keeps a completed job's workspace"
    );

    data.configure("[retention]\ncompleted = \"1ms\"\n");
    let mut daemon = Daemon::start(&data, &[]);
    let line = "removed the workspaces of pruned jobs";
    if !daemon.stderr().contains(line) {
        assert!(daemon.wait_for_line(line), "{}", daemon.stderr());
    }
    assert!(!workspace.exists());
}

/// After a crash: a workspace of a job that no longer exists and a tree left in the
/// trash are removed before the daemon serves; what is not a job's is left alone.
/// The interrupted job's workspace goes too, and its retry starts clean.
#[tokio::test(flavor = "multi_thread")]
async fn workspaces_that_no_job_keeps_are_removed_at_start() {
    let (stub, mut told) = archive_server(&["spin", "ok"]).await;
    let data = DataDir::with_plugins(&["digger"]);
    let daemon = Daemon::start(&data, &[]);
    let channel = daemon.connect().await;
    let id = submit(&channel, "digger.unpack", &unpack_repo(&stub).to_string()).await;
    tokio::time::timeout(PATIENCE, told.recv())
        .await
        .expect("the archive was unpacked in time");
    daemon.kill();
    let root = data.path().join("workspaces");
    assert!(
        root.join(&id).join("README.md").exists(),
        "left by the kill"
    );
    let orphan = root.join(uuid::Uuid::now_v7().to_string());
    std::fs::create_dir_all(orphan.join("sub")).unwrap();
    std::fs::write(orphan.join("sub/file"), "x").unwrap();
    std::fs::create_dir_all(root.join(".trash/left-over")).unwrap();
    std::fs::write(root.join("notes.txt"), "the operator's").unwrap();

    let mut daemon = Daemon::start(&data, &[]);

    assert!(
        daemon
            .stderr()
            .contains("removed workspaces that no job keeps"),
        "{}",
        daemon.stderr()
    );
    assert!(!orphan.exists(), "a workspace no job keeps");
    assert_eq!(
        std::fs::read_dir(root.join(".trash")).unwrap().count(),
        0,
        "the trash is empty"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("notes.txt")).unwrap(),
        "the operator's"
    );
    let channel = daemon.connect().await;
    let job = finished(&channel, &id).await;
    let result = result_json(&job);
    assert_eq!(result["before"], json!([]), "the retry started clean");
    assert_eq!(tree(&root.join(&id)), ["README.md", "src/", "src/lib.rs"]);
}

/// A component built against the frozen 0.1.0 contract (no SDK, no workspace import)
/// runs in the 0.2.0 daemon beside 0.2.0 plugins: its commands, its config, its
/// classified errors.
#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_built_against_wit_0_1_0_still_runs() {
    let data = DataDir::with_plugins(&["legacy", "digger"]);
    let daemon = Daemon::start(&data, &[]);

    let echo = run(&daemon, "legacy.echo", json!({"still": "works"})).await;
    assert_eq!(echo.status(), JobStatus::Completed, "{:?}", echo.error);
    assert_eq!(result_text(&echo), r#"{"still":"works"}"#);
    let greet = run(&daemon, "legacy.greet", json!({})).await;
    assert_eq!(result_text(&greet), "hello from 0.1.0");
    let plugins = honeydew(data.path(), &["plugins"], "");
    assert!(stdout(&plugins).contains("legacy"), "{}", stdout(&plugins));
    assert!(stdout(&plugins).contains("digger"), "{}", stdout(&plugins));
}
