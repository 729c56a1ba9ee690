//! When a policy runs: given its schedule, what it already made, and the time, which Backup should
//! exist now and when to look again. Pure: the reconciler reads, calls `plan`, applies the answer.

use backstop_api::BackupPhase;
use backstop_api::schedule::Schedule;
use jiff::{SignedDuration, Timestamp};
use std::time::Duration;

/// What the policy reconciler knows of one of the policy's backups: all it reads of them (the
/// operator keeps this, not the Backup, for each finished one; see `history`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackupSummary {
    pub name: String,
    pub phase: BackupPhase,
    /// The cron time a scheduled backup stands for (none for backups made by hand).
    pub scheduled_time: Option<Timestamp>,
    pub created: Option<Timestamp>,
    pub completion_time: Option<Timestamp>,
    pub deleting: bool,
    pub total_bytes: Option<i64>,
    pub total_files: Option<i64>,
    /// The `Verified` condition: None until a verification concluded.
    pub verified: Option<bool>,
    /// When the latest verification finished (whatever it found).
    pub checked_at: Option<Timestamp>,
    /// When the latest verification finished, if it passed.
    pub passed_at: Option<Timestamp>,
    /// A verification was asked for and has not finished.
    pub verifying: bool,
    /// A repository's sync made it from a record: retention never lets it push out a backup
    /// this cluster made.
    pub imported: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Make a Backup for this scheduled time (at most one: missed runs give one catch-up).
    pub run: Option<Timestamp>,
    /// A run is due but the previous backup is still running; it is made once that one ends.
    pub waiting_for: Option<String>,
    /// The next scheduled time after now (none when suspended).
    pub next: Option<Timestamp>,
    /// When to reconcile again even if nothing changes.
    pub requeue_after: Option<Duration>,
}

/// `last_scheduled` is the newest scheduled time already handled (from the policy's status);
/// `since` is when the policy began to exist (no run before it is ever due).
pub fn plan(
    schedule: &Schedule,
    suspended: bool,
    last_scheduled: Option<Timestamp>,
    since: Timestamp,
    backups: &[BackupSummary],
    now: Timestamp,
) -> Plan {
    if suspended {
        return Plan {
            run: None,
            waiting_for: None,
            next: None,
            requeue_after: None,
        };
    }
    // The newest run already made, whether or not the status recorded it (a status write may
    // have been lost; the Backup's name and label are the truth).
    let handled = backups
        .iter()
        .filter_map(|b| b.scheduled_time)
        .chain(last_scheduled)
        .max()
        .unwrap_or(since)
        .max(since);
    let due = schedule
        .latest_at_or_before(now)
        .filter(|due| *due > handled);
    let active = backups
        .iter()
        .find(|b| !b.phase.is_terminal() && !b.deleting)
        .map(|b| b.name.clone());
    let next = schedule.next_after(now);
    let (run, waiting_for) = match (due, active) {
        (Some(_), Some(name)) => (None, Some(name)),
        (due, _) => (due, None),
    };
    // Wake just after the next run; a small margin keeps us from waking a hair early.
    let requeue_after = next.map(|next| {
        let wait = next.duration_since(now) + SignedDuration::from_millis(200);
        Duration::try_from(wait).unwrap_or(Duration::from_millis(200))
    });
    Plan {
        run,
        waiting_for,
        next,
        requeue_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn scheduled(name: &str, at: &str, phase: BackupPhase) -> BackupSummary {
        BackupSummary {
            name: name.into(),
            phase,
            scheduled_time: Some(ts(at)),
            created: Some(ts(at)),
            completion_time: None,
            deleting: false,
            ..BackupSummary::default()
        }
    }

    #[test]
    fn nothing_is_due_before_the_first_scheduled_time() {
        let s = Schedule::parse("0 2 * * *", None).unwrap();
        let p = plan(
            &s,
            false,
            None,
            ts("2026-11-21T10:00:00Z"),
            &[],
            ts("2026-11-21T10:05:00Z"),
        );
        assert_eq!(p.run, None);
        assert_eq!(p.next, Some(ts("2026-11-22T02:00:00Z")));
        // Just after the next run: a hair early would find nothing due.
        let to_next = Duration::from_secs(15 * 3600 + 55 * 60);
        assert_eq!(p.requeue_after, Some(to_next + Duration::from_millis(200)));
    }

    #[test]
    fn a_due_run_is_made_once() {
        let s = Schedule::parse("0 2 * * *", None).unwrap();
        let since = ts("2026-11-20T10:00:00Z");
        let now = ts("2026-11-21T02:00:01Z");
        let p = plan(&s, false, None, since, &[], now);
        assert_eq!(p.run, Some(ts("2026-11-21T02:00:00Z")));
        // Once the Backup exists, the same time is not due again, even if the status was lost.
        let made = [scheduled(
            "p-1",
            "2026-11-21T02:00:00Z",
            BackupPhase::Completed,
        )];
        assert_eq!(plan(&s, false, None, since, &made, now).run, None);
    }

    #[test]
    fn many_missed_runs_give_one_catch_up_for_the_latest() {
        let s = Schedule::parse("0 * * * *", None).unwrap();
        let p = plan(
            &s,
            false,
            Some(ts("2026-11-21T01:00:00Z")),
            ts("2026-11-20T00:00:00Z"),
            &[],
            ts("2026-11-21T07:30:00Z"),
        );
        assert_eq!(p.run, Some(ts("2026-11-21T07:00:00Z")));
    }

    #[test]
    fn no_new_run_while_the_previous_one_is_running() {
        let s = Schedule::parse("* * * * *", None).unwrap();
        let running = [scheduled(
            "p-1",
            "2026-11-21T10:00:00Z",
            BackupPhase::Running,
        )];
        let p = plan(
            &s,
            false,
            None,
            ts("2026-11-21T09:00:00Z"),
            &running,
            ts("2026-11-21T10:01:05Z"),
        );
        assert_eq!(p.run, None);
        assert_eq!(p.waiting_for.as_deref(), Some("p-1"));
    }

    #[test]
    fn suspend_stops_new_runs() {
        let s = Schedule::parse("* * * * *", None).unwrap();
        let p = plan(
            &s,
            true,
            None,
            ts("2026-11-21T09:00:00Z"),
            &[],
            ts("2026-11-21T10:01:05Z"),
        );
        assert_eq!(p.run, None);
        assert_eq!(p.next, None);
        assert_eq!(p.requeue_after, None);
    }

    #[test]
    fn a_backup_being_deleted_does_not_hold_up_the_next_run() {
        let s = Schedule::parse("0 * * * *", None).unwrap();
        let mut going = scheduled("p-1", "2026-11-21T01:00:00Z", BackupPhase::Running);
        going.deleting = true;
        let p = plan(
            &s,
            false,
            None,
            ts("2026-11-21T00:00:00Z"),
            &[going],
            ts("2026-11-21T02:00:05Z"),
        );
        assert_eq!(p.run, Some(ts("2026-11-21T02:00:00Z")));
        assert_eq!(p.waiting_for, None);
    }

    #[test]
    fn runs_fire_at_the_schedules_local_time_in_winter_and_in_summer() {
        let s = Schedule::parse("0 2 * * *", Some("Europe/Paris")).unwrap();
        // 02:00 in Paris is 01:00 UTC in winter (CET) and 00:00 UTC in summer (CEST).
        for (since, now, due) in [
            (
                "2026-11-20T12:00:00Z",
                "2026-11-21T01:00:01Z",
                "2026-11-21T01:00:00Z",
            ),
            (
                "2026-06-30T12:00:00Z",
                "2026-07-01T00:00:01Z",
                "2026-07-01T00:00:00Z",
            ),
        ] {
            let p = plan(&s, false, None, ts(since), &[], ts(now));
            assert_eq!(p.run, Some(ts(due)), "{now}");
        }
        // The night clocks go forward (2026-03-29 in Paris), the next run still comes at 02:00
        // local the following night.
        let p = plan(
            &s,
            false,
            None,
            ts("2026-03-29T12:00:00Z"),
            &[],
            ts("2026-03-29T12:00:01Z"),
        );
        assert_eq!(p.next, Some(ts("2026-03-30T00:00:00Z")));
    }

    #[test]
    fn no_run_is_due_from_before_the_policy_existed() {
        // A policy recreated under an old name finds its predecessor's backups: their times do
        // not make the hour it was created in (or any before) due.
        let s = Schedule::parse("0 * * * *", None).unwrap();
        let old = [scheduled(
            "p-old",
            "2026-11-21T01:00:00Z",
            BackupPhase::Completed,
        )];
        let p = plan(
            &s,
            false,
            Some(ts("2026-11-21T01:00:00Z")),
            ts("2026-11-21T10:00:00Z"),
            &old,
            ts("2026-11-21T10:30:00Z"),
        );
        assert_eq!(p.run, None);
        assert_eq!(p.next, Some(ts("2026-11-21T11:00:00Z")));
    }
}
