//! Backup reconciler: resolves what to back up and where, runs one mover Job per PVC, records
//! each volume's result from its pod's termination message, and finishes the Backup (Completed or
//! Failed, never changed again). A finalizer removes the Backup's artifacts from the repository
//! before the Backup goes away.

use crate::jobs::{self, ROLE_BACKUP, ROLE_RECORD, ROLE_VERIFY};
use crate::outcome::{JOB_NAME_TAKEN, job_name_taken, owned_by, termination_message};
use crate::quiesce::{self, Held};
use crate::snapshot::{self, Prepared};
use crate::{
    Context, Error, Watched, command, events, metrics, now, repository, verification, waiting,
};
use backstop_api::condition::{self, ConditionType, Invalid};
use backstop_api::contract::{BackupResult, Failure};
use backstop_api::policy::Target;
use backstop_api::strategy::{CommandStrategy, SnapshotStrategy, Strategy};
use backstop_api::waiting::{Refusal, Verdict, WaitingFor};
use backstop_api::{
    ARTIFACTS_FINALIZER, Backup, BackupPhase, BackupPolicy, BackupRepository, BackupStatus,
    VolumeBackup, labels, naming,
};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

struct Resolved {
    /// The label selector of the volumes (none for a command backup).
    selector: Option<String>,
    repository: Arc<BackupRepository>,
    strategy: Option<Strategy>,
}

async fn reconcile(backup: Arc<Backup>, ctx: Arc<Context>) -> Result<Action, Error> {
    if ctx.due_runs.pending(crate::now()) {
        // Scheduled runs are due: their Backups are made first (see `due`).
        return Ok(Action::requeue(crate::due::WAIT));
    }
    let api: Api<Backup> =
        Api::namespaced(ctx.client.clone(), &backup.namespace().unwrap_or_default());
    finalizer(&api, ARTIFACTS_FINALIZER, backup, |event| async {
        match event {
            Finalizer::Apply(b) => apply(&b, &ctx).await,
            Finalizer::Cleanup(b) => cleanup(&b, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

async fn apply(backup: &Backup, ctx: &Context) -> Result<Action, Error> {
    let phase = backup.phase();
    if phase == BackupPhase::Pending && imported(backup) {
        return import(ctx, backup).await;
    }
    if phase.is_terminal() {
        // Finished Jobs go (ttlSecondsAfterFinished is not relied on).
        if ctx.stores.has_jobs_of(backup) {
            delete_jobs(ctx, backup, &[ROLE_BACKUP]).await?;
        }
        if let Some(request) = backup.verification_request() {
            return verification::progress(ctx, backup, request).await;
        }
        return Ok(Action::await_change());
    }
    if let Err(invalid) = backup.spec.validate() {
        let status = backup.status.clone().unwrap_or_default();
        if status.volumes.is_empty() {
            return fail(ctx, backup, status, invalid).await;
        }
        // Started (a spec edited while it runs): its snapshots, temporary volumes and a
        // stopped application are given back like at any other end.
        return abandon(ctx, backup, status, invalid).await;
    }
    let mut status = backup.status.clone().unwrap_or_default();
    status.observed_generation = backup.meta().generation;
    if phase == BackupPhase::Pending
        && let Some(policy) = &backup.spec.policy_ref
    {
        adopt(ctx, backup, policy).await?;
    }
    if phase == BackupPhase::Pending || status.volumes.is_empty() {
        match start(ctx, backup, status).await? {
            Ok(started) => status = started,
            Err(action) => return Ok(action),
        }
    }
    progress(ctx, backup, status).await
}

/// Whether a repository's sync created `backup` (its status is to come from its record).
pub(crate) fn imported(backup: &Backup) -> bool {
    backup.labels().get(labels::IMPORTED).map(String::as_str) == Some("true")
}

/// Writes an imported Backup's status from the record it carries, checked against its own
/// namespace and name; a record that is not the backup's own fails it (`InvalidImport`).
async fn import(ctx: &Context, backup: &Backup) -> Result<Action, Error> {
    let namespace = backup.namespace().unwrap_or_default();
    let name = backup.name_any();
    let repository = backup.spec.repository.clone().unwrap_or_default();
    let status = backup
        .annotations()
        .get(labels::IMPORT_RECORD)
        .ok_or_else(|| {
            Invalid::new(
                "InvalidImport",
                format!(
                    "an imported Backup carries its record in annotation {}",
                    labels::IMPORT_RECORD
                ),
            )
        })
        .and_then(|text| {
            serde_json::from_str::<backstop_api::record::ImportRecord>(text).map_err(|e| {
                Invalid::new("InvalidImport", format!("the record is not readable: {e}"))
            })
        })
        .and_then(|record| record.status(&namespace, &name, &repository, now()));
    match status {
        Ok(mut status) => {
            status.observed_generation = backup.meta().generation;
            crate::patch_status(&ctx.client, backup, &status, &[]).await?;
            let message = format!(
                "Imported from repository {repository:?}: {} volume{} ({}), {}",
                status.volumes.len(),
                if status.volumes.len() == 1 { "" } else { "s" },
                status
                    .volumes
                    .iter()
                    .map(|v| v.pvc.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                status.size.clone().unwrap_or_default()
            );
            events::normal(&ctx.recorder, backup, "BackupImported", message).await;
            Ok(Action::await_change())
        }
        Err(why) => fail(ctx, backup, BackupStatus::default(), why).await,
    }
}

/// Resolves what to back up and where, and records the Backup as Running with one Pending entry
/// per volume; a refusal waits or fails instead (`Err`: what the reconcile returns).
async fn start(
    ctx: &Context,
    backup: &Backup,
    status: BackupStatus,
) -> Result<Result<BackupStatus, Action>, Error> {
    let resolved = match resolve(ctx, backup).await? {
        Ok(r) => r,
        Err(refusal) => return Ok(Err(refused(ctx, backup, status, refusal).await?)),
    };
    let command = resolved.strategy.as_ref().and_then(|s| s.command.as_ref());
    if let Some(command) = command {
        let namespace = backup.namespace().unwrap_or_default();
        let field = "strategy.command";
        if let Some(refusal) =
            crate::secrets::command_refusal(ctx, &namespace, &command.container, field).await?
        {
            return Ok(Err(refused(ctx, backup, status, refusal).await?));
        }
    }
    let pvcs = match &resolved.selector {
        Some(selector) => match select_volumes(ctx, backup, &resolved, selector).await? {
            Ok(p) => p,
            Err(refusal) => return Ok(Err(refused(ctx, backup, status, refusal).await?)),
        },
        None => Vec::new(),
    };
    let snapshots = resolved.strategy.as_ref().and_then(|s| s.snapshot.as_ref());
    if let Some(snapshots) = snapshots {
        if let Err(refusal) =
            snapshot::available(ctx, &snapshots.volume_snapshot_class_name).await?
        {
            return Ok(Err(refused(ctx, backup, status, refusal).await?));
        }
        if let Err(why) = snapshot::temporary_claims_go(ctx, &pvcs).await? {
            return Ok(Err(refused(ctx, backup, status, why.into()).await?));
        }
    }
    let repository = resolved.repository.name_any();
    let started = now();
    let mut status = running(backup, status, &pvcs, &repository, started);
    status.strategy = resolved.strategy.clone();
    if let Some(command) = command {
        status.volumes = vec![stream_entry(backup, command.name())];
    }
    if let Some(snapshots) = snapshots {
        let name = backup.name_any();
        for volume in &mut status.volumes {
            let record = snapshot::record_for(&name, &volume.pvc, snapshots, started);
            volume.snapshot = Some(record);
        }
    }
    crate::patch_status(&ctx.client, backup, &status, &[]).await?;
    // Every snapshot is asked for before any is awaited: their images are as close in time as
    // the storage allows. (With quiesce, once the application has stopped.)
    let quiescing = resolved
        .strategy
        .as_ref()
        .is_some_and(|s| s.quiesce.is_some());
    if let Some(snapshots) = snapshots.filter(|_| !quiescing) {
        snapshot::request_all(ctx, backup, &status.volumes, snapshots).await?;
    }
    let names: Vec<&str> = status.volumes.iter().map(|v| v.pvc.as_str()).collect();
    let message = match command {
        Some(command) => format!(
            "Storing the output of {:?} (image {}) as stream {:?} in repository {repository:?}",
            command.container.command.join(" "),
            command.container.image,
            command.name()
        ),
        None => format!(
            "Backing up {} volume{} ({}) to repository {repository:?}{}",
            names.len(),
            if names.len() == 1 { "" } else { "s" },
            names.join(", "),
            snapshots.map_or_else(String::new, |s| format!(
                " from VolumeSnapshots of class {:?}",
                s.volume_snapshot_class_name
            )),
        ),
    };
    events::normal(&ctx.recorder, backup, "BackupStarted", message).await;
    Ok(Ok(status))
}

/// The status of a backup that starts: Running into `repository`, each of `pvcs` Pending with
/// its Job's name, its requested size and storage class.
fn running(
    backup: &Backup,
    mut status: BackupStatus,
    pvcs: &[PersistentVolumeClaim],
    repository: &str,
    now: jiff::Timestamp,
) -> BackupStatus {
    let name = backup.name_any();
    status.phase = BackupPhase::Running;
    status.start_time = Some(Time(now));
    status.repository = Some(repository.to_string());
    status.volumes = pvcs
        .iter()
        .map(|claim| {
            let pvc = claim.name_any();
            let spec = claim.spec.clone().unwrap_or_default();
            VolumeBackup {
                job: Some(naming::backup_job(&name, &pvc)),
                pvc,
                phase: BackupPhase::Pending,
                capacity: spec
                    .resources
                    .and_then(|r| r.requests)
                    .and_then(|r| r.get("storage").map(|q| q.0.clone())),
                storage_class_name: spec.storage_class_name,
                ..Default::default()
            }
        })
        .collect();
    condition::set(
        &mut status.conditions,
        ConditionType::Completed,
        false,
        "Running",
        "backup is running",
        backup.meta().generation,
        now,
    );
    status
}

/// The status entry of a command backup's one stream, Pending with its Job's name.
fn stream_entry(backup: &Backup, name: &str) -> VolumeBackup {
    VolumeBackup {
        job: Some(naming::backup_job(&backup.name_any(), name)),
        pvc: name.to_string(),
        phase: BackupPhase::Pending,
        stream: true,
        ..Default::default()
    }
}

/// A Backup made by hand that names a policy belongs to it like a scheduled one: labelled and
/// owned, so the policy's status and retention see it.
async fn adopt(ctx: &Context, backup: &Backup, policy_name: &str) -> Result<(), Error> {
    let label = naming::label_value(policy_name);
    if backup.labels().get(labels::POLICY) == Some(&label) {
        return Ok(());
    }
    let namespace = backup.namespace().unwrap_or_default();
    let Some(policy) = ctx.policy(&namespace, policy_name).await? else {
        return Ok(());
    };
    let mut patch = serde_json::json!({"metadata": {"labels": {labels::POLICY: label}}});
    let has_controller = backup
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true));
    if !has_controller && let Some(owner) = policy.controller_owner_ref(&()) {
        let mut owners = backup.owner_references().to_vec();
        owners.push(owner);
        patch["metadata"]["ownerReferences"] = serde_json::to_value(owners)?;
    }
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &namespace);
    api.patch(
        &backup.name_any(),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await?;
    Ok(())
}

/// The selector and repository this backup uses, from its policy or its own spec.
async fn resolve(ctx: &Context, backup: &Backup) -> Result<Result<Resolved, Refusal>, Error> {
    let namespace = backup.namespace().unwrap_or_default();
    let (target, repo_name, strategy): (Option<Target>, String, Option<Strategy>) = match &backup
        .spec
        .policy_ref
    {
        Some(policy_name) => match ctx.policy(&namespace, policy_name).await? {
            Some(policy) => (
                policy.spec.target.clone(),
                policy.spec.repository_name().to_string(),
                policy.spec.strategy.clone(),
            ),
            None => {
                return Ok(Err(Refusal::wait(
                    WaitingFor::Policy,
                    "PolicyNotFound",
                    format!("BackupPolicy {policy_name:?} not found in namespace {namespace:?}"),
                )));
            }
        },
        None => (
            backup.spec.target.clone(),
            backup
                .spec
                .repository
                .clone()
                .unwrap_or_else(|| backstop_api::policy::DEFAULT_REPOSITORY.into()),
            backup.spec.strategy.clone(),
        ),
    };
    let strategy = strategy.filter(|s| *s != Strategy::default());
    let command = strategy.as_ref().is_some_and(|s| s.command.is_some());
    let selector = match (target, command) {
        (_, true) => None,
        (Some(target), false) => match naming::selector_string(&target.pvc_selector) {
            Ok(s) => Some(s),
            Err(invalid) => return Ok(Err(invalid.into())),
        },
        (None, false) => {
            return Ok(Err(Invalid::new(
                "InvalidSpec",
                "spec.target.pvcSelector is missing: say which PVCs to back up",
            )
            .into()));
        }
    };
    if let Some(refused) = crate::admission::check(ctx, &namespace).await? {
        return Ok(Err(refused.into()));
    }
    let Some(repository) = ctx.repository(&namespace, &repo_name).await? else {
        return Ok(Err(Refusal::wait(
            WaitingFor::Repository,
            "RepositoryNotFound",
            format!(
                "BackupRepository {repo_name:?} not found in namespace {namespace:?}: create it or name another repository"
            ),
        )));
    };
    if let Err(why) = repository::readiness(ctx, &repository).await {
        return Ok(Err(Refusal::wait(
            WaitingFor::Repository,
            "RepositoryNotReady",
            format!(
                "repository {repo_name:?} is not ready ({}): {}",
                why.reason, why.message
            ),
        )));
    }
    // Another cluster writes this namespace's part of the repository: nothing is written into
    // it (the policy says so too, and makes no scheduled backups meanwhile).
    if let Err(why) = repository::writable(&repository, &ctx.mover.cluster) {
        return Ok(Err(Refusal::Fail(why)));
    }
    Ok(Ok(Resolved {
        selector,
        repository,
        strategy,
    }))
}

/// The PVCs to back up: those the selector matches, never the repository's own volume; each
/// bound, or about to be bound by the mover pod that mounts it.
async fn select_volumes(
    ctx: &Context,
    backup: &Backup,
    resolved: &Resolved,
    selector: &str,
) -> Result<Result<Vec<PersistentVolumeClaim>, Refusal>, Error> {
    let namespace = backup.namespace().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    let repo_claim = resolved
        .repository
        .spec
        .pvc
        .as_ref()
        .map(|p| p.claim_name.as_str());
    let mut pvcs: Vec<PersistentVolumeClaim> = claims
        .list(&crate::cached().labels(selector))
        .await?
        .items
        .into_iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .filter(|c| Some(c.name_any().as_str()) != repo_claim)
        .collect();
    pvcs.sort_by_key(|c| c.name_any());
    if pvcs.is_empty() {
        return Ok(Err(Refusal::wait(
            WaitingFor::Volume,
            "NoVolumesMatched",
            format!(
                "target.pvcSelector {selector:?} matched no PVC in namespace {namespace:?} (the repository's own PVC is never backed up)",
            ),
        )));
    }
    for claim in &pvcs {
        if let Err(refusal) = waiting::bound(ctx, claim).await? {
            return Ok(Err(refusal));
        }
    }
    Ok(Ok(pvcs))
}

/// What became of one volume on this pass.
pub(crate) enum Step {
    /// Its Job runs (or was just created).
    Running,
    /// Its snapshot is not ready yet.
    Snapshotting,
    Done(BackupResult),
    Failed(Invalid),
}

async fn progress(
    ctx: &Context,
    backup: &Backup,
    mut status: BackupStatus,
) -> Result<Action, Error> {
    let namespace = backup.namespace().unwrap_or_default();
    let repo_name = status.repository.clone().unwrap_or_default();
    let repository = ctx.repository(&namespace, &repo_name).await?;
    let mut changed = false;
    let mut snapshotting = false;
    let strategy = status.strategy.clone();
    let snapshots = strategy.as_ref().and_then(|s| s.snapshot.as_ref());
    let command = strategy.as_ref().and_then(|s| s.command.as_ref());
    let started = status.start_time.as_ref().map_or_else(now, |t| t.0);
    if let Some(quiesce) = strategy.as_ref().and_then(|s| s.quiesce.as_ref())
        && status
            .quiesce
            .as_ref()
            .is_none_or(|r| r.stopped_time.is_none())
        && !status.volumes.iter().all(|v| v.phase.is_terminal())
    {
        match quiesce::hold_on(ctx, backup, &mut status, quiesce).await? {
            Held::Waiting => return Ok(Action::requeue(quiesce::POLL)),
            Held::Failed(why) => return abandon(ctx, backup, status, why).await,
            Held::Stopped => {
                crate::patch_status(&ctx.client, backup, &status, &[]).await?;
                if let Some(snapshots) = snapshots {
                    snapshot::request_all(ctx, backup, &status.volumes, snapshots).await?;
                }
            }
        }
    }
    let records: Vec<_> = status
        .volumes
        .iter()
        .map(|v| jobs::record_context(backup, &status, v))
        .collect();
    for (volume, kept) in status.volumes.iter_mut().zip(&records) {
        if volume.phase.is_terminal() {
            continue;
        }
        let job_name = volume
            .job
            .clone()
            .unwrap_or_else(|| naming::backup_job(&backup.name_any(), &volume.pvc));
        let before = volume.snapshot.clone();
        let step = step(
            ctx,
            backup,
            volume,
            &job_name,
            repository.as_deref(),
            Source {
                snapshots: snapshots.map(|s| (s, started)),
                command,
                record: kept,
            },
        )
        .await?;
        if let Step::Failed(why) = &step {
            after_failure(ctx, backup, &job_name, why, repository.as_deref()).await?;
        }
        snapshotting |= matches!(step, Step::Snapshotting);
        changed |= volume.snapshot != before;
        changed |= record(volume, step, now());
    }
    if status.volumes.iter().all(|v| v.phase.is_terminal()) {
        return finish(ctx, backup, status).await;
    }
    // With snapshots, the application is given back as soon as its data is frozen.
    if snapshots.is_some() && quiesce::holding(&status) && quiesce::snapshots_taken(&status) {
        quiesce::give_back(ctx, backup, &mut status).await?;
        changed = true;
    }
    if changed {
        crate::patch_status(&ctx.client, backup, &status, &[]).await?;
    }
    if snapshotting {
        // Nothing watches snapshots (their API may not even exist): look again soon.
        return Ok(Action::requeue(snapshot::POLL));
    }
    if command.is_some() {
        // A command that cannot start shows in its pod, which wakes nothing here.
        return Ok(Action::requeue(command::WATCH));
    }
    // Job changes wake us; this is only a safety net.
    Ok(Action::requeue(Duration::from_secs(60)))
}

/// Where a backup's data comes from, beside its volumes.
struct Source<'a> {
    /// The snapshot strategy, and when the backup started.
    snapshots: Option<(&'a SnapshotStrategy, jiff::Timestamp)>,
    /// The command strategy: its stream is the backup's one entry.
    command: Option<&'a CommandStrategy>,
    /// What the volume's mover keeps in the repository beside its data.
    record: &'a backstop_api::record::RecordContext,
}

/// Moves one volume on: starts its Job when there is none (from a ready snapshot with the
/// snapshot strategy), else reads the Job's outcome.
async fn step(
    ctx: &Context,
    backup: &Backup,
    volume: &mut VolumeBackup,
    job_name: &str,
    repository: Option<&BackupRepository>,
    source: Source<'_>,
) -> Result<Step, Error> {
    let pvc = volume.pvc.clone();
    let pvc = pvc.as_str();
    // The PVC the mover reads: the volume itself, or the temporary one made from its snapshot.
    let claim = volume
        .snapshot
        .as_ref()
        .map_or_else(|| pvc.to_string(), |s| s.name.clone());
    let namespace = backup.namespace().unwrap_or_default();
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    match jobs_api.get_opt(job_name).await? {
        // A Job of this name that is not this Backup's (made by someone else, in advance) is
        // never adopted, read or deleted.
        Some(job) if !owned_by(&job, backup) => Ok(Step::Failed(job_name_taken(job_name))),
        Some(job) if volume.stream => Ok(command::outcome(ctx, &namespace, &job).await?),
        Some(job) => Ok(job_outcome(ctx, &namespace, &job, &claim, &claims).await?),
        None => {
            // Jobs are deleted once the Backup is finished: a finished Backup seen from an older
            // cache must not start its movers again. (A volume this reconcile just recorded has
            // no Job yet by design, and its Backup is newer than the cache anyway.)
            let recorded = backup
                .status
                .as_ref()
                .is_some_and(|s| s.volumes.iter().any(|v| v.pvc == pvc));
            if recorded && !crate::cache_is_current(&ctx.client, backup).await? {
                return Err(crate::cache_behind());
            }
            let Some(repo) = repository else {
                let repo_name = backup
                    .status
                    .as_ref()
                    .and_then(|s| s.repository.clone())
                    .unwrap_or_default();
                return Ok(Step::Failed(Invalid::new(
                    "RepositoryNotFound",
                    format!("BackupRepository {repo_name:?} was deleted during the backup"),
                )));
            };
            if let Some(why) = crate::secrets::refusal(ctx, repo).await? {
                return Ok(Step::Failed(why));
            }
            if volume.stream {
                if repo.spec.format == backstop_api::RepositoryFormat::Restic {
                    return Ok(Step::Failed(Invalid::new(
                        "InvalidStrategy",
                        format!(
                            "a command's output is stored as an artifact of a tar repository, and BackupRepository {:?} has format restic: back the command up into a tar repository",
                            repo.name_any()
                        ),
                    )));
                }
                let Some(command) = source.command else {
                    return Ok(Step::Failed(Invalid::new(
                        "InvalidStrategy",
                        "the backup's status lists a stream but records no command strategy",
                    )));
                };
                command::start(ctx, backup, command, repo, source.record).await?;
                return Ok(Step::Running);
            }
            if let Some((strategy, started)) = source.snapshots {
                match snapshot::prepare(ctx, backup, volume, strategy, started).await? {
                    Prepared::Ready => {}
                    Prepared::Waiting => return Ok(Step::Snapshotting),
                    Prepared::Failed(why) => return Ok(Step::Failed(why)),
                }
            } else if claims.get_opt(pvc).await?.is_none() {
                return Ok(Step::Failed(Invalid::new(
                    "SourceVolumeDeleted",
                    format!("PVC {pvc:?} was deleted before it could be backed up"),
                )));
            }
            start_job(ctx, backup, pvc, &claim, repo, source.record).await?;
            Ok(Step::Running)
        }
    }
}

/// Creates the mover Job for `pvc`, reading `claim` (the volume itself or the temporary PVC made
/// from its snapshot), on the node of a running pod that mounts it, if any.
async fn start_job(
    ctx: &Context,
    backup: &Backup,
    pvc: &str,
    claim: &str,
    repo: &BackupRepository,
    record: &backstop_api::record::RecordContext,
) -> Result<(), Error> {
    let namespace = backup.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let running = pods
        .list(&crate::cached().fields("status.phase=Running"))
        .await?;
    let node = jobs::node_using(&running.items, claim);
    let config = mover_config(ctx, &namespace, backup.spec.policy_ref.as_deref()).await?;
    let job = jobs::backup_job(backup, pvc, claim, node.as_deref(), repo, &config, record);
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    if crate::create_once(&jobs_api, &job).await? {
        let name = job.name_any();
        let message = format!("Created Job {name} to back up PVC {pvc:?}");
        let related = job.object_ref(&());
        events::normal_related(&ctx.recorder, backup, related, "JobCreated", message).await;
    }
    Ok(())
}

/// A Job that can never finish (its PVC is gone) must not linger; a repository that failed us is
/// checked again, so that it stops being Ready (and policies stop starting Jobs) if it really is
/// unusable.
async fn after_failure(
    ctx: &Context,
    backup: &Backup,
    job_name: &str,
    why: &Invalid,
    repository: Option<&BackupRepository>,
) -> Result<(), Error> {
    if why.reason != JOB_NAME_TAKEN {
        let jobs_api: Api<Job> =
            Api::namespaced(ctx.client.clone(), &backup.namespace().unwrap_or_default());
        // Best effort: the volume's failure is recorded either way.
        let _ = crate::delete_if_present(&jobs_api, job_name).await;
    }
    if repository::blamed(&why.reason)
        && let Some(repo) = repository
    {
        repository::recheck(ctx, repo, why).await?;
    }
    Ok(())
}

/// Writes `step` into the volume's status entry; whether it changed.
fn record(volume: &mut VolumeBackup, step: Step, now: jiff::Timestamp) -> bool {
    match step {
        Step::Done(done) => {
            volume.phase = BackupPhase::Completed;
            volume.bytes = i64::try_from(done.bytes).ok();
            volume.files = i64::try_from(done.files).ok();
            volume.source_bytes = i64::try_from(done.source_bytes).ok();
            volume.digest = Some(done.digest);
            volume.artifact = Some(done.artifact);
            volume.restic = done.restic;
            volume.changed_while_reading = i64::try_from(done.changed_while_reading)
                .ok()
                .filter(|n| *n > 0);
            volume.changed_files = done.changed_files;
            volume.message = None;
            volume.reason = None;
            if let Some(record) = volume.snapshot.as_mut() {
                snapshot::moved(record, now);
            }
            true
        }
        Step::Failed(why) => {
            volume.phase = BackupPhase::Failed;
            volume.message = Some(format!("{}: {}", why.reason, why.message));
            volume.reason = Some(why.reason);
            true
        }
        Step::Running | Step::Snapshotting if volume.phase == BackupPhase::Pending => {
            volume.phase = BackupPhase::Running;
            true
        }
        Step::Running | Step::Snapshotting => false,
    }
}

/// The volume's result once its Job finished: from the pod's termination message.
async fn job_outcome(
    ctx: &Context,
    namespace: &str,
    job: &Job,
    pvc: &str,
    claims: &Api<PersistentVolumeClaim>,
) -> Result<Step, Error> {
    let done = crate::outcome::finished(job);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(succeeded) = done else {
        // Still running, unless its source volume vanished before the pod could start.
        let claim = claims.get_opt(pvc).await?;
        let pod_list = pods
            .list(&crate::cached().labels(&format!("job-name={}", job.name_any())))
            .await?;
        let started = pod_list
            .items
            .iter()
            .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
        let gone =
            claim.is_none() || claim.is_some_and(|c| c.metadata.deletion_timestamp.is_some());
        if gone && !started {
            return Ok(Step::Failed(Invalid::new(
                "SourceVolumeDeleted",
                format!("PVC {pvc:?} was deleted during the backup; its mover pod could not start"),
            )));
        }
        return Ok(Step::Running);
    };
    let message = termination_message(&pods, job).await?;
    Ok(backup_step(job, succeeded, message))
}

/// A volume's step from its ended Job and the mover's termination message.
pub(crate) fn backup_step(job: &Job, succeeded: bool, message: Option<String>) -> Step {
    if !succeeded {
        return Step::Failed(crate::outcome::failure(job, message));
    }
    match message.as_deref().map(serde_json::from_str::<BackupResult>) {
        Some(Ok(done)) => Step::Done(done),
        _ => Step::Failed(Invalid::new(
            "MoverResultMissing",
            format!(
                "Job {} succeeded but its pod left no readable result",
                job.name_any()
            ),
        )),
    }
}

/// How a backup whose volumes have all finished ends.
struct Ending {
    status: BackupStatus,
    completed: bool,
    /// The closing event's message (`BackupCompleted` or `BackupFailed`).
    message: String,
    /// A `ChangedWhileReading` Warning.
    changed_while_reading: Option<String>,
    seconds: f64,
}

/// The final status of a backup whose volumes have all finished: Completed when every volume
/// is, with totals and the Consistent condition; else Failed with the first volume's reason.
fn ending(backup: &Backup, mut status: BackupStatus, end: jiff::Timestamp) -> Ending {
    let completed = status
        .volumes
        .iter()
        .all(|v| v.phase == BackupPhase::Completed);
    let start = status.start_time.as_ref().map(|t| t.0).unwrap_or(end);
    let seconds = end.duration_since(start).as_secs_f64().max(0.0);
    status.completion_time = Some(Time(end));
    status.duration = Some(format!("{}s", seconds.round() as i64));
    status.total_bytes = Some(status.volumes.iter().filter_map(|v| v.bytes).sum());
    status.size = status.total_bytes.map(events::human_bytes);
    status.total_files = Some(status.volumes.iter().filter_map(|v| v.files).sum());
    status.snapshot_spread_seconds = snapshot::spread(&status.volumes);
    let generation = backup.meta().generation;
    let mut changed_while_reading = None;
    let message = if completed {
        status.phase = BackupPhase::Completed;
        let duration = status.duration.clone().unwrap_or_default();
        let stored = events::human_bytes(status.total_bytes.unwrap_or(0));
        let stream = status.volumes.iter().find(|v| v.stream);
        let mut message = match stream {
            Some(stream) => format!(
                "Stored the command's output as stream {:?} ({stored}; {} before compression) in {duration}",
                stream.pvc,
                events::human_bytes(stream.source_bytes.unwrap_or(0)),
            ),
            None => format!(
                "Backed up {} volume{} ({stored}, {} files) in {duration}",
                status.volumes.len(),
                if status.volumes.len() == 1 { "" } else { "s" },
                status.total_files.unwrap_or(0),
            ),
        };
        // Never a silent Completed: entries that changed while read are a condition, a Warning
        // and part of the message.
        let (consistent, reason, detail) = match status.changed_while_reading() {
            Some((count, detail)) => {
                message.push_str(&format!(
                    "; {count} changed while read, see the Consistent condition"
                ));
                changed_while_reading = Some(detail.clone());
                (false, "ChangedWhileReading", detail)
            }
            None if stream.is_some() => (
                true,
                "CommandOutput",
                "a dump is as consistent as the command that wrote it (pg_dump reads one transaction snapshot)".to_string(),
            ),
            None => (
                true,
                "NothingChangedWhileReading",
                "no file changed while it was read".to_string(),
            ),
        };
        let conditions = &mut status.conditions;
        condition::set(
            conditions,
            ConditionType::Consistent,
            consistent,
            reason,
            &detail,
            generation,
            end,
        );
        condition::set_completed(conditions, &message, generation, end);
        message
    } else {
        status.phase = BackupPhase::Failed;
        let why = failure(&status);
        condition::set_failed(&mut status.conditions, &why, generation, end);
        why.message
    };
    status.message = Some(message.clone());
    Ending {
        status,
        completed,
        message,
        changed_while_reading,
        seconds,
    }
}

/// Why a backup with failed volumes failed: the first failed volume's reason, and every failed
/// volume's message.
fn failure(status: &BackupStatus) -> Invalid {
    let failures: Vec<String> = status
        .volumes
        .iter()
        .filter(|v| v.phase == BackupPhase::Failed)
        .map(|v| {
            let what = if v.stream { "stream" } else { "PVC" };
            format!(
                "{what} {}: {}",
                v.pvc,
                v.message.clone().unwrap_or_default()
            )
        })
        .collect();
    let reason = status
        .volumes
        .iter()
        .find_map(|v| v.reason.clone())
        .unwrap_or_else(|| "VolumeFailed".into());
    Invalid::new(reason, failures.join("; "))
}

/// Fails every volume not finished yet with `why`, and ends the backup like any other (`finish`).
async fn abandon(
    ctx: &Context,
    backup: &Backup,
    mut status: BackupStatus,
    why: Invalid,
) -> Result<Action, Error> {
    let at = now();
    for volume in status.volumes.iter_mut().filter(|v| !v.phase.is_terminal()) {
        record(volume, Step::Failed(why.clone()), at);
    }
    finish(ctx, backup, status).await
}

async fn finish(ctx: &Context, backup: &Backup, mut status: BackupStatus) -> Result<Action, Error> {
    // Before the status is final: a finished Backup is not reconciled again to retry this.
    // (A temporary PVC still mounted goes once its Job's pod does, below.)
    if let Some(kept) = snapshot::kept(&status) {
        snapshot::release(ctx, backup, kept).await?;
    }
    if quiesce::holding(&status) {
        quiesce::give_back(ctx, backup, &mut status).await?;
    }
    let ending = ending(backup, status, now());
    crate::patch_status(&ctx.client, backup, &ending.status, &[]).await?;
    if let Some(detail) = ending.changed_while_reading {
        events::warning(&ctx.recorder, backup, "ChangedWhileReading", detail).await;
    }
    let result = if ending.completed {
        events::normal(&ctx.recorder, backup, "BackupCompleted", ending.message).await;
        "completed"
    } else {
        events::warning(&ctx.recorder, backup, "BackupFailed", ending.message).await;
        "failed"
    };
    let labels = metrics::PolicyLabels {
        namespace: backup.namespace().unwrap_or_default(),
        policy: backup.spec.policy_ref.clone().unwrap_or_default(),
    };
    ctx.metrics
        .backups
        .get_or_create(&metrics::BackupLabels {
            namespace: labels.namespace.clone(),
            policy: labels.policy.clone(),
            result: result.into(),
        })
        .inc();
    ctx.metrics
        .backup_duration
        .get_or_create(&labels)
        .observe(ending.seconds);
    delete_jobs(ctx, backup, &[ROLE_BACKUP]).await?;
    Ok(Action::await_change())
}

/// A backup that cannot start yet waits (Pending, with the reason and one event) until its start
/// deadline; one that never can, or whose deadline passed, fails.
async fn refused(
    ctx: &Context,
    backup: &Backup,
    status: BackupStatus,
    refusal: Refusal,
) -> Result<Action, Error> {
    match waiting::verdict(backup, refusal, backup.spec.starting_deadline_seconds) {
        Verdict::Fail(why) => fail(ctx, backup, status, why).await,
        Verdict::Wait {
            reason,
            message,
            recheck_in,
        } => {
            let current = backup.status.as_ref();
            waiting::wait(ctx, backup, current, status, reason, message, recheck_in).await
        }
    }
}

/// A backup that cannot even start: Failed with the reason, once.
async fn fail(
    ctx: &Context,
    backup: &Backup,
    mut status: BackupStatus,
    why: Invalid,
) -> Result<Action, Error> {
    let end = now();
    status.phase = BackupPhase::Failed;
    status.completion_time = Some(Time(end));
    status.message = Some(why.message.clone());
    let generation = backup.meta().generation;
    condition::set_failed(&mut status.conditions, &why, generation, end);
    crate::patch_status(&ctx.client, backup, &status, &[]).await?;
    events::warning(
        &ctx.recorder,
        backup,
        "BackupFailed",
        format!("{}: {}", why.reason, why.message),
    )
    .await;
    ctx.metrics
        .backups
        .get_or_create(&metrics::BackupLabels {
            namespace: backup.namespace().unwrap_or_default(),
            policy: backup.spec.policy_ref.clone().unwrap_or_default(),
            result: "failed".into(),
        })
        .inc();
    Ok(Action::await_change())
}

/// Deletes this backup's Jobs of the `roles`; returns how many still exist.
pub(crate) async fn delete_jobs(
    ctx: &Context,
    backup: &Backup,
    roles: &[&str],
) -> Result<usize, Error> {
    delete_owned::<Job>(ctx, backup, roles).await
}

/// Deletes the objects labelled for `backup` in one of the `roles` (Jobs, a drill's scratch
/// PVCs) that it controls (by uid: a lookalike with its labels is left alone); returns how many
/// still exist (being deleted).
pub(crate) async fn delete_owned<K>(
    ctx: &Context,
    backup: &Backup,
    roles: &[&str],
) -> Result<usize, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &backup.namespace().unwrap_or_default());
    let selector = format!(
        "{}={},{} in ({})",
        labels::BACKUP,
        naming::label_value(&backup.name_any()),
        labels::ROLE,
        roles.join(",")
    );
    let mut remaining = 0;
    for obj in api.list(&crate::cached().labels(&selector)).await?.items {
        if !owned_by(&obj, backup) {
            continue;
        }
        let gone = obj.meta().deletion_timestamp.is_none()
            && !crate::delete_if_present(&api, &obj.name_any()).await?;
        if !gone {
            remaining += 1;
        }
    }
    Ok(remaining)
}

fn not_yet(seconds: u64, why: impl Into<String>) -> Error {
    Error::NotYet {
        after: Duration::from_secs(seconds),
        why: why.into(),
    }
}

/// Removing a Backup removes its artifacts first; until that worked the Backup stays and says why.
/// `Ok` means done (the finalizer goes); waiting is `Error::NotYet`.
async fn cleanup(backup: &Backup, ctx: &Context) -> Result<Action, Error> {
    // A mover still writing would race the removal: its Job and pod must be gone first.
    if delete_jobs(ctx, backup, &[ROLE_BACKUP, ROLE_VERIFY, ROLE_RECORD]).await? > 0
        || mover_pods_remain(ctx, backup).await?
    {
        return Err(not_yet(
            2,
            "the backup's mover Jobs are still being removed",
        ));
    }
    let mut status = backup.status.clone().unwrap_or_default();
    // Its snapshots and temporary PVCs go with it, kept snapshots too (they are owned by it and
    // the garbage collector would take them anyway; this makes it certain and prompt).
    if snapshot::kept(&status).is_some() {
        snapshot::release(ctx, backup, false).await?;
    }
    // An application stopped for a backup deleted midway is given back.
    if quiesce::holding(&status) {
        quiesce::give_back(ctx, backup, &mut status).await?;
    }
    if status.volumes.is_empty() {
        return Ok(Action::await_change());
    }
    let namespace = backup.namespace().unwrap_or_default();
    let repo_name = status.repository.clone().unwrap_or_default();
    let repos: Api<BackupRepository> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(repo) = repos.get_opt(&repo_name).await? else {
        // The whole namespace is going and took the repository object first (it has no
        // finalizer): nothing can be created there any more, so holding the Backup would hold
        // the namespace forever. A PVC repository's data goes with its volume; an S3
        // repository's objects stay in the bucket (documented: they outlive the namespace).
        if namespace_terminating(ctx, &namespace).await? {
            tracing::warn!(
                backup = %backup.name_any(),
                %namespace,
                "namespace is being deleted and repository {repo_name:?} is gone: artifacts left where they are"
            );
            return Ok(Action::await_change());
        }
        let why = Invalid::new(
            "ArtifactsNotRemoved",
            format!(
                "repository {repo_name:?} not found, so the artifacts cannot be removed: recreate it, or remove the finalizer {ARTIFACTS_FINALIZER} to leave the data behind"
            ),
        );
        return deletion_blocked(ctx, backup, &mut status, why).await;
    };
    if repo.spec.deletion_policy == backstop_api::repository::DeletionPolicy::Retain {
        tracing::info!(
            backup = %backup.name_any(),
            repository = %repo_name,
            "deletionPolicy Retain: the Backup goes, its data stays in the repository"
        );
        return Ok(Action::await_change());
    }
    if let Err(why) = repository::writable(&repo, &ctx.mover.cluster) {
        // Another cluster's data is not this cluster's to remove: the object goes, the data
        // stays (and the next sync imports it again, like deletionPolicy Retain).
        events::normal(
            &ctx.recorder,
            backup,
            "ArtifactsKept",
            format!(
                "the Backup goes but its data stays in repository {repo_name:?}: {}",
                why.message
            ),
        )
        .await;
        return Ok(Action::await_change());
    }
    remove_artifacts(ctx, backup, status, &repo).await
}

/// Runs the delete Job for `backup`'s artifacts in `repo` and waits for it; done (`Ok`) once it
/// succeeded, or once the namespace is going (nothing can run there any more).
async fn remove_artifacts(
    ctx: &Context,
    backup: &Backup,
    mut status: BackupStatus,
    repo: &BackupRepository,
) -> Result<Action, Error> {
    let namespace = backup.namespace().unwrap_or_default();
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let job_name = naming::delete_job(&backup.name_any());
    let removing = || Err(not_yet(30, "the artifacts are being removed"));
    let Some(job) = jobs_api.get_opt(&job_name).await? else {
        if let Some(why) = crate::secrets::refusal(ctx, repo).await? {
            return deletion_blocked(ctx, backup, &mut status, why).await;
        }
        let job = jobs::delete_job(backup, repo, &ctx.mover);
        return match crate::create_once(&jobs_api, &job).await {
            Ok(_) => removing(),
            // The whole namespace is going, repository volume included: nothing can run there
            // any more, so holding the Backup would only hold the namespace.
            Err(Error::Kube(kube::Error::Api(s)))
                if s.code == 403 && s.message.contains("being terminated") =>
            {
                tracing::warn!(
                    backup = %backup.name_any(),
                    %namespace,
                    "namespace is being deleted: artifacts left in repository {:?}",
                    repo.name_any()
                );
                Ok(Action::await_change())
            }
            Err(e) => Err(e),
        };
    };
    if !owned_by(&job, backup) {
        return deletion_blocked(ctx, backup, &mut status, job_name_taken(&job_name)).await;
    }
    match crate::outcome::finished(&job) {
        None => removing(),
        Some(true) => {
            let _ = crate::delete_if_present(&jobs_api, &job_name).await;
            tracing::info!(backup = %backup.name_any(), "artifacts removed");
            Ok(Action::await_change())
        }
        Some(false) => {
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
            let detail = termination_message(&pods, &job)
                .await?
                .and_then(|m| serde_json::from_str::<Failure>(&m).ok())
                .map(|f| f.error)
                .unwrap_or_else(|| "the delete Job failed without a message".into());
            let _ = crate::delete_if_present(&jobs_api, &job_name).await;
            let why = Invalid::new(
                "ArtifactsNotRemoved",
                format!("removing the artifacts failed, retrying: {detail}"),
            );
            deletion_blocked(ctx, backup, &mut status, why).await
        }
    }
}

/// The mover settings of a Job for a backup of the policy `policy` (its backup, or a restore of
/// it): the operator's, with the policy's resources when it exists and sets them (a volume that
/// needed more memory to back up needs it to restore).
pub(crate) async fn mover_config(
    ctx: &Context,
    namespace: &str,
    policy: Option<&str>,
) -> Result<jobs::MoverConfig, Error> {
    let policy = match policy {
        Some(name) => ctx.policy(namespace, name).await?,
        None => None,
    };
    Ok(mover_config_of(ctx, policy.as_deref()))
}

/// The mover settings for the Backups of `policy`: the operator's, with the policy's resources.
pub(crate) fn mover_config_of(ctx: &Context, policy: Option<&BackupPolicy>) -> jobs::MoverConfig {
    let resources = policy.and_then(|p| p.spec.mover_resources.as_ref());
    ctx.mover.with_resources(resources)
}

/// Whether `namespace` is being deleted.
async fn namespace_terminating(ctx: &Context, namespace: &str) -> Result<bool, Error> {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ctx.client.clone());
    Ok(namespaces
        .get_opt(namespace)
        .await?
        .is_none_or(|n| n.metadata.deletion_timestamp.is_some()))
}

/// Whether pods of this backup's mover Jobs still exist (deleting a Job leaves its pods to the
/// garbage collector for a while).
async fn mover_pods_remain(ctx: &Context, backup: &Backup) -> Result<bool, Error> {
    let pods: Api<Pod> =
        Api::namespaced(ctx.client.clone(), &backup.namespace().unwrap_or_default());
    let selector = format!(
        "{}={},{}={ROLE_BACKUP}",
        labels::BACKUP,
        naming::label_value(&backup.name_any()),
        labels::ROLE
    );
    let list = pods.list(&crate::cached().labels(&selector)).await?;
    Ok(list.items.iter().any(|p| {
        !matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded") | Some("Failed")
        )
    }))
}

async fn deletion_blocked(
    ctx: &Context,
    backup: &Backup,
    status: &mut BackupStatus,
    why: Invalid,
) -> Result<Action, Error> {
    condition::set(
        &mut status.conditions,
        ConditionType::Deleting,
        false,
        &why.reason,
        &why.message,
        backup.meta().generation,
        now(),
    );
    crate::patch_status(&ctx.client, backup, status, &[]).await?;
    events::warning(&ctx.recorder, backup, &why.reason, why.message.clone()).await;
    Err(not_yet(30, why.message))
}

/// How often the Job copy is looked through for Jobs of finished Backups (`sweep_finished_jobs`).
const SWEEP_EVERY: Duration = Duration::from_secs(120);

/// Deletes the mover Jobs (backup and verification) of Backups that finished. `finish` deletes
/// them once the status is written, but a finished Backup leaves the watched copy (see
/// `history`): a deletion that failed there, or an operator stopped in between, is not retried by
/// a reconcile. This looks through the Job copy, in memory, and asks the API server only about a
/// Job whose Backup is not at work.
async fn sweep_finished_jobs(ctx: &Context) -> Result<usize, Error> {
    // Each Backup once, however many volumes (Jobs) it has: (namespace, name, uid).
    let mut owners: Vec<(String, String, String)> = ctx
        .stores
        .jobs
        .state()
        .iter()
        .filter(|job| {
            let role = job.labels().get(labels::ROLE).map(String::as_str);
            // A verification's record is left to finish: it is its own last step.
            role == Some(ROLE_BACKUP)
                || role == Some(ROLE_VERIFY)
                || (role == Some(ROLE_RECORD) && crate::outcome::finished(job).is_some())
        })
        .filter_map(|job| {
            let owner = job
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true) && o.kind == "Backup")?;
            Some((
                job.namespace().unwrap_or_default(),
                owner.name.clone(),
                owner.uid.clone(),
            ))
        })
        .filter(|(namespace, name, _)| {
            let at_work = ObjectRef::new(name).within(namespace);
            ctx.stores.backups.store.get(&at_work).is_none()
        })
        .collect();
    owners.sort();
    owners.dedup();
    let mut swept = 0;
    for (namespace, name, uid) in owners {
        let backups: Api<Backup> = Api::namespaced(ctx.client.clone(), &namespace);
        let Some(backup) = backups.get_opt(&name).await? else {
            continue; // gone: the garbage collector removes what it owned
        };
        if backup.meta().uid.as_deref() == Some(uid.as_str()) && !backup.cached() {
            delete_jobs(ctx, &backup, &[ROLE_BACKUP, ROLE_VERIFY, ROLE_RECORD]).await?;
            swept += 1;
        }
    }
    Ok(swept)
}

/// Wakes every Backup of the changed object's namespace that waits to start.
fn waiting_in_namespace<K: Resource>(
    ctx: &Arc<Context>,
) -> impl Fn(Arc<K>) -> Vec<ObjectRef<Backup>> + Send + Sync + 'static {
    let ctx = ctx.clone();
    move |changed| {
        let namespace = changed.namespace().unwrap_or_default();
        ctx.stores.waiting_backups(&namespace, None)
    }
}

fn error_policy(_: Arc<Backup>, err: &Error, ctx: Arc<Context>) -> Action {
    crate::retry_after_error(&ctx, "backup", err)
}

pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let jobs =
        watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER));
    let stores = &ctx.stores;
    let controller = stores
        .backups
        .controller(&client, crate::controller_config())
        .owns(stores.scope.api::<Job>(&client), jobs);
    // Pending Backups wait for policies, repositories and PVCs of their namespace.
    let woken = ctx.clone();
    let controller = stores
        .policies
        .wakes(&client, controller, move |p: Arc<BackupPolicy>| {
            let namespace = p.namespace().unwrap_or_default();
            woken
                .stores
                .waiting_backups(&namespace, Some(&p.name_any()))
        });
    let controller = stores
        .repositories
        .wakes(&client, controller, waiting_in_namespace(&ctx));
    let controller = stores
        .claims
        .wakes(&client, controller, waiting_in_namespace(&ctx));
    let swept = ctx.clone();
    let sweeper = tokio::spawn(async move {
        loop {
            match sweep_finished_jobs(&swept).await {
                Ok(0) => {}
                Ok(n) => tracing::info!("deleted the Jobs of {n} finished Backup(s)"),
                Err(err) => tracing::warn!(%err, "looking for Jobs of finished Backups"),
            }
            tokio::time::sleep(SWEEP_EVERY).await;
        }
    });
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
    sweeper.abort();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, at};
    use backstop_api::contract::BackupResult;

    fn backup() -> Backup {
        let policy = fixtures::policy("nightly", "0 2 * * *", None);
        fixtures::scheduled(&policy, "02:00", BackupPhase::Running)
            .as_ref()
            .clone()
    }

    fn claim(name: &str, size: &str, class: &str) -> PersistentVolumeClaim {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": fixtures::NAMESPACE},
            "spec": {"storageClassName": class, "resources": {"requests": {"storage": size}}}
        }))
        .unwrap()
    }

    fn result(pvc: &str, changed: u64) -> BackupResult {
        BackupResult {
            pvc: pvc.into(),
            artifact: format!("shop/b/{pvc}.tar.zst"),
            bytes: 2048,
            digest: "b3".into(),
            files: 7,
            source_bytes: 8192,
            changed_while_reading: changed,
            changed_files: vec!["log".to_string()],
            restic: None,
        }
    }

    #[test]
    fn a_started_backup_lists_each_volume_pending_with_its_job_size_and_class() {
        let backup = backup();
        let pvcs = [claim("db", "5Gi", "fast"), claim("logs", "1Gi", "slow")];
        let status = running(
            &backup,
            BackupStatus::default(),
            &pvcs,
            "default",
            at("02:00"),
        );
        assert_eq!(status.phase, BackupPhase::Running);
        assert_eq!(status.repository.as_deref(), Some("default"));
        assert_eq!(status.start_time, Some(Time(at("02:00"))));
        let db = &status.volumes[0];
        assert_eq!(db.phase, BackupPhase::Pending);
        assert_eq!(db.job, Some(naming::backup_job(&backup.name_any(), "db")));
        assert_eq!(db.capacity.as_deref(), Some("5Gi"));
        assert_eq!(db.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(status.volumes[1].pvc, "logs");
        let completed = condition::find(&status.conditions, ConditionType::Completed).unwrap();
        assert_eq!(
            (completed.status.as_str(), completed.reason.as_str()),
            ("False", "Running")
        );
    }

    #[test]
    fn each_step_is_recorded_in_the_volumes_entry() {
        let mut volume = VolumeBackup {
            pvc: "db".into(),
            phase: BackupPhase::Pending,
            ..VolumeBackup::default()
        };
        assert!(record(&mut volume, Step::Running, at("02:00")));
        assert_eq!(volume.phase, BackupPhase::Running);
        assert!(
            !record(&mut volume, Step::Running, at("02:00")),
            "no change, no write"
        );
        assert!(record(
            &mut volume,
            Step::Done(result("db", 0)),
            at("02:00")
        ));
        assert_eq!(volume.phase, BackupPhase::Completed);
        assert_eq!(
            (volume.bytes, volume.files, volume.source_bytes),
            (Some(2048), Some(7), Some(8192))
        );
        assert_eq!(volume.changed_while_reading, None, "zero is not recorded");
        let mut snapped = VolumeBackup {
            pvc: "db".into(),
            snapshot: Some(backstop_api::SnapshotRecord {
                ready_time: Some(at("02:00")),
                ..Default::default()
            }),
            ..VolumeBackup::default()
        };
        record(&mut snapped, Step::Done(result("db", 0)), at("02:05"));
        assert_eq!(
            snapped.snapshot.and_then(|s| s.move_seconds),
            Some(300.0),
            "from the snapshot being ready to the data being in the repository"
        );
        let mut failed = VolumeBackup::default();
        record(
            &mut failed,
            Step::Failed(Invalid::new("SourceUnreadable", "EIO on a")),
            at("02:00"),
        );
        assert_eq!(failed.phase, BackupPhase::Failed);
        assert_eq!(failed.reason.as_deref(), Some("SourceUnreadable"));
        assert_eq!(
            failed.message.as_deref(),
            Some("SourceUnreadable: EIO on a")
        );
    }

    fn finished_volumes(steps: Vec<(&str, Step)>) -> BackupStatus {
        let mut status = BackupStatus {
            start_time: Some(Time(at("02:00"))),
            ..BackupStatus::default()
        };
        for (pvc, step) in steps {
            let mut volume = VolumeBackup {
                pvc: pvc.into(),
                ..VolumeBackup::default()
            };
            record(&mut volume, step, at("02:05"));
            status.volumes.push(volume);
        }
        status
    }

    #[test]
    fn a_backup_completes_when_every_volume_did_with_totals() {
        let status = finished_volumes(vec![
            ("db", Step::Done(result("db", 0))),
            ("logs", Step::Done(result("logs", 0))),
        ]);
        let end = ending(&backup(), status, at("02:03"));
        assert!(end.completed);
        assert_eq!(end.status.phase, BackupPhase::Completed);
        assert_eq!(end.status.total_bytes, Some(4096));
        assert_eq!(end.status.total_files, Some(14));
        assert_eq!(end.status.duration.as_deref(), Some("180s"));
        assert_eq!(end.seconds, 180.0);
        assert_eq!(end.changed_while_reading, None);
        let consistent =
            condition::find(&end.status.conditions, ConditionType::Consistent).unwrap();
        assert_eq!(consistent.status, "True");
        assert!(
            end.message
                .starts_with("Backed up 2 volumes (4.0 KiB, 14 files)"),
            "{}",
            end.message
        );
    }

    #[test]
    fn a_command_backup_ends_saying_what_it_stored_and_why_it_failed() {
        let backup = backup();
        let mut status = finished_volumes(vec![("dump", Step::Done(result("dump", 0)))]);
        status.volumes[0].stream = true;
        status.volumes[0].source_bytes = Some(10 << 20);
        let end = ending(&backup, status.clone(), at("02:09"));
        assert!(end.completed);
        assert!(
            end.message
                .starts_with("Stored the command's output as stream \"dump\" ("),
            "{}",
            end.message
        );
        assert!(
            end.message.contains("10.0 MiB before compression"),
            "{}",
            end.message
        );
        let consistent =
            condition::find(&end.status.conditions, ConditionType::Consistent).unwrap();
        assert_eq!(consistent.reason, "CommandOutput");
        status.volumes[0].phase = BackupPhase::Failed;
        status.volumes[0].reason = Some("CommandFailed".into());
        status.volumes[0].message = Some("the command exited with status 1".into());
        let failed = ending(&backup, status, at("02:09"));
        assert_eq!(
            failed.message,
            "stream dump: the command exited with status 1"
        );
    }

    #[test]
    fn a_volume_that_changed_while_read_is_never_a_silent_completed() {
        let status = finished_volumes(vec![("db", Step::Done(result("db", 3)))]);
        let end = ending(&backup(), status, at("02:01"));
        assert!(end.completed);
        let consistent =
            condition::find(&end.status.conditions, ConditionType::Consistent).unwrap();
        assert_eq!(
            (consistent.status.as_str(), consistent.reason.as_str()),
            ("False", "ChangedWhileReading")
        );
        assert!(
            end.changed_while_reading
                .as_deref()
                .unwrap()
                .contains("log and 2 more")
        );
        assert!(
            end.message.contains("3 changed while read"),
            "{}",
            end.message
        );
    }

    #[test]
    fn one_failed_volume_fails_the_backup_with_its_reason() {
        let status = finished_volumes(vec![
            ("db", Step::Done(result("db", 0))),
            (
                "logs",
                Step::Failed(Invalid::new("RepositoryFull", "no space")),
            ),
        ]);
        let end = ending(&backup(), status, at("02:01"));
        assert!(!end.completed);
        assert_eq!(end.status.phase, BackupPhase::Failed);
        let completed = condition::find(&end.status.conditions, ConditionType::Completed).unwrap();
        assert_eq!(
            (completed.status.as_str(), completed.reason.as_str()),
            ("False", "RepositoryFull")
        );
        assert_eq!(end.message, "PVC logs: RepositoryFull: no space");
    }

    /// Jobs are deleted once the Backup finished; their deletion wakes a reconcile that may still
    /// see the Backup Running. It must not start the volume's mover again (a second backup into
    /// the finished one's keys): it waits for the cache.
    #[tokio::test]
    async fn a_finished_backup_seen_from_an_old_cache_starts_no_mover_again() {
        let (ctx, mut api) = fixtures::mocked();
        let mut stale = backup();
        stale.metadata.resource_version = Some("7".into());
        let job = naming::backup_job(&stale.name_any(), "db");
        stale.status.as_mut().unwrap().volumes = vec![VolumeBackup {
            pvc: "db".into(),
            phase: BackupPhase::Running,
            job: Some(job.clone()),
            ..VolumeBackup::default()
        }];
        let mut latest = stale.clone();
        latest.metadata.resource_version = Some("8".into());
        latest.status.as_mut().unwrap().phase = BackupPhase::Completed;
        let name = stale.name_any();
        let server = tokio::spawn(async move {
            let jobs = format!("/apis/batch/v1/namespaces/shop/jobs/{job}");
            api.expect("GET", &jobs, 404, fixtures::not_found()).await;
            let backup = format!("/apis/backstop.dev/v1alpha1/namespaces/shop/backups/{name}");
            api.expect("GET", &backup, 200, serde_json::to_value(&latest).unwrap())
                .await;
            api
        });
        let mut volume = VolumeBackup {
            pvc: "db".into(),
            ..VolumeBackup::default()
        };
        let waited = step(
            &ctx,
            &stale,
            &mut volume,
            &naming::backup_job(&stale.name_any(), "db"),
            None,
            Source {
                snapshots: None,
                command: None,
                record: &Default::default(),
            },
        )
        .await
        .err();
        assert!(matches!(waited, Some(Error::NotYet { .. })), "{waited:?}");
        let api = server.await.unwrap();
        drop(ctx);
        assert!(api.idle().await, "no Job was created, no status written");
    }

    /// While a scheduled run is due and not made, a Backup reconcile asks nothing of the API
    /// server and looks again shortly; once it is made, the same reconcile goes ahead.
    #[tokio::test]
    async fn a_backup_waits_while_scheduled_runs_are_due() {
        let (ctx, mut api) = fixtures::mocked();
        let ctx = Arc::new(ctx);
        let mut pending = backup();
        pending.status = None;
        let pending = Arc::new(pending);
        let due = ("shop".to_string(), "other".to_string());
        ctx.due_runs.planned(due.clone(), Some(crate::now()));
        let action = reconcile(pending.clone(), ctx.clone()).await.ok();
        assert_eq!(action, Some(Action::requeue(crate::due::WAIT)));

        ctx.due_runs
            .planned(due, Some(crate::now() + jiff::SignedDuration::from_mins(1)));
        let server = tokio::spawn(async move {
            let asked = api.answer_raw(500, "{}").await;
            (api, asked)
        });
        assert!(reconcile(pending, ctx.clone()).await.is_err());
        let (api, asked) = server.await.unwrap();
        assert!(asked.contains("/backups"), "{asked}");
        drop(ctx);
        assert!(api.idle().await);
    }

    /// The Job of `backup` for `pvc` as the operator makes them: labelled with its role,
    /// controlled by it.
    fn mover_job(backup: &Backup, pvc: &str) -> Job {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{}-{pvc}", backup.name_any()), "namespace": fixtures::NAMESPACE,
                "labels": {labels::ROLE: ROLE_BACKUP, labels::BACKUP: backup.name_any()},
                "ownerReferences": [{"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup",
                    "name": backup.name_any(), "uid": backup.meta().uid, "controller": true}]}}))
        .unwrap()
    }

    fn with_uid(mut backup: Backup, uid: &str) -> Backup {
        backup.metadata.uid = Some(uid.into());
        backup
    }

    /// A finished Backup whose Jobs are left (their deletion failed, or the operator stopped
    /// before it): the sweep finds them in the Job copy, asks the API server about the Backup
    /// once, and deletes them. A Backup still at work, in the copy, costs no request.
    #[tokio::test]
    async fn the_jobs_of_a_finished_backup_are_swept_and_those_at_work_left_alone() {
        let finished = with_uid(
            fixtures::backup("done", "nightly", BackupPhase::Completed),
            "u1",
        );
        let at_work = with_uid(
            fixtures::backup("busy", "nightly", BackupPhase::Running),
            "u2",
        );
        let (mut ctx, mut api) = fixtures::mocked();
        ctx.stores = crate::stores::Stores::holding(
            vec![
                mover_job(&finished, "db"),
                mover_job(&finished, "logs"),
                mover_job(&at_work, "db"),
            ],
            vec![at_work.clone()],
        );
        let left = [mover_job(&finished, "db"), mover_job(&finished, "logs")];
        let server = tokio::spawn(async move {
            let backups = "/apis/backstop.dev/v1alpha1/namespaces/shop/backups";
            api.expect(
                "GET",
                &format!("{backups}/done"),
                200,
                serde_json::to_value(&finished).unwrap(),
            )
            .await;
            let jobs = "/apis/batch/v1/namespaces/shop/jobs";
            let list = serde_json::json!({"apiVersion": "batch/v1", "kind": "JobList",
                "metadata": {}, "items": left});
            api.expect("GET", jobs, 200, list).await;
            for pvc in ["db", "logs"] {
                let path = format!("{jobs}/done-{pvc}");
                api.expect("DELETE", &path, 200, serde_json::json!({}))
                    .await;
            }
            api
        });
        assert_eq!(sweep_finished_jobs(&ctx).await.unwrap(), 1);
        let api = server.await.unwrap();
        drop(ctx);
        assert!(api.idle().await, "nothing asked about the Backup at work");
    }

    /// The same left Job while the API server says its Backup is still running (the copy is
    /// behind): nothing is deleted.
    #[tokio::test]
    async fn a_job_of_a_backup_still_running_is_not_swept() {
        let running = with_uid(
            fixtures::backup("late", "nightly", BackupPhase::Running),
            "u3",
        );
        let (mut ctx, mut api) = fixtures::mocked();
        ctx.stores = crate::stores::Stores::holding(vec![mover_job(&running, "db")], vec![]);
        let server = tokio::spawn(async move {
            let path = "/apis/backstop.dev/v1alpha1/namespaces/shop/backups/late";
            api.expect("GET", path, 200, serde_json::to_value(&running).unwrap())
                .await;
            api
        });
        assert_eq!(sweep_finished_jobs(&ctx).await.unwrap(), 0);
        let api = server.await.unwrap();
        drop(ctx);
        assert!(api.idle().await, "no Job deleted");
    }
}
