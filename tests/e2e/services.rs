//! gRPC health, reflection, and the optional TCP listener with its bearer token.

use std::os::unix::fs::PermissionsExt;

use honeydew::api::pb::{JobStatus, ListJobsRequest};
use honeydew::api::{self, Address, Token};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::support::{
    Daemon, DataDir, finished, honeydew, honeydew_command, queue, run_cli, stderr, stdout,
};

/// A free TCP port on 127.0.0.1, as `host:port`.
fn free_tcp_address() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_reflection_answer_so_grpcurl_needs_no_proto_files() {
    let data = DataDir::with_plugins(&[]);
    let daemon = Daemon::start(&data, &[]);
    let channel = daemon.connect().await;

    let request = HealthCheckRequest {
        service: "honeydew.v1.Queue".into(),
    };
    let health = HealthClient::new(channel.clone())
        .check(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer {response:?}");
    };
    let mut names: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    names.sort();
    for expected in [
        "grpc.health.v1.Health",
        "honeydew.v1.Bitbucket",
        "honeydew.v1.GitHub",
        "honeydew.v1.GitLab",
        "honeydew.v1.Jira",
        "honeydew.v1.Linear",
        "honeydew.v1.Plugins",
        "honeydew.v1.Queue",
        "honeydew.v1.Schedules",
    ] {
        assert!(
            names.iter().any(|name| name == expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_optional_tcp_listener_serves_the_same_api_to_holders_of_the_token() {
    let address = free_tcp_address();
    let data = DataDir::with_plugins(&["echo"]);
    let daemon = Daemon::start(&data, &["--listen-tcp", &address]);
    let token = Token::read(data.path()).unwrap().expect("a token file");

    let tcp = Address::Tcp(address.clone());
    let channel = api::connect_with_token(&tcp, Some(&token)).await.unwrap();
    let request = honeydew::api::pb::SubmitJobRequest {
        command: "echo.echo".into(),
        payload: br#"{"over": "tcp"}"#.to_vec(),
        ..Default::default()
    };
    let id = queue_over(&channel)
        .submit_job(request)
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let unix = daemon.connect().await;
    assert_eq!(finished(&unix, &id).await.status(), JobStatus::Completed);

    // The CLI on the daemon's data directory reads the token there.
    let dir = data.path().to_owned();
    let (tcp_address, job) = (address.clone(), id.clone());
    let output = tokio::task::spawn_blocking(move || {
        honeydew(&dir, &["--tcp", &tcp_address, "status", &job], "")
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("status     completed"),
        "{}",
        stdout(&output)
    );

    // Elsewhere, HONEYDEW_TOKEN gives it.
    let nowhere = DataDir::with_plugins(&[]);
    let given = std::fs::read_to_string(Token::path_in(data.path())).unwrap();
    let output = tokio::task::spawn_blocking(move || {
        let mut command = honeydew_command(nowhere.path(), &["--tcp", &address, "status", &id]);
        command.env("HONEYDEW_TOKEN", given.trim());
        run_cli(command, "")
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("status     completed"));
}

fn queue_over(
    connection: &api::Connection,
) -> honeydew::api::pb::queue_client::QueueClient<api::Connection> {
    honeydew::api::pb::queue_client::QueueClient::new(connection.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_without_the_bearer_token_is_unauthenticated_for_every_service() {
    let address = free_tcp_address();
    let data = DataDir::with_plugins(&["echo"]);
    let daemon = Daemon::start(&data, &["--listen-tcp", &address]);
    let tcp = Address::Tcp(address.clone());

    let wrong = api::generate_token().unwrap();
    for token in [None, Some(&wrong)] {
        let channel = api::connect_with_token(&tcp, token).await.unwrap();
        let status = queue_over(&channel)
            .list_jobs(ListJobsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status}");
        assert!(
            status.message().contains("authorization: Bearer <token>")
                && status
                    .message()
                    .contains(&Token::path_in(data.path()).display().to_string()),
            "{}",
            status.message()
        );
        assert!(!status.message().contains(&format!("{wrong:?}")));

        let request = HealthCheckRequest {
            service: String::new(),
        };
        let status = HealthClient::new(channel.clone())
            .check(request)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "health: {status}");
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let status = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::once(request))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "reflection: {status}");
    }

    // The CLI without a token says why, and the Unix socket still needs none.
    let nowhere = DataDir::with_plugins(&[]);
    let output = tokio::task::spawn_blocking(move || {
        honeydew(nowhere.path(), &["--tcp", &address, "list"], "")
    })
    .await
    .unwrap();
    assert_ne!(output.status.code(), Some(0));
    assert!(
        stderr(&output).contains("requires the daemon's bearer token"),
        "{}",
        stderr(&output)
    );
    let unix = daemon.connect().await;
    queue(&unix)
        .list_jobs(ListJobsRequest::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_is_private_and_kept_across_restarts() {
    let data = DataDir::with_plugins(&[]);
    let daemon = Daemon::start(&data, &[]);
    let path = Token::path_in(data.path());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let first = Token::read(data.path()).unwrap().expect("a token");
    let (status, stderr) = daemon.terminate();
    assert!(status.success(), "{stderr}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!stderr.contains(text.trim()), "the token is never logged");
    let log = std::fs::read_to_string(data.path().join("daemon.log")).unwrap();
    assert!(!log.contains(text.trim()), "the token is never logged");

    let _daemon = Daemon::start(&data, &[]);
    assert_eq!(Token::read(data.path()).unwrap(), Some(first));
}
