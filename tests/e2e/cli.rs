//! The `honeydew` command line: output and exit codes, `honeydew daemon` (which execs
//! `honeydewd`), and that its binary links none of the daemon.

use std::process::Command;

use serde_json::{Value, json};

use crate::support::{Daemon, DataDir, daemon_command, honeydew, stderr, stdout};

#[test]
fn submit_wait_prints_the_result_as_pretty_json_and_exits_zero() {
    let data = DataDir::with_plugins(&["echo"]);
    let _daemon = Daemon::start(&data, &[]);

    let output = honeydew(
        data.path(),
        &[
            "submit",
            "echo.echo",
            "--payload",
            r#"{"a":[1,2]}"#,
            "--wait",
        ],
        "",
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "{\n  \"a\": [\n    1,\n    2\n  ]\n}\n");
    // Not a terminal: progress is plain lines on stderr, ending with the final state.
    let progress = stderr(&output);
    assert!(
        progress
            .lines()
            .last()
            .unwrap()
            .contains("completed · attempt 1"),
        "{progress}"
    );
}

#[test]
fn payloads_come_from_stdin_or_a_file_and_raw_results_print_raw() {
    let data = DataDir::with_plugins(&["echo"]);
    let _daemon = Daemon::start(&data, &[]);

    let output = honeydew(
        data.path(),
        &["submit", "echo.echo", "--payload", "-", "--wait"],
        "[true]",
    );
    assert_eq!(stdout(&output), "[\n  true\n]\n", "{}", stderr(&output));

    let file = data.path().join("payload.json");
    std::fs::write(&file, r#""just a string""#).unwrap();
    let argument = format!("@{}", file.display());
    let output = honeydew(
        data.path(),
        &["submit", "echo.echo", "--payload", &argument, "--wait"],
        "",
    );
    assert_eq!(
        stdout(&output),
        "\"just a string\"\n",
        "{}",
        stderr(&output)
    );
}

#[test]
fn exit_codes_tell_failure_usage_and_unreachable_apart() {
    let data = DataDir::with_plugins(&["echo", "permanent"]);
    let _daemon = Daemon::start(&data, &[]);

    let failed = honeydew(data.path(), &["submit", "permanent.fail", "--wait"], "");
    assert_eq!(failed.status.code(), Some(1));
    assert!(
        stderr(&failed).contains("failed (plugin_error): permanent failure"),
        "{}",
        stderr(&failed)
    );

    let usage = honeydew(data.path(), &["submit"], "");
    assert_eq!(usage.status.code(), Some(2), "{}", stderr(&usage));

    let unknown = honeydew(data.path(), &["submit", "github.comits"], "");
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        stderr(&unknown).contains("no plugin serves \"github.comits\""),
        "{}",
        stderr(&unknown)
    );

    let bad_json = honeydew(
        data.path(),
        &["submit", "echo.echo", "--payload", "{nope"],
        "",
    );
    assert_eq!(bad_json.status.code(), Some(2));
    assert!(
        stderr(&bad_json).contains("payload is not valid JSON"),
        "{}",
        stderr(&bad_json)
    );

    let missing = honeydew(
        data.path(),
        &["status", "0192f0c4-7a3e-7c41-9d2a-5b8f0e6c1d2e"],
        "",
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("not found"));

    let nowhere = DataDir::with_plugins(&[]);
    let unreachable = honeydew(nowhere.path(), &["list"], "");
    assert_eq!(unreachable.status.code(), Some(3));
    let message = stderr(&unreachable);
    assert!(message.contains("cannot reach the daemon at"), "{message}");
    assert!(
        message.contains("start it with `honeydewd` or `honeydew daemon`"),
        "{message}"
    );
}

#[test]
fn status_list_cancel_plugins_and_schedule_speak_text_and_json() {
    let data = DataDir::with_plugins(&["echo", "permanent"]);
    let _daemon = Daemon::start(&data, &[]);
    let submitted = honeydew(
        data.path(),
        &[
            "submit",
            "echo.echo",
            "--payload",
            r#"{"x":1}"#,
            "--priority",
            "5",
            "--wait",
            "--json",
        ],
        "",
    );
    let job: Value = serde_json::from_str(&stdout(&submitted)).unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["status"], "completed");
    assert_eq!(job["result"], json!({"x": 1}));
    assert_eq!(job["priority"], 5);
    let failed = honeydew(data.path(), &["submit", "permanent.fail", "--wait"], "");
    assert_eq!(failed.status.code(), Some(1));

    let status: Value = serde_json::from_str(&stdout(&honeydew(
        data.path(),
        &["status", &id, "--json"],
        "",
    )))
    .unwrap();
    assert_eq!(status["plugin"]["name"], "echo");
    assert_eq!(status["attempt"], 1);
    let text = stdout(&honeydew(data.path(), &["status", &id], ""));
    assert!(text.contains("status     completed"), "{text}");
    assert!(text.contains("result:\n{\n  \"x\": 1\n}"), "{text}");

    let table = stdout(&honeydew(data.path(), &["list"], ""));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("ID "), "{table}");
    let status_column = lines[0].find("STATUS").unwrap();
    assert!(lines[1][status_column..].starts_with("failed"), "{table}");
    assert!(
        lines[2][status_column..].starts_with("completed"),
        "{table}"
    );
    let failed_only = stdout(&honeydew(data.path(), &["list", "--status", "failed"], ""));
    assert_eq!(failed_only.lines().count(), 2, "{failed_only}");
    let echo_json: Value = serde_json::from_str(&stdout(&honeydew(
        data.path(),
        &["list", "--command", "echo.echo", "--json"],
        "",
    )))
    .unwrap();
    assert_eq!(echo_json["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(echo_json["jobs"][0]["id"], id.as_str());

    let cancel = honeydew(data.path(), &["cancel", &id], "");
    assert_eq!(cancel.status.code(), Some(1));
    assert!(
        stderr(&cancel).contains("is already completed and cannot be cancelled"),
        "{}",
        stderr(&cancel)
    );

    let plugins: Value =
        serde_json::from_str(&stdout(&honeydew(data.path(), &["plugins", "--json"], ""))).unwrap();
    let names: Vec<&str> = plugins
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo", "permanent"]);
    assert!(
        plugins[0]["commands"]
            .as_array()
            .unwrap()
            .contains(&json!("echo.echo"))
    );

    let schedules = honeydew(data.path(), &["schedule", "ls"], "");
    assert_eq!(schedules.status.code(), Some(0), "{}", stderr(&schedules));
    assert_eq!(
        stdout(&schedules),
        "NAME  CRON  TZ  COMMAND  MISFIRE  LAST RUN  NEXT RUN\n",
        "no schedules: the header alone"
    );
    let schedules = honeydew(data.path(), &["schedule", "ls", "--json"], "");
    assert_eq!(stdout(&schedules), "[]\n");
}

#[test]
fn honeydew_daemon_runs_the_same_daemon_in_the_foreground() {
    let data = DataDir::with_plugins(&["echo"]);
    let mut command = Command::new(env!("CARGO_BIN_EXE_honeydew"));
    command.arg("--data-dir").arg(data.path()).arg("daemon");
    let reference = daemon_command(data.path(), &[]);
    for (key, value) in reference.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let daemon = Daemon::start_command(command, data.socket());

    let output = honeydew(
        data.path(),
        &["submit", "echo.echo", "--payload", "{}", "--wait"],
        "",
    );
    assert_eq!(stdout(&output), "{}\n", "{}", stderr(&output));
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}

/// `honeydew daemon` runs `honeydewd`; without one beside the CLI or on PATH it says
/// where it looked and what to do, with the shell's "not found" status.
#[test]
fn honeydew_daemon_without_honeydewd_names_where_it_looked() {
    let bin = tempfile::tempdir().unwrap();
    let alone = bin.path().join("honeydew");
    std::fs::copy(env!("CARGO_BIN_EXE_honeydew"), &alone).unwrap();
    let empty_path = tempfile::tempdir().unwrap();
    let output = Command::new(&alone)
        .args(["daemon", "--workers", "1"])
        .env("PATH", empty_path.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(127), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("cannot find honeydewd")
            && message.contains(&bin.path().display().to_string())
            && message.contains("PATH"),
        "{message}"
    );
}

/// The CLI was as big as the daemon (it linked wasmtime, SQLite and PostgreSQL) while
/// it only speaks gRPC. Its binary must name none of their crates; the daemon's binary,
/// checked the same way, shows that the check can see them.
#[test]
fn the_cli_links_no_wasmtime_sqlite_or_postgres() {
    // Crate names as they appear in symbols and panic locations, and SQLite's C API.
    let daemon_only = [
        "wasmtime",
        "cranelift",
        "rusqlite",
        "sqlite3_prepare",
        "tokio_postgres",
        "honeydew_store",
    ];
    let found_in = |binary: &str| -> Vec<&str> {
        let bytes = std::fs::read(binary).unwrap();
        daemon_only
            .into_iter()
            .filter(|needle| memchr::memmem::find(&bytes, needle.as_bytes()).is_some())
            .collect()
    };
    assert_eq!(
        found_in(env!("CARGO_BIN_EXE_honeydewd")),
        daemon_only,
        "the daemon's binary should show every one"
    );
    assert_eq!(
        found_in(env!("CARGO_BIN_EXE_honeydew")),
        Vec::<&str>::new(),
        "the CLI links daemon crates: does host/src/bin/honeydew.rs name more than honeydew_cli, \
         or crates/cli depend on a daemon crate?"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plugins_shows_the_files_it_refused_and_why() {
    // `github` without its token, and a file that is no component at all.
    let data = DataDir::with_plugins(&["echo", "github"]);
    std::fs::write(data.path().join("plugins/broken.wasm"), b"not a component").unwrap();
    let _daemon = Daemon::start(&data, &[]);
    let listed = honeydew(data.path(), &["plugins"], "");
    assert!(listed.status.success(), "{}", stderr(&listed));
    let text = stdout(&listed);
    assert!(text.contains("not loaded:"), "{text}");
    let refused: Vec<&str> = text
        .lines()
        .skip_while(|line| *line != "not loaded:")
        .skip(1)
        .filter(|line| line.starts_with("  /"))
        .collect();
    assert_eq!(refused.len(), 2, "{text}");
    assert!(refused[0].contains("broken.wasm: "), "{text}");
    assert!(
        refused[1].contains("github.wasm: ") && refused[1].contains("GITHUB_TOKEN"),
        "{text}"
    );

    let json: Value =
        serde_json::from_str(&stdout(&honeydew(data.path(), &["plugins", "--json"], ""))).unwrap();
    let entries = json.as_array().unwrap();
    let status_of = |name: &str| {
        entries
            .iter()
            .find(|entry| entry["name"] == name)
            .map(|entry| entry["status"].as_str().unwrap().to_owned())
    };
    assert_eq!(status_of("echo").as_deref(), Some("loaded"));
    assert_eq!(status_of("github").as_deref(), Some("skipped"));
    assert_eq!(status_of("broken").as_deref(), Some("skipped"));
    let github = entries.iter().find(|e| e["name"] == "github").unwrap();
    assert!(
        github["reason"].as_str().unwrap().contains("GITHUB_TOKEN"),
        "{github}"
    );
}
