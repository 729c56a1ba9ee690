//! How a backup reads its volumes: `direct` (the live volume, the default) or from a CSI
//! `VolumeSnapshot` of each volume (one point in time), and the `snapshot.storage.k8s.io/v1`
//! types Backstop creates for the latter.

use crate::condition::Invalid;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How long a snapshot may take to become ready when `readyTimeoutSeconds` is not set.
pub const DEFAULT_SNAPSHOT_READY_TIMEOUT_SECONDS: i64 = 600;

/// The API group of CSI snapshots.
pub const SNAPSHOT_GROUP: &str = "snapshot.storage.k8s.io";

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Strategy {
    /// Back up each volume from a CSI VolumeSnapshot instead of the live volume: every selected
    /// volume is snapshotted (all requested before any is awaited), a temporary PVC is made
    /// from each snapshot and the mover reads that, read-only. Without it (`direct`), the mover
    /// reads the live volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotStrategy>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStrategy {
    /// The VolumeSnapshotClass of the snapshots (its driver must serve the volumes' storage).
    #[schemars(length(min = 1))]
    pub volume_snapshot_class_name: String,
    /// Delete each snapshot once its data is in the repository (default true). A kept snapshot
    /// is owned by the Backup and goes when the Backup does.
    #[serde(default = "yes")]
    pub delete_snapshot_after: bool,
    /// How long a snapshot may take to become ready to use, from the backup's start, before the
    /// backup fails with `SnapshotNotReady` (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub ready_timeout_seconds: Option<i64>,
}

fn yes() -> bool {
    true
}

impl Strategy {
    /// The strategy's name for people and labels: `direct` or `snapshot`.
    pub fn name(&self) -> &'static str {
        if self.snapshot.is_some() {
            "snapshot"
        } else {
            "direct"
        }
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        let Some(snapshot) = &self.snapshot else {
            return Ok(());
        };
        if snapshot.volume_snapshot_class_name.trim().is_empty() {
            return Err(Invalid::new(
                "InvalidStrategy",
                "strategy.snapshot.volumeSnapshotClassName is empty: name the VolumeSnapshotClass to snapshot with",
            ));
        }
        match snapshot.ready_timeout_seconds {
            Some(s) if s < 1 => Err(Invalid::new(
                "InvalidStrategy",
                format!("strategy.snapshot.readyTimeoutSeconds is {s}; it must be 1 or more"),
            )),
            _ => Ok(()),
        }
    }
}

impl SnapshotStrategy {
    pub fn ready_timeout_seconds(&self) -> i64 {
        self.ready_timeout_seconds
            .unwrap_or(DEFAULT_SNAPSHOT_READY_TIMEOUT_SECONDS)
    }
}

/// `snapshot.storage.k8s.io/v1` VolumeSnapshot: the fields Backstop writes and reads.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "snapshot.storage.k8s.io",
    version = "v1",
    kind = "VolumeSnapshot",
    namespaced,
    status = "VolumeSnapshotStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotSpec {
    pub source: VolumeSnapshotSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_content_name: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_volume_snapshot_content_name: Option<String>,
    /// When the storage took the snapshot: the point in time its data is from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_size: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<VolumeSnapshotError>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotError {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_strategy_reads_with_its_defaults() {
        let strategy: Strategy =
            serde_json::from_str(r#"{"snapshot": {"volumeSnapshotClassName": "csi"}}"#).unwrap();
        let snapshot = strategy.snapshot.as_ref().unwrap();
        assert!(snapshot.delete_snapshot_after);
        assert_eq!(snapshot.ready_timeout_seconds(), 600);
        assert_eq!(strategy.name(), "snapshot");
        assert_eq!(Strategy::default().name(), "direct");
        assert!(strategy.validate().is_ok());
    }

    #[test]
    fn an_empty_class_or_a_zero_timeout_is_refused() {
        let mut strategy = Strategy {
            snapshot: Some(SnapshotStrategy {
                volume_snapshot_class_name: " ".into(),
                delete_snapshot_after: true,
                ready_timeout_seconds: None,
            }),
        };
        assert_eq!(strategy.validate().unwrap_err().reason, "InvalidStrategy");
        if let Some(s) = strategy.snapshot.as_mut() {
            s.volume_snapshot_class_name = "csi".into();
            s.ready_timeout_seconds = Some(0);
        }
        let err = strategy.validate().unwrap_err();
        assert!(err.message.contains("readyTimeoutSeconds"), "{err:?}");
        if let Some(s) = strategy.snapshot.as_mut() {
            s.ready_timeout_seconds = Some(1);
        }
        assert!(strategy.validate().is_ok(), "one second is a timeout");
    }
}
