//! Refusals that resolve themselves. People and GitOps tools apply a whole manifest at once: a
//! Backup arrives a second before its repository's PVC is bound, a Restore before the Backup it
//! names has finished. Such a Backup or Restore stays `Pending` and says what it waits for; it
//! starts as soon as that is there, and fails with the last reason only once its start deadline
//! (`spec.startingDeadlineSeconds`, counted from its creation) has passed. Refusals that no
//! waiting can fix (an invalid spec, a Restore of a Failed Backup) fail at once.

use crate::condition::Invalid;
use jiff::{SignedDuration, Timestamp};
use std::time::Duration;

/// The start deadline when the spec sets none: ten minutes. Everything that resolves itself
/// does so well within it (a static PV binds within the binder's 15 s resync, a provisioned
/// disk in about a minute, an S3 repository's probe in seconds and again every minute while it
/// fails), and a real mistake (a misspelt repository, a selector that matches nothing) still
/// shows as a Failed resource, an event and an alert within the same coffee break.
pub const DEFAULT_STARTING_DEADLINE_SECONDS: i64 = 600;

/// What a Pending Backup or Restore waits for; each has its own condition reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitingFor {
    /// The repository to exist and be Ready.
    Repository,
    /// PVCs to exist (match the selector) and be bound.
    Volume,
    /// The BackupPolicy a Backup names to exist.
    Policy,
    /// The Backup a Restore names to exist.
    Backup,
    /// The Backup a Restore names to finish. Not bounded by the start deadline: that Backup is
    /// bounded itself (its own start deadline, its Jobs' `activeDeadlineSeconds`), and a restore
    /// queued behind a long backup must not fail while the backup still makes progress.
    BackupToFinish,
    /// The cluster to serve the `snapshot.storage.k8s.io/v1` API (its CRDs installed).
    SnapshotApi,
    /// The VolumeSnapshotClass of a snapshot strategy to exist.
    SnapshotClass,
    /// A Secret a command container names to exist (applied with it, a moment later).
    Secret,
}

impl WaitingFor {
    /// The condition and event reason while waiting.
    pub fn reason(self) -> &'static str {
        match self {
            WaitingFor::Repository => "WaitingForRepository",
            WaitingFor::Volume => "WaitingForVolume",
            WaitingFor::Policy => "WaitingForPolicy",
            WaitingFor::Backup | WaitingFor::BackupToFinish => "WaitingForBackup",
            WaitingFor::SnapshotApi => "SnapshotAPIUnavailable",
            WaitingFor::SnapshotClass => "WaitingForSnapshotClass",
            WaitingFor::Secret => "WaitingForSecret",
        }
    }

    fn bounded(self) -> bool {
        self != WaitingFor::BackupToFinish
    }

    /// How often to look again at what nothing watches (the snapshot API may not exist, so
    /// neither it nor its classes can be watched; the operator may not list Secrets): a wait
    /// for them ends soon after they appear.
    fn polled(self) -> Option<SignedDuration> {
        match self {
            WaitingFor::SnapshotApi | WaitingFor::SnapshotClass | WaitingFor::Secret => {
                Some(SignedDuration::from_secs(5))
            }
            _ => None,
        }
    }
}

/// Why a Backup or Restore cannot start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Can be fixed by objects appearing or becoming ready: wait for `on`; at the deadline,
    /// fail with `why`.
    Wait { on: WaitingFor, why: Invalid },
    /// No waiting fixes it: fail now.
    Fail(Invalid),
}

impl Refusal {
    pub fn wait(on: WaitingFor, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Refusal::Wait {
            on,
            why: Invalid::new(reason, message),
        }
    }
}

impl From<Invalid> for Refusal {
    fn from(invalid: Invalid) -> Self {
        Refusal::Fail(invalid)
    }
}

/// What to do with a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Stay Pending with this condition reason and message; look again after `recheck_in` even
    /// if nothing changes (the deadline), or only when something changes (`None`).
    Wait {
        reason: &'static str,
        message: String,
        recheck_in: Option<Duration>,
    },
    Fail(Invalid),
}

/// The verdict on `refusal` for an object created at `created` with start deadline
/// `deadline_seconds` (the default when `None`).
pub fn decide(
    refusal: Refusal,
    created: Option<Timestamp>,
    deadline_seconds: Option<i64>,
    now: Timestamp,
) -> Verdict {
    let (on, why) = match refusal {
        Refusal::Fail(why) => return Verdict::Fail(why),
        Refusal::Wait { on, why } => (on, why),
    };
    if !on.bounded() {
        return Verdict::Wait {
            reason: on.reason(),
            message: format!("{}; starts when it has finished", why.message),
            recheck_in: None,
        };
    }
    let seconds = deadline_seconds
        .unwrap_or(DEFAULT_STARTING_DEADLINE_SECONDS)
        .max(0);
    let deadline = created.unwrap_or(now) + SignedDuration::from_secs(seconds);
    let left = deadline.duration_since(now);
    if left <= SignedDuration::ZERO {
        return Verdict::Fail(Invalid::new(
            why.reason,
            format!(
                "{} (still so after the start deadline of {seconds}s, spec.startingDeadlineSeconds)",
                why.message
            ),
        ));
    }
    Verdict::Wait {
        reason: on.reason(),
        message: format!(
            "{}; waiting until {} (spec.startingDeadlineSeconds {seconds}), then failing with {}",
            why.message,
            deadline.round(jiff::Unit::Second).unwrap_or(deadline),
            why.reason
        ),
        // Just past the deadline, so the next look fails it (sooner for what is polled).
        recheck_in: Duration::try_from(
            on.polled()
                .map_or(left, |every| every.min(left))
                .checked_add(SignedDuration::from_millis(100))
                .unwrap_or(left),
        )
        .ok(),
    }
}

/// A spec's `startingDeadlineSeconds` must not be negative.
pub fn validate_deadline(seconds: Option<i64>) -> Result<(), Invalid> {
    match seconds {
        Some(s) if s < 0 => Err(Invalid::new(
            "InvalidSpec",
            format!("spec.startingDeadlineSeconds is {s}; it must be 0 (never wait) or more"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn repo_not_ready() -> Refusal {
        Refusal::wait(
            WaitingFor::Repository,
            "RepositoryNotReady",
            "PVC \"backups\" is Pending",
        )
    }

    #[test]
    fn a_missing_snapshot_api_is_looked_at_again_soon_and_named_as_the_reason() {
        let refusal = Refusal::wait(
            WaitingFor::SnapshotApi,
            "SnapshotAPIUnavailable",
            "no snapshot CRDs",
        );
        let created = at("2026-11-26T10:00:00Z");
        let Verdict::Wait {
            reason, recheck_in, ..
        } = decide(refusal.clone(), Some(created), None, created)
        else {
            panic!("expected to wait");
        };
        assert_eq!(reason, "SnapshotAPIUnavailable");
        assert_eq!(recheck_in, Some(Duration::from_millis(5100)));
        let Verdict::Wait { recheck_in, .. } = decide(refusal, Some(created), Some(2), created)
        else {
            panic!("expected to wait");
        };
        assert_eq!(
            recheck_in,
            Some(Duration::from_millis(2100)),
            "never past the deadline"
        );
    }

    #[test]
    fn a_transient_refusal_waits_until_the_deadline_then_fails_with_its_reason() {
        let created = at("2026-11-26T10:00:00Z");
        let waiting = decide(
            repo_not_ready(),
            Some(created),
            None,
            at("2026-11-26T10:09:00Z"),
        );
        let Verdict::Wait {
            reason,
            message,
            recheck_in,
        } = waiting
        else {
            panic!("expected to wait: {waiting:?}");
        };
        assert_eq!(reason, "WaitingForRepository");
        assert!(
            message.starts_with("PVC \"backups\" is Pending; waiting until 2026-11-26T10:10:00Z"),
            "{message}"
        );
        assert!(
            message.ends_with("then failing with RepositoryNotReady"),
            "{message}"
        );
        assert_eq!(recheck_in, Some(Duration::from_millis(60_100)));

        let late = decide(
            repo_not_ready(),
            Some(created),
            None,
            at("2026-11-26T10:10:00Z"),
        );
        let Verdict::Fail(why) = late else {
            panic!("expected to fail at the deadline: {late:?}");
        };
        assert_eq!(why.reason, "RepositoryNotReady");
        assert!(
            why.message.contains("start deadline of 600s"),
            "{}",
            why.message
        );
    }

    #[test]
    fn the_spec_deadline_replaces_the_default_and_zero_never_waits() {
        let created = at("2026-11-26T10:00:00Z");
        let now = at("2026-11-26T10:00:30Z");
        assert!(matches!(
            decide(repo_not_ready(), Some(created), Some(60), now),
            Verdict::Wait { recheck_in: Some(d), .. } if d == Duration::from_millis(30_100)
        ));
        assert!(matches!(
            decide(repo_not_ready(), Some(created), Some(20), now),
            Verdict::Fail(_)
        ));
        assert!(matches!(
            decide(repo_not_ready(), Some(created), Some(0), created),
            Verdict::Fail(_)
        ));
    }

    #[test]
    fn a_permanent_refusal_fails_at_once() {
        let why = Invalid::new("BackupNotCompleted", "Backup \"b\" is Failed");
        assert_eq!(
            decide(
                why.clone().into(),
                None,
                Some(3600),
                at("2026-11-26T10:00:00Z")
            ),
            Verdict::Fail(why)
        );
    }

    #[test]
    fn waiting_for_a_running_backup_is_not_bounded_by_the_deadline() {
        let created = at("2026-11-26T10:00:00Z");
        let verdict = decide(
            Refusal::wait(
                WaitingFor::BackupToFinish,
                "BackupNotCompleted",
                "Backup \"b\" is Running",
            ),
            Some(created),
            Some(1),
            at("2026-11-26T12:00:00Z"),
        );
        assert_eq!(
            verdict,
            Verdict::Wait {
                reason: "WaitingForBackup",
                message: "Backup \"b\" is Running; starts when it has finished".into(),
                recheck_in: None
            }
        );
    }

    #[test]
    fn negative_deadlines_are_invalid() {
        assert!(validate_deadline(Some(-1)).is_err());
        assert!(validate_deadline(Some(0)).is_ok());
        assert!(validate_deadline(None).is_ok());
    }
}
