//! Artifacts must be readable without Backstop: every compression is extracted here with GNU tar
//! (and the zstd / gzip tools), and the result compared with the source entry by entry.

use backstop_mover::backup::{self, BackupRequest, Compression};
use backstop_mover::manifest::{Entry, EntryKind, walk_order};
use backstop_mover::repository::DirRepository;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tree with what a volume tends to hold, and what tar formats find awkward.
fn varied_tree(root: &Path) {
    fs::create_dir_all(root.join("nested/deeper/deepest")).unwrap();
    fs::create_dir_all(root.join("empty dir")).unwrap();
    fs::write(root.join("plain.txt"), "hello\n").unwrap();
    fs::write(
        root.join("nested/data.bin"),
        (0..200_000u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    fs::write(
        root.join("nested/deeper/deepest/unicode ünïcødé 名前.txt"),
        "ü\n",
    )
    .unwrap();
    let long = "a-very-long-directory-name-that-keeps-going".repeat(3);
    fs::create_dir_all(root.join(&long)).unwrap();
    fs::write(
        root.join(&long)
            .join("file-with-a-long-name-too-".repeat(4)),
        "long\n",
    )
    .unwrap();
    fs::write(root.join("secret"), "0600\n").unwrap();
    fs::set_permissions(root.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(root.join("tool.sh"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("tool.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink("nested/data.bin", root.join("link-to-data")).unwrap();
    symlink("/nonexistent/target", root.join("dangling")).unwrap();
    fs::hard_link(root.join("plain.txt"), root.join("nested/hardlink.txt")).unwrap();
    fs::write(root.join("empty-file"), "").unwrap();
    set_old_times(root);
}

/// Gives every entry below `root` its own time, years back, so an entry whose time is not
/// restored shows up whatever second the test runs in.
fn set_old_times(root: &Path) {
    let mut stack = vec![root.to_path_buf()];
    let mut seconds = 1_600_000_000;
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path.clone());
            }
            seconds += 3_600;
            let time = libc::timespec {
                tv_sec: seconds,
                tv_nsec: 0,
            };
            let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
            // SAFETY: a NUL-terminated path and two timespecs that outlive the call.
            let rc = unsafe {
                libc::utimensat(
                    libc::AT_FDCWD,
                    c_path.as_ptr(),
                    [time, time].as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            };
            assert_eq!(
                rc,
                0,
                "{}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
    }
}

#[derive(Debug, PartialEq)]
struct Seen {
    kind: &'static str,
    mode: u32,
    mtime: i64,
    content: Option<Vec<u8>>,
    link: Option<PathBuf>,
}

impl Seen {
    /// Everything but the content, which is too long to print.
    fn summary(&self) -> (&str, u32, i64, Option<usize>, Option<&Path>) {
        (
            self.kind,
            self.mode,
            self.mtime,
            self.content.as_ref().map(Vec::len),
            self.link.as_deref(),
        )
    }
}

fn snapshot(root: &Path) -> Vec<(String, Seen)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let ft = meta.file_type();
            let seen = if ft.is_dir() {
                stack.push(path.clone());
                Seen {
                    kind: "dir",
                    mode: meta.mode() & 0o7777,
                    mtime: meta.mtime(),
                    content: None,
                    link: None,
                }
            } else if ft.is_symlink() {
                Seen {
                    kind: "symlink",
                    mode: 0,
                    mtime: meta.mtime(),
                    content: None,
                    link: Some(fs::read_link(&path).unwrap()),
                }
            } else {
                Seen {
                    kind: "file",
                    mode: meta.mode() & 0o7777,
                    mtime: meta.mtime(),
                    content: Some(fs::read(&path).unwrap()),
                    link: None,
                }
            };
            out.push((rel, seen));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn back_up_and_extract(compression: Compression, tar_flag: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    let repo_dir = tmp.path().join("repo");
    let restored = tmp.path().join("restored");
    fs::create_dir_all(&source).unwrap();
    fs::create_dir_all(&restored).unwrap();
    varied_tree(&source);
    let repo = DirRepository::new(&repo_dir);

    let result = backup::run(
        &repo,
        &BackupRequest {
            source: &source,
            pvc: "data",
            dir: "shop/nightly-1",
            compression,
            created_at: "2026-11-21T02:00:00Z".into(),
        },
    )
    .unwrap();

    let artifact = repo_dir.join(&result.artifact);
    assert_eq!(fs::metadata(&artifact).unwrap().len(), result.bytes);
    assert_eq!(
        blake3::hash(&fs::read(&artifact).unwrap())
            .to_hex()
            .to_string(),
        result.digest
    );
    // The manifest read with the standard zstd tool: JSON lines, a header, the entries, an end.
    let decoded = Command::new("zstd")
        .arg("-dc")
        .arg(repo_dir.join("shop/nightly-1/data.manifest.jsonl.zst"))
        .output()
        .unwrap();
    assert!(decoded.status.success());
    let lines: Vec<serde_json::Value> = decoded
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines[0]["format"], backstop_mover::manifest::FORMAT);
    let end = &lines[lines.len() - 1]["end"];
    assert_eq!(end["artifact"]["blake3"], result.digest.as_str());
    assert_eq!(end["entries"], lines.len() - 2);
    assert_eq!(
        (
            &end["totals"]["files"],
            &end["totals"]["hardlinks"],
            &end["totals"]["symlinks"]
        ),
        (&7.into(), &1.into(), &2.into())
    );
    let entries: Vec<Entry> = lines[1..lines.len() - 1]
        .iter()
        .map(|l| serde_json::from_value(l.clone()).unwrap())
        .collect();
    for entry in entries.iter().filter(|e| e.kind == EntryKind::File) {
        let size = fs::metadata(source.join(&entry.path)).unwrap().len();
        assert_eq!(entry.size, size, "{}", entry.path);
    }
    let paths: Vec<&[u8]> = entries.iter().map(|e| e.path.as_bytes()).collect();
    assert!(
        paths.windows(2).all(|w| walk_order(w[0], w[1]).is_lt()),
        "in the walk's order: {paths:?}"
    );
    // Nothing with a temporary name is left behind.
    let names: Vec<_> = fs::read_dir(repo_dir.join("shop/nightly-1"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    let status = Command::new("tar")
        .arg(tar_flag)
        .arg("-xpf")
        .arg(&artifact)
        .arg("-C")
        .arg(&restored)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "GNU tar could not extract the {compression:?} artifact"
    );
    let (restored_tree, source_tree) = (snapshot(&restored), snapshot(&source));
    let differing: Vec<_> = restored_tree
        .iter()
        .zip(&source_tree)
        .filter(|(r, s)| r != s)
        .map(|(r, s)| format!("{} {:?} -> {} {:?}", s.0, s.1.summary(), r.0, r.1.summary()))
        .collect();
    assert_eq!(restored_tree.len(), source_tree.len());
    assert!(differing.is_empty(), "source -> restored: {differing:#?}");
    // The hardlink came back as a hardlink.
    let a = fs::metadata(restored.join("plain.txt")).unwrap();
    let b = fs::metadata(restored.join("nested/hardlink.txt")).unwrap();
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
}

#[test]
fn gnu_tar_extracts_a_zstd_artifact_identical_to_the_source() {
    back_up_and_extract(Compression::Zstd, "--zstd");
}

#[test]
fn gnu_tar_extracts_a_gzip_artifact_identical_to_the_source() {
    back_up_and_extract(Compression::Gzip, "-z");
}

#[test]
fn gnu_tar_extracts_an_uncompressed_artifact_identical_to_the_source() {
    back_up_and_extract(Compression::None, "--no-auto-compress");
}

#[test]
fn a_backup_of_a_missing_source_fails_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = DirRepository::new(tmp.path().join("repo"));
    let err = backup::run(
        &repo,
        &BackupRequest {
            source: &tmp.path().join("nope"),
            pvc: "data",
            dir: "ns/b",
            compression: Compression::Zstd,
            created_at: String::new(),
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
    assert!(
        !tmp.path()
            .join("repo/ns/b/data.manifest.jsonl.zst")
            .exists()
    );
}
