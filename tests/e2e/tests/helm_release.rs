//! A Helm release of charts/backstop on the local cluster, with the test values
//! (tests/e2e/helm-values.yaml): it installs and leads, backs up; an upgrade to other mover
//! resources gives movers those resources; uninstall removes the operator and leaves the CRDs and
//! the Backups.
//!
//! Its own test binary, one test: for its duration the overlay's cluster-wide operator is scaled
//! to zero (both would act on every namespace) and then brought back. `cargo test` runs test
//! binaries one after another, so no other test sees the operator missing.

use backstop_api::{Backup, BackupPhase};
use backstop_e2e::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use serde_json::json;
use std::time::Duration;

const RELEASE: &str = "backstop-helm";

/// While it lives, the overlay's operator is stopped; when dropped, the release is uninstalled
/// (if a failure left it) and the overlay's operator runs again.
struct OverlayOperatorStopped;

impl OverlayOperatorStopped {
    async fn stop(client: &kube::Client) -> anyhow::Result<Self> {
        stop_cluster_wide_operator(client).await?;
        Ok(Self)
    }
}

/// `helm uninstall` of the test's release, waiting for its objects to go.
fn uninstall() -> anyhow::Result<String> {
    helm(&[
        "uninstall",
        RELEASE,
        "-n",
        RELEASE,
        "--wait",
        "--timeout",
        "60s",
    ])
}

impl Drop for OverlayOperatorStopped {
    fn drop(&mut self) {
        let _ = uninstall();
        let _ = kubectl(&[
            "delete",
            "namespace",
            RELEASE,
            "--wait=false",
            "--ignore-not-found",
        ]);
        restart_cluster_wide_operator();
    }
}

async fn backup_completes(ns: &TestNamespace, name: &str) -> anyhow::Result<()> {
    create::<Backup>(
        ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup", "metadata": {"name": name},
               "spec": {"target": {"pvcSelector": {"matchLabels": {"app": "helm"}}}}}),
    )
    .await?;
    let done = finished_backup(ns, name, Duration::from_secs(180)).await?;
    assert_eq!(done.phase(), BackupPhase::Completed, "{:?}", done.status);
    Ok(())
}

#[tokio::test]
#[ignore = "needs helm and a cluster: make test"]
async fn a_release_installs_backs_up_upgrades_and_uninstalls_keeping_the_backups()
-> anyhow::Result<()> {
    let client = cluster().await?;
    let stopped = OverlayOperatorStopped::stop(&client).await?;
    let chart = chart_dir();
    let image = backstop_image();
    let (repository, tag) = image.rsplit_once(':').unwrap_or((&image, "dev"));
    helm(&[
        "install",
        RELEASE,
        &chart,
        "-n",
        RELEASE,
        "--create-namespace",
        "-f",
        "tests/e2e/helm-values.yaml",
        "--set",
        &format!("image.repository={repository},image.tag={tag}"),
        "--wait",
        "--timeout",
        "120s",
    ])?;
    operator_leads(&client, RELEASE).await?;

    let ns = TestNamespace::create(&client, "e2e-helm").await?;
    ns.repository().await?;
    let data = ns.volume("data", &[("app", "helm")]).await?;
    write_sample_tree(&data, 3)?;
    backup_completes(&ns, "through-helm").await?;

    // An upgrade to other mover resources: the new operator leads and its movers carry them.
    helm(&[
        "upgrade",
        RELEASE,
        &chart,
        "-n",
        RELEASE,
        "--reuse-values",
        "--set",
        "mover.resources.requests.memory=64Mi,mover.resources.limits.memory=300Mi",
        "--wait",
        "--timeout",
        "120s",
    ])?;
    operator_leads(&client, RELEASE).await?;
    backup_completes(&ns, "after-upgrade").await?;
    let stranded_pv = ns.stranded_volume("helm-stranded").await?;
    create::<Backup>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup", "metadata": {"name": "held"},
               "spec": {"target": {"pvcSelector": {"matchLabels": {"app": "helm-stranded"}}}}}),
    )
    .await?;
    let job_api: Api<Job> = ns.api();
    let job = wait_for(Duration::from_secs(60), "the held backup's Job", || async {
        Ok(job_api
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .next())
    })
    .await?;
    let limits = job
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers.into_iter().next())
        .and_then(|c| c.resources)
        .and_then(|r| r.limits)
        .unwrap_or_default();
    assert_eq!(limits.get("memory").map(|q| q.0.as_str()), Some("300Mi"));

    // Uninstall: the operator goes, the CRDs and every Backup stay.
    uninstall()?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), RELEASE);
    assert!(
        deployments
            .get_opt("backstop-helm-controller")
            .await?
            .is_none()
    );
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [
        "backups",
        "backuppolicies",
        "backuprepositories",
        "restores",
    ] {
        assert!(
            crds.get_opt(&format!("{crd}.backstop.dev"))
                .await?
                .is_some(),
            "{crd}"
        );
    }
    let backups: Api<Backup> = ns.api();
    for name in ["through-helm", "after-upgrade"] {
        assert_eq!(
            backups.get(name).await?.phase(),
            BackupPhase::Completed,
            "{name}"
        );
    }
    drop(stopped);
    install_operator(&client).await?;
    // The overlay's operator finishes what the release left: the held Backup goes with its Job.
    backups.delete("held", &Default::default()).await?;
    wait_until(Duration::from_secs(60), "the held backup to go", || async {
        Ok(backups.get_opt("held").await?.is_none())
    })
    .await?;
    Api::<k8s_openapi::api::core::v1::PersistentVolume>::all(client)
        .delete(&stranded_pv, &Default::default())
        .await?;
    Ok(())
}
