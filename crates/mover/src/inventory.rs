//! Counting what a volume holds, without following symbolic links out of it.

use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// How many entries of each kind a tree holds, and the bytes in its regular files.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Sockets, fifos and device nodes.
    pub others: u64,
    /// Apparent size of the regular files (what `du --apparent-size -b` counts for files).
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {source}", path.display())]
pub struct InventoryError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Counts everything below `root` (the root directory itself is not counted).
/// Symbolic links are counted as links and never followed.
pub fn take(root: &Path) -> Result<Inventory, InventoryError> {
    let mut inventory = Inventory::default();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = fs::read_dir(&dir).map_err(|source| InventoryError {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| InventoryError {
                path: dir.clone(),
                source,
            })?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(|source| InventoryError {
                path: path.clone(),
                source,
            })?;
            let kind = meta.file_type();
            if kind.is_dir() {
                inventory.dirs += 1;
                pending.push(path);
            } else if kind.is_file() {
                inventory.files += 1;
                inventory.bytes += meta.len();
            } else if kind.is_symlink() {
                inventory.symlinks += 1;
            } else {
                inventory.others += 1;
            }
        }
    }
    Ok(inventory)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn counts_files_dirs_links_and_bytes_without_following_links() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir_all(root.join("a/b/empty")).unwrap();
        fs::write(root.join("top.txt"), b"hello").unwrap();
        fs::write(root.join("a/b/data.bin"), vec![7u8; 1000]).unwrap();
        // A link to the parent would loop forever if followed.
        symlink("..", root.join("a/up")).unwrap();
        symlink("/etc", root.join("outside")).unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(root.join("a/sock")).unwrap();

        let inventory = take(root).unwrap();

        assert_eq!(
            inventory,
            Inventory {
                files: 2,
                dirs: 3,
                symlinks: 2,
                others: 1,
                bytes: 1005
            }
        );
    }

    #[test]
    fn missing_root_names_the_path() {
        let err = take(Path::new("/nonexistent/backstop-volume")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/backstop-volume"),
            "{err}"
        );
    }
}
