//! `honeydew daemon ARGS...`: runs `honeydewd ARGS...` in this process's place.
//!
//! The CLI links none of the daemon (no wasmtime, no SQLite, no PostgreSQL), so it
//! does not run the daemon's code: it execs the daemon's own binary, the `honeydewd`
//! beside this program first (an install puts the two in one directory, and so does
//! cargo), then the first one on `PATH`. Exec keeps the process: its pid, its signals
//! (SIGINT/SIGTERM drain the daemon) and its exit status are the daemon's. This module
//! only finds the program and builds its command line; it knows none of its flags.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

/// The daemon's program name.
pub const DAEMON_PROGRAM: &str = "honeydewd";

/// What `honeydew daemon --help` says after the usage line.
pub const HELP: &str = "\
Every ARG is passed to honeydewd as it is: `honeydewd --help` lists them. \
--data-dir, when given to honeydew, is passed on too. honeydewd is looked for beside \
this program, then on PATH.";

/// `honeydew daemon`'s arguments: honeydewd's, untouched.
#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// honeydewd's arguments (`honeydewd --help` lists them)
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARG"
    )]
    args: Vec<OsString>,
}

/// honeydewd's command line: `--data-dir` when honeydew was given one on its own
/// command line, then every argument of `honeydew daemon` in order.
pub fn command_line(data_dir: Option<&Path>, args: DaemonArgs) -> Vec<OsString> {
    let data_dir = data_dir
        .into_iter()
        .flat_map(|dir| ["--data-dir".into(), dir.into()]);
    data_dir.chain(args.args).collect()
}

/// Runs honeydewd with `args` in this process's place; returns only when it cannot.
pub fn run(args: Vec<OsString>) -> ExitCode {
    let current_exe = std::env::current_exe().ok();
    let path = std::env::var_os("PATH");
    let Some(program) = find_daemon(current_exe.as_deref(), path.as_deref()) else {
        let beside = current_exe
            .as_deref()
            .and_then(Path::parent)
            .map(|dir| format!(" ({})", dir.display()))
            .unwrap_or_default();
        eprintln!(
            "honeydew: cannot find {DAEMON_PROGRAM}: it is neither beside this program{beside} \
             nor on PATH; install it beside honeydew (scripts/install.sh puts both in \
             ~/.local/bin) or add its directory to PATH"
        );
        return ExitCode::from(127);
    };
    let err = std::process::Command::new(&program).args(args).exec();
    eprintln!("honeydew: cannot run {}: {err}", program.display());
    ExitCode::from(126)
}

/// Where honeydewd is: the executable file `honeydewd` beside `current_exe`, else the
/// first in `path` (a `PATH` value; its empty entries, the current directory, are
/// skipped).
pub fn find_daemon(current_exe: Option<&Path>, path: Option<&OsStr>) -> Option<PathBuf> {
    let beside = current_exe.and_then(Path::parent);
    let on_path = path.into_iter().flat_map(std::env::split_paths);
    beside
        .map(Path::to_path_buf)
        .into_iter()
        .chain(on_path.filter(|dir| !dir.as_os_str().is_empty()))
        .map(|dir| dir.join(DAEMON_PROGRAM))
        .find(|candidate| is_executable_file(candidate))
}

fn is_executable_file(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    /// A directory holding the given files, each executable or not.
    fn dir_with(files: &[(&str, bool)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for &(name, executable) in files {
            let path = dir.path().join(name);
            fs::write(&path, "#!/bin/sh\n").unwrap();
            let mode = if executable { 0o755 } else { 0o644 };
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        }
        dir
    }

    #[test]
    fn honeydewd_beside_the_cli_wins_over_path() {
        let bin = dir_with(&[("honeydew", true), ("honeydewd", true)]);
        let elsewhere = dir_with(&[("honeydewd", true)]);
        let exe = bin.path().join("honeydew");
        let path = std::env::join_paths([elsewhere.path()]).unwrap();
        assert_eq!(
            find_daemon(Some(&exe), Some(&path)),
            Some(bin.path().join("honeydewd"))
        );
    }

    #[test]
    fn without_one_beside_the_first_executable_on_path_is_taken() {
        let bin = dir_with(&[("honeydew", true), ("honeydewd", false)]);
        let empty = dir_with(&[]);
        let not_executable = dir_with(&[("honeydewd", false)]);
        let first = dir_with(&[("honeydewd", true)]);
        let second = dir_with(&[("honeydewd", true)]);
        let path = std::env::join_paths([
            empty.path(),
            not_executable.path(),
            first.path(),
            second.path(),
        ])
        .unwrap();
        let exe = bin.path().join("honeydew");
        assert_eq!(
            find_daemon(Some(&exe), Some(&path)),
            Some(first.path().join("honeydewd"))
        );
    }

    #[test]
    fn nowhere_is_none() {
        let bin = dir_with(&[("honeydew", true)]);
        let empty = dir_with(&[("honeydewd.sh", true)]);
        let exe = bin.path().join("honeydew");
        let path = std::env::join_paths([empty.path()]).unwrap();
        assert_eq!(find_daemon(Some(&exe), Some(&path)), None);
        assert_eq!(find_daemon(None, None), None);
    }
}
