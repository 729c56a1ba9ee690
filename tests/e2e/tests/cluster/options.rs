//! The spec options the other suites leave alone, through the operator: a gzip repository in a
//! sub-path, selectors with `NotIn`/`Exists` (and the repository's own PVC left out when they
//! match it), a restore sized by `target.size`, the refusals `SourcePVCRequired`,
//! `TargetSizeUnknown` and `TargetNotReady`, and an S3 endpoint trusted through `caSecretRef`.

use backstop_api::condition::ConditionType;
use backstop_api::contract::Reason;
use backstop_api::{Backup, BackupPhase, BackupRepository, Restore, condition};
use backstop_e2e::s3::{S3Server, SECRET_KEY};
use backstop_e2e::*;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::api::{Patch, PatchParams};
use serde_json::json;
use std::time::Duration;

fn repository(name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupRepository",
           "metadata": {"name": name}, "spec": spec})
}

fn backup(name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup", "metadata": {"name": name}, "spec": spec})
}

fn restore(name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Restore", "metadata": {"name": name}, "spec": spec})
}

async fn completed(ns: &TestNamespace, name: &str) -> anyhow::Result<Backup> {
    let backup = finished_backup(ns, name, Duration::from_secs(180)).await?;
    anyhow::ensure!(
        backup.phase() == BackupPhase::Completed,
        "backup {name}: {:?}",
        backup.status
    );
    Ok(backup)
}

fn failed_reason(r: &Restore) -> String {
    let conditions = r.status.clone().unwrap_or_default().conditions;
    condition::find(&conditions, ConditionType::Failed)
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn a_gzip_repository_in_a_sub_path_with_a_set_based_selector() -> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-options").await?;
    // The repository's own volume matches the selector too: it is never backed up.
    let repo_dir = ns
        .volume("backups", &[("app", "db"), ("tier", "hot")])
        .await?;
    create::<BackupRepository>(
        &ns,
        repository(
            "gz",
            json!({"pvc": {"claimName": "backups", "subPath": "team/a"}, "compression": "gzip"}),
        ),
    )
    .await?;
    let mut sources = Vec::new();
    for (pvc, labels, seed) in [
        ("hot", vec![("app", "db"), ("tier", "hot")], 1),
        ("cold", vec![("app", "db"), ("tier", "cold")], 2),
        ("untiered", vec![("app", "web")], 3),
        ("unlabelled", vec![], 4),
    ] {
        let dir = ns.volume(pvc, &labels).await?;
        write_sample_tree(&dir, seed)?;
        sources.push((pvc, tree_listing(&dir)?));
    }
    // `app` exists and `tier` is not `cold` (a PVC without `tier` is not in `cold` either).
    create::<Backup>(
        &ns,
        backup(
            "set-based",
            json!({"repository": "gz", "target": {"pvcSelector": {"matchExpressions": [
                {"key": "app", "operator": "Exists"},
                {"key": "tier", "operator": "NotIn", "values": ["cold"]}]}}}),
        ),
    )
    .await?;
    let done = completed(&ns, "set-based").await?;
    let status = done.status.unwrap_or_default();
    let mut pvcs: Vec<&str> = status.volumes.iter().map(|v| v.pvc.as_str()).collect();
    pvcs.sort();
    assert_eq!(pvcs, ["hot", "untiered"], "{status:?}");

    // The artifacts are gzip under the sub-path, and gzip + tar alone give the sources back.
    for volume in &status.volumes {
        let artifact = volume.artifact.clone().unwrap_or_default();
        assert_eq!(
            artifact,
            format!("{}/set-based/{}.tar.gz", ns.name, volume.pvc)
        );
        let path = repo_dir.join("team/a").join(&artifact);
        let magic = std::fs::read(&path)?;
        assert_eq!(magic.get(..2), Some(&[0x1f, 0x8b][..]), "gzip magic");
        let out = tempfile::tempdir()?;
        extract_with_tar(&path, out.path())?;
        let (_, listing) = sources
            .iter()
            .find(|(pvc, _)| *pvc == volume.pvc)
            .expect("a source of each volume");
        assert_eq!(
            tree_listing(out.path())?,
            tar_view(listing),
            "{}",
            volume.pvc
        );
    }
    let top: Vec<_> = std::fs::read_dir(&repo_dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    assert_eq!(top, ["team"], "nothing outside the sub-path");
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn restores_sized_by_the_spec_and_refused_when_they_cannot_be_placed() -> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-restore-options").await?;
    ns.repository().await?;
    let mut beta = None;
    for (pvc, seed) in [("alpha", 1), ("beta", 2)] {
        let dir = ns.volume(pvc, &[("app", "pair")]).await?;
        write_sample_tree(&dir, seed)?;
        beta = Some(dir);
    }
    create::<Backup>(
        &ns,
        backup(
            "pair",
            json!({"target": {"pvcSelector": {"matchLabels": {"app": "pair"}}}}),
        ),
    )
    .await?;
    let pair = completed(&ns, "pair").await?;

    // Two volumes and no sourcePVC: which one is meant cannot be guessed.
    create::<Restore>(
        &ns,
        restore(
            "which",
            json!({"backupName": "pair", "target": {"pvcName": "somewhere"}}),
        ),
    )
    .await?;
    let which = finished_restore(&ns, "which", Duration::from_secs(60)).await?;
    assert_eq!(
        failed_reason(&which),
        "SourcePVCRequired",
        "{:?}",
        which.status
    );

    // target.size decides the new PVC's request (the source is 1Gi).
    let class = format!("e2e-{}", ns.name);
    let target_dir = host_volume_of_class(&format!("{}-spare", ns.name), "3Gi", &class)?;
    create::<Restore>(
        &ns,
        restore(
            "sized",
            json!({"backupName": "pair", "sourcePVC": "beta",
                   "target": {"pvcName": "sized", "storageClassName": class, "size": "3Gi"}}),
        ),
    )
    .await?;
    let sized = finished_restore(&ns, "sized", Duration::from_secs(180)).await?;
    assert_eq!(sized.phase(), BackupPhase::Completed, "{:?}", sized.status);
    let claim = ns.api::<PersistentVolumeClaim>().get("sized").await?;
    let request = claim
        .spec
        .and_then(|s| s.resources)
        .and_then(|r| r.requests)
        .and_then(|r| r.get("storage").cloned());
    assert_eq!(request.map(|q| q.0).as_deref(), Some("3Gi"));
    let beta = beta.expect("the beta volume");
    assert_eq!(tree_listing(&target_dir)?, tree_listing(&beta)?);

    // A backup that recorded no capacity (as an older Backstop wrote them), and no target.size:
    // the size of a new PVC is unknown, and the restore says so instead of guessing.
    let mut status = serde_json::to_value(pair.status.clone().unwrap_or_default())?;
    for volume in status["volumes"].as_array_mut().into_iter().flatten() {
        volume["capacity"] = serde_json::Value::Null;
    }
    ns.api::<Backup>()
        .patch_status(
            "pair",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"volumes": status["volumes"]}})),
        )
        .await?;
    create::<Restore>(
        &ns,
        restore(
            "unsized",
            json!({"backupName": "pair", "sourcePVC": "alpha", "target": {"pvcName": "unsized"}}),
        ),
    )
    .await?;
    let no_size = finished_restore(&ns, "unsized", Duration::from_secs(60)).await?;
    assert_eq!(
        failed_reason(&no_size),
        "TargetSizeUnknown",
        "{:?}",
        no_size.status
    );
    assert!(
        ns.api::<PersistentVolumeClaim>()
            .get_opt("unsized")
            .await?
            .is_none(),
        "no PVC of a guessed size"
    );

    // A target PVC that is being deleted (a finalizer holds it): the restore waits, saying why,
    // and at its start deadline fails with TargetNotReady, having written nothing.
    let held = ns.volume("held", &[]).await?;
    let claims = ns.api::<PersistentVolumeClaim>();
    let hold = |finalizers: serde_json::Value| {
        Patch::Merge(json!({"metadata": {"finalizers": finalizers}}))
    };
    claims
        .patch(
            "held",
            &PatchParams::default(),
            &hold(json!([
                "backstop.dev/e2e-hold",
                "kubernetes.io/pvc-protection"
            ])),
        )
        .await?;
    claims.delete("held", &Default::default()).await?;
    create::<Restore>(
        &ns,
        restore(
            "into-held",
            json!({"backupName": "pair", "sourcePVC": "alpha", "target": {"pvcName": "held"},
                   "startingDeadlineSeconds": 10}),
        ),
    )
    .await?;
    let why = waits_with(&ns.api::<Restore>(), "into-held", "WaitingForVolume").await?;
    assert!(why.contains("being deleted"), "{why}");
    let gave_up = finished_restore(&ns, "into-held", Duration::from_secs(60)).await?;
    assert_eq!(
        failed_reason(&gave_up),
        "TargetNotReady",
        "{:?}",
        gave_up.status
    );
    assert!(
        std::fs::read_dir(&held)?.next().is_none(),
        "nothing written"
    );
    claims
        .patch("held", &PatchParams::default(), &hold(json!(null)))
        .await?;
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster and S3 servers: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn an_s3_endpoint_signed_by_a_private_ca_is_trusted_through_ca_secret_ref()
-> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-s3-ca").await?;
    let server = S3Server::start_tls()?;
    server.create_bucket("backups")?;
    keys_secret(&ns, "keys", SECRET_KEY).await?;
    let opted_in = json!({"backstop.dev/credentials": "true"});
    create::<Secret>(
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "private-ca", "labels": opted_in},
               "stringData": {"ca.crt": std::fs::read_to_string(server.ca_file())?}}),
    )
    .await?;
    let s3 = |ca: bool| {
        let mut s3 = json!({"endpoint": server.endpoint(), "bucket": "backups", "prefix": "ca",
                            "forcePathStyle": true, "credentialsSecretRef": {"name": "keys"}});
        if ca {
            s3["caSecretRef"] = json!({"name": "private-ca", "key": "ca.crt"});
        }
        json!({"s3": s3})
    };
    create::<BackupRepository>(&ns, repository("untrusted", s3(false))).await?;
    create::<BackupRepository>(&ns, repository("trusted", s3(true))).await?;
    assert_eq!(
        repository_ready(&ns, "untrusted", "False").await?,
        Reason::TlsHandshakeFailed.as_str()
    );
    assert_eq!(repository_ready(&ns, "trusted", "True").await?, "Ready");

    let data = ns.volume("data", &[("app", "db")]).await?;
    write_sample_tree(&data, 5)?;
    create::<Backup>(
        &ns,
        backup(
            "over-tls",
            json!({"repository": "trusted", "target": {"pvcSelector": {"matchLabels": {"app": "db"}}}}),
        ),
    )
    .await?;
    let done = completed(&ns, "over-tls").await?;
    let artifact = done.status.unwrap_or_default().volumes[0]
        .artifact
        .clone()
        .unwrap_or_default();
    let bytes = server.object("backups", &format!("ca/{artifact}"))?;
    let local = tempfile::tempdir()?;
    let path = local.path().join("data.tar.zst");
    std::fs::write(&path, bytes)?;
    let out = local.path().join("out");
    extract_with_tar(&path, &out)?;
    assert_eq!(tree_listing(&out)?, tar_view(&tree_listing(&data)?));
    Ok(())
}
