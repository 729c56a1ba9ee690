//! The restic repository's files kept in a Backstop repository (a directory or S3), in restic's
//! own layout below `root`: `config`, `keys/<id>`, `snapshots/<id>`, `index/<id>` and
//! `data/<first two hex digits>/<id>`, so that `restic -r <root>` reads what Backstop wrote.
//!
//! rustic reports a backend failure as its own error; the reason a user can act on (full,
//! refused credentials, missing bucket...) is kept here so the mover can still name it.

use crate::repository::{Reason, Repository, RepositoryError};
use bytes::Bytes;
use rustic_core::{
    BytesList, ErrorKind, FileType, Id, ReadBackend, RusticError, RusticResult, WriteBackend,
};
use std::sync::{Arc, Mutex};

pub struct Backend {
    repo: Arc<dyn Repository>,
    root: String,
    /// The reason of the last storage failure, if it had one.
    failure: Arc<Mutex<Option<Reason>>>,
}

impl Backend {
    pub fn new(repo: Arc<dyn Repository>, root: &str) -> Self {
        Self {
            repo,
            root: root.trim_matches('/').to_string(),
            failure: Arc::default(),
        }
    }

    /// Where the reason of the last storage failure is kept.
    pub fn failure(&self) -> Arc<Mutex<Option<Reason>>> {
        self.failure.clone()
    }

    fn dir(&self, tpe: FileType) -> String {
        format!("{}/{}", self.root, tpe.dirname())
    }

    /// The key of a restic file.
    fn key(&self, tpe: FileType, id: &Id) -> String {
        let hex = id.to_hex();
        match tpe {
            FileType::Config => format!("{}/config", self.root),
            FileType::Pack => format!("{}/data/{}/{}", self.root, &hex[..2], &*hex),
            _ => format!("{}/{}", self.dir(tpe), &*hex),
        }
    }

    /// rustic's error for a storage failure, its reason kept.
    fn failed(&self, err: RepositoryError) -> Box<RusticError> {
        if let Some(reason) = err.reason()
            && let Ok(mut kept) = self.failure.lock()
        {
            *kept = Some(reason);
        }
        RusticError::with_source(ErrorKind::Backend, "the repository storage failed", err)
    }
}

impl ReadBackend for Backend {
    fn location(&self) -> String {
        self.root.clone()
    }

    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        if tpe == FileType::Config {
            let key = self.key(tpe, &Id::default());
            let found = self.repo.list(&self.root).map_err(|e| self.failed(e))?;
            return Ok(found
                .into_iter()
                .filter(|(k, _)| *k == key)
                .map(|(_, size)| (Id::default(), u32::try_from(size).unwrap_or(u32::MAX)))
                .collect());
        }
        let found = self.repo.list(&self.dir(tpe)).map_err(|e| self.failed(e))?;
        // Anything that is not named by an id (a file someone left there) is not restic's.
        Ok(found
            .into_iter()
            .filter_map(|(key, size)| {
                let name = key.rsplit('/').next()?;
                let id = name.parse::<Id>().ok()?;
                (key == self.key(tpe, &id)).then(|| (id, u32::try_from(size).unwrap_or(u32::MAX)))
            })
            .collect())
    }

    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        self.repo
            .get(&self.key(tpe, id))
            .map(Bytes::from)
            .map_err(|e| self.failed(e))
    }

    fn read_partial(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        offset: u32,
        length: u32,
    ) -> RusticResult<Bytes> {
        let data = self
            .repo
            .read_range(&self.key(tpe, id), offset.into(), length.into())
            .map_err(|e| self.failed(e))?;
        if data.len() != length as usize {
            return Err(RusticError::new(
                ErrorKind::Backend,
                "{key} is shorter than its index says: {length} bytes at {offset} asked, {read} read",
            )
            .attach_context("key", self.key(tpe, id))
            .attach_context("length", length.to_string())
            .attach_context("offset", offset.to_string())
            .attach_context("read", data.len().to_string()));
        }
        Ok(Bytes::from(data))
    }

    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        self.key(tpe, id)
    }
}

impl WriteBackend for Backend {
    fn write_bytes(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        content: BytesList,
    ) -> RusticResult<()> {
        let key = self.key(tpe, id);
        let written = (|| {
            let mut upload = self.repo.create(&key)?;
            for part in content.slice() {
                if let Err(source) = std::io::Write::write_all(&mut upload, part) {
                    upload.abort();
                    return Err(RepositoryError::Write {
                        key: key.clone(),
                        source,
                    });
                }
            }
            upload.commit()
        })();
        written.map_err(|e| self.failed(e))
    }

    fn remove(&self, tpe: FileType, id: &Id, _cacheable: bool) -> RusticResult<()> {
        self.repo
            .remove(&self.key(tpe, id))
            .map_err(|e| self.failed(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::DirRepository;

    #[test]
    fn files_land_where_restic_looks_for_them_and_strangers_are_not_listed() {
        let tmp = tempfile::tempdir().unwrap();
        let repo: Arc<dyn Repository> = Arc::new(DirRepository::new(tmp.path()));
        let be = Backend::new(repo.clone(), "/shop/_restic/");
        let id: Id = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"
            .parse()
            .unwrap();
        be.write_bytes(
            FileType::Pack,
            &id,
            false,
            Bytes::from_static(b"pack").into(),
        )
        .unwrap();
        be.write_bytes(
            FileType::Snapshot,
            &id,
            true,
            Bytes::from_static(b"snap").into(),
        )
        .unwrap();
        be.write_bytes(
            FileType::Config,
            &Id::default(),
            false,
            Bytes::from_static(b"c").into(),
        )
        .unwrap();
        let hex = id.to_hex();
        assert!(
            tmp.path()
                .join(format!("shop/_restic/data/0a/{}", &*hex))
                .is_file()
        );
        assert!(
            tmp.path()
                .join(format!("shop/_restic/snapshots/{}", &*hex))
                .is_file()
        );
        assert!(tmp.path().join("shop/_restic/config").is_file());
        // Not restic's: a stray name, a pack in the wrong fan-out directory, an upload in progress.
        std::fs::write(tmp.path().join("shop/_restic/snapshots/notes.txt"), "x").unwrap();
        std::fs::create_dir_all(tmp.path().join("shop/_restic/data/ff")).unwrap();
        std::fs::write(
            tmp.path().join(format!("shop/_restic/data/ff/{}", &*hex)),
            "x",
        )
        .unwrap();
        std::fs::write(
            tmp.path()
                .join(format!("shop/_restic/snapshots/{}.partial", &*hex)),
            "x",
        )
        .unwrap();

        assert_eq!(be.list_with_size(FileType::Pack).unwrap(), vec![(id, 4)]);
        assert_eq!(
            be.list_with_size(FileType::Snapshot).unwrap(),
            vec![(id, 4)]
        );
        assert_eq!(be.list_with_size(FileType::Config).unwrap().len(), 1);
        assert!(be.list_with_size(FileType::Index).unwrap().is_empty());
        assert_eq!(
            &be.read_partial(FileType::Pack, &id, false, 1, 2).unwrap()[..],
            b"ac"
        );
        assert!(be.read_partial(FileType::Pack, &id, false, 2, 5).is_err());
        assert_eq!(&be.read_full(FileType::Snapshot, &id).unwrap()[..], b"snap");
        be.remove(FileType::Snapshot, &id, true).unwrap();
        assert_eq!(be.list_with_size(FileType::Snapshot).unwrap().len(), 0);
    }

    #[test]
    fn a_storage_failure_keeps_its_reason() {
        let tmp = tempfile::tempdir().unwrap();
        let repo: Arc<dyn Repository> = Arc::new(DirRepository::new(tmp.path().join("missing")));
        let be = Backend::new(repo, "ns/_restic");
        assert!(be.read_full(FileType::Key, &Id::default()).is_err());
        // A missing file is not a reason a user acts on; nothing is kept for it.
        assert_eq!(*be.failure().lock().unwrap(), None);
    }
}
