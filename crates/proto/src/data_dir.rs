//! The data directory as the daemon's clients see it: `--data-dir` (shared by
//! `honeydewd` and every `honeydew` command, so both find the same directory) and the
//! name of the socket the daemon serves in it. What else lives there (database, log,
//! plugins, config) is the daemon's business, not a client's.

use std::path::{Path, PathBuf};

/// The socket's name in the data directory.
pub const SOCKET_FILE_NAME: &str = "honeydew.sock";

/// The data directory's flag, `--data-dir` / `HONEYDEW_DATA_DIR`; [`DataDirArg::ID`]
/// is its clap id.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct DataDirArg {
    /// Data directory: database, socket, log, plugins [default: ~/.honeydew]
    #[arg(long, env = "HONEYDEW_DATA_DIR", value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
}

/// Why there is no data directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirError {
    /// No data directory was given and `HOME` is not set.
    #[error("no data directory: HOME is not set; pass --data-dir or set HONEYDEW_DATA_DIR")]
    NoHome,
}

impl DataDirArg {
    /// The flag's clap id, for asking where its value came from.
    pub const ID: &str = "data_dir";

    /// The directory given, or `~/.honeydew`.
    pub fn resolve(&self) -> Result<PathBuf, DataDirError> {
        match &self.data_dir {
            Some(dir) => Ok(dir.clone()),
            None => std::env::var_os("HOME")
                .filter(|home| !home.is_empty())
                .map(|home| Path::new(&home).join(".honeydew"))
                .ok_or(DataDirError::NoHome),
        }
    }
}
