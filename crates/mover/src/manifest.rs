//! The manifest: what an artifact holds, entry by entry, plus the artifact's own digest and
//! size. Written as the archive is, as JSON lines compressed with zstd (`zstd -dc KEY | jq -c .`
//! reads it): a header line, one line per entry in the walk's order, and an `end` line with the
//! artifact's digest, the totals and the number of entries. It is committed after the artifact,
//! so its presence means the artifact is complete.
//!
//! Reading checks it as it goes, in memory that does not grow with the number of entries: every
//! path in its plain form, each after the one before in the walk's order (so no path can be
//! listed twice), the `end` line present, last, and counting what came before it. Manifests
//! written before this format (one JSON document, `LEGACY_FORMAT`) are still read, whole.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Read, Write};

pub const FORMAT: &str = "backstop.dev/manifest/v2";
pub const LEGACY_FORMAT: &str = "backstop.dev/manifest/v1";

/// The first line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    pub format: String,
    /// RFC 3339 time the backup started.
    pub created_at: String,
    /// The volume (PVC) the artifact was made from.
    pub source: String,
    /// How the artifact is compressed; a value this mover does not know fails the reading of
    /// the manifest (never "uncompressed").
    pub compression: backstop_api::Compression,
    /// What the artifact holds: a tar of a volume (absent), or a command's output stream.
    #[serde(default, skip_serializing_if = "Content::is_tree")]
    pub content: Content,
}

/// What an artifact holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Content {
    /// A tar stream of a volume's tree.
    #[default]
    Tree,
    /// The bytes a command wrote (its one entry, kind `stream`, has their size and BLAKE3).
    Stream,
}

impl Content {
    fn is_tree(&self) -> bool {
        *self == Content::Tree
    }
}

/// The last line, `{"end": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trailer {
    pub artifact: ArtifactInfo,
    pub totals: Totals,
    /// How many entry lines came before.
    pub entries: u64,
}

#[derive(Serialize, Deserialize)]
struct End<T> {
    end: T,
}

/// A manifest of the first format: one JSON document, every entry in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyManifest {
    pub format: String,
    pub created_at: String,
    pub source: String,
    pub compression: backstop_api::Compression,
    pub artifact: ArtifactInfo,
    pub totals: Totals,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactInfo {
    /// File name of the artifact, next to the manifest.
    pub name: String,
    pub size: u64,
    pub blake3: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// Fifos and device nodes.
    pub specials: u64,
    /// Sockets cannot be archived; they are counted and left out.
    pub skipped_sockets: u64,
    /// Bytes of regular-file content.
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    #[default]
    File,
    Dir,
    Symlink,
    Hardlink,
    Fifo,
    Char,
    Block,
    /// A command's output: the artifact's whole (decompressed) content.
    Stream,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Path relative to the volume root, `/`-separated, as stored in the archive. Linux names are
    /// bytes: when they are not UTF-8, this shows them lossily and `rawPath` holds them exactly.
    pub path: String,
    pub kind: EntryKind,
    pub size: u64,
    /// Permission bits (including setuid/setgid/sticky).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mtime_nanos: u32,
    /// Symlink target, or for a hardlink the path of the entry it links to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// BLAKE3 of a regular file's content: only in legacy manifests (checked when present). The
    /// artifact's digest covers every byte of content; 33 bytes of digest per file made the
    /// manifest of a million small files larger than the archive itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    /// The path's bytes in hex, when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_path: Option<String>,
    /// The target's bytes in hex, when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_target: Option<String>,
}

impl Entry {
    /// The path's exact bytes (`None` when `rawPath` is not hex: a damaged manifest); borrowed
    /// from `path` when it is UTF-8, so a restore does not copy every path of a large volume.
    pub fn path_bytes(&self) -> Option<Cow<'_, [u8]>> {
        exact(&self.path, self.raw_path.as_deref())
    }

    /// The target's exact bytes, if the entry has one (`Some(None)` when damaged).
    pub fn target_bytes(&self) -> Option<Option<Cow<'_, [u8]>>> {
        let target = self.target.as_deref()?;
        Some(exact(target, self.raw_target.as_deref()))
    }

    pub fn set_path(&mut self, bytes: &[u8]) {
        (self.path, self.raw_path) = shown_and_raw(bytes);
    }

    pub fn set_target(&mut self, bytes: &[u8]) {
        let (shown, raw) = shown_and_raw(bytes);
        (self.target, self.raw_target) = (Some(shown), raw);
    }
}

fn exact<'a>(shown: &'a str, raw: Option<&str>) -> Option<Cow<'a, [u8]>> {
    match raw {
        Some(raw) => unhex(raw.as_bytes()).map(Cow::Owned),
        None => Some(Cow::Borrowed(shown.as_bytes())),
    }
}

fn shown_and_raw(bytes: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), None),
        Err(_) => (
            String::from_utf8_lossy(bytes).into_owned(),
            Some(hex(bytes)),
        ),
    }
}

/// Bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex back to bytes (`None` if it is not hex).
pub fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// File names of a volume's artifact and manifest inside the backup's directory.
pub fn artifact_name(pvc: &str, extension: &str) -> String {
    format!("{pvc}.{extension}")
}

/// Writes a manifest as the archive is written: `entry` per archived entry, in the walk's order,
/// then `finish` with what is only known at the end.
pub struct Writer<W: Write> {
    out: zstd::stream::write::Encoder<'static, W>,
    line: Vec<u8>,
    entries: u64,
}

/// zstd level of the manifest. A million small files' lines (118 MB) measured 5.8 MB in 0.33 s
/// at level 3 and 4.1 MB in 1.97 s at level 9: the CPU went to the backup's time, the bytes
/// hardly mattered beside a 80 MB artifact.
const LEVEL: i32 = 3;

impl<W: Write> Writer<W> {
    pub fn new(out: W, header: &Header) -> io::Result<Self> {
        let mut writer = Writer {
            out: zstd::stream::write::Encoder::new(out, LEVEL)?,
            line: Vec::with_capacity(512),
            entries: 0,
        };
        writer.line(header)?;
        Ok(writer)
    }

    pub fn entry(&mut self, entry: &Entry) -> io::Result<()> {
        self.entries += 1;
        self.line(entry)
    }

    /// Writes the `end` line and finishes the compressed stream.
    pub fn finish(mut self, artifact: ArtifactInfo, totals: Totals) -> io::Result<W> {
        let end = End {
            end: Trailer {
                artifact,
                totals,
                entries: self.entries,
            },
        };
        self.line(&end)?;
        self.out.finish()
    }

    fn line(&mut self, value: &impl Serialize) -> io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, value).map_err(io::Error::other)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)
    }
}

/// What is wrong with a manifest read from the repository.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{0}")]
    Damaged(String),
    #[error("unsafe manifest entry {path:?}: {why}")]
    Unsafe { path: String, why: &'static str },
    #[error("{0}")]
    Read(#[source] io::Error),
}

/// The longest line a manifest may hold: an entry with the longest Linux path and link target,
/// both in hex, fits many times over; a line longer than this is not Backstop's.
const LINE_MAX: u64 = 256 << 10;

/// Reads a manifest entry by entry, checking each (see the module's description).
pub struct Reader<'r> {
    header: Header,
    source: Source<'r>,
    previous: Vec<u8>,
    read: u64,
    trailer: Option<Trailer>,
}

enum Source<'r> {
    Lines {
        lines:
            BufReader<zstd::stream::read::Decoder<'static, BufReader<Box<dyn Read + Send + 'r>>>>,
        line: Vec<u8>,
    },
    Legacy {
        entries: std::vec::IntoIter<Entry>,
        seen: HashSet<Vec<u8>>,
        trailer: Option<Trailer>,
    },
}

/// The most a legacy manifest may hold: it is read whole (about 200 bytes a file, so some
/// 600,000 files; the mover's memory limit is 1 GiB). A larger object is not one a Backstop
/// wrote before the streamed manifest replaced it.
pub const MAX_LEGACY_BYTES: u64 = 128 << 20;

/// The first bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

impl<'r> Reader<'r> {
    /// Reads the header (or, for a legacy manifest, the whole document).
    pub fn new(read: Box<dyn Read + Send + 'r>) -> Result<Self, ManifestError> {
        let mut read = BufReader::new(read);
        let start = read.fill_buf().map_err(ManifestError::Read)?;
        if start.starts_with(&ZSTD_MAGIC) {
            let decoder =
                zstd::stream::read::Decoder::with_buffer(read).map_err(ManifestError::Read)?;
            let mut source = Source::Lines {
                lines: BufReader::with_capacity(64 << 10, decoder),
                line: Vec::new(),
            };
            let header: Header = match source.next_line()? {
                Some(line) => parse(line, "the manifest's header")?,
                None => return Err(ManifestError::Damaged("the manifest is empty".into())),
            };
            if header.format != FORMAT {
                return Err(format_error(&header.format));
            }
            return Ok(Self::with(header, source));
        }
        let mut data = Vec::new();
        read.take(MAX_LEGACY_BYTES + 1)
            .read_to_end(&mut data)
            .map_err(ManifestError::Read)?;
        if data.len() as u64 > MAX_LEGACY_BYTES {
            return Err(ManifestError::Damaged(format!(
                "a legacy manifest (one JSON document, read whole) of more than {} MiB: refused, as any repository object past its bound",
                MAX_LEGACY_BYTES >> 20
            )));
        }
        let legacy: LegacyManifest = parse(&data, "the manifest")?;
        if legacy.format != LEGACY_FORMAT {
            return Err(format_error(&legacy.format));
        }
        let header = Header {
            format: legacy.format,
            created_at: legacy.created_at,
            source: legacy.source,
            compression: legacy.compression,
            content: Content::Tree,
        };
        let trailer = Trailer {
            artifact: legacy.artifact,
            totals: legacy.totals,
            entries: legacy.entries.len() as u64,
        };
        let source = Source::Legacy {
            entries: legacy.entries.into_iter(),
            seen: HashSet::new(),
            trailer: Some(trailer),
        };
        Ok(Self::with(header, source))
    }

    fn with(header: Header, source: Source<'r>) -> Self {
        Reader {
            header,
            source,
            previous: Vec::new(),
            read: 0,
            trailer: None,
        }
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The next entry, checked; `None` once the `end` line was read (see `trailer`).
    pub fn next_entry(&mut self) -> Result<Option<Entry>, ManifestError> {
        if self.trailer.is_some() {
            return Ok(None);
        }
        let entry = match &mut self.source {
            Source::Lines { .. } => {
                let line = self.source.next_line()?.ok_or_else(|| {
                    ManifestError::Damaged("the manifest ends without its end line".into())
                })?;
                if line.starts_with(b"{\"end\":") {
                    let End { end } = parse::<End<Trailer>>(line, "the manifest's end line")?;
                    if self.source.next_line()?.is_some() {
                        return Err(ManifestError::Damaged(
                            "the manifest goes on after its end line".into(),
                        ));
                    }
                    self.finish(end)?;
                    return Ok(None);
                }
                parse::<Entry>(line, "an entry of the manifest")?
            }
            Source::Legacy {
                entries, trailer, ..
            } => match entries.next() {
                Some(entry) => entry,
                None => {
                    let end = trailer.take().ok_or_else(|| {
                        ManifestError::Damaged("the manifest was read twice".into())
                    })?;
                    self.finish(end)?;
                    return Ok(None);
                }
            },
        };
        self.check(&entry)?;
        self.read += 1;
        Ok(Some(entry))
    }

    /// The `end` line, once `next_entry` returned `None`.
    pub fn trailer(&self) -> Option<&Trailer> {
        self.trailer.as_ref()
    }

    /// Reads every entry (checking them) to the end line.
    pub fn into_trailer(mut self) -> Result<(Header, Trailer), ManifestError> {
        while self.next_entry()?.is_some() {}
        let trailer = self.trailer.take().ok_or_else(|| {
            ManifestError::Damaged("the manifest ends without its end line".into())
        })?;
        Ok((self.header, trailer))
    }

    fn finish(&mut self, end: Trailer) -> Result<(), ManifestError> {
        if end.entries != self.read {
            return Err(ManifestError::Damaged(format!(
                "the manifest's end line counts {} entries; {} came before it",
                end.entries, self.read
            )));
        }
        self.trailer = Some(end);
        Ok(())
    }

    /// Paths and hardlink targets in their plain form; each path after the one before in the
    /// walk's order (a legacy manifest, whose order was not always the walk's: listed once).
    fn check(&mut self, entry: &Entry) -> Result<(), ManifestError> {
        let unsafe_entry = |why| ManifestError::Unsafe {
            path: entry.path.clone(),
            why,
        };
        let damaged =
            |what| ManifestError::Damaged(format!("{what} of {:?} is not hex", entry.path));
        let path = entry.path_bytes().ok_or_else(|| damaged("rawPath"))?;
        plain(&path).map_err(unsafe_entry)?;
        if entry.kind == EntryKind::Hardlink {
            let target = entry
                .target_bytes()
                .unwrap_or(Some(Cow::Borrowed(&b""[..])))
                .ok_or_else(|| damaged("rawTarget"))?;
            plain(&target).map_err(|why| ManifestError::Unsafe {
                path: String::from_utf8_lossy(&target).into_owned(),
                why,
            })?;
        } else if entry.target_bytes() == Some(None) {
            return Err(damaged("rawTarget"));
        }
        match &mut self.source {
            Source::Legacy { seen, .. } => {
                if !seen.insert(path.into_owned()) {
                    return Err(unsafe_entry("is listed twice in the manifest"));
                }
            }
            Source::Lines { .. } => {
                if self.read > 0 && walk_order(&self.previous, &path) != Ordering::Less {
                    return Err(unsafe_entry(
                        "is out of the walk's order in the manifest (after a path it should precede, or listed twice)",
                    ));
                }
                self.previous.clear();
                self.previous.extend_from_slice(&path);
            }
        }
        Ok(())
    }
}

impl Source<'_> {
    /// The next line without its newline, at most `LINE_MAX` bytes; `None` at the end.
    fn next_line(&mut self) -> Result<Option<&[u8]>, ManifestError> {
        let Source::Lines { lines, line } = self else {
            return Ok(None);
        };
        line.clear();
        let n = lines
            .by_ref()
            .take(LINE_MAX + 1)
            .read_until(b'\n', line)
            .map_err(|e| ManifestError::Damaged(format!("decompressing the manifest: {e}")))?;
        if n == 0 {
            return Ok(None);
        }
        if line.pop() != Some(b'\n') {
            return Err(ManifestError::Damaged(if n as u64 > LINE_MAX {
                format!("the manifest holds a line longer than {LINE_MAX} bytes")
            } else {
                "the manifest's last line is cut short".into()
            }));
        }
        Ok(Some(line))
    }
}

fn parse<'a, T: Deserialize<'a>>(data: &'a [u8], what: &str) -> Result<T, ManifestError> {
    serde_json::from_slice(data).map_err(|e| ManifestError::Damaged(format!("reading {what}: {e}")))
}

fn format_error(format: &str) -> ManifestError {
    ManifestError::Damaged(format!(
        "format {format:?} is neither {FORMAT:?} nor {LEGACY_FORMAT:?}, the ones this mover reads"
    ))
}

/// Whether `path` is a relative path in its one plain form: no empty, `.` or `..` components,
/// no leading or trailing `/`, no NUL.
pub fn plain(path: &[u8]) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("is empty");
    }
    if path[0] == b'/' {
        return Err("is absolute");
    }
    if path.contains(&0) {
        return Err("holds a NUL byte");
    }
    for component in path.split(|b| *b == b'/') {
        match component {
            b".." => return Err("contains '..'"),
            b"" | b"." => return Err("is not written in its plain form in the manifest"),
            _ => {}
        }
    }
    Ok(())
}

/// The order the walk writes paths in: depth first, names in byte order, each directory
/// followed by everything below it; the same as comparing paths component by component
/// (`a` < `a/b` < `a.b`, where plain byte order puts `a.b` first).
pub fn walk_order(a: &[u8], b: &[u8]) -> Ordering {
    a.split(|c| *c == b'/').cmp(b.split(|c| *c == b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_utf8_are_kept_exactly_and_shown_lossily() {
        let mut entry = Entry::default();
        entry.set_path(b"caf\xe9/x");
        entry.set_target(b"t\xff");
        assert_eq!(entry.path, "caf\u{fffd}/x");
        assert_eq!(&*entry.path_bytes().unwrap(), b"caf\xe9/x");
        assert_eq!(&*entry.target_bytes().unwrap().unwrap(), b"t\xff");
        // The name that lossy conversion would give is a different entry.
        let mut lookalike = Entry::default();
        lookalike.set_path("caf\u{fffd}/x".as_bytes());
        assert_eq!(lookalike.raw_path, None);
        assert_ne!(lookalike.path_bytes(), entry.path_bytes());
        let json = serde_json::to_string(&entry).unwrap();
        let back: Entry = serde_json::from_str(&json).unwrap();
        assert_eq!(&*back.path_bytes().unwrap(), b"caf\xe9/x");
    }

    #[test]
    fn sub_second_times_are_written_only_when_there_are_some() {
        let mut entry = Entry::default();
        let json = serde_json::to_value(&entry).unwrap();
        assert!(json.get("mtimeNanos").is_none(), "{json}");
        entry.mtime_nanos = 5;
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(json["mtimeNanos"], 5, "{json}");
    }

    fn file(path: &str) -> Entry {
        let mut entry = Entry::default();
        entry.set_path(path.as_bytes());
        entry
    }

    fn header() -> Header {
        Header {
            format: FORMAT.into(),
            created_at: String::new(),
            source: "data".into(),
            compression: backstop_api::Compression::Zstd,
            content: Content::Tree,
        }
    }

    fn artifact() -> ArtifactInfo {
        ArtifactInfo {
            name: "data.tar.zst".into(),
            size: 1,
            blake3: "ab".repeat(32),
        }
    }

    fn written(paths: &[&str]) -> Vec<u8> {
        let mut writer = Writer::new(Vec::new(), &header()).unwrap();
        for path in paths {
            writer.entry(&file(path)).unwrap();
        }
        writer.finish(artifact(), Totals::default()).unwrap()
    }

    fn read(data: Vec<u8>) -> Result<(Vec<String>, Trailer), ManifestError> {
        let mut reader = Reader::new(Box::new(io::Cursor::new(data)))?;
        let mut paths = Vec::new();
        while let Some(entry) = reader.next_entry()? {
            paths.push(entry.path);
        }
        let trailer = reader.trailer().cloned().expect("an end line");
        Ok((paths, trailer))
    }

    fn refusal(data: Vec<u8>) -> String {
        read(data).expect_err("refused").to_string()
    }

    /// The manifest's lines, decompressed, changed by `edit`, and compressed again.
    fn edited(data: Vec<u8>, edit: impl FnOnce(&mut Vec<String>)) -> Vec<u8> {
        let text = String::from_utf8(zstd::decode_all(&data[..]).unwrap()).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        edit(&mut lines);
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        zstd::encode_all(text.as_bytes(), 3).unwrap()
    }

    #[test]
    fn a_manifest_reads_back_entry_by_entry_with_its_end_line() {
        let (paths, trailer) = read(written(&["a", "a/b", "a.b", "c"])).unwrap();
        assert_eq!(paths, ["a", "a/b", "a.b", "c"]);
        assert_eq!((trailer.entries, trailer.artifact), (4, artifact()));
        let (paths, trailer) = read(written(&[])).unwrap();
        assert!(paths.is_empty());
        assert_eq!(trailer.entries, 0);
    }

    #[test]
    fn entries_out_of_the_walks_order_or_listed_twice_are_refused() {
        for paths in [&["b", "a"][..], &["a", "a"], &["a.b", "a/b"], &["a/b", "a"]] {
            let why = refusal(written(paths));
            assert!(why.contains("out of the walk's order"), "{paths:?}: {why}");
        }
    }

    #[test]
    fn a_manifest_cut_short_padded_or_miscounted_is_refused() {
        let cut = edited(written(&["a", "b"]), |lines| {
            lines.pop();
        });
        assert!(refusal(cut).contains("without its end line"));
        let more = edited(written(&["a"]), |lines| lines.push("{}".into()));
        assert!(refusal(more).contains("after its end line"));
        let miscounted = edited(written(&["a", "b"]), |lines| {
            lines.remove(1);
        });
        assert!(refusal(miscounted).contains("counts 2 entries; 1 came before it"));
        let long = edited(written(&["a"]), |lines| {
            lines.insert(
                1,
                format!("{{\"path\":\"{}\"}}", "x".repeat(LINE_MAX as usize)),
            );
        });
        assert!(refusal(long).contains("longer than"));
        let empty = refusal(Vec::new());
        assert!(
            empty.contains("EOF while parsing"),
            "not zstd, not JSON: {empty}"
        );
    }

    #[test]
    fn paths_must_be_plain_and_relative() {
        for (path, why) in [
            ("", "is empty"),
            ("/etc", "is absolute"),
            ("a/../b", "contains '..'"),
            ("./a", "plain form"),
            ("a//b", "plain form"),
            ("a/", "plain form"),
            ("a\0b", "NUL"),
        ] {
            let refused = refusal(written(&[path]));
            assert!(refused.contains(why), "{path:?}: {refused}");
        }
    }

    #[test]
    fn a_legacy_manifest_is_read_whole_and_may_not_list_a_path_twice() {
        let legacy = |paths: &[&str]| {
            serde_json::to_vec(&LegacyManifest {
                format: LEGACY_FORMAT.into(),
                created_at: String::new(),
                source: "data".into(),
                compression: backstop_api::Compression::Gzip,
                artifact: artifact(),
                totals: Totals::default(),
                entries: paths.iter().map(|p| file(p)).collect(),
            })
            .unwrap()
        };
        // Its order was not always the walk's.
        let (paths, trailer) = read(legacy(&["b", "a"])).unwrap();
        assert_eq!(
            (paths, trailer.entries),
            (vec!["b".to_string(), "a".into()], 2)
        );
        assert!(refusal(legacy(&["a", "b", "a"])).contains("listed twice"));
        // Bounded like every repository object: it is not read past its bound.
        let mut huge = b"{\"format\": \"".to_vec();
        huge.resize(MAX_LEGACY_BYTES as usize + 10, b'x');
        assert!(refusal(huge).contains("more than 128 MiB"));
    }

    #[test]
    fn the_walks_order_compares_whole_components() {
        assert_eq!(walk_order(b"a", b"a/b"), Ordering::Less);
        assert_eq!(walk_order(b"a/b", b"a.b"), Ordering::Less);
        assert_eq!(walk_order(b"a/z", b"b"), Ordering::Less);
        assert_eq!(walk_order(b"a", b"a"), Ordering::Equal);
        assert_eq!(walk_order(b"b", b"a/z"), Ordering::Greater);
    }

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_hex() {
        let name = b"a\nb/\xff\xfe c";
        assert_eq!(unhex(hex(name).as_bytes()).unwrap(), name);
        assert_eq!(unhex(b"abc"), None);
        assert_eq!(unhex(b"zz"), None);
    }
}
