//! A directory repository: the shared-storage PVC mounted in the mover pod. Keys are
//! `/`-separated paths relative to its root; writes are atomic (temporary name, fsync, rename).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    #[error("repository key {0:?} must be a relative path without '..'")]
    InvalidKey(String),
    #[error("writing {key} to the repository: {source}")]
    Write {
        key: String,
        #[source]
        source: io::Error,
    },
    #[error("removing {key} from the repository: {source}")]
    Remove {
        key: String,
        #[source]
        source: io::Error,
    },
    #[error("reading {key} from the repository: {source}")]
    Read {
        key: String,
        #[source]
        source: io::Error,
    },
}

impl RepositoryError {
    /// True when the repository volume is full: the user must make room or grow it.
    pub fn is_full(&self) -> bool {
        match self {
            RepositoryError::Write { source, .. } => {
                source.kind() == io::ErrorKind::StorageFull || source.raw_os_error() == Some(28)
            }
            _ => false,
        }
    }
}

pub struct DirRepository {
    root: PathBuf,
}

/// An artifact being written: invisible under its final name until `commit`.
pub struct PendingFile {
    file: File,
    partial: PathBuf,
    target: PathBuf,
    key: String,
}

impl DirRepository {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf, RepositoryError> {
        let rel = Path::new(key);
        if key.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(RepositoryError::InvalidKey(key.to_string()));
        }
        Ok(self.root.join(rel))
    }

    pub fn write_error(&self, key: &str, source: io::Error) -> RepositoryError {
        RepositoryError::Write {
            key: key.to_string(),
            source,
        }
    }

    pub fn create(&self, key: &str) -> Result<PendingFile, RepositoryError> {
        let target = self.path(key)?;
        let partial = partial_path(&target);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| self.write_error(key, e))?;
        }
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&partial)
            .map_err(|e| self.write_error(key, e))?;
        Ok(PendingFile {
            file,
            partial,
            target,
            key: key.to_string(),
        })
    }

    /// Writes `data` under `key` atomically.
    pub fn put(&self, key: &str, data: &[u8]) -> Result<(), RepositoryError> {
        let pending = self.create(key)?;
        let result = pending
            .file()
            .and_then(|mut f| f.write_all(data).map_err(|e| self.write_error(key, e)));
        match result {
            Ok(()) => pending.commit(),
            Err(e) => {
                pending.abort();
                Err(e)
            }
        }
    }

    pub fn get(&self, key: &str) -> Result<Vec<u8>, RepositoryError> {
        fs::read(self.path(key)?).map_err(|source| RepositoryError::Read {
            key: key.to_string(),
            source,
        })
    }

    pub fn open(&self, key: &str) -> Result<File, RepositoryError> {
        File::open(self.path(key)?).map_err(|source| RepositoryError::Read {
            key: key.to_string(),
            source,
        })
    }

    /// Removes one object; a missing one is not an error.
    pub fn remove(&self, key: &str) -> Result<(), RepositoryError> {
        match fs::remove_file(self.path(key)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(RepositoryError::Remove {
                key: key.to_string(),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Removes everything under `prefix` (a directory); a missing one is not an error.
    pub fn remove_prefix(&self, prefix: &str) -> Result<(), RepositoryError> {
        let path = self.path(prefix)?;
        match fs::remove_dir_all(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(RepositoryError::Remove {
                key: prefix.to_string(),
                source: e,
            }),
            _ => {
                // Drop the parent (the namespace directory) too once it is empty.
                if let Some(parent) = path.parent()
                    && parent != self.root
                {
                    let _ = fs::remove_dir(parent);
                }
                Ok(())
            }
        }
    }
}

impl PendingFile {
    /// A handle to write the content through.
    pub fn file(&self) -> Result<File, RepositoryError> {
        self.file
            .try_clone()
            .map_err(|source| RepositoryError::Write {
                key: self.key.clone(),
                source,
            })
    }

    /// Makes the file durable and visible under its final name.
    pub fn commit(self) -> Result<(), RepositoryError> {
        let err = |source| RepositoryError::Write {
            key: self.key.clone(),
            source,
        };
        self.file.sync_all().map_err(err)?;
        fs::rename(&self.partial, &self.target).map_err(err)?;
        if let Some(parent) = self.target.parent() {
            File::open(parent).and_then(|d| d.sync_all()).map_err(err)?;
        }
        Ok(())
    }

    /// Removes what was written; nothing is left that could look complete.
    pub fn abort(self) {
        let _ = fs::remove_file(&self.partial);
    }
}

fn partial_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    target.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_the_repository() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = DirRepository::new(tmp.path());
        for bad in ["", "../x", "/etc/passwd", "a/../../b", "./a"] {
            assert!(
                matches!(repo.put(bad, b"x"), Err(RepositoryError::InvalidKey(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn an_aborted_file_leaves_nothing_and_a_committed_one_appears_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = DirRepository::new(tmp.path());
        let pending = repo.create("ns/b/data.tar").unwrap();
        pending.file().unwrap().write_all(b"half").unwrap();
        assert!(!tmp.path().join("ns/b/data.tar").exists());
        pending.abort();
        assert_eq!(fs::read_dir(tmp.path().join("ns/b")).unwrap().count(), 0);

        repo.put("ns/b/data.tar", b"whole").unwrap();
        assert_eq!(repo.get("ns/b/data.tar").unwrap(), b"whole");
        repo.remove_prefix("ns/b").unwrap();
        assert!(!tmp.path().join("ns").exists());
    }
}
