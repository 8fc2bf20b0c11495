//! The safe extractor: a tar or gzipped tar stream into a directory, with nothing
//! written outside it and every count bounded.
//!
//! [`unpack`] reads the archive as it arrives (no part of it is kept but the entry
//! being written) and writes through a [`cap_std::fs::Dir`], whose every operation
//! stays beneath that directory whatever a path or the filesystem says. On top of that
//! each entry is checked before anything is written, and refused with an
//! [`UnpackError`] that names it:
//!
//! - a path that is absolute, climbs with `..`, is too long or too deep;
//! - a device, FIFO or other special file, and entry types that are not files,
//!   directories or links;
//! - an entry under a path the archive holds as a link (the classic
//!   `link -> /etc` then `link/passwd`);
//! - a file that is already there (a tar may repeat a path to overwrite it);
//! - more file bytes than [`Limits::max_bytes`], or more entries (files, directories,
//!   the parents they need, links) than [`Limits::max_entries`]: checked from each
//!   header before its data is read, so a bomb stops at its first entry over the cap.
//!
//! Links, symbolic or hard, are never created: they are counted in
//! [`Summary::skipped_links`]. Metadata records (GNU long names, pax headers) are read
//! into memory only up to [`MAX_METADATA_BYTES`] each, and the whole decompressed
//! stream is bounded by [`Limits::stream_bytes`], so a gzip bomb of padding or headers
//! ends too. This file owns the archive formats and nothing else: it knows no job and
//! no network, and emptying the directory after a failure is the caller's call
//! ([`empty`]).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cap_std::fs::{Dir, OpenOptions};
use tar::EntryType;

/// The longest metadata record (a GNU long name, a pax header) read into memory.
pub const MAX_METADATA_BYTES: u64 = 64 * 1024;

/// The longest path an entry may have, in bytes (Linux's `PATH_MAX`).
const MAX_PATH_BYTES: usize = 4096;

/// The longest name of one path component, in bytes (Linux's `NAME_MAX`).
const MAX_NAME_BYTES: usize = 255;

/// The most components a path may have.
const MAX_DEPTH: usize = 256;

/// What the decompressed stream may hold per entry besides its data: its header, its
/// padding, and a few metadata records.
const STREAM_BYTES_PER_ENTRY: u64 = 4 * 1024;

/// Room in the decompressed stream beyond the entries (the end-of-archive blocks and
/// a tar's trailing zeros, a global pax header).
const STREAM_SLACK_BYTES: u64 = 1024 * 1024;

/// How many of the stream's records may be metadata, per entry allowed.
const METADATA_RECORDS_PER_ENTRY: u64 = 4;

/// How an archive is packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A tar stream compressed with gzip.
    TarGzip,
    /// An uncompressed tar stream.
    Tar,
}

/// The caps of one unpack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes of regular files written in all.
    pub max_bytes: u64,
    /// The most entries made or skipped: files, directories (the parents a file needs
    /// included) and links.
    pub max_entries: u64,
}

impl Limits {
    /// The most bytes the (decompressed) tar stream may hold: the file bytes allowed
    /// plus room for each entry's header, padding and metadata.
    pub fn stream_bytes(&self) -> u64 {
        self.max_bytes
            .saturating_add(self.max_entries.saturating_mul(STREAM_BYTES_PER_ENTRY))
            .saturating_add(STREAM_SLACK_BYTES)
    }
}

/// What was unpacked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Regular files written.
    pub files: u64,
    /// Directories created.
    pub directories: u64,
    /// Bytes of the files written.
    pub bytes: u64,
    /// Links in the archive, none of which was created.
    pub skipped_links: u64,
}

/// Why an archive was not unpacked. Messages name the entry, lowercase.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnpackError {
    /// The directory already holds files.
    #[error("the workspace is not empty: an archive is unpacked into an empty workspace only")]
    NotEmpty,
    /// An entry's path would leave the directory, or cannot be written.
    #[error("archive entry {path} {reason}: refused")]
    UnsafePath {
        /// The entry's path as the archive gives it (shortened).
        path: EntryPath,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An entry of a kind that is never unpacked.
    #[error("archive entry {path} is a {kind}, which is never unpacked: refused")]
    Unsupported {
        /// The entry's path.
        path: EntryPath,
        /// Its kind.
        kind: &'static str,
    },
    /// An entry under a path that the archive holds as a link.
    #[error("archive entry {path} lies under {link}, which the archive holds as a link: refused")]
    UnderLink {
        /// The entry's path.
        path: EntryPath,
        /// The link's path.
        link: EntryPath,
    },
    /// A file that the archive holds twice (or that a directory already stands for).
    #[error("archive entry {path} is already there: refused")]
    Duplicate {
        /// The entry's path.
        path: EntryPath,
    },
    /// The files would take more bytes than the cap.
    #[error(
        "the archive unpacks to more than {limit} bytes (the workspace's max_bytes), at {path}: refused"
    )]
    TooManyBytes {
        /// The cap.
        limit: u64,
        /// The entry that went over it.
        path: EntryPath,
    },
    /// The archive holds more entries than the cap.
    #[error(
        "the archive holds more than {limit} entries (the workspace's max_files), at {path}: refused"
    )]
    TooManyEntries {
        /// The cap.
        limit: u64,
        /// The entry that went over it.
        path: EntryPath,
    },
    /// The decompressed stream went past [`Limits::stream_bytes`].
    #[error(
        "the archive's stream goes past {limit} bytes without that many bytes of files (a compression bomb?): refused"
    )]
    StreamTooLong {
        /// The bound.
        limit: u64,
    },
    /// A metadata record larger than [`MAX_METADATA_BYTES`].
    #[error(
        "the archive has a metadata record of {size} bytes, over {MAX_METADATA_BYTES}: refused"
    )]
    MetadataTooLarge {
        /// Its size.
        size: u64,
    },
    /// The stream is not a well-formed archive of its format.
    #[error("the archive is corrupt or not a {format}: {reason}")]
    Corrupt {
        /// The format expected.
        format: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// The archive's source failed while it was read (the download broke off).
    #[error("the download failed: {0}")]
    Source(String),
    /// Writing to the directory failed.
    #[error("cannot write the workspace: {0}")]
    Io(String),
}

impl UnpackError {
    /// A failure to use the directory itself.
    pub fn io(err: io::Error) -> Self {
        UnpackError::Io(err.to_string())
    }
}

/// An entry's path for messages: quoted, lossily decoded, at most 200 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct EntryPath(String);

impl EntryPath {
    fn of(raw: &[u8]) -> Self {
        let text = String::from_utf8_lossy(raw);
        let cut = text.floor_char_boundary(200);
        if cut < text.len() {
            EntryPath(format!("{}…", &text[..cut]))
        } else {
            EntryPath(text.into_owned())
        }
    }

    fn of_path(path: &Path) -> Self {
        Self::of(path.as_os_str().as_bytes())
    }
}

impl fmt::Display for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Debug for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The error an archive's source returns from `read` when it failed (as opposed to
/// the archive being malformed): [`unpack`] reports it as [`UnpackError::Source`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceFailed(pub String);

/// The error [`Bounded`] returns past its bound.
#[derive(Debug, thiserror::Error)]
#[error("the stream went past {0} bytes")]
struct StreamLimit(u64);

/// Unpacks `archive` (packed as `format`) into `dir`, dropping the first
/// `strip_components` components of every path, within `limits`. Blocking. On an
/// error, whatever was written stays: empty the directory with [`empty`].
pub fn unpack(
    archive: impl Read,
    format: Format,
    strip_components: u32,
    dir: &Dir,
    limits: &Limits,
) -> Result<Summary, UnpackError> {
    let bound = limits.stream_bytes();
    let format_name = match format {
        Format::TarGzip => "gzipped tar",
        Format::Tar => "tar",
    };
    let unpacker = Unpacker {
        dir,
        limits,
        strip_components: usize::try_from(strip_components).unwrap_or(usize::MAX),
        format: format_name,
        summary: Summary::default(),
        entries: 0,
        directories: HashSet::new(),
        links: HashSet::new(),
    };
    match format {
        Format::TarGzip => {
            let decoder = flate2::read::GzDecoder::new(archive);
            unpacker.run(Bounded::new(decoder, bound))
        }
        Format::Tar => unpacker.run(Bounded::new(archive, bound)),
    }
}

/// Removes everything in `dir` (never following a link out of it). Blocking.
pub fn empty(dir: &Dir) -> io::Result<()> {
    for entry in dir.entries()? {
        let entry = entry?;
        let name = entry.file_name();
        if entry.file_type()?.is_dir() {
            dir.remove_dir_all(&name)?;
        } else {
            dir.remove_file(&name)?;
        }
    }
    Ok(())
}

/// One unpack's state.
struct Unpacker<'a> {
    dir: &'a Dir,
    limits: &'a Limits,
    strip_components: usize,
    format: &'static str,
    summary: Summary,
    /// Entries made or skipped so far, against `limits.max_entries`.
    entries: u64,
    /// Directories made (or found made) so far, relative.
    directories: HashSet<PathBuf>,
    /// Paths the archive holds as links.
    links: HashSet<PathBuf>,
}

/// What the metadata records before an entry said about it.
#[derive(Default)]
struct Pending {
    /// From a GNU long name or a pax `path`.
    path: Option<Vec<u8>>,
    /// From a pax `size`.
    size: Option<u64>,
}

impl Unpacker<'_> {
    fn run(mut self, stream: impl Read) -> Result<Summary, UnpackError> {
        let mut archive = tar::Archive::new(stream);
        let entries = archive
            .entries()
            .map_err(|err| self.read_error(err))?
            .raw(true);
        let max_records = self
            .limits
            .max_entries
            .saturating_mul(METADATA_RECORDS_PER_ENTRY)
            .saturating_add(16);
        let mut records: u64 = 0;
        let mut pending = Pending::default();
        for entry in entries {
            let mut entry = entry.map_err(|err| self.read_error(err))?;
            records += 1;
            let kind = entry.header().entry_type();
            if records > max_records {
                let path = EntryPath::of(&entry.header().path_bytes());
                return Err(UnpackError::TooManyEntries {
                    limit: self.limits.max_entries,
                    path,
                });
            }
            match kind {
                EntryType::GNULongName => {
                    let mut name = self.metadata(&mut entry)?;
                    while name.last() == Some(&0) {
                        name.pop();
                    }
                    pending.path = Some(name);
                    continue;
                }
                EntryType::XHeader => {
                    let data = self.metadata(&mut entry)?;
                    self.pax(&data, &mut pending)?;
                    continue;
                }
                // A long link target, or a global pax header (GitHub's carries the
                // commit as a comment): nothing an unpack needs.
                EntryType::GNULongLink | EntryType::XGlobalHeader => {
                    self.metadata(&mut entry)?;
                    continue;
                }
                _ => {}
            }
            let raw_path = pending
                .path
                .take()
                .unwrap_or_else(|| entry.header().path_bytes().into_owned());
            let declared_size = entry
                .header()
                .entry_size()
                .map_err(|err| self.corrupt(err))?;
            let size = match pending.size.take() {
                Some(size) if size != declared_size => {
                    // Only files past 8 GiB need a pax size, and the data is read by the
                    // header's: refuse the entry by whichever rule fits.
                    self.check_bytes(size, &raw_path)?;
                    return Err(UnpackError::Corrupt {
                        format: self.format,
                        reason: format!(
                            "entry {} gives two sizes, {size} and {declared_size}",
                            EntryPath::of(&raw_path)
                        ),
                    });
                }
                _ => declared_size,
            };
            let Some(path) = self.relative_path(&raw_path)? else {
                continue;
            };
            self.check_not_under_link(&path)?;
            match kind {
                EntryType::Regular | EntryType::Continuous => {
                    let mode = entry.header().mode().unwrap_or(0o644);
                    self.file(&path, size, mode, &mut entry)?;
                }
                EntryType::Directory => self.directory(&path)?,
                EntryType::Symlink | EntryType::Link => {
                    self.count(&path)?;
                    self.links.insert(path);
                    self.summary.skipped_links += 1;
                }
                EntryType::Char | EntryType::Block => {
                    return Err(UnpackError::Unsupported {
                        path: EntryPath::of(&raw_path),
                        kind: "device file",
                    });
                }
                EntryType::Fifo => {
                    return Err(UnpackError::Unsupported {
                        path: EntryPath::of(&raw_path),
                        kind: "FIFO",
                    });
                }
                _ => {
                    return Err(UnpackError::Unsupported {
                        path: EntryPath::of(&raw_path),
                        kind: "special entry (sparse file, volume label or unknown type)",
                    });
                }
            }
        }
        Ok(self.summary)
    }

    /// The data of a metadata record, refused past [`MAX_METADATA_BYTES`].
    fn metadata(&self, entry: &mut impl Read) -> Result<Vec<u8>, UnpackError> {
        let mut data = Vec::new();
        let read = entry
            .take(MAX_METADATA_BYTES + 1)
            .read_to_end(&mut data)
            .map_err(|err| self.read_error(err))?;
        if read as u64 > MAX_METADATA_BYTES {
            return Err(UnpackError::MetadataTooLarge { size: read as u64 });
        }
        Ok(data)
    }

    /// Takes `path` and `size` from a pax header's records.
    fn pax(&self, data: &[u8], pending: &mut Pending) -> Result<(), UnpackError> {
        for extension in tar::PaxExtensions::new(data) {
            let extension = extension.map_err(|err| self.corrupt(err))?;
            match extension.key_bytes() {
                b"path" => pending.path = Some(extension.value_bytes().to_vec()),
                b"size" => {
                    let size = std::str::from_utf8(extension.value_bytes())
                        .ok()
                        .and_then(|text| text.parse::<u64>().ok())
                        .ok_or_else(|| UnpackError::Corrupt {
                            format: self.format,
                            reason: "a pax size that is not a number".to_owned(),
                        })?;
                    pending.size = Some(size);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// `raw` as a path relative to the directory, its first components stripped; `None`
    /// when nothing is left of it (the archive's top directory, say).
    fn relative_path(&self, raw: &[u8]) -> Result<Option<PathBuf>, UnpackError> {
        let unsafe_path = |reason| UnpackError::UnsafePath {
            path: EntryPath::of(raw),
            reason,
        };
        if raw.is_empty() {
            return Err(unsafe_path("has no name"));
        }
        if raw.len() > MAX_PATH_BYTES {
            return Err(unsafe_path("has a path longer than 4096 bytes"));
        }
        if raw.starts_with(b"/") {
            return Err(unsafe_path("is an absolute path"));
        }
        let components: Vec<&[u8]> = raw
            .split(|byte| *byte == b'/')
            .filter(|component| !component.is_empty() && *component != b".")
            .collect();
        if components.iter().any(|component| *component == b"..") {
            return Err(unsafe_path("climbs out with \"..\""));
        }
        if components.iter().any(|c| c.len() > MAX_NAME_BYTES) {
            return Err(unsafe_path("has a name longer than 255 bytes"));
        }
        if components.len() > MAX_DEPTH {
            return Err(unsafe_path("is more than 256 directories deep"));
        }
        if components.len() <= self.strip_components {
            return Ok(None);
        }
        let mut path = PathBuf::new();
        for component in &components[self.strip_components..] {
            path.push(OsStr::from_bytes(component));
        }
        Ok(Some(path))
    }

    /// Refuses `path` when it, or a directory above it, is a link of the archive.
    fn check_not_under_link(&self, path: &Path) -> Result<(), UnpackError> {
        if self.links.is_empty() {
            return Ok(());
        }
        for ancestor in path.ancestors().skip(1) {
            if self.links.contains(ancestor) {
                return Err(UnpackError::UnderLink {
                    path: EntryPath::of_path(path),
                    link: EntryPath::of_path(ancestor),
                });
            }
        }
        if self.links.contains(path) {
            return Err(UnpackError::Duplicate {
                path: EntryPath::of_path(path),
            });
        }
        Ok(())
    }

    /// Counts one more entry against the cap.
    fn count(&mut self, path: &Path) -> Result<(), UnpackError> {
        if self.entries >= self.limits.max_entries {
            return Err(UnpackError::TooManyEntries {
                limit: self.limits.max_entries,
                path: EntryPath::of_path(path),
            });
        }
        self.entries += 1;
        Ok(())
    }

    /// Refuses `size` more bytes when they would pass the cap.
    fn check_bytes(&self, size: u64, raw_path: &[u8]) -> Result<(), UnpackError> {
        if self.summary.bytes.saturating_add(size) > self.limits.max_bytes {
            return Err(UnpackError::TooManyBytes {
                limit: self.limits.max_bytes,
                path: EntryPath::of(raw_path),
            });
        }
        Ok(())
    }

    /// Makes directory `path` and any parents it lacks, each counted.
    fn directory(&mut self, path: &Path) -> Result<(), UnpackError> {
        let missing: Vec<PathBuf> = path
            .ancestors()
            .filter(|ancestor| !ancestor.as_os_str().is_empty())
            .take_while(|ancestor| !self.directories.contains(*ancestor))
            .map(Path::to_path_buf)
            .collect();
        for directory in missing.into_iter().rev() {
            if self.links.contains(&directory) {
                return Err(UnpackError::UnderLink {
                    path: EntryPath::of_path(path),
                    link: EntryPath::of_path(&directory),
                });
            }
            self.count(&directory)?;
            match self.dir.create_dir(&directory) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(UnpackError::Duplicate {
                        path: EntryPath::of_path(&directory),
                    });
                }
                Err(err) => return Err(UnpackError::io(err)),
            }
            self.summary.directories += 1;
            self.directories.insert(directory);
        }
        Ok(())
    }

    /// Writes file `path` of `size` bytes from `data`, executable when `mode` says so.
    fn file(
        &mut self,
        path: &Path,
        size: u64,
        mode: u32,
        data: &mut impl Read,
    ) -> Result<(), UnpackError> {
        self.check_bytes(size, path.as_os_str().as_bytes())?;
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            self.directory(parent)?;
        }
        if self.directories.contains(path) {
            return Err(UnpackError::Duplicate {
                path: EntryPath::of_path(path),
            });
        }
        self.count(path)?;
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        let file = match self.dir.open_with(path, &options) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                return Err(UnpackError::Duplicate {
                    path: EntryPath::of_path(path),
                });
            }
            Err(err) => return Err(UnpackError::io(err)),
        };
        let mut file = file.into_std();
        let permissions = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
        file.set_permissions(std::fs::Permissions::from_mode(permissions))
            .map_err(UnpackError::io)?;
        let written = copy(data, &mut file).map_err(|err| self.read_or_write_error(err))?;
        if written != size {
            return Err(UnpackError::Corrupt {
                format: self.format,
                reason: format!(
                    "entry {} ends after {written} of its {size} bytes",
                    EntryPath::of_path(path)
                ),
            });
        }
        self.summary.files += 1;
        self.summary.bytes += written;
        Ok(())
    }

    fn corrupt(&self, err: impl fmt::Display) -> UnpackError {
        UnpackError::Corrupt {
            format: self.format,
            reason: err.to_string(),
        }
    }

    /// What a failed read of the stream means: its bound passed, its source failed, or
    /// the archive is malformed.
    fn read_error(&self, err: io::Error) -> UnpackError {
        if let Some(StreamLimit(limit)) = find_cause::<StreamLimit>(&err) {
            return UnpackError::StreamTooLong { limit: *limit };
        }
        if let Some(SourceFailed(reason)) = find_cause::<SourceFailed>(&err) {
            return UnpackError::Source(reason.clone());
        }
        self.corrupt(err)
    }

    fn read_or_write_error(&self, err: CopyError) -> UnpackError {
        match err {
            CopyError::Read(err) => self.read_error(err),
            CopyError::Write(err) => UnpackError::io(err),
        }
    }
}

/// Which side of a copy failed.
enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// `io::copy`, telling a failed read from a failed write.
fn copy(from: &mut impl Read, to: &mut impl Write) -> Result<u64, CopyError> {
    let mut buffer = [0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) => return Ok(total),
            Ok(read) => read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(CopyError::Read(err)),
        };
        to.write_all(&buffer[..read]).map_err(CopyError::Write)?;
        total += read as u64;
    }
}

/// The first error of type `E` in `err`'s chain of causes.
fn find_cause<E: std::error::Error + 'static>(err: &io::Error) -> Option<&E> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = err.get_ref().map(|inner| {
        let inner: &(dyn std::error::Error + 'static) = inner;
        inner
    });
    while let Some(current) = cause {
        if let Some(found) = current.downcast_ref::<E>() {
            return Some(found);
        }
        if let Some(io) = current.downcast_ref::<io::Error>()
            && let Some(inner) = io.get_ref()
        {
            let inner: &(dyn std::error::Error + 'static) = inner;
            if let Some(found) = inner.downcast_ref::<E>() {
                return Some(found);
            }
            cause = inner.source();
            continue;
        }
        cause = current.source();
    }
    None
}

/// A reader that fails with [`StreamLimit`] once more than `limit` bytes came.
struct Bounded<R> {
    inner: R,
    limit: u64,
    read: u64,
}

impl<R> Bounded<R> {
    fn new(inner: R, limit: u64) -> Self {
        Self {
            inner,
            limit,
            read: 0,
        }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.read = self.read.saturating_add(read as u64);
        if self.read > self.limit {
            return Err(io::Error::other(StreamLimit(self.limit)));
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    const LIMITS: Limits = Limits {
        max_bytes: 1024 * 1024,
        max_entries: 100,
    };

    /// One raw tar entry: a header of `kind` for `path` (written into the header's
    /// name field as is, so hostile paths survive), `data`, and a link target.
    struct Entry<'a> {
        path: &'a [u8],
        kind: EntryType,
        data: &'a [u8],
        link: &'a str,
        mode: u32,
    }

    fn file<'a>(path: &'a str, data: &'a str) -> Entry<'a> {
        Entry {
            path: path.as_bytes(),
            kind: EntryType::Regular,
            data: data.as_bytes(),
            link: "",
            mode: 0o644,
        }
    }

    fn of_kind<'a>(path: &'a str, kind: EntryType, link: &'a str) -> Entry<'a> {
        Entry {
            path: path.as_bytes(),
            kind,
            data: b"",
            link,
            mode: 0o755,
        }
    }

    /// A tar of `entries`, built header by header (the `tar` crate's builder refuses
    /// the hostile paths these tests need).
    fn tar_of(entries: &[Entry]) -> Vec<u8> {
        let mut out = Vec::new();
        for entry in entries {
            let mut header = tar::Header::new_gnu();
            let name = &mut header.as_old_mut().name;
            name[..entry.path.len()].copy_from_slice(entry.path);
            header.set_entry_type(entry.kind);
            header.set_size(entry.data.len() as u64);
            header.set_mode(entry.mode);
            if !entry.link.is_empty() {
                header.set_link_name(entry.link).unwrap();
            }
            header.set_cksum();
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(entry.data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn target() -> (tempfile::TempDir, Dir) {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("ws")).unwrap();
        let dir =
            Dir::open_ambient_dir(root.path().join("ws"), cap_std::ambient_authority()).unwrap();
        (root, dir)
    }

    /// Unpacks `entries` (gzipped) with `strip` and `limits`; returns the result and
    /// every path under the workspace, and checks that nothing appeared beside it.
    fn check(
        entries: &[Entry],
        strip: u32,
        limits: Limits,
    ) -> (Result<Summary, UnpackError>, Vec<String>) {
        let (root, dir) = target();
        let archive = gzip(&tar_of(entries));
        let result = unpack(&archive[..], Format::TarGzip, strip, &dir, &limits);
        let beside: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(
            beside,
            ["ws"],
            "something was written outside the workspace"
        );
        let mut paths = Vec::new();
        walk(&root.path().join("ws"), Path::new(""), &mut paths);
        paths.sort();
        (result, paths)
    }

    fn walk(dir: &Path, relative: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = relative.join(entry.file_name());
            let kind = entry.file_type().unwrap();
            assert!(!kind.is_symlink(), "a link was created: {}", path.display());
            out.push(path.display().to_string());
            if kind.is_dir() {
                walk(&entry.path(), &path, out);
            }
        }
    }

    fn message(result: Result<Summary, UnpackError>) -> String {
        result.expect_err("refused").to_string()
    }

    #[test]
    fn a_forge_archive_unpacks_without_its_top_directory() {
        let entries = [
            of_kind("octocat-hello-abc1234/", EntryType::Directory, ""),
            file("octocat-hello-abc1234/README.md", "# hello\n"),
            of_kind("octocat-hello-abc1234/src/", EntryType::Directory, ""),
            file("octocat-hello-abc1234/src/main.rs", "fn main() {}\n"),
            Entry {
                mode: 0o755,
                ..file("octocat-hello-abc1234/build.sh", "#!/bin/sh\n")
            },
            file("octocat-hello-abc1234/deep/er/file", "x"),
        ];
        let (result, paths) = check(&entries, 1, LIMITS);
        assert_eq!(
            result.unwrap(),
            Summary {
                files: 4,
                directories: 3,
                bytes: 8 + 13 + 10 + 1,
                skipped_links: 0
            }
        );
        assert_eq!(
            paths,
            [
                "README.md",
                "build.sh",
                "deep",
                "deep/er",
                "deep/er/file",
                "src",
                "src/main.rs"
            ]
        );
    }

    #[test]
    fn files_keep_their_contents_and_only_an_executable_bit() {
        let (root, dir) = target();
        let entries = [
            Entry {
                mode: 0o4755,
                ..file("top/run", "#!/bin/sh\necho hi\n")
            },
            Entry {
                mode: 0o666,
                ..file("top/data", "data")
            },
        ];
        let archive = tar_of(&entries);
        let summary = unpack(&archive[..], Format::Tar, 1, &dir, &LIMITS).unwrap();
        assert_eq!((summary.files, summary.bytes), (2, 22));
        let ws = root.path().join("ws");
        assert_eq!(
            std::fs::read_to_string(ws.join("run")).unwrap(),
            "#!/bin/sh\necho hi\n"
        );
        let mode = |name: &str| {
            std::fs::metadata(ws.join(name))
                .unwrap()
                .permissions()
                .mode()
        };
        assert_eq!(mode("run") & 0o7777, 0o755, "no setuid bit");
        assert_eq!(mode("data") & 0o7777, 0o644, "not world-writable");
    }

    #[test]
    fn paths_that_leave_the_workspace_are_refused() {
        for (path, reason) in [
            ("top/../../escape", "climbs out"),
            ("../escape", "climbs out"),
            ("top/a/../../../etc/passwd", "climbs out"),
            ("/etc/passwd", "absolute path"),
            ("/", "absolute path"),
        ] {
            let (result, paths) = check(&[file(path, "x")], 1, LIMITS);
            let error = message(result);
            assert!(
                error.contains(reason) && error.contains(&format!("{path:?}")),
                "{path}: {error}"
            );
            assert!(paths.is_empty(), "{path}: {paths:?}");
        }
    }

    #[test]
    fn links_are_never_made_and_nothing_goes_through_them() {
        let entries = [
            file("top/README", "r"),
            of_kind("top/etc", EntryType::Symlink, "/etc"),
            of_kind("top/inside", EntryType::Symlink, "README"),
            of_kind("top/hard", EntryType::Link, "top/README"),
        ];
        let (result, paths) = check(&entries, 1, LIMITS);
        let summary = result.unwrap();
        assert_eq!((summary.files, summary.skipped_links), (1, 3));
        assert_eq!(paths, ["README"]);

        let through = [
            of_kind("top/etc", EntryType::Symlink, "/etc"),
            file("top/etc/passwd", "root::0:0::/:/bin/sh\n"),
        ];
        let (result, _) = check(&through, 1, LIMITS);
        let error = message(result);
        assert_eq!(
            error,
            "archive entry \"etc/passwd\" lies under \"etc\", which the archive holds as a link: refused"
        );
    }

    #[test]
    fn special_files_are_refused() {
        for (kind, name) in [
            (EntryType::Char, "device file"),
            (EntryType::Block, "device file"),
            (EntryType::Fifo, "FIFO"),
            (EntryType::GNUSparse, "special entry"),
        ] {
            let (result, _) = check(&[of_kind("top/dev", kind, "")], 1, LIMITS);
            let error = message(result);
            assert!(error.contains(name), "{kind:?}: {error}");
        }
    }

    #[test]
    fn a_path_written_twice_is_refused() {
        let (result, _) = check(&[file("t/a", "1"), file("t/a", "2")], 1, LIMITS);
        assert_eq!(
            message(result),
            "archive entry \"a\" is already there: refused"
        );
        let (result, _) = check(&[file("t/a/b", "1"), file("t/a", "2")], 1, LIMITS);
        assert!(message(result).contains("already there"));
    }

    #[test]
    fn the_entry_cap_counts_files_directories_and_links() {
        let names: Vec<String> = (0..10_000).map(|n| format!("top/f{n}")).collect();
        let bomb: Vec<Entry> = names.iter().map(|name| file(name, "")).collect();
        let limits = Limits {
            max_entries: 1000,
            ..LIMITS
        };
        let (result, paths) = check(&bomb, 1, limits);
        assert_eq!(
            message(result),
            "the archive holds more than 1000 entries (the workspace's max_files), at \"f1000\": refused"
        );
        assert_eq!(paths.len(), 1000, "it stopped at the cap");

        // Parents count: 3 entries needed here, 2 allowed.
        let limits = Limits {
            max_entries: 2,
            ..LIMITS
        };
        let (result, _) = check(&[file("top/a/b/c", "x")], 1, limits);
        assert!(message(result).contains("more than 2 entries"));
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_byte_cap_before_its_data() {
        // 64 MiB of zeros gzips to about 64 KiB.
        let zeros = vec![0u8; 64 * 1024 * 1024];
        let archive = gzip(&tar_of(&[Entry {
            data: &zeros,
            ..file("top/zeros", "")
        }]));
        assert!(archive.len() < 1024 * 1024, "{}", archive.len());
        let (root, dir) = target();
        let result = unpack(&archive[..], Format::TarGzip, 1, &dir, &LIMITS);
        assert_eq!(
            message(result),
            "the archive unpacks to more than 1048576 bytes (the workspace's max_bytes), at \"zeros\": refused"
        );
        assert_eq!(
            std::fs::read_dir(root.path().join("ws")).unwrap().count(),
            0
        );
    }

    #[test]
    fn the_stream_is_bounded() {
        let mut bounded = Bounded::new(&[7u8; 100][..], 60);
        let mut sink = Vec::new();
        let error = bounded.read_to_end(&mut sink).unwrap_err();
        assert!(find_cause::<StreamLimit>(&error).is_some(), "{error}");
        let limits = Limits {
            max_bytes: 1000,
            max_entries: 10,
        };
        assert_eq!(limits.stream_bytes(), 1000 + 10 * 4096 + 1024 * 1024);
    }

    #[test]
    fn endless_metadata_records_stop_at_the_entry_cap() {
        let mut stream = Vec::new();
        for _ in 0..2000 {
            stream.extend_from_slice(
                &tar_of(&[of_kind("pax_global_header", EntryType::XGlobalHeader, "")])[..512],
            );
        }
        let (_root, dir) = target();
        let limits = Limits {
            max_bytes: 1,
            max_entries: 10,
        };
        let error = message(unpack(&stream[..], Format::Tar, 0, &dir, &limits));
        assert!(error.contains("more than 10 entries"), "{error}");
    }

    #[test]
    fn a_huge_metadata_record_is_not_read_into_memory() {
        let long = vec![b'a'; 2 * MAX_METADATA_BYTES as usize];
        let entries = [Entry {
            data: &long,
            ..of_kind("././@LongLink", EntryType::GNULongName, "")
        }];
        let (result, _) = check(&entries, 0, LIMITS);
        assert!(message(result).contains("metadata record"));
    }

    #[test]
    fn long_names_and_pax_paths_are_honoured_and_checked() {
        let long_name = format!("top/{}/file", "d".repeat(150));
        let mut name_data = long_name.clone().into_bytes();
        name_data.push(0);
        let entries = [
            Entry {
                data: &name_data,
                ..of_kind("././@LongLink", EntryType::GNULongName, "")
            },
            file("placeholder", "long"),
        ];
        let (result, paths) = check(&entries, 1, LIMITS);
        assert_eq!(result.unwrap().files, 1);
        assert!(
            paths.contains(&format!("{}/file", "d".repeat(150))),
            "{paths:?}"
        );

        let record = "22 path=../../escaped\n";
        let entries = [
            Entry {
                data: record.as_bytes(),
                ..of_kind("PaxHeader", EntryType::XHeader, "")
            },
            file("top/harmless", "x"),
        ];
        let (result, paths) = check(&entries, 1, LIMITS);
        assert!(message(result).contains("climbs out"));
        assert!(paths.is_empty());
    }

    #[test]
    fn a_truncated_or_foreign_stream_is_corrupt() {
        let archive = gzip(&tar_of(&[file("top/a", "0123456789")]));
        let (_root, dir) = target();
        let error = message(unpack(
            &archive[..archive.len() / 2],
            Format::TarGzip,
            1,
            &dir,
            &LIMITS,
        ));
        assert!(error.contains("corrupt"), "{error}");
        let (_root, dir) = target();
        let error = message(unpack(
            &b"<html>not found</html>"[..],
            Format::TarGzip,
            1,
            &dir,
            &LIMITS,
        ));
        assert!(
            error.starts_with("the archive is corrupt or not a gzipped tar"),
            "{error}"
        );
    }

    #[test]
    fn a_failing_source_is_not_called_corrupt() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other(SourceFailed("connection reset".into())))
            }
        }
        let (_root, dir) = target();
        let error = unpack(Broken, Format::TarGzip, 1, &dir, &LIMITS).unwrap_err();
        assert!(
            matches!(&error, UnpackError::Source(reason) if reason == "connection reset"),
            "{error}"
        );
    }

    #[test]
    fn emptying_removes_everything_but_follows_no_link() {
        let root = tempfile::tempdir().unwrap();
        let ws = root.path().join("ws");
        let outside = root.path().join("outside");
        std::fs::create_dir_all(ws.join("sub/deeper")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), "k").unwrap();
        std::fs::write(ws.join("sub/deeper/f"), "f").unwrap();
        std::os::unix::fs::symlink(&outside, ws.join("sub/link")).unwrap();
        std::os::unix::fs::symlink(&outside, ws.join("link")).unwrap();
        let dir = Dir::open_ambient_dir(&ws, cap_std::ambient_authority()).unwrap();
        empty(&dir).unwrap();
        assert_eq!(std::fs::read_dir(&ws).unwrap().count(), 0);
        assert_eq!(std::fs::read_to_string(outside.join("keep")).unwrap(), "k");
    }
}
