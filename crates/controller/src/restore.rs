//! Restore reconciler: validates everything it can before any Job exists (backup Completed,
//! volume in it, repository usable, target not in use), creates the target PVC when absent, runs
//! one mover Job that stages, verifies and commits, and records the outcome. A refusal that
//! resolves itself (the Backup still running, the repository not ready yet, the target binding)
//! keeps the Restore Pending until its start deadline, woken by the watches of what it waits
//! for; any other refusal is a Failed Restore with a reason and a Warning event.

use crate::jobs::{self, ROLE_RESTORE, RestoreJob};
use crate::outcome::{owned_by, termination_message};
use crate::{Context, Error, events, metrics, now, repository, waiting};
use backstop_api::condition::{self, ConditionType, Invalid};
use backstop_api::contract::{self, Reason, RestoreResult};
use backstop_api::restore::source_volume;
use backstop_api::strategy::CommandContainer;
use backstop_api::waiting::{Refusal, Verdict, WaitingFor};
use backstop_api::{
    Backup, BackupPhase, BackupPolicy, BackupRepository, BackupSpec, Restore, RestoreStatus,
    labels, naming,
};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Everything a restore Job needs, once validation passed.
struct Plan {
    source_pvc: String,
    manifest: String,
    /// The artifact digest recorded when the backup completed.
    artifact_digest: Option<String>,
    /// The volume's restic snapshot, when the backup is in the restic format.
    restic_snapshot: Option<String>,
    repository: Arc<BackupRepository>,
    /// The policy that made the backup: its mover resources are the restore's too.
    policy: Option<String>,
    /// For a command backup's stream: the command that reads it.
    command: Option<CommandContainer>,
    /// No device nodes, no set-id bits: the Restore says so, or the backup was imported.
    untrusted: bool,
    /// The stored artifact's size recorded when the backup completed.
    artifact_bytes: Option<u64>,
}

async fn reconcile(restore: Arc<Restore>, ctx: Arc<Context>) -> Result<Action, Error> {
    let mut status = restore.status.clone().unwrap_or_default();
    status.observed_generation = restore.meta().generation;
    match status.phase {
        BackupPhase::Completed | BackupPhase::Failed => {
            if ctx.stores.has_jobs_of(restore.as_ref()) {
                delete_jobs(&ctx, &restore).await?;
            }
            Ok(Action::await_change())
        }
        BackupPhase::Pending => start(&ctx, &restore, status).await,
        BackupPhase::Running => progress(&ctx, &restore, status).await,
    }
}

async fn validate(ctx: &Context, restore: &Restore) -> Result<Result<Plan, Refusal>, Error> {
    if let Err(invalid) =
        backstop_api::waiting::validate_deadline(restore.spec.starting_deadline_seconds)
    {
        return Ok(Err(invalid.into()));
    }
    let namespace = restore.namespace().unwrap_or_default();
    if let Some(refused) = crate::admission::check(ctx, &namespace).await? {
        return Ok(Err(refused.into()));
    }
    let backups: Api<Backup> = Api::namespaced(ctx.client.clone(), &namespace);
    let name = &restore.spec.backup_name;
    let backup = match restorable(&namespace, name, backups.get_opt(name).await?) {
        Ok(backup) => backup,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let imported = crate::backup::imported(&backup);
    let status = backup.status.clone().unwrap_or_default();
    let volumes: Vec<String> = status
        .volumes
        .iter()
        .filter(|v| v.phase == BackupPhase::Completed)
        .map(|v| v.pvc.clone())
        .collect();
    let source_pvc = match source_volume(restore.spec.source_pvc.as_deref(), &volumes) {
        Ok(s) => s,
        Err(invalid) => return Ok(Err(invalid.into())),
    };
    let repo_name = status.repository.clone().unwrap_or_default();
    let repository = match usable_repository(ctx, restore, &repo_name).await? {
        Ok(repository) => repository,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let manifest = contract::manifest_key(&contract::backup_dir(&namespace, name), &source_pvc);
    let source = status.volumes.iter().find(|v| v.pvc == source_pvc);
    let artifact_digest = source.and_then(|v| v.digest.clone());
    let restic_snapshot = source.and_then(|v| v.restic.as_ref().map(|r| r.id.clone()));
    let stream = source.is_some_and(|v| v.stream);
    let policy = match &backup.spec.policy_ref {
        Some(name) => ctx.policy(&namespace, name).await?,
        None => None,
    };
    let command = match restore_command(restore, stream, policy.as_deref(), &backup.spec) {
        Ok(command) => command,
        Err(invalid) => return Ok(Err(invalid.into())),
    };
    if let Some(command) = &command {
        let field = command_field(restore);
        if let Some(refusal) =
            crate::secrets::command_refusal(ctx, &namespace, command, field).await?
        {
            return Ok(Err(refusal));
        }
    }
    Ok(Ok(Plan {
        source_pvc,
        manifest,
        artifact_digest,
        restic_snapshot,
        repository,
        policy: backup.spec.policy_ref.clone(),
        command,
        untrusted: restore.spec.untrusted.unwrap_or(imported),
        artifact_bytes: source
            .and_then(|v| v.bytes)
            .and_then(|b| u64::try_from(b).ok()),
    }))
}

/// The command a stream is restored with: the Restore's own, else the live policy's, else the
/// one in the Backup's own spec (a hand-made command backup). A volume has none (and needs a
/// target). The strategy in the Backup's status is never run: an imported Backup's comes from a
/// record in the repository, which whoever can write there could have planted.
fn restore_command(
    restore: &Restore,
    stream: bool,
    policy: Option<&BackupPolicy>,
    own: &BackupSpec,
) -> Result<Option<CommandContainer>, Invalid> {
    let backup = &restore.spec.backup_name;
    if !stream {
        if restore.spec.command.is_some() {
            return Err(Invalid::new(
                "InvalidSpec",
                format!(
                    "spec.command restores a command backup's stream, and Backup {backup:?} holds volumes: remove it"
                ),
            ));
        }
        if restore.spec.target.pvc_name.trim().is_empty() {
            return Err(Invalid::new(
                "InvalidSpec",
                "spec.target.pvcName is empty: name the PVC to restore into",
            ));
        }
        return Ok(None);
    }
    let policy_command = policy
        .and_then(|p| p.spec.strategy.as_ref())
        .and_then(|s| s.command.as_ref())
        .and_then(|c| c.restore.clone());
    let command = restore
        .spec
        .command
        .clone()
        .or(policy_command)
        .or_else(|| {
            let command = own.strategy.as_ref().and_then(|s| s.command.as_ref());
            command.and_then(|c| c.restore.clone())
        })
        .ok_or_else(|| {
            Invalid::new(
                "NoRestoreCommand",
                format!(
                    "Backup {backup:?} holds a command's stream: give the command that reads it on its standard input, in the Restore's spec.command or the policy's strategy.command.restore (a command recorded in the repository is never run)"
                ),
            )
        })?;
    command.validate(command_field(restore))?;
    Ok(Some(command))
}

/// Where the command a stream restore runs was written.
fn command_field(restore: &Restore) -> &'static str {
    if restore.spec.command.is_some() {
        "spec.command"
    } else {
        "strategy.command.restore"
    }
}

/// The Backup `name` if it can be restored: it exists, is not being deleted and is Completed.
/// One still running is waited for; a Failed one never will be.
fn restorable(namespace: &str, name: &str, backup: Option<Backup>) -> Result<Backup, Refusal> {
    let Some(backup) = backup else {
        return Err(Refusal::wait(
            WaitingFor::Backup,
            "BackupNotFound",
            format!("Backup {name:?} not found in namespace {namespace:?}"),
        ));
    };
    // Delete events reach no follower of a watch: the deletion's start is the last word.
    if backup.metadata.deletion_timestamp.is_some() {
        let why = Invalid::new("BackupDeleted", format!("Backup {name:?} is being deleted"));
        return Err(why.into());
    }
    let not_completed = format!(
        "Backup {name:?} is {}; only a Completed backup can be restored",
        backup.phase().as_str()
    );
    match backup.phase() {
        BackupPhase::Completed => Ok(backup),
        BackupPhase::Failed => Err(Invalid::new("BackupNotCompleted", not_completed).into()),
        BackupPhase::Pending | BackupPhase::Running => Err(Refusal::wait(
            WaitingFor::BackupToFinish,
            "BackupNotCompleted",
            not_completed,
        )),
    }
}

/// The Backup's repository `repo_name`, if it can be read from now: it exists, is not the
/// restore's target, its Secrets are opted in, and it is ready.
async fn usable_repository(
    ctx: &Context,
    restore: &Restore,
    repo_name: &str,
) -> Result<Result<Arc<BackupRepository>, Refusal>, Error> {
    let namespace = restore.namespace().unwrap_or_default();
    let Some(repository) = ctx.repository(&namespace, repo_name).await? else {
        return Ok(Err(Refusal::wait(
            WaitingFor::Repository,
            "RepositoryNotFound",
            format!(
                "BackupRepository {repo_name:?} of Backup {:?} not found",
                restore.spec.backup_name
            ),
        )));
    };
    // Overwrite would wipe every backup in it (other namespaces' too, on a shared volume).
    if repository.spec.pvc.as_ref().map(|p| p.claim_name.as_str())
        == Some(restore.spec.target.pvc_name.as_str())
    {
        return Ok(Err(Invalid::new(
            "TargetIsRepository",
            format!(
                "target PVC {:?} holds repository {repo_name:?}: restore into another PVC",
                restore.spec.target.pvc_name
            ),
        )
        .into()));
    }
    if let Some(why) = crate::secrets::refusal(ctx, &repository).await? {
        return Ok(Err(Refusal::Wait {
            on: WaitingFor::Repository,
            why,
        }));
    }
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
    Ok(Ok(repository))
}

/// The target PVC, created like the source (or as the spec says) when absent, and bound (or
/// about to be bound by the restore's mover pod).
async fn ensure_target(
    ctx: &Context,
    restore: &Restore,
    plan: &Plan,
) -> Result<Result<(), Refusal>, Error> {
    let namespace = restore.namespace().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    let target = &restore.spec.target;
    if let Some(existing) = claims.get_opt(&target.pvc_name).await? {
        if existing.metadata.deletion_timestamp.is_some() {
            return Ok(Err(Refusal::wait(
                WaitingFor::Volume,
                "TargetNotReady",
                format!("target PVC {:?} is being deleted", target.pvc_name),
            )));
        }
        return waiting::bound(ctx, &existing).await;
    }
    let backups: Api<Backup> = Api::namespaced(ctx.client.clone(), &namespace);
    let source = backups
        .get(&restore.spec.backup_name)
        .await?
        .status
        .unwrap_or_default()
        .volumes
        .into_iter()
        .find(|v| v.pvc == plan.source_pvc)
        .unwrap_or_default();
    let Some(size) = target.size.clone().or(source.capacity) else {
        return Ok(Err(Invalid::new(
            "TargetSizeUnknown",
            format!(
                "target PVC {:?} does not exist and the backup does not record the source's size: set spec.target.size",
                target.pvc_name
            ),
        )
        .into()));
    };
    let class = target
        .storage_class_name
        .clone()
        .or(source.storage_class_name);
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {
            "name": target.pvc_name,
            "namespace": namespace,
            "labels": {labels::MANAGED_BY: labels::MANAGER, labels::RESTORE: naming::label_value(&restore.name_any())},
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": class,
            "resources": {"requests": {"storage": size}},
        }
    }))?;
    let created = match claims.create(&PostParams::default(), &pvc).await {
        Ok(created) => {
            events::normal(
                &ctx.recorder,
                restore,
                "TargetCreated",
                format!("Created PVC {:?} ({size}) to restore into", target.pvc_name),
            )
            .await;
            created
        }
        Err(kube::Error::Api(s)) if s.code == 409 => pvc,
        Err(e) => return Err(e.into()),
    };
    waiting::bound(ctx, &created).await
}

/// Running pods in the namespace that mount `pvc`, other than the restore's own mover (a restart
/// between creating its Job and recording it finds that pod running).
async fn node_and_users(
    ctx: &Context,
    namespace: &str,
    pvc: &str,
    own_job: &str,
) -> Result<(Option<String>, Vec<String>), Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let running = pods
        .list(&crate::cached().fields("status.phase=Running"))
        .await?;
    let users = running
        .items
        .iter()
        .filter(|p| !jobs::runs_for_job(p, own_job))
        .filter(|p| jobs::node_using(std::slice::from_ref(*p), pvc).is_some())
        .map(|p| p.name_any())
        .collect();
    Ok((jobs::node_using(&running.items, pvc), users))
}

async fn start(ctx: &Context, restore: &Restore, status: RestoreStatus) -> Result<Action, Error> {
    ctx.metrics
        .restore_series(&restore.namespace().unwrap_or_default());
    let plan = match validate(ctx, restore).await? {
        Ok(plan) => plan,
        Err(refusal) => return refused(ctx, restore, status, refusal).await,
    };
    let namespace = restore.namespace().unwrap_or_default();
    if let Some(command) = &plan.command {
        return start_stream(ctx, restore, status, &plan, command).await;
    }
    let target = &restore.spec.target.pvc_name;
    let own_job = status
        .job
        .clone()
        .unwrap_or_else(|| naming::restore_job(&restore.name_any()));
    let (node, users) = node_and_users(ctx, &namespace, target, &own_job).await?;
    if !users.is_empty() && !restore.spec.allow_in_use {
        let why = Invalid::new(
            "TargetInUse",
            format!(
                "target PVC {target:?} is mounted by running pod(s) {}: stop them, or set spec.allowInUse: true",
                users.join(", ")
            ),
        );
        return fail(ctx, restore, status, why).await;
    }
    if let Err(refusal) = ensure_target(ctx, restore, &plan).await? {
        return refused(ctx, restore, status, refusal).await;
    }
    let job = jobs::restore_job(
        restore,
        RestoreJob {
            repository: &plan.repository,
            restic_snapshot: plan.restic_snapshot.as_deref(),
            manifest: plan.manifest.clone(),
            artifact_digest: plan.artifact_digest.as_deref(),
            target_pvc: target,
            policy: restore.spec.existing_data_policy,
            untrusted: plan.untrusted,
            node: node.as_deref(),
        },
        &crate::backup::mover_config(ctx, &namespace, plan.policy.as_deref()).await?,
    );
    let message = format!(
        "Restoring volume {:?} of Backup {:?} into PVC {target:?} ({})",
        plan.source_pvc,
        restore.spec.backup_name,
        restore.spec.existing_data_policy.as_str()
    );
    running(ctx, restore, status, &plan, &job, message).await
}

/// Starts the restore of a command backup's stream: no target PVC; the restore command decides
/// what becomes of the data already there.
async fn start_stream(
    ctx: &Context,
    restore: &Restore,
    status: RestoreStatus,
    plan: &Plan,
    command: &CommandContainer,
) -> Result<Action, Error> {
    let namespace = restore.namespace().unwrap_or_default();
    let job = jobs::load_job(
        restore,
        jobs::LoadJob {
            repository: &plan.repository,
            manifest: plan.manifest.clone(),
            artifact_digest: plan.artifact_digest.as_deref(),
            stream: &plan.source_pvc,
            command,
            artifact_bytes: plan.artifact_bytes,
        },
        &crate::backup::mover_config(ctx, &namespace, plan.policy.as_deref()).await?,
    );
    let message = format!(
        "Feeding stream {:?} of Backup {:?} to the restore command {:?} (image {}) once its digests are verified; existingDataPolicy does not apply: the command decides what happens to the data already there",
        plan.source_pvc,
        restore.spec.backup_name,
        command.command.join(" "),
        command.image
    );
    running(ctx, restore, status, plan, &job, message).await
}

/// Creates the restore's Job and records the restore as Running.
async fn running(
    ctx: &Context,
    restore: &Restore,
    mut status: RestoreStatus,
    plan: &Plan,
    job: &Job,
    message: String,
) -> Result<Action, Error> {
    let namespace = restore.namespace().unwrap_or_default();
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    crate::create_once(&jobs_api, job).await?;
    status.phase = BackupPhase::Running;
    status.start_time = Some(Time(now()));
    status.source_pvc = Some(plan.source_pvc.clone());
    status.job = job.metadata.name.clone();
    let generation = restore.meta().generation;
    let conditions = &mut status.conditions;
    condition::set(
        conditions,
        ConditionType::Completed,
        false,
        "Running",
        "restore is running",
        generation,
        now(),
    );
    crate::patch_status(&ctx.client, restore, &status, &[]).await?;
    events::normal(&ctx.recorder, restore, "RestoreStarted", message).await;
    Ok(Action::requeue(Duration::from_secs(60)))
}

async fn progress(
    ctx: &Context,
    restore: &Restore,
    mut status: RestoreStatus,
) -> Result<Action, Error> {
    let namespace = restore.namespace().unwrap_or_default();
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let job_name = status
        .job
        .clone()
        .unwrap_or_else(|| naming::restore_job(&restore.name_any()));
    let Some(job) = jobs_api.get_opt(&job_name).await? else {
        if !crate::cache_is_current(&ctx.client, restore).await? {
            return Err(crate::cache_behind());
        }
        let why = Invalid::new(
            "JobLost",
            format!("the restore Job {job_name} disappeared before it finished"),
        );
        return fail(ctx, restore, status, why).await;
    };
    if !owned_by(&job, restore) {
        let why = crate::outcome::job_name_taken(&job_name);
        return fail(ctx, restore, status, why).await;
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let ended = if jobs::runs_command(&job) {
        match crate::command::ended(ctx, &namespace, &job).await? {
            Ok(ended) => ended.map(|(succeeded, _)| succeeded),
            Err(why) => {
                let _ = crate::delete_if_present(&jobs_api, &job_name).await;
                return fail(ctx, restore, status, why).await;
            }
        }
    } else {
        crate::outcome::finished(&job)
    };
    match ended {
        None if jobs::runs_command(&job) => Ok(Action::requeue(crate::command::WATCH)),
        None => Ok(Action::requeue(Duration::from_secs(60))),
        Some(false) => {
            let message = termination_message(&pods, &job).await?;
            let why = crate::outcome::failure(&job, message);
            if why.reason == Reason::IntegrityCheckFailed.as_str() {
                status.verification = Some("Failed".into());
            }
            fail(ctx, restore, status, why).await
        }
        Some(true) => {
            let message = termination_message(&pods, &job).await?;
            let Some(done) = message
                .as_deref()
                .and_then(|m| serde_json::from_str::<RestoreResult>(m).ok())
            else {
                let why = Invalid::new(
                    "MoverResultMissing",
                    format!("Job {job_name} succeeded but its pod left no readable result"),
                );
                return fail(ctx, restore, status, why).await;
            };
            let status = completed(restore, status, &done, now());
            let message = status.message.clone().unwrap_or_default();
            crate::patch_status(&ctx.client, restore, &status, &[]).await?;
            events::normal(&ctx.recorder, restore, "RestoreCompleted", message).await;
            count(ctx, restore, "completed");
            delete_jobs(ctx, restore).await?;
            Ok(Action::await_change())
        }
    }
}

/// The status of a restore whose mover reported `done` at `end`.
fn completed(
    restore: &Restore,
    mut status: RestoreStatus,
    done: &RestoreResult,
    end: jiff::Timestamp,
) -> RestoreStatus {
    let start = status.start_time.as_ref().map(|t| t.0).unwrap_or(end);
    let seconds = end.duration_since(start).as_secs_f64().round() as i64;
    status.phase = BackupPhase::Completed;
    status.completion_time = Some(Time(end));
    status.files_restored = i64::try_from(done.files).ok();
    status.bytes_restored = i64::try_from(done.bytes).ok();
    status.verification = Some(done.verification.clone());
    let bytes = events::human_bytes(i64::try_from(done.bytes).unwrap_or(i64::MAX));
    let mut message = match &status.source_pvc {
        Some(stream) if restore.spec.target.pvc_name.is_empty() => format!(
            "Fed stream {stream:?} ({bytes}) to the restore command in {seconds}s; it exited 0, and its digests were verified before it read a byte"
        ),
        _ => format!(
            "Restored {} files ({bytes}) into PVC {:?} in {seconds}s; every digest verified",
            done.files, restore.spec.target.pvc_name
        ),
    };
    if done.skipped_devices > 0 {
        message.push_str(&format!(
            "; {} device node(s) not created (untrusted)",
            done.skipped_devices
        ));
    }
    if done.recovered_interrupted_restore {
        message.push_str("; an earlier restore into it, interrupted mid-commit, was undone first");
    }
    status.message = Some(message.clone());
    let generation = restore.meta().generation;
    condition::set_completed(&mut status.conditions, &message, generation, end);
    status
}

/// A restore that cannot start yet waits (Pending, with the reason and one event) until its
/// start deadline; one that never can, or whose deadline passed, fails.
async fn refused(
    ctx: &Context,
    restore: &Restore,
    status: RestoreStatus,
    refusal: Refusal,
) -> Result<Action, Error> {
    match waiting::verdict(restore, refusal, restore.spec.starting_deadline_seconds) {
        Verdict::Fail(why) => fail(ctx, restore, status, why).await,
        Verdict::Wait {
            reason,
            message,
            recheck_in,
        } => {
            let current = restore.status.as_ref();
            waiting::wait(ctx, restore, current, status, reason, message, recheck_in).await
        }
    }
}

async fn fail(
    ctx: &Context,
    restore: &Restore,
    mut status: RestoreStatus,
    why: Invalid,
) -> Result<Action, Error> {
    let end = now();
    status.phase = BackupPhase::Failed;
    status.completion_time = Some(Time(end));
    status.message = Some(why.message.clone());
    let generation = restore.meta().generation;
    condition::set_failed(&mut status.conditions, &why, generation, end);
    crate::patch_status(&ctx.client, restore, &status, &[]).await?;
    events::warning(
        &ctx.recorder,
        restore,
        "RestoreFailed",
        format!("{}: {}", why.reason, why.message),
    )
    .await;
    count(ctx, restore, "failed");
    delete_jobs(ctx, restore).await?;
    Ok(Action::await_change())
}

fn count(ctx: &Context, restore: &Restore, result: &str) {
    let namespace = restore.namespace().unwrap_or_default();
    ctx.metrics.restore_series(&namespace);
    ctx.metrics
        .restores
        .get_or_create(&metrics::RestoreLabels {
            namespace: namespace.clone(),
            result: result.into(),
        })
        .inc();
    if let Some(start) = restore.status.as_ref().and_then(|s| s.start_time.as_ref()) {
        let seconds = now().duration_since(start.0).as_secs_f64().max(0.0);
        ctx.metrics
            .restore_duration
            .get_or_create(&metrics::NamespaceLabels { namespace })
            .observe(seconds);
    }
}

async fn delete_jobs(ctx: &Context, restore: &Restore) -> Result<(), Error> {
    let jobs_api: Api<Job> =
        Api::namespaced(ctx.client.clone(), &restore.namespace().unwrap_or_default());
    let selector = format!(
        "{}={},{}={ROLE_RESTORE}",
        labels::RESTORE,
        naming::label_value(&restore.name_any()),
        labels::ROLE
    );
    for job in jobs_api
        .list(&crate::cached().labels(&selector))
        .await?
        .items
    {
        let owned = job
            .owner_references()
            .iter()
            .any(|o| Some(&o.uid) == restore.meta().uid.as_ref());
        if owned && job.metadata.deletion_timestamp.is_none() {
            crate::delete_if_present(&jobs_api, &job.name_any()).await?;
        }
    }
    Ok(())
}

fn error_policy(_: Arc<Restore>, err: &Error, ctx: Arc<Context>) -> Action {
    crate::retry_after_error(&ctx, "restore", err)
}

pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let jobs = watcher::Config::default().labels(&format!("{}={ROLE_RESTORE}", labels::ROLE));
    let stores = &ctx.stores;
    let controller = crate::controller(stores.scope.api::<Restore>(&client))
        .owns(stores.scope.api::<Job>(&client), jobs);
    // Pending Restores wait for their Backup, the repository and the target PVC.
    let restores = controller.store();
    let finished = stores.history.subscribe().flat_map(move |change| {
        futures::stream::iter(waiting::in_namespace(
            &restores,
            Some(&change.namespace),
            |r| pending(r) && r.spec.backup_name == change.backup,
        ))
    });
    let controller = controller.reconcile_on(finished);
    let restores = controller.store();
    let controller = stores.repositories.wakes(&client, controller, move |repo| {
        waiting::in_namespace(&restores, repo.namespace().as_deref(), pending)
    });
    let restores = controller.store();
    stores
        .claims
        .wakes(&client, controller, move |claim| {
            waiting::in_namespace(&restores, claim.namespace().as_deref(), |r| {
                pending(r) && r.spec.target.pvc_name == claim.name_any()
            })
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn pending(restore: &Restore) -> bool {
    restore.phase() == BackupPhase::Pending && restore.metadata.deletion_timestamp.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, at};

    fn backup(phase: BackupPhase) -> Backup {
        let policy = fixtures::policy("nightly", "0 2 * * *", None);
        fixtures::scheduled(&policy, "02:00", phase)
            .as_ref()
            .clone()
    }

    fn reason(refusal: Refusal) -> (bool, String) {
        match refusal {
            Refusal::Wait { why, .. } => (true, why.reason),
            Refusal::Fail(why) => (false, why.reason),
        }
    }

    fn command(program: &str) -> CommandContainer {
        CommandContainer {
            image: "pg:15".into(),
            command: vec![program.into()],
            ..CommandContainer::default()
        }
    }

    #[test]
    fn a_stream_is_restored_with_the_restores_command_else_the_policys_else_the_backups_own() {
        let mut restore = Restore::new("back", Default::default());
        let mut policy = fixtures::policy("nightly", "0 2 * * *", None);
        let with_restore = |program: &str| backstop_api::Strategy {
            command: Some(backstop_api::strategy::CommandStrategy {
                restore: Some(command(program)),
                ..Default::default()
            }),
            ..Default::default()
        };
        policy.spec.strategy = Some(with_restore("from-policy"));
        let hand_made = BackupSpec {
            strategy: Some(with_restore("from-backup")),
            ..BackupSpec::default()
        };
        let chosen = |restore: &Restore, policy: Option<&BackupPolicy>| {
            restore_command(restore, true, policy, &hand_made)
                .map(|c| c.map(|c| c.command[0].clone()))
        };
        assert_eq!(chosen(&restore, None), Ok(Some("from-backup".into())));
        assert_eq!(
            chosen(&restore, Some(&policy)),
            Ok(Some("from-policy".into()))
        );
        restore.spec.command = Some(command("own"));
        assert_eq!(chosen(&restore, Some(&policy)), Ok(Some("own".into())));
        // No target is needed for a stream.
        assert!(restore.spec.target.pvc_name.is_empty());
        restore.spec.command = Some(command(""));
        let invalid = chosen(&restore, None).unwrap_err();
        assert_eq!(invalid.reason, "InvalidStrategy");
        assert!(
            invalid.message.starts_with("spec.command.command"),
            "{invalid:?}"
        );
        restore.spec.command = None;
        let none = restore_command(&restore, true, None, &BackupSpec::default()).unwrap_err();
        assert_eq!(none.reason, "NoRestoreCommand");
    }

    #[test]
    fn a_command_recorded_in_the_repository_is_never_run() {
        // An imported Backup's spec names the policy and nothing else; the strategy the record
        // claims (image, command and Secrets of the planter's choosing) is only in its status,
        // which restore_command does not read.
        let imported = BackupSpec {
            policy_ref: Some("gone".into()),
            ..BackupSpec::default()
        };
        let restore = Restore::new("back", Default::default());
        // The policy it names is gone, or has no restore command: nothing is run.
        for policy in [None, Some(fixtures::policy("gone", "0 2 * * *", None))] {
            let refused = restore_command(&restore, true, policy.as_ref(), &imported).unwrap_err();
            assert_eq!(refused.reason, "NoRestoreCommand");
            assert!(refused.message.contains("never run"), "{refused:?}");
        }
    }

    #[test]
    fn a_volume_needs_a_target_and_takes_no_command() {
        let mut restore = Restore::new("back", Default::default());
        let spec = BackupSpec::default();
        let missing = restore_command(&restore, false, None, &spec).unwrap_err();
        assert_eq!(missing.reason, "InvalidSpec");
        assert!(missing.message.contains("pvcName"), "{missing:?}");
        restore.spec.target.pvc_name = "db-restored".into();
        assert_eq!(restore_command(&restore, false, None, &spec), Ok(None));
        restore.spec.command = Some(command("pg_restore"));
        let refused = restore_command(&restore, false, None, &spec).unwrap_err();
        assert_eq!(refused.reason, "InvalidSpec");
        assert!(refused.message.contains("holds volumes"), "{refused:?}");
    }

    #[test]
    fn only_a_completed_backup_not_being_deleted_is_restored() {
        let name = "nightly";
        assert!(restorable("shop", name, Some(backup(BackupPhase::Completed))).is_ok());
        let cases = [
            (None, (true, "BackupNotFound")),
            (
                Some(backup(BackupPhase::Running)),
                (true, "BackupNotCompleted"),
            ),
            (
                Some(backup(BackupPhase::Pending)),
                (true, "BackupNotCompleted"),
            ),
            (
                Some(backup(BackupPhase::Failed)),
                (false, "BackupNotCompleted"),
            ),
        ];
        for (found, (waits, expected)) in cases {
            let refusal = restorable("shop", name, found).unwrap_err();
            assert_eq!(reason(refusal), (waits, expected.to_string()));
        }
        let mut going = backup(BackupPhase::Completed);
        going.metadata.deletion_timestamp = Some(Time(at("03:00")));
        let refusal = restorable("shop", name, Some(going)).unwrap_err();
        assert_eq!(reason(refusal), (false, "BackupDeleted".to_string()));
    }

    #[test]
    fn a_completed_restore_says_what_it_did_and_what_it_undid() {
        let mut restore = Restore::new("back", Default::default());
        restore.spec.target.pvc_name = "db-restored".into();
        let status = RestoreStatus {
            start_time: Some(Time(at("03:00"))),
            ..RestoreStatus::default()
        };
        let done = RestoreResult {
            files: 3,
            bytes: 2048,
            entries: 5,
            verification: "Verified".into(),
            recovered_interrupted_restore: true,
            skipped_devices: 2,
        };
        let status = completed(&restore, status, &done, at("03:01"));
        assert_eq!(status.phase, BackupPhase::Completed);
        assert_eq!(status.files_restored, Some(3));
        assert_eq!(status.verification.as_deref(), Some("Verified"));
        let message = status.message.unwrap();
        assert!(
            message.starts_with("Restored 3 files (2.0 KiB) into PVC \"db-restored\" in 60s"),
            "{message}"
        );
        assert!(
            message.contains("2 device node(s) not created"),
            "{message}"
        );
        assert!(message.contains("was undone first"), "{message}");
        let condition = condition::find(&status.conditions, ConditionType::Completed).unwrap();
        assert_eq!(condition.status, "True");
    }

    fn running_restore(resource_version: &str) -> Restore {
        let mut restore = Restore::new("back", Default::default());
        restore.metadata.namespace = Some(fixtures::NAMESPACE.into());
        restore.metadata.resource_version = Some(resource_version.into());
        restore.spec.backup_name = "nightly".into();
        restore.spec.target.pvc_name = "db-restored".into();
        restore.status = Some(RestoreStatus {
            phase: BackupPhase::Running,
            job: Some("back-restore".into()),
            ..RestoreStatus::default()
        });
        restore
    }

    const JOB: &str = "/apis/batch/v1/namespaces/shop/jobs/back-restore";
    const RESTORE: &str = "/apis/backstop.dev/v1alpha1/namespaces/shop/restores/back";

    /// The Job is deleted right after the status says Completed; its deletion wakes a reconcile
    /// that may still see the Restore Running. That one waits for the cache instead of writing
    /// JobLost over the Completed status (CI failure of stop 30).
    #[tokio::test]
    async fn a_job_gone_after_completion_seen_from_an_old_cache_fails_nothing() {
        let (ctx, mut api) = fixtures::mocked();
        let stale = running_restore("7");
        let mut latest = running_restore("8");
        latest.status.as_mut().unwrap().phase = BackupPhase::Completed;
        let server = tokio::spawn(async move {
            api.expect("GET", JOB, 404, fixtures::not_found()).await;
            api.expect("GET", RESTORE, 200, serde_json::to_value(&latest).unwrap())
                .await;
            api
        });
        let status = stale.status.clone().unwrap();
        let waited = progress(&ctx, &stale, status).await.unwrap_err();
        assert!(matches!(waited, Error::NotYet { .. }), "{waited}");
        let api = server.await.unwrap();
        drop(ctx);
        assert!(api.idle().await, "no status was written");
    }

    /// The same Job gone while the API server agrees the Restore is still running: that is a
    /// lost Job, and the Restore fails with JobLost.
    #[tokio::test]
    async fn a_job_gone_while_the_restore_still_runs_is_job_lost() {
        let (ctx, mut api) = fixtures::mocked();
        let current = running_restore("7");
        let echoed = serde_json::to_value(&current).unwrap();
        let server = tokio::spawn(async move {
            api.expect("GET", JOB, 404, fixtures::not_found()).await;
            api.expect("GET", RESTORE, 200, echoed.clone()).await;
            let patch = api
                .expect("PATCH", &format!("{RESTORE}/status"), 200, echoed)
                .await;
            assert_eq!(patch["status"]["phase"], "Failed", "{patch}");
            assert_eq!(
                patch["status"]["conditions"][1]["reason"], "JobLost",
                "{patch}"
            );
        });
        let status = current.status.clone().unwrap();
        let _ = progress(&ctx, &current, status).await;
        server.await.unwrap();
    }
}
