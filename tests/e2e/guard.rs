//! The data directory's guards: one daemon only, socket mode 0600, stale socket, a
//! warning when the data directory is open to others.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::sync::mpsc;
use std::thread;

use honeydew::api::pb::JobStatus;

use crate::support::{Daemon, DataDir, PATIENCE, daemon_command, finished, submit};

#[tokio::test(flavor = "multi_thread")]
async fn a_second_daemon_on_the_same_data_dir_is_refused_and_the_first_keeps_serving() {
    let data = DataDir::with_plugins(&["echo"]);
    let first = Daemon::start(&data, &[]);

    let mut second = daemon_command(data.path(), &[]);
    let (done, outcome) = mpsc::channel();
    thread::spawn(move || done.send(second.output().expect("run second honeydewd")));
    let output = outcome
        .recv_timeout(PATIENCE)
        .expect("the second daemon exits at once");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let pid = first.pid();
    assert!(
        stderr.contains(&format!(
            "another honeydewd (pid {pid}) is already running on data directory"
        )),
        "{stderr}"
    );

    // The refused daemon touched neither the socket, the first daemon's log, nor its work.
    let log = std::fs::read_to_string(data.path().join("daemon.log")).unwrap();
    assert!(!log.contains("another honeydewd"), "{log}");
    let channel = first.connect().await;
    let id = submit(&channel, "echo.echo", "{}").await;
    assert_eq!(finished(&channel, &id).await.status(), JobStatus::Completed);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_socket_is_private_to_its_owner() {
    let data = DataDir::with_plugins(&[]);
    let _daemon = Daemon::start(&data, &[]);
    let metadata = std::fs::metadata(data.socket()).unwrap();
    assert!(metadata.file_type().is_socket());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_socket_is_replaced() {
    let data = DataDir::with_plugins(&["echo"]);
    // A socket file nobody listens on, as a crashed daemon leaves it. A datagram socket
    // makes that certain: a dropped stream listener may still be open for a moment in
    // a process another test is forking, and accept connections there.
    drop(std::os::unix::net::UnixDatagram::bind(data.socket()).unwrap());
    assert!(
        std::fs::metadata(data.socket())
            .unwrap()
            .file_type()
            .is_socket()
    );
    assert!(std::os::unix::net::UnixStream::connect(data.socket()).is_err());

    let daemon = Daemon::start(&data, &[]);
    let channel = daemon.connect().await;
    let id = submit(&channel, "echo.echo", "{}").await;
    assert_eq!(finished(&channel, &id).await.status(), JobStatus::Completed);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_data_dir_is_created_private() {
    let parent = DataDir::with_plugins(&[]);
    let nested = parent.path().join("fresh/honeydew");
    let command = daemon_command(&nested, &[]);
    let daemon = Daemon::start_command(command, nested.join("honeydew.sock"));
    drop(daemon);
    let mode = std::fs::metadata(&nested).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    assert!(nested.join("honeydew.db").exists());
    assert!(nested.join("daemon.log").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_dir_open_to_others_draws_a_warning_at_start() {
    let data = DataDir::with_plugins(&[]);
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let daemon = Daemon::start(&data, &[]);
    let (status, stderr) = daemon.terminate();
    assert!(status.success(), "{stderr}");
    let log = std::fs::read_to_string(data.path().join("daemon.log")).unwrap();
    let warning = log
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|event| {
            event["message"].as_str().is_some_and(|message| {
                message.starts_with("the data directory is open to group or others")
            })
        })
        .unwrap_or_else(|| panic!("no warning in the log:\n{log}"));
    assert_eq!(warning["level"], "warn");
    assert_eq!(warning["mode"], "755");
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains(&format!("chmod 700 {}", data.path().display()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_data_dir_draws_no_warning() {
    let data = DataDir::with_plugins(&[]);
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let daemon = Daemon::start(&data, &[]);
    let (status, stderr) = daemon.terminate();
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains("open to group or others"), "{stderr}");
}
