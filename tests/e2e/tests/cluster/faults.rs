//! Bad input and faults: each gives a condition with a reason and a Warning event, a Failed
//! backup where it applies, and no storm of Jobs. The operator runs in the cluster.

use backstop_api::condition::ConditionType;
use backstop_api::{Backup, BackupPhase, BackupPolicy, BackupRepository, condition};
use backstop_e2e::*;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

fn policy(name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupPolicy",
           "metadata": {"name": name}, "spec": spec})
}

fn manual_backup(name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup", "metadata": {"name": name}, "spec": spec})
}

/// Asserts that the API server refused an object as invalid (422, not any error), naming `field`.
fn invalid<K: std::fmt::Debug>(created: anyhow::Result<K>, field: &str) -> anyhow::Result<()> {
    let err = match created {
        Ok(object) => anyhow::bail!("the API server accepted an invalid {field}: {object:?}"),
        Err(err) => err,
    };
    match err.downcast_ref::<kube::Error>() {
        Some(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(status.message.contains(field), "{status:?}");
            Ok(())
        }
        _ => anyhow::bail!("not a rejection by the API server: {err:#}"),
    }
}

/// Waits for the policy's Ready condition to be False with `reason`, and for a Warning event.
async fn policy_refused(ns: &TestNamespace, name: &str, reason: &str) -> anyhow::Result<()> {
    let api = ns.api::<BackupPolicy>();
    wait_until(
        Duration::from_secs(60),
        &format!("policy {name} Ready=False {reason}"),
        || async {
            let p = api.get(name).await?;
            let conditions = p.status.map(|s| s.conditions).unwrap_or_default();
            Ok(condition::find(&conditions, ConditionType::Ready)
                .is_some_and(|c| c.status == "False" && c.reason == reason))
        },
    )
    .await?;
    wait_until(
        Duration::from_secs(30),
        &format!("a {reason} Warning event on {name}"),
        || async { Ok(events(ns, reason).await?.iter().any(|(on, _)| on == name)) },
    )
    .await
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn invalid_policies_are_refused_with_a_reason_and_run_nothing() -> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-bad-policy").await?;
    let jobs = ns.watch_jobs().await?;
    ns.repository().await?;
    let target = json!({"pvcSelector": {"matchLabels": {"app": "db"}}});

    // The schema rejects what it can: keepLast below 1 and a schedule without five fields.
    let zero = create::<BackupPolicy>(
        &ns,
        policy(
            "zero",
            json!({"schedule": "0 2 * * *", "retention": {"keepLast": 0}, "target": target}),
        ),
    )
    .await;
    invalid(zero, "spec.retention.keepLast")?;
    let short = create::<BackupPolicy>(
        &ns,
        policy("short", json!({"schedule": "0 2 *", "target": target})),
    )
    .await;
    invalid(short, "spec.schedule")?;

    // The controller rejects the rest.
    create::<BackupPolicy>(
        &ns,
        policy(
            "bad-cron",
            json!({"schedule": "61 * * * *", "target": target}),
        ),
    )
    .await?;
    create::<BackupPolicy>(
        &ns,
        policy(
            "bad-zone",
            json!({"schedule": "* * * * *", "timeZone": "Mars/Olympus", "target": target}),
        ),
    )
    .await?;
    create::<BackupPolicy>(
        &ns,
        policy(
            "no-repo",
            json!({"schedule": "* * * * *", "repository": "missing", "target": target}),
        ),
    )
    .await?;
    policy_refused(&ns, "bad-cron", "InvalidSchedule").await?;
    policy_refused(&ns, "bad-zone", "InvalidTimeZone").await?;
    policy_refused(&ns, "no-repo", "RepositoryNotFound").await?;

    // A valid policy on the same every-minute schedule, as a clock: once it has made its Backup, a
    // scheduled minute has passed, and none of the refused ones has made a Backup or a Job.
    create::<BackupPolicy>(
        &ns,
        policy(
            "clock",
            json!({"schedule": "* * * * *", "target": {"pvcSelector": {"matchLabels": {"app": "clock"}}}}),
        ),
    )
    .await?;
    let backups = ns.api::<Backup>();
    wait_until(
        Duration::from_secs(90),
        "the clock policy's first Backup",
        || async { Ok(!backups.list(&ListParams::default()).await?.items.is_empty()) },
    )
    .await?;
    let made: Vec<_> = backups
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|b| b.spec.policy_ref.unwrap_or_default())
        .collect();
    assert!(made.iter().all(|p| p == "clock"), "{made:?}");
    assert_eq!(jobs.names(), Vec::<String>::new());
    // The missing repository is reported once, not once per minute.
    let reports = events(&ns, "RepositoryNotFound").await?;
    assert_eq!(
        reports.iter().filter(|(on, _)| on == "no-repo").count(),
        1,
        "{reports:?}"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn backups_that_cannot_start_fail_with_a_reason_and_no_job() -> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-bad-backup").await?;
    let jobs = ns.watch_jobs().await?;
    ns.repository().await?;
    // Each of these could resolve itself (a PVC, a repository or a policy may still be on its
    // way): they wait for their short start deadline, then fail with the reason.
    let nothing = json!({"pvcSelector": {"matchLabels": {"app": "nothing"}}});
    let deadline = 3;
    create::<Backup>(
        &ns,
        manual_backup(
            "no-match",
            json!({"target": nothing, "startingDeadlineSeconds": deadline}),
        ),
    )
    .await?;
    create::<Backup>(
        &ns,
        manual_backup(
            "no-repo",
            json!({"target": nothing, "repository": "nope", "startingDeadlineSeconds": deadline}),
        ),
    )
    .await?;
    create::<Backup>(
        &ns,
        manual_backup(
            "no-policy",
            json!({"policyRef": "ghost", "startingDeadlineSeconds": deadline}),
        ),
    )
    .await?;
    // An invalid spec cannot: it fails at once.
    create::<Backup>(
        &ns,
        manual_backup(
            "both",
            json!({"policyRef": "ghost", "target": nothing, "startingDeadlineSeconds": 3600}),
        ),
    )
    .await?;
    backup_failed(&ns, "both", "InvalidSpec", Duration::from_secs(30)).await?;
    backup_failed(&ns, "no-match", "NoVolumesMatched", Duration::from_secs(60)).await?;
    backup_failed(
        &ns,
        "no-repo",
        "RepositoryNotFound",
        Duration::from_secs(60),
    )
    .await?;
    backup_failed(&ns, "no-policy", "PolicyNotFound", Duration::from_secs(60)).await?;
    assert_eq!(jobs.names(), Vec::<String>::new());
    // Failed is final: a Failed backup can be deleted (nothing to remove) and goes away.
    ns.api::<Backup>()
        .delete("no-match", &DeleteParams::default())
        .await?;
    wait_until(
        Duration::from_secs(30),
        "the failed backup to be deleted",
        || async { Ok(ns.api::<Backup>().get_opt("no-match").await?.is_none()) },
    )
    .await
}

/// Unmounts a tmpfs when the test ends, however it ends.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn a_full_repository_fails_the_backup_and_leaves_nothing_that_looks_complete()
-> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-full-repo").await?;
    let repo_dir = ns.repository().await?;
    // A 1 MiB filesystem under the repository volume: the backup cannot fit.
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "backstop-e2e-full"])
        .arg(&repo_dir)
        .status()?;
    anyhow::ensure!(
        status.success(),
        "mounting a small tmpfs on {}",
        repo_dir.display()
    );
    let _mounted = Mounted(repo_dir.clone());
    let data = ns.volume("data", &[("app", "big")]).await?;
    // Incompressible: 4 MiB from the kernel's random source.
    let mut noise = vec![0u8; 4 << 20];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut noise)?;
    std::fs::write(data.join("noise.bin"), noise)?;

    create::<Backup>(
        &ns,
        manual_backup(
            "too-big",
            json!({"target": {"pvcSelector": {"matchLabels": {"app": "big"}}}}),
        ),
    )
    .await?;
    let backup = backup_failed(&ns, "too-big", "RepositoryFull", Duration::from_secs(120)).await?;
    let message = backup.status.and_then(|s| s.message).unwrap_or_default();
    assert!(message.contains("full"), "{message}");
    // No manifest, no partial artifact.
    let dir = repo_dir.join(&ns.name).join("too-big");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
    // The repository stops being Ready, so that policies stop starting Jobs into it.
    let repos = ns.api::<backstop_api::BackupRepository>();
    wait_until(
        Duration::from_secs(30),
        "the repository Ready=False RepositoryFull",
        || async {
            let conditions = repos
                .get("default")
                .await?
                .status
                .unwrap_or_default()
                .conditions;
            Ok(condition::find(&conditions, ConditionType::Ready)
                .is_some_and(|c| c.status == "False" && c.reason == "RepositoryFull"))
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn a_pvc_deleted_before_its_mover_starts_fails_the_backup() -> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-pvc-gone").await?;
    ns.repository().await?;
    // A volume only reachable from a node that does not exist: its mover pod never starts.
    let pv_name = ns.stranded_volume("stranded").await?;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    create::<Backup>(
        &ns,
        manual_backup(
            "orphan",
            json!({"target": {"pvcSelector": {"matchLabels": {"app": "stranded"}}}}),
        ),
    )
    .await?;
    wait_until(Duration::from_secs(60), "the mover Job", || async {
        Ok(!work_jobs(&ns).await?.is_empty())
    })
    .await?;
    ns.api::<PersistentVolumeClaim>()
        .delete("stranded", &DeleteParams::default())
        .await?;
    backup_failed(
        &ns,
        "orphan",
        "SourceVolumeDeleted",
        Duration::from_secs(120),
    )
    .await?;
    wait_until(
        Duration::from_secs(60),
        "the stuck Job to be removed",
        || async { Ok(work_jobs(&ns).await?.is_empty()) },
    )
    .await?;
    let _ = pvs.delete(&pv_name, &DeleteParams::default()).await;
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn a_backup_whose_artifacts_cannot_be_removed_says_why_and_keeps_trying() -> anyhow::Result<()>
{
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-stuck-delete").await?;
    let repo_dir = ns.repository().await?;
    let data = ns.volume("data", &[("app", "db")]).await?;
    write_sample_tree(&data, 3)?;
    create::<Backup>(
        &ns,
        manual_backup(
            "keep-me",
            json!({"target": {"pvcSelector": {"matchLabels": {"app": "db"}}}}),
        ),
    )
    .await?;
    let backups = ns.api::<Backup>();
    wait_until(
        Duration::from_secs(90),
        "the backup to complete",
        || async { Ok(backups.get("keep-me").await?.phase() == BackupPhase::Completed) },
    )
    .await?;
    let artifacts = repo_dir.join(&ns.name).join("keep-me");
    assert!(artifacts.is_dir());

    // Without its repository the Backup cannot remove its data: it stays and says why.
    ns.api::<BackupRepository>()
        .delete("default", &DeleteParams::default())
        .await?;
    backups.delete("keep-me", &DeleteParams::default()).await?;
    wait_until(
        Duration::from_secs(60),
        "an ArtifactsNotRemoved warning",
        || async {
            Ok(events(&ns, "ArtifactsNotRemoved")
                .await?
                .iter()
                .any(|(on, note)| on == "keep-me" && note.contains("not found")))
        },
    )
    .await?;
    assert!(
        backups.get_opt("keep-me").await?.is_some(),
        "the Backup must wait for its data"
    );
    assert!(artifacts.is_dir(), "nothing was removed");

    // Once the repository is back, the artifacts and then the Backup go.
    create::<BackupRepository>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupRepository",
               "metadata": {"name": "default"}, "spec": {"pvc": {"claimName": "backups"}}}),
    )
    .await?;
    wait_until(
        Duration::from_secs(120),
        "the Backup to be deleted with its artifacts",
        || async { Ok(backups.get_opt("keep-me").await?.is_none()) },
    )
    .await?;
    assert!(
        !artifacts.exists(),
        "artifacts must be removed before the Backup goes"
    );
    Ok(())
}
