//! Backstop's custom resources (group `backstop.dev`, version `v1alpha1`): their types, defaults,
//! validation and condition helpers. Nothing here does I/O, so every rule is unit-testable.

pub mod backup;
pub mod condition;
pub mod contract;
pub mod naming;
pub mod ownership;
pub mod policy;
pub mod record;
pub mod repository;
pub mod restore;
pub mod schedule;
pub mod strategy;
pub mod waiting;

pub use backup::{
    Backup, BackupPhase, BackupSpec, BackupStatus, ResticSnapshot, SnapshotRecord,
    VerificationMode, VerificationPhase, VerificationStatus, VolumeBackup, VolumeVerification,
};
pub use policy::{
    BackupPolicy, BackupPolicySpec, BackupPolicyStatus, Drill, DrillCheck, KeptBackup, Retention,
    RetentionStatus, Target, Verification,
};
pub use repository::{
    BackupRepository, BackupRepositorySpec, BackupRepositoryStatus, Compression, PasswordSecretRef,
    PruneSpec, PruneStatus, PvcRepository, RepositoryFormat, S3Repository, SecretKeySelector,
};
pub use restore::{ExistingDataPolicy, Restore, RestoreSpec, RestoreStatus, RestoreTarget};
pub use strategy::{SnapshotStrategy, Strategy, VolumeSnapshot};

pub const GROUP: &str = "backstop.dev";

/// `1.5 MiB`-style sizes for messages.
pub fn human_bytes(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Labels and annotations Backstop puts on what it creates.
pub mod labels {
    /// On a Backup: the policy that made it. On a Job: the policy of its Backup.
    pub const POLICY: &str = "backstop.dev/policy";
    /// On a Job: the Backup it works for.
    pub const BACKUP: &str = "backstop.dev/backup";
    /// On a Job: the Restore it works for.
    pub const RESTORE: &str = "backstop.dev/restore";
    /// On a Backup a repository's sync created (value `true`): it was found in the repository
    /// with no Backup object, and its status comes from the record annotation `IMPORT_RECORD`.
    pub const IMPORTED: &str = "backstop.dev/imported";
    /// On an imported Backup: the record it was imported from (JSON, `record::ImportRecord`).
    pub const IMPORT_RECORD: &str = "backstop.dev/import-record";
    /// On a probe Job: the BackupRepository it checks.
    pub const REPOSITORY: &str = "backstop.dev/repository";
    /// On a probe Job: the repository generation it checks.
    pub const GENERATION: &str = "backstop.dev/generation";
    /// On a Job: what it does (`backup`, `delete`, `restore`, `probe`, `verify`). On a PVC
    /// Backstop made: what it is for (`drill`, `snapshot-source`).
    pub const ROLE: &str = "backstop.dev/role";
    /// On a Job: the PVC it reads.
    pub const PVC: &str = "backstop.dev/pvc";
    /// On a scheduled Backup: the cron time it stands for (RFC 3339, UTC).
    pub const SCHEDULED_TIME: &str = "backstop.dev/scheduled-time";
    /// On a policy, set by a person: the `metadata.generation` whose retention may delete more
    /// than the brake allows.
    pub const APPROVE_RETENTION: &str = "backstop.dev/approve-retention";
    /// On a Backup, set by its policy's verification schedule or a person: a token (any text,
    /// e.g. a time) asking for the backup to be verified; a new token asks again.
    pub const VERIFY: &str = "backstop.dev/verify";
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub const MANAGER: &str = "backstop";
}

/// Finalizer that keeps a Backup until its artifacts are removed from the repository.
pub const ARTIFACTS_FINALIZER: &str = "backstop.dev/artifacts";
