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
