use honeydew::api::pb::{self, git_hub_client::GitHubClient};
use tonic::Code;

use crate::support::{Daemon, DataDir, queue};

fn request(command: &str, payload: Vec<u8>) -> pb::SubmitJobRequest {
    pb::SubmitJobRequest {
        command: command.into(),
        payload,
        ..Default::default()
    }
}

/// Each refused submit: its code and a phrase its message must hold.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_submits_are_refused_with_precise_codes_and_messages() {
    let data = DataDir::with_plugins(&["echo"]);
    let daemon = Daemon::start(&data, &[]);
    let channel = daemon.connect().await;

    let four_mib = 4 * 1024 * 1024;
    let oversized = format!(r#"{{"pad": "{}"}}"#, "x".repeat(four_mib));
    let cases: Vec<(&str, pb::SubmitJobRequest, Code, &str)> = vec![
        (
            "unknown command",
            request("nope.nothing", b"{}".to_vec()),
            Code::InvalidArgument,
            "no plugin serves \"nope.nothing\"",
        ),
        (
            "malformed command",
            request("echo", b"{}".to_vec()),
            Code::InvalidArgument,
            "expected PLUGIN.COMMAND",
        ),
        (
            "malformed JSON",
            request("echo.echo", b"{\"owner\":".to_vec()),
            Code::InvalidArgument,
            "payload is not valid JSON",
        ),
        (
            "oversized payload",
            request("echo.echo", oversized.into_bytes()),
            Code::InvalidArgument,
            "over the 4194304-byte limit",
        ),
        (
            "too many retries",
            pb::SubmitJobRequest {
                max_retries: Some(1000),
                ..request("echo.echo", b"{}".to_vec())
            },
            Code::InvalidArgument,
            "max_retries is 1000, over the limit of 100",
        ),
    ];
    for (case, request, code, phrase) in cases {
        let status = queue(&channel).submit_job(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{case}: {status:?}");
        assert!(
            status.message().contains(phrase),
            "{case}: {:?}",
            status.message()
        );
    }

    // Nothing refused was stored.
    let page = queue(&channel)
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(page.jobs.is_empty(), "{:?}", page.jobs);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_over_the_message_limit_is_refused_before_decoding() {
    let data = DataDir::with_plugins(&["echo"]);
    let daemon = Daemon::start(&data, &[]);
    let channel = daemon.connect().await;

    // Twice the payload limit plus slack is the message limit; go well past it.
    let huge = vec![b' '; 12 * 1024 * 1024];
    let status = queue(&channel)
        .submit_job(request("echo.echo", huge))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("message length too large"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_jobs_bad_ids_and_out_of_range_fields() {
    let data = DataDir::with_plugins(&["echo"]);
    let daemon = Daemon::start(&data, &[]);
    let channel = daemon.connect().await;
    let unknown = "0192f0c4-7a3e-7c41-9d2a-5b8f0e6c1d2e".to_owned();

    let status = queue(&channel)
        .get_job_status(pb::GetJobStatusRequest {
            job_id: unknown.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), format!("job {unknown} not found"));

    let status = queue(&channel)
        .watch_job(pb::WatchJobRequest {
            job_id: unknown.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let status = queue(&channel)
        .cancel_job(pb::CancelJobRequest { job_id: unknown })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let status = queue(&channel)
        .get_job_status(pb::GetJobStatusRequest {
            job_id: "job-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("invalid job_id \"job-1\""),
        "{status:?}"
    );

    let status = queue(&channel)
        .list_jobs(pb::ListJobsRequest {
            limit: 1001,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("over the maximum of 1000"),
        "{status:?}"
    );

    let status = queue(&channel)
        .list_jobs(pb::ListJobsRequest {
            status: 99,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_rpc_without_its_plugin_says_no_plugin_serves_the_command() {
    let data = DataDir::with_plugins(&["echo"]);
    let daemon = Daemon::start(&data, &[]);
    let channel = daemon.connect().await;

    let request = pb::GitHubGetCommitsRequest {
        owner: "octocat".into(),
        repo: "hello-world".into(),
        ..Default::default()
    };
    let status = GitHubClient::new(channel.clone())
        .get_commits(request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("no plugin serves \"github.commits\""),
        "{status:?}"
    );

    let request = pb::GitHubGetCommitsRequest {
        owner: "octocat".into(),
        ..Default::default()
    };
    let status = GitHubClient::new(channel)
        .get_commits(request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "repo is required for github.commits");
}

#[tokio::test(flavor = "multi_thread")]
async fn schedules_answer_unimplemented_honestly() {
    let data = DataDir::with_plugins(&["echo"]);
    let daemon = Daemon::start(&data, &[]);
    let channel = daemon.connect().await;

    let mut schedules = pb::schedules_client::SchedulesClient::new(channel);
    let status = schedules
        .list_schedules(pb::ListSchedulesRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(status.message().contains("no cron scheduler"), "{status:?}");
}
