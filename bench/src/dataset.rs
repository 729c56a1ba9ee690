//! Deterministic datasets (xorshift, fixed seeds): the same bytes on every machine and run.
//! Content is half text-like (compressible words) and half random (incompressible).

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::Path;

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: &[&str] = &[
    "backup",
    "restore",
    "volume",
    "policy",
    "the",
    "of",
    "and",
    "kubernetes",
    "data",
    "row",
    "select",
    "insert",
    "index",
    "page",
    "tuple",
    "commit",
    "log",
    "segment",
    "checkpoint",
    "12345",
    "2026-11-21",
    "ERROR",
    "INFO",
    "user",
    "order",
    "price",
    "id",
    "name",
    "value",
    "null",
];

/// Writes `size` bytes: text-like when `text`, else random.
fn fill(out: &mut impl Write, rng: &mut Rng, size: u64, text: bool) -> io::Result<()> {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut left = size;
    while left > 0 {
        buf.clear();
        let want = left.min(64 * 1024) as usize;
        if text {
            while buf.len() < want {
                buf.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
                buf.push(if rng.below(12) == 0 { b'\n' } else { b' ' });
            }
            buf.truncate(want);
        } else {
            while buf.len() < want {
                buf.extend_from_slice(&rng.next().to_le_bytes());
            }
            buf.truncate(want);
        }
        out.write_all(&buf)?;
        left -= want as u64;
    }
    Ok(())
}

fn file(path: &Path, rng: &mut Rng, size: u64, text: bool) -> io::Result<()> {
    let mut out = BufWriter::new(fs::File::create(path)?);
    fill(&mut out, rng, size, text)?;
    out.flush()
}

/// (a) small files of 1-64 KiB in 100 directories.
pub fn small_files(root: &Path, count: u64) -> io::Result<()> {
    let mut rng = Rng::new(1);
    for i in 0..count {
        let dir = root.join(format!("d{:03}", i % 100));
        if i < 100 {
            fs::create_dir_all(&dir)?;
        }
        let size = 1024 + rng.below(63 * 1024);
        file(
            &dir.join(format!("f{i:06}.dat")),
            &mut rng,
            size,
            i % 2 == 0,
        )?;
    }
    Ok(())
}

/// (d, e) many tiny files of 0-200 bytes, 1,000 directories (a mail spool, a package cache).
pub fn tiny_files(root: &Path, count: u64) -> io::Result<()> {
    let mut rng = Rng::new(4);
    let per_dir = count.div_ceil(1000).max(1);
    let mut dir = root.to_path_buf();
    for i in 0..count {
        if i % per_dir == 0 {
            dir = root.join(format!("d{:03}", i / per_dir));
            fs::create_dir_all(&dir)?;
        }
        let size = rng.below(201);
        let mut buf = Vec::with_capacity(size as usize);
        fill(&mut buf, &mut rng, size, i % 2 == 0)?;
        fs::write(dir.join(format!("f{i:07}")), buf)?;
    }
    Ok(())
}

/// (b) a few large files.
pub fn large_files(root: &Path, count: u64, size: u64) -> io::Result<()> {
    let mut rng = Rng::new(2);
    fs::create_dir_all(root)?;
    for i in 0..count {
        file(
            &root.join(format!("large-{i}.bin")),
            &mut rng,
            size,
            i % 2 == 0,
        )?;
    }
    Ok(())
}

/// (c) a mixed tree: nested directories, files from 0 to 8 MiB, a few 64 MiB ones, symlinks.
pub fn mixed(root: &Path, scale: u64) -> io::Result<()> {
    let mut rng = Rng::new(3);
    for i in 0..(2000 * scale / 4).max(200) {
        let depth = rng.below(4);
        let mut dir = root.to_path_buf();
        for d in 0..depth {
            dir.push(format!("level{d}-{}", rng.below(6)));
        }
        fs::create_dir_all(&dir)?;
        let size = match rng.below(10) {
            0..=5 => rng.below(16 * 1024),
            6..=8 => rng.below(1 << 20),
            _ => rng.below(8 << 20),
        };
        let text = rng.below(3) != 0;
        file(&dir.join(format!("m{i:05}")), &mut rng, size, text)?;
        if i % 50 == 0 {
            let _ = std::os::unix::fs::symlink(format!("m{i:05}"), dir.join(format!("link{i:05}")));
        }
    }
    for i in 0..scale.max(1) {
        file(
            &root.join(format!("big{i}.bin")),
            &mut rng,
            64 << 20,
            i % 2 == 0,
        )?;
    }
    Ok(())
}

/// Adds the regular files below `dir` to `files`, without following symlinks.
pub fn walk_files(dir: &Path, files: &mut Vec<std::path::PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk_files(&entry.path(), files)?;
        } else if kind.is_file() {
            files.push(entry.path());
        }
    }
    Ok(())
}

/// Bytes of regular-file content below `root`.
pub fn size(root: &Path) -> io::Result<u64> {
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = fs::symlink_metadata(entry.path())?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    Ok(total)
}
