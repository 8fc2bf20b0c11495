//! Hot reload: watches the plugin directory and hands settled changes to the registry.
//!
//! notify reports file events on its own thread; they go through a channel to one
//! async task that gathers them until the directory has been quiet for [`DEBOUNCE`]
//! (or [`MAX_BATCH_WINDOW`] passed), then asks the registry to reload the plugins whose
//! `NAME.wasm` or `NAME.toml` changed, or to rescan everything when notify lost track.
//! The task ends when the [`DirWatcher`] is dropped. This file must not load anything
//! itself.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::registry::{Registry, plugin_stem};

/// How long the directory must be quiet before a batch of changes is applied.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// The longest a batch waits for quiet, so a directory that never settles still
/// reloads.
const MAX_BATCH_WINDOW: Duration = Duration::from_secs(2);

/// Keeps the directory watched while it lives.
pub(super) struct DirWatcher {
    _watcher: RecommendedWatcher,
}

impl DirWatcher {
    /// Watches `registry`'s plugin directory and reloads it on changes, from a task on
    /// the current tokio runtime.
    pub(super) fn start(registry: Arc<Registry>) -> anyhow::Result<DirWatcher> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |event| {
            // The receiver is gone only when the runtime is shutting down.
            let _ = sender.send(event);
        })
        .context("cannot create the plugin directory watcher")?;
        watcher
            .watch(registry.plugin_dir(), RecursiveMode::NonRecursive)
            .with_context(|| format!("cannot watch {}", registry.plugin_dir().display()))?;
        tokio::spawn(reload_on_changes(receiver, registry));
        Ok(DirWatcher { _watcher: watcher })
    }
}

/// Changes gathered from a burst of events.
#[derive(Debug, Default, PartialEq, Eq)]
struct Batch {
    stems: BTreeSet<String>,
    rescan: bool,
}

impl Batch {
    fn add(&mut self, event: notify::Result<Event>) {
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                tracing::warn!(error = %err, "plugin directory watch error; rescanning");
                self.rescan = true;
                return;
            }
        };
        if event.need_rescan() {
            self.rescan = true;
        }
        let relevant = match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) => false,
            _ => true,
        };
        if relevant {
            let stems = event
                .paths
                .iter()
                .filter_map(|path| plugin_stem(path, &["wasm", "toml"]));
            self.stems.extend(stems);
        }
    }

    fn is_empty(&self) -> bool {
        self.stems.is_empty() && !self.rescan
    }
}

async fn reload_on_changes(
    mut events: mpsc::UnboundedReceiver<notify::Result<Event>>,
    registry: Arc<Registry>,
) {
    while let Some(first) = events.recv().await {
        let mut batch = Batch::default();
        batch.add(first);
        let window_ends = Instant::now() + MAX_BATCH_WINDOW;
        let mut closed = false;
        while Instant::now() < window_ends {
            match tokio::time::timeout(DEBOUNCE, events.recv()).await {
                Ok(Some(event)) => batch.add(event),
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_quiet) => break,
            }
        }
        if closed {
            return;
        }
        if batch.rescan {
            registry.rescan().await;
        } else if !batch.is_empty() {
            registry.reload(batch.stems).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, Flag, ModifyKind};

    fn event(kind: EventKind, paths: &[&str]) -> notify::Result<Event> {
        let mut event = Event::new(kind);
        for path in paths {
            event = event.add_path(path.into());
        }
        Ok(event)
    }

    #[test]
    fn batches_gather_plugin_stems_and_ignore_reads() {
        let mut batch = Batch::default();
        batch.add(event(
            EventKind::Create(CreateKind::File),
            &["/p/echo.wasm"],
        ));
        batch.add(event(
            EventKind::Modify(ModifyKind::Any),
            &["/p/fetch.toml", "/p/notes.txt"],
        ));
        batch.add(event(
            EventKind::Access(AccessKind::Open(AccessMode::Read)),
            &["/p/spin.wasm"],
        ));
        batch.add(event(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            &["/p/hog.wasm"],
        ));
        batch.add(event(
            EventKind::Remove(notify::event::RemoveKind::File),
            &["/p/.echo.wasm.tmp"],
        ));
        let stems: Vec<&str> = batch.stems.iter().map(String::as_str).collect();
        assert_eq!(stems, ["echo", "fetch", "hog"]);
        assert!(!batch.rescan);
    }

    #[test]
    fn lost_events_ask_for_a_rescan() {
        let mut batch = Batch::default();
        batch.add(Ok(Event::new(EventKind::Other).set_flag(Flag::Rescan)));
        assert!(batch.rescan);
        let mut batch = Batch::default();
        batch.add(Err(notify::Error::generic("queue overflow")));
        assert!(batch.rescan);
        assert!(!batch.is_empty());
    }
}
