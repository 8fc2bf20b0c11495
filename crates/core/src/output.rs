//! What a running plugin says besides its result: its log lines and its progress, and
//! the caps that bound both wherever they are kept.
//!
//! Every value here comes from a guest, so each is clamped where it enters
//! ([`LogLine::new`], [`JobProgress::new`]): a line is cut to [`MAX_LOG_LINE_BYTES`],
//! a progress message to [`MAX_PROGRESS_MESSAGE_BYTES`], `done` never exceeds `total`.
//! An attempt keeps only the tail of its log, the last [`MAX_LOG_LINES`] lines within
//! [`MAX_LOG_BYTES`] ([`LogTail`] in memory; the stores trim to the same caps). No
//! I/O here: the runtime fills a [`LogTail`], the worker flushes it to the store.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};

/// The longest log line kept, in bytes; a longer one is cut on a character boundary.
pub const MAX_LOG_LINE_BYTES: usize = 2 * 1024;

/// The most lines one attempt's log keeps: the last ones.
pub const MAX_LOG_LINES: usize = 2000;

/// The most bytes (of line text) one attempt's log keeps: the last ones.
pub const MAX_LOG_BYTES: usize = 256 * 1024;

/// The longest progress message kept, in bytes.
pub const MAX_PROGRESS_MESSAGE_BYTES: usize = 256;

/// How serious a log line is, as `wasi:logging` grades it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Very fine detail.
    Trace,
    /// Detail for the plugin's author.
    Debug,
    /// Ordinary progress.
    Info,
    /// Something unexpected that the plugin got past.
    Warn,
    /// Something failed.
    Error,
    /// The plugin cannot go on.
    Critical,
}

impl LogLevel {
    /// Every level, least serious first.
    pub const ALL: [LogLevel; 6] = [
        LogLevel::Trace,
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
        LogLevel::Critical,
    ];

    /// The stored name, lowercase.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
        }
    }

    /// The level named `text`; `info` for a name this version does not know.
    pub fn parse(text: &str) -> LogLevel {
        LogLevel::ALL
            .into_iter()
            .find(|level| level.as_str() == text)
            .unwrap_or(LogLevel::Info)
    }
}

impl std::fmt::Display for LogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of an attempt's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// The attempt that wrote it (1 for the first).
    pub attempt: u32,
    /// Its place in the attempt's log, from 1; lines dropped from the tail leave gaps.
    pub seq: u64,
    /// When the host received it.
    pub at: DateTime<Utc>,
    /// How serious it is.
    pub level: LogLevel,
    /// The text, at most [`MAX_LOG_LINE_BYTES`].
    pub line: String,
}

impl LogLine {
    /// A line from a guest, its text made one line (the guest's `context`, when not
    /// empty, before it) and cut to [`MAX_LOG_LINE_BYTES`].
    pub fn new(
        attempt: u32,
        seq: u64,
        at: DateTime<Utc>,
        level: LogLevel,
        context: &str,
        message: &str,
    ) -> LogLine {
        let mut line =
            String::with_capacity((context.len() + message.len() + 2).min(MAX_LOG_LINE_BYTES + 4));
        if !context.is_empty() {
            line.push_str(cut(context, MAX_LOG_LINE_BYTES));
            line.push_str(": ");
        }
        let room = MAX_LOG_LINE_BYTES.saturating_sub(line.len());
        line.push_str(cut(message.trim_end_matches(['\n', '\r']), room));
        if line.len() > MAX_LOG_LINE_BYTES {
            let end = line.floor_char_boundary(MAX_LOG_LINE_BYTES);
            line.truncate(end);
        }
        LogLine {
            attempt,
            seq,
            at,
            level,
            line,
        }
    }
}

/// How far an attempt has got, as its plugin last reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobProgress {
    /// The attempt it belongs to.
    pub attempt: u32,
    /// Units of work done.
    pub done: u64,
    /// Units of work in all, when the plugin knows; `done` never exceeds it.
    pub total: Option<u64>,
    /// What the plugin is doing, at most [`MAX_PROGRESS_MESSAGE_BYTES`].
    pub message: Option<String>,
    /// When the host received it.
    pub updated_at: DateTime<Utc>,
}

impl JobProgress {
    /// A report from a guest, clamped: `done` at most `total`, the message cut.
    pub fn new(
        attempt: u32,
        done: u64,
        total: Option<u64>,
        message: Option<&str>,
        updated_at: DateTime<Utc>,
    ) -> JobProgress {
        let done = total.map_or(done, |total| done.min(total));
        let message = message
            .map(|text| cut(text.trim(), MAX_PROGRESS_MESSAGE_BYTES).to_owned())
            .filter(|text| !text.is_empty());
        JobProgress {
            attempt,
            done,
            total,
            message,
            updated_at,
        }
    }

    /// `done` as a share of `total` (0.0 to 1.0), when there is a total.
    pub fn fraction(&self) -> Option<f64> {
        match self.total {
            Some(0) => Some(1.0),
            Some(total) => Some(self.done as f64 / total as f64),
            None => None,
        }
    }
}

/// What an attempt said since its output was last flushed to the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttemptOutput {
    /// New lines, in order (already the tail, within the caps).
    pub lines: Vec<LogLine>,
    /// The latest progress, when it changed.
    pub progress: Option<JobProgress>,
}

impl AttemptOutput {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.progress.is_none()
    }
}

/// Which part of a job's log to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Only this attempt's lines; every attempt's when `None`.
    pub attempt: Option<u32>,
    /// Only lines after this one (attempt, seq), to follow a log.
    pub after: Option<(u32, u64)>,
    /// At most this many lines (the first ones after `after`); 0 means the cap of one
    /// attempt, [`MAX_LOG_LINES`].
    pub limit: usize,
}

impl LogQuery {
    /// The limit, bounded.
    pub fn page_size(&self) -> usize {
        match self.limit {
            0 => MAX_LOG_LINES,
            limit => limit.min(MAX_LOG_LINES * 10),
        }
    }
}

/// A job's log and progress as the store reads them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobOutput {
    /// Lines in order, by attempt then seq.
    pub lines: Vec<LogLine>,
    /// The latest attempt's progress, if its plugin reported any (the asked attempt's,
    /// when the query named one).
    pub progress: Option<JobProgress>,
}

/// The last lines of an attempt within [`MAX_LOG_LINES`] and [`MAX_LOG_BYTES`]: what
/// the sandbox keeps between two flushes, so a plugin that floods its log costs the
/// host a bounded buffer and the store a bounded write.
#[derive(Debug, Default)]
pub struct LogTail {
    lines: VecDeque<LogLine>,
    bytes: usize,
    /// Lines dropped from the front since the last take.
    dropped: u64,
}

impl LogTail {
    /// Adds `line`, dropping the oldest lines past the caps.
    pub fn push(&mut self, line: LogLine) {
        self.bytes += line.line.len();
        self.lines.push_back(line);
        while self.lines.len() > MAX_LOG_LINES || self.bytes > MAX_LOG_BYTES {
            match self.lines.pop_front() {
                Some(old) => {
                    self.bytes -= old.line.len();
                    self.dropped += 1;
                }
                None => break,
            }
        }
    }

    /// The lines kept, oldest first, leaving the tail empty.
    pub fn take(&mut self) -> Vec<LogLine> {
        self.bytes = 0;
        self.dropped = 0;
        self.lines.drain(..).collect()
    }

    /// Lines kept now.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// No line kept.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

/// Of `lines` (one attempt's, in order), the seqs to keep: the last ones within the
/// caps. Returns the smallest seq kept, or `None` when none is dropped. The stores
/// apply the same rule in SQL; this is its statement for tests.
pub fn tail_start(lines: &[(u64, usize)]) -> Option<u64> {
    let (mut count, mut bytes) = (0usize, 0usize);
    let mut first_kept = None;
    for &(seq, len) in lines.iter().rev() {
        count += 1;
        bytes += len;
        if count > MAX_LOG_LINES || bytes > MAX_LOG_BYTES {
            return first_kept;
        }
        first_kept = Some(seq);
    }
    None
}

/// `text` cut to at most `max` bytes on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    &text[..text.floor_char_boundary(max.min(text.len()))]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, text: &str) -> LogLine {
        LogLine::new(
            1,
            seq,
            DateTime::<Utc>::UNIX_EPOCH,
            LogLevel::Info,
            "",
            text,
        )
    }

    #[test]
    fn a_long_line_is_cut_on_a_character_boundary() {
        let text = "é".repeat(MAX_LOG_LINE_BYTES);
        let line = line(1, &text);
        assert!(line.line.len() <= MAX_LOG_LINE_BYTES);
        assert!(line.line.len() >= MAX_LOG_LINE_BYTES - 1);
        assert!(line.line.chars().all(|c| c == 'é'));
    }

    #[test]
    fn a_context_comes_first_and_the_newline_goes() {
        let line = LogLine::new(
            2,
            7,
            DateTime::<Utc>::UNIX_EPOCH,
            LogLevel::Warn,
            "paging",
            "page 3\n",
        );
        assert_eq!(line.line, "paging: page 3");
        assert_eq!((line.attempt, line.seq), (2, 7));
    }

    #[test]
    fn progress_is_clamped() {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let progress = JobProgress::new(1, 50, Some(10), Some(&"x".repeat(1000)), at);
        assert_eq!(progress.done, 10);
        assert_eq!(progress.message.unwrap().len(), MAX_PROGRESS_MESSAGE_BYTES);
        assert_eq!(
            JobProgress::new(1, 5, None, Some("  "), at).message,
            None,
            "a blank message is no message"
        );
        assert_eq!(
            JobProgress::new(1, 0, Some(0), None, at).fraction(),
            Some(1.0)
        );
    }

    #[test]
    fn the_tail_keeps_the_last_lines_within_both_caps() {
        let mut tail = LogTail::default();
        for seq in 1..=(MAX_LOG_LINES as u64 + 500) {
            tail.push(line(seq, "short"));
        }
        assert_eq!(tail.len(), MAX_LOG_LINES);
        let kept = tail.take();
        assert_eq!(kept.first().unwrap().seq, 501);
        assert!(tail.is_empty());

        let long = "y".repeat(MAX_LOG_LINE_BYTES);
        for seq in 1..=1000 {
            tail.push(line(seq, &long));
        }
        let kept = tail.take();
        assert_eq!(kept.len(), MAX_LOG_BYTES / MAX_LOG_LINE_BYTES);
        assert_eq!(kept.last().unwrap().seq, 1000);
    }

    #[test]
    fn tail_start_names_the_first_line_kept() {
        let few: Vec<(u64, usize)> = (1..=10).map(|seq| (seq, 10)).collect();
        assert_eq!(tail_start(&few), None);
        let many: Vec<(u64, usize)> = (1..=(MAX_LOG_LINES as u64 + 3))
            .map(|seq| (seq, 1))
            .collect();
        assert_eq!(tail_start(&many), Some(4));
        let big: Vec<(u64, usize)> = (1..=200).map(|seq| (seq, MAX_LOG_LINE_BYTES)).collect();
        assert_eq!(tail_start(&big), Some(200 - 128 + 1));
    }
}
