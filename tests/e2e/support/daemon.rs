//! The daemon under test: a real `honeydewd` process on a temporary data directory.
//!
//! Readiness is the daemon's own "daemon started" line on stderr (it logs it after the
//! socket is bound); exit is stderr closing. Both are waited for with [`PATIENCE`] as
//! the bound, never with sleeps.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use honeydew::api::{self, Address};
use tempfile::TempDir;
use tonic::transport::Channel;

use super::{PATIENCE, built_plugins};

/// A temporary data directory whose `plugins/` holds copies of some built plugins.
pub struct DataDir {
    dir: TempDir,
}

impl DataDir {
    /// A data directory with the named plugins (`NAME.wasm` + `NAME.toml`).
    pub fn with_plugins(names: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("honeydew-e2e-")
            .tempdir()
            .expect("temp dir");
        let plugins = dir.path().join("plugins");
        std::fs::create_dir(&plugins).expect("plugins dir");
        let source = built_plugins();
        for name in names {
            for extension in ["wasm", "toml"] {
                let file = format!("{name}.{extension}");
                std::fs::copy(source.join(&file), plugins.join(&file)).unwrap_or_else(|err| {
                    panic!(
                        "cannot copy {}: {err}; build the plugins first with scripts/build-plugins.sh",
                        source.join(&file).display()
                    )
                });
            }
        }
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.path().join("honeydew.sock")
    }

    /// Writes `honeydew.toml`.
    pub fn configure(&self, toml: &str) {
        std::fs::write(self.path().join("honeydew.toml"), toml).expect("write config");
    }

    /// The events of `daemon.log` (JSON lines) whose message is `message`, oldest
    /// first. The log is written in the background: read it once the daemon has exited.
    pub fn log_events(&self, message: &str) -> Vec<serde_json::Value> {
        let log = std::fs::read_to_string(self.path().join("daemon.log")).expect("daemon.log");
        log.lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("a JSON log line"))
            .filter(|event| event["message"] == message)
            .collect()
    }

    /// A plugin's manifest path, for tests that rewrite it.
    pub fn manifest(&self, plugin: &str) -> PathBuf {
        self.path().join("plugins").join(format!("{plugin}.toml"))
    }
}

/// A running `honeydewd`; killed when dropped.
pub struct Daemon {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
    socket: PathBuf,
}

/// A `honeydewd` command on `data_dir`, with the test's defaults.
pub fn daemon_command(data_dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_honeydewd"));
    command
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("HONEYDEW_CONFIG")
        .env_remove("HONEYDEW_PLUGIN_DIR")
        .env_remove("HONEYDEW_DATABASE_URL")
        .env("NO_COLOR", "1")
        .env("HONEYDEW_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

impl Daemon {
    /// Starts `honeydewd` on `data` and waits until it serves.
    pub fn start(data: &DataDir, args: &[&str]) -> Daemon {
        Self::start_command(daemon_command(data.path(), args), data.socket())
    }

    /// Starts `command` and waits until it serves on `socket`.
    pub fn start_command(mut command: Command, socket: PathBuf) -> Daemon {
        let mut child = command.spawn().expect("spawn honeydewd");
        let stderr = child.stderr.take().expect("stderr");
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut daemon = Daemon {
            child: Some(child),
            lines,
            log: Vec::new(),
            socket,
        };
        if !daemon.wait_for_line("daemon started") {
            let status = daemon.wait_for_exit();
            panic!(
                "honeydewd did not start ({status:?}); its stderr:\n{}",
                daemon.log.join("\n")
            );
        }
        daemon
    }

    /// Waits for a stderr line containing `text`; false when stderr closed first.
    pub fn wait_for_line(&mut self, text: &str) -> bool {
        self.line_containing(text).is_some()
    }

    /// Waits for the next stderr line containing `text` and returns it; `None` when
    /// stderr closed first.
    pub fn line_containing(&mut self, text: &str) -> Option<String> {
        let deadline = Instant::now() + PATIENCE;
        while let Some(line) = self.next_line(deadline) {
            if line.contains(text) {
                return Some(line);
            }
        }
        None
    }

    /// The next stderr line (also kept in the log); `None` once stderr is closed.
    fn next_line(&mut self, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => {
                self.log.push(line.clone());
                Some(line)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!(
                    "honeydewd took too long; its stderr:\n{}",
                    self.log.join("\n")
                )
            }
        }
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn stderr(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.log.push(line);
        }
        self.log.join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub async fn connect(&self) -> Channel {
        api::connect(&Address::Unix(self.socket.clone()))
            .await
            .expect("connect to honeydewd")
    }

    /// SIGKILL, then reap.
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill -9");
        child.wait().expect("reap");
    }

    /// Sends `signal` (such as "TERM" or "INT") and returns at once.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// SIGTERM, then wait for the exit; returns the status and the daemon's stderr.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let status = self.wait_for_exit();
        (status, self.stderr())
    }

    /// Waits for stderr to close (the process ended), then reaps.
    pub fn wait_for_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        while self.next_line(deadline).is_some() {}
        self.child.take().expect("running").wait().expect("reap")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("--- honeydewd stderr ---\n{}\n---", self.stderr());
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
