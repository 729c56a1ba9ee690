//! The manifest: what an artifact holds, entry by entry, with BLAKE3 digests, plus the artifact's
//! own digest and size. Written after the artifact, so its presence means the artifact is complete.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;

pub const FORMAT: &str = "backstop.dev/manifest/v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: String,
    /// RFC 3339 time the backup finished.
    pub created_at: String,
    /// The volume (PVC) the artifact was made from.
    pub source: String,
    /// How the artifact is compressed; a value this mover does not know fails the reading of
    /// the manifest (never "uncompressed").
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
    /// BLAKE3 of a regular file's content.
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

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_hex() {
        let name = b"a\nb/\xff\xfe c";
        assert_eq!(unhex(hex(name).as_bytes()).unwrap(), name);
        assert_eq!(unhex(b"abc"), None);
        assert_eq!(unhex(b"zz"), None);
    }
}
