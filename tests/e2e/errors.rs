//! Refusals: unknown command, malformed JSON, oversized payload, out-of-range fields,
//! invalid schedules.

use honeydew::api::pb::{self, git_hub_client::GitHubClient, schedules_client::SchedulesClient};
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
            ..Default::default()
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

fn schedule(name: &str, cron_expr: &str, command: &str) -> pb::ScheduleJobRequest {
    pb::ScheduleJobRequest {
        name: name.into(),
        cron_expr: cron_expr.into(),
        command: command.into(),
        ..Default::default()
    }
}

/// Each refused schedule: its code and the scheduler's reason, word for word.
#[tokio::test(flavor = "multi_thread")]
async fn invalid_schedules_are_refused_with_the_reason() {
    let data = DataDir::with_plugins(&["echo"]);
    let daemon = Daemon::start(&data, &[]);
    let mut schedules = SchedulesClient::new(daemon.connect().await);

    let nightly = schedules
        .schedule_job(schedule("nightly", "0 3 * * *", "echo.echo"))
        .await
        .expect("a valid schedule")
        .into_inner()
        .schedule
        .expect("the stored schedule");

    let expected_fields = "(expected 5 fields \"MIN HOUR DOM MON DOW\", or 6 with seconds first)";
    let cases: Vec<(&str, pb::ScheduleJobRequest, Code, String)> = vec![
        (
            "out-of-range minute",
            schedule("bad-minute", "61 * * * *", "echo.echo"),
            Code::InvalidArgument,
            "invalid cron expression \"61 * * * *\"".into(),
        ),
        (
            "too few fields",
            schedule("short", "* * *", "echo.echo"),
            Code::InvalidArgument,
            format!("invalid cron expression \"* * *\": it has 3 fields {expected_fields}"),
        ),
        (
            "unknown time zone",
            pb::ScheduleJobRequest {
                timezone: Some("Mars/Olympus".into()),
                ..schedule("martian", "0 9 * * *", "echo.echo")
            },
            Code::InvalidArgument,
            "unknown time zone \"Mars/Olympus\": use an IANA name such as \"UTC\" or \"Europe/Paris\""
                .into(),
        ),
        (
            "unknown command",
            schedule("ghost-command", "0 9 * * *", "nope.nothing"),
            Code::InvalidArgument,
            "no plugin serves \"nope.nothing\"".into(),
        ),
        (
            "unusable name",
            schedule("has space", "0 9 * * *", "echo.echo"),
            Code::InvalidArgument,
            "invalid schedule name \"has space\": use letters, digits, '-', '_' or '.', up to 100 characters"
                .into(),
        ),
        (
            "malformed payload",
            pb::ScheduleJobRequest {
                payload: b"{\"owner\":".to_vec(),
                ..schedule("bad-payload", "0 9 * * *", "echo.echo")
            },
            Code::InvalidArgument,
            "payload is not valid JSON".into(),
        ),
        (
            "unknown misfire policy",
            pb::ScheduleJobRequest {
                misfire: 7,
                ..schedule("bad-misfire", "0 9 * * *", "echo.echo")
            },
            Code::InvalidArgument,
            "unknown misfire policy \"7\": use \"skip\" or \"run_once\"".into(),
        ),
        (
            "duplicate name",
            schedule("nightly", "0 4 * * *", "echo.echo"),
            Code::AlreadyExists,
            "a schedule named \"nightly\" already exists".into(),
        ),
    ];
    for (case, request, code, reason) in cases {
        let status = schedules.schedule_job(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{case}: {status:?}");
        assert!(
            status.message().starts_with(&reason),
            "{case}: {:?} should start with {reason:?}",
            status.message()
        );
    }

    let status = schedules
        .unschedule_job(pb::UnscheduleJobRequest {
            schedule: "ghost".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "no schedule named or with id \"ghost\"");

    // Only the valid schedule was stored, unchanged by the refused duplicate.
    let stored = schedules
        .list_schedules(pb::ListSchedulesRequest {})
        .await
        .unwrap()
        .into_inner()
        .schedules;
    assert_eq!(stored, vec![nightly]);
    assert_eq!(stored[0].cron_expr, "0 3 * * *");
}

/// Regression (issue 9, defect 14): a manifest could name any variable of the daemon's
/// environment and have the host send it to the plugin's allowed host. Only declared
/// secrets resolve; the plugin is refused at load, naming the variable, and nothing is
/// sent.
#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_naming_an_undeclared_variable_is_refused_at_load() {
    let data = DataDir::with_plugins(&["fetch"]);
    std::fs::write(
        data.manifest("fetch"),
        "[network]\nallowed_hosts = [\"http://127.0.0.1:*\"]\n\n[[auth]]\n\
         host = \"http://127.0.0.1:*\"\nheader = \"Authorization\"\n\
         value = \"Bearer ${AWS_SECRET_ACCESS_KEY}\"\n",
    )
    .expect("write manifest");
    let mut command = crate::support::daemon_command(data.path(), &[]);
    command.env("AWS_SECRET_ACCESS_KEY", "not-for-plugins");
    let daemon = Daemon::start_command(command, data.socket());
    let channel = daemon.connect().await;
    let refused = queue(&channel)
        .submit_job(request(
            "fetch.get",
            br#"{"url": "http://127.0.0.1:9/"}"#.to_vec(),
        ))
        .await
        .expect_err("the plugin is not loaded");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let message = refused.message();
    assert!(
        message.contains("secret AWS_SECRET_ACCESS_KEY is not declared"),
        "{message}"
    );
    assert!(
        message.contains("HONEYDEW_SECRET_AWS_SECRET_ACCESS_KEY"),
        "{message}"
    );
    assert!(!message.contains("not-for-plugins"), "{message}");
}
