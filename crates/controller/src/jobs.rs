//! The Jobs Backstop runs: pure builders from a Backup, a volume and a repository to a Job spec.
//! The mover image is Backstop's own; results come back in the termination message.

use backstop_api::{Backup, BackupRepository, ExistingDataPolicy, Restore, labels, naming};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::Resource;
use serde_json::json;

/// Operator-wide settings for the pods Backstop creates.
#[derive(Debug, Clone)]
pub struct MoverConfig {
    pub image: String,
    pub pull_policy: String,
    /// Mover pods use the host's network (needed to reach object storage on the host in the test
    /// cluster; some users need it too).
    pub host_network: bool,
    /// Longest a mover Job may run before it is failed.
    pub deadline_seconds: i64,
    /// The mover container's requests and limits (a `ResourceRequirements` object).
    pub resources: serde_json::Value,
}

impl Default for MoverConfig {
    fn default() -> Self {
        Self {
            image: "backstop:dev".into(),
            pull_policy: "IfNotPresent".into(),
            host_network: false,
            deadline_seconds: 6 * 3600,
            resources: default_resources(),
        }
    }
}

impl MoverConfig {
    /// These settings with `resources` instead of the operator's, when given.
    pub fn with_resources(
        &self,
        resources: Option<&k8s_openapi::api::core::v1::ResourceRequirements>,
    ) -> Result<MoverConfig, serde_json::Error> {
        let mut config = self.clone();
        if let Some(resources) = resources {
            config.resources = serde_json::to_value(resources)?;
        }
        Ok(config)
    }
}

/// Requests, so that a mover is not the first pod evicted mid-commit, and a memory limit well
/// above what it uses (backup 32-73 MiB measured, S3 parts 2 x 8 MiB in flight, doubling only
/// past 80 GiB artifacts).
pub fn default_resources() -> serde_json::Value {
    json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}})
}

/// The Linux capabilities each mover command needs, and no others (every other one is dropped,
/// NET_RAW and MKNOD included).
mod capabilities {
    /// Read every file and directory of the volume, whoever owns it, and write into the
    /// repository. (DAC_READ_SEARCH would do for reading, but Pod Security's baseline level does
    /// not allow it; DAC_OVERRIDE covers both.)
    pub const BACKUP: &[&str] = &["DAC_OVERRIDE"];
    /// Write anywhere in the target, give entries their recorded owners, modes (set-id bits
    /// included) and times.
    pub const RESTORE: &[&str] = &["DAC_OVERRIDE", "CHOWN", "FOWNER", "FSETID"];
    /// Device nodes, when the restore recreates them (not `untrusted`).
    pub const RESTORE_DEVICES: &[&str] = &["MKNOD"];
    /// Remove a backup's directory from the repository.
    pub const DELETE: &[&str] = &["DAC_OVERRIDE"];
    /// Talk to object storage.
    pub const PROBE: &[&str] = &[];
}

pub const SOURCE_MOUNT: &str = "/source";
pub const REPOSITORY_MOUNT: &str = "/repository";
pub const ROLE_BACKUP: &str = "backup";
/// Where the mover writes its result; the kubelet copies it into the pod's status.
const TERMINATION_LOG: &str = "/dev/termination-log";
pub const ROLE_DELETE: &str = "delete";
pub const ROLE_PROBE: &str = "probe";
/// A probe that has not finished in this time failed (e.g. its pod could not start).
pub const PROBE_DEADLINE_SECONDS: i64 = 120;
pub const ROLE_RESTORE: &str = "restore";
pub const TARGET_MOUNT: &str = "/target";

/// Where a CA bundle Secret is mounted in mover pods.
pub const CA_MOUNT: &str = "/etc/backstop/s3-ca";
/// How long a probe retries an unreachable endpoint: long enough for a blip, short enough that
/// `Ready` says so within a minute.
const PROBE_RETRY_SECONDS: &str = "10";

/// How a mover pod reaches the repository: arguments, environment, volumes and mounts.
#[derive(Default)]
struct RepositoryAccess {
    args: Vec<String>,
    env: Vec<serde_json::Value>,
    volumes: Vec<serde_json::Value>,
    mounts: Vec<serde_json::Value>,
}

/// Shared storage is mounted (read-only for readers); S3 keys come from the Secret through
/// `secretKeyRef` (the operator never reads them) and a CA bundle is mounted from its Secret.
fn repository_access(repo: &BackupRepository, read_only: bool) -> RepositoryAccess {
    if let Some(s3) = &repo.spec.s3 {
        let mut args = vec!["--s3-bucket".to_string(), s3.bucket.clone()];
        let mut flag = |name: &str, value: Option<&str>| {
            args.push(name.to_string());
            args.extend(value.map(str::to_string));
        };
        if let Some(endpoint) = &s3.endpoint {
            flag("--s3-endpoint", Some(endpoint));
        }
        if !s3.prefix().is_empty() {
            flag("--s3-prefix", Some(s3.prefix()));
        }
        if let Some(region) = &s3.region {
            flag("--s3-region", Some(region));
        }
        if s3.force_path_style {
            flag("--s3-force-path-style", None);
        }
        if s3.insecure_skip_tls_verify {
            flag("--s3-insecure-skip-tls-verify", None);
        }
        let mut access = RepositoryAccess::default();
        if let Some(ca) = &s3.ca_secret_ref {
            flag("--s3-ca-file", Some(&format!("{CA_MOUNT}/{}", ca.key)));
            access
                .volumes
                .push(json!({"name": "s3-ca", "secret": {"secretName": ca.name}}));
            access
                .mounts
                .push(json!({"name": "s3-ca", "mountPath": CA_MOUNT, "readOnly": true}));
        }
        let creds = &s3.credentials_secret_ref;
        let from_secret = |env: &str, key: &str| json!({"name": env, "valueFrom": {"secretKeyRef": {"name": creds.name, "key": key}}});
        access.env = vec![
            from_secret("AWS_ACCESS_KEY_ID", &creds.access_key_id_key),
            from_secret("AWS_SECRET_ACCESS_KEY", &creds.secret_access_key_key),
        ];
        access.args = args;
        return access;
    }
    let (claim, sub_path) = repo
        .spec
        .pvc
        .as_ref()
        .map(|p| (p.claim_name.clone(), p.sub_path.as_deref()))
        .unwrap_or_default();
    let root = match sub_path.map(|s| s.trim_matches('/')) {
        Some(sub) if !sub.is_empty() => format!("{REPOSITORY_MOUNT}/{sub}"),
        _ => REPOSITORY_MOUNT.to_string(),
    };
    RepositoryAccess {
        args: vec!["--repository".into(), root],
        env: Vec::new(),
        volumes: vec![
            json!({"name": "repository", "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}}),
        ],
        mounts: vec![
            json!({"name": "repository", "mountPath": REPOSITORY_MOUNT, "readOnly": read_only}),
        ],
    }
}

/// What differs between the kinds of mover Job.
struct MoverJob<'a> {
    name: String,
    /// Run on this node (where a pod already mounts a ReadWriteOnce source).
    node: Option<&'a str>,
    role: &'a str,
    /// Labels beyond managed-by and role (which Backup, Restore, PVC).
    labels: serde_json::Value,
    args: Vec<String>,
    /// The repository, and whether the Job only reads it.
    repository: (&'a BackupRepository, bool),
    /// Volumes besides the repository's, with their mounts.
    volumes: Vec<serde_json::Value>,
    mounts: Vec<serde_json::Value>,
    deadline_seconds: i64,
    /// The capabilities the command needs.
    capabilities: Vec<&'static str>,
}

fn job<K: Resource<DynamicType = ()>>(
    owner: &K,
    mover: MoverJob<'_>,
    config: &MoverConfig,
) -> Result<Job, serde_json::Error> {
    let MoverJob {
        name,
        node,
        role,
        labels: extra_labels,
        mut args,
        repository: (repository, read_only),
        mut volumes,
        mut mounts,
        deadline_seconds,
        capabilities,
    } = mover;
    let access = repository_access(repository, read_only);
    args.extend(access.args);
    args.extend(["--termination-log".to_string(), TERMINATION_LOG.to_string()]);
    volumes.extend(access.volumes);
    mounts.extend(access.mounts);
    let mut job_labels = json!({
        labels::MANAGED_BY: labels::MANAGER,
        labels::ROLE: role,
    });
    if let (Some(all), Some(extra)) = (job_labels.as_object_mut(), extra_labels.as_object()) {
        all.extend(extra.clone());
    }
    let owner_namespace = owner.meta().namespace.clone();
    let owner = owner.controller_owner_ref(&());
    let affinity = node.map(|node| {
        json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}
        ]}}})
    });
    serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": owner_namespace,
            "labels": job_labels,
            "ownerReferences": owner.into_iter().collect::<Vec<_>>(),
        },
        "spec": {
            // A failed mover is reported, not retried behind the user's back: no Job storms.
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline_seconds,
            "template": {
                "metadata": {"labels": job_labels},
                "spec": {
                    "restartPolicy": "Never",
                    "hostNetwork": config.host_network,
                    "affinity": affinity,
                    "automountServiceAccountToken": false,
                    "containers": [{
                        "name": "mover",
                        "image": config.image,
                        "imagePullPolicy": config.pull_policy,
                        "args": args,
                        "terminationMessagePath": TERMINATION_LOG,
                        "terminationMessagePolicy": "File",
                        // Root, to read every file and record every owner, with only the
                        // capabilities this command needs, no way to gain more, the runtime's
                        // default seccomp profile and nothing writable but its volumes.
                        "securityContext": {
                            "runAsUser": 0,
                            "runAsGroup": 0,
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"], "add": capabilities},
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "resources": config.resources,
                        "env": access.env,
                        "volumeMounts": mounts,
                    }],
                    "volumes": volumes,
                }
            }
        }
    }))
}

/// Which Backup (and policy, and PVC) a Job works for.
fn backup_labels(backup: &Backup, pvc: Option<&str>) -> serde_json::Value {
    let mut l = json!({labels::BACKUP: naming::label_value(&backup.metadata.name.clone().unwrap_or_default())});
    if let Some(policy) = &backup.spec.policy_ref {
        l[labels::POLICY] = json!(naming::label_value(policy));
    }
    if let Some(pvc) = pvc {
        l[labels::PVC] = json!(naming::label_value(pvc));
    }
    l
}

/// The node a running pod that mounts `pvc` is on: a mover for a ReadWriteOnce volume must go
/// there, or it would wait forever on a Multi-Attach error.
pub fn node_using(pods: &[Pod], pvc: &str) -> Option<String> {
    pods.iter()
        .filter(|p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                && p.metadata.deletion_timestamp.is_none()
        })
        .filter(|p| {
            p.spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .any(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .is_some_and(|c| c.claim_name == pvc)
                })
        })
        .find_map(|p| p.spec.as_ref()?.node_name.clone())
}

/// The Job that backs up `pvc` for `backup` into `repo`, on `node` when given.
pub fn backup_job(
    backup: &Backup,
    pvc: &str,
    node: Option<&str>,
    repo: &BackupRepository,
    config: &MoverConfig,
) -> Result<Job, serde_json::Error> {
    let backup_name = backup.metadata.name.clone().unwrap_or_default();
    let namespace = backup.metadata.namespace.clone().unwrap_or_default();
    let args = vec![
        "mover".into(),
        "backup".into(),
        "--source".into(),
        SOURCE_MOUNT.into(),
        "--pvc".into(),
        pvc.into(),
        "--dir".into(),
        backstop_api::backup::artifact_dir(&namespace, &backup_name),
        "--compression".into(),
        repo.spec.compression.as_str().into(),
    ];
    let mover = MoverJob {
        name: naming::backup_job(&backup_name, pvc),
        node,
        role: ROLE_BACKUP,
        labels: backup_labels(backup, Some(pvc)),
        args,
        repository: (repo, false),
        volumes: vec![
            json!({"name": "source", "persistentVolumeClaim": {"claimName": pvc, "readOnly": true}}),
        ],
        mounts: vec![json!({"name": "source", "mountPath": SOURCE_MOUNT, "readOnly": true})],
        deadline_seconds: config.deadline_seconds,
        capabilities: capabilities::BACKUP.to_vec(),
    };
    job(backup, mover, config)
}

/// The Job that removes `backup`'s artifacts from `repo`.
pub fn delete_job(
    backup: &Backup,
    repo: &BackupRepository,
    config: &MoverConfig,
) -> Result<Job, serde_json::Error> {
    let backup_name = backup.metadata.name.clone().unwrap_or_default();
    let namespace = backup.metadata.namespace.clone().unwrap_or_default();
    let args = vec![
        "mover".into(),
        "delete".into(),
        "--dir".into(),
        backstop_api::backup::artifact_dir(&namespace, &backup_name),
    ];
    let mover = MoverJob {
        name: naming::delete_job(&backup_name),
        node: None,
        role: ROLE_DELETE,
        labels: backup_labels(backup, None),
        args,
        repository: (repo, false),
        volumes: Vec::new(),
        mounts: Vec::new(),
        deadline_seconds: config.deadline_seconds,
        capabilities: capabilities::DELETE.to_vec(),
    };
    job(backup, mover, config)
}

/// What a restore Job needs to know.
pub struct RestoreJob<'a> {
    pub repository: &'a BackupRepository,
    /// The manifest's key in the repository.
    pub manifest: String,
    /// The artifact's BLAKE3 recorded when the backup completed (the manifest must name it).
    pub artifact_digest: Option<&'a str>,
    pub target_pvc: &'a str,
    pub policy: ExistingDataPolicy,
    /// Create no device nodes and clear set-id bits (`spec.untrusted`).
    pub untrusted: bool,
    pub node: Option<&'a str>,
}

/// A restore's capabilities: MKNOD only when it recreates device nodes.
fn restore_capabilities(untrusted: bool) -> Vec<&'static str> {
    let mut caps = capabilities::RESTORE.to_vec();
    if !untrusted {
        caps.extend(capabilities::RESTORE_DEVICES);
    }
    caps
}

/// Whether `pod` belongs to the Job named `job` (its controller).
pub fn runs_for_job(pod: &Pod, job: &str) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "Job" && o.name == job && o.controller == Some(true))
}

/// The Job that restores one volume of a backup into `target_pvc`: the repository is mounted
/// read-only, only the target is written.
pub fn restore_job(
    restore: &Restore,
    r: RestoreJob<'_>,
    config: &MoverConfig,
) -> Result<Job, serde_json::Error> {
    let name = restore.metadata.name.clone().unwrap_or_default();
    let mut args: Vec<String> = vec![
        "mover".into(),
        "restore".into(),
        "--manifest".into(),
        r.manifest,
        "--target".into(),
        TARGET_MOUNT.into(),
        "--existing-data-policy".into(),
        r.policy.as_str().into(),
    ];
    if let Some(digest) = r.artifact_digest {
        args.extend(["--artifact-digest".into(), digest.into()]);
    }
    if r.untrusted {
        args.push("--untrusted".into());
    }
    let mover = MoverJob {
        name: naming::restore_job(&name),
        node: r.node,
        role: ROLE_RESTORE,
        labels: json!({labels::RESTORE: naming::label_value(&name), labels::PVC: naming::label_value(r.target_pvc)}),
        args,
        repository: (r.repository, true),
        volumes: vec![
            json!({"name": "target", "persistentVolumeClaim": {"claimName": r.target_pvc}}),
        ],
        mounts: vec![json!({"name": "target", "mountPath": TARGET_MOUNT})],
        deadline_seconds: config.deadline_seconds,
        capabilities: restore_capabilities(r.untrusted),
    };
    job(restore, mover, config)
}

/// The Job that checks an S3 repository: write, read back and remove a small object.
pub fn probe_job(
    repo: &BackupRepository,
    at: i64,
    config: &MoverConfig,
) -> Result<Job, serde_json::Error> {
    let name = repo.metadata.name.clone().unwrap_or_default();
    let generation = repo.metadata.generation.unwrap_or_default();
    let mover = MoverJob {
        name: naming::probe_job(&name, at),
        node: None,
        role: ROLE_PROBE,
        labels: json!({
            labels::REPOSITORY: naming::label_value(&name),
            labels::GENERATION: generation.to_string(),
        }),
        args: vec![
            "mover".into(),
            "probe".into(),
            "--s3-retry-timeout-seconds".into(),
            PROBE_RETRY_SECONDS.into(),
        ],
        repository: (repo, false),
        volumes: Vec::new(),
        mounts: Vec::new(),
        deadline_seconds: PROBE_DEADLINE_SECONDS,
        capabilities: capabilities::PROBE.to_vec(),
    };
    job(repo, mover, config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_api::{BackupRepositorySpec, BackupSpec, PvcRepository};

    fn fixtures() -> (Backup, BackupRepository) {
        let mut backup = Backup::new(
            "nightly-202611210200",
            BackupSpec {
                policy_ref: Some("nightly".into()),
                ..Default::default()
            },
        );
        backup.metadata.namespace = Some("shop".into());
        backup.metadata.uid = Some("uid-1".into());
        let repo = BackupRepository::new(
            "default",
            BackupRepositorySpec {
                pvc: Some(PvcRepository {
                    claim_name: "backups".into(),
                    sub_path: Some("cluster-a/".into()),
                }),
                ..Default::default()
            },
        );
        (backup, repo)
    }

    #[test]
    fn backup_job_mounts_the_source_read_only_and_is_owned_by_the_backup() {
        let (backup, repo) = fixtures();
        let job = backup_job(&backup, "data", None, &repo, &MoverConfig::default()).unwrap();
        assert_eq!(
            job.metadata.name,
            Some(naming::backup_job("nightly-202611210200", "data"))
        );
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Backup", "uid-1")
        );
        assert_eq!(owner.controller, Some(true));
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        let pod = spec.template.spec.unwrap();
        let volumes = pod.volumes.unwrap();
        let source = volumes[0].persistent_volume_claim.as_ref().unwrap();
        assert_eq!(
            (source.claim_name.as_str(), source.read_only),
            ("data", Some(true))
        );
        let container = &pod.containers[0];
        assert_eq!(
            container.volume_mounts.as_ref().unwrap()[0].read_only,
            Some(true)
        );
        let args = container.args.clone().unwrap().join(" ");
        assert!(
            args.contains("--repository /repository/cluster-a"),
            "{args}"
        );
        assert!(args.contains("--dir shop/nightly-202611210200"), "{args}");
        assert!(args.contains("--compression zstd"), "{args}");
    }

    fn pod_on(node: &str, phase: &str, claim: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("app-{node}")},
            "spec": {"nodeName": node, "containers": [],
                     "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    #[test]
    fn a_mover_for_a_volume_in_use_goes_to_the_node_of_the_running_pod() {
        let pods = [
            pod_on("node-a", "Succeeded", "data"),
            pod_on("node-b", "Running", "other"),
            pod_on("node-c", "Running", "data"),
        ];
        let node = node_using(&pods, "data");
        assert_eq!(node.as_deref(), Some("node-c"));
        assert_eq!(node_using(&pods, "unused"), None);

        let (backup, repo) = fixtures();
        let job = backup_job(
            &backup,
            "data",
            node.as_deref(),
            &repo,
            &MoverConfig::default(),
        )
        .unwrap();
        let affinity =
            serde_json::to_value(job.spec.unwrap().template.spec.unwrap().affinity).unwrap();
        let values = &affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchExpressions"][0]["values"];
        assert_eq!(values, &serde_json::json!(["node-c"]));
    }

    #[test]
    fn a_restores_own_mover_pod_is_recognised_by_its_job() {
        let mut pod = Pod::default();
        pod.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                kind: "Job".into(),
                name: "back-restore-0011aabb".into(),
                controller: Some(true),
                ..Default::default()
            },
        ]);
        assert!(runs_for_job(&pod, "back-restore-0011aabb"));
        assert!(!runs_for_job(&pod, "other-restore-0011aabb"));
        assert!(!runs_for_job(&Pod::default(), "back-restore-0011aabb"));
    }

    #[test]
    fn each_mover_runs_with_only_the_capabilities_its_command_needs() {
        let (backup, repo) = fixtures();
        let config = MoverConfig::default();
        let mut restore = Restore::new("back", Default::default());
        restore.metadata.namespace = Some("shop".into());
        let restore_with = |untrusted| RestoreJob {
            repository: &repo,
            manifest: "shop/b/db.manifest.json".into(),
            artifact_digest: None,
            target_pvc: "db",
            policy: ExistingDataPolicy::FailIfNotEmpty,
            untrusted,
            node: None,
        };
        let mut s3 = repo.clone();
        s3.spec.pvc = None;
        s3.spec.s3 = Some(
            serde_json::from_value(json!({"bucket": "b", "credentialsSecretRef": {"name": "k"}}))
                .unwrap(),
        );
        let cases = [
            (
                backup_job(&backup, "db", None, &repo, &config).unwrap(),
                vec!["DAC_OVERRIDE"],
            ),
            (
                delete_job(&backup, &repo, &config).unwrap(),
                vec!["DAC_OVERRIDE"],
            ),
            (
                restore_job(&restore, restore_with(false), &config).unwrap(),
                vec!["DAC_OVERRIDE", "CHOWN", "FOWNER", "FSETID", "MKNOD"],
            ),
            (
                restore_job(&restore, restore_with(true), &config).unwrap(),
                vec!["DAC_OVERRIDE", "CHOWN", "FOWNER", "FSETID"],
            ),
            (probe_job(&s3, 1, &config).unwrap(), vec![]),
        ];
        for (job, added) in cases {
            let name = job.metadata.name.clone().unwrap_or_default();
            let container = job.spec.unwrap().template.spec.unwrap().containers[0].clone();
            let context = container.security_context.unwrap();
            let caps = context.capabilities.unwrap();
            assert_eq!(caps.drop, Some(vec!["ALL".to_string()]), "{name}");
            assert_eq!(caps.add.unwrap_or_default(), added, "{name}");
            assert_eq!(context.allow_privilege_escalation, Some(false), "{name}");
            assert_eq!(context.read_only_root_filesystem, Some(true), "{name}");
            assert_eq!(context.privileged, None, "{name}");
            assert_eq!(
                context.seccomp_profile.map(|p| p.type_),
                Some("RuntimeDefault".to_string()),
                "{name}"
            );
            let resources = container.resources.unwrap();
            assert!(resources.requests.unwrap().contains_key("memory"), "{name}");
            assert!(resources.limits.unwrap().contains_key("memory"), "{name}");
        }
    }

    #[test]
    fn a_policy_can_give_its_movers_other_resources() {
        let (backup, repo) = fixtures();
        let resources = |config: &MoverConfig| {
            backup_job(&backup, "db", None, &repo, config)
                .unwrap()
                .spec
                .unwrap()
                .template
                .spec
                .unwrap()
                .containers[0]
                .resources
                .clone()
                .unwrap()
        };
        let operator = MoverConfig::default();
        let defaults = resources(&operator);
        assert_eq!(defaults.limits.unwrap()["memory"].0, "1Gi");
        let big: k8s_openapi::api::core::v1::ResourceRequirements = serde_json::from_value(
            json!({"requests": {"memory": "2Gi"}, "limits": {"memory": "4Gi"}}),
        )
        .unwrap();
        let policy = resources(&operator.with_resources(Some(&big)).unwrap());
        assert_eq!(policy, big);
        assert_eq!(
            resources(&operator.with_resources(None).unwrap())
                .requests
                .unwrap()["memory"]
                .0,
            "128Mi"
        );
    }

    #[test]
    fn delete_job_only_mounts_the_repository() {
        let (backup, repo) = fixtures();
        let job = delete_job(&backup, &repo, &MoverConfig::default()).unwrap();
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.volumes.unwrap().len(), 1);
        assert_eq!(job.metadata.labels.unwrap()[labels::ROLE], ROLE_DELETE);
    }

    #[test]
    fn a_restore_job_checks_the_manifest_against_the_digest_recorded_at_backup() {
        let (_, repo) = fixtures();
        let mut restore = Restore::new(
            "back",
            backstop_api::RestoreSpec {
                backup_name: "nightly-202611210200".into(),
                ..Default::default()
            },
        );
        restore.metadata.namespace = Some("shop".into());
        let request = |digest| RestoreJob {
            repository: &repo,
            manifest: "shop/nightly-202611210200/db.manifest.json".into(),
            artifact_digest: digest,
            target_pvc: "db-restored",
            policy: ExistingDataPolicy::Overwrite,
            untrusted: false,
            node: None,
        };
        let args = |job: Job| {
            job.spec.unwrap().template.spec.unwrap().containers[0]
                .args
                .clone()
                .unwrap()
        };
        let with = args(
            restore_job(
                &restore,
                request(Some("b3-digest")),
                &MoverConfig::default(),
            )
            .unwrap(),
        );
        let at = with
            .iter()
            .position(|a| a == "--artifact-digest")
            .expect("--artifact-digest");
        assert_eq!(with[at + 1], "b3-digest");
        let without = args(restore_job(&restore, request(None), &MoverConfig::default()).unwrap());
        assert!(!without.contains(&"--artifact-digest".to_string()));
        assert!(!without.contains(&"--untrusted".to_string()));
        let untrusted = RestoreJob {
            untrusted: true,
            ..request(None)
        };
        let untrusted = args(restore_job(&restore, untrusted, &MoverConfig::default()).unwrap());
        assert!(untrusted.contains(&"--untrusted".to_string()));
    }

    #[test]
    fn s3_jobs_get_the_keys_from_the_secret_and_mount_no_repository_volume() {
        let (backup, _) = fixtures();
        let mut repo: BackupRepository = serde_json::from_value(serde_json::json!({
            "apiVersion": "backstop.dev/v1alpha1", "kind": "BackupRepository",
            "metadata": {"name": "s3", "namespace": "shop", "uid": "uid-r", "generation": 3},
            "spec": {"s3": {"endpoint": "https://minio.example:9000", "bucket": "backups",
                "prefix": "/cluster-a/", "forcePathStyle": true,
                "credentialsSecretRef": {"name": "keys", "accessKeyIdKey": "id"},
                "caSecretRef": {"name": "minio-ca"}}}
        }))
        .unwrap();
        let job = backup_job(&backup, "data", None, &repo, &MoverConfig::default()).unwrap();
        let pod = job.spec.unwrap().template.spec.unwrap();
        let container = &pod.containers[0];
        let args = container.args.clone().unwrap().join(" ");
        for expected in [
            "--s3-bucket backups",
            "--s3-endpoint https://minio.example:9000",
            "--s3-prefix cluster-a ",
            "--s3-force-path-style",
            "--s3-ca-file /etc/backstop/s3-ca/ca.crt",
        ] {
            assert!(args.contains(expected), "{expected:?} in {args}");
        }
        assert!(!args.contains("--repository"), "{args}");
        let env = serde_json::to_value(container.env.as_ref().unwrap()).unwrap();
        assert_eq!(
            env,
            serde_json::json!([
                {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "id"}}},
                {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "AWS_SECRET_ACCESS_KEY"}}},
            ])
        );
        let volumes: Vec<String> = pod
            .volumes
            .unwrap()
            .iter()
            .map(|v| v.name.clone())
            .collect();
        assert_eq!(volumes, ["source", "s3-ca"]);

        repo.spec.s3.as_mut().unwrap().ca_secret_ref = None;
        let probe = probe_job(&repo, 1_795_300_000, &MoverConfig::default()).unwrap();
        assert_eq!(probe.metadata.name.as_deref(), Some("s3-probe-1795300000"));
        let labels = probe.metadata.labels.clone().unwrap();
        assert_eq!(labels[labels::GENERATION], "3");
        assert_eq!(labels[labels::ROLE], ROLE_PROBE);
        let spec = probe.spec.unwrap();
        assert_eq!(spec.active_deadline_seconds, Some(PROBE_DEADLINE_SECONDS));
        assert!(spec.template.spec.unwrap().volumes.unwrap().is_empty());
    }
}
