//! Retention that is a guarantee, end to end: the policy's status says which rule keeps each
//! backup, the brake holds a mass deletion (keepLast 10 -> 1) until a person approves it, and a
//! run of failed backups pushes no good one out.

use backstop_api::condition::{self, ConditionType};
use backstop_api::{Backup, BackupPhase, BackupPolicy, labels};
use backstop_e2e::*;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn the_brake_holds_a_mass_deletion_until_it_is_approved() -> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-brake").await?;
    ns.repository().await?;
    let db = ns.volume("db", &[("app", "db")]).await?;
    write_sample_tree(&db, 5)?;
    // A policy that never runs on its own during the test; its backups are made by hand.
    create::<BackupPolicy>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupPolicy",
               "metadata": {"name": "db"},
               "spec": {"schedule": "0 0 1 1 *", "retention": {"keepLast": 10},
                        "target": {"pvcSelector": {"matchLabels": {"app": "db"}}}}}),
    )
    .await?;
    let names = ["b1", "b2", "b3", "b4"];
    for name in names {
        create::<Backup>(
            &ns,
            json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup",
                   "metadata": {"name": name}, "spec": {"policyRef": "db"}}),
        )
        .await?;
        let done = finished_backup(&ns, name, Duration::from_secs(180)).await?;
        anyhow::ensure!(
            done.phase() == BackupPhase::Completed,
            "{name}: {:?}",
            done.status
        );
        // Creation times are seconds: one apart, the order of the four is plain.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let policies = ns.api::<BackupPolicy>();
    let kept = |p: &BackupPolicy| -> Vec<(String, Vec<String>)> {
        p.status
            .as_ref()
            .and_then(|s| s.retention.as_ref())
            .map(|r| {
                r.kept
                    .iter()
                    .map(|k| (k.name.clone(), k.rules.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    wait_until(
        Duration::from_secs(60),
        "the policy to say that keepLast keeps all four",
        || async {
            let p = policies.get("db").await?;
            let expected: Vec<(String, Vec<String>)> = names
                .iter()
                .rev()
                .map(|n| (n.to_string(), vec!["last".to_string()]))
                .collect();
            Ok(kept(&p) == expected)
        },
    )
    .await?;

    // keepLast 10 -> 1 would delete three of four: held.
    policies
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"retention": {"keepLast": 1}}})),
        )
        .await?;
    let held = wait_for(Duration::from_secs(60), "the brake to hold", || async {
        let p = policies.get("db").await?;
        let status = p.status.clone().unwrap_or_default();
        let c = condition::find(&status.conditions, ConditionType::RetentionHeld).cloned();
        Ok(c.filter(|c| c.status == "True").map(|c| (p, c)))
    })
    .await?;
    let (policy, why) = held;
    assert_eq!(why.reason, "TooManyDeletions");
    let generation = policy.metadata.generation.unwrap_or_default();
    let approve = format!("{}={generation}", labels::APPROVE_RETENTION);
    assert!(
        why.message.contains("would delete 3 of 4 good backups"),
        "{}",
        why.message
    );
    assert!(why.message.contains(&approve), "{}", why.message);
    let status = policy.status.unwrap_or_default();
    assert_eq!(
        status.retention.map(|r| r.held).unwrap_or_default(),
        ["b1", "b2", "b3"]
    );
    wait_until(
        Duration::from_secs(30),
        "a RetentionHeld Warning",
        || async {
            Ok(events(&ns, "RetentionHeld")
                .await?
                .iter()
                .any(|(on, note)| on == "db" && note.contains("nothing deleted")))
        },
    )
    .await?;
    let backups = ns.api::<Backup>();
    let still: Vec<String> = backups
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|b| b.metadata.deletion_timestamp.is_none())
        .filter_map(|b| b.metadata.name.clone())
        .collect();
    assert_eq!(still.len(), 4, "nothing deleted while held: {still:?}");

    // Approved for this generation: the three oldest go, the newest stays.
    policies
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                labels::APPROVE_RETENTION: generation.to_string()}}})),
        )
        .await?;
    wait_until(
        Duration::from_secs(120),
        "the three oldest backups to be deleted",
        || async {
            let left: Vec<String> = backups
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .filter_map(|b| b.metadata.name.clone())
                .collect();
            Ok(left == ["b4"])
        },
    )
    .await?;
    let p = policies.get("db").await?;
    let status = p.status.clone().unwrap_or_default();
    let released = condition::find(&status.conditions, ConditionType::RetentionHeld)
        .expect("the condition stays, False");
    assert_eq!(
        (released.status.as_str(), released.reason.as_str()),
        ("False", "Approved")
    );
    assert_eq!(kept(&p), [("b4".to_string(), vec!["last".to_string()])]);
    Ok(())
}

/// A run of failures never pushes good backups out: after good backups, every scheduled run
/// fails (the selector matches nothing) for several minutes, and retention deletes nothing.
#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn a_run_of_failed_backups_deletes_no_good_one() -> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-floor").await?;
    ns.repository().await?;
    let db = ns.volume("db", &[("app", "db")]).await?;
    write_sample_tree(&db, 6)?;
    // Suspended while the good backups are made by hand; a failing run waits 5 s, not 10 min.
    create::<BackupPolicy>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupPolicy",
               "metadata": {"name": "db"},
               "spec": {"schedule": "* * * * *", "suspend": true, "startingDeadlineSeconds": 5,
                        "retention": {"keepLast": 2},
                        "target": {"pvcSelector": {"matchLabels": {"app": "db"}}}}}),
    )
    .await?;
    for name in ["good-1", "good-2"] {
        create::<Backup>(
            &ns,
            json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup",
                   "metadata": {"name": name}, "spec": {"policyRef": "db"}}),
        )
        .await?;
        let done = finished_backup(&ns, name, Duration::from_secs(180)).await?;
        anyhow::ensure!(
            done.phase() == BackupPhase::Completed,
            "{name}: {:?}",
            done.status
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    // The volume's label is gone (a broken selector): every run from now on fails.
    ns.api::<BackupPolicy>()
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": false,
                "target": {"pvcSelector": {"matchLabels": {"app": "gone"}}}}})),
        )
        .await?;
    let backups = ns.api::<Backup>();
    let failed = wait_for(
        Duration::from_secs(300),
        "three scheduled runs to fail",
        || async {
            let all = backups.list(&ListParams::default()).await?.items;
            let failed: Vec<String> = all
                .iter()
                .filter(|b| b.phase() == BackupPhase::Failed)
                .filter_map(|b| b.metadata.name.clone())
                .collect();
            Ok((failed.len() >= 3).then_some(failed))
        },
    )
    .await?;
    // The pass after the third failure has run (each Backup change wakes the policy).
    tokio::time::sleep(Duration::from_secs(3)).await;
    for name in ["good-1", "good-2"] {
        let good = backups.get(name).await?;
        assert!(
            good.metadata.deletion_timestamp.is_none(),
            "{name} was deleted after {failed:?}"
        );
    }
    let policy = ns.api::<BackupPolicy>().get("db").await?;
    let kept: Vec<String> = policy
        .status
        .and_then(|s| s.retention)
        .map(|r| r.kept.into_iter().map(|k| k.name).collect())
        .unwrap_or_default();
    assert_eq!(kept, ["good-2", "good-1"], "after {failed:?}");
    Ok(())
}
