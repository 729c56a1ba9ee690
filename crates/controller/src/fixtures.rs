//! Typed builders of the objects the reconcilers decide on, in each state, for decision tests
//! that run without a cluster.

use backstop_api::{
    Backup, BackupPhase, BackupPolicy, BackupPolicySpec, BackupSpec, BackupStatus, Retention,
    Target, labels,
};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use std::sync::Arc;

pub const NAMESPACE: &str = "shop";

/// A time on 2026-11-26 (UTC), `hh:mm`.
pub fn at(hh_mm: &str) -> Timestamp {
    format!("2026-11-26T{hh_mm}:00Z")
        .parse()
        .unwrap_or_else(|e| panic!("{hh_mm}: {e}"))
}

/// Policy `name` on `schedule`, created at 00:00, keeping `keep_last`.
pub fn policy(name: &str, schedule: &str, keep_last: Option<i64>) -> BackupPolicy {
    let mut policy = BackupPolicy::new(
        name,
        BackupPolicySpec {
            schedule: schedule.into(),
            retention: Retention { keep_last },
            target: Target {
                pvc_selector: LabelSelector {
                    match_labels: Some([("app".to_string(), "db".to_string())].into()),
                    ..LabelSelector::default()
                },
            },
            ..BackupPolicySpec::default()
        },
    );
    policy.metadata.namespace = Some(NAMESPACE.into());
    policy.metadata.uid = Some(format!("uid-{name}"));
    policy.metadata.generation = Some(1);
    policy.metadata.creation_timestamp = Some(Time(at("00:00")));
    policy
}

/// The Backup `policy` made for the run at `scheduled`, in `phase` (a Completed one finished
/// five minutes later).
pub fn scheduled(policy: &BackupPolicy, scheduled: &str, phase: BackupPhase) -> Arc<Backup> {
    let time = at(scheduled);
    let policy_name = policy.metadata.name.clone().unwrap_or_default();
    let mut backup = Backup::new(
        &backstop_api::naming::scheduled_backup(&policy_name, time),
        BackupSpec {
            policy_ref: Some(policy_name),
            ..BackupSpec::default()
        },
    );
    backup.metadata.namespace = Some(NAMESPACE.into());
    backup.metadata.creation_timestamp = Some(Time(time));
    backup.metadata.annotations =
        Some([(labels::SCHEDULED_TIME.to_string(), time.to_string())].into());
    let finished = phase
        .is_terminal()
        .then(|| Time(time + jiff::SignedDuration::from_mins(5)));
    backup.status = Some(BackupStatus {
        phase,
        completion_time: finished,
        total_bytes: (phase == BackupPhase::Completed).then_some(4096),
        total_files: (phase == BackupPhase::Completed).then_some(3),
        ..BackupStatus::default()
    });
    Arc::new(backup)
}
