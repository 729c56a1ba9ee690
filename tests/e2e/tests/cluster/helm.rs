//! The Helm chart (charts/backstop), with the real Helm 3.17.3 binary `hack/test` installs
//! (`BACKSTOP_HELM`): it lints; with default values it renders exactly the objects
//! `kubectl apply -k deploy/` installs, and with tests/e2e/helm-values.yaml exactly the operator
//! the test overlay installs; its optional objects carry deploy/monitoring's rules and dashboard;
//! the API server accepts what it renders for Kubernetes 1.20.2. (A release's install, upgrade
//! and uninstall: helm_release.rs.)

use anyhow::Context as _;
use backstop_e2e::*;
use serde::Deserialize as _;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};

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

/// `helm template` of the chart as release `backstop` in `backstop-system`, with `values`.
fn template(values: &[&str]) -> anyhow::Result<String> {
    let chart = chart_dir();
    let mut args = vec!["template", "backstop", &chart, "-n", "backstop-system"];
    args.extend_from_slice(values);
    helm(&args)
}

#[test]
#[ignore = "needs helm and kubectl: make test"]
fn the_chart_renders_what_deploy_and_the_test_overlay_install() -> anyhow::Result<()> {
    let chart = chart_dir();
    helm(&["lint", "--strict", &chart])?;
    helm(&[
        "lint",
        "--strict",
        &chart,
        "--set",
        "createNamespace=true,serviceMonitor.enabled=true,prometheusRule.enabled=true,grafanaDashboard.enabled=true",
    ])?;

    // Defaults (and the namespace object deploy/ has): the same objects, CRDs included.
    let rendered = template(&["--include-crds", "--set", "createNamespace=true"])?;
    let deploy = kubectl(&["kustomize", "deploy"])?;
    assert_same_objects(&objects(&rendered)?, &objects(&deploy)?);

    // The local cluster's values: the same operator as the test overlay.
    let rendered = template(&[
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

    // On the host network with probes kept: no container port (it would be a host port), the
    // probes and the Service name the port of `listen` by number, updates recreate.
    let host = objects(&template(&[
        "--set",
        "hostNetwork=true,listen=0.0.0.0:9090",
    ])?)?;
    let deployment = &host["Deployment/backstop-system/backstop-controller"];
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container.get("ports"), None, "{container}");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], 9090);
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], 9090);
    assert_eq!(deployment["spec"]["strategy"], json!({"type": "Recreate"}));
    let service = &host["Service/backstop-system/backstop-metrics"];
    assert_eq!(service["spec"]["ports"][0]["targetPort"], 9090);

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
    let rendered = template(&[
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
    let crds = template(&["--include-crds", "--kube-version", "1.20.2"])?;
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
