//! `backstop-bench sync [--backups N]`: how long a new cluster takes to find N backups in a
//! repository (disaster recovery). Writes N backups' records (two volumes each, with a stub
//! manifest beside each record: a sync reads records and only checks that manifests exist) into
//! a directory repository, then creates the BackupRepository on it and times until every Backup
//! is imported and Completed. Prints the sync Job's own time (listing, reading the records,
//! creating the Backups) and the end-to-end time (Job start, the operator writing each status).
//!
//! `backstop-bench sync-memory`: the sync's peak memory against the number of objects it lists:
//! the mover's `sync` command run on this machine (against the local cluster's API) over
//! directory repositories of 10,000 and 100,000 objects, as whole backups and as stray objects
//! (what a bucket writer could plant), in turns.

use anyhow::Context as _;
use backstop_api::contract::{self, BackupResult};
use backstop_api::record::{self, RecordContext, VolumeRecord};
use backstop_api::{Backup, BackupPhase, BackupRepository};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const NS: &str = "bench-sync";

/// Writes `count` whole backups of namespace `NS` into the repository at `root`.
fn write_records(root: &Path, count: usize) -> anyhow::Result<()> {
    write_records_of(root, NS, count)
}

/// Writes `count` whole backups of namespace `namespace` into the repository at `root`: four
/// objects each (a record and a stub manifest per volume).
fn write_records_of(root: &Path, namespace: &str, count: usize) -> anyhow::Result<()> {
    let volumes = ["db", "logs"];
    for i in 0..count {
        let backup = format!("nightly-{i:05}");
        let dir = contract::backup_dir(namespace, &backup);
        std::fs::create_dir_all(root.join(&dir))?;
        let start =
            jiff::Timestamp::UNIX_EPOCH + jiff::SignedDuration::from_mins(28_800_000 + i as i64);
        for pvc in volumes {
            let result = BackupResult {
                pvc: pvc.into(),
                artifact: format!("{dir}/{pvc}.tar.zst"),
                bytes: 1 << 20,
                digest: format!("{:064x}", i * 2 + usize::from(pvc == "logs")),
                files: 100,
                source_bytes: 4 << 20,
                changed_while_reading: 0,
                changed_files: Vec::new(),
                restic: None,
            };
            let volume = VolumeRecord {
                version: record::RECORD_VERSION,
                context: RecordContext {
                    namespace: namespace.into(),
                    backup: backup.clone(),
                    policy: Some("nightly".into()),
                    scheduled_time: Some(start),
                    start_time: start,
                    volumes: volumes.iter().map(|v| v.to_string()).collect(),
                    capacity: Some("10Gi".into()),
                    storage_class_name: Some("standard".into()),
                    ..RecordContext::default()
                },
                completion_time: start + jiff::SignedDuration::from_secs(30),
                result,
            };
            std::fs::write(
                root.join(record::record_key(&dir, pvc)),
                serde_json::to_vec(&volume)?,
            )?;
            std::fs::write(root.join(contract::manifest_key(&dir, pvc)), b"stub")?;
        }
    }
    Ok(())
}

pub async fn run(count: usize) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("KUBECONFIG: run `make bench-sync`")?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces.get_opt(NS).await?.is_some() {
        namespaces.delete(NS, &DeleteParams::default()).await?;
        while namespaces.get_opt(NS).await?.is_some() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}}))?,
        )
        .await?;
    let root = crate::controller::host_volume("bench-sync-repo", "10Gi")?;
    let t = Instant::now();
    write_records(&root, count)?;
    println!(
        "wrote {count} backups' records (2 volumes each) in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    pvcs.create(&PostParams::default(), &serde_json::from_value(json!({
        "metadata": {"name": "backups"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "backstop-hostpath",
                 "volumeName": "bench-sync-repo", "resources": {"requests": {"storage": "10Gi"}}}}))?)
        .await?;
    let repos: Api<BackupRepository> = Api::namespaced(client.clone(), NS);
    let backups: Api<Backup> = Api::namespaced(client.clone(), NS);
    let t = Instant::now();
    repos
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "nfs"}, "spec": {"pvc": {"claimName": "backups"}}}))?,
        )
        .await?;
    let mut first = None;
    let total = loop {
        let items = backups.list(&ListParams::default()).await?.items;
        if first.is_none() && !items.is_empty() {
            first = Some(t.elapsed());
        }
        let done = items
            .iter()
            .filter(|b| b.phase() == BackupPhase::Completed)
            .count();
        if done >= count {
            break t.elapsed();
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(1800),
            "only {done} of {count} Backups Completed after 30 min"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let sync = loop {
        let status = repos.get("nfs").await?.status.unwrap_or_default();
        if let Some(message) = status
            .sync
            .filter(|s| s.last_result.is_some())
            .and_then(|s| s.message)
        {
            break message;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!();
    println!("| {count} backups in one repository | seconds |");
    println!("|---|---:|");
    println!(
        "| repository created -> first Backup appears | {:.1} |",
        first.unwrap_or_default().as_secs_f64()
    );
    println!(
        "| repository created -> all {count} Backups Completed | {:.1} |",
        total.as_secs_f64()
    );
    println!("\nthe sync Job's report: {sync}");
    Ok(())
}

/// See the module's documentation: `sync-memory`.
pub async fn memory() -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("KUBECONFIG: run `make bench-sync BENCH_ARGS=--memory`")?;
    let backstop = crate::mover::backstop_binary()?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let shapes = [("whole backups", true), ("stray objects", false)];
    let mut rows = Vec::new();
    // In turns: each shape at each size, smaller first, twice.
    for round in 0..2 {
        for objects in [10_000usize, 100_000] {
            for (shape, whole) in shapes {
                let ns = format!(
                    "bench-sync-mem-{round}-{objects}-{}",
                    if whole { "b" } else { "s" }
                );
                namespaces
                    .create(
                        &PostParams::default(),
                        &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
                    )
                    .await?;
                let root = std::env::temp_dir().join(&ns);
                let _ = std::fs::remove_dir_all(&root);
                if whole {
                    write_records_of(&root, &ns, objects / 4)?;
                } else {
                    let part = root.join(&ns);
                    std::fs::create_dir_all(&part)?;
                    for i in 0..objects {
                        std::fs::write(part.join(format!("stray-{i:06}.bin")), b"x")?;
                    }
                }
                let report = root.join("report.json");
                let mut cmd = std::process::Command::new(&backstop);
                cmd.args([
                    "mover",
                    "sync",
                    "--namespace",
                    &ns,
                    "--repository-name",
                    "r",
                ])
                .arg("--repository")
                .arg(&root)
                .arg("--termination-log")
                .arg(&report)
                .stdout(std::process::Stdio::null());
                let measured = crate::mover::measure(&mut cmd, false);
                let synced: Option<contract::Synced> = std::fs::read(&report)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok());
                namespaces.delete(&ns, &DeleteParams::default()).await?;
                std::fs::remove_dir_all(&root)?;
                let measured = measured?;
                let synced = synced.context("the sync wrote no report")?;
                println!(
                    "{objects} objects as {shape}: {:.1} MiB peak, {:.1} s ({} imported, {} deferred, {} skipped)",
                    measured.max_rss_mib,
                    measured.wall,
                    synced.imported,
                    synced.deferred,
                    synced.skipped
                );
                rows.push((objects, shape, measured, synced));
            }
        }
    }
    println!();
    println!("| objects listed | shape | peak RSS MiB | seconds | imported | deferred | skipped |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for (objects, shape, m, s) in rows {
        println!(
            "| {objects} | {shape} | {:.1} | {:.1} | {} | {} | {} |",
            m.max_rss_mib, m.wall, s.imported, s.deferred, s.skipped
        );
    }
    Ok(())
}
