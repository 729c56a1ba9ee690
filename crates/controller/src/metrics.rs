//! Prometheus metrics (text format on `/metrics`, names prefixed `backstop_`, base units,
//! `_total` counters). Labels are bounded: namespace, policy, repository, result, controller;
//! never a backup or restore name. Per-policy gauges are derived from the API state on every
//! policy reconcile, so a new leader reports them right after it starts; a deleted policy's
//! series are removed.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::Mutex;
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
pub struct NamespaceLabels {
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepositoryLabels {
    pub namespace: String,
    pub repository: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The `result` label values of `backstop_verifications_total`.
pub const VERIFICATION_RESULTS: [&str; 3] = ["passed", "failed", "inconclusive"];

/// What the policy reconciler knows of a policy, for its gauges.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PolicyFigures {
    pub last_success: Option<f64>,
    pub last_size_bytes: Option<f64>,
    pub last_files: Option<f64>,
    pub next_run: Option<f64>,
    pub interval_seconds: Option<f64>,
    pub consecutive_failures: i64,
    /// Completion time of the newest verification that passed.
    pub last_verified: Option<f64>,
    /// Time between the next two verification runs (set only with `spec.verification`).
    pub verification_interval_seconds: Option<f64>,
    /// Backups whose `Verified` condition is False (set with `spec.verification`, or when any).
    pub failing_verification: Option<i64>,
}

pub struct Metrics {
    pub backups: Family<BackupLabels, Counter>,
    pub restores: Family<RestoreLabels, Counter>,
    pub backup_duration: Family<PolicyLabels, Histogram>,
    pub restore_duration: Family<NamespaceLabels, Histogram>,
    pub last_backup_bytes: Family<PolicyLabels, FloatGauge>,
    pub last_backup_files: Family<PolicyLabels, FloatGauge>,
    pub last_success: Family<PolicyLabels, FloatGauge>,
    pub next_backup: Family<PolicyLabels, FloatGauge>,
    pub interval: Family<PolicyLabels, FloatGauge>,
    pub consecutive_failures: Family<PolicyLabels, Gauge>,
    pub repository_ready: Family<RepositoryLabels, Gauge>,
    pub retention_deletions: Family<PolicyLabels, Counter>,
    pub verifications: Family<BackupLabels, Counter>,
    pub last_verified: Family<PolicyLabels, FloatGauge>,
    pub verification_interval: Family<PolicyLabels, FloatGauge>,
    pub failing_verification: Family<PolicyLabels, Gauge>,
    pub reconcile_errors: Family<ControllerLabels, Counter>,
    policies: Mutex<HashSet<PolicyLabels>>,
    registry: Registry,
}

/// Durations from a second to four hours.
fn duration_buckets() -> Histogram {
    Histogram::new([1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0])
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("backstop");
        let backups = Family::<BackupLabels, Counter>::default();
        registry.register("backups", "Backups finished, by result", backups.clone());
        let restores = Family::<RestoreLabels, Counter>::default();
        registry.register("restores", "Restores finished, by result", restores.clone());
        let backup_duration =
            Family::<PolicyLabels, Histogram>::new_with_constructor(duration_buckets);
        registry.register(
            "backup_duration_seconds",
            "Wall time of finished backups",
            backup_duration.clone(),
        );
        let restore_duration =
            Family::<NamespaceLabels, Histogram>::new_with_constructor(duration_buckets);
        registry.register(
            "restore_duration_seconds",
            "Wall time of finished restores",
            restore_duration.clone(),
        );
        let last_backup_bytes = Family::<PolicyLabels, FloatGauge>::default();
        registry.register(
            "last_backup_size_bytes",
            "Artifact bytes of the policy's newest completed backup",
            last_backup_bytes.clone(),
        );
        let last_backup_files = Family::<PolicyLabels, FloatGauge>::default();
        registry.register(
            "last_backup_files",
            "Files in the policy's newest completed backup",
            last_backup_files.clone(),
        );
        let last_success = Family::<PolicyLabels, FloatGauge>::default();
        registry.register(
            "last_successful_backup_timestamp_seconds",
            "Completion time of the policy's newest completed backup (unix seconds)",
            last_success.clone(),
        );
        let next_backup = Family::<PolicyLabels, FloatGauge>::default();
        registry.register(
            "next_backup_timestamp_seconds",
            "When the policy's next backup is scheduled (unix seconds)",
            next_backup.clone(),
        );
        let interval = Family::<PolicyLabels, FloatGauge>::default();
        registry.register(
            "policy_interval_seconds",
            "Time between the policy's next two scheduled runs",
            interval.clone(),
        );
        let consecutive_failures = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "policy_consecutive_failures",
            "Failed backups of the policy since its last completed one",
            consecutive_failures.clone(),
        );
        let repository_ready = Family::<RepositoryLabels, Gauge>::default();
        registry.register(
            "repository_ready",
            "1 when the repository is usable, else 0",
            repository_ready.clone(),
        );
        let retention_deletions = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "retention_deletions",
            "Backups deleted by retention",
            retention_deletions.clone(),
        );
        let verifications = Family::<BackupLabels, Counter>::default();
        registry.register(
            "verifications",
            "Verifications of backups finished, by result (passed, failed, inconclusive)",
            verifications.clone(),
        );
        let last_verified = Family::<PolicyLabels, FloatGauge>::default();
        registry.register(
            "last_verified_timestamp_seconds",
            "Completion time of the newest verification of the policy's backups that passed (unix seconds)",
            last_verified.clone(),
        );
        let verification_interval = Family::<PolicyLabels, FloatGauge>::default();
        registry.register(
            "verification_interval_seconds",
            "Time between the policy's next two verification runs",
            verification_interval.clone(),
        );
        let failing_verification = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "backups_failing_verification",
            "The policy's backups whose last conclusive verification failed",
            failing_verification.clone(),
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
        registry.register("build_info", "Backstop's version (always 1)", build_info);
        Self {
            backups,
            restores,
            backup_duration,
            restore_duration,
            last_backup_bytes,
            last_backup_files,
            last_success,
            next_backup,
            interval,
            consecutive_failures,
            repository_ready,
            retention_deletions,
            verifications,
            last_verified,
            verification_interval,
            failing_verification,
            reconcile_errors,
            policies: Mutex::new(HashSet::new()),
            registry,
        }
    }

    /// Sets the per-policy gauges from what the policy reconciler derived.
    pub fn observe_policy(&self, labels: &PolicyLabels, figures: &PolicyFigures) {
        if let Ok(mut known) = self.policies.lock() {
            known.insert(labels.clone());
        }
        // Both result series exist from the start, so `increase()` sees the first failure.
        for result in ["completed", "failed"] {
            let _ = self.backups.get_or_create(&BackupLabels {
                namespace: labels.namespace.clone(),
                policy: labels.policy.clone(),
                result: result.into(),
            });
        }
        let set = |family: &Family<PolicyLabels, FloatGauge>, value: Option<f64>| match value {
            Some(v) => {
                family.get_or_create(labels).set(v);
            }
            None => {
                family.remove(labels);
            }
        };
        set(&self.last_success, figures.last_success);
        set(&self.last_backup_bytes, figures.last_size_bytes);
        set(&self.last_backup_files, figures.last_files);
        set(&self.next_backup, figures.next_run);
        set(&self.interval, figures.interval_seconds);
        set(&self.last_verified, figures.last_verified);
        set(
            &self.verification_interval,
            figures.verification_interval_seconds,
        );
        self.consecutive_failures
            .get_or_create(labels)
            .set(figures.consecutive_failures);
        match figures.failing_verification {
            Some(n) => {
                self.failing_verification.get_or_create(labels).set(n);
            }
            None => {
                self.failing_verification.remove(labels);
            }
        }
        if figures.verification_interval_seconds.is_some() {
            // Every result series exists from the start, so `increase()` sees the first failure.
            for result in VERIFICATION_RESULTS {
                let _ = self.verifications.get_or_create(&BackupLabels {
                    namespace: labels.namespace.clone(),
                    policy: labels.policy.clone(),
                    result: result.into(),
                });
            }
        }
    }

    /// Drops the series of policies that no longer exist.
    pub fn retain_policies(&self, existing: &HashSet<PolicyLabels>) {
        let Ok(mut known) = self.policies.lock() else {
            return;
        };
        for gone in known.iter().filter(|l| !existing.contains(*l)) {
            for family in [
                &self.last_success,
                &self.last_backup_bytes,
                &self.last_backup_files,
                &self.next_backup,
                &self.interval,
                &self.last_verified,
                &self.verification_interval,
            ] {
                family.remove(gone);
            }
            self.consecutive_failures.remove(gone);
            self.failing_verification.remove(gone);
        }
        known.retain(|l| existing.contains(l));
    }

    /// Both result series for a namespace's restores, so the first failure is an increase.
    pub fn restore_series(&self, namespace: &str) {
        for result in ["completed", "failed"] {
            let _ = self.restores.get_or_create(&RestoreLabels {
                namespace: namespace.into(),
                result: result.into(),
            });
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

    fn policy() -> PolicyLabels {
        PolicyLabels {
            namespace: "shop".into(),
            policy: "nightly".into(),
        }
    }

    #[test]
    fn policy_gauges_render_with_the_backstop_prefix_and_bounded_labels() {
        let m = Metrics::new();
        m.observe_policy(
            &policy(),
            &PolicyFigures {
                last_success: Some(1_800_000_000.0),
                next_run: Some(1_800_086_400.0),
                interval_seconds: Some(86_400.0),
                consecutive_failures: 2,
                ..Default::default()
            },
        );
        let text = m.render();
        for line in [
            r#"backstop_last_successful_backup_timestamp_seconds{namespace="shop",policy="nightly"} 1800000000.0"#,
            r#"backstop_policy_interval_seconds{namespace="shop",policy="nightly"} 86400.0"#,
            r#"backstop_policy_consecutive_failures{namespace="shop",policy="nightly"} 2"#,
            r#"backstop_backups_total{namespace="shop",policy="nightly",result="failed"} 0"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        // Without spec.verification, no verification series at all.
        assert!(!text.contains("verif"), "{text}");
        m.observe_policy(
            &policy(),
            &PolicyFigures {
                last_verified: Some(1_800_000_100.0),
                verification_interval_seconds: Some(604_800.0),
                failing_verification: Some(1),
                ..Default::default()
            },
        );
        let text = m.render();
        for line in [
            r#"backstop_last_verified_timestamp_seconds{namespace="shop",policy="nightly"} 1800000100.0"#,
            r#"backstop_verification_interval_seconds{namespace="shop",policy="nightly"} 604800.0"#,
            r#"backstop_backups_failing_verification{namespace="shop",policy="nightly"} 1"#,
            r#"backstop_verifications_total{namespace="shop",policy="nightly",result="failed"} 0"#,
            r#"backstop_verifications_total{namespace="shop",policy="nightly",result="inconclusive"} 0"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(text.contains("backstop_build_info"), "{text}");
    }

    #[test]
    fn a_deleted_policy_leaves_no_series_behind() {
        let m = Metrics::new();
        m.observe_policy(
            &policy(),
            &PolicyFigures {
                last_success: Some(1.0),
                ..Default::default()
            },
        );
        m.retain_policies(&HashSet::new());
        let text = m.render();
        assert!(
            !text.contains(r#"backstop_last_successful_backup_timestamp_seconds{"#),
            "{text}"
        );
        assert!(
            !text.contains(r#"backstop_policy_consecutive_failures{"#),
            "{text}"
        );
    }
}
