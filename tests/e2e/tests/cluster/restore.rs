//! Restore as a rehearsed, validated operation, on the local cluster with the operator in-cluster:
//! a varied tree comes back exactly as captured, the default refuses a non-empty target, Overwrite
//! and Merge do what they say, a damaged artifact fails with the target unchanged, and restores
//! of unfinished backups or into a volume in use are refused before any Job exists.

use backstop_api::condition::ConditionType;
use backstop_api::{Backup, BackupPhase, Restore, condition};
use backstop_e2e::*;
use k8s_openapi::api::core::v1::{PersistentVolume, Pod};
use kube::api::Api;
use serde_json::json;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::time::Duration;

async fn completed_backup(ns: &TestNamespace, name: &str, app: &str) -> anyhow::Result<Backup> {
    create::<Backup>(
        ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup", "metadata": {"name": name},
               "spec": {"target": {"pvcSelector": {"matchLabels": {"app": app}}}}}),
    )
    .await?;
    let backup = finished_backup(ns, name, Duration::from_secs(180)).await?;
    anyhow::ensure!(
        backup.phase() == BackupPhase::Completed,
        "backup failed: {:?}",
        backup.status
    );
    Ok(backup)
}

async fn restore(
    ns: &TestNamespace,
    name: &str,
    spec: serde_json::Value,
) -> anyhow::Result<Restore> {
    create::<Restore>(
        ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Restore", "metadata": {"name": name}, "spec": spec}),
    )
    .await?;
    finished_restore(ns, name, Duration::from_secs(300)).await
}

fn reason(r: &Restore) -> String {
    let conditions = r.status.clone().unwrap_or_default().conditions;
    condition::find(&conditions, ConditionType::Failed)
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

const RESTORE_LABEL: &str = "backstop.dev/restore";

fn no_jobs() -> Vec<String> {
    Vec::new()
}

/// What the issue asks a restore to carry: nested dirs, unicode and space names, symlinks,
/// hardlinks, an empty dir, a sparse file, a 100 MiB file, modes 0600/0755, several owners.
fn varied_tree(root: &Path) -> anyhow::Result<()> {
    write_sample_tree(root, 7)?;
    std::fs::create_dir_all(root.join("dir with spaces/ünïcødé 目录"))?;
    std::fs::write(
        root.join("dir with spaces/ünïcødé 目录/naïve file.txt"),
        "ü\n",
    )?;
    std::fs::create_dir_all(root.join("empty/also empty"))?;
    std::fs::write(root.join("owned-by-1000"), "u\n")?;
    std::os::unix::fs::chown(root.join("owned-by-1000"), Some(1000), Some(1000))?;
    std::fs::write(root.join("owned-by-33"), "w\n")?;
    std::os::unix::fs::chown(root.join("owned-by-33"), Some(33), Some(44))?;
    std::fs::set_permissions(
        root.join("owned-by-33"),
        std::fs::Permissions::from_mode(0o640),
    )?;
    symlink("../README", root.join("nested/up-link"))?;
    std::fs::hard_link(
        root.join("run.sh"),
        root.join("dir with spaces/run-again.sh"),
    )?;
    let sparse = std::fs::File::create(root.join("sparse.img"))?;
    sparse.set_len(256 << 20)?;
    std::os::unix::fs::FileExt::write_at(&sparse, b"middle", 128 << 20)?;
    let big: Vec<u8> = (0..100u32 << 20)
        .map(|i| (i % 251) as u8 ^ (i >> 20) as u8)
        .collect();
    std::fs::write(root.join("big-100MiB.bin"), big)?;
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn restore_into_a_new_pvc_reproduces_the_tree_as_captured() -> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-restore-new").await?;
    ns.repository().await?;
    let source = ns.volume("source", &[("app", "db")]).await?;
    varied_tree(&source)?;
    let captured = tree_listing(&source)?;
    completed_backup(&ns, "before-change", "db").await?;

    // The source moves on after the backup.
    std::fs::write(source.join("README"), "changed\n")?;
    std::fs::remove_file(source.join("big-100MiB.bin"))?;

    // The target does not exist: the controller creates it, classed as asked, sized like the source.
    let class = format!("e2e-{}", ns.name);
    let target_dir = host_volume_of_class(&format!("{}-spare", ns.name), "1Gi", &class)?;
    let done = restore(
        &ns,
        "to-new",
        json!({"backupName": "before-change", "target": {"pvcName": "restored", "storageClassName": class}}),
    )
    .await?;
    let status = done.status.clone().unwrap_or_default();
    assert_eq!(done.phase(), BackupPhase::Completed, "{status:?}");
    assert_eq!(status.verification.as_deref(), Some("Verified"));
    assert_eq!(status.source_pvc.as_deref(), Some("source"));
    assert_eq!(tree_listing(&target_dir)?, captured);
    let sparse =
        std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(target_dir.join("sparse.img"))?);
    assert!(
        sparse * 512 < 16 << 20,
        "the sparse file came back sparse ({sparse} blocks)"
    );
    assert!(
        events(&ns, "RestoreCompleted")
            .await?
            .iter()
            .any(|(on, _)| on == "to-new")
    );
    assert!(
        events(&ns, "TargetCreated")
            .await?
            .iter()
            .any(|(on, _)| on == "to-new")
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn existing_data_policies_decide_what_happens_to_a_non_empty_target() -> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-restore-policy").await?;
    ns.repository().await?;
    let source = ns.volume("source", &[("app", "db")]).await?;
    write_sample_tree(&source, 4)?;
    let captured = tree_listing(&source)?;
    completed_backup(&ns, "snap", "db").await?;
    let target = ns.volume("target", &[]).await?;
    std::fs::write(target.join("precious.txt"), "do not lose me\n")?;
    std::fs::create_dir_all(target.join("nested"))?;
    std::fs::write(target.join("nested/data.bin"), "stale\n")?;

    // Default: refused, target untouched.
    let before = tree_listing(&target)?;
    let refused = restore(
        &ns,
        "default-policy",
        json!({"backupName": "snap", "target": {"pvcName": "target"}}),
    )
    .await?;
    assert_eq!(reason(&refused), "TargetNotEmpty", "{:?}", refused.status);
    assert_eq!(tree_listing(&target)?, before);

    // Merge: the backup's files written over, others kept.
    let merged = restore(&ns, "merge", json!({"backupName": "snap", "target": {"pvcName": "target"}, "existingDataPolicy": "Merge"})).await?;
    assert_eq!(
        merged.phase(),
        BackupPhase::Completed,
        "{:?}",
        merged.status
    );
    assert_eq!(
        std::fs::read_to_string(target.join("precious.txt"))?,
        "do not lose me\n"
    );
    let listing = tree_listing(&target)?;
    for entry in &captured {
        assert!(listing.contains(entry), "merge lost {entry}");
    }

    // Overwrite: exactly the backup.
    let overwritten = restore(&ns, "overwrite", json!({"backupName": "snap", "target": {"pvcName": "target"}, "existingDataPolicy": "Overwrite"})).await?;
    assert_eq!(
        overwritten.phase(),
        BackupPhase::Completed,
        "{:?}",
        overwritten.status
    );
    assert_eq!(tree_listing(&target)?, captured);
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn a_damaged_artifact_fails_the_restore_and_leaves_the_target_unchanged() -> anyhow::Result<()>
{
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-restore-damaged").await?;
    let repo_dir = ns.repository().await?;
    let source = ns.volume("source", &[("app", "db")]).await?;
    write_sample_tree(&source, 5)?;
    let backup = completed_backup(&ns, "snap", "db").await?;
    let artifact = backup.status.unwrap_or_default().volumes[0]
        .artifact
        .clone()
        .unwrap_or_default();
    let path = repo_dir.join(artifact);
    let mut bytes = std::fs::read(&path)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, bytes)?;

    let target = ns.volume("target", &[]).await?;
    std::fs::write(target.join("current.txt"), "the live data\n")?;
    let before = tree_listing(&target)?;
    let failed = restore(&ns, "damaged", json!({"backupName": "snap", "target": {"pvcName": "target"}, "existingDataPolicy": "Overwrite"})).await?;
    assert_eq!(
        reason(&failed),
        "IntegrityCheckFailed",
        "{:?}",
        failed.status
    );
    assert_eq!(
        failed.status.unwrap_or_default().verification.as_deref(),
        Some("Failed")
    );
    assert_eq!(
        tree_listing(&target)?,
        before,
        "the target must be as it was"
    );
    assert!(
        events(&ns, "RestoreFailed")
            .await?
            .iter()
            .any(|(on, note)| on == "damaged" && note.contains("IntegrityCheckFailed"))
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn restores_of_unfinished_backups_or_into_a_volume_in_use_are_refused_before_any_job()
-> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-restore-refused").await?;
    let jobs = ns.watch_jobs().await?;
    ns.repository().await?;
    let source = ns.volume("source", &[("app", "db")]).await?;
    write_sample_tree(&source, 6)?;
    completed_backup(&ns, "good", "db").await?;

    // A Failed backup (its selector matches nothing, and it does not wait for a match).
    create::<Backup>(&ns, json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup", "metadata": {"name": "failed"},
        "spec": {"target": {"pvcSelector": {"matchLabels": {"app": "nothing"}}}, "startingDeadlineSeconds": 0}})).await?;
    // A backup that stays Running: its volume is only reachable from a node that does not exist.
    let pv_name = ns.stranded_volume("stranded").await?;
    create::<Backup>(&ns, json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup", "metadata": {"name": "running"},
        "spec": {"target": {"pvcSelector": {"matchLabels": {"app": "stranded"}}}}})).await?;
    let backups = ns.api::<Backup>();
    wait_until(
        Duration::from_secs(60),
        "one backup Failed and one Running",
        || async {
            Ok(backups.get("failed").await?.phase() == BackupPhase::Failed
                && backups.get("running").await?.phase() == BackupPhase::Running)
        },
    )
    .await?;

    let target = ns.volume("target", &[]).await?;
    let r = restore(
        &ns,
        "from-failed",
        json!({"backupName": "failed", "target": {"pvcName": "target"}}),
    )
    .await?;
    assert_eq!(reason(&r), "BackupNotCompleted", "{:?}", r.status);
    assert_eq!(jobs.labelled(RESTORE_LABEL, "from-failed"), no_jobs());
    // A running backup may still complete: the restore waits for it (past its own start
    // deadline, which bounds waiting for what is absent, not for a backup at work).
    create::<Restore>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Restore", "metadata": {"name": "from-running"},
               "spec": {"backupName": "running", "target": {"pvcName": "target"}, "startingDeadlineSeconds": 1}}),
    )
    .await?;
    let restores = ns.api::<Restore>();
    let why = waits_with(&restores, "from-running", "WaitingForBackup").await?;
    assert!(why.contains("Backup \"running\" is Running"), "{why}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    waits_with(&restores, "from-running", "WaitingForBackup").await?;
    assert_eq!(jobs.labelled(RESTORE_LABEL, "from-running"), no_jobs());
    let r = restore(
        &ns,
        "wrong-volume",
        json!({"backupName": "good", "sourcePVC": "nope", "target": {"pvcName": "target"}}),
    )
    .await?;
    assert_eq!(reason(&r), "VolumeNotInBackup", "{:?}", r.status);

    // A running pod mounts the target: refused unless allowInUse.
    create::<Pod>(&ns, json!({"metadata": {"name": "app"}, "spec": {
        "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.6", "imagePullPolicy": "Never",
                        "volumeMounts": [{"name": "t", "mountPath": "/data"}]}],
        "volumes": [{"name": "t", "persistentVolumeClaim": {"claimName": "target"}}]}})).await?;
    let pods = ns.api::<Pod>();
    wait_until(Duration::from_secs(60), "the app pod to run", || async {
        Ok(pods
            .get("app")
            .await?
            .status
            .and_then(|s| s.phase)
            .as_deref()
            == Some("Running"))
    })
    .await?;
    let r = restore(
        &ns,
        "in-use",
        json!({"backupName": "good", "target": {"pvcName": "target"}}),
    )
    .await?;
    assert_eq!(reason(&r), "TargetInUse", "{:?}", r.status);
    assert_eq!(jobs.labelled(RESTORE_LABEL, "in-use"), no_jobs());
    let r = restore(
        &ns,
        "in-use-allowed",
        json!({"backupName": "good", "target": {"pvcName": "target"}, "allowInUse": true}),
    )
    .await?;
    assert_eq!(r.phase(), BackupPhase::Completed, "{:?}", r.status);
    assert_eq!(tree_listing(&target)?, tree_listing(&source)?);
    // The running backup goes: the restore waiting for it fails at once, saying so.
    backups.delete("running", &Default::default()).await?;
    let r = finished_restore(&ns, "from-running", Duration::from_secs(60)).await?;
    assert_eq!(reason(&r), "BackupDeleted", "{:?}", r.status);
    // The watch saw the allowed restore's Job, and none, ever, for a refused one; each refusal
    // was said once.
    assert_eq!(jobs.labelled(RESTORE_LABEL, "in-use-allowed").len(), 1);
    let warnings = events(&ns, "RestoreFailed").await?;
    for name in ["from-failed", "from-running", "wrong-volume", "in-use"] {
        assert_eq!(jobs.labelled(RESTORE_LABEL, name), no_jobs());
        assert_eq!(
            warnings.iter().filter(|(on, _)| on == name).count(),
            1,
            "{name}: {warnings:?}"
        );
    }
    let _ = Api::<PersistentVolume>::all(client.clone())
        .delete(&pv_name, &Default::default())
        .await;
    Ok(())
}
