//! `backstop mover ...`: the data path inside mover pods. Each command reports its result as JSON
//! in the termination message: the result on success, `{"error", "reason"}` on failure.

use anyhow::Context as _;
use backstop_api::ExistingDataPolicy;
use backstop_mover::backup::{self, BackupRequest, Compression};
use backstop_mover::repository::DirRepository;
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
    /// Back up a mounted volume into a directory repository.
    Backup {
        /// The mounted volume to read.
        #[arg(long)]
        source: PathBuf,
        /// The repository's root directory.
        #[arg(long)]
        repository: PathBuf,
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
    /// Restore a volume from a directory repository: stage, verify every digest, then commit.
    Restore {
        #[arg(long)]
        repository: PathBuf,
        /// The manifest's path inside the repository (`<namespace>/<backup>/<pvc>.manifest.json`).
        #[arg(long)]
        manifest: String,
        /// The mounted target volume.
        #[arg(long)]
        target: PathBuf,
        #[arg(long, default_value = "FailIfNotEmpty", value_parser = parse_policy)]
        existing_data_policy: ExistingDataPolicy,
        #[command(flatten)]
        report: Report,
    },
    /// Check an artifact against its manifest without restoring anything.
    Verify {
        #[arg(long)]
        repository: PathBuf,
        #[arg(long)]
        manifest: String,
        #[command(flatten)]
        report: Report,
    },
    /// Remove a backup's directory (artifacts and manifests) from a directory repository.
    Delete {
        #[arg(long)]
        repository: PathBuf,
        #[arg(long)]
        dir: String,
        #[command(flatten)]
        report: Report,
    },
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
        Command::Backup {
            source,
            repository,
            pvc,
            dir,
            compression,
            report,
        } => {
            let repo = DirRepository::new(repository);
            let request = BackupRequest {
                source: &source,
                pvc: &pvc,
                dir: &dir,
                compression,
                created_at: jiff::Timestamp::now().to_string(),
            };
            let result = backup::run(&repo, &request).map_err(|e| {
                let reason = match &e {
                    backup::BackupError::Repository(r) if r.is_full() => "RepositoryFull",
                    backup::BackupError::Repository(_) => "RepositoryWriteFailed",
                    backup::BackupError::Archive(backstop_mover::archive::ArchiveError::Write(
                        err,
                    )) if err.raw_os_error() == Some(28) => "RepositoryFull",
                    backup::BackupError::Archive(backstop_mover::archive::ArchiveError::Write(
                        _,
                    )) => "RepositoryWriteFailed",
                    _ => "SourceUnreadable",
                };
                let message = if reason == "RepositoryFull" {
                    format!("the repository volume is full: {e}; free space or grow it")
                } else {
                    e.to_string()
                };
                (reason, message)
            });
            finish(&report, result)
        }
        Command::Restore {
            repository,
            manifest,
            target,
            existing_data_policy,
            report,
        } => {
            let repo = DirRepository::new(repository);
            let result = restore::restore(&repo, &manifest, &target, existing_data_policy)
                .map_err(|e| (e.reason(), e.to_string()));
            finish(&report, result)
        }
        Command::Verify {
            repository,
            manifest,
            report,
        } => {
            let repo = DirRepository::new(repository);
            let result = restore::verify(&repo, &manifest).map_err(|e| (e.reason(), e.to_string()));
            finish(&report, result)
        }
        Command::Delete {
            repository,
            dir,
            report,
        } => {
            let repo = DirRepository::new(repository);
            let result = repo
                .remove_prefix(&dir)
                .map(|()| serde_json::json!({"deleted": dir}))
                .map_err(|e| ("ArtifactsNotRemoved", e.to_string()));
            finish(&report, result)
        }
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
