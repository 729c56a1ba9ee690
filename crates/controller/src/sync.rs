//! A repository's sync (disaster recovery): every `syncInterval` (5 min by default) a sync Job
//! looks for backups of the repository's namespace that have no Backup object (a new cluster, a
//! deleted namespace) and creates them, labelled imported; the Backup reconciler writes their
//! status from the record each carries, after checking it.
//!
//! The operator never reads the repository (S3 credentials and restic passwords only reach mover
//! pods), and a termination message holds 4 KiB, so the sync Job creates the Backups itself, as
//! a ServiceAccount of the repository's own whose Role may list and create Backups in that
//! namespace and do nothing else.

use crate::outcome::{self, termination_message};
use crate::{Context, Error, events, jobs, now};
use backstop_api::condition::{self, ConditionType, Invalid};
use backstop_api::contract::Synced;
use backstop_api::repository::SyncStatus;
use backstop_api::{Backup, BackupRepository, BackupRepositoryStatus, labels, naming};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ObjectMeta};
use kube::{Resource, ResourceExt};
use std::time::Duration;

/// How often a running sync is looked at (its Job's end also wakes the repository).
const WATCH: Duration = Duration::from_secs(30);

/// How long after the operator starts the syncs of the repositories already there may start.
/// A sync lists every Backup of its namespace, and so does the operator when it starts: at
/// 100,000 Backups the two lists at once took half of the API server's CPU in the first 30 s,
/// and the sync's alone 21-24 s, while 10,000 policies waited for their first status (controller
/// bench at 10x). A sync is a periodic safety net (minutes), so one at start can wait.
pub const AFTER_START: Duration = Duration::from_secs(60);
/// How often a sync held until the operator has listed every Backup looks again.
const LISTING_WAIT: Duration = Duration::from_secs(10);

/// What the sync does now.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncStep {
    /// No sync: turned off, or the repository cannot be used now (it is looked at again when
    /// it becomes ready).
    Off,
    /// A sync is running.
    Wait,
    /// The next sync is due in this long.
    Sleep(Duration),
    Start,
}

/// The earliest a sync of a repository created at `created` may start, the operator having
/// started at `started` and `listed` every Backup or not: a repository that was there at the
/// start waits `AFTER_START`, and for the operator's own listing (see `AFTER_START`); one made
/// since is not held (a new cluster's repository is synced at once).
pub fn held_until(
    created: Option<Timestamp>,
    started: Timestamp,
    listed: bool,
    now: Timestamp,
) -> Option<Timestamp> {
    if created.is_none_or(|created| created >= started) {
        return None;
    }
    let after_start = started + AFTER_START;
    if listed {
        Some(after_start)
    } else {
        Some(after_start.max(now + LISTING_WAIT))
    }
}

/// The step for a repository synced every `interval` (`None`: never), last started at `last`,
/// with a sync Job `running` or not, not to start before `held_until` (see `held_until`).
pub fn sync_step(
    interval: Option<Duration>,
    last: Option<Timestamp>,
    running: bool,
    ready: bool,
    held_until: Option<Timestamp>,
    now: Timestamp,
) -> SyncStep {
    let Some(interval) = interval else {
        return SyncStep::Off;
    };
    if running {
        return SyncStep::Wait;
    }
    if !ready {
        return SyncStep::Off;
    }
    let due = match last {
        None => Duration::ZERO,
        Some(last) => {
            let since = Duration::try_from(now.duration_since(last)).unwrap_or_default();
            interval.saturating_sub(since)
        }
    };
    let held = held_until
        .and_then(|until| Duration::try_from(now.duration_until(until)).ok())
        .unwrap_or_default();
    match due.max(held) {
        left if left.is_zero() => SyncStep::Start,
        left => SyncStep::Sleep(left),
    }
}

/// What a finished sync reports in the repository's status.
pub fn finished(synced: Result<Synced, Invalid>, at: Timestamp, last: &SyncStatus) -> SyncStatus {
    let mut status = SyncStatus {
        last_sync_time: last.last_sync_time.clone(),
        last_completion_time: Some(Time(at)),
        ..SyncStatus::default()
    };
    match synced {
        Ok(s) => {
            status.last_result = Some("Succeeded".into());
            status.backups = Some(s.backups);
            status.imported = Some(s.imported);
            status.skipped = Some(s.skipped);
            status.owner = s.owner;
            let mut message = format!(
                "{} backups of this namespace in the repository: {} imported now, {} already had their Backup ({:.1} s)",
                s.backups, s.imported, s.present, s.seconds
            );
            if s.deferred > 0 {
                message.push_str(&format!(
                    "; {} left for the next sync (at most {} are imported a sync)",
                    s.deferred,
                    backstop_api::contract::MAX_IMPORTS
                ));
            }
            if s.skipped > 0 {
                message.push_str(&format!(
                    "; {} objects skipped (not whole, valid backups of this namespace): {}",
                    s.skipped,
                    s.skipped_objects.join("; ")
                ));
            }
            status.message = Some(condition::truncate(message, 2000));
        }
        Err(why) => {
            // A failed sync learned nothing new of the owner: what the last one found stands.
            status.owner = last.owner.clone();
            status.last_result = Some("Failed".into());
            status.reason = Some(why.reason.clone());
            status.message = Some(why.message);
        }
    }
    status
}

/// The `Synced` condition the last sync makes (none before the first one finished): True when
/// it imported all there was; False when it skipped objects (reason `ObjectsSkipped`) or failed
/// (the failure's reason).
pub fn set_condition(status: &mut BackupRepositoryStatus, generation: Option<i64>, now: Timestamp) {
    let Some(sync) = status.sync.as_ref().filter(|s| s.last_result.is_some()) else {
        return;
    };
    let message = sync.message.clone().unwrap_or_default();
    let (ok, reason) = match (sync.last_result.as_deref(), sync.skipped) {
        (Some("Succeeded"), Some(n)) if n > 0 => (false, "ObjectsSkipped".to_string()),
        (Some("Succeeded"), _) => (true, "Synced".to_string()),
        _ => (
            false,
            sync.reason.clone().unwrap_or_else(|| "SyncFailed".into()),
        ),
    };
    condition::set(
        &mut status.conditions,
        ConditionType::Synced,
        ok,
        &reason,
        &message,
        generation,
        now,
    );
}

/// Only the `sync` part of a repository's status, as a merge patch writes it.
#[derive(serde::Serialize)]
struct SyncOnly<'a> {
    sync: &'a SyncStatus,
}

/// Syncs `repo` when due; when to look again, if at all.
pub async fn maintain(ctx: &Context, repo: &BackupRepository) -> Result<Option<Duration>, Error> {
    let interval = match repo.spec.sync_interval() {
        Ok(interval) => interval,
        // The spec is invalid: the repository's Ready condition says why.
        Err(_) => return Ok(None),
    };
    let namespace = repo.namespace().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut status = repo
        .status
        .as_ref()
        .and_then(|s| s.sync.clone())
        .unwrap_or_default();
    let mut running = false;
    for job in crate::maintenance::jobs_of(ctx, repo, jobs::ROLE_SYNC).await? {
        let Some(succeeded) = outcome::finished(&job) else {
            running = true;
            continue;
        };
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
        let message = termination_message(&pods, &job).await?;
        let synced = match (succeeded, message) {
            (true, Some(m)) => serde_json::from_str::<Synced>(&m)
                .map_err(|e| Invalid::new("MoverResultMissing", format!("the sync's result: {e}"))),
            (_, message) => Err(outcome::failure(&job, message)),
        };
        let before = status.clone();
        status = finished(synced, now(), &status);
        announce(ctx, repo, &before, &status).await;
        crate::patch_status(&ctx.client, repo, &SyncOnly { sync: &status }, &[]).await?;
        crate::delete_if_present(&api, &job.name_any()).await?;
    }
    let ready = crate::repository::readiness(ctx, repo).await.is_ok();
    let last = status.last_sync_time.as_ref().map(|t| t.0);
    let now = now();
    let held = held_until(
        repo.metadata.creation_timestamp.as_ref().map(|t| t.0),
        ctx.started,
        ctx.stores.history.is_listed(),
        now,
    );
    match sync_step(interval, last, running, ready, held, now) {
        SyncStep::Off => Ok(None),
        SyncStep::Wait => Ok(Some(WATCH)),
        SyncStep::Sleep(left) => Ok(Some(left)),
        SyncStep::Start => {
            if let Some(why) = crate::secrets::refusal(ctx, repo).await? {
                // The probe reports it; a sync would only fail the same way.
                tracing::debug!(repository = %repo.name_any(), %why, "sync waits");
                return Ok(Some(WATCH));
            }
            if let Err(why) = ensure_identity(ctx, repo).await? {
                // Someone else's objects under the sync's names: no sync runs as them.
                let before = status.clone();
                status = finished(Err(why), now, &status);
                status.last_sync_time = Some(Time(now));
                announce(ctx, repo, &before, &status).await;
                crate::patch_status(&ctx.client, repo, &SyncOnly { sync: &status }, &[]).await?;
                return Ok(interval);
            }
            let at = now;
            let job = jobs::sync_job(repo, at.as_second(), &ctx.mover);
            if crate::create_once(&api, &job).await? {
                tracing::info!(repository = %repo.name_any(), job = %job.name_any(), "sync started");
            }
            status.last_sync_time = Some(Time(at));
            crate::patch_status(&ctx.client, repo, &SyncOnly { sync: &status }, &[]).await?;
            Ok(Some(WATCH))
        }
    }
}

/// Events for what a sync found: Backups imported (Normal), objects skipped or a failure
/// (Warning, only when different from the last sync's, so a repository holding the same junk
/// does not warn every few minutes).
async fn announce(ctx: &Context, repo: &BackupRepository, before: &SyncStatus, now: &SyncStatus) {
    let message = now.message.clone().unwrap_or_default();
    if now.last_result.as_deref() != Some("Succeeded") {
        if before.message != now.message {
            events::warning(&ctx.recorder, repo, "SyncFailed", message).await;
        }
        return;
    }
    if now.imported.unwrap_or(0) > 0 {
        events::normal(&ctx.recorder, repo, "BackupsImported", message.clone()).await;
    }
    let skipped = now.skipped.unwrap_or(0);
    if skipped > 0 && (before.skipped != now.skipped || before.last_result != now.last_result) {
        events::warning(&ctx.recorder, repo, "ObjectsSkipped", message).await;
    }
}

/// The ServiceAccount a sync Job runs as, its Role (list and create Backups in this namespace,
/// nothing else) and their binding, owned by the repository (they go with it).
pub fn identity(repo: &BackupRepository) -> (ServiceAccount, Role, RoleBinding) {
    let namespace = repo.namespace().unwrap_or_default();
    let name = naming::sync_identity(&repo.name_any());
    let meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(namespace.clone()),
        labels: Some(
            [
                (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
                (
                    labels::REPOSITORY.to_string(),
                    naming::label_value(&repo.name_any()),
                ),
            ]
            .into(),
        ),
        owner_references: repo.controller_owner_ref(&()).map(|o| vec![o]),
        ..ObjectMeta::default()
    };
    let account = ServiceAccount {
        metadata: meta.clone(),
        // Only the sync pod mounts its token (it asks for it).
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    };
    let role = Role {
        metadata: meta.clone(),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![backstop_api::GROUP.into()]),
            resources: Some(vec![Backup::plural(&()).into_owned()]),
            verbs: vec!["list".into(), "create".into()],
            ..PolicyRule::default()
        }]),
    };
    let binding = RoleBinding {
        metadata: meta,
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name,
            namespace: Some(namespace),
            ..Subject::default()
        }]),
    };
    (account, role, binding)
}

/// Creates the sync's identity, or finds it as it would have created it: `Err` when an object
/// of one of its names is not the repository's own (owned by another, or a Role or binding
/// granting something else), so that a sync pod never runs with rights someone else chose.
async fn ensure_identity(
    ctx: &Context,
    repo: &BackupRepository,
) -> Result<Result<(), Invalid>, Error> {
    let namespace = repo.namespace().unwrap_or_default();
    let (account, role, binding) = identity(repo);
    let client = &ctx.client;
    let found = (
        existing(&Api::namespaced(client.clone(), &namespace), &account).await?,
        existing(&Api::namespaced(client.clone(), &namespace), &role).await?,
        existing(&Api::namespaced(client.clone(), &namespace), &binding).await?,
    );
    Ok(own_identity(repo, &(account, role, binding), &found))
}

/// The object of `wanted`'s name that was already there (`None`: `wanted` was created now).
/// Looked up first: from the second sync on, it is there (one request, not a refused create
/// and a read).
async fn existing<K>(api: &Api<K>, wanted: &K) -> Result<Option<K>, Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = wanted.name_any();
    if let Some(found) = api.get_opt(&name).await? {
        return Ok(Some(found));
    }
    if crate::create_once(api, wanted).await? {
        return Ok(None);
    }
    // Made by someone else between the look and the create.
    Ok(api.get_opt(&name).await?)
}

/// Whether the identity objects `found` (those that already existed) are the ones `expected`:
/// owned by the repository, the Role granting and the binding binding exactly what it would.
pub fn own_identity(
    repo: &BackupRepository,
    expected: &(ServiceAccount, Role, RoleBinding),
    found: &(Option<ServiceAccount>, Option<Role>, Option<RoleBinding>),
) -> Result<(), Invalid> {
    let uid = repo.uid();
    let owned = |meta: &ObjectMeta| {
        meta.owner_references
            .iter()
            .flatten()
            .any(|o| Some(&o.uid) == uid.as_ref() && o.controller == Some(true))
    };
    let (account, role, binding) = expected;
    let mut strangers = Vec::new();
    if let Some(a) = &found.0
        && !owned(&a.metadata)
    {
        strangers.push(format!("ServiceAccount {:?}", account.name_any()));
    }
    if let Some(r) = &found.1
        && (!owned(&r.metadata) || r.rules != role.rules)
    {
        strangers.push(format!("Role {:?}", role.name_any()));
    }
    if let Some(b) = &found.2
        && (!owned(&b.metadata) || b.role_ref != binding.role_ref || b.subjects != binding.subjects)
    {
        strangers.push(format!("RoleBinding {:?}", binding.name_any()));
    }
    if strangers.is_empty() {
        return Ok(());
    }
    Err(Invalid::new(
        "SyncIdentityTaken",
        format!(
            "{} already exist{} and {} not this repository's own (another owner, or other rights): the sync does not run as an identity someone else made; delete {} and the next sync creates its own",
            strangers.join(", "),
            if strangers.len() == 1 { "s" } else { "" },
            if strangers.len() == 1 { "is" } else { "are" },
            if strangers.len() == 1 { "it" } else { "them" },
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_sync_runs_at_once_then_every_interval_never_twice_at_once_and_only_when_ready() {
        let five = Some(Duration::from_secs(300));
        let now = at("2026-11-28T10:00:00Z");
        assert_eq!(
            sync_step(five, None, false, true, None, now),
            SyncStep::Start
        );
        // Not ready: nothing to list yet (readiness changes wake the repository).
        assert_eq!(
            sync_step(five, None, false, false, None, now),
            SyncStep::Off
        );
        assert_eq!(sync_step(five, None, true, true, None, now), SyncStep::Wait);
        let last = Some(at("2026-11-28T09:58:00Z"));
        assert_eq!(
            sync_step(five, last, false, true, None, now),
            SyncStep::Sleep(Duration::from_secs(180))
        );
        let long_ago = Some(at("2026-11-28T09:55:00Z"));
        assert_eq!(
            sync_step(five, long_ago, false, true, None, now),
            SyncStep::Start
        );
        // syncInterval: 0s.
        assert_eq!(sync_step(None, None, false, true, None, now), SyncStep::Off);
        // Held: whichever comes later, the hold or the interval.
        let held = Some(at("2026-11-28T10:00:40Z"));
        assert_eq!(
            sync_step(five, None, false, true, held, now),
            SyncStep::Sleep(Duration::from_secs(40))
        );
        assert_eq!(
            sync_step(five, last, false, true, held, now),
            SyncStep::Sleep(Duration::from_secs(180))
        );
        let past = Some(at("2026-11-28T09:59:00Z"));
        assert_eq!(
            sync_step(five, None, false, true, past, now),
            SyncStep::Start
        );
        assert_eq!(sync_step(five, None, true, true, held, now), SyncStep::Wait);
    }

    #[test]
    fn a_repository_there_at_the_start_syncs_a_minute_later_after_the_backups_are_listed() {
        let started = at("2026-11-28T10:00:00Z");
        let before = Some(at("2026-11-28T09:00:00Z"));
        let now = at("2026-11-28T10:00:05Z");
        // Made since the start (a new cluster's repository), or of unknown age: at once.
        assert_eq!(
            held_until(Some(at("2026-11-28T10:00:01Z")), started, false, now),
            None
        );
        assert_eq!(held_until(None, started, false, now), None);
        // There at the start: a minute after it, once the operator has listed every Backup.
        assert_eq!(
            held_until(before, started, true, now),
            Some(at("2026-11-28T10:01:00Z"))
        );
        assert_eq!(
            held_until(before, started, false, now),
            Some(at("2026-11-28T10:01:00Z"))
        );
        let later = at("2026-11-28T10:03:00Z");
        assert_eq!(
            held_until(before, started, false, later),
            Some(at("2026-11-28T10:03:10Z"))
        );
        assert_eq!(
            held_until(before, started, true, later),
            Some(at("2026-11-28T10:01:00Z"))
        );
    }

    #[test]
    fn the_sync_identity_may_list_and_create_backups_in_its_namespace_and_nothing_else() {
        let mut repo = BackupRepository::new("nfs", Default::default());
        repo.metadata.namespace = Some("shop".into());
        repo.metadata.uid = Some("uid-r".into());
        let (account, role, binding) = identity(&repo);
        let expected = serde_json::json!({
            "name": "backstop-sync-nfs", "namespace": "shop",
            "labels": {"app.kubernetes.io/managed-by": "backstop", "backstop.dev/repository": "nfs"},
            "ownerReferences": [{"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupRepository",
                                 "name": "nfs", "uid": "uid-r", "controller": true}]});
        for meta in [&account.metadata, &role.metadata, &binding.metadata] {
            assert_eq!(serde_json::to_value(meta).unwrap(), expected);
        }
        assert_eq!(account.automount_service_account_token, Some(false));
        assert_eq!(
            serde_json::to_value(&role.rules).unwrap(),
            serde_json::json!([{"apiGroups": ["backstop.dev"], "resources": ["backups"],
                                "verbs": ["list", "create"]}])
        );
        assert_eq!(
            serde_json::to_value(&binding.role_ref).unwrap(),
            serde_json::json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                               "name": "backstop-sync-nfs"})
        );
        assert_eq!(
            serde_json::to_value(&binding.subjects).unwrap(),
            serde_json::json!([{"kind": "ServiceAccount", "name": "backstop-sync-nfs",
                                "namespace": "shop"}])
        );
    }

    #[test]
    fn a_sync_never_runs_as_an_identity_someone_else_made() {
        let mut repo = BackupRepository::new("nfs", Default::default());
        repo.metadata.namespace = Some("shop".into());
        repo.metadata.uid = Some("uid-r".into());
        let expected = identity(&repo);
        let (account, role, binding) = expected.clone();
        // Just created, or found as it was made: the sync runs.
        assert_eq!(own_identity(&repo, &expected, &(None, None, None)), Ok(()));
        let same = (
            Some(account.clone()),
            Some(role.clone()),
            Some(binding.clone()),
        );
        assert_eq!(own_identity(&repo, &expected, &same), Ok(()));
        // Made in advance by someone else (no owner, another owner), or granting more.
        let mut unowned = account.clone();
        unowned.metadata.owner_references = None;
        let mut other_owner = binding.clone();
        if let Some(owners) = other_owner.metadata.owner_references.as_mut() {
            owners[0].uid = "uid-other".into();
        }
        let mut broader = role.clone();
        if let Some(rules) = broader.rules.as_mut() {
            rules[0].resources = Some(vec!["*".into()]);
        }
        let mut admin = binding.clone();
        admin.role_ref.kind = "ClusterRole".into();
        admin.role_ref.name = "admin".into();
        let taken = |found| own_identity(&repo, &expected, &found).unwrap_err();
        let why = taken((Some(unowned), None, None));
        assert_eq!(why.reason, "SyncIdentityTaken");
        assert!(
            why.message
                .contains("ServiceAccount \"backstop-sync-nfs\" already exists"),
            "{}",
            why.message
        );
        assert!(
            taken((None, None, Some(other_owner)))
                .message
                .contains("RoleBinding")
        );
        assert!(
            taken((None, Some(broader), None))
                .message
                .contains("Role \"backstop-sync-nfs\"")
        );
        let why = taken((None, Some(role), Some(admin)));
        assert!(
            why.message.contains("RoleBinding") && why.message.contains("delete it"),
            "{}",
            why.message
        );
    }

    #[test]
    fn a_finished_sync_says_what_it_imported_and_what_it_skipped_in_its_condition() {
        let last = SyncStatus {
            last_sync_time: Some(Time(at("2026-11-28T10:00:00Z"))),
            ..SyncStatus::default()
        };
        let ended = at("2026-11-28T10:00:07Z");
        let clean = finished(
            Ok(Synced {
                backups: 12,
                present: 2,
                imported: 10,
                seconds: 1.25,
                ..Synced::default()
            }),
            ended,
            &last,
        );
        assert_eq!(clean.last_sync_time, last.last_sync_time);
        assert_eq!(clean.last_completion_time, Some(Time(ended)));
        assert_eq!(
            (clean.backups, clean.imported, clean.skipped),
            (Some(12), Some(10), Some(0))
        );
        assert_eq!(
            clean.message.as_deref(),
            Some(
                "12 backups of this namespace in the repository: 10 imported now, 2 already had their Backup (1.2 s)"
            )
        );
        let mut status = BackupRepositoryStatus {
            sync: Some(clean),
            ..BackupRepositoryStatus::default()
        };
        set_condition(&mut status, Some(1), ended);
        let synced = condition::find(&status.conditions, ConditionType::Synced).unwrap();
        assert_eq!(
            (synced.status.as_str(), synced.reason.as_str()),
            ("True", "Synced")
        );

        let junk = finished(
            Ok(Synced {
                backups: 1,
                present: 1,
                skipped: 2,
                skipped_objects: vec!["shop/x.bin: not in a backup's directory".into()],
                ..Synced::default()
            }),
            ended,
            &last,
        );
        assert!(
            junk.message
                .as_deref()
                .unwrap()
                .contains("2 objects skipped"),
            "{junk:?}"
        );
        status.sync = Some(junk);
        set_condition(&mut status, Some(1), ended);
        let synced = condition::find(&status.conditions, ConditionType::Synced).unwrap();
        assert_eq!(
            (synced.status.as_str(), synced.reason.as_str()),
            ("False", "ObjectsSkipped")
        );
        assert!(synced.message.contains("shop/x.bin"), "{}", synced.message);

        let failed = finished(Err(Invalid::new("AccessDenied", "403")), ended, &last);
        assert_eq!(failed.last_result.as_deref(), Some("Failed"));
        status.sync = Some(failed);
        set_condition(&mut status, Some(1), ended);
        let synced = condition::find(&status.conditions, ConditionType::Synced).unwrap();
        assert_eq!(
            (synced.status.as_str(), synced.reason.as_str()),
            ("False", "AccessDenied")
        );
        // Before the first sync ends there is no condition.
        let mut fresh = BackupRepositoryStatus {
            sync: Some(last.clone()),
            ..BackupRepositoryStatus::default()
        };
        set_condition(&mut fresh, Some(1), ended);
        assert!(fresh.conditions.is_empty());
    }
}
