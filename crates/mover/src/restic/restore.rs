//! Restoring a restic snapshot with every Backstop restore's guarantees: the snapshot's tree is
//! written by the same extractor as a tar artifact's entries (each name below its open
//! directory, never through a link; names that are not one plain component refused), into a
//! staging directory that is committed only once everything was written and checked, under the
//! same existing-data policies. Each data blob is checked against its id (the SHA-256 of its
//! content) besides restic's authenticated encryption, and each file's length against its node.

use super::{Restic, error};
use crate::extract::Extractor;
use crate::manifest::{Entry, EntryKind};
use crate::restore::{RestoreError, RestoreOptions, RestoreResult, staged};
use backstop_api::contract::Reason;
use rustic_core::repofile::{BlobType, Node, NodeType, SnapshotFile};
use rustic_core::{BlobId, IndexedFullStatus, RusticError};
use sha2::Digest;
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

type Repo = rustic_core::Repository<IndexedFullStatus>;

impl Restic {
    /// Restores the volume of snapshot `id` (its full id) into `target`.
    pub fn restore(
        self,
        id: &str,
        target: &Path,
        options: &RestoreOptions<'_>,
    ) -> Result<RestoreResult, RestoreError> {
        let untrusted = options.untrusted;
        self.read(id, |read| {
            staged(target, options.policy, |staging| {
                read(Some(Extractor::new(staging)?), untrusted)
            })
        })
    }

    /// Reads every blob of snapshot `id` and checks it, as a restore would, writing nothing.
    pub fn verify(self, id: &str) -> Result<RestoreResult, RestoreError> {
        self.read(id, |read| read(None, false))
    }

    /// Finds snapshot `id` and its volume's tree, then lets `run` read it (into an extractor,
    /// or nowhere).
    fn read(
        self,
        id: &str,
        run: impl FnOnce(
            &mut dyn FnMut(Option<Extractor<'_>>, bool) -> Result<RestoreResult, RestoreError>,
        ) -> Result<RestoreResult, RestoreError>,
    ) -> Result<RestoreResult, RestoreError> {
        let Restic { repo, failure, .. } = self;
        let fail = |e: Box<RusticError>, reason| {
            let e = error(&failure, &e, reason);
            RestoreError::Snapshot {
                reason: e.reason,
                message: e.message,
            }
        };
        let snapshots = repo
            .get_all_snapshots()
            .map_err(|e| fail(e, Reason::ArtifactUnreadable))?;
        let snap = find(snapshots, id)?;
        let repo = repo
            .to_indexed()
            .map_err(|e| fail(e, Reason::ArtifactUnreadable))?;
        let path = snap.paths.iter().next().cloned().unwrap_or_default();
        let root = repo
            .node_from_path(snap.tree, Path::new(&path))
            .map_err(|e| fail(e, Reason::ArtifactUnreadable))?;
        let subtree = root
            .subtree
            .ok_or_else(|| integrity(format!("the snapshot's path {path} is not a directory")))?;
        run(&mut |extractor, untrusted| {
            let mut writer = Writer {
                repo: &repo,
                extractor,
                untrusted,
                links: HashMap::new(),
                result: RestoreResult {
                    files: 0,
                    bytes: 0,
                    entries: 0,
                    verification: "Verified".into(),
                    recovered_interrupted_restore: false,
                    skipped_devices: 0,
                },
                fail: &fail,
            };
            writer.tree(subtree, &[])?;
            if let Some(extractor) = writer.extractor {
                extractor.finish()?;
            }
            Ok(writer.result)
        })
    }
}

fn find(snapshots: Vec<SnapshotFile>, id: &str) -> Result<SnapshotFile, RestoreError> {
    snapshots
        .into_iter()
        .find(|s| !id.is_empty() && *s.id.to_hex() == *id)
        .ok_or_else(|| RestoreError::Snapshot {
            reason: Reason::ArtifactMissing,
            message: format!("the restic repository holds no snapshot {id}"),
        })
}

fn integrity(message: String) -> RestoreError {
    RestoreError::Integrity(message)
}

struct Writer<'a, F> {
    repo: &'a Repo,
    /// Where entries are written; none when only checking.
    extractor: Option<Extractor<'a>>,
    untrusted: bool,
    /// The first path of each file with more than one link, by device and inode.
    links: HashMap<(u64, u64), Vec<u8>>,
    result: RestoreResult,
    fail: &'a F,
}

impl<F> Writer<'_, F>
where
    F: Fn(Box<RusticError>, backstop_api::contract::Reason) -> RestoreError,
{
    /// Writes the tree `id` found at `prefix`, each directory before what is below it.
    fn tree(&mut self, id: rustic_core::TreeId, prefix: &[u8]) -> Result<(), RestoreError> {
        let tree = self
            .repo
            .get_tree(&id)
            .map_err(|e| (self.fail)(e, Reason::ArtifactUnreadable))?;
        for node in &tree.nodes {
            let name = node.name();
            let name = name.as_bytes();
            let mut rel = prefix.to_vec();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(name);
            if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
                return Err(RestoreError::Unsafe {
                    path: String::from_utf8_lossy(&rel).into_owned(),
                    why: "is not one plain name",
                });
            }
            self.node(node, &rel)?;
        }
        Ok(())
    }

    fn node(&mut self, node: &Node, rel: &[u8]) -> Result<(), RestoreError> {
        let mut meta = entry(node, rel);
        if self.untrusted {
            meta.mode &= !(libc::S_ISUID | libc::S_ISGID);
        }
        let device = match node.node_type {
            NodeType::Dev { device } | NodeType::Chardev { device } => device,
            _ => 0,
        };
        self.result.entries += 1;
        match meta.kind {
            EntryKind::Char | EntryKind::Block if self.untrusted => {
                self.result.skipped_devices += 1;
                return Ok(());
            }
            EntryKind::File if node.meta.links > 1 => {
                let key = (node.meta.device_id, node.meta.inode);
                if let Some(first) = self.links.get(&key) {
                    meta.kind = EntryKind::Hardlink;
                    meta.set_target(first);
                } else {
                    self.links.insert(key, rel.to_vec());
                }
            }
            _ => {}
        }
        if node.node_type == NodeType::Socket {
            // A socket is only ever made by a program listening on it: nothing to restore.
            return Ok(());
        }
        let repo = self.repo;
        let fail = self.fail;
        let file = meta.kind == EntryKind::File;
        let bytes = match self.extractor.as_mut() {
            Some(x) => x.entry(rel, &meta, device, |out| match out {
                Some(out) if file => content(repo, node, out, rel, fail),
                _ => Ok(0),
            })?,
            None if file => content(repo, node, &mut std::io::sink(), rel, fail)?,
            None => 0,
        };
        if meta.kind == EntryKind::File {
            self.result.files += 1;
            self.result.bytes += bytes;
        }
        if let Some(subtree) = node.subtree.filter(|_| node.is_dir()) {
            self.tree(subtree, rel)?;
        } else if node.is_dir() {
            return Err(integrity(format!(
                "directory {} has no tree",
                String::from_utf8_lossy(rel)
            )));
        }
        Ok(())
    }
}

/// Writes a file's blobs, each checked against its id, and checks the length.
fn content<F>(
    repo: &Repo,
    node: &Node,
    file: &mut impl Write,
    rel: &[u8],
    fail: &F,
) -> Result<u64, RestoreError>
where
    F: Fn(Box<RusticError>, backstop_api::contract::Reason) -> RestoreError,
{
    let shown = || String::from_utf8_lossy(rel).into_owned();
    let mut written = 0u64;
    for id in node.content.iter().flatten() {
        let blob: BlobId = (*id).into();
        let data = repo
            .get_blob_cached(&blob, BlobType::Data)
            .map_err(|e| fail(e, Reason::ArtifactUnreadable))?;
        if crate::manifest::hex(&sha2::Sha256::digest(&data)) != *blob.to_hex() {
            return Err(integrity(format!(
                "a block of {} does not match its id {}",
                shown(),
                blob
            )));
        }
        file.write_all(&data).map_err(|e| RestoreError::Write {
            path: shown().into(),
            source: e,
        })?;
        written += data.len() as u64;
    }
    if written != node.meta.size {
        return Err(integrity(format!(
            "{} has {written} bytes in the repository; its node says {}",
            shown(),
            node.meta.size
        )));
    }
    Ok(written)
}

/// The extractor's entry for a restic node at `rel`.
fn entry(node: &Node, rel: &[u8]) -> Entry {
    let go = node.meta.mode.unwrap_or(0o644);
    let special = [
        (super::source::GO_SETUID, libc::S_ISUID),
        (super::source::GO_SETGID, libc::S_ISGID),
        (super::source::GO_STICKY, libc::S_ISVTX),
    ]
    .into_iter()
    .filter(|(g, _)| go & g != 0)
    .fold(0, |bits, (_, unix)| bits | unix);
    let kind = match &node.node_type {
        NodeType::File => EntryKind::File,
        NodeType::Dir => EntryKind::Dir,
        NodeType::Symlink { .. } => EntryKind::Symlink,
        NodeType::Dev { .. } => EntryKind::Block,
        NodeType::Chardev { .. } => EntryKind::Char,
        NodeType::Fifo | NodeType::Socket => EntryKind::Fifo,
    };
    let (mtime, mtime_nanos) = node.meta.mtime.map_or((0, 0), |t| {
        (
            t.as_second(),
            u32::try_from(t.subsec_nanosecond()).unwrap_or(0),
        )
    });
    let mut entry = Entry {
        kind,
        mode: (go & 0o777) | special,
        uid: node.meta.uid.unwrap_or(0).into(),
        gid: node.meta.gid.unwrap_or(0).into(),
        mtime,
        mtime_nanos,
        ..Entry::default()
    };
    entry.set_path(rel);
    if let NodeType::Symlink { .. } = node.node_type {
        entry.set_target(node.node_type.to_link().as_os_str().as_bytes());
    }
    entry
}
