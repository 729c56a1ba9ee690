//! `backstop backup list`, `backstop backup now POLICY` and `backstop backup verify NAME`.

use super::format::{age, printable, table};
use super::wait::{Progress, reason, until_finished};
use super::{Output, Target, connect, not_found, print_structured};
use backstop_api::{Backup, BackupPhase, BackupPolicy, BackupSpec, VerificationPhase, labels};
use jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use std::time::Duration;

#[derive(clap::Subcommand, Debug)]
pub enum BackupCommand {
    /// List backups, newest first: phase, volumes, size, files, age, and why one failed.
    #[command(alias = "ls")]
    List {
        /// Only the backups of this policy.
        #[arg(long, short = 'p')]
        policy: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
        #[command(flatten)]
        target: Target,
    },
    /// Back up now what a policy selects (a Backup that names the policy), and wait for it.
    Now {
        policy: String,
        /// Return once the Backup is created.
        #[arg(long)]
        no_wait: bool,
        /// Longest wait for it to finish (e.g. 30m, 2h).
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        timeout: Duration,
        /// Print the finished Backup as YAML or JSON instead of a summary.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
        #[command(flatten)]
        target: Target,
    },
    /// Verify a Completed backup now (read every artifact back and check every digest against
    /// its manifest), and wait for the answer; exits non-zero when the backup fails it.
    Verify {
        backup: String,
        /// Longest wait for the answer (e.g. 30m, 2h).
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        timeout: Duration,
        #[command(flatten)]
        target: Target,
    },
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let span: jiff::Span = text
        .parse()
        .map_err(|e| format!("not a duration like 90s, 30m or 2h ({e})"))?;
    let signed = jiff::SignedDuration::try_from(span).map_err(|e| e.to_string())?;
    Duration::try_from(signed).map_err(|_| "a duration must not be negative".to_string())
}

impl BackupCommand {
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            BackupCommand::List {
                policy,
                output,
                target,
            } => list(&target, policy.as_deref(), output).await,
            BackupCommand::Now {
                policy,
                no_wait,
                timeout,
                output,
                target,
            } => now(&target, &policy, (!no_wait).then_some(timeout), output).await,
            BackupCommand::Verify {
                backup,
                timeout,
                target,
            } => verify(&target, &backup, timeout).await,
        }
    }
}

async fn list(target: &Target, policy: Option<&str>, output: Output) -> anyhow::Result<()> {
    let (client, namespace) = connect(target).await?;
    let api: Api<Backup> = Api::namespaced(client, &namespace);
    let mut backups = of_policy(api.list(&ListParams::default()).await?.items, policy);
    newest_first(&mut backups);
    if output != Output::Table {
        return print_structured(&as_list(&backups), output);
    }
    if backups.is_empty() {
        let of = policy
            .map(|p| format!(" of policy {p}"))
            .unwrap_or_default();
        eprintln!("No backups{of} in namespace {namespace}.");
        return Ok(());
    }
    print!("{}", backup_table(&backups, Timestamp::now()));
    Ok(())
}

/// Newest first by creation, then name (deterministic for backups made in the same second).
fn newest_first(backups: &mut [Backup]) {
    backups.sort_by(|a, b| {
        let key = |x: &Backup| {
            (
                x.metadata.creation_timestamp.as_ref().map(|t| t.0),
                x.name_any(),
            )
        };
        key(b).cmp(&key(a))
    });
}

/// The backups that name `policy` (all of them when none is given).
pub fn of_policy(backups: Vec<Backup>, policy: Option<&str>) -> Vec<Backup> {
    backups
        .into_iter()
        .filter(|b| policy.is_none() || b.spec.policy_ref.as_deref() == policy)
        .collect()
}

/// A list as kubectl prints one with `-o yaml|json`.
fn as_list(items: &[Backup]) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items})
}

fn backup_table(backups: &[Backup], now: Timestamp) -> String {
    let rows: Vec<Vec<String>> = backups
        .iter()
        .map(|b| {
            let status = b.status.clone().unwrap_or_default();
            let done = status
                .volumes
                .iter()
                .filter(|v| v.phase == BackupPhase::Completed)
                .count();
            let volumes = if status.volumes.is_empty() {
                "-".to_string()
            } else {
                format!("{done}/{}", status.volumes.len())
            };
            let why = reason(&status.conditions, None).unwrap_or_default();
            vec![
                b.name_any(),
                b.spec.policy_ref.clone().unwrap_or_else(|| "-".into()),
                b.phase().as_str().to_string(),
                volumes,
                status.size.unwrap_or_else(|| "-".into()),
                status.total_files.map_or("-".into(), |n| n.to_string()),
                b.metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or("-".into(), |t| age(t.0, now)),
                backstop_api::condition::truncate(why, 100),
            ]
        })
        .collect();
    table(
        &[
            "NAME", "POLICY", "PHASE", "VOLUMES", "SIZE", "FILES", "AGE", "REASON",
        ],
        &rows,
    )
}

async fn now(
    target: &Target,
    policy: &str,
    wait: Option<Duration>,
    output: Output,
) -> anyhow::Result<()> {
    let (client, namespace) = connect(target).await?;
    let policies: Api<BackupPolicy> = Api::namespaced(client.clone(), &namespace);
    let found = policies
        .get(policy)
        .await
        .map_err(|e| not_found(e, &format!("BackupPolicy {policy}"), &namespace))?;
    let backups: Api<Backup> = Api::namespaced(client, &namespace);
    let backup = manual_backup(&found);
    let created = backups.create(&PostParams::default(), &backup).await?;
    let name = created.name_any();
    eprintln!("backup {name} created in namespace {namespace} (policy {policy})");
    let Some(timeout) = wait else {
        println!("{name}");
        return Ok(());
    };
    let finished = until_finished(&backups, "backup", &name, timeout, progress).await?;
    let status = finished.status.clone().unwrap_or_default();
    if finished.phase() == BackupPhase::Failed {
        anyhow::bail!(
            "backup {name} failed: {}",
            reason(&status.conditions, status.message.as_deref())
                .unwrap_or_else(|| "no reason recorded".into())
        );
    }
    if output != Output::Table {
        return print_structured(&finished, output);
    }
    let done = format!(
        "backup {name} Completed: {} volume(s), {} files, {} stored, in {}",
        status.volumes.len(),
        status.total_files.unwrap_or(0),
        status.size.as_deref().unwrap_or("?"),
        status.duration.as_deref().unwrap_or("?"),
    );
    println!("{}", printable(&done));
    if let Some((_, message)) = status.changed_while_reading() {
        println!("note: {}", printable(&message));
    }
    Ok(())
}

async fn verify(target: &Target, name: &str, timeout: Duration) -> anyhow::Result<()> {
    let (client, namespace) = connect(target).await?;
    let backups: Api<Backup> = Api::namespaced(client, &namespace);
    let found = backups
        .get(name)
        .await
        .map_err(|e| not_found(e, &format!("Backup {name}"), &namespace))?;
    if found.phase() != BackupPhase::Completed {
        anyhow::bail!(
            "backup {name} is {}: only a Completed backup can be verified",
            found.phase().as_str()
        );
    }
    // A new token asks again, even for a backup verified a moment ago.
    let token = format!("cli-{}", Timestamp::now());
    let patch = serde_json::json!({"metadata": {"annotations": {labels::VERIFY: token}}});
    backups
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    eprintln!("backup {name}: verification asked ({token})");
    let answered = until_finished(&backups, "backup", name, timeout, |b| {
        verification_progress(b, &token)
    })
    .await?;
    let verification = answered
        .status
        .and_then(|s| s.verification)
        .unwrap_or_default();
    let message = verification.message.unwrap_or_default();
    match verification.phase {
        VerificationPhase::Passed => {
            println!("backup {name} verified: {}", printable(&message));
            Ok(())
        }
        _ => anyhow::bail!("backup {name}: {message}"),
    }
}

/// A verification seen as a run that finishes: Running until the answer to `token` is in,
/// Completed when it passed, Failed otherwise.
fn verification_progress(backup: &Backup, token: &str) -> Progress {
    let verification = backup
        .status
        .as_ref()
        .and_then(|s| s.verification.as_ref())
        .filter(|v| v.request == token);
    let Some(v) = verification else {
        return Progress {
            phase: BackupPhase::Pending,
            line: "verification asked, not started yet".into(),
        };
    };
    let phase = match v.phase {
        VerificationPhase::Running => BackupPhase::Running,
        VerificationPhase::Passed => BackupPhase::Completed,
        VerificationPhase::Failed | VerificationPhase::Inconclusive => BackupPhase::Failed,
    };
    let done = v
        .volumes
        .iter()
        .filter(|v| v.phase != VerificationPhase::Running)
        .count();
    Progress {
        phase,
        line: format!(
            "verification {}, {done}/{} volume(s) done",
            v.phase.as_str(),
            v.volumes.len()
        ),
    }
}

/// The Backup `backup now` makes: it names the policy and, as the policy's scheduled Backups
/// do, carries its start deadline; the server picks the name's suffix, so two people backing up
/// at once never collide.
fn manual_backup(policy: &BackupPolicy) -> Backup {
    let name = policy.name_any();
    let mut backup = Backup::new(
        "",
        BackupSpec {
            policy_ref: Some(name.clone()),
            starting_deadline_seconds: policy.spec.starting_deadline_seconds,
            ..BackupSpec::default()
        },
    );
    backup.metadata.name = None;
    backup.metadata.generate_name = Some(format!("{}-now-", backstop_api::naming::fit(&name, 200)));
    backup
}

fn progress(backup: &Backup) -> Progress {
    let status = backup.status.clone().unwrap_or_default();
    let phase = backup.phase();
    let mut line = phase.as_str().to_string();
    if !status.volumes.is_empty() {
        let done = status
            .volumes
            .iter()
            .filter(|v| v.phase.is_terminal())
            .count();
        line.push_str(&format!(", {done}/{} volume(s) done", status.volumes.len()));
    }
    Progress::of(phase, line, &status.conditions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::fixtures::{at, backup};

    #[test]
    fn the_list_is_newest_first_with_volumes_done_and_age() {
        use BackupPhase::*;
        let mut old = backup("old", "nightly", 0, Completed, &[("data", Completed)]);
        if let Some(status) = old.status.as_mut() {
            (status.size, status.total_files) = (Some("1.2 MiB".into()), Some(7));
        }
        let volumes = [("data", Completed), ("logs", Running)];
        let mut backups = vec![old, backup("new", "nightly", 60, Running, &volumes)];
        newest_first(&mut backups);
        let text = backup_table(&backups, at(120));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{text}");
        assert!(lines[1].starts_with("new "), "{text}");
        assert!(
            lines[1].contains("Running") && lines[1].contains("1/2") && lines[1].contains("60s"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("old ") && lines[2].contains("1/1") && lines[2].contains("2m0s"),
            "{text}"
        );
        assert!(
            lines[2].contains(" 1.2 MiB ") && lines[2].contains(" 7 "),
            "{text}"
        );
        assert!(lines[1].contains(" - "), "no size yet: {text}");
    }

    #[test]
    fn a_failed_backup_says_why_in_the_list_and_progress() {
        let failed_volume = [("data", BackupPhase::Failed)];
        let mut failed = backup("f", "nightly", 0, BackupPhase::Failed, &failed_volume);
        let status = failed.status.as_mut().unwrap();
        backstop_api::condition::set_failed(
            &mut status.conditions,
            &backstop_api::condition::Invalid::new("MoverFailed", "volume data: disk full"),
            None,
            at(0),
        );
        let text = backup_table(std::slice::from_ref(&failed), at(0));
        assert!(
            text.contains("MoverFailed: volume data: disk full"),
            "{text}"
        );
        let p = progress(&failed);
        assert_eq!(p.phase, BackupPhase::Failed);
        assert_eq!(
            p.line,
            "Failed, 1/1 volume(s) done (MoverFailed: volume data: disk full)"
        );
    }

    #[test]
    fn backup_now_names_the_policy_with_its_deadline_and_a_server_chosen_name() {
        let mut policy: BackupPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "nightly", "namespace": "shop"},
            "spec": {"schedule": "0 2 * * *", "startingDeadlineSeconds": 30,
                     "target": {"pvcSelector": {"matchLabels": {"app": "db"}}}}
        }))
        .unwrap();
        let backup = manual_backup(&policy);
        assert_eq!(backup.metadata.name, None);
        assert_eq!(
            backup.metadata.generate_name.as_deref(),
            Some("nightly-now-")
        );
        assert_eq!(backup.spec.policy_ref.as_deref(), Some("nightly"));
        assert_eq!(backup.spec.starting_deadline_seconds, Some(30));
        assert_eq!((backup.spec.target, backup.spec.repository), (None, None));
        policy.metadata.name = Some("p".repeat(250));
        let long = manual_backup(&policy)
            .metadata
            .generate_name
            .unwrap_or_default();
        assert!(long.len() <= 205 && long.ends_with("-now-"), "{long}");
    }

    #[test]
    fn a_policy_filter_keeps_only_its_backups() {
        let other = backup("other", "weekly", 0, BackupPhase::Completed, &[]);
        let hand_made = Backup::new("hand", BackupSpec::default());
        let all = vec![
            backup("mine", "nightly", 0, BackupPhase::Completed, &[]),
            other,
            hand_made,
        ];
        let names = |list: Vec<Backup>| list.iter().map(ResourceExt::name_any).collect::<Vec<_>>();
        assert_eq!(names(of_policy(all.clone(), Some("nightly"))), ["mine"]);
        assert_eq!(names(of_policy(all, None)), ["mine", "other", "hand"]);
    }

    #[test]
    fn json_and_yaml_lists_are_shaped_as_kubectl_prints_them() {
        let list = as_list(&[backup("a", "nightly", 0, BackupPhase::Completed, &[])]);
        assert_eq!(
            (&list["apiVersion"], &list["kind"]),
            (&"v1".into(), &"List".into())
        );
        assert_eq!(list["items"][0]["metadata"]["name"], "a");
        assert_eq!(list["items"][0]["kind"], "Backup");
    }

    #[test]
    fn a_verification_finishes_only_with_the_answer_to_its_own_token() {
        let mut b = backup(
            "b1",
            "nightly",
            0,
            BackupPhase::Completed,
            &[("db", BackupPhase::Completed)],
        );
        assert_eq!(verification_progress(&b, "t2").phase, BackupPhase::Pending);
        let status = b.status.get_or_insert_default();
        status.verification = Some(backstop_api::VerificationStatus {
            request: "t1".into(),
            phase: VerificationPhase::Failed,
            ..Default::default()
        });
        // An older answer is not this one's.
        assert_eq!(verification_progress(&b, "t2").phase, BackupPhase::Pending);
        let status = b.status.get_or_insert_default();
        status.verification = Some(backstop_api::VerificationStatus {
            request: "t2".into(),
            phase: VerificationPhase::Running,
            volumes: vec![backstop_api::VolumeVerification::default(); 2],
            ..Default::default()
        });
        let running = verification_progress(&b, "t2");
        assert_eq!(running.phase, BackupPhase::Running);
        assert_eq!(running.line, "verification Running, 0/2 volume(s) done");
        for (answer, phase) in [
            (VerificationPhase::Passed, BackupPhase::Completed),
            (VerificationPhase::Failed, BackupPhase::Failed),
            (VerificationPhase::Inconclusive, BackupPhase::Failed),
        ] {
            let status = b.status.get_or_insert_default();
            if let Some(v) = status.verification.as_mut() {
                v.phase = answer;
            }
            assert_eq!(verification_progress(&b, "t2").phase, phase, "{answer:?}");
        }
    }

    #[test]
    fn durations_are_read_as_people_write_them() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-5m").is_err());
    }
}
