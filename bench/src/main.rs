//! `backstop-bench mover [--quick] [--only abc]`: generates seeded datasets, then backs each up and
//! restores it with Backstop (zstd, gzip, and zstd to S3 on a loopback s3s-fs when installed),
//! `tar -czf`, `tar | zstd -T0 -3` and restic, in one run on the same data, and prints MB/s, CPU
//! seconds, peak RSS and artifact size with Backstop's ratios. Datasets d and e (one and two
//! million tiny files) get their own table: stored bytes, manifest bytes per file, peak RSS.
//! `backstop-bench dataset a|b|c|d|e DIR`: only writes one dataset (to profile the mover by hand).
//! `backstop-bench controller`: the operator at scale on the local cluster (see controller.rs),
//! after a table of the bytes the operator caches per watched object (see state.rs).
//! `backstop-bench state`: only that table.
//! `backstop-bench sync [--backups N]`: a new cluster importing N backups from a repository;
//! `sync --memory`: the sync's peak memory at 10,000 and 100,000 objects listed.

mod controller;
mod dataset;
mod mover;
mod state;
mod sync;

/// Counts heap bytes in use, for the cached-state table of `controller` (the mover runs are
/// child processes: their figures come from the kernel).
#[global_allocator]
static ALLOCATOR: state::Counting = state::Counting;

fn flag(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("mover") => mover::run(
            args.iter().any(|a| a == "--quick"),
            args.iter()
                .position(|a| a == "--only")
                .and_then(|i| args.get(i + 1))
                .map_or("", String::as_str),
        ),
        Some("dataset") => {
            // Only generates one dataset (for profiling the mover by hand).
            let (Some(letter), Some(dir)) = (args.get(1), args.get(2)) else {
                anyhow::bail!("usage: backstop-bench dataset a|b|c|d|e DIR [--quick]");
            };
            let quick = args.iter().any(|a| a == "--quick");
            let Some(set) = mover::datasets(quick)
                .into_iter()
                .find(|s| letter.starts_with(s.letter))
            else {
                anyhow::bail!("no dataset {letter:?}: a to e");
            };
            std::fs::create_dir_all(dir)?;
            (set.generate)(std::path::Path::new(dir))?;
            println!("{} in {dir}", set.label);
            Ok(())
        }
        Some("sync") if args.iter().any(|a| a == "--memory") => {
            tokio::runtime::Runtime::new()?.block_on(sync::memory())
        }
        Some("sync") => {
            tokio::runtime::Runtime::new()?.block_on(sync::run(flag(&args, "--backups", 1000)))
        }
        Some("state") => {
            state::print();
            Ok(())
        }
        Some("controller") => {
            tokio::runtime::Runtime::new()?.block_on(controller::run(controller::Options {
                policies: flag(&args, "--policies", 1000),
                backups: flag(&args, "--backups", 10_000),
                per_minute: flag(&args, "--per-minute", 50),
                observe: std::time::Duration::from_secs(
                    60 * flag(&args, "--observe-minutes", 3) as u64,
                ),
            }))
        }
        _ => {
            eprintln!(
                "usage: backstop-bench mover [--quick] [--only abc]\n       backstop-bench dataset a|b|c|d|e DIR [--quick]\n       backstop-bench controller [--policies N] [--backups N] [--per-minute N] [--observe-minutes N]\n       backstop-bench sync [--backups N | --memory]\n       backstop-bench state"
            );
            std::process::exit(2);
        }
    }
}
