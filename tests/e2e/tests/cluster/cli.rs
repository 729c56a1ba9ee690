//! The CLI as a person uses it, against the operator on the local cluster: back up now from a
//! policy, list, restore the latest backup of a volume into a new PVC (same tree back), show a
//! policy; and failures that exit non-zero with the reason on one line.

use backstop_api::{Backup, BackupPhase, BackupPolicy};
use backstop_e2e::*;
use kube::api::ListParams;
use serde_json::json;

async fn policy(ns: &TestNamespace, name: &str, spec: serde_json::Value) -> anyhow::Result<()> {
    create::<BackupPolicy>(
        ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupPolicy",
               "metadata": {"name": name}, "spec": spec}),
    )
    .await?;
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: make test"]
async fn back_up_now_list_and_restore_the_latest() -> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-cli").await?;
    ns.repository().await?;
    let data = ns.volume("data", &[("app", "cli")]).await?;
    write_sample_tree(&data, 7)?;
    policy(
        &ns,
        "nightly",
        json!({"schedule": "0 2 * * *", "retention": {"keepLast": 2},
               "target": {"pvcSelector": {"matchLabels": {"app": "cli"}}}}),
    )
    .await?;

    let first = backstop_cli(&["backup", "now", "nightly", "-n", &ns.name]).await?;
    assert_eq!(first.code, Some(0), "{first:?}");
    assert!(first.stdout.starts_with("backup nightly-now-"), "{first:?}");
    assert!(
        first.stdout.contains(" Completed: 1 volume(s), "),
        "{first:?}"
    );
    assert!(
        first.stderr.contains(": Completed"),
        "progress lines: {first:?}"
    );
    let captured = tree_listing(&data)?;

    // Verified by hand: every digest read back; the answer is on the Backup too.
    let first_name = first
        .stdout
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let verified = backstop_cli(&["backup", "verify", &first_name, "-n", &ns.name]).await?;
    assert_eq!(verified.code, Some(0), "{verified:?}");
    assert!(
        verified.stdout.starts_with(&format!(
            "backup {first_name} verified: Artifact verification passed"
        )),
        "{verified:?}"
    );
    let answered = ns.api::<Backup>().get(&first_name).await?;
    let conditions = answered.status.map(|s| s.conditions).unwrap_or_default();
    assert!(
        backstop_api::condition::is_true(
            &conditions,
            backstop_api::condition::ConditionType::Verified
        ),
        "{conditions:?}"
    );

    // The newest backup is the one restored: change the data, back up again, then restore.
    std::fs::write(data.join("added-later"), b"second backup only\n")?;
    let second = backstop_cli(&["backup", "now", "nightly", "-n", &ns.name, "-o", "json"]).await?;
    assert_eq!(second.code, Some(0), "{second:?}");
    let second: Backup = serde_json::from_str(&second.stdout)?;
    assert_eq!(second.phase(), BackupPhase::Completed);
    let newest = tree_listing(&data)?;
    assert_ne!(newest, captured);

    // Both are listed, newest first, with the policy, phase and volumes done.
    let list = backstop_cli(&["backup", "list", "-n", &ns.name, "--policy", "nightly"]).await?;
    assert_eq!(list.code, Some(0), "{list:?}");
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", list.stdout);
    assert!(
        lines[0].starts_with("NAME ") && lines[0].contains("PHASE"),
        "{}",
        list.stdout
    );
    let second_name = second.metadata.name.clone().unwrap_or_default();
    assert!(
        lines[1].starts_with(&format!("{second_name} ")),
        "{}",
        list.stdout
    );
    for line in &lines[1..] {
        assert!(
            line.contains(" nightly ") && line.contains(" Completed ") && line.contains(" 1/1 "),
            "{line}"
        );
    }
    let as_json = backstop_cli(&["backup", "list", "-n", &ns.name, "-o", "json"]).await?;
    let items = serde_json::from_str::<serde_json::Value>(&as_json.stdout)?["items"].clone();
    let in_cluster = ns
        .api::<Backup>()
        .list(&ListParams::default())
        .await?
        .items
        .len();
    assert_eq!(
        items.as_array().map(Vec::len),
        Some(in_cluster),
        "{}",
        as_json.stdout
    );

    // Restore the latest into a PVC that does not exist yet (its own class, so only the volume
    // made here can bind it).
    let class = format!("e2e-{}", ns.name);
    let target = host_volume_of_class(&format!("{}-restored", ns.name), "1Gi", &class)?;
    let restore = backstop_cli(&[
        "restore",
        "data",
        "--latest",
        "--to",
        "restored",
        "--storage-class",
        &class,
        "-n",
        &ns.name,
    ])
    .await?;
    assert_eq!(restore.code, Some(0), "{restore:?}");
    assert!(
        restore
            .stderr
            .contains(&format!("of backup {second_name} into PVC restored")),
        "{restore:?}"
    );
    assert!(
        restore.stdout.contains(" Completed: ") && restore.stdout.ends_with("; Verified\n"),
        "{restore:?}"
    );
    assert_eq!(tree_listing(&target)?, newest);

    // The policy: its schedule, five next runs, retention keeping both backups.
    let show = backstop_cli(&["policy", "show", "nightly", "-n", &ns.name, "-o", "json"]).await?;
    assert_eq!(show.code, Some(0), "{show:?}");
    let report: serde_json::Value = serde_json::from_str(&show.stdout)?;
    assert_eq!(report["schedule"], "0 2 * * *");
    assert_eq!(
        report["nextRuns"].as_array().map(Vec::len),
        Some(5),
        "{report}"
    );
    assert_eq!(report["completedBackups"], 2, "{report}");
    assert_eq!(report["retentionWouldDelete"], json!([]), "{report}");
    let text = backstop_cli(&["policy", "show", "nightly", "-n", &ns.name]).await?;
    assert!(text.stdout.contains("Would delete: nothing"), "{text:?}");
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: make test"]
async fn failures_exit_non_zero_with_the_reason() -> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-cli-fail").await?;
    ns.volume("data", &[("app", "cli")]).await?;

    let one_line = |run: &CliRun, expected: &str| {
        assert_eq!(run.code, Some(1), "{run:?}");
        let last = run.stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("backstop: ") && last.contains(expected),
            "{run:?}"
        );
    };
    let missing = backstop_cli(&["backup", "now", "nope", "-n", &ns.name]).await?;
    one_line(
        &missing,
        &format!("BackupPolicy nope not found in namespace {}", ns.name),
    );
    let nothing =
        backstop_cli(&["restore", "data", "--latest", "--to", "x", "-n", &ns.name]).await?;
    one_line(
        &nothing,
        &format!(
            "no Completed backup in namespace {} holds volume data",
            ns.name
        ),
    );

    // A Backup that fails in the operator: its repository does not exist and it may not wait.
    policy(
        &ns,
        "nowhere",
        json!({"schedule": "0 2 * * *", "repository": "absent", "startingDeadlineSeconds": 0,
               "target": {"pvcSelector": {"matchLabels": {"app": "cli"}}}}),
    )
    .await?;
    let failed = backstop_cli(&["backup", "now", "nowhere", "-n", &ns.name]).await?;
    one_line(&failed, "failed: RepositoryNotFound: ");
    let listed = backstop_cli(&["backup", "list", "-n", &ns.name]).await?;
    assert!(
        listed.stdout.contains(" Failed ") && listed.stdout.contains("RepositoryNotFound"),
        "{listed:?}"
    );

    // Usage errors are clap's (exit 2), before any request.
    let usage = backstop_cli(&["restore", "data", "--to", "x", "-n", &ns.name]).await?;
    assert_eq!(usage.code, Some(2), "{usage:?}");
    assert!(
        usage.stderr.contains("--latest") && usage.stderr.contains("--backup"),
        "{usage:?}"
    );
    Ok(())
}
