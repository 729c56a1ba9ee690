//! Verification end to end: a policy's verification schedule reads its backups back from the
//! repository. One artifact is damaged on disk (a flipped byte, as bit rot or a bad disk would):
//! its backup becomes `Verified=False DigestMismatch`, a real Prometheus with the shipped rules
//! raises BackstopVerificationFailed, the sound backup verifies, and retention keeps the older
//! good backup that the damaged one would otherwise have pushed out.

use backstop_api::condition::{self, ConditionType};
use backstop_api::{Backup, BackupPhase, BackupPolicy, VerificationPhase};
use backstop_e2e::prometheus::start_prometheus;
use backstop_e2e::*;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

/// Waits until Backup `name` has a `Verified` condition of `status`; returns the Backup.
async fn verified(ns: &TestNamespace, name: &str, status: &str) -> anyhow::Result<Backup> {
    let api = ns.api::<Backup>();
    // A run every minute: the first may be up to a minute away, and one Job's pod start.
    wait_for(
        Duration::from_secs(180),
        &format!("backup {name} Verified={status}"),
        || async {
            let backup = api.get(name).await?;
            let conditions = backup
                .status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default();
            Ok(condition::find(&conditions, ConditionType::Verified)
                .is_some_and(|c| c.status == status)
                .then_some(backup))
        },
    )
    .await
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn a_damaged_artifact_fails_verification_alerts_and_stops_counting_for_retention()
-> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-verify").await?;
    let repository = ns.repository().await?;
    let db = ns.volume("db", &[("app", "db")]).await?;
    write_sample_tree(&db, 5)?;
    // Backups are made by hand (the schedule never falls during the test); verification is
    // switched on once the damage is done, so that no run sees the artifact before it.
    create::<BackupPolicy>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupPolicy",
               "metadata": {"name": "db"},
               "spec": {"schedule": "0 0 1 1 *", "retention": {"keepLast": 2},
                        "target": {"pvcSelector": {"matchLabels": {"app": "db"}}}}}),
    )
    .await?;
    let backups = ns.api::<Backup>();
    let make = |name: &'static str| {
        let ns = &ns;
        async move {
            create::<Backup>(
                ns,
                json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup",
                       "metadata": {"name": name}, "spec": {"policyRef": "db"}}),
            )
            .await?;
            let done = finished_backup(ns, name, Duration::from_secs(180)).await?;
            anyhow::ensure!(
                done.phase() == BackupPhase::Completed,
                "{name}: {:?}",
                done.status
            );
            // Creation times are seconds: one apart, the order is plain.
            tokio::time::sleep(Duration::from_millis(1100)).await;
            anyhow::Ok(done)
        }
    };
    make("older").await?;
    let damaged = make("damaged").await?;
    let artifact = damaged
        .status
        .as_ref()
        .and_then(|s| s.volumes.first())
        .and_then(|v| v.artifact.clone())
        .ok_or_else(|| anyhow::anyhow!("no artifact recorded: {:?}", damaged.status))?;
    let path = repository.join(&artifact);
    let mut bytes = std::fs::read(&path)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, bytes)?;

    let prometheus = start_prometheus(&leader_metrics_addr(&client).await?)?;
    prometheus.scraping().await?;
    ns.api::<BackupPolicy>()
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"verification": {"schedule": "* * * * *"}}})),
        )
        .await?;

    // The newest backup never verified goes first: the damaged one.
    let failed = verified(&ns, "damaged", "False").await?;
    let status = failed.status.clone().unwrap_or_default();
    let verdict = condition::find(&status.conditions, ConditionType::Verified)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no Verified condition"))?;
    assert_eq!(verdict.reason, "DigestMismatch", "{verdict:?}");
    assert!(
        verdict.message.contains("PVC db: DigestMismatch"),
        "{}",
        verdict.message
    );
    let verification = status.verification.clone().unwrap_or_default();
    assert_eq!(verification.phase, VerificationPhase::Failed);
    assert!(verification.completion_time.is_some());
    wait_until(
        Duration::from_secs(30),
        "a VerificationFailed event",
        || async {
            Ok(events(&ns, "VerificationFailed")
                .await?
                .iter()
                .any(|(on, note)| on == "damaged" && note.contains("DigestMismatch")))
        },
    )
    .await?;
    let alert = prometheus
        .firing(
            "BackstopVerificationFailed",
            &ns.name,
            "db",
            Duration::from_secs(90),
        )
        .await?;
    assert_eq!(alert["labels"]["severity"], "critical");

    // The next run takes the older backup, which was never verified: it is sound.
    let sound = verified(&ns, "older", "True").await?;
    let status = sound.status.unwrap_or_default();
    let verdict =
        condition::find(&status.conditions, ConditionType::Verified).map(|c| c.reason.clone());
    assert_eq!(verdict.as_deref(), Some("DigestsMatch"));
    let checked = status.verification.unwrap_or_default();
    assert_eq!(checked.volumes.len(), 1);
    assert_eq!(checked.volumes[0].files, Some(4), "{checked:?}");
    let table = kubectl(&["-n", &ns.name, "get", "backups", "older", "damaged"])?;
    assert!(table.contains("VERIFIED"), "{table}");
    for (name, column) in [("older", "True"), ("damaged", "False")] {
        let row = table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default();
        assert!(row.split_whitespace().any(|w| w == column), "{name}: {row}");
    }

    // A third backup: keepLast 2 counts the good ones, newest and older; without the damage it
    // would have kept newest and damaged and deleted older. The damaged one is left alone too.
    make("newest").await?;
    wait_until(
        Duration::from_secs(60),
        "retention to count the newest backup",
        || async {
            let policy = ns.api::<BackupPolicy>().get("db").await?;
            let kept: Vec<String> = policy
                .status
                .and_then(|s| s.retention)
                .map(|r| r.kept.into_iter().map(|k| k.name).collect())
                .unwrap_or_default();
            Ok(kept == ["newest", "older"])
        },
    )
    .await?;
    for name in ["older", "damaged", "newest"] {
        let backup = backups.get(name).await?;
        assert!(
            backup.metadata.deletion_timestamp.is_none(),
            "{name} is being deleted"
        );
    }
    Ok(())
}

/// The machine's bash in an image of its own (`import_programs_image` in hack/lib.sh): the
/// drill's check runs in it.
const CHECK_IMAGE: &str = "backstop-e2e-check:dev";

/// Asks `name` to be verified by hand (a new token asks again).
async fn ask(ns: &TestNamespace, name: &str, token: &str) -> anyhow::Result<()> {
    let patch = json!({"metadata": {"annotations": {"backstop.dev/verify": token}}});
    ns.api::<Backup>()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Waits until the verification answering `token` is done; returns the Backup.
async fn answered(ns: &TestNamespace, name: &str, token: &str) -> anyhow::Result<Backup> {
    let api = ns.api::<Backup>();
    wait_for(
        Duration::from_secs(180),
        &format!("backup {name}'s answer to {token}"),
        || async {
            let backup = api.get(name).await?;
            let done = backup
                .status
                .as_ref()
                .and_then(|s| s.verification.as_ref())
                .is_some_and(|v| v.request == token && v.phase != VerificationPhase::Running);
            Ok(done.then_some(backup))
        },
    )
    .await
}

/// Waits until no scratch volume of a drill is left in the namespace.
async fn no_scratch_volume_left(ns: &TestNamespace) -> anyhow::Result<()> {
    let claims = ns.api::<PersistentVolumeClaim>();
    wait_until(
        Duration::from_secs(60),
        "the drill's scratch volume to be gone",
        || async {
            let left = claims
                .list(&ListParams::default().labels("backstop.dev/role=drill"))
                .await?;
            Ok(left.items.is_empty())
        },
    )
    .await
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn a_restore_drill_passes_on_good_data_fails_on_data_its_check_rejects_and_leaves_nothing()
-> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-drill").await?;
    ns.repository().await?;
    let db = ns.volume("db", &[("app", "db")]).await?;
    write_sample_tree(&db, 5)?;
    let imported = Command::new("bash")
        .arg("-c")
        .arg(format!(
            ". hack/lib.sh && import_programs_image {CHECK_IMAGE} bash"
        ))
        .current_dir(repo_root())
        .status()?;
    anyhow::ensure!(
        imported.success(),
        "building the {CHECK_IMAGE} image failed"
    );
    // One spare volume per drill, in a class of this test's own (the cluster has no provisioner).
    let class = format!("e2e-{}", ns.name);
    for n in 1..=2 {
        host_volume_of_class(&format!("{}-scratch-{n}", ns.name), "1Gi", &class)?;
    }
    // The check reads the restored data: the README the sample tree wrote, and its contents.
    let check = |wanted: &str| {
        json!({"image": CHECK_IMAGE, "command": ["/bin/bash", "-c", format!(
            "[[ $(< /restored/README) == '{wanted}' ]] || {{ echo \"README says '$(< /restored/README)', expected '{wanted}'\" >&2; exit 3; }}"
        )]})
    };
    create::<BackupPolicy>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupPolicy",
               "metadata": {"name": "db"},
               "spec": {"schedule": "0 0 1 1 *",
                        "target": {"pvcSelector": {"matchLabels": {"app": "db"}}},
                        "verification": {"schedule": "0 0 1 1 *", "mode": "RestoreDrill",
                                         "drill": {"storageClassName": class, "check": check("sample 5")}}}}),
    )
    .await?;
    create::<Backup>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup",
               "metadata": {"name": "b1"}, "spec": {"policyRef": "db"}}),
    )
    .await?;
    let done = finished_backup(&ns, "b1", Duration::from_secs(180)).await?;
    anyhow::ensure!(done.phase() == BackupPhase::Completed, "{:?}", done.status);

    ask(&ns, "b1", "first").await?;
    let passed = answered(&ns, "b1", "first").await?;
    let status = passed.status.unwrap_or_default();
    let verification = status.verification.clone().unwrap_or_default();
    assert_eq!(
        verification.phase,
        VerificationPhase::Passed,
        "{verification:?}"
    );
    assert_eq!(
        verification.mode,
        backstop_api::VerificationMode::RestoreDrill
    );
    let verdict = condition::find(&status.conditions, ConditionType::Verified).cloned();
    assert_eq!(
        verdict
            .as_ref()
            .map(|c| (c.status.as_str(), c.reason.as_str())),
        Some(("True", "DrillPassed")),
        "{verdict:?}"
    );
    no_scratch_volume_left(&ns).await?;

    // The same backup, a check that wants other data: the drill fails with the check's words.
    ns.api::<BackupPolicy>()
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"verification": {"drill": {"check": check("sample 6")}}}}),
            ),
        )
        .await?;
    // The policy's copy in the operator must have the new check before the ask.
    tokio::time::sleep(Duration::from_secs(2)).await;
    ask(&ns, "b1", "second").await?;
    let failed = answered(&ns, "b1", "second").await?;
    let status = failed.status.unwrap_or_default();
    let verdict = condition::find(&status.conditions, ConditionType::Verified)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no Verified condition: {status:?}"))?;
    assert_eq!(verdict.status, "False");
    assert_eq!(verdict.reason, "DrillCheckFailed", "{verdict:?}");
    assert!(
        verdict.message.contains(
            "exited with 3 on the restored data: README says 'sample 5', expected 'sample 6'"
        ),
        "{}",
        verdict.message
    );
    no_scratch_volume_left(&ns).await?;
    Ok(())
}
