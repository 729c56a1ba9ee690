//! Which backups retention removes, and why each of the others stays.
//!
//! Only good backups count: Completed, not being deleted, not failed at verification, and not
//! empty where the good one before had files (a selector or volume that suddenly backs up
//! nothing must not push real backups out). Running, Pending, Failed, empty and
//! failed-verification backups are never removed by retention.
//!
//! The rules are restic's and borg's: `keepLast` keeps the newest N; `keepHourly` (daily, weekly,
//! monthly, yearly) keeps the newest backup of each of the N newest hours (days, ISO weeks,
//! months, years) that have one, read in the policy's time zone; a backup stays when any rule
//! keeps it. Whatever the rules, the newest good backup stays (the floor). No rule at all keeps
//! everything.

use crate::scheduling::BackupSummary;
use backstop_api::BackupPhase;
use backstop_api::policy::Retention;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use std::collections::{HashMap, HashSet};

/// Why a backup is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
    /// The newest good backup, which no rule may remove.
    Newest,
}

impl Rule {
    pub const fn as_str(self) -> &'static str {
        match self {
            Rule::Last => "last",
            Rule::Hourly => "hourly",
            Rule::Daily => "daily",
            Rule::Weekly => "weekly",
            Rule::Monthly => "monthly",
            Rule::Yearly => "yearly",
            Rule::Newest => "newest",
        }
    }
}

/// What retention decides for a policy's backups.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// Good backups that stay, newest first, with the rules that keep each.
    pub kept: Vec<(String, Vec<Rule>)>,
    /// Good backups to delete, oldest first.
    pub expired: Vec<String>,
    /// Completed backups of no files where the good one before had files: never counted, never
    /// removed by retention.
    pub empty: Vec<String>,
}

/// Whether a backup is Completed, not already being deleted, and did not fail its last
/// verification.
pub fn counts(backup: &BackupSummary) -> bool {
    backup.phase == BackupPhase::Completed && !backup.deleting && backup.verified != Some(false)
}

/// The time a backup stands for: its scheduled time, else when it was made.
fn taken(b: &BackupSummary) -> Option<Timestamp> {
    b.scheduled_time.or(b.created)
}

/// The rule's count, if the rule is set (validation refuses values below 1; retention does not
/// rely on it).
fn count(n: Option<i64>) -> Option<usize> {
    n.and_then(|n| usize::try_from(n).ok()).filter(|n| *n >= 1)
}

/// The bucket a time falls in for `rule`, in `zone`: two backups in the same bucket are one for
/// the rule.
fn bucket(rule: Rule, at: Timestamp, zone: &TimeZone) -> (i32, i32, i32, i32) {
    let z = at.to_zoned(zone.clone());
    let (y, m, d, h) = (
        i32::from(z.year()),
        i32::from(z.month()),
        i32::from(z.day()),
        i32::from(z.hour()),
    );
    match rule {
        // Last and Newest have no buckets (see `judge`).
        Rule::Hourly | Rule::Last | Rule::Newest => (y, m, d, h),
        Rule::Daily => (y, m, d, 0),
        Rule::Weekly => {
            let week = z.date().iso_week_date();
            (i32::from(week.year()), i32::from(week.week()), 0, 0)
        }
        Rule::Monthly => (y, m, 0, 0),
        Rule::Yearly => (y, 0, 0, 0),
    }
}

/// Which of `backups` retention removes under `rules`, read in `zone`. Backups imported from a
/// repository are judged with the rest, but never cost this cluster's own a place: one of its
/// own is removed only when the rules would remove it were there no imported backup at all (a
/// record planted in the repository cannot make retention delete a genuine backup).
pub fn judge(backups: &[BackupSummary], rules: &Retention, zone: &TimeZone) -> Verdict {
    let all = judge_all(backups, rules, zone);
    if !backups.iter().any(|b| b.imported) {
        return all;
    }
    let own: Vec<BackupSummary> = backups.iter().filter(|b| !b.imported).cloned().collect();
    let alone = judge_all(&own, rules, zone);
    // By name: a policy after a disaster recovery may have thousands of backups.
    let imported: HashSet<&str> = backups
        .iter()
        .filter(|b| b.imported)
        .map(|b| b.name.as_str())
        .collect();
    let expired_alone: HashSet<&str> = alone.expired.iter().map(String::as_str).collect();
    let kept_alone: HashMap<&str, &Vec<Rule>> = alone
        .kept
        .iter()
        .map(|(n, why)| (n.as_str(), why))
        .collect();
    let mut verdict = Verdict {
        empty: all.empty,
        ..Verdict::default()
    };
    for name in all.expired {
        if imported.contains(name.as_str()) || expired_alone.contains(name.as_str()) {
            verdict.expired.push(name);
        } else if let Some(why) = kept_alone.get(name.as_str()) {
            verdict.kept.push((name, (*why).clone()));
        }
    }
    verdict.kept.extend(all.kept);
    let taken_of: HashMap<&str, Option<Timestamp>> = backups
        .iter()
        .map(|b| (b.name.as_str(), taken(b)))
        .collect();
    verdict
        .kept
        .sort_by_key(|(name, _)| std::cmp::Reverse(taken_of.get(name.as_str()).copied().flatten()));
    verdict
}

fn judge_all(backups: &[BackupSummary], rules: &Retention, zone: &TimeZone) -> Verdict {
    // Oldest first, to tell empty backups from the good one before them.
    let mut completed: Vec<&BackupSummary> = backups.iter().filter(|b| counts(b)).collect();
    completed.sort_by(|a, b| {
        (taken(a), a.completion_time, &a.name).cmp(&(taken(b), b.completion_time, &b.name))
    });
    let mut good: Vec<&BackupSummary> = Vec::new();
    let mut empty = Vec::new();
    for b in completed {
        let had_files = good.last().is_some_and(|g| g.total_files.unwrap_or(0) > 0);
        if b.total_files == Some(0) && had_files {
            empty.push(b.name.clone());
        } else {
            good.push(b);
        }
    }
    good.reverse();
    let set: Vec<(Rule, usize)> = [
        (Rule::Last, rules.keep_last),
        (Rule::Hourly, rules.keep_hourly),
        (Rule::Daily, rules.keep_daily),
        (Rule::Weekly, rules.keep_weekly),
        (Rule::Monthly, rules.keep_monthly),
        (Rule::Yearly, rules.keep_yearly),
    ]
    .into_iter()
    .filter_map(|(rule, n)| count(n).map(|n| (rule, n)))
    .collect();
    if set.is_empty() {
        return Verdict {
            empty,
            ..Verdict::default()
        };
    }
    let mut reasons: Vec<Vec<Rule>> = vec![Vec::new(); good.len()];
    for (rule, n) in set {
        let mut last_bucket = None;
        let mut kept = 0;
        for (i, b) in good.iter().enumerate() {
            if kept == n {
                break;
            }
            // Each backup is a bucket of its own for `last` (and when it has no time at all).
            let this = match rule {
                Rule::Last => None,
                _ => taken(b).map(|t| bucket(rule, t, zone)),
            };
            if this.is_none() || this != last_bucket {
                reasons[i].push(rule);
                kept += 1;
                last_bucket = this;
            }
        }
    }
    if let Some(newest) = reasons.first_mut()
        && newest.is_empty()
    {
        newest.push(Rule::Newest);
    }
    let mut verdict = Verdict {
        empty,
        ..Verdict::default()
    };
    for (b, why) in good.into_iter().zip(reasons) {
        if why.is_empty() {
            verdict.expired.push(b.name.clone());
        } else {
            verdict.kept.push((b.name.clone(), why));
        }
    }
    verdict.expired.reverse();
    verdict
}

/// Whether deleting `doomed` of `good` backups is more than the brake lets one pass delete:
/// more than `percent` of them, and more than one (a single deletion is the steady state of every
/// rule).
pub fn over_the_brake(doomed: usize, good: usize, percent: u8) -> bool {
    doomed > 1 && doomed * 100 > good * usize::from(percent)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names of the backups `keep_last` alone deletes, oldest first.
    fn expired(backups: &[BackupSummary], keep_last: Option<i64>) -> Vec<String> {
        let rules = Retention {
            keep_last,
            ..Retention::default()
        };
        judge(backups, &rules, &TimeZone::UTC).expired
    }

    fn backup(name: &str, minute: i64, phase: BackupPhase) -> BackupSummary {
        let at = Timestamp::from_second(1_800_000_000 + minute * 60).unwrap();
        BackupSummary {
            name: name.into(),
            phase,
            scheduled_time: Some(at),
            created: Some(at),
            completion_time: Some(at),
            deleting: false,
            total_files: Some(10),
            ..BackupSummary::default()
        }
    }

    /// A Completed backup scheduled at `at` (an RFC 3339 time), named after it.
    fn at(at: &str) -> BackupSummary {
        let t: Timestamp = at.parse().unwrap();
        BackupSummary {
            name: at.into(),
            phase: BackupPhase::Completed,
            scheduled_time: Some(t),
            created: Some(t),
            completion_time: Some(t),
            total_files: Some(10),
            ..BackupSummary::default()
        }
    }

    fn kept_names(v: &Verdict) -> Vec<&str> {
        let mut names: Vec<&str> = v.kept.iter().map(|(n, _)| n.as_str()).collect();
        names.sort();
        names
    }

    fn rules(f: impl FnOnce(&mut Retention)) -> Retention {
        let mut r = Retention::default();
        f(&mut r);
        r
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
    fn imported_backups_never_push_this_clusters_own_out() {
        let imported = |name: &str, minute| BackupSummary {
            imported: true,
            ..backup(name, minute, BackupPhase::Completed)
        };
        // Records planted in the repository, newer than every genuine backup.
        let backups = [
            backup("b1", 1, BackupPhase::Completed),
            backup("b2", 2, BackupPhase::Completed),
            backup("b3", 3, BackupPhase::Completed),
            imported("f10", 10),
            imported("f11", 11),
            imported("f12", 12),
        ];
        let rules = rules(|r| r.keep_last = Some(2));
        let verdict = judge(&backups, &rules, &TimeZone::UTC);
        assert_eq!(verdict.expired, vec!["b1", "f10"]);
        assert_eq!(kept_names(&verdict), vec!["b2", "b3", "f11", "f12"]);
        let b3 = verdict.kept.iter().find(|(n, _)| n == "b3").unwrap();
        assert_eq!(b3.1, vec![Rule::Last]);
        // Imported backups older than this cluster's age out as the rules say.
        let older = [
            imported("i1", 1),
            imported("i2", 2),
            backup("b3", 3, BackupPhase::Completed),
            backup("b4", 4, BackupPhase::Completed),
        ];
        assert_eq!(expired(&older, Some(2)), vec!["i1", "i2"]);
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
    fn a_backup_that_failed_verification_is_neither_counted_nor_removed() {
        let mut damaged = backup("c2", 2, BackupPhase::Completed);
        damaged.verified = Some(false);
        let mut sound = backup("c1", 1, BackupPhase::Completed);
        sound.verified = Some(true);
        let backups = [
            backup("c0", 0, BackupPhase::Completed),
            sound,
            damaged,
            backup("c3", 3, BackupPhase::Completed),
        ];
        // keepLast=2 keeps c3 and c1 (c2 is not good), and leaves c2 alone.
        let verdict = judge(&backups, &rules(|r| r.keep_last = Some(2)), &TimeZone::UTC);
        assert_eq!(kept_names(&verdict), vec!["c1", "c3"]);
        assert_eq!(verdict.expired, vec!["c0"]);
        // The floor is the newest good backup, not the newest Completed one.
        let only_damaged_newest = [backup("c1", 1, BackupPhase::Completed), {
            let mut d = backup("c2", 2, BackupPhase::Completed);
            d.verified = Some(false);
            d
        }];
        let verdict = judge(
            &only_damaged_newest,
            &rules(|r| r.keep_daily = Some(1)),
            &TimeZone::UTC,
        );
        assert_eq!(verdict.kept, vec![("c1".to_string(), vec![Rule::Daily])]);
        assert!(verdict.expired.is_empty());
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

    #[test]
    fn daily_keeps_the_newest_of_each_of_the_newest_days() {
        let backups = [
            at("2026-11-20T02:00:00Z"),
            at("2026-11-20T14:00:00Z"),
            at("2026-11-21T02:00:00Z"),
            at("2026-11-21T14:00:00Z"),
            at("2026-11-22T02:00:00Z"),
        ];
        let v = judge(&backups, &rules(|r| r.keep_daily = Some(2)), &TimeZone::UTC);
        assert_eq!(
            kept_names(&v),
            ["2026-11-21T14:00:00Z", "2026-11-22T02:00:00Z"]
        );
        assert_eq!(
            v.expired,
            [
                "2026-11-20T02:00:00Z",
                "2026-11-20T14:00:00Z",
                "2026-11-21T02:00:00Z"
            ]
        );
    }

    #[test]
    fn the_rules_keep_the_union_and_say_which_keeps_what() {
        // Hourly backups over three days; keep the last 2, 3 daily, 2 weekly.
        let backups: Vec<BackupSummary> = (0..72)
            .map(|h| {
                let t = Timestamp::from_second(1_795_000_000 / 86_400 * 86_400 + h * 3600).unwrap();
                at(&t.to_string())
            })
            .collect();
        let v = judge(
            &backups,
            &rules(|r| {
                r.keep_last = Some(2);
                r.keep_daily = Some(3);
                r.keep_weekly = Some(2);
            }),
            &TimeZone::UTC,
        );
        // The newest is kept by all three rules; the one before by last only; the last of each
        // of the two days before by daily; the weekly rule finds a second week only if the three
        // days span one.
        assert_eq!(v.kept[0].1, [Rule::Last, Rule::Daily, Rule::Weekly]);
        assert_eq!(v.kept[1].1, [Rule::Last]);
        let daily: Vec<&str> = v
            .kept
            .iter()
            .filter(|(_, why)| why.contains(&Rule::Daily))
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(daily.len(), 3);
        assert!(daily.iter().all(|n| n.ends_with("T23:00:00Z")), "{daily:?}");
        assert_eq!(v.kept.len() + v.expired.len(), 72);
    }

    #[test]
    fn weekly_uses_iso_weeks_and_monthly_sees_month_ends_in_the_time_zone() {
        // Sunday 2026-11-29 and Monday 2026-11-30 are in different ISO weeks.
        let week = [at("2026-11-29T12:00:00Z"), at("2026-11-30T12:00:00Z")];
        let v = judge(&week, &rules(|r| r.keep_weekly = Some(2)), &TimeZone::UTC);
        assert!(v.expired.is_empty());
        // 2026-11-30T23:30Z is already December in Paris (UTC+1): in UTC these two are one month,
        // in Paris two.
        let months = [at("2026-11-30T12:00:00Z"), at("2026-11-30T23:30:00Z")];
        let monthly = rules(|r| r.keep_monthly = Some(2));
        assert_eq!(
            judge(&months, &monthly, &TimeZone::UTC).expired,
            ["2026-11-30T12:00:00Z"]
        );
        let paris = TimeZone::get("Europe/Paris").unwrap();
        assert!(judge(&months, &monthly, &paris).expired.is_empty());
    }

    #[test]
    fn hourly_counts_the_repeated_hour_of_a_dst_change_twice() {
        // Paris leaves summer time on 2026-10-25: 02:00-03:00 local happens twice (00:xx and
        // 01:xx UTC). Buckets are civil times, as restic's are: the repeated hour is one hour.
        let paris = TimeZone::get("Europe/Paris").unwrap();
        let backups = [
            at("2026-10-25T00:10:00Z"), // 02:10 CEST
            at("2026-10-25T00:50:00Z"), // 02:50 CEST
            at("2026-10-25T01:10:00Z"), // 02:10 CET
            at("2026-10-25T01:50:00Z"), // 02:50 CET
        ];
        let v = judge(&backups, &rules(|r| r.keep_hourly = Some(10)), &paris);
        assert_eq!(kept_names(&v), ["2026-10-25T01:50:00Z"]);
        // Daily in Paris across the change: one day.
        let d = judge(&backups, &rules(|r| r.keep_daily = Some(10)), &paris);
        assert_eq!(kept_names(&d), ["2026-10-25T01:50:00Z"]);
    }

    #[test]
    fn the_newest_good_backup_is_never_deleted() {
        // A run of failures after one good backup: keepLast counts good ones only.
        let backups = [
            backup("good", 1, BackupPhase::Completed),
            backup("f1", 2, BackupPhase::Failed),
            backup("f2", 3, BackupPhase::Failed),
            backup("f3", 4, BackupPhase::Failed),
        ];
        let v = judge(&backups, &rules(|r| r.keep_last = Some(1)), &TimeZone::UTC);
        assert_eq!(kept_names(&v), ["good"]);
        assert!(v.expired.is_empty());
        // A yearly rule alone keeps the newest of the year, which is the newest.
        let two = [
            backup("a", 1, BackupPhase::Completed),
            backup("b", 2, BackupPhase::Completed),
        ];
        let y = judge(&two, &rules(|r| r.keep_yearly = Some(1)), &TimeZone::UTC);
        assert_eq!(y.kept, [("b".to_string(), vec![Rule::Yearly])]);
    }

    #[test]
    fn an_empty_backup_after_good_ones_neither_counts_nor_goes() {
        let mut empty = backup("empty", 3, BackupPhase::Completed);
        empty.total_files = Some(0);
        let backups = [
            backup("g1", 1, BackupPhase::Completed),
            backup("g2", 2, BackupPhase::Completed),
            empty,
        ];
        let v = judge(&backups, &rules(|r| r.keep_last = Some(1)), &TimeZone::UTC);
        assert_eq!(v.empty, ["empty"]);
        assert_eq!(kept_names(&v), ["g2"], "the empty one did not push g2 out");
        assert_eq!(v.expired, ["g1"]);
        // With no rule (keep all), the empty one is still told.
        let all = judge(&backups, &Retention::default(), &TimeZone::UTC);
        assert_eq!(
            (all.empty.as_slice(), all.expired.len()),
            (&["empty".to_string()][..], 0)
        );
        // A policy whose volumes were always empty: those are its good backups.
        let mut e1 = backup("e1", 1, BackupPhase::Completed);
        e1.total_files = Some(0);
        let mut e2 = backup("e2", 2, BackupPhase::Completed);
        e2.total_files = Some(0);
        let always = judge(&[e1, e2], &rules(|r| r.keep_last = Some(1)), &TimeZone::UTC);
        assert!(always.empty.is_empty());
        assert_eq!(always.expired, ["e1"]);
    }

    #[test]
    fn the_brake_stops_mass_deletions_but_not_the_steady_state() {
        assert!(!over_the_brake(1, 2, 50), "keepLast 1: one of two");
        assert!(!over_the_brake(1, 1, 0), "one deletion is never held");
        assert!(!over_the_brake(5, 10, 50), "exactly half");
        assert!(over_the_brake(6, 10, 50));
        assert!(over_the_brake(9, 10, 50), "keepLast 10 -> 1");
        assert!(!over_the_brake(9, 10, 100), "100 turns the brake off");
    }
}
