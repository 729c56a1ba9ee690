//! restic's repository locks, kept as restic keeps them, so that Backstop and a person's `restic`
//! never pull data from under each other: Backstop's backups hold a shared lock (a `restic
//! prune` waits for them), its forgets and prunes an exclusive one; its restores and
//! verifications (the repository mounted read-only) write none; all wait while restic holds an
//! exclusive lock (then fail with `RepositoryLocked`).
//!
//! A lock is a file under `locks/`: the JSON below (restic compresses it in a version 2
//! repository: a byte 2, then zstd; Backstop writes it plain, which both read), encrypted with the
//! repository's master key
//! (AES-256-CTR and Poly1305-AES, a random 16-byte IV in front and the MAC behind), named by the
//! SHA-256 of its bytes. A lock whose time is more than 30 minutes old is stale (its holder died);
//! holders write a new one every 5 minutes and remove the old. Unreadable files under `locks/`
//! (another key's, or planted) block nothing: whoever can write there can delete the data anyway.

use crate::repository::{Reason, Repository};
use aes256ctr_poly1305aes::Aes256CtrPoly1305Aes;
use aes256ctr_poly1305aes::aead::{Aead, Nonce};
use jiff::{SignedDuration, Timestamp};
use rustic_core::repofile::MasterKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use super::ResticError;

/// A lock older than this is stale (restic's own bound).
const STALE: SignedDuration = SignedDuration::from_mins(30);
/// How often a held lock is written again.
const REFRESH: Duration = Duration::from_secs(300);
/// How often a waiting mover looks at the locks again.
const POLL: Duration = Duration::from_secs(5);

/// A lock file's content, as restic writes it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LockFile {
    pub time: Timestamp,
    pub exclusive: bool,
    pub hostname: String,
    pub username: String,
    pub pid: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uid: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gid: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Whether a lock of this mover (`exclusive` or not) must wait for `other`, read at `now`.
pub fn conflicts(exclusive: bool, other: &LockFile, now: Timestamp) -> bool {
    let stale = other.time.checked_add(STALE).is_ok_and(|until| until < now);
    !stale && (exclusive || other.exclusive)
}

/// The restic cipher with `key`.
fn cipher(key: &MasterKey) -> Result<Aes256CtrPoly1305Aes, String> {
    let mut bytes = [0u8; 64];
    if key.encrypt.len() != 32 || key.mac.k.len() != 16 || key.mac.r.len() != 16 {
        return Err("the repository's master key has an unexpected shape".into());
    }
    bytes[..32].copy_from_slice(&key.encrypt);
    bytes[32..48].copy_from_slice(&key.mac.k);
    bytes[48..].copy_from_slice(&key.mac.r);
    Ok(Aes256CtrPoly1305Aes::new(
        aes256ctr_poly1305aes::Key::from_slice(&bytes),
    ))
}

/// `lock` encrypted as restic stores it, and its file name.
pub fn seal(key: &MasterKey, lock: &LockFile) -> Result<(String, Vec<u8>), String> {
    let plain = serde_json::to_vec(lock).map_err(|e| e.to_string())?;
    let mut iv = [0u8; 16];
    getrandom::fill(&mut iv).map_err(|e| format!("no randomness for the lock's IV: {e}"))?;
    let sealed = cipher(key)?
        .encrypt(
            Nonce::<Aes256CtrPoly1305Aes>::from_slice(&iv),
            plain.as_slice(),
        )
        .map_err(|e| format!("encrypting the lock: {e}"))?;
    let mut data = iv.to_vec();
    data.extend_from_slice(&sealed);
    let name = Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((name, data))
}

/// The lock in `data`, if it is one sealed with `key`.
pub fn open(key: &MasterKey, data: &[u8]) -> Option<LockFile> {
    if data.len() < 32 {
        return None;
    }
    let (iv, sealed) = data.split_at(16);
    let plain = cipher(key)
        .ok()?
        .decrypt(Nonce::<Aes256CtrPoly1305Aes>::from_slice(iv), sealed)
        .ok()?;
    // Repository format 2 compresses it: a 2, then zstd; plain JSON starts with `{`.
    match plain.split_first() {
        Some((2, compressed)) => {
            let json = zstd::bulk::decompress(compressed, 64 << 10).ok()?;
            serde_json::from_slice(&json).ok()
        }
        _ => serde_json::from_slice(&plain).ok(),
    }
}

/// A lock this mover holds: written again every 5 minutes, removed when dropped.
pub struct Held {
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        // Closing the channel ends the refresher, which removes the lock it holds last.
        drop(self.stop.take());
        if let Some(refresher) = self.refresher.take() {
            let _ = refresher.join();
        }
    }
}

/// Where the locks of the restic repository at `root` are, and how to read them.
pub struct Locks {
    pub store: Arc<dyn Repository>,
    pub root: String,
    pub key: MasterKey,
}

impl Locks {
    fn dir(&self) -> String {
        format!("{}/locks", self.root.trim_end_matches('/'))
    }

    /// Every readable lock, with its key.
    fn read(&self) -> Result<Vec<(String, LockFile)>, ResticError> {
        let dir = self.dir();
        let listed = self.store.list(&dir).map_err(|e| ResticError {
            reason: e.reason().unwrap_or(Reason::RepositoryUnusable),
            message: format!("listing the restic repository's locks: {e}"),
        })?;
        let mut locks = Vec::new();
        for (key, size) in listed {
            // A lock is a few hundred bytes; anything larger is not one.
            if size > 4096 || !key.starts_with(&format!("{dir}/")) {
                continue;
            }
            let Ok(mut reader) = self.store.open(&key) else {
                continue; // removed meanwhile
            };
            let mut data = Vec::new();
            if std::io::Read::read_to_end(&mut reader, &mut data).is_ok()
                && let Some(lock) = open(&self.key, &data)
            {
                locks.push((key, lock));
            }
        }
        Ok(locks)
    }

    /// The first lock, other than `own`, that a lock of ours (`exclusive` or not) must wait for.
    fn blocking(
        &self,
        exclusive: bool,
        own: Option<&str>,
    ) -> Result<Option<LockFile>, ResticError> {
        let now = Timestamp::now();
        Ok(self
            .read()?
            .into_iter()
            .find(|(key, lock)| Some(key.as_str()) != own && conflicts(exclusive, lock, now))
            .map(|(_, lock)| lock))
    }

    fn write(&self, exclusive: bool) -> Result<String, ResticError> {
        let lock = LockFile {
            time: Timestamp::now(),
            exclusive,
            hostname: std::env::var("HOSTNAME")
                .map(|h| format!("backstop/{h}"))
                .unwrap_or_else(|_| "backstop".into()),
            username: "backstop".into(),
            pid: i64::from(std::process::id()),
            uid: 0,
            gid: 0,
        };
        let (name, data) = seal(&self.key, &lock).map_err(|message| ResticError {
            reason: Reason::MoverFailed,
            message,
        })?;
        let key = format!("{}/{name}", self.dir());
        self.store.put(&key, &data).map_err(|e| ResticError {
            reason: e.reason().unwrap_or(Reason::RepositoryUnusable),
            message: format!("writing the restic lock {key}: {e}"),
        })?;
        Ok(key)
    }

    /// Waits up to `patience` while an exclusive lock stands, writing none: for readers whose
    /// repository is mounted or credentialed read-only (a restore, a verification), as restic's
    /// `--no-lock` readers do, but never beside a prune.
    pub fn wait_for_exclusive(&self, patience: Duration) -> Result<(), ResticError> {
        let started = std::time::Instant::now();
        loop {
            match self.blocking(false, None)? {
                None => return Ok(()),
                Some(holder) if started.elapsed() >= patience => {
                    return Err(self.locked(&holder, patience));
                }
                Some(_) => std::thread::sleep(POLL.min(patience.saturating_sub(started.elapsed()))),
            }
        }
    }

    fn locked(&self, holder: &LockFile, patience: Duration) -> ResticError {
        ResticError {
            reason: Reason::RepositoryLocked,
            message: format!(
                "the restic repository at {} is locked{} by {}@{} (pid {}) since {}: Backstop waited {} s (a `restic prune` or `restic forget` run by hand? `restic list locks` shows it; `restic unlock` removes a stale one)",
                self.root,
                if holder.exclusive { " exclusively" } else { "" },
                holder.username,
                holder.hostname,
                holder.pid,
                holder.time,
                patience.as_secs()
            ),
        }
    }

    /// Takes a lock (`exclusive` or shared), waiting up to `patience` while another holder's
    /// lock stands in the way; `RepositoryLocked` names that holder when it does not go.
    pub fn take(self, exclusive: bool, patience: Duration) -> Result<Held, ResticError> {
        let started = std::time::Instant::now();
        let key = loop {
            let holder = match self.blocking(exclusive, None)? {
                None => {
                    let key = self.write(exclusive)?;
                    // Two takers at once both see a free repository: each looks again with its
                    // own lock written, and steps back when the other's is there.
                    match self.blocking(exclusive, Some(&key))? {
                        None => break key,
                        Some(holder) => {
                            let _ = self.store.remove(&key);
                            holder
                        }
                    }
                }
                Some(holder) => holder,
            };
            if started.elapsed() >= patience {
                return Err(self.locked(&holder, patience));
            }
            std::thread::sleep(POLL.min(patience.saturating_sub(started.elapsed())));
        };
        let (stop, stopped) = mpsc::channel::<()>();
        let refresher = std::thread::spawn(move || {
            let mut current = key;
            // Until the holder drops its end: a new lock every REFRESH, the old one removed.
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(REFRESH) {
                if let Ok(fresh) = self.write(exclusive) {
                    let _ = self.store.remove(&current);
                    current = fresh;
                }
            }
            let _ = self.store.remove(&current);
        });
        Ok(Held {
            stop: Some(stop),
            refresher: Some(refresher),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(exclusive: bool, minutes_ago: i64) -> LockFile {
        LockFile {
            time: Timestamp::now() - SignedDuration::from_mins(minutes_ago),
            exclusive,
            hostname: "laptop".into(),
            username: "root".into(),
            pid: 42,
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn shared_locks_share_exclusive_ones_exclude_and_stale_ones_do_not_count() {
        let now = Timestamp::now();
        assert!(!conflicts(false, &lock(false, 1), now));
        assert!(conflicts(false, &lock(true, 1), now));
        assert!(conflicts(true, &lock(false, 1), now));
        assert!(conflicts(true, &lock(true, 29), now));
        assert!(!conflicts(true, &lock(true, 31), now), "stale after 30 min");
    }

    #[test]
    fn a_sealed_lock_opens_with_its_key_only() {
        let key = MasterKey::new();
        let written = lock(true, 0);
        let (name, data) = seal(&key, &written).unwrap();
        assert_eq!(name.len(), 64);
        assert_eq!(open(&key, &data), Some(written.clone()));
        assert_eq!(open(&MasterKey::new(), &data), None, "another key");
        let mut tampered = data.clone();
        tampered[20] ^= 1;
        assert_eq!(open(&key, &tampered), None, "the MAC is checked");
        // restic's own, compressed as in a version 2 repository.
        let json = serde_json::to_vec(&written).unwrap();
        let mut compressed = vec![2u8];
        compressed.extend(zstd::bulk::compress(&json, 3).unwrap());
        let mut iv = [7u8; 16];
        iv[0] = 1;
        let mut restic_made = iv.to_vec();
        restic_made.extend(
            cipher(&key)
                .unwrap()
                .encrypt(
                    Nonce::<Aes256CtrPoly1305Aes>::from_slice(&iv),
                    compressed.as_slice(),
                )
                .unwrap(),
        );
        assert_eq!(open(&key, &restic_made), Some(written.clone()));
        // A fresh IV each time: the same lock never seals to the same bytes.
        assert_ne!(seal(&key, &written).unwrap().1, data);
    }
}
