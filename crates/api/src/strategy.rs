//! How a backup gets its data: `direct` (the live volume, the default), from a CSI
//! `VolumeSnapshot` of each volume (one point in time), or `command` (the user's container
//! writes a dump, e.g. `pg_dump -Fc`, to its standard output and Backstop stores that stream),
//! and the `snapshot.storage.k8s.io/v1` types Backstop creates for snapshots.

use crate::condition::Invalid;
use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
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
    /// Back up what a command writes to its standard output (a database dump) instead of
    /// volumes: the command runs in its own container beside Backstop's mover, which streams
    /// its output into the repository. A command backup holds that one stream and no volume
    /// (back volumes up with another policy); `target` is not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandStrategy>,
    /// Stop the application for the copy when it has no dump tool: its Deployment or
    /// StatefulSet is scaled to zero, the volumes are read once its pods are gone (with
    /// `snapshot`: until every snapshot is ready), and it is scaled back to the replicas it had.
    /// Not with `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiesce: Option<Quiesce>,
}

/// How long a quiesced application's pods may take to stop when `timeoutSeconds` is not set.
pub const DEFAULT_QUIESCE_TIMEOUT_SECONDS: i64 = 300;

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Quiesce {
    pub scale_down: Workload,
    /// How long its pods may take to stop, from the backup's start, before the backup fails
    /// with `QuiesceTimeout` (and the application is scaled back); default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: Option<i64>,
}

impl Quiesce {
    pub fn timeout_seconds(&self) -> i64 {
        self.timeout_seconds
            .unwrap_or(DEFAULT_QUIESCE_TIMEOUT_SECONDS)
    }
}

/// A Deployment or StatefulSet in the backup's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    pub kind: WorkloadKind,
    #[schemars(length(min = 1))]
    pub name: String,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum WorkloadKind {
    #[default]
    Deployment,
    StatefulSet,
}

impl WorkloadKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
        }
    }
}

/// The stream's name when `command.name` is not set.
pub const DEFAULT_STREAM_NAME: &str = "dump";

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandStrategy {
    /// The stream's name: it names the artifact (`<name>.zst`) and takes a volume's place in
    /// the Backup's status and in a Restore's `sourcePVC` (default `dump`; a DNS label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The container that writes the dump to its standard output, e.g. `pg_dump -Fc`. Its
    /// image needs a POSIX `sh` and `tail` (Backstop wraps the command to connect its output
    /// and learn its exit status; no `kubectl exec` is used).
    #[serde(flatten)]
    pub container: CommandContainer,
    /// The command a Restore of this backup runs with the stream on its standard input, e.g.
    /// `pg_restore --clean --if-exists -d ...` (a Restore may give its own instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<CommandContainer>,
}

/// A container Backstop runs for the user: image, command, environment (Secrets through
/// `valueFrom.secretKeyRef`: the operator never reads them) and resources.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandContainer {
    #[schemars(length(min = 1))]
    pub image: String,
    /// The program and its first arguments (the image's entrypoint is not used). As in any
    /// container, Kubernetes expands `$(VAR)` here and in `args`; write `$$` for a `$`.
    #[schemars(length(min = 1))]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl CommandContainer {
    /// Refuses an empty image or command; `field` is where it was written.
    pub fn validate(&self, field: &str) -> Result<(), Invalid> {
        if self.image.trim().is_empty() {
            return Err(Invalid::new(
                "InvalidStrategy",
                format!("{field}.image is empty: name the image the command runs in"),
            ));
        }
        if self.command.first().is_none_or(|c| c.trim().is_empty()) {
            return Err(Invalid::new(
                "InvalidStrategy",
                format!("{field}.command is empty: give the program to run, e.g. [pg_dump, -Fc]"),
            ));
        }
        Ok(())
    }

    /// The program and all its arguments.
    pub fn argv(&self) -> Vec<String> {
        self.command.iter().chain(&self.args).cloned().collect()
    }
}

impl CommandStrategy {
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(DEFAULT_STREAM_NAME)
    }

    fn validate(&self) -> Result<(), Invalid> {
        let name = self.name();
        if !crate::naming::is_dns_label(name) {
            return Err(Invalid::new(
                "InvalidStrategy",
                format!(
                    "strategy.command.name {name:?} is not a DNS label (lowercase letters, digits and '-', at most 63): it names the artifact"
                ),
            ));
        }
        self.container.validate("strategy.command")?;
        if let Some(restore) = &self.restore {
            restore.validate("strategy.command.restore")?;
        }
        Ok(())
    }
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
    /// The strategy's name for people and labels: `direct`, `snapshot` or `command`.
    pub fn name(&self) -> &'static str {
        if self.command.is_some() {
            "command"
        } else if self.snapshot.is_some() {
            "snapshot"
        } else {
            "direct"
        }
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        if let Some(quiesce) = &self.quiesce {
            if self.command.is_some() {
                return Err(Invalid::new(
                    "InvalidStrategy",
                    "strategy.quiesce stops an application for a copy of its volumes; a command backup reads no volume",
                ));
            }
            if !crate::naming::is_dns_subdomain(&quiesce.scale_down.name) {
                return Err(Invalid::new(
                    "InvalidStrategy",
                    format!(
                        "strategy.quiesce.scaleDown.name {:?} is not a {} name",
                        quiesce.scale_down.name,
                        quiesce.scale_down.kind.as_str()
                    ),
                ));
            }
            if let Some(t) = quiesce.timeout_seconds.filter(|t| *t < 1) {
                return Err(Invalid::new(
                    "InvalidStrategy",
                    format!("strategy.quiesce.timeoutSeconds is {t}; it must be 1 or more"),
                ));
            }
        }
        if let Some(command) = &self.command {
            if self.snapshot.is_some() {
                return Err(Invalid::new(
                    "InvalidStrategy",
                    "set strategy.snapshot or strategy.command, not both: a command backup reads no volume",
                ));
            }
            return command.validate();
        }
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
            command: None,
            quiesce: None,
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

    fn command_strategy(yaml: &str) -> Strategy {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn a_command_strategy_reads_with_its_stream_name_and_restore_command() {
        let strategy = command_strategy(
            "command: {image: pg, command: [pg_dump, -Fc], args: [shop], env: [{name: PGPASSWORD, valueFrom: {secretKeyRef: {name: db, key: password}}}], restore: {image: pg, command: [pg_restore, -d, shop]}}",
        );
        assert_eq!(strategy.name(), "command");
        let command = strategy.command.as_ref().unwrap();
        assert_eq!(command.name(), "dump");
        assert_eq!(command.container.argv(), ["pg_dump", "-Fc", "shop"]);
        assert_eq!(command.container.env[0].name, "PGPASSWORD");
        assert_eq!(
            command.restore.as_ref().map(|r| r.argv()),
            Some(vec!["pg_restore".into(), "-d".into(), "shop".into()])
        );
        assert!(strategy.validate().is_ok());
    }

    #[test]
    fn a_quiesce_names_a_workload_and_goes_with_volumes_only() {
        let ok = command_strategy("quiesce: {scaleDown: {kind: StatefulSet, name: db}}");
        assert!(ok.validate().is_ok());
        let quiesce = ok.quiesce.as_ref().unwrap();
        assert_eq!(quiesce.scale_down.kind, WorkloadKind::StatefulSet);
        assert_eq!(quiesce.timeout_seconds(), 300);
        let one_second = command_strategy(
            "quiesce: {scaleDown: {kind: Deployment, name: db}, timeoutSeconds: 1}",
        );
        assert!(one_second.validate().is_ok(), "one second is a timeout");
        for (yaml, wanted) in [
            (
                "{quiesce: {scaleDown: {kind: Deployment, name: db}}, command: {image: pg, command: [x]}}",
                "reads no volume",
            ),
            (
                "quiesce: {scaleDown: {kind: Deployment, name: 'a/b'}}",
                "not a Deployment name",
            ),
            (
                "quiesce: {scaleDown: {kind: Deployment, name: db}, timeoutSeconds: 0}",
                "1 or more",
            ),
        ] {
            let err = command_strategy(yaml).validate().unwrap_err();
            assert_eq!(err.reason, "InvalidStrategy", "{yaml}");
            assert!(err.message.contains(wanted), "{yaml}: {}", err.message);
        }
    }

    #[test]
    fn a_command_strategy_refuses_what_cannot_run_or_would_escape_its_key() {
        for (yaml, wanted) in [
            (
                "command: {image: ' ', command: [pg_dump]}",
                "image is empty",
            ),
            ("command: {image: pg, command: []}", "command is empty"),
            ("command: {image: pg, command: ['']}", "command is empty"),
            (
                "command: {image: pg, command: [x], name: ../other}",
                "DNS label",
            ),
            (
                "command: {image: pg, command: [x], name: Dump}",
                "DNS label",
            ),
            (
                "command: {image: pg, command: [x], restore: {image: pg, command: []}}",
                "strategy.command.restore.command",
            ),
            (
                "{command: {image: pg, command: [x]}, snapshot: {volumeSnapshotClassName: c}}",
                "not both",
            ),
        ] {
            let err = command_strategy(yaml).validate().unwrap_err();
            assert_eq!(err.reason, "InvalidStrategy", "{yaml}");
            assert!(err.message.contains(wanted), "{yaml}: {}", err.message);
        }
    }
}
