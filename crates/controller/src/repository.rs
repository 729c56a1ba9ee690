//! BackupRepository reconciler: says whether a repository can be used (`Ready` with a reason),
//! so policies can refuse to start Jobs against one that cannot. A shared-storage repository is
//! ready when its PVC is bound; an S3 repository when its latest probe Job (write, read back and
//! remove a small object, with the same credentials and network as the movers) succeeded for the
//! current spec. Probes run again every few minutes, sooner while the repository is not ready,
//! and at once when a backup fails in a way that blames the repository.

use crate::outcome::{self, termination_message};
use crate::{Context, Error, events, jobs, now};
use backstop_api::condition::{self, ConditionType, Invalid};
use backstop_api::contract::{Blame, Reason};
use backstop_api::ownership::{Claim, Ownership, Writer};
use backstop_api::{BackupRepository, BackupRepositoryStatus, RepositoryFormat, labels, naming};
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a probe's verdict stands before the next probe.
const RECHECK_READY: Duration = Duration::from_secs(300);
const RECHECK_NOT_READY: Duration = Duration::from_secs(60);
/// The reason `Ready` has while the first probe of a spec runs.
pub const PROBING: &str = "Probing";
/// The reason `Ready` has while a shared-storage repository's PVC is not bound.
const PVC_NOT_BOUND: &str = "PVCNotBound";
/// Whether a failure with condition reason `reason` blames the repository rather than the volume.
pub fn blamed(reason: &str) -> bool {
    Reason::named(reason).blames() == Blame::Repository
}

/// Whether `repo` can be used right now; `Err` says why not. A shared-storage repository's PVC
/// is read from the watched copy (the repository reconciler itself only looks every few minutes).
pub async fn readiness(ctx: &Context, repo: &BackupRepository) -> Result<(), Invalid> {
    repo.spec.validate()?;
    if repo.spec.s3.is_some() {
        return probed_readiness(repo);
    }
    claim_readiness(ctx, repo).await?;
    if probed(repo) {
        // A restic repository on shared storage: its probe opened it with the password.
        return probed_readiness(repo);
    }
    Ok(())
}

/// Whether this cluster (`cluster`) may write `repo`'s namespace part, as the last sync found
/// its owner and the spec says whom to take it over from. Until a sync reports, a part counts as
/// unclaimed: the mover, which reads the marker before every write, refuses what this misses.
pub fn writable(repo: &BackupRepository, cluster: &str) -> Result<Claim, Invalid> {
    let owner = repo
        .status
        .as_ref()
        .and_then(|s| s.sync.as_ref())
        .and_then(|s| s.owner.as_deref());
    Writer {
        cluster: cluster.to_string(),
        take_over_from: repo.spec.take_over_from.clone(),
    }
    .claim(&Ownership::from_owner(owner))
}

/// The `Writable` condition from `writable`, once a sync has reported the owner; `Some` with
/// why when it just turned False (news for a Warning event).
fn set_writable(
    status: &mut BackupRepositoryStatus,
    repo: &BackupRepository,
    cluster: &str,
) -> Option<Invalid> {
    status.sync.as_ref()?.last_result.as_ref()?;
    let verdict = writable(repo, cluster);
    let (ok, reason, message) = match &verdict {
        Ok(Claim::Mine) => (
            true,
            "Owned",
            format!("this cluster ({cluster:?}) writes the namespace's part of the repository"),
        ),
        Ok(Claim::Claim) => (
            true,
            "Unclaimed",
            format!(
                "no cluster has claimed the namespace's part of the repository yet: this cluster's ({cluster:?}) first write does"
            ),
        ),
        Ok(Claim::TakeOver(from)) => (
            true,
            "TakingOver",
            format!(
                "{from:?} wrote the namespace's part of the repository; spec.takeOverFrom names it, so this cluster's ({cluster:?}) next write takes it over"
            ),
        ),
        Err(why) => (false, why.reason.as_str(), why.message.clone()),
    };
    let news = condition::set(
        &mut status.conditions,
        ConditionType::Writable,
        ok,
        reason,
        &message,
        repo.meta().generation,
        now(),
    );
    verdict.err().filter(|_| news)
}

type ReadinessInputs = (Option<i64>, Option<Condition>, Option<Condition>);

/// What `readiness` and `writable` read of a repository: its spec (by generation) and its Ready
/// and Writable conditions. The rest of its status (a sync's result, a probe's bookkeeping)
/// does not change a policy's decision.
fn readiness_inputs(repo: &BackupRepository) -> ReadinessInputs {
    let conditions = repo.status.as_ref().map(|s| s.conditions.as_slice());
    let find = |of| conditions.and_then(|c| condition::find(c, of)).cloned();
    (
        repo.meta().generation,
        find(ConditionType::Ready),
        find(ConditionType::Writable),
    )
}

/// The repositories whose readiness a policy may have to look at again: each one's readiness
/// inputs as last seen. A change to anything else (a sync's result every five minutes) wakes no
/// policy: waking all of a repository's policies for it was 10,000 reconciles, and at start-up
/// 10,000 status writes at once, ahead of the policies still waiting for their first one
/// (controller bench at 10x: no policy shown for 12 s after the first sync finished).
#[derive(Default)]
pub struct ReadinessChanges {
    seen: Mutex<HashMap<(String, String), ReadinessInputs>>,
}

impl ReadinessChanges {
    /// Whether `repo`'s readiness may differ from when it was last seen here: it is new, its spec
    /// or Ready condition changed, or it is being deleted.
    pub fn changed(&self, repo: &BackupRepository) -> bool {
        let key = (repo.namespace().unwrap_or_default(), repo.name_any());
        let Ok(mut seen) = self.seen.lock() else {
            return true;
        };
        if repo.metadata.deletion_timestamp.is_some() {
            seen.remove(&key);
            return true;
        }
        let inputs = readiness_inputs(repo);
        if seen.get(&key) == Some(&inputs) {
            return false;
        }
        seen.insert(key, inputs);
        true
    }
}

/// Whether `repo`'s readiness is what a probe Job found: object storage, and any restic
/// repository (only a mover pod has its password).
pub fn probed(repo: &BackupRepository) -> bool {
    repo.spec.s3.is_some() || repo.spec.format == RepositoryFormat::Restic
}

/// Whether a shared-storage repository's PVC can be used.
async fn claim_readiness(ctx: &Context, repo: &BackupRepository) -> Result<(), Invalid> {
    let namespace = repo.namespace().unwrap_or_default();
    let Some(pvc) = &repo.spec.pvc else {
        return Ok(());
    };
    if full_until(repo, now()).is_some()
        && let Some(full) = repo
            .status
            .as_ref()
            .and_then(|s| condition::find(&s.conditions, ConditionType::Ready))
    {
        return Err(Invalid::new(full.reason.clone(), full.message.clone()));
    }
    match ctx.claim(&namespace, &pvc.claim_name).await {
        Ok(Some(claim)) if claim.metadata.deletion_timestamp.is_some() => Err(Invalid::new(
            "PVCNotFound",
            format!(
                "PVC {:?} of repository {:?} is being deleted",
                pvc.claim_name,
                repo.name_any()
            ),
        )),
        Ok(Some(claim)) => match claim.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Bound") => Ok(()),
            // The first mover pod that mounts it has it bound.
            Some("Pending")
                if crate::waiting::binds_on_first_use(ctx, &claim)
                    .await
                    .unwrap_or(false) =>
            {
                Ok(())
            }
            phase => Err(Invalid::new(
                PVC_NOT_BOUND,
                format!(
                    "PVC {:?} of repository {:?} is {}; it must be Bound",
                    pvc.claim_name,
                    repo.name_any(),
                    phase.unwrap_or("not yet bound")
                ),
            )),
        },
        Ok(None) => Err(Invalid::new(
            "PVCNotFound",
            format!(
                "PVC {:?} of repository {:?} not found in namespace {namespace:?}: create it or fix spec.pvc.claimName",
                pvc.claim_name,
                repo.name_any()
            ),
        )),
        Err(err) => Err(Invalid::new(
            "CheckFailed",
            format!("checking the repository's PVC: {err}"),
        )),
    }
}

/// An S3 repository is ready when the probe of its current spec said so.
pub fn probed_readiness(repo: &BackupRepository) -> Result<(), Invalid> {
    let ready = repo
        .status
        .as_ref()
        .and_then(|s| condition::find(&s.conditions, ConditionType::Ready))
        .filter(|c| c.observed_generation == repo.meta().generation);
    match ready {
        Some(c) if c.status == "True" => Ok(()),
        Some(c) if c.status == "False" => Err(Invalid::new(c.reason.clone(), c.message.clone())),
        _ => Err(Invalid::new(
            PROBING,
            "a probe Job is checking the repository (write, read back, remove a small object)",
        )),
    }
}

/// What the controller knows about a probe Job.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// The repository generation it checked.
    pub generation: Option<i64>,
    /// `Some((succeeded, when))` once it finished.
    pub finished: Option<(bool, Timestamp)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProbeStep {
    /// No probe of the current spec: start one.
    Start,
    /// The probe of the current spec is running.
    Wait,
    /// The latest probe of the current spec finished: report its verdict, and start the next
    /// probe after `recheck_in` (now when `None`).
    Report {
        succeeded: bool,
        recheck_in: Option<Duration>,
    },
}

/// The next step for an S3 repository of `generation` whose latest probe is `latest`.
pub fn probe_step(generation: Option<i64>, latest: Option<&Probe>, now: Timestamp) -> ProbeStep {
    let Some(probe) = latest.filter(|p| p.generation == generation) else {
        return ProbeStep::Start;
    };
    let Some((succeeded, at)) = probe.finished else {
        return ProbeStep::Wait;
    };
    let interval = if succeeded {
        RECHECK_READY
    } else {
        RECHECK_NOT_READY
    };
    let age = now.duration_since(at).unsigned_abs();
    ProbeStep::Report {
        succeeded,
        recheck_in: interval.checked_sub(age).filter(|d| !d.is_zero()),
    }
}

fn summarize(job: &Job) -> Probe {
    let generation = job
        .labels()
        .get(labels::GENERATION)
        .and_then(|g| g.parse().ok());
    let finished_at = || {
        let status = job.status.as_ref()?;
        status.completion_time.clone().or_else(|| {
            status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Failed" && c.status == "True")
                .and_then(|c| c.last_transition_time.clone())
        })
    };
    let created = job.creation_timestamp().map(|t| t.0).unwrap_or_else(now);
    Probe {
        generation,
        finished: outcome::finished(job)
            .map(|ok| (ok, finished_at().map(|t| t.0).unwrap_or(created))),
    }
}

fn probe_selector(repo: &BackupRepository) -> String {
    format!(
        "{}={},{}={}",
        labels::REPOSITORY,
        naming::label_value(&repo.name_any()),
        labels::ROLE,
        jobs::ROLE_PROBE
    )
}

/// The repository's probe Jobs, oldest first.
async fn probe_jobs(ctx: &Context, repo: &BackupRepository) -> Result<Vec<Job>, Error> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &repo.namespace().unwrap_or_default());
    let mut owned: Vec<Job> = api
        .list(&crate::cached().labels(&probe_selector(repo)))
        .await?
        .items
        .into_iter()
        .filter(|j| {
            j.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == repo.meta().uid.as_ref())
        })
        .collect();
    owned.sort_by_key(|j| (j.creation_timestamp().map(|t| t.0), j.name_any()));
    Ok(owned)
}

async fn delete_job(ctx: &Context, job: &Job) -> Result<(), Error> {
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    crate::delete_if_present(&api, &job.name_any()).await?;
    Ok(())
}

/// A backup just failed in a way that blames `repo` (`why`). An S3 repository is probed afresh:
/// the latest probe goes, and the repository reconciler, which watches its probes, starts a new
/// one. A shared-storage repository that was full stops being Ready for `FULL_COOL_DOWN`, so that
/// policies stop starting Jobs into it one after another; then it is tried again.
pub async fn recheck(ctx: &Context, repo: &BackupRepository, why: &Invalid) -> Result<(), Error> {
    if !probed(repo) || (repo.spec.s3.is_none() && why.reason == REPOSITORY_FULL) {
        if why.reason == REPOSITORY_FULL {
            let until = now() + jiff::SignedDuration::try_from(FULL_COOL_DOWN).unwrap_or_default();
            let full = Invalid::new(
                REPOSITORY_FULL,
                format!(
                    "a backup found it full ({}); backups wait until {} and then try again: free space in it or grow its volume",
                    why.message,
                    until.round(jiff::Unit::Second).unwrap_or(until)
                ),
            );
            report(ctx, repo, Err(full)).await?;
        }
        return Ok(());
    }
    for job in probe_jobs(ctx, repo).await? {
        delete_job(ctx, &job).await?;
    }
    Ok(())
}

/// How long a full shared-storage repository stays not Ready before it is tried again.
const FULL_COOL_DOWN: Duration = Duration::from_secs(300);
const REPOSITORY_FULL: &str = Reason::RepositoryFull.as_str();

/// Until when `repo` counts as full (its `Ready` condition says `RepositoryFull`, set less than
/// `FULL_COOL_DOWN` ago).
pub fn full_until(repo: &BackupRepository, now: Timestamp) -> Option<Timestamp> {
    let ready = repo
        .status
        .as_ref()
        .and_then(|s| condition::find(&s.conditions, ConditionType::Ready))?;
    if ready.status != "False" || ready.reason != REPOSITORY_FULL {
        return None;
    }
    let until = ready.last_transition_time.0
        + jiff::SignedDuration::try_from(FULL_COOL_DOWN).unwrap_or_default();
    (until > now).then_some(until)
}

async fn start_probe(ctx: &Context, repo: &BackupRepository) -> Result<(), Error> {
    let job = jobs::probe_job(repo, now().as_second(), &ctx.mover);
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &repo.namespace().unwrap_or_default());
    if crate::create_once(&api, &job).await? {
        tracing::info!(repository = %repo.name_any(), job = %job.name_any(), "probe started");
    }
    Ok(())
}

/// A probed repository: probe, wait for the probe, or report what it found; when to look
/// again. No probe (no pod) is given a Secret its owner did not opt in (see `secrets`).
async fn probe(repo: &BackupRepository, ctx: &Context) -> Result<Duration, Error> {
    if let Some(why) = crate::secrets::refusal(ctx, repo).await? {
        for job in probe_jobs(ctx, repo).await? {
            delete_job(ctx, &job).await?;
        }
        report(ctx, repo, Err(why)).await?;
        // Secrets are not watched (the operator may not list them): look again in a minute.
        return Ok(RECHECK_NOT_READY);
    }
    let mut probes = probe_jobs(ctx, repo).await?;
    let latest = probes.pop();
    // Only the latest probe is kept (its pod tells what happened); older ones go.
    for old in &probes {
        delete_job(ctx, old).await?;
    }
    let latest = latest.filter(|j| j.metadata.deletion_timestamp.is_none());
    let generation = repo.meta().generation;
    let wait = Duration::from_secs(30);
    match probe_step(generation, latest.as_ref().map(summarize).as_ref(), now()) {
        ProbeStep::Start => {
            start_probe(ctx, repo).await?;
            if let Err(why) = probed_readiness(repo) {
                report(ctx, repo, Err(why)).await?;
            }
            Ok(wait)
        }
        ProbeStep::Wait => Ok(wait),
        ProbeStep::Report {
            succeeded,
            recheck_in,
        } => {
            let verdict = match (&latest, succeeded) {
                (_, true) if repo.spec.s3.is_none() => claim_readiness(ctx, repo).await,
                (_, true) => Ok(()),
                (Some(job), false) => {
                    let pods: Api<Pod> =
                        Api::namespaced(ctx.client.clone(), &repo.namespace().unwrap_or_default());
                    let message = termination_message(&pods, job).await?;
                    Err(outcome::failure(job, message))
                }
                (None, false) => Err(Invalid::new(PROBING, "the probe Job is gone")),
            };
            report(ctx, repo, verdict).await?;
            match recheck_in {
                Some(after) => Ok(after),
                None => {
                    start_probe(ctx, repo).await?;
                    Ok(wait)
                }
            }
        }
    }
}

/// Writes the `Ready` condition (and the metric), with a Warning event when it turns bad.
async fn report(
    ctx: &Context,
    repo: &BackupRepository,
    ready: Result<(), Invalid>,
) -> Result<(), Error> {
    let mut status = repo.status.clone().unwrap_or_default();
    let first_report = condition::find(&status.conditions, ConditionType::Ready).is_none();
    let generation = repo.meta().generation;
    let (ok, reason, message) = match &ready {
        Ok(()) => (true, "Ready", "repository is usable"),
        Err(why) => (false, why.reason.as_str(), why.message.as_str()),
    };
    let changed = condition::set(
        &mut status.conditions,
        ConditionType::Ready,
        ok,
        reason,
        message,
        generation,
        now(),
    );
    status.observed_generation = generation;
    crate::sync::set_condition(&mut status, generation, now());
    if let Some(why) = set_writable(&mut status, repo, &ctx.mover.cluster) {
        events::warning(&ctx.recorder, repo, &why.reason, why.message).await;
    }
    ctx.metrics
        .repository_ready
        .get_or_create(&crate::metrics::RepositoryLabels {
            namespace: repo.namespace().unwrap_or_default(),
            repository: repo.name_any(),
        })
        .set(i64::from(ok));
    // A new repository whose PVC is still being bound (applied together with it) or whose
    // first probe runs is on its way, not broken: the condition says so, without a Warning.
    let on_its_way =
        |why: &Invalid| why.reason == PROBING || (why.reason == PVC_NOT_BOUND && first_report);
    if changed
        && let Err(why) = &ready
        && !on_its_way(why)
    {
        events::warning(&ctx.recorder, repo, &why.reason, why.message.clone()).await;
    }
    if crate::status_differs(repo.status.as_ref(), &status) {
        // The prune's and the sync's parts are theirs to write (this copy may be older).
        status.prune = None;
        status.sync = None;
        crate::patch_status(&ctx.client, repo, &status, &[]).await?;
    }
    Ok(())
}

async fn reconcile(repo: Arc<BackupRepository>, ctx: Arc<Context>) -> Result<Action, Error> {
    let sooner = |a: Duration, b: Option<Duration>| b.map_or(a, |b| a.min(b));
    if repo.spec.validate().is_ok() && probed(&repo) {
        let probe = probe(&repo, &ctx).await?;
        let maintenance = crate::maintenance::maintain(&ctx, &repo).await?;
        let sync = crate::sync::maintain(&ctx, &repo).await?;
        return Ok(Action::requeue(sooner(sooner(probe, maintenance), sync)));
    }
    report(&ctx, &repo, readiness(&ctx, &repo).await).await?;
    let sync = crate::sync::maintain(&ctx, &repo).await?;
    // Changes to its PVC wake us; this is only a safety net (or the end of a full spell).
    let full_for = full_until(&repo, now())
        .and_then(|until| Duration::try_from(until.duration_since(now())).ok());
    Ok(Action::requeue(sooner(
        full_for.map_or(RECHECK_READY, |d| d + Duration::from_millis(100)),
        sync,
    )))
}

fn error_policy(_: Arc<BackupRepository>, err: &Error, ctx: Arc<Context>) -> Action {
    crate::retry_after_error(&ctx, "repository", err)
}

pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let probes = watcher::Config::default().labels(&format!(
        "{}={},{} in ({},{},{})",
        labels::MANAGED_BY,
        labels::MANAGER,
        labels::ROLE,
        jobs::ROLE_PROBE,
        jobs::ROLE_PRUNE,
        jobs::ROLE_SYNC
    ));
    let controller = ctx
        .stores
        .repositories
        .controller(&client, crate::controller_config())
        .owns(ctx.stores.scope.api::<Job>(&client), probes);
    // A shared-storage repository is ready once its PVC is bound.
    let repositories = ctx.stores.repositories.store.clone();
    ctx.stores
        .claims
        .wakes(&client, controller, move |claim| {
            crate::waiting::in_namespace(&repositories, claim.namespace().as_deref(), |r| {
                r.spec.pvc.as_ref().map(|p| p.claim_name.as_str())
                    == Some(claim.name_any().as_str())
            })
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_full_repository_is_not_ready_for_five_minutes() {
        let full_at = at("2026-11-26T10:00:00Z");
        let repo = |status: &str, reason: &str| {
            let mut repo = BackupRepository::new("r", Default::default());
            let mut conditions = Vec::new();
            condition::set(
                &mut conditions,
                ConditionType::Ready,
                status == "True",
                reason,
                "",
                None,
                full_at,
            );
            repo.status = Some(backstop_api::BackupRepositoryStatus {
                conditions,
                ..Default::default()
            });
            repo
        };
        let full = repo("False", "RepositoryFull");
        assert_eq!(
            full_until(&full, at("2026-11-26T10:04:00Z")),
            Some(at("2026-11-26T10:05:00Z"))
        );
        assert_eq!(full_until(&full, at("2026-11-26T10:05:00Z")), None);
        assert_eq!(full_until(&repo("False", "PVCNotBound"), full_at), None);
        assert_eq!(full_until(&repo("True", "Ready"), full_at), None);
    }

    #[test]
    fn only_a_change_of_spec_or_ready_condition_is_a_readiness_change() {
        let now = at("2026-11-26T10:00:00Z");
        let repo = |generation: i64, ready: bool, synced_at: &str| {
            let mut repo = BackupRepository::new("r", Default::default());
            repo.metadata.namespace = Some("ns".into());
            repo.metadata.generation = Some(generation);
            let mut conditions = Vec::new();
            condition::set(
                &mut conditions,
                ConditionType::Ready,
                ready,
                if ready { "Ready" } else { "PVCNotBound" },
                "",
                Some(generation),
                now,
            );
            repo.status = Some(backstop_api::BackupRepositoryStatus {
                conditions,
                sync: Some(backstop_api::repository::SyncStatus {
                    last_sync_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(
                        synced_at,
                    ))),
                    ..Default::default()
                }),
                ..Default::default()
            });
            repo
        };
        let changes = ReadinessChanges::default();
        assert!(
            changes.changed(&repo(1, true, "2026-11-26T10:00:00Z")),
            "new"
        );
        assert!(
            !changes.changed(&repo(1, true, "2026-11-26T10:05:00Z")),
            "a sync's result"
        );
        assert!(
            changes.changed(&repo(1, false, "2026-11-26T10:05:00Z")),
            "not ready"
        );
        assert!(
            changes.changed(&repo(1, true, "2026-11-26T10:05:00Z")),
            "ready again"
        );
        assert!(
            changes.changed(&repo(2, true, "2026-11-26T10:05:00Z")),
            "new spec"
        );
        assert!(!changes.changed(&repo(2, true, "2026-11-26T10:05:00Z")));
        let mut deleting = repo(2, true, "2026-11-26T10:05:00Z");
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
        assert!(changes.changed(&deleting), "being deleted");
        assert!(
            changes.changed(&repo(2, true, "2026-11-26T10:05:00Z")),
            "made again after it was deleted"
        );
        let mut other = repo(2, true, "2026-11-26T10:05:00Z");
        other.metadata.namespace = Some("elsewhere".into());
        assert!(changes.changed(&other), "same name, another namespace");
    }

    #[test]
    fn a_new_spec_is_probed_and_a_running_probe_is_awaited() {
        let now = at("2026-11-21T10:00:00Z");
        assert_eq!(probe_step(Some(2), None, now), ProbeStep::Start);
        let old_spec = Probe {
            generation: Some(1),
            finished: Some((true, now)),
        };
        assert_eq!(probe_step(Some(2), Some(&old_spec), now), ProbeStep::Start);
        let running = Probe {
            generation: Some(2),
            finished: None,
        };
        assert_eq!(probe_step(Some(2), Some(&running), now), ProbeStep::Wait);
    }

    #[test]
    fn a_verdict_stands_five_minutes_when_good_and_one_when_bad() {
        let now = at("2026-11-21T10:00:00Z");
        let done = |ok, ago: i64| Probe {
            generation: Some(1),
            finished: Some((ok, now - jiff::SignedDuration::from_secs(ago))),
        };
        assert_eq!(
            probe_step(Some(1), Some(&done(true, 60)), now),
            ProbeStep::Report {
                succeeded: true,
                recheck_in: Some(Duration::from_secs(240))
            }
        );
        assert_eq!(
            probe_step(Some(1), Some(&done(false, 20)), now),
            ProbeStep::Report {
                succeeded: false,
                recheck_in: Some(Duration::from_secs(40))
            }
        );
        assert_eq!(
            probe_step(Some(1), Some(&done(false, 61)), now),
            ProbeStep::Report {
                succeeded: false,
                recheck_in: None
            }
        );
    }
}
