//! A directory repository: the shared-storage PVC mounted in the mover pod. Writes are atomic:
//! a `.partial` name, fsync, rename, fsync of the directory.

use super::{Listed, Repository, RepositoryError, Upload, check_key};
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

    fn list_in_order<'a>(&'a self, prefix: &str) -> Result<Listed<'a>, RepositoryError> {
        let mut pending = Vec::new();
        push_sorted(&mut pending, self.path(prefix)?, prefix)?;
        Ok(Box::new(InOrder { pending }))
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

/// A directory entry waiting to be listed: its key, and its path when it is a directory.
struct Entry {
    key: String,
    size: u64,
    dir: Option<PathBuf>,
}

/// A directory repository's objects in key order: a depth-first walk whose pending entries
/// (sorted, the next one last) are one directory's at each level.
struct InOrder {
    pending: Vec<Entry>,
}

/// Pushes the entries of directory `path` (key `key`) onto `pending`, in reverse key order (so
/// that the smallest is popped first). A directory sorts as its key and a `/`: `a/x` comes after
/// `a-b`, as in object storage. Links are not followed (not objects of the repository); uploads
/// in progress (`.partial`) are not listed; a missing directory holds nothing.
fn push_sorted(pending: &mut Vec<Entry>, path: PathBuf, key: &str) -> Result<(), RepositoryError> {
    let read_error = |source| RepositoryError::Read {
        key: key.to_string(),
        source,
    };
    let entries = match fs::read_dir(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        entries => entries.map_err(read_error)?,
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(read_error)?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let meta = entry.metadata().map_err(read_error)?;
        let key = format!("{key}/{name}");
        if meta.is_dir() {
            found.push(Entry {
                key,
                size: 0,
                dir: Some(entry.path()),
            });
        } else if meta.is_file() && !name.ends_with(".partial") {
            found.push(Entry {
                key,
                size: meta.len(),
                dir: None,
            });
        }
    }
    // Largest first: popped smallest first.
    found.sort_unstable_by(|a, b| sort_key(b).cmp(sort_key(a)));
    pending.extend(found);
    Ok(())
}

/// How an entry sorts among its siblings: by its key, a directory's with a `/` after it.
fn sort_key(entry: &Entry) -> impl Iterator<Item = u8> + '_ {
    entry.key.bytes().chain(entry.dir.as_ref().map(|_| b'/'))
}

impl Iterator for InOrder {
    type Item = Result<(String, u64), RepositoryError>;

    fn next(&mut self) -> Option<Self::Item> {
        while let Some(entry) = self.pending.pop() {
            match entry.dir {
                None => return Some(Ok((entry.key, entry.size))),
                Some(path) => {
                    if let Err(e) = push_sorted(&mut self.pending, path, &entry.key) {
                        return Some(Err(e));
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_listed_in_key_order_as_object_storage_lists_them() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = DirRepository::new(tmp.path());
        // `a-b` sorts before `a/` ('-' < '/'), though the name `a` sorts before `a-b`.
        for key in ["ns/b", "ns/a/y/z", "ns/a-b", "ns/a/x", "ns/0", "nsx/other"] {
            repo.put(key, key.as_bytes()).unwrap();
        }
        std::fs::write(tmp.path().join("ns/a/w.partial"), b"in progress").unwrap();
        let listed: Vec<(String, u64)> = repo
            .list_in_order("ns")
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let keys: Vec<&str> = listed.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["ns/0", "ns/a-b", "ns/a/x", "ns/a/y/z", "ns/b"]);
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted);
        assert_eq!(listed[2].1, "ns/a/x".len() as u64);
        assert!(repo.list_in_order("missing").unwrap().next().is_none());
    }

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
