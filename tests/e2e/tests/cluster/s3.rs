//! S3 repositories end to end on the local cluster, with the operator in-cluster and mover pods on
//! the host network reaching two real S3 implementations on loopback (moto_server and s3s-fs):
//! probes decide `Ready`; a policy backs up, retention deletes, a restore brings the tree back;
//! wrong keys, a deleted bucket and a server stopped mid-upload each say what happened.

use backstop_api::{Backup, BackupPhase, BackupPolicy, BackupRepository, Restore};
use backstop_e2e::s3::{ACCESS_KEY, S3Kind, S3Server, SECRET_KEY};
use backstop_e2e::*;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;
use std::time::Duration;

const PREFIX: &str = "e2e";

async fn s3_repository(
    ns: &TestNamespace,
    name: &str,
    server: &S3Server,
    secret: &str,
) -> anyhow::Result<()> {
    create::<BackupRepository>(
        ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupRepository",
               "metadata": {"name": name},
               "spec": {"s3": {"endpoint": server.endpoint(), "bucket": "backups", "prefix": PREFIX,
                               "forcePathStyle": true, "credentialsSecretRef": {"name": secret}}}}),
    )
    .await?;
    Ok(())
}

async fn finished_backup(
    ns: &TestNamespace,
    name: &str,
    app: &str,
    repo: &str,
) -> anyhow::Result<Backup> {
    create::<Backup>(
        ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup", "metadata": {"name": name},
               "spec": {"repository": repo, "target": {"pvcSelector": {"matchLabels": {"app": app}}}}}),
    )
    .await?;
    let api = ns.api::<Backup>();
    wait_for(
        Duration::from_secs(240),
        &format!("backup {name}"),
        || async {
            let b = api.get(name).await?;
            Ok(b.phase().is_terminal().then_some(b))
        },
    )
    .await
}

#[tokio::test]
#[ignore = "needs a cluster and S3 servers: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn policy_retention_and_restore_through_moto_and_s3s_fs() -> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-s3").await?;
    let servers = [
        ("moto", S3Server::start(S3Kind::Moto)?),
        ("s3s", S3Server::start(S3Kind::S3sFs)?),
    ];
    keys_secret(&ns, "s3-keys", SECRET_KEY).await?;
    let mut sources = Vec::new();
    for (seed, (name, server)) in servers.iter().enumerate() {
        server.create_bucket("backups")?;
        s3_repository(&ns, name, server, "s3-keys").await?;
        let data = ns.volume(&format!("data-{name}"), &[("app", name)]).await?;
        write_sample_tree(&data, seed as u8 + 1)?;
        sources.push(tree_listing(&data)?);
    }
    for (name, _) in &servers {
        assert_eq!(repository_ready(&ns, name, "True").await?, "Ready");
        create::<BackupPolicy>(
            &ns,
            json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupPolicy",
                   "metadata": {"name": name},
                   "spec": {"schedule": "* * * * *", "repository": name, "retention": {"keepLast": 2},
                            "target": {"pvcSelector": {"matchLabels": {"app": name}}}}}),
        )
        .await?;
    }

    // Three runs of each policy complete; none fails.
    completed_runs(
        &ns,
        Duration::from_secs(330),
        "three completed runs per policy",
        |seen| {
            servers.iter().all(|(name, _)| {
                seen.iter()
                    .filter(|b| b.starts_with(&format!("{name}-")))
                    .count()
                    >= 3
            })
        },
    )
    .await?;
    let backups = ns.api::<Backup>();
    for (name, _) in &servers {
        ns.api::<BackupPolicy>()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"suspend": true}})),
            )
            .await?;
    }

    for ((name, server), listing) in servers.iter().zip(&sources) {
        // Retention keeps two, and the bucket holds exactly their objects.
        let kept: Vec<Backup> = wait_for(
            Duration::from_secs(120),
            &format!("policy {name}: exactly two completed backups"),
            || async {
                let items = backups
                    .list(&ListParams::default().labels(&format!("backstop.dev/policy={name}")))
                    .await?
                    .items;
                let done =
                    items.len() == 2 && items.iter().all(|b| b.phase() == BackupPhase::Completed);
                Ok(done.then_some(items))
            },
        )
        .await?;
        let mut expected: Vec<String> = kept
            .iter()
            .flat_map(|b| {
                let dir = format!(
                    "{PREFIX}/{}/{}",
                    ns.name,
                    b.metadata.name.clone().unwrap_or_default()
                );
                [
                    format!("{dir}/data-{name}.manifest.jsonl.zst"),
                    format!("{dir}/data-{name}.record.json"),
                    format!("{dir}/data-{name}.tar.zst"),
                ]
            })
            .collect();
        // And the marker of the namespace's writer (this cluster).
        expected.push(format!("{PREFIX}/{}/_owner.json", ns.name));
        expected.sort();
        wait_until(
            Duration::from_secs(90),
            &format!("{name}: the bucket to hold only the kept backups"),
            || async { Ok(server.keys("backups", &format!("{PREFIX}/{}/", ns.name))? == expected) },
        )
        .await?;

        // Each kept artifact, fetched without Backstop and extracted by GNU tar, equals the source.
        for backup in &kept {
            let volume = &backup.status.clone().unwrap_or_default().volumes[0];
            let artifact = volume.artifact.clone().unwrap_or_default();
            let fetched = tempfile::tempdir()?;
            let file = fetched.path().join("data.tar.zst");
            std::fs::write(
                &file,
                server.object("backups", &format!("{PREFIX}/{artifact}"))?,
            )?;
            assert_eq!(
                std::fs::metadata(&file)?.len() as i64,
                volume.bytes.unwrap_or(-1)
            );
            extract_with_tar(&file, &fetched.path().join("out"))?;
            assert_eq!(
                tree_listing(&fetched.path().join("out"))?,
                tar_view(listing),
                "{name}: tar's view"
            );
        }

        // A restore of the newest backup, into an empty PVC, is byte-identical to the source.
        let newest = kept
            .iter()
            .filter_map(|b| b.metadata.name.clone())
            .max()
            .unwrap_or_default();
        let target = ns.volume(&format!("restored-{name}"), &[]).await?;
        create::<Restore>(
            &ns,
            json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Restore",
                   "metadata": {"name": format!("restore-{name}")},
                   "spec": {"backupName": newest, "target": {"pvcName": format!("restored-{name}")}}}),
        )
        .await?;
        let done =
            finished_restore(&ns, &format!("restore-{name}"), Duration::from_secs(180)).await?;
        let status = done.status.clone().unwrap_or_default();
        assert_eq!(done.phase(), BackupPhase::Completed, "{status:?}");
        assert_eq!(status.verification.as_deref(), Some("Verified"));
        assert_eq!(&tree_listing(&target)?, listing, "{name}: restored tree");
    }
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster and S3 servers: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn wrong_keys_a_deleted_bucket_and_a_stopped_server_each_say_what_happened()
-> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-s3-faults").await?;
    let jobs = ns.watch_jobs().await?;
    let mut s3s = S3Server::start(S3Kind::S3sFs)?;
    let moto = S3Server::start(S3Kind::Moto)?;
    s3s.create_bucket("backups")?;
    moto.create_bucket("backups")?;
    keys_secret(&ns, "s3-keys", SECRET_KEY).await?;
    keys_secret(&ns, "wrong-keys", "not-the-secret").await?;

    // Wrong keys: not Ready, with a reason and a Warning; a policy on it says so and starts nothing.
    s3_repository(&ns, "wrong", &s3s, "wrong-keys").await?;
    assert_eq!(
        repository_ready(&ns, "wrong", "False").await?,
        "AccessDenied"
    );
    assert!(
        events(&ns, "AccessDenied")
            .await?
            .iter()
            .any(|(on, _)| on == "wrong")
    );
    let data = ns.volume("data", &[("app", "db")]).await?;
    write_sample_tree(&data, 3)?;
    create::<BackupPolicy>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupPolicy", "metadata": {"name": "wrong"},
               "spec": {"schedule": "* * * * *", "repository": "wrong",
                        "target": {"pvcSelector": {"matchLabels": {"app": "db"}}}}}),
    )
    .await?;
    let policies = ns.api::<BackupPolicy>();
    let message = wait_for(
        Duration::from_secs(90),
        "the policy to name the repository problem",
        || async {
            let conditions = policies
                .get("wrong")
                .await?
                .status
                .unwrap_or_default()
                .conditions;
            Ok(conditions
                .iter()
                .find(|c| c.reason == "RepositoryNotReady")
                .map(|c| c.message.clone()))
        },
    )
    .await?;
    assert!(message.contains("credentialsSecretRef"), "{message}");
    assert_eq!(
        jobs.labelled("backstop.dev/role", "backup"),
        Vec::<String>::new(),
        "no backup Job against a repository that is not ready"
    );
    policies.delete("wrong", &Default::default()).await?;

    // A deleted bucket: the backup fails saying so, and the repository stops being Ready.
    s3_repository(&ns, "moto", &moto, "s3-keys").await?;
    assert_eq!(repository_ready(&ns, "moto", "True").await?, "Ready");
    moto.delete_bucket("backups")?;
    let failed = finished_backup(&ns, "no-bucket", "db", "moto").await?;
    assert_eq!(failed.phase(), BackupPhase::Failed);
    let why = failed.status.clone().unwrap_or_default().volumes[0]
        .message
        .clone()
        .unwrap_or_default();
    assert!(why.starts_with("BucketNotFound"), "{why}");
    assert_eq!(
        repository_ready(&ns, "moto", "False").await?,
        "BucketNotFound"
    );

    // The server stops mid-upload: the backup fails, nothing of it is stored, and once the server
    // is back (and the repository Ready again) the next backup succeeds.
    s3_repository(&ns, "s3s", &s3s, "s3-keys").await?;
    assert_eq!(repository_ready(&ns, "s3s", "True").await?, "Ready");
    let big = ns.volume("big", &[("app", "big")]).await?;
    let noise = std::process::Command::new("head")
        .args(["-c", "512M", "/dev/urandom"])
        .stdout(std::fs::File::create(big.join("noise.bin"))?)
        .status()?;
    anyhow::ensure!(noise.success(), "writing noise failed");
    create::<Backup>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup", "metadata": {"name": "cut"},
               "spec": {"repository": "s3s", "target": {"pvcSelector": {"matchLabels": {"app": "big"}}}}}),
    )
    .await?;
    wait_until(Duration::from_secs(120), "the upload to start", || async {
        Ok(s3s.has_partial_upload())
    })
    .await?;
    s3s.stop();
    let backups = ns.api::<Backup>();
    let cut = wait_for(
        Duration::from_secs(180),
        "the cut backup to fail",
        || async {
            let b = backups.get("cut").await?;
            Ok(b.phase().is_terminal().then_some(b))
        },
    )
    .await?;
    assert_eq!(cut.phase(), BackupPhase::Failed);
    let why = cut.status.clone().unwrap_or_default().volumes[0]
        .message
        .clone()
        .unwrap_or_default();
    assert!(why.starts_with("EndpointUnreachable"), "{why}");
    s3s.restart()?;
    // The marker its first write claimed the namespace with stays; nothing of the backup does.
    let marker = format!("{PREFIX}/{}/_owner.json", ns.name);
    assert_eq!(
        s3s.keys("backups", &format!("{PREFIX}/{}/", ns.name))?,
        [marker.as_str()],
        "nothing of the cut backup is stored"
    );
    assert_eq!(repository_ready(&ns, "s3s", "True").await?, "Ready");
    let after = finished_backup(&ns, "after", "big", "s3s").await?;
    assert_eq!(after.phase(), BackupPhase::Completed, "{:?}", after.status);
    assert_eq!(
        s3s.keys("backups", &format!("{PREFIX}/{}/", ns.name))?,
        [
            marker,
            format!("{PREFIX}/{}/after/big.manifest.jsonl.zst", ns.name),
            format!("{PREFIX}/{}/after/big.record.json", ns.name),
            format!("{PREFIX}/{}/after/big.tar.zst", ns.name),
        ]
    );
    Ok(())
}

/// A repository, a policy and one Completed Backup in a fresh namespace.
async fn namespace_with_a_backup(
    client: &kube::Client,
    prefix: &str,
    s3: Option<&S3Server>,
) -> anyhow::Result<TestNamespace> {
    let ns = TestNamespace::create(client, prefix).await?;
    let repo = match s3 {
        Some(server) => {
            keys_secret(&ns, "s3-keys", SECRET_KEY).await?;
            s3_repository(&ns, "default", server, "s3-keys").await?;
            "default"
        }
        None => {
            ns.repository().await?;
            "default"
        }
    };
    let data = ns.volume("db", &[("app", "db")]).await?;
    write_sample_tree(&data, 8)?;
    create::<BackupPolicy>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupPolicy", "metadata": {"name": "db"},
               "spec": {"schedule": "0 2 * * *", "repository": repo,
                        "target": {"pvcSelector": {"matchLabels": {"app": "db"}}}}}),
    )
    .await?;
    let backup = finished_backup(&ns, "once", "db", repo).await?;
    assert_eq!(
        backup.phase(),
        BackupPhase::Completed,
        "{:?}",
        backup.status
    );
    Ok(ns)
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn deleting_a_namespace_with_backups_finishes_for_both_repository_kinds() -> anyhow::Result<()>
{
    let client = cluster().await?;
    install_operator(&client).await?;
    let moto = S3Server::start(S3Kind::Moto)?;
    moto.create_bucket("backups")?;
    let pvc = namespace_with_a_backup(&client, "e2e-nsdel-pvc", None).await?;
    let s3 = namespace_with_a_backup(&client, "e2e-nsdel-s3", Some(&moto)).await?;
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(client.clone());
    for ns in [&pvc, &s3] {
        namespaces.delete(&ns.name, &Default::default()).await?;
    }
    for ns in [&pvc, &s3] {
        wait_until(
            Duration::from_secs(60),
            &format!("namespace {} to be gone", ns.name),
            || async { Ok(namespaces.get_opt(&ns.name).await?.is_none()) },
        )
        .await?;
    }
    // An S3 repository's artifacts outlive the namespace (they are what disaster recovery needs).
    let kept = moto.keys("backups", &format!("{PREFIX}/{}/once/", s3.name))?;
    assert!(
        kept.iter().any(|k| k.ends_with("db.manifest.jsonl.zst")),
        "{kept:?}"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn a_secret_its_owner_did_not_opt_in_is_never_given_to_a_mover_pod() -> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let moto = S3Server::start(S3Kind::Moto)?;
    moto.create_bucket("backups")?;
    let ns = TestNamespace::create(&client, "e2e-secret-optin").await?;
    // Someone else's Secret, in the same namespace, not labelled for Backstop.
    create::<Secret>(
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-admin"},
               "stringData": {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}}),
    )
    .await?;
    s3_repository(&ns, "default", &moto, "db-admin").await?;
    assert_eq!(
        repository_ready(&ns, "default", "False").await?,
        "SecretNotOptedIn"
    );
    let data = ns.volume("db", &[("app", "db")]).await?;
    write_sample_tree(&data, 4)?;
    create::<Backup>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup", "metadata": {"name": "b"},
               "spec": {"target": {"pvcSelector": {"matchLabels": {"app": "db"}}},
                        "startingDeadlineSeconds": 5}}),
    )
    .await?;
    let failed = backup_failed(&ns, "b", "RepositoryNotReady", Duration::from_secs(60)).await?;
    let message = failed
        .status
        .clone()
        .unwrap_or_default()
        .message
        .unwrap_or_default();
    assert!(
        message.contains("backstop.dev/credentials=true"),
        "{message}"
    );
    // No pod of the namespace was ever given the Secret.
    let pods = ns
        .api::<k8s_openapi::api::core::v1::Pod>()
        .list(&ListParams::default())
        .await?;
    let given = pods
        .items
        .iter()
        .any(|p| serde_json::to_string(&p.spec).is_ok_and(|spec| spec.contains("\"db-admin\"")));
    assert!(!given, "a pod was given the Secret");
    assert!(work_jobs(&ns).await?.is_empty());

    // Its owner opts it in: the repository is probed and becomes Ready.
    ns.api::<Secret>()
        .patch(
            "db-admin",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"backstop.dev/credentials": "true"}}})),
        )
        .await?;
    assert_eq!(repository_ready(&ns, "default", "True").await?, "Ready");
    Ok(())
}
