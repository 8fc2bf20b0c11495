//! A plugin's output through the daemon, on SQLite and PostgreSQL alike, with the real
//! `chatty` fixture: its log lines (`wasi:logging`) and progress (`job.progress`) reach
//! a `WatchJob` with `output` while the job runs (the job is held halfway by a loopback
//! server that answers only once the test has seen what it waits for), then
//! `honeydew logs` (`--follow` while it runs, `--json`, `--attempt`) and `honeydew wait`
//! on a terminal (a pty from util-linux's `script`), which draws the bar. A flood of
//! 100k lines leaves only the capped tail in the database; lines past the line cap are
//! cut. A component built against the frozen 0.2.0 contract (`elder`) still runs; on
//! PostgreSQL a watch on another node sees the output as it is written.

use std::io::Read;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use honeydew::api::pb::{self, JobStatus};
use honeydew_testkit::TestSchema;
use tonic::transport::Channel;

use crate::support::backend::{Backend, on_both_backends};
use crate::support::hold::Hold;
use crate::support::{
    Daemon, DataDir, PATIENCE, finished, honeydew, honeydew_command, queue, result_text, stdout,
    submit,
};

on_both_backends!(
    a_plugins_progress_and_log_lines_reach_watch_job_and_honeydew_logs,
    a_flood_of_log_lines_leaves_only_the_capped_tail,
    a_component_built_against_wit_0_2_0_still_runs,
);

/// What a watch with output saw.
#[derive(Default)]
struct Seen {
    lines: Vec<pb::LogLine>,
    progress: Vec<(u64, Option<u64>, String)>,
    last: Option<pb::JobUpdate>,
}

impl Seen {
    fn add(&mut self, update: pb::JobUpdate) {
        self.lines.extend(update.log_lines.iter().cloned());
        if let Some(progress) = &update.progress {
            self.progress.push((
                progress.done,
                progress.total,
                progress.message.clone().unwrap_or_default(),
            ));
        }
        self.last = Some(update);
    }

    fn texts(&self) -> Vec<&str> {
        self.lines.iter().map(|line| line.line.as_str()).collect()
    }

    fn halfway(&self, lines: usize) -> bool {
        self.lines.len() >= lines
            && self.progress.last() == Some(&(1, Some(2), "halfway".to_owned()))
    }
}

async fn watch_output(channel: &Channel, id: &str) -> tonic::Streaming<pb::JobUpdate> {
    let request = pb::WatchJobRequest {
        job_id: id.into(),
        output: true,
    };
    queue(channel)
        .watch_job(request)
        .await
        .expect("watch")
        .into_inner()
}

/// Reads `stream` into `seen` until `enough` holds (or, with `None`, to its end).
async fn read_until(
    stream: &mut tonic::Streaming<pb::JobUpdate>,
    seen: &mut Seen,
    enough: Option<&dyn Fn(&Seen) -> bool>,
) {
    let read = async {
        while let Some(update) = stream.message().await.expect("watch stream") {
            seen.add(update);
            if enough.is_some_and(|enough| enough(&*seen)) {
                return;
            }
        }
        assert!(
            enough.is_none(),
            "the watch ended before the output awaited"
        );
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the output came in time");
}

/// A child process whose stdout is read on a thread of its own, as it comes.
struct Reading {
    child: Child,
    text: mpsc::Receiver<String>,
    so_far: String,
}

impl Reading {
    fn spawn(mut command: std::process::Command) -> Reading {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut out = child.stdout.take().expect("stdout");
        let (sender, text) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = out.read(&mut buffer) {
                if n == 0
                    || sender
                        .send(String::from_utf8_lossy(&buffer[..n]).into_owned())
                        .is_err()
                {
                    break;
                }
            }
        });
        Reading {
            child,
            text,
            so_far: String::new(),
        }
    }

    /// Reads until the output holds `needle`; everything so far.
    fn until(&mut self, needle: &str) -> &str {
        let deadline = Instant::now() + PATIENCE;
        while !self.so_far.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.text.recv_timeout(left) {
                Ok(text) => self.so_far.push_str(&text),
                Err(_) => panic!("{needle:?} did not come in time; so far: {}", self.so_far),
            }
        }
        &self.so_far
    }

    /// Waits for the process to exit; its whole output and whether it succeeded.
    fn finish(mut self) -> (String, bool) {
        let (done, outcome) = mpsc::channel();
        let mut child = self.child;
        drop(child.stdin.take());
        std::thread::spawn(move || done.send(child.wait().expect("wait")));
        let status = outcome.recv_timeout(PATIENCE).expect("exited in time");
        while let Ok(text) = self.text.recv_timeout(PATIENCE) {
            self.so_far.push_str(&text);
        }
        (self.so_far, status.success())
    }
}

async fn a_plugins_progress_and_log_lines_reach_watch_job_and_honeydew_logs(postgres: bool) {
    let backend = Backend::start(postgres, &["chatty"], &[]).await;
    let channel = backend.daemon.connect().await;
    let data = backend.data.path().to_owned();
    let hold = Hold::start().await;
    let payload = format!(r#"{{"lines": 25, "hold_url": "{}"}}"#, hold.url);
    let id = submit(&channel, "chatty.talk", &payload).await;
    let mut stream = watch_output(&channel, &id).await;
    let follow = Reading::spawn(honeydew_command(&data, &["logs", &id, "--follow"]));
    // `honeydew wait` on a terminal: `script` gives it a pty for stdin, stdout, stderr.
    let honeydew_bin = env!("CARGO_BIN_EXE_honeydew");
    let mut pty = std::process::Command::new("script");
    pty.args(["-q", "-f", "-e", "-c"])
        .arg(format!(
            "{honeydew_bin} --data-dir {} wait {id}",
            data.display()
        ))
        .arg("/dev/null")
        .env("TERM", "xterm");
    let mut wait = Reading::spawn(pty);

    // Held halfway: every line so far and the progress, while the job runs.
    let mut seen = Seen::default();
    read_until(
        &mut stream,
        &mut seen,
        Some(&|seen: &Seen| seen.halfway(25)),
    )
    .await;
    assert_eq!(
        seen.last.as_ref().unwrap().status(),
        JobStatus::Running,
        "the output came while the job ran"
    );
    let expected: Vec<String> = (1..=25).map(|n| format!("line {n}")).collect();
    assert_eq!(seen.texts(), expected, "every line, in order");
    assert!(seen.lines.iter().all(|line| line.attempt == 1));
    assert_eq!(seen.lines[9].level, "warn");
    assert_eq!(seen.lines[0].level, "info");
    let seqs: Vec<u64> = seen.lines.iter().map(|line| line.seq).collect();
    assert_eq!(seqs, (1..=25).collect::<Vec<u64>>());
    let status = crate::support::get(&channel, &id).await;
    let progress = status.progress.expect("GetJobStatus shows the progress");
    assert_eq!(
        (progress.done, progress.total, progress.message.as_deref()),
        (1, Some(2), Some("halfway"))
    );
    let followed = tokio::task::spawn_blocking(move || {
        let mut follow = follow;
        follow.until("line 25");
        follow
    })
    .await
    .unwrap();
    let waiting = tokio::task::spawn_blocking(move || {
        wait.until("1/2 halfway");
        wait
    })
    .await
    .unwrap();

    hold.release();
    read_until(&mut stream, &mut seen, None).await;
    let last = seen.last.clone().expect("updates");
    assert_eq!(last.status(), JobStatus::Completed);
    let job = last.job.expect("the terminal update carries the job");
    assert_eq!(result_text(&job), r#"{"lines":25}"#);
    let reported = job
        .progress
        .as_ref()
        .expect("the last job carries its progress");
    assert_eq!((reported.done, reported.message()), (2, "done"));
    assert_eq!(
        seen.texts().last().copied(),
        Some("finished after 25 lines"),
        "the whole log before the terminal update"
    );
    assert_eq!(seen.lines.len(), 26);
    assert_eq!(seen.progress.last(), Some(&(2, Some(2), "done".to_owned())));

    let (followed, ok) = followed.finish();
    assert!(ok, "logs --follow ends with the job: {followed}");
    let followed_lines: Vec<&str> = followed.lines().collect();
    assert_eq!(followed_lines.len(), 26, "{followed}");
    assert!(
        followed_lines[0].ends_with("INFO  [attempt 1] line 1"),
        "{followed}"
    );
    assert!(
        followed_lines[9].ends_with("WARN  [attempt 1] line 10"),
        "{followed}"
    );
    assert!(followed_lines[25].ends_with("[attempt 1] finished after 25 lines"));
    let (waited, ok) = waiting.finish();
    assert!(ok, "wait succeeds: {waited}");
    assert!(
        waited.contains("[##########----------] 1/2 halfway"),
        "{waited:?}"
    );
    assert!(
        waited.contains(r#""lines": 25"#),
        "the result on stdout: {waited:?}"
    );

    // After the end: the whole log, as text and as JSON, and by attempt.
    let printed = honeydew(&data, &["logs", &id], "");
    assert!(printed.status.success(), "{printed:?}");
    assert_eq!(
        stdout(&printed),
        followed,
        "logs prints what --follow printed"
    );
    let printed = honeydew(&data, &["--json", "logs", &id, "--attempt", "1"], "");
    let records: Vec<serde_json::Value> = stdout(&printed)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    assert_eq!(records.len(), 26);
    assert_eq!(records[9]["level"], "warn");
    assert_eq!(records[9]["line"], "line 10");
    assert_eq!(records[9]["seq"], 10);
    assert_eq!(records[9]["attempt"], 1);
    assert!(records[0]["at"].as_str().unwrap().ends_with('Z'));
    let none = honeydew(&data, &["logs", &id, "--attempt", "2"], "");
    assert!(none.status.success());
    assert_eq!(stdout(&none), "", "no second attempt, no lines");
    let status = honeydew(&data, &["--json", "status", &id], "");
    let status: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(status["progress"]["done"], 2);
    assert_eq!(status["progress"]["message"], "done");
}

/// The lines of job `id`'s log, read in pages from `GetJobLog`.
async fn whole_log(channel: &Channel, id: &str) -> Vec<pb::LogLine> {
    let mut lines = Vec::new();
    let mut after = (0, 0);
    loop {
        let page = queue(channel)
            .get_job_log(pb::GetJobLogRequest {
                job_id: id.into(),
                after_attempt: after.0,
                after_seq: after.1,
                limit: 700,
                ..Default::default()
            })
            .await
            .expect("get log")
            .into_inner();
        lines.extend(page.lines);
        if (page.next_after_attempt, page.next_after_seq) == (0, 0) {
            return lines;
        }
        after = (page.next_after_attempt, page.next_after_seq);
    }
}

async fn a_flood_of_log_lines_leaves_only_the_capped_tail(postgres: bool) {
    let backend = Backend::start(postgres, &["chatty"], &[]).await;
    let channel = backend.daemon.connect().await;
    // The same job without its lines, for the figure's baseline.
    let started = Instant::now();
    let quiet = submit(&channel, "chatty.talk", r#"{"lines": 0}"#).await;
    assert_eq!(
        finished(&channel, &quiet).await.status(),
        JobStatus::Completed
    );
    let baseline = started.elapsed();
    let started = Instant::now();
    let id = submit(&channel, "chatty.talk", r#"{"lines": 100000}"#).await;
    let job = finished(&channel, &id).await;
    let elapsed = started.elapsed();
    assert_eq!(job.status(), JobStatus::Completed, "{:?}", job.error);
    eprintln!(
        "100000 log lines from a plugin on {}: job done in {elapsed:?} (without them: {baseline:?})",
        if postgres { "postgres" } else { "sqlite" }
    );
    let lines = whole_log(&channel, &id).await;
    assert_eq!(lines.len(), 2000, "the line cap holds in the database");
    assert_eq!(lines[0].line, "line 98002", "the tail is kept");
    assert_eq!(lines[0].seq, 98002);
    assert_eq!(lines.last().unwrap().line, "finished after 100000 lines");
    assert!(lines.windows(2).all(|pair| pair[0].seq + 1 == pair[1].seq));

    // Lines past 2 KiB are cut, and the attempt keeps at most 256 KiB of them.
    let id = submit(&channel, "chatty.talk", r#"{"lines": 300, "long": true}"#).await;
    let job = finished(&channel, &id).await;
    assert_eq!(job.status(), JobStatus::Completed, "{:?}", job.error);
    let lines = whole_log(&channel, &id).await;
    assert!(lines.iter().all(|line| line.line.len() <= 2048));
    assert!(lines[0].line.starts_with("line ") && lines[0].line.len() == 2048);
    let bytes: usize = lines.iter().map(|line| line.line.len()).sum();
    assert!(bytes <= 256 * 1024, "{bytes} bytes kept");
    assert!(bytes > 250 * 1024, "{bytes} bytes kept: the cap, not less");
    assert_eq!(lines.last().unwrap().line, "finished after 300 lines");
}

async fn a_component_built_against_wit_0_2_0_still_runs(postgres: bool) {
    let backend = Backend::start(postgres, &["elder", "chatty"], &[]).await;
    let channel = backend.daemon.connect().await;
    let echo = submit(&channel, "elder.echo", r#"{"from": "0.2.0"}"#).await;
    let snoozes = submit(&channel, "elder.snoozes", "{}").await;
    let talk = submit(&channel, "chatty.talk", r#"{"lines": 1}"#).await;
    let echo = finished(&channel, &echo).await;
    assert_eq!(echo.status(), JobStatus::Completed, "{:?}", echo.error);
    assert_eq!(result_text(&echo), r#"{"from": "0.2.0"}"#);
    let snoozes = finished(&channel, &snoozes).await;
    assert_eq!(
        snoozes.status(),
        JobStatus::Completed,
        "{:?}",
        snoozes.error
    );
    assert_eq!(
        result_text(&snoozes),
        r#"{"snooze_count":0}"#,
        "0.2.0's job import"
    );
    let talk = finished(&channel, &talk).await;
    assert_eq!(
        talk.status(),
        JobStatus::Completed,
        "a 0.2.1 component beside it"
    );
    assert!(whole_log(&channel, &echo.id).await.is_empty());
}

/// On PostgreSQL, a watch on a node that does not run the job (it has no `chatty`
/// plugin, so it never claims it) sees the output as the running node writes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_another_postgres_node_sees_the_output() {
    let schema = TestSchema::create().await;
    let args = ["--database-url", schema.url(), "--database-pool-size", "4"];
    let runner_data = DataDir::with_plugins(&["chatty"]);
    let runner = Daemon::start(&runner_data, &args);
    let watcher_data = DataDir::with_plugins(&["echo"]);
    let watcher = Daemon::start(&watcher_data, &args);
    let runner_channel = runner.connect().await;
    let watcher_channel = watcher.connect().await;
    let hold = Hold::start().await;
    let payload = format!(r#"{{"lines": 5, "hold_url": "{}"}}"#, hold.url);
    let id = submit(&runner_channel, "chatty.talk", &payload).await;
    let mut stream = watch_output(&watcher_channel, &id).await;
    let mut seen = Seen::default();
    read_until(&mut stream, &mut seen, Some(&|seen: &Seen| seen.halfway(5))).await;
    let expected: Vec<String> = (1..=5).map(|n| format!("line {n}")).collect();
    assert_eq!(seen.texts(), expected);
    hold.release();
    read_until(&mut stream, &mut seen, None).await;
    assert_eq!(seen.last.as_ref().unwrap().status(), JobStatus::Completed);
    assert_eq!(seen.texts().last().copied(), Some("finished after 5 lines"));
    assert_eq!(seen.progress.last(), Some(&(2, Some(2), "done".to_owned())));
}
