//! Backups as Kubernetes resources, end to end, with the operator running in the cluster under its
//! own ServiceAccount: a per-minute policy on two PVCs, retention, artifacts read back with tar.

use backstop_api::condition::ConditionType;
use backstop_api::{Backup, BackupPhase, BackupPolicy, condition};
use backstop_e2e::*;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn per_minute_policy_keeps_the_newest_two_completed_backups_with_their_artifacts()
-> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-retention").await?;
    let repo_dir = ns.volume("backups", &[]).await?;
    let db = ns.volume("db", &[("app", "db")]).await?;
    let cache = ns.volume("cache", &[("app", "db")]).await?;
    let _other = ns.volume("other", &[("app", "web")]).await?;
    write_sample_tree(&db, 1)?;
    write_sample_tree(&cache, 2)?;
    let sources = [("db", tree_listing(&db)?), ("cache", tree_listing(&cache)?)];

    create::<backstop_api::BackupRepository>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupRepository",
               "metadata": {"name": "default"}, "spec": {"pvc": {"claimName": "backups"}}}),
    )
    .await?;
    create::<BackupPolicy>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupPolicy",
               "metadata": {"name": "db"},
               "spec": {"schedule": "* * * * *", "retention": {"keepLast": 2},
                        "target": {"pvcSelector": {"matchLabels": {"app": "db"}}}}}),
    )
    .await?;

    // At least three runs complete; retention leaves the newest two.
    let seen = completed_runs(
        &ns,
        Duration::from_secs(300),
        "three completed runs",
        |seen| seen.len() >= 3,
    )
    .await?;
    let backups = ns.api::<Backup>();
    // Stop scheduling, let the last run finish and retention settle.
    ns.api::<BackupPolicy>()
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await?;
    let mut kept: Vec<String> = wait_for(
        Duration::from_secs(120),
        "exactly two completed backups and nothing else",
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
    // The two kept are the newest of every run seen completed (scheduled names sort by time).
    let mut every: Vec<String> = seen.into_iter().chain(kept.iter().cloned()).collect();
    every.sort();
    every.dedup();
    assert!(every.len() >= 3, "{every:?}");
    assert_eq!(kept, every[every.len() - 2..], "kept {kept:?} of {every:?}");

    // The repository holds exactly the kept backups; the deleted ones' artifacts are gone.
    wait_until(
        Duration::from_secs(60),
        "deleted backups' artifacts to be removed",
        || async {
            let dirs: Vec<String> = std::fs::read_dir(repo_dir.join(&ns.name))?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Result<_, _>>()?;
            // Beside them, the marker of the namespace's writer (this cluster).
            let mut dirs = dirs;
            dirs.sort();
            let marked = dirs.iter().any(|d| d == "_owner.json");
            dirs.retain(|d| d != "_owner.json");
            Ok(marked && dirs == kept)
        },
    )
    .await?;

    // Each kept artifact, extracted by tar alone, equals its source.
    for name in &kept {
        let backup = backups.get(name).await?;
        let status = backup.status.clone().unwrap_or_default();
        let consistent = condition::find(&status.conditions, ConditionType::Consistent);
        assert!(consistent.is_some_and(|c| c.status == "True"), "{status:?}");
        assert_eq!(status.volumes.len(), 2, "{status:?}");
        for (pvc, listing) in &sources {
            let volume = status
                .volumes
                .iter()
                .find(|v| v.pvc == *pvc)
                .expect("volume in status");
            let artifact = repo_dir.join(volume.artifact.as_deref().unwrap_or_default());
            assert_eq!(
                std::fs::metadata(&artifact)?.len() as i64,
                volume.bytes.unwrap_or(-1)
            );
            let out = tempfile::tempdir()?;
            extract_with_tar(&artifact, out.path())?;
            assert_eq!(tree_listing(out.path())?, tar_view(listing), "{name}/{pvc}");
        }
    }

    // The story is told in events (each backup deleted named by exactly one cleanup event), and
    // finished Jobs are gone.
    let cleanup = events(&ns, "CleanupTriggered").await?;
    assert!(
        cleanup
            .iter()
            .all(|(on, note)| on == "db" && note.contains("keepLast=2")),
        "{cleanup:?}"
    );
    for deleted in every.iter().filter(|name| !kept.contains(name)) {
        let naming = cleanup
            .iter()
            .filter(|(_, note)| note.contains(deleted.as_str()));
        assert_eq!(naming.count(), 1, "{deleted}: {cleanup:?}");
    }
    let completed = events(&ns, "BackupCompleted").await?;
    assert!(completed.len() >= 3, "{completed:?}");
    wait_until(
        Duration::from_secs(30),
        "finished Jobs to be removed",
        || async { Ok(work_jobs(&ns).await?.is_empty()) },
    )
    .await?;
    let policy = ns.api::<BackupPolicy>().get("db").await?;
    let status = policy.status.unwrap_or_default();
    assert!(status.last_successful_backup_time.is_some());
    assert!(
        status.next_scheduled_backup.is_none(),
        "suspended policy has no next run"
    );
    // Suspended means no run, not only no next time shown: a second policy is the clock, and once
    // its run of the next minute has completed, the suspended policy has made nothing new.
    create::<BackupPolicy>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupPolicy",
               "metadata": {"name": "clock"},
               "spec": {"schedule": "* * * * *", "retention": {"keepLast": 1},
                        "target": {"pvcSelector": {"matchLabels": {"app": "web"}}}}}),
    )
    .await?;
    let by_policy = |items: &[Backup], policy: &str| -> Vec<String> {
        let mut names: Vec<String> = items
            .iter()
            .filter(|b| b.spec.policy_ref.as_deref() == Some(policy))
            .filter_map(|b| b.metadata.name.clone())
            .collect();
        names.sort();
        names
    };
    let items = wait_for(
        Duration::from_secs(120),
        "the clock policy's first completed run",
        || async {
            let items = backups.list(&ListParams::default()).await?.items;
            let ticked = items.iter().any(|b| {
                b.spec.policy_ref.as_deref() == Some("clock") && b.phase() == BackupPhase::Completed
            });
            Ok(ticked.then_some(items))
        },
    )
    .await?;
    assert_eq!(by_policy(&items, "db"), kept, "the suspended policy ran");
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn a_file_written_while_it_is_read_makes_a_backup_that_says_so() -> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-torn").await?;
    ns.repository().await?;
    let data = ns.volume("db", &[("app", "db")]).await?;
    write_sample_tree(&data, 3)?;
    // A writer that keeps appending to a log of 32 to 256 MiB (cut back to 32 MiB now and then):
    // whenever the mover reads it, it grows (or shrinks) under the mover's feet, which an empty
    // or briefly idle file would not. Big enough that reading it takes a good part of a second:
    // a 20 MiB log was once read whole while the loaded machine did not run the writer.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let log = data.join("busy.log");
    std::fs::write(&log, vec![b'x'; 32 << 20])?;
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().append(true).open(&log)?;
            let block = vec![b'y'; 64 << 10];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::io::Write::write_all(&mut f, &block)?;
                if f.metadata()?.len() > 256 << 20 {
                    f.set_len(32 << 20)?;
                }
            }
            Ok(())
        })
    };
    create::<Backup>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup", "metadata": {"name": "busy"},
               "spec": {"target": {"pvcSelector": {"matchLabels": {"app": "db"}}}}}),
    )
    .await?;
    let backup = finished_backup(&ns, "busy", Duration::from_secs(180)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer panicked"))??;
    let backup = backup?;
    let status = backup.status.clone().unwrap_or_default();
    // Completed (every other file is exact), but not silently.
    assert_eq!(backup.phase(), BackupPhase::Completed, "{status:?}");
    let consistent =
        condition::find(&status.conditions, ConditionType::Consistent).expect("Consistent");
    assert_eq!(consistent.status, "False", "{status:?}");
    assert_eq!(consistent.reason, "ChangedWhileReading");
    assert!(
        consistent.message.contains("PVC db: busy.log"),
        "{}",
        consistent.message
    );
    assert_eq!(status.volumes[0].changed_files, ["busy.log"]);
    assert!(
        status
            .message
            .unwrap_or_default()
            .contains("1 changed while read")
    );
    let warned = events(&ns, "ChangedWhileReading").await?;
    assert!(warned.iter().any(|(on, _)| on == "busy"), "{warned:?}");
    Ok(())
}
