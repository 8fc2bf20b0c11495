//! Test support shared by Honeydew's crates: a real PostgreSQL server for the tests, and
//! a schema of its own for each test on it.
//!
//! The server is found or started once per test process by `scripts/test-postgres.sh`:
//! `$HONEYDEW_TEST_DATABASE_URL` when set, else a server on the local socket or
//! 127.0.0.1:5432, else a throwaway cluster of Debian's `postgresql` (installed if
//! missing) run by an unprivileged user. No test is skipped for want of a server:
//! without one, the tests fail and say why.

use std::process::Command;
use std::sync::OnceLock;

/// The test server's connection string, found (or started) once per process.
pub fn server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/test-postgres.sh"
        );
        let output = Command::new(script)
            .arg("start")
            .output()
            .unwrap_or_else(|err| panic!("cannot run {script}: {err}"));
        assert!(
            output.status.success(),
            "no PostgreSQL server for the tests ({script} failed): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .expect("a UTF-8 connection string")
            .trim()
            .to_owned()
    })
}

/// A schema of its own on the test server, dropped with this value: the tables of one
/// test (or of the daemons one test starts) and nothing else.
pub struct TestSchema {
    name: String,
    url: String,
}

impl TestSchema {
    /// Creates a fresh, empty schema.
    pub async fn create() -> Self {
        let server = server_url();
        let name = format!("honeydew_test_{}", uuid::Uuid::now_v7().simple());
        run(server, &format!("CREATE SCHEMA {name}"))
            .await
            .unwrap_or_else(|err| panic!("cannot create a test schema on {server}: {err}"));
        let url = with_search_path(server, &name);
        Self { name, url }
    }

    /// A connection string whose `search_path` is this schema.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        // Drop may run inside a test's runtime, which cannot block on itself.
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|err| err.to_string())?
                .block_on(run(server_url(), &sql))
                .map_err(|err| err.to_string())
        })
        .join();
        if let Ok(Err(err)) = dropped {
            eprintln!("could not drop test schema {}: {err}", self.name);
        }
    }
}

/// `server` with its `search_path` set to `schema`, in whichever form `server` is
/// written (URL or `key=value` pairs).
pub fn with_search_path(server: &str, schema: &str) -> String {
    if server.starts_with("postgres://") || server.starts_with("postgresql://") {
        let separator = if server.contains('?') { '&' } else { '?' };
        format!("{server}{separator}options=-c%20search_path%3D{schema}")
    } else {
        format!("{server} options='-c search_path={schema}'")
    }
}

/// Runs `sql` on its own connection to `url`.
pub async fn run(url: &str, sql: &str) -> Result<(), tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(connection);
    let result = client.batch_execute(sql).await;
    drop(client);
    let _ = driver.await;
    result
}
