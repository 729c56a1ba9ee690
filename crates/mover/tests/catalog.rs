//! What a sync finds in a repository (disaster recovery): the records a backup keeps beside its
//! data make the whole backup again, in both formats, and anything else under the namespace
//! (foreign files, half-written or corrupt backups, another namespace's records) is skipped with
//! a reason, never imported.

use backstop_api::contract::{self, BackupResult};
use backstop_api::record::{self, RecordContext};
use backstop_mover::backup::{self, BackupRequest, Compression};
use backstop_mover::catalog;
use backstop_mover::repository::{DirRepository, Repository, RepositoryError};
use backstop_mover::restic::{Labels, Restic};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn context(backup: &str, pvc: &str, volumes: &[&str]) -> RecordContext {
    RecordContext {
        namespace: "shop".into(),
        backup: backup.into(),
        policy: Some("nightly".into()),
        scheduled_time: Some("2026-11-28T02:00:00Z".parse().unwrap()),
        start_time: "2026-11-28T02:00:01Z".parse().unwrap(),
        volumes: volumes.iter().map(|v| v.to_string()).collect(),
        capacity: Some(if pvc == "db" { "2Gi" } else { "1Gi" }.into()),
        storage_class_name: Some("fast".into()),
        ..RecordContext::default()
    }
}

fn volume(root: &Path, name: &str, files: usize) -> PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    for i in 0..files {
        fs::write(dir.join(format!("f{i}")), format!("{name} {i}").repeat(100)).unwrap();
    }
    dir
}

/// Backs up `pvc` of `backup` as the mover does: artifact, manifest, then its record.
fn back_up(
    repo: &dyn Repository,
    source: &Path,
    backup: &str,
    pvc: &str,
    volumes: &[&str],
) -> BackupResult {
    let dir = contract::backup_dir("shop", backup);
    let result = backup::run(
        repo,
        &BackupRequest {
            source,
            pvc,
            dir: &dir,
            compression: Compression::Zstd,
            created_at: "2026-11-28T02:00:01Z".into(),
        },
    )
    .unwrap();
    let ended = "2026-11-28T02:00:09Z".parse().unwrap();
    catalog::keep(repo, &dir, &context(backup, pvc, volumes), &result, ended).unwrap();
    result
}

#[test]
fn the_records_of_a_tar_repository_make_its_backups_again_and_the_rest_is_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = DirRepository::new(tmp.path().join("repository"));
    let db = volume(tmp.path(), "db", 3);
    let logs = volume(tmp.path(), "logs", 2);
    let both = ["db", "logs"];
    let db_result = back_up(&repo, &db, "nightly-1", "db", &both);
    back_up(&repo, &logs, "nightly-1", "logs", &both);
    // A backup whose second volume never completed.
    back_up(&repo, &db, "nightly-2", "db", &both);
    // A backup from before records: a manifest only.
    back_up(&repo, &db, "old", "db", &["db"]);
    repo.remove(&record::record_key("shop/old", "db")).unwrap();
    // Someone else's files, a corrupt record, another namespace's record copied in.
    repo.put("shop/stray.bin", b"junk").unwrap();
    repo.put("shop/photos/2026/cat.jpg", b"junk").unwrap();
    repo.put("shop/notes/readme.txt", b"junk").unwrap();
    back_up(&repo, &db, "corrupt", "db", &["db"]);
    repo.put(&record::record_key("shop/corrupt", "db"), b"{not json")
        .unwrap();
    back_up(&repo, &db, "copied", "db", &["db"]);
    let mut foreign: record::VolumeRecord =
        serde_json::from_slice(&repo.get(&record::record_key("shop/copied", "db")).unwrap())
            .unwrap();
    foreign.context.namespace = "bank".into();
    repo.put(
        &record::record_key("shop/copied", "db"),
        &serde_json::to_vec(&foreign).unwrap(),
    )
    .unwrap();
    // A "record" far larger than any record is not read whole.
    back_up(&repo, &db, "huge", "db", &["db"]);
    repo.put(&record::record_key("shop/huge", "db"), &vec![b' '; 3 << 20])
        .unwrap();
    // Another namespace's backup is never listed.
    repo.put("bank/nightly-1/db.record.json", b"{}").unwrap();

    let listing = catalog::list(&repo, "shop").unwrap();
    assert_eq!(
        listing.foreign,
        vec![
            "shop/photos/2026/cat.jpg".to_string(),
            "shop/stray.bin".to_string()
        ]
    );
    assert!(!listing.backups.contains_key("photos"), "{listing:?}");
    let read = |name: &str| catalog::read(&repo, "shop", name, &listing.backups[name]);

    assert_eq!(read("nightly-1").unwrap().verification, None);
    // A conclusive verification recorded beside the backup comes back with it.
    let checked = record::VerificationRecord {
        version: record::RECORD_VERSION,
        backup: "nightly-1".into(),
        request: "weekly".into(),
        mode: backstop_api::VerificationMode::Artifact,
        phase: backstop_api::VerificationPhase::Passed,
        completion_time: "2026-11-29T04:00:00Z".parse().unwrap(),
        reason: "ArtifactVerified".into(),
        message: "2 artifacts read back".into(),
    };
    repo.put(
        &record::verification_key("shop/nightly-1"),
        &serde_json::to_vec(&checked).unwrap(),
    )
    .unwrap();
    let listing = catalog::list(&repo, "shop").unwrap();
    let read = |name: &str| catalog::read(&repo, "shop", name, &listing.backups[name]);
    let whole = read("nightly-1").unwrap();
    assert_eq!(whole.verification.as_ref(), Some(&checked));
    assert_eq!(whole.policy.as_deref(), Some("nightly"));
    assert_eq!(whole.volumes.len(), 2);
    assert_eq!(whole.volumes[0].result, db_result);
    assert_eq!(whole.volumes[0].capacity.as_deref(), Some("2Gi"));
    // The operator accepts it as this Backup's own.
    let status = whole
        .status("shop", "nightly-1", "nfs", jiff::Timestamp::now())
        .unwrap();
    assert_eq!(status.total_files, Some(5));

    assert!(
        read("nightly-2")
            .unwrap_err()
            .contains("incomplete: no record of volume logs")
    );
    assert!(read("old").unwrap_err().contains("no record"));
    assert!(read("notes").unwrap_err().contains("not a Backstop backup"));
    assert!(read("corrupt").unwrap_err().contains("not readable"));
    assert!(read("huge").unwrap_err().contains("larger than"));
    assert!(read("copied").unwrap_err().contains("namespace \"bank\""));
    assert_eq!(catalog::list(&repo, "bank").unwrap().backups.len(), 1);
}

#[test]
fn a_deleted_backup_loses_its_records_first() {
    // The delete Job removes the records before the rest: a listing taken during the removal
    // finds no record, so the backup is not brought back half gone.
    let tmp = tempfile::tempdir().unwrap();
    let repo = DirRepository::new(tmp.path().join("repository"));
    let db = volume(tmp.path(), "db", 1);
    back_up(&repo, &db, "nightly-1", "db", &["db"]);
    repo.remove(&record::record_key("shop/nightly-1", "db"))
        .unwrap();
    let listing = catalog::list(&repo, "shop").unwrap();
    assert!(catalog::read(&repo, "shop", "nightly-1", &listing.backups["nightly-1"]).is_err());
}

#[test]
fn restic_snapshots_are_their_own_records() {
    let tmp = tempfile::tempdir().unwrap();
    let store: Arc<dyn Repository> = Arc::new(DirRepository::new(tmp.path().join("repository")));
    let db = volume(tmp.path(), "db", 3);
    let logs = volume(tmp.path(), "logs", 2);
    let open = || {
        Restic::open(store.clone(), "shop/_restic", "pw", true)
            .unwrap()
            .0
    };
    let snapshot = |backup: &str, pvc: &str, source: &Path, host: &str, volumes: &[&str]| {
        let mut tags = vec![
            "backstop".to_string(),
            format!("backup={backup}"),
            format!("pvc={pvc}"),
            "policy=nightly".into(),
        ];
        tags.extend(record::context_tags(&context(backup, pvc, volumes)));
        let labels = Labels {
            host: host.into(),
            path: PathBuf::from(format!("/{pvc}")),
            tags,
        };
        open().backup(source, &labels).unwrap()
    };
    let both = ["db", "logs"];
    let db_snap = snapshot("nightly-1", "db", &db, "shop", &both);
    snapshot("nightly-1", "logs", &logs, "shop", &both);
    snapshot("nightly-2", "db", &db, "shop", &both);
    // Another host's snapshot in the same repository, and one without Backstop's tag.
    snapshot("other", "db", &db, "bank", &["db"]);
    let untagged = Labels {
        host: "shop".into(),
        path: "/db".into(),
        tags: vec!["backup=mine".into()],
    };
    open().backup(&db, &untagged).unwrap();

    let found = catalog::restic_backups(&open(), "shop").unwrap();
    assert_eq!(
        found.keys().collect::<Vec<_>>(),
        vec!["nightly-1", "nightly-2"]
    );
    let whole = found["nightly-1"].as_ref().unwrap();
    let db_volume = &whole.volumes[0].result;
    assert_eq!(db_volume.restic.as_ref().unwrap().id, db_snap.id);
    assert_eq!(
        (db_volume.files, db_volume.source_bytes),
        (db_snap.files, db_snap.bytes)
    );
    assert_eq!(whole.volumes[1].storage_class_name.as_deref(), Some("fast"));
    assert_eq!(whole.start_time, "2026-11-28T02:00:01Z".parse().unwrap());
    let status = whole
        .status("shop", "nightly-1", "s3", jiff::Timestamp::now())
        .unwrap();
    assert_eq!(status.volumes[0].restic.as_ref().unwrap().id, db_snap.id);
    assert!(
        found["nightly-2"]
            .as_ref()
            .unwrap_err()
            .contains("incomplete")
    );
    // Its verification is kept beside the restic repository, in the backup's own directory.
    assert_eq!(
        catalog::verification(store.as_ref(), "shop", "nightly-1"),
        None
    );
    store
        .put(&record::verification_key("shop/nightly-1"), b"{broken")
        .unwrap();
    assert_eq!(
        catalog::verification(store.as_ref(), "shop", "nightly-1"),
        None
    );
}

/// A repository whose listing comes in the reverse of key order.
struct Unsorted(DirRepository);

impl backstop_mover::repository::Repository for Unsorted {
    fn create(
        &self,
        key: &str,
    ) -> Result<Box<dyn backstop_mover::repository::Upload>, RepositoryError> {
        self.0.create(key)
    }
    fn open(&self, key: &str) -> Result<Box<dyn std::io::Read + Send>, RepositoryError> {
        self.0.open(key)
    }
    fn remove(&self, key: &str) -> Result<(), RepositoryError> {
        self.0.remove(key)
    }
    fn remove_prefix(&self, prefix: &str) -> Result<(), RepositoryError> {
        self.0.remove_prefix(prefix)
    }
    fn list_in_order<'a>(
        &'a self,
        prefix: &str,
    ) -> Result<backstop_mover::repository::Listed<'a>, RepositoryError> {
        let mut all: Vec<_> = self.0.list_in_order(prefix)?.collect();
        all.reverse();
        Ok(Box::new(all.into_iter()))
    }
    fn read_range(&self, key: &str, o: u64, n: u64) -> Result<Vec<u8>, RepositoryError> {
        self.0.read_range(key, o, n)
    }
}

#[test]
fn a_scan_holds_one_backup_directory_at_a_time_and_refuses_a_listing_out_of_order() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = DirRepository::new(tmp.path());
    for key in [
        "shop/a/db.record.json",
        "shop/a/db.manifest.jsonl.zst",
        "shop/a-b/logs.record.json",
        "shop/_owner.json",
        "shop/_restic/config",
        "shop/stray.bin",
    ] {
        repo.put(key, b"x").unwrap();
    }
    let mut seen = Vec::new();
    catalog::scan(&repo, "shop", |entry| {
        seen.push(match entry {
            catalog::Entry::Backup(name, dir) => format!(
                "backup {name}: records {:?} manifests {:?}",
                dir.records, dir.manifests
            ),
            catalog::Entry::Foreign(key) => format!("foreign {key}"),
        })
    })
    .unwrap();
    // Each directory is handed over once, whole; the marker and the restic repository are the
    // namespace's own, not foreign.
    seen.sort();
    assert_eq!(
        seen,
        [
            r#"backup a-b: records {"logs"} manifests {}"#,
            r#"backup a: records {"db"} manifests {"db"}"#,
            "foreign shop/stray.bin",
        ]
    );
    let err = catalog::scan(&Unsorted(repo), "shop", |_| {}).unwrap_err();
    assert!(err.to_string().contains("out of order"), "{err}");
}
