//! Many small files in bounded memory, on the local cluster: the cluster enforces a pod's memory
//! limit (a pod that allocates more than it is OOM-killed), and a volume of 200,000 files backs
//! up and restores with the mover pods limited to 64 MiB, the restored tree equal to the source.

use backstop_api::{Backup, BackupPhase, BackupPolicy, Restore};
use backstop_e2e::*;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const FILES: usize = 200_000;
const LIMIT: &str = "64Mi";
/// The machine's `dd` in an image of its own (`import_programs_image` in hack/lib.sh).
const PROGRAMS: &str = "backstop-e2e-programs:dev";

/// 200 directories of 1,000 files of 0 to 200 bytes each, deterministic.
fn spool(root: &Path) -> anyhow::Result<()> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..FILES {
        let dir = root.join(format!("d{:03}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir(&dir)?;
        }
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let size = (state % 201) as usize;
        let content: Vec<u8> = (0..size).map(|j| (state >> (j % 56)) as u8).collect();
        std::fs::write(dir.join(format!("m{i:06}")), content)?;
    }
    Ok(())
}

/// How the container of pod `name` ended (its reason, e.g. `OOMKilled`, and exit code).
async fn terminated(ns: &TestNamespace, name: &str) -> anyhow::Result<(String, i32)> {
    let pods = ns.api::<Pod>();
    wait_for(
        Duration::from_secs(120),
        &format!("pod {name} to end"),
        || async {
            let pod = pods.get(name).await?;
            let state = pod
                .status
                .and_then(|s| s.container_statuses)
                .and_then(|c| c.into_iter().next())
                .and_then(|c| c.state)
                .and_then(|s| s.terminated);
            Ok(state.map(|t| (t.reason.unwrap_or_default(), t.exit_code)))
        },
    )
    .await
}

/// The memory limit of the mover container of the Job labelled `selector`, seen while it exists
/// (a finished backup or restore deletes its Jobs): start it before the Job is made.
fn mover_limit(
    ns: &TestNamespace,
    selector: &str,
) -> tokio::task::JoinHandle<anyhow::Result<String>> {
    let jobs = ns.api::<Job>();
    let selector = selector.to_string();
    tokio::spawn(async move {
        wait_for(
            Duration::from_secs(600),
            &format!("a mover Job {selector}"),
            || async {
                let list = jobs
                    .list(&kube::api::ListParams::default().labels(&selector))
                    .await?;
                Ok(list
                    .items
                    .iter()
                    .filter_map(|j| j.spec.as_ref()?.template.spec.as_ref())
                    .flat_map(|p| p.containers.iter())
                    .filter_map(|c| c.resources.as_ref()?.limits.as_ref()?.get("memory"))
                    .map(|q| q.0.clone())
                    .next())
            },
        )
        .await
    })
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn two_hundred_thousand_files_back_up_and_restore_with_movers_limited_to_64_mib()
-> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-many").await?;

    // The limit is real here: dd with a 128 MiB buffer is killed under it, 16 MiB is not.
    let imported = Command::new("bash")
        .arg("-c")
        .arg(format!(
            ". hack/lib.sh && import_programs_image {PROGRAMS} dd"
        ))
        .current_dir(repo_root())
        .status()?;
    anyhow::ensure!(imported.success(), "building the {PROGRAMS} image failed");
    for (name, block) in [("hog", "128M"), ("modest", "16M")] {
        create::<Pod>(
            &ns,
            json!({"metadata": {"name": name}, "spec": {"restartPolicy": "Never", "containers": [{
                "name": "dd", "image": PROGRAMS, "imagePullPolicy": "Never",
                "command": ["/bin/dd", "if=/dev/zero", "of=/dev/null", format!("bs={block}"), "count=1"],
                "resources": {"limits": {"memory": LIMIT}}}]}}),
        )
        .await?;
    }
    assert_eq!(
        terminated(&ns, "hog").await?,
        ("OOMKilled".to_string(), 137)
    );
    assert_eq!(terminated(&ns, "modest").await?.1, 0);

    let source = ns.volume("spool", &[("app", "mail")]).await?;
    spool(&source)?;
    ns.repository().await?;
    create::<BackupPolicy>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupPolicy", "metadata": {"name": "mail"},
               "spec": {"schedule": "0 2 * * *", "target": {"pvcSelector": {"matchLabels": {"app": "mail"}}},
                        "moverResources": {"requests": {"memory": LIMIT}, "limits": {"memory": LIMIT}}}}),
    )
    .await?;
    let backup_limit = mover_limit(&ns, "backstop.dev/backup=spool");
    create::<Backup>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup", "metadata": {"name": "spool"},
               "spec": {"policyRef": "mail"}}),
    )
    .await?;
    let backup = finished_backup(&ns, "spool", Duration::from_secs(600)).await?;
    assert_eq!(
        backup.phase(),
        BackupPhase::Completed,
        "{:?}",
        backup.status
    );
    assert_eq!(backup_limit.await??, LIMIT);
    let files = backup
        .status
        .as_ref()
        .and_then(|s| s.volumes.first())
        .and_then(|v| v.files);
    assert_eq!(files, Some(FILES as i64));

    let target = ns.volume("restored", &[]).await?;
    let restore_limit = mover_limit(&ns, "backstop.dev/restore=spool");
    create::<Restore>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Restore", "metadata": {"name": "spool"},
               "spec": {"backupName": "spool", "target": {"pvcName": "restored"}}}),
    )
    .await?;
    let restore = finished_restore(&ns, "spool", Duration::from_secs(600)).await?;
    assert_eq!(
        restore.phase(),
        BackupPhase::Completed,
        "{:?}",
        restore.status
    );
    assert_eq!(restore_limit.await??, LIMIT);
    let (restored, original) = (tree_listing(&target)?, tree_listing(&source)?);
    assert_eq!(restored.len(), FILES + FILES / 1000);
    assert!(
        restored == original,
        "the restored tree differs from the source"
    );
    Ok(())
}
