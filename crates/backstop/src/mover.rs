//! `backstop mover ...`: the data path inside mover pods. The command line is the operator's
//! `contract::Request` (`Request::to_args` writes it, `Command::request` reads it back). Each
//! command reports its result as JSON in the termination message: the result on success, a
//! `contract::Failure` on failure.

use anyhow::Context as _;
use backstop_api::ExistingDataPolicy;
use backstop_api::backup::ResticSnapshot;
use backstop_api::contract;
use backstop_api::contract::{
    BackupResult, Deleted, Failure, Forgotten, Location, Reason, Request, S3Location,
};
use backstop_api::ownership::Writer;
use backstop_api::record::{RECORD_SUFFIX, RecordContext, VerificationRecord};
use backstop_mover::backup::{self, BackupRequest, Compression};
use backstop_mover::catalog;
use backstop_mover::repository::{self, DirRepository, Repository, S3Config, S3Repository};
use backstop_mover::restic::{Labels, Restic};
use backstop_mover::{inventory, owner, report, restore, stream};
use clap::{Args, Subcommand};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How long a failing S3 request is retried when the request does not say.
const S3_RETRY_TIMEOUT_SECONDS: u64 = 60;

#[derive(Subcommand)]
pub enum Command {
    /// Count the files, directories, symlinks and bytes below a directory (never following links).
    Count {
        path: PathBuf,
        #[command(flatten)]
        report: Report,
    },
    /// Check that a repository can be used: write, read back and remove a small object; with
    /// `--restic`, also open the restic repository there (creating it when there is none).
    Probe {
        #[command(flatten)]
        repository: RepositoryArgs,
        /// The restic repository's root inside the repository (`<namespace>/_restic`).
        #[arg(long)]
        restic: Option<String>,
        #[command(flatten)]
        report: Report,
    },
    /// Back up a mounted volume into a repository.
    Backup {
        /// The mounted volume to read.
        #[arg(long)]
        source: PathBuf,
        #[command(flatten)]
        repository: RepositoryArgs,
        /// The PVC's name (names the artifact).
        #[arg(long)]
        pvc: String,
        /// The backup's directory inside the repository (`<namespace>/<backup>`).
        #[arg(long)]
        dir: String,
        #[arg(long, default_value = "zstd", value_parser = parse_compression)]
        compression: Compression,
        /// What to keep beside the manifest (JSON, `record::RecordContext`).
        #[arg(long, value_parser = parse_record)]
        record: Option<Box<RecordContext>>,
        #[command(flatten)]
        report: Report,
    },
    /// Restore a volume from a repository: stage, verify every digest, then commit.
    Restore {
        #[command(flatten)]
        repository: RepositoryArgs,
        /// The manifest's path inside the repository (`<namespace>/<backup>/<pvc>.manifest.jsonl.zst`).
        #[arg(long)]
        manifest: String,
        /// The mounted target volume.
        #[arg(long)]
        target: PathBuf,
        #[arg(long, default_value = "FailIfNotEmpty", value_parser = parse_policy)]
        existing_data_policy: ExistingDataPolicy,
        /// The artifact's BLAKE3 recorded when the backup completed: the manifest must name it.
        #[arg(long)]
        artifact_digest: Option<String>,
        /// The backup is not trusted with the target's privileges: create no device nodes and
        /// clear setuid/setgid bits.
        #[arg(long)]
        untrusted: bool,
        #[command(flatten)]
        report: Report,
    },
    /// Store what a command beside the mover writes into the pipe in `--stream-dir` (a command
    /// backup), only when the command exits 0 having written something.
    Dump {
        /// The directory shared with the command's container.
        #[arg(long)]
        stream_dir: PathBuf,
        #[command(flatten)]
        repository: RepositoryArgs,
        /// The stream's name (names the artifact).
        #[arg(long)]
        name: String,
        /// The backup's directory inside the repository (`<namespace>/<backup>`).
        #[arg(long)]
        dir: String,
        #[arg(long, default_value = "zstd", value_parser = parse_compression)]
        compression: Compression,
        /// What to keep beside the manifest (JSON, `record::RecordContext`).
        #[arg(long, value_parser = parse_record)]
        record: Option<Box<RecordContext>>,
        #[command(flatten)]
        report: Report,
    },
    /// Stage and verify a command backup's stream, then feed it through the pipe in
    /// `--stream-dir` to the restore command beside the mover.
    Load {
        #[command(flatten)]
        repository: RepositoryArgs,
        #[arg(long)]
        manifest: String,
        #[arg(long)]
        stream_dir: PathBuf,
        /// A directory only the mover sees, for the artifact while it is checked.
        #[arg(long)]
        staging: PathBuf,
        /// The artifact's BLAKE3 recorded when the backup completed: the manifest must name it.
        #[arg(long)]
        artifact_digest: Option<String>,
        /// The artifact's size recorded when the backup completed: a larger one is refused
        /// before it is copied.
        #[arg(long)]
        artifact_bytes: Option<u64>,
        #[command(flatten)]
        report: Report,
    },
    /// Check an artifact against its manifest without restoring anything.
    Verify {
        #[command(flatten)]
        repository: RepositoryArgs,
        #[arg(long)]
        manifest: String,
        /// The artifact's BLAKE3 recorded when the backup completed: the manifest must name it.
        #[arg(long)]
        artifact_digest: Option<String>,
        #[command(flatten)]
        report: Report,
    },
    /// Back up a mounted volume as one snapshot of a restic repository (password in
    /// RESTIC_PASSWORD).
    ResticBackup {
        #[command(flatten)]
        repository: RepositoryArgs,
        /// The restic repository's root inside the repository.
        #[arg(long)]
        root: String,
        #[arg(long)]
        source: PathBuf,
        /// The PVC's name: the snapshot's path is `/<pvc>`.
        #[arg(long)]
        pvc: String,
        /// restic's host (the namespace).
        #[arg(long)]
        host: String,
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[command(flatten)]
        report: Report,
    },
    /// Restore a restic snapshot into a mounted volume: stage, verify every blob, then commit.
    ResticRestore {
        #[command(flatten)]
        repository: RepositoryArgs,
        #[arg(long)]
        root: String,
        /// The snapshot's full id.
        #[arg(long)]
        snapshot: String,
        #[arg(long)]
        target: PathBuf,
        #[arg(long, default_value = "FailIfNotEmpty", value_parser = parse_policy)]
        existing_data_policy: ExistingDataPolicy,
        #[arg(long)]
        untrusted: bool,
        #[command(flatten)]
        report: Report,
    },
    /// Read and check every block of a restic snapshot, writing nothing.
    ResticVerify {
        #[command(flatten)]
        repository: RepositoryArgs,
        #[arg(long)]
        root: String,
        #[arg(long)]
        snapshot: String,
        #[command(flatten)]
        report: Report,
    },
    /// Remove restic snapshots (their data stays until prune).
    Forget {
        #[command(flatten)]
        repository: RepositoryArgs,
        #[arg(long)]
        root: String,
        #[arg(long = "snapshot")]
        snapshots: Vec<String>,
        /// Only snapshots tagged `backup=<this>` are forgotten.
        #[arg(long)]
        backup: String,
        #[command(flatten)]
        report: Report,
    },
    /// Create a Backup (labelled imported, with its record) for each whole backup of a
    /// namespace in the repository that has none, with the pod's own Kubernetes identity.
    Sync {
        #[command(flatten)]
        repository: RepositoryArgs,
        #[arg(long)]
        namespace: String,
        /// The BackupRepository the imported Backups belong to.
        #[arg(long)]
        repository_name: String,
        /// The restic repository's root, for a repository of format restic.
        #[arg(long)]
        restic: Option<String>,
        #[command(flatten)]
        report: Report,
    },
    /// Reclaim the space no restic snapshot uses (marked packs are removed a prune later).
    Prune {
        #[command(flatten)]
        repository: RepositoryArgs,
        #[arg(long)]
        root: String,
        /// Packs marked unused are removed only by a prune this much later.
        #[arg(long)]
        keep_delete_seconds: u64,
        #[command(flatten)]
        report: Report,
    },
    /// Keep a backup's latest conclusive verification in its directory.
    RecordVerification {
        #[command(flatten)]
        repository: RepositoryArgs,
        #[arg(long)]
        dir: String,
        /// The record (JSON, `record::VerificationRecord`).
        #[arg(long, value_parser = parse_verification)]
        verification: Box<VerificationRecord>,
        #[command(flatten)]
        report: Report,
    },
    /// Remove a backup's directory (artifacts and manifests) from a repository.
    Delete {
        #[command(flatten)]
        repository: RepositoryArgs,
        #[arg(long)]
        dir: String,
        #[command(flatten)]
        report: Report,
    },
}

/// Where the repository is: a directory (`--repository`) or an S3 bucket (`--s3-bucket`).
/// S3 credentials come from the environment, never from the command line.
#[derive(Args)]
pub struct RepositoryArgs {
    /// A directory repository's root.
    #[arg(
        long,
        required_unless_present = "s3_bucket",
        conflicts_with = "s3_bucket"
    )]
    repository: Option<PathBuf>,
    /// The bucket of an S3-compatible repository.
    #[arg(long)]
    s3_bucket: Option<String>,
    /// The S3 endpoint URL (AWS when absent), e.g. https://minio.example:9000.
    #[arg(long, requires = "s3_bucket")]
    s3_endpoint: Option<String>,
    /// Keys are stored under this prefix in the bucket.
    #[arg(long, default_value = "")]
    s3_prefix: String,
    #[arg(long)]
    s3_region: Option<String>,
    /// Path-style requests (endpoint/bucket/key), as MinIO-likes need.
    #[arg(long)]
    s3_force_path_style: bool,
    /// A PEM file with the CA certificate(s) of the endpoint.
    #[arg(long)]
    s3_ca_file: Option<String>,
    /// Accept any TLS certificate (testing only).
    #[arg(long)]
    s3_insecure_skip_tls_verify: bool,
    /// How long a failing S3 request is retried before the command fails.
    #[arg(long, env = "BACKSTOP_S3_RETRY_TIMEOUT_SECONDS")]
    s3_retry_timeout_seconds: Option<u64>,
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true, hide = true)]
    aws_access_key_id: Option<String>,
    #[arg(
        long,
        env = "AWS_SECRET_ACCESS_KEY",
        hide_env_values = true,
        hide = true
    )]
    aws_secret_access_key: Option<String>,
    #[arg(long, env = "AWS_SESSION_TOKEN", hide_env_values = true, hide = true)]
    aws_session_token: Option<String>,
    /// A restic repository's password (from the Secret named in passwordSecretRef).
    #[arg(long, env = "RESTIC_PASSWORD", hide_env_values = true, hide = true)]
    restic_password: Option<String>,
    /// The cluster this command writes for: a namespace of the repository another cluster owns
    /// (its marker `_owner.json`) is not written. Without it (a person running the mover by
    /// hand) the marker is neither checked nor written.
    #[arg(long)]
    cluster: Option<String>,
    /// The owner this cluster takes the namespace over from (the BackupRepository's
    /// spec.takeOverFrom).
    #[arg(long, requires = "cluster")]
    take_over_from: Option<String>,
}

impl RepositoryArgs {
    /// Who writes, when the command line says.
    fn writer(&self) -> Option<Writer> {
        Some(Writer {
            cluster: self.cluster.clone()?,
            take_over_from: self.take_over_from.clone(),
        })
    }

    fn location(&self) -> Location {
        match (&self.repository, &self.s3_bucket) {
            (Some(root), _) => Location::Dir(root.to_string_lossy().into_owned()),
            (None, bucket) => Location::S3(S3Location {
                bucket: bucket.clone().unwrap_or_default(),
                endpoint: self.s3_endpoint.clone(),
                prefix: self.s3_prefix.clone(),
                region: self.s3_region.clone(),
                force_path_style: self.s3_force_path_style,
                ca_file: self.s3_ca_file.clone(),
                insecure_skip_tls_verify: self.s3_insecure_skip_tls_verify,
                retry_timeout_seconds: self.s3_retry_timeout_seconds,
            }),
        }
    }

    /// Opens the repository `location` names, with the S3 credentials of the environment; a
    /// failure carries the condition reason.
    fn open(&self, location: &Location) -> Result<Box<dyn Repository>, (Reason, String)> {
        match location {
            Location::Dir(root) => Ok(Box::new(DirRepository::new(PathBuf::from(root)))),
            Location::S3(s3) if s3.bucket.is_empty() => Err((
                Reason::InvalidSpec,
                "name a repository: --repository DIR or --s3-bucket NAME".into(),
            )),
            Location::S3(s3) => S3Repository::new(&S3Config {
                endpoint: s3.endpoint.clone(),
                bucket: s3.bucket.clone(),
                prefix: s3.prefix.clone(),
                region: s3.region.clone(),
                force_path_style: s3.force_path_style,
                access_key_id: self.aws_access_key_id.clone().unwrap_or_default(),
                secret_access_key: self.aws_secret_access_key.clone().unwrap_or_default(),
                session_token: self.aws_session_token.clone(),
                ca_file: s3.ca_file.as_ref().map(PathBuf::from),
                insecure_skip_tls_verify: s3.insecure_skip_tls_verify,
                retry_timeout: std::time::Duration::from_secs(
                    s3.retry_timeout_seconds.unwrap_or(S3_RETRY_TIMEOUT_SECONDS),
                ),
            })
            .map(|r| Box::new(r) as Box<dyn Repository>)
            .map_err(|f| (f.reason, f.message)),
        }
    }
}

#[derive(Args)]
pub struct Report {
    /// Also write the result as JSON to this file (the container's termination message path).
    #[arg(long, value_name = "FILE")]
    termination_log: Option<PathBuf>,
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    s.parse()
}

fn parse_record(s: &str) -> Result<Box<RecordContext>, String> {
    serde_json::from_str(s).map_err(|e| format!("not a record context: {e}"))
}

fn parse_verification(s: &str) -> Result<Box<VerificationRecord>, String> {
    serde_json::from_str(s).map_err(|e| format!("not a verification record: {e}"))
}

fn parse_policy(s: &str) -> Result<ExistingDataPolicy, String> {
    s.parse()
}

impl Command {
    /// The operator's request this command line carries, with the repository's credentials and
    /// where to report; `None` for `count`, a diagnostic no operator asks for.
    fn request(self) -> Option<(Request, RepositoryArgs, Report)> {
        let text = |path: PathBuf| path.to_string_lossy().into_owned();
        Some(match self {
            Command::Count { .. } => return None,
            Command::Probe {
                repository,
                restic,
                report,
            } => (
                Request::Probe {
                    repository: repository.location(),
                    restic,
                },
                repository,
                report,
            ),
            Command::ResticBackup {
                repository,
                root,
                source,
                pvc,
                host,
                tags,
                report,
            } => (
                Request::ResticBackup {
                    repository: repository.location(),
                    root,
                    source: text(source),
                    pvc,
                    host,
                    tags,
                },
                repository,
                report,
            ),
            Command::ResticRestore {
                repository,
                root,
                snapshot,
                target,
                existing_data_policy,
                untrusted,
                report,
            } => (
                Request::ResticRestore {
                    repository: repository.location(),
                    root,
                    snapshot,
                    target: text(target),
                    existing_data_policy,
                    untrusted,
                },
                repository,
                report,
            ),
            Command::ResticVerify {
                repository,
                root,
                snapshot,
                report,
            } => (
                Request::ResticVerify {
                    repository: repository.location(),
                    root,
                    snapshot,
                },
                repository,
                report,
            ),
            Command::Forget {
                repository,
                root,
                snapshots,
                backup,
                report,
            } => (
                Request::Forget {
                    repository: repository.location(),
                    root,
                    snapshots,
                    backup,
                },
                repository,
                report,
            ),
            Command::Sync {
                repository,
                namespace,
                repository_name,
                restic,
                report,
            } => (
                Request::Sync {
                    repository: repository.location(),
                    namespace,
                    repository_name,
                    restic,
                },
                repository,
                report,
            ),
            Command::Prune {
                repository,
                root,
                keep_delete_seconds,
                report,
            } => (
                Request::Prune {
                    repository: repository.location(),
                    root,
                    keep_delete_seconds,
                },
                repository,
                report,
            ),
            Command::Backup {
                source,
                repository,
                pvc,
                dir,
                compression,
                record,
                report,
            } => (
                Request::Backup {
                    repository: repository.location(),
                    source: text(source),
                    pvc,
                    dir,
                    compression,
                    record: record.map(|r| *r),
                },
                repository,
                report,
            ),
            Command::Dump {
                stream_dir,
                repository,
                name,
                dir,
                compression,
                record,
                report,
            } => (
                Request::Dump {
                    repository: repository.location(),
                    stream_dir: text(stream_dir),
                    name,
                    dir,
                    compression,
                    record: record.map(|r| *r),
                },
                repository,
                report,
            ),
            Command::Load {
                repository,
                manifest,
                stream_dir,
                staging,
                artifact_digest,
                artifact_bytes,
                report,
            } => (
                Request::Load {
                    repository: repository.location(),
                    manifest,
                    stream_dir: text(stream_dir),
                    staging: text(staging),
                    artifact_digest,
                    artifact_bytes,
                },
                repository,
                report,
            ),
            Command::Restore {
                repository,
                manifest,
                target,
                existing_data_policy,
                artifact_digest,
                untrusted,
                report,
            } => (
                Request::Restore {
                    repository: repository.location(),
                    manifest,
                    target: text(target),
                    existing_data_policy,
                    artifact_digest,
                    untrusted,
                },
                repository,
                report,
            ),
            Command::Verify {
                repository,
                manifest,
                artifact_digest,
                report,
            } => (
                Request::Verify {
                    repository: repository.location(),
                    manifest,
                    artifact_digest,
                },
                repository,
                report,
            ),
            Command::RecordVerification {
                repository,
                dir,
                verification,
                report,
            } => (
                Request::RecordVerification {
                    repository: repository.location(),
                    dir,
                    record: *verification,
                },
                repository,
                report,
            ),
            Command::Delete {
                repository,
                dir,
                report,
            } => (
                Request::Delete {
                    repository: repository.location(),
                    dir,
                },
                repository,
                report,
            ),
        })
    }
}

pub fn main(cmd: Command) -> anyhow::Result<()> {
    if let Command::Count { path, report } = &cmd {
        let counted = inventory::take(path);
        return finish(
            report,
            counted.map_err(|e| (Reason::SourceUnreadable, e.to_string())),
        );
    }
    let Some((request, credentials, report)) = cmd.request() else {
        return Ok(());
    };
    let stream_dir = match &request {
        Request::Dump { stream_dir, .. } | Request::Load { stream_dir, .. } => {
            Some(PathBuf::from(stream_dir))
        }
        _ => None,
    };
    let password = credentials.restic_password.clone().unwrap_or_default();
    let writer = credentials.writer();
    let result = credentials.open(request.repository()).and_then(|repo| {
        if let (Some(namespace), Some(writer)) = (request.writes(), &writer) {
            owner::claim(repo.as_ref(), namespace, writer)?;
        }
        perform(Arc::from(repo), &password, request)
    });
    if result.is_err()
        && let Some(dir) = &stream_dir
    {
        // The command beside the mover must not wait for a stream that will never flow.
        stream::abandon(dir);
    }
    finish(&report, result)
}

/// Carries out `request` on `repo` (`password`: a restic repository's); the result as JSON, or
/// the failure's reason and message.
fn perform(
    store: Arc<dyn Repository>,
    password: &str,
    request: Request,
) -> Result<serde_json::Value, (Reason, String)> {
    let repo = store.as_ref();
    let json = |value: Result<serde_json::Value, serde_json::Error>| {
        value.map_err(|e| (Reason::MoverFailed, e.to_string()))
    };
    let restic = |root: &str, create: bool| {
        Restic::open(store.clone(), root, password, create).map_err(|e| (e.reason, e.message))
    };
    // Opened as restic would: a reader (restore, verify: the repository is mounted read-only)
    // waits while an exclusive lock stands; a backup holds a shared lock, a removal an
    // exclusive one.
    let reader = |root: &str| {
        let (opened, _) = restic(root, false)?;
        opened
            .wait_for_exclusive(backstop_mover::restic::LOCK_PATIENCE)
            .map_err(|e| (e.reason, e.message))?;
        Ok::<_, (Reason, String)>(opened)
    };
    let locked = |root: &str, exclusive: bool| {
        let (opened, _) = restic(root, false)?;
        let held = opened
            .lock(exclusive, backstop_mover::restic::LOCK_PATIENCE)
            .map_err(|e| (e.reason, e.message))?;
        Ok::<_, (Reason, String)>((opened, held))
    };
    match request {
        Request::Probe { restic: root, .. } => {
            let mut probed = repository::probe(repo).map_err(|e| {
                (
                    e.reason().unwrap_or(Reason::RepositoryUnusable),
                    e.to_string(),
                )
            })?;
            if let Some(root) = root {
                probed.restic_initialised = restic(&root, true)?.1;
            }
            json(serde_json::to_value(probed))
        }
        Request::ResticBackup {
            root,
            source,
            pvc,
            host,
            tags,
            ..
        } => {
            let labels = Labels {
                host,
                path: PathBuf::from(format!("/{pvc}")),
                tags,
            };
            let (opened, _held) = locked(&root, false)?;
            let snap = opened
                .backup(Path::new(&source), &labels)
                .map_err(|e| (e.reason, e.message))?;
            json(serde_json::to_value(BackupResult {
                pvc,
                artifact: root,
                bytes: snap.bytes_added,
                digest: snap.id.clone(),
                files: snap.files,
                source_bytes: snap.bytes,
                changed_while_reading: snap.changed,
                changed_files: Vec::new(),
                restic: Some(ResticSnapshot {
                    id: snap.id,
                    parent: snap.parent,
                    files_read: snap.files_read,
                }),
            }))
        }
        Request::ResticRestore {
            root,
            snapshot,
            target,
            existing_data_policy,
            untrusted,
            ..
        } => {
            let options = restore::RestoreOptions {
                policy: existing_data_policy,
                recorded_digest: None,
                untrusted,
            };
            let restored = reader(&root)?
                .restore(&snapshot, Path::new(&target), &options)
                .map_err(|e| (e.reason(), e.to_string()))?;
            json(serde_json::to_value(restored))
        }
        Request::ResticVerify { root, snapshot, .. } => {
            let verified = reader(&root)?
                .verify(&snapshot)
                .map_err(|e| (e.reason(), e.to_string()))?;
            json(serde_json::to_value(verified))
        }
        Request::Forget {
            root,
            snapshots,
            backup,
            ..
        } => {
            let (opened, _held) = locked(&root, true)?;
            let forgotten = opened
                .forget(&snapshots, &backup)
                .map_err(|e| (e.reason, e.message))?;
            // The backup's directory beside the restic repository holds its verification.
            if let Some(namespace) = contract::namespace_of_restic_root(&root) {
                repo.remove_prefix(&contract::backup_dir(namespace, &backup))
                    .map_err(|e| (Reason::ArtifactsNotRemoved, e.to_string()))?;
            }
            json(serde_json::to_value(Forgotten { forgotten }))
        }
        Request::Prune {
            root,
            keep_delete_seconds,
            ..
        } => {
            let keep = std::time::Duration::from_secs(keep_delete_seconds);
            let (opened, _held) = locked(&root, true)?;
            let pruned = opened
                .prune(keep, keep_delete_seconds == 0)
                .map_err(|e| (e.reason, e.message))?;
            json(serde_json::to_value(pruned))
        }
        Request::Sync {
            namespace,
            repository_name,
            restic: root,
            ..
        } => {
            let request = crate::sync::SyncRequest {
                namespace: &namespace,
                repository: &repository_name,
                restic: root.as_deref(),
                password,
            };
            json(serde_json::to_value(crate::sync::sync(
                store.clone(),
                &request,
            )?))
        }
        Request::Backup {
            source,
            pvc,
            dir,
            compression,
            record,
            ..
        } => {
            let request = BackupRequest {
                source: Path::new(&source),
                pvc: &pvc,
                dir: &dir,
                compression,
                created_at: jiff::Timestamp::now().to_string(),
            };
            let backed_up = backup::run(repo, &request).map_err(|e| backup_failure(&e))?;
            keep_record(repo, &dir, record.as_ref(), &backed_up)?;
            json(serde_json::to_value(backed_up))
        }
        Request::Dump {
            stream_dir,
            name,
            dir,
            compression,
            record,
            ..
        } => {
            let request = stream::DumpRequest {
                stream_dir: Path::new(&stream_dir),
                name: &name,
                dir: &dir,
                compression,
                created_at: jiff::Timestamp::now().to_string(),
            };
            let dumped = stream::dump(repo, &request).map_err(|e| backup_failure(&e))?;
            keep_record(repo, &dir, record.as_ref(), &dumped)?;
            json(serde_json::to_value(dumped))
        }
        Request::Load {
            manifest,
            stream_dir,
            staging,
            artifact_digest,
            artifact_bytes,
            ..
        } => {
            let request = stream::LoadRequest {
                manifest: &manifest,
                stream_dir: Path::new(&stream_dir),
                staging: Path::new(&staging),
                recorded_digest: artifact_digest.as_deref(),
                recorded_bytes: artifact_bytes,
            };
            let loaded = stream::load(repo, &request).map_err(|e| (e.reason(), e.to_string()))?;
            json(serde_json::to_value(loaded))
        }
        Request::Restore {
            manifest,
            target,
            existing_data_policy,
            artifact_digest,
            untrusted,
            ..
        } => {
            let options = restore::RestoreOptions {
                policy: existing_data_policy,
                recorded_digest: artifact_digest.as_deref(),
                untrusted,
            };
            let restored = restore::restore(repo, &manifest, Path::new(&target), &options)
                .map_err(|e| (e.reason(), e.to_string()))?;
            json(serde_json::to_value(restored))
        }
        Request::Verify {
            manifest,
            artifact_digest,
            ..
        } => {
            let verified = restore::verify(repo, &manifest, artifact_digest.as_deref())
                .map_err(|e| (e.reason(), e.to_string()))?;
            json(serde_json::to_value(verified))
        }
        Request::RecordVerification { dir, record, .. } => {
            let key = backstop_api::record::verification_key(&dir);
            let text = serde_json::to_vec_pretty(&record)
                .map_err(|e| (Reason::MoverFailed, e.to_string()))?;
            repo.put(&key, &text).map_err(|e| {
                (
                    e.reason().unwrap_or(Reason::RepositoryWriteFailed),
                    e.to_string(),
                )
            })?;
            Ok(serde_json::json!({"recorded": key}))
        }
        Request::Delete { dir, .. } => {
            // The records go first: a backup half removed is never whole for a sync.
            let records = repo
                .list(&dir)
                .map_err(|e| (Reason::ArtifactsNotRemoved, e.to_string()))?;
            let own = |key: &str| {
                key.strip_prefix(&dir)
                    .is_some_and(|k| k.starts_with('/') && k.ends_with(RECORD_SUFFIX))
            };
            for (key, _) in records.iter().filter(|(k, _)| own(k)) {
                repo.remove(key)
                    .map_err(|e| (Reason::ArtifactsNotRemoved, e.to_string()))?;
            }
            repo.remove_prefix(&dir)
                .map_err(|e| (Reason::ArtifactsNotRemoved, e.to_string()))?;
            json(serde_json::to_value(Deleted { deleted: dir }))
        }
    }
}

/// Keeps the record of a volume just backed up, when the operator sent one: without it a
/// cluster that never saw the backup could not import it, so a record that cannot be written
/// fails the backup.
fn keep_record(
    repo: &dyn Repository,
    dir: &str,
    record: Option<&RecordContext>,
    result: &BackupResult,
) -> Result<(), (Reason, String)> {
    let Some(context) = record else {
        return Ok(());
    };
    catalog::keep(repo, dir, context, result, jiff::Timestamp::now()).map_err(|e| {
        (
            e.reason().unwrap_or(Reason::RepositoryWriteFailed),
            format!("the backup is stored but its record could not be written: {e}"),
        )
    })
}

/// The condition reason and message for a failed backup.
fn backup_failure(e: &backup::BackupError) -> (Reason, String) {
    match e.reason() {
        Reason::RepositoryFull => (
            Reason::RepositoryFull,
            format!("the repository volume is full: {e}; free space or grow it"),
        ),
        reason => (reason, e.to_string()),
    }
}

/// Prints the outcome, writes it to the termination log, and fails the process on failure.
fn finish<T: Serialize>(
    report: &Report,
    result: Result<T, (Reason, String)>,
) -> anyhow::Result<()> {
    match result {
        Ok(value) => {
            println!("{}", serde_json::to_string(&value)?);
            write_log(report.termination_log.as_deref(), &value)
        }
        Err((reason, error)) => {
            let error = backstop_api::condition::truncate(error, 3000);
            write_log(
                report.termination_log.as_deref(),
                &Failure {
                    error: error.clone(),
                    reason,
                },
            )?;
            anyhow::bail!("{reason}: {error}")
        }
    }
}

fn write_log<T: Serialize>(path: Option<&Path>, value: &T) -> anyhow::Result<()> {
    if let Some(path) = path {
        report::write_termination_message(path, value)
            .with_context(|| format!("writing the result to {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Mover {
        #[command(subcommand)]
        command: Command,
    }

    /// What the mover reads from the command line the operator writes for `request`.
    fn read_back(request: &Request) -> Request {
        let writer = Writer {
            cluster: "c1".into(),
            take_over_from: Some("c0".into()),
        };
        let args = request.to_args(&writer);
        assert_eq!(args[0], "mover");
        assert_eq!(
            args[args.len() - 2..],
            ["--termination-log", backstop_api::contract::TERMINATION_LOG]
        );
        let parsed = Mover::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let (read, repository, report) = parsed.command.request().expect("a request");
        let expected = read.writes().is_some().then_some(writer);
        assert_eq!(repository.writer(), expected, "{args:?}");
        assert_eq!(
            report.termination_log.as_deref(),
            Some(Path::new(backstop_api::contract::TERMINATION_LOG))
        );
        read
    }

    fn s3(full: bool) -> Location {
        Location::S3(S3Location {
            bucket: "backups".into(),
            endpoint: full.then(|| "https://minio.example:9000".into()),
            prefix: if full {
                "team-a/".into()
            } else {
                String::new()
            },
            region: full.then(|| "eu-west-3".into()),
            force_path_style: full,
            ca_file: full.then(|| "/etc/backstop/s3-ca/ca.crt".into()),
            insecure_skip_tls_verify: full,
            retry_timeout_seconds: full.then_some(10),
        })
    }

    #[test]
    fn every_request_the_operator_writes_reads_back_the_same() {
        let dir = Location::Dir("/repository/sub".into());
        let requests = [
            Request::Probe {
                repository: s3(true),
                restic: None,
            },
            Request::Probe {
                repository: s3(false),
                restic: Some("shop/_restic".into()),
            },
            Request::ResticBackup {
                repository: dir.clone(),
                root: "shop/_restic".into(),
                source: "/source".into(),
                pvc: "db".into(),
                host: "shop".into(),
                tags: vec!["backstop".into(), "pvc=db".into()],
            },
            Request::ResticRestore {
                repository: s3(true),
                root: "shop/_restic".into(),
                snapshot: "ab".repeat(32),
                target: "/target".into(),
                existing_data_policy: ExistingDataPolicy::Overwrite,
                untrusted: true,
            },
            Request::ResticVerify {
                repository: dir.clone(),
                root: "shop/_restic".into(),
                snapshot: "ef".repeat(32),
            },
            Request::Forget {
                repository: s3(false),
                root: "shop/_restic".into(),
                snapshots: vec!["ab".repeat(32), "cd".repeat(32)],
                backup: "nightly".into(),
            },
            Request::Sync {
                repository: s3(true),
                namespace: "shop".into(),
                repository_name: "s3".into(),
                restic: None,
            },
            Request::Sync {
                repository: dir.clone(),
                namespace: "shop".into(),
                repository_name: "nfs".into(),
                restic: Some("shop/_restic".into()),
            },
            Request::Prune {
                repository: dir.clone(),
                root: "shop/_restic".into(),
                keep_delete_seconds: 82_800,
            },
            Request::Backup {
                repository: dir.clone(),
                source: "/source".into(),
                pvc: "db".into(),
                dir: "shop/nightly".into(),
                compression: Compression::Gzip,
                record: Some(backstop_api::record::RecordContext {
                    namespace: "shop".into(),
                    backup: "nightly".into(),
                    policy: Some("nightly".into()),
                    start_time: "2026-11-28T02:00:00Z".parse().unwrap(),
                    volumes: vec!["db".into(), "logs".into()],
                    capacity: Some("1Gi".into()),
                    strategy: Some(backstop_api::Strategy::default()),
                    ..Default::default()
                }),
            },
            Request::Dump {
                repository: s3(false),
                stream_dir: "/backstop-stream".into(),
                name: "dump".into(),
                dir: "shop/nightly".into(),
                compression: Compression::None,
                record: None,
            },
            Request::Load {
                repository: dir.clone(),
                manifest: "shop/nightly/dump.manifest.jsonl.zst".into(),
                stream_dir: "/backstop-stream".into(),
                staging: "/backstop-staging".into(),
                artifact_digest: Some("cd34".into()),
                artifact_bytes: Some(4096),
            },
            Request::Restore {
                repository: s3(true),
                manifest: "shop/nightly/db.manifest.jsonl.zst".into(),
                target: "/target".into(),
                existing_data_policy: ExistingDataPolicy::Merge,
                artifact_digest: Some("ab12".into()),
                untrusted: true,
            },
            Request::Restore {
                repository: dir.clone(),
                manifest: "shop/nightly/db.manifest.jsonl.zst".into(),
                target: "/target".into(),
                existing_data_policy: ExistingDataPolicy::FailIfNotEmpty,
                artifact_digest: None,
                untrusted: false,
            },
            Request::Verify {
                repository: dir.clone(),
                manifest: "shop/nightly/db.manifest.jsonl.zst".into(),
                artifact_digest: Some("ab12".into()),
            },
            Request::Delete {
                repository: s3(false),
                dir: "shop/nightly".into(),
            },
            Request::RecordVerification {
                repository: dir.clone(),
                dir: "shop/nightly".into(),
                record: VerificationRecord {
                    version: 1,
                    backup: "nightly".into(),
                    request: "weekly 2026-11-29".into(),
                    mode: backstop_api::VerificationMode::RestoreDrill,
                    phase: backstop_api::VerificationPhase::Failed,
                    completion_time: "2026-11-29T04:00:00Z".parse().unwrap(),
                    reason: "DrillCheckFailed".into(),
                    message: "the check exited 1".into(),
                },
            },
        ];
        for request in requests {
            assert_eq!(read_back(&request), request);
        }
    }

    #[test]
    fn credentials_never_travel_on_the_command_line() {
        let args = Request::Probe {
            repository: s3(true),
            restic: Some("shop/_restic".into()),
        }
        .to_args(&Writer::default())
        .join(" ");
        assert!(!args.to_lowercase().contains("aws"), "{args}");
        assert!(!args.to_lowercase().contains("password"), "{args}");
    }
}
