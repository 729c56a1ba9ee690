//! What people and GitOps tools do: apply a whole namespace at once. A Backup that arrives before
//! its repository's PVC is bound, and a Restore before its Backup has finished, wait (Pending, with
//! a reason and one event) and start as soon as what they wait for is there; a Backup whose
//! repository never appears fails with the reason once its start deadline has passed.

use backstop_api::{Backup, BackupPhase, Restore};
use backstop_e2e::*;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::Api;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn one_apply_of_pvcs_repository_policy_backup_and_restore_completes_without_retries()
-> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-one-apply").await?;
    let n = &ns.name;
    let source = host_volume(&format!("{n}-db"), "1Gi")?;
    write_sample_tree(&source, 4)?;
    // The restored PVC (made by the operator) binds to this volume through its own class, which
    // binds on first use: the restore must not wait for that binding, its mover pod makes it.
    let class = format!("{n}-restore");
    let restored = host_volume_of_class(&format!("{n}-restored"), "1Gi", &class)?;
    // The repository's volume does not exist yet: its PVC stays Pending until it does.
    kubectl_apply(&format!(
        r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {{name: {class}}}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: backups, namespace: {n}}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: {STORAGE_CLASS}
  volumeName: {n}-backups
  resources: {{requests: {{storage: 1Gi}}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: db, namespace: {n}, labels: {{app: db}}}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: {STORAGE_CLASS}
  volumeName: {n}-db
  resources: {{requests: {{storage: 1Gi}}}}
---
apiVersion: backstop.dev/v1alpha1
kind: BackupRepository
metadata: {{name: default, namespace: {n}}}
spec: {{pvc: {{claimName: backups}}}}
---
apiVersion: backstop.dev/v1alpha1
kind: BackupPolicy
metadata: {{name: db, namespace: {n}}}
spec:
  schedule: "0 2 * * *"
  retention: {{keepLast: 3}}
  target: {{pvcSelector: {{matchLabels: {{app: db}}}}}}
---
apiVersion: backstop.dev/v1alpha1
kind: Backup
metadata: {{name: now, namespace: {n}}}
spec: {{policyRef: db}}
---
apiVersion: backstop.dev/v1alpha1
kind: Restore
metadata: {{name: back, namespace: {n}}}
spec:
  backupName: now
  target: {{pvcName: restored, storageClassName: {class}}}
"#
    ))?;
    let backups = ns.api::<Backup>();
    let restores = ns.api::<Restore>();
    let why = waits_with(&backups, "now", "WaitingForRepository").await?;
    assert!(why.contains("\"backups\""), "{why}");
    assert!(
        why.contains("then failing with RepositoryNotReady"),
        "{why}"
    );
    let why = waits_with(&restores, "back", "WaitingForBackup").await?;
    assert!(why.contains("Backup \"now\" is Pending"), "{why}");
    assert!(work_jobs(&ns).await?.is_empty());

    // The volume appears; the binder binds the PVC, and nothing else is done by the test.
    let repo_dir = host_volume(&format!("{n}-backups"), "1Gi")?;
    let restore = finished_restore(&ns, "back", Duration::from_secs(240)).await?;
    assert_eq!(
        restore.phase(),
        BackupPhase::Completed,
        "{:?}",
        restore.status
    );
    let backup = backups.get("now").await?;
    assert_eq!(
        backup.phase(),
        BackupPhase::Completed,
        "{:?}",
        backup.status
    );
    assert_eq!(tree_listing(&restored)?, tree_listing(&source)?);
    let artifact = backup.status.unwrap_or_default().volumes[0]
        .artifact
        .clone()
        .unwrap_or_default();
    assert!(
        repo_dir.join(&artifact).is_file(),
        "{artifact} not in the repository"
    );

    // One Normal event each for the waits, and no failure.
    let waited = events(&ns, "WaitingForRepository").await?;
    assert_eq!(
        waited.iter().filter(|(on, _)| on == "now").count(),
        1,
        "{waited:?}"
    );
    let waited = events(&ns, "WaitingForBackup").await?;
    assert_eq!(
        waited.iter().filter(|(on, _)| on == "back").count(),
        1,
        "{waited:?}"
    );
    assert!(events(&ns, "BackupFailed").await?.is_empty());
    assert!(events(&ns, "RestoreFailed").await?.is_empty());
    Api::<StorageClass>::all(client.clone())
        .delete(&class, &Default::default())
        .await?;
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn a_backup_whose_repository_never_appears_fails_with_the_reason_after_its_deadline()
-> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-deadline").await?;
    let data = ns.volume("db", &[("app", "db")]).await?;
    write_sample_tree(&data, 5)?;
    create::<Backup>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup", "metadata": {"name": "orphan"},
               "spec": {"target": {"pvcSelector": {"matchLabels": {"app": "db"}}},
                        "repository": "never", "startingDeadlineSeconds": 20}}),
    )
    .await?;
    let backups = ns.api::<Backup>();
    let why = waits_with(&backups, "orphan", "WaitingForRepository").await?;
    assert!(
        why.contains("BackupRepository \"never\" not found"),
        "{why}"
    );
    let failed =
        backup_failed(&ns, "orphan", "RepositoryNotFound", Duration::from_secs(90)).await?;
    let status = failed.status.clone().unwrap_or_default();
    // Not before the deadline: it waited the 20 s it was given (the times have whole seconds).
    let created = failed.metadata.creation_timestamp.clone().map(|t| t.0);
    let ended = status.completion_time.map(|t| t.0);
    let waited = ended
        .zip(created)
        .map(|(e, c)| e.duration_since(c).as_secs());
    assert!(waited.is_some_and(|s| s >= 19), "failed after {waited:?} s");
    assert!(
        status
            .message
            .unwrap_or_default()
            .contains("start deadline of 20s")
    );
    assert!(work_jobs(&ns).await?.is_empty());
    let warned = events(&ns, "BackupFailed").await?;
    assert!(
        warned
            .iter()
            .any(|(on, note)| on == "orphan" && note.starts_with("RepositoryNotFound")),
        "{warned:?}"
    );
    Ok(())
}
