//! `BackupRepository`: where artifacts go, defined once and shared by policies.

use crate::condition::Invalid;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "backstop.dev",
    version = "v1alpha1",
    kind = "BackupRepository",
    namespaced,
    status = "BackupRepositoryStatus",
    shortname = "brepo",
    category = "backstop",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Writable","type":"string","jsonPath":".status.conditions[?(@.type==\"Writable\")].status"}"#,
    printcolumn = r#"{"name":"Bucket","type":"string","jsonPath":".spec.s3.bucket"}"#,
    printcolumn = r#"{"name":"Claim","type":"string","jsonPath":".spec.pvc.claimName"}"#,
    printcolumn = r#"{"name":"Compression","type":"string","jsonPath":".spec.compression"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BackupRepositorySpec {
    /// Shared storage: a PVC in the repository's namespace, mounted by mover pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcRepository>,
    /// S3-compatible object storage (AWS S3, MinIO, Ceph RGW, Garage...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Repository>,
    /// How artifacts are compressed (tar format; a restic repository compresses with zstd).
    #[serde(default)]
    pub compression: Compression,
    /// How backups are stored. `tar` (default): one archive and manifest per volume and backup,
    /// readable with tar and zstd. `restic`: a restic repository (deduplicated, compressed,
    /// encrypted) per namespace at `<namespace>/_restic`, readable with restic and the password.
    #[serde(default)]
    pub format: RepositoryFormat,
    /// With `format: restic`: the Secret key holding the repository's password. The operator
    /// never reads it; mover pods get it as RESTIC_PASSWORD. Keep a copy elsewhere: without it
    /// the backups cannot be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<PasswordSecretRef>,
    /// With `format: restic`: when the space of data no snapshot uses any more (forgotten by
    /// retention and Backup deletion) is reclaimed. Default: Sundays at 03:00 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<PruneSpec>,
    /// How often the repository is searched for backups of this namespace that have no Backup
    /// object here (a new cluster, a deleted namespace, Backups deleted by hand with
    /// `deletionPolicy: Retain`), which are then imported as Completed Backups. A duration such
    /// as `5m` (default) or `1h`, at least `1m`; `0s` turns syncing off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_interval: Option<String>,
    /// What deleting a Backup of this repository does to its data: `Delete` (default) removes
    /// it, `Retain` removes only the Backup object (read-only access, e.g. to a repository a
    /// lost cluster wrote, whose backups the next sync imports again).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Make this cluster the writer of the namespace's part of the repository, which the
    /// cluster named here (as `status.sync.owner` shows it) wrote until now. Only one cluster
    /// writes a part (its marker `<namespace>/_owner.json`); the others only read it (sync,
    /// restore, verification). Set this after a disaster, once that cluster is gone for good: if
    /// it still runs, its backups are refused from then on. `unreadable` replaces a marker that
    /// is not Backstop's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub take_over_from: Option<String>,
}

/// What deleting a Backup does to its data in the repository.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Delete,
    Retain,
}

/// How often a repository is synced when `syncInterval` is not set.
pub const DEFAULT_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);
/// The shortest `syncInterval` (each sync is a Job that lists the repository).
pub const MIN_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

impl BackupRepositorySpec {
    /// How often to sync; `None`: never (`syncInterval: 0s`).
    pub fn sync_interval(&self) -> Result<Option<std::time::Duration>, Invalid> {
        let Some(text) = self.sync_interval.as_deref() else {
            return Ok(Some(DEFAULT_SYNC_INTERVAL));
        };
        let parsed: jiff::SignedDuration = text.trim().parse().map_err(|e| {
            invalid(format!(
                "spec.syncInterval {text:?} is not a duration such as 5m or 1h ({e})"
            ))
        })?;
        let interval = std::time::Duration::try_from(parsed)
            .map_err(|_| invalid(format!("spec.syncInterval {text:?} must not be negative")))?;
        if interval.is_zero() {
            return Ok(None);
        }
        if interval < MIN_SYNC_INTERVAL {
            return Err(invalid(format!(
                "spec.syncInterval {text:?} is shorter than 1m (each sync lists the repository); use 0s to turn syncing off"
            )));
        }
        Ok(Some(interval))
    }
}

/// A restic repository's maintenance: a prune Job on a schedule. Prune takes no lock: data it
/// finds unused is marked, and removed only by a prune `keepDeleteHours` later, so backups
/// running meanwhile never wait for it and never lose data they rely on.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PruneSpec {
    /// Cron expression, five fields, in UTC.
    #[serde(default = "default_prune_schedule")]
    pub schedule: String,
    /// How long data marked unused stays before a prune removes it; longer than any backup
    /// runs (default 24). 0 removes it at once: only when nothing else writes the repository.
    #[serde(default = "default_keep_delete_hours")]
    pub keep_delete_hours: u32,
    #[serde(default)]
    pub suspend: bool,
}

impl Default for PruneSpec {
    fn default() -> Self {
        Self {
            schedule: default_prune_schedule(),
            keep_delete_hours: default_keep_delete_hours(),
            suspend: false,
        }
    }
}

fn default_prune_schedule() -> String {
    "0 3 * * 0".into()
}

fn default_keep_delete_hours() -> u32 {
    24
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RepositoryFormat {
    #[default]
    Tar,
    Restic,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PasswordSecretRef {
    #[schemars(length(min = 1))]
    pub name: String,
    /// The key in the Secret (default `password`).
    #[serde(default = "default_password_key")]
    pub key: String,
}

fn default_password_key() -> String {
    "password".into()
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcRepository {
    /// The PVC that holds the repository.
    #[schemars(length(min = 1))]
    pub claim_name: String,
    /// A directory inside that volume (default: its root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Repository {
    /// The endpoint URL, e.g. `https://minio.example:9000` (default: AWS S3 in `region`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Artifacts are stored under this prefix in the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Default `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), as MinIO-like servers usually need.
    #[serde(default)]
    pub force_path_style: bool,
    /// A Secret in the repository's namespace with the access keys. The operator never reads it:
    /// mover pods get the keys as environment variables.
    pub credentials_secret_ref: CredentialsSecretRef,
    /// A Secret holding the CA certificate (PEM) that signs the endpoint's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeySelector>,
    /// Accept any TLS certificate. For testing only.
    #[serde(default)]
    pub insecure_skip_tls_verify: bool,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    #[schemars(length(min = 1))]
    pub name: String,
    /// The key holding the access key id.
    #[serde(default = "default_access_key_id_key")]
    pub access_key_id_key: String,
    /// The key holding the secret access key.
    #[serde(default = "default_secret_access_key_key")]
    pub secret_access_key_key: String,
}

impl Default for CredentialsSecretRef {
    fn default() -> Self {
        Self {
            name: String::new(),
            access_key_id_key: default_access_key_id_key(),
            secret_access_key_key: default_secret_access_key_key(),
        }
    }
}

fn default_access_key_id_key() -> String {
    "AWS_ACCESS_KEY_ID".into()
}

fn default_secret_access_key_key() -> String {
    "AWS_SECRET_ACCESS_KEY".into()
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    #[schemars(length(min = 1))]
    pub name: String,
    /// The key in the Secret (default `ca.crt`).
    #[serde(default = "default_ca_key")]
    pub key: String,
}

fn default_ca_key() -> String {
    "ca.crt".into()
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// zstd level 3, multithreaded: `.tar.zst`.
    #[default]
    Zstd,
    /// gzip level 6: `.tar.gz`, readable by `tar xzf`.
    Gzip,
    /// A plain `.tar`.
    None,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::None => "none",
        }
    }

    /// The artifact's file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Zstd => "tar.zst",
            Compression::Gzip => "tar.gz",
            Compression::None => "tar",
        }
    }

    /// A command backup's stream's file name extension (`zstd -dc` / `gzip -dc` read it).
    pub fn stream_extension(self) -> &'static str {
        match self {
            Compression::Zstd => "zst",
            Compression::Gzip => "gz",
            Compression::None => "raw",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "zstd" => Ok(Compression::Zstd),
            "gzip" => Ok(Compression::Gzip),
            "none" => Ok(Compression::None),
            other => Err(format!(
                "unknown compression {other:?}: use zstd, gzip or none"
            )),
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRepositoryStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// A restic repository's last prune.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<PruneStatus>,
    /// The last sync: backups found in the repository for this namespace, and those imported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncStatus>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// When the last sync started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_completion_time: Option<Time>,
    /// `Succeeded` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<String>,
    /// Whole backups of this namespace found in the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backups: Option<u64>,
    /// Of those, how many had no Backup object and were imported by the last sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<u64>,
    /// Objects that are not whole Backstop backups of this namespace (corrupt, foreign,
    /// incomplete), left alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<u64>,
    /// Why the last sync failed (a condition reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The cluster that writes the namespace's part of the repository, as the last sync found
    /// its marker (`unreadable`: a marker that is not Backstop's); absent when none does yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PruneStatus {
    /// The scheduled time of the last prune started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_completion_time: Option<Time>,
    /// `Succeeded` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<String>,
    /// What it did, or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl BackupRepositorySpec {
    /// What is wrong with this spec, in words a user can act on (the API server may not enforce
    /// the schema: old servers do not).
    pub fn validate(&self) -> Result<(), Invalid> {
        match (self.format, &self.password_secret_ref) {
            (RepositoryFormat::Restic, None) => {
                return Err(invalid(
                    "format restic encrypts with a password: name its Secret in spec.passwordSecretRef".into(),
                ));
            }
            (RepositoryFormat::Restic, Some(r)) if r.name.is_empty() || r.key.is_empty() => {
                return Err(invalid(
                    "spec.passwordSecretRef needs a name and a key".into(),
                ));
            }
            (RepositoryFormat::Tar, Some(_)) => {
                return Err(invalid(
                    "spec.passwordSecretRef is for format restic; a tar repository is not encrypted".into(),
                ));
            }
            _ => {}
        }
        self.sync_interval()?;
        if let Some(from) = self.take_over_from.as_deref()
            && from != crate::ownership::UNREADABLE
            && !crate::ownership::is_cluster_id(from)
        {
            return Err(invalid(format!(
                "spec.takeOverFrom {from:?} is not a cluster id (1-128 letters, digits and .-_:, as status.sync.owner shows it) or \"unreadable\""
            )));
        }
        if let Some(prune) = &self.prune {
            if self.format != RepositoryFormat::Restic {
                return Err(invalid(
                    "spec.prune is for format restic; a tar backup's artifacts go with it".into(),
                ));
            }
            crate::schedule::Schedule::parse(&prune.schedule, None)
                .map_err(|e| invalid(format!("spec.prune.schedule: {e}")))?;
        }
        match (&self.pvc, &self.s3) {
            (None, None) => Err(Invalid::new(
                "NoBackend",
                "name where artifacts go: spec.pvc (a PVC holding the repository) or spec.s3 (a bucket)",
            )),
            (Some(_), Some(_)) => Err(Invalid::new(
                "InvalidSpec",
                "spec.pvc and spec.s3 are exclusive: a repository has one backend",
            )),
            (Some(pvc), None) => pvc.validate(),
            (None, Some(s3)) => s3.validate(),
        }
    }
}

fn invalid(message: String) -> Invalid {
    Invalid::new("InvalidSpec", message)
}

fn escapes(path: &str) -> bool {
    path.starts_with('/') || path.split('/').any(|c| c == "..")
}

impl PvcRepository {
    fn validate(&self) -> Result<(), Invalid> {
        if self.claim_name.is_empty() {
            return Err(invalid("spec.pvc.claimName must name a PVC".into()));
        }
        match self.sub_path.as_deref() {
            Some(sub) if escapes(sub) => Err(invalid(format!(
                "spec.pvc.subPath {sub:?} must be a relative path without '..'"
            ))),
            _ => Ok(()),
        }
    }
}

impl S3Repository {
    fn validate(&self) -> Result<(), Invalid> {
        let bucket_chars =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
        if self.bucket.len() < 3 || self.bucket.len() > 63 || !self.bucket.chars().all(bucket_chars)
        {
            return Err(invalid(format!(
                "spec.s3.bucket {:?} is not a bucket name: 3 to 63 lowercase letters, digits, '-' or '.'",
                self.bucket
            )));
        }
        if let Some(endpoint) = &self.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(invalid(format!(
                "spec.s3.endpoint {endpoint:?} must be a URL starting with https:// (or http://)"
            )));
        }
        if let Some(prefix) = &self.prefix
            && prefix.trim_matches('/').split('/').any(|c| c == "..")
        {
            return Err(invalid(format!(
                "spec.s3.prefix {prefix:?} must not contain '..'"
            )));
        }
        if self.credentials_secret_ref.name.is_empty() {
            return Err(invalid(
                "spec.s3.credentialsSecretRef.name must name a Secret with the access keys".into(),
            ));
        }
        Ok(())
    }

    /// The prefix without leading or trailing `/` (empty for none).
    pub fn prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or_default().trim_matches('/')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sync_interval_is_a_duration_of_a_minute_or_more_or_zero_for_never() {
        let interval = |text: Option<&str>| {
            BackupRepositorySpec {
                pvc: Some(PvcRepository {
                    claim_name: "b".into(),
                    sub_path: None,
                }),
                sync_interval: text.map(str::to_string),
                ..Default::default()
            }
            .sync_interval()
            .map_err(|e| e.reason)
        };
        let minutes = |m: u64| Ok(Some(std::time::Duration::from_secs(m * 60)));
        assert_eq!(interval(None), minutes(5));
        assert_eq!(interval(Some("5m")), minutes(5));
        assert_eq!(interval(Some("1h")), minutes(60));
        assert_eq!(
            interval(Some("PT90S")),
            Ok(Some(std::time::Duration::from_secs(90)))
        );
        assert_eq!(interval(Some("0s")), Ok(None));
        assert_eq!(interval(Some("30s")), Err("InvalidSpec".to_string()));
        assert_eq!(interval(Some("-5m")), Err("InvalidSpec".to_string()));
        assert_eq!(interval(Some("often")), Err("InvalidSpec".to_string()));
        let spec: BackupRepositorySpec = serde_json::from_value(serde_json::json!({
            "pvc": {"claimName": "b"}, "syncInterval": "10s"}))
        .unwrap();
        assert!(
            spec.validate()
                .unwrap_err()
                .message
                .contains("syncInterval")
        );
        assert_eq!(spec.deletion_policy, DeletionPolicy::Delete);
    }

    #[test]
    fn compression_defaults_to_zstd() {
        let spec: BackupRepositorySpec =
            serde_json::from_value(serde_json::json!({"pvc": {"claimName": "backups"}})).unwrap();
        assert_eq!(spec.compression, Compression::Zstd);
        assert!(spec.validate().is_ok());
    }

    #[test]
    fn a_repository_without_backend_or_with_an_escaping_sub_path_is_invalid() {
        let none = BackupRepositorySpec::default();
        assert_eq!(none.validate().unwrap_err().reason, "NoBackend");
        let escaping = BackupRepositorySpec {
            pvc: Some(PvcRepository {
                claim_name: "b".into(),
                sub_path: Some("../etc".into()),
            }),
            ..Default::default()
        };
        assert_eq!(escaping.validate().unwrap_err().reason, "InvalidSpec");
    }

    #[test]
    fn a_restic_repository_needs_its_password_secret_and_a_tar_one_takes_none() {
        let spec = |v: serde_json::Value| {
            serde_json::from_value::<BackupRepositorySpec>(v)
                .unwrap()
                .validate()
                .map_err(|e| e.message)
        };
        let restic = spec(
            serde_json::json!({"pvc": {"claimName": "b"}, "format": "restic",
            "passwordSecretRef": {"name": "restic"}}),
        );
        assert_eq!(restic, Ok(()));
        let parsed: BackupRepositorySpec = serde_json::from_value(serde_json::json!({
            "pvc": {"claimName": "b"}, "format": "restic", "passwordSecretRef": {"name": "r"}}))
        .unwrap();
        assert_eq!(parsed.format, RepositoryFormat::Restic);
        assert_eq!(parsed.password_secret_ref.unwrap().key, "password");
        let missing = spec(serde_json::json!({"pvc": {"claimName": "b"}, "format": "restic"}));
        assert!(missing.unwrap_err().contains("passwordSecretRef"));
        let empty = spec(
            serde_json::json!({"pvc": {"claimName": "b"}, "format": "restic",
            "passwordSecretRef": {"name": "r", "key": ""}}),
        );
        assert!(empty.is_err());
        let stray = spec(serde_json::json!({"pvc": {"claimName": "b"},
            "passwordSecretRef": {"name": "r"}}));
        assert!(stray.unwrap_err().contains("not encrypted"));
        let pruned = spec(
            serde_json::json!({"pvc": {"claimName": "b"}, "format": "restic",
            "passwordSecretRef": {"name": "r"}, "prune": {"schedule": "0 4 * * *"}}),
        );
        assert_eq!(pruned, Ok(()));
        let bad = spec(
            serde_json::json!({"pvc": {"claimName": "b"}, "format": "restic",
            "passwordSecretRef": {"name": "r"}, "prune": {"schedule": "weekly"}}),
        );
        assert!(bad.unwrap_err().contains("spec.prune.schedule"));
        let tar = spec(serde_json::json!({"pvc": {"claimName": "b"}, "prune": {}}));
        assert!(tar.unwrap_err().contains("for format restic"));
        let defaults = PruneSpec::default();
        assert_eq!(
            (defaults.schedule.as_str(), defaults.keep_delete_hours),
            ("0 3 * * 0", 24)
        );
    }

    fn s3(spec: serde_json::Value) -> Result<(), Invalid> {
        serde_json::from_value::<BackupRepositorySpec>(spec)
            .unwrap()
            .validate()
    }

    #[test]
    fn an_s3_repository_needs_a_bucket_name_a_url_and_a_secret() {
        let good = serde_json::json!({"s3": {"bucket": "backups", "endpoint": "http://127.0.0.1:9000",
            "credentialsSecretRef": {"name": "s3-keys"}}});
        assert!(s3(good.clone()).is_ok());
        let keys: BackupRepositorySpec = serde_json::from_value(good.clone()).unwrap();
        let creds = keys.s3.unwrap().credentials_secret_ref;
        assert_eq!(creds.access_key_id_key, "AWS_ACCESS_KEY_ID");
        assert_eq!(creds.secret_access_key_key, "AWS_SECRET_ACCESS_KEY");

        let mut both = good.clone();
        both["pvc"] = serde_json::json!({"claimName": "b"});
        let mut bad_bucket = good.clone();
        bad_bucket["s3"]["bucket"] = "My_Bucket".into();
        let mut bad_endpoint = good.clone();
        bad_endpoint["s3"]["endpoint"] = "minio:9000".into();
        let mut bad_prefix = good.clone();
        bad_prefix["s3"]["prefix"] = "a/../b".into();
        let mut no_secret = good;
        no_secret["s3"]["credentialsSecretRef"]["name"] = "".into();
        for (case, spec) in [
            ("both", both),
            ("bucket", bad_bucket),
            ("endpoint", bad_endpoint),
            ("prefix", bad_prefix),
            ("secret", no_secret),
        ] {
            let err = s3(spec).unwrap_err();
            assert_eq!(err.reason, "InvalidSpec", "{case}: {}", err.message);
        }
    }
}
