//! `backstop mover ...`: the data path inside mover pods. Each command reports its result as JSON
//! in the termination message: the result on success, `{"error", "reason"}` on failure.

use anyhow::Context as _;
use backstop_api::ExistingDataPolicy;
use backstop_mover::backup::{self, BackupRequest, Compression};
use backstop_mover::repository::{self, DirRepository, Repository, S3Config, S3Repository};
use backstop_mover::{inventory, report, restore};
use clap::{Args, Subcommand};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum Command {
    /// Count the files, directories, symlinks and bytes below a directory (never following links).
    Count {
        path: PathBuf,
        #[command(flatten)]
        report: Report,
    },
    /// Check that a repository can be used: write, read back and remove a small object.
    Probe {
        #[command(flatten)]
        repository: RepositoryArgs,
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
        #[command(flatten)]
        report: Report,
    },
    /// Restore a volume from a repository: stage, verify every digest, then commit.
    Restore {
        #[command(flatten)]
        repository: RepositoryArgs,
        /// The manifest's path inside the repository (`<namespace>/<backup>/<pvc>.manifest.json`).
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
    s3_ca_file: Option<PathBuf>,
    /// Accept any TLS certificate (testing only).
    #[arg(long)]
    s3_insecure_skip_tls_verify: bool,
    /// How long a failing S3 request is retried before the command fails.
    #[arg(long, env = "BACKSTOP_S3_RETRY_TIMEOUT_SECONDS", default_value_t = 60)]
    s3_retry_timeout_seconds: u64,
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
}

impl RepositoryArgs {
    /// Opens the repository; a failure carries the condition reason.
    fn open(self) -> Result<Box<dyn Repository>, (&'static str, String)> {
        match (self.repository, self.s3_bucket) {
            (Some(root), _) => Ok(Box::new(DirRepository::new(root))),
            (None, Some(bucket)) => S3Repository::new(&S3Config {
                endpoint: self.s3_endpoint,
                bucket,
                prefix: self.s3_prefix,
                region: self.s3_region,
                force_path_style: self.s3_force_path_style,
                access_key_id: self.aws_access_key_id.unwrap_or_default(),
                secret_access_key: self.aws_secret_access_key.unwrap_or_default(),
                session_token: self.aws_session_token,
                ca_file: self.s3_ca_file,
                insecure_skip_tls_verify: self.s3_insecure_skip_tls_verify,
                retry_timeout: std::time::Duration::from_secs(self.s3_retry_timeout_seconds),
            })
            .map(|r| Box::new(r) as Box<dyn Repository>)
            .map_err(|f| (f.reason, f.message)),
            (None, None) => Err((
                "InvalidSpec",
                "name a repository: --repository DIR or --s3-bucket NAME".into(),
            )),
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

fn parse_policy(s: &str) -> Result<ExistingDataPolicy, String> {
    s.parse()
}

#[derive(Serialize)]
struct Failure {
    error: String,
    reason: &'static str,
}

pub fn main(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Count { path, report } => {
            let counted = inventory::take(&path);
            finish(
                &report,
                counted.map_err(|e| ("SourceUnreadable", e.to_string())),
            )
        }
        Command::Probe { repository, report } => {
            let result = repository.open().and_then(|repo| {
                repository::probe(repo.as_ref())
                    .map_err(|e| (e.reason().unwrap_or("RepositoryUnusable"), e.to_string()))
            });
            finish(&report, result)
        }
        Command::Backup {
            source,
            repository,
            pvc,
            dir,
            compression,
            report,
        } => {
            let request = BackupRequest {
                source: &source,
                pvc: &pvc,
                dir: &dir,
                compression,
                created_at: jiff::Timestamp::now().to_string(),
            };
            let result = repository.open().and_then(|repo| {
                backup::run(repo.as_ref(), &request).map_err(|e| backup_failure(&e))
            });
            finish(&report, result)
        }
        Command::Restore {
            repository,
            manifest,
            target,
            existing_data_policy,
            artifact_digest,
            untrusted,
            report,
        } => {
            let result = repository.open().and_then(|repo| {
                let options = restore::RestoreOptions {
                    policy: existing_data_policy,
                    recorded_digest: artifact_digest.as_deref(),
                    untrusted,
                };
                restore::restore(repo.as_ref(), &manifest, &target, &options)
                    .map_err(|e| (e.reason(), e.to_string()))
            });
            finish(&report, result)
        }
        Command::Verify {
            repository,
            manifest,
            artifact_digest,
            report,
        } => {
            let result = repository.open().and_then(|repo| {
                restore::verify(repo.as_ref(), &manifest, artifact_digest.as_deref())
                    .map_err(|e| (e.reason(), e.to_string()))
            });
            finish(&report, result)
        }
        Command::Delete {
            repository,
            dir,
            report,
        } => {
            let result = repository.open().and_then(|repo| {
                repo.remove_prefix(&dir)
                    .map(|()| serde_json::json!({"deleted": dir}))
                    .map_err(|e| ("ArtifactsNotRemoved", e.to_string()))
            });
            finish(&report, result)
        }
    }
}

/// The condition reason and message for a failed backup.
fn backup_failure(e: &backup::BackupError) -> (&'static str, String) {
    match e.reason() {
        repository::REPOSITORY_FULL => (
            repository::REPOSITORY_FULL,
            format!("the repository volume is full: {e}; free space or grow it"),
        ),
        reason => (reason, e.to_string()),
    }
}

/// Prints the outcome, writes it to the termination log, and fails the process on failure.
fn finish<T: Serialize>(
    report: &Report,
    result: Result<T, (&'static str, String)>,
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
