//! `backstop-bench sync [--backups N]`: how long a new cluster takes to find N backups in a
//! repository (disaster recovery). Writes N backups' records (two volumes each, with a stub
//! manifest beside each record: a sync reads records and only checks that manifests exist) into
//! a directory repository, then creates the BackupRepository on it and times until every Backup
//! is imported and Completed. Prints the sync Job's own time (listing, reading the records,
//! creating the Backups) and the end-to-end time (Job start, the operator writing each status).

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
    let volumes = ["db", "logs"];
    for i in 0..count {
        let backup = format!("nightly-{i:05}");
        let dir = contract::backup_dir(NS, &backup);
        std::fs::create_dir_all(root.join(&dir))?;
        let start =
            jiff::Timestamp::UNIX_EPOCH + jiff::SignedDuration::from_hours(480_000 + i as i64);
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
                    namespace: NS.into(),
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
