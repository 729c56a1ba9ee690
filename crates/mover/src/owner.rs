//! The marker of a namespace's writer (`backstop_api::ownership`), read before every write and
//! by every sync: a mover never writes a namespace another cluster owns.

use crate::repository::{Reason, Repository, RepositoryError};
use backstop_api::ownership::{self, Claim, Marker, Ownership, Writer};
use std::io::{self, Read};

/// What `namespace`'s marker says.
pub fn read(repo: &dyn Repository, namespace: &str) -> Result<Ownership, RepositoryError> {
    let key = ownership::owner_key(namespace);
    let mut bytes = Vec::new();
    match repo.open(&key) {
        Ok(object) => object
            .take(ownership::MARKER_MAX_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| RepositoryError::Read {
                key: key.clone(),
                source,
            })?,
        Err(e) if missing(&e) => return Ok(Ownership::Unclaimed),
        Err(e) => return Err(e),
    };
    Ok(Ownership::read(&bytes))
}

/// Whether `err` says the object is not there (and nothing worse, such as a missing bucket).
fn missing(err: &RepositoryError) -> bool {
    match err.reason() {
        Some(reason) => reason == Reason::ArtifactMissing,
        None => err
            .io()
            .is_some_and(|e| e.kind() == io::ErrorKind::NotFound),
    }
}

/// Makes sure `writer` may write `namespace`: its owner already, or the part is unclaimed or
/// taken over, and then the marker names `writer` (written and read back). `Err` when another
/// cluster owns it: nothing was written.
///
/// Two clusters claiming an unclaimed part in the same moment could both go on once (the
/// repository interface has no create-if-absent); the marker then names the later, and the
/// earlier's next write is refused.
pub fn claim(
    repo: &dyn Repository,
    namespace: &str,
    writer: &Writer,
) -> Result<Option<Claim>, (Reason, String)> {
    let failed = |e: RepositoryError| {
        (
            e.reason().unwrap_or(Reason::RepositoryUnusable),
            format!("reading or writing the owner marker: {e}"),
        )
    };
    if !ownership::is_cluster_id(&writer.cluster) {
        return Err((
            Reason::InvalidSpec,
            format!(
                "--cluster {:?} is not a cluster id (1-128 letters, digits and .-_:)",
                writer.cluster
            ),
        ));
    }
    let found = read(repo, namespace).map_err(failed)?;
    let claim = writer.claim(&found).map_err(|why| {
        (
            Reason::RepositoryOwnedElsewhere,
            format!("namespace {namespace:?} of the repository: {}", why.message),
        )
    })?;
    if claim == Claim::Mine {
        return Ok(None);
    }
    let marker = Marker {
        cluster: writer.cluster.clone(),
        since: jiff::Timestamp::now(),
    };
    let json = serde_json::to_vec(&marker).map_err(|e| (Reason::MoverFailed, e.to_string()))?;
    repo.put(&ownership::owner_key(namespace), &json)
        .map_err(failed)?;
    match read(repo, namespace).map_err(failed)? {
        Ownership::Owned(cluster) if cluster == writer.cluster => Ok(Some(claim)),
        other => Err((
            Reason::RepositoryOwnedElsewhere,
            format!(
                "namespace {namespace:?} of the repository was claimed by {:?} at the same moment: nothing else was written",
                other.owner().unwrap_or_default()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::DirRepository;

    fn writer(cluster: &str, take_over_from: Option<&str>) -> Writer {
        Writer {
            cluster: cluster.into(),
            take_over_from: take_over_from.map(Into::into),
        }
    }

    #[test]
    fn the_first_writer_owns_a_namespace_until_another_takes_it_over() {
        let dir = tempfile::tempdir().unwrap();
        let repo = DirRepository::new(dir.path().to_path_buf());
        assert_eq!(read(&repo, "shop").unwrap(), Ownership::Unclaimed);
        assert_eq!(
            claim(&repo, "shop", &writer("a", None)).unwrap(),
            Some(Claim::Claim)
        );
        assert_eq!(read(&repo, "shop").unwrap(), Ownership::Owned("a".into()));
        assert_eq!(claim(&repo, "shop", &writer("a", None)).unwrap(), None);
        // Another namespace of the same repository is another part.
        assert_eq!(
            claim(&repo, "other", &writer("b", None)).unwrap(),
            Some(Claim::Claim)
        );

        let before = std::fs::read(dir.path().join("shop/_owner.json")).unwrap();
        let (reason, message) = claim(&repo, "shop", &writer("b", Some("c"))).unwrap_err();
        assert_eq!(reason, Reason::RepositoryOwnedElsewhere);
        assert!(message.contains("\"a\""), "{message}");
        assert_eq!(
            std::fs::read(dir.path().join("shop/_owner.json")).unwrap(),
            before,
            "a refused writer writes nothing"
        );

        assert_eq!(
            claim(&repo, "shop", &writer("b", Some("a"))).unwrap(),
            Some(Claim::TakeOver("a".into()))
        );
        assert_eq!(read(&repo, "shop").unwrap(), Ownership::Owned("b".into()));
        assert!(claim(&repo, "shop", &writer("a", None)).is_err());
    }

    #[test]
    fn a_forged_marker_is_nobody_known_and_is_replaced_only_on_purpose() {
        let dir = tempfile::tempdir().unwrap();
        let repo = DirRepository::new(dir.path().to_path_buf());
        repo.put("shop/_owner.json", b"{\"cluster\": 42}").unwrap();
        assert_eq!(read(&repo, "shop").unwrap(), Ownership::Unreadable);
        assert!(claim(&repo, "shop", &writer("a", None)).is_err());
        assert_eq!(
            claim(&repo, "shop", &writer("a", Some(ownership::UNREADABLE))).unwrap(),
            Some(Claim::TakeOver(ownership::UNREADABLE.into()))
        );
        assert_eq!(read(&repo, "shop").unwrap(), Ownership::Owned("a".into()));
    }
}
