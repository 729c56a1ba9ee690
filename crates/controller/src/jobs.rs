//! The Jobs Backstop runs: pure builders from a Backup, a volume and a repository to a Job, typed
//! (k8s-openapi structs: a misspelt field does not compile). What the mover is asked to do is a
//! `contract::Request`; its results come back in the termination message.

use backstop_api::contract::{
    self, CA_MOUNT, Location, REPOSITORY_MOUNT, Request, S3Location, SOURCE_MOUNT, STREAM_MOUNT,
    STREAM_STAGING_MOUNT, TARGET_MOUNT, TERMINATION_LOG,
};
use backstop_api::ownership::Writer;
use backstop_api::record::{self, RecordContext};
use backstop_api::strategy::{CommandContainer, CommandStrategy};
use backstop_api::{
    Backup, BackupRepository, BackupStatus, DrillCheck, ExistingDataPolicy, RepositoryFormat,
    Restore, VolumeBackup, labels, naming,
};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, NodeAffinity,
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolumeClaimVolumeSource,
    Pod, PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

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
    /// The mover container's requests and limits.
    pub resources: ResourceRequirements,
    /// Where mover pods may run (ANDed with the node pinning of a volume in use).
    pub node_selector: Option<BTreeMap<String, String>>,
    pub tolerations: Option<Vec<Toleration>>,
    /// Where a sync Job (the one mover that talks to the Kubernetes API) reaches the API
    /// server (`KUBERNETES_SERVICE_HOST`, `_PORT`), when the kubelet's service variables do not
    /// do: the operator's own, passed on when mover pods share its host network.
    pub api_server: Option<(String, String)>,
    /// This cluster's identity as a repository's writer (see `backstop_api::ownership`): the
    /// uid of its `kube-system` namespace unless the operator is told another.
    pub cluster: String,
}

impl Default for MoverConfig {
    fn default() -> Self {
        Self {
            image: "backstop:dev".into(),
            pull_policy: "IfNotPresent".into(),
            host_network: false,
            deadline_seconds: 6 * 3600,
            resources: default_resources(),
            node_selector: None,
            tolerations: None,
            api_server: None,
            cluster: String::new(),
        }
    }
}

impl MoverConfig {
    /// These settings with `resources` instead of the operator's, when given.
    pub fn with_resources(&self, resources: Option<&ResourceRequirements>) -> MoverConfig {
        let mut config = self.clone();
        if let Some(resources) = resources {
            config.resources = resources.clone();
        }
        config
    }
}

/// Requests, so that a mover is not the first pod evicted mid-commit, and a memory limit well
/// above what it uses (backup 32-73 MiB measured, S3 parts 2 x 8 MiB in flight, doubling only
/// past 80 GiB artifacts).
pub fn default_resources() -> ResourceRequirements {
    let quantities = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect()
    };
    ResourceRequirements {
        requests: Some(quantities(&[("cpu", "100m"), ("memory", "128Mi")])),
        limits: Some(quantities(&[("memory", "1Gi")])),
        ..ResourceRequirements::default()
    }
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
    /// Read the repository (mounted read-only) whoever wrote it, and talk to the API server.
    pub const SYNC: &[&str] = &["DAC_OVERRIDE"];
    /// Read the repository (mounted read-only) whoever wrote it.
    pub const VERIFY: &[&str] = &["DAC_OVERRIDE"];
    /// Write into the repository, and read what the command's user left beside the pipe.
    pub const DUMP: &[&str] = &["DAC_OVERRIDE"];
}

pub const ROLE_BACKUP: &str = "backup";
pub const ROLE_DELETE: &str = "delete";
pub const ROLE_PROBE: &str = "probe";
pub const ROLE_PRUNE: &str = "prune";
pub const ROLE_RESTORE: &str = "restore";
pub const ROLE_VERIFY: &str = "verify";
pub const ROLE_SYNC: &str = "sync";
/// A Job that keeps a verification's conclusion in the repository.
pub const ROLE_RECORD: &str = "record";
/// On a drill's scratch PVC.
pub const ROLE_DRILL: &str = "drill";
/// A probe that has not finished in this time failed (e.g. its pod could not start).
pub const PROBE_DEADLINE_SECONDS: i64 = 120;
/// How long a probe retries an unreachable endpoint: long enough for a blip, short enough that
/// `Ready` says so within a minute.
const PROBE_RETRY_SECONDS: u64 = 10;

/// How a mover pod reaches the repository: where it is, and the environment, volumes and mounts
/// that give access.
#[derive(Default)]
struct RepositoryAccess {
    env: Vec<EnvVar>,
    volumes: Vec<Volume>,
    mounts: Vec<VolumeMount>,
}

fn claim_volume(name: &str, claim: &str, read_only: bool) -> Volume {
    Volume {
        name: name.into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.into(),
            read_only: read_only.then_some(true),
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

/// Where the mover finds `repo`: a sub-directory of the mounted volume, or the bucket.
pub fn location(repo: &BackupRepository) -> Location {
    if let Some(s3) = &repo.spec.s3 {
        return Location::S3(S3Location {
            bucket: s3.bucket.clone(),
            endpoint: s3.endpoint.clone(),
            prefix: s3.prefix().to_string(),
            region: s3.region.clone(),
            force_path_style: s3.force_path_style,
            ca_file: s3
                .ca_secret_ref
                .as_ref()
                .map(|ca| format!("{CA_MOUNT}/{}", ca.key)),
            insecure_skip_tls_verify: s3.insecure_skip_tls_verify,
            retry_timeout_seconds: None,
        });
    }
    let sub_path = repo.spec.pvc.as_ref().and_then(|p| p.sub_path.as_deref());
    Location::Dir(match sub_path.map(|s| s.trim_matches('/')) {
        Some(sub) if !sub.is_empty() => format!("{REPOSITORY_MOUNT}/{sub}"),
        _ => REPOSITORY_MOUNT.to_string(),
    })
}

/// Shared storage is mounted (read-only for readers); S3 keys come from the Secret through
/// `secretKeyRef` (the operator never reads them) and a CA bundle is mounted from its Secret.
fn repository_access(repo: &BackupRepository, read_only: bool) -> RepositoryAccess {
    let mut access = storage_access(repo, read_only);
    if let Some(password) = restic_password(repo) {
        access.env.push(password);
    }
    access
}

/// A restic repository's password, from its Secret (`secretKeyRef`).
fn restic_password(repo: &BackupRepository) -> Option<EnvVar> {
    let secret = repo.spec.password_secret_ref.as_ref()?;
    (repo.spec.format == RepositoryFormat::Restic).then(|| EnvVar {
        name: contract::PASSWORD_ENV.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.clone(),
                key: secret.key.clone(),
                ..SecretKeySelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    })
}

/// The restic repository's root in `repo` for `namespace`, when `repo` stores restic snapshots.
fn restic_root(repo: &BackupRepository, namespace: &str) -> Option<String> {
    (repo.spec.format == RepositoryFormat::Restic).then(|| contract::restic_root(namespace))
}

fn storage_access(repo: &BackupRepository, read_only: bool) -> RepositoryAccess {
    let Some(s3) = &repo.spec.s3 else {
        let claim = repo
            .spec
            .pvc
            .as_ref()
            .map(|p| p.claim_name.as_str())
            .unwrap_or_default();
        return RepositoryAccess {
            env: Vec::new(),
            volumes: vec![claim_volume("repository", claim, read_only)],
            mounts: vec![mount("repository", REPOSITORY_MOUNT, read_only)],
        };
    };
    let mut access = RepositoryAccess::default();
    if let Some(ca) = &s3.ca_secret_ref {
        access.volumes.push(Volume {
            name: "s3-ca".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(ca.name.clone()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        access.mounts.push(mount("s3-ca", CA_MOUNT, true));
    }
    let creds = &s3.credentials_secret_ref;
    let from_secret = |env: &str, key: &str| EnvVar {
        name: env.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: creds.name.clone(),
                key: key.into(),
                ..SecretKeySelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    access.env = vec![
        from_secret("AWS_ACCESS_KEY_ID", &creds.access_key_id_key),
        from_secret("AWS_SECRET_ACCESS_KEY", &creds.secret_access_key_key),
    ];
    access
}

/// What differs between the kinds of mover Job.
struct MoverJob<'a> {
    name: String,
    /// Run on this node (where a pod already mounts a ReadWriteOnce source).
    node: Option<&'a str>,
    role: &'a str,
    /// Labels beyond managed-by and role (which Backup, Restore, PVC).
    labels: BTreeMap<String, String>,
    request: Request,
    /// The repository, and whether the Job only reads it.
    repository: (&'a BackupRepository, bool),
    /// Volumes besides the repository's, with their mounts.
    volumes: Vec<Volume>,
    mounts: Vec<VolumeMount>,
    deadline_seconds: i64,
    /// The capabilities the command needs.
    capabilities: Vec<&'static str>,
    /// A container of the user's beside the mover.
    companion: Option<Companion>,
}

/// A container of the user's choosing in a mover's pod.
enum Companion {
    /// Runs after the mover (which then runs as an init container), e.g. a drill's check.
    After(Container),
    /// Runs beside the mover, e.g. a command backup's dump.
    Beside(Container),
}

/// A pod that must run on `node`.
fn on_node(node: &str) -> Affinity {
    Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: "kubernetes.io/hostname".into(),
                        operator: "In".into(),
                        values: Some(vec![node.into()]),
                    }]),
                    ..NodeSelectorTerm::default()
                }],
            }),
            ..NodeAffinity::default()
        }),
        ..Affinity::default()
    }
}

fn job<K: Resource<DynamicType = ()>>(owner: &K, mover: MoverJob<'_>, config: &MoverConfig) -> Job {
    let MoverJob {
        name,
        node,
        role,
        labels: mut job_labels,
        request,
        repository: (repository, read_only),
        mut volumes,
        mut mounts,
        deadline_seconds,
        capabilities,
        companion,
    } = mover;
    // A container of someone else's choosing (a drill's check, a dump command) never runs on
    // the host's network.
    let host_network = config.host_network && companion.is_none();
    let access = repository_access(repository, read_only);
    volumes.extend(access.volumes);
    mounts.extend(access.mounts);
    job_labels.insert(labels::MANAGED_BY.into(), labels::MANAGER.into());
    job_labels.insert(labels::ROLE.into(), role.into());
    let container = Container {
        name: MOVER_CONTAINER.into(),
        image: Some(config.image.clone()),
        image_pull_policy: Some(config.pull_policy.clone()),
        args: Some(request.to_args(&Writer {
            cluster: config.cluster.clone(),
            take_over_from: repository.spec.take_over_from.clone(),
        })),
        termination_message_path: Some(TERMINATION_LOG.into()),
        termination_message_policy: Some("File".into()),
        // Root, to read every file and record every owner, with only the capabilities this
        // command needs, no way to gain more, the runtime's default seccomp profile and nothing
        // writable but its volumes.
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_group: Some(0),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: Some(capabilities.iter().map(|c| c.to_string()).collect()),
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        resources: Some(config.resources.clone()),
        env: Some(access.env),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: owner.meta().namespace.clone(),
            labels: Some(job_labels.clone()),
            owner_references: Some(owner.controller_owner_ref(&()).into_iter().collect()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            // A failed mover is reported, not retried behind the user's back: no Job storms.
            backoff_limit: Some(0),
            active_deadline_seconds: Some(deadline_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(job_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    host_network: Some(host_network),
                    affinity: node.map(on_node),
                    node_selector: config.node_selector.clone(),
                    tolerations: config.tolerations.clone(),
                    automount_service_account_token: Some(false),
                    init_containers: matches!(companion, Some(Companion::After(_)))
                        .then(|| vec![container.clone()]),
                    containers: match companion {
                        None => vec![container],
                        Some(Companion::After(after)) => vec![after],
                        Some(Companion::Beside(beside)) => vec![container, beside],
                    },
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

/// Labels from pairs of names and values (values shortened to what a label can hold).
fn label_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), naming::label_value(v)))
        .collect()
}

/// Which Backup (and policy, and PVC) a Job works for.
fn backup_labels(backup: &Backup, pvc: Option<&str>) -> BTreeMap<String, String> {
    let name = backup.metadata.name.clone().unwrap_or_default();
    let mut pairs = vec![(labels::BACKUP, name.as_str())];
    pairs.extend(
        backup
            .spec
            .policy_ref
            .as_deref()
            .map(|p| (labels::POLICY, p)),
    );
    pairs.extend(pvc.map(|pvc| (labels::PVC, pvc)));
    label_map(&pairs)
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

/// The Job that backs up `pvc` for `backup` into `repo`, on `node` when given, reading `claim`:
/// the volume itself, or the temporary PVC made from its snapshot.
pub fn backup_job(
    backup: &Backup,
    pvc: &str,
    claim: &str,
    node: Option<&str>,
    repo: &BackupRepository,
    config: &MoverConfig,
    record: &RecordContext,
) -> Job {
    let backup_name = backup.metadata.name.clone().unwrap_or_default();
    let namespace = backup.metadata.namespace.clone().unwrap_or_default();
    let mover = MoverJob {
        name: naming::backup_job(&backup_name, pvc),
        node,
        role: ROLE_BACKUP,
        labels: backup_labels(backup, Some(pvc)),
        request: match restic_root(repo, &namespace) {
            Some(root) => Request::ResticBackup {
                repository: location(repo),
                root,
                source: SOURCE_MOUNT.into(),
                pvc: pvc.into(),
                host: namespace.clone(),
                tags: restic_tags(backup, pvc, record),
            },
            None => Request::Backup {
                repository: location(repo),
                source: SOURCE_MOUNT.into(),
                pvc: pvc.into(),
                dir: contract::backup_dir(&namespace, &backup_name),
                compression: repo.spec.compression,
                record: Some(record.clone()),
            },
        },
        repository: (repo, false),
        volumes: vec![claim_volume("source", claim, true)],
        mounts: vec![mount("source", SOURCE_MOUNT, true)],
        deadline_seconds: config.deadline_seconds,
        capabilities: capabilities::BACKUP.to_vec(),
        companion: None,
    };
    job(backup, mover, config)
}

/// What the mover of `volume` of `backup` (whose status is `status`) keeps in the repository
/// for a cluster that never saw the backup.
pub fn record_context(
    backup: &Backup,
    status: &BackupStatus,
    volume: &VolumeBackup,
) -> RecordContext {
    RecordContext {
        namespace: backup.namespace().unwrap_or_default(),
        backup: backup.name_any(),
        policy: backup.spec.policy_ref.clone(),
        scheduled_time: backup
            .annotations()
            .get(labels::SCHEDULED_TIME)
            .and_then(|t| t.parse().ok()),
        start_time: status
            .start_time
            .as_ref()
            .map_or(jiff::Timestamp::UNIX_EPOCH, |t| t.0),
        volumes: status.volumes.iter().map(|v| v.pvc.clone()).collect(),
        strategy: status.strategy.clone(),
        capacity: volume.capacity.clone(),
        storage_class_name: volume.storage_class_name.clone(),
        stream: volume.stream,
    }
}

/// What a restic snapshot of `pvc` for `backup` is tagged with (`restic snapshots --tag`):
/// whose it is, and the rest of its record.
fn restic_tags(backup: &Backup, pvc: &str, record: &RecordContext) -> Vec<String> {
    let mut tags = vec![
        "backstop".to_string(),
        format!(
            "backup={}",
            backup.metadata.name.clone().unwrap_or_default()
        ),
        format!("pvc={pvc}"),
    ];
    tags.extend(
        backup
            .spec
            .policy_ref
            .as_deref()
            .map(|p| format!("policy={p}")),
    );
    tags.extend(record::context_tags(record));
    tags
}

/// The Job that removes `backup`'s data from `repo`: its directory of artifacts, or its restic
/// snapshots (whose data a prune reclaims).
pub fn delete_job(backup: &Backup, repo: &BackupRepository, config: &MoverConfig) -> Job {
    let backup_name = backup.metadata.name.clone().unwrap_or_default();
    let namespace = backup.metadata.namespace.clone().unwrap_or_default();
    let snapshots: Vec<String> = backup
        .status
        .iter()
        .flat_map(|s| &s.volumes)
        .filter_map(|v| v.restic.as_ref().map(|r| r.id.clone()))
        .collect();
    let mover = MoverJob {
        name: naming::delete_job(&backup_name),
        node: None,
        role: ROLE_DELETE,
        labels: backup_labels(backup, None),
        request: if snapshots.is_empty() {
            Request::Delete {
                repository: location(repo),
                dir: contract::backup_dir(&namespace, &backup_name),
            }
        } else {
            Request::Forget {
                repository: location(repo),
                root: contract::restic_root(&namespace),
                snapshots,
                backup: backup_name.clone(),
            }
        },
        repository: (repo, false),
        volumes: Vec::new(),
        mounts: Vec::new(),
        deadline_seconds: config.deadline_seconds,
        capabilities: capabilities::DELETE.to_vec(),
        companion: None,
    };
    job(backup, mover, config)
}

/// The Job that keeps `record`, the conclusion of a verification of `backup`, in `repo` beside
/// the backup (`record::verification_key`): a cluster that imports the backup later knows
/// whether it was sound.
pub fn record_verification_job(
    backup: &Backup,
    repo: &BackupRepository,
    record: &record::VerificationRecord,
    config: &MoverConfig,
) -> Job {
    let backup_name = backup.name_any();
    let namespace = backup.namespace().unwrap_or_default();
    let mover = MoverJob {
        name: naming::record_verification_job(&backup_name, &record.request),
        node: None,
        role: ROLE_RECORD,
        labels: backup_labels(backup, None),
        request: Request::RecordVerification {
            repository: location(repo),
            dir: contract::backup_dir(&namespace, &backup_name),
            record: record.clone(),
        },
        repository: (repo, false),
        volumes: Vec::new(),
        mounts: Vec::new(),
        deadline_seconds: PROBE_DEADLINE_SECONDS,
        capabilities: capabilities::DELETE.to_vec(),
        companion: None,
    };
    job(backup, mover, config)
}

/// What a verification Job needs to know.
pub struct VerifyJob<'a> {
    pub name: String,
    pub pvc: &'a str,
    pub repository: &'a BackupRepository,
    /// The manifest's key in the repository.
    pub manifest: String,
    /// The artifact's BLAKE3 recorded when the backup completed (the manifest must name it).
    pub artifact_digest: Option<String>,
    /// The volume's restic snapshot, when the backup is one (then `manifest` is unused).
    pub restic_snapshot: Option<String>,
    /// A restore drill: into this scratch PVC, then this check, if any.
    pub drill: Option<(&'a str, Option<&'a DrillCheck>)>,
}

/// Where a drill's check finds the restored data.
pub const RESTORED_MOUNT: &str = "/restored";

/// The Job that verifies one volume of `backup`. `Artifact`: reads the artifact back and checks
/// it against its manifest, with the repository mounted read-only and nothing else. A drill:
/// restores it into the scratch PVC (untrusted: no device nodes, no set-id bits), every digest
/// checked, then runs the check on the restored data.
pub fn verify_job(backup: &Backup, v: VerifyJob<'_>, config: &MoverConfig) -> Job {
    let location = location(v.repository);
    let root = contract::restic_root(&backup.namespace().unwrap_or_default());
    let (request, volumes, mounts, capabilities, companion) = match v.drill {
        None => (
            match v.restic_snapshot {
                Some(snapshot) => Request::ResticVerify {
                    repository: location,
                    root,
                    snapshot,
                },
                None => Request::Verify {
                    repository: location,
                    manifest: v.manifest,
                    artifact_digest: v.artifact_digest,
                },
            },
            Vec::new(),
            Vec::new(),
            capabilities::VERIFY.to_vec(),
            None,
        ),
        Some((scratch, check)) => (
            match v.restic_snapshot {
                Some(snapshot) => Request::ResticRestore {
                    repository: location,
                    root,
                    snapshot,
                    target: TARGET_MOUNT.into(),
                    existing_data_policy: ExistingDataPolicy::FailIfNotEmpty,
                    untrusted: true,
                },
                None => Request::Restore {
                    repository: location,
                    manifest: v.manifest,
                    target: TARGET_MOUNT.into(),
                    existing_data_policy: ExistingDataPolicy::FailIfNotEmpty,
                    artifact_digest: v.artifact_digest,
                    untrusted: true,
                },
            },
            vec![claim_volume("target", scratch, false)],
            vec![mount("target", TARGET_MOUNT, false)],
            restore_capabilities(true),
            check.map(|c| Companion::After(check_container(c, config))),
        ),
    };
    let mover = MoverJob {
        name: v.name,
        node: None,
        role: ROLE_VERIFY,
        labels: backup_labels(backup, Some(v.pvc)),
        request,
        repository: (v.repository, true),
        volumes,
        mounts,
        deadline_seconds: config.deadline_seconds,
        capabilities,
        companion,
    };
    job(backup, mover, config)
}

/// A drill's check: the user's image and command with the restored data at `RESTORED_MOUNT`,
/// no capabilities and no way to gain any; when it fails, the end of its log is its message.
fn check_container(check: &DrillCheck, config: &MoverConfig) -> Container {
    Container {
        name: "check".into(),
        image: Some(check.image.clone()),
        command: (!check.command.is_empty()).then(|| check.command.clone()),
        args: (!check.args.is_empty()).then(|| check.args.clone()),
        resources: Some(config.resources.clone()),
        volume_mounts: Some(vec![mount("target", RESTORED_MOUNT, false)]),
        ..users_container(config)
    }
}

/// A container of the user's choosing: its image's user, no capabilities and no way to gain
/// any, the runtime's default seccomp profile; when it fails, the end of its log is its
/// termination message.
fn users_container(config: &MoverConfig) -> Container {
    Container {
        image_pull_policy: Some(config.pull_policy.clone()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// The container of a command backup or restore: the user's image, command, environment and
/// resources, run through `script` (`DUMP_SCRIPT` or `LOAD_SCRIPT`) with the stream's
/// directory mounted.
fn command_container(command: &CommandContainer, script: &str, config: &MoverConfig) -> Container {
    let shell = vec![
        "/bin/sh".into(),
        "-c".into(),
        script.into(),
        STREAM_MOUNT.into(),
    ];
    Container {
        name: COMMAND_CONTAINER.into(),
        image: Some(command.image.clone()),
        command: Some(shell),
        args: Some(command.argv()),
        env: (!command.env.is_empty()).then(|| command.env.clone()),
        resources: command.resources.clone(),
        volume_mounts: Some(vec![mount(STREAM_VOLUME, STREAM_MOUNT, false)]),
        ..users_container(config)
    }
}

/// The name of the container that runs a command backup's or restore's command.
pub const COMMAND_CONTAINER: &str = "command";
/// The mover's container in every mover pod.
pub const MOVER_CONTAINER: &str = "mover";
const STREAM_VOLUME: &str = "stream";

/// A pod-local scratch directory (small: it holds a pipe and two short files, or a staged
/// artifact when `size_limit` is absent).
fn empty_dir(name: &str, size_limit: Option<&str>) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: size_limit.map(|s| Quantity(s.into())),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// The Job of a command backup: the user's command writes the stream into the pipe the mover
/// (beside it in the same pod) stores in the repository.
pub fn command_job(
    backup: &Backup,
    command: &CommandStrategy,
    repo: &BackupRepository,
    config: &MoverConfig,
    record: &RecordContext,
) -> Job {
    let backup_name = backup.metadata.name.clone().unwrap_or_default();
    let namespace = backup.metadata.namespace.clone().unwrap_or_default();
    let name = command.name();
    let mover = MoverJob {
        name: naming::backup_job(&backup_name, name),
        node: None,
        role: ROLE_BACKUP,
        labels: backup_labels(backup, Some(name)),
        request: Request::Dump {
            repository: location(repo),
            stream_dir: STREAM_MOUNT.into(),
            name: name.into(),
            dir: contract::backup_dir(&namespace, &backup_name),
            compression: repo.spec.compression,
            record: Some(record.clone()),
        },
        repository: (repo, false),
        volumes: vec![empty_dir(STREAM_VOLUME, Some(STREAM_DIR_LIMIT))],
        mounts: vec![mount(STREAM_VOLUME, STREAM_MOUNT, false)],
        deadline_seconds: config.deadline_seconds,
        capabilities: capabilities::DUMP.to_vec(),
        companion: Some(Companion::Beside(command_container(
            &command.container,
            contract::DUMP_SCRIPT,
            config,
        ))),
    };
    job(backup, mover, config)
}

/// The stream directory holds a pipe and two short files.
const STREAM_DIR_LIMIT: &str = "16Mi";

/// What a stream restore Job needs to know.
pub struct LoadJob<'a> {
    pub repository: &'a BackupRepository,
    pub manifest: String,
    pub artifact_digest: Option<&'a str>,
    /// The stream's name in the backup.
    pub stream: &'a str,
    pub command: &'a CommandContainer,
    /// The artifact's size recorded when the backup completed: the staging directory's bound.
    pub artifact_bytes: Option<u64>,
}

/// Room in the staging directory beyond the artifact (the filesystem's own blocks).
const STAGING_MARGIN: u64 = 1 << 20;

/// The Job that restores a command backup's stream: the mover stages and verifies it (in a
/// directory only it mounts), then feeds it to the user's restore command beside it.
pub fn load_job(restore: &Restore, l: LoadJob<'_>, config: &MoverConfig) -> Job {
    let name = restore.metadata.name.clone().unwrap_or_default();
    // The staged artifact is bounded by its recorded size: the emptyDir's limit, and a request
    // for that much of the node's ephemeral storage, so the pod lands where it fits and cannot
    // fill the node's disk.
    let staging_limit = l
        .artifact_bytes
        .map(|bytes| bytes.saturating_add(STAGING_MARGIN).to_string());
    let mut config = config.clone();
    if let Some(limit) = &staging_limit {
        config
            .resources
            .requests
            .get_or_insert_with(BTreeMap::new)
            .insert("ephemeral-storage".into(), Quantity(limit.clone()));
    }
    let mover = MoverJob {
        name: naming::restore_job(&name),
        node: None,
        role: ROLE_RESTORE,
        labels: label_map(&[(labels::RESTORE, &name), (labels::PVC, l.stream)]),
        request: Request::Load {
            repository: location(l.repository),
            manifest: l.manifest,
            stream_dir: STREAM_MOUNT.into(),
            staging: STREAM_STAGING_MOUNT.into(),
            artifact_digest: l.artifact_digest.map(str::to_string),
            artifact_bytes: l.artifact_bytes,
        },
        repository: (l.repository, true),
        volumes: vec![
            empty_dir(STREAM_VOLUME, Some(STREAM_DIR_LIMIT)),
            empty_dir("staging", staging_limit.as_deref()),
        ],
        mounts: vec![
            mount(STREAM_VOLUME, STREAM_MOUNT, false),
            mount("staging", STREAM_STAGING_MOUNT, false),
        ],
        deadline_seconds: config.deadline_seconds,
        capabilities: capabilities::VERIFY.to_vec(),
        companion: Some(Companion::Beside(command_container(
            l.command,
            contract::LOAD_SCRIPT,
            &config,
        ))),
    };
    job(restore, mover, &config)
}

/// What a restore Job needs to know.
pub struct RestoreJob<'a> {
    pub repository: &'a BackupRepository,
    /// The volume's restic snapshot, when the backup is one (then `manifest` is unused).
    pub restic_snapshot: Option<&'a str>,
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

/// Whether `job` runs a user's command beside its mover (a command backup or restore).
pub fn runs_command(job: &Job) -> bool {
    job.spec
        .iter()
        .flat_map(|s| s.template.spec.iter())
        .flat_map(|p| &p.containers)
        .any(|c| c.name == COMMAND_CONTAINER)
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
pub fn restore_job(restore: &Restore, r: RestoreJob<'_>, config: &MoverConfig) -> Job {
    let name = restore.metadata.name.clone().unwrap_or_default();
    let mover = MoverJob {
        name: naming::restore_job(&name),
        node: r.node,
        role: ROLE_RESTORE,
        labels: label_map(&[(labels::RESTORE, &name), (labels::PVC, r.target_pvc)]),
        request: match r.restic_snapshot {
            Some(snapshot) => Request::ResticRestore {
                repository: location(r.repository),
                root: contract::restic_root(&restore.namespace().unwrap_or_default()),
                snapshot: snapshot.into(),
                target: TARGET_MOUNT.into(),
                existing_data_policy: r.policy,
                untrusted: r.untrusted,
            },
            None => Request::Restore {
                repository: location(r.repository),
                manifest: r.manifest,
                target: TARGET_MOUNT.into(),
                existing_data_policy: r.policy,
                artifact_digest: r.artifact_digest.map(str::to_string),
                untrusted: r.untrusted,
            },
        },
        repository: (r.repository, true),
        volumes: vec![claim_volume("target", r.target_pvc, false)],
        mounts: vec![mount("target", TARGET_MOUNT, false)],
        deadline_seconds: config.deadline_seconds,
        capabilities: restore_capabilities(r.untrusted),
        companion: None,
    };
    job(restore, mover, config)
}

/// The Job that checks a repository: write, read back and remove a small object; for a restic
/// one, also open it with the password, creating it on first use.
pub fn probe_job(repo: &BackupRepository, at: i64, config: &MoverConfig) -> Job {
    let name = repo.metadata.name.clone().unwrap_or_default();
    let generation = repo.metadata.generation.unwrap_or_default();
    let mut repository = location(repo);
    if let Location::S3(s3) = &mut repository {
        s3.retry_timeout_seconds = Some(PROBE_RETRY_SECONDS);
    }
    let mut job_labels = label_map(&[(labels::REPOSITORY, &name)]);
    job_labels.insert(labels::GENERATION.into(), generation.to_string());
    let mover = MoverJob {
        name: naming::probe_job(&name, at),
        node: None,
        role: ROLE_PROBE,
        labels: job_labels,
        request: Request::Probe {
            repository,
            restic: restic_root(repo, &repo.namespace().unwrap_or_default()),
        },
        repository: (repo, false),
        volumes: Vec::new(),
        mounts: Vec::new(),
        deadline_seconds: PROBE_DEADLINE_SECONDS,
        capabilities: capabilities::PROBE.to_vec(),
        companion: None,
    };
    job(repo, mover, config)
}

/// The Job that prunes `repo`'s restic repository for the run scheduled at `at`.
pub fn prune_job(
    repo: &BackupRepository,
    at: i64,
    spec: &backstop_api::PruneSpec,
    config: &MoverConfig,
) -> Job {
    let name = repo.metadata.name.clone().unwrap_or_default();
    let mover = MoverJob {
        name: naming::prune_job(&name, at),
        node: None,
        role: ROLE_PRUNE,
        labels: label_map(&[(labels::REPOSITORY, &name)]),
        request: Request::Prune {
            repository: location(repo),
            root: contract::restic_root(&repo.namespace().unwrap_or_default()),
            keep_delete_seconds: u64::from(spec.keep_delete_hours) * 3600,
        },
        repository: (repo, false),
        volumes: Vec::new(),
        mounts: Vec::new(),
        deadline_seconds: config.deadline_seconds,
        capabilities: capabilities::DELETE.to_vec(),
        companion: None,
    };
    job(repo, mover, config)
}

/// The Job that syncs `repo` (started at `at`): it finds the backups of the repository's
/// namespace that have no Backup object and creates them, as the ServiceAccount
/// `naming::sync_identity` (which may list and create Backups there, nothing else). It is the
/// only mover pod given a Kubernetes identity; it mounts the repository read-only and no data
/// volume.
pub fn sync_job(repo: &BackupRepository, at: i64, config: &MoverConfig) -> Job {
    let name = repo.metadata.name.clone().unwrap_or_default();
    let namespace = repo.namespace().unwrap_or_default();
    let mover = MoverJob {
        name: naming::sync_job(&name, at),
        node: None,
        role: ROLE_SYNC,
        labels: label_map(&[(labels::REPOSITORY, &name)]),
        request: Request::Sync {
            repository: location(repo),
            namespace: namespace.clone(),
            repository_name: name.clone(),
            restic: restic_root(repo, &namespace),
        },
        repository: (repo, true),
        volumes: Vec::new(),
        mounts: Vec::new(),
        deadline_seconds: SYNC_DEADLINE_SECONDS,
        capabilities: capabilities::SYNC.to_vec(),
        companion: None,
    };
    let mut job = job(repo, mover, config);
    let pod = job.spec.as_mut().and_then(|s| s.template.spec.as_mut());
    if let Some(pod) = pod {
        pod.service_account_name = Some(naming::sync_identity(&name));
        pod.automount_service_account_token = Some(true);
        let api_server = config.api_server.as_ref().filter(|_| config.host_network);
        if let Some((host, port)) = api_server
            && let Some(env) = pod.containers.first_mut().and_then(|c| c.env.as_mut())
        {
            for (name, value) in [
                ("KUBERNETES_SERVICE_HOST", host),
                ("KUBERNETES_SERVICE_PORT", port),
            ] {
                env.push(EnvVar {
                    name: name.into(),
                    value: Some(value.clone()),
                    ..EnvVar::default()
                });
            }
        }
    }
    job
}

/// A sync lists the repository and creates Backups: minutes even for thousands of backups.
pub const SYNC_DEADLINE_SECONDS: i64 = 1800;

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_api::{BackupRepositorySpec, BackupSpec, PvcRepository};
    use serde_json::json;

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
    fn a_sync_job_runs_as_its_repositorys_identity_and_only_reads_the_repository() {
        let (_, mut repo) = fixtures();
        repo.metadata.namespace = Some("shop".into());
        repo.metadata.uid = Some("uid-r".into());
        let env_of = |config: &MoverConfig| {
            let job = sync_job(&repo, 100, config);
            let pod = job.spec.unwrap().template.spec.unwrap();
            pod.containers[0]
                .env
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|e| format!("{}={}", e.name, e.value.unwrap_or_default()))
                .collect::<Vec<_>>()
        };
        let job = sync_job(&repo, 100, &MoverConfig::default());
        assert_eq!(job.metadata.name.as_deref(), Some("default-sync-100"));
        let labels = job.metadata.labels.clone().unwrap();
        assert_eq!(labels[labels::ROLE], ROLE_SYNC);
        assert_eq!(labels[labels::REPOSITORY], "default");
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some("backstop-sync-default")
        );
        assert_eq!(pod.automount_service_account_token, Some(true));
        let mover = &pod.containers[0];
        assert_eq!(
            mover.args.clone().unwrap().join(" "),
            "mover sync --namespace shop --repository-name default \
             --repository /repository/cluster-a --termination-log /dev/termination-log"
        );
        assert_eq!(
            mover.volume_mounts.as_ref().unwrap()[0].read_only,
            Some(true)
        );
        let claim = pod.volumes.unwrap()[0]
            .persistent_volume_claim
            .clone()
            .unwrap();
        assert_eq!(claim.read_only, Some(true));
        assert!(env_of(&MoverConfig::default()).is_empty());
        // On the host's network it reaches the API server the operator's way; off it, the
        // kubelet's service variables do.
        let api = Some(("127.0.0.1".to_string(), "6443".to_string()));
        let host = MoverConfig {
            host_network: true,
            api_server: api.clone(),
            ..MoverConfig::default()
        };
        assert_eq!(
            env_of(&host),
            [
                "KUBERNETES_SERVICE_HOST=127.0.0.1",
                "KUBERNETES_SERVICE_PORT=6443"
            ]
        );
        let pod_network = MoverConfig {
            api_server: api,
            ..MoverConfig::default()
        };
        assert!(env_of(&pod_network).is_empty());
    }

    #[test]
    fn a_verifications_conclusion_is_written_beside_its_backup_by_a_job_of_its_own() {
        let (backup, repo) = fixtures();
        let record = record::VerificationRecord {
            version: 1,
            backup: "nightly-202611210200".into(),
            request: "weekly".into(),
            mode: backstop_api::VerificationMode::Artifact,
            phase: backstop_api::VerificationPhase::Passed,
            completion_time: "2026-11-29T04:00:00Z".parse().unwrap(),
            reason: "ArtifactVerified".into(),
            message: "read back".into(),
        };
        let job = record_verification_job(&backup, &repo, &record, &MoverConfig::default());
        assert_eq!(
            job.metadata.name,
            Some(naming::record_verification_job(
                "nightly-202611210200",
                "weekly"
            ))
        );
        assert_eq!(
            job.metadata.labels.clone().unwrap()[labels::ROLE],
            ROLE_RECORD
        );
        let pod = job.spec.unwrap().template.spec.unwrap();
        let args = pod.containers[0].args.clone().unwrap();
        assert_eq!(
            args[..6],
            [
                "mover",
                "record-verification",
                "--cluster",
                "",
                "--dir",
                "shop/nightly-202611210200"
            ]
        );
        assert_eq!(args[6], "--verification");
        let written: record::VerificationRecord = serde_json::from_str(&args[7]).unwrap();
        assert_eq!(written, record);
        assert_eq!(pod.automount_service_account_token, Some(false));
    }

    /// The Job backing up `pvc` read live, with the default settings.
    fn direct_job(backup: &Backup, pvc: &str, repo: &BackupRepository) -> Job {
        backup_job(
            backup,
            pvc,
            pvc,
            None,
            repo,
            &MoverConfig::default(),
            &RecordContext::default(),
        )
    }

    /// A Restore `back` of the fixtures' backup.
    fn restore_of_nightly() -> Restore {
        let mut restore = Restore::new(
            "back",
            backstop_api::RestoreSpec {
                backup_name: "nightly-202611210200".into(),
                ..Default::default()
            },
        );
        restore.metadata.namespace = Some("shop".into());
        restore
    }

    fn pg_command(restore: bool) -> CommandStrategy {
        let mut command: CommandStrategy = serde_json::from_value(serde_json::json!({
            "name": "shop", "image": "pg:15", "command": ["pg_dump", "-Fc"], "args": ["-d", "shop"],
            "env": [{"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
            "resources": {"limits": {"memory": "2Gi"}}
        }))
        .unwrap();
        if restore {
            command.restore = Some(CommandContainer {
                image: "pg:15".into(),
                command: vec!["pg_restore".into(), "-d".into(), "shop".into()],
                ..CommandContainer::default()
            });
        }
        command
    }

    /// The shared stream directory's mount, if `container` has one.
    fn stream_mount(container: &Container) -> Option<VolumeMount> {
        container
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == STREAM_MOUNT)
            .cloned()
    }

    #[test]
    fn a_command_backup_runs_the_users_command_wrapped_beside_the_mover() {
        let (backup, repo) = fixtures();
        let config = MoverConfig {
            host_network: true,
            ..MoverConfig::default()
        };
        let job = command_job(
            &backup,
            &pg_command(false),
            &repo,
            &config,
            &RecordContext::default(),
        );
        assert_eq!(
            job.metadata.name,
            Some(naming::backup_job("nightly-202611210200", "shop"))
        );
        assert_eq!(job.metadata.labels.clone().unwrap()[labels::PVC], "shop");
        assert!(runs_command(&job));
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(
            pod.host_network,
            Some(false),
            "a user's container is never on the host's network"
        );
        assert!(pod.init_containers.is_none());
        let [mover, command] = pod.containers.as_slice() else {
            panic!("two containers: {:?}", pod.containers);
        };
        assert_eq!(mover.name, MOVER_CONTAINER);
        let args = mover.args.clone().unwrap().join(" ");
        assert!(
            args.starts_with("mover dump --cluster  --stream-dir /backstop-stream --name shop --dir shop/nightly-202611210200"),
            "{args}"
        );
        assert_eq!(command.name, COMMAND_CONTAINER);
        assert_eq!(command.image.as_deref(), Some("pg:15"));
        assert_eq!(
            command.command.clone().unwrap(),
            ["/bin/sh", "-c", contract::DUMP_SCRIPT, STREAM_MOUNT]
        );
        assert_eq!(
            command.args.clone().unwrap(),
            ["pg_dump", "-Fc", "-d", "shop"]
        );
        let env = command.env.clone().unwrap();
        assert_eq!(
            env[0]
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .map(|s| s.key.as_str()),
            Some("password"),
            "the password reaches the command from its Secret, never through the operator"
        );
        assert!(
            mover.env.iter().flatten().all(|e| e.name != "PGPASSWORD"),
            "the mover never sees the command's secrets"
        );
        assert_eq!(
            command
                .resources
                .as_ref()
                .and_then(|r| r.limits.clone())
                .unwrap()["memory"]
                .0,
            "2Gi"
        );
        let sc = command.security_context.clone().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.unwrap().add, None);
        assert_eq!(sc.run_as_user, None, "the image's user");
        // Only the stream directory is shared; only the mover sees the repository.
        assert_eq!(
            stream_mount(command).map(|m| m.name),
            Some(STREAM_VOLUME.to_string())
        );
        assert_eq!(command.volume_mounts.as_ref().map(Vec::len), Some(1));
        assert!(stream_mount(mover).is_some());
        let stream = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == STREAM_VOLUME)
            .and_then(|v| v.empty_dir)
            .unwrap();
        assert_eq!(stream.size_limit, Some(Quantity(STREAM_DIR_LIMIT.into())));
    }

    #[test]
    fn a_stream_restore_stages_where_only_the_mover_sees_then_feeds_the_restore_command() {
        let (_, repo) = fixtures();
        let restore = restore_of_nightly();
        let command = pg_command(true).restore.unwrap();
        let job = load_job(
            &restore,
            LoadJob {
                repository: &repo,
                manifest: "shop/nightly-202611210200/shop.manifest.jsonl.zst".into(),
                artifact_digest: Some("ab"),
                stream: "shop",
                command: &command,
                artifact_bytes: Some(10 << 20),
            },
            &MoverConfig::default(),
        );
        assert!(runs_command(&job));
        // The staged artifact is bounded by its recorded size, and the node must have room.
        let bound = Quantity(((10 << 20) + STAGING_MARGIN).to_string());
        let spec = job.spec.clone().unwrap().template.spec.unwrap();
        let staging = spec.volumes.iter().flatten().find(|v| v.name == "staging");
        assert_eq!(
            staging
                .and_then(|v| v.empty_dir.clone())
                .and_then(|d| d.size_limit),
            Some(bound.clone())
        );
        let requests = spec.containers[0]
            .resources
            .clone()
            .unwrap()
            .requests
            .unwrap();
        assert_eq!(requests.get("ephemeral-storage"), Some(&bound));
        let pod = job.spec.unwrap().template.spec.unwrap();
        let [mover, restorer] = pod.containers.as_slice() else {
            panic!("two containers: {:?}", pod.containers);
        };
        let args = mover.args.clone().unwrap().join(" ");
        assert!(
            args.starts_with(
                "mover load --manifest shop/nightly-202611210200/shop.manifest.jsonl.zst --stream-dir /backstop-stream --staging /backstop-staging --artifact-digest ab --artifact-bytes 10485760"
            ),
            "{args}"
        );
        assert_eq!(
            restorer.command.clone().unwrap(),
            ["/bin/sh", "-c", contract::LOAD_SCRIPT, STREAM_MOUNT]
        );
        assert_eq!(restorer.args.clone().unwrap(), ["pg_restore", "-d", "shop"]);
        let mounted = |c: &Container, path: &str| {
            c.volume_mounts
                .iter()
                .flatten()
                .any(|m| m.mount_path == path)
        };
        assert!(mounted(mover, STREAM_STAGING_MOUNT));
        assert!(
            !mounted(restorer, STREAM_STAGING_MOUNT),
            "the command never sees unverified bytes"
        );
        assert!(!mounted(restorer, REPOSITORY_MOUNT));
        let repository = mover
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == REPOSITORY_MOUNT)
            .unwrap();
        assert_eq!(repository.read_only, Some(true));
        assert!(!runs_command(&restore_job(
            &restore,
            RestoreJob {
                restic_snapshot: None,
                repository: &repo,
                manifest: String::new(),
                artifact_digest: None,
                target_pvc: "t",
                policy: ExistingDataPolicy::FailIfNotEmpty,
                untrusted: false,
                node: None,
            },
            &MoverConfig::default()
        )));
    }

    #[test]
    fn a_snapshot_backup_job_reads_the_temporary_claim_and_names_the_volume() {
        let (backup, repo) = fixtures();
        let job = backup_job(
            &backup,
            "data",
            "data-snap-1",
            None,
            &repo,
            &MoverConfig::default(),
            &RecordContext::default(),
        );
        assert_eq!(
            job.metadata.name,
            Some(naming::backup_job("nightly-202611210200", "data"))
        );
        assert_eq!(job.metadata.labels.clone().unwrap()[labels::PVC], "data");
        let pod = job.spec.unwrap().template.spec.unwrap();
        let claim = pod.volumes.unwrap()[0]
            .persistent_volume_claim
            .clone()
            .unwrap();
        assert_eq!(claim.claim_name, "data-snap-1");
        assert_eq!(claim.read_only, Some(true));
        let args = pod.containers[0].args.clone().unwrap().join(" ");
        assert!(
            args.contains("--pvc data "),
            "the artifact is the volume's: {args}"
        );
        assert!(!args.contains("snap"), "{args}");
    }

    #[test]
    fn backup_job_mounts_the_source_read_only_and_is_owned_by_the_backup() {
        let (backup, repo) = fixtures();
        let job = direct_job(&backup, "data", &repo);
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
            "data",
            node.as_deref(),
            &repo,
            &MoverConfig::default(),
            &RecordContext::default(),
        );
        let affinity =
            serde_json::to_value(job.spec.unwrap().template.spec.unwrap().affinity).unwrap();
        let values = &affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchExpressions"][0]["values"];
        assert_eq!(values, &serde_json::json!(["node-c"]));
    }

    #[test]
    fn mover_placement_settings_reach_the_pod_beside_the_node_pinning() {
        let (backup, repo) = fixtures();
        let config = MoverConfig {
            node_selector: Some([("backup".to_string(), "yes".to_string())].into()),
            tolerations: Some(vec![Toleration {
                key: Some("dedicated".into()),
                operator: Some("Exists".into()),
                ..Toleration::default()
            }]),
            ..MoverConfig::default()
        };
        let job = backup_job(
            &backup,
            "data",
            "data",
            Some("node-c"),
            &repo,
            &config,
            &RecordContext::default(),
        );
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.node_selector, config.node_selector);
        assert_eq!(pod.tolerations, config.tolerations);
        assert!(pod.affinity.is_some(), "the volume's node pinning stays");
        let plain = direct_job(&backup, "data", &repo);
        let pod = plain.spec.unwrap().template.spec.unwrap();
        assert_eq!((pod.node_selector, pod.tolerations), (None, None));
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
            restic_snapshot: None,
            repository: &repo,
            manifest: "shop/b/db.manifest.jsonl.zst".into(),
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
                backup_job(
                    &backup,
                    "db",
                    "db",
                    None,
                    &repo,
                    &config,
                    &RecordContext::default(),
                ),
                vec!["DAC_OVERRIDE"],
            ),
            (delete_job(&backup, &repo, &config), vec!["DAC_OVERRIDE"]),
            (
                restore_job(&restore, restore_with(false), &config),
                vec!["DAC_OVERRIDE", "CHOWN", "FOWNER", "FSETID", "MKNOD"],
            ),
            (
                restore_job(&restore, restore_with(true), &config),
                vec!["DAC_OVERRIDE", "CHOWN", "FOWNER", "FSETID"],
            ),
            (probe_job(&s3, 1, &config), vec![]),
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
            backup_job(
                &backup,
                "db",
                "db",
                None,
                &repo,
                config,
                &RecordContext::default(),
            )
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
        let policy = resources(&operator.with_resources(Some(&big)));
        assert_eq!(policy, big);
        assert_eq!(
            resources(&operator.with_resources(None)).requests.unwrap()["memory"].0,
            "128Mi"
        );
    }

    /// The fixtures' repository in the restic format, its password in Secret `restic`.
    fn restic_repo() -> BackupRepository {
        let (_, mut repo) = fixtures();
        repo.metadata.namespace = Some("shop".into());
        repo.spec.format = RepositoryFormat::Restic;
        repo.spec.password_secret_ref = Some(backstop_api::PasswordSecretRef {
            name: "restic".into(),
            key: "pw".into(),
        });
        repo
    }

    fn container(job: &Job) -> Container {
        job.spec.clone().unwrap().template.spec.unwrap().containers[0].clone()
    }

    fn request(job: &Job) -> Vec<String> {
        container(job).args.unwrap()
    }

    #[test]
    fn a_restic_repository_gets_the_password_from_its_secret_and_its_snapshots_their_tags() {
        let (backup, tar) = fixtures();
        let repo = restic_repo();
        let job = direct_job(&backup, "db", &repo);
        let args = request(&job).join(" ");
        assert!(
            args.starts_with(
                "mover restic-backup --cluster  --root shop/_restic --source /source --pvc db --host shop \
                 --tag backstop --tag backup=nightly-202611210200 --tag pvc=db --tag policy=nightly"
            ),
            "{args}"
        );
        let env = container(&job).env.unwrap();
        let password = env.iter().find(|e| e.name == "RESTIC_PASSWORD").unwrap();
        let from = password.value_from.clone().unwrap().secret_key_ref.unwrap();
        assert_eq!((from.name.as_str(), from.key.as_str()), ("restic", "pw"));
        assert!(
            password.value.is_none(),
            "the operator never holds the password"
        );
        // A tar repository's movers get no password.
        let env = container(&direct_job(&backup, "db", &tar))
            .env
            .unwrap_or_default();
        assert!(env.iter().all(|e| e.name != "RESTIC_PASSWORD"));
        assert!(request(&direct_job(&backup, "db", &tar)).contains(&"backup".to_string()));

        let prune = prune_job(
            &repo,
            7,
            &backstop_api::PruneSpec::default(),
            &MoverConfig::default(),
        );
        assert_eq!(prune.metadata.name.as_deref(), Some("default-prune-7"));
        assert_eq!(
            prune.metadata.labels.clone().unwrap()[labels::ROLE],
            ROLE_PRUNE
        );
        assert!(
            request(&prune).join(" ").starts_with(
                "mover prune --cluster  --root shop/_restic --keep-delete-seconds 86400"
            ),
            "{:?}",
            request(&prune)
        );
        let probe = request(&probe_job(&repo, 1, &MoverConfig::default())).join(" ");
        assert!(
            probe.starts_with("mover probe --restic shop/_restic"),
            "{probe}"
        );
        let probe = request(&probe_job(&tar, 1, &MoverConfig::default())).join(" ");
        assert!(!probe.contains("--restic"), "{probe}");
    }

    #[test]
    fn a_restic_backup_is_deleted_by_forgetting_its_snapshots_and_restored_from_them() {
        let (mut backup, _) = fixtures();
        let repo = restic_repo();
        let snapshot = |pvc: &str, id: &str| backstop_api::VolumeBackup {
            pvc: pvc.into(),
            restic: Some(backstop_api::ResticSnapshot {
                id: id.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        backup.status = Some(backstop_api::BackupStatus {
            volumes: vec![snapshot("db", "aa11"), snapshot("logs", "bb22")],
            ..Default::default()
        });
        let args = request(&delete_job(&backup, &repo, &MoverConfig::default())).join(" ");
        assert!(
            args.starts_with(
                "mover forget --cluster  --root shop/_restic --snapshot aa11 --snapshot bb22"
            ),
            "{args}"
        );
        let restore = restore_of_nightly();
        let job = restore_job(
            &restore,
            RestoreJob {
                restic_snapshot: Some("aa11"),
                repository: &repo,
                manifest: String::new(),
                artifact_digest: None,
                target_pvc: "db-copy",
                policy: ExistingDataPolicy::Merge,
                untrusted: true,
                node: None,
            },
            &MoverConfig::default(),
        );
        let args = request(&job).join(" ");
        assert!(
            args.starts_with(
                "mover restic-restore --root shop/_restic --snapshot aa11 --target /target \
                 --existing-data-policy Merge --untrusted"
            ),
            "{args}"
        );
        let verify = |drill| {
            request(&verify_job(
                &backup,
                VerifyJob {
                    restic_snapshot: Some("bb22".into()),
                    name: "v".into(),
                    pvc: "logs",
                    repository: &repo,
                    manifest: String::new(),
                    artifact_digest: None,
                    drill,
                },
                &MoverConfig::default(),
            ))
            .join(" ")
        };
        assert!(
            verify(None).starts_with("mover restic-verify --root shop/_restic --snapshot bb22")
        );
        assert!(verify(Some(("scratch", None))).starts_with(
            "mover restic-restore --root shop/_restic --snapshot bb22 --target /target \
             --existing-data-policy FailIfNotEmpty --untrusted"
        ));
    }

    #[test]
    fn delete_job_only_mounts_the_repository() {
        let (backup, mut repo) = fixtures();
        repo.spec.take_over_from = Some("c0".into());
        let config = MoverConfig {
            cluster: "c1".into(),
            ..MoverConfig::default()
        };
        let job = delete_job(&backup, &repo, &config);
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.volumes.unwrap().len(), 1);
        // A removal writes: it names the cluster it writes for, and whom it may take over from.
        let args = pod.containers[0].args.clone().unwrap();
        assert_eq!(
            args[..6],
            [
                "mover",
                "delete",
                "--cluster",
                "c1",
                "--take-over-from",
                "c0"
            ]
        );
        assert_eq!(job.metadata.labels.unwrap()[labels::ROLE], ROLE_DELETE);
    }

    #[test]
    fn an_artifact_verification_mounts_only_the_repository_read_only() {
        let (backup, repo) = fixtures();
        let config = MoverConfig {
            host_network: true,
            ..MoverConfig::default()
        };
        let job = verify_job(
            &backup,
            VerifyJob {
                restic_snapshot: None,
                name: "v".into(),
                pvc: "db",
                repository: &repo,
                manifest: "shop/nightly-202611210200/db.manifest.jsonl.zst".into(),
                artifact_digest: Some("b3".into()),
                drill: None,
            },
            &config,
        );
        assert_eq!(
            job.metadata.labels.clone().unwrap()[labels::ROLE],
            ROLE_VERIFY
        );
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.init_containers, None);
        let mover = &pod.containers[0];
        let args = mover.args.clone().unwrap();
        assert_eq!(&args[..2], ["mover", "verify"]);
        assert!(args.windows(2).any(|w| w == ["--artifact-digest", "b3"]));
        assert!(!args.contains(&"--cluster".to_string()), "reads only");
        let mounts = mover.volume_mounts.clone().unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].mount_path, REPOSITORY_MOUNT);
        assert_eq!(mounts[0].read_only, Some(true));
        assert_eq!(
            pod.host_network,
            Some(true),
            "as the operator's config says"
        );
    }

    #[test]
    fn a_drill_restores_untrusted_into_its_scratch_volume_then_runs_the_check_without_privileges() {
        let (backup, repo) = fixtures();
        let config = MoverConfig {
            host_network: true,
            ..MoverConfig::default()
        };
        let check = DrillCheck {
            image: "postgres:15".into(),
            command: vec!["pg_restore".into()],
            args: vec!["--list".into(), "/restored/dump".into()],
        };
        let job = verify_job(
            &backup,
            VerifyJob {
                restic_snapshot: None,
                name: "d".into(),
                pvc: "db",
                repository: &repo,
                manifest: "shop/nightly-202611210200/db.manifest.jsonl.zst".into(),
                artifact_digest: Some("b3".into()),
                drill: Some(("scratch", Some(&check))),
            },
            &config,
        );
        let pod = job.spec.unwrap().template.spec.unwrap();
        let mover = &pod.init_containers.clone().unwrap()[0];
        let args = mover.args.clone().unwrap();
        assert_eq!(&args[..2], ["mover", "restore"]);
        for pair in [
            ["--target", TARGET_MOUNT],
            ["--existing-data-policy", "FailIfNotEmpty"],
            ["--artifact-digest", "b3"],
        ] {
            assert!(args.windows(2).any(|w| w == pair), "{pair:?} in {args:?}");
        }
        assert!(args.contains(&"--untrusted".to_string()), "{args:?}");
        let added = mover
            .security_context
            .clone()
            .and_then(|s| s.capabilities?.add)
            .unwrap();
        assert!(!added.contains(&"MKNOD".to_string()), "{added:?}");
        let scratch = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "target")
            .and_then(|v| v.persistent_volume_claim)
            .unwrap();
        assert_eq!(scratch.claim_name, "scratch");
        let checker = &pod.containers[0];
        assert_eq!(checker.name, "check");
        assert_eq!(checker.image.as_deref(), Some("postgres:15"));
        assert_eq!(checker.command, Some(vec!["pg_restore".to_string()]));
        assert_eq!(
            checker.volume_mounts.clone().unwrap()[0].mount_path,
            RESTORED_MOUNT
        );
        let security = checker.security_context.clone().unwrap();
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            security.capabilities.unwrap().drop,
            Some(vec!["ALL".to_string()])
        );
        assert_eq!(
            checker.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(
            pod.host_network,
            Some(false),
            "someone else's container never runs on the host's network"
        );
    }

    #[test]
    fn a_restore_job_checks_the_manifest_against_the_digest_recorded_at_backup() {
        let (_, repo) = fixtures();
        let restore = restore_of_nightly();
        let request = |digest| RestoreJob {
            restic_snapshot: None,
            repository: &repo,
            manifest: "shop/nightly-202611210200/db.manifest.jsonl.zst".into(),
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
        let with = args(restore_job(
            &restore,
            request(Some("b3-digest")),
            &MoverConfig::default(),
        ));
        let at = with
            .iter()
            .position(|a| a == "--artifact-digest")
            .expect("--artifact-digest");
        assert_eq!(with[at + 1], "b3-digest");
        let without = args(restore_job(
            &restore,
            request(None),
            &MoverConfig::default(),
        ));
        assert!(!without.contains(&"--artifact-digest".to_string()));
        assert!(!without.contains(&"--untrusted".to_string()));
        let untrusted = RestoreJob {
            untrusted: true,
            ..request(None)
        };
        let untrusted = args(restore_job(&restore, untrusted, &MoverConfig::default()));
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
        let job = direct_job(&backup, "data", &repo);
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
        let volumes = pod.volumes.unwrap();
        let names: Vec<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["source", "s3-ca"]);
        let ca = volumes[1].secret.as_ref().unwrap();
        assert_eq!(ca.secret_name.as_deref(), Some("minio-ca"));
        let mount = container
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "s3-ca")
            .unwrap();
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            (CA_MOUNT, Some(true))
        );

        repo.spec.s3.as_mut().unwrap().ca_secret_ref = None;
        let probe = probe_job(&repo, 1_795_300_000, &MoverConfig::default());
        assert_eq!(probe.metadata.name.as_deref(), Some("s3-probe-1795300000"));
        let labels = probe.metadata.labels.clone().unwrap();
        assert_eq!(labels[labels::GENERATION], "3");
        assert_eq!(labels[labels::ROLE], ROLE_PROBE);
        let spec = probe.spec.unwrap();
        assert_eq!(spec.active_deadline_seconds, Some(PROBE_DEADLINE_SECONDS));
        assert!(spec.template.spec.unwrap().volumes.unwrap().is_empty());
    }

    #[test]
    fn a_backup_job_compresses_as_its_repository_says() {
        let (backup, mut repo) = fixtures();
        for compression in [
            backstop_api::Compression::Gzip,
            backstop_api::Compression::None,
            backstop_api::Compression::Zstd,
        ] {
            repo.spec.compression = compression;
            let job = direct_job(&backup, "db", &repo);
            let args = job.spec.unwrap().template.spec.unwrap().containers[0]
                .args
                .clone()
                .unwrap();
            let at = args.iter().position(|a| a == "--compression").unwrap();
            assert_eq!(args[at + 1], compression.as_str());
        }
    }

    #[test]
    fn only_the_restore_target_is_writable_in_a_restore_job() {
        let (_, repo) = fixtures();
        let mut restore = Restore::new("back", Default::default());
        restore.metadata.namespace = Some("shop".into());
        let job = restore_job(
            &restore,
            RestoreJob {
                restic_snapshot: None,
                repository: &repo,
                manifest: "shop/b/db.manifest.jsonl.zst".into(),
                artifact_digest: None,
                target_pvc: "db-restored",
                policy: ExistingDataPolicy::FailIfNotEmpty,
                untrusted: false,
                node: None,
            },
            &MoverConfig::default(),
        );
        let pod = job.spec.unwrap().template.spec.unwrap();
        let volumes = pod.volumes.unwrap();
        let claim = |name: &str| {
            volumes
                .iter()
                .find(|v| v.name == name)
                .and_then(|v| v.persistent_volume_claim.clone())
                .unwrap()
        };
        assert_eq!(claim("repository").read_only, Some(true));
        assert_eq!(claim("target").read_only, None);
        let mounts = pod.containers[0].volume_mounts.clone().unwrap();
        let mount = |name: &str| mounts.iter().find(|m| m.name == name).unwrap().read_only;
        assert_eq!(mount("repository"), Some(true));
        assert_eq!(mount("target"), None);
    }

    /// The whole backup Job, field by field: a field dropped or changed in the builder (a lost
    /// label, a writable source, a token mounted, another termination path) fails here.
    #[test]
    fn a_backup_job_is_exactly_this() {
        let (mut backup, repo) = fixtures();
        backup.metadata.annotations = Some(
            [(
                labels::SCHEDULED_TIME.to_string(),
                "2026-11-21T02:00:00Z".to_string(),
            )]
            .into(),
        );
        let volume = VolumeBackup {
            pvc: "data".into(),
            capacity: Some("1Gi".into()),
            storage_class_name: Some("fast".into()),
            ..VolumeBackup::default()
        };
        let status = BackupStatus {
            start_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-11-21T02:00:01Z".parse().unwrap(),
            )),
            volumes: vec![volume.clone()],
            ..BackupStatus::default()
        };
        let record = record_context(&backup, &status, &volume);
        let job = backup_job(
            &backup,
            "data",
            "data",
            None,
            &repo,
            &MoverConfig::default(),
            &record,
        );
        let expected = serde_json::json!(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "labels": {
                    "app.kubernetes.io/managed-by": "backstop",
                    "backstop.dev/backup": "nightly-202611210200",
                    "backstop.dev/policy": "nightly",
                    "backstop.dev/pvc": "data",
                    "backstop.dev/role": "backup"
                },
                "name": "nightly-202611210200-data-25192fae",
                "namespace": "shop",
                "ownerReferences": [
                    {
                        "apiVersion": "backstop.dev/v1alpha1",
                        "controller": true,
                        "kind": "Backup",
                        "name": "nightly-202611210200",
                        "uid": "uid-1"
                    }
                ]
            },
            "spec": {
                "activeDeadlineSeconds": 21600,
                "backoffLimit": 0,
                "template": {
                    "metadata": {
                        "labels": {
                            "app.kubernetes.io/managed-by": "backstop",
                            "backstop.dev/backup": "nightly-202611210200",
                            "backstop.dev/policy": "nightly",
                            "backstop.dev/pvc": "data",
                            "backstop.dev/role": "backup"
                        }
                    },
                    "spec": {
                        "automountServiceAccountToken": false,
                        "containers": [
                            {
                                "args": [
                                    "mover",
                                    "backup",
                                    "--cluster",
                                    "",
                                    "--source",
                                    "/source",
                                    "--pvc",
                                    "data",
                                    "--dir",
                                    "shop/nightly-202611210200",
                                    "--compression",
                                    "zstd",
                                    "--record",
                                    r#"{"namespace":"shop","backup":"nightly-202611210200","policy":"nightly","scheduledTime":"2026-11-21T02:00:00Z","startTime":"2026-11-21T02:00:01Z","volumes":["data"],"capacity":"1Gi","storageClassName":"fast"}"#,
                                    "--repository",
                                    "/repository/cluster-a",
                                    "--termination-log",
                                    "/dev/termination-log"
                                ],
                                "env": [],
                                "image": "backstop:dev",
                                "imagePullPolicy": "IfNotPresent",
                                "name": "mover",
                                "resources": {
                                    "limits": {
                                        "memory": "1Gi"
                                    },
                                    "requests": {
                                        "cpu": "100m",
                                        "memory": "128Mi"
                                    }
                                },
                                "securityContext": {
                                    "allowPrivilegeEscalation": false,
                                    "capabilities": {
                                        "add": [
                                            "DAC_OVERRIDE"
                                        ],
                                        "drop": [
                                            "ALL"
                                        ]
                                    },
                                    "readOnlyRootFilesystem": true,
                                    "runAsGroup": 0,
                                    "runAsUser": 0,
                                    "seccompProfile": {
                                        "type": "RuntimeDefault"
                                    }
                                },
                                "terminationMessagePath": "/dev/termination-log",
                                "terminationMessagePolicy": "File",
                                "volumeMounts": [
                                    {
                                        "mountPath": "/source",
                                        "name": "source",
                                        "readOnly": true
                                    },
                                    {
                                        "mountPath": "/repository",
                                        "name": "repository"
                                    }
                                ]
                            }
                        ],
                        "hostNetwork": false,
                        "restartPolicy": "Never",
                        "volumes": [
                            {
                                "name": "source",
                                "persistentVolumeClaim": {
                                    "claimName": "data",
                                    "readOnly": true
                                }
                            },
                            {
                                "name": "repository",
                                "persistentVolumeClaim": {
                                    "claimName": "backups"
                                }
                            }
                        ]
                    }
                }
            }
        }
        );
        assert_eq!(serde_json::to_value(&job).unwrap(), expected);
    }

    #[test]
    fn a_repository_sub_path_of_only_slashes_is_the_volume_root() {
        let (_, mut repo) = fixtures();
        repo.spec.pvc.as_mut().unwrap().sub_path = Some("/".into());
        assert_eq!(location(&repo), Location::Dir(REPOSITORY_MOUNT.into()));
    }
}
