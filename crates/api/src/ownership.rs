//! One writer per repository namespace. Scheduled Backup names are deterministic, so two
//! clusters writing one namespace's part of a repository (an old cluster brought back, a standby
//! with the same policies) would overwrite each other's artifacts and records, and each one's
//! retention would delete the other's backups. So the part records its writer: the marker
//! `<namespace>/_owner.json` names a cluster (by default the uid of its `kube-system` namespace).
//!
//! The first write (a backup, a removal, a prune) claims an unclaimed part; a cluster that is not
//! the owner only reads it (sync, restore, verification) until its BackupRepository says
//! `takeOverFrom: <the owner>`, an explicit decision (disaster recovery: the old cluster is gone).
//! The mover checks the marker before every write, so nothing is written even when the
//! operator's view (the last sync's report) is stale. The marker is a guard against accidents,
//! not against someone who can write the bucket: they can write the marker too.

use crate::condition::Invalid;
use serde::{Deserialize, Serialize};

/// The marker's name in a namespace's part of the repository.
pub const OWNER_FILE: &str = "_owner.json";
/// The owner a marker that cannot be read stands for: `takeOverFrom: unreadable` replaces it.
pub const UNREADABLE: &str = "unreadable";
/// The largest marker read (a genuine one is under 200 bytes).
pub const MARKER_MAX_BYTES: usize = 4096;
/// The condition reason of a refused write.
pub const OWNED_ELSEWHERE: &str = "RepositoryOwnedElsewhere";

/// The key of `namespace`'s marker.
pub fn owner_key(namespace: &str) -> String {
    format!("{namespace}/{OWNER_FILE}")
}

/// What the marker holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    pub cluster: String,
    /// When this cluster claimed the namespace's part.
    pub since: jiff::Timestamp,
}

/// What a namespace's marker says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// No marker: no cluster has written here since markers exist.
    Unclaimed,
    Owned(String),
    /// A marker that is not one (hand-made, truncated, too large, a cluster id that is not one):
    /// owned by nobody known, so by nobody who may write without taking it over.
    Unreadable,
}

impl Ownership {
    /// Reads a marker's bytes; anything but a well-formed marker is `Unreadable`, never
    /// `Unclaimed` (junk must not free a part for every cluster).
    pub fn read(bytes: &[u8]) -> Ownership {
        if bytes.len() > MARKER_MAX_BYTES {
            return Ownership::Unreadable;
        }
        match serde_json::from_slice::<Marker>(bytes) {
            Ok(marker) if is_cluster_id(&marker.cluster) => Ownership::Owned(marker.cluster),
            _ => Ownership::Unreadable,
        }
    }

    /// The owner as a status shows it and `takeOverFrom` names it; `None` when unclaimed.
    pub fn owner(&self) -> Option<&str> {
        match self {
            Ownership::Unclaimed => None,
            Ownership::Owned(cluster) => Some(cluster),
            Ownership::Unreadable => Some(UNREADABLE),
        }
    }

    /// `owner`'s inverse (a status's `owner` field).
    pub fn from_owner(owner: Option<&str>) -> Ownership {
        match owner {
            None => Ownership::Unclaimed,
            Some(UNREADABLE) => Ownership::Unreadable,
            Some(cluster) => Ownership::Owned(cluster.to_string()),
        }
    }
}

/// Whether `id` can name a cluster: 1-128 letters, digits and `.-_:` (a uid, a name), and not
/// the word that stands for an unreadable marker.
pub fn is_cluster_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id != UNREADABLE
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
}

/// The cluster a mover writes for, and the owner its repository may take over from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Writer {
    pub cluster: String,
    pub take_over_from: Option<String>,
}

/// What a writer does with a namespace's marker before it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// It is the owner already: write.
    Mine,
    /// Unclaimed: write the marker, then the rest.
    Claim,
    /// Owned by the cluster (or unreadable marker) `takeOverFrom` names: replace the marker.
    TakeOver(String),
}

impl Writer {
    /// What this writer may do with a part whose marker says `found`; `Err` says who owns it
    /// and what would make this cluster the writer.
    pub fn claim(&self, found: &Ownership) -> Result<Claim, Invalid> {
        match found {
            Ownership::Unclaimed => Ok(Claim::Claim),
            Ownership::Owned(cluster) if *cluster == self.cluster => Ok(Claim::Mine),
            other => {
                let owner = other.owner().unwrap_or_default();
                if self.take_over_from.as_deref() == Some(owner) {
                    return Ok(Claim::TakeOver(owner.to_string()));
                }
                let whose = match other {
                    Ownership::Unreadable => format!(
                        "its marker {OWNER_FILE} cannot be read (not written by Backstop), so its writer is unknown"
                    ),
                    _ => format!("cluster {owner:?} writes it (marker {OWNER_FILE})"),
                };
                Err(Invalid::new(
                    OWNED_ELSEWHERE,
                    format!(
                        "{whose}; this cluster ({:?}) only reads it: sync, restore and verification work, backups, retention deletions, prune and verification records are refused. If that cluster is gone for good (disaster recovery), set spec.takeOverFrom: {owner:?} on the BackupRepository{}",
                        self.cluster,
                        match &self.take_over_from {
                            Some(named) => format!(" (it names {named:?})"),
                            None => String::new(),
                        }
                    ),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(take_over_from: Option<&str>) -> Writer {
        Writer {
            cluster: "c-new".into(),
            take_over_from: take_over_from.map(Into::into),
        }
    }

    #[test]
    fn only_the_owner_or_an_explicit_take_over_writes() {
        let owned = Ownership::Owned("c-old".into());
        assert_eq!(writer(None).claim(&Ownership::Unclaimed), Ok(Claim::Claim));
        assert_eq!(
            writer(None).claim(&Ownership::Owned("c-new".into())),
            Ok(Claim::Mine)
        );
        let refused = writer(None).claim(&owned).unwrap_err();
        assert_eq!(refused.reason, OWNED_ELSEWHERE);
        assert!(
            refused.message.contains("spec.takeOverFrom: \"c-old\""),
            "{}",
            refused.message
        );
        assert!(writer(Some("c-other")).claim(&owned).is_err());
        assert_eq!(
            writer(Some("c-old")).claim(&owned),
            Ok(Claim::TakeOver("c-old".into()))
        );
    }

    #[test]
    fn a_marker_that_is_not_one_frees_nothing() {
        let good = br#"{"cluster":"5e1f-aa","since":"2026-12-07T10:00:00Z"}"#;
        assert_eq!(Ownership::read(good), Ownership::Owned("5e1f-aa".into()));
        for junk in [
            &b"{}"[..],
            b"",
            b"not json",
            br#"{"cluster":"","since":"2026-12-07T10:00:00Z"}"#,
            br#"{"cluster":"a b\u001b[31m","since":"2026-12-07T10:00:00Z"}"#,
            br#"{"cluster":"unreadable","since":"2026-12-07T10:00:00Z"}"#,
        ] {
            assert_eq!(Ownership::read(junk), Ownership::Unreadable, "{junk:?}");
        }
        let huge = format!(
            r#"{{"cluster":"a","since":"2026-12-07T10:00:00Z","pad":"{}"}}"#,
            "x".repeat(MARKER_MAX_BYTES)
        );
        assert_eq!(Ownership::read(huge.as_bytes()), Ownership::Unreadable);
        assert!(writer(None).claim(&Ownership::Unreadable).is_err());
        assert_eq!(
            writer(Some(UNREADABLE)).claim(&Ownership::Unreadable),
            Ok(Claim::TakeOver(UNREADABLE.into()))
        );
        for found in [
            Ownership::Unclaimed,
            Ownership::Unreadable,
            Ownership::Owned("x".into()),
        ] {
            assert_eq!(Ownership::from_owner(found.owner()), found);
        }
    }
}
