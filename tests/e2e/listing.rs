//! ListJobs with each filter and with paging; pruning finished jobs.

use honeydew::api::pb::{self, JobStatus, JobView};

use crate::support::{Daemon, DataDir, finished, queue, submit};

async fn list(
    channel: &tonic::transport::Channel,
    request: pb::ListJobsRequest,
) -> pb::ListJobsResponse {
    queue(channel)
        .list_jobs(request)
        .await
        .expect("list")
        .into_inner()
}

fn ids(page: &pb::ListJobsResponse) -> Vec<String> {
    page.jobs.iter().map(|job| job.id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn list_filters_by_status_and_command_and_pages_newest_first() {
    let data = DataDir::with_plugins(&["echo", "permanent"]);
    let daemon = Daemon::start(&data, &[]);
    let channel = daemon.connect().await;

    let mut echoes = Vec::new();
    let mut failures = Vec::new();
    for n in 0..3 {
        echoes.push(submit(&channel, "echo.echo", &format!(r#"{{"n": {n}}}"#)).await);
        if n < 2 {
            failures.push(submit(&channel, "permanent.fail", "{}").await);
        }
    }
    for id in echoes.iter().chain(&failures) {
        finished(&channel, id).await;
    }
    let mut all: Vec<String> = echoes.iter().chain(&failures).cloned().collect();
    all.sort_unstable_by(|a, b| b.cmp(a)); // ids are UUID v7: newest first

    let everything = list(&channel, pb::ListJobsRequest::default()).await;
    assert_eq!(ids(&everything), all);
    assert_eq!(everything.next_page_token, "");

    let check = |request: pb::ListJobsRequest, expected: &[String]| {
        let channel = channel.clone();
        let mut expected = expected.to_vec();
        expected.sort_unstable_by(|a, b| b.cmp(a));
        async move {
            let page = list(&channel, request.clone()).await;
            assert_eq!(ids(&page), expected, "{request:?}");
        }
    };
    let by_status = |status: JobStatus| pb::ListJobsRequest {
        status: status.into(),
        ..Default::default()
    };
    check(by_status(JobStatus::Failed), &failures).await;
    check(by_status(JobStatus::Completed), &echoes).await;
    check(by_status(JobStatus::Pending), &[]).await;
    check(
        pb::ListJobsRequest {
            command: "permanent.fail".into(),
            ..Default::default()
        },
        &failures,
    )
    .await;
    check(
        pb::ListJobsRequest {
            command: "permanent.fail".into(),
            status: JobStatus::Completed.into(),
            ..Default::default()
        },
        &[],
    )
    .await;

    // Paging: 2 + 2 + 1, in order, without overlap.
    let mut paged = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = list(
            &channel,
            pb::ListJobsRequest {
                limit: 2,
                page_token: token.clone(),
                ..Default::default()
            },
        )
        .await;
        pages += 1;
        assert!(page.jobs.len() <= 2);
        paged.extend(ids(&page));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(paged, all);
}

#[tokio::test(flavor = "multi_thread")]
async fn summaries_leave_out_payload_and_result_and_the_full_view_keeps_them() {
    let data = DataDir::with_plugins(&["echo"]);
    let daemon = Daemon::start(&data, &[]);
    let channel = daemon.connect().await;
    let id = submit(&channel, "echo.echo", r#"{"keep": true}"#).await;
    finished(&channel, &id).await;

    let summary = list(&channel, pb::ListJobsRequest::default()).await;
    assert_eq!(summary.jobs[0].payload, b"");
    assert_eq!(summary.jobs[0].result, None);
    assert_eq!(summary.jobs[0].status(), JobStatus::Completed);

    let full = list(
        &channel,
        pb::ListJobsRequest {
            view: JobView::Full.into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(full.jobs[0].payload, br#"{"keep": true}"#);
    assert_eq!(
        full.jobs[0].result.as_deref(),
        Some(&br#"{"keep": true}"#[..])
    );
}

/// `honeydew prune --older-than` deletes finished jobs with their attempts and leaves
/// waiting ones; the daemon's own retention keeps them by default.
#[tokio::test(flavor = "multi_thread")]
async fn prune_deletes_finished_jobs_past_the_age_and_keeps_the_rest() {
    let data = DataDir::with_plugins(&["echo"]);
    let daemon = Daemon::start(&data, &[]);
    let channel = daemon.connect().await;
    let done = submit(&channel, "echo.echo", "{}").await;
    assert_eq!(
        finished(&channel, &done).await.status(),
        JobStatus::Completed
    );

    // The default retention (7 days) keeps a job that finished just now.
    let output = crate::support::honeydew(data.path(), &["prune", "--json"], "");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        crate::support::stderr(&output)
    );
    let answer: serde_json::Value =
        serde_json::from_str(&crate::support::stdout(&output)).expect("JSON");
    assert_eq!(answer["deleted"], 0);

    let output = crate::support::honeydew(data.path(), &["prune", "--older-than", "0s"], "");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        crate::support::stderr(&output)
    );
    assert_eq!(crate::support::stdout(&output), "deleted 1 finished jobs\n");
    let gone = queue(&channel)
        .get_job_status(pb::GetJobStatusRequest { job_id: done })
        .await
        .expect_err("pruned");
    assert_eq!(gone.code(), tonic::Code::NotFound);

    let bad = crate::support::honeydew(data.path(), &["prune", "--older-than", "soon"], "");
    assert_eq!(
        bad.status.code(),
        Some(2),
        "{}",
        crate::support::stderr(&bad)
    );
}
