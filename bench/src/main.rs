//! `backstop-bench mover [--quick]`: generates seeded datasets, then backs each up and restores it
//! with Backstop (zstd, gzip), `tar -czf`, `tar | zstd -T0 -3` and restic, in one run on the same
//! data, and prints MB/s, CPU seconds, peak RSS and artifact size with Backstop's ratios.

mod dataset;
mod mover;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("mover") => mover::run(args.iter().any(|a| a == "--quick")),
        _ => {
            eprintln!("usage: backstop-bench mover [--quick]");
            std::process::exit(2);
        }
    }
}
