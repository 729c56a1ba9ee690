//! Prometheus metrics (text format on `/metrics`). Labels are bounded: namespace, policy, result;
//! never a backup name.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackupLabels {
    pub namespace: String,
    pub policy: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub namespace: String,
    pub policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestoreLabels {
    pub namespace: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

pub struct Metrics {
    pub backups: Family<BackupLabels, Counter>,
    pub restores: Family<RestoreLabels, Counter>,
    pub backup_duration: Family<PolicyLabels, Histogram>,
    pub backup_bytes: Family<PolicyLabels, Gauge<f64, AtomicU64>>,
    pub last_success: Family<PolicyLabels, Gauge<f64, AtomicU64>>,
    pub retention_deletions: Family<PolicyLabels, Counter>,
    pub reconcile_errors: Family<ControllerLabels, Counter>,
    pub registry: Registry,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("backstop");
        let backups = Family::<BackupLabels, Counter>::default();
        registry.register("backups", "Backups finished, by result", backups.clone());
        let restores = Family::<RestoreLabels, Counter>::default();
        registry.register("restores", "Restores finished, by result", restores.clone());
        let backup_duration = Family::<PolicyLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0])
        });
        registry.register(
            "backup_duration_seconds",
            "Wall time of finished backups",
            backup_duration.clone(),
        );
        let backup_bytes = Family::<PolicyLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "last_backup_size_bytes",
            "Artifact bytes of the newest completed backup",
            backup_bytes.clone(),
        );
        let last_success = Family::<PolicyLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "last_successful_backup_timestamp_seconds",
            "Completion time of the newest completed backup (unix seconds)",
            last_success.clone(),
        );
        let retention_deletions = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "retention_deletions",
            "Backups deleted by retention",
            retention_deletions.clone(),
        );
        let reconcile_errors = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that ended in an error (retried with backoff)",
            reconcile_errors.clone(),
        );
        let build_info = Family::<Vec<(String, String)>, Gauge>::default();
        build_info
            .get_or_create(&vec![(
                "version".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            )])
            .set(1);
        registry.register("build_info", "Backstop's version", build_info);
        Self {
            backups,
            restores,
            backup_duration,
            backup_bytes,
            last_success,
            retention_deletions,
            reconcile_errors,
            registry,
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_render_with_the_backstop_prefix() {
        let m = Metrics::new();
        m.backups
            .get_or_create(&BackupLabels {
                namespace: "shop".into(),
                policy: "nightly".into(),
                result: "completed".into(),
            })
            .inc();
        let text = m.render();
        assert!(
            text.contains(
                r#"backstop_backups_total{namespace="shop",policy="nightly",result="completed"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("backstop_build_info"), "{text}");
    }
}
