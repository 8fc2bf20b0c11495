//! The job's workspace: a directory of its own on the daemon's machine, granted by the
//! manifest's `[workspace]` table (`enabled = true`), empty at the start of every
//! attempt and visible read-only as [`GUEST_PATH`]. Without the grant there is no
//! filesystem at all, and [`Archive::unpack`] fails, permanently.
//!
//! The daemon downloads and unpacks an archive into it for the plugin: the request goes
//! out like one from [`crate::http`] (granted hosts only, the host-added credentials,
//! redirects followed), and the daemon enforces the manifest's caps on bytes and
//! entries, refuses paths that leave the directory, and never creates links.
//!
//! ```no_run
//! # fn main() -> Result<(), honeydew_plugin_sdk::PluginError> {
//! use honeydew_plugin_sdk::workspace::Archive;
//!
//! let unpacked = Archive::tar_gz("https://api.github.com/repos/o/r/tarball/SHA")
//!     .header("accept", "application/vnd.github+json")
//!     .strip_components(1)
//!     .unpack()?;
//! println!("{} files in {}", unpacked.files, unpacked.host_path);
//! # Ok(())
//! # }
//! ```

use crate::PluginError;
use crate::bindings::honeydew::plugin::workspace as wit;

/// Where the workspace appears inside the sandbox.
pub const GUEST_PATH: &str = "/workspace";

/// How an archive is packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// A tar stream compressed with gzip (`.tar.gz`, `.tgz`).
    TarGzip,
    /// An uncompressed tar stream.
    Tar,
}

/// An archive for the daemon to download and unpack into the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    url: String,
    headers: Vec<(String, String)>,
    format: ArchiveFormat,
    strip_components: u32,
}

impl Archive {
    /// A gzipped tar at `url`.
    pub fn tar_gz(url: &str) -> Self {
        Self::new(url, ArchiveFormat::TarGzip)
    }

    /// An archive at `url` packed as `format`.
    pub fn new(url: &str, format: ArchiveFormat) -> Self {
        Self {
            url: url.to_owned(),
            headers: Vec::new(),
            format,
            strip_components: 0,
        }
    }

    /// Adds a request header (a header that an `[[auth]]` rule names is replaced by
    /// the daemon's value).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Drops the first `count` components of every path, as `tar --strip-components`
    /// does: 1 for the single top-level directory of a forge's archive.
    pub fn strip_components(mut self, count: u32) -> Self {
        self.strip_components = count;
        self
    }

    /// Has the daemon download and unpack the archive into the empty workspace.
    /// Errors come classified: a 408, 429 or 5xx or a broken download is retriable,
    /// everything else (no grant, a host not granted, a hostile or oversized archive,
    /// any other status) permanent; a refused archive leaves the workspace empty.
    pub fn unpack(self) -> Result<Unpacked, PluginError> {
        let request = wit::ArchiveRequest {
            url: self.url,
            headers: self.headers,
            format: match self.format {
                ArchiveFormat::TarGzip => wit::ArchiveFormat::TarGzip,
                ArchiveFormat::Tar => wit::ArchiveFormat::Tar,
            },
            strip_components: self.strip_components,
        };
        let summary = wit::fetch_archive(&request).map_err(PluginError::from)?;
        Ok(Unpacked {
            host_path: summary.host_path,
            guest_path: summary.guest_path,
            files: summary.files,
            directories: summary.directories,
            bytes: summary.bytes,
            skipped_links: summary.skipped_links,
        })
    }
}

/// What the daemon unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// The workspace on the daemon's machine, where a user can look at the files.
    pub host_path: String,
    /// The same directory inside the sandbox ([`GUEST_PATH`]).
    pub guest_path: String,
    /// Regular files written.
    pub files: u64,
    /// Directories created.
    pub directories: u64,
    /// Bytes of the files written.
    pub bytes: u64,
    /// Links in the archive, none of which was created.
    pub skipped_links: u64,
}
