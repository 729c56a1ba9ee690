//! Two replicas never both act, and killing the leader in the middle of a backup makes no
//! duplicate Backup or Job: the standby takes the Lease and finishes the work.

use backstop_api::{Backup, BackupPhase, BackupRepository};
use backstop_e2e::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

const STANDBY: &str = "backstop-controller-standby";
const STANDBY_LISTEN: &str = "127.0.0.1:8081";

/// A second replica of the operator (its own Deployment: on the host network each replica needs
/// its own port). Removed when dropped.
struct Standby;

impl Drop for Standby {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kubectl")
            .args([
                "-n",
                "backstop-system",
                "delete",
                "deployment",
                STANDBY,
                "--wait=false",
            ])
            .output();
    }
}

async fn start_standby(client: &kube::Client) -> anyhow::Result<Standby> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "backstop-system");
    let leftover = deployments
        .delete(STANDBY, &DeleteParams::default())
        .await
        .is_ok();
    let main = deployments.get("backstop-controller").await?;
    let mut spec = serde_json::to_value(main.spec)?;
    let labels =
        json!({"app.kubernetes.io/name": "backstop", "app.kubernetes.io/component": "standby"});
    spec["selector"] = json!({"matchLabels": labels});
    spec["template"]["metadata"]["labels"] = labels;
    // A fixed port below the kernel's ephemeral range (no test server's port-0 bind gets it), so
    // only another program can hold it: say so instead of a standby that never serves.
    anyhow::ensure!(
        leftover || std::net::TcpStream::connect(STANDBY_LISTEN).is_err(),
        "{STANDBY_LISTEN} is in use by another program; the standby replica listens there"
    );
    let env = spec["template"]["spec"]["containers"][0]["env"]
        .as_array_mut()
        .ok_or_else(|| anyhow::anyhow!("controller container has no env"))?;
    env.retain(|e| e["name"] != "BACKSTOP_LISTEN");
    env.push(json!({"name": "BACKSTOP_LISTEN", "value": STANDBY_LISTEN}));
    let standby: Deployment = serde_json::from_value(json!({
        "metadata": {"name": STANDBY, "namespace": "backstop-system"},
        "spec": spec,
    }))?;
    wait_until(Duration::from_secs(30), "the old standby to go", || async {
        Ok(deployments.get_opt(STANDBY).await?.is_none())
    })
    .await?;
    deployments.create(&PostParams::default(), &standby).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "backstop-system");
    wait_until(
        Duration::from_secs(60),
        "the standby replica to run",
        || async {
            let list = pods
                .list(&ListParams::default().labels("app.kubernetes.io/component=standby"))
                .await?;
            Ok(list
                .items
                .iter()
                .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")))
        },
    )
    .await?;
    Ok(Standby)
}

async fn leader(client: &kube::Client) -> anyhow::Result<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "backstop-system");
    Ok(leases
        .get("backstop-controller")
        .await?
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default())
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn killing_the_leader_mid_backup_makes_no_duplicate_backup_or_job() -> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let _standby = start_standby(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-failover").await?;
    ns.volume("backups", &[]).await?;
    for (pvc, seed) in [("alpha", 1), ("beta", 2)] {
        let dir = ns.volume(pvc, &[("app", "ha")]).await?;
        write_sample_tree(&dir, seed)?;
        // 4 GiB of holes: no memory or disk, but each mover reads them for several seconds, so
        // the leader dies while the Jobs run.
        std::fs::File::create(dir.join("sparse.img"))?.set_len(4 << 30)?;
    }
    create::<BackupRepository>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupRepository",
               "metadata": {"name": "default"}, "spec": {"pvc": {"claimName": "backups"}}}),
    )
    .await?;

    let before = leader(&client).await?;
    create::<Backup>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup", "metadata": {"name": "ha"},
               "spec": {"target": {"pvcSelector": {"matchLabels": {"app": "ha"}}}}}),
    )
    .await?;
    // Kill the leader once both Jobs run (it created them and said so), and prove the backup was
    // still running when it died.
    let running = || async {
        let backup = ns.api::<Backup>().get("ha").await?;
        let volumes = backup.status.clone().unwrap_or_default().volumes;
        Ok(backup.phase() == BackupPhase::Running
            && volumes.len() == 2
            && volumes.iter().all(|v| v.phase == BackupPhase::Running))
    };
    wait_until(Duration::from_secs(60), "both Jobs to run", running).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "backstop-system");
    pods.delete(
        &before,
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await?;
    assert!(
        running().await?,
        "the backup finished before the leader was killed: the test proves nothing"
    );

    let backup = finished_backup(&ns, "ha", Duration::from_secs(180)).await?;
    assert_eq!(
        backup.phase(),
        BackupPhase::Completed,
        "{:?}",
        backup.status
    );
    let after = leader(&client).await?;
    assert_ne!(before, after, "another replica must hold the Lease now");

    // One Backup; each volume's Job created once, each Job's pod created once.
    assert_eq!(
        ns.api::<Backup>()
            .list(&ListParams::default())
            .await?
            .items
            .len(),
        1
    );
    // (The repository's sync Job is the repository's, not the backup's.)
    let pod_creations: Vec<_> = events(&ns, "SuccessfulCreate")
        .await?
        .into_iter()
        .filter(|(job, _)| job.starts_with("ha-"))
        .collect();
    let mut per_job: BTreeMap<String, usize> = BTreeMap::new();
    for (job, _) in &pod_creations {
        *per_job.entry(job.clone()).or_default() += 1;
    }
    assert_eq!(per_job.len(), 2, "{pod_creations:?}");
    assert!(per_job.values().all(|n| *n == 1), "{pod_creations:?}");
    // Each Job was created, and said to be, once; the backup completed once, said by the new leader.
    let job_created = events(&ns, "JobCreated").await?;
    assert_eq!(job_created.len(), 2, "{job_created:?}");
    let completed = events(&ns, "BackupCompleted").await?;
    assert_eq!(completed.len(), 1, "{completed:?}");
    Ok(())
}
