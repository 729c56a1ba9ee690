//! The Helm chart (charts/backstop), with the real Helm 3.17.3 binary `hack/test` installs
//! (`BACKSTOP_HELM`): it lints; with default values it renders exactly the objects
//! `kubectl apply -k deploy/` installs, and with tests/e2e/helm-values.yaml exactly the operator
//! the test overlay installs; its optional objects carry deploy/monitoring's rules and dashboard;
//! the API server accepts what it renders for Kubernetes 1.20.2; and a release installs, backs
//! up, upgrades and uninstalls on the local cluster, leaving the CRDs and the Backups.
//!
//! `serial_*` tests stop the operator the other tests use while they run: `hack/test` runs them
//! alone, after the others (`--skip serial_` first, then `serial_`).

use anyhow::{Context as _, bail};
use backstop_api::{Backup, BackupPhase};
use backstop_e2e::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use serde::Deserialize as _;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

fn helm(args: &[&str]) -> anyhow::Result<String> {
    let helm = std::env::var_os("BACKSTOP_HELM").context(
        "BACKSTOP_HELM is not set: run `make test` (it installs Helm 3.17.3 and sets it), or point \
         it at a helm binary",
    )?;
    run(Command::new(helm).args(args).current_dir(repo_root()))
}

fn run(command: &mut Command) -> anyhow::Result<String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn kubectl(args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("kubectl").args(args).current_dir(repo_root()))
}

/// The documents of a YAML stream as JSON values (empty documents dropped).
fn docs(yaml: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value: Value = serde_json::to_value(serde_yaml::Value::deserialize(doc)?)?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

/// Objects by kind/namespace/name, without the labels only Helm adds, with env vars in name
/// order (the chart and a JSON patch append them in different orders) and whole numbers as
/// integers (serde_yaml writes the CRDs' `minimum: 1.0`, kustomize reads it back as 1).
fn objects(yaml: &str) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for mut doc in docs(yaml)? {
        let key = format!(
            "{}/{}/{}",
            doc["kind"].as_str().unwrap_or_default(),
            doc["metadata"]["namespace"].as_str().unwrap_or_default(),
            doc["metadata"]["name"].as_str().unwrap_or_default()
        );
        if let Some(labels) = doc
            .pointer_mut("/metadata/labels")
            .and_then(Value::as_object_mut)
        {
            for helm_only in [
                "helm.sh/chart",
                "app.kubernetes.io/managed-by",
                "app.kubernetes.io/instance",
            ] {
                labels.remove(helm_only);
            }
        }
        if let Some(containers) = doc
            .pointer_mut("/spec/template/spec/containers")
            .and_then(Value::as_array_mut)
        {
            for env in containers
                .iter_mut()
                .filter_map(|c| c.get_mut("env").and_then(Value::as_array_mut))
            {
                env.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
            }
        }
        whole_numbers_as_integers(&mut doc);
        anyhow::ensure!(out.insert(key.clone(), doc).is_none(), "{key} twice");
    }
    Ok(out)
}

fn whole_numbers_as_integers(value: &mut Value) {
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e15) {
                *value = json!(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(whole_numbers_as_integers),
        _ => {}
    }
}

/// Where two values first differ, as a JSON pointer with both sides (objects this size make
/// unreadable assertion messages).
fn first_difference(a: &Value, b: &Value, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let missing = Value::Null;
                first_difference(
                    x.get(k).unwrap_or(&missing),
                    y.get(k).unwrap_or(&missing),
                    &format!("{at}/{k}"),
                )
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_difference(p, q, &format!("{at}/{i}"))),
        _ => (a != b).then(|| format!("{at}: {a} != {b}")),
    }
}

fn assert_same_objects(chart: &BTreeMap<String, Value>, kustomize: &BTreeMap<String, Value>) {
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        kustomize.keys().collect::<Vec<_>>(),
        "the chart and deploy/ install different objects"
    );
    for (key, object) in kustomize {
        if let Some(difference) = first_difference(&chart[key], object, "") {
            panic!("{key} differs between the chart (left) and kustomize (right) at {difference}");
        }
    }
}

fn chart() -> String {
    repo_root().join("charts/backstop").display().to_string()
}

#[test]
#[ignore = "needs helm and kubectl: make test"]
fn the_chart_renders_what_deploy_and_the_test_overlay_install() -> anyhow::Result<()> {
    let chart = chart();
    helm(&["lint", "--strict", &chart])?;
    helm(&[
        "lint",
        "--strict",
        &chart,
        "--set",
        "createNamespace=true,serviceMonitor.enabled=true,prometheusRule.enabled=true,grafanaDashboard.enabled=true",
    ])?;

    // Defaults (and the namespace object deploy/ has): the same objects, CRDs included.
    let rendered = helm(&[
        "template",
        "backstop",
        &chart,
        "-n",
        "backstop-system",
        "--include-crds",
        "--set",
        "createNamespace=true",
    ])?;
    let deploy = kubectl(&["kustomize", "deploy"])?;
    assert_same_objects(&objects(&rendered)?, &objects(&deploy)?);

    // The local cluster's values: the same operator as the test overlay.
    let rendered = helm(&[
        "template",
        "backstop",
        &chart,
        "-n",
        "backstop-system",
        "--set",
        "createNamespace=true",
        "-f",
        "tests/e2e/helm-values.yaml",
    ])?;
    let overlay = kubectl(&["kustomize", "tests/e2e/overlay"])?;
    let deployment = "Deployment/backstop-system/backstop-controller";
    if let Some(difference) = first_difference(
        &objects(&rendered)?[deployment],
        &objects(&overlay)?[deployment],
        "",
    ) {
        panic!(
            "tests/e2e/helm-values.yaml and tests/e2e/overlay install different operators: {difference}"
        );
    }

    // Another release in another namespace shares no cluster object with the first.
    let other = objects(&helm(&["template", "nightly", &chart, "-n", "ops"])?)?;
    let names: Vec<&String> = other.keys().collect();
    for key in &names {
        let name = key.rsplit('/').next().unwrap_or_default();
        assert!(name.starts_with("nightly-backstop-"), "{key}");
    }
    let binding = &other["ClusterRoleBinding//nightly-backstop-controller"];
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "nightly-backstop-controller", "namespace": "ops"}])
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs helm and a cluster: make test"]
async fn optional_objects_and_settings_render_and_the_api_server_accepts_them() -> anyhow::Result<()>
{
    let client = cluster().await?;
    install_operator(&client).await?;
    let chart = chart();
    let rendered = helm(&[
        "template",
        "backstop",
        &chart,
        "-n",
        "backstop-system",
        "--kube-version",
        "1.20.2",
        "--set",
        "serviceMonitor.enabled=true,prometheusRule.enabled=true,grafanaDashboard.enabled=true",
        "--set",
        "logLevel=debug,leaderElection.leaseName=backstop-ops,replicas=2",
        "--set",
        "mover.resources.limits.memory=300Mi,mover.nodeSelector.backup=yes",
        "--set",
        "mover.tolerations[0].key=dedicated,mover.tolerations[0].operator=Exists",
        "--set",
        "nodeSelector.role=ops",
    ])?;
    let objects = objects(&rendered)?;

    let rule = &objects["PrometheusRule/backstop-system/backstop"];
    let alerts: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(
        repo_root().join("deploy/monitoring/alerts.yaml"),
    )?)?;
    assert_eq!(
        rule["spec"],
        serde_json::to_value(alerts)?,
        "the PrometheusRule's rules"
    );
    let monitor = &objects["ServiceMonitor/backstop-system/backstop"];
    let service = &objects["Service/backstop-system/backstop-metrics"];
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        service["spec"]["selector"]
    );
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
    let dashboard = &objects["ConfigMap/backstop-system/backstop-dashboard"];
    let shipped: Value = serde_json::from_str(&std::fs::read_to_string(
        repo_root().join("deploy/monitoring/dashboard.json"),
    )?)?;
    let carried: Value = serde_json::from_str(
        dashboard["data"]["backstop.json"]
            .as_str()
            .unwrap_or_default(),
    )?;
    assert_eq!(carried, shipped);
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");

    let deployment = &objects["Deployment/backstop-system/backstop-controller"];
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"], json!({"role": "ops"}));
    let container = &pod["containers"][0];
    assert_eq!(
        container["args"],
        json!(["controller", "--lease-name=backstop-ops"])
    );
    let env: BTreeMap<&str, &str> = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
        .collect();
    assert_eq!(env["RUST_LOG"], "debug");
    let json_env = |name: &str| serde_json::from_str::<Value>(env[name]).unwrap_or(Value::Null);
    assert_eq!(
        json_env("BACKSTOP_MOVER_RESOURCES"),
        json!({"limits": {"memory": "300Mi"}})
    );
    assert_eq!(
        json_env("BACKSTOP_MOVER_NODE_SELECTOR"),
        json!({"backup": "yes"})
    );
    assert_eq!(
        json_env("BACKSTOP_MOVER_TOLERATIONS"),
        json!([{"key": "dedicated", "operator": "Exists"}])
    );

    // Everything but the Prometheus Operator's kinds (whose CRDs this cluster does not have)
    // passes the 1.20 API server's validation, CRDs included.
    let crds = helm(&[
        "template",
        "backstop",
        &chart,
        "-n",
        "backstop-system",
        "--include-crds",
        "--kube-version",
        "1.20.2",
    ])?;
    let mut accepted: Vec<Value> = docs(&rendered)?
        .into_iter()
        .filter(|d| {
            d["apiVersion"]
                .as_str()
                .is_some_and(|v| !v.starts_with("monitoring.coreos.com/"))
        })
        .collect();
    accepted.extend(
        docs(&crds)?
            .into_iter()
            .filter(|d| d["kind"] == "CustomResourceDefinition"),
    );
    let list =
        serde_json::to_string(&json!({"apiVersion": "v1", "kind": "List", "items": accepted}))?;
    let mut child = Command::new("kubectl")
        .args(["apply", "--dry-run=server", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(&mut child.stdin.take().context("stdin")?, list.as_bytes())?;
    let out = child.wait_with_output()?;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(said.lines().count(), accepted.len(), "{said}");
    Ok(())
}

const RELEASE: &str = "backstop-helm";

/// While it lives, the overlay's operator is stopped; when dropped, the release is uninstalled
/// (if a failure left it) and the overlay's operator runs again.
struct OverlayOperatorStopped;

impl OverlayOperatorStopped {
    async fn stop(client: &kube::Client) -> anyhow::Result<Self> {
        install_operator(client).await?;
        kubectl(&[
            "-n",
            "backstop-system",
            "scale",
            "deployment/backstop-controller",
            "--replicas=0",
        ])?;
        let pods: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(client.clone(), "backstop-system");
        wait_until(
            Duration::from_secs(60),
            "the overlay's operator to stop",
            || async { Ok(pods.list(&Default::default()).await?.items.is_empty()) },
        )
        .await?;
        Ok(Self)
    }
}

impl Drop for OverlayOperatorStopped {
    fn drop(&mut self) {
        let _ = helm(&[
            "uninstall",
            RELEASE,
            "-n",
            RELEASE,
            "--wait",
            "--timeout",
            "60s",
        ]);
        let _ = kubectl(&[
            "delete",
            "namespace",
            RELEASE,
            "--wait=false",
            "--ignore-not-found",
        ]);
        let _ = kubectl(&[
            "-n",
            "backstop-system",
            "scale",
            "deployment/backstop-controller",
            "--replicas=1",
        ]);
    }
}

/// Waits until the release's one pod (after an upgrade: the new one) runs and leads.
async fn release_leads(client: &kube::Client) -> anyhow::Result<()> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), RELEASE);
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), RELEASE);
    wait_until(
        Duration::from_secs(120),
        "the release's operator to lead",
        || async {
            let holder = leases
                .get_opt("backstop-controller")
                .await?
                .and_then(|l| l.spec?.holder_identity);
            let Some(holder) = holder else {
                return Ok(false);
            };
            let running = pods.list(&Default::default()).await?.items;
            Ok(running.len() == 1
                && running.iter().all(|p| {
                    p.metadata.name.as_deref() == Some(holder.as_str())
                        && p.metadata.deletion_timestamp.is_none()
                        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                }))
        },
    )
    .await
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
#[ignore = "stops the shared operator: hack/test runs it alone"]
async fn serial_helm_install_backup_upgrade_uninstall() -> anyhow::Result<()> {
    let client = cluster().await?;
    let stopped = OverlayOperatorStopped::stop(&client).await?;
    let chart = chart();
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
    release_leads(&client).await?;

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
    release_leads(&client).await?;
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
    helm(&[
        "uninstall",
        RELEASE,
        "-n",
        RELEASE,
        "--wait",
        "--timeout",
        "60s",
    ])?;
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
