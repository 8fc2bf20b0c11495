//! Archives for the fake forges: real gzipped tars as `git archive` makes them (a pax
//! global header carrying the commit, one top-level directory, a directory entry
//! before its files), and hostile ones, written header by header so that paths the
//! `tar` crate's builder would refuse (`../escape`, `/etc/passwd`) get through.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use tar::EntryType;

/// One tar entry.
pub struct Entry {
    path: Vec<u8>,
    kind: EntryType,
    data: Vec<u8>,
    link: String,
    mode: u32,
}

impl Entry {
    /// A regular file.
    pub fn file(path: &str, data: impl Into<Vec<u8>>) -> Self {
        Self {
            path: path.as_bytes().to_vec(),
            kind: EntryType::Regular,
            data: data.into(),
            link: String::new(),
            mode: 0o644,
        }
    }

    /// A directory (`path` ends with `/`).
    pub fn dir(path: &str) -> Self {
        Self {
            kind: EntryType::Directory,
            mode: 0o755,
            ..Self::file(path, "")
        }
    }

    /// A symbolic link to `target`.
    pub fn symlink(path: &str, target: &str) -> Self {
        Self {
            kind: EntryType::Symlink,
            link: target.to_owned(),
            mode: 0o777,
            ..Self::file(path, "")
        }
    }

    /// An entry of another `kind` (a device, a FIFO), without data.
    pub fn special(path: &str, kind: EntryType) -> Self {
        Self {
            kind,
            ..Self::file(path, "")
        }
    }

    /// A pax global header with `comment` (what `git archive` writes: the commit).
    fn pax_global_comment(comment: &str) -> Self {
        let record = pax_record("comment", comment);
        Self {
            kind: EntryType::XGlobalHeader,
            ..Self::file("pax_global_header", record)
        }
    }
}

/// One pax record, `"<length> key=value\n"`, its length counting itself.
fn pax_record(key: &str, value: &str) -> String {
    let rest = format!(" {key}={value}\n");
    let mut length = rest.len() + 1;
    while format!("{length}{rest}").len() != length {
        length += 1;
    }
    format!("{length}{rest}")
}

/// A tar of `entries`, each header written as is (its path in the name field), gzipped.
/// A path longer than the field's 100 bytes goes into a pax `path` record before its
/// entry, as `git archive` does.
pub fn tar_gz(entries: &[Entry]) -> Vec<u8> {
    let mut tar = Vec::new();
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        let name = &mut header.as_old_mut().name;
        if entry.path.len() > name.len() {
            let path = String::from_utf8(entry.path.clone()).expect("a UTF-8 path");
            let pax = Entry {
                kind: EntryType::XHeader,
                ..Entry::file("pax_header", pax_record("path", &path))
            };
            tar.extend_from_slice(&unterminated_tar(&[pax]));
            let short = &entry.path[..name.len()];
            name.copy_from_slice(short);
        } else {
            name[..entry.path.len()].copy_from_slice(&entry.path);
        }
        header.set_entry_type(entry.kind);
        header.set_size(entry.data.len() as u64);
        header.set_mode(entry.mode);
        header.set_mtime(1_700_000_000);
        if !entry.link.is_empty() {
            header
                .set_link_name(&entry.link)
                .expect("a short link target");
        }
        header.set_cksum();
        tar.extend_from_slice(header.as_bytes());
        tar.extend_from_slice(&entry.data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.resize(tar.len() + 1024, 0);
    gzip(&tar)
}

/// The records of `entries` (short paths only), without the end-of-archive blocks.
fn unterminated_tar(entries: &[Entry]) -> Vec<u8> {
    let mut tar = Vec::new();
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..entry.path.len()].copy_from_slice(&entry.path);
        header.set_entry_type(entry.kind);
        header.set_size(entry.data.len() as u64);
        header.set_mode(entry.mode);
        header.set_cksum();
        tar.extend_from_slice(header.as_bytes());
        tar.extend_from_slice(&entry.data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar
}

fn gzip(tar: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(tar).expect("gzip");
    encoder.finish().expect("gzip")
}

/// A forge's archive of commit `sha`: everything under the directory `top`, with a
/// directory entry for each directory and `files` (`path`, contents) and `links`
/// (`path`, target) in it.
pub fn forge_archive(
    top: &str,
    sha: &str,
    files: &[(&str, &str)],
    links: &[(&str, &str)],
) -> Vec<u8> {
    let mut entries = vec![
        Entry::pax_global_comment(sha),
        Entry::dir(&format!("{top}/")),
    ];
    let mut directories = std::collections::BTreeSet::new();
    for (path, _) in files.iter().chain(links) {
        let mut parent = std::path::Path::new(path).parent();
        while let Some(directory) = parent.filter(|p| !p.as_os_str().is_empty()) {
            directories.insert(directory.display().to_string());
            parent = directory.parent();
        }
    }
    for directory in &directories {
        entries.push(Entry::dir(&format!("{top}/{directory}/")));
    }
    for (path, contents) in files {
        entries.push(Entry::file(&format!("{top}/{path}"), *contents));
    }
    for (path, target) in links {
        entries.push(Entry::symlink(&format!("{top}/{path}"), target));
    }
    tar_gz(&entries)
}

/// Every path under `dir`, relative, sorted; directories end with `/`. Panics on a
/// link: a workspace never holds one.
pub fn tree(dir: &std::path::Path) -> Vec<String> {
    fn walk(dir: &std::path::Path, prefix: &str, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read a workspace") {
            let entry = entry.expect("an entry");
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            let kind = entry.file_type().expect("a file type");
            assert!(!kind.is_symlink(), "a link in the workspace: {name}");
            if kind.is_dir() {
                out.push(format!("{name}/"));
                walk(&entry.path(), &format!("{name}/"), out);
            } else {
                out.push(name);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out);
    out.sort();
    out
}
