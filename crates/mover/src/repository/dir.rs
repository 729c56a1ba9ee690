//! A directory repository: the shared-storage PVC mounted in the mover pod. Writes are atomic:
//! a `.partial` name, fsync, rename, fsync of the directory.

use super::{Repository, RepositoryError, Upload, check_key};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

pub struct DirRepository {
    root: PathBuf,
}

/// A file being written: invisible under its final name until `commit`.
struct PendingFile {
    file: File,
    partial: PathBuf,
    target: PathBuf,
    key: String,
}

impl DirRepository {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, key: &str) -> Result<PathBuf, RepositoryError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }
}

fn write_error(key: &str) -> impl FnOnce(io::Error) -> RepositoryError + '_ {
    move |source| RepositoryError::Write {
        key: key.to_string(),
        source,
    }
}

impl Repository for DirRepository {
    fn create(&self, key: &str) -> Result<Box<dyn Upload>, RepositoryError> {
        let target = self.path(key)?;
        let partial = partial_path(&target);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(write_error(key))?;
        }
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&partial)
            .map_err(write_error(key))?;
        Ok(Box::new(PendingFile {
            file,
            partial,
            target,
            key: key.to_string(),
        }))
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>, RepositoryError> {
        let file = File::open(self.path(key)?).map_err(|source| RepositoryError::Read {
            key: key.to_string(),
            source,
        })?;
        Ok(Box::new(file))
    }

    fn remove(&self, key: &str) -> Result<(), RepositoryError> {
        match fs::remove_file(self.path(key)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(RepositoryError::Remove {
                key: key.to_string(),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    fn remove_prefix(&self, prefix: &str) -> Result<(), RepositoryError> {
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

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, RepositoryError> {
        let mut found = Vec::new();
        let mut dirs = vec![(self.path(prefix)?, prefix.to_string())];
        while let Some((dir, key)) = dirs.pop() {
            let read_error = |source| RepositoryError::Read {
                key: key.clone(),
                source,
            };
            let entries = match fs::read_dir(&dir) {
                // A missing prefix, or a directory removed while listed, holds nothing.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                entries => entries.map_err(read_error)?,
            };
            for entry in entries {
                let entry = entry.map_err(read_error)?;
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                // Never followed: a link in the repository is not one of its objects.
                let meta = entry.metadata().map_err(read_error)?;
                let child = format!("{key}/{name}");
                if meta.is_dir() {
                    dirs.push((entry.path(), child));
                } else if meta.is_file() && !name.ends_with(".partial") {
                    found.push((child, meta.len()));
                }
            }
        }
        Ok(found)
    }

    fn read_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>, RepositoryError> {
        use std::os::unix::fs::FileExt;
        let read_error = |source| RepositoryError::Read {
            key: key.to_string(),
            source,
        };
        let file = File::open(self.path(key)?).map_err(read_error)?;
        let mut data = vec![0; usize::try_from(length).unwrap_or(usize::MAX)];
        let mut filled = 0;
        while filled < data.len() {
            match file.read_at(&mut data[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_error(e)),
            }
        }
        data.truncate(filled);
        Ok(data)
    }
}

impl Write for PendingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Upload for PendingFile {
    fn commit(self: Box<Self>) -> Result<(), RepositoryError> {
        let err = write_error(&self.key);
        let durable = self
            .file
            .sync_all()
            .and_then(|()| fs::rename(&self.partial, &self.target))
            .and_then(|()| match self.target.parent() {
                Some(parent) => File::open(parent).and_then(|d| d.sync_all()),
                None => Ok(()),
            });
        durable.map_err(err)
    }

    fn abort(self: Box<Self>) {
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
        for bad in ["", "../x", "/etc/passwd", "a/../../b", "./a", "a//b"] {
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
        let mut pending = repo.create("ns/b/data.tar").unwrap();
        pending.write_all(b"half").unwrap();
        assert!(!tmp.path().join("ns/b/data.tar").exists());
        pending.abort();
        assert_eq!(fs::read_dir(tmp.path().join("ns/b")).unwrap().count(), 0);

        repo.put("ns/b/data.tar", b"whole").unwrap();
        assert_eq!(repo.get("ns/b/data.tar").unwrap(), b"whole");
        repo.remove_prefix("ns/b").unwrap();
        assert!(!tmp.path().join("ns").exists());
    }

    #[test]
    fn removing_what_is_missing_is_fine_and_what_cannot_go_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = DirRepository::new(tmp.path());
        repo.put("ns/b/data.tar", b"x").unwrap();
        repo.remove("ns/b/data.tar").unwrap();
        assert!(!tmp.path().join("ns/b/data.tar").exists());
        repo.remove("ns/b/data.tar").unwrap();
        repo.remove_prefix("ns/gone").unwrap();
        // A directory where an object is expected, an object where a backup's directory is.
        assert!(matches!(
            repo.remove("ns/b"),
            Err(RepositoryError::Remove { .. })
        ));
        repo.put("ns/file", b"x").unwrap();
        assert!(matches!(
            repo.remove_prefix("ns/file"),
            Err(RepositoryError::Remove { .. })
        ));
        assert!(tmp.path().join("ns/file").exists());
    }
}
