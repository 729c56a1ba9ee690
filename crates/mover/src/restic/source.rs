//! A volume as rustic's archiver reads it, walked the way every Backstop backup walks a volume
//! (`walk`): each name looked up relative to its open directory, never through a link, a file
//! opened only if it is still the object that was listed. rustic's own walker goes by full
//! paths, so a tenant who swaps a directory for a link mid-walk would have it read the mover
//! pod's files; this one cannot.
//!
//! rustic leaves out what it cannot read and carries on; a backup that silently misses files is
//! not one, so what could not be read is counted here and the backup fails on it.

use crate::walk::{Child, Dir, Kind, Stat};
use rustic_core::repofile::{Metadata, Node, NodeType};
use rustic_core::{ErrorKind, ReadSource, ReadSourceEntry, ReadSourceOpen, RusticError};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What the walk and the reads could not take.
#[derive(Debug, Default)]
pub struct Problems {
    /// Paths (relative to the volume) that could not be read, the first few, with the error.
    pub unreadable: Vec<String>,
    pub unreadable_count: u64,
    /// Entries that vanished or were swapped for another object between listing and reading.
    pub changed: u64,
}

const NAMED: usize = 5;

impl Problems {
    fn unreadable(&mut self, rel: &Path, err: &dyn std::fmt::Display) {
        self.unreadable_count += 1;
        if self.unreadable.len() < NAMED {
            self.unreadable.push(format!("{}: {err}", rel.display()));
        }
    }
}

type Shared = Arc<Mutex<Problems>>;

fn note(problems: &Shared, f: impl FnOnce(&mut Problems)) {
    let mut guard = problems.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut guard);
}

/// The volume mounted at `root`, stored as the snapshot path `as_path` (`/<pvc>`).
pub struct Volume {
    root: PathBuf,
    name: OsString,
    problems: Shared,
}

impl Volume {
    pub fn new(root: &Path, as_path: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            name: as_path
                .file_name()
                .unwrap_or(OsStr::new("volume"))
                .to_os_string(),
            problems: Shared::default(),
        }
    }

    pub fn problems(&self) -> Shared {
        self.problems.clone()
    }
}

impl ReadSource for Volume {
    type Open = Opener;
    type Iter = Walker;

    fn size(&self) -> rustic_core::RusticResult<Option<u64>> {
        Ok(None)
    }

    fn entries(&self) -> Walker {
        Walker {
            root: self.root.clone(),
            name: self.name.clone(),
            stack: Vec::new(),
            started: false,
            problems: self.problems.clone(),
        }
    }
}

/// A directory being walked: the names still to visit, in order.
struct Frame {
    dir: Arc<Dir>,
    path: PathBuf,
    names: std::vec::IntoIter<OsString>,
}

/// The volume's entries, in the order the archiver needs them: a directory, then everything
/// below it, names sorted bytewise (`Path`'s order).
pub struct Walker {
    root: PathBuf,
    name: OsString,
    stack: Vec<Frame>,
    started: bool,
    problems: Shared,
}

type Entry = rustic_core::RusticResult<ReadSourceEntry<Opener>>;

impl Walker {
    fn rel<'p>(&self, path: &'p Path) -> &'p Path {
        path.strip_prefix(&self.root).unwrap_or(path)
    }

    /// Counts `path` as unreadable for `err`.
    fn unreadable(&self, path: &Path, err: &io::Error) {
        let rel = self.rel(path);
        note(&self.problems, |p| p.unreadable(rel, err));
    }

    /// Enters the directory at `path`; a directory that cannot be listed is counted.
    fn enter(&mut self, dir: Dir, path: PathBuf) {
        match dir.names() {
            Ok(names) => self.stack.push(Frame {
                dir: Arc::new(dir),
                path,
                names: names.into_iter(),
            }),
            Err(e) => self.unreadable(&path, &e),
        }
    }

    /// The volume's root, named as the snapshot path's last part (its mode and owner kept).
    fn root_entry(&mut self) -> Option<Entry> {
        let opened = Dir::open_root(&self.root).and_then(|dir| Ok((dir.stat_self()?, dir)));
        match opened {
            Ok((stat, dir)) => {
                let node = Node::new_node(&self.name, NodeType::Dir, metadata(&stat));
                let path = self.root.clone();
                self.enter(dir, path.clone());
                Some(Ok(ReadSourceEntry {
                    path,
                    node,
                    open: None,
                }))
            }
            Err(e) => Some(Err(RusticError::with_source(
                ErrorKind::InputOutput,
                "the volume cannot be opened",
                e,
            ))),
        }
    }
}

impl Iterator for Walker {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        if !self.started {
            self.started = true;
            return self.root_entry();
        }
        loop {
            let frame = self.stack.last_mut()?;
            let Some(name) = frame.names.next() else {
                self.stack.pop();
                continue;
            };
            let dir = frame.dir.clone();
            let path = frame.path.join(&name);
            let stat = match dir.stat(&name) {
                Ok(Some(stat)) => stat,
                Ok(None) => {
                    note(&self.problems, |p| p.changed += 1);
                    continue;
                }
                Err(e) => {
                    self.unreadable(&path, &e);
                    continue;
                }
            };
            let (node_type, open) = match stat.kind {
                Kind::File => (
                    NodeType::File,
                    Some(Opener {
                        dir,
                        name: name.clone(),
                        listed: stat,
                        rel: self.rel(&path).to_path_buf(),
                        problems: self.problems.clone(),
                    }),
                ),
                Kind::Dir | Kind::Symlink => match dir.child(&name) {
                    Ok(Child::Dir(child, stat)) => {
                        let node = Node::new_node(&name, NodeType::Dir, metadata(&stat));
                        self.enter(child, path.clone());
                        return Some(Ok(ReadSourceEntry {
                            path,
                            node,
                            open: None,
                        }));
                    }
                    Ok(Child::Symlink(target, stat)) => {
                        let target = Path::new(OsStr::from_bytes(&target));
                        let node =
                            Node::new_node(&name, NodeType::from_link(target), metadata(&stat));
                        return Some(Ok(ReadSourceEntry {
                            path,
                            node,
                            open: None,
                        }));
                    }
                    Ok(_) => {
                        note(&self.problems, |p| p.changed += 1);
                        continue;
                    }
                    Err(e) => {
                        self.unreadable(&path, &e);
                        continue;
                    }
                },
                Kind::Fifo => (NodeType::Fifo, None),
                Kind::Socket => (NodeType::Socket, None),
                Kind::Char => (NodeType::Chardev { device: stat.rdev }, None),
                Kind::Block => (NodeType::Dev { device: stat.rdev }, None),
            };
            let node = Node::new_node(&name, node_type, metadata(&stat));
            return Some(Ok(ReadSourceEntry { path, node, open }));
        }
    }
}

/// Opens a listed file when the archiver reads it (not at all when the parent snapshot says it
/// is unchanged).
pub struct Opener {
    dir: Arc<Dir>,
    name: OsString,
    listed: Stat,
    rel: PathBuf,
    problems: Shared,
}

impl ReadSourceOpen for Opener {
    type Reader = Reading;

    fn open(self) -> rustic_core::RusticResult<Reading> {
        match self.dir.open_file(&self.name, &self.listed) {
            Ok(Some(file)) => Ok(Reading {
                file,
                rel: self.rel,
                problems: self.problems,
            }),
            Ok(None) => {
                note(&self.problems, |p| p.changed += 1);
                Err(RusticError::new(
                    ErrorKind::InputOutput,
                    "changed while it was backed up",
                ))
            }
            Err(e) => {
                note(&self.problems, |p| p.unreadable(&self.rel, &e));
                Err(RusticError::with_source(
                    ErrorKind::InputOutput,
                    "cannot be opened",
                    e,
                ))
            }
        }
    }
}

/// A file's content as the archiver reads it; a read error is counted before rustic drops it.
pub struct Reading {
    file: File,
    rel: PathBuf,
    problems: Shared,
}

impl Read for Reading {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf).inspect_err(|e| {
            note(&self.problems, |p| p.unreadable(&self.rel, e));
        })
    }
}

/// restic's node metadata for what `stat` says: Go's file mode, times, owner by number,
/// inode, device and link count (for hard links). Access time is the modification time, as
/// rustic does by default; extended attributes are not kept.
fn metadata(stat: &Stat) -> Metadata {
    let time = |secs: i64, nanos: u32| {
        rustic_core::jiff::Timestamp::new(secs, i32::try_from(nanos).unwrap_or(0)).ok()
    };
    let mtime = time(stat.mtime, stat.mtime_nanos);
    Metadata {
        mode: Some(go_mode(stat.kind, stat.mode)),
        mtime,
        atime: mtime,
        ctime: time(stat.ctime, stat.ctime_nanos),
        uid: Some(stat.uid),
        gid: Some(stat.gid),
        inode: stat.ino,
        device_id: stat.dev,
        size: if stat.kind == Kind::Dir { 0 } else { stat.size },
        links: if stat.kind == Kind::Dir {
            0
        } else {
            stat.nlink
        },
        ..Metadata::default()
    }
}

// Go's `io/fs.FileMode` bits, which restic stores.
const GO_DIR: u32 = 1 << 31;
const GO_SYMLINK: u32 = 1 << 27;
const GO_DEVICE: u32 = 1 << 26;
const GO_NAMED_PIPE: u32 = 1 << 25;
const GO_SOCKET: u32 = 1 << 24;
pub(crate) const GO_SETUID: u32 = 1 << 23;
pub(crate) const GO_SETGID: u32 = 1 << 22;
const GO_CHAR_DEVICE: u32 = 1 << 21;
pub(crate) const GO_STICKY: u32 = 1 << 20;

/// Go's file mode for a Unix kind and permission bits (`mode & 0o7777`).
pub fn go_mode(kind: Kind, mode: u32) -> u32 {
    let kind_bits = match kind {
        Kind::File => 0,
        Kind::Dir => GO_DIR,
        Kind::Symlink => GO_SYMLINK,
        Kind::Fifo => GO_NAMED_PIPE,
        Kind::Socket => GO_SOCKET,
        Kind::Block => GO_DEVICE,
        Kind::Char => GO_DEVICE | GO_CHAR_DEVICE,
    };
    let special = [
        (libc::S_ISUID, GO_SETUID),
        (libc::S_ISGID, GO_SETGID),
        (libc::S_ISVTX, GO_STICKY),
    ]
    .into_iter()
    .filter(|(unix, _)| mode & unix != 0)
    .fold(0, |bits, (_, go)| bits | go);
    kind_bits | special | (mode & 0o777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_modes_are_restics() {
        assert_eq!(go_mode(Kind::File, 0o644), 0o644);
        assert_eq!(go_mode(Kind::Dir, 0o755), 0x8000_01ed);
        assert_eq!(go_mode(Kind::Symlink, 0o777), 0x0800_01ff);
        assert_eq!(go_mode(Kind::Char, 0o600), 0x0420_0180);
        assert_eq!(go_mode(Kind::Block, 0o600), 0x0400_0180);
        assert_eq!(go_mode(Kind::Fifo, 0o600), 0x0200_0180);
        assert_eq!(go_mode(Kind::Socket, 0o700), 0x0100_01c0);
        assert_eq!(go_mode(Kind::File, 0o4755), 0x0080_01ed);
        assert_eq!(go_mode(Kind::File, 0o2755), 0x0040_01ed);
        assert_eq!(go_mode(Kind::Dir, 0o1777), 0x8010_01ff);
    }

    #[test]
    fn the_walk_lists_the_root_then_each_directory_before_its_contents_in_path_order() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a.txt"), "x").unwrap();
        std::fs::write(root.join("a/b/c"), "yy").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        let volume = Volume::new(root, Path::new("/data"));
        let walked: Vec<(PathBuf, String, bool)> = volume
            .entries()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path.strip_prefix(root).unwrap().to_path_buf(),
                    e.node.name().to_string_lossy().into_owned(),
                    e.open.is_some(),
                )
            })
            .collect();
        let expected = [
            ("", "data", false),
            ("a", "a", false),
            ("a/b", "b", false),
            ("a/b/c", "c", true),
            ("a.txt", "a.txt", true),
            ("link", "link", false),
        ];
        assert_eq!(walked.len(), expected.len(), "{walked:?}");
        for ((path, name, open), (p, n, o)) in walked.iter().zip(expected) {
            assert_eq!((path.to_str().unwrap(), name.as_str(), *open), (p, n, o));
        }
        let mut paths: Vec<_> = walked.iter().map(|w| w.0.clone()).collect();
        paths.sort();
        assert_eq!(
            paths,
            walked.iter().map(|w| w.0.clone()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_file_swapped_after_listing_is_not_opened_and_is_counted() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("f"), "data").unwrap();
        let volume = Volume::new(tmp.path(), Path::new("/v"));
        let opener = volume
            .entries()
            .filter_map(|e| e.unwrap().open)
            .next()
            .unwrap();
        std::fs::remove_file(tmp.path().join("f")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", tmp.path().join("f")).unwrap();
        assert!(opener.open().is_err());
        assert_eq!(volume.problems().lock().unwrap().changed, 1);
    }
}
