//! `Backup`: one execution of a policy, scheduled or on demand.

use crate::condition::Invalid;
use crate::policy::Target;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "backstop.dev",
    version = "v1alpha1",
    kind = "Backup",
    namespaced,
    status = "BackupStatus",
    shortname = "bk",
    category = "backstop",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Policy","type":"string","jsonPath":".spec.policyRef"}"#,
    printcolumn = r#"{"name":"Size","type":"string","jsonPath":".status.size"}"#,
    printcolumn = r#"{"name":"Files","type":"integer","jsonPath":".status.totalFiles"}"#,
    printcolumn = r#"{"name":"Duration","type":"string","jsonPath":".status.duration"}"#,
    printcolumn = r#"{"name":"Verified","type":"string","jsonPath":".status.conditions[?(@.type==\"Verified\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// The policy whose target and repository to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_ref: Option<String>,
    /// An inline target, for a Backup made by hand without a policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// The repository for an inline target (default: `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// How long the backup may wait, from its creation, for what it needs to appear or become
    /// ready (its policy, repository, volumes) before it fails with the reason (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub starting_deadline_seconds: Option<i64>,
    /// How an inline target's volumes are read (a policy's Backup uses the policy's):
    /// `direct` when absent, or `snapshot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<crate::strategy::Strategy>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BackupPhase {
    #[default]
    Pending,
    Running,
    Completed,
    Failed,
}

impl BackupPhase {
    /// Completed and Failed never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, BackupPhase::Completed | BackupPhase::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BackupPhase::Pending => "Pending",
            BackupPhase::Running => "Running",
            BackupPhase::Completed => "Completed",
            BackupPhase::Failed => "Failed",
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    #[serde(default)]
    pub phase: BackupPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Wall time from start to completion, e.g. `6s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// The repository the artifacts went to (resolved when the backup started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// One entry per backed-up volume.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeBackup>,
    /// Sum of the artifacts' sizes for people, e.g. `3.1 MiB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Sum of the artifacts' sizes in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_files: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The strategy the backup started with (from its policy or its own spec); absent: direct.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<crate::strategy::Strategy>,
    /// With `strategy.quiesce`: the application stopped for the copy, the replicas it had
    /// (recorded before it was scaled down, so a restarted operator scales it back), and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiesce: Option<QuiesceRecord>,
    /// With the snapshot strategy: seconds between the first and the last snapshot's
    /// `creationTime`, i.e. how far apart in time the volumes' images are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_spread_seconds: Option<f64>,
    /// The latest verification asked for (annotation `backstop.dev/verify`), running or done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// How a backup is verified.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum VerificationMode {
    /// Every artifact is read back from the repository and checked against its manifest: the
    /// artifact's digest, and every file's.
    #[default]
    Artifact,
    /// Each volume is restored into a scratch volume (every digest checked), the policy's check
    /// runs on the restored data, and the scratch volume is removed.
    RestoreDrill,
}

impl VerificationMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            VerificationMode::Artifact => "Artifact",
            VerificationMode::RestoreDrill => "RestoreDrill",
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum VerificationPhase {
    #[default]
    Running,
    /// Every artifact read back and matched.
    Passed,
    /// An artifact is damaged, missing or unsafe: the backup is not good (`Verified=False`).
    Failed,
    /// The verification could not look (the repository was unreachable, a mover pod could not
    /// run): the `Verified` condition keeps what the last conclusive verification found.
    Inconclusive,
}

impl VerificationPhase {
    pub const fn as_str(self) -> &'static str {
        match self {
            VerificationPhase::Running => "Running",
            VerificationPhase::Passed => "Passed",
            VerificationPhase::Failed => "Failed",
            VerificationPhase::Inconclusive => "Inconclusive",
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerificationStatus {
    /// The `backstop.dev/verify` token this verification answers.
    pub request: String,
    #[serde(default)]
    pub mode: VerificationMode,
    #[serde(default)]
    pub phase: VerificationPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// One entry per volume of the backup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeVerification>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeVerification {
    pub pvc: String,
    #[serde(default)]
    pub phase: VerificationPhase,
    /// The Job doing the work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Files read back and checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<i64>,
    /// Bytes of those files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
    /// Why it failed or could not look (a condition reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeBackup {
    pub pvc: String,
    pub phase: BackupPhase,
    /// Why the volume failed (a condition reason), when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The Job doing the work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Artifact size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
    /// Bytes in the volume's regular files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<i64>,
    /// The PVC's requested size and storage class when it was backed up (a restore that creates
    /// its target sizes and classes it alike).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// BLAKE3 of the artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Where the artifact is, relative to the repository root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    /// Entries that changed while the mover read them (the volume was written to): files whose
    /// copy may be torn, entries that vanished or were swapped and are left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_while_reading: Option<i64>,
    /// The first few of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_files: Vec<String>,
    /// With the command strategy: this entry is the command's output stream, named in `pvc`,
    /// not a volume.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// With the snapshot strategy: the snapshot the data was read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotRecord>,
    /// In a restic-format repository: the restic snapshot that holds the volume (`bytes` is
    /// then what the repository grew by, `sourceBytes` what was backed up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restic: Option<ResticSnapshot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A volume's restic snapshot.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResticSnapshot {
    /// The snapshot's id (64 hex digits; `restic snapshots` shows the first 8).
    pub id: String,
    /// The snapshot it was compared with: files unchanged since were not read again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Files new or changed since the parent: the ones read.
    #[serde(default)]
    pub files_read: u64,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRecord {
    /// The VolumeSnapshot (in the Backup's namespace); the temporary PVC made from it has the
    /// same name.
    pub name: String,
    /// The snapshot's `creationTime`: the point in time the backed-up data is from, at the
    /// precision the snapshot controller wrote it (whole seconds with the upstream one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub creation_time: Option<jiff::Timestamp>,
    /// When the operator asked for it (to the millisecond, like the next times).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub requested_time: Option<jiff::Timestamp>,
    /// When the operator found it ready to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub ready_time: Option<jiff::Timestamp>,
    /// Seconds from asking for the snapshot until it was found ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_seconds: Option<f64>,
    /// Seconds from the snapshot being ready until its data was in the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub move_seconds: Option<f64>,
    /// The snapshot stays after the backup (`deleteSnapshotAfter: false`), owned by the Backup.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kept: bool,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuiesceRecord {
    pub kind: crate::strategy::WorkloadKind,
    pub name: String,
    /// The replicas it had before the backup scaled it to zero.
    pub replicas: i32,
    /// When it was scaled down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub scaled_down_time: Option<jiff::Timestamp>,
    /// When its last pod was gone (the copy may start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub stopped_time: Option<jiff::Timestamp>,
    /// When it was given its replicas back (or found changed by someone else, and left alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub restored_time: Option<jiff::Timestamp>,
    /// Seconds it was down: from scaled down to scaled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Backup {
    pub fn phase(&self) -> BackupPhase {
        self.status.as_ref().map(|s| s.phase).unwrap_or_default()
    }

    /// The verification token (annotation `backstop.dev/verify`) this Completed Backup has not
    /// answered yet, if any: its verification is still to run or running.
    pub fn verification_request(&self) -> Option<&str> {
        if self.phase() != BackupPhase::Completed || self.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let token = self
            .metadata
            .annotations
            .as_ref()?
            .get(crate::labels::VERIFY)?;
        let answered = self
            .status
            .as_ref()
            .and_then(|s| s.verification.as_ref())
            .is_some_and(|v| v.request == *token && v.phase != VerificationPhase::Running);
        (!answered).then_some(token.as_str())
    }
}

impl BackupStatus {
    /// When entries changed while they were read: how many, and a message naming them by volume.
    /// Such a backup is Completed (every other file is exact and verified) but not a consistent
    /// image of the volume, and says so.
    pub fn changed_while_reading(&self) -> Option<(i64, String)> {
        let changed: Vec<(&VolumeBackup, i64)> = self
            .volumes
            .iter()
            .filter_map(|v| v.changed_while_reading.filter(|n| *n > 0).map(|n| (v, n)))
            .collect();
        let total: i64 = changed.iter().map(|(_, n)| n).sum();
        if total == 0 {
            return None;
        }
        let named: Vec<String> = changed
            .iter()
            .map(|(v, n)| {
                let more = *n - v.changed_files.len() as i64;
                let mut names = v.changed_files.join(", ");
                if more > 0 {
                    names.push_str(&format!(" and {more} more"));
                }
                format!("PVC {}: {names}", v.pvc)
            })
            .collect();
        Some((
            total,
            format!(
                "{total} entr{} changed while {} read, so {} copy may be torn or missing ({}): the volume was being written to; stop its writers or back it up from a snapshot for a consistent image",
                if total == 1 { "y" } else { "ies" },
                if total == 1 { "it was" } else { "they were" },
                if total == 1 { "its" } else { "their" },
                named.join("; ")
            ),
        ))
    }
}

impl BackupSpec {
    pub fn validate(&self) -> Result<(), Invalid> {
        crate::waiting::validate_deadline(self.starting_deadline_seconds)?;
        if let Some(strategy) = &self.strategy {
            if self.policy_ref.is_some() {
                return Err(Invalid::new(
                    "InvalidSpec",
                    "spec.strategy is for an inline target; a Backup of a policy uses the policy's strategy",
                ));
            }
            strategy.validate()?;
        }
        match (&self.policy_ref, &self.target) {
            (Some(_), Some(_)) => Err(Invalid::new(
                "InvalidSpec",
                "set either spec.policyRef or spec.target, not both",
            )),
            (None, None) if self.strategy.as_ref().is_some_and(|s| s.command.is_some()) => Ok(()),
            (None, None) => Err(Invalid::new(
                "InvalidSpec",
                "set spec.policyRef (a BackupPolicy) or spec.target.pvcSelector with spec.repository",
            )),
            (None, Some(_)) if self.strategy.as_ref().is_some_and(|s| s.command.is_some()) => {
                Err(Invalid::new(
                    "InvalidStrategy",
                    "a command backup holds its command's stream and no volume: remove spec.target",
                ))
            }
            (None, Some(target)) => crate::naming::validate_selector(&target.pvc_selector),
            (Some(_), None) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_phases() {
        assert!(BackupPhase::Completed.is_terminal());
        assert!(BackupPhase::Failed.is_terminal());
        assert!(!BackupPhase::Running.is_terminal());
        assert!(!BackupPhase::Pending.is_terminal());
    }

    #[test]
    fn entries_changed_while_reading_are_named_by_volume() {
        let volume = |pvc: &str, changed: Option<i64>, files: &[&str]| VolumeBackup {
            pvc: pvc.into(),
            changed_while_reading: changed,
            changed_files: files.iter().map(|f| f.to_string()).collect(),
            ..Default::default()
        };
        let quiet = BackupStatus {
            volumes: vec![volume("db", None, &[]), volume("logs", Some(0), &[])],
            ..Default::default()
        };
        assert_eq!(quiet.changed_while_reading(), None);
        let torn = BackupStatus {
            volumes: vec![
                volume("db", Some(7), &["base/1", "base/2"]),
                volume("logs", None, &[]),
                volume("cache", Some(0), &[]),
                volume("wal", Some(1), &["000001"]),
            ],
            ..Default::default()
        };
        let (count, message) = torn.changed_while_reading().unwrap();
        assert_eq!(count, 8);
        assert!(
            message.starts_with("8 entries changed while they were read"),
            "{message}"
        );
        assert!(
            message.contains("(PVC db: base/1, base/2 and 5 more; PVC wal: 000001)"),
            "{message}"
        );
    }

    #[test]
    fn phase_and_verification_names_are_their_serialized_names() {
        for phase in [
            BackupPhase::Pending,
            BackupPhase::Running,
            BackupPhase::Completed,
            BackupPhase::Failed,
        ] {
            assert_eq!(serde_json::to_value(phase).unwrap(), phase.as_str());
        }
        for mode in [VerificationMode::Artifact, VerificationMode::RestoreDrill] {
            assert_eq!(serde_json::to_value(mode).unwrap(), mode.as_str());
        }
        for phase in [
            VerificationPhase::Running,
            VerificationPhase::Passed,
            VerificationPhase::Failed,
            VerificationPhase::Inconclusive,
        ] {
            assert_eq!(serde_json::to_value(phase).unwrap(), phase.as_str());
        }
    }

    #[test]
    fn a_verification_request_stands_until_it_is_answered() {
        let mut backup = Backup::new("b", BackupSpec::default());
        backup.metadata.annotations = Some([(crate::labels::VERIFY.into(), "t1".into())].into());
        // Only Completed backups are verified.
        assert_eq!(backup.verification_request(), None);
        backup.status = Some(BackupStatus {
            phase: BackupPhase::Completed,
            ..Default::default()
        });
        assert_eq!(backup.verification_request(), Some("t1"));
        let answer = |request: &str, phase| VerificationStatus {
            request: request.into(),
            phase,
            ..Default::default()
        };
        let status = backup.status.as_mut().unwrap();
        status.verification = Some(answer("t1", VerificationPhase::Running));
        assert_eq!(backup.verification_request(), Some("t1"));
        let status = backup.status.as_mut().unwrap();
        status.verification = Some(answer("t1", VerificationPhase::Failed));
        assert_eq!(backup.verification_request(), None);
        // A new token asks again.
        backup.metadata.annotations = Some([(crate::labels::VERIFY.into(), "t2".into())].into());
        assert_eq!(backup.verification_request(), Some("t2"));
        backup.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(backup.verification_request(), None);
    }

    #[test]
    fn a_backup_needs_exactly_one_of_policy_and_target() {
        assert!(BackupSpec::default().validate().is_err());
        let both = BackupSpec {
            policy_ref: Some("p".into()),
            target: Some(Target::default()),
            ..Default::default()
        };
        assert!(both.validate().is_err());
        let policy = BackupSpec {
            policy_ref: Some("p".into()),
            ..Default::default()
        };
        assert!(policy.validate().is_ok());
    }
}
