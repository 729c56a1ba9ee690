//! Where artifacts live: one interface, two backends. A directory (the shared-storage PVC mounted
//! in the mover pod) and S3-compatible object storage. Keys are `/`-separated relative paths;
//! a write becomes visible under its key only when it is committed, so an interrupted write never
//! leaves anything that looks complete.

mod dir;
mod s3;

pub use backstop_api::contract::{ProbeResult, Reason};
pub use dir::DirRepository;
pub use s3::{S3Config, S3Repository};

use std::io::{self, Read, Write};

pub trait Repository: Send + Sync {
    /// Starts writing `key`; nothing appears under it until the upload is committed.
    fn create(&self, key: &str) -> Result<Box<dyn Upload>, RepositoryError>;

    /// Writes `data` under `key` in one go, atomically.
    fn put(&self, key: &str, data: &[u8]) -> Result<(), RepositoryError> {
        let mut upload = self.create(key)?;
        match upload.write_all(data) {
            Ok(()) => upload.commit(),
            Err(source) => {
                upload.abort();
                Err(RepositoryError::Write {
                    key: key.to_string(),
                    source,
                })
            }
        }
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, RepositoryError> {
        let mut data = Vec::new();
        self.open(key)?
            .read_to_end(&mut data)
            .map_err(|source| RepositoryError::Read {
                key: key.to_string(),
                source,
            })?;
        Ok(data)
    }

    /// Streams the object under `key`.
    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>, RepositoryError>;

    /// Removes one object; a missing one is not an error.
    fn remove(&self, key: &str) -> Result<(), RepositoryError>;

    /// Removes everything under `prefix` (a backup's directory); a missing one is not an error.
    fn remove_prefix(&self, prefix: &str) -> Result<(), RepositoryError>;

    /// The committed objects below `prefix`, at any depth: each key (relative to the repository,
    /// as `create` takes it) and size. A missing prefix holds nothing; uploads in progress are
    /// not listed.
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, RepositoryError> {
        self.list_in_order(prefix)?.collect()
    }

    /// What `list` returns, one object at a time in ascending key order (the order S3's
    /// ListObjectsV2 promises; a directory repository sorts each directory's entries as their
    /// keys sort), so that a reader keeps only what it needs: memory does not grow with the
    /// number of objects (a directory repository holds one directory's names at a time).
    fn list_in_order<'a>(&'a self, prefix: &str) -> Result<Listed<'a>, RepositoryError>;

    /// The bytes `offset..offset + length` of the object under `key`, a range inside it.
    fn read_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>, RepositoryError>;
}

/// Objects listed one at a time (see `Repository::list_in_order`): each key and size.
pub type Listed<'a> = Box<dyn Iterator<Item = Result<(String, u64), RepositoryError>> + Send + 'a>;

/// An object being written.
pub trait Upload: Write + Send {
    /// Makes the object durable and visible under its key.
    fn commit(self: Box<Self>) -> Result<(), RepositoryError>;
    /// Throws away what was written; nothing is left that could look complete.
    fn abort(self: Box<Self>);
}

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
    pub fn io(&self) -> Option<&io::Error> {
        match self {
            RepositoryError::InvalidKey(_) => None,
            RepositoryError::Write { source, .. }
            | RepositoryError::Remove { source, .. }
            | RepositoryError::Read { source, .. } => Some(source),
        }
    }

    /// The condition reason for a problem with the repository itself (full, unreachable,
    /// refusing the credentials, missing bucket), if this is one.
    pub fn reason(&self) -> Option<Reason> {
        self.io().and_then(reason)
    }
}

/// The condition reason for an I/O error that says the repository cannot be used, if it does.
pub fn reason(err: &io::Error) -> Option<Reason> {
    if let Some(failure) = err.get_ref().and_then(|e| e.downcast_ref::<StoreFailure>()) {
        return Some(failure.reason);
    }
    (err.kind() == io::ErrorKind::StorageFull || err.raw_os_error() == Some(libc::ENOSPC))
        .then_some(Reason::RepositoryFull)
}

/// An object storage failure with the reason a user can act on; travels inside `io::Error`
/// through the writers the archive goes through.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StoreFailure {
    pub reason: Reason,
    pub message: String,
}

impl StoreFailure {
    pub fn into_io(self) -> io::Error {
        let kind = match self.reason {
            Reason::AccessDenied => io::ErrorKind::PermissionDenied,
            Reason::BucketNotFound => io::ErrorKind::NotFound,
            Reason::EndpointUnreachable | Reason::TlsHandshakeFailed => {
                io::ErrorKind::ConnectionRefused
            }
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }
}

/// Refuses a key that could leave the repository: empty, absolute, or with `.`/`..`/empty parts.
pub(crate) fn check_key(key: &str) -> Result<(), RepositoryError> {
    if key.is_empty()
        || key
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(RepositoryError::InvalidKey(key.to_string()));
    }
    Ok(())
}

/// Checks that the repository can be used: writes a small object, reads it back, removes it.
pub fn probe(repo: &dyn Repository) -> Result<ProbeResult, RepositoryError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let key = format!(".backstop-probe/{nanos}-{}", std::process::id());
    let data = format!("backstop repository probe {nanos}\n").repeat(64);
    repo.put(&key, data.as_bytes())?;
    let read = repo.get(&key);
    let removed = repo.remove(&key);
    let read = read?;
    removed?;
    if read != data.as_bytes() {
        return Err(RepositoryError::Read {
            key,
            source: io::Error::other(format!(
                "the object read back ({} bytes) differs from the one written ({} bytes): the storage does not return what it stores",
                read.len(),
                data.len()
            )),
        });
    }
    Ok(ProbeResult {
        key,
        bytes: data.len() as u64,
        restic_initialised: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_or_refusing_repository_is_named_and_anything_else_is_not() {
        let full = io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(reason(&full), Some(Reason::RepositoryFull));
        let full = io::Error::new(io::ErrorKind::StorageFull, "quota");
        assert_eq!(reason(&full), Some(Reason::RepositoryFull));
        assert_eq!(reason(&io::Error::other("?")), None);
        let denied = StoreFailure {
            reason: Reason::AccessDenied,
            message: "403".into(),
        };
        let err = RepositoryError::Write {
            key: "k".into(),
            source: denied.into_io(),
        };
        assert_eq!(err.reason(), Some(Reason::AccessDenied));
        assert!(err.io().is_some());
        assert_eq!(RepositoryError::InvalidKey("..".into()).reason(), None);
        for err in [
            RepositoryError::Remove {
                key: "k".into(),
                source: io::Error::from_raw_os_error(libc::ENOSPC),
            },
            RepositoryError::Read {
                key: "k".into(),
                source: io::Error::from_raw_os_error(libc::ENOSPC),
            },
        ] {
            assert_eq!(err.reason(), Some(Reason::RepositoryFull), "{err}");
        }
    }

    #[test]
    fn a_store_failure_travels_as_the_io_error_kind_that_fits_it() {
        let kind = |reason| {
            let failure = StoreFailure {
                reason,
                message: "m".into(),
            }
            .into_io();
            assert_eq!(super::reason(&failure), Some(reason));
            failure.kind()
        };
        assert_eq!(kind(Reason::AccessDenied), io::ErrorKind::PermissionDenied);
        assert_eq!(kind(Reason::BucketNotFound), io::ErrorKind::NotFound);
        assert_eq!(
            kind(Reason::EndpointUnreachable),
            io::ErrorKind::ConnectionRefused
        );
        assert_eq!(
            kind(Reason::TlsHandshakeFailed),
            io::ErrorKind::ConnectionRefused
        );
        assert_eq!(kind(Reason::RepositoryFull), io::ErrorKind::Other);
    }

    /// Storage that keeps what it is given but answers every read with other bytes.
    struct Forgetful(DirRepository);

    impl Repository for Forgetful {
        fn create(&self, key: &str) -> Result<Box<dyn Upload>, RepositoryError> {
            self.0.create(key)
        }
        fn open(&self, _key: &str) -> Result<Box<dyn Read + Send>, RepositoryError> {
            Ok(Box::new(io::Cursor::new(b"something else".to_vec())))
        }
        fn remove(&self, key: &str) -> Result<(), RepositoryError> {
            self.0.remove(key)
        }
        fn remove_prefix(&self, prefix: &str) -> Result<(), RepositoryError> {
            self.0.remove_prefix(prefix)
        }
        fn list_in_order<'a>(&'a self, prefix: &str) -> Result<Listed<'a>, RepositoryError> {
            self.0.list_in_order(prefix)
        }
        fn read_range(&self, key: &str, o: u64, n: u64) -> Result<Vec<u8>, RepositoryError> {
            self.0.read_range(key, o, n)
        }
    }

    #[test]
    fn the_probe_passes_on_storage_that_returns_what_it_stores_and_only_there() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let done = probe(&DirRepository::new(dir.path())).expect("a working directory");
        assert!(done.bytes > 0);
        let empty = std::fs::read_dir(dir.path().join(".backstop-probe")).map(|d| d.count());
        assert_eq!(empty.ok(), Some(0), "the probe object is removed");
        let err = probe(&Forgetful(DirRepository::new(dir.path()))).expect_err("other bytes");
        assert!(err.to_string().contains("differs"), "{err}");
    }
}
