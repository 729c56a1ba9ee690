//! A restic repository's maintenance: retention and Backup deletion only forget snapshots; the
//! space of the data no snapshot uses any more is reclaimed by a prune Job on the repository's
//! schedule (`spec.prune`, Sundays 03:00 UTC by default). Prune takes no lock (see the mover's
//! `restic` module), so backups never wait for it. Runs missed while the operator was away are
//! not made up one by one: the latest one due runs once.

use crate::outcome::{self, termination_message};
use crate::{Context, Error, events, jobs, now};
use backstop_api::condition::Invalid;
use backstop_api::contract::Pruned;
use backstop_api::schedule::Schedule;
use backstop_api::{BackupRepository, PruneSpec, PruneStatus, RepositoryFormat, labels, naming};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::{Resource, ResourceExt};
use std::time::Duration;

/// How often a running prune is looked at (its Job's end also wakes the repository).
const WATCH: Duration = Duration::from_secs(60);

/// What maintenance does now.
#[derive(Debug, Clone, PartialEq)]
pub enum PruneStep {
    /// No prune: the repository is not restic, or its prune is suspended.
    Off,
    /// A prune is running.
    Wait,
    /// The next prune is due then.
    Sleep(Timestamp),
    /// Start the prune scheduled at this time: the latest due (earlier ones are not made up).
    Start(Timestamp),
}

/// The step for a repository pruned on `spec`, last started for `last` (else created at
/// `created`), with a prune Job `running` or not.
pub fn prune_step(
    spec: &PruneSpec,
    last: Option<Timestamp>,
    created: Timestamp,
    running: bool,
    now: Timestamp,
) -> Result<PruneStep, Invalid> {
    if spec.suspend {
        return Ok(PruneStep::Off);
    }
    if running {
        return Ok(PruneStep::Wait);
    }
    let schedule = Schedule::parse(&spec.schedule, None)
        .map_err(|e| Invalid::new(e.reason(), format!("spec.prune.schedule: {e}")))?;
    let Some(next) = schedule.next_after(last.unwrap_or(created)) else {
        return Ok(PruneStep::Off);
    };
    if next > now {
        return Ok(PruneStep::Sleep(next));
    }
    Ok(PruneStep::Start(
        schedule.latest_at_or_before(now).unwrap_or(next),
    ))
}

/// What a finished prune reports in the repository's status.
pub fn finished(pruned: Result<Pruned, Invalid>, at: Timestamp, last: &PruneStatus) -> PruneStatus {
    let (result, message) = match pruned {
        Ok(p) => (
            "Succeeded",
            format!(
                "{} snapshots kept; {} of data no snapshot uses in {} pack files, marked (removed by the first prune a keepDeleteHours later); {} pack files marked by an earlier prune removed",
                p.snapshots,
                events::human_bytes(i64::try_from(p.unused_bytes).unwrap_or(i64::MAX)),
                p.unused_packs,
                p.marked_packs_removed
            ),
        ),
        Err(why) => ("Failed", format!("{}: {}", why.reason, why.message)),
    };
    PruneStatus {
        last_schedule_time: last.last_schedule_time.clone(),
        last_completion_time: Some(Time(at)),
        last_result: Some(result.into()),
        message: Some(message),
    }
}

/// Only the `prune` part of a repository's status, as a merge patch writes it.
#[derive(serde::Serialize)]
struct PruneOnly<'a> {
    prune: &'a PruneStatus,
}

/// Runs maintenance on `repo`; when to look again, if at all.
pub async fn maintain(ctx: &Context, repo: &BackupRepository) -> Result<Option<Duration>, Error> {
    if repo.spec.format != RepositoryFormat::Restic {
        return Ok(None);
    }
    let spec = repo.spec.prune.clone().unwrap_or_default();
    let namespace = repo.namespace().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut status = repo
        .status
        .as_ref()
        .and_then(|s| s.prune.clone())
        .unwrap_or_default();
    let mut running = false;
    for job in jobs_of(ctx, repo, jobs::ROLE_PRUNE).await? {
        let Some(succeeded) = outcome::finished(&job) else {
            running = true;
            continue;
        };
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
        let message = termination_message(&pods, &job).await?;
        let pruned = match (succeeded, message) {
            (true, Some(m)) => serde_json::from_str::<Pruned>(&m).map_err(|e| {
                Invalid::new("MoverResultMissing", format!("the prune's result: {e}"))
            }),
            (_, message) => Err(outcome::failure(&job, message)),
        };
        status = finished(pruned, now(), &status);
        let message = status.message.clone().unwrap_or_default();
        if status.last_result.as_deref() == Some("Succeeded") {
            events::normal(&ctx.recorder, repo, "PruneCompleted", message).await;
        } else {
            events::warning(&ctx.recorder, repo, "PruneFailed", message).await;
        }
        crate::patch_status(&ctx.client, repo, &PruneOnly { prune: &status }, &[]).await?;
        crate::delete_if_present(&api, &job.name_any()).await?;
    }
    let last = status.last_schedule_time.as_ref().map(|t| t.0);
    let created = repo.creation_timestamp().map_or_else(now, |t| t.0);
    let step = match prune_step(&spec, last, created, running, now()) {
        Ok(step) => step,
        Err(why) => {
            events::warning(&ctx.recorder, repo, &why.reason, why.message).await;
            return Ok(None);
        }
    };
    match step {
        PruneStep::Off => Ok(None),
        PruneStep::Wait => Ok(Some(WATCH)),
        PruneStep::Sleep(until) => Ok(Some(
            Duration::try_from(until.duration_since(now())).unwrap_or(WATCH),
        )),
        // Pruning a repository that cannot be opened would only fail: the probe says why. One
        // another cluster writes is not pruned from here: its Writable condition says so.
        PruneStep::Start(_)
            if crate::repository::probed_readiness(repo).is_err()
                || crate::repository::writable(repo, &ctx.mover.cluster).is_err() =>
        {
            Ok(Some(WATCH))
        }
        PruneStep::Start(scheduled) => {
            let job = jobs::prune_job(repo, scheduled.as_second(), &spec, &ctx.mover);
            if crate::create_once(&api, &job).await? {
                let message = format!(
                    "Created Job {} to prune the restic repository (scheduled {scheduled})",
                    job.name_any()
                );
                events::normal(&ctx.recorder, repo, "PruneStarted", message).await;
            }
            status.last_schedule_time = Some(Time(scheduled));
            crate::patch_status(&ctx.client, repo, &PruneOnly { prune: &status }, &[]).await?;
            Ok(Some(WATCH))
        }
    }
}

/// The repository's Jobs of `role` (prune, sync).
pub(crate) async fn jobs_of(
    ctx: &Context,
    repo: &BackupRepository,
    role: &str,
) -> Result<Vec<Job>, Error> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &repo.namespace().unwrap_or_default());
    let selector = format!(
        "{}={},{}={}",
        labels::REPOSITORY,
        naming::label_value(&repo.name_any()),
        labels::ROLE,
        role
    );
    Ok(api
        .list(&crate::cached().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter(|j| {
            j.metadata.deletion_timestamp.is_none()
                && j.owner_references()
                    .iter()
                    .any(|o| Some(&o.uid) == repo.meta().uid.as_ref())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_prune_runs_on_its_schedule_once_for_every_run_missed_and_never_twice_at_once() {
        let weekly = PruneSpec::default();
        let created = at("2026-11-20T10:00:00Z"); // a Friday
        // Before the first Sunday 03:00: sleep until then.
        assert_eq!(
            prune_step(&weekly, None, created, false, at("2026-11-21T12:00:00Z")),
            Ok(PruneStep::Sleep(at("2026-11-22T03:00:00Z")))
        );
        assert_eq!(
            prune_step(&weekly, None, created, false, at("2026-11-22T03:00:00Z")),
            Ok(PruneStep::Start(at("2026-11-22T03:00:00Z")))
        );
        // Running: wait, whatever is due.
        assert_eq!(
            prune_step(&weekly, None, created, true, at("2026-12-22T03:00:00Z")),
            Ok(PruneStep::Wait)
        );
        // Three Sundays missed: the latest runs, once.
        let last = Some(at("2026-11-22T03:00:00Z"));
        assert_eq!(
            prune_step(&weekly, last, created, false, at("2026-12-14T09:00:00Z")),
            Ok(PruneStep::Start(at("2026-12-13T03:00:00Z")))
        );
        assert_eq!(
            prune_step(
                &weekly,
                Some(at("2026-12-13T03:00:00Z")),
                created,
                false,
                at("2026-12-14T09:00:00Z")
            ),
            Ok(PruneStep::Sleep(at("2026-12-20T03:00:00Z")))
        );
        let suspended = PruneSpec {
            suspend: true,
            ..PruneSpec::default()
        };
        assert_eq!(
            prune_step(&suspended, None, created, false, at("2027-01-01T00:00:00Z")),
            Ok(PruneStep::Off)
        );
        let bad = PruneSpec {
            schedule: "weekly".into(),
            ..PruneSpec::default()
        };
        let err = prune_step(&bad, None, created, false, created).unwrap_err();
        assert_eq!(err.reason, "InvalidSchedule");
    }

    #[test]
    fn a_finished_prune_says_what_it_reclaimed_or_why_it_failed() {
        let last = PruneStatus {
            last_schedule_time: Some(Time(at("2026-11-22T03:00:00Z"))),
            ..PruneStatus::default()
        };
        let done = finished(
            Ok(Pruned {
                snapshots: 4,
                unused_packs: 3,
                unused_bytes: 5 << 20,
                marked_packs_removed: 2,
            }),
            at("2026-11-22T03:01:00Z"),
            &last,
        );
        assert_eq!(done.last_schedule_time, last.last_schedule_time);
        assert_eq!(done.last_result.as_deref(), Some("Succeeded"));
        let message = done.message.unwrap();
        assert!(
            message.starts_with("4 snapshots kept; 5.0 MiB"),
            "{message}"
        );
        assert!(message.contains("in 3 pack files") && message.contains("2 pack files"));
        let failed = finished(
            Err(Invalid::new("WrongPassword", "no key takes it")),
            at("2026-11-22T03:01:00Z"),
            &last,
        );
        assert_eq!(failed.last_result.as_deref(), Some("Failed"));
        assert_eq!(
            failed.message.as_deref(),
            Some("WrongPassword: no key takes it")
        );
    }
}
