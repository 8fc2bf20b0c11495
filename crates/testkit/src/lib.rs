//! Test support shared by Honeydew's crates: a real PostgreSQL server for the tests, and
//! a schema of its own for each test on it; and a second server that speaks TLS only,
//! for the tests of TLS.
//!
//! The server is found or started once per test process by `scripts/test-postgres.sh`:
//! `$HONEYDEW_TEST_DATABASE_URL` when set, else a server on the local socket or
//! 127.0.0.1:5432, else a throwaway cluster of Debian's `postgresql` (installed if
//! missing) run by an unprivileged user. No test is skipped for want of a server:
//! without one, the tests fail and say why.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Runs `scripts/test-postgres.sh VERB` and returns what it printed.
fn test_postgres(verb: &str) -> String {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/test-postgres.sh"
    );
    let output = Command::new(script)
        .arg(verb)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {script}: {err}"));
    assert!(
        output.status.success(),
        "no PostgreSQL server for the tests ({script} {verb} failed): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("UTF-8 output")
        .trim()
        .to_owned()
}

/// The test server's connection string, found (or started) once per process.
pub fn server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| test_postgres("start"))
}

/// The throwaway server that accepts TCP clients only over TLS (see
/// `scripts/test-postgres.sh start-tls`), started once per process.
pub struct TlsServer {
    dir: PathBuf,
    port: u16,
}

impl TlsServer {
    /// The server, started on first use.
    pub fn get() -> &'static TlsServer {
        static SERVER: OnceLock<TlsServer> = OnceLock::new();
        SERVER.get_or_init(|| {
            let dir = PathBuf::from(test_postgres("start-tls"));
            let port = std::fs::read_to_string(dir.join("port"))
                .expect("the TLS server's port")
                .trim()
                .parse()
                .expect("a port number");
            TlsServer { dir, port }
        })
    }

    /// Over its local socket, without TLS: for setting up.
    pub fn socket_url(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.dir.display(),
            self.port
        )
    }

    /// Over TCP to `host` (`localhost`, which its certificate names, or `127.0.0.1`,
    /// which it does not), with no TLS setting yet.
    pub fn tcp_url(&self, host: &str) -> String {
        format!(
            "host={host} port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// A file of the server's directory: `ca.crt` (its CA), `other-ca.crt` (a CA that
    /// signed nothing of it), `client.crt` and `client.key` (for the role `certuser`).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Its TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// A schema of its own on the test server, dropped with this value: the tables of one
/// test (or of the daemons one test starts) and nothing else.
pub struct TestSchema {
    name: String,
    url: String,
    server: String,
}

impl TestSchema {
    /// Creates a fresh, empty schema on the test server.
    pub async fn create() -> Self {
        Self::create_on(server_url()).await
    }

    /// Creates a fresh, empty schema on the server at `server`.
    pub async fn create_on(server: &str) -> Self {
        let name = format!("honeydew_test_{}", uuid::Uuid::now_v7().simple());
        run(server, &format!("CREATE SCHEMA {name}"))
            .await
            .unwrap_or_else(|err| panic!("cannot create a test schema on {server}: {err}"));
        let url = with_search_path(server, &name);
        Self {
            name,
            url,
            server: server.to_owned(),
        }
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
        let server = self.server.clone();
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|err| err.to_string())?
                .block_on(run(&server, &sql))
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
