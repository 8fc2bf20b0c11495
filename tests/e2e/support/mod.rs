//! Fixtures: a data directory with plugins, the daemon process, gRPC clients, the CLI,
//! a small HTTP server standing in for external APIs, archives for the fake forges,
//! and a checker of the plugins' result schemas.

pub mod archive;
pub mod backend;
mod daemon;
pub mod hold;
mod http;
pub mod listener;
mod schema;

use std::path::PathBuf;
use std::time::Duration;

use honeydew::api::CLIENT_MAX_RESPONSE_BYTES;
use honeydew::api::pb::{self, queue_client::QueueClient};
use tonic::transport::Channel;

pub use daemon::{Daemon, DataDir, daemon_command};
pub use http::{HttpStub, Received, Reply};
pub use schema::assert_matches_schema;

/// How long any one wait in a test may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Where `scripts/build-plugins.sh` puts the plugins.
pub fn built_plugins() -> PathBuf {
    match std::env::var_os("HONEYDEW_TEST_PLUGINS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"),
    }
}

/// The Python venv with grpcio and grpcurl that `scripts/setup.sh` installs; panics,
/// saying how to install it, when it is missing.
pub fn python_venv() -> PathBuf {
    let venv = match std::env::var_os("HONEYDEW_TEST_PYTHON_VENV") {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/honeydew/grpc-venv")
        }
    };
    assert!(
        venv.join("bin/python").exists() && venv.join("bin/grpcurl").exists(),
        "no Python venv with grpcio and grpcurl at {}: run scripts/setup.sh",
        venv.display()
    );
    venv
}

pub fn queue(channel: &Channel) -> QueueClient<Channel> {
    QueueClient::new(channel.clone()).max_decoding_message_size(CLIENT_MAX_RESPONSE_BYTES)
}

/// Submits `command` with `payload`; returns the job id.
pub async fn submit(channel: &Channel, command: &str, payload: &str) -> String {
    let request = pb::SubmitJobRequest {
        command: command.into(),
        payload: payload.as_bytes().to_vec(),
        ..Default::default()
    };
    queue(channel)
        .submit_job(request)
        .await
        .unwrap_or_else(|status| panic!("submit {command}: {status}"))
        .into_inner()
        .job_id
}

/// Every update `WatchJob` sends for `id`, to the end of the stream.
pub async fn watch_to_end(channel: &Channel, id: &str) -> Vec<pb::JobUpdate> {
    let request = pb::WatchJobRequest {
        job_id: id.into(),
        ..Default::default()
    };
    let mut stream = queue(channel)
        .watch_job(request)
        .await
        .expect("watch")
        .into_inner();
    let mut updates = Vec::new();
    let collect = async {
        while let Some(update) = stream.message().await.expect("watch stream") {
            updates.push(update);
        }
    };
    tokio::time::timeout(PATIENCE, collect)
        .await
        .unwrap_or_else(|_| panic!("job {id} did not finish in time"));
    updates
}

/// Watches job `id` until an update satisfies `reached`; every update until then, that
/// one included.
pub async fn watch_until(
    channel: &Channel,
    id: &str,
    reached: impl Fn(&pb::JobUpdate) -> bool,
) -> Vec<pb::JobUpdate> {
    let request = pb::WatchJobRequest {
        job_id: id.into(),
        ..Default::default()
    };
    let mut stream = queue(channel)
        .watch_job(request)
        .await
        .expect("watch")
        .into_inner();
    let mut updates = Vec::new();
    let wait = async {
        while let Some(update) = stream.message().await.expect("watch stream") {
            let done = reached(&update);
            updates.push(update);
            if done {
                return;
            }
        }
        panic!("watch of {id} ended before the state awaited");
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("job {id} did not reach the state awaited in time"));
    updates
}

/// Waits for job `id` to finish and returns it as it ended.
pub async fn finished(channel: &Channel, id: &str) -> pb::Job {
    let updates = watch_to_end(channel, id).await;
    let last = updates.last().expect("at least one update");
    last.job.clone().expect("the last update carries the job")
}

/// Waits until job `id` is running.
pub async fn running(channel: &Channel, id: &str) {
    let request = pb::WatchJobRequest {
        job_id: id.into(),
        ..Default::default()
    };
    let mut stream = queue(channel)
        .watch_job(request)
        .await
        .expect("watch")
        .into_inner();
    let wait = async {
        while let Some(update) = stream.message().await.expect("watch stream") {
            match update.status() {
                pb::JobStatus::Running => return,
                pb::JobStatus::Pending => continue,
                other => panic!("job {id} ended {other:?} before it was seen running"),
            }
        }
        panic!("watch of {id} ended before the job ran");
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("job {id} did not start in time"));
}

pub async fn get(channel: &Channel, id: &str) -> pb::Job {
    let request = pb::GetJobStatusRequest { job_id: id.into() };
    queue(channel)
        .get_job_status(request)
        .await
        .expect("get job")
        .into_inner()
        .job
        .expect("a job")
}

/// The result as text.
pub fn result_text(job: &pb::Job) -> String {
    String::from_utf8(job.result.clone().unwrap_or_default()).expect("utf-8 result")
}

/// Runs the `honeydew` CLI against `data_dir` with `stdin`; bounded by [`PATIENCE`].
pub fn honeydew(data_dir: &std::path::Path, args: &[&str], stdin: &str) -> std::process::Output {
    run_cli(honeydew_command(data_dir, args), stdin)
}

/// A `honeydew` CLI command against `data_dir`, for tests that adjust it before
/// [`run_cli`].
pub fn honeydew_command(data_dir: &std::path::Path, args: &[&str]) -> std::process::Command {
    use std::process::Stdio;

    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_honeydew"));
    command
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("HONEYDEW_SOCKET")
        .env_remove("HONEYDEW_TCP")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs a CLI `command` with `stdin`; bounded by [`PATIENCE`].
pub fn run_cli(mut command: std::process::Command, stdin: &str) -> std::process::Output {
    use std::io::Write;

    let mut child = command.spawn().expect("spawn honeydew");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output().expect("run honeydew")));
    outcome
        .recv_timeout(PATIENCE)
        .unwrap_or_else(|_| panic!("{command:?} did not finish in time"))
}

/// stdout as text.
pub fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
