//! The contract between the operator and the mover, written once: what the operator asks a mover
//! pod to do (`Request`, turned into its command line by `to_args`), where things are mounted,
//! where the repository keeps a backup's objects, and what the mover reports back in its
//! termination message (`BackupResult`, `RestoreResult`, `ProbeResult`, `Deleted`, or a
//! `Failure` with a `Reason`). The mover's command line parses into `Request` again; a test there
//! checks that every request survives the trip.

use crate::ExistingDataPolicy;
use crate::ownership::Writer;
use crate::record::{RecordContext, VerificationRecord};
use crate::repository::Compression;
use serde::{Deserialize, Serialize};

/// Where the mover writes its result; the kubelet copies it into the pod's status.
pub const TERMINATION_LOG: &str = "/dev/termination-log";
/// Where a backup's source volume is mounted (read-only).
pub const SOURCE_MOUNT: &str = "/source";
/// Where a shared-storage repository's volume is mounted.
pub const REPOSITORY_MOUNT: &str = "/repository";
/// Where a restore's target volume is mounted.
pub const TARGET_MOUNT: &str = "/target";
/// Where an S3 endpoint's CA bundle Secret is mounted.
pub const CA_MOUNT: &str = "/etc/backstop/s3-ca";

/// Where a command backup's stream passes from the user's container to the mover: an emptyDir
/// both mount. The mover makes the named pipe `STREAM_PIPE` in it; the wrapped command (see
/// `DUMP_SCRIPT`) leaves its exit status in `STREAM_EXIT` and the end of what it wrote to
/// stderr in `STREAM_OUTPUT`, in that order, each renamed into place when complete. The mover
/// leaves `STREAM_ABORT` when it gives up before the pipe is usable.
pub const STREAM_MOUNT: &str = "/backstop-stream";
pub const STREAM_PIPE: &str = "stream";
pub const STREAM_EXIT: &str = "exit";
pub const STREAM_OUTPUT: &str = "output";
pub const STREAM_ABORT: &str = "abort";
/// Where a stream restore keeps the artifact while it is verified (an emptyDir only the mover
/// mounts: the restore command never sees an unverified byte).
pub const STREAM_STAGING_MOUNT: &str = "/backstop-staging";
/// How much of the end of a command's output is kept for its failure message.
pub const STREAM_OUTPUT_BYTES: usize = 2048;

/// What the user's dump container runs: `sh -c DUMP_SCRIPT <STREAM_MOUNT> <program> <args>...`.
/// It waits for the mover's pipe, runs the program with its standard output into the pipe and
/// its stderr into `tail`, then records the exit status and the tail. The command's words are
/// positional parameters, never parsed by the shell: nothing in them can inject shell code.
pub const DUMP_SCRIPT: &str = r#"d=$0
until [ -p "$d/stream" ]; do
  if [ -e "$d/abort" ]; then echo "backstop: the mover stopped before the dump could start" >&2; exit 1; fi
  sleep 1
done
{ "$@" 2>&1 >"$d/stream"; echo $? >"$d/exit.partial"; mv "$d/exit.partial" "$d/exit"; } |
  { tail -c 2048 >"$d/output.partial"; mv "$d/output.partial" "$d/output"; }
read -r code <"$d/exit"; exit "$code""#;

/// What the user's restore container runs (as `DUMP_SCRIPT`): the program reads the pipe on its
/// standard input; its standard output and stderr both go to the tail.
pub const LOAD_SCRIPT: &str = r#"d=$0
until [ -p "$d/stream" ]; do
  if [ -e "$d/abort" ]; then echo "backstop: the mover refused the stream; the restore command did not run" >&2; exit 1; fi
  sleep 1
done
{ "$@" <"$d/stream" 2>&1; echo $? >"$d/exit.partial"; mv "$d/exit.partial" "$d/exit"; } |
  { tail -c 2048 >"$d/output.partial"; mv "$d/output.partial" "$d/output"; }
read -r code <"$d/exit"; exit "$code""#;

/// The repository directory of one Backup's objects: `<namespace>/<backup>`.
pub fn backup_dir(namespace: &str, backup: &str) -> String {
    format!("{namespace}/{backup}")
}

/// The key of the manifest of `pvc`'s artifact in the backup directory `dir`: JSON lines,
/// zstd-compressed.
pub fn manifest_key(dir: &str, pvc: &str) -> String {
    format!("{dir}/{pvc}{MANIFEST_SUFFIX}")
}

/// How the name of a manifest ends.
/// A namespace's restic repository inside a Backstop repository: `<namespace>/_restic`, beside
/// the namespace's tar backups (`_` is in no Backup's name, so no backup's directory is it).
pub fn restic_root(namespace: &str) -> String {
    format!("{namespace}/_restic")
}

/// The namespace whose restic repository `root` is (`restic_root`'s inverse).
pub fn namespace_of_restic_root(root: &str) -> Option<&str> {
    root.strip_suffix("/_restic")
        .filter(|ns| !ns.is_empty() && !ns.contains('/'))
}

/// The environment variable that carries a restic repository's password into mover pods (from
/// the Secret in `passwordSecretRef`; the name restic itself reads).
pub const PASSWORD_ENV: &str = "RESTIC_PASSWORD";

pub const MANIFEST_SUFFIX: &str = ".manifest.jsonl.zst";
/// How it ended before manifests were streamed (one JSON document): backups made then keep it.
pub const LEGACY_MANIFEST_SUFFIX: &str = ".manifest.json";

/// Where a mover finds the repository. S3 credentials are not part of it: they reach the pod as
/// environment variables from the Secret (`secretKeyRef`), never on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A directory (a mounted volume, or a sub-path of it).
    Dir(String),
    S3(S3Location),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct S3Location {
    pub bucket: String,
    /// The endpoint URL (AWS when absent).
    pub endpoint: Option<String>,
    /// Keys are stored under this prefix.
    pub prefix: String,
    pub region: Option<String>,
    /// Path-style requests (endpoint/bucket/key), as MinIO-likes need.
    pub force_path_style: bool,
    /// A PEM file with the CA certificate(s) of the endpoint.
    pub ca_file: Option<String>,
    /// Accept any TLS certificate (testing only).
    pub insecure_skip_tls_verify: bool,
    /// How long a failing request is retried before the command fails (the mover's default when
    /// absent).
    pub retry_timeout_seconds: Option<u64>,
}

/// What the operator asks a mover pod to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Check that the repository can be used: write, read back and remove a small object. With
    /// `restic` (the restic repository's root), also open that repository with the password in
    /// `PASSWORD_ENV`, creating it when there is none.
    Probe {
        repository: Location,
        restic: Option<String>,
    },
    /// Back up the volume mounted at `source` as one snapshot of the restic repository at
    /// `root` (password in `PASSWORD_ENV`), stored as the path `/<pvc>` of host `host`.
    ResticBackup {
        repository: Location,
        root: String,
        source: String,
        pvc: String,
        host: String,
        tags: Vec<String>,
    },
    /// Restore the restic snapshot `snapshot` into the volume at `target`, as `Restore` does.
    ResticRestore {
        repository: Location,
        root: String,
        snapshot: String,
        target: String,
        existing_data_policy: ExistingDataPolicy,
        untrusted: bool,
    },
    /// Read every block of the restic snapshot `snapshot` and check it, writing nothing.
    ResticVerify {
        repository: Location,
        root: String,
        snapshot: String,
    },
    /// Remove restic snapshots (their data stays until `Prune`): only those tagged as
    /// `backup`'s, whatever else is asked.
    Forget {
        repository: Location,
        root: String,
        snapshots: Vec<String>,
        backup: String,
    },
    /// Find the whole backups of `namespace` in the repository (only under `<namespace>/`) that
    /// have no Backup object, and create those Backups, labelled imported, with their records
    /// (the pod's own identity may create Backups in `namespace` and do nothing else). With
    /// `restic` (the restic repository's root), its snapshots are the records.
    Sync {
        repository: Location,
        namespace: String,
        repository_name: String,
        restic: Option<String>,
    },
    /// Reclaim the space of data no snapshot uses: packs are marked, and removed by a prune at
    /// least `keep_delete_seconds` later.
    Prune {
        repository: Location,
        root: String,
        keep_delete_seconds: u64,
    },
    /// Back up the volume mounted at `source` into `dir` of the repository.
    Backup {
        repository: Location,
        source: String,
        /// The PVC's name (names the artifact).
        pvc: String,
        dir: String,
        compression: Compression,
        /// What to keep beside the manifest for a cluster that never saw the backup (written
        /// last: the volume's record is the sign its backup completed).
        record: Option<RecordContext>,
    },
    /// Restore the artifact the manifest `manifest` describes into the volume at `target`:
    /// stage, verify every digest, then commit.
    Restore {
        repository: Location,
        manifest: String,
        target: String,
        existing_data_policy: ExistingDataPolicy,
        /// The artifact's BLAKE3 recorded when the backup completed: the manifest must name it.
        artifact_digest: Option<String>,
        /// Create no device nodes and clear setuid/setgid bits.
        untrusted: bool,
    },
    /// Store what the command beside the mover writes into the pipe in `stream_dir` as the
    /// stream `name` of the backup directory `dir`; commit it only when the command exited 0
    /// after writing something.
    Dump {
        repository: Location,
        stream_dir: String,
        name: String,
        dir: String,
        compression: Compression,
        record: Option<RecordContext>,
    },
    /// Stage and verify the stream the manifest `manifest` describes, then feed it through the
    /// pipe in `stream_dir` to the restore command beside the mover.
    Load {
        repository: Location,
        manifest: String,
        stream_dir: String,
        staging: String,
        artifact_digest: Option<String>,
        /// The artifact's size recorded when the backup completed.
        artifact_bytes: Option<u64>,
    },
    /// Check an artifact against its manifest without restoring anything.
    Verify {
        repository: Location,
        manifest: String,
        artifact_digest: Option<String>,
    },
    /// Remove a backup's directory from the repository.
    Delete { repository: Location, dir: String },
    /// Keep a backup's latest conclusive verification in its directory `dir`
    /// (`record::verification_key`), for a cluster that imports the backup later.
    RecordVerification {
        repository: Location,
        dir: String,
        record: VerificationRecord,
    },
}

impl Request {
    /// The mover's subcommand for this request.
    pub fn command(&self) -> &'static str {
        match self {
            Request::Probe { .. } => "probe",
            Request::Backup { .. } => "backup",
            Request::Dump { .. } => "dump",
            Request::Load { .. } => "load",
            Request::Restore { .. } => "restore",
            Request::Verify { .. } => "verify",
            Request::Delete { .. } => "delete",
            Request::ResticBackup { .. } => "restic-backup",
            Request::ResticRestore { .. } => "restic-restore",
            Request::ResticVerify { .. } => "restic-verify",
            Request::Forget { .. } => "forget",
            Request::Prune { .. } => "prune",
            Request::Sync { .. } => "sync",
            Request::RecordVerification { .. } => "record-verification",
        }
    }

    pub fn repository(&self) -> &Location {
        match self {
            Request::Probe { repository, .. }
            | Request::ResticBackup { repository, .. }
            | Request::ResticRestore { repository, .. }
            | Request::ResticVerify { repository, .. }
            | Request::Forget { repository, .. }
            | Request::Prune { repository, .. }
            | Request::Sync { repository, .. }
            | Request::RecordVerification { repository, .. }
            | Request::Backup { repository, .. }
            | Request::Dump { repository, .. }
            | Request::Load { repository, .. }
            | Request::Restore { repository, .. }
            | Request::Verify { repository, .. }
            | Request::Delete { repository, .. } => repository,
        }
    }

    /// The namespace whose part of the repository this request writes (see `ownership`), if
    /// it writes any: backups, removals, prunes and verification records do; probes (their
    /// object is outside every namespace), syncs, restores and verifications do not.
    pub fn writes(&self) -> Option<&str> {
        fn first(dir: &str) -> Option<&str> {
            dir.split('/').next().filter(|ns| !ns.is_empty())
        }
        match self {
            Request::Backup { dir, .. }
            | Request::Dump { dir, .. }
            | Request::Delete { dir, .. }
            | Request::RecordVerification { dir, .. } => first(dir),
            Request::ResticBackup { root, .. }
            | Request::Forget { root, .. }
            | Request::Prune { root, .. } => first(root),
            Request::Probe { .. }
            | Request::Sync { .. }
            | Request::Restore { .. }
            | Request::Load { .. }
            | Request::Verify { .. }
            | Request::ResticRestore { .. }
            | Request::ResticVerify { .. } => None,
        }
    }

    /// The container's arguments: `mover <command> <flags>`, reporting to `TERMINATION_LOG`.
    /// A request that writes carries `writer` (`--cluster`, `--take-over-from`): the mover
    /// writes nothing into a namespace another cluster owns.
    pub fn to_args(&self, writer: &Writer) -> Vec<String> {
        let mut args = Args(vec!["mover".into(), self.command().into()]);
        if self.writes().is_some() {
            args.value("--cluster", &writer.cluster);
            args.optional("--take-over-from", writer.take_over_from.as_deref());
        }
        match self {
            Request::Probe { restic, .. } => args.optional("--restic", restic.as_deref()),
            Request::ResticBackup {
                root,
                source,
                pvc,
                host,
                tags,
                ..
            } => {
                args.value("--root", root);
                args.value("--source", source);
                args.value("--pvc", pvc);
                args.value("--host", host);
                for tag in tags {
                    args.value("--tag", tag);
                }
            }
            Request::ResticRestore {
                root,
                snapshot,
                target,
                existing_data_policy,
                untrusted,
                ..
            } => {
                args.value("--root", root);
                args.value("--snapshot", snapshot);
                args.value("--target", target);
                args.value("--existing-data-policy", existing_data_policy.as_str());
                args.flag("--untrusted", *untrusted);
            }
            Request::ResticVerify { root, snapshot, .. } => {
                args.value("--root", root);
                args.value("--snapshot", snapshot);
            }
            Request::Forget {
                root,
                snapshots,
                backup,
                ..
            } => {
                args.value("--root", root);
                for snapshot in snapshots {
                    args.value("--snapshot", snapshot);
                }
                args.value("--backup", backup);
            }
            Request::Sync {
                namespace,
                repository_name,
                restic,
                ..
            } => {
                args.value("--namespace", namespace);
                args.value("--repository-name", repository_name);
                args.optional("--restic", restic.as_deref());
            }
            Request::Prune {
                root,
                keep_delete_seconds,
                ..
            } => {
                args.value("--root", root);
                args.value("--keep-delete-seconds", &keep_delete_seconds.to_string());
            }
            Request::Backup {
                source,
                pvc,
                dir,
                compression,
                record,
                ..
            } => {
                args.value("--source", source);
                args.value("--pvc", pvc);
                args.value("--dir", dir);
                args.value("--compression", compression.as_str());
                args.record(record.as_ref());
            }
            Request::Dump {
                stream_dir,
                name,
                dir,
                compression,
                record,
                ..
            } => {
                args.value("--stream-dir", stream_dir);
                args.value("--name", name);
                args.value("--dir", dir);
                args.value("--compression", compression.as_str());
                args.record(record.as_ref());
            }
            Request::Load {
                manifest,
                stream_dir,
                staging,
                artifact_digest,
                artifact_bytes,
                ..
            } => {
                args.value("--manifest", manifest);
                args.value("--stream-dir", stream_dir);
                args.value("--staging", staging);
                args.optional("--artifact-digest", artifact_digest.as_deref());
                args.optional(
                    "--artifact-bytes",
                    artifact_bytes.map(|b| b.to_string()).as_deref(),
                );
            }
            Request::Restore {
                manifest,
                target,
                existing_data_policy,
                artifact_digest,
                untrusted,
                ..
            } => {
                args.value("--manifest", manifest);
                args.value("--target", target);
                args.value("--existing-data-policy", existing_data_policy.as_str());
                args.optional("--artifact-digest", artifact_digest.as_deref());
                args.flag("--untrusted", *untrusted);
            }
            Request::Verify {
                manifest,
                artifact_digest,
                ..
            } => {
                args.value("--manifest", manifest);
                args.optional("--artifact-digest", artifact_digest.as_deref());
            }
            Request::Delete { dir, .. } => args.value("--dir", dir),
            Request::RecordVerification { dir, record, .. } => {
                args.value("--dir", dir);
                if let Ok(json) = serde_json::to_string(record) {
                    args.value("--verification", &json);
                }
            }
        }
        match self.repository() {
            Location::Dir(root) => args.value("--repository", root),
            Location::S3(s3) => {
                args.value("--s3-bucket", &s3.bucket);
                args.optional("--s3-endpoint", s3.endpoint.as_deref());
                if !s3.prefix.is_empty() {
                    args.value("--s3-prefix", &s3.prefix);
                }
                args.optional("--s3-region", s3.region.as_deref());
                args.flag("--s3-force-path-style", s3.force_path_style);
                args.optional("--s3-ca-file", s3.ca_file.as_deref());
                args.flag("--s3-insecure-skip-tls-verify", s3.insecure_skip_tls_verify);
                if let Some(seconds) = s3.retry_timeout_seconds {
                    args.value("--s3-retry-timeout-seconds", &seconds.to_string());
                }
            }
        }
        args.value("--termination-log", TERMINATION_LOG);
        args.0
    }
}

struct Args(Vec<String>);

impl Args {
    fn value(&mut self, flag: &str, value: &str) {
        self.0.extend([flag.to_string(), value.to_string()]);
    }
    fn optional(&mut self, flag: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.value(flag, value);
        }
    }
    /// A record context travels as one JSON argument (it holds nothing secret).
    fn record(&mut self, record: Option<&RecordContext>) {
        if let Some(record) = record.and_then(|r| serde_json::to_string(r).ok()) {
            self.value("--record", &record);
        }
    }
    fn flag(&mut self, flag: &str, set: bool) {
        if set {
            self.0.push(flag.to_string());
        }
    }
}

/// Why a mover command failed, and so what the user must look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// The source volume could not be read.
    SourceUnreadable,
    RepositoryWriteFailed,
    /// The repository's volume is full.
    RepositoryFull,
    /// Object storage refused the credentials.
    AccessDenied,
    BucketNotFound,
    EndpointUnreachable,
    #[serde(rename = "TLSHandshakeFailed")]
    TlsHandshakeFailed,
    StorageRequestFailed,
    /// The credentials Secret's keys reached the pod empty.
    CredentialsMissing,
    /// The request itself cannot work (e.g. no repository named).
    InvalidSpec,
    RepositoryUnusable,
    /// An artifact or a restored file does not match its recorded digest.
    IntegrityCheckFailed,
    /// An archive entry would land outside the target or is not what the manifest says.
    UnsafeArchive,
    TargetNotEmpty,
    ArtifactUnreadable,
    /// The artifact or its manifest is not in the repository.
    ArtifactMissing,
    TargetFull,
    TargetWriteFailed,
    ArtifactsNotRemoved,
    /// A command backup's or restore's command exited non-zero (or could not start).
    CommandFailed,
    /// A command backup's command exited 0 having written nothing.
    EmptyDump,
    /// The password does not open the restic repository (none of its keys).
    WrongPassword,
    /// Another holder (a `restic prune` run by hand) kept the restic repository locked for as
    /// long as the mover waited.
    RepositoryLocked,
    /// Another cluster owns the namespace's part of the repository (`ownership`): nothing was
    /// written.
    RepositoryOwnedElsewhere,
    /// The Kubernetes API refused what a sync asked (listing or creating Backups with the sync
    /// Job's identity).
    ImportRefused,
    /// No reason given, or one this operator does not know (a mover of another version).
    #[serde(other)]
    MoverFailed,
}

/// What a failure blames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The repository (its volume, bucket, endpoint or credentials): the repository is not Ready
    /// until it is probed again, and the policy's other volumes would fail the same way.
    Repository,
    /// The backup's volume, a restore's target, or the artifact read back.
    Data,
    /// The mover itself, or something it did not say.
    Mover,
}

impl Reason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::SourceUnreadable => "SourceUnreadable",
            Reason::RepositoryWriteFailed => "RepositoryWriteFailed",
            Reason::RepositoryFull => "RepositoryFull",
            Reason::AccessDenied => "AccessDenied",
            Reason::BucketNotFound => "BucketNotFound",
            Reason::EndpointUnreachable => "EndpointUnreachable",
            Reason::TlsHandshakeFailed => "TLSHandshakeFailed",
            Reason::StorageRequestFailed => "StorageRequestFailed",
            Reason::CredentialsMissing => "CredentialsMissing",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::RepositoryUnusable => "RepositoryUnusable",
            Reason::IntegrityCheckFailed => "IntegrityCheckFailed",
            Reason::UnsafeArchive => "UnsafeArchive",
            Reason::TargetNotEmpty => "TargetNotEmpty",
            Reason::ArtifactUnreadable => "ArtifactUnreadable",
            Reason::ArtifactMissing => "ArtifactMissing",
            Reason::TargetFull => "TargetFull",
            Reason::TargetWriteFailed => "TargetWriteFailed",
            Reason::ArtifactsNotRemoved => "ArtifactsNotRemoved",
            Reason::CommandFailed => "CommandFailed",
            Reason::EmptyDump => "EmptyDump",
            Reason::WrongPassword => "WrongPassword",
            Reason::RepositoryLocked => "RepositoryLocked",
            Reason::RepositoryOwnedElsewhere => crate::ownership::OWNED_ELSEWHERE,
            Reason::ImportRefused => "ImportRefused",
            Reason::MoverFailed => "MoverFailed",
        }
    }

    /// The reason called `name` (a condition's reason); one this operator does not know is
    /// `MoverFailed`.
    pub fn named(name: &str) -> Reason {
        serde_json::from_value(serde_json::Value::String(name.into()))
            .unwrap_or(Reason::MoverFailed)
    }

    pub fn blames(self) -> Blame {
        match self {
            Reason::RepositoryFull
            | Reason::AccessDenied
            | Reason::BucketNotFound
            | Reason::EndpointUnreachable
            | Reason::TlsHandshakeFailed
            | Reason::CredentialsMissing
            | Reason::WrongPassword
            | Reason::RepositoryLocked
            | Reason::RepositoryOwnedElsewhere => Blame::Repository,
            Reason::MoverFailed => Blame::Mover,
            _ => Blame::Data,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a mover reports when it fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub error: String,
    #[serde(default = "mover_failed")]
    pub reason: Reason,
}

fn mover_failed() -> Reason {
    Reason::MoverFailed
}

/// What a backup reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupResult {
    pub pvc: String,
    /// Artifact path relative to the repository root.
    pub artifact: String,
    pub bytes: u64,
    pub digest: String,
    pub files: u64,
    pub source_bytes: u64,
    /// Entries that changed while they were read: files whose size changed (their copy may be
    /// torn), entries that vanished or kept being swapped (left out).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub changed_while_reading: u64,
    /// The first few of them (bounded: the whole result must fit a termination message).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_files: Vec<String>,
    /// A restic-format backup's snapshot (`artifact` is then the restic repository's root,
    /// `digest` the snapshot's id, `bytes` what the repository grew by).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restic: Option<crate::backup::ResticSnapshot>,
}

/// What a restore (or a verification) reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreResult {
    pub files: u64,
    pub bytes: u64,
    pub entries: u64,
    pub verification: String,
    /// An earlier restore into this target had been killed mid-commit; it was undone first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovered_interrupted_restore: bool,
    /// Device nodes not created (an untrusted restore).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_devices: u64,
}

/// What a probe reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeResult {
    /// The key written, read back and removed.
    pub key: String,
    pub bytes: u64,
    /// The probe created the restic repository (it found none).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restic_initialised: bool,
}

/// What a deletion reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    /// The backup directory removed.
    pub deleted: String,
}

/// What a forget reports: the snapshots removed (those already gone are not named).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forgotten {
    pub forgotten: Vec<String>,
}

/// What a sync reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Synced {
    /// Whole backups of the namespace found in the repository.
    pub backups: u64,
    /// Of those, how many already had a Backup object.
    pub present: u64,
    /// Backups created.
    pub imported: u64,
    /// Whole backups left for the next sync (one sync creates at most `MAX_IMPORTS`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deferred: u64,
    /// Objects or backups that are not whole Backstop backups of the namespace, left alone.
    pub skipped: u64,
    /// The first few of them, each with why (bounded: the result must fit a termination
    /// message).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_objects: Vec<String>,
    /// Seconds the sync took.
    pub seconds: f64,
    /// The namespace's writer as its marker names it (`ownership::Ownership::owner`); none
    /// when unclaimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// The most Backups one sync creates: a repository holding more (or a writer planting many)
/// is imported over several syncs, and no sync's memory or API traffic grows without bound.
pub const MAX_IMPORTS: usize = 1000;

/// What a prune reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pruned {
    /// Snapshots in the repository (whose data stays).
    pub snapshots: u64,
    /// Pack files no snapshot uses, and the bytes of their blobs: marked now, removed by a
    /// prune at least `keepDeleteSeconds` later.
    pub unused_packs: u64,
    pub unused_bytes: u64,
    /// Pack files an earlier prune marked, removed now.
    pub marked_packs_removed: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_travel_by_their_names_and_unknown_ones_are_mover_failures() {
        let failure = Failure {
            error: "no route".into(),
            reason: Reason::TlsHandshakeFailed,
        };
        let text = serde_json::to_string(&failure).unwrap();
        assert_eq!(
            text,
            r#"{"error":"no route","reason":"TLSHandshakeFailed"}"#
        );
        assert_eq!(serde_json::from_str::<Failure>(&text).unwrap(), failure);
        let newer: Failure =
            serde_json::from_str(r#"{"error":"x","reason":"SomethingNew"}"#).unwrap();
        assert_eq!(newer.reason, Reason::MoverFailed);
        let silent: Failure = serde_json::from_str(r#"{"error":"x"}"#).unwrap();
        assert_eq!(silent.reason, Reason::MoverFailed);
    }

    #[test]
    fn as_str_is_the_serialized_name() {
        for reason in [
            Reason::SourceUnreadable,
            Reason::RepositoryFull,
            Reason::TlsHandshakeFailed,
            Reason::ArtifactsNotRemoved,
            Reason::MoverFailed,
        ] {
            assert_eq!(
                serde_json::to_value(reason).unwrap(),
                serde_json::json!(reason.as_str())
            );
        }
    }

    #[test]
    fn only_repository_problems_blame_the_repository() {
        assert_eq!(Reason::RepositoryFull.blames(), Blame::Repository);
        assert_eq!(Reason::CredentialsMissing.blames(), Blame::Repository);
        assert_eq!(Reason::SourceUnreadable.blames(), Blame::Data);
        assert_eq!(Reason::StorageRequestFailed.blames(), Blame::Data);
        assert_eq!(Reason::MoverFailed.blames(), Blame::Mover);
        assert_eq!(
            Reason::named("TLSHandshakeFailed"),
            Reason::TlsHandshakeFailed
        );
        assert_eq!(Reason::named("JobNameTaken"), Reason::MoverFailed);
    }

    #[test]
    fn keys_of_a_backup() {
        let dir = backup_dir("shop", "nightly");
        assert_eq!(dir, "shop/nightly");
        assert_eq!(
            manifest_key(&dir, "db"),
            "shop/nightly/db.manifest.jsonl.zst"
        );
    }

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn a_request_is_the_exact_command_line_the_mover_reads() {
        let writer = Writer {
            cluster: "c1".into(),
            take_over_from: Some("c0".into()),
        };
        let backup = Request::Backup {
            repository: Location::Dir("/repository/sub".into()),
            source: SOURCE_MOUNT.into(),
            pvc: "db".into(),
            dir: backup_dir("shop", "nightly"),
            compression: Compression::Gzip,
            record: None,
        };
        assert_eq!(
            backup.to_args(&writer),
            words(
                "mover backup --cluster c1 --take-over-from c0 --source /source --pvc db --dir shop/nightly --compression gzip \
                 --repository /repository/sub --termination-log /dev/termination-log"
            )
        );
        let restore = Request::Restore {
            repository: Location::S3(S3Location {
                bucket: "b".into(),
                prefix: "team".into(),
                force_path_style: true,
                retry_timeout_seconds: Some(10),
                ..S3Location::default()
            }),
            manifest: "shop/n/db.manifest.jsonl.zst".into(),
            target: TARGET_MOUNT.into(),
            existing_data_policy: ExistingDataPolicy::Overwrite,
            artifact_digest: Some("ab".into()),
            untrusted: true,
        };
        assert_eq!(
            restore.to_args(&writer),
            words(
                "mover restore --manifest shop/n/db.manifest.jsonl.zst --target /target \
                 --existing-data-policy Overwrite --artifact-digest ab --untrusted \
                 --s3-bucket b --s3-prefix team --s3-force-path-style \
                 --s3-retry-timeout-seconds 10 --termination-log /dev/termination-log"
            )
        );
        let dump = Request::Dump {
            repository: Location::Dir(REPOSITORY_MOUNT.into()),
            stream_dir: STREAM_MOUNT.into(),
            name: "dump".into(),
            dir: backup_dir("shop", "nightly"),
            compression: Compression::Zstd,
            record: None,
        };
        assert_eq!(
            dump.to_args(&writer),
            words(
                "mover dump --cluster c1 --take-over-from c0 --stream-dir /backstop-stream --name dump --dir shop/nightly \
                 --compression zstd --repository /repository --termination-log /dev/termination-log"
            )
        );
        let load = Request::Load {
            repository: Location::Dir(REPOSITORY_MOUNT.into()),
            manifest: "shop/nightly/dump.manifest.jsonl.zst".into(),
            stream_dir: STREAM_MOUNT.into(),
            staging: STREAM_STAGING_MOUNT.into(),
            artifact_digest: Some("ab".into()),
            artifact_bytes: Some(4096),
        };
        assert_eq!(
            load.to_args(&writer),
            words(
                "mover load --manifest shop/nightly/dump.manifest.jsonl.zst \
                 --stream-dir /backstop-stream --staging /backstop-staging --artifact-digest ab \
                 --artifact-bytes 4096 --repository /repository --termination-log /dev/termination-log"
            )
        );
        let probe = Request::Probe {
            repository: Location::S3(S3Location {
                bucket: "b".into(),
                ..S3Location::default()
            }),
            restic: None,
        };
        assert_eq!(
            probe.to_args(&writer),
            words("mover probe --s3-bucket b --termination-log /dev/termination-log")
        );
        let forget = Request::Forget {
            repository: Location::Dir("/repository".into()),
            root: restic_root("shop"),
            snapshots: vec!["ab".into(), "cd".into()],
            backup: "nightly".into(),
        };
        assert_eq!(
            forget.to_args(&writer),
            words(
                "mover forget --cluster c1 --take-over-from c0 --root shop/_restic --snapshot ab --snapshot cd --backup nightly \
                 --repository /repository --termination-log /dev/termination-log"
            )
        );
        let sync = Request::Sync {
            repository: Location::Dir("/repository".into()),
            namespace: "shop".into(),
            repository_name: "nfs".into(),
            restic: Some(restic_root("shop")),
        };
        assert_eq!(
            sync.to_args(&writer),
            words(
                "mover sync --namespace shop --repository-name nfs --restic shop/_restic \
                 --repository /repository --termination-log /dev/termination-log"
            )
        );
    }

    #[test]
    fn the_wrapper_scripts_survive_kubernetes_variable_expansion() {
        // The kubelet expands `$(VAR)` in a container's command and turns `$$` into `$`: the
        // scripts must hold neither, or the shell would run something else.
        for script in [DUMP_SCRIPT, LOAD_SCRIPT] {
            assert!(!script.contains("$("), "{script}");
            assert!(!script.contains("$$"), "{script}");
            assert!(script.contains(r#""$@""#), "the command's words stay words");
        }
    }

    #[test]
    fn a_reason_reads_as_its_name() {
        assert_eq!(Reason::TlsHandshakeFailed.to_string(), "TLSHandshakeFailed");
    }

    #[test]
    fn results_leave_out_what_did_not_happen() {
        let mut result = BackupResult {
            pvc: "db".into(),
            artifact: "a".into(),
            bytes: 1,
            digest: "d".into(),
            files: 1,
            source_bytes: 1,
            changed_while_reading: 0,
            changed_files: Vec::new(),
            restic: None,
        };
        let text = serde_json::to_string(&result).unwrap();
        assert!(!text.contains("changedWhileReading"), "{text}");
        result.changed_while_reading = 2;
        let text = serde_json::to_string(&result).unwrap();
        assert!(text.contains(r#""changedWhileReading":2"#), "{text}");
    }
}
