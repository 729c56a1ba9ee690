//! Reading an artifact back: `verify` checks it against its manifest without writing anything;
//! `restore` extracts it into a staging directory inside the target volume, checks every digest,
//! and only then commits it into place (so a corrupt artifact leaves the target as it was).
//! Entries with absolute paths or `..`, and entries that would go through a symlink, are refused.

use crate::commit;
use crate::manifest::{Entry, EntryKind, Manifest};
use crate::repository::{Repository, RepositoryError};
use backstop_api::{Compression, ExistingDataPolicy};
use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
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
            RestoreError::Repository(r) => r.reason().unwrap_or(Reason::ArtifactUnreadable),
            RestoreError::Manifest(_) => Reason::ArtifactUnreadable,
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

/// The manifest at `key`, checked (see `check_manifest`).
pub fn read_manifest(repo: &dyn Repository, key: &str) -> Result<Manifest, RestoreError> {
    let data = repo.get(key)?;
    let manifest: Manifest =
        serde_json::from_slice(&data).map_err(|e| RestoreError::Manifest(format!("{key}: {e}")))?;
    check_manifest(&manifest)?;
    Ok(manifest)
}

/// A manifest is data from the repository, not a trusted plan: every path (and hardlink target)
/// must pass the rules archive paths pass, written in its one plain form (no `.`, no empty or
/// trailing components), and no path may be listed twice.
pub fn check_manifest(manifest: &Manifest) -> Result<(), RestoreError> {
    if manifest.format != crate::manifest::FORMAT {
        return Err(RestoreError::Manifest(format!(
            "format {:?} is not {:?}, the one this mover reads",
            manifest.format,
            crate::manifest::FORMAT
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for entry in &manifest.entries {
        let damaged =
            |what| RestoreError::Manifest(format!("{what} of {:?} is not hex", entry.path));
        let plain = |path: &[u8]| -> Result<(), RestoreError> {
            let clean = safe_relative(Path::new(OsStr::from_bytes(path)))?;
            if clean.as_os_str().as_bytes() != path {
                return Err(RestoreError::Unsafe {
                    path: String::from_utf8_lossy(path).into_owned(),
                    why: "is not written in its plain form in the manifest",
                });
            }
            Ok(())
        };
        let path = entry.path_bytes().ok_or_else(|| damaged("rawPath"))?;
        plain(&path)?;
        let target = entry
            .target_bytes()
            .map(|t| t.ok_or_else(|| damaged("rawTarget")));
        if entry.kind == EntryKind::Hardlink {
            plain(&target.transpose()?.unwrap_or_default())?;
        }
        if !seen.insert(path) {
            return Err(RestoreError::Unsafe {
                path: entry.path.clone(),
                why: "is listed twice in the manifest",
            });
        }
    }
    Ok(())
}

/// The artifact digest the operator recorded when the backup completed, if given, must be the
/// one the manifest names: a manifest swapped in the repository (with an artifact to match) is
/// caught before anything is read.
fn check_recorded_digest(manifest: &Manifest, recorded: Option<&str>) -> Result<(), RestoreError> {
    match recorded {
        Some(recorded) if recorded != manifest.artifact.blake3 => {
            Err(RestoreError::Integrity(format!(
                "the manifest names an artifact with BLAKE3 {}, but the backup recorded {recorded}: the manifest in the repository was replaced or damaged",
                manifest.artifact.blake3
            )))
        }
        _ => Ok(()),
    }
}

/// The artifact's key next to its manifest.
pub fn artifact_key(manifest_key: &str, manifest: &Manifest) -> String {
    match manifest_key.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{}", manifest.artifact.name),
        None => manifest.artifact.name.clone(),
    }
}

/// Checks an artifact against its manifest (and the manifest against the digest recorded at
/// backup time, when given) without writing anything.
pub fn verify(
    repo: &dyn Repository,
    manifest_key: &str,
    recorded_digest: Option<&str>,
) -> Result<RestoreResult, RestoreError> {
    let manifest = read_manifest(repo, manifest_key)?;
    check_recorded_digest(&manifest, recorded_digest)?;
    let key = artifact_key(manifest_key, &manifest);
    read_artifact(repo.open(&key)?, &key, &manifest, None)
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
    let mut manifest = read_manifest(repo, manifest_key)?;
    check_recorded_digest(&manifest, options.recorded_digest)?;
    if options.untrusted {
        for entry in &mut manifest.entries {
            entry.mode &= !(libc::S_ISUID | libc::S_ISGID);
        }
    }
    // An earlier restore into this target that was killed mid-commit is undone first.
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
        let key = artifact_key(manifest_key, &manifest);
        let into = Extract {
            root: &staging,
            skip_devices: options.untrusted,
        };
        let mut result = read_artifact(repo.open(&key)?, &key, &manifest, Some(into))?;
        result.recovered_interrupted_restore = recovered;
        commit::commit(target, policy, || {
            // Moving entries into place touched directory times: put the recorded ones back
            // (on the directories themselves, reached without following any link).
            for entry in manifest
                .entries
                .iter()
                .rev()
                .filter(|e| e.kind == EntryKind::Dir)
            {
                let path = entry.path_bytes().unwrap_or_default();
                apply_dir_metadata(target, Path::new(OsStr::from_bytes(&path)), entry)?;
            }
            Ok(())
        })?;
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

/// Refuses to write through a symlink: every parent of `rel` under `root` must be a real directory.
fn check_parents(root: &Path, rel: &Path) -> Result<(), RestoreError> {
    let mut current = root.to_path_buf();
    if let Some(parent) = rel.parent() {
        for component in parent.components() {
            current.push(component);
            match fs::symlink_metadata(&current) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(RestoreError::Unsafe {
                        path: rel.to_string_lossy().into_owned(),
                        why: "would be written through a symlink",
                    });
                }
                Ok(m) if !m.is_dir() => {
                    return Err(RestoreError::Unsafe {
                        path: rel.to_string_lossy().into_owned(),
                        why: "has a parent that is not a directory",
                    });
                }
                Ok(_) => {}
                Err(_) => fs::create_dir_all(&current).map_err(write_err(&current))?,
            }
        }
    }
    Ok(())
}

/// Reads the whole artifact, checking each entry against the manifest and the artifact's digest;
/// with `into`, also writes the entries there.
fn read_artifact(
    artifact: Box<dyn Read + Send>,
    key: &str,
    manifest: &Manifest,
    into: Option<Extract<'_>>,
) -> Result<RestoreResult, RestoreError> {
    // Reading, hashing and decompressing run on their own thread, extracting on this one: the two
    // halves of the work overlap the way `zstd -dc | tar -x` does.
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(8);
    let compression = manifest.compression;
    let producer = std::thread::spawn(move || {
        let mut raw = DigestReader::new(io::BufReader::with_capacity(1 << 20, artifact));
        {
            let decoder: io::Result<Box<dyn Read + '_>> = match compression {
                Compression::Zstd => {
                    zstd::stream::read::Decoder::new(&mut raw).map(|d| Box::new(d) as Box<dyn Read>)
                }
                Compression::Gzip => Ok(Box::new(flate2::read::GzDecoder::new(&mut raw))),
                Compression::None => Ok(Box::new(&mut raw)),
            };
            match decoder {
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
    let outcome = extract_entries(
        ChannelReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
        },
        manifest,
        into,
    );
    let (digest, size) = producer
        .join()
        .map_err(|_| RestoreError::Integrity("the artifact reader crashed".into()))?
        // The artifact could not be read to its end (the storage failed, not the data).
        .map_err(|source| RepositoryError::Read {
            key: key.to_string(),
            source,
        })?;
    if digest != manifest.artifact.blake3 || size != manifest.artifact.size {
        return Err(RestoreError::Integrity(format!(
            "the artifact's BLAKE3 is {digest} ({size} bytes); the manifest says {} ({} bytes): the stored artifact is damaged",
            manifest.artifact.blake3, manifest.artifact.size
        )));
    }
    outcome
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
    skip_devices: bool,
}

/// The manifest's entries by exact path bytes (the manifest was checked, so every path decodes),
/// and which of them the archive held so far, a byte each.
struct Expected<'m> {
    index: HashMap<Cow<'m, [u8]>, usize>,
    seen: Vec<bool>,
    seen_count: usize,
}

impl<'m> Expected<'m> {
    fn new(manifest: &'m Manifest) -> Self {
        Self {
            index: manifest
                .entries
                .iter()
                .enumerate()
                .map(|(i, e)| (e.path_bytes().unwrap_or_default(), i))
                .collect(),
            seen: vec![false; manifest.entries.len()],
            seen_count: 0,
        }
    }

    /// The manifest index of the archive entry at `rel`: listed, and met for the first time.
    fn claim(&mut self, rel: &Path, key: &str) -> Result<usize, RestoreError> {
        let Some(&index) = self.index.get(rel.as_os_str().as_bytes()) else {
            return Err(RestoreError::Integrity(format!(
                "the archive holds {key:?}, which the manifest does not list"
            )));
        };
        if std::mem::replace(&mut self.seen[index], true) {
            return Err(RestoreError::Integrity(format!(
                "the archive holds {key:?} twice"
            )));
        }
        self.seen_count += 1;
        Ok(index)
    }

    /// Every listed entry was in the archive.
    fn all_seen(&self) -> Result<(), RestoreError> {
        if self.seen_count != self.seen.len() {
            return Err(RestoreError::Integrity(format!(
                "the archive holds {} entries; the manifest lists {}",
                self.seen_count,
                self.seen.len()
            )));
        }
        Ok(())
    }
}

/// Where an entry goes: its path under the target, and the target.
type Dest<'a> = Option<(PathBuf, &'a Path)>;

fn extract_entries(
    reader: impl Read,
    manifest: &Manifest,
    into: Option<Extract<'_>>,
) -> Result<RestoreResult, RestoreError> {
    let mut expected = Expected::new(manifest);
    let mut result = RestoreResult {
        files: 0,
        bytes: 0,
        entries: 0,
        verification: "Verified".into(),
        recovered_interrupted_restore: false,
        skipped_devices: 0,
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| RestoreError::Integrity(format!("reading the archive: {e}")))?;
    let mut deferred = Vec::new();
    for entry in entries {
        let mut entry =
            entry.map_err(|e| RestoreError::Integrity(format!("reading the archive: {e}")))?;
        let raw_path = entry
            .path()
            .map_err(|e| RestoreError::Integrity(format!("reading an entry's path: {e}")))?
            .into_owned();
        let rel = safe_relative(&raw_path)?;
        let key = rel.to_string_lossy().into_owned();
        let meta = &manifest.entries[expected.claim(&rel, &key)?];
        agrees(&entry, meta, &key)?;
        let dest: Dest<'_> = into.map(|into| (into.root.join(&rel), into.root));
        if let Some((path, root)) = &dest {
            check_parents(root, &rel)?;
            if meta.kind != EntryKind::Dir {
                // Whatever a (malicious) earlier entry put here is replaced, never followed.
                remove_all(path)?;
            }
        }
        match meta.kind {
            EntryKind::File => {
                result.bytes += extract_file(&mut entry, meta, &key, &dest)?;
                result.files += 1;
            }
            EntryKind::Dir => {
                if let Some((path, _)) = &dest {
                    make_dir(path)?;
                    deferred.push((rel.clone(), meta));
                }
            }
            EntryKind::Symlink => extract_symlink(&entry, meta, &key, &dest)?,
            EntryKind::Hardlink => extract_hardlink(&entry, meta, &key, &dest)?,
            EntryKind::Char | EntryKind::Block if into.is_some_and(|i| i.skip_devices) => {
                result.skipped_devices += 1;
                result.entries += 1;
                continue;
            }
            EntryKind::Fifo | EntryKind::Char | EntryKind::Block => {
                if let Some((path, _)) = &dest {
                    let (kind, dev) = match meta.kind {
                        EntryKind::Fifo => (libc::S_IFIFO, 0),
                        EntryKind::Char => (libc::S_IFCHR, device(&entry)),
                        _ => (libc::S_IFBLK, device(&entry)),
                    };
                    mknod(path, kind | (meta.mode & 0o7777), dev)?;
                }
            }
        }
        if let Some((path, _)) = &dest
            && meta.kind != EntryKind::Dir
            && meta.kind != EntryKind::Hardlink
        {
            apply_metadata(path, meta)?;
        }
        result.entries += 1;
    }
    expected.all_seen()?;
    // Directories last, deepest first: writing their children changed their times.
    if let Some(Extract { root, .. }) = into {
        for (rel, meta) in deferred.iter().rev() {
            apply_dir_metadata(root, rel, meta)?;
        }
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

/// Reads a file entry, hashing it, and writes it (holes for blocks of zeros) when it has a
/// destination; its size and BLAKE3 must be the manifest's. Returns the bytes read.
fn extract_file<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    meta: &Entry,
    key: &str,
    dest: &Dest<'_>,
) -> Result<u64, RestoreError> {
    let mut hasher = blake3::Hasher::new();
    let mut out = match dest {
        Some((path, _)) => Some((
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(write_err(path))?,
            path,
        )),
        None => None,
    };
    let mut buf = vec![0u8; BLOCK];
    let mut written = 0u64;
    loop {
        let n = read_full(entry, &mut buf).map_err(|e| {
            RestoreError::Integrity(format!("reading {key:?} from the archive: {e}"))
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if let Some((f, path)) = out.as_mut() {
            if buf[..n].iter().all(|b| *b == 0) {
                f.seek(SeekFrom::Current(n as i64))
                    .map_err(write_err(path))?;
            } else {
                f.write_all(&buf[..n]).map_err(write_err(path))?;
            }
        }
        written += n as u64;
    }
    if let Some((f, path)) = out.as_mut() {
        f.set_len(written).map_err(write_err(path))?;
    }
    let digest = hasher.finalize().to_hex().to_string();
    if Some(digest.as_str()) != meta.blake3.as_deref() || written != meta.size {
        return Err(RestoreError::Integrity(format!(
            "{key:?} has BLAKE3 {digest} ({written} bytes); the manifest says {} ({} bytes)",
            meta.blake3.as_deref().unwrap_or("none"),
            meta.size
        )));
    }
    Ok(written)
}

/// A directory at `path`, replacing anything else there.
fn make_dir(path: &Path) -> Result<(), RestoreError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => {
            remove_all(path)?;
            fs::create_dir(path).map_err(write_err(path))
        }
        Err(_) => fs::create_dir(path).map_err(write_err(path)),
    }
}

/// A symlink entry must point where the manifest says; it is created with that target as
/// recorded (creating a link never writes through it).
fn extract_symlink<R: Read>(
    entry: &tar::Entry<'_, R>,
    meta: &Entry,
    key: &str,
    dest: &Dest<'_>,
) -> Result<(), RestoreError> {
    let target = meta.target_bytes().flatten().unwrap_or_default();
    let in_archive = entry.link_name_bytes().map(|l| l.into_owned());
    if in_archive.as_deref() != Some(&*target) {
        return Err(RestoreError::Integrity(format!(
            "symlink {key:?} points elsewhere than the manifest says"
        )));
    }
    if let Some((path, _)) = dest {
        symlink(OsStr::from_bytes(&target), path).map_err(write_err(path))?;
    }
    Ok(())
}

/// A hardlink entry must link where the manifest says, inside the target, to a file already
/// restored there.
fn extract_hardlink<R: Read>(
    entry: &tar::Entry<'_, R>,
    meta: &Entry,
    key: &str,
    dest: &Dest<'_>,
) -> Result<(), RestoreError> {
    let target = meta.target_bytes().flatten().unwrap_or_default();
    let target = safe_relative(Path::new(OsStr::from_bytes(&target)))?;
    let in_archive = entry.link_name().ok().flatten().map(|l| l.into_owned());
    if in_archive.as_deref() != Some(target.as_path()) {
        return Err(RestoreError::Integrity(format!(
            "hardlink {key:?} links elsewhere than the manifest says"
        )));
    }
    if let Some((path, root)) = dest {
        check_parents(root, &target)?;
        let source = root.join(&target);
        if fs::symlink_metadata(&source)
            .map(|m| !m.is_file())
            .unwrap_or(true)
        {
            return Err(RestoreError::Unsafe {
                path: key.to_string(),
                why: "hardlinks to something that is not a restored file",
            });
        }
        fs::hard_link(&source, path).map_err(write_err(path))?;
    }
    Ok(())
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
fn apply_dir_metadata(root: &Path, rel: &Path, meta: &Entry) -> Result<(), RestoreError> {
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
    let fd = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let uid = u32::try_from(meta.uid).unwrap_or(u32::MAX);
    let gid = u32::try_from(meta.gid).unwrap_or(u32::MAX);
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: meta.mtime as libc::time_t,
            tv_nsec: i64::from(meta.mtime_nanos) as _,
        },
    ];
    // SAFETY: `fd` is an open directory for the duration of these calls; `times` holds two
    // timespecs, as futimens needs.
    let failed = unsafe {
        libc::fchown(fd, uid, gid) != 0
            || libc::fchmod(fd, (meta.mode & 0o7777) as libc::mode_t) != 0
            || libc::futimens(fd, times.as_ptr()) != 0
    };
    if failed {
        return Err(write_err(&path)(io::Error::last_os_error()));
    }
    Ok(())
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

fn c_path(path: &Path) -> Result<CString, RestoreError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| write_err(path)(io::Error::other("path holds a NUL byte")))
}

fn mknod(path: &Path, mode: u32, dev: libc::dev_t) -> Result<(), RestoreError> {
    let c = c_path(path)?;
    // SAFETY: `c` is a valid NUL-terminated path that lives across the call.
    let rc = unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, dev) };
    if rc != 0 {
        return Err(write_err(path)(io::Error::last_os_error()));
    }
    Ok(())
}

/// Owner, mode and mtime as recorded; symlinks are never followed.
fn apply_metadata(path: &Path, meta: &Entry) -> Result<(), RestoreError> {
    let uid = u32::try_from(meta.uid).unwrap_or(u32::MAX);
    let gid = u32::try_from(meta.gid).unwrap_or(u32::MAX);
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(write_err(path))?;
    if meta.kind != EntryKind::Symlink {
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode & 0o7777))
            .map_err(write_err(path))?;
    }
    let c = c_path(path)?;
    let mtime = libc::timespec {
        tv_sec: meta.mtime as libc::time_t,
        tv_nsec: i64::from(meta.mtime_nanos) as _,
    };
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        mtime,
    ];
    // SAFETY: `c` is a valid NUL-terminated path and `times` holds two timespecs, as utimensat needs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(write_err(path)(io::Error::last_os_error()));
    }
    Ok(())
}

/// Hashes and counts the raw (compressed) artifact as it is read.
struct DigestReader<R> {
    inner: R,
    hasher: blake3::Hasher,
    size: u64,
}

impl<R: Read> DigestReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: blake3::Hasher::new(),
            size: 0,
        }
    }

    fn finish(self) -> (String, u64) {
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

    #[test]
    fn nothing_is_written_through_a_link_or_below_a_file() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        fs::create_dir(root.join("d"))?;
        fs::write(root.join("f"), b"")?;
        symlink("/etc", root.join("l"))?;
        assert!(check_parents(root, Path::new("d/x")).is_ok());
        assert!(
            check_parents(root, Path::new("new/x")).is_ok(),
            "made later"
        );
        let why = |rel: &str| match check_parents(root, Path::new(rel)) {
            Err(RestoreError::Unsafe { why, .. }) => why,
            other => panic!("{rel}: {other:?}"),
        };
        assert_eq!(why("l/passwd"), "would be written through a symlink");
        assert_eq!(why("f/x"), "has a parent that is not a directory");
        Ok(())
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
        let manifest = Manifest {
            format: "backstop/v1".into(),
            created_at: String::new(),
            source: "data".into(),
            compression: backstop_api::Compression::Zstd,
            artifact: crate::manifest::ArtifactInfo {
                name: "data.tar.zst".into(),
                size: 1,
                blake3: "ab".repeat(32),
            },
            totals: Default::default(),
            entries: Vec::new(),
        };
        assert!(check_recorded_digest(&manifest, None).is_ok());
        assert!(check_recorded_digest(&manifest, Some(&"ab".repeat(32))).is_ok());
        let err = check_recorded_digest(&manifest, Some(&"cd".repeat(32)))
            .expect_err("a swapped manifest");
        assert_eq!(err.reason(), Reason::IntegrityCheckFailed);
    }
}
