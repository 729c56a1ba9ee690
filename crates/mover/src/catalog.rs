//! What a repository holds of one namespace's backups, for a sync (disaster recovery). Only
//! `<namespace>/` is ever listed or read: a namespace's sync cannot see another's backups.
//!
//! tar format: each backup directory `<namespace>/<backup>/` holds, per volume, an artifact, a
//! manifest and (last) a record; the records of every volume make the backup. restic format:
//! the snapshots of host `<namespace>` tagged `backstop` are the records (`record` module).

use crate::repository::{Repository, RepositoryError};
use crate::restic::{Restic, ResticError};
use backstop_api::backup::ResticSnapshot;
use backstop_api::contract::{self, BackupResult, LEGACY_MANIFEST_SUFFIX, MANIFEST_SUFFIX};
use backstop_api::record::{self, ImportRecord, RECORD_SUFFIX, RecordContext, VolumeRecord};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

/// The largest record read (a record is a few hundred bytes; a bigger one is not ours).
const RECORD_MAX_BYTES: usize = 1 << 20;

/// A namespace's part of a tar repository, by backup directory.
#[derive(Debug, Default, PartialEq)]
pub struct Listing {
    pub backups: BTreeMap<String, Dir>,
    /// Keys that are in no backup directory (`<namespace>/<file>`, or deeper than a backup's
    /// files): not Backstop's.
    pub foreign: Vec<String>,
}

/// What one backup directory holds.
#[derive(Debug, Default, PartialEq)]
pub struct Dir {
    /// Volumes with a record.
    pub records: BTreeSet<String>,
    /// Volumes with a manifest.
    pub manifests: BTreeSet<String>,
    /// The latest conclusive verification was recorded.
    pub verification: bool,
}

/// Writes the record of the volume `result` describes into the backup directory `dir`, after its
/// manifest: what a cluster that never saw the backup rebuilds its Backup from.
pub fn keep(
    repo: &dyn Repository,
    dir: &str,
    context: &RecordContext,
    result: &BackupResult,
    completion_time: jiff::Timestamp,
) -> Result<(), RepositoryError> {
    let record = VolumeRecord {
        version: record::RECORD_VERSION,
        context: context.clone(),
        completion_time,
        result: result.clone(),
    };
    let key = record::record_key(dir, &result.pvc);
    let json = serde_json::to_vec_pretty(&record).map_err(|e| RepositoryError::Write {
        key: key.clone(),
        source: std::io::Error::other(e),
    })?;
    repo.put(&key, &json)
}

/// One thing `scan` finds in a namespace's part of a tar repository.
#[derive(Debug, PartialEq)]
pub enum Entry {
    /// A backup directory, once every key in it was seen.
    Backup(String, Dir),
    /// A key in no backup directory (`<namespace>/<file>`, or deeper than a backup's files):
    /// not Backstop's.
    Foreign(String),
}

/// Walks `namespace`'s part of a tar repository (its restic repository, `_restic`, and the
/// writer's marker aside) in key order, handing `visit` each backup directory when its last key
/// was seen and each foreign key: the keys of one directory are listed together (they share its
/// prefix), so only one directory is held at a time, whatever the number of objects. A listing
/// out of order (no S3 implementation does that: ListObjectsV2 returns keys sorted) is an error,
/// not a guess.
pub fn scan(
    repo: &dyn Repository,
    namespace: &str,
    mut visit: impl FnMut(Entry),
) -> Result<(), RepositoryError> {
    let prefix = format!("{namespace}/");
    let restic = format!("{}/", contract::restic_root(namespace));
    let mut current: Option<(String, Dir)> = None;
    let mut last = String::new();
    // Object storage lists by key prefix: `shop` also lists `shopping/...`.
    for listed in repo.list_in_order(namespace)? {
        let (key, _) = listed?;
        if key <= last {
            return Err(RepositoryError::Read {
                key,
                source: std::io::Error::other(format!(
                    "the storage listed keys out of order (after {last:?}): a sync needs them sorted, as S3's ListObjectsV2 returns them"
                )),
            });
        }
        last.clone_from(&key);
        let Some(rest) = key.strip_prefix(&prefix) else {
            continue;
        };
        if key.starts_with(&restic) || rest == backstop_api::ownership::OWNER_FILE {
            continue;
        }
        let Some((dir, file)) = rest.split_once('/').filter(|(_, f)| !f.contains('/')) else {
            visit(Entry::Foreign(key));
            continue;
        };
        if current.as_ref().is_none_or(|(name, _)| name != dir) {
            if let Some((name, done)) = current.take() {
                visit(Entry::Backup(name, done));
            }
            current = Some((dir.to_string(), Dir::default()));
        }
        let Some((_, entry)) = current.as_mut() else {
            continue;
        };
        if file == record::VERIFICATION_FILE {
            entry.verification = true;
        } else if let Some(pvc) = file.strip_suffix(RECORD_SUFFIX) {
            entry.records.insert(pvc.to_string());
        } else if let Some(pvc) = file
            .strip_suffix(MANIFEST_SUFFIX)
            .or_else(|| file.strip_suffix(LEGACY_MANIFEST_SUFFIX))
        {
            entry.manifests.insert(pvc.to_string());
        }
    }
    if let Some((name, done)) = current {
        visit(Entry::Backup(name, done));
    }
    Ok(())
}

/// Everything `scan` finds, gathered (for tests and small repositories).
pub fn list(repo: &dyn Repository, namespace: &str) -> Result<Listing, RepositoryError> {
    let mut listing = Listing::default();
    scan(repo, namespace, |entry| match entry {
        Entry::Backup(name, dir) => {
            listing.backups.insert(name, dir);
        }
        Entry::Foreign(key) => listing.foreign.push(key),
    })?;
    Ok(listing)
}

/// The backup in directory `backup` of `namespace`, from its records; `Err` says why it is not
/// a whole backup of this namespace that can be imported.
pub fn read(
    repo: &dyn Repository,
    namespace: &str,
    backup: &str,
    dir: &Dir,
) -> Result<ImportRecord, String> {
    if dir.records.is_empty() {
        return Err(if dir.manifests.is_empty() {
            "no record and no manifest: not a Backstop backup".into()
        } else {
            "no record: made by a Backstop that kept no records yet (its manifest and artifact can still be read with zstd and tar by hand)".into()
        });
    }
    let base = contract::backup_dir(namespace, backup);
    let mut records = Vec::new();
    for pvc in &dir.records {
        if !dir.manifests.contains(pvc) {
            return Err(format!("volume {pvc:?} has a record but no manifest"));
        }
        let key = record::record_key(&base, pvc);
        let bytes = small(repo, &key)?;
        let parsed: VolumeRecord = serde_json::from_slice(&bytes)
            .map_err(|e| format!("record {key} is not readable: {e}"))?;
        if parsed.result.pvc != *pvc {
            return Err(format!("record {key} is of volume {:?}", parsed.result.pvc));
        }
        records.push(parsed);
    }
    let mut found = record::gather(namespace, backup, records)?;
    if dir.verification {
        found.verification = verification(repo, namespace, backup);
    }
    Ok(found)
}

/// The latest conclusive verification recorded for `backup` of `namespace`, if any can be
/// read (one that cannot only costs the imported Backup its `Verified` condition).
pub fn verification(
    repo: &dyn Repository,
    namespace: &str,
    backup: &str,
) -> Option<record::VerificationRecord> {
    let key = record::verification_key(&contract::backup_dir(namespace, backup));
    serde_json::from_slice(&small(repo, &key).ok()?).ok()
}

/// The object under `key`, read only up to `RECORD_MAX_BYTES` (one byte more says it is too big):
/// a repository's bytes may be anyone's, and a huge "record" must not take the pod's memory.
fn small(repo: &dyn Repository, key: &str) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    repo.open(key)
        .map_err(|e| e.to_string())?
        .take(RECORD_MAX_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading {key}: {e}"))?;
    if bytes.len() > RECORD_MAX_BYTES {
        return Err(format!(
            "{key} is larger than {RECORD_MAX_BYTES} bytes: not a record"
        ));
    }
    Ok(bytes)
}

/// The backups of host `namespace` in an open restic repository, by name: each from its
/// snapshots, or why they do not make one. Snapshots of other hosts are not looked at; those
/// without a `backstop` tag are someone else's and left out.
pub fn restic_backups(
    restic: &Restic,
    namespace: &str,
) -> Result<BTreeMap<String, Result<ImportRecord, String>>, ResticError> {
    let root = contract::restic_root(namespace);
    let mut by_backup: BTreeMap<String, Result<Vec<VolumeRecord>, String>> = BTreeMap::new();
    for snap in restic.snapshots()? {
        if snap.hostname != namespace || !snap.tags.contains("backstop") {
            continue;
        }
        let tags: Vec<String> = snap.tags.iter().cloned().collect();
        let id = snap.id.to_hex().to_string();
        let Some(backup) = record::tag(&tags, "backup").map(str::to_string) else {
            continue;
        };
        let volume = (|| {
            let context = record::context_from_tags(namespace, &tags)?;
            let pvc = record::tag(&tags, "pvc").ok_or("no pvc= tag")?.to_string();
            let summary = snap.summary.clone().ok_or("no summary")?;
            let completion_time = summary
                .backup_end
                .timestamp()
                .to_string()
                .parse()
                .map_err(|e| format!("end time: {e}"))?;
            Ok::<_, String>(VolumeRecord {
                version: record::RECORD_VERSION,
                context,
                completion_time,
                result: BackupResult {
                    pvc,
                    artifact: root.clone(),
                    bytes: summary.data_added_packed,
                    digest: id.clone(),
                    files: summary.total_files_processed,
                    source_bytes: summary.total_bytes_processed,
                    changed_while_reading: 0,
                    changed_files: Vec::new(),
                    restic: Some(ResticSnapshot {
                        id: id.clone(),
                        parent: snap.parent.map(|p| p.to_hex().to_string()),
                        files_read: summary.files_new + summary.files_changed,
                    }),
                },
            })
        })()
        .map_err(|e| format!("snapshot {}: {e}", &id[..8]));
        let entry = by_backup.entry(backup).or_insert_with(|| Ok(Vec::new()));
        match (entry, volume) {
            (Ok(volumes), Ok(volume)) => volumes.push(volume),
            (entry @ Ok(_), Err(e)) => *entry = Err(e),
            (Err(_), _) => {}
        }
    }
    Ok(by_backup
        .into_iter()
        .map(|(backup, volumes)| {
            let found = volumes.and_then(|v| record::gather(namespace, &backup, v));
            (backup, found)
        })
        .collect())
}
