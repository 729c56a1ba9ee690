//! Writing a volume as a standard tar stream (ustar headers, PAX extended headers only where
//! ustar cannot say it: long or non-ASCII paths, pre-1970 times, huge sizes or ids), handing
//! every entry to the manifest as it goes by. Sub-second times are the manifest's alone: a PAX
//! record for them cost another 1 KiB block per entry (the artifact of a million small files was
//! 1.57 times GNU tar's), and a restore applies the manifest's times anyway.

use crate::manifest::{Entry, EntryKind, Totals};
use crate::walk::{self, Kind};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use tar::{EntryType, Header};

/// Largest value the 11 octal digits of a ustar numeric field hold.
const USTAR_MAX: u64 = 0o77_777_777_777;
/// Largest uid/gid the 7 octal digits of ustar hold.
const USTAR_ID_MAX: u64 = 0o7_777_777;
/// A tar block: headers and content padding are multiples of it.
const BLOCK: u64 = 512;
const CHUNK: usize = 256 << 10;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing the archive: {0}")]
    Write(#[source] io::Error),
    #[error("writing the manifest: {0}")]
    Record(#[source] io::Error),
}

/// What was archived (each entry went to the manifest as it was written).
#[derive(Debug, Default)]
pub struct Archived {
    pub totals: Totals,
    /// Entries that changed while they were read (the volume was in use): files whose recorded
    /// content is what was read, padded or cut to the size seen first, and entries that vanished
    /// or kept being swapped (left out).
    pub changed: Changed,
}

/// How many entries changed while they were read, and the first few of them by name: a volume
/// being rewritten can have millions, and the mover has a memory limit.
#[derive(Debug, Default)]
pub struct Changed {
    pub count: u64,
    /// At most `CHANGED_NAMED` names, each at most `CHANGED_NAME_MAX` bytes.
    pub named: Vec<String>,
}

const CHANGED_NAMED: usize = 5;
const CHANGED_NAME_MAX: usize = 120;

impl Changed {
    fn push(&mut self, name: &[u8]) {
        self.count += 1;
        if self.named.len() < CHANGED_NAMED {
            let name = String::from_utf8_lossy(name).into_owned();
            self.named
                .push(backstop_api::condition::truncate(name, CHANGED_NAME_MAX));
        }
    }
}

/// Writes everything below `root` (not `root` itself) as a tar stream into `out`, handing each
/// entry to `record` once its content is written. The walk never leaves `root` (see `walk`):
/// symbolic links are stored as links, never followed, and an entry swapped while the walk runs
/// is left out and reported, never read through.
pub fn write<W: Write>(
    root: &Path,
    out: W,
    mut record: impl FnMut(&Entry) -> io::Result<()>,
) -> Result<(Archived, W), ArchiveError> {
    // Headers and small files reach the compressor in big writes: a write into multithreaded
    // zstd takes a lock, and a million small files made three writes each.
    let mut builder = tar::Builder::new(io::BufWriter::with_capacity(CHUNK, out));
    let mut archived = Archived::default();
    // The first path (exact bytes) of each multiply-linked file: later ones are hardlinks to it.
    let mut first_link_paths: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    // File content goes through in chunks this big: with io::copy's 8 KiB, a 2 GiB volume took
    // 262,144 reads, hasher updates and compressor calls (benchmark (b)).
    let mut chunk = vec![0u8; CHUNK];
    walk::raise_open_file_limit();
    let read_error = |path: &[u8]| {
        let path = root.join(std::ffi::OsStr::from_bytes(path));
        move |source| ArchiveError::Read { path, source }
    };
    let top = walk::Dir::open_root(root).map_err(read_error(b""))?;
    let names = top.names().map_err(read_error(b""))?;
    // Depth first, in name order, each directory followed by everything below it (as GNU tar
    // writes): GNU tar sets a directory's times once it extracts an entry outside it, so a
    // directory whose content came later would keep the extraction time. Each level holds its
    // open directory, its remaining names, and its path (bytes: Linux names need not be UTF-8).
    let mut stack = vec![(top, names.into_iter(), Vec::new())];
    while let Some((dir, names, prefix)) = stack.last_mut() {
        let Some(name) = names.next() else {
            stack.pop();
            continue;
        };
        let raw_rel = raw_rel_path(prefix, name.as_bytes());
        let child = dir.child(&name).map_err(read_error(&raw_rel))?;
        let meta = match &child {
            walk::Child::Changed => {
                archived.changed.push(&raw_rel);
                continue;
            }
            walk::Child::Dir(_, st)
            | walk::Child::File(_, st)
            | walk::Child::Symlink(_, st)
            | walk::Child::Other(st) => *st,
        };
        if meta.kind == Kind::Socket {
            archived.totals.skipped_sockets += 1;
            continue;
        }
        let (entry, link) = describe(
            &child,
            &meta,
            &raw_rel,
            &mut first_link_paths,
            &mut archived.totals,
        );
        let (header, pax) = header_for(&entry, &raw_rel, link.as_deref(), meta.rdev)?;
        if !pax.is_empty() {
            // A PAX extended header (`x`) entry carrying the records for the entry that follows.
            builder
                .append_pax_extensions(pax.iter().map(|(key, value)| (*key, value.as_slice())))
                .map_err(ArchiveError::Write)?;
        }
        match child {
            walk::Child::File(file, _) if entry.kind == EntryKind::File => {
                let content = ExactContent::new(file, entry.size);
                let content = append_content(builder.get_mut(), &header, content, &mut chunk)
                    .map_err(|e| match e {
                        Copy::Read(source) => read_error(&raw_rel)(source),
                        Copy::Write(source) => ArchiveError::Write(source),
                    })?;
                // Rewritten in place while read (same size): the copy may be torn as well.
                let after = walk::fstat(&content.file).map_err(read_error(&raw_rel))?;
                if content.size_changed || meta.written_before(&after) {
                    archived.changed.push(&raw_rel);
                }
            }
            walk::Child::Dir(below, _) => {
                builder
                    .append(&header, io::empty())
                    .map_err(ArchiveError::Write)?;
                let names = below.names().map_err(read_error(&raw_rel))?;
                stack.push((below, names.into_iter(), raw_rel));
            }
            _ => builder
                .append(&header, io::empty())
                .map_err(ArchiveError::Write)?,
        }
        record(&entry).map_err(ArchiveError::Record)?;
    }
    let out = builder
        .into_inner()
        .map_err(ArchiveError::Write)?
        .into_inner()
        .map_err(|e| ArchiveError::Write(e.into_error()))?;
    Ok((archived, out))
}

/// The manifest entry of a walked child (its digest comes with its content), and the path its
/// tar header links to: a symlink's target, or the first path of a file linked more than once
/// (later paths are hardlinks to it).
fn describe(
    child: &walk::Child,
    meta: &walk::Stat,
    raw_rel: &[u8],
    first_link_paths: &mut HashMap<(u64, u64), Vec<u8>>,
    totals: &mut Totals,
) -> (Entry, Option<Vec<u8>>) {
    let mut entry = Entry {
        mode: meta.mode,
        uid: u64::from(meta.uid),
        gid: u64::from(meta.gid),
        mtime: meta.mtime,
        mtime_nanos: meta.mtime_nanos,
        ..Default::default()
    };
    entry.set_path(raw_rel);
    let mut link = None;
    match (child, meta.kind) {
        (_, Kind::Dir) => {
            entry.kind = EntryKind::Dir;
            totals.dirs += 1;
        }
        (walk::Child::Symlink(target, _), _) => {
            entry.kind = EntryKind::Symlink;
            entry.set_target(target);
            link = Some(target.clone());
            totals.symlinks += 1;
        }
        (_, Kind::File) => {
            if meta.nlink > 1
                && let Some(first) = first_link_paths.get(&(meta.dev, meta.ino))
            {
                entry.kind = EntryKind::Hardlink;
                entry.set_target(first);
                link = Some(first.clone());
                totals.hardlinks += 1;
            } else {
                if meta.nlink > 1 {
                    first_link_paths.insert((meta.dev, meta.ino), raw_rel.to_vec());
                }
                entry.kind = EntryKind::File;
                entry.size = meta.size;
                totals.files += 1;
                totals.bytes += meta.size;
            }
        }
        (_, kind) => {
            entry.kind = match kind {
                Kind::Fifo => EntryKind::Fifo,
                Kind::Char => EntryKind::Char,
                _ => EntryKind::Block,
            };
            totals.specials += 1;
        }
    }
    (entry, link)
}

/// PAX extended header records (key, value) for one entry.
type PaxRecords = Vec<(&'static str, Vec<u8>)>;

/// The ustar header of `entry` (checksummed), and the PAX records for what ustar cannot hold:
/// long paths and link targets, large ids and sizes, sub-second and pre-1970 times.
fn header_for(
    entry: &Entry,
    raw_rel: &[u8],
    link: Option<&[u8]>,
    rdev: u64,
) -> Result<(Header, PaxRecords), ArchiveError> {
    let mut header = Header::new_ustar();
    let mut pax = PaxRecords::new();
    header.set_entry_type(match entry.kind {
        EntryKind::Dir => EntryType::Directory,
        EntryKind::Symlink => EntryType::Symlink,
        EntryKind::Hardlink => EntryType::Link,
        EntryKind::File | EntryKind::Stream => EntryType::Regular,
        EntryKind::Fifo => EntryType::Fifo,
        EntryKind::Char => EntryType::Char,
        EntryKind::Block => EntryType::Block,
    });
    if let Some(target) = link {
        set_link(&mut header, &mut pax, target);
    }
    if matches!(
        entry.kind,
        EntryKind::Fifo | EntryKind::Char | EntryKind::Block
    ) {
        header
            .set_device_major(libc::major(rdev))
            .map_err(ArchiveError::Write)?;
        header
            .set_device_minor(libc::minor(rdev))
            .map_err(ArchiveError::Write)?;
    }
    set_path(&mut header, &mut pax, raw_rel, entry.kind == EntryKind::Dir);
    header.set_mode(entry.mode);
    set_id(&mut pax, "uid", entry.uid, |v| header.set_uid(v));
    set_id(&mut pax, "gid", entry.gid, |v| header.set_gid(v));
    header.set_mtime(u64::try_from(entry.mtime).unwrap_or(0));
    if entry.mtime < 0 {
        pax.push((
            "mtime",
            format_pax_time(entry.mtime, entry.mtime_nanos).into_bytes(),
        ));
    }
    header.set_size(entry.size.min(USTAR_MAX));
    if entry.size > USTAR_MAX {
        pax.push(("size", entry.size.to_string().into_bytes()));
    }
    header.set_cksum();
    Ok((header, pax))
}

/// Which side of a copy failed.
enum Copy {
    Read(io::Error),
    Write(io::Error),
}

/// Writes `header` and exactly the content's size (see `ExactContent`) in `chunk`-sized pieces,
/// padded to the tar block; returns the content, which knows whether the file changed size.
fn append_content<W: Write>(
    out: &mut W,
    header: &Header,
    mut content: ExactContent,
    chunk: &mut [u8],
) -> Result<ExactContent, Copy> {
    out.write_all(header.as_bytes()).map_err(Copy::Write)?;
    let mut size = 0u64;
    loop {
        let n = content.read(chunk).map_err(Copy::Read)?;
        if n == 0 {
            break;
        }
        out.write_all(&chunk[..n]).map_err(Copy::Write)?;
        size += n as u64;
    }
    let padding = (BLOCK - size % BLOCK) % BLOCK;
    out.write_all(&[0; BLOCK as usize][..padding as usize])
        .map_err(Copy::Write)?;
    Ok(content)
}

fn raw_rel_path(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    if prefix.is_empty() {
        name.to_vec()
    } else {
        let mut p = prefix.to_vec();
        p.push(b'/');
        p.extend_from_slice(name);
        p
    }
}

/// Puts the path in the ustar header when it fits (ASCII, name ≤ 100 bytes or a prefix/name
/// split), otherwise in a PAX `path` record with a truncated stand-in in the header.
fn set_path(header: &mut Header, pax: &mut PaxRecords, rel: &[u8], dir: bool) {
    let mut path = rel.to_vec();
    if dir {
        path.push(b'/');
    }
    let fits = path.is_ascii()
        && header
            .set_path(Path::new(std::ffi::OsStr::from_bytes(&path)))
            .is_ok();
    if !fits {
        pax.push(("path", path.clone()));
        let stand_in: Vec<u8> = path.iter().copied().filter(u8::is_ascii).take(99).collect();
        if let Some(ustar) = header.as_ustar_mut() {
            ustar.name = [0; 100];
            ustar.name[..stand_in.len()].copy_from_slice(&stand_in);
            ustar.prefix = [0; 155];
        }
    }
}

fn set_link(header: &mut Header, pax: &mut PaxRecords, target: &[u8]) {
    let fits = target.is_ascii()
        && target.len() <= 100
        && header
            .set_link_name(Path::new(std::ffi::OsStr::from_bytes(target)))
            .is_ok();
    if !fits {
        pax.push(("linkpath", target.to_vec()));
    }
}

fn set_id(pax: &mut PaxRecords, key: &'static str, id: u64, set: impl FnOnce(u64)) {
    if id > USTAR_ID_MAX {
        pax.push((key, id.to_string().into_bytes()));
        set(0);
    } else {
        set(id);
    }
}

fn format_pax_time(secs: i64, nanos: u32) -> String {
    if nanos == 0 {
        secs.to_string()
    } else {
        format!("{secs}.{nanos:09}")
    }
}

/// Reads exactly `size` bytes from a file that may change underneath (cut when it grew, padded
/// with zeros when it shrank), so the archive always holds the size its header says.
struct ExactContent<R = File> {
    file: R,
    remaining: u64,
    size_changed: bool,
    /// A read came back short of what it asked for: the file ended there.
    at_end: bool,
}

impl<R: Read> ExactContent<R> {
    fn new(file: R, size: u64) -> Self {
        Self {
            file,
            remaining: size,
            size_changed: false,
            at_end: false,
        }
    }
}

impl<R: Read> Read for ExactContent<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            // Anything still readable means the file grew while we read it (the last read asked
            // for one byte more than the size when it could, so this is rarely needed).
            if !self.size_changed && !self.at_end {
                let mut probe = [0u8; 1];
                if matches!(self.file.read(&mut probe), Ok(n) if n > 0) {
                    self.size_changed = true;
                }
                self.at_end = true;
            }
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        // One byte more than what is left, when the buffer has room: a file that ends where its
        // size says answers with less, and no second read is needed to know it ended there.
        let ask = if want < buf.len() { want + 1 } else { want };
        let n = if self.size_changed {
            0
        } else {
            match self.file.read(&mut buf[..ask]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return self.read(buf),
                Err(e) => return Err(e),
            }
        };
        let n = if n > want {
            // The file grew: what goes in is cut to the size seen first.
            self.size_changed = true;
            want
        } else {
            if ask > want && n == want {
                self.at_end = true;
            }
            n
        };
        let n = if n == 0 {
            // The file shrank: pad with zeros up to the size in the header.
            self.size_changed = true;
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_entries_are_all_counted_and_the_first_few_named() {
        let mut changed = Changed::default();
        let long = "x".repeat(CHANGED_NAME_MAX + 50);
        for i in 0..7 {
            changed.push(
                if i == 0 {
                    long.clone()
                } else {
                    format!("f{i}")
                }
                .as_bytes(),
            );
        }
        assert_eq!(changed.count, 7);
        assert_eq!(changed.named.len(), CHANGED_NAMED);
        assert!(
            changed.named[0].len() <= CHANGED_NAME_MAX,
            "{}",
            changed.named[0]
        );
        assert_eq!(changed.named[1..], ["f1", "f2", "f3", "f4"]);
    }

    fn stat(kind: Kind, ino: u64, nlink: u64) -> walk::Stat {
        walk::Stat {
            kind,
            dev: 1,
            ino,
            mode: 0o644,
            nlink,
            uid: 0,
            gid: 0,
            size: 10,
            rdev: 0,
            mtime: 0,
            mtime_nanos: 0,
            ctime: 0,
            ctime_nanos: 0,
        }
    }

    #[test]
    fn a_file_linked_once_is_not_remembered_and_a_link_that_went_away_is_content() {
        let mut first = HashMap::new();
        let mut totals = Totals::default();
        let other = walk::Child::Other(stat(Kind::File, 0, 1));
        // Linked once: stored as content, and its inode is not kept (memory per million files).
        let (entry, link) = describe(
            &other,
            &stat(Kind::File, 7, 1),
            b"a",
            &mut first,
            &mut totals,
        );
        assert_eq!((entry.kind, link), (EntryKind::File, None));
        assert!(first.is_empty());
        // Linked twice: the first path has the content, the second links to it.
        let (entry, _) = describe(
            &other,
            &stat(Kind::File, 8, 2),
            b"b",
            &mut first,
            &mut totals,
        );
        assert_eq!(entry.kind, EntryKind::File);
        let (entry, link) = describe(
            &other,
            &stat(Kind::File, 8, 2),
            b"c",
            &mut first,
            &mut totals,
        );
        assert_eq!(entry.kind, EntryKind::Hardlink);
        assert_eq!(link.as_deref(), Some(&b"b"[..]));
        // The inode's other link was removed during the walk: this path is the content.
        let (entry, link) = describe(
            &other,
            &stat(Kind::File, 8, 1),
            b"d",
            &mut first,
            &mut totals,
        );
        assert_eq!((entry.kind, entry.size, link), (EntryKind::File, 10, None));
        assert_eq!((totals.files, totals.hardlinks, totals.bytes), (3, 1, 30));
    }

    fn entry(kind: EntryKind) -> Entry {
        Entry {
            kind,
            mode: 0o644,
            ..Default::default()
        }
    }

    fn records(pax: &PaxRecords) -> Vec<(&str, String)> {
        pax.iter()
            .map(|(k, v)| (*k, String::from_utf8_lossy(v).into_owned()))
            .collect()
    }

    #[test]
    fn pax_records_only_for_what_ustar_cannot_hold() -> Result<(), ArchiveError> {
        let plain = entry(EntryKind::File);
        let (header, pax) = header_for(&plain, b"f", None, 0)?;
        assert!(pax.is_empty(), "{:?}", records(&pax));
        assert_eq!(header.mtime().ok(), Some(0));

        // Sub-second times are the manifest's: no PAX block for them.
        let mut e = entry(EntryKind::File);
        e.mtime = 5;
        e.mtime_nanos = 7;
        let (header, pax) = header_for(&e, b"f", None, 0)?;
        assert!(pax.is_empty(), "{:?}", records(&pax));
        assert_eq!(header.mtime().ok(), Some(5));
        // Before 1970 ustar has no way to say it.
        e.mtime = -5;
        let (header, pax) = header_for(&e, b"f", None, 0)?;
        assert_eq!(records(&pax), [("mtime", "-5.000000007".into())]);
        assert_eq!(header.mtime().ok(), Some(0));

        let mut e = entry(EntryKind::File);
        e.size = USTAR_MAX;
        let (header, pax) = header_for(&e, b"f", None, 0)?;
        assert!(pax.is_empty());
        assert_eq!(header.size().ok(), Some(USTAR_MAX));
        e.size = USTAR_MAX + 1;
        let (header, pax) = header_for(&e, b"f", None, 0)?;
        assert_eq!(records(&pax), [("size", (USTAR_MAX + 1).to_string())]);
        assert_eq!(header.size().ok(), Some(USTAR_MAX));

        let mut e = entry(EntryKind::File);
        e.uid = USTAR_ID_MAX;
        e.gid = USTAR_ID_MAX + 1;
        let (header, pax) = header_for(&e, b"f", None, 0)?;
        assert_eq!(records(&pax), [("gid", (USTAR_ID_MAX + 1).to_string())]);
        assert_eq!(header.uid().ok(), Some(USTAR_ID_MAX));
        assert_eq!(header.gid().ok(), Some(0));
        e.uid = 1000;
        assert_eq!(header_for(&e, b"f", None, 0)?.0.uid().ok(), Some(1000));
        Ok(())
    }

    #[test]
    fn link_targets_over_100_bytes_or_not_ascii_go_in_pax() -> Result<(), ArchiveError> {
        let link = entry(EntryKind::Symlink);
        let short = "t".repeat(100);
        let (header, pax) = header_for(&link, b"l", Some(short.as_bytes()), 0)?;
        assert!(pax.is_empty(), "{:?}", records(&pax));
        let name = header.link_name_bytes().map(|n| n.into_owned());
        assert_eq!(name.as_deref(), Some(short.as_bytes()));
        let long = "t".repeat(101);
        let (_, pax) = header_for(&link, b"l", Some(long.as_bytes()), 0)?;
        assert_eq!(records(&pax), [("linkpath", long)]);
        let (_, pax) = header_for(&link, b"l", Some("é".as_bytes()), 0)?;
        assert_eq!(records(&pax), [("linkpath", "é".into())]);
        Ok(())
    }

    #[test]
    fn pax_times_have_nanoseconds_only_when_there_are_some() {
        assert_eq!(format_pax_time(12, 0), "12");
        assert_eq!(format_pax_time(12, 5), "12.000000005");
        assert_eq!(format_pax_time(-3, 0), "-3");
    }

    fn read_all<R: Read>(content: &mut ExactContent<R>) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 3];
        loop {
            match content.read(&mut buf)? {
                0 => return Ok(out),
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Counts the reads it is asked for.
    struct Counting<'a> {
        data: &'a [u8],
        reads: usize,
    }

    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            self.data.read(buf)
        }
    }

    #[test]
    fn a_small_file_is_read_with_one_read_that_also_sees_growth() -> io::Result<()> {
        let mut buf = [0u8; 64];
        let mut exact = ExactContent::new(
            Counting {
                data: b"hello",
                reads: 0,
            },
            5,
        );
        assert_eq!(exact.read(&mut buf)?, 5);
        assert_eq!(exact.read(&mut buf)?, 0);
        assert_eq!((exact.file.reads, exact.size_changed), (1, false));
        let mut grown = ExactContent::new(
            Counting {
                data: b"hello!",
                reads: 0,
            },
            5,
        );
        assert_eq!(grown.read(&mut buf)?, 5);
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(grown.read(&mut buf)?, 0);
        assert_eq!((grown.file.reads, grown.size_changed), (1, true));
        Ok(())
    }

    #[test]
    fn content_is_cut_or_padded_to_the_size_seen_first_and_says_so() -> io::Result<()> {
        let mut grown = ExactContent::new(&b"abcdefg"[..], 4);
        assert_eq!(read_all(&mut grown)?, b"abcd");
        assert!(grown.size_changed);

        let mut shrunk = ExactContent::new(&b"ab"[..], 5);
        assert_eq!(read_all(&mut shrunk)?, b"ab\0\0\0");
        assert!(shrunk.size_changed);

        let mut exact = ExactContent::new(&b"abc"[..], 3);
        assert_eq!(read_all(&mut exact)?, b"abc");
        assert!(!exact.size_changed);
        Ok(())
    }

    /// Interrupted once before each read, or failing for good.
    struct Flaky {
        data: &'static [u8],
        interrupt: bool,
        broken: bool,
    }

    impl Read for Flaky {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.broken {
                return Err(io::Error::other("disk on fire"));
            }
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(io::ErrorKind::Interrupted.into());
            }
            self.data.read(buf)
        }
    }

    #[test]
    fn an_interrupted_read_is_retried_and_another_error_is_returned() -> io::Result<()> {
        let flaky = Flaky {
            data: b"hello",
            interrupt: false,
            broken: false,
        };
        assert_eq!(read_all(&mut ExactContent::new(flaky, 5))?, b"hello");
        let broken = Flaky {
            data: b"",
            interrupt: false,
            broken: true,
        };
        let err = read_all(&mut ExactContent::new(broken, 5)).expect_err("a read error");
        assert_eq!(err.to_string(), "disk on fire");
        Ok(())
    }

    #[test]
    fn write_counts_every_kind_and_leaves_sockets_and_hardlink_content_out()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        std::fs::create_dir(root.join("d"))?;
        std::fs::write(root.join("d/f"), b"content")?;
        std::fs::hard_link(root.join("d/f"), root.join("g"))?;
        std::os::unix::fs::symlink("d/f", root.join("s"))?;
        let fifo = std::ffi::CString::new(root.join("p").as_os_str().as_bytes())?;
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let _socket = std::os::unix::net::UnixListener::bind(root.join("sock"))?;

        let mut entries = Vec::new();
        let (archived, _) = write(root, Vec::new(), |e| {
            entries.push(e.clone());
            Ok(())
        })?;
        let totals = &archived.totals;
        assert_eq!(
            (
                totals.dirs,
                totals.files,
                totals.hardlinks,
                totals.symlinks,
                totals.specials
            ),
            (1, 1, 1, 1, 1)
        );
        assert_eq!((totals.skipped_sockets, totals.bytes), (1, 7));
        let kinds: Vec<(&str, EntryKind, u64)> = entries
            .iter()
            .map(|e| (e.path.as_str(), e.kind, e.size))
            .collect();
        assert_eq!(
            kinds,
            [
                ("d", EntryKind::Dir, 0),
                ("d/f", EntryKind::File, 7),
                ("g", EntryKind::Hardlink, 0),
                ("p", EntryKind::Fifo, 0),
                ("s", EntryKind::Symlink, 0),
            ]
        );
        Ok(())
    }
}
