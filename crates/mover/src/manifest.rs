//! The manifest: what an artifact holds, entry by entry, with BLAKE3 digests, plus the artifact's
//! own digest and size. Written after the artifact, so its presence means the artifact is complete.

use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "backstop.dev/manifest/v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: String,
    /// RFC 3339 time the backup finished.
    pub created_at: String,
    /// The volume (PVC) the artifact was made from.
    pub source: String,
    pub compression: String,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Fifo,
    Char,
    Block,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Path relative to the volume root, `/`-separated, as stored in the archive.
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
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// File names of a volume's artifact and manifest inside the backup's directory.
pub fn artifact_name(pvc: &str, extension: &str) -> String {
    format!("{pvc}.{extension}")
}

pub fn manifest_name(pvc: &str) -> String {
    format!("{pvc}.manifest.json")
}
