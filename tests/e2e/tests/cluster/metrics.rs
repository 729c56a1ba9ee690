//! "Don't ask whether backups run; prove they did": the operator's /metrics after a real backup,
//! and a real Prometheus (Debian's, on loopback, with the shipped rules) raising the
//! backup-failure alert when a backup fails on purpose.

use backstop_api::{Backup, BackupPhase, BackupPolicy, BackupRepository};
use backstop_e2e::prometheus::start_prometheus;
use backstop_e2e::*;
use serde_json::json;
use std::time::Duration;

async fn policy_with_repository(ns: &TestNamespace, app: &str) -> anyhow::Result<()> {
    ns.volume("backups", &[]).await?;
    create::<BackupRepository>(
        ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupRepository",
               "metadata": {"name": "default"}, "spec": {"pvc": {"claimName": "backups"}}}),
    )
    .await?;
    create::<BackupPolicy>(
        ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupPolicy", "metadata": {"name": "nightly"},
               "spec": {"schedule": "0 2 * * *", "target": {"pvcSelector": {"matchLabels": {"app": app}}}}}),
    )
    .await?;
    Ok(())
}

async fn finished(ns: &TestNamespace, name: &str) -> anyhow::Result<Backup> {
    create::<Backup>(
        ns,
        // A backup that cannot start waits 5 s for its volumes before it fails.
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup", "metadata": {"name": name},
               "spec": {"policyRef": "nightly", "startingDeadlineSeconds": 5}}),
    )
    .await?;
    finished_backup(ns, name, Duration::from_secs(120)).await
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn metrics_show_the_backup_counter_histogram_and_last_success() -> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-metrics").await?;
    policy_with_repository(&ns, "db").await?;
    let data = ns.volume("data", &[("app", "db")]).await?;
    write_sample_tree(&data, 8)?;
    let backup = finished(&ns, "first").await?;
    assert_eq!(
        backup.phase(),
        BackupPhase::Completed,
        "{:?}",
        backup.status
    );
    let completed_at = backup
        .status
        .and_then(|s| s.completion_time)
        .map(|t| t.0.as_second())
        .unwrap_or_default();

    let labels = format!(r#"namespace="{}",policy="nightly""#, ns.name);
    let expected = [
        format!(r#"backstop_backups_total{{{labels},result="completed"}} 1"#),
        format!(r#"backstop_backups_total{{{labels},result="failed"}} 0"#),
        format!(r#"backstop_backup_duration_seconds_count{{{labels}}} 1"#),
        format!(r#"backstop_backup_duration_seconds_bucket{{le="+Inf",{labels}}} 1"#),
        format!(
            r#"backstop_last_successful_backup_timestamp_seconds{{{labels}}} {completed_at}.0"#
        ),
        format!(r#"backstop_policy_consecutive_failures{{{labels}}} 0"#),
        format!(r#"backstop_last_backup_files{{{labels}}} 4.0"#),
    ];
    let text = wait_for(
        Duration::from_secs(60),
        "the metrics of the backup",
        || async {
            // Leadership may still be settling: an unreachable leader is "not yet", not a failure.
            let Ok(addr) = leader_metrics_addr(&client).await else {
                return Ok(None);
            };
            let Ok(text) = http_get(&addr, "/metrics") else {
                return Ok(None);
            };
            Ok(expected
                .iter()
                .all(|line| text.contains(line.as_str()))
                .then_some(text))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}; expected lines: {expected:#?}"))?;
    assert!(text.contains("backstop_build_info{version="), "{text}");
    // Bounded cardinality: no backup name appears as a label value of this namespace's series
    // (other suites run at the same time; one has a repository named "first").
    let ours = format!("namespace=\"{}\"", ns.name);
    assert!(
        text.lines()
            .filter(|line| line.contains(&ours))
            .all(|line| !line.contains("\"first\"")),
        "a backup name leaked into the labels"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn prometheus_raises_the_backup_failure_alert_for_a_failed_backup() -> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-alert").await?;
    // The policy's selector matches nothing: its backup fails on purpose.
    policy_with_repository(&ns, "nothing-here").await?;
    let target = leader_metrics_addr(&client).await?;
    let prometheus = start_prometheus(&target)?;
    prometheus.scraping().await?;

    let backup = finished(&ns, "doomed").await?;
    assert_eq!(backup.phase(), BackupPhase::Failed, "{:?}", backup.status);

    let alert = prometheus
        .firing(
            "BackstopBackupFailed",
            &ns.name,
            "nightly",
            Duration::from_secs(90),
        )
        .await?;
    assert_eq!(alert["labels"]["severity"], "warning");
    Ok(())
}
