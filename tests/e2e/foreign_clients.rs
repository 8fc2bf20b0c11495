//! gRPC clients other than tonic's on the default Unix socket, with no special option:
//! Python's `grpcio` (gRPC C-core, which names the socket path as `:authority`) and
//! `grpcurl` as the README shows it. Both come from the venv of `scripts/setup.sh`.

use std::process::{Command, Output, Stdio};

use honeydew::api::pb::JobStatus;

use crate::support::{Daemon, DataDir, PATIENCE, finished, python_venv, result_text};

/// Runs `command`, bounded by [`PATIENCE`].
fn run(mut command: Command) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client");
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output().expect("run client")));
    outcome
        .recv_timeout(PATIENCE)
        .expect("the client finished in time")
}

/// Health check, then a submit, from grpcio with a plain `unix:` target and raw
/// protobuf bytes (no generated code): prints the status byte and the job id.
const GRPCIO_CLIENT: &str = r#"
import sys, grpc
channel = grpc.insecure_channel("unix:" + sys.argv[1])
check = channel.unary_unary("/grpc.health.v1.Health/Check")
service = b"honeydew.v1.Queue"
health = check(b"\x0a" + bytes([len(service)]) + service, timeout=30)
command, payload = b"echo.echo", b'{"from":"grpcio"}'
request = b"\x0a" + bytes([len(command)]) + command + b"\x12" + bytes([len(payload)]) + payload
submitted = channel.unary_unary("/honeydew.v1.Queue/SubmitJob")(request, timeout=30)
assert submitted[0] == 0x0a, submitted
print(health.hex())
print(submitted[2:2 + submitted[1]].decode())
"#;

#[tokio::test(flavor = "multi_thread")]
async fn grpcio_with_no_options_is_served_on_the_default_socket() {
    let venv = python_venv();
    let data = DataDir::with_plugins(&["echo"]);
    let daemon = Daemon::start(&data, &[]);

    let mut python = Command::new(venv.join("bin/python"));
    python.arg("-c").arg(GRPCIO_CLIENT).arg(data.socket());
    let output = tokio::task::spawn_blocking(move || run(python))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "grpcio failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("0801"), "health answers SERVING");
    let id = lines.next().expect("a job id").to_owned();

    let channel = daemon.connect().await;
    let job = finished(&channel, &id).await;
    assert_eq!(job.status(), JobStatus::Completed);
    let result: serde_json::Value = serde_json::from_str(&result_text(&job)).unwrap();
    assert_eq!(result, serde_json::json!({"from": "grpcio"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readmes_grpcurl_list_works_on_the_socket() {
    let venv = python_venv();
    let data = DataDir::with_plugins(&[]);
    let _daemon = Daemon::start(&data, &[]);

    // As the README writes it, with the test's data directory for ~/.honeydew.
    let mut grpcurl = Command::new(venv.join("bin/grpcurl"));
    grpcurl
        .args(["-plaintext", "-unix"])
        .arg(data.socket())
        .arg("list");
    let output = tokio::task::spawn_blocking(move || run(grpcurl))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "grpcurl failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    for service in [
        "grpc.health.v1.Health",
        "honeydew.v1.Queue",
        "honeydew.v1.GitHub",
    ] {
        assert!(
            stdout.lines().any(|line| line == service),
            "{service} missing: {stdout}"
        );
    }
}
