//! Job workspaces: one directory per job under `<data-dir>/workspaces/`, the only
//! filesystem a plugin can ever see, and only when its manifest grants one.
//!
//! [`Workspaces`] is the root and its layout: `<root>/<job-id>/` for a job's files,
//! `<root>/.trash/` for trees on their way out. [`Workspaces::begin`] gives an attempt
//! an empty directory of its own (a previous attempt's is moved out first, so a retry
//! starts clean) as an [`AttemptWorkspace`]: a guard that, unless the attempt completed
//! and called [`AttemptWorkspace::keep`], moves the tree into the trash when it is
//! dropped, in one `rename`, so the job's path is gone at once, before the worker
//! records how the attempt ended, even when the attempt's future is dropped by a cancel
//! or a deadline. The tree itself is deleted on a blocking thread once no unpacking
//! into it is under way. `unpack` is the safe extractor the host runs for the
//! `workspace.fetch-archive` import (see `runtime::workspace`).
//!
//! Removal never follows a link out of the tree: `std::fs::remove_dir_all` removes a
//! symbolic link, not what it points to, and the extractor never creates links anyway.
//! This module owns the directory layout and nothing else: what a job may keep is the
//! runtime's decision (an attempt that completed), when a kept one goes is retention's
//! (`retention::sweep_workspaces`).

pub mod unpack;

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::job::JobId;

/// The folder of `<root>` that holds trees being deleted.
const TRASH: &str = ".trash";

/// The workspaces' root directory. Cheap to clone; every clone names the same root.
#[derive(Clone, Debug)]
pub struct Workspaces {
    root: Arc<Path>,
}

impl Workspaces {
    /// The workspaces under `root`, created (mode 0700) with its trash if missing.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root: PathBuf = root.into();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root.join(TRASH))?;
        Ok(Self { root: root.into() })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where job `id`'s workspace is (whether or not it exists).
    pub fn path_of(&self, id: JobId) -> PathBuf {
        self.root.join(id.to_string())
    }

    /// An empty directory for an attempt of job `id`: whatever an earlier attempt left
    /// is moved to the trash first. The directory is opened here, so everything the
    /// attempt writes goes into this very directory even if the path is reused later.
    /// Blocking (a few system calls); the old tree is deleted on a blocking thread.
    pub fn begin(&self, id: JobId) -> io::Result<AttemptWorkspace> {
        let path = self.path_of(id);
        self.discard(id, &path, None);
        fs::DirBuilder::new().mode(0o755).create(&path)?;
        let dir = cap_std::fs::Dir::open_ambient_dir(&path, cap_std::ambient_authority())?;
        Ok(AttemptWorkspace {
            shared: Arc::new(Shared {
                workspaces: self.clone(),
                id,
                path,
                dir,
                unpacking: Mutex::new(()),
            }),
            kept: false,
        })
    }

    /// Removes job `id`'s workspace, if it has one; true when there was one. Blocking:
    /// call it from a blocking thread.
    pub fn remove(&self, id: JobId) -> io::Result<bool> {
        let path = self.path_of(id);
        match fs::symlink_metadata(&path) {
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(err) => return Err(err),
        }
        let trashed = self.trash_path(id);
        fs::rename(&path, &trashed)?;
        remove_tree(&trashed)?;
        Ok(true)
    }

    /// The jobs that have a workspace here, by their directories' names; anything
    /// else in the root is left alone. Blocking.
    pub fn job_ids(&self) -> io::Result<Vec<JobId>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if let Ok(uuid) = uuid::Uuid::parse_str(&name)
                && uuid.hyphenated().to_string() == name
            {
                ids.push(JobId::from(uuid));
            }
        }
        Ok(ids)
    }

    /// Deletes everything in the trash: trees left there by a daemon that died before
    /// it could delete them. Only at start-up, when no attempt is running. Blocking.
    pub fn empty_trash(&self) -> io::Result<usize> {
        let mut emptied = 0;
        for entry in fs::read_dir(self.root.join(TRASH))? {
            remove_tree(&entry?.path())?;
            emptied += 1;
        }
        Ok(emptied)
    }

    /// A fresh name in the trash for a tree of job `id`.
    fn trash_path(&self, id: JobId) -> PathBuf {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        self.root
            .join(TRASH)
            .join(format!("{id}.{}.{n}", std::process::id()))
    }

    /// Moves `path` (job `id`'s workspace) to the trash at once and deletes it on a
    /// blocking thread, after `unpacking` is free (no extractor writes into it any
    /// more). Logs what fails; a tree left in the trash goes at the next start.
    fn discard(&self, id: JobId, path: &Path, unpacking: Option<Arc<Shared>>) {
        let trashed = self.trash_path(id);
        match fs::rename(path, &trashed) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => return,
            Err(err) => {
                tracing::warn!(job_id = %id, path = %path.display(), error = %err, "cannot move a workspace to the trash");
                return;
            }
        }
        let delete = move || {
            // Held by an extractor still writing into the tree (a cancelled download):
            // wait for it to notice and stop, then delete.
            let _quiet = unpacking.as_ref().map(|shared| shared.lock_unpacking());
            if let Err(err) = remove_tree(&trashed) {
                tracing::warn!(job_id = %id, path = %trashed.display(), error = %err, "cannot delete a workspace");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(delete);
            }
            Err(_) => delete(),
        }
    }
}

/// Deletes the tree at `path` without following links (std's `remove_dir_all` removes
/// a symbolic link itself, never its target); a missing tree is fine.
fn remove_tree(path: &Path) -> io::Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(err) => Err(err),
    };
    match result {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        result => result,
    }
}

/// What an attempt's guard and the host calls into its workspace share.
struct Shared {
    workspaces: Workspaces,
    id: JobId,
    path: PathBuf,
    /// The directory as opened when the attempt began.
    dir: cap_std::fs::Dir,
    /// Held while an archive is unpacked into `dir`.
    unpacking: Mutex<()>,
}

impl Shared {
    fn lock_unpacking(&self) -> std::sync::MutexGuard<'_, ()> {
        self.unpacking
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One attempt's workspace: removed when dropped, unless [`AttemptWorkspace::keep`]
/// was called (see the module documentation).
pub struct AttemptWorkspace {
    shared: Arc<Shared>,
    kept: bool,
}

impl AttemptWorkspace {
    /// The directory on this machine.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// A handle for the host calls of this attempt (unpacking into the directory).
    pub fn handle(&self) -> WorkspaceHandle {
        WorkspaceHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The attempt completed: the directory stays with the job until retention
    /// removes it.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for AttemptWorkspace {
    fn drop(&mut self) {
        if !self.kept {
            let shared = &self.shared;
            shared
                .workspaces
                .discard(shared.id, &shared.path, Some(Arc::clone(shared)));
        }
    }
}

/// What a host call may do with the workspace of the attempt it serves.
#[derive(Clone)]
pub struct WorkspaceHandle {
    shared: Arc<Shared>,
}

impl WorkspaceHandle {
    /// The directory on this machine.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Unpacks `archive` into the workspace, which must be empty, under `limits`; on
    /// any failure the workspace is emptied again. Blocking: run it on a blocking
    /// thread. While it runs, a discarded workspace waits to be deleted.
    pub fn unpack(
        &self,
        archive: impl io::Read,
        format: unpack::Format,
        strip_components: u32,
        limits: &unpack::Limits,
    ) -> Result<unpack::Summary, unpack::UnpackError> {
        let _unpacking = self.shared.lock_unpacking();
        let dir = &self.shared.dir;
        if dir
            .entries()
            .map_err(unpack::UnpackError::io)?
            .next()
            .is_some()
        {
            return Err(unpack::UnpackError::NotEmpty);
        }
        let unpacked = unpack::unpack(archive, format, strip_components, dir, limits);
        if unpacked.is_err()
            && let Err(err) = unpack::empty(dir)
        {
            tracing::warn!(job_id = %self.shared.id, path = %self.shared.path.display(), error = %err, "cannot empty a workspace after a failed unpack");
        }
        unpacked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, Workspaces) {
        let dir = tempfile::tempdir().unwrap();
        let workspaces = Workspaces::open(dir.path().join("workspaces")).unwrap();
        (dir, workspaces)
    }

    #[test]
    fn an_attempt_that_is_not_kept_leaves_nothing() {
        let (_dir, workspaces) = root();
        let id = JobId::new();
        let attempt = workspaces.begin(id).unwrap();
        fs::write(attempt.path().join("file"), "x").unwrap();
        drop(attempt);
        assert!(!workspaces.path_of(id).exists());
        assert_eq!(workspaces.empty_trash().unwrap(), 0, "deleted inline");
    }

    #[test]
    fn a_kept_attempt_stays_until_removed_and_a_new_attempt_starts_empty() {
        let (_dir, workspaces) = root();
        let id = JobId::new();
        let attempt = workspaces.begin(id).unwrap();
        fs::write(attempt.path().join("file"), "x").unwrap();
        attempt.keep();
        assert!(workspaces.path_of(id).join("file").exists());
        assert_eq!(workspaces.job_ids().unwrap(), [id]);

        let again = workspaces.begin(id).unwrap();
        assert_eq!(fs::read_dir(again.path()).unwrap().count(), 0);
        again.keep();
        assert!(workspaces.remove(id).unwrap());
        assert!(!workspaces.remove(id).unwrap());
        assert!(workspaces.job_ids().unwrap().is_empty());
    }

    #[test]
    fn removal_deletes_links_not_what_they_point_to() {
        let (dir, workspaces) = root();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("precious"), "keep me").unwrap();
        let id = JobId::new();
        let attempt = workspaces.begin(id).unwrap();
        std::os::unix::fs::symlink(&outside, attempt.path().join("link")).unwrap();
        attempt.keep();
        assert!(workspaces.remove(id).unwrap());
        assert_eq!(
            fs::read_to_string(outside.join("precious")).unwrap(),
            "keep me"
        );
    }

    #[test]
    fn only_job_directories_are_listed() {
        let (_dir, workspaces) = root();
        fs::create_dir(workspaces.root().join("not-a-job")).unwrap();
        fs::write(workspaces.root().join("README"), "").unwrap();
        let id = JobId::new();
        workspaces.begin(id).unwrap().keep();
        assert_eq!(workspaces.job_ids().unwrap(), [id]);
    }
}
