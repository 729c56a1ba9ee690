//! Writing a restore's entries below the staging directory. Entries arrive in the walk's order
//! (each directory followed by everything below it), so the directories down to the current
//! entry are held open and every entry is made relative to its own open directory: one name,
//! never a path a link could redirect, and no path lookups from the root per entry. A
//! directory's owner, mode and time are set once, when the entries leave it (writing its
//! children would have changed its time).

use crate::manifest::{Entry, EntryKind};
use crate::restore::{RestoreError, write_err};
use crate::walk::{Kind, owned, stat_at};
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Where a restore's entries go, and the directories open down to the last one.
pub struct Extractor<'a> {
    root: &'a Path,
    open: Vec<OpenDir>,
}

struct OpenDir {
    /// Relative to the root (empty for the root itself).
    path: Vec<u8>,
    fd: OwnedFd,
    /// What to set on the directory once the entries leave it (none for the root and for
    /// directories made because an entry below them came without them).
    meta: Option<Entry>,
}

impl<'a> Extractor<'a> {
    pub fn new(root: &'a Path) -> Result<Self, RestoreError> {
        // One directory is held open per level of depth.
        crate::walk::raise_open_file_limit();
        let fd = crate::walk::open_dir_beneath(root, Path::new("")).map_err(write_err(root))?;
        Ok(Extractor {
            root,
            open: vec![OpenDir {
                path: Vec::new(),
                fd,
                meta: None,
            }],
        })
    }

    /// Makes the entry `meta` describes, at its (checked, plain) path `rel`; `content` writes a
    /// regular file's bytes into the file made for it.
    pub fn entry(
        &mut self,
        rel: &[u8],
        meta: &Entry,
        device: libc::dev_t,
        content: impl FnOnce(Option<&mut File>) -> Result<u64, RestoreError>,
    ) -> Result<u64, RestoreError> {
        let (parent, name) = match rel.iter().rposition(|b| *b == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&rel[..0], rel),
        };
        let dir = self.enter(parent)?;
        let name = CString::new(name).map_err(|_| unsafe_entry(rel, "holds a NUL byte"))?;
        let path = || self.root.join(std::ffi::OsStr::from_bytes(rel));
        let failed = |e: io::Error| match e.raw_os_error() {
            Some(libc::EEXIST) => unsafe_entry(rel, "is in the archive twice"),
            _ => write_err(&path())(e),
        };
        let mode = meta.mode & 0o7777;
        match meta.kind {
            EntryKind::Stream => {
                return Err(unsafe_entry(
                    rel,
                    "is a command's stream, not a file of a volume",
                ));
            }
            EntryKind::File => {
                let fd = openat(
                    dir,
                    &name,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                )
                .map_err(failed)?;
                let mut file = File::from(fd);
                let written = content(Some(&mut file))?;
                set_metadata(file.as_raw_fd(), meta).map_err(write_err(&path()))?;
                return Ok(written);
            }
            EntryKind::Dir => {
                // SAFETY: `name` is a NUL-terminated single name below an open directory.
                let made = unsafe { libc::mkdirat(dir, name.as_ptr(), 0o700) };
                if made != 0 {
                    return Err(failed(io::Error::last_os_error()));
                }
                let fd = openat(
                    dir,
                    &name,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                )
                .map_err(write_err(&path()))?;
                self.open.push(OpenDir {
                    path: rel.to_vec(),
                    fd,
                    meta: Some(meta.clone()),
                });
                return Ok(0);
            }
            EntryKind::Symlink => {
                let target = meta.target_bytes().flatten().unwrap_or_default();
                let target =
                    CString::new(target).map_err(|_| unsafe_entry(rel, "links to a NUL byte"))?;
                // SAFETY: both strings are NUL-terminated; `dir` is open.
                let rc = unsafe { libc::symlinkat(target.as_ptr(), dir, name.as_ptr()) };
                check(rc).map_err(failed)?;
            }
            EntryKind::Hardlink => {
                self.link(dir, &name, rel, meta)?;
                return Ok(0);
            }
            EntryKind::Fifo | EntryKind::Char | EntryKind::Block => {
                let kind = match meta.kind {
                    EntryKind::Fifo => libc::S_IFIFO,
                    EntryKind::Char => libc::S_IFCHR,
                    _ => libc::S_IFBLK,
                };
                let dev = if meta.kind == EntryKind::Fifo {
                    0
                } else {
                    device
                };
                // SAFETY: `name` is NUL-terminated; `dir` is open.
                let rc = unsafe { libc::mknodat(dir, name.as_ptr(), kind | mode, dev) };
                check(rc).map_err(failed)?;
            }
        }
        set_metadata_at(dir, &name, meta).map_err(write_err(&path()))?;
        Ok(0)
    }

    /// Leaves every directory still open, setting their metadata (the deepest first).
    pub fn finish(mut self) -> Result<(), RestoreError> {
        while self.open.len() > 1 {
            self.leave()?;
        }
        Ok(())
    }

    /// The open directory `parent`: directories that are not its ancestors are left, the ones
    /// below the deepest open one opened (or made, when an entry came without its directory),
    /// never through a link.
    fn enter(&mut self, parent: &[u8]) -> Result<RawFd, RestoreError> {
        while self.open.len() > 1 && !within(parent, self.top().path.as_slice()) {
            self.leave()?;
        }
        let base = self.top().path.len();
        let rest = match base {
            0 => parent,
            _ if parent.len() == base => &parent[..0],
            _ => &parent[base + 1..],
        };
        if !rest.is_empty() {
            for component in rest.split(|b| *b == b'/') {
                let mut path = self.top().path.clone();
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(component);
                let fd = self.open_or_make(component, &path)?;
                self.open.push(OpenDir {
                    path,
                    fd,
                    meta: None,
                });
            }
        }
        Ok(self.top().fd.as_raw_fd())
    }

    fn top(&self) -> &OpenDir {
        // The root is never left.
        &self.open[self.open.len() - 1]
    }

    fn leave(&mut self) -> Result<(), RestoreError> {
        if let Some(dir) = self.open.pop()
            && let Some(meta) = dir.meta
        {
            let path = self.root.join(std::ffi::OsStr::from_bytes(&dir.path));
            set_metadata(dir.fd.as_raw_fd(), &meta).map_err(write_err(&path))?;
        }
        Ok(())
    }

    fn open_or_make(&self, name: &[u8], rel: &[u8]) -> Result<OwnedFd, RestoreError> {
        let dir = self.top().fd.as_raw_fd();
        let name = CString::new(name).map_err(|_| unsafe_entry(rel, "holds a NUL byte"))?;
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        let path = || self.root.join(std::ffi::OsStr::from_bytes(rel));
        match openat(dir, &name, flags) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                // SAFETY: `name` is a NUL-terminated single name below an open directory.
                check(unsafe { libc::mkdirat(dir, name.as_ptr(), 0o700) })
                    .map_err(write_err(&path()))?;
                openat(dir, &name, flags).map_err(write_err(&path()))
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR) | Some(libc::ELOOP)) => {
                // With O_DIRECTORY the kernel says ENOTDIR for a link too: look at what it is.
                let why = if is_link(dir, &name) {
                    "would be written through a symlink"
                } else {
                    "has a parent that is not a directory"
                };
                Err(unsafe_entry(rel, why))
            }
            Err(e) => Err(write_err(&path())(e)),
            Ok(fd) => Ok(fd),
        }
    }

    /// A hardlink to a file restored earlier, found below the root without following a link.
    fn link(&self, dir: RawFd, name: &CStr, rel: &[u8], meta: &Entry) -> Result<(), RestoreError> {
        let target = meta.target_bytes().flatten().unwrap_or_default();
        let (parent, target_name) = match target.iter().rposition(|b| *b == b'/') {
            Some(i) => (&target[..i], &target[i + 1..]),
            None => (&target[..0], &target[..]),
        };
        let not_a_file = || unsafe_entry(rel, "hardlinks to something that is not a restored file");
        let opened;
        let target_dir = match self.open.iter().find(|d| d.path == parent) {
            Some(open) => open.fd.as_raw_fd(),
            None => {
                let parent = Path::new(std::ffi::OsStr::from_bytes(parent));
                opened =
                    crate::walk::open_dir_beneath(self.root, parent).map_err(|_| not_a_file())?;
                opened.as_raw_fd()
            }
        };
        let target_name = CString::new(target_name).map_err(|_| not_a_file())?;
        if !stat_at(target_dir, &target_name).is_ok_and(|st| st.kind == Kind::File) {
            return Err(not_a_file());
        }
        // SAFETY: NUL-terminated names below open directories; links are not followed.
        let rc = unsafe { libc::linkat(target_dir, target_name.as_ptr(), dir, name.as_ptr(), 0) };
        check(rc).map_err(|e| match e.raw_os_error() {
            Some(libc::EEXIST) => unsafe_entry(rel, "is in the archive twice"),
            _ => write_err(&self.root.join(std::ffi::OsStr::from_bytes(rel)))(e),
        })
    }
}

/// Whether `path` is `dir` or below it (`dir` empty: the root, which holds everything).
fn within(path: &[u8], dir: &[u8]) -> bool {
    dir.is_empty()
        || (path.starts_with(dir) && (path.len() == dir.len() || path[dir.len()] == b'/'))
}

fn unsafe_entry(rel: &[u8], why: &'static str) -> RestoreError {
    RestoreError::Unsafe {
        path: String::from_utf8_lossy(rel).into_owned(),
        why,
    }
}

/// Whether `name` in the open directory `dir` is a symbolic link.
fn is_link(dir: RawFd, name: &CStr) -> bool {
    stat_at(dir, name).is_ok_and(|st| st.kind == Kind::Symlink)
}

fn openat(dir: RawFd, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated and resolved relative to the open directory `dir`.
    owned(unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC, 0o600) })
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn times(meta: &Entry) -> [libc::timespec; 2] {
    [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: meta.mtime as libc::time_t,
            tv_nsec: i64::from(meta.mtime_nanos) as _,
        },
    ]
}

fn ids(meta: &Entry) -> (libc::uid_t, libc::gid_t) {
    (
        u32::try_from(meta.uid).unwrap_or(u32::MAX),
        u32::try_from(meta.gid).unwrap_or(u32::MAX),
    )
}

/// Owner, then mode (a change of owner clears setuid bits), then mtime, on an open file or
/// directory.
pub fn set_metadata(fd: RawFd, meta: &Entry) -> io::Result<()> {
    let (uid, gid) = ids(meta);
    let times = times(meta);
    // SAFETY: `fd` is open for the duration of these calls; `times` holds two timespecs.
    check(unsafe { libc::fchown(fd, uid, gid) })?;
    check(unsafe { libc::fchmod(fd, (meta.mode & 0o7777) as libc::mode_t) })?;
    check(unsafe { libc::futimens(fd, times.as_ptr()) })
}

/// The same for a symlink or a special file, by its name in an open directory, never following
/// a link (a symlink's own mode means nothing on Linux and is left).
fn set_metadata_at(dir: RawFd, name: &CStr, meta: &Entry) -> io::Result<()> {
    let (uid, gid) = ids(meta);
    let times = times(meta);
    let nofollow = libc::AT_SYMLINK_NOFOLLOW;
    // SAFETY: `name` is NUL-terminated below the open `dir`; `times` holds two timespecs.
    check(unsafe { libc::fchownat(dir, name.as_ptr(), uid, gid, nofollow) })?;
    if meta.kind != EntryKind::Symlink {
        let mode = (meta.mode & 0o7777) as libc::mode_t;
        // SAFETY: as above; the entry was just made and is not a link.
        check(unsafe { libc::fchmodat(dir, name.as_ptr(), mode, 0) })?;
    }
    // SAFETY: as above.
    check(unsafe { libc::utimensat(dir, name.as_ptr(), times.as_ptr(), nofollow) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn entry(kind: EntryKind) -> Entry {
        Entry {
            kind,
            mode: 0o755,
            mtime: 1_000_000,
            ..Default::default()
        }
    }

    fn why(result: Result<u64, RestoreError>) -> &'static str {
        match result {
            Err(RestoreError::Unsafe { why, .. }) => why,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nothing_is_written_through_a_link_or_below_a_file() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        fs::write(root.join("f"), b"")?;
        symlink("/etc", root.join("l"))?;
        let mut x = Extractor::new(root)?;
        let none = |_: Option<&mut File>| Ok(0);
        assert_eq!(
            why(x.entry(b"l/passwd", &entry(EntryKind::File), 0, none)),
            "would be written through a symlink"
        );
        assert_eq!(
            why(x.entry(b"f/x", &entry(EntryKind::File), 0, none)),
            "has a parent that is not a directory"
        );
        assert_eq!(
            why(x.entry(b"f", &entry(EntryKind::Dir), 0, none)),
            "is in the archive twice"
        );
        // A directory that came without its own entry is made.
        x.entry(b"new/x", &entry(EntryKind::Fifo), 0, none)?;
        x.finish()?;
        assert!(
            fs::symlink_metadata(root.join("new/x"))?
                .file_type()
                .is_fifo()
        );
        Ok(())
    }

    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    #[test]
    fn directories_get_their_times_once_their_entries_are_written()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        let mut x = Extractor::new(root)?;
        let none = |_: Option<&mut File>| Ok(0);
        x.entry(b"a", &entry(EntryKind::Dir), 0, none)?;
        x.entry(b"a/b", &entry(EntryKind::Dir), 0, none)?;
        x.entry(b"a/b/p", &entry(EntryKind::Fifo), 0, none)?;
        x.entry(b"a/q", &entry(EntryKind::Fifo), 0, none)?;
        let mut link = entry(EntryKind::Symlink);
        link.set_target(b"a/q");
        x.entry(b"c", &link, 0, none)?;
        x.finish()?;
        for d in ["a", "a/b"] {
            let m = fs::metadata(root.join(d))?;
            assert_eq!((m.mtime(), m.mode() & 0o7777), (1_000_000, 0o755), "{d}");
        }
        assert_eq!(fs::read_link(root.join("c"))?, Path::new("a/q"));
        assert_eq!(fs::symlink_metadata(root.join("c"))?.mtime(), 1_000_000);
        Ok(())
    }

    #[test]
    fn within_is_by_whole_components() {
        assert!(within(b"a/b", b""));
        assert!(within(b"a/b", b"a"));
        assert!(within(b"a", b"a"));
        assert!(!within(b"ab", b"a"));
        assert!(!within(b"a", b"a/b"));
    }
}
