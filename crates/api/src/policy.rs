//! `BackupPolicy`: the intent — what to back up, when, where to, and how many to keep.

use crate::condition::Invalid;
use crate::schedule::Schedule;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The repository a policy uses when it names none.
pub const DEFAULT_REPOSITORY: &str = "default";

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "backstop.dev",
    version = "v1alpha1",
    kind = "BackupPolicy",
    namespaced,
    status = "BackupPolicyStatus",
    shortname = "bpol",
    category = "backstop",
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Suspend","type":"boolean","jsonPath":".spec.suspend"}"#,
    printcolumn = r#"{"name":"Last Success","type":"date","jsonPath":".status.lastSuccessfulBackupTime"}"#,
    printcolumn = r#"{"name":"Last Backup","type":"string","jsonPath":".status.lastBackup"}"#,
    printcolumn = r#"{"name":"Next Run","type":"string","jsonPath":".status.nextScheduledBackup"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicySpec {
    /// When to run: a 5-field cron expression (minute hour day-of-month month day-of-week).
    #[schemars(regex(pattern = r"^\s*\S+(\s+\S+){4}\s*$"))]
    pub schedule: String,
    /// IANA time zone the schedule is read in (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Stop scheduling new backups (running ones finish).
    #[serde(default)]
    pub suspend: bool,
    #[serde(default)]
    pub retention: Retention,
    /// The PVCs to back up (required, except with the `command` strategy, which reads none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// The BackupRepository to write to (default: the one named `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The start deadline of the Backups this policy makes (their `startingDeadlineSeconds`):
    /// how long a run may wait for its volumes to appear or bind (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub starting_deadline_seconds: Option<i64>,
    /// Requests and limits of the mover pods of this policy's backups (and of restores of them,
    /// while the policy exists), instead of the operator's defaults (`BACKSTOP_MOVER_RESOURCES`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mover_resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
    /// Verify the policy's backups on a schedule: each run asks one Completed backup to be
    /// verified (the newest never verified, else the one verified longest ago) and records the
    /// result in its `Verified` condition. A backup that fails verification no longer counts as
    /// good for retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// How the volumes are read: from the live volumes (absent, `direct`) or from a CSI
    /// VolumeSnapshot of each (`snapshot`), for one point-in-time image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<crate::strategy::Strategy>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// When to verify: a 5-field cron expression, read in the policy's time zone.
    #[schemars(regex(pattern = r"^\s*\S+(\s+\S+){4}\s*$"))]
    pub schedule: String,
    /// How: `Artifact` reads every artifact back and checks every digest against the manifest;
    /// `RestoreDrill` restores each volume into a scratch volume, checking every digest, runs
    /// `drill.check` on the restored data, and removes the scratch volume.
    #[serde(default)]
    pub mode: crate::backup::VerificationMode,
    /// The scratch volumes and the check of a `RestoreDrill`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<Drill>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Drill {
    /// Storage class of the scratch volumes (default: the backed-up volume's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Size of the scratch volumes, e.g. `10Gi` (default: the backed-up volume's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// A container run on the restored data (mounted at `/restored`) once every digest matched:
    /// exit 0 passes the drill; otherwise the drill fails with `DrillCheckFailed` and the end
    /// of what it wrote (its termination message, else its log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<DrillCheck>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillCheck {
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Keep the newest N good backups (Completed, not empty where the one before had files).
    /// A backup stays when any rule keeps it; the newest good backup always stays; no rule at
    /// all keeps everything. Deleted backups go with their artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_last: Option<i64>,
    /// Keep the newest good backup of each of the N newest hours that have one (in the
    /// policy's time zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_hourly: Option<i64>,
    /// The same for days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_daily: Option<i64>,
    /// The same for ISO weeks (Monday to Sunday).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_weekly: Option<i64>,
    /// The same for months.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_monthly: Option<i64>,
    /// The same for years.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_yearly: Option<i64>,
    /// The brake: a retention pass that would delete more than this percentage of the policy's
    /// good backups (and more than one) deletes nothing, says so in the `RetentionHeld`
    /// condition and a Warning event, and waits for the annotation
    /// `backstop.dev/approve-retention: "<metadata.generation>"`. Default 50; 100 turns it off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub max_delete_percent: Option<u8>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// The PVCs (in the policy's namespace) to back up.
    pub pvc_selector: LabelSelector,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_backup_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_scheduled_backup: Option<Time>,
    /// Name of the newest Backup this policy made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<String>,
    /// The newest scheduled time a Backup was made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// What retention keeps and why, and what it holds back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionStatus>,
    /// The newest verification time of `spec.verification.schedule` handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verification_time: Option<Time>,
    /// The next verification time (none without `spec.verification`, or when suspended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_verification: Option<Time>,
    /// The Backup the newest verification run asked to verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified_backup: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionStatus {
    /// The good backups retention keeps, newest first, with the rules that keep each (`last`,
    /// `hourly`, `daily`, `weekly`, `monthly`, `yearly`; `newest`: the newest good backup, which
    /// always stays). Empty when no rule is set (everything stays).
    // Always written, even empty: a merge patch leaves out fields alone.
    #[serde(default)]
    pub kept: Vec<KeptBackup>,
    /// Completed backups of no files made after a good one with files: suspect (a selector or
    /// volume that suddenly holds nothing), so they neither count as good nor are removed.
    // Always written, even empty: a merge patch leaves out fields alone.
    #[serde(default)]
    pub empty: Vec<String>,
    /// Backups the brake holds back from deletion, oldest first (see `RetentionHeld`).
    // Always written, even empty: a merge patch leaves out fields alone.
    #[serde(default)]
    pub held: Vec<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeptBackup {
    pub name: String,
    pub rules: Vec<String>,
}

impl Retention {
    /// The rules by their field names, set or not.
    pub fn rules(&self) -> [(&'static str, Option<i64>); 6] {
        [
            ("keepLast", self.keep_last),
            ("keepHourly", self.keep_hourly),
            ("keepDaily", self.keep_daily),
            ("keepWeekly", self.keep_weekly),
            ("keepMonthly", self.keep_monthly),
            ("keepYearly", self.keep_yearly),
        ]
    }

    /// The brake's percentage (see `max_delete_percent`).
    pub fn brake_percent(&self) -> u8 {
        self.max_delete_percent.unwrap_or(50)
    }

    fn validate(&self) -> Result<(), Invalid> {
        for (field, keep) in self.rules() {
            if let Some(keep) = keep
                && keep < 1
            {
                return Err(Invalid::new(
                    "InvalidRetention",
                    format!(
                        "retention.{field} is {keep}; it must be at least 1 (or unset to keep all)"
                    ),
                ));
            }
        }
        if let Some(percent) = self.max_delete_percent
            && percent > 100
        {
            return Err(Invalid::new(
                "InvalidRetention",
                format!("retention.maxDeletePercent is {percent}; it must be 0 to 100"),
            ));
        }
        Ok(())
    }
}

impl BackupPolicySpec {
    pub fn repository_name(&self) -> &str {
        self.repository.as_deref().unwrap_or(DEFAULT_REPOSITORY)
    }

    /// Checks what the API server's schema may not have enforced; returns the parsed schedule.
    pub fn validate(&self) -> Result<Schedule, Invalid> {
        crate::waiting::validate_deadline(self.starting_deadline_seconds)?;
        self.retention.validate()?;
        self.verification_schedule()?;
        if let Some(strategy) = &self.strategy {
            strategy.validate()?;
        }

        let schedule = Schedule::parse(&self.schedule, self.time_zone.as_deref())
            .map_err(|e| Invalid::new(e.reason(), e.to_string()))?;
        let command = self.strategy.as_ref().is_some_and(|s| s.command.is_some());
        match (&self.target, command) {
            (Some(target), false) => crate::naming::validate_selector(&target.pvc_selector)?,
            (None, false) => {
                return Err(Invalid::new(
                    "InvalidSpec",
                    "spec.target.pvcSelector is missing: say which PVCs to back up (only a command strategy needs none)",
                ));
            }
            (Some(_), true) => {
                return Err(Invalid::new(
                    "InvalidStrategy",
                    "a command backup holds its command's stream and no volume: remove spec.target, or back the volumes up with another policy",
                ));
            }
            (None, true) => {}
        }
        Ok(schedule)
    }

    /// The parsed `spec.verification.schedule`, if verification is set.
    pub fn verification_schedule(&self) -> Result<Option<Schedule>, Invalid> {
        let Some(verification) = &self.verification else {
            return Ok(None);
        };
        if let Some(check) = verification.drill.as_ref().and_then(|d| d.check.as_ref())
            && check.image.trim().is_empty()
        {
            return Err(Invalid::new(
                "InvalidVerification",
                "spec.verification.drill.check.image is empty: name the image the check runs in",
            ));
        }
        Schedule::parse(&verification.schedule, self.time_zone.as_deref())
            .map(Some)
            .map_err(|e| {
                Invalid::new(
                    "InvalidVerification",
                    format!("spec.verification.schedule: {e}"),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_example_applies_as_is() {
        let policy: BackupPolicy = serde_yaml::from_str(
            r#"
apiVersion: backstop.dev/v1alpha1
kind: BackupPolicy
metadata: {name: postgres-nightly}
spec:
  schedule: "0 2 * * *"
  retention:
    keepLast: 3
  target:
    pvcSelector:
      matchLabels:
        app: postgres
"#,
        )
        .unwrap();
        assert_eq!(policy.spec.retention.keep_last, Some(3));
        assert_eq!(policy.spec.repository_name(), "default");
        assert!(policy.spec.validate().is_ok());
    }

    #[test]
    fn keep_last_below_one_is_rejected_with_a_reason() {
        let spec = BackupPolicySpec {
            schedule: "0 2 * * *".into(),
            retention: Retention {
                keep_last: Some(0),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(spec.validate().unwrap_err().reason, "InvalidRetention");
        let spec = BackupPolicySpec {
            schedule: "0 2 * * *".into(),
            retention: Retention {
                keep_weekly: Some(-1),
                ..Default::default()
            },
            ..Default::default()
        };
        let invalid = spec.validate().unwrap_err();
        assert!(
            invalid.message.contains("retention.keepWeekly is -1"),
            "{}",
            invalid.message
        );
        let spec = BackupPolicySpec {
            schedule: "0 2 * * *".into(),
            retention: Retention {
                max_delete_percent: Some(101),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(spec.validate().unwrap_err().reason, "InvalidRetention");
    }

    #[test]
    fn a_verification_schedule_is_checked_like_the_backup_schedule() {
        let mut spec = BackupPolicySpec {
            schedule: "0 2 * * *".into(),
            target: Some(Target::default()),
            verification: Some(Verification {
                schedule: "0 4 * * 7".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(spec.verification_schedule().unwrap().is_some());
        assert!(spec.validate().is_ok());
        spec.verification = Some(Verification {
            schedule: "weekly".into(),
            ..Default::default()
        });
        let invalid = spec.validate().unwrap_err();
        assert_eq!(invalid.reason, "InvalidVerification");
        assert!(
            invalid.message.starts_with("spec.verification.schedule: "),
            "{}",
            invalid.message
        );
        spec.verification = Some(Verification {
            schedule: "@daily".into(),
            drill: Some(Drill {
                check: Some(DrillCheck::default()),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(spec.validate().unwrap_err().reason, "InvalidVerification");
    }

    #[test]
    fn volumes_need_a_target_and_a_command_backup_refuses_one() {
        let mut spec: BackupPolicySpec = serde_yaml::from_str("schedule: '0 2 * * *'").unwrap();
        let missing = spec.validate().unwrap_err();
        assert_eq!(missing.reason, "InvalidSpec");
        assert!(
            missing.message.contains("pvcSelector"),
            "{}",
            missing.message
        );
        spec.strategy = serde_yaml::from_str("command: {image: pg, command: [pg_dump]}").unwrap();
        assert!(spec.validate().is_ok(), "a command needs no target");
        spec.target = Some(Target::default());
        assert_eq!(spec.validate().unwrap_err().reason, "InvalidStrategy");
        spec.strategy = None;
        assert!(spec.validate().is_ok());
    }

    #[test]
    fn invalid_schedule_and_time_zone_have_their_own_reasons() {
        let mut spec = BackupPolicySpec {
            schedule: "every night".into(),
            ..Default::default()
        };
        assert_eq!(spec.validate().unwrap_err().reason, "InvalidSchedule");
        spec.schedule = "0 2 * * *".into();
        spec.time_zone = Some("Nowhere/Land".into());
        assert_eq!(spec.validate().unwrap_err().reason, "InvalidTimeZone");
    }
}
