//! What several benchmarks share: medians, a plugin directory with the built `echo`
//! component, and a queue filled with pending no-op jobs.

#![allow(dead_code)] // each benchmark uses its own part

use std::path::Path;

use honeydew::job::Job;
use honeydew::store::Store;

/// Where `scripts/build-plugins.sh` leaves the components.
pub const BUILT_PLUGINS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/plugins");
/// The payload of every no-op job.
pub const PAYLOAD: &[u8] = br#"{"hello":"world"}"#;

/// The median of `values` (the upper one of an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A plugin directory holding the built `echo` component and its manifest.
pub fn plugin_dir(scratch: &Path) -> tempfile::TempDir {
    let dir = tempfile::TempDir::new_in(scratch).expect("plugin dir");
    for file in ["echo.wasm", "echo.toml"] {
        std::fs::copy(Path::new(BUILT_PLUGINS).join(file), dir.path().join(file))
            .expect("copy echo (run scripts/build-plugins.sh first)");
    }
    dir
}

/// Inserts `count` pending `echo.echo` jobs into `store`, from 64 submitters (group
/// commit), before any clock starts.
pub async fn fill(store: &Store, count: usize) {
    fill_keyed(store, count, 0).await;
}

/// [`fill`], the jobs spread round robin over `keys` concurrency keys (none when 0).
pub async fn fill_keyed(store: &Store, count: usize, keys: usize) {
    let mut inserts = tokio::task::JoinSet::new();
    for chunk in 0..64 {
        let store = store.clone();
        inserts.spawn(async move {
            for n in (chunk..count).step_by(64) {
                let job = Job {
                    concurrency_key: (keys > 0).then(|| format!("key-{}", n % keys)),
                    ..Job::new("echo.echo", PAYLOAD.to_vec(), 0, 3)
                };
                store.insert_job(job).await.expect("insert");
            }
        });
    }
    inserts.join_all().await;
}
