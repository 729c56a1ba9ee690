//! The restic repository format, checked by an independent reader: Debian's restic 0.14 must
//! `check --read-data` every repository Backstop writes and `restore` every snapshot to a tree
//! equal to the source (content, modes, owners, times, symlinks, hard links). Also: unchanged
//! re-backups add nothing, a wrong password is named, forgotten snapshots' data is reclaimed by
//! prune, and two backups writing the same repository at once both land.

use backstop_api::ExistingDataPolicy;
use backstop_api::contract::{Reason, RestoreResult};
use backstop_mover::repository::{DirRepository, Repository};
use backstop_mover::restic::{Labels, Restic};
use backstop_mover::restore::{RestoreError, RestoreOptions};
use rustic_core::repofile::{Metadata, Node, NodeType};
use rustic_core::{ReadSource, ReadSourceEntry, RusticResult};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

const PASSWORD: &str = "correct horse battery staple";
const ROOT: &str = "shop/_restic";

/// Every entry below `root`: kind, content digest or link target, mode, owner, mtime.
fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let m = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let (what, mode) = if m.is_dir() {
                stack.push(path.clone());
                ("dir".to_string(), m.mode() & 0o7777)
            } else if m.file_type().is_symlink() {
                (format!("-> {}", fs::read_link(&path).unwrap().display()), 0)
            } else {
                (
                    blake3::hash(&fs::read(&path).unwrap()).to_hex().to_string(),
                    m.mode() & 0o7777,
                )
            };
            let time = if m.file_type().is_symlink() {
                String::new()
            } else {
                format!("{}.{}", m.mtime(), m.mtime_nsec())
            };
            out.push(format!(
                "{rel} {what} {mode:o} {}:{} {time}",
                m.uid(),
                m.gid()
            ));
        }
    }
    out.sort();
    out
}

/// A volume with what restic keeps: nested directories, modes (setgid, sticky, private), a
/// symlink, hard links, an empty file and directory, a sparse file, a name that is not UTF-8.
fn seed(root: &Path) {
    fs::create_dir_all(root.join("pgdata/base/1")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::create_dir_all(root.join("shared")).unwrap();
    for i in 0..40u32 {
        let body: Vec<u8> = (0..(i * 997 % 50_000))
            .map(|b| (b * 31 + i) as u8)
            .collect();
        fs::write(root.join(format!("pgdata/base/1/{i}")), body).unwrap();
    }
    fs::write(root.join("pgdata/PG_VERSION"), "15\n").unwrap();
    fs::set_permissions(root.join("pgdata"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(root.join("shared"), fs::Permissions::from_mode(0o3775)).unwrap();
    fs::write(root.join("empty-file"), "").unwrap();
    fs::write(root.join("shared/a"), "linked twice").unwrap();
    fs::hard_link(root.join("shared/a"), root.join("shared/b")).unwrap();
    symlink("pgdata/PG_VERSION", root.join("version")).unwrap();
    let sparse = fs::File::create(root.join("sparse")).unwrap();
    sparse.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&sparse, b"end", (8 << 20) - 3).unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9");
    fs::write(root.join(odd), "latin-1 name").unwrap();
    fs::set_permissions(root, fs::Permissions::from_mode(0o750)).unwrap();
    // Owners other than the mover's (it runs as root, as these tests do in CI).
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::lchown(root.join("pgdata"), Some(999), Some(999)).unwrap();
        std::os::unix::fs::lchown(root.join("shared/a"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(root.join("version"), Some(4321), Some(8765)).unwrap();
    }
    for path in ["pgdata/PG_VERSION", "empty-file"] {
        let t = filetime(1_600_000_000, 123_456_789);
        set_mtime(&root.join(path), t);
    }
}

use std::os::unix::ffi::OsStrExt;

fn filetime(secs: i64, nanos: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: secs,
        tv_nsec: nanos,
    }
}

fn set_mtime(path: &Path, t: libc::timespec) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let times = [t, t];
    // SAFETY: a valid path and two timespecs.
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) },
        0
    );
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    source: PathBuf,
    store: Arc<dyn Repository>,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("repository");
        let source = tmp.path().join("volume");
        fs::create_dir_all(&source).unwrap();
        seed(&source);
        let store: Arc<dyn Repository> = Arc::new(DirRepository::new(&dir));
        Fixture {
            dir,
            source,
            store,
            _tmp: tmp,
        }
    }

    fn open(&self) -> Restic {
        Restic::open(self.store.clone(), ROOT, PASSWORD, true)
            .unwrap()
            .0
    }

    fn labels(&self, pvc: &str, backup: &str) -> Labels {
        Labels {
            host: "shop".into(),
            path: PathBuf::from(format!("/{pvc}")),
            tags: vec![
                "backstop".into(),
                format!("pvc={pvc}"),
                format!("backup={backup}"),
            ],
        }
    }

    /// Debian's restic on this repository.
    fn restic(&self, args: &[&str]) -> std::process::Output {
        Command::new("restic")
            .arg("--repo")
            .arg(self.dir.join(ROOT))
            .args(["--no-cache", "--quiet"])
            .args(args)
            .env("RESTIC_PASSWORD", PASSWORD)
            .output()
            .expect("restic 0.14 is installed (apt-get install restic)")
    }

    fn restic_ok(&self, args: &[&str]) -> String {
        let out = self.restic(args);
        assert!(
            out.status.success(),
            "restic {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[test]
fn restic_checks_and_restores_what_backstop_backs_up() {
    let f = Fixture::new();
    let (restic, created) = Restic::open(f.store.clone(), ROOT, PASSWORD, true).unwrap();
    assert!(created);
    let first = restic
        .backup(&f.source, &f.labels("db", "nightly-1"))
        .unwrap();
    assert_eq!(first.parent, None);
    assert_eq!(first.files, 47, "{first:?}");
    assert_eq!(first.files_read, 47);
    assert!(first.bytes >= 8 << 20, "{first:?}");
    assert!(
        first.bytes_added > 0 && first.bytes_added < 2 << 20,
        "{first:?}"
    );

    f.restic_ok(&["check", "--read-data"]);
    let snapshots: serde_json::Value =
        serde_json::from_str(&f.restic_ok(&["snapshots", "--json"])).unwrap();
    let snap = &snapshots[0];
    assert_eq!(snap["id"], first.id.as_str());
    assert_eq!(snap["hostname"], "shop");
    assert_eq!(snap["paths"], serde_json::json!(["/db"]));
    assert_eq!(
        snap["tags"],
        serde_json::json!(["backstop", "backup=nightly-1", "pvc=db"])
    );

    let target = f._tmp.path().join("restored");
    f.restic_ok(&["restore", &first.id, "--target", target.to_str().unwrap()]);
    let restored = target.join("db");
    assert_eq!(listing(&restored), listing(&f.source));
    let mode = fs::metadata(&restored).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o750, "the volume root's own mode is kept");
    let (a, b) = (
        fs::metadata(restored.join("shared/a")).unwrap(),
        fs::metadata(restored.join("shared/b")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "hard links stay links");

    // Unchanged: nothing read, (almost) nothing added; restic still restores it whole.
    let second = f
        .open()
        .backup(&f.source, &f.labels("db", "nightly-2"))
        .unwrap();
    assert_eq!(second.parent.as_deref(), Some(first.id.as_str()));
    assert_eq!(second.files_read, 0, "{second:?}");
    assert_eq!(second.bytes_added, 0, "{second:?}");

    // A mode changed, and a file rewritten in place with its size and mtime put back (only its
    // ctime moved): the next snapshot has both, the content read again.
    fs::set_permissions(
        f.source.join("pgdata/PG_VERSION"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::write(f.source.join("empty-file"), "").unwrap();
    let rewritten = f.source.join("pgdata/base/1/3");
    let mut body = fs::read(&rewritten).unwrap();
    body[0] ^= 0xff;
    let before = fs::metadata(&rewritten).unwrap();
    fs::write(&rewritten, &body).unwrap();
    set_mtime(&rewritten, filetime(before.mtime(), before.mtime_nsec()));
    set_mtime(
        &f.source.join("empty-file"),
        filetime(1_600_000_000, 123_456_789),
    );
    let moded = f
        .open()
        .backup(&f.source, &f.labels("db", "nightly-2b"))
        .unwrap();
    let target = f._tmp.path().join("restored-moded");
    f.restic_ok(&["restore", &moded.id, "--target", target.to_str().unwrap()]);
    assert_eq!(listing(&target.join("db")), listing(&f.source));

    // One file changed: about its size is added.
    fs::write(f.source.join("pgdata/base/1/7"), vec![7u8; 300_000]).unwrap();
    let third = f
        .open()
        .backup(&f.source, &f.labels("db", "nightly-3"))
        .unwrap();
    assert_eq!(third.files_read, 1, "{third:?}");
    assert!(
        third.bytes_added < 20_000,
        "300 KB of one byte compresses: {third:?}"
    );
    f.restic_ok(&["check", "--read-data"]);
}

#[test]
fn a_wrong_password_is_named_and_an_empty_one_is_missing_credentials() {
    let f = Fixture::new();
    f.open();
    let err = Restic::open(f.store.clone(), ROOT, "not it", true)
        .err()
        .expect("refused");
    assert_eq!(err.reason, Reason::WrongPassword, "{err}");
    assert!(err.message.contains("passwordSecretRef"), "{err}");
    let err = Restic::open(f.store.clone(), ROOT, "", true)
        .err()
        .expect("refused");
    assert_eq!(err.reason, Reason::CredentialsMissing);
    // Without `create`, a repository that is not there is not made.
    let err = Restic::open(f.store.clone(), "other/_restic", PASSWORD, false)
        .err()
        .expect("refused");
    assert_eq!(err.reason, Reason::RepositoryUnusable);
    assert!(!f.dir.join("other").exists());
}

#[test]
fn forgotten_snapshots_lose_their_data_to_prune_and_the_rest_stays_whole() {
    let f = Fixture::new();
    let mut ids = Vec::new();
    // Each backup holds its own 300 KB of incompressible data.
    for i in 0..3 {
        if i > 0 {
            fs::remove_file(f.source.join(format!("noise-{}", i - 1))).unwrap();
        }
        fs::write(
            f.source.join(format!("noise-{i}")),
            random(300_000, i as u64),
        )
        .unwrap();
        ids.push(
            f.open()
                .backup(&f.source, &f.labels("db", &format!("b{i}")))
                .unwrap()
                .id,
        );
    }
    let before = du(&f.dir);
    let forgotten = f
        .open()
        .forget(&[ids[0].clone(), ids[1][..8].to_string()], "b0")
        .unwrap();
    // A full id names its snapshot; a prefix nothing (it could name several).
    assert_eq!(forgotten, vec![ids[0].clone()]);
    // Only a snapshot tagged as the Backup's own is forgotten, whatever ids it is given.
    let others = f
        .open()
        .forget(&[ids[1].clone(), ids[2].clone()], "b0")
        .unwrap();
    assert!(others.is_empty(), "{others:?}");
    // Marked, not removed: a backup running now may still rely on those packs.
    let marked = f
        .open()
        .prune(std::time::Duration::from_secs(23 * 3600), false)
        .unwrap();
    assert_eq!(marked.snapshots, 2);
    assert_eq!(marked.marked_packs_removed, 0);
    f.restic_ok(&["check", "--read-data"]);
    // Instant: the unused data goes now.
    assert_eq!(
        f.open().forget(&[ids[1].clone()], "b1").unwrap(),
        vec![ids[1].clone()]
    );
    let pruned = f.open().prune(std::time::Duration::ZERO, true).unwrap();
    assert!(pruned.unused_bytes > 0, "{pruned:?}");
    let after = du(&f.dir);
    assert!(after + 500_000 < before, "{before} -> {after} bytes");
    f.restic_ok(&["check", "--read-data"]);
    let target = f._tmp.path().join("restored");
    f.restic_ok(&["restore", &ids[2], "--target", target.to_str().unwrap()]);
    assert_eq!(listing(&target.join("db")), listing(&f.source));
}

#[test]
fn two_backups_writing_the_same_repository_at_once_both_land() {
    let f = Fixture::new();
    f.open();
    let other = f._tmp.path().join("other-volume");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("big"), random(3 << 20, 9)).unwrap();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| f.open().backup(&f.source, &f.labels("db", "x")));
        let b = s.spawn(|| f.open().backup(&other, &f.labels("cache", "x")));
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    assert_ne!(a.id, b.id);
    let listed = f.restic_ok(&["snapshots", "--json"]);
    assert!(listed.contains(&a.id) && listed.contains(&b.id), "{listed}");
    f.restic_ok(&["check", "--read-data"]);
}

/// Incompressible bytes from a seed.
fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn du(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}

fn restore(
    f: &Fixture,
    id: &str,
    target: &Path,
    policy: ExistingDataPolicy,
) -> Result<RestoreResult, RestoreError> {
    let options = RestoreOptions {
        policy,
        ..RestoreOptions::default()
    };
    f.open().restore(id, target, &options)
}

#[test]
fn backstop_restores_its_snapshots_and_restics_own_exactly() {
    let f = Fixture::new();
    let ours = f.open().backup(&f.source, &f.labels("db", "b")).unwrap();
    let target = f._tmp.path().join("target");
    fs::create_dir(&target).unwrap();
    let done = restore(&f, &ours.id, &target, ExistingDataPolicy::FailIfNotEmpty).unwrap();
    assert_eq!(listing(&target), listing(&f.source));
    // Regular files written: the symlink and the second name of the hard link are not.
    assert_eq!(done.files, 45);
    assert_eq!(done.bytes, ours.bytes - "linked twice".len() as u64);
    assert_eq!(done.verification, "Verified");
    let (a, b) = (
        fs::metadata(target.join("shared/a")).unwrap(),
        fs::metadata(target.join("shared/b")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "hard links stay links");

    // A snapshot restic 0.14 made itself, of the same volume.
    f.restic_ok(&["backup", f.source.to_str().unwrap()]);
    let theirs: serde_json::Value =
        serde_json::from_str(&f.restic_ok(&["snapshots", "--json", "--latest", "1"])).unwrap();
    let theirs = theirs
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["paths"][0] != "/db")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let target = f._tmp.path().join("target-2");
    fs::create_dir(&target).unwrap();
    restore(&f, &theirs, &target, ExistingDataPolicy::FailIfNotEmpty).unwrap();
    assert_eq!(listing(&target), listing(&f.source));
}

#[test]
fn restores_keep_the_existing_data_policies_and_a_damaged_repository_changes_nothing() {
    let f = Fixture::new();
    let id = f.open().backup(&f.source, &f.labels("db", "b")).unwrap().id;
    let target = f._tmp.path().join("target");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("precious"), "keep me").unwrap();
    let err = restore(&f, &id, &target, ExistingDataPolicy::FailIfNotEmpty).unwrap_err();
    assert_eq!(err.reason(), Reason::TargetNotEmpty);
    restore(&f, &id, &target, ExistingDataPolicy::Merge).unwrap();
    assert_eq!(
        fs::read_to_string(target.join("precious")).unwrap(),
        "keep me"
    );
    restore(&f, &id, &target, ExistingDataPolicy::Overwrite).unwrap();
    assert_eq!(listing(&target), listing(&f.source));

    let err = restore(&f, &"0".repeat(64), &target, ExistingDataPolicy::Overwrite).unwrap_err();
    assert_eq!(err.reason(), Reason::ArtifactMissing);

    // One flipped byte in every data pack: the restore fails and the target is as it was.
    let before = listing(&target);
    for (key, _) in f.store.list(&format!("{ROOT}/data")).unwrap() {
        let path = f.dir.join(&key);
        let mut bytes = fs::read(&path).unwrap();
        bytes[10] ^= 1;
        fs::write(&path, bytes).unwrap();
    }
    let err = restore(&f, &id, &target, ExistingDataPolicy::Overwrite).unwrap_err();
    assert!(
        matches!(
            err.reason(),
            Reason::ArtifactUnreadable | Reason::IntegrityCheckFailed
        ),
        "{err}"
    );
    assert_eq!(listing(&target), before);
}

/// A volume whose one file's node is named `name`: what a hostile repository could hold.
struct Hostile {
    root: PathBuf,
    name: &'static str,
}

impl ReadSource for Hostile {
    type Open = std::io::Cursor<Vec<u8>>;
    type Iter = std::vec::IntoIter<RusticResult<ReadSourceEntry<Self::Open>>>;

    fn size(&self) -> RusticResult<Option<u64>> {
        Ok(None)
    }

    fn entries(&self) -> Self::Iter {
        let meta = Metadata {
            mode: Some(0o644),
            size: 4,
            ..Metadata::default()
        };
        let dir = Metadata {
            mode: Some(0o755 | 1 << 31),
            ..Metadata::default()
        };
        vec![
            Ok(ReadSourceEntry {
                path: self.root.clone(),
                node: Node::new_node(std::ffi::OsStr::new("db"), NodeType::Dir, dir),
                open: None,
            }),
            Ok(ReadSourceEntry {
                path: self.root.join("x"),
                node: Node::new_node(std::ffi::OsStr::new(self.name), NodeType::File, meta),
                open: Some(std::io::Cursor::new(b"evil".to_vec())),
            }),
        ]
        .into_iter()
    }
}

#[test]
fn node_names_that_are_not_one_plain_name_are_refused_before_anything_is_committed() {
    for name in ["..", "../../etc/cron.d/x", "."] {
        let f = Fixture::new();
        f.open();
        let hostile = Hostile {
            root: PathBuf::from("/db"),
            name,
        };
        let backends = rustic_core::RepositoryBackends::new(
            Arc::new(backstop_mover::restic::backend::Backend::new(
                f.store.clone(),
                ROOT,
            )),
            None,
        );
        let repo = rustic_core::Repository::new(
            &rustic_core::RepositoryOptions::default().no_cache(true),
            &backends,
        )
        .unwrap()
        .open(&rustic_core::Credentials::Password(PASSWORD.into()))
        .unwrap()
        .to_indexed_ids()
        .unwrap();
        let snap = rustic_core::SnapshotOptions::default()
            .to_snapshot()
            .unwrap();
        let opts = rustic_core::BackupOptions::default();
        let snap = repo
            .archive(&opts, &hostile, snap, &[PathBuf::from("/db")])
            .unwrap();
        let target = f._tmp.path().join("target");
        fs::create_dir(&target).unwrap();
        let err = restore(
            &f,
            &snap.id.to_hex(),
            &target,
            ExistingDataPolicy::Overwrite,
        )
        .unwrap_err();
        assert_eq!(err.reason(), Reason::UnsafeArchive, "{name}: {err}");
        assert_eq!(fs::read_dir(&target).unwrap().count(), 0, "{name}");
        assert!(!f._tmp.path().join("etc").exists());
    }
}

#[test]
fn backstop_and_restic_respect_each_others_locks() {
    let f = Fixture::new();
    f.open()
        .backup(&f.source, &f.labels("db", "nightly-1"))
        .unwrap();
    let restic = f.open();
    let patience = std::time::Duration::from_secs(2);

    // Backstop's shared lock, as restic reads it: restic's prune waits for it.
    let held = restic.lock(false, patience).unwrap();
    let listed = f.restic_ok(&["list", "locks", "--no-lock"]);
    let ids: Vec<&str> = listed.lines().collect();
    assert_eq!(ids.len(), 1, "{listed}");
    let lock: serde_json::Value =
        serde_json::from_str(&f.restic_ok(&["cat", "lock", ids[0], "--no-lock"])).unwrap();
    assert_eq!(lock["exclusive"], false, "{lock}");
    assert!(
        lock["hostname"].as_str().unwrap().starts_with("backstop"),
        "{lock}"
    );
    let prune = f.restic(&["prune"]);
    assert!(
        !prune.status.success(),
        "restic prune ran beside a Backstop backup"
    );
    assert!(
        String::from_utf8_lossy(&prune.stderr).contains("locked"),
        "{}",
        String::from_utf8_lossy(&prune.stderr)
    );
    // Two shared locks share; an exclusive one (a forget, a prune) waits for them.
    let second = restic.lock(false, patience).unwrap();
    // A reader (restore, verification: the repository mounted read-only) writes no lock and
    // goes on beside shared ones.
    restic.wait_for_exclusive(patience).unwrap();
    let refused = restic.lock(true, patience).err().unwrap();
    assert_eq!(refused.reason, Reason::RepositoryLocked);
    drop((held, second));
    assert_eq!(
        f.restic_ok(&["list", "locks", "--no-lock"]),
        "",
        "removed when done"
    );
    f.restic_ok(&["check"]);

    // restic's exclusive lock: `restic key passwd` holds it while it waits for the new password.
    let fifo = f.dir.join("new-password");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let mut holder = Command::new("restic")
        .arg("--repo")
        .arg(f.dir.join(ROOT))
        .args(["--no-cache", "key", "passwd", "--new-password-file"])
        .arg(&fifo)
        .env("RESTIC_PASSWORD", PASSWORD)
        .spawn()
        .unwrap();
    // Until restic itself reads its lock back (its file is written in place, not renamed).
    for _ in 0..100 {
        let listed = f.restic_ok(&["list", "locks", "--no-lock"]);
        if let Some(id) = listed.lines().next()
            && f.restic(&["cat", "lock", id, "--no-lock"]).status.success()
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let waited = std::time::Instant::now();
    let refused = restic.lock(false, patience).err().unwrap();
    assert!(waited.elapsed() >= patience, "it waited before failing");
    assert_eq!(refused.reason, Reason::RepositoryLocked);
    assert!(
        refused.message.contains("locked exclusively by root@"),
        "{}",
        refused.message
    );
    let reader = restic.wait_for_exclusive(patience).unwrap_err();
    assert_eq!(
        reader.reason,
        Reason::RepositoryLocked,
        "a reader waits for it too"
    );
    let _ = holder.kill();
    let _ = holder.wait();
}
