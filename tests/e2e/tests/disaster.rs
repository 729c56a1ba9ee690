//! The disaster itself: a namespace backs up two volumes into a directory repository (tar
//! format) and an S3 repository on s3s-fs (restic format); then the cluster is destroyed
//! (`hack/cluster down`: etcd and every object gone) and a new, empty one is built. Given only
//! the namespace, its Secrets and the two BackupRepository objects, the Backups come back from
//! the repositories with their policy, volumes and sizes; a re-created policy adopts them; a
//! Restore of each volume of each into a new PVC (created from the recorded size) equals the
//! source. A repository in another namespace pointing at the same storage imports nothing, and
//! foreign or corrupt objects in the repository are reported (condition + event) and skipped.
//!
//! This test takes the cluster down: `hack/test` runs it after every other e2e test (its target
//! has `test = false`, so `cargo test --tests` leaves it out).

use backstop_api::condition::{self, ConditionType};
use backstop_api::{Backup, BackupPhase, BackupPolicy, BackupRepository, Restore, labels};
use backstop_e2e::s3::{S3Kind, S3Server, SECRET_KEY};
use backstop_e2e::*;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const PASSWORD: &str = "e2e disaster password";

/// A PVC `claim` on a hostPath PersistentVolume on `dir`, a directory outside the cluster's state
/// (it survives `hack/cluster down`).
async fn outside_volume(ns: &TestNamespace, claim: &str, dir: &Path) -> anyhow::Result<()> {
    let pv_name = format!("{}-{claim}", ns.name);
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": pv_name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": STORAGE_CLASS,
                 "claimRef": {"namespace": ns.name, "name": claim},
                 "hostPath": {"path": dir.to_string_lossy(), "type": "DirectoryOrCreate"}}
    }))?;
    Api::<PersistentVolume>::all(ns.client.clone())
        .create(&PostParams::default(), &pv)
        .await?;
    ns.claim_of(claim, &pv_name, STORAGE_CLASS, &[]).await
}

/// The namespace's Secrets and its two repositories: `nfs` (a directory, tar) and `s3` (s3s-fs,
/// restic), as a person would write them again after the disaster.
async fn repositories(ns: &TestNamespace, dir: &Path, s3: &S3Server) -> anyhow::Result<()> {
    outside_volume(ns, "backups", dir).await?;
    keys_secret(ns, "s3-keys", SECRET_KEY).await?;
    create::<Secret>(
        ns,
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "restic", "labels": {"backstop.dev/credentials": "true"}},
               "stringData": {"password": PASSWORD}}),
    )
    .await?;
    create::<BackupRepository>(
        ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupRepository",
               "metadata": {"name": "nfs"}, "spec": {"pvc": {"claimName": "backups"}}}),
    )
    .await?;
    create::<BackupRepository>(
        ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupRepository",
               "metadata": {"name": "s3"},
               "spec": {"s3": {"endpoint": s3.endpoint(), "bucket": "disaster", "prefix": "site-a",
                               "forcePathStyle": true, "credentialsSecretRef": {"name": "s3-keys"}},
                        "format": "restic", "passwordSecretRef": {"name": "restic"}}}),
    )
    .await?;
    Ok(())
}

fn policy(name: &str, repository: &str) -> serde_json::Value {
    json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupPolicy",
           "metadata": {"name": name},
           "spec": {"schedule": "0 2 * * *", "retention": {"keepLast": 3}, "repository": repository,
                    "target": {"pvcSelector": {"matchLabels": {"app": "shop"}}}}})
}

/// What must survive of a Backup: its policy, and per volume its size, files, digest, size and
/// class of the PVC, where its data is.
fn essentials(backup: &Backup) -> (Option<String>, Vec<String>) {
    let status = backup.status.clone().unwrap_or_default();
    let volumes = status
        .volumes
        .iter()
        .map(|v| {
            format!(
                "{} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
                v.pvc,
                v.bytes,
                v.source_bytes,
                v.files,
                v.digest,
                v.capacity,
                v.storage_class_name,
                v.artifact
            )
        })
        .collect();
    (backup.spec.policy_ref.clone(), volumes)
}

/// Waits for the repository's sync to have finished once and returns its `Synced` condition.
async fn synced(ns: &TestNamespace, repo: &str) -> anyhow::Result<(String, String, String)> {
    let api = ns.api::<BackupRepository>();
    wait_for(
        Duration::from_secs(180),
        &format!("repository {repo} to be synced"),
        || async {
            let conditions = api.get(repo).await?.status.unwrap_or_default().conditions;
            Ok(condition::find(&conditions, ConditionType::Synced)
                .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone())))
        },
    )
    .await
}

/// Waits for the repository's `Writable` condition to be `status` and returns its reason and
/// message.
async fn writable(
    ns: &TestNamespace,
    repo: &str,
    status: &str,
) -> anyhow::Result<(String, String)> {
    let api = ns.api::<BackupRepository>();
    wait_for(
        Duration::from_secs(180),
        &format!("repository {repo} Writable={status}"),
        || async {
            let conditions = api.get(repo).await?.status.unwrap_or_default().conditions;
            Ok(condition::find(&conditions, ConditionType::Writable)
                .filter(|c| c.status == status)
                .map(|c| (c.reason.clone(), c.message.clone())))
        },
    )
    .await
}

/// The uid of the cluster's kube-system namespace: its identity as a repository writer.
async fn cluster_uid(client: &kube::Client) -> anyhow::Result<String> {
    Api::<Namespace>::all(client.clone())
        .get("kube-system")
        .await?
        .metadata
        .uid
        .ok_or_else(|| anyhow::anyhow!("kube-system has no uid"))
}

/// What `<namespace>/_owner.json` of the directory repository names.
fn marked_owner(repo_dir: &Path, namespace: &str) -> anyhow::Result<String> {
    let marker: serde_json::Value = serde_json::from_slice(&std::fs::read(
        repo_dir.join(namespace).join("_owner.json"),
    )?)?;
    Ok(marker["cluster"].as_str().unwrap_or_default().to_string())
}

#[tokio::test]
#[ignore = "takes the cluster down and up: run by hack/test after the other e2e tests"]
async fn a_new_cluster_finds_the_backups_in_the_repositories_and_restores_them()
-> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let s3 = S3Server::start(S3Kind::S3sFs)?;
    s3.create_bucket("disaster")?;
    let outside = tempfile::tempdir()?;
    let repo_dir = outside.path().join("repository");
    let ns = TestNamespace::create(&client, "e2e-dr").await?;
    let namespace = ns.name.clone();
    let db = ns.volume("db", &[("app", "shop")]).await?;
    let logs = ns.volume("logs", &[("app", "shop")]).await?;
    write_sample_tree(&db, 1)?;
    write_sample_tree(&logs, 2)?;
    let sources = BTreeMap::from([
        ("db".to_string(), tree_listing(&db)?),
        ("logs".to_string(), tree_listing(&logs)?),
    ]);
    repositories(&ns, &repo_dir, &s3).await?;
    for repo in ["nfs", "s3"] {
        assert_eq!(repository_ready(&ns, repo, "True").await?, "Ready");
        create::<BackupPolicy>(&ns, policy(&format!("{repo}-nightly"), repo)).await?;
        create::<Backup>(
            &ns,
            json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup",
                   "metadata": {"name": format!("{repo}-before")},
                   "spec": {"policyRef": format!("{repo}-nightly")}}),
        )
        .await?;
    }
    let mut before = BTreeMap::new();
    for repo in ["nfs", "s3"] {
        let name = format!("{repo}-before");
        let backup = finished_backup(&ns, &name, Duration::from_secs(240)).await?;
        assert_eq!(
            backup.phase(),
            BackupPhase::Completed,
            "{:?}",
            backup.status
        );
        before.insert(name, backup);
    }
    assert!(
        repo_dir
            .join(&namespace)
            .join("nfs-before/db.record.json")
            .is_file(),
        "a tar backup keeps a record beside each manifest"
    );
    // Both are verified; the conclusion is kept beside each backup in its repository.
    let backups = ns.api::<Backup>();
    for name in before.keys() {
        let token = json!({"metadata": {"annotations": {labels::VERIFY: "before-the-disaster"}}});
        backups
            .patch(name, &PatchParams::default(), &Patch::Merge(token))
            .await?;
    }
    for name in before.clone().keys() {
        let verified = wait_for(Duration::from_secs(240), "the verification", || async {
            let backup = backups.get(name).await?;
            let conditions = backup.status.clone().unwrap_or_default().conditions;
            Ok(condition::find(&conditions, ConditionType::Verified)
                .map(|c| (c.status.clone(), c.reason.clone()))
                .map(|c| (c, backup.clone())))
        })
        .await?;
        assert_eq!(verified.0.0, "True", "{name}: {:?}", verified.0);
        before.insert(name.clone(), verified.1);
    }
    let kept = |name: &str| {
        let key = format!("{namespace}/{name}/verification.json");
        let on_s3 = s3.keys("disaster", &format!("site-a/{key}"));
        repo_dir.join(&key).is_file() || on_s3.is_ok_and(|k| !k.is_empty())
    };
    wait_until(
        Duration::from_secs(120),
        "the verifications kept in the repositories",
        || async { Ok(kept("nfs-before") && kept("s3-before")) },
    )
    .await?;

    // Each namespace part names its writer: this cluster.
    let old_cluster = cluster_uid(&client).await?;
    assert_eq!(marked_owner(&repo_dir, &namespace)?, old_cluster);
    let marker_key = format!("site-a/{namespace}/_owner.json");
    assert!(
        String::from_utf8(s3.object("disaster", &marker_key)?)?.contains(&old_cluster),
        "the S3 repository's marker names this cluster"
    );

    // The disaster: every object is gone with the cluster; the repositories stay. (The namespace
    // is not deleted first: that would delete its Backups, and their data with them.)
    std::mem::forget(ns);
    hack_cluster(&["down"])?;
    hack_cluster(&["up"])?;
    // Without the variables `cargo test` sets for this test (CARGO_PKG_NAME...): build scripts
    // that read them would make the release build that `make test` just did start over.
    let mut image = std::process::Command::new(repo_root().join("hack/image"));
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("CARGO_") && name != "CARGO_HOME" && name != "CARGO_TARGET_DIR" {
            image.env_remove(&name);
        }
    }
    let image = image.output()?;
    anyhow::ensure!(
        image.status.success(),
        "hack/image: {}",
        String::from_utf8_lossy(&image.stderr)
    );
    let client = cluster().await?;
    install_operator(&client).await?;
    let api = Api::<Backup>::namespaced(client.clone(), &namespace);
    anyhow::ensure!(api.list(&ListParams::default()).await?.items.is_empty());

    // Someone else's file and a broken backup in the namespace's part of the directory.
    let part = repo_dir.join(&namespace);
    std::fs::write(part.join("stray.bin"), b"not a backup")?;
    std::fs::create_dir_all(part.join("broken"))?;
    std::fs::write(
        part.join("broken/db.record.json"),
        b"{\"version\": 1, \"tru",
    )?;
    std::fs::write(part.join("broken/db.manifest.jsonl.zst"), b"garbage")?;

    // A marker forged by hand in the S3 repository (not one Backstop reads as a cluster).
    let (config, key) = (
        s3.config("disaster", "site-a"),
        format!("{namespace}/_owner.json"),
    );
    tokio::task::spawn_blocking(move || {
        use backstop_mover::repository::{Repository, S3Repository};
        let bucket = S3Repository::new(&config).map_err(|e| anyhow::anyhow!("{}", e.message))?;
        let forged = b"{\"cluster\": \"me; rm -rf /\", \"since\": \"2099-01-01T00:00:00Z\"}";
        bucket.put(&key, forged)?;
        anyhow::Ok(())
    })
    .await??;
    let new_cluster = cluster_uid(&client).await?;
    assert_ne!(new_cluster, old_cluster, "a new cluster is another writer");

    // Only the namespace, its Secrets and its repositories.
    let ns = TestNamespace::create_named(&client, &namespace).await?;
    repositories(&ns, &repo_dir, &s3).await?;
    // Another namespace pointing at the very same storage (same bucket, prefix, password).
    let other = TestNamespace::create(&client, "e2e-dr-other").await?;
    repositories(&other, &repo_dir, &s3).await?;

    let imported: Vec<Backup> = wait_for(
        Duration::from_secs(300),
        "both backups imported and Completed",
        || async {
            let items = api.list(&ListParams::default()).await?.items;
            let done =
                items.len() == 2 && items.iter().all(|b| b.phase() == BackupPhase::Completed);
            Ok(done.then_some(items))
        },
    )
    .await?;
    for backup in &imported {
        let name = backup.metadata.name.clone().unwrap_or_default();
        let original = before
            .get(&name)
            .ok_or_else(|| anyhow::anyhow!("unexpected Backup {name}"))?;
        assert_eq!(essentials(backup), essentials(original), "{name}");
        let status = backup.status.clone().unwrap_or_default();
        let was = original.status.clone().unwrap_or_default();
        assert_eq!(status.total_bytes, was.total_bytes, "{name}");
        assert_eq!(
            status.start_time.map(|t| t.0.as_second()),
            was.start_time.map(|t| t.0.as_second()),
            "{name}"
        );
        let labels = backup.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get(labels::IMPORTED).map(String::as_str),
            Some("true")
        );
        assert!(backup.metadata.owner_references.is_none(), "owner-less");
        let completed = condition::find(&status.conditions, ConditionType::Completed);
        assert_eq!(
            completed.map(|c| c.reason.as_str()),
            Some("Imported"),
            "{name}"
        );
    }
    // The directory repository says what it skipped, and warns once.
    let (ok, reason, message) = synced(&ns, "nfs").await?;
    assert_eq!(
        (ok.as_str(), reason.as_str()),
        ("False", "ObjectsSkipped"),
        "{message}"
    );
    assert!(
        message.contains("stray.bin") && message.contains("broken"),
        "{message}"
    );
    assert!(
        events(&ns, "ObjectsSkipped")
            .await?
            .iter()
            .any(|(on, note)| on == "nfs" && note.contains("stray.bin"))
    );
    assert_eq!(synced(&ns, "s3").await?.1, "Synced");
    assert!(!events(&ns, "BackupImported").await?.is_empty());

    // Isolation: the other namespace's repositories import nothing of this one's.
    for repo in ["nfs", "s3"] {
        let (ok, reason, message) = synced(&other, repo).await?;
        assert_eq!(
            (ok.as_str(), reason.as_str()),
            ("True", "Synced"),
            "{message}"
        );
        assert!(message.starts_with("0 backups"), "{message}");
    }
    assert!(
        other
            .api::<Backup>()
            .list(&ListParams::default())
            .await?
            .items
            .is_empty()
    );

    // A policy written again under its name adopts its backups: its last success survives.
    create::<BackupPolicy>(&ns, policy("nfs-nightly", "nfs")).await?;
    let was = api
        .get("nfs-before")
        .await?
        .status
        .unwrap_or_default()
        .completion_time;
    anyhow::ensure!(was.is_some());
    let policies = ns.api::<BackupPolicy>();
    wait_until(
        Duration::from_secs(60),
        "the policy to count its imported backup",
        || async {
            let status = policies
                .get("nfs-nightly")
                .await?
                .status
                .unwrap_or_default();
            Ok(status.last_successful_backup_time.map(|t| t.0.as_second())
                == was.as_ref().map(|t| t.0.as_second()))
        },
    )
    .await?;

    // Each volume of each backup restores into a new PVC, sized as recorded, equal to its
    // source. The old PVCs and their class are gone: each target gets a class of its own.
    for (backup, pvc) in [
        ("nfs-before", "db"),
        ("nfs-before", "logs"),
        ("s3-before", "db"),
        ("s3-before", "logs"),
    ] {
        let target = format!("{backup}-{pvc}");
        let class = format!("dr-{}", &target);
        let dir = host_volume_of_class(&format!("{namespace}-{target}"), "1Gi", &class)?;
        create::<Restore>(
            &ns,
            json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Restore",
                   "metadata": {"name": target},
                   "spec": {"backupName": backup, "sourcePVC": pvc,
                            "target": {"pvcName": target, "storageClassName": class}}}),
        )
        .await?;
        let done = finished_restore(&ns, &target, Duration::from_secs(240)).await?;
        assert_eq!(done.phase(), BackupPhase::Completed, "{:?}", done.status);
        assert_eq!(tree_listing(&dir)?, sources[pvc], "{target}");
        let claim = ns.api::<PersistentVolumeClaim>().get(&target).await?;
        let requested = claim
            .spec
            .and_then(|s| s.resources)
            .and_then(|r| r.requests)
            .and_then(|r| r.get("storage").map(|q| q.0.clone()));
        assert_eq!(requested.as_deref(), Some("1Gi"), "sized as recorded");
    }

    // One writer per repository: the new cluster read both repositories (sync, restores above)
    // but writes neither. The directory's part is the old cluster's; the S3 part's marker is
    // forged, so its writer is unknown.
    let (reason, message) = writable(&ns, "nfs", "False").await?;
    assert_eq!(reason, "RepositoryOwnedElsewhere", "{message}");
    assert!(message.contains(&old_cluster), "{message}");
    let (reason, message) = writable(&ns, "s3", "False").await?;
    assert_eq!(reason, "RepositoryOwnedElsewhere", "{message}");
    assert!(message.contains("cannot be read"), "{message}");
    assert!(
        events(&ns, "RepositoryOwnedElsewhere")
            .await?
            .iter()
            .any(|(on, _)| on == "nfs")
    );
    let policy_ready = wait_for(Duration::from_secs(60), "the policy to say why", || async {
        let status = policies
            .get("nfs-nightly")
            .await?
            .status
            .unwrap_or_default();
        Ok(condition::find(&status.conditions, ConditionType::Ready)
            .filter(|c| c.status == "False")
            .map(|c| c.reason.clone()))
    })
    .await?;
    assert_eq!(policy_ready, "RepositoryOwnedElsewhere");
    // A backup by hand is refused, and nothing is written.
    create::<Backup>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup",
               "metadata": {"name": "nfs-refused"}, "spec": {"policyRef": "nfs-nightly"}}),
    )
    .await?;
    let refused = finished_backup(&ns, "nfs-refused", Duration::from_secs(60)).await?;
    assert_eq!(refused.phase(), BackupPhase::Failed);
    let failed = condition::find(
        &refused.status.clone().unwrap_or_default().conditions,
        ConditionType::Failed,
    )
    .map(|c| c.reason.clone());
    assert_eq!(failed.as_deref(), Some("RepositoryOwnedElsewhere"));
    assert!(!repo_dir.join(&namespace).join("nfs-refused").exists());
    assert_eq!(marked_owner(&repo_dir, &namespace)?, old_cluster);

    // Taken over on purpose: the old cluster by its id, the forged marker as `unreadable`. Then
    // backups are made, and each marker names the new cluster.
    let fresh = ns.volume("fresh", &[("app", "shop")]).await?;
    write_sample_tree(&fresh, 3)?;
    let repositories_api = ns.api::<BackupRepository>();
    for (repo, from) in [("nfs", old_cluster.as_str()), ("s3", "unreadable")] {
        repositories_api
            .patch(
                repo,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"takeOverFrom": from}})),
            )
            .await?;
        assert_eq!(writable(&ns, repo, "True").await?.0, "TakingOver");
        if repo == "s3" {
            create::<BackupPolicy>(&ns, policy("s3-nightly", "s3")).await?;
        }
        let name = format!("{repo}-after");
        create::<Backup>(
            &ns,
            json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup",
                   "metadata": {"name": name}, "spec": {"policyRef": format!("{repo}-nightly")}}),
        )
        .await?;
        let after = finished_backup(&ns, &name, Duration::from_secs(240)).await?;
        assert_eq!(after.phase(), BackupPhase::Completed, "{:?}", after.status);
    }
    assert_eq!(marked_owner(&repo_dir, &namespace)?, new_cluster);
    assert!(String::from_utf8(s3.object("disaster", &marker_key)?)?.contains(&new_cluster));
    Ok(())
}
