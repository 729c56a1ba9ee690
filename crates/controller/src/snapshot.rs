//! The snapshot strategy: each volume of a backup is read from a CSI VolumeSnapshot through a
//! temporary PVC made from it, instead of live. Every snapshot is requested when the backup
//! starts, before any is awaited, so the volumes' images are as close in time as the storage
//! allows; readiness is polled (the snapshot CRDs may not exist, so nothing watches them).
//!
//! The snapshot and its temporary PVC share a name (`naming::snapshot`), carry the Backup's labels
//! with role `snapshot-source`, and are controlled by the Backup: they are never mistaken for user
//! data and go with the Backup at the latest.

use crate::backup::delete_owned;
use crate::outcome::owned_by;
use crate::{Context, Error, now};
use backstop_api::condition::Invalid;
use backstop_api::strategy::{
    SNAPSHOT_GROUP, SnapshotStrategy, VolumeSnapshot, VolumeSnapshotSource, VolumeSnapshotSpec,
};
use backstop_api::waiting::{Refusal, WaitingFor};
use backstop_api::{Backup, SnapshotRecord, VolumeBackup, labels, naming};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, TypedLocalObjectReference,
    VolumeResourceRequirements,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::time::Duration;

/// The role label of a backup's snapshots and temporary PVCs.
pub const ROLE_SNAPSHOT: &str = "snapshot-source";

/// How often a backup waiting for its snapshots looks again.
pub const POLL: Duration = Duration::from_secs(1);

const API_VERSION: &str = "snapshot.storage.k8s.io/v1";

/// Whether snapshots of `class` can be taken now: the cluster serves the snapshot API and the
/// class exists. Both are looked up on every start, so CRDs installed later are noticed.
pub async fn available(ctx: &Context, class: &str) -> Result<Result<(), Refusal>, Error> {
    let served = match ctx.client.list_api_group_resources(API_VERSION).await {
        Ok(list) => list.resources.iter().any(|r| r.name == "volumesnapshots"),
        Err(kube::Error::Api(e)) if e.code == 404 => false,
        Err(e) => return Err(e.into()),
    };
    if !served {
        return Ok(Err(Refusal::wait(
            WaitingFor::SnapshotApi,
            "SnapshotAPIUnavailable",
            format!(
                "the cluster does not serve {API_VERSION} VolumeSnapshots (the CSI snapshot CRDs and controller are not installed): install them, or back up without strategy.snapshot"
            ),
        )));
    }
    let gvk = GroupVersionKind::gvk(SNAPSHOT_GROUP, "v1", "VolumeSnapshotClass");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "volumesnapshotclasses");
    let classes: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &resource);
    if classes.get_opt(class).await?.is_none() {
        return Ok(Err(Refusal::wait(
            WaitingFor::SnapshotClass,
            "SnapshotClassNotFound",
            format!(
                "VolumeSnapshotClass {class:?} not found: create it, or name another in strategy.snapshot.volumeSnapshotClassName"
            ),
        )));
    }
    Ok(Ok(()))
}

/// Refuses volumes whose temporary PVCs would outlive them: a temporary PVC takes its volume's
/// class, and a class with `reclaimPolicy: Retain` keeps every deleted claim's volume (a
/// Released full copy per backup, for ever). `classes` are the StorageClass objects of the
/// volumes' classes that exist (statically provisioned volumes have none, and nothing is kept).
pub fn leaves_nothing(
    claims: &[PersistentVolumeClaim],
    classes: &[StorageClass],
) -> Result<(), Invalid> {
    let retaining: Vec<&str> = claims
        .iter()
        .filter(|claim| {
            let class = claim
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.as_deref());
            classes.iter().any(|c| {
                Some(c.name_any().as_str()) == class
                    && c.reclaim_policy.as_deref() == Some("Retain")
            })
        })
        .map(|claim| claim.metadata.name.as_deref().unwrap_or_default())
        .collect();
    if retaining.is_empty() {
        return Ok(());
    }
    Err(Invalid::new(
        "SnapshotClassRetains",
        format!(
            "PVC{} {} of a StorageClass with reclaimPolicy Retain: each backup's temporary volume made from a snapshot would stay behind as a Released full copy; back {} up without strategy.snapshot, or use a class that deletes its volumes",
            if retaining.len() == 1 { "" } else { "s" },
            retaining.join(", "),
            if retaining.len() == 1 { "it" } else { "them" },
        ),
    ))
}

/// `leaves_nothing` for `claims`, their classes looked up.
pub async fn temporary_claims_go(
    ctx: &Context,
    claims: &[PersistentVolumeClaim],
) -> Result<Result<(), Invalid>, Error> {
    let names: std::collections::BTreeSet<&str> = claims
        .iter()
        .filter_map(|c| c.spec.as_ref()?.storage_class_name.as_deref())
        .collect();
    let api: Api<StorageClass> = Api::all(ctx.client.clone());
    let mut classes = Vec::new();
    for name in names {
        classes.extend(api.get_opt(name).await?);
    }
    Ok(leaves_nothing(claims, &classes))
}

/// The record a backup starting at `now` keeps for `pvc`'s snapshot.
pub fn record_for(
    backup: &str,
    pvc: &str,
    strategy: &SnapshotStrategy,
    now: Timestamp,
) -> SnapshotRecord {
    SnapshotRecord {
        name: naming::snapshot(backup, pvc),
        requested_time: Some(now),
        kept: !strategy.delete_snapshot_after,
        ..SnapshotRecord::default()
    }
}

fn object_meta(backup: &Backup, name: &str, pvc: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: backup.namespace(),
        labels: Some(BTreeMap::from([
            (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
            (labels::ROLE.to_string(), ROLE_SNAPSHOT.to_string()),
            (
                labels::BACKUP.to_string(),
                naming::label_value(&backup.name_any()),
            ),
            (labels::PVC.to_string(), naming::label_value(pvc)),
        ])),
        owner_references: backup.controller_owner_ref(&()).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// The VolumeSnapshot of `pvc` the backup asks for.
pub fn snapshot_of(backup: &Backup, pvc: &str, name: &str, class: &str) -> VolumeSnapshot {
    VolumeSnapshot {
        metadata: object_meta(backup, name, pvc),
        spec: VolumeSnapshotSpec {
            source: VolumeSnapshotSource {
                persistent_volume_claim_name: Some(pvc.to_string()),
                volume_snapshot_content_name: None,
            },
            volume_snapshot_class_name: Some(class.to_string()),
        },
        status: None,
    }
}

/// Asks for every volume's snapshot, all before any is awaited.
pub async fn request_all(
    ctx: &Context,
    backup: &Backup,
    volumes: &[VolumeBackup],
    strategy: &SnapshotStrategy,
) -> Result<(), Error> {
    let api: Api<VolumeSnapshot> =
        Api::namespaced(ctx.client.clone(), &backup.namespace().unwrap_or_default());
    for volume in volumes {
        if let Some(record) = &volume.snapshot {
            let snapshot = snapshot_of(
                backup,
                &volume.pvc,
                &record.name,
                &strategy.volume_snapshot_class_name,
            );
            crate::create_once(&api, &snapshot).await?;
        }
    }
    Ok(())
}

/// Where a volume's snapshot stands.
#[derive(Debug, PartialEq)]
pub enum Readiness {
    Waiting,
    Ready { creation_time: Option<Timestamp> },
    Failed(Invalid),
}

/// Whether `snapshot`, asked for when the backup started at `started`, is ready, failed, or
/// still to wait for (until `strategy`'s timeout).
pub fn readiness(
    snapshot: &VolumeSnapshot,
    strategy: &SnapshotStrategy,
    started: Timestamp,
    now: Timestamp,
) -> Readiness {
    let name = snapshot.name_any();
    let status = snapshot.status.clone().unwrap_or_default();
    if status.ready_to_use == Some(true) {
        return Readiness::Ready {
            creation_time: status.creation_time.map(|t| t.0),
        };
    }
    if let Some(message) = status.error.and_then(|e| e.message) {
        return Readiness::Failed(Invalid::new(
            "SnapshotFailed",
            format!("VolumeSnapshot {name:?} failed: {message}"),
        ));
    }
    let timeout = strategy.ready_timeout_seconds();
    if now.duration_since(started) >= SignedDuration::from_secs(timeout) {
        return Readiness::Failed(Invalid::new(
            "SnapshotNotReady",
            format!(
                "VolumeSnapshot {name:?} was not ready to use {timeout}s after the backup started (strategy.snapshot.readyTimeoutSeconds); the storage's snapshot controller may be down or slow"
            ),
        ));
    }
    Readiness::Waiting
}

/// The temporary PVC the mover reads a volume's snapshot through: made from the snapshot, with
/// the class and size of the backed-up volume (the snapshot's restore size when that is unknown).
pub fn source_claim(
    backup: &Backup,
    volume: &VolumeBackup,
    name: &str,
    restore_size: Option<Quantity>,
) -> Result<PersistentVolumeClaim, Invalid> {
    let Some(size) = volume.capacity.clone().map(Quantity).or(restore_size) else {
        return Err(Invalid::new(
            "SnapshotSizeUnknown",
            format!(
                "neither PVC {:?} nor its snapshot says its size",
                volume.pvc
            ),
        ));
    };
    Ok(PersistentVolumeClaim {
        metadata: object_meta(backup, name, &volume.pvc),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: volume.storage_class_name.clone(),
            data_source: Some(TypedLocalObjectReference {
                api_group: Some(SNAPSHOT_GROUP.into()),
                kind: "VolumeSnapshot".into(),
                name: name.to_string(),
            }),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), size)])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    })
}

/// What a volume of a snapshot backup may do on this pass.
#[derive(Debug, PartialEq)]
pub enum Prepared {
    /// Its snapshot is not ready yet: look again in `POLL`.
    Waiting,
    /// The temporary PVC made from the ready snapshot exists: read it.
    Ready,
    Failed(Invalid),
}

/// Moves a volume's snapshot on: asks for it again if it vanished, records when it became
/// ready, and makes the temporary PVC from it. Updates `volume.snapshot` in place.
pub async fn prepare(
    ctx: &Context,
    backup: &Backup,
    volume: &mut VolumeBackup,
    strategy: &SnapshotStrategy,
    started: Timestamp,
) -> Result<Prepared, Error> {
    let Some(record) = volume.snapshot.clone() else {
        return Ok(Prepared::Ready);
    };
    let namespace = backup.namespace().unwrap_or_default();
    let api: Api<VolumeSnapshot> = Api::namespaced(ctx.client.clone(), &namespace);
    let snapshot = match api.get_opt(&record.name).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            // Deleted by someone meanwhile: asked for again (its point in time is then later).
            request_all(ctx, backup, std::slice::from_ref(volume), strategy).await?;
            return Ok(Prepared::Waiting);
        }
        Err(kube::Error::Api(e)) if e.code == 404 => {
            return Ok(Prepared::Failed(Invalid::new(
                "SnapshotAPIUnavailable",
                format!(
                    "the {API_VERSION} VolumeSnapshot API went away during the backup (CRDs removed?)"
                ),
            )));
        }
        Err(e) => return Err(e.into()),
    };
    if !owned_by(&snapshot, backup) {
        return Ok(Prepared::Failed(Invalid::new(
            "SnapshotNameTaken",
            format!(
                "a VolumeSnapshot {:?} that this Backup does not own already exists; it is left alone",
                record.name
            ),
        )));
    }
    let now = now();
    match readiness(&snapshot, strategy, started, now) {
        Readiness::Waiting => Ok(Prepared::Waiting),
        Readiness::Failed(why) => Ok(Prepared::Failed(why)),
        Readiness::Ready { creation_time } => {
            if record.ready_time.is_none() {
                let requested = record.requested_time.unwrap_or(started);
                volume.snapshot = Some(SnapshotRecord {
                    creation_time,
                    ready_time: Some(now),
                    snapshot_seconds: Some(seconds_between(requested, now)),
                    ..record.clone()
                });
            }
            let restore_size = snapshot.status.and_then(|s| s.restore_size);
            let claim = match source_claim(backup, volume, &record.name, restore_size) {
                Ok(c) => c,
                Err(why) => return Ok(Prepared::Failed(why)),
            };
            let claims: Api<PersistentVolumeClaim> =
                Api::namespaced(ctx.client.clone(), &namespace);
            if let Some(existing) = claims.get_opt(&record.name).await? {
                if !owned_by(&existing, backup) {
                    return Ok(Prepared::Failed(Invalid::new(
                        "SnapshotNameTaken",
                        format!(
                            "a PVC {:?} that this Backup does not own already exists; it is left alone",
                            record.name
                        ),
                    )));
                }
            } else {
                crate::create_once(&claims, &claim).await?;
            }
            Ok(Prepared::Ready)
        }
    }
}

/// Records how long the volume's data took to reach the repository after its snapshot was
/// ready.
pub fn moved(record: &mut SnapshotRecord, now: Timestamp) {
    if let Some(ready) = record.ready_time {
        record.move_seconds = Some(seconds_between(ready, now));
    }
}

/// Seconds between the first and the last snapshot's point in time, once every volume has one.
pub fn spread(volumes: &[VolumeBackup]) -> Option<f64> {
    let times: Vec<Timestamp> = volumes
        .iter()
        .map(|v| v.snapshot.as_ref()?.creation_time)
        .collect::<Option<_>>()?;
    let first = times.iter().min()?;
    let last = times.iter().max()?;
    Some(seconds_between(*first, *last))
}

fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    (to.duration_since(from).as_millis() as f64 / 1000.0).max(0.0)
}

/// Deletes the backup's temporary PVCs, and its snapshots unless they are `kept`; returns how
/// many still exist. A cluster that stopped serving snapshots has none left to delete.
pub async fn release(ctx: &Context, backup: &Backup, kept: bool) -> Result<usize, Error> {
    let mut remaining =
        delete_owned::<PersistentVolumeClaim>(ctx, backup, &[ROLE_SNAPSHOT]).await?;
    if !kept {
        remaining += match delete_owned::<VolumeSnapshot>(ctx, backup, &[ROLE_SNAPSHOT]).await {
            Err(Error::Kube(kube::Error::Api(e))) if e.code == 404 => 0,
            other => other?,
        };
    }
    Ok(remaining)
}

/// Whether a backup took its volumes from snapshots (`Some`), and whether it keeps them.
pub fn kept(status: &backstop_api::BackupStatus) -> Option<bool> {
    let snapshot = status.strategy.as_ref()?.snapshot.as_ref()?;
    Some(!snapshot.delete_snapshot_after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_api::strategy::{VolumeSnapshotError, VolumeSnapshotStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn strategy(timeout: Option<i64>) -> SnapshotStrategy {
        SnapshotStrategy {
            volume_snapshot_class_name: "btrfs".into(),
            delete_snapshot_after: true,
            ready_timeout_seconds: timeout,
        }
    }

    fn backup() -> Backup {
        let mut b = Backup::new("nightly", Default::default());
        b.metadata.namespace = Some("shop".into());
        b.metadata.uid = Some("uid-1".into());
        b
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn with_status(status: VolumeSnapshotStatus) -> VolumeSnapshot {
        let mut s = snapshot_of(&backup(), "db", "snap", "btrfs");
        s.status = Some(status);
        s
    }

    #[test]
    fn a_class_that_retains_its_volumes_is_refused_for_snapshot_backups() {
        let claim = |name: &str, class: &str| PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(k8s_openapi::api::core::v1::PersistentVolumeClaimSpec {
                storage_class_name: Some(class.into()),
                ..Default::default()
            }),
            status: None,
        };
        let class = |name: &str, policy: &str| StorageClass {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            reclaim_policy: Some(policy.into()),
            ..StorageClass::default()
        };
        let classes = [class("keep", "Retain"), class("fast", "Delete")];
        let claims = [
            claim("db", "fast"),
            claim("logs", "keep"),
            claim("static", "none"),
        ];
        let why = leaves_nothing(&claims, &classes).unwrap_err();
        assert_eq!(why.reason, "SnapshotClassRetains");
        assert!(
            why.message.starts_with("PVC logs of a StorageClass"),
            "{}",
            why.message
        );
        // Delete, or no StorageClass object (statically provisioned): nothing stays behind.
        assert_eq!(leaves_nothing(&claims[..1], &classes), Ok(()));
        assert_eq!(leaves_nothing(&claims[2..], &classes), Ok(()));
    }

    #[test]
    fn a_snapshot_is_asked_for_the_volume_with_the_class_owned_and_labelled() {
        let s = snapshot_of(&backup(), "db", "nightly-db-snap-1", "btrfs");
        assert_eq!(s.name_any(), "nightly-db-snap-1");
        assert_eq!(
            s.spec.source.persistent_volume_claim_name.as_deref(),
            Some("db")
        );
        assert_eq!(s.spec.volume_snapshot_class_name.as_deref(), Some("btrfs"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(s.labels()[labels::ROLE], ROLE_SNAPSHOT);
        assert_eq!(s.labels()[labels::BACKUP], "nightly");
        assert!(owned_by(&s, &backup()));
    }

    #[test]
    fn a_starting_backup_records_each_snapshot_by_name_time_and_keeping() {
        let started = at("2026-11-27T10:00:00.250Z");
        let mut keeping = strategy(None);
        keeping.delete_snapshot_after = false;
        let record = record_for("nightly", "db", &keeping, started);
        assert_eq!(record.name, naming::snapshot("nightly", "db"));
        assert_eq!(record.requested_time, Some(started));
        assert!(record.kept);
        assert!(!record_for("nightly", "db", &strategy(None), started).kept);
        let mut status = backstop_api::BackupStatus::default();
        assert_eq!(kept(&status), None, "direct");
        status.strategy = Some(backstop_api::Strategy {
            snapshot: Some(keeping),
            command: None,
            quiesce: None,
        });
        assert_eq!(kept(&status), Some(true));
        status.strategy = Some(backstop_api::Strategy {
            snapshot: Some(strategy(None)),
            command: None,
            quiesce: None,
        });
        assert_eq!(kept(&status), Some(false));
    }

    #[test]
    fn readiness_follows_the_snapshot_and_the_timeout() {
        let started = at("2026-11-27T10:00:00Z");
        let early = at("2026-11-27T10:00:05Z");
        let ready = with_status(VolumeSnapshotStatus {
            ready_to_use: Some(true),
            creation_time: Some(Time(at("2026-11-27T10:00:01Z"))),
            ..Default::default()
        });
        assert_eq!(
            readiness(&ready, &strategy(None), started, early),
            Readiness::Ready {
                creation_time: Some(at("2026-11-27T10:00:01Z"))
            }
        );
        let pending = with_status(VolumeSnapshotStatus::default());
        assert_eq!(
            readiness(&pending, &strategy(Some(10)), started, early),
            Readiness::Waiting
        );
        let Readiness::Failed(late) = readiness(
            &pending,
            &strategy(Some(10)),
            started,
            at("2026-11-27T10:00:10Z"),
        ) else {
            panic!("a snapshot not ready at the timeout fails the volume");
        };
        assert_eq!(late.reason, "SnapshotNotReady");
        assert!(late.message.contains("10s"), "{late:?}");
        let failed = with_status(VolumeSnapshotStatus {
            error: Some(VolumeSnapshotError {
                message: Some("driver says no".into()),
                time: None,
            }),
            ..Default::default()
        });
        let Readiness::Failed(why) = readiness(&failed, &strategy(None), started, early) else {
            panic!("the snapshot's own error fails the volume");
        };
        assert_eq!(why.reason, "SnapshotFailed");
        assert!(why.message.contains("driver says no"), "{why:?}");
    }

    #[test]
    fn the_temporary_claim_is_made_from_the_snapshot_like_the_source() {
        let volume = VolumeBackup {
            pvc: "db".into(),
            capacity: Some("2Gi".into()),
            storage_class_name: Some("fast".into()),
            ..Default::default()
        };
        let claim = source_claim(&backup(), &volume, "snap", Some(Quantity("1Gi".into()))).unwrap();
        let spec = claim.spec.clone().unwrap();
        let source = spec.data_source.unwrap();
        assert_eq!(
            (
                source.api_group.as_deref(),
                source.kind.as_str(),
                source.name.as_str()
            ),
            (Some(SNAPSHOT_GROUP), "VolumeSnapshot", "snap")
        );
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(spec.access_modes, Some(vec!["ReadWriteOnce".to_string()]));
        assert_eq!(
            spec.resources.unwrap().requests.unwrap()["storage"],
            Quantity("2Gi".into())
        );
        assert_eq!(claim.labels()[labels::ROLE], ROLE_SNAPSHOT);
        assert_eq!(claim.labels()[labels::PVC], "db");
        assert!(owned_by(&claim, &backup()));
        let no_size = VolumeBackup {
            pvc: "db".into(),
            ..Default::default()
        };
        let from_snapshot =
            source_claim(&backup(), &no_size, "snap", Some(Quantity("1Gi".into()))).unwrap();
        assert_eq!(
            from_snapshot
                .spec
                .unwrap()
                .resources
                .unwrap()
                .requests
                .unwrap()["storage"],
            Quantity("1Gi".into())
        );
        assert_eq!(
            source_claim(&backup(), &no_size, "snap", None)
                .unwrap_err()
                .reason,
            "SnapshotSizeUnknown"
        );
    }

    #[test]
    fn the_spread_is_the_distance_between_the_first_and_last_snapshot() {
        let volume = |pvc: &str, at_time: Option<&str>| VolumeBackup {
            pvc: pvc.into(),
            snapshot: Some(SnapshotRecord {
                name: pvc.into(),
                creation_time: at_time.map(at),
                ..Default::default()
            }),
            ..Default::default()
        };
        let volumes = vec![
            volume("a", Some("2026-11-27T10:00:01.250Z")),
            volume("b", Some("2026-11-27T10:00:01Z")),
            volume("c", Some("2026-11-27T10:00:01.500Z")),
        ];
        assert_eq!(spread(&volumes), Some(0.5));
        let unknown = vec![volume("a", Some("2026-11-27T10:00:01Z")), volume("b", None)];
        assert_eq!(spread(&unknown), None);
        let mut record = volumes[0].snapshot.clone().unwrap();
        record.ready_time = Some(at("2026-11-27T10:00:02Z"));
        moved(&mut record, at("2026-11-27T10:00:05.5Z"));
        assert_eq!(record.move_seconds, Some(3.5));
    }
}
