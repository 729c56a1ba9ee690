//! Install manifests: the CRDs as YAML, generated from the Rust types (`deploy/crds.yaml` is this
//! output; a test fails when the committed file is stale), and the namespaced install, derived
//! from `deploy/` so that both installs grant the same permissions.

use anyhow::Context as _;
use backstop_api::{Backup, BackupPolicy, BackupRepository, Restore};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{EnvVar, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use kube::CustomResourceExt;
use kube::api::ObjectMeta;
use serde::Deserialize as _;

pub fn crds_yaml() -> anyhow::Result<String> {
    let mut out = String::new();
    for crd in [
        BackupRepository::crd(),
        BackupPolicy::crd(),
        Backup::crd(),
        Restore::crd(),
    ] {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

pub fn print_crds() -> anyhow::Result<()> {
    print!("{}", crds_yaml()?);
    Ok(())
}

/// What `backstop install` prints.
#[derive(clap::Args)]
pub struct InstallArgs {
    /// The namespaces the operator acts in (comma-separated); it gets Roles there and nothing
    /// elsewhere beyond reading those Namespace objects and StorageClasses.
    #[arg(long, required = true, value_delimiter = ',', value_parser = crate::controller::parse_namespace)]
    namespaces: Vec<String>,
    /// The operator's own namespace (its Deployment, ServiceAccount and leader-election Lease).
    #[arg(long, default_value = "backstop-system", value_parser = crate::controller::parse_namespace)]
    namespace: String,
}

const NAMESPACE_YAML: &str = include_str!("../../../deploy/namespace.yaml");
const RBAC_YAML: &str = include_str!("../../../deploy/rbac.yaml");
const CONTROLLER_YAML: &str = include_str!("../../../deploy/controller.yaml");
const SERVICE_ACCOUNT: &str = "backstop-controller";

/// Resources of the operator's ClusterRole that are not namespaced: a Role cannot grant them.
const CLUSTER_SCOPED: [&str; 3] = ["namespaces", "storageclasses", "volumesnapshotclasses"];

pub fn print_install(args: InstallArgs) -> anyhow::Result<()> {
    print!("{}", namespaced_install(&args.namespace, &args.namespaces)?);
    Ok(())
}

/// The namespaced install: `deploy/` with the ClusterRole's namespaced rules granted by a Role in
/// each of `watched`, the cluster-scoped ones narrowed to those namespaces, everything placed in
/// `namespace`, and the controller told to watch only `watched`. The CRDs are not included: they
/// are cluster objects a cluster administrator installs once (`deploy/crds.yaml`).
pub fn namespaced_install(namespace: &str, watched: &[String]) -> anyhow::Result<String> {
    let rbac: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(RBAC_YAML)
        .map(serde_yaml::Value::deserialize)
        .collect::<Result<_, _>>()
        .context("reading deploy/rbac.yaml")?;
    let of_kind = |kind: &str| {
        rbac.iter()
            .find(|doc| doc["kind"].as_str() == Some(kind))
            .cloned()
            .with_context(|| format!("deploy/rbac.yaml has no {kind}"))
    };
    let cluster_role: ClusterRole = serde_yaml::from_value(of_kind("ClusterRole")?)?;
    let (cluster_rules, namespaced_rules) = split_rules(cluster_role.rules.unwrap_or_default())?;
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: SERVICE_ACCOUNT.into(),
        namespace: Some(namespace.into()),
        ..Subject::default()
    };
    let meta = |name: &str, ns: Option<&str>| ObjectMeta {
        name: Some(name.into()),
        namespace: ns.map(Into::into),
        labels: Some([("app.kubernetes.io/name".into(), "backstop".into())].into()),
        ..ObjectMeta::default()
    };
    let role_ref = |kind: &str, name: &str| RoleRef {
        api_group: "rbac.authorization.k8s.io".into(),
        kind: kind.into(),
        name: name.into(),
    };

    let mut docs = Vec::new();
    let mut operator_namespace: Namespace = serde_yaml::from_str(NAMESPACE_YAML)?;
    operator_namespace.metadata.name = Some(namespace.into());
    docs.push(serde_yaml::to_string(&operator_namespace)?);
    docs.push(serde_yaml::to_string(&ServiceAccount {
        metadata: meta(SERVICE_ACCOUNT, Some(namespace)),
        ..ServiceAccount::default()
    })?);
    for watched_namespace in watched {
        docs.push(serde_yaml::to_string(&Role {
            metadata: meta(SERVICE_ACCOUNT, Some(watched_namespace)),
            rules: Some(namespaced_rules.clone()),
        })?);
        docs.push(serde_yaml::to_string(&RoleBinding {
            metadata: meta(SERVICE_ACCOUNT, Some(watched_namespace)),
            role_ref: role_ref("Role", SERVICE_ACCOUNT),
            subjects: Some(vec![subject.clone()]),
        })?);
    }
    // Cluster objects: only the watched Namespace objects (is one being deleted, does it enforce
    // Pod Security "restricted") and StorageClasses (does a Pending PVC bind on first use).
    let reader = format!("backstop-controller-{namespace}");
    let cluster_rules = cluster_rules
        .into_iter()
        .map(|mut rule| {
            if rule.resources.iter().flatten().any(|r| r == "namespaces") {
                // And kube-system, whose uid is the cluster's identity as a repository writer.
                let mut names = watched.to_vec();
                names.push("kube-system".into());
                rule.resource_names = Some(names);
            }
            rule
        })
        .collect();
    docs.push(serde_yaml::to_string(&ClusterRole {
        metadata: meta(&reader, None),
        rules: Some(cluster_rules),
        ..ClusterRole::default()
    })?);
    docs.push(serde_yaml::to_string(&ClusterRoleBinding {
        metadata: meta(&reader, None),
        role_ref: role_ref("ClusterRole", &reader),
        subjects: Some(vec![subject.clone()]),
    })?);
    let mut lease_role: Role = serde_yaml::from_value(of_kind("Role")?)?;
    lease_role.metadata.namespace = Some(namespace.into());
    let mut lease_binding: RoleBinding = serde_yaml::from_value(of_kind("RoleBinding")?)?;
    lease_binding.metadata.namespace = Some(namespace.into());
    lease_binding.subjects = Some(vec![subject]);
    docs.push(serde_yaml::to_string(&lease_role)?);
    docs.push(serde_yaml::to_string(&lease_binding)?);

    let mut controller: Deployment = serde_yaml::from_str(CONTROLLER_YAML)?;
    controller.metadata.namespace = Some(namespace.into());
    let container = controller
        .spec
        .as_mut()
        .and_then(|spec| spec.template.spec.as_mut())
        .and_then(|pod| pod.containers.first_mut())
        .context("deploy/controller.yaml has no container")?;
    container.env.get_or_insert_default().push(EnvVar {
        name: "BACKSTOP_NAMESPACES".into(),
        value: Some(watched.join(",")),
        ..EnvVar::default()
    });
    docs.push(serde_yaml::to_string(&controller)?);
    Ok(docs.iter().map(|doc| format!("---\n{doc}")).collect())
}

/// The rules a ClusterRole must grant (on cluster-scoped resources) and those a Role can.
fn split_rules(rules: Vec<PolicyRule>) -> anyhow::Result<(Vec<PolicyRule>, Vec<PolicyRule>)> {
    let mut cluster = Vec::new();
    let mut namespaced = Vec::new();
    for rule in rules {
        let resources = rule.resources.clone().unwrap_or_default();
        let scoped = resources
            .iter()
            .filter(|r| CLUSTER_SCOPED.contains(&r.as_str()))
            .count();
        match scoped {
            0 => namespaced.push(rule),
            n if n == resources.len() => cluster.push(rule),
            _ => anyhow::bail!(
                "deploy/rbac.yaml: a rule mixes cluster-scoped and namespaced resources ({resources:?}); split it"
            ),
        }
    }
    Ok((cluster, namespaced))
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_crds_match_the_types() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/crds.yaml");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == super::crds_yaml().unwrap(),
            "deploy/crds.yaml is stale: run `cargo run -q -p backstop -- crds > deploy/crds.yaml`"
        );
    }

    /// Helm reads only files inside the chart: it carries copies of the CRDs and the monitoring
    /// files, which must not drift from deploy/ (the rendered objects are compared by the chart's
    /// end-to-end test, which needs helm).
    #[test]
    fn the_chart_carries_the_same_files_as_deploy() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        let read = |path: &str| {
            std::fs::read_to_string(format!("{root}/{path}"))
                .unwrap_or_else(|e| panic!("reading {path}: {e}"))
        };
        for (copy, source) in [
            ("charts/backstop/crds/crds.yaml", "deploy/crds.yaml"),
            (
                "charts/backstop/files/alerts.yaml",
                "deploy/monitoring/alerts.yaml",
            ),
            (
                "charts/backstop/files/dashboard.json",
                "deploy/monitoring/dashboard.json",
            ),
        ] {
            assert!(
                read(copy) == read(source),
                "{copy} differs from {source}: run `cp {source} {copy}`"
            );
        }
        let chart: serde_yaml::Value =
            serde_yaml::from_str(&read("charts/backstop/Chart.yaml")).unwrap();
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            chart["version"].as_str(),
            Some(version),
            "Chart.yaml's version"
        );
        assert_eq!(
            chart["appVersion"].as_str(),
            Some(version),
            "Chart.yaml's appVersion"
        );
    }

    fn docs(yaml: &str) -> Vec<serde_yaml::Value> {
        use serde::Deserialize;
        serde_yaml::Deserializer::from_str(yaml)
            .map(|doc| serde_yaml::Value::deserialize(doc).unwrap())
            .collect()
    }

    fn yaml(text: &str) -> serde_yaml::Value {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn the_namespaced_install_grants_nothing_cluster_wide_but_three_reads() {
        let watched = ["team-a".to_string(), "team-b".to_string()];
        let install = super::namespaced_install("backstop-ops", &watched).unwrap();
        let docs = docs(&install);
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ServiceAccount",
                "Role",
                "RoleBinding",
                "Role",
                "RoleBinding",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
                "Deployment"
            ]
        );
        // Everything namespaced is placed in the operator's namespace or a watched one.
        for doc in &docs {
            let ns = doc["metadata"]["namespace"].as_str();
            match doc["kind"].as_str().unwrap() {
                "Namespace" => assert_eq!(doc["metadata"]["name"], "backstop-ops"),
                "ClusterRole" | "ClusterRoleBinding" => assert_eq!(ns, None),
                "Role" | "RoleBinding" => {
                    assert!(
                        matches!(ns, Some("team-a" | "team-b" | "backstop-ops")),
                        "{doc:?}"
                    )
                }
                _ => assert_eq!(ns, Some("backstop-ops"), "{doc:?}"),
            }
        }
        // The only cluster-wide grant: get the two watched Namespace objects, StorageClasses and
        // VolumeSnapshotClasses.
        let cluster_role = docs.iter().find(|d| d["kind"] == "ClusterRole").unwrap();
        let rules = cluster_role["rules"].as_sequence().unwrap();
        assert_eq!(rules.len(), 3, "{rules:?}");
        for rule in rules {
            assert_eq!(rule["verbs"], yaml("[get]"), "{rule:?}");
        }
        let rule_on = |resources: &str| {
            rules
                .iter()
                .find(|r| r["resources"] == yaml(resources))
                .unwrap_or_else(|| panic!("no rule on {resources}: {rules:?}"))
        };
        assert_eq!(
            rule_on("[namespaces]")["resourceNames"],
            yaml("[team-a, team-b, kube-system]")
        );
        rule_on("[storageclasses]");
        rule_on("[volumesnapshotclasses]");
        // Roles grant Jobs (the operator's main power) only in the watched namespaces.
        let jobs_roles: Vec<&str> = docs
            .iter()
            .filter(|d| d["kind"] == "Role")
            .filter(|d| serde_yaml::to_string(&d["rules"]).unwrap().contains("jobs"))
            .map(|d| d["metadata"]["namespace"].as_str().unwrap())
            .collect();
        assert_eq!(jobs_roles, ["team-a", "team-b"]);
        // Bindings name the ServiceAccount in the operator's namespace.
        for binding in docs.iter().filter(|d| {
            matches!(
                d["kind"].as_str(),
                Some("RoleBinding" | "ClusterRoleBinding")
            )
        }) {
            assert_eq!(
                binding["subjects"][0]["namespace"], "backstop-ops",
                "{binding:?}"
            );
        }
        let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
        let env =
            serde_yaml::to_string(&deployment["spec"]["template"]["spec"]["containers"][0]["env"])
                .unwrap();
        assert!(
            env.contains("name: BACKSTOP_NAMESPACES\n  value: team-a,team-b"),
            "{env}"
        );
    }

    #[test]
    fn every_rule_of_the_cluster_role_is_granted_by_the_namespaced_install() {
        let install = super::namespaced_install("ops", &["a".to_string()]).unwrap();
        let granted: Vec<String> = docs(&install)
            .iter()
            .filter(|d| matches!(d["kind"].as_str(), Some("Role" | "ClusterRole")))
            .flat_map(|d| d["rules"].as_sequence().unwrap().clone())
            .map(|rule| format!("{:?}{:?}", rule["resources"], rule["verbs"]))
            .collect();
        let cluster_role = docs(super::RBAC_YAML)
            .into_iter()
            .find(|d| d["kind"] == "ClusterRole")
            .unwrap();
        for rule in cluster_role["rules"].as_sequence().unwrap() {
            let rule = format!("{:?}{:?}", rule["resources"], rule["verbs"]);
            assert!(granted.contains(&rule), "{rule} not granted");
        }
    }

    #[test]
    fn a_rule_that_mixes_scopes_is_refused() {
        let rule = k8s_openapi::api::rbac::v1::PolicyRule {
            resources: Some(vec!["pods".into(), "namespaces".into()]),
            verbs: vec!["get".into()],
            ..Default::default()
        };
        let err = super::split_rules(vec![rule]).unwrap_err().to_string();
        assert!(err.contains("split it"), "{err}");
    }
}
