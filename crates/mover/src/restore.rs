//! Reading an artifact back: `verify` checks it against its manifest without writing anything;
//! `restore` extracts it into a staging directory inside the target volume, checks every digest,
//! and only then commits it into place (so a corrupt artifact leaves the target as it was).
//! Entries with absolute paths or `..`, and entries that would go through a symlink, are refused.
//!
//! The manifest is read twice, as a stream: once whole, to check it and its end line (and the
//! digest the operator recorded) before anything is touched, then entry by entry beside the
//! archive, which must hold the same entries in the same order.

use crate::commit;
use crate::extract::Extractor;
use crate::manifest::{
    self, ArtifactInfo, Content, Entry, EntryKind, Header, ManifestError, Trailer,
};
use crate::repository::{Repository, RepositoryError};
use backstop_api::contract::{LEGACY_MANIFEST_SUFFIX, MANIFEST_SUFFIX};
use backstop_api::{Compression, ExistingDataPolicy};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

pub use crate::commit::STAGING;
/// Holes are punched for runs of zeros this long (keeps sparse files sparse).
const BLOCK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{0}")]
    Integrity(String),
    #[error("unsafe archive entry {path:?}: {why}")]
    Unsafe { path: String, why: &'static str },
    #[error(
        "the target is not empty ({0} and maybe more): use existingDataPolicy Overwrite or Merge"
    )]
    TargetNotEmpty(String),
    #[error("reading the manifest: {0}")]
    Manifest(String),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    /// A stream restore's command failed.
    #[error("{0}")]
    Command(String),
    /// The restic repository or snapshot could not be read as it must be.
    #[error("{message}")]
    Snapshot { reason: Reason, message: String },
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl RestoreError {
    /// The condition reason the controller shows.
    pub fn reason(&self) -> Reason {
        match self {
            RestoreError::Integrity(_) => Reason::IntegrityCheckFailed,
            RestoreError::Unsafe { .. } => Reason::UnsafeArchive,
            RestoreError::TargetNotEmpty(_) => Reason::TargetNotEmpty,
            RestoreError::Repository(r) => {
                r.reason()
                    .unwrap_or_else(|| match r.io().map(io::Error::kind) {
                        Some(io::ErrorKind::NotFound) => Reason::ArtifactMissing,
                        _ => Reason::ArtifactUnreadable,
                    })
            }
            RestoreError::Manifest(_) => Reason::ArtifactUnreadable,
            RestoreError::Command(_) => Reason::CommandFailed,
            RestoreError::Snapshot { reason, .. } => *reason,
            RestoreError::Write { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
                Reason::TargetFull
            }
            RestoreError::Write { .. } => Reason::TargetWriteFailed,
        }
    }
}

pub(crate) fn write_err(path: &Path) -> impl FnOnce(io::Error) -> RestoreError + '_ {
    move |source| RestoreError::Write {
        path: path.to_path_buf(),
        source,
    }
}

use backstop_api::contract::Reason;
pub use backstop_api::contract::RestoreResult;

/// The manifest at `key`, opened for reading (see `manifest::Reader`); a backup made before
/// manifests were streamed has it under the legacy name.
pub(crate) fn open_manifest(
    repo: &dyn Repository,
    key: &str,
) -> Result<manifest::Reader<'static>, RestoreError> {
    let read = match repo.open(key) {
        Ok(read) => read,
        Err(e) => {
            let legacy = key
                .strip_suffix(MANIFEST_SUFFIX)
                .and_then(|stem| repo.open(&format!("{stem}{LEGACY_MANIFEST_SUFFIX}")).ok());
            legacy.ok_or(e)?
        }
    };
    manifest::Reader::new(read).map_err(|e| manifest_error(key, e))
}

pub(crate) fn manifest_error(key: &str, e: ManifestError) -> RestoreError {
    match e {
        ManifestError::Damaged(message) => RestoreError::Manifest(format!("{key}: {message}")),
        ManifestError::Unsafe { path, why } => RestoreError::Unsafe { path, why },
        ManifestError::Read(source) => RestoreError::Repository(RepositoryError::Read {
            key: key.to_string(),
            source,
        }),
    }
}

/// Reads the whole manifest once, checking every entry, for its header and its end line; the
/// artifact digest the operator recorded when the backup completed, if given, must be the one
/// it names: a manifest swapped in the repository (with an artifact to match) is caught before
/// anything is written.
pub fn read_manifest(
    repo: &dyn Repository,
    key: &str,
    recorded: Option<&str>,
) -> Result<(Header, Trailer), RestoreError> {
    let (header, trailer) = open_manifest(repo, key)?
        .into_trailer()
        .map_err(|e| manifest_error(key, e))?;
    check_recorded_digest(&trailer.artifact, recorded)?;
    Ok((header, trailer))
}

pub(crate) fn check_recorded_digest(
    artifact: &ArtifactInfo,
    recorded: Option<&str>,
) -> Result<(), RestoreError> {
    match recorded {
        Some(recorded) if recorded != artifact.blake3 => Err(RestoreError::Integrity(format!(
            "the manifest names an artifact with BLAKE3 {}, but the backup recorded {recorded}: the manifest in the repository was replaced or damaged",
            artifact.blake3
        ))),
        _ => Ok(()),
    }
}

/// The artifact's key next to its manifest.
pub fn artifact_key(manifest_key: &str, artifact: &ArtifactInfo) -> String {
    match manifest_key.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{}", artifact.name),
        None => artifact.name.clone(),
    }
}

/// Checks an artifact against its manifest (and the manifest against the digest recorded at
/// backup time, when given) without writing anything.
pub fn verify(
    repo: &dyn Repository,
    manifest_key: &str,
    recorded_digest: Option<&str>,
) -> Result<RestoreResult, RestoreError> {
    let summary = read_manifest(repo, manifest_key, recorded_digest)?;
    if summary.0.content == Content::Stream {
        return crate::stream::verify(repo, manifest_key, recorded_digest);
    }
    read_artifact(repo, manifest_key, &summary, None)
}

/// How a restore treats the target and the backup.
#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreOptions<'a> {
    /// What to do when the target already holds data.
    pub policy: ExistingDataPolicy,
    /// The artifact digest the operator recorded at backup time: the manifest must name it.
    pub recorded_digest: Option<&'a str>,
    /// The backup comes from a volume whose owner is not trusted with the target's privileges:
    /// device nodes are not created and setuid/setgid bits are cleared.
    pub untrusted: bool,
}

/// Restores the artifact into `target` as `options` say.
pub fn restore(
    repo: &dyn Repository,
    manifest_key: &str,
    target: &Path,
    options: &RestoreOptions<'_>,
) -> Result<RestoreResult, RestoreError> {
    let policy = options.policy;
    let summary = read_manifest(repo, manifest_key, options.recorded_digest)?;
    if summary.0.content == Content::Stream {
        return Err(RestoreError::Manifest(format!(
            "{manifest_key} is a command's stream, not a volume's files: a Restore feeds it to a restore command (spec.command, or the policy's strategy.command.restore)"
        )));
    }
    staged(target, policy, |staging| {
        let into = Extract {
            root: staging,
            untrusted: options.untrusted,
        };
        read_artifact(repo, manifest_key, &summary, Some(into))
    })
}

/// A restore into `target` as `policy` says, whatever the backup's format: an earlier restore
/// killed mid-commit is undone first, a target with data is refused under `FailIfNotEmpty`,
/// `fill` writes the backup into a new staging directory inside the target, and only when it
/// succeeded is that committed into place. Nothing of a failed restore stays behind.
pub fn staged(
    target: &Path,
    policy: ExistingDataPolicy,
    fill: impl FnOnce(&Path) -> Result<RestoreResult, RestoreError>,
) -> Result<RestoreResult, RestoreError> {
    let recovered = commit::recover(target)?;
    if policy == ExistingDataPolicy::FailIfNotEmpty
        && let Some(first) = first_entry(target)?
    {
        return Err(RestoreError::TargetNotEmpty(first));
    }
    let staging = target.join(STAGING);
    fs::create_dir(&staging).map_err(write_err(&staging))?;
    let restored = (|| {
        fs::set_permissions(&staging, fs::Permissions::from_mode(0o700))
            .map_err(write_err(&staging))?;
        let mut result = fill(&staging)?;
        result.recovered_interrupted_restore = recovered;
        commit::commit(target, policy, || Ok(()))?;
        Ok(result)
    })();
    if restored.is_err() {
        // Whatever failed, no staging directory stays behind (commit undid its own part).
        let _ = remove_all(&staging);
    }
    restored
}

/// The first thing in `dir` that is the target's data (not Backstop's directories or
/// `lost+found`).
fn first_entry(dir: &Path) -> Result<Option<String>, RestoreError> {
    for entry in fs::read_dir(dir).map_err(write_err(dir))? {
        let name = entry.map_err(write_err(dir))?.file_name();
        if !commit::is_ours(&name) {
            return Ok(Some(name.to_string_lossy().into_owned()));
        }
    }
    Ok(None)
}

pub(crate) fn remove_all(path: &Path) -> Result<(), RestoreError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(write_err(path)(e)),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(write_err(path)),
        Ok(_) => fs::remove_file(path).map_err(write_err(path)),
    }
}

/// A path from the archive, checked: relative, no `..`, not empty.
pub(crate) fn safe_relative(raw: &Path) -> Result<PathBuf, RestoreError> {
    let shown = raw.to_string_lossy().into_owned();
    let mut clean = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(c) => clean.push(c),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(RestoreError::Unsafe {
                    path: shown,
                    why: "contains '..'",
                });
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(RestoreError::Unsafe {
                    path: shown,
                    why: "is absolute",
                });
            }
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(RestoreError::Unsafe {
            path: shown,
            why: "is empty",
        });
    }
    Ok(clean)
}

/// Reads the whole artifact, checking each entry against the manifest (read again, entry by
/// entry) and the artifact's digest; with `into`, also writes the entries there.
fn read_artifact(
    repo: &dyn Repository,
    manifest_key: &str,
    (header, trailer): &(Header, Trailer),
    into: Option<Extract<'_>>,
) -> Result<RestoreResult, RestoreError> {
    let key = artifact_key(manifest_key, &trailer.artifact);
    let artifact = repo.open(&key)?;
    let listing = open_manifest(repo, manifest_key)?;
    // Reading, hashing and decompressing run on their own thread, extracting on this one: the two
    // halves of the work overlap the way `zstd -dc | tar -x` does.
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(8);
    let compression = header.compression;
    let producer = std::thread::spawn(move || {
        let mut raw = DigestReader::new(io::BufReader::with_capacity(1 << 20, artifact));
        {
            match decoder(compression, &mut raw) {
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
                Ok(mut decoder) => loop {
                    let mut chunk = vec![0u8; 1 << 20];
                    match read_full(&mut decoder, &mut chunk) {
                        Ok(0) => break,
                        Ok(n) => {
                            chunk.truncate(n);
                            // The extractor stopped early (an error): just finish hashing.
                            if tx.send(Ok(chunk)).is_err() {
                                break;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            break;
                        }
                    }
                },
            }
        }
        // Whatever happened, hash the rest so the artifact's digest can say whether it was damaged.
        io::copy(&mut raw, &mut io::sink()).map(|_| raw.finish())
    });
    let reader = ChannelReader {
        rx,
        chunk: Vec::new(),
        pos: 0,
    };
    let outcome = extract_entries(reader, listing, manifest_key, trailer, into);
    let (digest, size) = producer
        .join()
        .map_err(|_| RestoreError::Integrity("the artifact reader crashed".into()))?
        // The artifact could not be read to its end (the storage failed, not the data).
        .map_err(|source| RepositoryError::Read {
            key: key.to_string(),
            source,
        })?;
    check_artifact(&digest, size, &trailer.artifact)?;
    outcome
}

/// The decompressed content of an artifact read from `raw`.
pub(crate) fn decoder<'a>(
    compression: Compression,
    raw: impl Read + 'a,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(raw)?),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(raw)),
        Compression::None => Box::new(raw),
    })
}

/// The artifact read back (its BLAKE3 and size) must be the one the manifest names.
pub(crate) fn check_artifact(
    digest: &str,
    size: u64,
    artifact: &ArtifactInfo,
) -> Result<(), RestoreError> {
    if digest != artifact.blake3 || size != artifact.size {
        return Err(RestoreError::Integrity(format!(
            "the artifact's BLAKE3 is {digest} ({size} bytes); the manifest says {} ({} bytes): the stored artifact is damaged",
            artifact.blake3, artifact.size
        )));
    }
    Ok(())
}

/// The decompressed stream, chunk by chunk from the reader thread.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The sender is done: end of stream.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Where extracted entries are written, and how.
#[derive(Clone, Copy)]
struct Extract<'a> {
    root: &'a Path,
    /// Device nodes are left out and setuid/setgid bits cleared.
    untrusted: bool,
}

fn extract_entries(
    reader: impl Read,
    mut listing: manifest::Reader<'_>,
    manifest_key: &str,
    expected: &Trailer,
    into: Option<Extract<'_>>,
) -> Result<RestoreResult, RestoreError> {
    let mut result = RestoreResult {
        files: 0,
        bytes: 0,
        entries: 0,
        verification: "Verified".into(),
        recovered_interrupted_restore: false,
        skipped_devices: 0,
    };
    let integrity = RestoreError::Integrity;
    let mut next_listed = || {
        listing
            .next_entry()
            .map_err(|e| manifest_error(manifest_key, e))
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| integrity(format!("reading the archive: {e}")))?;
    let mut extractor = into.map(|into| Extractor::new(into.root)).transpose()?;
    let untrusted = into.is_some_and(|into| into.untrusted);
    let mut buf = vec![0u8; BLOCK];
    let mut archived = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| integrity(format!("reading the archive: {e}")))?;
        let raw_path = entry
            .path()
            .map_err(|e| integrity(format!("reading an entry's path: {e}")))?
            .into_owned();
        let rel = safe_relative(&raw_path)?;
        let key = rel.to_string_lossy().into_owned();
        archived += 1;
        let Some(mut meta) = next_listed()? else {
            return Err(integrity(format!(
                "the archive holds {key:?} after the last entry the manifest lists"
            )));
        };
        let rel = rel.as_os_str().as_bytes();
        if meta.path_bytes().as_deref() != Some(rel) {
            return Err(integrity(format!(
                "the archive holds {key:?} where the manifest lists {:?}",
                meta.path
            )));
        }
        if untrusted {
            meta.mode &= !(libc::S_ISUID | libc::S_ISGID);
        }
        agrees(&entry, &meta, &key)?;
        match meta.kind {
            EntryKind::Symlink | EntryKind::Hardlink => {
                let in_archive = entry.link_name_bytes().map(|l| l.into_owned());
                if in_archive.as_deref() != meta.target_bytes().flatten().as_deref() {
                    return Err(integrity(format!(
                        "{} {key:?} links elsewhere than the manifest says",
                        if meta.kind == EntryKind::Symlink {
                            "symlink"
                        } else {
                            "hardlink"
                        }
                    )));
                }
            }
            EntryKind::Char | EntryKind::Block if untrusted => {
                result.skipped_devices += 1;
                result.entries += 1;
                continue;
            }
            _ => {}
        }
        let device = device(&entry);
        let mut copy = |file: Option<&mut File>| copy_file(&mut entry, file, &meta, &key, &mut buf);
        let bytes = match extractor.as_mut() {
            Some(x) => x.entry(rel, &meta, device, copy)?,
            None if meta.kind == EntryKind::File => copy(None)?,
            None => 0,
        };
        if meta.kind == EntryKind::File {
            result.files += 1;
            result.bytes += bytes;
        }
        result.entries += 1;
    }
    if next_listed()?.is_some() {
        return Err(integrity(format!(
            "the archive holds {archived} entries; the manifest lists {}",
            expected.entries
        )));
    }
    if listing.trailer() != Some(expected) {
        return Err(integrity(
            "the manifest changed in the repository while the restore read it".into(),
        ));
    }
    if let Some(x) = extractor {
        x.finish()?;
    }
    Ok(result)
}

/// The archive and the manifest must agree on what the entry is, and on a file's size before a
/// byte of it is written.
fn agrees<R: Read>(entry: &tar::Entry<'_, R>, meta: &Entry, key: &str) -> Result<(), RestoreError> {
    let kind = entry_kind(entry.header().entry_type());
    if kind != Some(meta.kind) {
        return Err(RestoreError::Integrity(format!(
            "{key:?} is a {:?} entry in the archive; the manifest says {:?}",
            entry.header().entry_type(),
            meta.kind
        )));
    }
    if meta.kind == EntryKind::File && entry.size() != meta.size {
        return Err(RestoreError::Integrity(format!(
            "{key:?} holds {} bytes in the archive; the manifest says {}",
            entry.size(),
            meta.size
        )));
    }
    Ok(())
}

/// Reads a file entry and writes it into `file` when there is one (holes for blocks of zeros);
/// a legacy manifest's digest of it must match. Returns the bytes read.
fn copy_file<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    mut file: Option<&mut File>,
    meta: &Entry,
    key: &str,
    buf: &mut [u8],
) -> Result<u64, RestoreError> {
    let mut hasher = meta.blake3.as_ref().map(|_| blake3::Hasher::new());
    let mut written = 0u64;
    let mut ends_in_hole = false;
    loop {
        let n = read_full(entry, buf).map_err(|e| {
            RestoreError::Integrity(format!("reading {key:?} from the archive: {e}"))
        })?;
        if n == 0 {
            break;
        }
        let data = &buf[..n];
        if let Some(hasher) = hasher.as_mut() {
            hasher.update(data);
        }
        if let Some(file) = file.as_deref_mut() {
            let failed = |e| RestoreError::Write {
                path: PathBuf::from(key),
                source: e,
            };
            ends_in_hole = data.iter().all(|b| *b == 0);
            if ends_in_hole {
                file.seek(SeekFrom::Current(n as i64)).map_err(failed)?;
            } else {
                file.write_all(data).map_err(failed)?;
            }
        }
        written += n as u64;
    }
    if ends_in_hole && let Some(file) = file {
        file.set_len(written).map_err(|e| RestoreError::Write {
            path: PathBuf::from(key),
            source: e,
        })?;
    }
    if let Some(hasher) = hasher {
        let digest = hasher.finalize().to_hex().to_string();
        if Some(digest.as_str()) != meta.blake3.as_deref() {
            return Err(RestoreError::Integrity(format!(
                "{key:?} has BLAKE3 {digest}; the manifest says {}",
                meta.blake3.as_deref().unwrap_or("none")
            )));
        }
    }
    Ok(written)
}

/// The manifest kind a tar entry type stands for (none for types Backstop never writes).
fn entry_kind(t: tar::EntryType) -> Option<EntryKind> {
    Some(match t {
        tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
        tar::EntryType::Directory => EntryKind::Dir,
        tar::EntryType::Symlink => EntryKind::Symlink,
        tar::EntryType::Link => EntryKind::Hardlink,
        tar::EntryType::Fifo => EntryKind::Fifo,
        tar::EntryType::Char => EntryKind::Char,
        tar::EntryType::Block => EntryKind::Block,
        _ => return None,
    })
}

/// Owner, mode and mtime of the directory `rel` below `root`, set on the directory itself,
/// reached one component at a time without following links.
pub(crate) fn apply_dir_metadata(
    root: &Path,
    rel: &Path,
    meta: &Entry,
) -> Result<(), RestoreError> {
    let path = root.join(rel);
    let fd = crate::walk::open_dir_beneath(root, rel).map_err(|e| {
        if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) {
            RestoreError::Unsafe {
                path: rel.to_string_lossy().into_owned(),
                why: "would be changed through a symlink",
            }
        } else {
            write_err(&path)(e)
        }
    })?;
    crate::extract::set_metadata(std::os::fd::AsRawFd::as_raw_fd(&fd), meta)
        .map_err(write_err(&path))
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn device<R: Read>(entry: &tar::Entry<'_, R>) -> libc::dev_t {
    let major = entry.header().device_major().ok().flatten().unwrap_or(0);
    let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
    libc::makedev(major, minor)
}

/// Hashes and counts the raw (compressed) artifact as it is read.
pub(crate) struct DigestReader<R> {
    inner: R,
    hasher: blake3::Hasher,
    size: u64,
}

impl<R: Read> DigestReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: blake3::Hasher::new(),
            size: 0,
        }
    }

    pub(crate) fn finish(self) -> (String, u64) {
        (self.hasher.finalize().to_hex().to_string(), self.size)
    }
}

impl<R: Read> Read for DigestReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_target_is_named_apart_from_other_write_failures() {
        let write = |source| RestoreError::Write {
            path: "/target/f".into(),
            source,
        };
        let full = write(io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(full.reason(), Reason::TargetFull);
        let other = write(io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(other.reason(), Reason::TargetWriteFailed);
    }

    /// Interrupted before every read, and handing out at most 2 bytes at a time.
    struct Interrupting<'a> {
        data: &'a [u8],
        interrupt: bool,
    }

    impl Read for Interrupting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(2);
            self.data.read(&mut buf[..n])
        }
    }

    #[test]
    fn read_full_fills_the_buffer_across_short_and_interrupted_reads() -> io::Result<()> {
        let mut buf = [0u8; 5];
        let mut reader = Interrupting {
            data: b"abcdefg",
            interrupt: false,
        };
        assert_eq!(read_full(&mut reader, &mut buf)?, 5);
        assert_eq!(&buf, b"abcde");
        assert_eq!(
            read_full(&mut reader, &mut buf)?,
            2,
            "what is left, at the end"
        );
        assert_eq!(&buf[..2], b"fg");
        Ok(())
    }

    #[test]
    fn the_recorded_digest_must_be_the_one_the_manifest_names() {
        let artifact = ArtifactInfo {
            name: "data.tar.zst".into(),
            size: 1,
            blake3: "ab".repeat(32),
        };
        assert!(check_recorded_digest(&artifact, None).is_ok());
        assert!(check_recorded_digest(&artifact, Some(&"ab".repeat(32))).is_ok());
        let err = check_recorded_digest(&artifact, Some(&"cd".repeat(32)))
            .expect_err("a swapped manifest");
        assert_eq!(err.reason(), Reason::IntegrityCheckFailed);
    }
}
