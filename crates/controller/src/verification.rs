//! Verification of Completed backups: which backup a policy's verification run asks for
//! (`pick`), and how a request (annotation `backstop.dev/verify`) is carried out by the Backup
//! reconciler: one mover Job per volume reads the artifact back and checks every digest against
//! the manifest; the answer is the Backup's `Verified` condition, its `status.verification`, an
//! event and the verification metrics.
//!
//! A verification that could not look (repository unreachable, a mover pod that could not run)
//! is `Inconclusive`: it says so, and leaves `Verified` as the last conclusive one found it, so
//! that an outage never makes good backups look damaged (they would stop counting for retention).

use crate::jobs::{self, ROLE_DRILL, ROLE_VERIFY};
use crate::outcome::{job_name_taken, owned_by};
use crate::scheduling::BackupSummary;
use crate::{Context, Error, events, metrics, now};
use backstop_api::condition::{self, ConditionType, Invalid};
use backstop_api::contract::{self, RestoreResult};
use backstop_api::record::VerificationRecord;
use backstop_api::{
    Backup, BackupRepository, BackupStatus, Drill, Verification, VerificationMode,
    VerificationPhase, VerificationStatus, VolumeBackup, VolumeVerification, labels, naming,
};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ContainerStatus, PersistentVolumeClaim, PersistentVolumeClaimSpec, Pod,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ObjectMeta};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
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
            "{mode} verification failed: {}. The backup no longer counts as good for retention",
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
    let (done, reason) = match verification.mode {
        VerificationMode::Artifact => ("read back", "DigestsMatch"),
        VerificationMode::RestoreDrill => ("restored into a scratch volume", "DrillPassed"),
    };
    let mut message = format!(
        "{mode} verification passed in {seconds}s: {} volume{} {done}, {files} files ({}), every digest matches its manifest",
        volumes.len(),
        if volumes.len() == 1 { "" } else { "s" },
        events::human_bytes(bytes),
    );
    if verification.mode == VerificationMode::RestoreDrill {
        message.push_str("; the check (if any) passed and the scratch volumes are removed");
    }
    Conclusion {
        phase: VerificationPhase::Passed,
        verified: Some((true, Invalid::new(reason, message.clone()))),
        message,
    }
}

/// The verification status a new request starts with: one Running entry per backed-up volume.
fn started(
    status: &BackupStatus,
    backup: &str,
    request: &str,
    mode: VerificationMode,
    now: Timestamp,
) -> VerificationStatus {
    VerificationStatus {
        request: request.to_string(),
        mode,
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

/// Carries out (or follows) the verification `request` of the Completed `backup`, the way its
/// policy's `spec.verification` says (`Artifact` without one).
pub async fn progress(ctx: &Context, backup: &Backup, request: &str) -> Result<Action, Error> {
    let name = backup.name_any();
    let namespace = backup.namespace().unwrap_or_default();
    // The policy once per pass: how to verify, and the movers' resources.
    let policy = match &backup.spec.policy_ref {
        Some(policy) => ctx.policy(&namespace, policy).await?,
        None => None,
    };
    let settings: Verification = policy
        .as_ref()
        .and_then(|p| p.spec.verification.clone())
        .unwrap_or_default();
    let config = crate::backup::mover_config_of(ctx, policy.as_deref());
    let mut status = backup.status.clone().unwrap_or_default();
    let mut verification = match status.verification.take() {
        Some(v) if v.request == request => v,
        _ => {
            let v = started(&status, &name, request, settings.mode, now());
            status.verification = Some(v.clone());
            crate::patch_status(&ctx.client, backup, &status, &[]).await?;
            let what = match v.mode {
                VerificationMode::Artifact => "Reading back",
                VerificationMode::RestoreDrill => "Restoring into scratch volumes",
            };
            events::normal(
                &ctx.recorder,
                backup,
                "VerificationStarted",
                format!(
                    "{what} {} artifact{} to check every digest ({})",
                    v.volumes.len(),
                    if v.volumes.len() == 1 { "" } else { "s" },
                    v.mode.as_str()
                ),
            )
            .await;
            v
        }
    };
    // A drill started as one stays one, whatever the policy says meanwhile.
    let drill = (verification.mode == VerificationMode::RestoreDrill)
        .then(|| settings.drill.clone().unwrap_or_default());
    let repo_name = status.repository.clone().unwrap_or_default();
    let repository = ctx.repository(&namespace, &repo_name).await?;
    let mut changed = false;
    for volume in verification
        .volumes
        .iter_mut()
        .filter(|v| v.phase == VerificationPhase::Running)
    {
        let backed_up = status
            .volumes
            .iter()
            .find(|v| v.pvc == volume.pvc)
            .cloned()
            .unwrap_or_default();
        let found = look(
            ctx,
            backup,
            volume,
            &backed_up,
            drill.as_ref(),
            repository.as_deref(),
            &config,
        )
        .await?;
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

/// One volume's verification: starts its Job (and a drill's scratch volume) when there is none,
/// else reads what it found.
async fn look(
    ctx: &Context,
    backup: &Backup,
    volume: &VolumeVerification,
    backed_up: &VolumeBackup,
    drill: Option<&Drill>,
    repository: Option<&BackupRepository>,
    config: &jobs::MoverConfig,
) -> Result<Found, Error> {
    // A command backup's stream is read back and checked like an artifact, even in a drill:
    // restoring it would need a scratch database, not a scratch volume.
    let drill = drill.filter(|_| !backed_up.stream);
    let namespace = backup.namespace().unwrap_or_default();
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let job_name = volume.job.clone().unwrap_or_default();
    let checked = drill.is_some_and(|d| d.check.is_some());
    match jobs_api.get_opt(&job_name).await? {
        Some(job) if !owned_by(&job, backup) => Ok(Found::Unknown(job_name_taken(&job_name))),
        Some(job) => {
            let Some(succeeded) = crate::outcome::finished(&job) else {
                return Ok(Found::Running);
            };
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
            let pod = crate::outcome::job_pods(&pods, &job)
                .await?
                .into_iter()
                .next();
            Ok(found(&job, pod.as_ref(), succeeded, checked))
        }
        None => {
            // Jobs (and scratch volumes) go once the answer is written: an answered request
            // seen from an older copy must not start them again. (A request this reconcile just
            // started has no Job yet by design, and its Backup is newer than the copy anyway.)
            let recorded = backup
                .status
                .as_ref()
                .and_then(|s| s.verification.as_ref())
                .is_some_and(|v| {
                    volume.job.is_some() && v.volumes.iter().any(|r| r.job == volume.job)
                });
            if recorded && !crate::cache_is_current(&ctx.client, backup).await? {
                return Err(crate::cache_behind());
            }
            let Some(repo) = repository else {
                return Ok(Found::Unknown(Invalid::new(
                    "RepositoryNotFound",
                    "the BackupRepository this backup was written to does not exist now",
                )));
            };
            if let Some(why) = crate::secrets::refusal(ctx, repo).await? {
                return Ok(Found::Unknown(why));
            }
            if let Some(drill) = drill {
                let scratch = match scratch_volume(backup, &job_name, backed_up, drill) {
                    Ok(scratch) => scratch,
                    Err(why) => return Ok(Found::Unknown(why)),
                };
                let claims: Api<PersistentVolumeClaim> =
                    Api::namespaced(ctx.client.clone(), &namespace);
                crate::create_once(&claims, &scratch).await?;
            }
            let manifest = contract::manifest_key(
                &contract::backup_dir(&namespace, &backup.name_any()),
                &volume.pvc,
            );
            let job = jobs::verify_job(
                backup,
                jobs::VerifyJob {
                    name: job_name.clone(),
                    pvc: &volume.pvc,
                    repository: repo,
                    manifest,
                    artifact_digest: backed_up.digest.clone(),
                    restic_snapshot: backed_up.restic.as_ref().map(|r| r.id.clone()),
                    drill: drill.map(|d| (job_name.as_str(), d.check.as_ref())),
                },
                config,
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

/// The scratch volume a drill restores `backed_up` into, named like its Job: the drill's size
/// and class, else the backed-up volume's; owned by the Backup and labelled as a drill's, so
/// that it is never mistaken for data and goes with the Backup at the latest.
fn scratch_volume(
    backup: &Backup,
    name: &str,
    backed_up: &VolumeBackup,
    drill: &Drill,
) -> Result<PersistentVolumeClaim, Invalid> {
    let Some(size) = drill.size.clone().or_else(|| backed_up.capacity.clone()) else {
        return Err(Invalid::new(
            "DrillSizeUnknown",
            format!(
                "the backup does not record the size of PVC {:?}: set spec.verification.drill.size",
                backed_up.pvc
            ),
        ));
    };
    let mut labels = BTreeMap::from([
        (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
        (labels::ROLE.to_string(), ROLE_DRILL.to_string()),
        (
            labels::BACKUP.to_string(),
            naming::label_value(&backup.name_any()),
        ),
    ]);
    labels.insert(labels::PVC.to_string(), naming::label_value(&backed_up.pvc));
    Ok(PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: backup.namespace(),
            labels: Some(labels),
            owner_references: backup.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: drill
                .storage_class_name
                .clone()
                .or_else(|| backed_up.storage_class_name.clone()),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), Quantity(size))])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    })
}

/// What a finished verification Job found, from its pod: the mover's report (the only
/// container, or the init container before a drill's check), else the check's exit code and
/// the end of what it wrote, else the Job's own failure (its pod could not run).
pub fn found(job: &Job, pod: Option<&Pod>, succeeded: bool, checked: bool) -> Found {
    let status = pod.and_then(|p| p.status.as_ref());
    let mover = status.and_then(|s| {
        if checked {
            s.init_container_statuses.as_ref()?.first()
        } else {
            s.container_statuses.as_ref()?.first()
        }
    });
    let exit = |c: Option<&ContainerStatus>| {
        c.and_then(|c| c.state.as_ref()?.terminated.as_ref())
            .map(|t| t.exit_code)
    };
    let mover_message = mover.and_then(crate::outcome::message_of);
    if succeeded {
        return match mover_message
            .as_deref()
            .map(serde_json::from_str::<RestoreResult>)
        {
            Some(Ok(result)) => Found::Sound(result),
            _ => Found::Unknown(Invalid::new(
                "MoverResultMissing",
                format!(
                    "Job {} succeeded but its pod left no readable result",
                    job.name_any()
                ),
            )),
        };
    }
    if exit(mover).is_some_and(|code| code != 0) {
        return judge_failure(crate::outcome::failure(job, mover_message));
    }
    let check = status
        .filter(|_| checked)
        .and_then(|s| s.container_statuses.as_ref()?.first());
    if let Some(code) = exit(check).filter(|code| *code != 0) {
        let said = check
            .and_then(crate::outcome::message_of)
            .map(|m| tail(m.trim(), CHECK_MESSAGE_MAX))
            .unwrap_or_else(|| "it wrote nothing".into());
        return Found::Bad(Invalid::new(
            "DrillCheckFailed",
            format!("the drill's check exited with {code} on the restored data: {said}"),
        ));
    }
    Found::Unknown(crate::outcome::failure(job, None))
}

/// How much of what a check wrote is kept: the end, where the verdict usually is.
const CHECK_MESSAGE_MAX: usize = 512;

/// The last `max` bytes of `text` (on a character boundary).
fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
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
    // A drill leaves nothing behind: its scratch volumes go before the answer is written (their
    // pods' end releases them).
    crate::backup::delete_owned::<PersistentVolumeClaim>(ctx, backup, &[ROLE_DRILL]).await?;
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
    if let Some(record) = recorded(backup, &status, end) {
        keep(ctx, backup, &status, &record).await?;
    }
    Ok(Action::await_change())
}

/// What the repository keeps of a verification that concluded (Passed or Failed: an
/// inconclusive one changed nothing).
pub fn recorded(
    backup: &Backup,
    status: &BackupStatus,
    at: jiff::Timestamp,
) -> Option<VerificationRecord> {
    let verification = status.verification.as_ref()?;
    if !matches!(
        verification.phase,
        VerificationPhase::Passed | VerificationPhase::Failed
    ) {
        return None;
    }
    let verified = condition::find(&status.conditions, ConditionType::Verified)?;
    Some(VerificationRecord {
        version: backstop_api::record::RECORD_VERSION,
        backup: backup.name_any(),
        request: verification.request.clone(),
        mode: verification.mode,
        phase: verification.phase,
        completion_time: at,
        reason: verified.reason.clone(),
        message: verified.message.clone(),
    })
}

/// Starts the Job that writes `record` beside the backup; it is not waited for (a record that
/// could not be written only costs a later import the backup's `Verified` condition).
async fn keep(
    ctx: &Context,
    backup: &Backup,
    status: &BackupStatus,
    record: &VerificationRecord,
) -> Result<(), Error> {
    let namespace = backup.namespace().unwrap_or_default();
    let repo_name = status.repository.clone().unwrap_or_default();
    let Some(repo) = ctx.repository(&namespace, &repo_name).await? else {
        return Ok(());
    };
    // No Job for a Secret its owner did not opt in; nothing written where another cluster writes.
    if crate::secrets::refusal(ctx, &repo).await?.is_some()
        || crate::repository::writable(&repo, &ctx.mover.cluster).is_err()
    {
        return Ok(());
    }
    let config =
        crate::backup::mover_config(ctx, &namespace, backup.spec.policy_ref.as_deref()).await?;
    let job = jobs::record_verification_job(backup, &repo, record, &config);
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    crate::create_once(&api, &job).await?;
    Ok(())
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
    fn only_a_conclusive_verification_is_kept_in_the_repository_with_its_condition() {
        let backup = Backup::new("nightly-1", Default::default());
        let at = ts(30);
        let mut status = BackupStatus::default();
        // Nothing verified yet.
        assert_eq!(recorded(&backup, &status, at), None);
        status.verification = Some(VerificationStatus {
            request: "weekly".into(),
            mode: VerificationMode::RestoreDrill,
            phase: VerificationPhase::Inconclusive,
            ..Default::default()
        });
        condition::set(
            &mut status.conditions,
            ConditionType::Verified,
            true,
            "DrillPassed",
            "restored and checked",
            None,
            ts(1),
        );
        // An inconclusive one changed nothing, so nothing is written.
        assert_eq!(recorded(&backup, &status, at), None);
        if let Some(v) = status.verification.as_mut() {
            v.phase = VerificationPhase::Passed;
        }
        let kept = recorded(&backup, &status, at).unwrap();
        assert_eq!(
            (
                kept.backup.as_str(),
                kept.request.as_str(),
                kept.reason.as_str()
            ),
            ("nightly-1", "weekly", "DrillPassed")
        );
        assert_eq!(
            (kept.mode, kept.phase, kept.completion_time),
            (
                VerificationMode::RestoreDrill,
                VerificationPhase::Passed,
                at
            )
        );
        assert_eq!(kept.message, "restored and checked");
    }

    #[test]
    fn a_passed_drill_says_so() {
        let v = VerificationStatus {
            mode: VerificationMode::RestoreDrill,
            volumes: vec![volume("db", sound(3))],
            ..Default::default()
        };
        let c = conclude(&v, 9);
        let (sound, why) = c.verified.unwrap();
        assert!(sound);
        assert_eq!(why.reason, "DrillPassed");
        assert!(
            c.message.starts_with(
                "RestoreDrill verification passed in 9s: 1 volume restored into a scratch volume"
            ) && c.message.ends_with("the scratch volumes are removed"),
            "{}",
            c.message
        );
    }

    #[test]
    fn a_new_request_starts_with_one_running_entry_per_volume_and_its_own_jobs() {
        let status = BackupStatus {
            volumes: vec![
                VolumeBackup {
                    pvc: "db".into(),
                    ..Default::default()
                },
                VolumeBackup {
                    pvc: "logs".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let v = started(&status, "b", "t1", VerificationMode::RestoreDrill, ts(1));
        assert_eq!(v.request, "t1");
        assert_eq!(v.mode, VerificationMode::RestoreDrill);
        assert_eq!(v.phase, VerificationPhase::Running);
        assert_eq!(v.start_time, Some(Time(ts(1))));
        let entries: Vec<(&str, Option<String>, VerificationPhase)> = v
            .volumes
            .iter()
            .map(|e| (e.pvc.as_str(), e.job.clone(), e.phase))
            .collect();
        assert_eq!(
            entries,
            vec![
                (
                    "db",
                    Some(naming::verify_job("b", "db", "t1")),
                    VerificationPhase::Running
                ),
                (
                    "logs",
                    Some(naming::verify_job("b", "logs", "t1")),
                    VerificationPhase::Running
                ),
            ]
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

    fn terminated(exit_code: i32, message: &str) -> ContainerStatus {
        serde_json::from_value(serde_json::json!({
            "name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": exit_code, "message": message}}
        }))
        .unwrap()
    }

    fn pod(init: Option<ContainerStatus>, main: ContainerStatus) -> Pod {
        let mut pod = Pod::default();
        let status = pod.status.get_or_insert_default();
        status.init_container_statuses = init.map(|i| vec![i]);
        status.container_statuses = Some(vec![main]);
        pod
    }

    const RESTORED: &str = r#"{"files":4,"bytes":40,"entries":6,"verification":"ok"}"#;
    const DAMAGED: &str = r#"{"error":"data.tar.zst differs","reason":"IntegrityCheckFailed"}"#;

    #[test]
    fn a_drill_is_judged_by_the_mover_first_then_by_its_check() {
        let job = Job::default();
        // Without a check the mover is the only container.
        let plain = pod(None, terminated(0, RESTORED));
        assert!(matches!(found(&job, Some(&plain), true, false), Found::Sound(r) if r.files == 4));
        // With one, the mover is the init container; both done: sound.
        let passed = pod(Some(terminated(0, RESTORED)), terminated(0, ""));
        assert!(matches!(
            found(&job, Some(&passed), true, true),
            Found::Sound(_)
        ));
        // The restore found damage: the check never ran.
        let damaged = pod(
            Some(terminated(1, DAMAGED)),
            serde_json::from_value(serde_json::json!({
                "name": "check", "image": "i", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}
            }))
            .unwrap(),
        );
        assert_eq!(
            found(&job, Some(&damaged), false, true),
            Found::Bad(Invalid::new("DigestMismatch", "data.tar.zst differs"))
        );
        // The check rejected the data: its exit code and the end of what it wrote.
        let long = format!("{}rows: 0, expected 5", "x".repeat(600));
        let rejected = pod(Some(terminated(0, RESTORED)), terminated(3, &long));
        let Found::Bad(why) = found(&job, Some(&rejected), false, true) else {
            panic!("a rejecting check fails the drill");
        };
        assert_eq!(why.reason, "DrillCheckFailed");
        assert!(
            why.message
                .starts_with("the drill's check exited with 3 on the restored data: ...")
                && why.message.ends_with("rows: 0, expected 5"),
            "{}",
            why.message
        );
        assert!(why.message.len() < 600, "bounded: {}", why.message.len());
        // No pod at all (it could not start before the deadline): nobody looked.
        assert!(matches!(found(&job, None, false, true), Found::Unknown(_)));
    }

    #[test]
    fn a_scratch_volume_is_sized_like_the_backed_up_one_owned_and_labelled() {
        let mut backup = Backup::new("b", backstop_api::BackupSpec::default());
        backup.metadata.namespace = Some("shop".into());
        backup.metadata.uid = Some("u1".into());
        let backed_up = VolumeBackup {
            pvc: "db".into(),
            capacity: Some("5Gi".into()),
            storage_class_name: Some("fast".into()),
            ..Default::default()
        };
        let claim =
            scratch_volume(&backup, "b-db-verify-1", &backed_up, &Drill::default()).unwrap();
        assert_eq!(claim.metadata.name.as_deref(), Some("b-db-verify-1"));
        assert_eq!(claim.metadata.namespace.as_deref(), Some("shop"));
        let spec = claim.spec.clone().unwrap();
        assert_eq!(spec.access_modes, Some(vec!["ReadWriteOnce".to_string()]));
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            spec.resources.unwrap().requests.unwrap()["storage"],
            Quantity("5Gi".into())
        );
        assert!(owned_by(&claim, &backup));
        assert_eq!(claim.labels()[labels::ROLE], ROLE_DRILL);
        let drill = Drill {
            storage_class_name: Some("scratch".into()),
            size: Some("1Gi".into()),
            check: None,
        };
        let spec = scratch_volume(&backup, "n", &backed_up, &drill)
            .unwrap()
            .spec
            .unwrap();
        assert_eq!(spec.storage_class_name.as_deref(), Some("scratch"));
        let unknown = VolumeBackup::default();
        assert_eq!(
            scratch_volume(&backup, "n", &unknown, &Drill::default())
                .unwrap_err()
                .reason,
            "DrillSizeUnknown"
        );
    }

    #[test]
    fn the_tail_of_a_message_is_cut_on_a_character_boundary() {
        assert_eq!(tail("short", 10), "short");
        // 'é' is two bytes: keeping 3 bytes must not split one.
        assert_eq!(tail("aéé", 3), "...é");
        assert_eq!(tail("abcdé", 4), "...cdé");
    }

    /// Backup `b` of PVC `db`, Completed into repository `default`, asked to verify with `t1`,
    /// its answer `answered` (None: not started).
    fn asked(answered: Option<VerificationPhase>) -> Backup {
        let mut backup = crate::fixtures::backup("b", "nightly", BackupPhase::Completed);
        backup.metadata.uid = Some("uid-b".into());
        backup.metadata.resource_version = Some("10".into());
        backup.metadata.annotations = Some([(labels::VERIFY.to_string(), "t1".to_string())].into());
        let status = backup.status.get_or_insert_default();
        status.repository = Some("default".into());
        status.volumes = vec![VolumeBackup {
            pvc: "db".into(),
            digest: Some("b3".into()),
            ..Default::default()
        }];
        status.verification = answered.map(|phase| VerificationStatus {
            phase,
            ..started(status, "b", "t1", VerificationMode::Artifact, ts(0))
        });
        backup
    }

    fn repository() -> serde_json::Value {
        serde_json::json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupRepository",
            "metadata": {"name": "default", "namespace": crate::fixtures::NAMESPACE},
            "spec": {"pvc": {"claimName": "backups"}}})
    }

    /// A request already answered, seen from an older copy (its Jobs were deleted with the
    /// answer): no Job is made again, the reconcile waits for the newer copy.
    #[tokio::test]
    async fn an_answered_request_seen_from_an_older_copy_starts_nothing() {
        let backup = asked(Some(VerificationPhase::Running));
        let job = naming::verify_job("b", "db", "t1");
        let (ctx, mut api) = crate::fixtures::mocked();
        let mut newer = backup.clone();
        newer.metadata.resource_version = Some("11".into());
        let server = tokio::spawn(async move {
            let ns = format!("/namespaces/{}", crate::fixtures::NAMESPACE);
            let policies = format!("/apis/backstop.dev/v1alpha1{ns}/backuppolicies/nightly");
            api.expect("GET", &policies, 404, crate::fixtures::not_found())
                .await;
            let repos = format!("/apis/backstop.dev/v1alpha1{ns}/backuprepositories/default");
            api.expect("GET", &repos, 200, repository()).await;
            let jobs = format!("/apis/batch/v1{ns}/jobs/{job}");
            api.expect("GET", &jobs, 404, crate::fixtures::not_found())
                .await;
            let backups = format!("/apis/backstop.dev/v1alpha1{ns}/backups/b");
            api.expect("GET", &backups, 200, serde_json::to_value(&newer).unwrap())
                .await;
            api
        });
        assert!(progress(&ctx, &backup, "t1").await.is_err());
        let api = server.await.unwrap();
        drop(ctx);
        assert!(api.idle().await, "no Job, no status written");
    }

    #[test]
    fn a_running_job_changes_nothing() {
        let mut v = VolumeVerification::default();
        assert!(!record(&mut v, Found::Running));
        assert_eq!(v.phase, VerificationPhase::Running);
    }
}
