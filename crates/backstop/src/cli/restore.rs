//! `backstop restore PVC --latest --to NEW`: restore a volume from its newest good backup (or a
//! named one) into a new PVC, and wait for the verified result.

use super::backups::parse_duration;
use super::wait::{Progress, reason, until_finished};
use super::{Output, Target, connect, not_found, print_structured};
use backstop_api::{
    Backup, BackupPhase, ExistingDataPolicy, Restore, RestoreSpec, RestoreStatus, RestoreTarget,
};
use backstop_controller::policy::summarize;
use backstop_controller::retention;
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use std::time::Duration;

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["latest", "backup"])))]
pub struct RestoreArgs {
    /// The volume (PVC name at backup time) to restore.
    pvc: String,
    /// From the newest Completed backup that holds the volume.
    #[arg(long)]
    latest: bool,
    /// From this backup.
    #[arg(long)]
    backup: Option<String>,
    /// With --latest: only backups of this policy.
    #[arg(long, short = 'p')]
    policy: Option<String>,
    /// The PVC to restore into (created when absent, with the recorded size and class).
    #[arg(long)]
    to: String,
    /// Storage class of the PVC created for the restore (default: the source volume's).
    #[arg(long)]
    storage_class: Option<String>,
    /// When --to exists and holds files: FailIfNotEmpty, Overwrite or Merge.
    #[arg(long, value_parser = parse_existing_data, default_value = "FailIfNotEmpty")]
    existing_data: ExistingDataPolicy,
    /// Return once the Restore is created.
    #[arg(long)]
    no_wait: bool,
    /// Longest wait for it to finish (e.g. 30m, 2h).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    timeout: Duration,
    /// Print the finished Restore as YAML or JSON instead of a summary.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
    #[command(flatten)]
    target: Target,
}

fn parse_existing_data(text: &str) -> Result<ExistingDataPolicy, String> {
    serde_json::from_value(serde_json::Value::String(text.to_string()))
        .map_err(|_| format!("{text} is not one of FailIfNotEmpty, Overwrite, Merge"))
}

/// The newest good backup (as retention counts them: Completed, not being deleted, not failed
/// at verification) whose volume `pvc` completed, optionally of one policy: by completion
/// time, then creation, then name.
fn latest_with<'a>(backups: &'a [Backup], pvc: &str, policy: Option<&str>) -> Option<&'a Backup> {
    backups
        .iter()
        .filter(|b| retention::counts(&summarize(b)))
        .filter(|b| policy.is_none() || b.spec.policy_ref.as_deref() == policy)
        .filter(|b| {
            b.status
                .iter()
                .flat_map(|s| &s.volumes)
                .any(|v| v.pvc == pvc && v.phase == BackupPhase::Completed)
        })
        .max_by_key(|b| {
            (
                b.status
                    .as_ref()
                    .and_then(|s| s.completion_time.as_ref())
                    .map(|t| t.0),
                b.metadata.creation_timestamp.as_ref().map(|t| t.0),
                b.name_any(),
            )
        })
}

impl RestoreArgs {
    /// The Restore this command makes from `backup`; the server picks the name's suffix.
    fn restore_of(&self, backup: &str) -> Restore {
        let mut restore = Restore::new(
            "",
            RestoreSpec {
                backup_name: backup.to_string(),
                source_pvc: Some(self.pvc.clone()),
                target: RestoreTarget {
                    pvc_name: self.to.clone(),
                    storage_class_name: self.storage_class.clone(),
                    size: None,
                },
                existing_data_policy: self.existing_data,
                ..RestoreSpec::default()
            },
        );
        restore.metadata.name = None;
        restore.metadata.generate_name = Some(format!(
            "{}-restore-",
            backstop_api::naming::fit(&self.to, 200)
        ));
        restore
    }

    pub async fn run(self) -> anyhow::Result<()> {
        let (client, namespace) = connect(&self.target).await?;
        let backups: Api<Backup> = Api::namespaced(client.clone(), &namespace);
        let backup = match &self.backup {
            Some(name) => backups
                .get(name)
                .await
                .map_err(|e| not_found(e, &format!("Backup {name}"), &namespace))?
                .name_any(),
            None => {
                let all = backups.list(&ListParams::default()).await?.items;
                let of = self
                    .policy
                    .as_ref()
                    .map(|p| format!(" of policy {p}"))
                    .unwrap_or_default();
                latest_with(&all, &self.pvc, self.policy.as_deref())
                    .map(ResourceExt::name_any)
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "no Completed backup{of} in namespace {namespace} holds volume {} (backups that failed verification are passed over)",
                            self.pvc
                        )
                    })?
            }
        };
        let restores: Api<Restore> = Api::namespaced(client, &namespace);
        let restore = self.restore_of(&backup);
        let created = restores.create(&PostParams::default(), &restore).await?;
        let name = created.name_any();
        eprintln!(
            "restore {name} created: volume {} of backup {backup} into PVC {} (namespace {namespace})",
            self.pvc, self.to
        );
        if self.no_wait {
            println!("{name}");
            return Ok(());
        }
        let finished = until_finished(&restores, "restore", &name, self.timeout, progress).await?;
        let status = finished.status.clone().unwrap_or_default();
        if finished.phase() == BackupPhase::Failed {
            anyhow::bail!("{}", failure(&name, &status));
        }
        if self.output != Output::Table {
            return print_structured(&finished, self.output);
        }
        let done = format!(
            "restore {name} Completed: {} files, {} bytes into PVC {}; {}",
            status.files_restored.unwrap_or(0),
            status.bytes_restored.unwrap_or(0),
            self.to,
            status.verification.as_deref().unwrap_or("not verified"),
        );
        println!("{}", super::format::printable(&done));
        Ok(())
    }
}

/// The one line a failed restore ends the command with.
fn failure(name: &str, status: &RestoreStatus) -> String {
    let why = reason(&status.conditions, status.message.as_deref())
        .unwrap_or_else(|| "no reason recorded".into());
    // The operator's advice names the spec field; say it as this command's flag too.
    let hint = if why.contains("existingDataPolicy") {
        " (here: --existing-data Overwrite or Merge)"
    } else {
        ""
    };
    format!("restore {name} failed: {why}{hint}")
}

fn progress(restore: &Restore) -> Progress {
    let status = restore.status.clone().unwrap_or_default();
    let phase = restore.phase();
    Progress::of(phase, phase.as_str().to_string(), &status.conditions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::fixtures::{at, backup};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn latest_is_the_newest_completed_backup_that_holds_the_volume() {
        use BackupPhase::*;
        let mut deleting = backup("deleting", "p", 540, Completed, &[("data", Completed)]);
        deleting.metadata.deletion_timestamp = Some(Time(at(1000)));
        let backups = [
            backup("old", "p", 60, Completed, &[("data", Completed)]),
            backup(
                "good",
                "p",
                120,
                Completed,
                &[("data", Completed), ("logs", Completed)],
            ),
            backup("other-policy", "q", 180, Completed, &[("data", Completed)]),
            backup("failed", "p", 240, Failed, &[("data", Failed)]),
            backup("running", "p", 300, Running, &[("data", Running)]),
            backup("without-it", "p", 360, Completed, &[("logs", Completed)]),
            deleting,
        ];
        let name = |b: Option<&Backup>| b.map(ResourceExt::name_any);
        assert_eq!(
            name(latest_with(&backups, "data", None)).as_deref(),
            Some("other-policy")
        );
        assert_eq!(
            name(latest_with(&backups, "data", Some("p"))).as_deref(),
            Some("good")
        );
        assert_eq!(
            name(latest_with(&backups, "logs", Some("p"))).as_deref(),
            Some("without-it")
        );
        assert_eq!(name(latest_with(&backups, "cache", None)), None);
        // A newer backup that failed its verification is passed over.
        let mut unsound = backup("unsound", "p", 600, Completed, &[("data", Completed)]);
        let status = unsound.status.get_or_insert_with(Default::default);
        backstop_api::condition::set(
            &mut status.conditions,
            backstop_api::condition::ConditionType::Verified,
            false,
            "DigestMismatch",
            "the artifact does not match",
            None,
            at(700),
        );
        let with_unsound: Vec<Backup> = backups.iter().cloned().chain([unsound]).collect();
        assert_eq!(
            name(latest_with(&with_unsound, "data", Some("p"))).as_deref(),
            Some("good")
        );
        assert_eq!(name(latest_with(&backups, "data", Some("none"))), None);
    }

    #[test]
    fn progress_tells_why_it_waits_or_failed_not_that_it_runs() {
        let now = at(0);
        let with = |phase: BackupPhase, reason: &str, message: &str| {
            let mut status = RestoreStatus {
                phase,
                ..RestoreStatus::default()
            };
            let why = backstop_api::condition::Invalid::new(reason, message);
            if phase == BackupPhase::Failed {
                backstop_api::condition::set_failed(&mut status.conditions, &why, None, now);
            } else {
                backstop_api::condition::set(
                    &mut status.conditions,
                    backstop_api::condition::ConditionType::Completed,
                    false,
                    reason,
                    message,
                    None,
                    now,
                );
            }
            let mut restore = Restore::new("r", RestoreSpec::default());
            restore.status = Some(status);
            restore
        };
        let line = |r: &Restore| progress(r).line;
        assert_eq!(
            line(&with(BackupPhase::Running, "Running", "restore is running")),
            "Running"
        );
        assert_eq!(
            line(&with(
                BackupPhase::Pending,
                "WaitingForBackup",
                "backup b is Running"
            )),
            "Pending (WaitingForBackup: backup b is Running)"
        );
        let failed = with(
            BackupPhase::Failed,
            "TargetNotEmpty",
            "use existingDataPolicy Overwrite or Merge",
        );
        assert_eq!(
            line(&failed),
            "Failed (TargetNotEmpty: use existingDataPolicy Overwrite or Merge)"
        );
        assert_eq!(
            failure("r", failed.status.as_ref().unwrap()),
            "restore r failed: TargetNotEmpty: use existingDataPolicy Overwrite or Merge \
             (here: --existing-data Overwrite or Merge)"
        );
        let other = with(BackupPhase::Failed, "DigestMismatch", "file a");
        assert_eq!(
            failure("r", other.status.as_ref().unwrap()),
            "restore r failed: DigestMismatch: file a"
        );
    }

    #[test]
    fn the_restore_made_is_the_one_asked_for() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: RestoreArgs,
        }
        let args = Cli::try_parse_from([
            "restore",
            "data",
            "--latest",
            "--to",
            "copy",
            "--storage-class",
            "fast",
            "--existing-data",
            "Merge",
        ])
        .unwrap()
        .args;
        let restore = args.restore_of("nightly-1");
        assert_eq!(
            restore.metadata.generate_name.as_deref(),
            Some("copy-restore-")
        );
        assert_eq!(restore.metadata.name, None);
        let spec = restore.spec;
        assert_eq!(spec.backup_name, "nightly-1");
        assert_eq!(spec.source_pvc.as_deref(), Some("data"));
        assert_eq!(spec.target.pvc_name, "copy");
        assert_eq!(spec.target.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(spec.existing_data_policy, ExistingDataPolicy::Merge);
        assert!(!spec.allow_in_use && spec.untrusted.is_none());
        // One of --latest and --backup is required.
        assert!(Cli::try_parse_from(["restore", "data", "--to", "copy"]).is_err());
        assert!(
            Cli::try_parse_from(["restore", "data", "--latest", "--backup", "b", "--to", "c"])
                .is_err()
        );
    }

    #[test]
    fn existing_data_policies_are_read_by_their_api_names() {
        assert_eq!(parse_existing_data("Merge"), Ok(ExistingDataPolicy::Merge));
        assert!(parse_existing_data("merge-please").is_err());
    }
}
