//! Restores are staged and verified: a round trip reproduces the tree exactly (sparse and
//! hardlinked files included), a non-empty target is refused by default, Overwrite and Merge do
//! what they say, one flipped byte fails the restore and leaves the target as it was, and archives
//! that try to escape the target are refused.

use backstop_api::ExistingDataPolicy;
use backstop_api::contract::Reason;
use backstop_mover::backup::{self, BackupRequest, Compression};
use backstop_mover::commit;
use backstop_mover::manifest::{
    self, ArtifactInfo, Entry, EntryKind, Header, LegacyManifest, Totals,
};
use backstop_mover::repository::DirRepository;
use backstop_mover::restore::{self, RestoreError, RestoreOptions};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let m = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let what = if m.is_dir() {
                stack.push(path.clone());
                "dir".to_string()
            } else if m.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&path).unwrap().display())
            } else {
                format!("{}", blake3::hash(&fs::read(&path).unwrap()).to_hex())
            };
            let mode = if m.file_type().is_symlink() {
                0
            } else {
                m.mode() & 0o7777
            };
            out.push(format!(
                "{rel} {what} {mode:o} {}:{} {}.{}",
                m.uid(),
                m.gid(),
                m.mtime(),
                m.mtime_nsec()
            ));
        }
    }
    out.sort();
    out
}

struct Fixture {
    _tmp: tempfile::TempDir,
    source: std::path::PathBuf,
    repo: DirRepository,
    repo_dir: std::path::PathBuf,
    target: std::path::PathBuf,
}

fn backed_up(compression: Compression) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    let repo_dir = tmp.path().join("repo");
    let target = tmp.path().join("target");
    fs::create_dir_all(source.join("a/b/c")).unwrap();
    fs::create_dir_all(source.join("empty")).unwrap();
    fs::create_dir_all(&target).unwrap();
    fs::write(source.join("a/file.txt"), "hello\n").unwrap();
    fs::write(source.join("a/b/c/ünï cødé.txt"), "ü\n").unwrap();
    fs::write(source.join("secret"), "s").unwrap();
    fs::set_permissions(source.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(source.join("secret"), Some(1234), Some(5678)).unwrap();
    symlink("a/file.txt", source.join("link")).unwrap();
    fs::hard_link(source.join("a/file.txt"), source.join("hard")).unwrap();
    // A sparse file: 8 MiB apparent, a few bytes of data.
    let sparse = fs::File::create(source.join("sparse.img")).unwrap();
    sparse.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&sparse, b"tail", (8 << 20) - 4).unwrap();
    let repo = DirRepository::new(&repo_dir);
    backup::run(
        &repo,
        &BackupRequest {
            source: &source,
            pvc: "data",
            dir: "ns/b",
            compression,
            created_at: String::new(),
        },
    )
    .unwrap();
    Fixture {
        _tmp: tmp,
        source,
        repo,
        repo_dir,
        target,
    }
}

#[test]
fn a_restore_reproduces_the_tree_exactly_and_keeps_sparse_files_sparse() {
    for compression in [Compression::Zstd, Compression::Gzip, Compression::None] {
        let f = backed_up(compression);
        let result = restore::restore(
            &f.repo,
            "ns/b/data.manifest.jsonl.zst",
            &f.target,
            &RestoreOptions {
                policy: ExistingDataPolicy::FailIfNotEmpty,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(result.verification, "Verified");
        assert_eq!(
            result.files, 4,
            "regular files; the hardlink is not a second file"
        );
        assert_eq!(listing(&f.target), listing(&f.source), "{compression:?}");
        let a = fs::metadata(f.target.join("a/file.txt")).unwrap();
        let b = fs::metadata(f.target.join("hard")).unwrap();
        assert_eq!(a.ino(), b.ino(), "hardlink restored as a hardlink");
        let sparse = fs::metadata(f.target.join("sparse.img")).unwrap();
        assert!(
            sparse.blocks() * 512 < 1 << 20,
            "sparse file uses {} blocks",
            sparse.blocks()
        );
        assert!(!f.target.join(restore::STAGING).exists());
    }
}

#[test]
fn verify_checks_an_artifact_without_writing() {
    let f = backed_up(Compression::Zstd);
    let result = restore::verify(&f.repo, "ns/b/data.manifest.jsonl.zst", None).unwrap();
    assert_eq!(
        result.files, 4,
        "regular files; the hardlink is not a second file"
    );
}

#[test]
fn a_missing_artifact_or_manifest_is_told_apart_from_a_damaged_one() {
    let f = backed_up(Compression::Zstd);
    fs::remove_file(f.repo_dir.join("ns/b/data.tar.zst")).unwrap();
    let err = restore::verify(&f.repo, "ns/b/data.manifest.jsonl.zst", None).unwrap_err();
    assert_eq!(err.reason(), Reason::ArtifactMissing, "{err}");
    fs::remove_file(f.repo_dir.join("ns/b/data.manifest.jsonl.zst")).unwrap();
    let err = restore::verify(&f.repo, "ns/b/data.manifest.jsonl.zst", None).unwrap_err();
    assert_eq!(err.reason(), Reason::ArtifactMissing, "{err}");
}

#[test]
fn a_non_empty_target_is_refused_by_default_and_left_alone() {
    let f = backed_up(Compression::Zstd);
    fs::write(f.target.join("precious"), "keep me").unwrap();
    let before = listing(&f.target);
    let err = restore::restore(
        &f.repo,
        "ns/b/data.manifest.jsonl.zst",
        &f.target,
        &RestoreOptions {
            policy: ExistingDataPolicy::FailIfNotEmpty,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(err.reason(), Reason::TargetNotEmpty);
    assert_eq!(listing(&f.target), before);
}

#[test]
fn overwrite_makes_the_target_exactly_the_backup_and_merge_keeps_other_files() {
    let f = backed_up(Compression::Zstd);
    fs::create_dir_all(f.target.join("a")).unwrap();
    fs::write(f.target.join("a/file.txt"), "changed").unwrap();
    fs::write(f.target.join("extra"), "extra").unwrap();
    restore::restore(
        &f.repo,
        "ns/b/data.manifest.jsonl.zst",
        &f.target,
        &RestoreOptions {
            policy: ExistingDataPolicy::Merge,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        fs::read_to_string(f.target.join("a/file.txt")).unwrap(),
        "hello\n"
    );
    assert_eq!(fs::read_to_string(f.target.join("extra")).unwrap(), "extra");

    restore::restore(
        &f.repo,
        "ns/b/data.manifest.jsonl.zst",
        &f.target,
        &RestoreOptions {
            policy: ExistingDataPolicy::Overwrite,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(listing(&f.target), listing(&f.source));
}

#[test]
fn one_flipped_byte_fails_the_restore_and_leaves_the_target_as_it_was() {
    for compression in [Compression::Zstd, Compression::Gzip, Compression::None] {
        let f = backed_up(compression);
        fs::write(f.target.join("existing"), "before").unwrap();
        let before = listing(&f.target);
        let artifact = f
            .repo_dir
            .join(format!("ns/b/data.{}", compression.extension()));
        let mut bytes = fs::read(&artifact).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        fs::write(&artifact, bytes).unwrap();

        let err = restore::restore(
            &f.repo,
            "ns/b/data.manifest.jsonl.zst",
            &f.target,
            &RestoreOptions {
                policy: ExistingDataPolicy::Overwrite,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            err.reason(),
            Reason::IntegrityCheckFailed,
            "{compression:?}: {err}"
        );
        assert_eq!(listing(&f.target), before, "{compression:?}");
        assert!(matches!(
            restore::verify(&f.repo, "ns/b/data.manifest.jsonl.zst", None),
            Err(RestoreError::Integrity(_))
        ));
    }
}

/// A hand-made artifact whose manifest agrees with it, so only the safety checks can refuse it.
fn crafted(
    repo_dir: &Path,
    build: impl FnOnce(&mut tar::Builder<Vec<u8>>),
    entries: Vec<Entry>,
) -> DirRepository {
    let mut builder = tar::Builder::new(Vec::new());
    build(&mut builder);
    let data = builder.into_inner().unwrap();
    fs::create_dir_all(repo_dir.join("ns/b")).unwrap();
    fs::write(repo_dir.join("ns/b/data.tar"), &data).unwrap();
    let header = Header {
        format: manifest::FORMAT.into(),
        created_at: String::new(),
        source: "data".into(),
        compression: backstop_api::Compression::None,
        content: manifest::Content::Tree,
    };
    let mut writer = manifest::Writer::new(Vec::new(), &header).unwrap();
    for entry in &entries {
        writer.entry(entry).unwrap();
    }
    let listed = writer
        .finish(artifact_of(&data), Totals::default())
        .unwrap();
    fs::write(repo_dir.join("ns/b/data.manifest.jsonl.zst"), listed).unwrap();
    DirRepository::new(repo_dir)
}

fn artifact_of(data: &[u8]) -> ArtifactInfo {
    ArtifactInfo {
        name: "data.tar".into(),
        size: data.len() as u64,
        blake3: blake3::hash(data).to_hex().to_string(),
    }
}

/// A manifest's lines as JSON values, and back.
fn manifest_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = zstd::decode_all(&fs::read(path).unwrap()[..]).unwrap();
    text.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

fn write_manifest_lines(path: &Path, lines: &[serde_json::Value]) {
    let text: Vec<u8> = lines
        .iter()
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect();
    fs::write(path, zstd::encode_all(&text[..], 3).unwrap()).unwrap();
}

fn entry(path: &str, kind: EntryKind, target: Option<&str>, content: Option<&[u8]>) -> Entry {
    Entry {
        path: path.into(),
        kind,
        size: content.map_or(0, |c| c.len() as u64),
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 0,
        mtime_nanos: 0,
        target: target.map(str::to_string),
        ..Default::default()
    }
}

fn raw_header(path: &[u8], kind: tar::EntryType, size: u64, link: Option<&str>) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..path.len()].copy_from_slice(path);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    if let Some(l) = link {
        h.set_link_name(l).unwrap();
    }
    h.set_cksum();
    h
}

/// A named hand-made archive: how to write it, and the manifest entries that describe it.
type Case = (
    &'static str,
    Box<dyn FnOnce(&mut tar::Builder<Vec<u8>>)>,
    Vec<Entry>,
);

#[test]
fn archives_that_escape_the_target_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let cases: Vec<Case> = vec![
        (
            "dotdot",
            Box::new(|b| {
                b.append(
                    &raw_header(b"../evil", tar::EntryType::Regular, 1, None),
                    &b"x"[..],
                )
                .unwrap()
            }),
            vec![entry("../evil", EntryKind::File, None, Some(b"x"))],
        ),
        (
            "absolute",
            Box::new(|b| {
                b.append(
                    &raw_header(b"/tmp/evil", tar::EntryType::Regular, 1, None),
                    &b"x"[..],
                )
                .unwrap()
            }),
            vec![entry("/tmp/evil", EntryKind::File, None, Some(b"x"))],
        ),
        (
            "through a symlink",
            Box::new({
                let outside = outside.display().to_string();
                move |b| {
                    b.append(
                        &raw_header(b"escape", tar::EntryType::Symlink, 0, Some(&outside)),
                        &b""[..],
                    )
                    .unwrap();
                    b.append(
                        &raw_header(b"escape/evil", tar::EntryType::Regular, 1, None),
                        &b"x"[..],
                    )
                    .unwrap();
                }
            }),
            vec![
                entry(
                    "escape",
                    EntryKind::Symlink,
                    Some(&outside.display().to_string()),
                    None,
                ),
                entry("escape/evil", EntryKind::File, None, Some(b"x")),
            ],
        ),
        (
            "a hardlink to a file outside",
            Box::new(|b| {
                file(b, b"a", b"x");
                b.append(
                    &raw_header(b"l", tar::EntryType::Link, 0, Some("../../victim")),
                    &b""[..],
                )
                .unwrap();
            }),
            vec![
                entry("a", EntryKind::File, None, Some(b"x")),
                entry("l", EntryKind::Hardlink, Some("../../victim"), None),
            ],
        ),
    ];
    fs::write(tmp.path().join("victim"), "secret\n").unwrap();
    for (name, build, entries) in cases {
        let case_dir = tmp.path().join(name);
        let target = case_dir.join("target");
        fs::create_dir_all(&target).unwrap();
        let repo = crafted(&case_dir.join("repo"), build, entries);
        let err = restore::restore(
            &repo,
            "ns/b/data.manifest.jsonl.zst",
            &target,
            &RestoreOptions {
                policy: ExistingDataPolicy::FailIfNotEmpty,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(err.reason(), Reason::UnsafeArchive, "{name}: {err}");
        assert_eq!(
            fs::read_dir(&target).unwrap().count(),
            0,
            "{name}: target untouched"
        );
    }
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing was written outside"
    );
    assert!(!tmp.path().join("evil").exists());
    let victim = fs::metadata(tmp.path().join("victim")).unwrap();
    assert_eq!(victim.nlink(), 1, "no link to the file outside was made");
}

/// A regular file entry for a crafted archive.
fn file(b: &mut tar::Builder<Vec<u8>>, path: &[u8], content: &[u8]) {
    b.append(
        &raw_header(path, tar::EntryType::Regular, content.len() as u64, None),
        content,
    )
    .unwrap();
}

#[test]
fn a_manifest_that_reaches_outside_the_target_or_lists_a_path_twice_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside/dir");
    fs::create_dir_all(&outside).unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o755)).unwrap();
    let mut setuid_dir = entry("../outside/dir", EntryKind::Dir, None, None);
    setuid_dir.mode = 0o4777;
    let mut absolute = entry(&outside.display().to_string(), EntryKind::Dir, None, None);
    absolute.mode = 0o4777;
    let cases: Vec<Case> = vec![
        (
            // The archive repeats an entry so that the counts agree with a manifest that lists a
            // directory outside the target, whose mode the last pass would set.
            "dotdot-dir",
            Box::new(|b| {
                file(b, b"a", b"x");
                file(b, b"a", b"x");
            }),
            vec![entry("a", EntryKind::File, None, Some(b"x")), setuid_dir],
        ),
        (
            "absolute-dir",
            Box::new(|b| {
                file(b, b"a", b"x");
                file(b, b"a", b"x");
            }),
            vec![entry("a", EntryKind::File, None, Some(b"x")), absolute],
        ),
        (
            "listed-twice",
            Box::new(|b| {
                file(b, b"a", b"x");
                file(b, b"b", b"y");
            }),
            vec![
                entry("a", EntryKind::File, None, Some(b"x")),
                entry("a", EntryKind::File, None, Some(b"x")),
            ],
        ),
        (
            "not-plain",
            Box::new(|b| file(b, b"a", b"x")),
            vec![entry("./a", EntryKind::File, None, Some(b"x"))],
        ),
        (
            "hardlink-target-outside",
            Box::new(|b| file(b, b"a", b"x")),
            vec![entry(
                "a",
                EntryKind::Hardlink,
                Some("../outside/dir"),
                None,
            )],
        ),
    ];
    for (name, build, entries) in cases {
        // Beside `outside`, so that `../outside/dir` from the target is that directory.
        let target = tmp.path().join(format!("target-{name}"));
        fs::create_dir_all(&target).unwrap();
        let repo = crafted(&tmp.path().join(format!("repo-{name}")), build, entries);
        let err = restore::restore(
            &repo,
            "ns/b/data.manifest.jsonl.zst",
            &target,
            &RestoreOptions {
                policy: ExistingDataPolicy::FailIfNotEmpty,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(err.reason(), Reason::UnsafeArchive, "{name}: {err}");
        assert_eq!(fs::read_dir(&target).unwrap().count(), 0, "{name}");
        let err = restore::verify(&repo, "ns/b/data.manifest.jsonl.zst", None).unwrap_err();
        assert_eq!(err.reason(), Reason::UnsafeArchive, "{name}: {err}");
    }
    let mode = fs::metadata(&outside).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o755, "the directory outside was changed");
}

#[test]
fn the_archive_and_the_manifest_must_agree_entry_by_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Case)> = vec![
        (
            "where the manifest lists \"b\"",
            (
                "duplicate archive entry",
                Box::new(|b| {
                    file(b, b"a", b"x");
                    file(b, b"a", b"x");
                }),
                vec![
                    entry("a", EntryKind::File, None, Some(b"x")),
                    entry("b", EntryKind::File, None, Some(b"x")),
                ],
            ),
        ),
        (
            "is a Regular entry in the archive",
            (
                "a file the manifest calls a directory",
                Box::new(|b| file(b, b"d", b"x")),
                vec![entry("d", EntryKind::Dir, None, None)],
            ),
        ),
        (
            "bytes in the archive",
            (
                "a file bigger than the manifest says",
                Box::new(|b| file(b, b"big", &[7u8; 1 << 20])),
                vec![entry("big", EntryKind::File, None, Some(b"small"))],
            ),
        ),
        (
            "the archive holds 1 entries; the manifest lists 2",
            (
                "an entry the archive lacks",
                Box::new(|b| file(b, b"a", b"x")),
                vec![
                    entry("a", EntryKind::File, None, Some(b"x")),
                    entry("lost", EntryKind::File, None, Some(b"y")),
                ],
            ),
        ),
        (
            "after the last entry the manifest lists",
            (
                "an entry the manifest lacks",
                Box::new(|b| {
                    file(b, b"a", b"x");
                    file(b, b"b", b"y");
                }),
                vec![entry("a", EntryKind::File, None, Some(b"x"))],
            ),
        ),
    ];
    for (expected, (name, build, entries)) in cases {
        let case_dir = tmp.path().join(name.replace(' ', "-"));
        let target = case_dir.join("target");
        fs::create_dir_all(&target).unwrap();
        let repo = crafted(&case_dir.join("repo"), build, entries);
        let err = restore::restore(
            &repo,
            "ns/b/data.manifest.jsonl.zst",
            &target,
            &RestoreOptions {
                policy: ExistingDataPolicy::FailIfNotEmpty,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(err.reason(), Reason::IntegrityCheckFailed, "{name}: {err}");
        assert!(err.to_string().contains(expected), "{name}: {err}");
        assert_eq!(fs::read_dir(&target).unwrap().count(), 0, "{name}");
    }
}

/// A backup made before manifests were streamed: one JSON document under the old name, with a
/// BLAKE3 digest per file, which is still checked.
fn legacy(repo_dir: &Path, content: &[u8], listed: &[u8]) -> DirRepository {
    let mut builder = tar::Builder::new(Vec::new());
    file(&mut builder, b"a", content);
    let data = builder.into_inner().unwrap();
    fs::create_dir_all(repo_dir.join("ns/b")).unwrap();
    fs::write(repo_dir.join("ns/b/data.tar"), &data).unwrap();
    let mut a = entry("a", EntryKind::File, None, Some(listed));
    a.blake3 = Some(blake3::hash(listed).to_hex().to_string());
    let old = LegacyManifest {
        format: manifest::LEGACY_FORMAT.into(),
        created_at: String::new(),
        source: "data".into(),
        compression: backstop_api::Compression::None,
        artifact: artifact_of(&data),
        totals: Totals::default(),
        entries: vec![a],
    };
    fs::write(
        repo_dir.join("ns/b/data.manifest.json"),
        serde_json::to_vec(&old).unwrap(),
    )
    .unwrap();
    DirRepository::new(repo_dir)
}

#[test]
fn backups_with_a_legacy_manifest_still_restore_and_their_file_digests_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let options = RestoreOptions {
        policy: ExistingDataPolicy::FailIfNotEmpty,
        ..Default::default()
    };
    let repo = legacy(&tmp.path().join("good"), b"x", b"x");
    let target = tmp.path().join("target-good");
    fs::create_dir_all(&target).unwrap();
    let result =
        restore::restore(&repo, "ns/b/data.manifest.jsonl.zst", &target, &options).unwrap();
    assert_eq!((result.files, result.bytes), (1, 1));
    assert_eq!(fs::read(target.join("a")).unwrap(), b"x");

    let repo = legacy(&tmp.path().join("bad"), b"x", b"y");
    let target = tmp.path().join("target-bad");
    fs::create_dir_all(&target).unwrap();
    let err =
        restore::restore(&repo, "ns/b/data.manifest.jsonl.zst", &target, &options).unwrap_err();
    assert_eq!(err.reason(), Reason::IntegrityCheckFailed, "{err}");
    assert!(err.to_string().contains("has BLAKE3"), "{err}");
    assert_eq!(fs::read_dir(&target).unwrap().count(), 0);
}

#[test]
fn a_manifest_swapped_in_the_repository_is_caught_by_the_digest_recorded_at_backup() {
    let f = backed_up(Compression::Zstd);
    let recorded = restore::read_manifest(&f.repo, "ns/b/data.manifest.jsonl.zst", None)
        .unwrap()
        .1
        .artifact
        .blake3;
    // Someone with write access to the repository replaces artifact and manifest by a pair
    // that agree with each other.
    fs::write(f.source.join("a/file.txt"), "planted\n").unwrap();
    backup::run(
        &f.repo,
        &BackupRequest {
            source: &f.source,
            pvc: "data",
            dir: "ns/b",
            compression: Compression::Zstd,
            created_at: String::new(),
        },
    )
    .unwrap();
    let err = restore::restore(
        &f.repo,
        "ns/b/data.manifest.jsonl.zst",
        &f.target,
        &RestoreOptions {
            policy: ExistingDataPolicy::FailIfNotEmpty,
            recorded_digest: Some(&recorded),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(err.reason(), Reason::IntegrityCheckFailed, "{err}");
    assert!(err.to_string().contains("was replaced"), "{err}");
    assert_eq!(fs::read_dir(&f.target).unwrap().count(), 0);
    let err =
        restore::verify(&f.repo, "ns/b/data.manifest.jsonl.zst", Some(&recorded)).unwrap_err();
    assert_eq!(err.reason(), Reason::IntegrityCheckFailed, "{err}");
}

/// `listing` without directories' mtimes (adding and removing entries moves them; the content,
/// modes and owners are what "as it was" means).
fn content_listing(root: &Path) -> Vec<String> {
    listing(root)
        .into_iter()
        .map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            if fields.get(1) == Some(&"dir") {
                fields[..fields.len() - 1].join(" ")
            } else {
                l
            }
        })
        .collect()
}

/// A target holding data, and a staged tree beside it ready to commit.
fn target_with_staged_tree(root: &Path) -> std::path::PathBuf {
    let target = root.join("target");
    fs::create_dir_all(target.join("d")).unwrap();
    fs::create_dir_all(target.join("lost+found")).unwrap();
    fs::write(target.join("a.txt"), "old a\n").unwrap();
    fs::write(target.join("d/x"), "old x\n").unwrap();
    fs::write(target.join("keep"), "only in the target\n").unwrap();
    let staging = target.join(restore::STAGING);
    fs::create_dir_all(staging.join("d")).unwrap();
    fs::create_dir_all(staging.join("n")).unwrap();
    fs::write(staging.join("a.txt"), "new a\n").unwrap();
    fs::write(staging.join("d/x"), "new x\n").unwrap();
    fs::write(staging.join("d/y"), "new y\n").unwrap();
    fs::write(staging.join("n/z"), "new z\n").unwrap();
    target
}

fn without_staging(target: &Path) -> Vec<String> {
    let _ = fs::remove_dir_all(target.join(restore::STAGING));
    content_listing(target)
}

#[test]
fn a_commit_that_fails_leaves_the_target_as_it_was() {
    for policy in [ExistingDataPolicy::Overwrite, ExistingDataPolicy::Merge] {
        let tmp = tempfile::tempdir().unwrap();
        let target = target_with_staged_tree(tmp.path());
        let before = {
            let copy = tmp.path().join("before");
            fs::create_dir_all(&copy).unwrap();
            std::process::Command::new("cp")
                .args(["-a", "--"])
                .arg(target.join("."))
                .arg(&copy)
                .status()
                .unwrap();
            without_staging(&copy)
        };
        // Everything is in place when the last step fails: the worst moment.
        let err = commit::commit(&target, policy, || {
            Err(RestoreError::Integrity("injected failure".into()))
        })
        .unwrap_err();
        assert!(err.to_string().contains("injected failure"), "{err}");
        assert_eq!(without_staging(&target), before, "{policy:?}");
        assert!(!target.join(commit::PREVIOUS).exists());
    }
}

#[test]
fn a_commit_killed_midway_is_undone_by_the_next_restore() {
    let f = backed_up(Compression::Zstd);
    fs::write(f.target.join("precious"), "the target's own data\n").unwrap();
    let before = content_listing(&f.target);
    // A restore killed after its tree went in but before it finished: nothing could undo it.
    let staging = f.target.join(restore::STAGING);
    fs::create_dir_all(staging.join("half")).unwrap();
    fs::write(staging.join("half/new"), "new\n").unwrap();
    let killed = std::panic::catch_unwind(|| {
        commit::commit(&f.target, ExistingDataPolicy::Overwrite, || {
            panic!("killed")
        })
    });
    assert!(killed.is_err());
    assert!(f.target.join(commit::PREVIOUS).exists());
    assert!(
        !f.target.join("precious").exists(),
        "set aside by the commit"
    );

    // The next restore puts the target back first, then does its own work.
    assert!(commit::recover(&f.target).unwrap());
    assert_eq!(content_listing(&f.target), before);
    let err = restore::restore(
        &f.repo,
        "ns/b/data.manifest.jsonl.zst",
        &f.target,
        &RestoreOptions {
            policy: ExistingDataPolicy::FailIfNotEmpty,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(err.reason(), Reason::TargetNotEmpty);
    assert_eq!(content_listing(&f.target), before);
}

#[test]
fn a_restore_that_fails_before_its_commit_leaves_no_staging_directory() {
    let f = backed_up(Compression::Zstd);
    fs::remove_file(f.repo_dir.join("ns/b/data.tar.zst")).unwrap();
    let err = restore::restore(
        &f.repo,
        "ns/b/data.manifest.jsonl.zst",
        &f.target,
        &RestoreOptions {
            policy: ExistingDataPolicy::FailIfNotEmpty,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(err.reason(), Reason::ArtifactMissing, "{err}");
    assert_eq!(fs::read_dir(&f.target).unwrap().count(), 0);
}

#[test]
fn an_untrusted_restore_creates_no_device_nodes_and_clears_set_id_bits() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    fs::create_dir_all(source.join("shared")).unwrap();
    fs::write(source.join("tool"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(source.join("tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(source.join("shared"), fs::Permissions::from_mode(0o2775)).unwrap();
    let node = std::ffi::CString::new(source.join("mem").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid path; a character device like /dev/null (1, 3).
    let made = unsafe { libc::mknod(node.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    assert_eq!(made, 0, "mknod: {}", std::io::Error::last_os_error());
    let repo = DirRepository::new(tmp.path().join("repo"));
    backup::run(
        &repo,
        &BackupRequest {
            source: &source,
            pvc: "data",
            dir: "ns/b",
            compression: Compression::Zstd,
            created_at: String::new(),
        },
    )
    .unwrap();
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode();

    let trusted = tmp.path().join("trusted");
    fs::create_dir_all(&trusted).unwrap();
    restore::restore(
        &repo,
        "ns/b/data.manifest.jsonl.zst",
        &trusted,
        &RestoreOptions::default(),
    )
    .unwrap();
    assert_eq!(mode(&trusted.join("tool")) & 0o7777, 0o4755);
    assert_eq!(mode(&trusted.join("mem")) & libc::S_IFMT, libc::S_IFCHR);

    let untrusted = tmp.path().join("untrusted");
    fs::create_dir_all(&untrusted).unwrap();
    let options = RestoreOptions {
        untrusted: true,
        ..Default::default()
    };
    let result =
        restore::restore(&repo, "ns/b/data.manifest.jsonl.zst", &untrusted, &options).unwrap();
    assert_eq!(result.skipped_devices, 1);
    assert_eq!(result.verification, "Verified");
    assert!(!untrusted.join("mem").exists());
    assert_eq!(mode(&untrusted.join("tool")) & 0o7777, 0o755);
    assert_eq!(mode(&untrusted.join("shared")) & 0o7777, 0o775);
    assert_eq!(fs::read(untrusted.join("tool")).unwrap(), b"#!/bin/sh\n");
}

/// Every path below `root` with what it is, as exact bytes (names need not be UTF-8).
fn byte_listing(root: &Path) -> Vec<(Vec<u8>, String)> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let m = fs::symlink_metadata(&path).unwrap();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let what = if m.is_dir() {
                stack.push(path.clone());
                "dir".to_string()
            } else if m.file_type().is_symlink() {
                format!(
                    "-> {:?}",
                    fs::read_link(&path).unwrap().as_os_str().as_bytes()
                )
            } else {
                blake3::hash(&fs::read(&path).unwrap()).to_hex().to_string()
            };
            out.push((rel, what));
        }
    }
    out.sort();
    out
}

#[test]
fn names_that_are_not_utf8_survive_backup_restore_and_gnu_tar_byte_for_byte() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    let name = |bytes: &[u8]| source.join(OsStr::from_bytes(bytes));
    fs::create_dir_all(&source).unwrap();
    // Latin-1 "café" and the name its lossy conversion gives: two files, not one.
    fs::write(name(b"caf\xe9"), "latin-1\n").unwrap();
    fs::write(name("caf\u{fffd}".as_bytes()), "replacement character\n").unwrap();
    // A directory with such a name and children, an empty one, and links with such targets.
    fs::create_dir_all(name(b"d\xff/sub")).unwrap();
    fs::write(name(b"d\xff/sub/f\xfe"), "deep\n").unwrap();
    fs::create_dir_all(name(b"empty\x80")).unwrap();
    symlink(OsStr::from_bytes(b"caf\xe9"), name(b"link\xe9")).unwrap();
    fs::hard_link(name(b"d\xff/sub/f\xfe"), name(b"hard\xfe")).unwrap();
    let repo_dir = tmp.path().join("repo");
    let repo = DirRepository::new(&repo_dir);
    backup::run(
        &repo,
        &BackupRequest {
            source: &source,
            pvc: "data",
            dir: "ns/b",
            compression: Compression::Zstd,
            created_at: String::new(),
        },
    )
    .unwrap();
    let expected = byte_listing(&source);
    assert_eq!(expected.len(), 8, "{expected:?}");

    let target = tmp.path().join("target");
    fs::create_dir_all(&target).unwrap();
    let result = restore::restore(
        &repo,
        "ns/b/data.manifest.jsonl.zst",
        &target,
        &RestoreOptions::default(),
    )
    .unwrap();
    assert_eq!(result.verification, "Verified");
    assert_eq!(byte_listing(&target), expected);
    let a = fs::metadata(target.join(OsStr::from_bytes(b"hard\xfe"))).unwrap();
    let b = fs::metadata(target.join(OsStr::from_bytes(b"d\xff/sub/f\xfe"))).unwrap();
    assert_eq!(a.ino(), b.ino(), "the hardlink is one file again");

    // GNU tar, independently, extracts the same bytes.
    let by_tar = tmp.path().join("tar");
    fs::create_dir_all(&by_tar).unwrap();
    let status = std::process::Command::new("tar")
        .arg("--zstd")
        .arg("-xf")
        .arg(repo_dir.join("ns/b/data.tar.zst"))
        .arg("-C")
        .arg(&by_tar)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(byte_listing(&by_tar), expected);
}

#[test]
fn a_planted_previous_directory_link_is_removed_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("target");
    let elsewhere = tmp.path().join("elsewhere");
    fs::create_dir_all(&target).unwrap();
    fs::create_dir_all(elsewhere.join("old")).unwrap();
    fs::write(elsewhere.join("old/taken"), "not the target's\n").unwrap();
    fs::write(target.join("mine"), "the target's own\n").unwrap();
    symlink(&elsewhere, target.join(commit::PREVIOUS)).unwrap();
    assert!(!commit::recover(&target).unwrap(), "no interrupted commit");
    assert!(!target.join(commit::PREVIOUS).exists());
    assert!(
        !target.join("taken").exists(),
        "nothing moved in from elsewhere"
    );
    assert!(elsewhere.join("old/taken").exists());
    assert_eq!(
        fs::read_to_string(target.join("mine")).unwrap(),
        "the target's own\n"
    );
}

#[test]
fn a_manifest_of_another_format_or_an_unknown_compression_is_refused_not_guessed() {
    let f = backed_up(Compression::Zstd);
    let path = f.repo_dir.join("ns/b/data.manifest.jsonl.zst");
    let original = manifest_lines(&path);
    for (field, value, expected) in [
        ("compression", "lz4", "lz4"),
        ("format", "backstop.dev/manifest/v9", "is neither"),
    ] {
        let mut changed = original.clone();
        changed[0][field] = serde_json::json!(value);
        write_manifest_lines(&path, &changed);
        let err = restore::restore(
            &f.repo,
            "ns/b/data.manifest.jsonl.zst",
            &f.target,
            &RestoreOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err.reason(), Reason::ArtifactUnreadable, "{field}: {err}");
        assert!(err.to_string().contains(expected), "{field}: {err}");
        assert_eq!(fs::read_dir(&f.target).unwrap().count(), 0, "{field}");
    }
}

#[test]
fn the_artifact_must_be_the_one_its_manifest_names_even_when_every_file_matches() {
    let f = backed_up(Compression::Zstd);
    let path = f.repo_dir.join("ns/b/data.manifest.jsonl.zst");
    let mut lines = manifest_lines(&path);
    let end = lines.len() - 1;
    lines[end]["end"]["artifact"]["blake3"] =
        serde_json::json!(blake3::hash(b"other").to_hex().to_string());
    write_manifest_lines(&path, &lines);
    let err = restore::restore(
        &f.repo,
        "ns/b/data.manifest.jsonl.zst",
        &f.target,
        &RestoreOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.reason(), Reason::IntegrityCheckFailed, "{err}");
    assert_eq!(fs::read_dir(&f.target).unwrap().count(), 0);
    let err = restore::verify(&f.repo, "ns/b/data.manifest.jsonl.zst", None).unwrap_err();
    assert_eq!(err.reason(), Reason::IntegrityCheckFailed, "{err}");
}

#[test]
fn a_fresh_filesystems_lost_and_found_does_not_make_the_target_non_empty() {
    let f = backed_up(Compression::Zstd);
    fs::create_dir(f.target.join("lost+found")).unwrap();
    restore::restore(
        &f.repo,
        "ns/b/data.manifest.jsonl.zst",
        &f.target,
        &RestoreOptions {
            policy: ExistingDataPolicy::FailIfNotEmpty,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(f.target.join("lost+found").is_dir(), "kept");
    assert!(f.target.join("a/file.txt").is_file());
}

#[test]
fn a_manifest_listing_children_before_their_directory_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = crafted(
        &tmp.path().join("repo"),
        |b| {
            file(b, b"d/f", b"child first");
            b.append(
                &raw_header(b"d/", tar::EntryType::Directory, 0, None),
                std::io::empty(),
            )
            .unwrap();
        },
        vec![
            entry("d/f", EntryKind::File, None, Some(b"child first")),
            entry("d", EntryKind::Dir, None, None),
        ],
    );
    let target = tmp.path().join("target");
    fs::create_dir(&target).unwrap();
    let err = restore::restore(
        &repo,
        "ns/b/data.manifest.jsonl.zst",
        &target,
        &RestoreOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.reason(), Reason::UnsafeArchive, "{err}");
    assert!(err.to_string().contains("walk's order"), "{err}");
    assert_eq!(fs::read_dir(&target).unwrap().count(), 0);
}

fn mknod(path: &Path, kind: libc::mode_t, dev: libc::dev_t) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mknod(c.as_ptr(), kind | 0o640, dev) }, 0);
}

#[test]
fn fifos_and_devices_come_back_as_they_were_and_devices_are_skipped_when_untrusted() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    fs::create_dir(&source).unwrap();
    fs::write(source.join("plain"), "p").unwrap();
    mknod(&source.join("pipe"), libc::S_IFIFO, 0);
    let null = libc::makedev(1, 3);
    mknod(&source.join("null"), libc::S_IFCHR, null);
    let loop0 = libc::makedev(7, 0);
    mknod(&source.join("loop"), libc::S_IFBLK, loop0);
    let repo = DirRepository::new(tmp.path().join("repo"));
    let request = BackupRequest {
        source: &source,
        pvc: "data",
        dir: "ns/b",
        compression: Compression::Zstd,
        created_at: String::new(),
    };
    backup::run(&repo, &request).unwrap();

    let trusted = tmp.path().join("trusted");
    fs::create_dir(&trusted).unwrap();
    let result = restore::restore(
        &repo,
        "ns/b/data.manifest.jsonl.zst",
        &trusted,
        &RestoreOptions::default(),
    )
    .unwrap();
    assert_eq!(
        (result.entries, result.files, result.skipped_devices),
        (4, 1, 0)
    );
    assert_eq!(result.bytes, 1, "the one byte of plain");
    let pipe = fs::symlink_metadata(trusted.join("pipe")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&pipe.file_type()));
    let dev = fs::symlink_metadata(trusted.join("null")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &dev.file_type()
    ));
    assert_eq!(dev.rdev(), null);
    assert_eq!(dev.mode() & 0o7777, 0o640);
    let block = fs::symlink_metadata(trusted.join("loop")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_block_device(
        &block.file_type()
    ));
    assert_eq!(block.rdev(), loop0);

    let untrusted = tmp.path().join("untrusted");
    fs::create_dir(&untrusted).unwrap();
    let options = RestoreOptions {
        untrusted: true,
        ..Default::default()
    };
    let result =
        restore::restore(&repo, "ns/b/data.manifest.jsonl.zst", &untrusted, &options).unwrap();
    assert_eq!(
        (result.entries, result.files, result.skipped_devices),
        (4, 1, 2)
    );
    assert!(!untrusted.join("null").exists());
    assert!(!untrusted.join("loop").exists());
    assert!(untrusted.join("pipe").exists());
}
