//! What a repository keeps of each backup beside its data, so that a cluster that never saw the
//! backup can rebuild its Backup object (disaster recovery: a BackupRepository's sync).
//!
//! - tar format: beside each volume's manifest, `<namespace>/<backup>/<pvc>.record.json` (a
//!   `VolumeRecord`), written by the mover after the manifest: a volume with a record is a volume
//!   whose backup completed.
//! - restic format: the snapshot is the record. The context travels in its tags
//!   (`context_tags`), the result in its id and summary; no second index is written.
//!
//! A sync gathers the records of a backup that has no Backup object into one `ImportRecord`
//! (`gather`), which the sync Job puts on the Backup it creates (annotation
//! `backstop.dev/import-record`). The operator never takes it on trust: `ImportRecord::status`
//! checks it against the namespace and the Backup's name before it becomes the Backup's status.

use crate::backup::{
    BackupPhase, BackupStatus, VerificationMode, VerificationPhase, VerificationStatus,
    VolumeBackup,
};
use crate::condition::{self, ConditionType, Invalid};
use crate::contract::{self, BackupResult};
use crate::strategy::Strategy;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The version of the records this Backstop writes; a record of a later version is skipped
/// with a message saying so (it may mean things this version does not know).
pub const RECORD_VERSION: u32 = 1;

/// How a volume record's key ends.
pub const RECORD_SUFFIX: &str = ".record.json";

/// The key of the latest conclusive verification's record in the backup directory `dir` (both
/// formats: a restic backup's directory holds only this).
pub fn verification_key(dir: &str) -> String {
    format!("{dir}/{VERIFICATION_FILE}")
}

pub const VERIFICATION_FILE: &str = "verification.json";

/// The latest conclusive verification of a backup (Passed or Failed), kept in the repository by
/// a small Job once the operator concluded it: an imported Backup knows whether it was sound.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VerificationRecord {
    pub version: u32,
    pub backup: String,
    /// The `backstop.dev/verify` token it answered.
    pub request: String,
    pub mode: VerificationMode,
    pub phase: VerificationPhase,
    pub completion_time: Timestamp,
    /// The `Verified` condition it set.
    pub reason: String,
    pub message: String,
}

/// The key of `pvc`'s record in the backup directory `dir`.
pub fn record_key(dir: &str, pvc: &str) -> String {
    format!("{dir}/{pvc}{RECORD_SUFFIX}")
}

/// What the operator tells a backup's mover about the backup, to keep in the record.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecordContext {
    pub namespace: String,
    pub backup: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The cron time a scheduled backup stands for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_time: Option<Timestamp>,
    /// When the backup started.
    pub start_time: Timestamp,
    /// Every volume (or stream) of the backup: it is whole when each has its record.
    pub volumes: Vec<String>,
    /// How the backup read its volumes (tar format only; a restic snapshot does not keep it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// This volume's PVC's requested size and class when it was backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// This entry is a command's output stream, not a volume.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
}

/// One volume's record: the context, when the volume's backup ended and what it stored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRecord {
    pub version: u32,
    #[serde(flatten)]
    pub context: RecordContext,
    pub completion_time: Timestamp,
    pub result: BackupResult,
}

/// A whole backup as a sync found it in a repository.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImportRecord {
    pub version: u32,
    pub backup: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_time: Option<Timestamp>,
    pub start_time: Timestamp,
    pub completion_time: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    pub volumes: Vec<ImportedVolume>,
    /// The latest conclusive verification, when one was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationRecord>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImportedVolume {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    #[serde(flatten)]
    pub result: BackupResult,
}

/// Gathers the records a sync found for `backup` in `namespace`'s part of a repository into the
/// backup they describe; `Err` says why they do not make a whole backup of it.
pub fn gather(
    namespace: &str,
    backup: &str,
    records: Vec<VolumeRecord>,
) -> Result<ImportRecord, String> {
    let Some(first) = records.first() else {
        return Err("no volume record".into());
    };
    let context = first.context.clone();
    for record in &records {
        if record.version > RECORD_VERSION {
            return Err(format!(
                "record version {} is newer than this Backstop reads ({RECORD_VERSION}): upgrade the operator",
                record.version
            ));
        }
        let c = &record.context;
        if c.namespace != namespace {
            return Err(format!(
                "record of namespace {:?} found under {namespace:?}: not this namespace's",
                c.namespace
            ));
        }
        if c.backup != backup {
            return Err(format!(
                "record of backup {:?} found under {backup:?}",
                c.backup
            ));
        }
        if c.pvc_mismatch(&record.result.pvc) {
            return Err(format!(
                "record of {:?} does not name a volume of its backup",
                record.result.pvc
            ));
        }
        let same = c.policy == context.policy
            && c.scheduled_time == context.scheduled_time
            && c.start_time == context.start_time
            && c.volumes == context.volumes;
        if !same {
            return Err(format!(
                "the records of volumes {:?} and {:?} disagree about the backup",
                first.result.pvc, record.result.pvc
            ));
        }
    }
    let found: BTreeSet<&str> = records.iter().map(|r| r.result.pvc.as_str()).collect();
    let expected: BTreeSet<&str> = context.volumes.iter().map(String::as_str).collect();
    if found.len() != records.len() {
        return Err("two records of one volume".into());
    }
    if found != expected {
        let missing: Vec<&str> = expected.difference(&found).copied().collect();
        return Err(format!(
            "incomplete: no record of volume{} {} (the backup did not complete, or was being deleted)",
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", ")
        ));
    }
    let completion_time = records
        .iter()
        .map(|r| r.completion_time)
        .max()
        .unwrap_or(context.start_time);
    let mut volumes: Vec<ImportedVolume> = records
        .into_iter()
        .map(|r| ImportedVolume {
            capacity: r.context.capacity,
            storage_class_name: r.context.storage_class_name,
            stream: r.context.stream,
            result: r.result,
        })
        .collect();
    volumes.sort_by(|a, b| a.result.pvc.cmp(&b.result.pvc));
    Ok(ImportRecord {
        version: RECORD_VERSION,
        backup: backup.to_string(),
        policy: context.policy,
        scheduled_time: context.scheduled_time,
        start_time: context.start_time,
        completion_time,
        strategy: context.strategy,
        volumes,
        verification: None,
    })
}

impl RecordContext {
    fn pvc_mismatch(&self, pvc: &str) -> bool {
        !self.volumes.iter().any(|v| v == pvc)
    }
}

/// Tags of a restic snapshot that carry its context beside `backstop`, `backup=`, `pvc=` and
/// `policy=`: every volume of the backup (`volumes=a+b`; `+` is in no PVC name, `,` would split
/// the tag for restic's command line), the times, the PVC's size and class.
pub fn context_tags(context: &RecordContext) -> Vec<String> {
    let mut tags = vec![
        format!("volumes={}", context.volumes.join("+")),
        format!("started={}", context.start_time),
    ];
    tags.extend(context.scheduled_time.map(|t| format!("scheduled={t}")));
    tags.extend(context.capacity.as_ref().map(|c| format!("capacity={c}")));
    tags.extend(
        context
            .storage_class_name
            .as_ref()
            .map(|c| format!("storage-class={c}")),
    );
    tags
}

/// The value of the tag `<name>=<value>` among `tags`, if there is one.
pub fn tag<'a>(tags: &'a [String], name: &str) -> Option<&'a str> {
    let prefix = format!("{name}=");
    tags.iter().find_map(|t| t.strip_prefix(&prefix))
}

/// The context of a restic snapshot of host `namespace` from its tags; `Err` says what is
/// missing or unreadable.
pub fn context_from_tags(namespace: &str, tags: &[String]) -> Result<RecordContext, String> {
    let value = |name: &str| tag(tags, name);
    let time = |name: &str| -> Result<Option<Timestamp>, String> {
        value(name)
            .map(|t| {
                t.parse::<Timestamp>()
                    .map_err(|e| format!("tag {name}={t:?}: {e}"))
            })
            .transpose()
    };
    let backup = value("backup").ok_or("no backup= tag")?;
    let volumes =
        value("volumes").ok_or("no volumes= tag (made by a Backstop before records were kept)")?;
    Ok(RecordContext {
        namespace: namespace.to_string(),
        backup: backup.to_string(),
        policy: value("policy").map(str::to_string),
        scheduled_time: time("scheduled")?,
        start_time: time("started")?.ok_or("no started= tag")?,
        volumes: volumes.split('+').map(str::to_string).collect(),
        strategy: None,
        capacity: value("capacity").map(str::to_string),
        storage_class_name: value("storage-class").map(str::to_string),
        stream: false,
    })
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn bad(message: String) -> Invalid {
    Invalid::new("InvalidImport", message)
}

/// How far ahead of this cluster's clock a record's times may be (clocks of two clusters
/// differ a little); a record further in the future is refused: it would stay "the newest
/// backup" for ever and push genuine ones out of retention.
pub const CLOCK_SKEW_SECONDS: i64 = 300;

/// Whether `text` is a positive Kubernetes quantity, as a PVC's storage request is written
/// back by the API server: a number (digits, at most one `.`), then one of the binary (`Ki` ..
/// `Ei`) or decimal (`n`, `u`, `m`, `k`, `M` .. `E`) suffixes, or a decimal exponent (`1e9`,
/// `15E-1`), or nothing.
pub fn is_storage_size(text: &str) -> bool {
    const SUFFIXES: [&str; 16] = [
        "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E",
    ];
    let number = text.trim_end_matches(|c: char| !(c.is_ascii_digit() || c == '.'));
    let (number, suffix) = match text.find(['e', 'E']) {
        // A decimal exponent: `E` alone is exa, `E` followed by an integer is an exponent.
        Some(at)
            if text[at + 1..]
                .trim_start_matches(['+', '-'])
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_digit()) =>
        {
            let exponent = text[at + 1..].trim_start_matches(['+', '-']);
            if exponent.len() > 3 || !exponent.bytes().all(|b| b.is_ascii_digit()) {
                return false;
            }
            (&text[..at], "")
        }
        _ => (number, &text[number.len()..]),
    };
    let digits = number.replace('.', "");
    number.matches('.').count() <= 1
        && !digits.is_empty()
        && digits.len() <= 18
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits.bytes().any(|b| b != b'0')
        && SUFFIXES.contains(&suffix)
}

impl ImportRecord {
    /// Refuses times a genuine backup cannot have: in the future (beyond the clock skew), a
    /// completion before the start, a scheduled time after the start.
    pub fn check_times(&self, now: Timestamp) -> Result<(), String> {
        let latest = now
            .checked_add(jiff::SignedDuration::from_secs(CLOCK_SKEW_SECONDS))
            .unwrap_or(now);
        let verified = self.verification.as_ref().map(|v| v.completion_time);
        let times = [
            ("startTime", Some(self.start_time)),
            ("completionTime", Some(self.completion_time)),
            ("scheduledTime", self.scheduled_time),
            ("verification.completionTime", verified),
        ];
        for (field, at) in times {
            if let Some(at) = at
                && at > latest
            {
                return Err(format!(
                    "the record's {field} {at} is in the future (this cluster's clock says {now}): refused"
                ));
            }
        }
        if self.completion_time < self.start_time {
            return Err(format!(
                "the record's completionTime {} is before its startTime {}",
                self.completion_time, self.start_time
            ));
        }
        if let Some(scheduled) = self.scheduled_time
            && scheduled > self.start_time
        {
            return Err(format!(
                "the record's scheduledTime {scheduled} is after its startTime {}: a scheduled backup starts at or after its time",
                self.start_time
            ));
        }
        Ok(())
    }

    /// The status of Backup `name` in `namespace`, imported through repository `repository`,
    /// from this record; `Err` when the record is not one of this Backup's (a record is
    /// annotation text anyone who may create Backups can write, so every place it names is
    /// checked to be this backup's own).
    pub fn status(
        &self,
        namespace: &str,
        name: &str,
        repository: &str,
        now: Timestamp,
    ) -> Result<BackupStatus, Invalid> {
        if self.version > RECORD_VERSION {
            return Err(bad(format!(
                "record version {} is newer than this Backstop reads ({RECORD_VERSION}): upgrade the operator",
                self.version
            )));
        }
        if self.backup != name {
            return Err(bad(format!(
                "the record is of backup {:?}, not {name:?}",
                self.backup
            )));
        }
        if self.volumes.is_empty() {
            return Err(bad("the record names no volume".into()));
        }
        self.check_times(now).map_err(bad)?;
        let dir = contract::backup_dir(namespace, name);
        let restic_root = contract::restic_root(namespace);
        let mut seen = BTreeSet::new();
        let mut volumes = Vec::new();
        for v in &self.volumes {
            let r = &v.result;
            if !crate::naming::is_dns_subdomain(&r.pvc) || !seen.insert(r.pvc.as_str()) {
                return Err(bad(format!(
                    "volume name {:?} is not valid or not unique",
                    r.pvc
                )));
            }
            let own_artifact = match &r.restic {
                Some(snapshot) => {
                    r.artifact == restic_root
                        && is_hex(&snapshot.id, 64)
                        && r.digest == snapshot.id
                        && snapshot.parent.as_deref().is_none_or(|p| is_hex(p, 64))
                }
                None => {
                    r.artifact
                        .strip_prefix(&format!("{dir}/"))
                        .is_some_and(|file| {
                            file.starts_with(&format!("{}.", r.pvc)) && !file.contains('/')
                        })
                        && is_hex(&r.digest, 64)
                }
            };
            if let Some(capacity) = &v.capacity
                && !is_storage_size(capacity)
            {
                return Err(bad(format!(
                    "volume {:?}: recorded capacity {capacity:?} is not a storage size such as 10Gi",
                    r.pvc
                )));
            }
            if let Some(class) = &v.storage_class_name
                && !crate::naming::is_dns_subdomain(class)
            {
                return Err(bad(format!(
                    "volume {:?}: recorded storage class {class:?} is not a valid name",
                    r.pvc
                )));
            }
            if !own_artifact {
                return Err(bad(format!(
                    "volume {:?}: its data is not where this backup's is ({:?}) or its digest is malformed",
                    r.pvc, r.artifact
                )));
            }
            let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            volumes.push(VolumeBackup {
                pvc: r.pvc.clone(),
                phase: BackupPhase::Completed,
                bytes: Some(count(r.bytes)),
                source_bytes: Some(count(r.source_bytes)),
                files: Some(count(r.files)),
                capacity: v.capacity.clone(),
                storage_class_name: v.storage_class_name.clone(),
                digest: Some(r.digest.clone()),
                artifact: Some(r.artifact.clone()),
                changed_while_reading: (r.changed_while_reading > 0)
                    .then(|| count(r.changed_while_reading)),
                changed_files: r.changed_files.clone(),
                stream: v.stream,
                restic: r.restic.clone(),
                ..VolumeBackup::default()
            });
        }
        let total_bytes: i64 = volumes.iter().filter_map(|v| v.bytes).sum();
        let total_files: i64 = volumes.iter().filter_map(|v| v.files).sum();
        let seconds = self
            .completion_time
            .duration_since(self.start_time)
            .as_secs()
            .max(0);
        let mut status = BackupStatus {
            phase: BackupPhase::Completed,
            start_time: Some(Time(self.start_time)),
            completion_time: Some(Time(self.completion_time)),
            duration: Some(format!("{seconds}s")),
            repository: Some(repository.to_string()),
            size: Some(crate::human_bytes(total_bytes)),
            total_bytes: Some(total_bytes),
            total_files: Some(total_files),
            message: Some(format!(
                "imported from repository {repository:?}: backed up {} by a cluster that kept its record there",
                self.completion_time
            )),
            strategy: self.strategy.clone(),
            volumes,
            ..BackupStatus::default()
        };
        condition::set(
            &mut status.conditions,
            ConditionType::Completed,
            true,
            "Imported",
            &format!("imported from repository {repository:?}"),
            None,
            now,
        );
        // Only a conclusive verification of this very backup counts.
        let verified = self.verification.as_ref().filter(|v| {
            v.backup == name
                && matches!(
                    v.phase,
                    VerificationPhase::Passed | VerificationPhase::Failed
                )
        });
        if let Some(v) = verified {
            let at = Time(v.completion_time);
            status.verification = Some(VerificationStatus {
                request: v.request.clone(),
                mode: v.mode,
                phase: v.phase,
                start_time: Some(at.clone()),
                completion_time: Some(at.clone()),
                volumes: Vec::new(),
                message: Some(v.message.clone()),
            });
            condition::set(
                &mut status.conditions,
                ConditionType::Verified,
                v.phase == VerificationPhase::Passed,
                &v.reason,
                &v.message,
                None,
                v.completion_time,
            );
        }
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::ResticSnapshot;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn context(pvc: &str) -> RecordContext {
        RecordContext {
            namespace: "shop".into(),
            backup: "nightly-202611280200".into(),
            policy: Some("nightly".into()),
            scheduled_time: Some("2026-11-28T02:00:00Z".parse().unwrap()),
            start_time: "2026-11-28T02:00:01Z".parse().unwrap(),
            volumes: vec!["db".into(), "logs".into()],
            capacity: Some(format!("{}Gi", pvc.len())),
            storage_class_name: Some("fast".into()),
            ..RecordContext::default()
        }
    }

    fn record(pvc: &str, ended: &str) -> VolumeRecord {
        VolumeRecord {
            version: RECORD_VERSION,
            context: context(pvc),
            completion_time: ended.parse().unwrap(),
            result: BackupResult {
                pvc: pvc.into(),
                artifact: format!("shop/nightly-202611280200/{pvc}.tar.zst"),
                bytes: 10,
                digest: ID.into(),
                files: 2,
                source_bytes: 30,
                changed_while_reading: 0,
                changed_files: Vec::new(),
                restic: None,
            },
        }
    }

    const NAME: &str = "nightly-202611280200";

    /// The import record of both volumes of `NAME`, ended together.
    fn whole() -> ImportRecord {
        gather(
            "shop",
            NAME,
            vec![
                record("db", "2026-11-28T02:00:31Z"),
                record("logs", "2026-11-28T02:00:31Z"),
            ],
        )
        .unwrap()
    }

    /// A time after every record of these tests.
    fn later() -> Timestamp {
        "2026-12-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn the_records_of_every_volume_make_the_backup_and_its_status() {
        let found = gather(
            "shop",
            NAME,
            vec![
                record("logs", "2026-11-28T02:00:09Z"),
                record("db", "2026-11-28T02:00:31Z"),
            ],
        )
        .unwrap();
        assert_eq!(
            found.completion_time,
            "2026-11-28T02:00:31Z".parse().unwrap()
        );
        assert_eq!(found.volumes[0].result.pvc, "db");
        // It travels as annotation text and reads back the same.
        let text = serde_json::to_string(&found).unwrap();
        assert_eq!(serde_json::from_str::<ImportRecord>(&text).unwrap(), found);
        let now: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let status = found.status("shop", NAME, "s3", now).unwrap();
        assert_eq!(status.phase, BackupPhase::Completed);
        assert_eq!(status.repository.as_deref(), Some("s3"));
        assert_eq!(status.duration.as_deref(), Some("30s"));
        assert_eq!(status.total_bytes, Some(20));
        assert_eq!(status.total_files, Some(4));
        assert_eq!(
            status.volumes[0],
            VolumeBackup {
                pvc: "db".into(),
                phase: BackupPhase::Completed,
                bytes: Some(10),
                source_bytes: Some(30),
                files: Some(2),
                capacity: Some("2Gi".into()),
                storage_class_name: Some("fast".into()),
                digest: Some(ID.into()),
                artifact: Some(format!("shop/{NAME}/db.tar.zst")),
                ..VolumeBackup::default()
            }
        );
        assert_eq!(
            status.start_time,
            Some(Time("2026-11-28T02:00:01Z".parse().unwrap()))
        );
        assert_eq!(
            status.completion_time,
            Some(Time("2026-11-28T02:00:31Z".parse().unwrap()))
        );
        assert_eq!(status.size.as_deref(), Some("20 B"));
        assert!(
            status
                .message
                .as_deref()
                .unwrap()
                .starts_with("imported from repository \"s3\""),
            "{status:?}"
        );
        let completed = condition::find(&status.conditions, ConditionType::Completed).unwrap();
        assert_eq!(
            (completed.status.as_str(), completed.reason.as_str()),
            ("True", "Imported")
        );
        // A command's stream, torn entries and the strategy come back as they were.
        let mut dump = found.clone();
        dump.strategy = Some(Strategy::default());
        dump.volumes[1].stream = true;
        dump.volumes[1].result.changed_while_reading = 3;
        dump.volumes[1].result.changed_files = vec!["wal/1".into()];
        let status = dump.status("shop", NAME, "s3", now).unwrap();
        assert_eq!(status.strategy, Some(Strategy::default()));
        let logs = &status.volumes[1];
        assert!(logs.stream);
        assert_eq!(logs.changed_while_reading, Some(3));
        assert_eq!(logs.changed_files, vec!["wal/1".to_string()]);
        assert_eq!(
            found.status("shop", NAME, "s3", now).unwrap().volumes[1].changed_while_reading,
            None
        );
    }

    #[test]
    fn records_sit_beside_the_backups_data() {
        assert_eq!(
            record_key("shop/nightly", "db"),
            "shop/nightly/db.record.json"
        );
        assert_eq!(
            verification_key("shop/nightly"),
            "shop/nightly/verification.json"
        );
    }

    #[test]
    fn a_recorded_verification_of_the_backup_comes_back_with_it() {
        let mut found = whole();
        let checked: Timestamp = "2026-11-29T04:00:00Z".parse().unwrap();
        let verification = |backup: &str, phase| VerificationRecord {
            version: RECORD_VERSION,
            backup: backup.into(),
            request: "weekly-2026-11-29".into(),
            mode: VerificationMode::Artifact,
            phase,
            completion_time: checked,
            reason: "DigestMismatch".into(),
            message: "PVC db: the artifact does not match".into(),
        };
        found.verification = Some(verification(NAME, VerificationPhase::Failed));
        let status = found.status("shop", NAME, "s3", later()).unwrap();
        let verified = condition::find(&status.conditions, ConditionType::Verified).unwrap();
        assert_eq!(
            (verified.status.as_str(), verified.reason.as_str()),
            ("False", "DigestMismatch")
        );
        assert_eq!(verified.last_transition_time.0, checked);
        let v = status.verification.unwrap();
        assert_eq!(
            (v.request.as_str(), v.phase),
            ("weekly-2026-11-29", VerificationPhase::Failed)
        );
        // Another backup's verification, or an inconclusive one, says nothing about this one.
        for other in [
            verification("other", VerificationPhase::Passed),
            verification(NAME, VerificationPhase::Inconclusive),
        ] {
            found.verification = Some(other);
            let status = found.status("shop", NAME, "s3", later()).unwrap();
            assert!(condition::find(&status.conditions, ConditionType::Verified).is_none());
            assert!(status.verification.is_none());
        }
    }

    #[test]
    fn records_that_do_not_make_a_whole_backup_of_this_namespace_are_refused() {
        let gathered = |records| gather("shop", NAME, records).map(|_| ()).unwrap_err();
        assert!(
            gathered(vec![record("db", "2026-11-28T02:00:31Z")])
                .contains("incomplete: no record of volume logs")
        );
        let mut foreign = record("db", "2026-11-28T02:00:31Z");
        foreign.context.namespace = "bank".into();
        assert!(
            gathered(vec![foreign, record("logs", "2026-11-28T02:00:31Z")])
                .contains("namespace \"bank\"")
        );
        let mut other = record("db", "2026-11-28T02:00:31Z");
        other.context.backup = "other".into();
        assert!(gathered(vec![other]).contains("record of backup \"other\""));
        let mut stranger = record("cache", "2026-11-28T02:00:31Z");
        stranger.result.pvc = "cache".into();
        assert!(gathered(vec![stranger]).contains("does not name a volume"));
        let mut disagreeing = record("logs", "2026-11-28T02:00:31Z");
        disagreeing.context.policy = Some("hourly".into());
        assert!(
            gathered(vec![record("db", "2026-11-28T02:00:31Z"), disagreeing]).contains("disagree")
        );
        let mut newer = record("db", "2026-11-28T02:00:31Z");
        newer.version = RECORD_VERSION + 1;
        assert!(gathered(vec![newer]).contains("upgrade"));
        assert!(
            gathered(vec![
                record("db", "2026-11-28T02:00:31Z"),
                record("db", "2026-11-28T02:00:31Z")
            ])
            .contains("two records")
        );
        assert!(gathered(vec![]).contains("no volume record"));
    }

    #[test]
    fn an_import_record_naming_data_that_is_not_its_backups_own_is_refused() {
        let good = whole();
        let now = later();
        let refused = |edit: &dyn Fn(&mut ImportRecord)| {
            let mut r = good.clone();
            edit(&mut r);
            r.status("shop", NAME, "s3", now).unwrap_err().reason
        };
        assert!(good.status("shop", NAME, "s3", now).is_ok());
        // Another namespace's, another backup's, another volume's data, or a path out.
        assert_eq!(
            good.status("bank", NAME, "s3", now).unwrap_err().reason,
            "InvalidImport"
        );
        assert_eq!(
            good.status("shop", "other", "s3", now).unwrap_err().reason,
            "InvalidImport"
        );
        let artifact =
            |a: &'static str| move |r: &mut ImportRecord| r.volumes[0].result.artifact = a.into();
        refused(&artifact("bank/nightly-202611280200/db.tar.zst"));
        refused(&artifact("shop/nightly-202611280200/logs.tar.zst"));
        refused(&artifact("shop/nightly-202611280200/db.tar.zst/../../x"));
        refused(&artifact("shop/other/db.tar.zst"));
        refused(&|r| r.volumes[0].result.digest = "not-hex".into());
        refused(&|r| r.volumes[1].result.pvc = "db".into());
        refused(&|r| r.volumes[0].result.pvc = "../x".into());
        // A name that is not a PVC's, even with its data where such a name would put it.
        refused(&|r| {
            r.volumes[0].result.pvc = "DB".into();
            r.volumes[0].result.artifact = format!("shop/{NAME}/DB.tar.zst");
        });
        refused(&|r| r.volumes.clear());
        refused(&|r| r.version = RECORD_VERSION + 1);
        // A restic volume: the namespace's own restic repository and a full snapshot id.
        let restic = |id: &str, root: &str| {
            let mut r = good.clone();
            r.volumes[0].result.artifact = root.into();
            r.volumes[0].result.digest = id.into();
            r.volumes[0].result.restic = Some(ResticSnapshot {
                id: id.into(),
                parent: None,
                files_read: 1,
            });
            r.status("shop", NAME, "s3", now)
                .map(|s| s.volumes[0].restic.clone())
        };
        assert!(restic(ID, "shop/_restic").unwrap().is_some());
        assert!(restic(ID, "bank/_restic").is_err());
        assert!(restic(&ID[..8], "shop/_restic").is_err());
    }

    #[test]
    fn a_record_from_the_future_or_naming_a_bad_size_or_class_is_refused() {
        let good = whole();
        let now: Timestamp = "2026-11-28T03:00:00Z".parse().unwrap();
        let refused = |edit: &dyn Fn(&mut ImportRecord)| {
            let mut r = good.clone();
            edit(&mut r);
            r.status("shop", NAME, "s3", now).unwrap_err().message
        };
        let future: Timestamp = "2099-01-01T02:00:00Z".parse().unwrap();
        // The forged "newest backup for ever": every time it carries is checked.
        assert!(refused(&|r| r.scheduled_time = Some(future)).contains("scheduledTime"));
        assert!(refused(&|r| r.completion_time = future).contains("in the future"));
        assert!(
            refused(&|r| {
                r.start_time = future;
                r.completion_time = future;
                r.scheduled_time = None;
            })
            .contains("startTime")
        );
        assert!(
            refused(&|r| {
                r.verification = Some(VerificationRecord {
                    version: RECORD_VERSION,
                    backup: NAME.into(),
                    request: "x".into(),
                    mode: VerificationMode::Artifact,
                    phase: VerificationPhase::Passed,
                    completion_time: future,
                    reason: "Passed".into(),
                    message: String::new(),
                })
            })
            .contains("verification.completionTime")
        );
        assert!(
            refused(&|r| r.completion_time = "2026-11-28T01:00:00Z".parse().unwrap())
                .contains("before its startTime")
        );
        assert!(
            refused(&|r| r.scheduled_time = Some("2026-11-28T02:30:00Z".parse().unwrap()))
                .contains("after its startTime")
        );
        // Within the clock skew of two clusters is not the future.
        let mut close = good.clone();
        close.completion_time = "2026-11-28T03:04:00Z".parse().unwrap();
        assert!(close.status("shop", NAME, "s3", now).is_ok());
        // The size and class of the PVC a restore creates.
        for bad in [
            "",
            "10 Gi",
            "-1Gi",
            "0",
            "1Qi",
            "10Gi\n",
            "99999999999999999999",
            "1..5Gi",
            "e9",
            "1e",
            "1e9Gi",
            "Gi",
        ] {
            let message = refused(&|r| r.volumes[0].capacity = Some(bad.into()));
            assert!(message.contains("not a storage size"), "{bad:?}: {message}");
        }
        // What the API server writes back for a genuine PVC (it keeps the exponent form and
        // turns a fraction into a smaller unit), all of which a real record may carry.
        for good_size in [
            "10Gi",
            "500M",
            "1073741824",
            "2Ti",
            "1e9",
            "1.5Gi",
            "1500m",
            "2E",
        ] {
            assert!(is_storage_size(good_size), "{good_size}");
        }
        let message = refused(&|r| r.volumes[0].storage_class_name = Some("Fast/../x".into()));
        assert!(message.contains("storage class"), "{message}");
    }

    #[test]
    fn a_restic_snapshots_tags_carry_its_context() {
        let mut c = context("db");
        c.strategy = None;
        let mut tags = vec![
            "backstop".to_string(),
            format!("backup={NAME}"),
            "pvc=db".into(),
            "policy=nightly".into(),
        ];
        tags.extend(context_tags(&c));
        assert_eq!(context_from_tags("shop", &tags), Ok(c));
        let old = vec!["backstop".to_string(), format!("backup={NAME}")];
        assert!(
            context_from_tags("shop", &old)
                .unwrap_err()
                .contains("before records")
        );
        let mut broken = tags.clone();
        broken.retain(|t| !t.starts_with("started="));
        broken.push("started=yesterday".into());
        assert!(
            context_from_tags("shop", &broken)
                .unwrap_err()
                .contains("started")
        );
    }
}
