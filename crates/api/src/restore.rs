//! `Restore`: recovery of one volume of a Completed backup into a PVC, validated before any Job
//! exists and verified (every file's BLAKE3 and the artifact's digest) before it is committed.

use crate::backup::BackupPhase;
use crate::condition::Invalid;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "backstop.dev",
    version = "v1alpha1",
    kind = "Restore",
    namespaced,
    status = "RestoreStatus",
    shortname = "rst",
    category = "backstop",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Backup","type":"string","jsonPath":".spec.backupName"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.target.pvcName"}"#,
    printcolumn = r#"{"name":"Files","type":"integer","jsonPath":".status.filesRestored"}"#,
    printcolumn = r#"{"name":"Verified","type":"string","jsonPath":".status.verification"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// The Backup (in this namespace) to restore from; it must be Completed.
    #[schemars(length(min = 1))]
    pub backup_name: String,
    /// Which volume of the backup; optional when the backup has exactly one.
    #[serde(default, rename = "sourcePVC", skip_serializing_if = "Option::is_none")]
    pub source_pvc: Option<String>,
    /// The PVC to restore a volume into (not used for a command backup's stream).
    #[serde(default, skip_serializing_if = "RestoreTarget::is_unset")]
    pub target: RestoreTarget,
    /// For a command backup: the command that reads the stream on its standard input, instead
    /// of the one on the backup's strategy (`strategy.command.restore`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<crate::strategy::CommandContainer>,
    /// What to do when the target already holds data. A stream has no target: what happens to
    /// the data already in the database is the restore command's business (e.g.
    /// `pg_restore --clean --if-exists`), and this is not used.
    #[serde(default)]
    pub existing_data_policy: ExistingDataPolicy,
    /// Restore even when a running pod mounts the target.
    #[serde(default)]
    pub allow_in_use: bool,
    /// The backup comes from a volume whose owner must not gain the target's privileges (another
    /// team's volume, a backup of unknown origin): device nodes are not created and
    /// setuid/setgid bits are cleared. By default a backup imported from a repository is
    /// restored untrusted (whoever could write into the repository chose its contents) and any
    /// other backup as it was; `false` restores an imported one as it was too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untrusted: Option<bool>,
    /// How long the restore may wait, from its creation, for what it needs to appear or become
    /// ready (its Backup, the repository, the target PVC's binding) before it fails with the
    /// reason (default 600). A Backup that exists and is still running is waited for without
    /// this bound: it has deadlines of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub starting_deadline_seconds: Option<i64>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreTarget {
    /// The PVC to restore into; created when absent.
    #[schemars(length(min = 1))]
    pub pvc_name: String,
    /// For a created PVC: its storage class (default: the source's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// For a created PVC: its size, e.g. `10Gi` (default: the source's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
}

impl RestoreTarget {
    fn is_unset(&self) -> bool {
        *self == RestoreTarget::default()
    }
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ExistingDataPolicy {
    /// Refuse a target that holds anything.
    #[default]
    FailIfNotEmpty,
    /// The target ends up exactly as the backup: other files are removed.
    Overwrite,
    /// The backup's files are written over; other files are kept.
    Merge,
}

impl ExistingDataPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ExistingDataPolicy::FailIfNotEmpty => "FailIfNotEmpty",
            ExistingDataPolicy::Overwrite => "Overwrite",
            ExistingDataPolicy::Merge => "Merge",
        }
    }
}

impl std::str::FromStr for ExistingDataPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "FailIfNotEmpty" => Ok(Self::FailIfNotEmpty),
            "Overwrite" => Ok(Self::Overwrite),
            "Merge" => Ok(Self::Merge),
            other => Err(format!(
                "unknown existingDataPolicy {other:?}: use FailIfNotEmpty, Overwrite or Merge"
            )),
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    #[serde(default)]
    pub phase: BackupPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// The volume of the backup being restored.
    #[serde(default, rename = "sourcePVC", skip_serializing_if = "Option::is_none")]
    pub source_pvc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_restored: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_restored: Option<i64>,
    /// `Verified` once every digest matched; `Failed` on a mismatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Restore {
    pub fn phase(&self) -> BackupPhase {
        self.status.as_ref().map(|s| s.phase).unwrap_or_default()
    }
}

/// Which volume of a backup to restore, given what the backup holds (`volumes`: PVC names of its
/// completed volumes).
pub fn source_volume(requested: Option<&str>, volumes: &[String]) -> Result<String, Invalid> {
    match (requested, volumes) {
        (Some(pvc), _) if volumes.iter().any(|v| v == pvc) => Ok(pvc.to_string()),
        (Some(pvc), _) => Err(Invalid::new(
            "VolumeNotInBackup",
            format!(
                "the backup holds no volume {pvc:?}; it holds: {}",
                volumes.join(", ")
            ),
        )),
        (None, [only]) => Ok(only.clone()),
        (None, []) => Err(Invalid::new(
            "VolumeNotInBackup",
            "the backup holds no volume",
        )),
        (None, _) => Err(Invalid::new(
            "SourcePVCRequired",
            format!(
                "the backup holds {} volumes ({}): set spec.sourcePVC",
                volumes.len(),
                volumes.join(", ")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_volume_may_be_left_out_only_when_there_is_one() {
        let one = vec!["data".to_string()];
        let two = vec!["a".to_string(), "b".to_string()];
        assert_eq!(source_volume(None, &one).unwrap(), "data");
        assert_eq!(source_volume(Some("b"), &two).unwrap(), "b");
        assert_eq!(
            source_volume(None, &two).unwrap_err().reason,
            "SourcePVCRequired"
        );
        assert_eq!(
            source_volume(Some("c"), &two).unwrap_err().reason,
            "VolumeNotInBackup"
        );
    }

    #[test]
    fn source_pvc_is_spelled_as_the_design_says() {
        let spec: RestoreSpec = serde_json::from_value(serde_json::json!({
            "backupName": "b", "sourcePVC": "data", "target": {"pvcName": "restored"}
        }))
        .unwrap();
        assert_eq!(spec.source_pvc.as_deref(), Some("data"));
    }

    #[test]
    fn existing_data_policy_defaults_to_fail_if_not_empty() {
        let spec: RestoreSpec = serde_json::from_value(serde_json::json!({
            "backupName": "b", "target": {"pvcName": "restored"}
        }))
        .unwrap();
        assert_eq!(
            spec.existing_data_policy,
            ExistingDataPolicy::FailIfNotEmpty
        );
        assert!(!spec.allow_in_use);
    }
}
