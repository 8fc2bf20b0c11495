//! The daemon on PostgreSQL, as an operator runs it: `honeydewd --database-url ...`,
//! jobs done and read back, a restart that keeps them, and the tables as `psql` shows
//! them (the spec's failed-jobs query verbatim, results read as JSON).

use honeydew::api::pb::JobStatus;
use honeydew_testkit::TestSchema;

use crate::support::{Daemon, DataDir, finished, get, result_text, submit};

/// Runs `sql` on the test schema and returns every row's columns as text.
async fn rows(schema: &TestSchema, sql: &str) -> Vec<Vec<Option<String>>> {
    let (client, connection) = tokio_postgres::connect(schema.url(), tokio_postgres::NoTls)
        .await
        .expect("connect to the test schema");
    tokio::spawn(connection);
    client
        .simple_query(sql)
        .await
        .expect("query")
        .into_iter()
        .filter_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_on_postgres_runs_jobs_and_psql_reads_them() {
    let schema = TestSchema::create().await;
    let data = DataDir::with_plugins(&["echo", "permanent"]);
    let daemon = Daemon::start(&data, &["--database-url", schema.url()]);
    let channel = daemon.connect().await;
    let echoed = submit(&channel, "echo.echo", r#"{"sha": "abc123", "n": 7}"#).await;
    let failing = submit(&channel, "permanent.fail", r#"{"message": "no such repo"}"#).await;
    let done = finished(&channel, &echoed).await;
    assert_eq!(done.status(), JobStatus::Completed);
    assert_eq!(result_text(&done), r#"{"sha": "abc123", "n": 7}"#);
    assert_eq!(
        finished(&channel, &failing).await.status(),
        JobStatus::Failed
    );

    // The seed's query, verbatim.
    let failed = rows(
        &schema,
        "SELECT id, command, error, created_at, completed_at FROM jobs \
         WHERE status = 'failed' ORDER BY completed_at DESC LIMIT 20;",
    )
    .await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0][0].as_deref(), Some(failing.as_str()));
    assert_eq!(failed[0][1].as_deref(), Some("permanent.fail"));
    assert_eq!(failed[0][2].as_deref(), Some("no such repo"));
    // Results are JSON to psql through honeydew_json().
    let sha = rows(
        &schema,
        "SELECT honeydew_json(result)->>'sha', (honeydew_json(result)->>'n')::int + 1 \
         FROM jobs WHERE status = 'completed'",
    )
    .await;
    assert_eq!(sha, [[Some("abc123".to_owned()), Some("8".to_owned())]]);

    // A restart keeps everything; the node id in the data directory stays the same.
    let node_id = std::fs::read_to_string(data.path().join("node-id")).unwrap();
    let (status, stderr) = daemon.terminate();
    assert!(status.success(), "{stderr}");
    assert!(
        !stderr.contains("password"),
        "nothing about credentials in the log"
    );
    let daemon = Daemon::start(&data, &["--database-url", schema.url()]);
    let channel = daemon.connect().await;
    assert_eq!(get(&channel, &echoed).await.status(), JobStatus::Completed);
    assert_eq!(
        std::fs::read_to_string(data.path().join("node-id")).unwrap(),
        node_id
    );
    assert!(
        !data.path().join("honeydew.db").exists(),
        "no SQLite file when the jobs live in PostgreSQL"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_database_stops_the_daemon_with_the_reason() {
    let data = DataDir::with_plugins(&[]);
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://honeydew:s3cret@127.0.0.1:{port}/jobs");
    let output = crate::support::daemon_command(data.path(), &["--database-url", &url])
        .output()
        .expect("run honeydewd");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot open the PostgreSQL job database"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}/jobs")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("s3cret"),
        "the password is never shown: {stderr}"
    );
}
