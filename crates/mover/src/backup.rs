//! `backstop mover backup`: one volume into one artifact plus its manifest in a repository.
//! Both are written as the volume is read, and only appear under their keys when complete (a
//! renamed `.partial` file, a completed multipart upload); the manifest is committed last (the
//! commit point), so an interrupted backup never looks complete.

use crate::archive;
use crate::manifest::{self, ArtifactInfo, Content, Header};
use crate::repository::{Repository, RepositoryError, Upload};
pub use backstop_api::Compression;
use std::io::{self, BufWriter, Write};
use std::path::Path;

pub use backstop_api::contract::BackupResult;
use backstop_api::contract::Reason;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("source {0}")]
    Source(String),
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    /// What was read may not be committed (a command backup's command failed).
    #[error("{message}")]
    Refused { reason: Reason, message: String },
}

impl BackupError {
    /// The condition reason: what is wrong with the repository (full, unreachable, refusing the
    /// keys...), a write to it that failed, or the source volume.
    pub fn reason(&self) -> Reason {
        match self {
            BackupError::Repository(r) => r.reason().unwrap_or(Reason::RepositoryWriteFailed),
            BackupError::Refused { reason, .. } => *reason,
            BackupError::Archive(
                archive::ArchiveError::Write(e) | archive::ArchiveError::Record(e),
            ) => crate::repository::reason(e).unwrap_or(Reason::RepositoryWriteFailed),
            _ => Reason::SourceUnreadable,
        }
    }
}

/// Input per zstd worker job. libzstd's default at level 3 is 8 MiB (4x the window), and its
/// buffers hold about 9 jobs' worth: 70-85 MiB of RSS on 2 cores. 2 MiB jobs measured the same
/// speed with 27-34 MiB RSS; the artifact grows by about 0.001% (more job boundaries).
const ZSTD_JOB_SIZE: u32 = 2 << 20;

pub struct BackupRequest<'a> {
    pub source: &'a Path,
    pub pvc: &'a str,
    /// Directory inside the repository for this backup, e.g. `<namespace>/<backup>`.
    pub dir: &'a str,
    pub compression: Compression,
    pub created_at: String,
}

pub fn run(repo: &dyn Repository, req: &BackupRequest<'_>) -> Result<BackupResult, BackupError> {
    if !req.source.is_dir() {
        return Err(BackupError::Source(format!(
            "{} is not a directory (is the volume mounted?)",
            req.source.display()
        )));
    }
    let header = Header {
        format: manifest::FORMAT.to_string(),
        created_at: req.created_at.clone(),
        source: req.pvc.to_string(),
        compression: req.compression,
        content: Content::Tree,
    };
    let artifact_name = manifest::artifact_name(req.pvc, req.compression.extension());
    let stored = store(
        repo,
        req.dir,
        &artifact_name,
        &header,
        |out, listing| {
            let (archived, _) = archive::write(req.source, out, |entry| listing.entry(entry))?;
            let totals = archived.totals.clone();
            Ok((archived, totals))
        },
        |_| Ok(()),
    )?;
    let archived = stored.filled;
    Ok(BackupResult {
        pvc: req.pvc.to_string(),
        artifact: stored.key,
        bytes: stored.size,
        digest: stored.digest,
        files: archived.totals.files,
        source_bytes: archived.totals.bytes,
        changed_while_reading: archived.changed.count,
        changed_files: archived.changed.named,
        restic: None,
    })
}

/// What `store` wrote: what `fill` returned, the artifact's key, BLAKE3 and size.
pub struct Stored<T> {
    pub filled: T,
    pub key: String,
    pub digest: String,
    pub size: u64,
}

/// The manifest being written beside an artifact.
pub type Listing<'a> = manifest::Writer<&'a mut Box<dyn Upload>>;

/// Writes one artifact of the backup directory `dir` and its manifest (`header`, then the
/// entries `fill` lists as it writes the artifact's uncompressed content, then the totals it
/// returns). Nothing is committed unless `admit` accepts what `fill` returned; then the artifact
/// is committed, and the manifest last (the commit point). On any failure both are aborted.
pub fn store<T>(
    repo: &dyn Repository,
    dir: &str,
    artifact_name: &str,
    header: &Header,
    fill: impl FnOnce(&mut dyn Write, &mut Listing<'_>) -> Result<(T, manifest::Totals), BackupError>,
    admit: impl FnOnce(&T) -> Result<(), BackupError>,
) -> Result<Stored<T>, BackupError> {
    let artifact_key = format!("{dir}/{artifact_name}");
    let manifest_key = backstop_api::contract::manifest_key(dir, &header.source);
    // A retried Job must not leave an old manifest describing a new artifact.
    repo.remove(&manifest_key)?;
    let manifest_error = |source| RepositoryError::Write {
        key: manifest_key.clone(),
        source,
    };
    let mut listed = repo.create(&manifest_key)?;
    let mut upload = match repo.create(&artifact_key) {
        Ok(upload) => upload,
        Err(e) => {
            listed.abort();
            return Err(e.into());
        }
    };
    let written = manifest::Writer::new(&mut listed, header)
        .map_err(|e| BackupError::from(manifest_error(e)))
        .and_then(|mut listing| {
            let written = write_artifact(header.compression, &mut upload, &artifact_key, |out| {
                fill(out, &mut listing)
            })?;
            Ok((written, listing))
        })
        .and_then(|(((filled, totals), digest, size), listing)| {
            admit(&filled)?;
            Ok((filled, totals, digest, size, listing))
        });
    let (filled, totals, digest, size, listing) = match written {
        Ok(w) => w,
        Err(e) => {
            upload.abort();
            listed.abort();
            return Err(e);
        }
    };
    let artifact = ArtifactInfo {
        name: artifact_name.to_string(),
        size,
        blake3: digest.clone(),
    };
    let finished = upload
        .commit()
        .and_then(|()| listing.finish(artifact, totals).map_err(manifest_error))
        .map(|_| ());
    match finished {
        Ok(()) => listed.commit()?,
        Err(e) => {
            listed.abort();
            return Err(e.into());
        }
    }
    Ok(Stored {
        filled,
        key: artifact_key,
        digest,
        size,
    })
}

/// Writes the artifact into `upload`, compressed as asked, its digest and size taken as it
/// goes: `fill` writes the uncompressed content.
fn write_artifact<T>(
    compression: Compression,
    upload: &mut Box<dyn Upload>,
    key: &str,
    fill: impl FnOnce(&mut dyn Write) -> Result<T, BackupError>,
) -> Result<(T, String, u64), BackupError> {
    let write_error = |source| RepositoryError::Write {
        key: key.to_string(),
        source,
    };
    let hashing = HashingWriter::new(BufWriter::with_capacity(1 << 20, upload));
    let (filled, hashing) = match compression {
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(hashing, 3).map_err(write_error)?;
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
            enc.multithread(threads).map_err(write_error)?;
            enc.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))
                .map_err(write_error)?;
            let filled = fill(&mut enc)?;
            (filled, enc.finish().map_err(write_error)?)
        }
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(hashing, flate2::Compression::new(6));
            let filled = fill(&mut enc)?;
            (filled, enc.finish().map_err(write_error)?)
        }
        Compression::None => {
            let mut hashing = hashing;
            let filled = fill(&mut hashing)?;
            (filled, hashing)
        }
    };
    let (mut buffered, digest, size) = hashing.finish();
    buffered.flush().map_err(write_error)?;
    Ok((filled, digest, size))
}

/// Counts and hashes the bytes that go through it (the compressed artifact).
pub struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    size: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: blake3::Hasher::new(),
            size: 0,
        }
    }

    pub fn finish(self) -> (W, String, u64) {
        (
            self.inner,
            self.hasher.finalize().to_hex().to_string(),
            self.size,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::StoreFailure;

    #[test]
    fn the_reason_names_the_repository_problem_or_the_source() {
        let full = || io::Error::from_raw_os_error(libc::ENOSPC);
        let denied = StoreFailure {
            reason: Reason::AccessDenied,
            message: "403".into(),
        };
        let write = |source| {
            BackupError::Repository(RepositoryError::Write {
                key: "k".into(),
                source,
            })
        };
        assert_eq!(write(denied.into_io()).reason(), Reason::AccessDenied);
        assert_eq!(
            write(io::Error::other("?")).reason(),
            Reason::RepositoryWriteFailed
        );
        let archive_write = BackupError::Archive(archive::ArchiveError::Write(full()));
        assert_eq!(archive_write.reason(), Reason::RepositoryFull);
        let archive_write =
            BackupError::Archive(archive::ArchiveError::Write(io::Error::other("?")));
        assert_eq!(archive_write.reason(), Reason::RepositoryWriteFailed);
        // A full source volume is not a full repository.
        let read = BackupError::Archive(archive::ArchiveError::Read {
            path: "/data/f".into(),
            source: full(),
        });
        assert_eq!(read.reason(), Reason::SourceUnreadable);
        assert_eq!(
            BackupError::Source("gone".into()).reason(),
            Reason::SourceUnreadable
        );
    }

    #[test]
    fn the_hashing_writer_counts_hashes_and_flushes_through() -> io::Result<()> {
        let mut writer = HashingWriter::new(BufWriter::new(Vec::new()));
        writer.write_all(b"artifact")?;
        writer.flush()?;
        assert_eq!(writer.inner.get_ref().as_slice(), b"artifact");
        let (_, digest, size) = writer.finish();
        assert_eq!(
            (digest, size),
            (blake3::hash(b"artifact").to_hex().to_string(), 8)
        );
        Ok(())
    }
}
