//! The restic repository format end to end, checked by Debian's restic 0.14 reading the
//! repository directory on the host: a per-minute policy on two PVCs with keepLast 2 leaves
//! exactly the snapshots of the two kept Backups, `restic check --read-data` passes, restic
//! restores a snapshot equal to its source, and so does a Backstop Restore into another PVC; a
//! scheduled prune reclaims the forgotten snapshots' data and restic still checks the rest.
//! A wrong password is `Ready=False WrongPassword`; a password Secret that is not opted in is
//! never handed to a pod. On moto and s3s-fs: per-minute policies keep exactly their two
//! Backups' snapshots, and a prune reclaims the data only the forgotten ones held.

use backstop_api::{Backup, BackupPhase, BackupPolicy, BackupRepository, Restore};
use backstop_e2e::*;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use std::time::Duration;

const PASSWORD: &str = "e2e restic password";

/// Secret `name` with `password`, opted in (or not) for mover pods.
async fn password_secret(
    ns: &TestNamespace,
    name: &str,
    password: &str,
    opted_in: bool,
) -> anyhow::Result<()> {
    let labels = if opted_in {
        json!({"backstop.dev/credentials": "true"})
    } else {
        json!({})
    };
    create::<Secret>(
        ns,
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": name, "labels": labels},
               "stringData": {"password": password}}),
    )
    .await?;
    Ok(())
}

async fn restic_repository(ns: &TestNamespace, name: &str, secret: &str) -> anyhow::Result<()> {
    create::<BackupRepository>(
        ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupRepository",
               "metadata": {"name": name},
               "spec": {"pvc": {"claimName": "backups"}, "format": "restic",
                        "passwordSecretRef": {"name": secret}}}),
    )
    .await?;
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn a_per_minute_policy_keeps_two_backups_as_snapshots_restic_checks_and_restores()
-> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-restic").await?;
    let repo_dir = ns.volume("backups", &[]).await?;
    let db = ns.volume("db", &[("app", "db")]).await?;
    let cache = ns.volume("cache", &[("app", "db")]).await?;
    write_sample_tree(&db, 1)?;
    write_sample_tree(&cache, 2)?;
    password_secret(&ns, "restic", PASSWORD, true).await?;
    restic_repository(&ns, "default", "restic").await?;
    assert_eq!(repository_ready(&ns, "default", "True").await?, "Ready");
    let restic_dir = repo_dir.join(&ns.name).join("_restic");
    assert!(restic_dir.join("config").is_file(), "the probe created it");

    create::<BackupPolicy>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupPolicy",
               "metadata": {"name": "db"},
               "spec": {"schedule": "* * * * *", "retention": {"keepLast": 2},
                        "target": {"pvcSelector": {"matchLabels": {"app": "db"}}}}}),
    )
    .await?;
    completed_runs(
        &ns,
        Duration::from_secs(300),
        "three completed runs",
        |seen| seen.len() >= 3,
    )
    .await?;
    ns.api::<BackupPolicy>()
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await?;
    let backups = ns.api::<Backup>();
    let mut kept: Vec<String> = wait_for(
        Duration::from_secs(120),
        "exactly two completed backups",
        || async {
            let items = backups.list(&ListParams::default()).await?.items;
            let done =
                items.len() == 2 && items.iter().all(|b| b.phase() == BackupPhase::Completed);
            Ok(done.then(|| {
                items
                    .iter()
                    .filter_map(|b| b.metadata.name.clone())
                    .collect()
            }))
        },
    )
    .await?;
    kept.sort();

    // The repository holds exactly the kept backups' snapshots (the others were forgotten),
    // tagged with their Backup, PVC and policy.
    let tagged = |snapshot: &Value, tag: &str| {
        snapshot["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == tag))
    };
    let snapshots: Vec<Value> = wait_for(
        Duration::from_secs(90),
        "the deleted backups' snapshots to be forgotten",
        || async {
            let listed: Vec<Value> =
                serde_json::from_str(&restic(&restic_dir, PASSWORD, &["snapshots", "--json"])?)?;
            let only_kept = listed.len() == 4
                && listed
                    .iter()
                    .all(|s| kept.iter().any(|k| tagged(s, &format!("backup={k}"))));
            Ok(only_kept.then_some(listed))
        },
    )
    .await?;
    for s in &snapshots {
        assert_eq!(s["hostname"], ns.name.as_str());
        assert!(tagged(s, "policy=db") && tagged(s, "backstop"), "{s}");
    }
    restic(&restic_dir, PASSWORD, &["check", "--read-data"])?;

    // Maintenance: a prune on the repository's schedule reclaims the forgotten snapshots' data
    // (at once here: keepDeleteHours 0, nothing else writes now), and restic still checks it.
    let repositories = ns.api::<BackupRepository>();
    repositories
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"prune": {"schedule": "* * * * *", "keepDeleteHours": 0}}}),
            ),
        )
        .await?;
    let pruned = wait_for(
        Duration::from_secs(150),
        "a scheduled prune to succeed",
        || async {
            let prune = repositories
                .get("default")
                .await?
                .status
                .and_then(|s| s.prune);
            Ok(prune.filter(|p| p.last_result.is_some()))
        },
    )
    .await?;
    assert_eq!(
        pruned.last_result.as_deref(),
        Some("Succeeded"),
        "{pruned:?}"
    );
    let message = pruned.message.unwrap_or_default();
    assert!(message.starts_with("4 snapshots kept"), "{message}");
    assert!(
        events(&ns, "PruneCompleted")
            .await?
            .iter()
            .any(|(on, _)| on == "default"),
        "a PruneCompleted event"
    );
    restic(&restic_dir, PASSWORD, &["check", "--read-data"])?;

    // The status names each snapshot; restic restores it equal to its source.
    let newest = backups.get(&kept[1]).await?;
    let status = newest.status.clone().unwrap_or_default();
    for (pvc, source) in [("db", &db), ("cache", &cache)] {
        let volume = status.volumes.iter().find(|v| v.pvc == pvc).expect(pvc);
        let snap = volume.restic.clone().expect("a restic snapshot");
        assert!(
            snap.parent.is_some(),
            "a later run builds on the last: {snap:?}"
        );
        assert_eq!(
            snap.files_read, 0,
            "nothing changed since the last run: {snap:?}"
        );
        assert_eq!(
            volume.bytes,
            Some(0),
            "unchanged: nothing added: {volume:?}"
        );
        let out = tempfile::tempdir()?;
        restic(
            &restic_dir,
            PASSWORD,
            &[
                "restore",
                &snap.id,
                "--target",
                out.path().to_str().unwrap_or_default(),
            ],
        )?;
        assert_eq!(
            tree_listing(&out.path().join(pvc))?,
            tree_listing(source)?,
            "{pvc}"
        );
    }

    // A Backstop Restore into another PVC: the same tree.
    let copy = ns.volume("copy", &[]).await?;
    create::<Restore>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Restore", "metadata": {"name": "back"},
               "spec": {"backupName": kept[1], "sourcePVC": "cache", "target": {"pvcName": "copy"}}}),
    )
    .await?;
    let restore = finished_restore(&ns, "back", Duration::from_secs(120)).await?;
    assert_eq!(
        restore.phase(),
        BackupPhase::Completed,
        "{:?}",
        restore.status
    );
    assert_eq!(tree_listing(&copy)?, tree_listing(&cache)?);
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn a_wrong_password_or_a_secret_not_opted_in_leaves_the_repository_not_ready()
-> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-restic-pw").await?;
    ns.volume("backups", &[]).await?;
    password_secret(&ns, "right", PASSWORD, true).await?;
    password_secret(&ns, "wrong", "not the password", true).await?;
    password_secret(&ns, "private", PASSWORD, false).await?;
    restic_repository(&ns, "first", "right").await?;
    assert_eq!(repository_ready(&ns, "first", "True").await?, "Ready");
    // The same storage, another password: the repository exists and refuses it.
    restic_repository(&ns, "second", "wrong").await?;
    assert_eq!(
        repository_ready(&ns, "second", "False").await?,
        "WrongPassword"
    );
    restic_repository(&ns, "third", "private").await?;
    assert_eq!(
        repository_ready(&ns, "third", "False").await?,
        "SecretNotOptedIn"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster and S3 servers: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn on_moto_and_s3s_fs_two_snapshots_stay_and_prune_reclaims_the_rest() -> anyhow::Result<()> {
    use backstop_e2e::s3::{S3Kind, S3Server, SECRET_KEY};
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-restic-s3").await?;
    let servers = [
        ("moto", S3Server::start(S3Kind::Moto)?),
        ("s3s", S3Server::start(S3Kind::S3sFs)?),
    ];
    keys_secret(&ns, "s3-keys", SECRET_KEY).await?;
    password_secret(&ns, "restic", PASSWORD, true).await?;
    let mut volumes = Vec::new();
    for (seed, (name, server)) in servers.iter().enumerate() {
        server.create_bucket("backups")?;
        create::<BackupRepository>(
            &ns,
            json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupRepository",
                   "metadata": {"name": name},
                   "spec": {"s3": {"endpoint": server.endpoint(), "bucket": "backups", "prefix": "e2e",
                                   "forcePathStyle": true, "credentialsSecretRef": {"name": "s3-keys"}},
                            "format": "restic", "passwordSecretRef": {"name": "restic"}}}),
        )
        .await?;
        let data = ns.volume(&format!("data-{name}"), &[("app", name)]).await?;
        write_sample_tree(&data, seed as u8 + 1)?;
        // Only in the first run: its data is what prune reclaims once that run is forgotten.
        let early: Vec<u8> = (0..2_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(data.join("early.bin"), early)?;
        volumes.push(data);
    }
    for (name, _) in &servers {
        assert_eq!(repository_ready(&ns, name, "True").await?, "Ready");
        create::<BackupPolicy>(
            &ns,
            json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupPolicy",
                   "metadata": {"name": name},
                   "spec": {"schedule": "* * * * *", "repository": name, "retention": {"keepLast": 2},
                            "target": {"pvcSelector": {"matchLabels": {"app": name}}}}}),
        )
        .await?;
    }
    let per_policy = |seen: &std::collections::BTreeSet<String>, n: usize| {
        servers.iter().all(|(name, _)| {
            seen.iter()
                .filter(|b| b.starts_with(&format!("{name}-")))
                .count()
                >= n
        })
    };
    completed_runs(
        &ns,
        Duration::from_secs(150),
        "a first run per policy",
        |seen| per_policy(seen, 1),
    )
    .await?;
    for data in &volumes {
        std::fs::remove_file(data.join("early.bin"))?;
    }
    // Four runs: the two kept are at least the third and fourth, neither holds early.bin.
    completed_runs(
        &ns,
        Duration::from_secs(330),
        "four runs per policy",
        |seen| per_policy(seen, 4),
    )
    .await?;
    for (name, _) in &servers {
        ns.api::<BackupPolicy>()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"suspend": true}})),
            )
            .await?;
    }
    let backups = ns.api::<Backup>();
    let repositories = ns.api::<BackupRepository>();
    for ((name, server), data) in servers.iter().zip(&volumes) {
        let kept: Vec<Backup> = wait_for(
            Duration::from_secs(120),
            &format!("policy {name}: exactly two completed backups"),
            || async {
                let items = backups
                    .list(&ListParams::default().labels(&format!("backstop.dev/policy={name}")))
                    .await?
                    .items;
                let done =
                    items.len() == 2 && items.iter().all(|b| b.phase() == BackupPhase::Completed);
                Ok(done.then_some(items))
            },
        )
        .await?;
        // restic 0.14 lists nothing through s3s-fs (see s3_mover.rs): its files are read as
        // the local repository they are.
        let repository = match server.kind {
            S3Kind::Moto => format!("s3:{}/backups/e2e/{}/_restic", server.endpoint(), ns.name),
            S3Kind::S3sFs => server
                .data_dir()
                .join(format!("backups/e2e/{}/_restic", ns.name))
                .display()
                .to_string(),
        };
        let restic = |args: &[&str]| restic(&repository, PASSWORD, args);
        let ids: Vec<String> = kept
            .iter()
            .filter_map(|b| b.status.as_ref()?.volumes.first()?.restic.as_ref())
            .map(|r| r.id.clone())
            .collect();
        assert_eq!(ids.len(), 2, "{kept:?}");
        wait_until(
            Duration::from_secs(90),
            &format!("{name}: only the kept backups' snapshots"),
            || async {
                let listed: Vec<Value> = serde_json::from_str(&restic(&["snapshots", "--json"])?)?;
                let mut listed: Vec<String> = listed
                    .iter()
                    .filter_map(|s| s["id"].as_str().map(str::to_string))
                    .collect();
                listed.sort();
                let mut expected = ids.clone();
                expected.sort();
                Ok(listed == expected)
            },
        )
        .await?;
        repositories
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"spec": {"prune": {"schedule": "* * * * *", "keepDeleteHours": 0}}}),
                ),
            )
            .await?;
        let pruned = wait_for(
            Duration::from_secs(150),
            &format!("{name}: a scheduled prune to succeed"),
            || async {
                let prune = repositories.get(name).await?.status.and_then(|s| s.prune);
                Ok(prune.filter(|p| p.last_result.is_some()))
            },
        )
        .await?;
        assert_eq!(
            pruned.last_result.as_deref(),
            Some("Succeeded"),
            "{pruned:?}"
        );
        let message = pruned.message.unwrap_or_default();
        assert!(message.starts_with("2 snapshots kept; "), "{message}");
        assert!(
            !message.contains("; 0 B of data"),
            "the first run's data is reclaimed: {message}"
        );
        restic(&["check", "--read-data"])?;
        let out = tempfile::tempdir()?;
        restic(&[
            "restore",
            &ids[0],
            "--target",
            out.path().to_str().unwrap_or_default(),
        ])?;
        assert_eq!(
            tree_listing(&out.path().join(format!("data-{name}")))?,
            tree_listing(data)?
        );
    }
    Ok(())
}
