//! Conditions and the reasons behind them: one place that turns a decision into the
//! `status.conditions` entry a user reads with `kubectl describe`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A rejected spec: a machine-readable reason (CamelCase) and a message saying what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub reason: String,
    pub message: String,
}

impl Invalid {
    pub fn new(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

/// The conditions Backstop's resources have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionType {
    /// Policies and repositories: whether they can be used now.
    Ready,
    /// Backups and Restores: whether they finished successfully (False while running or failed).
    Completed,
    /// Backups and Restores that failed: why.
    Failed,
    /// Completed Backups: whether nothing changed while it was read.
    Consistent,
    /// Backups being deleted: what holds the deletion.
    Deleting,
    /// Policies: whether the retention brake holds deletions back until a person approves.
    RetentionHeld,
    /// Completed Backups: whether the last conclusive verification found the backup sound.
    Verified,
    /// Repositories: whether the last sync imported every backup it found (False: it skipped
    /// objects, or failed).
    Synced,
    /// Repositories: whether this cluster may write the namespace's part (False: another
    /// cluster owns it, and this one only reads; see `ownership`).
    Writable,
}

impl ConditionType {
    pub const fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::Completed => "Completed",
            ConditionType::Failed => "Failed",
            ConditionType::Consistent => "Consistent",
            ConditionType::Deleting => "Deleting",
            ConditionType::RetentionHeld => "RetentionHeld",
            ConditionType::Verified => "Verified",
            ConditionType::Synced => "Synced",
            ConditionType::Writable => "Writable",
        }
    }
}

/// Sets condition `type_` in `conditions`, keeping `lastTransitionTime` when the status did not
/// change (so the time says when it last flipped, as Kubernetes conventions ask). Whether its
/// status or reason changed (a condition that was not there counts as changed): news worth an
/// event.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: ConditionType,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> bool {
    let type_ = type_.as_str();
    let status = if status { "True" } else { "False" }.to_string();
    let news = !conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == status && c.reason == reason);
    let transition = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    conditions.retain(|c| c.type_ != type_);
    conditions.push(Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time: transition,
    });
    news
}

/// Cuts `s` to at most `max` bytes on a character boundary (events, termination messages and
/// conditions all have size limits).
pub fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Marks a finished operation as completed: `Completed=True` with `message`.
pub fn set_completed(
    conditions: &mut Vec<Condition>,
    message: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
) {
    set(
        conditions,
        ConditionType::Completed,
        true,
        "Completed",
        message,
        generation,
        now,
    );
}

/// Marks a finished operation as failed: `Completed=False` and `Failed=True`, both with `why`.
pub fn set_failed(
    conditions: &mut Vec<Condition>,
    why: &Invalid,
    generation: Option<i64>,
    now: jiff::Timestamp,
) {
    set(
        conditions,
        ConditionType::Completed,
        false,
        &why.reason,
        &why.message,
        generation,
        now,
    );
    set(
        conditions,
        ConditionType::Failed,
        true,
        &why.reason,
        &why.message,
        generation,
        now,
    );
}

pub fn find(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_str())
}

pub fn is_true(conditions: &[Condition], type_: ConditionType) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_a_condition_says_whether_its_status_or_reason_is_news() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        let mut conditions = Vec::new();
        let mut put = |ok, reason: &str, message: &str| {
            set(
                &mut conditions,
                ConditionType::Writable,
                ok,
                reason,
                message,
                None,
                now,
            )
        };
        assert!(put(false, "RepositoryOwnedElsewhere", "a"), "new");
        assert!(
            !put(false, "RepositoryOwnedElsewhere", "b"),
            "only the message"
        );
        assert!(put(false, "Other", "b"), "another reason");
        assert!(put(true, "Other", "b"), "another status");
    }

    #[test]
    fn truncation_respects_character_boundaries() {
        assert_eq!(truncate("héllo".into(), 2), "h");
        assert_eq!(truncate("abc".into(), 10), "abc");
    }

    #[test]
    fn transition_time_only_moves_when_the_status_flips() {
        let t0 = jiff::Timestamp::from_second(1_000).unwrap();
        let t1 = jiff::Timestamp::from_second(2_000).unwrap();
        let t2 = jiff::Timestamp::from_second(3_000).unwrap();
        let mut conditions = Vec::new();
        set(
            &mut conditions,
            ConditionType::Ready,
            false,
            "PVCNotFound",
            "a",
            Some(1),
            t0,
        );
        set(
            &mut conditions,
            ConditionType::Ready,
            false,
            "PVCNotFound",
            "b",
            Some(2),
            t1,
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time.0, t0);
        assert_eq!(conditions[0].message, "b");
        set(
            &mut conditions,
            ConditionType::Ready,
            true,
            "Ready",
            "ok",
            Some(2),
            t2,
        );
        assert_eq!(conditions[0].last_transition_time.0, t2);
        assert!(is_true(&conditions, ConditionType::Ready));
    }
}
