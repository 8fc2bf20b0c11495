//! The backends the contract suite runs against, each a real database: a SQLite file in
//! a temporary directory, and a schema of its own on a real PostgreSQL server
//! ([`honeydew_testkit`] finds or starts one; no test is skipped without it).

use honeydew_core::store::Store;
use honeydew_store::{PostgresConfig, PostgresStore, SqliteConfig, SqliteStore};
use honeydew_testkit::TestSchema;
use tempfile::TempDir;

/// One test's database, which [`Fixture::open`] may open several times (a restart, or
/// a second daemon on the same database).
pub enum Fixture {
    /// A database file in its own directory.
    Sqlite(TempDir),
    /// A schema of its own on the test server.
    Postgres(TestSchema),
}

impl Fixture {
    /// A fresh SQLite database.
    pub fn sqlite() -> Self {
        Fixture::Sqlite(TempDir::new().expect("temporary directory"))
    }

    /// A fresh schema on the PostgreSQL test server.
    pub async fn postgres() -> Self {
        Fixture::Postgres(TestSchema::create().await)
    }

    /// Opens (again) this test's database, as a daemon starting would.
    pub async fn open(&self) -> Store {
        match self {
            Fixture::Sqlite(dir) => Store::new(
                SqliteStore::open(SqliteConfig::new(dir.path().join("honeydew.db")))
                    .expect("open the SQLite store"),
            ),
            Fixture::Postgres(schema) => {
                let config = PostgresConfig {
                    pool_size: 4,
                    ..PostgresConfig::new(schema.url(), "test-node")
                };
                Store::new(
                    PostgresStore::open(config)
                        .await
                        .expect("open the PostgreSQL store"),
                )
            }
        }
    }
}
