//! The snapshot strategy end to end, over real btrfs copy-on-write snapshots driven by an
//! emulated CSI snapshot controller (`backstop_e2e::snapshots`): a volume written to during the
//! backup comes back consistent from a snapshot and torn when read live; several volumes are
//! snapshotted together, the spread is reported and a volume restores from such a backup; the
//! snapshot API missing, then installed;
//! a missing class, a failed snapshot and one that never becomes ready fail the backup with
//! their reasons, and every case leaves no snapshot and no temporary PVC behind.

use backstop_api::condition::{self, ConditionType};
use backstop_api::{Backup, BackupPhase, BackupPolicy, VolumeSnapshot};
use backstop_e2e::snapshots::{self, Emulator};
use backstop_e2e::*;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::Client;
use kube::api::{DeleteParams, ListParams};
use serde_json::json;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The snapshot CRDs are cluster-wide: the test that removes them runs alone (write), the others
/// side by side (read), with the CRDs installed.
static CRDS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

async fn with_crds(client: &Client) -> anyhow::Result<tokio::sync::RwLockReadGuard<'static, ()>> {
    let guard = CRDS.read().await;
    snapshots::install_crds(client).await?;
    Ok(guard)
}

/// A test namespace with the operator, a repository, the emulated driver and a working class
/// named like the namespace.
struct Setup {
    ns: TestNamespace,
    repo_dir: std::path::PathBuf,
    root: std::path::PathBuf,
    emulator: Emulator,
    class: String,
}

async fn setup(client: &Client, prefix: &str) -> anyhow::Result<Setup> {
    install_operator(client).await?;
    let ns = TestNamespace::create(client, prefix).await?;
    let root = snapshots::btrfs_root()?;
    let repo_dir = ns.repository().await?;
    let emulator = Emulator::start(&ns.name, &root);
    let class = ns.name.clone();
    snapshots::snapshot_class(client, &class, "normal").await?;
    Ok(Setup {
        ns,
        repo_dir,
        root,
        emulator,
        class,
    })
}

impl Setup {
    async fn nothing_left_behind(&self, kept: usize) -> anyhow::Result<()> {
        nothing_left_behind(&self.ns, &self.emulator, kept).await
    }
}

/// Waits until the namespace holds no temporary PVC, `kept` snapshots, and the emulator no
/// subvolume but those snapshots'.
async fn nothing_left_behind(
    ns: &TestNamespace,
    emulator: &Emulator,
    kept: usize,
) -> anyhow::Result<()> {
    let snapshots = ns.api::<VolumeSnapshot>();
    let claims = ns.api::<PersistentVolumeClaim>();
    let temporary = ListParams::default().labels("backstop.dev/role=snapshot-source");
    let last = std::sync::Mutex::new(String::new());
    let result = wait_until(
        Duration::from_secs(90),
        "no temporary PVC, no snapshot and no subvolume left",
        || async {
            let s = snapshots.list(&ListParams::default()).await?.items.len();
            let c = claims.list(&temporary).await?.items.len();
            let left = emulator.leftovers();
            let subvolumes = left.iter().filter(|l| l.starts_with("claims/")).count();
            let snaps = left.iter().filter(|l| l.starts_with("snaps/")).count();
            *last.lock().unwrap() =
                format!("{s} VolumeSnapshots, {c} temporary PVCs, subvolumes {left:?}");
            Ok(s == kept && c == 0 && subvolumes == 0 && snaps == kept)
        },
    )
    .await;
    result.map_err(|e| e.context(last.into_inner().unwrap_or_default()))
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = kubectl(&[
            "delete",
            "volumesnapshotclass",
            &self.class,
            "--ignore-not-found",
        ]);
    }
}

/// An inline Backup of the PVCs labelled `app=<app>`, with `strategy` when given.
fn inline_backup(name: &str, app: &str, strategy: Option<serde_json::Value>) -> serde_json::Value {
    let mut backup = json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup",
        "metadata": {"name": name},
        "spec": {"target": {"pvcSelector": {"matchLabels": {"app": app}}}, "repository": "default",
                 "startingDeadlineSeconds": 120}});
    if let Some(strategy) = strategy {
        backup["spec"]["strategy"] = strategy;
    }
    backup
}

fn snapshot_strategy(class: &str) -> serde_json::Value {
    json!({"snapshot": {"volumeSnapshotClassName": class}})
}

// A ledger like a database's: a 64 MiB file whose first and last 4 KiB records both hold a
// commit counter, written last-then-first with fdatasync after each, as a WAL'd database orders
// its writes. At every instant the file on disk has last - first in {0, 1}; a copy read while
// it was being written may not.
const RECORD: u64 = 4096;
const RECORDS: u64 = 16 * 1024;

fn record(counter: u64) -> Vec<u8> {
    let mut r = vec![0u8; RECORD as usize];
    r[..8].copy_from_slice(&counter.to_le_bytes());
    r[8..16].copy_from_slice(&(counter ^ 0x9e37_79b9_7f4a_7c15).to_le_bytes());
    r
}

fn read_record(bytes: &[u8]) -> anyhow::Result<u64> {
    let counter = u64::from_le_bytes(bytes[..8].try_into()?);
    let check = u64::from_le_bytes(bytes[8..16].try_into()?);
    anyhow::ensure!(
        check == counter ^ 0x9e37_79b9_7f4a_7c15,
        "a record is damaged"
    );
    Ok(counter)
}

/// The ledger's (first, last) counters.
fn ledger_counters(path: &Path) -> anyhow::Result<(u64, u64)> {
    let data = std::fs::read(path)?;
    anyhow::ensure!(
        data.len() as u64 == RECORD * RECORDS,
        "ledger has {} bytes",
        data.len()
    );
    let last = ((RECORDS - 1) * RECORD) as usize;
    Ok((
        read_record(&data[..RECORD as usize])?,
        read_record(&data[last..])?,
    ))
}

struct Writer {
    stop: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Writer {
    fn start(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path)?;
        let filler: Vec<u8> = (0..RECORD * 256).map(|i| (i * 7 % 251) as u8).collect();
        for chunk in 0..RECORDS / 256 {
            file.write_all_at(&filler, chunk * RECORD * 256)?;
        }
        file.write_all_at(&record(0), 0)?;
        file.write_all_at(&record(0), (RECORDS - 1) * RECORD)?;
        file.sync_all()?;
        let stop = Arc::new(AtomicBool::new(false));
        let commits = Arc::new(AtomicU64::new(0));
        let (halt, count) = (stop.clone(), commits.clone());
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            let mut counter = 0u64;
            while !halt.load(Ordering::Relaxed) {
                counter += 1;
                file.write_all_at(&record(counter), (RECORDS - 1) * RECORD)?;
                file.sync_data()?;
                file.write_all_at(&record(counter), 0)?;
                file.sync_data()?;
                count.store(counter, Ordering::Relaxed);
            }
            Ok(())
        });
        Ok(Self {
            stop,
            commits,
            thread: Some(thread),
        })
    }

    fn stop(mut self) -> anyhow::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("the writer panicked"))??;
        }
        Ok(self.commits.load(Ordering::Relaxed))
    }
}

/// The (first, last) ledger counters in `pvc`'s artifact of a completed `backup`, extracted by
/// tar alone.
fn ledger_in_artifact(repo_dir: &Path, backup: &Backup, pvc: &str) -> anyhow::Result<(u64, u64)> {
    let status = backup.status.clone().unwrap_or_default();
    let volume = status
        .volumes
        .iter()
        .find(|v| v.pvc == pvc)
        .ok_or_else(|| anyhow::anyhow!("no volume {pvc} in {status:?}"))?;
    let artifact = repo_dir.join(volume.artifact.as_deref().unwrap_or_default());
    let out = tempfile::tempdir()?;
    extract_with_tar(&artifact, out.path())?;
    ledger_counters(&out.path().join("ledger"))
}

async fn completed(ns: &TestNamespace, name: &str) -> anyhow::Result<(Backup, Duration)> {
    let started = Instant::now();
    let backup = finished_backup(ns, name, Duration::from_secs(180)).await?;
    let status = backup.status.clone().unwrap_or_default();
    assert_eq!(status.phase, BackupPhase::Completed, "{name}: {status:?}");
    Ok((backup, started.elapsed()))
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn a_volume_written_during_the_backup_comes_back_consistent_from_a_snapshot()
-> anyhow::Result<()> {
    let client = cluster().await?;
    let _crds = with_crds(&client).await?;
    let setup = setup(&client, "e2e-snap-ledger").await?;
    let ns = &setup.ns;
    let db = ns.btrfs_volume(&setup.root, "db", &[("app", "db")]).await?;
    let writer = Writer::start(&db.join("ledger"))?;
    // The writer runs through both backups.
    tokio::time::sleep(Duration::from_millis(500)).await;

    create::<Backup>(ns, inline_backup("direct", "db", None)).await?;
    let (direct, direct_took) = completed(ns, "direct").await?;
    create::<Backup>(
        ns,
        inline_backup("snapped", "db", Some(snapshot_strategy(&setup.class))),
    )
    .await?;
    let (snapped, snapped_took) = completed(ns, "snapped").await?;
    let commits = writer.stop()?;
    assert!(commits > 10, "the writer made {commits} commits");

    // From the snapshot: one instant of the ledger.
    let (first, last) = ledger_in_artifact(&setup.repo_dir, &snapped, "db")?;
    assert!(
        last == first || last == first + 1,
        "the snapshot backup holds first={first} last={last}: not one point in time"
    );
    let status = snapped.status.clone().unwrap_or_default();
    let consistent = condition::find(&status.conditions, ConditionType::Consistent);
    assert!(
        consistent.is_some_and(|c| c.status == "True"),
        "nothing changed under the mover reading a snapshot: {status:?}"
    );
    let record = status.volumes[0].snapshot.clone().expect("snapshot record");
    assert!(record.creation_time.is_some(), "{record:?}");
    assert!(record.ready_time.is_some(), "{record:?}");
    let (snap_s, move_s) = (
        record.snapshot_seconds.expect("snapshot seconds"),
        record.move_seconds.expect("move seconds"),
    );
    assert_eq!(status.snapshot_spread_seconds, Some(0.0), "one volume");
    assert_eq!(
        status.strategy.as_ref().map(|s| s.name()),
        Some("snapshot"),
        "{status:?}"
    );

    // Read live: the mover saw the ledger change under it, and the copy may be torn.
    let (d_first, d_last) = ledger_in_artifact(&setup.repo_dir, &direct, "db")?;
    let direct_status = direct.status.clone().unwrap_or_default();
    let direct_consistent = condition::find(&direct_status.conditions, ConditionType::Consistent)
        .map(|c| c.status.clone());
    let torn = !(d_last == d_first || d_last == d_first + 1);
    eprintln!(
        "ledger (64 MiB, {commits} commits during the test): direct backup {direct_took:.1?} end to end, \
         Consistent={direct_consistent:?}, first={d_first} last={d_last} ({}); snapshot backup \
         {snapped_took:.1?} end to end (snapshot ready after {snap_s:.2}s, data moved in {move_s:.2}s), \
         first={first} last={last}",
        if torn { "torn" } else { "not torn this time" }
    );
    assert_eq!(
        direct_consistent.as_deref(),
        Some("False"),
        "the live read must say the ledger changed while read: {direct_status:?}"
    );

    setup.nothing_left_behind(0).await
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn a_policys_volumes_are_snapshotted_together_and_kept_snapshots_go_with_the_backup()
-> anyhow::Result<()> {
    let client = cluster().await?;
    let _crds = with_crds(&client).await?;
    let setup = setup(&client, "e2e-snap-pair").await?;
    let ns = &setup.ns;
    let a = ns
        .btrfs_volume(&setup.root, "a", &[("app", "pair")])
        .await?;
    let b = ns
        .btrfs_volume(&setup.root, "b", &[("app", "pair")])
        .await?;
    write_sample_tree(&a, 1)?;
    write_sample_tree(&b, 2)?;
    create::<BackupPolicy>(
        ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupPolicy",
               "metadata": {"name": "pair"},
               "spec": {"schedule": "0 0 1 1 *", "target": {"pvcSelector": {"matchLabels": {"app": "pair"}}},
                        "strategy": {"snapshot": {"volumeSnapshotClassName": setup.class,
                                                  "deleteSnapshotAfter": false}}}}),
    )
    .await?;
    create::<Backup>(
        ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup",
               "metadata": {"name": "pair-now"}, "spec": {"policyRef": "pair"}}),
    )
    .await?;
    let (backup, took) = completed(ns, "pair-now").await?;
    let status = backup.status.clone().unwrap_or_default();
    let spread = status.snapshot_spread_seconds.expect("a spread");
    assert!(spread < 5.0, "snapshots {spread}s apart");
    for (pvc, dir) in [("a", &a), ("b", &b)] {
        let volume = status.volumes.iter().find(|v| v.pvc == pvc).expect(pvc);
        let record = volume.snapshot.clone().expect("snapshot record");
        assert!(record.kept, "{record:?}");
        let artifact = setup
            .repo_dir
            .join(volume.artifact.as_deref().unwrap_or_default());
        let out = tempfile::tempdir()?;
        extract_with_tar(&artifact, out.path())?;
        assert_eq!(
            tree_listing(out.path())?,
            tar_view(&tree_listing(dir)?),
            "{pvc}"
        );
    }
    let started = events(ns, "BackupStarted").await?;
    assert!(
        started.iter().any(|(on, note)| on == "pair-now"
            && note.contains("2 volumes")
            && note.contains(&format!("from VolumeSnapshots of class {:?}", setup.class))),
        "{started:?}"
    );
    eprintln!(
        "two volumes from snapshots: spread {spread:.3}s, snapshot ready after {:?}s, backup {took:.1?} end to end",
        status
            .volumes
            .iter()
            .map(|v| v.snapshot.as_ref().and_then(|s| s.snapshot_seconds))
            .collect::<Vec<_>>()
    );
    // A snapshot backup restores like any other: volume b into a fresh PVC equals its source.
    let target = ns.volume("b-restored", &[]).await?;
    create::<backstop_api::Restore>(
        ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Restore", "metadata": {"name": "b-back"},
               "spec": {"backupName": "pair-now", "sourcePVC": "b", "target": {"pvcName": "b-restored"}}}),
    )
    .await?;
    let restored = finished_restore(ns, "b-back", Duration::from_secs(180)).await?;
    assert_eq!(
        restored.status.clone().unwrap_or_default().phase,
        BackupPhase::Completed,
        "{restored:?}"
    );
    assert_eq!(tree_listing(&target)?, tree_listing(&b)?);
    // Kept: both snapshots stay while the Backup does, the temporary PVCs are gone.
    setup.nothing_left_behind(2).await?;
    ns.api::<Backup>()
        .delete("pair-now", &DeleteParams::default())
        .await?;
    setup.nothing_left_behind(0).await
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn a_missing_class_a_failed_snapshot_and_one_never_ready_fail_and_leave_nothing()
-> anyhow::Result<()> {
    let client = cluster().await?;
    let _crds = with_crds(&client).await?;
    let setup = setup(&client, "e2e-snap-faults").await?;
    let ns = &setup.ns;
    ns.btrfs_volume(&setup.root, "db", &[("app", "db")]).await?;
    let failing = format!("{}-fail", setup.class);
    let stalling = format!("{}-never", setup.class);
    snapshots::snapshot_class(&client, &failing, "fail").await?;
    snapshots::snapshot_class(&client, &stalling, "never").await?;

    let mut no_class = inline_backup("no-class", "db", Some(snapshot_strategy("absent-class")));
    no_class["spec"]["startingDeadlineSeconds"] = json!(8);
    create::<Backup>(ns, no_class).await?;
    create::<Backup>(
        ns,
        inline_backup("refused", "db", Some(snapshot_strategy(&failing))),
    )
    .await?;
    create::<Backup>(
        ns,
        inline_backup(
            "stalled",
            "db",
            Some(json!({"snapshot": {"volumeSnapshotClassName": stalling, "readyTimeoutSeconds": 6}})),
        ),
    )
    .await?;

    let waiting = waits_with(&ns.api::<Backup>(), "no-class", "WaitingForSnapshotClass").await;
    let no_class = backup_failed(
        ns,
        "no-class",
        "SnapshotClassNotFound",
        Duration::from_secs(60),
    )
    .await?;
    let refused = backup_failed(ns, "refused", "SnapshotFailed", Duration::from_secs(90)).await?;
    let stalled = backup_failed(ns, "stalled", "SnapshotNotReady", Duration::from_secs(90)).await?;
    // The wait may be over before the first look: only its reason is checked when seen.
    if let Ok(message) = waiting {
        assert!(message.contains("absent-class"), "{message}");
    }
    let message = |b: &Backup| {
        b.status
            .clone()
            .unwrap_or_default()
            .message
            .unwrap_or_default()
    };
    assert!(message(&no_class).contains("absent-class"), "{no_class:?}");
    assert!(
        message(&refused).contains("refused (class behaviour fail)"),
        "the snapshot's own error: {refused:?}"
    );
    assert!(message(&stalled).contains("6s"), "{stalled:?}");
    setup.nothing_left_behind(0).await?;
    snapshots::delete_snapshot_class(&client, &failing).await?;
    snapshots::delete_snapshot_class(&client, &stalling).await
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn a_backup_waits_for_the_snapshot_api_and_goes_on_once_it_is_installed() -> anyhow::Result<()>
{
    let client = cluster().await?;
    let _alone = CRDS.write().await;
    snapshots::remove_crds(&client).await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-snap-api").await?;
    let root = snapshots::btrfs_root()?;
    ns.repository().await?;
    let emulator = Emulator::start(&ns.name, &root);
    ns.btrfs_volume(&root, "db", &[("app", "db")]).await?;
    create::<Backup>(
        &ns,
        inline_backup("early", "db", Some(snapshot_strategy(&ns.name))),
    )
    .await?;
    let message = waits_with(&ns.api::<Backup>(), "early", "SnapshotAPIUnavailable").await?;
    assert!(message.contains("snapshot.storage.k8s.io/v1"), "{message}");
    // The operator carries on meanwhile: a direct backup in the same namespace completes.
    create::<Backup>(&ns, inline_backup("meanwhile", "db", None)).await?;
    completed(&ns, "meanwhile").await?;

    let installed = Instant::now();
    snapshots::install_crds(&client).await?;
    snapshots::snapshot_class(&client, &ns.name, "normal").await?;
    let (backup, _) = completed(&ns, "early").await?;
    eprintln!(
        "snapshot API noticed and the backup completed {:.1?} after the CRDs were installed",
        installed.elapsed()
    );
    let status = backup.status.unwrap_or_default();
    assert!(status.volumes[0].snapshot.is_some(), "{status:?}");
    nothing_left_behind(&ns, &emulator, 0).await?;
    drop(emulator);
    snapshots::delete_snapshot_class(&client, &ns.name).await
}
