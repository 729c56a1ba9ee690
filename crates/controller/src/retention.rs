//! Which backups retention removes. Only Completed backups count; the newest `keep_last` stay;
//! Running, Pending and Failed backups are never touched.

use crate::scheduling::BackupSummary;
use backstop_api::BackupPhase;

/// Whether a backup counts for retention: Completed and not already being deleted.
pub fn counts(backup: &BackupSummary) -> bool {
    backup.phase == BackupPhase::Completed && !backup.deleting
}

/// Names of the backups to delete, oldest first.
pub fn expired(backups: &[BackupSummary], keep_last: Option<i64>) -> Vec<String> {
    let Some(keep) = keep_last
        .and_then(|k| usize::try_from(k).ok())
        .filter(|k| *k >= 1)
    else {
        return Vec::new();
    };
    let mut completed: Vec<&BackupSummary> = backups.iter().filter(|b| counts(b)).collect();
    // Newest first: by the time they stand for, then completion, then name (deterministic).
    completed.sort_by(|a, b| {
        let key = |x: &BackupSummary| (x.scheduled_time.or(x.created), x.completion_time);
        key(b).cmp(&key(a)).then_with(|| b.name.cmp(&a.name))
    });
    let mut doomed: Vec<String> = completed
        .into_iter()
        .skip(keep)
        .map(|b| b.name.clone())
        .collect();
    doomed.reverse();
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    fn backup(name: &str, minute: i64, phase: BackupPhase) -> BackupSummary {
        let at = Timestamp::from_second(1_800_000_000 + minute * 60).unwrap();
        BackupSummary {
            name: name.into(),
            phase,
            scheduled_time: Some(at),
            created: Some(at),
            completion_time: Some(at),
            deleting: false,
            ..BackupSummary::default()
        }
    }

    #[test]
    fn keeps_the_newest_completed_backups() {
        let backups = [
            backup("b1", 1, BackupPhase::Completed),
            backup("b2", 2, BackupPhase::Completed),
            backup("b3", 3, BackupPhase::Completed),
            backup("b4", 4, BackupPhase::Completed),
        ];
        assert_eq!(expired(&backups, Some(2)), vec!["b1", "b2"]);
        assert!(expired(&backups, Some(4)).is_empty());
        assert!(expired(&backups, None).is_empty());
    }

    #[test]
    fn retention_never_deletes_running_or_failed_backups() {
        let backups = [
            backup("old-failed", 1, BackupPhase::Failed),
            backup("c1", 2, BackupPhase::Completed),
            backup("c2", 3, BackupPhase::Completed),
            backup("running", 4, BackupPhase::Running),
            backup("pending", 5, BackupPhase::Pending),
        ];
        assert_eq!(expired(&backups, Some(1)), vec!["c1"]);
    }

    #[test]
    fn backups_already_being_deleted_do_not_count() {
        let mut gone = backup("c0", 0, BackupPhase::Completed);
        gone.deleting = true;
        let backups = [
            gone,
            backup("c1", 1, BackupPhase::Completed),
            backup("c2", 2, BackupPhase::Completed),
        ];
        assert_eq!(expired(&backups, Some(1)), vec!["c1"]);
    }

    #[test]
    fn keep_last_below_one_deletes_nothing() {
        // Validation refuses keepLast < 1; retention must not rely on it.
        let backups = [
            backup("b1", 1, BackupPhase::Completed),
            backup("b2", 2, BackupPhase::Completed),
        ];
        assert!(expired(&backups, Some(0)).is_empty());
        assert!(expired(&backups, Some(-1)).is_empty());
    }

    #[test]
    fn newest_means_the_scheduled_time_not_when_the_object_was_created() {
        // A catch-up run for 01:00 created at 05:00 is older than the 02:00 run created at 02:00.
        let mut late_catch_up = backup("for-0100", 1, BackupPhase::Completed);
        late_catch_up.created = Some(Timestamp::from_second(1_800_000_000 + 5 * 60).unwrap());
        let on_time = backup("for-0200", 2, BackupPhase::Completed);
        assert_eq!(
            expired(&[late_catch_up, on_time], Some(1)),
            vec!["for-0100"]
        );
    }
}
