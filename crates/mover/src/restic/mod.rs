//! Backups in the restic repository format (`format: restic`): deduplicated, compressed and
//! encrypted, readable by the standard `restic` tool with the password alone. rustic_core
//! writes the format; `backend` keeps its files in a Backstop repository (directory or S3) and
//! `source` walks volumes as every Backstop backup does.
//!
//! rustic_core takes no locks; `locks` keeps restic's own (shared for a backup, exclusive for a
//! forget or prune; a restore or verification, whose repository is mounted read-only, writes
//! none and waits while an exclusive one stands), so that a `restic prune` run by a person never
//! removes data a Backstop backup relies on. Prune also removes what it
//! has marked unused only `keep_delete` later (the repository's `keepDeleteHours`). A mover
//! killed halfway leaves a lock that is stale 30 minutes later.

pub mod backend;
pub mod locks;
mod restore;
pub mod source;

use crate::repository::{Reason, Repository};
pub use backstop_api::contract::Pruned;
use rustic_core::repofile::SnapshotFile;
use rustic_core::{
    BackupOptions, ConfigOptions, Credentials, KeyOptions, OpenStatus, PruneOptions,
    RepositoryBackends, RepositoryOptions, RusticError, SnapshotOptions,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A failure, with the condition reason a user acts on.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ResticError {
    pub reason: Reason,
    pub message: String,
}

/// An open restic repository.
pub struct Restic {
    repo: rustic_core::Repository<OpenStatus>,
    /// The reason of the backend's last storage failure, if it had one.
    failure: Arc<Mutex<Option<Reason>>>,
    store: Arc<dyn Repository>,
    root: String,
}

/// How long a mover waits for another holder's restic lock before it fails.
pub const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(600);

/// What a backup of one volume stores about it: restic's host, path and tags.
#[derive(Debug, Clone)]
pub struct Labels {
    /// restic's host: the namespace.
    pub host: String,
    /// The snapshot's path, `/<pvc>`.
    pub path: PathBuf,
    pub tags: Vec<String>,
}

/// One volume's snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The snapshot's id (64 hex digits; restic shows the first 8).
    pub id: String,
    /// The snapshot it was compared with (unchanged files were not read again).
    pub parent: Option<String>,
    pub files: u64,
    pub dirs: u64,
    /// Bytes of the files backed up (read or, unchanged, taken from the parent).
    pub bytes: u64,
    /// Files new or changed since the parent: the ones read.
    pub files_read: u64,
    /// What the repository grew by, compressed and encrypted.
    pub bytes_added: u64,
    /// Entries left out because they vanished or were swapped while the volume was read.
    pub changed: u64,
}

impl Restic {
    /// Opens the restic repository below `root`; with `create`, initialises it when there is
    /// none (a repository that exists is only opened).
    pub fn open(
        store: Arc<dyn Repository>,
        root: &str,
        password: &str,
        create: bool,
    ) -> Result<(Restic, bool), ResticError> {
        if password.is_empty() {
            return Err(ResticError {
                reason: Reason::CredentialsMissing,
                message: "no repository password: set RESTIC_PASSWORD (the key of the Secret named in passwordSecretRef)".into(),
            });
        }
        let be = backend::Backend::new(store.clone(), root);
        let failure = be.failure();
        let backends = RepositoryBackends::new(Arc::new(be), None);
        let options = RepositoryOptions::default().no_cache(true);
        let fail = |e: Box<RusticError>, reason| error(&failure, &e, reason);
        let repo = rustic_core::Repository::new(&options, &backends)
            .map_err(|e| fail(e, Reason::RepositoryUnusable))?;
        let credentials = Credentials::Password(password.to_string());
        let exists = repo
            .config_id()
            .map_err(|e| fail(e, Reason::RepositoryUnusable))?
            .is_some();
        let (repo, created) = if exists {
            (repo.open(&credentials), false)
        } else if create {
            let key = KeyOptions::default().hostname(Some("backstop".to_string()));
            (
                repo.init(&credentials, &key, &ConfigOptions::default()),
                true,
            )
        } else {
            return Err(ResticError {
                reason: Reason::RepositoryUnusable,
                message: format!(
                    "no restic repository at {root}: the repository's probe creates it"
                ),
            });
        };
        let repo = repo.map_err(|e| fail(e, Reason::RepositoryUnusable))?;
        let root = root.to_string();
        Ok((
            Restic {
                repo,
                failure,
                store,
                root,
            },
            created,
        ))
    }

    fn locks(&self) -> locks::Locks {
        locks::Locks {
            store: self.store.clone(),
            root: self.root.clone(),
            key: self.repo.key(),
        }
    }

    /// Takes restic's lock on this repository, `exclusive` or shared, waiting up to `patience`
    /// for another holder (see `locks`); it is held until the returned value is dropped.
    pub fn lock(
        &self,
        exclusive: bool,
        patience: std::time::Duration,
    ) -> Result<locks::Held, ResticError> {
        self.locks().take(exclusive, patience)
    }

    /// Waits up to `patience` while someone holds restic's exclusive lock, writing none (a
    /// reader of a repository it may not write).
    pub fn wait_for_exclusive(&self, patience: std::time::Duration) -> Result<(), ResticError> {
        self.locks().wait_for_exclusive(patience)
    }

    fn fail(&self, e: &RusticError, reason: Reason) -> ResticError {
        error(&self.failure, e, reason)
    }

    /// Backs up the volume mounted at `source` as one snapshot, compared with the last one of
    /// the same host, path and label (so unchanged files are not read). Fails, storing no
    /// snapshot, when anything in the volume could not be read.
    pub fn backup(self, source: &Path, labels: &Labels) -> Result<Snapshot, ResticError> {
        let Restic { repo, failure, .. } = self;
        let fail = |e: Box<RusticError>, reason| error(&failure, &e, reason);
        let repo = repo
            .to_indexed_ids()
            .map_err(|e| fail(e, Reason::RepositoryUnusable))?;
        let mut options = SnapshotOptions::default().host(labels.host.clone());
        for tag in &labels.tags {
            options = options
                .add_tags(tag)
                .map_err(|e| fail(e, Reason::InvalidSpec))?;
        }
        let snap = options
            .to_snapshot()
            .map_err(|e| fail(e, Reason::MoverFailed))?;
        let volume = source::Volume::new(source, &labels.path);
        let problems = volume.problems();
        let opts = BackupOptions::default().as_path(Some(labels.path.clone()));
        let snap = repo
            .archive(&opts, &volume, snap, &[source.to_path_buf()])
            .map_err(|e| fail(e, Reason::RepositoryWriteFailed))?;
        let problems = problems.lock().unwrap_or_else(|e| e.into_inner());
        if problems.unreadable_count > 0 {
            // What was stored is kept for the next backup to build on, but no snapshot says
            // the volume was backed up.
            let _ = repo.delete_snapshots(&[snap.id]);
            return Err(ResticError {
                reason: Reason::SourceUnreadable,
                message: format!(
                    "{} entries of the volume could not be read, e.g. {}",
                    problems.unreadable_count,
                    problems.unreadable.join("; ")
                ),
            });
        }
        Ok(snapshot(&snap, problems.changed))
    }

    /// Every snapshot in the repository.
    pub fn snapshots(&self) -> Result<Vec<SnapshotFile>, ResticError> {
        self.repo
            .get_all_snapshots()
            .map_err(|e| self.fail(&e, Reason::RepositoryUnusable))
    }

    /// Removes the snapshots `ids` (full ids only: a prefix could name others) that are
    /// tagged as Backup `backup`'s: a Backup's status names its snapshots, and an imported
    /// Backup's status comes from text anyone who may create Backups can write, so the tag
    /// decides. Ids no longer there are skipped. Their data stays until prune. The ids removed.
    pub fn forget(&self, ids: &[String], backup: &str) -> Result<Vec<String>, ResticError> {
        let tag = format!("backup={backup}");
        let present: Vec<_> = self
            .snapshots()?
            .into_iter()
            .filter(|s| ids.iter().any(|id| *id == *s.id.to_hex()) && s.tags.contains(&tag))
            .map(|s| s.id)
            .collect();
        self.repo
            .delete_snapshots(&present)
            .map_err(|e| self.fail(&e, Reason::ArtifactsNotRemoved))?;
        Ok(present.iter().map(|id| id.to_hex().to_string()).collect())
    }

    /// Reclaims the space of data no snapshot uses. Packs are first marked unused and removed
    /// by a prune `keep_delete` later, so a backup running meanwhile that still relies on them
    /// is never broken; `instant` removes them now (only when nothing else writes).
    pub fn prune(
        &self,
        keep_delete: std::time::Duration,
        instant: bool,
    ) -> Result<Pruned, ResticError> {
        let span = rustic_core::jiff::Span::try_from(keep_delete).map_err(|e| ResticError {
            reason: Reason::InvalidSpec,
            message: format!("keep-delete {keep_delete:?}: {e}"),
        })?;
        let mut opts = PruneOptions::default().instant_delete(instant);
        opts.keep_delete = span;
        let snapshots = self.snapshots()?.len() as u64;
        let plan = self
            .repo
            .prune_plan(&opts)
            .map_err(|e| self.fail(&e, Reason::RepositoryUnusable))?;
        let stats = &plan.stats;
        let pruned = Pruned {
            snapshots,
            unused_packs: stats.packs.unused,
            unused_bytes: stats.size_sum().unused,
            marked_packs_removed: stats.packs_to_delete.remove,
        };
        self.repo
            .prune(&opts, plan)
            .map_err(|e| self.fail(&e, Reason::ArtifactsNotRemoved))?;
        Ok(pruned)
    }
}

fn snapshot(snap: &SnapshotFile, changed: u64) -> Snapshot {
    let summary = snap.summary.clone().unwrap_or_default();
    Snapshot {
        id: snap.id.to_hex().to_string(),
        parent: snap.parent.map(|p| p.to_hex().to_string()),
        files: summary.total_files_processed,
        dirs: summary.total_dirs_processed,
        bytes: summary.total_bytes_processed,
        files_read: summary.files_new + summary.files_changed,
        bytes_added: summary.data_added_packed,
        changed,
    }
}

/// The failure for rustic's error `e`: a storage failure's reason when the backend kept one,
/// `WrongPassword` for a password no key takes, else `reason`.
fn error(failure: &Mutex<Option<Reason>>, e: &RusticError, reason: Reason) -> ResticError {
    let kept = *failure.lock().unwrap_or_else(|p| p.into_inner());
    let reason = match kept {
        Some(kept) => kept,
        None if e.is_incorrect_password() => Reason::WrongPassword,
        None => reason,
    };
    let mut message = e.display_log();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    if reason == Reason::WrongPassword {
        message = "the password does not open the restic repository (no key takes it): check the Secret named in passwordSecretRef".into();
    }
    ResticError { reason, message }
}
