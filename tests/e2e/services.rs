//! gRPC health, reflection, and the optional TCP listener.

use honeydew::api::pb::JobStatus;
use honeydew::api::{self, Address};
use tokio_stream::StreamExt;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::support::{Daemon, DataDir, finished, honeydew, stderr, stdout, submit};

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
async fn the_optional_tcp_listener_serves_the_same_api() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let data = DataDir::with_plugins(&["echo"]);
    let _daemon = Daemon::start(&data, &["--listen-tcp", &address]);

    let channel = api::connect(&Address::Tcp(address.clone())).await.unwrap();
    let id = submit(&channel, "echo.echo", r#"{"over": "tcp"}"#).await;
    assert_eq!(finished(&channel, &id).await.status(), JobStatus::Completed);

    let nowhere = DataDir::with_plugins(&[]);
    let output = tokio::task::spawn_blocking(move || {
        honeydew(nowhere.path(), &["--tcp", &address, "status", &id], "")
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("status     completed"),
        "{}",
        stdout(&output)
    );
}
