//! The data path against a hostile volume and a hostile repository: inputs crafted by the test,
//! and swaps driven by the test while a real backup runs.

use backstop_mover::archive;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const SECRET: &[u8] = b"AWS_SECRET_ACCESS_KEY=outside-the-volume-6f1d";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Swaps, until told to stop, each of `files` between a regular file and a symlink to the
/// secret.
fn swap_files(volume: &Path, outside: &Path, files: usize, stop: &AtomicBool) {
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        for i in 0..files {
            let name = volume.join(format!("f{i:04}"));
            let staged = volume.join(format!(".staged{i:04}"));
            if round.is_multiple_of(2) {
                let _ = symlink(outside.join("secret"), &staged);
            } else {
                let _ = fs::write(&staged, b"innocent");
            }
            let _ = fs::rename(&staged, &name);
        }
    }
}

/// Swaps, until told to stop, the directory `sub` for a symlink to a directory of secrets with
/// the same names and back, a millisecond in each state.
fn swap_directory(volume: &Path, outside: &Path, stop: &AtomicBool) {
    let (sub, parked) = (volume.join("sub"), volume.join(".sub-parked"));
    while !stop.load(Ordering::Relaxed) {
        if fs::rename(&sub, &parked).is_ok() {
            let _ = symlink(outside.join("secrets-dir"), &sub);
            std::thread::sleep(std::time::Duration::from_millis(1));
            let _ = fs::remove_file(&sub);
            let _ = fs::rename(&parked, &sub);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn a_volume_that_swaps_files_and_directories_for_links_never_gets_outside_data_archived() {
    let tmp = tempfile::tempdir().unwrap();
    let volume = tmp.path().join("volume");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(volume.join("sub")).unwrap();
    fs::create_dir_all(outside.join("secrets-dir")).unwrap();
    fs::write(outside.join("secret"), SECRET).unwrap();
    let files = 400;
    for i in 0..files {
        fs::write(volume.join(format!("f{i:04}")), b"innocent").unwrap();
        fs::write(outside.join(format!("secrets-dir/f{i:04}")), SECRET).unwrap();
        fs::write(volume.join(format!("sub/f{i:04}")), b"innocent").unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let swapping = [
        {
            let (volume, outside, stop) = (volume.clone(), outside.clone(), stop.clone());
            std::thread::spawn(move || swap_files(&volume, &outside, files, &stop))
        },
        {
            let (volume, outside, stop) = (volume.clone(), outside.clone(), stop.clone());
            std::thread::spawn(move || swap_directory(&volume, &outside, &stop))
        },
    ];
    let (mut changed, mut failed) = (0, Vec::new());
    for _ in 0..20 {
        let mut sizes = Vec::new();
        let recorded = |e: &backstop_mover::manifest::Entry| {
            if e.kind == backstop_mover::manifest::EntryKind::File {
                sizes.push(e.size);
            }
            Ok(())
        };
        let (archived, tar) = match archive::write(&volume, Vec::new(), recorded) {
            Ok(done) => done,
            Err(e) => {
                failed.push(e.to_string());
                continue;
            }
        };
        changed += archived.changed.count;
        assert!(
            !contains(&tar, SECRET),
            "data from outside the volume got into the archive"
        );
        // Files of the volume are being rewritten (0 to 8 bytes); one of the secret's size was
        // read from outside.
        assert!(
            sizes.iter().all(|size| *size != SECRET.len() as u64),
            "a manifest entry has the outside file's size"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for swapper in swapping {
        swapper.join().unwrap();
    }
    // Entries that vanish or change kind mid-walk are left out and reported, not fatal.
    assert!(failed.is_empty(), "walks failed: {failed:?}");
    eprintln!("entries reported as changed while reading over 20 walks: {changed}");
}
