//! TLS to PostgreSQL, against a real server that refuses plain TCP (a throwaway cluster
//! with a certificate for `localhost` signed by a test CA): libpq's `sslmode`,
//! `sslrootcert`, `sslcert` and `sslkey` do what they do for `psql`, for the store's
//! pools and for its listening connection alike.

use std::time::Duration;

use honeydew_core::concurrency::ConcurrencyLimits;
use honeydew_core::job::Job;
use honeydew_core::store::{ClaimNext, Store, StoreError};
use honeydew_store::{PostgresConfig, PostgresStore};
use honeydew_testkit::{TestSchema, TlsServer, with_search_path};

/// Opens a store on a fresh schema of the TLS server, over TCP to `host`, with the
/// extra connection settings `tls`.
async fn open(host: &str, tls: &str) -> (TestSchema, Result<Store, StoreError>) {
    let server = TlsServer::get();
    let schema = TestSchema::create_on(&server.socket_url()).await;
    let url = with_search_path(&format!("{} {tls}", server.tcp_url(host)), schema.name());
    let config = PostgresConfig {
        pool_size: 2,
        ..PostgresConfig::new(url, "tls-node")
    };
    let store = PostgresStore::open(config).await.map(Store::new);
    (schema, store)
}

fn root(name: &str) -> String {
    format!("sslrootcert={}", TlsServer::get().file(name).display())
}

/// A store that works: a submit is claimed, and the listening connection (TLS too)
/// hears the submit's wake-up.
async fn works(store: &Store) {
    let shared = store.shared().expect("a shared queue");
    let mut wake = shared.wake_ups();
    let job = Job::new("echo.echo", b"{}".to_vec(), 0, 0);
    store.insert_job(job.clone()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), wake.wait_for(|bumps| *bumps > 0))
        .await
        .expect("the listening connection hears the submit within 5 s")
        .unwrap();
    let ClaimNext::Claimed(claimed) = shared
        .claim_next(None, &ConcurrencyLimits::default(), 1)
        .await
        .unwrap()
    else {
        panic!("the submitted job is claimed");
    };
    assert_eq!(claimed.job.id, job.id);
}

fn refused(store: Result<Store, StoreError>) -> String {
    match store {
        Ok(_) => panic!("the store opened"),
        Err(err) => err.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_connects_to_a_server_whose_certificate_names_the_host() {
    let (_schema, store) = open(
        "localhost",
        &format!("sslmode=verify-full {}", root("ca.crt")),
    )
    .await;
    works(&store.expect("a verified connection")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_url_form_carries_the_tls_keys_too() {
    let server = TlsServer::get();
    let schema = TestSchema::create_on(&server.socket_url()).await;
    let url = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}\
         &options=-c%20search_path%3D{}",
        server.port(),
        server.file("ca.crt").display(),
        schema.name()
    );
    let store = PostgresStore::open(PostgresConfig::new(url, "tls-node"))
        .await
        .map(Store::new)
        .expect("a verified connection from a URL");
    works(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_signed_by_another_ca_is_refused() {
    let (_schema, store) = open(
        "localhost",
        &format!("sslmode=verify-full {}", root("other-ca.crt")),
    )
    .await;
    let err = refused(store);
    assert!(err.contains("certificate"), "says why: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_refuses_a_host_the_certificate_does_not_name_and_verify_ca_does_not_ask() {
    let (_schema, store) = open(
        "127.0.0.1",
        &format!("sslmode=verify-full {}", root("ca.crt")),
    )
    .await;
    let err = refused(store);
    assert!(err.contains("certificate"), "says why: {err}");
    let (_schema, store) = open(
        "127.0.0.1",
        &format!("sslmode=verify-ca {}", root("ca.crt")),
    )
    .await;
    works(&store.expect("the chain is good")).await;
    let (_schema, store) = open(
        "127.0.0.1",
        &format!("sslmode=verify-ca {}", root("other-ca.crt")),
    )
    .await;
    refused(store);
}

/// The server refuses plain TCP, so each of these working proves it used TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_and_require_encrypt_without_a_root_certificate_and_disable_does_not() {
    for tls in ["", "sslmode=prefer", "sslmode=require"] {
        let (_schema, store) = open("127.0.0.1", tls).await;
        works(&store.unwrap_or_else(|err| panic!("{tls:?}: {err}"))).await;
    }
    let (_schema, store) = open("localhost", "sslmode=disable").await;
    let err = refused(store);
    assert!(err.contains("no encryption"), "the server says why: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_shown_to_a_server_that_asks_for_one() {
    let server = TlsServer::get();
    let client = format!(
        "user=certuser sslmode=verify-full {} sslcert={} sslkey={}",
        root("ca.crt"),
        server.file("client.crt").display(),
        server.file("client.key").display()
    );
    let (_schema, store) = open("localhost", &client).await;
    works(&store.expect("the certificate is accepted")).await;
    let (_schema, store) = open("localhost", "user=certuser sslmode=require").await;
    let err = refused(store);
    assert!(err.contains("certificate"), "the server says why: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifying_mode_without_a_root_certificate_or_with_an_unknown_mode_says_what_to_do() {
    let (_schema, store) = open(
        "localhost",
        "sslmode=verify-full sslrootcert=/nonexistent/ca.pem",
    )
    .await;
    let err = refused(store);
    assert!(err.contains("/nonexistent/ca.pem"), "names the file: {err}");
    let (_schema, store) = open("localhost", "sslmode=verify-sometimes").await;
    let err = refused(store);
    assert!(err.contains("verify-sometimes"), "names the mode: {err}");
}
