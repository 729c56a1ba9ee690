//! The scheduled runs falling due now, so that making their Backups comes before every other
//! write.
//!
//! Cron runs come in bursts: at 10,000 policies, 200 every minute and 163 hourly ones share the
//! same second. Each run is about six writes (the Backup; the policy's status; the Backup failing
//! or starting, its event, the policy again), and the API server takes them in the order they
//! come: the last of 363 Backups appeared 4.9-5.9 s late, behind the writes of the runs before
//! it (controller bench at 10x). While a run is due and its Backup not made, the Backup
//! reconciler and the policies with nothing to make wait (`pending`), so the burst of Backups is
//! the only thing the API server is asked to do.
//!
//! Each policy reconcile says its next scheduled time (`planned`), once its due run was made or
//! found not makeable (a previous backup still running, a repository not ready): a run counts as
//! pending from its time until then, and for at most `WINDOW` (a deleted policy, or one whose
//! reconcile fails, does not hold the others back for longer).

use jiff::{SignedDuration, Timestamp};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

/// How long after its time a run not yet made holds other writes back.
pub const WINDOW: SignedDuration = SignedDuration::from_secs(5);

/// How long a write that waits for the due runs waits before it looks again.
pub const WAIT: Duration = Duration::from_millis(250);

/// A policy: (namespace, name).
pub type PolicyKey = (String, String);

#[derive(Default)]
struct Planned {
    by_policy: HashMap<PolicyKey, Timestamp>,
    by_time: BTreeSet<(Timestamp, PolicyKey)>,
}

/// Every policy's next run, as its last reconcile planned it.
#[derive(Default)]
pub struct DueRuns {
    planned: Mutex<Planned>,
}

impl DueRuns {
    /// Records that `policy`'s next run is at `next` (none: suspended, or no schedule).
    pub fn planned(&self, policy: PolicyKey, next: Option<Timestamp>) {
        let Ok(mut planned) = self.planned.lock() else {
            return;
        };
        let Planned { by_policy, by_time } = &mut *planned;
        match next {
            Some(at) => {
                if let Some(before) = by_policy.insert(policy.clone(), at) {
                    by_time.remove(&(before, policy.clone()));
                }
                by_time.insert((at, policy));
            }
            None => {
                if let Some(before) = by_policy.remove(&policy) {
                    by_time.remove(&(before, policy));
                }
            }
        }
    }

    /// Whether a run is due at `now` and not made yet (for at most `WINDOW` after its time).
    pub fn pending(&self, now: Timestamp) -> bool {
        let Ok(planned) = self.planned.lock() else {
            return false;
        };
        let oldest = now - WINDOW;
        planned
            .by_time
            .range((oldest, (String::new(), String::new()))..)
            .map(|(at, _)| *at)
            .find(|at| *at > oldest)
            .is_some_and(|at| at <= now)
    }

    /// Forgets the policies not in `existing` (deleted ones get no reconcile to say so).
    pub fn retain(&self, existing: &HashSet<PolicyKey>) {
        let Ok(mut planned) = self.planned.lock() else {
            return;
        };
        planned
            .by_policy
            .retain(|policy, _| existing.contains(policy));
        planned
            .by_time
            .retain(|(_, policy)| existing.contains(policy));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        format!("2026-11-28T{s}Z").parse().unwrap()
    }

    fn key(name: &str) -> PolicyKey {
        ("ns".into(), name.into())
    }

    #[test]
    fn a_run_is_pending_from_its_time_for_the_window() {
        let due = DueRuns::default();
        due.planned(key("a"), Some(at("10:00:00")));
        assert!(!due.pending(at("09:59:59.999")), "not yet due");
        assert!(due.pending(at("10:00:00")));
        assert!(due.pending(at("10:00:04.9")));
        assert!(!due.pending(at("10:00:05")), "past the window");
        assert!(!due.pending(at("11:00:00")));
    }

    #[test]
    fn a_run_made_is_no_longer_pending() {
        let due = DueRuns::default();
        due.planned(key("a"), Some(at("10:00:00")));
        due.planned(key("b"), Some(at("10:00:00")));
        due.planned(key("a"), Some(at("10:01:00")));
        assert!(due.pending(at("10:00:01")), "b is still due");
        due.planned(key("b"), Some(at("11:00:00")));
        assert!(!due.pending(at("10:00:01")));
        assert!(due.pending(at("10:01:00")), "a's next run");
    }

    #[test]
    fn a_run_older_than_the_window_does_not_hide_one_due_now() {
        let due = DueRuns::default();
        due.planned(key("stuck"), Some(at("09:00:00")));
        due.planned(key("a"), Some(at("10:00:00")));
        assert!(due.pending(at("10:00:01")));
    }

    #[test]
    fn suspended_and_deleted_policies_are_forgotten() {
        let due = DueRuns::default();
        due.planned(key("suspended"), Some(at("10:00:00")));
        due.planned(key("suspended"), None);
        assert!(!due.pending(at("10:00:01")));
        due.planned(key("deleted"), Some(at("10:00:00")));
        due.planned(key("kept"), Some(at("10:05:00")));
        due.retain(&HashSet::from([key("kept")]));
        assert!(!due.pending(at("10:00:01")));
        assert!(due.pending(at("10:05:01")));
    }
}
