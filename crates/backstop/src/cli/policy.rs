//! `backstop policy show POLICY`: when it runs next, which backups its retention keeps (and by
//! which rule) and would delete now (the operator's own rules, applied to the backups the cluster
//! has).

use super::format::age;
use super::{Output, Target, connect, not_found, print_structured};
use backstop_api::{Backup, BackupPolicy};
use backstop_controller::policy::{brake_holds, rules_text, summarize};
use backstop_controller::retention;
use jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde::Serialize;

#[derive(clap::Subcommand, Debug)]
pub enum PolicyCommand {
    /// A policy's schedule, next runs, last backups, and what retention would delete now.
    Show {
        policy: String,
        /// How many next runs to list.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
        #[command(flatten)]
        target: Target,
    },
}

/// What `policy show` tells, in the shape `-o yaml|json` prints.
#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
struct PolicyReport {
    name: String,
    namespace: String,
    schedule: String,
    time_zone: String,
    suspended: bool,
    next_runs: Vec<Timestamp>,
    /// The retention rules that are set (`keepLast=3, keepDaily=7`).
    retention: String,
    completed_backups: usize,
    last_successful_backup: Option<Timestamp>,
    /// The good backups retention keeps, newest first, with the rules that keep each.
    retention_keeps: Vec<(String, Vec<&'static str>)>,
    /// The Completed backups retention deletes, oldest first.
    retention_would_delete: Vec<String>,
    /// Whether the brake would hold those deletions (this generation not approved).
    held_by_the_brake: bool,
    /// `spec.verification`, as written (`Artifact on "0 4 * * 0"`), if set.
    verification: Option<String>,
    /// The next verification run, unless suspended.
    next_verification: Option<Timestamp>,
    /// Backups whose last conclusive verification failed (retention leaves them alone).
    failed_verification: Vec<String>,
    /// How the volumes are read (`direct`, or `snapshot with class "x"`).
    strategy: String,
}

impl PolicyCommand {
    pub async fn run(self) -> anyhow::Result<()> {
        let PolicyCommand::Show {
            policy,
            runs,
            output,
            target,
        } = self;
        let (client, namespace) = connect(&target).await?;
        let policies: Api<BackupPolicy> = Api::namespaced(client.clone(), &namespace);
        let found = policies
            .get(&policy)
            .await
            .map_err(|e| not_found(e, &format!("BackupPolicy {policy}"), &namespace))?;
        let all = Api::<Backup>::namespaced(client, &namespace)
            .list(&ListParams::default())
            .await?
            .items;
        let backups = super::backups::of_policy(all, Some(&policy));
        let report = report(&found, &backups, runs, Timestamp::now())?;
        if output != Output::Table {
            return print_structured(&report, output);
        }
        print!(
            "{}",
            super::format::printable(&describe(&report, Timestamp::now()))
        );
        Ok(())
    }
}

fn report(
    policy: &BackupPolicy,
    backups: &[Backup],
    runs: usize,
    now: Timestamp,
) -> anyhow::Result<PolicyReport> {
    let schedule = policy
        .spec
        .validate()
        .map_err(|invalid| anyhow::anyhow!("policy {} is invalid: {invalid}", policy.name_any()))?;
    let next_runs = if policy.spec.suspend {
        Vec::new()
    } else {
        std::iter::successors(schedule.next_after(now), |t| schedule.next_after(*t))
            .take(runs)
            .collect()
    };
    let summaries: Vec<_> = backups.iter().map(summarize).collect();
    let completed: Vec<_> = summaries.iter().filter(|b| retention::counts(b)).collect();
    let rules = &policy.spec.retention;
    let verdict = retention::judge(&summaries, rules, schedule.zone());
    let held = brake_holds(policy, &verdict);
    let verification_schedule = policy.spec.verification_schedule().ok().flatten();
    Ok(PolicyReport {
        name: policy.name_any(),
        namespace: policy.namespace().unwrap_or_default(),
        schedule: policy.spec.schedule.clone(),
        time_zone: policy
            .spec
            .time_zone
            .clone()
            .unwrap_or_else(|| "UTC".into()),
        suspended: policy.spec.suspend,
        next_runs,
        retention: rules_text(rules),
        completed_backups: completed.len(),
        last_successful_backup: completed.iter().filter_map(|b| b.completion_time).max(),
        retention_keeps: verdict
            .kept
            .into_iter()
            .map(|(name, why)| (name, why.into_iter().map(retention::Rule::as_str).collect()))
            .collect(),
        held_by_the_brake: held,
        retention_would_delete: verdict.expired,
        verification: policy
            .spec
            .verification
            .as_ref()
            .map(|v| format!("{} on {:?}", v.mode.as_str(), v.schedule)),
        next_verification: verification_schedule
            .filter(|_| !policy.spec.suspend)
            .and_then(|s| s.next_after(now)),
        failed_verification: summaries
            .iter()
            .filter(|b| b.verified == Some(false) && !b.deleting)
            .map(|b| b.name.clone())
            .collect(),
        strategy: strategy_text(policy.spec.strategy.as_ref()),
    })
}

/// The policy's strategy in a line.
fn strategy_text(strategy: Option<&backstop_api::Strategy>) -> String {
    let strategy = strategy.cloned().unwrap_or_default();
    if let Some(c) = &strategy.command {
        let restore = c.restore.as_ref().map_or_else(
            || "no restore command (a Restore must give one)".to_string(),
            |r| format!("restored with {:?}", r.argv().join(" ")),
        );
        return format!(
            "command {:?} in image {}, stream {:?}; {restore}",
            c.container.argv().join(" "),
            c.container.image,
            c.name()
        );
    }
    match &strategy.snapshot {
        None => "direct (the live volumes)".into(),
        Some(s) => format!(
            "snapshot with class {:?}, {}",
            s.volume_snapshot_class_name,
            if s.delete_snapshot_after {
                "snapshots deleted after"
            } else {
                "snapshots kept with their Backup"
            }
        ),
    }
}

fn describe(report: &PolicyReport, now: Timestamp) -> String {
    let mut out = format!(
        "Policy:      {}/{}\nSchedule:    {} ({})\n",
        report.namespace, report.name, report.schedule, report.time_zone
    );
    out.push_str(&format!("Strategy:    {}\n", report.strategy));
    if report.suspended {
        out.push_str("Next runs:   none, the policy is suspended\n");
    } else {
        out.push_str("Next runs:\n");
        for run in &report.next_runs {
            out.push_str(&format!("  {run}  (in {})\n", age(now, *run)));
        }
    }
    out.push_str(&format!(
        "Retention:   {}; {} Completed now",
        report.retention, report.completed_backups
    ));
    match report.last_successful_backup {
        Some(t) => out.push_str(&format!(", the last {} ago\n", age(t, now))),
        None => out.push('\n'),
    }
    if !report.retention_keeps.is_empty() {
        out.push_str("Keeps (newest first, and the rules that keep each):\n");
        for (name, rules) in &report.retention_keeps {
            out.push_str(&format!("  {name}  ({})\n", rules.join(", ")));
        }
    }
    if report.retention_would_delete.is_empty() {
        out.push_str("Would delete: nothing\n");
    } else {
        out.push_str("Would delete (with their data, oldest first):\n");
        for name in &report.retention_would_delete {
            out.push_str(&format!("  {name}\n"));
        }
        if report.held_by_the_brake {
            out.push_str(
                "  (held by the brake until approved: see the policy's RetentionHeld condition)\n",
            );
        }
    }
    match (&report.verification, report.next_verification) {
        (None, _) => out.push_str("Verification: none (set spec.verification)\n"),
        (Some(how), Some(next)) => out.push_str(&format!(
            "Verification: {how}, next at {next} (in {})\n",
            age(now, next)
        )),
        (Some(how), None) => {
            out.push_str(&format!("Verification: {how}, none while suspended\n"));
        }
    }
    if !report.failed_verification.is_empty() {
        out.push_str(&format!(
            "Failed verification (not counted, not deleted): {}\n",
            report.failed_verification.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::fixtures::{at, backup};
    use backstop_api::BackupPhase;

    fn policy(suspend: bool, keep_last: Option<i64>) -> BackupPolicy {
        let mut p: BackupPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "backstop.dev/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": "nightly", "namespace": "shop"},
            "spec": {"schedule": "0 2 * * *", "timeZone": "Europe/Paris", "suspend": suspend,
                     "target": {"pvcSelector": {"matchLabels": {"app": "db"}}}}
        }))
        .unwrap();
        p.spec.retention.keep_last = keep_last;
        p
    }

    #[test]
    fn next_runs_follow_the_schedule_in_its_time_zone() {
        // 2027-01-15T08:00:00Z; 02:00 in Paris (UTC+1 in winter) is 01:00 UTC.
        let now: Timestamp = "2027-01-15T08:00:00Z".parse().unwrap();
        let r = report(&policy(false, None), &[], 3, now).unwrap();
        let runs: Vec<String> = r.next_runs.iter().map(ToString::to_string).collect();
        assert_eq!(
            runs,
            [
                "2027-01-16T01:00:00Z",
                "2027-01-17T01:00:00Z",
                "2027-01-18T01:00:00Z"
            ]
        );
        let text = describe(&r, now);
        assert!(text.contains("0 2 * * * (Europe/Paris)"), "{text}");
        assert!(text.contains("2027-01-16T01:00:00Z  (in 17h)"), "{text}");
        assert!(
            report(&policy(true, None), &[], 3, now)
                .unwrap()
                .next_runs
                .is_empty()
        );
        assert!(
            describe(&report(&policy(true, None), &[], 3, now).unwrap(), now).contains("suspended")
        );
    }

    #[test]
    fn retention_preview_is_the_operators_rule() {
        let backups = [
            backup("b1", "nightly", 3600, BackupPhase::Completed, &[]),
            backup("b2", "nightly", 7200, BackupPhase::Completed, &[]),
            backup("b3", "nightly", 10800, BackupPhase::Failed, &[]),
            backup("b4", "nightly", 14400, BackupPhase::Completed, &[]),
        ];
        let now = at(5 * 3600);
        let r = report(&policy(false, Some(1)), &backups, 1, now).unwrap();
        assert_eq!(r.retention_would_delete, ["b1", "b2"]);
        assert_eq!(r.completed_backups, 3);
        assert_eq!(r.last_successful_backup, Some(at(4 * 3600)));
        let text = describe(&r, now);
        assert!(
            text.contains("Retention:   keepLast=1; 3 Completed now, the last 60m ago"),
            "{text}"
        );
        assert!(
            text.contains("Keeps (newest first, and the rules that keep each):\n  b4  (last)\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "Would delete (with their data, oldest first):\n  b1\n  b2\n  (held by the brake"
            ),
            "{text}"
        );
        let mut approved = policy(false, Some(1));
        approved.metadata.generation = Some(3);
        approved.metadata.annotations = Some(
            [(
                backstop_api::labels::APPROVE_RETENTION.to_string(),
                "3".to_string(),
            )]
            .into(),
        );
        let go = report(&approved, &backups, 1, now).unwrap();
        assert!(!go.held_by_the_brake && !describe(&go, now).contains("held by the brake"));
        let keep_all = report(&policy(false, None), &backups, 1, now).unwrap();
        assert!(describe(&keep_all, now).contains("Retention:   no rules: keep all;"));
        assert!(describe(&keep_all, now).contains("Would delete: nothing"));
    }

    #[test]
    fn an_invalid_policy_is_refused_with_its_reason() {
        let mut bad = policy(false, None);
        bad.spec.schedule = "every day".into();
        let err = report(&bad, &[], 1, Timestamp::now())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("policy nightly is invalid: "), "{err}");
    }

    #[test]
    fn verification_is_shown_with_its_next_run_and_the_backups_that_failed_it() {
        let now: Timestamp = "2027-01-15T08:00:00Z".parse().unwrap();
        let plain = report(&policy(false, None), &[], 1, now).unwrap();
        assert!(
            describe(&plain, now).contains("Verification: none (set spec.verification)"),
            "{}",
            describe(&plain, now)
        );
        let mut p = policy(false, None);
        p.spec.verification = Some(backstop_api::Verification {
            schedule: "0 4 * * 0".into(),
            ..Default::default()
        });
        let mut damaged = backup("damaged", "nightly", 0, BackupPhase::Completed, &[]);
        backstop_api::condition::set(
            &mut damaged.status.get_or_insert_default().conditions,
            backstop_api::condition::ConditionType::Verified,
            false,
            "DigestMismatch",
            "m",
            None,
            now,
        );
        let sound = backup("sound", "nightly", 60, BackupPhase::Completed, &[]);
        let r = report(&p, &[damaged, sound], 1, now).unwrap();
        let text = describe(&r, now);
        // Sunday 04:00 in Paris is 03:00 UTC.
        assert!(
            text.contains(r#"Verification: Artifact on "0 4 * * 0", next at 2027-01-17T03:00:00Z"#),
            "{text}"
        );
        assert!(
            text.contains("Failed verification (not counted, not deleted): damaged\n"),
            "{text}"
        );
        p.spec.suspend = true;
        let text = describe(&report(&p, &[], 1, now).unwrap(), now);
        assert!(text.contains("none while suspended"), "{text}");
    }

    #[test]
    fn the_strategy_is_shown() {
        let now: Timestamp = "2027-01-15T08:00:00Z".parse().unwrap();
        let mut p = policy(false, None);
        let text = describe(&report(&p, &[], 1, now).unwrap(), now);
        assert!(
            text.contains("Strategy:    direct (the live volumes)\n"),
            "{text}"
        );
        p.spec.strategy = Some(backstop_api::Strategy {
            snapshot: Some(backstop_api::SnapshotStrategy {
                volume_snapshot_class_name: "csi".into(),
                delete_snapshot_after: false,
                ready_timeout_seconds: None,
            }),
            command: None,
            quiesce: None,
        });
        let text = describe(&report(&p, &[], 1, now).unwrap(), now);
        assert!(
            text.contains(
                r#"Strategy:    snapshot with class "csi", snapshots kept with their Backup"#
            ),
            "{text}"
        );
        let command: backstop_api::Strategy = serde_json::from_value(serde_json::json!({
            "command": {"image": "pg:15", "command": ["pg_dump", "-Fc"], "args": ["shop"],
                        "restore": {"image": "pg:15", "command": ["pg_restore", "-d", "shop"]}}
        }))
        .unwrap();
        assert_eq!(
            strategy_text(Some(&command)),
            r#"command "pg_dump -Fc shop" in image pg:15, stream "dump"; restored with "pg_restore -d shop""#
        );
    }
}
