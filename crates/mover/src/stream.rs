//! Command backups and restores: a stream passes between the user's container and the mover
//! through a named pipe in an emptyDir both mount (`contract::STREAM_MOUNT`). The user's
//! command runs wrapped (`contract::DUMP_SCRIPT`, `LOAD_SCRIPT`), which leaves its exit status
//! and the end of its output beside the pipe; no `kubectl exec` is involved.
//!
//! `dump` commits the stream like any artifact (compressed, BLAKE3-digested, manifest last),
//! and only when the command exited 0 having written something. `load` stages the artifact
//! where the restore command cannot see it, checks both digests, and only then makes the pipe:
//! the restore command never reads a byte that was not verified, and when verification fails
//! it does not run at all.
//!
//! Everything in the shared directory may have been put there by the user's container: the
//! mover never follows a link there, reads only regular files and only their last bytes, and
//! checks that the pipe it opens is a pipe.

use crate::archive::ArchiveError;
use crate::backup::{self, BackupError, HashingWriter};
use crate::manifest::{self, Content, Entry, EntryKind, Header, Totals, Trailer};
use crate::repository::Repository;
use crate::restore::{self, RestoreError};
use backstop_api::Compression;
use backstop_api::contract::{
    BackupResult, Reason, RestoreResult, STREAM_ABORT, STREAM_EXIT, STREAM_OUTPUT,
    STREAM_OUTPUT_BYTES, STREAM_PIPE,
};
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long the mover waits, once the stream has ended, for the command to exit.
const EXIT_WAIT: Duration = Duration::from_secs(600);
const POLL: Duration = Duration::from_millis(100);
/// Bytes per read and write of the stream.
const CHUNK: usize = 1 << 20;

/// What `dump` is asked to do.
pub struct DumpRequest<'a> {
    /// The directory shared with the command's container.
    pub stream_dir: &'a Path,
    /// The stream's name (names the artifact and the manifest).
    pub name: &'a str,
    /// The backup's directory in the repository.
    pub dir: &'a str,
    pub compression: Compression,
    pub created_at: String,
}

/// Stores what the command writes into the pipe as the stream `name`.
pub fn dump(repo: &dyn Repository, req: &DumpRequest<'_>) -> Result<BackupResult, BackupError> {
    make_pipe(req.stream_dir)
        .map_err(|e| BackupError::Source(format!("making the stream's pipe: {e}")))?;
    let header = Header {
        format: manifest::FORMAT.to_string(),
        created_at: req.created_at.clone(),
        source: req.name.to_string(),
        compression: req.compression,
        content: Content::Stream,
    };
    let artifact_name = manifest::artifact_name(req.name, req.compression.stream_extension());
    // Blocks until the command's wrapper opens the pipe to write: a command that never starts
    // leaves nothing in the repository, not even a partial upload.
    let mut pipe = open_pipe(&req.stream_dir.join(STREAM_PIPE), false)
        .map_err(|e| BackupError::Source(format!("opening the stream's pipe: {e}")))?;
    let stored = backup::store(
        repo,
        req.dir,
        &artifact_name,
        &header,
        |out, listing| {
            let mut hashing = HashingWriter::new(out);
            copy(&mut pipe, &mut hashing).1.map_err(|(e, reading)| {
                if reading {
                    BackupError::Source(format!("reading the command's output: {e}"))
                } else {
                    BackupError::Archive(ArchiveError::Write(e))
                }
            })?;
            let (_, digest, size) = hashing.finish();
            let entry = stream_entry(req.name, size, digest);
            listing
                .entry(&entry)
                .map_err(|e| BackupError::Archive(ArchiveError::Record(e)))?;
            let totals = Totals {
                bytes: size,
                ..Totals::default()
            };
            Ok((size, totals))
        },
        |&size| {
            let exit = wait_for_exit(req.stream_dir, EXIT_WAIT).map_err(command_failed)?;
            if exit.code != 0 {
                return Err(command_failed(exit.failure()));
            }
            if size == 0 {
                return Err(BackupError::Refused {
                    reason: Reason::EmptyDump,
                    message: format!(
                        "the command exited 0 having written nothing to its standard output: nothing was stored{}",
                        said(&exit.output)
                    ),
                });
            }
            Ok(())
        },
    )?;
    Ok(BackupResult {
        pvc: req.name.to_string(),
        artifact: stored.key,
        bytes: stored.size,
        digest: stored.digest,
        files: 0,
        source_bytes: stored.filled,
        changed_while_reading: 0,
        changed_files: Vec::new(),
        restic: None,
    })
}

fn command_failed(message: String) -> BackupError {
    BackupError::Refused {
        reason: Reason::CommandFailed,
        message,
    }
}

/// The manifest's one entry of a stream.
fn stream_entry(name: &str, size: u64, digest: String) -> Entry {
    let mut entry = Entry {
        kind: EntryKind::Stream,
        size,
        mode: 0o600,
        mtime: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
        blake3: Some(digest),
        ..Entry::default()
    };
    entry.set_path(name.as_bytes());
    entry
}

/// What `load` is asked to do.
pub struct LoadRequest<'a> {
    pub manifest: &'a str,
    /// The directory shared with the restore command's container.
    pub stream_dir: &'a Path,
    /// A directory only the mover sees, for the artifact while it is checked.
    pub staging: &'a Path,
    /// The artifact's BLAKE3 recorded when the backup completed.
    pub recorded_digest: Option<&'a str>,
    /// The artifact's size recorded when the backup completed: the staging directory is sized
    /// for it, so a larger artifact is refused before it is copied.
    pub recorded_bytes: Option<u64>,
}

/// Stages and verifies the stream, then feeds it to the restore command through the pipe.
pub fn load(repo: &dyn Repository, req: &LoadRequest<'_>) -> Result<RestoreResult, RestoreError> {
    let (header, entry, trailer) = read_stream_manifest(repo, req.manifest, req.recorded_digest)?;
    let key = restore::artifact_key(req.manifest, &trailer.artifact);
    let size = trailer.artifact.size;
    if let Some(recorded) = req.recorded_bytes
        && size > recorded
    {
        return Err(RestoreError::Integrity(format!(
            "the manifest names an artifact of {size} bytes, the backup recorded {recorded}: refused before copying it"
        )));
    }
    let staged = req.staging.join("artifact");
    let write_error = restore::write_err(&staged);
    {
        let mut file = File::create(&staged).map_err(restore::write_err(&staged))?;
        // Never more than the manifest's size (and one byte to tell a larger object).
        let mut artifact = repo.open(&key)?.take(size.saturating_add(1));
        let (copied, result) = copy(&mut artifact, &mut file);
        result.map_err(|(e, reading)| stream_io(e, reading, &key, &staged))?;
        if copied > size {
            return Err(RestoreError::Integrity(format!(
                "artifact {key} is larger than the {size} bytes its manifest names: refused at byte {copied}"
            )));
        }
        file.sync_all().map_err(restore::write_err(&staged))?;
    }
    let opened = || File::open(&staged).map_err(restore::write_err(&staged));
    check(opened()?, &header, &entry, &trailer)?;
    make_pipe(req.stream_dir).map_err(restore::write_err(req.stream_dir))?;
    // Blocks until the wrapper opens the pipe to read.
    let pipe_path = req.stream_dir.join(STREAM_PIPE);
    let mut pipe = open_pipe(&pipe_path, true).map_err(restore::write_err(&pipe_path))?;
    let mut content = restore::decoder(header.compression, BufReader::new(opened()?))
        .map_err(restore::write_err(&staged))?;
    let (delivered, copied) = copy(&mut content, &mut pipe);
    match copied {
        // The command stopped reading (it exited): what it says decides.
        Err((e, false)) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err((e, true)) => return Err(write_error(e)),
        Err((e, false)) => return Err(restore::write_err(&pipe_path)(e)),
        Ok(()) => {}
    }
    drop(pipe);
    let exit = wait_for_exit(req.stream_dir, EXIT_WAIT).map_err(RestoreError::Command)?;
    if exit.code != 0 {
        return Err(RestoreError::Command(exit.failure()));
    }
    let fed = if delivered == entry.size {
        "the whole stream"
    } else {
        "part of the stream (it stopped reading and exited 0)"
    };
    Ok(RestoreResult {
        files: 0,
        bytes: delivered,
        entries: 1,
        verification: format!(
            "the artifact's and the stream's BLAKE3 matched the manifest before the restore command read {fed}"
        ),
        recovered_interrupted_restore: false,
        skipped_devices: 0,
    })
}

/// Checks a stream artifact in the repository against its manifest.
pub fn verify(
    repo: &dyn Repository,
    manifest_key: &str,
    recorded_digest: Option<&str>,
) -> Result<RestoreResult, RestoreError> {
    let (header, entry, trailer) = read_stream_manifest(repo, manifest_key, recorded_digest)?;
    let key = restore::artifact_key(manifest_key, &trailer.artifact);
    let artifact = repo.open(&key)?;
    check(artifact, &header, &entry, &trailer)?;
    Ok(RestoreResult {
        files: 0,
        bytes: entry.size,
        entries: 1,
        verification: "the artifact's and the stream's BLAKE3 matched the manifest".into(),
        recovered_interrupted_restore: false,
        skipped_devices: 0,
    })
}

/// A stream's manifest: its header, its one `stream` entry and its end line.
fn read_stream_manifest(
    repo: &dyn Repository,
    key: &str,
    recorded: Option<&str>,
) -> Result<(Header, Entry, Trailer), RestoreError> {
    let damaged = |what: &str| RestoreError::Manifest(format!("{key}: {what}"));
    let mut listing = restore::open_manifest(repo, key)?;
    if listing.header().content != Content::Stream {
        return Err(damaged(
            "holds a volume's files, not a command's stream: restore it into a PVC",
        ));
    }
    let read = |listing: &mut manifest::Reader<'_>| {
        listing
            .next_entry()
            .map_err(|e| restore::manifest_error(key, e))
    };
    let entry = match read(&mut listing)? {
        Some(entry) if entry.kind == EntryKind::Stream && entry.blake3.is_some() => entry,
        _ => return Err(damaged("a stream's manifest must list the stream first")),
    };
    if read(&mut listing)?.is_some() {
        return Err(damaged("a stream's manifest lists more than the stream"));
    }
    let (header, trailer) = listing
        .into_trailer()
        .map_err(|e| restore::manifest_error(key, e))?;
    restore::check_recorded_digest(&trailer.artifact, recorded)?;
    Ok((header, entry, trailer))
}

/// Reads the whole artifact from `raw`: its own digest and size, and its decompressed content's,
/// must be the manifest's.
fn check(
    raw: impl Read,
    header: &Header,
    entry: &Entry,
    trailer: &Trailer,
) -> Result<(), RestoreError> {
    let mut raw = restore::DigestReader::new(BufReader::with_capacity(CHUNK, raw));
    let mut content = HashingWriter::new(io::sink());
    let decoded = restore::decoder(header.compression, &mut raw)
        .and_then(|mut d| io::copy(&mut d, &mut content));
    // Whatever happened, hash the rest so the artifact's digest can say whether it was damaged.
    io::copy(&mut raw, &mut io::sink())
        .map_err(|e| RestoreError::Integrity(format!("reading the artifact: {e}")))?;
    let (digest, size) = raw.finish();
    restore::check_artifact(&digest, size, &trailer.artifact)?;
    decoded.map_err(|e| RestoreError::Integrity(format!("decompressing the stream: {e}")))?;
    let (_, digest, size) = content.finish();
    if Some(&digest) != entry.blake3.as_ref() || size != entry.size {
        return Err(RestoreError::Integrity(format!(
            "the stream's BLAKE3 is {digest} ({size} bytes); the manifest says {} ({} bytes)",
            entry.blake3.as_deref().unwrap_or_default(),
            entry.size
        )));
    }
    Ok(())
}

/// Copies `from` into `to` in big chunks: the bytes written, and the failure that stopped it,
/// if any, with whether it was reading (`true`) or writing.
fn copy(from: &mut impl Read, to: &mut impl Write) -> (u64, Result<(), (io::Error, bool)>) {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return (total, Ok(())),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return (total, Err((e, true))),
        };
        if let Err(e) = to.write_all(&buf[..n]) {
            return (total, Err((e, false)));
        }
        total += n as u64;
    }
}

fn stream_io(e: io::Error, reading: bool, key: &str, staged: &Path) -> RestoreError {
    if reading {
        RestoreError::Repository(crate::repository::RepositoryError::Read {
            key: key.to_string(),
            source: e,
        })
    } else {
        restore::write_err(staged)(e)
    }
}

/// Makes the pipe, readable and writable by the command's user whoever that is (the directory
/// is the pod's own), under a temporary name first: the wrapper waits for a pipe at
/// `STREAM_PIPE`, never for a half-made one.
fn make_pipe(dir: &Path) -> io::Result<()> {
    let partial = dir.join(format!("{STREAM_PIPE}.partial"));
    match fs::remove_file(&partial) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let c_path = CString::new(partial.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: plain libc calls on a NUL-terminated path; the mover is single-threaded here, so
    // the umask is cleared only for this mkfifo (the mode is set as the pipe is made, never
    // changed on a path the command's container could have swapped).
    let made = unsafe {
        let old = libc::umask(0);
        let rc = libc::mkfifo(c_path.as_ptr(), 0o666);
        libc::umask(old);
        rc
    };
    if made != 0 {
        return Err(io::Error::last_os_error());
    }
    fs::rename(&partial, dir.join(STREAM_PIPE))
}

/// Opens the pipe (blocking until the other side opens it too), never through a link, and
/// checks it is a pipe.
fn open_pipe(path: &Path, write: bool) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    if !file.metadata()?.file_type().is_fifo() {
        return Err(io::Error::other("it is not the mover's pipe any more"));
    }
    Ok(file)
}

/// When the mover fails before the stream could flow: leaves `STREAM_ABORT` (the wrapper that
/// waits for the pipe gives up) and opens and closes the pipe without blocking (a wrapper
/// already blocked opening it goes on, and finds the stream closed).
pub fn abandon(stream_dir: &Path) {
    let _ = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(stream_dir.join(STREAM_ABORT));
    let pipe = stream_dir.join(STREAM_PIPE);
    for write in [false, true] {
        let _ = OpenOptions::new()
            .read(!write)
            .write(write)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&pipe);
    }
}

/// How the wrapped command ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Exit {
    pub code: i32,
    /// The end of what it wrote to stderr (whole lines).
    pub output: String,
}

impl Exit {
    /// The failure message of a non-zero exit.
    pub fn failure(&self) -> String {
        let signal = if (129..160).contains(&self.code) {
            format!(" (killed by signal {})", self.code - 128)
        } else {
            String::new()
        };
        format!(
            "the command exited with status {}{signal}; nothing was committed{}",
            self.code,
            said(&self.output)
        )
    }
}

fn said(output: &str) -> String {
    if output.is_empty() {
        String::new()
    } else {
        format!("; its last output: {output}")
    }
}

/// Waits for the wrapper's last file (the output, written after the exit status) and reads
/// both.
pub fn wait_for_exit(dir: &Path, limit: Duration) -> Result<Exit, String> {
    let deadline = Instant::now() + limit;
    let unreadable = |what: &str, e: io::Error| format!("the command's {what} is unreadable: {e}");
    loop {
        let output = read_tail(&dir.join(STREAM_OUTPUT), STREAM_OUTPUT_BYTES)
            .map_err(|e| unreadable("output", e))?;
        if let Some(output) = output {
            let code = read_tail(&dir.join(STREAM_EXIT), 16)
                .map_err(|e| unreadable("exit status", e))?
                .ok_or("the command's wrapper left its output but no exit status")?;
            let code = String::from_utf8_lossy(&code);
            let code = code
                .trim()
                .parse::<i32>()
                .map_err(|_| format!("the command's exit status {code:?} is not a number"))?;
            return Ok(Exit {
                code,
                output: last_lines(&output, STREAM_OUTPUT_BYTES),
            });
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the command closed its output but had not exited {} s later",
                limit.as_secs()
            ));
        }
        std::thread::sleep(POLL);
    }
}

/// At most the last `max` bytes of the regular file `path`, never through a link; `None` when it
/// does not exist (yet).
fn read_tail(path: &Path, max: usize) -> io::Result<Option<Vec<u8>>> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("it is not a regular file"));
    }
    file.seek(SeekFrom::Start(meta.len().saturating_sub(max as u64)))?;
    let mut tail = Vec::with_capacity(max.min(meta.len() as usize));
    file.take(max as u64).read_to_end(&mut tail)?;
    Ok(Some(tail))
}

/// The text of `bytes`, cut at a line start when they were cut (`max` long), trimmed, lines
/// joined with " | " so the message stays on one line.
fn last_lines(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = match text.find('\n') {
        Some(i) if bytes.len() >= max => &text[i + 1..],
        _ => &text,
    };
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_says_its_status_its_signal_and_its_last_lines() {
        let exit = Exit {
            code: 137,
            output: "pg_dump: dumping table".into(),
        };
        assert_eq!(
            exit.failure(),
            "the command exited with status 137 (killed by signal 9); nothing was committed; its last output: pg_dump: dumping table"
        );
        let plain = Exit {
            code: 1,
            output: String::new(),
        };
        assert_eq!(
            plain.failure(),
            "the command exited with status 1; nothing was committed"
        );
    }

    #[test]
    fn only_whole_lines_of_a_cut_output_are_kept() {
        assert_eq!(last_lines(b"a\nb\n\nc\n", 100), "a | b | c");
        // Cut: the first, partial line goes.
        assert_eq!(last_lines(b"rtial\nwhole\nlast\n", 17), "whole | last");
        assert_eq!(last_lines(b"one line", 8), "one line");
    }

    #[test]
    fn the_files_the_command_leaves_are_read_without_following_links() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let secret = dir.path().join("secret");
        fs::write(&secret, "0\n")?;
        std::os::unix::fs::symlink(&secret, dir.path().join(STREAM_OUTPUT))?;
        let err = wait_for_exit(dir.path(), Duration::ZERO).unwrap_err();
        assert!(err.contains("output is unreadable"), "{err}");
        fs::remove_file(dir.path().join(STREAM_OUTPUT))?;
        fs::write(
            dir.path().join(STREAM_OUTPUT),
            "x".repeat(10_000) + "\nend\n",
        )?;
        std::os::unix::fs::symlink(&secret, dir.path().join(STREAM_EXIT))?;
        let err = wait_for_exit(dir.path(), Duration::ZERO).unwrap_err();
        assert!(err.contains("exit status is unreadable"), "{err}");
        fs::remove_file(dir.path().join(STREAM_EXIT))?;
        fs::write(dir.path().join(STREAM_EXIT), "3\n")?;
        let exit = wait_for_exit(dir.path(), Duration::ZERO).map_err(io::Error::other)?;
        assert_eq!(
            exit,
            Exit {
                code: 3,
                output: "end".into()
            }
        );
        Ok(())
    }

    #[test]
    fn no_exit_status_in_time_is_a_failure_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let err = wait_for_exit(dir.path(), Duration::from_millis(150)).unwrap_err();
        assert!(err.contains("had not exited"), "{err}");
    }
}
