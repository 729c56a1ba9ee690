//! Walking a volume without ever leaving it. Whoever controls the volume's bytes can swap a
//! directory or a file for a symbolic link while the walk runs; a walk by full paths would then
//! read whatever the link points at inside the mover pod (its environment with the repository's
//! keys, the repository mount). So every step is relative to an open directory: a child is looked
//! up by its single name (`fstatat`/`openat` with `O_NOFOLLOW`, never a path with `/` or `..`), and
//! what was opened is checked against what was listed (`fstat`: same device and inode), so a swap
//! between the two is noticed, never followed.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// What kind of object a name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Char,
    Block,
    Socket,
}

/// The `stat` fields the archive records.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub kind: Kind,
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub rdev: u64,
    pub mtime: i64,
    pub mtime_nanos: u32,
    /// The status change time: moves on every write and cannot be set back by anyone.
    pub ctime: i64,
    pub ctime_nanos: u32,
}

impl Stat {
    fn from_raw(st: &libc::stat) -> Self {
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFCHR => Kind::Char,
            libc::S_IFBLK => Kind::Block,
            libc::S_IFSOCK => Kind::Socket,
            _ => Kind::File,
        };
        Stat {
            kind,
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode & 0o7777,
            nlink: st.st_nlink,
            uid: st.st_uid,
            gid: st.st_gid,
            size: u64::try_from(st.st_size).unwrap_or(0),
            rdev: st.st_rdev,
            mtime: st.st_mtime,
            mtime_nanos: u32::try_from(st.st_mtime_nsec).unwrap_or(0),
            ctime: st.st_ctime,
            ctime_nanos: u32::try_from(st.st_ctime_nsec).unwrap_or(0),
        }
    }

    /// Whether the object was written to between `self` and `later`, two looks at it: its
    /// size, modification or change time moved (a rewrite in place keeps the size).
    pub fn written_before(&self, later: &Stat) -> bool {
        (
            self.size,
            self.mtime,
            self.mtime_nanos,
            self.ctime,
            self.ctime_nanos,
        ) != (
            later.size,
            later.mtime,
            later.mtime_nanos,
            later.ctime,
            later.ctime_nanos,
        )
    }

    /// Whether `other` is the same object (a swap in between makes it another one).
    pub fn same_object(&self, other: &Stat) -> bool {
        self.dev == other.dev && self.ino == other.ino && self.kind == other.kind
    }
}

/// An open directory of the volume.
pub struct Dir {
    fd: OwnedFd,
}

/// A child of a directory, as found: its metadata, and for a directory or regular file the
/// object itself, opened.
pub enum Child {
    Dir(Dir, Stat),
    File(std::fs::File, Stat),
    Symlink(Vec<u8>, Stat),
    /// Fifos, device nodes, sockets: recorded from their metadata, never opened.
    Other(Stat),
    /// Gone, or swapped for something else between listing and opening, every time it was
    /// looked at: left out (and reported).
    Changed,
}

/// How often a child that changes between `fstatat` and `openat` is looked at again (a program
/// that replaces files by renaming new ones over them does that legitimately).
const ATTEMPTS: usize = 3;

impl Dir {
    /// Opens the volume's root (the mount point is ours; only what is below it is the tenant's).
    pub fn open_root(path: &Path) -> io::Result<Dir> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::other("the path holds a NUL byte"))?;
        // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        Ok(Dir { fd: owned(fd)? })
    }

    /// The names in this directory (without `.` and `..`), sorted bytewise.
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        // fdopendir takes ownership of the descriptor it is given: give it a duplicate.
        // SAFETY: dup of a descriptor we own.
        let dup = owned(unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
        // SAFETY: `dup` is an open directory descriptor; on success the stream owns it.
        let stream = unsafe { libc::fdopendir(dup.as_raw_fd()) };
        if stream.is_null() {
            return Err(io::Error::last_os_error());
        }
        std::mem::forget(dup);
        let mut names = Vec::new();
        let outcome = loop {
            // readdir reports errors only through errno.
            // SAFETY: resetting errno of this thread.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: `stream` is a valid directory stream until closedir below.
            let entry = unsafe { libc::readdir(stream) };
            if entry.is_null() {
                let err = io::Error::last_os_error();
                break if err.raw_os_error() == Some(0) {
                    Ok(())
                } else {
                    Err(err)
                };
            }
            // SAFETY: d_name of a returned entry is a NUL-terminated string inside the entry.
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) }.to_bytes();
            if name != b"." && name != b".." {
                names.push(OsString::from_vec(name.to_vec()));
            }
        };
        // SAFETY: closing the stream we opened (and the duplicate it owns).
        unsafe { libc::closedir(stream) };
        outcome?;
        names.sort();
        Ok(names)
    }

    /// The child `name` (one path component, as `names` lists it), opened without following
    /// links and checked to be what was listed.
    pub fn child(&self, name: &OsStr) -> io::Result<Child> {
        let c = CString::new(name.as_bytes())
            .map_err(|_| io::Error::other("a name holds a NUL byte"))?;
        for _ in 0..ATTEMPTS {
            let listed = match self.stat_at(&c) {
                Ok(st) => st,
                Err(e) if gone(&e) => return Ok(Child::Changed),
                Err(e) => return Err(e),
            };
            let flags = match listed.kind {
                Kind::Dir => libc::O_DIRECTORY,
                // Non-blocking: a fifo swapped in would otherwise block the open forever.
                Kind::File => libc::O_NONBLOCK | libc::O_NOCTTY,
                Kind::Symlink => {
                    let target = match self.read_link_at(&c) {
                        Ok(t) => t,
                        // EINVAL: no longer a link.
                        Err(e) if gone(&e) || e.raw_os_error() == Some(libc::EINVAL) => continue,
                        Err(e) => return Err(e),
                    };
                    // Still the link that was listed (not replaced while its target was read)?
                    match self.stat_at(&c) {
                        Ok(now) if now.same_object(&listed) => {
                            return Ok(Child::Symlink(target, listed));
                        }
                        Ok(_) => continue,
                        Err(e) if gone(&e) => continue,
                        Err(e) => return Err(e),
                    }
                }
                _ => return Ok(Child::Other(listed)),
            };
            // SAFETY: `c` is a NUL-terminated single name, resolved relative to our directory.
            let fd = unsafe {
                libc::openat(
                    self.fd.as_raw_fd(),
                    c.as_ptr(),
                    libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | flags,
                )
            };
            let fd = match owned(fd) {
                Ok(fd) => fd,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(e),
            };
            let opened = fstat(&fd)?;
            if !opened.same_object(&listed) {
                continue;
            }
            return Ok(match opened.kind {
                Kind::Dir => Child::Dir(Dir { fd }, opened),
                _ => Child::File(std::fs::File::from(fd), opened),
            });
        }
        Ok(Child::Changed)
    }

    /// What `name` is now, without following a link; `None` when it is gone.
    pub fn stat(&self, name: &OsStr) -> io::Result<Option<Stat>> {
        let c = CString::new(name.as_bytes())
            .map_err(|_| io::Error::other("a name holds a NUL byte"))?;
        match self.stat_at(&c) {
            Ok(st) => Ok(Some(st)),
            Err(e) if gone(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The regular file `name`, opened without following links, if it is still the object
    /// `listed` (`None`: gone, or swapped for another since it was listed).
    pub fn open_file(&self, name: &OsStr, listed: &Stat) -> io::Result<Option<std::fs::File>> {
        let c = CString::new(name.as_bytes())
            .map_err(|_| io::Error::other("a name holds a NUL byte"))?;
        // SAFETY: `c` is a NUL-terminated single name, resolved relative to our directory.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY
                    | libc::O_NOFOLLOW
                    | libc::O_CLOEXEC
                    | libc::O_NONBLOCK
                    | libc::O_NOCTTY,
            )
        };
        let fd = match owned(fd) {
            Ok(fd) => fd,
            Err(e) if gone(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let opened = fstat(&fd)?;
        Ok((listed.kind == Kind::File && opened.same_object(listed))
            .then(|| std::fs::File::from(fd)))
    }

    /// What this directory is now.
    pub fn stat_self(&self) -> io::Result<Stat> {
        fstat(&self.fd)
    }

    fn stat_at(&self, name: &CStr) -> io::Result<Stat> {
        stat_at(self.fd.as_raw_fd(), name)
    }

    fn read_link_at(&self, name: &CStr) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 4096];
        loop {
            // SAFETY: `buf` has `buf.len()` writable bytes; `name` is NUL-terminated.
            let n = unsafe {
                libc::readlinkat(
                    self.fd.as_raw_fd(),
                    name.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n as usize;
            if n < buf.len() {
                buf.truncate(n);
                return Ok(buf);
            }
            buf.resize(buf.len() * 2, 0);
        }
    }
}

/// What the open `fd` is now.
pub fn fstat(fd: impl AsFd) -> io::Result<Stat> {
    let fd = fd.as_fd();
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fd` is open; `st` is written by a successful call before being read.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded, so `st` is initialised.
    let st = unsafe { st.assume_init() };
    Ok(Stat::from_raw(&st))
}

/// What `name` in the open directory `dir` is, without following a link.
pub(crate) fn stat_at(dir: RawFd, name: &CStr) -> io::Result<Stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `name` is NUL-terminated; `st` is written by a successful call before being read.
    let rc = unsafe {
        libc::fstatat(
            dir,
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatat succeeded, so `st` is initialised.
    let st = unsafe { st.assume_init() };
    Ok(Stat::from_raw(&st))
}

/// A descriptor the kernel just returned (or the error a negative one stands for).
pub(crate) fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a non-negative descriptor just returned by the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The name no longer refers to what was listed: removed, or replaced by a link or another kind.
fn gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ELOOP) | Some(libc::ENOTDIR) | Some(libc::ENXIO)
    )
}

/// Open directories are held down the whole depth of the walk: lift the soft limit on open files
/// to the hard one, so that deep trees do not run out.
pub fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The directory `rel` below `root`, opened one component at a time without following a link
/// (`ELOOP`/`ENOTDIR` when one is in the way): whatever a tenant put in the volume, what is
/// opened is below `root`.
pub fn open_dir_beneath(root: &Path, rel: &Path) -> io::Result<OwnedFd> {
    let mut dir = Dir::open_root(root)?;
    for component in rel.components() {
        let std::path::Component::Normal(name) = component else {
            return Err(io::Error::other("not a plain relative path"));
        };
        let c = CString::new(name.as_bytes())
            .map_err(|_| io::Error::other("a name holds a NUL byte"))?;
        // SAFETY: `c` is a NUL-terminated single name, resolved relative to an open directory.
        let fd = unsafe {
            libc::openat(
                dir.fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        dir = Dir { fd: owned(fd)? };
    }
    Ok(dir.fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_file_rewritten_in_place_is_seen_written_though_its_size_stays() {
        use std::os::unix::fs::FileExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("ledger");
        std::fs::write(&path, [0u8; 4096]).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let before = fstat(&file).unwrap();
        assert!(
            !before.written_before(&fstat(&file).unwrap()),
            "nothing happened"
        );
        // Past the kernel's timestamp granularity (a clock tick).
        std::thread::sleep(std::time::Duration::from_millis(30));
        let writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        writer.write_all_at(&[1u8; 8], 0).unwrap();
        let after = fstat(&file).unwrap();
        assert_eq!(after.size, before.size);
        assert!(before.written_before(&after));
    }

    #[test]
    fn children_are_what_was_listed_and_links_are_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::write(root.join("f"), b"data").unwrap();
        symlink("/etc", root.join("l")).unwrap();
        let dir = Dir::open_root(root).unwrap();
        assert_eq!(dir.names().unwrap(), ["d", "f", "l"]);
        assert!(
            matches!(dir.child(OsStr::new("d")).unwrap(), Child::Dir(_, s) if s.kind == Kind::Dir)
        );
        assert!(matches!(dir.child(OsStr::new("f")).unwrap(), Child::File(_, s) if s.size == 4));
        assert!(
            matches!(dir.child(OsStr::new("l")).unwrap(), Child::Symlink(t, _) if t == b"/etc")
        );
        assert!(matches!(
            dir.child(OsStr::new("missing")).unwrap(),
            Child::Changed
        ));
    }

    fn mknod(path: &Path, kind: libc::mode_t, dev: libc::dev_t) {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mknod(c.as_ptr(), kind | 0o600, dev) }, 0);
    }

    #[test]
    fn special_files_are_reported_by_kind_and_never_opened() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        mknod(&root.join("pipe"), libc::S_IFIFO, 0);
        mknod(&root.join("chr"), libc::S_IFCHR, libc::makedev(1, 3));
        mknod(&root.join("blk"), libc::S_IFBLK, libc::makedev(7, 0));
        let _socket = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
        let dir = Dir::open_root(root).unwrap();
        for (name, kind) in [
            ("pipe", Kind::Fifo),
            ("chr", Kind::Char),
            ("blk", Kind::Block),
            ("sock", Kind::Socket),
        ] {
            match dir.child(OsStr::new(name)).unwrap() {
                Child::Other(stat) => assert_eq!(stat.kind, kind, "{name}"),
                _ => panic!("{name} was opened"),
            }
        }
    }

    #[test]
    fn the_same_object_is_the_same_device_inode_and_kind() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("f"), b"").unwrap();
        let dir = Dir::open_root(tmp.path()).unwrap();
        let Child::File(_, stat) = dir.child(OsStr::new("f")).unwrap() else {
            panic!("f is a file");
        };
        assert!(stat.same_object(&stat));
        for other in [
            Stat {
                dev: stat.dev + 1,
                ..stat
            },
            Stat {
                ino: stat.ino + 1,
                ..stat
            },
            Stat {
                kind: Kind::Dir,
                ..stat
            },
        ] {
            assert!(!stat.same_object(&other), "{other:?}");
        }
    }

    #[test]
    fn the_root_must_be_a_directory_and_an_impossible_name_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("f"), b"").unwrap();
        let err = Dir::open_root(&tmp.path().join("f"))
            .err()
            .expect("not a directory");
        assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR));
        let dir = Dir::open_root(tmp.path()).unwrap();
        // Not "changed while read": the walk never lists such a name, so it is a real error.
        let long = "n".repeat(300);
        assert!(dir.child(OsStr::new(&long)).is_err());
    }

    #[test]
    fn a_directory_below_the_root_is_never_reached_through_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(tmp.path().join("outside/b")).unwrap();
        symlink(tmp.path().join("outside"), root.join("link")).unwrap();
        assert!(open_dir_beneath(&root, Path::new("a/b")).is_ok());
        let err = open_dir_beneath(&root, Path::new("link/b")).unwrap_err();
        // O_NOFOLLOW with O_DIRECTORY on a link: ENOTDIR or ELOOP, depending on the kernel.
        assert!(
            matches!(err.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)),
            "{err}"
        );
        assert!(open_dir_beneath(&root, Path::new("../outside")).is_err());
    }
}
