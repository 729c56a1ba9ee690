//! Committing a restore: the staged, verified tree goes into the target so that a failure at any
//! point (an error, a kill, an eviction, a deadline) leaves the target as it was, or in a state
//! the next restore into it recognises and puts back.
//!
//! What the restore displaces (every entry of the target under `Overwrite`; what the backup
//! replaces under `Merge`) is renamed into `.backstop-restore-previous/old/` at the same relative
//! path, and every path the commit adds is written to `.backstop-restore-previous/added` before it
//! is renamed into place. Undoing removes the added paths and renames the displaced ones back.
//! Once the new tree is complete, the previous directory is renamed to `.backstop-restore-discard`
//! (the point of no return) and removed. Renames stay within the volume, so each is atomic.

use crate::manifest::{Entry, EntryKind, hex, unhex};
use crate::restore::{RestoreError, apply_dir_metadata, remove_all, safe_relative, write_err};
use backstop_api::ExistingDataPolicy;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where the verified tree is extracted, inside the target volume.
pub const STAGING: &str = ".backstop-restore-staging";
/// What an unfinished commit displaced, and the journal of what it added.
pub const PREVIOUS: &str = ".backstop-restore-previous";
/// What a finished commit displaced, being removed.
pub const DISCARD: &str = ".backstop-restore-discard";
const OLD: &str = "old";
const ADDED: &str = "added";

/// Names in a target's root that are not the target's data.
pub fn is_ours(name: &OsStr) -> bool {
    [STAGING, PREVIOUS, DISCARD, "lost+found"]
        .iter()
        .any(|ours| name == *ours)
}

/// Moves `target/STAGING` into `target` according to `policy`, then runs `finish` (the last
/// changes to the new tree); if anything fails, the target is put back as it was.
pub fn commit(
    target: &Path,
    policy: ExistingDataPolicy,
    finish: impl FnOnce() -> Result<(), RestoreError>,
) -> Result<(), RestoreError> {
    let previous = target.join(PREVIOUS);
    fs::create_dir(&previous).map_err(write_err(&previous))?;
    let moved = (|| {
        let old = previous.join(OLD);
        fs::create_dir(&old).map_err(write_err(&old))?;
        let journal_path = previous.join(ADDED);
        let mut journal = File::create(&journal_path).map_err(write_err(&journal_path))?;
        if policy == ExistingDataPolicy::Overwrite {
            for name in names(target)? {
                if !is_ours(&name) {
                    set_aside(target, Path::new(&name))?;
                }
            }
        }
        let mut step = Step {
            target,
            journal: &mut journal,
            journal_path: &journal_path,
        };
        step.merge(Path::new(""))?;
        remove_all(&target.join(STAGING))?;
        finish()
    })();
    if let Err(failed) = moved {
        return match undo(target) {
            Ok(()) => Err(failed),
            Err(undo_failed) => Err(RestoreError::Write {
                path: target.to_path_buf(),
                source: io::Error::other(format!(
                    "{failed}; putting the target back failed too ({undo_failed}): it holds part of the backup, and what it held before is in {PREVIOUS}; the next restore into it puts it back first"
                )),
            }),
        };
    }
    // The point of no return: from here on the new tree stays.
    let discard = target.join(DISCARD);
    fs::rename(&previous, &discard).map_err(write_err(&discard))?;
    // Left over if this fails: the next restore removes it.
    let _ = remove_all(&discard);
    Ok(())
}

/// Before a restore: finishes removing what a completed commit displaced, puts the target back
/// as it was if a commit was interrupted (the process killed before it could undo), and removes
/// a staging directory left behind. Returns whether an interrupted commit was undone.
pub fn recover(target: &Path) -> Result<bool, RestoreError> {
    remove_all(&target.join(DISCARD))?;
    // Only a real directory is an interrupted commit's; anything else of that name (a link a
    // tenant planted, say, to make the undo move things in from elsewhere) just goes.
    let previous = target.join(PREVIOUS);
    let interrupted = fs::symlink_metadata(&previous).is_ok_and(|m| m.is_dir());
    if interrupted {
        undo(target)?;
    } else {
        remove_all(&previous)?;
    }
    remove_all(&target.join(STAGING))?;
    Ok(interrupted)
}

/// Removes what the journal says the commit added (newest first) and renames what it displaced
/// back. The journal (a path in hex a line, so that any name fits) lives in the tenant's volume:
/// its paths are checked like archive paths, and nothing is removed through a link.
fn undo(target: &Path) -> Result<(), RestoreError> {
    let previous = target.join(PREVIOUS);
    let journal = match fs::read(previous.join(ADDED)) {
        Ok(data) => data,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(write_err(&previous.join(ADDED))(e)),
    };
    for line in journal.split(|b| *b == b'\n').rev() {
        if line.is_empty() {
            continue;
        }
        let rel = unhex(line).ok_or_else(|| RestoreError::Unsafe {
            path: String::from_utf8_lossy(line).into_owned(),
            why: "is not a path the restore journal could hold",
        })?;
        let rel = safe_relative(Path::new(OsStr::from_bytes(&rel)))?;
        if below_without_links(target, &rel)? {
            remove_all(&target.join(&rel))?;
        }
    }
    move_back(&previous.join(OLD), target, Path::new(""))?;
    remove_all(&previous)
}

/// Renames everything under `old/rel` back to `target/rel`.
fn move_back(old: &Path, target: &Path, rel: &Path) -> Result<(), RestoreError> {
    let dir = old.join(rel);
    if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    for name in names(&dir)? {
        let rel = rel.join(&name);
        let (src, dst) = (old.join(&rel), target.join(&rel));
        let src_is_dir = is_dir(&src)?;
        if !below_without_links(target, &rel)? {
            continue;
        }
        match fs::symlink_metadata(&dst) {
            // A directory that was merged into, not displaced: what it held comes back inside.
            Ok(m) if m.is_dir() && src_is_dir => {
                move_back(old, target, &rel)?;
                continue;
            }
            Ok(_) => remove_all(&dst)?,
            Err(_) => {}
        }
        fs::rename(&src, &dst).map_err(write_err(&dst))?;
    }
    Ok(())
}

/// Renames `target/rel` to the same path under `PREVIOUS/old`.
fn set_aside(target: &Path, rel: &Path) -> Result<(), RestoreError> {
    let to = target.join(PREVIOUS).join(OLD).join(rel);
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).map_err(write_err(parent))?;
    }
    let from = target.join(rel);
    fs::rename(&from, &to).map_err(write_err(&from))
}

struct Step<'a> {
    target: &'a Path,
    journal: &'a mut File,
    journal_path: &'a Path,
}

impl Step<'_> {
    /// Renames every entry of `STAGING/rel` into `target/rel`; where both hold a directory of the
    /// same name, merges them; anything else in the way is set aside.
    fn merge(&mut self, rel: &Path) -> Result<(), RestoreError> {
        let staging = self.target.join(STAGING);
        for name in names(&staging.join(rel))? {
            let rel = rel.join(&name);
            let (src, dst) = (staging.join(&rel), self.target.join(&rel));
            let src_meta = fs::symlink_metadata(&src).map_err(write_err(&src))?;
            // A directory's time as restored, before moving entries out of it changes it.
            let restored = src_meta.is_dir().then(|| dir_entry(&src_meta));
            match fs::symlink_metadata(&dst) {
                Ok(existing) if existing.is_dir() && src_meta.is_dir() => {
                    self.merge(&rel)?;
                }
                found => {
                    match found {
                        Ok(_) => set_aside(self.target, &rel)?,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(write_err(&dst)(e)),
                    }
                    let mut line = hex(rel.as_os_str().as_bytes());
                    line.push('\n');
                    self.journal
                        .write_all(line.as_bytes())
                        .map_err(write_err(self.journal_path))?;
                    fs::rename(&src, &dst).map_err(write_err(&dst))?;
                }
            }
            if let Some(restored) = restored {
                apply_dir_metadata(self.target, &rel, &restored)?;
            }
        }
        Ok(())
    }
}

/// A staged directory's owner, mode and time, to set again where it ends up.
fn dir_entry(meta: &fs::Metadata) -> Entry {
    Entry {
        kind: EntryKind::Dir,
        mode: meta.mode() & 0o7777,
        uid: u64::from(meta.uid()),
        gid: u64::from(meta.gid()),
        mtime: meta.mtime(),
        mtime_nanos: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
        ..Default::default()
    }
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Result<Vec<std::ffi::OsString>, RestoreError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(write_err(dir))? {
        names.push(entry.map_err(write_err(dir))?.file_name());
    }
    names.sort();
    Ok(names)
}

fn is_dir(path: &Path) -> Result<bool, RestoreError> {
    Ok(fs::symlink_metadata(path)
        .map_err(write_err(path))?
        .is_dir())
}

/// Whether every parent of `rel` below `root` is a real directory (not a link to elsewhere).
fn below_without_links(root: &Path, rel: &Path) -> Result<bool, RestoreError> {
    let mut current = PathBuf::from(root);
    if let Some(parent) = rel.parent() {
        for component in parent.components() {
            current.push(component);
            match fs::symlink_metadata(&current) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(write_err(&current)(e)),
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    type Result = std::result::Result<(), Box<dyn std::error::Error>>;

    fn write(path: &Path, content: &str) -> io::Result<()> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(path, content)
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_else(|e| format!("<{e}>"))
    }

    /// A target with a directory the backup merges into, a file it replaces, a file that becomes
    /// a directory and a directory that becomes a file; the staged tree beside it.
    fn target_and_staging() -> io::Result<tempfile::TempDir> {
        let dir = tempfile::tempdir()?;
        let t = dir.path();
        write(&t.join("d/keep"), "kept")?;
        write(&t.join("d/over"), "old over")?;
        write(&t.join("f"), "old f")?;
        write(&t.join("was-file"), "old was-file")?;
        write(&t.join("was-dir/inner"), "old inner")?;
        let s = t.join(STAGING);
        write(&s.join("d/over"), "new over")?;
        write(&s.join("d/new"), "new")?;
        write(&s.join("f"), "new f")?;
        write(&s.join("was-file/child"), "new child")?;
        write(&s.join("was-dir"), "new was-dir")?;
        Ok(dir)
    }

    #[test]
    fn merge_merges_directories_and_replaces_the_rest_whatever_its_type() -> Result {
        let dir = target_and_staging()?;
        let t = dir.path();
        commit(t, ExistingDataPolicy::Merge, || Ok(()))?;
        assert_eq!(read(&t.join("d/keep")), "kept");
        assert_eq!(read(&t.join("d/over")), "new over");
        assert_eq!(read(&t.join("d/new")), "new");
        assert_eq!(read(&t.join("f")), "new f");
        assert_eq!(read(&t.join("was-file/child")), "new child");
        assert_eq!(read(&t.join("was-dir")), "new was-dir");
        let left: Vec<_> = names(t)?;
        assert_eq!(left, ["d", "f", "was-dir", "was-file"]);
        Ok(())
    }

    #[test]
    fn a_failed_commit_puts_back_exactly_what_was_there() -> Result {
        let dir = target_and_staging()?;
        let t = dir.path();
        let failed = commit(t, ExistingDataPolicy::Merge, || {
            Err(RestoreError::Unsafe {
                path: "x".into(),
                why: "fails on purpose",
            })
        });
        assert!(failed.is_err());
        assert_eq!(read(&t.join("d/keep")), "kept");
        assert_eq!(read(&t.join("d/over")), "old over");
        assert!(!t.join("d/new").exists());
        assert_eq!(read(&t.join("f")), "old f");
        assert_eq!(read(&t.join("was-file")), "old was-file");
        assert_eq!(read(&t.join("was-dir/inner")), "old inner");
        assert_eq!(names(t)?, ["d", "f", "was-dir", "was-file"]);
        Ok(())
    }

    /// What an interrupted commit leaves: `PREVIOUS/old` and the journal of added paths.
    fn interrupted(t: &Path, journal: &[&str]) -> io::Result<()> {
        fs::create_dir_all(t.join(PREVIOUS).join(OLD))?;
        let lines: String = journal
            .iter()
            .map(|rel| format!("{}\n", hex(rel.as_bytes())))
            .collect();
        fs::write(t.join(PREVIOUS).join(ADDED), lines)
    }

    #[test]
    fn recovery_puts_displaced_entries_back_over_whatever_is_in_their_place() -> Result {
        let dir = tempfile::tempdir()?;
        let t = dir.path();
        interrupted(t, &["added"])?;
        write(&t.join("added"), "half restored")?;
        // A file was displaced and a directory now stands in its place (not in the journal).
        write(&t.join(PREVIOUS).join(OLD).join("x"), "old x")?;
        write(&t.join("x/y"), "stray")?;
        assert!(recover(t)?);
        assert_eq!(read(&t.join("x")), "old x");
        assert!(!t.join("added").exists());
        assert_eq!(names(t)?, ["x"]);
        Ok(())
    }

    #[test]
    fn recovery_without_a_journal_still_moves_back_and_a_broken_journal_stops_it() -> Result {
        let dir = tempfile::tempdir()?;
        let t = dir.path();
        fs::create_dir_all(t.join(PREVIOUS).join(OLD))?;
        write(&t.join(PREVIOUS).join(OLD).join("f"), "old f")?;
        assert!(recover(t)?);
        assert_eq!(read(&t.join("f")), "old f");

        let dir = tempfile::tempdir()?;
        let t = dir.path();
        fs::create_dir_all(t.join(PREVIOUS).join(OLD))?;
        write(&t.join(PREVIOUS).join(OLD).join("f"), "old f")?;
        // The journal cannot be read (a directory): better stop than guess what was added.
        fs::create_dir(t.join(PREVIOUS).join(ADDED))?;
        assert!(recover(t).is_err());
        assert_eq!(read(&t.join(PREVIOUS).join(OLD).join("f")), "old f");
        Ok(())
    }

    #[test]
    fn the_journal_never_removes_through_a_link_and_skips_what_is_gone() -> Result {
        let outside = tempfile::tempdir()?;
        write(&outside.path().join("victim"), "not yours")?;
        let dir = tempfile::tempdir()?;
        let t = dir.path();
        symlink(outside.path(), t.join("link"))?;
        interrupted(t, &["gone/x", "link/victim"])?;
        assert!(recover(t)?);
        assert_eq!(read(&outside.path().join("victim")), "not yours");
        Ok(())
    }
}
