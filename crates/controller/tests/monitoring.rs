//! The shipped dashboard and alerts only query metrics the operator really exports: every
//! `backstop_*` name in deploy/monitoring is found in the output of a registry in which every
//! metric family has a sample.

use backstop_controller::metrics::*;
use std::collections::BTreeSet;

fn exported() -> String {
    let m = Metrics::new();
    let policy = PolicyLabels {
        namespace: "shop".into(),
        policy: "nightly".into(),
    };
    m.observe_policy(
        &policy,
        &PolicyFigures {
            last_success: Some(1.0),
            last_size_bytes: Some(2.0),
            last_files: Some(3.0),
            next_run: Some(4.0),
            interval_seconds: Some(60.0),
            consecutive_failures: 1,
            last_verified: Some(5.0),
            verification_interval_seconds: Some(3600.0),
            failing_verification: Some(0),
        },
    );
    m.backup_duration.get_or_create(&policy).observe(2.0);
    m.restore_series("shop");
    m.restore_duration
        .get_or_create(&NamespaceLabels {
            namespace: "shop".into(),
        })
        .observe(1.0);
    m.repository_ready
        .get_or_create(&RepositoryLabels {
            namespace: "shop".into(),
            repository: "default".into(),
        })
        .set(1);
    m.retention_deletions.get_or_create(&policy).inc();
    m.reconcile_errors
        .get_or_create(&ControllerLabels {
            controller: "backup".into(),
        })
        .inc();
    m.render()
}

/// Every `backstop_...` identifier in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("backstop_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

fn exported_names() -> BTreeSet<String> {
    exported()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

fn check(file: &str, queried: BTreeSet<String>) {
    let exported = exported_names();
    assert!(!queried.is_empty(), "{file} queries no backstop metric");
    let missing: Vec<_> = queried.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "{file} queries metrics the operator does not export: {missing:?}\nexported: {exported:?}"
    );
}

const MONITORING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/monitoring");

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let text =
        std::fs::read_to_string(format!("{MONITORING}/dashboard.json")).expect("dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).expect("the dashboard is valid JSON");
    let mut exprs = String::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            exprs.push_str(target["expr"].as_str().expect("expr"));
            exprs.push('\n');
        }
    }
    check("dashboard.json", metric_names(&exprs));
}

#[test]
fn every_metric_the_alerts_use_is_exported() {
    let text = std::fs::read_to_string(format!("{MONITORING}/alerts.yaml")).expect("alerts.yaml");
    let exprs: String = text
        .lines()
        .skip_while(|l| !l.contains("groups:"))
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter(|l| !l.contains("description") && !l.contains("summary"))
        .collect::<Vec<_>>()
        .join("\n");
    check("alerts.yaml", metric_names(&exprs));
}
