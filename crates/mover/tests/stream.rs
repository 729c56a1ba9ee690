//! Command backups and restores through the real wrapper scripts (`contract::DUMP_SCRIPT`,
//! `LOAD_SCRIPT`) run by `/bin/sh`, as the command's container runs them, with a directory
//! repository: a stream is stored only when its command exited 0 having written something, the
//! artifact is what `zstd -dc` / `gzip -dc` give back byte for byte, and a restore command reads
//! only a verified stream (a damaged one never reaches it: it does not even run).

use backstop_api::Compression;
use backstop_api::contract::{DUMP_SCRIPT, LOAD_SCRIPT, Reason, manifest_key};
use backstop_mover::repository::DirRepository;
use backstop_mover::stream::{self, DumpRequest, LoadRequest};
use backstop_mover::{manifest, restore};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The wrapper script run by sh as the container would: `sh -c SCRIPT <dir> <argv>...`.
fn wrapped(script: &str, dir: &Path, argv: &[&str]) -> Child {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .arg(dir)
        .args(argv)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh runs")
}

struct Fixture {
    _tmp: tempfile::TempDir,
    repo_dir: PathBuf,
    repo: DirRepository,
    stream_dir: PathBuf,
    staging: PathBuf,
    data: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let path = |name: &str| {
        let p = tmp.path().join(name);
        fs::create_dir_all(&p).unwrap();
        p
    };
    let (repo_dir, stream_dir, staging, data) =
        (path("repo"), path("stream"), path("staging"), path("data"));
    Fixture {
        repo: DirRepository::new(repo_dir.clone()),
        repo_dir,
        stream_dir,
        staging,
        data,
        _tmp: tmp,
    }
}

/// Runs a dump of `argv` (compressed as asked) through the wrapper; the mover's result and
/// the wrapper's exit code.
fn dump(
    f: &Fixture,
    compression: Compression,
    argv: &[&str],
) -> (
    Result<backstop_api::contract::BackupResult, (Reason, String)>,
    i32,
) {
    let mut child = wrapped(DUMP_SCRIPT, &f.stream_dir, argv);
    let result = stream::dump(
        &f.repo,
        &DumpRequest {
            stream_dir: &f.stream_dir,
            name: "dump",
            dir: "shop/nightly",
            compression,
            created_at: "2026-11-27T00:00:00Z".into(),
        },
    )
    .map_err(|e| (e.reason(), e.to_string()));
    if result.is_err() {
        stream::abandon(&f.stream_dir);
    }
    let code = child.wait().unwrap().code().unwrap_or(-1);
    (result, code)
}

/// What the repository holds under the backup's directory.
fn stored(f: &Fixture) -> Vec<String> {
    let dir = f.repo_dir.join("shop/nightly");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Pseudo-random bytes that compress a little (a dump is rarely incompressible).
fn sample(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if i % 3 == 0 { b'a' } else { x as u8 }
        })
        .collect()
}

fn decompressed_by(tool: &str, artifact: &Path) -> Vec<u8> {
    let out = Command::new(tool)
        .arg("-dc")
        .arg(artifact)
        .output()
        .unwrap();
    assert!(out.status.success(), "{tool} -dc {}", artifact.display());
    out.stdout
}

#[test]
fn a_dump_round_trips_through_the_wrappers_and_standard_tools_read_it() {
    for (compression, tool, name) in [
        (Compression::Zstd, "zstd", "dump.zst"),
        (Compression::Gzip, "gzip", "dump.gz"),
    ] {
        let f = fixture();
        let content = sample(3 << 20);
        let source = f.data.join("db.dump");
        fs::write(&source, &content).unwrap();
        let (result, code) = dump(&f, compression, &["cat", source.to_str().unwrap()]);
        let done = result.unwrap();
        assert_eq!(code, 0);
        assert_eq!(done.source_bytes, content.len() as u64);
        assert_eq!(done.artifact, format!("shop/nightly/{name}"));
        let mut wanted = vec!["dump.manifest.jsonl.zst".to_string(), name.into()];
        wanted.sort();
        assert_eq!(stored(&f), wanted);
        let artifact = f.repo_dir.join(&done.artifact);
        assert_eq!(decompressed_by(tool, &artifact), content, "{tool}");
        let key = manifest_key("shop/nightly", "dump");
        // The manifest says what the stream is: one entry, its size and its BLAKE3.
        let file = fs::File::open(f.repo_dir.join(&key)).unwrap();
        let mut listing = manifest::Reader::new(Box::new(file)).unwrap();
        assert_eq!(listing.header().content, manifest::Content::Stream);
        let entry = listing.next_entry().unwrap().expect("the stream's entry");
        assert_eq!(
            (entry.path.as_str(), entry.kind, entry.size, entry.mode),
            (
                "dump",
                manifest::EntryKind::Stream,
                content.len() as u64,
                0o600
            )
        );
        assert_eq!(
            entry.blake3.as_deref(),
            Some(blake3::hash(&content).to_hex().as_str())
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((now - entry.mtime).abs() < 600, "stamped when dumped");
        assert!(listing.next_entry().unwrap().is_none());
        let trailer = listing.trailer().unwrap();
        assert_eq!(trailer.totals.bytes, content.len() as u64);
        assert_eq!(trailer.artifact.blake3, done.digest);
        let verified = restore::verify(&f.repo, &key, Some(&done.digest)).unwrap();
        assert_eq!(verified.bytes, content.len() as u64);
        // A stream is not a volume: a restore into a PVC refuses it.
        let refused = restore::restore(
            &f.repo,
            &key,
            &f.staging,
            &restore::RestoreOptions::default(),
        )
        .unwrap_err();
        assert!(
            refused.to_string().contains("command's stream"),
            "{refused}"
        );

        // A restore's pod starts with an empty stream directory. (Emptied after the restore
        // command started, its wrapper could open the dump's pipe, which no writer ever opens
        // again: the test hung under load.)
        for name in ["stream", "exit", "output"] {
            let _ = fs::remove_file(f.stream_dir.join(name));
        }
        let out = f.data.join("restored");
        let mut child = wrapped(
            LOAD_SCRIPT,
            &f.stream_dir,
            &["sh", "-c", &format!("cat > {}", out.display())],
        );
        let loaded = stream::load(
            &f.repo,
            &LoadRequest {
                manifest: &key,
                stream_dir: &f.stream_dir,
                staging: &f.staging,
                recorded_digest: Some(&done.digest),
                recorded_bytes: Some(done.bytes),
            },
        )
        .unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(0));
        assert_eq!(loaded.bytes, content.len() as u64);
        assert_eq!(
            fs::read(&out).unwrap(),
            content,
            "the restore command read it all"
        );
    }
}

#[test]
fn a_failed_killed_or_silent_command_commits_nothing_and_says_why() {
    let cases: [(&[&str], Reason, &[&str]); 3] = [
        (
            &[
                "sh",
                "-c",
                "echo half a dump; echo 'FATAL:  password authentication failed for user \"backstop\"' >&2; exit 3",
            ],
            Reason::CommandFailed,
            &["status 3", "password authentication failed"],
        ),
        (
            &["sh", "-c", "head -c 200000 /dev/zero; kill -KILL $$"],
            Reason::CommandFailed,
            &["status 137 (killed by signal 9)"],
        ),
        (
            &["sh", "-c", "echo connected >&2"],
            Reason::EmptyDump,
            &["written nothing", "connected"],
        ),
    ];
    for (argv, reason, said) in cases {
        let f = fixture();
        let (result, code) = dump(&f, Compression::Zstd, argv);
        let (got, message) = result.unwrap_err();
        assert_eq!(got, reason, "{argv:?}: {message}");
        for s in said {
            assert!(message.contains(s), "{argv:?}: {message}");
        }
        assert_ne!(code, -1, "the wrapper ended");
        assert_eq!(
            stored(&f),
            Vec::<String>::new(),
            "{argv:?}: nothing committed"
        );
    }
}

#[test]
fn a_missing_program_is_a_command_failure_with_the_shells_words() {
    let f = fixture();
    let (result, code) = dump(&f, Compression::Zstd, &["pg_dumpx", "-Fc"]);
    let (reason, message) = result.unwrap_err();
    assert_eq!(reason, Reason::CommandFailed);
    assert!(message.contains("status 127"), "{message}");
    assert!(message.contains("pg_dumpx"), "{message}");
    assert_eq!(code, 127);
}

/// Backs up `content` with `cat` and returns the manifest key and recorded digest.
fn backed_up(f: &Fixture, content: &[u8]) -> (String, String) {
    let source = f.data.join("db.dump");
    fs::write(&source, content).unwrap();
    let (result, _) = dump(f, Compression::Zstd, &["cat", source.to_str().unwrap()]);
    for name in ["stream", "exit", "output"] {
        fs::remove_file(f.stream_dir.join(name)).unwrap();
    }
    (manifest_key("shop/nightly", "dump"), result.unwrap().digest)
}

type Loaded = Result<backstop_api::contract::RestoreResult, (Reason, String)>;

fn load(f: &Fixture, key: &str, digest: &str, argv: &[&str]) -> (Loaded, i32) {
    load_recorded(f, key, digest, None, argv)
}

/// `load`, the backup having recorded an artifact of `recorded_bytes`.
fn load_recorded(
    f: &Fixture,
    key: &str,
    digest: &str,
    recorded_bytes: Option<u64>,
    argv: &[&str],
) -> (Loaded, i32) {
    let mut child = wrapped(LOAD_SCRIPT, &f.stream_dir, argv);
    let result = stream::load(
        &f.repo,
        &LoadRequest {
            manifest: key,
            stream_dir: &f.stream_dir,
            staging: &f.staging,
            recorded_digest: Some(digest),
            recorded_bytes,
        },
    )
    .map_err(|e| (e.reason(), e.to_string()));
    if result.is_err() {
        stream::abandon(&f.stream_dir);
    }
    (result, child.wait().unwrap().code().unwrap_or(-1))
}

#[test]
fn a_damaged_stream_never_reaches_the_restore_command() {
    let f = fixture();
    let (key, digest) = backed_up(&f, &sample(1 << 20));
    let artifact = f.repo_dir.join("shop/nightly/dump.zst");
    let mut bytes = fs::read(&artifact).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    fs::write(&artifact, bytes).unwrap();
    let ran = f.data.join("ran");
    let (result, code) = load(
        &f,
        &key,
        &digest,
        &[
            "sh",
            "-c",
            &format!("touch {}; cat >/dev/null", ran.display()),
        ],
    );
    let (reason, message) = result.unwrap_err();
    assert_eq!(reason, Reason::IntegrityCheckFailed, "{message}");
    assert!(!ran.exists(), "the restore command did not run");
    assert_eq!(code, 1, "the wrapper gave up when the mover did");
}

#[test]
fn an_artifact_larger_than_recorded_is_refused_before_it_fills_the_staging_directory() {
    let f = fixture();
    let (key, digest) = backed_up(&f, &sample(1 << 20));
    let artifact = f.repo_dir.join("shop/nightly/dump.zst");
    let size = fs::metadata(&artifact).unwrap().len();
    let staged = || fs::metadata(f.staging.join("artifact")).map_or(0, |m| m.len());
    // The backup recorded less than the manifest now says: nothing is copied.
    let (result, _) = load_recorded(&f, &key, &digest, Some(size - 1), &["cat"]);
    let (reason, message) = result.unwrap_err();
    assert_eq!(reason, Reason::IntegrityCheckFailed, "{message}");
    assert!(message.contains("before copying"), "{message}");
    assert_eq!(staged(), 0);
    // The object grew in the repository (4 MiB more): copied no further than one byte past
    // what the manifest names.
    let mut grown = fs::OpenOptions::new().append(true).open(&artifact).unwrap();
    std::io::Write::write_all(&mut grown, &sample(4 << 20)).unwrap();
    let (result, _) = load_recorded(&f, &key, &digest, Some(size), &["cat"]);
    let (reason, message) = result.unwrap_err();
    assert_eq!(reason, Reason::IntegrityCheckFailed, "{message}");
    assert!(message.contains("larger than"), "{message}");
    assert!(staged() <= size + 1, "staged {} of {size}", staged());
}

#[test]
fn a_failing_restore_command_fails_the_restore_with_its_words() {
    let f = fixture();
    let (key, digest) = backed_up(&f, &sample(4 << 20));
    // It reads a little, complains and exits: the mover's writes meet a closed pipe.
    let (result, code) = load(
        &f,
        &key,
        &digest,
        &[
            "sh",
            "-c",
            "head -c 10 >/dev/null; echo 'pg_restore: error: could not connect' >&2; exit 1",
        ],
    );
    let (reason, message) = result.unwrap_err();
    assert_eq!(reason, Reason::CommandFailed);
    assert!(message.contains("status 1"), "{message}");
    assert!(message.contains("could not connect"), "{message}");
    assert_eq!(code, 1);
}

#[test]
fn a_restore_command_that_stops_reading_and_exits_0_is_taken_at_its_word_and_said_so() {
    let f = fixture();
    let content = sample(4 << 20);
    let (key, digest) = backed_up(&f, &content);
    let (result, code) = load(&f, &key, &digest, &["sh", "-c", "head -c 10 >/dev/null"]);
    let loaded = result.unwrap();
    assert_eq!(code, 0);
    assert!(
        loaded.bytes < content.len() as u64,
        "only what the pipe took before it closed: {}",
        loaded.bytes
    );
    assert!(
        loaded.verification.contains("part of the stream"),
        "{}",
        loaded.verification
    );
}

/// A stream artifact (uncompressed) and a manifest that lists `entry` for it, written by hand:
/// what a damaged or forged repository could hold.
fn forged(f: &Fixture, content: &[u8], entry: &manifest::Entry) -> String {
    let dir = f.repo_dir.join("shop/forged");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("dump.raw"), content).unwrap();
    let header = manifest::Header {
        format: manifest::FORMAT.into(),
        created_at: String::new(),
        source: "dump".into(),
        compression: Compression::None,
        content: manifest::Content::Stream,
    };
    let mut writer = manifest::Writer::new(Vec::new(), &header).unwrap();
    writer.entry(entry).unwrap();
    let artifact = manifest::ArtifactInfo {
        name: "dump.raw".into(),
        size: content.len() as u64,
        blake3: blake3::hash(content).to_hex().to_string(),
    };
    let listing = writer
        .finish(artifact, manifest::Totals::default())
        .unwrap();
    let key = manifest_key("shop/forged", "dump");
    fs::write(f.repo_dir.join(&key), listing).unwrap();
    key
}

fn stream_of(content: &[u8], digest_of: &[u8]) -> manifest::Entry {
    let mut entry = manifest::Entry {
        kind: manifest::EntryKind::Stream,
        size: content.len() as u64,
        blake3: Some(blake3::hash(digest_of).to_hex().to_string()),
        ..manifest::Entry::default()
    };
    entry.set_path(b"dump");
    entry
}

#[test]
fn a_stream_manifest_must_list_one_stream_with_its_digest_and_match_it() {
    let f = fixture();
    let content = b"the real dump".to_vec();
    let fine = forged(&f, &content, &stream_of(&content, &content));
    assert!(restore::verify(&f.repo, &fine, None).is_ok());
    // The artifact's own digest matches, but the stream's (same size) does not.
    let other = forged(&f, &content, &stream_of(&content, b"another dump!"));
    let err = restore::verify(&f.repo, &other, None).unwrap_err();
    assert_eq!(err.reason(), Reason::IntegrityCheckFailed, "{err}");
    assert!(err.to_string().contains("the stream's BLAKE3"), "{err}");
    // Not a stream entry, or one without a digest: not a stream's manifest.
    let mut file = stream_of(&content, &content);
    file.kind = manifest::EntryKind::File;
    let mut undigested = stream_of(&content, &content);
    undigested.blake3 = None;
    for entry in [file, undigested] {
        let key = forged(&f, &content, &entry);
        let err = restore::verify(&f.repo, &key, None).unwrap_err();
        assert_eq!(err.reason(), Reason::ArtifactUnreadable, "{err}");
        assert!(err.to_string().contains("must list the stream"), "{err}");
    }
}
