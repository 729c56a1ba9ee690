//! The namespaced install (`backstop install --namespaces`): an operator whose ServiceAccount has
//! Roles in one namespace backs up and restores there, and leaves every other namespace alone.
//!
//! Its own test binary, one test: for its duration the cluster-wide operator is scaled to zero
//! (both would act on the watched namespace) and then brought back. `cargo test` runs test
//! binaries one after another, so no other test sees the operator missing.

use backstop_api::{Backup, BackupPhase, Restore};
use backstop_e2e::*;
use kube::api::ListParams;
use serde_json::json;
use std::process::Command;
use std::time::Duration;

/// The namespaced install in `namespace`, removed when dropped, after which the cluster-wide
/// operator runs again.
struct ScopedOperator {
    namespace: String,
}

impl Drop for ScopedOperator {
    fn drop(&mut self) {
        let reader = format!("backstop-controller-{}", self.namespace);
        for args in [
            // Waits for the pod to go: it listens on the port the cluster-wide operator needs.
            vec!["delete", "namespace", &self.namespace, "--timeout=120s"],
            vec!["delete", "clusterrole,clusterrolebinding", &reader],
        ] {
            let _ = Command::new("kubectl").args(args).output();
        }
        restart_cluster_wide_operator();
    }
}

/// Stops the cluster-wide operator, then installs `backstop install --namespaces <watched>` into
/// `namespace` with the local cluster's overlay patch, and waits until it leads.
async fn install_scoped(
    client: &kube::Client,
    namespace: &str,
    watched: &str,
) -> anyhow::Result<ScopedOperator> {
    let guard = ScopedOperator {
        namespace: namespace.into(),
    };
    stop_cluster_wide_operator(client).await?;

    let install = output_of(Command::new(backstop_bin()?).args([
        "install",
        "--namespaces",
        watched,
        "--namespace",
        namespace,
    ]))?;
    let overlay = tempfile::tempdir()?;
    std::fs::write(overlay.path().join("install.yaml"), install)?;
    std::fs::copy(
        repo_root().join("tests/e2e/overlay/controller-patch.yaml"),
        overlay.path().join("controller-patch.yaml"),
    )?;
    std::fs::write(
        overlay.path().join("kustomization.yaml"),
        format!(
            "resources: [install.yaml]\npatchesJson6902:\n  - target: {{group: apps, version: v1, kind: Deployment, name: backstop-controller, namespace: {namespace}}}\n    path: controller-patch.yaml\n"
        ),
    )?;
    output_of(
        Command::new("kubectl")
            .args(["apply", "-k"])
            .arg(overlay.path()),
    )?;

    operator_leads(client, namespace).await?;
    Ok(guard)
}

fn can_i(verb: &str, resource: &str, namespace: &str, operator_namespace: &str) -> bool {
    let account = format!("system:serviceaccount:{operator_namespace}:backstop-controller");
    Command::new("kubectl")
        .args(["auth", "can-i", verb, resource, "-n", namespace, "--as"])
        .arg(account)
        .output()
        .is_ok_and(|out| out.status.success())
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn a_namespaced_install_acts_in_its_namespaces_only() -> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let watched = TestNamespace::create(&client, "e2e-scoped").await?;
    let elsewhere = TestNamespace::create(&client, "e2e-unscoped").await?;
    let operator_namespace = format!("{}-operator", watched.name);
    let _scoped = install_scoped(&client, &operator_namespace, &watched.name).await?;

    // What RBAC itself says: Jobs and PVCs in the watched namespace only; of cluster objects,
    // only the watched Namespace.
    let can = |verb: &str, resource: &str, ns: &str| can_i(verb, resource, ns, &operator_namespace);
    assert!(can("create", "jobs", &watched.name));
    assert!(can("create", "persistentvolumeclaims", &watched.name));
    assert!(!can("create", "jobs", &elsewhere.name));
    assert!(!can("list", "persistentvolumeclaims", &elsewhere.name));
    assert!(!can("get", "secrets", &elsewhere.name));
    assert!(!can("list", "backups.backstop.dev", &elsewhere.name));
    assert!(can("get", &format!("namespace/{}", watched.name), ""));
    assert!(!can("get", &format!("namespace/{}", elsewhere.name), ""));

    // The watched namespace: a backup and a restore of it, byte for byte.
    let data = watched.volume("data", &[("app", "scoped")]).await?;
    write_sample_tree(&data, 7)?;
    let captured = tree_listing(&data)?;
    watched.repository().await?;
    let target = watched.volume("target", &[]).await?;
    create::<Backup>(
        &watched,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup", "metadata": {"name": "snap"},
               "spec": {"target": {"pvcSelector": {"matchLabels": {"app": "scoped"}}}}}),
    )
    .await?;
    // Elsewhere: the same request, which this operator must never see.
    elsewhere.volume("data", &[("app", "scoped")]).await?;
    elsewhere.repository().await?;
    create::<Backup>(
        &elsewhere,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup", "metadata": {"name": "snap"},
               "spec": {"target": {"pvcSelector": {"matchLabels": {"app": "scoped"}}}}}),
    )
    .await?;

    let backup = finished_backup(&watched, "snap", Duration::from_secs(180)).await?;
    assert_eq!(
        backup.phase(),
        BackupPhase::Completed,
        "{:?}",
        backup.status
    );
    create::<Restore>(
        &watched,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Restore", "metadata": {"name": "back"},
               "spec": {"backupName": "snap", "target": {"pvcName": "target"}}}),
    )
    .await?;
    let restore = finished_restore(&watched, "back", Duration::from_secs(180)).await?;
    assert_eq!(
        restore.phase(),
        BackupPhase::Completed,
        "{:?}",
        restore.status
    );
    assert_eq!(tree_listing(&target)?, captured);

    // By now the other namespace's Backup would have finished too, had anyone acted on it.
    let untouched = elsewhere.api::<Backup>().get("snap").await?;
    assert!(untouched.status.is_none(), "{:?}", untouched.status);
    assert!(untouched.metadata.finalizers.is_none(), "{untouched:?}");
    assert!(
        elsewhere
            .api::<k8s_openapi::api::batch::v1::Job>()
            .list(&ListParams::default())
            .await?
            .items
            .is_empty()
    );
    let repository = elsewhere
        .api::<backstop_api::BackupRepository>()
        .get("default")
        .await?;
    assert!(repository.status.is_none(), "{:?}", repository.status);
    Ok(())
}
