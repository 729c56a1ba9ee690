//! BackupPolicy reconciler: validates the policy, makes the Backup for each scheduled time
//! (deterministic names: `AlreadyExists` means another controller or an earlier run made it),
//! applies retention, and keeps the status (last/next run) current. Woken by `RequeueAfter` at
//! the next scheduled time and by changes to the Backups it owns; never a polling loop.

use crate::first_pass::FirstPass;
use crate::scheduling::{self, BackupSummary};
use crate::{Context, Error, events, metrics, now, repository, retention};
use backstop_api::condition::{self, ConditionType, Invalid};
use backstop_api::{
    ARTIFACTS_FINALIZER, Backup, BackupPhase, BackupPolicy, BackupPolicyStatus, BackupSpec,
    VerificationPhase, labels, naming,
};
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// What the policy reads of one of its Backups.
pub fn summarize(backup: &Backup) -> BackupSummary {
    let status = backup.status.as_ref();
    let imported = crate::backup::imported(backup);
    // An imported Backup was made when the backup started, in the cluster that made it.
    let created = status
        .filter(|_| imported)
        .and_then(|s| s.start_time.as_ref())
        .or(backup.metadata.creation_timestamp.as_ref())
        .map(|t| t.0);
    let verification = status.and_then(|s| s.verification.as_ref());
    let checked_at = verification
        .filter(|v| v.phase != VerificationPhase::Running)
        .and_then(|v| v.completion_time.as_ref())
        .map(|t| t.0);
    BackupSummary {
        name: backup.name_any(),
        phase: backup.phase(),
        scheduled_time: backup
            .annotations()
            .get(labels::SCHEDULED_TIME)
            .and_then(|t| t.parse::<Timestamp>().ok())
            .filter(|at| plausibly_scheduled(*at, created)),
        created,
        completion_time: status.and_then(|s| s.completion_time.as_ref()).map(|t| t.0),
        deleting: backup.metadata.deletion_timestamp.is_some(),
        total_bytes: status.and_then(|s| s.total_bytes),
        total_files: status.and_then(|s| s.total_files),
        verified: status
            .and_then(|s| condition::find(&s.conditions, ConditionType::Verified))
            .map(|c| c.status == "True"),
        checked_at,
        passed_at: checked_at
            .filter(|_| verification.is_some_and(|v| v.phase == VerificationPhase::Passed)),
        verifying: backup.verification_request().is_some(),
        imported,
    }
}

/// Whether a Backup made at `created` can stand for the cron time `at`: a policy makes its
/// Backup at or after the time, never before. The annotation is anyone's to write who may
/// create Backups; a time beyond the creation (2099, say) would keep that Backup "the newest"
/// for ever and let retention expire the genuine ones, so it is not believed (the Backup then
/// counts by when it was made).
fn plausibly_scheduled(at: Timestamp, created: Option<Timestamp>) -> bool {
    let skew = jiff::SignedDuration::from_secs(backstop_api::record::CLOCK_SKEW_SECONDS);
    created.is_some_and(|made| made.checked_add(skew).is_ok_and(|latest| at <= latest))
}

fn scheduled_backup(policy: &BackupPolicy, at: Timestamp) -> Backup {
    let name = policy.name_any();
    let mut backup = Backup::new(
        &naming::scheduled_backup(&name, at),
        BackupSpec {
            policy_ref: Some(name.clone()),
            starting_deadline_seconds: policy.spec.starting_deadline_seconds,
            ..Default::default()
        },
    );
    backup.metadata.namespace = policy.namespace();
    backup.metadata.labels = Some(
        [
            (labels::POLICY.to_string(), naming::label_value(&name)),
            (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
        ]
        .into(),
    );
    backup.metadata.annotations =
        Some([(labels::SCHEDULED_TIME.to_string(), at.to_string())].into());
    backup.metadata.owner_references = policy.controller_owner_ref(&()).map(|o| vec![o]);
    // Made with the finalizer the backup reconciler would add: one write (and one wake-up of
    // this policy) less per run.
    backup.metadata.finalizers = Some(vec![ARTIFACTS_FINALIZER.to_string()]);
    backup
}

/// What the policy reconciler reads before deciding.
struct Observed {
    /// Why the repository cannot take backups now, if it cannot.
    repository: Result<(), RepositoryProblem>,
    /// Why this cluster may not write the repository (another cluster owns it), if it may not.
    writable: Result<(), Invalid>,
    /// The policy's Backups, from the watched history (a Backup made a moment ago may be
    /// missing; its deterministic name makes a second create answer AlreadyExists, and
    /// `lastScheduleTime` records the run too). None until every Backup is listed.
    backups: Option<Vec<BackupSummary>>,
    now: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
enum RepositoryProblem {
    Missing,
    NotReady(Invalid),
}

/// What the policy reconciler does, decided from what it read (`decide`).
#[derive(Debug, Default)]
struct Decision {
    /// The Backup for the run that is due.
    create: Option<Backup>,
    /// Completed Backups past `keepLast`, oldest last.
    expire: Vec<String>,
    /// A Warning event: the policy is refused, and that is news.
    warning: Option<Invalid>,
    /// Warning events of retention that are news (held deletions, empty backups).
    retention_warnings: Vec<Invalid>,
    /// The gauges (none while the policy is refused).
    figures: Option<metrics::PolicyFigures>,
    /// A verification run that is due: the Backup to verify and the request's token.
    verify: Option<(String, String)>,
    status: BackupPolicyStatus,
    /// When to look again even if nothing changes.
    requeue_after: Option<Duration>,
}

async fn reconcile(policy: Arc<BackupPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let observed = observe(&ctx, &policy).await?;
    let decision = decide(&policy, &observed);
    apply(&ctx, &policy, decision).await
}

async fn observe(ctx: &Context, policy: &BackupPolicy) -> Result<Observed, Error> {
    let namespace = policy.namespace().unwrap_or_default();
    let repo = ctx
        .repository(&namespace, policy.spec.repository_name())
        .await?;
    let repository = match &repo {
        None => Err(RepositoryProblem::Missing),
        Some(repo) => repository::readiness(ctx, repo)
            .await
            .map_err(RepositoryProblem::NotReady),
    };
    let writable = match &repo {
        Some(repo) => repository::writable(repo, &ctx.mover.cluster).map(|_| ()),
        None => Ok(()),
    };
    Ok(Observed {
        repository,
        writable,
        backups: ctx
            .stores
            .history
            .is_listed()
            .then(|| ctx.stores.backups_of(&namespace, &policy.name_any())),
        now: now(),
    })
}

/// The whole policy decision: pure, so that every case is a table test.
fn decide(policy: &BackupPolicy, observed: &Observed) -> Decision {
    let now = observed.now;
    let generation = policy.meta().generation;
    let mut status = policy.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    let schedule = match policy.spec.validate() {
        Ok(schedule) => schedule,
        Err(invalid) => return refused(policy, status, invalid, Warn::Yes, now, None),
    };
    // Until every Backup is listed (tens of seconds with a hundred thousand), what is due and
    // what retention removes are not known; the next run is (the schedule alone says it), and is
    // shown at once. The listing wakes every policy.
    let listed = observed.backups.is_some();
    let summaries = observed.backups.as_deref().unwrap_or_default();
    let since = policy
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(now, |t| t.0);
    let plan = scheduling::plan(
        &schedule,
        policy.spec.suspend,
        status.last_schedule_time.as_ref().map(|t| t.0),
        since,
        summaries,
        now,
    );
    status.next_scheduled_backup = plan.next.map(Time);
    if let Err(problem) = &observed.repository {
        // Say so on the policy instead of failing one Job after another. The run that is due
        // stays due: when the repository changes (it is watched) or the next run comes, the
        // plan makes it, once.
        let (why, warn) = repository_refusal(policy, problem);
        return refused(policy, status, why, warn, now, plan.requeue_after);
    }
    // A repository another cluster writes: this policy makes no backups and deletes none (a
    // standby cluster, or a new one before it takes the repository over), but still verifies.
    let read_only = observed.writable.as_ref().err().map(|why| {
        Invalid::new(
            why.reason.clone(),
            format!(
                "repository {:?}: {}. No scheduled backups and no retention deletions until then",
                policy.spec.repository_name(),
                why.message
            ),
        )
    });
    let create = plan
        .run
        .filter(|_| listed && read_only.is_none())
        .map(|at| scheduled_backup(policy, at));
    if let Some(backup) = &create {
        status.last_schedule_time = plan.run.map(Time);
        status.last_backup = Some(backup.name_any());
        status.last_backup_time = Some(Time(now));
    } else if let Some(made) = newest_run(summaries)
        .filter(|made| made.scheduled_time > status.last_schedule_time.as_ref().map(|t| t.0))
    {
        // A run made whose status was not written (put off for other runs due, or lost).
        status.last_schedule_time = made.scheduled_time.map(Time);
        status.last_backup = Some(made.name.clone());
        status.last_backup_time = made.created.map(Time);
    }
    let newest = newest_first(summaries);
    if let Some(last) = newest.first() {
        status.last_backup.get_or_insert_with(|| last.name.clone());
        if status.last_backup_time.is_none() {
            status.last_backup_time = last.created.map(Time);
        }
    }
    let newest_ok = newest.iter().find(|b| b.phase == BackupPhase::Completed);
    if let Some(ok) = newest_ok {
        status.last_successful_backup_time = ok.completion_time.map(Time);
    }
    let verification_schedule = policy.spec.verification_schedule().ok().flatten();
    let mut figures = figures(&status, &newest, &plan, &schedule);
    let (reason, message) = if policy.spec.suspend {
        (
            "Suspended",
            "spec.suspend is true: no new backups are scheduled".to_string(),
        )
    } else {
        let next = plan.next.map(|t| t.to_string()).unwrap_or_default();
        ("Scheduled", format!("next backup at {next}"))
    };
    let news = match &read_only {
        None => condition::set(
            &mut status.conditions,
            ConditionType::Ready,
            true,
            reason,
            &message,
            generation,
            now,
        ),
        Some(why) => condition::set(
            &mut status.conditions,
            ConditionType::Ready,
            false,
            &why.reason,
            &why.message,
            generation,
            now,
        ),
    };
    let warning = read_only.filter(|_| news);
    let (expire, retention_warnings) = if listed && observed.writable.is_ok() {
        retain(policy, &schedule, summaries, &mut status, now)
    } else {
        (Vec::new(), Vec::new())
    };
    let (verify, verify_after) = match &verification_schedule {
        Some(vs) => plan_verification(
            policy,
            vs,
            observed.backups.as_deref(),
            &mut status,
            since,
            now,
        ),
        None => {
            status.next_verification = None;
            (None, None)
        }
    };
    verification_figures(
        &mut figures,
        summaries,
        verification_schedule.as_ref(),
        status.next_verification.as_ref().map(|t| t.0),
    );
    Decision {
        create,
        expire,
        warning,
        retention_warnings,
        // Gauges from a history not listed yet would say "never succeeded".
        figures: listed.then_some(figures),
        verify,
        status,
        requeue_after: [plan.requeue_after, verify_after]
            .into_iter()
            .flatten()
            .min(),
    }
}

/// The verification run that is due, if one is and the history is listed: the backup `pick`
/// chooses and the run's time as the request's token. A run that falls due while a backup is
/// being verified waits for it (the Backup's change wakes the policy); one with nothing to verify
/// is done. Also the next verification time, and when to look again for it.
fn plan_verification(
    policy: &BackupPolicy,
    schedule: &backstop_api::schedule::Schedule,
    backups: Option<&[BackupSummary]>,
    status: &mut BackupPolicyStatus,
    since: Timestamp,
    now: Timestamp,
) -> (Option<(String, String)>, Option<Duration>) {
    let last = status.last_verification_time.as_ref().map(|t| t.0);
    let plan = scheduling::plan(schedule, policy.spec.suspend, last, since, &[], now);
    status.next_verification = plan.next.map(Time);
    let (Some(at), Some(backups)) = (plan.run, backups) else {
        return (None, plan.requeue_after);
    };
    let chosen = crate::verification::pick(backups);
    if chosen.is_none() && backups.iter().any(|b| b.verifying) {
        return (None, plan.requeue_after);
    }
    status.last_verification_time = Some(Time(at));
    let Some(backup) = chosen else {
        return (None, plan.requeue_after);
    };
    status.last_verified_backup = Some(backup.name.clone());
    (
        Some((backup.name.clone(), at.to_string())),
        plan.requeue_after,
    )
}

/// Seconds from `next` to the run after it on `schedule`.
fn interval_after(schedule: &backstop_api::schedule::Schedule, next: Timestamp) -> Option<f64> {
    let after = schedule.next_after(next)?;
    Some(after.duration_since(next).as_secs_f64())
}

/// The verification gauges: the newest verification that passed, the verification interval
/// (from the next verification run `next`: none while suspended, as for the backup interval),
/// and how many backups failed theirs.
fn verification_figures(
    figures: &mut metrics::PolicyFigures,
    backups: &[BackupSummary],
    schedule: Option<&backstop_api::schedule::Schedule>,
    next: Option<Timestamp>,
) {
    let present = || backups.iter().filter(|b| !b.deleting);
    figures.last_verified = present()
        .filter_map(|b| b.passed_at)
        .max()
        .map(|t| t.as_second() as f64);
    figures.verification_interval_seconds = schedule.and_then(|s| interval_after(s, next?));
    let failing = present().filter(|b| b.verified == Some(false)).count() as i64;
    figures.failing_verification = (schedule.is_some() || failing > 0).then_some(failing);
}

/// Retention's part of the decision (see `retention`): the backups to delete now, the status
/// that says what stays and why, and Warnings for what is news (the brake holding a mass
/// deletion, a backup that came out empty).
fn retain(
    policy: &BackupPolicy,
    schedule: &backstop_api::schedule::Schedule,
    summaries: &[BackupSummary],
    status: &mut BackupPolicyStatus,
    now: Timestamp,
) -> (Vec<String>, Vec<Invalid>) {
    let rules = &policy.spec.retention;
    let verdict = retention::judge(summaries, rules, schedule.zone());
    let good = verdict.kept.len() + verdict.expired.len();
    let generation = policy.meta().generation;
    let held = brake_holds(policy, &verdict);
    let before = status.retention.take().unwrap_or_default();
    let mut warnings = Vec::new();
    let newly_empty: Vec<&str> = verdict
        .empty
        .iter()
        .filter(|name| !before.empty.contains(name))
        .map(String::as_str)
        .collect();
    if !newly_empty.is_empty() {
        warnings.push(Invalid::new(
            "EmptyBackup",
            format!(
                "{} completed with no files after a backup with files: not counted as a good backup, and retention leaves it alone; check spec.target.pvcSelector and the volumes",
                newly_empty.join(", ")
            ),
        ));
    }
    let name = policy.name_any();
    if held {
        let message = format!(
            "retention ({}) would delete {} of {good} good backups, more than {}%: nothing deleted. If that is meant: kubectl -n {} annotate backuppolicy {name} {}={} --overwrite",
            rules_text(rules),
            verdict.expired.len(),
            rules.brake_percent(),
            policy.namespace().unwrap_or_default(),
            labels::APPROVE_RETENTION,
            generation.unwrap_or_default(),
        );
        if before.held != verdict.expired {
            warnings.push(Invalid::new("RetentionHeld", message.clone()));
        }
        condition::set(
            &mut status.conditions,
            ConditionType::RetentionHeld,
            true,
            "TooManyDeletions",
            &message,
            generation,
            now,
        );
    } else if condition::find(&status.conditions, ConditionType::RetentionHeld).is_some() {
        let (reason, message) = if approved(policy) {
            ("Approved", "deletions approved for this generation")
        } else {
            ("WithinLimit", "retention deletes within the brake's limit")
        };
        condition::set(
            &mut status.conditions,
            ConditionType::RetentionHeld,
            false,
            reason,
            message,
            generation,
            now,
        );
    }
    status.retention = Some(backstop_api::RetentionStatus {
        kept: verdict
            .kept
            .into_iter()
            .map(|(name, rules)| backstop_api::KeptBackup {
                name,
                rules: rules.iter().map(|r| r.as_str().to_string()).collect(),
            })
            .collect(),
        empty: verdict.empty,
        held: if held {
            verdict.expired.clone()
        } else {
            Vec::new()
        },
    });
    let expire = if held { Vec::new() } else { verdict.expired };
    (expire, warnings)
}

/// Whether a person approved this generation's retention (see `Retention::max_delete_percent`).
fn approved(policy: &BackupPolicy) -> bool {
    policy.meta().generation.is_some_and(|g| {
        policy.annotations().get(labels::APPROVE_RETENTION) == Some(&g.to_string())
    })
}

/// Whether the brake holds `verdict`'s deletions: more than the policy lets one pass delete, and
/// this generation not approved.
pub fn brake_holds(policy: &BackupPolicy, verdict: &retention::Verdict) -> bool {
    let good = verdict.kept.len() + verdict.expired.len();
    !approved(policy)
        && retention::over_the_brake(
            verdict.expired.len(),
            good,
            policy.spec.retention.brake_percent(),
        )
}

/// The rules that are set, as written in the spec (`keepLast=3, keepDaily=7`).
pub fn rules_text(rules: &backstop_api::Retention) -> String {
    let set: Vec<String> = rules
        .rules()
        .into_iter()
        .filter_map(|(field, n)| n.map(|n| format!("{field}={n}")))
        .collect();
    if set.is_empty() {
        "no rules: keep all".into()
    } else {
        set.join(", ")
    }
}

/// The policy's gauges: its last success and size, its next run and interval, and how many of
/// its newest finished backups failed in a row.
fn figures(
    status: &BackupPolicyStatus,
    newest: &[&BackupSummary],
    plan: &scheduling::Plan,
    schedule: &backstop_api::schedule::Schedule,
) -> metrics::PolicyFigures {
    let ok = newest.iter().find(|b| b.phase == BackupPhase::Completed);
    metrics::PolicyFigures {
        last_success: status
            .last_successful_backup_time
            .as_ref()
            .map(|t| t.0.as_second() as f64),
        last_size_bytes: ok.and_then(|b| b.total_bytes).map(|b| b as f64),
        last_files: ok.and_then(|b| b.total_files).map(|f| f as f64),
        next_run: plan.next.map(|t| t.as_second() as f64),
        interval_seconds: plan.next.and_then(|next| interval_after(schedule, next)),
        consecutive_failures: newest
            .iter()
            .filter(|b| b.phase.is_terminal())
            .take_while(|b| b.phase == BackupPhase::Failed)
            .count() as i64,
        ..metrics::PolicyFigures::default()
    }
}

/// The refusal for a repository that cannot take backups. One that exists but is not ready says
/// so itself, with its own Warning when it needs a person (a PVC still binding does not): the
/// policy's condition names it without a second Warning. A missing one cannot speak for itself.
fn repository_refusal(policy: &BackupPolicy, problem: &RepositoryProblem) -> (Invalid, Warn) {
    let repo_name = policy.spec.repository_name();
    match problem {
        RepositoryProblem::Missing => (
            Invalid::new(
                "RepositoryNotFound",
                format!(
                    "BackupRepository {repo_name:?} not found in namespace {:?}: create it or set spec.repository",
                    policy.namespace().unwrap_or_default()
                ),
            ),
            Warn::Yes,
        ),
        RepositoryProblem::NotReady(why) => (
            Invalid::new(
                "RepositoryNotReady",
                format!("repository {repo_name:?} is not ready: {}", why.message),
            ),
            Warn::No,
        ),
    }
}

/// The newest scheduled run among the policy's Backups.
fn newest_run(backups: &[BackupSummary]) -> Option<&BackupSummary> {
    backups
        .iter()
        .filter(|b| b.scheduled_time.is_some())
        .max_by_key(|b| b.scheduled_time)
}

/// The policy's Backups not being deleted, the newest (by scheduled time, else creation) first.
fn newest_first(backups: &[BackupSummary]) -> Vec<&BackupSummary> {
    let mut by_time: Vec<&BackupSummary> = backups.iter().filter(|b| !b.deleting).collect();
    by_time.sort_by_key(|b| std::cmp::Reverse(b.scheduled_time.or(b.created)));
    by_time
}

/// Whether a refusal of the policy is also a Warning event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Warn {
    Yes,
    No,
}

/// Ready=False with `why`, a Warning when `warn` says so and that is news; nothing made or
/// deleted.
fn refused(
    policy: &BackupPolicy,
    mut status: BackupPolicyStatus,
    why: Invalid,
    warn: Warn,
    now: Timestamp,
    requeue_after: Option<Duration>,
) -> Decision {
    let ready = |status: &BackupPolicyStatus| {
        condition::find(&status.conditions, ConditionType::Ready)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let before = ready(&status);
    condition::set(
        &mut status.conditions,
        ConditionType::Ready,
        false,
        &why.reason,
        &why.message,
        policy.meta().generation,
        now,
    );
    let news = before != ready(&status);
    Decision {
        warning: (news && warn == Warn::Yes).then_some(why),
        status,
        // A spec problem is fixed by editing the policy, which wakes us.
        requeue_after,
        ..Decision::default()
    }
}

/// Carries out `decision`: the due Backup, retention, events, gauges, then the status.
async fn apply(ctx: &Context, policy: &BackupPolicy, decision: Decision) -> Result<Action, Error> {
    let namespace = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let backups_api: Api<Backup> = Api::namespaced(ctx.client.clone(), &namespace);
    if let Some(backup) = &decision.create
        && crate::create_once(&backups_api, backup).await?
    {
        tracing::info!(policy = %name, backup = %backup.name_any(), "scheduled backup created");
    }
    // The run due is made (or cannot be): the next one is what this policy waits for.
    ctx.due_runs.planned(
        (namespace.clone(), name.clone()),
        decision.status.next_scheduled_backup.as_ref().map(|t| t.0),
    );
    if ctx.due_runs.pending(now()) {
        // Other policies' runs are due: their Backups first. The rest of this decision (deletions,
        // events, the status) is made again once they are; `decide` finds the run just made in
        // the Backups.
        return Ok(Action::requeue(crate::due::WAIT));
    }
    let mut deleted = 0;
    for victim in &decision.expire {
        if crate::delete_if_present(&backups_api, victim).await? {
            deleted += 1;
        }
    }
    if deleted > 0 {
        // Related to the first backup deleted, so that the next cleanup is an event of its own.
        let first = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(Backup::api_version(&()).into_owned()),
            kind: Some(Backup::kind(&()).into_owned()),
            namespace: Some(namespace.clone()),
            name: decision.expire.first().cloned(),
            ..Default::default()
        };
        events::normal_related(
            &ctx.recorder,
            policy,
            first,
            "CleanupTriggered",
            format!(
                "Deleted {deleted} old backup{} ({}): {}",
                if deleted == 1 { "" } else { "s" },
                rules_text(&policy.spec.retention),
                decision.expire.join(", ")
            ),
        )
        .await;
    }
    if let Some((backup, token)) = &decision.verify {
        ask_verification(ctx, policy, backup, token).await?;
    }
    for why in decision.warning.iter().chain(&decision.retention_warnings) {
        events::warning(&ctx.recorder, policy, &why.reason, why.message.clone()).await;
    }
    let labels = metrics::PolicyLabels {
        namespace,
        policy: name,
    };
    if deleted > 0 {
        ctx.metrics
            .retention_deletions
            .get_or_create(&labels)
            .inc_by(deleted);
    }
    if let Some(figures) = &decision.figures {
        ctx.metrics.observe_policy(&labels, figures);
    }
    let status = serde_json::to_value(&decision.status)?;
    let cached = policy
        .status
        .as_ref()
        .map(serde_json::to_value)
        .transpose()?;
    if ctx.policy_writes.needed(policy, cached.as_ref(), &status) {
        let version = crate::patch_status(
            &ctx.client,
            policy,
            &decision.status,
            &["nextScheduledBackup"],
        )
        .await?;
        ctx.policy_writes.record(policy, version.as_deref(), status);
    }
    Ok(decision
        .requeue_after
        .map_or_else(Action::await_change, Action::requeue))
}

/// Asks `backup` to be verified: the annotation the Backup reconciler answers.
async fn ask_verification(
    ctx: &Context,
    policy: &BackupPolicy,
    backup: &str,
    token: &str,
) -> Result<(), Error> {
    let api: Api<Backup> =
        Api::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default());
    let patch = serde_json::json!({"metadata": {"annotations": {labels::VERIFY: token}}});
    match api
        .patch(
            backup,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => {}
        // Deleted meanwhile: the next run picks another.
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    events::normal(
        &ctx.recorder,
        policy,
        "VerificationRequested",
        format!("Asked backup {backup} to be verified (run of {token})"),
    )
    .await;
    Ok(())
}

fn error_policy(_: Arc<BackupPolicy>, err: &Error, ctx: Arc<Context>) -> Action {
    crate::retry_after_error(&ctx, "policy", err)
}

/// The pass over every policy once the Backups are listed wakes `SCAN_STEP` policies every
/// `SCAN_STEP_EVERY` (100 a second), after those with a run due and once every policy has shown
/// its next run (`FirstPass`): below what the API server here
/// takes in status writes (150-300 a second at 10,000 policies, controller bench), so the queue
/// stays short for runs that fall due during the pass.
const SCAN_STEP: usize = 10;
const SCAN_STEP_EVERY: Duration = Duration::from_millis(100);

/// Whether `policy` has a run due at `now` by its own status alone (the newest scheduled time it
/// recorded, or its creation): those go first once the Backups are listed.
fn due_before_listing(policy: &BackupPolicy, now: Timestamp) -> bool {
    let Ok(schedule) = policy.spec.validate() else {
        return false;
    };
    let recorded = policy
        .status
        .as_ref()
        .and_then(|s| s.last_schedule_time.as_ref())
        .map(|t| t.0);
    let since = policy
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(now, |t| t.0);
    scheduling::plan(&schedule, policy.spec.suspend, recorded, since, &[], now)
        .run
        .is_some()
}

/// Reconciles at once. Cron runs come in bursts (every policy due at :00 at once) and a scheduled
/// run is two requests (create the Backup, write the status): with 8, the last of 66 runs due in
/// the same second appeared 1.68 s late, with 32 0.55-0.68 s (controller bench).
pub const POLICY_CONCURRENCY: u16 = 32;

pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let controller = ctx.stores.policies.controller(
        &client,
        crate::controller_config().concurrency(POLICY_CONCURRENCY),
    );
    // A change to one of its Backups (finished ones included, which the Backup copy does not
    // hold) wakes the policy.
    let changed = ctx.stores.history.subscribe().flat_map(|change| {
        let namespace = change.namespace;
        futures::stream::iter(
            change
                .policies
                .into_iter()
                .map(move |policy: String| ObjectRef::new(&policy).within(&namespace)),
        )
    });
    // Policies reconciled before every Backup was listed showed their next run only: once the
    // listing is in, each looks again (runs due, retention, figures). Those with a run due go
    // first; the others once every policy has shown its next run (`first_pass`), at a bounded
    // rate, so that runs due now, and those that fall due meanwhile, are not queued behind
    // thousands of policies with nothing to run.
    let first_pass = Arc::new(FirstPass::<BackupPolicy>::default());
    let listing = ctx.clone();
    let pass = first_pass.clone();
    let listed = futures::stream::once(async move {
        listing.stores.history.listed().await;
        let now = now();
        let (due, rest): (Vec<_>, Vec<_>) = listing
            .stores
            .policies
            .store
            .state()
            .into_iter()
            .partition(|policy| due_before_listing(policy, now));
        let reference = |policy: Arc<BackupPolicy>| ObjectRef::from_obj(policy.as_ref());
        let rest = futures::stream::once(async move {
            pass.over().await;
            futures::stream::iter(rest.into_iter().map(reference))
        })
        .flatten()
        .chunks(SCAN_STEP)
        .then(|step| async move {
            tokio::time::sleep(SCAN_STEP_EVERY).await;
            futures::stream::iter(step)
        })
        .flatten();
        futures::stream::iter(due.into_iter().map(reference)).chain(rest)
    })
    .flatten();
    let controller = controller.reconcile_on(futures::stream::select(changed, listed));
    // A policy whose repository was missing or not ready makes its due run once it is ready.
    let woken = ctx.clone();
    let changes = repository::ReadinessChanges::default();
    let controller = ctx
        .stores
        .repositories
        .wakes(&client, controller, move |repo| {
            let namespace = repo.namespace().unwrap_or_default();
            if changes.changed(&repo) {
                woken.stores.policies_of(&namespace, &repo.name_any())
            } else {
                Vec::new()
            }
        });
    // Deleted policies get no reconcile: their metric series and next runs are pruned from the
    // watch cache.
    let store = controller.store();
    let pruning = ctx.clone();
    let pruner = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(30)).await;
            let existing = store
                .state()
                .iter()
                .map(|p| metrics::PolicyLabels {
                    namespace: p.namespace().unwrap_or_default(),
                    policy: p.name_any(),
                })
                .collect();
            pruning.metrics.retain_policies(&existing);
            let existing = existing
                .into_iter()
                .map(|p| (p.namespace, p.policy))
                .collect();
            pruning.due_runs.retain(&existing);
        }
    });
    let copy = controller.store();
    controller
        .graceful_shutdown_on(shutdown)
        .run(
            move |policy, ctx| {
                first_pass.reconciled(ObjectRef::from_obj(policy.as_ref()), copy.len());
                reconcile(policy, ctx)
            },
            error_policy,
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
    pruner.abort();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, at, scheduled};
    use backstop_api::BackupPhase::{Completed, Failed, Running};

    #[test]
    fn a_scheduled_time_after_the_backups_creation_is_not_believed() {
        let policy = fixtures::policy("nightly", "0 2 * * *", None);
        let genuine = scheduled(&policy, "02:00", Completed);
        assert_eq!(summarize(&genuine).scheduled_time, Some(at("02:00")));
        // Made at 02:00 by hand, claiming to stand for 2099: it counts as made at 02:00.
        let mut forged = genuine.as_ref().clone();
        forged.metadata.name = Some("forged".into());
        forged
            .annotations_mut()
            .insert(labels::SCHEDULED_TIME.into(), "2099-01-01T02:00:00Z".into());
        let summary = summarize(&forged);
        assert_eq!(summary.scheduled_time, None);
        assert_eq!(summary.created, Some(at("02:00")));
        assert!(!summary.imported);
        // A catch-up run is made after its time, and a clock a little ahead is tolerated.
        forged
            .annotations_mut()
            .insert(labels::SCHEDULED_TIME.into(), at("02:04").to_string());
        assert_eq!(summarize(&forged).scheduled_time, Some(at("02:04")));
    }

    fn ready(now: &str, backups: Vec<Arc<Backup>>) -> Observed {
        Observed {
            repository: Ok(()),
            writable: Ok(()),
            backups: Some(backups.iter().map(|b| summarize(b)).collect()),
            now: at(now),
        }
    }

    fn ready_condition(decision: &Decision) -> (String, String) {
        let c = condition::find(&decision.status.conditions, ConditionType::Ready).expect("Ready");
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn a_due_run_is_made_once_with_its_schedule_recorded() {
        let policy = fixtures::policy("nightly", "0 2 * * *", Some(3));
        let decision = decide(&policy, &ready("02:00", vec![]));
        let backup = decision.create.as_ref().expect("the 02:00 run");
        assert_eq!(
            backup.metadata.name.as_deref(),
            Some(naming::scheduled_backup("nightly", at("02:00")).as_str())
        );
        assert_eq!(backup.spec.policy_ref.as_deref(), Some("nightly"));
        assert_eq!(
            backup.metadata.finalizers,
            Some(vec![ARTIFACTS_FINALIZER.to_string()])
        );
        assert_eq!(
            backup.metadata.owner_references.as_ref().unwrap()[0].uid,
            "uid-nightly"
        );
        assert_eq!(decision.status.last_schedule_time, Some(Time(at("02:00"))));
        assert_eq!(
            ready_condition(&decision),
            ("True".into(), "Scheduled".into())
        );
        assert_eq!(decision.warning, None);

        // Once it exists, the same minute makes nothing more.
        let made = scheduled(&policy, "02:00", Running);
        let again = decide(&policy, &ready("02:00", vec![made]));
        assert!(again.create.is_none());
    }

    #[test]
    fn a_run_whose_status_was_not_written_is_recorded_from_its_backup() {
        let mut policy = fixtures::policy("hourly", "0 * * * *", None);
        let before = scheduled(&policy, "01:00", Completed);
        policy.status = Some(BackupPolicyStatus {
            last_schedule_time: Some(Time(at("01:00"))),
            last_backup: Some(before.name_any()),
            last_backup_time: Some(Time(at("01:00"))),
            ..Default::default()
        });
        // The 02:00 run was made and its reconcile put the status off (other runs were due).
        let made = scheduled(&policy, "02:00", Running);
        let decision = decide(&policy, &ready("02:01", vec![before.clone(), made.clone()]));
        assert!(decision.create.is_none());
        assert_eq!(decision.status.last_schedule_time, Some(Time(at("02:00"))));
        assert_eq!(decision.status.last_backup, Some(made.name_any()));
        assert_eq!(decision.status.last_backup_time, Some(Time(at("02:00"))));

        // A status as new as every scheduled Backup stays (one made by hand has no scheduled
        // time).
        policy.status.as_mut().unwrap().last_schedule_time = Some(Time(at("02:00")));
        let mut by_hand = (*scheduled(&policy, "02:30", Running)).clone();
        by_hand.metadata.name = Some("by-hand".into());
        by_hand.metadata.annotations = None;
        let decision = decide(&policy, &ready("02:31", vec![before, Arc::new(by_hand)]));
        assert_eq!(decision.status.last_schedule_time, Some(Time(at("02:00"))));
        assert_eq!(
            decision.status.last_backup,
            policy.status.as_ref().unwrap().last_backup
        );
    }

    #[test]
    fn a_run_is_due_before_listing_by_the_policys_own_status() {
        let mut policy = fixtures::policy("nightly", "0 2 * * *", None);
        assert!(!due_before_listing(&policy, at("01:59")));
        assert!(due_before_listing(&policy, at("02:00")));
        policy.status = Some(BackupPolicyStatus {
            last_schedule_time: Some(Time(at("02:00"))),
            ..Default::default()
        });
        assert!(!due_before_listing(&policy, at("02:30")), "already made");
        policy.spec.suspend = true;
        policy.status = None;
        assert!(!due_before_listing(&policy, at("02:30")), "suspended");
        policy.spec.suspend = false;
        policy.spec.schedule = "every night".into();
        assert!(
            !due_before_listing(&policy, at("02:30")),
            "invalid: refused, not run"
        );
    }

    #[test]
    fn before_every_backup_is_listed_only_the_next_run_is_shown() {
        let policy = fixtures::policy("nightly", "0 2 * * *", Some(1));
        let listing = Observed {
            backups: None,
            ..ready("02:00", vec![])
        };
        let decision = decide(&policy, &listing);
        assert!(decision.create.is_none(), "what is due is not known yet");
        assert!(decision.expire.is_empty());
        assert!(
            decision.figures.is_none(),
            "no gauge says 'never succeeded'"
        );
        assert_eq!(decision.status.last_schedule_time, None);
        assert_eq!(
            decision.status.next_scheduled_backup,
            Some(Time(at("02:00") + jiff::SignedDuration::from_hours(24)))
        );
        assert_eq!(
            ready_condition(&decision),
            ("True".into(), "Scheduled".into())
        );
        // Listed, the same moment makes the due run.
        assert!(decide(&policy, &ready("02:00", vec![])).create.is_some());
    }

    #[test]
    fn a_verification_run_asks_one_backup_never_overlaps_and_feeds_the_gauges() {
        let mut policy = fixtures::policy("nightly", "0 2 * * *", None);
        policy.spec.verification = Some(backstop_api::Verification {
            schedule: "0 * * * *".into(),
            ..Default::default()
        });
        let older = scheduled(&policy, "01:00", Completed);
        let newer = scheduled(&policy, "02:00", Completed);
        let decision = decide(&policy, &ready("03:00", vec![older.clone(), newer.clone()]));
        let (backup, token) = decision.verify.clone().expect("the 03:00 verification run");
        assert_eq!(backup, newer.name_any(), "the newest never verified");
        assert_eq!(token, at("03:00").to_string());
        let status = &decision.status;
        assert_eq!(status.last_verification_time, Some(Time(at("03:00"))));
        assert_eq!(status.next_verification, Some(Time(at("04:00"))));
        assert_eq!(
            status.last_verified_backup.as_deref(),
            Some(backup.as_str())
        );
        let figures = decision.figures.clone().unwrap();
        assert_eq!(figures.verification_interval_seconds, Some(3600.0));
        assert_eq!(figures.failing_verification, Some(0));
        assert_eq!(figures.last_verified, None);

        // Recorded: the same run is not asked again.
        policy.status = Some(decision.status.clone());
        assert_eq!(
            decide(&policy, &ready("03:30", vec![older.clone(), newer.clone()])).verify,
            None
        );

        // At 04:00 the newer one is still being verified: the run waits, unrecorded.
        let mut busy = newer.as_ref().clone();
        busy.metadata
            .annotations
            .get_or_insert_default()
            .insert(labels::VERIFY.into(), "t".into());
        let busy = Arc::new(busy);
        let waiting = decide(&policy, &ready("04:00", vec![older.clone(), busy.clone()]));
        assert_eq!(waiting.verify, None);
        assert_eq!(
            waiting.status.last_verification_time,
            Some(Time(at("03:00")))
        );

        // Once it failed, it is counted, and the run goes to the older one.
        let mut failed = busy.as_ref().clone();
        let answer = failed.status.get_or_insert_default();
        answer.verification = Some(backstop_api::VerificationStatus {
            request: "t".into(),
            phase: VerificationPhase::Failed,
            completion_time: Some(Time(at("04:01"))),
            ..Default::default()
        });
        condition::set(
            &mut answer.conditions,
            ConditionType::Verified,
            false,
            "DigestMismatch",
            "m",
            None,
            at("04:01"),
        );
        let decision = decide(
            &policy,
            &ready("04:02", vec![older.clone(), Arc::new(failed)]),
        );
        assert_eq!(decision.verify.map(|(b, _)| b), Some(older.name_any()));
        assert_eq!(decision.figures.unwrap().failing_verification, Some(1));

        // Before every Backup is listed, nothing is asked; the next run is shown.
        let listing = Observed {
            backups: None,
            ..ready("05:00", vec![])
        };
        let decision = decide(&policy, &listing);
        assert_eq!(decision.verify, None);
        assert_eq!(decision.status.next_verification, Some(Time(at("06:00"))));
        // Suspended: no verification either.
        policy.spec.suspend = true;
        let decision = decide(&policy, &ready("05:00", vec![older]));
        assert_eq!(decision.verify, None);
        assert_eq!(decision.status.next_verification, None);
        // No interval either: BackstopBackupUnverified does not fire for a policy that does not
        // verify while suspended.
        assert_eq!(
            decision.figures.unwrap().verification_interval_seconds,
            None
        );
    }

    #[test]
    fn the_brake_holds_a_mass_deletion_until_this_generation_is_approved() {
        let mut policy = fixtures::policy("hourly", "0 * * * *", Some(1));
        let backups: Vec<_> = ["01:00", "02:00", "03:00", "04:00"]
            .iter()
            .map(|t| scheduled(&policy, t, Completed))
            .collect();
        let names: Vec<String> = backups.iter().map(|b| b.name_any()).collect();
        let decision = decide(&policy, &ready("04:30", backups.clone()));
        assert!(
            decision.expire.is_empty(),
            "three of four is more than half"
        );
        let retention = decision.status.retention.clone().expect("retention status");
        assert_eq!(retention.held, names[..3]);
        assert_eq!(retention.kept.len(), 1);
        assert_eq!(retention.kept[0].name, names[3]);
        assert_eq!(retention.kept[0].rules, ["last"]);
        let held = condition::find(&decision.status.conditions, ConditionType::RetentionHeld)
            .expect("RetentionHeld");
        assert_eq!(
            (held.status.as_str(), held.reason.as_str()),
            ("True", "TooManyDeletions")
        );
        assert!(
            held.message
                .contains("backstop.dev/approve-retention=1 --overwrite"),
            "{}",
            held.message
        );
        assert_eq!(decision.retention_warnings.len(), 1);
        assert_eq!(decision.retention_warnings[0].reason, "RetentionHeld");

        // Still held on the next pass: no second Warning.
        policy.status = Some(decision.status);
        let again = decide(&policy, &ready("04:31", backups.clone()));
        assert!(again.expire.is_empty() && again.retention_warnings.is_empty());

        // Approved for another generation: still held. For this one: deleted.
        policy.metadata.annotations =
            Some([(labels::APPROVE_RETENTION.to_string(), "0".to_string())].into());
        assert!(
            decide(&policy, &ready("04:32", backups.clone()))
                .expire
                .is_empty()
        );
        policy.metadata.annotations =
            Some([(labels::APPROVE_RETENTION.to_string(), "1".to_string())].into());
        let approved = decide(&policy, &ready("04:33", backups.clone()));
        assert_eq!(approved.expire, names[..3]);
        let released =
            condition::find(&approved.status.conditions, ConditionType::RetentionHeld).unwrap();
        assert_eq!(
            (released.status.as_str(), released.reason.as_str()),
            ("False", "Approved")
        );
        assert!(approved.status.retention.unwrap().held.is_empty());
    }

    #[test]
    fn an_empty_backup_is_a_warning_once_and_leaves_the_good_ones_alone() {
        let mut policy = fixtures::policy("hourly", "0 * * * *", Some(1));
        let good = scheduled(&policy, "01:00", Completed);
        let mut empty = (*scheduled(&policy, "02:00", Completed)).clone();
        if let Some(s) = empty.status.as_mut() {
            s.total_files = Some(0);
        }
        let empty = Arc::new(empty);
        let backups = vec![good.clone(), empty.clone()];
        let decision = decide(&policy, &ready("02:30", backups.clone()));
        assert!(decision.expire.is_empty(), "the good one stays");
        assert_eq!(decision.retention_warnings.len(), 1);
        assert_eq!(decision.retention_warnings[0].reason, "EmptyBackup");
        assert!(
            decision.retention_warnings[0]
                .message
                .starts_with(&empty.name_any())
        );
        policy.status = Some(decision.status);
        let again = decide(&policy, &ready("02:31", backups));
        assert!(again.retention_warnings.is_empty(), "no news");
        // Before the Backups are listed, what retention said stays as it was.
        let listing = Observed {
            backups: None,
            ..ready("02:32", vec![])
        };
        assert_eq!(
            decide(&policy, &listing).status.retention,
            policy.status.as_ref().and_then(|s| s.retention.clone())
        );
    }

    #[test]
    fn retention_expires_the_oldest_completed_backups_beyond_keep_last() {
        let policy = fixtures::policy("hourly", "0 * * * *", Some(2));
        let backups = vec![
            scheduled(&policy, "01:00", Completed),
            scheduled(&policy, "02:00", Completed),
            scheduled(&policy, "03:00", Failed),
            scheduled(&policy, "04:00", Completed),
            scheduled(&policy, "05:00", Running),
        ];
        let decision = decide(&policy, &ready("05:30", backups.clone()));
        let name = |b: &Arc<Backup>| b.metadata.name.clone().unwrap();
        assert_eq!(decision.expire, vec![name(&backups[0])]);
        assert!(decision.create.is_none(), "05:00 is still running");
    }

    #[test]
    fn a_repository_another_cluster_writes_gets_no_backups_and_no_deletions_but_is_verified() {
        let mut policy = fixtures::policy("hourly", "0 * * * *", Some(2));
        policy.spec.verification = Some(backstop_api::Verification {
            schedule: "30 * * * *".into(),
            ..Default::default()
        });
        let backups = vec![
            scheduled(&policy, "01:00", Completed),
            scheduled(&policy, "02:00", Completed),
            scheduled(&policy, "03:00", Completed),
        ];
        let read_only = Observed {
            writable: Err(Invalid::new(
                backstop_api::ownership::OWNED_ELSEWHERE,
                "cluster \"a\" writes it",
            )),
            ..ready("04:00", backups.clone())
        };
        let decision = decide(&policy, &read_only);
        assert!(decision.create.is_none(), "the 04:00 run is not made");
        assert!(decision.expire.is_empty(), "{:?}", decision.expire);
        assert_eq!(
            ready_condition(&decision),
            ("False".into(), "RepositoryOwnedElsewhere".into())
        );
        let warning = decision.warning.expect("a Warning the first time");
        assert!(
            warning.message.contains("no retention deletions"),
            "{}",
            warning.message
        );
        assert!(decision.figures.is_some(), "its gauges stay");
        policy.status = Some(decision.status.clone());
        let again = decide(
            &policy,
            &Observed {
                now: at("04:30"),
                ..read_only
            },
        );
        assert_eq!(again.warning, None, "no news");
        assert!(again.verify.is_some(), "verification still runs");

        // Taken over (or the owner gone): the run due is made and retention deletes again.
        let writable = decide(&policy, &ready("04:31", backups.clone()));
        assert!(writable.create.is_some());
        assert_eq!(writable.expire, vec![backups[0].name_any()]);
        assert_eq!(
            ready_condition(&writable),
            ("True".into(), "Scheduled".into())
        );
    }

    #[test]
    fn a_missing_repository_refuses_with_a_warning_once_and_keeps_the_run_due() {
        let policy = fixtures::policy("nightly", "0 2 * * *", None);
        let observed = Observed {
            repository: Err(RepositoryProblem::Missing),
            ..ready("02:00", vec![])
        };
        let decision = decide(&policy, &observed);
        assert!(decision.create.is_none());
        assert!(decision.figures.is_none());
        assert_eq!(
            ready_condition(&decision),
            ("False".into(), "RepositoryNotFound".into())
        );
        let warning = decision.warning.expect("a Warning the first time");
        assert!(warning.message.contains("create it"), "{}", warning.message);
        assert_eq!(
            decision.status.last_schedule_time, None,
            "the run stays due"
        );
        assert!(decision.requeue_after.is_some());

        // The same refusal again is no news.
        let mut refused = policy.clone();
        refused.status = Some(decision.status);
        assert_eq!(decide(&refused, &observed).warning, None);
    }

    #[test]
    fn a_repository_that_is_not_ready_refuses_without_a_second_warning() {
        let policy = fixtures::policy("nightly", "0 2 * * *", None);
        let observed = Observed {
            repository: Err(RepositoryProblem::NotReady(Invalid::new(
                "PVCNotBound",
                "binding",
            ))),
            ..ready("02:00", vec![])
        };
        let decision = decide(&policy, &observed);
        assert!(decision.create.is_none());
        assert_eq!(
            ready_condition(&decision),
            ("False".into(), "RepositoryNotReady".into())
        );
        assert_eq!(decision.warning, None);
    }

    #[test]
    fn an_invalid_schedule_is_refused_with_a_warning_and_nothing_else() {
        let policy = fixtures::policy("bad", "every night", None);
        let decision = decide(&policy, &ready("02:00", vec![]));
        assert!(decision.create.is_none() && decision.expire.is_empty());
        assert_eq!(ready_condition(&decision).0, "False");
        assert!(decision.warning.is_some());
        assert_eq!(decision.requeue_after, None, "editing the policy wakes it");
    }

    #[test]
    fn a_suspended_policy_makes_nothing_and_says_so() {
        let mut policy = fixtures::policy("nightly", "0 2 * * *", Some(1));
        policy.spec.suspend = true;
        let decision = decide(&policy, &ready("02:00", vec![]));
        assert!(decision.create.is_none());
        assert_eq!(decision.status.next_scheduled_backup, None);
        assert_eq!(
            ready_condition(&decision),
            ("True".into(), "Suspended".into())
        );
    }

    #[test]
    fn gauges_count_failures_since_the_last_success() {
        let policy = fixtures::policy("hourly", "0 * * * *", None);
        let backups = vec![
            scheduled(&policy, "01:00", Completed),
            scheduled(&policy, "02:00", Failed),
            scheduled(&policy, "03:00", Failed),
        ];
        let decision = decide(&policy, &ready("03:30", backups));
        let figures = decision.figures.expect("figures");
        assert_eq!(figures.consecutive_failures, 2);
        assert_eq!(figures.last_size_bytes, Some(4096.0));
        assert_eq!(figures.interval_seconds, Some(3600.0));
        assert_eq!(
            decision.status.last_successful_backup_time,
            Some(Time(at("01:05")))
        );
    }

    const BACKUPS: &str = "/apis/backstop.dev/v1alpha1/namespaces/shop/backups";
    const STATUS: &str =
        "/apis/backstop.dev/v1alpha1/namespaces/shop/backuppolicies/nightly/status";

    #[tokio::test]
    async fn a_due_run_creates_its_backup_and_then_records_it_in_the_status() {
        let (ctx, mut api) = fixtures::mocked();
        let policy = fixtures::policy("nightly", "0 2 * * *", Some(3));
        let decision = decide(&policy, &ready("02:00", vec![]));
        let expected = decision.create.clone().unwrap();
        let patched = serde_json::to_value(&policy).unwrap();
        let server = tokio::spawn(async move {
            let sent = api
                .expect(
                    "POST",
                    BACKUPS,
                    201,
                    serde_json::to_value(&expected).unwrap(),
                )
                .await;
            assert_eq!(sent["metadata"]["name"], expected.metadata.name.unwrap());
            assert_eq!(sent["metadata"]["finalizers"][0], ARTIFACTS_FINALIZER);
            let patch = api.expect("PATCH", STATUS, 200, patched).await;
            assert_eq!(
                patch["status"]["lastScheduleTime"], "2026-11-26T02:00:00Z",
                "{patch}"
            );
            assert_eq!(patch["status"]["conditions"][0]["reason"], "Scheduled");
            api
        });
        let action = apply(&ctx, &policy, decision).await.unwrap();
        assert_ne!(action, Action::await_change(), "woken for the next run");
        let api = server.await.unwrap();
        drop(ctx);
        assert!(api.idle().await, "nothing else was sent");
    }

    #[tokio::test]
    async fn a_run_another_replica_made_already_is_not_an_error() {
        let (ctx, mut api) = fixtures::mocked();
        let policy = fixtures::policy("nightly", "0 2 * * *", None);
        let decision = decide(&policy, &ready("02:00", vec![]));
        let patched = serde_json::to_value(&policy).unwrap();
        let server = tokio::spawn(async move {
            api.expect("POST", BACKUPS, 409, fixtures::already_exists())
                .await;
            api.expect("PATCH", STATUS, 200, patched).await;
        });
        apply(&ctx, &policy, decision).await.unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_create_is_an_error_and_records_nothing() {
        let (ctx, mut api) = fixtures::mocked();
        let policy = fixtures::policy("nightly", "0 2 * * *", None);
        let decision = decide(&policy, &ready("02:00", vec![]));
        let server = tokio::spawn(async move {
            let forbidden = serde_json::json!({"kind": "Status", "apiVersion": "v1",
                "status": "Failure", "reason": "Forbidden", "code": 403, "message": "no"});
            api.expect("POST", BACKUPS, 403, forbidden).await;
            api
        });
        assert!(apply(&ctx, &policy, decision).await.is_err());
        let api = server.await.unwrap();
        drop(ctx);
        assert!(api.idle().await, "no status was written");
    }
}
