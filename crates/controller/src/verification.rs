//! Verification of Completed backups: which backup a policy's verification run asks for
//! (`pick`), and how a request (annotation `backstop.dev/verify`) is carried out by the Backup
//! reconciler: one mover Job per volume reads the artifact back and checks every digest against
//! the manifest; the answer is the Backup's `Verified` condition, its `status.verification`, an
//! event and the verification metrics.
//!
//! A verification that could not look (repository unreachable, a mover pod that could not run)
//! is `Inconclusive`: it says so, and leaves `Verified` as the last conclusive one found it, so
//! that an outage never makes good backups look damaged (they would stop counting for retention).

use crate::jobs::{self, ROLE_VERIFY};
use crate::outcome::{job_name_taken, owned_by, termination_message};
use crate::scheduling::BackupSummary;
use crate::{Context, Error, events, metrics, now};
use backstop_api::condition::{self, ConditionType, Invalid};
use backstop_api::contract::{self, RestoreResult};
use backstop_api::{
    Backup, BackupRepository, BackupStatus, VerificationMode, VerificationPhase,
    VerificationStatus, VolumeVerification, naming,
};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use std::time::Duration;

/// The backup a verification run asks for: the newest Completed one never verified, else the one
/// whose last verification is the oldest. None when there is none, or when one is being verified
/// (runs never overlap).
pub fn pick(backups: &[BackupSummary]) -> Option<&BackupSummary> {
    let completed: Vec<&BackupSummary> = backups
        .iter()
        .filter(|b| b.phase == backstop_api::BackupPhase::Completed && !b.deleting)
        .collect();
    if completed.iter().any(|b| b.verifying) {
        return None;
    }
    let taken = |b: &BackupSummary| b.scheduled_time.or(b.created);
    let never = completed
        .iter()
        .filter(|b| b.checked_at.is_none())
        .max_by_key(|b| (taken(b), b.name.as_str()));
    never
        .or_else(|| {
            completed
                .iter()
                .min_by_key(|b| (b.checked_at, b.name.as_str()))
        })
        .copied()
}

/// What one volume's verification Job found.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    Running,
    Sound(RestoreResult),
    /// The artifact is damaged, missing or unsafe: `(reason, message)`.
    Bad(Invalid),
    /// It could not be looked at.
    Unknown(Invalid),
}

/// A mover failure seen as a verdict on the backup: damage, absence and unsafe entries are
/// the backup's fault (with the reasons users read); anything else could not look.
pub fn judge_failure(why: Invalid) -> Found {
    let reason = match why.reason.as_str() {
        "IntegrityCheckFailed" => "DigestMismatch",
        "ArtifactMissing" => "ArtifactMissing",
        "ArtifactUnreadable" => "ArtifactUnreadable",
        "UnsafeArchive" => "UnsafeArchive",
        _ => return Found::Unknown(why),
    };
    Found::Bad(Invalid::new(reason, why.message))
}

/// Writes what a volume's Job found into its entry; whether it changed.
fn record(volume: &mut VolumeVerification, found: Found) -> bool {
    let (phase, why) = match found {
        Found::Running => return false,
        Found::Sound(result) => {
            volume.files = i64::try_from(result.files).ok();
            volume.bytes = i64::try_from(result.bytes).ok();
            (VerificationPhase::Passed, None)
        }
        Found::Bad(why) => (VerificationPhase::Failed, Some(why)),
        Found::Unknown(why) => (VerificationPhase::Inconclusive, Some(why)),
    };
    volume.phase = phase;
    volume.reason = why.as_ref().map(|w| w.reason.clone());
    volume.message = why.map(|w| w.message);
    true
}

/// How a verification whose volumes all finished ends: Failed when any volume is bad, else
/// Inconclusive when any could not be looked at, else Passed.
pub struct Conclusion {
    pub phase: VerificationPhase,
    /// The `Verified` condition's reason and message (None: Inconclusive leaves it alone).
    pub verified: Option<(bool, Invalid)>,
    /// The event's message.
    pub message: String,
}

pub fn conclude(verification: &VerificationStatus, seconds: i64) -> Conclusion {
    let volumes = &verification.volumes;
    let described = |phase: VerificationPhase| -> Vec<String> {
        volumes
            .iter()
            .filter(|v| v.phase == phase)
            .map(|v| {
                format!(
                    "PVC {}: {}: {}",
                    v.pvc,
                    v.reason.as_deref().unwrap_or_default(),
                    v.message.as_deref().unwrap_or_default()
                )
            })
            .collect()
    };
    let mode = verification.mode.as_str();
    let bad = described(VerificationPhase::Failed);
    if !bad.is_empty() {
        let reason = volumes
            .iter()
            .find(|v| v.phase == VerificationPhase::Failed)
            .and_then(|v| v.reason.clone())
            .unwrap_or_default();
        let message = format!(
            "{mode} verification failed: {}. The backup no longer counts as good for retention; restoring it would fail",
            bad.join("; ")
        );
        return Conclusion {
            phase: VerificationPhase::Failed,
            verified: Some((false, Invalid::new(reason, message.clone()))),
            message,
        };
    }
    let unknown = described(VerificationPhase::Inconclusive);
    if !unknown.is_empty() {
        return Conclusion {
            phase: VerificationPhase::Inconclusive,
            verified: None,
            message: format!(
                "{mode} verification could not look: {}. The Verified condition keeps its last conclusive result; the next run tries again",
                unknown.join("; ")
            ),
        };
    }
    let files: i64 = volumes.iter().filter_map(|v| v.files).sum();
    let bytes: i64 = volumes.iter().filter_map(|v| v.bytes).sum();
    let message = format!(
        "{mode} verification passed in {seconds}s: {} volume{} read back, {files} files ({}), every digest matches its manifest",
        volumes.len(),
        if volumes.len() == 1 { "" } else { "s" },
        events::human_bytes(bytes),
    );
    Conclusion {
        phase: VerificationPhase::Passed,
        verified: Some((true, Invalid::new("DigestsMatch", message.clone()))),
        message,
    }
}

/// The verification status a new request starts with: one Running entry per backed-up volume.
fn started(
    status: &BackupStatus,
    backup: &str,
    request: &str,
    now: Timestamp,
) -> VerificationStatus {
    VerificationStatus {
        request: request.to_string(),
        mode: VerificationMode::Artifact,
        phase: VerificationPhase::Running,
        start_time: Some(Time(now)),
        completion_time: None,
        volumes: status
            .volumes
            .iter()
            .map(|v| VolumeVerification {
                pvc: v.pvc.clone(),
                job: Some(naming::verify_job(backup, &v.pvc, request)),
                ..Default::default()
            })
            .collect(),
        message: None,
    }
}

/// Carries out (or follows) the verification `request` of the Completed `backup`.
pub async fn progress(ctx: &Context, backup: &Backup, request: &str) -> Result<Action, Error> {
    let name = backup.name_any();
    let namespace = backup.namespace().unwrap_or_default();
    let mut status = backup.status.clone().unwrap_or_default();
    let mut verification = match status.verification.take() {
        Some(v) if v.request == request => v,
        _ => {
            let v = started(&status, &name, request, now());
            status.verification = Some(v.clone());
            crate::patch_status(&ctx.client, backup, &status, &[]).await?;
            events::normal(
                &ctx.recorder,
                backup,
                "VerificationStarted",
                format!(
                    "Reading back {} artifact{} to check every digest",
                    v.volumes.len(),
                    if v.volumes.len() == 1 { "" } else { "s" }
                ),
            )
            .await;
            v
        }
    };
    let repo_name = status.repository.clone().unwrap_or_default();
    let repository = ctx.repository(&namespace, &repo_name).await?;
    let mut changed = false;
    for volume in verification
        .volumes
        .iter_mut()
        .filter(|v| v.phase == VerificationPhase::Running)
    {
        let digest = status
            .volumes
            .iter()
            .find(|v| v.pvc == volume.pvc)
            .and_then(|v| v.digest.clone());
        let found = look(ctx, backup, volume, digest, repository.as_deref()).await?;
        changed |= record(volume, found);
    }
    if verification
        .volumes
        .iter()
        .all(|v| v.phase != VerificationPhase::Running)
    {
        return finish(ctx, backup, status, verification).await;
    }
    if changed {
        status.verification = Some(verification);
        crate::patch_status(&ctx.client, backup, &status, &[]).await?;
    }
    // Job changes wake us; this is only a safety net.
    Ok(Action::requeue(Duration::from_secs(60)))
}

/// One volume's verification: starts its Job when there is none, else reads what it found.
async fn look(
    ctx: &Context,
    backup: &Backup,
    volume: &VolumeVerification,
    digest: Option<String>,
    repository: Option<&BackupRepository>,
) -> Result<Found, Error> {
    let namespace = backup.namespace().unwrap_or_default();
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let job_name = volume.job.clone().unwrap_or_default();
    match jobs_api.get_opt(&job_name).await? {
        Some(job) if !owned_by(&job, backup) => Ok(Found::Unknown(job_name_taken(&job_name))),
        Some(job) => {
            let Some(succeeded) = crate::outcome::finished(&job) else {
                return Ok(Found::Running);
            };
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
            let message = termination_message(&pods, &job).await?;
            if !succeeded {
                return Ok(judge_failure(crate::outcome::failure(&job, message)));
            }
            Ok(
                match message
                    .as_deref()
                    .map(serde_json::from_str::<RestoreResult>)
                {
                    Some(Ok(result)) => Found::Sound(result),
                    _ => Found::Unknown(Invalid::new(
                        "MoverResultMissing",
                        format!("Job {job_name} succeeded but its pod left no readable result"),
                    )),
                },
            )
        }
        None => {
            let Some(repo) = repository else {
                return Ok(Found::Unknown(Invalid::new(
                    "RepositoryNotFound",
                    "the BackupRepository this backup was written to does not exist now",
                )));
            };
            if let Some(why) = crate::secrets::refusal(ctx, repo).await? {
                return Ok(Found::Unknown(why));
            }
            let config =
                crate::backup::mover_config(ctx, &namespace, backup.spec.policy_ref.as_deref())
                    .await?;
            let manifest = contract::manifest_key(
                &contract::backup_dir(&namespace, &backup.name_any()),
                &volume.pvc,
            );
            let job = jobs::verify_job(
                backup,
                jobs::VerifyJob {
                    name: job_name,
                    pvc: &volume.pvc,
                    repository: repo,
                    manifest,
                    artifact_digest: digest,
                },
                &config,
            );
            if crate::create_once(&jobs_api, &job).await? {
                let related = job.object_ref(&());
                let message = format!(
                    "Created Job {} to verify the artifact of PVC {:?}",
                    job.name_any(),
                    volume.pvc
                );
                events::normal_related(&ctx.recorder, backup, related, "JobCreated", message).await;
            }
            Ok(Found::Running)
        }
    }
}

/// Writes the conclusion: status, `Verified` condition, event, metrics; then the Jobs go.
async fn finish(
    ctx: &Context,
    backup: &Backup,
    mut status: BackupStatus,
    mut verification: VerificationStatus,
) -> Result<Action, Error> {
    let end = now();
    let seconds = verification
        .start_time
        .as_ref()
        .map_or(0, |t| end.duration_since(t.0).as_secs().max(0));
    let conclusion = conclude(&verification, seconds);
    verification.phase = conclusion.phase;
    verification.completion_time = Some(Time(end));
    verification.message = Some(condition::truncate(conclusion.message.clone(), 1024));
    if let Some((sound, why)) = &conclusion.verified {
        condition::set(
            &mut status.conditions,
            ConditionType::Verified,
            *sound,
            &why.reason,
            &condition::truncate(why.message.clone(), 1024),
            backup.meta().generation,
            end,
        );
    }
    status.verification = Some(verification);
    crate::patch_status(&ctx.client, backup, &status, &[]).await?;
    let result = match conclusion.phase {
        VerificationPhase::Passed => {
            events::normal(&ctx.recorder, backup, "BackupVerified", conclusion.message).await;
            "passed"
        }
        VerificationPhase::Failed => {
            events::warning(
                &ctx.recorder,
                backup,
                "VerificationFailed",
                conclusion.message,
            )
            .await;
            "failed"
        }
        _ => {
            events::warning(
                &ctx.recorder,
                backup,
                "VerificationInconclusive",
                conclusion.message,
            )
            .await;
            "inconclusive"
        }
    };
    ctx.metrics
        .verifications
        .get_or_create(&metrics::BackupLabels {
            namespace: backup.namespace().unwrap_or_default(),
            policy: backup.spec.policy_ref.clone().unwrap_or_default(),
            result: result.into(),
        })
        .inc();
    crate::backup::delete_jobs(ctx, backup, &[ROLE_VERIFY]).await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_api::BackupPhase;

    fn ts(minute: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + minute * 60).unwrap()
    }

    fn backup(name: &str, minute: i64, checked: Option<i64>) -> BackupSummary {
        BackupSummary {
            name: name.into(),
            phase: BackupPhase::Completed,
            scheduled_time: Some(ts(minute)),
            created: Some(ts(minute)),
            checked_at: checked.map(ts),
            ..BackupSummary::default()
        }
    }

    #[test]
    fn the_newest_never_verified_backup_goes_first_then_the_longest_unchecked() {
        let mut failed = backup("failed", 4, None);
        failed.phase = BackupPhase::Failed;
        let mut running = backup("running", 5, None);
        running.phase = BackupPhase::Running;
        let mut gone = backup("gone", 3, None);
        gone.deleting = true;
        let backups = vec![
            backup("old", 0, Some(10)),
            backup("older-check", 1, Some(8)),
            backup("new", 2, None),
            failed,
            running,
            gone,
        ];
        assert_eq!(pick(&backups).map(|b| b.name.as_str()), Some("new"));
        let all_checked = &backups[..2];
        assert_eq!(
            pick(all_checked).map(|b| b.name.as_str()),
            Some("older-check")
        );
        assert_eq!(pick(&[]), None);
    }

    #[test]
    fn runs_never_overlap() {
        let mut busy = backup("busy", 0, Some(1));
        busy.verifying = true;
        assert_eq!(pick(&[busy, backup("new", 2, None)]), None);
    }

    #[test]
    fn damage_absence_and_unsafe_entries_fail_the_backup_anything_else_is_inconclusive() {
        let why = |reason: &str| Invalid::new(reason, "m");
        assert_eq!(
            judge_failure(why("IntegrityCheckFailed")),
            Found::Bad(Invalid::new("DigestMismatch", "m"))
        );
        for reason in ["ArtifactMissing", "ArtifactUnreadable", "UnsafeArchive"] {
            assert_eq!(judge_failure(why(reason)), Found::Bad(why(reason)));
        }
        for reason in [
            "EndpointUnreachable",
            "AccessDenied",
            "DeadlineExceeded",
            "MoverFailed",
            "JobNameTaken",
        ] {
            assert_eq!(judge_failure(why(reason)), Found::Unknown(why(reason)));
        }
    }

    fn volume(pvc: &str, found: Found) -> VolumeVerification {
        let mut v = VolumeVerification {
            pvc: pvc.into(),
            ..Default::default()
        };
        assert!(record(&mut v, found));
        v
    }

    fn sound(files: u64) -> Found {
        Found::Sound(RestoreResult {
            files,
            bytes: files * 1024,
            entries: files,
            verification: "ok".into(),
            recovered_interrupted_restore: false,
            skipped_devices: 0,
        })
    }

    #[test]
    fn a_verification_passes_when_every_volume_is_sound() {
        let v = VerificationStatus {
            volumes: vec![volume("db", sound(3)), volume("logs", sound(1))],
            ..Default::default()
        };
        let c = conclude(&v, 7);
        assert_eq!(c.phase, VerificationPhase::Passed);
        let (sound, why) = c.verified.unwrap();
        assert!(sound);
        assert_eq!(why.reason, "DigestsMatch");
        assert!(
            c.message.starts_with(
                "Artifact verification passed in 7s: 2 volumes read back, 4 files (4.0 KiB)"
            ),
            "{}",
            c.message
        );
    }

    #[test]
    fn one_bad_volume_fails_the_backup_even_when_another_could_not_be_read() {
        let v = VerificationStatus {
            volumes: vec![
                volume("db", sound(3)),
                volume(
                    "cache",
                    Found::Unknown(Invalid::new("EndpointUnreachable", "no route")),
                ),
                volume(
                    "logs",
                    judge_failure(Invalid::new("IntegrityCheckFailed", "data.tar.zst differs")),
                ),
            ],
            ..Default::default()
        };
        let c = conclude(&v, 1);
        assert_eq!(c.phase, VerificationPhase::Failed);
        let (sound, why) = c.verified.unwrap();
        assert!(!sound);
        assert_eq!(why.reason, "DigestMismatch");
        assert!(
            why.message
                .contains("PVC logs: DigestMismatch: data.tar.zst differs"),
            "{}",
            why.message
        );
    }

    #[test]
    fn an_inconclusive_verification_leaves_the_verified_condition_alone() {
        let v = VerificationStatus {
            volumes: vec![
                volume("db", sound(3)),
                volume(
                    "cache",
                    Found::Unknown(Invalid::new("EndpointUnreachable", "no route")),
                ),
            ],
            ..Default::default()
        };
        let c = conclude(&v, 1);
        assert_eq!(c.phase, VerificationPhase::Inconclusive);
        assert_eq!(c.verified, None);
        assert!(
            c.message
                .contains("PVC cache: EndpointUnreachable: no route"),
            "{}",
            c.message
        );
    }

    #[test]
    fn a_running_job_changes_nothing() {
        let mut v = VolumeVerification::default();
        assert!(!record(&mut v, Found::Running));
        assert_eq!(v.phase, VerificationPhase::Running);
    }
}
