//! A running attempt's output, from the sandbox to the store: [`OutputSink`] is what
//! the runtime writes a plugin's log lines and progress into, [`AttemptOutputs`] what
//! the worker runs beside the attempt to flush them.
//!
//! The sink keeps only what the store would keep (the tail of the log, within the caps
//! of [`honeydew_core::output`], and the latest progress), so a plugin that floods its
//! log costs a bounded buffer. The flusher starts at the attempt's first write (an
//! attempt that says nothing costs no task), writes whatever is new as soon as something
//! is, then waits [`FLUSH_INTERVAL`] before the next write (at most four writes a
//! second per attempt), and flushes a last time when the attempt ends, before the
//! worker records its outcome: a watcher that sees the job finished has seen its whole
//! log. Each write is announced to this daemon's watchers
//! ([`crate::queue::Manager::subscribe_output`]); a shared store announces it to the
//! other nodes'. Nothing here blocks the guest: a failing store drops output, never the
//! job.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use honeydew_core::output::{AttemptOutput, JobProgress, LogLevel, LogLine, LogTail};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::job::JobId;
use crate::queue::Manager;

/// The least time between two writes of one attempt's output.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(250);

/// Where an attempt's log lines and progress go. Clones share one buffer; the
/// [`OutputSink::discard`] sink keeps nothing (tests, benches, `describe`).
#[derive(Clone, Default)]
pub struct OutputSink {
    shared: Option<Arc<Shared>>,
}

struct Shared {
    attempt: u32,
    buffer: Mutex<Buffer>,
    /// Told whenever the buffer gains something.
    written: Notify,
    /// The flusher, started by the first write: an attempt that says nothing (most
    /// do) costs no task.
    flusher: Mutex<Flusher>,
}

/// A task started at the first write, given the sink.
type StartFlusher = Box<dyn FnOnce(OutputSink) -> JoinHandle<()> + Send>;

enum Flusher {
    /// No sink to flush into (a sink for tests), or the attempt has ended.
    None,
    /// Nothing written yet.
    Waiting(StartFlusher),
    /// Flushing.
    Running(JoinHandle<()>),
}

#[derive(Default)]
struct Buffer {
    tail: LogTail,
    /// The seq of the next line (1 for the first).
    next_seq: u64,
    progress: Option<JobProgress>,
}

impl OutputSink {
    /// A sink that drops everything.
    pub fn discard() -> Self {
        Self { shared: None }
    }

    /// A sink for attempt `attempt`, and what it holds is taken with
    /// [`OutputSink::take`].
    pub fn for_attempt(attempt: u32) -> Self {
        Self {
            shared: Some(Arc::new(Shared {
                attempt,
                buffer: Mutex::new(Buffer {
                    next_seq: 1,
                    ..Buffer::default()
                }),
                written: Notify::new(),
                flusher: Mutex::new(Flusher::None),
            })),
        }
    }

    fn with_buffer(&self, change: impl FnOnce(u32, &mut Buffer)) {
        if let Some(shared) = &self.shared {
            let mut buffer = shared.buffer.lock().unwrap_or_else(PoisonError::into_inner);
            change(shared.attempt, &mut buffer);
            drop(buffer);
            shared.written.notify_one();
            let mut flusher = shared
                .flusher
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if matches!(*flusher, Flusher::Waiting(_))
                && let Flusher::Waiting(start) = std::mem::replace(&mut *flusher, Flusher::None)
            {
                *flusher = Flusher::Running(start(self.clone()));
            }
        }
    }

    /// Adds a log line, cut to the line cap (see [`LogLine::new`]).
    pub fn log(&self, level: LogLevel, context: &str, message: &str) {
        self.with_buffer(|attempt, buffer| {
            let seq = buffer.next_seq;
            buffer.next_seq = seq.saturating_add(1);
            buffer.tail.push(LogLine::new(
                attempt,
                seq,
                Utc::now(),
                level,
                context,
                message,
            ));
        });
    }

    /// Replaces the progress, clamped (see [`JobProgress::new`]).
    pub fn progress(&self, done: u64, total: Option<u64>, message: Option<&str>) {
        self.with_buffer(|attempt, buffer| {
            buffer.progress = Some(JobProgress::new(attempt, done, total, message, Utc::now()));
        });
    }

    /// What was written since the last take.
    pub fn take(&self) -> AttemptOutput {
        let Some(shared) = &self.shared else {
            return AttemptOutput::default();
        };
        let mut buffer = shared.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        AttemptOutput {
            lines: buffer.tail.take(),
            progress: buffer.progress.take(),
        }
    }

    /// Waits until something is written (at once if something was since the last
    /// wait); never, for a discarding sink.
    async fn written(&self) {
        match &self.shared {
            Some(shared) => shared.written.notified().await,
            None => std::future::pending().await,
        }
    }
}

/// The flusher of one attempt's output, running beside it from the attempt's first
/// write on.
pub struct AttemptOutputs {
    sink: OutputSink,
    stop: CancellationToken,
    manager: Arc<Manager>,
    job_id: JobId,
}

impl AttemptOutputs {
    /// Starts flushing attempt `attempt` of job `job_id` into `manager`'s store.
    pub fn start(manager: Arc<Manager>, job_id: JobId, attempt: u32) -> Self {
        let sink = OutputSink::for_attempt(attempt);
        let stop = CancellationToken::new();
        let (flusher_manager, flusher_stop) = (Arc::clone(&manager), stop.clone());
        let start: StartFlusher = Box::new(move |sink| {
            tokio::spawn(flush_until_stopped(
                flusher_manager,
                job_id,
                sink,
                flusher_stop,
            ))
        });
        if let Some(shared) = &sink.shared {
            *shared
                .flusher
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Flusher::Waiting(start);
        }
        Self {
            sink,
            stop,
            manager,
            job_id,
        }
    }

    /// The sink to hand the executor.
    pub fn sink(&self) -> OutputSink {
        self.sink.clone()
    }

    /// Stops the flusher and writes what is left: call it before recording the
    /// attempt's outcome.
    pub async fn finish(self) {
        self.stop.cancel();
        let flusher = match &self.sink.shared {
            Some(shared) => std::mem::replace(
                &mut *shared
                    .flusher
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
                Flusher::None,
            ),
            None => Flusher::None,
        };
        match flusher {
            Flusher::Running(task) => {
                let _ = task.await;
            }
            // Nothing was ever written: nothing to store.
            Flusher::Waiting(_) | Flusher::None => return,
        }
        flush(&self.manager, self.job_id, &self.sink).await;
    }
}

impl Drop for AttemptOutputs {
    fn drop(&mut self) {
        self.stop.cancel();
        // A sink the guest still holds must not start a flusher after the attempt.
        if let Some(shared) = &self.sink.shared {
            *shared
                .flusher
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Flusher::None;
        }
    }
}

async fn flush_until_stopped(
    manager: Arc<Manager>,
    job_id: JobId,
    sink: OutputSink,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = sink.written() => {}
        }
        flush(&manager, job_id, &sink).await;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(FLUSH_INTERVAL) => {}
        }
    }
}

/// Writes what `sink` holds, if anything, and announces it.
async fn flush(manager: &Manager, job_id: JobId, sink: &OutputSink) {
    let output = sink.take();
    if output.is_empty() {
        return;
    }
    match manager.store().append_output(job_id, output).await {
        Ok(()) => manager.output_written(job_id),
        Err(err) => {
            tracing::warn!(job_id = %job_id, error = %err, "cannot store a plugin's log and progress; dropped")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use honeydew_core::output::MAX_LOG_LINES;

    #[test]
    fn a_sink_numbers_its_lines_and_keeps_the_latest_progress() {
        let sink = OutputSink::for_attempt(3);
        sink.log(LogLevel::Info, "", "one");
        sink.progress(1, Some(4), Some("first"));
        sink.log(LogLevel::Warn, "ctx", "two");
        sink.progress(9, Some(4), None);
        let output = sink.take();
        let lines: Vec<(u32, u64, &str)> = output
            .lines
            .iter()
            .map(|line| (line.attempt, line.seq, line.line.as_str()))
            .collect();
        assert_eq!(lines, vec![(3, 1, "one"), (3, 2, "ctx: two")]);
        let progress = output.progress.unwrap();
        assert_eq!((progress.done, progress.total), (4, Some(4)), "clamped");
        sink.log(LogLevel::Info, "", "three");
        assert_eq!(sink.take().lines[0].seq, 3, "seqs go on after a take");
        assert!(sink.take().is_empty());
    }

    #[test]
    fn a_flood_keeps_only_the_tail_and_the_discard_sink_nothing() {
        let sink = OutputSink::for_attempt(1);
        for n in 0..(MAX_LOG_LINES * 3) {
            sink.log(LogLevel::Debug, "", &format!("line {n}"));
        }
        let lines = sink.take().lines;
        assert_eq!(lines.len(), MAX_LOG_LINES);
        assert_eq!(lines.last().unwrap().seq, (MAX_LOG_LINES * 3) as u64);
        let discard = OutputSink::discard();
        discard.log(LogLevel::Error, "", "gone");
        discard.progress(1, None, None);
        assert!(discard.take().is_empty());
    }
}
