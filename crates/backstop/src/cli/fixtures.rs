//! Backups in given states for the CLI's unit tests.

use backstop_api::{Backup, BackupPhase, BackupSpec, BackupStatus, VolumeBackup};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The instant the fixtures' times count from.
const T0: i64 = 1_800_000_000;

pub fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(T0 + seconds).unwrap()
}

/// A Backup of `policy` created and completed `seconds` after `T0`, with one volume per
/// (pvc, phase).
pub fn backup(
    name: &str,
    policy: &str,
    seconds: i64,
    phase: BackupPhase,
    volumes: &[(&str, BackupPhase)],
) -> Backup {
    let mut b = Backup::new(
        name,
        BackupSpec {
            policy_ref: Some(policy.into()),
            ..BackupSpec::default()
        },
    );
    b.metadata.creation_timestamp = Some(Time(at(seconds)));
    b.status = Some(BackupStatus {
        phase,
        completion_time: Some(Time(at(seconds))),
        volumes: volumes
            .iter()
            .map(|(pvc, phase)| VolumeBackup {
                pvc: pvc.to_string(),
                phase: *phase,
                ..VolumeBackup::default()
            })
            .collect(),
        ..BackupStatus::default()
    });
    b
}
